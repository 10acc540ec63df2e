//! The network policy as data, and the one pure decision it makes: may this flow leave the
//! sandbox? No I/O here; the namespace wiring turns the same rules into nftables rules, and the
//! DNS forwarder feeds domain rules' resolved addresses to it.
//!
//! ```text
//!  flow {addr, port, transport, names addr was resolved from}
//!    ─► rules, in order: the first whose destination, ports and transport match decides
//!    ─► else host.moat.internal's address: deny (only a rule opens it, in every mode)
//!    ─► else the mode: none ─► deny; all ─► allow;
//!                      public ─► deny non-public ranges and the host's own addresses, allow the rest
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

/// The name inside the guest that reaches the host's loopback.
pub const HOST_ALIAS_NAME: &str = "host.moat.internal";

/// `--network`: what the guest may reach when no rule decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Nothing (the default). With `--allow` rules, only what they allow.
    #[default]
    None,
    /// The public internet only: see [`is_public`].
    Public,
    /// Everything the host can reach (except `host.moat.internal`, which only a rule opens).
    All,
}

/// What a rule does to a flow it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `--allow`.
    Allow,
    /// `--deny`.
    Deny,
}

/// The transport a rule or a published port concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An inclusive port range, `first <= last`, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    /// Lowest port.
    pub first: u16,
    /// Highest port.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// What a rule's destination names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// An address or a network (an address is a /32 or /128).
    Net(IpNet),
    /// A host name, lowercase, without a trailing dot: the addresses it resolves to.
    Host(String),
    /// `*.SUFFIX`: the addresses any name strictly under `SUFFIX` resolves to (not `SUFFIX`).
    Suffix(String),
}

impl Destination {
    /// Whether the destination covers `addr`, reached through one of `names`.
    fn matches(&self, addr: IpAddr, names: &[String]) -> bool {
        match self {
            Destination::Net(net) => net.contains(&addr),
            Destination::Host(_) | Destination::Suffix(_) => self.matches_names(names),
        }
    }

    /// Whether a domain destination names one of `names` (an address destination never does).
    pub fn matches_names(&self, names: &[String]) -> bool {
        match self {
            Destination::Net(_) => false,
            Destination::Host(host) => names.iter().any(|name| name == host),
            Destination::Suffix(suffix) => names.iter().any(|name| {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }),
        }
    }
}

/// One `--allow` or `--deny`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// What it covers.
    pub dest: Destination,
    /// Only these ports (`None`: every port).
    pub ports: Option<PortRange>,
    /// Only this transport (`None`: TCP and UDP).
    pub transport: Option<Transport>,
}

impl Rule {
    /// Whether the rule decides `flow`.
    pub fn matches(&self, flow: &Flow<'_>) -> bool {
        self.ports.is_none_or(|ports| ports.contains(flow.port))
            && self.transport.is_none_or(|t| t == flow.transport)
            && self.dest.matches(flow.addr, flow.names)
    }
}

/// A connection (or datagram) the guest wants to send.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// Destination address.
    pub addr: IpAddr,
    /// Destination port.
    pub port: u16,
    /// TCP or UDP.
    pub transport: Transport,
    /// The names (lowercase, no trailing dot) the guest's resolver answered with `addr`.
    pub names: &'a [String],
}

/// What the policy knows of the host at the moment it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// The host's own addresses (denied by `public`).
    pub host_addrs: Vec<IpAddr>,
    /// The address `host.moat.internal` resolves to in the guest.
    pub alias_addr: IpAddr,
}

/// The policy's verdict on `flow`: the first matching rule, else the defaults in the module
/// diagram. The alias address counts as named `host.moat.internal` whether or not the guest
/// resolved it.
pub fn decide(mode: NetworkMode, rules: &[Rule], flow: &Flow<'_>, host: &HostView) -> Action {
    let addr = canonical(flow.addr);
    let alias_names;
    let names =
        if addr == canonical(host.alias_addr) && !flow.names.iter().any(|n| n == HOST_ALIAS_NAME) {
            alias_names = [flow.names, &[HOST_ALIAS_NAME.to_owned()]].concat();
            &alias_names[..]
        } else {
            flow.names
        };
    let flow = Flow { addr, names, ..*flow };
    if let Some(rule) = rules.iter().find(|rule| rule.matches(&flow)) {
        return rule.action;
    }
    if addr == canonical(host.alias_addr) {
        return Action::Deny;
    }
    match mode {
        NetworkMode::None => Action::Deny,
        NetworkMode::All => Action::Allow,
        NetworkMode::Public
            if is_public(addr) && !host.host_addrs.iter().any(|h| canonical(*h) == addr) =>
        {
            Action::Allow
        }
        NetworkMode::Public => Action::Deny,
    }
}

/// The networks `public` denies: loopback, RFC 1918 and IPv6 unique-local, CGNAT, link-local
/// (which holds the 169.254.169.254 metadata address), multicast, and the unspecified,
/// "this network" and reserved/broadcast ranges. Documentation ranges (TEST-NET) count as public.
pub const NON_PUBLIC_NETS: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// [`NON_PUBLIC_NETS`], parsed.
pub fn non_public_nets() -> Vec<IpNet> {
    NON_PUBLIC_NETS.iter().filter_map(|net| net.parse().ok()).collect()
}

/// Whether `addr` is outside every [`NON_PUBLIC_NETS`] network (IPv4-mapped IPv6 addresses are
/// judged as the IPv4 address they carry).
pub fn is_public(addr: IpAddr) -> bool {
    let addr = canonical(addr);
    !non_public_nets().iter().any(|net| net.contains(&addr))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; everything else unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostView {
        HostView {
            host_addrs: vec!["203.0.113.1".parse().unwrap()],
            alias_addr: "169.254.1.2".parse().unwrap(),
        }
    }

    fn tcp(addr: &str, port: u16) -> (IpAddr, u16, Transport) {
        (addr.parse().unwrap(), port, Transport::Tcp)
    }

    fn verdict(
        mode: NetworkMode,
        rules: &[Rule],
        to: (IpAddr, u16, Transport),
        names: &[&str],
    ) -> Action {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let flow = Flow { addr: to.0, port: to.1, transport: to.2, names: &names };
        decide(mode, rules, &flow, &host())
    }

    fn rule(action: Action, dest: Destination) -> Rule {
        Rule { action, dest, ports: None, transport: None }
    }

    fn net(s: &str) -> Destination {
        Destination::Net(s.parse().unwrap())
    }

    #[test]
    fn none_denies_everything_without_rules() {
        for addr in ["203.0.113.10", "10.0.0.1", "2001:db8::1"] {
            assert_eq!(verdict(NetworkMode::None, &[], tcp(addr, 80), &[]), Action::Deny, "{addr}");
        }
    }

    #[test]
    fn all_allows_private_and_public_addresses() {
        for addr in ["203.0.113.10", "10.0.0.1", "127.0.0.1", "169.254.169.254"] {
            assert_eq!(verdict(NetworkMode::All, &[], tcp(addr, 80), &[]), Action::Allow, "{addr}");
        }
    }

    #[test]
    fn public_denies_every_non_public_range() {
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(
                verdict(NetworkMode::Public, &[], tcp(addr, 443), &[]),
                Action::Deny,
                "{addr}"
            );
        }
    }

    #[test]
    fn public_allows_public_addresses_next_to_the_private_ranges() {
        for addr in [
            "203.0.113.10",
            "198.51.100.7",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "11.0.0.1",
            "2001:db8::1",
            "::ffff:203.0.113.10",
        ] {
            assert_eq!(
                verdict(NetworkMode::Public, &[], tcp(addr, 443), &[]),
                Action::Allow,
                "{addr}"
            );
        }
    }

    #[test]
    fn public_denies_the_hosts_own_addresses() {
        assert_eq!(verdict(NetworkMode::Public, &[], tcp("203.0.113.1", 22), &[]), Action::Deny);
    }

    #[test]
    fn the_host_alias_is_denied_in_every_mode_unless_a_rule_allows_it() {
        for mode in [NetworkMode::None, NetworkMode::Public, NetworkMode::All] {
            assert_eq!(verdict(mode, &[], tcp("169.254.1.2", 8080), &[]), Action::Deny, "{mode:?}");
        }
        let allow = Rule {
            ports: Some(PortRange { first: 8080, last: 8080 }),
            ..rule(Action::Allow, Destination::Host(HOST_ALIAS_NAME.into()))
        };
        let rules = [allow];
        assert_eq!(
            verdict(NetworkMode::None, &rules, tcp("169.254.1.2", 8080), &[]),
            Action::Allow
        );
        assert_eq!(verdict(NetworkMode::None, &rules, tcp("169.254.1.2", 8081), &[]), Action::Deny);
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [
            rule(Action::Deny, net("203.0.113.10/32")),
            rule(Action::Allow, net("203.0.113.0/24")),
        ];
        assert_eq!(verdict(NetworkMode::None, &rules, tcp("203.0.113.10", 80), &[]), Action::Deny);
        assert_eq!(verdict(NetworkMode::None, &rules, tcp("203.0.113.11", 80), &[]), Action::Allow);
        let reversed = [rules[1].clone(), rules[0].clone()];
        assert_eq!(
            verdict(NetworkMode::None, &reversed, tcp("203.0.113.10", 80), &[]),
            Action::Allow
        );
    }

    #[test]
    fn a_rule_can_open_a_private_range_under_public() {
        let rules = [rule(Action::Allow, net("10.0.0.0/8"))];
        assert_eq!(verdict(NetworkMode::Public, &rules, tcp("10.9.9.9", 5432), &[]), Action::Allow);
    }

    #[test]
    fn a_deny_rule_closes_a_public_address_under_all() {
        let rules = [rule(Action::Deny, net("198.51.100.0/24"))];
        assert_eq!(verdict(NetworkMode::All, &rules, tcp("198.51.100.9", 80), &[]), Action::Deny);
    }

    #[test]
    fn port_ranges_and_transports_narrow_a_rule() {
        let allow = Rule {
            ports: Some(PortRange { first: 8000, last: 8010 }),
            transport: Some(Transport::Udp),
            ..rule(Action::Allow, net("203.0.113.10/32"))
        };
        let rules = [allow];
        let udp = |port| ("203.0.113.10".parse().unwrap(), port, Transport::Udp);
        assert_eq!(verdict(NetworkMode::None, &rules, udp(8000), &[]), Action::Allow);
        assert_eq!(verdict(NetworkMode::None, &rules, udp(8010), &[]), Action::Allow);
        assert_eq!(verdict(NetworkMode::None, &rules, udp(8011), &[]), Action::Deny);
        assert_eq!(verdict(NetworkMode::None, &rules, udp(7999), &[]), Action::Deny);
        assert_eq!(
            verdict(NetworkMode::None, &rules, tcp("203.0.113.10", 8005), &[]),
            Action::Deny
        );
    }

    #[test]
    fn a_host_rule_matches_only_addresses_resolved_from_that_name() {
        let rules = [rule(Action::Allow, Destination::Host("pypi.org".into()))];
        let to = tcp("203.0.113.20", 443);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["pypi.org"]), Action::Allow);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["evil.org"]), Action::Deny);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &[]), Action::Deny);
    }

    #[test]
    fn a_suffix_rule_matches_subdomains_only() {
        let rules = [rule(Action::Allow, Destination::Suffix("example.com".into()))];
        let to = tcp("203.0.113.20", 443);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["a.example.com"]), Action::Allow);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["a.b.example.com"]), Action::Allow);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["example.com"]), Action::Deny);
        assert_eq!(verdict(NetworkMode::None, &rules, to, &["badexample.com"]), Action::Deny);
    }

    #[test]
    fn an_ipv4_rule_covers_the_ipv4_mapped_ipv6_form() {
        let rules = [rule(Action::Deny, net("203.0.113.10/32"))];
        assert_eq!(
            verdict(NetworkMode::All, &rules, tcp("::ffff:203.0.113.10", 80), &[]),
            Action::Deny
        );
    }

    #[test]
    fn every_non_public_net_parses() {
        assert_eq!(non_public_nets().len(), NON_PUBLIC_NETS.len());
    }
}
