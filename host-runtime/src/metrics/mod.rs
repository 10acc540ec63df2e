//! Resource metrics of running sandboxes, read on the host: a snapshot, a stream at an interval,
//! every sandbox at once. `moat stats` and [`crate::api`] call this.
//!
//! ```text
//!  namespace backend: the sandbox's cgroup (cgroup.rs: v2 or v1) for cpu, memory, disk;
//!                     the agent's /proc/PID/net/dev (its network namespace) for network;
//!                     the agent's process tree (procfs.rs) for what the cgroup lacks
//!  VM backend:        the VM process on the host: /proc/PID/stat (cpu), status (VmRSS), io
//!  both:              uptime from the sandbox process's start time
//! ```
//!
//! CPU percent is the CPU time used between two samples over the wall time between them (100
//! is one CPU busy), so a snapshot takes two samples [`CPU_SAMPLE_MS`] apart. The process-tree
//! fallback counts live processes and what they have waited for; memory there is the sum of
//! RSS (shared pages count once per process). The VM's network counters are not built (the
//! guest has no network device yet), so they are `None`.

pub mod cgroup;
pub mod procfs;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::isolation::BackendKind;
use crate::error::RuntimeError;
use crate::limits::{CPU_SAMPLE_MS, MIN_METRICS_INTERVAL_MS};
use crate::store::home::SandboxDir;
use crate::store::state::{self, Status};

/// What a sandbox uses, at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// The sandbox.
    pub sandbox: String,
    /// When it was measured, in milliseconds since the Unix epoch.
    pub timestamp_unix_ms: u64,
    /// How long its sandbox process has run, in milliseconds.
    pub uptime_ms: u64,
    /// CPU used since the previous sample, in percent of one CPU.
    pub cpu_percent: f64,
    /// CPU time of everything it ran, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Its memory limit in bytes (`None`: none set).
    pub memory_limit_bytes: Option<u64>,
    /// Bytes read from storage.
    pub disk_read_bytes: u64,
    /// Bytes written to storage.
    pub disk_write_bytes: u64,
    /// Bytes received on its network interfaces but loopback (`None`: not measured).
    pub net_rx_bytes: Option<u64>,
    /// Bytes sent on its network interfaces but loopback (`None`: not measured).
    pub net_tx_bytes: Option<u64>,
    /// Where the figures came from: `cgroup-v2`, `cgroup-v1`, `processes` or `vmm-process`.
    pub source: &'static str,
}

/// One reading, before CPU percent can be worked out.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    metrics: Metrics,
}

/// The sandbox in `dir`, which must be running (or draining).
fn sample(dir: &SandboxDir) -> Result<Sample, RuntimeError> {
    let record = state::read(dir.path())?;
    let pid = match (record.status, record.pid) {
        (Status::Running | Status::Draining, Some(pid)) => pid,
        (status, _) => {
            return Err(RuntimeError::NotRunning { name: record.name, status: status.as_str() });
        }
    };
    let at = Instant::now();
    let processes = procfs::scan(Path::new("/proc"));
    let ticks = clock_ticks_per_sec();
    let uptime_ms = processes
        .get(&pid)
        .zip(read_proc("uptime").as_deref().and_then(procfs::parse_uptime_secs))
        .map_or(0, |(stat, up)| {
            ((up - stat.start_ticks as f64 / ticks as f64).max(0.0) * 1000.0) as u64
        });
    let below = procfs::subtree(&processes, pid);
    let config_limit = record.spec.config.memory_mib.map(|mib| u64::from(mib) * 1024 * 1024);
    let mut metrics = Metrics {
        sandbox: record.name.clone(),
        timestamp_unix_ms: unix_ms(),
        uptime_ms,
        cpu_percent: 0.0,
        cpu_time_ns: 0,
        memory_bytes: 0,
        memory_limit_bytes: config_limit,
        disk_read_bytes: 0,
        disk_write_bytes: 0,
        net_rx_bytes: None,
        net_tx_bytes: None,
        source: "processes",
    };
    let tree_root = match record.spec.backend {
        BackendKind::Vm => {
            metrics.source = "vmm-process";
            metrics.memory_limit_bytes = Some(
                u64::from(
                    record.spec.config.memory_mib.unwrap_or(crate::backend::vm::DEFAULT_MEMORY_MIB),
                ) * 1024
                    * 1024,
            );
            below.iter().copied().find(|&p| cmdline_has(p, "__vm")).unwrap_or(pid)
        }
        BackendKind::Namespace => {
            let agent = below.iter().copied().find(|p| {
                let is_agent = |p: &i32| processes.get(p).is_some_and(|s| s.comm == "moat-agentd");
                is_agent(p) && !processes.get(p).is_some_and(|s| is_agent(&s.ppid))
            });
            if let Some((rx, tx)) = agent
                .and_then(|a| read_proc(&format!("{a}/net/dev")))
                .as_deref()
                .and_then(procfs::parse_net_dev)
            {
                (metrics.net_rx_bytes, metrics.net_tx_bytes) = (Some(rx), Some(tx));
            }
            agent.unwrap_or(pid)
        }
    };
    let tree = procfs::subtree(&processes, tree_root);
    let tree_cpu_ns = tree
        .iter()
        .filter_map(|p| processes.get(p))
        .map(|s| s.cpu_ticks.saturating_mul(1_000_000_000) / ticks)
        .sum::<u64>();
    let tree_rss = tree
        .iter()
        .map(|p| read_proc(&format!("{p}/status")).as_deref().map_or(0, procfs::parse_status_rss))
        .sum::<u64>();
    let tree_io = tree
        .iter()
        .filter_map(|p| read_proc(&format!("{p}/io")).as_deref().and_then(procfs::parse_io))
        .fold((0u64, 0u64), |(r, w), (dr, dw)| (r.saturating_add(dr), w.saturating_add(dw)));
    let reading = match record.spec.backend {
        BackendKind::Namespace => {
            let leaf = crate::backend::namespace::cgroup::leaf_name(&record.name, pid as u32);
            let dirs = cgroup::CgroupDirs::of(
                Path::new(crate::backend::namespace::cgroup::CGROUP_ROOT),
                &leaf,
            );
            if dirs.exists() {
                metrics.source = if matches!(dirs, cgroup::CgroupDirs::V2(_)) {
                    "cgroup-v2"
                } else {
                    "cgroup-v1"
                };
                dirs.read()
            } else {
                cgroup::CgroupReading::default()
            }
        }
        BackendKind::Vm => cgroup::CgroupReading::default(),
    };
    metrics.cpu_time_ns = reading.cpu_time_ns.unwrap_or(tree_cpu_ns);
    metrics.memory_bytes = reading.memory_bytes.unwrap_or(tree_rss);
    metrics.memory_limit_bytes = reading.memory_limit_bytes.or(metrics.memory_limit_bytes);
    (metrics.disk_read_bytes, metrics.disk_write_bytes) = reading.disk_bytes.unwrap_or(tree_io);
    Ok(Sample { at, metrics })
}

/// `later`'s metrics with CPU percent over the time since `earlier`.
fn with_cpu_percent(earlier: &Sample, later: Sample) -> Metrics {
    let mut metrics = later.metrics;
    let wall_ns = later.at.duration_since(earlier.at).as_nanos() as f64;
    let cpu_ns = metrics.cpu_time_ns.saturating_sub(earlier.metrics.cpu_time_ns) as f64;
    metrics.cpu_percent = if wall_ns > 0.0 { cpu_ns / wall_ns * 100.0 } else { 0.0 };
    metrics
}

/// A snapshot of the sandbox in `dir` (two samples [`CPU_SAMPLE_MS`] apart, for CPU percent).
pub fn snapshot(dir: &SandboxDir) -> Result<Metrics, RuntimeError> {
    let first = sample(dir)?;
    std::thread::sleep(Duration::from_millis(CPU_SAMPLE_MS));
    Ok(with_cpu_percent(&first, sample(dir)?))
}

/// A snapshot of every running sandbox of the moat home `home`, sorted by name (one pause for
/// all of them; a sandbox that stops meanwhile is left out).
pub fn snapshot_all(home: &Path) -> Result<Vec<Metrics>, RuntimeError> {
    let running: Vec<SandboxDir> = crate::lifecycle::list_in(home)?
        .into_iter()
        .filter(|s| matches!(s.status, Status::Running | Status::Draining))
        .map(|s| SandboxDir::open(home.join("sandboxes").join(&s.name)))
        .collect();
    let firsts: Vec<(SandboxDir, Sample)> =
        running.into_iter().filter_map(|dir| sample(&dir).ok().map(|s| (dir, s))).collect();
    std::thread::sleep(Duration::from_millis(CPU_SAMPLE_MS));
    let mut out: Vec<Metrics> = firsts
        .iter()
        .filter_map(|(dir, first)| sample(dir).ok().map(|later| with_cpu_percent(first, later)))
        .collect();
    out.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));
    Ok(out)
}

/// Metrics of one sandbox every `interval` (at least [`MIN_METRICS_INTERVAL_MS`]); each item's
/// CPU percent covers the time since the one before. It blocks in `next` for the interval, and
/// ends after yielding the error that ended it (the sandbox stopped: `NotRunning`).
#[derive(Debug)]
pub struct MetricsStream {
    dir: SandboxDir,
    interval: Duration,
    last: Option<Sample>,
    ended: bool,
}

impl MetricsStream {
    /// A stream over the sandbox in `dir`.
    pub fn new(dir: SandboxDir, interval: Duration) -> MetricsStream {
        let interval = interval.max(Duration::from_millis(MIN_METRICS_INTERVAL_MS));
        MetricsStream { dir, interval, last: None, ended: false }
    }
}

impl Iterator for MetricsStream {
    type Item = Result<Metrics, RuntimeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let result = (|| {
            let earlier = match self.last.take() {
                Some(last) => last,
                None => sample(&self.dir)?,
            };
            std::thread::sleep(self.interval);
            let later = sample(&self.dir)?;
            let metrics = with_cpu_percent(&earlier, later.clone());
            self.last = Some(later);
            Ok(metrics)
        })();
        self.ended = result.is_err();
        Some(result)
    }
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc").join(path)).ok()
}

fn cmdline_has(pid: i32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
}

fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_at(at: Instant, cpu_time_ns: u64) -> Sample {
        Sample {
            at,
            metrics: Metrics {
                sandbox: "s".into(),
                timestamp_unix_ms: 0,
                uptime_ms: 0,
                cpu_percent: 0.0,
                cpu_time_ns,
                memory_bytes: 0,
                memory_limit_bytes: None,
                disk_read_bytes: 0,
                disk_write_bytes: 0,
                net_rx_bytes: None,
                net_tx_bytes: None,
                source: "processes",
            },
        }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let start = Instant::now();
        let earlier = sample_at(start, 1_000_000_000);
        let later = sample_at(start + Duration::from_millis(500), 1_750_000_000);
        assert!((with_cpu_percent(&earlier, later).cpu_percent - 150.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_percent_never_goes_negative_or_divides_by_zero() {
        let start = Instant::now();
        let later = sample_at(start, 5);
        assert_eq!(with_cpu_percent(&sample_at(start, 10), later).cpu_percent, 0.0);
    }

    #[test]
    fn a_sandbox_that_is_not_running_is_a_typed_error() {
        let home = tempfile::tempdir().unwrap();
        let dir = SandboxDir::create(home.path(), "gone").unwrap();
        // No state.json at all: the state store's own error.
        assert!(snapshot(&dir).is_err());
        let mut stream = MetricsStream::new(dir, Duration::ZERO);
        assert!(stream.next().unwrap().is_err());
        assert!(stream.next().is_none(), "a stream ends after its error");
    }
}
