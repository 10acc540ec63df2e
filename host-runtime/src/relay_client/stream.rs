//! An exec session handed out as a stream of events plus a control handle, for the async API's
//! [`crate::api::ExecStream`]: the events come from one blocking reader (the session's
//! `RelayClient::drive`, with its generation-10 acks), while stdin, signals and resizes are
//! written from any thread through [`ExecControl`] (stdin within the agent's window).
//!
//! ```text
//!  start_streaming ─► core.exec.request ─► (ExecControl, StreamingSession)
//!  StreamingSession::drive ─► on_event(started | stdout | stderr) ... ─► outcome
//!      on_event returns false (the consumer went away) ─► core.exec.signal SIGKILL, keep reading
//!      to the end, so the command never outlives its abandoned stream
//!  ExecControl ─► core.exec.stdin (EOF: empty) | core.exec.signal | core.exec.resize
//! ```

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use moat_protocol::payload::exec::{ExecRequest, ExecResize, ExecSignal};
use moat_protocol::{Message, MessageFrame};
use nix::sys::signal::Signal;

use crate::error::RuntimeError;
use crate::relay_client::flow::StdinWindow;
use crate::relay_client::{ExecOutcome, RelayClient, SessionEvent, Stream, send, send_stdin};

/// One event of a streamed exec, in the order the agent sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The program started (generation 10; older agents go straight to output).
    Started,
    /// A chunk of its standard output (a PTY's merged output).
    Stdout(Vec<u8>),
    /// A chunk of its standard error.
    Stderr(Vec<u8>),
    /// How it ended: always the last event.
    Exited(ExecOutcome),
}

/// Writes to a running session: stdin, signals, window size. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecControl {
    writer: Arc<Mutex<UnixStream>>,
    id: u32,
    window: Option<Arc<StdinWindow>>,
    chunk: usize,
}

impl ExecControl {
    /// Sends `data` to the command's stdin, in chunks, each waiting for room in the agent's
    /// window (so this blocks while the command does not read).
    /// [`RuntimeError::SessionEnded`] once the command has ended.
    pub fn write_stdin(&self, data: &[u8]) -> Result<(), RuntimeError> {
        for part in data.chunks(self.chunk) {
            if !send_stdin(&self.writer, self.id, part, self.window.as_deref())? {
                return Err(RuntimeError::SessionEnded);
            }
        }
        Ok(())
    }

    /// Closes the command's stdin (EOF).
    pub fn close_stdin(&self) -> Result<(), RuntimeError> {
        match send_stdin(&self.writer, self.id, &[], self.window.as_deref())? {
            true => Ok(()),
            false => Err(RuntimeError::SessionEnded),
        }
    }

    /// Sends `signal` (a Linux signal number) to the command.
    pub fn signal(&self, signal: i32) -> Result<(), RuntimeError> {
        let frame = MessageFrame::new(self.id, Message::ExecSignal(ExecSignal { signal }));
        send(&self.writer, frame, "core.exec.signal")
    }

    /// SIGKILLs the command.
    pub fn kill(&self) -> Result<(), RuntimeError> {
        self.signal(Signal::SIGKILL as i32)
    }

    /// Resizes the command's PTY (ignored by the agent for a session without one).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        let frame = MessageFrame::new(self.id, Message::ExecResize(ExecResize { rows, cols }));
        send(&self.writer, frame, "core.exec.resize")
    }
}

/// The reading half of a streamed session.
#[derive(Debug)]
pub struct StreamingSession {
    client: RelayClient,
    id: u32,
    window: Option<Arc<StdinWindow>>,
    control: ExecControl,
}

impl RelayClient {
    /// Sends `request` and returns the session's control handle and its reading half.
    pub fn start_streaming(
        mut self,
        request: ExecRequest,
    ) -> Result<(ExecControl, StreamingSession), RuntimeError> {
        let id = self.ids.next_id().ok_or(RuntimeError::IdsExhausted)?;
        send(
            &self.writer,
            MessageFrame::new(id, Message::ExecRequest(request)),
            "core.exec.request",
        )?;
        let window = self.stdin_window();
        let control = ExecControl {
            writer: Arc::clone(&self.writer),
            id,
            window: window.clone(),
            chunk: self.stdin_chunk_bytes(),
        };
        let session = StreamingSession { client: self, id, window, control: control.clone() };
        Ok((control, session))
    }
}

impl StreamingSession {
    /// Reads the session to its end, handing each event to `on_event` (the last one is
    /// [`ExecEvent::Exited`]). When `on_event` returns false the consumer is gone: the command
    /// is SIGKILLed and the rest of its output read and dropped, so it ends before this returns.
    pub fn drive(
        mut self,
        mut on_event: impl FnMut(ExecEvent) -> bool,
    ) -> Result<ExecOutcome, RuntimeError> {
        let mut listening = true;
        let control = self.control.clone();
        let mut deliver = |event: ExecEvent| {
            if listening && !on_event(event) {
                listening = false;
                if let Err(err) = control.kill() {
                    tracing::warn!(%err, "could not kill the command of an abandoned exec stream");
                }
            }
        };
        let outcome = self.client.drive(self.id, self.window.as_deref(), |event| {
            deliver(match event {
                SessionEvent::Started => ExecEvent::Started,
                SessionEvent::Output(Stream::Stdout, data) => ExecEvent::Stdout(data.to_vec()),
                SessionEvent::Output(Stream::Stderr, data) => ExecEvent::Stderr(data.to_vec()),
            });
        })?;
        deliver(ExecEvent::Exited(outcome.clone()));
        Ok(outcome)
    }
}
