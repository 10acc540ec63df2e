//! The sandbox's security profile: which seccomp filter confines the agent and the processes it
//! starts, and which capabilities those processes keep. This module builds the filters (BPF, with
//! `seccompiler`) and the capability mask; installing them is `sys.rs` (the agent, after boot)
//! and `exec/pre_exec.rs` (each child, before `execve`).
//!
//! ```text
//!  profile    denied with EPERM (every process the agent starts)             capabilities kept
//!  default    keyring, bpf, perf, userfaultfd, modules, kexec, mount family,  docker's default 14
//!             swap, reboot, clocks, syslog, acct, quotactl, handles, ioports,
//!             personality tricks, new user namespaces (clone/unshare flag)
//!  restricted default + ptrace, process_vm_*, chroot, setns, unshare,         docker's default 14
//!             namespace flags on clone, io_uring, kcmp, any personality
//!  none       nothing                                                        all
//!  every profile but none: clone3 fails with ENOSYS (its flags are in memory, out of a filter's
//!  reach), so libc falls back to clone, whose flags the filter sees; on x86_64 the x32 syscall
//!  numbers fail with ENOSYS (they would bypass a filter keyed on x86_64 numbers).
//! ```
//!
//! The agent itself runs under the same filter minus what it still needs after boot: `umount2`
//! (shutdown), `reboot` (a VM's power-off) and `clock_settime` (a VM's clock). Its children get
//! the whole filter stacked on top. No filter sets `no_new_privs` while the agent holds
//! `CAP_SYS_ADMIN` in its user namespace, so set-user-id programs in an image (`sudo`) still work;
//! they gain at most the kept capabilities.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// The name of the agent's option and environment variable that carry the profile.
pub const PROFILE_ENV: &str = "MOAT_AGENT_SECURITY_PROFILE";

/// How strictly the sandbox's processes are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProfile {
    /// In the spirit of docker's default profile: what ordinary programs never need is denied.
    #[default]
    Default,
    /// The default, plus what most tools never need (debugging, namespaces, io_uring).
    Restricted,
    /// No filter and every capability: the namespaces alone confine the sandbox.
    None,
}

impl SecurityProfile {
    /// Every profile, in order of strength.
    pub const ALL: [SecurityProfile; 3] =
        [SecurityProfile::None, SecurityProfile::Default, SecurityProfile::Restricted];

    /// The profile's name, as `--security-profile` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProfile::Default => "default",
            SecurityProfile::Restricted => "restricted",
            SecurityProfile::None => "none",
        }
    }
}

impl std::fmt::Display for SecurityProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SecurityProfile {
    type Err = SeccompError;

    fn from_str(name: &str) -> Result<SecurityProfile, SeccompError> {
        SecurityProfile::ALL
            .into_iter()
            .find(|profile| profile.as_str() == name)
            .ok_or_else(|| SeccompError::UnknownProfile(name.to_owned()))
    }
}

/// Why a profile could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Not one of `default`, `restricted`, `none`.
    #[error("unknown security profile {0:?} (expected default, restricted or none)")]
    UnknownProfile(String),
    /// This architecture has no syscall table here.
    #[error("seccomp filters are not built for the {0} architecture")]
    UnsupportedArch(&'static str),
    /// seccompiler refused the rules (a bug in this module).
    #[error("building the seccomp filter failed: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter failed: {0}")]
    Install(nix::errno::Errno),
}

/// Who a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The agent after boot: the profile minus what the agent itself still calls.
    Agent,
    /// A process the agent starts: the whole profile.
    Process,
}

/// Capabilities every profile but `none` keeps for the sandbox's processes: docker's default set.
pub const KEPT_CAPABILITIES: [u32; 14] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// `CLONE_NEWUSER`: a new user namespace.
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

/// Every `CLONE_NEW*` flag (and `CLONE_NEWTIME`, which `unshare` takes).
const CLONE_NEW_ANY: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80) as u64; // CLONE_NEWTIME

/// `personality(2)` values docker's profile allows: `PER_LINUX`, `UNAME26`, `PER_LINUX32`,
/// `PER_LINUX32|UNAME26`, and the query `0xffffffff`.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// First x32 ABI syscall number (`__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Denied outright by the default profile (and so by `restricted`). Syscalls the kernel removed
/// long ago and that libc no longer names (`create_module`, `query_module`, ...) fail with ENOSYS
/// anyway.
const DEFAULT_DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_adjtimex,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_init_module,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// Denied outright by `restricted` on top of [`DEFAULT_DENIED`].
const RESTRICTED_DENIED: &[i64] = &[
    libc::SYS_chroot,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_personality,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_setns,
    libc::SYS_unshare,
];

/// What the agent still calls after boot, left out of its own filter (its children get them
/// denied): shutdown's unmounts, a VM's power-off and clock setting.
const AGENT_NEEDS: &[i64] = &[libc::SYS_umount2, libc::SYS_reboot, libc::SYS_clock_settime];

/// The seccompiler architecture of this build.
pub fn target_arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SeccompError::UnsupportedArch(other)),
    }
}

/// One rule per flag bit of `mask`: the syscall matches when argument 0 has any of them.
fn any_flag_rules(mask: u64) -> Result<Vec<SeccompRule>, SeccompError> {
    (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|flag| mask & flag != 0)
        .map(|flag| {
            let op = SeccompCmpOp::MaskedEq(flag);
            Ok(SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                op,
                flag,
            )?])?)
        })
        .collect()
}

/// `personality(persona)` matches unless `persona` is one docker allows.
fn personality_rule() -> Result<Vec<SeccompRule>, SeccompError> {
    let conditions = ALLOWED_PERSONALITIES
        .into_iter()
        .map(|value| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![SeccompRule::new(conditions)?])
}

/// The syscalls `profile` denies with EPERM for `scope`, each with its rules (empty: always).
fn denied_rules(
    profile: SecurityProfile,
    scope: Scope,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules = BTreeMap::new();
    let (outright, new_flags): (Vec<i64>, u64) = match profile {
        SecurityProfile::None => return Ok(rules),
        SecurityProfile::Default => (DEFAULT_DENIED.to_vec(), CLONE_NEWUSER),
        SecurityProfile::Restricted => {
            ([DEFAULT_DENIED, RESTRICTED_DENIED].concat(), CLONE_NEW_ANY)
        }
    };
    for nr in outright {
        if scope == Scope::Process || !AGENT_NEEDS.contains(&nr) {
            rules.insert(nr, Vec::new());
        }
    }
    rules.insert(libc::SYS_clone, any_flag_rules(new_flags)?);
    rules.entry(libc::SYS_unshare).or_insert(any_flag_rules(new_flags)?);
    rules.entry(libc::SYS_personality).or_insert(personality_rule()?);
    Ok(rules)
}

/// The BPF programs that confine `scope` under `profile`, to install in this order (the kernel
/// runs every installed filter and the strictest answer wins). Empty for [`SecurityProfile::None`].
pub fn programs(profile: SecurityProfile, scope: Scope) -> Result<Vec<BpfProgram>, SeccompError> {
    if profile == SecurityProfile::None {
        return Ok(Vec::new());
    }
    let arch = target_arch()?;
    let errno = |code: i32| SeccompAction::Errno(code.unsigned_abs());
    let mut programs = Vec::new();
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let clone3 = SeccompFilter::new(clone3, SeccompAction::Allow, errno(libc::ENOSYS), arch)?;
    programs.push(BpfProgram::try_from(clone3)?);
    let denied = denied_rules(profile, scope)?;
    let denied = SeccompFilter::new(denied, SeccompAction::Allow, errno(libc::EPERM), arch)?;
    programs.push(BpfProgram::try_from(denied)?);
    Ok(programs)
}

/// The programs that, stacked on the agent's own [`Scope::Agent`] filters, confine a process
/// exactly as [`programs`]`(profile, Scope::Process)` does: one filter denying what the agent
/// keeps for itself (`umount2`, `reboot`, `clock_settime`, where the profile denies them).
/// Seccomp filters are inherited by every child and kept across `execve`, so a process the
/// agent starts after confining itself already runs under the agent's filters; installing the
/// whole process profile again repeats them, and compiling its largest filter costs the kernel
/// about 0.3 ms per process (its JIT) where this one takes a few tens of µs. Only valid for
/// processes started by an agent that has installed `programs(profile, Scope::Agent)`. Empty for
/// [`SecurityProfile::None`].
pub fn programs_over_agent(profile: SecurityProfile) -> Result<Vec<BpfProgram>, SeccompError> {
    if profile == SecurityProfile::None {
        return Ok(Vec::new());
    }
    let agent = denied_rules(profile, Scope::Agent)?;
    let extra: BTreeMap<i64, Vec<SeccompRule>> = denied_rules(profile, Scope::Process)?
        .into_iter()
        .filter(|(nr, _)| !agent.contains_key(nr))
        .collect();
    if extra.is_empty() {
        return Ok(Vec::new());
    }
    let errno = SeccompAction::Errno(libc::EPERM.unsigned_abs());
    let filter = SeccompFilter::new(extra, SeccompAction::Allow, errno, target_arch()?)?;
    Ok(vec![BpfProgram::try_from(filter)?])
}

/// A hand-written filter that fails every x32 syscall (number at or above `__X32_SYSCALL_BIT`)
/// with ENOSYS: x32 calls carry `AUDIT_ARCH_X86_64`, so the other filters would check them
/// against x86_64 numbers and let them through. Where x32 is configured out they fail anyway.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        insn(BPF_LD_W_ABS, 0, 0, NR_OFFSET),
        insn(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs()),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The capability bounding set the sandbox's processes keep under `profile`, as a bit mask
/// (`None`: keep everything).
pub fn kept_capabilities(profile: SecurityProfile) -> Option<u64> {
    match profile {
        SecurityProfile::None => None,
        SecurityProfile::Default | SecurityProfile::Restricted => {
            Some(KEPT_CAPABILITIES.iter().fold(0, |mask, cap| mask | 1 << cap))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_by_name_and_round_trip() {
        for profile in SecurityProfile::ALL {
            assert_eq!(profile.as_str().parse::<SecurityProfile>().unwrap(), profile);
        }
        assert_eq!(SecurityProfile::default(), SecurityProfile::Default);
        assert!(matches!(
            "Default".parse::<SecurityProfile>(),
            Err(SeccompError::UnknownProfile(name)) if name == "Default"
        ));
        assert!("".parse::<SecurityProfile>().is_err());
    }

    #[test]
    fn none_builds_no_filter() {
        assert!(programs(SecurityProfile::None, Scope::Process).unwrap().is_empty());
        assert_eq!(kept_capabilities(SecurityProfile::None), None);
    }

    #[test]
    fn default_and_restricted_build_filters_for_both_scopes() {
        for profile in [SecurityProfile::Default, SecurityProfile::Restricted] {
            for scope in [Scope::Agent, Scope::Process] {
                let programs = programs(profile, scope).unwrap();
                assert!(!programs.is_empty());
                // The kernel takes at most 4096 instructions per filter.
                assert!(programs.iter().all(|p| !p.is_empty() && p.len() <= 4096));
            }
        }
    }

    #[test]
    fn the_agent_keeps_what_it_needs_after_boot_and_children_do_not() {
        let agent = denied_rules(SecurityProfile::Default, Scope::Agent).unwrap();
        let process = denied_rules(SecurityProfile::Default, Scope::Process).unwrap();
        for nr in AGENT_NEEDS {
            assert!(!agent.contains_key(nr));
            assert!(process.contains_key(nr));
        }
        assert!(agent.contains_key(&libc::SYS_keyctl));
    }

    #[test]
    fn default_denies_new_user_namespaces_only_and_restricted_any_unshare() {
        let default = denied_rules(SecurityProfile::Default, Scope::Process).unwrap();
        assert_eq!(default[&libc::SYS_unshare].len(), 1);
        assert_eq!(default[&libc::SYS_clone].len(), 1);
        assert!(!default.contains_key(&libc::SYS_ptrace));
        let restricted = denied_rules(SecurityProfile::Restricted, Scope::Process).unwrap();
        assert!(restricted[&libc::SYS_unshare].is_empty());
        assert_eq!(restricted[&libc::SYS_clone].len(), CLONE_NEW_ANY.count_ones() as usize);
        assert!(restricted[&libc::SYS_personality].is_empty());
        assert!(restricted.contains_key(&libc::SYS_ptrace));
    }

    /// A classic-BPF interpreter for the instructions seccompiler and the prelude emit, run on
    /// a `seccomp_data` of this architecture: returns the filter's verdict.
    fn run(program: &[sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        let arch = match target_arch().unwrap() {
            TargetArch::x86_64 => 0xc000_003e,
            _ => 0xc000_00b7,
        };
        let word = |offset: u32| -> u32 {
            match offset {
                0 => nr,
                4 => arch,
                o if (16..64).contains(&o) => {
                    let arg = args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 { arg as u32 } else { (arg >> 32) as u32 }
                }
                o => panic!("load from offset {o}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                0x20 => acc = word(i.k),
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += jump(acc == i.k),
                0x25 => pc += jump(acc > i.k),
                0x35 => pc += jump(acc >= i.k),
                0x06 => return i.k,
                code => panic!("opcode {code:#x}"),
            }
        }
    }

    fn nr(call: i64) -> u32 {
        u32::try_from(call).unwrap()
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// The verdict of all of `programs` together: the kernel runs each and the most restrictive
    /// action wins (a lower action value; ERRNO is below ALLOW).
    fn run_all(programs: &[BpfProgram], nr: u32, args: [u64; 6]) -> u32 {
        programs.iter().map(|p| run(p, nr, args)).min().unwrap_or(ALLOW)
    }

    #[test]
    fn the_filters_deny_allow_and_answer_enosys_as_the_profile_says() {
        let programs = programs(SecurityProfile::Default, Scope::Process).unwrap();
        let verdict = |call: i64, arg0: u64| run_all(&programs, nr(call), [arg0, 0, 0, 0, 0, 0]);
        for call in [libc::SYS_read, libc::SYS_write, libc::SYS_openat, libc::SYS_futex] {
            assert_eq!(verdict(call, 0), ALLOW, "syscall {call}");
        }
        for call in [libc::SYS_keyctl, libc::SYS_bpf, libc::SYS_mount, libc::SYS_reboot] {
            assert_eq!(verdict(call, 0), EPERM, "syscall {call}");
        }
        assert_eq!(verdict(libc::SYS_clone3, 0), ENOSYS);
        assert_eq!(verdict(libc::SYS_clone, libc::SIGCHLD as u64), ALLOW);
        assert_eq!(verdict(libc::SYS_clone, CLONE_NEWUSER | libc::SIGCHLD as u64), EPERM);
        assert_eq!(verdict(libc::SYS_unshare, libc::CLONE_NEWNS as u64), ALLOW);
        assert_eq!(verdict(libc::SYS_unshare, CLONE_NEWUSER), EPERM);
        assert_eq!(verdict(libc::SYS_personality, 0xffff_ffff), ALLOW);
        assert_eq!(verdict(libc::SYS_personality, 0x0040_0000), EPERM);
        assert_eq!(verdict(libc::SYS_ptrace, 0), ALLOW);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run_all(&programs, X32_SYSCALL_BIT | 250, [0; 6]), ENOSYS);
    }

    #[test]
    fn agent_filters_plus_the_extra_one_decide_every_call_as_the_process_profile() {
        let interesting_args = [
            0,
            libc::SIGCHLD as u64,
            CLONE_NEWUSER | libc::SIGCHLD as u64,
            libc::CLONE_NEWNS as u64,
            libc::CLONE_NEWNET as u64,
            CLONE_NEW_ANY,
            0x0040_0000,
            0xffff_ffff,
            u64::MAX,
        ];
        for profile in [SecurityProfile::Default, SecurityProfile::Restricted] {
            let mut stacked = programs(profile, Scope::Agent).unwrap();
            let extra = programs_over_agent(profile).unwrap();
            assert_eq!(extra.len(), 1, "{profile}");
            assert!(extra[0].len() < 32, "the extra filter stays small: {}", extra[0].len());
            stacked.extend(extra);
            let process = programs(profile, Scope::Process).unwrap();
            #[cfg(target_arch = "x86_64")]
            let x32 = [X32_SYSCALL_BIT, X32_SYSCALL_BIT | 250, u32::MAX];
            #[cfg(not(target_arch = "x86_64"))]
            let x32: [u32; 0] = [];
            for call in (0..1024).chain(x32) {
                for arg0 in interesting_args {
                    let args = [arg0, 0, 0, 0, 0, 0];
                    assert_eq!(
                        run_all(&stacked, call, args),
                        run_all(&process, call, args),
                        "{profile}: syscall {call} with {arg0:#x}"
                    );
                }
            }
        }
        assert!(programs_over_agent(SecurityProfile::None).unwrap().is_empty());
    }

    #[test]
    fn the_agent_filters_leave_its_shutdown_calls_and_deny_the_rest_of_restricted() {
        let agent = programs(SecurityProfile::Restricted, Scope::Agent).unwrap();
        let process = programs(SecurityProfile::Restricted, Scope::Process).unwrap();
        for call in AGENT_NEEDS {
            assert_eq!(run_all(&agent, nr(*call), [0; 6]), ALLOW);
            assert_eq!(run_all(&process, nr(*call), [0; 6]), EPERM);
        }
        for call in [libc::SYS_ptrace, libc::SYS_unshare, libc::SYS_setns, libc::SYS_keyctl] {
            assert_eq!(run_all(&agent, nr(call), [0; 6]), EPERM, "syscall {call}");
        }
        assert_eq!(run_all(&agent, nr(libc::SYS_clone3), [0; 6]), ENOSYS);
        assert_eq!(run_all(&agent, nr(libc::SYS_read), [0; 6]), ALLOW);
    }

    #[test]
    fn kept_capabilities_are_dockers_default_fourteen() {
        let mask = kept_capabilities(SecurityProfile::Default).unwrap();
        assert_eq!(mask.count_ones(), 14);
        assert_eq!(mask & (1 << 21), 0, "CAP_SYS_ADMIN is dropped");
        assert_ne!(mask & (1 << 18), 0, "CAP_SYS_CHROOT is kept");
    }
}
