//! PTY pairs for `tty: true` sessions, and the two raw calls exec makes from the parent:
//! setting a terminal's window size and signalling with any signal number.
//!
//! Both ends are opened `O_CLOEXEC`, unlike libc's `openpty`: another session forking at the same
//! moment must not inherit this session's slave, or the master would never read `EIO` when the
//! session's own processes are gone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

/// A PTY pair: the master stays in agentd, the slave becomes the child's stdio.
#[derive(Debug)]
pub(crate) struct PtyPair {
    /// The master side.
    pub(crate) master: OwnedFd,
    /// The slave side.
    pub(crate) slave: OwnedFd,
}

/// Opens a PTY pair sized `rows`×`cols`. The error names the call that failed.
pub(crate) fn open_pty(rows: u16, cols: u16) -> Result<PtyPair, (&'static str, Errno)> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).map_err(|e| ("posix_openpt", e))?;
    grantpt(&master).map_err(|e| ("grantpt", e))?;
    unlockpt(&master).map_err(|e| ("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| ("ptsname_r", e))?;
    let slave = open(name.as_str(), flags, Mode::empty()).map_err(|e| ("open(slave)", e))?;
    let master = OwnedFd::from(master);
    set_window_size(master.as_fd(), rows, cols).map_err(|e| ("ioctl(TIOCSWINSZ)", e))?;
    Ok(PtyPair { master, slave })
}

/// Makes `master` non-blocking and registers it with the runtime's reactor. Must run inside the
/// tokio runtime. The error names the call that failed.
pub(crate) fn register_master(master: OwnedFd) -> Result<AsyncFd<OwnedFd>, (&'static str, Errno)> {
    let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(|e| ("fcntl(F_GETFL)", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(&master, FcntlArg::F_SETFL(flags)).map_err(|e| ("fcntl(F_SETFL)", e))?;
    // SAFETY: an `OwnedFd` is an open descriptor that only its owner closes; the `AsyncFd` takes
    // ownership, so the descriptor stays open and unchanged until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register(master) };
    registered.map_err(|e| {
        let err = std::io::Error::from(e);
        ("register", err.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
    })
}

/// `ioctl(TIOCSWINSZ)`: sets the window size of the terminal behind `fd` (either side); the
/// kernel sends `SIGWINCH` to the terminal's foreground process group.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live local;
    // `fd` is a borrowed open descriptor.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    Errno::result(ret).map(drop)
}

/// `kill(pid, signal)` with a raw signal number, so real-time signals work too (nix's `Signal`
/// enum has none). A negative `pid` addresses a process group.
pub(crate) fn kill(pid: i32, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill takes two integers and has no memory effects.
    let ret = unsafe { libc::kill(pid, signal) };
    Errno::result(ret).map(drop)
}
