//! `agentd_dispatch`: agentd's sans-IO [`Dispatcher`] fed arbitrary frames, with fake exec and
//! filesystem services.
//!
//! ```text
//!  input: [frame][frame] ...                       (at most MAX_FRAMES; a missing byte reads 0)
//!  frame: [id u32 BE][flags u8][kind u8][len u16 BE][bytes ...len]
//!
//!  kind % 4  the frame's body
//!  ────────  ──────────────────────────────────────────────────────────────────────────────
//!   0        the bytes as they are
//!   1        {"v": bytes[0], "t": the rest as text, "p": {}}: an envelope of any type name
//!   2        the same, the name repeated to about 32 KiB * (kind / 4 % 64 + 1): huge echoed
//!            input (MAX_REPEATED_NAME_BYTES per input in all, then as kind 1)
//!   3        by kind / 4 % 4: 0 exec.request {"cmd": the bytes as text} (the fake exec service
//!            refuses it when the command is empty, echoing the command in its error);
//!            1 core.workload.freeze, 2 core.workload.thaw {continue}, the bytes as attempt id;
//!            3 core.bulk.credit {kind 1, flow bytes[0], consumed bytes[1], limit bytes[2] MiB}
//! ```
//!
//! Raw bulk records are kind 0 bodies under flags `0x08`. Freeze and thaw reach the real
//! [`WorkloadLatch`] over a freezer that signals nothing, so its state machine is fuzzed too.
//!
//! The fakes: exec sessions start on `exec.request` (unless refused) and exist until
//! `release_range`; stdin, signal, resize and output acks on an unknown session are refused with
//! `invalid_session`; an output ack that goes back from the session's last one, or past
//! [`FAKE_SENT_CHARGE`], is refused with `invalid_payload` (as agentd's output window does); fs
//! requests and data are taken (the fs service answers them itself); tcp sessions open on
//! `tcp.connect` (refused with `tcp.failed` for port 0 or a bulk offer, echoing the host) and end
//! on `tcp.close` or `release_range`; tcp data, eof and close on an unknown session are refused
//! with `tcp.failed`.
//!
//! Properties, per frame: `handle` never panics; a frame is either answered on its own id
//! (a reply or a `core.error`), or reaches a service, or is one of the frames that need no
//! answer (shutdown, clock sync, init ack, a valid disconnect notice, relay-local records);
//! every reply encodes as a frame within the 4 MiB limit, with a `core.error` message of at
//! most 1024 bytes and an `offending_type` of at most 256, and a `core.tcp.failed` error of at
//! most 1024.

use bytes::Bytes;
use moat_agentd::dispatch::BulkControl;
use moat_agentd::dispatch::{
    Action, Dispatcher, MAX_ERROR_MESSAGE_BYTES, MAX_OFFENDING_TYPE_BYTES, Rejected, Services,
};
use moat_agentd::workload::{Freezer, WorkloadLatch};
use moat_protocol::BulkRecord;
use moat_protocol::limits::MAX_WIRE_FRAME_BYTES;
use moat_protocol::payload::bulk::BulkCredit;
use moat_protocol::payload::core::{CoreError, CoreErrorKind};
use moat_protocol::payload::exec::ExecRequest;
use moat_protocol::payload::fs::FsRequest;
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawMode, WorkloadThawed,
};
use moat_protocol::relay::IdRange;
use moat_protocol::{Decoded, Flags, Message, MessageFrame, MessageType, RawFrame, decode_frame};

/// Frames read from one input at most.
pub const MAX_FRAMES: usize = 512;

/// Bytes of repeated type names (kind 2) one input may build in all; past it, kind 2 is kind 1.
/// Any name over the error caps already shows a missing cut, without making every input slow.
pub const MAX_REPEATED_NAME_BYTES: usize = 2 * 1024 * 1024;

/// The output charge every fake session has "sent": acks past it over-claim.
pub const FAKE_SENT_CHARGE: u64 = 1 << 20;

/// The fake services: which exec sessions exist (with their last output ack), and the ids the
/// last call touched.
struct Fake {
    sessions: Vec<u32>,
    tcp_sessions: Vec<u32>,
    acked: std::collections::HashMap<u32, u64>,
    touched: Vec<u32>,
    released: bool,
    clock: bool,
    workload: WorkloadLatch<NoFreezer>,
}

impl Default for Fake {
    fn default() -> Fake {
        Fake {
            sessions: Vec::new(),
            tcp_sessions: Vec::new(),
            acked: std::collections::HashMap::new(),
            touched: Vec::new(),
            released: false,
            clock: false,
            workload: WorkloadLatch::new(NoFreezer),
        }
    }
}

/// A freezer whose processes stop at once and that signals nothing.
struct NoFreezer;

impl Freezer for NoFreezer {
    fn available(&self) -> bool {
        true
    }
    fn signal_all(&mut self, _stop: bool) {}
    fn running(&mut self) -> Vec<String> {
        Vec::new()
    }
    fn sync(&mut self) {}
}

impl Fake {
    fn session(&mut self, id: u32) -> Result<(), Rejected> {
        self.touched.push(id);
        if self.sessions.contains(&id) {
            Ok(())
        } else {
            Err(Rejected::Error {
                kind: CoreErrorKind::InvalidSession,
                message: format!("no exec session {id}"),
            })
        }
    }
}

impl Fake {
    fn tcp_session(&mut self, id: u32) -> Result<(), TcpFailed> {
        self.touched.push(id);
        if self.tcp_sessions.contains(&id) {
            Ok(())
        } else {
            Err(TcpFailed { error: format!("unknown TCP session: {id}") })
        }
    }
}

impl Services for Fake {
    fn exec_start(&mut self, id: u32, _v: u8, request: ExecRequest) -> Result<(), Rejected> {
        self.touched.push(id);
        if request.cmd.is_empty() || request.cmd.starts_with('!') {
            return Err(Rejected::Error {
                kind: CoreErrorKind::InvalidPayload,
                message: format!("cannot run {:?}: refused by the fake", request.cmd),
            });
        }
        if self.sessions.len() < 4096 && !self.sessions.contains(&id) {
            self.sessions.push(id);
        }
        Ok(())
    }

    fn exec_stdin(&mut self, id: u32, _data: Vec<u8>) -> Result<(), Rejected> {
        self.session(id)
    }

    fn exec_signal(&mut self, id: u32, _signal: i32) -> Result<(), Rejected> {
        self.session(id)
    }

    fn exec_resize(&mut self, id: u32, _rows: u16, _cols: u16) -> Result<(), Rejected> {
        self.session(id)
    }

    fn exec_output_ack(&mut self, id: u32, consumed: u64) -> Result<(), Rejected> {
        self.session(id)?;
        let acked = self.acked.entry(id).or_default();
        if consumed < *acked || consumed > FAKE_SENT_CHARGE {
            return Err(Rejected::Error {
                kind: CoreErrorKind::InvalidPayload,
                message: format!("output ack {consumed} after {acked}: refused by the fake"),
            });
        }
        *acked = consumed;
        Ok(())
    }

    fn fs_request(&mut self, id: u32, _v: u8, _request: FsRequest) {
        self.touched.push(id);
    }

    fn fs_data(&mut self, id: u32, _data: Vec<u8>) {
        self.touched.push(id);
    }

    fn tcp_connect(&mut self, id: u32, _v: u8, connect: TcpConnect) -> Result<(), TcpFailed> {
        self.touched.push(id);
        if connect.port == 0 || connect.bulk.is_some() {
            let target = format!("{}:{}", connect.host, connect.port);
            return Err(TcpFailed { error: format!("connect {target}: refused by the fake") });
        }
        if self.tcp_sessions.len() < 4096 && !self.tcp_sessions.contains(&id) {
            self.tcp_sessions.push(id);
        }
        Ok(())
    }

    fn tcp_data(&mut self, id: u32, _data: Vec<u8>) -> Result<(), TcpFailed> {
        self.tcp_session(id)
    }

    fn tcp_eof(&mut self, id: u32) -> Result<(), TcpFailed> {
        self.tcp_session(id)
    }

    fn tcp_close(&mut self, id: u32) -> Result<(), TcpFailed> {
        self.tcp_session(id)?;
        self.tcp_sessions.retain(|s| *s != id);
        Ok(())
    }

    fn release_range(&mut self, range: IdRange) {
        self.released = true;
        self.sessions.retain(|id| !range.contains(*id));
        self.tcp_sessions.retain(|id| !range.contains(*id));
        self.acked.retain(|id, _| !range.contains(*id));
    }

    fn clock_sync(&mut self, _unix_nanos: u64) {
        self.clock = true;
    }

    fn bulk_record(&mut self, record: BulkRecord) -> Result<(), Rejected> {
        self.touched.push(record.id);
        Ok(())
    }

    fn bulk_control(&mut self, id: u32, _control: BulkControl) -> Result<(), Rejected> {
        self.touched.push(id);
        Ok(())
    }

    fn workload_freeze(&mut self, freeze: WorkloadFreeze) -> Result<WorkloadFrozen, CoreError> {
        let was_frozen = self.workload.frozen();
        let result = self.workload.freeze(freeze);
        assert!(!was_frozen || result.is_err(), "a second freeze succeeded");
        assert!(self.workload.frozen() || result.is_err(), "a freeze left the latch running");
        result
    }

    fn workload_thaw(&mut self, thaw: WorkloadThaw) -> Result<WorkloadThawed, CoreError> {
        let was_frozen = self.workload.frozen();
        let result = self.workload.thaw(thaw);
        assert!(was_frozen || result.is_err(), "a thaw of a running workload succeeded");
        result
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut byte = move || input.next();
    let mut dispatcher = Dispatcher::new();
    let mut fake = Fake::default();
    let mut repeated = 0;
    for _ in 0..MAX_FRAMES {
        let Some(first) = byte() else { break };
        let mut next = || byte().unwrap_or(0);
        let id = u32::from_be_bytes([first, next(), next(), next()]);
        let flags = Flags::from_bits(next());
        let mut kind = next();
        let len = usize::from(u16::from_be_bytes([next(), next()]));
        let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
        if kind % 4 == 2 {
            repeated += repeated_name_bytes(kind);
            if repeated > MAX_REPEATED_NAME_BYTES {
                kind -= 1;
            }
        }
        let body = body(kind, &bytes);
        let frame = RawFrame { id, flags, body: Bytes::from(body) };
        check_one(&mut dispatcher, &mut fake, &frame);
    }
}

/// The body a frame's `kind` and bytes describe.
pub fn body(kind: u8, bytes: &[u8]) -> Vec<u8> {
    match kind % 4 {
        0 => bytes.to_vec(),
        1 | 2 => {
            let v = bytes.first().copied().unwrap_or(0);
            let mut name = String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned();
            if kind % 4 == 2 && !name.is_empty() {
                name = name.repeat(repeated_name_bytes(kind) / name.len() + 1);
            }
            envelope(v, &name, &[0xa0])
        }
        _ => match kind / 4 % 4 {
            0 => {
                let cmd = String::from_utf8_lossy(bytes);
                let mut payload = vec![0xa1];
                text(&mut payload, "cmd");
                text(&mut payload, &cmd);
                envelope(10, "core.exec.request", &payload)
            }
            1 => message_body(Message::WorkloadFreeze(WorkloadFreeze {
                external_mount_tags: Vec::new(),
                attempt_id: String::from_utf8_lossy(bytes).into_owned(),
                host_input: Default::default(),
            })),
            2 => message_body(Message::WorkloadThaw(WorkloadThaw {
                attempt_id: String::from_utf8_lossy(bytes).into_owned(),
                mode: WorkloadThawMode::Continue,
            })),
            _ => {
                let at = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(0));
                message_body(Message::BulkCredit(BulkCredit {
                    kind: 1,
                    flow: bytes.first().copied().unwrap_or(0),
                    consumed_offset: at(1) << 20,
                    credit_limit: at(2) << 20,
                }))
            }
        },
    }
}

/// The envelope body of `message` (its frame without the 9-byte header).
fn message_body(message: Message) -> Vec<u8> {
    let wire = MessageFrame::new(0, message).to_bytes().unwrap_or_default();
    wire.get(9..).unwrap_or_default().to_vec()
}

/// About how long a kind-2 frame's repeated type name is.
fn repeated_name_bytes(kind: u8) -> usize {
    32 * 1024 * (usize::from(kind / 4 % 64) + 1)
}

/// `{"v": v, "t": t, "p": p}` as CBOR: the payload's CBOR travels as a byte string.
fn envelope(v: u8, t: &str, p: &[u8]) -> Vec<u8> {
    let mut out = vec![0xa3];
    text(&mut out, "v");
    out.extend_from_slice(&[0x18, v]);
    text(&mut out, "t");
    text(&mut out, t);
    text(&mut out, "p");
    head(&mut out, 0x40, p.len());
    out.extend_from_slice(p);
    out
}

/// A CBOR text string.
fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 0x60, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A CBOR head: major type `major` (its top three bits) and length `len`.
fn head(out: &mut Vec<u8>, major: u8, len: usize) {
    if len < 24 {
        out.push(major | len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[major | 24, len as u8]);
    } else if len < 0x1_0000 {
        out.push(major | 25);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(major | 26);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Frames that need no answer from the dispatcher when it does not give one.
fn needs_no_answer(frame: &RawFrame, fake: &Fake) -> bool {
    match decode_frame(frame) {
        Ok(Decoded::Lease(_) | Decoded::LocalTransport(_)) => true,
        Ok(Decoded::Message(m)) => match m.message.message_type() {
            Some(MessageType::ClockSync) => fake.clock,
            Some(MessageType::InitAck) => true,
            Some(MessageType::RelayClientDisconnected) => fake.released,
            _ => false,
        },
        _ => false,
    }
}

fn check_one(dispatcher: &mut Dispatcher, fake: &mut Fake, frame: &RawFrame) {
    fake.touched.clear();
    fake.released = false;
    fake.clock = false;
    let action = dispatcher.handle(frame, fake);
    check_action(frame, fake, action);
}

/// The properties, for the `action` the dispatcher took on `frame`.
fn check_action(frame: &RawFrame, fake: &Fake, action: Option<Action>) {
    match action {
        Some(Action::Reply { id, message }) => {
            assert_eq!(id, frame.id, "a reply on another id than the request's");
            if let Message::Error(error) = &message {
                assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES, "core.error message");
                assert!(
                    error
                        .offending_type
                        .as_ref()
                        .is_none_or(|t| t.len() <= MAX_OFFENDING_TYPE_BYTES),
                    "core.error offending_type"
                );
            }
            if let Message::TcpFailed(failed) = &message {
                assert!(failed.error.len() <= MAX_ERROR_MESSAGE_BYTES, "core.tcp.failed error");
            }
            let wire = MessageFrame::new(id, message)
                .to_bytes()
                .unwrap_or_else(|e| panic!("a reply does not encode: {e}"));
            assert!(wire.len() <= MAX_WIRE_FRAME_BYTES, "a {}-byte reply", wire.len());
        }
        Some(Action::Shutdown) => {
            let shutdown = matches!(
                decode_frame(frame),
                Ok(Decoded::Message(MessageFrame { message: Message::Shutdown, .. }))
            );
            assert!(shutdown, "Shutdown for a frame that is not core.shutdown");
        }
        None => {
            let served = fake.touched.contains(&frame.id);
            assert!(
                served || needs_no_answer(frame, fake),
                "frame on id {} flags {} was neither answered nor served",
                frame.id,
                frame.flags
            );
        }
    }
}

/// One frame of the input layout, for seeds.
pub fn join_frame(id: u32, flags: Flags, kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.push(flags.bits());
    out.push(kind);
    out.extend_from_slice(&(bytes.len().min(0xffff) as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..bytes.len().min(0xffff)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_envelopes_decode_to_their_type() {
        let frame = |kind, bytes: &[u8]| RawFrame {
            id: 8,
            flags: Flags::SESSION_START,
            body: Bytes::from(body(kind, bytes)),
        };
        let unknown =
            Dispatcher::new().handle(&frame(2, b"\x0acore.x\xc3\xa9"), &mut Fake::default());
        let Some(Action::Reply { message: Message::Error(error), .. }) = unknown else {
            panic!("expected core.error, got {unknown:?}");
        };
        assert_eq!(error.kind, CoreErrorKind::UnsupportedMessageType, "{}", error.message);
        assert!(error.offending_type.is_some_and(|t| t.starts_with("core.x")));
        let mut fake = Fake::default();
        assert_eq!(Dispatcher::new().handle(&frame(3, b"sh"), &mut fake), None);
        assert_eq!(fake.sessions, [8], "the exec request reached the service");
    }

    #[test]
    fn huge_echoed_names_and_commands_are_answered_within_a_frame() {
        let mut input = join_frame(7, Flags::NONE, 2 + 4 * 63, "\x0acore.nope".as_bytes());
        input.extend(join_frame(8, Flags::SESSION_START, 3, "!".repeat(60_000).as_bytes()));
        input.extend(join_frame(9, Flags::NONE, 1, b"\x0acore.ping"));
        run(&input);
    }

    #[test]
    fn a_silent_drop_or_a_misdirected_reply_is_caught() {
        let ping =
            RawFrame { id: 3, flags: Flags::NONE, body: Bytes::from(body(1, b"\x0acore.ping")) };
        let fake = Fake::default();
        check_action(&ping, &fake, Some(Action::Reply { id: 3, message: Message::Pong }));
        for wrong in
            [None, Some(Action::Reply { id: 4, message: Message::Pong }), Some(Action::Shutdown)]
        {
            let caught = std::panic::catch_unwind(|| check_action(&ping, &fake, wrong.clone()));
            assert!(caught.is_err(), "{wrong:?} for a ping must fail the check");
        }
    }
}
