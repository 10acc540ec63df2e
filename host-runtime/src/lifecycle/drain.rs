//! `moat drain`: a running sandbox takes no new exec, lets the running ones finish, then stops.
//!
//! ```text
//!  CLI:             state draining ─► DIR/drain "requested" ─► wait for "refusing"
//!  sandbox process: sees DIR/drain ─► relay refuses new core.exec.request sessions (every
//!                   client, moat's or a raw SDK's) ─► "refusing" ─► no exec open
//!                   ─► core.shutdown ─► stopped, "drained: the last exec ended"
//! ```
//!
//! The refusal is the relay's (`moat_relay::router::DRAINING_MESSAGE`, a `core.error`); moat's
//! own clients are refused before they connect, as for any sandbox that is not running
//! ([`RuntimeError::NotRunning`] with status `draining`). Other sessions (filesystem, ping) still
//! pass while the execs finish. This module does not wait for the stop: `moat wait` does.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::RuntimeError;
use crate::lifecycle::open_named_in;
use crate::limits::{DRAIN_CONFIRM_TIMEOUT_MS, POLL_INTERVAL_MS};
use crate::store::home::{self, DRAIN_CONFIRMED, SandboxDir};
use crate::store::state::{self, SandboxState, Status};

/// `moat drain NAME` in `$MOAT_HOME`.
pub fn drain(name: &str) -> Result<SandboxState, RuntimeError> {
    drain_in(&home::moat_home(), name)
}

/// Drains the sandbox `name` of the moat home `home`: returns its state (`draining`) once its
/// relay refuses new execs; it stops by itself when the last running exec ends.
pub fn drain_in(home: &Path, name: &str) -> Result<SandboxState, RuntimeError> {
    drain_dir(&open_named_in(home, name)?)
}

/// [`drain_in`] on an opened sandbox directory.
pub fn drain_dir(dir: &SandboxDir) -> Result<SandboxState, RuntimeError> {
    let mut record = state::read(dir.path())?;
    let Some(pid) = record.pid.filter(|_| record.status == Status::Running) else {
        if record.status == Status::Draining {
            // Drained already, or being stopped: the first request stands.
            return Ok(record);
        }
        return Err(RuntimeError::NotRunning { name: record.name, status: record.status.as_str() });
    };
    record.status = Status::Draining;
    state::write(dir.path(), &record)?;
    let request = dir.drain_file();
    std::fs::write(&request, "requested").map_err(RuntimeError::io("request drain", &request))?;
    let deadline = Instant::now() + Duration::from_millis(DRAIN_CONFIRM_TIMEOUT_MS);
    loop {
        let confirmed = std::fs::read_to_string(&request).is_ok_and(|s| s == DRAIN_CONFIRMED);
        // Gone meanwhile (nothing was running): drained all the same.
        if confirmed || !state::is_sandbox_process(pid, dir.path()) {
            return state::read(dir.path()).or(Ok(record));
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::DrainUnconfirmed {
                name: record.name,
                timeout_ms: DRAIN_CONFIRM_TIMEOUT_MS,
            });
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}
