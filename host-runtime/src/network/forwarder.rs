//! The guest's DNS server: a thread of the sandbox process listening on the router's address in
//! the router namespace (so the guest's root cannot replace it), answering `host.moat.internal`
//! itself and forwarding the rest, over a socket in the host's namespace, to the first resolver
//! of the host's `/etc/resolv.conf`. Before it passes an answer on, the addresses it holds are
//! added to the nft set of every domain rule whose name it matches, so a connection the guest
//! makes after resolving a name finds its rule ready.
//!
//! ```text
//!  guest ─query─► 10.254.254.1:53 (R) ── host.moat.internal? ─► the alias's A record
//!                     │ else: new id, pending (at most MAX_PENDING_QUERIES, FORWARD_TIMEOUT_MS)
//!                     ▼
//!                 upstream socket (host ns) ─► resolver ─answer─► nft add element dN {addrs}
//!                     ─► the answer, with the guest's id, back to the guest
//! ```
//!
//! UDP only: a guest's DNS over TCP is refused by the router (nobody listens on its port 53).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::NetworkError;
use super::dns::{self, MAX_DNS_MESSAGE_BYTES};
use super::nft;
use super::policy::{HOST_ALIAS_NAME, Rule};

/// Most queries waiting for the upstream resolver at once; past it the guest gets SERVFAIL.
pub const MAX_PENDING_QUERIES: usize = 256;

/// How long a forwarded query waits for its answer before the guest gets SERVFAIL.
pub const FORWARD_TIMEOUT_MS: u64 = 5_000;

/// Shortest and longest time a resolved address stays in a domain rule's set (the answer's TTL,
/// clamped: a short TTL must not close a connection being opened, a long one must not keep a
/// stale address open for days).
pub const MIN_SET_TIMEOUT_SECS: u32 = 60;
/// See [`MIN_SET_TIMEOUT_SECS`].
pub const MAX_SET_TIMEOUT_SECS: u32 = 3600;

/// How often the thread looks at its stop flag and expired queries.
const TICK_MS: u16 = 200;

/// The running forwarder; dropping it stops the thread.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the forwarder needs to know.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where it listens, in the router namespace.
    pub listen: SocketAddr,
    /// `host.moat.internal`'s address.
    pub alias: Ipv4Addr,
    /// The resolver it forwards to (`None`: the host has none; everything else is SERVFAIL).
    pub upstream: Option<SocketAddr>,
    /// The sandbox's rules, with their indexes (domain rules only are used).
    pub rules: Vec<Rule>,
    /// The router namespace, for `nft`.
    pub router_path: PathBuf,
}

impl Forwarder {
    /// Binds the upstream socket here (the host's namespace) and the listening one in the router
    /// namespace `router`, then serves on a thread.
    pub fn start(router: &OwnedFd, setup: Setup) -> Result<Forwarder, NetworkError> {
        let io = |step| move |source| NetworkError::Io { step, source };
        let upstream = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(io("bind the DNS upstream socket"))?;
        let router = router.try_clone().map_err(io("duplicate the router namespace"))?;
        let listen = setup.listen;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("moat-dns".into())
            .spawn(move || {
                let bound = nix::sched::setns(router.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
                    .and_then(|()| UdpSocket::bind(listen));
                match bound {
                    Ok(listener) => {
                        let _ = tx.send(Ok(()));
                        serve(&listener, &upstream, &setup, &stopping);
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err));
                    }
                }
            })
            .map_err(io("start the DNS thread"))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Forwarder { stop, thread: Some(thread) }),
            Ok(Err(source)) => {
                Err(NetworkError::Io { step: "bind the guest's DNS server", source })
            }
            Err(_) => Err(NetworkError::Io {
                step: "start the DNS thread",
                source: std::io::Error::other("it ended before binding"),
            }),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A forwarded query waiting for its answer.
struct Pending {
    id: u16,
    client: SocketAddr,
    query: Vec<u8>,
    deadline: Instant,
}

fn serve(listener: &UdpSocket, upstream: &UdpSocket, setup: &Setup, stop: &AtomicBool) {
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut next_id: u16 = 1;
    let mut buf = vec![0u8; MAX_DNS_MESSAGE_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(upstream.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::from(TICK_MS)).is_err() {
            continue;
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
        let (query_ready, answer_ready) = (ready(&fds[0]), ready(&fds[1]));
        if query_ready {
            if let Ok((len, client)) = listener.recv_from(&mut buf) {
                on_query(
                    &buf[..len],
                    client,
                    listener,
                    upstream,
                    setup,
                    &mut pending,
                    &mut next_id,
                );
            }
        }
        if answer_ready {
            if let Ok((len, from)) = upstream.recv_from(&mut buf) {
                if Some(from) == setup.upstream {
                    on_answer(&buf[..len], listener, setup, &mut pending);
                }
            }
        }
        let now = Instant::now();
        pending.retain(|_, p| {
            if p.deadline > now {
                return true;
            }
            if let Some(q) = dns::question(&p.query) {
                let _ = listener.send_to(&dns::servfail(&p.query, &q), p.client);
            }
            false
        });
    }
}

fn on_query(
    query: &[u8],
    client: SocketAddr,
    listener: &UdpSocket,
    upstream: &UdpSocket,
    setup: &Setup,
    pending: &mut HashMap<u16, Pending>,
    next_id: &mut u16,
) {
    let Some(q) = dns::question(query) else { return };
    if q.name == HOST_ALIAS_NAME {
        let _ = listener.send_to(&dns::local_answer(query, &q, setup.alias), client);
        return;
    }
    let Some(to) = setup.upstream.filter(|_| pending.len() < MAX_PENDING_QUERIES) else {
        let _ = listener.send_to(&dns::servfail(query, &q), client);
        return;
    };
    while pending.contains_key(next_id) {
        *next_id = next_id.wrapping_add(1);
    }
    let id = *next_id;
    *next_id = next_id.wrapping_add(1);
    let deadline = Instant::now() + Duration::from_millis(FORWARD_TIMEOUT_MS);
    if upstream.send_to(&dns::with_id(query, id), to).is_ok() {
        pending.insert(id, Pending { id: q.id, client, query: query.to_vec(), deadline });
    } else {
        let _ = listener.send_to(&dns::servfail(query, &q), client);
    }
}

fn on_answer(msg: &[u8], listener: &UdpSocket, setup: &Setup, pending: &mut HashMap<u16, Pending>) {
    let Some(id) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
    let Some(waiting) = pending.remove(&id) else { return };
    if let Some(answer) = dns::answer(msg) {
        for (index, rule) in setup.rules.iter().enumerate() {
            if nft::needs_set(rule)
                && rule.dest.matches_names(&answer.names)
                && !answer.addrs.is_empty()
            {
                add_to_set(setup, index, &answer.addrs);
            }
        }
    }
    let _ = listener.send_to(&dns::with_id(msg, waiting.id), waiting.client);
}

/// `nft add element inet moat dN { ADDR timeout Ns, ... }` in the router namespace.
fn add_to_set(setup: &Setup, index: usize, addrs: &[(Ipv4Addr, u32)]) {
    let elements: Vec<String> = addrs
        .iter()
        .map(|(addr, ttl)| {
            format!("{addr} timeout {}s", ttl.clamp(&MIN_SET_TIMEOUT_SECS, &MAX_SET_TIMEOUT_SECS))
        })
        .collect();
    let command = format!(
        "add element inet {} {} {{ {} }}",
        nft::TABLE,
        nft::domain_set(index),
        elements.join(", ")
    );
    let status = std::process::Command::new("nsenter")
        .arg(format!("--net={}", setup.router_path.display()))
        .args(["--", "nft", &command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::warn!(command, "could not add resolved addresses to a domain rule's set");
    }
}

/// Points the guest's `/etc/resolv.conf` at `server`. `sandbox_pid` is the process whose first
/// child is the agent. Runs before any guest program, and still resolves `etc` inside the guest's
/// root (`RESOLVE_IN_ROOT`) and replaces rather than follows a symlinked `resolv.conf`, so an
/// image cannot aim this host-root write at a host file.
pub fn point_guest_at(sandbox_pid: u32, server: Ipv4Addr) -> Result<(), NetworkError> {
    use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
    let io = |step| move |source| NetworkError::Io { step, source };
    let children =
        std::fs::read_to_string(format!("/proc/{sandbox_pid}/task/{sandbox_pid}/children"))
            .map_err(io("find the agent's process"))?;
    let agent = children.split_whitespace().next().map(str::to_owned).ok_or(NetworkError::Io {
        step: "find the agent's process",
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let root = rustix::fs::open(
        format!("/proc/{agent}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open the guest's root")(e.into()))?;
    let etc = rustix::fs::openat2(
        &root,
        "etc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| io("open the guest's /etc")(e.into()))?;
    // Create it as the guest's root (its host ids), on a thread of its own: the root may be an
    // idmapped mount where host root is unmapped, and fsuid/fsgid are per thread.
    let ids = (root_host_id(&agent, "uid_map")?, root_host_id(&agent, "gid_map")?);
    let contents = format!("nameserver {server}\n");
    let written = std::thread::spawn(move || -> std::io::Result<()> {
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(ids.1));
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(ids.0));
        match rustix::fs::unlinkat(&etc, "resolv.conf", AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let file = rustix::fs::openat(
            &etc,
            "resolv.conf",
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        std::io::Write::write_all(&mut std::fs::File::from(file), contents.as_bytes())
    })
    .join();
    match written {
        Ok(result) => result.map_err(io("write the guest's /etc/resolv.conf")),
        Err(_) => Err(io("write the guest's /etc/resolv.conf")(std::io::Error::other(
            "the writing thread panicked",
        ))),
    }
}

/// The host id the guest's id 0 maps to, from `/proc/PID/{uid_map,gid_map}`.
fn root_host_id(pid: &str, map: &str) -> Result<u32, NetworkError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{map}"))
        .map_err(|source| NetworkError::Io { step: "read the sandbox's id map", source })?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u32>);
            match (fields.next(), fields.next()) {
                (Some(Ok(0)), Some(Ok(host))) => Some(host),
                _ => None,
            }
        })
        .ok_or(NetworkError::Io {
            step: "read the sandbox's id map",
            source: std::io::Error::other("the guest's root is not mapped"),
        })
}

/// The first `nameserver` of a resolv.conf, on port 53.
pub fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver").then_some(())?;
        let addr: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
        Some(SocketAddr::new(addr, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nameserver_is_taken() {
        let conf = "# generated\nsearch example\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n";
        assert_eq!(first_nameserver(conf), Some("127.0.0.53:53".parse().unwrap()));
        assert_eq!(
            first_nameserver("nameserver fe80::1%eth0\n"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(first_nameserver("search x\n"), None);
        assert_eq!(first_nameserver("nameserver bogus\n"), None);
    }
}
