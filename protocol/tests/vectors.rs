//! The reference vector file (`conformance/vectors/reference-0.7.13.txt`), checked two ways:
//!
//! - every record decodes and re-encodes byte for byte (the shared [`vectors::check`]);
//! - every record decodes to a value written out by hand below, and that hand-written value
//!   encodes to the record's bytes. The values were read off the vector bytes with an independent
//!   CBOR decoder (Python `cbor2`), not off our decoder, so a decoder and encoder that agree with
//!   each other but not with the reference still fail here.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use bytes::Bytes;
use moat_protocol::bulk::{BulkFlow, BulkKind, BulkRecord};
use moat_protocol::limits::RELAY_SLOT_STEP_IDS;
use moat_protocol::payload::bootstrap::{
    BlockRoot, GuestBootstrap, Ipv4Config, Network, SecurityProfile,
};
use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish, BulkOffer};
use moat_protocol::payload::core::{
    BulkTransportReady, ClockSync, CoreError, CoreErrorKind, ExecControl, FormatCapability,
    InitAck, InitFailureReason, InitResolved, Ready, RelayClientDisconnected, ResolvedUser,
    RootDiskGrow, RootDiskState, Touched,
};
use moat_protocol::payload::exec::{
    Consumed, Data, ExecExited, ExecFailed, ExecFailureKind, ExecLimits, ExecRequest, ExecResize,
    ExecRlimit, ExecSignal, ExecStarted, ExecStdinError,
};
use moat_protocol::payload::fs::{
    FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData,
    FsSetAttrs,
};
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::WorkloadTransportCredit;
use moat_protocol::records::{BindingRecord, BindingRole, LeaseEvent, LeaseRecord};
use moat_protocol::relay::{IdRange, Slot};
use moat_protocol::vectors::{self, VectorBody};
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};

const REFERENCE: &str = include_str!("../../conformance/vectors/reference-0.7.13.txt");

#[test]
fn every_reference_vector_round_trips() {
    let records = vectors::parse(REFERENCE).expect("vector file parses");
    let mut failures = Vec::new();
    for record in &records {
        if let Err(m) = vectors::check(record) {
            failures.push(m.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} records failed:\n{}",
        failures.len(),
        records.len(),
        failures.join("\n")
    );
}

#[test]
fn every_reference_vector_decodes_to_its_hand_written_value() {
    let records = vectors::parse(REFERENCE).expect("vector file parses");
    let table = expected_records();
    let mut table_names = HashSet::new();
    for (name, _) in &table {
        assert!(table_names.insert(*name), "the table lists {name:?} twice");
    }
    let mut record_names = HashSet::new();
    for record in &records {
        assert!(
            record_names.insert(record.name.as_str()),
            "two records are named {:?}",
            record.name
        );
        let expected = table
            .iter()
            .find(|(name, _)| *name == record.name)
            .map(|(_, expected)| expected)
            .unwrap_or_else(|| panic!("record {:?} has no expected value", record.name));
        check_record(&record.name, &record.body, expected);
    }
    // Every record was found in the table; equal counts make that a one-to-one match, so a new
    // record cannot slip by unchecked and a stale table entry cannot linger.
    assert_eq!(records.len(), table.len(), "records in the file vs expected values in the table");
}

/// What a record must decode to.
enum Expected {
    Frame(Decoded),
    Binding(BindingRecord),
    RangeStep(u32),
    Slot { index: u32, range: IdRange },
}

fn check_record(name: &str, body: &VectorBody, expected: &Expected) {
    match (body, expected) {
        (VectorBody::Frame { frame, payload, .. }, Expected::Frame(want)) => {
            let mut decoder = FrameDecoder::new();
            decoder.push(frame);
            let raw = decoder.next_frame().expect("frames").expect("a whole frame");
            assert_eq!(decoder.buffered(), 0, "{name}: bytes after the frame");
            let got = decode_frame(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}: decoded value");
            assert_eq!(&encode(want), frame, "{name}: the hand-written value encodes differently");
            if let (Some(p), Decoded::Message(m)) = (payload, want) {
                let mut ours = Vec::new();
                m.message.encode_payload(&mut ours).expect("payload encodes");
                assert_eq!(&ours, p, "{name}: payload bytes");
            }
        }
        (VectorBody::Binding(bytes), Expected::Binding(want)) => {
            assert_eq!(BindingRecord::parse(bytes), Ok(*want), "{name}");
            assert_eq!(&want.to_bytes()[..], &bytes[..], "{name}: re-encoded bytes");
        }
        (VectorBody::RangeStep(step), Expected::RangeStep(want)) => {
            assert_eq!(*step, u64::from(*want), "{name}");
            assert_eq!(RELAY_SLOT_STEP_IDS, *want, "{name}: our constant");
        }
        (VectorBody::Slot { index, range }, Expected::Slot { index: want_index, range: want }) => {
            assert_eq!((index, range), (want_index, want), "{name}");
            assert_eq!(Slot::new(*index).map(Slot::range), Some(*want), "{name}: our slot table");
        }
        _ => panic!("{name}: the record is not the kind the table expects"),
    }
}

fn encode(decoded: &Decoded) -> Vec<u8> {
    let mut out = Vec::new();
    match decoded {
        Decoded::Message(m) => m.encode(&mut out),
        Decoded::Bulk(record) => record.encode(&mut out),
        Decoded::Lease(record) => record.encode(&mut out),
        Decoded::LocalTransport(_) => panic!("the vector file has no MSBS frames"),
    }
    .expect("the expected value encodes");
    out
}

fn msg(id: u32, message: Message) -> Expected {
    Expected::Frame(Decoded::Message(MessageFrame { id, v: 10, message }))
}

fn slot(index: u32, start: u32, end_exclusive: u32) -> Expected {
    Expected::Slot { index, range: IdRange { start, end_exclusive } }
}

/// The generation-10 default exec policy, as agentd 0.7.13 writes it out.
fn reference_limits() -> ExecLimits {
    ExecLimits {
        max_executions: 128,
        input_limit: 65_536,
        output_limit: 1_048_576,
        stdin_chunk_size: 16_384,
        output_chunk_size: 16_384,
    }
}

fn data(bytes: &[u8]) -> Data {
    Data { data: bytes.to_vec() }
}

fn fs_request(op: FsOp) -> Message {
    Message::FsRequest(FsRequest { op, bulk: None })
}

fn fs_response(ok: bool, error: Option<&str>, data: Option<FsResponseData>) -> Message {
    Message::FsResponse(FsResponse { ok, error: error.map(str::to_owned), data })
}

fn no_attrs() -> FsSetAttrs {
    FsSetAttrs { mode: None, uid: None, gid: None, size: None, atime: None, mtime: None }
}

fn lease(event: LeaseEvent) -> Expected {
    Expected::Frame(Decoded::Lease(LeaseRecord {
        event,
        id_start: 1,
        id_end_exclusive: 33_554_431,
        incarnation: [0xab; 16],
    }))
}

fn binding(role: BindingRole) -> Expected {
    Expected::Binding(BindingRecord {
        role,
        format: 1,
        min_generation: 8,
        connection_id: [0x11; 16],
    })
}

fn empty_bootstrap() -> GuestBootstrap {
    GuestBootstrap {
        init_failure_ack: false,
        block_root: None,
        dir_mounts: Vec::new(),
        file_mounts: Vec::new(),
        disk_mounts: Vec::new(),
        tmpfs_mounts: Vec::new(),
        hostname: None,
        host_alias: None,
        network: None,
        rlimits: Vec::new(),
        user: None,
        default_cwd: None,
        default_env: Vec::new(),
        security_profile: SecurityProfile::Default,
        handoff_init: None,
        exec_limits: None,
    }
}

fn sample_bootstrap() -> GuestBootstrap {
    GuestBootstrap {
        init_failure_ack: true,
        block_root: Some(BlockRoot::DiskImage {
            device: "/dev/vda".into(),
            fstype: Some("ext4".into()),
        }),
        dir_mounts: Vec::new(),
        file_mounts: Vec::new(),
        disk_mounts: Vec::new(),
        tmpfs_mounts: Vec::new(),
        hostname: Some("box".into()),
        host_alias: None,
        network: Some(Network {
            interface: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            ipv4: Some(Ipv4Config {
                address: Ipv4Addr::new(172, 16, 0, 2),
                prefix_len: 30,
                gateway: Ipv4Addr::new(172, 16, 0, 1),
                dns: None,
            }),
            ipv6: None,
        }),
        rlimits: Vec::new(),
        user: Some("1000".into()),
        default_cwd: None,
        default_env: Vec::new(),
        security_profile: SecurityProfile::Default,
        handoff_init: None,
        exec_limits: Some(reference_limits()),
    }
}

fn agentd_ready() -> Ready {
    Ready {
        boot_time_ns: 1,
        init_time_ns: 2,
        ready_time_ns: 3,
        agent_version: "0.7.13".into(),
        bulk_transport: None,
        relay_lease: Some(FormatCapability { max_format: 1 }),
        local_transport: None,
        workload_transport_barrier_version: Some(2),
        exec_limits: Some(reference_limits()),
        exec_control: None,
    }
}

fn minimal_ready() -> Ready {
    Ready {
        boot_time_ns: 1,
        init_time_ns: 2,
        ready_time_ns: 3,
        agent_version: String::new(),
        bulk_transport: None,
        relay_lease: None,
        local_transport: None,
        workload_transport_barrier_version: None,
        exec_limits: None,
        exec_control: None,
    }
}

fn dual_port_ready() -> Ready {
    Ready {
        bulk_transport: Some(BulkTransportReady {
            profile: "dual-port-v1".into(),
            port: "agent-bulk".into(),
            connection_id: [0x11; 16],
        }),
        local_transport: Some(FormatCapability { max_format: 1 }),
        ..agentd_ready()
    }
}

fn exec_control_ready() -> Ready {
    Ready {
        exec_control: Some(ExecControl {
            version: 1,
            endpoint: "/r/control.sock".into(),
            connection: [0x07; 16],
        }),
        ..minimal_ready()
    }
}

fn echo_request() -> ExecRequest {
    ExecRequest {
        cmd: "/bin/echo".into(),
        args: vec!["hi".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: Some("/".into()),
        user: None,
        tty: false,
        rows: 24,
        cols: 80,
        rlimits: Vec::new(),
    }
}

fn tty_request() -> ExecRequest {
    ExecRequest {
        cmd: "sh".into(),
        args: Vec::new(),
        env: Vec::new(),
        cwd: None,
        user: Some("1000:1000".into()),
        tty: true,
        rows: 40,
        cols: 120,
        rlimits: vec![ExecRlimit { resource: "nofile".into(), soft: 1024, hard: 4096 }],
    }
}

fn hostname_stat() -> FsEntryInfo {
    FsEntryInfo {
        path: "/etc/hostname".into(),
        kind: FsEntryKind::File,
        size: 5,
        mode: 0o100_644,
        modified: Some(1_700_000_000),
        uid: 0,
        gid: 0,
        atime: Some(1_700_000_000),
        mtime: Some(1_700_000_000),
    }
}

/// Record name (as the vector parser names it) → the value its bytes hold.
fn expected_records() -> Vec<(&'static str, Expected)> {
    vec![
        ("RANGE_STEP", Expected::RangeStep(33_554_431)),
        ("slot 0: Some((1, 33554431))", slot(0, 1, 33_554_431)),
        ("slot 1: Some((33554432, 67108862))", slot(1, 33_554_432, 67_108_862)),
        ("slot 2: Some((67108863, 100663293))", slot(2, 67_108_863, 100_663_293)),
        ("slot 127: Some((4261412738, 4294967168))", slot(127, 4_261_412_738, 4_294_967_168)),
        ("ready (agentd, combined transport)", msg(0, Message::Ready(agentd_ready()))),
        ("ready (minimal/legacy fields only)", msg(0, Message::Ready(minimal_ready()))),
        ("ready (relay-augmented, dual-port)", msg(0, Message::Ready(dual_port_ready()))),
        ("bootstrap (default)", msg(0, Message::Bootstrap(Box::new(empty_bootstrap())))),
        (
            "init.resolved",
            msg(
                0,
                Message::InitResolved(InitResolved {
                    default_user: ResolvedUser { uid: 1000, gid: 1000 },
                }),
            ),
        ),
        ("init.ack ok", msg(0, Message::InitAck(InitAck { failure: false }))),
        ("init.ack failure", msg(0, Message::InitAck(InitAck { failure: true }))),
        ("shutdown", msg(0, Message::Shutdown)),
        ("ping", msg(1, Message::Ping)),
        ("pong", msg(1, Message::Pong)),
        ("touch", msg(1, Message::Touch)),
        ("touched", msg(1, Message::Touched(Touched { activity_seq: 7 }))),
        (
            "clock.sync",
            msg(1, Message::ClockSync(ClockSync { unix_time_nanos: 1_700_000_000_000_000_000 })),
        ),
        ("exec.request", msg(1, Message::ExecRequest(echo_request()))),
        ("exec.request tty+rlimit", msg(2, Message::ExecRequest(tty_request()))),
        ("exec.started", msg(1, Message::ExecStarted(ExecStarted { pid: 42 }))),
        ("exec.stdout", msg(1, Message::ExecStdout(data(b"hi\n")))),
        ("exec.stderr", msg(1, Message::ExecStderr(data(b"err")))),
        ("exec.stdin data", msg(1, Message::ExecStdin(data(b"abc")))),
        ("exec.stdin EOF", msg(1, Message::ExecStdin(data(b"")))),
        ("exec.exited", msg(1, Message::ExecExited(ExecExited { code: 0 }))),
        ("exec.exited -1", msg(1, Message::ExecExited(ExecExited { code: -1 }))),
        (
            "exec.failed",
            msg(
                1,
                Message::ExecFailed(ExecFailed {
                    kind: ExecFailureKind::NotFound,
                    errno: Some(2),
                    errno_name: Some("ENOENT".into()),
                    message: "no such file".into(),
                    stage: Some("execvp".into()),
                }),
            ),
        ),
        (
            "exec.stdin.error",
            msg(
                1,
                Message::ExecStdinError(ExecStdinError {
                    errno: Some(32),
                    errno_name: Some("EPIPE".into()),
                    message: "broken pipe".into(),
                }),
            ),
        ),
        ("exec.signal", msg(1, Message::ExecSignal(ExecSignal { signal: 9 }))),
        ("exec.resize", msg(1, Message::ExecResize(ExecResize { rows: 50, cols: 200 }))),
        (
            "exec.output.ack (after 3-byte chunk)",
            msg(1, Message::ExecOutputAck(Consumed { consumed: 259 })),
        ),
        ("exec.stdin.ack", msg(1, Message::ExecStdinAck(Consumed { consumed: 3 }))),
        (
            "fs.request stat",
            msg(3, fs_request(FsOp::Stat { path: "/etc/hostname".into(), follow_symlink: true })),
        ),
        (
            "fs.response stat",
            msg(3, fs_response(true, None, Some(FsResponseData::Stat(hostname_stat())))),
        ),
        (
            "fs.response error",
            msg(3, fs_response(false, Some("stat: No such file or directory (os error 2)"), None)),
        ),
        ("fs.response ok no data", msg(3, fs_response(true, None, None))),
        (
            "fs.request open",
            msg(
                4,
                fs_request(FsOp::OpenFile {
                    path: "/tmp/x".into(),
                    options: FsOpenOptions {
                        read: false,
                        write: true,
                        append: false,
                        create: true,
                        truncate: true,
                        create_new: false,
                        mode: None,
                        user: None,
                    },
                }),
            ),
        ),
        ("fs.response handle", msg(4, fs_response(true, None, Some(FsResponseData::Handle(1))))),
        (
            "fs.request write",
            msg(5, fs_request(FsOp::Write { handle: 1, offset: 0, len: Some(5) })),
        ),
        ("fs.data", msg(5, Message::FsData(data(b"hello")))),
        ("fs.data EOF", msg(5, Message::FsData(data(b"")))),
        (
            "fs.request read (bulk offer)",
            msg(
                6,
                Message::FsRequest(FsRequest {
                    op: FsOp::Read { handle: 1, offset: 0, len: None },
                    bulk: Some(BulkOffer {
                        format: 1,
                        max_record_payload: 3_145_728,
                        guest_to_host_credit_limit: 8_388_608,
                    }),
                }),
            ),
        ),
        ("fs.request list", msg(7, fs_request(FsOp::List { path: "/".into() }))),
        ("fs.request readdir", msg(7, fs_request(FsOp::ReadDir { handle: 2, limit: None }))),
        ("fs.request closehandle", msg(8, fs_request(FsOp::CloseHandle { handle: 1 }))),
        (
            "fs.request setstat",
            msg(
                8,
                fs_request(FsOp::SetStat {
                    path: "/a".into(),
                    follow_symlink: false,
                    attrs: FsSetAttrs { mode: Some(0o755), ..no_attrs() },
                }),
            ),
        ),
        (
            "fs.request mkdir",
            msg(8, fs_request(FsOp::Mkdir { path: "/a/b".into(), mode: None, user: None })),
        ),
        (
            "fs.response path",
            msg(8, fs_response(true, None, Some(FsResponseData::Path("/a".into())))),
        ),
        (
            "bulk.accepted (fs read)",
            msg(
                6,
                Message::BulkAccepted(BulkAccepted {
                    kind: 1,
                    flows: 2,
                    format: 1,
                    max_record_payload: 3_145_728,
                    host_to_guest_credit_limit: 0,
                    guest_to_host_credit_limit: 8_388_608,
                }),
            ),
        ),
        (
            "bulk.credit",
            msg(
                6,
                Message::BulkCredit(BulkCredit {
                    kind: 1,
                    flow: 2,
                    consumed_offset: 4_194_304,
                    credit_limit: 12_582_912,
                }),
            ),
        ),
        (
            "bulk.finish",
            msg(6, Message::BulkFinish(BulkFinish { kind: 1, flow: 2, final_offset: 5 })),
        ),
        (
            "bulk.cancel",
            msg(
                6,
                Message::BulkCancel(BulkCancel { kind: 2, reason: 1, message: "cancelled".into() }),
            ),
        ),
        (
            "raw bulk record fs g2h id=6 off=0 'hello'",
            Expected::Frame(Decoded::Bulk(BulkRecord {
                id: 6,
                kind: BulkKind::Filesystem,
                flow: BulkFlow::GuestToHost,
                offset: 0,
                payload: Bytes::from_static(b"hello"),
            })),
        ),
        (
            "tcp.connect",
            msg(
                9,
                Message::TcpConnect(TcpConnect {
                    host: "127.0.0.1".into(),
                    port: 8080,
                    bulk: None,
                }),
            ),
        ),
        ("tcp.connected", msg(9, Message::TcpConnected)),
        ("tcp.data", msg(9, Message::TcpData(data(b"GET")))),
        ("tcp.eof", msg(9, Message::TcpEof)),
        ("tcp.close", msg(9, Message::TcpClose)),
        ("tcp.closed", msg(9, Message::TcpClosed)),
        (
            "tcp.failed",
            msg(9, Message::TcpFailed(TcpFailed { error: "connection refused".into() })),
        ),
        (
            "core.error invalid payload",
            msg(
                1,
                Message::Error(CoreError {
                    kind: CoreErrorKind::InvalidPayload,
                    message: "bad".into(),
                    offending_type: Some("core.exec.request".into()),
                    init_failure: None,
                    workload_failure: None,
                }),
            ),
        ),
        (
            "core.error init failure",
            msg(
                0,
                Message::Error(CoreError {
                    kind: CoreErrorKind::InitializationFailed,
                    message: "init failed: x".into(),
                    offending_type: None,
                    init_failure: Some(InitFailureReason::UserNotFound),
                    workload_failure: None,
                }),
            ),
        ),
        (
            "relay.client.disconnected (legacy)",
            msg(
                0,
                Message::RelayClientDisconnected(RelayClientDisconnected {
                    id_start: 1,
                    id_end_exclusive: 33_554_431,
                    incarnation: None,
                }),
            ),
        ),
        (
            "relay.client.disconnected (leased)",
            msg(
                0,
                Message::RelayClientDisconnected(RelayClientDisconnected {
                    id_start: 1,
                    id_end_exclusive: 33_554_431,
                    incarnation: Some([0xab; 16]),
                }),
            ),
        ),
        (
            "workload.transport.credit",
            msg(
                u32::MAX,
                Message::WorkloadTransportCredit(WorkloadTransportCredit {
                    control_bytes: 8_388_708,
                    control_frames: 257,
                    bulk_bytes: 33_554_432,
                    bulk_frames: 256,
                }),
            ),
        ),
        (
            "root_disk.grow",
            msg(10, Message::RootDiskGrow(RootDiskGrow { size_bytes: 1_073_741_824 })),
        ),
        (
            "root_disk.state",
            msg(
                10,
                Message::RootDiskState(RootDiskState {
                    filesystem_bytes: 1_073_741_824,
                    device_bytes: 1_073_741_824,
                }),
            ),
        ),
        ("MSBL connected", lease(LeaseEvent::Connected)),
        ("MSBL disconnected-ack", lease(LeaseEvent::DisconnectedAck)),
        ("MSBB hello", binding(BindingRole::Hello)),
        ("MSBA ack", binding(BindingRole::Ack)),
        ("bootstrap (sample)", msg(0, Message::Bootstrap(Box::new(sample_bootstrap())))),
        // The trailing relay-augmented Ready: an indefinite-length map with `exec_control`.
        ("unnamed record 1", msg(0, Message::Ready(exec_control_ready()))),
    ]
}
