//! The `exec.log` writer (PROTOCOL.md §13.10): JSON Lines appended to `<log dir>/exec.log` by a
//! dedicated thread, rotated at [`EXEC_LOG_ROTATE_BYTES`].
//!
//! ```text
//!  router ──LogEntry──► ExecLogSink::append ──bounded channel──► writer thread ──► exec.log
//!                        (never blocks: a full queue drops      (formats, rotates:
//!                         the record and counts it)              .3→.4 .2→.3 .1→.2 exec.log→.1)
//! ```
//!
//! The queue is bounded in records ([`EXEC_LOG_QUEUE_MAX_LINES`]) and in bytes of chunk data
//! ([`EXEC_LOG_QUEUE_MAX_BYTES`]). Dropped records are counted, reported in [`ExecLogStats`], in a
//! `tracing` warning, and in the file itself as a `system` line
//! `--- exec.log dropped N lines ---` at the point of the gap. The record's shape and text form
//! belong to [`moat_protocol::exec_log`]; this module owns the file, the thread and the rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::SystemTime;

use bytes::Bytes;
use moat_protocol::exec_log::{ExecLogRecord, LogSource};
use moat_protocol::limits::{EXEC_LOG_ROTATE_BYTES, EXEC_LOG_ROTATED_FILES};

use crate::limits::{EXEC_LOG_QUEUE_MAX_BYTES, EXEC_LOG_QUEUE_MAX_LINES};

/// Name of the live log file inside the log directory.
pub const EXEC_LOG_FILE: &str = "exec.log";

/// The `system` line written when the relay starts serving.
pub const SANDBOX_STARTED: &str = "--- sandbox started ---\n";

/// The `system` line written when the relay stops.
pub const SANDBOX_STOPPED: &str = "--- sandbox stopped ---\n";

/// What the router asks to log; the time is stamped when it is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A lifecycle marker such as [`SANDBOX_STARTED`].
    System(&'static str),
    /// One exec output chunk.
    Output {
        /// `stdout`, `stderr` or `output` (tty).
        source: LogSource,
        /// The relay's session number.
        session: u64,
        /// The chunk's bytes: a slice of the received frame (no copy), which it keeps alive
        /// while queued, as a client's queue keeps the frames it holds.
        data: Bytes,
    },
}

impl LogEntry {
    /// The bytes it counts against [`EXEC_LOG_QUEUE_MAX_BYTES`] while queued.
    fn queued_len(&self) -> usize {
        match self {
            LogEntry::System(text) => text.len(),
            LogEntry::Output { data, .. } => data.len(),
        }
    }

    /// The record for this entry captured at `at`.
    pub fn to_record(&self, at: SystemTime) -> ExecLogRecord {
        match self {
            LogEntry::System(text) => ExecLogRecord::system(at, text),
            LogEntry::Output { source, session, data } => {
                ExecLogRecord::output(at, *source, *session, data)
            }
        }
    }
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExecLogError {
    /// The log directory could not be created.
    #[error("cannot create log directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// `exec.log` could not be opened for appending.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the exec.log writer thread: {0}")]
    Spawn(#[source] io::Error),
}

/// What the writer did, reported when it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecLogStats {
    /// Lines written, including `system` lines.
    pub lines_written: u64,
    /// Records dropped because the queue was full or the writer had stopped.
    pub lines_dropped: u64,
    /// Times `exec.log` was rotated.
    pub rotations: u64,
    /// Lines that failed to write (I/O errors).
    pub write_errors: u64,
}

enum Command {
    /// An entry and when it was appended.
    Entry(LogEntry, SystemTime),
    Stop,
}

#[derive(Debug, Default)]
struct Counters {
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
}

/// The appending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct ExecLogSink {
    tx: SyncSender<Command>,
    counters: Arc<Counters>,
}

impl ExecLogSink {
    /// Queues `entry`, stamped now. Returns `false` (and counts a dropped line) when the queue is
    /// full or the writer has stopped. The record's text (escaped or base64, timestamp) is made by
    /// the writer thread, so the caller (the relay's guest reader) pays only for the queueing,
    /// and nothing at all for an entry that is dropped.
    pub fn append(&self, entry: LogEntry) -> bool {
        let len = entry.queued_len();
        let queued = self.counters.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued + len > EXEC_LOG_QUEUE_MAX_BYTES {
            return self.dropped(len);
        }
        match self.tx.try_send(Command::Entry(entry, SystemTime::now())) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped(len),
        }
    }

    fn dropped(&self, len: usize) -> bool {
        self.counters.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.counters.dropped.fetch_add(1, Ordering::AcqRel);
        false
    }
}

/// The open log: its sink and its writer thread.
pub struct ExecLog {
    sink: ExecLogSink,
    thread: JoinHandle<ExecLogStats>,
}

impl ExecLog {
    /// Creates `dir` if needed, opens `dir/exec.log` for appending and starts the writer thread.
    pub fn open(dir: &Path) -> Result<ExecLog, ExecLogError> {
        ExecLog::open_with_rotation(dir, EXEC_LOG_ROTATE_BYTES)
    }

    /// [`ExecLog::open`] with another rotation size (tests use a small one).
    pub fn open_with_rotation(dir: &Path, rotate_bytes: u64) -> Result<ExecLog, ExecLogError> {
        fs::create_dir_all(dir)
            .map_err(|source| ExecLogError::CreateDir { dir: dir.to_owned(), source })?;
        let file = RotatingFile::open(dir, rotate_bytes)?;
        let (tx, rx) = mpsc::sync_channel(EXEC_LOG_QUEUE_MAX_LINES);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = thread::Builder::new()
            .name("exec-log".into())
            .spawn(move || Writer::new(file, thread_counters).run(rx))
            .map_err(ExecLogError::Spawn)?;
        Ok(ExecLog { sink: ExecLogSink { tx, counters }, thread })
    }

    /// A sink for appending.
    pub fn sink(&self) -> ExecLogSink {
        self.sink.clone()
    }

    /// Writes `last` (waiting for room if needed), everything queued before it, and stops the
    /// thread. Blocks: call it from a blocking context.
    pub fn finish(self, last: Option<LogEntry>) -> ExecLogStats {
        if let Some(entry) = last {
            self.sink.counters.queued_bytes.fetch_add(entry.queued_len(), Ordering::AcqRel);
            // A send error means the thread is gone; its stats say so.
            let _ = self.sink.tx.send(Command::Entry(entry, SystemTime::now()));
        }
        let _ = self.sink.tx.send(Command::Stop);
        let dropped = self.sink.counters.dropped.load(Ordering::Acquire);
        match self.thread.join() {
            Ok(stats) => ExecLogStats { lines_dropped: dropped, ..stats },
            Err(_) => {
                tracing::error!("the exec.log writer thread panicked");
                ExecLogStats { lines_dropped: dropped, ..ExecLogStats::default() }
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    file: RotatingFile,
    counters: Arc<Counters>,
    stats: ExecLogStats,
    reported_drops: u64,
    /// The line being written, kept between records (up to [`KEPT_LINE_BUFFER_BYTES`]).
    line: Vec<u8>,
}

/// The largest line buffer the writer keeps for the next record: room for the line of any 256 KiB
/// chunk, whose `d` is at most twice its size (text that escapes to more is written as base64,
/// 4/3 of it). A larger one is freed after its line.
const KEPT_LINE_BUFFER_BYTES: usize = 1024 * 1024;

impl Writer {
    fn new(file: RotatingFile, counters: Arc<Counters>) -> Writer {
        Writer {
            file,
            counters,
            stats: ExecLogStats::default(),
            reported_drops: 0,
            line: Vec::new(),
        }
    }

    /// Writes records until [`Command::Stop`] or until every sink is gone. Flushes whenever the
    /// queue runs empty, so lines reach the file promptly without a write per line.
    fn run(mut self, rx: Receiver<Command>) -> ExecLogStats {
        'outer: while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Entry(entry, at) => self.write(&entry, at),
                    Command::Stop => break 'outer,
                }
                // Empty or disconnected: flush, then block (or end) on `recv`.
                next = rx.try_recv().ok();
            }
            self.flush();
        }
        self.report_drops();
        self.flush();
        self.stats
    }

    fn write(&mut self, entry: &LogEntry, at: SystemTime) {
        self.counters.queued_bytes.fetch_sub(entry.queued_len(), Ordering::AcqRel);
        self.report_drops();
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        match entry {
            // The chunk's line is written straight into the reused buffer: no record, no copy
            // of the chunk, no intermediate JSON string.
            LogEntry::Output { source, session, data } => {
                ExecLogRecord::write_output_line(&mut line, at, *source, *session, data);
            }
            LogEntry::System(_) => line.extend_from_slice(entry.to_record(at).to_line().as_bytes()),
        }
        self.write_line(&line);
        if line.capacity() <= KEPT_LINE_BUFFER_BYTES {
            self.line = line;
        }
    }

    /// Marks a gap left by dropped records, once per batch of drops.
    fn report_drops(&mut self) {
        let dropped = self.counters.dropped.load(Ordering::Acquire);
        if dropped == self.reported_drops {
            return;
        }
        let gap = dropped - self.reported_drops;
        self.reported_drops = dropped;
        tracing::warn!(dropped = gap, "exec.log writer fell behind; records were dropped");
        let text = format!("--- exec.log dropped {gap} lines ---\n");
        let marker = ExecLogRecord::system(SystemTime::now(), &text);
        self.write_line(marker.to_line().as_bytes());
    }

    fn write_line(&mut self, line: &[u8]) {
        match self.file.write_line(line) {
            Ok(rotated) => {
                self.stats.lines_written += 1;
                self.stats.rotations += u64::from(rotated);
            }
            Err(err) => {
                self.stats.write_errors += 1;
                if self.stats.write_errors == 1 {
                    tracing::error!(error = %err, "cannot write exec.log");
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Err(err) = self.file.flush() {
            self.stats.write_errors += 1;
            tracing::error!(error = %err, "cannot flush exec.log");
        }
    }
}

/// `exec.log` and its rotation.
struct RotatingFile {
    dir: PathBuf,
    file: BufWriter<File>,
    size_bytes: u64,
    rotate_bytes: u64,
}

impl RotatingFile {
    fn open(dir: &Path, rotate_bytes: u64) -> Result<RotatingFile, ExecLogError> {
        let path = dir.join(EXEC_LOG_FILE);
        let open = || -> io::Result<(File, u64)> {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        };
        let (file, size_bytes) = open().map_err(|source| ExecLogError::Open { path, source })?;
        Ok(RotatingFile {
            dir: dir.to_owned(),
            file: BufWriter::new(file),
            size_bytes,
            rotate_bytes,
        })
    }

    /// Appends one line, rotating first when it would push a non-empty file past the limit.
    /// Returns whether it rotated.
    fn write_line(&mut self, line: &[u8]) -> io::Result<bool> {
        let len = line.len() as u64;
        let rotate = self.size_bytes > 0 && self.size_bytes + len > self.rotate_bytes;
        if rotate {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size_bytes += len;
        Ok(rotate)
    }

    /// `exec.log.3→.4`, `.2→.3`, `.1→.2`, `exec.log→exec.log.1`, then a fresh `exec.log`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        for n in (1..EXEC_LOG_ROTATED_FILES).rev() {
            rename_if_present(&self.rotated(n), &self.rotated(n + 1))?;
        }
        let live = self.dir.join(EXEC_LOG_FILE);
        rename_if_present(&live, &self.rotated(1))?;
        let file = OpenOptions::new().create(true).append(true).open(&live)?;
        self.file = BufWriter::new(file);
        self.size_bytes = 0;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{EXEC_LOG_FILE}.{n}"))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("moat-relay-exec-log-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn lines(path: &Path) -> Vec<ExecLogRecord> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| ExecLogRecord::from_line(line).unwrap())
            .collect()
    }

    fn output(session: u64, data: &[u8]) -> LogEntry {
        LogEntry::Output { source: LogSource::Stdout, session, data: Bytes::copy_from_slice(data) }
    }

    #[test]
    fn open_creates_the_directory_and_appends_lines() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("logs").join("nested");
        let log = ExecLog::open(&dir).unwrap();
        assert!(log.sink().append(LogEntry::System(SANDBOX_STARTED)));
        assert!(log.sink().append(output(1, b"hello\n")));
        let stats = log.finish(Some(LogEntry::System(SANDBOX_STOPPED)));
        assert_eq!(stats, ExecLogStats { lines_written: 3, ..ExecLogStats::default() });
        let records = lines(&dir.join(EXEC_LOG_FILE));
        let texts: Vec<_> = records.iter().map(|r| (r.s, r.d.as_str(), r.id)).collect();
        assert_eq!(
            texts,
            [
                (LogSource::System, SANDBOX_STARTED, None),
                (LogSource::Stdout, "hello\n", Some(1)),
                (LogSource::System, SANDBOX_STOPPED, None),
            ]
        );
    }

    #[test]
    fn reopening_appends_to_the_existing_file() {
        let tmp = TempDir::new();
        ExecLog::open(&tmp.0).unwrap().finish(Some(output(1, b"a")));
        ExecLog::open(&tmp.0).unwrap().finish(Some(output(2, b"b")));
        let ids: Vec<_> = lines(&tmp.0.join(EXEC_LOG_FILE)).iter().map(|r| r.id).collect();
        assert_eq!(ids, [Some(1), Some(2)]);
    }

    #[test]
    fn rotation_shifts_files_and_keeps_four() {
        let tmp = TempDir::new();
        let line_len = output(1, b"0123456789").to_record(SystemTime::UNIX_EPOCH).to_line().len();
        // Two lines per file (ids 10..12 are a byte longer): the third line of a file rotates it.
        let log = ExecLog::open_with_rotation(&tmp.0, 2 * line_len as u64 + 4).unwrap();
        for session in 1..=12 {
            assert!(log.sink().append(output(session, b"0123456789")));
        }
        let stats = log.finish(None);
        assert_eq!((stats.lines_written, stats.rotations), (12, 5));
        let ids = |name: &str| -> Vec<Option<u64>> {
            lines(&tmp.0.join(name)).iter().map(|r| r.id).collect()
        };
        assert_eq!(ids("exec.log"), [Some(11), Some(12)]);
        assert_eq!(ids("exec.log.1"), [Some(9), Some(10)]);
        assert_eq!(ids("exec.log.2"), [Some(7), Some(8)]);
        assert_eq!(ids("exec.log.3"), [Some(5), Some(6)]);
        assert_eq!(ids("exec.log.4"), [Some(3), Some(4)]);
        assert!(!tmp.0.join("exec.log.5").exists(), "only four rotated files are kept");
    }

    #[test]
    fn a_line_larger_than_the_limit_goes_into_a_fresh_file() {
        let tmp = TempDir::new();
        let log = ExecLog::open_with_rotation(&tmp.0, 10).unwrap();
        log.sink().append(output(1, b"first"));
        log.sink().append(output(2, b"second"));
        let stats = log.finish(None);
        assert_eq!(stats.rotations, 1);
        assert_eq!(lines(&tmp.0.join("exec.log"))[0].id, Some(2));
        assert_eq!(lines(&tmp.0.join("exec.log.1"))[0].id, Some(1));
    }

    #[test]
    fn a_full_queue_drops_and_counts_records() {
        let tmp = TempDir::new();
        let log = ExecLog::open(&tmp.0).unwrap();
        let sink = log.sink();
        // Fill the byte budget as if the writer were far behind.
        sink.counters.queued_bytes.fetch_add(EXEC_LOG_QUEUE_MAX_BYTES, Ordering::AcqRel);
        assert!(!sink.append(output(1, b"lost")));
        sink.counters.queued_bytes.fetch_sub(EXEC_LOG_QUEUE_MAX_BYTES, Ordering::AcqRel);
        assert!(sink.append(output(2, b"kept")));
        let stats = log.finish(None);
        assert_eq!(stats.lines_dropped, 1);
        let records = lines(&tmp.0.join(EXEC_LOG_FILE));
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].s, LogSource::System);
        assert_eq!(records[0].d, "--- exec.log dropped 1 lines ---\n");
        assert_eq!(records[1].id, Some(2));
    }

    #[test]
    fn appends_after_finish_are_counted_as_dropped() {
        let tmp = TempDir::new();
        let log = ExecLog::open(&tmp.0).unwrap();
        let sink = log.sink();
        log.finish(None);
        assert!(!sink.append(output(1, b"late")));
    }
}
