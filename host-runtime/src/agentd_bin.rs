//! Finding the `moat-agentd` binary: the host build for the namespace backend ([`locate`]), the
//! static build for a VM's init ([`locate_for`]); and the per-sandbox binary `moat-sandbox`
//! ([`locate_sandbox`]: next to `moat`, built the same way on demand, else an error).
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
pub use crate::supervisor::entry::SANDBOX_BIN_NAME;

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
    if CargoBuild::for_exe_dir(&exe_dir, AGENTD_PACKAGE, AGENTD_NAME).is_some() {
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
    if let Some(build) = CargoBuild::for_exe_dir(&exe_dir, AGENTD_PACKAGE, AGENTD_NAME) {
        build.run()?;
        if beside.is_file() {
            return Ok(beside);
        }
    }
    Err(RuntimeError::AgentdNotFound { exe_dir })
}

/// Finds the per-sandbox binary ([`SANDBOX_BIN_NAME`]) next to the `moat` binary `moat`; when
/// it is missing and `moat` is in a cargo target directory of its workspace, builds it there
/// (the README's `cargo run --bin moat` builds only `moat`). Anything else is an error that says
/// how to build it: the sandbox's processes run only from that binary.
pub fn locate_sandbox(moat: &Path) -> Result<PathBuf, RuntimeError> {
    let exe_dir = moat.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = exe_dir.join(SANDBOX_BIN_NAME);
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(build) = CargoBuild::for_exe_dir(&exe_dir, SANDBOX_PACKAGE, SANDBOX_BIN_NAME) {
        build.run()?;
        if beside.is_file() {
            return Ok(beside);
        }
    }
    Err(RuntimeError::Io {
        what: "find the per-sandbox binary",
        path: beside,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "it must be installed next to moat; build it with `cargo build --release -p moat-runtime` (which builds moat and moat-sandbox)",
        ),
    })
}

/// The package that builds `moat-agentd`.
const AGENTD_PACKAGE: &str = "moat-agentd";

/// The package that builds [`SANDBOX_BIN_NAME`] (and `moat`).
const SANDBOX_PACKAGE: &str = "moat-runtime";

/// A `cargo build -p PACKAGE --bin BIN` into the target directory `moat` runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CargoBuild {
    manifest: PathBuf,
    target_dir: PathBuf,
    release: bool,
    package: &'static str,
    bin: &'static str,
}

impl CargoBuild {
    /// Some when `exe_dir` is `<target>/debug` or `<target>/release` and the workspace `moat` was
    /// built from still exists.
    fn for_exe_dir(exe_dir: &Path, package: &'static str, bin: &'static str) -> Option<CargoBuild> {
        let manifest = Path::new(WORKSPACE_DIR).join("Cargo.toml");
        let plan = Self::plan(exe_dir, &manifest, manifest.is_file())?;
        Some(CargoBuild { package, bin, ..plan })
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
        Some(CargoBuild {
            manifest: manifest.to_path_buf(),
            target_dir,
            release,
            package: AGENTD_PACKAGE,
            bin: AGENTD_NAME,
        })
    }

    fn run(&self) -> Result<(), RuntimeError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(&cargo);
        command
            .args(["build", "--quiet", "-p", self.package, "--bin", self.bin])
            .arg("--manifest-path")
            .arg(&self.manifest)
            .arg("--target-dir")
            .arg(&self.target_dir);
        if self.release {
            command.arg("--release");
        }
        eprintln!(
            "moat: {} is not built next to moat; building it now (cargo build{} -p {} --bin {})",
            self.bin,
            if self.release { " --release" } else { "" },
            self.package,
            self.bin,
        );
        let status =
            command.status().map_err(RuntimeError::io("run cargo", PathBuf::from(&cargo)))?;
        if status.success() {
            Ok(())
        } else if self.bin == AGENTD_NAME {
            Err(RuntimeError::AgentdBuild { status })
        } else {
            Err(RuntimeError::Io {
                what: "build",
                path: PathBuf::from(self.bin),
                source: std::io::Error::other(format!(
                    "`cargo build -p {} --bin {}` failed ({status}); build it by hand",
                    self.package, self.bin
                )),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sandbox_binary_outside_a_cargo_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate_sandbox(&dir.path().join("moat")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().join(SANDBOX_BIN_NAME).display().to_string()), "{text}");
        assert!(text.contains("cargo build --release -p moat-runtime"), "{text}");
    }

    #[test]
    fn a_sandbox_binary_next_to_moat_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SANDBOX_BIN_NAME), b"").unwrap();
        assert_eq!(
            locate_sandbox(&dir.path().join("moat")).unwrap(),
            dir.path().join(SANDBOX_BIN_NAME)
        );
    }

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
        assert_eq!(
            CargoBuild::for_exe_dir(exe.parent().unwrap(), AGENTD_PACKAGE, AGENTD_NAME),
            None
        );
        assert_eq!(
            CargoBuild::for_exe_dir(exe.parent().unwrap(), SANDBOX_PACKAGE, SANDBOX_BIN_NAME),
            None
        );
    }
}
