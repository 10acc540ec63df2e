//! `core.bootstrap`: the one-shot sandbox configuration the host sends before anything else
//! (PROTOCOL.md §6.1, §7.1).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::payload::core::is_false;
use crate::payload::exec::{ExecLimits, ExecRlimit};

/// The sandbox configuration. Empty collections and `None`s are omitted on encode, except
/// `security_profile`, which is always written: an empty bootstrap is `{security_profile:"default"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestBootstrap {
    /// The host promises to acknowledge init failures (omitted when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub init_failure_ack: bool,
    /// Block-device root assembly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_root: Option<BlockRoot>,
    /// Shared-directory mounts by tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dir_mounts: Vec<DirMount>,
    /// Single-file mounts by tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_mounts: Vec<FileMount>,
    /// Block-device mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_mounts: Vec<DiskMount>,
    /// tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs_mounts: Vec<TmpfsMount>,
    /// Hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Name of the host inside the guest's hosts file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_alias: Option<String>,
    /// Network interface configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Sandbox-wide resource limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<ExecRlimit>,
    /// Default exec user (`USER[:GROUP]` or `UID[:GID]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Default exec working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cwd: Option<String>,
    /// Environment inherited by every exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_env: Vec<EnvVar>,
    /// In-guest security profile (always written).
    #[serde(default)]
    pub security_profile: SecurityProfile,
    /// Hand PID 1 to another init after boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_init: Option<HandoffInit>,
    /// Authoritative exec flow-control policy (echoed in ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_limits: Option<ExecLimits>,
}

/// How the root filesystem is assembled from block devices (internally tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BlockRoot {
    /// One filesystem image as the root.
    DiskImage {
        /// Guest device path.
        device: String,
        /// Filesystem type; `None` probes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fstype: Option<String>,
    },
    /// An EROFS lower with a writable overlay upper.
    OciErofs {
        /// Lower device path.
        lower: String,
        /// Writable upper.
        upper: BlockRootUpper,
    },
}

/// Writable upper of an [`BlockRoot::OciErofs`] root (internally tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BlockRootUpper {
    /// A block device.
    Device {
        /// Device path.
        device: String,
        /// Filesystem type.
        fstype: String,
    },
    /// RAM-backed.
    Tmpfs {
        /// Size cap in MiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_mib: Option<u32>,
    },
}

/// Mount flags. All four are always written; each defaults to false on decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountFlags {
    /// Read-only.
    #[serde(default)]
    pub readonly: bool,
    /// No exec.
    #[serde(default)]
    pub noexec: bool,
    /// Ignore set-id bits.
    #[serde(default)]
    pub nosuid: bool,
    /// No device nodes.
    #[serde(default)]
    pub nodev: bool,
}

/// A shared directory mounted by tag (virtiofs in a VM; a bind in the namespace backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMount {
    /// Share tag.
    pub tag: String,
    /// Absolute guest path.
    pub guest_path: String,
    /// Mount flags.
    #[serde(default)]
    pub flags: MountFlags,
}

/// A single file mounted from a tagged share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    /// Share tag.
    pub tag: String,
    /// File name inside the share.
    pub filename: String,
    /// Absolute guest path.
    pub guest_path: String,
    /// Mount flags.
    #[serde(default)]
    pub flags: MountFlags,
}

/// A block device mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMount {
    /// Device id.
    pub id: String,
    /// Absolute guest path.
    pub guest_path: String,
    /// Filesystem type; `None` probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Mount flags.
    #[serde(default)]
    pub flags: MountFlags,
}

/// A tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute guest path.
    pub path: String,
    /// Size cap in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u32>,
    /// Mode of the mount's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Mount flags.
    #[serde(default)]
    pub flags: MountFlags,
}

/// Guest network configuration. Addresses are arrays of integers on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Interface name.
    pub interface: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u16,
    /// IPv4 configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Config>,
    /// IPv6 configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Config>,
}

/// IPv4 address configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Config {
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Ipv4Addr>,
}

/// IPv6 address configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Config {
    /// Address.
    pub address: Ipv6Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway.
    pub gateway: Ipv6Addr,
    /// DNS resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Ipv6Addr>,
}

/// One environment entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
}

/// In-guest security profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProfile {
    /// Normal guest-root behaviour.
    #[default]
    Default,
    /// Restricted mount and process privileges.
    Restricted,
}

/// Hand PID 1 to another init once the agent is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffInit {
    /// Init path, or `"auto"`.
    pub cmd: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}
