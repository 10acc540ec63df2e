//! End to end: starting a stopped sandbox again, `replace`, and `ephemeral` sandboxes, through
//! the async library and the CLI, on the namespace backend. Needs root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecOutcome, Isolation, Moat, SandboxOptions, Status};
use moat_runtime::config::{SandboxConfig, parse_volume};
use moat_runtime::error::RuntimeError;
use moat_runtime::store::volumes::VolumeOptions;

mod support;
use support::{executables, moat, moat_home, processes_in_cgroup, require_root, stderr, stdout};

fn options(name: &str) -> SandboxOptions {
    SandboxOptions::new(name).isolation(Isolation::Namespace)
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

fn library(test: &str) -> Moat {
    require_root();
    Moat::new(moat_home(test)).with_executables(executables())
}

/// The cgroup directories of sandboxes named `name` (v2 `moat-NAME-PID`, v1 `*/moat/NAME-PID`).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    let mut look = |dir: &Path, prefix: &str| {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(entry.path());
            }
        }
    };
    look(root, &format!("moat-{name}-"));
    for controller in std::fs::read_dir(root).into_iter().flatten().flatten() {
        look(&controller.path().join("moat"), &format!("{name}-"));
    }
    found
}

/// Whether `pid` is gone, or a zombie of this test process (which spawned it).
fn is_dead(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().is_empty()
}

/// Waits up to 10 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing of the sandbox `name` is left: no directory, no listing, no cgroup, no process.
async fn assert_gone(moat: &Moat, name: &str) {
    let dir = moat.home().join("sandboxes").join(name);
    eventually("the sandbox directory to go", || !dir.exists());
    let listed = moat.list().await.unwrap();
    assert!(listed.iter().all(|s| s.name != name), "still listed: {listed:?}");
    assert!(matches!(moat.get(name).await, Err(RuntimeError::UnknownSandbox(_))));
    assert_eq!(processes_in_cgroup(name), Vec::<String>::new(), "a process is left");
    assert_eq!(cgroup_dirs(name), Vec::<PathBuf>::new(), "a cgroup is left");
}

#[tokio::test]
async fn start_after_stop_runs_execs_again_and_keeps_a_named_volume_as_root() {
    let moat = library("start-volume");
    moat.volumes().create("kept", VolumeOptions::default()).unwrap();
    let config = SandboxConfig {
        volumes: vec![parse_volume("kept:/data").unwrap()],
        env: vec!["GREETING=hello".into()],
        ..SandboxConfig::default()
    };
    let sandbox = moat.create(options("restarted").config(config).label("team", "a")).await;
    let sandbox = sandbox.unwrap();
    let wrote = sandbox.exec(sh("echo saved > /data/note && echo lost > /tmp/note"), Vec::new());
    assert_eq!(wrote.await.unwrap().outcome, ExecOutcome::Exited(0));
    let first_pid = sandbox.state().await.unwrap().pid;
    sandbox.stop().await.unwrap();

    let err = sandbox.exec(sh("true"), Vec::new()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { status: "stopped", .. }), "{err}");
    let started = sandbox.start().await.unwrap();
    assert_eq!(started.status, Status::Running);
    assert!(started.started_at.is_some() && started.stopped_at.is_none(), "{started:?}");
    assert_ne!(started.pid, first_pid, "a new sandbox process");
    assert_eq!(started.spec.config.labels.get("team").map(String::as_str), Some("a"));

    // The volume kept its data, the configuration its env; the root's tmpfs upper is new.
    let read = sandbox
        .exec(
            sh("cat /data/note; echo $GREETING; cat /tmp/note 2>/dev/null || echo none"),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout), "saved\nhello\nnone\n");

    let again = sandbox.start().await.unwrap_err();
    assert!(matches!(again, RuntimeError::AlreadyRunning { status: "running", .. }), "{again}");
    assert_eq!(again.to_string().lines().count(), 1, "{again}");
    sandbox.remove(true).await.unwrap();
    assert_eq!(cgroup_dirs("restarted"), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn start_after_a_crash_cleans_up_and_boots_as_root() {
    let moat = library("start-crashed");
    let sandbox = moat.create(options("crashy")).await.unwrap();
    let pid = sandbox.state().await.unwrap().pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let crashed = sandbox.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(crashed.status, Status::Crashed);

    sandbox.start().await.unwrap();
    let ran = sandbox.exec(sh("echo back"), Vec::new()).await.unwrap();
    assert_eq!(ran.stdout, b"back\n");
    // Only the new sandbox process's cgroup is there: the killed one's was removed.
    let new_pid = sandbox.state().await.unwrap().pid.unwrap();
    let cgroups = cgroup_dirs("crashy");
    assert!(
        cgroups.iter().all(|dir| dir.to_string_lossy().ends_with(&format!("-{new_pid}"))),
        "{cgroups:?}"
    );
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn a_start_waits_for_one_in_progress_and_then_finds_it_running_as_root() {
    let moat = library("start-twice");
    let sandbox = moat.create(options("twice")).await.unwrap();
    sandbox.stop().await.unwrap();
    // This test holds the lock a start in progress holds: the start waits for it.
    let dir = moat.home().join("sandboxes/twice");
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(&dir).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap();
    let waiting = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.start().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the start did not wait for the lock");
    assert_eq!(sandbox.state().await.unwrap().status, Status::Stopped);
    drop(held);
    let started = waiting.await.unwrap().unwrap();
    assert_eq!(started.status, Status::Running);

    // Two at once: one boots, the other waits for it and finds it running.
    sandbox.stop().await.unwrap();
    let (first, second) = tokio::join!(sandbox.start(), sandbox.start());
    let (started, refused) = match (first, second) {
        (Ok(started), Err(refused)) | (Err(refused), Ok(started)) => (started, refused),
        other => panic!("expected one start and one refusal: {other:?}"),
    };
    assert!(matches!(refused, RuntimeError::AlreadyRunning { .. }), "{refused}");
    let needle = format!("__sandbox {}", dir.canonicalize().unwrap().display());
    let processes = support::processes_mentioning(&needle);
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert!(processes[0].starts_with(&format!("{}:", started.pid.unwrap())), "{processes:?}");
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn a_state_file_from_an_older_moat_cannot_start_as_root() {
    let moat = library("start-old-state");
    let sandbox = moat.create(options("old")).await.unwrap();
    sandbox.stop().await.unwrap();
    let path = moat.home().join("sandboxes/old/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("version");
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let err = sandbox.start().await.unwrap_err();
    assert!(matches!(err, RuntimeError::CreatedByOlderMoat(_)), "{err}");
    assert!(err.to_string().contains("created by an older moat; cannot start"), "{err}");
    sandbox.remove(false).await.unwrap();
}

#[test]
fn moat_start_boots_a_stopped_sandbox_and_refuses_a_running_one_as_root() {
    require_root();
    let home = moat_home("start-cli");
    let created = moat(&home, &["create", "cli-start", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));

    let running = moat(&home, &["start", "cli-start"]);
    assert_ne!(running.status.code(), Some(0));
    assert_eq!(stderr(&running).lines().count(), 1, "{}", stderr(&running));
    assert!(stderr(&running).contains("already running"), "{}", stderr(&running));

    assert_eq!(moat(&home, &["stop", "cli-start"]).status.code(), Some(0));
    let refused = moat(&home, &["exec", "cli-start", "true"]);
    assert!(stderr(&refused).contains("not running (it is stopped)"), "{}", stderr(&refused));
    let started = moat(&home, &["start", "cli-start"]);
    assert_eq!(started.status.code(), Some(0), "{}", stderr(&started));
    let ran = moat(&home, &["exec", "cli-start", "echo", "again"]);
    assert_eq!(stdout(&ran), "again\n", "{}", stderr(&ran));

    let unknown = moat(&home, &["start", "nobody"]);
    assert_eq!(stderr(&unknown), "moat start: no sandbox named \"nobody\"\n");
    let _ = moat(&home, &["rm", "-f", "cli-start"]);
}

#[tokio::test]
async fn replace_removes_a_running_sandbox_of_that_name_first_as_root() {
    let moat = library("replace");
    let old = moat.create(options("replaced").label("generation", "1")).await.unwrap();
    let old_pid = old.state().await.unwrap().pid.unwrap();

    let taken = moat.create(options("replaced")).await.unwrap_err();
    assert!(matches!(taken, RuntimeError::DuplicateName(_)), "{taken}");

    let new = moat.replace(options("replaced").label("generation", "2")).await.unwrap();
    let state = new.state().await.unwrap();
    assert_eq!(state.status, Status::Running);
    assert_ne!(state.pid, Some(old_pid));
    assert_eq!(state.spec.config.labels.get("generation").map(String::as_str), Some("2"));
    assert!(is_dead(old_pid), "the old sandbox process lives");
    let cgroups = cgroup_dirs("replaced");
    assert!(cgroups.iter().all(|d| !d.to_string_lossy().ends_with(&format!("-{old_pid}"))));
    assert_eq!(new.exec(sh("echo new"), Vec::new()).await.unwrap().stdout, b"new\n");

    // With no sandbox of that name, replace is create.
    let fresh = moat.replace(options("fresh")).await.unwrap();
    fresh.remove(true).await.unwrap();
    new.remove(true).await.unwrap();
}

#[test]
fn moat_create_replace_swaps_a_running_sandbox_as_root() {
    require_root();
    let home = moat_home("replace-cli");
    let args = ["create", "cli-replace", "--isolation", "namespace"];
    assert_eq!(moat(&home, &args).status.code(), Some(0));
    let again = moat(&home, &args);
    let line = "moat create: a sandbox named \"cli-replace\" already exists";
    assert!(stderr(&again).lines().any(|l| l == line), "{}", stderr(&again));
    let replaced = moat(&home, &[&args[..], &["--replace", "-e", "WHICH=new"]].concat());
    assert_eq!(replaced.status.code(), Some(0), "{}", stderr(&replaced));
    let ran = moat(&home, &["exec", "cli-replace", "sh", "-c", "echo $WHICH"]);
    assert_eq!(stdout(&ran), "new\n", "{}", stderr(&ran));
    let _ = moat(&home, &["rm", "-f", "cli-replace"]);
}

#[tokio::test]
async fn an_ephemeral_sandbox_is_gone_after_stop_and_after_kill_as_root() {
    let moat = library("ephemeral-stop");
    let stopped = moat.create(options("eph-stop").ephemeral(true)).await.unwrap();
    assert_eq!(stopped.exec(sh("echo up"), Vec::new()).await.unwrap().stdout, b"up\n");
    let last = stopped.stop().await.unwrap();
    assert_eq!(last.status, Status::Stopped);
    assert_gone(&moat, "eph-stop").await;

    let killed = moat.create(options("eph-kill").ephemeral(true)).await.unwrap();
    assert_eq!(killed.kill().await.unwrap().exit_code, Some(137));
    assert_gone(&moat, "eph-kill").await;
}

#[tokio::test]
async fn an_ephemeral_sandbox_is_gone_after_its_time_limit_and_after_a_crash_as_root() {
    let moat = library("ephemeral-ends");
    let config = SandboxConfig { max_duration_secs: Some(1), ..SandboxConfig::default() };
    let limited = moat.create(options("eph-limit").config(config).ephemeral(true)).await.unwrap();
    let err = limited.wait(Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownSandbox(_)), "{err}");
    assert_gone(&moat, "eph-limit").await;

    // The agent dies with nobody asking: its sandbox process records a crash, i.e. removes it.
    let crashed = moat.create(options("eph-crash").ephemeral(true)).await.unwrap();
    assert_eq!(crashed.exec(sh("true"), Vec::new()).await.unwrap().outcome, ExecOutcome::Exited(0));
    let agents: Vec<String> = processes_in_cgroup("eph-crash")
        .into_iter()
        .filter(|p| p.ends_with("moat-agentd"))
        .collect();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let agent_pid: i32 = agents[0].split(':').next().unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent_pid), nix::sys::signal::SIGKILL)
        .unwrap();
    assert_gone(&moat, "eph-crash").await;

    // The sandbox process itself SIGKILLed: the first listing removes what it left.
    let killed = moat.create(options("eph-sigkill").ephemeral(true)).await.unwrap();
    let pid = killed.state().await.unwrap().pid.unwrap();
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    eventually("the sandbox process to die", || is_dead(pid));
    assert!(moat.home().join("sandboxes/eph-sigkill").exists(), "nobody was left to remove it");
    let listed = moat.list().await.unwrap();
    assert!(listed.iter().all(|s| s.name != "eph-sigkill"), "{listed:?}");
    assert_gone(&moat, "eph-sigkill").await;
}

#[test]
fn moat_create_ephemeral_leaves_nothing_in_ls_after_stop_as_root() {
    require_root();
    let home = moat_home("ephemeral-cli");
    let created = moat(&home, &["create", "cli-eph", "--ephemeral", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    assert!(stdout(&moat(&home, &["ls"])).contains("cli-eph"));
    let stopped = moat(&home, &["stop", "cli-eph"]);
    assert_eq!(stopped.status.code(), Some(0), "{}", stderr(&stopped));
    assert!(!stdout(&moat(&home, &["ls"])).contains("cli-eph"));
    assert!(!home.join("sandboxes/cli-eph").exists());
    let gone = moat(&home, &["start", "cli-eph"]);
    assert_eq!(stderr(&gone), "moat start: no sandbox named \"cli-eph\"\n");
}
