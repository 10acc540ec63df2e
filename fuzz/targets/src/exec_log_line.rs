//! `exec_log_line`: `exec.log` lines read back as what was written.
//!
//! ```text
//!  input: any bytes, read as a line of text (invalid UTF-8 replaced by U+FFFD)
//! ```
//!
//! - Reader: whenever [`ExecLogRecord::from_line`] accepts the text, [`ExecLogRecord::to_line`]
//!   writes one line (a single `\n`, at the end) that reads back as an equal record, and
//!   [`ExecLogRecord::data`] returns instead of panicking.
//! - Writer: the input's bytes as an output chunk and as a system marker, stamped with a time
//!   taken from the input's first 8 bytes, make records whose lines read back as equal records;
//!   before year 10000 the timestamp has the `YYYY-MM-DDTHH:MM:SS.mmmZ` shape.

use std::time::{Duration, UNIX_EPOCH};

use moat_protocol::exec_log::{ExecLogRecord, LogSource};

/// Milliseconds from the epoch to 9999-12-31T23:59:59.999Z, the last four-digit-year time.
const LAST_FOUR_DIGIT_YEAR_MILLIS: u64 = 253_402_300_799_999;

/// Length of `2026-04-30T20:32:59.688Z`.
const TIMESTAMP_LEN: usize = 24;

/// The target body.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(record) = ExecLogRecord::from_line(&text) {
        let _ = record.data();
        check_line_round_trip(&record);
    }
    check_written_records(data, &text);
}

fn check_line_round_trip(record: &ExecLogRecord) {
    let line = record.to_line();
    assert!(line.ends_with('\n'), "{line:?} does not end its line");
    assert_eq!(line.matches('\n').count(), 1, "{line:?} is not one line");
    match ExecLogRecord::from_line(&line) {
        Ok(again) => assert_eq!(&again, record, "{line:?} reads back differently"),
        Err(err) => panic!("{record:?} writes {line:?}, which does not read back: {err}"),
    }
}

fn check_written_records(data: &[u8], text: &str) {
    let Some(millis) = data.first_chunk::<8>().map(|b| u64::from_be_bytes(*b)) else {
        return;
    };
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_millis(millis)) else {
        return;
    };
    let source = match data[0] % 3 {
        0 => LogSource::Stdout,
        1 => LogSource::Stderr,
        _ => LogSource::Output,
    };
    let output = ExecLogRecord::output(at, source, millis, data);
    let system = ExecLogRecord::system(at, text);
    for record in [output, system] {
        if millis <= LAST_FOUR_DIGIT_YEAR_MILLIS {
            check_timestamp_shape(&record.t);
        }
        check_line_round_trip(&record);
    }
}

fn check_timestamp_shape(t: &str) {
    let shape = t.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        23 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    assert!(t.len() == TIMESTAMP_LEN && shape, "timestamp {t:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_line_round_trips() {
        run(br#"{"t":"2026-04-30T20:32:59.688Z","s":"stdout","d":"hello\n","id":7}"#);
    }

    #[test]
    fn the_last_four_digit_year_keeps_the_shape() {
        run(&LAST_FOUR_DIGIT_YEAR_MILLIS.to_be_bytes());
        let at = UNIX_EPOCH + Duration::from_millis(LAST_FOUR_DIGIT_YEAR_MILLIS);
        assert_eq!(ExecLogRecord::system(at, "").t, "9999-12-31T23:59:59.999Z");
    }
}
