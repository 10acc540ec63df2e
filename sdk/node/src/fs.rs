//! `sandbox.fs()`: microsandbox's `SandboxFs` (read, write, list, stat, mkdir, remove, copy,
//! rename, exists, copies to and from the host) and its two streams, `FsReadStream` and
//! `FsWriteSink`, over the library's `api::SandboxFs`.
//!
//! Each call resolves the sandbox afresh, so a stopped sandbox is `ERR_MOAT_NOT_RUNNING` and a
//! removed one `ERR_MOAT_NOT_FOUND`; a failure in the guest keeps its kind (`ERR_MOAT_NOT_FOUND`
//! for a missing guest path, see `error.rs`). The streams hold one chunk at a time: a read
//! stream reads the next chunk only when `recv()` asks for it.

use moat_protocol::limits::FS_CHUNK_BYTES;
use moat_runtime::api::blocking as api;
use moat_runtime::api::{FsEntryInfo, FsEntryKind};
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::error::{NodeError, Result};
use crate::library;

/// One directory entry (`list`).
#[napi(object)]
pub struct FsEntry {
    /// The entry's full guest path.
    pub path: String,
    /// `"file"`, `"directory"`, `"symlink"` or `"other"`.
    pub kind: String,
    /// Size in bytes.
    pub size: f64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Last modification, ms since the epoch.
    pub modified: Option<f64>,
}

/// What `stat` returns.
#[napi(object)]
pub struct FsMetadata {
    /// `"file"`, `"directory"`, `"symlink"` or `"other"`.
    pub kind: String,
    /// Size in bytes.
    pub size: f64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// No write bit is set for anyone.
    pub readonly: bool,
    /// Last modification, ms since the epoch.
    pub modified: Option<f64>,
    /// Creation time: the agent does not report it, so always absent.
    pub created: Option<f64>,
}

fn kind(kind: FsEntryKind) -> String {
    match kind {
        FsEntryKind::File => "file",
        FsEntryKind::Dir => "directory",
        FsEntryKind::Symlink => "symlink",
        FsEntryKind::Other => "other",
    }
    .to_owned()
}

fn modified_ms(info: &FsEntryInfo) -> Option<f64> {
    info.mtime.or(info.modified).map(|secs| secs as f64 * 1000.0)
}

impl FsEntry {
    fn of(info: FsEntryInfo) -> FsEntry {
        FsEntry {
            kind: kind(info.kind),
            size: info.size as f64,
            mode: info.mode & 0o7777,
            modified: modified_ms(&info),
            path: info.path,
        }
    }
}

impl FsMetadata {
    fn of(info: &FsEntryInfo) -> FsMetadata {
        FsMetadata {
            kind: kind(info.kind),
            size: info.size as f64,
            mode: info.mode & 0o7777,
            readonly: info.mode & 0o222 == 0,
            modified: modified_ms(info),
            created: None,
        }
    }
}

/// A running sandbox's filesystem (`sandbox.fs()`).
#[napi]
pub struct SandboxFs {
    sandbox: api::Sandbox,
}

impl SandboxFs {
    pub(crate) fn new(sandbox: api::Sandbox) -> SandboxFs {
        SandboxFs { sandbox }
    }

    async fn fs(&self) -> Result<moat_runtime::api::SandboxFs> {
        Ok(library::async_sandbox(&self.sandbox).await?.fs())
    }
}

#[napi]
impl SandboxFs {
    /// The whole file (at most 64 MiB; stream bigger files with `readStream`).
    #[napi]
    pub async fn read(&self, path: String) -> napi::Result<Buffer> {
        let data = self.fs().await?.read(&path).await.map_err(NodeError::from)?;
        Ok(data.into())
    }

    /// The whole file as UTF-8 text (`ERR_MOAT_NOT_UTF8` when it is not).
    #[napi]
    pub async fn read_string(&self, path: String) -> napi::Result<String> {
        Ok(self.fs().await?.read_to_string(&path).await.map_err(NodeError::from)?)
    }

    /// Makes `data` (a string is written as UTF-8) the whole content of the file (created or
    /// truncated; its directory must exist).
    #[napi(ts_args_type = "path: string, data: Buffer | string")]
    pub async fn write(&self, path: String, data: Either<String, Buffer>) -> napi::Result<()> {
        let bytes = match data {
            Either::A(text) => text.into_bytes(),
            Either::B(buffer) => buffer.to_vec(),
        };
        self.fs().await?.write(&path, bytes).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// The entries of a directory.
    #[napi]
    pub async fn list(&self, path: String) -> napi::Result<Vec<FsEntry>> {
        let entries = self.fs().await?.list(&path).await.map_err(NodeError::from)?;
        Ok(entries.into_iter().map(FsEntry::of).collect())
    }

    /// Creates a directory and its missing parents (an existing directory is fine).
    #[napi]
    pub async fn mkdir(&self, path: String) -> napi::Result<()> {
        self.fs().await?.mkdir(&path).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Removes a directory and everything in it.
    #[napi]
    pub async fn remove_dir(&self, path: String) -> napi::Result<()> {
        self.fs().await?.remove_dir(&path, true).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Removes a file (or symlink).
    #[napi]
    pub async fn remove(&self, path: String) -> napi::Result<()> {
        self.fs().await?.remove(&path).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Copies a file inside the sandbox.
    #[napi]
    pub async fn copy(&self, from: String, to: String) -> napi::Result<()> {
        self.fs().await?.copy(&from, &to).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Renames a file or directory inside the sandbox.
    #[napi]
    pub async fn rename(&self, from: String, to: String) -> napi::Result<()> {
        self.fs().await?.rename(&from, &to).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// What `path` is (symlinks followed).
    #[napi]
    pub async fn stat(&self, path: String) -> napi::Result<FsMetadata> {
        let info = self.fs().await?.stat(&path).await.map_err(NodeError::from)?;
        Ok(FsMetadata::of(&info))
    }

    /// Whether `path` exists (symlinks followed).
    #[napi]
    pub async fn exists(&self, path: String) -> napi::Result<bool> {
        Ok(self.fs().await?.exists(&path).await.map_err(NodeError::from)?)
    }

    /// Copies a host file into the sandbox, streaming.
    #[napi]
    pub async fn copy_from_host(&self, host_path: String, guest_path: String) -> napi::Result<()> {
        self.fs().await?.copy_from_host(&host_path, &guest_path).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// Copies a sandbox file to the host, streaming (the host file appears whole or not at all).
    #[napi]
    pub async fn copy_to_host(&self, guest_path: String, host_path: String) -> napi::Result<()> {
        self.fs().await?.copy_to_host(&guest_path, &host_path).await.map_err(NodeError::from)?;
        Ok(())
    }

    /// The file as a stream of chunks of at most 3 MiB, each read when `recv()` asks.
    #[napi(ts_return_type = "Promise<FsReadStream>")]
    pub async fn read_stream(&self, path: String) -> napi::Result<FsReadStream> {
        let stream =
            self.fs().await?.read_stream(&path, FS_CHUNK_BYTES).await.map_err(NodeError::from)?;
        Ok(FsReadStream { stream: Mutex::new(Some(stream)) })
    }

    /// A sink writing the file (created or truncated) one `write` at a time.
    #[napi(ts_return_type = "Promise<FsWriteSink>")]
    pub async fn write_stream(&self, path: String) -> napi::Result<FsWriteSink> {
        let stream = self.fs().await?.write_stream(&path).await.map_err(NodeError::from)?;
        Ok(FsWriteSink { stream: Mutex::new(Some(stream)) })
    }
}

/// A guest file read one chunk per `recv()` (async-iterable).
#[napi]
pub struct FsReadStream {
    /// `None` once the file's end or an error was returned.
    stream: Mutex<Option<moat_runtime::api::FsReadStream>>,
}

#[napi]
impl FsReadStream {
    /// The next chunk; `null` after the file's end (and on every call after it).
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<Buffer>> {
        let mut guard = self.stream.lock().await;
        let Some(stream) = guard.as_mut() else { return Ok(None) };
        match stream.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk.into())),
            Some(Err(err)) => {
                *guard = None;
                Err(NodeError::from(err).into())
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }
}

/// A guest file written one call at a time.
#[napi]
pub struct FsWriteSink {
    /// `None` once closed or failed.
    stream: Mutex<Option<moat_runtime::api::FsWriteStream>>,
}

#[napi]
impl FsWriteSink {
    /// Appends `data`; resolves once the agent has written it.
    #[napi(ts_args_type = "data: Buffer | string")]
    pub async fn write(&self, data: Either<String, Buffer>) -> napi::Result<()> {
        let bytes = match data {
            Either::A(text) => text.into_bytes(),
            Either::B(buffer) => buffer.to_vec(),
        };
        let mut guard = self.stream.lock().await;
        let Some(stream) = guard.as_mut() else {
            return Err(NodeError::Closed("the fs write sink").into());
        };
        if let Err(err) = stream.write(bytes).await {
            *guard = None;
            return Err(NodeError::from(err).into());
        }
        Ok(())
    }

    /// Closes the file (the agent flushes it). Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let Some(stream) = self.stream.lock().await.take() else { return Ok(()) };
        stream.finish().await.map_err(NodeError::from)?;
        Ok(())
    }
}
