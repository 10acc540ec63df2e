//! End to end: the namespace backend's guest network. Needs root; no traffic leaves this machine:
//! each scenario runs `moat run` inside a "host" network namespace this test makes, whose only
//! link is a veth pair to an "internet" namespace, also made here, that holds the servers:
//!
//! ```text
//!  host ns H (moat, slirp4netns's host side)                 internet ns I (servers: HTTP/1.0 "hello-PORT")
//!   w0 203.0.113.1/24, default via 203.0.113.10 ─veth─ w1 203.0.113.10/24, 198.51.100.10/24,
//!   127.0.0.1:9000 ("the host's loopback")               10.9.9.9/24 (a private LAN)
//! ```
//!
//! The scenarios share one world and run in one test, one after another, so the last check can
//! say no slirp4netns process was left behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

mod support;
use moat_runtime::network::dns;
use support::{moat_home, processes_mentioning, require_root, stderr, stdout};

/// A network namespace held by a `sleep` the test owns.
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "3600"])
            .spawn()
            .expect("spawn unshare --net sleep");
        std::thread::sleep(std::time::Duration::from_millis(100));
        Netns(child)
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }

    fn ip(&self, batch: &str) {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["--", "ip", "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "ip -batch failed: {batch}");
    }

    /// Serves `hello-PORT` over HTTP/1.0 on `addr` inside this namespace, on a thread.
    fn serve(&self, addr: &str) {
        let addr: SocketAddr = addr.parse().unwrap();
        let netns = std::fs::File::open(self.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = TcpListener::bind(addr).unwrap();
            tx.send(()).unwrap();
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let body = format!("hello-{}", addr.port());
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        rx.recv().unwrap();
    }

    /// Answers A queries for [`ZONE`] on UDP `addr` inside this namespace (no records otherwise).
    fn serve_dns(&self, addr: &str) {
        let addr: SocketAddr = addr.parse().unwrap();
        let netns = std::fs::File::open(self.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let socket = std::net::UdpSocket::bind(addr).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let query = &buf[..len];
                let Some(q) = dns::question(query) else { continue };
                let mut reply = query.to_vec();
                reply[2] |= 0x80;
                reply[3] |= 0x80;
                let found = ZONE.iter().find(|(name, _)| *name == q.name);
                if let (Some((_, ip)), dns::TYPE_A) = (found, q.qtype) {
                    reply[7] = 1;
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
                    reply.extend_from_slice(ip);
                }
                let _ = socket.send_to(&reply, from);
            }
        });
        rx.recv().unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    host: Netns,
    _internet: Netns,
    /// The host's resolv.conf as moat sees it: the fake resolver on the host's loopback.
    resolv: tempfile::NamedTempFile,
}

fn world() -> World {
    let internet = Netns::new();
    let host = Netns::new();
    host.ip(&format!(
        "link set lo up\nlink add w0 type veth peer name w1 netns {}\n\
         addr add 203.0.113.1/24 dev w0\nlink set w0 up\nroute add default via 203.0.113.10\n",
        internet.0.id()
    ));
    internet
        .ip("link set lo up\naddr add 203.0.113.10/24 dev w1\naddr add 198.51.100.10/24 dev w1\n\
         addr add 10.9.9.9/24 dev w1\nlink set w1 up\n");
    for addr in ["203.0.113.10:8000", "203.0.113.10:8001", "198.51.100.10:8000", "10.9.9.9:8000"] {
        internet.serve(addr);
    }
    host.serve("127.0.0.1:9000");
    host.serve_dns("127.0.0.1:53");
    let resolv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(resolv.path(), "nameserver 127.0.0.1\n").unwrap();
    World { host, _internet: internet, resolv }
}

/// The fake resolver's zone: A records only.
const ZONE: [(&str, [u8; 4]); 2] =
    [("api.svc.test", [203, 0, 113, 10]), ("other.test", [198, 51, 100, 10])];

/// `moat run` inside the host namespace, with the world's resolv.conf bound over the host's in a
/// mount namespace of its own.
fn run_in(world: &World, home: &Path, args: &[&str], path: Option<&str>) -> Output {
    command_in(world, home, args, path).output().unwrap()
}

fn command_in(world: &World, home: &Path, args: &[&str], path: Option<&str>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", world.host.path()))
        .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
        .args(["sh", "-c", "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""])
        .arg(world.resolv.path())
        .arg(env!("CARGO_BIN_EXE_moat"))
        .arg("run")
        .args(["--isolation", "namespace"])
        .args(args)
        .env("MOAT_HOME", home)
        .stdin(Stdio::null());
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command
}

/// GETs `path` from `addr` inside `netns`, retrying for up to 10 s; the body, or the last error.
fn fetch_in(netns: &Netns, addr: &str, path: &str) -> Result<String, String> {
    let file = std::fs::File::open(netns.path()).unwrap();
    let (addr, path) = (addr.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut stream = std::net::TcpStream::connect(addr.as_str())?;
                stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
                write!(stream, "GET {path} HTTP/1.0\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                response
                    .split_once("\r\n\r\n")
                    .map(|(_, body)| body.to_owned())
                    .ok_or_else(|| std::io::Error::other(format!("no body in {response:?}")))
            })();
            match attempt {
                Ok(body) => return Ok(body),
                Err(err) if std::time::Instant::now() >= deadline => return Err(err.to_string()),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    })
    .join()
    .unwrap()
}

/// A guest script printing one `URL=ok|denied` line per URL (2 s per try).
fn probe(urls: &[&str]) -> String {
    urls.iter()
        .map(|url| {
            format!(
                "if curl -s -m 2 -o /dev/null {url}; then echo {url}=ok; else echo {url}=denied; fi; "
            )
        })
        .collect()
}

fn assert_probe(output: &Output, expected: &[(&str, &str)]) {
    let out = stdout(output);
    assert_eq!(output.status.code(), Some(0), "stdout: {out}\nstderr: {}", stderr(output));
    for (url, verdict) in expected {
        let line = format!("{url}={verdict}");
        assert!(
            out.lines().any(|l| l == line),
            "expected {line}\nstdout: {out}\nstderr: {}",
            stderr(output)
        );
    }
}

const PUBLIC: &str = "http://203.0.113.10:8000/";
const PUBLIC_8001: &str = "http://203.0.113.10:8001/";
const OTHER_PUBLIC: &str = "http://198.51.100.10:8000/";
const PRIVATE: &str = "http://10.9.9.9:8000/";
const HOST_ALIAS: &str = "http://10.254.254.5:9000/";

#[test]
fn guest_network_policies_are_enforced_outside_the_guest_as_root() {
    require_root();
    let world = world();
    let home = moat_home("network");

    // Off by default: loopback only.
    let output = run_in(&world, &home, &["--", "ls", "/sys/class/net"], None);
    assert_eq!(stdout(&output), "lo\n", "stderr: {}", stderr(&output));

    // public: the public internet, not a private LAN nor the host.
    let urls = [PUBLIC, OTHER_PUBLIC, PRIVATE, HOST_ALIAS];
    let output =
        run_in(&world, &home, &["--network", "public", "--", "sh", "-c", &probe(&urls)], None);
    assert_probe(
        &output,
        &[(PUBLIC, "ok"), (OTHER_PUBLIC, "ok"), (PRIVATE, "denied"), (HOST_ALIAS, "denied")],
    );

    // all, with a deny rule: the private LAN too, not the denied network.
    let output = run_in(
        &world,
        &home,
        &["--network", "all", "--deny", "198.51.100.0/24", "--", "sh", "-c", &probe(&urls)],
        None,
    );
    assert_probe(
        &output,
        &[(PUBLIC, "ok"), (OTHER_PUBLIC, "denied"), (PRIVATE, "ok"), (HOST_ALIAS, "denied")],
    );

    // none with exemptions: exactly the allowed ports, host.moat.internal included.
    let urls = [PUBLIC, PUBLIC_8001, OTHER_PUBLIC, HOST_ALIAS];
    let output = run_in(
        &world,
        &home,
        &[
            "--allow",
            "203.0.113.10:8000/tcp",
            "--allow",
            "host.moat.internal:9000",
            "--",
            "sh",
            "-c",
            &probe(&urls),
        ],
        None,
    );
    assert_probe(
        &output,
        &[(PUBLIC, "ok"), (PUBLIC_8001, "denied"), (OTHER_PUBLIC, "denied"), (HOST_ALIAS, "ok")],
    );

    // Domain rules: a name's addresses open once the guest's resolver has answered it.
    let urls = [
        PUBLIC,
        "http://api.svc.test:8000/",
        "http://other.test:8000/",
        "http://host.moat.internal:9000/",
    ];
    let output = run_in(
        &world,
        &home,
        &[
            "--allow",
            "*.svc.test:8000",
            "--allow",
            "host.moat.internal:9000",
            "--",
            "sh",
            "-c",
            &probe(&urls),
        ],
        None,
    );
    assert_probe(
        &output,
        &[
            (PUBLIC, "denied"),
            ("http://api.svc.test:8000/", "ok"),
            ("http://other.test:8000/", "denied"),
            ("http://host.moat.internal:9000/", "ok"),
        ],
    );

    // The guest's root rewrites its routes, addresses and firewall: nothing opens.
    let lift = "ip route flush all; ip addr add 198.51.100.77/24 dev eth0; \
                ip route add default via 10.254.254.1; nft flush ruleset 2>/dev/null; \
                iptables -F 2>/dev/null; ";
    let script = format!("{lift}{}", probe(&[PUBLIC, OTHER_PUBLIC, PRIVATE]));
    let output =
        run_in(&world, &home, &["--allow", "203.0.113.10:8000", "--", "sh", "-c", &script], None);
    assert_probe(&output, &[(PUBLIC, "ok"), (OTHER_PUBLIC, "denied"), (PRIVATE, "denied")]);

    // A published port: the host's 127.0.0.1:18080 reaches the guest's server on 8080, while the
    // guest itself has no outbound network.
    let serve = "mkdir -p /tmp/www && echo served > /tmp/www/index.html && \
                 (busybox httpd -f -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1 &) && sleep 6";
    let mut sandbox =
        command_in(&world, &home, &["-p", "18080:8080", "--", "sh", "-c", serve], None)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let fetched = fetch_in(&world.host, "127.0.0.1:18080", "/index.html");
    let status = sandbox.wait().unwrap();
    let mut err = String::new();
    sandbox.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(fetched, Ok("served\n".to_owned()), "stderr: {err}");
    assert!(status.success(), "stderr: {err}");

    // A published port already in use on the host: a clear error naming it.
    let output = run_in(&world, &home, &["-p", "9000:80", "--", "true"], None);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("-p 127.0.0.1:9000:80: cannot bind the host port"),
        "{}",
        stderr(&output)
    );

    // No slirp4netns: a clear error, and no sandbox.
    let bin = tempfile::tempdir().unwrap();
    for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != "slirp4netns" && !bin.path().join(&name).exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), bin.path().join(&name));
            }
        }
    }
    let path = bin.path().to_str().unwrap();
    let output = run_in(&world, &home, &["--network", "public", "--", "true"], Some(path));
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("needs `slirp4netns` (Debian package slirp4netns)"),
        "{}",
        stderr(&output)
    );

    // Nothing left running.
    assert_eq!(processes_mentioning("slirp4netns --configure"), Vec::<String>::new());
}
