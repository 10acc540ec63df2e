//! The default sandbox root, assembled from the host's system directories. Runs inside the
//! sandbox's own mount namespace (made private by `unshare`), so the host's mount table never
//! sees any of it.
//!
//! ```text
//!  <dir>/root            tmpfs (throw-away: /etc edits, new files, all vanish with the sandbox)
//!  ├── usr, lib, ...     read-only, nosuid binds of the host's (or the host's symlinks, recreated
//!  │                     as symlinks on merged-/usr hosts)
//!  ├── etc/              generated: passwd (root, nobody), group, hosts, hostname, resolv.conf,
//!  │                     nsswitch.conf; copied: ld.so.cache, ld.so.conf(.d), ssl/, alternatives/
//!  └── tmp proc sys dev root run var/tmp   empty
//! ```
//!
//! Why a tmpfs holding binds and `--prepared-root`, not `--root` (an overlay): overlayfs does not
//! cross mount points inside its lower layer, so an overlay of this directory would show empty
//! `usr/`. The agent bind-mounts a prepared root recursively, which keeps the read-only binds.
//! Writes under `/usr` therefore fail with `EROFS` and never reach the host; writes anywhere else
//! land in the tmpfs. Never included: `/etc/shadow`, `/root`, `/home`, `/var` of the host.

use std::path::Path;

use nix::mount::MsFlags;

use crate::error::RuntimeError;

/// Host directories bound read-only (or re-created as symlinks) when present.
pub const SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Host `/etc` entries copied into the generated `/etc` when present (directories recursively,
/// symlinks as symlinks).
pub const COPIED_ETC: [&str; 5] =
    ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "alternatives"];

/// Empty directories the agent and programs expect.
const EMPTY_DIRS: [(&str, u32); 8] = [
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("root", 0o700),
    ("run", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

/// Assembles the host root at `root` (an existing, empty directory).
pub fn assemble(root: &Path, hostname: &str) -> Result<(), RuntimeError> {
    for name in assemble_skeleton(root, hostname)? {
        bind_read_only(&Path::new("/").join(name), &root.join(name))?;
    }
    Ok(())
}

/// The host root without its system directories: the tmpfs, the generated `/etc`, the empty
/// directories, the host's top-level symlinks (merged `/usr`), and an empty mount point for each
/// system directory that is a real directory on the host, whose names it returns. The VM backend
/// shares those as separate virtiofs tags (a bind under a virtiofs share would reach the guest
/// as a submount, which overlayfs refuses to traverse with `EREMOTE`).
pub fn assemble_skeleton(root: &Path, hostname: &str) -> Result<Vec<&'static str>, RuntimeError> {
    mount_tmpfs(root)?;
    let mut system_dirs = Vec::new();
    for name in SYSTEM_DIRS {
        if add_system_dir(root, name)? {
            system_dirs.push(name);
        }
    }
    for (name, mode) in EMPTY_DIRS {
        make_dir(&root.join(name), mode)?;
    }
    write_etc(&root.join("etc"), hostname)?;
    Ok(system_dirs)
}

fn mount_tmpfs(root: &Path) -> Result<(), RuntimeError> {
    nix::mount::mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(RuntimeError::mount("mount root tmpfs", root))
}

/// Recreates the host's `/name` symlink, or makes an empty mount point when `/name` is a
/// directory (then returns true: the caller puts the directory there).
fn add_system_dir(root: &Path, name: &str) -> Result<bool, RuntimeError> {
    let host = Path::new("/").join(name);
    let Ok(meta) = std::fs::symlink_metadata(&host) else {
        return Ok(false);
    };
    let target = root.join(name);
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(&host).map_err(RuntimeError::io("read symlink", &host))?;
        std::os::unix::fs::symlink(&link, &target)
            .map_err(RuntimeError::io("recreate symlink", &target))?;
        return Ok(false);
    }
    if !meta.is_dir() {
        return Ok(false);
    }
    make_dir(&target, 0o755)?;
    Ok(true)
}

/// A recursive bind of `source` on `target`, then remounted read-only, nosuid, nodev.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), RuntimeError> {
    let none: Option<&str> = None;
    nix::mount::mount(Some(source), target, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
        .map_err(RuntimeError::mount("bind system directory", target))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    nix::mount::mount(none, target, none, flags, none)
        .map_err(RuntimeError::mount("remount system directory read-only", target))
}

fn make_dir(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(RuntimeError::io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(RuntimeError::io("set directory mode", path))
}

fn write_etc(etc: &Path, hostname: &str) -> Result<(), RuntimeError> {
    make_dir(etc, 0o755)?;
    for (name, text) in generated_etc(hostname) {
        let path = etc.join(name);
        std::fs::write(&path, text)
            .map_err(RuntimeError::io("write generated /etc file", &path))?;
    }
    for name in COPIED_ETC {
        let source = Path::new("/etc").join(name);
        if std::fs::symlink_metadata(&source).is_ok() {
            copy_tree(&source, &etc.join(name))?;
        }
    }
    Ok(())
}

/// The generated `/etc` files, as `(name, contents)`.
pub fn generated_etc(hostname: &str) -> Vec<(&'static str, String)> {
    vec![
        ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_owned()),
        ("group", "root:x:0:\nnogroup:x:65534:\n".to_owned()),
        ("hosts", format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n")),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", "# the namespace backend gives the sandbox loopback only: no DNS\n".to_owned()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n".to_owned()),
    ]
}

/// Copies a file, a symlink (as a symlink) or a directory tree.
fn copy_tree(source: &Path, target: &Path) -> Result<(), RuntimeError> {
    let meta = std::fs::symlink_metadata(source).map_err(RuntimeError::io("stat", source))?;
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(source).map_err(RuntimeError::io("read symlink", source))?;
        return std::os::unix::fs::symlink(link, target)
            .map_err(RuntimeError::io("copy symlink", target));
    }
    if meta.is_dir() {
        std::fs::create_dir_all(target).map_err(RuntimeError::io("create directory", target))?;
        let entries = match std::fs::read_dir(source) {
            Ok(entries) => entries,
            // Unprivileged, what the user may not read (`/etc/ssl/private`) stays out.
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
            Err(err) => return Err(RuntimeError::io("list directory", source)(err)),
        };
        for entry in entries {
            let entry = entry.map_err(RuntimeError::io("list directory", source))?;
            copy_tree(&entry.path(), &target.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if meta.is_file() {
        match std::fs::copy(source, target) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(err) => return Err(RuntimeError::io("copy file", source)(err)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwd_has_only_root_and_nobody() {
        let etc = generated_etc("box");
        let passwd = &etc.iter().find(|(n, _)| *n == "passwd").unwrap().1;
        let users: Vec<&str> = passwd.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(users, ["root", "nobody"]);
    }

    #[test]
    fn nothing_secret_is_copied_from_host_etc() {
        for name in COPIED_ETC {
            assert!(!["shadow", "gshadow", "sudoers", "ssh"].contains(&name), "{name}");
        }
    }

    #[test]
    fn hostname_appears_in_hosts_and_hostname() {
        let etc = generated_etc("box-1");
        assert!(etc.iter().filter(|(_, text)| text.contains("box-1")).count() >= 2);
    }
}
