//! Creating files as a sandbox user: `Symlink`, `Mkdir` and `OpenFile` with a `user`.
//!
//! The creation runs on a blocking worker thread that temporarily takes the user's filesystem
//! identity with `setfsuid`/`setfsgid`, as the reference agent does. Those two calls change only
//! the calling thread's credentials (neither glibc nor musl broadcasts them to other threads, as
//! they do for `setuid`), so the rest of the agent keeps running as root. The kernel therefore
//! checks permissions as that user (a non-zero fsuid drops the fs-related capabilities) and new
//! inodes are owned by the user's uid and gid. The previous identity is restored when the guard
//! drops, before the worker thread returns to the pool, including on unwinding.
//!
//! Supplementary groups are not switched: `setgroups` is process-wide through libc. Access that
//! depends only on a supplementary group of the user is therefore decided with the agent's
//! groups. This module does not resolve names; `crate::users` does.

use std::marker::PhantomData;

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};

use crate::users::{Identity, UserDb, UserError};

use super::root::Root;

/// The thread could not take a filesystem identity (the agent lacks `CAP_SETUID`/`CAP_SETGID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdentityError {
    /// `setfsuid` did not take effect.
    #[error("cannot switch the filesystem uid to {0}")]
    Uid(u32),
    /// `setfsgid` did not take effect.
    #[error("cannot switch the filesystem gid to {0}")]
    Gid(u32),
}

/// Resolves an optional `user` spec against the sandbox's `/etc/passwd` and `/etc/group`.
/// `None` (and an empty spec) keeps the agent's own identity.
pub(crate) fn resolve(root: &Root, user: Option<&str>) -> Result<Option<Identity>, UserError> {
    match user.map(str::trim) {
        None | Some("") => Ok(None),
        Some(spec) => UserDb::load(root.base()).resolve(spec).map(Some),
    }
}

/// The calling thread's filesystem identity, switched until this guard drops. Not `Send`: it
/// must be dropped on the thread that took the identity.
#[derive(Debug)]
pub(crate) struct FsIdentityGuard {
    previous_uid: Uid,
    previous_gid: Gid,
    _thread_bound: PhantomData<*const ()>,
}

impl FsIdentityGuard {
    /// Switches the calling thread's fsgid, then fsuid.
    pub(crate) fn assume(uid: u32, gid: u32) -> Result<FsIdentityGuard, IdentityError> {
        // Both calls return the previous value whether or not they succeed; success shows as the
        // new value being returned by a second call.
        let previous_gid = setfsgid(Gid::from_raw(gid));
        if setfsgid(Gid::from_raw(gid)) != Gid::from_raw(gid) {
            setfsgid(previous_gid);
            return Err(IdentityError::Gid(gid));
        }
        let previous_uid = setfsuid(Uid::from_raw(uid));
        if setfsuid(Uid::from_raw(uid)) != Uid::from_raw(uid) {
            setfsuid(previous_uid);
            setfsgid(previous_gid);
            return Err(IdentityError::Uid(uid));
        }
        Ok(FsIdentityGuard { previous_uid, previous_gid, _thread_bound: PhantomData })
    }
}

impl Drop for FsIdentityGuard {
    fn drop(&mut self) {
        // fsuid first: with a non-zero fsuid the thread may lack the capability to restore gid.
        setfsuid(self.previous_uid);
        setfsgid(self.previous_gid);
    }
}

/// Runs `f` with `identity`'s filesystem identity on this thread (or as is for `None`).
pub(crate) fn run_as<R>(
    identity: Option<&Identity>,
    f: impl FnOnce() -> R,
) -> Result<R, IdentityError> {
    let _guard = identity.map(|id| FsIdentityGuard::assume(id.uid, id.gid)).transpose()?;
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::TempRoot;

    fn current_fs_ids() -> (u32, u32) {
        // Reading the fs ids without changing them: set to an invalid id (-1 is never valid)
        // and read the returned previous value.
        let uid = setfsuid(Uid::from_raw(u32::MAX));
        let gid = setfsgid(Gid::from_raw(u32::MAX));
        (uid.as_raw(), gid.as_raw())
    }

    #[test]
    fn missing_user_keeps_the_agent_identity() {
        let tmp = TempRoot::new();
        let root = Root::new(tmp.path().to_path_buf());
        assert_eq!(resolve(&root, None), Ok(None));
        assert_eq!(resolve(&root, Some("")), Ok(None));
    }

    #[test]
    fn user_resolves_from_the_sandbox_passwd() {
        let tmp = TempRoot::new();
        tmp.write_passwd("alice:x:1000:1001::/home/alice:/bin/sh\n", "");
        let root = Root::new(tmp.path().to_path_buf());
        let id = resolve(&root, Some("alice")).unwrap().unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1001));
        assert_eq!(resolve(&root, Some("mallory")), Err(UserError::UserNotFound("mallory".into())));
    }

    #[test]
    fn own_identity_can_always_be_assumed_and_is_restored() {
        let before = current_fs_ids();
        let guard = FsIdentityGuard::assume(before.0, before.1).unwrap();
        drop(guard);
        assert_eq!(current_fs_ids(), before);
    }

    #[test]
    #[ignore = "needs root (CAP_SETUID/CAP_SETGID for setfsuid/setfsgid)"]
    fn other_identity_applies_to_this_thread_and_is_restored_needs_root() {
        let before = current_fs_ids();
        let inside = run_as(
            Some(&Identity { uid: 4242, gid: 4343, groups: vec![], home: None, name: None }),
            current_fs_ids,
        )
        .unwrap();
        assert_eq!(inside, (4242, 4343));
        assert_eq!(current_fs_ids(), before);
    }
}
