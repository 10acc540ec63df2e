//! Fixed binary records that share the stream with envelopes but are not CBOR
//! (PROTOCOL.md §13.6, §14.3): the framed `MSBL` relay-lease record and the unframed
//! `MSBB`/`MSBA` bulk-port binding records.
//!
//! ```text
//!  MSBL (framed, id 0, flags 0), body of 32 bytes:
//!   0      4       5       6       8            12                16            32
//!   +------+-------+-------+-------+------------+-----------------+-------------+
//!   |"MSBL"|format |event  |0x0000 |id_start BE |id_end_excl BE   | incarnation |
//!   +------+-------+-------+-------+------------+-----------------+-------------+
//!
//!  MSBB / MSBA (unframed, 24 bytes):
//!   0      4       5              6       8                   24
//!   +------+-------+--------------+-------+-------------------+
//!   |magic |format |min generation|0x0000 |connection id (16) |
//!   +------+-------+--------------+-------+-------------------+
//! ```

use bytes::Bytes;

use crate::error::EncodeError;
use crate::flags::Flags;
use crate::frame;
use crate::limits::{BULK_BINDING_BYTES, LEASE_RECORD_BODY_BYTES};

/// Magic that starts an `MSBL` lease record body.
pub const LEASE_MAGIC: [u8; 4] = *b"MSBL";
/// Magic that starts an `MSBS` local shared-memory frame body.
pub const LOCAL_TRANSPORT_MAGIC: [u8; 4] = *b"MSBS";
/// Magic of the guest's bulk-port hello.
pub const BINDING_HELLO_MAGIC: [u8; 4] = *b"MSBB";
/// Magic of the host's bulk-port acknowledgement.
pub const BINDING_ACK_MAGIC: [u8; 4] = *b"MSBA";

/// What a lease record announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Relay → guest: a client connected with this range (1).
    Connected,
    /// Guest → relay: the disconnected range is cleaned up (2).
    DisconnectedAck,
}

/// Why a lease record body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRecordError {
    /// Not 32 bytes, or not starting with `MSBL`.
    #[error("lease record body must be 32 bytes starting with MSBL, got {len} bytes")]
    Shape {
        /// Body length.
        len: usize,
    },
    /// Format other than 1.
    #[error("lease record format {0} is not 1")]
    Format(u8),
    /// Event other than 1 or 2.
    #[error("lease record event {0} is neither 1 (connected) nor 2 (disconnected ack)")]
    Event(u8),
    /// Reserved bytes are not zero.
    #[error("lease record reserved bytes are not zero")]
    Reserved,
}

/// An `MSBL` relay-lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    /// What happened.
    pub event: LeaseEvent,
    /// First id of the slot range.
    pub id_start: u32,
    /// Exclusive end of the slot range.
    pub id_end_exclusive: u32,
    /// Random, non-zero 128-bit incarnation of the lease.
    pub incarnation: [u8; 16],
}

impl LeaseRecord {
    /// Whether a frame with this header and body is a lease record rather than an envelope.
    pub fn matches(id: u32, flags: Flags, body: &[u8]) -> bool {
        id == 0 && flags == Flags::NONE && body.starts_with(&LEASE_MAGIC)
    }

    /// Parses a lease record body (the 32 bytes after the frame header).
    pub fn parse(body: &Bytes) -> Result<LeaseRecord, LeaseRecordError> {
        let Some(b) = body.first_chunk::<LEASE_RECORD_BODY_BYTES>() else {
            return Err(LeaseRecordError::Shape { len: body.len() });
        };
        if body.len() != LEASE_RECORD_BODY_BYTES || b[0..4] != LEASE_MAGIC {
            return Err(LeaseRecordError::Shape { len: body.len() });
        }
        if b[4] != 1 {
            return Err(LeaseRecordError::Format(b[4]));
        }
        let event = match b[5] {
            1 => LeaseEvent::Connected,
            2 => LeaseEvent::DisconnectedAck,
            other => return Err(LeaseRecordError::Event(other)),
        };
        if b[6] != 0 || b[7] != 0 {
            return Err(LeaseRecordError::Reserved);
        }
        let id_start = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let id_end_exclusive = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        let mut incarnation = [0u8; 16];
        incarnation.copy_from_slice(&b[16..32]);
        Ok(LeaseRecord { event, id_start, id_end_exclusive, incarnation })
    }

    /// Appends the complete 41-byte frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        frame::write_header(out, LEASE_RECORD_BODY_BYTES, 0, Flags::NONE)?;
        out.extend_from_slice(&LEASE_MAGIC);
        let event = match self.event {
            LeaseEvent::Connected => 1,
            LeaseEvent::DisconnectedAck => 2,
        };
        out.extend_from_slice(&[1, event, 0, 0]);
        out.extend_from_slice(&self.id_start.to_be_bytes());
        out.extend_from_slice(&self.id_end_exclusive.to_be_bytes());
        out.extend_from_slice(&self.incarnation);
        Ok(())
    }
}

/// Which side of the bulk-port binding a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingRole {
    /// The guest's `MSBB` hello.
    Hello,
    /// The host's `MSBA` acknowledgement.
    Ack,
}

/// Why a binding record is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingRecordError {
    /// Not 24 bytes.
    #[error("bulk binding record must be 24 bytes, got {0}")]
    Length(usize),
    /// Neither `MSBB` nor `MSBA`.
    #[error("bulk binding record magic is neither MSBB nor MSBA")]
    Magic,
    /// Reserved bytes are not zero.
    #[error("bulk binding record reserved bytes are not zero")]
    Reserved,
}

/// An unframed `MSBB`/`MSBA` bulk-port binding record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRecord {
    /// Hello or ack.
    pub role: BindingRole,
    /// Binding format (1).
    pub format: u8,
    /// Minimum generation (8).
    pub min_generation: u8,
    /// 16-byte connection id.
    pub connection_id: [u8; 16],
}

impl BindingRecord {
    /// Parses the 24 unframed bytes.
    pub fn parse(bytes: &[u8]) -> Result<BindingRecord, BindingRecordError> {
        let b: &[u8; BULK_BINDING_BYTES] =
            bytes.try_into().map_err(|_| BindingRecordError::Length(bytes.len()))?;
        let role = match [b[0], b[1], b[2], b[3]] {
            BINDING_HELLO_MAGIC => BindingRole::Hello,
            BINDING_ACK_MAGIC => BindingRole::Ack,
            _ => return Err(BindingRecordError::Magic),
        };
        if b[6] != 0 || b[7] != 0 {
            return Err(BindingRecordError::Reserved);
        }
        let mut connection_id = [0u8; 16];
        connection_id.copy_from_slice(&b[8..24]);
        Ok(BindingRecord { role, format: b[4], min_generation: b[5], connection_id })
    }

    /// The 24 wire bytes.
    pub fn to_bytes(&self) -> [u8; BULK_BINDING_BYTES] {
        let mut out = [0u8; BULK_BINDING_BYTES];
        out[0..4].copy_from_slice(match self.role {
            BindingRole::Hello => &BINDING_HELLO_MAGIC,
            BindingRole::Ack => &BINDING_ACK_MAGIC,
        });
        out[4] = self.format;
        out[5] = self.min_generation;
        out[8..24].copy_from_slice(&self.connection_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_record_round_trips_the_reference_bytes() {
        let record = LeaseRecord {
            event: LeaseEvent::Connected,
            id_start: 1,
            id_end_exclusive: 0x01ff_ffff,
            incarnation: [0xab; 16],
        };
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        let mut expected = vec![0, 0, 0, 0x25, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"MSBL");
        expected.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 1, 1, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xab; 16]);
        assert_eq!(out, expected);
        assert_eq!(LeaseRecord::parse(&Bytes::copy_from_slice(&out[9..])), Ok(record));
    }

    #[test]
    fn lease_record_rejects_bad_fields() {
        let mut body = [0u8; 32];
        body[0..4].copy_from_slice(b"MSBL");
        body[4] = 2;
        assert_eq!(
            LeaseRecord::parse(&Bytes::copy_from_slice(&body)),
            Err(LeaseRecordError::Format(2))
        );
        body[4] = 1;
        body[5] = 3;
        assert_eq!(
            LeaseRecord::parse(&Bytes::copy_from_slice(&body)),
            Err(LeaseRecordError::Event(3))
        );
        assert_eq!(
            LeaseRecord::parse(&Bytes::copy_from_slice(&body[..31])),
            Err(LeaseRecordError::Shape { len: 31 })
        );
    }

    #[test]
    fn binding_records_round_trip() {
        let hello = BindingRecord {
            role: BindingRole::Hello,
            format: 1,
            min_generation: 8,
            connection_id: [0x11; 16],
        };
        let bytes = hello.to_bytes();
        assert_eq!(&bytes[..8], &[0x4d, 0x53, 0x42, 0x42, 1, 8, 0, 0]);
        assert_eq!(BindingRecord::parse(&bytes), Ok(hello));
        assert_eq!(BindingRecord::parse(&bytes[..23]), Err(BindingRecordError::Length(23)));
    }
}
