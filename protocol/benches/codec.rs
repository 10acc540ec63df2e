//! Codec benchmark of `moat-protocol`: how fast frames are encoded and decoded, measured on four
//! representative messages, and how that compares to a plain memcpy of the same size.
//!
//! ```text
//!  encode  MessageFrame::encode into a reused Vec
//!  decode  FrameDecoder::push + next_frame + decode_frame to a typed message (what a peer runs)
//!  frame   BytesMut::extend_from_slice + split_frame, no body decode (3 MiB case only)
//!  memcpy  <[u8]>::copy_from_slice of the payload size (16 KiB, 3 MiB): the floor
//! ```
//!
//! Each figure is the median of [`BATCHES`] timed batches, with the min and max across batches
//! so noise is visible. Batch sizes adapt so a batch takes about [`TARGET_BATCH`]; a calibration
//! run and a full warm-up batch come first and are not counted. The timed batches run in rounds,
//! one batch of every figure per round, so a change in machine load lands on a figure and on the
//! memcpy floor it is compared to alike. Rates count wire bytes (length prefix included) and use
//! MiB = 2^20 bytes.
//!
//! This is a plain `harness = false` binary (no criterion). `cargo bench` passes `--bench`, which
//! selects measuring; without it (`cargo test --benches`) every path runs once as a smoke test.
//! `--json` prints one JSON object instead of the table; other arguments are ignored. This bench
//! covers the codec only; `docs/BENCHMARKS.md` says how it is run and how to read the figures.
//!
//! ```text
//!  cargo bench -p moat-protocol --bench codec [-- --json]
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use moat_protocol::frame::split_frame;
use moat_protocol::limits::FS_CHUNK_BYTES;
use moat_protocol::payload::exec::{Data, ExecRequest};
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
use serde_json::{Map, Value};

/// Timed batches per figure; odd, so the median is one batch.
const BATCHES: usize = 9;

/// Wall time one timed batch aims for.
const TARGET_BATCH: Duration = Duration::from_millis(75);

/// Calibration doubles the batch until one takes at least this long.
const CALIBRATION_MIN: Duration = Duration::from_millis(10);

/// Payload of the `core.exec.stdout` case: the default `output_chunk_size`.
const STDOUT_CHUNK_BYTES: usize = 16 * 1024;

/// Correlation id every benchmarked frame carries.
const FRAME_ID: u32 = 0x0100_0001;

const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// Operations per second across the timed batches.
#[derive(Debug, Clone, Copy)]
struct Rate {
    median: f64,
    min: f64,
    max: f64,
}

impl Rate {
    /// Median, min and max of per-batch rates.
    fn of(mut rates: Vec<f64>) -> Rate {
        rates.sort_by(f64::total_cmp);
        Rate { median: rates[rates.len() / 2], min: rates[0], max: rates[rates.len() - 1] }
    }

    fn scaled(self, factor: f64) -> Rate {
        Rate { median: self.median * factor, min: self.min * factor, max: self.max * factor }
    }

    /// (max - min) / median, in percent.
    fn spread_percent(self) -> f64 {
        (self.max - self.min) / self.median * 100.0
    }
}

/// Runs `iters` operations and returns how long they took.
type Batch = Box<dyn FnMut(u64) -> Duration>;

/// One figure to measure: an operation on one kind of frame (or a memcpy).
struct Bench {
    /// JSON key prefix, e.g. `fs_data_3mib_decode`.
    key: String,
    /// Table label, e.g. `core.fs.data 3 MiB decode`.
    label: String,
    /// Bytes one operation moves: the wire frame, or the memcpy size.
    bytes: usize,
    /// JSON key prefix of the memcpy floor this figure is compared to, for bulk figures.
    floor: Option<&'static str>,
    batch: Batch,
}

/// One measured figure.
struct Figure {
    key: String,
    label: String,
    bytes: usize,
    floor: Option<&'static str>,
    /// Operations per batch after calibration.
    iters: u64,
    /// Operations (frames or copies) per second.
    ops: Rate,
}

impl Figure {
    fn mib_per_s(&self) -> Rate {
        self.ops.scaled(self.bytes as f64 / BYTES_PER_MIB)
    }
}

/// A message the bench encodes and decodes.
struct Case {
    key: &'static str,
    label: &'static str,
    frame: MessageFrame,
    floor: Option<&'static str>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let mut benches = benches();
    if !flag("--bench") {
        for bench in &mut benches {
            (bench.batch)(1);
        }
        println!("codec: {} paths ran once; `cargo bench` measures them", benches.len());
        return;
    }
    let json = flag("--json");
    let figures = measure(benches);
    if json {
        println!("{}", Value::Object(to_json(&figures)));
    } else {
        print_table(&figures);
    }
}

/// Every figure, in table order.
fn benches() -> Vec<Bench> {
    let mut benches = Vec::new();
    for case in cases() {
        let wire = case.frame.to_bytes().expect("benchmark frame encodes");
        check_round_trip(&case.frame, &wire);
        benches.push(encode_bench(&case, wire.len()));
        let framing = (case.key == "fs_data_3mib").then(|| framing_bench(&case, wire.clone()));
        benches.push(decode_bench(&case, wire));
        benches.extend(framing);
    }
    benches.push(memcpy_bench("memcpy_16kib", "memcpy 16 KiB", STDOUT_CHUNK_BYTES));
    benches.push(memcpy_bench("memcpy_3mib", "memcpy 3 MiB", FS_CHUNK_BYTES));
    benches
}

fn cases() -> Vec<Case> {
    let request = ExecRequest {
        args: vec!["hello".to_owned(), "from".to_owned(), "moat".to_owned()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        cwd: Some("/root".to_owned()),
        ..ExecRequest::new("/bin/echo")
    };
    let stdout = Data::new(pattern(STDOUT_CHUNK_BYTES));
    let fs_data = Data::new(pattern(FS_CHUNK_BYTES));
    vec![
        Case {
            key: "ping",
            label: "core.ping",
            frame: MessageFrame::new(FRAME_ID, Message::Ping),
            floor: None,
        },
        Case {
            key: "exec_request",
            label: "core.exec.request",
            frame: MessageFrame::new(FRAME_ID, Message::ExecRequest(request)),
            floor: None,
        },
        Case {
            key: "stdout_16kib",
            label: "core.exec.stdout 16 KiB",
            frame: MessageFrame::new(FRAME_ID, Message::ExecStdout(stdout)),
            floor: Some("memcpy_16kib"),
        },
        Case {
            key: "fs_data_3mib",
            label: "core.fs.data 3 MiB",
            frame: MessageFrame::new(FRAME_ID, Message::FsData(fs_data)),
            floor: Some("memcpy_3mib"),
        },
    ]
}

/// Non-constant bytes, so nothing in the path can get away with zero pages.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

/// Decodes `wire` once through the measured path and checks it gives `frame` back.
fn check_round_trip(frame: &MessageFrame, wire: &[u8]) {
    let mut decoder = FrameDecoder::new();
    decoder.push(wire);
    let raw = decoder.next_frame().expect("frame is well formed").expect("frame is complete");
    let decoded = decode_frame(&raw).expect("frame decodes");
    assert_eq!(
        decoded,
        Decoded::Message(frame.clone()),
        "{} round trip",
        frame.message.wire_name()
    );
    assert_eq!(decoder.buffered(), 0);
}

fn encode_bench(case: &Case, wire_len: usize) -> Bench {
    let frame = case.frame.clone();
    let mut out = Vec::with_capacity(wire_len);
    let batch = batch(move || {
        out.clear();
        black_box(&frame).encode(&mut out).expect("benchmark frame encodes");
        black_box(&mut out);
    });
    case_bench(case, "encode", wire_len, batch)
}

fn decode_bench(case: &Case, wire: Vec<u8>) -> Bench {
    let wire_len = wire.len();
    let mut decoder = FrameDecoder::new();
    let batch = batch(move || {
        decoder.push(black_box(&wire));
        let raw = decoder.next_frame().expect("frame is well formed").expect("frame is complete");
        black_box(decode_frame(&raw).expect("frame decodes"));
    });
    case_bench(case, "decode", wire_len, batch)
}

fn framing_bench(case: &Case, wire: Vec<u8>) -> Bench {
    let wire_len = wire.len();
    let mut buf = BytesMut::new();
    let batch = batch(move || {
        buf.extend_from_slice(black_box(&wire));
        black_box(split_frame(&mut buf).expect("frame is well formed").expect("frame is complete"));
    });
    case_bench(case, "frame", wire_len, batch)
}

fn memcpy_bench(key: &str, label: &str, len: usize) -> Bench {
    let src = pattern(len);
    let mut dst = vec![0u8; len];
    let batch = batch(move || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    });
    Bench { key: key.to_owned(), label: label.to_owned(), bytes: len, floor: None, batch }
}

fn case_bench(case: &Case, op: &str, bytes: usize, batch: Batch) -> Bench {
    Bench {
        key: format!("{}_{op}", case.key),
        label: format!("{} {op}", case.label),
        bytes,
        floor: case.floor,
        batch,
    }
}

/// Wraps one operation as a timed batch; the loop is monomorphized, so the only dynamic call
/// is per batch, not per operation.
fn batch(mut op: impl FnMut() + 'static) -> Batch {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        start.elapsed()
    })
}

/// Calibrates and warms up every figure, then runs [`BATCHES`] rounds of one timed batch each.
fn measure(mut benches: Vec<Bench>) -> Vec<Figure> {
    let iters: Vec<u64> = benches.iter_mut().map(|bench| calibrate(&mut bench.batch)).collect();
    let mut rates = vec![Vec::with_capacity(BATCHES); benches.len()];
    for _ in 0..BATCHES {
        for ((bench, &iters), rates) in benches.iter_mut().zip(&iters).zip(&mut rates) {
            rates.push(iters as f64 / (bench.batch)(iters).as_secs_f64());
        }
    }
    benches
        .into_iter()
        .zip(iters)
        .zip(rates)
        .map(|((bench, iters), rates)| Figure {
            key: bench.key,
            label: bench.label,
            bytes: bench.bytes,
            floor: bench.floor,
            iters,
            ops: Rate::of(rates),
        })
        .collect()
}

/// Finds the batch size that takes about [`TARGET_BATCH`]: doubles until a batch takes
/// [`CALIBRATION_MIN`], scales, then runs one full warm-up batch and scales again.
fn calibrate(batch: &mut Batch) -> u64 {
    let mut iters = 1u64;
    let mut elapsed = batch(iters);
    while elapsed < CALIBRATION_MIN {
        iters *= 2;
        elapsed = batch(iters);
    }
    iters = batch_size(iters, elapsed);
    batch_size(iters, batch(iters))
}

/// The batch size that takes [`TARGET_BATCH`], given that `iters` took `elapsed`.
fn batch_size(iters: u64, elapsed: Duration) -> u64 {
    let scale = TARGET_BATCH.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    ((iters as f64 * scale).round() as u64).max(1)
}

fn floor_ratio(figure: &Figure, figures: &[Figure]) -> Option<f64> {
    let floor = figures.iter().find(|f| Some(f.key.as_str()) == figure.floor)?;
    Some(figure.mib_per_s().median / floor.mib_per_s().median)
}

fn to_json(figures: &[Figure]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("batches".to_owned(), BATCHES.into());
    out.insert("target_batch_ms".to_owned(), (TARGET_BATCH.as_millis() as u64).into());
    for figure in figures {
        let key = &figure.key;
        let per_s = if key.starts_with("memcpy") { "copies_per_s" } else { "frames_per_s" };
        insert_rate(&mut out, &format!("{key}_{per_s}"), figure.ops, 0);
        insert_rate(&mut out, &format!("{key}_mib_per_s"), figure.mib_per_s(), 1);
        out.insert(format!("{key}_bytes"), figure.bytes.into());
        out.insert(format!("{key}_iters_per_batch"), figure.iters.into());
        if let Some(ratio) = floor_ratio(figure, figures) {
            out.insert(format!("{key}_memcpy_ratio"), round(ratio, 3));
        }
    }
    out
}

fn insert_rate(out: &mut Map<String, Value>, key: &str, rate: Rate, decimals: i32) {
    out.insert(key.to_owned(), round(rate.median, decimals));
    out.insert(format!("{key}_min"), round(rate.min, decimals));
    out.insert(format!("{key}_max"), round(rate.max, decimals));
}

fn round(value: f64, decimals: i32) -> Value {
    let scale = 10f64.powi(decimals);
    Value::from((value * scale).round() / scale)
}

fn print_table(figures: &[Figure]) {
    println!(
        "moat-protocol codec: median of {BATCHES} timed batches of ~{} ms after warm-up",
        TARGET_BATCH.as_millis()
    );
    println!(
        "bytes: wire bytes per frame; batch: frames per batch; spread: (max - min) / median; \
         /memcpy: MiB/s over the memcpy of the payload size (memcpy rows count copies)"
    );
    println!();
    println!(
        "{:<32} {:>9} {:>9} {:>11} {:>10} {:>21} {:>7} {:>8}",
        "figure", "bytes", "batch", "frames/s", "MiB/s", "MiB/s min .. max", "spread", "/memcpy"
    );
    for figure in figures {
        let mib = figure.mib_per_s();
        let ratio = floor_ratio(figure, figures).map_or_else(String::new, |r| format!("{r:.3}"));
        println!(
            "{:<32} {:>9} {:>9} {:>11} {:>10.1} {:>21} {:>6.1}% {:>8}",
            figure.label,
            figure.bytes,
            figure.iters,
            si(figure.ops.median),
            mib.median,
            format!("{:.1} .. {:.1}", mib.min, mib.max),
            figure.ops.spread_percent(),
            ratio
        );
    }
}

/// `12.3 M`, `45.6 k`, `789`.
fn si(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} k", value / 1e3)
    } else {
        format!("{value:.1}")
    }
}
