//! The router's execution rules (PROTOCOL.md §13.5, §12 "sandbox paused") on client frames and
//! on the guest's exec replies. Only for an agent whose ready frame says generation 10 and has
//! `exec_limits`, and only for requests whose `v >= 10`; every other exec is on the legacy path
//! and passes through.
//!
//! ```text
//!  client core.exec.request ─► paused?          ─► relay answers core.error invalid_session
//!                              draining?        ─► relay answers core.error invalid_session
//!                              id active?        ─► disconnect (reused exec id)
//!                              max_executions?   ─► relay answers core.exec.failed resource_limit
//!                              else register, count, forward
//!  client core.exec.stdin / output.ack ─► ExecFlow rules ─► breach: disconnect that client
//!  guest  stdout/stderr ─► charge (past output_limit: disconnect the owner, frame dropped)
//!  guest  stdin.ack ─► widens the stdin window
//!  guest  core.error on a flow-controlled exec, started or not refusing the request itself
//!         ─► dropped, owner disconnected
//! ```
//!
//! A session-start frame while the workload is frozen (the agent answered the host's
//! `core.workload.freeze` on the private id, and has not yet answered a thaw) is refused by the
//! relay itself on every generation; so is a new `core.exec.request` once the host drains the
//! sandbox ([`Router::refuse_new_execs`]).

use moat_protocol::envelope::Envelope;
use moat_protocol::payload::core::{CoreError, CoreErrorKind};
use moat_protocol::payload::exec::{ExecFailed, ExecFailureKind};

use super::{ClientId, CloseReason, Effect, Router, decode_frame, encode};
use crate::flow::FlowViolation;
use moat_protocol::limits::FLOW_CONTROL_GENERATION;
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::message_type::MessageType;
use moat_protocol::{Decoded, RawFrame};

/// The relay's answer to a session start while the workload is frozen (PROTOCOL.md §12).
pub const PAUSED_MESSAGE: &str = "sandbox is paused; resume it before starting guest work";

/// The relay's answer to a new exec while the host drains the sandbox.
pub const DRAINING_MESSAGE: &str = "sandbox is draining; it takes no new execs";

/// The relay's answer when `max_executions` execs are active (PROTOCOL.md §13.5).
pub const ADMISSION_MESSAGE: &str = "active execution limit reached";

/// What the router does with a client frame after the execution rules.
pub(super) enum Verdict {
    /// Forward it.
    Forward,
    /// Do not forward it; the relay answered it (these effects) itself.
    Answered(Vec<Effect>),
}

impl Router {
    /// The execution rules for one client message that passed the §13.4 checks.
    pub(super) fn client_message(
        &mut self,
        client: ClientId,
        frame: &RawFrame,
        envelope: &Envelope<'_>,
    ) -> Result<Verdict, CloseReason> {
        let t = MessageType::from_wire_name(&envelope.t);
        let session_start = frame.flags == moat_protocol::Flags::SESSION_START;
        if session_start && self.paused {
            let refusal = paused_refusal(t);
            return Ok(Verdict::Answered(self.answer(client, frame.id, envelope.v, refusal)));
        }
        if session_start && self.refusing_execs && t == Some(MessageType::ExecRequest) {
            let refusal = refusal(t, DRAINING_MESSAGE);
            return Ok(Verdict::Answered(self.answer(client, frame.id, envelope.v, refusal)));
        }
        let flow = self.limits.filter(|_| envelope.v >= FLOW_CONTROL_GENERATION);
        match t {
            Some(MessageType::ExecRequest) if session_start => {
                if let Some(limits) = flow {
                    if self.sessions.get(frame.id).is_some_and(|s| s.flow.is_some()) {
                        return Err(FlowViolation::ReusedExecId { id: frame.id }.into());
                    }
                    if self.sessions.flow_controlled() >= limits.max_executions as usize {
                        let refusal = Message::ExecFailed(admission_refusal());
                        return Ok(Verdict::Answered(
                            self.answer(client, frame.id, envelope.v, refusal),
                        ));
                    }
                }
                self.open_exec(client, frame.id, &envelope.p)?;
                if flow.is_some() {
                    self.sessions.flow_control(frame.id);
                }
            }
            Some(MessageType::ExecOutputAck) => {
                // An undecodable ack is forwarded: the agent answers it with core.error.
                if let Ok(Message::ExecOutputAck(ack)) =
                    Message::decode_payload(MessageType::ExecOutputAck, &envelope.p)
                {
                    self.sessions.ack(frame.id, ack.consumed)?;
                }
            }
            Some(MessageType::ExecStdin) => {
                if let (Some(limits), Ok(Message::ExecStdin(data))) =
                    (self.limits, Message::decode_payload(MessageType::ExecStdin, &envelope.p))
                {
                    self.sessions.stdin(frame.id, data.data.len(), &limits)?;
                }
            }
            _ => {}
        }
        Ok(Verdict::Forward)
    }

    /// The execution rules for a guest frame on a registered exec id: output charge, stdin
    /// acks, and `core.error` on a flow-controlled exec. `Err` means: drop the frame and
    /// disconnect the exec's owner.
    pub(super) fn guest_exec_frame(
        &mut self,
        frame: &RawFrame,
        t: Option<MessageType>,
        output_len: Option<usize>,
    ) -> Result<(), FlowViolation> {
        let Some(limits) = self.limits else { return Ok(()) };
        let Some(session) = self.sessions.get(frame.id).copied() else { return Ok(()) };
        if session.flow.is_none() {
            return Ok(());
        }
        if let Some(len) = output_len {
            return self.sessions.charge(frame.id, len, &limits);
        }
        match t {
            Some(MessageType::ExecStdinAck) => {
                if let Ok(Decoded::Message(MessageFrame {
                    message: Message::ExecStdinAck(ack),
                    ..
                })) = decode_frame(frame)
                {
                    self.sessions.stdin_ack(frame.id, ack.consumed);
                }
                Ok(())
            }
            Some(MessageType::Error) if session.started || !refuses_request(frame) => {
                Err(FlowViolation::RefusedOnExec { id: frame.id })
            }
            _ => Ok(()),
        }
    }

    /// Queues a relay-made TERMINAL reply `message` on `id` for `client`, with the request's `v`.
    pub(super) fn answer(
        &mut self,
        client: ClientId,
        id: u32,
        v: u8,
        message: Message,
    ) -> Vec<Effect> {
        let now = self.clock;
        let Some(bytes) = encode(MessageFrame { id, v, message }) else { return Vec::new() };
        let Some(state) = self.clients.get_mut(&client) else { return Vec::new() };
        match state.queue.try_push(bytes.len(), now) {
            Ok(()) => {
                self.stats.frames_to_clients += 1;
                vec![Effect::ToClient { client, bytes }]
            }
            Err(overflow) => self.close(client, CloseReason::QueueOverflow(overflow)),
        }
    }
}

/// Whether a guest `core.error` names `core.exec.request` as what it refuses.
fn refuses_request(frame: &RawFrame) -> bool {
    matches!(
        decode_frame(frame),
        Ok(Decoded::Message(MessageFrame { message: Message::Error(e), .. }))
            if e.offending_type.as_deref() == Some(MessageType::ExecRequest.wire_name())
    )
}

/// `core.exec.failed {resource_limit, stage: execution_admission}`.
fn admission_refusal() -> ExecFailed {
    ExecFailed {
        kind: ExecFailureKind::ResourceLimit,
        errno: None,
        errno_name: None,
        message: ADMISSION_MESSAGE.to_owned(),
        stage: Some("execution_admission".to_owned()),
    }
}

/// The relay's terminal refusal of a session start of type `t` while paused: `core.error
/// invalid_session` (PROTOCOL.md §12), naming the type when it is a known one.
fn paused_refusal(t: Option<MessageType>) -> Message {
    refusal(t, PAUSED_MESSAGE)
}

/// A terminal `core.error invalid_session` with `message`, naming `t` when it is known.
fn refusal(t: Option<MessageType>, message: &str) -> Message {
    Message::Error(CoreError {
        kind: CoreErrorKind::InvalidSession,
        message: message.to_owned(),
        offending_type: t.map(|t| t.wire_name().to_owned()),
        init_failure: None,
        workload_failure: None,
    })
}
