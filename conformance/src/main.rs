//! `moat-conformance`: protocol checks SDK authors and implementers can run.
//!
//! ```text
//!  moat-conformance vectors [FILE]
//!  moat-conformance run --socket PATH [--json] [--case PATTERN]... [--skip PATTERN]... [--timeout SECS]
//!  moat-conformance list
//! ```
//!
//! Exit status: 0 when nothing failed, 1 when a check failed, 2 for a usage or input error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use moat_conformance::run::{Options, Suite};
use moat_conformance::vectors::{self, REFERENCE_VECTORS};

const USAGE: &str = "usage: moat-conformance vectors [FILE]
       moat-conformance run --socket PATH [--json] [--case PATTERN]... [--skip PATTERN]...
                            [--timeout SECS]
       moat-conformance list
PATTERN: a substring of family/name, or a glob over it (* and ?).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("vectors") if args.len() <= 2 => vectors_command(args.get(1).map(String::as_str)),
        Some("run") => match parse_run(&args[1..]) {
            Ok((options, json)) => run_command(&options, json),
            Err(e) => usage_error(&e),
        },
        Some("list") if args.len() == 1 => list_command(),
        _ => usage_error("expected a command"),
    }
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("moat-conformance: {why}");
    eprint!("{USAGE}");
    ExitCode::from(2)
}

/// Parses `run`'s arguments into options and whether to print JSON.
fn parse_run(args: &[String]) -> Result<(Options, bool), String> {
    let mut socket: Option<PathBuf> = None;
    let mut patterns = Vec::new();
    let mut skip = Vec::new();
    let mut json = false;
    let mut timeout = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--case" => patterns.push(value("--case")?),
            "--skip" => skip.push(value("--skip")?),
            "--json" => json = true,
            "--timeout" => {
                let text = value("--timeout")?;
                let secs: u64 = text
                    .parse()
                    .map_err(|_| format!("--timeout {text:?}: expected whole seconds"))?;
                if secs == 0 {
                    return Err("--timeout must be at least 1 second".to_owned());
                }
                timeout = Some(Duration::from_secs(secs));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut options = Options::new(socket.ok_or("run needs --socket PATH")?);
    options.patterns = patterns;
    options.skip = skip;
    if let Some(timeout) = timeout {
        options.case_timeout = timeout;
    }
    Ok((options, json))
}

fn run_command(options: &Options, json: bool) -> ExitCode {
    let suite = Suite::all();
    if suite.selected(options).is_empty() {
        eprintln!(
            "moat-conformance: no case left by --case {:?} --skip {:?} (see `moat-conformance list`)",
            options.patterns, options.skip
        );
        return ExitCode::from(2);
    }
    let report = suite.run(options, |case| {
        if !json {
            println!("{}", case.line());
        }
    });
    if json {
        println!("{:#}", report.to_json());
    } else {
        println!("{}", report.summary_line());
    }
    if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn list_command() -> ExitCode {
    for case in Suite::all().cases() {
        println!("{:<40} gen {:>2}  {}", case.full_name(), case.needs_generation, case.checks);
    }
    ExitCode::SUCCESS
}

fn vectors_command(file: Option<&str>) -> ExitCode {
    let (source, text) = match file {
        None => ("shipped reference-0.7.13 vectors".to_owned(), REFERENCE_VECTORS.to_owned()),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (path.to_owned(), text),
            Err(e) => {
                eprintln!("moat-conformance: cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let summary = match vectors::check_text(&text) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("moat-conformance: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    for mismatch in &summary.failed {
        println!("FAIL: {mismatch}");
    }
    println!("vectors ({source}): {} passed, {} failed", summary.passed, summary.failed.len());
    if summary.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
