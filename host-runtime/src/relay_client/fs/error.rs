//! Why a filesystem operation in a sandbox failed, read from the agent's answer.
//!
//! The wire carries no error codes (PROTOCOL.md §9.2), only `"<op>: <io::Error Display>"`, e.g.
//! `"stat: No such file or directory (os error 2)"`. This module owns the one place that turns
//! that text into a typed error: the `(os error N)` suffix names the errno, and the errnos a
//! caller acts on get their own variant; any other failure keeps the agent's text.

use nix::errno::Errno;

/// A filesystem operation in the sandbox failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFsError {
    /// The path does not exist in the sandbox.
    #[error("{path}: no such file or directory in the sandbox")]
    NotFound {
        /// The guest path.
        path: String,
    },
    /// A file operation was given a directory.
    #[error("{path}: is a directory in the sandbox")]
    IsADirectory {
        /// The guest path.
        path: String,
    },
    /// A path component (or a directory operation's target) is not a directory.
    #[error("{path}: not a directory in the sandbox")]
    NotADirectory {
        /// The guest path.
        path: String,
    },
    /// The destination exists already.
    #[error("{path}: already exists in the sandbox")]
    AlreadyExists {
        /// The guest path.
        path: String,
    },
    /// A directory removed without `recursive` still has entries.
    #[error("{path}: directory not empty in the sandbox")]
    NotEmpty {
        /// The guest path.
        path: String,
    },
    /// The sandbox's user may not do this.
    #[error("{path}: permission denied in the sandbox")]
    PermissionDenied {
        /// The guest path.
        path: String,
    },
    /// A whole-file read found more bytes than the caller's limit.
    #[error("{path}: larger than the {max_bytes}-byte limit of a whole-file read (stream it)")]
    TooLarge {
        /// The guest path.
        path: String,
        /// The limit.
        max_bytes: u64,
    },
    /// A read as text found bytes that are not UTF-8.
    #[error("{path}: not UTF-8 text")]
    NotUtf8 {
        /// The guest path.
        path: String,
    },
    /// A write to a stream that has ended (it was finished, or an earlier write failed).
    #[error("{path}: the write stream has ended")]
    StreamEnded {
        /// The guest path.
        path: String,
    },
    /// Any other failure, with the agent's text (e.g. `"write: No space left on device (os
    /// error 28)"`).
    #[error("{path}: {message}")]
    Failed {
        /// The guest path.
        path: String,
        /// What the agent said.
        message: String,
    },
}

impl GuestFsError {
    /// The typed error for the agent's `message` about `path`.
    pub fn from_agent(path: &str, message: &str) -> GuestFsError {
        let path = path.to_owned();
        match errno_of(message) {
            Some(Errno::ENOENT) => GuestFsError::NotFound { path },
            Some(Errno::EISDIR) => GuestFsError::IsADirectory { path },
            Some(Errno::ENOTDIR) => GuestFsError::NotADirectory { path },
            Some(Errno::EEXIST) => GuestFsError::AlreadyExists { path },
            Some(Errno::ENOTEMPTY) => GuestFsError::NotEmpty { path },
            Some(Errno::EACCES | Errno::EPERM) => GuestFsError::PermissionDenied { path },
            _ => GuestFsError::Failed { path, message: message.to_owned() },
        }
    }
}

/// The errno of an `io::Error` Display's `(os error N)` suffix.
fn errno_of(message: &str) -> Option<Errno> {
    let start = message.rfind("(os error ")? + "(os error ".len();
    let number = message[start..].strip_suffix(')')?;
    number.parse().ok().map(Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_not_found() {
        let err = GuestFsError::from_agent("/x", "stat: No such file or directory (os error 2)");
        assert_eq!(err, GuestFsError::NotFound { path: "/x".into() });
    }

    #[test]
    fn a_directory_read_as_a_file_is_a_directory() {
        let err = GuestFsError::from_agent("/etc", "read: Is a directory (os error 21)");
        assert_eq!(err, GuestFsError::IsADirectory { path: "/etc".into() });
    }

    #[test]
    fn a_step_prefix_before_the_os_text_still_classifies() {
        let err =
            GuestFsError::from_agent("/f", "setstat: chmod: Operation not permitted (os error 1)");
        assert_eq!(err, GuestFsError::PermissionDenied { path: "/f".into() });
    }

    #[test]
    fn text_without_an_errno_keeps_the_agent_message() {
        let message = "read: handle 3 is owned by a different relay client";
        let err = GuestFsError::from_agent("/f", message);
        assert_eq!(err, GuestFsError::Failed { path: "/f".into(), message: message.into() });
        assert_eq!(err.to_string(), format!("/f: {message}"));
    }

    #[test]
    fn an_unlisted_errno_keeps_the_agent_message() {
        let message = "write: No space left on device (os error 28)";
        assert!(matches!(GuestFsError::from_agent("/f", message), GuestFsError::Failed { .. }));
    }
}
