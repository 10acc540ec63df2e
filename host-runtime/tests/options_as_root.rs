//! End to end: the sandbox options of `moat run` / `moat create` (`--hostname`, `-v`, `--tmpfs`,
//! `--script`, `--rlimit`, `-e`/`-w` defaults, `--memory`, `--idle-timeout`, `--max-duration`),
//! `-t`, and `moat doctor`'s namespace checks, on the namespace backend with the real agent.
//! Needs root.

use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::{moat, moat_home, require_root, stderr, stdout};

fn inspect(home: &Path, name: &str) -> serde_json::Value {
    let output = moat(home, &["inspect", name]);
    assert_eq!(output.status.code(), Some(0), "inspect: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Polls `inspect` until the status is `stopped` or `timeout` passes; returns the last state.
fn wait_stopped(home: &Path, name: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let state = inspect(home, name);
        if state["status"] == "stopped" || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_applies_hostname_volume_tmpfs_script_rlimit_env_and_workdir_as_root() {
    require_root();
    let home = moat_home("opt-run");
    let shared = home.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("f"), "from the host\n").unwrap();
    let volume = format!("{}:/data:ro", shared.display());
    let script = "greet=#!/bin/sh\necho \"greet $1\"\n";
    let output = moat(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--hostname",
            "opt-host",
            "-v",
            &volume,
            "--tmpfs",
            "/scratch:8",
            "--script",
            script,
            "--rlimit",
            "nofile=77:88",
            "-e",
            "GREETING=hi",
            "-w",
            "/data",
            "--",
            "sh",
            "-c",
            "hostname; cat f; greet x; ulimit -n; ulimit -Hn; echo $GREETING; pwd; \
             touch /data/new 2>/dev/null && echo writable || echo read-only; \
             echo s > /scratch/s && cat /scratch/s; grep ' /scratch ' /proc/mounts | cut -d' ' -f3",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "opt-host\nfrom the host\ngreet x\n77\n88\nhi\n/data\nread-only\ns\ntmpfs\n"
    );
    assert!(!shared.join("new").exists(), "a read-only volume was written");
}

#[test]
fn bad_option_values_are_one_line_usage_errors() {
    let home = moat_home("opt-usage");
    for (args, needle) in [
        (&["run", "--rlimit", "files=1", "--", "true"][..], "--rlimit \"files=1\""),
        (&["run", "-v", "/x:relative", "--", "true"][..], "-v \"/x:relative\""),
        (&["run", "--max-duration", "0", "--", "true"][..], "--max-duration \"0\""),
        (&["create", "b", "-t"][..], "unexpected argument '-t'"),
    ] {
        let output = moat(&home, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(needle) && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn missing_volume_directory_is_a_clear_error_as_root() {
    require_root();
    let home = moat_home("opt-missing-volume");
    let output =
        moat(&home, &["run", "--isolation", "namespace", "-v", "/no/such/dir:/d", "--", "true"]);
    assert_eq!(output.status.code(), Some(125));
    assert!(stderr(&output).contains("open -v host directory /no/such/dir"), "{}", stderr(&output));
}

#[test]
fn create_keeps_env_workdir_and_user_as_exec_defaults_as_root() {
    require_root();
    let home = moat_home("opt-defaults");
    let output =
        moat(&home, &["create", "defaults", "--isolation", "namespace", "-e", "D=1", "-w", "/tmp"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let exec = moat(&home, &["exec", "defaults", "--", "sh", "-c", "echo $D; pwd"]);
    let overridden = moat(
        &home,
        &["exec", "defaults", "-e", "D=2", "-w", "/", "--", "sh", "-c", "echo $D; pwd"],
    );
    let _ = moat(&home, &["rm", "-f", "defaults"]);
    assert_eq!(stdout(&exec), "1\n/tmp\n", "{}", stderr(&exec));
    assert_eq!(stdout(&overridden), "2\n/\n", "{}", stderr(&overridden));
}

#[test]
fn memory_limit_kills_an_allocation_beyond_it_and_leaves_no_cgroup_as_root() {
    require_root();
    let home = moat_home("opt-memory");
    // A 200 MB shell string under a 64 MiB limit: the kernel's OOM killer ends the shell.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "run",
            "--isolation",
            "namespace",
            "--memory",
            "64",
            "--cpus",
            "1",
            "--",
            "sh",
            "-c",
            "grep -c moat /proc/self/cgroup; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ])
        .env("MOAT_HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn moat");
    // The sandbox is named run-<the CLI's pid>-...; other tests' sandboxes run meanwhile.
    let ours = format!("run-{}-", child.id());
    let output = child.wait_with_output().expect("wait for moat");
    let out = stdout(&output);
    assert!(!out.contains("survived"), "the allocation was not limited: {out}");
    assert_ne!(out.lines().next().unwrap_or("0"), "0", "not in a moat cgroup: {out}");
    assert_ne!(output.status.code(), Some(0), "{}", stderr(&output));
    let leftovers: Vec<_> = [
        "/sys/fs/cgroup/memory/moat",
        "/sys/fs/cgroup/cpu/moat",
        "/sys/fs/cgroup/pids/moat",
        "/sys/fs/cgroup",
    ]
    .iter()
    .filter_map(|dir| std::fs::read_dir(dir).ok())
    .flatten()
    .flatten()
    .filter(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with(&ours) || name.starts_with(&format!("moat-{ours}"))
    })
    .map(|e| e.path())
    .collect();
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
}

#[test]
fn idle_timeout_stops_a_sandbox_with_no_client_and_records_why_as_root() {
    require_root();
    let home = moat_home("opt-idle");
    let output =
        moat(&home, &["create", "idle", "--isolation", "namespace", "--idle-timeout", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let state = wait_stopped(&home, "idle", Duration::from_secs(20));
    let _ = moat(&home, &["rm", "-f", "idle"]);
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["exit_code"], 0, "{state}");
    assert!(state["stop_reason"].as_str().unwrap().contains("--idle-timeout"), "{state}");
}

#[test]
fn max_duration_ends_a_running_exec_and_the_sandbox_as_root() {
    require_root();
    let home = moat_home("opt-duration");
    let output = moat(&home, &["create", "dur", "--isolation", "namespace", "--max-duration", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let started = Instant::now();
    let exec = moat(&home, &["exec", "dur", "--", "sleep", "60"]);
    let took = started.elapsed();
    let state = wait_stopped(&home, "dur", Duration::from_secs(20));
    let _ = moat(&home, &["rm", "-f", "dur"]);
    assert!(took < Duration::from_secs(30), "the exec outlived --max-duration: {took:?}");
    assert_ne!(exec.status.code(), Some(0));
    assert_eq!(state["status"], "stopped", "{state}");
    assert!(state["stop_reason"].as_str().unwrap().contains("--max-duration"), "{state}");
}

#[test]
fn tty_exec_runs_on_a_pty_as_root() {
    require_root();
    let home = moat_home("opt-tty");
    let output = moat(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "-t",
            "--",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo on-a-pty; stty size",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("on-a-pty"), "{out}");
    // The CLI's stdin is not a terminal here, so the PTY keeps the default 24x80.
    assert!(out.contains("24 80"), "{out}");
}

#[test]
fn doctor_reports_the_namespace_backend() {
    let output = moat(&moat_home("opt-doctor"), &["doctor"]);
    assert_eq!(output.status.code(), Some(0));
    let out = stdout(&output);
    assert!(out.lines().any(|l| l.starts_with("namespaces ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("namespace: this host ")), "{out}");
    if nix::unistd::geteuid().is_root() {
        assert!(out.contains("namespace: this host can run the namespace backend"), "{out}");
    }
}

#[test]
fn sandbox_root_is_root_only_in_its_own_user_namespace_as_root() {
    require_root();
    let home = moat_home("opt-userns");
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let output = moat(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--",
            "sh",
            "-c",
            "readlink /proc/self/ns/user; id -u; mknod /tmp/null c 1 3 2>/dev/null && echo made-a-device || echo no-device",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_ne!(lines[0], host_ns.to_string_lossy(), "the sandbox shares the host's user namespace");
    assert_eq!(lines[1], "0", "root inside the sandbox");
    assert_eq!(
        lines[2], "no-device",
        "sandbox root created a device node: it holds host capabilities"
    );
    // Ids map one to one, so other users still work.
    let nobody =
        moat(&home, &["run", "--isolation", "namespace", "-u", "nobody", "--", "id", "-u"]);
    assert_eq!(stdout(&nobody), "65534\n", "{}", stderr(&nobody));
}
