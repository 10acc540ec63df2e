//! `moat`: the command-line interface. A checklist: parse, dispatch, exit.
//!
//! Commands: `doctor`, `run`. Hidden: `__sandbox DIR` (the per-sandbox process) and
//! `__ns-init DIR` (first process in the sandbox's namespaces; execs the agent). Exit status of
//! `run`: the command's; 127 when it could not be started; 125 when moat itself failed.

use std::process::ExitCode;

use moat_runtime::{cli, doctor, ns_init, run, sandbox};

const USAGE: &str = "usage: moat <command>\n\ncommands:\n  doctor    report whether this host can boot a microVM, and why\n  run       run a command in an ephemeral sandbox:\n            moat run [-e K=V]... [-w DIR] [--rootfs DIR|host] [--isolation auto|namespace|vm] -- CMD [ARGS...]\n";

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
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(
            cmd @ ("create" | "exec" | "ls" | "inspect" | "socket" | "logs" | "stop" | "kill"
            | "rm"),
        ) => {
            eprintln!("moat {cmd}: not built yet; today moat has `doctor` and `run`.");
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("moat: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
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
    ExitCode::SUCCESS
}
