//! The only `unsafe` of this crate: code run in a forked child before `exec`.
//!
//! After `fork` only async-signal-safe calls are allowed: here a single `prctl` or `setsid`.

#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the kernel SIGKILL the child when the thread that spawns it dies, so a sandbox process
/// killed by the CLI's escalation takes its agent (and so the whole pid namespace) with it.
pub(crate) fn kill_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Puts the child in a new session (and so a new process group whose id is its pid), so it
/// outlives the CLI that spawned it: no terminal hangup or process-group signal reaches it.
pub(crate) fn new_session(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
