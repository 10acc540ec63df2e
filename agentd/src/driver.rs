//! The async driver: reads frames off the channel, hands them to the [`Dispatcher`], runs the
//! actions, and writes everything queued on the [`Outbound`] back to the host. It is the only
//! place in the agent that awaits channel I/O.
//!
//! An oversized or truncated frame desynchronises the stream for good: it is the one fatal input,
//! logged clearly, after which the agent shuts down like on `core.shutdown`.

use bytes::BytesMut;
use moat_protocol::frame::split_frame;
use moat_protocol::payload::core::{CoreError, CoreErrorKind};
use moat_protocol::payload::exec::ExecRequest;
use moat_protocol::payload::fs::FsRequest;
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawed,
};
use moat_protocol::relay::IdRange;
use moat_protocol::{FrameError, Message, RawFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::channel::{ChannelReader, ChannelWriter};
use crate::dispatch::{Action, Dispatcher, Rejected, Services};
use crate::exec::{ExecError, ExecManager};
use crate::fs::{BulkControl, FsService, NoBulkTransfer};
use crate::outbound::Outbound;
use crate::tcp::{TCP_STALL_TIMEOUT, TcpService};
use crate::workload::{ProcessFreezer, WorkloadLatch};
use moat_protocol::BulkRecord;

/// Bytes read from the channel per read call.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// A framing or transport failure while reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream is not well framed (fatal).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The channel failed.
    #[error("agent channel read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Frames from the channel's read half.
pub struct FrameReader {
    reader: ChannelReader,
    buf: BytesMut,
}

impl FrameReader {
    /// Wraps the read half.
    pub fn new(reader: ChannelReader) -> FrameReader {
        FrameReader { reader, buf: BytesMut::with_capacity(READ_CHUNK_BYTES) }
    }

    /// The next frame; `Ok(None)` at a clean end of stream; a truncated frame at the end is an
    /// error.
    pub async fn next_frame(&mut self) -> Result<Option<RawFrame>, ReadError> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let mut decoder = moat_protocol::FrameDecoder::new();
                decoder.push(&self.buf);
                decoder.finish()?;
                return Ok(None);
            }
        }
    }
}

/// Drains the outbound queue onto the channel until the queue closes or a write fails.
pub async fn write_loop(mut rx: mpsc::Receiver<Vec<u8>>, mut writer: ChannelWriter) {
    while let Some(frame) = rx.recv().await {
        if let Err(err) = writer.write_all(&frame).await {
            tracing::error!(%err, "agent channel write failed; no more frames go to the host");
            return;
        }
    }
    let _ = writer.flush().await;
}

/// Why the serve loop ended.
#[derive(Debug)]
pub enum Ended {
    /// The host sent `core.shutdown`.
    Shutdown,
    /// The host closed the channel.
    HostClosed,
    /// The stream broke: an oversized or truncated frame, or a transport error.
    Broken(ReadError),
}

/// The agent's real services: exec, filesystem and TCP, plus the clock.
pub struct AgentServices {
    /// Exec sessions.
    pub exec: ExecManager,
    /// Filesystem operations.
    pub fs: FsService,
    /// TCP sessions to guest ports.
    pub tcp: TcpService,
    /// Whether `core.clock.sync` may step the clock (only inside a VM: in the namespace backend
    /// the clock is the host's).
    pub may_set_clock: bool,
    /// The generation-9 workload freezer.
    pub workload: WorkloadLatch<ProcessFreezer>,
}

/// Stdin the session cannot take gets a non-terminal `core.exec.stdin.error`; a follow-up for a
/// session that does not exist (or an id already in use) gets `core.error invalid_session`.
/// An output ack that regresses or over-claims gets `core.error invalid_payload` (and its
/// session is killed).
fn exec_rejection(err: ExecError) -> Rejected {
    if let Some(stdin_error) = err.stdin_error() {
        return Rejected::Stdin(stdin_error);
    }
    let kind = match err {
        ExecError::BadOutputAck { .. } => CoreErrorKind::InvalidPayload,
        ExecError::NoSuchSession(_)
        | ExecError::DuplicateSession(_)
        | ExecError::StdinAfterEof
        | ExecError::StdinPolicy
        | ExecError::StdinQueueFull { .. } => CoreErrorKind::InvalidSession,
    };
    Rejected::Error { kind, message: err.to_string() }
}

/// A bulk frame on an id with no bulk transfer gets `core.error invalid_session`.
fn bulk_rejection(err: NoBulkTransfer) -> Rejected {
    Rejected::Error { kind: CoreErrorKind::InvalidSession, message: err.to_string() }
}

impl Services for AgentServices {
    fn exec_start(&mut self, id: u32, v: u8, request: ExecRequest) -> Result<(), Rejected> {
        if self.workload.frozen() {
            self.exec.refuse_frozen(id);
            return Ok(());
        }
        self.exec.start(id, v, request).map_err(exec_rejection)
    }

    fn exec_output_ack(&mut self, id: u32, consumed: u64) -> Result<(), Rejected> {
        self.exec.output_ack(id, consumed).map_err(exec_rejection)
    }

    fn exec_stdin(&mut self, id: u32, data: Vec<u8>) -> Result<(), Rejected> {
        self.exec.stdin(id, data).map_err(exec_rejection)
    }

    fn exec_signal(&mut self, id: u32, signal: i32) -> Result<(), Rejected> {
        self.exec.signal(id, signal).map_err(exec_rejection)
    }

    fn exec_resize(&mut self, id: u32, rows: u16, cols: u16) -> Result<(), Rejected> {
        self.exec.resize(id, rows, cols).map_err(exec_rejection)
    }

    fn fs_request(&mut self, id: u32, v: u8, request: FsRequest) {
        self.fs.request(id, v, request);
    }

    fn fs_data(&mut self, id: u32, data: Vec<u8>) {
        self.fs.data(id, data);
    }

    fn tcp_connect(&mut self, id: u32, v: u8, connect: TcpConnect) -> Result<(), TcpFailed> {
        self.tcp.connect(id, v, connect)
    }

    fn tcp_data(&mut self, id: u32, data: Vec<u8>) -> Result<(), TcpFailed> {
        self.tcp.data(id, data)
    }

    fn tcp_eof(&mut self, id: u32) -> Result<(), TcpFailed> {
        self.tcp.eof(id)
    }

    fn tcp_close(&mut self, id: u32) -> Result<(), TcpFailed> {
        self.tcp.close(id)
    }

    fn release_range(&mut self, range: IdRange) {
        self.exec.kill_range(range);
        self.fs.release_range(range);
        self.tcp.release_range(range);
    }

    fn clock_sync(&mut self, unix_nanos: u64) {
        if !self.may_set_clock {
            tracing::debug!(
                "ignoring core.clock.sync: the namespace backend shares the host clock"
            );
            return;
        }
        if let Err(err) = crate::sys::set_realtime_clock(unix_nanos) {
            tracing::warn!(%err, "core.clock.sync failed");
        }
    }

    fn bulk_record(&mut self, record: BulkRecord) -> Result<(), Rejected> {
        self.fs.bulk_record(record).map_err(bulk_rejection)
    }

    fn bulk_control(&mut self, id: u32, control: BulkControl) -> Result<(), Rejected> {
        self.fs.bulk_control(id, control).map_err(bulk_rejection)
    }

    fn workload_freeze(&mut self, freeze: WorkloadFreeze) -> Result<WorkloadFrozen, CoreError> {
        self.workload.freeze(freeze)
    }

    fn workload_thaw(&mut self, thaw: WorkloadThaw) -> Result<WorkloadThawed, CoreError> {
        self.workload.thaw(thaw)
    }
}

/// Serves frames until shutdown, end of stream or a broken stream.
pub async fn serve(
    reader: &mut FrameReader,
    out: &Outbound,
    services: &mut AgentServices,
) -> Ended {
    let mut dispatcher = Dispatcher::new();
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ended::HostClosed,
            Err(err) => {
                tracing::error!(%err, "fatal: the agent channel is out of sync; shutting down");
                return Ended::Broken(err);
            }
        };
        let action = dispatcher.handle(&frame, services);
        // Backpressure for streamed writes: a session whose queue is full is let drain before
        // anything more is read, so the host waits instead of its session failing.
        if let Some(room) = services.fs.write_room(frame.id) {
            room.wait().await;
        }
        // The same for a TCP session, but bounded: a guest program that reads nothing for
        // TCP_STALL_TIMEOUT has its session failed rather than holding every other session.
        if let Some(room) = services.tcp.room(frame.id)
            && tokio::time::timeout(TCP_STALL_TIMEOUT, room.wait()).await.is_err()
        {
            let failed = services.tcp.stalled(frame.id);
            tracing::warn!(id = frame.id, error = %failed.error, "tcp session stalled");
            if out.send(frame.id, Message::TcpFailed(failed)).await.is_err() {
                return Ended::HostClosed;
            }
        }
        let reply = match action {
            None => continue,
            Some(Action::Shutdown) => return Ended::Shutdown,
            Some(Action::Reply { id, message }) => out.send(id, message).await,
        };
        if reply.is_err() {
            return Ended::HostClosed;
        }
    }
}
