//! The relay's listening unix socket: created with mode 0600 without a window in which anyone else
//! could connect, replacing a stale socket file, refusing to take over a live one.
//!
//! ```text
//!  <dir>/.moat-relay-<pid>-<n>/   mode 0700, private
//!        └─ s                     bind, chmod 0600
//!  rename  → <dir>/agent.sock     atomic; replaces a stale socket file
//! ```
//!
//! This module owns creating and removing the socket file. Accepting connections is the driver's.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::UnixListener;

/// Mode of the relay socket: only the sandbox's owner may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// Mode of the private directory the socket is created in before it is moved into place.
const STAGING_DIR_MODE: u32 = 0o700;

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The directory that should hold the socket does not exist.
    #[error("socket directory {0} does not exist")]
    DirMissing(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A live relay already answers on the path.
    #[error("another relay is already serving {0}")]
    InUse(PathBuf),
    /// A step of creating the socket failed.
    #[error("cannot create socket {path}: {step}: {source}")]
    Create {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// What failed.
        source: io::Error,
    },
}

/// A bound, listening socket and the file that names it.
#[derive(Debug)]
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
}

impl BoundSocket {
    /// Creates the socket at `path` with mode 0600. The parent directory must exist. A stale
    /// socket file (nobody accepting) is replaced; a live one or any other file is refused.
    /// Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
        let parent = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(SocketError::DirMissing(parent.to_owned()));
        }
        check_existing(path)?;
        let staging = create_staging_dir(parent, path)?;
        let result = bind_in(&staging, path);
        // The staging directory is empty on success (the socket was moved out) or holds at most
        // the failed attempt's file.
        let _ = fs::remove_file(staging.join("s"));
        let _ = fs::remove_dir(&staging);
        let std_listener = result?;
        let create = |step, source| SocketError::Create { path: path.to_owned(), step, source };
        let metadata = fs::symlink_metadata(path).map_err(|e| create("stat", e))?;
        std_listener.set_nonblocking(true).map_err(|e| create("set non-blocking", e))?;
        let listener = UnixListener::from_std(std_listener).map_err(|e| create("register", e))?;
        Ok(BoundSocket {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// The listener.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops listening and removes the socket file, unless it was replaced by someone else's.
    pub fn close(self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity && m.file_type().is_socket());
        drop(self.listener);
        if ours {
            if let Err(err) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot remove relay socket");
            }
        }
    }
}

/// Refuses a path that holds something other than a stale socket.
fn check_existing(path: &Path) -> Result<(), SocketError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Create { path: path.to_owned(), step: "stat", source });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_owned())),
        Err(_) => {
            tracing::info!(path = %path.display(), "replacing stale relay socket");
            Ok(())
        }
    }
}

fn create_staging_dir(parent: &Path, path: &Path) -> Result<PathBuf, SocketError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut builder = DirBuilder::new();
    builder.mode(STAGING_DIR_MODE);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let staging = parent.join(format!(".moat-relay-{}-{n}", std::process::id()));
        match builder.create(&staging) {
            Ok(()) => return Ok(staging),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(SocketError::Create {
                    path: path.to_owned(),
                    step: "create staging directory",
                    source,
                });
            }
        }
    }
}

fn bind_in(staging: &Path, path: &Path) -> Result<StdUnixListener, SocketError> {
    let create = |step, source| SocketError::Create { path: path.to_owned(), step, source };
    let staged = staging.join("s");
    let listener = StdUnixListener::bind(&staged).map_err(|e| create("bind", e))?;
    fs::set_permissions(&staged, Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| create("chmod", e))?;
    fs::rename(&staged, path).map_err(|e| create("move into place", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("moat-relay-sock-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn socket_is_created_with_mode_0600_and_removed_on_close() {
        let tmp = TempDir::new("mode");
        let path = tmp.0.join("agent.sock");
        let socket = BoundSocket::bind(&path).unwrap();
        let metadata = fs::symlink_metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, SOCKET_MODE);
        let leftovers: Vec<_> =
            fs::read_dir(&tmp.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["agent.sock"], "staging directory removed");
        socket.close();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let tmp = TempDir::new("stale");
        let path = tmp.0.join("agent.sock");
        drop(StdUnixListener::bind(&path).unwrap());
        let socket = BoundSocket::bind(&path).unwrap();
        assert!(StdUnixStream::connect(&path).is_ok());
        socket.close();
    }

    #[tokio::test]
    async fn live_socket_is_refused() {
        let tmp = TempDir::new("live");
        let path = tmp.0.join("agent.sock");
        let _live = StdUnixListener::bind(&path).unwrap();
        assert!(matches!(BoundSocket::bind(&path), Err(SocketError::InUse(_))));
    }

    #[tokio::test]
    async fn regular_file_is_not_replaced() {
        let tmp = TempDir::new("file");
        let path = tmp.0.join("agent.sock");
        fs::write(&path, b"keep me").unwrap();
        assert!(matches!(BoundSocket::bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn missing_parent_directory_is_refused() {
        let tmp = TempDir::new("missing");
        let path = tmp.0.join("nope").join("agent.sock");
        assert!(matches!(BoundSocket::bind(&path), Err(SocketError::DirMissing(_))));
    }
}
