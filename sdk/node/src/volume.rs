//! Named volumes: microsandbox's `Volume` (create, get, list, remove), `VolumeHandle`, and
//! `VolumeFs` (host-side file access inside a volume) over the library's volume store
//! (`store::volumes::Volumes`, what `moat volume` calls). A sandbox mounts one with
//! `volumes: { '/data': { named: 'NAME' } }` (`Mount.named('NAME')`).
//!
//! Every path of `VolumeFs` is resolved inside the volume by the library
//! (`openat2(RESOLVE_BENEATH)`): `..`, or a symlink leading out, is `ERR_MOAT_PATH_ESCAPES`.
//! The library has no remove or rename inside a volume, so `remove`, `removeDir` and `rename`
//! reject with `NotSupportedError`. `stat` and `list` take an entry's kind and size from its
//! directory's listing (never opening a FIFO a sandbox left there), and its mode and modification
//! time from the file or directory itself.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use moat_protocol::limits::FS_CHUNK_BYTES;
use moat_runtime::store::volumes::{VolumeDetails, VolumeEntry, VolumeError, VolumeOptions};
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;
use tokio::sync::{Mutex, mpsc};

use crate::error::{NodeError, Result, blocking};
use crate::fs::{FsEntry, FsMetadata};
use crate::info::timestamp_ms;
use crate::library;

/// Largest file `VolumeFs.read` returns whole (as `SandboxFs.read`); stream bigger ones.
const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

/// What `Volume.create` takes.
#[napi(object)]
pub struct VolumeConfig {
    /// The volume name (the sandbox name rules; not starting with `.` or `~`).
    pub name: String,
    /// `"directory"` (the default); `"disk"` is not supported by moat.
    pub kind: Option<String>,
    /// A size quota in MiB (root only: an ext4 image mounted on the volume's directory).
    pub quota_mib: Option<f64>,
    /// Not supported by moat (a disk volume's size).
    #[napi(ts_type = "number")]
    pub capacity_mib: Option<serde_json::Value>,
    /// Not supported by moat: volumes carry no labels (an empty object is accepted).
    pub labels: Option<HashMap<String, String>>,
}

/// A volume as `Volume.list` reports it.
#[napi(object)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Always `"directory"`.
    pub kind: String,
    /// Its size quota in MiB, if any.
    pub quota_mib: Option<f64>,
    /// Bytes used.
    pub used_bytes: f64,
    /// Always absent (no disk volumes).
    pub capacity_bytes: Option<f64>,
    /// Always absent.
    pub disk_format: Option<String>,
    /// Always absent.
    pub disk_fstype: Option<String>,
    /// Always empty (moat's volumes carry no labels).
    pub labels: HashMap<String, String>,
    /// Creation time, ms since the epoch.
    pub created_at: Option<f64>,
}

impl VolumeInfo {
    fn of(details: &VolumeDetails) -> VolumeInfo {
        let record = &details.info.record;
        VolumeInfo {
            name: record.name.clone(),
            kind: "directory".to_owned(),
            quota_mib: record.quota_mib.map(|q| q as f64),
            used_bytes: details.used_bytes as f64,
            capacity_bytes: None,
            disk_format: None,
            disk_fstype: None,
            labels: HashMap::new(),
            created_at: created_ms(&record.created_at),
        }
    }
}

/// `created_at` (RFC 3339 UTC, seconds or milliseconds) as ms since the epoch.
fn created_ms(text: &str) -> Option<f64> {
    timestamp_ms(text).or_else(|| {
        // `2026-04-30T20:32:59Z`: no fraction.
        let with_ms = format!("{}.000Z", text.strip_suffix('Z')?);
        timestamp_ms(&with_ms)
    })
}

/// A named volume of the moat home.
#[napi]
pub struct Volume {
    name: String,
    path: String,
}

#[napi]
impl Volume {
    /// Creates a volume (`moat volume create`).
    #[napi(ts_return_type = "Promise<Volume>")]
    pub async fn create(config: VolumeConfig) -> napi::Result<Volume> {
        match config.kind.as_deref() {
            None | Some("directory") => {}
            Some("disk") => {
                return Err(NodeError::NotSupported("VolumeConfig.kind \"disk\"".into()).into());
            }
            Some(other) => {
                return Err(NodeError::InvalidArgument(format!(
                    "VolumeConfig.kind must be \"directory\", not {other:?}"
                ))
                .into());
            }
        }
        if config.capacity_mib.is_some() {
            return Err(NodeError::NotSupported("VolumeConfig.capacityMib".into()).into());
        }
        if config.labels.as_ref().is_some_and(|labels| !labels.is_empty()) {
            return Err(NodeError::NotSupported("VolumeConfig.labels".into()).into());
        }
        let quota_mib = match config.quota_mib {
            None => None,
            Some(q) if q.is_finite() && q >= 1.0 && q.fract() == 0.0 => Some(q as u64),
            Some(q) => {
                return Err(NodeError::InvalidArgument(format!(
                    "VolumeConfig.quotaMib must be a whole number of MiB, not {q}"
                ))
                .into());
            }
        };
        let name = config.name;
        let info =
            blocking(move || Ok(library::volumes().create(&name, VolumeOptions { quota_mib })?))
                .await?;
        Ok(Volume { name: info.record.name, path: info.path.to_string_lossy().into_owned() })
    }

    /// A handle on the existing volume `name`, with its usage.
    #[napi(ts_return_type = "Promise<VolumeHandle>")]
    pub async fn get(name: String) -> napi::Result<VolumeHandle> {
        let details = blocking(move || Ok(library::volumes().inspect(&name)?)).await?;
        Ok(VolumeHandle { info: VolumeInfo::of(&details) })
    }

    /// Every volume, sorted by name, with its usage.
    #[napi]
    pub async fn list() -> napi::Result<Vec<VolumeInfo>> {
        let details = blocking(|| {
            let volumes = library::volumes();
            let mut out = Vec::new();
            for info in volumes.list()? {
                match volumes.inspect(&info.record.name) {
                    Ok(details) => out.push(VolumeInfo::of(&details)),
                    // Removed since it was listed.
                    Err(VolumeError::Unknown(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Ok(out)
        })
        .await?;
        Ok(details)
    }

    /// Removes the volume and its data; a volume a running sandbox mounts is refused
    /// (`ERR_MOAT_IN_USE`).
    #[napi]
    pub async fn remove(name: String) -> napi::Result<()> {
        blocking(move || Ok(library::volumes().remove(&name, false)?)).await?;
        Ok(())
    }

    /// The volume name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The host directory sandboxes mount.
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.path.clone()
    }

    /// Host-side file access inside the volume.
    #[napi]
    pub fn fs(&self) -> VolumeFs {
        VolumeFs { name: self.name.clone() }
    }
}

/// A volume record from `Volume.get`.
#[napi]
pub struct VolumeHandle {
    info: VolumeInfo,
}

#[napi]
impl VolumeHandle {
    /// The volume name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.info.name.clone()
    }

    /// Its size quota in MiB, if any.
    #[napi(getter)]
    pub fn quota_mib(&self) -> Option<f64> {
        self.info.quota_mib
    }

    /// Always `"directory"`.
    #[napi(getter)]
    pub fn kind(&self) -> String {
        self.info.kind.clone()
    }

    /// Bytes used when it was fetched.
    #[napi(getter)]
    pub fn used_bytes(&self) -> f64 {
        self.info.used_bytes
    }

    /// Always null (no disk volumes).
    #[napi(getter)]
    pub fn capacity_bytes(&self) -> Option<f64> {
        None
    }

    /// Always null.
    #[napi(getter)]
    pub fn disk_format(&self) -> Option<String> {
        None
    }

    /// Always null.
    #[napi(getter)]
    pub fn disk_fstype(&self) -> Option<String> {
        None
    }

    /// Always empty.
    #[napi(getter)]
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::new()
    }

    /// Creation time, ms since the epoch.
    #[napi(getter)]
    pub fn created_at(&self) -> Option<f64> {
        self.info.created_at
    }

    /// Removes the volume (`Volume.remove`).
    #[napi]
    pub async fn remove(&self) -> napi::Result<()> {
        let name = self.info.name.clone();
        blocking(move || Ok(library::volumes().remove(&name, false)?)).await?;
        Ok(())
    }

    /// Host-side file access inside the volume.
    #[napi]
    pub fn fs(&self) -> VolumeFs {
        VolumeFs { name: self.info.name.clone() }
    }
}

/// `path` split into its directory and its last component (`None` for the volume's root).
fn split(path: &str) -> (String, Option<String>) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((dir, base)) if !base.is_empty() && base != "." => {
            (dir.to_owned(), Some(base.to_owned()))
        }
        None if !trimmed.is_empty() && trimmed != "." => (String::new(), Some(trimmed.to_owned())),
        _ => (trimmed.to_owned(), None),
    }
}

fn not_found(name: &str, path: &str) -> NodeError {
    NodeError::Volume(VolumeError::Io {
        what: "find in volume",
        path: std::path::PathBuf::from(format!("{name}:{path}")),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "file" => "file",
        "dir" => "directory",
        "symlink" => "symlink",
        _ => "other",
    }
}

/// Host-side file operations inside one volume (`volume.fs()`).
#[napi]
pub struct VolumeFs {
    name: String,
}

impl VolumeFs {
    /// The entry `path` names, from its directory's listing (`None` for the volume's root).
    fn entry(name: &str, path: &str) -> Result<Option<VolumeEntry>> {
        let (dir, base) = split(path);
        let Some(base) = base else { return Ok(None) };
        let listed = library::volumes().list_dir(name, &dir)?;
        listed
            .into_iter()
            .find(|entry| entry.name == base)
            .map(Some)
            .ok_or_else(|| not_found(name, path))
    }

    /// Mode and modification time of a file or directory (never opening anything else).
    fn mode_and_mtime(name: &str, path: &str, kind: &str) -> Result<(u32, Option<f64>)> {
        match kind {
            "file" | "dir" => {
                let meta = library::volumes().open(name, path)?.metadata().map_err(|err| {
                    NodeError::Volume(VolumeError::Io {
                        what: "stat in volume",
                        path: path.into(),
                        source: err,
                    })
                })?;
                Ok((meta.mode() & 0o7777, Some(meta.mtime() as f64 * 1000.0)))
            }
            "symlink" => Ok((0o777, None)),
            _ => Ok((0, None)),
        }
    }

    fn stat_blocking(name: &str, path: &str) -> Result<FsMetadata> {
        let (kind, size) = match Self::entry(name, path)? {
            Some(entry) => (entry.kind, entry.size),
            None => ("dir", 0),
        };
        let (mode, modified) = Self::mode_and_mtime(name, path, kind)?;
        Ok(FsMetadata {
            kind: kind_name(kind).to_owned(),
            size: size as f64,
            mode,
            readonly: mode & 0o222 == 0,
            modified,
            created: None,
        })
    }

    /// Opens `path` for reading once its listing says it is a regular file.
    fn open_file(name: &str, path: &str) -> Result<std::fs::File> {
        match Self::entry(name, path)? {
            Some(entry) if entry.kind == "file" => Ok(library::volumes().open(name, path)?),
            Some(entry) if entry.kind == "dir" => {
                Err(io_error(path, std::io::ErrorKind::IsADirectory))
            }
            None => Err(io_error(path, std::io::ErrorKind::IsADirectory)),
            Some(_) => Err(NodeError::InvalidArgument(format!(
                "{path:?} in volume {name:?} is not a regular file"
            ))),
        }
    }

    fn not_supported<T>(call: &str) -> napi::Result<T> {
        Err(NodeError::NotSupported(format!(
            "VolumeFs.{call} (the library has no {call} inside a volume yet)"
        ))
        .into())
    }
}

fn io_error(path: &str, kind: std::io::ErrorKind) -> NodeError {
    NodeError::Volume(VolumeError::Io {
        what: "open in volume",
        path: path.into(),
        source: std::io::Error::from(kind),
    })
}

fn bytes_of(data: Either<String, Buffer>) -> Vec<u8> {
    match data {
        Either::A(text) => text.into_bytes(),
        Either::B(buffer) => buffer.to_vec(),
    }
}

#[napi]
impl VolumeFs {
    /// The whole file (at most 64 MiB; stream bigger files with `readStream`).
    #[napi]
    pub async fn read(&self, path: String) -> napi::Result<Buffer> {
        let name = self.name.clone();
        let data = blocking(move || {
            let mut file = Self::open_file(&name, &path)?;
            let mut out = Vec::new();
            (&mut file).take(MAX_READ_BYTES + 1).read_to_end(&mut out).map_err(|err| {
                NodeError::Volume(VolumeError::Io {
                    what: "read in volume",
                    path: path.clone().into(),
                    source: err,
                })
            })?;
            if out.len() as u64 > MAX_READ_BYTES {
                return Err(VolumeError::TooLarge { name, path, max_bytes: MAX_READ_BYTES }.into());
            }
            Ok(out)
        })
        .await?;
        Ok(data.into())
    }

    /// The whole file as UTF-8 text (`ERR_MOAT_NOT_UTF8` when it is not).
    #[napi]
    pub async fn read_string(&self, path: String) -> napi::Result<String> {
        let shown = path.clone();
        let data = self.read(path).await?;
        String::from_utf8(data.to_vec()).map_err(|_| NodeError::NotUtf8(shown).into())
    }

    /// Makes `data` the whole content of the file (created mode 0644, or truncated).
    #[napi(ts_args_type = "path: string, data: Buffer | string")]
    pub async fn write(&self, path: String, data: Either<String, Buffer>) -> napi::Result<()> {
        let (name, bytes) = (self.name.clone(), bytes_of(data));
        blocking(move || Ok(library::volumes().write(&name, &path, &bytes)?)).await?;
        Ok(())
    }

    /// The entries of a directory.
    #[napi]
    pub async fn list(&self, path: String) -> napi::Result<Vec<FsEntry>> {
        let name = self.name.clone();
        let entries = blocking(move || {
            let listed = library::volumes().list_dir(&name, &path)?;
            let dir = path.trim_end_matches('/');
            let mut out = Vec::with_capacity(listed.len());
            for entry in listed {
                let full = format!("{dir}/{}", entry.name);
                let (mode, modified) = match Self::mode_and_mtime(&name, &full, entry.kind) {
                    Ok(found) => found,
                    // Removed since the listing.
                    Err(err) if err.code() == "ERR_MOAT_NOT_FOUND" => continue,
                    Err(err) => return Err(err),
                };
                out.push(FsEntry {
                    path: full,
                    kind: kind_name(entry.kind).to_owned(),
                    size: entry.size as f64,
                    mode,
                    modified,
                });
            }
            Ok(out)
        })
        .await?;
        Ok(entries)
    }

    /// Creates a directory and its missing parents.
    #[napi]
    pub async fn mkdir(&self, path: String) -> napi::Result<()> {
        let name = self.name.clone();
        blocking(move || Ok(library::volumes().mkdir(&name, &path)?)).await?;
        Ok(())
    }

    /// Not supported by moat yet.
    #[napi(ts_return_type = "Promise<never>")]
    pub async fn remove_dir(&self, _path: String) -> napi::Result<()> {
        Self::not_supported("removeDir")
    }

    /// Not supported by moat yet.
    #[napi(ts_return_type = "Promise<never>")]
    pub async fn remove(&self, _path: String) -> napi::Result<()> {
        Self::not_supported("remove")
    }

    /// Copies a file inside the volume.
    #[napi]
    pub async fn copy(&self, from: String, to: String) -> napi::Result<()> {
        let name = self.name.clone();
        blocking(move || {
            let file = Self::open_file(&name, &from)?;
            library::volumes().write_from(&name, &to, file)?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Not supported by moat yet.
    #[napi(ts_return_type = "Promise<never>")]
    pub async fn rename(&self, _from: String, _to: String) -> napi::Result<()> {
        Self::not_supported("rename")
    }

    /// What `path` is (a symlink is reported as itself, not followed).
    #[napi]
    pub async fn stat(&self, path: String) -> napi::Result<FsMetadata> {
        let name = self.name.clone();
        Ok(blocking(move || Self::stat_blocking(&name, &path)).await?)
    }

    /// Whether `path` exists in the volume.
    #[napi]
    pub async fn exists(&self, path: String) -> napi::Result<bool> {
        let name = self.name.clone();
        let found = blocking(move || match Self::entry(&name, &path) {
            Ok(_) => Ok(true),
            Err(err) if matches!(err.code(), "ERR_MOAT_NOT_FOUND" | "ERR_MOAT_NOT_A_DIRECTORY") => {
                Ok(false)
            }
            Err(err) => Err(err),
        })
        .await?;
        Ok(found)
    }

    /// The file as a stream of chunks of at most 3 MiB, each read when `recv()` asks.
    #[napi(ts_return_type = "Promise<VolumeFsReadStream>")]
    pub async fn read_stream(&self, path: String) -> napi::Result<VolumeFsReadStream> {
        let name = self.name.clone();
        let file = blocking(move || Self::open_file(&name, &path)).await?;
        Ok(VolumeFsReadStream { file: Mutex::new(Some(file)) })
    }

    /// A sink writing the file (created or truncated) one `write` at a time.
    #[napi(ts_return_type = "Promise<VolumeFsWriteSink>")]
    pub async fn write_stream(&self, path: String) -> napi::Result<VolumeFsWriteSink> {
        let name = self.name.clone();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader { rx, chunk: Vec::new(), at: 0 };
            library::volumes().write_from(&name, &path, reader).map(drop)
        });
        Ok(VolumeFsWriteSink { state: Mutex::new(Some((tx, writer))) })
    }
}

/// A volume file read one chunk per `recv()` (async-iterable).
#[napi]
pub struct VolumeFsReadStream {
    /// `None` after the end or an error.
    file: Mutex<Option<std::fs::File>>,
}

#[napi]
impl VolumeFsReadStream {
    /// The next chunk; `null` after the file's end.
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<Buffer>> {
        let mut guard = self.file.lock().await;
        let Some(mut file) = guard.take() else { return Ok(None) };
        let (file, read) = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(FS_CHUNK_BYTES);
            let read =
                (&mut file).take(FS_CHUNK_BYTES as u64).read_to_end(&mut chunk).map(|_| chunk);
            (file, read)
        })
        .await
        .map_err(|join| NodeError::Worker(join.to_string()))?;
        match read {
            Ok(chunk) if chunk.is_empty() => Ok(None),
            Ok(chunk) => {
                *guard = Some(file);
                Ok(Some(chunk.into()))
            }
            Err(err) => Err(NodeError::Volume(VolumeError::Io {
                what: "read in volume",
                path: "stream".into(),
                source: err,
            })
            .into()),
        }
    }
}

/// The blocking writer's input: the chunks `VolumeFsWriteSink.write` sends, until it closes.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

type Writer = (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<Result<(), VolumeError>>);

/// A volume file written one call at a time; `close()` ends it (dropping the sink without
/// closing it also ends the file, with what was written).
#[napi]
pub struct VolumeFsWriteSink {
    /// `None` once closed or failed.
    state: Mutex<Option<Writer>>,
}

#[napi]
impl VolumeFsWriteSink {
    /// Appends `data`.
    #[napi(ts_args_type = "data: Buffer | string")]
    pub async fn write(&self, data: Either<String, Buffer>) -> napi::Result<()> {
        let bytes = bytes_of(data);
        let mut guard = self.state.lock().await;
        let Some((tx, _)) = guard.as_ref() else {
            return Err(NodeError::Closed("the volume write sink").into());
        };
        if tx.send(bytes).await.is_err() {
            // The writer stopped early: its error says why.
            let Some((_, writer)) = guard.take() else { return Ok(()) };
            return match writer.await {
                Ok(Err(err)) => Err(NodeError::from(err).into()),
                Ok(Ok(())) => Err(NodeError::Closed("the volume write sink").into()),
                Err(join) => Err(NodeError::Worker(join.to_string()).into()),
            };
        }
        Ok(())
    }

    /// Finishes the file (flushed and synced). Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let Some((tx, writer)) = self.state.lock().await.take() else { return Ok(()) };
        drop(tx);
        match writer.await {
            Ok(result) => Ok(result.map_err(NodeError::from)?),
            Err(join) => Err(NodeError::Worker(join.to_string()).into()),
        }
    }
}
