//! End to end: `drain` (no new exec, the running ones finish, then the sandbox stops) through the
//! async library, a raw relay client and the CLI, on the namespace backend. Needs root.

use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecEvent, ExecOutcome, Isolation, Moat, SandboxOptions, Status};
use moat_runtime::error::RuntimeError;
use moat_runtime::relay_client::RelayClient;
use moat_runtime::supervisor::STOPPED_DRAINED;

mod support;
use support::{executables, moat, moat_home, require_root, stderr, stdout};

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

#[tokio::test]
async fn drain_refuses_new_execs_while_a_running_one_finishes_then_stops_as_root() {
    require_root();
    let moat = Moat::new(moat_home("drain")).with_executables(executables());
    let sandbox =
        moat.create(SandboxOptions::new("drained").isolation(Isolation::Namespace)).await.unwrap();
    let mut running = sandbox.exec_stream(sh("sleep 2; echo finished")).await.unwrap();
    assert_eq!(running.next().await, Some(ExecEvent::Started));

    let drained = sandbox.drain().await.unwrap();
    assert_eq!(drained.status, Status::Draining);
    let refused = sandbox.exec(sh("echo new"), Vec::new()).await.unwrap_err();
    assert!(matches!(refused, RuntimeError::NotRunning { status: "draining", .. }), "{refused}");
    // A protocol client that never looks at moat's state is refused by the relay.
    let socket = sandbox.socket();
    let raw = tokio::task::spawn_blocking(move || {
        RelayClient::connect(&socket)?.run_captured(sh("echo sneaked in"), b"", 1024, None)
    });
    let raw = raw.await.unwrap().unwrap();
    assert_eq!(raw.outcome, ExecOutcome::Refused(moat_relay::router::DRAINING_MESSAGE.into()));
    assert!(raw.stdout.is_empty());
    let again = sandbox.drain().await.unwrap();
    assert_eq!(again.status, Status::Draining, "a second drain is the first one");

    // The running exec finishes with its output; only then does the sandbox stop.
    assert_eq!(running.next().await, Some(ExecEvent::Stdout(b"finished\n".to_vec())));
    assert_eq!(running.next().await, Some(ExecEvent::Exited(ExecOutcome::Exited(0))));
    let ended = sandbox.wait(Duration::from_secs(15)).await.unwrap();
    assert_eq!(ended.status, Status::Stopped);
    assert_eq!(ended.stop_reason.as_deref(), Some(STOPPED_DRAINED));
    assert_eq!(ended.exit_code, Some(0));

    let stopped = sandbox.drain().await.unwrap_err();
    assert!(matches!(stopped, RuntimeError::NotRunning { status: "stopped", .. }), "{stopped}");
    // Started again, it takes execs: the drain request went with the old sandbox process.
    sandbox.start().await.unwrap();
    let ran = sandbox.exec(sh("echo back"), Vec::new()).await.unwrap();
    assert_eq!(ran.stdout, b"back\n");
    sandbox.remove(true).await.unwrap();
}

#[test]
fn moat_drain_stops_an_idle_sandbox_at_once_as_root() {
    require_root();
    let home = moat_home("drain-cli");
    let created = moat(&home, &["create", "cli-drain", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let began = Instant::now();
    let drained = moat(&home, &["drain", "cli-drain"]);
    assert_eq!(drained.status.code(), Some(0), "{}", stderr(&drained));
    let waited = moat(&home, &["wait", "cli-drain", "--timeout", "10"]);
    assert_eq!(stdout(&waited), "0\n", "{}", stderr(&waited));
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    let refused = moat(&home, &["drain", "cli-drain"]);
    assert_eq!(
        stderr(&refused),
        "moat drain: sandbox \"cli-drain\" is not running (it is stopped)\n"
    );
    let unknown = moat(&home, &["drain", "nobody"]);
    assert_eq!(stderr(&unknown), "moat drain: no sandbox named \"nobody\"\n");
    let _ = moat(&home, &["rm", "-f", "cli-drain"]);
}
