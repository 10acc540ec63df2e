//! `Sandbox` (a live sandbox this program talks to) and `SandboxHandle` (a record from `get`),
//! with microsandbox's names. Calls moat does not implement yet reject with
//! `ERR_MOAT_NOT_SUPPORTED` naming the call.
//!
//! Lifecycle ownership: `Sandbox.create` and `Sandbox.start` return an *attached* handle over
//! the library's `Moat::create_attached` / `start_attached`. The handle holds the library's
//! owning `Sandbox` (a lifeline pipe to the sandbox process): when the handle is
//! garbage-collected, or the node process ends however it ends (SIGKILL too: the kernel closes
//! the pipe), the sandbox stops as `moat stop` stops it (its stop signal to every exec, then
//! shutdown), unless `detach()` was called. `createDetached`, `startDetached` and
//! `SandboxHandle.connect` give handles that never end the sandbox by themselves.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use moat_runtime::api::blocking as api;
use moat_runtime::store::state::SandboxState;
use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;

use crate::config::SandboxConfig;
use crate::error::{blocking, promise_blocking};
use crate::exec::{ExecKind, ExecOptions, ExecOutput, ExecPlan, ExitStatus};
use crate::exec_stream::ExecHandle;
use crate::fs::SandboxFs;
use crate::info::{SandboxInfo, timestamp_ms};
use crate::library::{self, Launched};
use crate::logs::{self, LogEntry, LogOptions, LogStream, LogStreamOptions};
use crate::metrics::{MetricsStream, SandboxMetrics};

/// `Sandbox.listWith`'s filter: every label must be present with its value.
#[napi(object)]
pub struct SandboxListFilter {
    /// Labels and the values they must have.
    pub labels: Option<HashMap<String, String>>,
}

/// A running sandbox.
#[napi]
pub struct Sandbox {
    /// The handle every call uses; it never owns the sandbox, so the fs handles and streams
    /// made from it do not keep an attached sandbox alive.
    inner: api::Sandbox,
    /// The library's owning handle, while this one is attached: dropping it (with this object,
    /// or when the sandbox ended) releases the lifeline.
    owner: Mutex<Option<api::Sandbox>>,
}

impl Sandbox {
    fn new(launched: Launched) -> Sandbox {
        Sandbox { inner: launched.sandbox, owner: Mutex::new(launched.owner) }
    }

    fn owner(&self) -> MutexGuard<'_, Option<api::Sandbox>> {
        self.owner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the plan's command to its end; the promise settles from the blocking pool
    /// ([`promise_blocking`]).
    fn run<'env>(&self, env: &'env Env, plan: ExecPlan) -> napi::Result<Object<'env>> {
        let inner = self.inner.clone();
        promise_blocking(env, move || {
            let captured = library::exec(&inner, plan.request, &plan.stdin, plan.timeout)?;
            Ok(ExecOutput::from_captured(captured))
        })
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
        drop(self.owner().take());
        Ok(state)
    }
}

#[napi]
impl Sandbox {
    /// Creates and boots a sandbox owned by this handle: it stops when the handle is collected
    /// or node ends (even by SIGKILL), unless detached.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn create(config: SandboxConfig) -> napi::Result<Sandbox> {
        let plan = config.plan()?;
        Ok(Sandbox::new(blocking(move || library::create(plan, true)).await?))
    }

    /// Creates and boots a sandbox that outlives this handle and this process.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn create_detached(config: SandboxConfig) -> napi::Result<Sandbox> {
        let plan = config.plan()?;
        Ok(Sandbox::new(blocking(move || library::create(plan, false)).await?))
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
        Ok(Sandbox::new(blocking(move || library::start(&name, true)).await?))
    }

    /// Launches the stopped (or crashed) sandbox `name` again, outliving the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start_detached(name: String) -> napi::Result<Sandbox> {
        Ok(Sandbox::new(blocking(move || library::start(&name, false)).await?))
    }

    /// The sandbox name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Whether this handle ends the sandbox when it goes away (attached mode).
    #[napi(getter)]
    pub fn owns_lifecycle(&self) -> bool {
        self.owner().as_ref().is_some_and(api::Sandbox::owns_lifecycle)
    }

    /// The configuration the sandbox was created with, as JSON.
    #[napi]
    pub async fn config_json(&self) -> napi::Result<String> {
        let inner = self.inner.clone();
        let state = blocking(move || library::state(&inner)).await?;
        Ok(serde_json::to_string(&state.spec).unwrap_or_default())
    }

    /// Runs `cmd args...` and collects its output.
    #[napi(ts_return_type = "Promise<ExecOutput>")]
    pub fn exec<'env>(
        &self,
        env: &'env Env,
        cmd: String,
        args: Option<Vec<String>>,
    ) -> napi::Result<Object<'env>> {
        self.run(env, ExecPlan::simple(cmd, args)?)
    }

    /// Runs `cmd` with per-command options (`index.js` also accepts microsandbox's builder
    /// callback) and collects its output.
    #[napi(ts_return_type = "Promise<ExecOutput>")]
    pub fn exec_with<'env>(
        &self,
        env: &'env Env,
        cmd: String,
        options: ExecOptions,
    ) -> napi::Result<Object<'env>> {
        self.run(env, ExecPlan::with_options(cmd, options, ExecKind::Collected)?)
    }

    /// Runs `script` with the sandbox's shell (`config.shell`, else `/bin/sh`) `-c` and
    /// collects its output.
    #[napi(ts_return_type = "Promise<ExecOutput>")]
    pub fn shell<'env>(&self, env: &'env Env, script: String) -> napi::Result<Object<'env>> {
        let inner = self.inner.clone();
        promise_blocking(env, move || {
            let request = library::shell_request(&inner, script)?;
            let captured = library::exec(&inner, request, &[], None)?;
            Ok(ExecOutput::from_captured(captured))
        })
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
        let owner = self.owner().take();
        if let Some(owner) = owner {
            blocking(move || library::detach(owner)).await?;
        }
        Ok(())
    }

    /// Removes the sandbox's record; it must be stopped.
    #[napi]
    pub async fn remove_persisted(&self) -> napi::Result<()> {
        let inner = self.inner.clone();
        blocking(move || library::remove_handle(inner, false)).await?;
        drop(self.owner().take());
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
        Ok(Sandbox::new(Launched { sandbox: inner, owner: None }))
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
        Ok(Sandbox::new(blocking(move || library::start(&name, true)).await?))
    }

    /// Launches the stopped sandbox again, outliving the returned handle.
    #[napi(ts_return_type = "Promise<Sandbox>")]
    pub async fn start_detached(&self) -> napi::Result<Sandbox> {
        let name = self.inner.name().to_owned();
        Ok(Sandbox::new(blocking(move || library::start(&name, false)).await?))
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
