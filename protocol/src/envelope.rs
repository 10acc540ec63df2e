//! The CBOR envelope `{v, t, p}` that is the body of every non-bulk frame (PROTOCOL.md §2).
//!
//! ```text
//!  a3                      map(3), keys in this order when we encode
//!    61 76  <uint v>       "v": generation (0..=255)
//!    61 74  <text t>       "t": wire name
//!    61 70  <bytes p>      "p": the payload's own CBOR, wrapped as a byte string
//! ```
//!
//! Decoding is as lenient as the reference: keys in any order, unknown keys skipped, tags
//! skipped, indefinite-length maps and strings, `p` as an array of small integers. It rejects a
//! missing or repeated `v`/`t`/`p`, `v > 255`, trailing bytes after the map and nesting deeper
//! than [`crate::limits::MAX_CBOR_NESTING`].

use std::borrow::Cow;

use crate::cbor::{self, CborError, MAJOR_BYTES, MAJOR_TEXT, MAJOR_UINT, Reader};

/// Why an envelope could not be decoded (`core.error` kind `malformed_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not one well-formed CBOR item, or an envelope field has the wrong type.
    #[error("malformed envelope: {0}")]
    Cbor(#[from] CborError),
    /// A required key is missing.
    #[error("envelope has no `{0}` key")]
    MissingKey(&'static str),
    /// A key appears twice.
    #[error("envelope has more than one `{0}` key")]
    DuplicateKey(&'static str),
    /// `v` does not fit a u8.
    #[error("envelope generation {0} is above 255")]
    GenerationOutOfRange(u64),
}

/// A decoded envelope, borrowing from the frame body where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Generation the sender wrote.
    pub v: u8,
    /// Wire name of the message type.
    pub t: Cow<'a, str>,
    /// The payload's CBOR bytes.
    pub p: Cow<'a, [u8]>,
}

impl<'a> Envelope<'a> {
    /// Decodes a frame body.
    pub fn decode(body: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
        cbor::check_exact(body)?;
        let mut reader = Reader::new(body);
        let len = reader.map_head()?;
        let (mut v, mut t, mut p) = (None, None, None);
        let mut index = 0u64;
        loop {
            match len {
                Some(n) if index == n => break,
                None if reader.at_break()? => break,
                _ => {}
            }
            index += 1;
            if !reader.next_is_text()? {
                // Non-text keys are not envelope fields: skip the entry.
                reader.skip(1)?;
                reader.skip(1)?;
                continue;
            }
            let key = reader.text()?;
            match &*key {
                "v" => {
                    let value = reader.uint()?;
                    let value = u8::try_from(value)
                        .map_err(|_| EnvelopeError::GenerationOutOfRange(value))?;
                    set_once(&mut v, value, "v")?;
                }
                "t" => set_once(&mut t, reader.text()?, "t")?,
                "p" => set_once(&mut p, reader.bytes_lenient()?, "p")?,
                _ => reader.skip(1)?,
            }
        }
        Ok(Envelope {
            v: v.ok_or(EnvelopeError::MissingKey("v"))?,
            t: t.ok_or(EnvelopeError::MissingKey("t"))?,
            p: p.ok_or(EnvelopeError::MissingKey("p"))?,
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), EnvelopeError> {
    if slot.is_some() {
        return Err(EnvelopeError::DuplicateKey(key));
    }
    *slot = Some(value);
    Ok(())
}

/// Bytes the envelope adds around a payload of `payload_len` bytes for type name `t`.
pub(crate) const fn overhead(v: u8, t: &str, payload_len: usize) -> usize {
    1 + 2
        + cbor::head_len(v as u64)
        + 2
        + cbor::head_len(t.len() as u64)
        + t.len()
        + 2
        + cbor::head_len(payload_len as u64)
}

/// Appends the envelope prefix, up to and including the head of the `p` byte string. The caller
/// appends exactly `payload_len` payload bytes next.
pub(crate) fn write_prefix(out: &mut Vec<u8>, v: u8, t: &str, payload_len: usize) {
    out.extend_from_slice(&[0xa3, 0x61, b'v']);
    cbor::write_head(out, MAJOR_UINT, u64::from(v));
    out.extend_from_slice(&[0x61, b't']);
    cbor::write_head(out, MAJOR_TEXT, t.len() as u64);
    out.extend_from_slice(t.as_bytes());
    out.extend_from_slice(&[0x61, b'p']);
    cbor::write_head(out, MAJOR_BYTES, payload_len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: u8, t: &str, p: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_prefix(&mut out, v, t, p.len());
        out.extend_from_slice(p);
        assert_eq!(out.len(), overhead(v, t, p.len()) + p.len());
        out
    }

    #[test]
    fn encodes_ping_envelope_like_the_reference() {
        let hex = "a361760a617469636f72652e70696e67617041a0";
        let expected: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(encode(10, "core.ping", &[0xa0]), expected);
    }

    #[test]
    fn decodes_keys_in_any_order_with_unknown_keys() {
        // {"p": h'a0', "x": [1], "t": "core.ping", "v": 10}
        let mut body = vec![0xa4, 0x61, b'p', 0x41, 0xa0, 0x61, b'x', 0x81, 0x01, 0x61, b't', 0x69];
        body.extend_from_slice(b"core.ping");
        body.extend_from_slice(&[0x61, b'v', 0x0a]);
        let env = Envelope::decode(&body).unwrap();
        assert_eq!((env.v, &*env.t, &*env.p), (10, "core.ping", &[0xa0][..]));
    }

    #[test]
    fn decodes_indefinite_map_tags_and_array_payload() {
        // {_ "v": 6(10), "t": (_ "core.", "ping"), "p": [160] }
        let mut body = vec![0xbf, 0x61, b'v', 0xc6, 0x0a, 0x61, b't', 0x7f, 0x65];
        body.extend_from_slice(b"core.");
        body.push(0x64);
        body.extend_from_slice(b"ping");
        body.extend_from_slice(&[0xff, 0x61, b'p', 0x81, 0x18, 0xa0, 0xff]);
        let env = Envelope::decode(&body).unwrap();
        assert_eq!((env.v, &*env.t, &*env.p), (10, "core.ping", &[0xa0][..]));
    }

    #[test]
    fn rejects_missing_duplicate_and_out_of_range_fields() {
        let missing_p = [0xa2, 0x61, b'v', 0x0a, 0x61, b't', 0x60];
        assert_eq!(Envelope::decode(&missing_p), Err(EnvelopeError::MissingKey("p")));
        let duplicate_v = [0xa3, 0x61, b'v', 0x0a, 0x61, b'v', 0x0a, 0x61, b't', 0x60];
        assert_eq!(Envelope::decode(&duplicate_v), Err(EnvelopeError::DuplicateKey("v")));
        let big_v = [0xa3, 0x61, b'v', 0x19, 0x01, 0x00, 0x61, b't', 0x60, 0x61, b'p', 0x40];
        assert_eq!(Envelope::decode(&big_v), Err(EnvelopeError::GenerationOutOfRange(256)));
    }

    #[test]
    fn rejects_non_map_text_payload_and_trailing_bytes() {
        assert!(matches!(Envelope::decode(&[0x80]), Err(EnvelopeError::Cbor(_))));
        let text_p = [0xa3, 0x61, b'v', 0x0a, 0x61, b't', 0x60, 0x61, b'p', 0x60];
        assert!(matches!(Envelope::decode(&text_p), Err(EnvelopeError::Cbor(_))));
        let trailing = [0xa3, 0x61, b'v', 0x0a, 0x61, b't', 0x60, 0x61, b'p', 0x40, 0x00];
        assert!(matches!(
            Envelope::decode(&trailing),
            Err(EnvelopeError::Cbor(CborError::TrailingBytes { extra: 1 }))
        ));
    }

    #[test]
    fn rejects_empty_body() {
        assert!(matches!(Envelope::decode(&[]), Err(EnvelopeError::Cbor(_))));
    }
}
