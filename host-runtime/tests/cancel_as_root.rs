//! End to end through the library, on the namespace backend: a collected exec whose future is
//! dropped kills its command, and a filesystem call past its timeout is a typed error after
//! which the next call works. Needs root.

use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecOutcome, Isolation, Moat, Sandbox, SandboxOptions};
use moat_runtime::error::RuntimeError;

mod support;
use support::{RemoveOnDrop, executables, moat_home, processes_mentioning, require_root};

async fn boot(test: &str, name: &'static str) -> (Sandbox, RemoveOnDrop) {
    require_root();
    let home = moat_home(test);
    let moat = Moat::new(&home).with_executables(executables());
    let cleanup = RemoveOnDrop::new(home, name);
    let sandbox =
        moat.create(SandboxOptions::new(name).isolation(Isolation::Namespace)).await.unwrap();
    (sandbox, cleanup)
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

/// Waits until no process on the host mentions `needle`; panics after 10 s.
fn wait_no_process(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn dropping_a_collected_exec_kills_its_command_and_the_sandbox_serves_on_as_root() {
    let (sandbox, _cleanup) = boot("cancel-exec", "cancel-exec").await;
    // Cancelled by a timeout around the future, while the command runs.
    let exec = sandbox.exec(sh("echo started; exec sleep 7731"), Vec::new());
    let cancelled = tokio::time::timeout(Duration::from_millis(1500), exec).await;
    assert!(cancelled.is_err(), "the command cannot have finished: {cancelled:?}");
    wait_no_process("sleep 7731");

    // Cancelled by select!, for the shell call too.
    tokio::select! {
        ran = sandbox.shell("exec sleep 7732") => panic!("finished: {ran:?}"),
        () = tokio::time::sleep(Duration::from_millis(1500)) => {}
    }
    wait_no_process("sleep 7732");

    // The sandbox keeps serving, and an exec that is not dropped still runs to its end.
    let ran = sandbox.exec(sh("cat; echo done"), b"in\n".to_vec()).await.unwrap();
    assert_eq!(ran.outcome, ExecOutcome::Exited(0));
    assert_eq!(ran.stdout, b"in\ndone\n");
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn an_fs_call_past_its_timeout_is_a_typed_error_and_the_next_call_works_as_root() {
    let (sandbox, cleanup) = boot("cancel-fs", "cancel-fs").await;
    let made = sandbox.exec(sh("mkfifo /tmp/fifo"), Vec::new()).await.unwrap();
    assert_eq!(made.outcome, ExecOutcome::Exited(0));
    // Opening a FIFO that has no writer blocks the agent's open: the call cannot finish.
    let fs = sandbox.fs().with_timeout(Duration::from_millis(800));
    let asked = Instant::now();
    let err = fs.read("/tmp/fifo").await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::FsTimeout { what, timeout }
            if what == "/tmp/fifo" && *timeout == Duration::from_millis(800)),
        "{err}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5), "took {:?}", asked.elapsed());
    // The same filesystem handle goes on working.
    fs.write("/tmp/after", b"ok".to_vec()).await.unwrap();
    assert_eq!(fs.read("/tmp/after").await.unwrap(), b"ok");

    // The blocking client: one call with a timeout, then the same client works again.
    let home = cleanup.home().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut client =
            moat_runtime::api::blocking::Moat::new(home).get("cancel-fs").unwrap().fs().unwrap();
        let timeout = Duration::from_millis(500);
        let err =
            client.with_timeout(timeout, "/tmp/fifo", |c| c.read("/tmp/fifo", 1024)).unwrap_err();
        assert!(matches!(err, RuntimeError::FsTimeout { .. }), "{err}");
        assert_eq!(client.read("/tmp/after", 1024).unwrap(), b"ok");
    })
    .await
    .unwrap();

    // Writers let the agent's blocked opens finish; the sandbox still serves.
    let unblock = sandbox.exec_with_timeout(
        sh("for i in 1 2; do echo x > /tmp/fifo; done; echo done"),
        Vec::new(),
        Duration::from_secs(10),
    );
    let ran = unblock.await.unwrap();
    assert_eq!((ran.outcome, ran.stdout), (ExecOutcome::Exited(0), b"done\n".to_vec()));
    sandbox.remove(true).await.unwrap();
}
