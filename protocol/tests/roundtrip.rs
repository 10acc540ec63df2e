//! Property tests: every message type survives encode → frame → decode unchanged with arbitrary
//! payloads, ids and generations; frames over the size limits are refused by the encoder instead;
//! and the frame decoder's output does not depend on how the byte stream is split.
//!
//! The strategies (`strategies/mod.rs`) generate around the few values the wire cannot carry
//! unchanged; the lossy cases themselves are pinned by the plain tests at the end of this file.

mod strategies;

use moat_protocol::bulk::BulkRecordError;
use moat_protocol::error::EncodeError;
use moat_protocol::limits::{MAX_EXEC_CONTROL_FRAME_BYTES, MAX_WIRE_FRAME_BYTES};
use moat_protocol::payload::core::Ready;
use moat_protocol::payload::exec::{Data, ExecFailed, ExecFailureKind};
use moat_protocol::payload::tcp::TcpFailed;
use moat_protocol::{
    DecodeError, Decoded, Flags, FrameDecoder, FrameError, Message, MessageFrame, MessageType,
    RawFrame, UnknownMessage, decode_frame,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Takes exactly one frame off `wire` and decodes it.
fn receive(wire: &[u8]) -> Result<Decoded, TestCaseError> {
    let mut decoder = FrameDecoder::new();
    decoder.push(wire);
    let raw = decoder
        .next_frame()
        .map_err(|e| TestCaseError::fail(format!("framing: {e}")))?
        .ok_or_else(|| TestCaseError::fail("frame shorter than its length prefix"))?;
    prop_assert_eq!(decoder.buffered(), 0, "bytes after the frame");
    decode_frame(&raw).map_err(|e| TestCaseError::fail(format!("decode: {e}")))
}

fn round_trip(t: MessageType, frame: MessageFrame) -> Result<(), TestCaseError> {
    prop_assert_eq!(frame.message.message_type(), Some(t), "the strategy made another type");
    let wire = frame.to_bytes().map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(wire[8], t.flags().bits(), "flags byte");
    prop_assert_eq!(receive(&wire)?, Decoded::Message(frame));
    Ok(())
}

macro_rules! each_type_round_trips {
    ($($test:ident: $t:ident,)*) => {
        proptest! {
            $(
                #[test]
                fn $test(
                    (id, v, message) in
                        (any::<u32>(), any::<u8>(), strategies::message_of(MessageType::$t))
                ) {
                    round_trip(MessageType::$t, MessageFrame { id, v, message })?;
                }
            )*
        }

        /// The types the generated tests above cover.
        const COVERED: &[MessageType] = &[$(MessageType::$t),*];
    };
}

each_type_round_trips! {
    bootstrap_round_trips: Bootstrap,
    init_resolved_round_trips: InitResolved,
    init_ack_round_trips: InitAck,
    ready_round_trips: Ready,
    shutdown_round_trips: Shutdown,
    relay_client_disconnected_round_trips: RelayClientDisconnected,
    clock_sync_round_trips: ClockSync,
    ping_round_trips: Ping,
    pong_round_trips: Pong,
    touch_round_trips: Touch,
    touched_round_trips: Touched,
    error_round_trips: Error,
    workload_freeze_round_trips: WorkloadFreeze,
    workload_frozen_round_trips: WorkloadFrozen,
    workload_thaw_round_trips: WorkloadThaw,
    workload_thawed_round_trips: WorkloadThawed,
    workload_transport_credit_round_trips: WorkloadTransportCredit,
    root_disk_prepare_round_trips: RootDiskPrepare,
    root_disk_grow_round_trips: RootDiskGrow,
    root_disk_state_round_trips: RootDiskState,
    bulk_accepted_round_trips: BulkAccepted,
    bulk_credit_round_trips: BulkCredit,
    bulk_finish_round_trips: BulkFinish,
    bulk_cancel_round_trips: BulkCancel,
    exec_request_round_trips: ExecRequest,
    exec_started_round_trips: ExecStarted,
    exec_stdin_round_trips: ExecStdin,
    exec_stdin_error_round_trips: ExecStdinError,
    exec_stdout_round_trips: ExecStdout,
    exec_stderr_round_trips: ExecStderr,
    exec_exited_round_trips: ExecExited,
    exec_failed_round_trips: ExecFailed,
    exec_resize_round_trips: ExecResize,
    exec_signal_round_trips: ExecSignal,
    exec_output_ack_round_trips: ExecOutputAck,
    exec_stdin_ack_round_trips: ExecStdinAck,
    fs_request_round_trips: FsRequest,
    fs_response_round_trips: FsResponse,
    fs_data_round_trips: FsData,
    tcp_connect_round_trips: TcpConnect,
    tcp_connected_round_trips: TcpConnected,
    tcp_data_round_trips: TcpData,
    tcp_eof_round_trips: TcpEof,
    tcp_close_round_trips: TcpClose,
    tcp_closed_round_trips: TcpClosed,
    tcp_failed_round_trips: TcpFailed,
}

#[test]
fn round_trip_properties_cover_every_message_type() {
    let mut covered = COVERED.to_vec();
    covered.sort();
    covered.dedup();
    let mut all = MessageType::ALL.to_vec();
    all.sort();
    assert_eq!(covered, all);
}

proptest! {
    #[test]
    fn unknown_message_round_trips_verbatim(
        (id, v, message) in (any::<u32>(), any::<u8>(), strategies::unknown_message())
    ) {
        let frame = MessageFrame { id, v, message };
        let wire = frame.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(receive(&wire)?, Decoded::Message(frame));
    }

    #[test]
    fn ready_is_an_indefinite_map_exactly_when_it_carries_exec_control(
        ready in strategies::ready()
    ) {
        let has_control = ready.exec_control.is_some();
        let mut payload = Vec::new();
        Message::Ready(ready)
            .encode_payload(&mut payload)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // 0xbf opens an indefinite-length map; 0xa3..=0xa9 are definite maps of 3 to 9 entries
        // (the three timings plus up to six present optional fields).
        if has_control {
            prop_assert_eq!(payload[0], 0xbf);
        } else {
            let head = payload[0];
            prop_assert!((0xa3..=0xa9).contains(&head), "first payload byte {:#04x}", head);
        }
    }
}

// Size limits (PROTOCOL.md §1.1, §8.3).

/// Length of a shortest-form CBOR head for `value`.
fn head_len(value: usize) -> usize {
    match value {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Complete wire length of a frame, from the layouts of PROTOCOL.md §1.1 and §2.1 rather than
/// from the encoder: `[len][id][flags]`, then `a3 6176 <v> 6174 <t> 6170 <bstr p>`.
fn wire_len(v: u8, t: &str, payload_len: usize) -> usize {
    9 + 1
        + 2
        + head_len(usize::from(v))
        + 2
        + head_len(t.len())
        + t.len()
        + 2
        + head_len(payload_len)
        + payload_len
}

/// A message of `t` whose payload has `n` variable bytes, and its payload length.
fn sized(t: MessageType, n: usize) -> (Message, usize) {
    let data = || Data::new(vec![0x5a; n]);
    match t {
        // a1 64 "data" <bstr>
        MessageType::ExecStdin => (Message::ExecStdin(data()), 6 + head_len(n) + n),
        MessageType::ExecStdout => (Message::ExecStdout(data()), 6 + head_len(n) + n),
        MessageType::ExecStderr => (Message::ExecStderr(data()), 6 + head_len(n) + n),
        MessageType::FsData => (Message::FsData(data()), 6 + head_len(n) + n),
        MessageType::TcpData => (Message::TcpData(data()), 6 + head_len(n) + n),
        // a1 65 "error" <text>
        MessageType::TcpFailed => {
            (Message::TcpFailed(TcpFailed { error: "e".repeat(n) }), 7 + head_len(n) + n)
        }
        other => panic!("no sized message for {other}"),
    }
}

fn sized_types() -> impl Strategy<Value = MessageType> {
    select(vec![
        MessageType::ExecStdin,
        MessageType::ExecStdout,
        MessageType::ExecStderr,
        MessageType::FsData,
        MessageType::TcpData,
        MessageType::TcpFailed,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn frames_round_trip_up_to_4_mib_and_are_refused_above(
        t in sized_types(), id in any::<u32>(), v in any::<u8>(), delta in -48i64..=48
    ) {
        // Variable bytes that put the frame `delta` bytes either side of the 4 MiB limit (both
        // heads are 5 bytes at this size).
        let fixed = wire_len(v, t.wire_name(), 0) + sized(t, 0).1;
        let n = (MAX_WIRE_FRAME_BYTES - fixed - 8)
            .checked_add_signed(delta as isize)
            .expect("positive");
        let (message, payload_len) = sized(t, n);
        let expected = wire_len(v, t.wire_name(), payload_len);
        let frame = MessageFrame { id, v, message };
        let mut out = vec![0xee; 3];
        match frame.encode(&mut out) {
            Ok(()) => {
                prop_assert!(expected <= MAX_WIRE_FRAME_BYTES, "{} bytes were encoded", expected);
                prop_assert_eq!(out.len(), 3 + expected);
                prop_assert_eq!(receive(&out[3..])?, Decoded::Message(frame));
            }
            Err(EncodeError::FrameTooLarge { len }) => {
                prop_assert!(expected > MAX_WIRE_FRAME_BYTES, "{} bytes were refused", expected);
                prop_assert_eq!(len, expected - 4, "the error reports the length prefix");
                prop_assert_eq!(out, vec![0xee; 3], "a refused frame writes nothing");
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}

fn exec_control_types() -> impl Strategy<Value = MessageType> {
    select(MessageType::ALL.into_iter().filter(|t| t.is_exec_control()).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn exec_control_frames_are_encoded_up_to_4_kib_and_refused_above(
        t in exec_control_types(),
        v in any::<u8>(),
        delta in -64i64..=64,
    ) {
        // Only a verbatim message can carry an exec-control name with a payload this large.
        let name = t.wire_name();
        let n = (MAX_EXEC_CONTROL_FRAME_BYTES - wire_len(v, name, 0) - 2)
            .checked_add_signed(delta as isize)
            .expect("positive");
        let expected = wire_len(v, name, n);
        let payload = vec![0; n];
        let message =
            Message::Unknown(UnknownMessage { t: name.into(), flags: Flags::NONE, payload });
        match (MessageFrame { id: 1, v, message }).to_bytes() {
            Ok(wire) => {
                prop_assert!(expected <= MAX_EXEC_CONTROL_FRAME_BYTES);
                prop_assert_eq!(wire.len(), expected);
            }
            Err(EncodeError::ExecControlTooLarge { len }) => {
                prop_assert!(expected > MAX_EXEC_CONTROL_FRAME_BYTES);
                prop_assert_eq!(len, expected);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}

// Frame decoder independence from read boundaries (PROTOCOL.md §1.1).

/// A stream of valid frames with garbage between them.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let frame =
        (any::<u32>(), any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(id, flags, body)| {
            let raw = RawFrame { id, flags: Flags::from_bits(flags), body: body.into() };
            raw.to_bytes().expect("small frames encode")
        });
    let segment = prop_oneof![3 => frame, 1 => vec(any::<u8>(), 0..12)];
    vec(segment, 0..8).prop_map(|segments| segments.concat())
}

/// What a decoder made of a stream: the frames, the first error, the end-of-stream verdict.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<RawFrame>,
    error: Option<FrameError>,
    finish: Result<(), FrameError>,
}

fn drain(decoder: &mut FrameDecoder, frames: &mut Vec<RawFrame>, error: &mut Option<FrameError>) {
    while error.is_none() {
        match decoder.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return,
            Err(e) => *error = Some(e),
        }
    }
}

/// Feeds `stream` in `chunks` (length, take frames out afterwards?), cycling through them.
fn feed(stream: &[u8], chunks: &[(usize, bool)]) -> Outcome {
    let mut decoder = FrameDecoder::new();
    let (mut frames, mut error) = (Vec::new(), None);
    let mut rest = stream;
    for (len, take) in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*len).min(rest.len()));
        decoder.push(chunk);
        rest = tail;
        if *take {
            drain(&mut decoder, &mut frames, &mut error);
        }
    }
    drain(&mut decoder, &mut frames, &mut error);
    Outcome { frames, error, finish: decoder.finish() }
}

proptest! {
    #[test]
    fn frame_decoder_output_does_not_depend_on_how_the_stream_is_split(
        stream in stream(),
        chunks in vec((1usize..24, any::<bool>()), 1..16),
    ) {
        let whole = feed(&stream, &[(stream.len().max(1), true)]);
        prop_assert_eq!(feed(&stream, &chunks), whole);
    }

    #[test]
    fn frames_taken_out_re_encode_to_the_bytes_they_came_from(stream in stream()) {
        let outcome = feed(&stream, &[(stream.len().max(1), true)]);
        let mut again = Vec::new();
        for frame in &outcome.frames {
            frame.encode(&mut again).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(&stream[..again.len()], &again[..]);
    }
}

// The lossy values the strategies generate around.

#[test]
fn unrecognized_exec_failure_kind_holding_a_known_string_decodes_as_the_known_kind() {
    let failed = |kind| {
        Message::ExecFailed(ExecFailed {
            kind,
            errno: None,
            errno_name: None,
            message: "m".into(),
            stage: None,
        })
    };
    let wire = MessageFrame::new(1, failed(ExecFailureKind::Unrecognized("not_found".into())))
        .to_bytes()
        .expect("encodes");
    let Ok(Decoded::Message(frame)) = receive(&wire) else {
        panic!("decodes");
    };
    assert_eq!(frame.message, failed(ExecFailureKind::NotFound));
}

#[test]
fn unknown_message_under_a_catalogue_name_decodes_as_that_type() {
    let message = Message::Unknown(UnknownMessage {
        t: "core.ping".into(),
        flags: Flags::NONE,
        payload: vec![0xa0],
    });
    let wire = MessageFrame::new(1, message).to_bytes().expect("encodes");
    let Ok(Decoded::Message(frame)) = receive(&wire) else {
        panic!("decodes");
    };
    assert_eq!(frame.message, Message::Ping);
}

#[test]
fn unknown_message_under_the_bulk_flag_is_read_back_as_a_raw_bulk_record() {
    let message = Message::Unknown(UnknownMessage {
        t: "core.exec.teleport".into(),
        flags: Flags::BULK,
        payload: vec![0xa0],
    });
    let wire = MessageFrame::new(1, message).to_bytes().expect("encodes");
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire);
    let raw = decoder.next_frame().expect("frames").expect("a whole frame");
    // The envelope's first byte (0xa3, a 3-entry map) is read as the record's kind.
    assert!(matches!(decode_frame(&raw), Err(DecodeError::Bulk(BulkRecordError::BadKind(0xa3)))));
}

#[test]
fn empty_ready_agent_version_is_omitted_and_decodes_as_empty() {
    let ready = Ready { agent_version: String::new(), ..Ready::default() };
    let mut payload = Vec::new();
    Message::Ready(ready.clone()).encode_payload(&mut payload).expect("encodes");
    assert_eq!(payload[0], 0xa3, "only the three timing fields are written");
    let wire = MessageFrame::new(0, Message::Ready(ready.clone())).to_bytes().expect("encodes");
    assert!(
        matches!(receive(&wire), Ok(Decoded::Message(f)) if f.message == Message::Ready(ready))
    );
}
