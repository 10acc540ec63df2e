//! The `exec.log` JSON Lines record (PROTOCOL.md §13.10): one object per output chunk or
//! lifecycle marker, keys in the order `t, s, d, id, e`.
//!
//! ```text
//! {"t":"2026-04-30T20:32:59.688Z","s":"stdout","d":"hello\n","id":7}
//! ```
//!
//! This module owns the record's shape and its text form, and the pure half of reading the file
//! set back ([`complete_prefix`], [`record_chunks`], [`tail_start`], [`FollowCursor`],
//! [`parse_timestamp`]). Writing and rotating belong to the relay; the file I/O to the
//! runtime's `api::logs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// An exec's stdout (pipe mode).
    Stdout,
    /// An exec's stderr.
    Stderr,
    /// A PTY exec's merged output.
    Output,
    /// A lifecycle marker.
    System,
}

/// One `exec.log` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLogRecord {
    /// Capture time, RFC 3339 UTC with milliseconds and `Z`.
    pub t: String,
    /// Source.
    pub s: LogSource,
    /// The chunk as text (or its base64 when `e` is `"b64"`).
    pub d: String,
    /// Relay-assigned session number; absent for `system` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Encoding marker; readers treat `"b64"` as base64 data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error)]
pub enum ExecLogError {
    /// Not a JSON object of the record's shape.
    #[error("exec.log line is not a record: {0}")]
    Json(#[from] serde_json::Error),
    /// `e` is `"b64"` but `d` is not base64.
    #[error("exec.log line marked b64 holds invalid base64")]
    Base64,
}

impl ExecLogRecord {
    /// A record for an exec output chunk: `d` is the chunk as a JSON string when it is valid
    /// UTF-8 that escapes to at most twice its size, and its base64 with `e: "b64"` otherwise
    /// ([`prefers_base64`]). Both are lossless.
    pub fn output(at: SystemTime, source: LogSource, session: u64, chunk: &[u8]) -> ExecLogRecord {
        let base64 = prefers_base64(chunk);
        ExecLogRecord {
            t: format_timestamp(at),
            s: source,
            d: if base64 {
                BASE64.encode(chunk)
            } else {
                String::from_utf8_lossy(chunk).into_owned()
            },
            id: Some(session),
            e: base64.then(|| BASE64_MARKER.to_owned()),
        }
    }

    /// A `system` lifecycle marker such as `--- sandbox started ---\n`.
    pub fn system(at: SystemTime, text: &str) -> ExecLogRecord {
        ExecLogRecord {
            t: format_timestamp(at),
            s: LogSource::System,
            d: text.to_owned(),
            id: None,
            e: None,
        }
    }

    /// Appends the line of [`ExecLogRecord::output`]`(at, source, session, chunk)` to `out`,
    /// byte for byte what its [`ExecLogRecord::to_line`] gives, without building the record: no
    /// copy of the chunk, no intermediate strings. What the relay's `exec.log` writer runs
    /// for every output chunk.
    pub fn write_output_line(
        out: &mut Vec<u8>,
        at: SystemTime,
        source: LogSource,
        session: u64,
        chunk: &[u8],
    ) {
        out.reserve(chunk.len() + 80);
        out.extend_from_slice(b"{\"t\":\"");
        out.extend_from_slice(format_timestamp(at).as_bytes());
        out.extend_from_slice(b"\",\"s\":\"");
        out.extend_from_slice(match source {
            LogSource::Stdout => b"stdout".as_slice(),
            LogSource::Stderr => b"stderr",
            LogSource::Output => b"output",
            LogSource::System => b"system",
        });
        out.extend_from_slice(b"\",\"d\":\"");
        let base64 = prefers_base64(chunk);
        if base64 {
            let start = out.len();
            out.resize(start + chunk.len().div_ceil(3) * 4, 0);
            // The buffer was sized to the encoded length above, so this cannot fail.
            let written = BASE64.encode_slice(chunk, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
        } else {
            // `prefers_base64` said the chunk is valid UTF-8.
            escape_json_into(out, chunk);
        }
        out.extend_from_slice(b"\",\"id\":");
        out.extend_from_slice(session.to_string().as_bytes());
        if base64 {
            out.extend_from_slice(b",\"e\":\"b64\"");
        }
        out.extend_from_slice(b"}\n");
    }

    /// The line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses one line (a trailing newline is allowed).
    pub fn from_line(line: &str) -> Result<ExecLogRecord, ExecLogError> {
        Ok(serde_json::from_str(line.trim_end_matches(['\n', '\r']))?)
    }

    /// The chunk's bytes: `d` itself, or `d` base64-decoded when `e` is `"b64"`.
    pub fn data(&self) -> Result<Vec<u8>, ExecLogError> {
        match self.e.as_deref() {
            Some("b64") => base64_decode(&self.d).ok_or(ExecLogError::Base64),
            _ => Ok(self.d.clone().into_bytes()),
        }
    }
}

/// `2026-04-30T20:32:59.688Z`: RFC 3339, UTC, millisecond precision. Times before the epoch are
/// written as the epoch.
pub fn format_timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The `e` value that marks `d` as base64.
pub const BASE64_MARKER: &str = "b64";

/// Standard base64 with padding, as `e: "b64"` lines carry it.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Whether an output chunk is logged as base64 (`e: "b64"`): when it is not valid UTF-8 (a
/// lossy `d` would replace bytes with U+FFFD, and a chunk can end inside a character), or when
/// its JSON text would be more than twice its size. Base64 is 4/3 of it: text stays readable in
/// the file (short lines, a terminal's colour codes and `\r\n` stay under twice), while output
/// full of control bytes (a `\0` escapes to the six bytes `\u0000`) costs a third more instead
/// of up to six times as much to format and to write.
pub fn prefers_base64(chunk: &[u8]) -> bool {
    // What escaping adds (as `escape_json_into` escapes), counted a block at a time so that a
    // chunk of control bytes is decided on its first block, without a pass over the rest.
    const BLOCK: usize = 1024;
    let mut added = 0usize;
    for block in chunk.chunks(BLOCK) {
        added += block.iter().map(|&b| usize::from(ESCAPE_ADDS[usize::from(b)])).sum::<usize>();
        // (len + added) / len > 2
        if added > chunk.len() {
            return true;
        }
    }
    std::str::from_utf8(chunk).is_err()
}

/// The bytes JSON escaping adds for each byte value: 1 for `"`, `\\` and the controls with a
/// short escape (`\b \t \n \f \r`), 5 for the other controls (`\u00XX`), 0 for the rest.
const ESCAPE_ADDS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = 5;
        b += 1;
    }
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table[0x08] = 1;
    table[b'\t' as usize] = 1;
    table[b'\n' as usize] = 1;
    table[0x0c] = 1;
    table[b'\r' as usize] = 1;
    table
};

/// Appends valid UTF-8 `text` as the inside of a JSON string, escaped as `serde_json` escapes
/// it: `"` and `\`, then `\b \t \n \f \r`, the other controls below 0x20 as `\u00XX` (lower-case
/// hex), everything else as is. Runs of plain bytes are copied whole.
fn escape_json_into(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        start = i + 1;
        if short.is_empty() {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&text[start..]);
}

/// Parses an RFC 3339 time: `2026-04-30T20:32:59.688Z`, or with an offset such as `+02:00`
/// instead of `Z` (`t` or a space for `T`, any number of fraction digits, kept to the
/// nanosecond). `None` for anything else, and for times before the epoch.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<u64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
    };
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let separators_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !separators_ok
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        nanos *= 10u64.pow(9u32.saturating_sub((at - start) as u32));
    }
    let offset_secs: i64 = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && b[at + 3] == b':' => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            let secs = i64::try_from(h * 3600 + m * 60).ok()?;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day)?;
    let local = i64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    let utc = u64::try_from(local - offset_secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(utc) + Duration::from_nanos(nanos))
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's days-from-civil);
/// `None` before the epoch.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = year / 400;
    let yoe = year % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — Howard Hinnant's
/// days-to-civil algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Length of `text` up to and including its last `\n`: the complete lines. A partial last line
/// (the writer is between two writes) waits for the rest.
pub fn complete_prefix(text: &[u8]) -> usize {
    text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// The data of each record among the lines of `text` whose source `select` keeps, in order.
/// Lines that are not records are skipped; invalid UTF-8 is read as U+FFFD.
pub fn record_chunks(text: &[u8], select: impl Fn(LogSource) -> bool) -> Vec<Vec<u8>> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| ExecLogRecord::from_line(&String::from_utf8_lossy(line)).ok())
        .filter(|record| select(record.s))
        .filter_map(|record| record.data().ok())
        .collect()
}

/// Where the last `lines` lines of `text` start (a final line without `\n` counts as one):
/// `moat logs --tail N`.
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

/// One file of the `exec.log` set as a reader sees it now: which file it is (the file system's
/// identity, such as the inode number, which survives a rename) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFile {
    /// Identity that stays with the file across rotation renames.
    pub identity: u64,
    /// Bytes in it now.
    pub len: u64,
}

/// One read a [`FollowCursor`] asks for: file `file` (an index into the list given to
/// [`FollowCursor::plan`]) from byte `from` to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRead {
    /// Index into the files, oldest first.
    pub file: usize,
    /// First byte to read.
    pub from: u64,
    /// Whether this is the live file: only its complete lines count, the rest is read again
    /// next time ([`FollowCursor::advance`]). Rotated files are read whole.
    pub live: bool,
}

/// Where `moat logs` stands in the rotating `exec.log` set: which file it read last and how far
/// into it its complete lines go.
///
/// ```text
///  files (oldest first):  exec.log.4  .3  .2  .1  exec.log
///  cursor in exec.log, not rotated:       read exec.log from the cursor
///  cursor's file renamed to .k:           read .k from the cursor, every newer .j whole, then
///                                         exec.log from 0
///  cursor's file gone (or a new cursor):  read every file from 0
///  cursor's file shorter (truncated):     read it from 0
/// ```
///
/// Each record is read once and whole, as long as the file holding unread records has not been
/// rotated out of the set between two reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowCursor {
    /// The live file last read, and the end of its complete lines.
    at: Option<(u64, u64)>,
}

impl FollowCursor {
    /// A cursor that has read nothing: its first plan reads every file.
    pub fn new() -> FollowCursor {
        FollowCursor::default()
    }

    /// The reads to make, in order, given the files present now, oldest first and the live
    /// `exec.log` last. Empty when there are no files.
    pub fn plan(&self, files: &[LogFile]) -> Vec<LogRead> {
        let Some(live) = files.len().checked_sub(1) else { return Vec::new() };
        let (first, from) = match self.at {
            Some((identity, offset)) => match files.iter().rposition(|f| f.identity == identity) {
                Some(i) if files[i].len >= offset => (i, offset),
                Some(i) => (i, 0),
                None => (0, 0),
            },
            None => (0, 0),
        };
        (first..=live)
            .map(|file| LogRead {
                file,
                from: if file == first { from } else { 0 },
                live: file == live,
            })
            .collect()
    }

    /// A cursor that has read the live file `identity` up to byte `offset` (a position taken
    /// from [`FollowCursor::position`] earlier, or from where a reader stopped): its plan
    /// resumes there, wherever rotation has moved that file since.
    pub fn at(identity: u64, offset: u64) -> FollowCursor {
        FollowCursor { at: Some((identity, offset)) }
    }

    /// `bytes` were read from the live file `live` starting at `from`: returns their complete
    /// lines and moves the cursor past them.
    pub fn advance<'a>(&mut self, live: LogFile, from: u64, bytes: &'a [u8]) -> &'a [u8] {
        let take = complete_prefix(bytes);
        self.at = Some((live.identity, from + take as u64));
        &bytes[..take]
    }

    /// The live file the cursor is in and the offset of its next unread line.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.at
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn formats_the_reference_timestamp() {
        // 2026-04-30T20:32:59.688Z
        assert_eq!(format_timestamp(at(1_777_581_179_688)), "2026-04-30T20:32:59.688Z");
        assert_eq!(format_timestamp(at(0)), "1970-01-01T00:00:00.000Z");
        // A leap day.
        assert_eq!(format_timestamp(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn output_record_has_reference_key_order() {
        let record = ExecLogRecord::output(at(1_777_581_179_688), LogSource::Stdout, 7, b"hello\n");
        assert_eq!(
            record.to_line(),
            "{\"t\":\"2026-04-30T20:32:59.688Z\",\"s\":\"stdout\",\"d\":\"hello\\n\",\"id\":7}\n"
        );
    }

    #[test]
    fn the_fast_output_line_is_the_records_line() {
        let mut every_byte: Vec<u8> = (0..=255u8).collect();
        every_byte.extend_from_slice("é€😀\u{7f}".as_bytes());
        let chunks: [&[u8]; 8] = [
            b"",
            b"hello\n",
            &[0; 9],
            b"q\"uote\\ back\x08\x0c\r\t\x01\x1f\x7f",
            &[b'a', 0xff, b'b', 0xe2, 0x82, b'c', 0xf0, 0x9f, 0x98],
            "naïve ✓\u{2028}".as_bytes(),
            &[0xed, 0xa0, 0x80, 0xc0, 0xaf],
            &every_byte,
        ];
        for (i, chunk) in chunks.iter().enumerate() {
            for source in [LogSource::Stdout, LogSource::Stderr, LogSource::Output] {
                let when = at(1_777_581_179_688 + i as u64);
                let mut fast = b"kept ".to_vec();
                ExecLogRecord::write_output_line(&mut fast, when, source, i as u64 * 1000, chunk);
                let slow = ExecLogRecord::output(when, source, i as u64 * 1000, chunk).to_line();
                assert_eq!(String::from_utf8(fast).unwrap(), format!("kept {slow}"), "chunk {i}");
            }
        }
    }

    #[test]
    fn system_record_omits_id() {
        let line = ExecLogRecord::system(at(0), "--- sandbox started ---\n").to_line();
        assert_eq!(
            line,
            "{\"t\":\"1970-01-01T00:00:00.000Z\",\"s\":\"system\",\"d\":\"--- sandbox started ---\\n\"}\n"
        );
        assert_eq!(ExecLogRecord::from_line(&line).unwrap().id, None);
    }

    #[test]
    fn invalid_utf8_is_logged_as_base64() {
        let record = ExecLogRecord::output(at(0), LogSource::Stderr, 1, &[b'a', 0xff, b'b']);
        assert_eq!((record.d.as_str(), record.e.as_deref()), ("Yf9i", Some("b64")));
        assert_eq!(record.data().unwrap(), [b'a', 0xff, b'b']);
        // A chunk that ends inside a character, as a 256 KiB cut through text can.
        let cut = &"é".as_bytes()[..1];
        assert_eq!(ExecLogRecord::output(at(0), LogSource::Stdout, 1, cut).data().unwrap(), cut);
    }

    #[test]
    fn text_stays_text_until_escaping_would_more_than_double_it() {
        let line = |chunk: &[u8]| ExecLogRecord::output(at(0), LogSource::Stdout, 1, chunk);
        let texts: [&[u8]; 7] = [
            b"hello\n",
            b"\n\n",
            b"",
            "naïve ✓\n".as_bytes(),
            b"\x01abcde",
            b"\"a\"",
            b"\x1b[1mtty\x1b[0m\r\n",
        ];
        for text in texts {
            let record = line(text);
            assert_eq!((record.d.as_bytes(), record.e), (text, None), "{text:?}");
        }
        // A zero escapes to `\u0000` (six times), `\x01abc` to 9 bytes of 4, `\x1b\x1b` to 12 of 2
        // (`\x01abcde` above is 11 of 6; text of `"`, `\` and `\n` alone is at most twice).
        for binary in [&[0; 1024][..], b"\x01abc", b"\x1b\x1b"] {
            let record = line(binary);
            assert_eq!(record.e.as_deref(), Some("b64"), "{binary:?}");
            assert_eq!(record.data().unwrap(), binary);
        }
        assert_eq!(
            line(&[0; 4]).to_line(),
            "{\"t\":\"1970-01-01T00:00:00.000Z\",\"s\":\"stdout\",\"d\":\"AAAAAA==\",\"id\":1,\"e\":\"b64\"}\n"
        );
    }

    #[test]
    fn the_escape_table_counts_what_escaping_adds() {
        for b in 0..=0x7fu8 {
            let mut out = Vec::new();
            escape_json_into(&mut out, &[b]);
            assert_eq!(out.len() - 1, usize::from(ESCAPE_ADDS[usize::from(b)]), "byte {b:#x}");
        }
        assert!(ESCAPE_ADDS[0x80..].iter().all(|&added| added == 0));
    }

    proptest::proptest! {
        #[test]
        fn every_chunk_round_trips_through_its_line(chunk in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut line = Vec::new();
            ExecLogRecord::write_output_line(&mut line, at(5), LogSource::Stdout, 3, &chunk);
            let record = ExecLogRecord::from_line(std::str::from_utf8(&line).unwrap()).unwrap();
            proptest::prop_assert_eq!(record.data().unwrap(), chunk);
        }
    }

    #[test]
    fn round_trips_and_decodes_base64() {
        let line = "{\"t\":\"x\",\"s\":\"output\",\"d\":\"aGk=\",\"id\":3,\"e\":\"b64\"}";
        let record = ExecLogRecord::from_line(line).unwrap();
        assert_eq!(record.data().unwrap(), b"hi");
        assert_eq!(record.to_line().trim_end(), line);
        let bad = ExecLogRecord { e: Some("b64".into()), d: "!!".into(), ..record };
        assert!(matches!(bad.data(), Err(ExecLogError::Base64)));
    }

    #[test]
    fn rejects_unknown_source_and_garbage() {
        assert!(ExecLogRecord::from_line("{\"t\":\"x\",\"s\":\"tty\",\"d\":\"\"}").is_err());
        assert!(ExecLogRecord::from_line("not json").is_err());
    }

    #[test]
    fn complete_prefix_stops_at_the_last_newline() {
        assert_eq!(complete_prefix(b"a\nb"), 2);
        assert_eq!(complete_prefix(b"ab"), 0);
        assert_eq!(complete_prefix(b""), 0);
        assert_eq!(complete_prefix(b"a\n\n"), 3);
    }

    #[test]
    fn record_chunks_filters_and_skips_garbage() {
        let mut text = ExecLogRecord::system(at(0), "start\n").to_line().into_bytes();
        text.extend_from_slice(b"not a record\n\xff\xfe\n");
        text.extend(ExecLogRecord::output(at(1), LogSource::Stderr, 1, b"oops").to_line().bytes());
        text.extend(ExecLogRecord::output(at(2), LogSource::Stdout, 1, b"one").to_line().bytes());
        assert_eq!(record_chunks(&text, |_| true), [&b"start\n"[..], b"oops", b"one"]);
        assert_eq!(record_chunks(&text, |s| s == LogSource::Stdout), [b"one"]);
    }

    #[test]
    fn tail_counts_output_lines() {
        assert_eq!(tail_start(b"one\ntwo\nthree\n", 1), 8);
        assert_eq!(tail_start(b"one\ntwo\nthree", 2), 4);
        assert_eq!(tail_start(b"one\n", 5), 0);
        assert_eq!(tail_start(b"one\n", 0), 4);
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for millis in [0, 951_782_400_000, 1_777_581_179_688] {
            assert_eq!(parse_timestamp(&format_timestamp(at(millis))), Some(at(millis)));
        }
        assert_eq!(parse_timestamp("2026-04-30T22:32:59.688+02:00"), Some(at(1_777_581_179_688)));
        assert_eq!(parse_timestamp("2026-04-30T20:32:59Z"), Some(at(1_777_581_179_000)));
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.000000001Z"),
            Some(UNIX_EPOCH + Duration::from_nanos(1))
        );
    }

    #[test]
    fn parse_timestamp_rejects_malformed_times() {
        for bad in [
            "",
            "2026-04-30",
            "2026-04-30T20:32:59",
            "2026-13-30T20:32:59Z",
            "2026-04-30T24:00:00Z",
            "2026-04-30T20:32:59.Z",
            "2026-04-30T20:32:59+0200",
            "1969-12-31T23:59:59Z",
            "２026-04-30T20:32:59Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cursor_at_a_position_resumes_there_after_rotation() {
        let cursor = FollowCursor::at(8, 4);
        assert_eq!(cursor.plan(&[file(8, 9), file(9, 2)]), [read(0, 4, false), read(1, 0, true)]);
    }

    fn file(identity: u64, len: u64) -> LogFile {
        LogFile { identity, len }
    }

    fn read(file: usize, from: u64, live: bool) -> LogRead {
        LogRead { file, from, live }
    }

    #[test]
    fn a_new_cursor_reads_every_file() {
        let cursor = FollowCursor::new();
        assert_eq!(cursor.plan(&[file(7, 10), file(8, 3)]), [read(0, 0, false), read(1, 0, true)]);
        assert!(cursor.plan(&[]).is_empty());
    }

    #[test]
    fn the_cursor_keeps_a_partial_line_for_next_time() {
        let mut cursor = FollowCursor::new();
        assert_eq!(cursor.advance(file(8, 5), 0, b"ab\ncd"), b"ab\n");
        assert_eq!(cursor.plan(&[file(8, 9)]), [read(0, 3, true)]);
        assert_eq!(cursor.advance(file(8, 9), 3, b"cd\nef"), b"cd\n");
        assert_eq!(cursor.position(), Some((8, 6)));
    }

    #[test]
    fn after_rotation_the_rest_of_the_old_file_is_read_first() {
        let mut cursor = FollowCursor::new();
        cursor.advance(file(8, 4), 0, b"one\n");
        // exec.log (8) became exec.log.2, another rotation made .1 (9), the live file is 10.
        let files = [file(7, 50), file(8, 9), file(9, 20), file(10, 2)];
        assert_eq!(cursor.plan(&files), [read(1, 4, false), read(2, 0, false), read(3, 0, true)]);
    }

    #[test]
    fn a_truncated_or_vanished_file_is_read_from_the_start() {
        let mut cursor = FollowCursor::new();
        cursor.advance(file(8, 10), 0, b"123456789\n");
        assert_eq!(cursor.plan(&[file(8, 4)]), [read(0, 0, true)]);
        assert_eq!(cursor.plan(&[file(5, 4), file(6, 1)]), [read(0, 0, false), read(1, 0, true)]);
    }
}
