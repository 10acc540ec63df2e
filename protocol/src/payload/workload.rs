//! Payloads of the runtime's private workload channel (id `0xFFFFFFFF`) and agent input credit
//! (PROTOCOL.md §6.1, §15). moat's agent does not implement freezing; the types exist so every
//! generation-10 message decodes and re-encodes exactly.

use serde::{Deserialize, Serialize};

/// Cumulative transport position or absolute credit: `{control_bytes, control_frames,
/// bulk_bytes, bulk_frames}`. `core.workload.transport.credit` carries one of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadTransportCredit {
    /// Control-class wire bytes, length prefix included.
    pub control_bytes: u64,
    /// Control-class frames.
    pub control_frames: u64,
    /// Data-class wire bytes.
    pub bulk_bytes: u64,
    /// Data-class frames.
    pub bulk_frames: u64,
}

/// `core.workload.freeze`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFreeze {
    /// External mount tags whose writeback the guest must prove (always emitted).
    #[serde(default)]
    pub external_mount_tags: Vec<String>,
    /// Checkpoint attempt identity.
    pub attempt_id: String,
    /// Host input admitted before gating.
    pub host_input: WorkloadTransportCredit,
}

/// `core.workload.frozen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFrozen {
    /// Attempt identity now frozen.
    pub attempt_id: String,
    /// Bulk wire bytes the guest emitted before parking.
    pub guest_bulk_bytes_target: u64,
    /// Absolute input limits captured with the boundary.
    pub input_credit: WorkloadTransportCredit,
    /// Whether external mounts were synced (always emitted).
    #[serde(default)]
    pub external_mounts_synced: bool,
}

/// `core.workload.thaw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadThaw {
    /// Attempt identity that established the freeze.
    pub attempt_id: String,
    /// How the workload resumes.
    pub mode: WorkloadThawMode,
}

/// How a frozen workload resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadThawMode {
    /// Continue the source.
    Continue,
    /// Activate a restored guest.
    Restore,
}

/// `core.workload.thawed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadThawed {
    /// Attempt identity now runnable.
    pub attempt_id: String,
}
