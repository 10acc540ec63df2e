//! The relay's async driver: [`serve`] runs the [`Router`] on tokio tasks and does all the
//! waiting. It decides nothing itself; every decision is the router's.
//!
//! ```text
//!  accept loop ──► per client: reader task ──client_frame──► Router ──ToGuest──► guest queue
//!                              writer task ◄──ToClient (bounded channel)   (bounded; the reader waits)
//!  guest reader task ──guest_frame──► Router ──ToClient / ExecLog (waits only for room in a
//!                                              full queue whose client is still reading)
//!  guest writer task ◄── guest queue ◄── client readers, RelayHandle::send_to_guest
//!  tick (1 s) ──► Router::tick (slow-client deadline)
//! ```
//!
//! The router sits behind one `std::sync::Mutex`, held only for a synchronous router call and
//! the non-waiting effects (queueing to a client, to `exec.log`, signalling a close); it is never
//! held across an `.await`. Effects that wait (queueing for the guest, which may be full) are run
//! by the client reader after it lets go of the lock, so only that client waits. The guest reader
//! waits on the guest, and for room when a frame does not fit a client's full queue while that
//! client is still reading ([`Router::guest_frame_must_wait`]); a client that stopped reading is
//! disconnected instead, after at most `CLIENT_BACKLOG_PATIENCE_MS`.
//!
//! A client's disconnect is always finished by its reader task: it reports
//! [`Router::client_disconnected`], queues the kill signals and the disconnect notice for the
//! guest, and only then releases the slot.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use moat_protocol::RawFrame;
use moat_protocol::frame::split_frame_with_wire;
use moat_protocol::relay::Slot;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::error::RelayError;
use crate::exec_log::{ExecLog, ExecLogSink, ExecLogStats};
use crate::handle::{GuestItem, GuestQueue, GuestQueueClosed, RelayControl};
use crate::limits::{
    ACCEPT_ERROR_BACKOFF_MS, CLIENT_QUEUE_MAX_FRAMES, CLIENT_WRITE_BATCH_FRAMES,
    GUEST_FLUSH_TIMEOUT_MS, GUEST_ROOM_RECHECK_MS, READ_CHUNK_BYTES, TICK_INTERVAL_MS,
};
use crate::router::{ClientId, Effect, Router, RouterStats};
use crate::socket::BoundSocket;

/// What [`serve`] needs besides the guest stream.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to create the client socket (mode 0600). Its directory must exist; a stale socket
    /// file there is replaced.
    pub socket_path: PathBuf,
    /// Directory for `exec.log` and its rotations; created if missing.
    pub log_dir: PathBuf,
    /// The agent's `core.ready` frame (id 0, flags 0), already read from the guest stream by the
    /// host after the bootstrap handshake. Replayed unchanged to every client.
    pub ready: RawFrame,
}

/// Why the relay stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`crate::RelayHandle::shutdown`] was called, or every `RelayHandle` was dropped.
    Requested,
    /// The guest closed its stream (the VM or agent went away).
    GuestClosed,
}

/// What the relay did, returned when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Why it stopped.
    pub stop: StopReason,
    /// The router's counters.
    pub router: RouterStats,
    /// The `exec.log` writer's counters.
    pub exec_log: ExecLogStats,
}

/// Serves the relay socket until the host stops it or the guest goes away.
///
/// The caller has already run the bootstrap handshake on the guest stream and read the agent's
/// `core.ready` frame (`config.ready`); `guest_reader` must be positioned right after it.
/// `serve` then creates the socket, writes `--- sandbox started ---` to `exec.log`, and relays.
/// On stop it removes the socket, closes every client (without per-client disconnect notices:
/// the guest is going away or being shut down), flushes frames already queued for the guest,
/// writes `--- sandbox stopped ---` and returns.
///
/// Stops with `Ok` on [`crate::RelayHandle::shutdown`] or when the guest closes its stream; with
/// `Err` when the guest stream fails or is not a valid frame stream.
pub async fn serve<R, W>(
    config: RelayConfig,
    guest_reader: R,
    guest_writer: W,
    control: RelayControl,
) -> Result<RelayStats, RelayError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("relay", socket = %config.socket_path.display());
    run(config, guest_reader, guest_writer, control).instrument(span).await
}

async fn run<R, W>(
    config: RelayConfig,
    guest_reader: R,
    guest_writer: W,
    control: RelayControl,
) -> Result<RelayStats, RelayError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let RelayControl {
        mut stop,
        guest,
        guest_rx,
        shutdown_requested,
        clients: client_count,
        workload,
        mut drain,
        execs,
        mut signals,
    } = control;
    let router = Router::new(&config.ready)?;
    let log = ExecLog::open(&config.log_dir)?;
    let socket = match BoundSocket::bind(&config.socket_path) {
        Ok(socket) => socket,
        Err(err) => {
            finish_log(log, None).await;
            return Err(err.into());
        }
    };
    let shared = Arc::new(Mutex::new(Shared {
        router,
        clients: HashMap::new(),
        log: log.sink(),
        shutdown_requested,
        workload,
        client_count,
        execs,
        guest_room: Arc::new(Notify::new()),
    }));
    {
        let mut state = lock(&shared);
        let started = state.router.start();
        state.dispatch_nonblocking(started);
    }
    tracing::info!("relay serving");

    let (writer_stop, writer_stop_rx) = watch::channel(false);
    let mut guest_writer_task = tokio::spawn(write_guest(guest_writer, guest_rx, writer_stop_rx));
    let mut guest_reader_task = tokio::spawn(read_guest(guest_reader, Arc::clone(&shared)));
    let mut clients = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_INTERVAL_MS));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut writer_done = false;

    let outcome = loop {
        tokio::select! {
            () = closed(&mut stop) => break Ok(StopReason::Requested),
            joined = &mut guest_reader_task => {
                break joined_result(joined, "guest reader").map(|()| StopReason::GuestClosed);
            }
            joined = &mut guest_writer_task => {
                writer_done = true;
                break joined_result(joined, "guest writer").map(|()| StopReason::GuestClosed);
            }
            Ok(()) = drain.changed() => {
                if *drain.borrow_and_update() {
                    let mut state = lock(&shared);
                    state.router.refuse_new_execs();
                    state.publish_execs();
                }
            }
            Some(request) = signals.recv() => {
                let frames = lock(&shared).router.signal_open_execs(request.signal);
                let guest = guest.clone();
                // Queued on its own task: the guest queue may be full, and this loop must not wait.
                tokio::spawn(async move {
                    let count = frames.len();
                    for frame in frames {
                        if guest.send(frame).await.is_err() {
                            return;
                        }
                    }
                    let _ = request.done.send(count);
                });
            }
            _ = tick.tick() => {
                let mut state = lock(&shared);
                let effects = state.router.tick(Instant::now());
                state.dispatch_nonblocking(effects);
            }
            Some(joined) = clients.join_next() => {
                if let Err(err) = joined {
                    if err.is_panic() {
                        tracing::error!(error = %err, "a relay client task panicked");
                    }
                }
            }
            accepted = socket.listener().accept() => match accepted {
                Ok((stream, _)) => spawn_client(stream, &shared, &guest, &mut clients),
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            },
        }
    };

    // Teardown: no new clients, no client tasks, then flush what the guest is owed.
    socket.close();
    lock(&shared).close_all_clients();
    clients.shutdown().await;
    guest_reader_task.abort();
    writer_stop.send_replace(true);
    if !writer_done {
        flush_guest_writer(guest_writer_task).await;
    }
    guest.close();
    let (router_stats, stopped) = {
        let state = lock(&shared);
        (state.router.stats(), state.router.stop())
    };
    let exec_log = finish_log(log, Some(stopped)).await;
    match outcome {
        Ok(stop) => {
            tracing::info!(?stop, ?router_stats, ?exec_log, "relay stopped");
            Ok(RelayStats { stop, router: router_stats, exec_log })
        }
        Err(err) => {
            tracing::error!(error = %err, ?router_stats, ?exec_log, "relay failed");
            Err(err)
        }
    }
}

/// The router and the driver-side ends of each client's tasks, behind one lock.
struct Shared {
    router: Router,
    clients: HashMap<ClientId, ClientIo>,
    log: ExecLogSink,
    shutdown_requested: watch::Sender<bool>,
    /// Guest frames on the private workload channel, for [`crate::RelayHandle::recv_workload`].
    workload: mpsc::Sender<Bytes>,
    /// Published to [`crate::RelayHandle::connected_clients`].
    client_count: watch::Sender<usize>,
    /// Published for [`crate::RelayHandle::drain`] and [`crate::RelayHandle::execs_ended`].
    execs: watch::Sender<crate::handle::ExecActivity>,
    /// Woken when a client's queue shrinks or a client goes, for a guest reader waiting for room.
    guest_room: Arc<Notify>,
}

/// The driver's ends of one client's tasks.
struct ClientIo {
    /// The client's outbound frames; its capacity mirrors the router's frame accounting, so a
    /// send the router allowed always fits.
    outbound: mpsc::Sender<Bytes>,
    /// Set to `true` to stop the client's reader and writer.
    close: watch::Sender<bool>,
}

/// An effect that may wait, run by a client reader after it released the lock.
enum Deferred {
    ToGuest(Bytes),
    ReleaseSlot(Slot),
}

impl Shared {
    /// Runs the effects that never wait, in order; returns the ones that may, in order.
    fn dispatch(&mut self, effects: Vec<Effect>) -> Vec<Deferred> {
        let mut work = VecDeque::from(effects);
        let mut deferred = Vec::new();
        while let Some(effect) = work.pop_front() {
            match effect {
                Effect::ToClient { client, bytes } => {
                    let Some(io) = self.clients.get(&client) else { continue };
                    match io.outbound.try_send(bytes) {
                        Ok(()) | Err(TrySendError::Closed(_)) => {}
                        Err(TrySendError::Full(_)) => {
                            // Unreachable while the channel mirrors the router's accounting.
                            tracing::error!(%client, "client channel full despite accounting");
                            work.extend(self.router.client_write_failed(client));
                        }
                    }
                }
                Effect::ToGuest(bytes) => deferred.push(Deferred::ToGuest(bytes)),
                Effect::ReleaseSlot(slot) => deferred.push(Deferred::ReleaseSlot(slot)),
                Effect::CloseClient { client, .. } => {
                    if let Some(io) = self.clients.get(&client) {
                        io.close.send_replace(true);
                    }
                }
                Effect::ExecLog(entry) => {
                    self.log.append(entry);
                }
                Effect::ShutdownRequested { .. } => {
                    self.shutdown_requested.send_replace(true);
                }
                Effect::ToHost(bytes) => {
                    if let Err(TrySendError::Full(_)) = self.workload.try_send(bytes) {
                        // The host asks one question at a time; a flood is the agent's fault.
                        tracing::warn!(
                            "dropping a workload-channel frame: the host is not reading"
                        );
                    }
                }
            }
        }
        self.publish_execs();
        deferred
    }

    /// Publishes the router's exec activity when it changed.
    fn publish_execs(&self) {
        let now = crate::handle::ExecActivity {
            refusing: self.router.refusing_execs(),
            open: self.router.open_exec_sessions(),
        };
        self.execs.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    }

    /// [`Shared::dispatch`] for inputs that never produce guest-bound work (guest frames,
    /// ticks, writer reports).
    fn dispatch_nonblocking(&mut self, effects: Vec<Effect>) {
        let deferred = self.dispatch(effects);
        if !deferred.is_empty() {
            tracing::error!(count = deferred.len(), "router asked for guest-bound work here");
        }
    }

    fn close_all_clients(&mut self) {
        for io in self.clients.values() {
            io.close.send_replace(true);
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere while holding the lock leaves the router usable: every router call
    // finishes its state change before returning effects.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resolves once `flag` is `true` or its sender is gone.
async fn closed(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

fn joined_result(
    joined: Result<Result<(), RelayError>, JoinError>,
    task: &'static str,
) -> Result<(), RelayError> {
    joined.map_err(|_| RelayError::TaskPanicked(task))?
}

/// Runs deferred effects in order: queue frames for the guest (waiting for room), then release
/// slots once the notices before them are queued.
async fn run_deferred(
    shared: &Mutex<Shared>,
    guest: &GuestQueue,
    deferred: Vec<Deferred>,
) -> Result<(), GuestQueueClosed> {
    for item in deferred {
        match item {
            Deferred::ToGuest(bytes) => guest.send(bytes).await?,
            Deferred::ReleaseSlot(slot) => lock(shared).router.release_slot(slot),
        }
    }
    Ok(())
}

fn spawn_client(
    stream: UnixStream,
    shared: &Arc<Mutex<Shared>>,
    guest: &GuestQueue,
    tasks: &mut JoinSet<()>,
) {
    let mut state = lock(shared);
    let connected = match state.router.client_connected(Instant::now()) {
        Ok(connected) => connected,
        Err(busy) => {
            // Accepted and closed at once (PROTOCOL.md §13.3).
            tracing::warn!(error = %busy, "refusing relay client");
            return;
        }
    };
    let (client, slot) = (connected.client, connected.slot);
    let (outbound, outbound_rx) = mpsc::channel(CLIENT_QUEUE_MAX_FRAMES);
    let (close, close_rx) = watch::channel(false);
    // Woken by the writer after each frame, for a reader waiting out a backlog.
    let progress = Arc::new(Notify::new());
    state.clients.insert(client, ClientIo { outbound, close });
    state.client_count.send_replace(state.clients.len());
    state.dispatch_nonblocking(connected.effects);
    drop(state);

    let (read_half, write_half) = stream.into_split();
    let span = tracing::info_span!("client", %client, slot = slot.index());
    let writer = ClientWriter {
        client,
        shared: Arc::clone(shared),
        outbound: outbound_rx,
        close: close_rx.clone(),
        progress: Arc::clone(&progress),
        stream: write_half,
    };
    let reader = ClientReader {
        client,
        shared: Arc::clone(shared),
        guest: guest.clone(),
        close: close_rx,
        progress,
        stream: read_half,
    };
    tasks.spawn(writer.run().instrument(span.clone()));
    tasks.spawn(reader.run().instrument(span));
}

/// Reads one client's frames, hands them to the router, forwards what it allows; on the way out
/// finishes the client's disconnect.
struct ClientReader {
    client: ClientId,
    shared: Arc<Mutex<Shared>>,
    guest: GuestQueue,
    close: watch::Receiver<bool>,
    progress: Arc<Notify>,
    stream: OwnedReadHalf,
}

impl ClientReader {
    async fn run(mut self) {
        self.read_frames().await;
        let Self { client, shared, guest, stream, .. } = self;
        drop(stream);
        let deferred = {
            let mut state = lock(&shared);
            let effects = state.router.client_disconnected(client);
            // Dropping the client's io ends its writer.
            state.clients.remove(&client);
            state.client_count.send_replace(state.clients.len());
            state.guest_room.notify_one();
            state.dispatch(effects)
        };
        if run_deferred(&shared, &guest, deferred).await.is_err() {
            tracing::debug!("relay stopping; disconnect notice not queued");
        }
    }

    async fn read_frames(&mut self) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        loop {
            if !self.wait_while_backlogged().await {
                return;
            }
            buf.reserve(READ_CHUNK_BYTES);
            let read = tokio::select! {
                biased;
                () = closed(&mut self.close) => return,
                read = self.stream.read_buf(&mut buf) => read,
            };
            match read {
                Ok(0) => {
                    tracing::debug!(partial_frame_bytes = buf.len(), "client hung up");
                    return;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "client read failed");
                    return;
                }
            }
            if !self.handle_frames(&mut buf).await {
                return;
            }
        }
    }

    /// Hands every complete frame in `buf` to the router. Returns whether the client stays open.
    async fn handle_frames(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            let (frame, wire) = match split_frame_with_wire(buf) {
                Ok(Some(split)) => split,
                Ok(None) => return true,
                Err(err) => {
                    let mut state = lock(&self.shared);
                    let effects = state.router.client_stream_error(self.client, err.into());
                    state.dispatch_nonblocking(effects);
                    return false;
                }
            };
            let deferred = {
                let mut state = lock(&self.shared);
                let effects = state.router.client_wire_frame(self.client, &frame, Some(wire));
                state.dispatch(effects)
            };
            if run_deferred(&self.shared, &self.guest, deferred).await.is_err() {
                return false;
            }
            if *self.close.borrow() {
                return false;
            }
        }
    }

    /// Backpressure: while the client's output queue is above its high-water mark, read nothing
    /// more from it. Returns `false` if the client was closed meanwhile.
    async fn wait_while_backlogged(&mut self) -> bool {
        loop {
            if !lock(&self.shared).router.backlogged(self.client) {
                return !*self.close.borrow();
            }
            tokio::select! {
                biased;
                () = closed(&mut self.close) => return false,
                () = self.progress.notified() => {}
            }
        }
    }
}

/// Writes one client's queued frames to its socket and reports progress to the router.
struct ClientWriter {
    client: ClientId,
    shared: Arc<Mutex<Shared>>,
    outbound: mpsc::Receiver<Bytes>,
    close: watch::Receiver<bool>,
    progress: Arc<Notify>,
    stream: OwnedWriteHalf,
}

impl ClientWriter {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(CLIENT_WRITE_BATCH_FRAMES);
        loop {
            let received = tokio::select! {
                biased;
                () = closed(&mut self.close) => return,
                received = self.outbound.recv_many(&mut batch, CLIENT_WRITE_BATCH_FRAMES) => received,
            };
            if received == 0 {
                return;
            }
            for bytes in batch.drain(..) {
                let written = tokio::select! {
                    biased;
                    () = closed(&mut self.close) => return,
                    written = self.stream.write_all(&bytes) => written,
                };
                if let Err(err) = written {
                    tracing::debug!(error = %err, "client write failed");
                    let mut state = lock(&self.shared);
                    let effects = state.router.client_write_failed(self.client);
                    state.dispatch_nonblocking(effects);
                    return;
                }
                let state = &mut *lock(&self.shared);
                state.router.client_wrote(self.client, 1, bytes.len(), Instant::now());
                state.guest_room.notify_one();
                self.progress.notify_one();
            }
        }
    }
}

/// Reads guest frames and hands them to the router. Waits on a client only while a frame does
/// not fit its full queue and it is still reading (see [`Router::guest_frame_must_wait`]).
async fn read_guest<R>(mut reader: R, shared: Arc<Mutex<Shared>>) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        buf.reserve(READ_CHUNK_BYTES);
        let read = match reader.read_buf(&mut buf).await {
            Ok(read) => read,
            Err(err) if guest_gone(&err) => 0,
            Err(err) => return Err(RelayError::GuestRead(err)),
        };
        if read == 0 {
            if buf.is_empty() {
                tracing::info!("guest closed its stream");
                return Ok(());
            }
            return Err(RelayError::GuestTruncated { buffered: buf.len() });
        }
        while let Some((frame, wire)) = split_frame_with_wire(&mut buf)? {
            route_guest_frame(&shared, &frame, wire).await?;
        }
    }
}

/// Hands one guest frame to the router, first waiting for room in its client's queue if the
/// router says so. The wait re-checks at least every tick, so a client that stops reading is
/// noticed even when nothing wakes us.
async fn route_guest_frame(
    shared: &Mutex<Shared>,
    frame: &RawFrame,
    wire: Bytes,
) -> Result<(), RelayError> {
    loop {
        let room = {
            let mut state = lock(shared);
            let now = Instant::now();
            if !state.router.guest_frame_must_wait(frame, now) {
                let effects = state.router.guest_wire_frame(frame, Some(wire), now)?;
                state.dispatch_nonblocking(effects);
                return Ok(());
            }
            Arc::clone(&state.guest_room)
        };
        let recheck = Duration::from_millis(GUEST_ROOM_RECHECK_MS);
        let _ = tokio::time::timeout(recheck, room.notified()).await;
    }
}

/// Writes queued frames to the guest. On stop, writes what is already queued first.
async fn write_guest<W>(
    mut writer: W,
    mut queue: mpsc::Receiver<GuestItem>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RelayError>
where
    W: AsyncWrite + Unpin,
{
    loop {
        let item = tokio::select! {
            biased;
            item = queue.recv() => item,
            () = closed(&mut stop) => break,
        };
        let Some(item) = item else { break };
        if !write_item(&mut writer, &item).await? {
            return Ok(());
        }
        if queue.is_empty() && !flush(&mut writer).await? {
            return Ok(());
        }
    }
    while let Ok(item) = queue.try_recv() {
        if !write_item(&mut writer, &item).await? {
            return Ok(());
        }
    }
    flush(&mut writer).await.map(|_| ())
}

/// Writes one frame; `Ok(false)` when the guest has gone away.
async fn write_item<W: AsyncWrite + Unpin>(
    writer: &mut W,
    item: &GuestItem,
) -> Result<bool, RelayError> {
    match writer.write_all(&item.bytes).await {
        Ok(()) => Ok(true),
        Err(err) if guest_gone(&err) => Ok(false),
        Err(err) => Err(RelayError::GuestWrite(err)),
    }
}

async fn flush<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<bool, RelayError> {
    match writer.flush().await {
        Ok(()) => Ok(true),
        Err(err) if guest_gone(&err) => Ok(false),
        Err(err) => Err(RelayError::GuestWrite(err)),
    }
}

/// Errors that mean the guest end closed, which is how a VM's life ends, not a failure.
fn guest_gone(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
}

async fn flush_guest_writer(mut task: JoinHandle<Result<(), RelayError>>) {
    let timeout = Duration::from_millis(GUEST_FLUSH_TIMEOUT_MS);
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "guest writer failed while flushing"),
        Ok(Err(_)) => tracing::error!("guest writer task panicked"),
        Err(_) => {
            tracing::warn!(timeout_ms = GUEST_FLUSH_TIMEOUT_MS, "guest did not take queued frames");
            task.abort();
        }
    }
}

async fn finish_log(log: ExecLog, last: Option<crate::exec_log::LogEntry>) -> ExecLogStats {
    match tokio::task::spawn_blocking(move || log.finish(last)).await {
        Ok(stats) => stats,
        Err(_) => {
            tracing::error!("exec.log writer could not be finished");
            ExecLogStats::default()
        }
    }
}
