//! Shrinks a failing input to a small one that fails the same way: delta debugging (ddmin, by
//! complements) over the sequence of steps, then each remaining step made simpler (fresh id,
//! the type's own flags, generation 10, payload `{}` or halved, fewer pings, no waiting, conn 0)
//! while it still fails. "The same way" is the same [`FindingKind`].
//!
//! Bounded by [`FUZZ_MAX_MINIMIZE_TRIALS`] runs and [`FUZZ_MINIMIZE_BUDGET`]. Before each run the
//! peer must be healthy (handshake and pong); a peer that stays broken after a failure (an agent
//! that exited) cannot tell a failing candidate from a passing one, so minimisation stops there
//! and says so, keeping the smallest failing input found.

use std::time::Instant;

use super::execute::Executed;
use super::input::{Body, FrameSpec, IdSpec, Input, Step};
use super::oracle::FindingKind;
use super::trial::Trial;
use crate::limits::{FUZZ_MAX_MINIMIZE_TRIALS, FUZZ_MINIMIZE_BUDGET, SUITE_GENERATION};

/// The result of minimisation.
#[derive(Debug)]
pub struct Minimized {
    /// The smallest input found that fails with the same kind.
    pub input: Input,
    /// The run of it that failed.
    pub run: Executed,
    /// Candidate runs made.
    pub trials: usize,
    /// Why minimisation stopped early, if it did.
    pub stopped_early: Option<String>,
}

struct Shrinker<'a> {
    trial: &'a Trial,
    kind: FindingKind,
    trials: usize,
    started: Instant,
    stopped: Option<String>,
}

impl Shrinker<'_> {
    /// Runs a candidate; its run when it fails with the same kind.
    fn fails(&mut self, candidate: &Input) -> Option<Executed> {
        if self.stopped.is_some() {
            return None;
        }
        if self.trials >= FUZZ_MAX_MINIMIZE_TRIALS || self.started.elapsed() >= FUZZ_MINIMIZE_BUDGET
        {
            self.stopped = Some(format!(
                "the minimisation budget ({FUZZ_MAX_MINIMIZE_TRIALS} runs or {} s) ran out",
                FUZZ_MINIMIZE_BUDGET.as_secs()
            ));
            return None;
        }
        if !self.trial.healthy() {
            self.stopped = Some(
                "the peer no longer answers a fresh client, so candidates cannot be told apart"
                    .to_owned(),
            );
            return None;
        }
        self.trials += 1;
        let run = self.trial.run(candidate);
        run.finding.as_ref().is_some_and(|f| f.kind == self.kind).then_some(run)
    }
}

/// Minimises `input`, whose run `run` failed.
pub fn minimize(trial: &Trial, input: Input, run: Executed) -> Minimized {
    let Some(kind) = run.finding.as_ref().map(|f| f.kind) else {
        return Minimized { input, run, trials: 0, stopped_early: None };
    };
    let mut s = Shrinker { trial, kind, trials: 0, started: Instant::now(), stopped: None };
    let (mut best, mut best_run) = (input, run);
    let empty = Input::default();
    if !best.steps.is_empty() {
        if let Some(r) = s.fails(&empty) {
            (best, best_run) = (empty, r);
        }
    }
    ddmin(&mut s, &mut best, &mut best_run);
    shrink_steps(&mut s, &mut best, &mut best_run);
    Minimized { input: best, run: best_run, trials: s.trials, stopped_early: s.stopped }
}

/// Zeller's ddmin over the steps, testing complements.
fn ddmin(s: &mut Shrinker<'_>, best: &mut Input, best_run: &mut Executed) {
    let mut n = 2usize;
    while best.steps.len() >= 2 && s.stopped.is_none() {
        let len = best.steps.len();
        let chunk = len.div_ceil(n);
        let mut reduced = false;
        for start in (0..len).step_by(chunk) {
            let mut candidate = best.clone();
            candidate.steps.drain(start..(start + chunk).min(len));
            if let Some(run) = s.fails(&candidate) {
                (*best, *best_run) = (candidate, run);
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= len {
                break;
            }
            n = (2 * n).min(len);
        }
    }
    if best.steps.len() == 1 {
        let candidate = Input::default();
        if let Some(run) = s.fails(&candidate) {
            (*best, *best_run) = (candidate, run);
        }
    }
}

/// Makes each step simpler while the input still fails.
fn shrink_steps(s: &mut Shrinker<'_>, best: &mut Input, best_run: &mut Executed) {
    for k in 0..best.steps.len() {
        let mut progress = true;
        while progress && s.stopped.is_none() {
            progress = false;
            for simpler in simpler_steps(&best.steps[k]) {
                let mut candidate = best.clone();
                candidate.steps[k] = simpler;
                if let Some(run) = s.fails(&candidate) {
                    (*best, *best_run) = (candidate, run);
                    progress = true;
                    break;
                }
            }
        }
    }
}

/// Simpler versions of a step, simplest first; never the step itself.
fn simpler_steps(step: &Step) -> Vec<Step> {
    let mut out = Vec::new();
    match step {
        Step::Send { conn, frame } => {
            if *conn != 0 {
                out.push(Step::Send { conn: 0, frame: frame.clone() });
            }
            for f in simpler_frames(frame) {
                out.push(Step::Send { conn: *conn, frame: f });
            }
        }
        Step::Truncated { conn, frame, keep } => {
            if *conn != 0 {
                out.push(Step::Truncated { conn: 0, frame: frame.clone(), keep: *keep });
            }
            for smaller in [1, *keep / 2] {
                if smaller < *keep && smaller > 0 {
                    out.push(Step::Truncated { conn: *conn, frame: frame.clone(), keep: smaller });
                }
            }
            for f in simpler_frames(frame) {
                out.push(Step::Truncated { conn: *conn, frame: f, keep: *keep });
            }
        }
        Step::Flood { conn, count } => {
            for smaller in [1, *count / 2] {
                if smaller < *count && smaller > 0 {
                    out.push(Step::Flood { conn: *conn, count: smaller });
                }
            }
        }
        Step::SlowRead { conn, ms } if *ms > 0 => {
            out.push(Step::SlowRead { conn: *conn, ms: ms / 2 })
        }
        Step::Pause { ms } if *ms > 0 => out.push(Step::Pause { ms: 0 }),
        Step::BadLength { conn, len } if *conn != 0 => {
            out.push(Step::BadLength { conn: 0, len: *len })
        }
        Step::Disconnect { conn } if *conn != 0 => out.push(Step::Disconnect { conn: 0 }),
        Step::SlowRead { .. }
        | Step::Pause { .. }
        | Step::BadLength { .. }
        | Step::Disconnect { .. }
        | Step::Connect => {}
    }
    out
}

fn simpler_frames(frame: &FrameSpec) -> Vec<FrameSpec> {
    let mut out = Vec::new();
    let with = |change: &dyn Fn(&mut FrameSpec)| {
        let mut f = frame.clone();
        change(&mut f);
        f
    };
    if frame.id != IdSpec::Fresh {
        out.push(with(&|f| f.id = IdSpec::Fresh));
    }
    if frame.flags.is_some() {
        out.push(with(&|f| f.flags = None));
    }
    if frame.v != SUITE_GENERATION {
        out.push(with(&|f| f.v = SUITE_GENERATION));
    }
    match &frame.body {
        Body::Envelope { p, .. } if p.as_slice() != [0xa0] => {
            out.push(with(&|f| {
                if let Body::Envelope { p, .. } = &mut f.body {
                    *p = vec![0xa0];
                }
            }));
            if p.len() > 1 {
                out.push(with(&|f| {
                    if let Body::Envelope { p, .. } = &mut f.body {
                        p.truncate(p.len() / 2);
                    }
                }));
            }
        }
        Body::Raw { bytes } if bytes.len() > 1 => out.push(with(&|f| {
            if let Body::Raw { bytes } = &mut f.body {
                bytes.truncate(bytes.len() / 2);
            }
        })),
        Body::Envelope { .. } | Body::Raw { .. } => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simpler_steps_never_include_the_step_itself() {
        let frame = FrameSpec {
            id: IdSpec::Reuse { back: 1 },
            flags: Some(3),
            v: 0,
            body: Body::Envelope { t: "core.ping".into(), p: vec![1, 2, 3, 4] },
        };
        let steps = [
            Step::Send { conn: 2, frame: frame.clone() },
            Step::Truncated { conn: 1, frame, keep: 9 },
            Step::Flood { conn: 0, count: 9 },
            Step::Pause { ms: 5 },
        ];
        for step in steps {
            let simpler = simpler_steps(&step);
            assert!(!simpler.is_empty(), "{step:?}");
            assert!(!simpler.contains(&step), "{step:?}");
        }
    }

    #[test]
    fn a_fully_simple_step_has_no_simpler_version() {
        let frame = FrameSpec {
            id: IdSpec::Fresh,
            flags: None,
            v: SUITE_GENERATION,
            body: Body::Envelope { t: "core.ping".into(), p: vec![0xa0] },
        };
        assert!(simpler_steps(&Step::Send { conn: 0, frame }).is_empty());
        assert!(simpler_steps(&Step::Pause { ms: 0 }).is_empty());
    }
}
