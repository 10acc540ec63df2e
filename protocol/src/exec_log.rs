//! The `exec.log` JSON Lines record (PROTOCOL.md §13.10): one object per output chunk or
//! lifecycle marker, keys in the order `t, s, d, id, e`.
//!
//! ```text
//! {"t":"2026-04-30T20:32:59.688Z","s":"stdout","d":"hello\n","id":7}
//! ```
//!
//! This module owns the record's shape and its text form. Writing, rotating and tailing the file
//! belong to the relay and the CLI.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The chunk, lossily decoded as UTF-8 (or base64 when `e` is `"b64"`).
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
    /// A record for an exec output chunk.
    pub fn output(at: SystemTime, source: LogSource, session: u64, chunk: &[u8]) -> ExecLogRecord {
        ExecLogRecord {
            t: format_timestamp(at),
            s: source,
            d: String::from_utf8_lossy(chunk).into_owned(),
            id: Some(session),
            e: None,
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
    fn system_record_omits_id() {
        let line = ExecLogRecord::system(at(0), "--- sandbox started ---\n").to_line();
        assert_eq!(
            line,
            "{\"t\":\"1970-01-01T00:00:00.000Z\",\"s\":\"system\",\"d\":\"--- sandbox started ---\\n\"}\n"
        );
        assert_eq!(ExecLogRecord::from_line(&line).unwrap().id, None);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let record = ExecLogRecord::output(at(0), LogSource::Stderr, 1, &[b'a', 0xff, b'b']);
        assert_eq!(record.d, "a\u{fffd}b");
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
}
