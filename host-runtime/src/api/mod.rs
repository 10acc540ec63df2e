//! The runtime as a library: what language bindings and programs use instead of the CLI. Every
//! call is async (tokio).
//!
//! ```text
//!  Moat::new(home) ─► create(SandboxOptions) ─► Sandbox ─► exec(request, stdin) ─► CapturedExec
//!       ├─► create_attached / start_attached ─► Sandbox (stopped when dropped; detach())
//!       ├─► replace(SandboxOptions) ─► Sandbox    ├─► start()  (again, after stop or crash)
//!       │                                         ├─► exec_with_timeout(request, stdin, timeout)
//!       │                                         ├─► shell(script)  (the configured shell -c)
//!       │                                         ├─► exec_stream(request) ─► ExecStream: next()
//!       │                                         │     (started/stdout/stderr/exited), write_stdin,
//!       │                                         │     close_stdin, signal, kill, resize, wait
//!       │                                         ├─► fs() ─► SandboxFs: read / write / list / stat /
//!       │                                         │     mkdir / remove / copy / rename / exists, streams,
//!       │                                         │     copy_from_host / copy_to_host (api::fs)
//!       │                                         ├─► metrics() / metrics_stream(interval)
//!       │                                         ├─► logs(LogQuery) / log_stream(LogQuery) (api::logs)
//!       │                                         ├─► state() / socket() / wait(timeout)
//!       ├─► get(name) ─► Sandbox                  ├─► drain() (no new exec; stops when idle)
//!       │                                         ├─► stop_with_timeout(t) / request_stop()
//!       │                                         ├─► stop_with_signal(sig, t) (and request_)
//!       │                                         └─► stop() / kill() / remove(force)
//!       ├─► list() / list_filtered([LabelFilter]) ─► [SandboxState]
//!       ├─► metrics_all() ─► [Metrics]
//!       ├─► volumes() ─► Volumes: create / list / inspect / remove / read / write (api::volumes)
//!       └─► images() ─► Images: pull / list / remove / prune (blocking; an image as
//!                       SandboxOptions' root is pulled by create)
//! ```
//!
//! Every call is the same code the CLI runs (`lifecycle`), with the moat home passed explicitly
//! instead of read from `$MOAT_HOME`; [`blocking`] is that code as plain functions, and each
//! call here runs it on tokio's blocking pool (the lifecycle waits on processes and files, and
//! an exec session is three blocking threads over the relay socket). Nothing here prints to this
//! process's stdout; exec output is collected (bounded by [`MAX_CAPTURED_BYTES`] per stream).
//!
//! Dropping a collected exec's future (`exec`, `exec_with_timeout`, `shell`) kills its command
//! (an [`ExecStream`] dropped before its end does too); dropping another call's future does not
//! cancel the work it started: a dropped `create` still boots the sandbox.
//!
//! ```no_run
//! use moat_runtime::api::{Isolation, Moat, SandboxOptions};
//! use moat_runtime::lifecycle::Executables;
//! use moat_protocol::payload::exec::ExecRequest;
//!
//! # async fn demo() -> Result<(), moat_runtime::error::RuntimeError> {
//! let moat = Moat::new("/var/lib/my-app/moat").with_executables(Executables {
//!     moat: "/usr/local/bin/moat".into(),
//!     agentd: "/usr/local/bin/moat-agentd".into(),
//! });
//! let sandbox = moat.create(SandboxOptions::new("worker").isolation(Isolation::Namespace)).await?;
//! let mut echo = ExecRequest::new("sh");
//! echo.args = vec!["-c".into(), "cat; echo done".into()];
//! let ran = sandbox.exec(echo, b"input\n".to_vec()).await?;
//! assert_eq!(ran.stdout, b"input\ndone\n");
//! sandbox.remove(true).await?;
//! # Ok(())
//! # }
//! ```

pub mod blocking;
pub mod config;
pub mod exec;
pub mod fs;
pub mod logs;

mod metrics;
mod ports;
mod volumes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_protocol::payload::exec::ExecRequest;

pub use self::config::{
    ImageSource, Isolation, LabelFilter, RootSource, RunOptions, SandboxOptions,
};
pub use self::exec::{ExecEvent, ExecStream};
pub use self::fs::{
    FsEntryInfo, FsEntryKind, FsReadStream, FsWriteStream, GuestFsError, SandboxFs,
};
pub use self::logs::{LogCursor, LogEntry, LogQuery, LogSource, LogStream};
pub use self::ports::{HttpResponse, PortError, TcpTunnel, TunnelError};
use crate::error::RuntimeError;
use crate::lifecycle::Executables;
pub use crate::lifecycle::stop_signal::StopSignal;
use crate::limits::POLL_INTERVAL_MS;
pub use crate::relay_client::{CapturedExec, ExecOutcome};
pub use crate::store::state::{SandboxState, Status};

/// Largest stdout (and stderr) [`Sandbox::exec`] keeps; the rest is counted, not stored.
pub const MAX_CAPTURED_BYTES: usize = 64 * 1024 * 1024;

/// Runs `call` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(call).await?
}

/// Cancels a collected exec when dropped before [`CancelOnDrop::disarm`].
struct CancelOnDrop(Option<crate::relay_client::SessionCancel>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

/// A moat home: the store of named sandboxes.
#[derive(Debug, Clone)]
pub struct Moat {
    inner: blocking::Moat,
}

impl Moat {
    /// The moat home at `home` (created on first use). Sandboxes run this process's executable
    /// as their sandbox process, so a program that is not `moat` itself (a language binding, a
    /// test) names the binaries with [`Moat::with_executables`].
    pub fn new(home: impl Into<PathBuf>) -> Moat {
        Moat { inner: blocking::Moat::new(home) }
    }

    /// Uses these `moat` and `moat-agentd` binaries for the sandboxes it creates.
    pub fn with_executables(self, executables: Executables) -> Moat {
        Moat { inner: self.inner.with_executables(executables) }
    }

    /// The moat home the CLI uses: `$MOAT_HOME`, else `~/.moat`.
    pub fn from_env() -> Moat {
        Moat { inner: blocking::Moat::from_env() }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.inner.home()
    }

    /// Boots a detached sandbox (as `moat create`) and returns a handle on it once it is ready.
    pub async fn create(&self, options: SandboxOptions) -> Result<Sandbox, RuntimeError> {
        let inner = self.inner.clone();
        let sandbox = blocking(move || inner.create(options)).await?;
        Ok(Sandbox { inner: sandbox })
    }

    /// Boots an attached sandbox (microsandbox's attached mode, `moat create --attach`): it is
    /// stopped (as `moat stop`: its stop signal to every exec first, then `core.shutdown`) when
    /// the returned handle and all its clones are dropped or this process ends, however it
    /// ends, unless [`Sandbox::detach`] was called first. With `replace`, an existing sandbox of
    /// that name is removed first, as [`Moat::replace`].
    ///
    /// ```no_run
    /// # async fn demo(moat: moat_runtime::api::Moat) -> Result<(), moat_runtime::error::RuntimeError> {
    /// use moat_runtime::api::{SandboxOptions, StopSignal};
    ///
    /// let usr1: StopSignal = "SIGUSR1".parse()?;
    /// let options = SandboxOptions::new("job").stop_signal(usr1);
    /// let sandbox = moat.create_attached(options, false).await?;
    /// sandbox.shell("echo working").await?;
    /// drop(sandbox); // stopped: SIGUSR1 to its running execs, then core.shutdown
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_attached(
        &self,
        options: SandboxOptions,
        replace: bool,
    ) -> Result<Sandbox, RuntimeError> {
        let inner = self.inner.clone();
        let sandbox = blocking(move || inner.create_attached(options, replace)).await?;
        Ok(Sandbox { inner: sandbox })
    }

    /// Launches the stopped sandbox `name` again, attached as [`Moat::create_attached`].
    pub async fn start_attached(&self, name: &str) -> Result<Sandbox, RuntimeError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        let sandbox = blocking(move || inner.start_attached(&name)).await?;
        Ok(Sandbox { inner: sandbox })
    }

    /// [`Moat::create`], removing an existing sandbox of the same name first (killed if it is
    /// live, as `moat rm -f`, and gone before the new one boots); with no sandbox of that name,
    /// the same as `create`. (`create` alone refuses a taken name with
    /// [`RuntimeError::DuplicateName`].)
    pub async fn replace(&self, options: SandboxOptions) -> Result<Sandbox, RuntimeError> {
        let inner = self.inner.clone();
        let sandbox = blocking(move || inner.replace(options)).await?;
        Ok(Sandbox { inner: sandbox })
    }

    /// A handle on the existing sandbox `name` ([`RuntimeError::UnknownSandbox`] when there is
    /// none).
    pub async fn get(&self, name: &str) -> Result<Sandbox, RuntimeError> {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        let sandbox = blocking(move || inner.get(&name)).await?;
        Ok(Sandbox { inner: sandbox })
    }

    /// Every sandbox's state, sorted by name.
    pub async fn list(&self) -> Result<Vec<SandboxState>, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.list()).await
    }

    /// The sandboxes whose labels satisfy every filter, sorted by name.
    pub async fn list_filtered(
        &self,
        filters: Vec<LabelFilter>,
    ) -> Result<Vec<SandboxState>, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.list_filtered(&filters)).await
    }

    /// The home's image store: pull, list, remove, prune (what `moat pull`, `images`, `rmi` and
    /// `image prune` call). Its calls block; run them with `spawn_blocking`.
    pub fn images(&self) -> crate::image::Images {
        self.inner.images()
    }
}

/// A named sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: blocking::Sandbox,
}

impl Sandbox {
    /// Its name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Whether this handle owns the sandbox's lifetime ([`Moat::create_attached`], not
    /// detached).
    pub fn owns_lifecycle(&self) -> bool {
        self.inner.owns_lifecycle()
    }

    /// Lets an attached sandbox outlive this handle (and its clones) and this process: it
    /// becomes detached. Nothing to do for a detached one.
    pub fn detach(&mut self) -> Result<(), RuntimeError> {
        self.inner.detach()
    }

    /// Its relay socket, for protocol clients.
    pub fn socket(&self) -> PathBuf {
        self.inner.socket()
    }

    /// Its state now (`crashed` when its process is gone without a recorded end).
    pub async fn state(&self) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.state()).await
    }

    /// Runs `request` with `stdin` as its whole input and collects its output
    /// ([`RuntimeError::NotRunning`] when the sandbox is not running). Dropping the future
    /// before it resolves (a `tokio::time::timeout`, a `select!`) kills the command: its relay
    /// connection is shut down, and the relay SIGKILLs a departed client's execs.
    pub async fn exec(
        &self,
        request: ExecRequest,
        stdin: Vec<u8>,
    ) -> Result<CapturedExec, RuntimeError> {
        self.exec_collected(request, stdin, None).await
    }

    /// [`Sandbox::exec`], SIGKILLing the command when it runs longer than `timeout`; the
    /// result then has [`CapturedExec::timed_out`] set and the output read until then.
    pub async fn exec_with_timeout(
        &self,
        request: ExecRequest,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<CapturedExec, RuntimeError> {
        self.exec_collected(request, stdin, Some(timeout)).await
    }

    /// Runs `script` with the sandbox's shell (`SHELL -c SCRIPT`: `SandboxConfig::shell`, else
    /// `/bin/sh`) and collects its output; cancelled by dropping, as [`Sandbox::exec`].
    pub async fn shell(&self, script: impl Into<String>) -> Result<CapturedExec, RuntimeError> {
        let (inner, script) = (self.inner.clone(), script.into());
        let request = blocking(move || inner.shell_request(&script)).await?;
        self.exec_collected(request, Vec::new(), None).await
    }

    /// A collected exec on the blocking pool whose command is killed if this future is dropped
    /// before the end.
    async fn exec_collected(
        &self,
        request: ExecRequest,
        stdin: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<CapturedExec, RuntimeError> {
        let cancel = crate::relay_client::SessionCancel::default();
        let guard = CancelOnDrop(Some(cancel.clone()));
        let inner = self.inner.clone();
        let result =
            blocking(move || inner.exec_cancellable(request, &stdin, timeout, &cancel)).await;
        guard.disarm();
        result
    }

    /// Starts `request` and returns its events and controls (stdin, signals, resize) as they
    /// come ([`RuntimeError::NotRunning`] when the sandbox is not running).
    pub async fn exec_stream(&self, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        ExecStream::start(self.inner.clone(), request).await
    }

    /// Shuts it down gracefully (as `moat stop`: its stop signal to every running exec when it
    /// has one, then `core.shutdown`, then SIGTERM, then SIGKILL); returns the final state.
    pub async fn stop(&self) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.stop()).await
    }

    /// Shuts it down as [`Sandbox::stop`] does (its stop signal to every exec when it has one,
    /// then `core.shutdown`: the agent SIGTERMs every process), but SIGKILLs it once `timeout`
    /// has passed since asking; returns the final state (exit code 137 when it had to be
    /// killed, stop reason saying so).
    pub async fn stop_with_timeout(&self, timeout: Duration) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.stop_with_timeout(timeout)).await
    }

    /// Stops it with `signal` instead of its recorded stop signal (an image's StopSignal,
    /// [`SandboxOptions::stop_signal`]), as `moat stop --signal`: the sandbox's relay refuses new
    /// execs and sends `signal` to every running exec (`core.exec.signal`), they get `timeout`
    /// (default 10 s) to end, then `core.shutdown`; with a `timeout`, it is SIGKILLed once that
    /// has passed. [`Sandbox::stop`] uses the recorded stop signal the same way when there is
    /// one. Returns the final state.
    pub async fn stop_with_signal(
        &self,
        signal: StopSignal,
        timeout: Option<Duration>,
    ) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.stop_with_signal(signal, timeout)).await
    }

    /// [`Sandbox::request_stop`] with `signal` sent to every running exec first; returns at
    /// once.
    pub async fn request_stop_with_signal(&self, signal: StopSignal) -> Result<(), RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.request_stop_with_signal(signal)).await
    }

    /// Asks it to shut down (`core.shutdown`) and returns without waiting; it records its own
    /// end ([`Sandbox::wait`] for that). [`RuntimeError::NotRunning`] when it is not live.
    pub async fn request_stop(&self) -> Result<(), RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.request_stop()).await
    }

    /// Its exec log's entries that `query` selects, oldest first (see [`logs`] for the cursor's
    /// guarantees). Works on a stopped sandbox too.
    pub async fn logs(&self, query: LogQuery) -> Result<Vec<LogEntry>, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.logs(query)).await
    }

    /// Its exec log followed: the selected entries present now (the query's tail of them),
    /// then each new one as it is written, until the sandbox is no longer live and all is read.
    pub fn log_stream(&self, query: LogQuery) -> LogStream {
        LogStream::new(self.inner.clone(), query)
    }

    /// Launches it again (as `moat start`) after it stopped or crashed, with the configuration
    /// it was created with, and returns its state once it is ready. Named volumes and `-v`
    /// directories keep their data; the root's writable layer is new (writes to the root
    /// outside a volume were lost at the stop). [`RuntimeError::AlreadyRunning`] when it is
    /// live; [`RuntimeError::CreatedByOlderMoat`] when its state predates this call.
    pub async fn start(&self) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.start()).await
    }

    /// Drains it (as `moat drain`): returns its state (`draining`) once new execs are refused
    /// (moat's with [`RuntimeError::NotRunning`], a raw protocol client's by the relay with a
    /// `core.error`); the running execs finish, and when none is left it stops by itself
    /// ([`Sandbox::wait`] returns then, `stop_reason` "drained: the last exec ended").
    pub async fn drain(&self) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.drain()).await
    }

    /// SIGKILLs it (as `moat kill`) and returns the final state once none of its processes is
    /// left (as root, where its cgroup tells; see `kill_left_behind`).
    pub async fn kill(&self) -> Result<SandboxState, RuntimeError> {
        let inner = self.inner.clone();
        blocking(move || inner.kill()).await
    }

    /// Removes it; a live sandbox only with `force` (killed first, as [`Sandbox::kill`]),
    /// else [`RuntimeError::StillRunning`].
    pub async fn remove(self, force: bool) -> Result<(), RuntimeError> {
        let inner = self.inner;
        blocking(move || inner.remove(force)).await
    }

    /// Waits until it is no longer running or draining (it shut itself down, was stopped, or
    /// crashed) and returns that state; [`RuntimeError::WaitTimeout`] after `timeout`
    /// (`Duration::MAX`: none).
    pub async fn wait(&self, timeout: Duration) -> Result<SandboxState, RuntimeError> {
        // `None`: a timeout too long to represent, i.e. no timeout.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let record = self.state().await?;
            if !matches!(record.status, Status::Running | Status::Draining) {
                return Ok(record);
            }
            if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                return Err(RuntimeError::WaitTimeout { name: self.name().to_owned(), timeout });
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}
