//! `Sandbox` (a live sandbox this program talks to) and `SandboxHandle` (a record from `get`),
//! with microsandbox's names. Calls moat does not implement yet reject with
//! `ERR_MOAT_NOT_SUPPORTED` naming the call.
//!
//! Lifecycle ownership: `Sandbox.create` returns an *attached* handle. An attached sandbox is
//! killed when its handle is garbage-collected or when the node process exits (`index.js` calls
//! [`kill_attached_sandboxes`] on `exit`), unless `detach()` was called. `createDetached` and
//! `SandboxHandle.connect` give handles that never end the sandbox by themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use moat_runtime::api::blocking as api;
use moat_runtime::store::state::SandboxState;
use napi_derive::napi;

use crate::config::SandboxConfig;
use crate::error::blocking;
use crate::exec::{ExecKind, ExecOptions, ExecOutput, ExecPlan, ExitStatus};
use crate::exec_stream::ExecHandle;
use crate::fs::SandboxFs;
use crate::info::{SandboxInfo, timestamp_ms};
use crate::library;
use crate::logs::{self, LogEntry, LogOptions, LogStream, LogStreamOptions};
use crate::metrics::{MetricsStream, SandboxMetrics};

/// Attached sandboxes by handle token: what the exit hook kills.
static ATTACHED: Mutex<Option<HashMap<u64, api::Sandbox>>> = Mutex::new(None);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn attach(sandbox: &api::Sandbox) -> u64 {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let mut attached = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
    attached.get_or_insert_with(HashMap::new).insert(token, sandbox.clone());
    token
}

fn release(token: u64) -> Option<api::Sandbox> {
    let mut attached = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
    attached.as_mut().and_then(|map| map.remove(&token))
}

/// Kills every sandbox an attached handle still owns; `index.js` calls it when node exits
/// (internal: not exported by the package, so not in `index.d.ts`). Returns how many it killed.
#[napi(skip_typescript)]
pub fn kill_attached_sandboxes() -> u32 {
    let owned: Vec<api::Sandbox> = {
        let mut attached = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
        attached.take().map(|map| map.into_values().collect()).unwrap_or_default()
    };
    let mut killed = 0;
    for sandbox in owned {
        if library::kill(&sandbox).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// `Sandbox.listWith`'s filter: every label must be present with its value.
#[napi(object)]
pub struct SandboxListFilter {
    /// Labels and the values they must have.
    pub labels: Option<HashMap<String, String>>,
}

/// A running sandbox.
#[napi]
pub struct Sandbox {
    inner: api::Sandbox,
    /// The attached-lifecycle token, while this handle owns the sandbox.
    owner: Mutex<Option<u64>>,
}

impl Sandbox {
    fn new(inner: api::Sandbox, attached: bool) -> Sandbox {
        let owner = attached.then(|| attach(&inner));
        Sandbox { inner, owner: Mutex::new(owner) }
    }

    fn owner(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.owner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(&self, plan: ExecPlan) -> napi::Result<ExecOutput> {
        let inner = self.inner.clone();
        let captured =
            blocking(move || library::exec(&inner, plan.request, &plan.stdin, plan.timeout))
                .await?;
        Ok(ExecOutput::from_captured(captured))
    }

    async fn stream(&self, plan: ExecPlan) -> napi::Result<ExecHandle> {
        let inner = self.inner.clone();
        let request = plan.request.clone();
        let (control, session) = blocking(move || library::start_stream(&inner, request)).await?;
        Ok(ExecHandle::start(control, session, plan))
    }

    async fn shell_plan(&self, script: String) -> napi::Result<ExecPlan> {
        let inner = self.inner.clone();
        let request = blocking(move || library::shell_request(&inner, script)).await?;
        Ok(ExecPlan::of(request))
    }

    async fn end(&self, kill: bool) -> napi::Result<SandboxState> {
        let inner = self.inner.clone();
        let state =
            blocking(move || if kill { library::kill(&inner) } else { library::stop(&inner) })
                .await?;
        // It has ended: nothing is left for this handle to end.
        if let Some(token) = self.owner().take() {
            release(token);
        }
        Ok(state)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let token = self.owner.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sandbox) = token.and_then(release) {
            // Garbage collection runs on node's thread: the kill runs beside it.
            std::thread::spawn(move || {
                let _ = library::kill(&sandbox);
            });
        }
    }
}

#[napi]
impl Sandbox {
    /// Creates and boots a sandbox owned by this handle (killed when the handle is collected or
    /// node exits, unless detached).
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn create(config: SandboxConfig) -> napi::Result<Sandbox> {
        let plan = config.plan()?;
        let inner = blocking(move || library::create(plan)).await?;
        Ok(Sandbox::new(inner, true))
    }

    /// Creates and boots a sandbox that outlives this handle and this process.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn create_detached(config: SandboxConfig) -> napi::Result<Sandbox> {
        let plan = config.plan()?;
        let inner = blocking(move || library::create(plan)).await?;
        Ok(Sandbox::new(inner, false))
    }

    /// A handle on the existing sandbox `name` (running or not).
    #[napi(ts_return_type = "Promise<SandboxHandle>")]
    pub async fn get(name: String) -> napi::Result<SandboxHandle> {
        let (inner, state) = blocking(move || {
            let inner = library::get(&name)?;
            let state = library::state(&inner)?;
            Ok((inner, state))
        })
        .await?;
        Ok(SandboxHandle { inner, state })
    }

    /// Every sandbox, sorted by name.
    #[napi]
    pub async fn list() -> napi::Result<Vec<SandboxInfo>> {
        let states = blocking(library::list).await?;
        Ok(states.iter().map(SandboxInfo::of).collect())
    }

    /// The sandboxes carrying every one of `filter.labels` (all sandboxes without labels).
    #[napi]
    pub async fn list_with(filter: SandboxListFilter) -> napi::Result<Vec<SandboxInfo>> {
        let labels = filter.labels.unwrap_or_default().into_iter().collect();
        let states = blocking(move || library::list_labelled(labels)).await?;
        Ok(states.iter().map(SandboxInfo::of).collect())
    }

    /// Removes a stopped sandbox.
    #[napi]
    pub async fn remove(name: String) -> napi::Result<()> {
        blocking(move || library::remove(&name, false)).await?;
        Ok(())
    }

    /// Launches the stopped (or crashed) sandbox `name` again, owned by the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start(name: String) -> napi::Result<Sandbox> {
        let inner = blocking(move || library::start(&name)).await?;
        Ok(Sandbox::new(inner, true))
    }

    /// Launches the stopped (or crashed) sandbox `name` again, outliving the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start_detached(name: String) -> napi::Result<Sandbox> {
        let inner = blocking(move || library::start(&name)).await?;
        Ok(Sandbox::new(inner, false))
    }

    /// The sandbox name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Whether this handle ends the sandbox when it goes away (attached mode).
    #[napi(getter)]
    pub fn owns_lifecycle(&self) -> bool {
        self.owner().is_some()
    }

    /// The configuration the sandbox was created with, as JSON.
    #[napi]
    pub async fn config_json(&self) -> napi::Result<String> {
        let inner = self.inner.clone();
        let state = blocking(move || library::state(&inner)).await?;
        Ok(serde_json::to_string(&state.spec).unwrap_or_default())
    }

    /// Runs `cmd args...` and collects its output.
    #[napi]
    pub async fn exec(&self, cmd: String, args: Option<Vec<String>>) -> napi::Result<ExecOutput> {
        self.run(ExecPlan::simple(cmd, args)?).await
    }

    /// Runs `cmd` with per-command options (`index.js` also accepts microsandbox's builder
    /// callback) and collects its output.
    #[napi]
    pub async fn exec_with(&self, cmd: String, options: ExecOptions) -> napi::Result<ExecOutput> {
        self.run(ExecPlan::with_options(cmd, options, ExecKind::Collected)?).await
    }

    /// Runs `script` with the sandbox's shell (`config.shell`, else `/bin/sh`) `-c` and
    /// collects its output.
    #[napi]
    pub async fn shell(&self, script: String) -> napi::Result<ExecOutput> {
        let plan = self.shell_plan(script).await?;
        self.run(plan).await
    }

    /// Shuts the sandbox down gracefully.
    #[napi]
    pub async fn stop(&self) -> napi::Result<()> {
        self.end(false).await?;
        Ok(())
    }

    /// Shuts the sandbox down gracefully and returns how it ended.
    #[napi]
    pub async fn stop_and_wait(&self) -> napi::Result<ExitStatus> {
        let state = self.end(false).await?;
        Ok(ExitStatus::of(state.exit_code))
    }

    /// Kills the sandbox (SIGKILL).
    #[napi]
    pub async fn kill(&self) -> napi::Result<()> {
        self.end(true).await?;
        Ok(())
    }

    /// Waits until the sandbox ends by itself (or is stopped elsewhere).
    #[napi]
    pub async fn wait(&self) -> napi::Result<ExitStatus> {
        let inner = self.inner.clone();
        let state = blocking(move || library::wait(&inner, library::WAIT_FOREVER)).await?;
        Ok(ExitStatus::of(state.exit_code))
    }

    /// Lets the sandbox outlive this handle and this process.
    #[napi]
    pub async fn detach(&self) -> napi::Result<()> {
        if let Some(token) = self.owner().take() {
            release(token);
        }
        Ok(())
    }

    /// Removes the sandbox's record; it must be stopped.
    #[napi]
    pub async fn remove_persisted(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::remove_handle(inner, false)).await?;
        if let Some(token) = self.owner().take() {
            release(token);
        }
        Ok(())
    }

    /// Starts `cmd args...` and returns its events and controls as they come.
    #[napi(ts_return_type = "Promise<ExecHandle>")]
    pub async fn exec_stream(
        &self,
        cmd: String,
        args: Option<Vec<String>>,
    ) -> napi::Result<ExecHandle> {
        self.stream(ExecPlan::simple(cmd, args)?).await
    }

    /// Starts `cmd` with per-command options (`index.js` also accepts the builder callback);
    /// stdin `"pipe"` gives the handle an `ExecSink` (`takeStdin()`).
    #[napi(ts_return_type = "Promise<ExecHandle>")]
    pub async fn exec_stream_with(
        &self,
        cmd: String,
        options: ExecOptions,
    ) -> napi::Result<ExecHandle> {
        self.stream(ExecPlan::with_options(cmd, options, ExecKind::Streamed)?).await
    }

    /// Starts `script` with the sandbox's shell and returns its events and controls.
    #[napi(ts_return_type = "Promise<ExecHandle>")]
    pub async fn shell_stream(&self, script: String) -> napi::Result<ExecHandle> {
        let plan = self.shell_plan(script).await?;
        self.stream(plan).await
    }

    /// The sandbox's filesystem (each call checks the sandbox runs).
    #[napi]
    pub fn fs(&self) -> SandboxFs {
        SandboxFs::new(self.inner.clone())
    }

    /// What the running sandbox uses now (CPU percent over a short sample).
    #[napi]
    pub async fn metrics(&self) -> napi::Result<SandboxMetrics> {
        let inner = self.inner.clone();
        let metrics = blocking(move || library::metrics(&inner)).await?;
        Ok(SandboxMetrics::of(&metrics))
    }

    /// Its metrics every `intervalMs`, until it stops.
    #[napi(ts_return_type = "Promise<MetricsStream>")]
    pub async fn metrics_stream(&self, interval_ms: f64) -> napi::Result<MetricsStream> {
        let interval = crate::metrics::interval(interval_ms)?;
        let inner = self.inner.clone();
        let stream = blocking(move || library::metrics_stream(&inner, interval)).await?;
        Ok(MetricsStream::new(stream))
    }

    /// The exec log: what the relay captured of its commands' output (and, with `sources`
    /// `"system"`, lifecycle markers), oldest first. Works on a stopped sandbox too.
    #[napi]
    pub async fn logs(&self, opts: Option<LogOptions>) -> napi::Result<Vec<LogEntry>> {
        Ok(logs::logs(self.inner.clone(), opts).await?)
    }

    /// The exec log as a stream; with `follow: true` it waits for new entries until the
    /// sandbox stops.
    #[napi(ts_return_type = "Promise<LogStream>")]
    pub async fn log_stream(&self, opts: Option<LogStreamOptions>) -> napi::Result<LogStream> {
        Ok(logs::log_stream(self.inner.clone(), opts).await?)
    }

    /// Drains the sandbox: new execs are refused, the running ones finish, then it stops by
    /// itself (`wait()` returns then).
    #[napi]
    pub async fn drain(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::drain(&inner)).await?;
        Ok(())
    }
}

/// A sandbox record from `Sandbox.get`: its state when fetched and lifecycle calls.
#[napi]
pub struct SandboxHandle {
    inner: api::Sandbox,
    state: SandboxState,
}

#[napi]
impl SandboxHandle {
    /// The sandbox name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// `"running"`, `"draining"`, `"stopped"` or `"crashed"` when fetched.
    #[napi(getter)]
    pub fn status(&self) -> String {
        self.state.status.as_str().to_owned()
    }

    /// The configuration it was created with, as JSON.
    #[napi(getter)]
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.state.spec).unwrap_or_default()
    }

    /// Creation time, ms since the epoch.
    #[napi(getter)]
    pub fn created_at(&self) -> Option<f64> {
        timestamp_ms(&self.state.created_at)
    }

    /// Last state change, ms since the epoch.
    #[napi(getter)]
    pub fn updated_at(&self) -> Option<f64> {
        SandboxInfo::of(&self.state).updated_at
    }

    /// A fresh handle on the same sandbox.
    #[napi(ts_return_type = "Promise<SandboxHandle>")]
    pub async fn refresh(&self) -> napi::Result<SandboxHandle> {
        let inner = self.inner.clone();
        let (inner, state) = blocking(move || {
            let state = library::state(&inner)?;
            Ok((inner, state))
        })
        .await?;
        Ok(SandboxHandle { inner, state })
    }

    /// A `Sandbox` on the running sandbox (detached: it does not own its lifecycle).
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn connect(&self) -> napi::Result<Sandbox> {
        let inner = self.inner.clone();
        let inner = blocking(move || {
            let state = library::state(&inner)?;
            if state.status != moat_runtime::store::state::Status::Running {
                return Err(moat_runtime::error::RuntimeError::NotRunning {
                    name: inner.name().to_owned(),
                    status: state.status.as_str(),
                }
                .into());
            }
            Ok(inner)
        })
        .await?;
        Ok(Sandbox::new(inner, false))
    }

    /// Shuts it down gracefully.
    #[napi]
    pub async fn stop(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::stop(&inner)).await?;
        Ok(())
    }

    /// Kills it.
    #[napi]
    pub async fn kill(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::kill(&inner)).await?;
        Ok(())
    }

    /// Removes it (it must be stopped).
    #[napi]
    pub async fn remove(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::remove_handle(inner, false)).await?;
        Ok(())
    }

    /// Launches the stopped sandbox again, owned by the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start(&self) -> napi::Result<Sandbox> {
        let name = self.inner.name().to_owned();
        let inner = blocking(move || library::start(&name)).await?;
        Ok(Sandbox::new(inner, true))
    }

    /// Launches the stopped sandbox again, outliving the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start_detached(&self) -> napi::Result<Sandbox> {
        let name = self.inner.name().to_owned();
        let inner = blocking(move || library::start(&name)).await?;
        Ok(Sandbox::new(inner, false))
    }

    /// What the sandbox uses now (it must be running).
    #[napi]
    pub async fn metrics(&self) -> napi::Result<SandboxMetrics> {
        let inner = self.inner.clone();
        let metrics = blocking(move || library::metrics(&inner)).await?;
        Ok(SandboxMetrics::of(&metrics))
    }

    /// Its exec log (`Sandbox.logs`); the sandbox need not run.
    #[napi]
    pub async fn logs(&self, opts: Option<LogOptions>) -> napi::Result<Vec<LogEntry>> {
        Ok(logs::logs(self.inner.clone(), opts).await?)
    }

    /// Its exec log as a stream (`Sandbox.logStream`); the sandbox need not run.
    #[napi(ts_return_type = "Promise<LogStream>")]
    pub async fn log_stream(&self, opts: Option<LogStreamOptions>) -> napi::Result<LogStream> {
        Ok(logs::log_stream(self.inner.clone(), opts).await?)
    }
}
