//! The namespace backend's guest network: a router network namespace the sandbox cannot enter,
//! between the sandbox's own network namespace and `slirp4netns`. Everything here runs in the sandbox
//! process (host root); the policy itself is [`super::nft`]'s ruleset, loaded in the router.
//!
//! ```text
//!  sandbox netns S (owned by the sandbox's     router netns R (owned by the host's user ns:
//!  user ns: its root may change anything here)  the sandbox's root can neither enter nor see it)
//!   eth0 10.254.254.2/30 ──── veth pair ───── moat-r 10.254.254.1/30   nft table inet moat
//!   default via 10.254.254.1                   DNS forwarder on 10.254.254.1:53 (this process,
//!   /etc/resolv.conf: nameserver 10.254.254.1    forwarder.rs)
//!                                              tap0 10.0.2.100/24, default via 10.0.2.2
//!                                                 │ slirp4netns (user-mode TCP/IP; 10.0.2.2 is
//!                                                 ▼ the host's loopback)
//!                                              the host's sockets
//! ```
//!
//! R is made by a thread of this process (`unshare(CLONE_NEWNET)`) and held by a descriptor;
//! `ip`, `nft` and `slirp4netns` reach it through `/proc/<pid>/fd/<fd>`. When the sandbox process
//! ends, slirp4netns (killed with its parent) and the descriptor go, and with them R, its
//! nftables table and the veth pair. The sandbox's root can rewrite S's routes and addresses, but every packet still
//! leaves through the pair into R, where the forward chain judges its original destination.

use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use super::forwarder::{Forwarder, Setup, first_nameserver, point_guest_at};
use super::nft::{self, Learned, WIRING};
use super::{GuestResolver, NetworkConfig, NetworkError};
use crate::limits::POLL_INTERVAL_MS;

/// How long slirp4netns gets to configure the router namespace and answer on its API socket.
pub const SLIRP_START_TIMEOUT_MS: u64 = 5_000;

/// The programs the guest network needs, with the Debian package that has each.
pub const TOOLS: [(&str, &str); 4] = [
    ("slirp4netns", "slirp4netns"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
];

/// slirp4netns's network in R: its address, and the gateway it maps to the host's loopback.
pub const SLIRP_NET: &str = "10.0.2.0/24";
/// See [`SLIRP_NET`].
pub const SLIRP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// A running guest network; dropping it tears it down (the DNS thread first).
#[derive(Debug)]
pub struct Router {
    /// The guest's DNS server.
    forwarder: Option<Forwarder>,
    /// Holds R while this process lives.
    netns: OwnedFd,
    /// slirp4netns, attached to R.
    slirp: Child,
    /// What the ruleset was built with.
    learned: Learned,
}

impl Router {
    /// Wires the network namespace of process `sandbox_pid` to a new router namespace and
    /// starts slirp4netns; `dir` receives its log and API socket.
    pub fn start(
        config: &NetworkConfig,
        sandbox_pid: u32,
        dir: &Path,
        resolver: GuestResolver,
    ) -> Result<Router, NetworkError> {
        let log = dir.join("slirp4netns.log");
        let api = dir.join("slirp4netns.sock");
        for (tool, package) in TOOLS {
            find_on_path(tool).ok_or(NetworkError::ToolMissing { tool, package })?;
        }
        check_ports_free(config)?;
        let netns = new_router_netns()?;
        let router_path = fd_path(&netns);
        let sandbox_path = PathBuf::from(format!("/proc/{sandbox_pid}/ns/net"));
        let w = WIRING;
        run_in(
            &router_path,
            "ip",
            &[
                "link",
                "add",
                nft::ROUTER_IFNAME,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &sandbox_pid.to_string(),
            ],
        )?;
        ip_batch(
            &router_path,
            &format!(
                "addr add {}/{} dev {r}\nlink set {r} up\n",
                w.gateway,
                w.prefix,
                r = nft::ROUTER_IFNAME
            ),
        )?;
        ip_batch(
            &sandbox_path,
            &format!(
                "link set lo up\naddr add {}/{} dev eth0\nlink set eth0 up\nroute add default via {}\n",
                w.guest, w.prefix, w.gateway
            ),
        )?;
        let slirp = spawn_slirp(&router_path, &api, &log)?;
        let mut router = Router {
            forwarder: None,
            netns,
            slirp,
            learned: Learned {
                upstream_gateway: SLIRP_GATEWAY,
                upstream_net: SLIRP_NET.parse().expect("SLIRP_NET is a network"),
                host_addrs: host_addrs()?,
            },
        };
        router.wait_for_slirp(&log, &api)?;
        for port in &config.publish {
            publish(&api, port)?;
        }
        let rules = nft::ruleset(config, &w, &router.learned);
        run_in_with_input(&router_path, "nft", &["-f", "-"], &rules)?;
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let setup = Setup {
            listen: SocketAddr::new(IpAddr::V4(w.gateway), 53),
            alias: w.alias,
            upstream: first_nameserver(&resolv),
            rules: config.rules.clone(),
            router_path,
        };
        router.forwarder = Some(Forwarder::start(&router.netns, setup)?);
        if resolver == GuestResolver::WriteThroughProcessRoot {
            point_guest_at(sandbox_pid, w.gateway)?;
        }
        Ok(router)
    }

    /// The path other processes open to enter R.
    pub fn netns_path(&self) -> PathBuf {
        fd_path(&self.netns)
    }

    /// slirp4netns's gateway and network, and the host's addresses, as the ruleset has them.
    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// Waits until slirp4netns has given R its default route and listens on its API socket.
    fn wait_for_slirp(&mut self, log: &Path, api: &Path) -> Result<(), NetworkError> {
        let deadline = Instant::now() + Duration::from_millis(SLIRP_START_TIMEOUT_MS);
        let path = self.netns_path();
        loop {
            if let Ok(Some(status)) = self.slirp.try_wait() {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                return Err(NetworkError::SlirpExited {
                    status: status.to_string(),
                    said: slirp_said(&said),
                });
            }
            let routes = capture_in(&path, "ip", &["-4", "route", "show", "default"])?;
            if parse_default_gateway(&routes) == Some(SLIRP_GATEWAY) && api.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NetworkError::SlirpTimeout { ms: SLIRP_START_TIMEOUT_MS });
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }
}

impl Drop for Router {
    /// Ends slirp4netns; R (and its table and veth pair) goes with the last reference, the
    /// descriptor this drop closes.
    fn drop(&mut self) {
        let _ = self.slirp.kill();
        let _ = self.slirp.wait();
    }
}

/// A new network namespace made by a short-lived thread (a network namespace may be unshared by
/// one thread of a multi-threaded process), with loopback up and forwarding on.
fn new_router_netns() -> Result<OwnedFd, NetworkError> {
    let made = std::thread::spawn(|| -> std::io::Result<OwnedFd> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        crate::backend::namespace::sys::loopback_up()?;
        // /proc/sys/net is the opening thread's namespace's.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(File::open("/proc/thread-self/ns/net")?.into())
    })
    .join();
    match made {
        Ok(result) => {
            result.map_err(|source| NetworkError::Io { step: "make the router namespace", source })
        }
        Err(_) => Err(NetworkError::Io {
            step: "make the router namespace",
            source: std::io::Error::other("the thread making it panicked"),
        }),
    }
}

/// Binds each published port for a moment, so one in use is a clear error naming it rather than
/// an error from slirp4netns's API.
fn check_ports_free(config: &NetworkConfig) -> Result<(), NetworkError> {
    for p in &config.publish {
        let addr = SocketAddr::new(p.host_addr, p.host_port);
        let bound = match p.transport {
            super::Transport::Tcp => std::net::TcpListener::bind(addr).map(drop),
            super::Transport::Udp => std::net::UdpSocket::bind(addr).map(drop),
        };
        bound.map_err(|source| NetworkError::PortUnavailable { port: *p, source })?;
    }
    Ok(())
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()))
}

/// `slirp4netns` attached to `router` (configuring its tap0 there, with its API socket at
/// `api`), in its own sandbox and seccomp filter; it keeps root's uid, so the parent-death signal
/// holds.
fn spawn_slirp(router: &Path, api: &Path, log: &Path) -> Result<Child, NetworkError> {
    let log_file = File::create(log)
        .map_err(|source| NetworkError::Io { step: "create slirp4netns's log", source })?;
    let _ = std::fs::remove_file(api);
    let mut command = Command::new("slirp4netns");
    command.args(["--configure", "--mtu=65520", "--enable-sandbox", "--enable-seccomp"]);
    command.arg(format!("--api-socket={}", api.display()));
    command.arg("--netns-type=path").arg(router).arg("tap0");
    command.stdin(Stdio::null()).stdout(
        log_file
            .try_clone()
            .map_err(|source| NetworkError::Io { step: "create slirp4netns's log", source })?,
    );
    command.stderr(log_file);
    crate::backend::namespace::pre_exec::kill_with_parent(&mut command);
    command.spawn().map_err(|source| NetworkError::Io { step: "start slirp4netns", source })
}

/// Asks slirp4netns (API socket `api`) to forward `port` from the host to the same port on R's
/// tap address, where the ruleset's prerouting sends it on to the guest.
fn publish(api: &Path, port: &super::PublishedPort) -> Result<(), NetworkError> {
    use std::io::Read as _;
    let request = hostfwd_request(port);
    let io = |source| NetworkError::Io { step: "talk to slirp4netns's API socket", source };
    let mut stream = std::os::unix::net::UnixStream::connect(api).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_millis(SLIRP_START_TIMEOUT_MS))).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut reply = String::new();
    stream.take(64 * 1024).read_to_string(&mut reply).map_err(io)?;
    if reply.contains("\"error\"") {
        return Err(NetworkError::PortUnavailable {
            port: *port,
            source: std::io::Error::other(last_line(&reply)),
        });
    }
    Ok(())
}

/// slirp4netns's `add_hostfwd` request for `port`.
pub fn hostfwd_request(port: &super::PublishedPort) -> String {
    let proto = match port.transport {
        super::Transport::Tcp => "tcp",
        super::Transport::Udp => "udp",
    };
    serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": proto,
            "host_addr": port.host_addr.to_string(),
            "host_port": port.host_port,
            "guest_port": port.host_port,
        }
    })
    .to_string()
}

/// The gateway of `ip -4 route show default`'s first line.
pub fn parse_default_gateway(routes: &str) -> Option<Ipv4Addr> {
    let line = routes.lines().find(|l| l.starts_with("default"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "via")?;
    words.next()?.parse().ok()
}

/// The host's own addresses (this process's network namespace).
fn host_addrs() -> Result<Vec<IpAddr>, NetworkError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| NetworkError::Io {
        step: "list the host's addresses",
        source: errno.into(),
    })?;
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|addr| {
            addr.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

/// `nsenter --net=NETNS PROGRAM ARGS`, failing with the program's last line of stderr.
fn run_in(netns: &Path, program: &'static str, args: &[&str]) -> Result<(), NetworkError> {
    capture_in(netns, program, args).map(drop)
}

fn capture_in(netns: &Path, program: &'static str, args: &[&str]) -> Result<String, NetworkError> {
    let output = nsenter(netns, program, args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetworkError::Io { step: "run nsenter", source })?;
    if !output.status.success() {
        return Err(NetworkError::Command {
            program,
            args: args.join(" "),
            said: last_line(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ip_batch(netns: &Path, commands: &str) -> Result<(), NetworkError> {
    run_in_with_input(netns, "ip", &["-batch", "-"], commands)
}

fn run_in_with_input(
    netns: &Path,
    program: &'static str,
    args: &[&str],
    input: &str,
) -> Result<(), NetworkError> {
    let mut child = nsenter(netns, program, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Io { step: "run nsenter", source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| NetworkError::Io { step: "feed nsenter", source })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| NetworkError::Io { step: "run nsenter", source })?;
    if !output.status.success() {
        return Err(NetworkError::Command {
            program,
            args: args.join(" "),
            said: last_line(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(())
}

fn nsenter(netns: &Path, program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net={}", netns.display())).arg("--").arg(program).args(args);
    command
}

/// What slirp4netns said before it ended, on one line: its messages without the configuration it
/// prints (`* ...` lines) nor its warning about the host's loopback. It writes those to a buffered
/// stdout, flushed at exit, so its real error (stderr) comes before them in the log.
fn slirp_said(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with("WARNING: 127.0.0.1"))
        .collect();
    if lines.is_empty() {
        return "(no message)".to_owned();
    }
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// The last non-empty line of a program's output, without syslog noise.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Failed to send"))
        .unwrap_or("(no message)")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse::parse_publish;

    #[test]
    fn the_default_gateway_is_read_from_ip_route() {
        assert_eq!(
            parse_default_gateway("default via 203.0.113.254 dev eth0 \n"),
            Some(Ipv4Addr::new(203, 0, 113, 254))
        );
        assert_eq!(parse_default_gateway("10.0.0.0/8 dev x\n"), None);
        assert_eq!(parse_default_gateway("default dev tun0\n"), None);
    }

    #[test]
    fn a_published_port_becomes_a_hostfwd_to_the_same_port_in_the_router() {
        let request = hostfwd_request(&parse_publish("0.0.0.0:5353:53/udp").unwrap());
        let json: serde_json::Value = serde_json::from_str(&request).unwrap();
        assert_eq!(json["execute"], "add_hostfwd");
        assert_eq!(json["arguments"]["proto"], "udp");
        assert_eq!(json["arguments"]["host_addr"], "0.0.0.0");
        assert_eq!(
            (json["arguments"]["host_port"].as_u64(), json["arguments"]["guest_port"].as_u64()),
            (Some(5353), Some(5353))
        );
    }

    #[test]
    fn the_last_line_skips_syslog_noise() {
        assert_eq!(last_line("a\nreal error\nFailed to send 3 bytes to syslog\n"), "real error");
        assert_eq!(last_line(""), "(no message)");
        let log =
            "sent tapfd=5 for tap0\nreal error\n* MTU: 65520\nWARNING: 127.0.0.1:* on the host\n";
        assert_eq!(slirp_said(log), "sent tapfd=5 for tap0 | real error");
        assert_eq!(slirp_said(""), "(no message)");
    }
}
