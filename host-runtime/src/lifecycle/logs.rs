//! `moat logs`: the relay's `exec.log` read back, oldest first.
//!
//! ```text
//!  DIR/logs/exec.log.4 ─► .3 ─► .2 ─► .1 ─► exec.log ─► filter by source ─► `d` bytes
//!   ─► last N lines (--tail)
//!  -f: then, while the sandbox is live, read what is new: the rest of the file last read (even
//!      when it was rotated to exec.log.N meanwhile), every newer rotation, the live file's
//!      complete lines
//! ```
//!
//! The record format and the pure reading rules (complete lines, record chunks, tail start,
//! where to read next across rotation) belong to `moat_protocol::exec_log`; writing and rotating
//! to the relay. This module does the file I/O.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_protocol::exec_log::{FollowCursor, LogFile, LogSource, record_chunks, tail_start};
use moat_protocol::limits::EXEC_LOG_ROTATED_FILES;

use crate::error::RuntimeError;
use crate::limits::LOG_FOLLOW_INTERVAL_MS;
use crate::store::home::SandboxDir;
use crate::store::state::{self, Status};

const EXEC_LOG: &str = "exec.log";

/// Which exec.log records to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFilter {
    /// Exec stdout only.
    Stdout,
    /// Exec stderr only.
    Stderr,
    /// Lifecycle markers only.
    System,
    /// Everything.
    #[default]
    All,
}

/// What [`print()`] prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Which records.
    pub source: LogFilter,
    /// Only the last N lines of the selected output.
    pub tail: Option<usize>,
    /// Keep printing new records while the sandbox is live.
    pub follow: bool,
}

/// Whether `filter` selects records from `source`.
pub fn selects(filter: LogFilter, source: LogSource) -> bool {
    match filter {
        LogFilter::All => true,
        LogFilter::Stdout => matches!(source, LogSource::Stdout | LogSource::Output),
        LogFilter::Stderr => source == LogSource::Stderr,
        LogFilter::System => source == LogSource::System,
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

/// The selected records' bytes from complete lines of `text`; lines that are not records are
/// skipped.
pub fn chunks(text: &str, filter: LogFilter) -> Vec<Vec<u8>> {
    record_chunks(text.as_bytes(), |source| selects(filter, source))
}

/// Prints the selected records; with `follow`, keeps printing until the sandbox is not live.
pub fn print(dir: &SandboxDir, args: &LogOptions) -> Result<(), RuntimeError> {
    let log_dir = dir.log_dir();
    let mut cursor = FollowCursor::new();
    let text = read_new(&log_dir, &mut cursor, args.source)?.concat();
    let start = args.tail.map_or(0, |n| tail_start(&text, n));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&text[start..]);
    let _ = out.flush();
    if args.follow {
        follow(dir, &log_dir, cursor, args.source, &mut out)?;
    }
    Ok(())
}

/// The selected records the cursor has not read yet, oldest first; the cursor moves past them.
/// Every file is opened before any is measured or read, so a rotation in between cannot swap
/// one for another. Nothing while the live `exec.log` is missing (between rotation's renames).
fn read_new(
    log_dir: &Path,
    cursor: &mut FollowCursor,
    filter: LogFilter,
) -> Result<Vec<Vec<u8>>, RuntimeError> {
    let mut open = Vec::new();
    for path in log_files(log_dir) {
        match File::open(&path) {
            Ok(file) => open.push((path, file)),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(RuntimeError::io("open exec log", &path)(err)),
        }
    }
    if !open.last().is_some_and(|(path, _)| path.ends_with(EXEC_LOG)) {
        return Ok(Vec::new());
    }
    let mut files = Vec::with_capacity(open.len());
    for (path, file) in &open {
        let meta = file.metadata().map_err(RuntimeError::io("stat exec log", path))?;
        files.push(LogFile { identity: meta.ino(), len: meta.len() });
    }
    let mut selected = Vec::new();
    for read in cursor.plan(&files) {
        let (path, file) = &mut open[read.file];
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(read.from))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(RuntimeError::io("read exec log", &*path))?;
        let text =
            if read.live { cursor.advance(files[read.file], read.from, &bytes) } else { &bytes };
        selected.extend(record_chunks(text, |source| selects(filter, source)));
    }
    Ok(selected)
}

fn follow(
    dir: &SandboxDir,
    log_dir: &Path,
    mut cursor: FollowCursor,
    filter: LogFilter,
    out: &mut impl Write,
) -> Result<(), RuntimeError> {
    loop {
        let still_live =
            matches!(state::read(dir.path())?.status, Status::Running | Status::Draining);
        for chunk in read_new(log_dir, &mut cursor, filter)? {
            let _ = out.write_all(&chunk);
        }
        let _ = out.flush();
        if !still_live {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(LOG_FOLLOW_INTERVAL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"{"t":"2026-01-01T00:00:00.000Z","s":"system","d":"--- sandbox started ---\n"}"#,
        "\n",
        r#"{"t":"2026-01-01T00:00:00.001Z","s":"stdout","d":"one\n","id":1}"#,
        "\n",
        r#"{"t":"2026-01-01T00:00:00.002Z","s":"stderr","d":"oops\n","id":1}"#,
        "\n",
        "not a record\n",
        r#"{"t":"2026-01-01T00:00:00.003Z","s":"stdout","d":"two\n","id":1}"#,
        "\n",
    );

    #[test]
    fn stdout_filter_keeps_stdout_in_order() {
        assert_eq!(chunks(LOG, LogFilter::Stdout), vec![b"one\n".to_vec(), b"two\n".to_vec()]);
    }

    #[test]
    fn all_keeps_every_record_and_skips_garbage() {
        assert_eq!(chunks(LOG, LogFilter::All).len(), 4);
    }

    #[test]
    fn rotations_are_read_oldest_first() {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join("moat-logs-unit-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["exec.log", "exec.log.1", "exec.log.3"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let names: Vec<String> = log_files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["exec.log.3", "exec.log.1", "exec.log"]);
    }

    #[test]
    fn follow_reads_the_rest_of_a_rotated_file_once() {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join("moat-logs-follow-unit-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let line = |d: &str| {
            format!(r#"{{"t":"2026-01-01T00:00:00.000Z","s":"stdout","d":"{d}","id":1}}"#) + "\n"
        };
        let live = dir.join("exec.log");
        std::fs::write(&live, line("one") + &line("tw")[..20]).unwrap();
        let mut cursor = FollowCursor::new();
        assert_eq!(read_new(&dir, &mut cursor, LogFilter::All).unwrap(), [b"one"]);
        // The partial line is completed, then the file rotates and the new one gets a record.
        std::fs::write(&live, line("one") + &line("two")).unwrap();
        std::fs::rename(&live, dir.join("exec.log.1")).unwrap();
        std::fs::write(&live, line("three")).unwrap();
        assert_eq!(read_new(&dir, &mut cursor, LogFilter::All).unwrap(), [&b"two"[..], b"three"]);
        assert!(read_new(&dir, &mut cursor, LogFilter::All).unwrap().is_empty());
    }
}
