//! End to end: guest ports reached through the relay's TCP tunnel (generation 4) on the namespace
//! backend, with no guest network: the library's `connect_tcp`, `wait_for_listener` and `fetch`,
//! and `moat port-forward`. The guest servers are python3 (from the host root the sandbox runs
//! on). Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{
    ExecOutcome, Isolation, Moat, PortError, Sandbox, SandboxOptions, TunnelError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{RemoveOnDrop, executables, moat, moat_home, require_root, stderr};

/// An echo server: reads each connection to its end, then writes it back upper-cased.
const ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    data = bytearray()
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        data += b
    c.sendall(bytes(data).upper())
    c.close()
"#;

const ECHO_PORT: u16 = 7000;
const HTTP_PORT: u16 = 8080;

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

async fn sandbox(test: &str) -> (Moat, Sandbox, RemoveOnDrop) {
    require_root();
    let home = moat_home(test);
    let cleanup = RemoveOnDrop::new(home.clone(), "ports");
    let moat = Moat::new(home).with_executables(executables());
    let options = SandboxOptions::new("ports").isolation(Isolation::Namespace);
    let sandbox = moat.create(options).await.unwrap();
    (moat, sandbox, cleanup)
}

/// Starts the echo server and an HTTP server serving /tmp/www in the sandbox, and waits for both.
async fn start_servers(sandbox: &Sandbox) {
    let ran = sandbox.exec(sh("cat > /tmp/echo.py"), ECHO_SERVER.as_bytes().to_vec()).await;
    assert_eq!(ran.unwrap().outcome, ExecOutcome::Exited(0));
    let script = format!(
        "mkdir -p /tmp/www && echo 'hello from the guest' > /tmp/www/hello.txt && \
         (python3 /tmp/echo.py {ECHO_PORT} >/dev/null 2>&1 &) && \
         (python3 -m http.server {HTTP_PORT} --bind 127.0.0.1 --directory /tmp/www \
            >/dev/null 2>&1 &)"
    );
    let ran = sandbox.exec(sh(&script), Vec::new()).await.unwrap();
    assert_eq!(ran.outcome, ExecOutcome::Exited(0), "{}", String::from_utf8_lossy(&ran.stderr));
    for port in [ECHO_PORT, HTTP_PORT] {
        sandbox.wait_for_listener(port, Duration::from_secs(30)).await.unwrap();
    }
}

#[tokio::test]
async fn fetch_and_wait_for_listener_reach_a_guest_http_server_as_root() {
    let (_moat, sandbox, _cleanup) = sandbox("ports-fetch").await;
    start_servers(&sandbox).await;
    let hello = sandbox.fetch(HTTP_PORT, "/hello.txt").await;
    let missing = sandbox.fetch(HTTP_PORT, "/missing").await;
    let bad_path = sandbox.fetch(HTTP_PORT, "no-slash").await;
    sandbox.remove(true).await.unwrap();
    let hello = hello.unwrap();
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.body, b"hello from the guest\n");
    assert_eq!(hello.header("content-length"), Some("21"));
    assert_eq!(missing.unwrap().status, 404);
    assert!(matches!(bad_path, Err(PortError::BadPath(_))), "{bad_path:?}");
}

#[tokio::test]
async fn a_tunnel_carries_a_large_stream_both_ways_with_half_close_as_root() {
    let (_moat, sandbox, _cleanup) = sandbox("ports-echo").await;
    start_servers(&sandbox).await;
    // 20 MiB: more than the agent's per-session queue, so its backpressure is on the path.
    let sent: Vec<u8> = (0..20 * 1024 * 1024).map(|i: usize| b"abcdefgh"[i % 8]).collect();
    let mut tunnel = sandbox.connect_tcp(ECHO_PORT).await.unwrap();
    let (mut read, mut write) = tokio::io::split(&mut tunnel);
    let writer = async {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let reader = read.read_to_end(&mut got);
    let ((), read) = tokio::join!(writer, reader);
    drop(tunnel);
    sandbox.remove(true).await.unwrap();
    read.unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent.to_ascii_uppercase(), "the echoed bytes differ");
}

#[tokio::test]
async fn a_closed_guest_port_is_a_clear_error_and_wait_for_listener_times_out_as_root() {
    let (_moat, sandbox, _cleanup) = sandbox("ports-refused").await;
    let refused = sandbox.connect_tcp(9).await;
    let start = Instant::now();
    let waited = sandbox.wait_for_listener(9, Duration::from_millis(500)).await;
    let elapsed = start.elapsed();
    sandbox.stop().await.unwrap();
    let stopped = sandbox.connect_tcp(9).await;
    sandbox.remove(true).await.unwrap();
    match refused {
        Err(TunnelError::Refused { port: 9, reason }) => {
            assert_eq!(reason, "connect 127.0.0.1:9: Connection refused (os error 111)")
        }
        other => panic!("{other:?}"),
    }
    match waited {
        Err(PortError::ListenerTimeout { port: 9, last, .. }) => {
            assert!(last.contains("Connection refused"), "{last}")
        }
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let message = stopped.unwrap_err().to_string();
    assert!(message.contains("is not running"), "{message}");
}

/// Sends 64 MiB to each connection, then closes it.
const FLOOD_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7001))
s.listen(4)
chunk = b"x" * (1 << 20)
while True:
    c, _ = s.accept()
    try:
        for _ in range(64):
            c.sendall(chunk)
    except OSError:
        pass
    c.close()
"#;

#[tokio::test]
async fn a_tunnel_whose_user_stops_reading_ends_with_a_clear_error_not_a_hang_as_root() {
    let (_moat, sandbox, _cleanup) = sandbox("ports-slow-reader").await;
    let ran = sandbox.exec(sh("cat > /tmp/flood.py"), FLOOD_SERVER.as_bytes().to_vec()).await;
    assert_eq!(ran.unwrap().outcome, ExecOutcome::Exited(0));
    let ran = sandbox.exec(sh("(python3 /tmp/flood.py >/dev/null 2>&1 &)"), Vec::new()).await;
    assert_eq!(ran.unwrap().outcome, ExecOutcome::Exited(0));
    sandbox.wait_for_listener(7001, Duration::from_secs(30)).await.unwrap();
    let mut tunnel = sandbox.connect_tcp(7001).await.unwrap();
    // Read nothing for longer than the relay's patience with a client whose queue is full.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), tunnel.read_to_end(&mut got)).await;
    // The sandbox still serves other clients; fetch stops at its own bound.
    let after = sandbox.fetch(7001, "/").await;
    sandbox.remove(true).await.unwrap();
    let read = read.expect("the read ended instead of hanging");
    assert!(got.len() < 64 << 20, "all {} bytes arrived: nothing was bounded", got.len());
    let err = read.unwrap_err();
    assert!(err.to_string().contains("the relay closed the connection"), "{err}");
    assert!(matches!(after, Err(PortError::ResponseTooLarge { port: 7001, .. })), "{after:?}");
}

/// Accepts connections and never reads from them.
const DEAF_SERVER: &str = r#"
import socket
s = socket.socket()
s.bind(("127.0.0.1", 7002))
s.listen(4)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"#;

#[tokio::test]
async fn a_guest_program_that_never_reads_fails_its_session_and_the_agent_goes_on_as_root() {
    let (_moat, sandbox, _cleanup) = sandbox("ports-deaf").await;
    let ran = sandbox.exec(sh("cat > /tmp/deaf.py"), DEAF_SERVER.as_bytes().to_vec()).await;
    assert_eq!(ran.unwrap().outcome, ExecOutcome::Exited(0));
    let ran = sandbox.exec(sh("(python3 /tmp/deaf.py >/dev/null 2>&1 &)"), Vec::new()).await;
    assert_eq!(ran.unwrap().outcome, ExecOutcome::Exited(0));
    sandbox.wait_for_listener(7002, Duration::from_secs(30)).await.unwrap();
    let tunnel = sandbox.connect_tcp(7002).await.unwrap();
    let (mut read, mut write) = tokio::io::split(tunnel);
    // 64 MiB: far past the agent's 8 MiB queue and the socket buffers.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..64 {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut got)).await;
    let elapsed = start.elapsed();
    writer.abort();
    let after = sandbox.exec(sh("echo still serving"), Vec::new()).await;
    sandbox.remove(true).await.unwrap();
    let err = read.expect("the read ended instead of hanging").unwrap_err();
    assert!(err.to_string().contains("read nothing for 10s with its queue full"), "{err}");
    assert!(elapsed >= Duration::from_secs(9), "failed after only {elapsed:?}");
    assert_eq!(after.unwrap().stdout, b"still serving\n");
}

/// A free port on the host's loopback (bound and released: racy only against other binders).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// `moat port-forward NAME SPEC` in the background; returns once it prints its line.
fn port_forward(home: &std::path::Path, spec: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["port-forward", "ports", spec])
        .env("MOAT_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let stdout = child.stdout.as_mut().unwrap();
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line);
    assert!(line.starts_with("forwarding 127.0.0.1:"), "{line:?}");
    child
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test]
async fn port_forward_serves_the_guest_port_on_the_host_loopback_as_root() {
    let (moat_lib, sandbox, _cleanup) = sandbox("ports-forward").await;
    start_servers(&sandbox).await;
    let home = moat_lib.home().to_path_buf();
    let port = free_port();
    let mut forwarder = port_forward(&home, &format!("{port}:{HTTP_PORT}"));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // Concurrent connections, each its own tunnel.
    let clients: Vec<_> =
        (0..8).map(|_| std::thread::spawn(move || http_get(addr, "/hello.txt"))).collect();
    for client in clients {
        let response = client.join().unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(response.ends_with("hello from the guest\n"), "{response}");
    }

    // A second forwarder on the same host port: one line, exit 1.
    let in_use = moat(&home, &["port-forward", "ports", &format!("{port}:{HTTP_PORT}")]);
    assert_eq!(in_use.status.code(), Some(1), "{}", stderr(&in_use));
    assert_eq!(
        stderr(&in_use),
        format!(
            "moat port-forward: listen on 127.0.0.1:{port}: Address already in use (os error 98)\n"
        )
    );

    // SIGTERM ends it cleanly; the port is free again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(forwarder.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = forwarder.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    TcpListener::bind(addr).expect("the forwarder let its port go");

    // A forwarder ends on its own when the sandbox stops.
    let mut forwarder = port_forward(&home, &format!("127.0.0.1:{port}:{HTTP_PORT}"));
    sandbox.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = forwarder.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the forwarder outlived its sandbox");
        std::thread::sleep(Duration::from_millis(50));
    };
    sandbox.remove(true).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn port_forward_refuses_a_malformed_spec_as_a_usage_error() {
    let home = moat_home("ports-usage");
    for bad in ["8080", "8080:0", "x:1:2", "1:2/udp"] {
        let output = moat(&home, &["port-forward", "ports", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.starts_with("moat: ") && err.contains(&format!("{bad:?}")), "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let output = moat(&home, &["port-forward", "ghost", "8080:80"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "moat port-forward: no sandbox named \"ghost\"\n");
}
