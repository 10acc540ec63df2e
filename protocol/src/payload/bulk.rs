//! Control payloads of generation-8 raw bulk transfers (PROTOCOL.md §6.5, §11). The raw records
//! themselves are in [`crate::bulk`].

use serde::{Deserialize, Serialize};

/// A raw-bulk offer carried in an opening request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkOffer {
    /// Record format (1).
    pub format: u8,
    /// Largest record payload the offerer accepts.
    pub max_record_payload: u32,
    /// Initial guest→host credit.
    pub guest_to_host_credit_limit: u64,
}

/// `core.bulk.accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkAccepted {
    /// 1 = filesystem, 2 = tcp.
    pub kind: u8,
    /// Bitmask: 0x01 host→guest, 0x02 guest→host.
    pub flows: u8,
    /// Record format (1).
    pub format: u8,
    /// Agreed largest record payload.
    pub max_record_payload: u32,
    /// Initial host→guest credit.
    pub host_to_guest_credit_limit: u64,
    /// Initial guest→host credit (echoes the offer).
    pub guest_to_host_credit_limit: u64,
}

/// `core.bulk.credit`: the receiver of a flow grants credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkCredit {
    /// 1 = filesystem, 2 = tcp.
    pub kind: u8,
    /// 1 = host→guest, 2 = guest→host.
    pub flow: u8,
    /// Bytes consumed so far.
    pub consumed_offset: u64,
    /// Absolute exclusive offset the sender may send up to.
    pub credit_limit: u64,
}

/// `core.bulk.finish`: the sender of a flow is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFinish {
    /// 1 = filesystem, 2 = tcp.
    pub kind: u8,
    /// 1 = host→guest, 2 = guest→host.
    pub flow: u8,
    /// Total bytes sent.
    pub final_offset: u64,
}

/// `core.bulk.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkCancel {
    /// 1 = filesystem, 2 = tcp.
    pub kind: u8,
    /// 1 caller_cancelled, 2 destination_io, 3 resource_limit, 4 transport_failure,
    /// 5 protocol_state.
    pub reason: u8,
    /// Diagnostic.
    pub message: String,
}
