//! Payloads of filesystem sessions (PROTOCOL.md §6.3, §9).
//!
//! `FsOp` and `FsResponseData` are externally tagged with PascalCase variant names
//! (`{"OpenFile": {...}}`, `{"Handle": 1}`), exactly as the reference encodes them.

use serde::{Deserialize, Serialize};

use crate::payload::bulk::BulkOffer;

/// `core.fs.request`: one filesystem operation (always a session start, even a one-shot stat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRequest {
    /// The operation.
    pub op: FsOp,
    /// A raw-bulk offer, valid only with `Read` and `Write` (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkOffer>,
}

/// The filesystem operations of PROTOCOL.md §9.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsOp {
    /// Canonicalize a path (a missing leaf is joined to the canonical parent).
    RealPath {
        /// The path.
        path: String,
    },
    /// stat or lstat.
    Stat {
        /// The path.
        path: String,
        /// stat (true) or lstat (false).
        follow_symlink: bool,
    },
    /// Change size, mode, owner and times.
    SetStat {
        /// The path.
        path: String,
        /// Follow a final symlink.
        follow_symlink: bool,
        /// What to change.
        attrs: FsSetAttrs,
    },
    /// List a whole directory.
    List {
        /// The directory.
        path: String,
    },
    /// Read a symlink's target.
    ReadLink {
        /// The symlink.
        path: String,
    },
    /// Create a symlink.
    Symlink {
        /// What the link points to.
        target: String,
        /// Where the link is created.
        link_path: String,
        /// Filesystem identity to create it as; `None` = root.
        #[serde(default)]
        user: Option<String>,
    },
    /// Create a directory and its parents.
    Mkdir {
        /// The directory.
        path: String,
        /// Mode applied after creation.
        #[serde(default)]
        mode: Option<u32>,
        /// Filesystem identity to create it as.
        #[serde(default)]
        user: Option<String>,
    },
    /// Unlink a file.
    Remove {
        /// The file.
        path: String,
    },
    /// Remove a directory.
    RemoveDir {
        /// The directory.
        path: String,
        /// Remove its contents too.
        recursive: bool,
    },
    /// Copy a file.
    Copy {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Rename a path.
    Rename {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Open a file; answers `Handle`.
    OpenFile {
        /// The file.
        path: String,
        /// How to open it.
        options: FsOpenOptions,
    },
    /// Open a directory for `ReadDir`; answers `Handle`.
    OpenDir {
        /// The directory.
        path: String,
    },
    /// Close a handle (flushes files).
    CloseHandle {
        /// The handle.
        handle: u64,
    },
    /// Stream a file's bytes from `offset` (to EOF when `len` is `None`).
    Read {
        /// The handle.
        handle: u64,
        /// Start offset.
        offset: u64,
        /// Bytes to read; `None` reads to EOF.
        #[serde(default)]
        len: Option<u64>,
    },
    /// Stream bytes into a file at `offset`; `len`, when set, must match exactly.
    Write {
        /// The handle.
        handle: u64,
        /// Start offset.
        offset: u64,
        /// Exact length to be written.
        #[serde(default)]
        len: Option<u64>,
    },
    /// Next batch of directory entries (empty = end).
    ReadDir {
        /// The directory handle.
        handle: u64,
        /// Batch size (default 128, minimum 1).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// fstat a handle.
    FStat {
        /// The handle.
        handle: u64,
    },
    /// Change attributes through a handle.
    FSetStat {
        /// The handle.
        handle: u64,
        /// What to change.
        attrs: FsSetAttrs,
    },
}

impl FsOp {
    /// The variant's wire name, e.g. `"OpenFile"`.
    pub const fn name(&self) -> &'static str {
        match self {
            FsOp::RealPath { .. } => "RealPath",
            FsOp::Stat { .. } => "Stat",
            FsOp::SetStat { .. } => "SetStat",
            FsOp::List { .. } => "List",
            FsOp::ReadLink { .. } => "ReadLink",
            FsOp::Symlink { .. } => "Symlink",
            FsOp::Mkdir { .. } => "Mkdir",
            FsOp::Remove { .. } => "Remove",
            FsOp::RemoveDir { .. } => "RemoveDir",
            FsOp::Copy { .. } => "Copy",
            FsOp::Rename { .. } => "Rename",
            FsOp::OpenFile { .. } => "OpenFile",
            FsOp::OpenDir { .. } => "OpenDir",
            FsOp::CloseHandle { .. } => "CloseHandle",
            FsOp::Read { .. } => "Read",
            FsOp::Write { .. } => "Write",
            FsOp::ReadDir { .. } => "ReadDir",
            FsOp::FStat { .. } => "FStat",
            FsOp::FSetStat { .. } => "FSetStat",
        }
    }
}

/// Attributes to change; `None` leaves one unchanged. The encoder writes all six keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSetAttrs {
    /// Permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Owner.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Truncate or extend to this size.
    #[serde(default)]
    pub size: Option<u64>,
    /// Access time, Unix seconds.
    #[serde(default)]
    pub atime: Option<i64>,
    /// Modification time, Unix seconds.
    #[serde(default)]
    pub mtime: Option<i64>,
}

/// How to open a file. All six booleans are required on decode, as in the reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsOpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Append mode.
    pub append: bool,
    /// Create if missing.
    pub create: bool,
    /// Truncate on open.
    pub truncate: bool,
    /// Fail if it exists.
    pub create_new: bool,
    /// Mode for a created file.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Filesystem identity to open it as.
    #[serde(default)]
    pub user: Option<String>,
}

/// `core.fs.response`: the terminal result. All three keys are always written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsResponse {
    /// Success.
    pub ok: bool,
    /// `"<op>: <os error text>"` on failure.
    #[serde(default)]
    pub error: Option<String>,
    /// The result, for ops that return one.
    #[serde(default)]
    pub data: Option<FsResponseData>,
}

impl FsResponse {
    /// A success with optional data.
    pub fn ok(data: Option<FsResponseData>) -> FsResponse {
        FsResponse { ok: true, error: None, data }
    }

    /// A failure with its message.
    pub fn err(message: impl Into<String>) -> FsResponse {
        FsResponse { ok: false, error: Some(message.into()), data: None }
    }
}

/// Result data of a filesystem op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsResponseData {
    /// One entry (`Stat`, `FStat`).
    Stat(FsEntryInfo),
    /// Entries (`List`, `ReadDir`).
    List(Vec<FsEntryInfo>),
    /// A new handle (`OpenFile`, `OpenDir`).
    Handle(u64),
    /// A path (`RealPath`, `ReadLink`).
    Path(String),
}

/// One directory entry or stat result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntryInfo {
    /// The path (stat echoes the request; list gives the full child path).
    pub path: String,
    /// Entry kind.
    pub kind: FsEntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Full `st_mode`, file-type bits included.
    pub mode: u32,
    /// Same as `mtime`.
    #[serde(default)]
    pub modified: Option<i64>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time, Unix seconds.
    #[serde(default)]
    pub atime: Option<i64>,
    /// Modification time, Unix seconds.
    #[serde(default)]
    pub mtime: Option<i64>,
}

/// Kinds of filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsEntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else, or an entry that could not be stat'ed.
    Other,
}
