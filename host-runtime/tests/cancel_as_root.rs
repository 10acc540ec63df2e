//! End to end through the library, on the namespace backend: a collected exec whose future is
//! dropped kills its command, and a filesystem call past its timeout is a typed error after
//! which the next call works. Needs root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecOutcome, Isolation, Moat, Sandbox, SandboxOptions};

mod support;
use support::{executables, moat, moat_home, processes_mentioning, require_root};

/// `moat rm -f NAME` in `home` when dropped.
struct Cleanup {
    home: PathBuf,
    name: &'static str,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = moat(&self.home, &["rm", "-f", self.name]);
    }
}

async fn boot(test: &str, name: &'static str) -> (Sandbox, Cleanup) {
    require_root();
    let home = moat_home(test);
    let moat = Moat::new(&home).with_executables(executables());
    let cleanup = Cleanup { home, name };
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
