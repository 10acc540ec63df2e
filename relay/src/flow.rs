//! Generation-10 execution accounting per exec (PROTOCOL.md §13.5): the output charge routed to
//! the client and its acks, the stdin sent by the client and the agent's acks, and every rule
//! whose breach disconnects the client (and only that client).
//!
//! ```text
//!  guest core.exec.stdout/stderr ──► output(len)      sent += len + 256; sent − acked ≤ output_limit
//!  client core.exec.output.ack ────► output_ack(c)    acked ≤ c ≤ sent
//!  client core.exec.stdin ─────────► stdin(len)       after started, not after EOF,
//!                                                     len ≤ stdin_chunk_size,
//!                                                     sent + len − acked ≤ input_limit
//!  guest core.exec.stdin.ack ──────► stdin_ack(c)     acked = max(acked, min(c, sent))
//! ```
//!
//! This module owns the arithmetic only; which exec a frame belongs to, admission
//! (`max_executions`) and what a breach does are the router's business.

use moat_protocol::payload::exec::{ExecLimits, output_charge};

/// One flow-controlled exec's counters. All cumulative since the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecFlow {
    /// Output charge `Σ(len + 256)` routed to the client.
    pub output_sent: u64,
    /// The client's last `core.exec.output.ack`.
    pub output_acked: u64,
    /// Stdin bytes the client sent.
    pub stdin_sent: u64,
    /// The agent's last `core.exec.stdin.ack` (never above `stdin_sent`).
    pub stdin_acked: u64,
    /// The client sent stdin EOF (an empty `core.exec.stdin`).
    pub stdin_eof: bool,
}

/// A breach of §13.5 by a client (or by the agent, for output past the window): the relay
/// disconnects the exec's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowViolation {
    /// An output ack goes back from the previous one.
    #[error("output ack {consumed} on exec {id} goes back from {acked}")]
    AckRegresses {
        /// The exec.
        id: u32,
        /// The ack.
        consumed: u64,
        /// The previous ack.
        acked: u64,
    },
    /// An output ack claims more than was sent.
    #[error("output ack {consumed} on exec {id} exceeds the {sent} bytes of charge sent")]
    AckOverClaims {
        /// The exec.
        id: u32,
        /// The ack.
        consumed: u64,
        /// Charge sent.
        sent: u64,
    },
    /// The agent sent more unacknowledged output than the policy's window.
    #[error(
        "exec {id} has {outstanding} bytes of unacknowledged output, over the {limit}-byte window"
    )]
    OutputPastWindow {
        /// The exec.
        id: u32,
        /// Unacknowledged charge including this chunk.
        outstanding: u64,
        /// `output_limit`.
        limit: u32,
    },
    /// Stdin before the relay saw `core.exec.started`.
    #[error("stdin on exec {id} before core.exec.started")]
    StdinBeforeStarted {
        /// The exec.
        id: u32,
    },
    /// Stdin after the client's EOF.
    #[error("stdin on exec {id} after its EOF")]
    StdinAfterEof {
        /// The exec.
        id: u32,
    },
    /// A stdin chunk larger than `stdin_chunk_size`.
    #[error("a {len}-byte stdin chunk on exec {id} exceeds stdin_chunk_size {max}")]
    StdinChunkTooLarge {
        /// The exec.
        id: u32,
        /// The chunk.
        len: usize,
        /// `stdin_chunk_size`.
        max: u32,
    },
    /// Stdin beyond the unacknowledged window.
    #[error(
        "stdin on exec {id} would leave {outstanding} bytes unacknowledged, over input_limit {limit}"
    )]
    StdinPastWindow {
        /// The exec.
        id: u32,
        /// Unacknowledged bytes including this chunk.
        outstanding: u64,
        /// `input_limit`.
        limit: u32,
    },
    /// A `core.exec.request` on an id whose flow-controlled exec is still active.
    #[error("core.exec.request reuses the active exec id {id}")]
    ReusedExecId {
        /// The id.
        id: u32,
    },
    /// The agent answered a follow-up on a started exec with `core.error` (the client sent
    /// something the agent refused).
    #[error("the agent refused a frame on exec {id} with core.error")]
    RefusedOnExec {
        /// The exec.
        id: u32,
    },
}

impl ExecFlow {
    /// Counts an output chunk of `len` bytes routed on exec `id`.
    pub fn output(
        &mut self,
        id: u32,
        len: usize,
        limits: &ExecLimits,
    ) -> Result<(), FlowViolation> {
        self.output_sent = self.output_sent.saturating_add(output_charge(len));
        let outstanding = self.output_sent - self.output_acked;
        if outstanding > u64::from(limits.output_limit) {
            return Err(FlowViolation::OutputPastWindow {
                id,
                outstanding,
                limit: limits.output_limit,
            });
        }
        Ok(())
    }

    /// Applies the client's cumulative output ack on exec `id`. A repeat is fine.
    pub fn output_ack(&mut self, id: u32, consumed: u64) -> Result<(), FlowViolation> {
        if consumed < self.output_acked {
            return Err(FlowViolation::AckRegresses { id, consumed, acked: self.output_acked });
        }
        if consumed > self.output_sent {
            return Err(FlowViolation::AckOverClaims { id, consumed, sent: self.output_sent });
        }
        self.output_acked = consumed;
        Ok(())
    }

    /// Checks and counts a stdin chunk of `len` bytes (0 = EOF) from the client on exec `id`;
    /// `started` says whether `core.exec.started` was routed.
    pub fn stdin(
        &mut self,
        id: u32,
        len: usize,
        started: bool,
        limits: &ExecLimits,
    ) -> Result<(), FlowViolation> {
        if !started {
            return Err(FlowViolation::StdinBeforeStarted { id });
        }
        if self.stdin_eof {
            return Err(FlowViolation::StdinAfterEof { id });
        }
        if len == 0 {
            self.stdin_eof = true;
            return Ok(());
        }
        if len > limits.stdin_chunk_size as usize {
            return Err(FlowViolation::StdinChunkTooLarge {
                id,
                len,
                max: limits.stdin_chunk_size,
            });
        }
        let sent = self.stdin_sent.saturating_add(len as u64);
        let outstanding = sent - self.stdin_acked;
        if outstanding > u64::from(limits.input_limit) {
            return Err(FlowViolation::StdinPastWindow {
                id,
                outstanding,
                limit: limits.input_limit,
            });
        }
        self.stdin_sent = sent;
        Ok(())
    }

    /// The agent's cumulative stdin ack. It only widens the window, and never past what the
    /// client sent (an agent's over-claim cannot let a client overrun it).
    pub fn stdin_ack(&mut self, consumed: u64) {
        self.stdin_acked = self.stdin_acked.max(consumed.min(self.stdin_sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ExecLimits {
        ExecLimits {
            input_limit: 100,
            stdin_chunk_size: 40,
            output_limit: 600,
            ..ExecLimits::default()
        }
    }

    #[test]
    fn output_past_the_window_is_a_violation() {
        let mut flow = ExecFlow::default();
        assert_eq!(flow.output(7, 44, &small()), Ok(()));
        assert_eq!(flow.output(7, 44, &small()), Ok(()), "600 outstanding is the window");
        assert_eq!(
            flow.output(7, 0, &small()),
            Err(FlowViolation::OutputPastWindow { id: 7, outstanding: 856, limit: 600 })
        );
    }

    #[test]
    fn acks_make_room_for_more_output() {
        let mut flow = ExecFlow::default();
        flow.output(7, 44, &small()).unwrap();
        flow.output(7, 44, &small()).unwrap();
        flow.output_ack(7, 300).unwrap();
        assert_eq!(flow.output(7, 44, &small()), Ok(()));
    }

    #[test]
    fn output_acks_may_repeat_but_not_regress_or_over_claim() {
        let mut flow = ExecFlow::default();
        flow.output(7, 3, &small()).unwrap();
        assert_eq!(flow.output_ack(7, 259), Ok(()));
        assert_eq!(flow.output_ack(7, 259), Ok(()));
        assert_eq!(
            flow.output_ack(7, 260),
            Err(FlowViolation::AckOverClaims { id: 7, consumed: 260, sent: 259 })
        );
        assert_eq!(
            flow.output_ack(7, 1),
            Err(FlowViolation::AckRegresses { id: 7, consumed: 1, acked: 259 })
        );
    }

    #[test]
    fn stdin_before_started_is_a_violation() {
        let mut flow = ExecFlow::default();
        assert_eq!(
            flow.stdin(7, 1, false, &small()),
            Err(FlowViolation::StdinBeforeStarted { id: 7 })
        );
        assert_eq!(
            flow.stdin(7, 0, false, &small()),
            Err(FlowViolation::StdinBeforeStarted { id: 7 })
        );
    }

    #[test]
    fn nothing_may_follow_eof() {
        let mut flow = ExecFlow::default();
        assert_eq!(flow.stdin(7, 0, true, &small()), Ok(()));
        assert_eq!(flow.stdin(7, 1, true, &small()), Err(FlowViolation::StdinAfterEof { id: 7 }));
        assert_eq!(flow.stdin(7, 0, true, &small()), Err(FlowViolation::StdinAfterEof { id: 7 }));
    }

    #[test]
    fn a_chunk_over_stdin_chunk_size_is_a_violation() {
        let mut flow = ExecFlow::default();
        assert_eq!(flow.stdin(7, 40, true, &small()), Ok(()));
        assert_eq!(
            flow.stdin(7, 41, true, &small()),
            Err(FlowViolation::StdinChunkTooLarge { id: 7, len: 41, max: 40 })
        );
    }

    #[test]
    fn stdin_past_the_window_is_a_violation_until_the_agent_acks() {
        let mut flow = ExecFlow::default();
        flow.stdin(7, 40, true, &small()).unwrap();
        flow.stdin(7, 40, true, &small()).unwrap();
        assert_eq!(
            flow.stdin(7, 21, true, &small()),
            Err(FlowViolation::StdinPastWindow { id: 7, outstanding: 101, limit: 100 })
        );
        assert_eq!(flow.stdin(7, 20, true, &small()), Ok(()), "exactly the window");
        flow.stdin_ack(50);
        assert_eq!(flow.stdin(7, 40, true, &small()), Ok(()));
    }

    #[test]
    fn stdin_acks_never_go_back_or_past_what_was_sent() {
        let mut flow = ExecFlow::default();
        flow.stdin(7, 30, true, &small()).unwrap();
        flow.stdin_ack(1000);
        assert_eq!(flow.stdin_acked, 30);
        flow.stdin_ack(10);
        assert_eq!(flow.stdin_acked, 30);
    }
}
