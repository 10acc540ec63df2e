//! `moat bench`: the figures users of a sandbox runtime care about, measured against a live
//! sandbox through the library API and raw relay clients, next to the machine's own floors.
//!
//! ```text
//!  floors (no sandbox): unix socket round trip · fork+exec /bin/true · socket copy
//!  Moat::create("bench") ─► exec true ×N ─► core.ping ×N ─► dd 1 GiB to stdout
//!      ─► fs write 256 MiB ─► fs read 256 MiB ─► 64 clients × 50 execs ─► idle RSS
//!  create+ready+remove ×N ─► codec decode rates ─► table (or --json)
//! ```
//!
//! Every sandbox lives in a fresh moat home under the temp dir, removed at the end. Benchmarks
//! report; they never judge. The targets are printed beside the figures, for a reader.

mod codec;
mod floor;
mod measure;
mod stats;

use std::path::PathBuf;

use crate::api::config::Isolation;
use crate::backend::isolation::BackendKind;
use std::time::Duration;

use crate::api::blocking::Moat;
use crate::error::RuntimeError;
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

/// One figure of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The JSON key: the figure and its unit.
    pub key: &'static str,
    /// Its value.
    pub value: f64,
    /// The target, as text, when the project states one.
    pub target: Option<&'static str>,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When it ran (RFC 3339 UTC).
    pub date: String,
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The backend the sandboxes ran on.
    pub backend: &'static str,
    /// `full` or `quick`.
    pub mode: &'static str,
    /// The figures, floors and ratios, in table order.
    pub figures: Vec<Figure>,
}

impl Report {
    /// One JSON object: metadata strings plus one number per figure.
    pub fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert("date".into(), self.date.clone().into());
        object.insert("machine_cores".into(), self.cores.into());
        object.insert("machine_kernel".into(), self.kernel.clone().into());
        object.insert("backend".into(), self.backend.into());
        object.insert("mode".into(), self.mode.into());
        for figure in &self.figures {
            let value = serde_json::Number::from_f64(figure.value)
                .map_or(serde_json::Value::Null, serde_json::Value::Number);
            object.insert(figure.key.into(), value);
        }
        serde_json::to_string_pretty(&object).unwrap_or_default()
    }

    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "moat bench ({}) {}  cores {}  kernel {}  backend {}\n\n{:<34} {:>14}  {}\n",
            self.mode,
            self.date,
            self.cores,
            self.kernel,
            self.backend,
            "figure",
            "value",
            "target"
        );
        for figure in &self.figures {
            out.push_str(&format!(
                "{:<34} {:>14.3}  {}\n",
                figure.key,
                figure.value,
                figure.target.unwrap_or("")
            ));
        }
        out
    }
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
    let mut figures = Vec::new();
    let mut push = |key, value, target| figures.push(Figure { key, value, target });

    progress("floors");
    let unix_rtt = floor::unix_round_trips(s.floor_round_trips)?.percentile(50);
    let fork_exec = floor::fork_exec_true(s.floor_fork_execs)?.percentile(50);
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
    progress("fs write and read");
    let path = format!("{}/file", measure::SCRATCH_DIR);
    let fs_write = median_rate(s.stream_repeats, s.fs_bytes, || {
        measure::fs_write(&socket, &path, s.fs_bytes)
    })?;
    let fs_read =
        median_rate(s.stream_repeats, s.fs_bytes, || measure::fs_read(&socket, &path, s.fs_bytes))?;

    progress("concurrent execs");
    let concurrent = measure::concurrent_execs(&socket, s.concurrent_clients, s.concurrent_execs);
    sandbox.remove(true)?;

    progress("create to ready");
    let create = measure::create_to_ready(&moat, s.create_iterations, isolation)?.percentile(50);
    drop(home);

    progress("codec");
    let small = codec::small_decode_per_s(s.codec_small_frames)?;
    let chunk = codec::chunk_decode_mib_s(s.codec_chunks)?;

    let exec_p50 = ms(exec.percentile(50));
    let ping_p50 = us(ping.percentile(50));
    push("exec_roundtrip_p50_ms", exec_p50, Some("<= 2 ms"));
    push("exec_roundtrip_p99_ms", ms(exec.percentile(99)), Some("<= 5 ms"));
    push("ping_p50_us", ping_p50, Some("<= 100 us"));
    push("ping_p99_us", us(ping.percentile(99)), None);
    push("stdout_stream_mib_s", stdout, Some(">= 1000 MiB/s"));
    push("fs_write_mib_s", fs_write, Some(">= 800 MiB/s"));
    push("fs_read_mib_s", fs_read, Some(">= 800 MiB/s"));
    let per_s = concurrent.ok as f64 / concurrent.elapsed.as_secs_f64().max(1e-9);
    push("concurrent_execs_per_s", per_s, Some("report"));
    push("concurrent_errors", concurrent.errors as f64, Some("0"));
    push("create_to_ready_p50_ms", ms(create), Some("<= 50 ms"));
    push("idle_rss_mib", idle_rss_mib, Some("<= 20 MiB"));
    push("codec_small_decode_per_s", small, Some("report"));
    push("codec_chunk_decode_mib_s", chunk, Some("report"));
    push("floor_unix_roundtrip_p50_us", us(unix_rtt), Some("floor"));
    push("floor_fork_exec_true_p50_ms", ms(fork_exec), Some("floor"));
    push("floor_socket_copy_mib_s", copy, Some("floor"));
    push("exec_roundtrip_p50_floor_ratio", exec_p50 / ms(fork_exec).max(1e-9), Some("x floor"));
    push("ping_p50_floor_ratio", ping_p50 / us(unix_rtt).max(1e-9), Some("x floor"));
    push("stdout_stream_floor_ratio", copy / stdout.max(1e-9), Some("x floor"));
    push("fs_write_floor_ratio", copy / fs_write.max(1e-9), Some("x floor"));
    push("fs_read_floor_ratio", copy / fs_read.max(1e-9), Some("x floor"));
    push("create_to_ready_p50_floor_ratio", ms(create) / ms(fork_exec).max(1e-9), Some("x floor"));

    Ok(Report {
        date: crate::store::state::now(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        backend,
        mode: if sizes == Sizes::QUICK { "quick" } else { "full" },
        figures,
    })
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
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_figure_and_the_machine() {
        let report = Report {
            date: "2026-12-06T00:00:00.000Z".into(),
            cores: 2,
            kernel: "6.1".into(),
            backend: "namespace",
            mode: "quick",
            figures: vec![Figure { key: "ping_p50_us", value: 12.5, target: None }],
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["ping_p50_us"], 12.5);
        assert_eq!(value["machine_cores"], 2);
        assert_eq!(value["backend"], "namespace");
        assert!(report.to_table().contains("ping_p50_us"));
    }
}
