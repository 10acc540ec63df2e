//! One input, fully judged: run it ([`super::execute`]), then, with every client of it gone, the
//! after-input oracle: a fresh client still gets the handshake and a pong, and with `--pid` the
//! process's fds and descendants settle back to where they were.
//!
//! With `--pid`, trials of parallel jobs take turns (a lock), since counts taken while another
//! job's clients are connected would mean nothing.

use std::sync::{Arc, Mutex};

use super::execute::{Executed, Executor};
use super::input::Input;
use super::oracle::{self, Resources};

/// Runs and judges inputs against one peer.
#[derive(Debug, Clone)]
pub struct Trial {
    executor: Executor,
    resources: Option<Resources>,
    turns: Arc<Mutex<()>>,
}

impl Trial {
    /// Trials through `executor`, watching `resources` when given; `turns` is shared by the jobs.
    pub fn new(executor: Executor, resources: Option<Resources>, turns: Arc<Mutex<()>>) -> Trial {
        Trial { executor, resources, turns }
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Runs `input` and the after-input oracle. The result's `finding` is the first bug seen.
    pub fn run(&self, input: &Input) -> Executed {
        let Some(resources) = self.resources else {
            return self.run_unwatched(input);
        };
        let _turn = self.turns.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = match resources.measure() {
            Ok(usage) => usage,
            Err(finding) => return Executed { finding: Some(finding), ..Executed::default() },
        };
        let mut out = self.run_unwatched(input);
        if out.finding.is_none() {
            if let Err(finding) = resources.settled(before) {
                out.transcript.line(format!("FINDING ({:?}): {}", finding.kind, finding.detail));
                out.finding = Some(finding);
            }
        }
        out
    }

    fn run_unwatched(&self, input: &Input) -> Executed {
        let mut out = self.executor.run(input);
        if out.finding.is_none() {
            if let Err(finding) =
                oracle::fresh_client(self.executor.socket(), self.executor.ping_bound())
            {
                out.transcript.line(format!("FINDING ({:?}): {}", finding.kind, finding.detail));
                out.finding = Some(finding);
            }
        }
        out
    }

    /// Whether the peer is healthy now: a fresh client gets the handshake and a pong.
    pub fn healthy(&self) -> bool {
        oracle::fresh_client(self.executor.socket(), self.executor.ping_bound()).is_ok()
    }
}
