//! The content-addressed image store under `$MOAT_HOME/images`.
//!
//! ```text
//!  images/
//!  ├── index.json              image records: reference ─► manifest, config, layers (bottom first)
//!  ├── index.lock              flock held while index.json is rewritten
//!  ├── gc.lock                 shared by pulls, exclusive for rmi/prune (never drop what a pull
//!  │                           just committed)
//!  ├── blobs/sha256/<hex>      verified config blobs
//!  ├── layers/<hex>/           one unpacked layer, named by its diff id; an overlay lower dir
//!  ├── layers/<hex>.json       what unpacking it found (sizes, implicit dirs)
//!  └── tmp/<pid>-<n>-<what>    downloads and unpacks in progress (same filesystem)
//! ```
//!
//! A layer becomes visible only by `rename(tmp/..., layers/<hex>)` after it was downloaded,
//! verified against its digest, unpacked and verified against its diff id; until then it is
//! under `tmp/`, which nothing trusts. Two pulls of one layer race to the rename and the loser
//! drops its copy. `prune` removes layers no image and no sandbox uses, and `tmp/` entries whose
//! process is gone.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::image::error::ImageError;
use crate::image::unpack::OPAQUE_XATTR;

/// One layer of an image record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The compressed blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest (the store key).
    pub diff_id: String,
    /// The compressed size in bytes.
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The canonical reference it was pulled as.
    pub reference: String,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The config blob's digest.
    pub config_digest: String,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Seconds since the epoch when it was pulled.
    pub pulled_at: u64,
    /// Other spellings it was pulled as (`busybox` for `docker.io/library/busybox:latest`), so
    /// a start finds a cached image by the text it was given without parsing it: the reference
    /// grammar is a large regex whose compilation was most of the create-to-ready gap between
    /// `--image` and `--rootfs host` (docs/BENCHMARKS.md, "Images"). A pure function of the
    /// text, so an alias never goes stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl ImageRecord {
    /// Whether `text` is its canonical reference or one of its aliases.
    pub fn named(&self, text: &str) -> bool {
        self.reference == text || self.aliases.iter().any(|a| a == text)
    }
}

/// What unpacking a layer found, kept beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Bytes of file content.
    pub unpacked_bytes: u64,
    /// Archive entries.
    pub entries: u64,
    /// Directories the layer needs but never listed.
    pub implicit_dirs: Vec<String>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Layers removed.
    pub layers: usize,
    /// Bytes of file content they held.
    pub bytes: u64,
    /// Abandoned temporary entries removed.
    pub temporaries: usize,
    /// Config blobs removed.
    pub blobs: usize,
}

/// A held `flock`, released on drop (with the file).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// The store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The 64 hex digits of a `sha256:` digest; anything else is refused, so a digest from a
/// registry can never name a path outside the store.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    let hex =
        digest.strip_prefix("sha256:").ok_or_else(|| ImageError::BadDigest(digest.to_owned()))?;
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(hex)
    } else {
        Err(ImageError::BadDigest(digest.to_owned()))
    }
}

impl ImageStore {
    /// The store of the moat home `home`.
    pub fn new(home: &Path) -> ImageStore {
        ImageStore { root: home.join("images") }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Creates the store's directories.
    pub fn ensure(&self) -> Result<(), ImageError> {
        for dir in [self.layers_dir(), self.tmp_dir(), self.root.join("blobs/sha256")] {
            std::fs::create_dir_all(&dir).map_err(ImageError::io("create directory", &dir))?;
        }
        Ok(())
    }

    /// The directory of the layer with this diff id.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layers_dir().join(digest_hex(diff_id)?))
    }

    /// Whether the layer is unpacked and committed.
    pub fn has_layer(&self, diff_id: &str) -> Result<bool, ImageError> {
        Ok(self.layer_dir(diff_id)?.is_dir())
    }

    /// What unpacking the layer found.
    pub fn layer_meta(&self, diff_id: &str) -> Result<LayerMeta, ImageError> {
        let path = self.layer_dir(diff_id)?.with_extension("json");
        read_json(&path)
    }

    /// A fresh path under `tmp/` (not created), named for this process.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.tmp_dir().join(format!("{}-{n}-{nanos}-{what}", std::process::id()))
    }

    /// Makes `unpacked` (a directory under `tmp/`) the layer `diff_id`. When another pull
    /// committed it first, drops `unpacked` and keeps theirs.
    pub fn commit_layer(
        &self,
        unpacked: &Path,
        diff_id: &str,
        meta: &LayerMeta,
    ) -> Result<(), ImageError> {
        let dest = self.layer_dir(diff_id)?;
        write_json_atomic(self, &dest.with_extension("json"), meta)?;
        match std::fs::rename(unpacked, &dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => {
                remove_any(unpacked);
                Ok(())
            }
            Err(err) => Err(ImageError::io("commit layer", &dest)(err)),
        }
    }

    /// Stores a verified blob.
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        let tmp = self.temp_path("blob");
        let mut file = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(ImageError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ImageError::io("commit blob", &path))
    }

    /// Reads a stored blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path).map_err(ImageError::io("read blob", &path))
    }

    /// Every image record.
    pub fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let path = self.index_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        read_json(&path)
    }

    /// The record pulled as `canonical`.
    pub fn find(&self, canonical: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.records()?.into_iter().find(|r| r.reference == canonical))
    }

    /// The record named `text` exactly (its canonical reference or an alias), with no parsing.
    pub fn find_named(&self, text: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.records()?.into_iter().find(|r| r.named(text)))
    }

    /// Adds (or replaces) a record; a replaced record's aliases are kept.
    pub fn put_record(&self, mut record: ImageRecord) -> Result<(), ImageError> {
        self.update_index(|records| {
            if let Some(old) = records.iter().find(|r| r.reference == record.reference) {
                for alias in &old.aliases {
                    if !record.aliases.contains(alias) {
                        record.aliases.push(alias.clone());
                    }
                }
            }
            records.retain(|r| r.reference != record.reference);
            records.push(record);
            records.sort_by(|a, b| a.reference.cmp(&b.reference));
        })
    }

    /// Removes a record; returns it.
    pub fn remove_record(&self, canonical: &str) -> Result<Option<ImageRecord>, ImageError> {
        let mut removed = None;
        self.update_index(|records| {
            if let Some(at) = records.iter().position(|r| r.reference == canonical) {
                removed = Some(records.remove(at));
            }
        })?;
        Ok(removed)
    }

    fn update_index(&self, change: impl FnOnce(&mut Vec<ImageRecord>)) -> Result<(), ImageError> {
        self.ensure()?;
        let _lock = self.lock("index.lock", FlockOperation::LockExclusive)?;
        let mut records = self.records()?;
        change(&mut records);
        write_json_atomic(self, &self.index_path(), &records)
    }

    /// Takes `gc.lock`: shared for a pull, exclusive for rmi and prune.
    pub fn gc_lock(&self, exclusive: bool) -> Result<StoreLock, ImageError> {
        self.ensure()?;
        let operation =
            if exclusive { FlockOperation::LockExclusive } else { FlockOperation::LockShared };
        self.lock("gc.lock", operation)
    }

    fn lock(&self, name: &str, operation: FlockOperation) -> Result<StoreLock, ImageError> {
        let path = self.root.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("open lock", &path))?;
        rustix::fs::flock(&file, operation).map_err(|e| ImageError::io("lock", &path)(e.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// Removes layers that no record and no entry of `in_use` (diff ids) names, config blobs no
    /// record names, and `tmp/` entries whose process is gone. Hold the exclusive gc lock.
    pub fn prune(&self, in_use: &BTreeSet<String>) -> Result<PruneReport, ImageError> {
        self.ensure()?;
        let records = self.records()?;
        let mut keep: BTreeSet<String> =
            in_use.iter().filter_map(|d| digest_hex(d).ok().map(str::to_owned)).collect();
        let mut keep_blobs = BTreeSet::new();
        for record in &records {
            keep.extend(
                record.layers.iter().filter_map(|l| digest_hex(&l.diff_id).ok().map(str::to_owned)),
            );
            keep_blobs.extend(digest_hex(&record.config_digest).ok().map(str::to_owned));
        }
        let mut report = PruneReport::default();
        for (name, path) in list_dir(&self.layers_dir())? {
            let hex = name.strip_suffix(".json").unwrap_or(&name);
            if keep.contains(hex) {
                continue;
            }
            if path.is_dir() {
                report.bytes += read_json::<LayerMeta>(&path.with_extension("json"))
                    .map_or(0, |m| m.unpacked_bytes);
                // Renamed first: a half-removed layer is never visible under its name.
                let doomed = self.temp_path("prune");
                std::fs::rename(&path, &doomed).map_err(ImageError::io("remove layer", &path))?;
                remove_any(&doomed);
                report.layers += 1;
            } else {
                remove_any(&path);
            }
        }
        for (name, path) in list_dir(&self.root.join("blobs/sha256"))? {
            if !keep_blobs.contains(&name) {
                remove_any(&path);
                report.blobs += 1;
            }
        }
        report.temporaries = self.sweep_temporaries()?;
        Ok(report)
    }

    /// Removes the `tmp/` entries of processes that are gone (interrupted pulls); returns how
    /// many. Safe at any time: a live pull's entries are named for its pid.
    pub fn sweep_temporaries(&self) -> Result<usize, ImageError> {
        let mut removed = 0;
        for (name, path) in list_dir(&self.tmp_dir())? {
            let owner = name.split('-').next().and_then(|pid| pid.parse::<i32>().ok());
            if owner.is_none_or(|pid| !process_alive(pid)) {
                remove_any(&path);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks a stack of layers (bottom first) as overlayfs will merge them: an implicit
    /// directory of an upper layer (a path it writes under without listing it) must not meet a
    /// symlink that a lower layer left visible there; docker would have followed it.
    pub fn check_stack(&self, diff_ids: &[String]) -> Result<(), ImageError> {
        let dirs: Vec<PathBuf> =
            diff_ids.iter().map(|d| self.layer_dir(d)).collect::<Result<_, _>>()?;
        for (upper, diff_id) in diff_ids.iter().enumerate().skip(1) {
            let lowers: Vec<&Path> = dirs[..upper].iter().rev().map(PathBuf::as_path).collect();
            for implicit in self.layer_meta(diff_id)?.implicit_dirs {
                if let Some(symlink) = visible_symlink(&lowers, &implicit) {
                    return Err(ImageError::CrossLayerSymlink {
                        layer: diff_id.clone(),
                        path: implicit,
                        symlink,
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes the layer `diff_id` unless an image record uses it.
    pub fn discard_unused_layer(&self, diff_id: &str) -> Result<(), ImageError> {
        if self.records()?.iter().any(|r| r.layers.iter().any(|l| l.diff_id == diff_id)) {
            return Ok(());
        }
        let dir = self.layer_dir(diff_id)?;
        let doomed = self.temp_path("discard");
        if std::fs::rename(&dir, &doomed).is_ok() {
            remove_any(&doomed);
        }
        remove_any(&dir.with_extension("json"));
        Ok(())
    }

    /// Total unpacked bytes of a record's layers.
    pub fn unpacked_bytes(&self, record: &ImageRecord) -> u64 {
        record
            .layers
            .iter()
            .filter_map(|l| self.layer_meta(&l.diff_id).ok())
            .map(|m| m.unpacked_bytes)
            .sum()
    }
}

/// The first prefix of `path` that the merged view of `lowers` (top first) shows as a symlink.
fn visible_symlink(lowers: &[&Path], path: &str) -> Option<String> {
    let mut active: Vec<&Path> = lowers.to_vec();
    let mut prefix = PathBuf::new();
    for component in path.split('/') {
        prefix.push(component);
        let mut next = Vec::new();
        for lower in &active {
            // Every prefix above `component` is a real directory in `lower` (it is active).
            let Ok(meta) = std::fs::symlink_metadata(lower.join(&prefix)) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                next.push(*lower);
                let opaque = rustix::fs::getxattr(
                    lower.join(&prefix).as_path(),
                    OPAQUE_XATTR,
                    &mut [0u8; 1][..],
                )
                .is_ok();
                if opaque {
                    break;
                }
                continue;
            }
            if kind.is_symlink() && next.is_empty() {
                return Some(prefix.display().to_string());
            }
            // A whiteout (char device 0/0), a file, or anything under a higher directory: what
            // is below is hidden.
            break;
        }
        if next.is_empty() {
            return None;
        }
        active = next;
    }
    None
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let entries = std::fs::read_dir(dir).map_err(ImageError::io("list", dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ImageError::io("list", dir))?;
        out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    Ok(out)
}

/// Removes a file or a directory tree (never following symlinks); failures are logged.
pub(crate) fn remove_any(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(err) = result {
        tracing::warn!(path = %path.display(), %err, "could not remove");
    }
}

fn process_alive(pid: i32) -> bool {
    pid == i32::try_from(std::process::id()).unwrap_or(-1)
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
    serde_json::from_slice(&bytes)
        .map_err(|source| ImageError::Corrupt { path: path.to_owned(), source })
}

fn write_json_atomic(
    store: &ImageStore,
    path: &Path,
    value: &impl Serialize,
) -> Result<(), ImageError> {
    let tmp = store.temp_path("json");
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| ImageError::Corrupt { path: path.to_owned(), source })?;
    let mut file = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(ImageError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(ImageError::io("replace", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_name_store_paths() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert!(digest_hex(&good).is_ok());
        for bad in
            ["sha256:../../etc", "sha512:aa", "sha256:AB", &format!("sha256:{}/", "a".repeat(63))]
        {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_replace_by_reference() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::new(home.path());
        let record = |digest: &str| ImageRecord {
            reference: "r/x:1".into(),
            manifest_digest: digest.into(),
            config_digest: format!("sha256:{}", "c".repeat(64)),
            layers: Vec::new(),
            pulled_at: 0,
            aliases: Vec::new(),
        };
        store.put_record(ImageRecord { aliases: vec!["x:1".into()], ..record("a") }).unwrap();
        store.put_record(record("b")).unwrap();
        // The replaced record's alias stays: the same text still names the same reference.
        let b = ImageRecord { aliases: vec!["x:1".into()], ..record("b") };
        assert_eq!(store.records().unwrap(), std::slice::from_ref(&b));
        assert_eq!(store.find_named("x:1").unwrap(), Some(b.clone()));
        assert_eq!(store.find_named("r/x:1").unwrap(), Some(b.clone()));
        assert_eq!(store.find_named("x").unwrap(), None);
        store.put_record(record("b")).unwrap();
        assert_eq!(store.records().unwrap(), [b]);
        assert_eq!(
            store.remove_record("r/x:1").unwrap().map(|r| r.manifest_digest),
            Some("b".into())
        );
        assert!(store.records().unwrap().is_empty());
    }

    #[test]
    fn prune_keeps_recorded_and_in_use_layers_and_drops_the_rest() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::new(home.path());
        store.ensure().unwrap();
        let id = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        for c in ['a', 'b', 'c'] {
            let dir = store.temp_path("layer");
            std::fs::create_dir(&dir).unwrap();
            store.commit_layer(&dir, &id(c), &LayerMeta::default()).unwrap();
        }
        let layer = |c: char| LayerRef { digest: id(c), diff_id: id(c), size: 1 };
        store
            .put_record(ImageRecord {
                reference: "r/x:1".into(),
                manifest_digest: id('m'),
                config_digest: id('f'),
                layers: vec![layer('a')],
                pulled_at: 0,
                aliases: Vec::new(),
            })
            .unwrap();
        // An abandoned temporary of a process that is gone, and one of this process.
        std::fs::create_dir(store.tmp_dir().join("999999999-0-0-layer")).unwrap();
        let mine = store.temp_path("blob");
        std::fs::write(&mine, b"").unwrap();
        let report = store.prune(&BTreeSet::from([id('b')])).unwrap();
        assert_eq!((report.layers, report.temporaries), (1, 1));
        assert!(store.has_layer(&id('a')).unwrap() && store.has_layer(&id('b')).unwrap());
        assert!(!store.has_layer(&id('c')).unwrap());
        assert!(mine.exists(), "a live process's temporary is kept");
    }

    #[test]
    fn a_lower_symlink_under_an_implicit_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(&bottom).unwrap();
        std::os::unix::fs::symlink("/", bottom.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", bottom.join("lib")).unwrap();
        std::fs::create_dir_all(bottom.join("usr/x")).unwrap();
        // `etc` is a directory in a higher lower layer: the symlink below it is hidden.
        assert_eq!(visible_symlink(&[&top, &bottom], "etc/cron.d"), None);
        assert_eq!(visible_symlink(&[&top, &bottom], "lib/x"), Some("lib".to_owned()));
        assert_eq!(visible_symlink(&[&top, &bottom], "usr/x/y"), None);
    }
}
