//! A sandbox's exec log as entries: [`Sandbox::logs`](crate::api::Sandbox::logs) reads what
//! is there, [`Sandbox::log_stream`](crate::api::Sandbox::log_stream) follows it.
//!
//! ```text
//!  DIR/logs/exec.log.4 ─► .3 ─► .2 ─► .1 ─► exec.log      (the relay writes and rotates)
//!     each complete line ─► ExecLogRecord ─► sources? since/until? ─► LogEntry { .., cursor }
//!     tail N: a ring of the last N kept while reading (never the whole log)
//!  follow: every LOG_FOLLOW_INTERVAL_MS, what is new since the last read (FollowCursor:
//!     across rotation by inode); ends once the sandbox is not live and all is read
//! ```
//!
//! A [`LogCursor`] names the end of one entry's line: the file's inode and the byte offset after
//! the line. Resuming with [`LogQuery::after`] reads the rest of that file, wherever rotation
//! has renamed it, then every newer file: no entry twice and none skipped, as long as that file
//! is still in the rotated set (`exec.log` and [`EXEC_LOG_ROTATED_FILES`] older ones). Once it
//! has been rotated out, its unread entries are gone and the read starts at the oldest file
//! left. (An inode number the file system reuses for a new `exec.log` after that would be taken
//! for the old file: the cursor is an inode and an offset, nothing more.)
//!
//! The relay stamps a record when the output passes through it and writes it on its own
//! thread a moment later (flushing whenever its queue is empty): output an exec has just
//! returned can take that moment to appear here.
//!
//! The record format and the pure reading rules belong to `moat_protocol::exec_log`; writing and
//! rotating to the relay; printing (`moat logs`) to [`crate::lifecycle::logs`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

pub use moat_protocol::exec_log::LogSource;
use moat_protocol::exec_log::{ExecLogRecord, FollowCursor, LogFile, parse_timestamp};
use moat_protocol::limits::EXEC_LOG_ROTATED_FILES;

use crate::api::blocking;
use crate::error::RuntimeError;
use crate::limits::{LOG_FOLLOW_INTERVAL_MS, LOG_UNTIL_GRACE_MS};
use crate::store::state::Status;

const EXEC_LOG: &str = "exec.log";

/// Where one entry ends in the exec log: resume after it with [`LogQuery::after`]. Its text
/// form (`Display`, `FromStr`) is `INODE:OFFSET`, for the CLI's `--json` and `--after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogCursor {
    /// The inode of the file holding the entry (it stays with the file across rotation).
    pub file: u64,
    /// The byte offset just past the entry's line in that file.
    pub offset: u64,
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// A log cursor's text is not `INODE:OFFSET`.
#[derive(Debug, thiserror::Error)]
#[error("not a log cursor (INODE:OFFSET): {0:?}")]
pub struct LogCursorError(String);

impl FromStr for LogCursor {
    type Err = LogCursorError;

    fn from_str(text: &str) -> Result<LogCursor, LogCursorError> {
        let bad = || LogCursorError(text.to_owned());
        let (file, offset) = text.split_once(':').ok_or_else(bad)?;
        Ok(LogCursor {
            file: file.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

/// One record of the exec log: an output chunk of an exec, or a lifecycle marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the relay captured it (millisecond precision).
    pub timestamp: SystemTime,
    /// Which stream, or `System` for a lifecycle marker.
    pub source: LogSource,
    /// The relay's number for the exec session; `None` for `System` entries.
    pub session_id: Option<u64>,
    /// The chunk's bytes, exactly as the exec wrote them (the relay logs a chunk that is not
    /// UTF-8, or is mostly control bytes, as base64 with `e: "b64"`, which this decodes). Logs
    /// written by relays that logged every chunk as lossy UTF-8 read as that text.
    pub data: Vec<u8>,
    /// Where it ends: [`LogQuery::after`] this reads on from the next entry.
    pub cursor: LogCursor,
}

impl LogEntry {
    /// The chunk as text.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// Which entries [`Sandbox::logs`](crate::api::Sandbox::logs) and
/// [`Sandbox::log_stream`](crate::api::Sandbox::log_stream) return. The default: every entry
/// of every source, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    sources: Vec<LogSource>,
    tail: Option<usize>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    after: Option<LogCursor>,
}

impl LogQuery {
    /// Every entry.
    pub fn new() -> LogQuery {
        LogQuery::default()
    }

    /// Only entries from these sources (none given: all).
    pub fn sources(mut self, sources: impl IntoIterator<Item = LogSource>) -> LogQuery {
        self.sources = sources.into_iter().collect();
        self
    }

    /// Only the last `n` of the entries the other conditions select (for a stream: of those
    /// present when it starts; it then follows every new one).
    pub fn tail(mut self, n: usize) -> LogQuery {
        self.tail = Some(n);
        self
    }

    /// Only entries captured at or after `at`.
    pub fn since(mut self, at: SystemTime) -> LogQuery {
        self.since = Some(at);
        self
    }

    /// Only entries captured at or before `at`. A stream also ends once `at` has passed by
    /// [`LOG_UNTIL_GRACE_MS`] (the relay writes a record a moment after stamping it) and
    /// everything written until then has been read.
    pub fn until(mut self, at: SystemTime) -> LogQuery {
        self.until = Some(at);
        self
    }

    /// Only entries after the one `cursor` came from (see the module documentation for what
    /// that guarantees across rotation).
    pub fn after(mut self, cursor: LogCursor) -> LogQuery {
        self.after = Some(cursor);
        self
    }

    /// The tail asked for.
    pub(crate) fn tail_len(&self) -> Option<usize> {
        self.tail
    }

    fn selects(&self, record: &ExecLogRecord, at: SystemTime) -> bool {
        (self.sources.is_empty() || self.sources.contains(&record.s))
            && self.since.is_none_or(|since| at >= since)
            && self.until.is_none_or(|until| at <= until)
    }
}

/// The file-reading core: where it stands in the rotated set, and what it selects.
#[derive(Debug)]
pub(crate) struct LogReader {
    log_dir: PathBuf,
    cursor: FollowCursor,
    query: LogQuery,
}

impl LogReader {
    pub(crate) fn new(log_dir: PathBuf, query: LogQuery) -> LogReader {
        let cursor = match query.after {
            Some(after) => FollowCursor::at(after.file, after.offset),
            None => FollowCursor::new(),
        };
        LogReader { log_dir, cursor, query }
    }

    /// The selected entries not read yet, oldest first; with `keep_last`, only the last that
    /// many (held in a ring while reading). The cursor moves past every complete line read.
    /// Every file is opened before any is measured or read, so a rotation in between cannot
    /// swap one for another. Nothing while the live `exec.log` is missing (between rotation's
    /// renames, or before the sandbox first wrote).
    pub(crate) fn read_new(
        &mut self,
        keep_last: Option<usize>,
    ) -> Result<VecDeque<LogEntry>, RuntimeError> {
        let mut open = Vec::new();
        for path in log_files(&self.log_dir) {
            match File::open(&path) {
                Ok(file) => open.push((path, file)),
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(RuntimeError::io("open exec log", &path)(err)),
            }
        }
        let mut selected = VecDeque::new();
        if !open.last().is_some_and(|(path, _)| path.ends_with(EXEC_LOG)) {
            return Ok(selected);
        }
        let mut files = Vec::with_capacity(open.len());
        for (path, file) in &open {
            let meta = file.metadata().map_err(RuntimeError::io("stat exec log", path))?;
            files.push(LogFile { identity: meta.ino(), len: meta.len() });
        }
        for read in self.cursor.plan(&files) {
            let (path, file) = &mut open[read.file];
            let identity = files[read.file].identity;
            let mut offset = read.from;
            file.seek(SeekFrom::Start(offset))
                .map_err(RuntimeError::io("seek exec log", &*path))?;
            let mut lines = BufReader::new(&mut *file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let got = lines
                    .read_until(b'\n', &mut line)
                    .map_err(RuntimeError::io("read exec log", &*path))?;
                // The live file's partial last line waits for the rest; a rotated file is whole.
                if got == 0 || (read.live && line.last() != Some(&b'\n')) {
                    break;
                }
                offset += got as u64;
                let cursor = LogCursor { file: identity, offset };
                if let Some(entry) = self.entry(&line, cursor) {
                    if keep_last.is_some_and(|n| selected.len() >= n) {
                        selected.pop_front();
                    }
                    if keep_last != Some(0) {
                        selected.push_back(entry);
                    }
                }
            }
            if read.live {
                self.cursor = FollowCursor::at(identity, offset);
            }
        }
        Ok(selected)
    }

    /// The entry of one line, if it is a record the query selects.
    fn entry(&self, line: &[u8], cursor: LogCursor) -> Option<LogEntry> {
        let record = ExecLogRecord::from_line(std::str::from_utf8(line).ok()?).ok()?;
        let timestamp = parse_timestamp(&record.t)?;
        if !self.query.selects(&record, timestamp) {
            return None;
        }
        Some(LogEntry {
            timestamp,
            source: record.s,
            session_id: record.id,
            data: record.data().ok()?,
            cursor,
        })
    }

    /// The query it reads for.
    pub(crate) fn query(&self) -> &LogQuery {
        &self.query
    }

    /// One step of following: whether the stream is over after this read, and what is new.
    /// Over when the sandbox was not live (or was gone) before the read, or `until` had passed:
    /// then the read got everything it will ever write (that selects).
    pub(crate) fn follow_step(
        &mut self,
        sandbox: &blocking::Sandbox,
        keep_last: Option<usize>,
    ) -> Result<(bool, VecDeque<LogEntry>), RuntimeError> {
        let live = match sandbox.state() {
            Ok(record) => matches!(record.status, Status::Running | Status::Draining),
            // Removed (an ephemeral sandbox that ended): there is nothing more to read.
            Err(RuntimeError::UnknownSandbox(_)) => false,
            Err(other) => return Err(other),
        };
        let grace = Duration::from_millis(LOG_UNTIL_GRACE_MS);
        let past_until = self.query.until.is_some_and(|until| SystemTime::now() > until + grace);
        let entries = self.read_new(keep_last)?;
        Ok((!live || past_until, entries))
    }
}

/// The log files, oldest first (missing rotations skipped).
fn log_files(log_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=EXEC_LOG_ROTATED_FILES)
        .rev()
        .map(|n| log_dir.join(format!("{EXEC_LOG}.{n}")))
        .collect();
    files.push(log_dir.join(EXEC_LOG));
    files.into_iter().filter(|p| p.is_file()).collect()
}

/// The interval between two reads of a follow.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_millis(LOG_FOLLOW_INTERVAL_MS);

/// A sandbox's log, followed: [`LogStream::next`] yields each selected entry once, oldest
/// first, waiting for new ones (it reads every [`LOG_FOLLOW_INTERVAL_MS`], nothing in between);
/// `None` once the sandbox is no longer live (or `until` has passed) and all is read. Dropping
/// it stops the following: nothing runs in the background but a read already started.
#[derive(Debug)]
pub struct LogStream {
    sandbox: blocking::Sandbox,
    /// `None` only while a read is on the blocking pool (`reading`).
    reader: Option<LogReader>,
    /// The read in flight: kept here, so a `next` dropped while it runs loses nothing.
    reading: Option<tokio::task::JoinHandle<FollowStep>>,
    pending: VecDeque<LogEntry>,
    state: FollowState,
}

/// A follow read done on the blocking pool: the reader back, and what it found.
type FollowStep = (LogReader, Result<(bool, VecDeque<LogEntry>), RuntimeError>);

/// Where a follow ([`LogStream`], [`blocking::LogFollow`]) is.
///
/// ```text
///  Starting ─(first read: the tail)─► Following ─(not live, all read)─► Ended
///      └──────────────(not live, or an error)─────────────────────────────┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowState {
    /// Nothing read yet: the first read applies the query's tail, at once.
    Starting,
    /// Reading what is new every [`FOLLOW_INTERVAL`].
    Following,
    /// Everything is read; only what is pending is left.
    Ended,
}

impl FollowState {
    /// The state after a read that found the stream `over`.
    pub(crate) fn after_read(over: bool) -> FollowState {
        if over { FollowState::Ended } else { FollowState::Following }
    }
}

impl LogStream {
    pub(crate) fn new(sandbox: blocking::Sandbox, query: LogQuery) -> LogStream {
        let reader = LogReader::new(sandbox.dir().log_dir(), query);
        LogStream {
            sandbox,
            reader: Some(reader),
            reading: None,
            pending: VecDeque::new(),
            state: FollowState::Starting,
        }
    }

    /// The next entry; `None` when the stream has ended. Cancel-safe: a call dropped while
    /// it waits loses no entry, the next call carries on.
    pub async fn next(&mut self) -> Option<Result<LogEntry, RuntimeError>> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            if self.reading.is_none() {
                let keep_last = match self.state {
                    FollowState::Ended => return None,
                    FollowState::Starting => self.reader.as_ref()?.query.tail,
                    FollowState::Following => {
                        tokio::time::sleep(FOLLOW_INTERVAL).await;
                        None
                    }
                };
                let (mut reader, sandbox) = (self.reader.take()?, self.sandbox.clone());
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let step = reader.follow_step(&sandbox, keep_last);
                    (reader, step)
                }));
            }
            let joined = self.reading.as_mut()?.await;
            self.reading = None;
            let step = match joined {
                Ok((reader, step)) => {
                    self.reader = Some(reader);
                    step
                }
                Err(join) => Err(join.into()),
            };
            match step {
                Ok((over, entries)) => {
                    self.pending = entries;
                    self.state = FollowState::after_read(over);
                }
                Err(err) => {
                    self.state = FollowState::Ended;
                    return Some(Err(err));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, s: &str, d: &str, id: Option<u64>) -> String {
        let id = id.map(|id| format!(",\"id\":{id}")).unwrap_or_default();
        format!("{{\"t\":\"{t}\",\"s\":\"{s}\",\"d\":\"{d}\"{id}}}\n")
    }

    fn scratch(name: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn texts(entries: &VecDeque<LogEntry>) -> Vec<String> {
        entries.iter().map(|e| e.text().into_owned()).collect()
    }

    #[test]
    fn cursor_text_round_trips_and_rejects_garbage() {
        let cursor = LogCursor { file: 1234, offset: 99 };
        assert_eq!(cursor.to_string().parse::<LogCursor>().unwrap(), cursor);
        for bad in ["", "12", "a:1", "1:-2", "1:2:3"] {
            assert!(bad.parse::<LogCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_carry_source_session_and_a_cursor_past_their_line() {
        let dir = scratch("moat-api-logs-entries");
        let first = line("2026-01-01T00:00:00.000Z", "system", "start", None);
        let second = line("2026-01-01T00:00:01.000Z", "stderr", "oops", Some(3));
        std::fs::write(dir.join(EXEC_LOG), format!("{first}not a record\n{second}")).unwrap();
        let entries = LogReader::new(dir.clone(), LogQuery::new()).read_new(None).unwrap();
        assert_eq!(texts(&entries), ["start", "oops"]);
        assert_eq!((entries[1].source, entries[1].session_id), (LogSource::Stderr, Some(3)));
        let len = std::fs::metadata(dir.join(EXEC_LOG)).unwrap().len();
        assert_eq!(entries[1].cursor.offset, len);
        assert_eq!(entries[0].cursor.offset, first.len() as u64);
    }

    #[test]
    fn tail_keeps_the_last_selected_entries() {
        let dir = scratch("moat-api-logs-tail");
        let text: String = (0..10)
            .map(|i| line("2026-01-01T00:00:00.000Z", "stdout", &i.to_string(), Some(1)))
            .collect();
        std::fs::write(dir.join(EXEC_LOG), text).unwrap();
        let mut reader = LogReader::new(dir.clone(), LogQuery::new());
        assert_eq!(texts(&reader.read_new(Some(3)).unwrap()), ["7", "8", "9"]);
        let mut reader = LogReader::new(dir, LogQuery::new());
        assert!(reader.read_new(Some(0)).unwrap().is_empty());
    }

    #[test]
    fn since_until_and_sources_select_together() {
        let dir = scratch("moat-api-logs-select");
        let text = [
            line("2026-01-01T00:00:01.000Z", "stdout", "a", Some(1)),
            line("2026-01-01T00:00:02.000Z", "stderr", "b", Some(1)),
            line("2026-01-01T00:00:03.000Z", "stdout", "c", Some(1)),
            line("2026-01-01T00:00:04.000Z", "stdout", "d", Some(1)),
        ]
        .concat();
        std::fs::write(dir.join(EXEC_LOG), text).unwrap();
        let at = |s: &str| parse_timestamp(s).unwrap();
        let query = LogQuery::new()
            .sources([LogSource::Stdout])
            .since(at("2026-01-01T00:00:02Z"))
            .until(at("2026-01-01T00:00:03Z"));
        assert_eq!(texts(&LogReader::new(dir, query).read_new(None).unwrap()), ["c"]);
    }

    #[test]
    fn after_a_cursor_resumes_across_rotation_without_duplicates() {
        let dir = scratch("moat-api-logs-resume");
        let live = dir.join(EXEC_LOG);
        let rec = |d: &str| line("2026-01-01T00:00:00.000Z", "stdout", d, Some(1));
        std::fs::write(&live, rec("one") + &rec("two")).unwrap();
        let entries = LogReader::new(dir.clone(), LogQuery::new()).read_new(None).unwrap();
        let after_one = entries[0].cursor;
        // The live file rotates to exec.log.1; a new live file gets a record; a partial line
        // is not an entry yet.
        std::fs::rename(&live, dir.join("exec.log.1")).unwrap();
        std::fs::write(&live, rec("three") + &rec("four")[..10]).unwrap();
        let mut reader = LogReader::new(dir.clone(), LogQuery::new().after(after_one));
        assert_eq!(texts(&reader.read_new(None).unwrap()), ["two", "three"]);
        std::fs::write(&live, rec("three") + &rec("four")).unwrap();
        assert_eq!(texts(&reader.read_new(None).unwrap()), ["four"]);
        assert!(reader.read_new(None).unwrap().is_empty());
    }
}
