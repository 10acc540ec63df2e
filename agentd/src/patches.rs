//! Root patches: files, directories, symlinks, removals and appends the host asked for, applied
//! by boot to the assembled root before the pivot, so they land in the throw-away upper layer (or
//! the host's throw-away root) and never in the lower.
//!
//! ```text
//!  host: DIR/patches/{manifest.cbor, files/N}  ─share─►  NEW_ROOT/.msb/patches (read-only)
//!  boot: read manifest ─► each op, paths resolved inside NEW_ROOT (openat2 RESOLVE_IN_ROOT:
//!        symlinks and `..` in the root cannot lead out) ─► unmount and remove the share
//! ```

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

/// Where the host shares the patch bundle (a dir mount with this guest path).
pub const PATCHES_GUEST_DIR: &str = "/.msb/patches";

/// The bundle's manifest file name.
pub const MANIFEST: &str = "manifest.cbor";

/// One step of the manifest (host-runtime's `patches::BundleOp` writes the same shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatchOp {
    /// `mkdir -p PATH`, the last component with `mode`.
    Mkdir {
        /// Absolute path in the root.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file with the bundle file `source`'s bytes.
    File {
        /// Absolute path in the root.
        path: String,
        /// The bundle file (`files/N`).
        source: String,
        /// Permission bits.
        mode: u32,
        /// Replace what is there (else an existing path is an error).
        replace: bool,
    },
    /// A symlink at `link` to `target`.
    Symlink {
        /// Absolute path in the root.
        link: String,
        /// What it points to (not resolved).
        target: String,
        /// Replace what is there.
        replace: bool,
    },
    /// Removes a file, symlink or directory tree (absent is fine).
    Remove {
        /// Absolute path in the root.
        path: String,
    },
    /// Appends the bundle file `source`'s bytes (the file is made, 0644, when absent).
    Append {
        /// Absolute path in the root.
        path: String,
        /// The bundle file.
        source: String,
    },
}

/// A patch that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("patch {path:?}: {what}: {source}")]
pub struct PatchError {
    /// The guest path.
    pub path: String,
    /// The step.
    pub what: &'static str,
    /// The cause.
    pub source: std::io::Error,
}

fn fail<'a>(
    path: &'a str,
    what: &'static str,
) -> impl FnOnce(nix::errno::Errno) -> PatchError + 'a {
    move |errno| PatchError { path: path.to_owned(), what, source: errno.into() }
}

fn invalid(path: &str, what: &'static str) -> PatchError {
    PatchError {
        path: path.to_owned(),
        what,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    }
}

/// Decodes a manifest.
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<PatchOp>, PatchError> {
    ciborium::from_reader(bytes).map_err(|err| PatchError {
        path: MANIFEST.to_owned(),
        what: "decode the manifest",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string()),
    })
}

/// Applies the bundle at `bundle` to the root at `root`.
pub fn apply(root: &Path, bundle: &Path) -> Result<(), PatchError> {
    let manifest = bundle.join(MANIFEST);
    let bytes = std::fs::read(&manifest).map_err(|source| PatchError {
        path: manifest.display().to_string(),
        what: "read",
        source,
    })?;
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("/", "open the root"))?;
    for op in decode_manifest(&bytes)? {
        apply_op(root, &root_fd, bundle, &op)?;
    }
    Ok(())
}

fn apply_op(
    root_path: &Path,
    root: &OwnedFd,
    bundle: &Path,
    op: &PatchOp,
) -> Result<(), PatchError> {
    match op {
        PatchOp::Mkdir { path, mode } => {
            let dir = make_dirs(root, path)?;
            // An O_PATH descriptor cannot be chmod-ed: open the directory itself.
            let dir = nix::fcntl::openat(
                &dir,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(fail(path, "open"))?;
            nix::sys::stat::fchmod(dir.as_fd(), Mode::from_bits_truncate(*mode))
                .map_err(fail(path, "chmod"))
        }
        PatchOp::File { path, source, mode, replace } => {
            let (parent, name) = parent_of(root, path)?;
            clear(&parent, name, path, *replace)?;
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
            let fd = nix::fcntl::openat(
                &parent,
                name,
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(*mode),
            )
            .map_err(fail(path, "create"))?;
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(*mode))
                .map_err(fail(path, "chmod"))?;
            copy_in(bundle, source, fd, path)
        }
        PatchOp::Symlink { link, target, replace } => {
            let (parent, name) = parent_of(root, link)?;
            clear(&parent, name, link, *replace)?;
            nix::unistd::symlinkat(target.as_str(), parent.as_fd(), name)
                .map_err(fail(link, "symlink"))
        }
        PatchOp::Remove { path } => remove(root_path, root, path),
        PatchOp::Append { path, source } => {
            let (parent, name) = parent_of(root, path)?;
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOFOLLOW;
            let fd = nix::fcntl::openat(
                &parent,
                name,
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(fail(path, "open for append"))?;
            copy_in(bundle, source, fd, path)
        }
    }
}

/// The components of an absolute guest path with no `..`, refusing the bundle's own place.
fn components(path: &str) -> Result<Vec<&str>, PatchError> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') {
        return Err(invalid(path, "the path must be absolute"));
    }
    if p.starts_with(PATCHES_GUEST_DIR) {
        return Err(invalid(path, "the path is the patch bundle's"));
    }
    let mut out = Vec::new();
    for component in p.components() {
        match component {
            Component::Normal(part) => {
                out.push(part.to_str().ok_or_else(|| invalid(path, "not UTF-8"))?)
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(path, "the path must not contain .."));
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(path, "the path must not be /"));
    }
    Ok(out)
}

/// Opens (making what is missing, mode 0755) the directory `path` inside `root`.
fn make_dirs(root: &OwnedFd, path: &str) -> Result<OwnedFd, PatchError> {
    let parts = components(path)?;
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let mut prefix = String::from("/");
    for part in &parts {
        let parent = nix::fcntl::openat2(root, prefix.as_str(), how())
            .map_err(fail(path, "open a parent"))?;
        match nix::sys::stat::mkdirat(&parent, *part, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(errno) => return Err(fail(path, "mkdir")(errno)),
        }
        prefix.push_str(part);
        prefix.push('/');
    }
    nix::fcntl::openat2(root, prefix.as_str(), how()).map_err(fail(path, "open"))
}

/// The parent directory of `path` (made when missing) and the last component.
fn parent_of<'a>(root: &OwnedFd, path: &'a str) -> Result<(OwnedFd, &'a str), PatchError> {
    let parts = components(path)?;
    let (name, parents) =
        parts.split_last().ok_or_else(|| invalid(path, "the path must not be /"))?;
    let parent = if parents.is_empty() {
        nix::fcntl::openat2(
            root,
            "/",
            OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT),
        )
        .map_err(fail(path, "open the root"))?
    } else {
        make_dirs(root, &format!("/{}", parents.join("/")))?
    };
    Ok((parent, name))
}

/// Makes room for a new entry `name`: an existing one is an error unless `replace`, which
/// removes a file or symlink (never a directory tree).
fn clear(parent: &OwnedFd, name: &str, path: &str, replace: bool) -> Result<(), PatchError> {
    let exists = nix::sys::stat::fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    match exists {
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(fail(path, "stat")(errno)),
        Ok(_) if !replace => Err(PatchError {
            path: path.to_owned(),
            what: "exists (the patch does not replace)",
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        }),
        Ok(_) => nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(fail(path, "replace (a directory is never replaced)")),
    }
}

/// Removes `path`: a file or symlink (whatever its parents), or a directory tree, whose parents
/// must then be real directories (no symlink), so that its path under the root is the one
/// resolved; `std::fs::remove_dir_all` never follows a symlink below it. Absent is fine.
fn remove(root_path: &Path, root: &OwnedFd, path: &str) -> Result<(), PatchError> {
    let parts = components(path)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(invalid(path, "the path must not be /"));
    };
    let how = |resolve| {
        OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(resolve)
    };
    let parent_path = format!("/{}", parents.join("/"));
    let parent =
        match nix::fcntl::openat2(root, parent_path.as_str(), how(ResolveFlag::RESOLVE_IN_ROOT)) {
            Ok(parent) => parent,
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(fail(path, "open the parent")(errno)),
        };
    let relative_parent = if parents.is_empty() { ".".to_owned() } else { parents.join("/") };
    match nix::unistd::unlinkat(&parent, *name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(nix::errno::Errno::EISDIR) => {}
        Err(errno) => return Err(fail(path, "remove")(errno)),
    }
    nix::fcntl::openat2(
        root,
        relative_parent.as_str(),
        how(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH),
    )
    .map_err(fail(path, "remove a directory under a symlinked parent (not supported)"))?;
    let lexical = root_path.join(parts.join("/"));
    std::fs::remove_dir_all(&lexical).map_err(|source| PatchError {
        path: path.to_owned(),
        what: "remove the directory tree",
        source,
    })
}

fn copy_in(bundle: &Path, source: &str, fd: OwnedFd, path: &str) -> Result<(), PatchError> {
    let from = bundle.join(source);
    let mut input = std::fs::File::open(&from).map_err(|source| PatchError {
        path: from.display().to_string(),
        what: "open the bundle file",
        source,
    })?;
    let mut output = std::fs::File::from(fd);
    let mut buf = Vec::new();
    // Bundle files are bounded by the host (host-runtime's MAX_PATCH_BUNDLE_BYTES); copy in
    // pieces anyway.
    loop {
        buf.clear();
        let n = (&mut input).take(64 * 1024).read_to_end(&mut buf).map_err(|source| {
            PatchError { path: path.to_owned(), what: "read the bundle file", source }
        })?;
        if n == 0 {
            return Ok(());
        }
        std::io::Write::write_all(&mut output, &buf).map_err(|source| PatchError {
            path: path.to_owned(),
            what: "write",
            source,
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(ops: &[PatchOp], files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        ciborium::into_writer(&ops.to_vec(), &mut bytes).unwrap();
        std::fs::write(dir.path().join(MANIFEST), bytes).unwrap();
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn every_op_lands_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/old")).unwrap();
        std::fs::write(root.path().join("etc/old/x"), "x").unwrap();
        std::fs::write(root.path().join("etc/profile"), "a\n").unwrap();
        let ops = vec![
            PatchOp::File {
                path: "/etc/app/conf".into(),
                source: "files/0".into(),
                mode: 0o600,
                replace: false,
            },
            PatchOp::Mkdir { path: "/srv/data".into(), mode: 0o700 },
            PatchOp::Symlink {
                link: "/etc/link".into(),
                target: "/etc/app/conf".into(),
                replace: false,
            },
            PatchOp::Remove { path: "/etc/old".into() },
            PatchOp::Remove { path: "/nope".into() },
            PatchOp::Append { path: "/etc/profile".into(), source: "files/1".into() },
        ];
        let b = bundle(&ops, &[("files/0", b"conf"), ("files/1", b"b\n")]);
        apply(root.path(), b.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let conf = root.path().join("etc/app/conf");
        assert_eq!(std::fs::read(&conf).unwrap(), b"conf");
        assert_eq!(std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(root.path().join("srv/data")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_link(root.path().join("etc/link")).unwrap(),
            Path::new("/etc/app/conf")
        );
        assert!(!root.path().join("etc/old").exists());
        assert_eq!(std::fs::read(root.path().join("etc/profile")).unwrap(), b"a\nb\n");
    }

    #[test]
    fn a_symlink_in_the_root_cannot_lead_a_patch_out() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let ops = vec![PatchOp::File {
            path: "/escape/file".into(),
            source: "files/0".into(),
            mode: 0o644,
            replace: true,
        }];
        let b = bundle(&ops, &[("files/0", b"x")]);
        // The absolute symlink resolves inside the root (RESOLVE_IN_ROOT), where its target
        // does not exist: the patch fails, and nothing is written outside.
        assert!(apply(root.path(), b.path()).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "wrote outside");
    }

    #[test]
    fn an_existing_path_is_kept_unless_replace() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "old").unwrap();
        let keep = vec![PatchOp::File {
            path: "/f".into(),
            source: "files/0".into(),
            mode: 0o644,
            replace: false,
        }];
        let b = bundle(&keep, &[("files/0", b"new")]);
        assert!(apply(root.path(), b.path()).is_err());
        assert_eq!(std::fs::read(root.path().join("f")).unwrap(), b"old");
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["relative", "/", "/a/../b", "/.msb/patches/manifest.cbor"] {
            assert!(components(bad).is_err(), "{bad}");
        }
        assert!(decode_manifest(b"\xff\x00").is_err());
    }
}
