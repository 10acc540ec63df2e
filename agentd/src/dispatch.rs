//! The dispatcher: one frame from the host in, at most one immediate action out. Sans-IO: the
//! services behind it (exec, filesystem, clock) are a trait, so tests and fuzzers drive it with
//! fakes.
//!
//! Bad input never ends the agent here. Every frame that cannot be served gets a `core.error` on
//! its own id with the kind PROTOCOL.md §12 names, and the agent goes on serving:
//!
//! | input                                        | reply                                         |
//! |----------------------------------------------|-----------------------------------------------|
//! | body that is not an envelope, bad bulk/lease | `malformed_message`                           |
//! | wrong flags byte for the type                | `invalid_flags`                               |
//! | payload that does not decode                 | `invalid_payload`                             |
//! | exec-control frame over 4 KiB                | `invalid_payload`                             |
//! | output ack that regresses or over-claims     | `invalid_payload` (the session is killed)     |
//! | unknown type name                            | `unsupported_message_type`                    |
//! | type newer than the agent's generation (10)  | `unsupported_protocol_generation`             |
//! | raw bulk record, bulk control, no transfer   | `invalid_session` (late ones are discarded)   |
//! | workload freeze/thaw off the private id      | `invalid_session`                             |
//! | freeze twice, thaw when not frozen           | `invalid_session` + `workload_failure`        |
//! | root-disk prepare/grow (no root disk)        | `capability_unavailable`                      |
//! | agent-to-host type sent to the agent         | `unsupported_message_type`                    |
//! | follow-up for an unknown session             | `invalid_session`                             |
//! | tcp connect refused, tcp frame, no session   | `core.tcp.failed` (PROTOCOL.md §10)           |

use moat_protocol::BulkRecord;
use moat_protocol::limits::{AGENT_GENERATION, MAX_EXEC_CONTROL_FRAME_BYTES};
use moat_protocol::payload::core::{CoreError, CoreErrorKind, Touched};
use moat_protocol::payload::exec::{ExecRequest, ExecStdinError};
use moat_protocol::payload::fs::FsRequest;

pub use crate::fs::BulkControl;
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawed,
};
use moat_protocol::relay::{IdRange, Slot, WORKLOAD_CHANNEL_ID};
use moat_protocol::{Decoded, Direction, Message, MessageType, RawFrame, decode_frame};

/// Why a service refused a request; becomes the reply on the request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Answer with `core.error`.
    Error {
        /// Its kind.
        kind: CoreErrorKind,
        /// Its message.
        message: String,
    },
    /// Answer with a non-terminal `core.exec.stdin.error`.
    Stdin(ExecStdinError),
}

/// What the dispatcher drives. The real implementation is in [`crate::driver`].
pub trait Services {
    /// Start an exec session; `v` is the request's generation (flow control from 10).
    fn exec_start(&mut self, id: u32, v: u8, request: ExecRequest) -> Result<(), Rejected>;
    /// Stdin for a session (empty = EOF).
    fn exec_stdin(&mut self, id: u32, data: Vec<u8>) -> Result<(), Rejected>;
    /// Signal a session's process group.
    fn exec_signal(&mut self, id: u32, signal: i32) -> Result<(), Rejected>;
    /// A cumulative output ack for a flow-controlled session.
    fn exec_output_ack(&mut self, id: u32, consumed: u64) -> Result<(), Rejected>;
    /// Resize a session's PTY.
    fn exec_resize(&mut self, id: u32, rows: u16, cols: u16) -> Result<(), Rejected>;
    /// A filesystem request (answered by the service).
    fn fs_request(&mut self, id: u32, v: u8, request: FsRequest);
    /// Filesystem write data (answered by the service).
    fn fs_data(&mut self, id: u32, data: Vec<u8>);
    /// `core.tcp.connect`: open a TCP session (answered by the service); `Err` is the terminal
    /// `core.tcp.failed` to send now.
    fn tcp_connect(&mut self, id: u32, v: u8, connect: TcpConnect) -> Result<(), TcpFailed>;
    /// `core.tcp.data` for an open session.
    fn tcp_data(&mut self, id: u32, data: Vec<u8>) -> Result<(), TcpFailed>;
    /// `core.tcp.eof`: the host's half-close.
    fn tcp_eof(&mut self, id: u32) -> Result<(), TcpFailed>;
    /// `core.tcp.close`: drop the session, with no answer when it exists.
    fn tcp_close(&mut self, id: u32) -> Result<(), TcpFailed>;
    /// A relay client left: release everything in its range.
    fn release_range(&mut self, range: IdRange);
    /// Step the clock.
    fn clock_sync(&mut self, unix_nanos: u64);
    /// A raw bulk record from the host.
    fn bulk_record(&mut self, record: BulkRecord) -> Result<(), Rejected>;
    /// `core.bulk.credit` / `finish` / `cancel` on `id`.
    fn bulk_control(&mut self, id: u32, control: BulkControl) -> Result<(), Rejected>;
    /// `core.workload.freeze`: stop every guest process but the agent.
    fn workload_freeze(&mut self, freeze: WorkloadFreeze) -> Result<WorkloadFrozen, CoreError>;
    /// `core.workload.thaw`: resume them.
    fn workload_thaw(&mut self, thaw: WorkloadThaw) -> Result<WorkloadThawed, CoreError>;
}

/// Why `core.root_disk.*` cannot be served: moat boots no block root (`block_root` in the
/// bootstrap is refused), so no sandbox has a root disk to prepare or grow (PROTOCOL.md §12).
pub const NO_ROOT_DISK_MESSAGE: &str = "this sandbox has no root disk to resize";

/// What the driver must do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` on `id`.
    Reply {
        /// Correlation id.
        id: u32,
        /// The reply.
        message: Message,
    },
    /// Begin the shutdown sequence.
    Shutdown,
}

/// The dispatcher's own state.
#[derive(Debug, Default)]
pub struct Dispatcher {
    activity_seq: u64,
}

/// Longest `core.error` message the agent sends: messages can echo client input (an unknown type
/// name, a command, a path), and a reply must always fit a frame.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Longest `offending_type` the agent sends (an unknown type name is client input).
pub const MAX_OFFENDING_TYPE_BYTES: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn error(id: u32, kind: CoreErrorKind, message: String, offending: Option<&str>) -> Option<Action> {
    Some(Action::Reply {
        id,
        message: Message::Error(CoreError {
            kind,
            message: cut(message, MAX_ERROR_MESSAGE_BYTES),
            offending_type: offending.map(|t| cut(t.to_owned(), MAX_OFFENDING_TYPE_BYTES)),
            init_failure: None,
            workload_failure: None,
        }),
    })
}

/// A workload service's refusal, naming the message it refuses, cut to fit a frame.
fn workload_error(mut error: CoreError, t: MessageType) -> Message {
    error.message = cut(error.message, MAX_ERROR_MESSAGE_BYTES);
    error.offending_type = Some(t.wire_name().to_owned());
    Message::Error(error)
}

fn rejected(id: u32, rejection: Rejected, offending: MessageType) -> Option<Action> {
    match rejection {
        Rejected::Error { kind, message } => error(id, kind, message, Some(offending.wire_name())),
        Rejected::Stdin(stdin_error) => {
            Some(Action::Reply { id, message: Message::ExecStdinError(stdin_error) })
        }
    }
}

/// A tcp refusal as the terminal `core.tcp.failed` on `id`, cut to fit a frame (a connect's host
/// is client input).
fn tcp_failed(id: u32, failed: TcpFailed) -> Option<Action> {
    let error = cut(failed.error, MAX_ERROR_MESSAGE_BYTES);
    Some(Action::Reply { id, message: Message::TcpFailed(TcpFailed { error }) })
}

impl Dispatcher {
    /// A dispatcher with no activity recorded.
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// The activity sequence `core.touched` reports.
    pub fn activity_seq(&self) -> u64 {
        self.activity_seq
    }

    /// Handles one frame.
    pub fn handle(&mut self, frame: &RawFrame, services: &mut impl Services) -> Option<Action> {
        let id = frame.id;
        let message = match decode_frame(frame) {
            Err(err) => {
                let core = err.core_error();
                return error(id, core.kind, core.message, core.offending_type.as_deref());
            }
            Ok(Decoded::Bulk(record)) => {
                return match services.bulk_record(record) {
                    Ok(()) => None,
                    Err(Rejected::Error { kind, message }) => error(id, kind, message, None),
                    Err(Rejected::Stdin(_)) => None,
                };
            }
            Ok(Decoded::Lease(_) | Decoded::LocalTransport(_)) => {
                tracing::warn!(id, "ignoring a relay-local record the agent does not use");
                return None;
            }
            Ok(Decoded::Message(m)) => m,
        };
        let v = message.v;
        let message = message.message;
        let Some(t) = message.message_type() else {
            // Client input: cut before it is formatted, not only after.
            let name = cut(message.wire_name().to_owned(), MAX_OFFENDING_TYPE_BYTES);
            return error(
                id,
                CoreErrorKind::UnsupportedMessageType,
                format!("unknown message type {name:?}"),
                Some(&name),
            );
        };
        if let Some(action) = self.check_acceptable(frame, t) {
            return Some(action);
        }
        self.serve(id, v, t, message, services)
    }

    fn check_acceptable(&self, frame: &RawFrame, t: MessageType) -> Option<Action> {
        let id = frame.id;
        if t.introduced_in() > AGENT_GENERATION {
            return error(
                id,
                CoreErrorKind::UnsupportedProtocolGeneration,
                format!(
                    "{t} needs protocol generation {}; this agent speaks {AGENT_GENERATION}",
                    t.introduced_in()
                ),
                Some(t.wire_name()),
            );
        }
        if t.direction() == Direction::GuestToHost {
            return error(
                id,
                CoreErrorKind::UnsupportedMessageType,
                format!("{t} is sent by the agent, not to it"),
                Some(t.wire_name()),
            );
        }
        if t.is_exec_control() && frame.wire_len() > MAX_EXEC_CONTROL_FRAME_BYTES {
            return error(
                id,
                CoreErrorKind::InvalidPayload,
                "execution control message exceeds 4 KiB".to_owned(),
                Some(t.wire_name()),
            );
        }
        None
    }

    fn serve(
        &mut self,
        id: u32,
        v: u8,
        t: MessageType,
        message: Message,
        services: &mut impl Services,
    ) -> Option<Action> {
        match message {
            Message::Ping => Some(Action::Reply { id, message: Message::Pong }),
            Message::Touch => {
                self.activity_seq += 1;
                Some(Action::Reply {
                    id,
                    message: Message::Touched(Touched { activity_seq: self.activity_seq }),
                })
            }
            Message::Shutdown => Some(Action::Shutdown),
            Message::ClockSync(sync) => {
                services.clock_sync(sync.unix_time_nanos);
                None
            }
            Message::InitAck(_) => None,
            Message::Bootstrap(_) => error(
                id,
                CoreErrorKind::UnsupportedMessageType,
                "core.bootstrap is only valid as the first frame".to_owned(),
                Some(t.wire_name()),
            ),
            Message::RelayClientDisconnected(notice) => {
                let range =
                    IdRange { start: notice.id_start, end_exclusive: notice.id_end_exclusive };
                if Slot::of_range(range).is_none() {
                    return error(
                        id,
                        CoreErrorKind::InvalidPayload,
                        format!(
                            "[{}, {}) is not a relay slot range",
                            range.start, range.end_exclusive
                        ),
                        Some(t.wire_name()),
                    );
                }
                services.release_range(range);
                None
            }
            Message::ExecRequest(request) => {
                self.activity_seq += 1;
                services.exec_start(id, v, request).err().and_then(|r| rejected(id, r, t))
            }
            Message::ExecStdin(data) => {
                services.exec_stdin(id, data.data).err().and_then(|r| rejected(id, r, t))
            }
            Message::ExecSignal(s) => {
                services.exec_signal(id, s.signal).err().and_then(|r| rejected(id, r, t))
            }
            Message::ExecOutputAck(ack) => {
                services.exec_output_ack(id, ack.consumed).err().and_then(|r| rejected(id, r, t))
            }
            Message::ExecResize(r) => {
                services.exec_resize(id, r.rows, r.cols).err().and_then(|e| rejected(id, e, t))
            }
            Message::FsRequest(request) => {
                self.activity_seq += 1;
                services.fs_request(id, v, request);
                None
            }
            Message::FsData(data) => {
                services.fs_data(id, data.data);
                None
            }
            Message::TcpConnect(connect) => {
                self.activity_seq += 1;
                services.tcp_connect(id, v, connect).err().and_then(|f| tcp_failed(id, f))
            }
            Message::TcpData(data) => {
                services.tcp_data(id, data.data).err().and_then(|f| tcp_failed(id, f))
            }
            Message::TcpEof => services.tcp_eof(id).err().and_then(|f| tcp_failed(id, f)),
            Message::TcpClose => services.tcp_close(id).err().and_then(|f| tcp_failed(id, f)),
            Message::WorkloadFreeze(_) | Message::WorkloadThaw(_) if id != WORKLOAD_CHANNEL_ID => {
                error(
                    id,
                    CoreErrorKind::InvalidSession,
                    format!("{t} is only valid on the private workload id {WORKLOAD_CHANNEL_ID}"),
                    Some(t.wire_name()),
                )
            }
            Message::WorkloadFreeze(freeze) => {
                let reply = services.workload_freeze(freeze).map(Message::WorkloadFrozen);
                Some(Action::Reply { id, message: reply.unwrap_or_else(|e| workload_error(e, t)) })
            }
            Message::WorkloadThaw(thaw) => {
                let reply = services.workload_thaw(thaw).map(Message::WorkloadThawed);
                Some(Action::Reply { id, message: reply.unwrap_or_else(|e| workload_error(e, t)) })
            }
            Message::RootDiskPrepare(_) | Message::RootDiskGrow(_) => error(
                id,
                CoreErrorKind::CapabilityUnavailable,
                NO_ROOT_DISK_MESSAGE.to_owned(),
                Some(t.wire_name()),
            ),
            Message::BulkCredit(credit) => services
                .bulk_control(id, BulkControl::Credit(credit))
                .err()
                .and_then(|r| rejected(id, r, t)),
            Message::BulkFinish(finish) => services
                .bulk_control(id, BulkControl::Finish(finish))
                .err()
                .and_then(|r| rejected(id, r, t)),
            Message::BulkCancel(cancel) => services
                .bulk_control(id, BulkControl::Cancel(cancel))
                .err()
                .and_then(|r| rejected(id, r, t)),
            // Everything below was refused by `check_acceptable` (sent by the agent rather than
            // to it); listing them keeps this match exhaustive.
            Message::InitResolved(_)
            | Message::Ready(_)
            | Message::Pong
            | Message::Touched(_)
            | Message::Error(_)
            | Message::WorkloadFrozen(_)
            | Message::WorkloadThawed(_)
            | Message::WorkloadTransportCredit(_)
            | Message::RootDiskState(_)
            | Message::BulkAccepted(_)
            | Message::ExecStarted(_)
            | Message::ExecStdinError(_)
            | Message::ExecStdout(_)
            | Message::ExecStderr(_)
            | Message::ExecExited(_)
            | Message::ExecFailed(_)
            | Message::ExecStdinAck(_)
            | Message::FsResponse(_)
            | Message::TcpConnected
            | Message::TcpClosed
            | Message::TcpFailed(_)
            | Message::Unknown(_) => error(
                id,
                CoreErrorKind::UnsupportedMessageType,
                format!("{t} is not accepted by the agent"),
                Some(t.wire_name()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use moat_protocol::payload::exec::{Data, ExecSignal};
    use moat_protocol::payload::fs::FsOp;
    use moat_protocol::{Flags, MessageFrame};

    /// Records calls; sessions listed in `sessions` exist.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        sessions: Vec<u32>,
    }

    impl Fake {
        fn session(&self, id: u32) -> Result<(), Rejected> {
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
        fn tcp_session(&self, id: u32) -> Result<(), TcpFailed> {
            if self.sessions.contains(&id) {
                Ok(())
            } else {
                Err(TcpFailed { error: format!("unknown TCP session: {id}") })
            }
        }
    }

    impl Services for Fake {
        fn exec_start(&mut self, id: u32, v: u8, request: ExecRequest) -> Result<(), Rejected> {
            self.calls.push(format!("start {id} v{v} {}", request.cmd));
            self.sessions.push(id);
            Ok(())
        }
        fn exec_stdin(&mut self, id: u32, data: Vec<u8>) -> Result<(), Rejected> {
            self.calls.push(format!("stdin {id} {}", data.len()));
            self.session(id)
        }
        fn exec_signal(&mut self, id: u32, signal: i32) -> Result<(), Rejected> {
            self.calls.push(format!("signal {id} {signal}"));
            self.session(id)
        }
        fn exec_output_ack(&mut self, id: u32, consumed: u64) -> Result<(), Rejected> {
            self.calls.push(format!("ack {id} {consumed}"));
            self.session(id)
        }
        fn exec_resize(&mut self, id: u32, rows: u16, cols: u16) -> Result<(), Rejected> {
            self.calls.push(format!("resize {id} {rows}x{cols}"));
            self.session(id)
        }
        fn fs_request(&mut self, id: u32, _v: u8, request: FsRequest) {
            self.calls.push(format!("fs {id} {}", request.op.name()));
        }
        fn fs_data(&mut self, id: u32, data: Vec<u8>) {
            self.calls.push(format!("fs-data {id} {}", data.len()));
        }
        fn tcp_connect(&mut self, id: u32, v: u8, c: TcpConnect) -> Result<(), TcpFailed> {
            self.calls.push(format!("tcp {id} v{v} {}:{}", c.host, c.port));
            if c.port == 0 {
                return Err(TcpFailed { error: format!("connect {}:0: refused", c.host) });
            }
            self.sessions.push(id);
            Ok(())
        }
        fn tcp_data(&mut self, id: u32, data: Vec<u8>) -> Result<(), TcpFailed> {
            self.calls.push(format!("tcp-data {id} {}", data.len()));
            self.tcp_session(id)
        }
        fn tcp_eof(&mut self, id: u32) -> Result<(), TcpFailed> {
            self.calls.push(format!("tcp-eof {id}"));
            self.tcp_session(id)
        }
        fn tcp_close(&mut self, id: u32) -> Result<(), TcpFailed> {
            self.calls.push(format!("tcp-close {id}"));
            self.tcp_session(id)
        }
        fn release_range(&mut self, range: IdRange) {
            self.calls.push(format!("release {}", range.start));
        }
        fn clock_sync(&mut self, unix_nanos: u64) {
            self.calls.push(format!("clock {unix_nanos}"));
        }
        fn bulk_record(&mut self, record: BulkRecord) -> Result<(), Rejected> {
            self.calls.push(format!("record {} {}", record.id, record.payload.len()));
            Err(Rejected::Error {
                kind: CoreErrorKind::InvalidSession,
                message: "no bulk transfer".into(),
            })
        }
        fn bulk_control(&mut self, id: u32, control: BulkControl) -> Result<(), Rejected> {
            self.calls.push(format!("bulk {id} {control:?}"));
            Ok(())
        }
        fn workload_freeze(&mut self, freeze: WorkloadFreeze) -> Result<WorkloadFrozen, CoreError> {
            self.calls.push(format!("freeze {}", freeze.attempt_id));
            Ok(WorkloadFrozen {
                attempt_id: freeze.attempt_id,
                guest_bulk_bytes_target: 0,
                input_credit: freeze.host_input,
                external_mounts_synced: true,
            })
        }
        fn workload_thaw(&mut self, thaw: WorkloadThaw) -> Result<WorkloadThawed, CoreError> {
            self.calls.push(format!("thaw {}", thaw.attempt_id));
            Err(CoreError {
                kind: CoreErrorKind::InvalidSession,
                message: "not frozen".into(),
                offending_type: None,
                init_failure: None,
                workload_failure: None,
            })
        }
    }

    fn raw(id: u32, message: Message) -> RawFrame {
        let bytes = MessageFrame::new(id, message).to_bytes().unwrap();
        RawFrame {
            id,
            flags: Flags::from_bits(bytes[8]),
            body: Bytes::copy_from_slice(&bytes[9..]),
        }
    }

    fn error_kind(action: Option<Action>) -> CoreErrorKind {
        match action {
            Some(Action::Reply { message: Message::Error(e), .. }) => e.kind,
            other => panic!("expected core.error, got {other:?}"),
        }
    }

    #[test]
    fn ping_gets_pong_on_the_same_id() {
        let action = Dispatcher::new().handle(&raw(9, Message::Ping), &mut Fake::default());
        assert_eq!(action, Some(Action::Reply { id: 9, message: Message::Pong }));
    }

    #[test]
    fn touch_advances_activity() {
        let mut d = Dispatcher::new();
        let action = d.handle(&raw(2, Message::Touch), &mut Fake::default());
        assert_eq!(
            action,
            Some(Action::Reply { id: 2, message: Message::Touched(Touched { activity_seq: 1 }) })
        );
    }

    #[test]
    fn unknown_type_gets_unsupported_message_type_and_serving_continues() {
        let mut d = Dispatcher::new();
        let mut fake = Fake::default();
        let unknown = Message::Unknown(moat_protocol::UnknownMessage {
            t: "core.teleport".into(),
            flags: Flags::NONE,
            payload: vec![0xa0],
        });
        assert_eq!(
            error_kind(d.handle(&raw(5, unknown), &mut fake)),
            CoreErrorKind::UnsupportedMessageType
        );
        assert_eq!(
            d.handle(&raw(6, Message::Ping), &mut fake),
            Some(Action::Reply { id: 6, message: Message::Pong })
        );
    }

    #[test]
    fn output_ack_reaches_the_service() {
        let mut fake = Fake { sessions: vec![3], ..Fake::default() };
        let ack = Message::ExecOutputAck(moat_protocol::payload::exec::Consumed { consumed: 259 });
        assert_eq!(Dispatcher::new().handle(&raw(3, ack), &mut fake), None);
        assert_eq!(fake.calls, vec!["ack 3 259"]);
    }

    #[test]
    fn output_ack_for_an_unknown_session_gets_invalid_session() {
        let ack = Message::ExecOutputAck(moat_protocol::payload::exec::Consumed { consumed: 1 });
        let kind = error_kind(Dispatcher::new().handle(&raw(3, ack), &mut Fake::default()));
        assert_eq!(kind, CoreErrorKind::InvalidSession);
    }

    #[test]
    fn root_disk_requests_get_capability_unavailable() {
        let size = moat_protocol::payload::core::RootDiskGrow { size_bytes: 1 };
        for message in [Message::RootDiskGrow(size), Message::RootDiskPrepare(size)] {
            match Dispatcher::new().handle(&raw(3, message), &mut Fake::default()) {
                Some(Action::Reply { id: 3, message: Message::Error(e) }) => {
                    assert_eq!(e.kind, CoreErrorKind::CapabilityUnavailable);
                    assert_eq!(e.message, NO_ROOT_DISK_MESSAGE);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn freeze(attempt: &str) -> Message {
        Message::WorkloadFreeze(WorkloadFreeze {
            external_mount_tags: vec![],
            attempt_id: attempt.into(),
            host_input: Default::default(),
        })
    }

    #[test]
    fn workload_messages_off_the_private_id_get_invalid_session() {
        let mut fake = Fake::default();
        let kind = error_kind(Dispatcher::new().handle(&raw(3, freeze("a")), &mut fake));
        assert_eq!(kind, CoreErrorKind::InvalidSession);
        assert!(fake.calls.is_empty());
    }

    #[test]
    fn workload_messages_on_the_private_id_reach_the_service() {
        let mut fake = Fake::default();
        let mut d = Dispatcher::new();
        match d.handle(&raw(WORKLOAD_CHANNEL_ID, freeze("a")), &mut fake) {
            Some(Action::Reply {
                id: WORKLOAD_CHANNEL_ID,
                message: Message::WorkloadFrozen(f),
            }) => {
                assert_eq!(f.attempt_id, "a");
            }
            other => panic!("{other:?}"),
        }
        let thaw = Message::WorkloadThaw(WorkloadThaw {
            attempt_id: "a".into(),
            mode: moat_protocol::payload::workload::WorkloadThawMode::Continue,
        });
        match d.handle(&raw(WORKLOAD_CHANNEL_ID, thaw), &mut fake) {
            Some(Action::Reply { message: Message::Error(e), .. }) => {
                assert_eq!(e.offending_type.as_deref(), Some("core.workload.thaw"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.calls, ["freeze a", "thaw a"]);
    }

    #[test]
    fn wrong_flags_get_invalid_flags() {
        let mut frame = raw(4, Message::Ping);
        frame.flags = Flags::TERMINAL;
        assert_eq!(
            error_kind(Dispatcher::new().handle(&frame, &mut Fake::default())),
            CoreErrorKind::InvalidFlags
        );
    }

    #[test]
    fn undecodable_payload_gets_invalid_payload() {
        // core.ping whose payload is null instead of {}.
        let mut body = vec![0xa3, 0x61, b'v', 0x0a, 0x61, b't', 0x69];
        body.extend_from_slice(b"core.ping");
        body.extend_from_slice(&[0x61, b'p', 0x41, 0xf6]);
        let frame = RawFrame { id: 1, flags: Flags::NONE, body: Bytes::from(body) };
        assert_eq!(
            error_kind(Dispatcher::new().handle(&frame, &mut Fake::default())),
            CoreErrorKind::InvalidPayload
        );
    }

    #[test]
    fn garbage_body_gets_malformed_message() {
        let frame =
            RawFrame { id: 1, flags: Flags::NONE, body: Bytes::from_static(b"\xff\x00junk") };
        assert_eq!(
            error_kind(Dispatcher::new().handle(&frame, &mut Fake::default())),
            CoreErrorKind::MalformedMessage
        );
    }

    #[test]
    fn follow_up_for_unknown_session_gets_invalid_session() {
        let stdin = Message::ExecStdin(Data::new(b"x".to_vec()));
        assert_eq!(
            error_kind(Dispatcher::new().handle(&raw(77, stdin), &mut Fake::default())),
            CoreErrorKind::InvalidSession
        );
    }

    #[test]
    fn exec_request_and_follow_ups_reach_the_service() {
        let mut d = Dispatcher::new();
        let mut fake = Fake::default();
        assert_eq!(
            d.handle(&raw(1, Message::ExecRequest(ExecRequest::new("echo"))), &mut fake),
            None
        );
        assert_eq!(
            d.handle(&raw(1, Message::ExecSignal(ExecSignal { signal: 9 })), &mut fake),
            None
        );
        assert_eq!(fake.calls, vec!["start 1 v10 echo", "signal 1 9"]);
    }

    #[test]
    fn oversized_exec_control_frame_is_refused() {
        // An exec.signal padded with an unknown key past 4 KiB.
        let mut payload = vec![0xa2, 0x66];
        payload.extend_from_slice(b"signal");
        payload.push(0x09);
        payload.extend_from_slice(&[0x61, b'x', 0x59, 0x10, 0x00]);
        payload.extend(std::iter::repeat_n(0u8, 4096));
        // The encoder refuses oversized exec-control frames, so encode it under a same-length
        // unknown name and patch the name back in.
        let message = Message::Unknown(moat_protocol::UnknownMessage {
            t: "core.exec.signaX".into(),
            flags: Flags::NONE,
            payload,
        });
        let mut frame = raw(1, message);
        let mut body = frame.body.to_vec();
        let at = body.windows(16).position(|w| w == b"core.exec.signaX").unwrap();
        body[at + 15] = b'l';
        frame.body = Bytes::from(body);
        assert!(frame.wire_len() > MAX_EXEC_CONTROL_FRAME_BYTES);
        let mut fake = Fake { sessions: vec![1], ..Fake::default() };
        assert_eq!(
            error_kind(Dispatcher::new().handle(&frame, &mut fake)),
            CoreErrorKind::InvalidPayload
        );
        assert!(fake.calls.is_empty());
    }

    #[test]
    fn agent_originated_type_is_refused() {
        let kind =
            error_kind(Dispatcher::new().handle(&raw(1, Message::Pong), &mut Fake::default()));
        assert_eq!(kind, CoreErrorKind::UnsupportedMessageType);
    }

    #[test]
    fn bulk_records_and_controls_reach_the_service() {
        let frame = RawFrame {
            id: 1,
            flags: Flags::BULK,
            body: Bytes::from_static(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
        };
        let mut fake = Fake::default();
        let mut d = Dispatcher::new();
        assert_eq!(error_kind(d.handle(&frame, &mut fake)), CoreErrorKind::InvalidSession);
        let finish = moat_protocol::payload::bulk::BulkFinish { kind: 1, flow: 1, final_offset: 1 };
        assert_eq!(d.handle(&raw(1, Message::BulkFinish(finish)), &mut fake), None);
        assert_eq!(fake.calls.len(), 2, "{:?}", fake.calls);
        assert!(fake.calls[0].starts_with("record 1 1"));
    }

    #[test]
    fn a_malformed_bulk_record_gets_malformed_message() {
        let frame = RawFrame { id: 1, flags: Flags::BULK, body: Bytes::from_static(&[1, 1, 0]) };
        let kind = error_kind(Dispatcher::new().handle(&frame, &mut Fake::default()));
        assert_eq!(kind, CoreErrorKind::MalformedMessage);
    }

    #[test]
    fn disconnect_notice_releases_a_canonical_range_only() {
        let mut fake = Fake::default();
        let mut d = Dispatcher::new();
        let notice = |start, end| {
            Message::RelayClientDisconnected(
                moat_protocol::payload::core::RelayClientDisconnected {
                    id_start: start,
                    id_end_exclusive: end,
                    incarnation: None,
                },
            )
        };
        assert_eq!(d.handle(&raw(0, notice(1, 33_554_431)), &mut fake), None);
        assert_eq!(
            error_kind(d.handle(&raw(0, notice(5, 9)), &mut fake)),
            CoreErrorKind::InvalidPayload
        );
        assert_eq!(fake.calls, vec!["release 1"]);
    }

    fn connect(host: &str, port: u16) -> Message {
        Message::TcpConnect(TcpConnect { host: host.into(), port, bulk: None })
    }

    #[test]
    fn tcp_connect_and_follow_ups_reach_the_service_without_a_reply() {
        let mut d = Dispatcher::new();
        let mut fake = Fake::default();
        assert_eq!(d.handle(&raw(3, connect("127.0.0.1", 80)), &mut fake), None);
        let data = Message::TcpData(Data::new(b"GET /".to_vec()));
        assert_eq!(d.handle(&raw(3, data), &mut fake), None);
        assert_eq!(d.handle(&raw(3, Message::TcpEof), &mut fake), None);
        assert_eq!(d.handle(&raw(3, Message::TcpClose), &mut fake), None);
        assert_eq!(
            fake.calls,
            ["tcp 3 v10 127.0.0.1:80", "tcp-data 3 5", "tcp-eof 3", "tcp-close 3"]
        );
        assert_eq!(d.activity_seq(), 1, "a connect counts as activity");
    }

    #[test]
    fn a_refused_tcp_connect_gets_a_terminal_tcp_failed_on_its_id() {
        match Dispatcher::new().handle(&raw(3, connect("127.0.0.1", 0)), &mut Fake::default()) {
            Some(Action::Reply { id: 3, message: Message::TcpFailed(f) }) => {
                assert_eq!(f.error, "connect 127.0.0.1:0: refused")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_follow_ups_without_a_session_get_unknown_tcp_session() {
        let data = Message::TcpData(Data::new(b"x".to_vec()));
        for message in [data, Message::TcpEof, Message::TcpClose] {
            match Dispatcher::new().handle(&raw(7, message), &mut Fake::default()) {
                Some(Action::Reply { id: 7, message: Message::TcpFailed(f) }) => {
                    assert_eq!(f.error, "unknown TCP session: 7")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_tcp_failure_echoing_a_huge_host_still_fits_a_frame() {
        let mut fake = Fake::default();
        let action = Dispatcher::new().handle(&raw(3, connect(&"h".repeat(100_000), 0)), &mut fake);
        let Some(Action::Reply { message: Message::TcpFailed(f), .. }) = action else {
            panic!("{action:?}");
        };
        assert!(f.error.len() <= MAX_ERROR_MESSAGE_BYTES, "{}", f.error.len());
    }

    #[test]
    fn shutdown_is_an_action() {
        assert_eq!(
            Dispatcher::new().handle(&raw(0, Message::Shutdown), &mut Fake::default()),
            Some(Action::Shutdown)
        );
    }

    #[test]
    fn fs_requests_go_to_the_service() {
        let mut fake = Fake::default();
        let request = FsRequest { op: FsOp::List { path: "/".into() }, bulk: None };
        assert_eq!(Dispatcher::new().handle(&raw(8, Message::FsRequest(request)), &mut fake), None);
        assert_eq!(fake.calls, vec!["fs 8 List"]);
    }

    #[test]
    fn errors_echoing_a_huge_type_name_still_fit_a_frame() {
        // A 1 MiB unknown type name of two-byte characters: echoed whole, the reply would be
        // over 2 MiB; the cut keeps message and offending_type short, on character boundaries.
        let unknown = Message::Unknown(moat_protocol::UnknownMessage {
            t: "é".repeat(512 * 1024),
            flags: Flags::NONE,
            payload: vec![0xa0],
        });
        let action = Dispatcher::new().handle(&raw(5, unknown), &mut Fake::default());
        let Some(Action::Reply { id: 5, message: Message::Error(error) }) = action else {
            panic!("expected core.error on id 5, got {action:?}");
        };
        assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES, "{}", error.message.len());
        let offending = error.offending_type.clone().expect("the type is named");
        assert!(offending.len() <= MAX_OFFENDING_TYPE_BYTES && offending.starts_with("éé"));
        let reply = MessageFrame::new(5, Message::Error(error.clone())).to_bytes().unwrap();
        assert!(reply.len() < 2 * (MAX_ERROR_MESSAGE_BYTES + MAX_OFFENDING_TYPE_BYTES));
        assert_eq!(cut("aé".to_owned(), 2), "a");
    }
}
