//! `exec_log_reader`: `moat logs [-f] [--tail N]` reading a rotating `exec.log` set while the
//! relay writes it, through the pure rules of `moat_protocol::exec_log` ([`FollowCursor`],
//! [`record_chunks`], [`tail_start`]) over simulated files.
//!
//! ```text
//!  input: [rotate][filter][tail] [op][operands ...] ...     (a missing byte reads as 0)
//!
//!  rotate  the writer rotates before a line would take a non-empty exec.log past
//!          64 + 8 * rotate bytes (exec.log → .1 → ... → .4, the old .4 dropped)
//!  filter  % 4: all, stdout (+ tty output), stderr, system
//!  tail    --tail for the first read: 0 none, else tail - 1 lines
//!
//!  op % 4  operands              event
//!  ──────  ────────────────────  ───────────────────────────────────────────────────────────
//!   0      source, len, data     the relay writes one record (stdout/stderr/output/system)
//!   1      len, bytes            a line that is not a record (its bytes with \n removed)
//!   2      n                     the writer's buffer flushes 4 * n of its bytes: exec.log may
//!                                end inside a line
//!   3      -                     the reader reads what is new (the first read is the initial
//!                                `moat logs` print, with --tail)
//! ```
//!
//! After every read, and after a final flush and read:
//!
//! - Whole, once, in order: what the reader printed is exactly the data of every selected
//!   record whose line is complete in the files, each once, in the order written, whatever the
//!   cuts the writer's flushes and rotations made between reads. (Lines of a file rotated out of
//!   the set before the first read are not expected; after it, the reader reads before a file
//!   holding unread lines could be dropped.)
//! - `--tail N`: the first read prints the last N lines of its output.
//! - Bounds: a read never asks for bytes outside a file, and the file set stays within
//!   `EXEC_LOG_ROTATED_FILES + 1` files of at most the rotation size plus one line.

use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use moat_protocol::exec_log::{
    ExecLogRecord, FollowCursor, LogFile, LogSource, record_chunks, tail_start,
};
use moat_protocol::limits::EXEC_LOG_ROTATED_FILES;

/// Ops read from one input at most.
pub const MAX_OPS: usize = 2048;

/// The target body.
pub fn run(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut byte = move || input.next();
    let (Some(rotate), Some(filter), Some(tail)) = (byte(), byte(), byte()) else { return };
    let mut sim =
        Sim::new(64 + 8 * u64::from(rotate), filter % 4, tail.checked_sub(1).map(usize::from));
    for _ in 0..MAX_OPS {
        let Some(op) = byte() else { break };
        match op % 4 {
            0 => {
                let source = byte().unwrap_or(0);
                let len = usize::from(byte().unwrap_or(0));
                let data: Vec<u8> = (0..len).map(|_| byte().unwrap_or(0)).collect();
                sim.write_record(source, &data);
            }
            1 => {
                let len = usize::from(byte().unwrap_or(0));
                let mut line: Vec<u8> =
                    (0..len).map(|_| byte().unwrap_or(0)).filter(|b| *b != b'\n').collect();
                line.push(b'\n');
                sim.write_line(line);
            }
            2 => {
                let n = usize::from(byte().unwrap_or(0)) * 4;
                sim.flush(n);
            }
            _ => sim.read(),
        }
    }
    sim.flush(usize::MAX);
    sim.read();
}

/// One line the writer wrote.
#[derive(Debug)]
struct Line {
    /// Its length, newline included.
    len: usize,
    /// The data a reader prints for it: `None` when it is not a selected record.
    chunk: Option<Vec<u8>>,
    /// It was rotated out of the set before the first read.
    dropped: bool,
}

/// One simulated file: its identity (an inode) and the lines it holds.
#[derive(Debug, Clone)]
struct SimFile {
    identity: u64,
    /// Bytes on disk.
    bytes: Vec<u8>,
    /// The lines written to it (indexes into `Sim::lines`), complete or not.
    lines: Range<usize>,
}

struct Sim {
    rotate_bytes: u64,
    filter: u8,
    tail: Option<usize>,
    /// Rotated files, `.1` first.
    rotated: Vec<SimFile>,
    live: SimFile,
    /// Written to the live file but still in the writer's buffer.
    pending: Vec<u8>,
    /// Bytes the writer has given the live file (on disk or pending): its rotation measure.
    live_size: u64,
    next_identity: u64,
    /// Every line written.
    lines: Vec<Line>,
    cursor: FollowCursor,
    printed: Vec<Vec<u8>>,
    reads: usize,
    rotations_since_read: usize,
    longest_line: u64,
}

impl Sim {
    fn new(rotate_bytes: u64, filter: u8, tail: Option<usize>) -> Sim {
        Sim {
            rotate_bytes,
            filter,
            tail,
            rotated: Vec::new(),
            live: SimFile { identity: 1, bytes: Vec::new(), lines: 0..0 },
            pending: Vec::new(),
            live_size: 0,
            next_identity: 2,
            lines: Vec::new(),
            cursor: FollowCursor::new(),
            printed: Vec::new(),
            reads: 0,
            rotations_since_read: 0,
            longest_line: 0,
        }
    }

    fn selects(&self, source: LogSource) -> bool {
        match self.filter {
            0 => true,
            1 => matches!(source, LogSource::Stdout | LogSource::Output),
            2 => source == LogSource::Stderr,
            _ => source == LogSource::System,
        }
    }

    fn write_record(&mut self, source: u8, data: &[u8]) {
        let at = UNIX_EPOCH + Duration::from_millis(1_777_581_179_688 + self.lines.len() as u64);
        let record = match source % 4 {
            0 => ExecLogRecord::output(at, LogSource::Stdout, u64::from(source), data),
            1 => ExecLogRecord::output(at, LogSource::Stderr, u64::from(source), data),
            2 => ExecLogRecord::output(at, LogSource::Output, u64::from(source), data),
            _ => ExecLogRecord::system(at, &String::from_utf8_lossy(data)),
        };
        self.write_line(record.to_line().into_bytes());
    }

    /// The relay's rule: rotate first when the line would take a non-empty file past the limit.
    fn write_line(&mut self, line: Vec<u8>) {
        let len = line.len() as u64;
        self.longest_line = self.longest_line.max(len);
        if self.live_size > 0 && self.live_size + len > self.rotate_bytes {
            self.rotate();
        }
        self.pending.extend_from_slice(&line);
        self.live_size += len;
        // What a reader must print for this line, worked out once, on the line alone.
        let chunk = ExecLogRecord::from_line(&String::from_utf8_lossy(&line))
            .ok()
            .filter(|record| self.selects(record.s))
            .and_then(|record| record.data().ok());
        self.lines.push(Line { len: line.len(), chunk, dropped: false });
        self.live.lines.end = self.lines.len();
    }

    fn flush(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.live.bytes.extend(self.pending.drain(..n));
    }

    fn rotate(&mut self) {
        if self.reads > 0 && self.rotations_since_read >= EXEC_LOG_ROTATED_FILES as usize {
            // The reader reads before the file it last read could be dropped (at one read per
            // 200 ms, 4 rotations of 10 MiB in between do not happen).
            self.read();
        }
        self.flush(usize::MAX);
        let next = self.lines.len();
        let fresh = SimFile { identity: self.next_identity, bytes: Vec::new(), lines: next..next };
        self.next_identity += 1;
        let old = std::mem::replace(&mut self.live, fresh);
        self.rotated.insert(0, old);
        if self.rotated.len() > EXEC_LOG_ROTATED_FILES as usize {
            let dropped = self.rotated.pop().expect("more files than the cap");
            if self.reads == 0 {
                // Lines dropped before the first read were never there for the reader; after
                // it, the read forced above already took them.
                for line in &mut self.lines[dropped.lines] {
                    line.dropped = true;
                }
            }
        }
        self.live_size = 0;
        self.rotations_since_read += 1;
    }

    /// Oldest first, the live file last.
    fn files(&self) -> Vec<&SimFile> {
        self.rotated.iter().rev().chain([&self.live]).collect()
    }

    fn read(&mut self) {
        let files: Vec<LogFile> = self
            .files()
            .iter()
            .map(|f| LogFile { identity: f.identity, len: f.bytes.len() as u64 })
            .collect();
        let cap = (u64::from(EXEC_LOG_ROTATED_FILES) + 1) * (self.rotate_bytes + self.longest_line);
        let total: u64 = files.iter().map(|f| f.len).sum();
        assert!(files.len() <= EXEC_LOG_ROTATED_FILES as usize + 1 && total <= cap);
        let plan = self.cursor.plan(&files);
        let mut fresh = Vec::new();
        for read in plan {
            assert!(read.file < files.len() && read.from <= files[read.file].len, "{read:?}");
            assert_eq!(read.live, read.file == files.len() - 1, "only the last file is live");
            let file = self.files()[read.file].bytes.clone();
            let bytes = &file[usize::try_from(read.from).expect("a small offset")..];
            let text = if read.live {
                self.cursor.advance(files[read.file], read.from, bytes)
            } else {
                bytes
            };
            fresh.extend(record_chunks(text, |s| self.selects(s)));
        }
        if self.reads == 0 {
            if let Some(n) = self.tail {
                check_tail(&fresh.concat(), n);
            }
        }
        self.printed.extend(fresh);
        self.reads += 1;
        self.rotations_since_read = 0;
        let expected: Vec<&Vec<u8>> = self.expected().collect();
        assert_eq!(self.printed.len(), expected.len(), "records printed after read {}", self.reads);
        let same =
            self.printed.iter().zip(&expected).all(|(printed, expected)| printed == *expected);
        assert!(same, "a record was lost, repeated, cut or reordered");
    }

    /// The data of every selected record whose line is complete on disk and was not rotated out
    /// before the first read, in order.
    fn expected(&self) -> impl Iterator<Item = &Vec<u8>> {
        let on_disk = self.live.lines.start + complete_lines(&self.live, &self.lines);
        self.lines[..on_disk]
            .iter()
            .filter(|line| !line.dropped)
            .filter_map(|line| line.chunk.as_ref())
    }
}

/// How many of `file`'s lines are wholly on disk.
fn complete_lines(file: &SimFile, lines: &[Line]) -> usize {
    let mut end = 0;
    let mut count = 0;
    for line in &lines[file.lines.clone()] {
        end += line.len;
        if end > file.bytes.len() {
            break;
        }
        count += 1;
    }
    count
}

/// `--tail n` of `text` is its last `n` lines (a final line without `\n` counts).
fn check_tail(text: &[u8], n: usize) {
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let expected = lines[lines.len().saturating_sub(n)..].concat();
    assert_eq!(&text[tail_start(text, n)..], &expected[..], "--tail {n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cut_by_flushes_and_rotations_read_once() {
        // rotate at 64 bytes, all sources, no tail; records, partial flushes, reads.
        let mut input = vec![0, 0, 0];
        for i in 0..40u8 {
            input.extend_from_slice(&[0, i, 5, b'a', b'b', b'c', b'\n', i]);
            input.extend_from_slice(&[2, i % 7]);
            if i % 3 == 0 {
                input.push(3);
            }
        }
        run(&input);
    }

    #[test]
    fn tail_of_the_first_read() {
        let mut input = vec![200, 0, 3];
        for i in 0..5u8 {
            input.extend_from_slice(&[0, 0, 2, b'0' + i, b'\n']);
        }
        input.extend_from_slice(&[2, 255, 3]);
        run(&input);
        check_tail(b"a\nb\nc", 2);
        check_tail(b"", 4);
    }

    #[test]
    fn the_check_catches_a_lost_record() {
        let mut sim = Sim::new(64, 0, None);
        sim.write_record(0, b"one");
        sim.flush(usize::MAX);
        sim.read();
        sim.write_record(0, b"two");
        sim.flush(usize::MAX);
        // A cursor that skipped a line would print too little.
        sim.cursor = {
            let mut c = FollowCursor::new();
            let live = LogFile { identity: sim.live.identity, len: sim.live.bytes.len() as u64 };
            c.advance(live, 0, &sim.live.bytes.clone());
            c
        };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.read()));
        assert!(caught.is_err());
    }
}
