//! What a sandbox is made of, as the library takes it: its name, root filesystem, backend and
//! [`SandboxConfig`]. The CLI turns its flags into these types; nothing here knows about flags.
//!
//! ```text
//!  SandboxOptions { name, root: RootSource, isolation: Isolation, config: SandboxConfig }
//!       └─► Moat::create                        (a named sandbox)
//!  RunOptions { root, isolation, config, command: ExecRequest }
//!       └─► lifecycle::run::execute             (`moat run`: one ephemeral sandbox, one command)
//! ```

use std::path::PathBuf;

use moat_protocol::payload::exec::ExecRequest;

use crate::config::SandboxConfig;

/// Which backend a sandbox asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// A VM when the host can boot one, else the namespace backend with a warning.
    #[default]
    Auto,
    /// The namespace backend.
    Namespace,
    /// A microVM or nothing.
    Vm,
}

/// Where the sandbox's root filesystem comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootSource {
    /// A read-only root assembled from the host's system directories.
    #[default]
    Host,
    /// This directory as the read-only lower layer of a throw-away overlay.
    Dir(PathBuf),
    /// An OCI image's layers, stacked as the lower layers of a throw-away overlay.
    Image(ImageSource),
}

/// An OCI image as a root: the reference as given, and once resolved, its layer directories.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSource {
    /// The reference as the user wrote it (`python:3.12`).
    pub reference: String,
    /// `USER:PASS` for a pull; never written to the spec.
    #[serde(skip)]
    pub registry_auth: Option<String>,
    /// The layer directories, top first; empty until the image is resolved from the store.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
}

impl ImageSource {
    /// An unresolved image reference.
    pub fn new(reference: impl Into<String>) -> ImageSource {
        ImageSource { reference: reference.into(), registry_auth: None, layers: Vec::new() }
    }
}

/// A named sandbox to create: [`crate::api::Moat::create`]'s argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// The sandbox name (unique in its moat home).
    pub name: String,
    /// The root filesystem.
    pub root: RootSource,
    /// The requested backend.
    pub isolation: Isolation,
    /// Mounts, limits, hostname; `env`, `cwd`, `user` are the defaults of every exec.
    pub config: SandboxConfig,
}

impl SandboxOptions {
    /// A sandbox named `name` on the host root, with the automatic backend and default config.
    pub fn new(name: impl Into<String>) -> SandboxOptions {
        SandboxOptions {
            name: name.into(),
            root: RootSource::Host,
            isolation: Isolation::Auto,
            config: SandboxConfig::default(),
        }
    }

    /// With this root filesystem.
    pub fn root(mut self, root: RootSource) -> SandboxOptions {
        self.root = root;
        self
    }

    /// With this backend.
    pub fn isolation(mut self, isolation: Isolation) -> SandboxOptions {
        self.isolation = isolation;
        self
    }

    /// With this configuration.
    pub fn config(mut self, config: SandboxConfig) -> SandboxOptions {
        self.config = config;
        self
    }

    /// Removed when it ends (stop, kill, crash, time limit): [`SandboxConfig::ephemeral`].
    /// Its handle's `state` and `wait` then fail with `RuntimeError::UnknownSandbox`.
    pub fn ephemeral(mut self, ephemeral: bool) -> SandboxOptions {
        self.config.ephemeral = ephemeral;
        self
    }

    /// With the label `key` = `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> SandboxOptions {
        self.config.labels.insert(key.into(), value.into());
        self
    }

    /// Stopped with `signal` (sent to every running exec before `core.shutdown`), instead of
    /// an image's StopSignal: [`SandboxConfig::stop_signal`].
    pub fn stop_signal(
        mut self,
        signal: crate::lifecycle::stop_signal::StopSignal,
    ) -> SandboxOptions {
        self.config.stop_signal = Some(signal.to_string());
        self
    }
}

/// A condition on a sandbox's labels, for [`crate::api::Moat::list_filtered`] and
/// `moat ls --filter label=KEY[=VALUE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    /// The label that must be present.
    pub key: String,
    /// Its value; `None`: any value.
    pub value: Option<String>,
}

impl LabelFilter {
    /// Whether `config`'s labels satisfy this condition.
    pub fn matches(&self, config: &SandboxConfig) -> bool {
        match (config.labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        }
    }
}

/// One command in an ephemeral sandbox (`moat run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The root filesystem.
    pub root: RootSource,
    /// The requested backend.
    pub isolation: Isolation,
    /// The sandbox's configuration (mounts, limits, hostname...).
    pub config: SandboxConfig,
    /// The command; an empty `cmd` with an image root runs the image's Entrypoint + Cmd.
    pub command: ExecRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_options_are_host_root_and_auto_isolation() {
        let options = SandboxOptions::new("box");
        assert_eq!((options.root, options.isolation), (RootSource::Host, Isolation::Auto));
    }

    #[test]
    fn a_label_filter_matches_the_key_and_the_value_when_given() {
        let config = SandboxOptions::new("b").label("team", "infra").config;
        let filter = |key: &str, value: Option<&str>| LabelFilter {
            key: key.to_owned(),
            value: value.map(str::to_owned),
        };
        assert!(filter("team", None).matches(&config));
        assert!(filter("team", Some("infra")).matches(&config));
        assert!(!filter("team", Some("web")).matches(&config));
        assert!(!filter("owner", None).matches(&config));
    }

    #[test]
    fn the_registry_auth_is_never_written_to_the_spec() {
        let mut image = ImageSource::new("bb");
        image.registry_auth = Some("u:secret".into());
        let json = serde_json::to_string(&RootSource::Image(image)).unwrap();
        assert!(!json.contains("secret"), "{json}");
    }
}
