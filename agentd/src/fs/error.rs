//! Everything that can go wrong in the filesystem service, and the one place where a failure
//! becomes wire text (PROTOCOL.md §9.2).
//!
//! The wire carries no error codes, only `"<op prefix>: <Rust io::Error Display>"`, and clients
//! match on those strings, so each variant's `Display` is exactly the reference agent's text:
//!
//! ```text
//!  FsError::Io   { op: Stat, source }              "stat: No such file or directory (os error 2)"
//!  FsError::Step { op: SetStat, step: Chmod, .. }  "setstat: chmod: Operation not permitted (os error 1)"
//!  FsError::Handle { op: Read, NotOwner(3) }       "read: handle 3 is owned by a different relay client"
//! ```
//!
//! This module owns the error types and [`response`]; it does not decide which operation fails
//! with which error (that is `ops`, `handle_ops`, `attrs` and the streams).

use std::fmt;
use std::io;

use moat_protocol::payload::fs::{FsResponse, FsResponseData};

use crate::users::UserError;

use super::handles::HandleError;
use super::identity::IdentityError;

/// What a one-shot operation produces: optional response data, or the failure.
pub(crate) type OpResult = Result<Option<FsResponseData>, FsError>;

/// The operation prefix of an error message (PROTOCOL.md §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Stat,
    SetStat,
    ReadDir,
    ReadLink,
    Symlink,
    Mkdir,
    Chmod,
    Remove,
    RemoveDir,
    Copy,
    Rename,
    Open,
    OpenDir,
    Close,
    Read,
    Write,
    Seek,
    Flush,
    FStat,
    FSetStat,
    RealPath,
}

impl Op {
    /// The prefix as it appears on the wire.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Op::Stat => "stat",
            Op::SetStat => "setstat",
            Op::ReadDir => "readdir",
            Op::ReadLink => "readlink",
            Op::Symlink => "symlink",
            Op::Mkdir => "mkdir",
            Op::Chmod => "chmod",
            Op::Remove => "remove",
            Op::RemoveDir => "remove_dir",
            Op::Copy => "copy",
            Op::Rename => "rename",
            Op::Open => "open",
            Op::OpenDir => "opendir",
            Op::Close => "close",
            Op::Read => "read",
            Op::Write => "write",
            Op::Seek => "seek",
            Op::Flush => "flush",
            Op::FStat => "fstat",
            Op::FSetStat => "fsetstat",
            Op::RealPath => "realpath",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sub-step of a multi-step operation (`setstat`, `fsetstat`, `List`) that failed; it sits
/// between the op prefix and the OS text, as in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    OpenForTruncate,
    SetLen,
    LstatBeforeChmod,
    Chmod,
    Chown,
    Fchown,
    StatBeforeUtimensat,
    Utimensat,
    StatBeforeFutimens,
    Futimens,
    OpenDir,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::OpenForTruncate => "open for truncate",
            Step::SetLen => "set_len",
            Step::LstatBeforeChmod => "lstat before chmod",
            Step::Chmod => "chmod",
            Step::Chown => "chown",
            Step::Fchown => "fchown",
            Step::StatBeforeUtimensat => "stat before utimensat",
            Step::Utimensat => "utimensat",
            Step::StatBeforeFutimens => "stat before futimens",
            Step::Futimens => "futimens",
            Step::OpenDir => "opendir",
        })
    }
}

/// A failed filesystem operation. `Display` is the exact `error` text of the `ok:false`
/// response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FsError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io { op: Op, source: io::Error },
    /// One step of a multi-step operation failed.
    #[error("{op}: {step}: {source}")]
    Step { op: Op, step: Step, source: io::Error },
    /// Iterating an open directory failed (the reference's text has no colon after `readdir`).
    #[error("readdir {path}: {source}")]
    DirEntry { path: String, source: io::Error },
    /// The handle is unknown, foreign, or of the wrong kind.
    #[error("{op}: {source}")]
    Handle { op: Op, source: HandleError },
    /// The `user` of a creating operation does not resolve.
    #[error("{op}: {source}")]
    User { op: Op, source: UserError },
    /// The worker thread could not take the user's filesystem identity.
    #[error("{op}: {source}")]
    Identity { op: Op, source: IdentityError },
    /// Linux cannot chmod a symlink itself.
    #[error("setstat: chmod on symlink without following is not supported")]
    ChmodSymlink,
    /// A write's EOF arrived after a different number of bytes than it declared.
    #[error("write length mismatch: expected {expected}, wrote {written}")]
    LengthMismatch { expected: u64, written: u64 },
    /// `core.fs.data` for an id with no open write session.
    #[error("unknown write session: {0}")]
    UnknownWriteSession(u32),
    /// The host sent write data faster than the disk took it, past the session's queue bound.
    #[error("write: more than {max_bytes} bytes or {max_chunks} chunks queued ahead of the disk")]
    WriteBacklog { max_bytes: usize, max_chunks: usize },
    /// A `Read` or `Write` on an id that already carries a stream.
    #[error("{op}: id {id} already has a stream in flight")]
    StreamInFlight { op: Op, id: u32 },
    /// A raw-bulk offer on an operation other than `Read` or `Write`.
    #[error("raw bulk is only valid for streaming reads and writes")]
    BulkNotAStream,
    /// A raw-bulk offer on a request whose `v` is below 8.
    #[error("raw bulk offer requires protocol generation 8")]
    BulkNeedsGeneration8,
    /// A raw-bulk offer that breaks PROTOCOL.md §11.2.
    #[error("invalid raw bulk offer: {0}")]
    BulkOffer(&'static str),
    /// The host broke the bulk rules; the agent sent `core.bulk.cancel` first.
    #[error("{op}: {breach}")]
    BulkBreach { op: Op, breach: super::bulk::Breach },
    /// The host cancelled the transfer with `core.bulk.cancel`.
    #[error("{op}: bulk transfer cancelled by the host: {message}")]
    BulkCancelled { op: Op, message: String },
    /// The blocking worker panicked or was cancelled.
    #[error("{op}: worker task failed: {source}")]
    Task { op: Op, source: tokio::task::JoinError },
}

impl FsError {
    /// An `io::Error` under `op`'s prefix.
    pub(crate) fn io(op: Op) -> impl FnOnce(io::Error) -> FsError {
        move |source| FsError::Io { op, source }
    }

    /// An `io::Error` of `step` under `op`'s prefix.
    pub(crate) fn step(op: Op, step: Step) -> impl FnOnce(io::Error) -> FsError {
        move |source| FsError::Step { op, step, source }
    }

    /// A handle-table refusal under `op`'s prefix.
    pub(crate) fn handle(op: Op) -> impl FnOnce(HandleError) -> FsError {
        move |source| FsError::Handle { op, source }
    }

    /// A positional read/write failure. `pread`/`pwrite` fail with `ESPIPE` exactly where the
    /// reference's `lseek` before each transfer does, so that case keeps the reference's `seek`
    /// prefix.
    pub(crate) fn positional(op: Op) -> impl FnOnce(io::Error) -> FsError {
        move |source| {
            let op = if source.raw_os_error() == Some(libc::ESPIPE) { Op::Seek } else { op };
            FsError::Io { op, source }
        }
    }
}

/// The terminal `core.fs.response` for an operation's outcome: the only place a failure turns
/// into wire text.
pub(crate) fn response(result: OpResult) -> FsResponse {
    match result {
        Ok(data) => FsResponse::ok(data),
        Err(err) => FsResponse::err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enoent() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOENT)
    }

    #[test]
    fn io_error_text_is_prefix_and_os_display() {
        let err = FsError::io(Op::RemoveDir)(enoent());
        assert_eq!(err.to_string(), "remove_dir: No such file or directory (os error 2)");
    }

    #[test]
    fn step_error_text_nests_the_step() {
        let err = FsError::step(Op::SetStat, Step::OpenForTruncate)(enoent());
        assert_eq!(
            err.to_string(),
            "setstat: open for truncate: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn espipe_from_positional_io_reports_seek() {
        let err = FsError::positional(Op::Read)(io::Error::from_raw_os_error(libc::ESPIPE));
        assert_eq!(err.to_string(), "seek: Illegal seek (os error 29)");
        let err = FsError::positional(Op::Read)(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(err.to_string(), "read: Input/output error (os error 5)");
    }

    #[test]
    fn response_carries_the_error_text_and_no_data() {
        let resp = response(Err(FsError::LengthMismatch { expected: 4, written: 3 }));
        assert!(!resp.ok);
        assert_eq!(resp.error.as_deref(), Some("write length mismatch: expected 4, wrote 3"));
        assert_eq!(resp.data, None);
    }

    #[test]
    fn response_of_success_carries_data() {
        let resp = response(Ok(Some(FsResponseData::Handle(7))));
        assert_eq!(resp, FsResponse::ok(Some(FsResponseData::Handle(7))));
    }
}
