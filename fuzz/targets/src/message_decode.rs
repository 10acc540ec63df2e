//! `message_decode`: every decoder a received frame body meets returns instead of panicking, and
//! the layers agree with each other.
//!
//! ```text
//!  input: [selector u8][id u32 BE][flags u8][body ...]
//! ```
//!
//! The body goes through, in turn:
//! - [`decode_frame`] as a frame `{id, flags, body}`, then [`MessageFrame::decode`] and
//!   [`Envelope::decode`] (with [`Message::decode_payload`] on the envelope's `p`) by hand;
//! - [`Message::decode_payload`] as the payload of every [`MessageType`];
//! - [`decode_frame`] again, wrapped as the `p` of a well-formed envelope naming type
//!   `MessageType::ALL[selector % 46]` with that type's flags and generation `selector`: the
//!   result must be exactly what [`Message::decode_payload`] gave for that type.
//!
//! Every error is also turned into its `core.error` answer, as a peer would.

use bytes::Bytes;
use moat_protocol::envelope::Envelope;
use moat_protocol::{
    DecodeError, Decoded, FrameDecoder, Message, MessageFrame, MessageType, RawFrame,
    UnknownMessage, decode_frame,
};

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((id, flags, body)) = crate::split_header(rest) else {
        return;
    };
    let raw = RawFrame { id, flags, body: Bytes::copy_from_slice(body) };
    check_received(&raw, decode_frame(&raw));
    decode_layers_by_hand(&raw);
    let direct = MessageType::ALL.map(|t| decode_payload(t, body));
    let index = usize::from(selector) % MessageType::ALL.len();
    check_wrapped(id, selector, MessageType::ALL[index], body, &direct[index]);
}

/// Builds the input for a frame body and the type the selector picks.
pub fn join_input(selector: u8, raw: &RawFrame) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend(crate::join_header(raw.id, raw.flags, &raw.body));
    out
}

/// The selector byte that picks `t`.
pub fn selector_of(t: MessageType) -> u8 {
    let index = MessageType::ALL.iter().position(|u| *u == t).expect("every type is in ALL");
    u8::try_from(index).expect("46 types fit a byte")
}

fn check_received(raw: &RawFrame, decoded: Result<Decoded, DecodeError>) {
    match decoded {
        Ok(Decoded::Message(m)) => {
            assert_eq!(m.id, raw.id, "message id");
            if let Some(t) = m.message.message_type() {
                assert_eq!(t.flags(), raw.flags, "{t} decoded with the wrong flags");
            }
        }
        Ok(Decoded::Bulk(record)) => assert_eq!(record.id, raw.id, "bulk record id"),
        Ok(Decoded::Lease(_) | Decoded::LocalTransport(_)) => assert_eq!(raw.id, 0),
        Err(err) => answer(&err),
    }
}

fn decode_layers_by_hand(raw: &RawFrame) {
    if let Err(err) = MessageFrame::decode(raw.id, raw.flags, &raw.body) {
        answer(&err);
    }
    if let Ok(envelope) = Envelope::decode(&raw.body) {
        if let Some(t) = MessageType::from_wire_name(&envelope.t) {
            let _ = decode_payload(t, &envelope.p);
        }
    }
}

/// [`Message::decode_payload`], checking that a success is of the asked type.
fn decode_payload(t: MessageType, p: &[u8]) -> Option<Message> {
    match Message::decode_payload(t, p) {
        Ok(message) => {
            assert_eq!(message.message_type(), Some(t), "decode_payload returned another type");
            Some(message)
        }
        Err(err) => {
            let _ = err.to_string();
            None
        }
    }
}

/// `body` as the `p` of a well-formed envelope for `t`: decoding the frame succeeds exactly when
/// decoding the payload alone does, with the same message, and otherwise fails on the payload.
fn check_wrapped(id: u32, v: u8, t: MessageType, body: &[u8], direct: &Option<Message>) {
    // An unknown message is written verbatim, which is how to put any bytes in `p`.
    let wrapper = MessageFrame {
        id,
        v,
        message: Message::Unknown(UnknownMessage {
            t: t.wire_name().to_owned(),
            flags: t.flags(),
            payload: body.to_vec(),
        }),
    };
    let Ok(wire) = wrapper.to_bytes() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire);
    let raw = decoder.next_frame().expect("an encoded frame frames").expect("a whole frame");
    match (decode_frame(&raw), direct) {
        (Ok(Decoded::Message(m)), Some(message)) => {
            assert_eq!((m.id, m.v), (id, v), "header of the wrapped frame");
            assert_eq!(&m.message, message, "envelope path and payload path disagree");
        }
        (Err(err @ DecodeError::Payload { message_type, .. }), None) => {
            assert_eq!(message_type, t, "payload error names another type");
            answer(&err);
        }
        (got, direct) => {
            panic!("{t}: frame decoded as {got:?}, the payload alone as {direct:?}")
        }
    }
}

/// Turns an error into the `core.error` a peer would answer it with.
fn answer(err: &DecodeError) {
    let core = err.core_error();
    assert!(!core.message.is_empty(), "an error with no message: {err:?}");
    assert_eq!(
        core.offending_type.as_deref(),
        err.message_type().map(MessageType::wire_name),
        "offending type"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::Flags;

    #[test]
    fn selector_picks_the_type() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::ALL[usize::from(selector_of(t))], t);
        }
    }

    #[test]
    fn a_ping_payload_decodes_on_both_paths() {
        let raw = RawFrame { id: 3, flags: Flags::NONE, body: Bytes::from_static(&[0xa0]) };
        run(&join_input(selector_of(MessageType::Ping), &raw));
    }

    #[test]
    fn short_inputs_are_ignored() {
        run(&[]);
        run(&[0, 0, 0, 0, 0]);
    }
}
