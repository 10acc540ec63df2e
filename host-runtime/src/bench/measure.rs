//! The figures measured against a live sandbox, through the relay socket as an SDK uses it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::{Data, ExecRequest};
use moat_protocol::{Message, MessageFrame};

use super::stats::Samples;
use crate::api::blocking::{Moat, Sandbox};
use crate::api::config::{Isolation, RootSource, SandboxOptions};
use crate::config::{SandboxConfig, Tmpfs};
use crate::error::RuntimeError;
use crate::relay_client::conn::{Conn, expect};
use crate::relay_client::fs::{FsClient, OpenMode};
use crate::relay_client::{ExecOutcome, RelayClient};

/// The tmpfs the file transfers write to.
pub(super) const SCRATCH_DIR: &str = "/bench";

/// Creation arguments of a bench sandbox: host root, the given backend, a scratch tmpfs.
pub(super) fn create_args(name: &str, scratch_mib: u32, isolation: Isolation) -> SandboxOptions {
    let config = SandboxConfig {
        tmpfs: vec![Tmpfs { path: SCRATCH_DIR.to_owned(), size_mib: Some(scratch_mib) }],
        ..SandboxConfig::default()
    };
    SandboxOptions { name: name.to_owned(), root: RootSource::Host, isolation, config }
}

fn exec_failed(what: &'static str, detail: String) -> RuntimeError {
    RuntimeError::io(what, "bench")(std::io::Error::other(detail))
}

/// Round trips of `exec true` on one connected client: request to `core.exec.exited`.
pub(super) fn exec_round_trips(
    socket: &Path,
    warmup: usize,
    n: usize,
) -> Result<Samples, RuntimeError> {
    let mut client = RelayClient::connect(socket)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let start = Instant::now();
        let ran = client.run_captured(ExecRequest::new("true"), b"", 4096, None)?;
        let elapsed = start.elapsed();
        if ran.outcome != ExecOutcome::Exited(0) {
            return Err(exec_failed("exec true", format!("{:?}", ran.outcome)));
        }
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(Samples::new(samples))
}

/// `core.ping` → `core.pong` round trips through the relay on one client.
pub(super) fn ping_round_trips(
    socket: &Path,
    warmup: usize,
    n: usize,
) -> Result<Samples, RuntimeError> {
    let mut conn = Conn::connect(socket)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let id = conn.next_id()?;
        let start = Instant::now();
        conn.send(&MessageFrame::new(id, Message::Ping), "core.ping")?;
        let pong = conn.recv("waiting for core.pong")?;
        let elapsed = start.elapsed();
        expect(pong.id == id && pong.message == Message::Pong, &pong, "waiting for core.pong")?;
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(Samples::new(samples))
}

/// One exec writing `bytes` of zeros to stdout, counted at the client: the elapsed time from
/// the request to `core.exec.exited`.
pub(super) fn stdout_stream(socket: &Path, bytes: u64) -> Result<Duration, RuntimeError> {
    const BLOCK: u64 = 1024 * 1024;
    let mut conn = Conn::connect(socket)?;
    let id = conn.next_id()?;
    let mut request = ExecRequest::new("dd");
    request.args = vec![
        "if=/dev/zero".to_owned(),
        format!("bs={BLOCK}"),
        format!("count={}", bytes / BLOCK),
        "status=none".to_owned(),
    ];
    let start = Instant::now();
    conn.send(&MessageFrame::new(id, Message::ExecRequest(request)), "core.exec.request")?;
    let mut got = 0u64;
    let mut acks = crate::relay_client::flow::OutputAcks::default();
    loop {
        conn.ack_output(id, &mut acks)?;
        let frame = conn.recv("streaming stdout")?;
        if frame.id != id {
            continue;
        }
        match frame.message {
            // Stdin EOF only once the exec started: a relay enforcing PROTOCOL.md §13.5
            // disconnects a client sending stdin before core.exec.started.
            Message::ExecStarted(_) => conn.send(
                &MessageFrame::new(id, Message::ExecStdin(Data::new(Vec::new()))),
                "core.exec.stdin",
            )?,
            Message::ExecStdout(Data { data }) => {
                got += data.len() as u64;
                acks.received(data.len());
            }
            Message::ExecExited(exited) if exited.code == 0 && got == bytes - bytes % BLOCK => {
                return Ok(start.elapsed());
            }
            Message::ExecExited(exited) => {
                return Err(exec_failed(
                    "stream stdout",
                    format!("dd exited {} after {got} of {bytes} bytes", exited.code),
                ));
            }
            Message::ExecFailed(failed) => {
                return Err(exec_failed("stream stdout", failed.message));
            }
            Message::Error(err) => return Err(exec_failed("stream stdout", err.message)),
            _ => {}
        }
    }
}

/// How the file transfers move their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FsMode {
    /// Raw bulk records under credit (generation 8, PROTOCOL.md §11): the client's default.
    Bulk,
    /// CBOR `core.fs.data` chunks of up to 3 MiB ([`FsClient::cbor_only`]).
    Cbor,
}

/// A file client in `mode`; a bulk client against an agent that cannot take bulk is an error,
/// so that a bulk figure is never a CBOR one in disguise.
fn fs_client(socket: &Path, mode: FsMode) -> Result<FsClient, RuntimeError> {
    let client = FsClient::connect(socket)?;
    match mode {
        FsMode::Cbor => Ok(client.cbor_only()),
        FsMode::Bulk if client.uses_bulk() => Ok(client),
        FsMode::Bulk => Err(exec_failed("fs bulk", "the agent does not take raw bulk".into())),
    }
}

/// Streams `bytes` into `path` (open, `Write` with the exact length, close); the elapsed time
/// of the `Write` session, from its request to its `core.fs.response`.
pub(super) fn fs_write(
    socket: &Path,
    mode: FsMode,
    path: &str,
    bytes: u64,
) -> Result<Duration, RuntimeError> {
    let mut client = fs_client(socket, mode)?;
    let file = client.open(path, OpenMode::Write { mode: None })?;
    let mut source = std::io::Read::take(std::io::repeat(0xa5), bytes);
    let start = Instant::now();
    client.write_at(&file, 0, Some(bytes), &mut source)?;
    let elapsed = start.elapsed();
    client.close(file)?;
    Ok(elapsed)
}

/// Streams `path` back to EOF (`Read` with no length); the elapsed time of the `Read` session.
pub(super) fn fs_read(
    socket: &Path,
    mode: FsMode,
    path: &str,
    bytes: u64,
) -> Result<Duration, RuntimeError> {
    let mut client = fs_client(socket, mode)?;
    let file = client.open(path, OpenMode::Read)?;
    let start = Instant::now();
    let got = client.read_at(&file, 0, None, |_| Ok(()))?;
    let elapsed = start.elapsed();
    client.close(file)?;
    if got != bytes {
        return Err(exec_failed("fs read", format!("read {got} of {bytes} bytes")));
    }
    Ok(elapsed)
}

/// What [`concurrent_execs`] saw.
#[derive(Debug, Clone, Copy)]
pub(super) struct Concurrent {
    /// Execs that ended `Exited(0)`.
    pub(super) ok: u64,
    /// Execs (or connections) that failed.
    pub(super) errors: u64,
    /// Wall time from the first connect to the last exit.
    pub(super) elapsed: Duration,
}

/// `clients` threads, each with its own relay connection, each running `execs` × `exec true`.
pub(super) fn concurrent_execs(socket: &Path, clients: usize, execs: usize) -> Concurrent {
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let socket: PathBuf = socket.to_owned();
            std::thread::spawn(move || {
                let mut client = match RelayClient::connect(&socket) {
                    Ok(client) => client,
                    Err(err) => {
                        eprintln!("bench: a concurrent client could not connect: {err}");
                        return (0, execs as u64);
                    }
                };
                let mut ok = 0u64;
                let mut reported = false;
                for _ in 0..execs {
                    let ran = client.run_captured(ExecRequest::new("true"), b"", 4096, None);
                    match ran {
                        Ok(ran) if ran.outcome == ExecOutcome::Exited(0) => ok += 1,
                        // The first failure of each client is said on stderr; the count is in
                        // the report.
                        other if !reported => {
                            reported = true;
                            eprintln!("bench: a concurrent exec failed: {other:?}");
                        }
                        _ => {}
                    }
                }
                (ok, execs as u64 - ok)
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, 0);
    for worker in workers {
        let (good, bad) = worker.join().unwrap_or((0, execs as u64));
        ok += good;
        errors += bad;
    }
    Concurrent { ok, errors, elapsed: start.elapsed() }
}

/// Creates and removes `n` sandboxes; each sample runs from the create call to the replayed
/// `core.ready` on a fresh client connection.
pub(super) fn create_to_ready(
    moat: &Moat,
    n: usize,
    isolation: Isolation,
) -> Result<Samples, RuntimeError> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let sandbox = moat.create(create_args(&format!("bench-ready-{i}"), 1, isolation))?;
        let connected = Conn::connect(&sandbox.socket());
        let elapsed = start.elapsed();
        drop(connected);
        sandbox.remove(true)?;
        samples.push(elapsed);
    }
    Ok(Samples::new(samples))
}

/// Resident memory of the sandbox's process tree (sandbox process, helpers, agent and anything
/// else it runs), in KiB.
pub(super) fn tree_rss_kib(sandbox: &Sandbox) -> Result<u64, RuntimeError> {
    let root =
        sandbox.state()?.pid.ok_or_else(|| exec_failed("measure memory", "no pid".into()))?;
    let mut parents = Vec::new();
    let entries = std::fs::read_dir("/proc").map_err(RuntimeError::io("list", "/proc"))?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        parents.push((pid, status_field(&status, "PPid:"), status_field(&status, "VmRSS:")));
    }
    let mut tree = vec![root];
    let mut total = 0;
    while let Some(pid) = tree.pop() {
        for &(child, ppid, rss) in &parents {
            if child == pid {
                total += rss;
            }
            if ppid == pid as u64 && child != pid {
                tree.push(child);
            }
        }
    }
    Ok(total)
}

fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
