//! The checks the relay applies to every client frame before it forwards it (PROTOCOL.md §13.4).
//! Any failure disconnects that client and nobody else.
//!
//! ```text
//!  1. length in [5, 4 MiB]                    (done by framing: a FrameError is a Violation too)
//!  2. flags byte in {0x00, 0x01, 0x02, 0x04, 0x08}
//!  3. id 0 with flags 0 is an MSBS local-transport frame: refused, moat offers none (§13.9)
//!  4. id inside the client's range, or id 0 with SHUTDOWN
//!  5. non-bulk body: one well-formed CBOR map (no trailing bytes, nesting <= 256) with exactly one
//!     text `t` that does not start with `control.`; a SHUTDOWN frame with an empty body skips it
//!  6. not a host-only lifecycle type (bootstrap, init ack, relay client notices, clock sync,
//!     the runtime's workload channel): only the host process sends those. moat's own rule, so a
//!     client cannot forge `core.relay.client.disconnected` to kill another client's execs
//! ```
//!
//! This module owns those rules only. It does not decide what a valid frame means for sessions
//! (the router does), and it never reads header bytes itself: the frame arrives as a
//! [`RawFrame`] from the protocol crate.

use moat_protocol::cbor::{self, CborError};
use moat_protocol::envelope::{Envelope, EnvelopeError};
use moat_protocol::error::FrameError;
use moat_protocol::relay::IdRange;
use moat_protocol::{Flags, MessageType, RawFrame};

use crate::limits::MAX_LOGGED_TYPE_NAME_BYTES;

/// Prefix of the host-private control message names a client may never send.
const CONTROL_PREFIX: &str = "control.";

/// Why a client frame was refused. Each one disconnects the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The byte stream is not framed (length out of bounds, or truncated at end of stream).
    #[error("unframed client stream: {0}")]
    Framing(#[from] FrameError),
    /// The flags byte is a combination or uses reserved bits.
    #[error("flags byte {0} is not one of 0x00, 0x01, 0x02, 0x04, 0x08")]
    Flags(Flags),
    /// id 0 with flags 0: an `MSBS` local-transport frame, which moat's relay does not offer.
    #[error("id 0 with flags 0 (local-transport frame) is not offered by this relay")]
    LocalTransport,
    /// The id is outside the client's range and is not id 0 with SHUTDOWN.
    #[error("id {id} is outside the client's range [{}, {})", range.start, range.end_exclusive)]
    IdOutOfRange {
        /// The id the frame carried.
        id: u32,
        /// The client's range.
        range: IdRange,
    },
    /// The body is not exactly one well-formed CBOR item.
    #[error("body is not well-formed CBOR: {0}")]
    MalformedCbor(#[from] CborError),
    /// The body is well-formed CBOR but not an envelope map with one text `t`.
    #[error("body is not a message envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A lifecycle type only the host process may send.
    #[error("message type {t} is sent only by the host, not by relay clients")]
    HostOnlyType {
        /// The type's wire name.
        t: &'static str,
    },
    /// A host-private `control.*` message type.
    #[error("message type {t:?} is host-private")]
    ControlType {
        /// The type name, cut to [`MAX_LOGGED_TYPE_NAME_BYTES`].
        t: String,
    },
}

/// What a frame that passed the checks carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked<'a> {
    /// A raw bulk record (flags exactly `0x08`): forwarded without looking inside.
    Bulk,
    /// A SHUTDOWN frame with an empty body.
    EmptyShutdown,
    /// A CBOR envelope.
    Message(Envelope<'a>),
}

/// Applies checks 2–5 to a frame from the client owning `range`.
pub fn check_client_frame(range: IdRange, frame: &RawFrame) -> Result<Checked<'_>, Violation> {
    let flags = frame.flags;
    if !flags.is_wire_valid() {
        return Err(Violation::Flags(flags));
    }
    if frame.id == 0 && flags == Flags::NONE {
        return Err(Violation::LocalTransport);
    }
    let shutdown = flags == Flags::SHUTDOWN;
    let allowed = range.contains(frame.id) || (frame.id == 0 && shutdown);
    if !allowed {
        return Err(Violation::IdOutOfRange { id: frame.id, range });
    }
    if flags.is_bulk() {
        return Ok(Checked::Bulk);
    }
    if shutdown && frame.body.is_empty() {
        return Ok(Checked::EmptyShutdown);
    }
    cbor::check_exact(&frame.body)?;
    let envelope = Envelope::decode(&frame.body)?;
    if envelope.t.starts_with(CONTROL_PREFIX) {
        return Err(Violation::ControlType { t: cut(&envelope.t) });
    }
    if let Some(t) = MessageType::from_wire_name(&envelope.t).filter(|t| is_host_only(*t)) {
        return Err(Violation::HostOnlyType { t: t.wire_name() });
    }
    Ok(Checked::Message(envelope))
}

/// Types only the host process sends to the agent, never a relay client.
fn is_host_only(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Bootstrap
            | MessageType::InitAck
            | MessageType::RelayClientDisconnected
            | MessageType::ClockSync
            | MessageType::WorkloadFreeze
            | MessageType::WorkloadThaw
    )
}

/// `t` cut to at most [`MAX_LOGGED_TYPE_NAME_BYTES`] on a character boundary.
fn cut(t: &str) -> String {
    let mut end = t.len().min(MAX_LOGGED_TYPE_NAME_BYTES);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use moat_protocol::message::{Message, MessageFrame, UnknownMessage};
    use moat_protocol::relay::Slot;

    use super::*;

    fn slot1() -> IdRange {
        Slot::new(1).unwrap().range()
    }

    /// A frame whose header says `id`/`flags` around the body of `message`.
    fn frame(id: u32, flags: u8, message: Message) -> RawFrame {
        let mut raw = raw_of(MessageFrame::new(id, message));
        raw.flags = Flags::from_bits(flags);
        raw
    }

    fn raw_of(message: MessageFrame) -> RawFrame {
        let bytes = message.to_bytes().unwrap();
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        moat_protocol::frame::split_frame(&mut buf).unwrap().unwrap()
    }

    fn body(id: u32, flags: u8, body: &[u8]) -> RawFrame {
        RawFrame { id, flags: Flags::from_bits(flags), body: Bytes::copy_from_slice(body) }
    }

    #[test]
    fn ping_inside_the_range_passes() {
        let range = slot1();
        let ping = frame(range.start, 0, Message::Ping);
        match check_client_frame(range, &ping).unwrap() {
            Checked::Message(env) => assert_eq!(env.t, "core.ping"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn combined_or_reserved_flags_are_refused() {
        let range = slot1();
        for bits in [0x03, 0x09, 0x10, 0x80] {
            let bad = frame(range.start, bits, Message::Ping);
            assert_eq!(
                check_client_frame(range, &bad),
                Err(Violation::Flags(Flags::from_bits(bits)))
            );
        }
    }

    #[test]
    fn id_outside_the_range_is_refused() {
        let range = slot1();
        for id in [range.start - 1, range.end_exclusive, 1, u32::MAX] {
            let bad = frame(id, 0, Message::Ping);
            assert_eq!(check_client_frame(range, &bad), Err(Violation::IdOutOfRange { id, range }));
        }
    }

    #[test]
    fn id_zero_is_only_for_shutdown() {
        let range = slot1();
        let shutdown = frame(0, 0x04, Message::Shutdown);
        assert!(matches!(check_client_frame(range, &shutdown), Ok(Checked::Message(_))));
        let terminal = frame(0, 0x01, Message::Pong);
        assert!(matches!(
            check_client_frame(range, &terminal),
            Err(Violation::IdOutOfRange { id: 0, .. })
        ));
    }

    #[test]
    fn id_zero_flags_zero_is_refused_as_local_transport() {
        let msbs = body(0, 0, b"MSBS\x01\x01");
        assert_eq!(check_client_frame(slot1(), &msbs), Err(Violation::LocalTransport));
        let cbor = frame(0, 0, Message::Ping);
        assert_eq!(check_client_frame(slot1(), &cbor), Err(Violation::LocalTransport));
    }

    #[test]
    fn shutdown_with_an_empty_body_passes() {
        let empty = body(0, 0x04, b"");
        assert_eq!(check_client_frame(slot1(), &empty), Ok(Checked::EmptyShutdown));
    }

    #[test]
    fn bulk_records_are_not_parsed() {
        let range = slot1();
        let record = body(range.start, 0x08, b"not cbor at all");
        assert_eq!(check_client_frame(range, &record), Ok(Checked::Bulk));
    }

    #[test]
    fn control_types_are_refused() {
        let range = slot1();
        let control = frame(
            range.start,
            0,
            Message::Unknown(UnknownMessage {
                t: "control.exec.signal".into(),
                flags: Flags::NONE,
                payload: vec![0xa0],
            }),
        );
        assert_eq!(
            check_client_frame(range, &control),
            Err(Violation::ControlType { t: "control.exec.signal".into() })
        );
    }

    #[test]
    fn unknown_core_types_pass() {
        let range = slot1();
        let unknown = frame(
            range.start,
            0,
            Message::Unknown(UnknownMessage {
                t: "core.future.thing".into(),
                flags: Flags::NONE,
                payload: vec![0xa0],
            }),
        );
        assert!(matches!(check_client_frame(range, &unknown), Ok(Checked::Message(_))));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let range = slot1();
        let truncated = body(range.start, 0, &[0xa3, 0x61]);
        assert!(matches!(check_client_frame(range, &truncated), Err(Violation::MalformedCbor(_))));
        let trailing = body(range.start, 0, &[0xa0, 0x00]);
        assert!(matches!(
            check_client_frame(range, &trailing),
            Err(Violation::MalformedCbor(CborError::TrailingBytes { extra: 1 }))
        ));
        let not_a_map = body(range.start, 0, &[0x80]);
        assert!(matches!(check_client_frame(range, &not_a_map), Err(Violation::Envelope(_))));
        let empty = body(range.start, 0, b"");
        assert!(matches!(check_client_frame(range, &empty), Err(Violation::MalformedCbor(_))));
    }

    #[test]
    fn long_control_names_are_cut_for_logging() {
        let long = format!("control.{}", "é".repeat(100));
        let t = cut(&long);
        assert!(t.len() <= MAX_LOGGED_TYPE_NAME_BYTES);
        assert!(long.starts_with(&t));
    }

    #[test]
    fn forged_disconnect_notice_is_a_violation() {
        let notice = Message::RelayClientDisconnected(
            moat_protocol::payload::core::RelayClientDisconnected {
                id_start: 1,
                id_end_exclusive: 33_554_431,
                incarnation: None,
            },
        );
        let id = slot1().start;
        assert_eq!(
            check_client_frame(slot1(), &frame(id, 0, notice)),
            Err(Violation::HostOnlyType { t: "core.relay.client.disconnected" })
        );
        let bootstrap = Message::Bootstrap(Box::default());
        assert!(matches!(
            check_client_frame(slot1(), &frame(id, 0, bootstrap)),
            Err(Violation::HostOnlyType { .. })
        ));
    }
}
