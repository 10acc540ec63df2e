//! The filesystem service through its public API only, as the dispatcher drives it: the SDK's
//! whole-file compositions (PROTOCOL.md §9.5) over a temp-dir root, decoded from the frames the
//! service queues for the host.

use std::path::PathBuf;
use std::time::Duration;

use moat_agentd::fs::FsService;
use moat_agentd::outbound::Outbound;
use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData};
use moat_protocol::relay::Slot;
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
use tokio::sync::mpsc;

const V: u8 = 10;

struct Host {
    fs: FsService,
    root: PathBuf,
    rx: mpsc::Receiver<Vec<u8>>,
    decoder: FrameDecoder,
    next_id: u32,
}

impl Host {
    fn new(name: &str) -> Host {
        let root =
            std::env::temp_dir().join(format!("moat-agentd-fs-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let (out, rx) = Outbound::channel();
        Host {
            fs: FsService::new(root.clone(), out),
            root,
            rx,
            decoder: FrameDecoder::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    async fn frame(&mut self) -> MessageFrame {
        loop {
            if let Some(raw) = self.decoder.next_frame().unwrap() {
                let Decoded::Message(frame) = decode_frame(&raw).unwrap() else {
                    panic!("not a message")
                };
                return frame;
            }
            let bytes = tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
                .await
                .unwrap()
                .unwrap();
            self.decoder.push(&bytes);
        }
    }

    async fn response(&mut self, id: u32) -> FsResponse {
        let frame = self.frame().await;
        assert_eq!(frame.id, id);
        let Message::FsResponse(resp) = frame.message else { panic!("{:?}", frame.message) };
        resp
    }

    async fn call(&mut self, op: FsOp) -> FsResponse {
        let id = self.id();
        self.fs.request(id, V, FsRequest { op, bulk: None });
        self.response(id).await
    }

    async fn open(&mut self, path: &str, options: FsOpenOptions) -> u64 {
        match self.call(FsOp::OpenFile { path: path.into(), options }).await.data {
            Some(FsResponseData::Handle(handle)) => handle,
            other => panic!("open failed: {other:?}"),
        }
    }

    async fn write_file(&mut self, path: &str, content: &[u8]) {
        let options =
            FsOpenOptions { write: true, create: true, truncate: true, ..FsOpenOptions::default() };
        let handle = self.open(path, options).await;
        let id = self.id();
        let op = FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) };
        self.fs.request(id, V, FsRequest { op, bulk: None });
        for chunk in content.chunks(3 << 20) {
            self.fs.data(id, chunk.to_vec());
        }
        self.fs.data(id, Vec::new());
        assert_eq!(self.response(id).await, FsResponse::ok(None));
        assert!(self.call(FsOp::CloseHandle { handle }).await.ok);
    }

    async fn read_file(&mut self, path: &str) -> Vec<u8> {
        let handle =
            self.open(path, FsOpenOptions { read: true, ..FsOpenOptions::default() }).await;
        let id = self.id();
        let op = FsOp::Read { handle, offset: 0, len: None };
        self.fs.request(id, V, FsRequest { op, bulk: None });
        let mut content = Vec::new();
        loop {
            let frame = self.frame().await;
            assert_eq!(frame.id, id);
            match frame.message {
                Message::FsData(data) => content.extend_from_slice(&data.data),
                Message::FsResponse(resp) => {
                    assert_eq!(resp, FsResponse::ok(None));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(self.call(FsOp::CloseHandle { handle }).await.ok);
        content
    }

    async fn exists(&mut self, path: &str) -> bool {
        let resp = self.call(FsOp::Stat { path: path.into(), follow_symlink: false }).await;
        match resp.error.as_deref() {
            None => true,
            Some(err) if err.contains("(os error 2)") => false,
            Some(err) => panic!("stat failed: {err}"),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[tokio::test]
async fn whole_file_write_then_read_round_trips() {
    let mut host = Host::new("roundtrip");
    let content: Vec<u8> = (0..7_000_000u32).map(|i| (i % 251) as u8).collect();
    host.write_file("/data.bin", &content).await;
    assert!(host.read_file("/data.bin").await == content, "content differs");
    assert_eq!(host.fs.active_streams(), 0);
}

#[tokio::test]
async fn exists_follows_stat() {
    let mut host = Host::new("exists");
    assert!(!host.exists("/later").await);
    host.write_file("/later", b"now").await;
    assert!(host.exists("/later").await);
}

#[tokio::test]
async fn disconnected_client_loses_its_handles() {
    let mut host = Host::new("release");
    host.write_file("/f", b"x").await;
    let handle = host.open("/f", FsOpenOptions { read: true, ..FsOpenOptions::default() }).await;
    host.fs.release_range(Slot::of_id(1).unwrap().range());
    let resp = host.call(FsOp::FStat { handle }).await;
    assert_eq!(resp, FsResponse::err(format!("fstat: invalid handle: {handle}")));
    host.fs.abort_all();
}
