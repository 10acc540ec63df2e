//! End to end: the real moat-agentd binary as PID 1 in new pid + mount namespaces, driven over a
//! socketpair with protocol frames. Needs root (the build machines run as root).

mod support;

use std::time::Duration;

use moat_protocol::payload::bootstrap::{EnvVar, GuestBootstrap};
use moat_protocol::payload::core::{CoreErrorKind, WorkloadFailureDisposition};
use moat_protocol::payload::exec::{
    Data, ExecFailureKind, ExecLimits, ExecRequest, ExecResize, ExecSignal,
};
use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData};
use moat_protocol::payload::workload::{WorkloadFreeze, WorkloadThaw, WorkloadThawMode};
use moat_protocol::relay::WORKLOAD_CHANNEL_ID;
use moat_protocol::{Flags, Message, MessageFrame, UnknownMessage};
use support::{Agent, sh};

fn bootstrap() -> GuestBootstrap {
    GuestBootstrap {
        hostname: Some("moat-test".into()),
        default_env: vec![EnvVar { key: "MOAT_TEST_ENV".into(), value: "from-bootstrap".into() }],
        ..GuestBootstrap::default()
    }
}

#[test]
fn ready_announces_generation_10_the_default_exec_limits_and_the_agent_version() {
    let agent = Agent::start(bootstrap());
    assert_eq!(agent.ready.v, 10);
    match &agent.ready.message {
        Message::Ready(ready) => {
            assert_eq!(ready.agent_version, env!("CARGO_PKG_VERSION"));
            assert!(ready.ready_time_ns >= ready.boot_time_ns);
            assert_eq!(ready.exec_limits, Some(ExecLimits::default()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ready_echoes_the_bootstraps_exec_limits() {
    let limits = ExecLimits { max_executions: 5, output_limit: 1 << 16, ..ExecLimits::default() };
    let agent = Agent::start(GuestBootstrap { exec_limits: Some(limits), ..bootstrap() });
    match &agent.ready.message {
        Message::Ready(ready) => assert_eq!(ready.exec_limits, Some(limits)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_legacy_request_needs_no_output_acks() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    // v = 9: the legacy path. 4 MiB is four default windows; unacknowledged, it still ends.
    let request = Message::ExecRequest(sh("head -c 4194304 /dev/zero"));
    agent.send_raw(&MessageFrame { id, v: 9, message: request }.to_bytes().unwrap());
    let mut received = 0;
    loop {
        match agent.recv_on(id) {
            Message::ExecStarted(_) => {}
            Message::ExecStdout(Data { data }) => received += data.len(),
            Message::ExecExited(exited) => {
                assert_eq!((exited.code, received), (0, 4 << 20));
                return;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn echo_prints_and_exits_zero() {
    let mut agent = Agent::start(bootstrap());
    let mut request = ExecRequest::new("echo");
    request.args = vec!["hello".into()];
    assert_eq!(agent.run(request), (b"hello\n".to_vec(), Vec::new(), 0));
}

#[test]
fn exit_code_7_passes_through() {
    let mut agent = Agent::start(bootstrap());
    assert_eq!(agent.run(sh("exit 7")).2, 7);
}

#[test]
fn agent_is_pid_1_and_hostname_and_env_are_applied() {
    let mut agent = Agent::start(bootstrap());
    let out = agent.sh("cat /proc/1/comm; hostname; echo $MOAT_TEST_ENV; echo $$");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["moat-agentd", "moat-test", "from-bootstrap"]);
}

#[test]
fn signal_kill_reports_minus_one() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    agent.send(id, Message::ExecRequest(sh("sleep 100")));
    assert!(matches!(agent.recv_on(id), Message::ExecStarted(_)));
    agent.send(id, Message::ExecSignal(ExecSignal { signal: 9 }));
    assert_eq!(agent.collect(id).2, -1);
}

#[test]
fn stdin_round_trips_through_cat() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    agent.send(id, Message::ExecRequest(ExecRequest::new("cat")));
    agent.send(id, Message::ExecStdin(Data::new(b"round trip\n".to_vec())));
    agent.send(id, Message::ExecStdin(Data::new(Vec::new())));
    assert_eq!(agent.collect(id), (b"round trip\n".to_vec(), Vec::new(), 0));
}

#[test]
fn stderr_is_separate_from_stdout() {
    let mut agent = Agent::start(bootstrap());
    assert_eq!(agent.run(sh("echo out; echo err >&2")), (b"out\n".to_vec(), b"err\n".to_vec(), 0));
}

#[test]
fn pty_session_reports_a_tty_and_applies_a_resize() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    let mut request = sh("test -t 0 && echo is-a-tty; read line; stty size");
    request.tty = true;
    request.rows = 24;
    request.cols = 80;
    agent.send(id, Message::ExecRequest(request));
    agent.send(id, Message::ExecResize(ExecResize { rows: 50, cols: 132 }));
    agent.send(id, Message::ExecStdin(Data::new(b"go\n".to_vec())));
    let (out, err, code) = agent.collect(id);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}");
    assert!(err.is_empty(), "a PTY session has no separate stderr");
    assert!(out.contains("is-a-tty"), "{out}");
    assert!(out.contains("50 132"), "{out}");
}

#[test]
fn twenty_concurrent_execs_all_complete() {
    let mut agent = Agent::start(bootstrap());
    let ids: Vec<u32> = (0..20).map(|_| agent.id()).collect();
    for (n, id) in ids.iter().enumerate() {
        agent.send(*id, Message::ExecRequest(sh(&format!("sleep 0.2; echo {n}"))));
    }
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(agent.collect(*id), (format!("{n}\n").into_bytes(), Vec::new(), 0));
    }
}

#[test]
fn a_64_mib_output_stream_arrives_intact() {
    let mut agent = Agent::start(bootstrap());
    // 64 MiB of 16-byte lines "0123456789abcde\n".
    let (out, _, code) = agent.run(sh("yes 0123456789abcde | head -c 67108864"));
    assert_eq!(code, 0);
    assert_eq!(out.len(), 64 << 20);
    assert!(out.chunks(16).all(|line| line == b"0123456789abcde\n"), "output corrupted");
}

#[test]
fn not_found_command_fails_with_not_found() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    agent.send(id, Message::ExecRequest(ExecRequest::new("no-such-program-moat")));
    match agent.recv_on(id) {
        Message::ExecFailed(failed) => assert_eq!(failed.kind, ExecFailureKind::NotFound),
        other => panic!("{other:?}"),
    }
}

fn fs(agent: &mut Agent, op: FsOp) -> FsResponse {
    let id = agent.id();
    agent.send(id, Message::FsRequest(FsRequest { op, bulk: None }));
    match agent.recv_on(id) {
        Message::FsResponse(response) => response,
        other => panic!("{other:?}"),
    }
}

fn open(agent: &mut Agent, path: &str, write: bool) -> u64 {
    let options = FsOpenOptions {
        read: !write,
        write,
        create: write,
        truncate: write,
        ..FsOpenOptions::default()
    };
    match fs(agent, FsOp::OpenFile { path: path.into(), options }).data {
        Some(FsResponseData::Handle(handle)) => handle,
        other => panic!("{other:?}"),
    }
}

#[test]
fn fs_write_read_stat_list_rename_remove_round_trip_with_a_10_mib_file() {
    let mut agent = Agent::start(bootstrap());
    let content: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert!(fs(&mut agent, FsOp::Mkdir { path: "/work/data".into(), mode: None, user: None }).ok);

    let handle = open(&mut agent, "/work/data/file.bin", true);
    let id = agent.id();
    agent.send(
        id,
        Message::FsRequest(FsRequest {
            op: FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) },
            bulk: None,
        }),
    );
    for chunk in content.chunks(3 << 20) {
        agent.send(id, Message::FsData(Data::new(chunk.to_vec())));
    }
    agent.send(id, Message::FsData(Data::new(Vec::new())));
    assert!(matches!(agent.recv_on(id), Message::FsResponse(FsResponse { ok: true, .. })));
    assert!(fs(&mut agent, FsOp::CloseHandle { handle }).ok);

    match fs(&mut agent, FsOp::Stat { path: "/work/data/file.bin".into(), follow_symlink: true })
        .data
    {
        Some(FsResponseData::Stat(info)) => assert_eq!(info.size, content.len() as u64),
        other => panic!("{other:?}"),
    }
    match fs(&mut agent, FsOp::List { path: "/work/data".into() }).data {
        Some(FsResponseData::List(entries)) => {
            assert_eq!(
                entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
                vec!["/work/data/file.bin"]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        fs(
            &mut agent,
            FsOp::Rename { src: "/work/data/file.bin".into(), dst: "/work/data/moved.bin".into() }
        )
        .ok
    );

    let handle = open(&mut agent, "/work/data/moved.bin", false);
    let id = agent.id();
    agent.send(
        id,
        Message::FsRequest(FsRequest {
            op: FsOp::Read { handle, offset: 0, len: None },
            bulk: None,
        }),
    );
    let mut read = Vec::new();
    loop {
        match agent.recv_on(id) {
            Message::FsData(Data { data }) => {
                assert!(data.len() <= 3 << 20);
                read.extend_from_slice(&data);
            }
            Message::FsResponse(response) => {
                assert!(response.ok, "{response:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(read == content, "streamed read differs from what was written");
    assert!(fs(&mut agent, FsOp::CloseHandle { handle }).ok);
    assert!(fs(&mut agent, FsOp::Remove { path: "/work/data/moved.bin".into() }).ok);
    let missing =
        fs(&mut agent, FsOp::Stat { path: "/work/data/moved.bin".into(), follow_symlink: true });
    assert_eq!(missing.error.as_deref(), Some("stat: No such file or directory (os error 2)"));
}

#[test]
fn a_bogus_message_type_gets_core_error_and_the_next_ping_answers() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    agent.send(
        id,
        Message::Unknown(UnknownMessage {
            t: "core.teleport".into(),
            flags: Flags::NONE,
            payload: vec![0xa0],
        }),
    );
    match agent.recv_on(id) {
        Message::Error(e) => assert_eq!(e.kind, CoreErrorKind::UnsupportedMessageType),
        other => panic!("{other:?}"),
    }
    // Wrong flags and an undecodable body too.
    let id = agent.id();
    let mut ping = moat_protocol::MessageFrame::new(id, Message::Ping).to_bytes().unwrap();
    ping[8] = 0x01;
    agent.send_raw(&ping);
    match agent.recv_on(id) {
        Message::Error(e) => assert_eq!(e.kind, CoreErrorKind::InvalidFlags),
        other => panic!("{other:?}"),
    }
    let id = agent.id();
    let mut garbage = vec![0, 0, 0, 9];
    garbage.extend_from_slice(&id.to_be_bytes());
    garbage.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
    agent.send_raw(&garbage);
    match agent.recv_on(id) {
        Message::Error(e) => assert_eq!(e.kind, CoreErrorKind::MalformedMessage),
        other => panic!("{other:?}"),
    }
    let id = agent.id();
    agent.send(id, Message::Ping);
    assert_eq!(agent.recv_on(id), Message::Pong);
}

#[test]
fn an_orphaned_grandchild_is_reaped() {
    let mut agent = Agent::start(bootstrap());
    // The background sleep outlives its shell and is reparented to PID 1 (the agent).
    agent.sh("sleep 0.3 > /dev/null 2>&1 &");
    std::thread::sleep(Duration::from_millis(800));
    let states = agent.sh("for f in /proc/[0-9]*/stat; do cut -d' ' -f3 $f 2>/dev/null; done");
    assert!(!states.lines().any(|s| s == "Z"), "zombie left behind: {states}");
}

#[test]
fn writes_to_etc_and_usr_stay_in_the_sandbox() {
    let mut agent = Agent::start(bootstrap());
    let marker = format!("moat-agentd-test-{}", std::process::id());
    agent.sh(&format!("echo x > /etc/{marker} && echo y > /usr/{marker} && cat /etc/{marker}"));
    assert!(
        !std::path::Path::new(&format!("/etc/{marker}")).exists(),
        "a sandbox write reached the host's /etc"
    );
    assert!(
        !std::path::Path::new(&format!("/usr/{marker}")).exists(),
        "a sandbox write reached the host's /usr"
    );
}

#[test]
fn shutdown_ends_pid_1() {
    let mut agent = Agent::start(bootstrap());
    let id = agent.id();
    agent.send(id, Message::ExecRequest(sh("sleep 100")));
    assert!(matches!(agent.recv_on(id), Message::ExecStarted(_)));
    assert_eq!(agent.shutdown(), 0);
}

#[test]
fn a_boot_failure_is_reported_as_a_structured_init_failure() {
    let mut agent = Agent::spawn(&["--root", "/"]);
    let bootstrap = GuestBootstrap { user: Some("no-such-user-moat".into()), ..bootstrap() };
    agent.send(0, Message::Bootstrap(Box::new(bootstrap)));
    match agent.recv_any() {
        (0, Message::Error(e)) => {
            assert_eq!(e.kind, CoreErrorKind::InitializationFailed);
            assert_eq!(
                e.init_failure,
                Some(moat_protocol::payload::core::InitFailureReason::UserNotFound)
            );
        }
        other => panic!("{other:?}"),
    }
    agent.send(0, Message::InitAck(moat_protocol::payload::core::InitAck { failure: true }));
    assert_ne!(agent.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn an_oversized_frame_is_fatal_and_logged() {
    let mut agent = Agent::start(bootstrap());
    agent.send_raw(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0]);
    assert_ne!(agent.wait_exit(Duration::from_secs(20)), 0);
    assert!(agent.log_tail().contains("frame too large"), "{}", agent.log_tail());
}

/// Size of `path` through the agent's filesystem service (which a freeze does not stop).
fn size_of(agent: &mut Agent, path: &str) -> u64 {
    match fs(agent, FsOp::Stat { path: path.into(), follow_symlink: true }).data {
        Some(FsResponseData::Stat(entry)) => entry.size,
        other => panic!("{other:?}"),
    }
}

fn workload(agent: &mut Agent, message: Message) -> Message {
    agent.send(WORKLOAD_CHANNEL_ID, message);
    agent.recv_on(WORKLOAD_CHANNEL_ID)
}

fn freeze(attempt: &str) -> Message {
    Message::WorkloadFreeze(WorkloadFreeze {
        external_mount_tags: vec![],
        attempt_id: attempt.into(),
        host_input: Default::default(),
    })
}

fn thaw(attempt: &str) -> Message {
    Message::WorkloadThaw(WorkloadThaw {
        attempt_id: attempt.into(),
        mode: WorkloadThawMode::Continue,
    })
}

fn workload_error(reply: Message) -> (CoreErrorKind, WorkloadFailureDisposition) {
    match reply {
        Message::Error(e) => (e.kind, e.workload_failure.expect("workload_failure").disposition),
        other => panic!("expected core.error, got {other:?}"),
    }
}

#[test]
fn freeze_stops_every_process_and_thaw_resumes_them() {
    let mut agent = Agent::start(bootstrap());
    let ticker = agent.id();
    agent.send(
        ticker,
        Message::ExecRequest(sh("while :; do printf x >> /tmp/ticks; sleep 0.01; done")),
    );
    assert!(matches!(agent.recv_on(ticker), Message::ExecStarted(_)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(size_of(&mut agent, "/tmp/ticks") > 0, "the ticker runs");

    match workload(&mut agent, freeze("a")) {
        Message::WorkloadFrozen(frozen) => {
            assert_eq!(frozen.attempt_id, "a");
            assert!(frozen.external_mounts_synced);
        }
        other => panic!("{other:?}"),
    }
    let frozen_at = size_of(&mut agent, "/tmp/ticks");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size_of(&mut agent, "/tmp/ticks"), frozen_at, "the ticker ran while frozen");

    // The agent keeps serving: a new exec is refused, a second freeze is an error, ping answers.
    let refused = agent.id();
    agent.send(refused, Message::ExecRequest(sh("true")));
    match agent.recv_on(refused) {
        Message::ExecFailed(failed) => {
            assert_eq!(failed.kind, ExecFailureKind::Other);
            assert_eq!(failed.stage.as_deref(), Some("workload_latch"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        workload_error(workload(&mut agent, freeze("b"))),
        (CoreErrorKind::InvalidSession, WorkloadFailureDisposition::RecoveryRequired)
    );
    let ping = agent.id();
    agent.send(ping, Message::Ping);
    assert_eq!(agent.recv_on(ping), Message::Pong);

    match workload(&mut agent, thaw("a")) {
        Message::WorkloadThawed(thawed) => assert_eq!(thawed.attempt_id, "a"),
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(size_of(&mut agent, "/tmp/ticks") > frozen_at, "the ticker did not resume");
    assert_eq!(
        workload_error(workload(&mut agent, thaw("a"))),
        (CoreErrorKind::InvalidSession, WorkloadFailureDisposition::Unavailable)
    );
    assert_eq!(agent.run(ExecRequest::new("true")).2, 0, "execs run again after the thaw");
}

#[test]
fn a_bulk_write_then_a_bulk_read_carry_10_mib_both_ways() {
    use moat_protocol::payload::bulk::{BulkCredit, BulkFinish, BulkOffer};
    use moat_protocol::{BulkFlow, BulkKind, BulkRecord, Decoded, decode_frame};
    let mut agent = Agent::start(bootstrap());
    let content: Vec<u8> = (0..10u32 << 20).map(|i| (i % 253) as u8).collect();
    let handle = open(&mut agent, "/tmp/bulk.bin", true);
    let id = agent.id();
    let offer = BulkOffer { format: 1, max_record_payload: 3 << 20, guest_to_host_credit_limit: 0 };
    let op = FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) };
    agent.send(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) }));
    let mut limit = match agent.recv_on(id) {
        Message::BulkAccepted(accepted) => accepted.host_to_guest_credit_limit as usize,
        other => panic!("{other:?}"),
    };
    let mut sent = 0;
    while sent < content.len() {
        if sent == limit {
            match agent.recv_on(id) {
                Message::BulkCredit(credit) => limit = credit.credit_limit as usize,
                other => panic!("{other:?}"),
            }
            continue;
        }
        let end = (sent + (1 << 20)).min(limit).min(content.len());
        let record = BulkRecord {
            id,
            kind: BulkKind::Filesystem,
            flow: BulkFlow::HostToGuest,
            offset: sent as u64,
            payload: bytes::Bytes::copy_from_slice(&content[sent..end]),
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes).unwrap();
        agent.send_raw(&bytes);
        sent = end;
    }
    let finish = BulkFinish { kind: 1, flow: 1, final_offset: sent as u64 };
    agent.send(id, Message::BulkFinish(finish));
    loop {
        match agent.recv_on(id) {
            Message::BulkCredit(_) => {}
            Message::FsResponse(response) => {
                assert!(response.ok, "{response:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(fs(&mut agent, FsOp::CloseHandle { handle }).ok);

    let handle = open(&mut agent, "/tmp/bulk.bin", false);
    let id = agent.id();
    let offer =
        BulkOffer { format: 1, max_record_payload: 1 << 20, guest_to_host_credit_limit: 4 << 20 };
    let op = FsOp::Read { handle, offset: 0, len: None };
    agent.send(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) }));
    assert!(matches!(agent.recv_on(id), Message::BulkAccepted(_)));
    let mut read = Vec::new();
    loop {
        let raw = agent.recv_raw();
        assert_eq!(raw.id, id);
        match decode_frame(&raw).unwrap() {
            Decoded::Bulk(record) => {
                assert_eq!(record.offset, read.len() as u64);
                read.extend_from_slice(&record.payload);
                // Grant one more window each time half of it is used.
                if read.len() % (2 << 20) == 0 {
                    let credit = BulkCredit {
                        kind: 1,
                        flow: 2,
                        consumed_offset: read.len() as u64,
                        credit_limit: read.len() as u64 + (4 << 20),
                    };
                    agent.send(id, Message::BulkCredit(credit));
                }
            }
            Decoded::Message(frame) => {
                match frame.message {
                    Message::BulkFinish(finish) => assert_eq!(finish.final_offset, 10 << 20),
                    other => panic!("{other:?}"),
                }
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(agent.recv_on(id), Message::FsResponse(FsResponse { ok: true, .. })));
    assert!(read == content, "the bytes came back intact");
}
