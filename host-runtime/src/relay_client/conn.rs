//! A raw relay client, as an SDK would write one: one socket, frames in and out, ids from the
//! prologue's range. The filesystem client ([`crate::relay_client::fs`]) runs on it, and the
//! bench drives pings and output streams through it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use moat_protocol::payload::exec::Consumed;
use moat_protocol::relay::IdAllocator;
use moat_protocol::{FrameDecoder, Message, MessageFrame};

use crate::error::RuntimeError;
use crate::limits::SOCKET_READ_CHUNK_BYTES;
use crate::relay_client::{connect_relay, next_decoded, recv_message};

const RELAY: &str = "the relay";

/// A connected relay client that has seen the replayed `core.ready`.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
    ids: IdAllocator,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    /// The output window, when exec output must be acknowledged (generation 10 with
    /// `exec_limits`).
    output_window: Option<u64>,
}

impl Conn {
    /// Connects to the relay socket, reads the prologue and the replayed `core.ready`.
    pub(crate) fn connect(socket: &Path) -> Result<Conn, RuntimeError> {
        let (stream, range) = connect_relay(socket)?;
        let mut conn = Conn {
            stream,
            decoder: FrameDecoder::new(),
            ids: IdAllocator::new(range),
            read_buf: vec![0u8; SOCKET_READ_CHUNK_BYTES],
            write_buf: Vec::new(),
            output_window: None,
        };
        let ready = conn.recv("waiting for the replayed core.ready")?;
        match ready.message {
            Message::Ready(ready_payload) => {
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
        let Some(consumed) = acks.due(self.decoder.buffered() == 0, window) else {
            return Ok(());
        };
        let ack = Message::ExecOutputAck(Consumed { consumed });
        self.send(&MessageFrame::new(id, ack), "core.exec.output.ack")
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
        recv_message(&mut self.stream, &mut self.decoder, &mut self.read_buf, while_doing)
    }

    /// The next message frame if one has already arrived, without waiting for one: what a
    /// sender checks between chunks, so it stops at the peer's first terminal answer.
    pub(crate) fn try_recv(
        &mut self,
        while_doing: &'static str,
    ) -> Result<Option<MessageFrame>, RuntimeError> {
        loop {
            if let Some(frame) = next_decoded(&mut self.decoder)? {
                return Ok(Some(frame));
            }
            self.stream
                .set_nonblocking(true)
                .map_err(RuntimeError::io("poll relay socket", "agent.sock"))?;
            let read = self.stream.read(&mut self.read_buf);
            self.stream
                .set_nonblocking(false)
                .map_err(RuntimeError::io("poll relay socket", "agent.sock"))?;
            match read {
                Ok(0) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
                Ok(n) => self.decoder.push(&self.read_buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(RuntimeError::PeerGone { peer: RELAY, while_doing }),
            }
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
