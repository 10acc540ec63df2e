//! From an `ExecRequest` to a [`LaunchPlan`]: everything the child needs, computed and converted
//! to C strings in the parent before any fork (PROTOCOL.md §8.1). Pure: the user database is
//! passed in, nothing here touches the filesystem or processes.

use std::collections::BTreeMap;
use std::ffi::CString;

use moat_protocol::payload::exec::{ExecFailed, ExecRequest, ExecRlimit};
use nix::sys::resource::Resource;

use super::ExecConfig;
use super::failure::{self, Stage};
use crate::users::{Identity, UserDb};

/// Always on PATH in the sandbox: the helper scripts directory.
pub const SCRIPTS_DIR: &str = "/.msb/scripts";

/// PATH used when neither the request nor the agent's environment has one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Working directory when neither the request nor the sandbox configuration names one.
pub const FALLBACK_CWD: &str = "/";

/// One per-exec resource limit, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    /// The resource.
    pub(crate) resource: Resource,
    /// Its C name, for the failure stage (`"RLIMIT_NOFILE"`).
    pub(crate) name: &'static str,
    /// Soft limit (`u64::MAX` is `RLIM_INFINITY`).
    pub(crate) soft: u64,
    /// Hard limit.
    pub(crate) hard: u64,
}

/// Everything needed to start one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchPlan {
    /// The program as requested, for messages.
    pub(crate) program: String,
    /// Paths to try with `execve`, in order (one entry when `cmd` has a slash).
    pub(crate) candidates: Vec<CString>,
    /// argv, `cmd` first.
    pub(crate) argv: Vec<CString>,
    /// `KEY=VALUE` environment.
    pub(crate) envp: Vec<CString>,
    /// Working directory.
    pub(crate) cwd: CString,
    /// The identity to switch to, or `None` to keep agentd's.
    pub(crate) identity: Option<Identity>,
    /// Resource limits to apply before dropping privileges.
    pub(crate) rlimits: Vec<Rlimit>,
    /// `(rows, cols)` of the PTY, or `None` for pipes.
    pub(crate) tty: Option<(u16, u16)>,
}

/// Computes the plan for `request`, or the `core.exec.failed` payload explaining why there is
/// none (bad arguments, unknown user, empty command).
pub(crate) fn plan(
    config: &ExecConfig,
    users: &UserDb,
    request: &ExecRequest,
) -> Result<LaunchPlan, ExecFailed> {
    let tty = request.tty;
    let spec = user_spec(request.user.as_deref(), config.default_user.as_deref());
    let identity = users.resolve(spec.unwrap_or("")).map_err(|err| {
        failure::failed(Stage::ResolveUser, None, tty, &format!("resolving user: {err}"))
    })?;
    let env = build_env(&config.base_env, &request.env, identity.home.as_deref());
    let path = env.iter().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let candidates = exec_candidates(&request.cmd, path);
    if candidates.is_empty() {
        let errno = Some(nix::errno::Errno::ENOENT);
        return Err(failure::failed(Stage::Exec, errno, tty, "execvp(\"\"): empty command"));
    }
    let bad_args = |what: &str| {
        failure::failed(Stage::Arguments, None, tty, &format!("{what} contains a NUL byte"))
    };
    let cstrings = |items: Vec<String>, what: &str| -> Result<Vec<CString>, ExecFailed> {
        items.into_iter().map(|s| CString::new(s).map_err(|_| bad_args(what))).collect()
    };
    let argv = std::iter::once(request.cmd.clone()).chain(request.args.iter().cloned()).collect();
    Ok(LaunchPlan {
        program: request.cmd.clone(),
        candidates: cstrings(candidates, "the command")?,
        argv: cstrings(argv, "an argument")?,
        envp: cstrings(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(), "env")?,
        cwd: CString::new(choose_cwd(request.cwd.as_deref(), config.default_cwd.as_deref()))
            .map_err(|_| bad_args("the working directory"))?,
        identity: spec.map(|_| identity),
        rlimits: request.rlimits.iter().filter_map(parse_rlimit).collect(),
        tty: tty.then_some((request.rows, request.cols)),
    })
}

/// The user spec to apply: the request's, else the sandbox default; blank counts as absent.
/// `None` means no switch (the child keeps agentd's identity, normally root).
fn user_spec<'a>(requested: Option<&'a str>, default: Option<&'a str>) -> Option<&'a str> {
    let given = |s: Option<&'a str>| s.map(str::trim).filter(|s| !s.is_empty());
    given(requested).or_else(|| given(default))
}

/// The working directory: the request's, else the sandbox default, else `/`.
fn choose_cwd<'a>(requested: Option<&'a str>, default: Option<&'a str>) -> &'a str {
    let given = |s: Option<&'a str>| s.filter(|s| !s.is_empty());
    given(requested).or_else(|| given(default)).unwrap_or(FALLBACK_CWD)
}

/// The child's environment: `base` overlaid with the request's `KEY=VALUE` entries (entries
/// without `=` or with an empty key are ignored; a later entry wins), `HOME` from the user's
/// passwd entry unless the request set it, and [`SCRIPTS_DIR`] ensured on PATH.
pub(crate) fn build_env(
    base: &[(String, String)],
    request: &[String],
    home: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = base.iter().cloned().collect();
    let mut request_home = false;
    for entry in request {
        let Some((key, value)) = entry.split_once('=') else { continue };
        if key.is_empty() {
            continue;
        }
        request_home |= key == "HOME";
        env.insert(key.to_owned(), value.to_owned());
    }
    if !request_home {
        if let Some(home) = home.filter(|h| !h.is_empty()) {
            env.insert("HOME".to_owned(), home.to_owned());
        }
    }
    env.entry("HOME".to_owned()).or_insert_with(|| "/".to_owned());
    let path = ensure_scripts_on_path(env.get("PATH").map(String::as_str));
    env.insert("PATH".to_owned(), path);
    env.into_iter().collect()
}

/// `path` with [`SCRIPTS_DIR`] prepended unless it is already one of its components; without a
/// PATH, [`SCRIPTS_DIR`] followed by [`DEFAULT_PATH`].
pub(crate) fn ensure_scripts_on_path(path: Option<&str>) -> String {
    match path {
        Some(p) if p.split(':').any(|dir| dir == SCRIPTS_DIR) => p.to_owned(),
        Some("") => SCRIPTS_DIR.to_owned(),
        Some(p) => format!("{SCRIPTS_DIR}:{p}"),
        None => format!("{SCRIPTS_DIR}:{DEFAULT_PATH}"),
    }
}

/// The paths `execvp` would try for `cmd`: `cmd` itself when it contains a slash, else
/// `dir/cmd` for each PATH entry (an empty entry is the working directory). Empty for an empty
/// `cmd`.
pub(crate) fn exec_candidates(cmd: &str, path: &str) -> Vec<String> {
    if cmd.is_empty() {
        return Vec::new();
    }
    if cmd.contains('/') {
        return vec![cmd.to_owned()];
    }
    path.split(':')
        .map(|dir| match dir {
            "" => format!("./{cmd}"),
            dir => format!("{}/{cmd}", dir.trim_end_matches('/')),
        })
        .collect()
}

/// The resource a lowercase name stands for, with its C name; `None` for unknown names, which
/// the protocol says to skip.
pub(crate) fn rlimit_resource(name: &str) -> Option<(Resource, &'static str)> {
    Some(match name {
        "cpu" => (Resource::RLIMIT_CPU, "RLIMIT_CPU"),
        "fsize" => (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        "data" => (Resource::RLIMIT_DATA, "RLIMIT_DATA"),
        "stack" => (Resource::RLIMIT_STACK, "RLIMIT_STACK"),
        "core" => (Resource::RLIMIT_CORE, "RLIMIT_CORE"),
        "rss" => (Resource::RLIMIT_RSS, "RLIMIT_RSS"),
        "nproc" => (Resource::RLIMIT_NPROC, "RLIMIT_NPROC"),
        "nofile" => (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        "memlock" => (Resource::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        "as" => (Resource::RLIMIT_AS, "RLIMIT_AS"),
        "locks" => (Resource::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        "sigpending" => (Resource::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        "msgqueue" => (Resource::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        "nice" => (Resource::RLIMIT_NICE, "RLIMIT_NICE"),
        "rtprio" => (Resource::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        "rttime" => (Resource::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
        _ => return None,
    })
}

fn parse_rlimit(limit: &ExecRlimit) -> Option<Rlimit> {
    let (resource, name) = rlimit_resource(&limit.resource)?;
    Some(Rlimit { resource, name, soft: limit.soft, hard: limit.hard })
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::exec::ExecFailureKind;

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn config() -> ExecConfig {
        ExecConfig {
            default_cwd: None,
            default_user: None,
            base_env: pairs(&[("PATH", "/bin"), ("TERM", "linux")]),
            root: "/".into(),
            confinement: Default::default(),
            limits: Default::default(),
        }
    }

    fn users() -> UserDb {
        UserDb::parse(
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "root:x:0:\nalice:x:1000:\n",
        )
    }

    #[test]
    fn request_env_overrides_base_env() {
        let env = build_env(&pairs(&[("A", "1"), ("B", "2")]), &["A=9".into()], None);
        assert_eq!((lookup(&env, "A"), lookup(&env, "B")), (Some("9"), Some("2")));
    }

    #[test]
    fn env_entries_without_equals_are_ignored() {
        let env = build_env(&[], &["NOEQUALS".into(), "=empty-key".into()], None);
        assert_eq!(env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["HOME", "PATH"]);
    }

    #[test]
    fn env_value_may_contain_equals() {
        let env = build_env(&[], &["OPTS=a=b".into()], None);
        assert_eq!(lookup(&env, "OPTS"), Some("a=b"));
    }

    #[test]
    fn last_path_entry_in_request_is_the_one_edited() {
        let env = build_env(&[], &["PATH=/first".into(), "PATH=/second".into()], None);
        assert_eq!(lookup(&env, "PATH"), Some("/.msb/scripts:/second"));
    }

    #[test]
    fn missing_path_gets_scripts_and_the_default() {
        assert_eq!(ensure_scripts_on_path(None), format!("/.msb/scripts:{DEFAULT_PATH}"));
    }

    #[test]
    fn agent_path_is_used_when_request_has_none() {
        let env = build_env(&pairs(&[("PATH", "/agent/bin")]), &[], None);
        assert_eq!(lookup(&env, "PATH"), Some("/.msb/scripts:/agent/bin"));
    }

    #[test]
    fn scripts_dir_already_on_path_is_not_added_twice() {
        assert_eq!(ensure_scripts_on_path(Some("/bin:/.msb/scripts")), "/bin:/.msb/scripts");
    }

    #[test]
    fn home_comes_from_passwd_unless_requested() {
        let base = pairs(&[("HOME", "/")]);
        let env = build_env(&base, &[], Some("/home/alice"));
        assert_eq!(lookup(&env, "HOME"), Some("/home/alice"));
        let env = build_env(&base, &["HOME=/tmp".into()], Some("/home/alice"));
        assert_eq!(lookup(&env, "HOME"), Some("/tmp"));
    }

    #[test]
    fn home_defaults_to_root_dir_without_passwd_entry() {
        assert_eq!(lookup(&build_env(&[], &[], None), "HOME"), Some("/"));
    }

    #[test]
    fn command_with_slash_is_its_only_candidate() {
        assert_eq!(exec_candidates("./run.sh", "/bin:/usr/bin"), ["./run.sh"]);
    }

    #[test]
    fn bare_command_is_tried_in_each_path_dir_in_order() {
        assert_eq!(exec_candidates("ls", "/a:/b/:"), ["/a/ls", "/b/ls", "./ls"]);
    }

    #[test]
    fn empty_command_has_no_candidates() {
        assert!(exec_candidates("", "/bin").is_empty());
    }

    #[test]
    fn known_rlimit_names_resolve_and_unknown_are_skipped() {
        assert_eq!(rlimit_resource("nofile"), Some((Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE")));
        assert_eq!(rlimit_resource("as"), Some((Resource::RLIMIT_AS, "RLIMIT_AS")));
        assert_eq!(rlimit_resource("NOFILE"), None);
        assert_eq!(rlimit_resource("bogus"), None);
    }

    #[test]
    fn every_protocol_rlimit_name_is_known() {
        let names = "cpu fsize data stack core rss nproc nofile memlock as locks sigpending \
                     msgqueue nice rtprio rttime";
        for name in names.split_whitespace() {
            assert!(rlimit_resource(name).is_some(), "{name}");
        }
    }

    #[test]
    fn cwd_falls_back_from_request_to_default_to_root() {
        assert_eq!(choose_cwd(Some("/w"), Some("/d")), "/w");
        assert_eq!(choose_cwd(None, Some("/d")), "/d");
        assert_eq!(choose_cwd(Some(""), None), "/");
    }

    #[test]
    fn blank_user_falls_back_to_default_then_none() {
        assert_eq!(user_spec(Some("  "), Some("alice")), Some("alice"));
        assert_eq!(user_spec(None, None), None);
    }

    #[test]
    fn plan_without_user_keeps_identity_but_sets_root_home() {
        let plan = plan(&config(), &users(), &ExecRequest::new("ls")).unwrap();
        assert_eq!(plan.identity, None);
        assert!(plan.envp.iter().any(|e| e.to_bytes() == b"HOME=/root"));
    }

    #[test]
    fn plan_with_user_switches_and_uses_their_home() {
        let request = ExecRequest { user: Some("alice".into()), ..ExecRequest::new("ls") };
        let plan = plan(&config(), &users(), &request).unwrap();
        assert_eq!(plan.identity.map(|i| i.uid), Some(1000));
        assert!(plan.envp.iter().any(|e| e.to_bytes() == b"HOME=/home/alice"));
    }

    #[test]
    fn plan_with_unknown_user_is_user_setup_failed() {
        let request = ExecRequest { user: Some("mallory".into()), ..ExecRequest::new("ls") };
        let failed = plan(&config(), &users(), &request).unwrap_err();
        assert_eq!(failed.kind, ExecFailureKind::UserSetupFailed);
    }

    #[test]
    fn plan_with_nul_in_argument_is_bad_args() {
        let request = ExecRequest { args: vec!["a\0b".into()], ..ExecRequest::new("echo") };
        let failed = plan(&config(), &users(), &request).unwrap_err();
        assert_eq!(failed.kind, ExecFailureKind::BadArgs);
    }

    #[test]
    fn plan_with_empty_command_is_not_found() {
        let failed = plan(&config(), &users(), &ExecRequest::new("")).unwrap_err();
        assert_eq!(failed.kind, ExecFailureKind::NotFound);
    }

    #[test]
    fn plan_keeps_argv0_and_tty_size() {
        let request = ExecRequest {
            args: vec!["-l".into()],
            tty: true,
            rows: 30,
            cols: 100,
            ..ExecRequest::new("ls")
        };
        let plan = plan(&config(), &users(), &request).unwrap();
        assert_eq!(plan.argv, [CString::new("ls").unwrap(), CString::new("-l").unwrap()]);
        assert_eq!(plan.tty, Some((30, 100)));
        assert_eq!(plan.candidates[0].to_bytes(), b"/.msb/scripts/ls");
    }
}
