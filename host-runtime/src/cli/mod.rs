//! Parsing `moat run`, `create`, `exec`, `logs`, `pull` and name-only arguments. Pure: no I/O, so every rule has a unit test.
//!
//! ```text
//! moat run    [SANDBOX OPTIONS] [-t] [-e K=V]... [-w DIR] [-u USER] -- CMD [ARGS...]
//! moat create NAME [SANDBOX OPTIONS] [-e K=V]... [-w DIR] [-u USER]   (exec defaults)
//! moat exec   NAME [-t] [-e K=V]... [-w DIR] [-u USER] -- CMD [ARGS...]
//!
//! moat pull   REF [--registry-auth USER:PASS]
//!
//! SANDBOX OPTIONS: --rootfs DIR|host | --image REF [--registry-auth USER:PASS],
//!   --isolation auto|namespace|vm, --hostname NAME,
//!   -v HOST:GUEST[:ro], --tmpfs PATH[:MiB], --script NAME=BODY, --rlimit RES=SOFT[:HARD],
//!   --cpus N, --memory MiB, --max-duration D, --idle-timeout D   (D: N, Ns, Nm, Nh),
//!   --security-profile default|restricted|none, --pids-limit N (0: unlimited)
//! ```

pub mod stats;
pub(crate) mod tty;
pub mod volume;

use std::path::PathBuf;

use crate::config::{self, BadValue, SandboxConfig};

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A VM when the host can boot one, else the namespace backend with a warning.
    Auto,
    /// The namespace backend.
    Namespace,
    /// A microVM or nothing.
    Vm,
}

/// Where the sandbox's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootSource {
    /// A read-only root assembled from the host's system directories.
    Host,
    /// This directory as the read-only lower layer of a throw-away overlay.
    Dir(PathBuf),
    /// An OCI image's layers, stacked as the lower layers of a throw-away overlay.
    Image(ImageSource),
}

/// `--image REF`: the reference as given, and once resolved, its layer directories.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSource {
    /// The reference as the user wrote it (`python:3.12`).
    pub reference: String,
    /// `--registry-auth USER:PASS` for a pull; never written to the spec.
    #[serde(skip)]
    pub registry_auth: Option<String>,
    /// The layer directories, top first; empty until the image is resolved from the store.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
}

impl ImageSource {
    /// An unresolved `--image REF`.
    pub fn new(reference: impl Into<String>) -> ImageSource {
        ImageSource { reference: reference.into(), registry_auth: None, layers: Vec::new() }
    }
}

/// A parsed `moat run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// `KEY=VALUE` pairs for the command.
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    pub cwd: Option<String>,
    /// The user to run as inside the sandbox.
    pub user: Option<String>,
    /// Run the command on a PTY (`-t`).
    pub tty: bool,
    /// The root filesystem.
    pub root: RootSource,
    /// The requested backend.
    pub isolation: Isolation,
    /// The sandbox's configuration (mounts, limits, hostname...).
    pub config: SandboxConfig,
    /// The program.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Why `moat run`'s arguments are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An option needs a value and has none.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// `-e` without `=`.
    #[error("-e {0:?}: expected KEY=VALUE")]
    BadEnv(String),
    /// An unknown `--isolation` value.
    #[error("--isolation {0:?}: expected auto, namespace or vm")]
    BadIsolation(String),
    /// An option value that cannot be used.
    #[error(transparent)]
    BadValue(#[from] BadValue),
    /// An option this command does not have.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// No sandbox name given.
    #[error("no sandbox name given")]
    NoName,
    /// A positional argument this command does not take.
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
    /// An unknown `--source` value.
    #[error("--source {0:?}: expected stdout, stderr, system or all")]
    BadSource(String),
    /// A `--tail` value that is not a count.
    #[error("--tail {0:?}: expected a number of lines")]
    BadTail(String),
    /// No command after the options.
    #[error("no command given (usage: moat run [OPTIONS] -- CMD [ARGS...])")]
    NoCommand,
    /// `moat pull` without a reference.
    #[error("no image reference given")]
    NoImage,
    /// `--rootfs` and `--image` together.
    #[error("--rootfs and --image are mutually exclusive")]
    RootAndImage,
    /// `--registry-auth` without `--image`.
    #[error("--registry-auth needs --image")]
    AuthWithoutImage,
}

/// Which options a command accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// `run`: everything.
    Run,
    /// `create`: the sandbox options, with `-e`, `-w` and `-u` as the sandbox's exec defaults.
    Create,
    /// `exec`: `-e`, `-w`, `-u`, `-t`.
    Exec,
}

/// Parses the arguments after `run`.
pub fn parse_run(args: &[String]) -> Result<RunArgs, UsageError> {
    let parsed = parse_options(args, Accepts::Run)?;
    // With an image, no command means the image's Entrypoint + Cmd.
    if parsed.cmd.is_empty() && !matches!(parsed.root, RootSource::Image(_)) {
        return Err(UsageError::NoCommand);
    }
    Ok(parsed)
}

/// A parsed `moat create NAME [OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    /// The sandbox name.
    pub name: String,
    /// The root filesystem.
    pub root: RootSource,
    /// The requested backend.
    pub isolation: Isolation,
    /// The sandbox's configuration; `-e`, `-w`, `-u` are its exec defaults.
    pub config: SandboxConfig,
}

/// Parses the arguments after `create`.
pub fn parse_create(args: &[String]) -> Result<CreateArgs, UsageError> {
    let (name, rest) = args.split_first().ok_or(UsageError::NoName)?;
    let parsed = parse_options(rest, Accepts::Create)?;
    if !parsed.cmd.is_empty() {
        return Err(UsageError::UnexpectedArgument(parsed.cmd));
    }
    let config =
        SandboxConfig { env: parsed.env, cwd: parsed.cwd, user: parsed.user, ..parsed.config };
    Ok(CreateArgs { name: name.clone(), root: parsed.root, isolation: parsed.isolation, config })
}

/// A parsed `moat exec NAME [-t] [-e K=V]... [-w DIR] [-u USER] -- CMD [ARGS...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// The sandbox name.
    pub name: String,
    /// The command, its environment, user, working directory and tty (the sandbox fields unused).
    pub run: RunArgs,
}

/// Parses the arguments after `exec`.
pub fn parse_exec(args: &[String]) -> Result<ExecArgs, UsageError> {
    let (name, rest) = args.split_first().ok_or(UsageError::NoName)?;
    let run = parse_options(rest, Accepts::Exec)?;
    if run.cmd.is_empty() {
        return Err(UsageError::NoCommand);
    }
    Ok(ExecArgs { name: name.clone(), run })
}

/// Parses options up to the command; an empty `cmd` means none was given.
fn parse_options(args: &[String], accepts: Accepts) -> Result<RunArgs, UsageError> {
    let mut parsed = RunArgs {
        env: Vec::new(),
        cwd: None,
        user: None,
        tty: false,
        root: RootSource::Host,
        isolation: Isolation::Auto,
        config: SandboxConfig::default(),
        cmd: String::new(),
        args: Vec::new(),
    };
    let mut rest = args.iter();
    let mut command = Vec::new();
    let mut rootfs_given = false;
    let mut registry_auth = None;
    let sandbox = matches!(accepts, Accepts::Run | Accepts::Create);
    let command_options = matches!(accepts, Accepts::Run | Accepts::Exec);
    while let Some(arg) = rest.next() {
        let mut value =
            || rest.next().cloned().ok_or_else(|| UsageError::MissingValue(arg.clone()));
        let config = &mut parsed.config;
        match arg.as_str() {
            "--" => {
                command.extend(rest.by_ref().cloned());
                break;
            }
            "-e" | "--env" => {
                let pair = value()?;
                if !pair.contains('=') || pair.starts_with('=') {
                    return Err(UsageError::BadEnv(pair));
                }
                parsed.env.push(pair);
            }
            "-w" | "--workdir" => parsed.cwd = Some(value()?),
            "-u" | "--user" => parsed.user = Some(value()?),
            "-t" | "--tty" if command_options => parsed.tty = true,
            "--rootfs" if sandbox => {
                let root = value()?;
                if matches!(parsed.root, RootSource::Image(_)) {
                    return Err(UsageError::RootAndImage);
                }
                rootfs_given = true;
                parsed.root =
                    if root == "host" { RootSource::Host } else { RootSource::Dir(root.into()) };
            }
            "--image" if sandbox => {
                let reference = value()?;
                if rootfs_given {
                    return Err(UsageError::RootAndImage);
                }
                parsed.root = RootSource::Image(ImageSource::new(reference));
            }
            "--registry-auth" if sandbox => registry_auth = Some(value()?),
            "--isolation" if sandbox => {
                parsed.isolation = match value()?.as_str() {
                    "auto" => Isolation::Auto,
                    "namespace" => Isolation::Namespace,
                    "vm" => Isolation::Vm,
                    other => return Err(UsageError::BadIsolation(other.to_owned())),
                };
            }
            "--hostname" if sandbox => config.hostname = Some(config::parse_hostname(&value()?)?),
            "-v" | "--volume" if sandbox => config.volumes.push(config::parse_volume(&value()?)?),
            "--patch" if sandbox => config.patches.push(crate::patches::parse_patch(&value()?)?),
            "--tmpfs" if sandbox => config.tmpfs.push(config::parse_tmpfs(&value()?)?),
            "--script" if sandbox => config.scripts.push(config::parse_script(&value()?)?),
            "--rlimit" if sandbox => config.rlimits.push(config::parse_rlimit(&value()?)?),
            "--cpus" if sandbox => config.vcpus = Some(config::parse_cpus(&value()?)?),
            "--memory" if sandbox => config.memory_mib = Some(config::parse_memory(&value()?)?),
            "--pids-limit" if sandbox => {
                config.pids_limit = Some(config::parse_pids_limit(&value()?)?);
            }
            "--security-profile" if sandbox => {
                config.security_profile = config::parse_security_profile(&value()?)?;
            }
            "--max-duration" if sandbox => {
                config.max_duration_secs =
                    Some(config::parse_duration("--max-duration", &value()?)?);
            }
            "--idle-timeout" if sandbox => {
                config.idle_timeout_secs =
                    Some(config::parse_duration("--idle-timeout", &value()?)?);
            }
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            _ => {
                command.push(arg.clone());
                command.extend(rest.by_ref().cloned());
                break;
            }
        }
    }
    match (&mut parsed.root, registry_auth) {
        (RootSource::Image(image), auth) => image.registry_auth = auth,
        (_, Some(_)) => return Err(UsageError::AuthWithoutImage),
        (_, None) => {}
    }
    let mut command = command.into_iter();
    parsed.cmd = command.next().unwrap_or_default();
    parsed.args = command.collect();
    Ok(parsed)
}

/// A parsed `moat pull REF [--registry-auth USER:PASS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullArgs {
    /// The image reference.
    pub reference: String,
    /// `USER:PASS` for the registry.
    pub registry_auth: Option<String>,
}

/// Parses the arguments after `pull`.
pub fn parse_pull(args: &[String]) -> Result<PullArgs, UsageError> {
    let mut reference = None;
    let mut registry_auth = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--registry-auth" => {
                registry_auth = Some(
                    rest.next().cloned().ok_or_else(|| UsageError::MissingValue(arg.clone()))?,
                );
            }
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            other if reference.is_none() => reference = Some(other.to_owned()),
            extra => return Err(UsageError::UnexpectedArgument(extra.to_owned())),
        }
    }
    Ok(PullArgs { reference: reference.ok_or(UsageError::NoImage)?, registry_auth })
}

/// A parsed `moat login SERVER -u USER (-p PASS | --password-stdin)`.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginArgs {
    /// The registry (`host[:port]`, `docker.io`).
    pub server: String,
    /// The user.
    pub username: String,
    /// The password, or `None` for `--password-stdin`.
    pub password: Option<String>,
}

impl std::fmt::Debug for LoginArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginArgs({}, {})", self.server, self.username)
    }
}

/// Parses the arguments after `login`.
pub fn parse_login(args: &[String]) -> Result<LoginArgs, UsageError> {
    let (mut server, mut username, mut password, mut stdin) = (None, None, None, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value =
            || rest.next().cloned().ok_or_else(|| UsageError::MissingValue(arg.clone()));
        match arg.as_str() {
            "-u" | "--username" => username = Some(value()?),
            "-p" | "--password" => password = Some(value()?),
            "--password-stdin" => stdin = true,
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            other if server.is_none() => server = Some(other.to_owned()),
            extra => return Err(UsageError::UnexpectedArgument(extra.to_owned())),
        }
    }
    let username = username.ok_or_else(|| UsageError::MissingValue("-u".to_owned()))?;
    if stdin == password.is_some() {
        return Err(UsageError::MissingValue("exactly one of -p and --password-stdin".to_owned()));
    }
    Ok(LoginArgs { server: server.unwrap_or_else(|| "docker.io".to_owned()), username, password })
}

/// Which exec.log records `moat logs` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFilter {
    /// Exec stdout only.
    Stdout,
    /// Exec stderr only.
    Stderr,
    /// Lifecycle markers only.
    System,
    /// Everything.
    All,
}

/// A parsed `moat logs NAME [--source stdout|stderr|system|all] [--tail N] [-f]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsArgs {
    /// The sandbox name.
    pub name: String,
    /// Which records.
    pub source: LogFilter,
    /// Only the last N lines of the selected output.
    pub tail: Option<usize>,
    /// Keep printing new records.
    pub follow: bool,
}

/// Parses the arguments after `logs`.
pub fn parse_logs(args: &[String]) -> Result<LogsArgs, UsageError> {
    let mut parsed =
        LogsArgs { name: String::new(), source: LogFilter::All, tail: None, follow: false };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value =
            || rest.next().cloned().ok_or_else(|| UsageError::MissingValue(arg.clone()));
        match arg.as_str() {
            "--source" => {
                parsed.source = match value()?.as_str() {
                    "stdout" => LogFilter::Stdout,
                    "stderr" => LogFilter::Stderr,
                    "system" => LogFilter::System,
                    "all" => LogFilter::All,
                    other => return Err(UsageError::BadSource(other.to_owned())),
                };
            }
            "--tail" => {
                let n = value()?;
                parsed.tail = Some(n.parse().map_err(|_| UsageError::BadTail(n))?);
            }
            "-f" | "--follow" => parsed.follow = true,
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            name if parsed.name.is_empty() => parsed.name = name.to_owned(),
            extra => return Err(UsageError::UnexpectedArgument(extra.to_owned())),
        }
    }
    if parsed.name.is_empty() {
        return Err(UsageError::NoName);
    }
    Ok(parsed)
}

/// Parses `NAME` alone, or `-f NAME` / `NAME -f` when `force` names the flag (`rm`).
pub fn parse_name(args: &[String], force: Option<&str>) -> Result<(String, bool), UsageError> {
    let mut name = None;
    let mut forced = false;
    for arg in args {
        match arg.as_str() {
            flag if Some(flag) == force || (force.is_some() && flag == "--force") => forced = true,
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            other if name.is_none() => name = Some(other.to_owned()),
            extra => return Err(UsageError::UnexpectedArgument(extra.to_owned())),
        }
    }
    Ok((name.ok_or(UsageError::NoName)?, forced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::SecurityProfile;

    fn parse(args: &[&str]) -> Result<RunArgs, UsageError> {
        parse_run(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_host_root_and_auto_isolation() {
        let run = parse(&["--", "echo", "hello"]).unwrap();
        assert_eq!((run.root, run.isolation), (RootSource::Host, Isolation::Auto));
        assert_eq!((run.cmd.as_str(), run.args), ("echo", vec!["hello".to_owned()]));
    }

    #[test]
    fn options_before_the_separator_are_parsed() {
        let run = parse(&[
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--rootfs",
            "/srv/r",
            "--isolation",
            "namespace",
            "--",
            "sh",
        ])
        .unwrap();
        assert_eq!(run.env, vec!["A=1".to_owned()]);
        assert_eq!(run.cwd.as_deref(), Some("/tmp"));
        assert_eq!(run.root, RootSource::Dir("/srv/r".into()));
        assert_eq!(run.isolation, Isolation::Namespace);
    }

    #[test]
    fn arguments_after_the_command_are_not_options() {
        let run = parse(&["ls", "-l", "--", "-e"]).unwrap();
        assert_eq!(run.args, vec!["-l".to_owned(), "--".to_owned(), "-e".to_owned()]);
    }

    #[test]
    fn missing_command_is_an_error() {
        assert_eq!(parse(&["--"]), Err(UsageError::NoCommand));
    }

    #[test]
    fn env_without_equals_is_refused() {
        assert_eq!(parse(&["-e", "A", "--", "x"]), Err(UsageError::BadEnv("A".into())));
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn create_takes_a_name_and_backend_options_but_no_command() {
        let create = parse_create(&strings(&["box", "--rootfs", "/srv"])).unwrap();
        assert_eq!((create.name.as_str(), create.root), ("box", RootSource::Dir("/srv".into())));
        assert!(parse_create(&strings(&["box", "--", "sh"])).is_err());
        assert!(parse_create(&strings(&["box", "-t"])).is_err());
    }

    #[test]
    fn exec_takes_user_env_and_a_command() {
        let exec =
            parse_exec(&strings(&["box", "-t", "-u", "nobody", "-e", "A=1", "--", "id"])).unwrap();
        assert_eq!((exec.name.as_str(), exec.run.user.as_deref()), ("box", Some("nobody")));
        assert!(exec.run.tty);
        assert!(parse_exec(&strings(&["box", "--memory", "128", "--", "id"])).is_err());
        assert_eq!((exec.run.cmd.as_str(), exec.run.env), ("id", vec!["A=1".to_owned()]));
    }

    #[test]
    fn create_keeps_env_workdir_and_user_as_sandbox_defaults() {
        let create =
            parse_create(&strings(&["box", "-e", "A=1", "-w", "/w", "-u", "nobody"])).unwrap();
        assert_eq!(create.config.env, vec!["A=1".to_owned()]);
        assert_eq!(create.config.cwd.as_deref(), Some("/w"));
        assert_eq!(create.config.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn sandbox_options_fill_the_config() {
        let run = parse(&[
            "--hostname",
            "h1",
            "-v",
            "/srv:/data:ro",
            "--tmpfs",
            "/scratch:16",
            "--script",
            "hi=echo hi",
            "--rlimit",
            "nofile=64",
            "--cpus",
            "2",
            "--memory",
            "256",
            "--max-duration",
            "5m",
            "--idle-timeout",
            "30",
            "--security-profile",
            "restricted",
            "--pids-limit",
            "64",
            "-t",
            "--",
            "sh",
        ])
        .unwrap();
        let c = &run.config;
        assert_eq!(c.hostname.as_deref(), Some("h1"));
        assert_eq!(
            (c.volumes.len(), c.tmpfs.len(), c.scripts.len(), c.rlimits.len()),
            (1, 1, 1, 1)
        );
        assert_eq!((c.vcpus, c.memory_mib), (Some(2), Some(256)));
        assert_eq!((c.max_duration_secs, c.idle_timeout_secs), (Some(300), Some(30)));
        assert_eq!((c.security_profile, c.pids_limit), (SecurityProfile::Restricted, Some(64)));
        assert!(run.tty);
    }

    #[test]
    fn a_bad_option_value_names_the_option() {
        let err = parse(&["--rlimit", "files=1", "--", "x"]).unwrap_err();
        assert!(err.to_string().starts_with("--rlimit \"files=1\""), "{err}");
    }

    #[test]
    fn logs_parses_source_and_tail() {
        let logs = parse_logs(&strings(&["box", "--source", "stderr", "--tail", "3"])).unwrap();
        assert_eq!((logs.source, logs.tail, logs.follow), (LogFilter::Stderr, Some(3), false));
        assert!(parse_logs(&strings(&["--tail", "x", "box"])).is_err());
    }

    #[test]
    fn rm_force_flag_is_found_on_either_side_of_the_name() {
        assert_eq!(parse_name(&strings(&["-f", "b"]), Some("-f")).unwrap(), ("b".into(), true));
        assert_eq!(parse_name(&strings(&["b"]), Some("-f")).unwrap(), ("b".into(), false));
        assert!(parse_name(&strings(&["-f", "b"]), None).is_err());
    }

    #[test]
    fn image_without_a_command_runs_the_image_defaults() {
        let run = parse(&["--image", "python:3.12"]).unwrap();
        assert_eq!(run.root, RootSource::Image(ImageSource::new("python:3.12")));
        assert!(run.cmd.is_empty());
        let run = parse(&["--image", "bb", "--registry-auth", "u:p", "--", "ls", "/"]).unwrap();
        let RootSource::Image(image) = &run.root else { panic!("{:?}", run.root) };
        assert_eq!(image.registry_auth.as_deref(), Some("u:p"));
        assert_eq!((run.cmd.as_str(), run.args), ("ls", vec!["/".to_owned()]));
    }

    #[test]
    fn rootfs_and_image_are_mutually_exclusive() {
        assert_eq!(parse(&["--rootfs", "host", "--image", "bb"]), Err(UsageError::RootAndImage));
        assert_eq!(parse(&["--image", "bb", "--rootfs", "/r"]), Err(UsageError::RootAndImage));
        assert_eq!(
            parse(&["--registry-auth", "u:p", "--", "x"]),
            Err(UsageError::AuthWithoutImage)
        );
    }

    #[test]
    fn the_registry_auth_is_never_written_to_the_spec() {
        let mut image = ImageSource::new("bb");
        image.registry_auth = Some("u:secret".into());
        let json = serde_json::to_string(&RootSource::Image(image)).unwrap();
        assert!(!json.contains("secret"), "{json}");
    }

    #[test]
    fn pull_takes_one_reference_and_optional_auth() {
        let pull = parse_pull(&strings(&["--registry-auth", "u:p", "bb:1"])).unwrap();
        assert_eq!((pull.reference.as_str(), pull.registry_auth.as_deref()), ("bb:1", Some("u:p")));
        assert_eq!(parse_pull(&[]), Err(UsageError::NoImage));
        assert!(parse_pull(&strings(&["a", "b"])).is_err());
    }

    #[test]
    fn login_needs_a_user_and_one_password_source() {
        let login = parse_login(&strings(&["127.0.0.1:5000", "-u", "me", "-p", "pw"])).unwrap();
        assert_eq!(
            (login.server.as_str(), login.password.as_deref()),
            ("127.0.0.1:5000", Some("pw"))
        );
        let hub = parse_login(&strings(&["-u", "me", "--password-stdin"])).unwrap();
        assert_eq!((hub.server.as_str(), hub.password), ("docker.io", None));
        assert!(parse_login(&strings(&["-u", "me"])).is_err());
        assert!(parse_login(&strings(&["-u", "me", "-p", "x", "--password-stdin"])).is_err());
        assert!(!format!("{login:?}").contains("pw"));
    }

    #[test]
    fn unknown_isolation_is_refused() {
        assert_eq!(
            parse(&["--isolation", "chroot", "--", "x"]),
            Err(UsageError::BadIsolation("chroot".into()))
        );
    }
}
