//! Named volumes: directories of the moat home that outlive the sandboxes mounting them
//! (`-v NAME:/path`), with an optional size quota, and host-side file access contained in them.
//! Mounting one is the backends' `-v` path (idmapped on the namespace backend, so what the
//! sandbox's root writes belongs to the volume's owner on the host); this module owns the store.
//!
//! ```text
//! $MOAT_HOME/volumes/NAME/
//!   volume.json   name, created_at (RFC 3339 UTC), quota_mib; written last, so a directory
//!                 without it is a volume still being created (or a failed create) and is skipped
//!   data/         what sandboxes mount; with a quota, the mount point of disk.img
//!   disk.img      (quota) a sparse ext4 image of quota_mib MiB, loop-mounted on data/ from
//!                 create until rm (mounted again on first use after a host reboot)
//! ```
//!
//! Why an ext4 image: the quota must hold inside the sandbox (ENOSPC there) whatever filesystem
//! the moat home is on. Project quotas need a filesystem mounted with `prjquota` (this host's ext4
//! root is not) and would let a sandbox's root change its own project id; a loop-mounted image
//! needs only root and `mkfs.ext4`, and ext4 takes idmapped mounts. The usable space is a little
//! under the quota (ext4's metadata and journal). Unprivileged users get directory volumes only.
//!
//! Host-side access resolves every path with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! from the volume's directory, after refusing `..` outright: a path, or a symlink met on the way,
//! that leads out of the volume is [`VolumeError::PathEscapes`], never followed.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::limits::{
    MAX_VOLUME_LIST_ENTRIES, MAX_VOLUME_QUOTA_MIB, MAX_VOLUME_SIZE_WALK_ENTRIES,
    MIN_VOLUME_QUOTA_MIB,
};
use crate::store::home::SandboxDir;
use crate::store::state::{self, Status};

/// What went wrong with a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name breaks the naming rules (those of sandbox names).
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `create` with a name already in use.
    #[error("a volume named {0:?} already exists")]
    Exists(String),
    /// No such volume.
    #[error("no volume named {0:?}")]
    Unknown(String),
    /// `rm` of a volume a running sandbox mounts, without `force`.
    #[error("volume {name:?} is in use by {}; stop them first or use `moat volume rm -f`", sandboxes.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// The running sandboxes mounting it.
        sandboxes: Vec<String>,
    },
    /// A quota outside the supported range.
    #[error("volume quota {mib} MiB: expected {MIN_VOLUME_QUOTA_MIB}..={MAX_VOLUME_QUOTA_MIB} MiB")]
    BadQuota {
        /// The quota asked for.
        mib: u64,
    },
    /// A quota on a host where it cannot be made (an unprivileged user).
    #[error("volume quotas need root (a loop-mounted ext4 image); create {0:?} without --quota")]
    QuotaNeedsRoot(String),
    /// A path that is absolute after `..`, has a `..`, or meets a symlink leading out.
    #[error("path {path:?} escapes volume {name:?}")]
    PathEscapes {
        /// The volume.
        name: String,
        /// The path given.
        path: String,
    },
    /// A write that ran out of the volume's quota.
    #[error("volume {name:?} is full (quota {quota_mib} MiB) writing {path:?}")]
    QuotaExceeded {
        /// The volume.
        name: String,
        /// The path being written.
        path: String,
        /// Its quota.
        quota_mib: u64,
    },
    /// A read larger than the caller's bound.
    #[error("{path:?} in volume {name:?} is larger than {max_bytes} bytes")]
    TooLarge {
        /// The volume.
        name: String,
        /// The path.
        path: String,
        /// The bound.
        max_bytes: u64,
    },
    /// A directory listing past [`MAX_VOLUME_LIST_ENTRIES`].
    #[error("{path:?} in volume {name:?} has more than {MAX_VOLUME_LIST_ENTRIES} entries")]
    TooManyEntries {
        /// The volume.
        name: String,
        /// The directory.
        path: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The step.
        what: &'static str,
        /// The path it concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `volume.json` does not parse.
    #[error("volume record {}: {source}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// `mkfs.ext4` or `mount` failed.
    #[error("{program} for volume {name:?} failed ({status}): {stderr}")]
    Tool {
        /// The program.
        program: &'static str,
        /// The volume.
        name: String,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + use<> {
    let path = path.to_owned();
    move |source| VolumeError::Io { what, path, source }
}

/// What `volume.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeRecord {
    /// The volume's name.
    pub name: String,
    /// When it was created (RFC 3339 UTC, as a sandbox's `created_at`).
    pub created_at: String,
    /// Its size quota in MiB (`None`: none, the moat home's filesystem is the limit).
    pub quota_mib: Option<u64>,
}

/// A volume, as `moat volume ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeInfo {
    /// Name, creation time and quota.
    #[serde(flatten)]
    pub record: VolumeRecord,
    /// The host directory sandboxes mount.
    pub path: PathBuf,
}

/// A sandbox that mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeUser {
    /// The sandbox.
    pub sandbox: String,
    /// Its status (`running`, `stopped`, ...).
    pub status: &'static str,
}

/// A volume in detail, as `moat volume inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeDetails {
    /// Name, creation time, quota and path.
    #[serde(flatten)]
    pub info: VolumeInfo,
    /// Bytes used: the image's used blocks with a quota, else the blocks of the files under it.
    pub used_bytes: u64,
    /// `false` when the directory has more than [`MAX_VOLUME_SIZE_WALK_ENTRIES`] entries and
    /// `used_bytes` counts only those.
    pub used_bytes_exact: bool,
    /// Every sandbox of the home configured with it.
    pub used_by: Vec<VolumeUser>,
}

/// One entry of a directory in a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeEntry {
    /// Its file name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Its size in bytes (a symlink's own).
    pub size: u64,
}

/// Options of [`Volumes::create`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// A size quota in MiB.
    pub quota_mib: Option<u64>,
}

/// Checks a volume name: the sandbox name rules (1..=128 bytes, no `/` or NUL, not `.` or `..`,
/// no leading `-`), and no leading `.` or `~` (which `-v` reads as a path).
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let invalid = |reason| VolumeError::InvalidName { name: name.to_owned(), reason };
    if name.starts_with('.') || name.starts_with('~') {
        return Err(invalid("it starts with '.' or '~' (read as a path by -v)"));
    }
    match state::validate_name(name) {
        Ok(()) => Ok(()),
        Err(crate::error::RuntimeError::InvalidName { reason, .. }) => Err(invalid(reason)),
        Err(_) => Err(invalid("it is not a valid name")),
    }
}

/// Fills in the host directory of every named volume of `config` from the home's store (which
/// mounts a quota volume's image if a reboot unmounted it). Run before
/// [`crate::config::SandboxConfig::resolve`].
pub fn resolve_named(
    home: &Path,
    config: &mut crate::config::SandboxConfig,
) -> Result<(), VolumeError> {
    let volumes = Volumes::new(home);
    for volume in &mut config.volumes {
        if let Some(name) = &volume.name {
            volume.host = volumes.data_dir(name)?;
        }
    }
    Ok(())
}

/// The volume store of a moat home.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    /// The store under `home/volumes` (created on first `create`).
    pub fn new(home: &Path) -> Volumes {
        Volumes { root: home.join("volumes") }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the volume `name`: a directory, or with a quota an ext4 image mounted on it.
    pub fn create(&self, name: &str, options: VolumeOptions) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        if let Some(mib) = options.quota_mib {
            if !(MIN_VOLUME_QUOTA_MIB..=MAX_VOLUME_QUOTA_MIB).contains(&mib) {
                return Err(VolumeError::BadQuota { mib });
            }
            if !nix::unistd::geteuid().is_root() {
                return Err(VolumeError::QuotaNeedsRoot(name.to_owned()));
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(io("create volumes directory", &self.root))?;
        let dir = self.dir(name);
        std::fs::DirBuilder::new().mode(0o755).create(&dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                VolumeError::Exists(name.to_owned())
            } else {
                VolumeError::Io { what: "create volume directory", path: dir.clone(), source }
            }
        })?;
        match self.fill(name, &dir, options) {
            Ok(info) => Ok(info),
            Err(err) => {
                let _ = unmount(&dir.join("data"));
                let _ = std::fs::remove_dir_all(&dir);
                Err(err)
            }
        }
    }

    fn fill(
        &self,
        name: &str,
        dir: &Path,
        options: VolumeOptions,
    ) -> Result<VolumeInfo, VolumeError> {
        let data = dir.join("data");
        std::fs::DirBuilder::new().mode(0o755).create(&data).map_err(io("create", &data))?;
        if let Some(mib) = options.quota_mib {
            let image = dir.join("disk.img");
            let file = std::fs::File::create(&image).map_err(io("create", &image))?;
            file.set_len(mib * 1024 * 1024).map_err(io("size", &image))?;
            drop(file);
            run_tool(
                name,
                "mkfs.ext4",
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0", "-E", "root_owner=0:0"])
                    .arg(&image),
            )?;
            mount_image(name, &image, &data)?;
            let lost = data.join("lost+found");
            std::fs::remove_dir(&lost).map_err(io("remove", &lost))?;
        }
        let record = VolumeRecord {
            name: name.to_owned(),
            created_at: state::now(),
            quota_mib: options.quota_mib,
        };
        let path = dir.join("volume.json");
        let tmp = dir.join("volume.json.tmp");
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|source| VolumeError::Record { path: path.clone(), source })?;
        std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        Ok(VolumeInfo { record, path: data })
    }

    fn record(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        validate_name(name)?;
        let path = self.dir(name).join("volume.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::Unknown(name.to_owned()));
            }
            Err(err) => return Err(io("read", &path)(err)),
        };
        serde_json::from_slice(&bytes).map_err(|source| VolumeError::Record { path, source })
    }

    /// The directory sandboxes mount for `name`, mounting a quota volume's image when it is not.
    pub fn data_dir(&self, name: &str) -> Result<PathBuf, VolumeError> {
        let record = self.record(name)?;
        let dir = self.dir(name);
        let data = dir.join("data");
        if record.quota_mib.is_some() && !is_mount_point(&data)? {
            mount_image(name, &dir.join("disk.img"), &data)?;
        }
        Ok(data)
    }

    /// Every volume, sorted by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io("list", &self.root)(err)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list", &self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            match self.record(&name) {
                Ok(record) => out.push(VolumeInfo { record, path: entry.path().join("data") }),
                // Being created, or not a volume.
                Err(VolumeError::Unknown(_) | VolumeError::InvalidName { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// `name` with its usage and the sandboxes configured with it.
    pub fn inspect(&self, name: &str) -> Result<VolumeDetails, VolumeError> {
        let data = self.data_dir(name)?;
        let record = self.record(name)?;
        let (used_bytes, used_bytes_exact) = if record.quota_mib.is_some() {
            let stat = rustix::fs::statvfs(&data).map_err(|e| io("statvfs", &data)(e.into()))?;
            ((stat.f_blocks - stat.f_bfree) * stat.f_frsize, true)
        } else {
            tree_usage(&data)?
        };
        let used_by = self.users(name)?;
        Ok(VolumeDetails {
            info: VolumeInfo { record, path: data },
            used_bytes,
            used_bytes_exact,
            used_by,
        })
    }

    /// The sandboxes of this home configured with `name`, with their status.
    pub fn users(&self, name: &str) -> Result<Vec<VolumeUser>, VolumeError> {
        let sandboxes = self.root.with_file_name("sandboxes");
        let entries = match std::fs::read_dir(&sandboxes) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io("list", &sandboxes)(err)),
        };
        let mut users = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list", &sandboxes))?;
            let dir = SandboxDir::open(entry.path());
            // A sandbox being created or removed has no readable spec yet (or any more).
            let Ok(spec) = dir.read_spec() else { continue };
            if !spec.config.volumes.iter().any(|v| v.name.as_deref() == Some(name)) {
                continue;
            }
            let status = state::read(dir.path()).map_or("unknown", |s| s.status.as_str());
            users.push(VolumeUser { sandbox: spec.name, status });
        }
        users.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));
        Ok(users)
    }

    /// Removes `name` and its data. A volume a running (or draining) sandbox mounts only with
    /// `force`, which detaches it from the host: the sandbox keeps what it has mounted until it
    /// ends, and the data goes with the volume.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let record = self.record(name)?;
        let running: Vec<String> = self
            .users(name)?
            .into_iter()
            .filter(|u| {
                u.status == Status::Running.as_str() || u.status == Status::Draining.as_str()
            })
            .map(|u| u.sandbox)
            .collect();
        if !running.is_empty() && !force {
            return Err(VolumeError::InUse { name: name.to_owned(), sandboxes: running });
        }
        let dir = self.dir(name);
        // The record goes first, so a half-removed volume is no longer listed or mounted.
        let json = dir.join("volume.json");
        std::fs::remove_file(&json).map_err(io("remove", &json))?;
        let data = dir.join("data");
        if record.quota_mib.is_some() && is_mount_point(&data)? {
            unmount(&data)?;
        }
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }

    /// Opens `path` inside volume `name` with every step of its resolution held beneath it.
    fn open_in(
        &self,
        name: &str,
        path: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, VolumeError> {
        let data = self.data_dir(name)?;
        let relative = contained(name, path)?;
        let root = rustix::fs::open(&data, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io("open", &data)(e.into()))?;
        rustix::fs::openat2(
            &root,
            &relative,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|errno| {
            if errno == rustix::io::Errno::XDEV {
                VolumeError::PathEscapes { name: name.to_owned(), path: path.to_owned() }
            } else {
                io("open in volume", &data.join(&relative))(errno.into())
            }
        })
    }

    /// Opens `path` in volume `name` for reading (a stream of any size, in bounded memory).
    pub fn open(&self, name: &str, path: &str) -> Result<std::fs::File, VolumeError> {
        Ok(self.open_in(name, path, OFlags::RDONLY, Mode::empty())?.into())
    }

    /// The contents of `path` in volume `name`; [`VolumeError::TooLarge`] past `max_bytes`.
    pub fn read(&self, name: &str, path: &str, max_bytes: u64) -> Result<Vec<u8>, VolumeError> {
        let file = self.open(name, path)?;
        let mut out = Vec::new();
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(io("read", Path::new(path)))?;
        if out.len() as u64 > max_bytes {
            return Err(VolumeError::TooLarge {
                name: name.to_owned(),
                path: path.to_owned(),
                max_bytes,
            });
        }
        Ok(out)
    }

    /// Writes `contents` to `path` in volume `name` (created mode 0644, or truncated); returns
    /// the bytes written. A full quota is [`VolumeError::QuotaExceeded`].
    pub fn write_from(
        &self,
        name: &str,
        path: &str,
        mut contents: impl Read,
    ) -> Result<u64, VolumeError> {
        let fd = self.open_in(
            name,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )?;
        let mut file = std::fs::File::from(fd);
        let copied = std::io::copy(&mut contents, &mut file).and_then(|n| {
            file.flush()?;
            file.sync_all()?;
            Ok(n)
        });
        copied.map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                let quota_mib = self.record(name).ok().and_then(|r| r.quota_mib).unwrap_or(0);
                VolumeError::QuotaExceeded {
                    name: name.to_owned(),
                    path: path.to_owned(),
                    quota_mib,
                }
            } else {
                VolumeError::Io { what: "write in volume", path: PathBuf::from(path), source }
            }
        })
    }

    /// Writes `contents` to `path` in volume `name`; see [`Volumes::write_from`].
    pub fn write(&self, name: &str, path: &str, contents: &[u8]) -> Result<(), VolumeError> {
        self.write_from(name, path, contents).map(drop)
    }

    /// Makes directory `path` (and its missing parents) in volume `name`.
    pub fn mkdir(&self, name: &str, path: &str) -> Result<(), VolumeError> {
        let relative = contained(name, path)?;
        let mut done = PathBuf::new();
        for component in relative.components() {
            let parent = self.open_in(
                name,
                done.to_str().unwrap_or("."),
                OFlags::DIRECTORY | OFlags::RDONLY,
                Mode::empty(),
            )?;
            match rustix::fs::mkdirat(&parent, component.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(errno) => return Err(io("mkdir in volume", &relative)(errno.into())),
            }
            done.push(component);
        }
        // A component that already existed as a symlink out of the volume is refused here.
        self.open_in(name, path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).map(drop)
    }

    /// The entries of directory `path` in volume `name`, sorted by name.
    pub fn list_dir(&self, name: &str, path: &str) -> Result<Vec<VolumeEntry>, VolumeError> {
        let fd = self.open_in(name, path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())?;
        let dir = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| io("read dir", Path::new(path))(e.into()))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io("read dir", Path::new(path))(e.into()))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name == "." || file_name == ".." {
                continue;
            }
            if out.len() >= MAX_VOLUME_LIST_ENTRIES {
                return Err(VolumeError::TooManyEntries {
                    name: name.to_owned(),
                    path: path.to_owned(),
                });
            }
            let stat =
                rustix::fs::statat(&fd, entry.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io("stat in volume", Path::new(&file_name))(e.into()))?;
            let kind = match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
                rustix::fs::FileType::RegularFile => "file",
                rustix::fs::FileType::Directory => "dir",
                rustix::fs::FileType::Symlink => "symlink",
                _ => "other",
            };
            out.push(VolumeEntry { name: file_name, kind, size: stat.st_size as u64 });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// `path` as a path relative to a volume's directory (`/a/b` and `a/b` alike; `""` and `/` are
/// the directory itself); `..` anywhere is refused.
fn contained(name: &str, path: &str) -> Result<PathBuf, VolumeError> {
    let escapes = || VolumeError::PathEscapes { name: name.to_owned(), path: path.to_owned() };
    if path.contains('\0') {
        return Err(escapes());
    }
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

/// Whether `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> Result<bool, VolumeError> {
    let parent = path.parent().unwrap_or(path);
    let here = std::fs::metadata(path).map_err(io("stat", path))?;
    let above = std::fs::metadata(parent).map_err(io("stat", parent))?;
    Ok(here.dev() != above.dev())
}

fn mount_image(name: &str, image: &Path, data: &Path) -> Result<(), VolumeError> {
    // Plain options: a sandbox's agent re-binds the volume inside its user namespace, where
    // flags set here would be locked and its remount would fail.
    run_tool(
        name,
        "mount",
        Command::new("mount").args(["-t", "ext4", "-o", "loop"]).arg(image).arg(data),
    )
}

/// Detaches the mount at `data` (a sandbox still using it keeps its copy; the loop device is
/// released with the last user).
fn unmount(data: &Path) -> Result<(), VolumeError> {
    nix::mount::umount2(data, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|errno| io("unmount", data)(std::io::Error::from(errno)))
}

fn run_tool(name: &str, program: &'static str, command: &mut Command) -> Result<(), VolumeError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io("run", Path::new(program)))?;
    if output.status.success() {
        return Ok(());
    }
    Err(VolumeError::Tool {
        program,
        name: name.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Bytes of the blocks under `dir` (not following symlinks or crossing mounts), and whether
/// every entry was counted (at most [`MAX_VOLUME_SIZE_WALK_ENTRIES`] are).
fn tree_usage(dir: &Path) -> Result<(u64, bool), VolumeError> {
    let root_dev = std::fs::symlink_metadata(dir).map_err(io("stat", dir))?.dev();
    let mut stack = vec![dir.to_owned()];
    let (mut bytes, mut seen) = (0u64, 0usize);
    while let Some(path) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            // Removed while walking: nothing to count.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io("list", &path)(err)),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            seen += 1;
            if seen > MAX_VOLUME_SIZE_WALK_ENTRIES {
                return Ok((bytes, false));
            }
            bytes = bytes.saturating_add(meta.blocks() * 512);
            if meta.is_dir() && meta.dev() == root_dev {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Volumes) {
        let home = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(home.path());
        (home, volumes)
    }

    #[test]
    fn names_follow_the_sandbox_rules_and_refuse_path_like_starts() {
        for good in ["data", "cache-1", "a.b", "x_y"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "~home", "a/b", "-x", "nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contained_strips_the_root_and_refuses_parent_components() {
        assert_eq!(contained("v", "/a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(contained("v", "a/./b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(contained("v", "/").unwrap(), PathBuf::from("."));
        assert_eq!(contained("v", "").unwrap(), PathBuf::from("."));
        for bad in ["..", "/a/../../etc", "a/..", "x\0y"] {
            assert!(matches!(contained("v", bad), Err(VolumeError::PathEscapes { .. })), "{bad:?}");
        }
    }

    #[test]
    fn create_list_and_remove_a_directory_volume() {
        let (_home, volumes) = store();
        let info = volumes.create("data", VolumeOptions::default()).unwrap();
        assert!(info.path.is_dir());
        assert!(matches!(
            volumes.create("data", VolumeOptions::default()),
            Err(VolumeError::Exists(_))
        ));
        let listed = volumes.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].record.name, "data");
        assert_eq!(listed[0].record.quota_mib, None);
        volumes.remove("data", false).unwrap();
        assert!(volumes.list().unwrap().is_empty());
        assert!(matches!(volumes.remove("data", false), Err(VolumeError::Unknown(_))));
    }

    #[test]
    fn a_directory_without_a_record_is_not_listed() {
        let (home, volumes) = store();
        std::fs::create_dir_all(home.path().join("volumes/half")).unwrap();
        assert!(volumes.list().unwrap().is_empty());
        assert!(matches!(volumes.inspect("half"), Err(VolumeError::Unknown(_))));
    }

    #[test]
    fn a_quota_out_of_range_is_refused_before_anything_is_made() {
        let (home, volumes) = store();
        for mib in [0, MIN_VOLUME_QUOTA_MIB - 1, MAX_VOLUME_QUOTA_MIB + 1] {
            let err = volumes.create("q", VolumeOptions { quota_mib: Some(mib) }).unwrap_err();
            assert!(matches!(err, VolumeError::BadQuota { .. }), "{mib}");
        }
        assert!(!home.path().join("volumes/q").exists());
    }

    #[test]
    fn files_are_written_read_and_listed_inside_the_volume() {
        let (_home, volumes) = store();
        volumes.create("v", VolumeOptions::default()).unwrap();
        volumes.mkdir("v", "/a/b").unwrap();
        volumes.write("v", "/a/b/f.txt", b"hello").unwrap();
        assert_eq!(volumes.read("v", "a/b/f.txt", 5).unwrap(), b"hello");
        assert!(matches!(volumes.read("v", "a/b/f.txt", 4), Err(VolumeError::TooLarge { .. })));
        let entries = volumes.list_dir("v", "/a/b").unwrap();
        assert_eq!(entries, vec![VolumeEntry { name: "f.txt".into(), kind: "file", size: 5 }]);
        let details = volumes.inspect("v").unwrap();
        assert!(details.used_bytes_exact);
        assert!(details.used_by.is_empty());
    }

    #[test]
    fn symlinks_out_of_the_volume_are_refused_for_read_write_and_list() {
        let (home, volumes) = store();
        let info = volumes.create("v", VolumeOptions::default()).unwrap();
        let outside = home.path().join("secret");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, info.path.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../secret", info.path.join("rel")).unwrap();
        std::os::unix::fs::symlink(home.path(), info.path.join("dir")).unwrap();
        for path in ["abs", "rel"] {
            let err = volumes.read("v", path, 10).unwrap_err();
            assert!(matches!(err, VolumeError::PathEscapes { .. }), "{path}: {err}");
            let err = volumes.write("v", path, b"y").unwrap_err();
            assert!(matches!(err, VolumeError::PathEscapes { .. }), "{path}: {err}");
        }
        assert!(matches!(volumes.list_dir("v", "dir"), Err(VolumeError::PathEscapes { .. })));
        assert!(matches!(volumes.mkdir("v", "dir/sub"), Err(VolumeError::PathEscapes { .. })));
        assert_eq!(std::fs::read(&outside).unwrap(), b"x");
    }

    #[test]
    fn a_symlink_that_stays_inside_is_followed() {
        let (_home, volumes) = store();
        let info = volumes.create("v", VolumeOptions::default()).unwrap();
        volumes.write("v", "target", b"in").unwrap();
        std::os::unix::fs::symlink("target", info.path.join("link")).unwrap();
        assert_eq!(volumes.read("v", "link", 10).unwrap(), b"in");
    }

    #[test]
    fn a_sandbox_spec_naming_the_volume_is_a_user() {
        let (home, volumes) = store();
        volumes.create("v", VolumeOptions::default()).unwrap();
        let dir = SandboxDir::create(home.path(), "box").unwrap();
        let mut config = crate::config::SandboxConfig::default();
        config.volumes.push(crate::config::parse_volume("v:/data").unwrap());
        dir.write_spec(&crate::store::home::SandboxSpec {
            name: "box".into(),
            root: crate::api::config::RootSource::Host,
            agentd: "/bin/true".into(),
            backend: crate::backend::isolation::BackendKind::Namespace,
            rootless: false,
            config,
        })
        .unwrap();
        let users = volumes.users("v").unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].sandbox, "box");
    }

    #[test]
    fn resolve_named_fills_the_host_directory_and_refuses_an_unknown_name() {
        let (home, volumes) = store();
        let info = volumes.create("v", VolumeOptions::default()).unwrap();
        let mut config = crate::config::SandboxConfig::default();
        config.volumes.push(crate::config::parse_volume("v:/data:ro,noexec").unwrap());
        resolve_named(home.path(), &mut config).unwrap();
        assert_eq!(config.volumes[0].host, info.path);
        config.volumes.push(crate::config::parse_volume("nope:/x").unwrap());
        assert!(matches!(resolve_named(home.path(), &mut config), Err(VolumeError::Unknown(_))));
    }
}
