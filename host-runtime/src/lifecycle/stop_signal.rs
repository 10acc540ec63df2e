//! The stop signal: what `moat stop` sends every running exec before `core.shutdown` (an image's
//! StopSignal, `--stop-signal` at create, or `moat stop --signal`).
//!
//! ```text
//!  stop, a signal in effect ─► DIR/stop-request "SIGNUM GRACE_MS stop" ─► sandbox process: relay
//!   refuses new execs ─► core.exec.signal SIGNUM on every open exec session (any client's)
//!   ─► they end, or GRACE_MS passes ─► core.shutdown (the agent SIGTERMs what is left)
//! ```
//!
//! `core.shutdown` keeps its null payload (PROTOCOL.md): the signal travels as the protocol's
//! own `core.exec.signal`, sent by the relay, which knows every open session.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::RuntimeError;
use crate::store::home::SandboxDir;

/// Linux's first and last real-time signal numbers as user space sees them (glibc and musl keep
/// 32 and 33 for themselves).
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// A signal to stop a sandbox's commands with: a Linux signal number, from a name (`SIGUSR1`,
/// `usr1`, `SIGRTMIN+3`) or a number (`10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSignal(i32);

impl StopSignal {
    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// A signal from its number ([`RuntimeError::Config`] when Linux has no such signal).
    pub fn from_number(number: i32) -> Result<StopSignal, RuntimeError> {
        let valid = Signal::try_from(number).is_ok() || (SIGRTMIN..=SIGRTMAX).contains(&number);
        if valid { Ok(StopSignal(number)) } else { Err(invalid(&number.to_string())) }
    }
}

/// `base + sign * N` for a real-time signal's `(base, sign, "N")`, N within the range.
fn offset((base, sign, n): (i32, i32, &str)) -> Option<i32> {
    let n: i32 = n.parse().ok().filter(|_| n.bytes().all(|b| b.is_ascii_digit()))?;
    (0..=SIGRTMAX - SIGRTMIN).contains(&n).then_some(base + sign * n)
}

fn invalid(text: &str) -> RuntimeError {
    RuntimeError::Config(format!(
        "stop signal {text:?}: not a signal (a name such as SIGTERM, USR1 or SIGRTMIN+3, or a \
         number from 1 to 64)"
    ))
}

impl FromStr for StopSignal {
    type Err = RuntimeError;

    fn from_str(text: &str) -> Result<StopSignal, RuntimeError> {
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let number = trimmed.parse::<i32>().map_err(|_| invalid(text))?;
            return StopSignal::from_number(number).map_err(|_| invalid(text));
        }
        let upper = trimmed.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        // SIGRTMIN, SIGRTMIN+N, SIGRTMAX, SIGRTMAX-N.
        let realtime = match (name.strip_prefix("RTMIN"), name.strip_prefix("RTMAX")) {
            (Some(""), _) => Some(SIGRTMIN),
            (_, Some("")) => Some(SIGRTMAX),
            (Some(rest), _) => rest.strip_prefix('+').map(|n| (SIGRTMIN, 1, n)).and_then(offset),
            (_, Some(rest)) => rest.strip_prefix('-').map(|n| (SIGRTMAX, -1, n)).and_then(offset),
            (None, None) => None,
        };
        if name.starts_with("RT") {
            return realtime
                .ok_or_else(|| invalid(text))
                .and_then(|number| StopSignal::from_number(number).map_err(|_| invalid(text)));
        }
        Signal::from_str(&format!("SIG{name}"))
            .map(|signal| StopSignal(signal as i32))
            .map_err(|_| invalid(text))
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Signal::try_from(self.0) {
            Ok(signal) => f.write_str(signal.as_str()),
            Err(_) if self.0 == SIGRTMIN => f.write_str("SIGRTMIN"),
            Err(_) => write!(f, "SIGRTMIN+{}", self.0 - SIGRTMIN),
        }
    }
}

/// The file a stop request is written to for the sandbox process.
const REQUEST_FILE: &str = "stop-request";

/// `DIR/stop-request`.
pub(crate) fn request_file(dir: &SandboxDir) -> std::path::PathBuf {
    dir.path().join(REQUEST_FILE)
}

/// A stop the sandbox process carries out itself: `moat stop` with a stop signal, or an
/// attached sandbox whose creator went away ([`crate::lifecycle::attach`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopRequest {
    /// Sent to every open exec first (`None`: `core.shutdown` at once).
    pub(crate) signal: Option<StopSignal>,
    /// How long the execs get to end after the signal.
    pub(crate) grace: Duration,
    /// The creator of an attached sandbox went away (else: `moat stop`).
    pub(crate) creator_gone: bool,
}

impl StopRequest {
    /// Writes the request for the sandbox process (whole, by a rename): "SIGNUM GRACE_MS WHY",
    /// SIGNUM 0 for none, WHY `stop` or `creator-gone`.
    pub(crate) fn write(self, dir: &SandboxDir) -> Result<(), RuntimeError> {
        let path = request_file(dir);
        let tmp = path.with_extension("tmp");
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        let signal = self.signal.map_or(0, StopSignal::number);
        let why = if self.creator_gone { "creator-gone" } else { "stop" };
        std::fs::write(&tmp, format!("{signal} {grace_ms} {why}"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(RuntimeError::io("request a stop", &path))
    }

    /// The request in `DIR/stop-request`, once one is there and readable.
    pub(crate) fn read(dir: &SandboxDir) -> Option<StopRequest> {
        let text = std::fs::read_to_string(request_file(dir)).ok()?;
        let mut words = text.split_whitespace();
        let signal = match words.next()?.parse().ok()? {
            0 => None,
            number => Some(StopSignal::from_number(number).ok()?),
        };
        let grace = Duration::from_millis(words.next()?.parse().ok()?);
        let creator_gone = words.next()? == "creator-gone";
        Some(StopRequest { signal, grace, creator_gone })
    }
}

/// The stop signal recorded in a sandbox's configuration (an image's StopSignal, or
/// `--stop-signal`); one that does not parse (recorded by an older moat, say) is logged and
/// ignored.
pub(crate) fn configured(config: &crate::config::SandboxConfig) -> Option<StopSignal> {
    let text = config.stop_signal.as_deref()?;
    match text.parse() {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(%err, "ignoring the recorded stop signal");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        for (text, number) in [
            ("SIGUSR1", 10),
            ("usr1", 10),
            ("SigInt", 2),
            ("TERM", 15),
            ("9", 9),
            ("SIGRTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX-1", 63),
            ("SIGRTMAX", 64),
            ("40", 40),
        ] {
            assert_eq!(text.parse::<StopSignal>().unwrap().number(), number, "{text}");
        }
    }

    #[test]
    fn bad_signals_are_typed_errors() {
        for text in ["", "SIGNOPE", "0", "65", "-1", "32", "RTMIN+31", "RTMIN-1", "RTMAX+1", "1x"] {
            let err = text.parse::<StopSignal>().unwrap_err();
            assert!(matches!(err, RuntimeError::Config(_)), "{text}: {err}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{text}: {err}");
        }
    }

    #[test]
    fn display_names_the_signal() {
        assert_eq!("usr1".parse::<StopSignal>().unwrap().to_string(), "SIGUSR1");
        assert_eq!("RTMIN+2".parse::<StopSignal>().unwrap().to_string(), "SIGRTMIN+2");
    }

    #[test]
    fn the_request_file_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SandboxDir::open(tmp.path().to_path_buf());
        assert_eq!(StopRequest::read(&dir), None);
        let request = StopRequest {
            signal: Some(StopSignal(10)),
            grace: Duration::from_millis(2500),
            creator_gone: false,
        };
        request.write(&dir).unwrap();
        assert_eq!(StopRequest::read(&dir), Some(request));
        let request = StopRequest { signal: None, grace: Duration::ZERO, creator_gone: true };
        request.write(&dir).unwrap();
        assert_eq!(StopRequest::read(&dir), Some(request));
    }
}
