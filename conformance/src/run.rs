//! The live suite: named cases, one behaviour each, grouped by family, driven against a relay
//! socket (`moat-conformance run --socket PATH`).
//!
//! ```text
//!  Suite::all() ─select(patterns)─► cases ─► probe handshake (ready v → negotiated generation)
//!     for each case:  needs > negotiated?  ──► SKIP "needs generation N"
//!                     else its own thread, own connection(s), own deadline ──► PASS | FAIL | SKIP
//!                     (a case still running past deadline + grace is reported FAIL and left)
//!  Report ─► one line per case, "N passed, N failed, N skipped", or JSON
//! ```
//!
//! A case never shares a connection with another, and a case that leaves processes running ends
//! them (or drops its connection, which makes the relay kill them).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cases;
use crate::client::{Conn, Deadline};
use crate::error::{CaseError, ClientError};
use crate::limits::{CASE_WATCHDOG_GRACE, DEFAULT_CASE_TIMEOUT};
use crate::pattern;

/// The families of cases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Prologue, ready frame, generation.
    Handshake,
    /// Split and coalesced writes; frames the relay must refuse.
    Framing,
    /// Exec sessions.
    Exec,
    /// Generation-10 exec flow control.
    FlowControl,
    /// Filesystem operations.
    Fs,
    /// Generation-8 raw bulk filesystem transfers.
    Bulk,
    /// Generation-4 TCP sessions to guest ports.
    Tcp,
    /// Clients cannot see or touch each other's sessions.
    MultiClient,
    /// What a departing client leaves behind.
    Disconnect,
    /// Ping round-trip figures.
    Latency,
    /// Unknown and too-new message types. Runs last: a microsandbox 0.7.13 agent exits on an
    /// unknown type (PROTOCOL.md §2.1), which would fail every case after it.
    Errors,
}

impl Family {
    /// The family's name in case names (`exec`, `multi_client`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Family::Handshake => "handshake",
            Family::Framing => "framing",
            Family::Exec => "exec",
            Family::FlowControl => "flow_control",
            Family::Fs => "fs",
            Family::Bulk => "bulk",
            Family::Tcp => "tcp",
            Family::MultiClient => "multi_client",
            Family::Disconnect => "disconnect",
            Family::Latency => "latency",
            Family::Errors => "errors",
        }
    }
}

/// What a passing case reports besides passing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Passed {
    /// A short note printed after the name (a measurement, a documented deviation).
    pub detail: Option<String>,
    /// Named figures for machine output, e.g. `("median_us", 84.0)`.
    pub figures: Vec<(&'static str, f64)>,
}

impl Passed {
    /// A pass with nothing to add.
    pub fn plain() -> Passed {
        Passed::default()
    }

    /// A pass with a note.
    pub fn note(detail: impl Into<String>) -> Passed {
        Passed { detail: Some(detail.into()), figures: Vec::new() }
    }

    /// Adds a named figure.
    pub fn figure(mut self, name: &'static str, value: f64) -> Passed {
        self.figures.push((name, value));
        self
    }
}

/// What a case body returns.
pub type CaseResult = Result<Passed, CaseError>;

/// One named case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Its family.
    pub family: Family,
    /// Its name within the family.
    pub name: &'static str,
    /// The lowest negotiated generation it can run at.
    pub needs_generation: u8,
    /// The behaviour it checks, in one line.
    pub checks: &'static str,
    /// The body.
    pub run: fn(&Ctx) -> CaseResult,
}

impl Case {
    /// `family/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.family.name(), self.name)
    }
}

/// What a case body gets: where the relay is and when it must be done.
#[derive(Debug, Clone)]
pub struct Ctx {
    socket: PathBuf,
    deadline: Deadline,
    negotiated: u8,
    case: String,
}

impl Ctx {
    /// A new connection to the relay, handshake done.
    pub fn connect(&self) -> Result<Conn, ClientError> {
        Conn::connect(&self.socket, self.deadline)
    }

    /// The relay socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The case's deadline.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// The negotiated generation the probe connection saw.
    pub fn negotiated(&self) -> u8 {
        self.negotiated
    }

    /// A scratch path unique to this run and case, e.g. for filesystem cases.
    pub fn scratch(&self) -> String {
        format!("/tmp/moat-conformance-{}-{}", std::process::id(), self.case.replace('/', "-"))
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every check held.
    Pass(Passed),
    /// A check failed, or the relay misbehaved.
    Fail {
        /// Why.
        why: String,
    },
    /// The case could not run here.
    Skip {
        /// Why.
        why: String,
    },
}

/// One case's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    /// `family/name`.
    pub name: String,
    /// The family.
    pub family: Family,
    /// The generation the case needs.
    pub needs_generation: u8,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CaseReport {
    /// The human line: `PASS name`, `PASS name: note`, `FAIL name: why`, `SKIP name: why`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Pass(Passed { detail: None, .. }) => format!("PASS {}", self.name),
            Outcome::Pass(Passed { detail: Some(detail), .. }) => {
                format!("PASS {}: {detail}", self.name)
            }
            Outcome::Fail { why } => format!("FAIL {}: {why}", self.name),
            Outcome::Skip { why } => format!("SKIP {}: {why}", self.name),
        }
    }

    /// This case as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let (outcome, detail) = match &self.outcome {
            Outcome::Pass(passed) => ("pass", passed.detail.clone()),
            Outcome::Fail { why } => ("fail", Some(why.clone())),
            Outcome::Skip { why } => ("skip", Some(why.clone())),
        };
        let figures: serde_json::Map<String, serde_json::Value> = match &self.outcome {
            Outcome::Pass(passed) => {
                passed.figures.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect()
            }
            Outcome::Fail { .. } | Outcome::Skip { .. } => serde_json::Map::new(),
        };
        serde_json::json!({
            "name": self.name,
            "family": self.family.name(),
            "needs_generation": self.needs_generation,
            "outcome": outcome,
            "detail": detail,
            "figures": figures,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
        })
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The socket driven.
    pub socket: PathBuf,
    /// The ready frame's `v`, if the probe handshake worked.
    pub ready_generation: Option<u8>,
    /// Why the probe handshake failed, if it did.
    pub handshake_error: Option<String>,
    /// Every selected case, in run order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass(_)))
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail { .. }))
    }

    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip { .. }))
    }

    /// `N passed, N failed, N skipped`.
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }

    /// The whole report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "socket": self.socket.display().to_string(),
            "ready_generation": self.ready_generation,
            "negotiated_generation": self.ready_generation.map(|v| v.min(crate::limits::SUITE_GENERATION)),
            "handshake_error": self.handshake_error,
            "passed": self.passed(),
            "failed": self.failed(),
            "skipped": self.skipped(),
            "cases": self.cases.iter().map(CaseReport::to_json).collect::<Vec<_>>(),
        })
    }
}

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// The relay socket.
    pub socket: PathBuf,
    /// `--case` patterns; empty selects every case.
    pub patterns: Vec<String>,
    /// `--skip` patterns: cases they match are left out even when selected.
    pub skip: Vec<String>,
    /// Time each case may take.
    pub case_timeout: Duration,
}

impl Options {
    /// Every case against `socket` with the default timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Options {
        Options {
            socket: socket.into(),
            patterns: Vec::new(),
            skip: Vec::new(),
            case_timeout: DEFAULT_CASE_TIMEOUT,
        }
    }
}

/// A set of cases.
#[derive(Debug, Clone)]
pub struct Suite {
    cases: Vec<Case>,
}

impl Suite {
    /// Every case, in run order.
    pub fn all() -> Suite {
        let mut cases = cases::all();
        cases.sort_by_key(|c| c.family);
        Suite { cases }
    }

    /// The cases.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The cases `patterns` select (all of them when `patterns` is empty).
    pub fn select(&self, patterns: &[String]) -> Vec<Case> {
        self.cases
            .iter()
            .filter(|c| {
                let name = c.full_name();
                patterns.is_empty() || patterns.iter().any(|p| pattern::matches(p, &name))
            })
            .copied()
            .collect()
    }

    /// The cases `options` selects: matched by a `--case` pattern (or all), and by no `--skip`
    /// pattern.
    pub fn selected(&self, options: &Options) -> Vec<Case> {
        let skipped = |c: &Case| {
            let name = c.full_name();
            options.skip.iter().any(|p| pattern::matches(p, &name))
        };
        self.select(&options.patterns).into_iter().filter(|c| !skipped(c)).collect()
    }

    /// Runs the selected cases one after another, calling `on_case` as each finishes.
    pub fn run(&self, options: &Options, mut on_case: impl FnMut(&CaseReport)) -> Report {
        let probe = Conn::connect(&options.socket, Deadline::after(options.case_timeout));
        let (ready_generation, handshake_error) = match &probe {
            Ok(conn) => (Some(conn.ready_v()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        drop(probe);
        let mut report = Report {
            socket: options.socket.clone(),
            ready_generation,
            handshake_error: handshake_error.clone(),
            cases: Vec::new(),
        };
        for case in self.selected(options) {
            let started = Instant::now();
            let outcome = match (ready_generation, &handshake_error) {
                (Some(v), _) => gate_and_run(case, options, v),
                (None, Some(err)) if case.family != Family::Handshake => {
                    Outcome::Fail { why: format!("no usable handshake with the relay: {err}") }
                }
                (None, _) => run_one(case, options, 0),
            };
            let case_report = CaseReport {
                name: case.full_name(),
                family: case.family,
                needs_generation: case.needs_generation,
                outcome,
                elapsed: started.elapsed(),
            };
            on_case(&case_report);
            report.cases.push(case_report);
        }
        report
    }
}

fn gate_and_run(case: Case, options: &Options, ready_v: u8) -> Outcome {
    let negotiated = ready_v.min(crate::limits::SUITE_GENERATION);
    if case.needs_generation > negotiated {
        return Outcome::Skip {
            why: format!(
                "needs protocol generation {}; the relay's core.ready announces v={ready_v}",
                case.needs_generation
            ),
        };
    }
    run_one(case, options, negotiated)
}

/// Runs one case on its own thread and waits for it at most its timeout plus a grace period.
fn run_one(case: Case, options: &Options, negotiated: u8) -> Outcome {
    let ctx = Ctx {
        socket: options.socket.clone(),
        deadline: Deadline::after(options.case_timeout),
        negotiated,
        case: case.full_name(),
    };
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name(case.full_name()).spawn(move || {
        let _ = tx.send((case.run)(&ctx));
    });
    if let Err(e) = spawned {
        return Outcome::Fail { why: format!("cannot start the case's thread: {e}") };
    }
    match rx.recv_timeout(options.case_timeout + CASE_WATCHDOG_GRACE) {
        Ok(Ok(passed)) => Outcome::Pass(passed),
        Ok(Err(CaseError::Skipped(why))) => Outcome::Skip { why },
        Ok(Err(e)) => Outcome::Fail { why: e.to_string() },
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::Fail {
            why: format!(
                "did not finish within {} s; left running",
                (options.case_timeout + CASE_WATCHDOG_GRACE).as_secs()
            ),
        },
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Outcome::Fail { why: "the case panicked (a bug in the suite)".to_owned() }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn case_names_are_unique_and_every_family_has_cases() {
        let suite = Suite::all();
        let names: BTreeSet<String> = suite.cases().iter().map(Case::full_name).collect();
        assert_eq!(names.len(), suite.cases().len());
        let families: BTreeSet<Family> = suite.cases().iter().map(|c| c.family).collect();
        assert_eq!(families.len(), 11);
    }

    #[test]
    fn cases_run_grouped_by_family_with_errors_last() {
        let suite = Suite::all();
        let order: Vec<Family> = suite.cases().iter().map(|c| c.family).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(order.last(), Some(&Family::Errors));
    }

    #[test]
    fn every_case_needs_a_real_generation() {
        for case in Suite::all().cases() {
            let gen_ok = (1..=crate::limits::SUITE_GENERATION).contains(&case.needs_generation);
            assert!(gen_ok, "{}", case.full_name());
        }
    }

    #[test]
    fn patterns_select_by_substring_or_glob() {
        let suite = Suite::all();
        assert_eq!(suite.select(&[]).len(), suite.cases().len());
        let exec = suite.select(&["exec/*".to_owned()]);
        assert!(!exec.is_empty() && exec.iter().all(|c| c.family == Family::Exec));
        let echo = suite.select(&["echo".to_owned()]);
        assert_eq!(echo.iter().map(Case::full_name).collect::<Vec<_>>(), ["exec/echo"]);
        assert!(suite.select(&["no-such-case".to_owned()]).is_empty());
        let mut options = Options::new("/x.sock");
        options.patterns = vec!["exec/*".to_owned()];
        options.skip = vec!["echo".to_owned(), "*pty*".to_owned()];
        let left = suite.selected(&options);
        assert_eq!(left.len(), exec.len() - 2);
        assert!(left.iter().all(|c| c.name != "echo" && c.name != "pty"));
    }

    #[test]
    fn report_lines_and_summary() {
        let case = |outcome| CaseReport {
            name: "exec/echo".to_owned(),
            family: Family::Exec,
            needs_generation: 1,
            outcome,
            elapsed: Duration::from_millis(3),
        };
        let report = Report {
            socket: PathBuf::from("/x.sock"),
            ready_generation: Some(7),
            handshake_error: None,
            cases: vec![
                case(Outcome::Pass(Passed::plain())),
                case(Outcome::Pass(Passed::note("fast").figure("median_us", 80.0))),
                case(Outcome::Fail { why: "broken".to_owned() }),
                case(Outcome::Skip { why: "needs generation 8".to_owned() }),
            ],
        };
        let lines: Vec<String> = report.cases.iter().map(CaseReport::line).collect();
        assert_eq!(
            lines,
            [
                "PASS exec/echo",
                "PASS exec/echo: fast",
                "FAIL exec/echo: broken",
                "SKIP exec/echo: needs generation 8"
            ]
        );
        assert_eq!(report.summary_line(), "2 passed, 1 failed, 1 skipped");
        let json = report.to_json();
        assert_eq!(json["failed"], 1);
        assert_eq!(json["negotiated_generation"], 7);
        assert_eq!(json["cases"][1]["figures"]["median_us"], 80.0);
        assert_eq!(json["cases"][2]["outcome"], "fail");
    }
}
