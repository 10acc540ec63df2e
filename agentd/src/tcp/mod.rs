//! The agent's TCP service (generation 4, PROTOCOL.md §10): a relay client opens a TCP stream to
//! a port inside the sandbox with `core.tcp.connect`, and the agent connects to it from inside,
//! so the guest needs no network device at all (on the namespace backend the agent lives in the
//! sandbox's network namespace; in a VM, on the guest's own loopback).
//!
//! ```text
//!  H→G core.tcp.connect {host, port}      ─► TcpSession task: connect (30 s)
//!  G→H core.tcp.connected | core.tcp.failed "connect 127.0.0.1:8080: Connection refused (os error 111)"
//!  H→G core.tcp.data {data} / core.tcp.eof ─► queue ─► socket (eof: shutdown(SHUT_WR))
//!  G→H core.tcp.data {data} / core.tcp.eof ◄─ socket (64 KiB reads; eof: the guest closed its side)
//!  G→H core.tcp.closed once both halves are done, or core.tcp.failed on a read/write error
//!  H→G core.tcp.close ─► the session is dropped at once, no answer
//! ```
//!
//! `host` is an IP address (v4, or v6 with or without brackets) or `localhost`: the agent is a
//! static binary that resolves no names (no NSS), and a name would be resolved by whatever
//! resolver the guest image carries. Whatever address is given, the connection starts inside the
//! sandbox, so it reaches what the sandbox's own network reaches and nothing more.
//!
//! Bounds: at most [`MAX_TCP_SESSIONS`] sessions at once (the next connect gets `core.tcp.failed`
//! naming the limit); per session at most [`TCP_QUEUE_BYTES`] of host data waiting for the guest
//! program, after which the driver stops reading the channel until there is room, for at most
//! [`TCP_STALL_TIMEOUT`]: a guest program that takes nothing for that long has its session
//! failed, so it cannot hold the agent's input forever. Raw bulk (a `bulk` offer) is not built
//! for TCP: such a connect is refused with `core.tcp.failed`.

#![forbid(unsafe_code)]

mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::relay::IdRange;

use crate::outbound::Outbound;

pub use self::session::TcpRoom;
use self::session::{Pushed, TcpSession};

/// Sessions open at once, across all relay clients.
pub const MAX_TCP_SESSIONS: usize = 128;

/// How long a connect may take before the session fails (PROTOCOL.md §10).
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the guest socket per `core.tcp.data` (PROTOCOL.md §10: 64 KiB chunks).
pub const TCP_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Host chunks one session may have queued ahead of the guest program.
pub const TCP_QUEUE_CHUNKS: usize = 64;

/// Host bytes one session may have queued ahead of the guest program.
pub const TCP_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// How long the driver waits for a full session queue to drain before failing that session.
pub const TCP_STALL_TIMEOUT: Duration = Duration::from_secs(10);

// A full-size tcp.data frame always fits an empty queue.
const _: () = assert!(moat_protocol::limits::MAX_FRAME_BYTES <= TCP_QUEUE_BYTES);
const _: () = assert!(TCP_QUEUE_BYTES <= u32::MAX as usize);
// A read chunk plus its envelope fits a frame.
const _: () = assert!(TCP_READ_CHUNK_BYTES + 1024 <= moat_protocol::limits::MAX_BODY_BYTES);

/// The answer to a tcp frame that cannot be served: a terminal `core.tcp.failed`.
pub type Refused = TcpFailed;

fn refused(error: String) -> Refused {
    TcpFailed { error }
}

/// The text every tcp follow-up on an id without a session gets (PROTOCOL.md §10).
pub fn unknown_session(id: u32) -> Refused {
    refused(format!("unknown TCP session: {id}"))
}

/// The addresses `host` names, or why it names none the agent will connect to.
fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    bare.parse::<IpAddr>().map(|ip| vec![SocketAddr::new(ip, port)]).map_err(|_| {
        "this agent resolves no host names: give an IP address or localhost".to_owned()
    })
}

/// `host:port` as errors name it (`[::1]:80` for IPv6).
fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The TCP sessions of one agent.
#[derive(Debug)]
pub struct TcpService {
    out: Outbound,
    sessions: HashMap<u32, TcpSession>,
}

impl TcpService {
    /// A service answering on `out`.
    pub fn new(out: Outbound) -> TcpService {
        TcpService { out, sessions: HashMap::new() }
    }

    /// `core.tcp.connect` on `id` (`v` is the envelope's generation). `Ok`: a task now owns the
    /// session and answers it. `Err`: the terminal answer to send now.
    pub fn connect(&mut self, id: u32, v: u8, connect: TcpConnect) -> Result<(), Refused> {
        self.prune();
        let target = target(&connect.host, connect.port);
        if connect.bulk.is_some() {
            return Err(refused(if v < 8 {
                format!(
                    "connect {target}: a raw bulk offer needs generation 8, the request has {v}"
                )
            } else {
                format!(
                    "connect {target}: raw bulk transfers for TCP are not built in this agent; connect without a bulk offer"
                )
            }));
        }
        if let Some(old) = self.sessions.remove(&id) {
            old.abort();
            return Err(refused(format!(
                "connect {target}: id {id} already has a TCP session; both are closed"
            )));
        }
        if self.sessions.len() >= MAX_TCP_SESSIONS {
            return Err(refused(format!(
                "connect {target}: the agent already has the maximum of {MAX_TCP_SESSIONS} open TCP sessions"
            )));
        }
        let addrs = addresses(&connect.host, connect.port)
            .map_err(|why| refused(format!("connect {target}: {why}")))?;
        let session = TcpSession::spawn(id, target, addrs, self.out.clone());
        self.sessions.insert(id, session);
        Ok(())
    }

    /// `core.tcp.data` on `id`. An empty chunk carries nothing and is dropped.
    pub fn data(&mut self, id: u32, data: Vec<u8>) -> Result<(), Refused> {
        let Some(session) = self.sessions.get(&id) else { return Err(unknown_session(id)) };
        if session.host_eof() {
            self.drop_session(id);
            return Err(refused(format!("tcp data after eof on session {id}")));
        }
        if data.is_empty() {
            return Ok(());
        }
        match session.push(data) {
            Pushed::Queued => Ok(()),
            Pushed::Overflowed => {
                self.drop_session(id);
                Err(refused(format!(
                    "session {id}: more than {TCP_QUEUE_BYTES} bytes queued for a guest program that is not reading"
                )))
            }
            Pushed::Gone => {
                self.sessions.remove(&id);
                Err(unknown_session(id))
            }
        }
    }

    /// `core.tcp.eof` on `id`: the host will send no more; the guest's socket is half-closed
    /// once what is queued is written.
    pub fn eof(&mut self, id: u32) -> Result<(), Refused> {
        let Some(session) = self.sessions.get_mut(&id) else { return Err(unknown_session(id)) };
        if session.host_eof() {
            return Ok(());
        }
        match session.eof() {
            Pushed::Queued => Ok(()),
            Pushed::Overflowed => {
                self.drop_session(id);
                Err(refused(format!("session {id}: no room to queue the eof")))
            }
            Pushed::Gone => {
                self.sessions.remove(&id);
                Err(unknown_session(id))
            }
        }
    }

    /// `core.tcp.close` on `id`: drop the session at once; it gets no answer (PROTOCOL.md §10).
    pub fn close(&mut self, id: u32) -> Result<(), Refused> {
        // A session that already answered is forgotten quietly too: its close crossed the answer.
        match self.sessions.remove(&id) {
            Some(session) => {
                session.abort();
                Ok(())
            }
            None => Err(unknown_session(id)),
        }
    }

    /// After a `core.tcp.data` on `id`: a waiter to await before reading the next frame when
    /// that session's queue could not take another full-size chunk; `None` otherwise.
    pub fn room(&self, id: u32) -> Option<TcpRoom> {
        self.sessions.get(&id).and_then(TcpSession::room)
    }

    /// The guest program on `id` took nothing for [`TCP_STALL_TIMEOUT`] with a full queue: the
    /// session fails with a terminal answer, which the caller sends.
    pub fn stalled(&mut self, id: u32) -> Refused {
        self.drop_session(id);
        refused(format!(
            "session {id}: the guest program read nothing for {}s with its queue full",
            TCP_STALL_TIMEOUT.as_secs()
        ))
    }

    /// The relay client owning `range` is gone: its sessions are dropped without an answer.
    pub fn release_range(&mut self, range: IdRange) {
        let doomed: Vec<u32> =
            self.sessions.keys().copied().filter(|id| range.contains(*id)).collect();
        for id in &doomed {
            self.drop_session(*id);
        }
        tracing::debug!(
            range.start,
            range.end_exclusive,
            closed = doomed.len(),
            "tcp range released"
        );
    }

    /// Shutdown: drops every session.
    pub fn abort_all(&mut self) {
        for (_, session) in self.sessions.drain() {
            session.abort();
        }
    }

    /// Sessions whose task still runs.
    pub fn active_sessions(&self) -> usize {
        self.sessions.values().filter(|s| !s.is_finished()).count()
    }

    fn drop_session(&mut self, id: u32) {
        if let Some(session) = self.sessions.remove(&id) {
            session.abort();
        }
    }

    /// Forgets sessions whose task has answered.
    fn prune(&mut self) {
        self.sessions.retain(|_, session| !session.is_finished());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::payload::bulk::BulkOffer;
    use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// How long a test waits for a frame before failing.
    const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

    struct Harness {
        tcp: TcpService,
        rx: mpsc::Receiver<Vec<u8>>,
        decoder: FrameDecoder,
    }

    impl Harness {
        fn new() -> Harness {
            let (out, rx) = Outbound::channel();
            Harness { tcp: TcpService::new(out), rx, decoder: FrameDecoder::new() }
        }

        fn connect(&mut self, id: u32, port: u16) -> Result<(), Refused> {
            let connect = TcpConnect { host: "127.0.0.1".into(), port, bulk: None };
            self.tcp.connect(id, 10, connect)
        }

        async fn next(&mut self) -> MessageFrame {
            loop {
                if let Some(raw) = self.decoder.next_frame().expect("well-formed frames") {
                    match decode_frame(&raw).expect("decodable frame") {
                        Decoded::Message(frame) => return frame,
                        other => panic!("unexpected record {other:?}"),
                    }
                }
                let bytes = tokio::time::timeout(FRAME_TIMEOUT, self.rx.recv())
                    .await
                    .expect("a frame within the timeout")
                    .expect("the outbound queue is open");
                self.decoder.push(&bytes);
            }
        }

        /// The bytes of `core.tcp.data` frames on `id` up to its `core.tcp.eof`.
        async fn data_until_eof(&mut self, id: u32) -> Vec<u8> {
            let mut got = Vec::new();
            loop {
                let frame = self.next().await;
                assert_eq!(frame.id, id);
                match frame.message {
                    Message::TcpData(d) => got.extend_from_slice(&d.data),
                    Message::TcpEof => return got,
                    other => panic!("expected data or eof, got {other:?}"),
                }
            }
        }
    }

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    #[tokio::test]
    async fn a_session_carries_bytes_both_ways_and_closes_after_both_eofs() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(5, port).unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert_eq!(h.next().await.message, Message::TcpConnected);

        h.tcp.data(5, b"ping".to_vec()).unwrap();
        h.tcp.eof(5).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the host's eof half-closes the guest socket");

        server.write_all(b"pong").await.unwrap();
        drop(server);
        assert_eq!(h.data_until_eof(5).await, b"pong");
        let closed = h.next().await;
        assert_eq!((closed.id, closed.message), (5, Message::TcpClosed));
    }

    #[tokio::test]
    async fn the_guest_may_finish_first_and_the_host_keeps_writing_until_its_eof() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(6, port).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(h.next().await.message, Message::TcpConnected);
        let (mut read, mut write) = server.into_split();
        write.write_all(b"banner").await.unwrap();
        write.shutdown().await.unwrap();
        assert_eq!(h.data_until_eof(6).await, b"banner");

        h.tcp.data(6, b"late".to_vec()).unwrap();
        h.tcp.eof(6).unwrap();
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"late");
        assert_eq!(h.next().await.message, Message::TcpClosed);
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_naming_the_target() {
        let (listener, port) = listener().await;
        drop(listener);
        let mut h = Harness::new();
        h.connect(7, port).unwrap();
        let frame = h.next().await;
        let Message::TcpFailed(failed) = frame.message else { panic!("{frame:?}") };
        assert_eq!(frame.id, 7);
        assert!(
            failed.error.starts_with(&format!("connect 127.0.0.1:{port}: ")),
            "{}",
            failed.error
        );
        assert!(failed.error.contains("refused"), "{}", failed.error);
    }

    #[tokio::test]
    async fn host_names_other_than_localhost_are_refused_at_once() {
        let mut h = Harness::new();
        let connect = TcpConnect { host: "example.com".into(), port: 80, bulk: None };
        let err = h.tcp.connect(1, 10, connect).unwrap_err();
        assert_eq!(
            err.error,
            "connect example.com:80: this agent resolves no host names: give an IP address or localhost"
        );
        assert_eq!(addresses("[::1]", 8).unwrap(), [SocketAddr::from((Ipv6Addr::LOCALHOST, 8))]);
        assert_eq!(addresses("localhost", 8).unwrap().len(), 2);
        assert_eq!(target("::1", 8), "[::1]:8");
    }

    #[tokio::test]
    async fn a_bulk_offer_is_refused_with_a_reason() {
        let mut h = Harness::new();
        let offer = BulkOffer {
            format: 1,
            max_record_payload: 256 * 1024,
            guest_to_host_credit_limit: 8 * 1024 * 1024,
        };
        let connect = TcpConnect { host: "127.0.0.1".into(), port: 80, bulk: Some(offer) };
        let err = h.tcp.connect(1, 10, connect).unwrap_err();
        assert!(err.error.contains("raw bulk transfers for TCP are not built"), "{}", err.error);
    }

    #[tokio::test]
    async fn follow_ups_without_a_session_get_unknown_tcp_session() {
        let mut h = Harness::new();
        assert_eq!(h.tcp.data(4, b"x".to_vec()), Err(unknown_session(4)));
        assert_eq!(h.tcp.eof(4), Err(unknown_session(4)));
        assert_eq!(h.tcp.close(4), Err(unknown_session(4)));
        assert_eq!(unknown_session(4).error, "unknown TCP session: 4");
    }

    #[tokio::test]
    async fn close_drops_the_session_without_an_answer_and_the_guest_sees_the_end() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(8, port).unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        assert_eq!(h.next().await.message, Message::TcpConnected);
        h.tcp.close(8).unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(FRAME_TIMEOUT, server.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "the guest socket ended: {n:?}");
        assert_eq!(h.tcp.data(8, b"x".to_vec()), Err(unknown_session(8)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(h.rx.try_recv().is_err(), "close got an answer");
    }

    #[tokio::test]
    async fn data_after_the_hosts_eof_fails_the_session() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(9, port).unwrap();
        let _server = listener.accept().await.unwrap();
        h.tcp.eof(9).unwrap();
        let err = h.tcp.data(9, b"x".to_vec()).unwrap_err();
        assert_eq!(err.error, "tcp data after eof on session 9");
        assert_eq!(h.tcp.active_sessions(), 0);
    }

    #[tokio::test]
    async fn sessions_past_the_limit_are_refused_naming_it() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        for id in 1..=MAX_TCP_SESSIONS as u32 {
            h.connect(id, port).unwrap();
        }
        let err = h.connect(10_000, port).unwrap_err();
        assert!(err.error.contains(&format!("maximum of {MAX_TCP_SESSIONS}")), "{}", err.error);
        h.tcp.release_range(IdRange { start: 1, end_exclusive: 33_554_431 });
        assert_eq!(h.tcp.active_sessions(), 0);
        h.connect(33_554_432, port).unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn a_reused_id_closes_both_sessions() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(3, port).unwrap();
        let err = h.connect(3, port).unwrap_err();
        assert!(err.error.contains("already has a TCP session"), "{}", err.error);
        assert_eq!(h.tcp.active_sessions(), 0);
        drop(listener);
    }

    #[tokio::test]
    async fn a_chunk_past_the_queue_bound_fails_the_session() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(2, port).unwrap();
        // The test runtime is single-threaded and nothing yields: the session task takes nothing
        // from its queue, as a guest program that never reads.
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..TCP_QUEUE_BYTES / chunk.len() {
            h.tcp.data(2, chunk.clone()).unwrap();
        }
        let err = h.tcp.data(2, chunk).unwrap_err();
        assert!(err.error.contains("not reading"), "{}", err.error);
        assert_eq!(h.tcp.active_sessions(), 0);
        drop(listener);
    }

    #[tokio::test]
    async fn room_is_offered_while_the_queue_cannot_take_a_full_frame() {
        let (listener, port) = listener().await;
        let mut h = Harness::new();
        h.connect(2, port).unwrap();
        assert!(h.tcp.room(2).is_none(), "an empty queue has room");
        // 5 MiB queued leaves less than a full frame of budget.
        h.tcp.data(2, vec![1u8; 5 * 1024 * 1024]).unwrap();
        assert!(h.tcp.room(2).is_some());
        let failed = h.tcp.stalled(2);
        assert!(failed.error.contains("read nothing"), "{}", failed.error);
        assert!(h.tcp.room(2).is_none());
        drop(listener);
    }
}
