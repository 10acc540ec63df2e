//! What the protocol refuses at the frame, flags and envelope layers (PROTOCOL.md §1, §2.1, §3,
//! §13.2, §18), one behaviour per test. Every decode error is also checked for the `core.error`
//! kind a peer answers it with. Payload-level rules are in `rejections_payload.rs`, lenient
//! acceptance in `acceptance.rs`.

mod support;

use moat_protocol::cbor::CborError;
use moat_protocol::envelope::EnvelopeError;
use moat_protocol::error::EncodeError;
use moat_protocol::limits::{
    LEN_PREFIX_BYTES, MAX_EXEC_CONTROL_FRAME_BYTES, MAX_FRAME_BYTES, MAX_WIRE_FRAME_BYTES,
};
use moat_protocol::message::UnknownMessage;
use moat_protocol::payload::core::{CoreErrorKind, Ready};
use moat_protocol::payload::exec::{Consumed, Data, ExecResize, ExecSignal};
use moat_protocol::records::{LeaseEvent, LeaseRecordError};
use moat_protocol::relay::{IdAllocator, IdRange, Prologue, PrologueError, PrologueKind, Slot};
use moat_protocol::{
    DecodeError, Decoded, Flags, FrameDecoder, FrameError, Message, MessageFrame, MessageType,
    Negotiated, RawFrame, decode_frame,
};

use support::{NULL, bstr, decode, envelope, malformed, obj, sample_wire, text, uint, wire};

/// Pushes `bytes` in one piece and takes the first frame out.
fn first_frame(bytes: &[u8]) -> (FrameDecoder, Result<Option<RawFrame>, FrameError>) {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    let first = decoder.next_frame();
    (decoder, first)
}

fn prefix(len: u32) -> Vec<u8> {
    len.to_be_bytes().to_vec()
}

// §1.1 framing.

#[test]
fn len_below_header_is_rejected_as_too_short() {
    for len in 0..5u32 {
        let bytes = [prefix(len), vec![0; 16]].concat();
        assert_eq!(first_frame(&bytes).1, Err(FrameError::TooShort { len }), "len {len}");
    }
}

#[test]
fn len_of_exactly_the_header_frames_an_empty_body() {
    let (_, first) = first_frame(&wire(9, 0x01, &[]));
    let frame = first.expect("frames").expect("a whole frame");
    assert_eq!((frame.id, frame.flags, frame.body.len()), (9, Flags::TERMINAL, 0));
}

#[test]
fn empty_body_is_a_malformed_envelope() {
    assert!(matches!(malformed(1, 0x00, &[]), DecodeError::Envelope(EnvelopeError::Cbor(_))));
}

#[test]
fn len_above_4_mib_is_rejected_as_too_large() {
    let len = MAX_FRAME_BYTES as u32 + 1;
    let bytes = [prefix(len), vec![0; 16]].concat();
    assert_eq!(first_frame(&bytes).1, Err(FrameError::TooLarge { len }));
}

#[test]
fn len_of_exactly_4_mib_is_accepted() {
    let bytes = wire(3, 0x00, &vec![0xa0; MAX_FRAME_BYTES - 5]);
    assert_eq!(bytes.len(), MAX_WIRE_FRAME_BYTES);
    let (decoder, first) = first_frame(&bytes);
    assert_eq!(first.expect("frames").expect("a whole frame").body.len(), MAX_FRAME_BYTES - 5);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn four_gib_len_is_rejected_without_buffering() {
    let bytes = [prefix(u32::MAX), vec![0; 64]].concat();
    let (mut decoder, first) = first_frame(&bytes);
    assert_eq!(first, Err(FrameError::TooLarge { len: u32::MAX }));
    assert_eq!(decoder.buffered(), 0);
    // A failed decoder drops further input rather than buffering it.
    decoder.push(&[0; 4096]);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn framing_error_is_sticky_for_the_rest_of_the_stream() {
    let mut decoder = FrameDecoder::new();
    decoder.push(&prefix(2));
    assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { len: 2 }));
    decoder.push(&sample_wire(MessageType::Ping));
    assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { len: 2 }));
    assert_eq!(decoder.finish(), Err(FrameError::TooShort { len: 2 }));
}

#[test]
fn truncated_frame_at_end_of_stream_is_reported_by_finish() {
    let bytes = sample_wire(MessageType::Ping);
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes[..bytes.len() - 1]);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(
        decoder.finish(),
        Err(FrameError::Truncated { buffered: bytes.len() - 1, needed: bytes.len() })
    );
}

#[test]
fn partial_length_prefix_at_end_of_stream_is_reported_by_finish() {
    for cut in 1..LEN_PREFIX_BYTES {
        let mut decoder = FrameDecoder::new();
        decoder.push(&sample_wire(MessageType::Ping)[..cut]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: cut, needed: 4 }));
    }
}

#[test]
fn stream_ending_between_frames_finishes_cleanly() {
    let (decoder, first) = first_frame(&sample_wire(MessageType::Pong));
    assert!(first.expect("frames").is_some());
    assert_eq!(decoder.finish(), Ok(()));
}

// §1.2 flags.

#[test]
fn reserved_flag_bits_are_not_wire_valid() {
    for bits in (0..=255u8).filter(|b| b & 0xf0 != 0) {
        assert!(!Flags::from_bits(bits).is_wire_valid(), "{bits:#04x}");
    }
}

#[test]
fn reserved_flag_bit_on_a_known_type_is_invalid_flags() {
    let body = envelope(10, "core.ping", &[0xa0]);
    let err = decode(1, 0x10, &body).expect_err("reserved bit");
    assert!(matches!(err, DecodeError::InvalidFlags { got, .. } if got.bits() == 0x10));
    assert_eq!(err.core_error_kind(), CoreErrorKind::InvalidFlags);
}

#[test]
fn bulk_flag_combined_with_another_flag_is_neither_bulk_nor_wire_valid() {
    for bits in [0x09u8, 0x0a, 0x0c, 0x0f, 0x18, 0x88] {
        let flags = Flags::from_bits(bits);
        assert!(!flags.is_bulk() && !flags.is_wire_valid(), "{bits:#04x}");
    }
}

#[test]
fn bulk_record_body_under_combined_flags_is_not_decoded_as_a_bulk_record() {
    // A valid raw record body (fs, guest→host, offset 0, "hi"), but flags 0x09.
    let body = [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'h', b'i'];
    assert!(matches!(malformed(6, 0x09, &body), DecodeError::Envelope(_)));
}

#[test]
fn cbor_envelope_under_the_bulk_flag_is_a_malformed_bulk_record() {
    let err = malformed(1, 0x08, &envelope(10, "core.ping", &[0xa0]));
    assert!(matches!(err, DecodeError::Bulk(_)), "{err:?}");
}

#[test]
fn wrong_flags_on_every_type_is_invalid_flags_with_the_reference_message() {
    for t in MessageType::ALL {
        let mut bytes = sample_wire(t);
        let expected = t.flags().bits();
        assert_eq!(bytes[8], expected, "{t}: the sample carries its own flags");
        assert!(decode_wire(&bytes).is_ok(), "{t}: the sample decodes with its own flags");
        // 0x08 is left out: it makes the body a raw bulk record (see the bulk-flag tests).
        for got in (0..=255u8).filter(|b| *b != expected && *b != 0x08) {
            bytes[8] = got;
            let err = decode_wire(&bytes).expect_err("wrong flags");
            let DecodeError::InvalidFlags { message_type, got: g, expected: e } = err else {
                panic!("{t} with {got:#04x}: {err:?}");
            };
            assert_eq!((message_type, g.bits(), e.bits()), (t, got, expected));
            assert_eq!(err.core_error_kind(), CoreErrorKind::InvalidFlags);
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid flags for {}: got 0x{got:02x}, expected 0x{expected:02x}",
                    t.wire_name()
                )
            );
            assert_eq!(err.core_error().offending_type.as_deref(), Some(t.wire_name()));
        }
    }
}

fn decode_wire(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let (_, first) = first_frame(bytes);
    decode_frame(&first.expect("frames").expect("a whole frame"))
}

// §1.3 records sharing the stream.

fn lease_body(format: u8, event: u8) -> Vec<u8> {
    let mut body = b"MSBL".to_vec();
    body.extend_from_slice(&[format, event, 0, 0, 0, 0, 0, 1, 0x01, 0xff, 0xff, 0xff]);
    body.extend_from_slice(&[0xab; 16]);
    body
}

#[test]
fn id_0_flags_0_body_starting_msbl_decodes_as_a_lease_record() {
    let Ok(Decoded::Lease(record)) = decode(0, 0, &lease_body(1, 2)) else {
        panic!("not a lease record");
    };
    assert_eq!(record.event, LeaseEvent::DisconnectedAck);
}

#[test]
fn id_0_flags_0_body_starting_msbs_decodes_as_local_transport() {
    let body = [b'M', b'S', b'B', b'S', 1, 1];
    assert_eq!(decode(0, 0, &body).ok(), Some(Decoded::LocalTransport(body[..].to_vec().into())));
}

#[test]
fn malformed_lease_record_is_malformed_message() {
    let err = malformed(0, 0, &lease_body(2, 1));
    assert!(matches!(err, DecodeError::Lease(LeaseRecordError::Format(2))), "{err:?}");
    let err = malformed(0, 0, &lease_body(1, 1)[..31]);
    assert!(matches!(err, DecodeError::Lease(LeaseRecordError::Shape { len: 31 })), "{err:?}");
}

#[test]
fn record_magic_counts_only_on_id_0_with_flags_0() {
    for body in [lease_body(1, 1), b"MSBS\x01\x01".to_vec()] {
        assert!(matches!(malformed(1, 0x00, &body), DecodeError::Envelope(_)));
        assert!(matches!(malformed(0, 0x01, &body), DecodeError::Envelope(_)));
    }
}

// §2.1 the envelope.

#[test]
fn envelope_without_v_is_malformed() {
    let body = obj(&[("t", text("core.ping")), ("p", bstr(&[0xa0]))]);
    assert!(matches!(
        malformed(1, 0, &body),
        DecodeError::Envelope(EnvelopeError::MissingKey("v"))
    ));
}

#[test]
fn envelope_without_t_is_malformed() {
    let body = obj(&[("v", uint(10)), ("p", bstr(&[0xa0]))]);
    assert!(matches!(
        malformed(1, 0, &body),
        DecodeError::Envelope(EnvelopeError::MissingKey("t"))
    ));
}

#[test]
fn envelope_without_p_is_malformed() {
    let body = obj(&[("v", uint(10)), ("t", text("core.ping"))]);
    assert!(matches!(
        malformed(1, 0, &body),
        DecodeError::Envelope(EnvelopeError::MissingKey("p"))
    ));
}

#[test]
fn envelope_with_a_repeated_key_is_malformed() {
    let fields = [("v", uint(10)), ("t", text("core.ping")), ("p", bstr(&[0xa0]))];
    for (key, value) in &fields {
        let mut entries = fields.to_vec();
        entries.push((key, value.clone()));
        let err = malformed(1, 0, &obj(&entries));
        assert!(
            matches!(err, DecodeError::Envelope(EnvelopeError::DuplicateKey(k)) if k == *key),
            "{key}: {err:?}"
        );
    }
}

#[test]
fn generation_above_255_is_malformed() {
    let err = malformed(1, 0, &envelope(256, "core.ping", &[0xa0]));
    assert!(matches!(err, DecodeError::Envelope(EnvelopeError::GenerationOutOfRange(256))));
}

#[test]
fn generation_255_is_accepted() {
    let Ok(Decoded::Message(frame)) = decode(1, 0, &envelope(255, "core.ping", &[0xa0])) else {
        panic!("v = 255 must decode");
    };
    assert_eq!(frame.v, 255);
}

#[test]
fn negative_generation_is_malformed() {
    let body = obj(&[("v", vec![0x20]), ("t", text("core.ping")), ("p", bstr(&[0xa0]))]);
    malformed(1, 0, &body);
}

#[test]
fn payload_given_as_a_text_string_is_malformed() {
    let body = obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", text("\u{a0}"))]);
    assert!(matches!(malformed(1, 0, &body), DecodeError::Envelope(EnvelopeError::Cbor(_))));
}

#[test]
fn payload_array_holding_a_value_above_255_is_malformed() {
    let body = obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", vec![0x81, 0x19, 1, 0])]);
    malformed(1, 0, &body);
}

#[test]
fn type_name_given_as_a_byte_string_is_malformed() {
    let body = obj(&[("v", uint(10)), ("t", bstr(b"core.ping")), ("p", bstr(&[0xa0]))]);
    malformed(1, 0, &body);
}

#[test]
fn body_that_is_not_a_map_is_malformed() {
    malformed(1, 0, &[0x83, 0x0a, 0x60, 0x40]);
}

#[test]
fn trailing_bytes_after_the_envelope_are_malformed() {
    let body = [envelope(10, "core.ping", &[0xa0]), vec![NULL]].concat();
    let err = malformed(1, 0, &body);
    assert!(matches!(
        err,
        DecodeError::Envelope(EnvelopeError::Cbor(CborError::TrailingBytes { extra: 1 }))
    ));
}

/// An envelope with an extra key whose value is `arrays` nested arrays around a 0.
fn nested_envelope(arrays: usize) -> Vec<u8> {
    let deep = [vec![0x81; arrays], vec![0x00]].concat();
    obj(&[("v", uint(10)), ("t", text("core.ping")), ("p", bstr(&[0xa0])), ("x", deep)])
}

#[test]
fn envelope_nested_deeper_than_256_is_malformed() {
    // The envelope map is one level, so 256 arrays inside it make 257.
    let err = malformed(1, 0, &nested_envelope(256));
    assert!(matches!(err, DecodeError::Envelope(EnvelopeError::Cbor(CborError::TooDeep))));
}

#[test]
fn envelope_nested_exactly_256_deep_is_accepted() {
    assert!(matches!(decode(1, 0, &nested_envelope(255)), Ok(Decoded::Message(_))));
}

#[test]
fn unknown_type_decodes_as_unknown_not_as_an_error() {
    // The payload is not even CBOR: an unknown type's payload is kept verbatim, unread.
    let body = envelope(10, "core.exec.teleport", &[0xff, 0x00]);
    let Ok(Decoded::Message(frame)) = decode(5, 0x02, &body) else {
        panic!("unknown types decode");
    };
    assert_eq!(
        frame,
        MessageFrame {
            id: 5,
            v: 10,
            message: Message::Unknown(UnknownMessage {
                t: "core.exec.teleport".into(),
                flags: Flags::SESSION_START,
                payload: vec![0xff, 0x00],
            }),
        }
    );
}

// §3 generations.

#[test]
fn introduction_generations_match_the_protocol_table() {
    let table: [(u8, &[&str]); 9] = [
        (
            1,
            &[
                "core.ready",
                "core.init.resolved",
                "core.init.ack",
                "core.shutdown",
                "core.relay.client.disconnected",
                "core.clock.sync",
                "core.exec.request",
                "core.exec.started",
                "core.exec.stdin",
                "core.exec.stdin.error",
                "core.exec.stdout",
                "core.exec.stderr",
                "core.exec.exited",
                "core.exec.failed",
                "core.exec.resize",
                "core.exec.signal",
            ],
        ),
        (2, &["core.fs.request", "core.fs.response", "core.fs.data"]),
        (
            4,
            &[
                "core.tcp.connect",
                "core.tcp.connected",
                "core.tcp.data",
                "core.tcp.eof",
                "core.tcp.close",
                "core.tcp.closed",
                "core.tcp.failed",
            ],
        ),
        (5, &["core.error"]),
        (6, &["core.ping", "core.pong", "core.touch", "core.touched"]),
        (7, &["core.bootstrap"]),
        (8, &["core.bulk.accepted", "core.bulk.credit", "core.bulk.finish", "core.bulk.cancel"]),
        (
            9,
            &[
                "core.workload.freeze",
                "core.workload.frozen",
                "core.workload.thaw",
                "core.workload.thawed",
                "core.workload.transport.credit",
                "core.root_disk.prepare",
                "core.root_disk.grow",
                "core.root_disk.state",
            ],
        ),
        (10, &["core.exec.output.ack", "core.exec.stdin.ack"]),
    ];
    let mut listed = 0;
    for (generation, names) in table {
        for name in names {
            let t = MessageType::from_wire_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(t.introduced_in(), generation, "{name}");
            listed += 1;
        }
    }
    assert_eq!(listed, MessageType::ALL.len());
}

#[test]
fn negotiated_generation_is_the_minimum_of_both_sides() {
    assert_eq!(Negotiated::new(10, 7).get(), 7);
    assert_eq!(Negotiated::new(1, 10).get(), 1);
    assert_eq!(Negotiated::new(10, 10).get(), 10);
}

#[test]
fn gate_refuses_exactly_the_types_newer_than_the_negotiated_generation() {
    for generation in 0..=10u8 {
        let negotiated = Negotiated::new(10, generation);
        for t in MessageType::ALL {
            match negotiated.permits(t) {
                Ok(()) => assert!(t.introduced_in() <= generation, "{t} at {generation}"),
                Err(err) => {
                    assert!(t.introduced_in() > generation, "{t} at {generation}");
                    assert_eq!((err.message_type, err.negotiated), (t, generation));
                    assert_eq!(err.introduced_in, t.introduced_in());
                    assert!(err.to_string().starts_with("unsupported operation"), "{err}");
                }
            }
        }
    }
}

// §13.2 relay prologue.

fn words(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out[4..].copy_from_slice(&b.to_be_bytes());
    out
}

#[test]
fn prologue_with_zero_offset_and_a_frame_length_second_word_is_legacy() {
    for b in [5, 0x46, MAX_FRAME_BYTES as u32] {
        assert_eq!(
            Prologue::parse(words(0, b)),
            Ok(PrologueKind::Legacy { offset: 0, ready_len: b })
        );
    }
}

#[test]
fn prologue_with_offset_at_least_the_frame_length_is_legacy() {
    for (a, b) in [(5, 5), (0x47, 0x46), (u32::MAX, MAX_FRAME_BYTES as u32)] {
        assert_eq!(
            Prologue::parse(words(a, b)),
            Ok(PrologueKind::Legacy { offset: a, ready_len: b })
        );
    }
}

#[test]
fn prologue_whose_second_word_is_no_frame_length_is_current() {
    for (a, b) in [(0, 4), (0, MAX_FRAME_BYTES as u32 + 1), (1, 33_554_431), (3, 4)] {
        let range = IdRange { start: a, end_exclusive: b };
        assert_eq!(Prologue::parse(words(a, b)), Ok(PrologueKind::Current(range)), "{a} {b}");
    }
}

#[test]
fn prologue_with_nonzero_offset_below_a_frame_length_is_current() {
    let range = IdRange { start: 1, end_exclusive: 0x46 };
    assert_eq!(Prologue::parse(words(1, 0x46)), Ok(PrologueKind::Current(range)));
}

#[test]
fn prologue_with_an_empty_range_is_rejected() {
    for (a, b) in [(0x0200_0000, 0x0100_0000), (u32::MAX, u32::MAX), (4, 4)] {
        assert_eq!(
            Prologue::parse(words(a, b)),
            Err(PrologueError::EmptyRange { start: a, end_exclusive: b }),
            "{a} {b}"
        );
    }
}

#[test]
fn legacy_prologue_second_word_is_the_ready_frames_own_length_prefix() {
    let ready = MessageFrame { id: 0, v: 1, message: Message::Ready(Ready::default()) };
    let stream = [vec![0, 0, 0, 0], ready.to_bytes().expect("encodes")].concat();
    let kind = Prologue::parse(stream[..8].try_into().expect("8 bytes"));
    let ready_len = u32::from_be_bytes(stream[4..8].try_into().expect("4 bytes"));
    assert_eq!(kind, Ok(PrologueKind::Legacy { offset: 0, ready_len }));
    // The frame starts right after the 4-byte offset.
    assert_eq!(decode_wire(&stream[4..]).ok(), Some(Decoded::Message(ready)));
}

// §18.4 ids and §18.8 the emitted generation.

#[test]
fn ids_are_allocated_upwards_from_max_start_1_and_never_leave_the_range() {
    let mut from_zero = IdAllocator::new(IdRange { start: 0, end_exclusive: 4 });
    let ids: Vec<_> = std::iter::from_fn(|| from_zero.next_id()).collect();
    assert_eq!(ids, [1, 2, 3]);
    let range = Slot::new(127).expect("slot 127").range();
    let mut allocator = IdAllocator::new(range);
    assert_eq!(allocator.next_id(), Some(range.start));
    let mut last = IdAllocator::new(IdRange { start: u32::MAX - 1, end_exclusive: u32::MAX });
    assert_eq!((last.next_id(), last.next_id()), (Some(u32::MAX - 1), None));
}

#[test]
fn new_frames_are_written_with_generation_10() {
    let bytes = MessageFrame::new(1, Message::Ping).to_bytes().expect("encodes");
    assert_eq!(&bytes[9..13], &[0xa3, 0x61, b'v', 0x0a]);
}

// Encoder limits: 4 MiB frames (§1.1), 4 KiB exec-control frames (§8.3).

/// A verbatim frame named `t` (under 24 bytes) whose complete wire length is `wire_len`
/// (at least 300): `[len][id][flags]` is 9 bytes, the envelope around the payload is
/// `a3 6176 0a 6174 <head 1><t> 6170 <head 3>`, 12 bytes plus the name.
fn verbatim_of_wire_len(t: &str, wire_len: usize) -> MessageFrame {
    let payload_len = wire_len - 9 - 12 - t.len();
    MessageFrame::new(1, verbatim(t, vec![0xa0; payload_len]))
}

fn verbatim(t: &str, payload: Vec<u8>) -> Message {
    Message::Unknown(UnknownMessage { t: t.into(), flags: Flags::NONE, payload })
}

#[test]
fn exec_control_frame_over_4_kib_is_refused_by_the_encoder() {
    for t in MessageType::ALL.into_iter().filter(|t| t.is_exec_control()) {
        let over = verbatim_of_wire_len(t.wire_name(), MAX_EXEC_CONTROL_FRAME_BYTES + 1);
        let mut out = vec![1, 2, 3];
        let err = over.encode(&mut out).expect_err("over 4 KiB");
        assert!(matches!(err, EncodeError::ExecControlTooLarge { len: 4097 }), "{t}: {err:?}");
        assert_eq!(out, [1, 2, 3], "{t}: a refused frame leaves the buffer as it was");
        let at = verbatim_of_wire_len(t.wire_name(), MAX_EXEC_CONTROL_FRAME_BYTES);
        assert_eq!(at.to_bytes().expect("exactly 4 KiB is allowed").len(), 4096, "{t}");
    }
}

#[test]
fn other_frames_over_4_kib_are_not_held_to_the_exec_control_cap() {
    let stdin = MessageFrame::new(1, Message::ExecStdin(Data::new(vec![0; 8192])));
    assert!(stdin.to_bytes().is_ok());
    assert!(verbatim_of_wire_len("core.exec.stdin", 8192).to_bytes().is_ok());
}

#[test]
fn typed_exec_control_frames_at_their_largest_fit_the_4_kib_cap() {
    let largest = [
        Message::ExecSignal(ExecSignal { signal: i32::MIN }),
        Message::ExecResize(ExecResize { rows: u16::MAX, cols: u16::MAX }),
        Message::ExecOutputAck(Consumed { consumed: u64::MAX }),
        Message::ExecStdinAck(Consumed { consumed: u64::MAX }),
    ];
    for message in largest {
        let frame = MessageFrame { id: u32::MAX, v: u8::MAX, message };
        let len = frame.to_bytes().expect("encodes").len();
        assert!(len <= MAX_EXEC_CONTROL_FRAME_BYTES, "{len}");
    }
}

#[test]
fn frame_over_4_mib_is_refused_by_the_encoder() {
    let frame = MessageFrame::new(1, Message::ExecStdout(Data::new(vec![0; MAX_FRAME_BYTES])));
    let mut out = vec![9];
    let err = frame.encode(&mut out).expect_err("over 4 MiB");
    assert!(matches!(err, EncodeError::FrameTooLarge { len } if len > MAX_FRAME_BYTES), "{err:?}");
    assert_eq!(out, [9]);
}

#[test]
fn serde_encoded_frame_over_4_mib_is_refused_by_the_encoder() {
    let failed = moat_protocol::payload::tcp::TcpFailed { error: "e".repeat(MAX_FRAME_BYTES) };
    let err = MessageFrame::new(1, Message::TcpFailed(failed)).to_bytes().expect_err("over");
    assert!(matches!(err, EncodeError::FrameTooLarge { .. }), "{err:?}");
}

#[test]
fn hand_built_frames_are_the_encoders_bytes() {
    // Guards the inputs above: where they are valid, the hand-built bytes are exactly what the
    // encoder writes, so a refusal is down to the one thing each test changes.
    let encoded = MessageFrame::new(1, Message::Ping).to_bytes().expect("encodes");
    assert_eq!(wire(1, 0, &envelope(10, "core.ping", &[0xa0])), encoded);
}
