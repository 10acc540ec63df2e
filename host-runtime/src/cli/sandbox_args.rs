//! The flags shared by several subcommands, each group one flattened clap struct:
//! [`SandboxArgs`] (what a sandbox is made of: `run` and `create`), [`ExecArgs`] (`-e`, `-w`,
//! `-u`: a command's environment, or with `create` the defaults of every exec). They convert into
//! the library's [`crate::api::config`] types; a new sandbox flag is one field here and one line
//! in [`SandboxArgs::into_parts`].

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::api::config::{ImageSource, Isolation, RootSource};
use crate::config::{self, BadValue, Rlimit, SandboxConfig, Script, Tmpfs, Volume};
use crate::network::parse::{self as net, NetworkUsageError};
use crate::network::{Action, NetworkMode, PublishedPort, Rule};
use crate::security::SecurityProfile;

/// `--isolation`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// A VM when the host can boot one, else the namespace backend with a warning.
    Auto,
    /// The namespace backend.
    Namespace,
    /// A microVM or nothing.
    Vm,
}

impl From<IsolationArg> for Isolation {
    fn from(arg: IsolationArg) -> Isolation {
        match arg {
            IsolationArg::Auto => Isolation::Auto,
            IsolationArg::Namespace => Isolation::Namespace,
            IsolationArg::Vm => Isolation::Vm,
        }
    }
}

/// What a sandbox is made of: its root, backend, mounts and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct SandboxArgs {
    /// Root filesystem: a directory (its read-only lower layer), or `host` (the host's system
    /// dirs, read-only; the default).
    #[arg(long, value_name = "DIR|host", conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// An OCI image as the root (pulled when not stored; its Env, WorkingDir, User, Entrypoint
    /// and Cmd are the defaults); namespace backend only.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Credentials for pulling --image (else ~/.docker/config.json).
    #[arg(long, value_name = "USER:PASS", requires = "image")]
    pub registry_auth: Option<String>,
    /// Backend (auto: a VM when the host can boot one).
    #[arg(long, value_enum, value_name = "ISOLATION")]
    pub isolation: Option<IsolationArg>,
    /// Hostname (default: the sandbox name).
    #[arg(long, value_name = "NAME", value_parser = config::parse_hostname)]
    pub hostname: Option<String>,
    /// Share a host directory (SRC with a '/' or a leading '.' or '~') or a named volume;
    /// OPTS: ro,rw,noexec,nosuid,nodev.
    #[arg(short = 'v', long = "volume", value_name = "SRC:GUEST[:OPTS]", value_parser = config::parse_volume)]
    pub volumes: Vec<Volume>,
    /// A tmpfs mount.
    #[arg(long, value_name = "PATH[:MiB]", value_parser = config::parse_tmpfs)]
    pub tmpfs: Vec<Tmpfs>,
    /// Change the root before boot (never the lower): text:PATH=TEXT, append:PATH=TEXT,
    /// copy-file:HOST=PATH, copy-dir:HOST=PATH, symlink:PATH=TARGET, mkdir:PATH or PATH:MODE, rm:PATH.
    #[arg(long = "patch", value_name = "KIND:ARGS", value_parser = crate::patches::parse_patch)]
    pub patches: Vec<crate::patches::Patch>,
    /// An executable at /.msb/scripts/NAME (on PATH).
    #[arg(long = "script", value_name = "NAME=BODY", value_parser = config::parse_script)]
    pub scripts: Vec<Script>,
    /// A sandbox-wide rlimit (nofile, nproc, as, cpu, ...).
    #[arg(long = "rlimit", value_name = "RESOURCE=SOFT[:HARD]", value_parser = config::parse_rlimit)]
    pub rlimits: Vec<Rlimit>,
    /// CPUs: the VM's size, or the namespace backend's cgroup quota.
    #[arg(long, value_name = "N", value_parser = config::parse_cpus)]
    pub cpus: Option<u8>,
    /// Memory in MiB: the VM's size, or the namespace backend's cgroup limit.
    #[arg(long, value_name = "MiB", value_parser = config::parse_memory)]
    pub memory: Option<u32>,
    /// Most processes at once (default 4096; 0: unlimited; namespace backend, through its cgroup).
    #[arg(long, value_name = "N", value_parser = config::parse_pids_limit)]
    pub pids_limit: Option<u32>,
    /// default (seccomp filter and capabilities like docker's), restricted, or none.
    #[arg(long, value_name = "PROFILE", value_parser = config::parse_security_profile)]
    pub security_profile: Option<SecurityProfile>,
    /// Shut down this long after start (N, Ns, Nm, Nh).
    #[arg(long, value_name = "D", value_parser = max_duration)]
    pub max_duration: Option<u64>,
    /// Shut down after this long with no client connected.
    #[arg(long, value_name = "D", value_parser = idle_timeout)]
    pub idle_timeout: Option<u64>,
    /// The shell the library's `Sandbox::shell` runs scripts with (default /bin/sh).
    #[arg(long, value_name = "PATH")]
    pub shell: Option<String>,
    /// The signal `moat stop` sends every running exec before shutting down (a name such as
    /// SIGINT or USR1, or a number), instead of the image's StopSignal.
    #[arg(long, value_name = "SIG")]
    pub stop_signal: Option<crate::lifecycle::stop_signal::StopSignal>,
    /// A label, for `moat ls --filter label=KEY[=VALUE]`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = config::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Guest network: none (loopback only, the default), public or all; namespace backend, as
    /// root (docs/NETWORK.md).
    #[arg(long, value_name = "none|public|all", value_parser = net::parse_mode)]
    pub network: Option<NetworkMode>,
    /// Allow DEST (CIDR, IP, NAME or *.SUFFIX, with :PORT[-PORT] and /tcp|/udp); rules are
    /// checked in the order given, --allow and --deny together, first match wins.
    #[arg(long, value_name = "DEST", value_parser = allow_rule)]
    pub allow: Vec<Rule>,
    /// Deny DEST (as --allow).
    #[arg(long, value_name = "DEST", value_parser = deny_rule)]
    pub deny: Vec<Rule>,
    /// Publish a guest port on the host (default address 127.0.0.1).
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HPORT:GPORT[/udp]", value_parser = net::parse_publish)]
    pub publish: Vec<PublishedPort>,
    /// --allow and --deny merged in command-line order (filled by `cli::parse` from clap's
    /// argument indices; empty when built by hand, and then allows come before denies).
    #[arg(skip)]
    pub rules: Vec<Rule>,
}

fn allow_rule(value: &str) -> Result<Rule, NetworkUsageError> {
    net::parse_rule(Action::Allow, value)
}

fn deny_rule(value: &str) -> Result<Rule, NetworkUsageError> {
    net::parse_rule(Action::Deny, value)
}

fn max_duration(value: &str) -> Result<u64, BadValue> {
    config::parse_duration("--max-duration", value)
}

fn idle_timeout(value: &str) -> Result<u64, BadValue> {
    config::parse_duration("--idle-timeout", value)
}

impl SandboxArgs {
    /// The root, backend and configuration these flags describe.
    pub fn into_parts(self) -> (RootSource, Isolation, SandboxConfig) {
        let root = match (self.image, self.rootfs) {
            (Some(reference), _) => RootSource::Image(ImageSource {
                registry_auth: self.registry_auth,
                ..ImageSource::new(reference)
            }),
            (None, Some(dir)) if dir.as_os_str() == "host" => RootSource::Host,
            (None, Some(dir)) => RootSource::Dir(dir),
            (None, None) => RootSource::Host,
        };
        let config = SandboxConfig {
            hostname: self.hostname,
            volumes: self.volumes,
            tmpfs: self.tmpfs,
            scripts: self.scripts,
            rlimits: self.rlimits,
            vcpus: self.cpus,
            memory_mib: self.memory,
            pids_limit: self.pids_limit,
            security_profile: self.security_profile.unwrap_or_default(),
            max_duration_secs: self.max_duration,
            idle_timeout_secs: self.idle_timeout,
            labels: self.labels.into_iter().collect(),
            shell: self.shell,
            stop_signal: self.stop_signal.map(|signal| signal.to_string()),
            patches: self.patches,
            ..SandboxConfig::default()
        };
        let mut config = config;
        config.network.mode = self.network.unwrap_or_default();
        config.network.rules = if self.rules.is_empty() {
            self.allow.into_iter().chain(self.deny).collect()
        } else {
            self.rules
        };
        config.network.publish = self.publish;
        (root, self.isolation.map_or(Isolation::Auto, Isolation::from), config)
    }
}

/// A command's environment, working directory and user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ExecArgs {
    /// An environment variable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = env_pair)]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub cwd: Option<String>,
    /// The user inside the sandbox (USER, UID, USER:GROUP or UID:GID).
    #[arg(short, long)]
    pub user: Option<String>,
}

/// `-e KEY=VALUE`: a `=` after a non-empty key.
fn env_pair(value: &str) -> Result<String, String> {
    if !value.contains('=') || value.starts_with('=') {
        return Err(format!("-e {value:?}: expected KEY=VALUE"));
    }
    Ok(value.to_owned())
}
