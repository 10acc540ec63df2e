//! The router namespace's nftables ruleset, as text for `nft -f -`. Pure: the same
//! [`NetworkConfig`] gives the same ruleset, so every rule's translation is unit-tested here, and
//! [`super::policy::decide`] is the specification each translation follows.
//!
//! ```text
//!  table inet moat
//!    prerouting (dstnat)  guest ─► ALIAS ─► dnat to slirp4netns's gateway (= the host's loopback)
//!                         slirp4netns's side, a published port P ─► dnat to GUEST:guest port
//!    forward (filter, policy drop)
//!      established, related ─► accept; to the guest after a published port's dnat ─► accept
//!      from the guest, new, over MAX_GUEST_CONNECTIONS tracked ─► drop
//!      the rules, in order, on the ORIGINAL destination (before the alias's dnat)
//!      ALIAS or slirp4netns's gateway ─► drop     (host.moat.internal only by a rule)
//!      the mode: none ─► drop; public ─► drop NON_PUBLIC_NETS and the host's addresses, accept;
//!                all ─► accept
//!    input (filter, policy drop): established; loopback; the guest's DNS to the gateway
//!    postrouting (srcnat) out of slirp4netns's side ─► masquerade
//!  a domain rule N matches the set dN, which the DNS forwarder fills with the addresses its
//!  answers name (timeout: the answer's TTL, clamped)
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::policy::{
    Action, Destination, HOST_ALIAS_NAME, NON_PUBLIC_NETS, NetworkMode, Rule, Transport,
};
use super::{NetworkConfig, PublishedPort};

/// The table moat owns in the router namespace.
pub const TABLE: &str = "moat";

/// The router's end of the pair that links it to the sandbox.
pub const ROUTER_IFNAME: &str = "moat-r";

/// Most connections the guest may have tracked at once through the router; past it, new ones
/// are dropped (the guest sees timeouts), never the sandbox process.
pub const MAX_GUEST_CONNECTIONS: u32 = 4096;

/// The addresses of the wiring between the sandbox and the router (IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// The router's address on the pair: the guest's gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// The guest's address.
    pub guest: Ipv4Addr,
    /// Prefix length of the pair's subnet.
    pub prefix: u8,
    /// What `host.moat.internal` resolves to: outside the pair's subnet, so routed to the router.
    pub alias: Ipv4Addr,
}

/// The wiring every sandbox uses: each sandbox has its own router namespace, so they never meet.
pub const WIRING: Wiring = Wiring {
    gateway: Ipv4Addr::new(10, 254, 254, 1),
    guest: Ipv4Addr::new(10, 254, 254, 2),
    prefix: 30,
    alias: Ipv4Addr::new(10, 254, 254, 5),
};

/// What the router learned at start: slirp4netns's gateway (mapped to the host's loopback)
/// and the host's own addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The gateway slirp4netns maps to the host's loopback.
    pub upstream_gateway: Ipv4Addr,
    /// slirp4netns's network (its gateway, DNS and the router's own tap address): never reached
    /// directly by the guest.
    pub upstream_net: ipnet::Ipv4Net,
    /// The host's addresses (`public` denies them).
    pub host_addrs: Vec<IpAddr>,
}

/// The name of the set domain rule `index` matches.
pub fn domain_set(index: usize) -> String {
    format!("d{index}")
}

/// The whole ruleset for `config`.
pub fn ruleset(config: &NetworkConfig, wiring: &Wiring, learned: &Learned) -> String {
    let mut out = String::new();
    let r = ROUTER_IFNAME;
    let _ = writeln!(out, "table inet {TABLE} {{");
    for (index, rule) in config.rules.iter().enumerate() {
        if needs_set(rule) {
            let _ =
                writeln!(out, "  set {} {{ type ipv4_addr; flags timeout; }}", domain_set(index));
        }
    }
    let _ = writeln!(
        out,
        "  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(
        out,
        "    iifname \"{r}\" ip daddr {} dnat ip to {}",
        wiring.alias, learned.upstream_gateway
    );
    for p in &config.publish {
        let _ = writeln!(
            out,
            "    iifname != \"{r}\" {} dnat ip to {}:{}",
            published_match(p),
            wiring.guest,
            p.guest_port
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(
        out,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(out, "    oifname != \"{r}\" masquerade");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  chain input {{ type filter hook input priority filter; policy drop;");
    let _ = writeln!(out, "    ct state established,related accept");
    let _ = writeln!(out, "    iifname \"lo\" accept");
    let _ = writeln!(
        out,
        "    iifname \"{r}\" ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
        wiring.gateway
    );
    let _ = writeln!(out, "  }}");
    let _ =
        writeln!(out, "  chain forward {{ type filter hook forward priority filter; policy drop;");
    let _ = writeln!(out, "    ct state established,related accept");
    let _ = writeln!(out, "    oifname \"{r}\" ct status dnat accept");
    let _ = writeln!(
        out,
        "    iifname \"{r}\" ct state new ct count over {MAX_GUEST_CONNECTIONS} drop"
    );
    for (index, rule) in config.rules.iter().enumerate() {
        let _ = writeln!(out, "    iifname \"{r}\" {}", rule_line(index, rule, wiring));
    }
    let _ = writeln!(
        out,
        "    iifname \"{r}\" ct original ip daddr {{ {}, {} }} drop",
        wiring.alias, learned.upstream_net
    );
    for line in mode_lines(config.mode, &learned.host_addrs) {
        let _ = writeln!(out, "    iifname \"{r}\" {line}");
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    out
}

/// The match of a published port's traffic as it enters the router: its transport and R's port
/// (slirp4netns forwards the host port to the same port in R).
fn published_match(p: &PublishedPort) -> String {
    let transport = match p.transport {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    };
    format!("meta l4proto {transport} th dport {}", p.host_port)
}

/// Whether `rule` matches a set the DNS forwarder fills.
pub fn needs_set(rule: &Rule) -> bool {
    match &rule.dest {
        Destination::Host(name) => name != HOST_ALIAS_NAME,
        Destination::Suffix(_) => true,
        Destination::Net(_) => false,
    }
}

/// One rule of the forward chain (without the interface match).
fn rule_line(index: usize, rule: &Rule, wiring: &Wiring) -> String {
    let dest = match &rule.dest {
        Destination::Net(net) => match net.addr() {
            IpAddr::V4(_) => format!("ct original ip daddr {net}"),
            IpAddr::V6(_) => format!("ct original ip6 daddr {net}"),
        },
        Destination::Host(name) if name == HOST_ALIAS_NAME => {
            format!("ct original ip daddr {}", wiring.alias)
        }
        Destination::Host(_) | Destination::Suffix(_) => {
            format!("ct original ip daddr @{}", domain_set(index))
        }
    };
    let transport = match (rule.transport, rule.ports.is_some()) {
        (Some(Transport::Tcp), _) => " meta l4proto tcp",
        (Some(Transport::Udp), _) => " meta l4proto udp",
        (None, true) => " meta l4proto { tcp, udp }",
        (None, false) => "",
    };
    let ports = match rule.ports {
        Some(p) if p.first == p.last => format!(" th dport {}", p.first),
        Some(p) => format!(" th dport {}-{}", p.first, p.last),
        None => String::new(),
    };
    let verdict = match rule.action {
        Action::Allow => "accept",
        Action::Deny => "drop",
    };
    format!("{dest}{transport}{ports} {verdict}")
}

/// The forward chain's last lines: the mode's default.
fn mode_lines(mode: NetworkMode, host_addrs: &[IpAddr]) -> Vec<String> {
    match mode {
        NetworkMode::None => vec!["drop".to_owned()],
        NetworkMode::All => vec!["accept".to_owned()],
        NetworkMode::Public => {
            let (v4, v6): (Vec<&str>, Vec<&str>) =
                NON_PUBLIC_NETS.iter().partition(|net| !net.contains(':'));
            let mut lines = vec![
                format!("ct original ip daddr {{ {} }} drop", v4.join(", ")),
                format!("ct original ip6 daddr {{ {} }} drop", v6.join(", ")),
            ];
            let host4: Vec<String> =
                host_addrs.iter().filter(|a| a.is_ipv4()).map(IpAddr::to_string).collect();
            let host6: Vec<String> =
                host_addrs.iter().filter(|a| a.is_ipv6()).map(IpAddr::to_string).collect();
            if !host4.is_empty() {
                lines.push(format!("ct original ip daddr {{ {} }} drop", host4.join(", ")));
            }
            if !host6.is_empty() {
                lines.push(format!("ct original ip6 daddr {{ {} }} drop", host6.join(", ")));
            }
            lines.push("accept".to_owned());
            lines
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse::parse_rule;

    fn learned() -> Learned {
        Learned {
            upstream_gateway: Ipv4Addr::new(10, 0, 2, 2),
            upstream_net: "10.0.2.0/24".parse().unwrap(),
            host_addrs: vec!["203.0.113.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        }
    }

    fn config(mode: NetworkMode, rules: &[(Action, &str)]) -> NetworkConfig {
        NetworkConfig {
            mode,
            rules: rules.iter().map(|(a, v)| parse_rule(*a, v).unwrap()).collect(),
            publish: Vec::new(),
        }
    }

    fn forward_lines(text: &str) -> Vec<String> {
        let start = text.find("chain forward").unwrap();
        text[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != "}")
            .map(|l| l.trim().to_owned())
            .collect()
    }

    #[test]
    fn none_drops_after_the_alias_line() {
        let lines = forward_lines(&ruleset(&config(NetworkMode::None, &[]), &WIRING, &learned()));
        assert_eq!(lines.last().unwrap(), "iifname \"moat-r\" drop");
        assert!(
            lines.contains(
                &"iifname \"moat-r\" ct original ip daddr { 10.254.254.5, 10.0.2.0/24 } drop"
                    .to_owned()
            )
        );
    }

    #[test]
    fn rules_come_in_order_before_the_defaults() {
        let text = ruleset(
            &config(
                NetworkMode::All,
                &[(Action::Deny, "10.0.0.0/8:80-90/tcp"), (Action::Allow, "[2001:db8::/32]:443")],
            ),
            &WIRING,
            &learned(),
        );
        let lines = forward_lines(&text);
        let deny = lines
            .iter()
            .position(|l| {
                l.ends_with("ct original ip daddr 10.0.0.0/8 meta l4proto tcp th dport 80-90 drop")
            })
            .unwrap();
        let allow = lines.iter().position(|l| l.ends_with("ct original ip6 daddr 2001:db8::/32 meta l4proto { tcp, udp } th dport 443 accept")).unwrap();
        let alias = lines.iter().position(|l| l.contains("10.254.254.5, 10.0.2.0/24")).unwrap();
        assert!(deny < allow && allow < alias, "{lines:?}");
        assert_eq!(lines.last().unwrap(), "iifname \"moat-r\" accept");
    }

    #[test]
    fn the_alias_rule_names_the_alias_address_and_needs_no_set() {
        let cfg = config(NetworkMode::None, &[(Action::Allow, "host.moat.internal:8080")]);
        let text = ruleset(&cfg, &WIRING, &learned());
        assert!(!needs_set(&cfg.rules[0]));
        assert!(
            text.contains(
                "ct original ip daddr 10.254.254.5 meta l4proto { tcp, udp } th dport 8080 accept"
            ),
            "{text}"
        );
        assert!(text.contains("ip daddr 10.254.254.5 dnat ip to 10.0.2.2"), "{text}");
    }

    #[test]
    fn a_domain_rule_matches_its_own_set() {
        let cfg = config(
            NetworkMode::None,
            &[(Action::Deny, "10.0.0.1"), (Action::Allow, "*.example.com/udp")],
        );
        let text = ruleset(&cfg, &WIRING, &learned());
        assert!(text.contains("set d1 { type ipv4_addr; flags timeout; }"), "{text}");
        assert!(!text.contains("set d0"), "{text}");
        assert!(text.contains("ct original ip daddr @d1 meta l4proto udp accept"), "{text}");
        assert!(text.contains("ct original ip daddr 10.0.0.1/32 drop"), "{text}");
    }

    #[test]
    fn public_drops_every_non_public_net_and_the_host() {
        let lines = forward_lines(&ruleset(&config(NetworkMode::Public, &[]), &WIRING, &learned()));
        let joined = lines.join("\n");
        for net in NON_PUBLIC_NETS {
            assert!(joined.contains(net), "{net}: {joined}");
        }
        assert!(joined.contains("ct original ip daddr { 203.0.113.1 } drop"), "{joined}");
        assert!(joined.contains("ct original ip6 daddr { 2001:db8::1 } drop"), "{joined}");
        assert_eq!(lines.last().unwrap(), "iifname \"moat-r\" accept");
    }

    #[test]
    fn a_published_port_is_sent_on_to_the_guest() {
        let mut cfg = config(NetworkMode::None, &[]);
        cfg.publish = vec![crate::network::parse::parse_publish("8080:80").unwrap()];
        let text = ruleset(&cfg, &WIRING, &learned());
        assert!(
            text.contains(
                "iifname != \"moat-r\" meta l4proto tcp th dport 8080 dnat ip to 10.254.254.2:80"
            ),
            "{text}"
        );
        assert!(text.contains("oifname \"moat-r\" ct status dnat accept"), "{text}");
    }

    #[test]
    fn the_guest_may_only_reach_the_routers_dns() {
        let text = ruleset(&config(NetworkMode::All, &[]), &WIRING, &learned());
        let input = &text[text.find("chain input").unwrap()..text.find("chain forward").unwrap()];
        assert!(input.contains("policy drop"));
        assert!(
            input.contains("ip daddr 10.254.254.1 meta l4proto { tcp, udp } th dport 53 accept"),
            "{input}"
        );
    }
}
