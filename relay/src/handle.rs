//! How the host process controls a running relay: [`RelayHandle`] stops it, sends the host's own
//! frames (such as `core.shutdown`) to the guest through the relay's guest writer, and learns when
//! a client asked for shutdown, and drains it (no new execs; [`ExecActivity`] reports the open
//! ones). [`RelayControl`] is the other end, handed to [`crate::serve`].
//!
//! This module also owns the guest-bound queue, bounded in frames
//! ([`GUEST_QUEUE_MAX_FRAMES`]) and bytes ([`GUEST_QUEUE_MAX_BYTES`]): senders wait for room.

use std::sync::Arc;

use bytes::Bytes;
use moat_protocol::message::MessageFrame;
use moat_protocol::relay::Slot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::error::HostSendError;
use crate::limits::{GUEST_QUEUE_MAX_BYTES, GUEST_QUEUE_MAX_FRAMES, WORKLOAD_QUEUE_MAX_FRAMES};

/// One frame on its way to the guest, holding its share of the byte budget until written.
#[derive(Debug)]
pub(crate) struct GuestItem {
    pub(crate) bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The guest queue is closed: the relay is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestQueueClosed;

/// The sending side of the guest-bound queue.
#[derive(Debug, Clone)]
pub(crate) struct GuestQueue {
    tx: mpsc::Sender<GuestItem>,
    budget: Arc<Semaphore>,
}

impl GuestQueue {
    fn new() -> (GuestQueue, mpsc::Receiver<GuestItem>) {
        let (tx, rx) = mpsc::channel(GUEST_QUEUE_MAX_FRAMES);
        (GuestQueue { tx, budget: Arc::new(Semaphore::new(GUEST_QUEUE_MAX_BYTES)) }, rx)
    }

    /// Queues one frame, waiting while the queue is full.
    pub(crate) async fn send(&self, bytes: Bytes) -> Result<(), GuestQueueClosed> {
        // A frame is at most MAX_WIRE_FRAME_BYTES, which fits u32 and the budget (limits.rs).
        let cost = u32::try_from(bytes.len()).map_err(|_| GuestQueueClosed)?;
        let budget = Arc::clone(&self.budget)
            .acquire_many_owned(cost)
            .await
            .map_err(|_| GuestQueueClosed)?;
        self.tx.send(GuestItem { bytes, _budget: budget }).await.map_err(|_| GuestQueueClosed)
    }

    /// Makes every waiting and future [`GuestQueue::send`] fail.
    pub(crate) fn close(&self) {
        self.budget.close();
    }
}

/// The host's handle on a relay. Cheap to clone. Dropping every clone stops the relay as
/// [`RelayHandle::shutdown`] does, so a relay never outlives the host code that controls it.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    stop: Arc<watch::Sender<bool>>,
    guest: GuestQueue,
    shutdown_requested: watch::Receiver<bool>,
    clients: watch::Receiver<usize>,
    workload: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    drain: Arc<watch::Sender<bool>>,
    execs: watch::Receiver<ExecActivity>,
    signals: mpsc::Sender<SignalExecs>,
}

/// A host request to signal every open exec session; answered with how many were signalled
/// once their frames are queued for the guest.
#[derive(Debug)]
pub(crate) struct SignalExecs {
    pub(crate) signal: i32,
    pub(crate) done: tokio::sync::oneshot::Sender<usize>,
}

/// What the relay reports of exec sessions, for a host draining the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecActivity {
    /// New exec sessions are refused ([`RelayHandle::drain`] took effect).
    pub refusing: bool,
    /// Exec sessions open now (a departed client's included, until the agent ends them).
    pub open: usize,
}

/// The relay's end of a [`RelayHandle`]; pass it to [`crate::serve`].
#[derive(Debug)]
pub struct RelayControl {
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) guest: GuestQueue,
    pub(crate) guest_rx: mpsc::Receiver<GuestItem>,
    pub(crate) shutdown_requested: watch::Sender<bool>,
    pub(crate) clients: watch::Sender<usize>,
    pub(crate) workload: mpsc::Sender<Bytes>,
    pub(crate) drain: watch::Receiver<bool>,
    pub(crate) execs: watch::Sender<ExecActivity>,
    pub(crate) signals: mpsc::Receiver<SignalExecs>,
}

impl RelayHandle {
    /// A handle and the control to start the relay with.
    pub fn new() -> (RelayHandle, RelayControl) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (requested_tx, requested_rx) = watch::channel(false);
        let (clients_tx, clients_rx) = watch::channel(0);
        let (guest, guest_rx) = GuestQueue::new();
        let (workload_tx, workload_rx) = mpsc::channel(WORKLOAD_QUEUE_MAX_FRAMES);
        let (drain_tx, drain_rx) = watch::channel(false);
        let (execs_tx, execs_rx) = watch::channel(ExecActivity::default());
        let (signals_tx, signals_rx) = mpsc::channel(1);
        let handle = RelayHandle {
            stop: Arc::new(stop_tx),
            guest: guest.clone(),
            shutdown_requested: requested_rx,
            clients: clients_rx,
            workload: Arc::new(tokio::sync::Mutex::new(workload_rx)),
            drain: Arc::new(drain_tx),
            execs: execs_rx,
            signals: signals_tx,
        };
        let control = RelayControl {
            stop: stop_rx,
            guest,
            guest_rx,
            shutdown_requested: requested_tx,
            clients: clients_tx,
            workload: workload_tx,
            drain: drain_rx,
            execs: execs_tx,
            signals: signals_rx,
        };
        (handle, control)
    }

    /// Asks the relay to stop: it stops accepting, closes every client, writes what is already
    /// queued for the guest (for up to [`crate::limits::GUEST_FLUSH_TIMEOUT_MS`]), writes the
    /// `--- sandbox stopped ---` marker and returns from [`crate::serve`]. Idempotent.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Queues one of the host's own frames for the guest (for example `core.shutdown` or
    /// `core.clock.sync` on id 0), behind the frames already queued. Waits while the guest
    /// queue is full. Ids inside a client slot are refused: they belong to that client.
    pub async fn send_to_guest(&self, frame: &MessageFrame) -> Result<(), HostSendError> {
        if Slot::of_id(frame.id).is_some() {
            return Err(HostSendError::ClientId { id: frame.id });
        }
        let bytes = Bytes::from(frame.to_bytes()?);
        self.guest.send(bytes).await.map_err(|_| HostSendError::Stopped)
    }

    /// The next guest frame on the private workload channel (id `0xFFFFFFFF`: the replies to
    /// `core.workload.freeze`/`thaw` the host sent with [`RelayHandle::send_to_guest`]), as its
    /// wire bytes; `None` once the relay stopped. The relay never routes these to a client.
    pub async fn recv_workload(&self) -> Option<Bytes> {
        self.workload.lock().await.recv().await
    }

    /// The number of connected clients, updated as they come and go (for idle timeouts: a
    /// sandbox with no client runs no exec, since a client's execs end with it).
    pub fn connected_clients(&self) -> watch::Receiver<usize> {
        self.clients.clone()
    }

    /// Drains the sandbox: from now on the relay answers every new `core.exec.request` with a
    /// `core.error` ([`crate::router::DRAINING_MESSAGE`]) while open execs run on. Resolves
    /// once the relay applies it (`true`), or `false` if the relay stopped first.
    pub async fn drain(&self) -> bool {
        self.drain.send_replace(true);
        let mut execs = self.execs.clone();
        execs.wait_for(|activity| activity.refusing).await.is_ok()
    }

    /// Sends `core.exec.signal {signal}` to every exec session open now (any client's, a
    /// departed one's included): how a host delivers a sandbox's stop signal without a new
    /// message (`core.shutdown` carries none). Resolves with how many sessions were signalled
    /// once their frames are queued for the guest; `None` if the relay stopped first.
    pub async fn signal_execs(&self, signal: i32) -> Option<usize> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.signals.send(SignalExecs { signal, done }).await.ok()?;
        answer.await.ok()
    }

    /// Resolves once the relay refuses new execs and no exec session is open (`true`), or
    /// `false` if the relay stopped first.
    pub async fn execs_ended(&self) -> bool {
        let mut execs = self.execs.clone();
        execs.wait_for(|activity| activity.refusing && activity.open == 0).await.is_ok()
    }

    /// Resolves when a client sends a SHUTDOWN frame (the relay forwards it to the guest; the
    /// host may start its drain/force-exit fallback timer). Returns `false` if the relay stopped
    /// first.
    pub async fn client_requested_shutdown(&self) -> bool {
        let mut requested = self.shutdown_requested.clone();
        requested.wait_for(|requested| *requested).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use moat_protocol::message::Message;

    use super::*;

    #[tokio::test]
    async fn guest_queue_makes_senders_wait_for_byte_budget() {
        let (queue, mut rx) = GuestQueue::new();
        queue.send(Bytes::from(vec![0u8; GUEST_QUEUE_MAX_BYTES - 10])).await.unwrap();
        let blocked = queue.send(Bytes::from(vec![0u8; 11]));
        tokio::pin!(blocked);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut blocked).await;
        assert!(waited.is_err(), "a send over the byte budget must wait");
        // Writing the first frame returns its budget.
        drop(rx.recv().await.unwrap());
        blocked.await.unwrap();
        assert_eq!(rx.recv().await.unwrap().bytes.len(), 11);
    }

    #[tokio::test]
    async fn guest_queue_makes_senders_wait_for_frame_room() {
        let (queue, mut rx) = GuestQueue::new();
        for _ in 0..GUEST_QUEUE_MAX_FRAMES {
            queue.send(Bytes::from_static(b"x")).await.unwrap();
        }
        let blocked = queue.send(Bytes::from_static(b"y"));
        tokio::pin!(blocked);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut blocked).await.is_err());
        rx.recv().await.unwrap();
        blocked.await.unwrap();
    }

    #[tokio::test]
    async fn closed_queue_refuses_senders() {
        let (queue, _rx) = GuestQueue::new();
        queue.close();
        assert_eq!(queue.send(Bytes::from_static(b"x")).await, Err(GuestQueueClosed));
    }

    #[tokio::test]
    async fn host_frames_on_client_ids_are_refused() {
        let (handle, mut control) = RelayHandle::new();
        let ping = MessageFrame::new(Slot::new(2).unwrap().range().start, Message::Ping);
        assert!(matches!(handle.send_to_guest(&ping).await, Err(HostSendError::ClientId { .. })));
        let shutdown = MessageFrame::new(0, Message::Shutdown);
        handle.send_to_guest(&shutdown).await.unwrap();
        let queued = control.guest_rx.recv().await.unwrap();
        assert_eq!(&queued.bytes[..], &shutdown.to_bytes().unwrap()[..]);
    }

    #[tokio::test]
    async fn shutdown_request_wait_ends_when_the_relay_is_gone() {
        let (handle, control) = RelayHandle::new();
        control.shutdown_requested.send_replace(true);
        assert!(handle.client_requested_shutdown().await);
        let (handle, control) = RelayHandle::new();
        drop(control);
        assert!(!handle.client_requested_shutdown().await);
    }

    #[tokio::test]
    async fn signal_execs_ends_with_none_when_the_relay_is_gone() {
        let (handle, control) = RelayHandle::new();
        drop(control);
        assert_eq!(handle.signal_execs(10).await, None);
    }

    #[tokio::test]
    async fn client_count_reaches_the_handle() {
        let (handle, control) = RelayHandle::new();
        let mut clients = handle.connected_clients();
        assert_eq!(*clients.borrow(), 0);
        control.clients.send_replace(2);
        clients.changed().await.unwrap();
        assert_eq!(*clients.borrow_and_update(), 2);
    }
}
