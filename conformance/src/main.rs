//! `moat-conformance`: protocol checks SDK authors and implementers can run.
//!
//! ```text
//!  moat-conformance vectors [FILE]
//!  moat-conformance run --socket PATH [--json] [--case PATTERN]... [--skip PATTERN]... [--timeout SECS]
//!  moat-conformance list
//!  moat-conformance fuzz --socket PATH [--seconds N] [--seed N] [--jobs N] [--corpus DIR]
//!                        [--out DIR] [--generation G] [--pid PID] [--ping-ms MS] [--settle-ms MS]
//!  moat-conformance replay FILE --socket PATH [--pid PID] [--ping-ms MS] [--settle-ms MS]
//! ```
//!
//! Exit status: 0 when nothing failed, 1 when a check failed, 2 for a usage or input error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use moat_conformance::fuzz::{self, FuzzError};
use moat_conformance::limits::FUZZ_MAX_JOBS;
use moat_conformance::run::{Options, Suite};
use moat_conformance::vectors::{self, REFERENCE_VECTORS};

const USAGE: &str = "usage: moat-conformance vectors [FILE]
       moat-conformance run --socket PATH [--json] [--case PATTERN]... [--skip PATTERN]...
                            [--timeout SECS]
       moat-conformance list
       moat-conformance fuzz --socket PATH [--seconds N] [--seed N] [--jobs N] [--corpus DIR]
                             [--out DIR] [--generation G] [--pid PID] [--ping-ms MS]
                             [--settle-ms MS]
       moat-conformance replay FILE --socket PATH [--pid PID] [--ping-ms MS] [--settle-ms MS]
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
        Some("fuzz") => match parse_fuzz(&args[1..], None) {
            Ok((options, seed_given)) => fuzz_command(options, seed_given),
            Err(e) => usage_error(&e),
        },
        Some("replay") => match args.get(1).filter(|a| !a.starts_with("--")) {
            Some(file) => match parse_fuzz(&args[2..], Some("replay")) {
                Ok((options, _)) => replay_command(&options, file),
                Err(e) => usage_error(&e),
            },
            None => usage_error("replay needs FILE"),
        },
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

/// Parses `fuzz`'s arguments (or, with `only` = `replay`, the subset `replay` takes); also says
/// whether `--seed` was given.
fn parse_fuzz(args: &[String], only: Option<&str>) -> Result<(fuzz::Options, bool), String> {
    let mut options = fuzz::Options::new("");
    let mut socket = None;
    let mut seed_given = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg.as_str();
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let fuzz_only = matches!(
            flag,
            "--seconds" | "--seed" | "--jobs" | "--corpus" | "--out" | "--generation"
        );
        if fuzz_only && only.is_some() {
            return Err(format!("{flag} is for fuzz, not replay"));
        }
        match flag {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--seconds" => options.duration = Duration::from_secs(number(flag, &value()?, 1)?),
            "--seed" => {
                options.seed = number(flag, &value()?, 0)?;
                seed_given = true;
            }
            "--jobs" => {
                let jobs = number(flag, &value()?, 1)?;
                if jobs > FUZZ_MAX_JOBS as u64 {
                    return Err(format!("--jobs is at most {FUZZ_MAX_JOBS}"));
                }
                options.jobs = jobs as usize;
            }
            "--corpus" => options.corpus = Some(PathBuf::from(value()?)),
            "--out" => options.out = PathBuf::from(value()?),
            "--generation" => {
                let g = number(flag, &value()?, 1)?;
                options.generation = u8::try_from(g).map_err(|_| "--generation is 1..=255")?;
            }
            "--pid" => {
                let pid = number(flag, &value()?, 1)?;
                options.pid = Some(u32::try_from(pid).map_err(|_| "--pid is too large")?);
            }
            "--ping-ms" => options.ping_bound = Duration::from_millis(number(flag, &value()?, 1)?),
            "--settle-ms" => options.settle = Duration::from_millis(number(flag, &value()?, 0)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.socket = socket.ok_or("fuzz and replay need --socket PATH")?;
    Ok((options, seed_given))
}

fn number(flag: &str, text: &str, min: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("{flag} {text:?}: expected a whole number >= {min}")),
    }
}

fn fuzz_command(mut options: fuzz::Options, seed_given: bool) -> ExitCode {
    if !seed_given {
        options.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    }
    let summary = match fuzz::fuzz(&options, &|line| println!("{line}")) {
        Ok(summary) => summary,
        Err(e @ FuzzError::Start(_)) => {
            eprintln!("moat-conformance: {e}");
            println!("0 inputs, 1 failures, 0 corpus entries");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("moat-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(failure) = &summary.failure {
        println!(
            "reproducer: {} ({} steps, {} minimisation runs{})",
            failure.reproducer.display(),
            failure.steps,
            failure.minimize_trials,
            failure
                .stopped_early
                .as_ref()
                .map_or(String::new(), |why| format!("; stopped early: {why}"))
        );
        println!("transcript: {}", failure.reproducer.with_extension("txt").display());
    }
    println!("{}", summary.line());
    if summary.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn replay_command(options: &fuzz::Options, file: &str) -> ExitCode {
    match fuzz::replay(options, std::path::Path::new(file)) {
        Ok((repro, run)) => {
            print!("{}", run.transcript);
            println!("recorded: ({:?}) {}", repro.finding.kind, repro.finding.detail);
            match run.finding {
                Some(finding) => {
                    println!("STILL FAILS ({:?}): {}", finding.kind, finding.detail);
                    ExitCode::FAILURE
                }
                None => {
                    println!("passes: the oracle found nothing");
                    ExitCode::SUCCESS
                }
            }
        }
        Err(e) => {
            eprintln!("moat-conformance: {e}");
            ExitCode::from(2)
        }
    }
}
