//! What the protocol's decoders must tolerate (PROTOCOL.md §2.1 and the §2.2 decoding notes):
//! keys in any order, unknown keys, tags anywhere, indefinite-length maps and strings, `p` as an
//! array of small integers, missing optional fields. Inputs are built by hand, byte by byte.

mod support;

use moat_protocol::payload::bootstrap::{GuestBootstrap, SecurityProfile};
use moat_protocol::payload::core::{CoreError, CoreErrorKind, Ready};
use moat_protocol::payload::exec::{Data, ExecLimits, ExecRequest, ExecStarted, ExecStdinError};
use moat_protocol::payload::fs::{
    FsEntryInfo, FsEntryKind, FsOp, FsRequest, FsResponse, FsResponseData,
};
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{WorkloadFreeze, WorkloadTransportCredit};
use moat_protocol::{Decoded, Message, MessageFrame, MessageType};

use support::{NULL, accepted, bstr, decode, head, indefinite_map, map, obj, text, uint};

/// Decodes a hand-built envelope body on id 1, flags 0, expecting `core.ping` with `v = 10`.
fn assert_ping(body: &[u8]) {
    assert_eq!(
        decode(1, 0, body).map_err(|e| e.to_string()),
        Ok(Decoded::Message(MessageFrame { id: 1, v: 10, message: Message::Ping }))
    );
}

/// A tag head: major type 6.
fn tag(number: u64) -> Vec<u8> {
    head(6, number)
}

fn entry(key: &str, value: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    (text(key), value)
}

// §2.1 the envelope.

#[test]
fn envelope_keys_in_any_order_are_accepted() {
    let v = entry("v", uint(10));
    let t = entry("t", text("core.ping"));
    let p = entry("p", bstr(&[0xa0]));
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let fields = [&v, &t, &p];
        let entries: Vec<_> = order.iter().map(|i| fields[*i].clone()).collect();
        assert_ping(&map(&entries));
    }
}

#[test]
fn unknown_envelope_keys_are_ignored() {
    assert_ping(&map(&[
        entry("x", obj(&[("nested", vec![0x82, 0x01, 0x02])])),
        entry("v", uint(10)),
        (uint(7), text("integer key")),
        entry("t", text("core.ping")),
        (bstr(b"p"), uint(1)),
        entry("p", bstr(&[0xa0])),
        entry("vv", NULL.to_be_bytes().to_vec()),
    ]));
}

#[test]
fn tags_on_the_envelope_and_each_of_its_fields_are_skipped() {
    let tagged = |n: u64, item: Vec<u8>| [tag(n), item].concat();
    let body = map(&[
        (tagged(1, text("v")), tagged(2, uint(10))),
        (text("t"), tagged(32, tagged(33, text("core.ping")))),
        (text("p"), tagged(24, bstr(&[0xa0]))),
    ]);
    assert_ping(&[tag(55_799), body].concat());
}

#[test]
fn tag_64_typed_array_around_the_payload_is_accepted() {
    let body =
        obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", [tag(64), bstr(&[0xa0])].concat())]);
    assert_ping(&body);
}

#[test]
fn indefinite_length_envelope_map_is_accepted() {
    assert_ping(&indefinite_map(&[
        entry("v", uint(10)),
        entry("t", text("core.ping")),
        entry("p", bstr(&[0xa0])),
    ]));
}

#[test]
fn indefinite_length_type_name_and_payload_strings_are_accepted() {
    // t = (_ "core", ".pi", "ng"), p = (_ h'', h'a0').
    let t = [vec![0x7f], text("core"), text(".pi"), text("ng"), vec![0xff]].concat();
    let p = [vec![0x5f], bstr(b""), bstr(&[0xa0]), vec![0xff]].concat();
    assert_ping(&obj(&[("v", uint(10)), ("t", t), ("p", p)]));
}

#[test]
fn payload_as_an_array_of_small_integers_is_accepted() {
    // p = [0xa0] as a definite array, and as an indefinite one with a tagged item.
    assert_ping(&obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", vec![0x81, 0x18, 0xa0])]));
    let indefinite = [vec![0x9f], tag(1), vec![0x18, 0xa0, 0xff]].concat();
    assert_ping(&obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", indefinite)]));
}

// §2.2 payloads.

#[test]
fn tags_inside_the_payload_are_skipped() {
    // Unassigned tag numbers: tags 2 and 3 (bignums) are interpreted, not skipped, by ciborium.
    let p = [tag(100), map(&[([tag(1000), text("pid")].concat(), [tag(1001), uint(42)].concat())])]
        .concat();
    assert_eq!(
        accepted(MessageType::ExecStarted, &p),
        Message::ExecStarted(ExecStarted { pid: 42 })
    );
}

#[test]
fn indefinite_length_payload_map_is_accepted() {
    let p = indefinite_map(&[entry("pid", uint(42))]);
    assert_eq!(
        accepted(MessageType::ExecStarted, &p),
        Message::ExecStarted(ExecStarted { pid: 42 })
    );
    let empty = indefinite_map(&[]);
    assert_eq!(accepted(MessageType::TcpConnected, &empty), Message::TcpConnected);
}

#[test]
fn indefinite_length_ready_without_exec_control_is_accepted() {
    let p = indefinite_map(&[
        entry("boot_time_ns", uint(1)),
        entry("init_time_ns", uint(2)),
        entry("ready_time_ns", uint(3)),
    ]);
    let ready = Ready { boot_time_ns: 1, init_time_ns: 2, ready_time_ns: 3, ..Ready::default() };
    assert_eq!(accepted(MessageType::Ready, &p), Message::Ready(ready));
}

#[test]
fn indefinite_length_text_value_in_the_payload_is_accepted() {
    let error = [vec![0x7f], text("connection "), text("refused"), vec![0xff]].concat();
    assert_eq!(
        accepted(MessageType::TcpFailed, &obj(&[("error", error)])),
        Message::TcpFailed(TcpFailed { error: "connection refused".into() })
    );
}

#[test]
fn indefinite_length_data_byte_string_is_accepted() {
    let data = [vec![0x5f], bstr(b"he"), bstr(b""), bstr(b"llo"), vec![0xff]].concat();
    assert_eq!(
        accepted(MessageType::FsData, &obj(&[("data", data)])),
        Message::FsData(Data::new(b"hello".to_vec()))
    );
}

#[test]
fn data_as_an_array_of_small_integers_is_accepted() {
    let data = vec![0x83, 0x01, 0x02, 0x18, 0xff];
    assert_eq!(
        accepted(MessageType::TcpData, &obj(&[("data", data)])),
        Message::TcpData(Data::new(vec![1, 2, 255]))
    );
}

#[test]
fn unknown_payload_keys_are_ignored() {
    let p = obj(&[
        ("future", obj(&[("a", vec![0x80])])),
        ("pid", uint(7)),
        ("zzz", NULL.to_be_bytes().to_vec()),
    ]);
    assert_eq!(
        accepted(MessageType::ExecStarted, &p),
        Message::ExecStarted(ExecStarted { pid: 7 })
    );
    let data = obj(&[("extra", uint(1)), ("data", bstr(b"x"))]);
    assert_eq!(
        accepted(MessageType::ExecStdout, &data),
        Message::ExecStdout(Data::new(b"x".to_vec()))
    );
}

#[test]
fn missing_option_fields_decode_as_none() {
    assert_eq!(
        accepted(MessageType::ExecStdinError, &obj(&[("message", text("m"))])),
        Message::ExecStdinError(ExecStdinError {
            errno: None,
            errno_name: None,
            message: "m".into()
        })
    );
    assert_eq!(
        accepted(MessageType::FsResponse, &obj(&[("ok", vec![0xf5])])),
        Message::FsResponse(FsResponse { ok: true, error: None, data: None })
    );
    assert_eq!(
        accepted(
            MessageType::Error,
            &obj(&[("kind", text("invalid_session")), ("message", text(""))])
        ),
        Message::Error(CoreError {
            kind: CoreErrorKind::InvalidSession,
            message: String::new(),
            offending_type: None,
            init_failure: None,
            workload_failure: None,
        })
    );
    assert_eq!(
        accepted(MessageType::TcpConnect, &obj(&[("host", text("h")), ("port", uint(1))])),
        Message::TcpConnect(TcpConnect { host: "h".into(), port: 1, bulk: None })
    );
    let read = obj(&[("Read", obj(&[("handle", uint(1)), ("offset", uint(0))]))]);
    assert_eq!(
        accepted(MessageType::FsRequest, &obj(&[("op", read)])),
        Message::FsRequest(FsRequest {
            op: FsOp::Read { handle: 1, offset: 0, len: None },
            bulk: None
        })
    );
}

#[test]
fn fs_entry_info_without_times_decodes_with_none() {
    let entry = obj(&[
        ("path", text("/p")),
        ("kind", text("other")),
        ("size", uint(0)),
        ("mode", uint(0)),
        ("uid", uint(0)),
        ("gid", uint(0)),
    ]);
    let p = obj(&[
        ("ok", vec![0xf5]),
        ("data", obj(&[("List", vec![0x81].into_iter().chain(entry).collect())])),
    ]);
    let info = FsEntryInfo {
        path: "/p".into(),
        kind: FsEntryKind::Other,
        size: 0,
        mode: 0,
        modified: None,
        uid: 0,
        gid: 0,
        atime: None,
        mtime: None,
    };
    assert_eq!(
        accepted(MessageType::FsResponse, &p),
        Message::FsResponse(FsResponse::ok(Some(FsResponseData::List(vec![info]))))
    );
}

#[test]
fn explicit_null_option_fields_decode_as_none() {
    let p = obj(&[("errno", vec![NULL]), ("errno_name", vec![NULL]), ("message", text("m"))]);
    assert_eq!(
        accepted(MessageType::ExecStdinError, &p),
        Message::ExecStdinError(ExecStdinError {
            errno: None,
            errno_name: None,
            message: "m".into()
        })
    );
}

#[test]
fn missing_defaulted_fields_take_the_reference_defaults() {
    assert_eq!(
        accepted(MessageType::ExecRequest, &obj(&[("cmd", text("ls"))])),
        Message::ExecRequest(ExecRequest {
            cmd: "ls".into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: false,
            rows: 24,
            cols: 80,
            rlimits: Vec::new(),
        })
    );
    let Message::Ready(ready) = accepted(
        MessageType::Ready,
        &obj(&[
            ("boot_time_ns", uint(1)),
            ("init_time_ns", uint(2)),
            ("ready_time_ns", uint(3)),
            ("exec_limits", obj(&[("input_limit", uint(7))])),
        ]),
    ) else {
        panic!("not ready");
    };
    assert_eq!(ready.exec_limits, Some(ExecLimits { input_limit: 7, ..ExecLimits::default() }));
    assert_eq!(
        accepted(MessageType::Bootstrap, &obj(&[])),
        Message::Bootstrap(Box::new(GuestBootstrap {
            security_profile: SecurityProfile::Default,
            ..GuestBootstrap::default()
        }))
    );
    let freeze = obj(&[("attempt_id", text("a")), ("host_input", credit())]);
    assert_eq!(
        accepted(MessageType::WorkloadFreeze, &freeze),
        Message::WorkloadFreeze(WorkloadFreeze {
            external_mount_tags: Vec::new(),
            attempt_id: "a".into(),
            host_input: WorkloadTransportCredit::default(),
        })
    );
}

fn credit() -> Vec<u8> {
    obj(&[
        ("control_bytes", uint(0)),
        ("control_frames", uint(0)),
        ("bulk_bytes", uint(0)),
        ("bulk_frames", uint(0)),
    ])
}

#[test]
fn payload_trailing_bytes_after_one_item_are_ignored() {
    // The reference reads one CBOR item from `p` and ignores the rest (unlike the envelope).
    assert_eq!(accepted(MessageType::Ping, &[0xa0, 0x00]), Message::Ping);
}
