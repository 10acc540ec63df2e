//! Shared helpers of the CLI end-to-end tests: the real `moat` binary with its own `MOAT_HOME`.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod registry;

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
