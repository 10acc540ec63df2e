//! `AgentClient`: the raw frame client for SDK authors, byte-compatible with microsandbox's.
//! Bodies are opaque CBOR bytes in and out; this module only frames them, keeps the client
//! inside the id range the relay gave it, and routes answers by correlation id.
//!
//! ```text
//!  connect ─► read 8-byte prologue (moat_protocol::relay::Prologue::parse: current or legacy)
//!          ─► read the replayed core.ready (must decode as core.ready; its body is readyBytes)
//!          ─► spawn the reader task:  frame id ─► routes[id]:
//!                 Request(oneshot)  first frame answers, route removed
//!                 Stream(mpsc)      every frame, route removed after a TERMINAL one
//!             frames for no route are dropped; at EOF every route ends (requests reject,
//!             streams yield null)
//! ```
//!
//! Dropping or closing the client closes the socket: the relay then tells the agent the client
//! disconnected, and the agent ends that client's sessions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use moat_protocol::codec::FrameCodec;
use moat_protocol::flags::Flags;
use moat_protocol::frame::RawFrame as WireFrame;
use moat_protocol::limits::{MAX_BODY_BYTES, RELAY_PROLOGUE_BYTES};
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::relay::{IdAllocator, IdRange, Prologue, PrologueKind};
use napi::bindgen_prelude::{BigInt, Buffer};
use napi_derive::napi;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::{NodeError, Result};
use crate::library;

/// Legacy relays give each client `u32::MAX / 16` ids after its offset (PROTOCOL.md §13.2).
const LEGACY_RANGE_IDS: u32 = u32::MAX / 16;

/// A raw protocol frame: correlation id, flags, and the CBOR body bytes.
#[napi(object)]
pub struct RawFrame {
    /// Correlation id.
    pub id: u32,
    /// Flags byte.
    pub flags: u32,
    /// The body: a CBOR envelope (`v`, `t`, `p`), or a bulk record for flags `0x08`.
    pub body: Buffer,
}

/// What `streamOpen` returns.
#[napi(object)]
pub struct StreamOpenResult {
    /// The correlation id, for `send`.
    pub id: u32,
    /// The stream handle, for `streamNext` and `streamClose`.
    pub handle: BigInt,
}

enum Route {
    Request(oneshot::Sender<WireFrame>),
    Stream(mpsc::UnboundedSender<WireFrame>),
}

type Routes = Arc<Mutex<Option<HashMap<u32, Route>>>>;

struct Shared {
    writer: tokio::sync::Mutex<Option<FramedWrite<OwnedWriteHalf, FrameCodec>>>,
    ids: Mutex<IdAllocator>,
    range: IdRange,
    /// `None` once the connection ended.
    routes: Routes,
    streams: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WireFrame>>>>>,
    next_handle: AtomicU64,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The raw client of a sandbox's agent, through its relay socket.
#[napi]
pub struct AgentClient {
    shared: Arc<Shared>,
    ready: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn protocol(what: &str, err: impl std::fmt::Display) -> NodeError {
    NodeError::Protocol(format!("{what}: {err}"))
}

async fn open(path: PathBuf) -> Result<AgentClient> {
    let mut stream = UnixStream::connect(&path)
        .await
        .map_err(|err| protocol(&format!("connect to {}", path.display()), err))?;
    let mut prologue = [0u8; RELAY_PROLOGUE_BYTES];
    stream
        .read_exact(&mut prologue)
        .await
        .map_err(|err| protocol("read the relay prologue", err))?;
    let kind = Prologue::parse(prologue).map_err(|err| protocol("relay prologue", err))?;
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, FrameCodec);
    let range = match kind {
        PrologueKind::Current(range) => range,
        PrologueKind::Legacy { offset, ready_len } => {
            // The second word was the ready frame's own length prefix: give it back.
            reader.read_buffer_mut().extend_from_slice(&ready_len.to_be_bytes());
            IdRange {
                start: offset.saturating_add(1),
                end_exclusive: offset.saturating_add(LEGACY_RANGE_IDS),
            }
        }
    };
    let first = match reader.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(err)) => return Err(protocol("read core.ready", err)),
        None => return Err(protocol("read core.ready", "the relay closed the connection")),
    };
    match MessageFrame::decode(first.id, first.flags, &first.body) {
        Ok(MessageFrame { message: Message::Ready(_), .. }) => {}
        Ok(other) => {
            return Err(protocol(
                "first frame",
                format!("{} instead of core.ready", other.message.wire_name()),
            ));
        }
        Err(err) => return Err(protocol("first frame", err)),
    }
    let routes: Routes = Arc::new(Mutex::new(Some(HashMap::new())));
    let task = tokio::spawn(read_frames(reader, routes.clone()));
    let shared = Shared {
        writer: tokio::sync::Mutex::new(Some(FramedWrite::new(write, FrameCodec))),
        ids: Mutex::new(IdAllocator::new(range)),
        range,
        routes,
        streams: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
        reader: Mutex::new(Some(task)),
    };
    Ok(AgentClient { shared: Arc::new(shared), ready: first.body.to_vec() })
}

/// Routes every frame from the relay until the connection ends, then ends every route.
async fn read_frames(mut reader: FramedRead<OwnedReadHalf, FrameCodec>, routes: Routes) {
    while let Some(Ok(frame)) = reader.next().await {
        let mut guard = lock(&routes);
        let Some(map) = guard.as_mut() else { return };
        let terminal = frame.flags.contains(Flags::TERMINAL);
        let route_ends = match map.get(&frame.id) {
            Some(Route::Request(_)) => true,
            // A stream whose reader is gone (closed by the program) ends here too.
            Some(Route::Stream(sink)) => {
                let reader_gone = sink.send(frame.clone()).is_err();
                terminal || reader_gone
            }
            None => false,
        };
        if route_ends {
            if let Some(Route::Request(answer)) = map.remove(&frame.id) {
                let _ = answer.send(frame);
            }
        }
    }
    lock(&routes).take();
}

impl Shared {
    fn next_id(&self) -> Result<u32> {
        lock(&self.ids)
            .next_id()
            .ok_or_else(|| protocol("allocate an id", "this connection's id range is used up"))
    }

    fn route(&self, id: u32, route: Route) -> Result<()> {
        match lock(&self.routes).as_mut() {
            Some(map) => {
                map.insert(id, route);
                Ok(())
            }
            None => Err(NodeError::Closed("the agent connection")),
        }
    }

    async fn write(&self, id: u32, flags: u32, body: Vec<u8>) -> Result<()> {
        let flags = u8::try_from(flags)
            .map(Flags::from_bits)
            .ok()
            .filter(|f| f.is_wire_valid())
            .ok_or_else(|| {
                NodeError::InvalidArgument(format!("flags {flags:#x} is not one of 0, 1, 2, 4, 8"))
            })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(NodeError::InvalidArgument(format!(
                "the body is {} bytes; a frame carries at most {MAX_BODY_BYTES}",
                body.len()
            )));
        }
        let mut writer = self.writer.lock().await;
        let sink = writer.as_mut().ok_or(NodeError::Closed("the agent connection"))?;
        sink.send(WireFrame { id, flags, body: Bytes::from(body) })
            .await
            .map_err(|err| protocol("write a frame", err))
    }

    fn forget(&self, id: u32) {
        if let Some(map) = lock(&self.routes).as_mut() {
            map.remove(&id);
        }
    }

    fn shut(&self) {
        if let Some(task) = lock(&self.reader).take() {
            task.abort();
        }
        lock(&self.routes).take();
        lock(&self.streams).clear();
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        self.shared.shut();
    }
}

fn js_frame(frame: WireFrame) -> RawFrame {
    RawFrame {
        id: frame.id,
        flags: u32::from(frame.flags.bits()),
        body: frame.body.to_vec().into(),
    }
}

#[napi]
impl AgentClient {
    /// Connects to a relay socket by path.
    #[napi(ts_return_type = "Promise<AgentClient>")]
    pub async fn connect(path: String) -> napi::Result<AgentClient> {
        Ok(open(PathBuf::from(path)).await?)
    }

    /// Connects to the relay of the sandbox `name` in the moat home.
    #[napi(ts_return_type = "Promise<AgentClient>")]
    pub async fn connect_sandbox(name: String) -> napi::Result<AgentClient> {
        let path = crate::error::blocking(move || library::socket_of(&name)).await?;
        Ok(open(path).await?)
    }

    /// The relay socket path `connectSandbox` would dial (the sandbox need not exist).
    #[napi]
    pub fn socket_path(name: String) -> napi::Result<String> {
        Ok(library::socket_path(&name)?.to_string_lossy().into_owned())
    }

    /// Sends one frame on a fresh id and resolves with the first frame answering it.
    #[napi]
    pub async fn request(&self, flags: u32, body: Buffer) -> napi::Result<RawFrame> {
        let shared = self.shared.clone();
        let id = shared.next_id()?;
        let (answer, answered) = oneshot::channel();
        shared.route(id, Route::Request(answer))?;
        if let Err(err) = shared.write(id, flags, body.to_vec()).await {
            shared.forget(id);
            return Err(err.into());
        }
        match answered.await {
            Ok(frame) => Ok(js_frame(frame)),
            Err(_) => Err(NodeError::Closed("the agent connection").into()),
        }
    }

    /// Opens a session with one frame on a fresh id; its answers arrive through `streamNext`.
    #[napi]
    pub async fn stream_open(&self, flags: u32, body: Buffer) -> napi::Result<StreamOpenResult> {
        let shared = self.shared.clone();
        let id = shared.next_id()?;
        let (sink, frames) = mpsc::unbounded_channel();
        shared.route(id, Route::Stream(sink))?;
        if let Err(err) = shared.write(id, flags, body.to_vec()).await {
            shared.forget(id);
            return Err(err.into());
        }
        let handle = shared.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&shared.streams).insert(handle, Arc::new(tokio::sync::Mutex::new(frames)));
        Ok(StreamOpenResult { id, handle: BigInt::from(handle) })
    }

    /// The next frame of a stream; `null` once it ended (terminal frame delivered, stream or
    /// connection closed).
    #[napi]
    pub async fn stream_next(&self, handle: BigInt) -> napi::Result<Option<RawFrame>> {
        let key = stream_key(&handle)?;
        let Some(frames) = lock(&self.shared.streams).get(&key).cloned() else {
            return Ok(None);
        };
        let next = frames.lock().await.recv().await;
        Ok(next.map(js_frame))
    }

    /// Forgets a stream; later frames for it are dropped. Idempotent.
    #[napi]
    pub async fn stream_close(&self, handle: BigInt) -> napi::Result<()> {
        let key = stream_key(&handle)?;
        lock(&self.shared.streams).remove(&key);
        Ok(())
    }

    /// Sends a follow-up frame on an id of this connection (stdin, signal, resize, data).
    #[napi]
    pub async fn send(&self, id: u32, flags: u32, body: Buffer) -> napi::Result<()> {
        let shutdown_request = id == 0 && flags == u32::from(Flags::SHUTDOWN.bits());
        if !shutdown_request && !self.shared.range.contains(id) {
            return Err(NodeError::InvalidArgument(format!(
                "id {id} is outside this connection's range [{}, {})",
                self.shared.range.start, self.shared.range.end_exclusive
            ))
            .into());
        }
        Ok(self.shared.write(id, flags, body.to_vec()).await?)
    }

    /// The replayed `core.ready` frame's body (CBOR).
    #[napi]
    pub fn ready_bytes(&self) -> Buffer {
        self.ready.clone().into()
    }

    /// Closes the connection. Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let writer = self.shared.writer.lock().await.take();
        if let Some(mut writer) = writer {
            let _ = SinkExt::<WireFrame>::close(&mut writer).await;
        }
        self.shared.shut();
        Ok(())
    }
}

fn stream_key(handle: &BigInt) -> Result<u64> {
    let (negative, value, lossless) = handle.get_u64();
    if negative || !lossless {
        return Err(NodeError::InvalidArgument("not a stream handle".into()));
    }
    Ok(value)
}
