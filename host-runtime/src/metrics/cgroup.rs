//! Reading a namespace sandbox's cgroup ([`crate::backend::namespace::cgroup`] makes it):
//! cgroup v2 (one directory) or v1 (one per controller). Each reader takes the directories, so
//! tests point them at fixture files.
//!
//! ```text
//!            v2 (moat-LEAF/)                 v1 (CONTROLLER/moat/LEAF/)
//!  cpu       cpu.stat usage_usec             cpuacct/ cpuacct.usage (ns)
//!  memory    memory.current, memory.max      memory/  memory.usage_in_bytes, memory.limit_in_bytes
//!  disk      io.stat rbytes= wbytes=         blkio/   blkio.throttle.io_service_bytes Read/Write
//! ```
//!
//! A file that is missing (a controller the host lacks or did not enable) reads as `None`, and
//! the caller falls back to the process tree.

use std::path::{Path, PathBuf};

/// What a cgroup says of a sandbox; `None` where it has no such file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupReading {
    /// CPU time of every process that ran in it, in nanoseconds.
    pub cpu_time_ns: Option<u64>,
    /// Memory charged to it (including page cache), in bytes.
    pub memory_bytes: Option<u64>,
    /// Its memory limit in bytes (`None`: none, or no file).
    pub memory_limit_bytes: Option<u64>,
    /// Bytes read from and written to block devices.
    pub disk_bytes: Option<(u64, u64)>,
}

/// Where a sandbox's cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    /// The unified hierarchy's directory.
    V2(PathBuf),
    /// The directories of the `cpuacct`, `memory` and `blkio` controllers.
    V1 {
        /// `cpuacct/moat/LEAF`.
        cpuacct: PathBuf,
        /// `memory/moat/LEAF`.
        memory: PathBuf,
        /// `blkio/moat/LEAF`.
        blkio: PathBuf,
    },
}

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this large is none.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

impl CgroupDirs {
    /// The directories of cgroup `leaf` under `root` (`/sys/fs/cgroup`), v2 when `root` holds
    /// `cgroup.controllers`.
    pub fn of(root: &Path, leaf: &str) -> CgroupDirs {
        if root.join("cgroup.controllers").is_file() {
            CgroupDirs::V2(root.join(format!("moat-{leaf}")))
        } else {
            let dir = |controller: &str| root.join(controller).join("moat").join(leaf);
            CgroupDirs::V1 { cpuacct: dir("cpuacct"), memory: dir("memory"), blkio: dir("blkio") }
        }
    }

    /// Whether any of its directories exists (the sandbox has a cgroup).
    pub fn exists(&self) -> bool {
        match self {
            CgroupDirs::V2(dir) => dir.is_dir(),
            CgroupDirs::V1 { cpuacct, memory, blkio } => {
                cpuacct.is_dir() || memory.is_dir() || blkio.is_dir()
            }
        }
    }

    /// Reads what its files say.
    pub fn read(&self) -> CgroupReading {
        match self {
            CgroupDirs::V2(dir) => CgroupReading {
                cpu_time_ns: read(dir, "cpu.stat")
                    .and_then(|t| keyed(&t, "usage_usec"))
                    .map(|us| us.saturating_mul(1000)),
                memory_bytes: read(dir, "memory.current").and_then(|t| t.trim().parse().ok()),
                memory_limit_bytes: read(dir, "memory.max").and_then(|t| t.trim().parse().ok()),
                disk_bytes: read(dir, "io.stat").map(|t| v2_io(&t)),
            },
            CgroupDirs::V1 { cpuacct, memory, blkio } => CgroupReading {
                cpu_time_ns: read(cpuacct, "cpuacct.usage").and_then(|t| t.trim().parse().ok()),
                memory_bytes: read(memory, "memory.usage_in_bytes")
                    .and_then(|t| t.trim().parse().ok()),
                memory_limit_bytes: read(memory, "memory.limit_in_bytes")
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .filter(|&limit| limit < V1_UNLIMITED_FROM),
                disk_bytes: read(blkio, "blkio.throttle.io_service_bytes").map(|t| v1_io(&t)),
            },
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// The value of `key VALUE` lines (`cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N ...` per device, summed.
fn v2_io(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else { continue };
        let Ok(value) = value.parse::<u64>() else { continue };
        match key {
            "rbytes" => read = read.saturating_add(value),
            "wbytes" => written = written.saturating_add(value),
            _ => {}
        }
    }
    (read, written)
}

/// v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N` / `MAJ:MIN Write N` per device (and a
/// `Total` line), summed.
fn v1_io(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, op, value] = fields[..] else { continue };
        let Ok(value) = value.parse::<u64>() else { continue };
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => written = written.saturating_add(value),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn v2_reads_cpu_stat_memory_and_io_stat() {
        let root = fixture(&[
            ("cgroup.controllers", "cpu io memory pids\n"),
            ("moat-box-7/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            ("moat-box-7/memory.current", "4096\n"),
            ("moat-box-7/memory.max", "67108864\n"),
            (
                "moat-box-7/io.stat",
                "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
            ),
        ]);
        let dirs = CgroupDirs::of(root.path(), "box-7");
        assert!(matches!(dirs, CgroupDirs::V2(_)));
        assert!(dirs.exists());
        assert_eq!(
            dirs.read(),
            CgroupReading {
                cpu_time_ns: Some(1_500_000),
                memory_bytes: Some(4096),
                memory_limit_bytes: Some(64 << 20),
                disk_bytes: Some((101, 202)),
            }
        );
    }

    #[test]
    fn v2_max_is_no_memory_limit() {
        let root = fixture(&[("cgroup.controllers", ""), ("moat-b-1/memory.max", "max\n")]);
        assert_eq!(CgroupDirs::of(root.path(), "b-1").read().memory_limit_bytes, None);
    }

    #[test]
    fn v1_reads_one_directory_per_controller() {
        let root = fixture(&[
            ("cpuacct/moat/box-7/cpuacct.usage", "123456789\n"),
            ("memory/moat/box-7/memory.usage_in_bytes", "8192\n"),
            ("memory/moat/box-7/memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "blkio/moat/box-7/blkio.throttle.io_service_bytes",
                "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n",
            ),
        ]);
        let dirs = CgroupDirs::of(root.path(), "box-7");
        assert!(matches!(dirs, CgroupDirs::V1 { .. }));
        assert_eq!(
            dirs.read(),
            CgroupReading {
                cpu_time_ns: Some(123_456_789),
                memory_bytes: Some(8192),
                memory_limit_bytes: None,
                disk_bytes: Some((4096, 512)),
            }
        );
    }

    #[test]
    fn missing_files_read_as_none() {
        let root = fixture(&[("memory/moat/x-1/memory.limit_in_bytes", "1048576\n")]);
        let dirs = CgroupDirs::of(root.path(), "x-1");
        assert!(dirs.exists());
        let reading = dirs.read();
        assert_eq!(reading.memory_limit_bytes, Some(1 << 20));
        assert_eq!(
            (reading.cpu_time_ns, reading.memory_bytes, reading.disk_bytes),
            (None, None, None)
        );
        assert!(!CgroupDirs::of(root.path(), "other-2").exists());
    }
}
