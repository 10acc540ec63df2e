//! The namespace backend's user namespace: the agent's root is root only inside the sandbox.
//!
//! ```text
//!  sandbox process                               unshare --user --pid ... --fork
//!   pipe (read end inherited, write end ours)        │ unshare(2): new user ns (+ the others,
//!   spawn ───────────────────────────────────────►   │ owned by it), fork
//!   wait until /proc/PID/ns/user changes             ▼
//!   write /proc/PID/{uid,gid}_map               moat __ns-init: waits for the byte on the pipe
//!   write one byte ─────────────────────────────►  then mounts, joins the cgroup, execs the agent
//! ```
//!
//! This handshake serves [`IdMapping::Identity`], the fallback on a host without idmapped mounts:
//! every id maps to itself, so files keep their owners, and the agent's capabilities hold only
//! over the sandbox's own namespaces (no modules, host devices, host sysctls or resource limits
//! above the host's). The default, [`IdMapping::Range`], is made by `__ns-prepare` itself
//! ([`crate::backend::namespace::mapped`]) with [`user_namespace`]. It also serves [`IdMapping::Rootless`], an
//! unprivileged user's map ([`crate::backend::namespace::rootless`]), which `newuidmap`/`newgidmap` write (an
//! unprivileged writer may map only its own id); as root moat writes the maps itself.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

use crate::backend::namespace::idmap::IdMapping;
use crate::error::RuntimeError;
use crate::limits::{STARTUP_POLL_INTERVAL_US, USERNS_SWITCH_TIMEOUT_MS};

/// Environment variable naming the inherited read end of the "maps written" pipe.
pub const READY_FD_ENV: &str = "MOAT_USERNS_READY_FD";

/// An identity map over all 2^32 - 1 ids (the largest count a map line allows).
pub const IDENTITY_MAP: &str = "0 0 4294967295\n";

/// The two ends of the "maps written" pipe.
#[derive(Debug)]
pub struct ReadyPipe {
    /// Inherited by the child (close-on-exec cleared); dropped by us after the spawn.
    pub child_end: OwnedFd,
    /// Ours: one byte once the maps are written. Close-on-exec, so the child never holds it.
    pub parent_end: OwnedFd,
}

impl ReadyPipe {
    /// A pipe whose read end survives `exec` and whose write end does not.
    pub fn new() -> Result<ReadyPipe, RuntimeError> {
        let fail = |what: &'static str| {
            move |errno: nix::errno::Errno| {
                RuntimeError::io(what, "pipe")(std::io::Error::from(errno))
            }
        };
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fail("create pipe"))?;
        fcntl(&read, FcntlArg::F_SETFD(FdFlag::empty())).map_err(fail("clear close-on-exec"))?;
        Ok(ReadyPipe { child_end: read, parent_end: write })
    }

    /// The value of [`READY_FD_ENV`] for the child.
    pub fn child_fd(&self) -> String {
        self.child_end.as_raw_fd().to_string()
    }
}

/// Waits until `pid` has left our user namespace, writes `mapping`'s maps, and tells the child.
pub fn map_ids(pid: u32, parent_end: OwnedFd, mapping: &IdMapping) -> Result<(), RuntimeError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let own = std::fs::read_link("/proc/self/ns/user")
        .map_err(RuntimeError::io("read own user namespace", "/proc/self/ns/user"))?;
    let theirs = proc.join("ns/user");
    let deadline = Instant::now() + Duration::from_millis(USERNS_SWITCH_TIMEOUT_MS);
    loop {
        let current = std::fs::read_link(&theirs)
            .map_err(RuntimeError::io("read user namespace", &theirs))?;
        if current != own {
            break;
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Io {
                what: "wait for unshare's new user namespace",
                path: theirs,
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        std::thread::sleep(Duration::from_micros(STARTUP_POLL_INTERVAL_US));
    }
    match mapping {
        IdMapping::Rootless(map) => map.write(pid)?,
        IdMapping::Identity | IdMapping::Range(_) => {
            write_maps(&proc, &mapping.uid_map(), &mapping.gid_map())?;
        }
    }
    let mut pipe = std::fs::File::from(parent_end);
    std::io::Write::write_all(&mut pipe, b"1")
        .map_err(RuntimeError::io("signal the mapped user namespace", "pipe"))
}

fn write_maps(proc: &Path, uid_map: &str, gid_map: &str) -> Result<(), RuntimeError> {
    for (map, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = proc.join(map);
        std::fs::write(&path, text).map_err(RuntimeError::io("write", &path))?;
    }
    Ok(())
}

/// A new user namespace with these maps (text as `/proc/PID/uid_map` takes it), held by the
/// returned descriptor: what `mount_setattr(MOUNT_ATTR_IDMAP)` takes ([`crate::backend::namespace::idmount`]). No
/// process stays in it; a short-lived child makes it and exits.
pub fn user_namespace(uid_map: &str, gid_map: &str) -> Result<OwnedFd, RuntimeError> {
    let holder = crate::backend::namespace::sys::spawn_userns_holder()
        .map_err(RuntimeError::io("create a user namespace", "unshare(CLONE_NEWUSER)"))?;
    let proc = PathBuf::from(format!("/proc/{}", holder.pid()));
    write_maps(&proc, uid_map, gid_map)?;
    let ns = proc.join("ns/user");
    let file = std::fs::File::open(&ns).map_err(RuntimeError::io("open", &ns))?;
    drop(holder);
    Ok(OwnedFd::from(file))
}

/// In `__ns-init`: when [`READY_FD_ENV`] is set, blocks until the sandbox process wrote the
/// maps (one byte); an EOF means it failed or died.
pub fn wait_mapped() -> Result<(), RuntimeError> {
    let Some(fd) = std::env::var(READY_FD_ENV).ok() else { return Ok(()) };
    let fd: i32 = fd.parse().map_err(|_| RuntimeError::Config(format!("{READY_FD_ENV}={fd}")))?;
    match crate::backend::namespace::sys::read_one_byte(fd) {
        Ok(true) => Ok(()),
        Ok(false) => Err(RuntimeError::Config(
            "the sandbox process closed the user namespace pipe before writing the id maps".into(),
        )),
        Err(err) => Err(RuntimeError::io("wait for the user namespace maps", "pipe")(err)),
    }
}
