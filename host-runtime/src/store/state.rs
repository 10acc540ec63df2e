//! The state store: one `DIR/state.json` per named sandbox, and sandbox name rules.
//!
//! ```text
//!  create ──► Running ──stop──► Draining ──exit──► Stopped
//!    start ──►   │  └──drain──► Draining ──last exec ended──► Stopped (by the sandbox process)
//!                │                   └──timeout, SIGTERM/SIGKILL──► Stopped
//!                ├──kill──► Stopped (exit code 137)
//!                ├──client's core.shutdown, --max-duration, --idle-timeout──► Stopped (written
//!                │                                          by the sandbox process itself)
//!                ├──guest ended with nobody asking──► Crashed (written by the sandbox process,
//!                │                                    with the cause it saw)
//!                └──pid gone or not our sandbox process (read time only)──► Crashed
//! ```
//!
//! Writes are atomic (`state.json.tmp` then `rename`). Otherwise `Crashed` is not written: a
//! recorded `Running` or `Draining` whose pid is no longer a `moat __sandbox` process reads as
//! `Crashed`.
//! This module does not start or signal processes; `lifecycle` does.

use std::path::{Path, PathBuf};

use crate::error::RuntimeError;
use crate::limits::MAX_SANDBOX_NAME_BYTES;
use crate::store::home::SandboxSpec;

/// The state file's name in a sandbox directory.
pub const STATE_FILE: &str = "state.json";

/// The `version` this moat writes. 1: `spec` holds everything `moat start` needs to launch the
/// sandbox again (its root as resolved, its whole configuration, volumes and `ephemeral`
/// included). A file without `version` (0) was written before that was promised.
pub const STATE_VERSION: u32 = 1;

/// Where a named sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The sandbox process is serving its relay.
    Running,
    /// `moat stop` asked it to shut down and is waiting for it to exit, or `moat drain` asked
    /// it to take no new exec and stop when the running ones end.
    Draining,
    /// It exited because it was asked to: moat stopped or killed it, a client sent
    /// `core.shutdown`, or a time limit fired.
    Stopped,
    /// Its guest ended with nobody asking (recorded with the cause), or it is recorded as running
    /// but its process is gone.
    Crashed,
}

impl Status {
    /// The lowercase name used in `state.json` and `moat ls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Draining => "draining",
            Status::Stopped => "stopped",
            Status::Crashed => "crashed",
        }
    }
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxState {
    /// The format of this file ([`STATE_VERSION`]; absent, 0, in files older than `moat start`).
    #[serde(default)]
    pub version: u32,
    /// The sandbox name.
    pub name: String,
    /// What it was created with.
    pub spec: SandboxSpec,
    /// Its status.
    pub status: Status,
    /// The sandbox process's pid (also its process group and session id).
    pub pid: Option<i32>,
    /// When `moat create` made it (RFC 3339 UTC).
    pub created_at: String,
    /// When its sandbox process reported `ok`.
    pub started_at: Option<String>,
    /// When moat saw it stop.
    pub stopped_at: Option<String>,
    /// The sandbox process's exit status as a shell would show it (128 + signal when killed).
    pub exit_code: Option<i32>,
    /// Why it stopped (`moat stop`, `moat kill`, a time limit, the guest shutting down).
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// Now, as an RFC 3339 UTC timestamp with milliseconds.
pub fn now() -> String {
    moat_protocol::exec_log::format_timestamp(std::time::SystemTime::now())
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Writes `DIR/state.json` atomically.
pub fn write(dir: &Path, state: &SandboxState) -> Result<(), RuntimeError> {
    let path = state_path(dir);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(state)
        .map_err(|source| RuntimeError::State { path: path.clone(), source })?;
    std::fs::write(&tmp, text).map_err(RuntimeError::io("write sandbox state", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(RuntimeError::io("replace sandbox state", &path))
}

/// Reads `DIR/state.json` as recorded, without checking the process.
pub fn read_recorded(dir: &Path) -> Result<SandboxState, RuntimeError> {
    let path = state_path(dir);
    let text = std::fs::read(&path).map_err(RuntimeError::io("read sandbox state", &path))?;
    serde_json::from_slice(&text).map_err(|source| RuntimeError::State { path, source })
}

/// Reads `DIR/state.json`; a live status whose process is gone reads as `Crashed`.
pub fn read(dir: &Path) -> Result<SandboxState, RuntimeError> {
    let mut state = read_recorded(dir)?;
    let live = matches!(state.status, Status::Running | Status::Draining);
    if live && !state.pid.is_some_and(|pid| is_sandbox_process(pid, dir)) {
        state.status = Status::Crashed;
    }
    Ok(state)
}

/// Whether `pid` is a live `moat __sandbox DIR` process (not a zombie, not a reused pid).
pub fn is_sandbox_process(pid: i32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|b| *b == 0);
    let dir = dir.as_os_str().as_encoded_bytes();
    args.any(|a| a == b"__sandbox") && args.any(|a| a == dir)
}

/// Checks a sandbox name: 1..=128 UTF-8 bytes, no `/` or NUL, not `.` or `..`, no leading `-`.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_SANDBOX_NAME_BYTES {
        "it is longer than 128 bytes"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else if name == "." || name == ".." {
        "it is '.' or '..'"
    } else if name.starts_with('-') {
        "it starts with '-'"
    } else {
        return Ok(());
    };
    Err(RuntimeError::InvalidName { name: name.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::RootSource;

    fn scratch(test: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join("moat-state-unit-test").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn state(status: Status, pid: Option<i32>) -> SandboxState {
        SandboxState {
            version: STATE_VERSION,
            name: "box".into(),
            spec: SandboxSpec {
                name: "box".into(),
                root: RootSource::Host,
                agentd: "/bin/true".into(),
                backend: Default::default(),
                rootless: false,
                config: Default::default(),
            },
            status,
            pid,
            created_at: now(),
            started_at: None,
            stopped_at: None,
            exit_code: None,
            stop_reason: None,
        }
    }

    #[test]
    fn state_round_trips_and_leaves_no_temporary_file() {
        let dir = scratch("round-trip");
        let written = state(Status::Stopped, Some(1));
        write(&dir, &written).unwrap();
        assert_eq!(read(&dir).unwrap(), written);
        assert!(!dir.join("state.json.tmp").exists());
    }

    #[test]
    fn running_with_a_pid_that_is_not_a_sandbox_process_reads_as_crashed() {
        let dir = scratch("not-ours");
        let own_pid = i32::try_from(std::process::id()).unwrap();
        write(&dir, &state(Status::Running, Some(own_pid))).unwrap();
        assert_eq!(read(&dir).unwrap().status, Status::Crashed);
        assert_eq!(read_recorded(&dir).unwrap().status, Status::Running);
    }

    #[test]
    fn a_state_file_without_version_reads_as_version_0() {
        let dir = scratch("no-version");
        let mut json = serde_json::to_value(state(Status::Stopped, None)).unwrap();
        json.as_object_mut().unwrap().remove("version");
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(read(&dir).unwrap().version, 0);
    }

    #[test]
    fn status_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&Status::Draining).unwrap(), "\"draining\"");
    }

    #[test]
    fn names_follow_the_rules() {
        for good in ["a", "web-1", "é", &"x".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "-x", "a/b", "a\0b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
