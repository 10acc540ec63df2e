//! Streaming `Write` sessions (PROTOCOL.md §9.4, CBOR mode).
//!
//! ```text
//!  H→G core.fs.request {Write {handle, offset, len}}     no reply yet
//!  H→G core.fs.data {data} …                            written in order at the running offset
//!                                                        (at the end of the file in append mode)
//!  H→G core.fs.data {h''}                               EOF
//!  G→H core.fs.response {ok:true}
//!      or {ok:false, "write length mismatch: expected N, wrote M"}   (declared len ≠ written)
//!      or {ok:false, "write: …"} at once when a chunk fails; later data gets
//!         "unknown write session: <id>" from the service
//! ```
//!
//! The dispatcher hands chunks over synchronously, so each session is a task fed by a bounded
//! queue: at most [`WRITE_QUEUE_CHUNKS`] chunks and [`WRITE_QUEUE_BYTES`] bytes wait for the disk.
//! After each chunk the driver asks [`WriteSession::room`] and, while the queue could not take
//! another full-size frame, reads nothing more from the host: the host's writes back up through
//! the relay instead of failing the session, however slow the disk. A push that still finds the
//! queue full (a caller that does not wait) fails its session with `ok:false` instead of growing
//! the agent's memory. The task writes each chunk with `pwrite` (plain `write` in append mode) on
//! a blocking worker, strictly in arrival order, and alone answers the session, so the response
//! is sent exactly once.
//!
//! Session states, as the service sees them:
//!
//! ```text
//!  Open ──push──► Open
//!   │ finish (EOF) / fail (queue overflow)   ─► Closing: the task drains what is queued
//!   │ the task fails a chunk                 ─► (task done) further data is "unknown"
//!   └ abort (client gone, shutdown)          ─► gone, no response
//! ```

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use moat_protocol::Message;
use moat_protocol::limits::MAX_FRAME_BYTES;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbound::Outbound;

use super::bulk::Grant;
use super::error::{self, FsError, Op, OpResult};
use super::handles::OpenFile;

/// Chunks one write session may have queued ahead of the disk.
pub(crate) const WRITE_QUEUE_CHUNKS: usize = 256;

/// Bytes one write session may have queued ahead of the disk.
pub(crate) const WRITE_QUEUE_BYTES: usize = 64 * 1024 * 1024;

// A full-size fs.data chunk must always fit an empty queue.
const _: () = assert!(moat_protocol::limits::MAX_FRAME_BYTES <= WRITE_QUEUE_BYTES);
const _: () = assert!(WRITE_QUEUE_BYTES <= u32::MAX as usize);

/// A chunk waiting for the disk, holding its share of the byte budget.
struct Chunk {
    /// A `core.fs.data` chunk's bytes, or a raw bulk record's payload: a slice of the frame
    /// as it was read, not a copy (it keeps that read buffer, about the frame's size, alive).
    data: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// Waits for room in one write session's queue (see `WriteSession::room`).
#[derive(Debug)]
pub struct WriteRoom {
    budget: Arc<Semaphore>,
    chunks: mpsc::Sender<Chunk>,
}

impl WriteRoom {
    /// Resolves when a queue slot and a full frame's bytes are free. A session whose task ended
    /// closes its queue (reserve fails at once) and drops what was queued (the bytes come back).
    pub async fn wait(self) {
        let Ok(_slot) = self.chunks.reserve().await else { return };
        let _bytes = self.budget.acquire_many(MAX_FRAME_BYTES as u32).await;
    }
}

/// How the service ends a session.
#[derive(Debug)]
enum End {
    /// The host's EOF: finish after the queued chunks.
    Eof,
    /// Fail now, dropping what is queued.
    Fail(FsError),
}

/// What became of a pushed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the disk.
    Queued,
    /// The queue bound was hit: the session must be failed.
    Overflowed,
    /// The session's task already ended (it failed and answered).
    Gone,
}

/// The service's side of one write session.
#[derive(Debug)]
pub(crate) struct WriteSession {
    chunks: mpsc::Sender<Chunk>,
    end: oneshot::Sender<End>,
    budget: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl WriteSession {
    /// Starts a session on `id` writing `file` from `offset`; `expected` is the declared length.
    pub(crate) fn spawn(
        id: u32,
        file: Arc<OpenFile>,
        offset: u64,
        expected: Option<u64>,
        out: Outbound,
        grant: Option<Grant>,
    ) -> WriteSession {
        let (chunks, chunk_rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
        let (end, end_rx) = oneshot::channel();
        let span = tracing::debug_span!("fs_write", id, offset, expected, bulk = grant.is_some());
        let queues = Queues { chunks: chunk_rx, end: end_rx };
        let task =
            tokio::spawn(run(id, file, offset, expected, queues, out, grant).instrument(span));
        WriteSession { chunks, end, budget: Arc::new(Semaphore::new(WRITE_QUEUE_BYTES)), task }
    }

    /// Queues a non-empty chunk without waiting.
    pub(crate) fn push(&self, data: Bytes) -> Pushed {
        if self.task.is_finished() {
            return Pushed::Gone;
        }
        let Ok(len) = u32::try_from(data.len()) else { return Pushed::Overflowed };
        let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(len) else {
            return Pushed::Overflowed;
        };
        match self.chunks.try_send(Chunk { data, _budget: permit }) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Pushed::Overflowed,
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
        }
    }

    /// `None` when the queue can take another full-size frame; otherwise a waiter that resolves
    /// once it can (or once the task has ended and nothing more will be queued).
    pub(crate) fn room(&self) -> Option<WriteRoom> {
        let bytes_short = self.budget.available_permits() < MAX_FRAME_BYTES;
        let slots_short = self.chunks.capacity() == 0;
        (!self.task.is_finished() && (bytes_short || slots_short))
            .then(|| WriteRoom { budget: Arc::clone(&self.budget), chunks: self.chunks.clone() })
    }

    /// The host's EOF: the task writes what is queued, checks the length and answers.
    pub(crate) fn finish(self) -> JoinHandle<()> {
        self.close(End::Eof)
    }

    /// Fails the session with `err`, which the task sends instead of writing more.
    pub(crate) fn fail(self, err: FsError) -> JoinHandle<()> {
        self.close(End::Fail(err))
    }

    fn close(self, end: End) -> JoinHandle<()> {
        // A send error means the task is already done; it has answered.
        let _ = self.end.send(end);
        drop(self.chunks);
        self.task
    }

    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the session without an answer (its client is gone).
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// What the task knows about the session's end.
enum Ending {
    /// Not signalled yet.
    Pending,
    /// EOF seen.
    Eof,
    /// The service dropped the session without a word: answer nothing.
    Dropped,
}

/// The task's ends of the session's queues.
struct Queues {
    chunks: mpsc::Receiver<Chunk>,
    end: oneshot::Receiver<End>,
}

async fn run(
    id: u32,
    file: Arc<OpenFile>,
    offset: u64,
    expected: Option<u64>,
    queues: Queues,
    out: Outbound,
    grant: Option<Grant>,
) {
    let Queues { mut chunks, mut end } = queues;
    if let Some(grant) = &grant
        && grant.accept().await.is_err()
    {
        return;
    }
    let result = pump(&file, offset, expected, &mut chunks, &mut end, grant.as_ref()).await;
    // Refuse further chunks before answering, so data sent after the answer is "unknown".
    chunks.close();
    let Some(result) = result else { return };
    if out.send(id, Message::FsResponse(error::response(result))).await.is_err() {
        tracing::debug!("host gone before the write's response");
    }
}

/// Writes chunks until EOF or failure; `None` if the session was dropped without an end.
async fn pump(
    file: &Arc<OpenFile>,
    offset: u64,
    expected: Option<u64>,
    chunks: &mut mpsc::Receiver<Chunk>,
    end: &mut oneshot::Receiver<End>,
    grant: Option<&Grant>,
) -> Option<OpResult> {
    let mut position = offset;
    let mut written: u64 = 0;
    let mut ending = Ending::Pending;
    loop {
        if let Ending::Pending = ending {
            match end.try_recv() {
                Ok(End::Fail(err)) => return Some(Err(err)),
                Ok(End::Eof) => ending = Ending::Eof,
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => ending = Ending::Dropped,
            }
        }
        let Some(chunk) = chunks.recv().await else { break };
        let len = chunk.data.len() as u64;
        let shared = Arc::clone(file);
        let at = position;
        let result = tokio::task::spawn_blocking(move || write_chunk(&shared, at, chunk)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Some(Err(FsError::positional(Op::Write)(err))),
            Err(source) => return Some(Err(FsError::Task { op: Op::Write, source })),
        }
        position = position.saturating_add(len);
        written = written.saturating_add(len);
        if let Some(grant) = grant {
            grant.written(written).await;
        }
    }
    // The queue is closed and drained: the service has ended the session.
    match ending {
        Ending::Eof => {}
        Ending::Dropped => return None,
        Ending::Pending => match end.await {
            Ok(End::Eof) => {}
            Ok(End::Fail(err)) => return Some(Err(err)),
            Err(_) => return None,
        },
    }
    Some(finish(file, expected, written))
}

/// The EOF checks: the declared length, then a flush.
fn finish(file: &OpenFile, expected: Option<u64>, written: u64) -> OpResult {
    if let Some(expected) = expected
        && expected != written
    {
        return Err(FsError::LengthMismatch { expected, written });
    }
    (&file.file).flush().map_err(FsError::io(Op::Flush))?;
    Ok(None)
}

/// Writes one chunk at `at`, or at the end of the file in append mode. Its budget is released
/// when the chunk drops here, after the write.
fn write_chunk(file: &OpenFile, at: u64, chunk: Chunk) -> io::Result<()> {
    if file.append {
        (&file.file).write_all(&chunk.data)
    } else {
        file.file.write_all_at(&chunk.data, at)
    }
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsResponse};

    use super::*;
    use crate::fs::testing::{Harness, pattern};

    const ID: u32 = 20;
    const MIB: usize = 1024 * 1024;

    fn write_create() -> FsOpenOptions {
        FsOpenOptions { write: true, create: true, truncate: true, ..FsOpenOptions::default() }
    }

    /// Streams `content` in `chunk`-sized pieces on `id`, then EOF.
    fn stream(h: &mut Harness, id: u32, content: &[u8], chunk: usize) {
        for piece in content.chunks(chunk) {
            h.fs.data(id, piece.to_vec());
        }
        h.fs.data(id, Vec::new());
    }

    #[tokio::test]
    async fn a_writer_that_waits_for_room_never_overflows_the_queue() {
        let mut h = Harness::new();
        let handle = h.open(1, "/big", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: None });
        // 30 full-size chunks: 90 MiB, past the 64 MiB queue, pushed as fast as the
        // driver would, waiting only where `write_room` says so.
        let chunk = vec![7u8; moat_protocol::limits::FS_CHUNK_BYTES];
        let mut waited = 0;
        for _ in 0..30 {
            h.fs.data(ID, chunk.clone());
            if let Some(room) = h.fs.write_room(ID) {
                waited += 1;
                room.wait().await;
            }
        }
        h.fs.data(ID, Vec::new());
        let response = h.response(ID).await;
        assert!(response.ok, "{response:?}");
        assert!(waited > 0, "the queue never filled: the test proves nothing");
        let len = std::fs::metadata(h.tmp.path().join("big")).unwrap().len();
        assert_eq!(len, 30 * moat_protocol::limits::FS_CHUNK_BYTES as u64);
    }

    #[tokio::test]
    async fn ten_mib_write_with_declared_len_lands_intact() {
        let mut h = Harness::new();
        let content = pattern(10 * MIB);
        let handle = h.open(1, "/big", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) });
        stream(&mut h, ID, &content, 3 * MIB);
        assert_eq!(h.response(ID).await, FsResponse::ok(None));
        assert!(std::fs::read(h.tmp.path().join("big")).unwrap() == content, "content differs");
    }

    #[tokio::test]
    async fn ten_mib_write_without_len_lands_intact() {
        let mut h = Harness::new();
        let content = pattern(10 * MIB);
        let handle = h.open(1, "/big", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: None });
        stream(&mut h, ID, &content, MIB + 7);
        assert_eq!(h.response(ID).await, FsResponse::ok(None));
        assert!(std::fs::read(h.tmp.path().join("big")).unwrap() == content, "content differs");
    }

    #[tokio::test]
    async fn write_at_offset_overwrites_in_place() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"0123456789").unwrap();
        let opts = FsOpenOptions { write: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/f", opts).await;
        h.request(ID, FsOp::Write { handle, offset: 3, len: Some(4) });
        stream(&mut h, ID, b"abcd", 3);
        assert_eq!(h.response(ID).await, FsResponse::ok(None));
        assert_eq!(std::fs::read(h.tmp.path().join("f")).unwrap(), b"012abcd789");
    }

    #[tokio::test]
    async fn append_mode_writes_at_the_end() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"head-").unwrap();
        let opts = FsOpenOptions { append: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/f", opts).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: None });
        stream(&mut h, ID, b"tail", 2);
        assert_eq!(h.response(ID).await, FsResponse::ok(None));
        assert_eq!(std::fs::read(h.tmp.path().join("f")).unwrap(), b"head-tail");
    }

    #[tokio::test]
    async fn short_write_fails_with_length_mismatch() {
        let mut h = Harness::new();
        let handle = h.open(1, "/f", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: Some(10) });
        stream(&mut h, ID, b"1234567", 4);
        let resp = h.response(ID).await;
        assert_eq!(resp, FsResponse::err("write length mismatch: expected 10, wrote 7"));
    }

    #[tokio::test]
    async fn long_write_is_checked_only_at_eof() {
        let mut h = Harness::new();
        let handle = h.open(1, "/f", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: Some(2) });
        stream(&mut h, ID, b"12345", 5);
        let resp = h.response(ID).await;
        assert_eq!(resp, FsResponse::err("write length mismatch: expected 2, wrote 5"));
        assert_eq!(std::fs::read(h.tmp.path().join("f")).unwrap(), b"12345");
    }

    #[tokio::test]
    async fn failed_chunk_answers_at_once_and_later_data_is_unknown() {
        let mut h = Harness::new();
        let fifo = h.tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let opts = FsOpenOptions { read: true, write: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/fifo", opts).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: None });
        h.fs.data(ID, b"x".to_vec());
        assert_eq!(h.response(ID).await, FsResponse::err("seek: Illegal seek (os error 29)"));
        h.fs.data(ID, b"y".to_vec());
        assert_eq!(h.response(ID).await, FsResponse::err(format!("unknown write session: {ID}")));
        h.fs.data(ID, Vec::new());
        assert_eq!(h.response(ID).await, FsResponse::err(format!("unknown write session: {ID}")));
    }

    #[tokio::test]
    async fn flood_past_the_queue_bound_fails_the_session() {
        let mut h = Harness::new();
        let handle = h.open(1, "/f", write_create()).await;
        h.request(ID, FsOp::Write { handle, offset: 0, len: None });
        // The writer task cannot run between these synchronous calls, so the queue only grows.
        let chunk = vec![7u8; 3 * MIB];
        for _ in 0..=(WRITE_QUEUE_BYTES / chunk.len()) {
            h.fs.data(ID, chunk.clone());
        }
        let resp = h.response(ID).await;
        let expected = format!(
            "write: more than {WRITE_QUEUE_BYTES} bytes or {WRITE_QUEUE_CHUNKS} chunks queued ahead of the disk"
        );
        assert_eq!(resp, FsResponse::err(expected));
        h.fs.data(ID, Vec::new());
        assert_eq!(h.response(ID).await, FsResponse::err(format!("unknown write session: {ID}")));
    }

    #[tokio::test]
    async fn write_on_a_read_only_handle_fails_without_a_session() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"").unwrap();
        let opts = FsOpenOptions { read: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/f", opts).await;
        let resp = h.call(ID, FsOp::Write { handle, offset: 0, len: None }).await;
        assert_eq!(resp.error, Some(format!("write: handle {handle} is not open for writing")));
        h.fs.data(ID, b"z".to_vec());
        assert_eq!(h.response(ID).await, FsResponse::err(format!("unknown write session: {ID}")));
    }

    #[tokio::test]
    async fn data_without_a_session_is_unknown() {
        let mut h = Harness::new();
        h.fs.data(77, b"stray".to_vec());
        assert_eq!(h.response(77).await, FsResponse::err("unknown write session: 77"));
    }
}
