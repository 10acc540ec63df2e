//! The network options' values, parsed: `--network MODE`, `--allow DEST` / `--deny DEST`,
//! `-p [HOSTIP:]HOSTPORT:GUESTPORT[/udp]`. Pure functions; a value that cannot be used is a
//! [`NetworkUsageError`] naming the option, the value and what is wrong with it.
//!
//! ```text
//!  DEST  = ( CIDR | IP | NAME | *.NAME ) [ :PORT | :PORT-PORT ] [ /tcp | /udp ]
//!          an IPv6 address or network takes a port only in brackets: [2001:db8::/32]:443
//!  -p      [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]   HOSTIP defaults to 127.0.0.1;
//!          an IPv6 HOSTIP is bracketed: [::1]:8080:80
//! ```

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::policy::{Action, Destination, NetworkMode, PortRange, Rule, Transport};

/// The address a published port binds on the host when `-p` names none.
pub const DEFAULT_PUBLISH_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Longest host name a rule may hold (DNS's limit).
pub const MAX_HOST_NAME_BYTES: usize = 253;

/// Longest label of a host name.
pub const MAX_LABEL_BYTES: usize = 63;

/// `-p`: a host port forwarded to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedPort {
    /// The host address the listener binds.
    pub host_addr: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The guest port connections are forwarded to.
    pub guest_port: u16,
    /// TCP or UDP.
    pub transport: Transport,
}

/// A network option value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkUsageError {
    /// An unknown `--network` mode.
    #[error("--network {0:?}: expected none, public or all")]
    BadMode(String),
    /// A malformed `--allow` / `--deny` destination.
    #[error("{option} {value:?}: {problem}")]
    BadRule {
        /// `--allow` or `--deny`.
        option: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A malformed `-p`.
    #[error("-p {value:?}: {problem}")]
    BadPublish {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// Two `-p` publish the same host port and transport.
    #[error("-p {0:?}: that host port and transport are already published")]
    DuplicatePublish(String),
}

/// What is wrong with a rule or a `-p` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Nothing before the port or transport.
    #[error("no destination given")]
    Empty,
    /// A transport other than tcp or udp after `/`.
    #[error("the transport after '/' must be tcp or udp")]
    BadTransport,
    /// A port that is not 1..=65535.
    #[error("a port must be a number from 1 to 65535")]
    BadPort,
    /// `A-B` with `A > B`.
    #[error("a port range must run from low to high (PORT-PORT)")]
    BackwardsRange,
    /// `[...]` not closed, or followed by something other than `:PORT`.
    #[error("a bracketed IPv6 destination is written [ADDR]:PORT")]
    BadBrackets,
    /// Not an address, a network or a valid host name.
    #[error("expected a CIDR, an IP address, a host name or *.suffix")]
    BadDestination,
    /// A network with host bits set (`10.0.0.1/8`).
    #[error("a network must not have host bits set (write its first address)")]
    HostBitsSet,
    /// `-p` with the wrong number of parts.
    #[error("expected [HOSTIP:]HOSTPORT:GUESTPORT[/udp]")]
    BadPublishShape,
    /// `-p` with a host address that does not parse.
    #[error("the host address is not an IP address")]
    BadHostAddr,
}

/// `--network MODE`.
pub fn parse_mode(value: &str) -> Result<NetworkMode, NetworkUsageError> {
    match value {
        "none" => Ok(NetworkMode::None),
        "public" => Ok(NetworkMode::Public),
        "all" => Ok(NetworkMode::All),
        other => Err(NetworkUsageError::BadMode(other.to_owned())),
    }
}

/// `--allow DEST` (`Action::Allow`) or `--deny DEST`.
pub fn parse_rule(action: Action, value: &str) -> Result<Rule, NetworkUsageError> {
    let option = match action {
        Action::Allow => "--allow",
        Action::Deny => "--deny",
    };
    let bad = |problem| NetworkUsageError::BadRule { option, value: value.to_owned(), problem };
    let (rest, transport) = split_transport(value).map_err(bad)?;
    let (dest, ports) = split_ports(rest).map_err(bad)?;
    let dest = parse_destination(dest).map_err(bad)?;
    let ports = ports.map(parse_port_range).transpose().map_err(bad)?;
    Ok(Rule { action, dest, ports, transport })
}

/// `-p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]`.
pub fn parse_publish(value: &str) -> Result<PublishedPort, NetworkUsageError> {
    let bad = |problem| NetworkUsageError::BadPublish { value: value.to_owned(), problem };
    let (rest, transport) = split_transport(value).map_err(bad)?;
    let (host_addr, ports) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (addr, after) = bracketed.split_once(']').ok_or(bad(Problem::BadBrackets))?;
        let ports = after.strip_prefix(':').ok_or(bad(Problem::BadBrackets))?;
        (Some(addr), ports)
    } else {
        match rest.matches(':').count() {
            1 => (None, rest),
            2 => rest
                .split_once(':')
                .map(|(a, p)| (Some(a), p))
                .ok_or(bad(Problem::BadPublishShape))?,
            _ => return Err(bad(Problem::BadPublishShape)),
        }
    };
    let host_addr = match host_addr {
        Some(addr) => addr.parse().map_err(|_| bad(Problem::BadHostAddr))?,
        None => DEFAULT_PUBLISH_ADDR,
    };
    let (host_port, guest_port) = ports.split_once(':').ok_or(bad(Problem::BadPublishShape))?;
    Ok(PublishedPort {
        host_addr,
        host_port: parse_port(host_port).map_err(bad)?,
        guest_port: parse_port(guest_port).map_err(bad)?,
        transport: transport.unwrap_or(Transport::Tcp),
    })
}

/// Refuses a `-p` list that publishes one host port and transport twice, even on two host
/// addresses (the router tells published ports apart by port alone).
pub fn check_published(ports: &[PublishedPort]) -> Result<(), NetworkUsageError> {
    for (i, port) in ports.iter().enumerate() {
        let clash = ports[..i]
            .iter()
            .any(|p| p.host_port == port.host_port && p.transport == port.transport);
        if clash {
            return Err(NetworkUsageError::DuplicatePublish(format!(
                "{}:{}:{}",
                port.host_addr, port.host_port, port.guest_port
            )));
        }
    }
    Ok(())
}

/// Splits a trailing `/tcp` or `/udp` off; a `/` followed by digits is a CIDR prefix, not a
/// transport.
fn split_transport(value: &str) -> Result<(&str, Option<Transport>), Problem> {
    let Some((rest, suffix)) = value.rsplit_once('/') else {
        return Ok((value, None));
    };
    match suffix.to_ascii_lowercase().as_str() {
        "tcp" => Ok((rest, Some(Transport::Tcp))),
        "udp" => Ok((rest, Some(Transport::Udp))),
        // `10.0.0.0/8` or `10.0.0.0/8:5432`: a prefix length, maybe followed by ports.
        s if s
            .split(':')
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok((value, None))
        }
        // `[2001:db8::/32]:443`: the prefix sits inside the brackets, followed by the port.
        s if value.starts_with('[') && s.contains(']') => Ok((value, None)),
        _ => Err(Problem::BadTransport),
    }
}

/// Splits `DEST[:PORTS]`; a bare IPv6 address or network (two or more colons) has no port.
fn split_ports(value: &str) -> Result<(&str, Option<&str>), Problem> {
    if let Some(bracketed) = value.strip_prefix('[') {
        let (dest, after) = bracketed.split_once(']').ok_or(Problem::BadBrackets)?;
        return match after {
            "" => Ok((dest, None)),
            _ => {
                after.strip_prefix(':').map(|ports| (dest, Some(ports))).ok_or(Problem::BadBrackets)
            }
        };
    }
    if value.matches(':').count() >= 2 {
        return Ok((value, None));
    }
    Ok(match value.split_once(':') {
        Some((dest, ports)) => (dest, Some(ports)),
        None => (value, None),
    })
}

/// A CIDR, an address, `*.suffix` or a host name.
fn parse_destination(dest: &str) -> Result<Destination, Problem> {
    if dest.is_empty() {
        return Err(Problem::Empty);
    }
    if dest.contains('/') {
        let net: IpNet = dest.parse().map_err(|_| Problem::BadDestination)?;
        if net.trunc() != net {
            return Err(Problem::HostBitsSet);
        }
        return Ok(Destination::Net(net));
    }
    if let Ok(addr) = dest.parse::<IpAddr>() {
        return Ok(Destination::Net(IpNet::from(addr)));
    }
    let name = dest.strip_suffix('.').unwrap_or(dest).to_ascii_lowercase();
    if let Some(suffix) = name.strip_prefix("*.") {
        return valid_host_name(suffix)
            .then(|| Destination::Suffix(suffix.to_owned()))
            .ok_or(Problem::BadDestination);
    }
    valid_host_name(&name).then_some(Destination::Host(name)).ok_or(Problem::BadDestination)
}

/// Letters, digits and inner hyphens in labels of 1..=63 bytes, at most 253 in all; the last
/// label not all digits (so a mistyped address like `10.0.0.300` is not taken for a name).
fn valid_host_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_BYTES).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= MAX_HOST_NAME_BYTES
        && name.split('.').all(label_ok)
        && !name.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// `PORT` or `PORT-PORT`.
fn parse_port_range(ports: &str) -> Result<PortRange, Problem> {
    let (first, last) = match ports.split_once('-') {
        Some((first, last)) => (parse_port(first)?, parse_port(last)?),
        None => {
            let port = parse_port(ports)?;
            (port, port)
        }
    };
    if first > last {
        return Err(Problem::BackwardsRange);
    }
    Ok(PortRange { first, last })
}

/// 1..=65535, digits only.
fn parse_port(port: &str) -> Result<u16, Problem> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::BadPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(Problem::BadPort),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(value: &str) -> Result<Rule, NetworkUsageError> {
        parse_rule(Action::Allow, value)
    }

    fn problem(value: &str) -> Problem {
        match allow(value) {
            Err(NetworkUsageError::BadRule { problem, .. }) => problem,
            other => panic!("{value}: {other:?}"),
        }
    }

    fn net(s: &str) -> Destination {
        Destination::Net(s.parse().unwrap())
    }

    fn range(first: u16, last: u16) -> Option<PortRange> {
        Some(PortRange { first, last })
    }

    #[test]
    fn modes_parse_and_an_unknown_one_is_named() {
        assert_eq!(parse_mode("none"), Ok(NetworkMode::None));
        assert_eq!(parse_mode("public"), Ok(NetworkMode::Public));
        assert_eq!(parse_mode("all"), Ok(NetworkMode::All));
        let err = parse_mode("bridge").unwrap_err();
        assert_eq!(err.to_string(), "--network \"bridge\": expected none, public or all");
    }

    #[test]
    fn an_ipv4_address_is_a_single_host_network() {
        let rule = allow("203.0.113.10").unwrap();
        assert_eq!((rule.dest, rule.ports, rule.transport), (net("203.0.113.10/32"), None, None));
    }

    #[test]
    fn a_cidr_with_port_range_and_transport_parses() {
        let rule = parse_rule(Action::Deny, "10.0.0.0/8:8000-8080/udp").unwrap();
        assert_eq!(rule.action, Action::Deny);
        assert_eq!(rule.dest, net("10.0.0.0/8"));
        assert_eq!((rule.ports, rule.transport), (range(8000, 8080), Some(Transport::Udp)));
    }

    #[test]
    fn a_cidr_alone_keeps_its_prefix() {
        assert_eq!(allow("192.168.0.0/16").unwrap().dest, net("192.168.0.0/16"));
        assert_eq!(allow("192.168.0.0/16/tcp").unwrap().transport, Some(Transport::Tcp));
        let rule = allow("10.0.0.0/8:5432").unwrap();
        assert_eq!((rule.dest, rule.ports), (net("10.0.0.0/8"), range(5432, 5432)));
    }

    #[test]
    fn a_bare_ipv6_address_or_network_takes_no_port() {
        assert_eq!(allow("2001:db8::1").unwrap().dest, net("2001:db8::1/128"));
        assert_eq!(allow("2001:db8::/32").unwrap().dest, net("2001:db8::/32"));
        assert_eq!(allow("::1/tcp").unwrap().transport, Some(Transport::Tcp));
    }

    #[test]
    fn a_bracketed_ipv6_destination_takes_a_port() {
        let rule = allow("[2001:db8::1]:443").unwrap();
        assert_eq!((rule.dest, rule.ports), (net("2001:db8::1/128"), range(443, 443)));
        let rule = allow("[2001:db8::/32]:443-444/udp").unwrap();
        assert_eq!(rule.dest, net("2001:db8::/32"));
        assert_eq!((rule.ports, rule.transport), (range(443, 444), Some(Transport::Udp)));
        assert_eq!(problem("[2001:db8::1"), Problem::BadBrackets);
        assert_eq!(problem("[2001:db8::1]443"), Problem::BadBrackets);
    }

    #[test]
    fn host_names_are_lowercased_without_the_trailing_dot() {
        let rule = allow("PyPI.org.:443/tcp").unwrap();
        assert_eq!(rule.dest, Destination::Host("pypi.org".into()));
        assert_eq!((rule.ports, rule.transport), (range(443, 443), Some(Transport::Tcp)));
        assert_eq!(
            allow("host.moat.internal:8080").unwrap().dest,
            Destination::Host("host.moat.internal".into())
        );
        assert_eq!(allow("localhost").unwrap().dest, Destination::Host("localhost".into()));
    }

    #[test]
    fn a_wildcard_is_a_suffix() {
        assert_eq!(allow("*.Example.com").unwrap().dest, Destination::Suffix("example.com".into()));
        assert_eq!(problem("*.example..com"), Problem::BadDestination);
        assert_eq!(problem("*example.com"), Problem::BadDestination);
        assert_eq!(problem("a.*.com"), Problem::BadDestination);
    }

    #[test]
    fn malformed_destinations_are_refused() {
        for value in
            ["exa_mple.com", "-a.com", "a-.com", "a..b", "10.0.0.300", "1.2.3", "host name"]
        {
            assert_eq!(problem(value), Problem::BadDestination, "{value}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(problem(&long_label), Problem::BadDestination);
        let long_name = vec!["a".repeat(60); 5].join(".");
        assert_eq!(problem(&long_name), Problem::BadDestination);
        assert_eq!(problem("300.0.0.0/8"), Problem::BadDestination);
        assert_eq!(problem("10.0.0.0/33"), Problem::BadDestination);
    }

    #[test]
    fn a_network_with_host_bits_is_refused() {
        assert_eq!(problem("10.0.0.1/8"), Problem::HostBitsSet);
    }

    #[test]
    fn empty_destination_is_refused() {
        assert_eq!(problem(""), Problem::Empty);
        assert_eq!(problem(":80"), Problem::Empty);
        assert_eq!(problem("/tcp"), Problem::Empty);
    }

    #[test]
    fn bad_ports_are_refused() {
        for value in [
            "a.com:0",
            "a.com:65536",
            "a.com:",
            "a.com:x",
            "a.com:+1",
            "a.com:1-",
            "a.com:-1",
            "a.com:1-2-3",
        ] {
            assert_eq!(problem(value), Problem::BadPort, "{value}");
        }
        assert_eq!(problem("a.com:90-80"), Problem::BackwardsRange);
        assert_eq!(allow("a.com:1-65535").unwrap().ports, range(1, 65535));
    }

    #[test]
    fn a_bad_transport_is_refused() {
        assert_eq!(problem("a.com:80/sctp"), Problem::BadTransport);
        assert_eq!(problem("a.com/"), Problem::BadTransport);
        assert_eq!(allow("a.com/UDP").unwrap().transport, Some(Transport::Udp));
    }

    #[test]
    fn the_error_names_the_option_and_the_value() {
        let err = parse_rule(Action::Deny, "a.com:99999").unwrap_err().to_string();
        assert_eq!(err, "--deny \"a.com:99999\": a port must be a number from 1 to 65535");
    }

    #[test]
    fn publish_defaults_to_loopback_and_tcp() {
        let port = parse_publish("8080:80").unwrap();
        assert_eq!(
            port,
            PublishedPort {
                host_addr: DEFAULT_PUBLISH_ADDR,
                host_port: 8080,
                guest_port: 80,
                transport: Transport::Tcp
            }
        );
    }

    #[test]
    fn publish_takes_a_host_address_and_udp() {
        let port = parse_publish("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!(port.host_addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!((port.host_port, port.guest_port, port.transport), (5353, 53, Transport::Udp));
        let port = parse_publish("[::1]:8080:80").unwrap();
        assert_eq!(port.host_addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_publish_values_are_refused_with_the_reason() {
        let cases = [
            ("80", Problem::BadPublishShape),
            ("1:2:3:4", Problem::BadPublishShape),
            ("host:80:80", Problem::BadHostAddr),
            ("0:80", Problem::BadPort),
            ("80:70000", Problem::BadPort),
            ("80:80/icmp", Problem::BadTransport),
            ("[::1]8080:80", Problem::BadBrackets),
            ("[::1:8080:80", Problem::BadBrackets),
            ("[::1]:8080", Problem::BadPublishShape),
        ];
        for (value, expected) in cases {
            match parse_publish(value) {
                Err(NetworkUsageError::BadPublish { problem, .. }) => {
                    assert_eq!(problem, expected, "{value}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        let err = parse_publish("80").unwrap_err().to_string();
        assert_eq!(err, "-p \"80\": expected [HOSTIP:]HOSTPORT:GUESTPORT[/udp]");
    }

    #[test]
    fn the_same_host_port_twice_is_refused() {
        let a = parse_publish("8080:80").unwrap();
        let b = parse_publish("127.0.0.1:8080:81").unwrap();
        let c = parse_publish("8080:80/udp").unwrap();
        let d = parse_publish("127.0.0.2:8080:80").unwrap();
        let e = parse_publish("8081:80").unwrap();
        assert!(check_published(&[a, c, e]).is_ok());
        assert!(matches!(check_published(&[a, b]), Err(NetworkUsageError::DuplicatePublish(_))));
        assert!(check_published(&[a, d]).is_err());
    }
}
