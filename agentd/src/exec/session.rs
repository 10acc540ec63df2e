//! One exec session's task: everything the host sees about a session is sent from here, in
//! order, so `started` precedes all output and nothing follows the terminal message.
//!
//! ```text
//!  Starting --report EOF--> Running --outputs at EOF--> Draining --exit status--> Done (exited)
//!      └──report: child failure──> Done (failed)
//! ```
//!
//! Output is read in chunks of at most [`OUTPUT_CHUNK_BYTES`] and each chunk is handed to
//! [`Outbound::send_frame`] before the next read, so a host that drains slowly throttles the child
//! through its full pipe, and memory stays bounded. A separate writer task feeds stdin (see
//! [`super::stdin`]); it reports failed writes here through a small channel, and is stopped
//! before the terminal message so no `exec.stdin.error` can follow it. While the writer lives,
//! the channel stays open, so the `notices.recv()` branches below never see `None` except after
//! a pipe-mode EOF, when they are simply disabled for that `select!`.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moat_protocol::limits::AGENT_GENERATION;
use moat_protocol::payload::exec::{Data, ExecExited, ExecFailed, ExecStarted, ExecStdinError};
use moat_protocol::{Message, MessageFrame};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use super::plan::Rlimit;
use super::pre_exec::{CHILD_REPORT_BYTES, ChildFailure};
use super::spawn::{ChildIo, Spawned};
use super::stdin::{self, StdinQueue};
use super::{STDIN_ERROR_BACKLOG, failure};
use crate::outbound::Outbound;
use crate::process::ExitCode;

/// Largest output chunk sent as one `exec.stdout` / `exec.stderr`: a whole default pipe (64 KiB),
/// so a fast writer's output crosses in a quarter of the frames (and syscalls, relay passes and
/// `exec.log` records) that the reference's 16 KiB takes. A read returns what is there, so
/// interactive output is not held back.
pub const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;

const _: () = assert!(OUTPUT_CHUNK_BYTES <= moat_protocol::limits::MAX_EXEC_CHUNK_BYTES as usize);

/// State shared between the manager (dispatcher side) and the session task.
#[derive(Debug)]
pub(crate) struct SessionShared {
    /// The stdin queue.
    pub(crate) stdin: StdinQueue,
    /// Set just before the terminal message is sent; the manager then forgets the session.
    finished: AtomicBool,
}

impl SessionShared {
    /// Shared state of a new session whose stdin queue holds `stdin_limit_bytes`.
    pub(crate) fn new(stdin_limit_bytes: usize) -> SessionShared {
        SessionShared {
            stdin: StdinQueue::new(stdin_limit_bytes),
            finished: AtomicBool::new(false),
        }
    }

    /// Whether the session has ended (or is sending its terminal message).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
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
    host_gone: bool,
}

impl Emitter {
    async fn emit(&mut self, message: Message) {
        if self.host_gone {
            return;
        }
        if self.out.send(self.id, message).await.is_err() {
            tracing::debug!("agent channel closed; discarding the rest of the session's output");
            self.host_gone = true;
        }
    }

    /// Emits `data` as the output message `wrap` makes, and hands the buffer back for the next
    /// read: a pipe chunk is encoded straight from the read buffer, with no copy into a new
    /// `Vec` first.
    async fn emit_chunk(&mut self, wrap: fn(Data) -> Message, data: Vec<u8>) -> Vec<u8> {
        let frame = MessageFrame { id: self.id, v: AGENT_GENERATION, message: wrap(Data { data }) };
        if !self.host_gone && self.out.send_frame(&frame).await.is_err() {
            tracing::debug!("agent channel closed; discarding the rest of the session's output");
            self.host_gone = true;
        }
        match frame.message {
            Message::ExecStdout(Data { data }) | Message::ExecStderr(Data { data }) => data,
            _ => Vec::new(),
        }
    }
}

/// Runs a session to its end.
pub(crate) async fn run(task: SessionTask, shared: Arc<SessionShared>) {
    let SessionTask { id, child, rlimits, program, tty, out } = task;
    let Spawned { pid, report, exit, io } = child;
    let mut emitter = Emitter { id, out, host_gone: false };
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
    writer.abort();
    // Whatever the writer was doing is over (or cancelled) once this returns.
    let _cancelled = writer.await;
    shared.finish();
    while let Ok(notice) = notices.try_recv() {
        emitter.emit(Message::ExecStdinError(notice)).await;
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
    notices: mpsc::Sender<ExecStdinError>,
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
    notices: &mut mpsc::Receiver<ExecStdinError>,
) {
    let mut out_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut err_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // Every branch is cancel-safe: `read` loses no data when another branch wins.
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => match chunk(read, "stdout") {
                Some(n) => out_buf = refill(emitter, Message::ExecStdout, out_buf, n).await,
                None => out_open = false,
            },
            read = stderr.read(&mut err_buf), if err_open => match chunk(read, "stderr") {
                Some(n) => err_buf = refill(emitter, Message::ExecStderr, err_buf, n).await,
                None => err_open = false,
            },
            Some(notice) = notices.recv() => emitter.emit(Message::ExecStdinError(notice)).await,
        }
    }
}

/// Emits the first `n` bytes of `buf` and returns it sized for the next read.
async fn refill(
    emitter: &mut Emitter,
    wrap: fn(Data) -> Message,
    mut buf: Vec<u8>,
    n: usize,
) -> Vec<u8> {
    buf.truncate(n);
    let mut buf = emitter.emit_chunk(wrap, buf).await;
    buf.resize(OUTPUT_CHUNK_BYTES, 0);
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
    notices: &mut mpsc::Receiver<ExecStdinError>,
) {
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    loop {
        tokio::select! {
            read = read_master(master, &mut buf) => match read {
                Ok(0) => return,
                Ok(n) => emitter.emit(Message::ExecStdout(Data::new(&buf[..n]))).await,
                Err(err) if err.raw_os_error() == Some(libc::EIO) => return,
                Err(err) => {
                    tracing::warn!(%err, "reading the PTY master failed; treating as EOF");
                    return;
                }
            },
            Some(notice) = notices.recv() => emitter.emit(Message::ExecStdinError(notice)).await,
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
    notices: &mut mpsc::Receiver<ExecStdinError>,
) -> ExitCode {
    loop {
        tokio::select! {
            code = &mut exit => {
                return code.unwrap_or_else(|_| {
                    tracing::error!("the reaper dropped an exit status; reporting -1");
                    -1
                });
            }
            Some(notice) = notices.recv() => emitter.emit(Message::ExecStdinError(notice)).await,
        }
    }
}
