//! Running moat as an unprivileged user ("rootless", as rootless podman): what differs from a
//! start as root, and nothing else.
//!
//! ```text
//!  sandbox process (the user)                    unshare --user --pid --mount ... --fork
//!   spawn (no outer `unshare --mount`) ────────►   moat __ns-init DIR (waits for the maps)
//!   newuidmap PID 0 UID 1 1 SUBUID N             binds --rootfs itself, in its mount ns,
//!   newgidmap PID 0 GID 1 1 SUBGID N             then as root: assembles the root, execs
//!   (or "0 UID 1" written directly, one id)      the agent
//! ```
//!
//! - The id map: the sandbox's root is the user; its ids `1..=N` are the user's `/etc/subuid`
//!   and `/etc/subgid` ranges (at most 65535 ids), written by the setuid `newuidmap` and
//!   `newgidmap` (Debian's `uidmap`). A user without both entries gets the single-id map
//!   `0 UID 1` (and `setgroups` denied), with a warning line: only the sandbox's root exists.
//! - The state is the user's own `$MOAT_HOME` (default `~/.moat`); nothing is written under `/run`.
//! - Resource limits: moat does not use a delegated cgroup (not built), so an unprivileged
//!   sandbox has no pids, memory or CPU limit. The default pids limit is then reported as not
//!   applied ([`limits_warning`], `moat inspect`); an explicit `--pids-limit`, `--memory` or
//!   `--cpus` is an error ([`RuntimeError::RootlessLimit`]).

use std::path::PathBuf;
use std::process::Command;

use crate::backend::namespace::idmap::{IdRange, SANDBOX_ID_COUNT, map_line, parse_subid};
use crate::config::SandboxConfig;
use crate::error::RuntimeError;

/// Environment variable telling `__ns-init` it runs rootless: it binds `--rootfs` itself.
pub const ROOTLESS_ENV: &str = "MOAT_ROOTLESS";

/// Whether this process runs moat unprivileged (effective uid not 0).
pub fn is_rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// The maps of an unprivileged sandbox's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootlessMap {
    /// The user's uid: the sandbox's uid 0.
    pub uid: u32,
    /// The user's gid: the sandbox's gid 0.
    pub gid: u32,
    /// The subordinate uids and gids behind the sandbox's ids 1.., when the user has both.
    pub subordinate: Option<(IdRange, IdRange)>,
}

impl RootlessMap {
    /// The map for `uid`/`gid` (account `name`) given the text of `/etc/subuid` and
    /// `/etc/subgid`: the first entry naming the account or its uid in each, capped at 65535 ids.
    pub fn choose(name: Option<&str>, uid: u32, gid: u32, subuid: &str, subgid: &str) -> Self {
        let find = |text: &str| {
            let uid_text = uid.to_string();
            parse_subid(text)
                .into_iter()
                .find(|e| Some(e.owner.as_str()) == name || e.owner == uid_text)
                .map(|e| IdRange {
                    base: e.range.base,
                    count: e.range.count.min(SANDBOX_ID_COUNT - 1),
                })
        };
        let subordinate = find(subuid).zip(find(subgid));
        RootlessMap { uid, gid, subordinate }
    }

    /// The map of the user running this process.
    pub fn for_this_user() -> Self {
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Self::choose(
            name.as_deref(),
            uid.as_raw(),
            gid.as_raw(),
            &read("/etc/subuid"),
            &read("/etc/subgid"),
        )
    }

    /// The text for `/proc/PID/uid_map`.
    pub fn uid_map(&self) -> String {
        let sub = self.subordinate.map(|(uids, _)| map_line(1, uids)).unwrap_or_default();
        format!("0 {} 1\n{sub}", self.uid)
    }

    /// The text for `/proc/PID/gid_map`.
    pub fn gid_map(&self) -> String {
        let sub = self.subordinate.map(|(_, gids)| map_line(1, gids)).unwrap_or_default();
        format!("0 {} 1\n{sub}", self.gid)
    }

    /// The one warning line when the user has no subordinate ids.
    pub fn warning(&self) -> Option<String> {
        match self.subordinate {
            Some(_) => None,
            None => Some(format!(
                "moat: warning: uid {} has no /etc/subuid and /etc/subgid entries: the sandbox \
                 gets the single-id map (its root is you; no other user or group exists inside)",
                self.uid
            )),
        }
    }

    /// Writes the maps of `pid`'s new user namespace: with `newuidmap`/`newgidmap` when the user
    /// has subordinate ids, else the single-id maps directly (after denying `setgroups`, which
    /// the kernel requires of an unprivileged writer).
    pub fn write(&self, pid: u32) -> Result<(), RuntimeError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let Some((uids, gids)) = self.subordinate else {
            let write = |file: &str, text: String| {
                let path = proc.join(file);
                std::fs::write(&path, text).map_err(RuntimeError::io("write", &path))
            };
            write("setgroups", "deny".to_owned())?;
            write("uid_map", self.uid_map())?;
            return write("gid_map", self.gid_map());
        };
        new_id_map("newuidmap", pid, self.uid, uids)?;
        new_id_map("newgidmap", pid, self.gid, gids)
    }
}

fn new_id_map(helper: &'static str, pid: u32, own: u32, sub: IdRange) -> Result<(), RuntimeError> {
    let output = Command::new(helper)
        .arg(pid.to_string())
        .args(["0", &own.to_string(), "1", "1", &sub.base.to_string(), &sub.count.to_string()])
        .output()
        .map_err(RuntimeError::io("run (install Debian's uidmap package)", helper))?;
    if output.status.success() {
        return Ok(());
    }
    Err(RuntimeError::RootlessIdMap {
        helper,
        reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Checks the limits an unprivileged namespace sandbox can honour: an explicit `--cpus`,
/// `--memory` or `--pids-limit N` cannot be applied without a cgroup, so it is an error. Returns
/// the warning line to print when the default pids limit does not apply.
pub fn limits_warning(config: &SandboxConfig) -> Result<Option<String>, RuntimeError> {
    let explicit = [
        config.vcpus.map(|_| "--cpus"),
        config.memory_mib.map(|_| "--memory"),
        config.pids_limit.filter(|n| *n > 0).map(|_| "--pids-limit"),
    ];
    if let Some(option) = explicit.into_iter().flatten().next() {
        return Err(RuntimeError::RootlessLimit { option });
    }
    Ok(config.pids_limit.is_none().then(|| NO_PIDS_LIMIT_WARNING.to_owned()))
}

/// Printed by `moat run` and `moat create` of an unprivileged namespace sandbox that sets no
/// `--pids-limit`.
pub const NO_PIDS_LIMIT_WARNING: &str = "moat: warning: no pids limit applies: moat runs \
     unprivileged and cannot create a cgroup here (the default limit needs root; --pids-limit 0 \
     says unlimited and silences this)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_subordinate_ids_gets_root_as_themselves_and_their_range_after() {
        let map = RootlessMap::choose(
            Some("alice"),
            1000,
            1001,
            "bob:100000:65536\nalice:165536:65536\n",
            "1000:300000:200000\n",
        );
        assert_eq!(map.uid_map(), "0 1000 1\n1 165536 65535\n");
        assert_eq!(map.gid_map(), "0 1001 1\n1 300000 65535\n");
        assert_eq!(map.warning(), None);
    }

    #[test]
    fn a_user_without_both_entries_gets_the_single_id_map_and_a_warning() {
        let map = RootlessMap::choose(Some("alice"), 1000, 1000, "alice:165536:65536\n", "");
        assert_eq!(map.uid_map(), "0 1000 1\n");
        assert_eq!(map.gid_map(), "0 1000 1\n");
        let warning = map.warning().unwrap();
        assert!(warning.contains("single-id map") && !warning.contains('\n'), "{warning}");
    }

    #[test]
    fn explicit_limits_are_errors_and_the_default_pids_limit_a_warning() {
        let config = SandboxConfig::default();
        assert_eq!(limits_warning(&config).unwrap().as_deref(), Some(NO_PIDS_LIMIT_WARNING));
        let unlimited = SandboxConfig { pids_limit: Some(0), ..SandboxConfig::default() };
        assert_eq!(limits_warning(&unlimited).unwrap(), None);
        for (config, option) in [
            (SandboxConfig { pids_limit: Some(64), ..SandboxConfig::default() }, "--pids-limit"),
            (SandboxConfig { memory_mib: Some(256), ..SandboxConfig::default() }, "--memory"),
            (SandboxConfig { vcpus: Some(1), ..SandboxConfig::default() }, "--cpus"),
        ] {
            let err = limits_warning(&config).unwrap_err();
            assert!(err.to_string().contains(option), "{err}");
        }
    }
}
