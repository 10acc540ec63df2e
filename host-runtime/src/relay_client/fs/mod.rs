//! A typed client of the agent's filesystem service (PROTOCOL.md §9) over one relay connection:
//! what [`crate::api::SandboxFs`] runs on tokio's blocking pool, and what the bench's transfer
//! figures time.
//!
//! ```text
//!  one-shot:  core.fs.request {Stat|List|Mkdir|Remove|RemoveDir|Copy|Rename} ─► core.fs.response
//!  read:      OpenFile {read} ─► Read {handle, offset, len} ─► core.fs.data … ─► response ─► CloseHandle
//!  write:     OpenFile {write, create, truncate} ─► Write {handle, offset, len}
//!                 ─► core.fs.data ≤ 3 MiB … ─► core.fs.data "" (EOF) ─► response ─► CloseHandle
//! ```
//!
//! Transfers hold at most one chunk: a read hands each `core.fs.data` to its sink before reading
//! the next frame (the socket holds the agent back meanwhile), and a write reads its source one
//! chunk at a time. A write stops at the agent's first terminal answer, which it looks for
//! between chunks. Handles belong to the connection's relay slot, so a file is opened, used and
//! closed on one client; the agent closes whatever a dropped client left open.
//!
//! Whole directory trees are [`FsClient::copy_dir_from_host`] and [`FsClient::copy_dir_to_host`]
//! (`tree.rs`).
//!
//! Against an agent of generation 8 or later, reads and writes move their bytes as raw bulk
//! records under credit (`bulk.rs`, §11); otherwise, or after [`FsClient::cbor_only`], as CBOR
//! `core.fs.data`. This module does not check that the sandbox runs; [`crate::api`] does.

mod bulk;
pub mod error;
mod tree;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_protocol::limits::FS_CHUNK_BYTES;
use moat_protocol::payload::bulk::BulkOffer;
use moat_protocol::payload::exec::Data;
use moat_protocol::payload::fs::{
    FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsRequest, FsResponseData,
};
use moat_protocol::{Message, MessageFrame};

pub use self::error::GuestFsError;
use crate::error::RuntimeError;
use crate::limits::{FS_BULK_GENERATION, FS_BULK_MIN_WRITE_BYTES};
use crate::relay_client::conn::{Conn, Incoming};
use crate::supervisor::wire_name;

const AGENT: &str = "the agent";

/// A file opened in the sandbox, on the client that opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    handle: u64,
    path: String,
}

impl GuestFile {
    /// The guest path it was opened as.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// How [`FsClient::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// For reading; the file must exist.
    Read,
    /// For writing from the start: created (with `mode` when given) or truncated.
    Write {
        /// The permission bits of a file created now (`None`: the agent's default).
        mode: Option<u32>,
    },
}

/// One relay connection speaking the filesystem service.
#[derive(Debug)]
pub struct FsClient {
    conn: Conn,
    /// Move file bytes as raw bulk records.
    bulk: bool,
    /// The relay socket, to connect again after a call timed out.
    socket: PathBuf,
}

impl FsClient {
    /// Connects to a sandbox's relay socket.
    pub fn connect(socket: &Path) -> Result<FsClient, RuntimeError> {
        let conn = Conn::connect(socket)?;
        let bulk = conn.generation() >= FS_BULK_GENERATION;
        Ok(FsClient { conn, bulk, socket: socket.to_owned() })
    }

    /// Runs `op` (any calls on this client, about `what`) within `timeout`. Past it, the
    /// connection is shut down, which ends a call waiting on the agent at once (the relay then
    /// drops what the connection had open in the guest, as for any departed client), the client
    /// connects again so its next call works, and the result is [`RuntimeError::FsTimeout`].
    /// Files opened before are gone with the old connection.
    pub fn with_timeout<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        op: impl FnOnce(&mut FsClient) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let watchdog = Watchdog::arm(self.conn.socket_handle()?, timeout);
        let result = op(self);
        if !watchdog.disarm() {
            return result;
        }
        match Conn::connect(&self.socket) {
            Ok(conn) => self.conn = conn,
            // The sandbox is going away: the next call says so.
            Err(err) => tracing::warn!(%err, "could not reconnect after a filesystem timeout"),
        }
        match result {
            // It finished just as the time ran out.
            Ok(value) => Ok(value),
            Err(_) => Err(RuntimeError::FsTimeout { what: what.to_owned(), timeout }),
        }
    }

    /// Moves file bytes as CBOR `core.fs.data` even when the agent could take raw bulk records.
    pub fn cbor_only(mut self) -> FsClient {
        self.bulk = false;
        self
    }

    /// Whether reads and writes use raw bulk records.
    pub fn uses_bulk(&self) -> bool {
        self.bulk
    }

    /// What `path` is (symlinks followed).
    pub fn stat(&mut self, path: &str) -> Result<FsEntryInfo, RuntimeError> {
        let op = FsOp::Stat { path: path.to_owned(), follow_symlink: true };
        match self.call(op, path)? {
            Some(FsResponseData::Stat(info)) => Ok(info),
            other => Err(unexpected(other, "waiting for a stat")),
        }
    }

    /// Whether `path` exists (symlinks followed: a dangling link does not; nor does a path
    /// under a file).
    pub fn exists(&mut self, path: &str) -> Result<bool, RuntimeError> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(RuntimeError::GuestFs(
                GuestFsError::NotFound { .. } | GuestFsError::NotADirectory { .. },
            )) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The entries of the directory `path` (no `.` or `..`; each `path` is the full child path).
    pub fn list(&mut self, path: &str) -> Result<Vec<FsEntryInfo>, RuntimeError> {
        match self.call(FsOp::List { path: path.to_owned() }, path)? {
            Some(FsResponseData::List(entries)) => Ok(entries),
            other => Err(unexpected(other, "waiting for a listing")),
        }
    }

    /// Creates the directory `path` and any missing parents (an existing directory is fine).
    pub fn mkdir(&mut self, path: &str) -> Result<(), RuntimeError> {
        self.call(FsOp::Mkdir { path: path.to_owned(), mode: None, user: None }, path).map(drop)
    }

    /// Removes the file (or symlink) `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), RuntimeError> {
        self.call(FsOp::Remove { path: path.to_owned() }, path).map(drop)
    }

    /// Removes the directory `path`: empty, or with everything in it when `recursive`.
    pub fn remove_dir(&mut self, path: &str, recursive: bool) -> Result<(), RuntimeError> {
        self.call(FsOp::RemoveDir { path: path.to_owned(), recursive }, path).map(drop)
    }

    /// Copies the file `src` to `dst` inside the sandbox (the agent copies; no byte crosses the
    /// relay). An error names both paths (`src -> dst`): the agent does not say which failed.
    pub fn copy(&mut self, src: &str, dst: &str) -> Result<(), RuntimeError> {
        let op = FsOp::Copy { src: src.to_owned(), dst: dst.to_owned() };
        self.call(op, &format!("{src} -> {dst}")).map(drop)
    }

    /// Renames `src` to `dst` inside the sandbox.
    pub fn rename(&mut self, src: &str, dst: &str) -> Result<(), RuntimeError> {
        let op = FsOp::Rename { src: src.to_owned(), dst: dst.to_owned() };
        self.call(op, &format!("{src} -> {dst}")).map(drop)
    }

    /// Opens the file `path`.
    pub fn open(&mut self, path: &str, mode: OpenMode) -> Result<GuestFile, RuntimeError> {
        let write = matches!(mode, OpenMode::Write { .. });
        let options = FsOpenOptions {
            read: !write,
            write,
            append: false,
            create: write,
            truncate: write,
            create_new: false,
            mode: match mode {
                OpenMode::Write { mode } => mode,
                OpenMode::Read => None,
            },
            user: None,
        };
        match self.call(FsOp::OpenFile { path: path.to_owned(), options }, path)? {
            Some(FsResponseData::Handle(handle)) => Ok(GuestFile { handle, path: path.to_owned() }),
            other => Err(unexpected(other, "waiting for a file handle")),
        }
    }

    /// Closes `file` (the agent flushes it).
    pub fn close(&mut self, file: GuestFile) -> Result<(), RuntimeError> {
        self.call(FsOp::CloseHandle { handle: file.handle }, &file.path).map(drop)
    }

    /// Streams `len` bytes of `file` from `offset` (to its end for `None`) into `sink`, one
    /// `core.fs.data` chunk (≤ 3 MiB, and ≤ `len`) at a time; returns the bytes read. A failing
    /// sink ends the read with its error.
    pub fn read_at(
        &mut self,
        file: &GuestFile,
        offset: u64,
        len: Option<u64>,
        mut sink: impl FnMut(&[u8]) -> Result<(), RuntimeError>,
    ) -> Result<u64, RuntimeError> {
        if self.bulk {
            return bulk::read(self, file, offset, len, &mut sink);
        }
        let id = self.request(FsOp::Read { handle: file.handle, offset, len })?;
        let mut total = 0u64;
        self.response(id, &file.path, |data| {
            total += data.len() as u64;
            sink(data)
        })?;
        Ok(total)
    }

    /// Streams `source` to its end into `file` from `offset`, in chunks of at most 3 MiB;
    /// returns the bytes written. With `len`, the agent checks that exactly that many arrived.
    pub fn write_at(
        &mut self,
        file: &GuestFile,
        offset: u64,
        len: Option<u64>,
        source: &mut impl Read,
    ) -> Result<u64, RuntimeError> {
        if self.bulk && len.is_none_or(|len| len > FS_BULK_MIN_WRITE_BYTES) {
            return bulk::write(self, file, offset, len, source);
        }
        let id = self.request(FsOp::Write { handle: file.handle, offset, len })?;
        // One chunk of buffer; less when the whole write is smaller.
        let chunk = len.map_or(FS_CHUNK_BYTES, |len| len.clamp(1, FS_CHUNK_BYTES as u64) as usize);
        let mut buf = Vec::with_capacity(chunk);
        let mut total = 0u64;
        loop {
            // A write that failed has answered already: stop at its first answer (any more
            // data would only draw "unknown write session" answers).
            if let Some(Incoming::Message(answer)) = self.conn.try_recv_any("writing a file")?
                && answer.id == id
            {
                return self.settle(answer, &file.path).map(|_| total);
            }
            let n = match fill(source, &mut buf, chunk) {
                Ok(n) => n,
                Err(err) => {
                    // End the session (a declared length then fails it) before reporting.
                    self.send_data(id, &mut Vec::new())?;
                    return Err(RuntimeError::io("read the data to write", &file.path)(err));
                }
            };
            self.send_data(id, &mut buf)?;
            if n == 0 {
                self.response(id, &file.path, |_| Ok(()))?;
                return Ok(total);
            }
            total += n as u64;
        }
    }

    /// The whole file `path`; [`GuestFsError::TooLarge`] when it holds more than `max_bytes`.
    pub fn read(&mut self, path: &str, max_bytes: u64) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::new();
        let total = self.with_file(path, OpenMode::Read, |client, file| {
            client.read_at(file, 0, Some(max_bytes.saturating_add(1)), |data| {
                out.extend_from_slice(data);
                Ok(())
            })
        })?;
        if total > max_bytes {
            return Err(GuestFsError::TooLarge { path: path.to_owned(), max_bytes }.into());
        }
        Ok(out)
    }

    /// The whole file `path` as UTF-8 text (at most `max_bytes`).
    pub fn read_to_string(&mut self, path: &str, max_bytes: u64) -> Result<String, RuntimeError> {
        String::from_utf8(self.read(path, max_bytes)?)
            .map_err(|_| GuestFsError::NotUtf8 { path: path.to_owned() }.into())
    }

    /// Makes `data` the whole content of the file `path` (created or truncated).
    pub fn write(&mut self, path: &str, data: &[u8]) -> Result<(), RuntimeError> {
        let len = Some(data.len() as u64);
        self.with_file(path, OpenMode::Write { mode: None }, |client, file| {
            client.write_at(file, 0, len, &mut &data[..])
        })
        .map(drop)
    }

    /// Streams the file `path` into `out`; returns the bytes copied.
    pub fn read_to(&mut self, path: &str, out: &mut impl Write) -> Result<u64, RuntimeError> {
        self.with_file(path, OpenMode::Read, |client, file| {
            client.read_at(file, 0, None, |data| {
                out.write_all(data).map_err(RuntimeError::io("write what was read", path))
            })
        })
    }

    /// Streams `input` to its end into the file `path` (created with `mode`, or truncated);
    /// returns the bytes copied. With `len`, exactly that many must arrive.
    pub fn write_from(
        &mut self,
        path: &str,
        input: &mut impl Read,
        len: Option<u64>,
        mode: Option<u32>,
    ) -> Result<u64, RuntimeError> {
        self.with_file(path, OpenMode::Write { mode }, |client, file| {
            client.write_at(file, 0, len, input)
        })
    }

    /// Copies the guest file `path` to `host_path` (its permission bits too); returns the bytes
    /// copied. The host file appears whole or not at all: it is written beside its destination
    /// and renamed over it.
    pub fn copy_to_host(&mut self, path: &str, host_path: &Path) -> Result<u64, RuntimeError> {
        let info = self.stat(path)?;
        if info.kind == FsEntryKind::Dir {
            return Err(GuestFsError::IsADirectory { path: path.to_owned() }.into());
        }
        let partial = partial_path(host_path);
        let written = (|| {
            let mut file = std::fs::File::create(&partial)
                .map_err(RuntimeError::io("create host file", &partial))?;
            let copied = self.read_to(path, &mut std::io::BufWriter::new(&mut file))?;
            file.sync_all().map_err(RuntimeError::io("flush host file", &partial))?;
            let mode = std::os::unix::fs::PermissionsExt::from_mode(info.mode & 0o7777);
            std::fs::set_permissions(&partial, mode)
                .map_err(RuntimeError::io("set the mode of host file", &partial))?;
            std::fs::rename(&partial, host_path)
                .map_err(RuntimeError::io("rename into place host file", host_path))?;
            Ok(copied)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    /// Copies the host file `host_path` to the guest file `path` (created with the host file's
    /// permission bits, or truncated); returns the bytes copied. After a failure the guest
    /// file may hold part of the data.
    pub fn copy_from_host(&mut self, host_path: &Path, path: &str) -> Result<u64, RuntimeError> {
        use std::os::unix::fs::PermissionsExt;
        let file = std::fs::File::open(host_path)
            .map_err(RuntimeError::io("open host file", host_path))?;
        let meta = file.metadata().map_err(RuntimeError::io("stat host file", host_path))?;
        if meta.is_dir() {
            let is_dir = std::io::Error::from_raw_os_error(nix::libc::EISDIR);
            return Err(RuntimeError::io("copy host file", host_path)(is_dir));
        }
        // A regular file's length is checked by the agent; a pipe's is not known.
        let len = meta.is_file().then_some(meta.len());
        let mut reader = std::io::BufReader::with_capacity(FS_CHUNK_BYTES, file);
        self.write_from(path, &mut reader, len, Some(meta.permissions().mode() & 0o7777))
    }

    /// Opens `path`, runs `body` on it and closes it, whether `body` failed or not.
    fn with_file<T>(
        &mut self,
        path: &str,
        mode: OpenMode,
        body: impl FnOnce(&mut FsClient, &GuestFile) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let file = self.open(path, mode)?;
        let result = body(self, &file);
        let closed = self.close(file);
        let value = result?;
        closed.map(|()| value)
    }

    /// A one-shot operation about `path`: its response data.
    fn call(&mut self, op: FsOp, path: &str) -> Result<Option<FsResponseData>, RuntimeError> {
        let id = self.request(op)?;
        self.response(id, path, |_| Ok(()))
    }

    /// Sends `op` on a fresh id; returns the id.
    fn request(&mut self, op: FsOp) -> Result<u32, RuntimeError> {
        self.request_with(op, None)
    }

    /// Sends `op` with a raw-bulk offer, or none, on a fresh id; returns the id.
    fn request_with(&mut self, op: FsOp, bulk: Option<BulkOffer>) -> Result<u32, RuntimeError> {
        let id = self.conn.next_id()?;
        let frame = MessageFrame::new(id, Message::FsRequest(FsRequest { op, bulk }));
        self.conn.send(&frame, "core.fs.request")?;
        Ok(id)
    }

    /// Sends `buf` as one `core.fs.data` on `id` (empty: EOF), keeping the buffer.
    fn send_data(&mut self, id: u32, buf: &mut Vec<u8>) -> Result<(), RuntimeError> {
        let frame = MessageFrame::new(id, Message::FsData(Data::new(std::mem::take(buf))));
        let sent = self.conn.send(&frame, "core.fs.data");
        if let Message::FsData(Data { data }) = frame.message {
            *buf = data;
        }
        sent
    }

    /// Reads frames on `id` until its terminal response, handing `core.fs.data` to `on_data`.
    fn response(
        &mut self,
        id: u32,
        path: &str,
        mut on_data: impl FnMut(&[u8]) -> Result<(), RuntimeError>,
    ) -> Result<Option<FsResponseData>, RuntimeError> {
        loop {
            let frame = self.conn.recv("waiting for core.fs.response")?;
            if frame.id != id {
                tracing::debug!(id = frame.id, message = %wire_name(&frame.message), "frame for another id");
                continue;
            }
            match frame.message {
                Message::FsData(Data { data }) => on_data(&data)?,
                _ => return self.settle(frame, path),
            }
        }
    }

    /// The outcome a terminal frame about `path` carries.
    fn settle(
        &mut self,
        frame: MessageFrame,
        path: &str,
    ) -> Result<Option<FsResponseData>, RuntimeError> {
        match frame.message {
            Message::FsResponse(response) if response.ok => Ok(response.data),
            Message::FsResponse(response) => {
                let message = response.error.unwrap_or_default();
                Err(GuestFsError::from_agent(path, &message).into())
            }
            Message::Error(err) => Err(GuestFsError::from_agent(path, &err.message).into()),
            other => Err(RuntimeError::Unexpected {
                peer: AGENT,
                got: wire_name(&other),
                while_doing: "waiting for core.fs.response",
            }),
        }
    }
}

/// Shuts a connection down once its time has run out, unless disarmed first.
struct Watchdog {
    state: Arc<Mutex<WatchState>>,
    /// Dropped on disarm, which wakes the thread before its time.
    _wake: std::sync::mpsc::Sender<()>,
}

#[derive(Default)]
struct WatchState {
    disarmed: bool,
    fired: bool,
}

impl Watchdog {
    fn arm(socket: UnixStream, timeout: Duration) -> Watchdog {
        let state = Arc::new(Mutex::new(WatchState::default()));
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let watched = Arc::clone(&state);
        std::thread::spawn(move || {
            if woken.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            let mut state = watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !state.disarmed {
                state.fired = true;
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        });
        Watchdog { state, _wake: wake }
    }

    /// Stops watching; whether the time ran out first (the connection is shut down then).
    fn disarm(self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.disarmed = true;
        state.fired
    }
}

/// The error for a successful response without the data its operation answers with.
fn unexpected(data: Option<FsResponseData>, while_doing: &'static str) -> RuntimeError {
    let got = match data {
        None => "core.fs.response without data",
        Some(FsResponseData::Stat(_)) => "core.fs.response with a stat",
        Some(FsResponseData::List(_)) => "core.fs.response with a listing",
        Some(FsResponseData::Handle(_)) => "core.fs.response with a handle",
        Some(FsResponseData::Path(_)) => "core.fs.response with a path",
    };
    RuntimeError::Unexpected { peer: AGENT, got: got.to_owned(), while_doing }
}

/// Reads from `source` into `buf` until it holds `chunk` bytes or the source ends.
fn fill(
    source: &mut (impl Read + ?Sized),
    buf: &mut Vec<u8>,
    chunk: usize,
) -> std::io::Result<usize> {
    buf.resize(chunk, 0);
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(n);
    Ok(n)
}

/// Where a host copy is written before it is renamed to `dest`: beside it, hidden.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.moat-cp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_reads_a_short_source_whole_and_then_nothing() {
        let mut source: &[u8] = b"abc";
        let mut buf = Vec::new();
        assert_eq!(fill(&mut source, &mut buf, FS_CHUNK_BYTES).unwrap(), 3);
        assert_eq!(buf, b"abc");
        assert_eq!(fill(&mut source, &mut buf, FS_CHUNK_BYTES).unwrap(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn fill_stops_at_one_chunk() {
        let big = vec![7u8; FS_CHUNK_BYTES + 5];
        let mut source = &big[..];
        let mut buf = Vec::new();
        assert_eq!(fill(&mut source, &mut buf, FS_CHUNK_BYTES).unwrap(), FS_CHUNK_BYTES);
        assert_eq!(fill(&mut source, &mut buf, FS_CHUNK_BYTES).unwrap(), 5);
    }

    #[test]
    fn a_partial_copy_is_hidden_beside_its_destination() {
        let partial = partial_path(Path::new("/tmp/out/data.bin"));
        assert_eq!(partial.parent(), Some(Path::new("/tmp/out")));
        let name = partial.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".data.bin.moat-cp-"), "{name}");
    }
}
