//! Shared helpers of the CLI end-to-end tests: the real `moat` binary with its own `MOAT_HOME`.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod registry;
pub mod token;

/// Fails the test, saying why, when not running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (moat makes pid, mount and net namespaces); run the tests as root"
    );
}

/// A fresh, empty `MOAT_HOME` for one test, under cargo's target tmp dir.
pub fn moat_home(test: &str) -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moat-home").join(test);
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// Runs `moat ARGS...` with `MOAT_HOME=home` and no stdin.
pub fn moat(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .env("MOAT_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("spawn moat")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Processes (other than this test process) whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) && entry.file_name() != std::process::id().to_string().as_str() {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Processes in the cgroup of the sandbox `name` (`/moat-NAME-PID` on v2, `/moat/NAME-PID` on
/// v1): every process of a sandbox, as root.
pub fn processes_in_cgroup(name: &str) -> Vec<String> {
    let (v2, v1) = (format!("/moat-{name}-"), format!("/moat/{name}-"));
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(&v2) || cgroup.contains(&v1) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("{}: {}", entry.file_name().to_string_lossy(), comm.trim()));
        }
    }
    found
}

/// Removes the sandbox `name` of the home `home` (`moat rm -f`) when dropped, so a test that
/// fails half way leaves nothing running.
pub struct RemoveOnDrop {
    home: PathBuf,
    name: String,
}

impl RemoveOnDrop {
    /// A guard for the sandbox `name` of `home`.
    pub fn new(home: impl Into<PathBuf>, name: &str) -> RemoveOnDrop {
        RemoveOnDrop { home: home.into(), name: name.to_owned() }
    }

    /// The home the sandbox lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = moat(&self.home, &["rm", "-f", &self.name]);
    }
}

/// The `moat` under test and a `moat-agentd` beside it (built with cargo when missing, as the
/// CLI does on its first run), for tests that drive the library in-process.
pub fn executables() -> moat_runtime::lifecycle::Executables {
    let moat = PathBuf::from(env!("CARGO_BIN_EXE_moat"));
    let agentd = moat.with_file_name("moat-agentd");
    if !agentd.is_file() {
        let release = moat.parent().and_then(Path::file_name).is_some_and(|n| n == "release");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "moat-agentd"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p moat-agentd");
        assert!(status.success(), "cargo build -p moat-agentd failed");
    }
    moat_runtime::lifecycle::Executables { moat, agentd }
}

/// A shell script for a sandbox: builds a small Debian package with `dpkg-deb` and installs it
/// with `dpkg` into a fresh root under `/tmp` (the host's dpkg, from the default root's `/usr`),
/// then prints the installed file and dpkg's status line. A package manager's work (unpacking,
/// chown, rename, fsync) under the sandbox's seccomp profile, capabilities and id map.
pub const DPKG_PROBE: &str = "set -e
mkdir -p /tmp/p/DEBIAN /tmp/p/usr/share/moat-probe /tmp/r/var/lib/dpkg/updates \
  /tmp/r/var/lib/dpkg/info /tmp/r/var/lib/dpkg/triggers
printf 'Package: moat-probe\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: moat <moat@localhost>\\nDescription: probe\\n' >/tmp/p/DEBIAN/control
echo installed >/tmp/p/usr/share/moat-probe/marker
dpkg-deb --build --root-owner-group /tmp/p /tmp/probe.deb >/dev/null
: >/tmp/r/var/lib/dpkg/status
dpkg --root=/tmp/r --force-script-chrootless -i /tmp/probe.deb >/dev/null
cat /tmp/r/usr/share/moat-probe/marker
dpkg --root=/tmp/r -s moat-probe | grep '^Status:'
";

/// What [`DPKG_PROBE`] prints when the install worked.
pub const DPKG_PROBE_OUTPUT: &str = "installed\nStatus: install ok installed\n";

/// A python3 program that calls each `(name, number, arg0)` and prints `name errno` per line
/// (`0` when the call succeeded).
pub fn syscall_probe(calls: &[(&str, i64, u64)]) -> String {
    let list: Vec<String> =
        calls.iter().map(|(name, nr, arg)| format!("({name:?}, {nr}, {arg})")).collect();
    format!(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         for name, nr, arg in [{}]:\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   r = libc.syscall(ctypes.c_long(nr), ctypes.c_ulong(arg), ctypes.c_long(0),\n\
         \x20                    ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))\n\
         \x20   print(name, 0 if r >= 0 else ctypes.get_errno())\n",
        list.join(", ")
    )
}
