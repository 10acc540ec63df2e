//! `moat cp HOST_PATH NAME:GUEST_PATH` and `moat cp NAME:GUEST_PATH HOST_PATH`: parsing, and the
//! choice of the destination file; the copy itself is the library's
//! ([`FsClient::copy_from_host`], [`FsClient::copy_to_host`]).
//!
//! ```text
//!  NAME:/abs/path   a path in the running sandbox NAME (NAME holds no '/')
//!  anything else    a host path (write ./a:b for a host file whose name has a colon)
//!  DEST an existing directory ─► the file keeps its name inside it
//! ```
//!
//! A directory is copied with everything under it (symlinks as links).

use std::path::{Path, PathBuf};

use crate::api::blocking::Moat;
use crate::api::fs::{FsClient, FsEntryKind};
use crate::error::RuntimeError;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this host.
    Host(PathBuf),
    /// An absolute path in the named sandbox.
    Sandbox {
        /// The sandbox.
        name: String,
        /// The guest path.
        path: String,
    },
}

/// Parses `NAME:/path` as a sandbox path and anything else as a host path.
fn location(arg: &str) -> Result<Location, String> {
    let Some((name, path)) = arg.split_once(':') else {
        return Ok(Location::Host(arg.into()));
    };
    if name.contains('/') {
        return Ok(Location::Host(arg.into()));
    }
    if name.is_empty() {
        return Err(format!("{arg:?}: no sandbox name before the ':' (NAME:/path)"));
    }
    if !path.starts_with('/') {
        return Err(format!("{arg:?}: the path in the sandbox must be absolute (NAME:/path)"));
    }
    Ok(Location::Sandbox { name: name.to_owned(), path: path.to_owned() })
}

/// `moat cp`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CpCmd {
    /// What to copy: a host file or directory, or NAME:/path in a running sandbox.
    #[arg(value_name = "SOURCE", value_parser = location)]
    pub source: Location,
    /// Where to: NAME:/path in a running sandbox, or a host path (into it when a directory).
    #[arg(value_name = "DEST", value_parser = location)]
    pub dest: Location,
}

/// Which way a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// Host file to sandbox.
    ToSandbox {
        /// The host file.
        host: PathBuf,
        /// The sandbox.
        name: String,
        /// The guest destination.
        path: String,
    },
    /// Sandbox file to host.
    FromSandbox {
        /// The sandbox.
        name: String,
        /// The guest file.
        path: String,
        /// The host destination.
        host: PathBuf,
    },
}

/// A `moat cp` whose two sides are both host paths or both sandbox paths (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("one of SOURCE and DEST must be NAME:/path in a sandbox and the other a host path")]
pub struct CpUsageError;

impl CpCmd {
    /// The direction of the copy.
    pub fn transfer(self) -> Result<Transfer, CpUsageError> {
        match (self.source, self.dest) {
            (Location::Host(host), Location::Sandbox { name, path }) => {
                Ok(Transfer::ToSandbox { host, name, path })
            }
            (Location::Sandbox { name, path }, Location::Host(host)) => {
                Ok(Transfer::FromSandbox { name, path, host })
            }
            _ => Err(CpUsageError),
        }
    }
}

/// Runs `transfer` against the sandboxes of the moat home `home`; returns the bytes copied.
pub fn run(home: &Path, transfer: Transfer) -> Result<u64, RuntimeError> {
    let moat = Moat::new(home);
    match transfer {
        Transfer::ToSandbox { host, name, path } => {
            let mut client = moat.get(&name)?.fs()?;
            let dest = guest_destination(&mut client, &path, &host)?;
            // A symlink given as the source is followed, as `cp` does.
            if host.is_dir() {
                client.copy_dir_from_host(&host, &dest)
            } else {
                client.copy_from_host(&host, &dest)
            }
        }
        Transfer::FromSandbox { name, path, host } => {
            let mut client = moat.get(&name)?.fs()?;
            let is_dir = client.stat(&path)?.kind == FsEntryKind::Dir;
            let dest = match Path::new(&path).file_name() {
                Some(file) if host.is_dir() => host.join(file),
                _ => host,
            };
            if is_dir {
                client.copy_dir_to_host(&path, &dest)
            } else {
                client.copy_to_host(&path, &dest)
            }
        }
    }
}

/// `path`, or the host file's name inside it when `path` is a directory in the sandbox.
fn guest_destination(
    client: &mut FsClient,
    path: &str,
    host: &Path,
) -> Result<String, RuntimeError> {
    let is_dir = match client.stat(path) {
        Ok(info) => info.kind == FsEntryKind::Dir,
        Err(RuntimeError::GuestFs(crate::api::GuestFsError::NotFound { .. })) => false,
        Err(err) => return Err(err),
    };
    match host.file_name() {
        Some(file) if is_dir => {
            Ok(format!("{}/{}", path.trim_end_matches('/'), file.to_string_lossy()))
        }
        _ => Ok(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(name: &str, path: &str) -> Location {
        Location::Sandbox { name: name.into(), path: path.into() }
    }

    #[test]
    fn name_colon_absolute_path_is_a_sandbox_path() {
        assert_eq!(location("box:/tmp/a"), Ok(sandbox("box", "/tmp/a")));
        assert_eq!(location("box:/a:b"), Ok(sandbox("box", "/a:b")));
    }

    #[test]
    fn paths_without_a_sandbox_prefix_are_host_paths() {
        assert_eq!(location("/tmp/a"), Ok(Location::Host("/tmp/a".into())));
        assert_eq!(location("./a:b"), Ok(Location::Host("./a:b".into())));
        assert_eq!(location("rel/x:/y"), Ok(Location::Host("rel/x:/y".into())));
    }

    #[test]
    fn a_missing_name_or_a_relative_guest_path_is_refused() {
        assert!(location(":/tmp/a").unwrap_err().contains("no sandbox name"));
        assert!(location("box:tmp/a").unwrap_err().contains("must be absolute"));
        assert!(location("box:").unwrap_err().contains("must be absolute"));
    }

    #[test]
    fn a_malformed_argument_is_a_usage_error_naming_it() {
        let parsed = crate::cli::parse(["moat", "cp", "/etc/hosts", "box:etc/hosts"]);
        let crate::cli::Parsed::Usage(line) = parsed else { panic!("parsed: {parsed:?}") };
        assert!(line.contains("must be absolute"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    #[test]
    fn one_side_must_be_in_a_sandbox_and_the_other_on_the_host() {
        let cmd = |source, dest| CpCmd { source, dest };
        let host = || Location::Host("/h".into());
        assert_eq!(cmd(host(), host()).transfer(), Err(CpUsageError));
        assert_eq!(cmd(sandbox("a", "/x"), sandbox("b", "/y")).transfer(), Err(CpUsageError));
        assert_eq!(
            cmd(host(), sandbox("a", "/x")).transfer(),
            Ok(Transfer::ToSandbox { host: "/h".into(), name: "a".into(), path: "/x".into() })
        );
        assert_eq!(
            cmd(sandbox("a", "/x"), host()).transfer(),
            Ok(Transfer::FromSandbox { name: "a".into(), path: "/x".into(), host: "/h".into() })
        );
    }
}
