//! `moat port-forward NAME [HOSTIP:]HOSTPORT:GUESTPORT`: a listener on the host whose every
//! connection is tunnelled to a guest port through the relay ([`crate::api::Sandbox::forward`]).
//! Needs no guest network. Runs until SIGINT or SIGTERM, or until the sandbox stops running.
//!
//! A malformed spec is a usage error (exit 2) naming it; a host port that cannot be bound (in
//! use, no permission) is one line and exit 1.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};

use crate::api::{Moat, TunnelError};
use crate::error::RuntimeError;
use crate::network::parse::{DEFAULT_PUBLISH_ADDR, parse_publish};
use crate::network::{NetworkUsageError, Transport};

/// A parsed `moat port-forward`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PortForwardArgs {
    /// The sandbox name.
    pub name: String,
    /// The host address (default 127.0.0.1) and port to listen on, and the guest port.
    #[arg(value_name = "[HOSTIP:]HOSTPORT:GUESTPORT", value_parser = forward_spec)]
    pub spec: ForwardSpec,
}

/// Where to listen and where to forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The host address and port to listen on.
    pub listen: SocketAddr,
    /// The guest port (on the sandbox's loopback).
    pub guest_port: u16,
}

/// `[HOSTIP:]HOSTPORT:GUESTPORT` (IPv6 host addresses in brackets), TCP only.
fn forward_spec(value: &str) -> Result<ForwardSpec, String> {
    let published = parse_publish(value).map_err(|err| match err {
        NetworkUsageError::BadPublish { problem, .. } => {
            format!("{value:?}: {problem} (expected [HOSTIP:]HOSTPORT:GUESTPORT)")
        }
        other => other.to_string(),
    })?;
    if published.transport != Transport::Tcp {
        return Err(format!("{value:?}: port-forward carries TCP only"));
    }
    Ok(ForwardSpec {
        listen: SocketAddr::new(published.host_addr, published.host_port),
        guest_port: published.guest_port,
    })
}

/// Why `moat port-forward` failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// The host address and port cannot be listened on.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (`Address already in use (os error 98)`).
        source: std::io::Error,
    },
    /// The sandbox is unknown or not running.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Its state could not be followed.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("start the forwarder: {0}")]
    Setup(#[source] std::io::Error),
}

/// Runs `moat port-forward` against the moat home `home`; prints the listening address on stdout
/// once it listens.
pub fn run(home: &Path, args: PortForwardArgs) -> Result<(), PortForwardError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PortForwardError::Setup)?;
    runtime.block_on(forward(home, args))
}

async fn forward(home: &Path, args: PortForwardArgs) -> Result<(), PortForwardError> {
    let sandbox = Moat::new(home).get(&args.name).await?;
    let state = sandbox.state().await?;
    if state.status != crate::api::Status::Running {
        let status = state.status.as_str();
        return Err(RuntimeError::NotRunning { name: args.name, status }.into());
    }
    let addr = args.spec.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PortForwardError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut interrupt = signal(SignalKind::interrupt()).map_err(PortForwardError::Setup)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(PortForwardError::Setup)?;
    println!("forwarding {bound} -> {}:{}", args.name, args.spec.guest_port);
    let stop = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    sandbox.forward(listener, args.spec.guest_port, stop).await?;
    Ok(())
}

/// The default listening address, for the help text and tests.
pub const DEFAULT_LISTEN_ADDR: IpAddr = DEFAULT_PUBLISH_ADDR;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_defaults_to_the_host_loopback() {
        let spec = forward_spec("8080:80").unwrap();
        assert_eq!(spec.listen, SocketAddr::new(DEFAULT_LISTEN_ADDR, 8080));
        assert_eq!(spec.guest_port, 80);
    }

    #[test]
    fn a_spec_takes_a_host_address_v4_or_bracketed_v6() {
        assert_eq!(forward_spec("0.0.0.0:1:2").unwrap().listen, "0.0.0.0:1".parse().unwrap());
        assert_eq!(forward_spec("[::1]:1:2").unwrap().listen, "[::1]:1".parse().unwrap());
    }

    #[test]
    fn malformed_specs_are_refused_naming_the_value() {
        for bad in ["80", "a:b", "1:2:3:4", "host:1:2", "0:80", "8080:70000", "8080:80/udp", ""] {
            let err = forward_spec(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
