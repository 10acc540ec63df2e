//! The sandbox's filesystem from the library: [`Sandbox::fs`] gives a [`SandboxFs`] whose calls
//! run the agent's fs service through the relay ([`crate::relay_client::fs`]). The blocking
//! form is [`blocking::Sandbox::fs`], a connected [`FsClient`].
//!
//! ```text
//!  Sandbox::fs() ─► SandboxFs ─► stat / exists / list / mkdir / remove / remove_dir / copy / rename
//!                             ├─► read (≤ MAX_FS_READ_BYTES) / read_to_string / write
//!                             ├─► copy_from_host(host, guest) / copy_to_host(guest, host)
//!                             ├─► copy_dir_from_host / copy_dir_to_host (whole trees)
//!                             ├─► read_stream(path, chunk) ─► FsReadStream: next() ≤ chunk bytes
//!                             ├─► write_stream(path) ─► FsWriteStream: write(data) … finish()
//!                             └─► with_timeout(t) ─► the same, each call within t (FsTimeout)
//! ```
//!
//! Every call checks that the sandbox runs ([`RuntimeError::NotRunning`]), connects, does its
//! work on tokio's blocking pool and disconnects; a failure in the guest is a
//! [`RuntimeError::GuestFs`] ([`GuestFsError::NotFound`], [`GuestFsError::IsADirectory`], ...).
//! The streams keep their connection (a file handle belongs to it) and hold one chunk at a time:
//! a read stream asks the agent for the next chunk only when `next` is called. Dropping a stream
//! closes its connection, and the agent closes the file.
//!
//! ```no_run
//! # async fn example() -> Result<(), moat_runtime::error::RuntimeError> {
//! use moat_runtime::api::Moat;
//!
//! let sandbox = Moat::from_env().get("web").await?;
//! let fs = sandbox.fs();
//! fs.write("/tmp/hello", b"hi\n".to_vec()).await?;
//! assert_eq!(fs.read_to_string("/tmp/hello").await?, "hi\n");
//! fs.copy_to_host("/tmp/hello", "/tmp/hello-from-web").await?;
//! // Each call within 5 s, or RuntimeError::FsTimeout (and the next call works).
//! let quick = fs.with_timeout(std::time::Duration::from_secs(5));
//! assert!(quick.exists("/tmp/hello").await?);
//! let mut stream = fs.read_stream("/var/log/big.log", 1 << 20).await?;
//! while let Some(chunk) = stream.next().await {
//!     let chunk = chunk?; // at most 1 MiB
//! #   drop(chunk);
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_protocol::limits::FS_CHUNK_BYTES;
pub use moat_protocol::payload::fs::{FsEntryInfo, FsEntryKind};

use super::{Sandbox, blocking};
use crate::error::RuntimeError;
pub use crate::relay_client::fs::{FsClient, GuestFile, GuestFsError, OpenMode};

/// Largest file [`SandboxFs::read`] and [`SandboxFs::read_to_string`] return; bigger files are
/// [`GuestFsError::TooLarge`] (stream them, or use [`SandboxFs::read_with_limit`]).
pub const MAX_FS_READ_BYTES: u64 = 64 * 1024 * 1024;

impl blocking::Sandbox {
    /// A filesystem client connected to it ([`RuntimeError::NotRunning`] unless it runs).
    pub fn fs(&self) -> Result<FsClient, RuntimeError> {
        self.require_running()?;
        FsClient::connect(&self.socket())
    }
}

impl Sandbox {
    /// Its filesystem.
    pub fn fs(&self) -> SandboxFs {
        SandboxFs { sandbox: self.inner.clone(), timeout: None }
    }
}

/// A sandbox's filesystem ([`Sandbox::fs`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SandboxFs {
    sandbox: blocking::Sandbox,
    /// Every call's time limit ([`SandboxFs::with_timeout`]).
    timeout: Option<Duration>,
}

/// Runs `op` on `client` within `timeout`, when there is one ([`FsClient::with_timeout`]).
fn timed<T>(
    client: &mut FsClient,
    timeout: Option<Duration>,
    what: &str,
    op: impl FnOnce(&mut FsClient) -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    match timeout {
        Some(timeout) => client.with_timeout(timeout, what, op),
        None => op(client),
    }
}

impl SandboxFs {
    /// The same filesystem with a time limit on each call (a whole `read`, `write`, copy, ...;
    /// each `next`, `write` and `finish` of a stream): past it, the call fails with
    /// [`RuntimeError::FsTimeout`], its connection is closed (the agent drops what it had open)
    /// and the next call works. A per-call limit: `fs.with_timeout(t).read(path)`.
    pub fn with_timeout(&self, timeout: Duration) -> SandboxFs {
        SandboxFs { sandbox: self.sandbox.clone(), timeout: Some(timeout) }
    }

    /// Runs `op` (about `what`) on a fresh client on tokio's blocking pool, within the timeout.
    async fn run<T: Send + 'static>(
        &self,
        what: String,
        op: impl FnOnce(&mut FsClient) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (sandbox, timeout) = (self.sandbox.clone(), self.timeout);
        super::blocking(move || timed(&mut sandbox.fs()?, timeout, &what, op)).await
    }

    /// The whole file `path` (at most [`MAX_FS_READ_BYTES`]).
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, RuntimeError> {
        self.read_with_limit(path, MAX_FS_READ_BYTES).await
    }

    /// The whole file `path`; [`GuestFsError::TooLarge`] when it holds more than `max_bytes`.
    pub async fn read_with_limit(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.read(&path, max_bytes)).await
    }

    /// The whole file `path` as UTF-8 text (at most [`MAX_FS_READ_BYTES`]).
    pub async fn read_to_string(&self, path: &str) -> Result<String, RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.read_to_string(&path, MAX_FS_READ_BYTES)).await
    }

    /// Makes `data` the whole content of the file `path` (created or truncated; its directory
    /// must exist).
    pub async fn write(&self, path: &str, data: impl Into<Vec<u8>>) -> Result<(), RuntimeError> {
        let (path, data) = (path.to_owned(), data.into());
        self.run(path.clone(), move |client| client.write(&path, &data)).await
    }

    /// The entries of the directory `path`.
    pub async fn list(&self, path: &str) -> Result<Vec<FsEntryInfo>, RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.list(&path)).await
    }

    /// Creates the directory `path` and any missing parents (an existing directory is fine).
    pub async fn mkdir(&self, path: &str) -> Result<(), RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.mkdir(&path)).await
    }

    /// Removes the directory `path`: empty, or with everything in it when `recursive`.
    pub async fn remove_dir(&self, path: &str, recursive: bool) -> Result<(), RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.remove_dir(&path, recursive)).await
    }

    /// Removes the file (or symlink) `path`.
    pub async fn remove(&self, path: &str) -> Result<(), RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.remove(&path)).await
    }

    /// Copies the file `src` to `dst` inside the sandbox.
    pub async fn copy(&self, src: &str, dst: &str) -> Result<(), RuntimeError> {
        let (src, dst) = (src.to_owned(), dst.to_owned());
        self.run(format!("{src} -> {dst}"), move |client| client.copy(&src, &dst)).await
    }

    /// Renames `src` to `dst` inside the sandbox.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<(), RuntimeError> {
        let (src, dst) = (src.to_owned(), dst.to_owned());
        self.run(format!("{src} -> {dst}"), move |client| client.rename(&src, &dst)).await
    }

    /// What `path` is (symlinks followed).
    pub async fn stat(&self, path: &str) -> Result<FsEntryInfo, RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.stat(&path)).await
    }

    /// Whether `path` exists (symlinks followed).
    pub async fn exists(&self, path: &str) -> Result<bool, RuntimeError> {
        let path = path.to_owned();
        self.run(path.clone(), move |client| client.exists(&path)).await
    }

    /// Copies the host file `host_path` to the guest file `guest_path`, streaming (any size, one
    /// chunk in memory); returns the bytes copied. After a failure the guest file may hold
    /// part of the data.
    pub async fn copy_from_host(
        &self,
        host_path: impl AsRef<Path>,
        guest_path: &str,
    ) -> Result<u64, RuntimeError> {
        let (host, guest) = (host_path.as_ref().to_owned(), guest_path.to_owned());
        self.run(guest.clone(), move |client| client.copy_from_host(&host, &guest)).await
    }

    /// Copies the guest file `guest_path` to the host file `host_path`, streaming; the host file
    /// appears whole or not at all. Returns the bytes copied.
    pub async fn copy_to_host(
        &self,
        guest_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<u64, RuntimeError> {
        let (guest, host): (String, PathBuf) = (guest_path.to_owned(), host_path.as_ref().into());
        self.run(guest.clone(), move |client| client.copy_to_host(&guest, &host)).await
    }

    /// Copies the host directory `host_dir` and everything under it (files with their
    /// permission bits, directories, symlinks as links) to `guest_dir`, created with its
    /// parents; returns the bytes of file content copied.
    pub async fn copy_dir_from_host(
        &self,
        host_dir: impl AsRef<Path>,
        guest_dir: &str,
    ) -> Result<u64, RuntimeError> {
        let (host, guest) = (host_dir.as_ref().to_owned(), guest_dir.to_owned());
        self.run(guest.clone(), move |client| client.copy_dir_from_host(&host, &guest)).await
    }

    /// Copies the guest directory `guest_dir` and everything under it to `host_dir`, created
    /// with its parents; returns the bytes of file content copied.
    pub async fn copy_dir_to_host(
        &self,
        guest_dir: &str,
        host_dir: impl AsRef<Path>,
    ) -> Result<u64, RuntimeError> {
        let (guest, host) = (guest_dir.to_owned(), host_dir.as_ref().to_owned());
        self.run(guest.clone(), move |client| client.copy_dir_to_host(&guest, &host)).await
    }

    /// The file `path` as a stream of chunks of at most `chunk_bytes` (1 byte to 3 MiB; other
    /// values are brought into that range). Each [`FsReadStream::next`] reads one chunk.
    pub async fn read_stream(
        &self,
        path: &str,
        chunk_bytes: usize,
    ) -> Result<FsReadStream, RuntimeError> {
        let path = path.to_owned();
        let (sandbox, timeout) = (self.sandbox.clone(), self.timeout);
        let (client, file) = super::blocking(move || {
            let mut client = sandbox.fs()?;
            let file = timed(&mut client, timeout, &path, |c| c.open(&path, OpenMode::Read))?;
            Ok((client, file))
        })
        .await?;
        let chunk_bytes = chunk_bytes.clamp(1, FS_CHUNK_BYTES) as u64;
        Ok(FsReadStream { open: Some((client, file)), offset: 0, chunk_bytes, timeout })
    }

    /// A stream writing the file `path` (created or truncated) one [`FsWriteStream::write`] at
    /// a time; [`FsWriteStream::finish`] closes it.
    pub async fn write_stream(&self, path: &str) -> Result<FsWriteStream, RuntimeError> {
        let owned = path.to_owned();
        let (sandbox, timeout) = (self.sandbox.clone(), self.timeout);
        let (client, file) = super::blocking(move || {
            let mut client = sandbox.fs()?;
            let open = |c: &mut FsClient| c.open(&owned, OpenMode::Write { mode: None });
            let file = timed(&mut client, timeout, &owned, open)?;
            Ok((client, file))
        })
        .await?;
        let open = Some((client, file));
        Ok(FsWriteStream { open, path: path.to_owned(), written: 0, timeout })
    }
}

/// A guest file read one chunk per [`FsReadStream::next`] ([`SandboxFs::read_stream`]).
#[derive(Debug)]
pub struct FsReadStream {
    /// The client and the file, until the end or an error.
    open: Option<(FsClient, GuestFile)>,
    offset: u64,
    chunk_bytes: u64,
    /// Each `next`'s time limit.
    timeout: Option<Duration>,
}

impl FsReadStream {
    /// The largest chunk [`FsReadStream::next`] returns.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes as usize
    }

    /// The next chunk (never empty, at most [`FsReadStream::chunk_bytes`]); `None` after the
    /// file's end or after an error (the last item).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, RuntimeError>> {
        let (mut client, file) = self.open.take()?;
        let (offset, len, timeout) = (self.offset, self.chunk_bytes, self.timeout);
        let read = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::new();
            let path = file.path().to_owned();
            let read = timed(&mut client, timeout, &path, |client| {
                client.read_at(&file, offset, Some(len), |data| {
                    chunk.extend_from_slice(data);
                    Ok(())
                })
            });
            if read.is_ok() && chunk.is_empty() {
                return client.close(file).map(|()| None);
            }
            read.map(|_| Some((chunk, client, file)))
        })
        .await;
        match read {
            Ok(Ok(Some((chunk, client, file)))) => {
                self.offset += chunk.len() as u64;
                self.open = Some((client, file));
                Some(Ok(chunk))
            }
            Ok(Ok(None)) => None,
            Ok(Err(err)) => Some(Err(err)),
            Err(err) => Some(Err(RuntimeError::BlockingTask(err))),
        }
    }
}

/// A guest file written one call at a time ([`SandboxFs::write_stream`]).
#[derive(Debug)]
pub struct FsWriteStream {
    /// The client and the file, until `finish` or an error.
    open: Option<(FsClient, GuestFile)>,
    path: String,
    written: u64,
    /// Each call's time limit.
    timeout: Option<Duration>,
}

impl FsWriteStream {
    /// Appends `data` to what this stream wrote, and returns once the agent has written it
    /// (holding `data` and one chunk meanwhile). After an error the stream has ended:
    /// [`GuestFsError::StreamEnded`].
    pub async fn write(&mut self, data: impl Into<Vec<u8>>) -> Result<(), RuntimeError> {
        let data = data.into();
        let Some((mut client, file)) = self.open.take() else {
            return Err(GuestFsError::StreamEnded { path: self.path.clone() }.into());
        };
        if data.is_empty() {
            self.open = Some((client, file));
            return Ok(());
        }
        let (offset, len, timeout, path) =
            (self.written, data.len() as u64, self.timeout, self.path.clone());
        let (client, file) = super::blocking(move || {
            timed(&mut client, timeout, &path, |client| {
                client.write_at(&file, offset, Some(len), &mut &data[..])
            })?;
            Ok((client, file))
        })
        .await?;
        self.open = Some((client, file));
        self.written += len;
        Ok(())
    }

    /// Closes the file (the agent flushes it); returns the bytes written.
    pub async fn finish(mut self) -> Result<u64, RuntimeError> {
        let Some((mut client, file)) = self.open.take() else {
            return Err(GuestFsError::StreamEnded { path: self.path.clone() }.into());
        };
        let (timeout, path) = (self.timeout, self.path.clone());
        super::blocking(move || timed(&mut client, timeout, &path, |client| client.close(file)))
            .await?;
        Ok(self.written)
    }
}
