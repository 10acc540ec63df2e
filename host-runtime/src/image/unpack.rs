//! Unpacks one layer (a tar stream, gzip, zstd or uncompressed) into an empty directory that
//! becomes one overlayfs lower dir. Security-critical: the archive is untrusted.
//!
//! ```text
//!  bytes ─► sniff gzip (1f 8b) | zstd (28 b5 2f fd) | plain ─► sha256 (the diff id) ─► tar entries
//!  each entry: split its path (refuse `..`, absolute, NUL) ─► open each parent component with
//!  openat(O_DIRECTORY | O_NOFOLLOW) from the layer root (a symlink or a file on the way is
//!  refused, a missing parent is created and recorded as implicit) ─► create the leaf *at* that
//!  directory fd (O_EXCL | O_NOFOLLOW): nothing ever resolves a path string from `/`.
//! ```
//!
//! - Whiteouts are kept as overlayfs whiteouts, since the layers are stacked as lower dirs, not
//!   flattened: `.wh.NAME` becomes a character device 0/0 named `NAME`, `.wh..wh..opq` sets
//!   `trusted.overlay.opaque=y` on its directory. Both need root (`privileged`).
//! - Regular files, directories, symlinks (their targets are stored, never followed here),
//!   hard links (to an earlier entry of the same layer, resolved like a parent path), FIFOs.
//!   Device nodes are refused. Ownership (as root), modes (with setuid/setgid/sticky), mtimes,
//!   and `user.*` / `security.capability` xattrs from PAX headers; `trusted.*` is never taken
//!   from an image (it would steer overlayfs).
//! - Directories created implicitly (an entry whose parent the archive never listed) are
//!   reported: across layers they are where a layer writes "through" a lower layer's path, and
//!   [`crate::image::store`] refuses those that meet a lower layer's symlink.
//! - The caller unpacks into a fresh temporary directory and renames it into place only when
//!   this returns `Ok` and the diff id matches: a failed unpack leaves nothing trusted.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::image::error::UnpackError;
use crate::limits::{MAX_LAYER_ENTRIES, UNPACK_READ_BUFFER_BYTES};

/// The name of an opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The prefix of a whiteout entry's name.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

const DIR_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// How to unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Running as root: set ownership, make whiteout devices, set the opaque xattr.
    pub privileged: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnpackReport {
    /// Archive entries seen.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Directories created because an entry needed them and the archive never listed them.
    pub implicit_dirs: Vec<String>,
    /// `sha256:<hex>` of the uncompressed archive.
    pub diff_id: String,
}

/// Unpacks `source` (compressed or not) into `dest`, an existing empty directory.
pub fn unpack_layer(
    source: impl Read,
    dest: &Path,
    options: UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root = rustix::fs::open(dest, DIR_FLAGS, Mode::empty())
        .map_err(|e| UnpackError::io(".", "open layer directory")(e.into()))?;
    let mut buffered = BufReader::with_capacity(UNPACK_READ_BUFFER_BYTES, source);
    let magic = buffered.fill_buf().map_err(UnpackError::Archive)?;
    let decoder: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Archive)?)
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader { inner: decoder, hasher: Sha256::new() };
    let mut unpacker =
        Unpacker { root, options, report: UnpackReport::default(), implicit: BTreeSet::new() };
    unpacker.run(&mut tar::Archive::new(&mut hashing))?;
    // The diff id covers the whole stream, including the padding after the end-of-archive.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    rustix::fs::syncfs(&unpacker.root)
        .map_err(|e| UnpackError::io(".", "sync layer filesystem")(e.into()))?;
    let mut report = unpacker.report;
    report.implicit_dirs = unpacker.implicit.into_iter().collect();
    report.diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    Ok(report)
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct Unpacker {
    root: OwnedFd,
    options: UnpackOptions,
    report: UnpackReport,
    implicit: BTreeSet<String>,
}

/// The metadata an entry carries, read before its data.
struct Meta {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Unpacker {
    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        for entry in archive.entries().map_err(UnpackError::Archive)? {
            let mut entry = entry.map_err(UnpackError::Archive)?;
            self.report.entries += 1;
            if self.report.entries > MAX_LAYER_ENTRIES {
                return Err(UnpackError::TooManyEntries { max: MAX_LAYER_ENTRIES });
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let display = shown.as_str();
            let parts = split_path(&raw, display)?;
            let Some((name, parents)) = parts.split_last() else {
                continue; // "./": the layer root itself
            };
            if name == OPAQUE_MARKER {
                self.opaque(parents, display)?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                self.whiteout(parents, hidden, display)?;
                continue;
            }
            let meta = read_meta(&mut entry)?;
            let kind = entry.header().entry_type();
            let parent = self.open_parents(parents, display)?;
            match kind {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    self.file(&parent, name, display, &meta, &mut entry)?;
                }
                tar::EntryType::Directory => {
                    self.directory(&parent, name, display, &meta)?;
                    self.implicit.remove(&parts.join("/"));
                }
                tar::EntryType::Symlink => {
                    let target =
                        entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    self.symlink(&parent, name, display, &target, &meta)?;
                }
                tar::EntryType::Link => {
                    let target =
                        entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    self.hard_link(&parent, name, display, &target)?;
                }
                tar::EntryType::Fifo => self.fifo(&parent, name, display, &meta)?,
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(UnpackError::DeviceNode { entry: shown });
                }
                other => {
                    tracing::debug!(entry = %shown, ?other, "skipping an entry of another type")
                }
            }
        }
        Ok(())
    }

    /// Opens `parents` from the layer root, one component at a time, never following a symlink.
    fn open_parents(&mut self, parents: &[String], entry: &str) -> Result<OwnedFd, UnpackError> {
        let mut dir = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| UnpackError::io(entry, "open layer directory")(e.into()))?;
        for (depth, component) in parents.iter().enumerate() {
            let prefix = || parents[..=depth].join("/");
            dir = match rustix::fs::openat(&dir, component.as_str(), DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&dir, component.as_str(), Mode::from_raw_mode(0o755))
                        .map_err(|e| UnpackError::io(entry, "create parent directory")(e.into()))?;
                    self.implicit.insert(prefix());
                    rustix::fs::openat(&dir, component.as_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| UnpackError::io(entry, "open parent directory")(e.into()))?
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: entry.to_owned(),
                        component: prefix(),
                    });
                }
                Err(e) => return Err(UnpackError::io(entry, "open parent directory")(e.into())),
            };
        }
        Ok(dir)
    }

    fn opaque(&mut self, parents: &[String], entry: &str) -> Result<(), UnpackError> {
        let dir = self.open_parents(parents, entry)?;
        if !self.options.privileged {
            return Err(UnpackError::io(entry, "mark directory opaque")(io::Error::from(
                io::ErrorKind::PermissionDenied,
            )));
        }
        rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| UnpackError::io(entry, "set trusted.overlay.opaque")(e.into()))
    }

    fn whiteout(
        &mut self,
        parents: &[String],
        hidden: &str,
        entry: &str,
    ) -> Result<(), UnpackError> {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            return Ok(()); // aufs metadata (.wh..wh.plnk, ...): not part of the tree
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::BadPath {
                entry: entry.to_owned(),
                reason: "whiteout of nothing",
            });
        }
        let parent = self.open_parents(parents, entry)?;
        clear_slot(&parent, hidden, false, entry)?;
        rustix::fs::mknodat(
            &parent,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| UnpackError::io(entry, "create whiteout device 0/0")(e.into()))
    }

    fn file(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        entry: &str,
        meta: &Meta,
        data: &mut impl Read,
    ) -> Result<(), UnpackError> {
        clear_slot(parent, name, false, entry)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| UnpackError::io(entry, "create file")(e.into()))?;
        let mut file = File::from(fd);
        let written = io::copy(data, &mut file).map_err(UnpackError::io(entry, "write file"))?;
        self.report.bytes += written;
        self.apply_meta(&file.into(), entry, meta, true)
    }

    fn directory(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        entry: &str,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        clear_slot(parent, name, true, entry)?;
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(UnpackError::io(entry, "create directory")(e.into())),
        }
        let dir = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| UnpackError::io(entry, "open directory")(e.into()))?;
        self.apply_meta(&dir, entry, meta, false)
    }

    fn symlink(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        entry: &str,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if target.is_empty() || target.contains(&0) {
            return Err(UnpackError::BadPath {
                entry: entry.to_owned(),
                reason: "empty symlink target",
            });
        }
        clear_slot(parent, name, false, entry)?;
        rustix::fs::symlinkat(target, parent, name)
            .map_err(|e| UnpackError::io(entry, "create symlink")(e.into()))?;
        if self.options.privileged {
            rustix::fs::chownat(
                parent,
                name,
                meta.uid.map(rustix::fs::Uid::from_raw),
                meta.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| UnpackError::io(entry, "chown symlink")(e.into()))?;
        }
        let times = timestamps(meta.mtime);
        rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| UnpackError::io(entry, "set symlink times")(e.into()))
    }

    fn hard_link(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        entry: &str,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let target_text = String::from_utf8_lossy(target).into_owned();
        let bad = |reason| UnpackError::BadHardLink {
            entry: entry.to_owned(),
            target: target_text.clone(),
            reason,
        };
        let parts = match split_path(target, &target_text) {
            Ok(parts) if !parts.is_empty() => parts,
            Ok(_) => return Err(bad("the target is the layer root")),
            Err(UnpackError::Absolute { .. }) => return Err(bad("the target is an absolute path")),
            Err(UnpackError::DotDot { .. }) => return Err(bad("the target has a `..` component")),
            Err(other) => return Err(other),
        };
        let (target_name, target_parents) = parts.split_last().unwrap_or((&parts[0], &[]));
        let target_dir = self
            .open_existing(target_parents)
            .ok_or_else(|| bad("the target's directory is missing or goes through a symlink"))?;
        match rustix::fs::statat(&target_dir, target_name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(bad("the target is a directory"));
            }
            Ok(_) => {}
            Err(_) => return Err(bad("the target is not an earlier entry of this layer")),
        }
        clear_slot(parent, name, false, entry)?;
        rustix::fs::linkat(&target_dir, target_name.as_str(), parent, name, AtFlags::empty())
            .map_err(|e| UnpackError::io(entry, "create hard link")(e.into()))
    }

    /// Opens existing directories only (for hard link targets); `None` when one is missing or
    /// is not a directory.
    fn open_existing(&self, parents: &[String]) -> Option<OwnedFd> {
        let mut dir = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty()).ok()?;
        for component in parents {
            dir = rustix::fs::openat(&dir, component.as_str(), DIR_FLAGS, Mode::empty()).ok()?;
        }
        Some(dir)
    }

    fn fifo(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        entry: &str,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        clear_slot(parent, name, false, entry)?;
        rustix::fs::mknodat(parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| UnpackError::io(entry, "create fifo")(e.into()))?;
        if self.options.privileged {
            rustix::fs::chownat(
                parent,
                name,
                meta.uid.map(rustix::fs::Uid::from_raw),
                meta.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| UnpackError::io(entry, "chown fifo")(e.into()))?;
        }
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
            .map_err(|e| UnpackError::io(entry, "chmod fifo")(e.into()))
    }

    /// Ownership (as root), then the mode (chown clears setuid), xattrs, mtime, on an open fd.
    fn apply_meta(
        &self,
        fd: &OwnedFd,
        entry: &str,
        meta: &Meta,
        times: bool,
    ) -> Result<(), UnpackError> {
        if self.options.privileged {
            rustix::fs::fchown(
                fd,
                meta.uid.map(rustix::fs::Uid::from_raw),
                meta.gid.map(rustix::fs::Gid::from_raw),
            )
            .map_err(|e| UnpackError::io(entry, "chown")(e.into()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| UnpackError::io(entry, "chmod")(e.into()))?;
        for (name, value) in &meta.xattrs {
            let allowed = name.starts_with("user.")
                || (self.options.privileged && name == "security.capability");
            if !allowed {
                tracing::debug!(entry, xattr = %name, "skipping an xattr moat does not take from images");
                continue;
            }
            match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP) => {}
                Err(e) => return Err(UnpackError::io(entry, "set xattr")(e.into())),
            }
        }
        if times {
            rustix::fs::futimens(fd, &timestamps(meta.mtime))
                .map_err(|e| UnpackError::io(entry, "set times")(e.into()))?;
        }
        Ok(())
    }
}

/// Splits an archive path into its components: `.` and empty components dropped; `..`,
/// absolute paths, NUL bytes and non-UTF-8 refused.
pub fn split_path(raw: &[u8], display: &str) -> Result<Vec<String>, UnpackError> {
    if raw.starts_with(b"/") {
        return Err(UnpackError::Absolute { entry: display.to_owned() });
    }
    if raw.contains(&0) {
        return Err(UnpackError::BadPath { entry: display.to_owned(), reason: "a NUL byte" });
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| UnpackError::BadPath { entry: display.to_owned(), reason: "not UTF-8" })?;
    let mut parts = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(UnpackError::DotDot { entry: display.to_owned() }),
            other => parts.push(other.to_owned()),
        }
    }
    Ok(parts)
}

/// Makes room for a new entry `name` in `parent`: removes a non-directory there, and a
/// directory too unless the new entry is a directory (`keep_dir`).
fn clear_slot(
    parent: &OwnedFd,
    name: &str,
    keep_dir: bool,
    entry: &str,
) -> Result<(), UnpackError> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(UnpackError::io(entry, "stat existing entry")(e.into())),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
            if keep_dir {
                Ok(())
            } else {
                remove_tree(parent, name)
                    .map_err(UnpackError::io(entry, "replace existing directory"))
            }
        }
        Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| UnpackError::io(entry, "replace existing entry")(e.into())),
    }
}

/// Removes the directory `name` in `parent` and everything under it, never following a symlink.
fn remove_tree(parent: &OwnedFd, name: &str) -> io::Result<()> {
    let dir = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    let mut children = Vec::new();
    for item in rustix::fs::Dir::read_from(&dir)? {
        let item = item?;
        let child = item.file_name().to_string_lossy().into_owned();
        if child != "." && child != ".." {
            children.push((child, item.file_type() == FileType::Directory));
        }
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_tree(&dir, &child)?;
        } else {
            rustix::fs::unlinkat(&dir, child.as_str(), AtFlags::empty())?;
        }
    }
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let mode = header.mode().map_err(UnpackError::Archive)? & 0o7777;
    let uid = header.uid().ok().and_then(|v| u32::try_from(v).ok());
    let gid = header.gid().ok().and_then(|v| u32::try_from(v).ok());
    let mtime = header.mtime().unwrap_or(0);
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Archive)? {
        for extension in extensions {
            let extension = extension.map_err(UnpackError::Archive)?;
            if let Ok(key) = extension.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(Meta { uid, gid, mode, mtime, xattrs })
}

fn timestamps(mtime: u64) -> Timestamps {
    let seconds = i64::try_from(mtime).unwrap_or(0);
    let at = rustix::fs::Timespec { tv_sec: seconds, tv_nsec: 0 };
    Timestamps { last_access: at, last_modification: at }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    /// A tar built in memory; `raw` entries bypass the tar crate's path checks.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(size);
            header.set_mtime(1_700_000_000);
            header
        }

        fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Tar {
            let mut header = Tar::header(path, tar::EntryType::Regular, mode, data.len() as u64);
            header.set_cksum();
            self.0.append(&header, data).unwrap();
            self
        }

        fn dir(mut self, path: &str) -> Tar {
            let mut header = Tar::header(path, tar::EntryType::Directory, 0o755, 0);
            header.set_cksum();
            self.0.append(&header, &[][..]).unwrap();
            self
        }

        fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Tar {
            let mut header = Tar::header(path, kind, 0o777, 0);
            let name = &mut header.as_old_mut().linkname;
            name[..target.len()].copy_from_slice(target.as_bytes());
            header.set_cksum();
            self.0.append(&header, &[][..]).unwrap();
            self
        }

        fn device(mut self, path: &str) -> Tar {
            let mut header = Tar::header(path, tar::EntryType::Char, 0o600, 0);
            header.set_cksum();
            self.0.append(&header, &[][..]).unwrap();
            self
        }

        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// A layer directory and a sibling that must stay untouched.
    struct Scratch {
        _dir: tempfile::TempDir,
        layer: std::path::PathBuf,
        outside: std::path::PathBuf,
    }

    fn scratch() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Scratch { _dir: dir, layer, outside }
    }

    fn unpack(bytes: &[u8], layer: &Path) -> Result<UnpackReport, UnpackError> {
        let privileged = nix::unistd::geteuid().is_root();
        unpack_layer(bytes, layer, UnpackOptions { privileged })
    }

    fn assert_untouched(outside: &Path) {
        assert_eq!(std::fs::read_dir(outside).unwrap().count(), 0, "something was written outside");
    }

    #[test]
    fn files_dirs_symlinks_and_hard_links_are_created_with_their_modes() {
        let s = scratch();
        let tar = Tar::new()
            .dir("bin/")
            .file("bin/tool", 0o4755, b"#!/bin/sh\n")
            .link(tar::EntryType::Symlink, "bin/alias", "tool")
            .link(tar::EntryType::Link, "bin/copy", "bin/tool")
            .file("./etc/motd", 0o640, b"hi\n")
            .bytes();
        let report = unpack(&tar, &s.layer).unwrap();
        assert_eq!((report.entries, report.bytes), (5, 13));
        let tool = std::fs::metadata(s.layer.join("bin/tool")).unwrap();
        assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(tool.mtime(), 1_700_000_000);
        assert_eq!(std::fs::read_link(s.layer.join("bin/alias")).unwrap(), Path::new("tool"));
        assert_eq!(std::fs::metadata(s.layer.join("bin/copy")).unwrap().ino(), tool.ino());
        assert_eq!(std::fs::read(s.layer.join("etc/motd")).unwrap(), b"hi\n");
        assert_eq!(report.implicit_dirs, ["etc"]);
    }

    #[test]
    fn a_dot_dot_entry_is_refused_and_nothing_escapes() {
        let s = scratch();
        let tar = Tar::new().file("a/../../outside/x", 0o644, b"x").bytes();
        let err = unpack(&tar, &s.layer).unwrap_err();
        assert!(matches!(err, UnpackError::DotDot { .. }), "{err}");
        assert!(err.to_string().contains("a/../../outside/x"), "{err}");
        assert_untouched(&s.outside);
    }

    #[test]
    fn an_absolute_entry_is_refused() {
        let s = scratch();
        let err = unpack(&Tar::new().file("/etc/x", 0o644, b"x").bytes(), &s.layer).unwrap_err();
        assert!(matches!(err, UnpackError::Absolute { .. }), "{err}");
    }

    #[test]
    fn writing_through_a_symlink_of_the_layer_is_refused() {
        for target in ["/", "../outside", "../../../../.."] {
            let s = scratch();
            let outside = s.outside.display().to_string();
            let target = if target == "/" { outside.as_str() } else { target };
            let tar = Tar::new()
                .link(tar::EntryType::Symlink, "escape", target)
                .file("escape/planted", 0o644, b"x")
                .bytes();
            let err = unpack(&tar, &s.layer).unwrap_err();
            assert!(
                matches!(&err, UnpackError::ThroughSymlink { component, .. } if component == "escape"),
                "{target}: {err}"
            );
            assert_untouched(&s.outside);
        }
    }

    #[test]
    fn a_symlink_leaf_is_replaced_not_followed() {
        let s = scratch();
        let outside = s.outside.join("victim");
        let tar = Tar::new()
            .link(tar::EntryType::Symlink, "f", &outside.display().to_string())
            .file("f", 0o644, b"new")
            .bytes();
        unpack(&tar, &s.layer).unwrap();
        assert!(std::fs::symlink_metadata(s.layer.join("f")).unwrap().is_file());
        assert_untouched(&s.outside);
    }

    #[test]
    fn hard_links_outside_the_layer_are_refused() {
        for target in ["/etc/passwd", "../outside/x", "missing"] {
            let s = scratch();
            let tar = Tar::new().link(tar::EntryType::Link, "hl", target).bytes();
            let err = unpack(&tar, &s.layer).unwrap_err();
            assert!(matches!(err, UnpackError::BadHardLink { .. }), "{target}: {err}");
        }
    }

    #[test]
    fn device_nodes_are_refused() {
        let s = scratch();
        let err = unpack(&Tar::new().device("dev/mem").bytes(), &s.layer).unwrap_err();
        assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn gzip_zstd_and_plain_layers_have_the_diff_id_of_their_tar() {
        let tar = Tar::new().file("a", 0o644, b"same").bytes();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        let gzip = gzip.finish().unwrap();
        let zstd = zstd::encode_all(&tar[..], 1).unwrap();
        for bytes in [tar.clone(), gzip, zstd] {
            let s = scratch();
            assert_eq!(unpack(&bytes, &s.layer).unwrap().diff_id, diff_id);
            assert_eq!(std::fs::read(s.layer.join("a")).unwrap(), b"same");
        }
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let tar = Tar::new().file("a", 0o644, &[7u8; 4096]).bytes();
        let s = scratch();
        assert!(unpack(&tar[..1024], &s.layer).is_err());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts_as_root() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (mknod, trusted xattrs)");
        let s = scratch();
        let tar = Tar::new()
            .dir("etc/")
            .file("etc/.wh.old.conf", 0o644, b"")
            .file("var/.wh..wh..opq", 0o644, b"")
            .file(".wh..wh.plnk", 0o644, b"")
            .bytes();
        unpack(&tar, &s.layer).unwrap();
        let whiteout = std::fs::symlink_metadata(s.layer.join("etc/old.conf")).unwrap();
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
        let mut value = [0u8; 4];
        let n = rustix::fs::getxattr(s.layer.join("var").as_path(), OPAQUE_XATTR, &mut value[..]);
        assert_eq!(&value[..n.unwrap()], b"y");
        assert!(!s.layer.join(".wh..wh.plnk").exists());
        assert!(!s.layer.join("etc/.wh.old.conf").exists());
    }

    #[test]
    fn trusted_xattrs_from_the_image_are_not_applied_as_root() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (trusted xattrs)");
        let s = scratch();
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([
                ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
                ("SCHILY.xattr.user.k", &b"v"[..]),
            ])
            .unwrap();
        let mut header = Tar::header("d", tar::EntryType::Directory, 0o755, 0);
        header.set_cksum();
        builder.append(&header, &[][..]).unwrap();
        unpack(&builder.into_inner().unwrap(), &s.layer).unwrap();
        let dir = s.layer.join("d");
        assert!(rustix::fs::getxattr(dir.as_path(), OPAQUE_XATTR, &mut [0u8; 4][..]).is_err());
        let mut value = [0u8; 4];
        let n = rustix::fs::getxattr(dir.as_path(), "user.k", &mut value[..]).unwrap();
        assert_eq!(&value[..n], b"v");
    }

    #[test]
    fn paths_split_into_clean_components() {
        assert_eq!(split_path(b"./a//b/./c/", "x").unwrap(), ["a", "b", "c"]);
        assert!(split_path(b"./", "x").unwrap().is_empty());
        assert!(matches!(split_path(b"a/..", "x"), Err(UnpackError::DotDot { .. })));
        assert!(matches!(split_path(b"\xff", "x"), Err(UnpackError::BadPath { .. })));
    }
}
