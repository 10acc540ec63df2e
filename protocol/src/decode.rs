//! From a [`RawFrame`] to what it carries: a message, a raw bulk record, a relay-lease record, or
//! an `MSBS` local-transport frame (PROTOCOL.md §1.3). This is the one function every peer calls on
//! a received frame.

use bytes::Bytes;

use crate::bulk::BulkRecord;
use crate::error::DecodeError;
use crate::frame::RawFrame;
use crate::message::MessageFrame;
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
