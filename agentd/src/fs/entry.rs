//! From `std::fs::Metadata` to the wire's `FsEntryInfo` (PROTOCOL.md §6.3).
//!
//! `mode` is the full `st_mode` (file-type bits included), `modified` equals `mtime`, times are
//! whole Unix seconds. An entry that cannot be lstat'ed is reported as kind `other` with zeros and
//! nulls rather than failing its whole listing.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use moat_protocol::payload::fs::{FsEntryInfo, FsEntryKind};

/// The entry for `meta`, reported under `path`.
pub(crate) fn entry_info(path: String, meta: &Metadata) -> FsEntryInfo {
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        FsEntryKind::File
    } else if file_type.is_dir() {
        FsEntryKind::Dir
    } else if file_type.is_symlink() {
        FsEntryKind::Symlink
    } else {
        FsEntryKind::Other
    };
    FsEntryInfo {
        path,
        kind,
        size: meta.len(),
        mode: meta.mode(),
        modified: Some(meta.mtime()),
        uid: meta.uid(),
        gid: meta.gid(),
        atime: Some(meta.atime()),
        mtime: Some(meta.mtime()),
    }
}

/// The placeholder for a directory entry whose lstat failed.
pub(crate) fn unknown_entry(path: String) -> FsEntryInfo {
    FsEntryInfo {
        path,
        kind: FsEntryKind::Other,
        size: 0,
        mode: 0,
        modified: None,
        uid: 0,
        gid: 0,
        atime: None,
        mtime: None,
    }
}

/// The reported path of a directory's child: the directory's request path joined with the
/// child's name, as the reference's `DirEntry::path()` gives it.
pub(crate) fn child_path(dir: &str, name: &std::ffi::OsStr) -> String {
    Path::new(dir).join(name).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::fs::testing::TempRoot;

    #[test]
    fn file_entry_has_full_mode_and_equal_times() {
        let tmp = TempRoot::new();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let info = entry_info("/f".into(), &std::fs::metadata(&path).unwrap());
        assert_eq!(info.kind, FsEntryKind::File);
        assert_eq!(info.size, 5);
        assert_eq!(info.mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(info.modified, info.mtime);
        assert!(info.atime.is_some());
    }

    #[test]
    fn symlink_is_its_own_kind_under_lstat() {
        let tmp = TempRoot::new();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        let info = entry_info("l".into(), &std::fs::symlink_metadata(&link).unwrap());
        assert_eq!(info.kind, FsEntryKind::Symlink);
    }

    #[test]
    fn unknown_entry_is_other_with_zeros_and_nulls() {
        let info = unknown_entry("x".into());
        assert_eq!((info.kind, info.size, info.mode, info.uid), (FsEntryKind::Other, 0, 0, 0));
        assert_eq!((info.modified, info.atime, info.mtime), (None, None, None));
    }

    #[test]
    fn child_path_joins_the_request_path() {
        assert_eq!(child_path("/tmp", OsStr::new("a")), "/tmp/a");
        assert_eq!(child_path("/tmp/", OsStr::new("a")), "/tmp/a");
        assert_eq!(child_path("rel", OsStr::new("a")), "rel/a");
    }
}
