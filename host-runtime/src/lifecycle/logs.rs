//! `moat logs`: the library's exec log entries ([`crate::api::logs`]) printed, as the chunks
//! themselves or as JSON Lines.
//!
//! ```text
//!  Sandbox::log_follow(query) ─► backlog (the query's tail of the entries present)
//!     text: the chunks, cut to the last N lines (--tail N counts lines of output)
//!     --json: one object per entry {timestamp, source, session_id, text, cursor}
//!  -f: then each new entry as it is written, until the sandbox is not live
//! ```
//!
//! Reading, selecting and following belong to [`crate::api::logs`]; this module only prints.

use std::io::Write;

use moat_protocol::exec_log::{LogSource, format_timestamp, tail_start};

use crate::api::blocking::Sandbox;
use crate::api::logs::{LogEntry, LogQuery};
use crate::error::RuntimeError;

/// Which exec.log records to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFilter {
    /// Exec stdout only (and a PTY exec's merged output).
    Stdout,
    /// Exec stderr only.
    Stderr,
    /// Lifecycle markers only.
    System,
    /// Everything.
    #[default]
    All,
}

impl LogFilter {
    /// The sources it selects (none: all).
    pub fn sources(self) -> Vec<LogSource> {
        match self {
            LogFilter::All => Vec::new(),
            LogFilter::Stdout => vec![LogSource::Stdout, LogSource::Output],
            LogFilter::Stderr => vec![LogSource::Stderr],
            LogFilter::System => vec![LogSource::System],
        }
    }
}

/// What [`print()`] prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The entries (sources, since/until, after a cursor; its tail is in entries).
    pub query: LogQuery,
    /// `--tail N`: the last N lines of the text output (the last N entries with `--json`).
    pub tail: Option<usize>,
    /// Keep printing new entries while the sandbox is live.
    pub follow: bool,
    /// One JSON object per entry, with its cursor.
    pub json: bool,
}

/// Prints the selected entries; with `follow`, keeps printing until the sandbox is not live.
pub fn print(sandbox: &Sandbox, options: &LogOptions) -> Result<(), RuntimeError> {
    let mut query = options.query.clone();
    if let Some(n) = options.tail {
        // N lines lie within the last N entries, unless a line was written in pieces.
        query = query.tail(n);
    }
    let mut follow = sandbox.log_follow(query);
    let backlog = follow.backlog()?;
    let mut out = std::io::stdout().lock();
    if options.json {
        for entry in &backlog {
            let _ = out.write_all(json_line(entry).as_bytes());
        }
    } else {
        let text: Vec<u8> = backlog.iter().flat_map(|e| e.data.iter().copied()).collect();
        let start = options.tail.map_or(0, |n| tail_start(&text, n));
        let _ = out.write_all(&text[start..]);
    }
    let _ = out.flush();
    if !options.follow {
        return Ok(());
    }
    for entry in follow {
        let entry = entry?;
        let _ = if options.json {
            out.write_all(json_line(&entry).as_bytes())
        } else {
            out.write_all(&entry.data)
        };
        let _ = out.flush();
    }
    Ok(())
}

/// `--json`: the entry as one line.
pub fn json_line(entry: &LogEntry) -> String {
    let object = serde_json::json!({
        "timestamp": format_timestamp(entry.timestamp),
        "source": entry.source,
        "session_id": entry.session_id,
        "text": entry.text(),
        "cursor": entry.cursor.to_string(),
    });
    format!("{object}\n")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::api::logs::LogCursor;

    #[test]
    fn json_line_has_every_field_and_one_newline() {
        let entry = LogEntry {
            timestamp: UNIX_EPOCH + Duration::from_millis(1),
            source: LogSource::Stderr,
            session_id: Some(4),
            data: b"oops\n".to_vec(),
            cursor: LogCursor { file: 12, offset: 34 },
        };
        let line = json_line(&entry);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.001Z");
        assert_eq!(value["source"], "stderr");
        assert_eq!(value["session_id"], 4);
        assert_eq!(value["text"], "oops\n");
        assert_eq!(value["cursor"], "12:34");
    }

    #[test]
    fn stdout_filter_includes_pty_output() {
        assert_eq!(LogFilter::Stdout.sources(), [LogSource::Stdout, LogSource::Output]);
        assert!(LogFilter::All.sources().is_empty());
    }
}
