//! A session's stdin: the bounded queue between the dispatcher (which pushes `core.exec.stdin`
//! payloads synchronously) and the session's writer task (which writes them into the child's
//! pipe or PTY master, in order). The queue holds at most [`super::MAX_STDIN_QUEUE_BYTES`]
//! not-yet-written bytes; a chunk that would exceed it is rejected whole, so the host learns
//! which data was dropped.
//!
//! [`StdinState`] is the sans-IO core; [`StdinQueue`] wraps it with a lock and a wake-up, and
//! [`write_pipe`] / [`write_pty`] are the thin drivers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use moat_protocol::payload::exec::ExecStdinError;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};

use super::failure;

/// Why a stdin payload was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Data arrived after the EOF marker.
    AfterEof,
    /// Queuing the chunk would exceed the limit.
    Full {
        /// Bytes already waiting.
        queued_bytes: usize,
        /// Size of the rejected chunk.
        chunk_bytes: usize,
    },
}

/// The next thing for the writer to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StdinItem {
    /// Write these bytes.
    Data(Vec<u8>),
    /// Close the child's stdin (pipe mode).
    Eof,
}

/// The queue's state. Transitions: `Open` (accepting) --empty push--> `eof = true` (draining,
/// rejecting data) --last item popped--> `Eof` handed to the writer once.
#[derive(Debug, Default)]
pub(crate) struct StdinState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes pushed and not yet reported written (queued plus the chunk being written).
    pending_bytes: usize,
    /// The host sent EOF.
    eof: bool,
    /// The EOF item was handed to the writer.
    eof_taken: bool,
}

impl StdinState {
    /// Queues `data`; empty data is the EOF marker (a repeated EOF is accepted and ignored).
    pub(crate) fn push(&mut self, data: Vec<u8>, limit_bytes: usize) -> Result<(), Rejected> {
        if data.is_empty() {
            self.eof = true;
            return Ok(());
        }
        if self.eof {
            return Err(Rejected::AfterEof);
        }
        if self.pending_bytes + data.len() > limit_bytes {
            return Err(Rejected::Full {
                queued_bytes: self.pending_bytes,
                chunk_bytes: data.len(),
            });
        }
        self.pending_bytes += data.len();
        self.chunks.push_back(data);
        Ok(())
    }

    /// The next item, if any. Data stays counted until [`StdinState::written`].
    pub(crate) fn pop(&mut self) -> Option<StdinItem> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Some(StdinItem::Data(chunk));
        }
        if self.eof && !self.eof_taken {
            self.eof_taken = true;
            return Some(StdinItem::Eof);
        }
        None
    }

    /// A popped chunk of `len` bytes left the queue (written, or failed to write).
    pub(crate) fn written(&mut self, len: usize) {
        self.pending_bytes = self.pending_bytes.saturating_sub(len);
    }
}

/// The shared queue: pushed by the dispatcher, drained by the writer task.
#[derive(Debug)]
pub(crate) struct StdinQueue {
    state: Mutex<StdinState>,
    wake: Notify,
    limit_bytes: usize,
    /// Whether written bytes are acknowledged to the host (generation-10 sessions).
    acks: bool,
    /// Bytes written into the child (or dropped by a failed write) since the session started.
    written_total: AtomicU64,
}

impl StdinQueue {
    /// An empty queue holding at most `limit_bytes` unwritten bytes; with `acks`, the writer
    /// reports progress for `core.exec.stdin.ack`.
    pub(crate) fn new(limit_bytes: usize, acks: bool) -> StdinQueue {
        StdinQueue {
            state: Mutex::default(),
            wake: Notify::new(),
            limit_bytes,
            acks,
            written_total: AtomicU64::new(0),
        }
    }

    /// Cumulative stdin bytes that left the queue into the child.
    pub(crate) fn written_total(&self) -> u64 {
        self.written_total.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, StdinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a payload (empty = EOF) and wakes the writer.
    pub(crate) fn push(&self, data: Vec<u8>) -> Result<(), Rejected> {
        self.lock().push(data, self.limit_bytes)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Drops everything not yet written (the session is over).
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.chunks.clear();
        state.pending_bytes = 0;
    }

    /// The limit this queue enforces.
    pub(crate) fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Waits for the next item. Only one task may call this.
    async fn next(&self) -> StdinItem {
        loop {
            if let Some(item) = self.lock().pop() {
                return item;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check above
            // and this await is not missed.
            self.wake.notified().await;
        }
    }

    fn written(&self, len: usize) {
        self.lock().written(len);
        self.written_total.fetch_add(len as u64, Ordering::AcqRel);
    }
}

/// What the writer tells the session task, which sends it in order with the session's other
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A write into the child failed: send `core.exec.stdin.error`.
    Error(ExecStdinError),
    /// More stdin reached the child: send `core.exec.stdin.ack` with the cumulative count
    /// ([`StdinQueue::written_total`], read when it is sent, so a dropped notice loses nothing
    /// a later one does not carry). Generation-10 sessions only.
    Written,
}

/// Reports a stdin problem to the session task. Dropped (and logged) when the small backlog is
/// full.
pub(crate) fn report(notices: &mpsc::Sender<Notice>, error: ExecStdinError) {
    if let Err(err) = notices.try_send(Notice::Error(error)) {
        tracing::warn!(%err, "dropping an exec.stdin.error: backlog full or session over");
    }
}

/// Records `len` bytes written into the child and, when the session acknowledges stdin, tells
/// the session task. A full backlog drops the notice: the ones queued are sent later and carry
/// the new total.
fn written(queue: &StdinQueue, len: usize, notices: &mpsc::Sender<Notice>) {
    queue.written(len);
    if queue.acks {
        let _backlog_full_or_over = notices.try_send(Notice::Written);
    }
}

/// Pipe-mode writer: writes queued chunks in order and closes the pipe at EOF. A failed write
/// (the child closed its stdin: `EPIPE`) is reported and the chunk dropped; later chunks are
/// still tried, each reporting its own failure.
pub(crate) async fn write_pipe(
    queue: &StdinQueue,
    mut pipe: pipe::Sender,
    notices: mpsc::Sender<Notice>,
) {
    loop {
        match queue.next().await {
            StdinItem::Data(chunk) => {
                let result = pipe.write_all(&chunk).await;
                written(queue, chunk.len(), &notices);
                if let Err(err) = result {
                    report(&notices, failure::stdin_write_error(&err));
                }
            }
            StdinItem::Eof => return,
        }
    }
}

/// PTY-mode writer: writes queued chunks into the master. The queue never yields EOF in PTY
/// mode (the manager does not push empty payloads), so this runs until the session ends.
pub(crate) async fn write_pty(
    queue: &StdinQueue,
    master: &AsyncFd<OwnedFd>,
    notices: mpsc::Sender<Notice>,
) {
    loop {
        match queue.next().await {
            StdinItem::Data(chunk) => {
                let result = write_master(master, &chunk).await;
                written(queue, chunk.len(), &notices);
                if let Err(err) = result {
                    report(&notices, failure::stdin_write_error(&err));
                }
            }
            StdinItem::Eof => return,
        }
    }
}

/// Writes all of `data` into a non-blocking PTY master.
async fn write_master(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(written)) => data = &data[written..],
            Ok(Err(err)) => return Err(err),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_pop_in_push_order() {
        let mut state = StdinState::default();
        state.push(b"a".to_vec(), 10).unwrap();
        state.push(b"b".to_vec(), 10).unwrap();
        assert_eq!(state.pop(), Some(StdinItem::Data(b"a".to_vec())));
        assert_eq!(state.pop(), Some(StdinItem::Data(b"b".to_vec())));
        assert_eq!(state.pop(), None);
    }

    #[test]
    fn eof_comes_after_queued_data_and_only_once() {
        let mut state = StdinState::default();
        state.push(b"a".to_vec(), 10).unwrap();
        state.push(Vec::new(), 10).unwrap();
        assert_eq!(state.pop(), Some(StdinItem::Data(b"a".to_vec())));
        assert_eq!(state.pop(), Some(StdinItem::Eof));
        assert_eq!(state.pop(), None);
    }

    #[test]
    fn data_after_eof_is_rejected() {
        let mut state = StdinState::default();
        state.push(Vec::new(), 10).unwrap();
        assert_eq!(state.push(b"late".to_vec(), 10), Err(Rejected::AfterEof));
    }

    #[test]
    fn repeated_eof_is_accepted() {
        let mut state = StdinState::default();
        state.push(Vec::new(), 10).unwrap();
        assert_eq!(state.push(Vec::new(), 10), Ok(()));
    }

    #[test]
    fn chunk_over_the_limit_is_rejected_whole() {
        let mut state = StdinState::default();
        state.push(vec![0; 8], 10).unwrap();
        let rejected = state.push(vec![0; 3], 10);
        assert_eq!(rejected, Err(Rejected::Full { queued_bytes: 8, chunk_bytes: 3 }));
        assert_eq!(state.pop(), Some(StdinItem::Data(vec![0; 8])));
        assert_eq!(state.pop(), None);
    }

    #[test]
    fn bytes_being_written_still_count_until_written() {
        let mut state = StdinState::default();
        state.push(vec![0; 8], 10).unwrap();
        let _in_flight = state.pop();
        assert!(state.push(vec![0; 3], 10).is_err());
        state.written(8);
        assert_eq!(state.push(vec![0; 3], 10), Ok(()));
    }
}
