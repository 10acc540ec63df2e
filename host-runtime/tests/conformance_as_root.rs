//! End to end: every case of the `moat-conformance` live suite against a real namespace-backend
//! sandbox (the real `moat-agentd` as PID 1 behind the real relay socket), run through the suite's
//! library; and `moat-conformance fuzz` for a few seconds against another, watching the sandbox
//! process's fds and descendants. Needs root; without it the tests fail saying so.
//!
//! The per-case lines are printed (`cargo test -- --nocapture` shows them); the test asserts no
//! case failed, and that nothing was skipped for want of a protocol generation (moat's agent
//! speaks generation 10, and no case needs more).

use std::path::{Path, PathBuf};

use std::time::Duration;

use moat_conformance::fuzz;
use moat_conformance::run::{Options, Outcome, Suite};

mod support;
use support::{moat, moat_home, require_root, stderr, stdout};

/// A created sandbox, removed with `rm -f` when dropped.
struct Sandbox {
    home: PathBuf,
    name: &'static str,
}

impl Sandbox {
    fn create(home: &Path, name: &'static str) -> Sandbox {
        require_root();
        let output = moat(home, &["create", name, "--isolation", "namespace"]);
        assert_eq!(output.status.code(), Some(0), "create: {}", stderr(&output));
        Sandbox { home: home.to_owned(), name }
    }

    fn socket(&self) -> PathBuf {
        let output = moat(&self.home, &["socket", self.name]);
        assert_eq!(output.status.code(), Some(0), "socket: {}", stderr(&output));
        PathBuf::from(stdout(&output).trim_end())
    }
}

impl Sandbox {
    /// The sandbox process's pid, from its recorded state.
    fn pid(&self) -> u32 {
        let path = self.home.join("sandboxes").join(self.name).join("state.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pid = state["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {text}"));
        u32::try_from(pid).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = moat(&self.home, &["rm", "-f", self.name]);
    }
}

#[test]
fn every_conformance_case_passes_against_a_namespace_sandbox_as_root() {
    let home = moat_home("conformance");
    let sandbox = Sandbox::create(&home, "conformance");
    let suite = Suite::all();
    let report = suite.run(&Options::new(sandbox.socket()), |case| println!("{}", case.line()));
    println!("{}", report.summary_line());
    assert_eq!(report.cases.len(), suite.cases().len());
    assert_eq!(report.ready_generation, Some(10), "{:?}", report.handshake_error);
    let failed: Vec<String> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail { .. }))
        .map(|c| c.line())
        .collect();
    assert!(failed.is_empty(), "conformance failures:\n{}", failed.join("\n"));
    let generation_skips: Vec<String> = report
        .cases
        .iter()
        .filter(|c| {
            matches!(&c.outcome, Outcome::Skip { why } if why.starts_with("needs protocol generation"))
        })
        .map(|c| c.line())
        .collect();
    assert!(
        generation_skips.is_empty(),
        "skipped for generation:\n{}",
        generation_skips.join("\n")
    );
}

/// How long the fuzzer runs against the sandbox.
const FUZZ_SECONDS: u64 = 8;

#[test]
fn fuzzing_a_namespace_sandbox_for_a_few_seconds_finds_nothing_as_root() {
    let home = moat_home("conformance-fuzz");
    let sandbox = Sandbox::create(&home, "conformance-fuzz");
    let mut options = fuzz::Options::new(sandbox.socket());
    options.duration = Duration::from_secs(FUZZ_SECONDS);
    options.seed = 1;
    options.pid = Some(sandbox.pid());
    options.out = home.join("fuzz-out");
    let summary = fuzz::fuzz(&options, &|line| println!("{line}")).unwrap();
    println!("{}", summary.line());
    if let Some(failure) = &summary.failure {
        let transcript = std::fs::read_to_string(failure.reproducer.with_extension("txt"));
        panic!("the fuzzer found {:?}:\n{}", failure.finding, transcript.unwrap_or_default());
    }
    assert_eq!(summary.failures, 0);
    assert!(summary.inputs >= 5, "only {} inputs in {FUZZ_SECONDS} s", summary.inputs);
    assert!(summary.corpus_entries > 0, "no new behaviour seen at all: {}", summary.line());
}
