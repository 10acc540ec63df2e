//! Finding the `moat-agentd` binary.
//!
//! Order: next to the running `moat` (cargo puts both in `target/<profile>/`, and an install puts
//! them side by side), then `$MOAT_AGENTD`. When neither has it and `moat` runs from a cargo
//! target directory of the workspace it was built from (the README's
//! `cargo run --release --bin moat -- run ...`, which builds only `moat`), it builds
//! `moat-agentd` there with the same profile, saying so in one line on stderr. Nothing else
//! triggers a build: an installed `moat` never runs cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::RuntimeError;

/// The agent's binary name.
pub const AGENTD_NAME: &str = "moat-agentd";

/// The workspace this `moat` was compiled from.
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Finds `moat-agentd`, building it on demand as described in the module docs.
pub fn locate() -> Result<PathBuf, RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("find own executable", "moat"))?;
    let exe_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = exe_dir.join(AGENTD_NAME);
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(path) = std::env::var_os("MOAT_AGENTD").map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
    }
    if let Some(build) = CargoBuild::for_exe_dir(&exe_dir) {
        build.run()?;
        if beside.is_file() {
            return Ok(beside);
        }
    }
    Err(RuntimeError::AgentdNotFound { exe_dir })
}

/// A `cargo build -p moat-agentd` into the target directory `moat` runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CargoBuild {
    manifest: PathBuf,
    target_dir: PathBuf,
    release: bool,
}

impl CargoBuild {
    /// Some when `exe_dir` is `<target>/debug` or `<target>/release` and the workspace `moat` was
    /// built from still exists.
    fn for_exe_dir(exe_dir: &Path) -> Option<CargoBuild> {
        let manifest = Path::new(WORKSPACE_DIR).join("Cargo.toml");
        Self::plan(exe_dir, &manifest, manifest.is_file())
    }

    fn plan(exe_dir: &Path, manifest: &Path, manifest_exists: bool) -> Option<CargoBuild> {
        let release = match exe_dir.file_name()?.to_str()? {
            "release" => true,
            "debug" => false,
            _ => return None,
        };
        let target_dir = exe_dir.parent()?.to_path_buf();
        if !manifest_exists || !target_dir.join("CACHEDIR.TAG").is_file() {
            return None;
        }
        Some(CargoBuild { manifest: manifest.to_path_buf(), target_dir, release })
    }

    fn run(&self) -> Result<(), RuntimeError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(&cargo);
        command
            .args(["build", "--quiet", "-p", "moat-agentd", "--bin", AGENTD_NAME])
            .arg("--manifest-path")
            .arg(&self.manifest)
            .arg("--target-dir")
            .arg(&self.target_dir);
        if self.release {
            command.arg("--release");
        }
        eprintln!(
            "moat: {AGENTD_NAME} is not built next to moat; building it now (cargo build{} -p moat-agentd)",
            if self.release { " --release" } else { "" }
        );
        let status =
            command.status().map_err(RuntimeError::io("run cargo", PathBuf::from(&cargo)))?;
        if status.success() { Ok(()) } else { Err(RuntimeError::AgentdBuild { status }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cargo_profile_directory_plans_a_build() {
        let manifest = Path::new("/w/Cargo.toml");
        assert_eq!(CargoBuild::plan(Path::new("/usr/local/bin"), manifest, true), None);
        assert_eq!(CargoBuild::plan(Path::new("/w/target/release"), manifest, false), None);
    }

    #[test]
    fn the_running_test_binary_is_not_in_a_profile_directory() {
        // Tests run from target/<profile>/deps: never a reason to build.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(CargoBuild::for_exe_dir(exe.parent().unwrap()), None);
    }
}
