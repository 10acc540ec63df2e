//! One exec session's task: everything the host sees about a session is sent from here, in
//! order, so `started` precedes all output and nothing follows the terminal message.
//!
//! ```text
//!  Starting --report EOF--> Running --outputs at EOF--> Draining --exit status-->
//!      │                                               Acked (gen 10: all output acked) --> Done
//!      └──report: child failure──> Done (failed)
//! ```
//!
//! Output is read in chunks of at most [`OUTPUT_CHUNK_BYTES`] (generation 10: `output_chunk_size`)
//! and each chunk is handed to [`Outbound::send_frame`] before the next read, so a host that
//! drains slowly throttles the child through its full pipe, and memory stays bounded. A
//! generation-10 session also reads only while its output window has room for a whole chunk
//! ([`super::flow`]), and withholds `exec.exited` until the host acknowledged everything; a
//! session ended by a refused ack (or whose client left) sends nothing more. A separate writer task feeds stdin (see
//! [`super::stdin`]); it reports failed writes here through a small channel, and is stopped
//! before the terminal message so no `exec.stdin.error` can follow it. While the writer lives,
//! the channel stays open, so the `notices.recv()` branches below never see `None` except after
//! a pipe-mode EOF, when they are simply disabled for that `select!`.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BufMut;
use moat_protocol::limits::AGENT_GENERATION;
use moat_protocol::payload::exec::{
    Consumed, Data, ExecExited, ExecFailed, ExecLimits, ExecStarted, output_charge,
};
use moat_protocol::{Message, MessageFrame};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use super::flow::OutputWindow;
use super::plan::Rlimit;
use super::pre_exec::{CHILD_REPORT_BYTES, ChildFailure};
use super::spawn::{ChildIo, Spawned};
use super::stdin::{self, Notice, StdinQueue};
use super::{STDIN_ERROR_BACKLOG, failure};
use crate::outbound::Outbound;
use crate::process::ExitCode;

/// Largest output chunk sent as one `exec.stdout` / `exec.stderr` (generation 10: the cap of the
/// bootstrap's `output_chunk_size`): 256 KiB, a quarter of the widened output pipe
/// (`spawn::OUTPUT_PIPE_BYTES`), so a fast writer's output crosses in a sixteenth of the
/// frames (and syscalls, relay passes and `exec.log` records) that the reference's 16 KiB takes.
/// A read returns what is there, so interactive output is not held back.
pub const OUTPUT_CHUNK_BYTES: usize = 256 * 1024;

const _: () = assert!(OUTPUT_CHUNK_BYTES <= moat_protocol::limits::MAX_EXEC_CHUNK_BYTES as usize);

/// Generation-10 flow control of a session (PROTOCOL.md §8.4).
#[derive(Debug)]
pub(crate) struct FlowControl {
    /// The output window the host acknowledges.
    pub(crate) window: OutputWindow,
    /// Largest output chunk (`output_chunk_size`).
    pub(crate) output_chunk_bytes: usize,
    /// Largest stdin payload accepted (`stdin_chunk_size`).
    pub(crate) stdin_chunk_bytes: usize,
}

impl FlowControl {
    /// Flow control under `limits`.
    pub(crate) fn new(limits: &ExecLimits) -> FlowControl {
        FlowControl {
            window: OutputWindow::new(u64::from(limits.output_limit)),
            output_chunk_bytes: (limits.output_chunk_size as usize).min(OUTPUT_CHUNK_BYTES),
            stdin_chunk_bytes: limits.stdin_chunk_size as usize,
        }
    }
}

/// State shared between the manager (dispatcher side) and the session task.
#[derive(Debug)]
pub(crate) struct SessionShared {
    /// The stdin queue.
    pub(crate) stdin: StdinQueue,
    /// Flow control, for a generation-10 session; `None` on the legacy path.
    pub(crate) flow: Option<FlowControl>,
    /// Set just before the terminal message is sent; the manager then forgets the session.
    finished: AtomicBool,
}

impl SessionShared {
    /// Shared state of a new session whose stdin queue holds `stdin_limit_bytes`.
    pub(crate) fn new(stdin_limit_bytes: usize, flow: Option<FlowControl>) -> SessionShared {
        SessionShared {
            stdin: StdinQueue::new(stdin_limit_bytes, flow.is_some()),
            flow,
            finished: AtomicBool::new(false),
        }
    }

    /// Whether the session has ended (or is sending its terminal message).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether the session was ended by a refused ack or a departed client: it sends nothing
    /// more.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| f.window.is_abandoned())
    }

    /// Marks the session over and frees its unwritten stdin.
    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.stdin.clear();
    }
}

/// What a session task needs besides the shared state.
#[derive(Debug)]
pub(crate) struct SessionTask {
    /// Correlation id of the session.
    pub(crate) id: u32,
    /// The forked child.
    pub(crate) child: Spawned,
    /// The rlimits the child was asked to set (to name a failed one).
    pub(crate) rlimits: Vec<Rlimit>,
    /// The program, for failure messages.
    pub(crate) program: String,
    /// Whether the child has a PTY.
    pub(crate) tty: bool,
    /// The host.
    pub(crate) out: Outbound,
}

/// Sends on one id, remembering when the host is gone so the session can still drain its child.
struct Emitter {
    id: u32,
    out: Outbound,
    shared: Arc<SessionShared>,
    host_gone: bool,
    /// The last `core.exec.stdin.ack` value sent.
    stdin_acked: u64,
}

impl Emitter {
    /// Whether nothing more goes to the host.
    fn muted(&self) -> bool {
        self.host_gone || self.shared.is_abandoned()
    }

    /// The host is gone: stop sending and stop waiting for its acks.
    fn lose_host(&mut self) {
        tracing::debug!("agent channel closed; discarding the rest of the session's output");
        self.host_gone = true;
        if let Some(flow) = &self.shared.flow {
            flow.window.abandon();
        }
    }

    async fn emit(&mut self, message: Message) {
        if self.muted() {
            return;
        }
        if self.out.send(self.id, message).await.is_err() {
            self.lose_host();
        }
    }

    /// Sends what the stdin writer reported.
    async fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Error(error) => self.emit(Message::ExecStdinError(error)).await,
            Notice::Written => {
                let consumed = self.shared.stdin.written_total();
                if consumed > self.stdin_acked {
                    self.stdin_acked = consumed;
                    self.emit(Message::ExecStdinAck(Consumed { consumed })).await;
                }
            }
        }
    }

    /// Emits `data` as the output message `wrap` makes, charging it to the window first, and
    /// hands the buffer back for the next read: a pipe chunk is encoded straight from the read
    /// buffer, with no copy into a new `Vec` first.
    async fn emit_chunk(&mut self, wrap: fn(Data) -> Message, data: Vec<u8>) -> Vec<u8> {
        if let Some(flow) = &self.shared.flow {
            flow.window.charge(output_charge(data.len()));
        }
        let frame = MessageFrame { id: self.id, v: AGENT_GENERATION, message: wrap(Data { data }) };
        if !self.muted() && self.out.send_frame(&frame).await.is_err() {
            self.lose_host();
        }
        match frame.message {
            Message::ExecStdout(Data { data }) | Message::ExecStderr(Data { data }) => data,
            _ => Vec::new(),
        }
    }

    /// Largest output chunk to read.
    fn chunk_bytes(&self) -> usize {
        self.shared.flow.as_ref().map_or(OUTPUT_CHUNK_BYTES, |f| f.output_chunk_bytes)
    }

    /// Waits, forwarding stdin notices, until the window has room for a whole chunk (at once
    /// on the legacy path).
    async fn wait_room(&mut self, notices: &mut mpsc::Receiver<Notice>) {
        let shared = Arc::clone(&self.shared);
        let Some(flow) = &shared.flow else { return };
        let charge = output_charge(self.chunk_bytes());
        loop {
            tokio::select! {
                () = flow.window.wait_room(charge) => return,
                Some(notice) = notices.recv() => self.notice(notice).await,
            }
        }
    }

    /// Waits, forwarding stdin notices, until every output chunk is acknowledged (at once on
    /// the legacy path): `exec.exited` is withheld until then.
    async fn wait_drained(&mut self, notices: &mut mpsc::Receiver<Notice>) {
        let shared = Arc::clone(&self.shared);
        let Some(flow) = &shared.flow else { return };
        loop {
            tokio::select! {
                () = flow.window.wait_drained() => return,
                Some(notice) = notices.recv() => self.notice(notice).await,
            }
        }
    }
}

/// Runs a session to its end.
pub(crate) async fn run(task: SessionTask, shared: Arc<SessionShared>) {
    let SessionTask { id, child, rlimits, program, tty, out } = task;
    let Spawned { pid, report, exit, io } = child;
    let mut emitter =
        Emitter { id, out, shared: Arc::clone(&shared), host_gone: false, stdin_acked: 0 };
    let (notice_tx, mut notices) = mpsc::channel(STDIN_ERROR_BACKLOG);
    let (writer, output) = start_stdin_writer(io, &shared, notice_tx);
    if let Err(failed) = wait_for_exec(report, &rlimits, &program, tty).await {
        writer.abort();
        shared.finish();
        tracing::debug!(kind = failed.kind.as_str(), message = %failed.message, "exec failed");
        emitter.emit(Message::ExecFailed(failed)).await;
        return;
    }
    emitter.emit(Message::ExecStarted(ExecStarted { pid })).await;
    match output {
        Output::Pipes { stdout, stderr } => {
            pump_pipes(stdout, stderr, &mut emitter, &mut notices).await;
        }
        Output::Pty(master) => pump_pty(&master, &mut emitter, &mut notices).await,
    }
    let code = wait_for_exit(exit, &mut emitter, &mut notices).await;
    emitter.wait_drained(&mut notices).await;
    writer.abort();
    // Whatever the writer was doing is over (or cancelled) once this returns.
    let _cancelled = writer.await;
    shared.finish();
    while let Ok(notice) = notices.try_recv() {
        emitter.notice(notice).await;
    }
    tracing::debug!(code, "exec exited");
    emitter.emit(Message::ExecExited(ExecExited { code })).await;
}

/// What the session task reads from.
enum Output {
    Pipes { stdout: pipe::Receiver, stderr: pipe::Receiver },
    Pty(Arc<AsyncFd<OwnedFd>>),
}

/// Spawns the stdin writer (it may write before the program has exec'd: the pipe buffers it).
fn start_stdin_writer(
    io: ChildIo,
    shared: &Arc<SessionShared>,
    notices: mpsc::Sender<Notice>,
) -> (tokio::task::JoinHandle<()>, Output) {
    let writer_shared = Arc::clone(shared);
    match io {
        ChildIo::Pipes { stdin: stdin_pipe, stdout, stderr } => {
            let writer = tokio::spawn(async move {
                stdin::write_pipe(&writer_shared.stdin, stdin_pipe, notices).await;
            });
            (writer, Output::Pipes { stdout, stderr })
        }
        ChildIo::Pty { master } => {
            let writer_master = Arc::clone(&master);
            let writer = tokio::spawn(async move {
                stdin::write_pty(&writer_shared.stdin, &writer_master, notices).await;
            });
            (writer, Output::Pty(master))
        }
    }
}

/// Waits for the child's report: end-of-file means the program runs.
async fn wait_for_exec(
    mut report: pipe::Receiver,
    rlimits: &[Rlimit],
    program: &str,
    tty: bool,
) -> Result<(), ExecFailed> {
    let mut buf = [0u8; CHILD_REPORT_BYTES + 1];
    let mut len = 0;
    loop {
        match report.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                let errno = Some(nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0)));
                let what = "reading the child's exec report";
                return Err(failure::failed(failure::Stage::Register, errno, tty, what));
            }
        }
    }
    if len == 0 {
        return Ok(());
    }
    let Some(report) = ChildFailure::decode(&buf[..len]) else {
        let what = format!("starting {program:?}: malformed {len}-byte report from the child");
        return Err(failure::failed(failure::Stage::Exec, None, tty, &what));
    };
    let stage = report.stage(rlimits);
    let what = match stage {
        failure::Stage::Exec => format!("execvp({program:?})"),
        ref other => format!("starting {program:?}: {}", other.wire_name()),
    };
    Err(failure::failed(stage, Some(report.errno()), tty, &what))
}

/// Forwards stdout and stderr until both reach end-of-file, and stdin notices meanwhile.
async fn pump_pipes(
    mut stdout: pipe::Receiver,
    mut stderr: pipe::Receiver,
    emitter: &mut Emitter,
    notices: &mut mpsc::Receiver<Notice>,
) {
    // Read into spare capacity (`read_buf`), never zeroed: a command that prints little touches
    // little of the two chunk-sized buffers, and `true` touches none of them.
    let chunk_bytes = emitter.chunk_bytes();
    let mut out_buf = Vec::with_capacity(chunk_bytes);
    let mut err_buf = Vec::with_capacity(chunk_bytes);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // Generation 10: read nothing (so the child blocks on its full pipe) while the host
        // holds a whole window unacknowledged.
        emitter.wait_room(notices).await;
        // Every branch is cancel-safe: `read_buf` reads nothing when another branch wins.
        tokio::select! {
            read = read_chunk(&mut stdout, &mut out_buf, chunk_bytes), if out_open => {
                match chunk(read, "stdout") {
                    Some(_) => out_buf = refill(emitter, Message::ExecStdout, out_buf).await,
                    None => out_open = false,
                }
            }
            read = read_chunk(&mut stderr, &mut err_buf, chunk_bytes), if err_open => {
                match chunk(read, "stderr") {
                    Some(_) => err_buf = refill(emitter, Message::ExecStderr, err_buf).await,
                    None => err_open = false,
                }
            }
            Some(notice) = notices.recv() => emitter.notice(notice).await,
        }
    }
}

/// One read of at most `max` bytes into `buf`'s spare capacity. Cancel-safe, as `read_buf` is:
/// nothing is read when the future is dropped before it completes.
async fn read_chunk(pipe: &mut pipe::Receiver, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    pipe.read_buf(&mut buf.limit(max)).await
}

/// Emits `buf` (what the last read put there) and returns it empty for the next read.
async fn refill(emitter: &mut Emitter, wrap: fn(Data) -> Message, buf: Vec<u8>) -> Vec<u8> {
    let mut buf = emitter.emit_chunk(wrap, buf).await;
    buf.clear();
    buf
}

/// The length of a read chunk, or `None` at end-of-file or on an error (logged).
fn chunk(read: io::Result<usize>, stream: &str) -> Option<usize> {
    match read {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(err) => {
            tracing::warn!(stream, %err, "reading the child's output failed; treating as EOF");
            None
        }
    }
}

/// Forwards PTY output until the master reads EOF or `EIO` (every slave descriptor closed).
async fn pump_pty(
    master: &AsyncFd<OwnedFd>,
    emitter: &mut Emitter,
    notices: &mut mpsc::Receiver<Notice>,
) {
    let mut buf = vec![0u8; emitter.chunk_bytes()];
    loop {
        emitter.wait_room(notices).await;
        tokio::select! {
            read = read_master(master, &mut buf) => match read {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    buf = emitter.emit_chunk(Message::ExecStdout, buf).await;
                    buf.resize(emitter.chunk_bytes(), 0);
                }
                Err(err) if err.raw_os_error() == Some(libc::EIO) => return,
                Err(err) => {
                    tracing::warn!(%err, "reading the PTY master failed; treating as EOF");
                    return;
                }
            },
            Some(notice) = notices.recv() => emitter.notice(notice).await,
        }
    }
}

/// One read from a non-blocking PTY master. Cancel-safe: the read happens within a single poll.
async fn read_master(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
            Ok(result) => return result,
            Err(_would_block) => {}
        }
    }
}

/// Waits for the exit status, forwarding stdin notices meanwhile (a child may close its output
/// long before it exits).
async fn wait_for_exit(
    mut exit: oneshot::Receiver<ExitCode>,
    emitter: &mut Emitter,
    notices: &mut mpsc::Receiver<Notice>,
) -> ExitCode {
    loop {
        tokio::select! {
            code = &mut exit => {
                return code.unwrap_or_else(|_| {
                    tracing::error!("the reaper dropped an exit status; reporting -1");
                    -1
                });
            }
            Some(notice) = notices.recv() => emitter.notice(notice).await,
        }
    }
}
