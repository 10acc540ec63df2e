//! Test harness: the real `moat-agentd` binary as PID 1 in fresh pid, mount, uts and ipc
//! namespaces (through util-linux `unshare`), driven over a socketpair with protocol frames.
//!
//! Needs root. A test that cannot get root fails with a message saying so; it never passes
//! without running.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_protocol::payload::bootstrap::GuestBootstrap;
use moat_protocol::payload::core::InitAck;
use moat_protocol::payload::exec::{Consumed, Data, ExecRequest, output_charge};
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, RawFrame, decode_frame};

/// Longest wait for any single frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// A running agent and our end of its channel.
pub struct Agent {
    child: Child,
    stream: UnixStream,
    decoder: FrameDecoder,
    pending: Vec<MessageFrame>,
    next_id: u32,
    log: std::path::PathBuf,
    /// The `core.ready` the agent sent.
    pub ready: MessageFrame,
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it runs moat-agentd as PID 1 in new namespaces); run the tests as root"
    );
}

/// The agent under test: `MOAT_AGENTD_BIN` when set (CI points it at the static build), else
/// the binary cargo built for this test.
pub fn agent_binary() -> String {
    std::env::var("MOAT_AGENTD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_moat-agentd").to_owned())
}

impl Agent {
    /// Starts an agent with an overlay on the host's `/` as its root.
    pub fn start(bootstrap: GuestBootstrap) -> Agent {
        Agent::start_with(bootstrap, &["--root", "/"])
    }

    /// Starts an agent with extra arguments after `--channel fd:0`.
    pub fn start_with(bootstrap: GuestBootstrap, args: &[&str]) -> Agent {
        let mut agent = Agent::spawn(args);
        agent.send(0, Message::Bootstrap(Box::new(bootstrap)));
        match agent.recv_any() {
            (0, Message::InitResolved(_)) => {}
            other => panic!("expected core.init.resolved, got {other:?}\n{}", agent.log_tail()),
        }
        agent.send(0, Message::InitAck(InitAck { failure: false }));
        let ready = agent.recv_frame();
        assert!(matches!(ready.message, Message::Ready(_)), "expected core.ready, got {ready:?}");
        agent.ready = ready;
        agent
    }

    /// Spawns the agent without doing the handshake.
    pub fn spawn(args: &[&str]) -> Agent {
        require_root();
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
        let log = std::env::temp_dir().join(format!(
            "moat-agentd-test-{}-{}.log",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("unshare")
            .args(["--pid", "--mount", "--uts", "--ipc", "--fork", "--kill-child"])
            .arg(agent_binary())
            .args(["--channel", "fd:0"])
            .args(args)
            .env("MOAT_AGENT_LOG", "debug")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn unshare + moat-agentd");
        Agent {
            child,
            stream: ours,
            decoder: FrameDecoder::new(),
            pending: Vec::new(),
            next_id: 1,
            log,
            ready: MessageFrame::new(0, Message::Ping),
        }
    }

    /// The agent's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- agent log (last 40 lines) ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// A fresh correlation id (slot 0).
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a message.
    pub fn send(&mut self, id: u32, message: Message) {
        let bytes = MessageFrame::new(id, message).to_bytes().expect("encode");
        self.send_raw(&bytes);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to agent");
    }

    /// The next raw frame from the agent.
    pub fn recv_raw(&mut self) -> RawFrame {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("agent framing") {
                return frame;
            }
            assert!(
                Instant::now() < deadline,
                "no frame within {FRAME_TIMEOUT:?}\n{}",
                self.log_tail()
            );
            let mut buf = vec![0u8; 1 << 20];
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("read from agent: {e}\n{}", self.log_tail()),
            };
            assert!(n > 0, "agent closed the channel\n{}", self.log_tail());
            self.decoder.push(&buf[..n]);
        }
    }

    /// The next message frame from the agent (any id).
    pub fn recv_frame(&mut self) -> MessageFrame {
        if !self.pending.is_empty() {
            return self.pending.remove(0);
        }
        let raw = self.recv_raw();
        match decode_frame(&raw) {
            Ok(Decoded::Message(m)) => m,
            other => panic!("agent sent a frame that is not a message: {other:?}"),
        }
    }

    /// The next message (any id), as `(id, message)`.
    pub fn recv_any(&mut self) -> (u32, Message) {
        let frame = self.recv_frame();
        (frame.id, frame.message)
    }

    /// The next message on `id`, keeping frames for other ids for later.
    pub fn recv_on(&mut self, id: u32) -> Message {
        if let Some(pos) = self.pending.iter().position(|f| f.id == id) {
            return self.pending.remove(pos).message;
        }
        loop {
            let raw = self.recv_raw();
            let frame = match decode_frame(&raw) {
                Ok(Decoded::Message(m)) => m,
                other => panic!("agent sent a frame that is not a message: {other:?}"),
            };
            if frame.id == id {
                return frame.message;
            }
            self.pending.push(frame);
        }
    }

    /// Runs a command to completion: `(stdout, stderr, exit code)`.
    pub fn run(&mut self, request: ExecRequest) -> (Vec<u8>, Vec<u8>, i32) {
        let id = self.id();
        self.send(id, Message::ExecRequest(request));
        self.collect(id)
    }

    /// Collects a session's output until it ends, acknowledging each output chunk (requests
    /// from [`Agent::send`] carry `v = 10`, so the agent flow-controls them).
    pub fn collect(&mut self, id: u32) -> (Vec<u8>, Vec<u8>, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut consumed = 0;
        loop {
            let data = match self.recv_on(id) {
                Message::ExecStarted(_) | Message::ExecStdinAck(_) => continue,
                Message::ExecStdout(Data { data }) => {
                    out.extend_from_slice(&data);
                    data
                }
                Message::ExecStderr(Data { data }) => {
                    err.extend_from_slice(&data);
                    data
                }
                Message::ExecExited(exited) => return (out, err, exited.code),
                other => panic!("unexpected {other:?} on exec {id}\n{}", self.log_tail()),
            };
            consumed += output_charge(data.len());
            self.send(id, Message::ExecOutputAck(Consumed { consumed }));
        }
    }

    /// Runs `sh -c script` and returns stdout as a string, asserting exit 0.
    pub fn sh(&mut self, script: &str) -> String {
        let mut request = ExecRequest::new("/bin/sh");
        request.args = vec!["-c".into(), script.into()];
        let (out, err, code) = self.run(request);
        assert_eq!(code, 0, "sh -c {script:?} failed: {}", String::from_utf8_lossy(&err));
        String::from_utf8(out).unwrap()
    }

    /// Sends `core.shutdown` and waits for the agent (PID 1) to exit; returns its status code.
    pub fn shutdown(mut self) -> i32 {
        self.send(0, Message::Shutdown);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An exec request for `sh -c script`.
pub fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("/bin/sh");
    request.args = vec!["-c".into(), script.into()];
    request
}
