//! Idmapped bind mounts: a host directory seen through a user namespace's id maps, so a sandbox
//! whose ids map to an unprivileged host range ([`crate::backend::namespace::idmap`]) reads and writes it as its
//! owner expects. The syscalls are in `sys.rs`; this module owns the steps and their errors.
//!
//! ```text
//!  open_tree(SRC, OPEN_TREE_CLONE)  ─► detached copy of the mount at SRC
//!  mount_setattr(MOUNT_ATTR_IDMAP,  ─► disk id d reads as the host id U(d), where U is the
//!      userns_fd = U [, RDONLY])       namespace's map ("d BASE 1": d is BASE, the sandbox root)
//!  move_mount(.., TARGET)           ─► attached on TARGET
//! ```
//!
//! Needs Linux 5.12 or later and a filesystem that allows idmapping (ext4, xfs, btrfs, tmpfs
//! since 6.3, overlayfs since 5.19, ...). Where either is missing, `mount_setattr` fails
//! (`EINVAL` or `ENOSYS`) and [`idmapped_bind`] reports it; `moat doctor` runs [`probe`].
//! [`crate::backend::namespace::mapped`] uses them for a sandbox's root and shares.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::error::RuntimeError;

/// Binds `source` on `target` (an existing directory) with ids seen through `userns`'s maps,
/// read-only when `read_only`. Not recursive: only the filesystem at `source`.
pub fn idmapped_bind(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    read_only: bool,
) -> Result<(), RuntimeError> {
    let tree = crate::backend::namespace::sys::clone_tree(source, false)
        .map_err(RuntimeError::io("open_tree", source))?;
    crate::backend::namespace::sys::set_idmap(tree.as_fd(), userns, read_only)
        .map_err(RuntimeError::io("idmap (mount_setattr MOUNT_ATTR_IDMAP)", source))?;
    crate::backend::namespace::sys::attach_tree(tree.as_fd(), target)
        .map_err(RuntimeError::io("move_mount", target))
}

/// Binds `source` and every mount below it on `target`, all idmapped through `userns`; the
/// mounts keep their own flags (a read-only bind below stays read-only).
pub fn idmapped_rbind(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
) -> Result<(), RuntimeError> {
    let tree = crate::backend::namespace::sys::clone_tree(source, true)
        .map_err(RuntimeError::io("open_tree", source))?;
    crate::backend::namespace::sys::set_idmap(tree.as_fd(), userns, false)
        .map_err(RuntimeError::io("idmap (mount_setattr MOUNT_ATTR_IDMAP)", source))?;
    crate::backend::namespace::sys::attach_tree(tree.as_fd(), target)
        .map_err(RuntimeError::io("move_mount", target))
}

/// Whether this kernel can idmap the filesystem at `source`: makes a throw-away user namespace
/// and an idmapped copy of the mount that is never attached.
pub fn probe(source: &Path) -> Result<(), RuntimeError> {
    let map = crate::backend::namespace::idmap::map_line(
        0,
        crate::backend::namespace::idmap::IdRange {
            base: crate::backend::namespace::idmap::RESERVED_BASE,
            count: crate::backend::namespace::idmap::SANDBOX_ID_COUNT,
        },
    );
    let userns = crate::backend::namespace::userns::user_namespace(&map, &map)?;
    let tree = crate::backend::namespace::sys::clone_tree(source, false)
        .map_err(RuntimeError::io("open_tree", source))?;
    crate::backend::namespace::sys::set_idmap(tree.as_fd(), userns.as_fd(), true)
        .map_err(RuntimeError::io("idmap (mount_setattr MOUNT_ATTR_IDMAP)", source))
}
