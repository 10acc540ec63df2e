//! From a [`RawFrame`] to what it carries: a message, a raw bulk record, a relay-lease record, or
//! an `MSBS` local-transport frame (PROTOCOL.md §1.3). This is the one function every peer calls on
//! a received frame.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

use crate::bulk::BulkRecord;
use crate::cbor::{Head, Reader};
use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::frame::RawFrame;
use crate::message::MessageFrame;
use crate::message_type::MessageType;
use crate::records::{LOCAL_TRANSPORT_MAGIC, LeaseRecord};

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A CBOR envelope with its typed message (possibly [`crate::Message::Unknown`]).
    Message(MessageFrame),
    /// A raw bulk record (flags exactly `0x08`).
    Bulk(BulkRecord),
    /// An `MSBL` relay-lease record (id 0, flags 0, body starting `MSBL`).
    Lease(LeaseRecord),
    /// An `MSBS` local shared-memory frame (id 0, flags 0, body starting `MSBS`), kept opaque:
    /// moat's relay does not offer the extension.
    LocalTransport(Bytes),
}

/// Classifies and decodes one frame.
pub fn decode_frame(frame: &RawFrame) -> Result<Decoded, DecodeError> {
    if frame.flags.is_bulk() {
        return Ok(Decoded::Bulk(BulkRecord::parse(frame.id, &frame.body)?));
    }
    if LeaseRecord::matches(frame.id, frame.flags, &frame.body) {
        return Ok(Decoded::Lease(LeaseRecord::parse(&frame.body)?));
    }
    if frame.id == 0 && frame.flags.bits() == 0 && frame.body.starts_with(&LOCAL_TRANSPORT_MAGIC) {
        return Ok(Decoded::LocalTransport(frame.body.clone()));
    }
    Ok(Decoded::Message(MessageFrame::decode(frame.id, frame.flags, &frame.body)?))
}

/// The `data` of a `core.exec.stdout` or `core.exec.stderr` frame as a slice of its body, with
/// its type: no payload decode and no copy. This is the relay's `exec.log` tap, run on every
/// output frame. It takes only the shape every encoder writes (a definite-length payload map
/// whose text keys include one definite-length `data` byte string); for anything else, and for
/// every other message, it returns `None`, and a caller that must be sure decodes the frame
/// with [`decode_frame`].
pub fn exec_output_data(frame: &RawFrame) -> Option<(MessageType, Bytes)> {
    if frame.flags.is_bulk() {
        return None;
    }
    let body = &frame.body;
    let envelope = Envelope::decode(body).ok()?;
    let t = MessageType::from_wire_name(&envelope.t)?;
    if !matches!(t, MessageType::ExecStdout | MessageType::ExecStderr) {
        return None;
    }
    let Cow::Borrowed(payload) = envelope.p else { return None };
    // The payload borrows from the body, so it lies inside it.
    let payload_start = (payload.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let data = data_span(payload)?;
    Some((t, body.slice(payload_start + data.start..payload_start + data.end)))
}

/// Where the one `data` byte string of a `{data: bytes}` payload lies in it.
fn data_span(payload: &[u8]) -> Option<Range<usize>> {
    let mut reader = Reader::new(payload);
    let Ok(Head::Map(Some(entries))) = reader.head() else { return None };
    let mut span = None;
    for _ in 0..entries {
        if !reader.next_is_text().ok()? {
            return None;
        }
        let key = reader.text().ok()?;
        let value_at = reader.position();
        reader.skip(1).ok()?;
        if &*key != "data" {
            continue;
        }
        if span.is_some() {
            // A duplicate field, which the typed decode refuses.
            return None;
        }
        let mut head = Reader::new(&payload[value_at..]);
        let Ok(Head::Bytes(Some(len))) = head.head() else { return None };
        let start = value_at + head.position();
        span = Some(start..start + usize::try_from(len).ok()?);
    }
    (reader.position() == payload.len()).then_some(span)?
}

#[cfg(test)]
mod exec_output_tests {
    use super::*;
    use crate::Message;
    use crate::payload::exec::Data;

    fn raw(frame: &MessageFrame) -> RawFrame {
        let mut wire = bytes::BytesMut::from(&frame.to_bytes().unwrap()[..]);
        crate::frame::split_frame(&mut wire).unwrap().unwrap()
    }

    #[test]
    fn finds_the_output_data_without_decoding() {
        for (message, t) in [
            (Message::ExecStdout(Data::new(b"hello\n".to_vec())), MessageType::ExecStdout),
            (Message::ExecStderr(Data::new(vec![0; 70_000])), MessageType::ExecStderr),
            (Message::ExecStdout(Data::new(Vec::new())), MessageType::ExecStdout),
        ] {
            let frame = raw(&MessageFrame::new(9, message.clone()));
            let (found_t, data) = exec_output_data(&frame).unwrap();
            assert_eq!(found_t, t);
            let Decoded::Message(decoded) = decode_frame(&frame).unwrap() else { panic!() };
            let (Message::ExecStdout(d) | Message::ExecStderr(d)) = decoded.message else {
                panic!()
            };
            assert_eq!(&data[..], &d.data[..]);
        }
    }

    #[test]
    fn other_frames_and_odd_shapes_are_left_to_the_decoder() {
        let ping = raw(&MessageFrame::new(9, Message::Ping));
        assert_eq!(exec_output_data(&ping), None);
        let stdin = raw(&MessageFrame::new(9, Message::ExecStdin(Data::new(b"x".to_vec()))));
        assert_eq!(exec_output_data(&stdin), None);
        // `{data: h'61', data: h'62'}` and `{data: "a"}` and `{}`: not the canonical shape.
        for payload in [
            &[
                0xa2, 0x64, b'd', b'a', b't', b'a', 0x41, b'a', 0x64, b'd', b'a', b't', b'a', 0x41,
                b'b',
            ][..],
            &[0xa1, 0x64, b'd', b'a', b't', b'a', 0x61, b'a'][..],
            &[0xa0][..],
            &[0xa1, 0x64, b'd', b'a', b't', b'a', 0x5f, 0x41, b'a', 0xff][..],
            &[0xa1, 0x64, b'd', b'a', b't', b'a', 0x45, b'a'][..],
        ] {
            let mut body = Vec::new();
            crate::envelope::write_prefix(&mut body, 10, "core.exec.stdout", payload.len());
            body.extend_from_slice(payload);
            let frame = RawFrame { id: 9, flags: crate::Flags::NONE, body: Bytes::from(body) };
            assert_eq!(exec_output_data(&frame), None, "{payload:x?}");
        }
        // Unknown keys are skipped, as the typed decode skips them.
        let payload = [0xa2, 0x61, b'x', 0x01, 0x64, b'd', b'a', b't', b'a', 0x42, b'h', b'i'];
        let mut body = Vec::new();
        crate::envelope::write_prefix(&mut body, 10, "core.exec.stdout", payload.len());
        body.extend_from_slice(&payload);
        let frame = RawFrame { id: 9, flags: crate::Flags::NONE, body: Bytes::from(body) };
        let (_, data) = exec_output_data(&frame).unwrap();
        assert_eq!(&data[..], b"hi");
    }
}
