//! `moat-conformance vectors [FILE]`: every record of a vector file (ours by default, or one an
//! SDK author's encoder produced in the same text format) must decode and re-encode byte for byte.

use moat_protocol::vectors::{self, Mismatch, ParseError};

/// The reference vectors shipped with the suite (produced by microsandbox-protocol 0.7.13).
pub const REFERENCE_VECTORS: &str = include_str!("../vectors/reference-0.7.13.txt");

/// The outcome of checking a vector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records that passed.
    pub passed: usize,
    /// Records that failed, with why.
    pub failed: Vec<Mismatch>,
}

/// Parses and checks every record of `text`.
pub fn check_text(text: &str) -> Result<Summary, ParseError> {
    let records = vectors::parse(text)?;
    let mut summary = Summary { passed: 0, failed: Vec::new() };
    for record in &records {
        match vectors::check(record) {
            Ok(_) => summary.passed += 1,
            Err(mismatch) => summary.failed.push(mismatch),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_reference_vectors_all_pass() {
        let summary = check_text(REFERENCE_VECTORS).unwrap();
        assert_eq!(summary.failed, Vec::new());
        assert_eq!(summary.passed, 74);
    }

    #[test]
    fn a_changed_byte_is_reported_as_a_mismatch() {
        // Flip the ping frame's id from 1 to 2 without changing its declared header.
        let text = "### ping\n type=core.ping id=1 flags=0 payload_len=1 frame_len=29\n payload: a0\n frame:   000000190000000200a361760a617469636f72652e70696e67617041a0\n";
        let summary = check_text(text).unwrap();
        assert_eq!(summary.passed, 0);
        assert_eq!(summary.failed.len(), 1);
        assert!(summary.failed[0].reason.contains("header"), "{}", summary.failed[0].reason);
    }

    #[test]
    fn malformed_hex_is_a_parse_error_with_its_line() {
        let err = check_text("### x\n frame: 0g\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
