//! What a sandbox is configured with beyond its root: hostname, default exec environment,
//! volumes, tmpfs mounts, named scripts, rlimits, size and time limits. Parsed from the CLI's
//! option values (pure functions, each rule unit-tested), stored in `spec.json`, and turned into
//! the agent's `core.bootstrap` by [`SandboxConfig::bootstrap`].
//!
//! ```text
//!  -v HOST:GUEST[:ro]   ─► DirMount {tag, guest_path}   (tag: the host path in the namespace
//!  --tmpfs PATH[:MiB]   ─► TmpfsMount                    backend, a virtiofs tag in a VM)
//!  --script NAME=BODY   ─► DIR/scripts/NAME ─► DirMount at /.msb/scripts (read-only, on PATH)
//!  --rlimit RES=SOFT[:HARD], --hostname, -e, -w, -u (create) ─► bootstrap fields
//!  --cpus, --memory     ─► VM size; namespace backend: cgroup limits
//!  --max-duration, --idle-timeout ─► the sandbox process shuts the guest down
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_protocol::payload::bootstrap::{DirMount, EnvVar, GuestBootstrap, MountFlags, TmpfsMount};
use moat_protocol::payload::exec::{ExecLimits, ExecRlimit};

pub use crate::security::SecurityProfile;

/// Where named scripts appear inside the sandbox (agentd keeps it on every exec's PATH).
pub const SCRIPTS_GUEST_DIR: &str = "/.msb/scripts";

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_BYTES: usize = 64;

/// Longest script name (one path component).
pub const MAX_SCRIPT_NAME_BYTES: usize = 255;

/// Largest script body accepted on the command line.
pub const MAX_SCRIPT_BODY_BYTES: usize = 1024 * 1024;

/// The hostname used when the sandbox name is not a valid hostname.
pub const FALLBACK_HOSTNAME: &str = "moat";

/// Resource names `--rlimit` accepts (the protocol's lowercase names).
pub const RLIMIT_NAMES: [&str; 16] = [
    "cpu",
    "fsize",
    "data",
    "stack",
    "core",
    "rss",
    "nproc",
    "nofile",
    "memlock",
    "as",
    "locks",
    "sigpending",
    "msgqueue",
    "nice",
    "rtprio",
    "rttime",
];

/// A host directory shared into the sandbox: a path (`-v HOST:GUEST`) or a named volume of the
/// moat home (`-v NAME:GUEST`, [`crate::store::volumes`]), whose directory fills `host` when
/// the sandbox is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// Host directory (absolute once resolved).
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub guest: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// The named volume this is (`None`: a host path).
    #[serde(default)]
    pub name: Option<String>,
    /// Mounted `noexec`.
    #[serde(default)]
    pub noexec: bool,
    /// Mounted `nosuid`.
    #[serde(default)]
    pub nosuid: bool,
    /// Mounted `nodev`.
    #[serde(default)]
    pub nodev: bool,
}

/// A tmpfs mount inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tmpfs {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Size cap in MiB (`None`: the kernel's default, half of RAM).
    pub size_mib: Option<u32>,
}

/// A named script placed in [`SCRIPTS_GUEST_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Script {
    /// File name.
    pub name: String,
    /// Content (made executable).
    pub body: String,
}

/// One sandbox-wide resource limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// Lowercase resource name, one of [`RLIMIT_NAMES`].
    pub resource: String,
    /// Soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// Hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

/// Everything a sandbox is configured with besides its name, root and backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// Hostname (`None`: the sandbox name when it is a valid hostname).
    pub hostname: Option<String>,
    /// `KEY=VALUE` pairs every exec inherits.
    pub env: Vec<String>,
    /// Default working directory of every exec.
    pub cwd: Option<String>,
    /// Default user of every exec.
    pub user: Option<String>,
    /// Shared host directories.
    pub volumes: Vec<Volume>,
    /// tmpfs mounts.
    pub tmpfs: Vec<Tmpfs>,
    /// Named scripts.
    pub scripts: Vec<Script>,
    /// Sandbox-wide rlimits.
    pub rlimits: Vec<Rlimit>,
    /// Virtual CPUs (VM) or CPU quota in whole CPUs (namespace backend).
    pub vcpus: Option<u8>,
    /// Memory in MiB (VM size, or the namespace backend's cgroup limit).
    pub memory_mib: Option<u32>,
    /// The sandbox shuts down this many seconds after it started.
    pub max_duration_secs: Option<u64>,
    /// The sandbox shuts down after this many seconds with no client connected and no exec running.
    pub idle_timeout_secs: Option<u64>,
    /// `--security-profile`: the seccomp filter and capabilities of the sandbox's processes.
    pub security_profile: SecurityProfile,
    /// `--pids-limit`: most processes and threads in the sandbox at once (`None`:
    /// [`DEFAULT_PIDS_LIMIT`]; `Some(0)`: unlimited). The namespace backend's cgroup enforces it.
    pub pids_limit: Option<u32>,
    /// The stop signal (`--stop-signal`, else the image's StopSignal): `moat stop` sends it to
    /// every running exec before `core.shutdown` ([`crate::lifecycle::stop_signal`]). `None`:
    /// `core.shutdown` alone (the agent SIGTERMs every process).
    pub stop_signal: Option<String>,
    /// `--shell PATH`: the shell [`crate::api::Sandbox::shell`] runs scripts with (`None`:
    /// [`DEFAULT_SHELL`]).
    pub shell: Option<String>,
    /// `--label KEY=VALUE`: the caller's tags, for listing by label; the sandbox never sees
    /// them.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--network`, `--allow`, `--deny`, `-p`.
    pub network: crate::network::NetworkConfig,
    /// Changes to the root before boot ([`crate::patches`]).
    pub patches: Vec<crate::patches::Patch>,
    /// `moat create --ephemeral`: the named sandbox's directory and state are removed when it
    /// ends (stopped, killed, crashed, or a time limit), so nothing of it is left to list or
    /// start again.
    pub ephemeral: bool,
}

/// The shell of a sandbox that names none.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// The pids limit of a sandbox that sets none: room for big parallel builds, far from what a
/// fork bomb needs to hurt the host.
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;

/// An option value that cannot be used; the message names the option and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {value:?}: {expected}")]
pub struct BadValue {
    /// The option, e.g. `--rlimit`.
    pub option: &'static str,
    /// What the user gave.
    pub value: String,
    /// What it should look like, or why it is refused.
    pub expected: &'static str,
}

fn bad(option: &'static str, value: &str, expected: &'static str) -> BadValue {
    BadValue { option, value: value.to_owned(), expected }
}

/// An absolute path with no `..` component and no NUL, as a guest path must be.
fn guest_path_ok(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\0')
        && !Path::new(path).components().any(|c| c == std::path::Component::ParentDir)
}

/// `-v SOURCE:GUEST[:OPTIONS]`. SOURCE is a host path when it contains `/` or starts with `.`
/// or `~`, and otherwise the name of a volume ([`crate::store::volumes`]); OPTIONS is a
/// comma-separated list of `ro`, `rw`, `noexec`, `nosuid`, `nodev`. The host path (or the
/// volume) is resolved when the sandbox is created ([`SandboxConfig::resolve`]).
pub fn parse_volume(value: &str) -> Result<Volume, BadValue> {
    const EXPECTED: &str = "expected HOST:GUEST or NAME:GUEST with an absolute GUEST path, \
        optionally :OPTIONS (ro, rw, noexec, nosuid, nodev, comma-separated)";
    let mut volume = Volume::default();
    let spec = match value.rsplit_once(':') {
        Some((rest, options)) if !options.starts_with('/') => {
            for option in options.split(',') {
                match option {
                    "ro" => volume.readonly = true,
                    "rw" => volume.readonly = false,
                    "noexec" => volume.noexec = true,
                    "nosuid" => volume.nosuid = true,
                    "nodev" => volume.nodev = true,
                    _ => return Err(bad("-v", value, EXPECTED)),
                }
            }
            rest
        }
        _ => value,
    };
    let (source, guest) = spec.split_once(':').ok_or_else(|| bad("-v", value, EXPECTED))?;
    if source.is_empty() || !guest_path_ok(guest) || guest == "/" {
        return Err(bad("-v", value, EXPECTED));
    }
    if !is_host_path(source) {
        crate::store::volumes::validate_name(source)
            .map_err(|_| bad("-v", value, "a volume NAME must follow the sandbox name rules"))?;
        volume.name = Some(source.to_owned());
    }
    volume.host = PathBuf::from(source);
    volume.guest = guest.to_owned();
    Ok(volume)
}

/// Whether a `-v` source names a host path rather than a volume.
fn is_host_path(source: &str) -> bool {
    source.contains('/') || source.starts_with('.') || source.starts_with('~')
}

/// `--tmpfs PATH[:SIZE_MIB]`.
pub fn parse_tmpfs(value: &str) -> Result<Tmpfs, BadValue> {
    const EXPECTED: &str = "expected an absolute PATH, optionally :SIZE in MiB";
    let (path, size_mib) = match value.rsplit_once(':') {
        Some((path, size)) => {
            let size: u32 = size.parse().map_err(|_| bad("--tmpfs", value, EXPECTED))?;
            if size == 0 {
                return Err(bad("--tmpfs", value, "a size of 0 MiB holds nothing"));
            }
            (path, Some(size))
        }
        None => (value, None),
    };
    if !guest_path_ok(path) || path == "/" {
        return Err(bad("--tmpfs", value, EXPECTED));
    }
    Ok(Tmpfs { path: path.to_owned(), size_mib })
}

/// `--script NAME=BODY`.
pub fn parse_script(value: &str) -> Result<Script, BadValue> {
    let (name, body) =
        value.split_once('=').ok_or_else(|| bad("--script", value, "expected NAME=BODY"))?;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_SCRIPT_NAME_BYTES
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if !name_ok {
        return Err(bad("--script", value, "NAME must be one file name (no '/')"));
    }
    if body.len() > MAX_SCRIPT_BODY_BYTES {
        return Err(bad("--script", name, "BODY is larger than 1 MiB"));
    }
    Ok(Script { name: name.to_owned(), body: body.to_owned() })
}

fn rlimit_value(text: &str) -> Option<u64> {
    match text {
        "unlimited" | "inf" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// `--rlimit RESOURCE=SOFT[:HARD]` (values are numbers or `unlimited`; HARD defaults to SOFT).
pub fn parse_rlimit(value: &str) -> Result<Rlimit, BadValue> {
    const EXPECTED: &str = "expected RESOURCE=SOFT[:HARD], e.g. nofile=1024:4096";
    let (name, limits) = value.split_once('=').ok_or_else(|| bad("--rlimit", value, EXPECTED))?;
    let resource = RLIMIT_NAMES.iter().find(|known| **known == name).ok_or_else(|| {
        bad("--rlimit", value, "unknown resource (see setrlimit(2): nofile, nproc, as, cpu, ...)")
    })?;
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (rlimit_value(soft), rlimit_value(hard)),
        None => (rlimit_value(limits), rlimit_value(limits)),
    };
    let (Some(soft), Some(hard)) = (soft, hard) else {
        return Err(bad("--rlimit", value, EXPECTED));
    };
    if soft > hard {
        return Err(bad("--rlimit", value, "the soft limit is above the hard limit"));
    }
    Ok(Rlimit { resource: (*resource).to_owned(), soft, hard })
}

/// A duration: seconds, or a number with `s`, `m` or `h` (`90`, `90s`, `15m`, `2h`). Zero is refused.
pub fn parse_duration(option: &'static str, value: &str) -> Result<u64, BadValue> {
    const EXPECTED: &str = "expected a positive duration: N, Ns, Nm or Nh";
    let (number, scale) = match value.as_bytes().last() {
        Some(b's') => (&value[..value.len() - 1], 1),
        Some(b'm') => (&value[..value.len() - 1], 60),
        Some(b'h') => (&value[..value.len() - 1], 3600),
        _ => (value, 1),
    };
    let n: u64 = number.parse().map_err(|_| bad(option, value, EXPECTED))?;
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(secs),
        _ => Err(bad(option, value, EXPECTED)),
    }
}

/// `--cpus N` (1..=255).
pub fn parse_cpus(value: &str) -> Result<u8, BadValue> {
    match value.parse::<u8>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("--cpus", value, "expected a whole number of CPUs, 1 to 255")),
    }
}

/// `--memory MiB` (at least 64).
pub fn parse_memory(value: &str) -> Result<u32, BadValue> {
    match value.parse::<u32>() {
        Ok(n) if n >= 64 => Ok(n),
        _ => Err(bad("--memory", value, "expected a size in MiB, at least 64")),
    }
}

/// `--pids-limit N` (0: unlimited; otherwise at least 8, enough for a shell and a pipeline).
pub fn parse_pids_limit(value: &str) -> Result<u32, BadValue> {
    match value.parse::<u32>() {
        Ok(n) if n == 0 || n >= 8 => Ok(n),
        _ => Err(bad("--pids-limit", value, "expected a number of processes, 0 or at least 8")),
    }
}

/// `--security-profile default|restricted|none`.
pub fn parse_security_profile(value: &str) -> Result<SecurityProfile, BadValue> {
    SecurityProfile::parse(value)
        .ok_or_else(|| bad("--security-profile", value, "expected default, restricted or none"))
}

/// `--label KEY=VALUE` (a non-empty KEY without `=`; VALUE may be empty).
pub fn parse_label(value: &str) -> Result<(String, String), BadValue> {
    match value.split_once('=') {
        Some((key, label)) if !key.is_empty() => Ok((key.to_owned(), label.to_owned())),
        _ => Err(bad("--label", value, "expected KEY=VALUE")),
    }
}

/// Whether `name` is a valid hostname: 1..=64 bytes of letters, digits, `-` and `.`, not
/// starting or ending with `-` or `.`.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// `--hostname NAME`.
pub fn parse_hostname(value: &str) -> Result<String, BadValue> {
    if is_valid_hostname(value) {
        Ok(value.to_owned())
    } else {
        Err(bad("--hostname", value, "expected 1-64 letters, digits, '-' or '.'"))
    }
}

/// How the backend names a shared directory in the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareNaming {
    /// Namespace backend: the tag is the host path, bind-mounted before the agent's pivot.
    HostPath,
    /// VM backend: virtiofs tags `moat-share-N`, in [`SandboxConfig::shares`] order.
    VirtioFsTag,
    /// Namespace backend with an unprivileged id map: the idmapped bind `__ns-prepare` makes,
    /// [`crate::backend::namespace::mapped::share_tag`], in the same order.
    Staged,
}

/// A host directory the backend must make available under `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The bootstrap's tag for it.
    pub tag: String,
    /// The host directory.
    pub host: PathBuf,
    /// Where it is mounted in the sandbox.
    pub guest: String,
    /// Read-only.
    pub readonly: bool,
    /// `noexec`, `nosuid`, `nodev` (agentd applies them with `readonly`).
    pub noexec: bool,
    /// See `noexec`.
    pub nosuid: bool,
    /// See `noexec`.
    pub nodev: bool,
}

impl SandboxConfig {
    /// Resolves volume host paths (they must be existing directories) and checks that no two
    /// mounts claim the same guest path. Run by the CLI before the sandbox is created.
    pub fn resolve(&mut self) -> Result<(), crate::error::RuntimeError> {
        use crate::error::RuntimeError;
        for volume in &mut self.volumes {
            if let Some(name) = &volume.name {
                if !volume.host.is_absolute() {
                    return Err(RuntimeError::Config(format!(
                        "volume {name:?} was not looked up in a moat home"
                    )));
                }
            }
            let resolved = volume
                .host
                .canonicalize()
                .map_err(RuntimeError::io("open -v host directory", &volume.host))?;
            if !resolved.is_dir() {
                return Err(RuntimeError::Io {
                    what: "open -v host directory",
                    path: resolved,
                    source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
                });
            }
            volume.host = resolved;
        }
        crate::patches::resolve(&mut self.patches)?;
        let mut guests: Vec<&str> = self.volumes.iter().map(|v| v.guest.as_str()).collect();
        guests.extend(self.tmpfs.iter().map(|t| t.path.as_str()));
        if !self.scripts.is_empty() {
            guests.push(SCRIPTS_GUEST_DIR);
        }
        let mut sorted = guests.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(RuntimeError::Config(format!("two mounts at {}", pair[0])));
        }
        let mut names: Vec<&str> = self.scripts.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(RuntimeError::Config(format!("two scripts named {}", pair[0])));
        }
        Ok(())
    }

    /// The hostname the sandbox gets.
    pub fn hostname_for(&self, sandbox_name: &str) -> String {
        match &self.hostname {
            Some(hostname) => hostname.clone(),
            None if is_valid_hostname(sandbox_name) => sandbox_name.to_owned(),
            None => FALLBACK_HOSTNAME.to_owned(),
        }
    }

    /// Writes the named scripts into `dir` (created, mode 0755 files). Returns whether there
    /// were any.
    pub fn write_scripts(&self, dir: &Path) -> Result<bool, crate::error::RuntimeError> {
        use std::os::unix::fs::PermissionsExt;

        use crate::error::RuntimeError;
        if self.scripts.is_empty() {
            return Ok(false);
        }
        std::fs::create_dir_all(dir).map_err(RuntimeError::io("create scripts directory", dir))?;
        for script in &self.scripts {
            let path = dir.join(&script.name);
            std::fs::write(&path, &script.body).map_err(RuntimeError::io("write script", &path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(RuntimeError::io("make script executable", &path))?;
        }
        Ok(true)
    }

    /// The host directories the backend must share, volumes first, then the scripts directory
    /// when there are scripts, then the patch bundle (its sibling `patches`, which agentd
    /// applies and unmounts) when there are patches.
    pub fn shares(&self, scripts_dir: &Path, naming: ShareNaming) -> Vec<Share> {
        let mut dirs: Vec<Volume> = self.volumes.clone();
        if !self.scripts.is_empty() {
            dirs.push(Volume {
                host: scripts_dir.to_owned(),
                guest: SCRIPTS_GUEST_DIR.to_owned(),
                readonly: true,
                ..Volume::default()
            });
        }
        if !self.patches.is_empty() {
            dirs.push(Volume {
                host: scripts_dir.with_file_name("patches"),
                guest: crate::patches::PATCHES_GUEST_DIR.to_owned(),
                readonly: true,
                ..Volume::default()
            });
        }
        dirs.into_iter()
            .enumerate()
            .map(|(i, volume)| Share {
                tag: match naming {
                    ShareNaming::HostPath => volume.host.to_string_lossy().into_owned(),
                    ShareNaming::VirtioFsTag => format!("moat-share-{i}"),
                    ShareNaming::Staged => crate::backend::namespace::mapped::share_tag(i),
                },
                host: volume.host,
                guest: volume.guest,
                readonly: volume.readonly,
                noexec: volume.noexec,
                nosuid: volume.nosuid,
                nodev: volume.nodev,
            })
            .collect()
    }

    /// The agent's `core.bootstrap` for a sandbox named `name`.
    pub fn bootstrap(&self, name: &str, shares: &[Share]) -> GuestBootstrap {
        GuestBootstrap {
            hostname: Some(self.hostname_for(name)),
            dir_mounts: shares
                .iter()
                .map(|share| DirMount {
                    tag: share.tag.clone(),
                    guest_path: share.guest.clone(),
                    flags: MountFlags {
                        readonly: share.readonly,
                        noexec: share.noexec,
                        nosuid: share.nosuid,
                        nodev: share.nodev,
                    },
                })
                .collect(),
            tmpfs_mounts: self
                .tmpfs
                .iter()
                .map(|t| TmpfsMount {
                    path: t.path.clone(),
                    size_mib: t.size_mib,
                    mode: None,
                    flags: MountFlags { nodev: true, nosuid: true, ..MountFlags::default() },
                })
                .collect(),
            rlimits: self
                .rlimits
                .iter()
                .map(|r| ExecRlimit { resource: r.resource.clone(), soft: r.soft, hard: r.hard })
                .collect(),
            user: self.user.clone(),
            default_cwd: self.cwd.clone(),
            default_env: self
                .env
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| EnvVar { key: key.to_owned(), value: value.to_owned() })
                .collect(),
            exec_limits: Some(ExecLimits {
                output_chunk_size: crate::limits::EXEC_OUTPUT_CHUNK_BYTES,
                output_limit: crate::limits::EXEC_OUTPUT_WINDOW_BYTES,
                ..ExecLimits::default()
            }),
            ..GuestBootstrap::default()
        }
    }

    /// The pids limit to enforce: `None` when unlimited (`--pids-limit 0`).
    pub fn effective_pids_limit(&self) -> Option<u32> {
        match self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT) {
            0 => None,
            n => Some(n),
        }
    }

    /// `--max-duration` as a [`Duration`].
    pub fn max_duration(&self) -> Option<Duration> {
        self.max_duration_secs.map(Duration::from_secs)
    }

    /// `--idle-timeout` as a [`Duration`].
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout_secs.map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_takes_an_optional_mode() {
        assert_eq!(
            parse_volume("/srv/data:/data:ro").unwrap(),
            Volume {
                host: "/srv/data".into(),
                guest: "/data".into(),
                readonly: true,
                ..Volume::default()
            }
        );
        assert!(!parse_volume("./d:/data").unwrap().readonly);
        assert!(!parse_volume("/a:/b:rw").unwrap().readonly);
    }

    #[test]
    fn a_bare_name_is_a_named_volume_and_options_combine() {
        let named = parse_volume("cache:/c:ro,noexec,nosuid,nodev").unwrap();
        assert_eq!(named.name.as_deref(), Some("cache"));
        assert!(named.readonly && named.noexec && named.nosuid && named.nodev);
        for path in ["./cache:/c", "/srv/cache:/c", "~/c:/c", ".c:/c"] {
            assert_eq!(parse_volume(path).unwrap().name, None, "{path}");
        }
        for bad in ["cache:/c:rx", "cache:/c:ro,", "-x:/c", "cache:/c:noexec,bogus"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_guest_path_must_be_absolute_and_not_the_root() {
        for bad in ["/a:data", "/a:/", "/a", ":/data", "/a:/x/../etc"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_takes_an_optional_size() {
        assert_eq!(
            parse_tmpfs("/scratch").unwrap(),
            Tmpfs { path: "/scratch".into(), size_mib: None }
        );
        assert_eq!(parse_tmpfs("/s:64").unwrap().size_mib, Some(64));
        for bad in ["scratch", "/", "/s:0", "/s:lots"] {
            assert!(parse_tmpfs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_name_is_one_path_component() {
        let script = parse_script("hello=#!/bin/sh\necho hi=there").unwrap();
        assert_eq!(
            (script.name.as_str(), script.body.as_str()),
            ("hello", "#!/bin/sh\necho hi=there")
        );
        for bad in ["a/b=x", "=x", "..=x", "noequals"] {
            assert!(parse_script(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rlimit_parses_soft_hard_and_unlimited() {
        assert_eq!(
            parse_rlimit("nofile=1024:4096").unwrap(),
            Rlimit { resource: "nofile".into(), soft: 1024, hard: 4096 }
        );
        assert_eq!(
            parse_rlimit("nproc=64").unwrap(),
            Rlimit { resource: "nproc".into(), soft: 64, hard: 64 }
        );
        assert_eq!(parse_rlimit("as=unlimited").unwrap().hard, u64::MAX);
        for bad in ["nofiles=1", "nofile", "nofile=x", "nofile=10:5"] {
            assert!(parse_rlimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("--max-duration", "90").unwrap(), 90);
        assert_eq!(parse_duration("--max-duration", "90s").unwrap(), 90);
        assert_eq!(parse_duration("--max-duration", "15m").unwrap(), 900);
        assert_eq!(parse_duration("--max-duration", "2h").unwrap(), 7200);
        for bad in ["0", "-1", "m", "1d", "", "99999999999999999999h"] {
            assert!(parse_duration("--idle-timeout", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(parse_cpus("2").unwrap(), 2);
        assert_eq!(parse_pids_limit("64").unwrap(), 64);
        assert_eq!(parse_pids_limit("0").unwrap(), 0);
        assert!(parse_pids_limit("3").is_err());
        assert!(parse_pids_limit("-1").is_err());
        assert_eq!(parse_security_profile("none").unwrap(), SecurityProfile::None);
        assert!(parse_security_profile("off").is_err());
        assert!(parse_cpus("0").is_err() && parse_cpus("256").is_err());
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert!(parse_memory("8").is_err() && parse_memory("1G").is_err());
    }

    #[test]
    fn hostname_rules() {
        assert!(is_valid_hostname("box-1.local"));
        for bad in ["", "-x", "x.", "a b", "é", &"a".repeat(65)] {
            assert!(!is_valid_hostname(bad), "{bad}");
        }
        let config = SandboxConfig::default();
        assert_eq!(config.hostname_for("box"), "box");
        assert_eq!(config.hostname_for("run-1_x"), FALLBACK_HOSTNAME);
    }

    #[test]
    fn bootstrap_carries_every_setting() {
        let config = SandboxConfig {
            hostname: Some("h".into()),
            env: vec!["A=1".into(), "B=x=y".into()],
            cwd: Some("/w".into()),
            user: Some("nobody".into()),
            volumes: vec![Volume {
                host: "/srv".into(),
                guest: "/data".into(),
                readonly: true,
                ..Volume::default()
            }],
            tmpfs: vec![Tmpfs { path: "/scratch".into(), size_mib: Some(8) }],
            scripts: vec![Script { name: "s".into(), body: "x".into() }],
            rlimits: vec![Rlimit { resource: "nofile".into(), soft: 10, hard: 20 }],
            ..SandboxConfig::default()
        };
        let shares = config.shares(Path::new("/sb/scripts"), ShareNaming::HostPath);
        let boot = config.bootstrap("box", &shares);
        assert_eq!(boot.hostname.as_deref(), Some("h"));
        assert_eq!(boot.dir_mounts.len(), 2);
        assert_eq!(boot.dir_mounts[0].tag, "/srv");
        assert!(boot.dir_mounts[0].flags.readonly);
        assert_eq!(boot.dir_mounts[1].guest_path, SCRIPTS_GUEST_DIR);
        assert_eq!(boot.tmpfs_mounts[0].size_mib, Some(8));
        assert_eq!(boot.rlimits[0].resource, "nofile");
        assert_eq!(boot.default_env[1], EnvVar { key: "B".into(), value: "x=y".into() });
        assert_eq!(
            (boot.user.as_deref(), boot.default_cwd.as_deref()),
            (Some("nobody"), Some("/w"))
        );
        let vm = config.shares(Path::new("/sb/scripts"), ShareNaming::VirtioFsTag);
        assert_eq!((vm[0].tag.as_str(), vm[1].tag.as_str()), ("moat-share-0", "moat-share-1"));
    }

    #[test]
    fn two_mounts_at_one_path_are_refused() {
        let mut config = SandboxConfig {
            tmpfs: vec![
                Tmpfs { path: "/x".into(), size_mib: None },
                Tmpfs { path: "/x".into(), size_mib: None },
            ],
            ..SandboxConfig::default()
        };
        assert!(config.resolve().unwrap_err().to_string().contains("two mounts at /x"));
    }

    #[test]
    fn old_spec_files_without_a_config_still_parse() {
        let config: SandboxConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, SandboxConfig::default());
    }
}
