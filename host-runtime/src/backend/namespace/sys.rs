//! Raw system calls without a safe wrapper in `nix`: bringing up the loopback device, taking
//! ownership of an inherited descriptor, a forked child that holds a new user namespace, and the
//! new mount API (`open_tree`, `mount_setattr`, `move_mount`) for idmapped mounts.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The loopback device's name, NUL-terminated.
const LOOPBACK: &[u8] = b"lo\0";

/// Sets `IFF_UP` on `lo` in the current network namespace.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(LOOPBACK) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes `ifr_ifru.ifru_flags` of a valid, owned
    // `ifreq` on an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just initialised the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags of a valid, owned `ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one byte from the inherited descriptor `fd`, then closes it. `Ok(false)` on EOF.
pub(crate) fn read_one_byte(fd: i32) -> std::io::Result<bool> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: the descriptor was created by our parent for us alone (`userns::ReadyPipe`) and
    // named in our environment; nothing else in this process owns it, so taking ownership (and
    // closing it when the file drops) cannot affect another owner.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(n) => return Ok(n == 1),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// A child process that made its own user namespace and waits, doing nothing, until this
/// handle drops; meanwhile its namespace's maps can be written and `/proc/PID/ns/user` opened.
#[derive(Debug)]
pub(crate) struct UserNsHolder {
    pid: libc::pid_t,
}

impl UserNsHolder {
    /// The child's pid.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for UserNsHolder {
    /// Kills and reaps the child. Not an EOF on a pipe: a holder forked at the same moment by
    /// another thread inherits this one's descriptors (no exec, so `O_CLOEXEC` cannot close them),
    /// and two holders that each hold the other's pipe end would wait for each other forever.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Forks a child that calls `unshare(CLONE_NEWUSER)` and then waits to be killed. Returns once
/// the new namespace exists; an error if the child could not make it. The child reports with one
/// byte (1: made, 0: failed) rather than by closing its pipe end, which another thread's holder
/// may have inherited.
pub(crate) fn spawn_userns_holder() -> std::io::Result<UserNsHolder> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let fds = [ready_read.as_raw_fd(), ready_write.as_raw_fd()];
    // SAFETY: the child (pid 0) runs only `holder_child`, which makes async-signal-safe calls on
    // descriptors it inherited and never returns, so the fork is sound even if this process has
    // other threads. The parent only checks the result.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child, and `fds` are the two pipe ends, open here.
        unsafe { holder_child(fds) }
    }
    drop(ready_write);
    let holder = UserNsHolder { pid };
    let mut byte = [0u8; 1];
    let mut ready = std::fs::File::from(ready_read);
    loop {
        match ready.read(&mut byte) {
            Ok(1) if byte[0] == 1 => return Ok(holder),
            Ok(_) => {
                return Err(std::io::Error::other(
                    "the child could not create a user namespace (unshare(CLONE_NEWUSER) failed)",
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// The holder child: close the parent's pipe end, make the namespace, say whether it did (one
/// byte), then wait to be killed (the parent's [`UserNsHolder`] drop, or its death).
///
/// # Safety
///
/// Only in the child of `fork`, with `[ready_read, ready_write]` open. Makes only
/// async-signal-safe calls (close, prctl, unshare, write, pause).
unsafe fn holder_child([ready_read, ready_write]: [i32; 2]) -> ! {
    // SAFETY: the caller guarantees we are a forked child owning these descriptors; every call
    // below is async-signal-safe, allocates nothing and takes no locks.
    unsafe {
        libc::close(ready_read);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let made = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
        libc::write(ready_write, std::ptr::from_ref(&made).cast(), 1);
        libc::close(ready_write);
        loop {
            libc::pause();
        }
    }
}

fn c_path(path: &std::path::Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount at `source` (with the mounts
/// below it when `recursive`), not yet attached anywhere.
pub(crate) fn clone_tree(source: &std::path::Path, recursive: bool) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let path = c_path(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads a NUL-terminated path that outlives the call; it returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let fd =
        i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    // SAFETY: open_tree just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mount_setattr(MOUNT_ATTR_IDMAP)` on a detached tree from [`clone_tree`]: ids on disk are
/// seen through `userns`'s maps (plus `MOUNT_ATTR_RDONLY` when `read_only`), for every mount of
/// the tree.
pub(crate) fn set_idmap(
    tree: std::os::fd::BorrowedFd<'_>,
    userns: std::os::fd::BorrowedFd<'_>,
    read_only: bool,
) -> std::io::Result<()> {
    let mut attr: libc::mount_attr =
        // SAFETY: `mount_attr` is plain old data; all-zero is a valid value.
        unsafe { std::mem::zeroed() };
    attr.attr_set = libc::MOUNT_ATTR_IDMAP | if read_only { libc::MOUNT_ATTR_RDONLY } else { 0 };
    attr.userns_fd = u64::try_from(userns.as_raw_fd())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let empty = c"";
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes of a valid, owned struct and
    // an empty NUL-terminated path; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `move_mount`: attaches a detached tree from [`clone_tree`] on `target`.
pub(crate) fn attach_tree(
    tree: std::os::fd::BorrowedFd<'_>,
    target: &std::path::Path,
) -> std::io::Result<()> {
    let target = c_path(target)?;
    let empty = c"";
    // SAFETY: move_mount reads two NUL-terminated paths that outlive the call and uses the
    // descriptor only for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
