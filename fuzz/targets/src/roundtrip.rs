//! `roundtrip`: decode → encode → decode gives back what the first decode gave.
//!
//! ```text
//!  input: [id u32 BE][flags u8][body ...]      a wire frame without its length prefix
//! ```
//!
//! - Frame level: whenever [`decode_frame`] accepts the frame (a message, a raw bulk record, a
//!   lease record or an opaque `MSBS` frame), re-encoding it succeeds, the bytes frame as exactly
//!   one frame with the same id and flags, and decoding that frame gives an equal value.
//! - Payload level: whenever the body decodes as the payload of a [`MessageType`], its re-encoded
//!   payload decodes to an equal message.
//!
//! Decoding is lenient (any key order, indefinite lengths, defaults for missing fields), so the
//! re-encoded bytes need not equal the input; only the values must. Byte identity is the golden
//! vectors' job.

use bytes::Bytes;
use moat_protocol::limits::MAX_BODY_BYTES;
use moat_protocol::{
    Decoded, EncodeError, Flags, FrameDecoder, Message, MessageType, RawFrame, decode_frame,
};

/// A body below this size cannot re-encode past the frame limit: the canonical form of a
/// payload is at most a few dozen times its most compact accepted form (`{}` standing for a
/// struct of defaulted fields), far below the 4 MiB / 64 this allows. Above it, a
/// [`EncodeError::FrameTooLarge`] is the wire format's limit, not a bug.
const GROWTH_HEADROOM_BODY_BYTES: usize = MAX_BODY_BYTES / 64;

/// The target body.
pub fn run(data: &[u8]) {
    let Some((id, flags, body)) = crate::split_header(data) else {
        return;
    };
    let raw = RawFrame { id, flags, body: Bytes::copy_from_slice(body) };
    if let Ok(decoded) = decode_frame(&raw) {
        check_frame_round_trip(&raw, &decoded);
    }
    for t in MessageType::ALL {
        if let Ok(message) = Message::decode_payload(t, body) {
            check_payload_round_trip(t, &message);
        }
    }
}

fn check_frame_round_trip(raw: &RawFrame, decoded: &Decoded) {
    let mut wire = Vec::new();
    let encoded = match decoded {
        Decoded::Message(m) => m.encode(&mut wire),
        Decoded::Bulk(record) => record.encode(&mut wire),
        Decoded::Lease(record) => record.encode(&mut wire),
        Decoded::LocalTransport(body) => {
            RawFrame { id: 0, flags: Flags::NONE, body: body.clone() }.encode(&mut wire)
        }
    };
    match encoded {
        Ok(()) => {}
        Err(EncodeError::FrameTooLarge { .. }) if raw.body.len() > GROWTH_HEADROOM_BODY_BYTES => {
            return;
        }
        Err(err) => panic!("{decoded:?} decoded but does not re-encode: {err}"),
    }
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire);
    let again = decoder
        .next_frame()
        .expect("re-encoded bytes frame")
        .expect("re-encoded bytes hold a whole frame");
    assert_eq!(decoder.buffered(), 0, "re-encoded bytes hold more than one frame");
    assert_eq!((again.id, again.flags), (raw.id, raw.flags), "re-encoded header");
    match decode_frame(&again) {
        Ok(redecoded) => assert_eq!(&redecoded, decoded, "decode(encode(x)) != x"),
        Err(err) => panic!("{decoded:?} re-encodes to a frame that does not decode: {err}"),
    }
}

fn check_payload_round_trip(t: MessageType, message: &Message) {
    let mut payload = Vec::new();
    if let Err(err) = message.encode_payload(&mut payload) {
        panic!("{t}: {message:?} decoded but its payload does not re-encode: {err}");
    }
    match Message::decode_payload(t, &payload) {
        Ok(again) => assert_eq!(&again, message, "{t}: decode(encode(payload)) != payload"),
        Err(err) => panic!("{t}: {message:?} re-encodes to a payload that does not decode: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::MessageFrame;
    use moat_protocol::payload::exec::Data;

    #[test]
    fn an_encoded_message_round_trips() {
        let wire = MessageFrame::new(7, Message::ExecStdout(Data::new(*b"hi"))).to_bytes().unwrap();
        run(&wire[4..]);
    }

    #[test]
    fn an_unknown_type_round_trips_with_its_flags() {
        let unknown = moat_protocol::UnknownMessage {
            t: "core.future".into(),
            flags: Flags::from_bits(0x30),
            payload: vec![0xa0],
        };
        let wire = MessageFrame::new(9, Message::Unknown(unknown)).to_bytes().unwrap();
        run(&wire[4..]);
    }
}
