//! End to end: `moat run` with the namespace backend, the real `moat-agentd` as PID 1, the real
//! relay socket. Needs root (the build machines run as root); without it every test fails saying
//! so, none passes without running.
//!
//! Each test has its own `MOAT_HOME` under cargo's target tmp dir, so it can check that its own
//! sandbox left nothing behind while other tests run in parallel.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod support;
use support::{moat, moat_home, processes_mentioning, require_root, stderr, stdout};

fn moat_run(home: &Path, args: &[&str]) -> Output {
    require_root();
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    moat(home, &all)
}

#[test]
fn echo_hello_prints_hello_as_root() {
    let home = moat_home("run-echo");
    let output = moat_run(&home, &["--", "echo", "hello"]);
    assert_eq!(stdout(&output), "hello\n", "stderr: {}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn exit_code_7_passes_through_as_root() {
    let home = moat_home("run-exit7");
    let output = moat_run(&home, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "stderr: {}", stderr(&output));
}

#[test]
fn auto_isolation_warns_on_one_line_naming_the_backend_as_root() {
    let home = moat_home("run-warn");
    let output = moat_run(&home, &["--", "true"]);
    let err = stderr(&output);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    // `auto` warns only when it falls back; the doctor says which this host does.
    let doctor = stdout(&moat(&home, &["doctor"]));
    if doctor.contains("microVM: this host cannot boot one") {
        assert_eq!(warnings.len(), 1, "{err}");
        assert!(warnings[0].contains("namespace backend"), "{err}");
    } else {
        assert!(warnings.is_empty(), "auto chose a VM, so nothing is weaker: {err}");
    }
}

#[test]
fn writes_to_etc_and_usr_do_not_reach_the_host_as_root() {
    let home = moat_home("run-writes");
    let marker = format!("moat-probe-{}", std::process::id());
    let script = format!(
        "echo x > /etc/{marker} && cat /etc/{marker}; if touch /usr/{marker} 2>/dev/null; then echo usr-writable; fi"
    );
    let output = moat_run(&home, &["--", "sh", "-c", &script]);
    assert_eq!(stdout(&output), "x\n", "stderr: {}", stderr(&output));
    assert!(!Path::new("/etc").join(&marker).exists(), "a write to /etc reached the host");
    assert!(!Path::new("/usr").join(&marker).exists(), "a write to /usr reached the host");
}

#[test]
fn host_root_home_and_shadow_are_not_visible_as_root() {
    let home = moat_home("run-secrets");
    let script = "ls -A /root; test -e /home && echo home-visible; \
                  test -e /etc/shadow && echo shadow-visible; test -e /etc/gshadow && echo gshadow-visible; \
                  cut -d: -f1 /etc/passwd";
    let output = moat_run(&home, &["--", "sh", "-c", script]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "root\nnobody\n");
}

#[test]
fn rootfs_dir_is_an_overlay_that_is_never_written_as_root() {
    let home = moat_home("run-rootfs");
    let marker = format!("moat-rootfs-probe-{}", std::process::id());
    let script = format!("echo y > /{marker} && cat /{marker}");
    let output = moat_run(&home, &["--rootfs", "/", "--", "sh", "-c", &script]);
    assert_eq!(stdout(&output), "y\n", "stderr: {}", stderr(&output));
    assert!(!Path::new("/").join(&marker).exists(), "a write reached the --rootfs directory");
}

#[test]
fn env_workdir_and_stdin_reach_the_command_as_root() {
    require_root();
    let home = moat_home("run-env");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "run",
            "-e",
            "GREETING=hi",
            "-w",
            "/usr",
            "--",
            "sh",
            "-c",
            "cat; echo $GREETING; pwd",
        ])
        .env("MOAT_HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"from stdin\n").unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "from stdin\nhi\n/usr\n", "stderr: {}", stderr(&output));
}

#[test]
fn not_found_command_exits_127_with_one_clear_line_as_root() {
    let home = moat_home("run-notfound");
    let output = moat_run(&home, &["--", "moat-no-such-command"]);
    assert_eq!(output.status.code(), Some(127));
    let err = stderr(&output);
    let line = err.lines().find(|l| l.contains("moat-no-such-command")).unwrap_or_default();
    assert!(line.contains("command not found"), "{err}");
}

#[test]
fn signal_death_exits_255_as_root() {
    let home = moat_home("run-signal");
    let output = moat_run(&home, &["--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(output.status.code(), Some(255), "stderr: {}", stderr(&output));
}

#[test]
fn no_process_or_sandbox_directory_survives_a_run_as_root() {
    let home = moat_home("run-leftovers");
    let output = moat_run(&home, &["--", "sh", "-c", "sleep 0.2; echo done"]);
    assert_eq!(stdout(&output), "done\n", "stderr: {}", stderr(&output));
    let needle = home.to_string_lossy().into_owned();
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(home.join("sandboxes")).unwrap().flatten().collect();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&needle), "a sandbox mount leaked to the host");
}

#[test]
fn isolation_vm_fails_with_the_doctors_reason() {
    let home = moat_home("run-vm");
    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["run", "--isolation", "vm", "--", "true"])
        .env("MOAT_HOME", &home)
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--isolation vm"), "{err}");
}

#[test]
fn boot_failure_reports_the_agent_log_and_leaves_nothing_as_root() {
    require_root();
    let home = moat_home("run-bootfail");
    // A moat install whose agent exits at once: `moat` finds it next to itself.
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_moat"), bin.join("moat")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_moat-sandbox"), bin.join("moat-sandbox")).unwrap();
    let agent = bin.join("moat-agentd");
    std::fs::write(&agent, "#!/bin/sh\necho 'fake agent: cannot boot' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = Command::new(bin.join("moat"))
        .args(["run", "--isolation", "namespace", "--", "true"])
        .env("MOAT_HOME", &home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let err = stderr(&output);
    assert!(err.contains("sandbox failed to start"), "{err}");
    assert!(err.contains("fake agent: cannot boot"), "{err}");
    let left: Vec<_> = std::fs::read_dir(home.join("sandboxes")).unwrap().flatten().collect();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
}

#[test]
fn sigterm_to_moat_ends_the_command_and_cleans_up_as_root() {
    require_root();
    let home = moat_home("run-sigterm");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["run", "--", "sh", "-c", "echo started; sleep 100"])
        .env("MOAT_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut first = [0u8; 8];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"started\n");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moat did not end within 10 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(255));
    let needle = home.to_string_lossy().into_owned();
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(home.join("sandboxes")).unwrap().flatten().collect();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
}
