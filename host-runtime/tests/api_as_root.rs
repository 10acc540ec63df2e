//! End to end: the async library API (`moat_runtime::api`), as a binding would use it, on the
//! namespace backend. Needs root.

use std::time::{Duration, Instant};

use moat_protocol::payload::exec::{ExecRequest, ExecRlimit};
use moat_runtime::api::{
    ExecEvent, ExecOutcome, Isolation, LabelFilter, Moat, SandboxOptions, Status,
};
use moat_runtime::config::SandboxConfig;
use moat_runtime::error::RuntimeError;

mod support;
use support::{executables, moat_home, processes_in_cgroup, require_root};

fn args(name: &str, config: SandboxConfig) -> SandboxOptions {
    SandboxOptions::new(name).isolation(Isolation::Namespace).config(config)
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

fn moat(test: &str) -> Moat {
    require_root();
    Moat::new(moat_home(test)).with_executables(executables())
}

#[tokio::test]
async fn create_exec_list_stop_remove_through_the_library_as_root() {
    let moat = moat("api-lifecycle");
    let sandbox = moat.create(args("api", SandboxConfig::default())).await.unwrap();
    assert_eq!(sandbox.state().await.unwrap().status, Status::Running);
    assert!(sandbox.socket().exists());

    let echoed = sandbox.exec(sh("cat; echo err >&2; exit 3"), b"from stdin\n".to_vec()).await;
    let echoed = echoed.unwrap();
    assert_eq!(echoed.outcome, ExecOutcome::Exited(3));
    assert_eq!(echoed.stdout, b"from stdin\n");
    assert_eq!(echoed.stderr, b"err\n");
    assert_eq!((echoed.dropped_bytes, echoed.timed_out), (0, false));

    let names: Vec<String> = moat.list().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["api".to_owned()]);
    let labeled = moat
        .create(args("labeled", SandboxConfig::default()).label("team", "infra"))
        .await
        .unwrap();
    let filter = |value: &str| LabelFilter { key: "team".into(), value: Some(value.into()) };
    let infra = moat.list_filtered(vec![filter("infra")]).await.unwrap();
    assert_eq!(infra.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["labeled"]);
    assert!(moat.list_filtered(vec![filter("web")]).await.unwrap().is_empty());
    labeled.remove(true).await.unwrap();

    let stopped = sandbox.stop().await.unwrap();
    assert_eq!(stopped.status, Status::Stopped);
    moat.get("api").await.unwrap().remove(false).await.unwrap();
    assert!(matches!(moat.get("api").await, Err(RuntimeError::UnknownSandbox(_))));
}

#[tokio::test]
async fn exec_on_a_stopped_sandbox_is_a_typed_error_as_root() {
    let moat = moat("api-stopped");
    let sandbox = moat.create(args("halted", SandboxConfig::default())).await.unwrap();
    sandbox.stop().await.unwrap();
    let err = sandbox.exec(sh("true"), Vec::new()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { status: "stopped", .. }), "{err}");
    sandbox.remove(false).await.unwrap();
}

#[tokio::test]
async fn an_unknown_sandbox_is_a_typed_error() {
    let moat = Moat::new(moat_home("api-unknown"));
    let err = moat.get("ghost").await.unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownSandbox(ref name) if name == "ghost"), "{err}");
}

#[tokio::test]
async fn exec_with_timeout_kills_the_command_and_keeps_its_output_as_root() {
    let moat = moat("api-exec-timeout");
    let sandbox = moat.create(args("slow", SandboxConfig::default())).await.unwrap();
    let start = Instant::now();
    let ran = sandbox
        .exec_with_timeout(
            sh("echo before; sleep 30; echo after"),
            Vec::new(),
            Duration::from_secs(1),
        )
        .await;
    let elapsed = start.elapsed();
    let quick =
        sandbox.exec_with_timeout(sh("echo quick"), Vec::new(), Duration::from_secs(30)).await;
    sandbox.remove(true).await.unwrap();
    let ran = ran.unwrap();
    assert!(ran.timed_out, "{ran:?}");
    assert_ne!(ran.outcome, ExecOutcome::Exited(0));
    assert_eq!(ran.stdout, b"before\n");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let quick = quick.unwrap();
    assert_eq!((quick.outcome, quick.timed_out), (ExecOutcome::Exited(0), false));
}

#[tokio::test]
async fn remove_without_force_refuses_a_running_sandbox_and_force_leaves_nothing_as_root() {
    let moat = moat("api-remove");
    let sandbox = moat.create(args("doomed", SandboxConfig::default())).await.unwrap();
    sandbox.exec(sh("sleep 600 >/dev/null 2>&1 &"), Vec::new()).await.unwrap();
    let err = sandbox.clone().remove(false).await.unwrap_err();
    assert!(matches!(err, RuntimeError::StillRunning(_)), "{err}");
    sandbox.remove(true).await.unwrap();
    assert_eq!(processes_in_cgroup("doomed"), Vec::<String>::new());
    assert!(moat.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn kill_returns_once_nothing_of_the_sandbox_runs_as_root() {
    let moat = moat("api-kill");
    let sandbox = moat.create(args("victim", SandboxConfig::default())).await.unwrap();
    sandbox.exec(sh("sleep 600 >/dev/null 2>&1 &"), Vec::new()).await.unwrap();
    let killed = sandbox.kill().await.unwrap();
    assert_eq!(processes_in_cgroup("victim"), Vec::<String>::new());
    assert_eq!((killed.status, killed.exit_code), (Status::Stopped, Some(137)));
    sandbox.remove(false).await.unwrap();
}

#[tokio::test]
async fn wait_returns_when_the_sandbox_shuts_itself_down_as_root() {
    let moat = moat("api-wait");
    let config = SandboxConfig { idle_timeout_secs: Some(1), ..SandboxConfig::default() };
    let sandbox = moat.create(args("waiter", config)).await.unwrap();
    let state = sandbox.wait(Duration::from_secs(30)).await;
    let _ = sandbox.remove(true).await;
    let state = state.unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.exit_code, Some(0));
}

#[tokio::test]
async fn wait_times_out_on_a_running_sandbox_as_root() {
    let moat = moat("api-wait-timeout");
    let sandbox = moat.create(args("busy", SandboxConfig::default())).await.unwrap();
    let waited = sandbox.wait(Duration::from_millis(200)).await;
    let _ = sandbox.remove(true).await;
    let err = waited.unwrap_err();
    assert!(matches!(err, RuntimeError::WaitTimeout { .. }), "{err}");
}

#[tokio::test]
async fn exec_stream_delivers_started_output_and_exit_in_order_with_a_stdin_sink_as_root() {
    let moat = moat("api-stream");
    let sandbox = moat.create(args("streamer", SandboxConfig::default())).await.unwrap();
    let mut stream =
        sandbox.exec_stream(sh("echo first; cat; echo oops >&2; exit 5")).await.unwrap();
    assert_eq!(stream.next().await, Some(ExecEvent::Started));
    assert_eq!(stream.next().await, Some(ExecEvent::Stdout(b"first\n".to_vec())));
    stream.write_stdin(b"echoed\n".to_vec()).await.unwrap();
    assert_eq!(stream.next().await, Some(ExecEvent::Stdout(b"echoed\n".to_vec())));
    stream.close_stdin().await.unwrap();
    assert_eq!(stream.next().await, Some(ExecEvent::Stderr(b"oops\n".to_vec())));
    assert_eq!(stream.next().await, Some(ExecEvent::Exited(ExecOutcome::Exited(5))));
    assert_eq!(stream.next().await, None);
    let err = stream.write_stdin(b"late".to_vec()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::SessionEnded), "{err}");
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn exec_stream_signal_and_kill_end_the_command_as_root() {
    let moat = moat("api-signal");
    let sandbox = moat.create(args("signalled", SandboxConfig::default())).await.unwrap();
    let trap = sh("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done");
    let mut stream = sandbox.exec_stream(trap).await.unwrap();
    assert_eq!(stream.next().await, Some(ExecEvent::Started));
    assert_eq!(stream.next().await, Some(ExecEvent::Stdout(b"ready\n".to_vec())));
    stream.signal(libc::SIGTERM).await.unwrap();
    // The agent signals the command's process group: the shell's `sleep` dies too, and the
    // shell may report it on stderr first.
    let mut stdout = Vec::new();
    let outcome = loop {
        match stream.next().await.unwrap() {
            ExecEvent::Stdout(data) => stdout.extend(data),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited(outcome) => break outcome,
            ExecEvent::Started => panic!("a second started"),
        }
    };
    assert_eq!((stdout.as_slice(), outcome), (&b"got TERM\n"[..], ExecOutcome::Exited(7)));

    let stream = sandbox.exec_stream(sh("exec sleep 600")).await.unwrap();
    stream.kill().await.unwrap();
    assert_ne!(stream.wait().await.unwrap(), ExecOutcome::Exited(0));
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn a_dropped_exec_stream_kills_its_command_as_root() {
    let moat = moat("api-dropped");
    let sandbox = moat.create(args("dropper", SandboxConfig::default())).await.unwrap();
    let mut stream = sandbox.exec_stream(sh("echo go; exec sleep 4242")).await.unwrap();
    assert_eq!(stream.next().await, Some(ExecEvent::Started));
    assert_eq!(stream.next().await, Some(ExecEvent::Stdout(b"go\n".to_vec())));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    let sleeping = || processes_in_cgroup("dropper").iter().any(|p| p.ends_with("sleep"));
    while sleeping() {
        assert!(Instant::now() < deadline, "the dropped stream's command still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = sandbox.exec(sh("echo alive"), Vec::new()).await.unwrap();
    assert_eq!(after.stdout, b"alive\n");
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn per_exec_env_cwd_user_and_rlimits_apply_as_root() {
    let moat = moat("api-per-exec");
    let sandbox = moat.create(args("options", SandboxConfig::default())).await.unwrap();
    let mut request = sh("echo $GREETING; pwd; id -u; ulimit -n");
    request.env = vec!["GREETING=hi".to_owned()];
    request.cwd = Some("/tmp".to_owned());
    request.user = Some("65534".to_owned());
    request.rlimits = vec![ExecRlimit { resource: "nofile".to_owned(), soft: 77, hard: 77 }];
    let ran = sandbox.exec(request, Vec::new()).await;
    sandbox.remove(true).await.unwrap();
    let ran = ran.unwrap();
    assert_eq!(ran.outcome, ExecOutcome::Exited(0), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi\n/tmp\n65534\n77\n");
}

#[tokio::test]
async fn shell_runs_scripts_with_the_configured_shell_as_root() {
    let moat = moat("api-shell");
    let plain = moat.create(args("plain", SandboxConfig::default())).await.unwrap();
    let config = SandboxConfig { shell: Some("/bin/bash".to_owned()), ..SandboxConfig::default() };
    let bash = moat.create(args("bash", config)).await.unwrap();
    let (default, configured) = (plain.shell("echo $0").await, bash.shell("echo $0").await);
    plain.remove(true).await.unwrap();
    bash.remove(true).await.unwrap();
    assert_eq!(default.unwrap().stdout, b"/bin/sh\n");
    assert_eq!(configured.unwrap().stdout, b"/bin/bash\n");
}
