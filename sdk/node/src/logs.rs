//! `logs(opts)` and `logStream(opts)` (on `Sandbox` and `SandboxHandle`): microsandbox's
//! `LogEntry`, `LogOptions`, `LogStreamOptions` and `LogStream` over the library's exec log
//! (`api::logs`: what the relay captured of every exec, and lifecycle markers).
//!
//! ```text
//!  logs(opts)                      ─► blocking Sandbox::logs(LogQuery) ─► LogEntry[]
//!  logStream({ follow: false })    ─► the same read, handed out one entry per recv()
//!  logStream({ follow: true })     ─► api::LogStream: the entries there now, then each new one
//!                                     (read every 100 ms) until the sandbox stops
//!  close(), break out of for-await, garbage collection ─► the stream is dropped: nothing reads
//! ```
//!
//! Bounds: microsandbox's `untilMs` is exclusive and the log's timestamps are whole
//! milliseconds, so `untilMs` becomes the library's inclusive `until` one millisecond earlier.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_runtime::api::blocking as api;
use moat_runtime::api::{LogCursor, LogEntry as LibEntry, LogQuery, LogSource};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{NodeError, Result, blocking};
use crate::library;

/// One record of the exec log.
#[napi(object)]
pub struct LogEntry {
    /// When the relay captured it, ms since the epoch.
    pub timestamp_ms: f64,
    /// `"stdout"`, `"stderr"`, `"output"` (a tty exec's output) or `"system"` (a lifecycle
    /// marker).
    pub source: String,
    /// The relay's number of the exec session; absent for `system` entries.
    pub session_id: Option<f64>,
    /// The chunk's bytes, exactly as the exec wrote them.
    pub data: Buffer,
    /// Where the entry ends: `logStream({ fromCursor })` resumes after it.
    pub cursor: String,
}

/// What `logs()` returns.
#[napi(object)]
pub struct LogOptions {
    /// Only the last N of the entries selected.
    pub tail: Option<f64>,
    /// Only entries captured at or after this time (ms since the epoch).
    pub since_ms: Option<f64>,
    /// Only entries captured before this time (ms since the epoch).
    pub until_ms: Option<f64>,
    /// `"stdout"`, `"stderr"`, `"output"`, `"system"` or `"all"`; default: the first three.
    pub sources: Option<Vec<String>>,
}

/// What `logStream()` yields.
#[napi(object)]
pub struct LogStreamOptions {
    /// As `LogOptions.sources`.
    pub sources: Option<Vec<String>>,
    /// Start at the first entry captured at or after this time (not with `fromCursor`).
    pub since_ms: Option<f64>,
    /// Start right after the entry this cursor came from (not with `sinceMs`).
    pub from_cursor: Option<String>,
    /// End at the first entry captured at or after this time.
    pub until_ms: Option<f64>,
    /// Keep yielding new entries as they are written, until the sandbox stops (default false:
    /// the entries there now, then the end).
    pub follow: Option<bool>,
}

fn time(ms: f64, field: &str) -> Result<SystemTime> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(NodeError::InvalidArgument(format!(
            "{field} must be a time in ms since the epoch, not {ms}"
        )));
    }
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms.ceil() as u64))
        .ok_or_else(|| NodeError::InvalidArgument(format!("{field} {ms} is too large")))
}

/// The sources, microsandbox's default (every exec output, no lifecycle marker) when none.
fn sources(given: Option<Vec<String>>) -> Result<Vec<LogSource>> {
    let Some(given) = given else {
        return Ok(vec![LogSource::Stdout, LogSource::Stderr, LogSource::Output]);
    };
    let mut out = Vec::new();
    for source in given {
        let source = match source.as_str() {
            "stdout" => LogSource::Stdout,
            "stderr" => LogSource::Stderr,
            "output" => LogSource::Output,
            "system" => LogSource::System,
            "all" => return Ok(Vec::new()),
            other => {
                return Err(NodeError::InvalidArgument(format!(
                    "sources: {other:?} is not \"stdout\", \"stderr\", \"output\", \"system\" \
                     or \"all\""
                )));
            }
        };
        if !out.contains(&source) {
            out.push(source);
        }
    }
    if out.is_empty() {
        return Err(NodeError::InvalidArgument("sources is empty: name at least one".into()));
    }
    Ok(out)
}

/// The library's query, checked: `since`, an exclusive `until`, sources.
fn query(
    sources_given: Option<Vec<String>>,
    since_ms: Option<f64>,
    until_ms: Option<f64>,
) -> Result<LogQuery> {
    let mut query = LogQuery::new().sources(sources(sources_given)?);
    if let Some(since) = since_ms {
        query = query.since(time(since, "sinceMs")?);
    }
    if let Some(until) = until_ms {
        // Exclusive, in whole milliseconds: the last millisecond before it.
        let until = time(until, "untilMs")?;
        query = query.until(until.checked_sub(Duration::from_millis(1)).unwrap_or(UNIX_EPOCH));
    }
    Ok(query)
}

impl LogOptions {
    fn into_query(self) -> Result<LogQuery> {
        let mut query = query(self.sources, self.since_ms, self.until_ms)?;
        if let Some(tail) = self.tail {
            if !(tail.is_finite() && tail >= 0.0 && tail.fract() == 0.0) {
                return Err(NodeError::InvalidArgument(format!(
                    "tail must be a whole number of entries, not {tail}"
                )));
            }
            query = query.tail(tail as usize);
        }
        Ok(query)
    }
}

impl LogStreamOptions {
    fn into_query(self) -> Result<(LogQuery, bool)> {
        if self.since_ms.is_some() && self.from_cursor.is_some() {
            return Err(NodeError::InvalidArgument(
                "sinceMs and fromCursor exclude each other: give one".into(),
            ));
        }
        let mut query = query(self.sources, self.since_ms, self.until_ms)?;
        if let Some(cursor) = self.from_cursor {
            let cursor: LogCursor = cursor.parse().map_err(|err| {
                NodeError::InvalidArgument(format!("fromCursor: {err} (a LogEntry's cursor)"))
            })?;
            query = query.after(cursor);
        }
        Ok((query, self.follow.unwrap_or(false)))
    }
}

fn entry(entry: LibEntry) -> LogEntry {
    let timestamp_ms = entry
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as f64)
        .unwrap_or(0.0);
    let source = match entry.source {
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
        LogSource::Output => "output",
        LogSource::System => "system",
    };
    LogEntry {
        timestamp_ms,
        source: source.to_owned(),
        session_id: entry.session_id.map(|id| id as f64),
        cursor: entry.cursor.to_string(),
        data: entry.data.into(),
    }
}

/// `logs(opts)` of the sandbox `sandbox` names (running or not).
pub(crate) async fn logs(sandbox: api::Sandbox, opts: Option<LogOptions>) -> Result<Vec<LogEntry>> {
    let query = match opts {
        Some(opts) => opts.into_query()?,
        None => {
            LogOptions { tail: None, since_ms: None, until_ms: None, sources: None }.into_query()?
        }
    };
    let entries = blocking(move || library::logs(&sandbox, query)).await?;
    Ok(entries.into_iter().map(entry).collect())
}

/// `logStream(opts)` of the sandbox `sandbox` names (running or not).
pub(crate) async fn log_stream(
    sandbox: api::Sandbox,
    opts: Option<LogStreamOptions>,
) -> Result<LogStream> {
    let options = opts.unwrap_or(LogStreamOptions {
        sources: None,
        since_ms: None,
        from_cursor: None,
        until_ms: None,
        follow: None,
    });
    let (query, follow) = options.into_query()?;
    let source = if follow {
        Source::Follow(Box::new(library::log_follow(&sandbox, query).await?))
    } else {
        let entries = blocking(move || library::logs(&sandbox, query)).await?;
        Source::Read(entries.into())
    };
    Ok(LogStream { source: Mutex::new(Some(source)), closed: CancellationToken::new() })
}

/// Where a stream's entries come from.
enum Source {
    /// `follow: false`: what was there when it started.
    Read(VecDeque<LibEntry>),
    /// `follow: true`: the library's follow.
    Follow(Box<moat_runtime::api::LogStream>),
}

/// The exec log's entries, one per `recv()` (async-iterable). Closed by `close()`, by breaking
/// out of `for await`, or when it is garbage-collected.
#[napi]
pub struct LogStream {
    /// `None` once it ended or was closed.
    source: Mutex<Option<Source>>,
    /// Cancels a `recv()` that waits for a new entry.
    closed: CancellationToken,
}

#[napi]
impl LogStream {
    /// The next entry; `null` once the stream ended (read all, the sandbox stopped, `untilMs`
    /// passed) or was closed.
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<LogEntry>> {
        let mut guard = tokio::select! {
            guard = self.source.lock() => guard,
            () = self.closed.cancelled() => return Ok(None),
        };
        let next = match guard.as_mut() {
            None => return Ok(None),
            Some(Source::Read(entries)) => entries.pop_front().map(Ok),
            Some(Source::Follow(stream)) => tokio::select! {
                next = stream.next() => next,
                () = self.closed.cancelled() => None,
            },
        };
        match next {
            Some(Ok(found)) => Ok(Some(entry(found))),
            Some(Err(err)) => {
                *guard = None;
                Err(NodeError::from(err).into())
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }

    /// Stops the stream (a pending `recv()` returns `null`); idempotent. moat's addition:
    /// `for await` calls it when the loop is left early.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.closed.cancel();
        self.source.lock().await.take();
        Ok(())
    }
}
