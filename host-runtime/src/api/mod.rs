//! The runtime as a library: what language bindings and programs use instead of the CLI.
//!
//! ```text
//!  Moat::new(home) ─► create(CreateArgs) ─► Sandbox ─► exec(request, stdin) ─► CapturedExec
//!       │                                     ├─► state() / socket() / wait(timeout)
//!       ├─► get(name) ─► Sandbox               └─► stop() / kill() / remove(force)
//!       ├─► list() ─► [SandboxState]
//!       ├─► images() ─► Images: pull / list / remove / prune (`--image` in CreateArgs' root)
//!       ├─► metrics_all() ─► [Metrics]          Sandbox ─► metrics() / metrics_stream(interval)
//!       └─► volumes() ─► Volumes: create / list / inspect / remove / read / write (api::volumes)
//! ```
//!
//! Every call is the same code the CLI runs (`lifecycle`), with the moat home passed explicitly
//! instead of read from `$MOAT_HOME`. Nothing here prints to this process's stdout; exec output
//! is collected (bounded by [`MAX_CAPTURED_BYTES`] per stream).

mod metrics;
mod volumes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;

use crate::cli::CreateArgs;
use crate::error::RuntimeError;
use crate::lifecycle::{self, Executables};
use crate::limits::POLL_INTERVAL_MS;
use crate::relay_client::{CapturedExec, RelayClient};
use crate::store::home::{self, SandboxDir};
use crate::store::state::{self, SandboxState, Status};

/// Largest stdout (and stderr) [`Sandbox::exec`] keeps; the rest is counted, not stored.
pub const MAX_CAPTURED_BYTES: usize = 64 * 1024 * 1024;

/// A moat home: the store of named sandboxes.
#[derive(Debug, Clone)]
pub struct Moat {
    home: PathBuf,
    executables: Option<Executables>,
}

impl Moat {
    /// The moat home at `home` (created on first use). Sandboxes run this process's executable
    /// as their sandbox process, so a program that is not `moat` itself (a language binding, a
    /// test) names the binaries with [`Moat::with_executables`].
    pub fn new(home: impl Into<PathBuf>) -> Moat {
        Moat { home: home.into(), executables: None }
    }

    /// Uses these `moat` and `moat-agentd` binaries for the sandboxes it creates.
    pub fn with_executables(mut self, executables: Executables) -> Moat {
        self.executables = Some(executables);
        self
    }

    /// The moat home the CLI uses: `$MOAT_HOME`, else `~/.moat`.
    pub fn from_env() -> Moat {
        Moat::new(home::moat_home())
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Boots a detached sandbox (as `moat create`) and returns a handle on it.
    pub fn create(&self, args: CreateArgs) -> Result<Sandbox, RuntimeError> {
        let name = lifecycle::create_in(&self.home, args, self.executables.as_ref())?;
        self.get(&name)
    }

    /// A handle on the existing sandbox `name`.
    pub fn get(&self, name: &str) -> Result<Sandbox, RuntimeError> {
        let dir = lifecycle::open_named_in(&self.home, name)?;
        Ok(Sandbox { name: name.to_owned(), dir })
    }

    /// The home's image store: pull, list, remove, prune (what `moat pull`, `images`, `rmi` and
    /// `image prune` call).
    pub fn images(&self) -> crate::image::Images {
        crate::image::Images::new(&self.home)
    }

    /// Every sandbox's state, sorted by name.
    pub fn list(&self) -> Result<Vec<SandboxState>, RuntimeError> {
        lifecycle::list_in(&self.home)
    }
}

/// A named sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    name: String,
    dir: SandboxDir,
}

impl Sandbox {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its state now (`crashed` when its process is gone without a recorded end).
    pub fn state(&self) -> Result<SandboxState, RuntimeError> {
        state::read(self.dir.path())
    }

    /// Its relay socket, for protocol clients.
    pub fn socket(&self) -> PathBuf {
        self.dir.socket()
    }

    /// Runs `request` with `stdin` as its input and collects its output.
    pub fn exec(&self, request: ExecRequest, stdin: &[u8]) -> Result<CapturedExec, RuntimeError> {
        let record = self.state()?;
        if record.status != Status::Running {
            return Err(RuntimeError::NotRunning {
                name: self.name.clone(),
                status: record.status.as_str(),
            });
        }
        RelayClient::connect(&self.socket())?.run_captured(request, stdin, MAX_CAPTURED_BYTES)
    }

    /// Shuts it down gracefully (as `moat stop`); returns the final state.
    pub fn stop(&self) -> Result<SandboxState, RuntimeError> {
        lifecycle::stop_dir(&self.dir)
    }

    /// SIGKILLs it (as `moat kill`); returns the final state.
    pub fn kill(&self) -> Result<SandboxState, RuntimeError> {
        lifecycle::kill_dir(&self.dir)
    }

    /// Removes it; a live sandbox only with `force` (killed first).
    pub fn remove(self, force: bool) -> Result<(), RuntimeError> {
        lifecycle::remove_dir(self.dir, force)
    }

    /// Waits until it is no longer running or draining (it shut itself down, was stopped, or
    /// crashed) and returns that state; [`RuntimeError::WaitTimeout`] after `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<SandboxState, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.state()?;
            if !matches!(record.status, Status::Running | Status::Draining) {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::WaitTimeout { name: self.name.clone(), timeout });
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }
}
