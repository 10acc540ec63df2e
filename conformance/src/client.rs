//! The suite's relay client: a blocking unix-socket connection that does the handshake, hands out
//! ids from its range, gates sends on the negotiated generation, and never waits past its case's
//! deadline. It depends on `moat-protocol` only, so it can drive anybody's relay.
//!
//! ```text
//!  connect ─► read 8-byte prologue ─► read core.ready (id 0, flags 0) ─► negotiated = min(10, v)
//!          ─► send(id, message) / recv() ... every read and write bounded by the deadline
//! ```
//!
//! Exec and filesystem conveniences built on it live in [`crate::ops`].

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use moat_protocol::generation::Negotiated;
use moat_protocol::limits::RELAY_PROLOGUE_BYTES;
use moat_protocol::payload::core::Ready;
use moat_protocol::relay::{IdAllocator, IdRange, Prologue, PrologueKind};
use moat_protocol::{
    Decoded, Flags, FrameDecoder, Message, MessageFrame, MessageType, RawFrame, decode_frame,
};

use crate::error::ClientError;
use crate::limits::{READ_BUFFER_BYTES, SUITE_GENERATION};

/// When a case must be finished by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: Instant,
    at: Instant,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        let started = Instant::now();
        Deadline { started, at: started + budget }
    }

    /// Time left, or `None` once passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.at.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    /// The earlier of this deadline and `within` from now.
    pub fn capped(&self, within: Duration) -> Deadline {
        Deadline { started: self.started, at: self.at.min(Instant::now() + within) }
    }

    fn timeout(&self, waiting_for: &str) -> ClientError {
        ClientError::Timeout {
            waiting_for: waiting_for.to_owned(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// One client connection to a relay, past its handshake.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
    prologue: [u8; RELAY_PROLOGUE_BYTES],
    range: IdRange,
    ids: IdAllocator,
    ready_frame: RawFrame,
    ready_v: u8,
    ready: Ready,
    negotiated: Negotiated,
    deadline: Deadline,
}

impl Conn {
    /// Connects to the relay at `path` and completes the handshake (PROTOCOL.md §13.2): the
    /// 8-byte prologue, then one `core.ready` frame on id 0 with flags 0.
    pub fn connect(path: &Path, deadline: Deadline) -> Result<Conn, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { path: path.display().to_string(), source })?;
        let mut prologue = [0u8; RELAY_PROLOGUE_BYTES];
        set_read_timeout(&stream, &deadline, "the relay prologue")?;
        (&stream)
            .read_exact(&mut prologue)
            .map_err(|e| io_error(e, "read", &deadline, "the relay prologue"))?;
        let range = match Prologue::parse(prologue)? {
            PrologueKind::Current(range) => range,
            PrologueKind::Legacy { offset, .. } => {
                return Err(ClientError::LegacyPrologue { offset });
            }
        };
        let mut conn = Conn {
            stream,
            decoder: FrameDecoder::new(),
            prologue,
            range,
            ids: IdAllocator::new(range),
            ready_frame: RawFrame { id: 0, flags: Flags::NONE, body: Default::default() },
            ready_v: 0,
            ready: Ready::default(),
            negotiated: Negotiated::new(SUITE_GENERATION, 0),
            deadline,
        };
        let frame = conn.recv_raw("core.ready")?;
        let decoded = decode_frame(&frame)?;
        match decoded {
            Decoded::Message(MessageFrame { id: 0, v, message: Message::Ready(ready) })
                if frame.flags == Flags::NONE =>
            {
                conn.ready_v = v;
                conn.ready = ready;
                conn.negotiated = Negotiated::new(SUITE_GENERATION, v);
                conn.ready_frame = frame;
                Ok(conn)
            }
            other => Err(ClientError::NotReady { found: describe(&frame, &other) }),
        }
    }

    /// The 8 prologue bytes as received.
    pub fn prologue(&self) -> [u8; RELAY_PROLOGUE_BYTES] {
        self.prologue
    }

    /// The id range the relay gave this client.
    pub fn range(&self) -> IdRange {
        self.range
    }

    /// The ready frame as received.
    pub fn ready_frame(&self) -> &RawFrame {
        &self.ready_frame
    }

    /// The envelope generation `v` of the ready frame.
    pub fn ready_v(&self) -> u8 {
        self.ready_v
    }

    /// The decoded ready payload.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// `min(10, ready.v)`.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Whether generation-10 exec flow control applies: the ready frame carries `exec_limits` and
    /// the negotiated generation is 10 (PROTOCOL.md §8.4).
    pub fn exec_flow_control(&self) -> bool {
        self.negotiated.get() >= 10 && self.ready.exec_limits.is_some()
    }

    /// This connection's deadline.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Replaces this connection's deadline (the fuzzer gives every step its own).
    pub fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }

    /// The next frame if one arrives within `within`, `Ok(None)` if none does. The connection's
    /// own deadline still applies.
    pub fn poll_raw(&mut self, within: Duration) -> Result<Option<RawFrame>, ClientError> {
        let saved = self.deadline;
        self.deadline = saved.capped(within);
        let result = self.recv_raw("a reply");
        self.deadline = saved;
        match result {
            Ok(frame) => Ok(Some(frame)),
            Err(ClientError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next unused id of this client's range.
    pub fn next_id(&mut self) -> Result<u32, ClientError> {
        self.ids.next_id().ok_or(ClientError::IdsExhausted)
    }

    /// Sends `message` on `id` with envelope generation 10, after checking the negotiated
    /// generation permits its type.
    pub fn send(&mut self, id: u32, message: Message) -> Result<(), ClientError> {
        if let Some(t) = message.message_type() {
            self.negotiated.permits(t)?;
        }
        self.send_unchecked(MessageFrame { id, v: SUITE_GENERATION, message })
    }

    /// Sends a frame without the generation gate (for the cases that test the gate's far side).
    pub fn send_unchecked(&mut self, frame: MessageFrame) -> Result<(), ClientError> {
        let bytes = frame.to_bytes()?;
        self.send_bytes(&bytes)
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let waiting_for = "the relay to accept bytes";
        let left = self.deadline.remaining().ok_or_else(|| self.deadline.timeout(waiting_for))?;
        self.stream
            .set_write_timeout(Some(left))
            .map_err(|source| ClientError::Io { op: "write", source })?;
        self.stream.write_all(bytes).map_err(|e| io_error(e, "write", &self.deadline, waiting_for))
    }

    /// The next frame from the relay, undecoded.
    pub fn recv_raw(&mut self, waiting_for: &str) -> Result<RawFrame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            if self.fill(waiting_for)? == 0 {
                self.decoder.finish()?;
                return Err(ClientError::Closed { waiting_for: waiting_for.to_owned() });
            }
        }
    }

    /// The next message frame from the relay. Raw bulk, lease and local-transport records are
    /// unexpected on a connection that never offered them.
    pub fn recv(&mut self, waiting_for: &str) -> Result<MessageFrame, ClientError> {
        let frame = self.recv_raw(waiting_for)?;
        match decode_frame(&frame)? {
            Decoded::Message(message) => Ok(message),
            other => Err(ClientError::Unexpected { id: frame.id, what: describe(&frame, &other) }),
        }
    }

    /// The next message frame, which must be on `id`.
    pub fn recv_on(&mut self, id: u32, waiting_for: &str) -> Result<MessageFrame, ClientError> {
        let frame = self.recv(waiting_for)?;
        if frame.id != id {
            return Err(ClientError::Unexpected {
                id: frame.id,
                what: format!(
                    "{} (waiting for {waiting_for} on id {id})",
                    frame.message.wire_name()
                ),
            });
        }
        Ok(frame)
    }

    /// Waits up to `within` for the relay to close this connection, discarding whatever it sends
    /// first. Returns how many bytes arrived before the close.
    pub fn wait_closed(&mut self, within: Duration) -> Result<usize, ClientError> {
        let waiting_for = "the relay to close the connection";
        let deadline = self.deadline.capped(within);
        let mut seen = self.decoder.buffered();
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        loop {
            set_read_timeout(&self.stream, &deadline, waiting_for)?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(seen),
                Ok(n) => seen += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    return Ok(seen);
                }
                Err(e) => return Err(io_error(e, "read", &deadline, waiting_for)),
            }
        }
    }

    /// Sends `core.ping` on a fresh id and waits for its `core.pong`; returns the round trip.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let id = self.next_id()?;
        let sent = Instant::now();
        self.send(id, Message::Ping)?;
        let reply = self.recv_on(id, "core.pong")?;
        let elapsed = sent.elapsed();
        match reply.message {
            Message::Pong => Ok(elapsed),
            other => Err(ClientError::Unexpected {
                id,
                what: format!("{} instead of core.pong", other.wire_name()),
            }),
        }
    }

    fn fill(&mut self, waiting_for: &str) -> Result<usize, ClientError> {
        let mut buf = [0u8; READ_BUFFER_BYTES];
        loop {
            set_read_timeout(&self.stream, &self.deadline, waiting_for)?;
            match self.stream.read(&mut buf) {
                Ok(n) => {
                    self.decoder.push(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => return Err(io_error(e, "read", &self.deadline, waiting_for)),
            }
        }
    }
}

fn set_read_timeout(
    stream: &UnixStream,
    deadline: &Deadline,
    waiting_for: &str,
) -> Result<(), ClientError> {
    let left = deadline.remaining().ok_or_else(|| deadline.timeout(waiting_for))?;
    stream.set_read_timeout(Some(left)).map_err(|source| ClientError::Io { op: "read", source })
}

fn io_error(
    e: std::io::Error,
    op: &'static str,
    deadline: &Deadline,
    waiting_for: &str,
) -> ClientError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => deadline.timeout(waiting_for),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            ClientError::Closed { waiting_for: waiting_for.to_owned() }
        }
        _ => ClientError::Io { op, source: e },
    }
}

/// A short description of a frame for error messages.
pub(crate) fn describe(frame: &RawFrame, decoded: &Decoded) -> String {
    let what = match decoded {
        Decoded::Message(m) => m.message.wire_name().to_owned(),
        Decoded::Bulk(_) => "a raw bulk record".to_owned(),
        Decoded::Lease(_) => "an MSBL lease record".to_owned(),
        Decoded::LocalTransport(_) => "an MSBS local-transport frame".to_owned(),
    };
    format!("{what} (id {}, flags {})", frame.id, frame.flags)
}

/// Whether `t` may be sent on a connection that negotiated `negotiated`.
pub fn permits(negotiated: Negotiated, t: MessageType) -> bool {
    negotiated.permits(t).is_ok()
}
