//! The committed seed corpora in `fuzz/seeds/<target>/`, generated from the golden vectors and a
//! few hand-written lines, so they can be regenerated when the vectors change:
//!
//! ```text
//!  cargo run --manifest-path fuzz/targets/Cargo.toml --bin gen-seeds
//! ```
//!
//! Generated seeds are named `gen-<nnn>-<what>`; the generator replaces exactly those and leaves
//! every other file of a seed folder alone (minimized crash inputs are kept there, named
//! `regression-<what>`). The replay test checks that the committed `gen-*` files are what this
//! module generates.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use moat_protocol::exec_log::{ExecLogRecord, LogSource};
use moat_protocol::limits::MAX_FRAME_BYTES;
use moat_protocol::payload::exec::ExecRequest;
use moat_protocol::vectors::{self, VectorBody};
use moat_protocol::{
    Decoded, Flags, Message, MessageFrame, RawFrame, UnknownMessage, decode_frame,
};

use crate::frame_split::plan_step;
use crate::relay_router::ops;
use crate::{frame_split, message_decode};

/// The golden vectors the seeds are made from.
pub const REFERENCE_VECTORS: &str =
    include_str!("../../../conformance/vectors/reference-0.7.13.txt");

/// File-name prefix of every generated seed.
pub const GENERATED_PREFIX: &str = "gen-";

/// One seed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target it seeds.
    pub target: &'static str,
    /// Its file name in `fuzz/seeds/<target>/`.
    pub name: String,
    /// The input bytes.
    pub bytes: Vec<u8>,
}

/// `fuzz/`, the fuzz workspace this crate is a member of.
pub fn fuzz_dir() -> PathBuf {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR"));
    targets.parent().expect("fuzz/targets/ lies inside fuzz/").to_path_buf()
}

/// `fuzz/seeds/`, where the committed seeds live.
pub fn seeds_dir() -> PathBuf {
    fuzz_dir().join("seeds")
}

/// `fuzz/corpus/`, where local (gitignored) corpora live.
pub fn corpus_dir() -> PathBuf {
    fuzz_dir().join("corpus")
}

/// Every generated seed of every target.
pub fn generate() -> Vec<Seed> {
    let frames = reference_frames();
    let mut seeds = Vec::new();
    seeds.extend(frame_split_seeds(&frames));
    seeds.extend(message_decode_seeds(&frames));
    seeds.extend(roundtrip_seeds(&frames));
    seeds.extend(exec_log_line_seeds());
    seeds.extend(vector_text_seeds());
    seeds.extend(relay_router_seeds());
    seeds.extend(exec_log_reader_seeds());
    seeds.extend(agentd_dispatch_seeds(&frames));
    seeds.extend(layer_unpack_seeds());
    seeds
}

fn layer_unpack_seeds() -> Vec<Seed> {
    let mut set = SeedSet::new("layer_unpack");
    for (what, blob) in crate::layer_unpack::seeds() {
        set.add(what, blob);
    }
    set.seeds
}

/// A framed record of the vector file.
struct VectorFrame {
    name: String,
    frame: Vec<u8>,
    payload: Option<Vec<u8>>,
}

impl VectorFrame {
    fn raw(&self) -> RawFrame {
        let (id, flags, body) =
            crate::split_header(&self.frame[4..]).expect("a vector frame has a header");
        RawFrame { id, flags, body: Bytes::copy_from_slice(body) }
    }
}

fn reference_frames() -> Vec<VectorFrame> {
    let records = vectors::parse(REFERENCE_VECTORS).expect("the reference vectors parse");
    records
        .into_iter()
        .filter_map(|record| match record.body {
            VectorBody::Frame { frame, payload, .. } if frame.len() > 4 => {
                Some(VectorFrame { name: record.name, frame, payload })
            }
            _ => None,
        })
        .collect()
}

/// Numbers and names the seeds of one target.
struct SeedSet {
    target: &'static str,
    seeds: Vec<Seed>,
}

impl SeedSet {
    fn new(target: &'static str) -> SeedSet {
        SeedSet { target, seeds: Vec::new() }
    }

    fn add(&mut self, what: &str, bytes: Vec<u8>) {
        let name = format!("{GENERATED_PREFIX}{:03}-{}", self.seeds.len(), slug(what));
        self.seeds.push(Seed { target: self.target, name, bytes });
    }
}

/// `exec.request tty+rlimit` → `exec-request-tty-rlimit`.
fn slug(what: &str) -> String {
    let mut out = String::new();
    for c in what.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(48).collect()
}

fn frame_split_seeds(frames: &[VectorFrame]) -> Vec<Seed> {
    let mut set = SeedSet::new("frame_split");
    let all: Vec<u8> = frames.iter().flat_map(|f| f.frame.iter().copied()).collect();
    set.add("all frames one push", frame_split::join_input(&[], &all));
    set.add("all frames byte at a time", frame_split::join_input(&[plan_step(1, false)], &all));
    let mixed =
        [plan_step(5, false), plan_step(17, true), plan_step(0, false), plan_step(127, false)];
    set.add("all frames mixed plan", frame_split::join_input(&mixed, &all));
    for (i, pair) in frames.windows(2).enumerate() {
        let chunk = (i * 37 % 127 + 1) as u8;
        let stream = [&pair[0].frame[..], &pair[1].frame[..]].concat();
        let plan = [plan_step(chunk, i % 3 == 0)];
        set.add(
            &format!("{} then {}", pair[0].name, pair[1].name),
            frame_split::join_input(&plan, &stream),
        );
    }
    let ping = &frames.iter().find(|f| f.name == "ping").expect("the vectors have a ping").frame;
    let plan = [plan_step(3, false)];
    let over_limit = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
    let max_len = (MAX_FRAME_BYTES as u32).to_be_bytes();
    for (what, tail) in [
        ("ping then too short length", &[0, 0, 0, 4, 0, 0, 0, 0][..]),
        ("ping then 4 gib length", &[0xff; 4][..]),
        ("ping then over limit length", &over_limit[..]),
        (
            "ping then maximum length incomplete",
            &[max_len[0], max_len[1], max_len[2], max_len[3], 0, 0, 0, 1, 0][..],
        ),
        ("ping then partial prefix", &[0, 0][..]),
    ] {
        set.add(what, frame_split::join_input(&plan, &[ping, tail].concat()));
    }
    set.add("truncated ping", frame_split::join_input(&plan, &ping[..ping.len() - 1]));
    set.seeds
}

fn message_decode_seeds(frames: &[VectorFrame]) -> Vec<Seed> {
    let mut set = SeedSet::new("message_decode");
    for f in frames {
        let raw = f.raw();
        let selector = match decode_frame(&raw) {
            Ok(Decoded::Message(m)) => {
                m.message.message_type().map_or(0, message_decode::selector_of)
            }
            _ => 0,
        };
        set.add(&format!("{} frame", f.name), message_decode::join_input(selector, &raw));
        if let Some(payload) = &f.payload {
            let raw = RawFrame { body: Bytes::copy_from_slice(payload), ..raw };
            set.add(&format!("{} payload", f.name), message_decode::join_input(selector, &raw));
        }
    }
    set.seeds
}

fn roundtrip_seeds(frames: &[VectorFrame]) -> Vec<Seed> {
    let mut set = SeedSet::new("roundtrip");
    for f in frames {
        set.add(&f.name, f.frame[4..].to_vec());
    }
    let unknown = UnknownMessage {
        t: "core.future".into(),
        flags: Flags::from_bits(0x30),
        payload: vec![0xa0],
    };
    let wire = MessageFrame::new(9, Message::Unknown(unknown)).to_bytes().expect("encodes");
    set.add("unknown type", wire[4..].to_vec());
    set.add(
        "local transport msbs",
        crate::join_header(0, Flags::NONE, b"MSBS\x01\x00\x00\x00opaque"),
    );
    // {_ "p": [160], "t": "core.ping", "v": 10}: reordered keys, indefinite map, array payload.
    let mut lenient = vec![0xbf, 0x61, b'p', 0x81, 0x18, 0xa0, 0x61, b't', 0x69];
    lenient.extend_from_slice(b"core.ping");
    lenient.extend_from_slice(&[0x61, b'v', 0x0a, 0xff]);
    set.add("ping lenient envelope", crate::join_header(1, Flags::NONE, &lenient));
    set.seeds
}

fn exec_log_line_seeds() -> Vec<Seed> {
    let mut set = SeedSet::new("exec_log_line");
    let at = |millis| UNIX_EPOCH + Duration::from_millis(millis);
    let lines = [
        r#"{"t":"2026-04-30T20:32:59.688Z","s":"stdout","d":"hello\n","id":7}"#.to_owned(),
        ExecLogRecord::output(at(1_777_581_179_701), LogSource::Stderr, 7, b"warning: low disk\n")
            .to_line(),
        ExecLogRecord::output(
            at(1_777_581_180_002),
            LogSource::Output,
            8,
            b"\x1b[1mtty\x1b[0m\r\n",
        )
        .to_line(),
        ExecLogRecord::output(at(1_777_581_180_003), LogSource::Stdout, 9, b"\xff\xfe not utf-8")
            .to_line(),
        ExecLogRecord::system(at(1_777_581_178_000), "--- sandbox started ---\n").to_line(),
        r#"{"t":"2026-04-30T20:33:01.500Z","s":"stdout","d":"/w==","id":9,"e":"b64"}"#.to_owned(),
        r#"{"id":null,"d":"","s":"system","t":"1970-01-01T00:00:00.000Z"}"#.to_owned() + "\r\n",
    ];
    for line in lines {
        let what =
            line.split("\"s\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("line");
        set.add(what, line.as_bytes().to_vec());
    }
    set.seeds
}

fn vector_text_seeds() -> Vec<Seed> {
    let mut set = SeedSet::new("vector_text");
    let mut block = String::new();
    let mut what = "header".to_owned();
    for line in REFERENCE_VECTORS.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            set.add(&what, std::mem::take(&mut block).into_bytes());
            what = name.split(':').next().unwrap_or(name).to_owned();
        }
        block.push_str(line);
        block.push('\n');
    }
    set.add(&what, block.into_bytes());
    for (what, text) in [
        ("odd hex", "### ping\n frame: 0\n"),
        ("slot out of range", "slot 200: Some((1, 2))\n"),
        ("wrong range step", "RANGE_STEP=7\n"),
        ("decodes as without record", "decodes as Ready: 3\n"),
        ("unknown header field", "### x\n type=core.ping id=1 flags=0 color=red\n"),
    ] {
        set.add(what, text.as_bytes().to_vec());
    }
    set.seeds
}

fn relay_router_seeds() -> Vec<Seed> {
    let mut set = SeedSet::new("relay_router");
    let body = |message| crate::relay_router::raw(&MessageFrame::new(1, message)).body.to_vec();
    let exec_request = body(Message::ExecRequest(ExecRequest::new("sh")));
    let ping = body(Message::Ping);
    let scripts: [(&str, Vec<Vec<u8>>); 8] = [
        (
            "two clients exec and ping",
            vec![
                ops::connect(),
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::send_valid(1, 1, 3),
                ops::guest(0, 0),
                ops::guest(0, 1),
                ops::wrote(0, 7),
                ops::guest(0, 4),
            ],
        ),
        (
            "orphaned exec holds its slot until exited",
            vec![
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::send_valid(0, 2, 0),
                ops::disconnect(0),
                ops::connect(),
                ops::release(0),
                ops::guest(0, 0),
                ops::guest(0, 4),
                ops::connect(),
                ops::guest(4, 4),
                ops::connect(),
            ],
        ),
        (
            "orphaned exec drain deadline",
            vec![
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::disconnect(0),
                ops::release(0),
                ops::tick(1_000),
                ops::connect(),
                ops::tick(9_999),
                ops::tick(1),
                ops::connect(),
                ops::guest(0, 0),
                ops::guest(0, 4),
            ],
        ),
        (
            "every rule breaker among bystanders",
            (0u8..14)
                .flat_map(|kind| [ops::connect(), ops::connect(), ops::send_invalid(1, kind)])
                .chain([ops::guest(1, 0), ops::disconnect(1), ops::release(0)])
                .collect(),
        ),
        (
            "raw frames",
            vec![
                ops::connect(),
                ops::send_raw(0, 1, 0x02, &exec_request),
                ops::send_raw(0, 2, 0x00, &ping),
                ops::send_raw(0, 0, 0x04, b""),
                ops::send_raw(0, 3, 0x08, b"bulk"),
                ops::send_raw(0, 4, 0x06, b""),
                ops::send_raw(0, 33_554_432, 0x00, b"\xa0"),
            ],
        ),
        (
            "slow client overflow and stall",
            vec![
                ops::connect(),
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::flood(0, 0xf8),
                ops::guest(5, 0),
                ops::tick(5_000),
                ops::wrote(1, 3),
                ops::tick(5_000),
            ],
        ),
        (
            "closing clients and failures",
            vec![
                ops::connect(),
                ops::connect(),
                ops::connect(),
                ops::write_failed(0),
                ops::stream_error(1),
                ops::send_valid(0, 0, 3),
                ops::guest(1, 0),
                ops::disconnect(0),
                ops::disconnect(0),
                ops::release(1),
                ops::release(0),
            ],
        ),
        (
            "guest ids outside every slot and bad flags",
            vec![
                ops::connect(),
                ops::guest(2, 0),
                ops::guest(6, 1),
                ops::guest(10, 3),
                ops::guest(14, 4),
                ops::guest(1, 0x0b),
                ops::connect(),
            ],
        ),
    ];
    for (what, script) in scripts {
        set.add(what, script.concat());
    }
    // Generation-10 rules (the model's agent allows 8 execs, 64 bytes of stdin and 2048 of
    // output charge): admission, each breach, and the barrier ending abandoned execs.
    let admission: Vec<Vec<u8>> = std::iter::once(ops::connect())
        .chain((0..8).map(|n| ops::send_valid(0, 2 * n, 0)))
        .chain([ops::send_valid(0, 9, 0), ops::wrote(0, 7)])
        .collect();
    let stdin_window: Vec<Vec<u8>> = [ops::connect(), ops::send_valid(0, 0, 0), ops::guest(0, 3)]
        .into_iter()
        .chain((0..22).map(|_| ops::send_valid(0, 0, 1)))
        .collect();
    let output_window: Vec<Vec<u8>> = [ops::connect(), ops::send_valid(0, 0, 0)]
        .into_iter()
        .chain((0..8).map(|_| ops::guest(0, 0)))
        .collect();
    let v10: [(&str, Vec<Vec<u8>>); 6] = [
        ("admission past max_executions", admission),
        (
            "stdin before started",
            vec![ops::connect(), ops::send_valid(0, 0, 0), ops::send_valid(0, 0, 1)],
        ),
        ("stdin past the window", stdin_window),
        ("output past the window", output_window),
        (
            "exec id reused",
            vec![ops::connect(), ops::send_valid(0, 0, 0), ops::send_valid(0, 0, 0)],
        ),
        (
            "abandoned execs end at the barrier",
            vec![
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::guest(0, 0),
                ops::disconnect(0),
                ops::release(0),
                ops::answer_barrier(0),
                ops::connect(),
                ops::send_valid(0, 0, 0),
                ops::guest(14, 0),
            ],
        ),
    ];
    for (what, script) in v10 {
        set.add(what, script.concat());
    }
    let mut full = Vec::new();
    for _ in 0..130 {
        full.extend(ops::connect());
    }
    full.extend(ops::disconnect(3));
    full.extend(ops::connect());
    full.extend(ops::release(0));
    full.extend(ops::connect());
    set.add("all slots taken then one freed", full);
    set.seeds
}

fn exec_log_reader_seeds() -> Vec<Seed> {
    let mut set = SeedSet::new("exec_log_reader");
    let record = |source: u8, data: &[u8]| {
        let mut op = vec![0, source, data.len() as u8];
        op.extend_from_slice(data);
        op
    };
    let mut many = vec![0, 0, 0];
    for i in 0..60u8 {
        many.extend(record(i, format!("line {i}\n").as_bytes()));
        many.extend([2, i % 11]);
        if i % 4 == 0 {
            many.push(3);
        }
    }
    set.add("rotation with partial flushes", many);
    let mut tail = vec![255, 0, 4];
    for i in 0..9u8 {
        tail.extend(record(i % 4, b"a\nb\n"));
    }
    tail.extend([2, 255, 3]);
    set.add("tail 3 of multi line chunks", tail);
    let mut filtered = vec![3, 1, 0];
    for i in 0..20u8 {
        filtered.extend(record(i, &[0xff, b'x', i]));
        filtered.extend([1, 4, b'{', b'}', b'\r', i]);
        filtered.extend([2, 3, 3]);
    }
    set.add("stdout filter garbage and bad utf 8", filtered);
    let mut burst = vec![0, 2, 2];
    burst.push(3);
    for i in 0..40u8 {
        burst.extend(record(1, &[b'e'; 40][..usize::from(i)]));
    }
    burst.push(3);
    set.add("five rotations between reads", burst);
    let b64 = br#"{"t":"2026-04-30T20:33:01.500Z","s":"stdout","d":"/w==","id":9,"e":"b64"}"#;
    let mut line = vec![0, 0, 1, 1, b64.len() as u8];
    line.extend_from_slice(b64);
    line.extend([2, 9, 3, 2, 255, 3]);
    set.add("base64 line cut in two", line);
    set.seeds
}

fn agentd_dispatch_seeds(frames: &[VectorFrame]) -> Vec<Seed> {
    let mut set = SeedSet::new("agentd_dispatch");
    let mut all = Vec::new();
    for f in frames {
        let raw = f.raw();
        all.extend(crate::agentd_dispatch::join_frame(raw.id, raw.flags, 0, &raw.body));
    }
    set.add("every golden frame", all);
    for (what, id, flags, kind, bytes) in [
        ("unknown type", 5, Flags::NONE, 1, &b"\x0acore.teleport"[..]),
        ("huge unknown type", 6, Flags::NONE, 2 + 4 * 63, &b"\x0acore.x\xc3\xa9"[..]),
        ("too new type", 7, Flags::NONE, 1, &b"\x0acore.exec.output.ack"[..]),
        ("refused exec with long command", 8, Flags::SESSION_START, 3, &[b'!'; 4000][..]),
        ("control type", 9, Flags::NONE, 1, &b"\x0acontrol.relay.lease"[..]),
    ] {
        set.add(what, crate::agentd_dispatch::join_frame(id, flags, kind, bytes));
    }
    let mut session = crate::agentd_dispatch::join_frame(11, Flags::SESSION_START, 3, b"sh");
    session.extend(crate::agentd_dispatch::join_frame(12, Flags::NONE, 1, b"\x0acore.exec.stdin"));
    set.add("exec then stdin on another id", session);
    let over = crate::agentd_dispatch::FAKE_SENT_CHARGE + 1;
    for (what, acks) in [
        ("exec then good output acks", &[259, 259, 518][..]),
        ("exec then an output ack going back", &[518, 259][..]),
        ("exec then an output ack past what was sent", &[259, over][..]),
        ("exec then a maximal output ack", &[u64::MAX][..]),
    ] {
        let mut session = crate::agentd_dispatch::join_frame(13, Flags::SESSION_START, 3, b"sh");
        for &consumed in acks {
            session.extend(output_ack(13, consumed));
        }
        session.extend(output_ack(14, 1));
        set.add(what, session);
    }
    let join = crate::agentd_dispatch::join_frame;
    let workload = u32::MAX;
    // kind 3 + 4: freeze, 3 + 8: thaw, 3 + 12: bulk credit (see the target's input layout).
    for (what, steps) in [
        ("freeze then thaw", &[(workload, 7, &b"a"[..]), (workload, 11, b"a")][..]),
        ("freeze twice", &[(workload, 7, b"a"), (workload, 7, b"b")]),
        ("thaw when not frozen", &[(workload, 11, b"a")]),
        ("thaw of another attempt", &[(workload, 7, b"a"), (workload, 11, b"b")]),
        ("freeze off the private id", &[(20, 7, b"a")]),
        ("bulk credit on an unknown id", &[(21, 15, b"\x02\x00\x08")]),
        ("regressing bulk credit", &[(22, 15, b"\x02\x00\x08"), (22, 15, b"\x02\x00\x01")]),
    ] {
        let mut input = Vec::new();
        for &(id, kind, bytes) in steps {
            input.extend(join(id, Flags::NONE, kind, bytes));
        }
        set.add(what, input);
    }
    let record = |id: u32, flow: u8, payload: &[u8]| {
        let mut body = vec![1, flow, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(payload);
        join(id, Flags::BULK, 0, &body)
    };
    set.add("raw bulk record with no transfer", record(23, 1, b"data"));
    set.add("raw bulk record guest to host", record(24, 2, b"data"));
    set.add("empty raw bulk record", record(25, 1, b""));
    let mut root_disk = Vec::new();
    for message in [
        moat_protocol::Message::RootDiskGrow(moat_protocol::payload::core::RootDiskGrow {
            size_bytes: 1 << 30,
        }),
        moat_protocol::Message::RootDiskPrepare(moat_protocol::payload::core::RootDiskGrow {
            size_bytes: 0,
        }),
    ] {
        let wire = moat_protocol::MessageFrame::new(26, message).to_bytes().expect("encodes");
        root_disk.extend(join(26, Flags::NONE, 0, &wire[9..]));
    }
    set.add("root disk grow and prepare", root_disk);
    let tcp = |id: u32, message: moat_protocol::Message| {
        let wire = moat_protocol::MessageFrame::new(id, message).to_bytes().expect("encodes");
        join(id, Flags::from_bits(wire[8]), 0, &wire[9..])
    };
    let connect = |host: &str, port: u16| {
        moat_protocol::Message::TcpConnect(moat_protocol::payload::tcp::TcpConnect {
            host: host.into(),
            port,
            bulk: None,
        })
    };
    let data = || {
        moat_protocol::Message::TcpData(moat_protocol::payload::exec::Data::new(b"GET /".to_vec()))
    };
    for (what, steps) in [
        (
            "tcp connect data eof close",
            vec![
                tcp(27, connect("127.0.0.1", 8080)),
                tcp(27, data()),
                tcp(27, moat_protocol::Message::TcpEof),
                tcp(27, moat_protocol::Message::TcpClose),
                tcp(27, data()),
            ],
        ),
        ("tcp refused connect with a long host", vec![tcp(28, connect(&"h".repeat(5000), 0))]),
        (
            "tcp follow-ups with no session",
            vec![
                tcp(29, data()),
                tcp(29, moat_protocol::Message::TcpEof),
                tcp(29, moat_protocol::Message::TcpClose),
            ],
        ),
    ] {
        set.add(what, steps.concat());
    }
    set.seeds
}

/// A `core.exec.output.ack {consumed}` frame on `id`, in the `agentd_dispatch` input layout.
fn output_ack(id: u32, consumed: u64) -> Vec<u8> {
    let ack =
        moat_protocol::Message::ExecOutputAck(moat_protocol::payload::exec::Consumed { consumed });
    let wire = moat_protocol::MessageFrame::new(id, ack).to_bytes().expect("an output ack encodes");
    crate::agentd_dispatch::join_frame(id, Flags::NONE, 0, &wire[9..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_keeps_alphanumerics_and_single_dashes() {
        assert_eq!(slug("exec.request tty+rlimit"), "exec-request-tty-rlimit");
        assert_eq!(
            slug("raw bulk record fs g2h id=6 off=0 'hello'"),
            "raw-bulk-record-fs-g2h-id-6-off-0-hello"
        );
    }

    #[test]
    fn every_target_gets_seeds_with_unique_names() {
        let seeds = generate();
        for t in crate::TARGETS {
            let names: Vec<_> =
                seeds.iter().filter(|s| s.target == t.name).map(|s| &s.name).collect();
            assert!(names.len() >= 5, "{} has {} seeds", t.name, names.len());
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{} has duplicate seed names", t.name);
        }
    }

    #[test]
    fn seeds_stay_commit_sized() {
        let total: usize = generate().iter().map(|s| s.bytes.len()).sum();
        assert!(total < 1024 * 1024, "seeds total {total} bytes");
    }
}
