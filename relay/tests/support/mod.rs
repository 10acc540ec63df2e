//! Test support: a fake guest agent on the far end of a socketpair, real unix-socket clients,
//! and a relay wired between them.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use moat_protocol::frame::split_frame;
use moat_protocol::limits::AGENT_GENERATION;
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::payload::core::Ready;
use moat_protocol::payload::exec::{Data, ExecExited, ExecRequest, ExecStarted};
use moat_protocol::relay::{IdRange, Prologue, PrologueKind};
use moat_protocol::{Decoded, RawFrame, decode_frame};
use moat_relay::{RelayConfig, RelayError, RelayHandle, RelayStats, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("moat-rl-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Wire bytes of a message frame as a `RawFrame`.
pub fn raw(message: &MessageFrame) -> RawFrame {
    let bytes = message.to_bytes().unwrap();
    split_frame(&mut BytesMut::from(&bytes[..])).unwrap().unwrap()
}

/// The message frame in `bytes` (one whole frame).
pub fn split(bytes: &[u8]) -> MessageFrame {
    let frame = split_frame(&mut BytesMut::from(bytes)).unwrap().unwrap();
    match decode_frame(&frame) {
        Ok(Decoded::Message(message)) => message,
        other => panic!("not a message: {other:?}"),
    }
}

/// The agent's ready frame as moat's agent sends it (generation 10; `exec_limits` left out).
pub fn ready_frame() -> RawFrame {
    let ready = Ready { agent_version: "moat-fake".into(), ..Ready::default() };
    raw(&MessageFrame { id: 0, v: AGENT_GENERATION, message: Message::Ready(ready) })
}

/// What the fake guest received, in order, with a notification on each new frame.
#[derive(Clone, Default)]
pub struct Received {
    frames: Arc<Mutex<Vec<MessageFrame>>>,
    changed: Arc<Notify>,
}

impl Received {
    pub fn snapshot(&self) -> Vec<MessageFrame> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the frames received so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[MessageFrame]) -> bool) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if done(&self.frames.lock().unwrap()) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(PATIENCE, wait).await.is_err() {
            panic!("guest never received {what}; got {:#?}", self.snapshot());
        }
    }

    fn push(&self, frame: MessageFrame) {
        self.frames.lock().unwrap().push(frame);
        self.changed.notify_waiters();
    }
}

/// A fake agent: answers `core.ping` with `core.pong`, and runs fake execs:
/// - `echo ARGS...`: started, stdout `ARGS\n`, stderr `err\n` (pipe mode only), exited 0;
/// - `sleep`: started, then waits for `core.exec.signal N`, then stdout `signal N\n`, exited -1;
/// - `flood COUNT BYTES`: started, COUNT stdout chunks of BYTES bytes `x`, exited 0.
///
/// It answers `core.workload.freeze` with `core.workload.frozen` on its id.
pub struct FakeGuest {
    pub received: Received,
    task: JoinHandle<()>,
}

impl FakeGuest {
    /// Starts the fake guest on `stream`.
    pub fn start(stream: UnixStream) -> FakeGuest {
        let received = Received::default();
        let (mut reader, writer) = stream.into_split();
        let (out, out_rx) = mpsc::channel::<MessageFrame>(1024);
        let writer_task = tokio::spawn(write_frames(writer, out_rx));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                while let Some(frame) = split_frame(&mut buf).unwrap() {
                    let Ok(Decoded::Message(message)) = decode_frame(&frame) else {
                        panic!("fake guest got an undecodable frame {frame:?}");
                    };
                    seen.push(message.clone());
                    answer(message, &out).await;
                }
            }
            drop(out);
            let _ = writer_task.await;
        });
        FakeGuest { received, task }
    }

    /// Closes the guest's end of the channel.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn write_frames(mut writer: OwnedWriteHalf, mut frames: mpsc::Receiver<MessageFrame>) {
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame.to_bytes().unwrap()).await.is_err() {
            return;
        }
    }
}

async fn answer(frame: MessageFrame, out: &mpsc::Sender<MessageFrame>) {
    let id = frame.id;
    match frame.message {
        Message::Ping => send(out, MessageFrame::new(id, Message::Pong)).await,
        Message::ExecRequest(request) => run_exec(id, request, out).await,
        Message::WorkloadFreeze(freeze) => {
            let frozen = moat_protocol::payload::workload::WorkloadFrozen {
                attempt_id: freeze.attempt_id,
                guest_bulk_bytes_target: 0,
                input_credit: freeze.host_input,
                external_mounts_synced: true,
            };
            send(out, MessageFrame::new(id, Message::WorkloadFrozen(frozen))).await;
        }
        Message::ExecSignal(signal) => {
            let note = format!("signal {}\n", signal.signal).into_bytes();
            send(out, MessageFrame::new(id, Message::ExecStdout(Data::new(note)))).await;
            send(out, MessageFrame::new(id, Message::ExecExited(ExecExited { code: -1 }))).await;
        }
        _ => {}
    }
}

async fn run_exec(id: u32, request: ExecRequest, out: &mpsc::Sender<MessageFrame>) {
    let started = MessageFrame::new(id, Message::ExecStarted(ExecStarted { pid: 100 + id % 1000 }));
    send(out, started).await;
    let stdout = move |data: Vec<u8>| MessageFrame::new(id, Message::ExecStdout(Data::new(data)));
    let exited = MessageFrame::new(id, Message::ExecExited(ExecExited { code: 0 }));
    match request.cmd.as_str() {
        "echo" => {
            send(out, stdout(format!("{}\n", request.args.join(" ")).into_bytes())).await;
            if !request.tty {
                let err = MessageFrame::new(id, Message::ExecStderr(Data::new(b"err\n".to_vec())));
                send(out, err).await;
            }
            send(out, exited).await;
        }
        "flood" => {
            let count: usize = request.args[0].parse().unwrap();
            let size: usize = request.args[1].parse().unwrap();
            let out = out.clone();
            tokio::spawn(async move {
                for _ in 0..count {
                    send(&out, stdout(vec![b'x'; size])).await;
                }
                send(&out, exited).await;
            });
        }
        // "sleep": wait for a signal.
        _ => {}
    }
}

async fn send(out: &mpsc::Sender<MessageFrame>, frame: MessageFrame) {
    let _ = out.send(frame).await;
}

/// A relay serving a fake guest.
pub struct Harness {
    pub tmp: TempDir,
    pub socket: PathBuf,
    pub log_dir: PathBuf,
    pub handle: RelayHandle,
    pub guest: FakeGuest,
    pub relay: JoinHandle<Result<RelayStats, RelayError>>,
}

impl Harness {
    pub async fn start(name: &str) -> Harness {
        let tmp = TempDir::new(name);
        let socket = tmp.0.join("agent.sock");
        let log_dir = tmp.0.join("logs");
        let (relay_end, guest_end) = UnixStream::pair().unwrap();
        let guest = FakeGuest::start(guest_end);
        let (reader, writer) = relay_end.into_split();
        let (handle, control) = RelayHandle::new();
        let config = RelayConfig {
            socket_path: socket.clone(),
            log_dir: log_dir.clone(),
            ready: ready_frame(),
        };
        let relay = tokio::spawn(serve(config, reader, writer, control));
        wait_for_path(&socket).await;
        Harness { tmp, socket, log_dir, handle, guest, relay }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.socket).await
    }

    /// Connects until the relay hands out `range` (a freed slot is released a moment after its
    /// disconnect notice is queued).
    pub async fn connect_to(&self, range: IdRange) -> Client {
        for _ in 0..100 {
            let client = self.connect().await;
            if client.range == range {
                return client;
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the relay never handed out {range:?} again");
    }

    /// Stops the relay and returns its stats.
    pub async fn stop(self) -> (RelayStats, TempDir, Received) {
        self.handle.shutdown();
        let stats = tokio::time::timeout(PATIENCE, self.relay).await.unwrap().unwrap().unwrap();
        let received = self.guest.received.clone();
        self.guest.stop();
        (stats, self.tmp, received)
    }
}

async fn wait_for_path(path: &Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("relay socket {} never appeared", path.display());
}

/// A relay client on a real unix socket.
pub struct Client {
    stream: UnixStream,
    buf: BytesMut,
    pub range: IdRange,
    pub ready: RawFrame,
    next_id: u32,
}

impl Client {
    /// Connects and reads the prologue and the ready frame.
    pub async fn connect(path: &Path) -> Client {
        let mut stream = UnixStream::connect(path).await.unwrap();
        let mut prologue = [0u8; 8];
        stream.read_exact(&mut prologue).await.unwrap();
        let PrologueKind::Current(range) = Prologue::parse(prologue).unwrap() else {
            panic!("legacy prologue");
        };
        let mut client =
            Client { stream, buf: BytesMut::new(), range, ready: ready_frame(), next_id: 0 };
        client.ready = client.recv_raw().await.expect("ready frame");
        client.next_id = range.first_usable();
        client
    }

    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub async fn send(&mut self, frame: &MessageFrame) {
        self.send_raw(&frame.to_bytes().unwrap()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` when the relay closed the connection.
    pub async fn recv_raw(&mut self) -> Option<RawFrame> {
        let next = async {
            loop {
                if let Some(frame) = split_frame(&mut self.buf).unwrap() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(PATIENCE, next).await.expect("client waited too long for a frame")
    }

    pub async fn recv(&mut self) -> Option<MessageFrame> {
        let frame = self.recv_raw().await?;
        match decode_frame(&frame).unwrap() {
            Decoded::Message(message) => Some(message),
            other => panic!("client got a non-message {other:?}"),
        }
    }

    /// Waits for the relay to close the connection, ignoring frames before that.
    pub async fn expect_closed(&mut self) {
        while self.recv_raw().await.is_some() {}
    }

    /// Sends a ping and returns when its pong arrives; other frames before it are returned.
    pub async fn ping(&mut self) -> Vec<MessageFrame> {
        let id = self.next_id();
        self.send(&MessageFrame::new(id, Message::Ping)).await;
        let mut others = Vec::new();
        loop {
            let frame = self.recv().await.expect("connection closed while waiting for pong");
            if frame.id == id && frame.message == Message::Pong {
                return others;
            }
            others.push(frame);
        }
    }

    /// Opens an exec and returns its id.
    pub async fn exec(&mut self, cmd: &str, args: &[&str], tty: bool) -> u32 {
        let id = self.next_id();
        let request = ExecRequest {
            args: args.iter().map(|a| a.to_string()).collect(),
            tty,
            ..ExecRequest::new(cmd)
        };
        self.send(&MessageFrame::new(id, Message::ExecRequest(request))).await;
        id
    }

    /// Collects frames until the terminal frame of `id`.
    pub async fn until_exit(&mut self, id: u32) -> Vec<MessageFrame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await.expect("connection closed before the exec ended");
            let done = frame.id == id && matches!(frame.message, Message::ExecExited(_));
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}
