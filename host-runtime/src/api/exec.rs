//! A streamed exec ([`Sandbox::exec_stream`](crate::api::Sandbox::exec_stream)): its events in
//! order (started, stdout, stderr, exited), a stdin sink, signals, kill and resize.
//!
//! One blocking task reads the session (the relay client, with its generation-10 output acks)
//! into a bounded channel, so a consumer that stops reading stops the acks and, through them,
//! the command's output: memory stays bounded whatever the command writes. Dropping the
//! [`ExecStream`] before the end SIGKILLs the command; the task reads on until it has ended.

use moat_protocol::payload::exec::ExecRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::blocking;
use crate::error::RuntimeError;
use crate::limits::EXEC_STREAM_EVENTS;
use crate::relay_client::stream::ExecControl;
pub use crate::relay_client::stream::ExecEvent;
use crate::relay_client::{ExecOutcome, RelayClient};

/// A running command's events and controls.
#[derive(Debug)]
pub struct ExecStream {
    events: mpsc::Receiver<ExecEvent>,
    control: ExecControl,
    reader: JoinHandle<Result<ExecOutcome, RuntimeError>>,
    /// The last event has been taken: nothing to kill on drop.
    ended: bool,
}

impl ExecStream {
    /// Starts `request` in the running `sandbox`.
    pub(crate) async fn start(
        sandbox: blocking::Sandbox,
        request: ExecRequest,
    ) -> Result<ExecStream, RuntimeError> {
        let (control, session) = tokio::task::spawn_blocking(move || {
            sandbox.require_running()?;
            RelayClient::connect(&sandbox.socket())?.start_streaming(request)
        })
        .await??;
        let (sender, events) = mpsc::channel(EXEC_STREAM_EVENTS);
        let reader = tokio::task::spawn_blocking(move || {
            session.drive(|event| sender.blocking_send(event).is_ok())
        });
        Ok(ExecStream { events, control, reader, ended: false })
    }

    /// The next event; `None` after [`ExecEvent::Exited`] (or when the relay went away:
    /// [`ExecStream::wait`] then says why).
    pub async fn next(&mut self) -> Option<ExecEvent> {
        let event = self.events.recv().await;
        if matches!(event, None | Some(ExecEvent::Exited(_))) {
            self.ended = true;
        }
        event
    }

    /// Writes `data` to the command's stdin, waiting for room in the agent's input window.
    pub async fn write_stdin(&self, data: impl Into<Vec<u8>>) -> Result<(), RuntimeError> {
        let (control, data) = (self.control.clone(), data.into());
        tokio::task::spawn_blocking(move || control.write_stdin(&data)).await?
    }

    /// Closes the command's stdin (EOF).
    pub async fn close_stdin(&self) -> Result<(), RuntimeError> {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.close_stdin()).await?
    }

    /// Sends `signal` (a Linux signal number, e.g. `libc::SIGTERM`) to the command.
    pub async fn signal(&self, signal: i32) -> Result<(), RuntimeError> {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.signal(signal)).await?
    }

    /// SIGKILLs the command.
    pub async fn kill(&self) -> Result<(), RuntimeError> {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.kill()).await?
    }

    /// Resizes the command's PTY.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.resize(rows, cols)).await?
    }

    /// Drops the remaining events and waits for the command's end.
    pub async fn wait(mut self) -> Result<ExecOutcome, RuntimeError> {
        while self.next().await.is_some() {}
        (&mut self.reader).await?
    }
}

impl Drop for ExecStream {
    /// A stream dropped before its end kills its command (a quiet command would otherwise
    /// run on: the reader only notices the consumer is gone at its next event).
    fn drop(&mut self) {
        if !self.ended
            && let Err(err) = self.control.kill()
        {
            tracing::warn!(%err, "could not kill the command of a dropped exec stream");
        }
    }
}
