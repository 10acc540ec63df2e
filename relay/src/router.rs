//! The relay's sans-IO core: clients, slots, routing, validation outcomes, exec sessions and the
//! `exec.log` tap (PROTOCOL.md §13.2–§13.4, §13.6 unleased, §13.10, §8.5).
//!
//! ```text
//!  inputs                                   effects (run in order by the driver)
//!  ──────                                   ───────
//!  client_connected ─┐                   ┌─ ToClient { client, bytes }   queue on the client's writer
//!  client_frame ─────┤                   ├─ ToGuest(bytes)               queue on the guest writer
//!  client_wrote ─────┤                   ├─ CloseClient { client, why }  stop that client's tasks
//!  client_disconnected┼──► Router ───────┼─ ReleaseSlot(slot)            after the ToGuest before it
//!  guest_frame ──────┤                   ├─ ExecLog(entry)               append to exec.log
//!  tick ─────────────┘                   └─ ShutdownRequested { client } a client sent SHUTDOWN
//! ```
//!
//! Client life: `connected → Open → (CloseClient) Closing → (client_disconnected) gone`; a client
//! may also go from Open straight to gone (it hung up). Slot life follows [`SlotTable`]:
//! `Free → Leased` on connect, `Leased → Quarantined` on disconnect, and `Quarantined → Free`
//! once (a) the driver called [`Router::release_slot`] (the disconnect notice is queued for
//! the guest, so no frame of a new client in that slot can overtake it), (b) every exec session
//! the client left open has sent its terminal frame (the agent killed it), and (c) the agent
//! answered the barrier `core.ping` queued right after the notice (so every reply it made to the
//! departed client's frames, which it handled before the ping, has been routed, and dropped); or
//! once [`ORPHANED_EXEC_DRAIN_MS`] passed. Until then a new client cannot get ids on which the
//! agent still runs, and will still report, a departed client's sessions or replies.
//!
//! The barrier ping goes on a relay-private id no client is ever given: slot k's uses the
//! boundary id `(k + 1) * STEP` (PROTOCOL.md §13.3), and its pong is taken here, never routed.
//! Agents older than generation 6 have no `core.ping`; for them there is no barrier.
//!
//! Guest frames are routed by id, byte for byte, to the client owning the id's slot. A frame that
//! does not fit the client's bounded queue disconnects that client; the guest stream never waits
//! for a client. This module does no I/O and never blocks; time comes in as an argument.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use moat_protocol::error::{DecodeError, EncodeError};
use moat_protocol::exec_log::LogSource;
use moat_protocol::limits::{FLOW_CONTROL_GENERATION, RELAY_SLOTS};
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::message_type::MessageType;
use moat_protocol::payload::core::RelayClientDisconnected;
use moat_protocol::payload::exec::{ExecLimits, ExecSignal};
use moat_protocol::relay::{Prologue, Slot, WORKLOAD_CHANNEL_ID};
use moat_protocol::{Decoded, Flags, RawFrame, decode_frame};

use crate::bulk::{BulkViolation, ClientBulk, RecordVerdict};
use crate::exec_log::{LogEntry, SANDBOX_STARTED, SANDBOX_STOPPED};
use crate::flow::FlowViolation;
use crate::limits::{MAX_OPEN_EXECS_PER_CLIENT, ORPHANED_EXEC_DRAIN_MS};
use crate::outbound::{OutboundQueue, Overflow};
use crate::sessions::{ExecSession, ExecSessions};
use crate::slots::{SlotTable, barrier_id, barrier_slot};
use crate::validate::{Checked, Violation, check_client_frame};

mod bulk_rules;
mod execution;
pub use bulk_rules::TOO_MANY_BULK_MESSAGE;
use execution::Verdict;
pub use execution::{ADMISSION_MESSAGE, DRAINING_MESSAGE, PAUSED_MESSAGE};

/// The signal sent to a departed client's open execs (SIGKILL, to the process group).
const KILL_SIGNAL: i32 = 9;

/// A connected client, unique for the relay's lifetime (slots are reused, ids are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Queue these bytes on the client's writer (already counted against its queue).
    ToClient {
        /// The client.
        client: ClientId,
        /// One frame (or the greeting), byte for byte.
        bytes: Bytes,
    },
    /// Queue this frame for the guest.
    ToGuest(Bytes),
    /// Stop the client's reader and writer; the reader then reports
    /// [`Router::client_disconnected`].
    CloseClient {
        /// The client.
        client: ClientId,
        /// Why.
        reason: CloseReason,
    },
    /// Once every `ToGuest` before this one is queued, call [`Router::release_slot`].
    ReleaseSlot(Slot),
    /// Append to `exec.log`.
    ExecLog(LogEntry),
    /// A client sent a SHUTDOWN frame (forwarded as well): the host may start its fallback timer.
    ShutdownRequested {
        /// The client.
        client: ClientId,
    },
    /// A guest frame on the private workload channel ([`WORKLOAD_CHANNEL_ID`]), byte for byte,
    /// for the host: never routed to a client.
    ToHost(Bytes),
}

/// Why the relay disconnects a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// A frame failed the §13.4 checks.
    #[error("protocol violation: {0}")]
    Violation(#[from] Violation),
    /// A generation-10 execution rule was broken (§13.5).
    #[error("execution flow control: {0}")]
    Flow(#[from] FlowViolation),
    /// A raw bulk rule was broken (§13.4 rules 6 and 7).
    #[error("raw bulk: {0}")]
    Bulk(#[from] BulkViolation),
    /// Opening one more exec would pass [`MAX_OPEN_EXECS_PER_CLIENT`] or the relay-wide cap.
    #[error("too many open exec sessions")]
    TooManyExecs,
    /// A guest frame for the client did not fit its outbound queue.
    #[error(
        "slow client: {} queued frames / {} queued bytes, no room for a {}-byte frame",
        .0.queued_frames, .0.queued_bytes, .0.frame_bytes
    )]
    QueueOverflow(Overflow),
    /// Queued output made no progress for the stall deadline.
    #[error("slow client: queued output made no progress for {} ms", waited.as_millis())]
    Stalled {
        /// How long it waited.
        waited: Duration,
    },
    /// Writing to the client's socket failed.
    #[error("writing to the client failed")]
    WriteFailed,
}

/// All 128 slots are taken: the connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {RELAY_SLOTS} relay slots are in use")]
pub struct AllSlotsBusy;

/// A newly accepted client.
#[derive(Debug)]
pub struct Connected {
    /// Its id.
    pub client: ClientId,
    /// Its slot (the range is `slot.range()`).
    pub slot: Slot,
    /// The greeting (prologue + ready) to queue.
    pub effects: Vec<Effect>,
}

/// The ready frame handed to [`Router::new`] is not a `core.ready` announcement.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// Not id 0 with flags 0.
    #[error("ready frame must have id 0 and flags 0, got id {id} flags {flags}")]
    Header {
        /// The id.
        id: u32,
        /// The flags.
        flags: Flags,
    },
    /// The frame does not decode.
    #[error("ready frame does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The frame is another message or record.
    #[error("expected core.ready, got {found}")]
    NotReady {
        /// What it was.
        found: String,
    },
    /// The frame cannot be written back out.
    #[error("ready frame cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
}

/// A guest frame that makes the relay fail (PROTOCOL.md §1.2: a bad flags byte from the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestFrameError {
    /// The flags byte is a combination or uses reserved bits.
    #[error("guest frame on id {id} has invalid flags byte {flags}")]
    InvalidFlags {
        /// The frame's id.
        id: u32,
        /// Its flags.
        flags: Flags,
    },
}

/// Counters, for the host's logs and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Connections given a slot.
    pub clients_accepted: u64,
    /// Connections closed at once because every slot was taken.
    pub clients_refused: u64,
    /// Clients disconnected for a protocol violation or too many execs.
    pub clients_closed_for_violation: u64,
    /// Clients disconnected for not reading their output (overflow or stall).
    pub slow_clients_closed: u64,
    /// Frames queued for the guest: forwarded client frames and disconnect clean-up.
    pub frames_to_guest: u64,
    /// Frames read from the guest.
    pub frames_from_guest: u64,
    /// Guest frames queued for a client.
    pub frames_to_clients: u64,
    /// Guest frames dropped: id 0 after ready, no owning client, outside every slot.
    pub guest_frames_dropped: u64,
    /// Exec sessions registered.
    pub exec_sessions_opened: u64,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Frames flow both ways.
    Open,
    /// The relay decided to drop it; its frames are ignored and nothing more is routed to it.
    Closing,
}

#[derive(Debug)]
struct Client {
    slot: Slot,
    phase: Phase,
    queue: OutboundQueue,
    /// Exec ids this client opened whose session has not ended.
    execs: BTreeSet<u32>,
    /// Its raw bulk operations.
    bulk: ClientBulk,
}

/// A departed client's quarantined slot whose exec sessions have not all ended, or whose barrier
/// ping has not been answered.
#[derive(Debug)]
struct Draining {
    /// Exec ids the client left open whose terminal frame has not arrived.
    execs: BTreeSet<u32>,
    /// The barrier `core.ping` queued after the notice has not been answered yet.
    barrier_pending: bool,
    /// The driver called [`Router::release_slot`]: the disconnect notice is queued.
    notice_queued: bool,
    /// The first tick after the notice was queued; [`ORPHANED_EXEC_DRAIN_MS`] counts from it.
    since: Option<Instant>,
}

/// The relay core. See the module documentation for inputs, effects and states.
#[derive(Debug)]
pub struct Router {
    /// The agent's `core.ready` frame, byte for byte, sent after every prologue.
    ready: Bytes,
    slots: SlotTable,
    owners: [Option<ClientId>; RELAY_SLOTS as usize],
    clients: HashMap<ClientId, Client>,
    sessions: ExecSessions,
    /// Quarantined slots waiting for their departed client's exec sessions to end, or for the
    /// agent to answer their barrier ping.
    draining: HashMap<Slot, Draining>,
    /// The agent answers `core.ping` (its ready frame says generation 6 or later): disconnects
    /// queue a barrier ping.
    barrier: bool,
    /// The agent's policy when it flow-controls `v >= 10` execs (its ready frame says
    /// generation 10 and has `exec_limits`): the relay applies §13.5 to them.
    limits: Option<ExecLimits>,
    /// The agent answered `core.workload.freeze` and no thaw since: session starts are refused.
    paused: bool,
    /// The host is draining the sandbox ([`Router::refuse_new_execs`]): new exec sessions are
    /// refused, the open ones run to their end.
    refusing_execs: bool,
    /// The latest time an input brought (for relay-made replies to client frames).
    clock: Instant,
    next_client: u64,
    stats: RouterStats,
}

impl Router {
    /// A router serving `ready`, the agent's `core.ready` frame (id 0, flags 0). Moat adds
    /// nothing to it: no `local_transport`, no `exec_control`.
    pub fn new(ready: &RawFrame) -> Result<Router, ReadyError> {
        if ready.id != 0 || ready.flags != Flags::NONE {
            return Err(ReadyError::Header { id: ready.id, flags: ready.flags });
        }
        let (barrier, limits) = match decode_frame(ready)? {
            Decoded::Message(MessageFrame { message: Message::Ready(ready), v, .. }) => (
                v >= MessageType::Ping.introduced_in(),
                ready.exec_limits.filter(|_| v >= FLOW_CONTROL_GENERATION),
            ),
            Decoded::Message(other) => {
                return Err(ReadyError::NotReady { found: other.message.wire_name().to_owned() });
            }
            Decoded::Bulk(_) | Decoded::Lease(_) | Decoded::LocalTransport(_) => {
                return Err(ReadyError::NotReady { found: "a non-message record".into() });
            }
        };
        Ok(Router {
            ready: Bytes::from(ready.to_bytes()?),
            slots: SlotTable::new(),
            owners: [None; RELAY_SLOTS as usize],
            clients: HashMap::new(),
            sessions: ExecSessions::new(),
            draining: HashMap::new(),
            barrier,
            limits,
            paused: false,
            refusing_execs: false,
            clock: Instant::now(),
            next_client: 0,
            stats: RouterStats::default(),
        })
    }

    /// The relay starts serving: the `--- sandbox started ---` marker.
    pub fn start(&self) -> Vec<Effect> {
        vec![Effect::ExecLog(LogEntry::System(SANDBOX_STARTED))]
    }

    /// The relay stops: the `--- sandbox stopped ---` marker.
    pub fn stop(&self) -> LogEntry {
        LogEntry::System(SANDBOX_STOPPED)
    }

    /// A connection was accepted: lease the lowest free slot and greet it with the prologue and
    /// the ready frame, or refuse it when all 128 slots are taken.
    pub fn client_connected(&mut self, now: Instant) -> Result<Connected, AllSlotsBusy> {
        self.clock = now;
        let Ok(slot) = self.slots.lease() else {
            self.stats.clients_refused += 1;
            return Err(AllSlotsBusy);
        };
        self.next_client += 1;
        let client = ClientId(self.next_client);
        let prologue = Prologue::for_slot(slot).to_bytes();
        let mut greeting = BytesMut::with_capacity(prologue.len() + self.ready.len());
        greeting.extend_from_slice(&prologue);
        greeting.extend_from_slice(&self.ready);
        let greeting = greeting.freeze();
        let mut queue = OutboundQueue::default();
        // An empty queue always has room for the greeting (checked in limits.rs).
        let _ = queue.try_push(greeting.len(), now);
        self.clients.insert(
            client,
            Client {
                slot,
                phase: Phase::Open,
                queue,
                execs: BTreeSet::new(),
                bulk: ClientBulk::default(),
            },
        );
        self.owners[slot.index() as usize] = Some(client);
        self.stats.clients_accepted += 1;
        tracing::info!(%client, slot = slot.index(), "relay client connected");
        Ok(Connected { client, slot, effects: vec![Effect::ToClient { client, bytes: greeting }] })
    }

    /// A frame from `client`: check it, note exec sessions and shutdown, forward it.
    pub fn client_frame(&mut self, client: ClientId, frame: &RawFrame) -> Vec<Effect> {
        self.client_wire_frame(client, frame, wire_bytes(frame))
    }

    /// [`Router::client_frame`] given the frame's wire bytes as received (from
    /// [`moat_protocol::frame::split_frame_with_wire`]): they are forwarded as they are, so the
    /// header is not written again and the body not copied. `None` forwards nothing.
    pub fn client_wire_frame(
        &mut self,
        client: ClientId,
        frame: &RawFrame,
        wire: Option<Bytes>,
    ) -> Vec<Effect> {
        debug_assert!(wire.as_ref().is_none_or(|w| w.len() == frame.wire_len()));
        let Some(state) = self.clients.get(&client) else { return Vec::new() };
        if state.phase == Phase::Closing {
            return Vec::new();
        }
        let checked = match check_client_frame(state.slot.range(), frame) {
            Ok(checked) => checked,
            Err(violation) => return self.close(client, violation.into()),
        };
        let mut effects = Vec::new();
        match checked {
            Checked::Message(envelope) => {
                let verdict =
                    self.client_message(client, frame, &envelope).and_then(
                        |verdict| match verdict {
                            Verdict::Forward => self.client_bulk_open(client, frame, &envelope),
                            answered @ Verdict::Answered(_) => Ok(answered),
                        },
                    );
                match verdict {
                    Ok(Verdict::Forward) => {}
                    Ok(Verdict::Answered(answer)) => return answer,
                    Err(reason) => return self.close(client, reason),
                }
            }
            Checked::Bulk => match self.client_bulk_record(client, frame) {
                Ok(RecordVerdict::Forward) => {}
                Ok(RecordVerdict::Discard) => return effects,
                Err(reason) => return self.close(client, reason),
            },
            Checked::EmptyShutdown => {}
        }
        if frame.flags == Flags::SHUTDOWN {
            tracing::info!(%client, "client requested sandbox shutdown");
            effects.push(Effect::ShutdownRequested { client });
        }
        if let Some(bytes) = wire {
            self.stats.frames_to_guest += 1;
            effects.push(Effect::ToGuest(bytes));
        }
        effects
    }

    /// The client's byte stream is not framed (bad length, or it ended inside a frame).
    pub fn client_stream_error(&mut self, client: ClientId, violation: Violation) -> Vec<Effect> {
        self.close(client, CloseReason::Violation(violation))
    }

    /// The client's writer put `frames` frames of `bytes` bytes on its socket.
    pub fn client_wrote(&mut self, client: ClientId, frames: usize, bytes: usize, now: Instant) {
        self.clock = now;
        if let Some(state) = self.clients.get_mut(&client) {
            state.queue.wrote(frames, bytes, now);
        }
    }

    /// Writing to the client's socket failed.
    pub fn client_write_failed(&mut self, client: ClientId) -> Vec<Effect> {
        self.close(client, CloseReason::WriteFailed)
    }

    /// Whether the relay should stop reading `client`'s requests until its output drains.
    pub fn backlogged(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_some_and(|state| state.queue.backlogged())
    }

    /// The client is gone (it hung up, or its tasks stopped after [`Effect::CloseClient`]).
    /// Sends `core.exec.signal {9}` on each exec it opened that has not ended, then
    /// `core.relay.client.disconnected` for its range (id 0, no incarnation: moat's agent does
    /// not lease ranges), then asks for the slot to be released.
    pub fn client_disconnected(&mut self, client: ClientId) -> Vec<Effect> {
        let Some(state) = self.clients.remove(&client) else { return Vec::new() };
        let slot = state.slot;
        self.owners[slot.index() as usize] = None;
        if let Err(err) = self.slots.quarantine(slot) {
            tracing::error!(%client, error = %err, "slot table out of step");
        }
        let mut effects = Vec::with_capacity(state.execs.len() + 2);
        for &id in &state.execs {
            self.sessions.orphan(id);
            let kill = Message::ExecSignal(ExecSignal { signal: KILL_SIGNAL });
            effects.extend(encode(MessageFrame::new(id, kill)).map(Effect::ToGuest));
        }
        let range = slot.range();
        let notice = Message::RelayClientDisconnected(RelayClientDisconnected {
            id_start: range.start,
            id_end_exclusive: range.end_exclusive,
            incarnation: None,
        });
        effects.extend(encode(MessageFrame::new(0, notice)).map(Effect::ToGuest));
        if self.barrier {
            let ping = MessageFrame::new(barrier_id(slot), Message::Ping);
            effects.extend(encode(ping).map(Effect::ToGuest));
        }
        self.stats.frames_to_guest += effects.len() as u64;
        if !state.execs.is_empty() || self.barrier {
            let draining = Draining {
                execs: state.execs.clone(),
                barrier_pending: self.barrier,
                notice_queued: false,
                since: None,
            };
            self.draining.insert(slot, draining);
        }
        effects.push(Effect::ReleaseSlot(slot));
        tracing::info!(%client, slot = slot.index(), killed_execs = state.execs.len(), "relay client disconnected");
        effects
    }

    /// The disconnect notice for `slot` is queued for the guest: the slot is free again, unless
    /// exec sessions its client left open have not ended yet (then it frees when they have).
    pub fn release_slot(&mut self, slot: Slot) {
        if let Some(draining) = self.draining.get_mut(&slot) {
            draining.notice_queued = true;
        }
        self.free_if_drained(slot);
    }

    /// Frees `slot` unless it is still draining (notice not queued, execs open, barrier
    /// unanswered).
    fn free_if_drained(&mut self, slot: Slot) {
        if let Some(draining) = self.draining.get(&slot) {
            if !draining.notice_queued || !draining.execs.is_empty() || draining.barrier_pending {
                return;
            }
            self.draining.remove(&slot);
        }
        self.free_slot(slot);
    }

    fn free_slot(&mut self, slot: Slot) {
        if let Err(err) = self.slots.release(slot) {
            tracing::error!(slot = slot.index(), error = %err, "slot table out of step");
        }
    }

    /// A frame from the guest: tap exec output, end sessions on TERMINAL, route by id.
    pub fn guest_frame(
        &mut self,
        frame: &RawFrame,
        now: Instant,
    ) -> Result<Vec<Effect>, GuestFrameError> {
        self.guest_wire_frame(frame, wire_bytes(frame), now)
    }

    /// [`Router::guest_frame`] given the frame's wire bytes as received (see
    /// [`Router::client_wire_frame`]); `None` routes nothing to a client.
    pub fn guest_wire_frame(
        &mut self,
        frame: &RawFrame,
        wire: Option<Bytes>,
        now: Instant,
    ) -> Result<Vec<Effect>, GuestFrameError> {
        debug_assert!(wire.as_ref().is_none_or(|w| w.len() == frame.wire_len()));
        if !frame.flags.is_wire_valid() {
            return Err(GuestFrameError::InvalidFlags { id: frame.id, flags: frame.flags });
        }
        self.stats.frames_from_guest += 1;
        self.clock = now;
        if frame.id == WORKLOAD_CHANNEL_ID {
            return Ok(self.workload_frame(frame, wire));
        }
        if frame.id == 0 {
            self.drop_id0_frame(frame);
            return Ok(Vec::new());
        }
        if let Some(slot) = barrier_slot(frame.id) {
            // The agent's answer to a disconnect barrier: everything it sent before this for the
            // departed client has been routed (to nobody).
            match self.draining.get_mut(&slot) {
                Some(draining) if draining.barrier_pending => {
                    draining.barrier_pending = false;
                    // The agent handled the disconnect notice before this ping: it killed the
                    // client's flow-controlled execs and abandoned them (nobody is left to ack
                    // their output), so they report nothing more. That is its cleanup
                    // confirmation: their sessions end here, and so do their admission slots
                    // (PROTOCOL.md §13.5). Legacy execs still end on their own `exited`.
                    let sessions = &mut self.sessions;
                    draining.execs.retain(|&id| {
                        let abandoned = sessions.get(id).is_some_and(|s| s.flow.is_some());
                        if abandoned {
                            sessions.end(id);
                        }
                        !abandoned
                    });
                    self.free_if_drained(slot);
                }
                Some(_) | None => self.stats.guest_frames_dropped += 1,
            }
            return Ok(Vec::new());
        }
        let Some(slot) = Slot::of_id(frame.id) else {
            self.stats.guest_frames_dropped += 1;
            tracing::warn!(id = frame.id, flags = %frame.flags, "dropping guest frame outside every client range");
            return Ok(Vec::new());
        };
        let mut effects = Vec::new();
        match self.tap(frame, &mut effects) {
            None => self.route(slot, frame, wire, now, &mut effects),
            Some((owner, violation)) => {
                self.stats.guest_frames_dropped += 1;
                effects.extend(self.close(owner, violation.into()));
            }
        }
        Ok(effects)
    }

    /// Whether routing `frame` now would overflow the queue of a client that is still reading
    /// (see [`crate::limits::CLIENT_BACKLOG_PATIENCE_MS`]): the guest reader then waits for room
    /// instead of handing it over. `false` when it fits, has no client, or the client stopped
    /// reading (routing it then disconnects that client).
    pub fn guest_frame_must_wait(&self, frame: &RawFrame, now: Instant) -> bool {
        let Some(slot) = Slot::of_id(frame.id).filter(|_| frame.id != 0) else { return false };
        let owner = self.owners[slot.index() as usize];
        owner.and_then(|client| self.clients.get(&client)).is_some_and(|state| {
            state.phase == Phase::Open
                && !state.queue.has_room(frame.wire_len())
                && state.queue.progressing(now)
        })
    }

    /// Housekeeping: free slots whose orphaned execs outlived [`ORPHANED_EXEC_DRAIN_MS`], and
    /// disconnect clients whose queued output stalled.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        self.clock = now;
        self.expire_draining(now);
        let mut stalled: Vec<(ClientId, Duration)> = self
            .clients
            .iter()
            .filter(|(_, state)| state.phase == Phase::Open)
            .filter_map(|(client, state)| state.queue.stalled(now).map(|waited| (*client, waited)))
            .collect();
        stalled.sort();
        stalled
            .into_iter()
            .flat_map(|(client, waited)| self.close(client, CloseReason::Stalled { waited }))
            .collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> RouterStats {
        RouterStats { exec_sessions_opened: self.sessions.opened(), ..self.stats }
    }

    /// The open exec session on `id`, if any.
    pub fn exec_session(&self, id: u32) -> Option<ExecSession> {
        self.sessions.get(id).copied()
    }

    /// Clients connected (open or closing).
    pub fn connected_clients(&self) -> usize {
        self.clients.len()
    }

    /// Exec sessions open now, including those of departed clients whose terminal frame has not
    /// arrived; never more than [`crate::limits::MAX_TRACKED_EXEC_SESSIONS`].
    pub fn open_exec_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// `client`'s queued output as (frames, bytes): handed to its writer, not yet reported
    /// written. `None` once the client is gone.
    pub fn queued_output(&self, client: ClientId) -> Option<(usize, usize)> {
        self.clients.get(&client).map(|state| (state.queue.frames(), state.queue.bytes()))
    }

    fn open_exec(&mut self, client: ClientId, id: u32, payload: &[u8]) -> Result<(), CloseReason> {
        // An undecodable request is still forwarded: the agent answers it with a TERMINAL
        // core.error, which ends the session registered here.
        let tty = match Message::decode_payload(MessageType::ExecRequest, payload) {
            Ok(Message::ExecRequest(request)) => request.tty,
            Ok(_) | Err(_) => false,
        };
        let Some(state) = self.clients.get_mut(&client) else { return Ok(()) };
        if !state.execs.contains(&id) && state.execs.len() >= MAX_OPEN_EXECS_PER_CLIENT {
            return Err(CloseReason::TooManyExecs);
        }
        let number = self.sessions.open(id, tty, client).map_err(|_| CloseReason::TooManyExecs)?;
        state.execs.insert(id);
        tracing::debug!(%client, id, session = number, tty, "exec session opened");
        Ok(())
    }

    fn expire_draining(&mut self, now: Instant) {
        let deadline = Duration::from_millis(ORPHANED_EXEC_DRAIN_MS);
        let mut expired = Vec::new();
        for (slot, draining) in self.draining.iter_mut().filter(|(_, d)| d.notice_queued) {
            let since = *draining.since.get_or_insert(now);
            if now.saturating_duration_since(since) >= deadline {
                tracing::warn!(
                    slot = slot.index(),
                    open = draining.execs.len(),
                    "freeing a slot whose departed client's execs never ended"
                );
                expired.push(*slot);
            }
        }
        for slot in expired {
            // Sessions that never ended are forgotten with their slot: a late frame of theirs
            // is dropped, and the registry (and the admission count) cannot leak.
            if let Some(draining) = self.draining.remove(&slot) {
                for id in draining.execs {
                    self.sessions.end(id);
                }
            }
            self.free_slot(slot);
        }
    }

    /// An exec session whose client had left sent its terminal frame.
    fn orphan_ended(&mut self, id: u32) {
        let Some(slot) = Slot::of_id(id) else { return };
        let Some(draining) = self.draining.get_mut(&slot) else { return };
        draining.execs.remove(&id);
        self.free_if_drained(slot);
    }

    fn close(&mut self, client: ClientId, reason: CloseReason) -> Vec<Effect> {
        let Some(state) = self.clients.get_mut(&client) else { return Vec::new() };
        if state.phase == Phase::Closing {
            return Vec::new();
        }
        state.phase = Phase::Closing;
        match reason {
            CloseReason::Violation(_)
            | CloseReason::TooManyExecs
            | CloseReason::Flow(_)
            | CloseReason::Bulk(_) => {
                self.stats.clients_closed_for_violation += 1;
            }
            CloseReason::QueueOverflow(_) | CloseReason::Stalled { .. } => {
                self.stats.slow_clients_closed += 1;
            }
            CloseReason::WriteFailed => {}
        }
        tracing::warn!(%client, slot = state.slot.index(), %reason, "disconnecting relay client");
        vec![Effect::CloseClient { client, reason }]
    }

    /// The `exec.log` tap and session end: output on a registered exec id is logged whether or
    /// not its client is still here; the exec's own terminal frame ends the session (see
    /// [`ends_exec`]).
    ///
    /// Returns the owner to disconnect, and why, when the frame breaks a §13.5 rule (it is then
    /// not routed).
    fn tap(
        &mut self,
        frame: &RawFrame,
        effects: &mut Vec<Effect>,
    ) -> Option<(ClientId, FlowViolation)> {
        let session = self.sessions.get(frame.id).copied()?;
        let t = envelope_type(frame);
        if t == Some(MessageType::ExecStarted) {
            self.sessions.mark_started(frame.id);
        }
        let mut output_len = None;
        if frame.flags == Flags::NONE {
            if let Some((stream, data)) = exec_output(frame) {
                output_len = Some(data.len());
                let source = match stream {
                    OutputStream::Stdout => session.stdout_source(),
                    OutputStream::Stderr => LogSource::Stderr,
                };
                effects.push(Effect::ExecLog(LogEntry::Output {
                    source,
                    session: session.number,
                    data,
                }));
            }
        }
        let breach = self.guest_exec_frame(frame, t, output_len).err();
        if frame.flags == Flags::TERMINAL && ends_exec(frame, t, session.started) {
            self.sessions.end(frame.id);
            match session.owner.and_then(|owner| self.clients.get_mut(&owner)) {
                Some(owner) => {
                    owner.execs.remove(&frame.id);
                }
                None => self.orphan_ended(frame.id),
            }
            tracing::debug!(id = frame.id, session = session.number, "exec session ended");
        }
        breach.and_then(|violation| session.owner.map(|owner| (owner, violation)))
    }

    /// A guest frame on the private workload channel: noted (a `frozen` reply pauses session
    /// starts, a `thawed` one resumes them) and handed to the host.
    fn workload_frame(&mut self, frame: &RawFrame, wire: Option<Bytes>) -> Vec<Effect> {
        match envelope_type(frame) {
            Some(MessageType::WorkloadFrozen) => self.paused = true,
            Some(MessageType::WorkloadThawed) => self.paused = false,
            Some(_) | None => {}
        }
        tracing::debug!(paused = self.paused, "guest frame on the workload channel");
        wire.map(Effect::ToHost).into_iter().collect()
    }

    /// Whether the agent reported the workload frozen (session starts are refused).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// From now on, answers every new `core.exec.request` session with a `core.error
    /// invalid_session` ([`DRAINING_MESSAGE`]) instead of forwarding it; open exec sessions and
    /// every other message pass as before. There is no way back: a drained sandbox stops.
    pub fn refuse_new_execs(&mut self) {
        if !self.refusing_execs {
            tracing::info!(open = self.sessions.len(), "draining: new execs are refused");
        }
        self.refusing_execs = true;
    }

    /// `core.exec.signal {signal}` for every exec session open now, a departed client's
    /// included, as wire frames for the guest, in id order (the host's stop signal: the relay
    /// knows the sessions, the host does not).
    pub fn signal_open_execs(&mut self, signal: i32) -> Vec<Bytes> {
        let mut ids: Vec<u32> = self.sessions.ids().collect();
        ids.sort_unstable();
        let frames: Vec<Bytes> = ids
            .into_iter()
            .filter_map(|id| {
                encode(MessageFrame::new(id, Message::ExecSignal(ExecSignal { signal })))
            })
            .collect();
        self.stats.frames_to_guest += frames.len() as u64;
        tracing::info!(signal, execs = frames.len(), "signalling every open exec");
        frames
    }

    /// Whether new exec sessions are refused ([`Router::refuse_new_execs`]).
    pub fn refusing_execs(&self) -> bool {
        self.refusing_execs
    }

    fn route(
        &mut self,
        slot: Slot,
        frame: &RawFrame,
        wire: Option<Bytes>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        let owner = self.owners[slot.index() as usize];
        let Some((client, state)) = owner.and_then(|c| self.clients.get_mut(&c).map(|s| (c, s)))
        else {
            self.stats.guest_frames_dropped += 1;
            tracing::debug!(id = frame.id, "dropping guest frame for a slot with no client");
            return;
        };
        if state.phase == Phase::Closing {
            self.stats.guest_frames_dropped += 1;
            return;
        }
        if !state.bulk.is_empty() {
            self.guest_bulk_frame(client, frame, envelope_type(frame));
        }
        let Some(state) = self.clients.get_mut(&client) else { return };
        let Some(bytes) = wire else { return };
        match state.queue.try_push(bytes.len(), now) {
            Ok(()) => {
                self.stats.frames_to_clients += 1;
                effects.push(Effect::ToClient { client, bytes });
            }
            Err(overflow) => {
                self.stats.guest_frames_dropped += 1;
                effects.extend(self.close(client, CloseReason::QueueOverflow(overflow)));
            }
        }
    }

    /// After ready, id 0 carries nothing for clients: log and drop.
    fn drop_id0_frame(&mut self, frame: &RawFrame) {
        self.stats.guest_frames_dropped += 1;
        match decode_frame(frame) {
            Ok(Decoded::Message(message)) => {
                let t = message.message.wire_name();
                let lifecycle = message.message.message_type().is_some_and(is_guest_lifecycle);
                if lifecycle {
                    tracing::debug!(t, "dropping guest lifecycle frame on id 0");
                } else {
                    tracing::warn!(t, "dropping unexpected guest frame on id 0");
                }
            }
            Ok(Decoded::Lease(_)) => {
                tracing::debug!("dropping relay-lease record: this relay does not lease ranges");
            }
            Ok(Decoded::Bulk(_) | Decoded::LocalTransport(_)) => {
                tracing::warn!(flags = %frame.flags, "dropping unexpected guest record on id 0");
            }
            Err(err) => tracing::warn!(error = %err, "dropping undecodable guest frame on id 0"),
        }
    }
}

/// Which exec output stream a frame carries.
enum OutputStream {
    Stdout,
    Stderr,
}

/// The data of a `core.exec.stdout` / `core.exec.stderr` frame, if it is one.
/// The message type a non-bulk frame's envelope names, if it names a known one.
fn envelope_type(frame: &RawFrame) -> Option<MessageType> {
    if frame.flags.is_bulk() {
        return None;
    }
    let envelope = moat_protocol::envelope::Envelope::decode(&frame.body).ok()?;
    MessageType::from_wire_name(&envelope.t)
}

/// Whether a TERMINAL `frame` of type `t` on an exec's id ends the exec (PROTOCOL.md §13.5): its
/// `exited` or `failed`, or a `core.error` refusing the request itself (before `started`, with
/// `offending_type` `core.exec.request`). Any other terminal on that id (a `core.tcp.failed` for a
/// tcp frame a client sent there, a `core.error` rejecting a follow-up, which may come before
/// `started`) leaves the process running, so the session stays tracked and is killed and drained
/// when its client leaves. (Found by `moat-conformance fuzz`: a `core.tcp.close` on a running
/// exec's id ended its tracking, and its late `core.exec.exited` reached the next client in the
/// slot.)
fn ends_exec(frame: &RawFrame, t: Option<MessageType>, started: bool) -> bool {
    match t {
        Some(MessageType::ExecExited | MessageType::ExecFailed) => true,
        Some(MessageType::Error) if !started => matches!(
            decode_frame(frame),
            Ok(Decoded::Message(MessageFrame { message: Message::Error(e), .. }))
                if e.offending_type.as_deref() == Some(MessageType::ExecRequest.wire_name())
        ),
        Some(_) | None => false,
    }
}

/// The smallest chunk the exec.log tap keeps as a slice of the received frame rather than a copy.
const LOG_SLICE_MIN_BYTES: usize = 64 * 1024;

/// The data is a slice of the frame's body (no copy) when the frame has the shape every encoder
/// writes ([`moat_protocol::decode::exec_output_data`]); any other frame is decoded in full.
/// A small chunk is copied: its slice would keep the whole read buffer it came in (up to
/// [`crate::limits::READ_CHUNK_BYTES`]) alive while queued, so 4096 queued one-byte chunks could
/// hold a GiB; a chunk of at least [`LOG_SLICE_MIN_BYTES`] pins at most a few times its own size,
/// so the memory queued chunks hold stays within a few times the log queue's byte bound.
fn exec_output(frame: &RawFrame) -> Option<(OutputStream, Bytes)> {
    let kept = |data: Bytes| {
        if data.len() >= LOG_SLICE_MIN_BYTES { data } else { Bytes::copy_from_slice(&data) }
    };
    match moat_protocol::decode::exec_output_data(frame) {
        Some((MessageType::ExecStderr, data)) => return Some((OutputStream::Stderr, kept(data))),
        Some((_, data)) => return Some((OutputStream::Stdout, kept(data))),
        None => {}
    }
    match decode_frame(frame) {
        Ok(Decoded::Message(MessageFrame { message: Message::ExecStdout(data), .. })) => {
            Some((OutputStream::Stdout, Bytes::from(data.data)))
        }
        Ok(Decoded::Message(MessageFrame { message: Message::ExecStderr(data), .. })) => {
            Some((OutputStream::Stderr, Bytes::from(data.data)))
        }
        // Other exec events (started, stdin.error, ...) are not output.
        Ok(_) => None,
        Err(err) => {
            tracing::debug!(id = frame.id, error = %err, "exec frame not tapped: undecodable");
            None
        }
    }
}

/// Whether a guest frame of type `t` on id 0 is part of the boot/lifecycle exchange (expected,
/// dropped quietly) rather than a stray frame (dropped with a warning).
const fn is_guest_lifecycle(t: MessageType) -> bool {
    match t {
        MessageType::Ready | MessageType::InitResolved | MessageType::Error => true,
        MessageType::Bootstrap
        | MessageType::InitAck
        | MessageType::Shutdown
        | MessageType::RelayClientDisconnected
        | MessageType::ClockSync
        | MessageType::Ping
        | MessageType::Pong
        | MessageType::Touch
        | MessageType::Touched
        | MessageType::WorkloadFreeze
        | MessageType::WorkloadFrozen
        | MessageType::WorkloadThaw
        | MessageType::WorkloadThawed
        | MessageType::WorkloadTransportCredit
        | MessageType::RootDiskPrepare
        | MessageType::RootDiskGrow
        | MessageType::RootDiskState
        | MessageType::BulkAccepted
        | MessageType::BulkCredit
        | MessageType::BulkFinish
        | MessageType::BulkCancel
        | MessageType::ExecRequest
        | MessageType::ExecStarted
        | MessageType::ExecStdin
        | MessageType::ExecStdinError
        | MessageType::ExecStdout
        | MessageType::ExecStderr
        | MessageType::ExecExited
        | MessageType::ExecFailed
        | MessageType::ExecResize
        | MessageType::ExecSignal
        | MessageType::ExecOutputAck
        | MessageType::ExecStdinAck
        | MessageType::FsRequest
        | MessageType::FsResponse
        | MessageType::FsData
        | MessageType::TcpConnect
        | MessageType::TcpConnected
        | MessageType::TcpData
        | MessageType::TcpEof
        | MessageType::TcpClose
        | MessageType::TcpClosed
        | MessageType::TcpFailed => false,
    }
}

/// The frame's wire bytes (header and body exactly as received).
fn wire_bytes(frame: &RawFrame) -> Option<Bytes> {
    match frame.to_bytes() {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(err) => {
            // Unreachable for a frame that came out of the decoder.
            tracing::error!(id = frame.id, error = %err, "frame cannot be written back out");
            None
        }
    }
}

/// A relay-made frame's wire bytes.
fn encode(frame: MessageFrame) -> Option<Bytes> {
    match frame.to_bytes() {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(err) => {
            tracing::error!(id = frame.id, error = %err, "relay frame cannot be encoded");
            None
        }
    }
}

#[cfg(test)]
mod tests;
