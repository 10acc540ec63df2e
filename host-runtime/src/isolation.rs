//! Choosing a backend: never weaker isolation than asked, never silently weaker than a VM.

use crate::cli::Isolation;
use crate::doctor::Report;
use crate::error::RuntimeError;

/// The backend a sandbox runs on. Only the namespace backend is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Linux namespaces; `warning` is the one line to print when it was chosen for the user.
    Namespace {
        /// Printed to stderr when set.
        warning: Option<String>,
    },
}

/// The first failing check of the doctor's report, as one line.
pub fn vm_unavailable_reason(report: &Report) -> String {
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .next()
        .unwrap_or_else(|| "the libkrun VM backend is not built into this moat".to_owned())
}

/// Picks the backend for `requested` on this host, prints the one-line warning when `auto` falls
/// back to the namespace backend, and checks this process may create namespaces (root). Every
/// command that boots a sandbox starts here.
pub fn prepare_backend(requested: Isolation) -> Result<(), RuntimeError> {
    let report = crate::doctor::diagnose(&crate::doctor::HostPaths::system());
    let Backend::Namespace { warning } = choose(requested, &report)?;
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(RuntimeError::NotRoot);
    }
    Ok(())
}

/// Picks the backend for `requested` given the doctor's view of the host.
pub fn choose(requested: Isolation, report: &Report) -> Result<Backend, RuntimeError> {
    match requested {
        Isolation::Namespace => Ok(Backend::Namespace { warning: None }),
        Isolation::Vm => Err(RuntimeError::VmUnavailable { reason: vm_unavailable_reason(report) }),
        Isolation::Auto => {
            let reason = if report.vm_can_boot() {
                "the libkrun VM backend is not built yet".to_owned()
            } else {
                format!("no bootable VM: {}", vm_unavailable_reason(report))
            };
            Ok(Backend::Namespace {
                warning: Some(format!(
                    "moat: warning: using the namespace backend (weaker isolation than a microVM): {reason}"
                )),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn report(ok: bool) -> Report {
        Report { checks: vec![Check { name: "kvm-pvm", ok, detail: "this KVM is KVM-PVM".into() }] }
    }

    #[test]
    fn vm_request_fails_with_the_doctors_reason() {
        let err = choose(Isolation::Vm, &report(false)).unwrap_err();
        assert!(err.to_string().contains("kvm-pvm: this KVM is KVM-PVM"), "{err}");
    }

    #[test]
    fn auto_falls_back_with_a_warning_naming_the_reason() {
        match choose(Isolation::Auto, &report(false)).unwrap() {
            Backend::Namespace { warning: Some(w) } => {
                assert!(w.contains("no bootable VM: kvm-pvm"), "{w}");
                assert!(!w.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explicit_namespace_has_no_warning() {
        assert_eq!(
            choose(Isolation::Namespace, &report(false)).unwrap(),
            Backend::Namespace { warning: None }
        );
    }
}
