//! The namespace start with an unprivileged id map ([`crate::backend::namespace::idmap`]): `moat __ns-prepare DIR`
//! does, as host root in its private mount namespace, every step that needs host privilege, then
//! becomes the root of the sandbox's user namespace and execs `unshare` for the others, which
//! runs the agent as PID 1. No `__ns-init`: nothing runs as an unmapped id.
//!
//! ```text
//!  __ns-prepare DIR (host root, private mount ns; MOAT_ID_MAP="UIDBASE GIDBASE")
//!   join the sandbox's cgroup          (the mapped root may not write the host's cgroup.procs)
//!   user namespace U: uid_map "0 UIDBASE 65536", gid_map "0 GIDBASE 65536"
//!   tmpfs on /run/moat (STAGE_DIR), which the mapped root can reach (DIR is mode 0700):
//!     moat-agentd  bind of the agent binary (`moat inspect` finds the agent by this name)
//!     root         default root: assembled on a scratch tmpfs, then all of it idmapped through U
//!     lower        --rootfs SRC, idmapped through U, read-only
//!     vol/N        each share (volumes, then scripts), idmapped: its host owner is sandbox root
//!   setns(U); setgroups([]); setresgid(0); setresuid(0)    (host ids UIDBASE, GIDBASE)
//!   unshare(CLONE_NEWNET), loopback up
//!   exec unshare --pid --mount --uts --ipc --fork --kill-child STAGE_DIR/moat-agentd ...
//! ```
//!
//! Through U, host id `BASE + n` is the sandbox's `n` and host root is unmapped (`nobody`), so
//! the sandbox's root holds capabilities only over its own namespaces and owns on the host
//! nothing but its range and what the idmapped mounts give it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::api::config::RootSource;
use crate::backend::namespace::idmap::{
    IdRange, SANDBOX_ID_COUNT, SandboxIds, map_line, owner_map,
};
use crate::error::RuntimeError;
use crate::store::home::SandboxDir;

/// Environment variable that tells `__ns-prepare` to use the unprivileged map: `"UIDBASE GIDBASE"`.
pub const ID_MAP_ENV: &str = "MOAT_ID_MAP";

/// Where `__ns-prepare` puts what the sandbox's root must reach, in its private mount namespace
/// (a tmpfs over the host's directory, which is created once if missing).
pub const STAGE_DIR: &str = "/run/moat";

/// `unshare(1)`'s flags once the user and net namespaces exist.
const UNSHARE_REST: [&str; 8] =
    ["--pid", "--mount", "--uts", "--ipc", "--fork", "--kill-child", "--propagation", "private"];

/// The value of [`ID_MAP_ENV`] for `ids`.
pub fn env_value(ids: &SandboxIds) -> String {
    format!("{} {}", ids.uids.base, ids.gids.base)
}

/// Reads [`ID_MAP_ENV`]: the host bases of the sandbox's uids and gids, when set.
pub fn from_env() -> Result<Option<(u32, u32)>, RuntimeError> {
    let Some(value) = std::env::var(ID_MAP_ENV).ok() else { return Ok(None) };
    parse_env_value(&value)
        .map(Some)
        .ok_or_else(|| RuntimeError::Config(format!("{ID_MAP_ENV}={value}")))
}

fn parse_env_value(value: &str) -> Option<(u32, u32)> {
    let mut parts = value.split(' ').map(str::parse::<u32>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(uid)), Some(Ok(gid)), None) => Some((uid, gid)),
        _ => None,
    }
}

/// The bootstrap tag (the path the agent binds from) of share `index`.
pub fn share_tag(index: usize) -> String {
    format!("{STAGE_DIR}/vol/{index}")
}

/// `__ns-prepare` with the unprivileged map whose host bases are `(uid_base, gid_base)`.
/// Returns only on failure.
pub fn prepare_and_enter(dir: &SandboxDir, (uid_base, gid_base): (u32, u32)) -> RuntimeError {
    match prepare(dir, uid_base, gid_base) {
        Ok(mut command) => {
            let err = command.exec();
            RuntimeError::io("exec", "unshare")(err)
        }
        Err(err) => err,
    }
}

fn prepare(dir: &SandboxDir, uid_base: u32, gid_base: u32) -> Result<Command, RuntimeError> {
    let spec = dir.read_spec()?;
    crate::backend::namespace::cgroup::join_from_env()?;
    let range = |base| IdRange { base, count: SANDBOX_ID_COUNT };
    let userns = crate::backend::namespace::userns::user_namespace(
        &map_line(0, range(uid_base)),
        &map_line(0, range(gid_base)),
    )?;
    let stage = Path::new(STAGE_DIR);
    std::fs::create_dir_all(stage).map_err(RuntimeError::io("create", stage))?;
    let none: Option<&str> = None;
    nix::mount::mount(
        Some("tmpfs"),
        stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(RuntimeError::mount("mount the staging tmpfs", stage))?;
    let agentd = stage.join("moat-agentd");
    std::fs::File::create(&agentd).map_err(RuntimeError::io("create", &agentd))?;
    nix::mount::mount(Some(&spec.agentd), &agentd, none, MsFlags::MS_BIND, none)
        .map_err(RuntimeError::mount("bind the agent binary", &agentd))?;
    let root_args = stage_root(&spec.root, &spec.name, stage, &userns)?;
    let shares = spec.config.shares(&dir.scripts_dir(), crate::config::ShareNaming::HostPath);
    for (index, share) in shares.iter().enumerate() {
        stage_share(&share.host, Path::new(&share_tag(index)), share.readonly, uid_base, gid_base)?;
    }
    enter(&userns)?;
    let mut command = Command::new("unshare");
    command
        .args(UNSHARE_REST)
        .arg(&agentd)
        .args(["--channel", "fd:0"])
        .arg(crate::security::AGENT_PROFILE_OPTION)
        .arg(spec.config.security_profile.as_str())
        .args(root_args)
        .env_remove(crate::backend::namespace::cgroup::PROCS_ENV)
        .env_remove(ID_MAP_ENV);
    Ok(command)
}

/// Puts the sandbox's root on the stage, idmapped through `userns`; returns the agent's root
/// options.
fn stage_root(
    root: &RootSource,
    hostname: &str,
    stage: &Path,
    userns: &OwnedFd,
) -> Result<Vec<std::ffi::OsString>, RuntimeError> {
    match root {
        RootSource::Host => {
            let (scratch, target) = (stage.join("scratch"), stage.join("root"));
            for path in [&scratch, &target] {
                std::fs::create_dir_all(path).map_err(RuntimeError::io("create", path))?;
            }
            crate::backend::namespace::host_root::assemble(&scratch, hostname)?;
            crate::backend::namespace::idmount::idmapped_rbind(&scratch, &target, userns.as_fd())?;
            nix::mount::umount2(&scratch, nix::mount::MntFlags::MNT_DETACH)
                .map_err(RuntimeError::mount("detach the scratch root", &scratch))?;
            Ok(vec!["--prepared-root".into(), target.into()])
        }
        RootSource::Dir(source) => {
            let lower = stage.join("lower");
            std::fs::create_dir_all(&lower).map_err(RuntimeError::io("create", &lower))?;
            crate::backend::namespace::idmount::idmapped_bind(
                source,
                &lower,
                userns.as_fd(),
                true,
            )?;
            Ok(vec!["--root".into(), lower.into()])
        }
        RootSource::Image(image) => {
            // Each layer idmapped read-only under `layers/` (named as in the store), then all of
            // them as one read-only overlay on `lower` (overlayfs takes idmapped lower layers).
            let layers = stage.join("layers");
            let mut staged = Vec::with_capacity(image.layers.len());
            for layer in &image.layers {
                let Some(name) = layer.file_name() else {
                    return Err(RuntimeError::Config(format!(
                        "image layer {} has no name",
                        layer.display()
                    )));
                };
                let target = layers.join(name);
                std::fs::create_dir_all(&target).map_err(RuntimeError::io("create", &target))?;
                crate::backend::namespace::idmount::idmapped_bind(
                    layer,
                    &target,
                    userns.as_fd(),
                    true,
                )?;
                staged.push(target);
            }
            let lower = stage.join("lower");
            crate::image::mount::mount_layers(&staged, &lower)?;
            Ok(vec!["--root".into(), lower.into()])
        }
    }
}

/// An idmapped bind of the share `host` on `target`: the directory's owner and group are the
/// sandbox's root (all of the sandbox's ids when the owner is host root).
fn stage_share(
    host: &Path,
    target: &Path,
    read_only: bool,
    uid_base: u32,
    gid_base: u32,
) -> Result<(), RuntimeError> {
    let meta = std::fs::metadata(host).map_err(RuntimeError::io("stat share", host))?;
    let map = |owner: u32, base: u32| {
        if owner == 0 {
            map_line(0, IdRange { base, count: SANDBOX_ID_COUNT })
        } else {
            owner_map(owner, base)
        }
    };
    let userns = crate::backend::namespace::userns::user_namespace(
        &map(meta.uid(), uid_base),
        &map(meta.gid(), gid_base),
    )?;
    std::fs::create_dir_all(target).map_err(RuntimeError::io("create", target))?;
    crate::backend::namespace::idmount::idmapped_bind(host, target, userns.as_fd(), read_only)
}

/// Becomes the root of `userns` (so the `exec` that follows keeps its capabilities there) and
/// moves into a new network namespace it owns, with loopback up.
fn enter(userns: &OwnedFd) -> Result<(), RuntimeError> {
    let fail = |what: &'static str| {
        move |errno: nix::errno::Errno| {
            RuntimeError::io(what, PathBuf::from("user namespace"))(std::io::Error::from(errno))
        }
    };
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER).map_err(fail("setns"))?;
    nix::unistd::setgroups(&[]).map_err(fail("setgroups"))?;
    let (root_gid, root_uid) = (Gid::from_raw(0), Uid::from_raw(0));
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(fail("setresgid"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(fail("setresuid"))?;
    // A change of credentials clears the parent-death signal the sandbox process asked for.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(fail("set the parent-death signal"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(fail("unshare the network"))?;
    crate::backend::namespace::sys::loopback_up()
        .map_err(RuntimeError::io("bring up loopback", "lo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_map_env_value_round_trips_and_rejects_junk() {
        let pool =
            crate::backend::namespace::idmap::choose("moat:200000:65536\n", "moat:300000:65536\n")
                .unwrap();
        let ids = pool.block(0);
        assert_eq!(parse_env_value(&env_value(&ids)), Some((200_000, 300_000)));
        for junk in ["", "1", "1 2 3", "a b", "1  2"] {
            assert_eq!(parse_env_value(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn share_tags_are_numbered_under_the_stage() {
        assert_eq!(share_tag(0), "/run/moat/vol/0");
        assert_eq!(share_tag(12), "/run/moat/vol/12");
    }
}
