//! Choosing a backend: never weaker isolation than asked, never silently weaker than a VM.
//! `vm` and `auto` get a microVM when the doctor says one can boot here.

use crate::api::config::Isolation;
use crate::config::SandboxConfig;
use crate::doctor::Report;
use crate::error::RuntimeError;

/// Which backend a sandbox runs on, as `spec.json` records it for the sandbox process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux namespaces (agentd as PID 1, channel over a unix socket).
    #[default]
    Namespace,
    /// A libkrun microVM (agentd as the guest's init, channel over vsock).
    Vm,
}

/// The backend chosen for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A libkrun microVM.
    Vm,
    /// Linux namespaces; `warning` is the one line to print when it was chosen for the user.
    Namespace {
        /// Printed to stderr when set.
        warning: Option<String>,
    },
}

impl Backend {
    /// What `spec.json` records.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Vm => BackendKind::Vm,
            Backend::Namespace { .. } => BackendKind::Namespace,
        }
    }
}

/// The first failing check of the doctor's report, as one line.
pub fn vm_unavailable_reason(report: &Report) -> String {
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .next()
        .unwrap_or_else(|| "every check passed".to_owned())
}

/// Picks the backend for `requested` on this host, prints the one-line warning when `auto` falls
/// back to the namespace backend, and another when a namespace sandbox would get the identity id
/// map ([`crate::backend::namespace::idmap::for_sandbox`]) or, unprivileged, the single-id map
/// ([`crate::backend::namespace::rootless::RootlessMap::warning`]). Every command that boots a sandbox starts here,
/// then calls [`check_limits`] with its resolved configuration.
pub fn prepare_backend(requested: Isolation) -> Result<BackendKind, RuntimeError> {
    let report = crate::doctor::diagnose(&crate::doctor::HostPaths::system());
    let backend = choose(requested, &report)?;
    if let Backend::Namespace { warning: Some(warning) } = &backend {
        eprintln!("{warning}");
    }
    if matches!(backend, Backend::Namespace { .. }) {
        if crate::backend::namespace::rootless::is_rootless() {
            if let Some(warning) =
                crate::backend::namespace::rootless::RootlessMap::for_this_user().warning()
            {
                eprintln!("{warning}");
            }
        } else if let Err(reason) = crate::backend::namespace::idmap::for_sandbox() {
            eprintln!("{}", crate::backend::namespace::idmap::identity_warning(&reason));
        }
    }
    Ok(backend.kind())
}

/// The limits of `config` a sandbox on `backend` started by this process can apply: unprivileged
/// on the namespace backend, an explicit limit is an error and the default pids limit's absence
/// a printed warning line ([`crate::backend::namespace::rootless::limits_warning`]). A network
/// the backend cannot give is an error ([`crate::network::check_backend`]).
pub fn check_limits(backend: BackendKind, config: &SandboxConfig) -> Result<(), RuntimeError> {
    let rootless = crate::backend::namespace::rootless::is_rootless();
    crate::network::check_backend(backend, rootless, &config.network)?;
    if backend != BackendKind::Namespace || !crate::backend::namespace::rootless::is_rootless() {
        return Ok(());
    }
    if let Some(warning) = crate::backend::namespace::rootless::limits_warning(config)? {
        eprintln!("{warning}");
    }
    Ok(())
}

/// Picks the backend for `requested` given the doctor's view of the host.
pub fn choose(requested: Isolation, report: &Report) -> Result<Backend, RuntimeError> {
    match requested {
        Isolation::Namespace => Ok(Backend::Namespace { warning: None }),
        Isolation::Vm if report.vm_can_boot() => Ok(Backend::Vm),
        Isolation::Vm => Err(RuntimeError::VmUnavailable { reason: vm_unavailable_reason(report) }),
        Isolation::Auto if report.vm_can_boot() => Ok(Backend::Vm),
        Isolation::Auto => Ok(Backend::Namespace {
            warning: Some(format!(
                "moat: warning: using the namespace backend (weaker isolation than a microVM): no bootable VM: {}",
                vm_unavailable_reason(report)
            )),
        }),
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
    fn a_host_that_can_boot_a_vm_gets_one_for_vm_and_auto() {
        assert_eq!(choose(Isolation::Vm, &report(true)).unwrap(), Backend::Vm);
        assert_eq!(choose(Isolation::Auto, &report(true)).unwrap(), Backend::Vm);
        assert_eq!(Backend::Vm.kind(), BackendKind::Vm);
    }

    #[test]
    fn explicit_namespace_is_honoured_even_when_a_vm_could_boot() {
        assert_eq!(
            choose(Isolation::Namespace, &report(true)).unwrap(),
            Backend::Namespace { warning: None }
        );
    }

    #[test]
    fn explicit_namespace_has_no_warning() {
        assert_eq!(
            choose(Isolation::Namespace, &report(false)).unwrap(),
            Backend::Namespace { warning: None }
        );
    }
}
