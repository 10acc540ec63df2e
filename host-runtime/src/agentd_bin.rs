//! Finding the `moat-agentd` binary: the host build for the namespace backend ([`locate`]), the
//! static build for a VM's init ([`locate_for`]).
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

/// The static agent's binary name when installed next to `moat`.
pub const AGENTD_STATIC_NAME: &str = "moat-agentd-static";

/// The environment variable naming the static agent.
pub const AGENTD_STATIC_ENV: &str = "MOAT_AGENTD_STATIC";

/// The workspace this `moat` was compiled from.
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The agent `backend` runs: [`locate`] for the namespace backend, [`locate_static`] for a VM.
pub fn locate_for(
    backend: crate::backend::isolation::BackendKind,
) -> Result<PathBuf, RuntimeError> {
    match backend {
        crate::backend::isolation::BackendKind::Namespace => locate(),
        crate::backend::isolation::BackendKind::Vm => locate_static(),
    }
}

/// Finds the static `moat-agentd` a VM boots as its init (it runs in any root, before anything
/// is mounted): `$MOAT_AGENTD_STATIC`, else `moat-agentd-static` next to `moat`, else, when
/// `moat` runs from a cargo target directory of its workspace, `agentd/build-static.sh` builds
/// it (saying so on stderr). Nothing else triggers a build.
pub fn locate_static() -> Result<PathBuf, RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("find own executable", "moat"))?;
    let exe_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(path) = std::env::var_os(AGENTD_STATIC_ENV).map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
        return Err(RuntimeError::StaticAgentdNotFound {
            looked: format!("{AGENTD_STATIC_ENV}={} (not a file)", path.display()),
        });
    }
    let beside = exe_dir.join(AGENTD_STATIC_NAME);
    if beside.is_file() {
        return Ok(beside);
    }
    if CargoBuild::for_exe_dir(&exe_dir).is_some() {
        return build_static();
    }
    Err(RuntimeError::StaticAgentdNotFound {
        looked: format!("${AGENTD_STATIC_ENV} is unset and {} does not exist", beside.display()),
    })
}

/// Runs `agentd/build-static.sh` of the workspace `moat` was built from; its last stdout line
/// is the binary's path (relative to the workspace).
fn build_static() -> Result<PathBuf, RuntimeError> {
    let workspace = Path::new(WORKSPACE_DIR);
    let script = workspace.join("agentd/build-static.sh");
    eprintln!(
        "moat: the VM backend needs a static moat-agentd; building it now (agentd/build-static.sh)"
    );
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(workspace)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(RuntimeError::io("run", &script))?;
    if !output.status.success() {
        return Err(RuntimeError::StaticAgentdBuild { status: output.status });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let relative = stdout.lines().last().unwrap_or_default().trim();
    let path = workspace.join(relative);
    if relative.is_empty() || !path.is_file() {
        return Err(RuntimeError::StaticAgentdNotFound {
            looked: format!("agentd/build-static.sh printed {relative:?}, which is not a file"),
        });
    }
    Ok(path)
}

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
