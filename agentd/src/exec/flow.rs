//! Generation-10 output flow control of one exec session (PROTOCOL.md §8.4): the charge of the
//! output sent, the charge the host acknowledged, and the wait for room.
//!
//! ```text
//!  session task: wait_room(chunk + 256) ─► read one chunk ─► charge(len + 256) ─► send
//!  dispatcher:   exec.output.ack {consumed} ─► ack(consumed)  (cumulative; wakes the task)
//!  session task: child exited, pipes at EOF ─► wait_drained() ─► exec.exited
//! ```
//!
//! The session reads its child's output only while `sent − acked + next charge ≤ window`, so a
//! host that never acknowledges stops the child on its full pipe, the agent holds at most one
//! window per session, and `exec.exited` is withheld until every chunk is acknowledged. An ack
//! that goes backwards or past what was sent is refused ([`AckError`]); the manager then ends the
//! session ([`OutputWindow::abandon`]), which also releases a task waiting here.
//!
//! [`WindowState`] is the sans-IO core; [`OutputWindow`] adds the lock and the wake-up.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Why an output ack was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The ack is below an earlier one.
    #[error("output ack {consumed} goes back from the earlier ack {acked}")]
    Regresses {
        /// The refused value.
        consumed: u64,
        /// The earlier ack.
        acked: u64,
    },
    /// The ack claims more than the agent has sent.
    #[error("output ack {consumed} exceeds the {sent} bytes of charge sent")]
    OverClaims {
        /// The refused value.
        consumed: u64,
        /// Charge sent so far.
        sent: u64,
    },
}

/// Charge sent and acknowledged. Transitions: `charge` raises `sent`; a valid `ack` raises
/// `acked` (never past `sent`); `abandon` is final and lifts every limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowState {
    window_bytes: u64,
    sent: u64,
    acked: u64,
    abandoned: bool,
}

impl WindowState {
    /// Nothing sent yet, with a window of `window_bytes` of unacknowledged charge.
    pub(crate) fn new(window_bytes: u64) -> WindowState {
        WindowState { window_bytes, sent: 0, acked: 0, abandoned: false }
    }

    /// Whether `charge` more fits in the window (always, once abandoned).
    pub(crate) fn has_room(&self, charge: u64) -> bool {
        self.abandoned || self.outstanding().saturating_add(charge) <= self.window_bytes
    }

    /// Records `charge` as sent.
    pub(crate) fn charge(&mut self, charge: u64) {
        self.sent += charge;
    }

    /// Applies a cumulative ack. Repeating the last value is fine.
    pub(crate) fn ack(&mut self, consumed: u64) -> Result<(), AckError> {
        if consumed < self.acked {
            return Err(AckError::Regresses { consumed, acked: self.acked });
        }
        if consumed > self.sent {
            return Err(AckError::OverClaims { consumed, sent: self.sent });
        }
        self.acked = consumed;
        Ok(())
    }

    /// Whether every chunk sent has been acknowledged (or the session was abandoned).
    pub(crate) fn drained(&self) -> bool {
        self.abandoned || self.acked == self.sent
    }

    /// Unacknowledged charge.
    pub(crate) fn outstanding(&self) -> u64 {
        self.sent - self.acked
    }
}

/// The shared window: acked by the dispatcher, charged and waited on by the session task.
#[derive(Debug)]
pub(crate) struct OutputWindow {
    state: Mutex<WindowState>,
    wake: Notify,
}

impl OutputWindow {
    /// A window of `window_bytes` of unacknowledged charge.
    pub(crate) fn new(window_bytes: u64) -> OutputWindow {
        OutputWindow { state: Mutex::new(WindowState::new(window_bytes)), wake: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a host ack and wakes the session task.
    pub(crate) fn ack(&self, consumed: u64) -> Result<(), AckError> {
        self.lock().ack(consumed)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Ends flow control for good: the session is being killed and nothing more is sent.
    pub(crate) fn abandon(&self) {
        self.lock().abandoned = true;
        self.wake.notify_one();
    }

    /// Whether the session was abandoned.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Records `charge` as sent (before the chunk is queued, so its ack can never over-claim).
    pub(crate) fn charge(&self, charge: u64) {
        self.lock().charge(charge);
    }

    /// Waits until `ready` holds of the state. Only the session task waits.
    async fn wait_until(&self, ready: impl Fn(&WindowState) -> bool) {
        loop {
            if ready(&self.lock()) {
                return;
            }
            // `notify_one` stores a permit when nobody waits, so an ack between the check above
            // and this await is not missed.
            self.wake.notified().await;
        }
    }

    /// Waits until `charge` more fits in the window. Cancel-safe.
    pub(crate) async fn wait_room(&self, charge: u64) {
        self.wait_until(|s| s.has_room(charge)).await;
    }

    /// Waits until every chunk sent is acknowledged. Cancel-safe.
    pub(crate) async fn wait_drained(&self) {
        self.wait_until(WindowState::drained).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_runs_out_at_the_window_and_returns_on_ack() {
        let mut state = WindowState::new(1000);
        assert!(state.has_room(1000));
        state.charge(600);
        assert!(!state.has_room(401));
        assert!(state.has_room(400));
        state.ack(600).unwrap();
        assert!(state.has_room(1000));
    }

    #[test]
    fn ack_may_repeat_but_not_regress() {
        let mut state = WindowState::new(1000);
        state.charge(500);
        state.ack(300).unwrap();
        assert_eq!(state.ack(300), Ok(()));
        assert_eq!(state.ack(299), Err(AckError::Regresses { consumed: 299, acked: 300 }));
        assert_eq!(state.outstanding(), 200);
    }

    #[test]
    fn ack_past_what_was_sent_is_refused_and_changes_nothing() {
        let mut state = WindowState::new(1000);
        state.charge(259);
        assert_eq!(state.ack(260), Err(AckError::OverClaims { consumed: 260, sent: 259 }));
        assert_eq!(state.outstanding(), 259);
        assert!(!state.drained());
    }

    #[test]
    fn drained_only_when_everything_is_acknowledged() {
        let mut state = WindowState::new(1000);
        assert!(state.drained());
        state.charge(259);
        assert!(!state.drained());
        state.ack(259).unwrap();
        assert!(state.drained());
    }

    #[tokio::test]
    async fn abandon_releases_a_waiting_task() {
        let window = std::sync::Arc::new(OutputWindow::new(300));
        window.charge(300);
        let waiter = {
            let window = std::sync::Arc::clone(&window);
            tokio::spawn(async move { window.wait_drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        window.abandon();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(window.lock().has_room(u64::MAX / 2));
    }

    #[tokio::test]
    async fn an_ack_wakes_a_task_waiting_for_room() {
        let window = std::sync::Arc::new(OutputWindow::new(300));
        window.charge(300);
        let waiter = {
            let window = std::sync::Arc::clone(&window);
            tokio::spawn(async move { window.wait_room(100).await })
        };
        tokio::task::yield_now().await;
        window.ack(200).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
