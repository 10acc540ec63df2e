//! `moat-conformance fuzz`: a black-box, structure-aware protocol fuzzer for any relay socket.
//!
//! ```text
//!  probe handshake ─► N jobs (own seed each) ─┐
//!    loop until --seconds:                    │  generate (fresh)  or  mutate (a corpus entry)
//!      input ─► trial: execute steps ─► oracle on every reply, ping open clients
//!                      ─► fresh client handshake + pong ─► --pid fds/descendants settle
//!      new behaviour features? ─► corpus (memory, --corpus DIR)
//!      finding? ─► stop every job ─► (growth: run again to confirm) ─► minimise (ddmin, shrink)
//!               ─► --out DIR/<kind>-<seed>.json + .txt ─► exit 1
//!  "N inputs, N failures, N corpus entries"
//! ```
//!
//! Modules: [`input`] (what an input is), [`generate`] and [`mutate`] (making them), [`execute`]
//! (running one), [`oracle`] (what is a bug), [`trial`] (one input, fully judged), [`minimize`],
//! [`corpus`], [`replay`](mod@replay) (the reproducer file), [`transcript`], [`procs`] (`--pid`), [`raw`]
//! (the one hand-written frame header), [`rng`].

pub mod corpus;
pub mod execute;
pub mod generate;
pub mod input;
pub mod minimize;
pub mod mutate;
pub mod oracle;
pub mod procs;
pub mod raw;
pub mod replay;
pub mod rng;
pub mod transcript;
pub mod trial;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::corpus::{Corpus, CorpusError};
use self::execute::Executor;
use self::input::Input;
use self::oracle::{Finding, FindingKind, Resources};
use self::replay::{Reproducer, ReproducerError};
use self::rng::Rng;
use self::trial::Trial;
use crate::limits::{
    FUZZ_DEFAULT_PING_BOUND, FUZZ_DEFAULT_SECONDS, FUZZ_DEFAULT_SETTLE, FUZZ_LEAK_CONFIRMATIONS,
    SUITE_GENERATION,
};

/// What `fuzz` and `replay` are asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The relay socket.
    pub socket: PathBuf,
    /// How long to fuzz.
    pub duration: Duration,
    /// The seed; each job derives its own from it.
    pub seed: u64,
    /// Parallel clients.
    pub jobs: usize,
    /// Where the corpus lives, if anywhere.
    pub corpus: Option<PathBuf>,
    /// Where reproducers go.
    pub out: PathBuf,
    /// A process whose fds and descendants must not grow across inputs.
    pub pid: Option<u32>,
    /// Bound on a ping round trip.
    pub ping_bound: Duration,
    /// Longest wait for `pid`'s counts to settle.
    pub settle: Duration,
    /// The envelope generation to write (`--generation`); valid frames use types up to
    /// `min(this, ready.v)`.
    pub generation: u8,
}

impl Options {
    /// Defaults for `socket`: 60 s, seed 0, one job, no corpus dir, `./fuzz-out`.
    pub fn new(socket: impl Into<PathBuf>) -> Options {
        Options {
            socket: socket.into(),
            duration: Duration::from_secs(FUZZ_DEFAULT_SECONDS),
            seed: 0,
            jobs: 1,
            corpus: None,
            out: PathBuf::from("fuzz-out"),
            pid: None,
            ping_bound: FUZZ_DEFAULT_PING_BOUND,
            settle: FUZZ_DEFAULT_SETTLE,
            generation: SUITE_GENERATION,
        }
    }

    fn trial(&self) -> Trial {
        let resources = self.pid.map(|pid| Resources::new(pid, self.settle));
        Trial::new(Executor::new(&self.socket, self.ping_bound), resources, Arc::default())
    }
}

/// Why fuzzing could not run at all (a finding is not an error).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// The first handshake failed: nothing to fuzz.
    #[error("cannot start: {0}")]
    Start(String),
    /// The corpus directory is unusable.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// A reproducer could not be written or read.
    #[error(transparent)]
    Reproducer(#[from] ReproducerError),
}

/// What a fuzz run found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Inputs run (minimisation runs not counted).
    pub inputs: usize,
    /// Findings (0 or 1: the run stops at the first).
    pub failures: usize,
    /// Corpus entries kept, over all jobs.
    pub corpus_entries: usize,
    /// The finding and its reproducer, if any.
    pub failure: Option<Failure>,
}

impl Summary {
    /// `N inputs, N failures, N corpus entries`.
    pub fn line(&self) -> String {
        format!(
            "{} inputs, {} failures, {} corpus entries",
            self.inputs, self.failures, self.corpus_entries
        )
    }
}

/// A finding, minimised and written.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What failed.
    pub finding: Finding,
    /// The reproducer file.
    pub reproducer: PathBuf,
    /// Its steps.
    pub steps: usize,
    /// Candidate runs the minimiser made.
    pub minimize_trials: usize,
    /// Why minimisation stopped early, if it did.
    pub stopped_early: Option<String>,
}

/// State the jobs share.
struct Shared {
    until: Instant,
    generation: generate::Generation,
    stop: AtomicBool,
    inputs: AtomicUsize,
    failure: Mutex<Option<Result<Failure, ReproducerError>>>,
}

/// Fuzzes `options.socket`; `log` gets progress lines (the summary line is the caller's).
pub fn fuzz(options: &Options, log: &(dyn Fn(&str) + Sync)) -> Result<Summary, FuzzError> {
    let trial = options.trial();
    let probe = oracle::fresh_client(&options.socket, options.ping_bound)
        .map_err(|f| FuzzError::Start(f.detail))?;
    log(&format!(
        "fuzz: {} for {} s, seed {}, {} job(s), ready v{}{}",
        options.socket.display(),
        options.duration.as_secs(),
        options.seed,
        options.jobs,
        probe.ready_v(),
        options.pid.map_or(String::new(), |p| format!(", watching pid {p}"))
    ));
    let g = generate::Generation {
        v: options.generation,
        max: options.generation.min(probe.ready_v()).max(1),
    };
    drop(probe);
    let mut corpora = Vec::new();
    for _ in 0..options.jobs.max(1) {
        corpora.push(Corpus::open(options.corpus.as_deref())?);
    }
    let loaded = corpora.first().map_or(0, Corpus::len);
    if loaded > 0 {
        log(&format!("fuzz: {loaded} corpus entries loaded"));
    }
    let shared = Shared {
        until: Instant::now() + options.duration,
        generation: g,
        stop: AtomicBool::new(false),
        inputs: AtomicUsize::new(0),
        failure: Mutex::new(None),
    };
    let mut kept = std::collections::BTreeSet::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = corpora
            .into_iter()
            .enumerate()
            .map(|(job, corpus)| {
                let (trial, shared) = (&trial, &shared);
                scope.spawn(move || run_job(options, trial, shared, job, corpus, log))
            })
            .collect();
        for handle in handles {
            if let Ok(names) = handle.join() {
                kept.extend(names);
            }
        }
    });
    let failure = shared.failure.into_inner().unwrap_or_else(|p| p.into_inner()).transpose()?;
    Ok(Summary {
        inputs: shared.inputs.load(Ordering::Relaxed),
        failures: usize::from(failure.is_some()),
        corpus_entries: loaded + kept.len(),
        failure,
    })
}

/// One job's loop; returns the names of the corpus entries it added.
fn run_job(
    options: &Options,
    trial: &Trial,
    shared: &Shared,
    job: usize,
    mut corpus: Corpus,
    log: &(dyn Fn(&str) + Sync),
) -> Vec<String> {
    let mut rng = Rng::new(Rng::job_seed(options.seed, job));
    let mut kept = Vec::new();
    let g = shared.generation;
    while Instant::now() < shared.until && !shared.stop.load(Ordering::Relaxed) {
        let input = match corpus.pick(&mut rng).cloned() {
            Some(base) if rng.percent(60) => {
                let other = corpus.pick(&mut rng).cloned();
                mutate::input(&mut rng, &base, other.as_ref(), g)
            }
            _ => generate::input(&mut rng, g),
        };
        let run = trial.run(&input);
        shared.inputs.fetch_add(1, Ordering::Relaxed);
        match &run.finding {
            None => kept.extend(corpus.offer(&input, &run.features)),
            Some(finding) if !confirmed(trial, &input, finding.kind) => {
                log(&format!("fuzz: job {job}: not repeatable, ignored: {}", finding.detail));
            }
            Some(finding) => {
                if shared.stop.swap(true, Ordering::SeqCst) {
                    break;
                }
                log(&format!("FAIL ({:?}): {}", finding.kind, finding.detail));
                log(&format!("fuzz: minimising {} steps...", input.steps.len()));
                let result = report(options, trial, job, input, run);
                *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                break;
            }
        }
    }
    kept
}

/// Resource growth must repeat on every one of [`FUZZ_LEAK_CONFIRMATIONS`] more runs to count;
/// other findings count at once.
fn confirmed(trial: &Trial, input: &Input, kind: FindingKind) -> bool {
    if !matches!(kind, FindingKind::FdGrowth | FindingKind::ProcessGrowth) {
        return true;
    }
    (0..FUZZ_LEAK_CONFIRMATIONS).all(|_| trial.run(input).finding.is_some_and(|f| f.kind == kind))
}

fn report(
    options: &Options,
    trial: &Trial,
    job: usize,
    input: Input,
    run: execute::Executed,
) -> Result<Failure, ReproducerError> {
    let first = run.finding.clone().unwrap_or_else(|| Finding::new(FindingKind::NoPong, ""));
    let minimized = minimize::minimize(trial, input, run);
    let finding = minimized.run.finding.clone().unwrap_or(first);
    let repro = Reproducer {
        format: replay::FORMAT.to_owned(),
        version: replay::VERSION,
        finding: finding.clone(),
        seed: options.seed,
        job,
        minimised: minimized.stopped_early.is_none(),
        steps: minimized.input.steps.clone(),
    };
    let kind = serde_json::to_value(finding.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let stem = format!("{kind}-seed{}-job{job}", options.seed);
    let reproducer = repro.write(&options.out, &stem, &minimized.run.transcript)?;
    Ok(Failure {
        finding,
        reproducer,
        steps: repro.steps.len(),
        minimize_trials: minimized.trials,
        stopped_early: minimized.stopped_early,
    })
}

/// Runs a reproducer against `options.socket`; the finding when it still fails.
pub fn replay(
    options: &Options,
    file: &Path,
) -> Result<(Reproducer, execute::Executed), FuzzError> {
    let repro = Reproducer::read(file)?;
    let run = options.trial().run(&repro.input());
    Ok((repro, run))
}
