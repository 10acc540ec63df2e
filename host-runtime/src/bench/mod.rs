//! `moat bench`: the figures users of a sandbox runtime care about, measured against a live
//! sandbox through the library API and raw relay clients, next to the machine's own floors.
//!
//! ```text
//!  floors (no sandbox): unix socket round trip · fork+exec /bin/true · socket copy
//!  Moat::create("bench") ─► exec true ×N ─► core.ping ×N ─► dd 1 GiB to stdout
//!      ─► fs write/read 256 MiB, bulk and CBOR, interleaved ─► 64 clients × 50 execs
//!  create+ready+remove ×N ─► codec decode rates ─► table (or --json): value, floor, ratio, goal
//! ```
//!
//! Every sandbox lives in a fresh moat home under the temp dir, removed at the end. Benchmarks
//! report; they never judge: issue 15's goals (mostly ratios to a floor of the same run) are
//! printed beside the figures, for a reader, and never fail the run.

mod codec;
mod floor;
mod measure;
mod report;
mod stats;

use std::path::PathBuf;

use crate::api::config::Isolation;
use crate::backend::isolation::BackendKind;
use std::time::Duration;

use crate::api::blocking::Moat;
use crate::error::RuntimeError;
use measure::FsMode;
pub use report::{Figure, Floor, Goal, Report};
use stats::{mib_per_s, ms, us};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    exec_iterations: usize,
    ping_iterations: usize,
    stdout_bytes: u64,
    fs_bytes: u64,
    stream_repeats: usize,
    concurrent_clients: usize,
    concurrent_execs: usize,
    create_iterations: usize,
    floor_round_trips: usize,
    floor_fork_execs: usize,
    floor_copy_bytes: u64,
    codec_small_frames: usize,
    codec_chunks: usize,
}

const MIB: u64 = 1024 * 1024;

impl Sizes {
    /// The full run: the sizes the targets are stated for.
    pub const FULL: Sizes = Sizes {
        exec_iterations: 500,
        ping_iterations: 5000,
        stdout_bytes: 1024 * MIB,
        fs_bytes: 256 * MIB,
        stream_repeats: 3,
        concurrent_clients: 64,
        concurrent_execs: 50,
        create_iterations: 10,
        floor_round_trips: 5000,
        floor_fork_execs: 500,
        floor_copy_bytes: 1024 * MIB,
        codec_small_frames: 1_000_000,
        codec_chunks: 64,
    };

    /// `--quick`: every path once or a few times, small sizes (for tests).
    pub const QUICK: Sizes = Sizes {
        exec_iterations: 20,
        ping_iterations: 200,
        stdout_bytes: 16 * MIB,
        fs_bytes: 12 * MIB,
        stream_repeats: 1,
        concurrent_clients: 8,
        concurrent_execs: 5,
        create_iterations: 2,
        floor_round_trips: 500,
        floor_fork_execs: 20,
        floor_copy_bytes: 64 * MIB,
        codec_small_frames: 10_000,
        codec_chunks: 4,
    };
}

/// A fresh moat home for the run, removed when dropped.
struct TempHome(PathBuf);

impl Drop for TempHome {
    fn drop(&mut self) {
        let moat = Moat::new(&self.0);
        for state in moat.list().unwrap_or_default() {
            let _ = moat.get(&state.name).map(|s| s.remove(true));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every measurement and returns the report. `progress` gets a line before each step.
pub fn run(sizes: Sizes, mut progress: impl FnMut(&str)) -> Result<Report, RuntimeError> {
    let s = sizes;
    let load_start = load_average_1m();

    progress("floors");
    let unix_rtt = floor::unix_round_trips(s.floor_round_trips)?;
    let fork_exec = floor::fork_exec_true(s.floor_fork_execs)?;
    let copy = floor::socket_copy(s.floor_copy_bytes)?;

    // `auto`'s choice, made once (and its fallback warning printed once), then asked for by
    // name so every sandbox of the run is on the same backend.
    let (isolation, backend) = match crate::backend::isolation::prepare_backend(Isolation::Auto)? {
        BackendKind::Vm => (Isolation::Vm, "vm"),
        BackendKind::Namespace => (Isolation::Namespace, "namespace"),
    };

    let home = TempHome(std::env::temp_dir().join(format!("moat-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&home.0);
    let moat = Moat::new(&home.0);
    progress("create the sandbox");
    let scratch_mib = u32::try_from(s.fs_bytes / MIB + 16).unwrap_or(u32::MAX);
    let sandbox = moat.create(measure::create_args("bench", scratch_mib, isolation))?;
    let socket = sandbox.socket();

    progress("idle memory");
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_mib = measure::tree_rss_kib(&sandbox)? as f64 / 1024.0;

    progress("exec true round trips");
    let exec = measure::exec_round_trips(&socket, 5, s.exec_iterations)?;
    progress("core.ping round trips");
    let ping = measure::ping_round_trips(&socket, 50, s.ping_iterations)?;

    progress("stdout streaming");
    let stdout = median_rate(s.stream_repeats, s.stdout_bytes, || {
        measure::stdout_stream(&socket, s.stdout_bytes)
    })?;
    progress("fs write and read, bulk and CBOR");
    let fs = fs_rates(&socket, s)?;

    progress("concurrent execs");
    let concurrent = measure::concurrent_execs(&socket, s.concurrent_clients, s.concurrent_execs);
    sandbox.remove(true)?;

    progress("create to ready");
    let create = measure::create_to_ready(&moat, s.create_iterations, isolation)?;
    drop(home);

    progress("codec");
    let small = codec::small_decode_per_s(s.codec_small_frames)?;
    let chunk = codec::chunk_decode_mib_s(s.codec_chunks)?;

    let mut figures = Vec::new();
    let mut push = |key, value, floor: Option<(f64, &'static str)>, goal| {
        let floor = floor.map(|(value, ratio_key)| Floor { value, ratio_key });
        figures.push(Figure { key, value, floor, goal });
    };
    let fork_p50 = ms(fork_exec.percentile(50));
    let fork_p99 = ms(fork_exec.percentile(99));
    let unix_p50 = us(unix_rtt.percentile(50));
    let unix_p99 = us(unix_rtt.percentile(99));
    let (exec_p50, exec_p99) = (ms(exec.percentile(50)), ms(exec.percentile(99)));
    let (ping_p50, ping_p99) = (us(ping.percentile(50)), us(ping.percentile(99)));
    push(
        "exec_roundtrip_p50_ms",
        exec_p50,
        Some((fork_p50, "exec_roundtrip_p50_floor_ratio")),
        Some(Goal::RatioAtMost(1.3)),
    );
    push(
        "exec_roundtrip_p99_ms",
        exec_p99,
        Some((fork_p99, "exec_roundtrip_p99_floor_ratio")),
        None,
    );
    push(
        "ping_p50_us",
        ping_p50,
        Some((unix_p50, "ping_p50_floor_ratio")),
        Some(Goal::RatioAtMost(2.0)),
    );
    push("ping_p99_us", ping_p99, Some((unix_p99, "ping_p99_floor_ratio")), None);
    let at_least = |share| Some(Goal::RatioAtLeast(share));
    push("stdout_stream_mib_s", stdout, Some((copy, "stdout_stream_floor_ratio")), at_least(0.4));
    push("fs_write_mib_s", fs.write_bulk, Some((copy, "fs_write_floor_ratio")), at_least(0.5));
    push("fs_read_mib_s", fs.read_bulk, Some((copy, "fs_read_floor_ratio")), at_least(0.5));
    push("fs_write_cbor_mib_s", fs.write_cbor, Some((copy, "fs_write_cbor_floor_ratio")), None);
    push("fs_read_cbor_mib_s", fs.read_cbor, Some((copy, "fs_read_cbor_floor_ratio")), None);
    let per_s = concurrent.ok as f64 / concurrent.elapsed.as_secs_f64().max(1e-9);
    push("concurrent_execs_per_s", per_s, None, None);
    push("concurrent_errors", concurrent.errors as f64, None, Some(Goal::AtMost(0.0)));
    push(
        "create_to_ready_p50_ms",
        ms(create.percentile(50)),
        Some((fork_p50, "create_to_ready_p50_floor_ratio")),
        Some(Goal::AtMost(20.0)),
    );
    push("create_to_ready_max_ms", ms(create.percentile(100)), None, None);
    push("idle_rss_mib", idle_rss_mib, None, Some(Goal::AtMost(10.0)));
    push("codec_small_decode_per_s", small, None, None);
    push("codec_chunk_decode_mib_s", chunk, None, None);
    push("floor_unix_roundtrip_p50_us", unix_p50, None, None);
    push("floor_unix_roundtrip_p99_us", unix_p99, None, None);
    push("floor_fork_exec_true_p50_ms", fork_p50, None, None);
    push("floor_fork_exec_true_p99_ms", fork_p99, None, None);
    push("floor_socket_copy_mib_s", copy, None, None);

    Ok(Report {
        date: crate::store::state::now(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        load: (load_start, load_average_1m()),
        backend,
        mode: if sizes == Sizes::QUICK { "quick" } else { "full" },
        figures,
    })
}

/// Median MiB/s of the four file transfers.
struct FsRates {
    write_bulk: f64,
    read_bulk: f64,
    write_cbor: f64,
    read_cbor: f64,
}

/// `stream_repeats` rounds of bulk write, bulk read, CBOR write, CBOR read of one file,
/// interleaved so that the host's load of the moment falls on both modes alike.
fn fs_rates(socket: &std::path::Path, s: Sizes) -> Result<FsRates, RuntimeError> {
    let path = format!("{}/file", measure::SCRATCH_DIR);
    let mut rates: [Vec<f64>; 4] = Default::default();
    for _ in 0..s.stream_repeats.max(1) {
        for (i, mode) in [FsMode::Bulk, FsMode::Cbor].into_iter().enumerate() {
            let write = measure::fs_write(socket, mode, &path, s.fs_bytes)?;
            rates[2 * i].push(mib_per_s(s.fs_bytes, write));
            let read = measure::fs_read(socket, mode, &path, s.fs_bytes)?;
            rates[2 * i + 1].push(mib_per_s(s.fs_bytes, read));
        }
    }
    let [write_bulk, read_bulk, write_cbor, read_cbor] = rates.map(median);
    Ok(FsRates { write_bulk, read_bulk, write_cbor, read_cbor })
}

/// The 1-minute load average (0 where /proc/loadavg cannot be read).
fn load_average_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The median MiB/s of `repeats` timed transfers of `bytes` each.
fn median_rate(
    repeats: usize,
    bytes: u64,
    mut once: impl FnMut() -> Result<Duration, RuntimeError>,
) -> Result<f64, RuntimeError> {
    let mut rates = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        rates.push(mib_per_s(bytes, once()?));
    }
    Ok(median(rates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_three_is_the_middle_one() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
