//! The `moat` command line, with clap derive: the only place that knows about flags. Each
//! subcommand is one struct; the flags several share are flattened groups
//! ([`sandbox_args`]). Parsing is pure, so every rule has a unit test; the binary (`main.rs`)
//! dispatches the parsed [`Command`] to the library.
//!
//! ```text
//! moat run    [SANDBOX OPTIONS] [-t] [-e K=V]... [-w DIR] [-u USER] [--] CMD [ARGS...]
//! moat create NAME [SANDBOX OPTIONS] [-e K=V]... [-w DIR] [-u USER]   (exec defaults)
//! moat exec   NAME [-t] [-e K=V]... [-w DIR] [-u USER] [--] CMD [ARGS...]
//! ```

pub mod cp;
pub mod logs;
pub mod port_forward;
pub mod sandbox_args;
pub mod stats;
pub(crate) mod tty;
pub mod volume;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use moat_protocol::payload::exec::ExecRequest;

pub use self::sandbox_args::{ExecArgs, IsolationArg, SandboxArgs};
use crate::api::config::{LabelFilter, RootSource, RunOptions, SandboxOptions};
use crate::api::logs::{LogCursor, LogQuery};
use crate::lifecycle::logs::{LogFilter, LogOptions};
use crate::lifecycle::stop_signal::StopSignal;

/// `moat`: microVM and namespace sandboxes.
#[derive(Debug, Parser)]
#[command(
    name = "moat",
    version,
    about = "microVM and namespace sandboxes",
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report whether this host can boot a microVM or run the namespace backend, and why.
    Doctor,
    /// Run a command in an ephemeral sandbox.
    Run(RunCmd),
    /// Boot a named sandbox that outlives this command (-e/-w/-u: defaults for its execs).
    Create(CreateCmd),
    /// Run a command in a running sandbox.
    Exec(ExecCmd),
    /// Copy a file or directory between the host and a running sandbox (NAME:/path on one side).
    Cp(cp::CpCmd),
    /// List named sandboxes.
    Ls(LsCmd),
    /// A sandbox's state and the isolation it has (profile, id map, limits) as JSON.
    Inspect(NameArg),
    /// The path of a sandbox's relay socket.
    Socket(NameArg),
    /// A sandbox's exec log.
    Logs(LogsCmd),
    /// Boot a stopped or crashed sandbox again, with the configuration it was created with.
    Start(StartCmd),
    /// Refuse new execs in a sandbox; it stops once the running ones have finished.
    Drain(NameArg),
    /// Shut a sandbox down (core.shutdown; SIGTERM after 10 s, then SIGKILL).
    Stop(StopCmd),
    /// SIGKILL a sandbox.
    Kill(NameArg),
    /// Remove a sandbox that is not running.
    Rm(RemoveCmd),
    /// Wait until a sandbox is no longer running; print its exit code.
    Wait(WaitCmd),
    /// Measure latency, throughput and memory of a sandbox.
    Bench(BenchCmd),
    /// Fetch an image into the store.
    Pull(PullCmd),
    /// List stored images.
    Images(ListCmd),
    /// Remove an image and the layers only it used.
    Rmi(RemoveCmd),
    /// Image store maintenance.
    Image(ImageCmd),
    /// Store registry credentials in ~/.docker/config.json (not checked against the registry).
    Login(LoginCmd),
    /// CPU, memory, disk and network of running sandboxes.
    Stats(stats::StatsArgs),
    /// Forward a host port to a port inside a sandbox (no guest network needed).
    PortForward(port_forward::PortForwardArgs),
    /// Named volumes, mounted with -v NAME:/path.
    Volume {
        /// What to do.
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
    /// The per-sandbox process.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(SandboxProcessArgs),
    /// Binds the root source in a private mount namespace, then execs `unshare`.
    #[command(name = "__ns-prepare", hide = true)]
    NsPrepare(DirArg),
    /// The first process in the sandbox's namespaces; execs the agent.
    #[command(name = "__ns-init", hide = true)]
    NsInit(DirArg),
    /// A VM sandbox's VM process.
    #[command(name = "__vm", hide = true)]
    Vm(DirArg),
}

/// `moat run`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunCmd {
    /// What the sandbox is made of.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The command's environment, directory and user.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Run the command on a PTY; the terminal goes raw.
    #[arg(short, long)]
    pub tty: bool,
    /// The command and its arguments (with --image and none: the image's Entrypoint + Cmd).
    #[arg(value_name = "CMD", trailing_var_arg = true, required_unless_present = "image")]
    pub command: Vec<String>,
}

impl RunCmd {
    /// The library's options for this run.
    pub fn into_options(self) -> RunOptions {
        let (root, isolation, config) = self.sandbox.into_parts();
        let command = exec_request(self.command, self.exec, self.tty);
        RunOptions { root, isolation, config, command }
    }
}

/// An exec request from the command line's words (an empty `cmd` when there are none).
fn exec_request(words: Vec<String>, exec: ExecArgs, tty: bool) -> ExecRequest {
    let mut words = words.into_iter();
    let mut request = ExecRequest::new(words.next().unwrap_or_default());
    request.args = words.collect();
    request.env = exec.env;
    request.cwd = exec.cwd;
    request.user = exec.user;
    request.tty = tty;
    request
}

/// `moat create`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateCmd {
    /// The sandbox name.
    pub name: String,
    /// What the sandbox is made of.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The defaults of every exec.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Remove an existing sandbox of this name first (killed if it is running).
    #[arg(long)]
    pub replace: bool,
    /// Stay in the foreground, tied to the sandbox: when this process ends (Ctrl-C, a signal,
    /// even SIGKILL) the sandbox is stopped; this returns when the sandbox ends.
    #[arg(long)]
    pub attach: bool,
    /// Remove the sandbox when it ends (stop, kill, crash, time limit) instead of keeping it
    /// stopped.
    #[arg(long)]
    pub ephemeral: bool,
}

impl CreateCmd {
    /// The library's options for this sandbox.
    pub fn into_options(self) -> SandboxOptions {
        let (root, isolation, mut config) = self.sandbox.into_parts();
        config.env = self.exec.env;
        config.cwd = self.exec.cwd;
        config.user = self.exec.user;
        config.ephemeral = self.ephemeral;
        SandboxOptions { name: self.name, root, isolation, config }
    }
}

/// `moat exec`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExecCmd {
    /// The sandbox name.
    pub name: String,
    /// The command's environment, directory and user.
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Run the command on a PTY; the terminal goes raw.
    #[arg(short, long)]
    pub tty: bool,
    /// SIGKILL the command after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// The command and its arguments.
    #[arg(value_name = "CMD", trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

impl ExecCmd {
    /// The exec request and its time limit.
    pub fn request(self) -> (ExecRequest, Option<Duration>) {
        (exec_request(self.command, self.exec, self.tty), self.timeout.map(Duration::from_secs))
    }
}

/// A subcommand that takes one sandbox name.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct NameArg {
    /// The sandbox name.
    pub name: String,
}

/// `moat start`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StartCmd {
    /// The sandbox name.
    pub name: String,
    /// Stay in the foreground, tied to the sandbox, as `moat create --attach`.
    #[arg(long)]
    pub attach: bool,
}

/// `moat wait`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WaitCmd {
    /// The sandbox name.
    pub name: String,
    /// Give up after this many seconds (exit status 1).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

impl WaitCmd {
    /// How long to wait (`Duration::MAX`: until it ends).
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::MAX, Duration::from_secs)
    }
}

/// `moat stop`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StopCmd {
    /// The sandbox name.
    pub name: String,
    /// SIGKILL it this many seconds after asking, instead of SIGTERM after 10 s.
    #[arg(long, value_name = "SECS", conflicts_with = "no_wait")]
    pub timeout: Option<u64>,
    /// Send core.shutdown and return; the sandbox records its own end.
    #[arg(long)]
    pub no_wait: bool,
    /// Send SIG (a name such as SIGINT or USR1, or a number) to every running exec first,
    /// instead of the sandbox's stop signal (--stop-signal, else the image's StopSignal); they
    /// get --timeout (default 10 s) to end before core.shutdown.
    #[arg(long, value_name = "SIG")]
    pub signal: Option<StopSignal>,
}

/// `moat ls`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LsCmd {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Only sandboxes with this label (every filter must hold).
    #[arg(long = "filter", value_name = "label=KEY[=VALUE]", value_parser = label_filter)]
    pub filters: Vec<LabelFilter>,
}

/// `--filter label=KEY[=VALUE]`.
fn label_filter(value: &str) -> Result<LabelFilter, String> {
    let expected = || format!("--filter {value:?}: expected label=KEY or label=KEY=VALUE");
    let label = value.strip_prefix("label=").ok_or_else(expected)?;
    let (key, value) = match label.split_once('=') {
        Some((key, value)) => (key, Some(value.to_owned())),
        None => (label, None),
    };
    if key.is_empty() {
        return Err(expected());
    }
    Ok(LabelFilter { key: key.to_owned(), value })
}

/// `moat images`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListCmd {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `moat rm`, `moat rmi`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RemoveCmd {
    /// The sandbox name (rm) or image reference (rmi).
    pub name: String,
    /// rm: kill a live sandbox first; rmi: remove even when a sandbox uses the image.
    #[arg(short, long)]
    pub force: bool,
}

/// `--source`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// Exec stdout only.
    Stdout,
    /// Exec stderr only.
    Stderr,
    /// Lifecycle markers only.
    System,
    /// Everything.
    All,
}

/// `moat logs`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LogsCmd {
    /// The sandbox name.
    pub name: String,
    /// Which records.
    #[arg(long, value_enum, default_value = "all")]
    pub source: SourceArg,
    /// Only the last N lines of the selected output.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Keep printing new records while the sandbox is live.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records from this time on: RFC 3339 (2026-04-30T20:32:59Z) or ago (90s, 10m, 2h, 1d).
    #[arg(long, value_name = "TIME", value_parser = logs::parse_time)]
    pub since: Option<std::time::SystemTime>,
    /// Only records up to this time (as --since); -f ends once it has passed.
    #[arg(long, value_name = "TIME", value_parser = logs::parse_time)]
    pub until: Option<std::time::SystemTime>,
    /// Only records after this cursor (from a --json line).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<LogCursor>,
    /// One JSON object per record, with its cursor (--tail then counts records).
    #[arg(long)]
    pub json: bool,
}

impl LogsCmd {
    /// The library's log options.
    pub fn options(&self) -> LogOptions {
        let source = match self.source {
            SourceArg::Stdout => LogFilter::Stdout,
            SourceArg::Stderr => LogFilter::Stderr,
            SourceArg::System => LogFilter::System,
            SourceArg::All => LogFilter::All,
        };
        let mut query = LogQuery::new().sources(source.sources());
        if let Some(since) = self.since {
            query = query.since(since);
        }
        if let Some(until) = self.until {
            query = query.until(until);
        }
        if let Some(after) = self.after {
            query = query.after(after);
        }
        LogOptions { query, tail: self.tail, follow: self.follow, json: self.json }
    }
}

/// `moat bench`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct BenchCmd {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Smaller sizes: a quick check rather than a measurement.
    #[arg(long)]
    pub quick: bool,
}

/// `moat pull`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PullCmd {
    /// The image reference.
    pub reference: String,
    /// Credentials for the registry (else ~/.docker/config.json).
    #[arg(long, value_name = "USER:PASS")]
    pub registry_auth: Option<String>,
}

/// `moat image`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ImageCmd {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageSubcommand,
}

/// `moat image`'s subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ImageSubcommand {
    /// Remove layers no image uses and abandoned partial pulls.
    Prune,
}

/// `moat login`.
#[derive(Clone, PartialEq, Eq, Args)]
pub struct LoginCmd {
    /// The registry (`host[:port]`).
    #[arg(default_value = "docker.io")]
    pub server: String,
    /// The user.
    #[arg(short, long)]
    pub username: String,
    /// The password.
    #[arg(short, long, required_unless_present = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
}

impl std::fmt::Debug for LoginCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginCmd({}, {})", self.server, self.username)
    }
}

/// `moat __sandbox DIR [--attached]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SandboxProcessArgs {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Stop when stdin (the creator's lifeline) reaches its end (`lifecycle::attach`).
    #[arg(long)]
    pub attached: bool,
}

/// The sandbox directory argument of the hidden subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DirArg {
    /// The sandbox directory.
    pub dir: PathBuf,
}

/// What a parse that did not yield a command means for the process.
#[derive(Debug)]
pub enum Parsed {
    /// A command to run.
    Command(Box<Command>),
    /// `--help` or `--version`: print this on stdout and succeed.
    Info(String),
    /// A usage error: what to print on stderr (one `moat: ...` line, or the help when no
    /// subcommand was given).
    Usage(String),
}

/// Parses `args` (the program name first), turning clap's errors into one line.
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::error::ErrorKind;
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    match parsed {
        Ok((mut cli, matches)) => match network_in_order(&mut cli.command, &matches) {
            Ok(()) => Parsed::Command(Box::new(cli.command)),
            Err(err) => Parsed::Usage(format!("moat: {err}\n")),
        },
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Parsed::Info(err.render().to_string())
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Parsed::Usage(err.render().to_string())
        }
        Err(err) => Parsed::Usage(format!("moat: {}\n", one_line(&err.render().to_string()))),
    }
}

/// Merges `run`'s or `create`'s `--allow` and `--deny` rules in command-line order (first match
/// wins, so their order is the policy), and refuses a host port published twice.
fn network_in_order(
    command: &mut Command,
    matches: &clap::ArgMatches,
) -> Result<(), crate::network::NetworkUsageError> {
    let sandbox = match command {
        Command::Run(run) => &mut run.sandbox,
        Command::Create(create) => &mut create.sandbox,
        _ => return Ok(()),
    };
    let Some((_, sub)) = matches.subcommand() else { return Ok(()) };
    let indexed = |id: &str, rules: &[crate::network::Rule]| {
        sub.indices_of(id).into_iter().flatten().zip(rules.to_vec()).collect::<Vec<_>>()
    };
    let mut rules = indexed("allow", &sandbox.allow);
    rules.extend(indexed("deny", &sandbox.deny));
    rules.sort_by_key(|(index, _)| *index);
    sandbox.rules = rules.into_iter().map(|(_, rule)| rule).collect();
    crate::network::parse::check_published(&sandbox.publish)
}

/// clap's message without its usage and tip lines, on one line.
fn one_line(rendered: &str) -> String {
    let mut words = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip:") {
            continue;
        }
        words.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    words.join(" ")
}

/// The subcommand's name as the user typed it, for error lines (`moat run: ...`).
pub fn name_of(command: &Command) -> &'static str {
    match command {
        Command::Doctor => "doctor",
        Command::Run(_) => "run",
        Command::Create(_) => "create",
        Command::Exec(_) => "exec",
        Command::Cp(_) => "cp",
        Command::Ls(_) => "ls",
        Command::Inspect(_) => "inspect",
        Command::Socket(_) => "socket",
        Command::Logs(_) => "logs",
        Command::Start(_) => "start",
        Command::Drain(_) => "drain",
        Command::Stop(_) => "stop",
        Command::Kill(_) => "kill",
        Command::Rm(_) => "rm",
        Command::Wait(_) => "wait",
        Command::Bench(_) => "bench",
        Command::Pull(_) => "pull",
        Command::Images(_) => "images",
        Command::Rmi(_) => "rmi",
        Command::Image(_) => "image",
        Command::Login(_) => "login",
        Command::Stats(_) => "stats",
        Command::PortForward(_) => "port-forward",
        Command::Volume { .. } => "volume",
        Command::Sandbox(_) => "__sandbox",
        Command::NsPrepare(_) => "__ns-prepare",
        Command::NsInit(_) => "__ns-init",
        Command::Vm(_) => "__vm",
    }
}

/// Whether a run's root is an image (with no command, the image's defaults run).
pub fn runs_image(options: &RunOptions) -> bool {
    matches!(options.root, RootSource::Image(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::{ImageSource, Isolation};
    use crate::security::SecurityProfile;

    fn parse_ok(args: &[&str]) -> Command {
        match parse(std::iter::once("moat").chain(args.iter().copied())) {
            Parsed::Command(command) => *command,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(std::iter::once("moat").chain(args.iter().copied())) {
            Parsed::Usage(line) => line,
            other => panic!("{args:?} parsed: {other:?}"),
        }
    }

    fn run(args: &[&str]) -> RunOptions {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        match parse_ok(&all) {
            Command::Run(run) => run.into_options(),
            other => panic!("{other:?}"),
        }
    }

    fn create(args: &[&str]) -> SandboxOptions {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        match parse_ok(&all) {
            Command::Create(create) => create.into_options(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_takes_replace_and_ephemeral_and_start_takes_a_name() {
        let Command::Create(plain) = parse_ok(&["create", "box"]) else { panic!("not create") };
        assert!(!plain.replace && !plain.into_options().config.ephemeral);
        let Command::Create(both) = parse_ok(&["create", "--replace", "box", "--ephemeral"]) else {
            panic!("not create")
        };
        assert!(both.replace);
        assert!(both.into_options().config.ephemeral);
        let Command::Start(start) = parse_ok(&["start", "box"]) else { panic!("not start") };
        assert_eq!((start.name.as_str(), start.attach), ("box", false));
        assert!(usage_error(&["start"]).contains("NAME"), "start needs a name");
        let Command::Start(start) = parse_ok(&["start", "--attach", "box"]) else {
            panic!("not start")
        };
        assert!(start.attach);
        let Command::Create(create) = parse_ok(&["create", "box", "--attach"]) else {
            panic!("not create")
        };
        assert!(create.attach);
    }

    #[test]
    fn defaults_are_host_root_and_auto_isolation() {
        let run = run(&["--", "echo", "hello"]);
        assert_eq!((run.root, run.isolation), (RootSource::Host, Isolation::Auto));
        assert_eq!(
            (run.command.cmd.as_str(), run.command.args),
            ("echo", vec!["hello".to_owned()])
        );
    }

    #[test]
    fn options_before_the_separator_are_parsed() {
        let run = run(&[
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
        ]);
        assert_eq!(run.command.env, vec!["A=1".to_owned()]);
        assert_eq!(run.command.cwd.as_deref(), Some("/tmp"));
        assert_eq!(run.root, RootSource::Dir("/srv/r".into()));
        assert_eq!(run.isolation, Isolation::Namespace);
    }

    #[test]
    fn arguments_after_the_command_are_not_options() {
        let run = run(&["ls", "-l", "--", "-e"]);
        assert_eq!(run.command.cmd, "ls");
        assert_eq!(run.command.args, vec!["-l".to_owned(), "--".to_owned(), "-e".to_owned()]);
    }

    #[test]
    fn missing_command_is_an_error() {
        assert!(usage_error(&["run", "--"]).contains("<CMD>"));
    }

    #[test]
    fn env_without_equals_is_refused() {
        let err = usage_error(&["run", "-e", "A", "--", "x"]);
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn create_takes_a_name_and_backend_options_but_no_command() {
        let create = create(&["box", "--rootfs", "/srv"]);
        assert_eq!((create.name.as_str(), create.root), ("box", RootSource::Dir("/srv".into())));
        usage_error(&["create", "box", "--", "sh"]);
        assert!(usage_error(&["create", "box", "-t"]).contains("'-t'"));
    }

    #[test]
    fn exec_takes_user_env_and_a_command() {
        let Command::Exec(exec) = parse_ok(&[
            "exec",
            "box",
            "-t",
            "-u",
            "nobody",
            "-e",
            "A=1",
            "--timeout",
            "9",
            "--",
            "id",
        ]) else {
            panic!("not exec")
        };
        assert_eq!(exec.name, "box");
        let (request, timeout) = exec.request();
        assert_eq!(timeout, Some(Duration::from_secs(9)));
        assert_eq!(request.user.as_deref(), Some("nobody"));
        assert!(request.tty);
        assert_eq!((request.cmd.as_str(), request.env), ("id", vec!["A=1".to_owned()]));
        usage_error(&["exec", "box", "--memory", "128", "--", "id"]);
        usage_error(&["exec", "box"]);
        usage_error(&["exec", "box", "--timeout", "0", "id"]);
        usage_error(&["run", "--bogus", "--", "id"]);
    }

    #[test]
    fn create_keeps_env_workdir_and_user_as_sandbox_defaults() {
        let create = create(&["box", "-e", "A=1", "-w", "/w", "-u", "nobody"]);
        assert_eq!(create.config.env, vec!["A=1".to_owned()]);
        assert_eq!(create.config.cwd.as_deref(), Some("/w"));
        assert_eq!(create.config.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn sandbox_options_fill_the_config() {
        let run = run(&[
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
        ]);
        let c = &run.config;
        assert_eq!(c.hostname.as_deref(), Some("h1"));
        assert_eq!(
            (c.volumes.len(), c.tmpfs.len(), c.scripts.len(), c.rlimits.len()),
            (1, 1, 1, 1)
        );
        assert_eq!((c.vcpus, c.memory_mib), (Some(2), Some(256)));
        assert_eq!((c.max_duration_secs, c.idle_timeout_secs), (Some(300), Some(30)));
        assert_eq!((c.security_profile, c.pids_limit), (SecurityProfile::Restricted, Some(64)));
        assert!(run.command.tty);
    }

    #[test]
    fn a_bad_option_value_is_one_line_naming_the_option() {
        let err = usage_error(&["run", "--rlimit", "files=1", "--", "x"]);
        assert!(err.contains("--rlimit \"files=1\""), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn logs_parses_source_and_tail() {
        let Command::Logs(logs) = parse_ok(&["logs", "box", "--source", "stderr", "--tail", "3"])
        else {
            panic!("not logs")
        };
        let options = logs.options();
        assert_eq!((options.tail, options.follow, options.json), (Some(3), false, false));
        assert_eq!(options.query, LogQuery::new().sources(LogFilter::Stderr.sources()));
        usage_error(&["logs", "--tail", "x", "box"]);
    }

    #[test]
    fn logs_parses_since_until_after_and_json() {
        let args = [
            "logs",
            "box",
            "--since",
            "1970-01-01T00:00:01Z",
            "--until",
            "1970-01-01T00:00:02Z",
            "--after",
            "7:40",
            "--json",
        ];
        let Command::Logs(logs) = parse_ok(&args) else { panic!("not logs") };
        let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        let query =
            LogQuery::new().since(at(1)).until(at(2)).after(LogCursor { file: 7, offset: 40 });
        assert_eq!(logs.options().query, query);
        assert!(logs.options().json);
        let Command::Logs(logs) = parse_ok(&["logs", "box", "--since", "10m"]) else {
            panic!("not logs")
        };
        assert!(logs.since.is_some());
        usage_error(&["logs", "box", "--since", "yesterday"]);
        usage_error(&["logs", "box", "--after", "nope"]);
    }

    #[test]
    fn stop_parses_timeout_and_no_wait_but_not_both() {
        let Command::Stop(stop) = parse_ok(&["stop", "b", "--timeout", "3"]) else {
            panic!("not stop")
        };
        assert_eq!((stop.name.as_str(), stop.timeout, stop.no_wait), ("b", Some(3), false));
        let Command::Stop(stop) = parse_ok(&["stop", "--no-wait", "b"]) else { panic!("not stop") };
        assert!(stop.no_wait && stop.timeout.is_none());
        usage_error(&["stop", "b", "--timeout", "x"]);
        usage_error(&["stop", "b", "--timeout", "1", "--no-wait"]);
        let Command::Stop(stop) = parse_ok(&["stop", "b", "--signal", "usr1"]) else {
            panic!("not stop")
        };
        assert_eq!(stop.signal.map(|s| s.number()), Some(10));
        usage_error(&["stop", "b", "--signal", "SIGNOPE"]);
        usage_error(&["stop", "b", "--signal", "0"]);
        let Command::Create(create) = parse_ok(&["create", "b", "--stop-signal", "2"]) else {
            panic!("not create")
        };
        assert_eq!(create.sandbox.stop_signal.map(|s| s.number()), Some(2));
        usage_error(&["create", "b", "--stop-signal", "SIGRTMAX+1"]);
    }

    #[test]
    fn rm_force_flag_is_found_on_either_side_of_the_name() {
        for args in [&["rm", "-f", "b"][..], &["rm", "b", "--force"][..]] {
            let Command::Rm(rm) = parse_ok(args) else { panic!("not rm") };
            assert_eq!((rm.name.as_str(), rm.force), ("b", true));
        }
        let Command::Rm(rm) = parse_ok(&["rm", "b"]) else { panic!("not rm") };
        assert!(!rm.force);
        usage_error(&["stop", "-f", "b"]);
    }

    #[test]
    fn image_without_a_command_runs_the_image_defaults() {
        let run_image = run(&["--image", "python:3.12"]);
        assert_eq!(run_image.root, RootSource::Image(ImageSource::new("python:3.12")));
        assert!(run_image.command.cmd.is_empty() && runs_image(&run_image));
        let run = run(&["--image", "bb", "--registry-auth", "u:p", "--", "ls", "/"]);
        let RootSource::Image(image) = &run.root else { panic!("{:?}", run.root) };
        assert_eq!(image.registry_auth.as_deref(), Some("u:p"));
        assert_eq!((run.command.cmd.as_str(), run.command.args), ("ls", vec!["/".to_owned()]));
    }

    #[test]
    fn rootfs_and_image_are_mutually_exclusive() {
        usage_error(&["run", "--rootfs", "host", "--image", "bb"]);
        usage_error(&["run", "--image", "bb", "--rootfs", "/r"]);
        usage_error(&["run", "--registry-auth", "u:p", "--", "x"]);
    }

    #[test]
    fn rootfs_host_is_the_host_root() {
        assert_eq!(run(&["--rootfs", "host", "true"]).root, RootSource::Host);
    }

    #[test]
    fn pull_takes_one_reference_and_optional_auth() {
        let Command::Pull(pull) = parse_ok(&["pull", "--registry-auth", "u:p", "bb:1"]) else {
            panic!("not pull")
        };
        assert_eq!((pull.reference.as_str(), pull.registry_auth.as_deref()), ("bb:1", Some("u:p")));
        usage_error(&["pull"]);
        usage_error(&["pull", "a", "b"]);
    }

    #[test]
    fn login_needs_a_user_and_one_password_source() {
        let Command::Login(login) = parse_ok(&["login", "127.0.0.1:5000", "-u", "me", "-p", "pw"])
        else {
            panic!("not login")
        };
        assert_eq!(
            (login.server.as_str(), login.password.as_deref()),
            ("127.0.0.1:5000", Some("pw"))
        );
        assert!(!format!("{login:?}").contains("pw"));
        let Command::Login(hub) = parse_ok(&["login", "-u", "me", "--password-stdin"]) else {
            panic!("not login")
        };
        assert_eq!((hub.server.as_str(), hub.password), ("docker.io", None));
        usage_error(&["login", "-u", "me"]);
        usage_error(&["login", "-u", "me", "-p", "x", "--password-stdin"]);
    }

    #[test]
    fn unknown_isolation_is_refused() {
        let err = usage_error(&["run", "--isolation", "chroot", "--", "x"]);
        assert!(err.contains("chroot"), "{err}");
    }

    #[test]
    fn hidden_subcommands_take_the_sandbox_directory() {
        for (name, dir) in [("__sandbox", "/d1"), ("__ns-prepare", "/d2"), ("__ns-init", "/d3")] {
            let command = parse_ok(&[name, dir]);
            assert_eq!(name_of(&command), name);
        }
        let Command::Sandbox(sandbox) = parse_ok(&["__sandbox", "/d", "--attached"]) else {
            panic!("not __sandbox")
        };
        assert!(sandbox.attached);
        let Command::Vm(vm) = parse_ok(&["__vm", "/d"]) else { panic!("not __vm") };
        assert_eq!(vm.dir, PathBuf::from("/d"));
    }

    #[test]
    fn wait_takes_a_name_and_an_optional_timeout() {
        let Command::Wait(wait) = parse_ok(&["wait", "box"]) else { panic!("not wait") };
        assert_eq!((wait.name.as_str(), wait.timeout()), ("box", Duration::MAX));
        let Command::Wait(wait) = parse_ok(&["wait", "box", "--timeout", "3"]) else {
            panic!("not wait")
        };
        assert_eq!(wait.timeout(), Duration::from_secs(3));
    }

    #[test]
    fn shell_names_the_sandbox_shell() {
        assert_eq!(
            create(&["box", "--shell", "/bin/bash"]).config.shell.as_deref(),
            Some("/bin/bash")
        );
        assert_eq!(create(&["box"]).config.shell, None);
    }

    #[test]
    fn labels_and_label_filters_parse() {
        let create = create(&["box", "--label", "team=infra", "--label", "tier="]);
        assert_eq!(create.config.labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(create.config.labels.get("tier").map(String::as_str), Some(""));
        usage_error(&["create", "box", "--label", "=x"]);
        let Command::Ls(ls) =
            parse_ok(&["ls", "--filter", "label=team=infra", "--filter", "label=x"])
        else {
            panic!("not ls")
        };
        assert_eq!(ls.filters[0], LabelFilter { key: "team".into(), value: Some("infra".into()) });
        assert_eq!(ls.filters[1], LabelFilter { key: "x".into(), value: None });
        usage_error(&["ls", "--filter", "status=running"]);
    }

    #[test]
    fn bench_picks_json_and_quick() {
        let Command::Bench(bench) = parse_ok(&["bench", "--quick", "--json"]) else {
            panic!("not bench")
        };
        assert!(bench.json && bench.quick);
        usage_error(&["bench", "--fast"]);
    }

    #[test]
    fn help_is_information_and_no_command_is_a_usage_error() {
        assert!(matches!(parse(["moat", "--help"]), Parsed::Info(_)));
        assert!(matches!(parse(["moat"]), Parsed::Usage(_)));
        assert!(matches!(parse(["moat", "image", "prune"]), Parsed::Command(_)));
        usage_error(&["nosuch"]);
    }

    #[test]
    fn network_options_fill_the_network_config_with_rules_in_command_line_order() {
        use crate::network::{Action, NetworkMode};
        let options = run(&[
            "--network",
            "public",
            "--deny",
            "*.ads.example",
            "--allow",
            "10.0.0.0/8:5432",
            "--deny",
            "192.168.0.0/16",
            "-p",
            "8080:80",
            "--",
            "x",
            "--allow",
            "y",
        ]);
        let network = &options.config.network;
        assert_eq!(network.mode, NetworkMode::Public);
        let actions: Vec<_> = network.rules.iter().map(|rule| rule.action).collect();
        assert_eq!(actions, [Action::Deny, Action::Allow, Action::Deny]);
        assert_eq!(network.publish[0].guest_port, 80);
        assert_eq!(options.command.args, ["--allow", "y"]);
        assert!(usage_error(&["run", "--network", "bridge", "--", "x"]).contains("bridge"));
        let twice = usage_error(&["create", "n", "-p", "80:80", "-p", "80:81"]);
        assert!(twice.starts_with("moat: "), "{twice}");
    }
}
