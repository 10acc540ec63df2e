//! From a [`LaunchPlan`] to a running child: check the working directory, create the stdio
//! (three pipes or a PTY pair) and the report pipe, register the parent's ends with the runtime,
//! then start the child (a `vfork`-style clone, [`super::pre_exec`]) under the reaper's
//! registration lock. Everything that can fail without a child fails before the clone; what fails
//! after it (in the child) arrives on the report pipe.
//!
//! Every descriptor is created `O_CLOEXEC`, so a child started by another session at the same
//! moment does not keep this session's pipes open (which would delay its end-of-file).

use std::ffi::{CStr, CString, OsStr, c_char};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use moat_protocol::payload::exec::ExecFailed;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::stat;
use nix::unistd::pipe2;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::Confinement;
use super::failure::{self, Stage};
use super::plan::LaunchPlan;
use super::pre_exec::{ChildSpec, clone_and_exec};
use super::pty::{open_pty, register_master};
use crate::process::{ExitCode, Reaper};

/// The parent's side of a child's stdio.
#[derive(Debug)]
pub(crate) enum ChildIo {
    /// Three pipes.
    Pipes {
        /// Write end of the child's stdin.
        stdin: pipe::Sender,
        /// Read end of the child's stdout.
        stdout: pipe::Receiver,
        /// Read end of the child's stderr.
        stderr: pipe::Receiver,
    },
    /// A PTY: stdin is written to the master, all output is read from it.
    Pty {
        /// The non-blocking master, shared by the reader, the stdin writer and resizes.
        master: Arc<AsyncFd<OwnedFd>>,
    },
}

/// A started child.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// The child's pid, also its process group and session id once it runs.
    pub(crate) pid: u32,
    /// Read end of the report pipe: end-of-file once the program runs, else a
    /// [`super::pre_exec::ChildFailure`].
    pub(crate) report: pipe::Receiver,
    /// The exit status, from the reaper.
    pub(crate) exit: oneshot::Receiver<ExitCode>,
    /// The parent's stdio ends.
    pub(crate) io: ChildIo,
}

/// Fails with `bad_cwd` unless `cwd` is an existing directory. The child's `chdir` would fail
/// with `ENOENT` too, indistinguishable from a missing program in a shell's eyes, so agentd
/// checks first (the child still reports its own `chdir` failure as `bad_cwd`).
pub(crate) fn check_cwd(cwd: &CStr, tty: bool) -> Result<(), ExecFailed> {
    let path = Path::new(OsStr::from_bytes(cwd.to_bytes()));
    let what = format!("working directory {}", path.display());
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(failure::failed(Stage::CheckCwd, Some(Errno::ENOTDIR), tty, &what)),
        Err(err) => Err(failure::failed(Stage::CheckCwd, Some(errno_of(&err)), tty, &what)),
    }
}

/// Starts the child described by `plan`. Must run inside the tokio runtime (descriptors are
/// registered with its reactor).
pub(crate) fn spawn(
    reaper: &Reaper,
    plan: &LaunchPlan,
    confinement: &Confinement,
) -> Result<Spawned, ExecFailed> {
    let tty = plan.tty.is_some();
    let fail =
        |stage: Stage, errno: Errno, what: &str| failure::failed(stage, Some(errno), tty, what);
    let (report_read, report_write) =
        child_pipe(Kept::Read).map_err(|e| fail(Stage::Pipe, e, "creating the report pipe"))?;
    let report = pipe::Receiver::from_owned_fd_unchecked(report_read)
        .map_err(|e| fail(Stage::Register, errno_of(&e), "registering the report pipe"))?;
    let (child_stdio, io) = match plan.tty {
        Some((rows, cols)) => pty_stdio(rows, cols, &fail)?,
        None => pipe_stdio(&fail)?,
    };
    let raw = |fd: &OwnedFd| fd.as_raw_fd();
    let stdio: [RawFd; 3] = match &child_stdio {
        ChildStdio::Pipes(fds) => [raw(&fds[0]), raw(&fds[1]), raw(&fds[2])],
        ChildStdio::Pty(slave) => [raw(slave); 3],
    };
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let groups: Vec<libc::gid_t> =
        plan.identity.as_ref().map(|id| id.groups.clone()).unwrap_or_default();
    let seccomp: Vec<libc::sock_fprog> = confinement
        .seccomp
        .iter()
        .map(|program| libc::sock_fprog {
            // The kernel's limit is 4096 instructions; the profiles stay far below it
            // (`seccomp` unit tests), so the length fits.
            len: u16::try_from(program.len()).unwrap_or(u16::MAX),
            filter: program.as_ptr().cast_mut().cast(),
        })
        .collect();
    let spec = ChildSpec {
        seccomp: &seccomp,
        kept_capabilities: confinement.kept_capabilities,
        stdio,
        controlling_tty: tty,
        cwd: &plan.cwd,
        rlimits: &plan.rlimits,
        identity: plan.identity.as_ref().map(|id| (id.uid, id.gid, groups.as_slice())),
        candidates: &plan.candidates[first_candidate(&plan.candidates)..],
        argv: &argv,
        envp: &envp,
        report_fd: report_write.as_raw_fd(),
    };
    let (pid, (), exit) = reaper
        .spawn_tracked(|| clone_and_exec(&spec).map(|pid| (pid, ())))
        .map_err(|e| fail(Stage::Fork, errno_of(&e), "fork"))?;
    // The child has its copies; closing ours lets end-of-file and EIO reach the parent.
    drop(child_stdio);
    drop(report_write);
    Ok(Spawned { pid, report, exit, io })
}

/// Index of the first of `candidates` the child has to try: the leading absolute paths that do
/// not exist are skipped, so the child does not spend an `execve` on each `$PATH` directory that
/// lacks the program. `execvp` moves past exactly these (`ENOENT`, `ENOTDIR`), so the outcome is
/// the same, and the child still tries every candidate after the first one that exists (an
/// `EACCES` there moves on, as before). A relative path is never skipped: it resolves against the
/// child's working directory, not agentd's. Returns `candidates.len()` when every candidate is
/// absent; the child then fails with `ENOENT`, after its other steps, as `execvp` would.
fn first_candidate(candidates: &[CString]) -> usize {
    let absent = |path: &CString| {
        path.as_bytes().first() == Some(&b'/')
            && matches!(stat(path.as_c_str()), Err(Errno::ENOENT | Errno::ENOTDIR))
    };
    candidates.iter().position(|path| !absent(path)).unwrap_or(candidates.len())
}

/// The child's ends of its stdio, owned by the parent until the clone is done.
enum ChildStdio {
    /// stdin read end, stdout write end, stderr write end.
    Pipes([OwnedFd; 3]),
    /// The PTY slave, used for all three.
    Pty(OwnedFd),
}

type Fail<'a> = dyn Fn(Stage, Errno, &str) -> ExecFailed + 'a;

fn pipe_stdio(fail: &Fail<'_>) -> Result<(ChildStdio, ChildIo), ExecFailed> {
    let pipe_err = |e| fail(Stage::Pipe, e, "creating stdio pipes");
    let register_err = |e: std::io::Error| fail(Stage::Register, errno_of(&e), "registering stdio");
    let (stdin_read, stdin_write) = child_pipe(Kept::Write).map_err(pipe_err)?;
    let (stdout_read, stdout_write) = child_pipe(Kept::Read).map_err(pipe_err)?;
    let (stderr_read, stderr_write) = child_pipe(Kept::Read).map_err(pipe_err)?;
    widen_output_pipe(&stdout_read);
    widen_output_pipe(&stderr_read);
    // `child_pipe` made agentd's ends what the unchecked constructors require: pipe ends of the
    // right direction, non-blocking.
    let io = ChildIo::Pipes {
        stdin: pipe::Sender::from_owned_fd_unchecked(stdin_write).map_err(register_err)?,
        stdout: pipe::Receiver::from_owned_fd_unchecked(stdout_read).map_err(register_err)?,
        stderr: pipe::Receiver::from_owned_fd_unchecked(stderr_read).map_err(register_err)?,
    };
    Ok((ChildStdio::Pipes([stdin_read, stdout_write, stderr_write]), io))
}

fn pty_stdio(rows: u16, cols: u16, fail: &Fail<'_>) -> Result<(ChildStdio, ChildIo), ExecFailed> {
    let pair = open_pty(rows, cols).map_err(|(call, e)| fail(Stage::OpenPty, e, call))?;
    let slave = above_stdio(pair.slave).map_err(|e| fail(Stage::OpenPty, e, "dup(slave)"))?;
    let master =
        register_master(pair.master).map_err(|(call, e)| fail(Stage::Register, e, call))?;
    Ok((ChildStdio::Pty(slave), ChildIo::Pty { master: Arc::new(master) }))
}

/// Bytes an output pipe holds ([`widen_output_pipe`]): four of the largest output chunks, so a
/// fast writer keeps writing while agentd forwards the chunk before.
pub(crate) const OUTPUT_PIPE_BYTES: usize = 4 * super::session::OUTPUT_CHUNK_BYTES;

/// Grows an output pipe from the kernel's default 64 KiB to [`OUTPUT_PIPE_BYTES`]
/// (`F_SETPIPE_SZ`), so agentd reads whole chunks of a fast writer's output instead of a pipe's
/// worth at a time. Best effort: past `/proc/sys/fs/pipe-max-size` (1 MiB by default) or the
/// user's pipe-pages quota the kernel refuses, and the pipe keeps its size.
fn widen_output_pipe(fd: &OwnedFd) {
    let size = i32::try_from(OUTPUT_PIPE_BYTES).unwrap_or(i32::MAX);
    if let Err(err) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)) {
        tracing::debug!(%err, "output pipe keeps its default size");
    }
}

/// Which end of a child's pipe agentd keeps; the child gets the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Read,
    Write,
}

/// A `CLOEXEC` pipe `(read, write)` for a child, both ends above fd 2 so the child's `dup2` onto
/// 0..=2 never overwrites one of its own sources (agentd may run with fds 0..=2 closed). The end
/// agentd keeps is non-blocking, ready for the runtime as it is (tokio's checked constructors
/// would `fstat` it and read and set its flags again); the child's end is blocking, as programs
/// expect of their stdio. `O_NONBLOCK` belongs to each end's own open file description, so
/// clearing it on one end leaves the other alone.
fn child_pipe(kept: Kept) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let childs = if kept == Kept::Read { &write } else { &read };
    nix::fcntl::fcntl(childs, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd` itself if it is above 2, else a `CLOEXEC` duplicate that is (`try_clone` uses
/// `F_DUPFD_CLOEXEC` with a minimum of 3).
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    fd.try_clone().map_err(|e| errno_of(&e))
}

/// A null-terminated array of pointers into `strings`, for `execve`.
fn null_terminated(strings: &[std::ffi::CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// The errno behind an I/O error (`EIO` when there is none).
fn errno_of(err: &std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use nix::fcntl::{FcntlArg, fcntl};

    use super::*;

    #[test]
    fn pointer_array_ends_with_null() {
        let strings = [CString::new("a").unwrap(), CString::new("b").unwrap()];
        let ptrs = null_terminated(&strings);
        assert_eq!(ptrs.len(), 3);
        assert!(ptrs[2].is_null());
        assert_eq!(ptrs[0], strings[0].as_ptr());
    }

    fn paths(items: &[&str]) -> Vec<CString> {
        items.iter().map(|p| CString::new(*p).unwrap()).collect()
    }

    #[test]
    fn missing_absolute_candidates_are_skipped_up_to_the_first_that_exists() {
        let candidates = paths(&["/nonexistent/moat/sh", "/proc/self/status/sh", "/bin/sh", "/x"]);
        assert_eq!(first_candidate(&candidates), 2);
    }

    #[test]
    fn relative_candidate_stops_the_skipping() {
        let candidates = paths(&["/nonexistent/moat/sh", "./moat-no-such-file", "/bin/sh"]);
        assert_eq!(first_candidate(&candidates), 1);
    }

    #[test]
    fn all_missing_candidates_leave_none() {
        let candidates = paths(&["/nonexistent/moat/a", "/nonexistent/moat/b"]);
        assert_eq!(first_candidate(&candidates), 2);
        assert_eq!(first_candidate(&[]), 0);
    }

    #[test]
    fn missing_cwd_is_bad_cwd_with_enoent() {
        let failed = check_cwd(c"/nonexistent/moat-test-dir", false).unwrap_err();
        assert_eq!(failed.kind, moat_protocol::payload::exec::ExecFailureKind::BadCwd);
        assert_eq!(failed.errno, Some(libc::ENOENT));
    }

    #[test]
    fn file_as_cwd_is_bad_cwd_with_enotdir() {
        let failed = check_cwd(c"/proc/self/status", false).unwrap_err();
        assert_eq!(failed.errno, Some(libc::ENOTDIR));
    }

    #[test]
    fn pipe_ends_are_above_stdio_and_cloexec() {
        let (read, write) = child_pipe(Kept::Read).unwrap();
        for fd in [&read, &write] {
            assert!(fd.as_raw_fd() > 2);
            let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn only_the_kept_end_is_non_blocking() {
        let non_blocking = |fd: &OwnedFd| {
            let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
            flags.contains(OFlag::O_NONBLOCK)
        };
        let (read, write) = child_pipe(Kept::Read).unwrap();
        assert_eq!((non_blocking(&read), non_blocking(&write)), (true, false));
        let (read, write) = child_pipe(Kept::Write).unwrap();
        assert_eq!((non_blocking(&read), non_blocking(&write)), (false, true));
    }
}
