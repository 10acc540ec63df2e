//! The blocking form of the API, for callers without an async runtime (the bench) and as the
//! body of every [`crate::api`] call, which runs it on tokio's blocking pool.
//!
//! ```text
//!  Moat::new(home) ─► create(SandboxOptions) ─► Sandbox ─► exec(request, stdin, timeout) ─► CapturedExec
//!       │                                     ├─► state() / socket() / wait(timeout)
//!       ├─► replace(SandboxOptions) ─► Sandbox  ├─► start() (again, after a stop)
//!       ├─► get(name) ─► Sandbox               ├─► drain() (no new exec; stops when idle)
//!       │                                     ├─► logs(LogQuery) / log_follow(LogQuery) ─► LogFollow
//!       │                                     ├─► stop_with_timeout(t) / request_stop()
//!       │                                     └─► stop() / kill() / remove(force)
//!       ├─► list() ─► [SandboxState]
//!       └─► images() ─► Images: pull / list / remove / prune (an image as SandboxOptions' root)
//! ```
//!
//! Every call is the same code the CLI runs (`lifecycle`), with the moat home passed explicitly
//! instead of read from `$MOAT_HOME`. Nothing here prints to this process's stdout; exec output
//! is collected (bounded by [`MAX_CAPTURED_BYTES`] per stream).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;

use crate::api::config::{LabelFilter, SandboxOptions};
use crate::api::logs::{FOLLOW_INTERVAL, FollowState, LogEntry, LogQuery, LogReader};
use crate::error::RuntimeError;
use crate::lifecycle::attach::Attachment;
use crate::lifecycle::stop_signal::StopSignal;
use crate::lifecycle::{self, Executables};
use crate::limits::POLL_INTERVAL_MS;
use crate::relay_client::{CapturedExec, RelayClient, SessionCancel};
use crate::store::home::{self, SandboxDir};
use crate::store::state::{self, SandboxState, Status};

use crate::api::MAX_CAPTURED_BYTES;

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
    pub fn create(&self, args: SandboxOptions) -> Result<Sandbox, RuntimeError> {
        let name = lifecycle::create_in(&self.home, args, self.executables.as_ref())?;
        self.get(&name)
    }

    /// Boots an attached sandbox: it stops (as `moat stop`, its stop signal first) once the
    /// returned handle and every clone of it are dropped, or this process ends, whichever comes
    /// first, unless [`Sandbox::detach`] was called. With `replace`, an existing sandbox of
    /// that name is removed first, as [`Moat::replace`] does.
    pub fn create_attached(
        &self,
        args: SandboxOptions,
        replace: bool,
    ) -> Result<Sandbox, RuntimeError> {
        let (name, attachment) =
            lifecycle::create_attached_in(&self.home, args, self.executables.as_ref(), replace)?;
        let mut sandbox = self.get(&name)?;
        sandbox.attachment = Some(Arc::new(attachment));
        Ok(sandbox)
    }

    /// Launches the stopped sandbox `name` again, attached (as [`Moat::create_attached`]).
    pub fn start_attached(&self, name: &str) -> Result<Sandbox, RuntimeError> {
        let (_, attachment) =
            lifecycle::start::start_attached_in(&self.home, name, self.executables.as_ref())?;
        let mut sandbox = self.get(name)?;
        sandbox.attachment = Some(Arc::new(attachment));
        Ok(sandbox)
    }

    /// [`Moat::create`], removing an existing sandbox of that name first (killed if it is
    /// live, as `moat rm -f`); without an existing one, the same as `create`.
    pub fn replace(&self, args: SandboxOptions) -> Result<Sandbox, RuntimeError> {
        let name = lifecycle::replace_in(&self.home, args, self.executables.as_ref())?;
        self.get(&name)
    }

    /// A handle on the existing sandbox `name`.
    pub fn get(&self, name: &str) -> Result<Sandbox, RuntimeError> {
        let dir = lifecycle::open_named_in(&self.home, name)?;
        Ok(Sandbox { name: name.to_owned(), dir, moat: self.clone(), attachment: None })
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

    /// The sandboxes whose labels satisfy every filter, sorted by name.
    pub fn list_filtered(
        &self,
        filters: &[LabelFilter],
    ) -> Result<Vec<SandboxState>, RuntimeError> {
        let mut states = self.list()?;
        states.retain(|state| filters.iter().all(|filter| filter.matches(&state.spec.config)));
        Ok(states)
    }
}

/// A named sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    name: String,
    dir: SandboxDir,
    /// The home it is in, and the executables its `start` runs.
    moat: Moat,
    /// An attached sandbox's lifeline, shared by the handle's clones: the last one dropped
    /// stops the sandbox.
    attachment: Option<Arc<Attachment>>,
}

impl Sandbox {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle owns the sandbox's lifetime ([`Moat::create_attached`], not yet
    /// [`Sandbox::detach`]ed).
    pub fn owns_lifecycle(&self) -> bool {
        self.attachment.as_ref().is_some_and(|attachment| !attachment.is_detached())
    }

    /// Lets an attached sandbox outlive this handle and this process (it becomes detached);
    /// nothing to do for a detached one.
    pub fn detach(&mut self) -> Result<(), RuntimeError> {
        match self.attachment.take() {
            Some(attachment) => attachment.detach(),
            None => Ok(()),
        }
    }

    /// Its state now (`crashed` when its process is gone without a recorded end).
    pub fn state(&self) -> Result<SandboxState, RuntimeError> {
        state::read(self.dir.path()).map_err(|err| match err {
            // Removed since the handle was made (`rm`, or an ephemeral sandbox that ended).
            RuntimeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RuntimeError::UnknownSandbox(self.name.clone())
            }
            other => other,
        })
    }

    /// Its relay socket, for protocol clients.
    pub fn socket(&self) -> PathBuf {
        self.dir.socket()
    }

    /// Its sandbox directory.
    pub(crate) fn dir(&self) -> &SandboxDir {
        &self.dir
    }

    /// Runs `request` with `stdin` as its input and collects its output. With a `timeout`, the
    /// command is SIGKILLed when it runs longer, and the result says so
    /// ([`CapturedExec::timed_out`]).
    pub fn exec(
        &self,
        request: ExecRequest,
        stdin: &[u8],
        timeout: Option<Duration>,
    ) -> Result<CapturedExec, RuntimeError> {
        self.exec_cancellable(request, stdin, timeout, &SessionCancel::default())
    }

    /// [`Sandbox::exec`] that `cancel` can end from another thread (the command is killed, and
    /// this returns [`RuntimeError::SessionEnded`] or the relay's hang-up).
    pub(crate) fn exec_cancellable(
        &self,
        request: ExecRequest,
        stdin: &[u8],
        timeout: Option<Duration>,
        cancel: &SessionCancel,
    ) -> Result<CapturedExec, RuntimeError> {
        self.require_running()?;
        let mut client = RelayClient::connect(&self.socket())?;
        if !cancel.register(&client)? {
            return Err(RuntimeError::SessionEnded);
        }
        client.run_captured(request, stdin, MAX_CAPTURED_BYTES, timeout)
    }

    /// Runs `script` with the sandbox's shell (`SHELL -c SCRIPT`; `--shell`, else
    /// [`crate::config::DEFAULT_SHELL`]) and collects its output.
    pub fn shell(
        &self,
        script: &str,
        timeout: Option<Duration>,
    ) -> Result<CapturedExec, RuntimeError> {
        self.exec(self.shell_request(script)?, &[], timeout)
    }

    /// `SHELL -c SCRIPT` with the sandbox's shell.
    pub(crate) fn shell_request(&self, script: &str) -> Result<ExecRequest, RuntimeError> {
        let config = self.state()?.spec.config;
        let shell = config.shell.as_deref().unwrap_or(crate::config::DEFAULT_SHELL);
        let mut request = ExecRequest::new(shell);
        request.args = vec!["-c".to_owned(), script.to_owned()];
        Ok(request)
    }

    /// [`RuntimeError::NotRunning`] unless it is running.
    pub fn require_running(&self) -> Result<(), RuntimeError> {
        let record = self.state()?;
        if record.status != Status::Running {
            return Err(RuntimeError::NotRunning {
                name: self.name.clone(),
                status: record.status.as_str(),
            });
        }
        Ok(())
    }

    /// Shuts it down gracefully (as `moat stop`); returns the final state.
    pub fn stop(&self) -> Result<SandboxState, RuntimeError> {
        lifecycle::stop_dir(&self.dir)
    }

    /// Shuts it down as [`Sandbox::stop`] does, but SIGKILLs it once `timeout` has passed since
    /// `core.shutdown` was sent; returns the final state (exit code 137 when it was killed).
    pub fn stop_with_timeout(&self, timeout: Duration) -> Result<SandboxState, RuntimeError> {
        lifecycle::stop_dir_within(&self.dir, Some(timeout))
    }

    /// Stops it with `signal` instead of the recorded stop signal (as `moat stop --signal`): the
    /// signal goes to every running exec, which get `timeout` (default 10 s) to end before
    /// `core.shutdown`; with a `timeout`, SIGKILL once it has passed.
    pub fn stop_with_signal(
        &self,
        signal: StopSignal,
        timeout: Option<Duration>,
    ) -> Result<SandboxState, RuntimeError> {
        lifecycle::stop_dir_with(&self.dir, timeout, Some(signal))
    }

    /// [`Sandbox::request_stop`] with `signal` sent to every running exec first (as `moat stop
    /// --no-wait --signal`).
    pub fn request_stop_with_signal(&self, signal: StopSignal) -> Result<(), RuntimeError> {
        lifecycle::request_stop_dir_with(&self.dir, Some(signal))
    }

    /// Asks it to shut down (`core.shutdown`) and returns without waiting; it records its own
    /// end ([`Sandbox::wait`] for that). [`RuntimeError::NotRunning`] when it is not live.
    pub fn request_stop(&self) -> Result<(), RuntimeError> {
        lifecycle::request_stop_dir(&self.dir)
    }

    /// Its exec log's entries that `query` selects, oldest first. Without a tail, every one
    /// of them is returned (at most the rotated set's bytes: `exec.log` and its rotations); a
    /// tail keeps only a ring of that many while reading.
    pub fn logs(&self, query: LogQuery) -> Result<Vec<LogEntry>, RuntimeError> {
        let tail = query.tail_len();
        Ok(LogReader::new(self.dir.log_dir(), query).read_new(tail)?.into())
    }

    /// Its exec log followed: an iterator over the selected entries, waiting for new ones
    /// while the sandbox is live (as [`crate::api::LogStream`], on this thread).
    pub fn log_follow(&self, query: LogQuery) -> LogFollow {
        LogFollow {
            sandbox: self.clone(),
            reader: LogReader::new(self.dir.log_dir(), query),
            pending: VecDeque::new(),
            state: FollowState::Starting,
        }
    }

    /// Launches it again (as `moat start`) with the configuration it was created with, once it
    /// has stopped or crashed; returns its state once it is ready
    /// ([`RuntimeError::AlreadyRunning`] when it is live).
    pub fn start(&self) -> Result<SandboxState, RuntimeError> {
        lifecycle::start::start_in(&self.moat.home, &self.name, self.moat.executables.as_ref())
    }

    /// Drains it (as `moat drain`): returns (status `draining`) once new execs are refused,
    /// by moat and by the relay for any client; the running ones finish, then it stops by
    /// itself ([`Sandbox::wait`] for that).
    pub fn drain(&self) -> Result<SandboxState, RuntimeError> {
        lifecycle::drain::drain_dir(&self.dir)
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
    /// crashed) and returns that state; [`RuntimeError::WaitTimeout`] after `timeout`
    /// (`Duration::MAX`: none).
    pub fn wait(&self, timeout: Duration) -> Result<SandboxState, RuntimeError> {
        // `None`: a timeout too long to represent, i.e. no timeout.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let record = self.state()?;
            if !matches!(record.status, Status::Running | Status::Draining) {
                return Ok(record);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(RuntimeError::WaitTimeout { name: self.name.clone(), timeout });
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }
}

/// [`Sandbox::log_follow`]: each selected entry once, oldest first, sleeping
/// [`crate::limits::LOG_FOLLOW_INTERVAL_MS`] between reads; ends once the sandbox is no longer
/// live and all is read, or after the first error.
#[derive(Debug)]
pub struct LogFollow {
    sandbox: Sandbox,
    reader: LogReader,
    pending: VecDeque<LogEntry>,
    state: FollowState,
}

impl LogFollow {
    /// The entries present when it starts (the query's tail of them), read now as one batch;
    /// the iterator then yields only newer ones. Empty once the iterator has begun.
    pub fn backlog(&mut self) -> Result<Vec<LogEntry>, RuntimeError> {
        if self.state != FollowState::Starting {
            return Ok(Vec::new());
        }
        self.read().map(Vec::from)
    }

    /// One read, and the state it leaves (the query's tail when it is the first).
    fn read(&mut self) -> Result<VecDeque<LogEntry>, RuntimeError> {
        let keep_last = match self.state {
            FollowState::Starting => self.reader.query().tail_len(),
            FollowState::Following | FollowState::Ended => None,
        };
        match self.reader.follow_step(&self.sandbox, keep_last) {
            Ok((over, entries)) => {
                self.state = FollowState::after_read(over);
                Ok(entries)
            }
            Err(err) => {
                self.state = FollowState::Ended;
                Err(err)
            }
        }
    }
}

impl Iterator for LogFollow {
    type Item = Result<LogEntry, RuntimeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            match self.state {
                FollowState::Ended => return None,
                FollowState::Starting => {}
                FollowState::Following => std::thread::sleep(FOLLOW_INTERVAL),
            }
            match self.read() {
                Ok(entries) => self.pending = entries,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}
