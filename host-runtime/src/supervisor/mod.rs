//! `moat __sandbox DIR`: the per-sandbox process (DESIGN.md "Process model").
//! This module is the namespace backend's; a VM sandbox's `__sandbox` hands over to
//! [`crate::backend::vm::supervise`] and shares the handshake and relay below.
//!
//! ```text
//!  start agent ─► bootstrap handshake ─► relay on DIR/agent.sock ─► "ok" on stdout ─► serve
//!   (moat __ns-prepare DIR, mapped)  (bootstrap, init.resolved,      until the guest closes
//!                                        init.ack, ready)               (core.shutdown) ─► reap
//!  while serving: time limits, a client's core.shutdown, DIR/drain (relay refuses new
//!  execs ─► "refusing" in DIR/drain ─► last exec ended ─► core.shutdown), and DIR/stop-request
//!  (relay refuses new execs ─► stop signal to every exec ─► they end or the grace passes
//!  ─► core.shutdown)
//! ```
//!
//! Its stdout is the startup pipe: exactly one line, `ok` or `error: <reason>`. Its stderr is
//! `DIR/sandbox.log`. The agent runs in new pid, mount, uts, ipc and net namespaces (the net
//! namespace has only a loopback device, unless the sandbox has a network: then
//! [`crate::network::attach`] wires it once the handshake is done) and dies with this process
//! (`PR_SET_PDEATHSIG`, then `unshare --kill-child`, then the pid namespace).

pub mod entry;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moat_protocol::payload::bootstrap::GuestBootstrap;
use moat_protocol::payload::core::InitAck;
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, RawFrame, decode_frame};
use moat_relay::{RelayConfig, RelayHandle};

use crate::backend::namespace::cgroup::{CgroupLimits, SandboxCgroup};
use crate::backend::namespace::idmap::IdMapping;
use crate::backend::namespace::userns::ReadyPipe;
use crate::config::ShareNaming;
use crate::error::RuntimeError;
use crate::limits::{
    AGENT_EXIT_TIMEOUT_MS, DRAIN_POLL_INTERVAL_MS, GUEST_SHUTDOWN_GRACE_MS,
    HANDSHAKE_FRAME_TIMEOUT_MS, POLL_INTERVAL_MS, RELAY_SOCKET_WAIT_MS, SOCKET_READ_CHUNK_BYTES,
    STARTUP_POLL_INTERVAL_US,
};
use crate::store::home::SandboxDir;

/// The line that reports a successful start on the startup pipe.
pub const STARTUP_OK: &str = "ok";

const AGENT: &str = "the agent";

/// `unshare(1)`'s flags for the agent: new user, pid, mount, uts, ipc and net namespaces (the
/// others owned by the user namespace, whose id maps [`crate::backend::namespace::userns`] writes), the agent as PID 1
/// of its pid namespace, killed with `unshare`.
pub const UNSHARE_ARGS: [&str; 8] =
    ["--user", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork", "--kill-child"];

/// Runs the sandbox process to its end. Reports the startup result on stdout.
pub fn serve_sandbox(dir: &SandboxDir) -> Result<(), RuntimeError> {
    let spec = dir.read_spec()?;
    if spec.backend == crate::backend::isolation::BackendKind::Vm {
        return crate::backend::vm::supervise(dir);
    }
    spec.config.write_scripts(&dir.scripts_dir())?;
    crate::patches::write_bundle(&spec.config.patches, &dir.patches_dir())?;
    let rootless = crate::backend::namespace::rootless::is_rootless();
    // Held until this process ends: no other sandbox gets these host ids meanwhile. An
    // unprivileged user's sandboxes all use the user's own ids instead: no pool, no lease.
    let lease = if rootless {
        None
    } else {
        match crate::backend::namespace::idmap::for_sandbox() {
            Ok(pool) => Some(crate::backend::namespace::idlease::lease(&pool)?),
            Err(reason) => {
                tracing::warn!("{}", crate::backend::namespace::idmap::identity_warning(&reason));
                None
            }
        }
    };
    let mapping = match &lease {
        _ if rootless => {
            IdMapping::Rootless(crate::backend::namespace::rootless::RootlessMap::for_this_user())
        }
        Some(lease) => IdMapping::Range(lease.ids()),
        None => IdMapping::Identity,
    };
    let naming = match mapping {
        IdMapping::Identity | IdMapping::Rootless(_) => ShareNaming::HostPath,
        IdMapping::Range(_) => ShareNaming::Staged,
    };
    let shares = spec.config.shares(&dir.scripts_dir(), naming);
    let bootstrap = spec.config.bootstrap(&spec.name, &shares);
    let limits = CgroupLimits {
        cpus: spec.config.vcpus,
        memory_mib: spec.config.memory_mib,
        pids: spec.config.effective_pids_limit(),
    };
    let leaf = crate::backend::namespace::cgroup::leaf_name(&spec.name, std::process::id());
    // Unprivileged: no cgroup; the CLI refused explicit limits and warned of the default one.
    let cgroup = if rootless { None } else { SandboxCgroup::create(&leaf, limits)? };
    let (mut child, channel) = start_agent(dir, cgroup.as_ref(), &mapping)?;
    let ready = match handshake(&channel, bootstrap) {
        Ok(ready) => ready,
        Err(err) => {
            stop_child(&mut child);
            return Err(err);
        }
    };
    // Held until the sandbox ends: dropping it takes the guest network down.
    let network = match crate::network::attach(
        &spec.config.network,
        child.id(),
        dir,
        crate::network::GuestResolver::WriteThroughProcessRoot,
    ) {
        Ok(network) => network,
        Err(err) => {
            stop_child(&mut child);
            return Err(err.into());
        }
    };
    let limits = TimeLimits {
        max_duration: spec.config.max_duration(),
        idle_timeout: spec.config.idle_timeout(),
        reason_file: None,
    };
    let result = run_relay(dir, channel, ready, limits);
    let agent_status = reap_agent(&mut child);
    drop(network);
    drop(cgroup);
    match result? {
        Some(reason) => record_own_exit(dir, reason),
        None => {
            let how = agent_status.map_or_else(|| "did not exit".to_owned(), |s| s.to_string());
            let reason =
                format!("{ENDED_UNASKED}: the agent's process ended ({how}); see agent.log");
            tracing::error!(reason, "the sandbox crashed");
            record_own_crash(dir, &reason);
        }
    }
    Ok(())
}

/// When the sandbox process shuts its guest down by itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimeLimits {
    /// `--max-duration`: counted from when the relay is up.
    pub(crate) max_duration: Option<Duration>,
    /// `--idle-timeout`: time with no client connected.
    pub(crate) idle_timeout: Option<Duration>,
    /// When set, the reason is written to this file the moment a limit fires (the VM backend's
    /// supervisor reads it: libkrun may end the process before the relay returns).
    pub(crate) reason_file: Option<std::path::PathBuf>,
}

/// Why a sandbox stopped, as `state.json`'s `stop_reason` says it: a client (`moat stop`, an SDK)
/// sent `core.shutdown`.
pub const STOPPED_BY_CLIENT: &str = "core.shutdown from a client";
/// The start of a crashed sandbox's `stop_reason` when its guest ended without anyone asking (no
/// `core.shutdown`, no time limit): the agent died, or the guest kernel panicked or reset.
pub const ENDED_UNASKED: &str = "the guest ended without a shutdown request";
/// `stop_reason` after `--max-duration`.
pub const STOPPED_MAX_DURATION: &str = "--max-duration reached";
/// `stop_reason` after `moat drain`, once the last exec ended.
pub const STOPPED_DRAINED: &str = "drained: the last exec ended";
/// `stop_reason` after a stop with a stop signal that did not wait for the end (`moat stop
/// --no-wait`): the signal went to every exec, then `core.shutdown`.
pub const STOPPED_WITH_SIGNAL: &str = "moat stop: the stop signal, then core.shutdown";
/// `stop_reason` of an attached sandbox whose creator went away (its process ended, or the
/// library handle was dropped).
pub const STOPPED_CREATOR_GONE: &str = "attached: its creator went away";
/// `stop_reason` after `--idle-timeout`.
pub const STOPPED_IDLE: &str = "--idle-timeout reached with no client connected";

/// A named sandbox records its own clean end (`moat run`'s has no `state.json`; one created
/// `--ephemeral` is removed instead). Only a live record changes: `moat stop`/`kill` write their
/// own outcome.
pub(crate) fn record_own_exit(dir: &SandboxDir, reason: &str) {
    record_own_end(dir, crate::store::state::Status::Stopped, Some(0), reason);
}

/// A named sandbox records that its guest ended with nobody asking, as `crashed` with `reason`
/// (the only place `Crashed` is written: otherwise it is read from a dead pid). Only a live record
/// changes.
pub(crate) fn record_own_crash(dir: &SandboxDir, reason: &str) {
    record_own_end(dir, crate::store::state::Status::Crashed, None, reason);
}

fn record_own_end(
    dir: &SandboxDir,
    status: crate::store::state::Status,
    exit_code: Option<i32>,
    reason: &str,
) {
    let Ok(mut record) = crate::store::state::read_recorded(dir.path()) else { return };
    if !matches!(
        record.status,
        crate::store::state::Status::Running | crate::store::state::Status::Draining
    ) {
        return;
    }
    if record.spec.config.ephemeral {
        tracing::info!(status = status.as_str(), reason, "an ephemeral sandbox ended; removing it");
        crate::lifecycle::remove_ended_ephemeral(dir);
        return;
    }
    record.status = status;
    record.stopped_at = Some(crate::store::state::now());
    record.exit_code = exit_code;
    record.stop_reason = Some(reason.to_owned());
    if let Err(err) = crate::store::state::write(dir.path(), &record) {
        tracing::warn!(%err, status = status.as_str(), "could not record how the sandbox ended");
    }
}

/// Writes why the sandbox is stopping to `path`, unless a reason is already there (the first
/// cause wins: a time limit that fired before a client's `core.shutdown`, or the reverse).
fn write_reason_once(path: &std::path::Path, reason: &str) {
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path);
    let written = file.and_then(|mut file| file.write_all(reason.as_bytes()));
    match written {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => tracing::warn!(%err, "could not record why the sandbox is stopping"),
    }
}

/// Asks for [`crate::limits::AGENT_CHANNEL_SEND_BUFFER_BYTES`] of send buffer on one end of the
/// agent channel, so a 256 KiB output chunk or a 3 MiB bulk record crosses in one write instead
/// of a write, a wait for the reader and another write per 208 KiB (the default `wmem_default`).
/// The kernel caps it at `net.core.wmem_max`; a refusal leaves the default, which only costs
/// throughput.
fn widen_send_buffer(stream: &UnixStream) {
    let size = crate::limits::AGENT_CHANNEL_SEND_BUFFER_BYTES;
    if let Err(err) = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::SndBuf, &size)
    {
        tracing::debug!(%err, "agent channel keeps its default send buffer");
    }
}

/// `unshare --mount` running `moat __ns-prepare DIR`, which starts the agent in its namespaces:
/// with `mapping`'s unprivileged range by itself ([`crate::backend::namespace::mapped`]), or with the identity
/// map through the ready-pipe handshake ([`crate::backend::namespace::userns`]). An unprivileged user's map
/// ([`crate::backend::namespace::rootless`]) takes the same handshake, with `unshare` running `__ns-init` directly.
fn start_agent(
    dir: &SandboxDir,
    cgroup: Option<&SandboxCgroup>,
    mapping: &IdMapping,
) -> Result<(Child, UnixStream), RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("find own executable", "moat"))?;
    let (ours, theirs) =
        UnixStream::pair().map_err(RuntimeError::io("create agent socketpair", dir.path()))?;
    widen_send_buffer(&ours);
    widen_send_buffer(&theirs);
    let log_path = dir.agent_log();
    let log = std::fs::File::create(&log_path)
        .map_err(RuntimeError::io("create agent log", &log_path))?;
    // A private mount namespace first, where `__ns-prepare` binds the root source, then the
    // sandbox's namespaces (`ns_init::prepare_and_enter` execs `unshare` with UNSHARE_ARGS).
    // Unprivileged, the sandbox's namespaces at once: `__ns-init` binds the root source itself.
    let mut command = Command::new("unshare");
    match mapping {
        IdMapping::Rootless(_) => command
            .args(UNSHARE_ARGS)
            .args(["--propagation", "private"])
            .arg(exe)
            .arg("__ns-init")
            .env(crate::backend::namespace::rootless::ROOTLESS_ENV, "1"),
        IdMapping::Identity | IdMapping::Range(_) => command
            .args(["--mount", "--propagation", "private"])
            .arg(exe)
            .arg("__ns-prepare")
            .env_remove(crate::backend::namespace::rootless::ROOTLESS_ENV),
    };
    command
        .arg(dir.path())
        .env("MOAT_AGENT_LOG", "info")
        .env_remove(crate::backend::namespace::cgroup::PROCS_ENV)
        .env_remove(crate::backend::namespace::mapped::ID_MAP_ENV)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if let Some(cgroup) = cgroup {
        command.env(crate::backend::namespace::cgroup::PROCS_ENV, cgroup.procs_env());
    }
    crate::backend::namespace::pre_exec::kill_with_parent(&mut command);
    if let IdMapping::Range(ids) = mapping {
        // `__ns-prepare` makes the user namespace itself (`backend::namespace::mapped`).
        command.env(
            crate::backend::namespace::mapped::ID_MAP_ENV,
            crate::backend::namespace::mapped::env_value(ids),
        );
        let child = command.spawn().map_err(RuntimeError::io("spawn", "unshare"))?;
        return Ok((child, ours));
    }
    let ready = ReadyPipe::new()?;
    command.env(crate::backend::namespace::userns::READY_FD_ENV, ready.child_fd());
    let mut child = command.spawn().map_err(RuntimeError::io("spawn", "unshare"))?;
    drop(ready.child_end);
    if let Err(err) =
        crate::backend::namespace::userns::map_ids(child.id(), ready.parent_end, mapping)
    {
        stop_child(&mut child);
        return Err(err);
    }
    Ok((child, ours))
}

/// The bootstrap handshake; returns the agent's `core.ready` frame for the relay to replay.
pub(crate) fn handshake(
    channel: &UnixStream,
    bootstrap: GuestBootstrap,
) -> Result<RawFrame, RuntimeError> {
    channel
        .set_read_timeout(Some(Duration::from_millis(HANDSHAKE_FRAME_TIMEOUT_MS)))
        .map_err(RuntimeError::io("set channel timeout", "socketpair"))?;
    let mut reader = AgentReader { stream: channel, decoder: FrameDecoder::new() };
    send(channel, "core.bootstrap", Message::Bootstrap(Box::new(bootstrap)))?;
    let waiting = "waiting for core.init.resolved";
    match reader.next_message(waiting)?.1 {
        Message::InitResolved(_) => {}
        other => return Err(unexpected(&other, waiting)),
    }
    send(channel, "core.init.ack", Message::InitAck(InitAck { failure: false }))?;
    let waiting = "waiting for core.ready";
    let (raw, message) = reader.next_message(waiting)?;
    match message {
        Message::Ready(_) => Ok(raw),
        other => Err(unexpected(&other, waiting)),
    }
}

fn unexpected(message: &Message, while_doing: &'static str) -> RuntimeError {
    let got = match message {
        Message::Error(err) => format!("core.error ({})", err.message),
        other => wire_name(other),
    };
    RuntimeError::Unexpected { peer: AGENT, got, while_doing }
}

/// The wire type name of `message`, for error text.
pub fn wire_name(message: &Message) -> String {
    match (message.message_type(), message) {
        (Some(kind), _) => kind.wire_name().to_owned(),
        (None, Message::Unknown(unknown)) => unknown.t.clone(),
        (None, _) => "an unknown message".to_owned(),
    }
}

fn send(
    mut channel: &UnixStream,
    what: &'static str,
    message: Message,
) -> Result<(), RuntimeError> {
    let bytes = MessageFrame::new(0, message)
        .to_bytes()
        .map_err(|source| RuntimeError::Encode { what, source })?;
    channel.write_all(&bytes).map_err(RuntimeError::io("write to agent channel", "socketpair"))
}

/// Blocking frame reader for the handshake (before the relay owns the stream).
struct AgentReader<'a> {
    stream: &'a UnixStream,
    decoder: FrameDecoder,
}

impl AgentReader<'_> {
    fn next_message(
        &mut self,
        while_doing: &'static str,
    ) -> Result<(RawFrame, Message), RuntimeError> {
        let mut buf = vec![0u8; SOCKET_READ_CHUNK_BYTES];
        loop {
            if let Some(raw) = self
                .decoder
                .next_frame()
                .map_err(|source| RuntimeError::Frame { peer: AGENT, source })?
            {
                return match decode_frame(&raw) {
                    Ok(Decoded::Message(frame)) => Ok((raw, frame.message)),
                    Ok(_) => Err(RuntimeError::Unexpected {
                        peer: AGENT,
                        got: "a non-message frame".into(),
                        while_doing,
                    }),
                    Err(source) => Err(RuntimeError::Decode { peer: AGENT, source }),
                };
            }
            let n = match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return Err(RuntimeError::PeerGone { peer: AGENT, while_doing }),
                Ok(n) => n,
            };
            self.decoder.push(&buf[..n]);
        }
    }
}

/// Serves the relay until the guest closes; prints `ok` once the socket exists. Enforces `limits`
/// by sending the guest `core.shutdown`, then stopping the relay if the guest does not close.
/// Returns why the sandbox stopped: a time limit or a client's `core.shutdown`, or `None` when
/// the guest ended with nobody asking.
pub(crate) fn run_relay(
    dir: &SandboxDir,
    channel: UnixStream,
    ready: RawFrame,
    limits: TimeLimits,
) -> Result<Option<&'static str>, RuntimeError> {
    channel
        .set_read_timeout(None)
        .map_err(RuntimeError::io("clear channel timeout", "socketpair"))?;
    channel
        .set_nonblocking(true)
        .map_err(RuntimeError::io("set channel non-blocking", "socketpair"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError::io("start async runtime", dir.path()))?;
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::from_std(channel)
            .map_err(RuntimeError::io("register agent channel", "socketpair"))?;
        let (reader, writer) = stream.into_split();
        let (handle, control) = RelayHandle::new();
        let config = RelayConfig { socket_path: dir.socket(), log_dir: dir.log_dir(), ready };
        let mut relay = tokio::spawn(moat_relay::serve(config, reader, writer, control));
        let socket = dir.socket();
        let deadline = Instant::now() + Duration::from_millis(RELAY_SOCKET_WAIT_MS);
        while !socket.exists() && Instant::now() < deadline && !relay.is_finished() {
            tokio::time::sleep(Duration::from_micros(STARTUP_POLL_INTERVAL_US)).await;
        }
        if socket.exists() {
            report_startup(STARTUP_OK);
        }
        let fired = Arc::new(OnceLock::new());
        let reason_file = limits.reason_file.clone();
        let drainer = tokio::spawn(drain_on_request(
            handle.clone(),
            dir.clone(),
            limits.reason_file.clone(),
            Arc::clone(&fired),
        ));
        let stopper = tokio::spawn(stop_on_request(
            handle.clone(),
            dir.clone(),
            limits.reason_file.clone(),
            Arc::clone(&fired),
        ));
        let enforcer = tokio::spawn(enforce(handle.clone(), limits, Arc::clone(&fired)));
        let asked =
            tokio::spawn(note_client_shutdown(handle.clone(), reason_file, Arc::clone(&fired)));
        let outcome = (&mut relay).await;
        enforcer.abort();
        asked.abort();
        drainer.abort();
        stopper.abort();
        let reason = fired.get().copied();
        drop(handle);
        match outcome {
            Ok(Ok(stats)) => {
                tracing::info!(stop = ?stats.stop, reason, "relay stopped");
                Ok(reason)
            }
            Ok(Err(err)) => Err(err.into()),
            Err(join) => Err(RuntimeError::Io {
                what: "join relay task",
                path: socket,
                source: std::io::Error::other(join),
            }),
        }
    })
}

/// Waits for the first time limit to pass, records which in `fired`, asks the guest to shut
/// down, and stops the relay if it has not closed after [`GUEST_SHUTDOWN_GRACE_MS`]. Never
/// returns when there is no limit.
async fn enforce(handle: RelayHandle, limits: TimeLimits, fired: Arc<OnceLock<&'static str>>) {
    let max_duration = async {
        match limits.max_duration {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let idle = async {
        match limits.idle_timeout {
            Some(limit) => idle_for(handle.connected_clients(), limit).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        () = max_duration => STOPPED_MAX_DURATION,
        () = idle => STOPPED_IDLE,
    };
    shut_down_guest(&handle, reason, limits.reason_file.as_deref(), &fired).await;
}

/// Records `reason` in `fired` (and the reason file), asks the guest to shut down, and stops
/// the relay if it has not closed after [`GUEST_SHUTDOWN_GRACE_MS`].
async fn shut_down_guest(
    handle: &RelayHandle,
    reason: &'static str,
    reason_file: Option<&std::path::Path>,
    fired: &OnceLock<&'static str>,
) {
    tracing::info!(reason, "shutting the sandbox down");
    let _ = fired.set(reason);
    if let Some(path) = reason_file {
        write_reason_once(path, reason);
    }
    if let Err(err) = handle.send_to_guest(&MessageFrame::new(0, Message::Shutdown)).await {
        tracing::warn!(%err, "could not send core.shutdown");
    }
    tokio::time::sleep(Duration::from_millis(GUEST_SHUTDOWN_GRACE_MS)).await;
    tracing::warn!("the guest did not shut down in time; stopping the relay");
    handle.shutdown();
}

/// `moat drain`: waits for `DIR/drain`, has the relay refuse new execs, confirms that in the
/// file, and once no exec is open shuts the guest down as a time limit does. Never returns
/// when nobody asks.
async fn drain_on_request(
    handle: RelayHandle,
    dir: SandboxDir,
    reason_file: Option<std::path::PathBuf>,
    fired: Arc<OnceLock<&'static str>>,
) {
    let request = dir.drain_file();
    while !request.exists() {
        tokio::time::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS)).await;
    }
    if !handle.drain().await {
        return;
    }
    let tmp = request.with_extension("tmp");
    let confirmed = std::fs::write(&tmp, crate::store::home::DRAIN_CONFIRMED)
        .and_then(|()| std::fs::rename(&tmp, &request));
    if let Err(err) = confirmed {
        tracing::warn!(%err, "could not confirm the drain");
    }
    tracing::info!("draining: new execs are refused");
    if handle.execs_ended().await {
        shut_down_guest(&handle, STOPPED_DRAINED, reason_file.as_deref(), &fired).await;
    }
}

/// A stop the sandbox process carries out ([`crate::lifecycle::stop_signal::StopRequest`]:
/// `moat stop` with a stop signal, or an attached sandbox's creator gone): waits for
/// `DIR/stop-request`, has the relay refuse new execs and send the signal to every open exec
/// session, waits for them to end (up to the request's grace), then shuts the guest down as a
/// time limit does. Never returns when nobody asks.
async fn stop_on_request(
    handle: RelayHandle,
    dir: SandboxDir,
    reason_file: Option<std::path::PathBuf>,
    fired: Arc<OnceLock<&'static str>>,
) {
    let request = loop {
        if let Some(request) = crate::lifecycle::stop_signal::StopRequest::read(&dir) {
            break request;
        }
        tokio::time::sleep(Duration::from_millis(DRAIN_POLL_INTERVAL_MS)).await;
    };
    let reason = if request.creator_gone { STOPPED_CREATOR_GONE } else { STOPPED_WITH_SIGNAL };
    if !handle.drain().await {
        return;
    }
    if let Some(signal) = request.signal {
        let Some(signalled) = handle.signal_execs(signal.number()).await else { return };
        let grace = request.grace;
        tracing::info!(%signal, signalled, ?grace, reason, "the stop signal went to every exec");
        if tokio::time::timeout(grace, handle.execs_ended()).await.is_err() {
            tracing::info!("execs still running after the stop signal's grace; shutting down");
        }
    }
    shut_down_guest(&handle, reason, reason_file.as_deref(), &fired).await;
}

/// Notes a client's `core.shutdown` (`moat stop`, an SDK) as the reason the sandbox stops, unless
/// a time limit fired first. The relay reports it before forwarding the frame, so the note is
/// written before the guest can act on it (libkrun may end the VM process right after).
async fn note_client_shutdown(
    handle: RelayHandle,
    reason_file: Option<std::path::PathBuf>,
    fired: Arc<OnceLock<&'static str>>,
) {
    if !handle.client_requested_shutdown().await {
        return;
    }
    if fired.set(STOPPED_BY_CLIENT).is_ok() {
        tracing::info!("a client asked the sandbox to shut down");
    }
    if let Some(path) = &reason_file {
        write_reason_once(path, fired.get().copied().unwrap_or(STOPPED_BY_CLIENT));
    }
}

/// Resolves once no client has been connected for `limit` in a row.
async fn idle_for(mut clients: tokio::sync::watch::Receiver<usize>, limit: Duration) {
    loop {
        if clients.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        let busy = tokio::time::timeout(limit, clients.wait_for(|n| *n > 0))
            .await
            .map(|connected| connected.is_ok());
        match busy {
            Err(_elapsed) => return,
            Ok(true) => {}
            Ok(false) => return std::future::pending().await,
        }
    }
}

/// Writes the startup line on stdout (the pipe to the CLI).
pub fn report_startup(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits for the agent's process to end after the relay stopped; kills it after a while. Returns
/// how it ended by itself, or `None` when it had to be killed.
fn reap_agent(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_millis(AGENT_EXIT_TIMEOUT_MS);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
    tracing::warn!("agent did not exit after the relay stopped; killing it");
    stop_child(child);
    None
}

fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_written_wins() {
        let base = std::env::temp_dir().join(format!("moat-reason-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("stop-reason");
        write_reason_once(&path, STOPPED_MAX_DURATION);
        write_reason_once(&path, STOPPED_BY_CLIENT);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), STOPPED_MAX_DURATION);
        let _ = std::fs::remove_dir_all(base);
    }
}
