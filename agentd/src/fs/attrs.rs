//! Applying `FsSetAttrs`: `SetStat` by path and `FSetStat` through an open file.
//!
//! Both apply the attributes in the reference's order, stopping at the first failure: size, then
//! mode, then owner, then times. Times are whole Unix seconds; a time that is not given keeps the
//! file's current value exactly (`UTIME_OMIT`). As in the reference, the file is stat'ed before
//! its times are set, so a missing path fails at that step with the same text.

use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_protocol::payload::fs::FsSetAttrs;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::error::{FsError, Op, Step};

/// `SetStat`: applies `attrs` to `path`, following a final symlink or not.
pub(crate) fn set_path_attrs(path: &Path, follow: bool, attrs: FsSetAttrs) -> Result<(), FsError> {
    let op = Op::SetStat;
    if let Some(size) = attrs.size {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(FsError::step(op, Step::OpenForTruncate))?;
        file.set_len(size).map_err(FsError::step(op, Step::SetLen))?;
    }
    if let Some(mode) = attrs.mode {
        if !follow {
            let meta = std::fs::symlink_metadata(path)
                .map_err(FsError::step(op, Step::LstatBeforeChmod))?;
            if meta.file_type().is_symlink() {
                return Err(FsError::ChmodSymlink);
            }
        }
        std::fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(FsError::step(op, Step::Chmod))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        if follow {
            std::os::unix::fs::chown(path, attrs.uid, attrs.gid)
        } else {
            std::os::unix::fs::lchown(path, attrs.uid, attrs.gid)
        }
        .map_err(FsError::step(op, Step::Chown))?;
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) }
            .map_err(FsError::step(op, Step::StatBeforeUtimensat))?;
        let flag =
            if follow { UtimensatFlags::FollowSymlink } else { UtimensatFlags::NoFollowSymlink };
        utimensat(AT_FDCWD, path, &timespec(attrs.atime), &timespec(attrs.mtime), flag)
            .map_err(io::Error::from)
            .map_err(FsError::step(op, Step::Utimensat))?;
    }
    Ok(())
}

/// `FSetStat`: applies `attrs` through an open file (`ftruncate`, `fchmod`, `fchown`,
/// `futimens`).
pub(crate) fn set_file_attrs(file: &File, attrs: FsSetAttrs) -> Result<(), FsError> {
    let op = Op::FSetStat;
    if let Some(size) = attrs.size {
        file.set_len(size).map_err(FsError::step(op, Step::SetLen))?;
    }
    if let Some(mode) = attrs.mode {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(FsError::step(op, Step::Chmod))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid)
            .map_err(FsError::step(op, Step::Fchown))?;
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        file.metadata().map_err(FsError::step(op, Step::StatBeforeFutimens))?;
        let mut times = FileTimes::new();
        if let Some(atime) = attrs.atime {
            times = times.set_accessed(system_time(atime));
        }
        if let Some(mtime) = attrs.mtime {
            times = times.set_modified(system_time(mtime));
        }
        file.set_times(times).map_err(FsError::step(op, Step::Futimens))?;
    }
    Ok(())
}

/// Whole seconds, or "leave as is".
fn timespec(seconds: Option<i64>) -> TimeSpec {
    match seconds {
        Some(seconds) => TimeSpec::new(seconds, 0),
        None => TimeSpec::UTIME_OMIT,
    }
}

/// Unix seconds as a `SystemTime` (before the epoch for negative values).
fn system_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::fs::testing::TempRoot;

    fn attrs() -> FsSetAttrs {
        FsSetAttrs::default()
    }

    #[test]
    fn size_mode_and_times_apply_by_path() {
        let tmp = TempRoot::new();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let change = FsSetAttrs {
            size: Some(4),
            mode: Some(0o600),
            atime: Some(1_000_000),
            mtime: Some(2_000_000),
            ..attrs()
        };
        set_path_attrs(&path, true, change).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o7777), (4, 0o600));
        assert_eq!((meta.atime(), meta.mtime()), (1_000_000, 2_000_000));
    }

    #[test]
    fn missing_time_keeps_the_current_value() {
        let tmp = TempRoot::new();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        set_path_attrs(&path, true, FsSetAttrs { atime: Some(5), mtime: Some(6), ..attrs() })
            .unwrap();
        set_path_attrs(&path, true, FsSetAttrs { mtime: Some(7), ..attrs() }).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.atime(), meta.mtime()), (5, 7));
    }

    #[test]
    fn setstat_size_on_missing_path_fails_at_open_for_truncate() {
        let tmp = TempRoot::new();
        let err =
            set_path_attrs(&tmp.path().join("nope"), true, FsSetAttrs { size: Some(0), ..attrs() })
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "setstat: open for truncate: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn setstat_times_on_missing_path_fails_at_stat() {
        let tmp = TempRoot::new();
        let change = FsSetAttrs { mtime: Some(1), ..attrs() };
        let err = set_path_attrs(&tmp.path().join("nope"), true, change).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setstat: stat before utimensat: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn chmod_of_a_symlink_itself_is_refused() {
        let tmp = TempRoot::new();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink("target", &link).unwrap();
        let err =
            set_path_attrs(&link, false, FsSetAttrs { mode: Some(0o644), ..attrs() }).unwrap_err();
        assert_eq!(err.to_string(), "setstat: chmod on symlink without following is not supported");
    }

    #[test]
    fn symlink_times_change_without_following() {
        let tmp = TempRoot::new();
        std::fs::write(tmp.path().join("target"), b"x").unwrap();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink("target", &link).unwrap();
        set_path_attrs(&link, false, FsSetAttrs { mtime: Some(42), ..attrs() }).unwrap();
        assert_eq!(std::fs::symlink_metadata(&link).unwrap().mtime(), 42);
        assert_ne!(std::fs::metadata(&link).unwrap().mtime(), 42);
    }

    #[test]
    fn file_attrs_apply_through_the_descriptor() {
        let tmp = TempRoot::new();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        let change = FsSetAttrs {
            size: Some(3),
            mode: Some(0o640),
            atime: Some(-10),
            mtime: Some(100),
            ..attrs()
        };
        set_file_attrs(&file, change).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o7777), (3, 0o640));
        assert_eq!((meta.atime(), meta.mtime()), (-10, 100));
    }

    #[test]
    fn file_set_len_on_read_only_descriptor_fails_at_set_len() {
        let tmp = TempRoot::new();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        let err = set_file_attrs(&file, FsSetAttrs { size: Some(0), ..attrs() }).unwrap_err();
        assert_eq!(err.to_string(), "fsetstat: set_len: Invalid argument (os error 22)");
    }
}
