//! Root patches: changes to the sandbox's root made before it boots (microsandbox's patch
//! shapes: text, file, copy file, copy dir, symlink, mkdir, remove, append). The host turns them
//! into a bundle in the sandbox directory; agentd applies it to the assembled root before any
//! user mount and before the pivot (`agentd/src/patches.rs`), on both backends.
//!
//! ```text
//!  SandboxConfig.patches ─► write_bundle: DIR/patches/manifest.cbor + files/N (host files copied
//!    now, as the user creating the sandbox) ─► shared read-only like -v, guest path
//!    /.msb/patches ─► agentd: each op with paths resolved inside the new root (RESOLVE_IN_ROOT),
//!    then the share is unmounted: the sandbox never sees it
//! ```
//!
//! The root the agent writes into is the overlay whose upper is agentd's tmpfs (`--rootfs`,
//! `--image`, a VM's root), or the host root the namespace backend assembled on a tmpfs; so a
//! patch never writes to the lower: the user's `--rootfs` directory, an image layer, or the
//! host's system directories (on the default host root, `/usr`, `/bin`, `/sbin` and `/lib*` are
//! read-only binds, and a patch there fails the boot with `EROFS`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::config::BadValue;
use crate::error::RuntimeError;
use crate::limits::{MAX_PATCH_BUNDLE_BYTES, MAX_PATCH_BUNDLE_ENTRIES};

/// Where the bundle is shared (agentd's `patches::PATCHES_GUEST_DIR`).
pub const PATCHES_GUEST_DIR: &str = "/.msb/patches";

/// One change to the root (microsandbox's `Patch`). Guest paths are absolute, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Patch {
    /// A text file.
    Text {
        /// Guest path.
        path: String,
        /// Its content.
        content: String,
        /// Permission bits (`None`: 0644).
        mode: Option<u32>,
        /// Replace a file already there (else that is a boot error).
        replace: bool,
    },
    /// A file of bytes.
    File {
        /// Guest path.
        path: String,
        /// Its content.
        content: Vec<u8>,
        /// Permission bits (`None`: 0644).
        mode: Option<u32>,
        /// Replace a file already there.
        replace: bool,
    },
    /// A host file copied in.
    CopyFile {
        /// Host path.
        src: PathBuf,
        /// Guest path.
        dst: String,
        /// Permission bits (`None`: the source's).
        mode: Option<u32>,
        /// Replace a file already there.
        replace: bool,
    },
    /// A host directory copied in (files, directories and symlinks; other kinds are refused).
    CopyDir {
        /// Host path.
        src: PathBuf,
        /// Guest path.
        dst: String,
        /// Replace files already there.
        replace: bool,
    },
    /// A symlink.
    Symlink {
        /// What it points to.
        target: String,
        /// Guest path of the link.
        link: String,
        /// Replace what is there.
        replace: bool,
    },
    /// A directory (and its missing parents).
    Mkdir {
        /// Guest path.
        path: String,
        /// Permission bits (`None`: 0755).
        mode: Option<u32>,
    },
    /// Removes a file, symlink or directory tree (absent is fine).
    Remove {
        /// Guest path.
        path: String,
    },
    /// Appends text to a file (made when absent).
    Append {
        /// Guest path.
        path: String,
        /// What to append.
        content: String,
    },
}

/// A step of the bundle's manifest: the shape agentd's `patches::PatchOp` decodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum BundleOp {
    Mkdir { path: String, mode: u32 },
    File { path: String, source: String, mode: u32, replace: bool },
    Symlink { link: String, target: String, replace: bool },
    Remove { path: String },
    Append { path: String, source: String },
}

const EXPECTED: &str = "expected text:PATH=CONTENT, append:PATH=CONTENT, copy-file:HOST=PATH, \
    copy-dir:HOST=PATH, symlink:PATH=TARGET, mkdir:PATH[:MODE], rm:PATH";

/// `--patch KIND:ARGS`: `text:PATH=CONTENT`, `append:PATH=CONTENT`, `copy-file:HOST=PATH`,
/// `copy-dir:HOST=PATH`, `symlink:PATH=TARGET`, `mkdir:PATH[:MODE]` (octal), `rm:PATH`. What
/// they write replaces what the root has (a patch from the library can say otherwise).
pub fn parse_patch(value: &str) -> Result<Patch, BadValue> {
    let bad = |expected| BadValue { option: "--patch", value: value.to_owned(), expected };
    let (kind, rest) = value.split_once(':').ok_or_else(|| bad(EXPECTED))?;
    let pair = || rest.split_once('=').ok_or_else(|| bad(EXPECTED));
    let guest = |path: &str| {
        if guest_path_ok(path) {
            Ok(path.to_owned())
        } else {
            Err(bad("an absolute guest PATH without .."))
        }
    };
    let patch = match kind {
        "text" => {
            let (path, content) = pair()?;
            Patch::Text {
                path: guest(path)?,
                content: content.to_owned(),
                mode: None,
                replace: true,
            }
        }
        "append" => {
            let (path, content) = pair()?;
            Patch::Append { path: guest(path)?, content: content.to_owned() }
        }
        "copy-file" => {
            let (src, dst) = pair()?;
            Patch::CopyFile { src: src.into(), dst: guest(dst)?, mode: None, replace: true }
        }
        "copy-dir" => {
            let (src, dst) = pair()?;
            Patch::CopyDir { src: src.into(), dst: guest(dst)?, replace: true }
        }
        "symlink" => {
            let (link, target) = pair()?;
            if target.is_empty() {
                return Err(bad("symlink:PATH=TARGET with a TARGET"));
            }
            Patch::Symlink { target: target.to_owned(), link: guest(link)?, replace: true }
        }
        "mkdir" => match rest.rsplit_once(':') {
            Some((path, mode)) => {
                let mode = u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad("mkdir:PATH[:MODE] with an octal MODE"))?;
                Patch::Mkdir { path: guest(path)?, mode: Some(mode) }
            }
            None => Patch::Mkdir { path: guest(rest)?, mode: None },
        },
        "rm" => Patch::Remove { path: guest(rest)? },
        _ => return Err(bad(EXPECTED)),
    };
    Ok(patch)
}

fn guest_path_ok(path: &str) -> bool {
    let p = Path::new(path);
    path.starts_with('/')
        && path != "/"
        && !path.contains('\0')
        && !p.components().any(|c| c == Component::ParentDir)
        && !p.starts_with(PATCHES_GUEST_DIR)
}

/// Checks every patch's guest paths (the CLI's parser already did; a library caller may not).
pub fn validate(patches: &[Patch]) -> Result<(), RuntimeError> {
    for patch in patches {
        let paths: Vec<&str> = match patch {
            Patch::Text { path, .. }
            | Patch::File { path, .. }
            | Patch::Mkdir { path, .. }
            | Patch::Remove { path }
            | Patch::Append { path, .. } => vec![path],
            Patch::CopyFile { dst, .. } | Patch::CopyDir { dst, .. } => vec![dst],
            Patch::Symlink { link, .. } => vec![link],
        };
        if let Some(bad) = paths.into_iter().find(|p| !guest_path_ok(p)) {
            return Err(RuntimeError::Config(format!(
                "patch path {bad:?} must be absolute, without .., and not under {PATCHES_GUEST_DIR}"
            )));
        }
    }
    Ok(())
}

/// Checks every patch and makes copy sources absolute, in the process that parsed them (the
/// sandbox process runs elsewhere). Run by [`crate::config::SandboxConfig::resolve`].
pub fn resolve(patches: &mut [Patch]) -> Result<(), RuntimeError> {
    validate(patches)?;
    for patch in patches {
        if let Patch::CopyFile { src, .. } | Patch::CopyDir { src, .. } = patch {
            *src = src.canonicalize().map_err(RuntimeError::io("open a patch source", &*src))?;
        }
    }
    Ok(())
}

/// Writes the bundle for `patches` into `dir` (created, mode 0700): the manifest and the files
/// it names, host files copied now. Nothing when there are no patches. Bounded by
/// [`MAX_PATCH_BUNDLE_BYTES`] and [`MAX_PATCH_BUNDLE_ENTRIES`].
pub fn write_bundle(patches: &[Patch], dir: &Path) -> Result<(), RuntimeError> {
    if patches.is_empty() {
        return Ok(());
    }
    validate(patches)?;
    let files = dir.join("files");
    std::fs::create_dir_all(&files).map_err(RuntimeError::io("create the patch bundle", &files))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(RuntimeError::io("chmod the patch bundle", dir))?;
    let mut bundle = Bundle { files, ops: Vec::new(), bytes: 0 };
    for patch in patches {
        bundle.add(patch)?;
    }
    let mut manifest = Vec::new();
    ciborium::into_writer(&bundle.ops, &mut manifest)
        .map_err(|err| RuntimeError::Config(format!("encode the patch manifest: {err}")))?;
    let path = dir.join("manifest.cbor");
    std::fs::write(&path, manifest).map_err(RuntimeError::io("write the patch manifest", &path))
}

struct Bundle {
    files: PathBuf,
    ops: Vec<BundleOp>,
    bytes: u64,
}

impl Bundle {
    fn add(&mut self, patch: &Patch) -> Result<(), RuntimeError> {
        match patch {
            Patch::Text { path, content, mode, replace } => {
                let source = self.store(content.as_bytes())?;
                self.push(BundleOp::File {
                    path: path.clone(),
                    source,
                    mode: mode.unwrap_or(0o644),
                    replace: *replace,
                })
            }
            Patch::File { path, content, mode, replace } => {
                let source = self.store(content)?;
                self.push(BundleOp::File {
                    path: path.clone(),
                    source,
                    mode: mode.unwrap_or(0o644),
                    replace: *replace,
                })
            }
            Patch::CopyFile { src, dst, mode, replace } => {
                let meta = std::fs::metadata(src)
                    .map_err(RuntimeError::io("read a copy-file patch", src))?;
                if !meta.is_file() {
                    return Err(RuntimeError::Config(format!(
                        "copy-file patch {}: not a regular file",
                        src.display()
                    )));
                }
                let source = self.copy(src, meta.len())?;
                let mode = mode.unwrap_or(meta.mode() & 0o7777);
                self.push(BundleOp::File { path: dst.clone(), source, mode, replace: *replace })
            }
            Patch::CopyDir { src, dst, replace } => self.copy_dir(src, dst, *replace, 0),
            Patch::Symlink { target, link, replace } => self.push(BundleOp::Symlink {
                link: link.clone(),
                target: target.clone(),
                replace: *replace,
            }),
            Patch::Mkdir { path, mode } => {
                self.push(BundleOp::Mkdir { path: path.clone(), mode: mode.unwrap_or(0o755) })
            }
            Patch::Remove { path } => self.push(BundleOp::Remove { path: path.clone() }),
            Patch::Append { path, content } => {
                let source = self.store(content.as_bytes())?;
                self.push(BundleOp::Append { path: path.clone(), source })
            }
        }
    }

    fn push(&mut self, op: BundleOp) -> Result<(), RuntimeError> {
        if self.ops.len() >= MAX_PATCH_BUNDLE_ENTRIES {
            return Err(RuntimeError::Config(format!(
                "patches make more than {MAX_PATCH_BUNDLE_ENTRIES} entries"
            )));
        }
        self.ops.push(op);
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<String, RuntimeError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_PATCH_BUNDLE_BYTES {
            return Err(RuntimeError::Config(format!(
                "patches hold more than {MAX_PATCH_BUNDLE_BYTES} bytes"
            )));
        }
        Ok(format!("files/{}", self.ops.len()))
    }

    fn store(&mut self, content: &[u8]) -> Result<String, RuntimeError> {
        let source = self.charge(content.len() as u64)?;
        let path = self.files.join(source.trim_start_matches("files/"));
        std::fs::write(&path, content).map_err(RuntimeError::io("write a patch file", &path))?;
        Ok(source)
    }

    fn copy(&mut self, src: &Path, len: u64) -> Result<String, RuntimeError> {
        let source = self.charge(len)?;
        let path = self.files.join(source.trim_start_matches("files/"));
        let mut input =
            std::fs::File::open(src).map_err(RuntimeError::io("open a patch source", src))?;
        let mut output =
            std::fs::File::create(&path).map_err(RuntimeError::io("write a patch file", &path))?;
        // At most what was charged, even if the file grows meanwhile.
        std::io::copy(&mut std::io::Read::take(&mut input, len), &mut output)
            .map_err(RuntimeError::io("copy a patch source", src))?;
        Ok(source)
    }

    fn copy_dir(
        &mut self,
        src: &Path,
        dst: &str,
        replace: bool,
        depth: usize,
    ) -> Result<(), RuntimeError> {
        if depth > 64 {
            return Err(RuntimeError::Config(format!(
                "copy-dir patch {}: nested too deep",
                src.display()
            )));
        }
        let meta = std::fs::symlink_metadata(src)
            .map_err(RuntimeError::io("read a copy-dir patch", src))?;
        if !meta.is_dir() {
            return Err(RuntimeError::Config(format!(
                "copy-dir patch {}: not a directory",
                src.display()
            )));
        }
        self.push(BundleOp::Mkdir { path: dst.to_owned(), mode: meta.mode() & 0o7777 })?;
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(RuntimeError::io("list a copy-dir patch", src))?
            .collect::<Result<_, _>>()
            .map_err(RuntimeError::io("list a copy-dir patch", src))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(RuntimeError::Config(format!(
                    "copy-dir patch {}: a name is not UTF-8",
                    src.display()
                )));
            };
            let (from, to) = (entry.path(), format!("{}/{name}", dst.trim_end_matches('/')));
            let meta = std::fs::symlink_metadata(&from).map_err(RuntimeError::io("read", &from))?;
            if meta.is_dir() {
                self.copy_dir(&from, &to, replace, depth + 1)?;
            } else if meta.is_file() {
                let source = self.copy(&from, meta.len())?;
                self.push(BundleOp::File {
                    path: to,
                    source,
                    mode: meta.mode() & 0o7777,
                    replace,
                })?;
            } else if meta.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&from).map_err(RuntimeError::io("read link", &from))?;
                let target = target.to_str().ok_or_else(|| {
                    RuntimeError::Config(format!(
                        "copy-dir patch {}: a link is not UTF-8",
                        from.display()
                    ))
                })?;
                self.push(BundleOp::Symlink { link: to, target: target.to_owned(), replace })?;
            } else {
                return Err(RuntimeError::Config(format!(
                    "copy-dir patch {}: not a file, directory or symlink",
                    from.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cli_form_parses() {
        assert_eq!(
            parse_patch("text:/etc/a=b=c").unwrap(),
            Patch::Text { path: "/etc/a".into(), content: "b=c".into(), mode: None, replace: true }
        );
        assert_eq!(
            parse_patch("append:/etc/p=x").unwrap(),
            Patch::Append { path: "/etc/p".into(), content: "x".into() }
        );
        assert_eq!(
            parse_patch("copy-file:./f=/f").unwrap(),
            Patch::CopyFile { src: "./f".into(), dst: "/f".into(), mode: None, replace: true }
        );
        assert_eq!(
            parse_patch("copy-dir:/d=/d").unwrap(),
            Patch::CopyDir { src: "/d".into(), dst: "/d".into(), replace: true }
        );
        assert_eq!(
            parse_patch("symlink:/l=/t").unwrap(),
            Patch::Symlink { target: "/t".into(), link: "/l".into(), replace: true }
        );
        assert_eq!(
            parse_patch("mkdir:/d:700").unwrap(),
            Patch::Mkdir { path: "/d".into(), mode: Some(0o700) }
        );
        assert_eq!(
            parse_patch("mkdir:/d").unwrap(),
            Patch::Mkdir { path: "/d".into(), mode: None }
        );
        assert_eq!(parse_patch("rm:/x").unwrap(), Patch::Remove { path: "/x".into() });
    }

    #[test]
    fn bad_forms_and_paths_are_refused() {
        for bad in [
            "text",
            "frob:/a",
            "text:/a",
            "text:rel=x",
            "rm:/",
            "rm:/a/../b",
            "mkdir:/d:9",
            "symlink:/l=",
            "rm:/.msb/patches/x",
        ] {
            assert!(parse_patch(bad).is_err(), "{bad}");
        }
        assert!(validate(&[Patch::Remove { path: "etc".into() }]).is_err());
    }

    #[test]
    fn the_bundle_holds_a_manifest_and_each_file() {
        let host = tempfile::tempdir().unwrap();
        let tree = host.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/f"), "in tree").unwrap();
        std::os::unix::fs::symlink("sub/f", tree.join("link")).unwrap();
        let bundle = host.path().join("bundle");
        let patches = vec![
            Patch::Text { path: "/a".into(), content: "text".into(), mode: None, replace: false },
            Patch::CopyDir { src: tree, dst: "/opt/tree".into(), replace: true },
        ];
        write_bundle(&patches, &bundle).unwrap();
        let ops: Vec<BundleOp> =
            ciborium::from_reader(&std::fs::read(bundle.join("manifest.cbor")).unwrap()[..])
                .unwrap();
        assert_eq!(
            ops[0],
            BundleOp::File {
                path: "/a".into(),
                source: "files/0".into(),
                mode: 0o644,
                replace: false
            }
        );
        assert!(matches!(&ops[1], BundleOp::Mkdir { path, .. } if path == "/opt/tree"));
        assert_eq!(
            ops[2],
            BundleOp::Symlink {
                link: "/opt/tree/link".into(),
                target: "sub/f".into(),
                replace: true
            }
        );
        assert!(matches!(&ops[3], BundleOp::Mkdir { path, .. } if path == "/opt/tree/sub"));
        let BundleOp::File { source, .. } = &ops[4] else { panic!("{:?}", ops[4]) };
        assert_eq!(std::fs::read(bundle.join(source)).unwrap(), b"in tree");
        assert_eq!(std::fs::read(bundle.join("files/0")).unwrap(), b"text");
    }

    #[test]
    fn no_patches_make_no_bundle() {
        let host = tempfile::tempdir().unwrap();
        write_bundle(&[], &host.path().join("b")).unwrap();
        assert!(!host.path().join("b").exists());
    }

    #[test]
    fn a_missing_copy_source_is_an_error() {
        let host = tempfile::tempdir().unwrap();
        let patches = [Patch::CopyFile {
            src: "/nonexistent/x".into(),
            dst: "/x".into(),
            mode: None,
            replace: true,
        }];
        assert!(write_bundle(&patches, &host.path().join("b")).is_err());
    }
}
