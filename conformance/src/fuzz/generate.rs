//! Fresh inputs from nothing but the random stream: valid conversations (pings, exec and fs
//! sessions with their follow-ups, tcp connects to loopback), sprinkled with the structural faults
//! [`super::mutate`] also applies.
//!
//! Everything generated is safe to run inside any sandbox: exec runs only `true`, `false`, `echo`,
//! `cat`, `sleep` (a few tenths of a second) or a program that does not exist; filesystem requests
//! read, or create and remove empty directories under `/tmp/moat-fuzz-*`; tcp connects go to
//! loopback ports nobody listens on. Types that act on the whole sandbox (`core.shutdown`, the
//! runtime's workload freeze/thaw, root-disk resizing) are never sent.

use moat_protocol::payload::bulk::{BulkCancel, BulkCredit, BulkFinish};
use moat_protocol::payload::exec::{Consumed, Data, ExecRequest, ExecResize, ExecSignal};
use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsRequest};
use moat_protocol::payload::tcp::TcpConnect;
use moat_protocol::{Message, MessageType};

use super::input::{Body, FrameSpec, IdSpec, Input, Step};
use super::mutate;
use super::rng::Rng;
use crate::limits::{
    FUZZ_MAX_CONNS, FUZZ_MAX_FLOOD_PINGS, FUZZ_MAX_GENERATED_STEPS, FUZZ_MAX_STEP_MS,
    SUITE_GENERATION,
};

/// The payload `{}`.
const EMPTY_MAP: [u8; 1] = [0xa0];

/// Programs a generated exec may run.
const PROGRAMS: &[&str] = &["true", "false", "echo", "cat", "sleep", "/nonexistent/moat-fuzz"];

/// Paths generated read-only filesystem requests look at.
const READ_PATHS: &[&str] = &["/", "/tmp", "/etc/hostname", "/proc/self", "/nonexistent", "", ".."];

/// The protocol generation valid frames are generated for: types introduced after `max` are
/// sent only by mutation (as too-new types), and envelopes carry `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// The envelope generation written.
    pub v: u8,
    /// The newest type generation sent as a valid frame: `min(v, ready.v)`.
    pub max: u8,
}

impl Default for Generation {
    fn default() -> Generation {
        Generation { v: SUITE_GENERATION, max: SUITE_GENERATION }
    }
}

/// A fresh input of 1 to [`FUZZ_MAX_GENERATED_STEPS`] steps.
pub fn input(rng: &mut Rng, g: Generation) -> Input {
    // Short inputs are the more common: they run faster and fail more legibly.
    let longest = 1 + rng.below(FUZZ_MAX_GENERATED_STEPS);
    let len = 1 + rng.below(longest);
    let mut conns = 1u8;
    let mut steps = Vec::with_capacity(len);
    for _ in 0..len {
        let s = step(rng, conns, g);
        if matches!(s, Step::Connect) {
            conns = conns.saturating_add(1).min(FUZZ_MAX_CONNS);
        }
        steps.push(s);
    }
    Input { steps }
}

/// One step for an input that has opened `conns` connections so far.
pub fn step(rng: &mut Rng, conns: u8, g: Generation) -> Step {
    let conn = rng.below(usize::from(conns.max(1))) as u8;
    match rng.below(100) {
        0..=44 => Step::Send { conn, frame: valid_frame(rng, g) },
        45..=56 => {
            let mut frame = valid_frame(rng, g);
            mutate::frame(rng, &mut frame);
            Step::Send { conn, frame }
        }
        57..=61 => {
            let mut frame = valid_frame(rng, g);
            mutate::cut_envelope(rng, &mut frame);
            Step::Send { conn, frame }
        }
        62..=64 => {
            let mut frame = valid_frame(rng, g);
            if let Body::Envelope { t, .. } = &mut frame.body {
                *t = format!("core.fuzz.unknown{}", rng.below(4));
            }
            Step::Send { conn, frame }
        }
        65..=66 => {
            Step::Truncated { conn, frame: valid_frame(rng, g), keep: rng.range(1, 40) as u32 }
        }
        67..=69 => Step::BadLength { conn, len: *rng.pick(&BAD_LENGTHS) },
        70..=74 => {
            Step::Flood { conn, count: rng.range(2, u64::from(FUZZ_MAX_FLOOD_PINGS)) as u16 }
        }
        75..=81 => Step::Connect,
        82..=87 => Step::Disconnect { conn },
        88..=93 => Step::SlowRead { conn, ms: rng.range(10, u64::from(FUZZ_MAX_STEP_MS)) as u16 },
        _ => Step::Pause { ms: rng.range(0, u64::from(FUZZ_MAX_STEP_MS)) as u16 },
    }
}

/// Length prefixes outside `[5, 4 MiB]`.
pub const BAD_LENGTHS: [u32; 6] = [0, 1, 4, 4 * 1024 * 1024 + 1, 0x7fff_ffff, u32::MAX];

/// A frame of a type a client may send, with a valid payload and the right flags, on a fresh id
/// or (for follow-ups) a session's id.
pub fn valid_frame(rng: &mut Rng, g: Generation) -> FrameSpec {
    loop {
        let t = *rng.pick(&MessageType::ALL);
        if t.introduced_in() > g.max {
            continue;
        }
        let Some(message) = sample(rng, t) else { continue };
        let mut p = Vec::new();
        if message.encode_payload(&mut p).is_err() {
            continue;
        }
        let id = if opens_session(t) || !is_follow_up(t) {
            IdSpec::Fresh
        } else {
            IdSpec::Session { nth: rng.below(4) as u8 }
        };
        let body = Body::Envelope { t: t.wire_name().to_owned(), p };
        return FrameSpec { id, flags: None, v: g.v, body };
    }
}

/// Whether `t` opens a session on its id (PROTOCOL.md §4.2).
pub fn opens_session(t: MessageType) -> bool {
    matches!(t, MessageType::ExecRequest | MessageType::FsRequest | MessageType::TcpConnect)
}

/// Whether `t` belongs on an open session's id.
pub fn is_follow_up(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::ExecStdin
            | MessageType::ExecSignal
            | MessageType::ExecResize
            | MessageType::ExecOutputAck
            | MessageType::FsData
            | MessageType::TcpData
            | MessageType::TcpEof
            | MessageType::TcpClose
            | MessageType::BulkCredit
            | MessageType::BulkFinish
            | MessageType::BulkCancel
    )
}

/// A message of type `t` with random but valid fields, or `None` for a type the fuzzer never
/// sends because it acts on the whole sandbox.
pub fn sample(rng: &mut Rng, t: MessageType) -> Option<Message> {
    let data = |rng: &mut Rng| {
        let len = rng.below(64);
        Data::new(rng.bytes(len))
    };
    Some(match t {
        MessageType::Shutdown
        | MessageType::WorkloadFreeze
        | MessageType::WorkloadThaw
        | MessageType::RootDiskPrepare
        | MessageType::RootDiskGrow => return None,
        MessageType::Ping => Message::Ping,
        MessageType::Pong => Message::Pong,
        MessageType::Touch => Message::Touch,
        MessageType::TcpConnected => Message::TcpConnected,
        MessageType::TcpEof => Message::TcpEof,
        MessageType::TcpClose => Message::TcpClose,
        MessageType::TcpClosed => Message::TcpClosed,
        MessageType::ExecRequest => Message::ExecRequest(exec_request(rng)),
        MessageType::ExecStdin => Message::ExecStdin(data(rng)),
        MessageType::FsData => Message::FsData(data(rng)),
        MessageType::TcpData => Message::TcpData(data(rng)),
        MessageType::ExecStdout => Message::ExecStdout(data(rng)),
        MessageType::ExecStderr => Message::ExecStderr(data(rng)),
        MessageType::ExecSignal => Message::ExecSignal(ExecSignal {
            signal: *rng.pick(&[0, 1, 2, 9, 15, 28, -1, 65, 4096]),
        }),
        MessageType::ExecResize => Message::ExecResize(ExecResize {
            rows: *rng.pick(&[0, 1, 24, u16::MAX]),
            cols: *rng.pick(&[0, 1, 80, u16::MAX]),
        }),
        MessageType::ExecOutputAck => Message::ExecOutputAck(consumed(rng)),
        MessageType::ExecStdinAck => Message::ExecStdinAck(consumed(rng)),
        MessageType::FsRequest => Message::FsRequest(FsRequest { op: fs_op(rng), bulk: None }),
        MessageType::TcpConnect => Message::TcpConnect(TcpConnect {
            host: (*rng.pick(&["127.0.0.1", "localhost", "::1"])).to_owned(),
            port: *rng.pick(&[0, 1, 9, 65535]),
            bulk: None,
        }),
        MessageType::BulkCredit => Message::BulkCredit(BulkCredit {
            kind: rng.below(4) as u8,
            flow: rng.below(3) as u8,
            consumed_offset: rng.next_u64() % 4096,
            credit_limit: rng.next_u64() % 65536,
        }),
        MessageType::BulkFinish => Message::BulkFinish(BulkFinish {
            kind: rng.below(4) as u8,
            flow: rng.below(3) as u8,
            final_offset: rng.next_u64() % 4096,
        }),
        MessageType::BulkCancel => Message::BulkCancel(BulkCancel {
            kind: rng.below(4) as u8,
            reason: rng.below(7) as u8,
            message: "moat-fuzz".to_owned(),
        }),
        // The rest are guest-to-host or host-only types: a client sending one tests that the
        // peer refuses or ignores it. `{}` is a valid payload for the empty ones and an invalid
        // one for the others, which is as interesting.
        MessageType::Bootstrap
        | MessageType::InitResolved
        | MessageType::InitAck
        | MessageType::Ready
        | MessageType::RelayClientDisconnected
        | MessageType::ClockSync
        | MessageType::Touched
        | MessageType::Error
        | MessageType::WorkloadFrozen
        | MessageType::WorkloadThawed
        | MessageType::WorkloadTransportCredit
        | MessageType::RootDiskState
        | MessageType::BulkAccepted
        | MessageType::ExecStarted
        | MessageType::ExecStdinError
        | MessageType::ExecExited
        | MessageType::ExecFailed
        | MessageType::FsResponse
        | MessageType::TcpFailed => Message::Unknown(moat_protocol::UnknownMessage {
            t: t.wire_name().to_owned(),
            flags: t.flags(),
            payload: EMPTY_MAP.to_vec(),
        }),
    })
}

fn consumed(rng: &mut Rng) -> Consumed {
    Consumed { consumed: *rng.pick(&[0, 1, 4096, u64::MAX]) }
}

fn exec_request(rng: &mut Rng) -> ExecRequest {
    let cmd = *rng.pick(PROGRAMS);
    let mut request = ExecRequest::new(cmd);
    request.args = match cmd {
        "sleep" => vec![(*rng.pick(&["0", "0.1", "0.3"])).to_owned()],
        "echo" => (0..rng.below(3)).map(|k| format!("fuzz{k}-{}", rng.below(1000))).collect(),
        _ => Vec::new(),
    };
    if rng.percent(20) {
        request.env = vec![format!("MOAT_FUZZ={}", rng.below(100))];
    }
    if rng.percent(20) {
        request.cwd = Some((*rng.pick(&["/", "/tmp", "/nonexistent"])).to_owned());
    }
    if rng.percent(10) {
        request.user = Some((*rng.pick(&["root", "nobody", "moat-fuzz-nobody"])).to_owned());
    }
    request.tty = rng.percent(15);
    request
}

fn fs_op(rng: &mut Rng) -> FsOp {
    let scratch = format!("/tmp/moat-fuzz-{}", rng.below(4));
    let read = (*rng.pick(READ_PATHS)).to_owned();
    let handle = rng.below(8) as u64;
    match rng.below(10) {
        0 => FsOp::Stat { path: read, follow_symlink: rng.percent(50) },
        1 => FsOp::List { path: read },
        2 => FsOp::RealPath { path: read },
        3 => FsOp::ReadLink { path: read },
        4 => FsOp::Mkdir { path: scratch, mode: Some(0o700), user: None },
        5 => FsOp::RemoveDir { path: scratch, recursive: false },
        6 => FsOp::OpenFile {
            path: format!("{scratch}/file"),
            options: FsOpenOptions { read: true, ..FsOpenOptions::default() },
        },
        7 => FsOp::OpenDir { path: read },
        8 => FsOp::FStat { handle },
        _ => FsOp::CloseHandle { handle },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..50 {
            assert_eq!(input(&mut a, Generation::default()), input(&mut b, Generation::default()));
        }
    }

    #[test]
    fn generated_inputs_respect_the_step_and_connection_caps() {
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let input = input(&mut rng, Generation::default());
            assert!((1..=FUZZ_MAX_GENERATED_STEPS).contains(&input.steps.len()));
            assert!(input.steps.iter().all(|s| s.conn().is_none_or(|c| c < FUZZ_MAX_CONNS)));
        }
    }

    #[test]
    fn valid_frames_never_carry_a_sandbox_wide_type() {
        let mut rng = Rng::new(9);
        for _ in 0..2000 {
            let frame = valid_frame(&mut rng, Generation { v: 7, max: 7 });
            let Body::Envelope { t, .. } = &frame.body else { panic!("{frame:?}") };
            let t = MessageType::from_wire_name(t).unwrap();
            assert!(sample(&mut rng, t).is_some(), "{t:?}");
            assert!(!matches!(t, MessageType::Shutdown | MessageType::WorkloadFreeze));
            assert!(t.introduced_in() <= 7 && frame.v == 7, "{t:?}");
        }
    }
}
