//! The child reaper: the only code in agentd that waits for children.
//!
//! agentd runs as PID 1, so every orphan in the sandbox becomes its child and must be reaped, and
//! any `waitpid(-1)` steals a status from whoever else is waiting. One dedicated thread therefore
//! owns waiting: nothing else in agentd may call `waitpid`, `Child::wait` or use
//! `tokio::process`. Code that starts a process forks inside [`Reaper::spawn_tracked`] and gets
//! the exit status through a oneshot channel.
//!
//! The thread needs no signal handler and no signal mask. It blocks in
//! `waitid(P_ALL, WEXITED | WNOWAIT)`, which returns when some child has become a zombie without
//! reaping it, then takes the registration lock and reaps with `waitpid(-1, WNOHANG)`. Forks happen
//! under the same lock, so a child that exits before its pid is registered is still reaped after
//! registration, and its status is never lost. When there are no children at all (`ECHILD`) the
//! thread sleeps until the next registered spawn, rechecking every [`IDLE_RECHECK`] for children
//! that arrive another way (a process that entered the sandbox's pid namespace and was orphaned).
//!
//! This module does not start processes or send signals; it only waits.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use tokio::sync::oneshot;

/// A process's exit status as the protocol reports it: the status it passed to `exit` when it
/// exited normally, `-1` when a signal killed it (PROTOCOL.md §6.2, `ExecExited.code`).
pub type ExitCode = i32;

/// Statuses reaped per lock hold, so a burst of exits cannot hold off a spawn for long.
pub const REAP_BATCH: usize = 64;

/// How often the idle reaper (no children) looks for children it was not told about.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Longest sleep of [`Reaper::wait_no_children`] between two checks.
const NO_CHILDREN_POLL: Duration = Duration::from_millis(20);

/// Set once a reaper thread runs: two threads calling `waitpid(-1)` would steal each other's
/// statuses.
static STARTED: AtomicBool = AtomicBool::new(false);

/// A handle to the reaper thread. Cloning is cheap; every clone talks to the same thread.
#[derive(Debug, Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Notified after every reaped batch and every registered spawn.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Registered children that have not been reaped yet.
    tracked: HashMap<u32, oneshot::Sender<ExitCode>>,
    /// Counts registered spawns, so the idle thread sees a spawn it slept through.
    spawns: u64,
}

/// Whether any child is left after a reap pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Children {
    /// Children exist (running, or more zombies than one batch).
    Some,
    /// `waitpid` reported `ECHILD`.
    None,
}

impl Reaper {
    /// Starts the reaper thread (`agentd-reaper`). Call it once, early in `main`; a second call in
    /// the same process fails with [`io::ErrorKind::AlreadyExists`]. It needs no signal mask and
    /// no `SIGCHLD` handler, but `SIGCHLD` must not be set to `SIG_IGN` (that makes the kernel
    /// auto-reap children and their statuses would be lost).
    pub fn start() -> io::Result<Reaper> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a reaper already runs in this process",
            ));
        }
        let inner = Arc::new(Inner { state: Mutex::default(), changed: Condvar::new() });
        let thread_inner = Arc::clone(&inner);
        let spawned = std::thread::Builder::new()
            .name("agentd-reaper".to_owned())
            .spawn(move || thread_inner.run());
        if let Err(err) = spawned {
            STARTED.store(false, Ordering::SeqCst);
            return Err(err);
        }
        Ok(Reaper { inner })
    }

    /// Runs `spawn`, which forks and returns the child's pid, while holding the registration
    /// lock, and registers the pid before the lock is released, so the status of a child that
    /// exits at once is never lost. Returns the pid, whatever `spawn` returned alongside it, and
    /// a receiver of the child's [`ExitCode`].
    ///
    /// `spawn` should do as little as possible: the reaper cannot reap while it runs. In
    /// particular it should not wait for the child to exec.
    pub fn spawn_tracked<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(u32, T)>,
    ) -> io::Result<(u32, T, oneshot::Receiver<ExitCode>)> {
        let mut state = self.inner.lock();
        let (pid, value) = spawn()?;
        let (tx, rx) = oneshot::channel();
        state.tracked.insert(pid, tx);
        state.spawns += 1;
        drop(state);
        self.inner.changed.notify_all();
        Ok((pid, value, rx))
    }

    /// Runs `f` only if `pid` is a registered child that has not been reaped, holding the lock
    /// so it cannot be reaped meanwhile. While a child is unreaped its pid cannot be reused, so
    /// `f` can signal `pid` without risk of hitting an unrelated process. Returns `None` when the
    /// pid is unknown or already reaped.
    pub fn with_unreaped<R>(&self, pid: u32, f: impl FnOnce() -> R) -> Option<R> {
        let state = self.inner.lock();
        state.tracked.contains_key(&pid).then(f)
    }

    /// Waits until this process has no children left (`waitpid` reports `ECHILD`), reaping as it
    /// goes, or until `timeout` passes. Returns `true` when no child is left. Blocks the calling
    /// thread: call it during shutdown, not on a runtime thread that must keep serving.
    pub fn wait_no_children(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        loop {
            if state.reap_batch() == Children::None {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let nap = (deadline - now).min(NO_CHILDREN_POLL);
            state = self
                .inner
                .changed
                .wait_timeout(state, nap)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reaper thread's loop; never returns.
    fn run(&self) {
        loop {
            let spawns_seen = self.lock().spawns;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::__WALL)
            {
                Ok(_) => {
                    self.lock().reap_batch();
                    self.changed.notify_all();
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.changed.notify_all();
                    let state = self.lock();
                    // A spawn registered after `spawns_seen` was read may have been missed by
                    // `waitid`; only sleep if none happened.
                    let _sleep = self
                        .changed
                        .wait_timeout_while(state, IDLE_RECHECK, |s| s.spawns == spawns_seen)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Err(err) => {
                    tracing::error!(%err, "waitid failed in the reaper");
                    std::thread::sleep(IDLE_RECHECK);
                }
            }
        }
    }
}

impl State {
    /// Reaps up to [`REAP_BATCH`] zombies, delivering tracked statuses. The caller holds the lock.
    fn reap_batch(&mut self) -> Children {
        for _ in 0..REAP_BATCH {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) => return Children::Some,
                Ok(status) => self.deliver(status),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return Children::None,
                Err(err) => {
                    tracing::error!(%err, "waitpid failed in the reaper");
                    return Children::Some;
                }
            }
        }
        Children::Some
    }

    fn deliver(&mut self, status: WaitStatus) {
        let Some((pid, code)) = exit_of(status) else { return };
        match self.tracked.remove(&pid) {
            // The receiver may be gone (a session that already gave up); nothing to do then.
            Some(tx) => drop(tx.send(code)),
            None => tracing::debug!(pid, code, "reaped an untracked process"),
        }
    }
}

/// The pid and [`ExitCode`] of a terminal wait status; `None` for stop/continue reports.
fn exit_of(status: WaitStatus) -> Option<(u32, ExitCode)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw().unsigned_abs(), code)),
        WaitStatus::Signaled(pid, _, _) => Some((pid.as_raw().unsigned_abs(), -1)),
        WaitStatus::Stopped(..)
        | WaitStatus::PtraceEvent(..)
        | WaitStatus::PtraceSyscall(_)
        | WaitStatus::Continued(_)
        | WaitStatus::StillAlive => None,
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn normal_exit_reports_its_status() {
        assert_eq!(exit_of(WaitStatus::Exited(Pid::from_raw(42), 7)), Some((42, 7)));
    }

    #[test]
    fn signal_death_reports_minus_one() {
        let status = WaitStatus::Signaled(Pid::from_raw(42), Signal::SIGKILL, false);
        assert_eq!(exit_of(status), Some((42, -1)));
    }

    #[test]
    fn stop_and_continue_are_not_exits() {
        assert_eq!(exit_of(WaitStatus::Stopped(Pid::from_raw(1), Signal::SIGSTOP)), None);
        assert_eq!(exit_of(WaitStatus::Continued(Pid::from_raw(1))), None);
        assert_eq!(exit_of(WaitStatus::StillAlive), None);
    }
}
