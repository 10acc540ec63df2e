//! The suite against relays that misbehave on purpose: it must fail (never pass) their cases, skip
//! what their generation lacks, and never hang, whatever the relay does.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_conformance::run::{Options, Outcome, Report, Suite};
use moat_protocol::payload::core::Ready;
use moat_protocol::relay::{Prologue, Slot};
use moat_protocol::{Message, MessageFrame};

/// Per-case timeout used against the fake relays.
const CASE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a fake relay does with each connection.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// A valid greeting announcing generation `v`, then it reads and ignores everything.
    Silent { v: u8 },
    /// Eight bytes that are neither a current nor a legacy prologue, then silence.
    BadPrologue,
    /// A valid prologue followed by a frame that is not core.ready.
    NotReady,
}

fn socket_path(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-fake-relays");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}.sock"));
    let _ = std::fs::remove_file(&path);
    path
}

/// Starts a fake relay on `path`; it serves until the test process exits.
fn fake_relay(path: &Path, script: Script) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for (k, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || serve(stream, script, k as u32 % 128));
        }
    });
}

fn serve(mut stream: UnixStream, script: Script, slot: u32) {
    let prologue = Prologue::for_slot(Slot::new(slot).unwrap()).to_bytes();
    let greeting = match script {
        Script::Silent { v } => {
            let ready = MessageFrame { id: 0, v, message: Message::Ready(Ready::default()) };
            [&prologue[..], &ready.to_bytes().unwrap()].concat()
        }
        Script::BadPrologue => vec![0, 0, 0, 9, 0, 0, 0, 1],
        Script::NotReady => {
            let ping = MessageFrame::new(0, Message::Ping);
            [&prologue[..], &ping.to_bytes().unwrap()].concat()
        }
    };
    if stream.write_all(&greeting).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn run_suite(path: &Path, patterns: &[&str]) -> (Report, Duration) {
    let mut options = Options::new(path);
    options.patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
    options.case_timeout = CASE_TIMEOUT;
    let started = Instant::now();
    let report = Suite::all().run(&options, |_| {});
    (report, started.elapsed())
}

#[test]
fn a_silent_relay_fails_each_case_by_its_timeout_and_never_hangs_the_suite() {
    let path = socket_path("silent");
    fake_relay(&path, Script::Silent { v: 10 });
    let patterns = ["framing/split_writes", "exec/echo", "fs/stat", "multi_client/*"];
    let (report, elapsed) = run_suite(&path, &patterns);
    assert_eq!(report.cases.len(), 6);
    for case in &report.cases {
        let Outcome::Fail { why } = &case.outcome else { panic!("{} did not fail", case.name) };
        // foreign_id_refused waits for a close that never comes: its own message says so.
        let expected = if case.name == "multi_client/foreign_id_refused" {
            "kept the sender connected"
        } else {
            "timed out"
        };
        assert!(why.contains(expected), "{}: {why}", case.name);
    }
    assert_eq!((report.passed(), report.failed()), (0, 6));
    // Each case stops at its own deadline; none waits for the watchdog.
    assert!(elapsed < CASE_TIMEOUT * 6 + Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn a_bad_prologue_fails_the_handshake_and_every_other_case() {
    let path = socket_path("bad-prologue");
    fake_relay(&path, Script::BadPrologue);
    let (report, _) = run_suite(&path, &[]);
    assert_eq!(report.cases.len(), Suite::all().cases().len());
    assert_eq!(report.passed() + report.skipped(), 0);
    let error = report.handshake_error.clone().unwrap();
    assert!(error.contains("prologue"), "{error}");
    let first = &report.cases[0];
    assert!(
        matches!(&first.outcome, Outcome::Fail { why } if why.contains("prologue")),
        "{first:?}"
    );
}

#[test]
fn a_first_frame_that_is_not_ready_fails_the_handshake() {
    let path = socket_path("not-ready");
    fake_relay(&path, Script::NotReady);
    let (report, _) = run_suite(&path, &["handshake/ready_decodes"]);
    let Outcome::Fail { why } = &report.cases[0].outcome else {
        panic!("{:?}", report.cases[0]);
    };
    assert!(why.contains("not core.ready"), "{why}");
}

#[test]
fn cases_newer_than_the_relay_generation_are_skipped_naming_the_generation() {
    let path = socket_path("gen2");
    fake_relay(&path, Script::Silent { v: 2 });
    let (report, _) = run_suite(&path, &["latency/ping", "errors/*", "framing/coalesced_writes"]);
    assert_eq!(report.skipped(), 5, "{report:#?}");
    for case in &report.cases {
        let Outcome::Skip { why } = &case.outcome else { panic!("{case:?}") };
        let needed = format!("needs protocol generation {}", case.needs_generation);
        assert!(why.contains(&needed) && why.contains("v=2"), "{why}");
    }
    assert!(report.summary_line().starts_with("0 passed, 0 failed, 5 skipped"));
}

#[test]
fn nothing_listening_fails_every_case_with_the_connect_error() {
    let path = socket_path("nobody");
    let (report, _) = run_suite(&path, &["exec/echo"]);
    let Outcome::Fail { why } = &report.cases[0].outcome else { panic!("{:?}", report.cases[0]) };
    assert!(why.contains("connect"), "{why}");
}
