//! Generation-8 raw bulk records: the body of a frame whose flags byte is exactly `0x08`
//! (PROTOCOL.md §11.1). The payload is opaque and never parsed as CBOR.
//!
//! ```text
//!  body: 0      1      2        4                12
//!        +------+------+--------+----------------+-------------------+
//!        | kind | flow | 0x0000 | offset u64 BE  | payload (1..3 MiB)|
//!        +------+------+--------+----------------+-------------------+
//! ```

use bytes::Bytes;

use crate::error::EncodeError;
use crate::flags::Flags;
use crate::frame;
use crate::limits::{
    BULK_RECORD_HEADER_BYTES, FRAME_HEADER_BYTES, LEN_PREFIX_BYTES, MAX_BULK_RECORD_PAYLOAD_BYTES,
};

/// Bytes of a raw bulk record's wire frame in front of its payload: the length prefix, the frame
/// header and the record header ([`BulkRecord::wire_header`]).
pub const BULK_RECORD_WIRE_HEADER_BYTES: usize =
    LEN_PREFIX_BYTES + FRAME_HEADER_BYTES + BULK_RECORD_HEADER_BYTES;

/// Which operation family a bulk record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkKind {
    /// Filesystem read or write (1).
    Filesystem,
    /// TCP stream (2).
    Tcp,
}

impl BulkKind {
    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            BulkKind::Filesystem => 1,
            BulkKind::Tcp => 2,
        }
    }

    /// Parses the wire byte.
    pub const fn from_byte(byte: u8) -> Option<BulkKind> {
        match byte {
            1 => Some(BulkKind::Filesystem),
            2 => Some(BulkKind::Tcp),
            _ => None,
        }
    }
}

/// Which way a bulk flow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkFlow {
    /// Host to guest (1).
    HostToGuest,
    /// Guest to host (2).
    GuestToHost,
}

impl BulkFlow {
    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            BulkFlow::HostToGuest => 1,
            BulkFlow::GuestToHost => 2,
        }
    }

    /// Parses the wire byte.
    pub const fn from_byte(byte: u8) -> Option<BulkFlow> {
        match byte {
            1 => Some(BulkFlow::HostToGuest),
            2 => Some(BulkFlow::GuestToHost),
            _ => None,
        }
    }
}

/// Why a raw bulk record body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkRecordError {
    /// The body is shorter than the 12-byte record header plus one payload byte.
    #[error("bulk record of {len} bytes is shorter than its 12-byte header plus 1 payload byte")]
    TooShort {
        /// Body length.
        len: usize,
    },
    /// Unknown kind byte.
    #[error("bulk record kind {0} is neither 1 (filesystem) nor 2 (tcp)")]
    BadKind(u8),
    /// Unknown flow byte.
    #[error("bulk record flow {0} is neither 1 (host to guest) nor 2 (guest to host)")]
    BadFlow(u8),
    /// Reserved bytes are not zero.
    #[error("bulk record reserved bytes are {0:#06x}, not zero")]
    Reserved(u16),
    /// Payload above 3 MiB.
    #[error("bulk record payload of {len} bytes exceeds {MAX_BULK_RECORD_PAYLOAD_BYTES}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
    /// `offset + payload length` overflows u64.
    #[error("bulk record offset {offset} plus {len} payload bytes overflows")]
    OffsetOverflow {
        /// Record offset.
        offset: u64,
        /// Payload length.
        len: usize,
    },
}

/// A decoded raw bulk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRecord {
    /// Correlation id of the owning session.
    pub id: u32,
    /// Operation family.
    pub kind: BulkKind,
    /// Direction.
    pub flow: BulkFlow,
    /// Stream offset of the first payload byte.
    pub offset: u64,
    /// The payload (1..=3 MiB).
    pub payload: Bytes,
}

impl BulkRecord {
    /// Parses the body of a frame with flags `0x08`.
    pub fn parse(id: u32, body: &Bytes) -> Result<BulkRecord, BulkRecordError> {
        let Some(header) = body.first_chunk::<BULK_RECORD_HEADER_BYTES>() else {
            return Err(BulkRecordError::TooShort { len: body.len() });
        };
        let payload_len = body.len() - BULK_RECORD_HEADER_BYTES;
        if payload_len == 0 {
            return Err(BulkRecordError::TooShort { len: body.len() });
        }
        check_payload_len(payload_len)?;
        let kind = BulkKind::from_byte(header[0]).ok_or(BulkRecordError::BadKind(header[0]))?;
        let flow = BulkFlow::from_byte(header[1]).ok_or(BulkRecordError::BadFlow(header[1]))?;
        let reserved = u16::from_be_bytes([header[2], header[3]]);
        if reserved != 0 {
            return Err(BulkRecordError::Reserved(reserved));
        }
        let mut offset_bytes = [0u8; 8];
        offset_bytes.copy_from_slice(&header[4..12]);
        let offset = u64::from_be_bytes(offset_bytes);
        check_offset(offset, payload_len)?;
        Ok(BulkRecord { id, kind, flow, offset, payload: body.slice(BULK_RECORD_HEADER_BYTES..) })
    }

    /// Appends the complete wire frame (flags `0x08`). Refuses a record its receiver would
    /// reject: an empty or over-3-MiB payload, or an offset whose end overflows.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let header = BulkRecord::wire_header(
            self.id,
            self.kind,
            self.flow,
            self.offset,
            self.payload.len(),
        )?;
        out.reserve(header.len() + self.payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Everything of a record's wire frame that precedes its `payload_len` payload bytes: the
    /// length prefix, the frame header and the record header. A sender writes the payload right
    /// after it (a vectored write, or a buffer that reserved this much in front of the payload),
    /// so the payload is never copied into a frame. Refuses what [`BulkRecord::encode`] refuses.
    pub fn wire_header(
        id: u32,
        kind: BulkKind,
        flow: BulkFlow,
        offset: u64,
        payload_len: usize,
    ) -> Result<[u8; BULK_RECORD_WIRE_HEADER_BYTES], EncodeError> {
        if payload_len == 0 {
            return Err(BulkRecordError::TooShort { len: BULK_RECORD_HEADER_BYTES }.into());
        }
        check_payload_len(payload_len)?;
        check_offset(offset, payload_len)?;
        let mut header = Vec::with_capacity(BULK_RECORD_WIRE_HEADER_BYTES);
        frame::write_header_only(
            &mut header,
            BULK_RECORD_HEADER_BYTES + payload_len,
            id,
            Flags::BULK,
        )?;
        header.extend_from_slice(&[kind.to_byte(), flow.to_byte(), 0, 0]);
        header.extend_from_slice(&offset.to_be_bytes());
        let mut out = [0; BULK_RECORD_WIRE_HEADER_BYTES];
        out.copy_from_slice(&header);
        Ok(out)
    }
}

fn check_payload_len(len: usize) -> Result<(), BulkRecordError> {
    if len > MAX_BULK_RECORD_PAYLOAD_BYTES {
        return Err(BulkRecordError::PayloadTooLarge { len });
    }
    Ok(())
}

fn check_offset(offset: u64, len: usize) -> Result<(), BulkRecordError> {
    if offset.checked_add(len as u64).is_none() {
        return Err(BulkRecordError::OffsetOverflow { offset, len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn parses_and_encodes_the_reference_unit_record() {
        // id 0x01020304, fs, host→guest, offset 0x0102030405060708, payload ff.
        let wire = [0, 0, 0, 0x12, 1, 2, 3, 4, 8, 1, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xff];
        let record = BulkRecord::parse(0x0102_0304, &body(&wire[9..])).unwrap();
        assert_eq!(record.kind, BulkKind::Filesystem);
        assert_eq!(record.flow, BulkFlow::HostToGuest);
        assert_eq!(record.offset, 0x0102_0304_0506_0708);
        assert_eq!(&record.payload[..], &[0xff]);
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn rejects_empty_payload_and_short_header() {
        assert_eq!(
            BulkRecord::parse(1, &body(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(BulkRecordError::TooShort { len: 12 })
        );
        assert_eq!(BulkRecord::parse(1, &body(&[1, 1])), Err(BulkRecordError::TooShort { len: 2 }));
    }

    #[test]
    fn rejects_bad_kind_flow_reserved_and_overflow() {
        let mut b = [1u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        b[0] = 3;
        assert_eq!(BulkRecord::parse(1, &body(&b)), Err(BulkRecordError::BadKind(3)));
        b[0] = 1;
        b[1] = 0;
        assert_eq!(BulkRecord::parse(1, &body(&b)), Err(BulkRecordError::BadFlow(0)));
        b[1] = 2;
        b[3] = 1;
        assert_eq!(BulkRecord::parse(1, &body(&b)), Err(BulkRecordError::Reserved(1)));
        b[3] = 0;
        b[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            BulkRecord::parse(1, &body(&b)),
            Err(BulkRecordError::OffsetOverflow { .. })
        ));
    }

    #[test]
    fn rejects_payload_above_3_mib() {
        let mut b = vec![0u8; BULK_RECORD_HEADER_BYTES + MAX_BULK_RECORD_PAYLOAD_BYTES + 1];
        b[0] = 1;
        b[1] = 1;
        assert!(matches!(
            BulkRecord::parse(1, &Bytes::from(b)),
            Err(BulkRecordError::PayloadTooLarge { .. })
        ));
    }
}
