//! Payloads of the core lifecycle messages: boot handshake, ready, liveness, errors, relay notices
//! (PROTOCOL.md §6.1).
//!
//! Field order is the encoder's order; optional fields follow the reference's emit rules ("emit:
//! omit" fields carry `skip_serializing_if`, "emit: null" fields are plain `Option`s).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::payload::exec::ExecLimits;

/// `{}`: the payload of `core.ping`, `core.pong`, `core.touch`, `core.tcp.connected`,
/// `core.tcp.eof`, `core.tcp.close` and `core.tcp.closed`. Encodes as `a0`; `null` does not decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `core.ready`: the agent announces it is serving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Ready {
    /// Guest CLOCK_BOOTTIME nanoseconds at the start of the agent's `main`.
    pub boot_time_ns: u64,
    /// Nanoseconds the agent spent in init (mounting, configuration).
    pub init_time_ns: u64,
    /// Guest CLOCK_BOOTTIME nanoseconds just before sending.
    pub ready_time_ns: u64,
    /// Agent package version; empty means unknown (omitted when empty).
    #[serde(default)]
    pub agent_version: String,
    /// Bound dual-port bulk lane, if any.
    #[serde(default)]
    pub bulk_transport: Option<BulkTransportReady>,
    /// Relay range-lease capability (`MSBL` records).
    #[serde(default)]
    pub relay_lease: Option<FormatCapability>,
    /// Local shared-memory capability; added by a Unix relay, never by the agent.
    #[serde(default)]
    pub local_transport: Option<FormatCapability>,
    /// Workload transport barrier contract version.
    #[serde(default)]
    pub workload_transport_barrier_version: Option<u8>,
    /// Exec flow-control policy (generation 10).
    #[serde(default)]
    pub exec_limits: Option<ExecLimits>,
    /// Per-connection exec-control side channel, added by the relay. When present the payload is
    /// encoded as an indefinite-length map, as the reference's flattened relay extension is.
    #[serde(default)]
    pub exec_control: Option<ExecControl>,
}

impl Serialize for Ready {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let present = 3
            + usize::from(!self.agent_version.is_empty())
            + usize::from(self.bulk_transport.is_some())
            + usize::from(self.relay_lease.is_some())
            + usize::from(self.local_transport.is_some())
            + usize::from(self.workload_transport_barrier_version.is_some())
            + usize::from(self.exec_limits.is_some());
        // The reference adds `exec_control` through a flattened wrapper, which serde writes as a
        // map of unknown length: CBOR `bf ... ff`.
        let len = if self.exec_control.is_some() { None } else { Some(present) };
        let mut map = serializer.serialize_map(len)?;
        map.serialize_entry("boot_time_ns", &self.boot_time_ns)?;
        map.serialize_entry("init_time_ns", &self.init_time_ns)?;
        map.serialize_entry("ready_time_ns", &self.ready_time_ns)?;
        if !self.agent_version.is_empty() {
            map.serialize_entry("agent_version", &self.agent_version)?;
        }
        if let Some(v) = &self.bulk_transport {
            map.serialize_entry("bulk_transport", v)?;
        }
        if let Some(v) = &self.relay_lease {
            map.serialize_entry("relay_lease", v)?;
        }
        if let Some(v) = &self.local_transport {
            map.serialize_entry("local_transport", v)?;
        }
        if let Some(v) = &self.workload_transport_barrier_version {
            map.serialize_entry("workload_transport_barrier_version", v)?;
        }
        if let Some(v) = &self.exec_limits {
            map.serialize_entry("exec_limits", v)?;
        }
        if let Some(v) = &self.exec_control {
            map.serialize_entry("exec_control", v)?;
        }
        map.end()
    }
}

/// `{max_format: u8}`: a capability advertised with the highest record format it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatCapability {
    /// Highest supported record format.
    pub max_format: u8,
}

/// `Ready.bulk_transport`: the dual-port bulk lane the agent bound at boot (PROTOCOL.md §14.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkTransportReady {
    /// Transport profile, `"dual-port-v1"`.
    pub profile: String,
    /// Console port name, `"agent-bulk"`.
    pub port: String,
    /// The 16-byte connection id from the binding hello (an array of integers on the wire).
    pub connection_id: [u8; 16],
}

/// `Ready.exec_control`: the relay's per-connection exec-control side channel (PROTOCOL.md §13.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecControl {
    /// Side-channel contract version (1).
    pub version: u8,
    /// Path of the host-control socket.
    pub endpoint: String,
    /// 16 random bytes naming this client connection.
    pub connection: [u8; 16],
}

/// `core.init.resolved`: facts the agent resolved during init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResolved {
    /// The default exec user.
    pub default_user: ResolvedUser,
}

/// A numeric user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// `core.init.ack`: the host consumed the init context (or saved an init failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitAck {
    /// True only when acknowledging a reported init failure (omitted when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub failure: bool,
}

/// `core.clock.sync`: step the guest's CLOCK_REALTIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSync {
    /// Host Unix time in nanoseconds.
    pub unix_time_nanos: u64,
}

/// `core.touched`: reply to `core.touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    /// Activity sequence after the touch was recorded.
    pub activity_seq: u64,
}

/// `core.relay.client.disconnected`: a relay client went away; release its id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayClientDisconnected {
    /// First id of the client's slot range.
    pub id_start: u32,
    /// Exclusive end of the client's slot range.
    pub id_end_exclusive: u32,
    /// Lease incarnation; absent for unleased (legacy) peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<[u8; 16]>,
}

/// `core.error`: a recoverable protocol error on one correlation id (terminal for that id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreError {
    /// Machine-readable category.
    pub kind: CoreErrorKind,
    /// Human-readable diagnostic.
    pub message: String,
    /// Wire name of the message involved, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offending_type: Option<String>,
    /// Typed reason for a boot failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_failure: Option<InitFailureReason>,
    /// Workload freeze/thaw failure detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_failure: Option<WorkloadFailure>,
}

/// `core.error` kinds. Unknown strings fail to decode, as in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreErrorKind {
    /// Guest initialization failed before ready.
    InitializationFailed,
    /// The envelope could not be decoded.
    MalformedMessage,
    /// The message type is unknown to, or not accepted by, the peer.
    UnsupportedMessageType,
    /// The message needs a newer generation than the peer speaks.
    UnsupportedProtocolGeneration,
    /// The flags byte does not match the message type.
    InvalidFlags,
    /// The payload did not decode or failed validation.
    InvalidPayload,
    /// The id names an unknown, closed or incompatible session.
    InvalidSession,
    /// The request is understood but the capability is not available.
    CapabilityUnavailable,
}

impl CoreErrorKind {
    /// The wire string, e.g. `"invalid_flags"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CoreErrorKind::InitializationFailed => "initialization_failed",
            CoreErrorKind::MalformedMessage => "malformed_message",
            CoreErrorKind::UnsupportedMessageType => "unsupported_message_type",
            CoreErrorKind::UnsupportedProtocolGeneration => "unsupported_protocol_generation",
            CoreErrorKind::InvalidFlags => "invalid_flags",
            CoreErrorKind::InvalidPayload => "invalid_payload",
            CoreErrorKind::InvalidSession => "invalid_session",
            CoreErrorKind::CapabilityUnavailable => "capability_unavailable",
        }
    }
}

/// Typed boot failure reasons; strings this crate does not know decode as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitFailureReason {
    /// The configured user does not exist in the sandbox.
    UserNotFound,
    /// The configured group does not exist in the sandbox.
    GroupNotFound,
    /// A reason from a newer peer.
    #[serde(other)]
    Unknown,
}

/// `core.error.workload_failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFailure {
    /// The freeze/thaw attempt that failed.
    pub attempt_id: String,
    /// What the failure means for the workload.
    pub disposition: WorkloadFailureDisposition,
}

/// Workload failure dispositions; unknown strings decode as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadFailureDisposition {
    /// No freezer exists; nothing was frozen.
    Unavailable,
    /// A confirmed thaw is needed before the workload counts as running.
    RecoveryRequired,
    /// A disposition from a newer peer.
    #[serde(other)]
    Unknown,
}

/// `core.root_disk.prepare` and `core.root_disk.grow`: a target root filesystem size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDiskGrow {
    /// Desired size in bytes.
    pub size_bytes: u64,
}

/// `core.root_disk.state`: observed root filesystem and device sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDiskState {
    /// Filesystem size in bytes.
    pub filesystem_bytes: u64,
    /// Block device size in bytes.
    pub device_bytes: u64,
}

pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
