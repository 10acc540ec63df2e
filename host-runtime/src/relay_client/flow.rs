//! The client side of generation-10 exec flow control (PROTOCOL.md §8.4), for
//! [`crate::relay_client`]: acknowledging output, and holding stdin to the agent's window.
//!
//! ```text
//!  reader (drive):  exec.started ─► StdinWindow::start      exec.stdout/stderr ─► ack Σ(len+256)
//!                   exec.stdin.ack {consumed} ─► StdinWindow::acked        session end ─► close
//!  stdin feeder:    StdinWindow::reserve(n) (waits for started and room) ─► exec.stdin (≤ chunk)
//! ```
//!
//! This module owns the arithmetic and the waiting; it does not touch the socket.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use moat_protocol::limits::FLOW_CONTROL_GENERATION;
use moat_protocol::payload::exec::{ExecLimits, output_charge};

use crate::limits::STDIN_CHUNK_BYTES;

/// The flow-control policy of a connection: the Ready's `exec_limits` when the agent speaks
/// generation 10 (moat's requests always carry `v = 10`), else `None` (the legacy path).
pub fn policy(ready_v: u8, exec_limits: Option<ExecLimits>) -> Option<ExecLimits> {
    exec_limits.filter(|_| ready_v >= FLOW_CONTROL_GENERATION)
}

/// Largest stdin payload to send under `policy`.
pub fn stdin_chunk_bytes(policy: Option<&ExecLimits>) -> usize {
    policy.map_or(STDIN_CHUNK_BYTES, |p| STDIN_CHUNK_BYTES.min(p.stdin_chunk_size as usize))
}

/// Cumulative output charge received, the value `core.exec.output.ack` carries, and what was
/// last acknowledged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputAcks {
    consumed: u64,
    acked: u64,
}

impl OutputAcks {
    /// Counts one output chunk of `len` bytes; returns the new cumulative charge to ack.
    pub fn received(&mut self, len: usize) -> u64 {
        self.consumed += output_charge(len);
        self.consumed
    }

    /// The ack to send now, if one is due: when the reader is about to wait for more bytes
    /// (`idle`: nothing complete is buffered, so everything read so far must be acknowledged
    /// or the agent may wait forever), or when half of `window` is unacknowledged (so the agent
    /// never stalls on a busy stream). Batching acks this way sends one per socket read instead
    /// of one per chunk.
    pub fn due(&mut self, idle: bool, window: u64) -> Option<u64> {
        let unacked = self.consumed - self.acked;
        if unacked > 0 && (idle || unacked >= window / 2) {
            self.acked = self.consumed;
            return Some(self.consumed);
        }
        None
    }
}

#[derive(Debug, Default)]
struct StdinState {
    started: bool,
    closed: bool,
    sent: u64,
    acked: u64,
}

/// Stdin bytes sent and acknowledged, shared by the reader and the stdin feeder. Stdin goes
/// only after `exec.started` and keeps `sent − acked ≤ input_limit`.
#[derive(Debug)]
pub struct StdinWindow {
    state: Mutex<StdinState>,
    changed: Condvar,
    limit_bytes: u64,
}

impl StdinWindow {
    /// A window of `limit_bytes` unacknowledged stdin bytes.
    pub fn new(limit_bytes: u64) -> StdinWindow {
        StdinWindow { state: Mutex::default(), changed: Condvar::new(), limit_bytes }
    }

    fn lock(&self) -> MutexGuard<'_, StdinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut StdinState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// `exec.started` arrived: stdin may flow.
    pub fn start(&self) {
        self.update(|s| s.started = true);
    }

    /// `exec.stdin.ack {consumed}` arrived.
    pub fn acked(&self, consumed: u64) {
        self.update(|s| s.acked = s.acked.max(consumed));
    }

    /// The session is over: release the feeder.
    pub fn close(&self) {
        self.update(|s| s.closed = true);
    }

    /// Waits until the session has started and `len` more bytes fit, and counts them as sent.
    /// `false` when the session ended first (send nothing).
    pub fn reserve(&self, len: usize) -> bool {
        let len = len as u64;
        let mut state = self.lock();
        loop {
            if state.closed {
                return false;
            }
            if state.started && state.sent - state.acked.min(state.sent) + len <= self.limit_bytes {
                state.sent += len;
                return true;
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn policy_applies_only_at_generation_10_with_limits() {
        let limits = ExecLimits::default();
        assert_eq!(policy(10, Some(limits)), Some(limits));
        assert_eq!(policy(7, Some(limits)), None);
        assert_eq!(policy(10, None), None);
    }

    #[test]
    fn stdin_chunks_follow_the_policy() {
        assert_eq!(stdin_chunk_bytes(Some(&ExecLimits::default())), 16_384);
        assert_eq!(stdin_chunk_bytes(None), STDIN_CHUNK_BYTES);
    }

    #[test]
    fn acks_are_batched_until_idle_or_half_the_window() {
        let mut acks = OutputAcks::default();
        acks.received(100);
        assert_eq!(acks.due(false, 1000), None);
        acks.received(200);
        assert_eq!(acks.due(false, 1000), Some(812));
        acks.received(0);
        assert_eq!(acks.due(true, 1000), Some(1068));
        assert_eq!(acks.due(true, 1000), None, "nothing new to acknowledge");
    }

    #[test]
    fn output_acks_are_cumulative_charges() {
        let mut acks = OutputAcks::default();
        assert_eq!(acks.received(3), 259);
        assert_eq!(acks.received(0), 515);
    }

    #[test]
    fn stdin_waits_for_started_and_for_room() {
        let window = Arc::new(StdinWindow::new(10));
        let feeder = {
            let window = Arc::clone(&window);
            std::thread::spawn(move || (window.reserve(8), window.reserve(8)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!feeder.is_finished(), "sent before exec.started");
        window.start();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!feeder.is_finished(), "16 bytes in a 10-byte window");
        window.acked(8);
        assert_eq!(feeder.join().unwrap(), (true, true));
    }

    #[test]
    fn close_releases_a_waiting_feeder() {
        let window = Arc::new(StdinWindow::new(10));
        let feeder = {
            let window = Arc::clone(&window);
            std::thread::spawn(move || window.reserve(1))
        };
        window.close();
        assert!(!feeder.join().unwrap());
    }
}
