//! tcp: generation-4 TCP sessions to a port inside the sandbox (PROTOCOL.md §10): connect,
//! `core.tcp.data` both ways, half-close with `core.tcp.eof` in either direction then
//! `core.tcp.closed`, `core.tcp.failed` for a closed port and for data on an unknown session, and
//! `core.tcp.close` answered by nothing.
//!
//! Every reply's flags byte is checked by the decoder (a type's flags are fixed, §1.2).
//!
//! The guest end is a one-connection python3 server started with an exec on a second client
//! connection: it listens on a free loopback port, prints the port, serves one connection as its
//! mode says, prints what it read, and exits. A root without python3 skips those cases.

use std::time::Duration;

use moat_protocol::payload::exec::{Data, ExecRequest};
use moat_protocol::payload::tcp::TcpConnect;
use moat_protocol::{Message, MessageFrame};

use super::{exit_code, skip_if_missing, text};
use crate::client::Conn;
use crate::error::{CaseError, ensure, fail};
use crate::ops::ExecOutcome;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// The guest server. `argv[1]`: `echo` (read to EOF, answer it upper-cased, close), `banner`
/// (send `banner` and half-close first, then read to EOF) or `drain` (read until EOF or reset).
const SERVER: &str = r#"
import socket, sys
mode = sys.argv[1]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
s.settimeout(20)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(20)
if mode == "banner":
    c.sendall(b"banner")
    c.shutdown(socket.SHUT_WR)
data = b""
try:
    while True:
        b = c.recv(65536)
        if not b:
            break
        data += b
except ConnectionResetError:
    data += b"<reset>"
if mode == "echo":
    c.sendall(data.upper())
c.close()
print(data.decode(errors="replace"), flush=True)
"#;

/// A port nothing listens on in a fresh sandbox (tcpmux; a server there would be remarkable).
const CLOSED_PORT: u16 = 1;

/// How long `close_gets_no_reply` waits for a reply that must not come.
const NO_REPLY_WAIT: Duration = Duration::from_millis(500);

pub(crate) const CASES: &[Case] = &[
    tcp_case(
        "data_then_half_close",
        "data reaches a guest server, whose answer comes back after the client's eof, then eof and closed",
        data_then_half_close,
    ),
    tcp_case(
        "guest_half_closes_first",
        "the guest's eof arrives first and the client can still send until its own eof, then closed",
        guest_half_closes_first,
    ),
    tcp_case(
        "connect_refused",
        "a connect to a closed guest port gets a terminal core.tcp.failed with a reason",
        connect_refused,
    ),
    tcp_case(
        "close_gets_no_reply",
        "core.tcp.close ends the session at once: no terminal frame, and the guest server sees the end",
        close_gets_no_reply,
    ),
    tcp_case(
        "unknown_session",
        "core.tcp.data on an id with no session gets core.tcp.failed \"unknown TCP session: <id>\"",
        unknown_session,
    ),
];

const fn tcp_case(name: &'static str, checks: &'static str, run: fn(&Ctx) -> CaseResult) -> Case {
    Case { family: Family::Tcp, name, needs_generation: 4, checks, run }
}

/// A guest server running as an exec session on its own connection.
struct Server {
    conn: Conn,
    id: u32,
    outcome: ExecOutcome,
    port: u16,
}

impl Server {
    /// Starts the server in `mode` and reads the port it listens on.
    fn start(ctx: &Ctx, mode: &str) -> Result<Server, CaseError> {
        let mut conn = ctx.connect()?;
        let mut request = ExecRequest::new("python3");
        request.args = vec!["-c".into(), SERVER.into(), mode.into()];
        let id = conn.exec_start(request)?;
        let mut outcome = ExecOutcome::default();
        conn.exec_wait_started(id, &mut outcome)?;
        skip_if_missing(&outcome, "python3")?;
        while outcome.end.is_none() && !outcome.stdout.contains(&b'\n') {
            conn.exec_step(id, &mut outcome, "the guest server's port")?;
        }
        let line = String::from_utf8_lossy(&outcome.stdout).into_owned();
        let port = match line.trim().parse() {
            Ok(port) if outcome.end.is_none() => port,
            _ => fail!(
                "the guest server did not start: stdout {}, stderr {}",
                text(&outcome.stdout),
                text(&outcome.stderr)
            ),
        };
        outcome.stdout.clear();
        Ok(Server { conn, id, outcome, port })
    }

    /// Waits for the server to exit 0 and returns what it printed it read.
    fn finish(mut self) -> Result<String, CaseError> {
        self.conn.exec_finish(self.id, &mut self.outcome)?;
        let code = exit_code(&self.outcome)?;
        ensure!(code == 0, "the guest server exited {code}: {}", text(&self.outcome.stderr));
        Ok(String::from_utf8_lossy(&self.outcome.stdout).trim_end().to_owned())
    }
}

/// Opens a session to the guest's loopback `port`; the reply to the connect.
fn connect(conn: &mut Conn, port: u16) -> Result<(u32, MessageFrame), CaseError> {
    let id = conn.next_id()?;
    let connect = TcpConnect { host: "127.0.0.1".into(), port, bulk: None };
    conn.send(id, Message::TcpConnect(connect))?;
    let reply = conn.recv_on(id, "core.tcp.connected")?;
    Ok((id, reply))
}

/// Connects and requires `core.tcp.connected`.
fn connected(conn: &mut Conn, port: u16) -> Result<u32, CaseError> {
    match connect(conn, port)? {
        (id, MessageFrame { message: Message::TcpConnected, .. }) => Ok(id),
        (_, other) => fail!("connect to guest port {port}: {:?}", other.message),
    }
}

/// Reads `core.tcp.data` on `id` up to `core.tcp.eof`.
fn read_to_eof(conn: &mut Conn, id: u32) -> Result<Vec<u8>, CaseError> {
    let mut got = Vec::new();
    loop {
        match conn.recv_on(id, "core.tcp.data or core.tcp.eof")?.message {
            Message::TcpData(data) => got.extend_from_slice(&data.data),
            Message::TcpEof => return Ok(got),
            other => {
                fail!("{} before core.tcp.eof (data so far {})", other.wire_name(), text(&got))
            }
        }
    }
}

/// Requires the terminal `core.tcp.closed` on `id`.
fn expect_closed(conn: &mut Conn, id: u32) -> Result<(), CaseError> {
    let frame = conn.recv_on(id, "core.tcp.closed")?;
    match frame.message {
        Message::TcpClosed => Ok(()),
        other => fail!("{other:?} instead of core.tcp.closed"),
    }
}

fn data_then_half_close(ctx: &Ctx) -> CaseResult {
    let server = Server::start(ctx, "echo")?;
    let mut conn = ctx.connect()?;
    let id = connected(&mut conn, server.port)?;
    conn.send(id, Message::TcpData(Data::new(b"hello ".to_vec())))?;
    conn.send(id, Message::TcpData(Data::new(b"tunnel".to_vec())))?;
    conn.send(id, Message::TcpEof)?;
    let echoed = read_to_eof(&mut conn, id)?;
    ensure!(echoed == b"HELLO TUNNEL", "the guest answered {}", text(&echoed));
    expect_closed(&mut conn, id)?;
    let read = server.finish()?;
    ensure!(read == "hello tunnel", "the guest server read {read:?}");
    Ok(Passed::plain())
}

fn guest_half_closes_first(ctx: &Ctx) -> CaseResult {
    let server = Server::start(ctx, "banner")?;
    let mut conn = ctx.connect()?;
    let id = connected(&mut conn, server.port)?;
    let banner = read_to_eof(&mut conn, id)?;
    ensure!(banner == b"banner", "the guest sent {}", text(&banner));
    conn.send(id, Message::TcpData(Data::new(b"after the guest's eof".to_vec())))?;
    conn.send(id, Message::TcpEof)?;
    expect_closed(&mut conn, id)?;
    let read = server.finish()?;
    ensure!(read == "after the guest's eof", "the guest server read {read:?}");
    Ok(Passed::plain())
}

fn connect_refused(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    match connect(&mut conn, CLOSED_PORT)? {
        (_, MessageFrame { message: Message::TcpFailed(failed), .. }) => {
            ensure!(!failed.error.is_empty(), "core.tcp.failed with an empty error");
            Ok(Passed::note(failed.error))
        }
        (_, other) => fail!("connect to closed port {CLOSED_PORT}: {:?}", other.message),
    }
}

fn close_gets_no_reply(ctx: &Ctx) -> CaseResult {
    let server = Server::start(ctx, "drain")?;
    let mut conn = ctx.connect()?;
    let id = connected(&mut conn, server.port)?;
    conn.send(id, Message::TcpData(Data::new(b"partial".to_vec())))?;
    conn.send(id, Message::TcpClose)?;
    if let Some(frame) = conn.poll_raw(NO_REPLY_WAIT)? {
        fail!("a frame on id {} after core.tcp.close (flags {})", frame.id, frame.flags);
    }
    conn.ping()?;
    // The guest server sees its connection end (EOF or reset) and exits; whether "partial"
    // reached it before the abort is up to the agent.
    let read = server.finish()?;
    Ok(Passed::note(format!("the guest server read {read:?}")))
}

fn unknown_session(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let id = conn.next_id()?;
    conn.send(id, Message::TcpData(Data::new(b"x".to_vec())))?;
    let frame = conn.recv_on(id, "core.tcp.failed")?;
    match frame.message {
        Message::TcpFailed(failed) => {
            let expected = format!("unknown TCP session: {id}");
            ensure!(failed.error == expected, "error {:?}, expected {expected:?}", failed.error);
            Ok(Passed::plain())
        }
        other => fail!("{other:?} instead of core.tcp.failed"),
    }
}
