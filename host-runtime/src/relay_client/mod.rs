//! A relay client running one exec session: what `moat run` does once the sandbox is up.
//!
//! ```text
//!  connect DIR/agent.sock ─► read [id_start BE][id_end BE] ─► read core.ready ─► exec.request
//!     ─► stdout/stderr frames to our stdout/stderr, live      (our stdin ─► exec.stdin frames,
//!     ─► exec.exited {code} | exec.failed | core.error           empty frame on EOF, own thread)
//! ```
//!
//! Against a generation-10 agent with `exec_limits` the session is flow-controlled
//! ([`crate::relay_client::flow`]): every output chunk is acknowledged with `core.exec.output.ack` as it is
//! read, and stdin waits for `exec.started` and stays within the agent's input window.
//!
//! SIGINT, SIGTERM and SIGHUP sent to the CLI go to the command as `core.exec.signal`.
//!
//! Blocking I/O on three threads: the session is one request, so an async runtime buys nothing.

pub(crate) mod conn;
pub mod flow;
pub mod fs;
pub mod stream;
pub mod tcp;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_protocol::limits::RELAY_PROLOGUE_BYTES;
use moat_protocol::payload::exec::{
    Consumed, Data, ExecFailed, ExecLimits, ExecRequest, ExecResize, ExecSignal,
};
use moat_protocol::relay::{IdAllocator, IdRange, Prologue, PrologueKind};
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
use nix::sys::signal::{SigSet, Signal};

use crate::error::RuntimeError;
use crate::limits::SOCKET_READ_CHUNK_BYTES;
use crate::relay_client::flow::{OutputAcks, StdinWindow};
use crate::supervisor::wire_name;

const RELAY: &str = "the relay";

/// Signals the CLI forwards to the command instead of dying of them: the command ends, and
/// `moat run` then tears the sandbox down as after any other exit. SIGWINCH (whose default is
/// to be ignored) is taken too: in `-t` mode it becomes `core.exec.resize`.
const FORWARDED_SIGNALS: [Signal; 4] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGWINCH];

fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        set.add(signal);
    }
    set
}

/// Blocks the forwarded signals in the calling thread (and the threads it spawns later), so a
/// session's signal thread can take them with `sigwait`. Call before spawning any thread.
/// Children get an empty mask again (`std::process` resets it).
pub fn block_forwarded_signals() -> Result<(), RuntimeError> {
    forwarded_signals()
        .thread_block()
        .map_err(|e| RuntimeError::io("block signals", "sigprocmask")(std::io::Error::from(e)))
}

/// How an exec session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The program ran and exited with this code (-1: killed by a signal).
    Exited(i32),
    /// The program never started.
    Failed(ExecFailed),
    /// The agent refused the request.
    Refused(String),
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `core.exec.stdout` (and a PTY's merged output).
    Stdout,
    /// `core.exec.stderr`.
    Stderr,
}

/// A session's time limit: a thread that sends `core.exec.signal` SIGKILL when `timeout`
/// passes before the session ends (dropping the `Deadline` ends it early).
struct Deadline {
    /// Dropped when the session ends, which wakes the thread before its time.
    _session_over: std::sync::mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
}

impl Deadline {
    fn start(writer: &Arc<Mutex<UnixStream>>, id: u32, timeout: Duration) -> Deadline {
        let (session_over, session_ended) = std::sync::mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let (writer, flag) = (Arc::clone(writer), Arc::clone(&fired));
        std::thread::spawn(move || {
            if session_ended.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout) {
                flag.store(true, Ordering::SeqCst);
                let kill = ExecSignal { signal: Signal::SIGKILL as i32 };
                let _ = send(
                    &writer,
                    MessageFrame::new(id, Message::ExecSignal(kill)),
                    "core.exec.signal",
                );
            }
        });
        Deadline { _session_over: session_over, fired }
    }

    /// Whether the time ran out (and the command was killed).
    fn passed(self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// What a session's frames tell its driver, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEvent<'a> {
    /// `core.exec.started`: the program runs.
    Started,
    /// A chunk of its output.
    Output(Stream, &'a [u8]),
}

/// The result of [`RelayClient::run_captured`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedExec {
    /// How the command ended.
    pub outcome: ExecOutcome,
    /// Its standard output (up to the cap).
    pub stdout: Vec<u8>,
    /// Its standard error (up to the cap).
    pub stderr: Vec<u8>,
    /// Output bytes beyond the cap, counted and discarded.
    pub dropped_bytes: u64,
    /// The command ran past its timeout and was SIGKILLed (its outcome is that death).
    pub timed_out: bool,
}

/// Cancels a session from another thread: [`SessionCancel::cancel`] shuts the session's relay
/// connection down, so the relay kills the command as it does for any departed client
/// (`core.exec.signal` SIGKILL, PROTOCOL.md §13) and the blocking reader returns at once. What
/// the async API uses when a collected exec's future is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionCancel(Arc<Mutex<CancelState>>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    socket: Option<UnixStream>,
}

impl SessionCancel {
    /// Registers `client`'s connection; `false` when the session was cancelled already (the
    /// caller then runs nothing).
    pub(crate) fn register(&self, client: &RelayClient) -> Result<bool, RuntimeError> {
        let socket = client
            .reader
            .try_clone()
            .map_err(RuntimeError::io("clone relay socket", "agent.sock"))?;
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.cancelled {
            return Ok(false);
        }
        state.socket = Some(socket);
        Ok(true)
    }

    /// Cancels the session: its connection (registered now or later) is shut down.
    pub(crate) fn cancel(&self) {
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.cancelled = true;
        if let Some(socket) = state.socket.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A connected relay client.
#[derive(Debug)]
pub struct RelayClient {
    writer: Arc<Mutex<UnixStream>>,
    reader: UnixStream,
    decoder: FrameDecoder,
    ids: IdAllocator,
    /// Socket read buffer, reused across reads.
    read_buf: Vec<u8>,
    /// Generation-10 flow control, when the agent announced it.
    policy: Option<ExecLimits>,
}

impl RelayClient {
    /// Connects and reads the prologue and the replayed `core.ready`.
    pub fn connect(socket: &Path) -> Result<RelayClient, RuntimeError> {
        let (reader, range) = connect_relay(socket)?;
        let writer = reader.try_clone().map_err(RuntimeError::io("clone relay socket", socket))?;
        let mut client = RelayClient {
            writer: Arc::new(Mutex::new(writer)),
            reader,
            decoder: FrameDecoder::new(),
            ids: IdAllocator::new(range),
            read_buf: vec![0u8; SOCKET_READ_CHUNK_BYTES],
            policy: None,
        };
        match client.next_message("waiting for the replayed core.ready")? {
            MessageFrame { v, message: Message::Ready(ready), .. } => {
                client.policy = crate::relay_client::flow::policy(v, ready.exec_limits);
                Ok(client)
            }
            other => Err(RuntimeError::Unexpected {
                peer: RELAY,
                got: wire_name(&other.message),
                while_doing: "waiting for the replayed core.ready",
            }),
        }
    }

    /// Runs `request` to its end, streaming output live and forwarding our stdin. With
    /// `request.tty`, the PTY gets our terminal's size, our terminal is raw for the session, and
    /// window size changes follow.
    pub fn run_exec(&mut self, request: ExecRequest) -> Result<ExecOutcome, RuntimeError> {
        self.run_exec_within(request, None).map(|(outcome, _)| outcome)
    }

    /// [`RelayClient::run_exec`], SIGKILLing the command when it runs past `timeout`; the
    /// flag says whether it did.
    pub fn run_exec_within(
        &mut self,
        mut request: ExecRequest,
        timeout: Option<Duration>,
    ) -> Result<(ExecOutcome, bool), RuntimeError> {
        let id = self.ids.next_id().ok_or(RuntimeError::IdsExhausted)?;
        let tty = request.tty;
        if tty && let Some((rows, cols)) = crate::cli::tty::terminal_size() {
            (request.rows, request.cols) = (rows, cols);
        }
        let _raw = if tty { crate::cli::tty::RawMode::enter() } else { None };
        send(
            &self.writer,
            MessageFrame::new(id, Message::ExecRequest(request)),
            "core.exec.request",
        )?;
        let window = self.stdin_window();
        let writer = Arc::clone(&self.writer);
        let (feeder_window, chunk) = (window.clone(), self.stdin_chunk_bytes());
        std::thread::spawn(move || forward_stdin(&writer, id, feeder_window.as_deref(), chunk));
        let writer = Arc::clone(&self.writer);
        std::thread::spawn(move || forward_signals(&writer, id, tty));
        let deadline = timeout.map(|timeout| Deadline::start(&self.writer, id, timeout));
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        let outcome = self.drive(id, window.as_deref(), |event| match event {
            SessionEvent::Output(Stream::Stdout, data) => write_live(&mut stdout, data),
            SessionEvent::Output(Stream::Stderr, data) => write_live(&mut stderr, data),
            SessionEvent::Started => {}
        })?;
        Ok((outcome, deadline.is_some_and(Deadline::passed)))
    }

    /// The stdin window of a new session (`None` on the legacy path).
    pub(crate) fn stdin_window(&self) -> Option<Arc<StdinWindow>> {
        self.policy.map(|p| Arc::new(StdinWindow::new(u64::from(p.input_limit))))
    }

    pub(crate) fn stdin_chunk_bytes(&self) -> usize {
        crate::relay_client::flow::stdin_chunk_bytes(self.policy.as_ref())
    }

    /// Runs `request` with `stdin` as its whole input (then EOF) and collects its output, up to
    /// `max_bytes` per stream (the rest is counted as dropped, never buffered). With a
    /// `timeout`, a command still running then gets `core.exec.signal` SIGKILL and the session
    /// ends with its death, marked [`CapturedExec::timed_out`]. For library callers: nothing is
    /// read from or written to this process's own stdio.
    pub fn run_captured(
        &mut self,
        request: ExecRequest,
        stdin: &[u8],
        max_bytes: usize,
        timeout: Option<Duration>,
    ) -> Result<CapturedExec, RuntimeError> {
        let id = self.ids.next_id().ok_or(RuntimeError::IdsExhausted)?;
        send(
            &self.writer,
            MessageFrame::new(id, Message::ExecRequest(request)),
            "core.exec.request",
        )?;
        let window = self.stdin_window();
        let chunk = self.stdin_chunk_bytes();
        if window.is_none() {
            feed_stdin(&self.writer, id, stdin, None, chunk)?;
        }
        let mut captured = CapturedExec {
            outcome: ExecOutcome::Exited(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped_bytes: 0,
            timed_out: false,
        };
        let writer = Arc::clone(&self.writer);
        let deadline = timeout.map(|timeout| Deadline::start(&self.writer, id, timeout));
        let outcome = std::thread::scope(|scope| {
            // Generation 10: stdin waits for exec.started and for acks, so it is fed from its
            // own thread while this one reads; a failed send just ends the feeding.
            if let Some(window) = window.as_deref() {
                scope.spawn(|| feed_stdin(&writer, id, stdin, Some(window), chunk));
            }
            self.drive(id, window.as_deref(), |event| {
                let SessionEvent::Output(stream, data) = event else { return };
                let buf = match stream {
                    Stream::Stdout => &mut captured.stdout,
                    Stream::Stderr => &mut captured.stderr,
                };
                let room = max_bytes.saturating_sub(buf.len());
                let kept = data.len().min(room);
                buf.extend_from_slice(&data[..kept]);
                captured.dropped_bytes += (data.len() - kept) as u64;
            })
        })?;
        captured.outcome = outcome;
        captured.timed_out = deadline.is_some_and(Deadline::passed);
        Ok(captured)
    }

    /// Reads the session's frames until it ends, handing output to `on_output`, acknowledging
    /// it under flow control, and moving `window` along; the window is closed at the end, so a
    /// stdin feeder waiting on it stops.
    pub(crate) fn drive(
        &mut self,
        id: u32,
        window: Option<&StdinWindow>,
        on_event: impl FnMut(SessionEvent<'_>),
    ) -> Result<ExecOutcome, RuntimeError> {
        let outcome = self.drive_frames(id, window, on_event);
        if let Some(window) = window {
            window.close();
        }
        outcome
    }

    fn drive_frames(
        &mut self,
        id: u32,
        window: Option<&StdinWindow>,
        mut on_event: impl FnMut(SessionEvent<'_>),
    ) -> Result<ExecOutcome, RuntimeError> {
        let mut acks = OutputAcks::default();
        loop {
            if let Some(policy) = &self.policy {
                // Idle when nothing is buffered: the next read waits on the socket, so all
                // output read so far is acknowledged first. (A partial frame buffered is not
                // idle: the rest of it is already on its way, as frames are written whole.)
                let idle = self.decoder.buffered() == 0;
                if let Some(consumed) = acks.due(idle, u64::from(policy.output_limit)) {
                    let ack = MessageFrame::new(id, Message::ExecOutputAck(Consumed { consumed }));
                    send(&self.writer, ack, "core.exec.output.ack")?;
                }
            }
            let frame = self.next_message("waiting for the command to finish")?;
            if frame.id != id {
                tracing::debug!(id = frame.id, message = %wire_name(&frame.message), "frame for another id");
                continue;
            }
            let (stream, data) = match frame.message {
                Message::ExecStdout(Data { data }) => (Stream::Stdout, data),
                Message::ExecStderr(Data { data }) => (Stream::Stderr, data),
                Message::ExecExited(exited) => return Ok(ExecOutcome::Exited(exited.code)),
                Message::ExecFailed(failed) => return Ok(ExecOutcome::Failed(failed)),
                Message::Error(err) => return Ok(ExecOutcome::Refused(err.message)),
                Message::ExecStarted(_) => {
                    window.inspect(|w| w.start());
                    on_event(SessionEvent::Started);
                    continue;
                }
                Message::ExecStdinAck(ack) => {
                    window.inspect(|w| w.acked(ack.consumed));
                    continue;
                }
                Message::ExecStdinError(err) => {
                    tracing::warn!(message = %err.message, "stdin to the command failed");
                    continue;
                }
                // Nothing else belongs to an exec session; a peer that sends it is logged, not
                // trusted.
                other => {
                    tracing::debug!(message = %wire_name(&other), "ignored on the exec session");
                    continue;
                }
            };
            on_event(SessionEvent::Output(stream, &data));
            acks.received(data.len());
        }
    }

    /// Asks the agent to shut down (`core.shutdown` on id 0, which the relay forwards).
    pub fn request_shutdown(&self) -> Result<(), RuntimeError> {
        send(&self.writer, MessageFrame::new(0, Message::Shutdown), "core.shutdown")
    }

    fn next_message(&mut self, while_doing: &'static str) -> Result<MessageFrame, RuntimeError> {
        recv_message(&mut self.reader, &mut self.decoder, &mut self.read_buf, while_doing)
    }
}

/// Connects to a relay socket and reads its prologue: the stream and the id range it grants.
pub(crate) fn connect_relay(socket: &Path) -> Result<(UnixStream, IdRange), RuntimeError> {
    let mut stream =
        UnixStream::connect(socket).map_err(RuntimeError::io("connect to relay", socket))?;
    let mut prologue = [0u8; RELAY_PROLOGUE_BYTES];
    stream
        .read_exact(&mut prologue)
        .map_err(|_| RuntimeError::PeerGone { peer: RELAY, while_doing: "reading the prologue" })?;
    match Prologue::parse(prologue)? {
        PrologueKind::Current(range) => Ok((stream, range)),
        PrologueKind::Legacy { .. } => Err(RuntimeError::LegacyRelay),
    }
}

/// The next message frame from the relay (bulk and lease records are skipped), reading
/// `reader` through `buf` into `decoder` as needed.
pub(crate) fn recv_message(
    reader: &mut impl Read,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
    while_doing: &'static str,
) -> Result<MessageFrame, RuntimeError> {
    loop {
        let next =
            decoder.next_frame().map_err(|source| RuntimeError::Frame { peer: RELAY, source })?;
        if let Some(raw) = next {
            match decode_frame(&raw) {
                Ok(Decoded::Message(frame)) => return Ok(frame),
                Ok(_) => continue,
                Err(source) => return Err(RuntimeError::Decode { peer: RELAY, source }),
            }
        }
        let n = match reader.read(buf) {
            Ok(0) | Err(_) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
    }
}

pub(crate) fn send(
    writer: &Mutex<UnixStream>,
    frame: MessageFrame,
    what: &'static str,
) -> Result<(), RuntimeError> {
    let bytes = frame.to_bytes().map_err(|source| RuntimeError::Encode { what, source })?;
    let mut stream = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    stream.write_all(&bytes).map_err(RuntimeError::io("write to relay", "agent.sock"))
}

/// Sends one stdin payload (empty = EOF), first waiting for room in `window` when the session
/// is flow-controlled. `Ok(false)` when the session ended first.
pub(crate) fn send_stdin(
    writer: &Mutex<UnixStream>,
    id: u32,
    data: &[u8],
    window: Option<&StdinWindow>,
) -> Result<bool, RuntimeError> {
    if window.is_some_and(|w| !w.reserve(data.len())) {
        return Ok(false);
    }
    let frame = MessageFrame::new(id, Message::ExecStdin(Data::new(data.to_vec())));
    send(writer, frame, "core.exec.stdin").map(|()| true)
}

/// Sends all of `stdin` in chunks of at most `chunk` bytes, then EOF.
fn feed_stdin(
    writer: &Mutex<UnixStream>,
    id: u32,
    stdin: &[u8],
    window: Option<&StdinWindow>,
    chunk: usize,
) -> Result<(), RuntimeError> {
    for part in stdin.chunks(chunk) {
        if !send_stdin(writer, id, part, window)? {
            return Ok(());
        }
    }
    send_stdin(writer, id, &[], window).map(drop)
}

/// Our stdin to `core.exec.stdin` frames of at most `chunk` bytes; an empty frame on EOF.
/// Stops quietly when the relay is gone or the session ended.
fn forward_stdin(writer: &Mutex<UnixStream>, id: u32, window: Option<&StdinWindow>, chunk: usize) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = stdin.read(&mut buf).unwrap_or(0);
        if !matches!(send_stdin(writer, id, &buf[..n], window), Ok(true)) || n == 0 {
            return;
        }
    }
}

/// Blocked signals (see [`block_forwarded_signals`]) to `core.exec.signal` frames; SIGWINCH
/// to `core.exec.resize` on a PTY session (and nothing otherwise).
fn forward_signals(writer: &Mutex<UnixStream>, id: u32, tty: bool) {
    let set = forwarded_signals();
    while let Ok(signal) = set.wait() {
        let frame = match signal {
            Signal::SIGWINCH => match crate::cli::tty::terminal_size() {
                Some((rows, cols)) if tty => {
                    MessageFrame::new(id, Message::ExecResize(ExecResize { rows, cols }))
                }
                _ => continue,
            },
            signal => {
                MessageFrame::new(id, Message::ExecSignal(ExecSignal { signal: signal as i32 }))
            }
        };
        if send(writer, frame, "core.exec.signal").is_err() {
            return;
        }
    }
}

fn write_live(out: &mut impl Write, data: &[u8]) {
    // A closed stdout (e.g. `| head`) must not stop the session; the command sees its own EPIPE.
    let _ = out.write_all(data);
    let _ = out.flush();
}

/// The CLI exit status for a session outcome: the command's code; 255 for signal death (the
/// agent reports -1 without the signal number) or any code outside 0..=255; 127 when the
/// program never started; 125 when the agent refused the request.
pub fn exit_status(outcome: &ExecOutcome) -> u8 {
    match outcome {
        ExecOutcome::Exited(code) => u8::try_from(*code).unwrap_or(255),
        ExecOutcome::Failed(_) => 127,
        ExecOutcome::Refused(_) => 125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::payload::exec::ExecFailureKind;

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_status(&ExecOutcome::Exited(7)), 7);
        assert_eq!(exit_status(&ExecOutcome::Exited(0)), 0);
    }

    #[test]
    fn signal_death_maps_to_255() {
        assert_eq!(exit_status(&ExecOutcome::Exited(-1)), 255);
    }

    #[test]
    fn a_program_that_never_started_maps_to_127() {
        let failed = ExecFailed {
            kind: ExecFailureKind::NotFound,
            errno: Some(2),
            errno_name: Some("ENOENT".into()),
            message: "no such program".into(),
            stage: Some("execvp".into()),
        };
        assert_eq!(exit_status(&ExecOutcome::Failed(failed)), 127);
    }
}
