//! Turning "the program could not start" into a `core.exec.failed` payload (PROTOCOL.md §6.2):
//! which [`ExecFailureKind`] an errno means at which stage, the errno's name, the message. Pure
//! functions; the errno values come from the parent's own calls or the child's report
//! ([`super::pre_exec::ChildFailure`]).

use moat_protocol::payload::exec::{ExecFailed, ExecFailureKind, ExecStdinError};
use nix::errno::Errno;

/// A step of starting a process, named on the wire as `ExecFailed.stage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Parsing `cmd`, `args` and `env` into C strings.
    Arguments,
    /// Resolving the user spec against `/etc/passwd` and `/etc/group`.
    ResolveUser,
    /// The parent's check that the working directory exists and is a directory.
    CheckCwd,
    /// Creating the stdio or report pipes.
    Pipe,
    /// Opening the PTY pair (master, unlock, slave).
    OpenPty,
    /// Registering a descriptor with the async runtime.
    Register,
    /// `fork`.
    Fork,
    /// In the child: `setsid`.
    Setsid,
    /// In the child: `ioctl(TIOCSCTTY)`.
    ControllingTty,
    /// In the child: `dup2` onto fds 0, 1, 2.
    Stdio,
    /// In the child: `chdir`.
    Chdir,
    /// In the child: `setrlimit` of the named resource (`"RLIMIT_NOFILE"`).
    Setrlimit(&'static str),
    /// In the child: `setgroups`.
    Setgroups,
    /// In the child: `setgid`.
    Setgid,
    /// In the child: `setuid`.
    Setuid,
    /// In the child: the `execve` loop over PATH.
    Exec,
    /// In the child: installing the security profile's seccomp filters.
    Seccomp,
    /// In the child: dropping capabilities from the bounding set.
    DropCapabilities,
}

impl Stage {
    /// The wire name, e.g. `"execvp"` or `"setrlimit(RLIMIT_NOFILE)"`.
    pub(crate) fn wire_name(&self) -> String {
        let name = match self {
            Stage::Arguments => "arguments",
            Stage::ResolveUser => "resolve_user",
            Stage::CheckCwd => "chdir",
            Stage::Pipe => "pipe",
            Stage::OpenPty => "posix_openpt",
            Stage::Register => "register",
            Stage::Fork => "fork",
            Stage::Setsid => "setsid",
            Stage::ControllingTty => "ioctl(TIOCSCTTY)",
            Stage::Stdio => "dup2",
            Stage::Chdir => "chdir",
            Stage::Setrlimit(resource) => return format!("setrlimit({resource})"),
            Stage::Setgroups => "setgroups",
            Stage::Setgid => "setgid",
            Stage::Setuid => "setuid",
            Stage::Exec => "execvp",
            Stage::Seccomp => "seccomp",
            Stage::DropCapabilities => "prctl(PR_CAPBSET_DROP)",
        };
        name.to_owned()
    }
}

/// The failure kind for `errno` at `stage`; `tty` says whether the session uses a PTY.
pub(crate) fn classify(stage: &Stage, errno: Option<Errno>, tty: bool) -> ExecFailureKind {
    match stage {
        Stage::Arguments => ExecFailureKind::BadArgs,
        Stage::ResolveUser | Stage::Setgroups | Stage::Setgid | Stage::Setuid => {
            ExecFailureKind::UserSetupFailed
        }
        Stage::CheckCwd | Stage::Chdir => ExecFailureKind::BadCwd,
        Stage::OpenPty | Stage::ControllingTty => ExecFailureKind::PtySetupFailed,
        Stage::Stdio if tty => ExecFailureKind::PtySetupFailed,
        Stage::Exec => match errno {
            Some(Errno::ENOENT | Errno::ENOTDIR) => ExecFailureKind::NotFound,
            Some(Errno::EACCES | Errno::EPERM) => ExecFailureKind::PermissionDenied,
            Some(Errno::ENOEXEC) => ExecFailureKind::NotExecutable,
            Some(Errno::E2BIG) => ExecFailureKind::BadArgs,
            Some(Errno::ENOMEM) => ExecFailureKind::OutOfMemory,
            _ => ExecFailureKind::Other,
        },
        Stage::Fork => match errno {
            Some(Errno::EAGAIN) => ExecFailureKind::ResourceLimit,
            Some(Errno::ENOMEM) => ExecFailureKind::OutOfMemory,
            _ => ExecFailureKind::Other,
        },
        Stage::Pipe
        | Stage::Register
        | Stage::Setsid
        | Stage::Stdio
        | Stage::Setrlimit(_)
        | Stage::Seccomp
        | Stage::DropCapabilities => ExecFailureKind::Other,
    }
}

/// The name of an errno (`"ENOENT"`), or `None` for a number this platform does not know.
pub(crate) fn errno_name(errno: Errno) -> Option<String> {
    match errno {
        Errno::UnknownErrno => None,
        known => Some(format!("{known:?}")),
    }
}

/// A complete `core.exec.failed` payload for a failure at `stage`.
pub(crate) fn failed(stage: Stage, errno: Option<Errno>, tty: bool, what: &str) -> ExecFailed {
    let message = match errno {
        Some(errno) => format!("{what}: {} (os error {})", errno.desc(), errno as i32),
        None => what.to_owned(),
    };
    ExecFailed {
        kind: classify(&stage, errno, tty),
        errno: errno.map(|e| e as i32),
        errno_name: errno.and_then(errno_name),
        message,
        stage: Some(stage.wire_name()),
    }
}

/// A `core.exec.stdin.error` payload for a failed write into the child.
pub(crate) fn stdin_write_error(err: &std::io::Error) -> ExecStdinError {
    let errno = err.raw_os_error();
    ExecStdinError {
        errno,
        errno_name: errno.map(Errno::from_raw).and_then(errno_name),
        message: format!("writing stdin failed: {err}"),
    }
}

/// A `core.exec.stdin.error` payload for a policy rejection (no errno).
pub(crate) fn stdin_rejected(message: String) -> ExecStdinError {
    ExecStdinError { errno: None, errno_name: None, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_enoent_is_not_found() {
        assert_eq!(classify(&Stage::Exec, Some(Errno::ENOENT), false), ExecFailureKind::NotFound);
    }

    #[test]
    fn exec_eacces_and_eperm_are_permission_denied() {
        for errno in [Errno::EACCES, Errno::EPERM] {
            let kind = classify(&Stage::Exec, Some(errno), false);
            assert_eq!(kind, ExecFailureKind::PermissionDenied);
        }
    }

    #[test]
    fn exec_enoexec_is_not_executable() {
        let kind = classify(&Stage::Exec, Some(Errno::ENOEXEC), false);
        assert_eq!(kind, ExecFailureKind::NotExecutable);
    }

    #[test]
    fn chdir_enoent_is_bad_cwd_not_not_found() {
        assert_eq!(classify(&Stage::Chdir, Some(Errno::ENOENT), false), ExecFailureKind::BadCwd);
    }

    #[test]
    fn identity_steps_are_user_setup_failures() {
        for stage in [Stage::ResolveUser, Stage::Setgroups, Stage::Setgid, Stage::Setuid] {
            let kind = classify(&stage, Some(Errno::EPERM), false);
            assert_eq!(kind, ExecFailureKind::UserSetupFailed);
        }
    }

    #[test]
    fn stdio_failure_is_pty_setup_only_with_a_tty() {
        let errno = Some(Errno::EBADF);
        assert_eq!(classify(&Stage::Stdio, errno, true), ExecFailureKind::PtySetupFailed);
        assert_eq!(classify(&Stage::Stdio, errno, false), ExecFailureKind::Other);
    }

    #[test]
    fn fork_eagain_is_a_resource_limit() {
        assert_eq!(
            classify(&Stage::Fork, Some(Errno::EAGAIN), false),
            ExecFailureKind::ResourceLimit
        );
    }

    #[test]
    fn setrlimit_stage_names_the_resource() {
        assert_eq!(Stage::Setrlimit("RLIMIT_NOFILE").wire_name(), "setrlimit(RLIMIT_NOFILE)");
    }

    #[test]
    fn failed_payload_carries_errno_and_its_name() {
        let f = failed(Stage::Exec, Some(Errno::ENOENT), false, "execvp(\"nope\")");
        assert_eq!(f.errno, Some(2));
        assert_eq!(f.errno_name.as_deref(), Some("ENOENT"));
        assert_eq!(f.stage.as_deref(), Some("execvp"));
        assert!(
            f.message.starts_with("execvp(\"nope\"): No such file or directory"),
            "{}",
            f.message
        );
    }

    #[test]
    fn stdin_write_error_names_epipe() {
        let err = std::io::Error::from_raw_os_error(libc::EPIPE);
        let e = stdin_write_error(&err);
        assert_eq!((e.errno, e.errno_name.as_deref()), (Some(libc::EPIPE), Some("EPIPE")));
    }
}
