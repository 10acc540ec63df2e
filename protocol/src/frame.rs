//! Outer framing: byte stream ⇄ frames (PROTOCOL.md §1).
//!
//! ```text
//!  0        4        8     9
//!  +--------+--------+-----+------------------+
//!  | len    | id     |flags| body (len - 5)   |   all integers big-endian
//!  +--------+--------+-----+------------------+
//!  len counts id + flags + body, not itself: 5 <= len <= 4 MiB
//! ```
//!
//! This module owns the header and the incremental decoder. It never looks inside a body; turning
//! a [`RawFrame`] into a message or record is [`crate::decode::decode_frame`]'s job.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{EncodeError, FrameError};
use crate::flags::Flags;
use crate::limits::{FRAME_HEADER_BYTES, LEN_PREFIX_BYTES, MAX_BODY_BYTES, MAX_FRAME_BYTES};

/// One frame as it crossed the wire: header fields and the opaque body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Correlation id.
    pub id: u32,
    /// Flags byte, as received (not yet validated).
    pub flags: Flags,
    /// Body: a CBOR envelope, or a raw bulk record when `flags == 0x08`.
    pub body: Bytes,
}

impl RawFrame {
    /// Size of this frame on the wire, length prefix included.
    pub fn wire_len(&self) -> usize {
        LEN_PREFIX_BYTES + FRAME_HEADER_BYTES + self.body.len()
    }

    /// Appends the wire bytes of this frame. Refuses a body over the frame limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_header(out, self.body.len(), self.id, self.flags)?;
        out.extend_from_slice(&self.body);
        Ok(())
    }

    /// The wire bytes of this frame.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// Appends `[len][id][flags]` for a body of `body_len` bytes, which the caller appends next.
pub fn write_header(
    out: &mut Vec<u8>,
    body_len: usize,
    id: u32,
    flags: Flags,
) -> Result<(), EncodeError> {
    if body_len > MAX_BODY_BYTES {
        return Err(EncodeError::FrameTooLarge { len: body_len + FRAME_HEADER_BYTES });
    }
    out.reserve(LEN_PREFIX_BYTES + FRAME_HEADER_BYTES + body_len);
    write_header_only(out, body_len, id, flags)
}

/// [`write_header`] without reserving room for the body: for a header written apart from its
/// body.
pub(crate) fn write_header_only(
    out: &mut Vec<u8>,
    body_len: usize,
    id: u32,
    flags: Flags,
) -> Result<(), EncodeError> {
    if body_len > MAX_BODY_BYTES {
        return Err(EncodeError::FrameTooLarge { len: body_len + FRAME_HEADER_BYTES });
    }
    let len = (body_len + FRAME_HEADER_BYTES) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(flags.bits());
    Ok(())
}

/// Checks a length prefix against the frame limits.
pub fn check_len(len: u32) -> Result<usize, FrameError> {
    let as_usize = len as usize;
    if as_usize < FRAME_HEADER_BYTES {
        Err(FrameError::TooShort { len })
    } else if as_usize > MAX_FRAME_BYTES {
        Err(FrameError::TooLarge { len })
    } else {
        Ok(as_usize)
    }
}

/// Takes one complete frame off the front of `buf`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed; in that case it reserves room for the rest of
/// the frame, but only after the length prefix passed [`check_len`]. On error `buf` is untouched.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<RawFrame>, FrameError> {
    Ok(split_frame_with_wire(buf)?.map(|(frame, _)| frame))
}

/// [`split_frame`] that also returns the frame's complete wire bytes (length prefix, header and
/// body), sharing memory with the frame's body: a relay forwards them as they are, without
/// writing the header again or copying the body.
pub fn split_frame_with_wire(buf: &mut BytesMut) -> Result<Option<(RawFrame, Bytes)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let len = check_len(u32::from_be_bytes(*prefix))?;
    let total = LEN_PREFIX_BYTES + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let wire = buf.split_to(total).freeze();
    let mut header = &wire[LEN_PREFIX_BYTES..LEN_PREFIX_BYTES + FRAME_HEADER_BYTES];
    let id = header.get_u32();
    let flags = Flags::from_bits(header.get_u8());
    let body = wire.slice(LEN_PREFIX_BYTES + FRAME_HEADER_BYTES..);
    Ok(Some((RawFrame { id, flags, body }, wire)))
}

/// An incremental frame decoder: feed it bytes in any split, take frames out.
///
/// After a framing error the stream is out of sync for good: the decoder stays failed and
/// reports the same error again. It buffers at most what it was given and not yet taken out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Takes the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        split_frame(&mut self.buf).inspect_err(|err| {
            self.failed = Some(*err);
            self.buf = BytesMut::new();
        })
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Declares the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        truncated(&self.buf)
    }
}

/// `Err(Truncated)` when `rest` holds a partial frame, as left at end of stream.
pub(crate) fn truncated(rest: &[u8]) -> Result<(), FrameError> {
    if rest.is_empty() {
        return Ok(());
    }
    let needed = match rest.first_chunk::<LEN_PREFIX_BYTES>() {
        Some(prefix) => LEN_PREFIX_BYTES + check_len(u32::from_be_bytes(*prefix))?,
        None => LEN_PREFIX_BYTES,
    };
    Err(FrameError::Truncated { buffered: rest.len(), needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        RawFrame { id, flags: Flags::from_bits(flags), body: Bytes::copy_from_slice(body) }
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn decodes_a_frame_fed_one_byte_at_a_time() {
        let wire = frame(7, 0x02, b"abc");
        let mut decoder = FrameDecoder::new();
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(decoder.next_frame().unwrap(), None, "frame complete early at byte {i}");
            decoder.push(&[*b]);
        }
        let got = decoder.next_frame().unwrap().unwrap();
        assert_eq!((got.id, got.flags.bits(), &got.body[..]), (7, 0x02, &b"abc"[..]));
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn split_with_wire_returns_the_exact_bytes_received() {
        let mut wire = frame(9, 0x01, b"body");
        wire.extend(frame(10, 0, b""));
        let mut buf = BytesMut::from(&wire[..]);
        let (first, first_wire) = split_frame_with_wire(&mut buf).unwrap().unwrap();
        assert_eq!((first.id, first.flags.bits(), &first.body[..]), (9, 0x01, &b"body"[..]));
        assert_eq!(first_wire, first.to_bytes().unwrap());
        // The body is a view into the wire bytes, not a copy.
        assert_eq!(first_wire[first_wire.len() - 4..].as_ptr(), first.body.as_ptr());
        let (second, second_wire) = split_frame_with_wire(&mut buf).unwrap().unwrap();
        assert_eq!((second.id, second_wire.len()), (10, 9));
        assert_eq!(split_frame_with_wire(&mut buf).unwrap(), None);
    }

    #[test]
    fn decodes_coalesced_frames() {
        let mut wire = frame(1, 0, b"x");
        wire.extend(frame(2, 1, b""));
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire);
        assert_eq!(decoder.next_frame().unwrap().unwrap().id, 1);
        let second = decoder.next_frame().unwrap().unwrap();
        assert_eq!((second.id, second.body.len()), (2, 0));
        assert_eq!(decoder.next_frame().unwrap(), None);
    }

    #[test]
    fn rejects_length_below_header() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { len: 4 }));
        // Stays failed.
        assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { len: 4 }));
    }

    #[test]
    fn rejects_4_gib_length_without_allocating() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: u32::MAX }));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn accepts_exactly_the_maximum_length() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_be_bytes());
        assert_eq!(split_frame(&mut buf), Ok(None));
        assert!(buf.capacity() >= LEN_PREFIX_BYTES + MAX_FRAME_BYTES);
        let mut over = BytesMut::from(&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes()[..]);
        assert!(matches!(split_frame(&mut over), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn finish_reports_truncated_frame() {
        let wire = frame(1, 0, b"hello");
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire[..wire.len() - 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated { buffered: wire.len() - 1, needed: wire.len() })
        );
        let mut partial_prefix = FrameDecoder::new();
        partial_prefix.push(&[0, 0]);
        assert_eq!(partial_prefix.finish(), Err(FrameError::Truncated { buffered: 2, needed: 4 }));
    }

    #[test]
    fn encoder_refuses_oversized_body() {
        let body = Bytes::from(vec![0u8; MAX_BODY_BYTES + 1]);
        let raw = RawFrame { id: 1, flags: Flags::NONE, body };
        assert!(matches!(raw.to_bytes(), Err(EncodeError::FrameTooLarge { .. })));
        let fits =
            RawFrame { id: 1, flags: Flags::NONE, body: Bytes::from(vec![0u8; MAX_BODY_BYTES]) };
        assert_eq!(fits.to_bytes().unwrap().len(), LEN_PREFIX_BYTES + MAX_FRAME_BYTES);
    }
}
