//! The readable side of a run: one line per step sent and per reply received, kept to
//! [`FUZZ_MAX_TRANSCRIPT_LINES`] lines (the count of lines dropped is kept). Written next to each
//! reproducer as `.txt`, and printed by `replay`.

use std::fmt;

use super::input::{Body, FrameSpec, Step};
use crate::limits::FUZZ_MAX_TRANSCRIPT_LINES;

/// Most payload bytes shown in hex on a step line.
const SHOWN_BYTES: usize = 48;

/// Lines of a run, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    lines: Vec<String>,
    dropped: usize,
}

impl Transcript {
    /// Adds a line, or counts it once the transcript is full.
    pub fn line(&mut self, line: String) {
        if self.lines.len() < FUZZ_MAX_TRANSCRIPT_LINES {
            self.lines.push(line);
        } else {
            self.dropped += 1;
        }
    }

    /// The lines kept.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// A one-line description of a step.
    pub fn step(step: &Step) -> String {
        match step {
            Step::Connect => "connect another client".to_owned(),
            Step::Send { conn, frame } => format!("conn {conn}: send {}", Self::frame(frame)),
            Step::Truncated { conn, frame, keep } => {
                format!("conn {conn}: send only the first {keep} bytes of {}", Self::frame(frame))
            }
            Step::BadLength { conn, len } => {
                format!("conn {conn}: send a frame header with length prefix {len}")
            }
            Step::Flood { conn, count } => format!("conn {conn}: send {count} pings in one write"),
            Step::SlowRead { conn, ms } => format!("conn {conn}: read replies slowly for {ms} ms"),
            Step::Disconnect { conn } => format!("conn {conn}: disconnect abruptly"),
            Step::Pause { ms } => format!("pause {ms} ms"),
        }
    }

    fn frame(frame: &FrameSpec) -> String {
        let flags = frame.flags.map_or("its own flags".to_owned(), |f| format!("flags {f:#04x}"));
        let body = match &frame.body {
            Body::Envelope { t, p } => format!("{t:?} p={}", hex(p)),
            Body::Raw { bytes } => format!("raw body {}", hex(bytes)),
        };
        format!("{body}, {flags}, v {}, id {:?}", frame.v, frame.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(SHOWN_BYTES).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN_BYTES {
        format!("{shown}... ({} bytes)", bytes.len())
    } else {
        format!("{shown} ({} bytes)", bytes.len())
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        if self.dropped > 0 {
            writeln!(f, "({} more lines not kept)", self.dropped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_keeps_a_bounded_number_of_lines_and_counts_the_rest() {
        let mut t = Transcript::default();
        for k in 0..FUZZ_MAX_TRANSCRIPT_LINES + 5 {
            t.line(format!("{k}"));
        }
        assert_eq!(t.lines().len(), FUZZ_MAX_TRANSCRIPT_LINES);
        assert!(t.to_string().ends_with("(5 more lines not kept)\n"));
    }

    #[test]
    fn long_payloads_are_shown_cut_with_their_length() {
        assert_eq!(hex(&[0xa0]), "a0 (1 bytes)");
        assert!(hex(&[0; 100]).ends_with("... (100 bytes)"));
    }
}
