//! End-to-end tests of the relay over real unix sockets, with a fake guest agent on a socketpair.
//! Hermetic: no root, no VM.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use moat_protocol::exec_log::{ExecLogRecord, LogSource};
use moat_protocol::flags::Flags;
use moat_protocol::limits::{EXEC_LOG_ROTATE_BYTES, RELAY_SLOTS};
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::payload::core::RelayClientDisconnected;
use moat_protocol::payload::exec::{Data, ExecSignal};
use moat_protocol::relay::Slot;
use moat_relay::StopReason;
use support::{Client, Harness, PATIENCE};
use tokio::io::AsyncReadExt;

fn stdout_of(frames: &[MessageFrame]) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|f| match &f.message {
            Message::ExecStdout(data) => Some(data.data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn log_records(path: &std::path::Path) -> Vec<ExecLogRecord> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| ExecLogRecord::from_line(line).unwrap())
        .collect()
}

/// Waits until the live `exec.log` holds a record with text `d` (the writer flushes whenever its
/// queue runs empty).
async fn wait_for_line(path: &std::path::Path, d: &str) {
    for _ in 0..500 {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|line| ExecLogRecord::from_line(line).is_ok_and(|r| r.d == d)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("exec.log never got {d:?}");
}

fn disconnected(client: &Client) -> MessageFrame {
    MessageFrame::new(
        0,
        Message::RelayClientDisconnected(RelayClientDisconnected {
            id_start: client.range.start,
            id_end_exclusive: client.range.end_exclusive,
            incarnation: None,
        }),
    )
}

#[tokio::test]
async fn clients_get_the_prologue_and_the_ready_frame_unchanged() {
    let relay = Harness::start("greeting").await;
    let a = relay.connect().await;
    let b = relay.connect().await;
    assert_eq!(a.range, Slot::new(0).unwrap().range());
    assert_eq!(b.range, Slot::new(1).unwrap().range());
    assert_eq!(a.ready.to_bytes().unwrap(), support::ready_frame().to_bytes().unwrap());
    assert_eq!(b.ready, a.ready);
    relay.stop().await;
}

#[tokio::test]
async fn two_clients_running_execs_at_once_see_only_their_own_frames() {
    let relay = Harness::start("two-execs").await;
    let mut a = relay.connect().await;
    let mut b = relay.connect().await;
    let exec_a = a.exec("echo", &["from", "a"], false).await;
    let exec_b = b.exec("echo", &["from", "b"], false).await;
    let frames_a = a.until_exit(exec_a).await;
    let frames_b = b.until_exit(exec_b).await;
    assert!(frames_a.iter().all(|f| f.id == exec_a), "a saw {frames_a:?}");
    assert!(frames_b.iter().all(|f| f.id == exec_b), "b saw {frames_b:?}");
    assert_eq!(stdout_of(&frames_a), b"from a\n");
    assert_eq!(stdout_of(&frames_b), b"from b\n");
    // Nothing else is waiting for either client.
    assert!(a.ping().await.is_empty());
    assert!(b.ping().await.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn client_sending_an_id_outside_its_range_is_dropped_while_the_other_keeps_working() {
    let relay = Harness::start("out-of-range").await;
    let mut bad = relay.connect().await;
    let mut good = relay.connect().await;
    let foreign = good.range.start + 7;
    bad.send(&MessageFrame::new(foreign, Message::Ping)).await;
    bad.expect_closed().await;
    assert!(good.ping().await.is_empty());
    let exec = good.exec("echo", &["still", "here"], false).await;
    assert_eq!(stdout_of(&good.until_exit(exec).await), b"still here\n");
    // The foreign-id ping never reached the guest; the bad client's departure did.
    let expected = disconnected(&bad);
    relay.guest.received.wait_until("the disconnect notice", |f| f.contains(&expected)).await;
    assert!(!relay.guest.received.snapshot().iter().any(|f| f.id == foreign));
    let (stats, ..) = relay.stop().await;
    assert_eq!(stats.router.clients_closed_for_violation, 1);
}

#[tokio::test]
async fn client_sending_bad_flags_or_a_control_type_is_dropped() {
    let relay = Harness::start("bad-frames").await;
    let mut flags = relay.connect().await;
    let mut frame = support::raw(&MessageFrame::new(flags.range.start, Message::Ping));
    frame.flags = Flags::from_bits(0x03);
    flags.send_raw(&frame.to_bytes().unwrap()).await;
    flags.expect_closed().await;

    let mut msbs = relay.connect().await;
    let local = moat_protocol::RawFrame {
        id: 0,
        flags: Flags::NONE,
        body: bytes::Bytes::from_static(b"MSBS\x01\x01"),
    };
    msbs.send_raw(&local.to_bytes().unwrap()).await;
    msbs.expect_closed().await;

    let mut control = relay.connect().await;
    let unknown = moat_protocol::UnknownMessage {
        t: "control.exec.signal".into(),
        flags: Flags::NONE,
        payload: vec![0xa0],
    };
    control.send(&MessageFrame::new(control.range.start, Message::Unknown(unknown))).await;
    control.expect_closed().await;

    let mut oversized = relay.connect().await;
    oversized.send_raw(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0]).await;
    oversized.expect_closed().await;

    let mut good = relay.connect().await;
    assert!(good.ping().await.is_empty());
    let (stats, ..) = relay.stop().await;
    assert_eq!(stats.router.clients_closed_for_violation, 4);
}

#[tokio::test]
async fn client_disconnecting_mid_exec_kills_it_and_notifies_the_guest() {
    let relay = Harness::start("mid-exec").await;
    let mut client = relay.connect().await;
    let exec = client.exec("sleep", &[], false).await;
    let started = client.recv().await.unwrap();
    assert!(matches!(started.message, Message::ExecStarted(_)));
    let notice = disconnected(&client);
    drop(client);
    let kill = MessageFrame::new(exec, Message::ExecSignal(ExecSignal { signal: 9 }));
    relay.guest.received.wait_until("the disconnect notice", |f| f.contains(&notice)).await;
    let received = relay.guest.received.snapshot();
    let kill_at = received.iter().position(|f| *f == kill).expect("signal 9 on the exec");
    let notice_at = received.iter().position(|f| *f == notice).unwrap();
    assert!(kill_at < notice_at, "the kill comes before the notice: {received:#?}");
    // The slot is free again for the next client.
    relay.connect_to(Slot::new(0).unwrap().range()).await;
    relay.stop().await;
}

#[tokio::test]
async fn finished_exec_gets_no_signal_when_its_client_leaves() {
    let relay = Harness::start("finished").await;
    let mut client = relay.connect().await;
    let exec = client.exec("echo", &["done"], false).await;
    client.until_exit(exec).await;
    let notice = disconnected(&client);
    drop(client);
    relay.guest.received.wait_until("the disconnect notice", |f| f.contains(&notice)).await;
    let signals = relay
        .guest
        .received
        .snapshot()
        .into_iter()
        .filter(|f| matches!(f.message, Message::ExecSignal(_)))
        .count();
    assert_eq!(signals, 0);
    relay.stop().await;
}

#[tokio::test]
async fn slow_client_does_not_stall_the_other_while_the_guest_floods_it() {
    let relay = Harness::start("slow").await;
    let mut slow = relay.connect().await;
    let mut fast = relay.connect().await;
    // 2048 chunks of 16 KiB: 32 MiB, twice the slow client's queue cap. The slow client never
    // reads again.
    let flood = slow.exec("flood", &["2048", "16384"], false).await;
    let notice = disconnected(&slow);
    let mut pings = 0;
    loop {
        let pong = tokio::time::timeout(Duration::from_secs(2), fast.ping()).await;
        assert!(pong.expect("the fast client was stalled by the slow one").is_empty());
        pings += 1;
        if relay.guest.received.snapshot().contains(&notice) {
            break;
        }
        assert!(pings < 1000, "the slow client was never disconnected");
    }
    // The flood was still running, so its exec was killed before the notice.
    let kill = MessageFrame::new(flood, Message::ExecSignal(ExecSignal { signal: 9 }));
    assert!(relay.guest.received.snapshot().contains(&kill));
    assert!(fast.ping().await.is_empty());
    // The slow client's connection is closed once it finally reads.
    let closed = async {
        let mut slow = slow;
        slow.expect_closed().await;
    };
    tokio::time::timeout(PATIENCE, closed).await.unwrap();
    let (stats, ..) = relay.stop().await;
    assert_eq!(stats.router.slow_clients_closed, 1);
}

#[tokio::test]
async fn slow_but_reading_client_gets_every_byte_of_a_flood() {
    let relay = Harness::start("slow-reader").await;
    let mut slow = relay.connect().await;
    // 48 MiB, three times the client's queue cap, read with a pause every 64 frames (1 MiB): the
    // guest outruns the client, which keeps reading, so the relay waits instead of cutting it off.
    let flood = slow.exec("flood", &["3072", "16384"], false).await;
    let mut bytes = 0usize;
    let mut frames = 0usize;
    loop {
        let frame = tokio::time::timeout(PATIENCE, slow.recv()).await.unwrap();
        let frame = frame.expect("the relay dropped a client that was still reading");
        frames += 1;
        if frames % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match frame.message {
            Message::ExecStdout(data) if frame.id == flood => bytes += data.data.len(),
            Message::ExecExited(_) if frame.id == flood => break,
            _ => {}
        }
    }
    assert_eq!(bytes, 3072 * 16384);
    let (stats, ..) = relay.stop().await;
    assert_eq!(stats.router.slow_clients_closed, 0);
}

#[tokio::test]
async fn exec_log_records_output_with_session_numbers_and_markers() {
    let relay = Harness::start("exec-log").await;
    let mut a = relay.connect().await;
    let mut b = relay.connect().await;
    let pipe = a.exec("echo", &["pipe"], false).await;
    a.until_exit(pipe).await;
    let tty = b.exec("echo", &["tty"], true).await;
    b.until_exit(tty).await;
    // Output of an exec whose client already left is still logged (the fake guest reports the
    // kill on stdout).
    let orphan = b.exec("sleep", &[], false).await;
    b.recv().await.unwrap();
    drop(b);
    relay
        .guest
        .received
        .wait_until("the kill", |f| {
            f.iter().any(|f| f.id == orphan && matches!(f.message, Message::ExecSignal(_)))
        })
        .await;
    let live = relay.log_dir.join("exec.log");
    wait_for_line(&live, "signal 9\n").await;
    let (stats, tmp, _) = relay.stop().await;
    assert_eq!(stats.stop, StopReason::Requested);
    let records = log_records(&tmp.0.join("logs").join("exec.log"));
    let summary: Vec<_> = records.iter().map(|r| (r.s, r.d.as_str(), r.id)).collect();
    assert_eq!(
        summary,
        [
            (LogSource::System, "--- sandbox started ---\n", None),
            (LogSource::Stdout, "pipe\n", Some(1)),
            (LogSource::Stderr, "err\n", Some(1)),
            (LogSource::Output, "tty\n", Some(2)),
            (LogSource::Stdout, "signal 9\n", Some(3)),
            (LogSource::System, "--- sandbox stopped ---\n", None),
        ]
    );
    assert!(records.iter().all(|r| r.t.ends_with('Z') && r.t.len() == 24));
    assert_eq!(stats.router.exec_sessions_opened, 3);
}

#[tokio::test]
async fn exec_log_rotates_past_10_mib() {
    let relay = Harness::start("rotate").await;
    let mut client = relay.connect().await;
    // 700 chunks of 16 KiB: about 11 MiB of output, a little more as JSON.
    let exec = client.exec("flood", &["700", "16384"], false).await;
    let frames = client.until_exit(exec).await;
    assert_eq!(stdout_of(&frames).len(), 700 * 16384);
    let (stats, tmp, _) = relay.stop().await;
    assert_eq!(stats.exec_log.lines_dropped, 0);
    assert_eq!(stats.exec_log.rotations, 1);
    let logs = tmp.0.join("logs");
    let live = log_records(&logs.join("exec.log"));
    let rotated = log_records(&logs.join("exec.log.1"));
    assert!(fs::metadata(logs.join("exec.log.1")).unwrap().len() <= EXEC_LOG_ROTATE_BYTES);
    assert!(!logs.join("exec.log.2").exists());
    assert_eq!(rotated[0].d, "--- sandbox started ---\n");
    let outputs = rotated.iter().chain(&live).filter(|r| r.s == LogSource::Stdout).count();
    assert_eq!(outputs, 700);
    assert_eq!(live.last().unwrap().d, "--- sandbox stopped ---\n");
}

#[tokio::test]
async fn socket_is_private_and_removed_on_stop() {
    let relay = Harness::start("mode").await;
    let metadata = fs::symlink_metadata(&relay.socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let socket = relay.socket.clone();
    relay.stop().await;
    assert!(!socket.exists());
}

#[tokio::test]
async fn the_129th_client_is_closed_at_once() {
    let relay = Harness::start("full").await;
    let mut clients = Vec::new();
    for _ in 0..RELAY_SLOTS {
        clients.push(relay.connect().await);
    }
    let mut extra = tokio::net::UnixStream::connect(&relay.socket).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, extra.read(&mut byte)).await.unwrap();
    assert_eq!(read.unwrap(), 0, "the 129th connection gets no prologue");
    // Everyone else still works; a freed slot is reused.
    assert!(clients[127].ping().await.is_empty());
    drop(clients.remove(3));
    let expected = Slot::new(3).unwrap().range();
    let notice = MessageFrame::new(
        0,
        Message::RelayClientDisconnected(RelayClientDisconnected {
            id_start: expected.start,
            id_end_exclusive: expected.end_exclusive,
            incarnation: None,
        }),
    );
    relay.guest.received.wait_until("the notice", |f| f.contains(&notice)).await;
    let mut again = None;
    for _ in 0..100 {
        // The slot is released right after the notice is queued; give it a moment.
        let mut stream = tokio::net::UnixStream::connect(&relay.socket).await.unwrap();
        let mut prologue = [0u8; 8];
        if stream.read_exact(&mut prologue).await.is_ok() {
            again = Some(prologue);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let prologue = again.expect("the freed slot was never reused");
    assert_eq!(prologue, moat_protocol::relay::Prologue { range: expected }.to_bytes());
    let (stats, ..) = relay.stop().await;
    assert!(stats.router.clients_refused >= 1);
}

#[tokio::test]
async fn host_frames_reach_the_guest_before_the_relay_stops() {
    let relay = Harness::start("host").await;
    let shutdown = MessageFrame::new(0, Message::Shutdown);
    relay.handle.send_to_guest(&shutdown).await.unwrap();
    let in_slot = MessageFrame::new(5, Message::Ping);
    assert!(matches!(
        relay.handle.send_to_guest(&in_slot).await,
        Err(moat_relay::HostSendError::ClientId { id: 5 })
    ));
    let handle = relay.handle.clone();
    let (stats, _, received) = relay.stop().await;
    assert_eq!(stats.stop, StopReason::Requested);
    received.wait_until("core.shutdown", |f| f.contains(&shutdown)).await;
    assert!(matches!(
        handle.send_to_guest(&shutdown).await,
        Err(moat_relay::HostSendError::Stopped)
    ));
}

#[tokio::test]
async fn client_shutdown_request_is_forwarded_and_reported() {
    let relay = Harness::start("client-shutdown").await;
    let mut client = relay.connect().await;
    let shutdown = MessageFrame::new(0, Message::Shutdown);
    client.send(&shutdown).await;
    let requested = tokio::time::timeout(PATIENCE, relay.handle.client_requested_shutdown()).await;
    assert!(requested.unwrap());
    relay.guest.received.wait_until("core.shutdown", |f| f.contains(&shutdown)).await;
    relay.stop().await;
}

#[tokio::test]
async fn relay_stops_when_the_guest_goes_away() {
    let relay = Harness::start("guest-gone").await;
    let mut client = relay.connect().await;
    relay.guest.stop();
    let stats = tokio::time::timeout(PATIENCE, relay.relay).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.stop, StopReason::GuestClosed);
    client.expect_closed().await;
    let records = log_records(&relay.log_dir.join("exec.log"));
    assert_eq!(records.last().unwrap().d, "--- sandbox stopped ---\n");
    assert!(!relay.socket.exists());
}

#[tokio::test]
async fn stdin_from_a_client_reaches_the_guest_byte_for_byte() {
    let relay = Harness::start("stdin").await;
    let mut client = relay.connect().await;
    let exec = client.exec("sleep", &[], false).await;
    client.recv().await.unwrap();
    let stdin = MessageFrame::new(exec, Message::ExecStdin(Data::new(b"hello".to_vec())));
    client.send(&stdin).await;
    relay.guest.received.wait_until("stdin", |f| f.contains(&stdin)).await;
    relay.stop().await;
}

#[tokio::test]
async fn dropping_every_handle_stops_the_relay() {
    let support::Harness { handle, relay, socket, guest, tmp: _tmp, .. } =
        Harness::start("dropped-handle").await;
    drop(handle);
    let stats = tokio::time::timeout(PATIENCE, relay).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.stop, StopReason::Requested);
    assert!(!socket.exists());
    guest.stop();
}

#[tokio::test]
async fn workload_replies_reach_the_host_only_and_a_frozen_sandbox_refuses_session_starts() {
    use moat_protocol::payload::core::CoreErrorKind;
    use moat_protocol::payload::exec::ExecRequest;
    use moat_protocol::payload::workload::WorkloadFreeze;
    use moat_protocol::relay::WORKLOAD_CHANNEL_ID;
    let relay = Harness::start("workload").await;
    let mut client = relay.connect().await;
    let freeze = Message::WorkloadFreeze(WorkloadFreeze {
        external_mount_tags: Vec::new(),
        attempt_id: "a".into(),
        host_input: Default::default(),
    });
    relay.handle.send_to_guest(&MessageFrame::new(WORKLOAD_CHANNEL_ID, freeze)).await.unwrap();
    let reply =
        tokio::time::timeout(PATIENCE, relay.handle.recv_workload()).await.unwrap().unwrap();
    let frame = support::split(&reply);
    assert_eq!(frame.id, WORKLOAD_CHANNEL_ID);
    assert!(matches!(frame.message, Message::WorkloadFrozen(_)), "{frame:?}");
    let id = client.next_id();
    client.send(&MessageFrame::new(id, Message::ExecRequest(ExecRequest::new("echo")))).await;
    let refusal = client.recv().await.unwrap();
    assert_eq!(refusal.id, id, "the client got nothing of the workload channel first");
    match refusal.message {
        Message::Error(error) => {
            assert_eq!(error.kind, CoreErrorKind::InvalidSession);
            assert_eq!(error.message, moat_relay::router::PAUSED_MESSAGE);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !relay.guest.received.snapshot().iter().any(|f| f.id == id),
        "the refused request never reached the guest"
    );
    relay.stop().await;
}
