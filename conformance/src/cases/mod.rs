//! Every case of the live suite, one module per family. Each case checks one behaviour, opens its
//! own connection(s), and leaves nothing running.

mod bulk;
mod disconnect;
mod errors;
mod exec;
mod flow;
mod framing;
mod fs;
mod handshake;
mod isolation;
mod latency;
mod tcp;

use moat_protocol::payload::exec::{ExecFailureKind, ExecRequest};

use crate::error::CaseError;
use crate::ops::{ExecEnd, ExecOutcome};
use crate::run::Case;

/// Every case, unordered ([`crate::run::Suite::all`] orders them by family).
pub(crate) fn all() -> Vec<Case> {
    [
        handshake::CASES,
        framing::CASES,
        exec::CASES,
        flow::CASES,
        fs::CASES,
        bulk::CASES,
        tcp::CASES,
        isolation::CASES,
        disconnect::CASES,
        latency::CASES,
        errors::CASES,
    ]
    .concat()
}

/// `sh -c SCRIPT`.
pub(crate) fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

/// Turns "the program was not found" into a SKIP naming `tool`, since the suite relies only on
/// POSIX tools a sandbox root may still lack.
pub(crate) fn skip_if_missing(outcome: &ExecOutcome, tool: &str) -> Result<(), CaseError> {
    match &outcome.end {
        Some(ExecEnd::Failed(failed)) if failed.kind == ExecFailureKind::NotFound => {
            Err(CaseError::Skipped(format!(
                "`{tool}` is not in the sandbox's root: {}",
                failed.message
            )))
        }
        _ => Ok(()),
    }
}

/// The exit code of a finished session, or a failure saying how it ended instead.
pub(crate) fn exit_code(outcome: &ExecOutcome) -> Result<i32, CaseError> {
    outcome.exit_code().map_err(CaseError::Failed)
}

/// Lossy text of some output, for messages.
pub(crate) fn text(bytes: &[u8]) -> String {
    const MAX_SHOWN_BYTES: usize = 200;
    let shown = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if bytes.len() > MAX_SHOWN_BYTES {
        s.push_str("...");
    }
    format!("{s:?}")
}
