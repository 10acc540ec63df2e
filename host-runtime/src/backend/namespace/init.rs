//! The identity-map start, on a host without idmapped mounts (the default start, with an
//! unprivileged id map, is [`crate::backend::namespace::mapped`], which `__ns-prepare` hands over to when
//! [`crate::backend::namespace::mapped::ID_MAP_ENV`] is set), and the start of a sandbox an unprivileged user
//! runs ([`crate::backend::namespace::rootless`]: no `__ns-prepare`; `__ns-init` binds `--rootfs` itself).
//!
//! `moat __ns-prepare DIR` then `moat __ns-init DIR`: the first process in the sandbox's new
//! namespaces (PID 1, private mount
//! namespace). It prepares the root the agent gets, then `exec`s `moat-agentd` in its place, so
//! the agent is PID 1. Its stdin is the agent channel and its stderr the agent log; both pass
//! through the `exec` unchanged.
//!
//! - first, wait until the sandbox process wrote the user namespace's id maps, then exec itself
//!   again to hold the namespace root's capabilities ([`crate::backend::namespace::userns`]);
//! - `--cpus`/`--memory`: join the sandbox's cgroup first ([`crate::backend::namespace::cgroup`]).
//! - the network namespace is new and empty: bring up its loopback device, nothing else.
//! - default root: [`host_root::assemble`] on `DIR/root`, agent `--prepared-root DIR/root`.
//! - `--image REF`: as `--rootfs`, with a read-only overlay of the image's layers on `DIR/lower`
//!   ([`crate::image::mount`]).
//! - `--rootfs SRC`: `__ns-prepare` (see [`prepare_and_enter`]) made a read-only bind of SRC on
//!   `DIR/lower`; the agent gets `--root DIR/lower` and overlays a tmpfs upper on it, so SRC is
//!   never written. The root is SRC's own filesystem: mounts below SRC are not included. The bind also moves SRC out
//!   of `/tmp`, which the agent covers with its staging tmpfs before it mounts the overlay.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::mount::MsFlags;

use crate::api::config::RootSource;
use crate::backend::namespace::host_root;
use crate::error::RuntimeError;
use crate::store::home::SandboxDir;

/// `moat __ns-prepare DIR`, in a private mount namespace still owned by the host's user
/// namespace: binds `--rootfs SRC` read-only on `DIR/lower`, then execs `unshare` with the
/// sandbox's namespaces running `moat __ns-init DIR` (same pid, so the sandbox process's id-map
/// handshake reaches it). Returns only on failure.
pub fn prepare_and_enter(dir: &SandboxDir) -> RuntimeError {
    match crate::backend::namespace::mapped::from_env() {
        Ok(Some(bases)) => return crate::backend::namespace::mapped::prepare_and_enter(dir, bases),
        Ok(None) => {}
        Err(err) => return err,
    }
    let spec = match dir.read_spec() {
        Ok(spec) => spec,
        Err(err) => return err,
    };
    let prepared = match &spec.root {
        RootSource::Dir(source) => bind_rootfs(source, &dir.lower_mount()),
        RootSource::Image(image) => {
            crate::image::mount::mount_layers(&image.layers, &dir.lower_mount())
        }
        RootSource::Host => Ok(()),
    };
    if let Err(err) = prepared {
        return err;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => return RuntimeError::io("find own executable", "moat")(err),
    };
    let err = Command::new("unshare")
        .args(crate::supervisor::UNSHARE_ARGS)
        .args(["--propagation", "private"])
        .arg(exe)
        .arg("__ns-init")
        .arg(dir.path())
        .exec();
    RuntimeError::io("exec", "unshare")(err)
}

/// A read-only bind of `source` on `lower`. Not recursive: mounts below `source` are not part of
/// the root (in the user namespace they would be locked, and overlayfs refuses a lower layer
/// with locked mounts under it). Made before the user namespace, so the bind itself is not
/// locked to its children.
pub(crate) fn bind_rootfs(
    source: &std::path::Path,
    lower: &std::path::Path,
) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(lower).map_err(RuntimeError::io("create lower mount point", lower))?;
    let none: Option<&str> = None;
    nix::mount::mount(Some(source), lower, none, MsFlags::MS_BIND, none)
        .map_err(RuntimeError::mount("bind --rootfs directory", lower))?;
    nix::mount::mount(
        none,
        lower,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        none,
    )
    .map_err(RuntimeError::mount("remount --rootfs read-only", lower))
}

/// Prepares the root and execs the agent; returns only on failure.
pub fn exec_agent(dir: &SandboxDir) -> RuntimeError {
    if std::env::var_os(crate::backend::namespace::userns::READY_FD_ENV).is_some() {
        return reexec_when_mapped();
    }
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

/// `unshare` may exec us before the sandbox process wrote the user namespace's id maps, and an
/// exec as an unmapped user leaves no capabilities. So: wait for the maps, then exec ourselves
/// again, now as the namespace's root with its full capability set.
fn reexec_when_mapped() -> RuntimeError {
    if let Err(err) = crate::backend::namespace::userns::wait_mapped() {
        return err;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => return RuntimeError::io("find own executable", "moat")(err),
    };
    let err = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env_remove(crate::backend::namespace::userns::READY_FD_ENV)
        .exec();
    RuntimeError::io("re-exec in the mapped user namespace", exe)(err)
}

fn prepare(dir: &SandboxDir) -> Result<Command, RuntimeError> {
    let spec = dir.read_spec()?;
    crate::backend::namespace::cgroup::join_from_env()?;
    crate::backend::namespace::sys::loopback_up()
        .map_err(RuntimeError::io("bring up loopback", "lo"))?;
    let mut command = Command::new(&spec.agentd);
    command
        .args(["--channel", "fd:0"])
        .arg(crate::security::AGENT_PROFILE_OPTION)
        .arg(spec.config.security_profile.as_str())
        .env_remove(crate::backend::namespace::cgroup::PROCS_ENV)
        .env_remove(crate::backend::namespace::rootless::ROOTLESS_ENV);
    match &spec.root {
        RootSource::Host => {
            let root = dir.root_mount();
            std::fs::create_dir_all(&root)
                .map_err(RuntimeError::io("create root mount point", &root))?;
            host_root::assemble(&root, &spec.name)?;
            command.arg("--prepared-root").arg(root);
        }
        RootSource::Dir(source) => {
            // `__ns-prepare` bound the directory on `lower` before the user namespace existed;
            // an unprivileged start has no `__ns-prepare`, so the bind is made here.
            let lower = dir.lower_mount();
            if std::env::var_os(crate::backend::namespace::rootless::ROOTLESS_ENV).is_some() {
                bind_rootfs(source, &lower)?;
            }
            command.arg("--root").arg(lower);
        }
        RootSource::Image(_) => {
            // `__ns-prepare` mounted the image's layers as a read-only overlay on `lower` before
            // the user namespace existed (an unprivileged start refuses images before this).
            command.arg("--root").arg(dir.lower_mount());
        }
    }
    Ok(command)
}
