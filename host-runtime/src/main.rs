//! `moat`: the command-line interface. A checklist: parse, dispatch, exit.
//!
//! Commands: `doctor`, `run`, and the named-sandbox lifecycle (`create`, `exec`, `ls`, `inspect`,
//! `socket`, `logs`, `stop`, `kill`, `rm`), images (`pull`, `images`, `rmi`, `image prune`) and `bench`. Hidden: `__sandbox DIR` (the per-sandbox process) and
//! `__ns-prepare DIR` (binds the root source, execs `unshare`) and `__ns-init DIR` (first process
//! in the sandbox's namespaces; execs the agent), and `__vm DIR` (a VM sandbox's VM process). Exit status of
//! `run` and `exec`: the command's; 127 when it could not be started; 125 when moat itself
//! failed. Other commands: 0, 1 on failure, 2 on a usage error.

use std::process::ExitCode;

use moat_runtime::backend::namespace::init as ns_init;
use moat_runtime::backend::vm;
use moat_runtime::cli::UsageError;
use moat_runtime::error::RuntimeError;
use moat_runtime::image::{Credentials, ImageError, Images, PullOptions, progress};
use moat_runtime::lifecycle::{logs, run};
use moat_runtime::security::hardening;
use moat_runtime::supervisor as sandbox;
use moat_runtime::{bench, cli, doctor, lifecycle};

const USAGE: &str = "usage: moat <command>

commands:
  doctor    report whether this host can boot a microVM or run the namespace backend, and why
  run       run a command in an ephemeral sandbox:
            moat run [SANDBOX OPTIONS] [-t] [-e K=V]... [-w DIR] [-u USER] -- CMD [ARGS...]
  create    boot a named sandbox that outlives this command (-e/-w/-u: defaults for its execs):
            moat create NAME [SANDBOX OPTIONS] [-e K=V]... [-w DIR] [-u USER]
  exec      moat exec NAME [-t] [-e K=V]... [-w DIR] [-u USER] -- CMD [ARGS...]
  ls        list named sandboxes (--json for JSON)
  inspect   moat inspect NAME: its state and the isolation it has (profile, id map, limits) as JSON
  socket    moat socket NAME: the path of its relay socket
  logs      moat logs NAME [--source stdout|stderr|system|all] [--tail N] [-f]
  stop      moat stop NAME: shut it down (core.shutdown; SIGTERM after 10 s, then SIGKILL)
  kill      moat kill NAME: SIGKILL it
  rm        moat rm [-f] NAME: remove a sandbox that is not running (-f: kill it first)
  bench     moat bench [--json] [--quick]: measure latency, throughput and memory of a sandbox
  pull      moat pull REF [--registry-auth USER:PASS]: fetch an image into the store
  images    list stored images (--json for JSON)
  rmi       moat rmi [-f] REF: remove an image and the layers only it used (-f: even if a
            sandbox uses it)
  image     moat image prune: remove layers no image uses and abandoned partial pulls
  stats     moat stats [NAME] [--json]: cpu, memory, disk, network of running sandboxes (one
            JSON snapshot with --json; else a table every second)
  volume    moat volume create NAME [--quota MiB] | ls [--json] | inspect NAME | rm [-f] NAME:
            named volumes, mounted with -v NAME:/path
  login     moat login [SERVER] -u USER (-p PASS | --password-stdin): store registry credentials
            in ~/.docker/config.json (default server docker.io; not checked against it)

sandbox options:
  --rootfs DIR|host                 root filesystem (default host: the host's system dirs, read-only)
  --image REF                       an OCI image as the root (pulled when not stored; its Env,
                                    WorkingDir, User, Entrypoint and Cmd are the defaults; run
                                    without a command runs Entrypoint + Cmd); namespace backend only
  --registry-auth USER:PASS         credentials for pulling --image (else ~/.docker/config.json)
  --isolation auto|namespace|vm     backend (default auto: a VM when the host can boot one)
  --hostname NAME                   hostname (default: the sandbox name)
  -v, --volume SRC:GUEST[:OPTS]     share a host directory (SRC with a '/' or leading '.') or a
                                    named volume; OPTS: ro,rw,noexec,nosuid,nodev
  --tmpfs PATH[:MiB]                a tmpfs mount
  --patch KIND:ARGS                 change the root before boot (never the lower): text:PATH=TEXT,
                                    append:PATH=TEXT, copy-file:HOST=PATH, copy-dir:HOST=PATH,
                                    symlink:PATH=TARGET, mkdir:PATH[:MODE], rm:PATH
  --script NAME=BODY                an executable at /.msb/scripts/NAME (on PATH)
  --rlimit RESOURCE=SOFT[:HARD]     a sandbox-wide rlimit (nofile, nproc, as, cpu, ...)
  --cpus N, --memory MiB            size (VM) or cgroup limits (namespace backend; refused
                                    when moat runs without root, which makes no cgroup)
  --pids-limit N                    most processes at once (default 4096; 0: unlimited; namespace
                                    backend, through its cgroup: none without root, with a warning)
  --security-profile P              default (seccomp filter like docker's, docker's capabilities),
                                    restricted (also no ptrace, namespaces, io_uring...), none
  --max-duration D                  shut down D after start (D: N, Ns, Nm, Nh)
  --idle-timeout D                  shut down after D with no client connected
  -t, --tty                         (run, exec) run the command on a PTY; the terminal goes raw
";

/// Exit status of a lifecycle command that failed.
const EXIT_FAILED: u8 = 1;

/// Exit status of a usage error.
const EXIT_USAGE: u8 = 2;

/// Exit status when moat itself fails (not the command).
const EXIT_MOAT_FAILED: u8 = 125;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("doctor") => doctor_command(),
        Some("run") => run_command(rest),
        Some("__sandbox") => sandbox_command(rest),
        Some("__ns-init") => ns_init_command(rest),
        Some("__ns-prepare") => ns_prepare_command(rest),
        Some("__vm") => vm_command(rest),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("exec") => exec_command(rest),
        Some("bench") => bench_command(rest),
        Some("volume") => volume_command(rest),
        Some("stats") => stats_command(rest),
        Some(cmd @ ("pull" | "images" | "rmi" | "image" | "login")) => {
            init_logging(tracing::Level::WARN);
            exit_code(cmd, image_command(cmd, rest))
        }
        Some(cmd @ ("create" | "ls" | "inspect" | "socket" | "logs" | "stop" | "kill" | "rm")) => {
            init_logging(tracing::Level::WARN);
            exit_code(cmd, lifecycle_command(cmd, rest))
        }
        Some(other) => {
            eprintln!("moat: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// A subcommand's result as the process's exit status, its error as one line on stderr.
fn exit_code(cmd: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(err)) => {
            eprintln!("moat {cmd}: {err}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(err)) => {
            eprintln!("moat {cmd}: {err}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn volume_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::WARN);
    let home = moat_runtime::store::home::moat_home();
    let result = cli::volume::parse(args)
        .and_then(|command| cli::volume::run(&home, command, &mut std::io::stdout().lock()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat volume: {err}");
            ExitCode::from(err.exit_status())
        }
    }
}

fn stats_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::WARN);
    let home = moat_runtime::store::home::moat_home();
    match cli::stats::parse(args).and_then(|parsed| cli::stats::run(&home, parsed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat stats: {err}");
            ExitCode::from(err.exit_status())
        }
    }
}

fn init_logging(default: tracing::Level) {
    let level = std::env::var("MOAT_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(default);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .init();
}

fn run_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::WARN);
    let parsed = match cli::parse_run(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("moat run: {err}");
            return ExitCode::from(2);
        }
    };
    match run::execute(parsed) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("moat run: {err}");
            ExitCode::from(EXIT_MOAT_FAILED)
        }
    }
}

fn exec_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::WARN);
    let parsed = match cli::parse_exec(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("moat exec: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match lifecycle::exec(parsed) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("moat exec: {err}");
            ExitCode::from(EXIT_MOAT_FAILED)
        }
    }
}

fn bench_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::WARN);
    let parsed = match bench::parse_args(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("moat bench: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match bench::run(parsed.sizes, |step| eprintln!("moat bench: {step}")) {
        Ok(report) if parsed.json => println!("{}", report.to_json()),
        Ok(report) => print!("{}", report.to_table()),
        Err(err) => {
            eprintln!("moat bench: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    ExitCode::SUCCESS
}

/// Why a lifecycle command failed.
enum Failure {
    Usage(UsageError),
    Runtime(RuntimeError),
}

impl From<UsageError> for Failure {
    fn from(err: UsageError) -> Self {
        Failure::Usage(err)
    }
}

impl From<RuntimeError> for Failure {
    fn from(err: RuntimeError) -> Self {
        Failure::Runtime(err)
    }
}

/// `moat inspect`'s output: the state record and the isolation the sandbox has.
#[derive(serde::Serialize)]
struct Inspection {
    #[serde(flatten)]
    state: moat_runtime::store::state::SandboxState,
    isolation: hardening::IsolationReport,
}

fn to_json(value: &impl serde::Serialize) -> String {
    // The state types are strings, integers and enums: serializing them cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn lifecycle_command(cmd: &str, args: &[String]) -> Result<(), Failure> {
    match cmd {
        "create" => println!("{}", lifecycle::create(cli::parse_create(args)?)?),
        "ls" => {
            let json = match args {
                [] => false,
                [flag] if flag == "--json" => true,
                [other, ..] => return Err(UsageError::UnknownOption(other.clone()).into()),
            };
            let states = lifecycle::list()?;
            if json {
                println!("{}", to_json(&states));
            } else {
                print!("{}", lifecycle::format_table(&states));
            }
        }
        "inspect" => {
            let state = lifecycle::inspect(&cli::parse_name(args, None)?.0)?;
            let live = matches!(state.status, moat_runtime::store::state::Status::Running);
            let isolation = hardening::report(&state.spec, state.pid.filter(|_| live));
            println!("{}", to_json(&Inspection { state, isolation }));
        }
        "socket" => {
            println!("{}", lifecycle::socket(&cli::parse_name(args, None)?.0)?.display());
        }
        "logs" => {
            let parsed = cli::parse_logs(args)?;
            logs::print(&lifecycle::open_named(&parsed.name)?, &parsed)?;
        }
        "stop" => {
            lifecycle::stop(&cli::parse_name(args, None)?.0)?;
        }
        "kill" => {
            lifecycle::kill(&cli::parse_name(args, None)?.0)?;
        }
        _ => {
            let (name, force) = cli::parse_name(args, Some("-f"))?;
            lifecycle::remove(&name, force)?;
        }
    }
    Ok(())
}

/// `pull`, `images`, `rmi`, `image prune`: the CLI only parses; [`Images`] does the work.
fn image_command(cmd: &str, args: &[String]) -> Result<(), Failure> {
    let images = Images::new(&moat_runtime::store::home::moat_home());
    let image_error = |err: ImageError| Failure::Runtime(err.into());
    match cmd {
        "pull" => {
            let parsed = cli::parse_pull(args)?;
            let options =
                PullOptions::from_env(parsed.registry_auth.as_deref()).map_err(image_error)?;
            let progress = progress::for_stderr();
            let record =
                images.pull(&parsed.reference, &options, progress.as_ref()).map_err(image_error)?;
            println!("{} {}", record.reference, record.manifest_digest);
        }
        "images" => {
            let json = match args {
                [] => false,
                [flag] if flag == "--json" => true,
                [other, ..] => return Err(UsageError::UnknownOption(other.clone()).into()),
            };
            let list = images.list().map_err(image_error)?;
            if json {
                println!("{}", to_json(&list));
            } else {
                println!(
                    "{:<50} {:<19} {:>6} {:>10} {:>10}",
                    "REFERENCE", "DIGEST", "LAYERS", "COMPRESSED", "UNPACKED"
                );
                for image in list {
                    let digest = image.digest.strip_prefix("sha256:").unwrap_or(&image.digest);
                    println!(
                        "{:<50} {:<19} {:>6} {:>10} {:>10}",
                        image.reference,
                        digest.get(..12).unwrap_or(digest),
                        image.layers,
                        progress::human_bytes(image.compressed_bytes),
                        progress::human_bytes(image.unpacked_bytes)
                    );
                }
            }
        }
        "login" => {
            let parsed = cli::parse_login(args)?;
            let password = match parsed.password {
                Some(password) => password,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| image_error(ImageError::io("read password", "stdin")(e)))?;
                    line.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            let credentials = Credentials { username: parsed.username, password };
            let options = PullOptions::from_env(None).map_err(image_error)?;
            let path = options.login(&parsed.server, &credentials).map_err(image_error)?;
            println!(
                "credentials for {} stored in {} (not checked against the registry)",
                parsed.server,
                path.display()
            );
        }
        "rmi" => {
            let (reference, force) = cli::parse_name(args, Some("-f"))?;
            let report = images.remove(&reference, force).map_err(image_error)?;
            println!(
                "removed {reference} ({} layers freed, {})",
                report.layers,
                progress::human_bytes(report.bytes)
            );
        }
        _ => match args {
            [sub] if sub == "prune" => {
                let report = images.prune().map_err(image_error)?;
                println!(
                    "removed {} layers ({}), {} config blobs, {} abandoned temporaries",
                    report.layers,
                    progress::human_bytes(report.bytes),
                    report.blobs,
                    report.temporaries
                );
            }
            [other, ..] => return Err(UsageError::UnexpectedArgument(other.clone()).into()),
            [] => return Err(UsageError::MissingValue("image".to_owned()).into()),
        },
    }
    Ok(())
}

fn sandbox_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::INFO);
    let Some(dir) = run::hidden_dir_arg(args) else {
        sandbox::report_startup("error: __sandbox needs the sandbox directory");
        return ExitCode::from(2);
    };
    match sandbox::serve_sandbox(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "sandbox failed");
            sandbox::report_startup(&format!("error: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn ns_init_command(args: &[String]) -> ExitCode {
    let Some(dir) = run::hidden_dir_arg(args) else {
        eprintln!("moat __ns-init: needs the sandbox directory");
        return ExitCode::from(2);
    };
    let err = ns_init::exec_agent(&dir);
    eprintln!("moat __ns-init: {err}");
    ExitCode::FAILURE
}

fn ns_prepare_command(args: &[String]) -> ExitCode {
    let Some(dir) = run::hidden_dir_arg(args) else {
        eprintln!("moat __ns-prepare: needs the sandbox directory");
        return ExitCode::from(2);
    };
    let err = ns_init::prepare_and_enter(&dir);
    eprintln!("moat __ns-prepare: {err}");
    ExitCode::FAILURE
}

fn vm_command(args: &[String]) -> ExitCode {
    init_logging(tracing::Level::INFO);
    let Some(dir) = run::hidden_dir_arg(args) else {
        sandbox::report_startup("error: __vm needs the sandbox directory");
        return ExitCode::from(2);
    };
    let err = vm::run_vm(&dir);
    tracing::error!(%err, "the VM did not start");
    sandbox::report_startup(&format!("error: {err}"));
    ExitCode::FAILURE
}

fn doctor_command() -> ExitCode {
    let report = doctor::diagnose(&doctor::HostPaths::system());
    for check in &report.checks {
        println!("{:<10} {}  {}", check.name, if check.ok { "ok  " } else { "FAIL" }, check.detail);
    }
    if report.vm_can_boot() {
        println!("microVM: this host can boot one");
    } else {
        println!("microVM: this host cannot boot one (see FAIL lines)");
    }
    let namespace = moat_runtime::backend::namespace::probe::diagnose();
    for check in &namespace {
        println!("{:<10} {}  {}", check.name, if check.ok { "ok  " } else { "FAIL" }, check.detail);
    }
    if namespace.iter().all(|c| c.ok) {
        println!("namespace: this host can run the namespace backend (weaker isolation than a VM)");
    } else {
        println!("namespace: this host cannot run the namespace backend (see FAIL lines)");
    }
    if moat_runtime::backend::namespace::rootless::is_rootless() {
        println!(
            "namespace isolation by default, unprivileged: {}",
            moat_runtime::backend::namespace::probe::ROOTLESS_DEFAULT_ISOLATION
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "namespace isolation by default: {}",
        moat_runtime::backend::namespace::probe::DEFAULT_ISOLATION
    );
    println!("unprivileged id map (identity without it):");
    for check in moat_runtime::backend::namespace::probe::diagnose_id_map() {
        println!("{:<10} {}  {}", check.name, if check.ok { "ok  " } else { "FAIL" }, check.detail);
    }
    ExitCode::SUCCESS
}
