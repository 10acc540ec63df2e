//! End to end: named sandboxes (`create`, `exec`, `ls`, `inspect`, `logs`, `stop`, `kill`, `rm`)
//! on the namespace backend with the real agent and relay. Needs root; without it every test that
//! boots a sandbox fails saying so.
//!
//! Each test has its own `MOAT_HOME`, and a guard that `rm -f`s its sandbox even when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;
use support::{
    moat, moat_home, processes_in_cgroup, processes_mentioning, require_root, stderr, stdout,
};

/// A created sandbox, removed with `rm -f` when dropped.
struct Sandbox {
    home: PathBuf,
    name: &'static str,
}

impl Sandbox {
    fn create(home: &Path, name: &'static str) -> Sandbox {
        require_root();
        let output = moat(home, &["create", name]);
        assert_eq!(output.status.code(), Some(0), "create: {}", stderr(&output));
        assert_eq!(stdout(&output), format!("{name}\n"));
        Sandbox { home: home.to_owned(), name }
    }

    fn run(&self, args: &[&str]) -> Output {
        moat(&self.home, args)
    }

    /// The STATUS column of this sandbox's `moat ls` row, or None when it is not listed.
    fn ls_status(&self) -> Option<String> {
        let output = self.run(&["ls"]);
        assert_eq!(output.status.code(), Some(0), "ls: {}", stderr(&output));
        stdout(&output)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|cols| cols[0] == self.name)
            .map(|cols| cols[1].clone())
    }

    fn pid(&self) -> i32 {
        let output = self.run(&["inspect", self.name]);
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        i32::try_from(state["pid"].as_i64().unwrap()).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", self.name]);
    }
}

#[test]
fn create_exec_stop_rm_lifecycle_shows_each_status_in_ls_as_root() {
    let home = moat_home("life-lifecycle");
    let sandbox = Sandbox::create(&home, "life");
    assert_eq!(sandbox.ls_status().as_deref(), Some("running"));
    let exec = sandbox.run(&["exec", "life", "-e", "X=7", "--", "sh", "-c", "echo $X; exit 4"]);
    assert_eq!(stdout(&exec), "7\n", "stderr: {}", stderr(&exec));
    assert_eq!(exec.status.code(), Some(4));
    let json = sandbox.run(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(list[0]["name"], "life");
    assert_eq!(list[0]["status"], "running");
    let stop = sandbox.run(&["stop", "life"]);
    assert_eq!(stop.status.code(), Some(0), "stop: {}", stderr(&stop));
    assert_eq!(sandbox.ls_status().as_deref(), Some("stopped"));
    let rm = sandbox.run(&["rm", "life"]);
    assert_eq!(rm.status.code(), Some(0), "rm: {}", stderr(&rm));
    assert_eq!(sandbox.ls_status(), None);
}

#[test]
fn sigkill_of_the_sandbox_process_reads_as_crashed_as_root() {
    let home = moat_home("life-crash");
    let sandbox = Sandbox::create(&home, "doomed");
    let pid = sandbox.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sandbox.ls_status().as_deref() != Some("crashed") {
        assert!(std::time::Instant::now() < deadline, "ls never said crashed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn duplicate_name_is_a_one_line_error_as_root() {
    let home = moat_home("life-duplicate");
    let _sandbox = Sandbox::create(&home, "twin");
    let again = moat(&home, &["create", "twin"]);
    assert_ne!(again.status.code(), Some(0));
    let err = stderr(&again);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn unknown_sandbox_is_a_one_line_error() {
    let home = moat_home("life-unknown");
    for args in [&["exec", "ghost", "--", "true"][..], &["stop", "ghost"], &["inspect", "ghost"]] {
        let output = moat(&home, args);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("no sandbox named \"ghost\""), "{args:?}: {err}");
    }
}

#[test]
fn logs_show_exec_output_in_order_after_exec_and_after_stop_as_root() {
    let home = moat_home("life-logs");
    let sandbox = Sandbox::create(&home, "talker");
    let exec = sandbox.run(&["exec", "talker", "--", "sh", "-c", "echo one; echo two; echo three"]);
    assert_eq!(exec.status.code(), Some(0), "stderr: {}", stderr(&exec));
    let logs = sandbox.run(&["logs", "talker", "--source", "stdout"]);
    assert_eq!(stdout(&logs), "one\ntwo\nthree\n", "stderr: {}", stderr(&logs));
    let stop = sandbox.run(&["stop", "talker"]);
    assert_eq!(stop.status.code(), Some(0), "stop: {}", stderr(&stop));
    let logs = sandbox.run(&["logs", "talker", "--source", "stdout"]);
    assert_eq!(stdout(&logs), "one\ntwo\nthree\n", "stderr: {}", stderr(&logs));
    let tail = sandbox.run(&["logs", "talker", "--source", "stdout", "--tail", "1"]);
    assert_eq!(stdout(&tail), "three\n");
}

#[test]
fn rm_force_leaves_nothing_running_as_root() {
    let home = moat_home("life-rmforce");
    let sandbox = Sandbox::create(&home, "gone");
    let exec = sandbox.run(&["exec", "gone", "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 &"]);
    assert_eq!(exec.status.code(), Some(0), "exec: {}", stderr(&exec));
    assert!(!processes_in_cgroup("gone").is_empty(), "no process in the sandbox's cgroup");
    let rm = sandbox.run(&["rm", "-f", "gone"]);
    assert_eq!(rm.status.code(), Some(0), "rm -f: {}", stderr(&rm));
    // Nothing of the sandbox may outlive the returned `rm -f`: no waiting here.
    assert_eq!(processes_in_cgroup("gone"), Vec::<String>::new());
    assert_eq!(processes_mentioning(&home.to_string_lossy()), Vec::<String>::new());
    assert!(!home.join("sandboxes").join("gone").exists());
}

#[test]
fn kill_returns_once_every_process_of_the_sandbox_is_gone_as_root() {
    let home = moat_home("life-kill");
    let sandbox = Sandbox::create(&home, "killed");
    let exec = sandbox.run(&["exec", "killed", "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 &"]);
    assert_eq!(exec.status.code(), Some(0), "exec: {}", stderr(&exec));
    let kill = sandbox.run(&["kill", "killed"]);
    assert_eq!(kill.status.code(), Some(0), "kill: {}", stderr(&kill));
    assert_eq!(processes_in_cgroup("killed"), Vec::<String>::new());
    assert_eq!(sandbox.ls_status().as_deref(), Some("stopped"));
    assert_eq!(sandbox.run(&["rm", "killed"]).status.code(), Some(0));
}

#[test]
fn logs_follow_prints_new_output_and_ends_when_the_sandbox_stops_as_root() {
    let home = moat_home("life-follow");
    let sandbox = Sandbox::create(&home, "chatty");
    let follower = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["logs", "chatty", "-f", "--source", "stdout"])
        .env("MOAT_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exec = sandbox.run(&["exec", "chatty", "--", "echo", "followed"]);
    assert_eq!(exec.status.code(), Some(0), "stderr: {}", stderr(&exec));
    let stop = sandbox.run(&["stop", "chatty"]);
    assert_eq!(stop.status.code(), Some(0), "stop: {}", stderr(&stop));
    let output = follower.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "followed\n", "stderr: {}", stderr(&output));
}

/// The pids of `pid`'s descendants, from each process's parent in `/proc/*/stat`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent is the second field after the parenthesised command name.
        let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1));
        if let Some(parent) = parent.and_then(|p| p.parse::<i32>().ok()) {
            parents.push((child, parent));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let of = found[i];
        found.extend(parents.iter().filter(|(_, p)| *p == of).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn wait_for_status(sandbox: &Sandbox, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while sandbox.ls_status().as_deref() != Some(status) {
        assert!(std::time::Instant::now() < deadline, "ls never said {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = sandbox.run(&["inspect", sandbox.name]);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn an_agent_that_dies_unasked_reads_as_crashed_with_why_as_root() {
    let home = moat_home("life-agent-dies");
    let sandbox = Sandbox::create(&home, "fragile");
    let agent = descendants(sandbox.pid())
        .into_iter()
        .find(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("moat-agentd"))
        })
        .expect("the sandbox's agent among its descendants");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let state = wait_for_status(&sandbox, "crashed");
    let reason = state["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with(moat_runtime::supervisor::ENDED_UNASKED), "{state}");
    assert!(reason.contains("the agent's process ended"), "{state}");
    assert_eq!(state["exit_code"], serde_json::Value::Null, "{state}");
    // A crashed sandbox is not live: `rm` without -f removes it.
    let rm = sandbox.run(&["rm", "fragile"]);
    assert_eq!(rm.status.code(), Some(0), "rm: {}", stderr(&rm));
}

#[test]
fn a_client_shutdown_reads_as_stopped_by_a_client_as_root() {
    let home = moat_home("life-client-shutdown");
    let sandbox = Sandbox::create(&home, "asked");
    let socket = stdout(&sandbox.run(&["socket", "asked"]));
    let client =
        moat_runtime::relay_client::RelayClient::connect(Path::new(socket.trim())).unwrap();
    client.request_shutdown().unwrap();
    let state = wait_for_status(&sandbox, "stopped");
    assert_eq!(state["stop_reason"], moat_runtime::supervisor::STOPPED_BY_CLIENT, "{state}");
    assert_eq!(state["exit_code"], 0, "{state}");
}

#[test]
fn exec_timeout_kills_the_command_and_exits_124_as_root() {
    let home = moat_home("life-exec-timeout");
    let sandbox = Sandbox::create(&home, "slow");
    let start = std::time::Instant::now();
    let exec =
        sandbox.run(&["exec", "slow", "--timeout", "1", "--", "sh", "-c", "echo a; sleep 30"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
    assert_eq!(exec.status.code(), Some(124), "stderr: {}", stderr(&exec));
    assert_eq!(stdout(&exec), "a\n");
    assert!(stderr(&exec).contains("killed after --timeout 1s"), "{}", stderr(&exec));
    let quick = sandbox.run(&["exec", "slow", "--timeout", "30", "--", "true"]);
    assert_eq!(quick.status.code(), Some(0), "stderr: {}", stderr(&quick));
    assert_eq!(sandbox.run(&["rm", "-f", "slow"]).status.code(), Some(0));
}

#[test]
fn wait_prints_the_exit_code_once_the_sandbox_ends_as_root() {
    let home = moat_home("life-wait");
    let sandbox = Sandbox::create(&home, "waited");
    let timed_out = sandbox.run(&["wait", "waited", "--timeout", "1"]);
    assert_eq!(timed_out.status.code(), Some(1), "stderr: {}", stderr(&timed_out));
    assert!(stderr(&timed_out).contains("still running"), "{}", stderr(&timed_out));
    assert_eq!(sandbox.run(&["stop", "waited"]).status.code(), Some(0));
    let waited = sandbox.run(&["wait", "waited"]);
    assert_eq!(waited.status.code(), Some(0), "stderr: {}", stderr(&waited));
    assert_eq!(stdout(&waited), "0\n");
    assert_eq!(sandbox.run(&["rm", "waited"]).status.code(), Some(0));
    let unknown = sandbox.run(&["wait", "waited"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown).lines().count(), 1, "{}", stderr(&unknown));
}

#[test]
fn ls_filters_by_label_as_root() {
    require_root();
    let home = moat_home("life-labels");
    for (name, team) in [("one", "infra"), ("two", "web")] {
        let label = format!("team={team}");
        let output = moat(&home, &["create", name, "--label", &label, "--label", "keep="]);
        assert_eq!(output.status.code(), Some(0), "create: {}", stderr(&output));
    }
    let names = |filters: &[&str]| {
        let mut args = vec!["ls", "--json"];
        for filter in filters {
            args.extend(["--filter", filter]);
        }
        let output = moat(&home, &args);
        assert_eq!(output.status.code(), Some(0), "ls: {}", stderr(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&["label=team=infra"]), ["one"]);
    assert_eq!(names(&["label=keep", "label=team=web"]), ["two"]);
    assert_eq!(names(&["label=team"]), ["one", "two"]);
    assert!(names(&["label=owner"]).is_empty());
    for name in ["one", "two"] {
        assert_eq!(moat(&home, &["rm", "-f", name]).status.code(), Some(0));
    }
}
