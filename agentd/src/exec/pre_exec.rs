//! Starting the child (a `vfork`-style clone) and everything it does before `execve`. This is the
//! one place in exec that runs between the clone and exec, so it follows the post-fork rule
//! strictly, and more: the child shares agentd's memory, so it only makes plain system calls on
//! data prepared by the parent ([`ChildSpec`] borrows it), and never allocates, locks, or touches
//! state of the parent's libc (`clone_and_exec` lists the rules).
//!
//! The child reports a failed step to the parent through a `CLOEXEC` pipe, then `_exit(127)`s. A
//! successful `execve` closes the pipe, so the parent reads either end-of-file (the program runs)
//! or one report:
//!
//! ```text
//!  0        4        8        12
//!  +--------+--------+--------+
//!  | step   | detail | errno  |   three native-endian 32-bit words
//!  +--------+--------+--------+
//!  step: ChildStep as u32; detail: index into ChildSpec::rlimits for SetRlimit, else 0
//! ```

use std::ffi::{CStr, CString, c_char};
use std::io;
use std::os::fd::RawFd;

use nix::errno::Errno;

use super::failure::Stage;
use super::plan::Rlimit;

/// Size of a child's failure report.
pub(crate) const CHILD_REPORT_BYTES: usize = 12;

/// Exit status of a child that failed before `execve` (the shell's "cannot execute").
const CHILD_FAILED_STATUS: i32 = 127;

/// Highest signal number on Linux (`SIGRTMAX`).
pub(crate) const MAX_SIGNAL: i32 = 64;

/// The resource type `setrlimit` takes on this libc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type RawResource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type RawResource = libc::c_int;

/// The steps the child can fail at, in the order it runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum ChildStep {
    Setsid = 1,
    ControllingTty = 2,
    Stdio = 3,
    Chdir = 4,
    Setrlimit = 5,
    Setgroups = 6,
    Setgid = 7,
    Setuid = 8,
    Exec = 9,
    Seccomp = 10,
    DropCapabilities = 11,
}

/// What the child needs, all prepared before the clone. The pointer arrays are null-terminated
/// and point into `CString`s that outlive the clone.
#[derive(Debug)]
pub(crate) struct ChildSpec<'a> {
    /// The descriptors to install as fds 0, 1 and 2. All must be 3 or above.
    pub(crate) stdio: [RawFd; 3],
    /// Whether `stdio[0]` is a PTY slave to make the controlling terminal.
    pub(crate) controlling_tty: bool,
    /// Working directory.
    pub(crate) cwd: &'a CStr,
    /// Limits to set while still privileged.
    pub(crate) rlimits: &'a [Rlimit],
    /// Seccomp filters to install (pointing into programs the parent keeps alive).
    pub(crate) seccomp: &'a [libc::sock_fprog],
    /// The capability bounding set to keep, as a bit mask; `None` keeps all.
    pub(crate) kept_capabilities: Option<u64>,
    /// `(uid, gid, supplementary groups)` to switch to, or `None` to keep agentd's.
    pub(crate) identity: Option<(libc::uid_t, libc::gid_t, &'a [libc::gid_t])>,
    /// Paths to try with `execve`, in order.
    pub(crate) candidates: &'a [CString],
    /// Null-terminated argv.
    pub(crate) argv: &'a [*const c_char],
    /// Null-terminated envp.
    pub(crate) envp: &'a [*const c_char],
    /// Write end of the report pipe (`CLOEXEC`).
    pub(crate) report_fd: RawFd,
}

/// A child's report of the step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildFailure {
    step: u32,
    detail: u32,
    errno: i32,
}

impl ChildFailure {
    fn encode(self) -> [u8; CHILD_REPORT_BYTES] {
        let mut out = [0u8; CHILD_REPORT_BYTES];
        out[0..4].copy_from_slice(&self.step.to_ne_bytes());
        out[4..8].copy_from_slice(&self.detail.to_ne_bytes());
        out[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    /// Decodes a report; `None` unless `bytes` is exactly one report.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ChildFailure> {
        let bytes: &[u8; CHILD_REPORT_BYTES] = bytes.try_into().ok()?;
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        Some(ChildFailure {
            step: u32::from_ne_bytes(word(0)),
            detail: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        })
    }

    /// The errno the step failed with.
    pub(crate) fn errno(self) -> Errno {
        Errno::from_raw(self.errno)
    }

    /// The stage it names, given the rlimits the child was asked to set.
    pub(crate) fn stage(self, rlimits: &[Rlimit]) -> Stage {
        const STEPS: [(ChildStep, Stage); 10] = [
            (ChildStep::Setsid, Stage::Setsid),
            (ChildStep::ControllingTty, Stage::ControllingTty),
            (ChildStep::Stdio, Stage::Stdio),
            (ChildStep::Chdir, Stage::Chdir),
            (ChildStep::Setgroups, Stage::Setgroups),
            (ChildStep::Setgid, Stage::Setgid),
            (ChildStep::Setuid, Stage::Setuid),
            (ChildStep::Exec, Stage::Exec),
            (ChildStep::Seccomp, Stage::Seccomp),
            (ChildStep::DropCapabilities, Stage::DropCapabilities),
        ];
        if self.step == ChildStep::Setrlimit as u32 {
            let name = rlimits.get(self.detail as usize).map_or("RLIMIT_?", |r| r.name);
            return Stage::Setrlimit(name);
        }
        STEPS
            .into_iter()
            .find(|(step, _)| *step as u32 == self.step)
            .map_or(Stage::Exec, |(_, stage)| stage)
    }
}

/// Bytes of the stack the child runs on, above its guard page. The child's frames (`prepare`,
/// `exec_path`) take well under 4 KiB in a release build; the rest is room for a debug build.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Starts a child that runs `spec` and execs; returns its pid. Call it with the reaper's
/// registration lock held (`Reaper::spawn_tracked`).
///
/// The child is a `vfork`-style clone (`CLONE_VM | CLONE_VFORK`, as glibc's `posix_spawn`
/// makes it): it runs in agentd's memory on a stack allocated here, and the calling thread is
/// suspended until the child has exec'd or exited, so nothing of agentd's is copied and there
/// are no copy-on-write faults afterwards. The rules that keep that sound:
///
/// - Every signal is blocked in the calling thread around the clone, so the child starts with
///   all of them blocked: a handler of agentd's must never run on the child's stack in shared
///   memory. The child puts every disposition back to the default before it unblocks.
/// - The child allocates nothing, takes no lock, and calls no libc function that touches
///   process-wide state. In particular glibc's `setuid`/`setgid`/`setgroups` are process-wide in
///   a multi-threaded process: they take a lock and signal every thread on glibc's list
///   (`SIGSETXID`), and in shared memory that lock and that list are agentd's. The child makes
///   the raw system calls instead, which change its own credentials only. errno writes land in
///   the suspended thread's TLS, which nobody reads meanwhile.
/// - When this returns, the child has passed `execve`'s point of no return or has exited: a
///   failure report, if any, is already in the report pipe.
pub(crate) fn clone_and_exec(spec: &ChildSpec<'_>) -> io::Result<u32> {
    debug_assert!(spec.stdio.iter().all(|fd| *fd > 2), "stdio sources must not be 0..=2");
    debug_assert!(spec.argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(spec.envp.last().is_some_and(|p| p.is_null()));
    let stack = ChildStack::new()?;
    let blocked = SignalsBlocked::all()?;
    let arg = std::ptr::from_ref(spec).cast_mut().cast::<libc::c_void>();
    // SAFETY: `child_entry` never returns and only reads `*arg`, a `ChildSpec` that outlives the
    // child's use of it (this thread is suspended until the child execs or exits). `stack.top()`
    // is the 16-byte aligned end of a live mapping this frame owns past the clone. All signals
    // are blocked, so no handler of agentd's runs in the child before it resets them.
    let pid = unsafe {
        libc::clone(
            child_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let result = if pid == -1 { Err(io::Error::last_os_error()) } else { Ok(pid.unsigned_abs()) };
    drop(blocked);
    drop(stack);
    result
}

/// The child's entry point on its own stack. Never returns.
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&ChildSpec` `clone_and_exec` passed, alive until the child execs or
    // exits (the parent thread is suspended until then).
    let spec = unsafe { &*arg.cast_const().cast::<ChildSpec<'_>>() };
    child_main(spec)
}

/// The stack a child runs on: an anonymous mapping with a `PROT_NONE` guard page at its low end,
/// so an overflow faults (killing only the child) instead of writing over agentd's memory.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        let page = page_bytes();
        let len = CHILD_STACK_BYTES + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no
        // existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the first page of the mapping just made, which nothing else references.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The highest address: stacks grow down. Page aligned, so 16-byte aligned as the ABI needs.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; the child no longer runs on it (it
        // exec'd or exited before `clone` returned, or was never created).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The system page size (4 KiB if `sysconf` does not say).
fn page_bytes() -> usize {
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// The calling thread's signal mask with every signal blocked; dropping it restores the mask it
/// replaced. Raw `rt_sigprocmask`, because glibc's wrappers quietly leave its two internal
/// signals unblocked.
struct SignalsBlocked {
    previous: u64,
}

impl SignalsBlocked {
    fn all() -> io::Result<SignalsBlocked> {
        let all = u64::MAX;
        let mut previous = 0u64;
        // SAFETY: both pointers are to live u64s, the kernel's sigset size on Linux.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const all,
                &raw mut previous,
                KERNEL_SIGSET_BYTES,
            )
        };
        if ret == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(SignalsBlocked { previous })
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: a pointer to a live u64 mask, the kernel's sigset size; no old mask wanted.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const self.previous,
                std::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_BYTES,
            )
        };
    }
}

/// Size of the kernel's signal set: 64 signals, one bit each.
const KERNEL_SIGSET_BYTES: usize = 8;

/// The kernel's `struct sigaction` for `rt_sigaction` on x86-64 and arm64 (both define
/// `SA_RESTORER`, so the restorer precedes the mask).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child after the clone: set up, exec, or report and exit. Never returns.
fn child_main(spec: &ChildSpec<'_>) -> ! {
    let failure = match prepare(spec) {
        Err(failure) => failure,
        Ok(()) => exec_path(spec),
    };
    let report = failure.encode();
    // SAFETY: write and _exit are async-signal-safe; `report` is a live stack buffer of the
    // length given. Nothing can be done if the write fails, so its result is ignored.
    unsafe {
        libc::write(spec.report_fd, report.as_ptr().cast(), report.len());
        libc::_exit(CHILD_FAILED_STATUS)
    }
}

/// Everything before exec, in the reference's order: signals, session, terminal, stdio, cwd,
/// rlimits (while privileged), then moat's confinement (seccomp while the child still holds
/// `CAP_SYS_ADMIN`, so no `no_new_privs` is needed; then the capability bounding set), then
/// groups, gid, uid.
fn prepare(spec: &ChildSpec<'_>) -> Result<(), ChildFailure> {
    reset_signals();
    let fail = |step: ChildStep, detail: usize| ChildFailure {
        step: step as u32,
        detail: u32::try_from(detail).unwrap_or(u32::MAX),
        errno: Errno::last_raw(),
    };
    let check =
        |ret: libc::c_int, step: ChildStep| if ret == -1 { Err(fail(step, 0)) } else { Ok(()) };
    let check_raw =
        |ret: libc::c_long, step: ChildStep| if ret == -1 { Err(fail(step, 0)) } else { Ok(()) };
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }, ChildStep::Setsid)?;
    if spec.controlling_tty {
        // SAFETY: TIOCSCTTY takes an int argument; stdio[0] is an open PTY slave fd.
        let ret = unsafe { libc::ioctl(spec.stdio[0], libc::TIOCSCTTY, 0) };
        check(ret, ChildStep::ControllingTty)?;
    }
    for (target, source) in spec.stdio.into_iter().enumerate() {
        // SAFETY: dup2 on two integers; the sources are open fds above 2, so no source is
        // overwritten by an earlier dup2. The new fd is not CLOEXEC; the sources are.
        check(unsafe { libc::dup2(source, target as libc::c_int) }, ChildStep::Stdio)?;
    }
    // SAFETY: `cwd` is a valid NUL-terminated string borrowed from the parent's plan.
    check(unsafe { libc::chdir(spec.cwd.as_ptr()) }, ChildStep::Chdir)?;
    for (index, limit) in spec.rlimits.iter().enumerate() {
        let value = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
        // SAFETY: `value` is a valid rlimit on the stack; the resource is a valid constant.
        if unsafe { libc::setrlimit(limit.resource as RawResource, &value) } == -1 {
            return Err(fail(ChildStep::Setrlimit, index));
        }
    }
    for program in spec.seccomp {
        // SAFETY: `program` is a sock_fprog prepared by the parent whose instructions stay alive
        // in the parent's copy of memory; seccomp(2) is a plain system call and async-signal-safe.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                program as *const libc::sock_fprog,
            )
        };
        if ret != 0 {
            return Err(fail(ChildStep::Seccomp, 0));
        }
    }
    if let Some(kept) = spec.kept_capabilities {
        drop_capabilities(kept).map_err(|()| fail(ChildStep::DropCapabilities, 0))?;
    }
    if let Some((uid, gid, groups)) = spec.identity {
        // Raw system calls: glibc's wrappers would change every thread of agentd too (see
        // `clone_and_exec`). They change this child's credentials only.
        // SAFETY: `groups` is a live slice of gid_t of the given length.
        let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        check_raw(ret, ChildStep::Setgroups)?;
        // SAFETY: plain integer argument.
        check_raw(unsafe { libc::syscall(libc::SYS_setgid, gid) }, ChildStep::Setgid)?;
        // SAFETY: plain integer argument.
        check_raw(unsafe { libc::syscall(libc::SYS_setuid, uid) }, ChildStep::Setuid)?;
    }
    Ok(())
}

/// Drops every capability not in `kept` from the bounding set, and clears the ambient set, so
/// no program started here (set-user-id or file-capability ones included) gains one. Numbers
/// past the kernel's last capability fail with EINVAL and end the loop.
fn drop_capabilities(kept: u64) -> Result<(), ()> {
    for cap in 0..64u64 {
        if kept & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == -1 {
            if Errno::last_raw() == libc::EINVAL {
                break;
            }
            return Err(());
        }
    }
    // SAFETY: prctl with integer arguments only; async-signal-safe. EINVAL (no ambient
    // capabilities on this kernel) leaves nothing to clear.
    let ret = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if ret == -1 && Errno::last_raw() != libc::EINVAL {
        return Err(());
    }
    Ok(())
}

/// Puts every signal back to its default action, then unblocks all of them. `execve` resets
/// handled signals but keeps ignored ones and the mask, and agentd ignores `SIGPIPE` (the Rust
/// runtime does) and may ignore or block others; the program must not inherit that. The child
/// starts with every signal blocked (`clone_and_exec`), and unblocks only once no handler of
/// agentd's is left to run on its stack. Raw system calls: glibc's `sigaction` refuses its two
/// internal signals, and `sigprocmask` would keep them as they are.
fn reset_signals() {
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=MAX_SIGNAL {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a live kernel sigaction of the size the kernel expects with an
        // 8-byte mask; no old action is wanted.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default,
                std::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET_BYTES,
            )
        };
    }
    let none = 0u64;
    // SAFETY: a pointer to a live u64 mask of the kernel's sigset size; no old mask wanted.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const none,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_BYTES,
        )
    };
}

/// Tries each candidate with `execve` the way glibc's `execvp` searches PATH: a missing file
/// moves on, `EACCES` is remembered and moves on, any other error stops. Returns only on failure.
fn exec_path(spec: &ChildSpec<'_>) -> ChildFailure {
    let mut saw_eacces = false;
    let mut errno = libc::ENOENT;
    for candidate in spec.candidates {
        // SAFETY: candidate, argv and envp are NUL-terminated strings and null-terminated pointer
        // arrays prepared by the parent and alive for the child's whole life.
        unsafe { libc::execve(candidate.as_ptr(), spec.argv.as_ptr(), spec.envp.as_ptr()) };
        errno = Errno::last_raw();
        match errno {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return ChildFailure { step: ChildStep::Exec as u32, detail: 0, errno },
        }
    }
    if saw_eacces {
        errno = libc::EACCES;
    }
    ChildFailure { step: ChildStep::Exec as u32, detail: 0, errno }
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::Resource;

    use super::*;

    #[test]
    fn report_round_trips() {
        let failure = ChildFailure { step: ChildStep::Chdir as u32, detail: 0, errno: 2 };
        assert_eq!(ChildFailure::decode(&failure.encode()), Some(failure));
    }

    #[test]
    fn short_or_long_report_does_not_decode() {
        assert_eq!(ChildFailure::decode(&[0; 11]), None);
        assert_eq!(ChildFailure::decode(&[0; 13]), None);
    }

    #[test]
    fn setrlimit_report_names_the_resource_by_index() {
        let limits = [
            Rlimit { resource: Resource::RLIMIT_CPU, name: "RLIMIT_CPU", soft: 1, hard: 1 },
            Rlimit { resource: Resource::RLIMIT_NOFILE, name: "RLIMIT_NOFILE", soft: 1, hard: 1 },
        ];
        let failure = ChildFailure { step: ChildStep::Setrlimit as u32, detail: 1, errno: 1 };
        assert_eq!(failure.stage(&limits), Stage::Setrlimit("RLIMIT_NOFILE"));
    }

    #[test]
    fn chdir_report_is_the_chdir_stage() {
        let failure = ChildFailure { step: ChildStep::Chdir as u32, detail: 0, errno: 2 };
        assert_eq!((failure.stage(&[]), failure.errno()), (Stage::Chdir, Errno::ENOENT));
    }
}
