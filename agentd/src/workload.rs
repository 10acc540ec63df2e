//! Generation-9 workload freezing (PROTOCOL.md §4.1, §6.1, §12): `core.workload.freeze` stops
//! every guest process except the agent, `core.workload.thaw` resumes them. Both arrive from the
//! host runtime on the private id `0xFFFFFFFF`.
//!
//! ```text
//!            freeze (attempt A)                    thaw (attempt A, continue)
//!  Running ─────────────────────► Frozen { A } ───────────────────────────► Running
//!     │ thaw: invalid_session,        │ freeze: invalid_session, recovery_required
//!     │ disposition unavailable       │ thaw of another attempt: invalid_session, recovery_required
//!     │                               │ thaw mode restore: capability_unavailable, recovery_required
//!     │ no freezer: capability_unavailable, unavailable (nothing frozen)
//! ```
//!
//! How: the agent is PID 1 of the sandbox's pid namespace (namespace backend) or of the guest
//! (VM backend), so `kill(-1, SIGSTOP)` reaches every other process there and never the agent
//! itself; the kernel delivers such a signal to a child being forked at that moment too, so no
//! process escapes. The freeze then waits (bounded) until every process reports the stopped
//! state or has `SIGSTOP` pending (a runnable process not yet scheduled, or one in an
//! uninterruptible system call: it runs no more user code, though that call completes), and
//! flushes filesystems. Thaw is `kill(-1, SIGCONT)`. This works the same in both
//! backends and needs no cgroup (the namespace backend's sandbox root cannot write the host's
//! cgroup tree). Limits: a process the workload had stopped itself is continued by the thaw, and
//! a process may observe `SIGCONT` (a handler runs). An agent that is not PID 1 (a test run) has
//! no freezer: `kill(-1)` would reach the host's processes.
//!
//! While frozen, the agent refuses `core.exec.request` with `exec.failed {kind: other, stage:
//! workload_latch}` (PROTOCOL.md §8.2); the relay refuses every session start.

use std::time::{Duration, Instant};

use moat_protocol::payload::core::{
    CoreError, CoreErrorKind, WorkloadFailure, WorkloadFailureDisposition,
};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawMode, WorkloadThawed,
};

/// Longest the agent waits for every process to reach the stopped state after `SIGSTOP`.
pub const FREEZE_SETTLE_TIMEOUT_MS: u64 = 2_000;

/// Pause between checks while waiting for processes to stop.
const FREEZE_SETTLE_POLL_MS: u64 = 2;

/// How many of the processes that did not stop a freeze error names.
const MAX_NAMED_PROCESSES: usize = 5;

/// Longest attempt id echoed in an error (it is host input).
const MAX_ATTEMPT_ID_BYTES: usize = 256;

/// The operations a freeze needs from the system. [`ProcessFreezer`] is the real one.
pub trait Freezer {
    /// Whether this agent can freeze at all (it is PID 1 of its namespace).
    fn available(&self) -> bool;
    /// Sends `SIGSTOP` (`stop`) or `SIGCONT` to every process but the agent.
    fn signal_all(&mut self, stop: bool);
    /// The processes other than the agent that are not stopped (nor zombies, nor bound to stop)
    /// yet, each as `PID (COMM) STATE`, for the error that names them.
    fn running(&mut self) -> Vec<String>;
    /// Flushes every filesystem.
    fn sync(&mut self);
}

/// Where the workload is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Processes run.
    Running,
    /// Processes are stopped by `attempt_id`'s freeze.
    Frozen {
        /// The attempt that froze them.
        attempt_id: String,
    },
}

/// The workload latch: its state and the system underneath.
pub struct WorkloadLatch<F> {
    state: State,
    freezer: F,
}

impl<F: Freezer> WorkloadLatch<F> {
    /// A running workload.
    pub fn new(freezer: F) -> WorkloadLatch<F> {
        WorkloadLatch { state: State::Running, freezer }
    }

    /// Whether the workload is frozen (new execs are refused).
    pub fn frozen(&self) -> bool {
        matches!(self.state, State::Frozen { .. })
    }

    /// `core.workload.freeze`: stops every process but the agent, then answers `frozen`.
    pub fn freeze(&mut self, freeze: WorkloadFreeze) -> Result<WorkloadFrozen, CoreError> {
        let attempt = freeze.attempt_id;
        if let State::Frozen { attempt_id } = &self.state {
            let message =
                format!("the workload is already frozen by attempt {:?}", cut(attempt_id));
            return Err(failure(
                CoreErrorKind::InvalidSession,
                message,
                &attempt,
                WorkloadFailureDisposition::RecoveryRequired,
            ));
        }
        if !self.freezer.available() {
            return Err(failure(
                CoreErrorKind::CapabilityUnavailable,
                "this agent has no workload freezer: it is not PID 1 of the sandbox".to_owned(),
                &attempt,
                WorkloadFailureDisposition::Unavailable,
            ));
        }
        self.freezer.signal_all(true);
        self.state = State::Frozen { attempt_id: attempt.clone() };
        let deadline = Instant::now() + Duration::from_millis(FREEZE_SETTLE_TIMEOUT_MS);
        loop {
            let running = self.freezer.running();
            if running.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let named = running.iter().take(MAX_NAMED_PROCESSES).cloned().collect::<Vec<_>>();
                return Err(failure(
                    CoreErrorKind::CapabilityUnavailable,
                    format!(
                        "{} processes did not stop within {FREEZE_SETTLE_TIMEOUT_MS} ms: {}",
                        running.len(),
                        named.join(", ")
                    ),
                    &attempt,
                    WorkloadFailureDisposition::RecoveryRequired,
                ));
            }
            std::thread::sleep(Duration::from_millis(FREEZE_SETTLE_POLL_MS));
        }
        self.freezer.sync();
        tracing::info!(attempt = %cut(&attempt), "workload frozen");
        Ok(WorkloadFrozen {
            attempt_id: attempt,
            // moat's agent has no bulk lane and does not meter host input (PROTOCOL.md §15):
            // nothing is owed, and the host's own position is the admitted input.
            guest_bulk_bytes_target: 0,
            input_credit: freeze.host_input,
            external_mounts_synced: true,
        })
    }

    /// `core.workload.thaw`: resumes the processes the matching freeze stopped.
    pub fn thaw(&mut self, thaw: WorkloadThaw) -> Result<WorkloadThawed, CoreError> {
        let State::Frozen { attempt_id } = &self.state else {
            return Err(failure(
                CoreErrorKind::InvalidSession,
                "the workload is not frozen".to_owned(),
                &thaw.attempt_id,
                WorkloadFailureDisposition::Unavailable,
            ));
        };
        if *attempt_id != thaw.attempt_id {
            let message = format!("the workload is frozen by attempt {:?}", cut(attempt_id));
            return Err(failure(
                CoreErrorKind::InvalidSession,
                message,
                &thaw.attempt_id,
                WorkloadFailureDisposition::RecoveryRequired,
            ));
        }
        if thaw.mode == WorkloadThawMode::Restore {
            return Err(failure(
                CoreErrorKind::CapabilityUnavailable,
                "thaw mode restore needs a restored guest; moat does not checkpoint".to_owned(),
                &thaw.attempt_id,
                WorkloadFailureDisposition::RecoveryRequired,
            ));
        }
        self.freezer.signal_all(false);
        self.state = State::Running;
        tracing::info!(attempt = %cut(&thaw.attempt_id), "workload thawed");
        Ok(WorkloadThawed { attempt_id: thaw.attempt_id })
    }
}

fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_ATTEMPT_ID_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn failure(
    kind: CoreErrorKind,
    message: String,
    attempt_id: &str,
    disposition: WorkloadFailureDisposition,
) -> CoreError {
    CoreError {
        kind,
        message,
        offending_type: None,
        init_failure: None,
        workload_failure: Some(WorkloadFailure {
            attempt_id: cut(attempt_id).to_owned(),
            disposition,
        }),
    }
}

/// The real freezer: signals through `kill(-1, ...)` and reads process states from `/proc`.
#[derive(Debug)]
pub struct ProcessFreezer {
    pid1: bool,
}

impl ProcessFreezer {
    /// A freezer for an agent that is PID 1 (`pid1`); otherwise it is unavailable.
    pub fn new(pid1: bool) -> ProcessFreezer {
        ProcessFreezer { pid1 }
    }
}

impl Freezer for ProcessFreezer {
    fn available(&self) -> bool {
        self.pid1
    }

    fn signal_all(&mut self, stop: bool) {
        use nix::sys::signal::Signal;
        crate::sys::kill_all(if stop { Signal::SIGSTOP } else { Signal::SIGCONT });
    }

    fn running(&mut self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id())
            .filter_map(|pid| {
                let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
                if stat.kernel_thread || stat.settled() {
                    return None;
                }
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                if stop_pending(&status) {
                    return None;
                }
                Some(format!("{pid} ({}) {}", stat.comm, stat.state))
            })
            .collect()
    }

    fn sync(&mut self) {
        crate::sys::sync();
    }
}

/// What a freeze needs from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    /// The command name (at most 15 bytes, from the kernel).
    comm: String,
    /// The state letter (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, ...).
    state: char,
    /// `PF_KTHREAD` is set: signals do not stop it.
    kernel_thread: bool,
}

impl Stat {
    /// Stopped, traced, or dead.
    fn settled(&self) -> bool {
        matches!(self.state, 'T' | 't' | 'Z' | 'X' | 'x')
    }
}

/// `PF_KTHREAD` in the `flags` field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Parses the state and flags out of a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let close = stat.rfind(')')?;
    let comm = stat[..close].split_once('(')?.1.to_owned();
    let rest = &stat[close + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
    let flags: u64 = fields.nth(5)?.parse().ok()?;
    Some(Stat { comm, state, kernel_thread: flags & PF_KTHREAD != 0 })
}

/// `SIGSTOP`'s bit in the pending masks of `/proc/PID/status` (signal 19, bit 18).
const SIGSTOP_BIT: u64 = 1 << 18;

/// Whether `SIGSTOP` is pending for the process whose `/proc/PID/status` this is (its own
/// `SigPnd` or its thread group's `ShdPnd`): it will stop before it runs user code again.
fn stop_pending(status: &str) -> bool {
    status.lines().any(|line| {
        let mask = line.strip_prefix("SigPnd:").or_else(|| line.strip_prefix("ShdPnd:"));
        mask.and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & SIGSTOP_BIT != 0)
    })
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::workload::WorkloadTransportCredit;

    use super::*;

    #[derive(Default)]
    struct Fake {
        unavailable: bool,
        stops: usize,
        conts: usize,
        running_after_stop: usize,
        synced: bool,
    }

    impl Freezer for &mut Fake {
        fn available(&self) -> bool {
            !self.unavailable
        }
        fn signal_all(&mut self, stop: bool) {
            if stop { self.stops += 1 } else { self.conts += 1 }
        }
        fn running(&mut self) -> Vec<String> {
            (0..self.running_after_stop).map(|i| format!("{} (spin) R", 100 + i)).collect()
        }
        fn sync(&mut self) {
            self.synced = true;
        }
    }

    fn freeze(attempt: &str) -> WorkloadFreeze {
        let host_input = WorkloadTransportCredit { control_bytes: 9, ..Default::default() };
        WorkloadFreeze { external_mount_tags: vec![], attempt_id: attempt.into(), host_input }
    }

    fn thaw(attempt: &str, mode: WorkloadThawMode) -> WorkloadThaw {
        WorkloadThaw { attempt_id: attempt.into(), mode }
    }

    fn disposition(err: &CoreError) -> WorkloadFailureDisposition {
        err.workload_failure.as_ref().unwrap().disposition
    }

    #[test]
    fn freeze_stops_everything_syncs_and_thaw_resumes() {
        let mut fake = Fake::default();
        let mut latch = WorkloadLatch::new(&mut fake);
        let frozen = latch.freeze(freeze("a")).unwrap();
        assert_eq!(frozen.attempt_id, "a");
        assert_eq!(frozen.input_credit.control_bytes, 9);
        assert!(frozen.external_mounts_synced);
        assert!(latch.frozen());
        assert_eq!(latch.thaw(thaw("a", WorkloadThawMode::Continue)).unwrap().attempt_id, "a");
        assert!(!latch.frozen());
        drop(latch);
        assert_eq!((fake.stops, fake.conts, fake.synced), (1, 1, true));
    }

    #[test]
    fn freezing_twice_is_invalid_session_and_stays_frozen() {
        let mut fake = Fake::default();
        let mut latch = WorkloadLatch::new(&mut fake);
        latch.freeze(freeze("a")).unwrap();
        let err = latch.freeze(freeze("b")).unwrap_err();
        assert_eq!(err.kind, CoreErrorKind::InvalidSession);
        assert_eq!(disposition(&err), WorkloadFailureDisposition::RecoveryRequired);
        assert_eq!(err.workload_failure.unwrap().attempt_id, "b");
        assert!(latch.frozen());
        drop(latch);
        assert_eq!(fake.stops, 1, "the second freeze signals nothing");
    }

    #[test]
    fn thaw_when_not_frozen_is_invalid_session() {
        let mut fake = Fake::default();
        let mut latch = WorkloadLatch::new(&mut fake);
        let err = latch.thaw(thaw("a", WorkloadThawMode::Continue)).unwrap_err();
        assert_eq!(err.kind, CoreErrorKind::InvalidSession);
        assert_eq!(disposition(&err), WorkloadFailureDisposition::Unavailable);
        drop(latch);
        assert_eq!(fake.conts, 0);
    }

    #[test]
    fn thaw_of_another_attempt_or_restore_keeps_it_frozen() {
        let mut fake = Fake::default();
        let mut latch = WorkloadLatch::new(&mut fake);
        latch.freeze(freeze("a")).unwrap();
        let err = latch.thaw(thaw("b", WorkloadThawMode::Continue)).unwrap_err();
        assert_eq!(err.kind, CoreErrorKind::InvalidSession);
        let err = latch.thaw(thaw("a", WorkloadThawMode::Restore)).unwrap_err();
        assert_eq!(err.kind, CoreErrorKind::CapabilityUnavailable);
        assert_eq!(disposition(&err), WorkloadFailureDisposition::RecoveryRequired);
        assert!(latch.frozen());
    }

    #[test]
    fn no_freezer_is_capability_unavailable_and_nothing_is_frozen() {
        let mut fake = Fake { unavailable: true, ..Fake::default() };
        let mut latch = WorkloadLatch::new(&mut fake);
        let err = latch.freeze(freeze("a")).unwrap_err();
        assert_eq!(err.kind, CoreErrorKind::CapabilityUnavailable);
        assert_eq!(disposition(&err), WorkloadFailureDisposition::Unavailable);
        assert!(!latch.frozen());
        drop(latch);
        assert_eq!(fake.stops, 0);
    }

    #[test]
    fn processes_that_never_stop_fail_the_freeze_but_leave_it_latched() {
        let mut fake = Fake { running_after_stop: 1, ..Fake::default() };
        let mut latch = WorkloadLatch::new(&mut fake);
        let err = latch.freeze(freeze("a")).unwrap_err();
        assert_eq!(disposition(&err), WorkloadFailureDisposition::RecoveryRequired);
        assert!(
            err.message.ends_with("did not stop within 2000 ms: 100 (spin) R"),
            "{}",
            err.message
        );
        assert!(latch.frozen(), "a thaw of attempt a recovers it");
        assert!(latch.thaw(thaw("a", WorkloadThawMode::Continue)).is_ok());
    }

    #[test]
    fn stat_lines_parse_past_a_command_with_parentheses() {
        let line = "42 (a (b) c) T 1 42 42 0 -1 4194560 100 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.comm.as_str(), stat.state, stat.kernel_thread), ("a (b) c", 'T', false));
        let kthread = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0").unwrap();
        assert_eq!(
            (kthread.comm.as_str(), kthread.state, kthread.kernel_thread),
            ("kthreadd", 'S', true)
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }

    #[test]
    fn a_pending_sigstop_in_either_mask_counts_as_bound_to_stop() {
        let status = |sig: &str, shd: &str| format!("Name:\tsh\nSigPnd:\t{sig}\nShdPnd:\t{shd}\n");
        assert!(stop_pending(&status("0000000000000000", "0000000000040000")));
        assert!(stop_pending(&status("0000000000040000", "0000000000000000")));
        assert!(!stop_pending(&status("0000000000000000", "0000000000020000")));
        assert!(!stop_pending("garbage"));
    }
}
