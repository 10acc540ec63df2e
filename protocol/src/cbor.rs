//! A small, bounded CBOR (RFC 8949) reader and writer.
//!
//! This module owns three jobs and nothing else:
//! - well-formedness checking of untrusted bytes before any typed decoder sees them: every
//!   declared length is checked against the bytes actually present, nesting is capped at
//!   [`MAX_CBOR_NESTING`], reserved encodings are rejected. A typed decoder that runs after
//!   [`check_item`] can therefore never be led to allocate from a length the input does not back;
//! - the lenient reads the envelope needs (tags skipped, indefinite-length strings joined);
//! - the few shortest-form heads the envelope encoder writes.
//!
//! Payload structs are (de)serialized by `ciborium` in [`crate::message`], after this check.

use std::borrow::Cow;

use crate::limits::MAX_CBOR_NESTING;

/// Why bytes are not a well-formed CBOR item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ended inside an item.
    #[error("CBOR input ends at byte {at} inside an item")]
    UnexpectedEnd {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// Additional-information values 28–30 are reserved.
    #[error("reserved CBOR additional information {info} at byte {at}")]
    ReservedInfo {
        /// The additional-information value.
        info: u8,
        /// Offset of the head.
        at: usize,
    },
    /// Indefinite length on a major type that has none (integers, tags).
    #[error("indefinite length not allowed for CBOR major type {major} at byte {at}")]
    BadIndefinite {
        /// Major type.
        major: u8,
        /// Offset of the head.
        at: usize,
    },
    /// A break (0xff) outside an indefinite-length item.
    #[error("unexpected CBOR break at byte {at}")]
    UnexpectedBreak {
        /// Offset of the break.
        at: usize,
    },
    /// A chunk of an indefinite string is not a definite string of the same major type.
    #[error("invalid chunk in indefinite-length CBOR string at byte {at}")]
    BadChunk {
        /// Offset of the chunk.
        at: usize,
    },
    /// A one-byte simple value below 32 (not well-formed).
    #[error("invalid CBOR simple value at byte {at}")]
    BadSimple {
        /// Offset of the head.
        at: usize,
    },
    /// Nesting deeper than [`MAX_CBOR_NESTING`].
    #[error("CBOR nesting deeper than {MAX_CBOR_NESTING} levels")]
    TooDeep,
    /// Bytes follow the single item that was expected.
    #[error("{extra} trailing bytes after the CBOR item")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A text string is not UTF-8.
    #[error("CBOR text string at byte {at} is not valid UTF-8")]
    BadUtf8 {
        /// Offset of the string.
        at: usize,
    },
    /// An item of another type where a specific one was required.
    #[error("expected a CBOR {expected} at byte {at}")]
    UnexpectedType {
        /// What was required.
        expected: &'static str,
        /// Offset of the item.
        at: usize,
    },
}

/// A decoded item head: major type plus argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// Major 0.
    Uint(u64),
    /// Major 1 (the value is `-1 - n`).
    Nint(u64),
    /// Major 2; `None` = indefinite.
    Bytes(Option<u64>),
    /// Major 3; `None` = indefinite.
    Text(Option<u64>),
    /// Major 4; `None` = indefinite.
    Array(Option<u64>),
    /// Major 5; `None` = indefinite.
    Map(Option<u64>),
    /// Major 6.
    Tag,
    /// Major 7 simple values and floats (skipped as a unit).
    Simple,
    /// 0xff.
    Break,
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::UnexpectedEnd { at: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    /// Takes `n` bytes, checking `n` against what is present before touching anything.
    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let n = usize::try_from(n).map_err(|_| CborError::UnexpectedEnd { at: self.pos })?;
        if n > self.remaining() {
            return Err(CborError::UnexpectedEnd { at: self.buf.len() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes exactly `N` bytes as an array.
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let Some(bytes) = self.buf[self.pos..].first_chunk::<N>() else {
            return Err(CborError::UnexpectedEnd { at: self.buf.len() });
        };
        self.pos += N;
        Ok(*bytes)
    }

    fn argument(&mut self, info: u8, at: usize) -> Result<Option<u64>, CborError> {
        Ok(Some(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.take_array()?)),
            26 => u64::from(u32::from_be_bytes(self.take_array()?)),
            27 => u64::from_be_bytes(self.take_array()?),
            28..=30 => return Err(CborError::ReservedInfo { info, at }),
            _ => return Ok(None),
        }))
    }

    /// Reads one head.
    pub(crate) fn head(&mut self) -> Result<Head, CborError> {
        let at = self.pos;
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if major == 7 {
            return match info {
                0..=23 => Ok(Head::Simple),
                24 => match self.byte()? {
                    0..=31 => Err(CborError::BadSimple { at }),
                    _ => Ok(Head::Simple),
                },
                25 => self.take(2).map(|_| Head::Simple),
                26 => self.take(4).map(|_| Head::Simple),
                27 => self.take(8).map(|_| Head::Simple),
                28..=30 => Err(CborError::ReservedInfo { info, at }),
                _ => Ok(Head::Break),
            };
        }
        let arg = self.argument(info, at)?;
        match (major, arg) {
            (0, Some(n)) => Ok(Head::Uint(n)),
            (1, Some(n)) => Ok(Head::Nint(n)),
            (2, len) => Ok(Head::Bytes(len)),
            (3, len) => Ok(Head::Text(len)),
            (4, len) => Ok(Head::Array(len)),
            (5, len) => Ok(Head::Map(len)),
            (6, Some(_)) => Ok(Head::Tag),
            (major, _) => Err(CborError::BadIndefinite { major, at }),
        }
    }

    /// Reads a head, skipping any tags in front of it (each tag counts one nesting level).
    fn head_untagged(&mut self, depth: usize) -> Result<Head, CborError> {
        let mut depth = depth;
        loop {
            match self.head()? {
                Head::Tag => {
                    depth += 1;
                    if depth > MAX_CBOR_NESTING {
                        return Err(CborError::TooDeep);
                    }
                }
                head => return Ok(head),
            }
        }
    }

    /// Skips one complete, well-formed item, checking it on the way.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), CborError> {
        if depth > MAX_CBOR_NESTING {
            return Err(CborError::TooDeep);
        }
        let at = self.pos;
        match self.head()? {
            Head::Uint(_) | Head::Nint(_) | Head::Simple => Ok(()),
            Head::Bytes(Some(n)) | Head::Text(Some(n)) => self.take(n).map(drop),
            Head::Bytes(None) => self.skip_chunks(2),
            Head::Text(None) => self.skip_chunks(3),
            Head::Array(Some(n)) => self.skip_items(n, 1, depth),
            Head::Map(Some(n)) => self.skip_items(n, 2, depth),
            Head::Array(None) => self.skip_until_break(1, depth),
            Head::Map(None) => self.skip_until_break(2, depth),
            Head::Tag => self.skip(depth + 1),
            Head::Break => Err(CborError::UnexpectedBreak { at }),
        }
    }

    fn skip_items(&mut self, count: u64, per_entry: u64, depth: usize) -> Result<(), CborError> {
        // Every item takes at least one byte: a count the input cannot back fails here, before
        // any loop runs.
        let needed = count.saturating_mul(per_entry);
        if needed > self.remaining() as u64 {
            return Err(CborError::UnexpectedEnd { at: self.buf.len() });
        }
        for _ in 0..needed {
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    fn skip_until_break(&mut self, per_entry: usize, depth: usize) -> Result<(), CborError> {
        loop {
            if self.peek_break()? {
                self.pos += 1;
                return Ok(());
            }
            for _ in 0..per_entry {
                self.skip(depth + 1)?;
            }
        }
    }

    fn skip_chunks(&mut self, major: u8) -> Result<(), CborError> {
        loop {
            let at = self.pos;
            match (major, self.head()?) {
                (_, Head::Break) => return Ok(()),
                (2, Head::Bytes(Some(n))) | (3, Head::Text(Some(n))) => {
                    self.take(n)?;
                }
                _ => return Err(CborError::BadChunk { at }),
            }
        }
    }

    fn peek_break(&self) -> Result<bool, CborError> {
        match self.buf.get(self.pos) {
            Some(b) => Ok(*b == 0xff),
            None => Err(CborError::UnexpectedEnd { at: self.pos }),
        }
    }

    /// Reads a byte string (definite, indefinite, or — as the reference tolerates for the
    /// envelope payload — an array of integers 0..=255). Tags in front are skipped.
    pub(crate) fn bytes_lenient(&mut self) -> Result<Cow<'a, [u8]>, CborError> {
        let at = self.pos;
        match self.head_untagged(0)? {
            Head::Bytes(Some(n)) => self.take(n).map(Cow::Borrowed),
            Head::Bytes(None) => {
                let mut out = Vec::new();
                loop {
                    let chunk_at = self.pos;
                    match self.head()? {
                        Head::Break => return Ok(Cow::Owned(out)),
                        Head::Bytes(Some(n)) => out.extend_from_slice(self.take(n)?),
                        _ => return Err(CborError::BadChunk { at: chunk_at }),
                    }
                }
            }
            Head::Array(len) => {
                let mut out = Vec::new();
                let mut index = 0u64;
                loop {
                    match len {
                        Some(n) if index == n => return Ok(Cow::Owned(out)),
                        None if self.peek_break()? => {
                            self.pos += 1;
                            return Ok(Cow::Owned(out));
                        }
                        _ => {}
                    }
                    let item_at = self.pos;
                    match self.head_untagged(1)? {
                        Head::Uint(b) if b <= 255 => out.push(b as u8),
                        _ => {
                            return Err(CborError::UnexpectedType {
                                expected: "byte",
                                at: item_at,
                            });
                        }
                    }
                    index += 1;
                }
            }
            _ => Err(CborError::UnexpectedType { expected: "byte string", at }),
        }
    }

    /// Reads a text string (definite or indefinite). Tags in front are skipped.
    pub(crate) fn text(&mut self) -> Result<Cow<'a, str>, CborError> {
        let at = self.pos;
        match self.head_untagged(0)? {
            Head::Text(Some(n)) => {
                let raw = self.take(n)?;
                std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|_| CborError::BadUtf8 { at })
            }
            Head::Text(None) => {
                let mut out = String::new();
                loop {
                    let chunk_at = self.pos;
                    match self.head()? {
                        Head::Break => return Ok(Cow::Owned(out)),
                        Head::Text(Some(n)) => {
                            let raw = self.take(n)?;
                            let s = std::str::from_utf8(raw)
                                .map_err(|_| CborError::BadUtf8 { at: chunk_at })?;
                            out.push_str(s);
                        }
                        _ => return Err(CborError::BadChunk { at: chunk_at }),
                    }
                }
            }
            _ => Err(CborError::UnexpectedType { expected: "text string", at }),
        }
    }

    /// Reads an unsigned integer. Tags in front are skipped.
    pub(crate) fn uint(&mut self) -> Result<u64, CborError> {
        let at = self.pos;
        match self.head_untagged(0)? {
            Head::Uint(n) => Ok(n),
            _ => Err(CborError::UnexpectedType { expected: "unsigned integer", at }),
        }
    }

    /// Reads a map head (tags skipped); `None` = indefinite.
    pub(crate) fn map_head(&mut self) -> Result<Option<u64>, CborError> {
        let at = self.pos;
        match self.head_untagged(0)? {
            Head::Map(len) => Ok(len),
            _ => Err(CborError::UnexpectedType { expected: "map", at }),
        }
    }

    /// For an indefinite map: consumes the break if it is next.
    pub(crate) fn at_break(&mut self) -> Result<bool, CborError> {
        if self.peek_break()? {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Whether the next item (after tags) is a text string, without consuming anything.
    pub(crate) fn next_is_text(&self) -> Result<bool, CborError> {
        let mut probe = Reader { buf: self.buf, pos: self.pos };
        Ok(matches!(probe.head_untagged(0)?, Head::Text(_)))
    }

    /// Looks at the next map key (after tags) without consuming anything. A definite-length text
    /// or byte string yields its bytes: serde field names match either, as the reference's
    /// decoder does.
    pub(crate) fn peek_key(&self) -> Result<Key<'a>, CborError> {
        let mut probe = Reader { buf: self.buf, pos: self.pos };
        let at = probe.pos;
        Ok(match probe.head_untagged(0)? {
            Head::Text(Some(n)) | Head::Bytes(Some(n)) => Key::Definite(probe.take(n)?),
            Head::Text(None) | Head::Bytes(None) => Key::Indefinite { at },
            _ => Key::Other,
        })
    }
}

/// What [`Reader::peek_key`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    /// A definite-length text or byte string.
    Definite(&'a [u8]),
    /// An indefinite-length string, which serde field identifiers do not accept.
    Indefinite {
        /// Offset of the key.
        at: usize,
    },
    /// Any other item.
    Other,
}

/// Checks that `bytes` start with one well-formed item and returns its length. Trailing bytes
/// are allowed (the reference reads one item and ignores the rest).
pub fn check_item(bytes: &[u8]) -> Result<usize, CborError> {
    let mut reader = Reader::new(bytes);
    reader.skip(0)?;
    Ok(reader.position())
}

/// Checks that `bytes` are exactly one well-formed item.
pub fn check_exact(bytes: &[u8]) -> Result<(), CborError> {
    let used = check_item(bytes)?;
    match bytes.len() - used {
        0 => Ok(()),
        extra => Err(CborError::TrailingBytes { extra }),
    }
}

/// Appends a shortest-form head of `major` with argument `value`.
pub(crate) fn write_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    if value < 24 {
        out.push(major | value as u8);
    } else if value <= 0xff {
        out.extend_from_slice(&[major | 24, value as u8]);
    } else if value <= 0xffff {
        out.push(major | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= 0xffff_ffff {
        out.push(major | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Length of the shortest-form head for `value`.
pub(crate) const fn head_len(value: u64) -> usize {
    if value < 24 {
        1
    } else if value <= 0xff {
        2
    } else if value <= 0xffff {
        3
    } else if value <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Major type of a text string.
pub(crate) const MAJOR_TEXT: u8 = 3;
/// Major type of a byte string.
pub(crate) const MAJOR_BYTES: u8 = 2;
/// Major type of an unsigned integer.
pub(crate) const MAJOR_UINT: u8 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_nested_indefinite_items() {
        // {_ "a": [_ 1, h'00'], "b": (_ "x", "y")}
        let bytes = [
            0xbf, 0x61, b'a', 0x9f, 0x01, 0x41, 0x00, 0xff, 0x61, b'b', 0x7f, 0x61, b'x', 0x61,
            b'y', 0xff, 0xff,
        ];
        assert_eq!(check_exact(&bytes), Ok(()));
    }

    #[test]
    fn check_rejects_length_beyond_input() {
        // A byte string that claims 4 GiB.
        let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(matches!(check_item(&bytes), Err(CborError::UnexpectedEnd { .. })));
    }

    #[test]
    fn check_rejects_huge_array_count_without_looping() {
        let bytes = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(matches!(check_item(&bytes), Err(CborError::UnexpectedEnd { .. })));
    }

    #[test]
    fn check_rejects_nesting_past_limit() {
        let bytes = vec![0x81u8; MAX_CBOR_NESTING + 2];
        assert_eq!(check_item(&bytes), Err(CborError::TooDeep));
    }

    #[test]
    fn check_accepts_nesting_at_limit() {
        let mut bytes = vec![0x81u8; MAX_CBOR_NESTING];
        bytes.push(0x00);
        assert_eq!(check_exact(&bytes), Ok(()));
    }

    #[test]
    fn check_rejects_deep_tag_chain() {
        let mut bytes = vec![0xc6u8; MAX_CBOR_NESTING + 2];
        bytes.push(0x00);
        assert_eq!(check_item(&bytes), Err(CborError::TooDeep));
    }

    #[test]
    fn check_rejects_reserved_info_and_stray_break() {
        assert!(matches!(check_item(&[0x1c]), Err(CborError::ReservedInfo { .. })));
        assert!(matches!(check_item(&[0xff]), Err(CborError::UnexpectedBreak { .. })));
        assert!(matches!(check_item(&[0x1f]), Err(CborError::BadIndefinite { .. })));
        assert!(matches!(check_item(&[0xdf]), Err(CborError::BadIndefinite { .. })));
    }

    #[test]
    fn check_rejects_mixed_chunks() {
        // (_ h'00', "a")
        assert!(matches!(
            check_item(&[0x5f, 0x41, 0x00, 0x61, b'a', 0xff]),
            Err(CborError::BadChunk { .. })
        ));
    }

    #[test]
    fn check_exact_reports_trailing_bytes() {
        assert_eq!(check_exact(&[0x00, 0x00]), Err(CborError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn bytes_lenient_reads_all_three_forms() {
        assert_eq!(&*Reader::new(&[0x42, 1, 2]).bytes_lenient().unwrap(), &[1, 2]);
        assert_eq!(
            &*Reader::new(&[0x5f, 0x41, 1, 0x41, 2, 0xff]).bytes_lenient().unwrap(),
            &[1, 2]
        );
        assert_eq!(&*Reader::new(&[0x82, 0x01, 0x18, 0xff]).bytes_lenient().unwrap(), &[1, 255]);
        // Tag 64 (typed array) around a byte string, as cbor-x may emit.
        assert_eq!(&*Reader::new(&[0xd8, 0x40, 0x41, 7]).bytes_lenient().unwrap(), &[7]);
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        assert!(matches!(Reader::new(&[0x61, 0xff]).text(), Err(CborError::BadUtf8 { .. })));
    }

    #[test]
    fn write_head_uses_shortest_form() {
        for (value, expected) in [
            (0u64, vec![0x00]),
            (23, vec![0x17]),
            (24, vec![0x18, 0x18]),
            (256, vec![0x19, 0x01, 0x00]),
            (65_536, vec![0x1a, 0x00, 0x01, 0x00, 0x00]),
            (1 << 32, vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            write_head(&mut out, MAJOR_UINT, value);
            assert_eq!(out, expected);
            assert_eq!(head_len(value), expected.len());
        }
    }
}
