//! End to end on the namespace backend: attached sandboxes stop when their creator goes away
//! (the library handle dropped, or the `moat create --attach` process killed), with nothing
//! left; a detached one lives on. Needs root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecOutcome, Isolation, Moat, SandboxOptions, SandboxState, Status};
use moat_runtime::error::RuntimeError;
use moat_runtime::supervisor::STOPPED_CREATOR_GONE;

mod support;
use support::{
    RemoveOnDrop, executables, moat, moat_home, processes_in_cgroup, processes_mentioning,
};
use support::{require_root, stderr};

fn library(test: &str, name: &'static str) -> (Moat, RemoveOnDrop) {
    require_root();
    let home = moat_home(test);
    (Moat::new(&home).with_executables(executables()), RemoveOnDrop::new(home, name))
}

fn options(name: &str) -> SandboxOptions {
    SandboxOptions::new(name).isolation(Isolation::Namespace)
}

fn echo() -> ExecRequest {
    let mut request = ExecRequest::new("echo");
    request.args = vec!["up".into()];
    request
}

/// Waits (up to 30 s) until the sandbox `name` is no longer live and returns its state, or
/// `None` once it is gone (an ephemeral one).
async fn ended(moat: &Moat, name: &str) -> Option<SandboxState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match moat.get(name).await {
            Err(RuntimeError::UnknownSandbox(_)) => return None,
            Ok(sandbox) => {
                let state = sandbox.state().await.unwrap();
                if !matches!(state.status, Status::Running | Status::Draining) {
                    return Some(state);
                }
            }
            Err(other) => panic!("{other}"),
        }
        assert!(Instant::now() < deadline, "{name} is still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No process of the sandbox `name` in `home` is left: none in its cgroup, no sandbox process
/// (which records its end just before it exits: given 10 s to be gone).
fn nothing_left(home: &Path, name: &str) {
    let dir = home.join("sandboxes").join(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = processes_in_cgroup(name);
        left.extend(processes_mentioning(&format!("__sandbox {}", dir.display())));
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn dropping_the_last_attached_handle_stops_the_sandbox_as_root() {
    let (moat, _cleanup) = library("attach-drop", "attached");
    let sandbox = moat.create_attached(options("attached"), false).await.unwrap();
    assert!(sandbox.owns_lifecycle());
    let clone = sandbox.clone();
    drop(sandbox);
    // A clone still holds it: it runs.
    let ran = clone.exec(echo(), Vec::new()).await.unwrap();
    assert_eq!((ran.outcome, ran.stdout), (ExecOutcome::Exited(0), b"up\n".to_vec()));
    drop(clone);
    let state = ended(&moat, "attached").await.expect("kept, not ephemeral");
    assert_eq!(state.status, Status::Stopped, "{state:?}");
    assert_eq!(state.stop_reason.as_deref(), Some(STOPPED_CREATOR_GONE));
    nothing_left(moat.home(), "attached");

    // Started again attached, and ephemeral: dropped, it is gone altogether.
    let sandbox = moat.start_attached("attached").await.unwrap();
    assert!(sandbox.owns_lifecycle());
    drop(sandbox);
    ended(&moat, "attached").await;
    let sandbox = moat.create_attached(options("attached").ephemeral(true), true).await.unwrap();
    drop(sandbox);
    assert_eq!(ended(&moat, "attached").await, None);
    nothing_left(moat.home(), "attached");
}

#[tokio::test]
async fn a_detached_handle_lets_the_sandbox_outlive_it_as_root() {
    let (moat, _cleanup) = library("attach-detach", "detached");
    let mut sandbox = moat.create_attached(options("detached"), false).await.unwrap();
    let clone = sandbox.clone();
    sandbox.detach().unwrap();
    assert!(!sandbox.owns_lifecycle() && !clone.owns_lifecycle());
    drop(sandbox);
    drop(clone);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sandbox = moat.get("detached").await.unwrap();
    assert_eq!(sandbox.state().await.unwrap().status, Status::Running);
    let ran = sandbox.exec(echo(), Vec::new()).await.unwrap();
    assert_eq!(ran.outcome, ExecOutcome::Exited(0));
    sandbox.remove(true).await.unwrap();
}

/// `moat create --attach NAME` in `home`, once it printed the name (the sandbox is up).
fn attached_cli(home: &Path, name: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["create", "--attach", name, "--isolation", "namespace"])
        .env("MOAT_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, format!("{name}\n"));
    child
}

#[tokio::test]
async fn killing_the_attached_creator_stops_the_sandbox_and_sigterm_stops_it_first_as_root() {
    let (moat_lib, _cleanup) = library("attach-cli", "cli");
    let home = moat_lib.home().to_path_buf();

    // SIGKILL: the CLI cannot act; the sandbox sees its lifeline close and stops itself.
    let mut creator = attached_cli(&home, "cli");
    let sandbox = moat_lib.get("cli").await.unwrap();
    assert_eq!(sandbox.state().await.unwrap().status, Status::Running);
    creator.kill().unwrap();
    creator.wait().unwrap();
    let state = ended(&moat_lib, "cli").await.unwrap();
    assert_eq!(state.status, Status::Stopped, "{state:?}");
    assert_eq!(state.stop_reason.as_deref(), Some(STOPPED_CREATOR_GONE));
    nothing_left(&home, "cli");

    // SIGTERM: the CLI stops it (`moat stop`) and exits 0 once it has.
    let rm = moat(&home, &["rm", "cli"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let creator = attached_cli(&home, "cli");
    let pid = nix::unistd::Pid::from_raw(creator.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = creator.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let state = moat_lib.get("cli").await.unwrap().state().await.unwrap();
    assert_eq!((state.status, state.stop_reason.as_deref()), (Status::Stopped, Some("moat stop")));
    nothing_left(&home, "cli");

    // `moat start --attach`: the same tie for a sandbox booted again.
    let mut creator = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["start", "--attach", "cli"])
        .env("MOAT_HOME", &home)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.state().await.unwrap().status != Status::Running {
        assert!(Instant::now() < deadline, "never started");
        assert_eq!(creator.try_wait().unwrap(), None, "moat start --attach ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    creator.kill().unwrap();
    creator.wait().unwrap();
    let state = ended(&moat_lib, "cli").await.unwrap();
    assert_eq!(state.stop_reason.as_deref(), Some(STOPPED_CREATOR_GONE), "{state:?}");
    nothing_left(&home, "cli");
}
