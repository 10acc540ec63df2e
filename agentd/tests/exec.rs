//! Exec sessions against real processes, driven only through `ExecManager` and observed as the
//! host would see them: decoded frames from the `Outbound` queue.
//!
//! The reaper calls `waitpid(-1)`, so this binary must not spawn children any other way, and all
//! tests share one reaper (one per process). The process makes itself a child subreaper so that
//! orphans reparent to it, as they do to agentd as PID 1.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use moat_agentd::exec::{ExecConfig, ExecError, ExecManager, MAX_STDIN_QUEUE_BYTES};
use moat_agentd::outbound::{OUTBOUND_QUEUE_FRAMES, Outbound};
use moat_agentd::process::Reaper;
use moat_protocol::payload::exec::{
    ExecFailed, ExecFailureKind, ExecLimits, ExecRequest, ExecRlimit, ExecStdinError, output_charge,
};
use moat_protocol::relay::IdRange;
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};
use tokio::sync::mpsc;

/// The request generation of a session on the legacy path (no flow control).
const LEGACY_GENERATION: u8 = 9;

/// Longest wait for any single frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

fn reaper() -> Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
            Reaper::start().expect("starting the reaper")
        })
        .clone()
}

/// Everything the host saw on one session id.
#[derive(Debug, Default)]
struct Outcome {
    started: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdin_errors: Vec<ExecStdinError>,
    /// The last `exec.stdin.ack`.
    stdin_acked: u64,
    /// Output charge received (generation 10: `Σ(len + 256)`).
    charge: u64,
    exited: Option<i32>,
    failed: Option<ExecFailed>,
}

impl Outcome {
    fn is_done(&self) -> bool {
        self.exited.is_some() || self.failed.is_some()
    }

    /// Applies one message, checking the protocol's ordering rules.
    fn apply(&mut self, message: Message) {
        assert!(!self.is_done(), "a message after the terminal one: {message:?}");
        match message {
            Message::ExecStarted(started) => {
                assert!(self.started.is_none(), "exec.started twice");
                self.started = Some(started.pid);
            }
            Message::ExecStdout(data) => {
                assert!(self.started.is_some(), "output before exec.started");
                self.charge += output_charge(data.data.len());
                self.stdout.extend_from_slice(&data.data);
            }
            Message::ExecStderr(data) => {
                assert!(self.started.is_some(), "output before exec.started");
                self.charge += output_charge(data.data.len());
                self.stderr.extend_from_slice(&data.data);
            }
            Message::ExecStdinError(err) => self.stdin_errors.push(err),
            Message::ExecStdinAck(ack) => {
                assert!(ack.consumed > self.stdin_acked, "stdin ack did not advance");
                self.stdin_acked = ack.consumed;
            }
            Message::ExecExited(exited) => {
                assert!(self.started.is_some(), "exec.exited without exec.started");
                self.exited = Some(exited.code);
            }
            Message::ExecFailed(failed) => {
                assert!(self.started.is_none(), "exec.failed after exec.started");
                self.failed = Some(failed);
            }
            other => panic!("unexpected message {other:?}"),
        }
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A manager and the host's view of its output.
struct Host {
    manager: ExecManager,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: HashMap<u32, Outcome>,
    next_id: u32,
}

impl Host {
    fn new() -> Host {
        Host::with_config(config())
    }

    fn with_config(config: ExecConfig) -> Host {
        let (out, rx) = Outbound::channel();
        let manager = ExecManager::new(config, reaper(), out);
        Host { manager, rx, seen: HashMap::new(), next_id: 1 }
    }

    /// Starts a legacy (generation < 10) session: no flow control.
    fn start(&mut self, request: ExecRequest) -> u32 {
        self.start_v(LEGACY_GENERATION, request)
    }

    fn start_v(&mut self, v: u8, request: ExecRequest) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.manager.start(id, v, request).expect("start");
        id
    }

    /// Receives one frame and records it; returns its id.
    async fn pump(&mut self) -> u32 {
        let bytes = tokio::time::timeout(FRAME_TIMEOUT, self.rx.recv())
            .await
            .expect("timed out waiting for a frame")
            .expect("outbound closed");
        let frame = decode(&bytes);
        self.seen.entry(frame.id).or_default().apply(frame.message);
        frame.id
    }

    fn outcome(&mut self, id: u32) -> &mut Outcome {
        self.seen.entry(id).or_default()
    }

    /// Pumps until `id` ends, and returns what it saw.
    async fn finish(&mut self, id: u32) -> Outcome {
        while !self.outcome(id).is_done() {
            self.pump().await;
        }
        self.seen.remove(&id).unwrap_or_default()
    }

    /// Pumps until `id` has started.
    async fn started(&mut self, id: u32) -> u32 {
        while self.outcome(id).started.is_none() {
            assert!(!self.outcome(id).is_done(), "session ended before starting");
            self.pump().await;
        }
        self.outcome(id).started.unwrap_or_default()
    }

    /// Pumps until `id`'s stdout contains `needle`.
    async fn wait_stdout(&mut self, id: u32, needle: &str) {
        while !self.outcome(id).stdout_text().contains(needle) {
            assert!(!self.outcome(id).is_done(), "ended without printing {needle:?}");
            self.pump().await;
        }
    }

    /// Acknowledges all output `id` has received so far (generation 10).
    fn ack(&mut self, id: u32) {
        let charge = self.outcome(id).charge;
        self.manager.output_ack(id, charge).expect("a valid ack");
    }

    /// Pumps `id` to its end, acknowledging all output received before each wait.
    async fn finish_acking(&mut self, id: u32) -> Outcome {
        while !self.outcome(id).is_done() {
            self.ack(id);
            self.pump().await;
        }
        self.seen.remove(&id).unwrap_or_default()
    }

    /// Pumps frames until none arrives for `quiet`.
    async fn pump_until_quiet(&mut self, quiet: Duration) {
        while let Ok(Some(bytes)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            let frame = decode(&bytes);
            self.seen.entry(frame.id).or_default().apply(frame.message);
        }
    }

    async fn run(&mut self, request: ExecRequest) -> Outcome {
        let id = self.start(request);
        self.finish(id).await
    }
}

fn decode(bytes: &[u8]) -> MessageFrame {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    let raw = decoder.next_frame().expect("frame").expect("a whole frame");
    match decode_frame(&raw).expect("decodes") {
        Decoded::Message(frame) => frame,
        other => panic!("not a message frame: {other:?}"),
    }
}

fn config() -> ExecConfig {
    ExecConfig {
        default_cwd: None,
        default_user: None,
        base_env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("HOME".into(), "/".into())],
        root: "/".into(),
        confinement: Default::default(),
        limits: Default::default(),
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest { args: vec!["-c".into(), script.into()], ..ExecRequest::new("sh") }
}

#[tokio::test]
async fn echo_prints_and_exits_zero() {
    let mut host = Host::new();
    let request = ExecRequest { args: vec!["hello".into()], ..ExecRequest::new("echo") };
    let outcome = host.run(request).await;
    assert!(outcome.started.is_some_and(|pid| pid > 0));
    assert_eq!((outcome.stdout_text().as_str(), outcome.exited), ("hello\n", Some(0)));
    assert!(outcome.stderr.is_empty());
}

#[tokio::test]
async fn exit_status_is_reported() {
    let outcome = Host::new().run(sh("exit 7")).await;
    assert_eq!(outcome.exited, Some(7));
}

#[tokio::test]
async fn instantly_exiting_children_never_lose_their_status() {
    let mut host = Host::new();
    for _ in 0..30 {
        let outcome = host.run(ExecRequest::new("true")).await;
        assert_eq!(outcome.exited, Some(0));
    }
}

#[tokio::test]
async fn stderr_is_separate_from_stdout() {
    let outcome = Host::new().run(sh("echo out; echo err >&2")).await;
    assert_eq!(outcome.stdout_text(), "out\n");
    assert_eq!(String::from_utf8_lossy(&outcome.stderr), "err\n");
    assert_eq!(outcome.exited, Some(0));
}

#[tokio::test]
async fn sigkill_reports_minus_one() {
    let mut host = Host::new();
    let id = host.start(ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") });
    host.started(id).await;
    host.manager.signal(id, libc::SIGKILL).unwrap();
    assert_eq!(host.finish(id).await.exited, Some(-1));
}

#[tokio::test]
async fn signal_reaches_the_whole_process_group() {
    let mut host = Host::new();
    // The background sleep keeps stdout open: exited only arrives once it dies too.
    let id = host.start(sh("sleep 30 & sleep 30"));
    host.started(id).await;
    let begun = Instant::now();
    host.manager.signal(id, libc::SIGTERM).unwrap();
    assert_eq!(host.finish(id).await.exited, Some(-1));
    assert!(begun.elapsed() < Duration::from_secs(10), "the background job outlived the signal");
}

#[tokio::test]
async fn invalid_signal_numbers_are_ignored() {
    let mut host = Host::new();
    let id = host.start(sh("sleep 0.2; exit 3"));
    host.started(id).await;
    for signal in [0, -1, 65, 1000] {
        host.manager.signal(id, signal).unwrap();
    }
    assert_eq!(host.finish(id).await.exited, Some(3));
}

#[tokio::test]
async fn stdin_round_trips_through_cat() {
    let mut host = Host::new();
    let id = host.start(ExecRequest::new("cat"));
    host.manager.stdin(id, b"hello ".to_vec()).unwrap();
    host.manager.stdin(id, b"world\n".to_vec()).unwrap();
    host.manager.stdin(id, Vec::new()).unwrap();
    let outcome = host.finish(id).await;
    assert_eq!((outcome.stdout_text().as_str(), outcome.exited), ("hello world\n", Some(0)));
}

#[tokio::test]
async fn stdin_eof_ends_cat() {
    let mut host = Host::new();
    let id = host.start(ExecRequest::new("cat"));
    host.manager.stdin(id, Vec::new()).unwrap();
    let outcome = host.finish(id).await;
    assert_eq!((outcome.stdout.len(), outcome.exited), (0, Some(0)));
}

#[tokio::test]
async fn stdin_after_eof_is_rejected_with_a_report_for_the_caller() {
    let mut host = Host::new();
    let id = host.start(sh("cat; sleep 0.2"));
    host.manager.stdin(id, Vec::new()).unwrap();
    let err = host.manager.stdin(id, b"late".to_vec()).unwrap_err();
    assert_eq!(err, ExecError::StdinAfterEof);
    let report = err.stdin_error().expect("a stdin.error for the dispatcher to send");
    assert!(report.message.contains("EOF"), "{report:?}");
    let outcome = host.finish(id).await;
    assert!(outcome.stdin_errors.is_empty(), "the manager must not report it twice");
    assert_eq!(outcome.exited, Some(0));
}

#[tokio::test]
async fn stdin_into_a_closed_pipe_reports_epipe() {
    let mut host = Host::new();
    let id = host.start(sh("exec 0<&-; echo closed; sleep 0.5"));
    host.wait_stdout(id, "closed").await;
    host.manager.stdin(id, b"nobody reads this".to_vec()).unwrap();
    let outcome = host.finish(id).await;
    assert_eq!(outcome.exited, Some(0));
    let errors = &outcome.stdin_errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].errno, errors[0].errno_name.as_deref()), (Some(32), Some("EPIPE")));
}

#[tokio::test]
async fn stdin_over_the_queue_limit_is_dropped_with_a_report_naming_the_limit() {
    let mut host = Host::new();
    // The child never reads: the first chunk fills the pipe and stays in flight.
    let id = host.start(ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") });
    host.started(id).await;
    let chunk = MAX_STDIN_QUEUE_BYTES / 2;
    host.manager.stdin(id, vec![b'x'; chunk]).unwrap();
    host.manager.stdin(id, vec![b'y'; chunk]).unwrap();
    let err = host.manager.stdin(id, vec![b'z'; 1]).unwrap_err();
    assert!(matches!(
        err,
        ExecError::StdinQueueFull { limit_bytes, .. } if limit_bytes == MAX_STDIN_QUEUE_BYTES
    ));
    let report = err.stdin_error().expect("a stdin.error for the dispatcher to send");
    assert!(report.message.contains(&MAX_STDIN_QUEUE_BYTES.to_string()), "{report:?}");
    assert_eq!(report.errno, None);
    host.manager.signal(id, libc::SIGKILL).unwrap();
    let outcome = host.finish(id).await;
    assert_eq!(outcome.exited, Some(-1));
    // The in-flight write may fail with EPIPE once the child is dead; that is the session's own
    // report. The rejection itself (no errno) is the caller's to send, never the manager's.
    let rejections: Vec<_> = outcome.stdin_errors.iter().filter(|e| e.errno.is_none()).collect();
    assert!(rejections.is_empty(), "the manager must not report it twice: {rejections:?}");
}

#[tokio::test]
async fn pty_session_has_a_terminal_and_merges_output() {
    let request = ExecRequest {
        tty: true,
        ..sh("test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; tty; echo to-stderr >&2")
    };
    let outcome = Host::new().run(request).await;
    let text = outcome.stdout_text();
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("to-stderr"), "{text:?}");
    assert!(outcome.stderr.is_empty());
    assert_eq!(outcome.exited, Some(0));
}

#[tokio::test]
async fn pty_resize_applies_and_empty_stdin_is_ignored() {
    let mut host = Host::new();
    let request =
        ExecRequest { tty: true, rows: 24, cols: 80, ..sh("stty size; read line; stty size") };
    let id = host.start(request);
    host.wait_stdout(id, "24 80").await;
    host.manager.resize(id, 30, 100).unwrap();
    host.manager.stdin(id, Vec::new()).unwrap();
    host.manager.stdin(id, b"go\n".to_vec()).unwrap();
    let outcome = host.finish(id).await;
    assert!(outcome.stdout_text().contains("30 100"), "{:?}", outcome.stdout_text());
    assert_eq!(outcome.exited, Some(0));
}

#[tokio::test]
async fn resize_without_a_tty_is_a_no_op() {
    let mut host = Host::new();
    let id = host.start(sh("sleep 0.1"));
    host.manager.resize(id, 10, 10).unwrap();
    assert_eq!(host.finish(id).await.exited, Some(0));
}

#[tokio::test]
async fn twenty_five_sessions_run_concurrently() {
    let mut host = Host::new();
    let ids: Vec<u32> =
        (0..25).map(|n| host.start(sh(&format!("sleep 0.2; echo session-{n}")))).collect();
    assert_eq!(host.manager.active(), 25);
    let begun = Instant::now();
    for (n, id) in ids.iter().enumerate() {
        let outcome = host.finish(*id).await;
        assert_eq!(outcome.stdout_text(), format!("session-{n}\n"));
        assert_eq!(outcome.exited, Some(0));
    }
    assert!(begun.elapsed() < Duration::from_secs(5), "sessions ran one after another");
    assert_eq!(host.manager.active(), 0);
}

#[tokio::test]
async fn large_output_arrives_intact_with_bounded_buffering() {
    const TOTAL_BYTES: usize = 64 * 1024 * 1024;
    const LINE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";
    let mut host = Host::new();
    let script = format!("yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c {TOTAL_BYTES}");
    let id = host.start(sh(&script));
    let pid = host.started(id).await;
    // Nobody drains for a while: the queue fills and the child must block, not finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(host.rx.len() <= OUTBOUND_QUEUE_FRAMES);
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("child still exists");
    assert!(!state.contains(") Z "), "the child finished without being drained: {state}");
    let mut received = 0usize;
    let mut frames = 0usize;
    loop {
        let bytes = tokio::time::timeout(FRAME_TIMEOUT, host.rx.recv()).await.unwrap().unwrap();
        let frame = decode(&bytes);
        assert_eq!(frame.id, id);
        match frame.message {
            Message::ExecStdout(data) => {
                assert!(data.data.len() <= moat_agentd::exec::OUTPUT_CHUNK_BYTES);
                for (i, byte) in data.data.iter().enumerate() {
                    assert_eq!(
                        *byte,
                        LINE[(received + i) % LINE.len()],
                        "corrupt at {}",
                        received + i
                    );
                }
                received += data.data.len();
            }
            Message::ExecExited(exited) => {
                assert_eq!(exited.code, 0);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        frames += 1;
        if frames % 256 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(received, TOTAL_BYTES);
}

#[tokio::test]
async fn unknown_command_fails_with_not_found() {
    let outcome = Host::new().run(ExecRequest::new("moat-no-such-command")).await;
    let failed = outcome.failed.expect("exec.failed");
    assert_eq!(failed.kind, ExecFailureKind::NotFound);
    assert_eq!((failed.errno, failed.errno_name.as_deref()), (Some(2), Some("ENOENT")));
    assert_eq!(failed.stage.as_deref(), Some("execvp"));
    assert!(outcome.started.is_none());
}

#[tokio::test]
async fn script_without_shebang_fails_with_not_executable() {
    let path = std::env::temp_dir().join(format!("moat-exec-noshebang-{}", std::process::id()));
    std::fs::write(&path, "echo hi\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let outcome = Host::new().run(ExecRequest::new(path.to_str().unwrap())).await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(outcome.failed.expect("exec.failed").kind, ExecFailureKind::NotExecutable);
}

#[tokio::test]
async fn file_without_execute_bit_fails_with_permission_denied() {
    let path = std::env::temp_dir().join(format!("moat-exec-noexec-{}", std::process::id()));
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let outcome = Host::new().run(ExecRequest::new(path.to_str().unwrap())).await;
    std::fs::remove_file(&path).unwrap();
    let failed = outcome.failed.expect("exec.failed");
    assert_eq!(
        (failed.kind, failed.errno),
        (ExecFailureKind::PermissionDenied, Some(libc::EACCES))
    );
}

#[tokio::test]
async fn path_search_passes_over_missing_and_non_executable_entries_as_execvp_does() {
    let dir = std::env::temp_dir().join(format!("moat-exec-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shadow = dir.join("moat-path-probe");
    std::fs::write(&shadow, "#!/bin/sh\necho shadow\n").unwrap();
    std::fs::set_permissions(&shadow, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let real = dir.join("bin");
    std::fs::create_dir_all(&real).unwrap();
    let probe = real.join("moat-path-probe");
    std::fs::write(&probe, "#!/bin/sh\necho real\n").unwrap();
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = |dirs: &[&std::path::Path]| {
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!("PATH=/nonexistent/moat:{}", dirs.join(":"))
    };
    let request =
        |env: String| ExecRequest { env: vec![env], ..ExecRequest::new("moat-path-probe") };
    // The non-executable one comes first: skipped (EACCES), the next one runs.
    let outcome = Host::new().run(request(path(&[&dir, &real]))).await;
    // Only the non-executable one: EACCES wins over the missing entries' ENOENT.
    let denied = Host::new().run(request(path(&[&dir]))).await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((outcome.stdout_text().as_str(), outcome.exited), ("real\n", Some(0)));
    let failed = denied.failed.expect("exec.failed");
    assert_eq!(
        (failed.kind, failed.errno),
        (ExecFailureKind::PermissionDenied, Some(libc::EACCES))
    );
}

#[tokio::test]
async fn missing_cwd_fails_with_bad_cwd() {
    let request =
        ExecRequest { cwd: Some("/nonexistent/moat-cwd".into()), ..ExecRequest::new("true") };
    let failed = Host::new().run(request).await.failed.expect("exec.failed");
    assert_eq!((failed.kind, failed.errno), (ExecFailureKind::BadCwd, Some(libc::ENOENT)));
}

#[tokio::test]
async fn unknown_user_fails_with_user_setup_failed() {
    let request =
        ExecRequest { user: Some("moat-no-such-user".into()), ..ExecRequest::new("true") };
    let failed = Host::new().run(request).await.failed.expect("exec.failed");
    assert_eq!(failed.kind, ExecFailureKind::UserSetupFailed);
}

#[tokio::test]
async fn nul_byte_in_an_argument_fails_with_bad_args() {
    let request = ExecRequest { args: vec!["a\0b".into()], ..ExecRequest::new("echo") };
    let failed = Host::new().run(request).await.failed.expect("exec.failed");
    assert_eq!(failed.kind, ExecFailureKind::BadArgs);
}

#[tokio::test]
async fn cwd_request_then_default_apply() {
    let outcome =
        Host::new().run(ExecRequest { cwd: Some("/tmp".into()), ..ExecRequest::new("pwd") }).await;
    assert_eq!(outcome.stdout_text(), "/tmp\n");
    let config = ExecConfig { default_cwd: Some("/proc".into()), ..config() };
    let outcome = Host::with_config(config).run(ExecRequest::new("pwd")).await;
    assert_eq!(outcome.stdout_text(), "/proc\n");
}

#[tokio::test]
async fn env_overlays_base_and_puts_scripts_on_path() {
    let request = ExecRequest {
        env: vec!["FOO=bar".into(), "IGNORED".into()],
        ..sh("echo \"$FOO|$HOME|$PATH\"")
    };
    let outcome = Host::new().run(request).await;
    let root_home =
        moat_agentd::users::UserDb::load("/".as_ref()).resolve("0").unwrap().home.unwrap();
    assert_eq!(outcome.stdout_text(), format!("bar|{root_home}|/.msb/scripts:/usr/bin:/bin\n"));
}

#[tokio::test]
async fn rlimits_are_applied_and_unknown_names_skipped() {
    let limit =
        |resource: &str, value| ExecRlimit { resource: resource.into(), soft: value, hard: value };
    let request =
        ExecRequest { rlimits: vec![limit("nofile", 123), limit("bogus", 1)], ..sh("ulimit -n") };
    let outcome = Host::new().run(request).await;
    assert_eq!((outcome.stdout_text().as_str(), outcome.exited), ("123\n", Some(0)));
}

#[tokio::test]
async fn user_switch_sets_uid_gid_and_groups_needs_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root to switch users");
    let request = ExecRequest { user: Some("65534:65534".into()), ..sh("id -u; id -g; id -G") };
    let outcome = Host::new().run(request).await;
    assert_eq!(outcome.stdout_text(), "65534\n65534\n65534\n");
}

/// The `Uid:` and `Gid:` lines of every thread of this process (real, effective, saved, fs).
fn own_thread_credentials() -> Vec<String> {
    let mut lines = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let status = std::fs::read_to_string(task.unwrap().path().join("status"));
        // A thread may end between the listing and the read.
        let Ok(status) = status else { continue };
        let ids = status.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"));
        lines.extend(ids.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    lines
}

#[tokio::test]
async fn user_switch_leaves_the_agents_own_credentials_alone_needs_root() {
    // The child shares the agent's memory (a vfork-style clone); glibc's setuid wrappers would
    // have switched every thread of the agent, which is this test process.
    assert!(nix::unistd::geteuid().is_root(), "this test needs root to switch users");
    let request = ExecRequest { user: Some("65534:65534".into()), ..sh("id -u") };
    let outcome = Host::new().run(request).await;
    assert_eq!(outcome.stdout_text(), "65534\n");
    let lines = own_thread_credentials();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in lines {
        assert!(line == "Uid: 0 0 0 0" || line == "Gid: 0 0 0 0", "{line}");
    }
}

#[tokio::test]
async fn child_starts_with_default_signals_and_an_empty_mask() {
    // The agent (this process) ignores SIGPIPE and spawns with every signal blocked; the
    // program must see neither.
    let status = Host::new()
        .run(ExecRequest { args: vec!["/proc/self/status".into()], ..ExecRequest::new("cat") })
        .await;
    let text = status.stdout_text();
    let field = |name: &str| text.lines().find(|l| l.starts_with(name)).map(str::to_owned);
    assert_eq!(field("SigBlk:").as_deref(), Some("SigBlk:\t0000000000000000"));
    assert_eq!(field("SigIgn:").as_deref(), Some("SigIgn:\t0000000000000000"));
}

#[tokio::test]
async fn spawning_restores_the_callers_signal_mask() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut mine = SigSet::empty();
    mine.add(Signal::SIGUSR2);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mine), None).unwrap();
    // The current-thread runtime spawns on this thread.
    let outcome = Host::new().run(ExecRequest::new("true")).await;
    let mut after = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), Some(&mut after)).unwrap();
    assert_eq!(outcome.exited, Some(0));
    assert!(after.contains(Signal::SIGUSR2));
    assert!(!after.contains(Signal::SIGUSR1) && !after.contains(Signal::SIGTERM));
}

#[tokio::test]
async fn failed_step_in_the_child_reports_its_stage_and_errno() {
    // A soft limit above the hard one makes the child's setrlimit fail with EINVAL.
    let limit = ExecRlimit { resource: "nofile".into(), soft: 64, hard: 32 };
    let request = ExecRequest { rlimits: vec![limit], ..ExecRequest::new("true") };
    let outcome = Host::new().run(request).await;
    let failed = outcome.failed.expect("exec.failed");
    assert_eq!(failed.stage.as_deref(), Some("setrlimit(RLIMIT_NOFILE)"));
    assert_eq!((failed.kind, failed.errno), (ExecFailureKind::Other, Some(libc::EINVAL)));
    assert!(outcome.started.is_none());
}

#[tokio::test]
async fn orphaned_grandchild_is_reaped() {
    let mut host = Host::new();
    let outcome = host.run(sh("sleep 0.5 </dev/null >/dev/null 2>&1 & echo $!")).await;
    assert_eq!(outcome.exited, Some(0));
    let orphan: u32 = outcome.stdout_text().trim().parse().expect("orphan pid");
    let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).expect("orphan still alive");
    let ppid: u32 =
        stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, std::process::id(), "the orphan did not reparent to the subreaper");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(Instant::now() < deadline, "orphan {orphan} was never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_range_kills_only_sessions_in_the_range() {
    let mut host = Host::new();
    let sleeper = || ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") };
    host.manager.start(10, LEGACY_GENERATION, sleeper()).unwrap();
    host.manager.start(500, LEGACY_GENERATION, sleeper()).unwrap();
    host.started(10).await;
    host.started(500).await;
    host.manager.kill_range(IdRange { start: 1, end_exclusive: 100 });
    assert_eq!(host.finish(10).await.exited, Some(-1));
    assert_eq!(host.manager.active(), 1);
    host.manager.signal_all(libc::SIGTERM);
    assert_eq!(host.finish(500).await.exited, Some(-1));
}

#[tokio::test]
async fn duplicate_and_unknown_ids_are_refused() {
    let mut host = Host::new();
    let sleeper = ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") };
    host.manager.start(7, LEGACY_GENERATION, sleeper.clone()).unwrap();
    assert_eq!(
        host.manager.start(7, LEGACY_GENERATION, sleeper),
        Err(ExecError::DuplicateSession(7))
    );
    assert_eq!(host.manager.stdin(8, b"x".to_vec()), Err(ExecError::NoSuchSession(8)));
    assert_eq!(host.manager.signal(8, 9), Err(ExecError::NoSuchSession(8)));
    assert_eq!(host.manager.resize(8, 1, 1), Err(ExecError::NoSuchSession(8)));
    host.started(7).await;
    host.manager.signal(7, libc::SIGKILL).unwrap();
    assert_eq!(host.finish(7).await.exited, Some(-1));
    // Once finished, the id is no longer a session.
    assert_eq!(host.manager.signal(7, 9), Err(ExecError::NoSuchSession(7)));
}

#[tokio::test]
async fn confined_children_get_the_profile_filter_and_bounding_set_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: a child installs its filter with CAP_SYS_ADMIN, not no_new_privs"
    );
    let profile = moat_agentd::seccomp::SecurityProfile::Default;
    let confinement = moat_agentd::exec::Confinement::for_profile(profile).unwrap();
    let mut host = Host::with_config(ExecConfig { confinement, ..config() });
    let probe = format!(
        "grep -E '^(Seccomp|CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\\t'; \
         python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); \
         print(\"keyctl\", l.syscall({}, 0, 0, 0, 0, 0), ctypes.get_errno())'",
        libc::SYS_keyctl
    );
    let outcome = host.run(sh(&probe)).await;
    assert_eq!(outcome.exited, Some(0), "{}", String::from_utf8_lossy(&outcome.stderr));
    assert_eq!(
        outcome.stdout_text(),
        format!("CapBnd:00000000a80425fb\nNoNewPrivs:0\nSeccomp:2\nkeyctl -1 {}\n", libc::EPERM)
    );
    // This test process itself is untouched: only the child was confined.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(own.lines().any(|l| l.replace('\t', "") == "Seccomp:0"), "{own}");
}

/// Generation 10: a small window so a few chunks fill it.
fn flow_config() -> ExecConfig {
    let limits = ExecLimits {
        max_executions: 2,
        output_limit: 8192,
        output_chunk_size: 4096,
        input_limit: 64,
        stdin_chunk_size: 16,
    };
    ExecConfig { limits, ..config() }
}

const FLOW: u8 = 10;

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn flow_controlled_output_stops_at_the_window_and_resumes_on_ack() {
    let mut host = Host::with_config(flow_config());
    let id = host.start_v(FLOW, sh("head -c 100000 /dev/zero"));
    // The first output may take longer than QUIET on a loaded machine: wait for it, then for quiet.
    while host.outcome(id).charge == 0 {
        assert!(!host.outcome(id).is_done(), "ended without output");
        host.pump().await;
    }
    host.pump_until_quiet(QUIET).await;
    let outcome = host.outcome(id);
    assert!(outcome.charge > 0 && outcome.charge <= 8192, "charge {}", outcome.charge);
    assert!(outcome.exited.is_none(), "exited with output unacknowledged");
    assert!(outcome.stdout.len() < 100_000);
    let outcome = host.finish_acking(id).await;
    assert_eq!((outcome.exited, outcome.stdout.len()), (Some(0), 100_000));
}

#[tokio::test]
async fn exited_is_withheld_until_all_output_is_acknowledged() {
    let mut host = Host::with_config(flow_config());
    let id = host.start_v(FLOW, sh("echo hi"));
    host.wait_stdout(id, "hi").await;
    host.pump_until_quiet(QUIET).await;
    assert_eq!(host.outcome(id).stdout_text(), "hi\n");
    assert_eq!(host.outcome(id).exited, None);
    host.ack(id);
    assert_eq!(host.finish(id).await.exited, Some(0));
}

#[tokio::test]
async fn legacy_sessions_need_no_acks() {
    let mut host = Host::with_config(flow_config());
    let outcome = host.run(sh("head -c 100000 /dev/zero")).await;
    assert_eq!((outcome.exited, outcome.stdout.len()), (Some(0), 100_000));
}

#[tokio::test]
async fn a_regressing_or_over_claiming_ack_ends_only_its_session() {
    let mut host = Host::with_config(flow_config());
    for bad in [u64::MAX, 0] {
        let id = host.start_v(FLOW, sh("echo hi; sleep 30"));
        host.wait_stdout(id, "hi").await;
        let charge = host.outcome(id).charge;
        if bad == 0 {
            host.ack(id);
        }
        let wanted = if bad == 0 { charge } else { 0 };
        match host.manager.output_ack(id, bad.min(charge + 1)) {
            Err(ExecError::BadOutputAck { id: refused, .. }) if refused == id => {}
            other => panic!("ack {bad} after {wanted} acked: {other:?}"),
        }
        // Killed, and silent: the dispatcher's core.error was its terminal frame.
        host.pump_until_quiet(QUIET).await;
        assert_eq!(host.outcome(id).exited, None);
    }
    // The manager keeps serving.
    let id = host.start_v(FLOW, sh("echo again"));
    assert_eq!(host.finish_acking(id).await.stdout_text(), "again\n");
}

#[tokio::test]
async fn a_departed_clients_id_is_free_for_the_next_client_while_its_session_drains() {
    // The relay frees a departed client's range at the agent's barrier answer. A killed session
    // whose output a descendant in its own session still holds open has not ended by then, and
    // the next client in that range starts on the same id: it must get a session, not
    // "exec session 10 is already active", and the old one must stay silent.
    let mut host = Host::with_config(flow_config());
    // "detached" is printed after setsid(2), so the kill below cannot reach that process.
    let lingering = sh("setsid sh -c 'echo detached; exec sleep 3' & sleep 30");
    host.manager.start(10, FLOW, lingering).unwrap();
    host.wait_stdout(10, "detached").await;
    host.manager.kill_range(IdRange { start: 1, end_exclusive: 100 });
    host.seen.remove(&10);
    host.manager
        .start(10, FLOW, sh("echo second"))
        .expect("the id of an abandoned session is free");
    let second = host.finish_acking(10).await;
    assert_eq!((second.exited, second.stdout_text().as_str()), (Some(0), "second\n"));
    // The orphan is still draining (its descendant holds the pipe) and still counted.
    assert_eq!(host.manager.active(), 1);
    host.pump_until_quiet(QUIET).await;
    assert!(
        host.seen.get(&10).is_none_or(|o| !o.is_done() && o.stdout.is_empty()),
        "the orphan spoke"
    );
    // A live session's id is still refused.
    host.manager.start(11, FLOW, sh("sleep 30")).unwrap();
    assert_eq!(host.manager.start(11, FLOW, sh("true")), Err(ExecError::DuplicateSession(11)));
    host.manager.signal_all(libc::SIGKILL);
}

#[tokio::test]
async fn stdin_is_acknowledged_and_held_to_the_policy() {
    let mut host = Host::with_config(flow_config());
    let id = host.start_v(FLOW, ExecRequest::new("cat"));
    host.started(id).await;
    assert_eq!(host.manager.stdin(id, vec![b'x'; 17]), Err(ExecError::StdinPolicy));
    host.manager.stdin(id, b"0123456789abcdef".to_vec()).unwrap();
    while host.outcome(id).stdin_acked < 16 {
        host.pump().await;
        host.ack(id);
    }
    host.manager.stdin(id, Vec::new()).unwrap();
    let outcome = host.finish_acking(id).await;
    assert_eq!((outcome.exited, outcome.stdout_text().as_str()), (Some(0), "0123456789abcdef"));
}

#[tokio::test]
async fn stdin_beyond_the_input_window_is_refused() {
    let mut host = Host::with_config(flow_config());
    // The pushes below never yield, so the writer task cannot drain any of them (this test
    // runtime is single-threaded): the fifth 16-byte payload meets a full 64-byte window.
    let id =
        host.start_v(FLOW, ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") });
    host.started(id).await;
    let mut refused = false;
    for _ in 0..5 {
        match host.manager.stdin(id, vec![b'x'; 16]) {
            Ok(()) => {}
            Err(ExecError::StdinPolicy) => refused = true,
            Err(other) => panic!("{other:?}"),
        }
    }
    host.manager.signal(id, 9).unwrap();
    host.finish_acking(id).await;
    assert!(refused, "80 bytes went into a 64-byte window");
}

#[tokio::test]
async fn admission_refuses_past_max_executions_for_generation_10_only() {
    let mut host = Host::with_config(flow_config());
    let sleepers: Vec<u32> = (0..2)
        .map(|_| {
            host.start_v(FLOW, ExecRequest { args: vec!["30".into()], ..ExecRequest::new("sleep") })
        })
        .collect();
    for id in &sleepers {
        host.started(*id).await;
    }
    let refused = host.start_v(FLOW, ExecRequest::new("true"));
    let failed = host.finish(refused).await.failed.expect("exec.failed");
    assert_eq!(failed.kind, ExecFailureKind::ResourceLimit);
    assert_eq!(failed.stage.as_deref(), Some("execution_admission"));
    assert_eq!(failed.message, "active execution limit reached");
    // The legacy path has no admission.
    assert_eq!(host.run(ExecRequest::new("true")).await.exited, Some(0));
    for id in sleepers {
        host.manager.signal(id, 9).unwrap();
        assert_eq!(host.finish_acking(id).await.exited, Some(-1));
    }
}
