//! One block of the id pool ([`crate::backend::namespace::idmap::IdPool`]) per running namespace sandbox, so no two
//! sandboxes share host ids (and so per-user kernel limits, signals or a file one could leave
//! behind after an escape).
//!
//! ```text
//!  /run/moat-ids/<host uid base of block k>    an empty file per block, host-wide
//!  sandbox process: for k in 0..blocks: flock(LOCK_EX | LOCK_NB) ─► the first free block is its
//!                   until it exits (the kernel drops the lock with the last descriptor, even
//!                   after SIGKILL, so a crashed sandbox never leaks a block)
//! ```
//!
//! The lock is host-wide, not per `MOAT_HOME`, since the ids are.

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::backend::namespace::idmap::{IdPool, SandboxIds};
use crate::error::RuntimeError;

/// Where the lock files live (a tmpfs on most hosts: leases do not outlive a reboot).
pub const LEASE_DIR: &str = "/run/moat-ids";

/// A block held for as long as this value lives.
#[derive(Debug)]
pub struct IdLease {
    ids: SandboxIds,
    _lock: Flock<std::fs::File>,
}

impl IdLease {
    /// The leased ids.
    pub fn ids(&self) -> SandboxIds {
        self.ids
    }
}

/// Leases the first free block of `pool`, or fails when every block is held.
pub fn lease(pool: &IdPool) -> Result<IdLease, RuntimeError> {
    lease_in(Path::new(LEASE_DIR), pool)
}

/// [`lease`] with its lock files in `dir`.
pub fn lease_in(dir: &Path, pool: &IdPool) -> Result<IdLease, RuntimeError> {
    std::fs::create_dir_all(dir).map_err(RuntimeError::io("create id lease directory", dir))?;
    for index in 0..pool.blocks() {
        let ids = pool.block(index);
        let path = dir.join(ids.uids.base.to_string());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RuntimeError::io("open id lease", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(IdLease { ids, _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => {
                return Err(RuntimeError::io("lock id lease", &path)(std::io::Error::from(errno)));
            }
        }
    }
    Err(RuntimeError::Config(format!(
        "every one of the {} id blocks is in use by a running sandbox (see {})",
        pool.blocks(),
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-idlease-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn each_lease_gets_its_own_block_until_the_pool_is_used_up() {
        let dir = scratch("used-up");
        let pool = crate::backend::namespace::idmap::choose(
            "moat:200000:131072\n",
            "moat:300000:131072\n",
        )
        .unwrap();
        let first = lease_in(&dir, &pool).unwrap();
        let second = lease_in(&dir, &pool).unwrap();
        assert_eq!(first.ids(), pool.block(0));
        assert_eq!(second.ids(), pool.block(1));
        assert!(lease_in(&dir, &pool).is_err(), "a third lease of two blocks");
        drop(first);
        assert_eq!(lease_in(&dir, &pool).unwrap().ids(), pool.block(0), "freed on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
