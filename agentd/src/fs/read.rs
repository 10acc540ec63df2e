//! Streaming `Read` (PROTOCOL.md §9.3, CBOR mode).
//!
//! ```text
//!  H→G core.fs.request {Read {handle, offset, len}}
//!  G→H core.fs.data {data}   … each ≤ FS_CHUNK_BYTES (3 MiB); only the last may be shorter
//!  G→H core.fs.response {ok:true}            (no empty fs.data before it)
//!      or {ok:false, "read: …" / "seek: …"}  (after the chunks sent so far)
//! ```
//!
//! One task per stream: it reads a chunk with `pread` on a blocking worker, hands it to
//! [`Outbound::send_frame`] and waits there while the host is slow, so a stream holds at most the
//! chunk being sent and its encoded frame. The chunk buffer is reused from chunk to chunk (a
//! fresh 3 MiB buffer per chunk cost a page fault per 4 KiB). Positional reads leave the descriptor's offset alone, so
//! several streams can read one handle at once. Aborting the task (client gone, shutdown) sends
//! nothing more. This module owns the stream; the handle checks happen before it starts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use moat_protocol::limits::{AGENT_GENERATION, FS_CHUNK_BYTES};
use moat_protocol::payload::exec::Data;
use moat_protocol::{Message, MessageFrame};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbound::Outbound;

use super::error::{self, FsError, Op};
use super::handles::OpenFile;

/// Why a stream stopped early.
enum Stop {
    /// A read failed: the client gets `ok:false`.
    Failed(FsError),
    /// The host is gone: nothing more can be sent.
    Disconnected,
}

/// Starts streaming `len` bytes (to EOF for `None`) of `file` from `offset` on `id`.
pub(crate) fn spawn(
    id: u32,
    file: Arc<OpenFile>,
    offset: u64,
    len: Option<u64>,
    out: Outbound,
) -> JoinHandle<()> {
    let span = tracing::debug_span!("fs_read", id, offset, len);
    tokio::spawn(
        async move {
            let result = match pump(id, &file, offset, len, &out).await {
                Ok(()) => Ok(None),
                Err(Stop::Failed(err)) => Err(err),
                Err(Stop::Disconnected) => return,
            };
            if out.send(id, Message::FsResponse(error::response(result))).await.is_err() {
                tracing::debug!("host gone before the read's response");
            }
        }
        .instrument(span),
    )
}

/// Sends the chunks; returns once the range or the file is exhausted.
async fn pump(
    id: u32,
    file: &Arc<OpenFile>,
    mut offset: u64,
    mut remaining: Option<u64>,
    out: &Outbound,
) -> Result<(), Stop> {
    let mut buf = Vec::new();
    loop {
        let want = match remaining {
            Some(0) => return Ok(()),
            Some(left) => left.min(FS_CHUNK_BYTES as u64) as usize,
            None => FS_CHUNK_BYTES,
        };
        let shared = Arc::clone(file);
        let (chunk, read) = tokio::task::spawn_blocking(move || {
            let read = read_chunk(&shared.file, offset, want, &mut buf);
            (buf, read)
        })
        .await
        .map_err(|source| Stop::Failed(FsError::Task { op: Op::Read, source }))?;
        read.map_err(|err| Stop::Failed(FsError::positional(Op::Read)(err)))?;
        if chunk.is_empty() {
            return Ok(());
        }
        let got = chunk.len() as u64;
        offset = offset.saturating_add(got);
        remaining = remaining.map(|left| left - got);
        let frame = MessageFrame {
            id,
            v: AGENT_GENERATION,
            message: Message::FsData(Data { data: chunk }),
        };
        out.send_frame(&frame).await.map_err(|_| Stop::Disconnected)?;
        buf = match frame.message {
            Message::FsData(Data { data }) => data,
            _ => Vec::new(),
        };
    }
}

/// Reads up to `want` bytes at `offset` into `buf` (resized to what was read), retrying short
/// reads so every chunk but the last is full. An empty result means end of file.
pub(crate) fn read_chunk(
    file: &File,
    offset: u64,
    want: usize,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    read_chunk_after(file, offset, want, buf, 0)
}

/// [`read_chunk`] into `buf` after its first `keep` bytes (a header written in front of the
/// data): `buf` ends up `keep` + what was read long.
pub(crate) fn read_chunk_after(
    file: &File,
    offset: u64,
    want: usize,
    buf: &mut Vec<u8>,
    keep: usize,
) -> io::Result<()> {
    buf.resize(keep + want, 0);
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[keep + filled..], offset.saturating_add(filled as u64)) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                buf.truncate(keep);
                return Err(err);
            }
        }
    }
    buf.truncate(keep + filled);
    Ok(())
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsResponse};

    use super::*;
    use crate::fs::testing::{Harness, pattern};

    const ID: u32 = 10;

    fn read_only() -> FsOpenOptions {
        FsOpenOptions { read: true, ..FsOpenOptions::default() }
    }

    /// Collects `fs.data` payloads on `id` until its response.
    async fn collect(h: &mut Harness, id: u32) -> (Vec<Vec<u8>>, FsResponse) {
        let mut chunks = Vec::new();
        loop {
            let frame = h.next().await;
            assert_eq!(frame.id, id);
            match frame.message {
                Message::FsData(data) => chunks.push(data.data),
                Message::FsResponse(resp) => return (chunks, resp),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn ten_mib_read_streams_three_mib_chunks_then_ok() {
        let mut h = Harness::new();
        let content = pattern(10 * 1024 * 1024);
        std::fs::write(h.tmp.path().join("big"), &content).unwrap();
        let handle = h.open(1, "/big", read_only()).await;
        h.request(ID, FsOp::Read { handle, offset: 0, len: None });
        let (chunks, resp) = collect(&mut h, ID).await;
        assert_eq!(resp, FsResponse::ok(None));
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3 << 20, 3 << 20, 3 << 20, 1 << 20]);
        assert!(chunks.concat() == content, "content differs");
    }

    #[tokio::test]
    async fn bounded_read_stops_at_len_from_offset() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"0123456789").unwrap();
        let handle = h.open(1, "/f", read_only()).await;
        h.request(ID, FsOp::Read { handle, offset: 2, len: Some(5) });
        let (chunks, resp) = collect(&mut h, ID).await;
        assert_eq!((chunks, resp.ok), (vec![b"23456".to_vec()], true));
    }

    #[tokio::test]
    async fn read_of_empty_file_is_just_ok() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"").unwrap();
        let handle = h.open(1, "/f", read_only()).await;
        h.request(ID, FsOp::Read { handle, offset: 0, len: None });
        let (chunks, resp) = collect(&mut h, ID).await;
        assert_eq!((chunks.len(), resp.ok), (0, true));
    }

    #[tokio::test]
    async fn read_past_the_end_is_just_ok() {
        let mut h = Harness::new();
        std::fs::write(h.tmp.path().join("f"), b"abc").unwrap();
        let handle = h.open(1, "/f", read_only()).await;
        h.request(ID, FsOp::Read { handle, offset: 100, len: Some(10) });
        let (chunks, resp) = collect(&mut h, ID).await;
        assert_eq!((chunks.len(), resp.ok), (0, true));
    }

    #[tokio::test]
    async fn read_on_a_write_only_handle_fails() {
        let mut h = Harness::new();
        let opts = FsOpenOptions { write: true, create: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/f", opts).await;
        let resp = h.call(ID, FsOp::Read { handle, offset: 0, len: None }).await;
        assert_eq!(resp.error, Some(format!("read: handle {handle} is not open for reading")));
    }

    #[tokio::test]
    async fn read_of_unknown_handle_fails() {
        let mut h = Harness::new();
        let resp = h.call(ID, FsOp::Read { handle: 99, offset: 0, len: None }).await;
        assert_eq!(resp, FsResponse::err("read: invalid handle: 99"));
    }

    #[tokio::test]
    async fn read_of_a_pipe_fails_with_the_seek_prefix() {
        let mut h = Harness::new();
        let fifo = h.tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let opts = FsOpenOptions { read: true, write: true, ..FsOpenOptions::default() };
        let handle = h.open(1, "/fifo", opts).await;
        let resp = h.call(ID, FsOp::Read { handle, offset: 0, len: None }).await;
        assert_eq!(resp, FsResponse::err("seek: Illegal seek (os error 29)"));
    }
}
