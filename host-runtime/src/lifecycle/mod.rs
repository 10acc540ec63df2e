//! Named sandboxes: `moat create`, `exec`, `ls`, `inspect`, `socket`, `stop`, `kill`, `rm`.
//!
//! ```text
//!  create: name check ─► DIR (mkdir: the uniqueness lock) ─► spec ─► spawn detached
//!          `moat __sandbox DIR` (own session) ─► state running ─► startup line ─► started_at
//!  exec:   state running? ─► relay client on DIR/agent.sock (as `moat run` does)
//!  stop:   draining ─► core.shutdown ─► wait ─► SIGTERM ─► wait ─► SIGKILL (process group)
//!          ─► stopped; with a stop signal, core.shutdown comes after the signal went to every
//!          exec and they ended (`stop_signal`)
//!          --timeout T: draining ─► core.shutdown ─► wait T ─► SIGKILL ─► stopped
//!          --no-wait: core.shutdown, return (the sandbox process records its end)
//!  kill:   SIGKILL (process group) ─► stopped, exit code 137
//!  rm:     refuses a live sandbox unless -f (then kill) ─► remove DIR
//!  start:  not live ─► the recorded spec ─► spawn as create does (`start`)
//!  drain:  draining ─► the relay refuses new execs ─► last exec ends ─► stopped (`drain`)
//!  create --replace: rm -f an existing NAME ─► create
//!  --ephemeral: whoever sees it end (its sandbox process, stop, kill, a listing that finds it
//!          crashed) removes DIR instead of recording the end
//! ```
//!
//! The state store's rules (atomic writes, `crashed` at read time) live in [`crate::store::state`].

pub mod attach;
pub mod drain;
pub mod logs;
pub mod run;
pub mod start;
pub mod stop_signal;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::agentd_bin;
use crate::api::config::SandboxOptions;
use crate::backend::isolation;
use crate::error::RuntimeError;
use crate::lifecycle::run::Lifetime;
use crate::limits::{KILL_WAIT_MS, POLL_INTERVAL_MS, SANDBOX_EXIT_TIMEOUT_MS, STOP_TERM_GRACE_MS};
use crate::relay_client::{ExecOutcome, RelayClient, exit_status};
use crate::store::home::{self, SandboxDir, SandboxSpec};
use crate::store::state::{self, SandboxState, Status};

/// `moat exec`'s exit status when `--timeout` killed the command (as `timeout(1)`).
pub const EXIT_TIMED_OUT: u8 = 124;

/// Shell-style exit code of a process killed by `signal`.
fn signal_exit_code(signal: Signal) -> i32 {
    128 + signal as i32
}

/// The directory of an existing named sandbox (one with a `state.json`) in `$MOAT_HOME`.
pub fn open_named(name: &str) -> Result<SandboxDir, RuntimeError> {
    open_named_in(&home::moat_home(), name)
}

/// The directory of an existing named sandbox in the moat home `home`.
pub fn open_named_in(home: &Path, name: &str) -> Result<SandboxDir, RuntimeError> {
    state::validate_name(name)?;
    let path = home.join("sandboxes").join(name);
    if !path.join(state::STATE_FILE).is_file() {
        return Err(RuntimeError::UnknownSandbox(name.to_owned()));
    }
    Ok(SandboxDir::open(path))
}

/// The programs a sandbox runs: the sandbox process (`moat __sandbox DIR`) and the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executables {
    /// A `moat` binary.
    pub moat: PathBuf,
    /// The `moat-agentd` binary.
    pub agentd: PathBuf,
}

impl Executables {
    /// This `moat` and the namespace backend's agent, found (or built) as [`agentd_bin::locate`]
    /// does.
    pub fn locate() -> Result<Executables, RuntimeError> {
        Self::locate_for(crate::backend::isolation::BackendKind::Namespace)
    }

    /// This `moat` and the agent `backend` runs ([`agentd_bin::locate_for`]).
    pub fn locate_for(
        backend: crate::backend::isolation::BackendKind,
    ) -> Result<Executables, RuntimeError> {
        Ok(Executables { moat: run::own_executable()?, agentd: agentd_bin::locate_for(backend)? })
    }
}

/// `moat create`: boots a detached sandbox in `$MOAT_HOME` and records it. Returns its name.
pub fn create(args: SandboxOptions) -> Result<String, RuntimeError> {
    create_in(&home::moat_home(), args, None)
}

/// Boots a detached sandbox in the moat home `home` and records it. Returns its name.
/// `executables`: `None` locates them as the CLI does.
pub fn create_in(
    home: &Path,
    args: SandboxOptions,
    executables: Option<&Executables>,
) -> Result<String, RuntimeError> {
    create_with(home, args, executables, false).map(|(name, _)| name)
}

/// [`create_in`] for an attached sandbox ([`attach`]): it stops when the returned
/// [`attach::Attachment`] is dropped or this process ends. With `replace`, as
/// [`replace_in`].
pub fn create_attached_in(
    home: &Path,
    args: SandboxOptions,
    executables: Option<&Executables>,
    replace: bool,
) -> Result<(String, attach::Attachment), RuntimeError> {
    if replace {
        remove_existing(home, &args.name)?;
    }
    let (name, attachment) = create_with(home, args, executables, true)?;
    let attachment = attachment
        .ok_or_else(|| RuntimeError::Config("an attached create made no attachment".to_owned()))?;
    Ok((name, attachment))
}

fn create_with(
    home: &Path,
    args: SandboxOptions,
    executables: Option<&Executables>,
    attached: bool,
) -> Result<(String, Option<attach::Attachment>), RuntimeError> {
    state::validate_name(&args.name)?;
    // Checked early for a clean error; the `mkdir` below is what makes the name unique.
    if home.join("sandboxes").join(&args.name).exists() {
        return Err(RuntimeError::DuplicateName(args.name));
    }
    run::refuse_image_without_root(&args.root)?;
    let backend = isolation::prepare_backend(args.isolation)?;
    let (root, defaults) = run::resolve_root(home, &args.root)?;
    let mut config = args.config;
    if let Some(defaults) = defaults {
        config.env = defaults.merged_env(&config.env);
        config.cwd = config.cwd.or(defaults.working_dir);
        config.user = config.user.or(defaults.user);
        config.stop_signal = config.stop_signal.or(defaults.stop_signal);
    }
    if let Some(signal) = &config.stop_signal {
        signal.parse::<stop_signal::StopSignal>()?;
    }
    crate::store::volumes::resolve_named(home, &mut config)?;
    config.resolve()?;
    isolation::check_limits(backend, &config)?;
    let executables = match executables {
        Some(given) if backend == crate::backend::isolation::BackendKind::Namespace => {
            given.clone()
        }
        // A VM's init must be the static agent, whatever agent the caller named.
        Some(given) => {
            Executables { moat: given.moat.clone(), agentd: agentd_bin::locate_for(backend)? }
        }
        None => Executables::locate_for(backend)?,
    };
    let dir = SandboxDir::create(home, &args.name).map_err(|err| match err {
        RuntimeError::Io { what: "create sandbox directory", source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            RuntimeError::DuplicateName(args.name.clone())
        }
        other => other,
    })?;
    let span = tracing::info_span!("sandbox", name = %args.name);
    let _entered = span.enter();
    let spec = SandboxSpec {
        name: args.name.clone(),
        root,
        agentd: executables.agentd,
        backend,
        rootless: crate::backend::namespace::rootless::is_rootless(),
        config,
    };
    let (attachment, creator) = match attached {
        true => attach::Attachment::pipe().map(|(a, c)| (Some(a), Some(c)))?,
        false => (None, None),
    };
    if let Err(err) = boot(&dir, spec, &executables.moat, creator) {
        if let Err(cleanup) = dir.remove() {
            tracing::warn!(%cleanup, "could not remove the sandbox directory");
        }
        return Err(err);
    }
    Ok((args.name, attachment))
}

/// `moat create --replace NAME` in `$MOAT_HOME`. Returns its name.
pub fn replace(args: SandboxOptions) -> Result<String, RuntimeError> {
    replace_in(&home::moat_home(), args, None)
}

/// `moat create --replace`: [`create_in`], after removing an existing sandbox named
/// `args.name` (killed first when it is live, as `moat rm -f`). Returns the new sandbox's name.
pub fn replace_in(
    home: &Path,
    args: SandboxOptions,
    executables: Option<&Executables>,
) -> Result<String, RuntimeError> {
    remove_existing(home, &args.name)?;
    create_in(home, args, executables)
}

/// Removes the sandbox `name` if there is one (killed first when it is live).
fn remove_existing(home: &Path, name: &str) -> Result<(), RuntimeError> {
    match open_named_in(home, name) {
        Ok(dir) => remove_dir(dir, true),
        Err(RuntimeError::UnknownSandbox(_)) => Ok(()),
        Err(other) => Err(other),
    }
}

fn boot(
    dir: &SandboxDir,
    spec: SandboxSpec,
    moat: &Path,
    creator: Option<std::os::fd::OwnedFd>,
) -> Result<(), RuntimeError> {
    let record = SandboxState {
        version: state::STATE_VERSION,
        name: spec.name.clone(),
        spec,
        status: Status::Running,
        pid: None,
        created_at: state::now(),
        started_at: None,
        stopped_at: None,
        exit_code: None,
        stop_reason: None,
    };
    launch(dir, record, moat, creator).map(drop)
}

/// Writes `record`'s spec, spawns the detached sandbox process, records it running and waits
/// for its startup line (`create` and `start`). On a failed start the sandbox process is
/// killed; the record it leaves (running, with a dead pid) reads as `crashed`.
pub(crate) fn launch(
    dir: &SandboxDir,
    mut record: SandboxState,
    moat: &Path,
    creator: Option<std::os::fd::OwnedFd>,
) -> Result<SandboxState, RuntimeError> {
    dir.write_spec(&record.spec)?;
    let mut child =
        run::spawn_sandbox(dir, Lifetime::Detached, record.spec.backend, moat, creator)?;
    record.status = Status::Running;
    record.pid = i32::try_from(child.id()).ok();
    record.started_at = None;
    record.stopped_at = None;
    record.exit_code = None;
    record.stop_reason = None;
    let started =
        state::write(dir.path(), &record).and_then(|()| run::wait_startup(dir, &mut child));
    if let Err(err) = started {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err);
    }
    record.started_at = Some(state::now());
    state::write(dir.path(), &record)?;
    Ok(record)
}

/// `moat exec`: runs `request` in the running sandbox `name`, its output on this process's
/// stdout and stderr, SIGKILLed after `timeout`; returns the CLI exit status
/// ([`EXIT_TIMED_OUT`] when the timeout killed it).
pub fn exec(
    name: &str,
    request: ExecRequest,
    timeout: Option<Duration>,
) -> Result<u8, RuntimeError> {
    let dir = open_named(name)?;
    let record = state::read(dir.path())?;
    if record.status != Status::Running {
        return Err(RuntimeError::NotRunning {
            name: name.to_owned(),
            status: record.status.as_str(),
        });
    }
    crate::relay_client::block_forwarded_signals()?;
    let mut client = RelayClient::connect(&dir.socket())?;
    let cmd = request.cmd.clone();
    let (outcome, timed_out) = client.run_exec_within(request, timeout)?;
    if let (true, Some(timeout)) = (timed_out, timeout) {
        eprintln!("moat: {cmd}: killed after --timeout {}s", timeout.as_secs());
        return Ok(EXIT_TIMED_OUT);
    }
    match &outcome {
        ExecOutcome::Failed(failed) => eprintln!("{}", run::exec_failed_line(&cmd, failed)),
        ExecOutcome::Refused(message) => {
            eprintln!("moat: the agent refused the command: {message}");
        }
        ExecOutcome::Exited(_) => {}
    }
    Ok(exit_status(&outcome))
}

/// Every named sandbox's state in `$MOAT_HOME`, sorted by name.
pub fn list() -> Result<Vec<SandboxState>, RuntimeError> {
    list_in(&home::moat_home())
}

/// Every named sandbox's state in the moat home `home`, sorted by name. Directories without
/// `state.json` (a `moat run` in progress) are not named sandboxes and are skipped; an
/// ephemeral sandbox that reads as crashed is removed, not listed.
pub fn list_in(home: &Path) -> Result<Vec<SandboxState>, RuntimeError> {
    let parent = home.join("sandboxes");
    let entries = match std::fs::read_dir(&parent) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(RuntimeError::io("list sandboxes", &parent)(err)),
    };
    let mut states = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join(state::STATE_FILE).is_file() {
            continue;
        }
        let record = match state::read(&path) {
            Ok(record) => record,
            // Removed since the check: an ephemeral sandbox that just ended.
            Err(RuntimeError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(other) => return Err(other),
        };
        if record.spec.config.ephemeral && record.status == Status::Crashed {
            // Its process died without recording its end (SIGKILLed from outside, say): the
            // removal it could not do happens at the first look.
            if let Some(pid) = record.pid {
                remove_cgroup_of(&record.name, pid);
            }
            remove_ended_ephemeral(&SandboxDir::open(path));
            continue;
        }
        states.push(record);
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(states)
}

/// The `moat ls` table.
pub fn format_table(states: &[SandboxState]) -> String {
    let width = states.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<width$}  {:<8}  {:>7}  CREATED\n", "NAME", "STATUS", "PID");
    for s in states {
        let pid = match (s.status, s.pid) {
            (Status::Running | Status::Draining, Some(pid)) => pid.to_string(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<8}  {:>7}  {}\n",
            s.name,
            s.status.as_str(),
            pid,
            s.created_at
        ));
    }
    out
}

/// `moat inspect`: the state as read (with `crashed` applied).
pub fn inspect(name: &str) -> Result<SandboxState, RuntimeError> {
    state::read(open_named(name)?.path())
}

/// `moat socket`: the relay socket path.
pub fn socket(name: &str) -> Result<PathBuf, RuntimeError> {
    Ok(open_named(name)?.socket())
}

/// `moat stop`: `core.shutdown`, then SIGTERM, then SIGKILL. A sandbox that is not live is left
/// as it is.
pub fn stop(name: &str) -> Result<SandboxState, RuntimeError> {
    stop_dir(&open_named(name)?)
}

/// `moat stop` on an opened sandbox directory.
pub fn stop_dir(dir: &SandboxDir) -> Result<SandboxState, RuntimeError> {
    stop_dir_within(dir, None)
}

/// `moat stop --timeout`: `core.shutdown`, then SIGKILL to the sandbox's process group once
/// `timeout` has passed. `None`: [`stop_dir`]'s escalation (core.shutdown, SIGTERM after
/// [`SANDBOX_EXIT_TIMEOUT_MS`], SIGKILL after [`STOP_TERM_GRACE_MS`] more). With a stop signal
/// recorded (an image's StopSignal, `--stop-signal`), it goes first, as [`stop_dir_with`] says.
pub fn stop_dir_within(
    dir: &SandboxDir,
    timeout: Option<Duration>,
) -> Result<SandboxState, RuntimeError> {
    stop_dir_with(dir, timeout, None)
}

/// `moat stop [--timeout T] [--signal SIG]`. The stop signal is `signal`, else the recorded one
/// (an image's StopSignal, `--stop-signal`). Without one, the graceful step is the agent's: on
/// `core.shutdown` it SIGTERMs every process. With one, the sandbox process first has its relay
/// refuse new execs and send the signal to every open exec session (`core.exec.signal`:
/// `core.shutdown` carries no signal), waits for them to end (up to `timeout`, else
/// [`SANDBOX_EXIT_TIMEOUT_MS`]), then sends `core.shutdown`; `timeout` still bounds the whole
/// stop (SIGKILL then), and without one the SIGTERM/SIGKILL escalation starts only once that
/// grace is over.
pub fn stop_dir_with(
    dir: &SandboxDir,
    timeout: Option<Duration>,
    signal: Option<stop_signal::StopSignal>,
) -> Result<SandboxState, RuntimeError> {
    let mut record = state::read(dir.path())?;
    let Some(pid) = live_pid(&record) else {
        return Ok(record);
    };
    let signal = signal.or_else(|| stop_signal::configured(&record.spec.config));
    record.status = Status::Draining;
    state::write(dir.path(), &record)?;
    let signal_grace = match signal {
        Some(signal) => {
            let grace = timeout.unwrap_or(Duration::from_millis(SANDBOX_EXIT_TIMEOUT_MS));
            let request =
                stop_signal::StopRequest { signal: Some(signal), grace, creator_gone: false };
            request.write(dir)?;
            grace
        }
        None => {
            let asked =
                RelayClient::connect(&dir.socket()).and_then(|client| client.request_shutdown());
            if let Err(err) = asked {
                tracing::warn!(%err, "could not send core.shutdown; escalating to signals");
            }
            Duration::ZERO
        }
    };
    if let Some(timeout) = timeout {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if wait_gone(pid, dir.path(), timeout_ms) {
            return record_stopped(dir, record, 0, "moat stop");
        }
        kill_and_wait(pid, dir.path());
        remove_cgroup_of(&record.name, pid);
        let reason = format!("moat stop: SIGKILL after a {timeout:?} timeout");
        return record_stopped(dir, record, signal_exit_code(Signal::SIGKILL), &reason);
    }
    let graceful_ms = SANDBOX_EXIT_TIMEOUT_MS
        .saturating_add(u64::try_from(signal_grace.as_millis()).unwrap_or(u64::MAX));
    let mut exit_code = 0;
    if !wait_gone(pid, dir.path(), graceful_ms) {
        exit_code = signal_exit_code(Signal::SIGTERM);
        signal_group(pid, Signal::SIGTERM);
        if !wait_gone(pid, dir.path(), STOP_TERM_GRACE_MS) {
            exit_code = signal_exit_code(Signal::SIGKILL);
            signal_group(pid, Signal::SIGKILL);
            wait_gone(pid, dir.path(), KILL_WAIT_MS);
        }
        // A signalled sandbox process cannot remove its cgroup.
        remove_cgroup_of(&record.name, pid);
    }
    record_stopped(dir, record, exit_code, "moat stop")
}

/// `moat stop --no-wait`: sends `core.shutdown` and returns; the sandbox process records the
/// end. [`RuntimeError::NotRunning`] when the sandbox is not live.
pub fn request_stop_dir(dir: &SandboxDir) -> Result<(), RuntimeError> {
    request_stop_dir_with(dir, None)
}

/// `moat stop --no-wait [--signal SIG]`: asks and returns. With a stop signal (`signal`, else
/// the recorded one), the sandbox process sends it to every exec, waits up to
/// [`SANDBOX_EXIT_TIMEOUT_MS`] for them to end, then sends `core.shutdown`; without one,
/// `core.shutdown` at once. [`RuntimeError::NotRunning`] when the sandbox is not live.
pub fn request_stop_dir_with(
    dir: &SandboxDir,
    signal: Option<stop_signal::StopSignal>,
) -> Result<(), RuntimeError> {
    let record = state::read(dir.path())?;
    if live_pid(&record).is_none() {
        return Err(RuntimeError::NotRunning {
            name: record.name.clone(),
            status: record.status.as_str(),
        });
    }
    match signal.or_else(|| stop_signal::configured(&record.spec.config)) {
        Some(signal) => stop_signal::StopRequest {
            signal: Some(signal),
            grace: Duration::from_millis(SANDBOX_EXIT_TIMEOUT_MS),
            creator_gone: false,
        }
        .write(dir),
        None => RelayClient::connect(&dir.socket())?.request_shutdown(),
    }
}

/// `moat kill`: SIGKILL to the sandbox's process group.
pub fn kill(name: &str) -> Result<SandboxState, RuntimeError> {
    kill_dir(&open_named(name)?)
}

/// `moat kill` on an opened sandbox directory.
pub fn kill_dir(dir: &SandboxDir) -> Result<SandboxState, RuntimeError> {
    let record = state::read(dir.path())?;
    let Some(pid) = live_pid(&record) else {
        return Err(RuntimeError::NotRunning {
            name: record.name.clone(),
            status: record.status.as_str(),
        });
    };
    kill_and_wait(pid, dir.path());
    remove_cgroup_of(&record.name, pid);
    record_stopped(dir, record, signal_exit_code(Signal::SIGKILL), "moat kill")
}

/// `moat rm`: removes a sandbox that is not live; with `force`, kills a live one first.
pub fn remove(name: &str, force: bool) -> Result<(), RuntimeError> {
    remove_dir(open_named(name)?, force)
}

/// `moat rm` on an opened sandbox directory.
pub fn remove_dir(dir: SandboxDir, force: bool) -> Result<(), RuntimeError> {
    let record = state::read(dir.path())?;
    if let Some(pid) = live_pid(&record) {
        if !force {
            return Err(RuntimeError::StillRunning(record.name));
        }
        kill_and_wait(pid, dir.path());
    }
    // A sandbox process that was killed (here, by `moat kill`, or by anyone: `crashed`) left its
    // cgroup behind; one that stopped cleanly removed it already.
    if let Some(pid) = record.pid {
        remove_cgroup_of(&record.name, pid);
    }
    match dir.remove() {
        // An ephemeral sandbox that ended meanwhile removed itself.
        Err(RuntimeError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && record.spec.config.ephemeral =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The pid of a sandbox whose process is alive (running or draining).
fn live_pid(record: &SandboxState) -> Option<i32> {
    match record.status {
        Status::Running | Status::Draining => record.pid,
        Status::Stopped | Status::Crashed => None,
    }
}

fn kill_and_wait(pid: i32, dir: &Path) {
    signal_group(pid, Signal::SIGKILL);
    if !wait_gone(pid, dir, KILL_WAIT_MS) {
        tracing::warn!(pid, "sandbox process still present after SIGKILL");
    }
}

/// Kills what is left in the cgroup of a killed sandbox process (`pid`), and removes it.
fn remove_cgroup_of(name: &str, pid: i32) {
    if let Ok(pid) = u32::try_from(pid) {
        crate::backend::namespace::cgroup::kill_left_behind(
            &crate::backend::namespace::cgroup::leaf_name(name, pid),
        );
    }
}

/// Records a stop, and returns the final state; an ephemeral sandbox is removed instead (its
/// sandbox process may have done it already) and its final state is only returned.
fn record_stopped(
    dir: &SandboxDir,
    mut record: SandboxState,
    exit_code: i32,
    reason: &str,
) -> Result<SandboxState, RuntimeError> {
    record.status = Status::Stopped;
    record.stopped_at = Some(state::now());
    record.exit_code = Some(exit_code);
    record.stop_reason = Some(reason.to_owned());
    if record.spec.config.ephemeral {
        remove_ended_ephemeral(dir);
        return Ok(record);
    }
    state::write(dir.path(), &record)?;
    Ok(record)
}

/// Removes the directory of an ephemeral sandbox whose process has ended (or is ending: its own
/// last act), tolerating that someone else removed it first. Its cgroup is gone by then: the
/// sandbox process drops it before recording its end, and whoever signalled it removed it.
pub(crate) fn remove_ended_ephemeral(dir: &SandboxDir) {
    match std::fs::remove_dir_all(dir.path()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(%err, "could not remove the ephemeral sandbox's directory"),
    }
}

/// Signals the sandbox process's group (its pid: it leads its own session).
fn signal_group(pid: i32, signal: Signal) {
    if let Err(err) = killpg(Pid::from_raw(pid), signal) {
        tracing::debug!(pid, %err, ?signal, "killpg");
    }
}

/// Waits until `pid` is no longer our sandbox process; false on timeout.
fn wait_gone(pid: i32, dir: &Path, timeout_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        if !state::is_sandbox_process(pid, dir) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::RootSource;

    fn record(name: &str, status: Status) -> SandboxState {
        SandboxState {
            version: state::STATE_VERSION,
            name: name.into(),
            spec: SandboxSpec {
                name: name.into(),
                root: RootSource::Host,
                agentd: "/a".into(),
                backend: Default::default(),
                rootless: false,
                config: Default::default(),
            },
            status,
            pid: Some(42),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: None,
            stopped_at: None,
            exit_code: None,
            stop_reason: None,
        }
    }

    #[test]
    fn table_shows_pid_only_for_live_sandboxes() {
        let table = format_table(&[record("a", Status::Running), record("b", Status::Stopped)]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].contains("CREATED"), "{table}");
        assert!(lines[1].contains("running") && lines[1].contains("42"), "{table}");
        assert!(lines[2].contains("stopped") && !lines[2].contains("42"), "{table}");
    }

    #[test]
    fn sigkill_exit_code_is_137() {
        assert_eq!(signal_exit_code(Signal::SIGKILL), 137);
    }
}
