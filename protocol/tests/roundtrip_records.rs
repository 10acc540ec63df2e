//! Property tests for the fixed binary records and the `exec.log` line: raw bulk records
//! (PROTOCOL.md §11.1), `MSBL` lease records (§13.6), `MSBB`/`MSBA` binding records (§14.3), the
//! relay prologue and id allocation (§13.2, §13.3), and `exec.log` records (§13.10).

use std::collections::HashSet;

use bytes::Bytes;
use moat_protocol::bulk::{BulkFlow, BulkKind, BulkRecord, BulkRecordError};
use moat_protocol::error::EncodeError;
use moat_protocol::exec_log::{ExecLogRecord, LogSource};
use moat_protocol::limits::MAX_FRAME_BYTES;
use moat_protocol::records::{BindingRecord, BindingRole, LeaseEvent, LeaseRecord};
use moat_protocol::relay::{IdAllocator, IdRange, Prologue, PrologueKind, Slot};
use moat_protocol::{Decoded, FrameDecoder, decode_frame};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

fn receive(wire: &[u8]) -> Result<Decoded, TestCaseError> {
    let mut decoder = FrameDecoder::new();
    decoder.push(wire);
    let raw = decoder
        .next_frame()
        .map_err(|e| TestCaseError::fail(format!("framing: {e}")))?
        .ok_or_else(|| TestCaseError::fail("frame shorter than its length prefix"))?;
    prop_assert_eq!(decoder.buffered(), 0, "bytes after the frame");
    decode_frame(&raw).map_err(|e| TestCaseError::fail(format!("decode: {e}")))
}

fn bulk_record() -> impl Strategy<Value = BulkRecord> {
    let kind = select(vec![BulkKind::Filesystem, BulkKind::Tcp]);
    let flow = select(vec![BulkFlow::HostToGuest, BulkFlow::GuestToHost]);
    // Offsets anywhere, and near u64::MAX where `offset + len` may overflow.
    let offset = prop_oneof![any::<u64>(), (0u64..80).prop_map(|k| u64::MAX - k)];
    (any::<u32>(), kind, flow, offset, vec(any::<u8>(), 1..64)).prop_map(
        |(id, kind, flow, offset, payload)| BulkRecord {
            id,
            kind,
            flow,
            offset,
            payload: Bytes::from(payload),
        },
    )
}

fn log_source() -> impl Strategy<Value = LogSource> {
    select(vec![LogSource::Stdout, LogSource::Stderr, LogSource::Output, LogSource::System])
}

proptest! {
    #[test]
    fn bulk_record_round_trips_unless_its_end_overflows(record in bulk_record()) {
        let len = record.payload.len();
        let mut wire = Vec::new();
        match record.encode(&mut wire) {
            Ok(()) => {
                prop_assert!(record.offset.checked_add(len as u64).is_some());
                prop_assert_eq!(wire[8], 0x08, "flags are exactly BULK");
                prop_assert_eq!(receive(&wire)?, Decoded::Bulk(record));
            }
            Err(EncodeError::BulkRecord(BulkRecordError::OffsetOverflow { offset, len: l })) => {
                prop_assert!(record.offset.checked_add(len as u64).is_none());
                prop_assert_eq!((offset, l), (record.offset, len));
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }

    #[test]
    fn lease_record_round_trips_as_a_41_byte_frame(
        event in select(vec![LeaseEvent::Connected, LeaseEvent::DisconnectedAck]),
        id_start in any::<u32>(),
        id_end_exclusive in any::<u32>(),
        incarnation in any::<[u8; 16]>(),
    ) {
        let record = LeaseRecord { event, id_start, id_end_exclusive, incarnation };
        let mut wire = Vec::new();
        record.encode(&mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(wire.len(), 41);
        prop_assert_eq!(&wire[..13], &[0, 0, 0, 0x25, 0, 0, 0, 0, 0, b'M', b'S', b'B', b'L'][..]);
        prop_assert_eq!(receive(&wire)?, Decoded::Lease(record));
    }

    #[test]
    fn binding_record_round_trips_as_24_unframed_bytes(
        role in select(vec![BindingRole::Hello, BindingRole::Ack]),
        format in any::<u8>(),
        min_generation in any::<u8>(),
        connection_id in any::<[u8; 16]>(),
    ) {
        let record = BindingRecord { role, format, min_generation, connection_id };
        let bytes = record.to_bytes();
        let magic: &[u8] = match role {
            BindingRole::Hello => b"MSBB",
            BindingRole::Ack => b"MSBA",
        };
        prop_assert_eq!(&bytes[..4], magic);
        prop_assert_eq!(BindingRecord::parse(&bytes), Ok(record));
    }

    /// A current prologue reads back as itself unless it is shaped like a legacy one: the
    /// detection rule (§13.2) sees `[0][5..=4 MiB]` as an id offset followed by a frame length.
    #[test]
    fn prologue_round_trips_unless_it_looks_legacy(start in any::<u32>(), len in 1u32..=u32::MAX) {
        let range = IdRange { start, end_exclusive: start.saturating_add(len) };
        prop_assume!(range.start < range.end_exclusive);
        let frame_lengths = 5..=MAX_FRAME_BYTES as u32;
        let looks_legacy = start == 0 && frame_lengths.contains(&range.end_exclusive);
        let parsed = Prologue::parse(Prologue { range }.to_bytes());
        if looks_legacy {
            let ready_len = range.end_exclusive;
            prop_assert_eq!(parsed, Ok(PrologueKind::Legacy { offset: 0, ready_len }));
        } else {
            prop_assert_eq!(parsed, Ok(PrologueKind::Current(range)));
        }
    }

    #[test]
    fn id_allocator_hands_out_each_id_of_its_range_once_in_order(
        start in any::<u32>(), len in 0u32..2_000,
    ) {
        let range = IdRange { start, end_exclusive: start.saturating_add(len) };
        let mut allocator = IdAllocator::new(range);
        let ids: Vec<u32> = std::iter::from_fn(|| allocator.next_id()).collect();
        let first = start.max(1);
        let expected: Vec<u32> = (first..range.end_exclusive).collect();
        prop_assert_eq!(ids, expected);
        prop_assert_eq!(allocator.next_id(), None, "an exhausted allocator stays exhausted");
    }

    #[test]
    fn exec_log_record_round_trips_as_one_line(
        t in "\\PC{0,30}",
        s in log_source(),
        d in any::<String>(),
        id in of(any::<u64>()),
        e in of("\\PC{0,6}"),
    ) {
        let record = ExecLogRecord { t, s, d, id, e };
        let line = record.to_line();
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "one record is one line");
        let parsed =
            ExecLogRecord::from_line(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, record);
    }
}

#[test]
fn every_slot_prologue_reads_back_as_its_slot_range() {
    let mut starts = HashSet::new();
    for slot in Slot::all() {
        let range = slot.range();
        assert!(starts.insert(range.start));
        assert_eq!(
            Prologue::parse(Prologue::for_slot(slot).to_bytes()),
            Ok(PrologueKind::Current(range))
        );
    }
    assert_eq!(starts.len(), 128);
}
