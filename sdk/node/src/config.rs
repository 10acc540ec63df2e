//! `SandboxConfig`, the object `Sandbox.create` takes, and its translation into the library's
//! `SandboxOptions`. Every field moat cannot honour yet is refused by name
//! ([`NodeError::NotSupported`]); none is dropped silently.

use std::collections::HashMap;
use std::path::PathBuf;

use moat_runtime::api::config::{ImageSource, Isolation, RootSource, SandboxOptions};
use moat_runtime::config::{SandboxConfig as LibConfig, Script, Tmpfs, Volume};
use napi_derive::napi;

use crate::error::{NodeError, Result};

/// How a guest path is mounted (`volumes` values).
#[napi(object)]
pub struct MountConfig {
    /// A host directory shared into the sandbox.
    pub bind: Option<String>,
    /// A named volume (not supported by moat yet).
    pub named: Option<String>,
    /// A memory-backed tmpfs.
    pub tmpfs: Option<bool>,
    /// Mounted read-only (bind mounts).
    pub readonly: Option<bool>,
    /// Size cap in MiB (tmpfs).
    pub size_mib: Option<u32>,
}

/// Credentials for pulling the image.
#[napi(object)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// What `Sandbox.create` takes: microsandbox's `SandboxConfig`, plus moat's `isolation`.
#[napi(object)]
pub struct SandboxConfig {
    /// The sandbox name (required).
    pub name: Option<String>,
    /// The root: an OCI reference, a local root directory path (`/`, `./`, `../`), or `"host"`
    /// (required).
    pub image: Option<String>,
    /// `"namespace"`, `"vm"` or `"auto"` (default): which backend runs the sandbox.
    pub isolation: Option<String>,
    /// Virtual CPUs (VM) or whole-CPU quota (namespace backend).
    pub cpus: Option<u32>,
    /// Memory limit in MiB.
    pub memory_mib: Option<u32>,
    /// Environment of every command.
    pub env: Option<HashMap<String, String>>,
    /// Default working directory of every command.
    pub workdir: Option<String>,
    /// Default user of every command.
    pub user: Option<String>,
    /// Guest hostname.
    pub hostname: Option<String>,
    /// Named scripts, placed in `/.msb/scripts` (on every command's PATH).
    pub scripts: Option<HashMap<String, String>>,
    /// Mounts by guest path.
    pub volumes: Option<HashMap<String, MountConfig>>,
    /// The sandbox shuts down this many seconds after it started.
    pub max_duration_secs: Option<u32>,
    /// The sandbox shuts down after this many idle seconds.
    pub idle_timeout_secs: Option<u32>,
    /// Remove an existing sandbox of the same name first.
    pub replace: Option<bool>,
    /// Registry credentials for the pull.
    pub registry_auth: Option<RegistryAuth>,
    /// `"if-missing"` (default); other policies are not supported by moat yet.
    pub pull_policy: Option<String>,
    /// moat prints no sandbox logs to this process, so `true` changes nothing.
    pub quiet_logs: Option<bool>,
    /// The shell `shell()` and `shellStream()` run scripts with (`SHELL -c SCRIPT`; default
    /// `/bin/sh`).
    pub shell: Option<String>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Array<unknown>")]
    pub patches: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Record<string, number>")]
    pub ports: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "unknown")]
    pub network: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Array<unknown>")]
    pub secrets: Option<serde_json::Value>,
    /// Labels, matched by `Sandbox.listWith({ labels })`.
    pub labels: Option<HashMap<String, String>>,
    /// Removed (directory and record) when it ends: stop, kill, crash or time limit.
    pub ephemeral: Option<bool>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Array<string>")]
    pub entrypoint: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "string")]
    pub log_level: Option<serde_json::Value>,
}

/// A validated config: the library's arguments and what the binding does around the call.
pub(crate) struct CreatePlan {
    /// What `Moat::create` gets.
    pub args: SandboxOptions,
    /// Remove an existing sandbox of that name first.
    pub replace: bool,
}

impl SandboxConfig {
    /// Checks every field and builds the library's arguments.
    pub(crate) fn plan(self) -> Result<CreatePlan> {
        self.refuse_unsupported()?;
        let name = self
            .name
            .ok_or_else(|| NodeError::InvalidArgument("config.name is required".into()))?;
        let image = self.image.ok_or_else(|| {
            NodeError::InvalidArgument(
                "config.image is required: an OCI reference, a root directory path, or \"host\""
                    .into(),
            )
        })?;
        let mut root = root_source(&image)?;
        if let Some(auth) = self.registry_auth {
            match &mut root {
                RootSource::Image(source) => {
                    source.registry_auth = Some(format!("{}:{}", auth.username, auth.password));
                }
                _ => {
                    return Err(NodeError::InvalidArgument(
                        "config.registryAuth applies only to an OCI image".into(),
                    ));
                }
            }
        }
        let isolation = match self.isolation.as_deref() {
            None | Some("auto") => Isolation::Auto,
            Some("namespace") => Isolation::Namespace,
            Some("vm") => Isolation::Vm,
            Some(other) => {
                return Err(NodeError::InvalidArgument(format!(
                    "config.isolation must be \"auto\", \"namespace\" or \"vm\", not {other:?}"
                )));
            }
        };
        let vcpus = match self.cpus {
            None => None,
            Some(n @ 1..=255) => Some(n as u8),
            Some(n) => {
                return Err(NodeError::InvalidArgument(format!(
                    "config.cpus must be 1..=255, not {n}"
                )));
            }
        };
        let mut env: Vec<String> =
            self.env.unwrap_or_default().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        let mut scripts: Vec<Script> = self
            .scripts
            .unwrap_or_default()
            .into_iter()
            .map(|(name, body)| Script { name, body })
            .collect();
        scripts.sort_by(|a, b| a.name.cmp(&b.name));
        let (volumes, tmpfs) = mounts(self.volumes.unwrap_or_default())?;
        let config = LibConfig {
            hostname: self.hostname,
            env,
            cwd: self.workdir,
            user: self.user,
            volumes,
            tmpfs,
            scripts,
            vcpus,
            memory_mib: self.memory_mib,
            max_duration_secs: self.max_duration_secs.map(u64::from),
            idle_timeout_secs: self.idle_timeout_secs.map(u64::from),
            shell: self.shell,
            labels: self.labels.unwrap_or_default().into_iter().collect(),
            ephemeral: self.ephemeral.unwrap_or(false),
            ..LibConfig::default()
        };
        Ok(CreatePlan {
            args: SandboxOptions { name, root, isolation, config },
            replace: self.replace.unwrap_or(false),
        })
    }

    fn refuse_unsupported(&self) -> Result<()> {
        let present = [
            ("patches", self.patches.is_some()),
            ("ports", self.ports.is_some()),
            ("network", self.network.is_some()),
            ("secrets", self.secrets.is_some()),
            ("entrypoint", self.entrypoint.is_some()),
            ("logLevel", self.log_level.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(_, given)| *given) {
            return Err(NodeError::NotSupported(format!("config.{field}")));
        }
        match self.pull_policy.as_deref() {
            None | Some("if-missing") => Ok(()),
            Some(policy @ ("always" | "never")) => {
                Err(NodeError::NotSupported(format!("config.pullPolicy {policy:?}")))
            }
            Some(other) => Err(NodeError::InvalidArgument(format!(
                "config.pullPolicy must be \"if-missing\", \"always\" or \"never\", not {other:?}"
            ))),
        }
    }
}

/// `image`: `"host"`, a path (`/`, `./`, `../`, made absolute), or an OCI reference.
fn root_source(image: &str) -> Result<RootSource> {
    if image == "host" {
        return Ok(RootSource::Host);
    }
    if image.is_empty() {
        return Err(NodeError::InvalidArgument("config.image is empty".into()));
    }
    let is_path = image.starts_with('/') || image.starts_with("./") || image.starts_with("../");
    if !is_path {
        return Ok(RootSource::Image(ImageSource::new(image)));
    }
    if [".qcow2", ".raw", ".vmdk"].iter().any(|ext| image.ends_with(ext)) {
        return Err(NodeError::NotSupported(format!("disk image roots ({image})")));
    }
    let path = std::fs::canonicalize(PathBuf::from(image)).map_err(|err| {
        NodeError::InvalidArgument(format!("config.image {image:?} is not a usable path: {err}"))
    })?;
    if !path.is_dir() {
        return Err(NodeError::InvalidArgument(format!(
            "config.image {image:?} is not a directory"
        )));
    }
    Ok(RootSource::Dir(path))
}

/// `volumes`: bind mounts and tmpfs mounts by guest path.
fn mounts(volumes: HashMap<String, MountConfig>) -> Result<(Vec<Volume>, Vec<Tmpfs>)> {
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut sorted: Vec<_> = volumes.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (guest, mount) in sorted {
        if mount.named.is_some() {
            return Err(NodeError::NotSupported(format!(
                "named volumes (config.volumes[{guest:?}])"
            )));
        }
        match (mount.bind, mount.tmpfs.unwrap_or(false)) {
            (Some(host), false) => {
                if mount.size_mib.is_some() {
                    return Err(NodeError::InvalidArgument(format!(
                        "config.volumes[{guest:?}].sizeMib applies only to tmpfs"
                    )));
                }
                binds.push(Volume {
                    host: PathBuf::from(host),
                    guest,
                    readonly: mount.readonly.unwrap_or(false),
                    name: None,
                    noexec: false,
                    nosuid: false,
                    nodev: false,
                });
            }
            (None, true) => {
                if mount.readonly == Some(true) {
                    return Err(NodeError::NotSupported(format!(
                        "read-only tmpfs (config.volumes[{guest:?}])"
                    )));
                }
                tmpfs.push(Tmpfs { path: guest, size_mib: mount.size_mib });
            }
            _ => {
                return Err(NodeError::InvalidArgument(format!(
                    "config.volumes[{guest:?}] needs exactly one of bind, named, tmpfs"
                )));
            }
        }
    }
    Ok((binds, tmpfs))
}
