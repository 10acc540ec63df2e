//! `vector_text`: the golden-vector reader and checker return instead of panicking on any text,
//! as `moat-conformance vectors` must on a file an SDK author hands it.
//!
//! ```text
//!  input: any bytes, read as a vector file (invalid UTF-8 replaced by U+FFFD)
//! ```
//!
//! Whatever [`vectors::parse`] accepts is passed record by record to [`vectors::check`]; a parse
//! error must point at a line of the text.

use moat_protocol::vectors::{self, Checked};

/// The target body.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match vectors::parse(&text) {
        Ok(records) => {
            for record in &records {
                match vectors::check(record) {
                    Ok(Checked::Frame(_) | Checked::Binding(_) | Checked::Constant) => {}
                    Err(mismatch) => assert!(!mismatch.to_string().is_empty()),
                }
            }
        }
        Err(err) => {
            let lines = text.lines().count();
            assert!((1..=lines).contains(&err.line), "error on line {} of {lines}", err.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_record_checks() {
        run(b"### ping\n frame: 000000190000000100a361760a617469636f72652e70696e67617041a0\n");
    }

    #[test]
    fn odd_hex_is_a_parse_error_on_its_line() {
        run(b"# x\n### ping\n frame: 0\n");
        assert_eq!(vectors::parse("# x\n### ping\n frame: 0\n").unwrap_err().line, 3);
    }
}
