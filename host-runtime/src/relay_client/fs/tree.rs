//! Directory trees between the host and a sandbox, for [`FsClient`]: a walk on one side, one
//! operation per entry on the other (`Mkdir`, a streamed file copy, `Symlink`/`ReadLink`).
//!
//! ```text
//!  copy_dir_from_host:  host read_dir (lstat) ─► dir: Mkdir, walk on · file: copy_from_host
//!                                              · symlink: Symlink (target verbatim)
//!  copy_dir_to_host:    List (lstat per entry) ─► dir: create_dir, walk on · file: copy_to_host
//!                                              · symlink: ReadLink ─► host symlink
//! ```
//!
//! Symlinks are copied as links, never followed, so a walk cannot loop. Files keep their
//! permission bits; directories get default ones. Devices, sockets and FIFOs are refused. The
//! names a guest lists are checked before they become host paths: a single component, never `.`
//! or `..`, so an untrusted agent cannot steer a copy outside its destination.

use std::path::{Path, PathBuf};

use moat_protocol::payload::fs::{FsEntryKind, FsOp, FsResponseData};

use super::{FsClient, GuestFsError, unexpected};
use crate::error::RuntimeError;

impl FsClient {
    /// Copies the host directory `host_dir` and everything under it to `path` in the sandbox
    /// (created with its parents); returns the bytes of file content copied.
    pub fn copy_dir_from_host(&mut self, host_dir: &Path, path: &str) -> Result<u64, RuntimeError> {
        let mut total = 0;
        let mut pending = vec![(host_dir.to_owned(), path.to_owned())];
        while let Some((host, guest)) = pending.pop() {
            self.mkdir(&guest)?;
            let entries = std::fs::read_dir(&host).map_err(RuntimeError::io("list", &host))?;
            for entry in entries {
                let entry = entry.map_err(RuntimeError::io("list", &host))?;
                let child = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    return Err(unsupported(&child, "its name is not UTF-8"));
                };
                let guest_child = format!("{}/{name}", guest.trim_end_matches('/'));
                let kind = entry.file_type().map_err(RuntimeError::io("stat", &child))?;
                if kind.is_dir() {
                    pending.push((child, guest_child));
                } else if kind.is_symlink() {
                    let target = std::fs::read_link(&child)
                        .map_err(RuntimeError::io("read symlink", &child))?;
                    let Some(target) = target.to_str() else {
                        return Err(unsupported(&child, "its target is not UTF-8"));
                    };
                    self.symlink(target, &guest_child)?;
                } else if kind.is_file() {
                    total += self.copy_from_host(&child, &guest_child)?;
                } else {
                    return Err(unsupported(&child, "not a file, directory or symlink"));
                }
            }
        }
        Ok(total)
    }

    /// Copies the sandbox directory `path` and everything under it to `host_dir` (created with
    /// its parents); returns the bytes of file content copied.
    pub fn copy_dir_to_host(&mut self, path: &str, host_dir: &Path) -> Result<u64, RuntimeError> {
        let mut total = 0;
        let mut pending = vec![(path.to_owned(), host_dir.to_owned())];
        while let Some((guest, host)) = pending.pop() {
            std::fs::create_dir_all(&host).map_err(RuntimeError::io("create directory", &host))?;
            for entry in self.list(&guest)? {
                let host_child = host.join(child_name(&entry.path)?);
                match entry.kind {
                    FsEntryKind::Dir => pending.push((entry.path, host_child)),
                    FsEntryKind::File => total += self.copy_to_host(&entry.path, &host_child)?,
                    FsEntryKind::Symlink => {
                        let target = self.read_link(&entry.path)?;
                        std::os::unix::fs::symlink(&target, &host_child)
                            .map_err(RuntimeError::io("create symlink", &host_child))?;
                    }
                    FsEntryKind::Other => {
                        return Err(GuestFsError::Failed {
                            path: entry.path,
                            message: "not a file, directory or symlink; not copied".to_owned(),
                        }
                        .into());
                    }
                }
            }
        }
        Ok(total)
    }

    /// Creates the symlink `link_path` pointing to `target` (stored verbatim).
    pub fn symlink(&mut self, target: &str, link_path: &str) -> Result<(), RuntimeError> {
        let op = FsOp::Symlink {
            target: target.to_owned(),
            link_path: link_path.to_owned(),
            user: None,
        };
        self.call(op, link_path).map(drop)
    }

    /// The target of the symlink `path`, as stored.
    pub fn read_link(&mut self, path: &str) -> Result<String, RuntimeError> {
        match self.call(FsOp::ReadLink { path: path.to_owned() }, path)? {
            Some(FsResponseData::Path(target)) => Ok(target),
            other => Err(unexpected(other, "waiting for a symlink target")),
        }
    }
}

/// The last component of a listed guest path, refused unless it is one plain name.
fn child_name(path: &str) -> Result<&str, RuntimeError> {
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => Ok(name),
        _ => Err(GuestFsError::Failed {
            path: path.to_owned(),
            message: "the agent listed an entry that is not one plain name".to_owned(),
        }
        .into()),
    }
}

fn unsupported(path: &PathBuf, why: &'static str) -> RuntimeError {
    RuntimeError::io("copy", path)(std::io::Error::new(std::io::ErrorKind::Unsupported, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_child_becomes_its_last_component() {
        assert_eq!(child_name("/data/a/file.txt").unwrap(), "file.txt");
    }

    #[test]
    fn a_listed_dot_dot_or_empty_name_is_refused() {
        assert!(child_name("/data/..").is_err());
        assert!(child_name("/data/.").is_err());
        assert!(child_name("/data/").is_err());
    }
}
