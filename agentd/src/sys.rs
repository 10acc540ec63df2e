//! Thin, named wrappers over the system calls the boot and shutdown paths make (mount, pivot,
//! hostname, rlimits, clock, power). Each returns a [`SysError`] naming the call and its
//! argument, so a failed boot step reports exactly what failed.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// A failed system call, with what it was doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}({target}): {errno}")]
pub struct SysError {
    /// The call, e.g. `mount`.
    pub call: &'static str,
    /// What it was applied to.
    pub target: String,
    /// The error.
    pub errno: Errno,
}

fn sys<T>(
    call: &'static str,
    target: impl AsRef<Path>,
    result: nix::Result<T>,
) -> Result<T, SysError> {
    result.map_err(|errno| SysError { call, target: target.as_ref().display().to_string(), errno })
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SysError> {
    sys("mount", target, nix::mount::mount(Some(source), target, fstype, flags, data))
}

/// A bind mount of `source` on `target` (recursive), then a remount with `flags` if any are set.
pub fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), SysError> {
    let none: Option<&str> = None;
    sys(
        "mount --rbind",
        target,
        nix::mount::mount(Some(source), target, none, MsFlags::MS_BIND | MsFlags::MS_REC, none),
    )?;
    if !flags.is_empty() {
        sys(
            "mount -o remount,bind",
            target,
            nix::mount::mount(
                none,
                target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                none,
            ),
        )?;
    }
    Ok(())
}

/// Makes every mount under `/` private, so nothing this namespace mounts propagates out.
pub fn make_mounts_private() -> Result<(), SysError> {
    let none: Option<&str> = None;
    sys(
        "mount --make-rprivate",
        "/",
        nix::mount::mount(none, "/", none, MsFlags::MS_PRIVATE | MsFlags::MS_REC, none),
    )
}

/// `umount2(target, MNT_DETACH)`.
pub fn umount_lazy(target: &Path) -> Result<(), SysError> {
    sys("umount", target, nix::mount::umount2(target, MntFlags::MNT_DETACH))
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<(), SysError> {
    sys("pivot_root", new_root, nix::unistd::pivot_root(new_root, put_old))
}

/// `chdir(path)`.
pub fn chdir(path: &Path) -> Result<(), SysError> {
    sys("chdir", path, nix::unistd::chdir(path))
}

/// `mkdir -p path`.
pub fn mkdir_all(path: &Path) -> Result<(), SysError> {
    std::fs::create_dir_all(path).map_err(|e| SysError {
        call: "mkdir",
        target: path.display().to_string(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// Brings the loopback interface up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP`): a VM's
/// kernel leaves `lo` down, and its agent is the guest's init, so nobody else would. Without it
/// `127.0.0.1` is unreachable in the guest (`ENETUNREACH`), and so is every tunnel to a guest
/// port (`core.tcp.connect`, `moat port-forward`).
pub fn loopback_up() -> Result<(), SysError> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    let failed = |call| SysError { call, target: "lo".into(), errno: Errno::last() };
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|errno| SysError { call: "socket(AF_INET)", target: "lo".into(), errno })?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes `ifr_ifru.ifru_flags` of a valid, owned
    // `ifreq` on an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } == -1 {
        return Err(failed("ioctl(SIOCGIFFLAGS)"));
    }
    // SAFETY: SIOCGIFFLAGS just initialised the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags of a valid, owned `ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } == -1 {
        return Err(failed("ioctl(SIOCSIFFLAGS, IFF_UP)"));
    }
    Ok(())
}

/// `sethostname(name)`.
pub fn sethostname(name: &str) -> Result<(), SysError> {
    sys("sethostname", name, nix::unistd::sethostname(name))
}

/// `setrlimit(resource, soft, hard)` on this process (inherited by every child).
pub fn setrlimit(
    name: &str,
    resource: nix::sys::resource::Resource,
    soft: u64,
    hard: u64,
) -> Result<(), SysError> {
    sys("setrlimit", name, nix::sys::resource::setrlimit(resource, soft, hard))
}

/// Steps CLOCK_REALTIME.
pub fn set_realtime_clock(unix_nanos: u64) -> Result<(), SysError> {
    let ts = nix::sys::time::TimeSpec::new(
        (unix_nanos / 1_000_000_000) as i64,
        (unix_nanos % 1_000_000_000) as i64,
    );
    sys(
        "clock_settime",
        "CLOCK_REALTIME",
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts),
    )
}

/// Nanoseconds of CLOCK_BOOTTIME.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Sends `signal` to every process this one may signal except itself (`kill(-1, sig)`).
pub fn kill_all(signal: nix::sys::signal::Signal) {
    // ESRCH (nothing left to signal) is the expected end state, not an error.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal);
}

/// Flushes every filesystem.
pub fn sync() {
    nix::unistd::sync();
}

/// Restarts the machine: in a libkrun VM this is the path libkrun's own init takes, and the
/// emulated reset ends the VMM. Returns only on failure.
pub fn reboot_restart() -> SysError {
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
        Err(errno) => SysError { call: "reboot", target: "RB_AUTOBOOT".into(), errno },
        Ok(never) => match never {},
    }
}

/// The mount points listed in `/proc/self/mounts`, in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// Takes ownership of a file descriptor this process inherited (the agent channel in the
/// namespace backend), after checking it is open, and marks it close-on-exec so no exec'd
/// program inherits it.
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd, SysError> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::{BorrowedFd, FromRawFd};
    let target = format!("fd {fd}");
    if fd < 0 {
        return Err(SysError { call: "fcntl", target, errno: Errno::EBADF });
    }
    // SAFETY: `fd` is non-negative; the borrow lives only for the fcntl calls below, which fail
    // cleanly with EBADF if the descriptor is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    sys("fcntl(F_GETFD)", &target, fcntl(borrowed, FcntlArg::F_GETFD))?;
    sys("fcntl(F_SETFD)", &target, fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)))?;
    // SAFETY: the descriptor is open (checked above) and was handed to this process by its
    // parent for this purpose alone; nothing else in agentd refers to this number, so taking
    // ownership here cannot lead to a double close.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Installs seccomp filters on every thread of this process (`SECCOMP_FILTER_FLAG_TSYNC`), in
/// order. Without `CAP_SYS_ADMIN` in its user namespace (agentd run unprivileged for development)
/// the kernel requires `no_new_privs` first, which is then set; as a sandbox's PID 1 it is not.
pub fn install_seccomp(programs: &[seccompiler::BpfProgram]) -> Result<(), SysError> {
    for program in programs {
        let result = seccomp_all_threads(program);
        let result = match result {
            Err(Errno::EACCES) => {
                tracing::warn!("no CAP_SYS_ADMIN: setting no_new_privs to install seccomp");
                sys("prctl(PR_SET_NO_NEW_PRIVS)", "self", set_no_new_privs())?;
                seccomp_all_threads(program)
            }
            other => other,
        };
        sys("seccomp(SECCOMP_SET_MODE_FILTER)", "all threads", result)?;
    }
    Ok(())
}

fn seccomp_all_threads(program: &seccompiler::BpfProgram) -> nix::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut().cast() };
    // SAFETY: `fprog` points at `program`, a live slice of `len` BPF instructions whose layout
    // (`seccompiler::sock_filter`) is the kernel's `struct sock_filter`; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    match ret {
        0 => Ok(()),
        // A positive value is the id of a thread that could not be synchronised.
        r if r > 0 => Err(Errno::ESRCH),
        _ => Err(Errno::last()),
    }
}

fn set_no_new_privs() -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes only integers.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(ret).map(drop)
}
