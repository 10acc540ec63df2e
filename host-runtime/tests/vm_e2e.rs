//! End to end: the VM backend (`--isolation vm`), the real `moat` binary, libkrun, the static
//! `moat-agentd` as the guest's init.
//!
//! Where a microVM can boot (real KVM, or the nested test host of `tests/vm-host`), the
//! `#[ignore]`d tests run with `cargo test -p moat-runtime --test vm_e2e -- --ignored` and this
//! environment: `MOAT_LIBKRUNFW=/path/to/libkrunfw.so.5` (unless it is on the loader path) and
//! `MOAT_AGENTD_STATIC=/path/to/static/moat-agentd` (unless `moat-agentd-static` is next to
//! `moat`, or the checkout can build it with `agentd/build-static.sh`).
//!
//! The tests that are not ignored run on every host and check what this host can check: that
//! `--isolation vm` gives the doctor's reason when no VM can boot (or boots one when it can), and
//! that a VM forced onto a KVM-PVM host reports why it died instead of timing out silently.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{moat_home, require_root, stderr, stdout};

/// `moat ARGS...` with `MOAT_HOME=home`, no stdin, and the KVM-PVM override cleared.
fn moat(home: &Path, args: &[&str]) -> Output {
    moat_with(home, args, &[])
}

fn moat_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moat"));
    command
        .args(args)
        .env("MOAT_HOME", home)
        .env_remove(moat_runtime::doctor::IGNORE_KVM_PVM_ENV)
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("spawn moat")
}

fn report() -> moat_runtime::doctor::Report {
    let mut paths = moat_runtime::doctor::HostPaths::system();
    paths.ignore_kvm_pvm = false;
    moat_runtime::doctor::diagnose(&paths)
}

#[test]
fn isolation_vm_boots_or_names_the_doctors_reason_as_root() {
    require_root();
    let home = moat_home("vm-or-reason");
    let output = moat(&home, &["run", "--isolation", "vm", "--", "echo", "hello"]);
    let report = report();
    if report.vm_can_boot() {
        assert_eq!(stdout(&output), "hello\n", "stderr: {}", stderr(&output));
        assert_eq!(output.status.code(), Some(0));
        return;
    }
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("cannot boot a microVM"), "{err}");
    let reason = moat_runtime::backend::isolation::vm_unavailable_reason(&report);
    assert!(err.contains(&reason), "stderr {err:?} lacks the doctor's reason {reason:?}");
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert!(err.contains("KVM-PVM"), "{err}");
    }
    assert!(stdout(&output).is_empty());
}

#[test]
fn a_missing_libkrunfw_is_one_clear_line_as_root() {
    require_root();
    let home = moat_home("vm-no-krunfw");
    let output = moat_with(
        &home,
        &["run", "--isolation", "vm", "--", "true"],
        &[("MOAT_LIBKRUNFW", "/nonexistent/libkrunfw.so.5")],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot boot a microVM"), "{err}");
    // The first failing check is named; on a host with /dev/kvm and no KVM-PVM that is libkrunfw.
    let kvm_ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if kvm_ok && !Path::new("/sys/module/kvm_pvm").exists() {
        assert!(err.contains("MOAT_LIBKRUNFW=/nonexistent/libkrunfw.so.5 is not a file"), "{err}");
    }
}

/// On a KVM-PVM host with libkrunfw available, a VM forced past the doctor dies at boot; the
/// error must say so with its cause (libkrun's error or the guest console), not only time out.
/// Elsewhere this test checks the same override on the error it does get.
#[test]
fn a_vm_that_dies_at_boot_reports_its_cause_as_root() {
    require_root();
    let home = moat_home("vm-dies");
    let started = Instant::now();
    let output = moat_with(
        &home,
        &["run", "--isolation", "vm", "--", "echo", "hello"],
        &[(moat_runtime::doctor::IGNORE_KVM_PVM_ENV, "1")],
    );
    let err = stderr(&output);
    let mut paths = moat_runtime::doctor::HostPaths::system();
    paths.ignore_kvm_pvm = true;
    let report = moat_runtime::doctor::diagnose(&paths);
    if !report.vm_can_boot() {
        // No libkrunfw or no /dev/kvm: the override changes nothing about those.
        assert_eq!(output.status.code(), Some(125), "{err}");
        let reason = moat_runtime::backend::isolation::vm_unavailable_reason(&report);
        assert!(err.contains(&reason), "{err}");
        return;
    }
    if !Path::new("/sys/module/kvm_pvm").exists() {
        // A host that really boots VMs: the override is a no-op and the VM works.
        assert_eq!(stdout(&output), "hello\n", "stderr: {err}");
        return;
    }
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(err.contains("sandbox failed to start"), "{err}");
    assert!(
        err.contains("the VM exited") || err.contains("never connected"),
        "the cause is not named: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    let leftover = std::fs::read_dir(home.join("sandboxes")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftover, 0, "the ephemeral sandbox directory was left behind");
}

// ---- the VM really boots: run these where it can (tests/vm-host) ----

fn run_vm(home: &Path, args: &[&str]) -> Output {
    require_root();
    let mut all = vec!["run", "--isolation", "vm"];
    all.extend_from_slice(args);
    moat(home, &all)
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_echo_hello_prints_hello_as_root() {
    let home = moat_home("vm-echo");
    let output = run_vm(&home, &["--", "echo", "hello"]);
    assert_eq!(stdout(&output), "hello\n", "stderr: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_exit_code_passes_through_as_root() {
    let home = moat_home("vm-exit");
    let output = run_vm(&home, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "stderr: {}", stderr(&output));
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_cpus_memory_and_volumes_reach_the_guest_as_root() {
    let home = moat_home("vm-size");
    let shared = home.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), "from the host\n").unwrap();
    let volume = format!("{}:/mnt/shared:ro", shared.display());
    let script =
        "nproc; awk '/MemTotal/ {print ($2 > 600000)}' /proc/meminfo; cat /mnt/shared/file";
    let output = run_vm(
        &home,
        &["--cpus", "2", "--memory", "1024", "-v", &volume, "--", "sh", "-c", script],
    );
    assert_eq!(stdout(&output), "2\n1\nfrom the host\n", "stderr: {}", stderr(&output));
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_writes_do_not_reach_the_rootfs_as_root() {
    let home = moat_home("vm-rootfs");
    let marker = format!("moat-vm-probe-{}", std::process::id());
    let script = format!("echo x > /etc/{marker} && cat /etc/{marker}");
    let output = run_vm(&home, &["--", "sh", "-c", &script]);
    assert_eq!(stdout(&output), "x\n", "stderr: {}", stderr(&output));
    assert!(!Path::new("/etc").join(&marker).exists(), "a guest write reached the host's /etc");
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_agent_init_failure_is_reported_with_its_cause_as_root() {
    // An empty --rootfs has no /tmp, /mnt, /run or /dev for agentd's staging tmpfs: the agent
    // boots (it is served as /init.krun) and must report why it cannot assemble the root.
    let home = moat_home("vm-empty-root");
    let empty = home.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let output = run_vm(&home, &["--rootfs", empty.to_str().unwrap(), "--", "true"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{err}");
    assert!(err.contains("sandbox failed to start"), "{err}");
    assert!(err.contains("staging"), "the agent's reason is missing: {err}");
}

fn state_of(home: &Path, name: &str) -> serde_json::Value {
    let output = moat(home, &["inspect", name]);
    assert!(output.status.success(), "inspect: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

fn wait_status(home: &Path, name: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = state_of(home, name);
        if state["status"] == want || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_create_exec_stop_records_each_status_as_root() {
    require_root();
    let home = moat_home("vm-lifecycle");
    let created = moat(&home, &["create", "box", "--isolation", "vm"]);
    assert!(created.status.success(), "create: {}", stderr(&created));
    assert_eq!(state_of(&home, "box")["status"], "running");
    let exec = moat(&home, &["exec", "box", "--", "cat", "/proc/cmdline"]);
    assert!(stdout(&exec).contains("init=/init.krun"), "not a VM guest? {}", stdout(&exec));
    let stopped = moat(&home, &["stop", "box"]);
    assert!(stopped.status.success(), "stop: {}", stderr(&stopped));
    let state = wait_status(&home, "box", "stopped");
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["exit_code"], 0, "the guest should power off on core.shutdown: {state}");
    let kernel_log = home.join("sandboxes/box/logs/kernel.log");
    assert!(kernel_log.is_file(), "no guest console log");
    assert!(moat(&home, &["rm", "box"]).status.success());
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_guest_power_off_by_itself_records_stopped_as_root() {
    require_root();
    let home = moat_home("vm-self-stop");
    let created = moat(&home, &["create", "box", "--isolation", "vm", "--max-duration", "2s"]);
    assert!(created.status.success(), "create: {}", stderr(&created));
    let state = wait_status(&home, "box", "stopped");
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["stop_reason"], moat_runtime::supervisor::STOPPED_MAX_DURATION, "{state}");
    assert!(moat(&home, &["rm", "box"]).status.success());
}

#[test]
#[ignore = "needs a host that can boot a microVM (see tests/vm-host)"]
fn vm_sigkill_of_the_sandbox_process_reads_crashed_as_root() {
    require_root();
    let home = moat_home("vm-crash");
    let created = moat(&home, &["create", "box", "--isolation", "vm"]);
    assert!(created.status.success(), "create: {}", stderr(&created));
    let pid = state_of(&home, "box")["pid"].as_i64().expect("a pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let state = wait_status(&home, "box", "crashed");
    assert_eq!(state["status"], "crashed", "{state}");
    assert!(moat(&home, &["rm", "box"]).status.success());
}
