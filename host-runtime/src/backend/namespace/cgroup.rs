//! `--cpus`, `--memory` and `--pids-limit` on the namespace backend: a cgroup per sandbox,
//! cgroup v2 or v1. Every sandbox has one, since the pids limit is on by default.
//!
//! ```text
//!  sandbox process: create the leaf <name>-<its pid> (v2: /sys/fs/cgroup/moat-<leaf>; v1:
//!    memory/moat/<leaf>, cpu/moat/<leaf>, pids/moat/<leaf>) ─► write the limits ─► pass the
//!    cgroup.procs paths to __ns-init
//!  __ns-init (PID 1 of the new pid namespace): write "0" (itself) to each ─► exec the agent,
//!    whose every descendant inherits the cgroup
//!  sandbox process, after the agent exited: rmdir; `moat kill`/`rm -f`/`stop`, after killing a
//!    sandbox process (which then cannot): rmdir what it left
//! ```
//!
//! The sandbox process's pid in the leaf name keeps two sandboxes of one name (in two moat homes)
//! out of each other's cgroup.
//!
//! ```text
//! ```
//!
//! A VM sizes its guest instead (libkrun's vCPU count and memory), so this is the namespace
//! backend only. A limit that cannot be applied is an error, never silently ignored.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::RuntimeError;
use crate::limits::{CGROUP_REMOVE_TIMEOUT_MS, POLL_INTERVAL_MS};

/// Where cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The environment variable carrying the `cgroup.procs` paths (`:`-separated) to `__ns-init`.
pub const PROCS_ENV: &str = "MOAT_CGROUP_PROCS";

/// v1 controllers a sandbox gets a leaf in for accounting alone (`crate::metrics` reads them),
/// whether or not it has a limit there.
const ACCOUNTING_V1: [&str; 3] = ["cpuacct", "memory", "blkio"];

/// CFS period used for `--cpus`, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The sandbox's cgroup directories (one on v2; one per controller on v1).
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
}

/// The limits to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Whole CPUs of quota.
    pub cpus: Option<u8>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
    /// Most processes (and threads) at once.
    pub pids: Option<u32>,
}

/// The control files and values for `limits`, relative to the cgroup directory, for v2
/// (`v2 = true`) or v1 (`(controller, file, value)`, controller empty on v2).
pub fn limit_files(limits: CgroupLimits, v2: bool) -> Vec<(&'static str, &'static str, String)> {
    let mut files = Vec::new();
    if let Some(mib) = limits.memory_mib {
        let bytes = u64::from(mib) * 1024 * 1024;
        if v2 {
            files.push(("", "memory.max", bytes.to_string()));
            files.push(("", "memory.swap.max", "0".to_owned()));
        } else {
            files.push(("memory", "memory.limit_in_bytes", bytes.to_string()));
        }
    }
    if let Some(cpus) = limits.cpus {
        let quota = u64::from(cpus) * CPU_PERIOD_US;
        if v2 {
            files.push(("", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        } else {
            files.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
            files.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
        }
    }
    if let Some(pids) = limits.pids {
        files.push((if v2 { "" } else { "pids" }, "pids.max", pids.to_string()));
    }
    files
}

fn cgroup_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_owned();
    move |source| RuntimeError::Cgroup { what, path, source }
}

impl SandboxCgroup {
    /// Creates (or reuses) the cgroup `leaf` ([`leaf_name`]) and writes `limits`. `None` when
    /// there is nothing to limit.
    pub fn create(leaf: &str, limits: CgroupLimits) -> Result<Option<SandboxCgroup>, RuntimeError> {
        if limits.cpus.is_none() && limits.memory_mib.is_none() && limits.pids.is_none() {
            return Ok(None);
        }
        let root = Path::new(CGROUP_ROOT);
        let v2 = root.join("cgroup.controllers").is_file();
        let mut cgroup = SandboxCgroup { dirs: Vec::new() };
        if v2 {
            let wanted: Vec<&str> = [
                limits.memory_mib.map(|_| "+memory"),
                limits.cpus.map(|_| "+cpu"),
                limits.pids.map(|_| "+pids"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let control = root.join("cgroup.subtree_control");
            std::fs::write(&control, wanted.join(" "))
                .map_err(cgroup_error("enable controllers in", &control))?;
            enable_accounting_v2(root, &control);
        }
        for (controller, file, value) in limit_files(limits, v2) {
            let dir = leaf_dir(root, controller, leaf, v2);
            if !cgroup.dirs.contains(&dir) {
                std::fs::create_dir_all(&dir).map_err(cgroup_error("create cgroup", &dir))?;
                cgroup.dirs.push(dir.clone());
            }
            let path = dir.join(file);
            std::fs::write(&path, &value).map_err(cgroup_error("write cgroup limit", &path))?;
        }
        if !v2 {
            // Accounting only (`crate::metrics`): a leaf in each v1 controller the host mounts.
            for controller in ACCOUNTING_V1 {
                let dir = leaf_dir(root, controller, leaf, false);
                if root.join(controller).is_dir() && !cgroup.dirs.contains(&dir) {
                    std::fs::create_dir_all(&dir).map_err(cgroup_error("create cgroup", &dir))?;
                    cgroup.dirs.push(dir);
                }
            }
        }
        Ok(Some(cgroup))
    }

    /// The `cgroup.procs` files the agent's first process joins, `:`-separated for [`PROCS_ENV`].
    pub fn procs_env(&self) -> String {
        let files: Vec<String> = self
            .dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs").to_string_lossy().into_owned())
            .collect();
        files.join(":")
    }
}

impl Drop for SandboxCgroup {
    /// Removes the cgroup directories once their processes are gone (they linger briefly after
    /// the agent is reaped). Logs what could not be removed.
    fn drop(&mut self) {
        remove_dirs(self.dirs.iter().rev());
    }
}

/// Enables the `memory` and `io` controllers the host has, for accounting alone
/// (`crate::metrics`); a host that refuses keeps working, and metrics fall back to the process
/// tree for what they would have counted.
fn enable_accounting_v2(root: &Path, control: &Path) {
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["memory", "io"] {
        if available.split_whitespace().any(|c| c == controller) {
            if let Err(err) = std::fs::write(control, format!("+{controller}")) {
                tracing::info!(controller, %err, "cgroup controller not enabled for accounting");
            }
        }
    }
}

/// The cgroup leaf of the sandbox `name` whose sandbox process is `sandbox_pid`.
pub fn leaf_name(name: &str, sandbox_pid: u32) -> String {
    format!("{name}-{sandbox_pid}")
}

/// The directory of `leaf` for `controller` (v1) or the unified hierarchy (v2).
fn leaf_dir(root: &Path, controller: &str, leaf: &str, v2: bool) -> PathBuf {
    if v2 {
        root.join(format!("moat-{leaf}"))
    } else {
        root.join(controller).join("moat").join(leaf)
    }
}

/// SIGKILLs every process still in the cgroups of `leaf` (the agent and what it ran, which
/// outlive a killed sandbox process: the agent would otherwise shut down gracefully, taking
/// seconds) and removes the cgroups once they are empty, so that `moat kill` and `moat rm -f`
/// return only when nothing of the sandbox runs. Does nothing where there are none.
pub fn kill_left_behind(leaf: &str) {
    let root = Path::new(CGROUP_ROOT);
    let v2 = root.join("cgroup.controllers").is_file();
    let dirs: Vec<PathBuf> = if v2 {
        vec![leaf_dir(root, "", leaf, true)]
    } else {
        ["memory", "cpu", "pids"]
            .iter()
            .chain(ACCOUNTING_V1.iter().filter(|c| **c != "memory"))
            .map(|c| leaf_dir(root, c, leaf, false))
            .collect()
    };
    let dirs: Vec<PathBuf> = dirs.into_iter().filter(|dir| dir.is_dir()).collect();
    let deadline = Instant::now() + Duration::from_millis(CGROUP_REMOVE_TIMEOUT_MS);
    for dir in &dirs {
        loop {
            kill_members(dir, v2);
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                Err(err) if Instant::now() >= deadline => {
                    tracing::warn!(dir = %dir.display(), %err, "could not empty the cgroup");
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
            }
        }
    }
}

/// SIGKILLs the processes of the cgroup `dir`: `cgroup.kill` on v2 (Linux 5.14+, which also
/// catches a process forking meanwhile), else each pid `cgroup.procs` lists (the caller
/// repeats until the cgroup is empty).
fn kill_members(dir: &Path, v2: bool) {
    if v2 && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else { return };
    for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Removes each directory, retrying while it is busy, for at most [`CGROUP_REMOVE_TIMEOUT_MS`].
fn remove_dirs<'a>(dirs: impl Iterator<Item = &'a PathBuf>) {
    let deadline = Instant::now() + Duration::from_millis(CGROUP_REMOVE_TIMEOUT_MS);
    for dir in dirs {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                Err(err) if Instant::now() >= deadline => {
                    tracing::warn!(dir = %dir.display(), %err, "could not remove the cgroup");
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
            }
        }
    }
}

/// In `__ns-init`: moves this process into every cgroup named by [`PROCS_ENV`] (writing `0`
/// means "the writer" in both cgroup versions).
pub fn join_from_env() -> Result<(), RuntimeError> {
    let Some(files) = std::env::var_os(PROCS_ENV) else { return Ok(()) };
    for file in std::env::split_paths(&files) {
        std::fs::write(&file, "0").map_err(cgroup_error("join cgroup", &file))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_limits_use_memory_max_and_cpu_max() {
        let limits = CgroupLimits { cpus: Some(2), memory_mib: Some(64), pids: Some(100) };
        let files = limit_files(limits, true);
        assert!(files.contains(&("", "pids.max", "100".to_owned())));
        assert!(files.contains(&("", "memory.max", "67108864".to_owned())));
        assert!(files.contains(&("", "memory.swap.max", "0".to_owned())));
        assert!(files.contains(&("", "cpu.max", "200000 100000".to_owned())));
    }

    #[test]
    fn v1_limits_use_one_directory_per_controller() {
        let limits = CgroupLimits { cpus: Some(1), memory_mib: Some(128), pids: Some(64) };
        let files = limit_files(limits, false);
        assert_eq!(
            files,
            vec![
                ("memory", "memory.limit_in_bytes", "134217728".to_owned()),
                ("cpu", "cpu.cfs_period_us", "100000".to_owned()),
                ("cpu", "cpu.cfs_quota_us", "100000".to_owned()),
                ("pids", "pids.max", "64".to_owned()),
            ]
        );
    }

    #[test]
    fn leaves_carry_the_sandbox_process_pid_under_moat() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(leaf_name("box", 42), "box-42");
        assert_eq!(leaf_dir(root, "", "box-42", true), root.join("moat-box-42"));
        assert_eq!(leaf_dir(root, "pids", "box-42", false), root.join("pids/moat/box-42"));
    }

    #[test]
    fn nothing_to_limit_makes_no_cgroup() {
        let none =
            SandboxCgroup::create("x", CgroupLimits { cpus: None, memory_mib: None, pids: None });
        assert!(none.unwrap().is_none());
    }
}
