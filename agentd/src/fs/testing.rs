//! Test support for the filesystem service: a self-removing temporary root, and a harness that
//! drives [`FsService`] and decodes what it sends to the host. Compiled only for tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData};
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
use tokio::sync::mpsc;

use crate::outbound::Outbound;

use super::FsService;

/// The envelope generation tests send requests with.
pub(crate) const TEST_GENERATION: u8 = 10;

/// How long a test waits for a frame before failing.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempRoot {
    path: PathBuf,
}

impl TempRoot {
    /// Creates a unique empty directory.
    pub(crate) fn new() -> TempRoot {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("moat-agentd-fs-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test root");
        TempRoot { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the root's `/etc/passwd` and `/etc/group`.
    pub(crate) fn write_passwd(&self, passwd: &str, group: &str) {
        let etc = self.path.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), passwd).unwrap();
        std::fs::write(etc.join("group"), group).unwrap();
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `len` bytes of a non-repeating-looking pattern, so misplaced chunks show.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8).collect()
}

/// A service rooted in a temp dir, with the host's side of its outbound queue.
pub(crate) struct Harness {
    /// The service under test.
    pub(crate) fs: FsService,
    /// Its root.
    pub(crate) tmp: TempRoot,
    rx: mpsc::Receiver<Vec<u8>>,
    decoder: FrameDecoder,
}

impl Harness {
    /// A service over a new temp root.
    pub(crate) fn new() -> Harness {
        let tmp = TempRoot::new();
        let (out, rx) = Outbound::channel();
        let fs = FsService::new(tmp.path().to_path_buf(), out);
        Harness { fs, tmp, rx, decoder: FrameDecoder::new() }
    }

    /// Sends a request without waiting.
    pub(crate) fn request(&mut self, id: u32, op: FsOp) {
        self.fs.request(id, TEST_GENERATION, FsRequest { op, bulk: None });
    }

    /// The next frame the service sent.
    pub(crate) async fn next(&mut self) -> MessageFrame {
        match self.next_decoded().await {
            Decoded::Message(frame) => frame,
            other => panic!("unexpected record {other:?}"),
        }
    }

    /// The next frame or record the service sent.
    pub(crate) async fn next_decoded(&mut self) -> Decoded {
        loop {
            if let Some(raw) = self.decoder.next_frame().expect("well-formed frames") {
                return decode_frame(&raw).expect("decodable frame");
            }
            let bytes = tokio::time::timeout(FRAME_TIMEOUT, self.rx.recv())
                .await
                .expect("a frame within the timeout")
                .expect("the outbound queue is open");
            self.decoder.push(&bytes);
        }
    }

    /// The next frame, which must be the response on `id`.
    pub(crate) async fn response(&mut self, id: u32) -> FsResponse {
        let frame = self.next().await;
        assert_eq!(frame.id, id, "response on the wrong id: {frame:?}");
        match frame.message {
            Message::FsResponse(resp) => resp,
            other => panic!("expected core.fs.response, got {other:?}"),
        }
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call(&mut self, id: u32, op: FsOp) -> FsResponse {
        self.request(id, op);
        self.response(id).await
    }

    /// Opens `path` on `id` and returns the handle.
    pub(crate) async fn open(&mut self, id: u32, path: &str, options: FsOpenOptions) -> u64 {
        let resp = self.call(id, FsOp::OpenFile { path: path.into(), options }).await;
        match resp.data {
            Some(FsResponseData::Handle(handle)) => handle,
            _ => panic!("open {path} failed: {resp:?}"),
        }
    }

    /// Asserts that nothing more arrives within a short grace period.
    pub(crate) async fn assert_silent(&mut self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(self.decoder.next_frame().unwrap().is_none(), "unexpected buffered frame");
        assert!(self.rx.try_recv().is_err(), "unexpected frame");
    }
}
