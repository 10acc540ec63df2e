//! `moat-conformance fuzz` against `moat-conformance-test-agent`, a relay+agent with one planted
//! bug per mode: each bug must be caught within seconds, with a minimised reproducer that
//! `replay` still fails against the buggy agent and passes against the well-behaved one; and the
//! well-behaved mode must fuzz clean.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use moat_conformance::fuzz::replay::Reproducer;

/// How long a planted bug may take to be found, minimised and written.
const FIND_WITHIN: Duration = Duration::from_secs(40);

/// `--seconds` for runs that must find a bug (they stop at the first finding).
const FUZZ_SECONDS: &str = "30";

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-planted").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running test agent, killed (with any children it leaked) when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, mode: &str) -> Agent {
        let socket = dir.join(format!("{mode}.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_moat-conformance-test-agent"))
            .args(["--socket", socket.to_str().unwrap(), "--mode", mode])
            .spawn()
            .unwrap();
        let started = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "the {mode} agent never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, socket }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for child in children_of(self.child.id()) {
            let _ = Command::new("kill").arg(child.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|k| &stat[k + 1..]) else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.extend(entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
        }
    }
    found
}

fn conformance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat-conformance")).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fuzzes `agent` until the planted bug is found; checks the run's output and reproducer, and
/// returns the reproducer's path.
fn find_bug(dir: &Path, agent: &Agent, extra: &[&str], kind: &str, expected: &str) -> PathBuf {
    let out = dir.join("out");
    let socket = agent.socket.to_str().unwrap();
    let mut args = vec!["fuzz", "--socket", socket, "--seconds", FUZZ_SECONDS, "--seed", "1"];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    let started = Instant::now();
    let output = conformance(&args);
    let elapsed = started.elapsed();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(elapsed < FIND_WITHIN, "took {elapsed:?}: {shown}");
    assert!(shown.contains(&format!("FAIL ({kind})")), "{shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.ends_with(" inputs, 1 failures, ") || last.contains(" inputs, 1 failures, "),
        "{last}"
    );
    assert!(last.ends_with("corpus entries"), "{last}");
    let line = stdout.lines().find(|l| l.starts_with("reproducer: ")).expect(&shown);
    let path = PathBuf::from(line["reproducer: ".len()..].split(" (").next().unwrap());
    let repro = Reproducer::read(&path).unwrap();
    assert!(repro.steps.len() <= 3, "not minimised: {repro:#?}");
    assert!(repro.minimised, "{repro:#?}");
    assert!(repro.finding.detail.contains(expected), "{}", repro.finding.detail);
    let transcript = std::fs::read_to_string(path.with_extension("txt")).unwrap();
    assert!(transcript.contains("FINDING"), "{transcript}");
    path
}

fn replay(path: &Path, agent: &Agent, extra: &[&str]) -> Output {
    let mut args =
        vec!["replay", path.to_str().unwrap(), "--socket", agent.socket.to_str().unwrap()];
    args.extend(extra);
    conformance(&args)
}

#[test]
fn an_agent_that_closes_everyone_on_an_unknown_type_is_caught_and_minimised() {
    let dir = scratch("exit-on-unknown");
    let buggy = Agent::start(&dir, "exit-on-unknown");
    let path = find_bug(&dir, &buggy, &[], "ClosedAfterAdmissible", "closed the connection");
    let repro = Reproducer::read(&path).unwrap();
    assert!(
        serde_json::to_string(&repro.steps).unwrap().contains("envelope"),
        "the reproducer sends a frame: {repro:#?}"
    );
    let again = replay(&path, &buggy, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("STILL FAILS"), "{}", text(&again));
    let good = Agent::start(&dir, "good");
    let clean = replay(&path, &good, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
}

#[test]
fn an_agent_that_stalls_on_a_truncated_envelope_is_caught_as_no_pong() {
    let dir = scratch("stall-on-truncated");
    let buggy = Agent::start(&dir, "stall-on-truncated");
    let path = find_bug(&dir, &buggy, &["--ping-ms", "1000"], "NoPong", "no reply to core.ping");
    let again = replay(&path, &buggy, &["--ping-ms", "1000"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let good = Agent::start(&dir, "good");
    let clean = replay(&path, &good, &["--ping-ms", "1000"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
}

#[test]
fn an_agent_that_leaks_a_process_per_disconnect_is_caught_by_pid_watching() {
    let dir = scratch("leak-on-disconnect");
    let buggy = Agent::start(&dir, "leak-on-disconnect");
    let pid = buggy.pid();
    let watch = ["--pid", pid.as_str(), "--settle-ms", "300"];
    let path = find_bug(&dir, &buggy, &watch, "ProcessGrowth", "descendant processes");
    let again = replay(&path, &buggy, &watch);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let good = Agent::start(&dir, "good");
    let good_pid = good.pid();
    let clean = replay(&path, &good, &["--pid", good_pid.as_str(), "--settle-ms", "300"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
}

#[test]
fn the_well_behaved_agent_fuzzes_clean_for_a_few_seconds() {
    let dir = scratch("good");
    let good = Agent::start(&dir, "good");
    let pid = good.pid();
    let corpus = dir.join("corpus");
    let out = dir.join("out");
    let output = conformance(&[
        "fuzz",
        "--socket",
        good.socket.to_str().unwrap(),
        "--seconds",
        "4",
        "--seed",
        "7",
        "--jobs",
        "2",
        "--pid",
        &pid,
        "--settle-ms",
        "300",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    let inputs: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(inputs >= 5, "{last}");
    assert!(last.contains(" inputs, 0 failures, "), "{last}");
    let entries = std::fs::read_dir(&corpus).unwrap().count();
    assert!(entries > 0, "no corpus entry written: {shown}");
    assert!(!out.exists(), "a reproducer was written for a clean run");
}
