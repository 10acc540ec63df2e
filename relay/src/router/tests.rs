//! Unit tests of the router core, one behaviour each.

use bytes::BytesMut;
use moat_protocol::frame::split_frame;
use moat_protocol::payload::core::Ready;
use moat_protocol::payload::core::{CoreError, CoreErrorKind};
use moat_protocol::payload::exec::{Data, ExecExited, ExecFailureKind, ExecRequest, ExecStarted};
use moat_protocol::payload::fs::FsResponse;
use moat_protocol::payload::tcp::TcpFailed;

use super::*;
use crate::limits::{CLIENT_QUEUE_MAX_BYTES, CLIENT_WRITE_STALL_MS, ORPHANED_EXEC_DRAIN_MS};

fn raw(message: MessageFrame) -> RawFrame {
    let bytes = message.to_bytes().unwrap();
    split_frame(&mut BytesMut::from(&bytes[..])).unwrap().unwrap()
}

fn ready() -> RawFrame {
    let ready = Ready { agent_version: "moat-test".into(), ..Ready::default() };
    raw(MessageFrame { id: 0, v: 7, message: Message::Ready(ready) })
}

fn router() -> Router {
    Router::new(&ready()).unwrap()
}

fn connect(router: &mut Router) -> (ClientId, Slot) {
    let connected = router.client_connected(Instant::now()).unwrap();
    (connected.client, connected.slot)
}

fn exec(id: u32, tty: bool) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecRequest(ExecRequest { tty, ..ExecRequest::new("sh") })))
}

fn stdout(id: u32, data: &[u8]) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecStdout(Data::new(data))))
}

fn stderr(id: u32, data: &[u8]) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecStderr(Data::new(data))))
}

fn exited(id: u32) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecExited(ExecExited { code: 0 })))
}

fn ping(id: u32) -> RawFrame {
    raw(MessageFrame::new(id, Message::Ping))
}

fn guest(router: &mut Router, frame: &RawFrame) -> Vec<Effect> {
    router.guest_frame(frame, Instant::now()).unwrap()
}

/// The agent's answer to `slot`'s disconnect barrier.
fn barrier_pong(router: &mut Router, slot: Slot) {
    let pong = raw(MessageFrame::new(slot.range().end_exclusive, Message::Pong));
    assert!(guest(router, &pong).is_empty(), "a barrier pong is never routed");
}

fn closed(effects: &[Effect], client: ClientId) -> bool {
    effects.iter().any(|e| matches!(e, Effect::CloseClient { client: c, .. } if *c == client))
}

fn decoded(bytes: &Bytes) -> MessageFrame {
    match decode_frame(&split_frame(&mut BytesMut::from(&bytes[..])).unwrap().unwrap()) {
        Ok(Decoded::Message(message)) => message,
        other => panic!("not a message: {other:?}"),
    }
}

fn logged(effects: &[Effect]) -> Vec<LogEntry> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ExecLog(entry) => Some(entry.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn prologue_and_ready_are_replayed_to_every_client() {
    let mut router = router();
    let ready_bytes = ready().to_bytes().unwrap();
    for k in 0..3u32 {
        let connected = router.client_connected(Instant::now()).unwrap();
        assert_eq!(connected.slot.index(), k);
        let [Effect::ToClient { client, bytes }] = &connected.effects[..] else {
            panic!("greeting expected, got {:?}", connected.effects);
        };
        assert_eq!(*client, connected.client);
        let range = connected.slot.range();
        assert_eq!(&bytes[..8], &Prologue { range }.to_bytes()[..]);
        assert_eq!(&bytes[8..], &ready_bytes[..], "ready replayed unchanged");
    }
}

#[test]
fn new_refuses_a_frame_that_is_not_ready() {
    assert!(matches!(Router::new(&ping(0)), Err(ReadyError::NotReady { .. })));
    let mut wrong_id = ready();
    wrong_id.id = 5;
    assert!(matches!(Router::new(&wrong_id), Err(ReadyError::Header { id: 5, .. })));
}

#[test]
fn guest_frames_reach_only_the_owning_client_byte_for_byte() {
    let mut router = router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    for (client, slot) in [(a, slot_a), (b, slot_b)] {
        let id = slot.range().start + 3;
        let frame = raw(MessageFrame::new(id, Message::Pong));
        let effects = guest(&mut router, &frame);
        let expected = Bytes::from(frame.to_bytes().unwrap());
        assert_eq!(effects, [Effect::ToClient { client, bytes: expected }]);
    }
}

#[test]
fn valid_client_frames_are_forwarded_unchanged() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let frame = ping(slot.range().start);
    let effects = router.client_frame(a, &frame);
    assert_eq!(effects, [Effect::ToGuest(Bytes::from(frame.to_bytes().unwrap()))]);
}

#[test]
fn id_outside_the_range_closes_only_that_client() {
    let mut router = router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let effects = router.client_frame(a, &ping(slot_b.range().start));
    assert!(closed(&effects, a));
    assert!(!effects.iter().any(|e| matches!(e, Effect::ToGuest(_))), "not forwarded");
    // a's later frames are ignored, b carries on.
    assert!(router.client_frame(a, &ping(slot_a.range().start)).is_empty());
    let effects = router.client_frame(b, &ping(slot_b.range().start));
    assert!(matches!(effects[..], [Effect::ToGuest(_)]));
    assert_eq!(router.stats().clients_closed_for_violation, 1);
}

#[test]
fn bad_flags_close_the_client() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let mut frame = ping(slot.range().start);
    frame.flags = Flags::from_bits(0x03);
    let effects = router.client_frame(a, &frame);
    assert_eq!(
        effects,
        [Effect::CloseClient {
            client: a,
            reason: CloseReason::Violation(Violation::Flags(Flags::from_bits(0x03)))
        }]
    );
}

#[test]
fn control_type_closes_the_client() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let control = raw(MessageFrame::new(
        slot.range().start,
        Message::Unknown(moat_protocol::UnknownMessage {
            t: "control.jobs".into(),
            flags: Flags::NONE,
            payload: vec![0xa0],
        }),
    ));
    assert!(closed(&router.client_frame(a, &control), a));
}

#[test]
fn local_transport_frame_closes_the_client() {
    let mut router = router();
    let (a, _) = connect(&mut router);
    let msbs = RawFrame { id: 0, flags: Flags::NONE, body: Bytes::from_static(b"MSBS\x01\x01") };
    let effects = router.client_frame(a, &msbs);
    assert_eq!(
        effects,
        [Effect::CloseClient { client: a, reason: Violation::LocalTransport.into() }]
    );
}

#[test]
fn client_shutdown_is_reported_and_forwarded() {
    let mut router = router();
    let (a, _) = connect(&mut router);
    let shutdown = raw(MessageFrame::new(0, Message::Shutdown));
    let effects = router.client_frame(a, &shutdown);
    assert!(matches!(
        effects[..],
        [Effect::ShutdownRequested { client }, Effect::ToGuest(_)] if client == a
    ));
}

#[test]
fn the_129th_client_is_refused() {
    let mut router = router();
    for _ in 0..RELAY_SLOTS {
        connect(&mut router);
    }
    assert_eq!(router.client_connected(Instant::now()).unwrap_err(), AllSlotsBusy);
    assert_eq!(router.stats().clients_refused, 1);
}

#[test]
fn disconnect_kills_open_execs_then_notifies_then_frees_the_slot() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let (first, second) = (slot.range().start + 1, slot.range().start + 2);
    router.client_frame(a, &exec(second, false));
    router.client_frame(a, &exec(first, false));
    let effects = router.client_disconnected(a);
    let [
        Effect::ToGuest(k1),
        Effect::ToGuest(k2),
        Effect::ToGuest(notice),
        Effect::ToGuest(barrier),
        Effect::ReleaseSlot(s),
    ] = &effects[..]
    else {
        panic!("unexpected effects {effects:?}");
    };
    let kill = |id| MessageFrame::new(id, Message::ExecSignal(ExecSignal { signal: 9 }));
    assert_eq!((decoded(k1), decoded(k2)), (kill(first), kill(second)));
    let range = slot.range();
    assert_eq!(
        decoded(notice),
        MessageFrame::new(
            0,
            Message::RelayClientDisconnected(RelayClientDisconnected {
                id_start: range.start,
                id_end_exclusive: range.end_exclusive,
                incarnation: None,
            })
        )
    );
    assert_eq!(decoded(barrier), MessageFrame::new(range.end_exclusive, Message::Ping));
    assert_eq!(*s, slot);
    // Quarantined until released, its execs ended and the barrier answered: the next client gets
    // slot 1, then slot 0.
    assert_eq!(connect(&mut router).1.index(), 1);
    router.release_slot(slot);
    guest(&mut router, &exited(first));
    guest(&mut router, &exited(second));
    barrier_pong(&mut router, slot);
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn slot_stays_quarantined_until_the_departed_clients_execs_end() {
    // Regression (found by moat-conformance disconnect/kills_execs): the slot was freed as soon
    // as the notice was queued, so the next client in it got "exec session 1 is already active"
    // from the agent, and could receive the killed session's late exec.exited on its own id.
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    router.client_disconnected(a);
    router.release_slot(slot);
    assert_eq!(connect(&mut router).1.index(), 1, "slot 0 must wait for the orphan's end");
    assert!(guest(&mut router, &exited(id)).is_empty(), "the orphan's exit reaches nobody");
    barrier_pong(&mut router, slot);
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn slot_is_not_freed_before_its_notice_is_queued_even_if_the_execs_ended() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    router.client_disconnected(a);
    guest(&mut router, &exited(id));
    barrier_pong(&mut router, slot);
    assert_eq!(connect(&mut router).1.index(), 1);
    router.release_slot(slot);
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn slot_of_execs_that_never_end_is_freed_after_the_drain_deadline() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    router.client_frame(a, &exec(slot.range().start, false));
    router.client_disconnected(a);
    router.release_slot(slot);
    let start = Instant::now();
    router.tick(start);
    router.tick(start + Duration::from_millis(ORPHANED_EXEC_DRAIN_MS - 1));
    assert_eq!(connect(&mut router).1.index(), 1);
    router.tick(start + Duration::from_millis(ORPHANED_EXEC_DRAIN_MS));
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn a_departed_clients_late_reply_never_reaches_the_next_client_in_its_slot() {
    // Regression (found by moat-conformance fuzz): the slot was freed once the notice was queued,
    // while the agent still had replies to the departed client's last frames on their way (a
    // core.error for a frame the client sent just before a violation closed it). The next client
    // in the slot got that core.error on its own id 1, in place of the pong to its ping.
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &ping(id));
    router.client_disconnected(a);
    router.release_slot(slot);
    assert_eq!(connect(&mut router).1.index(), 1, "slot 0 waits for the barrier");
    let late = raw(MessageFrame::new(id, Message::Pong));
    assert!(guest(&mut router, &late).is_empty(), "the late reply reaches nobody");
    barrier_pong(&mut router, slot);
    let (b, again) = connect(&mut router);
    assert_eq!((again, router.owners[slot.index() as usize]), (slot, Some(b)));
}

#[test]
fn an_agent_without_ping_gets_no_barrier_and_the_slot_frees_with_the_notice() {
    let old = Ready { agent_version: "gen 5".into(), ..Ready::default() };
    let mut router =
        Router::new(&raw(MessageFrame { id: 0, v: 5, message: Message::Ready(old) })).unwrap();
    let (a, slot) = connect(&mut router);
    let effects = router.client_disconnected(a);
    assert!(matches!(effects[..], [Effect::ToGuest(_), Effect::ReleaseSlot(_)]), "{effects:?}");
    router.release_slot(slot);
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn a_barrier_pong_for_a_slot_not_draining_is_dropped() {
    let mut router = router();
    let (_, slot) = connect(&mut router);
    barrier_pong(&mut router, slot);
    assert_eq!(router.stats().guest_frames_dropped, 1);
}

#[test]
fn a_terminal_that_is_not_the_execs_own_leaves_it_tracked_and_killed_on_disconnect() {
    // Regression (found by moat-conformance fuzz): core.tcp.close on a running exec's id got a
    // TERMINAL core.tcp.failed from the agent, which ended the relay's tracking of the exec; the
    // client left, nothing killed or drained the exec, and its core.exec.exited reached the next
    // client in the slot.
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    guest(&mut router, &raw(MessageFrame::new(id, Message::ExecStarted(ExecStarted { pid: 7 }))));
    let failed = TcpFailed { error: format!("unknown TCP session: {id}") };
    guest(&mut router, &raw(MessageFrame::new(id, Message::TcpFailed(failed))));
    let rejected = CoreError {
        kind: CoreErrorKind::InvalidPayload,
        message: "bad stdin".into(),
        offending_type: None,
        init_failure: None,
        workload_failure: None,
    };
    guest(&mut router, &raw(MessageFrame::new(id, Message::Error(rejected))));
    assert!(router.exec_session(id).is_some(), "the exec still runs");
    let effects = router.client_disconnected(a);
    let kill = MessageFrame::new(id, Message::ExecSignal(ExecSignal { signal: 9 }));
    assert!(matches!(&effects[..], [Effect::ToGuest(k), ..] if decoded(k) == kill), "{effects:?}");
    router.release_slot(slot);
    barrier_pong(&mut router, slot);
    assert_eq!(connect(&mut router).1.index(), 1, "slot 0 waits for the exec's end");
    assert!(guest(&mut router, &exited(id)).is_empty(), "the late exit reaches nobody");
    assert_eq!(connect(&mut router).1, slot);
}

#[test]
fn a_core_error_before_the_exec_started_ends_it() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    let error = CoreError {
        kind: CoreErrorKind::InvalidPayload,
        message: "bad request".into(),
        offending_type: Some("core.exec.request".into()),
        init_failure: None,
        workload_failure: None,
    };
    guest(&mut router, &raw(MessageFrame::new(id, Message::Error(error))));
    assert_eq!(router.exec_session(id), None);
}

#[test]
fn a_core_error_for_a_follow_up_before_the_exec_started_does_not_end_it() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    let error = CoreError {
        kind: CoreErrorKind::InvalidPayload,
        message: "bad stdin".into(),
        offending_type: Some("core.exec.stdin".into()),
        init_failure: None,
        workload_failure: None,
    };
    guest(&mut router, &raw(MessageFrame::new(id, Message::Error(error))));
    assert!(router.exec_session(id).is_some(), "the request itself was not refused");
}

#[test]
fn frames_for_a_departed_client_are_dropped() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    router.client_disconnected(a);
    router.release_slot(slot);
    assert!(guest(&mut router, &ping(slot.range().start)).is_empty());
    assert_eq!(router.stats().guest_frames_dropped, 1);
}

#[test]
fn guest_frames_outside_every_slot_and_on_id_zero_are_dropped() {
    let mut router = router();
    connect(&mut router);
    for id in [0, RELAY_SLOT_STEP] {
        assert!(guest(&mut router, &ping(id)).is_empty(), "id {id}");
    }
    assert!(guest(&mut router, &ready()).is_empty());
    assert_eq!(router.stats().guest_frames_dropped, 3);
    // The private workload id is not dropped but handed to the host, never to a client.
    assert!(matches!(guest(&mut router, &ping(u32::MAX))[..], [Effect::ToHost(_)]));
}

const RELAY_SLOT_STEP: u32 = moat_protocol::limits::RELAY_SLOT_STEP_IDS;

#[test]
fn guest_frame_with_invalid_flags_is_fatal() {
    let mut router = router();
    let mut frame = ping(5);
    frame.flags = Flags::from_bits(0x30);
    assert_eq!(
        router.guest_frame(&frame, Instant::now()),
        Err(GuestFrameError::InvalidFlags { id: 5, flags: Flags::from_bits(0x30) })
    );
}

#[test]
fn exec_output_is_logged_with_relay_session_numbers() {
    let mut router = router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (pipe, tty) = (slot_a.range().start + 1, slot_b.range().start + 1);
    router.client_frame(a, &exec(pipe, false));
    router.client_frame(b, &exec(tty, true));
    let mut entries = logged(&guest(&mut router, &stdout(pipe, b"out")));
    entries.extend(logged(&guest(&mut router, &stderr(pipe, b"err"))));
    entries.extend(logged(&guest(&mut router, &stdout(tty, b"pty"))));
    assert_eq!(
        entries,
        [
            LogEntry::Output {
                source: LogSource::Stdout,
                session: 1,
                data: Bytes::from_static(b"out")
            },
            LogEntry::Output {
                source: LogSource::Stderr,
                session: 1,
                data: Bytes::from_static(b"err")
            },
            LogEntry::Output {
                source: LogSource::Output,
                session: 2,
                data: Bytes::from_static(b"pty")
            },
        ]
    );
    // Output on an id that never opened an exec is routed but not logged.
    assert!(logged(&guest(&mut router, &stdout(slot_a.range().start + 9, b"x"))).is_empty());
    assert_eq!(router.stats().exec_sessions_opened, 2);
}

#[test]
fn exec_output_is_logged_after_the_owner_left() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    router.client_disconnected(a);
    let effects = guest(&mut router, &stdout(id, b"late"));
    assert_eq!(
        effects,
        [Effect::ExecLog(LogEntry::Output {
            source: LogSource::Stdout,
            session: 1,
            data: Bytes::from_static(b"late")
        })]
    );
}

#[test]
fn terminal_frame_ends_the_session_so_disconnect_sends_no_signal() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start + 1;
    router.client_frame(a, &exec(id, false));
    let started = raw(MessageFrame::new(id, Message::ExecStarted(ExecStarted { pid: 7 })));
    guest(&mut router, &started);
    assert!(router.exec_session(id).is_some(), "non-terminal frames keep it open");
    guest(&mut router, &exited(id));
    assert_eq!(router.exec_session(id), None);
    assert!(logged(&guest(&mut router, &stdout(id, b"after"))).is_empty());
    let effects = router.client_disconnected(a);
    assert!(matches!(
        effects[..],
        [Effect::ToGuest(_), Effect::ToGuest(_), Effect::ReleaseSlot(_)]
    ));
}

#[test]
fn a_full_queue_disconnects_only_the_slow_client() {
    let mut router = router();
    let (slow, slow_slot) = connect(&mut router);
    let (fast, fast_slot) = connect(&mut router);
    let chunk = vec![b'x'; 1024 * 1024];
    let big = stdout(slow_slot.range().start, &chunk);
    let mut overflowed = None;
    for n in 0..CLIENT_QUEUE_MAX_BYTES / chunk.len() + 1 {
        let effects = guest(&mut router, &big);
        if closed(&effects, slow) {
            overflowed = Some(n);
            break;
        }
        // The fast client drains whatever it gets.
        let small = guest(&mut router, &ping(fast_slot.range().start));
        let [Effect::ToClient { bytes, .. }] = &small[..] else { panic!("{small:?}") };
        router.client_wrote(fast, 1, bytes.len(), Instant::now());
    }
    assert!(overflowed.is_some(), "the slow client's queue never overflowed");
    assert!(guest(&mut router, &big).is_empty(), "nothing more is queued for it");
    assert!(matches!(
        guest(&mut router, &ping(fast_slot.range().start))[..],
        [Effect::ToClient { client, .. }] if client == fast
    ));
    assert_eq!(router.stats().slow_clients_closed, 1);
}

#[test]
fn a_client_whose_output_stalls_is_disconnected_on_tick() {
    let mut router = router();
    let start = Instant::now();
    let a = router.client_connected(start).unwrap().client;
    let b = router.client_connected(start).unwrap().client;
    let stall = Duration::from_millis(CLIENT_WRITE_STALL_MS);
    // b keeps writing; a never does.
    router.client_wrote(b, 1, 1, start + stall / 2);
    assert!(router.tick(start + stall / 2).is_empty());
    let effects = router.tick(start + stall);
    assert_eq!(
        effects,
        [Effect::CloseClient { client: a, reason: CloseReason::Stalled { waited: stall } }]
    );
    assert!(!closed(&router.tick(start + stall * 2), a), "closed only once");
}

#[test]
fn backlogged_client_reports_backpressure() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    assert!(!router.backlogged(a));
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..9 {
        guest(&mut router, &stdout(slot.range().start, &chunk));
    }
    assert!(router.backlogged(a));
}

#[test]
fn too_many_execs_close_the_client() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    for n in 0..MAX_OPEN_EXECS_PER_CLIENT as u32 {
        let effects = router.client_frame(a, &exec(slot.range().start + n, false));
        assert!(matches!(effects[..], [Effect::ToGuest(_)]));
    }
    let effects = router.client_frame(a, &exec(slot.range().start + 5000, false));
    assert_eq!(effects, [Effect::CloseClient { client: a, reason: CloseReason::TooManyExecs }]);
}

#[test]
fn start_and_stop_write_system_markers() {
    let router = router();
    assert_eq!(router.start(), [Effect::ExecLog(LogEntry::System(SANDBOX_STARTED))]);
    assert_eq!(router.stop(), LogEntry::System(SANDBOX_STOPPED));
}

/// A router for an agent that flow-controls generation-10 execs.
fn flow_router() -> Router {
    let ready = Ready {
        agent_version: "moat-test".into(),
        exec_limits: Some(moat_protocol::payload::exec::ExecLimits::default()),
        ..Ready::default()
    };
    Router::new(&raw(MessageFrame { id: 0, v: 10, message: Message::Ready(ready) })).unwrap()
}

fn output_ack(id: u32, consumed: u64) -> RawFrame {
    let ack = moat_protocol::payload::exec::Consumed { consumed };
    raw(MessageFrame::new(id, Message::ExecOutputAck(ack)))
}

#[test]
fn valid_output_acks_are_forwarded() {
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    guest(&mut router, &stdout(id, b"abc"));
    for consumed in [259, 259] {
        let effects = router.client_frame(a, &output_ack(id, consumed));
        assert!(matches!(effects[..], [Effect::ToGuest(_)]), "{effects:?}");
    }
}

#[test]
fn an_over_claiming_or_regressing_output_ack_closes_only_its_client() {
    let mut router = flow_router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (id_a, id_b) = (slot_a.range().start, slot_b.range().start);
    for (client, id) in [(a, id_a), (b, id_b)] {
        router.client_frame(client, &exec(id, false));
        guest(&mut router, &stdout(id, b"abc"));
    }
    let effects = router.client_frame(a, &output_ack(id_a, 260));
    assert!(closed(&effects, a), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::ToGuest(_))), "not forwarded");
    router.client_frame(b, &output_ack(id_b, 259));
    let effects = router.client_frame(b, &output_ack(id_b, 1));
    assert!(closed(&effects, b) && !closed(&effects, a), "{effects:?}");
}

#[test]
fn output_acks_are_not_checked_for_legacy_requests_or_agents() {
    // An agent without exec_limits: the relay passes acks through.
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    let effects = router.client_frame(a, &output_ack(id, 1 << 40));
    assert!(matches!(effects[..], [Effect::ToGuest(_)]), "{effects:?}");
    // A v = 9 request to a flow-controlling agent is on the legacy path.
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    let request = Message::ExecRequest(ExecRequest::new("sh"));
    router.client_frame(a, &raw(MessageFrame { id, v: 9, message: request }));
    let effects = router.client_frame(a, &output_ack(id, 1 << 40));
    assert!(matches!(effects[..], [Effect::ToGuest(_)]), "{effects:?}");
}

fn started(id: u32) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecStarted(ExecStarted { pid: 42 })))
}

fn stdin(id: u32, len: usize) -> RawFrame {
    raw(MessageFrame::new(id, Message::ExecStdin(Data::new(vec![b'x'; len]))))
}

fn stdin_ack(id: u32, consumed: u64) -> RawFrame {
    let ack = moat_protocol::payload::exec::Consumed { consumed };
    raw(MessageFrame::new(id, Message::ExecStdinAck(ack)))
}

fn guest_error(id: u32, offending: MessageType) -> RawFrame {
    raw(MessageFrame::new(
        id,
        Message::Error(CoreError {
            kind: CoreErrorKind::InvalidPayload,
            message: "refused".into(),
            offending_type: Some(offending.wire_name().into()),
            init_failure: None,
            workload_failure: None,
        }),
    ))
}

fn flow_router_with(limits: moat_protocol::payload::exec::ExecLimits) -> Router {
    let ready = Ready { exec_limits: Some(limits), ..Ready::default() };
    Router::new(&raw(MessageFrame { id: 0, v: 10, message: Message::Ready(ready) })).unwrap()
}

fn forwarded(effects: &[Effect]) -> bool {
    matches!(effects, [Effect::ToGuest(_)])
}

/// The one frame the relay answered `client` with itself.
fn answered(effects: &[Effect], client: ClientId) -> MessageFrame {
    match effects {
        [Effect::ToClient { client: c, bytes }] if *c == client => decoded(bytes),
        other => panic!("not one relay answer: {other:?}"),
    }
}

#[test]
fn admission_refuses_past_max_executions_sandbox_wide_without_forwarding() {
    let limits =
        moat_protocol::payload::exec::ExecLimits { max_executions: 2, ..Default::default() };
    let mut router = flow_router_with(limits);
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (id_a, id_b) = (slot_a.range().start, slot_b.range().start);
    assert!(forwarded(&router.client_frame(a, &exec(id_a, false))));
    assert!(forwarded(&router.client_frame(b, &exec(id_b, false))));
    let request = Message::ExecRequest(ExecRequest::new("sh"));
    let third = raw(MessageFrame { id: id_a + 1, v: 10, message: request });
    let reply = answered(&router.client_frame(a, &third), a);
    assert_eq!(reply.id, id_a + 1);
    assert_eq!(reply.v, 10, "the refusal copies the request's v");
    match reply.message {
        Message::ExecFailed(failed) => {
            assert_eq!(failed.kind, ExecFailureKind::ResourceLimit);
            assert_eq!(failed.message, ADMISSION_MESSAGE);
            assert_eq!(failed.stage.as_deref(), Some("execution_admission"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(router.exec_session(id_a + 1), None, "the refused request is not tracked");
    // A session's exit frees its slot.
    guest(&mut router, &exited(id_b));
    assert!(forwarded(&router.client_frame(a, &exec(id_a + 2, false))));
}

#[test]
fn admission_does_not_count_legacy_requests() {
    let limits =
        moat_protocol::payload::exec::ExecLimits { max_executions: 1, ..Default::default() };
    let mut router = flow_router_with(limits);
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    let legacy =
        |id| raw(MessageFrame { id, v: 9, message: Message::ExecRequest(ExecRequest::new("sh")) });
    assert!(forwarded(&router.client_frame(a, &legacy(id))));
    assert!(forwarded(&router.client_frame(a, &legacy(id + 1))));
    assert!(forwarded(&router.client_frame(a, &exec(id + 2, false))));
}

#[test]
fn a_departed_clients_exec_holds_its_admission_slot_until_it_ends() {
    let limits =
        moat_protocol::payload::exec::ExecLimits { max_executions: 1, ..Default::default() };
    let mut router = flow_router_with(limits);
    let (a, slot_a) = connect(&mut router);
    let id_a = slot_a.range().start;
    router.client_frame(a, &exec(id_a, false));
    router.client_disconnected(a);
    let (b, slot_b) = connect(&mut router);
    let id_b = slot_b.range().start;
    let reply = answered(&router.client_frame(b, &exec(id_b, false)), b);
    assert!(matches!(reply.message, Message::ExecFailed(_)), "{reply:?}");
    guest(&mut router, &exited(id_a));
    assert!(forwarded(&router.client_frame(b, &exec(id_b + 1, false))));
}

#[test]
fn reusing_an_active_exec_id_closes_the_client() {
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    let effects = router.client_frame(a, &exec(id, false));
    assert!(
        matches!(
            &effects[..],
            [Effect::CloseClient {
                reason: CloseReason::Flow(FlowViolation::ReusedExecId { .. }),
                ..
            }]
        ),
        "{effects:?}"
    );
}

#[test]
fn stdin_before_started_or_after_eof_closes_the_client() {
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    assert!(closed(&router.client_frame(a, &stdin(id, 1)), a), "before started");

    let (b, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(b, &exec(id, false));
    guest(&mut router, &started(id));
    assert!(forwarded(&router.client_frame(b, &stdin(id, 1))));
    assert!(forwarded(&router.client_frame(b, &stdin(id, 0))), "EOF");
    let effects = router.client_frame(b, &stdin(id, 1));
    assert!(closed(&effects, b) && !effects.iter().any(|e| matches!(e, Effect::ToGuest(_))));
}

#[test]
fn stdin_over_the_chunk_size_or_window_closes_only_its_client() {
    let limits = moat_protocol::payload::exec::ExecLimits {
        input_limit: 100,
        stdin_chunk_size: 60,
        ..Default::default()
    };
    let mut router = flow_router_with(limits);
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (id_a, id_b) = (slot_a.range().start, slot_b.range().start);
    for (client, id) in [(a, id_a), (b, id_b)] {
        router.client_frame(client, &exec(id, false));
        guest(&mut router, &started(id));
    }
    let effects = router.client_frame(a, &stdin(id_a, 61));
    assert!(closed(&effects, a) && !closed(&effects, b), "{effects:?}");
    assert!(forwarded(&router.client_frame(b, &stdin(id_b, 60))));
    assert!(closed(&router.client_frame(b, &stdin(id_b, 41)), b), "past the window");
}

#[test]
fn the_agents_stdin_ack_reopens_the_window() {
    let limits = moat_protocol::payload::exec::ExecLimits {
        input_limit: 100,
        stdin_chunk_size: 60,
        ..Default::default()
    };
    let mut router = flow_router_with(limits);
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    guest(&mut router, &started(id));
    assert!(forwarded(&router.client_frame(a, &stdin(id, 60))));
    let effects = guest(&mut router, &stdin_ack(id, 60));
    assert!(matches!(effects[..], [Effect::ToClient { .. }]), "the ack is routed: {effects:?}");
    assert!(forwarded(&router.client_frame(a, &stdin(id, 60))));
    assert!(forwarded(&router.client_frame(a, &stdin(id, 40))));
}

#[test]
fn guest_output_past_the_window_closes_the_owner_and_is_not_routed() {
    let limits = moat_protocol::payload::exec::ExecLimits {
        output_limit: 600,
        output_chunk_size: 300,
        ..Default::default()
    };
    let mut router = flow_router_with(limits);
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    assert!(matches!(
        guest(&mut router, &stdout(id, &[0; 300]))[..],
        [Effect::ExecLog(_), Effect::ToClient { .. }]
    ));
    let effects = guest(&mut router, &stdout(id, &[0; 1]));
    assert!(closed(&effects, a), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::ToClient { .. })), "{effects:?}");
}

#[test]
fn a_guest_error_on_a_started_flow_controlled_exec_closes_its_client() {
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    guest(&mut router, &started(id));
    let effects = guest(&mut router, &guest_error(id, MessageType::ExecStdin));
    assert!(closed(&effects, a), "{effects:?}");
    assert!(router.exec_session(id).is_some(), "the process still runs: tracked, killed on leave");
    let effects = router.client_disconnected(a);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::ToGuest(b) if matches!(decoded(b).message, Message::ExecSignal(_)))
    ));
}

#[test]
fn a_guest_error_refusing_the_request_ends_the_flow_controlled_exec_and_is_routed() {
    let mut router = flow_router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    let effects = guest(&mut router, &guest_error(id, MessageType::ExecRequest));
    assert!(matches!(effects[..], [Effect::ToClient { .. }]), "{effects:?}");
    assert_eq!(router.exec_session(id), None);
}

fn workload(message: Message) -> RawFrame {
    raw(MessageFrame::new(WORKLOAD_CHANNEL_ID, message))
}

#[test]
fn workload_channel_frames_go_to_the_host_only() {
    let mut router = router();
    let (a, _) = connect(&mut router);
    let credit = workload(Message::WorkloadTransportCredit(Default::default()));
    let effects = guest(&mut router, &credit);
    assert!(matches!(&effects[..], [Effect::ToHost(_)]), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::ToClient { client, .. } if *client == a)));
}

#[test]
fn a_frozen_workload_refuses_session_starts_until_thawed() {
    use moat_protocol::payload::workload::{WorkloadFrozen, WorkloadThawed};
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    let frozen = WorkloadFrozen {
        attempt_id: "x".into(),
        guest_bulk_bytes_target: 0,
        input_credit: Default::default(),
        external_mounts_synced: false,
    };
    guest(&mut router, &workload(Message::WorkloadFrozen(frozen)));
    assert!(router.paused());
    let reply = answered(&router.client_frame(a, &exec(id, false)), a);
    match reply.message {
        Message::Error(error) => {
            assert_eq!(error.kind, CoreErrorKind::InvalidSession);
            assert_eq!(error.message, PAUSED_MESSAGE);
            assert_eq!(error.offending_type.as_deref(), Some("core.exec.request"));
        }
        other => panic!("{other:?}"),
    }
    assert!(forwarded(&router.client_frame(a, &ping(id + 1))), "unary requests still pass");
    guest(
        &mut router,
        &workload(Message::WorkloadThawed(WorkloadThawed { attempt_id: "x".into() })),
    );
    assert!(forwarded(&router.client_frame(a, &exec(id + 2, false))));
}

#[test]
fn a_draining_router_refuses_new_execs_and_lets_open_ones_finish() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    assert!(forwarded(&router.client_frame(a, &exec(id, false))));
    router.refuse_new_execs();
    assert!(router.refusing_execs());
    let reply = answered(&router.client_frame(a, &exec(id + 1, false)), a);
    match reply.message {
        Message::Error(error) => {
            assert_eq!(error.kind, CoreErrorKind::InvalidSession);
            assert_eq!(error.message, DRAINING_MESSAGE);
            assert_eq!(error.offending_type.as_deref(), Some("core.exec.request"));
        }
        other => panic!("{other:?}"),
    }
    assert!(forwarded(&router.client_frame(a, &ping(id + 2))), "other requests still pass");
    assert_eq!(router.open_exec_sessions(), 1, "the refused exec opened no session");
    let output = guest(&mut router, &stdout(id, b"still running"));
    assert!(output.iter().any(|e| matches!(e, Effect::ToClient { client, .. } if *client == a)));
    guest(&mut router, &exited(id));
    assert_eq!(router.open_exec_sessions(), 0);
}

fn bulk_write_request(id: u32) -> RawFrame {
    use moat_protocol::payload::bulk::BulkOffer;
    use moat_protocol::payload::fs::{FsOp, FsRequest};
    let offer = BulkOffer { format: 1, max_record_payload: 1 << 20, guest_to_host_credit_limit: 0 };
    let op = FsOp::Write { handle: 1, offset: 0, len: None };
    raw(MessageFrame::new(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) })))
}

fn bulk_accepted(id: u32, flows: u8) -> RawFrame {
    let accepted = moat_protocol::payload::bulk::BulkAccepted {
        kind: 1,
        flows,
        format: 1,
        max_record_payload: 1 << 20,
        host_to_guest_credit_limit: 8 << 20,
        guest_to_host_credit_limit: 0,
    };
    raw(MessageFrame::new(id, Message::BulkAccepted(accepted)))
}

fn host_record(id: u32) -> RawFrame {
    let record = moat_protocol::BulkRecord {
        id,
        kind: moat_protocol::BulkKind::Filesystem,
        flow: moat_protocol::BulkFlow::HostToGuest,
        offset: 0,
        payload: Bytes::from_static(b"data"),
    };
    let mut bytes = Vec::new();
    record.encode(&mut bytes).unwrap();
    split_frame(&mut BytesMut::from(&bytes[..])).unwrap().unwrap()
}

#[test]
fn raw_records_are_forwarded_only_for_an_accepted_bulk_write() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    assert!(forwarded(&router.client_frame(a, &bulk_write_request(id))));
    guest(&mut router, &bulk_accepted(id, 0x01));
    assert!(forwarded(&router.client_frame(a, &host_record(id))));
    // The operation ends with its terminal; a late record is dropped without a word.
    let done = raw(MessageFrame::new(id, Message::FsResponse(FsResponse::ok(None))));
    guest(&mut router, &done);
    assert!(router.client_frame(a, &host_record(id)).is_empty());
}

#[test]
fn a_raw_record_without_an_accepted_operation_closes_only_its_client() {
    let mut router = router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (id_a, id_b) = (slot_a.range().start, slot_b.range().start);
    let effects = router.client_frame(a, &host_record(id_a));
    assert!(closed(&effects, a) && !closed(&effects, b));
    router.client_frame(b, &bulk_write_request(id_b));
    let effects = router.client_frame(b, &host_record(id_b));
    assert!(closed(&effects, b), "before core.bulk.accepted: {effects:?}");
}

#[test]
fn a_bulk_offer_on_an_active_bulk_id_closes_the_client() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &bulk_write_request(id));
    let effects = router.client_frame(a, &bulk_write_request(id));
    assert!(
        matches!(&effects[..], [Effect::CloseClient { reason: CloseReason::Bulk(_), .. }]),
        "{effects:?}"
    );
}

#[test]
fn the_65th_bulk_operation_gets_the_relays_terminal_rejection() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let start = slot.range().start;
    for n in 0..64 {
        assert!(forwarded(&router.client_frame(a, &bulk_write_request(start + n))));
    }
    let reply = answered(&router.client_frame(a, &bulk_write_request(start + 64)), a);
    assert_eq!(reply.message, Message::FsResponse(FsResponse::err(TOO_MANY_BULK_MESSAGE)));
    let done = raw(MessageFrame::new(start, Message::FsResponse(FsResponse::ok(None))));
    guest(&mut router, &done);
    assert!(forwarded(&router.client_frame(a, &bulk_write_request(start + 65))));
}

#[test]
fn the_barrier_pong_ends_a_departed_clients_flow_controlled_execs_and_frees_admission() {
    let limits =
        moat_protocol::payload::exec::ExecLimits { max_executions: 1, ..Default::default() };
    let mut router = flow_router_with(limits);
    let (a, slot_a) = connect(&mut router);
    let id_a = slot_a.range().start;
    router.client_frame(a, &exec(id_a, false));
    guest(&mut router, &stdout(id_a, b"unacked"));
    router.client_disconnected(a);
    router.release_slot(slot_a);
    // The agent abandons the exec (nobody acks its output): no exited ever comes. Its answer
    // to the barrier is the cleanup confirmation.
    barrier_pong(&mut router, slot_a);
    assert_eq!(router.exec_session(id_a), None);
    let (b, slot_b) = connect(&mut router);
    assert_eq!(slot_b, slot_a, "the slot is free again");
    assert!(forwarded(&router.client_frame(b, &exec(slot_b.range().start + 5, false))));
}

#[test]
fn the_drain_deadline_forgets_sessions_that_never_ended() {
    let mut router = router();
    let (a, slot) = connect(&mut router);
    let id = slot.range().start;
    router.client_frame(a, &exec(id, false));
    router.client_disconnected(a);
    router.release_slot(slot);
    barrier_pong(&mut router, slot);
    let start = Instant::now();
    router.tick(start);
    router.tick(start + Duration::from_millis(ORPHANED_EXEC_DRAIN_MS));
    assert_eq!(router.open_exec_sessions(), 0, "the registry does not leak");
}

#[test]
fn signal_open_execs_reaches_every_open_session_and_no_ended_one() {
    let mut router = router();
    let (a, slot_a) = connect(&mut router);
    let (b, slot_b) = connect(&mut router);
    let (a1, a2, b1) = (slot_a.range().start + 1, slot_a.range().start + 2, slot_b.range().start);
    for (client, id) in [(a, a1), (a, a2), (b, b1)] {
        router.client_frame(client, &exec(id, false));
    }
    guest(&mut router, &exited(a2));
    // A departed client's exec is still signalled until it ends.
    router.client_disconnected(b);
    let frames = router.signal_open_execs(10);
    let sent: Vec<(u32, Message)> = frames
        .iter()
        .map(|bytes| {
            let frame = decoded(bytes);
            (frame.id, frame.message)
        })
        .collect();
    let usr1 = || Message::ExecSignal(ExecSignal { signal: 10 });
    assert_eq!(sent, vec![(a1, usr1()), (b1, usr1())]);
    guest(&mut router, &exited(a1));
    guest(&mut router, &exited(b1));
    assert!(router.signal_open_execs(10).is_empty());
}

/// Whether `inner` points into `outer`'s bytes (shares its allocation).
fn within(outer: &Bytes, inner: &Bytes) -> bool {
    let start = outer.as_ptr() as usize;
    let at = inner.as_ptr() as usize;
    at >= start && at < start + outer.len()
}

#[test]
fn the_log_tap_copies_a_small_chunk_and_slices_a_large_one() {
    let small = stdout(1, b"one line\n");
    let (stream, data) = exec_output(&small).expect("a stdout chunk");
    assert!(matches!(stream, OutputStream::Stdout));
    assert_eq!(&data[..], b"one line\n");
    assert!(!within(&small.body, &data), "a small chunk must not pin the frame it came in");

    let chunk = vec![7u8; LOG_SLICE_MIN_BYTES];
    let large = stderr(1, &chunk);
    let (stream, data) = exec_output(&large).expect("a stderr chunk");
    assert!(matches!(stream, OutputStream::Stderr));
    assert_eq!(&data[..], &chunk[..]);
    assert!(within(&large.body, &data), "a large chunk is kept as a slice, not copied");
}
