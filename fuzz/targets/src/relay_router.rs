//! `relay_router`: the relay's sans-IO [`Router`] driven by arbitrary sequences of client and
//! guest events, checked against a model kept alongside.
//!
//! ```text
//!  input: [op][operands ...][op][operands ...] ...        (at most MAX_OPS ops; a missing
//!                                                           operand byte reads as 0)
//!  op % 13  operands               event
//!  ───────  ─────────────────────  ──────────────────────────────────────────────────────────
//!   0       -                      a client connects
//!   1       who, pick, kind        `who` sends a valid frame: exec.request / stdin / signal /
//!                                  ping on an id of its range (`pick` chooses which), a raw
//!                                  bulk record, or an empty SHUTDOWN on id 0
//!   2       who, kind              `who` sends a frame that breaks a rule: another slot's id,
//!                                  bad flags, MSBS on id 0, malformed CBOR, a control.* type,
//!                                  a host-only type
//!   3       who, id:u32 BE, flags, len, body[len]
//!                                  `who` sends an arbitrary frame
//!   4       who                    `who`'s connection ends (hung up, or after CloseClient)
//!   5       who, n                 `who`'s writer puts n % 8 + 1 queued frames on its socket
//!   6       target, kind           one guest frame: stdout / stderr / 1 MiB stdout / started /
//!                                  exited (TERMINAL) / an arbitrary flags byte, on a live exec
//!                                  id, an id of a client's range, id 0 or an id outside every
//!                                  slot (bad flags end the run: the relay would stop)
//!   7       target, count          count >= 0xf0: 2 * (count - 0xf0) + 2 guest stdout frames of
//!                                  1 MiB on one id (16 overflow a client's queue); else
//!                                  count % 8 + 1 small ones
//!   8       ms:u16 BE              time passes, then the router's tick
//!   9       which                  the driver releases a slot it was asked to (ReleaseSlot)
//!  10       who                    writing to `who` failed
//!  11       who                    `who`'s byte stream is not framed
//!  12       which                  the agent answers the disconnect barrier (`core.pong` on the
//!                                  slot's boundary id) of a quarantined slot still waiting for it
//!
//!  who / target / which: an index into the model's connected clients / live execs / pending
//!  releases, modulo their count (skipped when there are none)
//! ```
//!
//! The agent greets with generation 10 and a small [`fuzz_limits`] policy, so the relay's
//! PROTOCOL.md §13.5 rules are in play for every `v = 10` exec (arbitrary frames may open legacy
//! ones): the model keeps each flow-controlled exec's counters (started, stdin sent, output
//! charge) and expects admission past `max_executions` to be answered by the relay itself
//! (`core.exec.failed`, queued for the client), and a reused exec id, stdin before `started` or
//! past the window, or output past the window to close that exec's client and only it. Counters
//! that arbitrary frames move (acks, stdin the model does not decode) are read back from the
//! router after such a frame. A departed client's flow-controlled execs end when the agent
//! answers the barrier (the agent abandons them and reports nothing more), every exec of a slot
//! when its drain deadline passes. Raw bulk records of op 1 have no accepted operation: they
//! close their sender. Guest frames on `0xFFFFFFFF` go to the host only.
//!
//! The model holds the clients (slot, open or closing, open execs, queued frames), the 128
//! slots (free, leased, or quarantined with the departed client's execs, whether the disconnect
//! notice was queued and when its drain started) and the live exec sessions. After each event:
//!
//! - Isolation: a `ToClient` goes only to an open client, and a guest frame only to the client
//!   whose range holds its id, byte for byte; a client's own event never names another client.
//! - Rule breakers: a frame that breaks a rule disconnects its sender (`CloseClient`, for that
//!   rule's violation) and forwards nothing; valid frames are forwarded byte for byte and close
//!   nobody; an exec past the per-client or relay-wide cap closes its sender (`TooManyExecs`);
//!   a closing client's frames are ignored.
//! - Slots: a new client gets the lowest slot the model says is free, and none while all are
//!   leased or quarantined. A departed client's slot stays quarantined until the driver released
//!   it, every exec it left open sent its terminal frame and the agent answered the barrier ping
//!   (any guest frame on the slot's barrier id), or [`ORPHANED_EXEC_DRAIN_MS`] passed since the
//!   first tick after the release; a departed client's open execs are killed
//!   (`core.exec.signal 9`), its range announced to the guest and the barrier `core.ping` sent on
//!   the slot's boundary id, in that order. An exec ends on its own terminal frame (`exited`),
//!   not on another TERMINAL frame on its id (an arbitrary flags byte `0x01` on a non-envelope).
//! - Bounds: clients, open exec sessions and each client's queued frames and bytes match the
//!   model and never pass their limits; a guest frame that does not fit disconnects its client;
//!   a tick closes exactly the clients whose queued output made no progress for
//!   `CLIENT_WRITE_STALL_MS`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use moat_protocol::frame::split_frame;
use moat_protocol::limits::{RELAY_SLOT_STEP_IDS, RELAY_SLOTS};
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::payload::core::{Ready, RelayClientDisconnected};
use moat_protocol::payload::exec::{
    Data, ExecExited, ExecFailureKind, ExecLimits, ExecRequest, ExecSignal, ExecStarted,
    output_charge,
};
use moat_protocol::relay::Slot;
use moat_protocol::{Decoded, Flags, RawFrame, decode_frame};
use moat_relay::exec_log::LogEntry;
use moat_relay::limits::{
    CLIENT_QUEUE_MAX_BYTES, CLIENT_QUEUE_MAX_FRAMES, CLIENT_WRITE_STALL_MS,
    MAX_OPEN_EXECS_PER_CLIENT, MAX_TRACKED_EXEC_SESSIONS, ORPHANED_EXEC_DRAIN_MS,
};
use moat_relay::router::{AllSlotsBusy, ClientId, CloseReason, Effect, Router};
use moat_relay::validate::Violation;

/// Events read from one input at most, so every input runs in bounded time.
pub const MAX_OPS: usize = 4096;

/// Number of op codes.
pub const OPS: u8 = 13;

/// The target body.
pub fn run(data: &[u8]) {
    let mut input = Input { data, at: 0 };
    let mut harness = Harness::new();
    for _ in 0..MAX_OPS {
        let Some(op) = input.next() else { break };
        if !harness.step(op % OPS, &mut input) {
            break;
        }
        harness.check_bounds();
    }
}

/// The fuzz input as a stream of bytes; past its end every operand reads as 0.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = self.data.get(self.at).copied();
        self.at += 1;
        byte
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// One connected client as the model sees it.
#[derive(Debug)]
struct ModelClient {
    id: ClientId,
    slot: Slot,
    open: bool,
    /// Exec ids it opened whose session has not ended.
    execs: BTreeSet<u32>,
    /// Sizes of the frames handed to its writer and not yet written.
    queue: VecDeque<usize>,
    /// Their sum.
    queued_bytes: usize,
    /// When the queue became non-empty or last made progress.
    waiting_since: Option<u64>,
}

impl ModelClient {
    fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_bytes)
    }
}

/// One slot as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelSlot {
    Free,
    Leased,
    Quarantined {
        /// Execs the departed client left open whose terminal frame has not arrived.
        execs: BTreeSet<u32>,
        /// The driver released the slot (the disconnect notice is queued).
        released: bool,
        /// The barrier ping sent after the notice has not been answered.
        barrier: bool,
        /// The first tick after the release, in model milliseconds.
        since: Option<u64>,
    },
}

/// Guest frames one input may send in all (floods included), so every input runs quickly. A
/// client's queue is overflowed by bytes (1 MiB frames), not by its frame count, which would take
/// 4096 frames per input (the frame cap is unit-tested in `relay/src/outbound.rs`).
pub const MAX_GUEST_FRAMES: usize = 1024;

/// Data bytes of a flood frame.
pub const FLOOD_FRAME_BYTES: usize = 1024 * 1024;

struct Harness {
    router: Router,
    /// Guest frames sent so far.
    guest_frames: usize,
    /// `Instant` of model time 0.
    epoch: Instant,
    now_ms: u64,
    clients: Vec<ModelClient>,
    slots: Vec<ModelSlot>,
    /// Live exec sessions by id: the owning client, or `None` once it left.
    sessions: BTreeMap<u32, Option<ClientId>>,
    /// Slots the router asked the driver to release, not released yet.
    pending_releases: Vec<Slot>,
    /// The flow-controlled ones among `sessions` (they hold admission slots).
    flows: BTreeMap<u32, ModelFlow>,
}

/// A flow-controlled exec's counters as the model sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ModelFlow {
    started: bool,
    stdin_sent: u64,
    stdin_acked: u64,
    stdin_eof: bool,
    output_sent: u64,
    output_acked: u64,
}

/// The agent's policy: small, so admission and both windows are reached by short inputs.
pub fn fuzz_limits() -> ExecLimits {
    ExecLimits {
        max_executions: 8,
        input_limit: 64,
        stdin_chunk_size: 16,
        output_limit: 2048,
        output_chunk_size: 1024,
    }
}

/// The agent's ready frame every client is greeted with.
fn ready_frame() -> RawFrame {
    let ready = Ready {
        agent_version: "moat-fuzz".into(),
        exec_limits: Some(fuzz_limits()),
        ..Ready::default()
    };
    raw(&MessageFrame { id: 0, v: 10, message: Message::Ready(ready) })
}

/// A message frame as the framing layer hands it over.
pub fn raw(message: &MessageFrame) -> RawFrame {
    let bytes = message.to_bytes().expect("a fuzz-built frame encodes");
    split_frame(&mut BytesMut::from(&bytes[..]))
        .expect("a fuzz-built frame splits")
        .expect("a whole frame")
}

fn wire(frame: &RawFrame) -> Bytes {
    Bytes::from(frame.to_bytes().expect("a frame within the size limit"))
}

impl Harness {
    fn new() -> Harness {
        let router = Router::new(&ready_frame()).expect("the fuzz ready frame is accepted");
        Harness {
            router,
            guest_frames: 0,
            epoch: Instant::now(),
            now_ms: 0,
            clients: Vec::new(),
            slots: vec![ModelSlot::Free; RELAY_SLOTS as usize],
            sessions: BTreeMap::new(),
            pending_releases: Vec::new(),
            flows: BTreeMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.now_ms)
    }

    fn pick_client(&self, who: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| usize::from(who) % self.clients.len())
    }

    /// Runs one event; `false` ends the run (the relay would stop: a guest frame's flags
    /// byte is invalid).
    fn step(&mut self, op: u8, input: &mut Input<'_>) -> bool {
        match op {
            0 => self.connect(),
            1 => {
                let (who, pick, kind) = (input.byte(), input.byte(), input.byte());
                self.send_valid(who, pick, kind);
            }
            2 => {
                let (who, kind) = (input.byte(), input.byte());
                self.send_invalid(who, kind);
            }
            3 => {
                let who = input.byte();
                let id = input.u32();
                let flags = Flags::from_bits(input.byte());
                let len = usize::from(input.byte());
                let body = Bytes::from(input.bytes(len));
                self.send_raw(who, &RawFrame { id, flags, body });
            }
            4 => {
                let who = input.byte();
                self.disconnect(who);
            }
            5 => {
                let (who, n) = (input.byte(), input.byte());
                self.wrote(who, usize::from(n % 8) + 1);
            }
            6 => {
                let (target, kind) = (input.byte(), input.byte());
                return self.guest(target, kind, 1);
            }
            7 => {
                let (target, count) = (input.byte(), input.byte());
                // Floods are rare (count >= 0xf0): each costs tens of MiB of copies.
                return match count.checked_sub(0xf0) {
                    Some(n) => self.guest(target, 2, 2 * usize::from(n) + 2),
                    None => self.guest(target, 0, usize::from(count % 8) + 1),
                };
            }
            8 => {
                let ms = input.u16();
                self.tick(u64::from(ms));
            }
            9 => {
                let which = input.byte();
                self.release(which);
            }
            10 => {
                let who = input.byte();
                if let Some(i) = self.pick_client(who) {
                    let client = self.clients[i].id;
                    let effects = self.router.client_write_failed(client);
                    self.expect_closed_only(i, &effects, "a failed write");
                }
            }
            12 => {
                let which = input.byte();
                return self.answer_barrier(which);
            }
            _ => {
                let who = input.byte();
                if let Some(i) = self.pick_client(who) {
                    let client = self.clients[i].id;
                    let violation = Violation::Framing(moat_protocol::FrameError::Truncated {
                        buffered: 3,
                        needed: 9,
                    });
                    let effects = self.router.client_stream_error(client, violation);
                    self.expect_closed_only(i, &effects, "an unframed stream");
                }
            }
        }
        true
    }

    fn connect(&mut self) {
        let expected = self.slots.iter().position(|s| *s == ModelSlot::Free);
        match (self.router.client_connected(self.now()), expected) {
            (Ok(connected), Some(index)) => {
                assert_eq!(
                    connected.slot.index() as usize,
                    index,
                    "a new client must get the lowest free slot; model slots: {:?}",
                    self.slots
                );
                assert!(
                    self.clients.iter().all(|c| c.id != connected.client),
                    "client ids are never reused"
                );
                self.slots[index] = ModelSlot::Leased;
                let mut client = ModelClient {
                    id: connected.client,
                    slot: connected.slot,
                    open: true,
                    execs: BTreeSet::new(),
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    waiting_since: None,
                };
                match &connected.effects[..] {
                    [Effect::ToClient { client: to, bytes }] if *to == client.id => {
                        push(&mut client, bytes.len(), self.now_ms);
                    }
                    other => panic!("a connect greets its client and only it: {other:?}"),
                }
                self.clients.push(client);
            }
            (Err(AllSlotsBusy), None) => {}
            (Ok(connected), None) => panic!(
                "slot {} handed out while every slot is leased or quarantined: {:?}",
                connected.slot.index(),
                self.slots
            ),
            (Err(AllSlotsBusy), Some(index)) => {
                panic!("connection refused while slot {index} is free")
            }
        }
    }

    fn send_valid(&mut self, who: u8, pick: u8, kind: u8) {
        let Some(i) = self.pick_client(who) else { return };
        let client = &self.clients[i];
        let range = client.slot.range();
        let id = match client.execs.iter().nth(usize::from(pick)) {
            Some(&id) => id,
            None if pick % 2 == 0 => range.first_usable() + u32::from(pick % 16),
            None => range.end_exclusive - 1 - u32::from(pick % 16),
        };
        let frame = match kind % 6 {
            0 => {
                let request = ExecRequest { tty: pick % 3 == 0, ..ExecRequest::new("sh") };
                raw(&MessageFrame::new(id, Message::ExecRequest(request)))
            }
            1 => raw(&MessageFrame::new(id, Message::ExecStdin(Data::new(vec![kind; 3])))),
            2 => raw(&MessageFrame::new(id, Message::ExecSignal(ExecSignal { signal: 15 }))),
            3 => raw(&MessageFrame::new(id, Message::Ping)),
            4 => RawFrame { id, flags: Flags::BULK, body: Bytes::from(vec![pick; 16]) },
            _ => RawFrame { id: 0, flags: Flags::SHUTDOWN, body: Bytes::new() },
        };
        let opens_exec = frame.flags == Flags::SESSION_START;
        if !self.clients[i].open {
            let effects = self.router.client_frame(self.clients[i].id, &frame);
            assert!(effects.is_empty(), "a closing client's frames are ignored: {effects:?}");
            return;
        }
        let over_cap = opens_exec && self.exec_refused(i, id);
        let effects = self.router.client_frame(self.clients[i].id, &frame);
        if frame.flags == Flags::BULK {
            self.expect_closed_only(i, &effects, "a raw record without an accepted operation");
            assert!(
                effects
                    .iter()
                    .all(|e| matches!(e, Effect::CloseClient { reason: CloseReason::Bulk(_), .. })),
                "a raw record closes with a bulk violation: {effects:?}"
            );
            return;
        }
        if let Some(flow) = self.flows.get(&id).copied() {
            let breach = match kind % 6 {
                0 => Some("an exec request on an active exec id"),
                1 if !flow.started => Some("stdin before exec.started"),
                1 if flow.stdin_eof => Some("stdin after EOF"),
                1 if flow.stdin_sent + 3 - flow.stdin_acked
                    > u64::from(fuzz_limits().input_limit) =>
                {
                    Some("stdin past the window")
                }
                _ => None,
            };
            if let Some(why) = breach {
                self.expect_flow_close(i, &effects, why);
                return;
            }
            if kind % 6 == 1 {
                self.flows.get_mut(&id).expect("checked above").stdin_sent += 3;
            }
        }
        if opens_exec && self.flows.len() >= fuzz_limits().max_executions as usize {
            self.expect_admission_refused(i, id, &effects);
            return;
        }
        if over_cap {
            self.expect_closed_only(i, &effects, "one exec too many");
            assert!(
                effects.iter().any(|e| matches!(
                    e,
                    Effect::CloseClient { reason: CloseReason::TooManyExecs, .. }
                )),
                "the exec caps close with TooManyExecs: {effects:?}"
            );
            return;
        }
        self.expect_forwarded(i, &frame, &effects);
        if opens_exec {
            self.open_exec(i, id);
            self.flows.insert(id, ModelFlow::default());
        }
    }

    /// `effects` close client `i`, and only it, for a §13.5 breach.
    fn expect_flow_close(&mut self, i: usize, effects: &[Effect], why: &str) {
        let flow_reason = effects
            .iter()
            .all(|e| matches!(e, Effect::CloseClient { reason: CloseReason::Flow(_), .. }));
        assert!(flow_reason, "{why} closes with a flow violation: {effects:?}");
        self.expect_closed_only(i, effects, why);
    }

    /// `effects` are the relay's own `core.exec.failed` on `id` for client `i` (admission), or
    /// its close when that answer does not fit its queue.
    fn expect_admission_refused(&mut self, i: usize, id: u32, effects: &[Effect]) {
        let client = self.clients[i].id;
        match effects {
            [Effect::ToClient { client: c, bytes }] => {
                assert_eq!(*c, client, "an admission answer went to another client");
                let frame = split_frame(&mut BytesMut::from(&bytes[..]))
                    .expect("the answer is framed")
                    .expect("a whole frame");
                match decode_frame(&frame) {
                    Ok(Decoded::Message(MessageFrame {
                        id: answered,
                        message: Message::ExecFailed(failed),
                        ..
                    })) => {
                        assert_eq!(answered, id, "the admission answer is on the request's id");
                        assert_eq!(failed.kind, ExecFailureKind::ResourceLimit);
                        assert_eq!(failed.stage.as_deref(), Some("execution_admission"));
                    }
                    other => panic!("the admission answer is not exec.failed: {other:?}"),
                }
                let now_ms = self.now_ms;
                push(&mut self.clients[i], bytes.len(), now_ms);
            }
            [Effect::CloseClient { client: c, reason: CloseReason::QueueOverflow(_) }] => {
                assert_eq!(*c, client);
                self.clients[i].open = false;
            }
            other => panic!("an exec past max_executions must be answered by the relay: {other:?}"),
        }
    }

    /// Whether opening an exec on `id` passes the per-client or the relay-wide cap.
    fn exec_refused(&self, i: usize, id: u32) -> bool {
        let client = &self.clients[i];
        (!client.execs.contains(&id) && client.execs.len() >= MAX_OPEN_EXECS_PER_CLIENT)
            || (!self.sessions.contains_key(&id)
                && self.sessions.len() >= MAX_TRACKED_EXEC_SESSIONS)
    }

    fn open_exec(&mut self, i: usize, id: u32) {
        let client = self.clients[i].id;
        if let Some(Some(previous)) = self.sessions.get(&id) {
            // A replaced session of another client no longer counts as that client's.
            if *previous != client {
                if let Some(other) = self.clients.iter_mut().find(|c| c.id == *previous) {
                    other.execs.remove(&id);
                }
            }
        }
        self.sessions.insert(id, Some(client));
        self.clients[i].execs.insert(id);
        let session = self.router.exec_session(id).expect("an exec session was registered");
        assert_eq!(session.owner, Some(client), "exec session on {id} has the wrong owner");
    }

    fn send_invalid(&mut self, who: u8, kind: u8) {
        let Some(i) = self.pick_client(who) else { return };
        let slot = self.clients[i].slot;
        let id = slot.range().first_usable() + u32::from(kind / 8);
        let ping = raw(&MessageFrame::new(id, Message::Ping));
        let frame = match kind % 7 {
            0 => {
                let other = Slot::new((slot.index() + 1 + u32::from(kind) % 127) % RELAY_SLOTS)
                    .expect("an index below RELAY_SLOTS");
                RawFrame { id: other.range().first_usable(), ..ping }
            }
            1 => RawFrame {
                flags: Flags::from_bits([0x03, 0x10, 0x0c, 0xff][usize::from(kind / 7) % 4]),
                ..ping
            },
            2 => RawFrame {
                id: 0,
                flags: Flags::NONE,
                body: Bytes::from_static(b"MSBS\x01\x00\x00\x00"),
            },
            3 => RawFrame { body: Bytes::from_static(&[0xa1, 0x61, b't']), ..ping },
            4 => {
                // {"v": 10, "t": "control.relay.lease", "p": h''}
                let mut body = vec![0xa3, 0x61, b'v', 0x0a, 0x61, b't', 0x73];
                body.extend_from_slice(b"control.relay.lease");
                body.extend_from_slice(&[0x61, b'p', 0x40]);
                RawFrame { body: Bytes::from(body), ..ping }
            }
            5 => {
                let range = slot.range();
                let notice = RelayClientDisconnected {
                    id_start: range.start,
                    id_end_exclusive: range.end_exclusive,
                    incarnation: None,
                };
                raw(&MessageFrame::new(id, Message::RelayClientDisconnected(notice)))
            }
            _ => RawFrame { id: u32::MAX, ..ping },
        };
        let effects = self.router.client_frame(self.clients[i].id, &frame);
        if self.clients[i].open {
            self.expect_closed_only(i, &effects, "a frame breaking a rule");
            let Some(Effect::CloseClient { reason: CloseReason::Violation(violation), .. }) =
                effects.first()
            else {
                panic!("a rule breaker is closed for a violation: {effects:?}")
            };
            let named = matches!(
                (kind % 7, violation),
                (0 | 6, Violation::IdOutOfRange { .. })
                    | (1, Violation::Flags(_))
                    | (2, Violation::LocalTransport)
                    | (3, Violation::MalformedCbor(_))
                    | (4, Violation::ControlType { .. })
                    | (5, Violation::HostOnlyType { .. })
            );
            assert!(named, "rule {} broken, but closed for {violation:?}", kind % 7);
        } else {
            assert!(effects.is_empty(), "a closing client's frames are ignored: {effects:?}");
        }
    }

    fn send_raw(&mut self, who: u8, frame: &RawFrame) {
        let Some(i) = self.pick_client(who) else { return };
        let client = self.clients[i].id;
        let range = self.clients[i].slot.range();
        let open = self.clients[i].open;
        let refused_before = frame.flags == Flags::SESSION_START
            && range.contains(frame.id)
            && self.exec_refused(i, frame.id);
        let effects = self.router.client_frame(client, frame);
        if !open {
            assert!(effects.is_empty(), "a closing client's frames are ignored: {effects:?}");
            return;
        }
        if let [Effect::ToClient { client: c, bytes }] = &effects[..] {
            // The relay answered a session start itself (admission, or the 65th bulk offer).
            assert_eq!(*c, client, "a relay answer went to another client");
            assert_eq!(frame.flags, Flags::SESSION_START, "the relay answered {frame:?}");
            let now_ms = self.now_ms;
            push(&mut self.clients[i], bytes.len(), now_ms);
            return;
        }
        let forwarded = effects.iter().any(|e| matches!(e, Effect::ToGuest(_)));
        let empty_shutdown = frame.flags == Flags::SHUTDOWN && frame.body.is_empty();
        let has_envelope = !frame.flags.is_bulk() && !empty_shutdown;
        let breaks_rule = !frame.flags.is_wire_valid()
            || (frame.id == 0 && frame.flags == Flags::NONE)
            || !(range.contains(frame.id) || (frame.id == 0 && frame.flags == Flags::SHUTDOWN))
            || (has_envelope
                && moat_protocol::envelope::Envelope::decode(&frame.body)
                    .is_ok_and(|e| e.t.starts_with("control.")));
        if forwarded {
            assert!(!breaks_rule, "a frame breaking a rule was forwarded: {frame:?}");
            self.expect_forwarded(i, frame, &effects);
            let opened = frame.flags == Flags::SESSION_START
                && moat_protocol::envelope::Envelope::decode(&frame.body)
                    .is_ok_and(|e| e.t == "core.exec.request");
            if opened {
                assert!(!refused_before, "an exec past the caps was forwarded");
                self.open_exec(i, frame.id);
                self.flows.remove(&frame.id);
            }
            self.sync_flow(frame.id);
        } else {
            self.expect_closed_only(i, &effects, "a refused frame");
        }
    }

    /// After an arbitrary frame on `id`: the model takes the router's flow counters for it
    /// (acks and stdin it does not decode), and learns whether a request there is flow-controlled.
    fn sync_flow(&mut self, id: u32) {
        match self.router.exec_session(id).and_then(|s| s.flow.map(|f| (s.started, f))) {
            Some((started, f)) => {
                let flow = self.flows.entry(id).or_default();
                flow.started = started;
                flow.stdin_sent = f.stdin_sent;
                flow.stdin_acked = f.stdin_acked;
                flow.stdin_eof = f.stdin_eof;
                flow.output_acked = f.output_acked;
                assert_eq!(flow.output_sent, f.output_sent, "output charge on {id}");
            }
            None => {
                self.flows.remove(&id);
            }
        }
    }

    /// `effects` forward `frame` byte for byte, and at most tell the host its sender asked for
    /// shutdown: nobody is closed, nothing goes to a client.
    fn expect_forwarded(&self, i: usize, frame: &RawFrame, effects: &[Effect]) {
        let client = self.clients[i].id;
        let bytes = wire(frame);
        let mut to_guest = 0;
        for effect in effects {
            match effect {
                Effect::ToGuest(b) => {
                    assert_eq!(*b, bytes, "a forwarded frame changed");
                    to_guest += 1;
                }
                Effect::ShutdownRequested { client: c } => {
                    assert_eq!(*c, client, "shutdown credited to another client");
                    assert_eq!(frame.flags, Flags::SHUTDOWN, "shutdown without SHUTDOWN flags");
                }
                other => panic!("a valid frame of {client} caused {other:?}"),
            }
        }
        assert_eq!(to_guest, 1, "a valid frame is forwarded once: {effects:?}");
    }

    /// `effects` are exactly one `CloseClient` for client `i`, which the model then marks closing.
    fn expect_closed_only(&mut self, i: usize, effects: &[Effect], why: &str) {
        let client = self.clients[i].id;
        if !self.clients[i].open {
            assert!(effects.is_empty(), "{why}: a closing client is not closed twice: {effects:?}");
            return;
        }
        match effects {
            [Effect::CloseClient { client: c, .. }] if *c == client => {}
            other => panic!("{why} from {client} must close it and only it, got {other:?}"),
        }
        self.clients[i].open = false;
    }

    fn disconnect(&mut self, who: u8) {
        let Some(i) = self.pick_client(who) else { return };
        let gone = self.clients.remove(i);
        let effects = self.router.client_disconnected(gone.id);
        assert!(self.router.queued_output(gone.id).is_none(), "{} still has a queue", gone.id);
        let (ends_with_release, rest) = match effects.split_last() {
            Some((Effect::ReleaseSlot(slot), rest)) => (*slot == gone.slot, rest),
            _ => (false, &effects[..]),
        };
        assert!(ends_with_release, "a disconnect ends with ReleaseSlot of its slot: {effects:?}");
        let Some((barrier, rest)) = rest.split_last() else {
            panic!("a disconnect ends with a barrier ping: {effects:?}")
        };
        match guest_message(barrier) {
            Some(MessageFrame { id, message: Message::Ping, .. })
                if id == gone.slot.range().end_exclusive => {}
            other => panic!("expected the barrier ping on the slot's boundary id, got {other:?}"),
        }
        let Some((notice, kills)) = rest.split_last() else {
            panic!("a disconnect announces the range to the guest: {effects:?}")
        };
        let range = gone.slot.range();
        match guest_message(notice) {
            Some(MessageFrame { id: 0, message: Message::RelayClientDisconnected(n), .. }) => {
                assert_eq!((n.id_start, n.id_end_exclusive), (range.start, range.end_exclusive));
            }
            other => panic!("expected the disconnect notice, got {other:?}"),
        }
        let killed: BTreeSet<u32> = kills
            .iter()
            .map(|kill| match guest_message(kill) {
                Some(MessageFrame {
                    id,
                    message: Message::ExecSignal(ExecSignal { signal: 9 }),
                    ..
                }) => id,
                other => panic!("expected a kill of a departed client's exec, got {other:?}"),
            })
            .collect();
        assert_eq!(killed.len(), kills.len(), "an exec killed twice: {effects:?}");
        assert_eq!(killed, gone.execs, "kills must be exactly the departed client's open execs");
        for id in &gone.execs {
            self.sessions.insert(*id, None);
        }
        let index = gone.slot.index() as usize;
        assert_eq!(self.slots[index], ModelSlot::Leased);
        self.slots[index] = ModelSlot::Quarantined {
            execs: gone.execs,
            released: false,
            barrier: true,
            since: None,
        };
        self.pending_releases.push(gone.slot);
    }

    fn release(&mut self, which: u8) {
        if self.pending_releases.is_empty() {
            return;
        }
        let slot = self.pending_releases.remove(usize::from(which) % self.pending_releases.len());
        self.router.release_slot(slot);
        let state = &mut self.slots[slot.index() as usize];
        match state {
            ModelSlot::Quarantined { released, .. } => *released = true,
            other => panic!("slot {} released while {other:?}", slot.index()),
        }
        settle(state);
    }

    /// The agent answers the barrier of the `which`-th slot still waiting for one.
    fn answer_barrier(&mut self, which: u8) -> bool {
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|k| matches!(self.slots[*k], ModelSlot::Quarantined { barrier: true, .. }))
            .collect();
        if waiting.is_empty() {
            return true;
        }
        let k = waiting[usize::from(which) % waiting.len()];
        let slot = Slot::new(k as u32).expect("below RELAY_SLOTS");
        let pong = raw(&MessageFrame::new(slot.range().end_exclusive, Message::Pong));
        self.guest_frame(&pong, &wire(&pong))
    }

    fn wrote(&mut self, who: u8, frames: usize) {
        let Some(i) = self.pick_client(who) else { return };
        let now_ms = self.now_ms;
        let client = &mut self.clients[i];
        let n = frames.min(client.queue.len());
        let bytes: usize = client.queue.drain(..n).sum();
        client.queued_bytes -= bytes;
        client.waiting_since = (!client.queue.is_empty()).then_some(now_ms);
        let id = client.id;
        self.router.client_wrote(id, n, bytes, self.now());
    }

    /// The id a guest frame is sent on.
    fn guest_id(&self, target: u8) -> u32 {
        let live = self.sessions.len();
        match target % 4 {
            0 if live > 0 => {
                let nth = usize::from(target / 4) % live;
                *self.sessions.keys().nth(nth).expect("nth below the number of sessions")
            }
            1 if !self.clients.is_empty() => {
                let client = &self.clients[usize::from(target / 4) % self.clients.len()];
                client.slot.range().first_usable() + u32::from(target / 4 % 4)
            }
            2 => [0, RELAY_SLOT_STEP_IDS, RELAY_SLOT_STEP_IDS * RELAY_SLOTS, u32::MAX]
                [usize::from(target / 4) % 4],
            _ => {
                let slot = Slot::new(u32::from(target) % RELAY_SLOTS).expect("below RELAY_SLOTS");
                slot.range().first_usable() + u32::from(target % 3)
            }
        }
    }

    fn guest(&mut self, target: u8, kind: u8, count: usize) -> bool {
        let id = self.guest_id(target);
        let frame = match kind % 6 {
            0 => raw(&MessageFrame::new(id, Message::ExecStdout(Data::new(vec![b'o'; 5])))),
            1 => raw(&MessageFrame::new(id, Message::ExecStderr(Data::new(vec![b'e'; 5])))),
            2 => {
                let data = Data::new(vec![b'x'; FLOOD_FRAME_BYTES]);
                raw(&MessageFrame::new(id, Message::ExecStdout(data)))
            }
            3 => raw(&MessageFrame::new(id, Message::ExecStarted(ExecStarted { pid: 42 }))),
            4 => raw(&MessageFrame::new(id, Message::ExecExited(ExecExited { code: -1 }))),
            _ => RawFrame { id, flags: Flags::from_bits(kind), body: Bytes::from_static(&[0xa0]) },
        };
        let bytes = wire(&frame);
        let count = count.min(MAX_GUEST_FRAMES.saturating_sub(self.guest_frames));
        self.guest_frames += count;
        for _ in 0..count {
            if !self.guest_frame(&frame, &bytes) {
                return false;
            }
        }
        true
    }

    /// One guest frame; `false` when the router refused it (the relay stops).
    fn guest_frame(&mut self, frame: &RawFrame, bytes: &Bytes) -> bool {
        let result = self.router.guest_frame(frame, self.now());
        let effects = match result {
            Ok(effects) => effects,
            Err(_) => {
                assert!(!frame.flags.is_wire_valid(), "a valid guest frame was refused: {frame:?}");
                return false;
            }
        };
        assert!(frame.flags.is_wire_valid(), "a guest frame with bad flags was accepted");
        if frame.id == u32::MAX {
            assert!(
                matches!(&effects[..], [Effect::ToHost(b)] if b == bytes),
                "the workload id goes to the host only: {effects:?}"
            );
            return true;
        }
        if let Some(slot) = barrier_slot(frame.id) {
            assert!(effects.is_empty(), "a barrier id is never routed: {effects:?}");
            let state = &mut self.slots[slot.index() as usize];
            if let ModelSlot::Quarantined { barrier, execs, .. } = state {
                if *barrier {
                    // The agent abandoned the departed client's flow-controlled execs.
                    let flows = &mut self.flows;
                    let sessions = &mut self.sessions;
                    execs.retain(|id| {
                        let abandoned = flows.remove(id).is_some();
                        if abandoned {
                            sessions.remove(id);
                        }
                        !abandoned
                    });
                }
                *barrier = false;
            }
            settle(state);
            return true;
        }
        let breach_owner = self.guest_flow(frame);
        let live = self.sessions.contains_key(&frame.id);
        let owner = Slot::of_id(frame.id)
            .filter(|_| frame.id != 0)
            .and_then(|slot| self.clients.iter().position(|c| c.slot == slot));
        let mut delivered = 0;
        let mut closed = 0;
        for effect in &effects {
            match effect {
                Effect::ToClient { client, bytes: b } => {
                    let i = owner.expect("a guest frame delivered on an id no client owns");
                    assert_eq!(
                        *client, self.clients[i].id,
                        "a guest frame went to the wrong client"
                    );
                    assert!(self.clients[i].open, "a guest frame went to a closing client");
                    assert_eq!(*b, bytes, "a routed frame changed");
                    delivered += 1;
                }
                Effect::CloseClient { client, reason: CloseReason::QueueOverflow(_) } => {
                    let i = owner.expect("an overflow close for an id no client owns");
                    assert_eq!(*client, self.clients[i].id, "overflow closed the wrong client");
                    closed += 1;
                }
                Effect::CloseClient { client, reason: CloseReason::Flow(_) } => {
                    assert_eq!(Some(*client), breach_owner, "a flow close of the wrong client");
                    closed += 1;
                }
                Effect::ExecLog(LogEntry::Output { .. }) => {
                    assert!(live, "exec output logged on {} with no session", frame.id);
                    assert_eq!(frame.flags, Flags::NONE, "only plain frames are output");
                }
                other => panic!("a guest frame caused {other:?}"),
            }
        }
        match owner {
            _ if breach_owner.is_some() => {
                let owner = breach_owner.expect("checked");
                assert_eq!(delivered, 0, "output past the window is not routed: {effects:?}");
                if let Some(client) = self.clients.iter_mut().find(|c| c.id == owner && c.open) {
                    assert_eq!(closed, 1, "output past the window closes its client");
                    client.open = false;
                } else {
                    assert_eq!(closed, 0, "a closing client is not closed twice");
                }
            }
            Some(i) if self.clients[i].open => {
                let (frames, queued) = self.clients[i].queued();
                let fits = frames < CLIENT_QUEUE_MAX_FRAMES
                    && queued + bytes.len() <= CLIENT_QUEUE_MAX_BYTES;
                if fits {
                    assert_eq!(
                        (delivered, closed),
                        (1, 0),
                        "a fitting frame is delivered: {effects:?}"
                    );
                    push(&mut self.clients[i], bytes.len(), self.now_ms);
                } else {
                    assert_eq!(
                        (delivered, closed),
                        (0, 1),
                        "an overflowing frame closes: {effects:?}"
                    );
                    self.clients[i].open = false;
                }
            }
            _ => assert_eq!((delivered, closed), (0, 0), "no open owner, nothing routed"),
        }
        // The relay ends an exec on its own terminal only: `exited` or `failed` (the model sends
        // no `core.error`), never on another TERMINAL frame or a body that is no envelope.
        let ends = matches!(
            decode_frame(frame),
            Ok(Decoded::Message(MessageFrame {
                message: Message::ExecExited(_) | Message::ExecFailed(_),
                ..
            }))
        );
        if live && frame.flags == Flags::TERMINAL && ends {
            self.end_session(frame.id);
        }
        true
    }

    /// The model's §13.5 accounting of a guest frame on a flow-controlled exec: `started`,
    /// output charge. Returns the exec's connected owner when the frame breaks the output window
    /// (the router then drops it and closes that client).
    fn guest_flow(&mut self, frame: &RawFrame) -> Option<ClientId> {
        let flow = self.flows.get_mut(&frame.id)?;
        let output = match decode_frame(frame) {
            Ok(Decoded::Message(MessageFrame { message: Message::ExecStarted(_), .. })) => {
                flow.started = true;
                return None;
            }
            Ok(Decoded::Message(MessageFrame {
                message: Message::ExecStdout(data) | Message::ExecStderr(data),
                ..
            })) if frame.flags == Flags::NONE => data.data.len(),
            _ => return None,
        };
        flow.output_sent += output_charge(output);
        let outstanding = flow.output_sent - flow.output_acked;
        if outstanding > u64::from(fuzz_limits().output_limit) {
            return self.sessions.get(&frame.id).copied().flatten();
        }
        None
    }

    fn end_session(&mut self, id: u32) {
        self.flows.remove(&id);
        match self.sessions.remove(&id) {
            Some(Some(owner)) => {
                if let Some(client) = self.clients.iter_mut().find(|c| c.id == owner) {
                    client.execs.remove(&id);
                }
            }
            Some(None) => {
                let Some(slot) = Slot::of_id(id) else { return };
                let state = &mut self.slots[slot.index() as usize];
                if let ModelSlot::Quarantined { execs, .. } = state {
                    execs.remove(&id);
                }
                settle(state);
            }
            None => {}
        }
        assert!(
            self.router.exec_session(id).is_none(),
            "a TERMINAL frame ends the session on {id}"
        );
    }

    fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        let now_ms = self.now_ms;
        for state in &mut self.slots {
            if let ModelSlot::Quarantined { released: true, since, execs, .. } = state {
                let since = *since.get_or_insert(now_ms);
                if now_ms - since >= ORPHANED_EXEC_DRAIN_MS {
                    // The router forgets the execs that never ended with their slot.
                    for id in execs.iter() {
                        self.sessions.remove(id);
                        self.flows.remove(id);
                    }
                    *state = ModelSlot::Free;
                }
            }
        }
        let mut stalled: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|c| c.open)
            .filter(|c| c.waiting_since.is_some_and(|t| now_ms - t >= CLIENT_WRITE_STALL_MS))
            .map(|c| c.id)
            .collect();
        stalled.sort();
        let effects = self.router.tick(self.now());
        let closed: Vec<ClientId> = effects
            .iter()
            .map(|e| match e {
                Effect::CloseClient { client, reason: CloseReason::Stalled { .. } } => *client,
                other => panic!("a tick caused {other:?}"),
            })
            .collect();
        assert_eq!(closed, stalled, "the tick closes exactly the stalled clients");
        for client in &mut self.clients {
            if stalled.contains(&client.id) {
                client.open = false;
            }
        }
    }

    /// Memory bounds and the model's counts, after every event.
    fn check_bounds(&self) {
        assert!(self.clients.len() <= RELAY_SLOTS as usize);
        assert_eq!(self.router.connected_clients(), self.clients.len(), "connected clients");
        assert!(self.sessions.len() <= MAX_TRACKED_EXEC_SESSIONS);
        assert_eq!(self.router.open_exec_sessions(), self.sessions.len(), "open exec sessions");
        assert!(
            self.flows.keys().all(|id| self.sessions.contains_key(id)),
            "a flow without a session"
        );
        assert!(
            self.flows.len() <= fuzz_limits().max_executions as usize,
            "admission let one past"
        );
        for client in &self.clients {
            let (frames, bytes) = client.queued();
            assert!(frames <= CLIENT_QUEUE_MAX_FRAMES && bytes <= CLIENT_QUEUE_MAX_BYTES);
            assert!(client.execs.len() <= MAX_OPEN_EXECS_PER_CLIENT);
            assert_eq!(
                self.router.queued_output(client.id),
                Some((frames, bytes)),
                "{}",
                client.id
            );
            let leased = self.slots[client.slot.index() as usize] == ModelSlot::Leased;
            assert!(leased, "{}'s slot is not leased in the model", client.id);
        }
    }
}

/// Accounts one frame of `len` bytes handed to `client`'s writer.
fn push(client: &mut ModelClient, len: usize, now_ms: u64) {
    client.queue.push_back(len);
    client.queued_bytes += len;
    client.waiting_since.get_or_insert(now_ms);
}

/// The message a `ToGuest` effect carries, if it is one.
/// A quarantined slot whose release, execs and barrier are all done is free.
fn settle(state: &mut ModelSlot) {
    if let ModelSlot::Quarantined { execs, released: true, barrier: false, .. } = state {
        if execs.is_empty() {
            *state = ModelSlot::Free;
        }
    }
}

/// The slot whose disconnect barrier id (its range's exclusive end) `id` is, if any.
fn barrier_slot(id: u32) -> Option<Slot> {
    let slot = Slot::new((id / RELAY_SLOT_STEP_IDS).checked_sub(1)?)?;
    (slot.range().end_exclusive == id).then_some(slot)
}

fn guest_message(effect: &Effect) -> Option<MessageFrame> {
    let Effect::ToGuest(bytes) = effect else { return None };
    let frame = split_frame(&mut BytesMut::from(&bytes[..])).ok()??;
    match decode_frame(&frame) {
        Ok(Decoded::Message(message)) => Some(message),
        _ => None,
    }
}

/// Builders for seeds: each returns the bytes of one op.
pub mod ops {
    /// A client connects.
    pub fn connect() -> Vec<u8> {
        vec![0]
    }

    /// Client `who` sends valid frame `kind` (0 exec.request, 1 stdin, 2 signal, 3 ping, 4 bulk,
    /// 5 shutdown) on the id `pick` chooses.
    pub fn send_valid(who: u8, pick: u8, kind: u8) -> Vec<u8> {
        vec![1, who, pick, kind]
    }

    /// Client `who` sends a frame breaking rule `kind`.
    pub fn send_invalid(who: u8, kind: u8) -> Vec<u8> {
        vec![2, who, kind]
    }

    /// Client `who` sends an arbitrary frame.
    pub fn send_raw(who: u8, id: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut op = vec![3, who];
        op.extend_from_slice(&id.to_be_bytes());
        op.push(flags);
        op.push(body.len().min(255) as u8);
        op.extend_from_slice(&body[..body.len().min(255)]);
        op
    }

    /// Client `who` goes away.
    pub fn disconnect(who: u8) -> Vec<u8> {
        vec![4, who]
    }

    /// Client `who`'s writer writes `n % 8 + 1` frames.
    pub fn wrote(who: u8, n: u8) -> Vec<u8> {
        vec![5, who, n]
    }

    /// One guest frame of `kind` (0 stdout, 1 stderr, 2 1 MiB stdout, 3 started, 4 exited,
    /// else flags byte `kind`) on the id `target` chooses.
    pub fn guest(target: u8, kind: u8) -> Vec<u8> {
        vec![6, target, kind]
    }

    /// `count >= 0xf0`: `2 * (count - 0xf0) + 2` guest stdout frames of 1 MiB; else
    /// `count % 8 + 1` small ones.
    pub fn flood(target: u8, count: u8) -> Vec<u8> {
        vec![7, target, count]
    }

    /// `ms` milliseconds pass, then a tick.
    pub fn tick(ms: u16) -> Vec<u8> {
        let [a, b] = ms.to_be_bytes();
        vec![8, a, b]
    }

    /// The driver releases pending slot `which`.
    pub fn release(which: u8) -> Vec<u8> {
        vec![9, which]
    }

    /// Writing to client `who` fails.
    pub fn write_failed(who: u8) -> Vec<u8> {
        vec![10, who]
    }

    /// Client `who`'s stream breaks framing.
    pub fn stream_error(who: u8) -> Vec<u8> {
        vec![11, who]
    }

    /// The agent answers the barrier of waiting slot `which`.
    pub fn answer_barrier(which: u8) -> Vec<u8> {
        vec![12, which]
    }
}

#[cfg(test)]
mod tests {
    use super::ops::*;
    use super::*;

    fn script(ops: &[Vec<u8>]) -> Vec<u8> {
        ops.concat()
    }

    /// The harness after every op of `input`, each checked.
    fn after(input: &[u8]) -> Harness {
        let mut harness = Harness::new();
        let mut cursor = Input { data: input, at: 0 };
        while let Some(op) = cursor.next() {
            assert!(harness.step(op % OPS, &mut cursor));
            harness.check_bounds();
        }
        harness
    }

    #[test]
    fn the_ninth_exec_is_answered_by_the_relay() {
        let mut ops = vec![connect()];
        ops.extend((0..8).map(|n| send_valid(0, 2 * n, 0)));
        ops.push(send_valid(0, 9, 0));
        let harness = after(&script(&ops));
        assert_eq!(harness.flows.len(), 8);
        assert!(harness.clients[0].open);
        // The greeting, then the relay's exec.failed.
        assert_eq!(harness.clients[0].queue.len(), 2);
    }

    #[test]
    fn flow_breaches_close_their_client() {
        let stdin_early = script(&[connect(), send_valid(0, 0, 0), send_valid(0, 0, 1)]);
        assert!(!after(&stdin_early).clients[0].open);
        let mut ops = vec![connect(), send_valid(0, 0, 0), guest(0, 3)];
        ops.extend((0..21).map(|_| send_valid(0, 0, 1)));
        let mut harness = after(&script(&ops));
        assert!(harness.clients[0].open, "63 bytes fit the 64-byte window");
        let mut cursor = Input { data: &send_valid(0, 0, 1), at: 0 };
        let op = cursor.next().unwrap();
        harness.step(op % OPS, &mut cursor);
        assert!(!harness.clients[0].open, "66 do not");
        let mut ops = vec![connect(), send_valid(0, 0, 0)];
        ops.extend((0..8).map(|_| guest(0, 0)));
        assert!(!after(&script(&ops)).clients[0].open, "output past the window");
        let reuse = script(&[connect(), send_valid(0, 0, 0), send_valid(0, 0, 0)]);
        assert!(!after(&reuse).clients[0].open);
    }

    #[test]
    fn the_barrier_ends_abandoned_execs() {
        let input =
            script(&[connect(), send_valid(0, 0, 0), disconnect(0), release(0), answer_barrier(0)]);
        let harness = after(&input);
        assert!(harness.flows.is_empty() && harness.sessions.is_empty());
        assert_eq!(harness.slots[0], ModelSlot::Free);
    }

    #[test]
    fn an_orphaned_exec_holds_its_slot_until_it_ends() {
        let input = script(&[
            connect(),
            send_valid(0, 0, 0),
            disconnect(0),
            release(0),
            connect(),
            guest(0, 4),
            answer_barrier(0),
            connect(),
        ]);
        run(&input);
        let mut harness = Harness::new();
        let mut cursor = Input { data: &input, at: 0 };
        while let Some(op) = cursor.next() {
            assert!(harness.step(op % OPS, &mut cursor));
            harness.check_bounds();
        }
        let slots: Vec<u32> = harness.clients.iter().map(|c| c.slot.index()).collect();
        assert_eq!(slots, [1, 0], "slot 0 is free again only after its exec ended");
    }

    #[test]
    fn a_departed_slot_waits_for_its_barrier() {
        let input = script(&[
            connect(),
            disconnect(0),
            release(0),
            connect(),
            answer_barrier(0),
            connect(),
        ]);
        let mut harness = Harness::new();
        let mut cursor = Input { data: &input, at: 0 };
        while let Some(op) = cursor.next() {
            assert!(harness.step(op % OPS, &mut cursor));
            harness.check_bounds();
        }
        let slots: Vec<u32> = harness.clients.iter().map(|c| c.slot.index()).collect();
        assert_eq!(slots, [1, 0], "slot 0 is free again only after the barrier was answered");
    }

    #[test]
    fn the_drain_deadline_frees_a_slot() {
        run(&script(&[
            connect(),
            send_valid(0, 0, 0),
            disconnect(0),
            release(0),
            tick(1),
            tick(u16::try_from(ORPHANED_EXEC_DRAIN_MS).unwrap()),
            connect(),
            guest(0, 0),
        ]));
    }

    #[test]
    fn a_flood_overflows_one_client_only() {
        let input =
            script(&[connect(), connect(), send_valid(0, 0, 0), flood(0, 0xf8), guest(1, 0)]);
        let mut harness = Harness::new();
        let mut cursor = Input { data: &input, at: 0 };
        while let Some(op) = cursor.next() {
            assert!(harness.step(op % OPS, &mut cursor));
            harness.check_bounds();
        }
        let open: Vec<bool> = harness.clients.iter().map(|c| c.open).collect();
        assert_eq!(open, [false, true], "the flooded client is closed, the other is not");
    }

    #[test]
    fn rule_breakers_are_closed_alone() {
        for kind in 0..14 {
            run(&script(&[connect(), connect(), send_invalid(1, kind), guest(1, 0), tick(6000)]));
        }
    }

    #[test]
    fn bad_guest_flags_end_the_run() {
        run(&script(&[connect(), guest(1, 0x03), connect()]));
    }

    #[test]
    fn the_model_catches_a_misrouted_frame() {
        let mut harness = Harness::new();
        harness.connect();
        harness.connect();
        // Pretend the model believed slot 1's client owned slot 0: the real routing disagrees.
        harness.clients.swap(0, 1);
        let (a, b) = (harness.clients[0].slot, harness.clients[1].slot);
        harness.clients[0].slot = b;
        harness.clients[1].slot = a;
        let frame = raw(&MessageFrame::new(a.range().first_usable(), Message::Ping));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            harness.guest_frame(&frame, &wire(&frame));
        }));
        assert!(caught.is_err(), "the isolation check must fail on a wrong model");
    }
}
