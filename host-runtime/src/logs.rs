//! `moat logs`: the relay's `exec.log` read back, oldest first.
//!
//! ```text
//!  DIR/logs/exec.log.4 ─► .3 ─► .2 ─► .1 ─► exec.log ─► filter by source ─► `d` bytes
//!   ─► last N lines (--tail)
//!  -f: then poll exec.log from its end while the sandbox is live (a shrinking file was rotated:
//!      read it again from the start)
//! ```
//!
//! The record format belongs to `moat_protocol::exec_log`; writing and rotating to the relay.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_protocol::exec_log::{ExecLogRecord, LogSource};
use moat_protocol::limits::EXEC_LOG_ROTATED_FILES;

use crate::cli::{LogFilter, LogsArgs};
use crate::error::RuntimeError;
use crate::home::SandboxDir;
use crate::limits::LOG_FOLLOW_INTERVAL_MS;
use crate::state::{self, Status};

const EXEC_LOG: &str = "exec.log";

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
    text.lines()
        .filter_map(|line| ExecLogRecord::from_line(line).ok())
        .filter(|record| selects(filter, record.s))
        .filter_map(|record| record.data().ok())
        .collect()
}

/// Prints the selected records; with `follow`, keeps printing until the sandbox is not live.
pub fn print(dir: &SandboxDir, args: &LogsArgs) -> Result<(), RuntimeError> {
    let log_dir = dir.log_dir();
    let mut selected = Vec::new();
    let mut live_len = 0;
    for path in log_files(&log_dir) {
        let text = std::fs::read(&path).map_err(RuntimeError::io("read exec log", &path))?;
        if path.ends_with(EXEC_LOG) {
            live_len = complete_prefix(&text);
        }
        selected.extend(chunks(
            &String::from_utf8_lossy(&text[..complete_len(&text, &path)]),
            args.source,
        ));
    }
    let text = selected.concat();
    let start = args.tail.map_or(0, |n| tail_start(&text, n));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&text[start..]);
    let _ = out.flush();
    if args.follow {
        follow(dir, &log_dir.join(EXEC_LOG), live_len, args.source, &mut out)?;
    }
    Ok(())
}

/// Where the last `lines` lines of `text` start (a final line without newline counts).
pub fn tail_start(text: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

/// Length of `text` up to and including its last newline (a partial last line waits for more).
fn complete_prefix(text: &[u8]) -> u64 {
    text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i as u64 + 1)
}

/// How much of a file to parse now: rotated files whole, the live file's complete lines only.
fn complete_len(text: &[u8], path: &Path) -> usize {
    if path.ends_with(EXEC_LOG) {
        usize::try_from(complete_prefix(text)).unwrap_or(text.len())
    } else {
        text.len()
    }
}

fn follow(
    dir: &SandboxDir,
    live: &Path,
    mut offset: u64,
    filter: LogFilter,
    out: &mut impl Write,
) -> Result<(), RuntimeError> {
    loop {
        let still_live =
            matches!(state::read(dir.path())?.status, Status::Running | Status::Draining);
        let mut fresh = Vec::new();
        if let Ok(mut file) = std::fs::File::open(live) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0;
            }
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = file.read_to_end(&mut fresh);
            }
        }
        let take = complete_prefix(&fresh);
        offset += take;
        let text = String::from_utf8_lossy(&fresh[..usize::try_from(take).unwrap_or(0)]);
        for chunk in chunks(&text, filter) {
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
    fn tail_counts_output_lines_not_records() {
        assert_eq!(tail_start(b"one\ntwo\nthree\n", 1), 8);
        assert_eq!(tail_start(b"one\ntwo\nthree", 2), 4);
        assert_eq!(tail_start(b"one\n", 5), 0);
        assert_eq!(tail_start(b"one\n", 0), 4);
    }

    #[test]
    fn partial_last_line_is_not_complete() {
        assert_eq!(complete_prefix(b"a\nb"), 2);
        assert_eq!(complete_prefix(b"ab"), 0);
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
}
