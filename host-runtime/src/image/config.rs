//! The image config (the JSON blob a manifest names) and what moat takes from it: the exec
//! defaults (Env, WorkingDir, User, Entrypoint, Cmd, StopSignal) and the layers' diff ids.
//! Parsed leniently (unknown fields ignored, missing ones empty): images in the wild omit most.
//!
//! Explicit options win: `-e` replaces an image variable of the same name, `-w` and `-u` replace
//! WorkingDir and User. The command is docker's: Entrypoint followed by the explicit command,
//! or by Cmd when none is given.

use serde::{Deserialize, Serialize};

/// The exec defaults an image supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageDefaults {
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory (`None` when unset or empty).
    pub working_dir: Option<String>,
    /// User (`None` when unset or empty).
    pub user: Option<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// StopSignal, recorded (moat's stop sends `core.shutdown`, then SIGTERM, then SIGKILL).
    pub stop_signal: Option<String>,
}

/// The parts of an image config moat reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The exec defaults.
    pub defaults: ImageDefaults,
    /// `sha256:<hex>` of each uncompressed layer, bottom first.
    pub diff_ids: Vec<String>,
    /// `os` (e.g. `linux`).
    pub os: String,
    /// `architecture` (e.g. `amd64`).
    pub architecture: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfigFile {
    os: String,
    architecture: String,
    config: Option<RawConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct RawConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    stop_signal: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRootfs {
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        let raw: RawConfigFile = serde_json::from_slice(bytes)?;
        let config = raw.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(ImageConfig {
            defaults: ImageDefaults {
                env: config.env.unwrap_or_default(),
                working_dir: non_empty(config.working_dir),
                user: non_empty(config.user),
                entrypoint: config.entrypoint.unwrap_or_default(),
                cmd: config.cmd.unwrap_or_default(),
                stop_signal: non_empty(config.stop_signal),
            },
            diff_ids: raw.rootfs.diff_ids,
            os: raw.os,
            architecture: raw.architecture,
        })
    }
}

impl ImageDefaults {
    /// The image's environment with `explicit` pairs replacing same-named ones and added after.
    pub fn merged_env(&self, explicit: &[String]) -> Vec<String> {
        let key = |pair: &String| pair.split('=').next().unwrap_or_default().to_owned();
        let overridden: Vec<String> = explicit.iter().map(key).collect();
        let mut env: Vec<String> =
            self.env.iter().filter(|pair| !overridden.contains(&key(pair))).cloned().collect();
        env.extend(explicit.iter().cloned());
        env
    }

    /// The command to run: Entrypoint, then `explicit` (when not empty) or Cmd.
    pub fn command(&self, explicit: &[String]) -> Vec<String> {
        let mut command = self.entrypoint.clone();
        command.extend(if explicit.is_empty() { self.cmd.clone() } else { explicit.to_vec() });
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux",
        "config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"],"WorkingDir":"/w","User":"",
                  "Entrypoint":null,"StopSignal":"SIGINT"},
        "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;

    #[test]
    fn config_fields_become_defaults() {
        let config = ImageConfig::parse(CONFIG.as_bytes()).unwrap();
        let d = &config.defaults;
        assert_eq!((d.working_dir.as_deref(), d.user.as_deref()), (Some("/w"), None));
        assert_eq!(
            (d.cmd.clone(), d.stop_signal.as_deref()),
            (vec!["sh".to_owned()], Some("SIGINT"))
        );
        assert_eq!(config.diff_ids, ["sha256:aa"]);
    }

    #[test]
    fn a_config_without_a_config_section_has_empty_defaults() {
        let config = ImageConfig::parse(br#"{"rootfs":{"diff_ids":[]}}"#).unwrap();
        assert_eq!(config.defaults, ImageDefaults::default());
    }

    #[test]
    fn explicit_env_replaces_same_named_image_variables() {
        let d = ImageDefaults { env: vec!["PATH=/bin".into(), "A=1".into()], ..Default::default() };
        assert_eq!(d.merged_env(&["A=2".into(), "B=3".into()]), ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn the_command_is_entrypoint_then_explicit_or_cmd() {
        let d = ImageDefaults {
            entrypoint: vec!["/init".into()],
            cmd: vec!["serve".into()],
            ..Default::default()
        };
        assert_eq!(d.command(&[]), ["/init", "serve"]);
        assert_eq!(d.command(&["debug".into()]), ["/init", "debug"]);
    }
}
