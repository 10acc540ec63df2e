//! The agent's filesystem service: `core.fs.request` and `core.fs.data` in, `core.fs.data` and
//! `core.fs.response` out (PROTOCOL.md §9).
//!
//! ```text
//!  dispatcher ──request(id, v, FsRequest)──► FsService ──┬─ one-shot op ─► spawn_blocking ─► fs.response
//!             ──data(id, bytes)───────────►     │        ├─ Read  ─► read task ─► fs.data… ─► fs.response
//!             ──release_range / abort_all─►     │        └─ Write ─► write task ◄─ chunks ─► fs.response
//!                                               └─ HandleTable (Arc<Mutex>), shared with the workers
//! ```
//!
//! The service is called from the dispatcher's thread and never blocks it: filesystem work runs on
//! `spawn_blocking` workers, and every answer goes through [`Outbound`] from a spawned task. Every
//! request ends with exactly one `core.fs.response`, except `Write`, which opens a session that
//! [`FsService::data`] feeds and whose EOF (an empty chunk) produces the response. Failures are the
//! reference's strings (`"stat: No such file or directory (os error 2)"`), produced in
//! `error.rs`.
//!
//! Submodules, one concept each: `root` (where request paths land), `ops` (path operations),
//! `handles` (the handle table and its slot ownership), `handle_ops` (one-shot handle operations),
//! `attrs` (`SetStat`/`FSetStat`), `entry` (`FsEntryInfo`), `identity` (creating as a user),
//! `read` and `write` (the streams), `error` (failures and their wire text).
//!
//! Raw bulk (generation 8, `bulk`): a `Read` or `Write` carrying an offer is accepted with
//! `core.bulk.accepted` and then carried by raw records under credit; [`FsService::bulk_record`],
//! [`FsService::bulk_control`] route the host's records, credits, finishes and cancels to it.

#![forbid(unsafe_code)]

mod attrs;
mod bulk;
mod entry;
mod error;
mod handle_ops;
mod handles;
mod identity;
mod ops;
mod read;
mod root;
#[cfg(test)]
mod testing;
mod write;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish};
use moat_protocol::payload::fs::{FsOp, FsRequest};
use moat_protocol::relay::IdRange;
use moat_protocol::{BulkRecord, Message};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbound::Outbound;

use self::bulk::{Breach, Grant, ReadCredit, WriteFlow};
use self::error::{FsError, Op, OpResult};
use self::handles::{Access, HandleTable};
use self::root::Root;
pub use self::write::WriteRoom;
use self::write::{Pushed, WRITE_QUEUE_BYTES, WRITE_QUEUE_CHUNKS, WriteSession};

/// A stream in flight on a correlation id.
#[derive(Debug)]
enum Stream {
    /// A `Read` sending chunks.
    Read(JoinHandle<()>),
    /// A `Write` accepting chunks.
    Write(WriteSession),
    /// A `Write` whose end was signalled (EOF or overflow): its task drains the queue and answers;
    /// further data for it is "unknown".
    Closing(JoinHandle<()>),
    /// A bulk `Read` sending records within the host's credit.
    BulkRead(JoinHandle<()>, ReadCredit),
    /// A bulk `Write` taking records.
    BulkWrite(WriteSession, WriteFlow),
}

/// Bulk ids remembered after they end, so late records, credits and cancels for them are
/// discarded quietly (PROTOCOL.md §11.2) rather than answered.
const FINISHED_BULK_IDS: usize = 256;

/// A host bulk control message on a bulk operation's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkControl {
    /// `core.bulk.credit`.
    Credit(BulkCredit),
    /// `core.bulk.finish`.
    Finish(BulkFinish),
    /// `core.bulk.cancel`.
    Cancel(BulkCancel),
}

/// A bulk frame for an id with no bulk operation, never had one recently: the dispatcher answers
/// `core.error invalid_session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no raw bulk transfer is open on id {0}")]
pub struct NoBulkTransfer(pub u32);

impl Stream {
    fn is_finished(&self) -> bool {
        match self {
            Stream::Read(task) | Stream::Closing(task) | Stream::BulkRead(task, _) => {
                task.is_finished()
            }
            Stream::Write(session) | Stream::BulkWrite(session, _) => session.is_finished(),
        }
    }

    fn is_bulk(&self) -> bool {
        matches!(self, Stream::BulkRead(..) | Stream::BulkWrite(..))
    }

    fn abort(self) {
        match self {
            Stream::Read(task) | Stream::Closing(task) | Stream::BulkRead(task, _) => task.abort(),
            Stream::Write(session) | Stream::BulkWrite(session, _) => session.abort(),
        }
    }
}

/// The filesystem service of one agent.
#[derive(Debug)]
pub struct FsService {
    root: Arc<Root>,
    handles: HandleTable,
    out: Outbound,
    streams: HashMap<u32, Stream>,
    /// Recently ended bulk ids, oldest first, at most [`FINISHED_BULK_IDS`].
    finished_bulk: VecDeque<u32>,
}

impl FsService {
    /// A service whose request paths are relative to `root`.
    ///
    /// `root` is `/` in production, where request paths are used exactly as given. Tests pass a
    /// temporary directory: every request path is then resolved as
    /// `root.join(path.trim_start_matches('/'))`, and `RealPath` answers relative to it.
    /// Answers are queued on `out`.
    pub fn new(root: PathBuf, out: Outbound) -> FsService {
        FsService {
            root: Arc::new(Root::new(root)),
            handles: HandleTable::new(),
            out,
            streams: HashMap::new(),
            finished_bulk: VecDeque::new(),
        }
    }

    /// Handles `core.fs.request` on `id` (`v` is the envelope generation, for diagnostics).
    ///
    /// Returns at once; the work runs on blocking workers and must be called inside a tokio
    /// runtime. Every op except `Write` ends with exactly one `core.fs.response` on `id` (`Read`
    /// first sends `core.fs.data` chunks of at most 3 MiB). `Write` opens a session that
    /// [`FsService::data`] feeds. A request with a raw-bulk offer gets `ok:false` "raw bulk
    /// transfers are not supported by this agent".
    pub fn request(&mut self, id: u32, v: u8, request: FsRequest) {
        self.prune();
        tracing::debug!(id, v, op = request.op.name(), "fs request");
        if let Some(offer) = request.bulk {
            return match bulk::accept(v, &request.op, &offer) {
                Ok(accepted) => self.start_bulk(id, request.op, accepted),
                Err(err) => self.reply(id, Err(err)),
            };
        }
        let root = Arc::clone(&self.root);
        let handles = self.handles.clone();
        match request.op {
            FsOp::Read { handle, offset, len } => self.start_read(id, handle, offset, len),
            FsOp::Write { handle, offset, len } => self.start_write(id, handle, offset, len),
            FsOp::RealPath { path } => {
                self.blocking(id, Op::RealPath, move || ops::real_path(&root, &path));
            }
            FsOp::Stat { path, follow_symlink } => {
                self.blocking(id, Op::Stat, move || ops::stat(&root, &path, follow_symlink));
            }
            FsOp::SetStat { path, follow_symlink, attrs } => {
                self.blocking(id, Op::SetStat, move || {
                    ops::set_stat(&root, &path, follow_symlink, attrs)
                })
            }
            FsOp::List { path } => self.blocking(id, Op::ReadDir, move || ops::list(&root, &path)),
            FsOp::ReadLink { path } => {
                self.blocking(id, Op::ReadLink, move || ops::read_link(&root, &path));
            }
            FsOp::Symlink { target, link_path, user } => {
                self.blocking(id, Op::Symlink, move || {
                    ops::symlink(&root, &target, &link_path, user.as_deref())
                })
            }
            FsOp::Mkdir { path, mode, user } => self
                .blocking(id, Op::Mkdir, move || ops::mkdir(&root, &path, mode, user.as_deref())),
            FsOp::Remove { path } => {
                self.blocking(id, Op::Remove, move || ops::remove(&root, &path))
            }
            FsOp::RemoveDir { path, recursive } => {
                self.blocking(id, Op::RemoveDir, move || ops::remove_dir(&root, &path, recursive));
            }
            FsOp::Copy { src, dst } => {
                self.blocking(id, Op::Copy, move || ops::copy(&root, &src, &dst))
            }
            FsOp::Rename { src, dst } => {
                self.blocking(id, Op::Rename, move || ops::rename(&root, &src, &dst));
            }
            FsOp::OpenFile { path, options } => self.blocking(id, Op::Open, move || {
                handle_ops::open_file(&root, &handles, id, &path, &options)
            }),
            FsOp::OpenDir { path } => {
                self.blocking(id, Op::OpenDir, move || {
                    handle_ops::open_dir(&root, &handles, id, &path)
                });
            }
            FsOp::CloseHandle { handle } => {
                self.blocking(id, Op::Close, move || handle_ops::close(&handles, id, handle));
            }
            FsOp::ReadDir { handle, limit } => self.blocking(id, Op::ReadDir, move || {
                handle_ops::read_dir(&handles, id, handle, limit)
            }),
            FsOp::FStat { handle } => {
                self.blocking(id, Op::FStat, move || handle_ops::fstat(&handles, id, handle));
            }
            FsOp::FSetStat { handle, attrs } => self.blocking(id, Op::FSetStat, move || {
                handle_ops::fset_stat(&handles, id, handle, attrs)
            }),
        }
    }

    /// Handles `core.fs.data` on `id`: a chunk of the open write session, or (empty `data`) its
    /// EOF, after which the session answers. Without an open session on `id` (never opened,
    /// failed, or already at EOF) the answer is `ok:false` `"unknown write session: <id>"`.
    pub fn data(&mut self, id: u32, data: Vec<u8>) {
        let session = match self.streams.remove(&id) {
            Some(Stream::Write(session)) if !session.is_finished() => session,
            Some(Stream::BulkWrite(session, _)) => {
                session.abort();
                self.remember_bulk(id);
                return bulk::cancel(id, Op::Write, Breach::CborAfterAcceptance, &self.out);
            }
            Some(other @ (Stream::Read(_) | Stream::Closing(_) | Stream::BulkRead(..))) => {
                self.streams.insert(id, other);
                return self.reply(id, Err(FsError::UnknownWriteSession(id)));
            }
            Some(Stream::Write(_)) | None => {
                return self.reply(id, Err(FsError::UnknownWriteSession(id)));
            }
        };
        if data.is_empty() {
            self.streams.insert(id, Stream::Closing(session.finish()));
            return;
        }
        match session.push(data.into()) {
            Pushed::Queued => {
                self.streams.insert(id, Stream::Write(session));
            }
            Pushed::Overflowed => {
                tracing::warn!(id, "write session overflowed its queue; failing it");
                let backlog = FsError::WriteBacklog {
                    max_bytes: WRITE_QUEUE_BYTES,
                    max_chunks: WRITE_QUEUE_CHUNKS,
                };
                self.streams.insert(id, Stream::Closing(session.fail(backlog)));
            }
            Pushed::Gone => self.reply(id, Err(FsError::UnknownWriteSession(id))),
        }
    }

    /// After a `core.fs.data` on `id`: a waiter to await before reading the next frame when that
    /// write session's queue could not take another full-size chunk (see
    /// `WriteSession::room`); `None` otherwise.
    pub fn write_room(&self, id: u32) -> Option<WriteRoom> {
        match self.streams.get(&id) {
            Some(Stream::Write(session) | Stream::BulkWrite(session, _)) => session.room(),
            _ => None,
        }
    }

    /// The relay client owning `range` is gone: closes the handles opened from its ids and aborts
    /// its streams without answering.
    pub fn release_range(&mut self, range: IdRange) {
        let closed = self.handles.release(range);
        let doomed: Vec<u32> =
            self.streams.keys().copied().filter(|id| range.contains(*id)).collect();
        for id in &doomed {
            if let Some(stream) = self.streams.remove(id) {
                stream.abort();
            }
        }
        tracing::debug!(
            range.start,
            range.end_exclusive,
            closed,
            aborted = doomed.len(),
            "fs range released"
        );
    }

    /// Shutdown: aborts every stream and closes every handle.
    pub fn abort_all(&mut self) {
        for (_, stream) in self.streams.drain() {
            stream.abort();
        }
        let closed = self.handles.clear();
        tracing::debug!(closed, "fs service stopped");
    }

    /// Streams in flight (reads, and writes until they have answered), for diagnostics.
    pub fn active_streams(&self) -> usize {
        self.streams.values().filter(|stream| !stream.is_finished()).count()
    }

    fn start_read(&mut self, id: u32, handle: u64, offset: u64, len: Option<u64>) {
        if self.streams.contains_key(&id) {
            return self.reply(id, Err(FsError::StreamInFlight { op: Op::Read, id }));
        }
        match self.handles.file(id, handle, Access::Read) {
            Ok(file) => {
                let task = read::spawn(id, file, offset, len, self.out.clone());
                self.streams.insert(id, Stream::Read(task));
            }
            Err(err) => self.reply(id, Err(FsError::handle(Op::Read)(err))),
        }
    }

    fn start_write(&mut self, id: u32, handle: u64, offset: u64, len: Option<u64>) {
        if self.streams.contains_key(&id) {
            return self.reply(id, Err(FsError::StreamInFlight { op: Op::Write, id }));
        }
        match self.handles.file(id, handle, Access::Write) {
            Ok(file) => {
                let session = WriteSession::spawn(id, file, offset, len, self.out.clone(), None);
                self.streams.insert(id, Stream::Write(session));
            }
            Err(err) => self.reply(id, Err(FsError::handle(Op::Write)(err))),
        }
    }

    /// Runs `job` on a blocking worker and answers `id` with its result.
    fn blocking<F>(&self, id: u32, op: Op, job: F)
    where
        F: FnOnce() -> OpResult + Send + 'static,
    {
        let out = self.out.clone();
        let span = tracing::debug_span!("fs_op", id, op = op.as_str());
        tokio::spawn(
            async move {
                let result = tokio::task::spawn_blocking(job)
                    .await
                    .unwrap_or_else(|source| Err(FsError::Task { op, source }));
                send_response(&out, id, result).await;
            }
            .instrument(span),
        );
    }

    /// Answers `id` with an outcome known already.
    fn reply(&self, id: u32, result: OpResult) {
        let out = self.out.clone();
        tokio::spawn(async move { send_response(&out, id, result).await });
    }

    /// Forgets streams that have ended (bulk ones are remembered as finished).
    fn prune(&mut self) {
        let ended: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, stream)| stream.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if self.streams.remove(&id).is_some_and(|stream| stream.is_bulk()) {
                self.remember_bulk(id);
            }
        }
    }

    fn remember_bulk(&mut self, id: u32) {
        if self.finished_bulk.len() >= FINISHED_BULK_IDS {
            self.finished_bulk.pop_front();
        }
        self.finished_bulk.push_back(id);
    }

    /// Starts a bulk `Read` or `Write` that `accepted` answers.
    fn start_bulk(&mut self, id: u32, op: FsOp, accepted: BulkAccepted) {
        let (handle, offset, len, access) = match op {
            FsOp::Read { handle, offset, len } => (handle, offset, len, Access::Read),
            FsOp::Write { handle, offset, len } => (handle, offset, len, Access::Write),
            // `bulk::accept` refuses every other op.
            _ => return self.reply(id, Err(FsError::BulkNotAStream)),
        };
        let op = if access == Access::Read { Op::Read } else { Op::Write };
        if self.streams.contains_key(&id) {
            return self.reply(id, Err(FsError::StreamInFlight { op, id }));
        }
        let file = match self.handles.file(id, handle, access) {
            Ok(file) => file,
            Err(err) => return self.reply(id, Err(FsError::handle(op)(err))),
        };
        let out = self.out.clone();
        let stream = if access == Access::Read {
            let (task, credit) = bulk::spawn_read(id, file, offset, len, accepted, out);
            Stream::BulkRead(task, credit)
        } else {
            let (flow, limit) = WriteFlow::new(&accepted);
            let grant = Grant { id, limit, out: out.clone(), accepted };
            let session = WriteSession::spawn(id, file, offset, len, out, Some(grant));
            Stream::BulkWrite(session, flow)
        };
        self.streams.insert(id, stream);
    }

    /// A raw bulk record from the host on `record.id`.
    pub fn bulk_record(&mut self, record: BulkRecord) -> Result<(), NoBulkTransfer> {
        let id = record.id;
        match self.streams.remove(&id) {
            Some(Stream::BulkWrite(session, mut flow)) => {
                if let Err(breach) = flow.record(&record) {
                    session.abort();
                    self.remember_bulk(id);
                    bulk::cancel(id, Op::Write, breach, &self.out);
                    return Ok(());
                }
                // The payload is queued as the slice of the frame it came in: no copy.
                match session.push(record.payload) {
                    Pushed::Queued => {
                        self.streams.insert(id, Stream::BulkWrite(session, flow));
                    }
                    Pushed::Overflowed => {
                        let backlog = FsError::WriteBacklog {
                            max_bytes: WRITE_QUEUE_BYTES,
                            max_chunks: WRITE_QUEUE_CHUNKS,
                        };
                        self.streams.insert(id, Stream::Closing(session.fail(backlog)));
                    }
                    Pushed::Gone => self.remember_bulk(id),
                }
                Ok(())
            }
            Some(Stream::BulkRead(task, _)) => {
                task.abort();
                self.remember_bulk(id);
                bulk::cancel(id, Op::Read, Breach::RecordOnRead, &self.out);
                Ok(())
            }
            other => self.not_bulk(id, other),
        }
    }

    /// A host bulk control message on `id`.
    pub fn bulk_control(&mut self, id: u32, control: BulkControl) -> Result<(), NoBulkTransfer> {
        match (self.streams.remove(&id), control) {
            (Some(Stream::BulkRead(task, credit)), BulkControl::Credit(grant)) => {
                match credit.credit(&grant) {
                    Ok(()) => {
                        self.streams.insert(id, Stream::BulkRead(task, credit));
                    }
                    Err(breach) => {
                        task.abort();
                        self.remember_bulk(id);
                        bulk::cancel(id, Op::Read, breach, &self.out);
                    }
                }
            }
            (Some(Stream::BulkWrite(session, flow)), BulkControl::Finish(finish)) => {
                match flow.finish(&finish) {
                    Ok(()) => {
                        self.streams.insert(id, Stream::Closing(session.finish()));
                        self.remember_bulk(id);
                    }
                    Err(breach) => {
                        session.abort();
                        self.remember_bulk(id);
                        bulk::cancel(id, Op::Write, breach, &self.out);
                    }
                }
            }
            (
                Some(stream @ (Stream::BulkRead(..) | Stream::BulkWrite(..))),
                BulkControl::Cancel(c),
            ) => {
                let op = if matches!(stream, Stream::BulkRead(..)) { Op::Read } else { Op::Write };
                stream.abort();
                self.remember_bulk(id);
                self.reply(id, Err(FsError::BulkCancelled { op, message: c.message }));
            }
            (Some(stream @ Stream::BulkRead(..)), BulkControl::Finish(_)) => {
                stream.abort();
                self.remember_bulk(id);
                bulk::cancel(id, Op::Read, Breach::FinishOnRead, &self.out);
            }
            (Some(Stream::BulkWrite(session, _)), BulkControl::Credit(grant)) => {
                session.abort();
                self.remember_bulk(id);
                let breach = Breach::WrongFlow {
                    what: "credit",
                    kind: grant.kind,
                    flow: grant.flow,
                    expected: 2,
                };
                bulk::cancel(id, Op::Write, breach, &self.out);
            }
            (other, _) => return self.not_bulk(id, other),
        }
        Ok(())
    }

    /// A bulk frame for `id`, which has `stream` (put back) and no bulk operation: discarded
    /// when a bulk operation on it ended recently or it is closing, refused otherwise.
    fn not_bulk(&mut self, id: u32, stream: Option<Stream>) -> Result<(), NoBulkTransfer> {
        let closing = matches!(stream, Some(Stream::Closing(_)));
        if let Some(stream) = stream {
            self.streams.insert(id, stream);
        }
        if closing || self.finished_bulk.contains(&id) {
            tracing::debug!(id, "discarding a late bulk frame");
            return Ok(());
        }
        Err(NoBulkTransfer(id))
    }
}

async fn send_response(out: &Outbound, id: u32, result: OpResult) {
    if let Err(err) = &result {
        tracing::debug!(id, %err, "fs op failed");
    }
    if out.send(id, Message::FsResponse(error::response(result))).await.is_err() {
        tracing::debug!(id, "host gone before the fs response");
    }
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::bulk::BulkOffer;
    use moat_protocol::payload::fs::{FsEntryKind, FsOpenOptions, FsResponse, FsResponseData};
    use moat_protocol::relay::Slot;

    use super::testing::{self, Harness, TEST_GENERATION, pattern};
    use super::*;

    const SLOT0: u32 = 1;
    const SLOT1: u32 = 33_554_432;

    fn read_only() -> FsOpenOptions {
        FsOpenOptions { read: true, ..FsOpenOptions::default() }
    }

    fn raise_fd_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let want = hard.min(8192);
        assert!(want >= 2048, "the test needs RLIMIT_NOFILE ≥ 2048, hard limit is {hard}");
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }

    #[tokio::test]
    async fn one_shot_op_answers_on_its_id() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let resp = h.call(7, FsOp::Stat { path: "/f".into(), follow_symlink: true }).await;
        let Some(FsResponseData::Stat(info)) = resp.data else { panic!("{resp:?}") };
        assert_eq!((info.path.as_str(), info.kind, info.size), ("/f", FsEntryKind::File, 3));
    }

    #[tokio::test]
    async fn missing_path_error_reaches_the_wire_verbatim() {
        let mut h = Harness::new();
        let resp = h.call(7, FsOp::Stat { path: "/nope".into(), follow_symlink: false }).await;
        assert_eq!(resp, FsResponse::err("stat: No such file or directory (os error 2)"));
    }

    fn bulk_offer(g2h: u64) -> BulkOffer {
        BulkOffer { format: 1, max_record_payload: 1 << 20, guest_to_host_credit_limit: g2h }
    }

    /// The next bulk record on `id`.
    async fn record(h: &mut Harness, id: u32) -> moat_protocol::BulkRecord {
        match h.next_decoded().await {
            moat_protocol::Decoded::Bulk(record) if record.id == id => record,
            other => panic!("expected a bulk record on {id}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bulk_offers_on_other_ops_or_old_generations_are_refused() {
        let mut h = Harness::new();
        let op = FsOp::Stat { path: "/".into(), follow_symlink: true };
        h.fs.request(SLOT0, TEST_GENERATION, FsRequest { op, bulk: Some(bulk_offer(1)) });
        let resp = h.response(SLOT0).await;
        assert_eq!(resp, FsResponse::err("raw bulk is only valid for streaming reads and writes"));
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let handle = h.open(SLOT0 + 1, "/f", read_only()).await;
        let op = FsOp::Read { handle, offset: 0, len: None };
        h.fs.request(SLOT0 + 2, 7, FsRequest { op, bulk: Some(bulk_offer(1 << 20)) });
        let resp = h.response(SLOT0 + 2).await;
        assert_eq!(resp, FsResponse::err("raw bulk offer requires protocol generation 8"));
        h.assert_silent().await;
    }

    #[tokio::test]
    async fn a_bulk_read_sends_records_only_within_credit() {
        let mut h = Harness::new();
        let content = testing::pattern(5 << 20);
        std::fs::write(h.tmp.path().join("f"), &content).unwrap();
        let handle = h.open(SLOT0, "/f", read_only()).await;
        let id = SLOT0 + 1;
        let op = FsOp::Read { handle, offset: 0, len: None };
        h.fs.request(id, TEST_GENERATION, FsRequest { op, bulk: Some(bulk_offer(2 << 20)) });
        match h.next().await.message {
            Message::BulkAccepted(a) => {
                assert_eq!((a.flows, a.guest_to_host_credit_limit), (2, 2 << 20))
            }
            other => panic!("{other:?}"),
        }
        let mut got = Vec::new();
        while got.len() < 2 << 20 {
            let record = record(&mut h, id).await;
            assert_eq!(record.offset, got.len() as u64, "contiguous from 0");
            got.extend_from_slice(&record.payload);
        }
        h.assert_silent().await;
        let credit =
            BulkCredit { kind: 1, flow: 2, consumed_offset: 2 << 20, credit_limit: 10 << 20 };
        h.fs.bulk_control(id, BulkControl::Credit(credit)).unwrap();
        loop {
            match h.next_decoded().await {
                moat_protocol::Decoded::Bulk(record) => got.extend_from_slice(&record.payload),
                moat_protocol::Decoded::Message(frame) => {
                    match frame.message {
                        Message::BulkFinish(f) => assert_eq!(f.final_offset, 5 << 20),
                        other => panic!("{other:?}"),
                    }
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(h.response(id).await, FsResponse::ok(None));
        assert!(got == content, "the bytes arrived intact");
    }

    #[tokio::test]
    async fn a_regressing_read_credit_cancels_with_reason_5() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), testing::pattern(3 << 20)).unwrap();
        let handle = h.open(SLOT0, "/f", read_only()).await;
        let id = SLOT0 + 1;
        let op = FsOp::Read { handle, offset: 0, len: None };
        h.fs.request(id, TEST_GENERATION, FsRequest { op, bulk: Some(bulk_offer(1 << 20)) });
        assert!(matches!(h.next().await.message, Message::BulkAccepted(_)));
        record(&mut h, id).await;
        let credit = BulkCredit { kind: 1, flow: 2, consumed_offset: 0, credit_limit: 1 };
        h.fs.bulk_control(id, BulkControl::Credit(credit)).unwrap();
        match h.next().await.message {
            Message::BulkCancel(c) => assert_eq!(c.reason, 5),
            other => panic!("{other:?}"),
        }
        assert!(!h.response(id).await.ok);
        let late = BulkCredit { kind: 1, flow: 2, consumed_offset: 0, credit_limit: 1 << 20 };
        assert_eq!(h.fs.bulk_control(id, BulkControl::Credit(late)), Ok(()), "late: discarded");
        h.assert_silent().await;
    }

    fn write_record(id: u32, offset: u64, data: &[u8]) -> moat_protocol::BulkRecord {
        moat_protocol::BulkRecord {
            id,
            kind: moat_protocol::BulkKind::Filesystem,
            flow: moat_protocol::BulkFlow::HostToGuest,
            offset,
            payload: bytes::Bytes::copy_from_slice(data),
        }
    }

    async fn start_bulk_write(h: &mut Harness, id: u32, len: Option<u64>) {
        let options =
            FsOpenOptions { write: true, create: true, truncate: true, ..FsOpenOptions::default() };
        let handle = h.open(SLOT0, "/w", options).await;
        let op = FsOp::Write { handle, offset: 0, len };
        h.fs.request(id, TEST_GENERATION, FsRequest { op, bulk: Some(bulk_offer(0)) });
        match h.next().await.message {
            Message::BulkAccepted(a) => {
                assert_eq!((a.flows, a.host_to_guest_credit_limit), (1, 8 << 20))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bulk_write_takes_records_grants_credit_and_answers_on_finish() {
        let mut h = Harness::new();
        let id = SLOT0 + 1;
        let content = testing::pattern(12 << 20);
        start_bulk_write(&mut h, id, Some(content.len() as u64)).await;
        let mut sent = 0usize;
        let mut limit = 8usize << 20;
        while sent < content.len() {
            while sent < limit.min(content.len()) {
                let end = (sent + (1 << 20)).min(content.len());
                h.fs.bulk_record(write_record(id, sent as u64, &content[sent..end])).unwrap();
                sent = end;
            }
            if sent < content.len() {
                match h.next().await.message {
                    Message::BulkCredit(c) => {
                        assert_eq!((c.kind, c.flow), (1, 1));
                        assert!(c.credit_limit as usize > limit);
                        limit = c.credit_limit as usize;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let finish = BulkFinish { kind: 1, flow: 1, final_offset: sent as u64 };
        h.fs.bulk_control(id, BulkControl::Finish(finish)).unwrap();
        loop {
            match h.next().await.message {
                Message::BulkCredit(_) => {}
                Message::FsResponse(resp) => {
                    assert_eq!(resp, FsResponse::ok(None));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(std::fs::read(h.tmp.path().join("w")).unwrap() == content);
    }

    /// Reads until the cancel and the failed response on `id`; returns the response's error.
    async fn cancelled(h: &mut Harness, id: u32) -> String {
        loop {
            match h.next().await.message {
                Message::BulkCredit(_) => {}
                Message::BulkCancel(c) => {
                    assert_eq!(c.reason, 5);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let resp = h.response(id).await;
        assert!(!resp.ok);
        resp.error.unwrap()
    }

    #[tokio::test]
    async fn a_write_record_past_credit_or_out_of_order_cancels() {
        let mut h = Harness::new();
        let id = SLOT0 + 1;
        start_bulk_write(&mut h, id, None).await;
        h.fs.bulk_record(write_record(id, 1, b"x")).unwrap();
        assert!(cancelled(&mut h, id).await.contains("not contiguous"));
        assert_eq!(h.fs.bulk_record(write_record(id, 1, b"x")), Ok(()), "late: discarded");
        let id = SLOT0 + 2;
        start_bulk_write(&mut h, id, None).await;
        for n in 0..8u64 {
            h.fs.bulk_record(write_record(id, n << 20, &[0; 1 << 20])).unwrap();
        }
        h.fs.bulk_record(write_record(id, 8 << 20, b"x")).unwrap();
        // The pushes do not yield, so the disk cannot have returned credit before the ninth.
        let mut limit = 8 << 20;
        loop {
            match h.next().await.message {
                Message::BulkCredit(c) => limit = c.credit_limit,
                Message::BulkCancel(c) => {
                    assert_eq!(c.reason, 5);
                    assert_eq!(limit, 8 << 20, "cancelled although credit was granted");
                    break;
                }
                other => panic!("{other:?} (limit {limit})"),
            }
        }
        assert!(!h.response(id).await.ok);
    }

    #[tokio::test]
    async fn cbor_data_after_bulk_acceptance_cancels() {
        let mut h = Harness::new();
        let id = SLOT0 + 1;
        start_bulk_write(&mut h, id, None).await;
        h.fs.data(id, b"abc".to_vec());
        assert_eq!(
            cancelled(&mut h, id).await,
            "write: CBOR filesystem data is invalid after raw bulk acceptance"
        );
    }

    #[tokio::test]
    async fn a_wrong_final_offset_cancels_and_a_host_cancel_answers_failed() {
        let mut h = Harness::new();
        let id = SLOT0 + 1;
        start_bulk_write(&mut h, id, None).await;
        h.fs.bulk_record(write_record(id, 0, b"abc")).unwrap();
        let finish = BulkFinish { kind: 1, flow: 1, final_offset: 4 };
        h.fs.bulk_control(id, BulkControl::Finish(finish)).unwrap();
        assert!(cancelled(&mut h, id).await.contains("bulk finish at 4 after 3 bytes"));
        let id = SLOT0 + 2;
        start_bulk_write(&mut h, id, None).await;
        let cancel = BulkCancel { kind: 1, reason: 1, message: "bye".into() };
        h.fs.bulk_control(id, BulkControl::Cancel(cancel)).unwrap();
        let resp = h.response(id).await;
        assert_eq!(resp.error.as_deref(), Some("write: bulk transfer cancelled by the host: bye"));
    }

    #[tokio::test]
    async fn bulk_frames_for_an_id_without_a_transfer_are_refused() {
        let mut h = Harness::new();
        assert_eq!(h.fs.bulk_record(write_record(77, 0, b"x")), Err(NoBulkTransfer(77)));
        let cancel = BulkCancel { kind: 1, reason: 1, message: String::new() };
        assert_eq!(h.fs.bulk_control(77, BulkControl::Cancel(cancel)), Err(NoBulkTransfer(77)));
        h.assert_silent().await;
    }

    #[tokio::test]
    async fn handle_from_another_slot_is_refused() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let handle = h.open(SLOT0, "/f", read_only()).await;
        let expected = format!("handle {handle} is owned by a different relay client");
        let resp = h.call(SLOT1, FsOp::Read { handle, offset: 0, len: None }).await;
        assert_eq!(resp.error, Some(format!("read: {expected}")));
        let resp = h.call(SLOT1 + 1, FsOp::FStat { handle }).await;
        assert_eq!(resp.error, Some(format!("fstat: {expected}")));
        let resp = h.call(SLOT1 + 2, FsOp::CloseHandle { handle }).await;
        assert_eq!(resp.error, Some(format!("close: {expected}")));
        let resp = h.call(SLOT0 + 1, FsOp::CloseHandle { handle }).await;
        assert_eq!(resp, FsResponse::ok(None));
    }

    #[tokio::test]
    async fn handle_from_an_id_in_no_slot_is_refused() {
        let mut h = Harness::new();
        let handle = match h.call(SLOT0, FsOp::OpenDir { path: "/".into() }).await.data {
            Some(FsResponseData::Handle(handle)) => handle,
            other => panic!("{other:?}"),
        };
        let resp = h.call(u32::MAX, FsOp::ReadDir { handle, limit: None }).await;
        let expected = format!("readdir: handle {handle} is owned by a different relay client");
        assert_eq!(resp.error, Some(expected));
    }

    #[tokio::test]
    async fn slot_is_limited_to_1024_open_handles() {
        raise_fd_limit();
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"").unwrap();
        for n in 0..1024 {
            h.open(SLOT0 + n, "/f", read_only()).await;
        }
        let op = FsOp::OpenFile { path: "/f".into(), options: read_only() };
        let resp = h.call(SLOT0 + 1024, op.clone()).await;
        let expected = "open: too many open filesystem handles for relay client: 1024";
        assert_eq!(resp, FsResponse::err(expected));
        assert!(h.call(SLOT1, op.clone()).await.ok, "another slot has its own budget");
        assert!(h.call(SLOT0 + 1025, FsOp::CloseHandle { handle: 1 }).await.ok);
        assert!(h.call(SLOT0 + 1026, op).await.ok, "closing frees a place");
    }

    #[tokio::test]
    async fn release_range_closes_that_clients_handles_only() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let mine = h.open(SLOT0, "/f", read_only()).await;
        let theirs = h.open(SLOT1, "/f", read_only()).await;
        h.fs.release_range(Slot::of_id(SLOT0).unwrap().range());
        let resp = h.call(SLOT0 + 1, FsOp::FStat { handle: mine }).await;
        assert_eq!(resp, FsResponse::err(format!("fstat: invalid handle: {mine}")));
        assert!(h.call(SLOT1 + 1, FsOp::FStat { handle: theirs }).await.ok);
    }

    #[tokio::test]
    async fn release_range_aborts_that_clients_streams_silently() {
        let mut h = Harness::new();
        let handle = h
            .open(
                SLOT0,
                "/f",
                FsOpenOptions { write: true, create: true, ..FsOpenOptions::default() },
            )
            .await;
        h.request(SLOT0 + 1, FsOp::Write { handle, offset: 0, len: None });
        h.fs.data(SLOT0 + 1, b"partial".to_vec());
        assert_eq!(h.fs.active_streams(), 1);
        h.fs.release_range(Slot::of_id(SLOT0).unwrap().range());
        assert_eq!(h.fs.active_streams(), 0);
        h.fs.data(SLOT0 + 1, Vec::new());
        assert_eq!(
            h.response(SLOT0 + 1).await,
            FsResponse::err(format!("unknown write session: {}", SLOT0 + 1))
        );
        h.assert_silent().await;
    }

    #[tokio::test]
    async fn abort_all_stops_streams_and_closes_handles() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("big"), pattern(12 << 20)).unwrap();
        let handle = h.open(SLOT0, "/big", read_only()).await;
        h.request(SLOT0 + 1, FsOp::Read { handle, offset: 0, len: None });
        assert_eq!(h.fs.active_streams(), 1);
        h.fs.abort_all();
        assert_eq!(h.fs.active_streams(), 0);
        let resp = h.call(SLOT0 + 2, FsOp::FStat { handle }).await;
        assert_eq!(resp, FsResponse::err(format!("fstat: invalid handle: {handle}")));
    }

    #[tokio::test]
    async fn finished_read_is_no_longer_active() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let handle = h.open(SLOT0, "/f", read_only()).await;
        h.request(SLOT0 + 1, FsOp::Read { handle, offset: 0, len: None });
        assert!(matches!(h.next().await.message, Message::FsData(_)));
        assert_eq!(h.response(SLOT0 + 1).await, FsResponse::ok(None));
        tokio::task::yield_now().await;
        assert_eq!(h.fs.active_streams(), 0);
    }

    #[tokio::test]
    async fn second_stream_on_a_busy_id_is_refused() {
        let mut h = Harness::new();
        let handle = h
            .open(
                SLOT0,
                "/f",
                FsOpenOptions { write: true, create: true, ..FsOpenOptions::default() },
            )
            .await;
        h.request(SLOT0 + 1, FsOp::Write { handle, offset: 0, len: None });
        let resp = h.call(SLOT0 + 1, FsOp::Write { handle, offset: 0, len: None }).await;
        assert_eq!(
            resp,
            FsResponse::err(format!("write: id {} already has a stream in flight", SLOT0 + 1))
        );
        h.fs.data(SLOT0 + 1, Vec::new());
        assert_eq!(h.response(SLOT0 + 1).await, FsResponse::ok(None));
    }

    #[tokio::test]
    async fn whole_file_write_then_read_round_trips_as_the_sdk_composes_it() {
        let mut h = Harness::new();
        let content = pattern(5 << 20);
        let create =
            FsOpenOptions { write: true, create: true, truncate: true, ..FsOpenOptions::default() };
        let handle = h.open(SLOT0, "/dir-less.bin", create).await;
        h.request(SLOT0 + 1, FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) });
        for chunk in content.chunks(3 << 20) {
            h.fs.data(SLOT0 + 1, chunk.to_vec());
        }
        h.fs.data(SLOT0 + 1, Vec::new());
        assert_eq!(h.response(SLOT0 + 1).await, FsResponse::ok(None));
        assert!(h.call(SLOT0 + 2, FsOp::CloseHandle { handle }).await.ok);

        let handle = h.open(SLOT0 + 3, "/dir-less.bin", read_only()).await;
        h.request(SLOT0 + 4, FsOp::Read { handle, offset: 0, len: None });
        let mut read = Vec::new();
        loop {
            match h.next().await.message {
                Message::FsData(data) => read.extend_from_slice(&data.data),
                Message::FsResponse(resp) => {
                    assert_eq!(resp, FsResponse::ok(None));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(read == content, "content differs");
        assert!(h.call(SLOT0 + 5, FsOp::CloseHandle { handle }).await.ok);
    }
}
