//! The relay handshake prologue and the 128 id slots (PROTOCOL.md §13.2, §13.3).
//!
//! ```text
//!  relay → client, before any frame:
//!  0              4                    8
//!  +--------------+--------------------+---------------------------+
//!  | id_start BE  | id_end_exclusive BE| the cached core.ready frame
//!  +--------------+--------------------+---------------------------+
//!
//!  slot k owns ids [k*STEP + 1, (k+1)*STEP), STEP = floor(u32::MAX / 128) = 33 554 431
//! ```

use crate::limits::{MAX_FRAME_BYTES, RELAY_PROLOGUE_BYTES, RELAY_SLOT_STEP_IDS, RELAY_SLOTS};

/// A half-open range of correlation ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    /// First id (inclusive).
    pub start: u32,
    /// End (exclusive).
    pub end_exclusive: u32,
}

impl IdRange {
    /// Whether `id` is in the range.
    pub const fn contains(self, id: u32) -> bool {
        id >= self.start && id < self.end_exclusive
    }

    /// The first id a client may use: `max(start, 1)`.
    pub const fn first_usable(self) -> u32 {
        if self.start == 0 { 1 } else { self.start }
    }
}

/// One of the 128 relay client slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

/// The runtime's private workload channel (PROTOCOL.md §4.1): `core.workload.freeze`/`thaw`,
/// their replies and `core.workload.transport.credit`. In no slot; the relay intercepts the
/// guest's frames on it and hands them to the host, never to a client.
pub const WORKLOAD_CHANNEL_ID: u32 = u32::MAX;

impl Slot {
    /// Slot `index`, if `index < 128`.
    pub const fn new(index: u32) -> Option<Slot> {
        if index < RELAY_SLOTS { Some(Slot(index as u8)) } else { None }
    }

    /// The slot's index, 0..128.
    pub const fn index(self) -> u32 {
        self.0 as u32
    }

    /// The ids this slot owns.
    pub const fn range(self) -> IdRange {
        let k = self.0 as u32;
        IdRange { start: k * RELAY_SLOT_STEP_IDS + 1, end_exclusive: (k + 1) * RELAY_SLOT_STEP_IDS }
    }

    /// The slot owning `id`, or `None` for id 0, slot boundaries, the unassigned tail and
    /// `0xFFFFFFFF`.
    pub const fn of_id(id: u32) -> Option<Slot> {
        match Slot::new(id / RELAY_SLOT_STEP_IDS) {
            Some(slot) if slot.range().contains(id) => Some(slot),
            _ => None,
        }
    }

    /// The slot whose range is exactly `range`, if any (a canonical slot range).
    pub const fn of_range(range: IdRange) -> Option<Slot> {
        match Slot::of_id(range.start) {
            Some(slot)
                if slot.range().start == range.start
                    && slot.range().end_exclusive == range.end_exclusive =>
            {
                Some(slot)
            }
            _ => None,
        }
    }

    /// All slots in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..RELAY_SLOTS).map(|k| Slot(k as u8))
    }
}

/// The 8-byte relay prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prologue {
    /// The client's id range.
    pub range: IdRange,
}

/// What a client reads in the first 8 bytes of a relay connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrologueKind {
    /// Current relay: `[start][end_exclusive]`, then the ready frame.
    Current(IdRange),
    /// Pre-0.5 relay: `[offset]` followed directly by the ready frame, whose length prefix is the
    /// second word. Its ids are `[offset + 1, offset + u32::MAX / 16)` and it expects `v = 1`.
    Legacy {
        /// The id offset.
        offset: u32,
        /// The ready frame's length prefix (already read).
        ready_len: u32,
    },
}

/// Why a prologue is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrologueError {
    /// `start >= end_exclusive`.
    #[error("relay prologue range [{start}, {end_exclusive}) is empty")]
    EmptyRange {
        /// Start.
        start: u32,
        /// End.
        end_exclusive: u32,
    },
}

impl Prologue {
    /// The prologue for `slot`.
    pub const fn for_slot(slot: Slot) -> Prologue {
        Prologue { range: slot.range() }
    }

    /// The 8 wire bytes.
    pub fn to_bytes(self) -> [u8; RELAY_PROLOGUE_BYTES] {
        let mut out = [0u8; RELAY_PROLOGUE_BYTES];
        out[..4].copy_from_slice(&self.range.start.to_be_bytes());
        out[4..].copy_from_slice(&self.range.end_exclusive.to_be_bytes());
        out
    }

    /// Interprets the first 8 bytes of a relay connection as a client does, including the
    /// legacy-relay detection: legacy iff `5 <= b <= 4 MiB` and (`a == 0` or `a >= b`).
    pub fn parse(bytes: [u8; RELAY_PROLOGUE_BYTES]) -> Result<PrologueKind, PrologueError> {
        let a = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let b = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if (5..=MAX_FRAME_BYTES as u32).contains(&b) && (a == 0 || a >= b) {
            return Ok(PrologueKind::Legacy { offset: a, ready_len: b });
        }
        if a >= b {
            return Err(PrologueError::EmptyRange { start: a, end_exclusive: b });
        }
        Ok(PrologueKind::Current(IdRange { start: a, end_exclusive: b }))
    }
}

/// Hands out a client's correlation ids: upwards from `max(start, 1)`, never reused, never
/// outside the range.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    range: IdRange,
    next: u32,
}

impl IdAllocator {
    /// An allocator over `range`.
    pub const fn new(range: IdRange) -> IdAllocator {
        IdAllocator { range, next: range.first_usable() }
    }

    /// The next unused id, or `None` once the range is exhausted.
    pub fn next_id(&mut self) -> Option<u32> {
        if self.next >= self.range.end_exclusive {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_match_the_reference_vectors() {
        let r = |k| Slot::new(k).unwrap().range();
        assert_eq!(r(0), IdRange { start: 1, end_exclusive: 33_554_431 });
        assert_eq!(r(1), IdRange { start: 33_554_432, end_exclusive: 67_108_862 });
        assert_eq!(r(2), IdRange { start: 67_108_863, end_exclusive: 100_663_293 });
        assert_eq!(r(127), IdRange { start: 4_261_412_738, end_exclusive: 4_294_967_168 });
        assert_eq!(Slot::new(128), None);
    }

    #[test]
    fn slot_of_id_excludes_reserved_ids() {
        assert_eq!(Slot::of_id(0), None);
        assert_eq!(Slot::of_id(1), Slot::new(0));
        assert_eq!(Slot::of_id(RELAY_SLOT_STEP_IDS), None);
        assert_eq!(Slot::of_id(RELAY_SLOT_STEP_IDS + 1), Slot::new(1));
        assert_eq!(Slot::of_id(4_294_967_167), Slot::new(127));
        assert_eq!(Slot::of_id(4_294_967_168), None);
        assert_eq!(Slot::of_id(u32::MAX), None);
        for slot in Slot::all() {
            let range = slot.range();
            assert_eq!(Slot::of_id(range.start), Some(slot));
            assert_eq!(Slot::of_id(range.end_exclusive - 1), Some(slot));
            assert_eq!(Slot::of_range(range), Some(slot));
        }
        assert_eq!(Slot::of_range(IdRange { start: 1, end_exclusive: 5 }), None);
    }

    #[test]
    fn prologue_for_slot_0_is_the_reference_bytes() {
        let p = Prologue::for_slot(Slot::new(0).unwrap());
        assert_eq!(p.to_bytes(), [0, 0, 0, 1, 0x01, 0xff, 0xff, 0xff]);
        assert_eq!(Prologue::parse(p.to_bytes()), Ok(PrologueKind::Current(p.range)));
    }

    #[test]
    fn every_slot_prologue_parses_as_current() {
        for slot in Slot::all() {
            let p = Prologue::for_slot(slot);
            assert_eq!(Prologue::parse(p.to_bytes()), Ok(PrologueKind::Current(slot.range())));
        }
    }

    #[test]
    fn legacy_prologue_is_detected() {
        // offset 0 followed by a ready frame of length 0x46.
        let bytes = [0, 0, 0, 0, 0, 0, 0, 0x46];
        assert_eq!(Prologue::parse(bytes), Ok(PrologueKind::Legacy { offset: 0, ready_len: 0x46 }));
    }

    #[test]
    fn empty_range_is_rejected() {
        // Not legacy (the second word is above 4 MiB), and start >= end.
        let bytes = [0x02, 0, 0, 0, 0x01, 0, 0, 0];
        assert!(matches!(Prologue::parse(bytes), Err(PrologueError::EmptyRange { .. })));
    }

    #[test]
    fn allocator_starts_at_one_and_stops_at_the_end() {
        let mut ids = IdAllocator::new(IdRange { start: 0, end_exclusive: 3 });
        assert_eq!((ids.next_id(), ids.next_id(), ids.next_id()), (Some(1), Some(2), None));
    }
}
