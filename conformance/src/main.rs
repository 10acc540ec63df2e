//! `moat-conformance`: protocol checks SDK authors and implementers can run.
//!
//! `vectors [FILE]` is built. `run --socket PATH` (live relay scenarios) is not built yet and says
//! so.

use std::process::ExitCode;

use moat_conformance::vectors::{self, REFERENCE_VECTORS};

const USAGE: &str = "usage: moat-conformance vectors [FILE]\n       moat-conformance run --socket PATH   (not built yet)\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("vectors") => vectors_command(args.get(1).map(String::as_str)),
        Some("run") => {
            eprintln!(
                "moat-conformance run: not built yet (the live relay suite lands with the relay)"
            );
            ExitCode::from(2)
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
