//! Helpers shared by the rejection and acceptance tests: hand-built CBOR, frames and envelopes
//! (so inputs do not depend on the encoder under test), one valid sample message per type, and
//! decode shortcuts that check the `core.error` kind of every error.
//!
//! Each test crate uses a subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish};
use moat_protocol::payload::core::{
    ClockSync, CoreError, CoreErrorKind, InitAck, InitResolved, Ready, RelayClientDisconnected,
    ResolvedUser, RootDiskGrow, RootDiskState, Touched,
};
use moat_protocol::payload::exec::{
    Consumed, Data, ExecExited, ExecFailed, ExecFailureKind, ExecRequest, ExecResize, ExecSignal,
    ExecStarted, ExecStdinError,
};
use moat_protocol::payload::fs::{FsOp, FsRequest, FsResponse};
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawMode, WorkloadThawed,
    WorkloadTransportCredit,
};
use moat_protocol::{
    DecodeError, Decoded, Flags, Message, MessageFrame, MessageType, RawFrame, decode_frame,
};

/// A shortest-form CBOR head.
pub(crate) fn head(major: u8, value: u64) -> Vec<u8> {
    let major = major << 5;
    match value {
        0..=23 => vec![major | value as u8],
        24..=0xff => vec![major | 24, value as u8],
        0x100..=0xffff => [vec![major | 25], (value as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => {
            [vec![major | 26], (value as u32).to_be_bytes().to_vec()].concat()
        }
        _ => [vec![major | 27], value.to_be_bytes().to_vec()].concat(),
    }
}

/// An unsigned integer.
pub(crate) fn uint(value: u64) -> Vec<u8> {
    head(0, value)
}

/// A text string.
pub(crate) fn text(s: &str) -> Vec<u8> {
    [head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}

/// A byte string.
pub(crate) fn bstr(b: &[u8]) -> Vec<u8> {
    [head(2, b.len() as u64), b.to_vec()].concat()
}

/// A definite-length map of already-encoded keys and values.
pub(crate) fn map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = head(5, entries.len() as u64);
    for (k, v) in entries {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// An indefinite-length map (`bf ... ff`).
pub(crate) fn indefinite_map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0xbf];
    for (k, v) in entries {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out.push(0xff);
    out
}

/// A map with text keys.
pub(crate) fn obj(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<_> = entries.iter().map(|(k, v)| (text(k), v.clone())).collect();
    map(&entries)
}

/// CBOR `null`.
pub(crate) const NULL: u8 = 0xf6;

/// CBOR booleans.
pub(crate) fn boolean(b: bool) -> Vec<u8> {
    vec![if b { 0xf5 } else { 0xf4 }]
}

/// The reference envelope `{v, t, p}` with keys in the encoder's order.
pub(crate) fn envelope(v: u64, t: &str, p: &[u8]) -> Vec<u8> {
    obj(&[("v", uint(v)), ("t", text(t)), ("p", bstr(p))])
}

/// Complete wire bytes `[len][id][flags][body]`, written by hand.
pub(crate) fn wire(id: u32, flags: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(5 + body.len()).expect("test bodies fit a u32");
    [len.to_be_bytes().to_vec(), id.to_be_bytes().to_vec(), vec![flags], body.to_vec()].concat()
}

/// What `decode_frame` makes of a frame with this header and body.
pub(crate) fn decode(id: u32, flags: u8, body: &[u8]) -> Result<Decoded, DecodeError> {
    decode_frame(&RawFrame {
        id,
        flags: Flags::from_bits(flags),
        body: Bytes::copy_from_slice(body),
    })
}

/// Decodes a frame of `t`, with its proper flags, carrying payload bytes `p`.
pub(crate) fn decode_payload(t: MessageType, p: &[u8]) -> Result<Message, DecodeError> {
    match decode(1, t.flags().bits(), &envelope(10, t.wire_name(), p))? {
        Decoded::Message(frame) => Ok(frame.message),
        other => panic!("{t}: decoded as {other:?}"),
    }
}

/// The message a payload must decode to.
pub(crate) fn accepted(t: MessageType, p: &[u8]) -> Message {
    decode_payload(t, p).unwrap_or_else(|e| panic!("{t}: {e}"))
}

/// Asserts `p` is refused for `t` as `invalid_payload` naming `t`, and returns the error text.
pub(crate) fn refused_payload(t: MessageType, p: &[u8]) -> String {
    let err = decode_payload(t, p).expect_err("payload must be refused");
    assert!(
        matches!(err, DecodeError::Payload { message_type, .. } if message_type == t),
        "{err:?}"
    );
    assert_eq!(err.core_error_kind(), CoreErrorKind::InvalidPayload, "{err}");
    assert_eq!(err.core_error().offending_type.as_deref(), Some(t.wire_name()));
    err.to_string()
}

/// Asserts a frame body is refused as `malformed_message`, and returns the error.
pub(crate) fn malformed(id: u32, flags: u8, body: &[u8]) -> DecodeError {
    let err = decode(id, flags, body).expect_err("body must be refused");
    assert_eq!(err.core_error_kind(), CoreErrorKind::MalformedMessage, "{err}");
    assert_eq!(err.core_error().offending_type, None, "{err}");
    err
}

/// A valid message of each type, encoded with the crate's encoder.
pub(crate) fn sample(t: MessageType) -> Message {
    let data = || Data { data: b"x".to_vec() };
    let credit = WorkloadTransportCredit::default();
    match t {
        MessageType::Bootstrap => Message::Bootstrap(Box::default()),
        MessageType::InitResolved => {
            Message::InitResolved(InitResolved { default_user: ResolvedUser { uid: 1, gid: 2 } })
        }
        MessageType::InitAck => Message::InitAck(InitAck { failure: true }),
        MessageType::Ready => Message::Ready(Ready::default()),
        MessageType::Shutdown => Message::Shutdown,
        MessageType::RelayClientDisconnected => {
            Message::RelayClientDisconnected(RelayClientDisconnected {
                id_start: 1,
                id_end_exclusive: 33_554_431,
                incarnation: None,
            })
        }
        MessageType::ClockSync => Message::ClockSync(ClockSync { unix_time_nanos: 5 }),
        MessageType::Ping => Message::Ping,
        MessageType::Pong => Message::Pong,
        MessageType::Touch => Message::Touch,
        MessageType::Touched => Message::Touched(Touched { activity_seq: 1 }),
        MessageType::Error => Message::Error(CoreError {
            kind: CoreErrorKind::InvalidSession,
            message: "m".into(),
            offending_type: None,
            init_failure: None,
            workload_failure: None,
        }),
        MessageType::WorkloadFreeze => Message::WorkloadFreeze(WorkloadFreeze {
            external_mount_tags: Vec::new(),
            attempt_id: "a".into(),
            host_input: credit,
        }),
        MessageType::WorkloadFrozen => Message::WorkloadFrozen(WorkloadFrozen {
            attempt_id: "a".into(),
            guest_bulk_bytes_target: 0,
            input_credit: credit,
            external_mounts_synced: false,
        }),
        MessageType::WorkloadThaw => Message::WorkloadThaw(WorkloadThaw {
            attempt_id: "a".into(),
            mode: WorkloadThawMode::Continue,
        }),
        MessageType::WorkloadThawed => {
            Message::WorkloadThawed(WorkloadThawed { attempt_id: "a".into() })
        }
        MessageType::WorkloadTransportCredit => Message::WorkloadTransportCredit(credit),
        MessageType::RootDiskPrepare => Message::RootDiskPrepare(RootDiskGrow { size_bytes: 1 }),
        MessageType::RootDiskGrow => Message::RootDiskGrow(RootDiskGrow { size_bytes: 1 }),
        MessageType::RootDiskState => {
            Message::RootDiskState(RootDiskState { filesystem_bytes: 1, device_bytes: 2 })
        }
        MessageType::BulkAccepted => Message::BulkAccepted(BulkAccepted {
            kind: 1,
            flows: 2,
            format: 1,
            max_record_payload: 16_384,
            host_to_guest_credit_limit: 0,
            guest_to_host_credit_limit: 1,
        }),
        MessageType::BulkCredit => Message::BulkCredit(BulkCredit {
            kind: 1,
            flow: 2,
            consumed_offset: 0,
            credit_limit: 1,
        }),
        MessageType::BulkFinish => {
            Message::BulkFinish(BulkFinish { kind: 1, flow: 2, final_offset: 0 })
        }
        MessageType::BulkCancel => {
            Message::BulkCancel(BulkCancel { kind: 1, reason: 5, message: "m".into() })
        }
        MessageType::ExecRequest => Message::ExecRequest(ExecRequest::new("true")),
        MessageType::ExecStarted => Message::ExecStarted(ExecStarted { pid: 1 }),
        MessageType::ExecStdin => Message::ExecStdin(data()),
        MessageType::ExecStdinError => Message::ExecStdinError(ExecStdinError {
            errno: None,
            errno_name: None,
            message: "m".into(),
        }),
        MessageType::ExecStdout => Message::ExecStdout(data()),
        MessageType::ExecStderr => Message::ExecStderr(data()),
        MessageType::ExecExited => Message::ExecExited(ExecExited { code: 0 }),
        MessageType::ExecFailed => Message::ExecFailed(ExecFailed {
            kind: ExecFailureKind::Other,
            errno: None,
            errno_name: None,
            message: "m".into(),
            stage: None,
        }),
        MessageType::ExecResize => Message::ExecResize(ExecResize { rows: 1, cols: 1 }),
        MessageType::ExecSignal => Message::ExecSignal(ExecSignal { signal: 9 }),
        MessageType::ExecOutputAck => Message::ExecOutputAck(Consumed { consumed: 256 }),
        MessageType::ExecStdinAck => Message::ExecStdinAck(Consumed { consumed: 1 }),
        MessageType::FsRequest => {
            Message::FsRequest(FsRequest { op: FsOp::List { path: "/".into() }, bulk: None })
        }
        MessageType::FsResponse => Message::FsResponse(FsResponse::ok(None)),
        MessageType::FsData => Message::FsData(data()),
        MessageType::TcpConnect => {
            Message::TcpConnect(TcpConnect { host: "h".into(), port: 1, bulk: None })
        }
        MessageType::TcpConnected => Message::TcpConnected,
        MessageType::TcpData => Message::TcpData(data()),
        MessageType::TcpEof => Message::TcpEof,
        MessageType::TcpClose => Message::TcpClose,
        MessageType::TcpClosed => Message::TcpClosed,
        MessageType::TcpFailed => Message::TcpFailed(TcpFailed { error: "e".into() }),
    }
}

/// The wire bytes of `sample(t)` on id 7.
pub(crate) fn sample_wire(t: MessageType) -> Vec<u8> {
    MessageFrame::new(7, sample(t)).to_bytes().expect("samples encode")
}
