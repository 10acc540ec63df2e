//! `moat doctor`'s namespace-backend checks: can this host run a sandbox without a VM?
//!
//! ```text
//!  root? ─► unshare(1) on PATH? ─► overlay in /proc/filesystems? ─► a real probe: unshare the
//!  sandbox's namespaces (pid, mount, uts, ipc, net) and run `true` in them
//! ```
//!
//! Each check explains itself in one line, as the VM checks in [`crate::doctor`] do.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::doctor::Check;

use crate::sandbox::UNSHARE_ARGS as PROBE_ARGS;

/// Runs every namespace-backend check on this host.
pub fn diagnose() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let mut checks = vec![Check {
        name: "root",
        ok: root,
        detail: if root {
            "running as root".to_owned()
        } else {
            "not root: the namespace backend creates pid, mount and net namespaces".to_owned()
        },
    }];
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    checks.push(check_overlay(&filesystems));
    checks.push(check_unshare(root));
    checks
}

/// Whether the kernel lists overlayfs (the agent's writable layer over the read-only root).
pub fn check_overlay(proc_filesystems: &str) -> Check {
    let ok = proc_filesystems.lines().any(|line| line.split_whitespace().last() == Some("overlay"));
    Check {
        name: "overlayfs",
        ok,
        detail: if ok {
            "the kernel has overlayfs".to_owned()
        } else {
            "overlay is not in /proc/filesystems: load the overlay module (modprobe overlay)"
                .to_owned()
        },
    }
}

fn check_unshare(root: bool) -> Check {
    let name = "namespaces";
    let Some(unshare) = find_on_path("unshare") else {
        return Check {
            name,
            ok: false,
            detail: "unshare(1) is not on PATH: install util-linux".to_owned(),
        };
    };
    if !root {
        return Check { name, ok: false, detail: "not probed: needs root".to_owned() };
    }
    let probe = Command::new(&unshare)
        .args(PROBE_ARGS)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => Check {
            name,
            ok: true,
            detail: "new pid, mount, uts, ipc and net namespaces work".to_owned(),
        },
        Ok(out) => Check {
            name,
            ok: false,
            detail: format!(
                "unshare {} failed ({}): {}",
                PROBE_ARGS.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        },
        Err(err) => {
            Check { name, ok: false, detail: format!("cannot run {}: {err}", unshare.display()) }
        }
    }
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_found_in_proc_filesystems() {
        assert!(check_overlay("nodev\tsysfs\nnodev\toverlay\n\text4\n").ok);
        let missing = check_overlay("nodev\tsysfs\n\text4\n");
        assert!(!missing.ok && missing.detail.contains("modprobe overlay"));
    }
}
