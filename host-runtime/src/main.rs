//! `moat`: the command-line interface. A checklist: parse ([`cli::parse`], clap), dispatch,
//! exit.
//!
//! Commands: `doctor`, `run`, and the named-sandbox lifecycle (`create`, `exec`, `ls`, `inspect`,
//! `socket`, `logs`, `stop`, `kill`, `rm`, `port-forward`), images (`pull`, `images`, `rmi`,
//! `image prune`) and `bench`. Hidden: `__sandbox DIR` (the per-sandbox process), `__ns-prepare
//! DIR` (binds the root source, execs `unshare`), `__ns-init DIR` (first process in the sandbox's
//! namespaces; execs the agent) and `__vm DIR` (a VM sandbox's VM process): the code the
//! `moat-sandbox` binary runs, which a namespace sandbox starts from; a VM sandbox starts from
//! `moat __sandbox`. Exit status of `run` and `exec`: the
//! command's; 127 when it could not be started; 125 when moat itself failed. Other commands: 0,
//! 1 on failure. Every command: 2 on a usage error.

use std::process::ExitCode;
use std::time::Duration;

use moat_runtime::api::blocking::Moat;
use moat_runtime::api::{SandboxOptions, Status};
use moat_runtime::cli::{
    BenchCmd, Command, ExecCmd, ImageSubcommand, ListCmd, LoginCmd, LsCmd, Parsed, PullCmd,
    RemoveCmd, RunCmd, StopCmd, WaitCmd,
};
use moat_runtime::error::RuntimeError;
use moat_runtime::image::{Credentials, ImageError, Images, PullOptions, progress};
use moat_runtime::lifecycle::{logs, run};
use moat_runtime::security::hardening;
use moat_runtime::supervisor::entry::{self, Internal};
use moat_runtime::{bench, cli, doctor, lifecycle};
use nix::sys::signal::Signal;

/// Exit status of a lifecycle command that failed.
const EXIT_FAILED: u8 = 1;

/// Exit status of a usage error.
const EXIT_USAGE: u8 = 2;

/// Exit status when moat itself fails (not the command).
const EXIT_MOAT_FAILED: u8 = 125;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Parsed::Command(command) => *command,
        Parsed::Info(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Usage(text) => {
            eprint!("{text}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let name = cli::name_of(&command);
    // The per-sandbox processes set up their own logging (`moat-sandbox` runs the same code).
    let internal = matches!(
        command,
        Command::Sandbox(_) | Command::NsPrepare(_) | Command::NsInit(_) | Command::Vm(_)
    );
    if !internal {
        init_logging(tracing::Level::WARN);
    }
    match command {
        Command::Doctor => doctor_command(),
        Command::Run(args) => run_command(args),
        Command::Exec(args) => exec_command(args),
        Command::Cp(args) => cp_command(args),
        Command::Bench(args) => bench_command(&args),
        Command::Sandbox(arg) => {
            entry::run(Internal::Sandbox { dir: arg.dir, attached: arg.attached })
        }
        Command::NsInit(arg) => entry::run(Internal::NsInit(arg.dir)),
        Command::NsPrepare(arg) => entry::run(Internal::NsPrepare(arg.dir)),
        Command::Vm(arg) => entry::run(Internal::Vm(arg.dir)),
        Command::Create(args) if args.attach => {
            let replace = args.replace;
            finish(name, create_attached_command(args.into_options(), replace))
        }
        Command::Create(args) => {
            let replace = args.replace;
            let options = args.into_options();
            let created =
                if replace { lifecycle::replace(options) } else { lifecycle::create(options) };
            finish(name, created.map(|name| println!("{name}")))
        }
        Command::Ls(args) => finish(name, list_command(&args)),
        Command::Inspect(args) => finish(name, inspect_command(&args.name)),
        Command::Socket(args) => {
            finish(name, lifecycle::socket(&args.name).map(|path| println!("{}", path.display())))
        }
        Command::Logs(args) => finish(
            name,
            Moat::from_env()
                .get(&args.name)
                .and_then(|sandbox| logs::print(&sandbox, &args.options())),
        ),
        Command::Start(args) if args.attach => {
            let home = moat_runtime::store::home::moat_home();
            let started = moat_runtime::relay_client::block_forwarded_signals()
                .and_then(|()| lifecycle::start::start_attached_in(&home, &args.name, None));
            finish(name, started.and_then(|(_, attachment)| hold_attached(&args.name, attachment)))
        }
        Command::Start(args) => finish(name, lifecycle::start::start(&args.name).map(drop)),
        Command::Drain(args) => finish(name, lifecycle::drain::drain(&args.name).map(drop)),
        Command::Stop(args) => finish(name, stop_command(&args)),
        Command::Kill(args) => finish(name, lifecycle::kill(&args.name).map(drop)),
        Command::Rm(args) => finish(name, lifecycle::remove(&args.name, args.force)),
        Command::Wait(args) => finish(name, wait_command(&args)),
        Command::Pull(args) => finish(name, pull_command(&args)),
        Command::Images(args) => finish(name, images_command(&args)),
        Command::Rmi(args) => finish(name, rmi_command(&args)),
        Command::Image(args) => match args.command {
            ImageSubcommand::Prune => finish(name, prune_command()),
        },
        Command::Login(args) => finish(name, login_command(args)),
        Command::Stats(args) => {
            let home = moat_runtime::store::home::moat_home();
            report(name, cli::stats::run(&home, args))
        }
        Command::PortForward(args) => {
            let home = moat_runtime::store::home::moat_home();
            report(name, cli::port_forward::run(&home, args))
        }
        Command::Volume { command } => {
            let home = moat_runtime::store::home::moat_home();
            report(name, cli::volume::run(&home, command, &mut std::io::stdout().lock()))
        }
    }
}

/// `moat create --attach`: creates the sandbox tied to this process, prints its name, and
/// waits for it to end ([`hold_attached`]); if this process dies any other way, the sandbox
/// stops itself.
fn create_attached_command(options: SandboxOptions, replace: bool) -> Result<(), RuntimeError> {
    moat_runtime::relay_client::block_forwarded_signals()?;
    let home = moat_runtime::store::home::moat_home();
    let (name, attachment) = lifecycle::create_attached_in(&home, options, None, replace)?;
    println!("{name}");
    hold_attached(&name, attachment)
}

/// Holds an attached sandbox's lifeline until it ends; SIGINT, SIGTERM and SIGHUP (blocked in
/// this thread already) stop it first, as `moat stop`.
fn hold_attached(
    name: &str,
    attachment: lifecycle::attach::Attachment,
) -> Result<(), RuntimeError> {
    let sandbox = Moat::from_env().get(name)?;
    let stopper = sandbox.clone();
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stopping);
    let signalled = std::thread::spawn(move || {
        let mut signals = nix::sys::signal::SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            signals.add(signal);
        }
        if signals.wait().is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            return stopper.stop().map(drop);
        }
        Ok(())
    });
    let result = loop {
        // A stop we started is waited for, so it records its outcome before this process ends.
        if stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break signalled.join().unwrap_or(Ok(()));
        }
        match sandbox.state() {
            Ok(state) if matches!(state.status, Status::Running | Status::Draining) => {}
            Ok(_) | Err(RuntimeError::UnknownSandbox(_)) => break Ok(()),
            Err(err) => break Err(err),
        }
        std::thread::sleep(Duration::from_millis(ATTACHED_POLL_MS));
    };
    drop(attachment);
    result
}

/// How often `moat create --attach` looks at its sandbox's state.
const ATTACHED_POLL_MS: u64 = 100;

/// `moat stop [--timeout SECS | --no-wait] [--signal SIG]`.
fn stop_command(args: &StopCmd) -> Result<(), RuntimeError> {
    let sandbox = Moat::from_env().get(&args.name)?;
    let timeout = args.timeout.map(Duration::from_secs);
    match (args.no_wait, args.signal) {
        (true, Some(signal)) => sandbox.request_stop_with_signal(signal),
        (true, None) => sandbox.request_stop(),
        (false, Some(signal)) => sandbox.stop_with_signal(signal, timeout).map(drop),
        (false, None) => match timeout {
            Some(timeout) => sandbox.stop_with_timeout(timeout).map(drop),
            None => sandbox.stop().map(drop),
        },
    }
}

/// A subcommand's result as the process's exit status, its error as one line on stderr.
fn finish(cmd: &str, result: Result<(), RuntimeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat {cmd}: {err}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Exit 0, or print `moat CMD: ERROR` and exit 1.
fn report(cmd: &str, result: Result<(), impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moat {cmd}: {err}");
            ExitCode::from(EXIT_FAILED)
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

fn run_command(args: RunCmd) -> ExitCode {
    match run::execute(args.into_options()) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("moat run: {err}");
            ExitCode::from(EXIT_MOAT_FAILED)
        }
    }
}

fn exec_command(args: ExecCmd) -> ExitCode {
    let name = args.name.clone();
    let (request, timeout) = args.request();
    match lifecycle::exec(&name, request, timeout) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("moat exec: {err}");
            ExitCode::from(EXIT_MOAT_FAILED)
        }
    }
}

/// `moat cp`: 2 when both sides are on the host or both in sandboxes, 1 when the copy fails.
fn cp_command(args: cli::cp::CpCmd) -> ExitCode {
    let transfer = match args.transfer() {
        Ok(transfer) => transfer,
        Err(err) => {
            eprintln!("moat cp: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    report("cp", cli::cp::run(&moat_runtime::store::home::moat_home(), transfer).map(drop))
}

fn bench_command(args: &BenchCmd) -> ExitCode {
    let sizes = if args.quick { bench::Sizes::QUICK } else { bench::Sizes::FULL };
    match bench::run(sizes, |step| eprintln!("moat bench: {step}")) {
        Ok(report) if args.json => println!("{}", report.to_json()),
        Ok(report) => print!("{}", report.to_table()),
        Err(err) => {
            eprintln!("moat bench: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    ExitCode::SUCCESS
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

fn list_command(args: &LsCmd) -> Result<(), RuntimeError> {
    let states = Moat::from_env().list_filtered(&args.filters)?;
    if args.json {
        println!("{}", to_json(&states));
    } else {
        print!("{}", lifecycle::format_table(&states));
    }
    Ok(())
}

fn inspect_command(name: &str) -> Result<(), RuntimeError> {
    let state = lifecycle::inspect(name)?;
    let live = matches!(state.status, moat_runtime::store::state::Status::Running);
    let isolation = hardening::report(&state.spec, state.pid.filter(|_| live));
    println!("{}", to_json(&Inspection { state, isolation }));
    Ok(())
}

/// `moat wait`: the library's wait; prints the exit code (or the status when none is recorded).
fn wait_command(args: &WaitCmd) -> Result<(), RuntimeError> {
    let state = Moat::from_env().get(&args.name)?.wait(args.timeout())?;
    match state.exit_code {
        Some(code) => println!("{code}"),
        None => println!("{}", state.status.as_str()),
    }
    Ok(())
}

fn images() -> Images {
    Images::new(&moat_runtime::store::home::moat_home())
}

fn pull_command(args: &PullCmd) -> Result<(), RuntimeError> {
    let options = PullOptions::from_env(args.registry_auth.as_deref())?;
    let progress = progress::for_stderr();
    let record = images().pull(&args.reference, &options, progress.as_ref())?;
    println!("{} {}", record.reference, record.manifest_digest);
    Ok(())
}

fn images_command(args: &ListCmd) -> Result<(), RuntimeError> {
    let list = images().list()?;
    if args.json {
        println!("{}", to_json(&list));
        return Ok(());
    }
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
    Ok(())
}

fn login_command(args: LoginCmd) -> Result<(), RuntimeError> {
    let password = match args.password {
        Some(password) => password,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(ImageError::io("read password", "stdin"))?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    let credentials = Credentials { username: args.username, password };
    let options = PullOptions::from_env(None)?;
    let path = options.login(&args.server, &credentials)?;
    println!(
        "credentials for {} stored in {} (not checked against the registry)",
        args.server,
        path.display()
    );
    Ok(())
}

fn rmi_command(args: &RemoveCmd) -> Result<(), RuntimeError> {
    let report = images().remove(&args.name, args.force)?;
    println!(
        "removed {} ({} layers freed, {})",
        args.name,
        report.layers,
        progress::human_bytes(report.bytes)
    );
    Ok(())
}

fn prune_command() -> Result<(), RuntimeError> {
    let report = images().prune()?;
    println!(
        "removed {} layers ({}), {} config blobs, {} abandoned temporaries",
        report.layers,
        progress::human_bytes(report.bytes),
        report.blobs,
        report.temporaries
    );
    Ok(())
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
