//! The moat home (`$MOAT_HOME`, default `~/.moat`) and one sandbox's directory in it.
//!
//! ```text
//! $MOAT_HOME/sandboxes/<name>/
//!   spec.json      what the sandbox process needs (root source, agent binary)
//!   agent.sock     the relay socket (0600)
//!   agent.log      the agent's (and the namespace init's) stderr
//!   sandbox.log    the sandbox process's stderr
//!   drain          a drain request (`moat drain`), and its confirmation
//!   logs/exec.log  the relay's exec tap
//!   scripts/       the named scripts (--script), shared read-only at /.msb/scripts
//!   patches/       the root patch bundle (--patch), shared read-only for agentd's boot
//!   root/          mount point of the assembled host root (inside the sandbox's mount namespace)
//!   agent-vm.sock  (VM) the unix socket libkrun connects the guest agent's vsock port to
//!   logs/kernel.log (VM) the guest console: kernel messages and the agent's stderr
//!   lower/         mount point of a read-only bind of --rootfs DIR (same)
//! ```

use std::path::{Path, PathBuf};

use crate::api::config::RootSource;
use crate::config::SandboxConfig;
use crate::error::RuntimeError;
use crate::limits::LOG_TAIL_READ_BYTES;

/// The content of [`SandboxDir::drain_file`] once the relay refuses new execs.
pub const DRAIN_CONFIRMED: &str = "refusing";

/// What the sandbox process and the namespace init read from `spec.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    /// The sandbox name (also its hostname).
    pub name: String,
    /// Where the root comes from.
    pub root: RootSource,
    /// The `moat-agentd` binary to run as PID 1 (the static build on the VM backend).
    pub agentd: PathBuf,
    /// The backend [`crate::backend::isolation::choose`] picked.
    #[serde(default)]
    pub backend: crate::backend::isolation::BackendKind,
    /// Started by an unprivileged user ([`crate::backend::namespace::rootless`]): no cgroup, the user's id map.
    #[serde(default)]
    pub rootless: bool,
    /// Everything else it is configured with.
    #[serde(default)]
    pub config: SandboxConfig,
}

/// The moat home directory: `$MOAT_HOME`, else `.moat` in `$HOME`, else in the home directory
/// the password database gives this process's user (root's `/root`, or an unprivileged user's).
pub fn moat_home() -> PathBuf {
    if let Some(home) = std::env::var_os("MOAT_HOME") {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME").map_or_else(
        || {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map_or_else(|| PathBuf::from("/root"), |user| user.dir)
        },
        PathBuf::from,
    );
    user_home.join(".moat")
}

/// One sandbox's directory.
#[derive(Debug, Clone)]
pub struct SandboxDir {
    path: PathBuf,
}

impl SandboxDir {
    /// Wraps an existing directory (the sandbox process's view).
    pub fn open(path: impl Into<PathBuf>) -> SandboxDir {
        SandboxDir { path: path.into() }
    }

    /// Creates `home/sandboxes/<name>` (mode 0700); fails if it exists.
    pub fn create(home: &Path, name: &str) -> Result<SandboxDir, RuntimeError> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = home.join("sandboxes");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(RuntimeError::io("create sandboxes directory", &parent))?;
        let path = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(RuntimeError::io("create sandbox directory", &path))?;
        let path =
            path.canonicalize().map_err(RuntimeError::io("resolve sandbox directory", &path))?;
        Ok(SandboxDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The relay socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }

    /// The agent's log.
    pub fn agent_log(&self) -> PathBuf {
        self.path.join("agent.log")
    }

    /// (VM) The unix socket the guest agent's vsock connection arrives on.
    pub fn agent_vm_socket(&self) -> PathBuf {
        self.path.join("agent-vm.sock")
    }

    /// (VM) The guest console.
    pub fn kernel_log(&self) -> PathBuf {
        self.log_dir().join("kernel.log")
    }

    /// (VM) Why the guest is stopping (a time limit, a client's `core.shutdown`), for the
    /// supervisor: its absence after a guest exit means nobody asked.
    pub fn stop_reason_file(&self) -> PathBuf {
        self.path.join("stop-reason")
    }

    /// A drain request (`moat drain`): written `requested` by the CLI, rewritten
    /// [`DRAIN_CONFIRMED`] by the sandbox process once its relay refuses new execs.
    pub fn drain_file(&self) -> PathBuf {
        self.path.join("drain")
    }

    /// The sandbox process's log.
    pub fn sandbox_log(&self) -> PathBuf {
        self.path.join("sandbox.log")
    }

    /// The relay's log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Where the named scripts are written (shared read-only at `/.msb/scripts`).
    pub fn scripts_dir(&self) -> PathBuf {
        self.path.join("scripts")
    }

    /// The root patch bundle ([`crate::patches`]), shared like the scripts directory.
    pub fn patches_dir(&self) -> PathBuf {
        self.path.join("patches")
    }

    /// Mount point of the assembled host root.
    pub fn root_mount(&self) -> PathBuf {
        self.path.join("root")
    }

    /// Mount point of the read-only `--rootfs` bind.
    pub fn lower_mount(&self) -> PathBuf {
        self.path.join("lower")
    }

    fn spec_path(&self) -> PathBuf {
        self.path.join("spec.json")
    }

    /// Writes `spec.json`.
    pub fn write_spec(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let path = self.spec_path();
        let text = serde_json::to_vec_pretty(spec)
            .map_err(|source| RuntimeError::Spec { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(RuntimeError::io("write sandbox spec", &path))
    }

    /// Reads `spec.json`.
    pub fn read_spec(&self) -> Result<SandboxSpec, RuntimeError> {
        let path = self.spec_path();
        let text = std::fs::read(&path).map_err(RuntimeError::io("read sandbox spec", &path))?;
        serde_json::from_slice(&text).map_err(|source| RuntimeError::Spec { path, source })
    }

    /// The last `lines` lines of the agent log; for a VM (no `agent.log`), of the guest
    /// console, where the agent's stderr goes.
    pub fn agent_log_tail(&self, lines: usize) -> String {
        let tail = tail_lines(&self.agent_log(), lines);
        if tail.is_empty() { tail_lines(&self.kernel_log(), lines) } else { tail }
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> Result<(), RuntimeError> {
        std::fs::remove_dir_all(&self.path)
            .map_err(RuntimeError::io("remove sandbox directory", &self.path))
    }
}

/// The last `lines` lines of the text file at `path` (empty when unreadable), invalid UTF-8
/// replaced. Only the file's last [`LOG_TAIL_READ_BYTES`] are read, so a long-lived log costs
/// no more than that; a line cut by that limit is left out.
pub fn tail_lines(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let mut cut = false;
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let start = len.saturating_sub(LOG_TAIL_READ_BYTES);
        cut = start > 0;
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.take(LOG_TAIL_READ_BYTES).read_to_end(&mut bytes);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if cut && !all.is_empty() {
        all.remove(0);
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh name for an ephemeral sandbox: `run-<pid>-<nanoseconds>`.
pub fn ephemeral_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("run-{}-{nanos:09}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_reads_only_the_end_of_a_long_log() {
        let base = std::env::temp_dir().join(format!("moat-tail-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("log");
        // Longer than the read limit; its first line in that window is cut and left out.
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        assert!(text.len() as u64 > LOG_TAIL_READ_BYTES);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(tail_lines(&path, 2), "line 19998\nline 19999");
        let window = tail_lines(&path, usize::MAX);
        assert!(window.len() as u64 <= LOG_TAIL_READ_BYTES, "{}", window.len());
        assert!(window.lines().all(|l| l.starts_with("line ")));
        let first = window.lines().next().unwrap();
        assert!(text.contains(&format!("\n{first}\n")), "a cut line: {first}");
        // A short file is read whole; a missing one is empty.
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&path, 5), "a\nb\nc");
        assert_eq!(tail_lines(&base.join("missing"), 5), "");
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn spec_round_trips_through_the_sandbox_directory() {
        let exe = std::env::current_exe().unwrap();
        let home = exe.parent().unwrap().join("moat-home-unit-test");
        let dir = SandboxDir::create(&home, &ephemeral_name()).unwrap();
        let spec = SandboxSpec {
            name: "x".into(),
            root: RootSource::Dir("/srv".into()),
            agentd: "/bin/true".into(),
            backend: crate::backend::isolation::BackendKind::Vm,
            rootless: false,
            config: SandboxConfig { hostname: Some("h".into()), ..SandboxConfig::default() },
        };
        dir.write_spec(&spec).unwrap();
        assert_eq!(dir.read_spec().unwrap(), spec);
        dir.remove().unwrap();
    }
}
