//! Boot as PID 1: assemble a throw-away root, apply the sandbox configuration, mount the pseudo
//! filesystems (REFERENCE-RUNTIME.md §2.3 for what the reference does; this is moat's own order).
//!
//! ```text
//!  make mounts private
//!  tmpfs staging ─┬─ overlay(lower = root source, upper = tmpfs)   (RootPlan::Overlay)
//!                 └─ or the host's prepared throw-away root         (RootPlan::Prepared)
//!  root patches from the host's bundle (patches.rs), outside any user mount
//!  user mounts (dir by tag, tmpfs) into the new root
//!  /dev, /proc, /sys for the namespace backend (tmpfs + device binds from the old root; proc
//!    and sysfs while the host's are still visible, as a user namespace requires)
//!  mask /proc/kcore, /proc/keys, /sys/firmware...; /proc/sys, /proc/irq... read-only
//!  pivot_root, detach the old root
//!  /proc /sys (VM) /dev(+pts, shm) /tmp, hostname, rlimits
//! ```
//!
//! Whatever the root source, the sandbox writes into a tmpfs upper layer (or a root the host made
//! throw-away), so nothing it writes reaches the host's files.

use std::path::{Component, Path, PathBuf};

use moat_protocol::payload::bootstrap::{GuestBootstrap, MountFlags};
use moat_protocol::payload::core::InitFailureReason;
use nix::mount::MsFlags;
use nix::sys::resource::Resource;

use crate::sys::{self, SysError};
use crate::users::UserError;

/// Where the sandbox root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPlan {
    /// Overlay a tmpfs upper on this read-only lower directory (`/` in a VM).
    Overlay(PathBuf),
    /// The host already made this directory a throw-away root; pivot into it as is.
    Prepared(PathBuf),
    /// Not PID 1 in a fresh namespace: serve on the current root and change nothing (development
    /// and tests of the protocol only).
    InPlace,
}

/// Boot inputs that do not come from the bootstrap.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The root to assemble.
    pub root: RootPlan,
    /// Inside a VM (virtiofs tags, devtmpfs) rather than the namespace backend (bind mounts).
    pub vm: bool,
}

/// A boot step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A system call failed.
    #[error("{stage} failed: {source}")]
    Sys {
        /// The boot step.
        stage: &'static str,
        /// The failed call.
        source: SysError,
    },
    /// The bootstrap asks for something invalid.
    #[error("invalid {what} {path:?}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The bootstrap asks for something this agent does not implement.
    #[error("{0} is not supported by moat-agentd yet")]
    Unsupported(&'static str),
    /// The security profile could not be built.
    #[error("security profile: {0}")]
    Confine(String),
    /// The default user does not resolve.
    #[error("resolve default user failed: {0}")]
    User(#[from] UserError),
    /// A root patch could not be applied.
    #[error(transparent)]
    Patch(#[from] crate::patches::PatchError),
}

impl BootError {
    /// The typed reason `core.error.init_failure` carries, where one applies.
    pub fn init_failure_reason(&self) -> Option<InitFailureReason> {
        match self {
            BootError::User(UserError::UserNotFound(_)) => Some(InitFailureReason::UserNotFound),
            BootError::User(UserError::GroupNotFound(_)) => Some(InitFailureReason::GroupNotFound),
            BootError::Sys { .. }
            | BootError::Invalid { .. }
            | BootError::Unsupported(_)
            | BootError::Patch(_)
            | BootError::Confine(_) => None,
        }
    }
}

fn step(stage: &'static str) -> impl Fn(SysError) -> BootError {
    move |source| BootError::Sys { stage, source }
}

/// Kernel interfaces hidden from the sandbox, as runc hides them: a file gets `/dev/null` bound
/// over it, a directory an empty read-only tmpfs. Paths this kernel lacks are skipped.
const MASKED_PATHS: [&str; 12] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/sysrq-trigger",
    "proc/timer_list",
    "proc/timer_stats",
    "sys/devices/virtual/powercap",
    "sys/firmware",
];

/// Kernel interfaces the sandbox may read but not change (bound read-only over themselves).
const READ_ONLY_PATHS: [&str; 4] = ["proc/bus", "proc/fs", "proc/irq", "proc/sys"];

/// Device nodes the namespace backend binds from the host into the sandbox's `/dev`.
const NAMESPACE_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Staging directories tried, in order, for the tmpfs that holds the new root: each exists in any
/// Linux root, and mounting over one changes nothing outside this mount namespace. One that holds
/// a path the boot still has to read (the root source, a shared directory, host device nodes) is
/// skipped, since the tmpfs would hide it.
const STAGING_CANDIDATES: [&str; 4] = ["/tmp", "/mnt", "/run", "/dev"];

/// The first staging candidate that exists and holds none of `needed`.
fn pick_staging<'a>(
    candidates: &[&'a str],
    needed: &[&Path],
    exists: impl Fn(&Path) -> bool,
) -> Option<&'a Path> {
    candidates
        .iter()
        .map(|c| Path::new(*c))
        .find(|c| exists(c) && !needed.iter().any(|n| n.starts_with(c)))
}

/// Checks what this agent cannot do before touching anything.
pub fn check_supported(bootstrap: &GuestBootstrap) -> Result<(), BootError> {
    if bootstrap.block_root.is_some() {
        return Err(BootError::Unsupported("block_root"));
    }
    if !bootstrap.file_mounts.is_empty() {
        return Err(BootError::Unsupported("file_mounts"));
    }
    if !bootstrap.disk_mounts.is_empty() {
        return Err(BootError::Unsupported("disk_mounts"));
    }
    if bootstrap.network.is_some() {
        return Err(BootError::Unsupported("network"));
    }
    if bootstrap.handoff_init.is_some() {
        return Err(BootError::Unsupported("handoff_init"));
    }
    for mount in &bootstrap.dir_mounts {
        check_guest_path("dir mount", &mount.guest_path)?;
    }
    for mount in &bootstrap.tmpfs_mounts {
        check_guest_path("tmpfs mount", &mount.path)?;
    }
    Ok(())
}

fn check_guest_path(what: &'static str, path: &str) -> Result<(), BootError> {
    let invalid = |reason| BootError::Invalid { what, path: path.to_owned(), reason };
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid("must be absolute"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid("must not contain .."));
    }
    if p.components().count() < 2 {
        return Err(invalid("must not be /"));
    }
    Ok(())
}

/// Assembles the root and pivots into it, then mounts the pseudo filesystems and applies the
/// host-wide settings. Does nothing for [`RootPlan::InPlace`].
pub fn assemble(options: &BootOptions, bootstrap: &GuestBootstrap) -> Result<(), BootError> {
    check_supported(bootstrap)?;
    let lower_or_root = match &options.root {
        RootPlan::InPlace => return Ok(()),
        RootPlan::Overlay(lower) | RootPlan::Prepared(lower) => lower.clone(),
    };
    sys::make_mounts_private().map_err(step("make mounts private"))?;
    let mut needed: Vec<&Path> = vec![lower_or_root.as_path()];
    if !options.vm {
        // Bind sources of shared directories, and the host device nodes bound into /dev.
        needed.extend(bootstrap.dir_mounts.iter().map(|m| Path::new(&m.tag)));
        needed.push(Path::new("/dev/null"));
    }
    let staging =
        pick_staging(&STAGING_CANDIDATES, &needed, Path::is_dir).ok_or(BootError::Invalid {
            what: "root",
            path: lower_or_root.display().to_string(),
            reason: "every staging point (/tmp, /mnt, /run, /dev) holds a path the boot needs",
        })?;
    sys::mount(
        "tmpfs",
        staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(step("mount staging tmpfs"))?;
    let new_root = staging.join("root");
    sys::mkdir_all(&new_root).map_err(step("create new root"))?;
    match &options.root {
        RootPlan::Overlay(lower) => {
            let (upper, work) = (staging.join("upper"), staging.join("work"));
            sys::mkdir_all(&upper).map_err(step("create overlay upper"))?;
            sys::mkdir_all(&work).map_err(step("create overlay work"))?;
            // In the namespace backend the agent mounts this inside a user namespace, where the
            // trusted.* xattrs overlayfs marks opaque directories and whiteouts with cannot be
            // set: removing a directory of the lower failed with EIO. `userxattr` uses user.*.
            let data = format!(
                "lowerdir={},upperdir={},workdir={}{}",
                lower.display(),
                upper.display(),
                work.display(),
                if options.vm { "" } else { ",userxattr" }
            );
            sys::mount("overlay", &new_root, Some("overlay"), MsFlags::empty(), Some(&data))
                .map_err(step("mount overlay root"))?;
        }
        RootPlan::Prepared(root) => {
            sys::bind(root, &new_root, MsFlags::empty()).map_err(step("bind prepared root"))?
        }
        RootPlan::InPlace => {}
    }
    tracing::info!(root = %lower_or_root.display(), new_root = %new_root.display(), "root assembled");
    apply_patches(staging, &new_root, bootstrap, options.vm)?;
    apply_user_mounts(&new_root, bootstrap, options.vm)?;
    if !options.vm {
        populate_namespace_dev(&new_root)?;
        mount_proc_and_sys(&new_root)?;
        mask_kernel_paths(&new_root)?;
    }
    pivot(&new_root)?;
    mount_pseudo_filesystems(options.vm)?;
    if options.vm {
        mask_kernel_paths(Path::new("/"))?;
        // The namespace backend's host side brings up the loopback of the network namespace it
        // makes; in a VM the agent, as init, is the only one who can.
        sys::loopback_up().map_err(step("bring up loopback"))?;
    }
    apply_system_settings(bootstrap)
}

/// Applies the host's root patches to the new root before any user mount is on it, so they land
/// in the root's throw-away layer and never in a shared directory. The bundle (the dir mount at
/// [`crate::patches::PATCHES_GUEST_DIR`]) is mounted on the staging tmpfs, outside the new root,
/// and unmounted after: the sandbox never sees it.
fn apply_patches(
    staging: &Path,
    new_root: &Path,
    bootstrap: &GuestBootstrap,
    vm: bool,
) -> Result<(), BootError> {
    let guest = crate::patches::PATCHES_GUEST_DIR;
    let Some(mount) = bootstrap.dir_mounts.iter().find(|m| m.guest_path == guest) else {
        return Ok(());
    };
    let bundle = staging.join("patches");
    sys::mkdir_all(&bundle).map_err(step("create the patch bundle mount point"))?;
    if vm {
        sys::mount(&mount.tag, &bundle, Some("virtiofs"), MsFlags::MS_RDONLY, None)
            .map_err(step("mount the patch bundle"))?;
    } else {
        sys::bind(Path::new(&mount.tag), &bundle, MsFlags::MS_RDONLY)
            .map_err(step("bind the patch bundle"))?;
    }
    let applied = crate::patches::apply(new_root, &bundle);
    nix::mount::umount2(&bundle, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|errno| io_sys("umount2", &bundle, &std::io::Error::from(errno)))
        .map_err(step("unmount the patch bundle"))?;
    applied?;
    tracing::info!("root patches applied");
    Ok(())
}

fn mount_flags(flags: &MountFlags) -> MsFlags {
    let mut out = MsFlags::empty();
    out.set(MsFlags::MS_RDONLY, flags.readonly);
    out.set(MsFlags::MS_NOEXEC, flags.noexec);
    out.set(MsFlags::MS_NOSUID, flags.nosuid);
    out.set(MsFlags::MS_NODEV, flags.nodev);
    out
}

fn inside(root: &Path, guest_path: &str) -> PathBuf {
    root.join(guest_path.trim_start_matches('/'))
}

fn apply_user_mounts(
    new_root: &Path,
    bootstrap: &GuestBootstrap,
    vm: bool,
) -> Result<(), BootError> {
    let mut dir_mounts: Vec<_> = bootstrap
        .dir_mounts
        .iter()
        .filter(|m| m.guest_path != crate::patches::PATCHES_GUEST_DIR)
        .collect();
    // Parents before children.
    dir_mounts.sort_by_key(|m| Path::new(&m.guest_path).components().count());
    for mount in dir_mounts {
        let target = inside(new_root, &mount.guest_path);
        sys::mkdir_all(&target).map_err(step("create dir mount point"))?;
        let flags = mount_flags(&mount.flags);
        if vm {
            sys::mount(&mount.tag, &target, Some("virtiofs"), flags, None)
                .map_err(step("mount virtiofs share"))?;
        } else {
            // In the namespace backend a tag names a host directory visible before the pivot.
            sys::bind(Path::new(&mount.tag), &target, flags).map_err(step("bind dir mount"))?;
        }
    }
    for mount in &bootstrap.tmpfs_mounts {
        let target = inside(new_root, &mount.path);
        sys::mkdir_all(&target).map_err(step("create tmpfs mount point"))?;
        let mut data = Vec::new();
        if let Some(size) = mount.size_mib {
            data.push(format!("size={size}m"));
        }
        data.push(format!("mode={:o}", mount.mode.unwrap_or(0o755)));
        sys::mount(
            "tmpfs",
            &target,
            Some("tmpfs"),
            mount_flags(&mount.flags),
            Some(&data.join(",")),
        )
        .map_err(step("mount tmpfs"))?;
    }
    Ok(())
}

/// The namespace backend cannot mount devtmpfs (it would expose every host device), so `/dev` is a
/// tmpfs holding binds of a few harmless device nodes.
fn populate_namespace_dev(new_root: &Path) -> Result<(), BootError> {
    let dev = new_root.join("dev");
    sys::mkdir_all(&dev).map_err(step("create /dev"))?;
    sys::mount(
        "tmpfs",
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(step("mount /dev tmpfs"))?;
    for name in NAMESPACE_DEVICES {
        let (host, target) = (Path::new("/dev").join(name), dev.join(name));
        if !host.exists() {
            continue;
        }
        std::fs::File::create(&target)
            .map_err(|e| step("create device node")(io_sys("create", &target, &e)))?;
        sys::bind(&host, &target, MsFlags::empty()).map_err(step("bind device node"))?;
    }
    Ok(())
}

/// The namespace backend's `/proc` and `/sys`, mounted before the pivot. In a user namespace
/// the kernel allows a new proc or sysfs mount only while one is fully visible in the mount
/// namespace (`mount_too_revealing`): the host's, until the old root is detached.
fn mount_proc_and_sys(new_root: &Path) -> Result<(), BootError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (fstype, target, extra) in
        [("proc", "proc", MsFlags::empty()), ("sysfs", "sys", MsFlags::MS_RDONLY)]
    {
        let target = new_root.join(target);
        sys::mkdir_all(&target).map_err(step("create pseudo filesystem mount point"))?;
        sys::mount(fstype, &target, Some(fstype), flags | extra, None)
            .map_err(step("mount pseudo filesystem"))?;
    }
    Ok(())
}

/// Hides [`MASKED_PATHS`] and makes [`READ_ONLY_PATHS`] read-only under `root`, whose `/proc`,
/// `/sys` and `/dev/null` are already mounted.
fn mask_kernel_paths(root: &Path) -> Result<(), BootError> {
    let null = root.join("dev/null");
    for path in MASKED_PATHS {
        let target = root.join(path);
        match std::fs::metadata(&target) {
            Err(_) => continue,
            Ok(meta) if meta.is_dir() => sys::mount(
                "tmpfs",
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
            .map_err(step("mask a kernel directory"))?,
            Ok(_) => {
                sys::bind(&null, &target, MsFlags::empty()).map_err(step("mask a kernel file"))?
            }
        }
    }
    for path in READ_ONLY_PATHS {
        let target = root.join(path);
        if target.exists() {
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            sys::bind(&target, &target, flags | MsFlags::MS_NOEXEC)
                .map_err(step("make a kernel directory read-only"))?;
        }
    }
    Ok(())
}

fn io_sys(call: &'static str, path: &Path, err: &std::io::Error) -> SysError {
    SysError {
        call,
        target: path.display().to_string(),
        errno: nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn pivot(new_root: &Path) -> Result<(), BootError> {
    let old = new_root.join(".moat-old-root");
    sys::mkdir_all(&old).map_err(step("create old-root mount point"))?;
    sys::chdir(new_root).map_err(step("enter new root"))?;
    sys::pivot_root(Path::new("."), Path::new(".moat-old-root")).map_err(step("pivot_root"))?;
    sys::chdir(Path::new("/")).map_err(step("enter /"))?;
    sys::umount_lazy(Path::new("/.moat-old-root")).map_err(step("detach old root"))?;
    let _ = std::fs::remove_dir("/.moat-old-root");
    Ok(())
}

/// `/proc` and `/sys` (in a VM; the namespace backend mounted them before the pivot), `/dev`
/// (devtmpfs in a VM), `/dev/pts`, `/dev/shm`, and a private `/tmp`.
pub fn mount_pseudo_filesystems(vm: bool) -> Result<(), BootError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_and_sys: [(&str, &str, &str, MsFlags, Option<&str>); 2] = [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec | MsFlags::MS_RDONLY, None),
    ];
    let mounts: [(&str, &str, &str, MsFlags, Option<&str>); 3] = [
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev_noexec, Some("mode=1777")),
        ("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    ];
    if vm {
        sys::mkdir_all(Path::new("/dev")).map_err(step("create /dev"))?;
        sys::mount(
            "devtmpfs",
            Path::new("/dev"),
            Some("devtmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )
        .map_err(step("mount /dev"))?;
    }
    let before = if vm { &proc_and_sys[..] } else { &[] };
    for &(source, target, fstype, flags, data) in before.iter().chain(&mounts) {
        let target = Path::new(target);
        sys::mkdir_all(target).map_err(step("create pseudo filesystem mount point"))?;
        sys::mount(source, target, Some(fstype), flags, data)
            .map_err(step("mount pseudo filesystem"))?;
    }
    // /dev/ptmx must reach this devpts instance; /dev/fd and friends point into /proc.
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let link = Path::new(link);
        if link.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(link);
        }
        std::os::unix::fs::symlink(to, link)
            .map_err(|e| step("create /dev link")(io_sys("symlink", link, &e)))?;
    }
    Ok(())
}

/// Hostname and sandbox-wide rlimits (inherited by every process the agent starts).
pub fn apply_system_settings(bootstrap: &GuestBootstrap) -> Result<(), BootError> {
    if let Some(hostname) = &bootstrap.hostname {
        sys::sethostname(hostname).map_err(step("set hostname"))?;
        // Best effort: a root without /etc simply has no hostname file.
        let _ = std::fs::write("/etc/hostname", format!("{hostname}\n"));
    }
    for limit in &bootstrap.rlimits {
        if let Some(resource) = rlimit_resource(&limit.resource) {
            sys::setrlimit(&limit.resource, resource, limit.soft, limit.hard)
                .map_err(step("set rlimit"))?;
        } else {
            tracing::warn!(resource = %limit.resource, "skipping unknown rlimit");
        }
    }
    Ok(())
}

/// Maps a lowercase rlimit name (`nofile`, `nproc`, ...) to its resource.
pub fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "cpu" => Resource::RLIMIT_CPU,
        "fsize" => Resource::RLIMIT_FSIZE,
        "data" => Resource::RLIMIT_DATA,
        "stack" => Resource::RLIMIT_STACK,
        "core" => Resource::RLIMIT_CORE,
        "rss" => Resource::RLIMIT_RSS,
        "nproc" => Resource::RLIMIT_NPROC,
        "nofile" => Resource::RLIMIT_NOFILE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "as" => Resource::RLIMIT_AS,
        "locks" => Resource::RLIMIT_LOCKS,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_protocol::payload::bootstrap::{DirMount, TmpfsMount};

    #[test]
    fn guest_paths_must_be_absolute_without_parent_components() {
        assert!(check_guest_path("x", "/data").is_ok());
        assert!(check_guest_path("x", "data").is_err());
        assert!(check_guest_path("x", "/a/../etc").is_err());
        assert!(check_guest_path("x", "/").is_err());
    }

    #[test]
    fn unsupported_bootstrap_features_are_refused_by_name() {
        assert!(check_supported(&GuestBootstrap::default()).is_ok());
        let with_handoff = GuestBootstrap {
            handoff_init: Some(moat_protocol::payload::bootstrap::HandoffInit {
                cmd: "auto".into(),
                args: vec![],
                cwd: None,
                env: vec![],
            }),
            ..Default::default()
        };
        assert!(matches!(
            check_supported(&with_handoff),
            Err(BootError::Unsupported("handoff_init"))
        ));
    }

    #[test]
    fn bad_mount_paths_are_refused_before_mounting() {
        let bootstrap = GuestBootstrap {
            dir_mounts: vec![DirMount {
                tag: "/src".into(),
                guest_path: "rel".into(),
                flags: MountFlags::default(),
            }],
            ..Default::default()
        };
        assert!(matches!(check_supported(&bootstrap), Err(BootError::Invalid { .. })));
        let bootstrap = GuestBootstrap {
            tmpfs_mounts: vec![TmpfsMount {
                path: "/".into(),
                size_mib: None,
                mode: None,
                flags: MountFlags::default(),
            }],
            ..Default::default()
        };
        assert!(matches!(check_supported(&bootstrap), Err(BootError::Invalid { .. })));
    }

    #[test]
    fn mount_flags_map_one_to_one() {
        let flags = MountFlags { readonly: true, noexec: false, nosuid: true, nodev: false };
        assert_eq!(mount_flags(&flags), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    }

    #[test]
    fn rlimit_names_are_lowercase_linux_names() {
        assert_eq!(rlimit_resource("nofile"), Some(Resource::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("NOFILE"), None);
        assert_eq!(rlimit_resource("bogus"), None);
    }

    #[test]
    fn user_errors_carry_typed_init_failure_reasons() {
        let err = BootError::User(UserError::UserNotFound("x".into()));
        assert_eq!(err.init_failure_reason(), Some(InitFailureReason::UserNotFound));
        assert_eq!(BootError::Unsupported("network").init_failure_reason(), None);
    }

    #[test]
    fn staging_skips_a_directory_holding_the_root_source() {
        let all = |_: &Path| true;
        let root = Path::new("/tmp/ci/home/sandboxes/x/root");
        assert_eq!(pick_staging(&STAGING_CANDIDATES, &[root], all), Some(Path::new("/mnt")));
        // A lower of `/` is read through the overlay, which never sees mounts on top of it.
        assert_eq!(
            pick_staging(&STAGING_CANDIDATES, &[Path::new("/")], all),
            Some(Path::new("/tmp"))
        );
        let dev = Path::new("/dev/null");
        let only_tmp_and_dev = |p: &Path| p == Path::new("/tmp") || p == Path::new("/dev");
        assert_eq!(pick_staging(&STAGING_CANDIDATES, &[root, dev], only_tmp_and_dev), None);
        assert_eq!(
            pick_staging(&STAGING_CANDIDATES, &[Path::new("/srv")], all),
            Some(Path::new("/tmp"))
        );
    }
}
