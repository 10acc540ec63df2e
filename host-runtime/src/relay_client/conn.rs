//! A raw relay client, as an SDK would write one: one socket, frames in and out, ids from the
//! prologue's range. The filesystem client ([`crate::relay_client::fs`]) runs on it, and the
//! bench drives pings and output streams through it.

use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::BytesMut;
use moat_protocol::frame::split_frame;
use moat_protocol::payload::exec::Consumed;
use moat_protocol::relay::IdAllocator;
use moat_protocol::{BulkFlow, BulkKind, BulkRecord, Decoded, Message, MessageFrame, decode_frame};

use crate::error::RuntimeError;
use crate::limits::SOCKET_READ_CHUNK_BYTES;
use crate::relay_client::connect_relay;

const RELAY: &str = "the relay";

/// A connected relay client that has seen the replayed `core.ready`.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    /// Bytes received and not yet taken out as frames. The socket is read straight into it
    /// (no copy through a separate read buffer); it holds at most one frame (4 MiB, checked
    /// before room for it is made) and one read more.
    received: BytesMut,
    ids: IdAllocator,
    write_buf: Vec<u8>,
    /// The output window, when exec output must be acknowledged (generation 10 with
    /// `exec_limits`).
    output_window: Option<u64>,
    /// The generation of the agent's replayed `core.ready`.
    generation: u8,
}

impl Conn {
    /// Connects to the relay socket, reads the prologue and the replayed `core.ready`.
    pub(crate) fn connect(socket: &Path) -> Result<Conn, RuntimeError> {
        let (stream, range) = connect_relay(socket)?;
        let mut conn = Conn {
            stream,
            received: BytesMut::new(),
            ids: IdAllocator::new(range),
            write_buf: Vec::new(),
            output_window: None,
            generation: 0,
        };
        let ready = conn.recv("waiting for the replayed core.ready")?;
        match ready.message {
            Message::Ready(ready_payload) => {
                conn.generation = ready.v;
                conn.output_window =
                    crate::relay_client::flow::policy(ready.v, ready_payload.exec_limits)
                        .map(|p| u64::from(p.output_limit));
                Ok(conn)
            }
            _ => expect(false, &ready, "waiting for core.ready").map(|()| conn),
        }
    }

    /// Before a read: acknowledges exec output on `id` when an ack is due (the read would wait
    /// on the socket, or half the window is unacknowledged) and the connection is
    /// flow-controlled.
    pub(crate) fn ack_output(
        &mut self,
        id: u32,
        acks: &mut crate::relay_client::flow::OutputAcks,
    ) -> Result<(), RuntimeError> {
        let Some(window) = self.output_window else { return Ok(()) };
        let Some(consumed) = acks.due(self.received.is_empty(), window) else {
            return Ok(());
        };
        let ack = Message::ExecOutputAck(Consumed { consumed });
        self.send(&MessageFrame::new(id, ack), "core.exec.output.ack")
    }

    /// Another handle on the connection's socket (to shut it down from another thread).
    pub(crate) fn socket_handle(&self) -> Result<UnixStream, RuntimeError> {
        self.stream.try_clone().map_err(RuntimeError::io("clone relay socket", "agent.sock"))
    }

    /// A fresh correlation id.
    pub(crate) fn next_id(&mut self) -> Result<u32, RuntimeError> {
        self.ids.next_id().ok_or(RuntimeError::IdsExhausted)
    }

    /// Encodes `frame` into a reused buffer and writes it.
    pub(crate) fn send(
        &mut self,
        frame: &MessageFrame,
        what: &'static str,
    ) -> Result<(), RuntimeError> {
        self.write_buf.clear();
        frame
            .encode(&mut self.write_buf)
            .map_err(|source| RuntimeError::Encode { what, source })?;
        self.stream
            .write_all(&self.write_buf)
            .map_err(RuntimeError::io("write to relay", "agent.sock"))
    }

    /// The next message frame (bulk and lease records are skipped).
    pub(crate) fn recv(&mut self, while_doing: &'static str) -> Result<MessageFrame, RuntimeError> {
        loop {
            if let Incoming::Message(frame) = self.recv_any(while_doing)? {
                return Ok(frame);
            }
        }
    }

    /// The next message frame or raw bulk record (lease records are skipped).
    pub(crate) fn recv_any(&mut self, while_doing: &'static str) -> Result<Incoming, RuntimeError> {
        loop {
            if let Some(incoming) = next_incoming(&mut self.received)? {
                return Ok(incoming);
            }
            match self.fill(0) {
                Ok(0) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
            }
        }
    }

    /// [`Conn::recv_any`] if something has already arrived, without waiting: what a sender
    /// checks between chunks, so it sees credit and stops at the peer's first terminal answer.
    pub(crate) fn try_recv_any(
        &mut self,
        while_doing: &'static str,
    ) -> Result<Option<Incoming>, RuntimeError> {
        loop {
            if let Some(incoming) = next_incoming(&mut self.received)? {
                return Ok(Some(incoming));
            }
            // One `recv(MSG_DONTWAIT)`, where switching the socket to non-blocking and back
            // took two more system calls per poll (one poll per record sent).
            match self.fill(libc::MSG_DONTWAIT) {
                Ok(0) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
            }
        }
    }

    /// One `recv(2)` with `flags` straight into the spare room of [`Conn::received`] (at least
    /// [`SOCKET_READ_CHUNK_BYTES`], more when a large frame is partly in): the bytes of a frame
    /// are copied once, by the kernel, and a raw bulk record's payload is a slice of them.
    /// (`unsafe`: a read into the buffer's uninitialized spare room, as `tokio`'s `read_buf`
    /// does; std's safe equivalent, `BorrowedBuf`, is not stable.)
    #[allow(unsafe_code)]
    fn fill(&mut self, flags: libc::c_int) -> std::io::Result<usize> {
        self.received.reserve(SOCKET_READ_CHUNK_BYTES);
        let spare = self.received.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes and lives across the call;
        // `recv` writes at most that many bytes into it and reads none of them.
        let read = unsafe {
            libc::recv(self.stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), flags)
        };
        let read = usize::try_from(read).map_err(|_| std::io::Error::last_os_error())?;
        // SAFETY: `recv` initialized the first `read` bytes of the spare room (`read` is at
        // most its length), which directly follow the buffer's current contents.
        unsafe { self.received.set_len(self.received.len() + read) };
        Ok(read)
    }

    /// Writes a raw bulk record of `payload` (1 byte to 3 MiB) on `id`: its wire header and the
    /// payload in vectored writes, so the payload is not copied into a frame first.
    pub(crate) fn send_record_from(
        &mut self,
        id: u32,
        kind: BulkKind,
        flow: BulkFlow,
        offset: u64,
        payload: &[u8],
    ) -> Result<(), RuntimeError> {
        let header = BulkRecord::wire_header(id, kind, flow, offset, payload.len())
            .map_err(|source| RuntimeError::Encode { what: "a raw bulk record", source })?;
        write_all_pair(&mut self.stream, &header, payload)
            .map_err(RuntimeError::io("write to relay", "agent.sock"))
    }

    /// The generation of the agent's `core.ready`.
    pub(crate) fn generation(&self) -> u8 {
        self.generation
    }
}

/// Writes all of `head` then all of `body` with `writev`, as `write_all` would write the two
/// concatenated.
fn write_all_pair(stream: &mut UnixStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() || !body.is_empty() {
        match stream.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// What [`Conn::recv_any`] returns.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message frame.
    Message(MessageFrame),
    /// A raw bulk record (flags `0x08`).
    Bulk(BulkRecord),
}

/// The next message or bulk record already in `received`; `None` when it needs more bytes.
/// A framing error leaves `received` as it was, so every later call reports it again.
fn next_incoming(received: &mut BytesMut) -> Result<Option<Incoming>, RuntimeError> {
    loop {
        let next =
            split_frame(received).map_err(|source| RuntimeError::Frame { peer: RELAY, source })?;
        let Some(raw) = next else { return Ok(None) };
        match decode_frame(&raw) {
            Ok(Decoded::Message(frame)) => return Ok(Some(Incoming::Message(frame))),
            Ok(Decoded::Bulk(record)) => return Ok(Some(Incoming::Bulk(record))),
            Ok(Decoded::Lease(_) | Decoded::LocalTransport(_)) => continue,
            Err(source) => return Err(RuntimeError::Decode { peer: RELAY, source }),
        }
    }
}

/// `Ok` when `ok`; otherwise an error naming what arrived instead.
pub(crate) fn expect(
    ok: bool,
    got: &MessageFrame,
    while_doing: &'static str,
) -> Result<(), RuntimeError> {
    if ok {
        return Ok(());
    }
    Err(RuntimeError::Unexpected {
        peer: RELAY,
        got: crate::supervisor::wire_name(&got.message),
        while_doing,
    })
}
