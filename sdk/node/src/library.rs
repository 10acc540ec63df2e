//! The one module that calls `moat_runtime`: every other module of the addon goes through these
//! functions. Most are blocking calls of `api::blocking`, which callers run through
//! [`crate::error::blocking`]; [`async_sandbox`] hands out the async `api::Sandbox` for the
//! filesystem and its streams, and [`start_stream`] opens a streamed exec whose control half and
//! reading half the `ExecHandle` uses independently (`api::ExecStream` serializes them).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::blocking::{Moat, Sandbox};
use moat_runtime::api::{LabelFilter, LogEntry, LogQuery};
use moat_runtime::error::RuntimeError;
use moat_runtime::image::{ImageRecord, ImageRoot, ImageSummary, PruneReport};
use moat_runtime::lifecycle::Executables;
use moat_runtime::relay_client::stream::{ExecControl, StreamingSession};
use moat_runtime::relay_client::{CapturedExec, ExecOutcome, RelayClient};
use moat_runtime::store::state::SandboxState;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::CreatePlan;
use crate::error::{NodeError, Result};

/// The environment variable naming the `moat` binary sandboxes run as their sandbox process.
pub(crate) const MOAT_BIN_ENV: &str = "MOAT_BIN";

/// The environment variable naming the `moat-agentd` binary.
pub(crate) const MOAT_AGENTD_ENV: &str = "MOAT_AGENTD";

/// How long `stopAndWait`/`wait` wait for a sandbox to end by itself.
pub(crate) const WAIT_FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Sandbox processes this process spawned (they are its children) and has not reaped yet.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The moat home (`$MOAT_HOME`, else `~/.moat`). Every call starts here, and reaps the sandbox
/// processes of this process that ended since the last call: the library spawns a detached
/// sandbox as a child of its caller and does not wait for it (the CLI exits; node does not).
fn moat() -> Moat {
    reap_children();
    Moat::from_env()
}

/// `waitpid(WNOHANG)` on each sandbox child. A zombie keeps its pid, so a recorded pid that is
/// still a zombie cannot have been reused by another child of node's.
fn reap_children() {
    let mut children = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
    children.retain(|&pid| {
        matches!(
            waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
}

/// `$MOAT_BIN` and `$MOAT_AGENTD` (the package's `index.js` sets them from what
/// `npm run build` found), else `moat` and `moat-agentd` on `$PATH`.
fn executables() -> Result<Executables> {
    let moat = find(MOAT_BIN_ENV, "moat")?;
    let agentd = match std::env::var_os(MOAT_AGENTD_ENV) {
        Some(path) => checked(MOAT_AGENTD_ENV, PathBuf::from(path))?,
        None => match moat.parent().map(|dir| dir.join("moat-agentd")) {
            Some(beside) if beside.is_file() => beside,
            _ => find(MOAT_AGENTD_ENV, "moat-agentd")?,
        },
    };
    Ok(Executables { moat, agentd })
}

fn find(var: &str, name: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return checked(var, PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        NodeError::Runtime(RuntimeError::Config(format!(
            "cannot find {name}: set ${var} or run `npm run build` in sdk/node"
        )))
    })
}

fn checked(var: &str, path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(NodeError::Runtime(RuntimeError::Config(format!(
            "${var}={} is not a file",
            path.display()
        ))))
    }
}

/// A sandbox this process launched: the handle the calls use, and with `attached` the library's
/// owning handle, whose drop (or this process's end, however it ends) stops the sandbox.
pub(crate) struct Launched {
    pub sandbox: Sandbox,
    pub owner: Option<Sandbox>,
}

/// Creates and boots a sandbox (removing a same-named one first with `replace`); `attached`
/// ties its lifetime to the returned owner (`Moat::create_attached`).
pub(crate) fn create(plan: CreatePlan, attached: bool) -> Result<Launched> {
    let moat = moat().with_executables(executables()?);
    if attached {
        let owner = moat.create_attached(plan.args, plan.replace)?;
        return launched(&moat, owner);
    }
    if plan.replace {
        match moat.get(&plan.args.name) {
            Ok(old) => old.remove(true)?,
            Err(RuntimeError::UnknownSandbox(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let sandbox = moat.create(plan.args)?;
    adopt(&sandbox);
    Ok(Launched { sandbox, owner: None })
}

/// The launched attached sandbox: a plain handle for the calls (so that only the owner, not
/// every fs handle or stream made from it, holds the lifeline) beside the owner.
fn launched(moat: &Moat, owner: Sandbox) -> Result<Launched> {
    let sandbox = match moat.get(owner.name()) {
        Ok(sandbox) => sandbox,
        Err(err) => return Err(gone(&owner, err)),
    };
    adopt(&sandbox);
    Ok(Launched { sandbox, owner: Some(owner) })
}

/// Records the sandbox process this process just spawned, to reap it when it ends.
fn adopt(sandbox: &Sandbox) {
    if let Some(pid) = sandbox.state().ok().and_then(|state| state.pid) {
        CHILDREN.lock().unwrap_or_else(PoisonError::into_inner).push(pid);
    }
}

/// Launches the stopped (or crashed) sandbox `name` again, with the configuration it was
/// created with; `attached` as for [`create`].
pub(crate) fn start(name: &str, attached: bool) -> Result<Launched> {
    let moat = moat().with_executables(executables()?);
    if attached {
        let owner = match moat.start_attached(name) {
            Ok(owner) => owner,
            // The same error mapping as a detached start: a removed sandbox is not found.
            Err(err) => return Err(gone(&moat.get(name)?, err)),
        };
        return launched(&moat, owner);
    }
    let sandbox = moat.get(name)?;
    sandbox.start().map_err(|err| gone(&sandbox, err))?;
    adopt(&sandbox);
    Ok(Launched { sandbox, owner: None })
}

/// Lets an attached sandbox outlive its owner and this process.
pub(crate) fn detach(mut owner: Sandbox) -> Result<()> {
    owner.detach().map_err(|err| gone(&owner, err))
}

/// A snapshot of what the running sandbox uses.
pub(crate) fn metrics(sandbox: &Sandbox) -> Result<moat_runtime::metrics::Metrics> {
    sandbox.metrics().map_err(|err| gone(sandbox, err))
}

/// The running sandbox's metrics every `interval`, sampled as they are asked for.
pub(crate) fn metrics_stream(
    sandbox: &Sandbox,
    interval: Duration,
) -> Result<moat_runtime::metrics::MetricsStream> {
    sandbox.require_running().map_err(|err| gone(sandbox, err))?;
    Ok(sandbox.metrics_stream(interval))
}

/// Drains the sandbox: new execs are refused, it stops once the running ones end.
pub(crate) fn drain(sandbox: &Sandbox) -> Result<SandboxState> {
    sandbox.drain().map_err(|err| gone(sandbox, err))
}

/// The exec log's entries `query` selects (the sandbox may be stopped; a removed one is
/// [`NodeError::NotFound`]).
pub(crate) fn logs(sandbox: &Sandbox, query: LogQuery) -> Result<Vec<LogEntry>> {
    state(sandbox)?;
    sandbox.logs(query).map_err(|err| gone(sandbox, err))
}

/// The exec log followed: the entries `query` selects now, then each new one until the sandbox
/// is no longer live.
pub(crate) async fn log_follow(
    sandbox: &Sandbox,
    query: LogQuery,
) -> Result<moat_runtime::api::LogStream> {
    Ok(async_sandbox(sandbox).await?.log_stream(query))
}

/// The moat home's named volumes.
pub(crate) fn volumes() -> moat_runtime::store::volumes::Volumes {
    moat().volumes()
}

/// The sandboxes carrying every one of `labels` with its value.
pub(crate) fn list_labelled(labels: Vec<(String, String)>) -> Result<Vec<SandboxState>> {
    let filters: Vec<LabelFilter> =
        labels.into_iter().map(|(key, value)| LabelFilter { key, value: Some(value) }).collect();
    Ok(moat().list_filtered(&filters)?)
}

/// The async handle on the sandbox `sandbox` names, for the filesystem calls.
pub(crate) async fn async_sandbox(sandbox: &Sandbox) -> Result<moat_runtime::api::Sandbox> {
    reap_children();
    let moat = moat_runtime::api::Moat::from_env();
    moat.get(sandbox.name()).await.map_err(|err| gone(sandbox, err))
}

/// `SHELL -c SCRIPT` with the sandbox's configured shell (default `/bin/sh`).
pub(crate) fn shell_request(sandbox: &Sandbox, script: String) -> Result<ExecRequest> {
    let config = state(sandbox)?.spec.config;
    let shell = config.shell.as_deref().unwrap_or(moat_runtime::config::DEFAULT_SHELL);
    let mut request = ExecRequest::new(shell);
    request.args = vec!["-c".to_owned(), script];
    Ok(request)
}

/// Starts `request` in the running sandbox: its control half (stdin, signals) and the reading
/// half a blocking task drives to the command's end.
pub(crate) fn start_stream(
    sandbox: &Sandbox,
    request: ExecRequest,
) -> Result<(ExecControl, StreamingSession)> {
    sandbox.require_running().map_err(|err| gone(sandbox, err))?;
    let client = RelayClient::connect(&sandbox.socket()).map_err(|err| gone(sandbox, err))?;
    Ok(client.start_streaming(request)?)
}

/// A handle on the existing sandbox `name`.
pub(crate) fn get(name: &str) -> Result<Sandbox> {
    Ok(moat().get(name)?)
}

/// Every sandbox's state.
pub(crate) fn list() -> Result<Vec<SandboxState>> {
    Ok(moat().list()?)
}

/// Removes `name`; a running one only with `force`.
pub(crate) fn remove(name: &str, force: bool) -> Result<()> {
    Ok(moat().get(name)?.remove(force)?)
}

/// The state of the sandbox `sandbox` names, or [`NodeError::NotFound`] once it was removed.
pub(crate) fn state(sandbox: &Sandbox) -> Result<SandboxState> {
    sandbox.state().map_err(|err| gone(sandbox, err))
}

/// Runs one command to its end and collects its output; a command that never started, that
/// the agent refused, or that ran past `timeout` (and was killed) is an error.
pub(crate) fn exec(
    sandbox: &Sandbox,
    request: ExecRequest,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Result<CapturedExec> {
    let captured = sandbox.exec(request, stdin, timeout).map_err(|err| gone(sandbox, err))?;
    if let (true, Some(timeout)) = (captured.timed_out, timeout) {
        return Err(NodeError::ExecTimeout(timeout));
    }
    match &captured.outcome {
        ExecOutcome::Exited(_) => Ok(captured),
        ExecOutcome::Failed(failed) => Err(NodeError::ExecFailed(failed.message.clone())),
        ExecOutcome::Refused(reason) => Err(NodeError::ExecFailed(reason.clone())),
    }
}

/// Graceful shutdown; the final state.
pub(crate) fn stop(sandbox: &Sandbox) -> Result<SandboxState> {
    let state = sandbox.stop().map_err(|err| gone(sandbox, err));
    reap_children();
    state
}

/// SIGKILL; the final state.
pub(crate) fn kill(sandbox: &Sandbox) -> Result<SandboxState> {
    let state = sandbox.kill().map_err(|err| gone(sandbox, err));
    reap_children();
    state
}

/// Waits for the sandbox to end by itself.
pub(crate) fn wait(sandbox: &Sandbox, timeout: Duration) -> Result<SandboxState> {
    sandbox.wait(timeout).map_err(|err| gone(sandbox, err))
}

/// Removes the sandbox a handle names (stopped first when `force`).
pub(crate) fn remove_handle(sandbox: Sandbox, force: bool) -> Result<()> {
    let handle = sandbox.clone();
    sandbox.remove(force).map_err(|err| gone(&handle, err))
}

/// The relay socket of `name` (it need not be running).
pub(crate) fn socket_path(name: &str) -> Result<PathBuf> {
    moat_runtime::store::state::validate_name(name)?;
    Ok(moat().home().join("sandboxes").join(name).join("agent.sock"))
}

/// The relay socket of an existing sandbox.
pub(crate) fn socket_of(name: &str) -> Result<PathBuf> {
    Ok(moat().get(name)?.socket())
}

/// The image store's images.
pub(crate) fn image_list() -> Result<Vec<ImageSummary>> {
    Ok(moat().images().list()?)
}

/// One stored image with its root (layers and config defaults), or `None`.
pub(crate) fn image_find(reference: &str) -> Result<Option<(ImageRecord, ImageRoot)>> {
    let images = moat().images();
    match images.find(reference)? {
        Some(record) => {
            let root = images.root(&record)?;
            Ok(Some((record, root)))
        }
        None => Ok(None),
    }
}

/// Removes an image (and the layers no other image uses).
pub(crate) fn image_remove(reference: &str, force: bool) -> Result<PruneReport> {
    Ok(moat().images().remove(reference, force)?)
}

/// Removes unreferenced layers and leftovers.
pub(crate) fn image_gc() -> Result<PruneReport> {
    Ok(moat().images().prune()?)
}

/// A handle's sandbox was removed under it: its directory is gone, whatever call noticed.
fn gone(sandbox: &Sandbox, err: RuntimeError) -> NodeError {
    let dir_exists = sandbox.socket().parent().is_some_and(|dir| dir.exists());
    if matches!(err, RuntimeError::UnknownSandbox(_)) || !dir_exists {
        NodeError::NotFound(sandbox.name().to_owned())
    } else {
        err.into()
    }
}
