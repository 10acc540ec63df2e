//! The exec sessions the relay has seen opened (PROTOCOL.md §13.4 side effects, §13.10).
//!
//! A client's `core.exec.request` (SESSION_START) registers its correlation id with a fresh
//! relay-global session number (1, 2, ...), the number `exec.log` lines carry. The session ends
//! with the exec's own terminal frame: `core.exec.exited`, `core.exec.failed`, or a `core.error`
//! before `core.exec.started` (PROTOCOL.md §13.5); another TERMINAL frame on the id (a
//! `core.tcp.failed` answering a tcp frame sent there, a `core.error` rejecting one follow-up)
//! ends nothing, since the process still runs. When its client leaves, the session stays registered
//! without an owner, so its remaining output is still logged until the guest ends it.
//!
//! This module owns that registry only; which client holds which ids, and what to send when a
//! client leaves, is the router's business.

use std::collections::HashMap;

use moat_protocol::exec_log::LogSource;
use moat_protocol::payload::exec::ExecLimits;

use crate::flow::{ExecFlow, FlowViolation};
use crate::limits::MAX_TRACKED_EXEC_SESSIONS;
use crate::router::ClientId;

/// One open exec session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecSession {
    /// Relay-assigned number, the `id` of its `exec.log` lines.
    pub number: u64,
    /// Whether the exec was opened with `tty: true` (its stdout is logged as `output`).
    pub tty: bool,
    /// The connected client that opened it; `None` once that client left.
    pub owner: Option<ClientId>,
    /// `core.exec.started` arrived: from then on only `exited` or `failed` ends it.
    pub started: bool,
    /// Generation-10 accounting (PROTOCOL.md §13.5), for a flow-controlled exec.
    pub flow: Option<ExecFlow>,
}

impl ExecSession {
    /// The `exec.log` source of this session's `core.exec.stdout` frames.
    pub fn stdout_source(&self) -> LogSource {
        if self.tty { LogSource::Output } else { LogSource::Stdout }
    }
}

/// The registry is at [`MAX_TRACKED_EXEC_SESSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relay already tracks {MAX_TRACKED_EXEC_SESSIONS} exec sessions")]
pub struct RegistryFull;

/// Open exec sessions by correlation id.
#[derive(Debug, Default)]
pub struct ExecSessions {
    by_id: HashMap<u32, ExecSession>,
    last_number: u64,
    /// Sessions in `by_id` with `flow` set.
    flow_controlled: usize,
}

impl ExecSessions {
    /// An empty registry; the first session gets number 1.
    pub fn new() -> ExecSessions {
        ExecSessions::default()
    }

    /// Registers a session on `id` and returns its number. An id still registered (a client
    /// reusing an id, or a new client in a slot whose previous owner's exec has not ended) is
    /// replaced: later output on it belongs to the new request.
    pub fn open(&mut self, id: u32, tty: bool, owner: ClientId) -> Result<u64, RegistryFull> {
        if !self.by_id.contains_key(&id) && self.by_id.len() >= MAX_TRACKED_EXEC_SESSIONS {
            return Err(RegistryFull);
        }
        self.last_number += 1;
        let number = self.last_number;
        let session = ExecSession { number, tty, owner: Some(owner), started: false, flow: None };
        if self.by_id.insert(id, session).is_some_and(|old| old.flow.is_some()) {
            self.flow_controlled -= 1;
        }
        Ok(number)
    }

    /// Turns on §13.5 accounting for the session on `id` (a `v >= 10` request to an agent
    /// with `exec_limits`).
    pub fn flow_control(&mut self, id: u32) {
        if let Some(session) = self.by_id.get_mut(&id) {
            if session.flow.is_none() {
                self.flow_controlled += 1;
            }
            session.flow = Some(ExecFlow::default());
        }
    }

    /// Flow-controlled sessions open now (they hold `max_executions` slots, sandbox-wide).
    pub fn flow_controlled(&self) -> usize {
        self.flow_controlled
    }

    /// Counts `len` bytes of output routed on `id`, if it is flow-controlled.
    pub fn charge(
        &mut self,
        id: u32,
        len: usize,
        limits: &ExecLimits,
    ) -> Result<(), FlowViolation> {
        match self.flow_mut(id) {
            Some(flow) => flow.output(id, len, limits),
            None => Ok(()),
        }
    }

    /// Applies a client's cumulative output ack on `id`. Acks on ids that are not
    /// flow-controlled sessions pass (the agent answers them).
    pub fn ack(&mut self, id: u32, consumed: u64) -> Result<(), FlowViolation> {
        match self.flow_mut(id) {
            Some(flow) => flow.output_ack(id, consumed),
            None => Ok(()),
        }
    }

    /// Checks and counts `len` bytes of client stdin (0 = EOF) on `id`, if it is
    /// flow-controlled.
    pub fn stdin(&mut self, id: u32, len: usize, limits: &ExecLimits) -> Result<(), FlowViolation> {
        let Some(session) = self.by_id.get_mut(&id) else { return Ok(()) };
        let started = session.started;
        match session.flow.as_mut() {
            Some(flow) => flow.stdin(id, len, started, limits),
            None => Ok(()),
        }
    }

    /// The agent's cumulative stdin ack on `id`.
    pub fn stdin_ack(&mut self, id: u32, consumed: u64) {
        if let Some(flow) = self.flow_mut(id) {
            flow.stdin_ack(consumed);
        }
    }

    fn flow_mut(&mut self, id: u32) -> Option<&mut ExecFlow> {
        self.by_id.get_mut(&id).and_then(|s| s.flow.as_mut())
    }

    /// The session on `id`, if one is open.
    pub fn get(&self, id: u32) -> Option<&ExecSession> {
        self.by_id.get(&id)
    }

    /// `core.exec.started` arrived on `id`.
    pub fn mark_started(&mut self, id: u32) {
        if let Some(session) = self.by_id.get_mut(&id) {
            session.started = true;
        }
    }

    /// Ends the session on `id` (its terminal frame), returning it.
    pub fn end(&mut self, id: u32) -> Option<ExecSession> {
        let session = self.by_id.remove(&id)?;
        if session.flow.is_some() {
            self.flow_controlled -= 1;
        }
        Some(session)
    }

    /// The owner of `id` left: keep logging the session's output, owned by nobody.
    pub fn orphan(&mut self, id: u32) {
        if let Some(session) = self.by_id.get_mut(&id) {
            session.owner = None;
        }
    }

    /// Sessions opened since the relay started.
    pub fn opened(&self) -> u64 {
        self.last_number
    }

    /// The ids of the sessions open now.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.keys().copied()
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_start_at_one_and_are_global() {
        let mut sessions = ExecSessions::new();
        assert_eq!(sessions.open(5, false, ClientId(1)), Ok(1));
        assert_eq!(sessions.open(40_000_000, true, ClientId(2)), Ok(2));
        assert_eq!(sessions.opened(), 2);
        assert_eq!(sessions.get(40_000_000).unwrap().stdout_source(), LogSource::Output);
        assert_eq!(sessions.get(5).unwrap().stdout_source(), LogSource::Stdout);
    }

    #[test]
    fn end_removes_the_session() {
        let mut sessions = ExecSessions::new();
        sessions.open(7, false, ClientId(1)).unwrap();
        assert_eq!(sessions.end(7).map(|s| s.number), Some(1));
        assert_eq!(sessions.get(7), None);
        assert_eq!(sessions.end(7), None);
        assert!(sessions.is_empty());
    }

    #[test]
    fn orphaned_session_keeps_its_number() {
        let mut sessions = ExecSessions::new();
        sessions.open(7, true, ClientId(1)).unwrap();
        sessions.orphan(7);
        assert_eq!(
            sessions.get(7),
            Some(&ExecSession { number: 1, tty: true, owner: None, started: false, flow: None })
        );
    }

    #[test]
    fn reopening_an_id_replaces_it_with_a_new_number() {
        let mut sessions = ExecSessions::new();
        sessions.open(7, false, ClientId(1)).unwrap();
        sessions.orphan(7);
        assert_eq!(sessions.open(7, true, ClientId(2)), Ok(2));
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.get(7).unwrap().owner, Some(ClientId(2)));
    }

    #[test]
    fn registry_refuses_past_its_cap() {
        let mut sessions = ExecSessions::new();
        for id in 0..MAX_TRACKED_EXEC_SESSIONS as u32 {
            sessions.open(id, false, ClientId(1)).unwrap();
        }
        assert_eq!(sessions.open(u32::MAX, false, ClientId(1)), Err(RegistryFull));
        // Replacing an id already tracked does not grow the registry.
        assert!(sessions.open(0, false, ClientId(1)).is_ok());
    }

    #[test]
    fn output_acks_are_checked_only_on_flow_controlled_sessions() {
        let limits = ExecLimits::default();
        let mut sessions = ExecSessions::new();
        sessions.open(7, false, ClientId(1)).unwrap();
        assert_eq!(sessions.charge(7, 3, &limits), Ok(()));
        assert_eq!(sessions.ack(7, u64::MAX), Ok(()), "legacy session: the agent decides");
        assert_eq!(sessions.stdin(7, 1 << 20, &limits), Ok(()), "legacy session: not checked");
        sessions.flow_control(7);
        assert_eq!(sessions.flow_controlled(), 1);
        sessions.charge(7, 3, &limits).unwrap();
        assert_eq!(sessions.ack(7, 259), Ok(()));
        assert_eq!(
            sessions.ack(7, 260),
            Err(FlowViolation::AckOverClaims { id: 7, consumed: 260, sent: 259 })
        );
        assert_eq!(sessions.stdin(7, 1, &limits), Err(FlowViolation::StdinBeforeStarted { id: 7 }));
        sessions.mark_started(7);
        assert_eq!(sessions.stdin(7, 1, &limits), Ok(()));
        sessions.open(7, false, ClientId(1)).unwrap();
        assert_eq!(sessions.flow_controlled(), 0, "a replaced session gives its slot back");
        sessions.flow_control(7);
        sessions.end(7);
        assert_eq!(sessions.flow_controlled(), 0, "an ended session gives its slot back");
    }
}
