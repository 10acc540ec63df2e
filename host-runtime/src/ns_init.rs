//! `moat __ns-init DIR`: the first process in the sandbox's new namespaces (PID 1, private mount
//! namespace). It prepares the root the agent gets, then `exec`s `moat-agentd` in its place, so
//! the agent is PID 1. Its stdin is the agent channel and its stderr the agent log; both pass
//! through the `exec` unchanged.
//!
//! - `--cpus`/`--memory`: join the sandbox's cgroup first ([`crate::cgroup`]).
//! - the network namespace is new and empty: bring up its loopback device, nothing else.
//! - default root: [`host_root::assemble`] on `DIR/root`, agent `--prepared-root DIR/root`.
//! - `--rootfs SRC`: a read-only recursive bind of SRC on `DIR/lower`, agent `--root DIR/lower`
//!   (the agent overlays a tmpfs upper on it; SRC is never written). The bind also moves SRC out
//!   of `/tmp`, which the agent covers with its staging tmpfs before it mounts the overlay.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::mount::MsFlags;

use crate::cli::RootSource;
use crate::error::RuntimeError;
use crate::home::SandboxDir;
use crate::host_root;

/// Prepares the root and execs the agent; returns only on failure.
pub fn exec_agent(dir: &SandboxDir) -> RuntimeError {
    match prepare(dir) {
        Ok(mut command) => {
            let err = command.exec();
            RuntimeError::Io {
                what: "exec moat-agentd",
                path: dir.read_spec().map(|s| s.agentd).unwrap_or_default(),
                source: err,
            }
        }
        Err(err) => err,
    }
}

fn prepare(dir: &SandboxDir) -> Result<Command, RuntimeError> {
    let spec = dir.read_spec()?;
    crate::cgroup::join_from_env()?;
    crate::sys::loopback_up().map_err(RuntimeError::io("bring up loopback", "lo"))?;
    let mut command = Command::new(&spec.agentd);
    command.args(["--channel", "fd:0"]).env_remove(crate::cgroup::PROCS_ENV);
    match &spec.root {
        RootSource::Host => {
            let root = dir.root_mount();
            std::fs::create_dir_all(&root)
                .map_err(RuntimeError::io("create root mount point", &root))?;
            host_root::assemble(&root, &spec.name)?;
            command.arg("--prepared-root").arg(root);
        }
        RootSource::Dir(source) => {
            let lower = dir.lower_mount();
            std::fs::create_dir_all(&lower)
                .map_err(RuntimeError::io("create lower mount point", &lower))?;
            let none: Option<&str> = None;
            nix::mount::mount(
                Some(source.as_path()),
                &lower,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(RuntimeError::mount("bind --rootfs directory", &lower))?;
            nix::mount::mount(
                none,
                &lower,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                none,
            )
            .map_err(RuntimeError::mount("remount --rootfs read-only", &lower))?;
            command.arg("--root").arg(lower);
        }
    }
    Ok(command)
}
