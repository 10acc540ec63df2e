//! A sandbox's network: the policy (`--network`, `--allow`, `--deny`), published ports (`-p`),
//! and what each backend can do with them. This module owns the policy as data and the pure
//! decision ([`policy`]), the option parsers the CLI calls ([`parse`]), and the check that a
//! backend can honour a configuration ([`check_backend`]). It does not own the CLI's option
//! table (`cli/`) nor the namespaces themselves (`backend/namespace/`).
//!
//! ```text
//!  --network none|public|all ─┐
//!  --allow DEST / --deny DEST ─┼─► NetworkConfig (spec.json, inside SandboxConfig)
//!  -p [HOSTIP:]HOSTPORT:GUEST ─┘        │
//!                                       ├─ none, no rules, no -p ─► loopback only (both backends)
//!                                       └─ anything else ─► router.rs (a router netns,
//!                                          nft.rs's ruleset, slirp4netns) wired to the sandbox's
//!                                          netns: the agent's (namespace backend) or the VM
//!                                          process's, whose sockets carry the guest's (libkrun TSI)
//! ```
//!
//! Not built yet, and refused with [`NetworkError::NotBuilt`] rather than ignored: IPv6 inside
//! the guest (and so `-p` on an IPv6 host address), and a network for an unprivileged user's
//! sandbox.

pub mod dns;
pub mod forwarder;
pub mod nft;
pub mod parse;
pub mod policy;
pub mod router;

pub use parse::{NetworkUsageError, PublishedPort};
pub use policy::{Action, Destination, NetworkMode, PortRange, Rule, Transport};

use crate::backend::isolation::BackendKind;

/// A sandbox's network configuration, as `spec.json` records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// What the guest may reach when no rule decides.
    pub mode: NetworkMode,
    /// `--allow` / `--deny`, in the order given: the first match wins.
    pub rules: Vec<Rule>,
    /// `-p`: host ports forwarded into the guest.
    pub publish: Vec<PublishedPort>,
}

impl NetworkConfig {
    /// Whether the guest needs a network device at all: not for `none` with no allow rule and
    /// no published port (deny rules alone change nothing there).
    pub fn needs_network(&self) -> bool {
        self.mode != NetworkMode::None
            || self.rules.iter().any(|rule| rule.action == Action::Allow)
            || !self.publish.is_empty()
    }
}

/// Why a sandbox's network cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// What was asked for is not built on this backend.
    #[error("{what}: not built on the {backend} backend yet (docs/NETWORK.md says what is)")]
    NotBuilt {
        /// The option that asked for it, e.g. `--network public`.
        what: String,
        /// `namespace`, `vm` or `unprivileged namespace`.
        backend: &'static str,
    },
    /// A program the guest network needs is not installed.
    #[error("the guest network needs `{tool}` (Debian package {package}), not found on PATH")]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A system call or file operation failed.
    #[error("{step}: {source}")]
    Io {
        /// The step.
        step: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A program run to set the network up failed.
    #[error("{program} {args}: {said}")]
    Command {
        /// The program.
        program: &'static str,
        /// Its arguments.
        args: String,
        /// Its last line of stderr.
        said: String,
    },
    /// slirp4netns ended while starting.
    #[error("slirp4netns exited while starting ({status}): {said}")]
    SlirpExited {
        /// Its exit status.
        status: String,
        /// Its last message.
        said: String,
    },
    /// A published port cannot be bound on the host.
    #[error("-p {}:{}:{}: cannot bind the host port: {source}", port.host_addr, port.host_port, port.guest_port)]
    PortUnavailable {
        /// The port.
        port: PublishedPort,
        /// The cause (in use, or not an address of this host).
        source: std::io::Error,
    },
    /// slirp4netns did not configure the router namespace in time.
    #[error("slirp4netns did not configure the network within {ms} ms")]
    SlirpTimeout {
        /// The limit.
        ms: u64,
    },
}

/// Refuses a configuration `backend` cannot honour, naming the option that asked for it, so a
/// network is never silently missing. `rootless`: the sandbox process will not run as host root.
pub fn check_backend(
    backend: BackendKind,
    rootless: bool,
    config: &NetworkConfig,
) -> Result<(), NetworkError> {
    if !config.needs_network() {
        return Ok(());
    }
    let not_built = |what: String, backend| Err(NetworkError::NotBuilt { what, backend });
    if rootless {
        let name = match backend {
            BackendKind::Vm => "unprivileged vm",
            BackendKind::Namespace => "unprivileged namespace",
        };
        return not_built(asking_option(config), name);
    }
    match config.publish.iter().find(|p| p.host_addr.is_ipv6()) {
        Some(p) => not_built(
            format!("-p [{}]:{}:{} (an IPv6 host address)", p.host_addr, p.host_port, p.guest_port),
            match backend {
                BackendKind::Vm => "vm",
                BackendKind::Namespace => "namespace",
            },
        ),
        None => Ok(()),
    }
}

/// How the guest's `/etc/resolv.conf` comes to name the DNS forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestResolver {
    /// Written by [`attach`] through the sandbox process's root (the namespace backend: the
    /// agent's root is the guest's).
    WriteThroughProcessRoot,
    /// Already written before the guest booted (the VM backend: a root patch, see
    /// [`guest_resolv_conf`]).
    WrittenAtBoot,
}

/// The guest's `/etc/resolv.conf`: the DNS forwarder in the router namespace.
pub fn guest_resolv_conf() -> String {
    format!("nameserver {}\n", nft::WIRING.gateway)
}

/// Gives the sandbox whose network namespace is process `sandbox_pid`'s the network `config`
/// asks for ([`router::Router`]); `None` when it asks for none. slirp4netns's messages go to
/// `DIR/slirp4netns.log`. On the VM backend `sandbox_pid` is the VM process: the guest's sockets
/// are its sockets (libkrun's TSI), so the router judges them as it judges a namespace's.
pub fn attach(
    config: &NetworkConfig,
    sandbox_pid: u32,
    dir: &crate::store::home::SandboxDir,
    resolver: GuestResolver,
) -> Result<Option<router::Router>, NetworkError> {
    if !config.needs_network() {
        return Ok(None);
    }
    let router = router::Router::start(config, sandbox_pid, dir.path(), resolver)?;
    tracing::info!(learned = ?router.learned(), "guest network up");
    Ok(Some(router))
}

/// The first option of `config` that asks for a guest network, as the user would write it.
fn asking_option(config: &NetworkConfig) -> String {
    match config.mode {
        NetworkMode::Public => return "--network public".to_owned(),
        NetworkMode::All => return "--network all".to_owned(),
        NetworkMode::None => {}
    }
    if config.rules.iter().any(|rule| rule.action == Action::Allow) {
        return "--allow".to_owned();
    }
    "-p".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_no_network() {
        let config = NetworkConfig::default();
        assert_eq!(config.mode, NetworkMode::None);
        assert!(!config.needs_network());
        assert!(check_backend(BackendKind::Namespace, false, &config).is_ok());
        assert!(check_backend(BackendKind::Vm, false, &config).is_ok());
    }

    #[test]
    fn deny_rules_alone_need_no_network() {
        let rule = parse::parse_rule(Action::Deny, "10.0.0.0/8").unwrap();
        let config = NetworkConfig { rules: vec![rule], ..NetworkConfig::default() };
        assert!(!config.needs_network());
    }

    #[test]
    fn the_vm_backend_takes_a_network_but_not_unprivileged_nor_on_ipv6() {
        let public = NetworkConfig { mode: NetworkMode::Public, ..NetworkConfig::default() };
        assert!(check_backend(BackendKind::Vm, false, &public).is_ok());
        let err = check_backend(BackendKind::Vm, true, &public).unwrap_err().to_string();
        assert!(err.starts_with("--network public: not built on the unprivileged vm backend"));
        let allow = NetworkConfig {
            rules: vec![parse::parse_rule(Action::Allow, "host.moat.internal:80").unwrap()],
            ..NetworkConfig::default()
        };
        assert!(check_backend(BackendKind::Vm, false, &allow).is_ok());
        let err = check_backend(BackendKind::Namespace, true, &allow).unwrap_err().to_string();
        assert!(err.starts_with("--allow: not built on the unprivileged namespace"), "{err}");
        let v6 = NetworkConfig {
            publish: vec![parse::parse_publish("[::1]:8080:80").unwrap()],
            ..NetworkConfig::default()
        };
        let err = check_backend(BackendKind::Vm, false, &v6).unwrap_err().to_string();
        assert!(err.starts_with("-p [::1]:8080:80 (an IPv6 host address): not built on the vm"));
    }

    #[test]
    fn the_guest_resolver_is_the_forwarder_in_the_router() {
        assert_eq!(guest_resolv_conf(), "nameserver 10.254.254.1\n");
    }

    #[test]
    fn the_namespace_backend_takes_modes_and_rules() {
        let config = NetworkConfig {
            mode: NetworkMode::Public,
            rules: vec![
                parse::parse_rule(Action::Allow, "host.moat.internal:80").unwrap(),
                parse::parse_rule(Action::Allow, "*.example.com:443").unwrap(),
                parse::parse_rule(Action::Deny, "203.0.113.0/24").unwrap(),
            ],
            publish: Vec::new(),
        };
        assert!(check_backend(BackendKind::Namespace, false, &config).is_ok());
    }

    #[test]
    fn what_the_namespace_backend_lacks_is_refused_not_ignored() {
        let publish = NetworkConfig {
            publish: vec![parse::parse_publish("[::1]:8080:80").unwrap()],
            ..NetworkConfig::default()
        };
        let err = check_backend(BackendKind::Namespace, false, &publish).unwrap_err().to_string();
        assert!(err.starts_with("-p [::1]:8080:80 (an IPv6 host address): not built"), "{err}");
        let v4 = NetworkConfig {
            publish: vec![parse::parse_publish("8080:80").unwrap()],
            ..NetworkConfig::default()
        };
        assert!(check_backend(BackendKind::Namespace, false, &v4).is_ok());
    }

    #[test]
    fn the_config_round_trips_through_json() {
        let config = NetworkConfig {
            mode: NetworkMode::Public,
            rules: vec![
                parse::parse_rule(Action::Allow, "*.example.com:443/tcp").unwrap(),
                parse::parse_rule(Action::Deny, "10.0.0.0/8").unwrap(),
            ],
            publish: vec![parse::parse_publish("[::1]:8080:80/udp").unwrap()],
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<NetworkConfig>(&json).unwrap(), config);
    }
}
