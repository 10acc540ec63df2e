//! One client's generation-8 raw bulk operations, as the relay tracks them (PROTOCOL.md §13.4
//! rules 6 and 7, §11.2).
//!
//! ```text
//!  client fs.request {Read|Write, bulk} / tcp.connect {bulk} ─► open(id)
//!      id already active ─► disconnect     64 active ─► the relay answers the family's terminal
//!  guest  core.bulk.accepted on id ─► accepted(flows)
//!  client raw record on id ─► flow 1, same kind, accepted with flow 1 ─► forward
//!                             id recently completed ─► discard quietly      else ─► disconnect
//!  guest  terminal frame on id ─► end(id): completed
//! ```
//!
//! This module owns the bookkeeping only; the router decides what a verdict does.

use std::collections::{HashMap, VecDeque};

use moat_protocol::{BulkFlow, BulkKind, BulkRecord};

use crate::limits::{MAX_ACTIVE_BULK_PER_CLIENT, REMEMBERED_COMPLETED_BULK_IDS};

/// The `flows` bit of the host→guest flow in `core.bulk.accepted`.
const HOST_TO_GUEST_BIT: u8 = 0x01;

/// A bulk operation of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BulkOp {
    kind: BulkKind,
    /// `core.bulk.accepted`'s `flows`, once the agent accepted.
    accepted_flows: Option<u8>,
}

/// Why a bulk frame from a client breaks §13.4 (the client is disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkViolation {
    /// A bulk-opening request on an id with an active bulk operation.
    #[error("a bulk offer on id {id}, which has an active bulk operation")]
    IdInUse {
        /// The id.
        id: u32,
    },
    /// A raw record that is not a valid record body.
    #[error("malformed raw bulk record on id {id}")]
    Malformed {
        /// The id.
        id: u32,
    },
    /// A raw record running guest to host.
    #[error("raw bulk record on id {id} has flow 2 (guest to host)")]
    WrongDirection {
        /// The id.
        id: u32,
    },
    /// A raw record with no accepted bulk operation of its kind on its id.
    #[error("raw bulk record on id {id} matches no accepted bulk operation of this client")]
    NoOperation {
        /// The id.
        id: u32,
    },
}

/// What to do with a client's raw record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordVerdict {
    /// Forward it.
    Forward,
    /// Drop it silently: its operation already completed.
    Discard,
}

/// What to do with a bulk-opening request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenVerdict {
    /// Registered; forward it.
    Opened,
    /// The client has [`MAX_ACTIVE_BULK_PER_CLIENT`] operations: answer with the family's
    /// terminal rejection, do not forward.
    TooMany,
}

/// One client's bulk operations.
#[derive(Debug, Default)]
pub struct ClientBulk {
    active: HashMap<u32, BulkOp>,
    /// Ids whose operation completed, oldest first, at most [`REMEMBERED_COMPLETED_BULK_IDS`].
    completed: VecDeque<u32>,
}

impl ClientBulk {
    /// A bulk-opening request of `kind` on `id`.
    pub fn open(&mut self, id: u32, kind: BulkKind) -> Result<OpenVerdict, BulkViolation> {
        if self.active.contains_key(&id) {
            return Err(BulkViolation::IdInUse { id });
        }
        if self.active.len() >= MAX_ACTIVE_BULK_PER_CLIENT {
            return Ok(OpenVerdict::TooMany);
        }
        self.active.insert(id, BulkOp { kind, accepted_flows: None });
        self.completed.retain(|done| *done != id);
        Ok(OpenVerdict::Opened)
    }

    /// The agent accepted the offer on `id` with `flows`.
    pub fn accepted(&mut self, id: u32, flows: u8) {
        if let Some(op) = self.active.get_mut(&id) {
            op.accepted_flows = Some(flows);
        }
    }

    /// A terminal frame ended whatever ran on `id`.
    pub fn end(&mut self, id: u32) {
        if self.active.remove(&id).is_some() {
            if self.completed.len() >= REMEMBERED_COMPLETED_BULK_IDS {
                self.completed.pop_front();
            }
            self.completed.push_back(id);
        }
    }

    /// Whether `id` has an active bulk operation.
    pub fn is_active(&self, id: u32) -> bool {
        self.active.contains_key(&id)
    }

    /// Active operations.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// A raw record from the client.
    pub fn record(&self, record: &BulkRecord) -> Result<RecordVerdict, BulkViolation> {
        let id = record.id;
        if record.flow != BulkFlow::HostToGuest {
            return Err(BulkViolation::WrongDirection { id });
        }
        match self.active.get(&id) {
            Some(op)
                if op.kind == record.kind
                    && op.accepted_flows.is_some_and(|f| f & HOST_TO_GUEST_BIT != 0) =>
            {
                Ok(RecordVerdict::Forward)
            }
            Some(_) => Err(BulkViolation::NoOperation { id }),
            None if self.completed.contains(&id) => Ok(RecordVerdict::Discard),
            None => Err(BulkViolation::NoOperation { id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(id: u32, kind: BulkKind, flow: BulkFlow) -> BulkRecord {
        BulkRecord { id, kind, flow, offset: 0, payload: Bytes::from_static(b"x") }
    }

    #[test]
    fn records_pass_only_after_acceptance_of_the_host_to_guest_flow() {
        let mut bulk = ClientBulk::default();
        assert_eq!(bulk.open(5, BulkKind::Filesystem), Ok(OpenVerdict::Opened));
        let r = record(5, BulkKind::Filesystem, BulkFlow::HostToGuest);
        assert_eq!(bulk.record(&r), Err(BulkViolation::NoOperation { id: 5 }), "not accepted");
        bulk.accepted(5, 0x02);
        assert_eq!(bulk.record(&r), Err(BulkViolation::NoOperation { id: 5 }), "a read");
        bulk.accepted(5, 0x01);
        assert_eq!(bulk.record(&r), Ok(RecordVerdict::Forward));
        let tcp = record(5, BulkKind::Tcp, BulkFlow::HostToGuest);
        assert_eq!(bulk.record(&tcp), Err(BulkViolation::NoOperation { id: 5 }), "wrong kind");
        let back = record(5, BulkKind::Filesystem, BulkFlow::GuestToHost);
        assert_eq!(bulk.record(&back), Err(BulkViolation::WrongDirection { id: 5 }));
    }

    #[test]
    fn records_for_a_completed_operation_are_discarded_and_others_refused() {
        let mut bulk = ClientBulk::default();
        bulk.open(5, BulkKind::Filesystem).unwrap();
        bulk.accepted(5, 0x01);
        bulk.end(5);
        let r = record(5, BulkKind::Filesystem, BulkFlow::HostToGuest);
        assert_eq!(bulk.record(&r), Ok(RecordVerdict::Discard));
        let other = record(6, BulkKind::Filesystem, BulkFlow::HostToGuest);
        assert_eq!(bulk.record(&other), Err(BulkViolation::NoOperation { id: 6 }));
    }

    #[test]
    fn an_active_id_cannot_open_again_and_the_65th_is_too_many() {
        let mut bulk = ClientBulk::default();
        for id in 0..MAX_ACTIVE_BULK_PER_CLIENT as u32 {
            assert_eq!(bulk.open(id, BulkKind::Tcp), Ok(OpenVerdict::Opened));
        }
        assert_eq!(bulk.open(0, BulkKind::Tcp), Err(BulkViolation::IdInUse { id: 0 }));
        assert_eq!(bulk.open(1000, BulkKind::Tcp), Ok(OpenVerdict::TooMany));
        bulk.end(0);
        assert_eq!(bulk.open(1000, BulkKind::Tcp), Ok(OpenVerdict::Opened));
    }
}
