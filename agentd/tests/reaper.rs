//! The reaper against real children, in its own test binary (its own process) because
//! `wait_no_children` looks at every child of the process. The tests run one at a time.

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use moat_agentd::process::Reaper;

fn reaper() -> (Reaper, MutexGuard<'static, ()>) {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    (REAPER.get_or_init(|| Reaper::start().expect("starting the reaper")).clone(), guard)
}

/// Starts `sh -c script` under the reaper. The `Child` is dropped at once: the reaper, not
/// `Child::wait`, collects the status.
fn spawn_sh(reaper: &Reaper, script: &str) -> (u32, tokio::sync::oneshot::Receiver<i32>) {
    let (pid, (), exit) = reaper
        .spawn_tracked(|| {
            let child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            Ok((child.id(), ()))
        })
        .expect("spawn");
    (pid, exit)
}

#[test]
fn instantly_exiting_child_delivers_its_status() {
    let (reaper, _serial) = reaper();
    for _ in 0..20 {
        let (_, exit) = spawn_sh(&reaper, "exit 5");
        assert_eq!(exit.blocking_recv(), Ok(5));
    }
}

#[test]
fn killed_child_reports_minus_one() {
    let (reaper, _serial) = reaper();
    let (pid, exit) = spawn_sh(&reaper, "sleep 30");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL)
        .unwrap();
    assert_eq!(exit.blocking_recv(), Ok(-1));
}

#[test]
fn with_unreaped_runs_only_before_the_child_is_reaped() {
    let (reaper, _serial) = reaper();
    let (pid, exit) = spawn_sh(&reaper, "sleep 0.2");
    assert_eq!(reaper.with_unreaped(pid, || "alive"), Some("alive"));
    assert_eq!(exit.blocking_recv(), Ok(0));
    assert_eq!(reaper.with_unreaped(pid, || "alive"), None);
}

#[test]
fn wait_no_children_times_out_while_a_child_runs_then_succeeds() {
    let (reaper, _serial) = reaper();
    let (_, exit) = spawn_sh(&reaper, "sleep 0.5");
    assert!(!reaper.wait_no_children(Duration::from_millis(100)));
    let begun = Instant::now();
    assert!(reaper.wait_no_children(Duration::from_secs(10)));
    assert!(begun.elapsed() < Duration::from_secs(5));
    assert_eq!(exit.blocking_recv(), Ok(0));
}

#[test]
fn second_reaper_in_one_process_is_refused() {
    let (_reaper, _serial) = reaper();
    let err = Reaper::start().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
}
