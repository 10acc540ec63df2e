//! The per-sandbox processes' command lines, parsed and run: `__sandbox DIR [--attached]` (the
//! sandbox process, [`super::serve_sandbox`]), `__ns-prepare DIR` and `__ns-init DIR` (the
//! namespace backend's steps into the sandbox, [`crate::backend::namespace::init`]) and
//! `__vm DIR` (a VM sandbox's VM process, [`crate::backend::vm::run_vm`]).
//!
//! Two binaries run them: `moat-sandbox` (src/bin/moat-sandbox.rs), which the CLI spawns, and
//! `moat` itself as hidden subcommands. `moat-sandbox` parses by hand instead of with clap: it
//! is exec'd up to three times per start and stays resident for the sandbox's life, so it links
//! and touches only this path (no CLI, no image registry client), which is what keeps its start
//! and its resident pages small. It does not know which binary it is, so each step execs the
//! same executable it runs from (`current_exe`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::store::home::SandboxDir;

/// The per-sandbox binary's name, next to `moat`.
pub const SANDBOX_BIN_NAME: &str = "moat-sandbox";

/// One per-sandbox process's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Internal {
    /// `__sandbox DIR [--attached]`: with `attached`, stop when stdin reaches its end.
    Sandbox {
        /// The sandbox directory.
        dir: PathBuf,
        /// Stop when the creator's lifeline (stdin) ends ([`crate::lifecycle::attach`]).
        attached: bool,
    },
    /// `__ns-prepare DIR`.
    NsPrepare(PathBuf),
    /// `__ns-init DIR`.
    NsInit(PathBuf),
    /// `__vm DIR`.
    Vm(PathBuf),
}

/// A command line [`parse`] refuses; its text is the usage line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "usage: {SANDBOX_BIN_NAME} __sandbox DIR [--attached] | __ns-prepare DIR | __ns-init DIR | __vm DIR (moat runs this; it is not a command for people)"
)]
pub struct UsageError;

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Internal, UsageError> {
    let mut args = args.into_iter();
    let command = args.next().ok_or(UsageError)?;
    let dir = PathBuf::from(args.next().ok_or(UsageError)?);
    let rest: Vec<OsString> = args.collect();
    let internal = match (command.to_str(), rest.as_slice()) {
        (Some("__sandbox"), []) => Internal::Sandbox { dir, attached: false },
        (Some("__sandbox"), [flag]) if flag == "--attached" => {
            Internal::Sandbox { dir, attached: true }
        }
        (Some("__ns-prepare"), []) => Internal::NsPrepare(dir),
        (Some("__ns-init"), []) => Internal::NsInit(dir),
        (Some("__vm"), []) => Internal::Vm(dir),
        _ => return Err(UsageError),
    };
    Ok(internal)
}

/// Runs `command`; only the sandbox process returns at all on success (the others exec).
pub fn run(command: Internal) -> ExitCode {
    match command {
        Internal::Sandbox { dir, attached } => {
            init_logging();
            sandbox(&dir, attached)
        }
        // These exec another program at once; it logs for itself.
        Internal::NsPrepare(dir) => {
            let err = crate::backend::namespace::init::prepare_and_enter(&open(&dir));
            eprintln!("moat __ns-prepare: {err}");
            ExitCode::FAILURE
        }
        Internal::NsInit(dir) => {
            let err = crate::backend::namespace::init::exec_agent(&open(&dir));
            eprintln!("moat __ns-init: {err}");
            ExitCode::FAILURE
        }
        Internal::Vm(dir) => {
            init_logging();
            let err = crate::backend::vm::run_vm(&open(&dir));
            tracing::error!(%err, "the VM did not start");
            super::report_startup(&format!("error: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn open(dir: &Path) -> SandboxDir {
    SandboxDir::open(dir.to_owned())
}

fn sandbox(dir: &Path, attached: bool) -> ExitCode {
    let dir = open(dir);
    if attached {
        crate::lifecycle::attach::watch_creator(&dir);
    }
    match super::serve_sandbox(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "sandbox failed");
            super::report_startup(&format!("error: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// The sandbox log (stderr) at `$MOAT_LOG`, else info.
fn init_logging() {
    let level =
        std::env::var("MOAT_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Internal, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn each_command_parses_with_its_directory() {
        assert_eq!(
            parse_strs(&["__sandbox", "/d"]),
            Ok(Internal::Sandbox { dir: "/d".into(), attached: false })
        );
        assert_eq!(
            parse_strs(&["__sandbox", "/d", "--attached"]),
            Ok(Internal::Sandbox { dir: "/d".into(), attached: true })
        );
        assert_eq!(parse_strs(&["__ns-prepare", "/d"]), Ok(Internal::NsPrepare("/d".into())));
        assert_eq!(parse_strs(&["__ns-init", "/d"]), Ok(Internal::NsInit("/d".into())));
        assert_eq!(parse_strs(&["__vm", "/d"]), Ok(Internal::Vm("/d".into())));
    }

    #[test]
    fn unknown_missing_or_extra_arguments_are_usage_errors() {
        for args in [
            &[][..],
            &["__sandbox"],
            &["run", "/d"],
            &["__ns-init", "/d", "--attached"],
            &["__sandbox", "/d", "--attached", "x"],
            &["__sandbox", "/d", "--detached"],
        ] {
            assert_eq!(parse_strs(args), Err(UsageError), "{args:?}");
        }
    }
}
