//! `moat doctor`: can this host boot a microVM? (DESIGN.md "Why the fallback matters here")
//!
//! Each check reads host facts and explains itself in one line. This module owns the checks and
//! their wording; it does not start anything.

use std::env;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `kvm`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// One line of explanation.
    pub detail: String,
}

/// What the host can do, with reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check needed to boot a microVM passed.
    pub fn vm_can_boot(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// Where the host's facts come from; tests point it at a fake tree.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The KVM device, normally `/dev/kvm`.
    pub kvm_device: PathBuf,
    /// Present when the loaded KVM is KVM-PVM, normally `/sys/module/kvm_pvm`.
    pub kvm_pvm_module: PathBuf,
    /// Directories searched for `libkrunfw.so.5`.
    pub library_dirs: Vec<PathBuf>,
    /// An explicit `libkrunfw.so.5` path (`MOAT_LIBKRUNFW`).
    pub libkrunfw_override: Option<PathBuf>,
    /// `MOAT_VM_IGNORE_KVM_PVM=1`: treat KVM-PVM as able to boot. Only for testing the VM
    /// backend's failure reporting on such a host: the guest is expected to die at boot.
    pub ignore_kvm_pvm: bool,
}

/// The environment variable that makes the doctor pass a KVM-PVM host (see
/// [`HostPaths::ignore_kvm_pvm`]).
pub const IGNORE_KVM_PVM_ENV: &str = "MOAT_VM_IGNORE_KVM_PVM";

/// The guest kernel library libkrun loads.
pub const LIBKRUNFW: &str = "libkrunfw.so.5";

impl HostPaths {
    /// The real host: `/dev/kvm`, `/sys/module/kvm_pvm`, the loader's usual directories plus
    /// `LD_LIBRARY_PATH`, and `MOAT_LIBKRUNFW`.
    pub fn system() -> HostPaths {
        let mut library_dirs: Vec<PathBuf> = env::var_os("LD_LIBRARY_PATH")
            .map(|v| env::split_paths(&v).collect())
            .unwrap_or_default();
        library_dirs.extend(
            [
                "/usr/local/lib",
                "/usr/lib/x86_64-linux-gnu",
                "/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/usr/lib",
            ]
            .map(PathBuf::from),
        );
        HostPaths {
            kvm_device: PathBuf::from("/dev/kvm"),
            kvm_pvm_module: PathBuf::from("/sys/module/kvm_pvm"),
            library_dirs,
            libkrunfw_override: env::var_os("MOAT_LIBKRUNFW").map(PathBuf::from),
            ignore_kvm_pvm: env::var_os(IGNORE_KVM_PVM_ENV).is_some_and(|v| v == "1"),
        }
    }
}

/// Runs every check.
pub fn diagnose(paths: &HostPaths) -> Report {
    Report {
        checks: vec![
            check_kvm(&paths.kvm_device),
            check_pvm(&paths.kvm_pvm_module, paths.ignore_kvm_pvm),
            check_libkrunfw(paths),
        ],
    }
}

fn check_kvm(device: &Path) -> Check {
    let (ok, detail) = match OpenOptions::new().read(true).write(true).open(device) {
        Ok(_) => (true, format!("{} opens read-write", device.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (false, format!("{} does not exist: no KVM on this host", device.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => (
            false,
            format!("no permission to open {}: add your user to the kvm group", device.display()),
        ),
        Err(e) => (false, format!("cannot open {}: {e}", device.display())),
    };
    Check { name: "kvm", ok, detail }
}

fn check_pvm(module: &Path, ignore: bool) -> Check {
    if module.exists() && ignore {
        return Check {
            name: "kvm-pvm",
            ok: true,
            detail: format!(
                "{} exists (KVM-PVM) but {IGNORE_KVM_PVM_ENV}=1: a VM will be tried, and its guest \
                 kernel is expected to die at boot",
                module.display()
            ),
        };
    }
    if module.exists() {
        Check {
            name: "kvm-pvm",
            ok: false,
            detail: format!(
                "{} exists: this KVM is KVM-PVM, which interprets guest kernel code and cannot boot a \
                 libkrunfw kernel (it dies with KVM_EXIT_INTERNAL_ERROR)",
                module.display()
            ),
        }
    } else {
        Check { name: "kvm-pvm", ok: true, detail: "not KVM-PVM".to_owned() }
    }
}

/// The `libkrunfw.so.5` a VM would use: `MOAT_LIBKRUNFW` when set, else the first found in the
/// library directories. Only found, not yet loaded.
pub fn find_libkrunfw(paths: &HostPaths) -> Option<PathBuf> {
    match &paths.libkrunfw_override {
        Some(path) => path.is_file().then(|| path.clone()),
        None => paths.library_dirs.iter().map(|d| d.join(LIBKRUNFW)).find(|p| p.is_file()),
    }
}

fn check_libkrunfw(paths: &HostPaths) -> Check {
    match (find_libkrunfw(paths), &paths.libkrunfw_override) {
        (Some(path), _) => match moat_vmm::load_krunfw(&path) {
            Ok(()) => Check {
                name: "libkrunfw",
                ok: true,
                detail: format!("{} found and loadable", path.display()),
            },
            Err(err) => Check { name: "libkrunfw", ok: false, detail: err.to_string() },
        },
        (None, Some(path)) => Check {
            name: "libkrunfw",
            ok: false,
            detail: format!("MOAT_LIBKRUNFW={} is not a file", path.display()),
        },
        (None, None) => Check {
            name: "libkrunfw",
            ok: false,
            detail: format!(
                "{LIBKRUNFW} not found on the loader path; install Debian's libkrunfw5 or set MOAT_LIBKRUNFW"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = env::temp_dir().join(format!("moat-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pvm_module_present_fails_with_reason() {
        let dir = scratch("pvm");
        std::fs::create_dir(dir.join("kvm_pvm")).unwrap();
        let check = check_pvm(&dir.join("kvm_pvm"), false);
        assert!(!check.ok);
        assert!(check.detail.contains("KVM-PVM"));
        assert!(check_pvm(&dir.join("absent"), false).ok);
        let ignored = check_pvm(&dir.join("kvm_pvm"), true);
        assert!(ignored.ok);
        assert!(ignored.detail.contains(IGNORE_KVM_PVM_ENV));
    }

    #[test]
    fn missing_kvm_device_is_explained() {
        let dir = scratch("kvm");
        let check = check_kvm(&dir.join("kvm"));
        assert!(!check.ok);
        assert!(check.detail.contains("does not exist"));
    }

    #[test]
    fn libkrunfw_is_found_in_a_library_dir_or_by_override() {
        let dir = scratch("krunfw");
        let mut paths = HostPaths {
            kvm_device: dir.join("kvm"),
            kvm_pvm_module: dir.join("pvm"),
            library_dirs: vec![dir.clone()],
            libkrunfw_override: None,
            ignore_kvm_pvm: false,
        };
        assert!(!check_libkrunfw(&paths).ok);
        std::fs::write(dir.join(LIBKRUNFW), b"").unwrap();
        assert_eq!(find_libkrunfw(&paths), Some(dir.join(LIBKRUNFW)));
        // Found is not enough: an empty file does not load.
        let check = check_libkrunfw(&paths);
        assert!(!check.ok);
        assert!(check.detail.contains("cannot load"), "{}", check.detail);
        paths.libkrunfw_override = Some(dir.join("nope.so"));
        let check = check_libkrunfw(&paths);
        assert!(!check.ok);
        assert!(check.detail.contains("MOAT_LIBKRUNFW"));
        assert!(!diagnose(&paths).vm_can_boot());
    }

    /// The real library loads (the vm-host and CI set `MOAT_LIBKRUNFW`).
    #[test]
    #[ignore = "needs MOAT_LIBKRUNFW=/path/to/libkrunfw.so.5"]
    fn a_real_libkrunfw_is_found_and_loadable() {
        let check = check_libkrunfw(&HostPaths::system());
        assert!(check.ok, "{}", check.detail);
        assert!(check.detail.contains("loadable"));
    }
}
