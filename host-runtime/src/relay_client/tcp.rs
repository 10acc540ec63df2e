//! A TCP tunnel to a port inside the sandbox, through the relay (generation 4, PROTOCOL.md §10):
//! what `Sandbox::connect_tcp`, `fetch`, `wait_for_listener` and `moat port-forward` stand on.
//!
//! ```text
//!  open: connect agent.sock ─► prologue + core.ready (generation ≥ 4) ─► core.tcp.connect {127.0.0.1, port}
//!        ◄─ core.tcp.connected                     ─► TcpTunnel (AsyncRead + AsyncWrite)
//!        ◄─ core.tcp.failed {error}                ─► TunnelError::Refused
//!  pump: user writes ─► [duplex buffer] ─► core.tcp.data (≤ 64 KiB) ; user shutdown ─► core.tcp.eof
//!        core.tcp.data ─► [duplex buffer] ─► user reads ; core.tcp.eof ─► user reads EOF
//!        core.tcp.closed ─► done ; core.tcp.failed ─► the user's next read past the data fails
//!        user drops the tunnel ─► core.tcp.close, the relay connection closes
//! ```
//!
//! Each tunnel is its own relay client (one connection, one id), so a tunnel that ends for any
//! reason takes its session with it: the relay tells the agent the client left. Memory is
//! bounded by the duplex buffer each way: while the user does not read, the pump does not read
//! the relay, and the agent in turn stops reading the guest socket.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use moat_protocol::generation::UnsupportedByPeer;
use moat_protocol::limits::{PROTOCOL_GENERATION, RELAY_PROLOGUE_BYTES};
use moat_protocol::payload::exec::Data;
use moat_protocol::payload::tcp::TcpConnect;
use moat_protocol::relay::{IdAllocator, Prologue, PrologueError, PrologueKind};
use moat_protocol::{
    DecodeError, Decoded, EncodeError, FrameDecoder, FrameError, Message, MessageFrame,
    MessageType, Negotiated, decode_frame,
};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, WriteHalf,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use crate::error::RuntimeError;
use crate::limits::{
    SOCKET_READ_CHUNK_BYTES, TUNNEL_BUFFER_BYTES, TUNNEL_CHUNK_BYTES, TUNNEL_OPEN_TIMEOUT_MS,
};
use crate::supervisor::wire_name;

/// The guest address every tunnel connects to: the sandbox's own loopback.
pub const GUEST_LOOPBACK: &str = "127.0.0.1";

/// Why a tunnel could not be opened, or broke.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The sandbox is unknown or not running, or its state could not be read.
    #[error(transparent)]
    Sandbox(#[from] RuntimeError),
    /// The relay socket did not accept the connection.
    #[error("connect to the relay {}: {source}", socket.display())]
    Relay {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The relay closed the connection (the sandbox ended?).
    #[error("the relay closed the connection while {0}")]
    RelayGone(&'static str),
    /// Writing to the relay failed.
    #[error("write to the relay: {0}")]
    RelayWrite(#[source] io::Error),
    /// An unusable prologue.
    #[error("relay prologue: {0}")]
    Prologue(#[from] PrologueError),
    /// The prologue's range holds no usable id (only id 0).
    #[error("the relay granted no usable id")]
    NoIds,
    /// A pre-0.5 relay, which moat does not drive.
    #[error("the relay sent a legacy (pre-0.5) prologue")]
    LegacyRelay,
    /// The relay's byte stream is not well framed.
    #[error("the relay sent a malformed frame stream: {0}")]
    Frame(#[from] FrameError),
    /// A frame that does not decode.
    #[error("the relay sent an undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// A frame we could not encode.
    #[error("encode {0}")]
    Encode(#[from] EncodeError),
    /// The agent's generation has no TCP sessions.
    #[error("the sandbox's agent cannot open TCP streams: {0}")]
    Generation(#[from] UnsupportedByPeer),
    /// A frame that makes no sense at this point.
    #[error("the relay sent {got} while {while_doing}")]
    Unexpected {
        /// Its type.
        got: String,
        /// What we were doing.
        while_doing: &'static str,
    },
    /// The agent could not connect to the guest port (`core.tcp.failed`).
    #[error("guest port {port}: {reason}")]
    Refused {
        /// The guest port.
        port: u16,
        /// The agent's reason (`connect 127.0.0.1:8080: Connection refused (os error 111)`).
        reason: String,
    },
    /// The agent answered neither way in time.
    #[error("guest port {port}: no answer from the sandbox within {timeout:?}")]
    OpenTimeout {
        /// The guest port.
        port: u16,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A connected relay client that has not opened its session yet.
struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    id: u32,
}

impl Connection {
    /// Connects, reads the prologue and the replayed `core.ready`, and checks that the agent's
    /// generation has TCP sessions.
    async fn open(socket: &Path) -> Result<Connection, TunnelError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| TunnelError::Relay { socket: socket.to_owned(), source })?;
        let (mut reader, writer) = stream.into_split();
        let mut prologue = [0u8; RELAY_PROLOGUE_BYTES];
        reader
            .read_exact(&mut prologue)
            .await
            .map_err(|_| TunnelError::RelayGone("reading the prologue"))?;
        let range = match Prologue::parse(prologue)? {
            PrologueKind::Current(range) => range,
            PrologueKind::Legacy { .. } => return Err(TunnelError::LegacyRelay),
        };
        let id = IdAllocator::new(range).next_id().ok_or(TunnelError::NoIds)?;
        let mut connection = Connection {
            reader,
            writer,
            decoder: FrameDecoder::new(),
            buf: vec![0u8; SOCKET_READ_CHUNK_BYTES],
            id,
        };
        let while_doing = "waiting for the replayed core.ready";
        match connection.next(while_doing).await? {
            MessageFrame { v, message: Message::Ready(_), .. } => {
                Negotiated::new(PROTOCOL_GENERATION, v).permits(MessageType::TcpConnect)?;
                Ok(connection)
            }
            other => Err(TunnelError::Unexpected { got: wire_name(&other.message), while_doing }),
        }
    }

    /// The next message frame (records are skipped).
    async fn next(&mut self, while_doing: &'static str) -> Result<MessageFrame, TunnelError> {
        loop {
            if let Some(raw) = self.decoder.next_frame()? {
                match decode_frame(&raw)? {
                    Decoded::Message(frame) => return Ok(frame),
                    _ => continue,
                }
            }
            let n = self.reader.read(&mut self.buf).await.unwrap_or(0);
            if n == 0 {
                return Err(TunnelError::RelayGone(while_doing));
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), TunnelError> {
        let bytes = MessageFrame::new(self.id, message).to_bytes()?;
        self.writer.write_all(&bytes).await.map_err(TunnelError::RelayWrite)
    }

    /// `core.tcp.connect` to the guest's loopback `port`, and its answer.
    async fn connect(&mut self, port: u16) -> Result<(), TunnelError> {
        let connect = TcpConnect { host: GUEST_LOOPBACK.to_owned(), port, bulk: None };
        self.send(Message::TcpConnect(connect)).await?;
        let while_doing = "waiting for core.tcp.connected";
        loop {
            let frame = self.next(while_doing).await?;
            if frame.id != self.id {
                continue;
            }
            return match frame.message {
                Message::TcpConnected => Ok(()),
                Message::TcpFailed(failed) => {
                    Err(TunnelError::Refused { port, reason: failed.error })
                }
                Message::Error(error) => Err(TunnelError::Refused { port, reason: error.message }),
                other => Err(TunnelError::Unexpected { got: wire_name(&other), while_doing }),
            };
        }
    }
}

/// An open TCP stream to a guest port: read what the guest program writes, write what it
/// reads; `shutdown` half-closes (the guest reads EOF), dropping it closes the session. A read
/// after the guest's data fails with the agent's reason when the session broke instead of
/// ending cleanly.
#[derive(Debug)]
pub struct TcpTunnel {
    inner: DuplexStream,
    failure: Arc<Mutex<Option<String>>>,
    port: u16,
    /// Dropped with the tunnel: tells the pump to close the session.
    _alive: oneshot::Sender<()>,
}

impl TcpTunnel {
    /// Opens a tunnel to `port` on the guest's loopback through the relay at `socket`.
    pub async fn open(socket: &Path, port: u16) -> Result<TcpTunnel, TunnelError> {
        let timeout = Duration::from_millis(TUNNEL_OPEN_TIMEOUT_MS);
        let opened = tokio::time::timeout(timeout, async {
            let mut connection = Connection::open(socket).await?;
            connection.connect(port).await?;
            Ok::<Connection, TunnelError>(connection)
        })
        .await;
        let connection = match opened {
            Ok(result) => result?,
            Err(_) => return Err(TunnelError::OpenTimeout { port, timeout }),
        };
        let (user, pump_side) = tokio::io::duplex(TUNNEL_BUFFER_BYTES);
        let failure = Arc::new(Mutex::new(None));
        let (alive, dropped) = oneshot::channel();
        let span = tracing::debug_span!("tcp_tunnel", port, id = connection.id);
        tokio::spawn(tracing::Instrument::instrument(
            pump(connection, pump_side, Arc::clone(&failure), dropped),
            span,
        ));
        Ok(TcpTunnel { inner: user, failure, port, _alive: alive })
    }

    /// The guest port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl AsyncRead for TcpTunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let asked = buf.remaining() > 0;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if asked && buf.filled().len() == before => {
                let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match failure {
                    Some(reason) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("guest port {}: {reason}", self.port),
                    ))),
                    None => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for TcpTunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why the pump stopped.
enum Stop {
    /// The session ended (closed, failed, or the relay went away); nothing more to send.
    Ended,
    /// The user dropped the tunnel: abort the session.
    Abandoned,
}

/// Moves bytes between the user's side and the relay until the session ends.
async fn pump(
    mut connection: Connection,
    side: DuplexStream,
    failure: Arc<Mutex<Option<String>>>,
    mut dropped: oneshot::Receiver<()>,
) {
    let (mut from_user, mut to_user) = tokio::io::split(side);
    let fail = |reason: String| {
        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    };
    let mut buf = vec![0u8; TUNNEL_CHUNK_BYTES];
    let mut user_eof = false;
    let stop = loop {
        tokio::select! {
            _ = &mut dropped => break Stop::Abandoned,
            read = from_user.read(&mut buf), if !user_eof => {
                let message = match read {
                    Ok(0) | Err(_) => {
                        user_eof = true;
                        Message::TcpEof
                    }
                    Ok(n) => Message::TcpData(Data::new(buf[..n].to_vec())),
                };
                if let Err(err) = connection.send(message).await {
                    fail(err.to_string());
                    break Stop::Ended;
                }
            }
            frame = connection.next("carrying a tcp session") => {
                match frame {
                    Ok(frame) if frame.id != connection.id => {}
                    Ok(frame) => match on_frame(frame.message, &mut to_user).await {
                        Ok(true) => {}
                        Ok(false) => break Stop::Ended,
                        Err(reason) => {
                            fail(reason);
                            break Stop::Ended;
                        }
                    },
                    Err(err) => {
                        fail(err.to_string());
                        break Stop::Ended;
                    }
                }
            }
        }
    };
    if let Stop::Abandoned = stop {
        let _ = connection.send(Message::TcpClose).await;
    }
    drop(from_user);
    let _ = to_user.shutdown().await;
    tracing::debug!("tcp tunnel ended");
}

/// One frame of the session: `Ok(true)` to go on, `Ok(false)` when it ended cleanly, `Err` with
/// the reason when it broke.
async fn on_frame(message: Message, to_user: &mut WriteHalf<DuplexStream>) -> Result<bool, String> {
    match message {
        Message::TcpData(data) => {
            // A user that closed its read side gets nothing more; the session goes on.
            let _ = to_user.write_all(&data.data).await;
            Ok(true)
        }
        Message::TcpEof => {
            let _ = to_user.shutdown().await;
            Ok(true)
        }
        Message::TcpClosed => Ok(false),
        Message::TcpFailed(failed) => Err(failed.error),
        Message::Error(error) => Err(error.message),
        other => Err(format!("unexpected {} on a tcp session", wire_name(&other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::payload::core::Ready;
    use moat_protocol::payload::tcp::TcpFailed;
    use moat_protocol::relay::Slot;
    use tokio::net::UnixListener;

    /// What the fake relay does once a tunnel's session is open.
    #[derive(Clone, Copy)]
    enum Script {
        /// Echo data upper-cased; answer the client's eof with eof and closed.
        Echo,
        /// Send some data, then `core.tcp.failed`.
        FailMidStream,
        /// Answer the connect with `core.tcp.failed`.
        Refuse,
        /// Greet with a generation-3 ready (no tcp).
        OldAgent,
    }

    /// A relay on a temporary socket serving one client by `script`.
    fn fake_relay(script: Script) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let prologue = Prologue::for_slot(Slot::new(0).unwrap()).to_bytes();
            writer.write_all(&prologue).await.unwrap();
            let mut ready = MessageFrame::new(0, Message::Ready(Ready::default()));
            if let Script::OldAgent = script {
                ready.v = 3;
            }
            writer.write_all(&ready.to_bytes().unwrap()).await.unwrap();
            let mut decoder = FrameDecoder::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let raw = loop {
                    if let Some(raw) = decoder.next_frame().unwrap() {
                        break raw;
                    }
                    let n = reader.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    decoder.push(&buf[..n]);
                };
                let Ok(Decoded::Message(frame)) = decode_frame(&raw) else { panic!() };
                let id = frame.id;
                let replies = match (script, frame.message) {
                    (Script::Refuse, Message::TcpConnect(c)) => {
                        let error = format!("connect {}:{}: Connection refused", c.host, c.port);
                        vec![Message::TcpFailed(TcpFailed { error })]
                    }
                    (Script::FailMidStream, Message::TcpConnect(_)) => vec![
                        Message::TcpConnected,
                        Message::TcpData(Data::new(b"partial".to_vec())),
                        Message::TcpFailed(TcpFailed { error: "read: reset".into() }),
                    ],
                    (_, Message::TcpConnect(_)) => vec![Message::TcpConnected],
                    (_, Message::TcpData(d)) => {
                        vec![Message::TcpData(Data::new(d.data.to_ascii_uppercase()))]
                    }
                    (_, Message::TcpEof) => vec![Message::TcpEof, Message::TcpClosed],
                    _ => vec![],
                };
                for reply in replies {
                    let bytes = MessageFrame::new(id, reply).to_bytes().unwrap();
                    writer.write_all(&bytes).await.unwrap();
                }
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn a_tunnel_carries_data_and_half_close_both_ways() {
        let (_dir, path) = fake_relay(Script::Echo);
        let mut tunnel = TcpTunnel::open(&path, 80).await.unwrap();
        tunnel.write_all(b"hello").await.unwrap();
        tunnel.shutdown().await.unwrap();
        let mut got = Vec::new();
        tunnel.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HELLO");
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_typed_error_with_the_agents_reason() {
        let (_dir, path) = fake_relay(Script::Refuse);
        match TcpTunnel::open(&path, 9).await {
            Err(TunnelError::Refused { port: 9, reason }) => {
                assert_eq!(reason, "connect 127.0.0.1:9: Connection refused")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failure_mid_stream_fails_the_read_after_the_data() {
        let (_dir, path) = fake_relay(Script::FailMidStream);
        let mut tunnel = TcpTunnel::open(&path, 80).await.unwrap();
        let mut got = Vec::new();
        let err = tunnel.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(got, b"partial");
        assert_eq!(err.to_string(), "guest port 80: read: reset");
    }

    #[tokio::test]
    async fn an_agent_without_generation_4_is_refused_before_any_tcp_frame() {
        let (_dir, path) = fake_relay(Script::OldAgent);
        let err = TcpTunnel::open(&path, 80).await.unwrap_err();
        assert!(matches!(err, TunnelError::Generation(_)), "{err}");
    }
}
