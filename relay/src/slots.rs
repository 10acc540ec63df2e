//! The relay's slot table (PROTOCOL.md §13.3, §13.6): each connecting client takes the lowest
//! free slot; a disconnected client's slot stays quarantined until the agent confirms it has
//! cleaned up that range, so ids of a dead client can never be confused with a new one's.

use moat_protocol::limits::{RELAY_SLOT_STEP_IDS, RELAY_SLOTS};
use moat_protocol::relay::Slot;

/// The relay-private id of `slot`'s disconnect barrier ping: the boundary id just past its
/// range, which no client is ever given (PROTOCOL.md §13.3).
pub(crate) fn barrier_id(slot: Slot) -> u32 {
    slot.range().end_exclusive
}

/// The slot whose barrier id `id` is, if it is one.
pub(crate) fn barrier_slot(id: u32) -> Option<Slot> {
    let slot = Slot::new((id / RELAY_SLOT_STEP_IDS).checked_sub(1)?)?;
    (barrier_id(slot) == id).then_some(slot)
}

/// The state of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Free for the next client.
    Free,
    /// Owned by a connected client.
    Leased,
    /// The client left; waiting for the agent's cleanup confirmation.
    Quarantined,
}

/// Why a slot operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// All 128 slots are leased or quarantined.
    #[error("all {RELAY_SLOTS} relay slots are in use")]
    Full,
    /// The slot is not in the state the operation needs.
    #[error("slot {slot} is not {expected}")]
    WrongState {
        /// The slot index.
        slot: u32,
        /// The state the operation needed.
        expected: &'static str,
    },
}

/// The 128 slots and their states.
#[derive(Debug, Clone)]
pub struct SlotTable {
    states: [SlotState; RELAY_SLOTS as usize],
}

impl Default for SlotTable {
    fn default() -> SlotTable {
        SlotTable { states: [SlotState::Free; RELAY_SLOTS as usize] }
    }
}

impl SlotTable {
    /// All slots free.
    pub fn new() -> SlotTable {
        SlotTable::default()
    }

    /// Leases the lowest free slot.
    pub fn lease(&mut self) -> Result<Slot, SlotError> {
        let index =
            self.states.iter().position(|s| *s == SlotState::Free).ok_or(SlotError::Full)?;
        self.states[index] = SlotState::Leased;
        Slot::new(index as u32).ok_or(SlotError::Full)
    }

    /// The client of `slot` disconnected: quarantine it until [`SlotTable::release`].
    pub fn quarantine(&mut self, slot: Slot) -> Result<(), SlotError> {
        self.transition(slot, SlotState::Leased, SlotState::Quarantined, "leased")
    }

    /// The agent confirmed cleanup of `slot`'s range: it is free again.
    pub fn release(&mut self, slot: Slot) -> Result<(), SlotError> {
        self.transition(slot, SlotState::Quarantined, SlotState::Free, "quarantined")
    }

    /// Whether `slot` is leased to a connected client.
    pub fn is_leased(&self, slot: Slot) -> bool {
        self.states[slot.index() as usize] == SlotState::Leased
    }

    fn transition(
        &mut self,
        slot: Slot,
        from: SlotState,
        to: SlotState,
        expected: &'static str,
    ) -> Result<(), SlotError> {
        let state = &mut self.states[slot.index() as usize];
        if *state != from {
            return Err(SlotError::WrongState { slot: slot.index(), expected });
        }
        *state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_slot_has_its_own_barrier_id_outside_every_range() {
        for slot in Slot::all() {
            let id = barrier_id(slot);
            assert_eq!(Slot::of_id(id), None, "{id} is a client id");
            assert_ne!(id, u32::MAX);
            assert_eq!(barrier_slot(id), Some(slot));
        }
        assert_eq!(barrier_slot(0), None);
        assert_eq!(barrier_slot(u32::MAX), None);
        assert_eq!(barrier_slot(1), None);
    }

    use super::*;

    #[test]
    fn lease_takes_the_lowest_free_slot() {
        let mut table = SlotTable::new();
        let a = table.lease().unwrap();
        let b = table.lease().unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        table.quarantine(a).unwrap();
        // Slot 0 is quarantined, not free: the next client gets slot 2.
        assert_eq!(table.lease().unwrap().index(), 2);
        table.release(a).unwrap();
        assert_eq!(table.lease().unwrap().index(), 0);
    }

    #[test]
    fn table_refuses_the_129th_client() {
        let mut table = SlotTable::new();
        for _ in 0..RELAY_SLOTS {
            table.lease().unwrap();
        }
        assert_eq!(table.lease(), Err(SlotError::Full));
    }

    #[test]
    fn release_requires_quarantine_first() {
        let mut table = SlotTable::new();
        let slot = table.lease().unwrap();
        assert!(matches!(table.release(slot), Err(SlotError::WrongState { .. })));
        assert!(table.is_leased(slot));
        table.quarantine(slot).unwrap();
        assert!(matches!(table.quarantine(slot), Err(SlotError::WrongState { .. })));
    }
}
