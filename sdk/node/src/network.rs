//! `config.network` and `config.ports`: microsandbox's `NetworkConfig` and published ports,
//! mapped onto the library's `network::NetworkConfig` (what `moat create --network`, `--allow`,
//! `--deny` and `-p` build). What moat's network cannot do is refused by name.
//!
//! ```text
//!  policy "none" | "public-only" | "allow-all" ─┐ (or defaultAction "deny" | "allow")
//!                                              ├─► mode None | Public | All
//!  blockDomains [NAME]                ─► deny NAME            ┐ first, in order:
//!  blockDomainSuffixes [SUFFIX]       ─► deny SUFFIX, *.SUFFIX │ the first match wins
//!  rules [{ action, destination,      ─► one library rule per  │
//!           protocol, port }]            destination it names ┘
//!  ports { "HOSTPORT": GUESTPORT }    ─► publish 127.0.0.1:HOSTPORT → GUESTPORT (TCP)
//! ```
//!
//! A destination is `"*"`, a CIDR or address, a host name, `".example.com"` (the name and
//! every name under it), `"*.example.com"` (only the names under it), or a group: `"host"`
//! (`host.moat.internal`, the host's loopback), `"loopback"`, `"private"`, `"link-local"`,
//! `"metadata"`, `"multicast"`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use moat_runtime::network::parse::{NetworkUsageError, parse_rule};
use moat_runtime::network::policy::HOST_ALIAS_NAME;
use moat_runtime::network::{
    Action, NetworkConfig as LibNetwork, NetworkMode, PortRange, PublishedPort, Rule, Transport,
};
use napi_derive::napi;

use crate::error::{NodeError, Result};

/// What the guest may reach (`config.network`; `NetworkPolicy.none()` and the other factories
/// make the presets).
#[napi(object)]
pub struct NetworkConfig {
    /// `"none"` (moat's default), `"public-only"` or `"allow-all"` (moat's own `"public"` and
    /// `"all"` too): what the guest may reach when no rule decides.
    pub policy: Option<String>,
    /// Rules checked in order; the first that matches decides.
    pub rules: Option<Vec<PolicyRule>>,
    /// `"deny"` or `"allow"`: what no rule matches gets (instead of `policy`).
    pub default_action: Option<String>,
    /// Host names whose addresses the guest may not reach.
    pub block_domains: Option<Vec<String>>,
    /// Domains whose names (the domain and every name under it) the guest may not reach.
    pub block_domain_suffixes: Option<Vec<String>>,
    /// Not supported by moat: its DNS forwarder does not filter answers.
    #[napi(ts_type = "boolean")]
    pub dns_rebind_protection: Option<serde_json::Value>,
    /// Not supported by moat: no TLS interception.
    #[napi(ts_type = "unknown")]
    pub tls: Option<serde_json::Value>,
    /// Not supported by moat: the bound is fixed (4096 tracked connections).
    #[napi(ts_type = "number")]
    pub max_connections: Option<serde_json::Value>,
}

/// One rule of `config.network.rules`.
#[napi(object)]
pub struct PolicyRule {
    /// `"allow"` or `"deny"`.
    pub action: String,
    /// `"outbound"` (the default; moat's rules are outbound only).
    pub direction: Option<String>,
    /// What it covers (default `"*"`): see the module documentation.
    pub destination: Option<String>,
    /// `"tcp"` or `"udp"` (default: both).
    pub protocol: Option<String>,
    /// A port (`443`, `"443"`) or a range (`"8000-9000"`); default: every port.
    #[napi(ts_type = "string | number")]
    pub port: Option<serde_json::Value>,
}

/// The library's network configuration for `config.network` and `config.ports`.
pub(crate) fn network_config(
    network: Option<NetworkConfig>,
    ports: Option<HashMap<String, f64>>,
) -> Result<LibNetwork> {
    let mut config =
        LibNetwork { publish: published(ports.unwrap_or_default())?, ..LibNetwork::default() };
    let Some(network) = network else { return Ok(config) };
    let unsupported = [
        ("dnsRebindProtection", network.dns_rebind_protection.is_some()),
        ("tls", network.tls.is_some()),
        ("maxConnections", network.max_connections.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(NodeError::NotSupported(format!("config.network.{field}")));
    }
    let from_policy = network.policy.as_deref().map(mode_of_policy).transpose()?;
    let from_default = match network.default_action.as_deref() {
        None => None,
        Some("deny") => Some(NetworkMode::None),
        Some("allow") => Some(NetworkMode::All),
        Some(other) => {
            return Err(NodeError::InvalidArgument(format!(
                "config.network.defaultAction must be \"allow\" or \"deny\", not {other:?}"
            )));
        }
    };
    config.mode = match (from_policy, from_default) {
        (Some(policy), Some(default)) if policy != default => {
            return Err(NodeError::InvalidArgument(
                "config.network.policy and config.network.defaultAction disagree: give one".into(),
            ));
        }
        (policy, default) => default.or(policy).unwrap_or(NetworkMode::None),
    };
    for (i, name) in network.block_domains.unwrap_or_default().iter().enumerate() {
        let at = format!("config.network.blockDomains[{i}]");
        config.rules.push(rule(Action::Deny, name, &at)?);
    }
    for (i, suffix) in network.block_domain_suffixes.unwrap_or_default().iter().enumerate() {
        let at = format!("config.network.blockDomainSuffixes[{i}]");
        let apex = suffix.trim_start_matches("*.").trim_start_matches('.');
        config.rules.push(rule(Action::Deny, apex, &at)?);
        config.rules.push(rule(Action::Deny, &format!("*.{apex}"), &at)?);
    }
    for (i, given) in network.rules.unwrap_or_default().into_iter().enumerate() {
        config.rules.extend(policy_rule(given, &format!("config.network.rules[{i}]"))?);
    }
    Ok(config)
}

fn mode_of_policy(policy: &str) -> Result<NetworkMode> {
    match policy {
        "none" => Ok(NetworkMode::None),
        "public-only" | "public" => Ok(NetworkMode::Public),
        "allow-all" | "all" => Ok(NetworkMode::All),
        "non-local" => Err(NodeError::NotSupported("config.network.policy \"non-local\"".into())),
        other => Err(NodeError::InvalidArgument(format!(
            "config.network.policy must be \"none\", \"public-only\" or \"allow-all\", not {other:?}"
        ))),
    }
}

/// A library rule for one destination in the CLI's syntax (`10.0.0.0/8`, `example.com`,
/// `*.example.com`), with no port or transport yet.
fn rule(action: Action, destination: &str, at: &str) -> Result<Rule> {
    parse_rule(action, destination).map_err(|err| match err {
        NetworkUsageError::BadRule { problem, .. } => {
            NodeError::InvalidArgument(format!("{at}: {destination:?}: {problem}"))
        }
        other => NodeError::InvalidArgument(format!("{at}: {other}")),
    })
}

/// The library rules for one `PolicyRule`: one per network or name its destination covers.
fn policy_rule(given: PolicyRule, at: &str) -> Result<Vec<Rule>> {
    let action = match given.action.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => {
            return Err(NodeError::InvalidArgument(format!(
                "{at}.action must be \"allow\" or \"deny\", not {other:?}"
            )));
        }
    };
    match given.direction.as_deref() {
        None | Some("outbound") | Some("egress") => {}
        Some(direction @ ("inbound" | "ingress" | "any")) => {
            return Err(NodeError::NotSupported(format!("{at}.direction {direction:?}")));
        }
        Some(other) => {
            return Err(NodeError::InvalidArgument(format!(
                "{at}.direction must be \"outbound\" or \"inbound\", not {other:?}"
            )));
        }
    }
    let transport = match given.protocol.as_deref() {
        None => None,
        Some("tcp") => Some(Transport::Tcp),
        Some("udp") => Some(Transport::Udp),
        Some(protocol @ ("icmpv4" | "icmpv6")) => {
            return Err(NodeError::NotSupported(format!("{at}.protocol {protocol:?}")));
        }
        Some(other) => {
            return Err(NodeError::InvalidArgument(format!(
                "{at}.protocol must be \"tcp\" or \"udp\", not {other:?}"
            )));
        }
    };
    let ports = given.port.as_ref().map(|port| port_range(port, at)).transpose()?;
    let destination = given.destination.as_deref().unwrap_or("*");
    let texts: Vec<String> = match destination {
        "*" => vec!["0.0.0.0/0".into(), "::/0".into()],
        "host" => vec![HOST_ALIAS_NAME.into()],
        "loopback" => vec!["127.0.0.0/8".into(), "::1".into()],
        "private" => ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]
            .map(String::from)
            .to_vec(),
        "link-local" => vec!["169.254.0.0/16".into(), "fe80::/10".into()],
        "metadata" => vec!["169.254.169.254".into()],
        "multicast" => vec!["224.0.0.0/4".into(), "ff00::/8".into()],
        "public" => {
            return Err(NodeError::NotSupported(format!(
                "{at}.destination \"public\" (use policy \"public-only\")"
            )));
        }
        // microsandbox's suffix form matches the domain itself and every name under it.
        suffix if suffix.starts_with('.') => {
            let apex = &suffix[1..];
            vec![apex.to_owned(), format!("*.{apex}")]
        }
        other => vec![other.to_owned()],
    };
    let at = format!("{at}.destination");
    texts
        .iter()
        .map(|text| {
            let mut rule = rule(action, text, &at)?;
            rule.ports = ports;
            rule.transport = transport;
            Ok(rule)
        })
        .collect()
}

/// `443`, `"443"` or `"8000-9000"`.
fn port_range(port: &serde_json::Value, at: &str) -> Result<PortRange> {
    let bad = || {
        NodeError::InvalidArgument(format!(
            "{at}.port must be a port (1..=65535) or a range \"LOW-HIGH\", not {port}"
        ))
    };
    let one = |text: &str| text.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (first, last) = match port {
        serde_json::Value::Number(n) => {
            let p = n.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|p| *p > 0);
            let p = p.ok_or_else(bad)?;
            (p, p)
        }
        serde_json::Value::String(text) => match text.split_once('-') {
            Some((low, high)) => (one(low).ok_or_else(bad)?, one(high).ok_or_else(bad)?),
            None => {
                let p = one(text).ok_or_else(bad)?;
                (p, p)
            }
        },
        _ => return Err(bad()),
    };
    if first > last {
        return Err(bad());
    }
    Ok(PortRange { first, last })
}

/// `ports`: `{ "HOSTPORT": GUESTPORT }`, each published on 127.0.0.1 over TCP.
fn published(ports: HashMap<String, f64>) -> Result<Vec<PublishedPort>> {
    let mut out = Vec::new();
    for (host, guest) in ports {
        let host_port = host.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            NodeError::InvalidArgument(format!(
                "config.ports: the key {host:?} is not a host port (1..=65535)"
            ))
        })?;
        let guest_port = Some(guest)
            .filter(|g| g.fract() == 0.0 && (1.0..=65535.0).contains(g))
            .map(|g| g as u16)
            .ok_or_else(|| {
                NodeError::InvalidArgument(format!(
                    "config.ports[{host:?}] must be a guest port (1..=65535), not {guest}"
                ))
            })?;
        out.push(PublishedPort {
            host_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port,
            guest_port,
            transport: Transport::Tcp,
        });
    }
    out.sort_by_key(|p| p.host_port);
    Ok(out)
}
