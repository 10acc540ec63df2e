//! The shutdown sequence (PROTOCOL.md §8.5, REFERENCE-RUNTIME.md §3.5): SIGTERM to every process,
//! a grace period, SIGKILL to whatever is left, sync, unmount, then power off (in a VM, the
//! restart path libkrun's own init takes, which ends the VMM) or exit (namespace backend: PID 1
//! exiting ends the pid namespace).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::driver::AgentServices;
use crate::process::Reaper;
use crate::sys;

/// How long processes get between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long the agent waits for SIGKILLed processes to be reaped.
pub const KILL_WAIT: Duration = Duration::from_millis(500);

/// Mount points never unmounted on the way down (the kernel tears them down with the namespace
/// or the VM, and unmounting them first would only make the last steps fail).
const KEEP_MOUNTED: [&str; 4] = ["/", "/proc", "/sys", "/dev"];

/// Stops everything the agent started. `pid1`: the agent is PID 1 of its own namespace or VM, so
/// it signals every process, not just its sessions, and tears the mounts down.
pub async fn stop_everything(services: &mut AgentServices, reaper: &Reaper, pid1: bool) {
    services.fs.abort_all();
    services.tcp.abort_all();
    services.exec.signal_all(Signal::SIGTERM as i32);
    if pid1 {
        sys::kill_all(Signal::SIGTERM);
    }
    if !wait_no_children(reaper, TERM_GRACE).await {
        tracing::info!("processes still running after {TERM_GRACE:?}; sending SIGKILL");
        services.exec.signal_all(Signal::SIGKILL as i32);
        if pid1 {
            sys::kill_all(Signal::SIGKILL);
        }
        if !wait_no_children(reaper, KILL_WAIT).await {
            tracing::warn!("processes survived SIGKILL for {KILL_WAIT:?}");
        }
    }
    sys::sync();
    if pid1 {
        unmount_all();
        sys::sync();
    }
}

async fn wait_no_children(reaper: &Reaper, timeout: Duration) -> bool {
    let reaper = reaper.clone();
    tokio::task::spawn_blocking(move || reaper.wait_no_children(timeout)).await.unwrap_or(false)
}

/// Unmounts everything but the essentials, newest first, lazily so busy mounts cannot block.
fn unmount_all() {
    for point in sys::mount_points().iter().rev() {
        if KEEP_MOUNTED.iter().any(|keep| Path::new(keep) == point) {
            continue;
        }
        if let Err(err) = sys::umount_lazy(point) {
            tracing::debug!(%err, "unmount on shutdown");
        }
    }
}

/// Powers the VM off. Returns only if the kernel refused.
pub fn power_off_vm() {
    let err = sys::reboot_restart();
    tracing::error!(%err, "power off failed; exiting instead");
}
