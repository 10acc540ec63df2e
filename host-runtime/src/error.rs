//! The host runtime's error type. Each variant names the step that failed and keeps its source.

use std::path::PathBuf;

/// What went wrong while preparing, running or tearing down a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or process operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The step, e.g. `"create sandbox directory"`.
        what: &'static str,
        /// The path (or program) it concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A cgroup (for the pids limit, `--cpus`, `--memory` on the namespace backend) could not be
    /// set up.
    #[error("{what} {}: {source} (the pids limit, on by default, and --cpus and --memory on the namespace backend need a writable cgroup hierarchy under /sys/fs/cgroup; --pids-limit 0 runs without a pids limit)", path.display())]
    Cgroup {
        /// The step.
        what: &'static str,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A mount operation failed.
    #[error("{what} {}: {source}", target.display())]
    Mount {
        /// The step, e.g. `"bind /usr read-only"`.
        what: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// A frame could not be encoded.
    #[error("encode {what}: {source}")]
    Encode {
        /// The message.
        what: &'static str,
        /// The cause.
        source: moat_protocol::EncodeError,
    },
    /// The peer sent bytes that are not a frame stream.
    #[error("{peer} sent a malformed frame stream: {source}")]
    Frame {
        /// `"the agent"` or `"the relay"`.
        peer: &'static str,
        /// The cause.
        source: moat_protocol::FrameError,
    },
    /// The peer sent a frame that does not decode.
    #[error("{peer} sent an undecodable frame: {source}")]
    Decode {
        /// `"the agent"` or `"the relay"`.
        peer: &'static str,
        /// The cause.
        source: moat_protocol::DecodeError,
    },
    /// The peer closed the stream or timed out before the expected message.
    #[error("{peer} closed the stream or timed out while {while_doing}")]
    PeerGone {
        /// `"the agent"` or `"the relay"`.
        peer: &'static str,
        /// What we were waiting for.
        while_doing: &'static str,
    },
    /// The peer sent a message out of order.
    #[error("{peer} sent {got} while {while_doing}")]
    Unexpected {
        /// `"the agent"` or `"the relay"`.
        peer: &'static str,
        /// The wire type name received.
        got: String,
        /// What we were waiting for.
        while_doing: &'static str,
    },
    /// The relay's prologue is unusable.
    #[error("relay prologue: {0}")]
    Prologue(#[from] moat_protocol::relay::PrologueError),
    /// The relay speaks the pre-0.5 prologue, which this client does not.
    #[error("the relay sent a legacy (pre-0.5) prologue")]
    LegacyRelay,
    /// The relay has no free id left for this client.
    #[error("the relay id range is exhausted")]
    IdsExhausted,
    /// The relay stopped with an error.
    #[error("relay: {0}")]
    Relay(#[from] moat_relay::RelayError),
    /// The spec file could not be read or written.
    #[error("sandbox spec {}: {source}", path.display())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A `state.json` could not be read or written.
    #[error("sandbox state {}: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A sandbox name breaks the naming rules.
    #[error("invalid sandbox name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The sandbox configuration is inconsistent (e.g. two mounts at one path).
    #[error("bad sandbox configuration: {0}")]
    Config(String),
    /// `moat create` with a name already in use.
    #[error("a sandbox named {0:?} already exists")]
    DuplicateName(String),
    /// No sandbox has this name.
    #[error("no sandbox named {0:?}")]
    UnknownSandbox(String),
    /// The command needs a running sandbox.
    #[error("sandbox {name:?} is not running (it is {status})")]
    NotRunning {
        /// The sandbox.
        name: String,
        /// Its status.
        status: &'static str,
    },
    /// [`crate::api::Sandbox::wait`] ran out of time.
    #[error("sandbox {name:?} was still running after {timeout:?}")]
    WaitTimeout {
        /// The sandbox.
        name: String,
        /// How long we waited.
        timeout: std::time::Duration,
    },
    /// `moat start` on a sandbox whose process is alive.
    #[error("sandbox {name:?} is already running (it is {status})")]
    AlreadyRunning {
        /// The sandbox.
        name: String,
        /// Its status.
        status: &'static str,
    },
    /// `moat start` on a sandbox whose `state.json` predates the recorded configuration.
    #[error(
        "sandbox {0:?} was created by an older moat; cannot start (remove and create it again)"
    )]
    CreatedByOlderMoat(String),
    /// `moat start` on a sandbox whose image layers are no longer in the store.
    #[error("sandbox {name:?} cannot start: its image {reference} is no longer in the store (missing {})", layer.display())]
    ImageGone {
        /// The sandbox.
        name: String,
        /// The image reference it was created from.
        reference: String,
        /// The first missing layer directory.
        layer: PathBuf,
    },
    /// `moat drain`: the sandbox process did not confirm that new execs are refused.
    #[error("sandbox {name:?} did not confirm the drain within {timeout_ms} ms; see sandbox.log")]
    DrainUnconfirmed {
        /// The sandbox.
        name: String,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// `moat rm` without `-f` on a running sandbox.
    #[error("sandbox {0:?} is running; stop it first or use `moat rm -f`")]
    StillRunning(String),
    /// The sandbox process reported a boot failure (or died before reporting).
    #[error("sandbox failed to start: {message}{}", if agent_log.is_empty() { String::new() } else { format!("\n--- agent log (tail) ---\n{agent_log}") })]
    Boot {
        /// The sandbox process's one-line report.
        message: String,
        /// The last lines of the agent's log.
        agent_log: String,
    },
    /// `moat-agentd` was not found.
    #[error(
        "cannot find moat-agentd: looked next to {} and in $MOAT_AGENTD; build it with `cargo build --release -p moat-agentd` or set MOAT_AGENTD=/path/to/moat-agentd",
        exe_dir.display()
    )]
    AgentdNotFound {
        /// The directory of the running `moat`.
        exe_dir: PathBuf,
    },
    /// Building `moat-agentd` on demand failed.
    #[error("`cargo build -p moat-agentd` failed ({status}); build it by hand or set MOAT_AGENTD")]
    AgentdBuild {
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
    /// The static `moat-agentd` (a VM's init) was not found.
    #[error(
        "cannot find the static moat-agentd the VM backend boots as its init: {looked}; build it with agentd/build-static.sh and set MOAT_AGENTD_STATIC=/path/to/it"
    )]
    StaticAgentdNotFound {
        /// Where it looked.
        looked: String,
    },
    /// `agentd/build-static.sh` failed.
    #[error("agentd/build-static.sh failed ({status}); build it by hand or set MOAT_AGENTD_STATIC")]
    StaticAgentdBuild {
        /// The script's exit status.
        status: std::process::ExitStatus,
    },
    /// The guest agent did not connect to its vsock port in time.
    #[error("the VM's agent never connected on vsock port {port} within {waited_ms} ms{}", if kernel_log_tail.is_empty() { " (the guest console printed nothing)".to_owned() } else { format!("; guest console (tail): {kernel_log_tail}") })]
    AgentNeverConnected {
        /// The vsock port.
        port: u32,
        /// How long we waited.
        waited_ms: u64,
        /// The last lines of `logs/kernel.log`, joined with ` | `.
        kernel_log_tail: String,
    },
    /// The VM exited before its agent was ready.
    #[error("the VM exited ({status}) before its agent was ready{}{}", if vmm_log_tail.is_empty() { String::new() } else { format!("; libkrun: {vmm_log_tail}") }, if kernel_log_tail.is_empty() { " (the guest console printed nothing)".to_owned() } else { format!("; guest console (tail): {kernel_log_tail}") })]
    VmExited {
        /// How the VM process ended.
        status: String,
        /// The last lines of the sandbox process's log (libkrun's errors), joined with ` | `.
        vmm_log_tail: String,
        /// The last lines of `logs/kernel.log`, joined with ` | `.
        kernel_log_tail: String,
    },
    /// libkrun refused the configuration or could not start the VM.
    #[error("VMM: {0}")]
    Vmm(#[from] moat_vmm::VmmError),
    /// A limit an unprivileged sandbox cannot apply ([`crate::backend::namespace::rootless`]).
    #[error(
        "{option}: moat runs unprivileged and cannot create a cgroup on this host, so the limit cannot be applied; run as root, or leave {option} out"
    )]
    RootlessLimit {
        /// The option given.
        option: &'static str,
    },
    /// `newuidmap` or `newgidmap` refused the user's map.
    #[error(
        "{helper} could not map the sandbox's ids (check /etc/subuid and /etc/subgid): {reason}"
    )]
    RootlessIdMap {
        /// The helper.
        helper: &'static str,
        /// Its stderr.
        reason: String,
    },
    /// The sandbox's network cannot be set up.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// An image could not be pulled, stored or used.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A filesystem operation in the sandbox failed.
    #[error(transparent)]
    GuestFs(#[from] crate::relay_client::fs::GuestFsError),
    /// A filesystem call ran past its timeout: its relay connection was closed (the relay and
    /// the agent drop what it had open, as for any departed client) and the client reconnected,
    /// so the next call works.
    #[error("{what}: the filesystem call did not finish within {timeout:?}; it was abandoned")]
    FsTimeout {
        /// The guest path (or paths) of the call.
        what: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// Stdin written to, or closed on, an exec whose command has ended.
    #[error("the command has ended; its stdin is closed")]
    SessionEnded,
    /// A blocking call of the async API ([`crate::api`]) panicked or its runtime shut down.
    #[error("a blocking task of the moat API did not complete: {0}")]
    BlockingTask(#[from] tokio::task::JoinError),
    /// A named volume operation failed.
    #[error(transparent)]
    Volume(#[from] crate::store::volumes::VolumeError),
    /// The VM backend was asked for and cannot run here.
    #[error("--isolation vm: this host cannot boot a microVM: {reason} (`moat doctor` explains)")]
    VmUnavailable {
        /// The doctor's reason.
        reason: String,
    },
}

impl RuntimeError {
    /// An [`RuntimeError::Io`] builder for `map_err`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| RuntimeError::Io { what, path, source }
    }

    /// A [`RuntimeError::Mount`] builder for `map_err`.
    pub fn mount(
        what: &'static str,
        target: impl Into<PathBuf>,
    ) -> impl FnOnce(nix::errno::Errno) -> Self {
        let target = target.into();
        move |source| RuntimeError::Mount { what, target, source }
    }
}
