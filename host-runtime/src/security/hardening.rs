//! What isolation a sandbox has, as `moat inspect` and `moat doctor` show it: the backend, the
//! user id map, the security profile (seccomp filter and capabilities), the masked kernel paths
//! and the resource limits. Derived from the sandbox's spec, and for a live namespace sandbox
//! read back from its agent's `/proc` entries (so a limit that did not apply shows as it is).
//!
//! ```text
//!  spec.json ──────────────► profile, limits, backend
//!  state.json pid ─► /proc: the moat-agentd below it (PID 1 of its pid namespace)
//!                     ├─ uid_map, Seccomp, CapBnd of the agent
//!                     └─ its cgroup's pids.max
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::backend::isolation::BackendKind;
use crate::security::SecurityProfile;
use crate::store::home::SandboxSpec;

/// What the sandbox's processes run under.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IsolationReport {
    /// `namespace` or `vm`.
    pub backend: &'static str,
    /// The seccomp profile of every process the agent starts.
    pub security_profile: SecurityProfile,
    /// The capabilities those processes keep.
    pub capabilities: &'static str,
    /// How the sandbox's user ids map to the host's.
    pub id_map: &'static str,
    /// Kernel paths hidden or read-only inside.
    pub kernel_paths: &'static str,
    /// Most processes at once (`None`: unlimited).
    pub pids_limit: Option<u32>,
    /// Why no pids, memory or CPU limit applies, when that is not the sandbox's own choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits_not_applied: Option<&'static str>,
    /// Memory limit in MiB (`None`: none on the namespace backend; a VM's size otherwise).
    pub memory_mib: Option<u32>,
    /// CPU quota in whole CPUs (`None`: none).
    pub cpus: Option<u8>,
    /// Facts read from the running agent, when it runs on this host's kernel.
    pub live: Option<LiveFacts>,
}

/// What the running agent's `/proc` entries say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveFacts {
    /// The agent's host pid.
    pub agent_pid: u32,
    /// `/proc/PID/uid_map`, lines joined with `; `.
    pub uid_map: String,
    /// The agent's `Seccomp:` mode (0 none, 2 filter).
    pub agent_seccomp: String,
    /// The agent's own bounding set (its children keep less, per the profile).
    pub agent_cap_bounding: String,
    /// The `pids.max` of the agent's cgroup, when it has a pids cgroup.
    pub pids_max: Option<String>,
}

/// The id map a namespace sandbox gets (see [`crate::backend::namespace::mapped`]; the live `uid_map` shows which).
pub const NAMESPACE_ID_MAP: &str = "0..65535 on an unprivileged host block of its own (from /etc/subuid's \
     moat entry, else 1879048192..): the sandbox's root is nobody on the host; volumes are \
     idmapped so its writes belong to the volume's owner. Identity (0 0 4294967295) only on a host without \
     idmapped mounts, with a warning in sandbox.log";

/// The id map of a namespace sandbox an unprivileged user started ([`crate::backend::namespace::rootless`]).
pub const ROOTLESS_ID_MAP: &str = "0 is the user who started it; 1..65535 the user's /etc/subuid \
     and /etc/subgid ranges, or nothing else when the user has none (single-id map, with a warning)";

/// Why an unprivileged namespace sandbox has no cgroup limits.
pub const ROOTLESS_NO_LIMITS: &str = "started unprivileged: moat creates no cgroup, so no pids, \
     memory or CPU limit applies (explicit ones are refused)";

/// The isolation `spec` asks for, plus what the live agent below `pid` shows.
pub fn report(spec: &SandboxSpec, pid: Option<i32>) -> IsolationReport {
    let vm = spec.backend == BackendKind::Vm;
    let profile = spec.config.security_profile;
    IsolationReport {
        backend: if vm { "vm" } else { "namespace" },
        security_profile: profile,
        capabilities: match profile {
            SecurityProfile::None => "all (in the sandbox's user namespace)",
            SecurityProfile::Default | SecurityProfile::Restricted => {
                "docker's default 14 (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, \
                 SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP)"
            }
        },
        id_map: match (vm, spec.rootless) {
            (true, _) => "the guest kernel's own ids",
            (false, true) => ROOTLESS_ID_MAP,
            (false, false) => NAMESPACE_ID_MAP,
        },
        kernel_paths: "masked: /proc/kcore, keys, timer_list, sched_debug, sysrq-trigger, acpi, \
                       scsi, /sys/firmware...; read-only: /proc/sys, irq, bus, fs, /sys",
        pids_limit: if vm || spec.rootless { None } else { spec.config.effective_pids_limit() },
        limits_not_applied: (!vm && spec.rootless).then_some(ROOTLESS_NO_LIMITS),
        memory_mib: spec.config.memory_mib,
        cpus: spec.config.vcpus,
        live: if vm { None } else { pid.and_then(|pid| live_facts(Path::new("/proc"), pid)) },
    }
}

/// Reads the facts of the `moat-agentd` that descends from `sandbox_pid`.
pub fn live_facts(proc: &Path, sandbox_pid: i32) -> Option<LiveFacts> {
    let agent = find_agent(proc, u32::try_from(sandbox_pid).ok()?)?;
    let dir = proc.join(agent.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |name: &str| status_field(&status, name).unwrap_or("?").to_owned();
    let uid_map = std::fs::read_to_string(dir.join("uid_map")).ok()?;
    let uid_map = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    let cgroups = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    Some(LiveFacts {
        agent_pid: agent,
        uid_map,
        agent_seccomp: field("Seccomp"),
        agent_cap_bounding: field("CapBnd"),
        pids_max: pids_max_file(&cgroups).and_then(|f| std::fs::read_to_string(f).ok()),
    })
    .map(|mut facts| {
        facts.pids_max = facts.pids_max.map(|v| v.trim().to_owned());
        facts
    })
}

/// The value of `name:` in a `/proc/PID/status` text.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The `pids.max` file of the cgroup a `/proc/PID/cgroup` text names (v1 `pids` line, else v2).
pub fn pids_max_file(cgroups: &str) -> Option<PathBuf> {
    let root = Path::new(crate::backend::namespace::cgroup::CGROUP_ROOT);
    let mut v2 = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            return Some(root.join("pids").join(path).join("pids.max"));
        }
        if controllers.is_empty() {
            v2 = Some(root.join(path).join("pids.max"));
        }
    }
    v2.filter(|file| file.is_file())
}

/// The pid of the `moat-agentd` process below `ancestor`, found by walking parent pids.
fn find_agent(proc: &Path, ancestor: u32) -> Option<u32> {
    let mut parents = HashMap::new();
    let mut agents = Vec::new();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        if let Some(ppid) = status_field(&status, "PPid").and_then(|p| p.parse::<u32>().ok()) {
            parents.insert(pid, ppid);
        }
        if status_field(&status, "Name") == Some("moat-agentd") {
            agents.push(pid);
        }
    }
    agents.into_iter().find(|agent| {
        let mut pid = *agent;
        for _ in 0..16 {
            match parents.get(&pid) {
                Some(&parent) if parent == ancestor => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_found_by_name() {
        let status = "Name:\tmoat-agentd\nPPid:\t42\nSeccomp:\t2\n";
        assert_eq!(status_field(status, "PPid"), Some("42"));
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Seccomp_filters"), None);
    }

    #[test]
    fn a_v1_pids_line_names_the_pids_hierarchy() {
        let cgroups = "9:name=systemd:/\n8:pids:/moat/box\n4:memory:/moat/box\n0::/\n";
        assert_eq!(
            pids_max_file(cgroups),
            Some(PathBuf::from("/sys/fs/cgroup/pids/moat/box/pids.max"))
        );
    }

    #[test]
    fn the_report_follows_the_profile_and_the_default_pids_limit() {
        let spec: SandboxSpec = serde_json::from_value(serde_json::json!({
            "name": "box", "root": "Host", "agentd": "/a", "backend": "namespace",
        }))
        .unwrap();
        let report = report(&spec, None);
        assert_eq!(report.security_profile, SecurityProfile::Default);
        assert_eq!(report.pids_limit, Some(crate::config::DEFAULT_PIDS_LIMIT));
        assert!(report.capabilities.starts_with("docker's default 14"));
        assert_eq!(report.live, None);
        assert_eq!(report.limits_not_applied, None);
    }

    #[test]
    fn an_unprivileged_sandbox_reports_no_pids_limit_and_why() {
        let spec: SandboxSpec = serde_json::from_value(serde_json::json!({
            "name": "box", "root": "Host", "agentd": "/a", "backend": "namespace", "rootless": true,
        }))
        .unwrap();
        let report = report(&spec, None);
        assert_eq!(report.pids_limit, None);
        assert_eq!(report.limits_not_applied, Some(ROOTLESS_NO_LIMITS));
        assert_eq!(report.id_map, ROOTLESS_ID_MAP);
    }
}
