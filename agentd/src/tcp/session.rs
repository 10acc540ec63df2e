//! One TCP session: the task that connects to the guest port and pumps bytes both ways, and the
//! bounded queue the service feeds it from `core.tcp.data` (PROTOCOL.md §10).
//!
//! ```text
//!  service ──push(chunk) / eof──► [queue: ≤ TCP_QUEUE_CHUNKS, ≤ TCP_QUEUE_BYTES] ──► writer half ──► socket
//!  host ◄── Outbound ◄── core.tcp.data (≤ TCP_READ_CHUNK_BYTES) ◄── reader half ◄──────────────── socket
//! ```
//!
//! The task answers the session alone, exactly once: `core.tcp.connected` then, when both halves
//! are done, `core.tcp.closed`; or `core.tcp.failed` when the connect or a read or write fails.
//! The reader waits in [`Outbound::send`] while the queue to the host is full, and reads nothing
//! from the socket meanwhile, so a host that reads slowly holds the guest's writer back instead of
//! growing the agent's memory. A host writing faster than the guest program reads fills the
//! queue; the driver then waits for [`TcpRoom`] before it reads the next frame, as it does for
//! file writes.
//!
//! Session states, as the task sees them:
//!
//! ```text
//!  Connecting ─ok─► Open ─host eof (queue drained, write half shut)──┐
//!      │             │  ─guest eof (core.tcp.eof sent)───────────────┼─► both ─► core.tcp.closed
//!      └─error─► core.tcp.failed          any read/write error ─► core.tcp.failed
//!  abort (core.tcp.close, client gone, shutdown, stall) ─► gone, no answer
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use moat_protocol::Message;
use moat_protocol::limits::MAX_FRAME_BYTES;
use moat_protocol::payload::exec::Data;
use moat_protocol::payload::tcp::TcpFailed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbound::{ChannelClosed, Outbound};

use super::{TCP_CONNECT_TIMEOUT, TCP_QUEUE_BYTES, TCP_QUEUE_CHUNKS, TCP_READ_CHUNK_BYTES};

/// What the service hands the writer half.
enum Inbound {
    /// Bytes for the guest program, holding their share of the byte budget.
    Chunk(Vec<u8>, OwnedSemaphorePermit),
    /// The host's half-close: shut the write half once the queue is written.
    Eof,
}

/// What became of a pushed chunk or EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the socket.
    Queued,
    /// The queue bound was hit (a caller that did not wait for room).
    Overflowed,
    /// The task has ended (it answered already).
    Gone,
}

/// Waits for room in one session's queue (see `TcpService::room`).
#[derive(Debug)]
pub struct TcpRoom {
    budget: Arc<Semaphore>,
    queue: mpsc::Sender<Inbound>,
}

impl TcpRoom {
    /// Resolves when a queue slot and a full frame's bytes are free, or at once when the task has
    /// ended.
    pub async fn wait(self) {
        let Ok(_slot) = self.queue.reserve().await else { return };
        let _bytes = self.budget.acquire_many(MAX_FRAME_BYTES as u32).await;
    }
}

/// The service's side of one session.
#[derive(Debug)]
pub(crate) struct TcpSession {
    queue: mpsc::Sender<Inbound>,
    budget: Arc<Semaphore>,
    task: JoinHandle<()>,
    /// The host sent `core.tcp.eof`; more data is a protocol error.
    host_eof: bool,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Chunk(data, _) => write!(f, "Chunk({} bytes)", data.len()),
            Inbound::Eof => f.write_str("Eof"),
        }
    }
}

impl TcpSession {
    /// Starts the task: connect to the first of `addrs` that answers (`target` names them in
    /// errors), then pump.
    pub(crate) fn spawn(
        id: u32,
        target: String,
        addrs: Vec<SocketAddr>,
        out: Outbound,
    ) -> TcpSession {
        let (queue, rx) = mpsc::channel(TCP_QUEUE_CHUNKS);
        let span = tracing::debug_span!("tcp", id, %target);
        let task = tokio::spawn(run(id, target, addrs, rx, out).instrument(span));
        TcpSession {
            queue,
            budget: Arc::new(Semaphore::new(TCP_QUEUE_BYTES)),
            task,
            host_eof: false,
        }
    }

    /// Queues a non-empty chunk without waiting.
    pub(crate) fn push(&self, data: Vec<u8>) -> Pushed {
        if self.task.is_finished() {
            return Pushed::Gone;
        }
        let Ok(len) = u32::try_from(data.len()) else { return Pushed::Overflowed };
        let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(len) else {
            return Pushed::Overflowed;
        };
        match self.queue.try_send(Inbound::Chunk(data, permit)) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Pushed::Overflowed,
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
        }
    }

    /// Queues the host's half-close.
    pub(crate) fn eof(&mut self) -> Pushed {
        if self.task.is_finished() {
            return Pushed::Gone;
        }
        self.host_eof = true;
        match self.queue.try_send(Inbound::Eof) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Pushed::Overflowed,
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
        }
    }

    /// Whether the host already half-closed this session.
    pub(crate) fn host_eof(&self) -> bool {
        self.host_eof
    }

    /// `None` when the queue can take another full-size frame; otherwise a waiter that resolves
    /// once it can (or once the task has ended).
    pub(crate) fn room(&self) -> Option<TcpRoom> {
        let bytes_short = self.budget.available_permits() < MAX_FRAME_BYTES;
        let slots_short = self.queue.capacity() == 0;
        (!self.task.is_finished() && (bytes_short || slots_short))
            .then(|| TcpRoom { budget: Arc::clone(&self.budget), queue: self.queue.clone() })
    }

    /// Whether the task has ended (it answered, or was aborted).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the session at once without an answer; dropping the socket closes it.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// Why a session ended early; the text of its `core.tcp.failed`.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("connect {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("connect {target}: timed out after {}s", TCP_CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { target: String },
    #[error("read from {target}: {source}")]
    Read { target: String, source: io::Error },
    #[error("write to {target}: {source}")]
    Write { target: String, source: io::Error },
    /// The host went away: nothing more can be answered.
    #[error("the agent channel is closed")]
    HostGone,
}

impl From<ChannelClosed> for Broken {
    fn from(_: ChannelClosed) -> Broken {
        Broken::HostGone
    }
}

async fn run(
    id: u32,
    target: String,
    addrs: Vec<SocketAddr>,
    queue: mpsc::Receiver<Inbound>,
    out: Outbound,
) {
    let result = async {
        let stream = connect(&target, &addrs).await?;
        out.send(id, Message::TcpConnected).await?;
        tracing::debug!("connected");
        let (reader, writer) = stream.into_split();
        // Either half failing ends the session; the other is dropped with the socket.
        tokio::try_join!(
            guest_to_host(id, &target, reader, &out),
            host_to_guest(&target, writer, queue)
        )?;
        Ok::<(), Broken>(())
    }
    .await;
    let reply = match result {
        Ok(()) => Message::TcpClosed,
        Err(Broken::HostGone) => return,
        Err(err) => {
            tracing::debug!(%err, "tcp session failed");
            Message::TcpFailed(TcpFailed { error: err.to_string() })
        }
    };
    if out.send(id, reply).await.is_err() {
        tracing::debug!("host gone before the tcp session's end");
    }
}

/// Connects to the first address that accepts, within [`TCP_CONNECT_TIMEOUT`] in all.
async fn connect(target: &str, addrs: &[SocketAddr]) -> Result<TcpStream, Broken> {
    let attempt = async {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = err,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(TCP_CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(Broken::Connect { target: target.to_owned(), source }),
        Err(_) => Err(Broken::ConnectTimeout { target: target.to_owned() }),
    }
}

/// Reads the socket into `core.tcp.data` frames until its end, then sends `core.tcp.eof`.
async fn guest_to_host(
    id: u32,
    target: &str,
    mut reader: OwnedReadHalf,
    out: &Outbound,
) -> Result<(), Broken> {
    let mut buf = vec![0u8; TCP_READ_CHUNK_BYTES];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|source| Broken::Read { target: target.to_owned(), source })?;
        if n == 0 {
            out.send(id, Message::TcpEof).await?;
            return Ok(());
        }
        out.send(id, Message::TcpData(Data::new(buf[..n].to_vec()))).await?;
    }
}

/// Writes queued chunks to the socket until the host's EOF, then shuts the write half.
async fn host_to_guest(
    target: &str,
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Inbound>,
) -> Result<(), Broken> {
    let failed = |source| Broken::Write { target: target.to_owned(), source };
    while let Some(inbound) = queue.recv().await {
        match inbound {
            Inbound::Chunk(data, _permit) => writer.write_all(&data).await.map_err(failed)?,
            Inbound::Eof => {
                writer.shutdown().await.map_err(failed)?;
                return Ok(());
            }
        }
    }
    // The service dropped the queue without an EOF: it aborts the task next.
    std::future::pending().await
}
