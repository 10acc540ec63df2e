//! Streamed execs (`execStream`, `execStreamWith`, `shellStream`): microsandbox's `ExecHandle`
//! (events by `recv()`, `wait`, `collect`, `signal`, `kill`, `takeStdin`) and `ExecSink`.
//!
//! ```text
//!  ExecHandle ── control (ExecControl: stdin, signals; any time, from any call)
//!      │
//!      └── events ◄── bounded channel ◄── blocking task driving the relay session
//! ```
//!
//! The control half and the reading half are separate, so `kill()` works while a `recv()`
//! waits for a quiet command. The channel is bounded: a program that stops calling `recv()`
//! stops the acks, and through them the command's output, so memory stays bounded.
//!
//! Ending: a handle collected before its command ended kills it (`Drop`), as does the end of
//! the node process (the relay connection closes; see the test). `timeoutMs` kills it too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use moat_runtime::error::RuntimeError;
use moat_runtime::relay_client::ExecOutcome;
use moat_runtime::relay_client::stream::{ExecControl, ExecEvent as LibEvent, StreamingSession};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::error::{NodeError, Result};
use crate::exec::{ExecOutput, ExecPlan, ExitStatus};

/// Events buffered between the session's reader and `recv()`.
const EXEC_EVENTS_BUFFERED: usize = 16;

/// One event of a streamed exec.
#[napi(object)]
pub struct ExecEvent {
    /// `"started"`, `"stdout"`, `"stderr"` or `"exited"`.
    pub event_type: String,
    /// The process id (moat's agent does not report it: always absent).
    pub pid: Option<u32>,
    /// The output chunk (`"stdout"` and `"stderr"`).
    pub data: Option<Buffer>,
    /// The exit code (`"exited"`; -1 when killed by a signal).
    pub code: Option<i32>,
}

/// How the command ended, once the reader has returned.
enum Ending {
    /// The reader still runs.
    Running(JoinHandle<std::result::Result<ExecOutcome, RuntimeError>>),
    /// It exited with this code.
    Exited(i32),
    /// It never ran, or the session broke: the reason.
    Failed(String),
}

/// A running command's events and controls.
#[napi]
pub struct ExecHandle {
    control: ExecControl,
    events: Mutex<mpsc::Receiver<LibEvent>>,
    ending: Mutex<Ending>,
    /// The `exited` event (or the stream's end) was seen: nothing to kill any more.
    ended: Arc<AtomicBool>,
    /// The `ExecSink`, until `takeStdin()` takes it (only with stdin `"pipe"`).
    stdin: std::sync::Mutex<Option<ExecSink>>,
    /// The `timeoutMs` killer.
    timer: Option<JoinHandle<()>>,
}

impl ExecHandle {
    /// Drives `session` on a blocking task and feeds `plan`'s stdin.
    pub(crate) fn start(control: ExecControl, session: StreamingSession, plan: ExecPlan) -> Self {
        let (sender, events) = mpsc::channel(EXEC_EVENTS_BUFFERED);
        let ended = Arc::new(AtomicBool::new(false));
        let reader = tokio::task::spawn_blocking(move || {
            session.drive(|event| sender.blocking_send(event).is_ok())
        });
        let stdin = if plan.stdin_pipe {
            Some(ExecSink { control: control.clone(), closed: Arc::new(AtomicBool::new(false)) })
        } else {
            let (feeder, bytes) = (control.clone(), plan.stdin);
            tokio::task::spawn_blocking(move || {
                // A command that ends before reading its input is no error of the program's.
                if !bytes.is_empty() {
                    let _ = feeder.write_stdin(&bytes);
                }
                let _ = feeder.close_stdin();
            });
            None
        };
        let timer = plan.timeout.map(|timeout| {
            let (killer, ended) = (control.clone(), Arc::clone(&ended));
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if !ended.load(Ordering::Acquire) {
                    let _ = tokio::task::spawn_blocking(move || killer.kill()).await;
                }
            })
        });
        ExecHandle {
            control,
            events: Mutex::new(events),
            ending: Mutex::new(Ending::Running(reader)),
            ended,
            stdin: std::sync::Mutex::new(stdin),
            timer,
        }
    }

    /// The next event from the reader; `None` after the last.
    async fn next(&self) -> Option<LibEvent> {
        let event = self.events.lock().await.recv().await;
        if matches!(event, None | Some(LibEvent::Exited(_))) {
            self.ended.store(true, Ordering::Release);
        }
        event
    }

    /// How the command ended (waits for the reader, which has ended or ends soon).
    async fn ending(&self) -> Result<i32> {
        let mut ending = self.ending.lock().await;
        if let Ending::Running(reader) = &mut *ending {
            *ending = match reader.await {
                Ok(Ok(outcome)) => match code_of(outcome) {
                    Ok(code) => Ending::Exited(code),
                    Err(err) => Ending::Failed(err.to_string()),
                },
                Ok(Err(err)) => Ending::Failed(err.to_string()),
                Err(join) => Ending::Failed(join.to_string()),
            };
        }
        match &*ending {
            Ending::Exited(code) => Ok(*code),
            Ending::Failed(reason) => Err(NodeError::ExecFailed(reason.clone())),
            Ending::Running(_) => Err(NodeError::Worker("exec reader still running".into())),
        }
    }

    async fn control(
        &self,
        op: fn(&ExecControl) -> std::result::Result<(), RuntimeError>,
    ) -> Result<()> {
        let control = self.control.clone();
        match tokio::task::spawn_blocking(move || op(&control)).await {
            Ok(result) => Ok(result?),
            Err(join) => Err(NodeError::Worker(join.to_string())),
        }
    }
}

/// An `Exited` outcome's code; a command that never ran is an error.
fn code_of(outcome: ExecOutcome) -> Result<i32> {
    match outcome {
        ExecOutcome::Exited(code) => Ok(code),
        ExecOutcome::Failed(failed) => Err(NodeError::ExecFailed(failed.message)),
        ExecOutcome::Refused(reason) => Err(NodeError::ExecFailed(reason)),
    }
}

impl Drop for ExecHandle {
    /// A handle collected before its command ended kills the command (a quiet command would
    /// otherwise run on).
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
        if !self.ended.load(Ordering::Acquire) {
            let _ = self.control.kill();
        }
    }
}

#[napi]
impl ExecHandle {
    /// The next event; `null` after `exited`. Rejects with `ExecFailedError` when the command
    /// could not start.
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<ExecEvent>> {
        let event = match self.next().await {
            None => return Ok(None),
            Some(event) => event,
        };
        let (event_type, data, code) = match event {
            LibEvent::Started => ("started", None, None),
            LibEvent::Stdout(data) => ("stdout", Some(data.into()), None),
            LibEvent::Stderr(data) => ("stderr", Some(data.into()), None),
            LibEvent::Exited(outcome) => ("exited", None, Some(code_of(outcome)?)),
        };
        Ok(Some(ExecEvent { event_type: event_type.to_owned(), pid: None, data, code }))
    }

    /// The stdin sink, once (with stdin `"pipe"`); `null` otherwise and after the first call.
    #[napi(ts_return_type = "Promise<ExecSink | null>")]
    pub async fn take_stdin(&self) -> napi::Result<Option<ExecSink>> {
        Ok(self.stdin.lock().unwrap_or_else(PoisonError::into_inner).take())
    }

    /// Drops the events not yet received and waits for the command's end.
    #[napi]
    pub async fn wait(&self) -> napi::Result<ExitStatus> {
        while self.next().await.is_some() {}
        Ok(ExitStatus::of(Some(self.ending().await?)))
    }

    /// Receives the remaining events and returns the output they carried.
    #[napi]
    pub async fn collect(&self) -> napi::Result<ExecOutput> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.next().await {
            match event {
                LibEvent::Stdout(data) => stdout.extend_from_slice(&data),
                LibEvent::Stderr(data) => stderr.extend_from_slice(&data),
                LibEvent::Started | LibEvent::Exited(_) => {}
            }
        }
        let code = self.ending().await?;
        Ok(ExecOutput::new(code, stdout, stderr))
    }

    /// Sends a signal (a Linux signal number) to the command.
    #[napi]
    pub async fn signal(&self, signal: i32) -> napi::Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(
                NodeError::InvalidArgument(format!("{signal} is not a signal number")).into()
            );
        }
        let control = self.control.clone();
        match tokio::task::spawn_blocking(move || control.signal(signal)).await {
            Ok(result) => Ok(result.map_err(NodeError::from)?),
            Err(join) => Err(NodeError::Worker(join.to_string()).into()),
        }
    }

    /// SIGKILLs the command (resolves at once when it has ended already).
    #[napi]
    pub async fn kill(&self) -> napi::Result<()> {
        if self.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        Ok(self.control(ExecControl::kill).await?)
    }
}

/// A streamed command's stdin (`takeStdin()`).
#[napi]
pub struct ExecSink {
    control: ExecControl,
    closed: Arc<AtomicBool>,
}

#[napi]
impl ExecSink {
    /// Writes `data`; resolves once the agent took it (waits while the command does not read).
    #[napi(ts_args_type = "data: Buffer | string")]
    pub async fn write(
        &self,
        data: napi::bindgen_prelude::Either<String, Buffer>,
    ) -> napi::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(NodeError::Closed("the exec stdin sink").into());
        }
        let bytes = match data {
            napi::bindgen_prelude::Either::A(text) => text.into_bytes(),
            napi::bindgen_prelude::Either::B(buffer) => buffer.to_vec(),
        };
        let control = self.control.clone();
        match tokio::task::spawn_blocking(move || control.write_stdin(&bytes)).await {
            Ok(result) => Ok(result.map_err(NodeError::from)?),
            Err(join) => Err(NodeError::Worker(join.to_string()).into()),
        }
    }

    /// Closes stdin (the command reads EOF). Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let control = self.control.clone();
        match tokio::task::spawn_blocking(move || control.close_stdin()).await {
            Ok(result) => Ok(result.map_err(NodeError::from)?),
            Err(join) => Err(NodeError::Worker(join.to_string()).into()),
        }
    }
}
