//! The handle operations of PROTOCOL.md §9.1 that answer with one response: `OpenFile`,
//! `OpenDir`, `CloseHandle`, `ReadDir`, `FStat`, `FSetStat`. (`Read` and `Write` stream; they are
//! in `read` and `write`.)
//!
//! Each function is blocking and runs on a `spawn_blocking` worker. `caller_id` is the
//! correlation id of the request; the handle table decides whether its relay slot may use the
//! handle. This module owns what each operation does with an open object; the table owns who may
//! use which.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, PoisonError};

use moat_protocol::payload::fs::{FsOpenOptions, FsResponseData, FsSetAttrs};

use super::attrs;
use super::entry::{child_path, entry_info, unknown_entry};
use super::error::{FsError, Op, OpResult};
use super::handles::{Access, Handle, HandleTable, OpenDir, OpenFile};
use super::identity;
use super::root::Root;

/// Batch size of `ReadDir` when the request gives none.
pub(crate) const DEFAULT_READ_DIR_LIMIT: u32 = 128;

/// `OpenFile`: opens `path` (as `options.user`, if set) and registers a handle owned by the
/// caller's relay slot.
pub(crate) fn open_file(
    root: &Root,
    handles: &HandleTable,
    caller_id: u32,
    path: &str,
    options: &FsOpenOptions,
) -> OpResult {
    let op = Op::Open;
    let user = options.user.as_deref();
    let identity = identity::resolve(root, user).map_err(|source| FsError::User { op, source })?;
    let mut open = OpenOptions::new();
    open.read(options.read)
        .write(options.write)
        .append(options.append)
        .create(options.create)
        .truncate(options.truncate)
        .create_new(options.create_new);
    if let Some(mode) = options.mode {
        open.mode(mode);
    }
    let resolved = root.resolve(path);
    let file = identity::run_as(identity.as_ref(), || open.open(&resolved))
        .map_err(|source| FsError::Identity { op, source })?
        .map_err(FsError::io(op))?;
    let file = OpenFile {
        file,
        path: path.to_owned(),
        readable: options.read,
        writable: options.write,
        append: options.append,
    };
    let handle =
        handles.insert(caller_id, Handle::File(Arc::new(file))).map_err(FsError::handle(op))?;
    Ok(Some(FsResponseData::Handle(handle)))
}

/// `OpenDir`: opens `path` for `ReadDir` batches.
pub(crate) fn open_dir(root: &Root, handles: &HandleTable, caller_id: u32, path: &str) -> OpResult {
    let resolved = root.resolve(path);
    let entries = fs::read_dir(&resolved).map_err(FsError::io(Op::OpenDir))?;
    let dir = OpenDir { entries: Mutex::new(entries), path: path.to_owned(), resolved };
    let handle = handles
        .insert(caller_id, Handle::Dir(Arc::new(dir)))
        .map_err(FsError::handle(Op::OpenDir))?;
    Ok(Some(FsResponseData::Handle(handle)))
}

/// `CloseHandle`: forgets the handle and flushes a file. The descriptor closes when the last
/// stream still using it ends.
pub(crate) fn close(handles: &HandleTable, caller_id: u32, handle: u64) -> OpResult {
    match handles.remove(caller_id, handle).map_err(FsError::handle(Op::Close))? {
        Handle::File(open) => (&open.file).flush().map_err(FsError::io(Op::Close))?,
        Handle::Dir(_) => {}
    }
    Ok(None)
}

/// `ReadDir`: the next batch of at most `limit` entries (default 128, minimum 1); an empty list
/// means the end.
pub(crate) fn read_dir(
    handles: &HandleTable,
    caller_id: u32,
    handle: u64,
    limit: Option<u32>,
) -> OpResult {
    let dir = handles.dir(caller_id, handle).map_err(FsError::handle(Op::ReadDir))?;
    let limit = limit.unwrap_or(DEFAULT_READ_DIR_LIMIT).max(1);
    let mut iter = dir.entries.lock().unwrap_or_else(PoisonError::into_inner);
    let mut entries = Vec::new();
    for entry in iter.by_ref().take(limit as usize) {
        let entry = entry.map_err(|source| FsError::DirEntry { path: dir.path.clone(), source })?;
        let reported = child_path(&dir.path, &entry.file_name());
        entries.push(match fs::symlink_metadata(entry.path()) {
            Ok(meta) => entry_info(reported, &meta),
            Err(_) => unknown_entry(reported),
        });
    }
    Ok(Some(FsResponseData::List(entries)))
}

/// `FStat`: fstat of a file; a directory handle stats its path.
pub(crate) fn fstat(handles: &HandleTable, caller_id: u32, handle: u64) -> OpResult {
    let info = match handles.get(caller_id, handle).map_err(FsError::handle(Op::FStat))? {
        Handle::File(open) => {
            let meta = open.file.metadata().map_err(FsError::io(Op::FStat))?;
            entry_info(open.path.clone(), &meta)
        }
        Handle::Dir(dir) => {
            let meta = fs::metadata(&dir.resolved).map_err(FsError::io(Op::FStat))?;
            entry_info(dir.path.clone(), &meta)
        }
    };
    Ok(Some(FsResponseData::Stat(info)))
}

/// `FSetStat`: size, mode, owner and times through a file handle.
pub(crate) fn fset_stat(
    handles: &HandleTable,
    caller_id: u32,
    handle: u64,
    attrs: FsSetAttrs,
) -> OpResult {
    let open =
        handles.file(caller_id, handle, Access::Any).map_err(FsError::handle(Op::FSetStat))?;
    attrs::set_file_attrs(&open.file, attrs)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use moat_protocol::payload::fs::{FsEntryKind, FsResponseData};

    use super::*;
    use crate::fs::handles::MAX_HANDLES_PER_SLOT;
    use crate::fs::testing::TempRoot;

    const ID: u32 = 9;
    const OTHER_SLOT_ID: u32 = 33_554_432 + 9;
    const ENOENT: &str = "No such file or directory (os error 2)";

    fn setup() -> (TempRoot, Root, HandleTable) {
        let tmp = TempRoot::new();
        let root = Root::new(tmp.path().to_path_buf());
        (tmp, root, HandleTable::new())
    }

    fn handle_of(result: OpResult) -> u64 {
        match result.unwrap() {
            Some(FsResponseData::Handle(h)) => h,
            other => panic!("expected Handle, got {other:?}"),
        }
    }

    fn options(read: bool, write: bool, create: bool) -> FsOpenOptions {
        FsOpenOptions { read, write, create, ..FsOpenOptions::default() }
    }

    #[test]
    fn open_file_creates_with_mode_and_returns_handle_one() {
        let (tmp, root, handles) = setup();
        let opts = FsOpenOptions { mode: Some(0o640), ..options(false, true, true) };
        assert_eq!(handle_of(open_file(&root, &handles, ID, "/new", &opts)), 1);
        let meta = std::fs::metadata(tmp.path().join("new")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640 & !current_umask());
    }

    #[test]
    fn open_file_missing_without_create_fails() {
        let (_tmp, root, handles) = setup();
        let result = open_file(&root, &handles, ID, "/nope", &options(true, false, false));
        assert_eq!(result.unwrap_err().to_string(), format!("open: {ENOENT}"));
    }

    #[test]
    fn open_file_create_new_on_existing_fails() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let opts = FsOpenOptions { write: true, create_new: true, ..FsOpenOptions::default() };
        let err = open_file(&root, &handles, ID, "/f", &opts).unwrap_err();
        assert_eq!(err.to_string(), "open: File exists (os error 17)");
    }

    #[test]
    fn open_file_for_unknown_user_fails() {
        let (_tmp, root, handles) = setup();
        let opts = FsOpenOptions { user: Some("nobody-here".into()), ..options(true, true, true) };
        let err = open_file(&root, &handles, ID, "/f", &opts).unwrap_err();
        assert_eq!(err.to_string(), "open: user \"nobody-here\" not found in /etc/passwd");
    }

    #[test]
    #[ignore = "needs root (setfsuid to another user)"]
    fn open_file_as_user_creates_owned_by_that_user_needs_root() {
        let (tmp, root, handles) = setup();
        tmp.write_passwd("alice:x:1000:1001::/home/alice:/bin/sh\n", "");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let opts = FsOpenOptions { user: Some("alice".into()), ..options(false, true, true) };
        handle_of(open_file(&root, &handles, ID, "/mine", &opts));
        let meta = std::fs::metadata(tmp.path().join("mine")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    }

    #[test]
    #[ignore = "needs root (setfsuid to another user)"]
    fn open_file_as_user_is_refused_where_the_user_may_not_write_needs_root() {
        let (tmp, root, handles) = setup();
        tmp.write_passwd("alice:x:1000:1001::/home/alice:/bin/sh\n", "");
        std::fs::create_dir(tmp.path().join("locked")).unwrap();
        std::fs::set_permissions(tmp.path().join("locked"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let opts = FsOpenOptions { user: Some("alice".into()), ..options(false, true, true) };
        let err = open_file(&root, &handles, ID, "/locked/f", &opts).unwrap_err();
        assert_eq!(err.to_string(), "open: Permission denied (os error 13)");
    }

    #[test]
    fn open_beyond_the_slot_limit_fails() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let Handle::File(shared) = handles
            .get(ID, handle_of(open_file(&root, &handles, ID, "/f", &options(true, false, false))))
            .unwrap()
        else {
            unreachable!()
        };
        for _ in 1..MAX_HANDLES_PER_SLOT {
            handles.insert(ID, Handle::File(Arc::clone(&shared))).unwrap();
        }
        let err = open_file(&root, &handles, ID, "/f", &options(true, false, false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "open: too many open filesystem handles for relay client: 1024"
        );
        let err = open_dir(&root, &handles, ID, "/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "opendir: too many open filesystem handles for relay client: 1024"
        );
    }

    #[test]
    fn open_dir_of_missing_path_fails() {
        let (_tmp, root, handles) = setup();
        assert_eq!(
            open_dir(&root, &handles, ID, "/nope").unwrap_err().to_string(),
            format!("opendir: {ENOENT}")
        );
    }

    #[test]
    fn read_dir_pages_through_the_directory_then_ends_empty() {
        let (tmp, root, handles) = setup();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(tmp.path().join("d").join(name), b"").unwrap();
        }
        let h = handle_of(open_dir(&root, &handles, ID, "/d"));
        let batch = |limit| match read_dir(&handles, ID, h, limit).unwrap() {
            Some(FsResponseData::List(entries)) => entries,
            other => panic!("expected List, got {other:?}"),
        };
        let mut seen: Vec<String> = batch(Some(2)).into_iter().map(|e| e.path).collect();
        assert_eq!(seen.len(), 2);
        let rest = batch(Some(0));
        assert_eq!(rest.len(), 1, "limit 0 is raised to 1");
        seen.extend(rest.into_iter().map(|e| e.path));
        seen.sort();
        assert_eq!(seen, ["/d/a", "/d/b", "/d/c"]);
        assert!(batch(None).is_empty());
    }

    #[test]
    fn read_dir_on_a_file_handle_fails() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let h = handle_of(open_file(&root, &handles, ID, "/f", &options(true, false, false)));
        let err = read_dir(&handles, ID, h, None).unwrap_err();
        assert_eq!(err.to_string(), format!("readdir: handle {h} is a file"));
    }

    #[test]
    fn fstat_reports_the_open_path_for_files_and_dirs() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"four").unwrap();
        let file = handle_of(open_file(&root, &handles, ID, "/f", &options(true, false, false)));
        let dir = handle_of(open_dir(&root, &handles, ID, "/"));
        let Some(FsResponseData::Stat(info)) = fstat(&handles, ID, file).unwrap() else { panic!() };
        assert_eq!((info.path.as_str(), info.kind, info.size), ("/f", FsEntryKind::File, 4));
        let Some(FsResponseData::Stat(info)) = fstat(&handles, ID, dir).unwrap() else { panic!() };
        assert_eq!((info.path.as_str(), info.kind), ("/", FsEntryKind::Dir));
    }

    #[test]
    fn fstat_of_unknown_handle_fails() {
        let (_tmp, _root, handles) = setup();
        assert_eq!(fstat(&handles, ID, 77).unwrap_err().to_string(), "fstat: invalid handle: 77");
    }

    #[test]
    fn fset_stat_truncates_through_the_handle() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"0123456789").unwrap();
        let h = handle_of(open_file(&root, &handles, ID, "/f", &options(false, true, false)));
        fset_stat(&handles, ID, h, FsSetAttrs { size: Some(2), ..FsSetAttrs::default() }).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"01");
    }

    #[test]
    fn fset_stat_on_a_dir_handle_fails() {
        let (_tmp, root, handles) = setup();
        let h = handle_of(open_dir(&root, &handles, ID, "/"));
        let err = fset_stat(&handles, ID, h, FsSetAttrs::default()).unwrap_err();
        assert_eq!(err.to_string(), format!("fsetstat: handle {h} is a directory"));
    }

    #[test]
    fn close_forgets_the_handle() {
        let (tmp, root, handles) = setup();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let h = handle_of(open_file(&root, &handles, ID, "/f", &options(true, false, false)));
        close(&handles, ID, h).unwrap();
        assert_eq!(
            close(&handles, ID, h).unwrap_err().to_string(),
            format!("close: invalid handle: {h}")
        );
    }

    #[test]
    fn close_from_another_slot_fails_and_keeps_the_handle() {
        let (_tmp, root, handles) = setup();
        let h = handle_of(open_dir(&root, &handles, ID, "/"));
        let err = close(&handles, OTHER_SLOT_ID, h).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("close: handle {h} is owned by a different relay client")
        );
        assert!(close(&handles, ID, h).is_ok());
    }

    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap()
    }
}
