//! The path operations of PROTOCOL.md §9.1: everything that names a path rather than a handle.
//!
//! Each function is blocking (the service runs it on a `spawn_blocking` worker) and returns the
//! response data or the [`FsError`] whose text the client sees. Paths come from the request and
//! are resolved through [`Root`]; paths reported back (`Stat`'s echo, `List`'s children) are built
//! from the request path, as the reference builds them. This module owns path semantics; handles
//! are in `handle_ops`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use moat_protocol::payload::fs::{FsResponseData, FsSetAttrs};

use super::attrs;
use super::entry::{child_path, entry_info, unknown_entry};
use super::error::{FsError, Op, OpResult, Step};
use super::identity;
use super::root::Root;

/// `RealPath`: the canonical path; for a missing leaf, the canonical parent joined with the leaf
/// name. If the parent does not resolve either, the error is the original one.
pub(crate) fn real_path(root: &Root, path: &str) -> OpResult {
    let resolved = root.resolve(path);
    let canonical = match fs::canonicalize(&resolved) {
        Ok(canonical) => canonical,
        Err(original) => {
            let parent = match resolved.parent().map(fs::canonicalize) {
                Some(Ok(parent)) => parent,
                Some(Err(_)) | None => return Err(FsError::io(Op::RealPath)(original)),
            };
            match resolved.file_name() {
                Some(leaf) => parent.join(leaf),
                None => parent,
            }
        }
    };
    Ok(Some(FsResponseData::Path(root.display(&canonical))))
}

/// `Stat`: stat or lstat; the entry's path echoes the request.
pub(crate) fn stat(root: &Root, path: &str, follow_symlink: bool) -> OpResult {
    let resolved = root.resolve(path);
    let meta =
        if follow_symlink { fs::metadata(&resolved) } else { fs::symlink_metadata(&resolved) }
            .map_err(FsError::io(Op::Stat))?;
    Ok(Some(FsResponseData::Stat(entry_info(path.to_owned(), &meta))))
}

/// `SetStat`: size, mode, owner, times, in that order.
pub(crate) fn set_stat(
    root: &Root,
    path: &str,
    follow_symlink: bool,
    attrs: FsSetAttrs,
) -> OpResult {
    attrs::set_path_attrs(&root.resolve(path), follow_symlink, attrs)?;
    Ok(None)
}

/// `List`: the whole directory, one lstat per entry, no `.` or `..`.
pub(crate) fn list(root: &Root, path: &str) -> OpResult {
    let dir =
        fs::read_dir(root.resolve(path)).map_err(FsError::step(Op::ReadDir, Step::OpenDir))?;
    let mut entries = Vec::new();
    for entry in dir {
        let entry = entry.map_err(FsError::io(Op::ReadDir))?;
        let reported = child_path(path, &entry.file_name());
        entries.push(match fs::symlink_metadata(entry.path()) {
            Ok(meta) => entry_info(reported, &meta),
            Err(_) => unknown_entry(reported),
        });
    }
    Ok(Some(FsResponseData::List(entries)))
}

/// `ReadLink`: the link's target as stored.
pub(crate) fn read_link(root: &Root, path: &str) -> OpResult {
    let target = fs::read_link(root.resolve(path)).map_err(FsError::io(Op::ReadLink))?;
    Ok(Some(FsResponseData::Path(target.to_string_lossy().into_owned())))
}

/// `Symlink`: `link_path` → `target` (stored verbatim), created as `user`.
pub(crate) fn symlink(root: &Root, target: &str, link_path: &str, user: Option<&str>) -> OpResult {
    let op = Op::Symlink;
    let identity = identity::resolve(root, user).map_err(|source| FsError::User { op, source })?;
    let link = root.resolve(link_path);
    identity::run_as(identity.as_ref(), || std::os::unix::fs::symlink(target, &link))
        .map_err(|source| FsError::Identity { op, source })?
        .map_err(FsError::io(op))?;
    Ok(None)
}

/// `Mkdir`: the directory and its parents, then `chmod(mode)` of the leaf; all as `user`.
pub(crate) fn mkdir(root: &Root, path: &str, mode: Option<u32>, user: Option<&str>) -> OpResult {
    let op = Op::Mkdir;
    let identity = identity::resolve(root, user).map_err(|source| FsError::User { op, source })?;
    let dir = root.resolve(path);
    identity::run_as(identity.as_ref(), || {
        fs::create_dir_all(&dir).map_err(FsError::io(Op::Mkdir))?;
        if let Some(mode) = mode {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                .map_err(FsError::io(Op::Chmod))?;
        }
        Ok(None)
    })
    .map_err(|source| FsError::Identity { op, source })?
}

/// `Remove`: unlink a file.
pub(crate) fn remove(root: &Root, path: &str) -> OpResult {
    fs::remove_file(root.resolve(path)).map_err(FsError::io(Op::Remove))?;
    Ok(None)
}

/// `RemoveDir`: rmdir, or the whole tree.
pub(crate) fn remove_dir(root: &Root, path: &str, recursive: bool) -> OpResult {
    let dir = root.resolve(path);
    if recursive { fs::remove_dir_all(&dir) } else { fs::remove_dir(&dir) }
        .map_err(FsError::io(Op::RemoveDir))?;
    Ok(None)
}

/// `Copy`: a file's contents and permission bits.
pub(crate) fn copy(root: &Root, src: &str, dst: &str) -> OpResult {
    fs::copy(root.resolve(src), root.resolve(dst)).map_err(FsError::io(Op::Copy))?;
    Ok(None)
}

/// `Rename`.
pub(crate) fn rename(root: &Root, src: &str, dst: &str) -> OpResult {
    fs::rename(root.resolve(src), root.resolve(dst)).map_err(FsError::io(Op::Rename))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use moat_protocol::payload::fs::{FsEntryInfo, FsEntryKind};

    use super::*;
    use crate::fs::testing::TempRoot;

    const ENOENT: &str = "No such file or directory (os error 2)";

    fn setup() -> (TempRoot, Root) {
        let tmp = TempRoot::new();
        let root = Root::new(tmp.path().to_path_buf());
        (tmp, root)
    }

    fn err(result: OpResult) -> String {
        result.unwrap_err().to_string()
    }

    fn stat_info(result: OpResult) -> FsEntryInfo {
        match result.unwrap() {
            Some(FsResponseData::Stat(info)) => info,
            other => panic!("expected Stat, got {other:?}"),
        }
    }

    #[test]
    fn real_path_canonicalizes_under_the_root() {
        let (tmp, root) = setup();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink("d", tmp.path().join("l")).unwrap();
        assert_eq!(
            real_path(&root, "/l/../d/./").unwrap(),
            Some(FsResponseData::Path("/d".into()))
        );
        assert_eq!(real_path(&root, "/l").unwrap(), Some(FsResponseData::Path("/d".into())));
    }

    #[test]
    fn real_path_of_missing_leaf_is_parent_plus_leaf() {
        let (tmp, root) = setup();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        assert_eq!(
            real_path(&root, "/d/new").unwrap(),
            Some(FsResponseData::Path("/d/new".into()))
        );
    }

    #[test]
    fn real_path_of_missing_parent_fails() {
        let (_tmp, root) = setup();
        assert_eq!(err(real_path(&root, "/no/such")), format!("realpath: {ENOENT}"));
    }

    #[test]
    fn stat_echoes_the_request_path_and_follows_links() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", tmp.path().join("l")).unwrap();
        let followed = stat_info(stat(&root, "/l", true));
        assert_eq!(
            (followed.path.as_str(), followed.kind, followed.size),
            ("/l", FsEntryKind::File, 3)
        );
        assert_eq!(stat_info(stat(&root, "/l", false)).kind, FsEntryKind::Symlink);
    }

    #[test]
    fn stat_of_missing_path_fails() {
        let (_tmp, root) = setup();
        assert_eq!(err(stat(&root, "/nope", true)), format!("stat: {ENOENT}"));
    }

    #[test]
    fn set_stat_changes_mode() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let attrs = FsSetAttrs { mode: Some(0o604), ..FsSetAttrs::default() };
        set_stat(&root, "/f", true, attrs).unwrap();
        assert_eq!(std::fs::metadata(tmp.path().join("f")).unwrap().mode() & 0o777, 0o604);
    }

    #[test]
    fn set_stat_of_missing_path_fails_at_chmod() {
        let (_tmp, root) = setup();
        let attrs = FsSetAttrs { mode: Some(0o600), ..FsSetAttrs::default() };
        assert_eq!(err(set_stat(&root, "/nope", true, attrs)), format!("setstat: chmod: {ENOENT}"));
    }

    #[test]
    fn list_gives_full_child_paths_and_lstat_kinds() {
        let (tmp, root) = setup();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"12").unwrap();
        std::fs::create_dir(tmp.path().join("d/sub")).unwrap();
        std::os::unix::fs::symlink("f", tmp.path().join("d/l")).unwrap();
        let Some(FsResponseData::List(mut entries)) = list(&root, "/d").unwrap() else {
            panic!("expected List");
        };
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let summary: Vec<_> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        assert_eq!(
            summary,
            [
                ("/d/f", FsEntryKind::File),
                ("/d/l", FsEntryKind::Symlink),
                ("/d/sub", FsEntryKind::Dir)
            ]
        );
    }

    #[test]
    fn list_of_missing_dir_fails_at_opendir() {
        let (_tmp, root) = setup();
        assert_eq!(err(list(&root, "/nope")), format!("readdir: opendir: {ENOENT}"));
    }

    #[test]
    fn read_link_returns_the_stored_target() {
        let (tmp, root) = setup();
        std::os::unix::fs::symlink("../somewhere", tmp.path().join("l")).unwrap();
        assert_eq!(
            read_link(&root, "/l").unwrap(),
            Some(FsResponseData::Path("../somewhere".into()))
        );
        assert_eq!(err(read_link(&root, "/nope")), format!("readlink: {ENOENT}"));
    }

    #[test]
    fn symlink_creates_a_link_with_the_verbatim_target() {
        let (tmp, root) = setup();
        symlink(&root, "/etc/hosts", "/l", None).unwrap();
        assert_eq!(std::fs::read_link(tmp.path().join("l")).unwrap(), Path::new("/etc/hosts"));
    }

    #[test]
    fn symlink_in_missing_dir_fails() {
        let (_tmp, root) = setup();
        assert_eq!(err(symlink(&root, "t", "/no/l", None)), format!("symlink: {ENOENT}"));
    }

    #[test]
    fn symlink_for_unknown_user_fails_before_creating() {
        let (tmp, root) = setup();
        let result = symlink(&root, "t", "/l", Some("mallory"));
        assert_eq!(err(result), "symlink: user \"mallory\" not found in /etc/passwd");
        assert!(std::fs::symlink_metadata(tmp.path().join("l")).is_err());
    }

    #[test]
    fn mkdir_creates_parents_and_applies_mode() {
        let (tmp, root) = setup();
        mkdir(&root, "/a/b/c", Some(0o700), None).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a/b/c")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        mkdir(&root, "/a/b/c", None, None).unwrap();
    }

    #[test]
    fn mkdir_under_a_file_fails() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        assert_eq!(err(mkdir(&root, "/f/d", None, None)), "mkdir: Not a directory (os error 20)");
    }

    #[test]
    #[ignore = "needs root (setfsuid to another user)"]
    fn mkdir_as_user_creates_owned_by_that_user_needs_root() {
        let (tmp, root) = setup();
        tmp.write_passwd("alice:x:1000:1001::/home/alice:/bin/sh\n", "");
        std::fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        mkdir(&root, "/home-of-alice", Some(0o750), Some("alice")).unwrap();
        let meta = std::fs::metadata(tmp.path().join("home-of-alice")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1001, 0o750));
    }

    #[test]
    fn remove_unlinks_a_file() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        remove(&root, "/f").unwrap();
        assert!(!tmp.path().join("f").exists());
        assert_eq!(err(remove(&root, "/f")), format!("remove: {ENOENT}"));
    }

    #[test]
    fn remove_dir_needs_recursive_for_a_full_dir() {
        let (tmp, root) = setup();
        std::fs::create_dir_all(tmp.path().join("d/e")).unwrap();
        assert_eq!(
            err(remove_dir(&root, "/d", false)),
            "remove_dir: Directory not empty (os error 39)"
        );
        remove_dir(&root, "/d", true).unwrap();
        assert!(!tmp.path().join("d").exists());
        assert_eq!(err(remove_dir(&root, "/d", true)), format!("remove_dir: {ENOENT}"));
    }

    #[test]
    fn copy_duplicates_contents() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("a"), b"payload").unwrap();
        copy(&root, "/a", "/b").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("b")).unwrap(), b"payload");
        assert_eq!(err(copy(&root, "/nope", "/c")), format!("copy: {ENOENT}"));
    }

    #[test]
    fn rename_moves_a_path() {
        let (tmp, root) = setup();
        std::fs::write(tmp.path().join("a"), b"x").unwrap();
        rename(&root, "/a", "/b").unwrap();
        assert!(tmp.path().join("b").exists() && !tmp.path().join("a").exists());
        assert_eq!(err(rename(&root, "/a", "/c")), format!("rename: {ENOENT}"));
    }
}
