//! The agent channel: the one byte stream to the host.
//!
//! - `vsock:PORT` (or `vsock:CID:PORT`): inside a VM the guest connects out to the host (CID 2),
//!   retrying while the host side comes up;
//! - `fd:N`: a connected stream socket the parent left open for us (namespace backend);
//! - `unix:PATH`: connect to a listening unix socket (tests, development).
//!
//! This module owns the spec syntax and opening the stream; framing is the driver's.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::sys::{self, SysError};

/// Host CID seen from a guest.
pub const HOST_CID: u32 = 2;

/// How long a VM guest keeps retrying its vsock connection.
pub const VSOCK_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    /// An inherited, connected stream socket.
    Fd(i32),
    /// A unix socket path to connect to.
    Unix(PathBuf),
    /// A vsock port on a CID (normally the host, 2).
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl ChannelSpec {
    /// Whether this is the VM transport (which also decides how the agent powers off).
    pub fn is_vm(&self) -> bool {
        matches!(self, ChannelSpec::Vsock { .. })
    }
}

/// Why a channel spec or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The spec string is not `fd:N`, `unix:PATH` or `vsock:[CID:]PORT`.
    #[error("bad agent channel {0:?}: expected fd:N, unix:PATH or vsock:[CID:]PORT")]
    BadSpec(String),
    /// The inherited descriptor is unusable.
    #[error("agent channel: {0}")]
    Fd(#[from] SysError),
    /// Connecting failed.
    #[error("agent channel {spec}: {source}")]
    Connect {
        /// The spec.
        spec: String,
        /// The error.
        source: std::io::Error,
    },
}

impl FromStr for ChannelSpec {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<ChannelSpec, ChannelError> {
        let bad = || ChannelError::BadSpec(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "fd" => rest.parse().map(ChannelSpec::Fd).map_err(|_| bad()),
            "unix" if !rest.is_empty() => Ok(ChannelSpec::Unix(PathBuf::from(rest))),
            "vsock" => {
                let (cid, port) = match rest.split_once(':') {
                    Some((cid, port)) => (cid.parse().map_err(|_| bad())?, port),
                    None => (HOST_CID, rest),
                };
                Ok(ChannelSpec::Vsock { cid, port: port.parse().map_err(|_| bad())? })
            }
            _ => Err(bad()),
        }
    }
}

/// Read half of the channel.
pub type ChannelReader = Box<dyn AsyncRead + Send + Unpin>;
/// Write half of the channel.
pub type ChannelWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Opens the channel and splits it.
pub async fn open(spec: &ChannelSpec) -> Result<(ChannelReader, ChannelWriter), ChannelError> {
    let connect_err = |source| ChannelError::Connect { spec: format!("{spec:?}"), source };
    match spec {
        ChannelSpec::Fd(fd) => {
            let owned = sys::take_inherited_fd(*fd)?;
            let std_stream = std::os::unix::net::UnixStream::from(owned);
            std_stream.set_nonblocking(true).map_err(connect_err)?;
            let stream = tokio::net::UnixStream::from_std(std_stream).map_err(connect_err)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        ChannelSpec::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        ChannelSpec::Vsock { cid, port } => {
            let deadline = Instant::now() + VSOCK_CONNECT_TIMEOUT;
            let stream = loop {
                match tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                    .await
                {
                    Ok(stream) => break stream,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(%e, "vsock connect failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(connect_err(e)),
                }
            };
            let (r, w) = tokio::io::split(stream);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spec_form() {
        assert_eq!("fd:3".parse::<ChannelSpec>().unwrap(), ChannelSpec::Fd(3));
        assert_eq!(
            "unix:/run/a.sock".parse::<ChannelSpec>().unwrap(),
            ChannelSpec::Unix("/run/a.sock".into())
        );
        assert_eq!(
            "vsock:1024".parse::<ChannelSpec>().unwrap(),
            ChannelSpec::Vsock { cid: 2, port: 1024 }
        );
        assert_eq!(
            "vsock:3:5".parse::<ChannelSpec>().unwrap(),
            ChannelSpec::Vsock { cid: 3, port: 5 }
        );
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in ["", "fd", "fd:x", "unix:", "tcp:1", "vsock:a"] {
            assert!(bad.parse::<ChannelSpec>().is_err(), "{bad:?} parsed");
        }
    }
}
