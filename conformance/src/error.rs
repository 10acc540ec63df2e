//! The suite's error types: what can go wrong talking to a relay ([`ClientError`]) and how a case
//! ends other than passing ([`CaseError`]).

use std::io;
use std::time::Duration;

use moat_protocol::error::{DecodeError, EncodeError, FrameError};
use moat_protocol::generation::UnsupportedByPeer;
use moat_protocol::relay::PrologueError;

/// A failure of the suite's relay client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting to the socket failed.
    #[error("connect {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("socket {op}: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The case's deadline passed while waiting for the relay.
    #[error("timed out after {} ms waiting for {waiting_for}", elapsed.as_millis())]
    Timeout {
        /// What the client was waiting for.
        waiting_for: String,
        /// How long the case had run.
        elapsed: Duration,
    },
    /// The relay closed the connection.
    #[error("the relay closed the connection while waiting for {waiting_for}")]
    Closed {
        /// What the client was waiting for.
        waiting_for: String,
    },
    /// The relay's byte stream is not framed.
    #[error("relay stream is not framed: {0}")]
    Frame(#[from] FrameError),
    /// A frame from the relay did not decode.
    #[error("frame from the relay does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded.
    #[error("cannot encode a frame: {0}")]
    Encode(#[from] EncodeError),
    /// The 8-byte prologue is unusable.
    #[error("relay prologue: {0}")]
    Prologue(#[from] PrologueError),
    /// The relay greeted with the pre-0.5 legacy prologue, which this suite does not drive.
    #[error("the relay sent a legacy (pre-0.5) prologue: offset {offset}")]
    LegacyPrologue {
        /// The legacy id offset.
        offset: u32,
    },
    /// The first frame after the prologue is not `core.ready` on id 0 with flags 0.
    #[error("first frame after the prologue is not core.ready (id 0, flags 0): {found}")]
    NotReady {
        /// What arrived instead.
        found: String,
    },
    /// The suite refused to send a type the peer's generation lacks.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedByPeer),
    /// The client's id range is used up.
    #[error("the client's id range is exhausted")]
    IdsExhausted,
    /// A frame arrived that the case did not expect.
    #[error("unexpected {what} on id {id}")]
    Unexpected {
        /// Correlation id of the frame.
        id: u32,
        /// What it was.
        what: String,
    },
    /// A collection outgrew [`crate::limits::MAX_COLLECTED_BYTES`] or
    /// [`crate::limits::MAX_COLLECTED_FRAMES`].
    #[error("the relay sent more than the suite collects for one exchange ({what})")]
    TooMuch {
        /// Which limit.
        what: &'static str,
    },
}

/// How a case ends when it does not pass.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A check failed.
    #[error("{0}")]
    Failed(String),
    /// The case cannot run against this sandbox (generation, missing tool).
    #[error("{0}")]
    Skipped(String),
    /// Talking to the relay failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Fails the case with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err($crate::error::CaseError::Failed(format!($($why)+)));
        }
    };
}
pub(crate) use ensure;

/// Fails the case with a formatted reason.
macro_rules! fail {
    ($($why:tt)+) => {
        return Err($crate::error::CaseError::Failed(format!($($why)+)))
    };
}
pub(crate) use fail;
