//! `moat doctor`'s namespace-backend checks: can this host run a sandbox without a VM?
//!
//! ```text
//!  who (root, or unprivileged with which id map)? ─► unshare(1) on PATH? ─► overlay in /proc/filesystems? ─► a real probe: unshare the
//!  sandbox's namespaces (pid, mount, uts, ipc, net) and run `true` in them
//! ```
//!
//! Then the hardening the backend applies: seccomp filters (`Seccomp_filters` in
//! `/proc/self/status`) and a pids cgroup controller for the default pids limit. Apart: the
//! unprivileged id map (its host range, and whether idmapped mounts work).
//!
//! Each check explains itself in one line, as the VM checks in [`crate::doctor`] do.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::doctor::Check;

use crate::supervisor::UNSHARE_ARGS as PROBE_ARGS;

/// Runs every namespace-backend check on this host.
pub fn diagnose() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let mut checks = vec![check_user(
        root.then_some(())
            .ok_or_else(crate::backend::namespace::rootless::RootlessMap::for_this_user),
    )];
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    checks.push(check_overlay(&filesystems));
    checks.push(check_unshare());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    checks.push(check_seccomp(&status));
    if root {
        checks
            .push(check_pids_controller(Path::new(crate::backend::namespace::cgroup::CGROUP_ROOT)));
    } else {
        checks.push(Check {
            name: "pids",
            ok: true,
            detail: crate::security::hardening::ROOTLESS_NO_LIMITS.to_owned(),
        });
    }
    checks
}

/// Who runs moat: root, or an unprivileged user with `map` ([`crate::backend::namespace::rootless`]).
pub fn check_user(who: Result<(), crate::backend::namespace::rootless::RootlessMap>) -> Check {
    let detail = match who {
        Ok(()) => "running as root".to_owned(),
        Err(map) => {
            let ids = match map.subordinate {
                Some((uids, gids)) => format!(
                    "1..{} are your subordinate uids from {} and gids from {}",
                    uids.count, uids.base, gids.base
                ),
                None => "no /etc/subuid and /etc/subgid entries: single-id map".to_owned(),
            };
            format!("unprivileged (uid {}): a sandbox's root is you; {ids}", map.uid)
        }
    };
    Check { name: "user", ok: true, detail }
}

/// The checks for the unprivileged id map ([`crate::backend::namespace::idmap`], [`crate::backend::namespace::idmount`]): printed apart,
/// since without it the namespace backend still runs, with the identity map.
pub fn diagnose_id_map() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    vec![
        check_id_range(crate::backend::namespace::idmap::choose_for_host()),
        check_idmapped_mounts(root),
    ]
}

/// Which host range a sandbox's ids would map to, or why none can be chosen.
pub fn check_id_range(
    choice: Result<
        crate::backend::namespace::idmap::IdPool,
        crate::backend::namespace::idmap::IdMapError,
    >,
) -> Check {
    use crate::backend::namespace::idmap::RangeSource;
    match choice {
        Ok(pool) => {
            let from = match pool.source {
                RangeSource::SubIdFiles => "the moat entries of /etc/subuid and /etc/subgid",
                RangeSource::Reserved => "moat's reserved range: /etc/subuid has no moat entry",
            };
            Check {
                name: "id range",
                ok: true,
                detail: format!(
                    "each sandbox's 65536 ids map to its own block of host uids from {} and \
                     gids from {} ({} blocks, so {} sandboxes at once), from {from}",
                    pool.uids.base,
                    pool.gids.base,
                    pool.blocks(),
                    pool.blocks()
                ),
            }
        }
        Err(err) => Check { name: "id range", ok: false, detail: err.to_string() },
    }
}

fn check_idmapped_mounts(root: bool) -> Check {
    let name = "idmap";
    if !root {
        return Check { name, ok: false, detail: "not probed: needs root".to_owned() };
    }
    match crate::backend::namespace::idmount::probe(Path::new("/usr")) {
        Ok(()) => {
            Check { name, ok: true, detail: "idmapped mounts work (probed on /usr)".to_owned() }
        }
        Err(err) => Check {
            name,
            ok: false,
            detail: format!(
                "no idmapped mounts ({err}): they need Linux 5.12+ and a filesystem that \
                 supports them; without them sandboxes get the identity id map (their root is \
                 host root over files they can see)"
            ),
        },
    }
}

/// What a namespace sandbox gets when no option says otherwise, for `moat doctor`.
pub const DEFAULT_ISOLATION: &str = "user/pid/mount/uts/ipc/net namespaces; ids 0..65535 on an \
     unprivileged host range (identity without idmapped mounts); seccomp profile default; docker's 14 \
     capabilities; masked /proc and /sys paths; pids limit 4096; no memory or CPU limit";

/// What a namespace sandbox an unprivileged user starts gets ([`crate::backend::namespace::rootless`]).
pub const ROOTLESS_DEFAULT_ISOLATION: &str = "user/pid/mount/uts/ipc/net namespaces; root is \
     you, ids 1..65535 your /etc/subuid range (single-id map without one); seccomp profile \
     default; docker's 14 capabilities; masked /proc and /sys paths; no pids, memory or CPU limit";

/// Whether the kernel filters syscalls with seccomp (the security profiles need it).
pub fn check_seccomp(proc_self_status: &str) -> Check {
    let ok = proc_self_status.lines().any(|line| line.starts_with("Seccomp_filters:"))
        || proc_self_status.lines().any(|line| line.starts_with("Seccomp:"));
    Check {
        name: "seccomp",
        ok,
        detail: if ok {
            "the kernel has seccomp filters (--security-profile default and restricted)".to_owned()
        } else {
            "no Seccomp line in /proc/self/status: this kernel lacks CONFIG_SECCOMP_FILTER, and \
             a sandbox's security profile cannot be applied"
                .to_owned()
        },
    }
}

/// Whether a pids controller exists (cgroup v2 `cgroup.controllers`, or v1 `pids/`).
pub fn check_pids_controller(cgroup_root: &Path) -> Check {
    let v2 = std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).ok();
    let ok = match &v2 {
        Some(controllers) => controllers.split_whitespace().any(|c| c == "pids"),
        None => cgroup_root.join("pids").join("cgroup.procs").is_file(),
    };
    Check {
        name: "pids",
        ok,
        detail: if ok {
            "the pids cgroup controller is available (default --pids-limit 4096)".to_owned()
        } else {
            "no pids cgroup controller: the pids limit cannot apply (use --pids-limit 0 to run \
             without one)"
                .to_owned()
        },
    }
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

fn check_unshare() -> Check {
    let name = "namespaces";
    let Some(unshare) = find_on_path("unshare") else {
        return Check {
            name,
            ok: false,
            detail: "unshare(1) is not on PATH: install util-linux".to_owned(),
        };
    };
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
    fn the_user_check_says_root_or_the_unprivileged_map() {
        assert_eq!(check_user(Ok(())).detail, "running as root");
        let map = crate::backend::namespace::rootless::RootlessMap::choose(
            None,
            1000,
            1000,
            "1000:100000:65536",
            "",
        );
        let check = check_user(Err(map));
        assert!(check.ok && check.detail.contains("single-id map"), "{}", check.detail);
    }

    #[test]
    fn seccomp_is_read_from_proc_self_status() {
        assert!(check_seccomp("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n").ok);
        assert!(!check_seccomp("Name:\tx\n").ok);
    }

    #[test]
    fn pids_controller_is_found_on_v2_or_v1() {
        let dir = std::env::temp_dir().join(format!("moat-pids-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        assert!(!check_pids_controller(&dir).ok);
        std::fs::write(dir.join("pids/cgroup.procs"), "").unwrap();
        assert!(check_pids_controller(&dir).ok);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert!(!check_pids_controller(&dir).ok);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        assert!(check_pids_controller(&dir).ok);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn id_range_check_names_the_range_or_the_reason() {
        let ok = check_id_range(crate::backend::namespace::idmap::choose("", ""));
        assert!(
            ok.ok && ok.detail.contains("1879048192") && ok.detail.contains("reserved"),
            "{}",
            ok.detail
        );
        assert!(ok.detail.contains("1024 blocks"), "{}", ok.detail);
        let bad = check_id_range(crate::backend::namespace::idmap::choose(
            "moat:200000:10\n",
            "moat:200000:65536\n",
        ));
        assert!(!bad.ok && bad.detail.contains("/etc/subuid"), "{}", bad.detail);
    }

    #[test]
    fn overlay_is_found_in_proc_filesystems() {
        assert!(check_overlay("nodev\tsysfs\nnodev\toverlay\n\text4\n").ok);
        let missing = check_overlay("nodev\tsysfs\n\text4\n");
        assert!(!missing.ok && missing.detail.contains("modprobe overlay"));
    }
}
