//! Exec and filesystem exchanges on a [`Conn`], as an SDK would drive them (PROTOCOL.md §8, §9):
//! one fresh id per session, follow-ups on that id, collection until the terminal frame.
//!
//! ```text
//!  exec: request ─► started ─► stdout/stderr* ─► exited{code} | failed{kind} | core.error
//!        (generation 10 with exec_limits: every output chunk acknowledged, or exited never comes)
//!  fs:   request ─► [fs.data*] ─► fs.response      write: request, fs.data*, empty fs.data, response
//! ```

use moat_protocol::Message;
use moat_protocol::payload::core::CoreError;
use moat_protocol::payload::exec::{
    Consumed, Data, ExecFailed, ExecRequest, ExecSignal, output_charge,
};
use moat_protocol::payload::fs::{FsOp, FsRequest, FsResponse};

use crate::client::Conn;
use crate::error::ClientError;
use crate::limits::{MAX_COLLECTED_BYTES, MAX_COLLECTED_FRAMES, STDIN_CHUNK_BYTES};

/// How an exec session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    /// `core.exec.exited {code}`.
    Exited(i32),
    /// `core.exec.failed`.
    Failed(ExecFailed),
    /// A terminal `core.error`.
    Error(CoreError),
}

/// Everything one exec session sent.
#[derive(Debug, Clone, Default)]
pub struct ExecOutcome {
    /// The pid from `core.exec.started`.
    pub pid: Option<u32>,
    /// Concatenated `core.exec.stdout` data.
    pub stdout: Vec<u8>,
    /// Concatenated `core.exec.stderr` data.
    pub stderr: Vec<u8>,
    /// Number of `core.exec.stderr` frames.
    pub stderr_frames: usize,
    /// Output arrived before `core.exec.started` (the protocol forbids it).
    pub output_before_started: bool,
    /// Output charge consumed so far (generation-10 flow control).
    consumed: u64,
    /// Frames seen.
    frames: usize,
    /// How it ended, once it has.
    pub end: Option<ExecEnd>,
}

impl ExecOutcome {
    /// Takes one frame of this session. Returns the cumulative output charge to acknowledge
    /// when the frame was output and `flow_control` is on.
    pub fn absorb(
        &mut self,
        frame: &moat_protocol::MessageFrame,
        flow_control: bool,
    ) -> Result<Option<u64>, ClientError> {
        let id = frame.id;
        if self.end.is_some() {
            return Err(ClientError::Unexpected {
                id,
                what: format!("{} after the session's terminal frame", frame.message.wire_name()),
            });
        }
        self.frames += 1;
        if self.frames > MAX_COLLECTED_FRAMES {
            return Err(ClientError::TooMuch { what: "exec frames" });
        }
        let output = match &frame.message {
            Message::ExecStarted(started) if self.pid.is_none() => {
                self.pid = Some(started.pid);
                None
            }
            Message::ExecStdout(data) => Some((&mut self.stdout, data)),
            Message::ExecStderr(data) => {
                self.stderr_frames += 1;
                Some((&mut self.stderr, data))
            }
            Message::ExecStdinError(_) | Message::ExecStdinAck(_) => None,
            Message::ExecExited(exited) => {
                self.end = Some(ExecEnd::Exited(exited.code));
                None
            }
            Message::ExecFailed(failed) => {
                self.end = Some(ExecEnd::Failed(failed.clone()));
                None
            }
            Message::Error(error) => {
                self.end = Some(ExecEnd::Error(error.clone()));
                None
            }
            other => {
                return Err(ClientError::Unexpected {
                    id,
                    what: format!("{} in an exec session", other.wire_name()),
                });
            }
        };
        let Some((buf, data)) = output else { return Ok(None) };
        if self.pid.is_none() {
            self.output_before_started = true;
        }
        if buf.len() + data.data.len() > MAX_COLLECTED_BYTES {
            return Err(ClientError::TooMuch { what: "exec output bytes" });
        }
        buf.extend_from_slice(&data.data);
        self.consumed += output_charge(data.data.len());
        Ok(flow_control.then_some(self.consumed))
    }

    /// Continues a session whose output up to the cumulative charge `consumed` was read (and
    /// acknowledged) outside this outcome, so later acks carry on from it.
    pub fn acknowledged(&mut self, consumed: u64) {
        self.consumed = consumed;
    }

    /// The exit code, or a description of how the session ended otherwise.
    pub fn exit_code(&self) -> Result<i32, String> {
        match &self.end {
            Some(ExecEnd::Exited(code)) => Ok(*code),
            Some(ExecEnd::Failed(f)) => {
                Err(format!("core.exec.failed {}: {}", f.kind.as_str(), f.message))
            }
            Some(ExecEnd::Error(e)) => {
                Err(format!("core.error {}: {}", e.kind.as_str(), e.message))
            }
            None => Err("the session has not ended".to_owned()),
        }
    }
}

impl Conn {
    /// Opens an exec session on a fresh id.
    pub fn exec_start(&mut self, request: ExecRequest) -> Result<u32, ClientError> {
        let id = self.next_id()?;
        self.send(id, Message::ExecRequest(request))?;
        Ok(id)
    }

    /// Reads frames of session `id` until `core.exec.started` (or an early terminal frame).
    pub fn exec_wait_started(
        &mut self,
        id: u32,
        outcome: &mut ExecOutcome,
    ) -> Result<(), ClientError> {
        while outcome.pid.is_none() && outcome.end.is_none() {
            self.exec_step(id, outcome, "core.exec.started")?;
        }
        Ok(())
    }

    /// Reads one frame of session `id` into `outcome`, acknowledging output when required.
    pub fn exec_step(
        &mut self,
        id: u32,
        outcome: &mut ExecOutcome,
        waiting_for: &str,
    ) -> Result<(), ClientError> {
        let frame = self.recv_on(id, waiting_for)?;
        self.exec_absorb(&frame, outcome)
    }

    /// Feeds `frame` (of `outcome`'s session) into `outcome`, acknowledging output when required.
    pub fn exec_absorb(
        &mut self,
        frame: &moat_protocol::MessageFrame,
        outcome: &mut ExecOutcome,
    ) -> Result<(), ClientError> {
        if let Some(consumed) = outcome.absorb(frame, self.exec_flow_control())? {
            self.send(frame.id, Message::ExecOutputAck(Consumed { consumed }))?;
        }
        Ok(())
    }

    /// Reads session `id` to its terminal frame.
    pub fn exec_finish(&mut self, id: u32, outcome: &mut ExecOutcome) -> Result<(), ClientError> {
        while outcome.end.is_none() {
            self.exec_step(id, outcome, "the end of the exec session")?;
        }
        Ok(())
    }

    /// Sends `data` as stdin in chunks of at most 16 KiB (empty `data` sends nothing).
    pub fn exec_stdin(&mut self, id: u32, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(STDIN_CHUNK_BYTES) {
            self.send(id, Message::ExecStdin(Data::new(chunk)))?;
        }
        Ok(())
    }

    /// Sends stdin EOF (an empty `core.exec.stdin`).
    pub fn exec_eof(&mut self, id: u32) -> Result<(), ClientError> {
        self.send(id, Message::ExecStdin(Data::new(Vec::new())))
    }

    /// Sends `signal` to session `id`'s process group.
    pub fn exec_signal(&mut self, id: u32, signal: i32) -> Result<(), ClientError> {
        self.send(id, Message::ExecSignal(ExecSignal { signal }))
    }

    /// Runs `request` to its end: waits for `started`, sends `stdin` (if any) and EOF, and
    /// collects everything.
    pub fn exec(
        &mut self,
        request: ExecRequest,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutcome, ClientError> {
        let id = self.exec_start(request)?;
        let mut outcome = ExecOutcome::default();
        self.exec_wait_started(id, &mut outcome)?;
        if outcome.end.is_none() {
            if let Some(stdin) = stdin {
                self.exec_stdin(id, stdin)?;
                self.exec_eof(id)?;
            }
        }
        self.exec_finish(id, &mut outcome)?;
        Ok(outcome)
    }

    /// One filesystem operation that answers with a single `core.fs.response`.
    pub fn fs(&mut self, op: FsOp) -> Result<FsResponse, ClientError> {
        let id = self.next_id()?;
        self.send(id, Message::FsRequest(FsRequest { op, bulk: None }))?;
        self.fs_response(id)
    }

    /// Streams a read: returns the `core.fs.data` chunks and the terminal response.
    pub fn fs_read(
        &mut self,
        handle: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<(Vec<Vec<u8>>, FsResponse), ClientError> {
        let id = self.next_id()?;
        let op = FsOp::Read { handle, offset, len };
        self.send(id, Message::FsRequest(FsRequest { op, bulk: None }))?;
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut total = 0usize;
        loop {
            let frame = self.recv_on(id, "core.fs.data or core.fs.response")?;
            match frame.message {
                Message::FsData(data) => {
                    total += data.data.len();
                    if total > MAX_COLLECTED_BYTES || chunks.len() >= MAX_COLLECTED_FRAMES {
                        return Err(ClientError::TooMuch { what: "file data" });
                    }
                    chunks.push(data.data);
                }
                Message::FsResponse(response) => return Ok((chunks, response)),
                other => return Err(unexpected_fs(id, &other)),
            }
        }
    }

    /// Streams a write: the request, each chunk as `core.fs.data`, the empty EOF chunk, then the
    /// terminal response.
    pub fn fs_write(
        &mut self,
        handle: u64,
        offset: u64,
        len: Option<u64>,
        chunks: &[&[u8]],
    ) -> Result<FsResponse, ClientError> {
        let id = self.next_id()?;
        let op = FsOp::Write { handle, offset, len };
        self.send(id, Message::FsRequest(FsRequest { op, bulk: None }))?;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            self.send(id, Message::FsData(Data::new(*chunk)))?;
        }
        self.send(id, Message::FsData(Data::new(Vec::new())))?;
        self.fs_response(id)
    }

    fn fs_response(&mut self, id: u32) -> Result<FsResponse, ClientError> {
        let frame = self.recv_on(id, "core.fs.response")?;
        match frame.message {
            Message::FsResponse(response) => Ok(response),
            other => Err(unexpected_fs(id, &other)),
        }
    }
}

fn unexpected_fs(id: u32, message: &Message) -> ClientError {
    let what = match message {
        Message::Error(e) => format!("core.error {}: {}", e.kind.as_str(), e.message),
        other => format!("{} in a filesystem session", other.wire_name()),
    };
    ClientError::Unexpected { id, what }
}
