//! Exec sessions (PROTOCOL.md §8): starting programs with pipes or a PTY, feeding their stdin,
//! signalling and resizing them, and streaming their output and exit status to the host.
//!
//! ```text
//!  dispatcher ──start/stdin/signal/resize──► ExecManager (sync, returns at once)
//!                                               │ plan ─► spawn (clone under the Reaper lock)
//!                                               ▼
//!                 per session: session task ──started/stdout/stderr/exited──► Outbound
//!                              stdin writer ◄── StdinQueue (bounded)
//! ```
//!
//! The manager is the only state the dispatcher touches; each session runs as its own tasks, so
//! a slow or flooding session never blocks another. Exit statuses come from the [`Reaper`];
//! nothing here waits for a process. This module owns the sessions; it does not decide which wire
//! errors the dispatcher sends for a refused follow-up frame ([`ExecError`] says what happened,
//! and [`ExecError::stdin_error`] gives the report for a rejected stdin payload).
//!
//! Submodules: `plan` (request → launch plan, pure), `spawn` (descriptors and clone), `pre_exec`
//! (the clone and the child until exec), `pty`, `stdin` (the bounded queue), `session` (the task),
//! `failure` (errno → `exec.failed`).

mod failure;
mod flow;
mod plan;
mod pre_exec;
mod pty;
mod session;
mod spawn;
mod stdin;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use moat_protocol::Message;
use moat_protocol::limits::FLOW_CONTROL_GENERATION;
use moat_protocol::payload::exec::{
    ExecFailed, ExecFailureKind, ExecLimits, ExecRequest, ExecStdinError,
};
use moat_protocol::relay::IdRange;
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tracing::Instrument;

pub use flow::AckError;
pub use plan::{DEFAULT_PATH, FALLBACK_CWD, SCRIPTS_DIR};
pub use session::OUTPUT_CHUNK_BYTES;

use self::session::{FlowControl, SessionShared, SessionTask};
use self::stdin::Rejected;
use crate::outbound::Outbound;
use crate::process::Reaper;
use crate::users::CachedUserDb;

/// Most stdin bytes a session holds that the child has not read yet. A payload that would
/// exceed it is dropped ([`ExecError::StdinQueueFull`]).
pub const MAX_STDIN_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// `core.exec.stdin.error` reports (failed writes into the child) a session can have waiting to
/// be sent; more are logged and dropped.
pub const STDIN_ERROR_BACKLOG: usize = 64;

const _: () = assert!(MAX_STDIN_QUEUE_BYTES >= moat_protocol::limits::MAX_FRAME_BYTES);

/// The sandbox-wide defaults exec requests are resolved against.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Working directory when a request has none (bootstrap `default_cwd`); else `/`.
    pub default_cwd: Option<String>,
    /// User spec when a request has none (bootstrap `user`); else agentd's own identity (root).
    pub default_user: Option<String>,
    /// agentd's environment including the bootstrap `default_env`; requests overlay it.
    pub base_env: Vec<(String, String)>,
    /// Root of the filesystem whose `etc/passwd` and `etc/group` resolve users (`/` in the
    /// sandbox).
    pub root: PathBuf,
    /// What confines every started program (nothing by default).
    pub confinement: Confinement,
    /// The generation-10 flow-control policy (the bootstrap's `exec_limits`, or the defaults),
    /// applied to requests with `v >= 10` and announced in `core.ready`.
    pub limits: ExecLimits,
}

/// What every program the agent starts is confined by, applied in the child before `execve`
/// while it still holds the agent's capabilities (see [`crate::seccomp`]).
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Seccomp filters to install, in order (none: no filter).
    pub seccomp: Arc<Vec<seccompiler::BpfProgram>>,
    /// The capability bounding set to keep, as a bit mask (`None`: keep all).
    pub kept_capabilities: Option<u64>,
}

impl Confinement {
    /// The confinement of the sandbox's processes under `profile`, for an agent that is not
    /// itself confined: every child installs the whole process profile.
    pub fn for_profile(
        profile: crate::seccomp::SecurityProfile,
    ) -> Result<Confinement, crate::seccomp::SeccompError> {
        let seccomp = crate::seccomp::programs(profile, crate::seccomp::Scope::Process)?;
        Ok(Confinement {
            seccomp: Arc::new(seccomp),
            kept_capabilities: crate::seccomp::kept_capabilities(profile),
        })
    }

    /// The same confinement as [`Confinement::for_profile`], for an agent that has installed
    /// `profile`'s agent filters on itself (`seccomp::programs(profile, Scope::Agent)`): the
    /// children inherit those, so each installs only the small filter that makes them the
    /// process profile ([`crate::seccomp::programs_over_agent`]), not the whole profile again.
    pub fn over_agent_filter(
        profile: crate::seccomp::SecurityProfile,
    ) -> Result<Confinement, crate::seccomp::SeccompError> {
        Ok(Confinement {
            seccomp: Arc::new(crate::seccomp::programs_over_agent(profile)?),
            kept_capabilities: crate::seccomp::kept_capabilities(profile),
        })
    }
}

/// Why a session call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// No active session has this id (never started, failed, or already exited).
    #[error("no active exec session {0}")]
    NoSuchSession(u32),
    /// `start` on an id that is still an active session.
    #[error("exec session {0} is already active")]
    DuplicateSession(u32),
    /// Stdin data after the EOF marker; the data was dropped.
    #[error("stdin after EOF")]
    StdinAfterEof,
    /// A generation-10 session's stdin payload is larger than `stdin_chunk_size`, or would put
    /// more than `input_limit` bytes unacknowledged; the payload was dropped.
    #[error("stdin exceeds sandbox execution policy")]
    StdinPolicy,
    /// An output ack went backwards or past what was sent; the session is ended.
    #[error("exec session {id}: {source}; the session is killed")]
    BadOutputAck {
        /// The session.
        id: u32,
        /// What was wrong with the ack.
        source: AckError,
    },
    /// The stdin queue is full; the payload was dropped.
    #[error(
        "stdin queue full: {queued_bytes} bytes waiting, a {chunk_bytes}-byte payload would \
         exceed the {limit_bytes}-byte limit; payload dropped"
    )]
    StdinQueueFull {
        /// Bytes waiting to be written.
        queued_bytes: usize,
        /// Size of the dropped payload.
        chunk_bytes: usize,
        /// The limit ([`MAX_STDIN_QUEUE_BYTES`]).
        limit_bytes: usize,
    },
}

impl ExecError {
    /// The `core.exec.stdin.error` the caller should send on the session's id for a rejected
    /// stdin payload (PROTOCOL.md §8.4: stdin violations are reported this way, not with the
    /// terminal `core.error`); `None` for the other errors. The manager does not send these
    /// itself: the dispatcher answers the frame. (Failed writes into the child, e.g. `EPIPE`,
    /// are discovered later and are sent by the session.)
    pub fn stdin_error(&self) -> Option<ExecStdinError> {
        match self {
            ExecError::StdinAfterEof
            | ExecError::StdinPolicy
            | ExecError::StdinQueueFull { .. } => Some(failure::stdin_rejected(self.to_string())),
            ExecError::NoSuchSession(_)
            | ExecError::DuplicateSession(_)
            | ExecError::BadOutputAck { .. } => None,
        }
    }
}

/// What the manager keeps per session.
#[derive(Debug)]
struct SessionHandle {
    /// The child's pid: its process group and session id.
    pid: u32,
    shared: Arc<SessionShared>,
    /// The PTY master, for resizes. Weak: the session task owns it, so it closes when the
    /// session ends even if the manager has not pruned the handle yet.
    pty: Option<Weak<AsyncFd<OwnedFd>>>,
}

/// All exec sessions of the agent. Owned by the dispatcher; every method returns at once and
/// must be called inside the tokio runtime (with I/O enabled). Session tasks are spawned with
/// `tokio::spawn` and are `Send`.
#[derive(Debug)]
pub struct ExecManager {
    config: ExecConfig,
    reaper: Reaper,
    out: Outbound,
    /// The user database under `config.root`, re-read only when its files change.
    users: CachedUserDb,
    sessions: HashMap<u32, SessionHandle>,
    /// Sessions set aside from `sessions` because a new request reused their id while they were
    /// abandoned: SIGKILLed, silent, still draining a child that holds their output open (a
    /// descendant in another process group, or one in an uninterruptible call). The relay
    /// frees a departed client's id range at the agent's barrier answer, which can come before
    /// such a session ends; its next client then starts on the same ids. Kept so that
    /// `active()` and `signal_all` still count and reach them until they finish.
    orphans: Vec<SessionHandle>,
}

impl ExecManager {
    /// A manager resolving requests against `config`, spawning through `reaper` and sending to
    /// the host through `out`.
    pub fn new(config: ExecConfig, reaper: Reaper, out: Outbound) -> ExecManager {
        let users = CachedUserDb::new(config.root.clone());
        ExecManager { config, reaper, out, users, sessions: HashMap::new(), orphans: Vec::new() }
    }

    /// Starts a session on `id`. Returns at once; everything the host sees (`exec.started` or
    /// `exec.failed`, then `exec.stdout`/`exec.stderr`/`exec.stdin.error`, then `exec.exited`)
    /// is sent through the [`Outbound`] by the session's task. A program that cannot start is
    /// not an `Err`: the host gets `exec.failed`. Errs only if `id` is an active session.
    ///
    /// A request with `v >= 10` is flow-controlled (PROTOCOL.md §8.4) and admitted only while
    /// fewer than `max_executions` sessions are active; otherwise it gets `exec.failed
    /// {kind: resource_limit, stage: execution_admission}`.
    pub fn start(&mut self, id: u32, v: u8, request: ExecRequest) -> Result<(), ExecError> {
        self.prune();
        if let Some(existing) = self.sessions.get(&id) {
            // Only an abandoned session (its client gone, or its ack refused) sends nothing more,
            // so only it may give up its id: a live one would mix two sessions on one id.
            if !existing.shared.is_abandoned() {
                return Err(ExecError::DuplicateSession(id));
            }
            if let Some(orphan) = self.sessions.remove(&id) {
                tracing::debug!(
                    id,
                    pid = orphan.pid,
                    "id reused; the abandoned session drains aside"
                );
                self.orphans.push(orphan);
            }
        }
        let flow_controlled = v >= FLOW_CONTROL_GENERATION;
        if flow_controlled && self.active() >= self.config.limits.max_executions as usize {
            self.report_failure(id, admission_refused());
            return Ok(());
        }
        let span = tracing::info_span!("exec", id, cmd = %request.cmd, tty = request.tty);
        let _entered = span.enter();
        let users = self.users.current();
        let launch = plan::plan(&self.config, users, &request).and_then(|plan| {
            spawn::check_cwd(&plan.cwd, request.tty)?;
            let child = spawn::spawn(&self.reaper, &plan, &self.config.confinement)?;
            Ok((plan, child))
        });
        let (plan, child) = match launch {
            Ok(launched) => launched,
            Err(failed) => {
                self.report_failure(id, failed);
                return Ok(());
            }
        };
        tracing::debug!(pid = child.pid, "forked");
        let shared = Arc::new(if flow_controlled {
            let limits = &self.config.limits;
            SessionShared::new(limits.input_limit as usize, Some(FlowControl::new(limits)))
        } else {
            SessionShared::new(MAX_STDIN_QUEUE_BYTES, None)
        });
        let pty = match &child.io {
            spawn::ChildIo::Pty { master } => Some(Arc::downgrade(master)),
            spawn::ChildIo::Pipes { .. } => None,
        };
        let handle = SessionHandle { pid: child.pid, shared: Arc::clone(&shared), pty };
        let task = SessionTask {
            id,
            child,
            rlimits: plan.rlimits,
            program: plan.program,
            tty: request.tty,
            out: self.out.clone(),
        };
        tokio::spawn(session::run(task, shared).instrument(span.clone()));
        self.sessions.insert(id, handle);
        Ok(())
    }

    /// Queues stdin for session `id`. Empty data is EOF: in pipe mode the child's stdin closes
    /// after the queued data; in PTY mode it does nothing (send `0x04` to end input). A rejected
    /// payload is dropped; [`ExecError::stdin_error`] gives the report to send the host.
    pub fn stdin(&mut self, id: u32, data: Vec<u8>) -> Result<(), ExecError> {
        let handle = self.live(id)?;
        if handle.pty.is_some() && data.is_empty() {
            return Ok(());
        }
        let flow = handle.shared.flow.as_ref();
        if flow.is_some_and(|f| data.len() > f.stdin_chunk_bytes) {
            return Err(ExecError::StdinPolicy);
        }
        handle.shared.stdin.push(data).map_err(|rejected| match rejected {
            Rejected::AfterEof => ExecError::StdinAfterEof,
            Rejected::Full { .. } if flow.is_some() => ExecError::StdinPolicy,
            Rejected::Full { queued_bytes, chunk_bytes } => ExecError::StdinQueueFull {
                queued_bytes,
                chunk_bytes,
                limit_bytes: handle.shared.stdin.limit_bytes(),
            },
        })
    }

    /// Applies the host's cumulative output ack to a generation-10 session, letting it read and
    /// send more (an ack on a legacy session is ignored). An ack that goes backwards or past
    /// what was sent ends the session: it is SIGKILLed and sends nothing more, since the
    /// `core.error` the dispatcher answers with is terminal for its id.
    pub fn output_ack(&mut self, id: u32, consumed: u64) -> Result<(), ExecError> {
        let handle = self.live(id)?;
        let Some(flow) = &handle.shared.flow else {
            tracing::debug!(id, "ignoring an output ack on a session without flow control");
            return Ok(());
        };
        if let Err(source) = flow.window.ack(consumed) {
            tracing::warn!(id, %source, "refused output ack; killing the session");
            flow.window.abandon();
            signal_group(&self.reaper, handle.pid, libc::SIGKILL);
            return Err(ExecError::BadOutputAck { id, source });
        }
        Ok(())
    }

    /// Sends `signal` to the session's process group (`kill(-pgid, signal)`), so descendants get
    /// it too. Numbers outside `1..=64` are ignored, as are delivery errors. Before the child has
    /// made itself a group leader the group does not exist yet; the child alone is signalled then.
    pub fn signal(&mut self, id: u32, signal: i32) -> Result<(), ExecError> {
        let handle = self.live(id)?;
        signal_group(&self.reaper, handle.pid, signal);
        Ok(())
    }

    /// Sets the session's terminal size (`TIOCSWINSZ`, which also sends `SIGWINCH` to its
    /// foreground group). A no-op for a session without a PTY.
    pub fn resize(&mut self, id: u32, rows: u16, cols: u16) -> Result<(), ExecError> {
        let handle = self.live(id)?;
        if let Some(master) = handle.pty.as_ref().and_then(Weak::upgrade) {
            if let Err(err) = pty::set_window_size(master.get_ref().as_fd(), rows, cols) {
                tracing::warn!(id, %err, "resizing the PTY failed");
            }
        }
        Ok(())
    }

    /// SIGKILLs every active session whose id is in `range` (its relay client is gone). The
    /// sessions still end with `exec.exited {code: -1}` once their output drains.
    pub fn kill_range(&mut self, range: IdRange) {
        self.prune();
        for (id, handle) in &self.sessions {
            if range.contains(*id) {
                // Nobody is left to acknowledge its output.
                if let Some(flow) = &handle.shared.flow {
                    flow.window.abandon();
                }
                signal_group(&self.reaper, handle.pid, libc::SIGKILL);
            }
        }
    }

    /// Sends `signal` to every active session (shutdown sends `SIGTERM`).
    pub fn signal_all(&mut self, signal: i32) {
        self.prune();
        for handle in self.sessions.values().chain(&self.orphans) {
            signal_group(&self.reaper, handle.pid, signal);
        }
    }

    /// Sessions that have not sent their terminal message yet.
    pub fn active(&self) -> usize {
        self.sessions.values().chain(&self.orphans).filter(|h| !h.shared.is_finished()).count()
    }

    fn live(&self, id: u32) -> Result<&SessionHandle, ExecError> {
        self.sessions
            .get(&id)
            .filter(|h| !h.shared.is_finished())
            .ok_or(ExecError::NoSuchSession(id))
    }

    /// Forgets sessions whose task has finished.
    fn prune(&mut self) {
        self.sessions.retain(|_, h| !h.shared.is_finished());
        self.orphans.retain(|h| !h.shared.is_finished());
    }

    /// Refuses the request on `id` because the workload is frozen: `exec.failed {kind: other,
    /// stage: workload_latch}` (PROTOCOL.md §8.2).
    pub fn refuse_frozen(&self, id: u32) {
        self.report_failure(
            id,
            ExecFailed {
                kind: ExecFailureKind::Other,
                errno: None,
                errno_name: None,
                message: "the workload is frozen; thaw it before starting an exec".to_owned(),
                stage: Some("workload_latch".to_owned()),
            },
        );
    }

    /// Sends `exec.failed` for a session that never started.
    fn report_failure(&self, id: u32, failed: ExecFailed) {
        tracing::debug!(kind = failed.kind.as_str(), message = %failed.message, "exec failed");
        let out = self.out.clone();
        tokio::spawn(async move {
            // A closed channel means the host is gone; there is nobody left to tell.
            let _closed = out.send(id, Message::ExecFailed(failed)).await;
        });
    }
}

/// The `exec.failed` for a request over the `max_executions` admission limit.
fn admission_refused() -> ExecFailed {
    ExecFailed {
        kind: ExecFailureKind::ResourceLimit,
        errno: None,
        errno_name: None,
        message: "active execution limit reached".to_owned(),
        stage: Some("execution_admission".to_owned()),
    }
}

/// `kill(-pid, signal)`, falling back to `kill(pid, signal)` while the child has not called
/// `setsid` yet (`ESRCH` for the group) and is still unreaped, so the pid cannot be recycled.
fn signal_group(reaper: &Reaper, pid: u32, signal: i32) {
    if !(1..=pre_exec::MAX_SIGNAL).contains(&signal) {
        tracing::debug!(signal, "ignoring an invalid signal number");
        return;
    }
    let Ok(pid) = i32::try_from(pid) else { return };
    match pty::kill(-pid, signal) {
        Err(Errno::ESRCH) => {
            let direct = reaper.with_unreaped(pid.unsigned_abs(), || pty::kill(pid, signal));
            if let Some(Err(err)) = direct {
                tracing::debug!(pid, signal, %err, "signalling the child failed");
            }
        }
        Err(err) => tracing::debug!(pid, signal, %err, "signalling the process group failed"),
        Ok(()) => {}
    }
}
