//! `moat`: the command-line interface.
//!
//! Built today: `moat doctor`. Every other command answers that it is not built yet and exits
//! with status 2, so nothing pretends to run a sandbox.

use std::process::ExitCode;

use moat_runtime::doctor;

const USAGE: &str = "usage: moat <command>\n\ncommands:\n  doctor    report whether this host can boot a microVM, and why\n  run       run a command in an ephemeral sandbox (not built yet)\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("doctor") => doctor_command(),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(
            cmd @ ("run" | "create" | "exec" | "ls" | "inspect" | "socket" | "logs" | "stop"
            | "kill" | "rm"),
        ) => {
            eprintln!(
                "moat {cmd}: not built yet. The sandbox runtime (agent, relay, backends) is still being \
                 written; today moat has its wire protocol crate and `moat doctor`."
            );
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("moat: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
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
