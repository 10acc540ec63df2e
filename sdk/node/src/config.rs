//! `SandboxConfig`, the object `Sandbox.create` takes, and its translation into the library's
//! `SandboxOptions`. Every field moat cannot honour yet is refused by name
//! ([`NodeError::NotSupported`]); none is dropped silently. (`index.js` refuses keys no
//! struct here declares, which napi would otherwise skip.)
//!
//! ```text
//!  volumes { GUEST: { bind | named | tmpfs } } ─► config::Volume (name: Some for named) / Tmpfs
//!  patches [ { kind, path, content, ... } ]    ─► patches::Patch (in order)
//!  network { policy, rules, defaultAction,     ─► network::NetworkConfig { mode, rules, .. }
//!            blockDomains, blockDomainSuffixes }    (see network.rs)
//!  ports { "HOSTPORT": GUESTPORT }             ─► NetworkConfig.publish (127.0.0.1, TCP)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use moat_runtime::api::StopSignal;
use moat_runtime::api::config::{ImageSource, Isolation, RootSource, SandboxOptions};
use moat_runtime::config::{SandboxConfig as LibConfig, Script, Tmpfs, Volume};
use moat_runtime::patches::Patch;
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;

use crate::error::{NodeError, Result};
use crate::network::{NetworkConfig, network_config};

/// How a guest path is mounted (`volumes` values): exactly one of `bind`, `named`, `tmpfs`.
#[napi(object)]
pub struct MountConfig {
    /// A host directory shared into the sandbox (a relative path is taken from node's cwd).
    pub bind: Option<String>,
    /// A named volume of the moat home (`Volume.create`); it must exist.
    pub named: Option<String>,
    /// A memory-backed tmpfs.
    pub tmpfs: Option<bool>,
    /// Mounted read-only (bind and named mounts).
    pub readonly: Option<bool>,
    /// Size cap in MiB (tmpfs).
    pub size_mib: Option<u32>,
    /// No program on the mount may be executed (bind and named mounts).
    pub noexec: Option<bool>,
    /// setuid and setgid bits on the mount are ignored (bind and named mounts).
    pub nosuid: Option<bool>,
    /// Device files on the mount are ignored (bind and named mounts).
    pub nodev: Option<bool>,
}

/// One change to the root before boot (`patches` items; `Patch.text(...)` and the other
/// factories make them). `kind` is `"text"`, `"file"`, `"copyFile"`, `"copyDir"`,
/// `"symlink"`, `"mkdir"`, `"remove"` or `"append"`; a field the kind does not use is refused.
#[napi(object)]
pub struct PatchConfig {
    /// Which change.
    pub kind: String,
    /// The guest path (`text`, `file`, `mkdir`, `remove`, `append`; `symlink`: the link).
    pub path: Option<String>,
    /// The content: text (`text`, `append`), or text or bytes (`file`).
    #[napi(ts_type = "string | Buffer")]
    pub content: Option<Either<String, Buffer>>,
    /// The content of a `file` patch as byte values.
    pub content_bytes: Option<Vec<u32>>,
    /// The host path copied (`copyFile`, `copyDir`).
    pub src: Option<String>,
    /// The guest path copied to (`copyFile`, `copyDir`).
    pub dst: Option<String>,
    /// What a `symlink` points to.
    pub target: Option<String>,
    /// The guest path of a `symlink`.
    pub link: Option<String>,
    /// Permission bits (`text`, `file`, `copyFile`, `mkdir`), e.g. `0o644`.
    pub mode: Option<u32>,
    /// Replace what the root has at that path (`text`, `file`, `copyFile`, `copyDir`,
    /// `symlink`; default false: a path already there fails the boot).
    pub replace: Option<bool>,
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
    /// Mounts by guest path: a host directory (`bind`), a named volume (`named`), or a tmpfs.
    pub volumes: Option<HashMap<String, MountConfig>>,
    /// Changes to the root filesystem, applied in order before the sandbox boots.
    pub patches: Option<Vec<PatchConfig>>,
    /// Published TCP ports: `{ "HOSTPORT": GUESTPORT }`, listening on the host's 127.0.0.1
    /// (the namespace backend, as root).
    pub ports: Option<HashMap<String, f64>>,
    /// What the guest may reach (default: nothing, loopback only; see the README).
    pub network: Option<NetworkConfig>,
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
    pub secrets: Option<serde_json::Value>,
    /// Labels, matched by `Sandbox.listWith({ labels })`.
    pub labels: Option<HashMap<String, String>>,
    /// Removed (directory and record) when it ends: stop, kill, crash or time limit.
    pub ephemeral: Option<bool>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Array<string>")]
    pub entrypoint: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "Array<string>")]
    pub cmd: Option<serde_json::Value>,
    /// Not supported by moat yet.
    #[napi(ts_type = "string")]
    pub log_level: Option<serde_json::Value>,
    /// The signal `stop()` (and an attached sandbox's end) sends every running command before
    /// shutting the sandbox down, instead of the image's StopSignal: a name (`"SIGUSR1"`,
    /// `"USR1"`, `"SIGRTMIN+3"`) or a number.
    #[napi(ts_type = "string | number")]
    pub stop_signal: Option<serde_json::Value>,
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
        let patches = self
            .patches
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, patch)| patch.into_patch(i))
            .collect::<Result<Vec<Patch>>>()?;
        moat_runtime::patches::validate(&patches)?;
        let network = network_config(self.network, self.ports)?;
        let stop_signal = self.stop_signal.as_ref().map(stop_signal).transpose()?;
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
            patches,
            network,
            stop_signal: stop_signal.map(|signal| signal.to_string()),
            ..LibConfig::default()
        };
        Ok(CreatePlan {
            args: SandboxOptions { name, root, isolation, config },
            replace: self.replace.unwrap_or(false),
        })
    }

    fn refuse_unsupported(&self) -> Result<()> {
        let present = [
            ("secrets", self.secrets.is_some()),
            ("entrypoint", self.entrypoint.is_some()),
            ("cmd", self.cmd.is_some()),
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

/// `volumes`: bind mounts, named volumes and tmpfs mounts by guest path.
fn mounts(volumes: HashMap<String, MountConfig>) -> Result<(Vec<Volume>, Vec<Tmpfs>)> {
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut sorted: Vec<_> = volumes.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (guest, mount) in sorted {
        let at = |field: &str| format!("config.volumes[{guest:?}].{field}");
        let flags = [("noexec", mount.noexec), ("nosuid", mount.nosuid), ("nodev", mount.nodev)];
        let source = match (mount.bind, mount.named, mount.tmpfs.unwrap_or(false)) {
            (Some(host), None, false) => (PathBuf::from(host), None),
            (None, Some(name), false) => {
                moat_runtime::store::volumes::validate_name(&name)
                    .map_err(|err| NodeError::InvalidArgument(format!("{}: {err}", at("named"))))?;
                // The library fills the host path from the volume store at create.
                (PathBuf::from(&name), Some(name))
            }
            (None, None, true) => {
                if mount.readonly == Some(true) {
                    return Err(NodeError::NotSupported(format!(
                        "read-only tmpfs ({})",
                        at("readonly")
                    )));
                }
                if let Some((flag, _)) = flags.iter().find(|(_, set)| set.is_some()) {
                    return Err(NodeError::NotSupported(format!(
                        "{flag} on a tmpfs ({})",
                        at(flag)
                    )));
                }
                tmpfs.push(Tmpfs { path: guest, size_mib: mount.size_mib });
                continue;
            }
            _ => {
                return Err(NodeError::InvalidArgument(format!(
                    "config.volumes[{guest:?}] needs exactly one of bind, named, tmpfs"
                )));
            }
        };
        if mount.size_mib.is_some() {
            return Err(NodeError::InvalidArgument(format!(
                "{} applies only to tmpfs",
                at("sizeMib")
            )));
        }
        let (host, name) = source;
        binds.push(Volume {
            host,
            guest,
            readonly: mount.readonly.unwrap_or(false),
            name,
            noexec: mount.noexec.unwrap_or(false),
            nosuid: mount.nosuid.unwrap_or(false),
            nodev: mount.nodev.unwrap_or(false),
        });
    }
    Ok((binds, tmpfs))
}

impl PatchConfig {
    /// The library's patch for item `index` of `config.patches`.
    fn into_patch(self, index: usize) -> Result<Patch> {
        let at = |field: &str| format!("config.patches[{index}].{field}");
        let kind = self.kind.clone();
        // Which optional fields each kind uses; any other one given is refused.
        let uses: &[&str] = match kind.as_str() {
            "text" => &["path", "content", "mode", "replace"],
            "file" => &["path", "content", "contentBytes", "mode", "replace"],
            "copyFile" => &["src", "dst", "mode", "replace"],
            "copyDir" => &["src", "dst", "replace"],
            "symlink" => &["target", "link", "path", "replace"],
            "mkdir" => &["path", "mode"],
            "remove" => &["path"],
            "append" => &["path", "content"],
            other => {
                return Err(NodeError::InvalidArgument(format!(
                    "{}: {other:?} is not a patch kind (text, file, copyFile, copyDir, symlink, \
                     mkdir, remove, append)",
                    at("kind")
                )));
            }
        };
        let given = [
            ("path", self.path.is_some()),
            ("content", self.content.is_some()),
            ("contentBytes", self.content_bytes.is_some()),
            ("src", self.src.is_some()),
            ("dst", self.dst.is_some()),
            ("target", self.target.is_some()),
            ("link", self.link.is_some()),
            ("mode", self.mode.is_some()),
            ("replace", self.replace.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, set)| *set && !uses.contains(f)) {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not apply to a {kind:?} patch",
                at(field)
            )));
        }
        if let Some(mode) = self.mode.filter(|m| *m > 0o7777) {
            return Err(NodeError::InvalidArgument(format!(
                "{}: {mode:#o} is not a permission mode (at most 0o7777)",
                at("mode")
            )));
        }
        let need = |value: Option<String>, field: &str| {
            value.ok_or_else(|| {
                NodeError::InvalidArgument(format!(
                    "{} is required for a {kind:?} patch",
                    at(field)
                ))
            })
        };
        let text = |content: Option<Either<String, Buffer>>| match content {
            Some(Either::A(text)) => Ok(text),
            Some(Either::B(_)) => Err(NodeError::InvalidArgument(format!(
                "{} must be a string for a {kind:?} patch",
                at("content")
            ))),
            None => Err(NodeError::InvalidArgument(format!(
                "{} is required for a {kind:?} patch",
                at("content")
            ))),
        };
        let replace = self.replace.unwrap_or(false);
        let patch = match kind.as_str() {
            "text" => Patch::Text {
                path: need(self.path, "path")?,
                content: text(self.content)?,
                mode: self.mode,
                replace,
            },
            "file" => {
                let content = match (self.content, self.content_bytes) {
                    (Some(Either::A(text)), None) => text.into_bytes(),
                    (Some(Either::B(bytes)), None) => bytes.to_vec(),
                    (None, Some(values)) => values
                        .into_iter()
                        .map(u8::try_from)
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|_| {
                            NodeError::InvalidArgument(format!(
                                "{} must hold byte values (0..=255)",
                                at("contentBytes")
                            ))
                        })?,
                    _ => {
                        return Err(NodeError::InvalidArgument(format!(
                            "{} needs exactly one of content and contentBytes",
                            at("kind")
                        )));
                    }
                };
                Patch::File { path: need(self.path, "path")?, content, mode: self.mode, replace }
            }
            "copyFile" => Patch::CopyFile {
                src: PathBuf::from(need(self.src, "src")?),
                dst: need(self.dst, "dst")?,
                mode: self.mode,
                replace,
            },
            "copyDir" => Patch::CopyDir {
                src: PathBuf::from(need(self.src, "src")?),
                dst: need(self.dst, "dst")?,
                replace,
            },
            "symlink" => {
                let link = match (self.link, self.path) {
                    (Some(link), None) | (None, Some(link)) => link,
                    _ => {
                        return Err(NodeError::InvalidArgument(format!(
                            "{} needs exactly one of link and path",
                            at("kind")
                        )));
                    }
                };
                Patch::Symlink { target: need(self.target, "target")?, link, replace }
            }
            "mkdir" => Patch::Mkdir { path: need(self.path, "path")?, mode: self.mode },
            "remove" => Patch::Remove { path: need(self.path, "path")? },
            _ => Patch::Append { path: need(self.path, "path")?, content: text(self.content)? },
        };
        Ok(patch)
    }
}

/// `config.stopSignal`: a signal name or number Linux has.
fn stop_signal(value: &serde_json::Value) -> Result<StopSignal> {
    let parsed = match value {
        serde_json::Value::String(name) => name.parse::<StopSignal>(),
        serde_json::Value::Number(number) => match number.as_i64().map(i32::try_from) {
            Some(Ok(number)) => StopSignal::from_number(number),
            _ => {
                return Err(NodeError::InvalidArgument(format!(
                    "config.stopSignal {number} is not a signal number (1 to 64)"
                )));
            }
        },
        other => {
            return Err(NodeError::InvalidArgument(format!(
                "config.stopSignal must be a signal name or number, not {other}"
            )));
        }
    };
    parsed.map_err(|err| NodeError::InvalidArgument(format!("config.stopSignal: {err}")))
}
