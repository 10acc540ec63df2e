//! What the protocol refuses inside a well-formed envelope (PROTOCOL.md §2.2, §6, §18.1, §18.7,
//! §18.15) and in raw bulk records (§11.1, §18.20), one behaviour per test. Payload errors are
//! `invalid_payload` naming the offending type; bulk record errors are `malformed_message`.

mod support;

use bytes::Bytes;
use moat_protocol::bulk::{BulkFlow, BulkKind, BulkRecord, BulkRecordError};
use moat_protocol::error::EncodeError;
use moat_protocol::limits::{BULK_RECORD_HEADER_BYTES, MAX_BULK_RECORD_PAYLOAD_BYTES};
use moat_protocol::payload::core::{CoreError, CoreErrorKind, InitFailureReason};
use moat_protocol::payload::core::{WorkloadFailure, WorkloadFailureDisposition};
use moat_protocol::{DecodeError, Decoded, Message, MessageType};

use support::{
    NULL, accepted, boolean, bstr, decode, indefinite_map, malformed, obj, refused_payload, text,
    uint,
};

/// The types whose payload is the empty struct `{}`.
const EMPTY_STRUCT_TYPES: [MessageType; 7] = [
    MessageType::Ping,
    MessageType::Pong,
    MessageType::Touch,
    MessageType::TcpConnected,
    MessageType::TcpEof,
    MessageType::TcpClose,
    MessageType::TcpClosed,
];

/// The types whose payload is `{data: bytes}`.
const DATA_TYPES: [MessageType; 5] = [
    MessageType::ExecStdin,
    MessageType::ExecStdout,
    MessageType::ExecStderr,
    MessageType::FsData,
    MessageType::TcpData,
];

// §6.1, §18.1: `{}` payloads.

#[test]
fn empty_struct_types_refuse_a_null_payload() {
    for t in EMPTY_STRUCT_TYPES {
        refused_payload(t, &[NULL]);
    }
}

#[test]
fn empty_struct_types_refuse_an_empty_byte_string_payload() {
    for t in EMPTY_STRUCT_TYPES {
        refused_payload(t, &bstr(b""));
    }
}

#[test]
fn empty_struct_types_refuse_a_zero_length_payload() {
    for t in EMPTY_STRUCT_TYPES {
        refused_payload(t, &[]);
    }
}

#[test]
fn shutdown_refuses_an_empty_map_payload() {
    refused_payload(MessageType::Shutdown, &[0xa0]);
}

// §2.2, §18.7: `data` is a byte string.

#[test]
fn data_given_as_a_text_string_is_invalid_payload() {
    for t in DATA_TYPES {
        refused_payload(t, &obj(&[("data", text("abc"))]));
    }
}

#[test]
fn data_field_missing_is_invalid_payload() {
    for t in DATA_TYPES {
        refused_payload(t, &obj(&[("other", bstr(b"abc"))]));
    }
}

#[test]
fn data_field_given_twice_is_invalid_payload() {
    for t in DATA_TYPES {
        refused_payload(t, &obj(&[("data", bstr(b"a")), ("data", bstr(b"b"))]));
    }
}

#[test]
fn data_payload_that_is_not_a_map_is_invalid_payload() {
    for t in DATA_TYPES {
        refused_payload(t, &bstr(b"abc"));
    }
}

// §2.2 decoding notes: required fields.

fn open_file(options: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let open = obj(&[("path", text("/x")), ("options", obj(options))]);
    obj(&[("op", obj(&[("OpenFile", open)]))])
}

const OPEN_BOOLEANS: [&str; 6] = ["read", "write", "append", "create", "truncate", "create_new"];

#[test]
fn fs_open_options_missing_any_of_its_six_booleans_is_invalid_payload() {
    for missing in OPEN_BOOLEANS {
        let options: Vec<_> = OPEN_BOOLEANS
            .iter()
            .filter(|name| **name != missing)
            .map(|name| (*name, boolean(true)))
            .collect();
        let message = refused_payload(MessageType::FsRequest, &open_file(&options));
        assert!(message.contains(missing), "{missing}: {message}");
    }
}

#[test]
fn fs_open_options_with_all_six_booleans_and_nothing_else_is_accepted() {
    let options: Vec<_> = OPEN_BOOLEANS.iter().map(|name| (*name, boolean(false))).collect();
    accepted(MessageType::FsRequest, &open_file(&options));
}

#[test]
fn missing_required_field_is_invalid_payload() {
    let cases = [
        (MessageType::ExecRequest, obj(&[("args", vec![0x80])])),
        (MessageType::ExecStarted, obj(&[])),
        (MessageType::ExecExited, obj(&[])),
        (MessageType::ExecStdinError, obj(&[("errno", uint(32))])),
        (MessageType::Touched, obj(&[])),
        (MessageType::ClockSync, obj(&[])),
        (MessageType::Error, obj(&[("kind", text("invalid_payload"))])),
        (MessageType::FsResponse, obj(&[("error", text("x"))])),
        (MessageType::FsRequest, obj(&[])),
        (MessageType::TcpConnect, obj(&[("host", text("h"))])),
        (MessageType::TcpFailed, obj(&[])),
        (MessageType::RelayClientDisconnected, obj(&[("id_start", uint(1))])),
        (MessageType::BulkFinish, obj(&[("kind", uint(1)), ("flow", uint(1))])),
        (MessageType::WorkloadThaw, obj(&[("attempt_id", text("a"))])),
        (MessageType::Ready, obj(&[("boot_time_ns", uint(1)), ("init_time_ns", uint(2))])),
        (MessageType::InitResolved, obj(&[])),
    ];
    for (t, p) in cases {
        let message = refused_payload(t, &p);
        assert!(message.contains("missing field"), "{t}: {message}");
    }
}

#[test]
fn stat_without_follow_symlink_is_invalid_payload() {
    let stat = obj(&[("path", text("/"))]);
    refused_payload(MessageType::FsRequest, &obj(&[("op", obj(&[("Stat", stat)]))]));
}

// §2.2: enums.

fn core_error(kind: &str, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut entries = vec![("kind", text(kind)), ("message", text("m"))];
    entries.extend(extra.iter().cloned());
    obj(&entries)
}

#[test]
fn unknown_core_error_kind_is_invalid_payload() {
    refused_payload(MessageType::Error, &core_error("out_of_cheese", &[]));
}

#[test]
fn every_known_core_error_kind_decodes() {
    for kind in [
        CoreErrorKind::InitializationFailed,
        CoreErrorKind::MalformedMessage,
        CoreErrorKind::UnsupportedMessageType,
        CoreErrorKind::UnsupportedProtocolGeneration,
        CoreErrorKind::InvalidFlags,
        CoreErrorKind::InvalidPayload,
        CoreErrorKind::InvalidSession,
        CoreErrorKind::CapabilityUnavailable,
    ] {
        let Message::Error(error) = accepted(MessageType::Error, &core_error(kind.as_str(), &[]))
        else {
            panic!("not an error");
        };
        assert_eq!(error.kind, kind);
    }
}

#[test]
fn unknown_fs_entry_kind_is_invalid_payload() {
    let entry = obj(&[
        ("path", text("/s")),
        ("kind", text("socket")),
        ("size", uint(0)),
        ("mode", uint(0o140_755)),
        ("uid", uint(0)),
        ("gid", uint(0)),
    ]);
    let p = obj(&[("ok", boolean(true)), ("data", obj(&[("Stat", entry)]))]);
    refused_payload(MessageType::FsResponse, &p);
}

#[test]
fn unknown_security_profile_is_invalid_payload() {
    refused_payload(MessageType::Bootstrap, &obj(&[("security_profile", text("paranoid"))]));
}

#[test]
fn unknown_thaw_mode_is_invalid_payload() {
    let p = obj(&[("attempt_id", text("a")), ("mode", text("rewind"))]);
    refused_payload(MessageType::WorkloadThaw, &p);
}

#[test]
fn unknown_init_failure_reason_decodes_as_unknown() {
    let p = core_error("initialization_failed", &[("init_failure", text("disk_on_fire"))]);
    let Message::Error(error) = accepted(MessageType::Error, &p) else {
        panic!("not an error");
    };
    assert_eq!(error.init_failure, Some(InitFailureReason::Unknown));
}

#[test]
fn unknown_workload_failure_disposition_decodes_as_unknown() {
    let failure = obj(&[("attempt_id", text("a")), ("disposition", text("on_fire"))]);
    let p = core_error("capability_unavailable", &[("workload_failure", failure)]);
    assert_eq!(
        accepted(MessageType::Error, &p),
        Message::Error(CoreError {
            kind: CoreErrorKind::CapabilityUnavailable,
            message: "m".into(),
            offending_type: None,
            init_failure: None,
            workload_failure: Some(WorkloadFailure {
                attempt_id: "a".into(),
                disposition: WorkloadFailureDisposition::Unknown,
            }),
        })
    );
}

#[test]
fn unknown_fs_op_variant_is_invalid_payload() {
    let op = obj(&[("Teleport", obj(&[("path", text("/"))]))]);
    refused_payload(MessageType::FsRequest, &obj(&[("op", op)]));
}

#[test]
fn fs_op_as_an_indefinite_length_map_is_invalid_payload() {
    let op = indefinite_map(&[(text("List"), obj(&[("path", text("/"))]))]);
    refused_payload(MessageType::FsRequest, &obj(&[("op", op)]));
}

#[test]
fn fs_op_map_with_two_variants_is_invalid_payload() {
    let path = obj(&[("path", text("/"))]);
    let op = obj(&[("List", path.clone()), ("OpenDir", path)]);
    refused_payload(MessageType::FsRequest, &obj(&[("op", op)]));
}

#[test]
fn fs_op_variant_name_in_snake_case_is_invalid_payload() {
    let op = obj(&[("open_dir", obj(&[("path", text("/"))]))]);
    refused_payload(MessageType::FsRequest, &obj(&[("op", op)]));
}

// §2.2, §18.7: value shapes.

#[test]
fn incarnation_with_fifteen_items_is_invalid_payload() {
    let incarnation = [vec![0x8f], vec![0x01; 15]].concat();
    let p = obj(&[
        ("id_start", uint(1)),
        ("id_end_exclusive", uint(33_554_431)),
        ("incarnation", incarnation),
    ]);
    refused_payload(MessageType::RelayClientDisconnected, &p);
}

#[test]
fn integer_out_of_its_fields_range_is_invalid_payload() {
    refused_payload(MessageType::ExecResize, &obj(&[("rows", uint(70_000)), ("cols", uint(1))]));
    refused_payload(MessageType::ExecStarted, &obj(&[("pid", vec![0x20])]));
    refused_payload(MessageType::ExecSignal, &obj(&[("signal", uint(1 << 31))]));
}

#[test]
fn payload_that_is_not_well_formed_cbor_is_invalid_payload() {
    refused_payload(MessageType::Touched, &[0x1c]);
    refused_payload(MessageType::Touched, &[0xa1, 0x6c]);
}

#[test]
fn payload_nested_deeper_than_256_is_invalid_payload() {
    let deep = [vec![0x81; 256], vec![0x00]].concat();
    let message =
        refused_payload(MessageType::Touched, &obj(&[("activity_seq", uint(1)), ("x", deep)]));
    assert!(message.contains("nesting"), "{message}");
}

// §11.1, §18.20: raw bulk records (flags exactly 0x08).

/// A raw record body: kind, flow, reserved, offset, payload.
fn record_body(kind: u8, flow: u8, reserved: [u8; 2], offset: u64, payload: &[u8]) -> Vec<u8> {
    [vec![kind, flow], reserved.to_vec(), offset.to_be_bytes().to_vec(), payload.to_vec()].concat()
}

fn bulk_error(body: &[u8]) -> BulkRecordError {
    match malformed(6, 0x08, body) {
        DecodeError::Bulk(err) => err,
        other => panic!("not a bulk record error: {other:?}"),
    }
}

#[test]
fn bulk_record_with_an_empty_payload_is_malformed() {
    let body = record_body(1, 2, [0, 0], 0, b"");
    assert_eq!(bulk_error(&body), BulkRecordError::TooShort { len: 12 });
}

#[test]
fn bulk_record_shorter_than_its_header_is_malformed() {
    assert_eq!(bulk_error(&[1, 2, 0, 0, 0]), BulkRecordError::TooShort { len: 5 });
    assert_eq!(bulk_error(&[]), BulkRecordError::TooShort { len: 0 });
}

#[test]
fn bulk_record_payload_over_3_mib_is_malformed() {
    let body = record_body(1, 2, [0, 0], 0, &vec![7; MAX_BULK_RECORD_PAYLOAD_BYTES + 1]);
    assert_eq!(
        bulk_error(&body),
        BulkRecordError::PayloadTooLarge { len: MAX_BULK_RECORD_PAYLOAD_BYTES + 1 }
    );
}

#[test]
fn bulk_record_payload_of_exactly_3_mib_is_accepted() {
    let body = record_body(2, 1, [0, 0], 9, &vec![7; MAX_BULK_RECORD_PAYLOAD_BYTES]);
    let Ok(Decoded::Bulk(record)) = decode(6, 0x08, &body) else {
        panic!("3 MiB is allowed");
    };
    assert_eq!(
        (record.kind, record.flow, record.offset),
        (BulkKind::Tcp, BulkFlow::HostToGuest, 9)
    );
    assert_eq!(record.payload.len(), MAX_BULK_RECORD_PAYLOAD_BYTES);
}

#[test]
fn bulk_record_with_nonzero_reserved_bytes_is_malformed() {
    for reserved in [[0, 1], [1, 0], [0xff, 0xff]] {
        let body = record_body(1, 2, reserved, 0, b"x");
        assert_eq!(bulk_error(&body), BulkRecordError::Reserved(u16::from_be_bytes(reserved)));
    }
}

#[test]
fn bulk_record_with_an_unknown_kind_is_malformed() {
    for kind in [0, 3, 0xff] {
        assert_eq!(
            bulk_error(&record_body(kind, 2, [0, 0], 0, b"x")),
            BulkRecordError::BadKind(kind)
        );
    }
}

#[test]
fn bulk_record_with_an_unknown_flow_is_malformed() {
    for flow in [0, 3, 0xff] {
        assert_eq!(
            bulk_error(&record_body(1, flow, [0, 0], 0, b"x")),
            BulkRecordError::BadFlow(flow)
        );
    }
}

#[test]
fn bulk_record_whose_end_overflows_u64_is_malformed() {
    let body = record_body(1, 2, [0, 0], u64::MAX - 1, b"ab");
    assert_eq!(bulk_error(&body), BulkRecordError::OffsetOverflow { offset: u64::MAX - 1, len: 2 });
}

#[test]
fn bulk_record_ending_exactly_at_u64_max_is_accepted() {
    let body = record_body(1, 2, [0, 0], u64::MAX - 2, b"ab");
    assert!(matches!(decode(6, 0x08, &body), Ok(Decoded::Bulk(_))));
}

fn record(offset: u64, payload: Vec<u8>) -> BulkRecord {
    BulkRecord {
        id: 6,
        kind: BulkKind::Filesystem,
        flow: BulkFlow::GuestToHost,
        offset,
        payload: Bytes::from(payload),
    }
}

fn encode_error(record: &BulkRecord) -> BulkRecordError {
    let mut out = Vec::new();
    match record.encode(&mut out) {
        Err(EncodeError::BulkRecord(err)) => {
            assert!(out.is_empty(), "a refused record writes nothing");
            err
        }
        other => panic!("not a bulk record refusal: {other:?}"),
    }
}

#[test]
fn bulk_record_with_an_empty_payload_is_refused_by_the_encoder() {
    assert_eq!(
        encode_error(&record(0, Vec::new())),
        BulkRecordError::TooShort { len: BULK_RECORD_HEADER_BYTES }
    );
}

#[test]
fn bulk_record_payload_over_3_mib_is_refused_by_the_encoder() {
    let len = MAX_BULK_RECORD_PAYLOAD_BYTES + 1;
    assert_eq!(encode_error(&record(0, vec![0; len])), BulkRecordError::PayloadTooLarge { len });
}

#[test]
fn bulk_record_whose_end_overflows_u64_is_refused_by_the_encoder() {
    assert_eq!(
        encode_error(&record(u64::MAX, vec![1])),
        BulkRecordError::OffsetOverflow { offset: u64::MAX, len: 1 }
    );
}
