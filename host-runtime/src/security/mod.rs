//! The sandbox's hardening settings as the host stores and passes them: the security profile
//! (`--security-profile`) that agentd applies to itself after boot and to everything it starts,
//! and the default pids limit. The filters themselves are agentd's (`moat_agentd::seccomp`), so
//! a VM's guest gets the same ones; this module only names the profile.
//!
//! ```text
//!  --security-profile P ─► spec.json ─► namespace backend: agentd --security-profile P
//!                                       VM backend: MOAT_AGENT_SECURITY_PROFILE=P (kernel cmdline)
//! ```

pub mod hardening;

/// The agent's command-line option that carries the profile.
pub const AGENT_PROFILE_OPTION: &str = "--security-profile";

/// The agent's environment variable that carries the profile (a VM's init reads it).
pub const AGENT_PROFILE_ENV: &str = "MOAT_AGENT_SECURITY_PROFILE";

/// How strictly the sandbox's processes are confined (agentd's `SecurityProfile`, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityProfile {
    /// A seccomp filter in the spirit of docker's default profile, docker's default capabilities.
    #[default]
    Default,
    /// The default, plus ptrace, namespaces, chroot, io_uring and other rarely needed calls
    /// denied.
    Restricted,
    /// No seccomp filter and every capability in the sandbox's user namespace.
    None,
}

impl SecurityProfile {
    /// The profile's name, as `--security-profile` takes it and agentd reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProfile::Default => "default",
            SecurityProfile::Restricted => "restricted",
            SecurityProfile::None => "none",
        }
    }

    /// Parses a `--security-profile` value.
    pub fn parse(name: &str) -> Option<SecurityProfile> {
        [SecurityProfile::Default, SecurityProfile::Restricted, SecurityProfile::None]
            .into_iter()
            .find(|profile| profile.as_str() == name)
    }
}

impl std::fmt::Display for SecurityProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip_and_default_is_default() {
        for name in ["default", "restricted", "none"] {
            assert_eq!(SecurityProfile::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(SecurityProfile::parse("strict"), None);
        assert_eq!(SecurityProfile::default(), SecurityProfile::Default);
    }

    #[test]
    fn profile_is_stored_by_its_lowercase_name() {
        let json = serde_json::to_string(&SecurityProfile::Restricted).unwrap();
        assert_eq!(json, "\"restricted\"");
        let back: SecurityProfile = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(back, SecurityProfile::None);
    }
}
