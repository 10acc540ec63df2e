//! Payloads of exec sessions (PROTOCOL.md §6.2, §8) and the generation-10 exec policy.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{EXEC_OUTPUT_EVENT_OVERHEAD_BYTES, MAX_EXEC_CHUNK_BYTES};

/// `core.exec.request`: start a program. The encoder always writes all nine keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program; looked up on PATH when it has no slash.
    pub cmd: String,
    /// argv[1..].
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries applied over the agent's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; `None` uses the sandbox default.
    #[serde(default)]
    pub cwd: Option<String>,
    /// `USER`, `UID`, `USER:GROUP` or `UID:GID`; `None` uses the sandbox default.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a PTY (stdout and stderr merge into `core.exec.stdout`).
    #[serde(default)]
    pub tty: bool,
    /// Initial PTY rows.
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Initial PTY columns.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Resource limits applied in the child before exec.
    #[serde(default)]
    pub rlimits: Vec<ExecRlimit>,
}

impl ExecRequest {
    /// A request for `cmd` with the reference's defaults for every other field.
    pub fn new(cmd: impl Into<String>) -> ExecRequest {
        ExecRequest {
            cmd: cmd.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: false,
            rows: default_rows(),
            cols: default_cols(),
            rlimits: Vec::new(),
        }
    }
}

fn default_rows() -> u16 {
    24
}

fn default_cols() -> u16 {
    80
}

/// One resource limit: `{resource, soft, hard}`; `resource` is a lowercase name like `nofile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRlimit {
    /// Lowercase resource name (`cpu`, `fsize`, `nofile`, ...); unknown names are skipped.
    pub resource: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// `core.exec.started`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStarted {
    /// The child's pid (in the sandbox's pid namespace).
    pub pid: u32,
}

/// `{data: bytes}`: the payload of `core.exec.stdin` (empty = EOF), `core.exec.stdout`,
/// `core.exec.stderr`, `core.fs.data` (empty = write EOF) and `core.tcp.data`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The bytes (a CBOR byte string; a text string is rejected).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Data {
    /// Wraps bytes.
    pub fn new(data: impl Into<Vec<u8>>) -> Data {
        Data { data: data.into() }
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 32;
        let head = &self.data[..self.data.len().min(SHOWN)];
        write!(f, "Data({} bytes: {:?}", self.data.len(), String::from_utf8_lossy(head))?;
        if self.data.len() > SHOWN {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

/// `core.exec.stdin.error`: a stdin write failed (non-terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStdinError {
    /// errno, when known.
    #[serde(default)]
    pub errno: Option<i32>,
    /// errno name (EPIPE, EBADF, EINVAL, EIO, ENOSPC, EFBIG), when known.
    #[serde(default)]
    pub errno_name: Option<String>,
    /// What failed.
    pub message: String,
}

/// `core.exec.exited`: the terminal exit status; `-1` when a signal killed the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExited {
    /// Exit status, or -1 on signal death.
    pub code: i32,
}

/// `core.exec.failed`: the program never started (terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailed {
    /// Failure category.
    pub kind: ExecFailureKind,
    /// errno, when one applies.
    #[serde(default)]
    pub errno: Option<i32>,
    /// errno name, when one applies.
    #[serde(default)]
    pub errno_name: Option<String>,
    /// What failed.
    pub message: String,
    /// The step that failed, e.g. `"execvp"`.
    #[serde(default)]
    pub stage: Option<String>,
}

/// `core.exec.failed.kind`. A kind this crate does not know is kept verbatim as `Other`, so a
/// newer peer's failure still decodes and re-encodes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecFailureKind {
    /// The program was not found.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// The file is not executable.
    NotExecutable,
    /// The working directory is unusable.
    BadCwd,
    /// The arguments are unusable (e.g. contain NUL).
    BadArgs,
    /// A resource or admission limit was hit.
    ResourceLimit,
    /// The user or group could not be set up.
    UserSetupFailed,
    /// Out of memory.
    OutOfMemory,
    /// The PTY could not be set up.
    PtySetupFailed,
    /// Any other failure.
    Other,
    /// A kind from a newer peer, kept verbatim.
    Unrecognized(String),
}

impl ExecFailureKind {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            ExecFailureKind::NotFound => "not_found",
            ExecFailureKind::PermissionDenied => "permission_denied",
            ExecFailureKind::NotExecutable => "not_executable",
            ExecFailureKind::BadCwd => "bad_cwd",
            ExecFailureKind::BadArgs => "bad_args",
            ExecFailureKind::ResourceLimit => "resource_limit",
            ExecFailureKind::UserSetupFailed => "user_setup_failed",
            ExecFailureKind::OutOfMemory => "out_of_memory",
            ExecFailureKind::PtySetupFailed => "pty_setup_failed",
            ExecFailureKind::Other => "other",
            ExecFailureKind::Unrecognized(s) => s,
        }
    }

    /// Parses a wire string; unknown strings become `Unrecognized`.
    pub fn from_wire(s: &str) -> ExecFailureKind {
        match s {
            "not_found" => ExecFailureKind::NotFound,
            "permission_denied" => ExecFailureKind::PermissionDenied,
            "not_executable" => ExecFailureKind::NotExecutable,
            "bad_cwd" => ExecFailureKind::BadCwd,
            "bad_args" => ExecFailureKind::BadArgs,
            "resource_limit" => ExecFailureKind::ResourceLimit,
            "user_setup_failed" => ExecFailureKind::UserSetupFailed,
            "out_of_memory" => ExecFailureKind::OutOfMemory,
            "pty_setup_failed" => ExecFailureKind::PtySetupFailed,
            "other" => ExecFailureKind::Other,
            other => ExecFailureKind::Unrecognized(other.to_owned()),
        }
    }
}

impl Serialize for ExecFailureKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ExecFailureKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = ExecFailureKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an exec failure kind string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExecFailureKind, E> {
                Ok(ExecFailureKind::from_wire(v))
            }
        }
        deserializer.deserialize_str(KindVisitor)
    }
}

/// `core.exec.resize`: new PTY size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// `core.exec.signal`: a signal for the session's process group (9 = kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSignal {
    /// Linux signal number.
    pub signal: i32,
}

/// `core.exec.output.ack` and `core.exec.stdin.ack`: a cumulative count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    /// Output ack: cumulative charge `Σ(len + 256)`; stdin ack: cumulative bytes written.
    pub consumed: u64,
}

/// Generation-10 exec flow-control policy (`Ready.exec_limits`, `GuestBootstrap.exec_limits`).
/// Every field has a default, so `{}` decodes; the encoder writes all five.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecLimits {
    /// Concurrent executions, sandbox-wide.
    pub max_executions: u32,
    /// Unacknowledged stdin bytes per exec.
    pub input_limit: u32,
    /// Unacknowledged output charge per exec.
    pub output_limit: u32,
    /// Largest stdin chunk.
    pub stdin_chunk_size: u32,
    /// Largest output chunk.
    pub output_chunk_size: u32,
}

impl Default for ExecLimits {
    fn default() -> ExecLimits {
        ExecLimits {
            max_executions: 128,
            input_limit: 65_536,
            output_limit: 1_048_576,
            stdin_chunk_size: 16_384,
            output_chunk_size: 16_384,
        }
    }
}

/// Why an [`ExecLimits`] policy is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExecLimitsError {
    /// `max_executions` is zero.
    #[error("max_executions must be positive")]
    NoExecutions,
    /// A chunk size is zero or above the frame-derived maximum.
    #[error("{field} must be between 1 and {MAX_EXEC_CHUNK_BYTES} bytes, got {value}")]
    ChunkSize {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// `stdin_chunk_size` exceeds `input_limit`.
    #[error("stdin_chunk_size {chunk} exceeds input_limit {limit}")]
    StdinChunkAboveLimit {
        /// The chunk size.
        chunk: u32,
        /// The input limit.
        limit: u32,
    },
    /// `output_chunk_size + 256` exceeds `output_limit`.
    #[error("output_chunk_size {chunk} plus 256 bytes of overhead exceeds output_limit {limit}")]
    OutputChunkAboveLimit {
        /// The chunk size.
        chunk: u32,
        /// The output limit.
        limit: u32,
    },
}

impl ExecLimits {
    /// Checks the relations PROTOCOL.md §6.1 requires of a valid policy.
    pub fn validate(&self) -> Result<(), ExecLimitsError> {
        if self.max_executions == 0 {
            return Err(ExecLimitsError::NoExecutions);
        }
        for (field, value) in [
            ("stdin_chunk_size", self.stdin_chunk_size),
            ("output_chunk_size", self.output_chunk_size),
        ] {
            if value == 0 || value > MAX_EXEC_CHUNK_BYTES {
                return Err(ExecLimitsError::ChunkSize { field, value });
            }
        }
        if self.stdin_chunk_size > self.input_limit {
            return Err(ExecLimitsError::StdinChunkAboveLimit {
                chunk: self.stdin_chunk_size,
                limit: self.input_limit,
            });
        }
        if u64::from(self.output_chunk_size) + EXEC_OUTPUT_EVENT_OVERHEAD_BYTES
            > u64::from(self.output_limit)
        {
            return Err(ExecLimitsError::OutputChunkAboveLimit {
                chunk: self.output_chunk_size,
                limit: self.output_limit,
            });
        }
        Ok(())
    }
}

/// The flow-control charge of one output chunk of `len` bytes.
pub const fn output_charge(len: usize) -> u64 {
    len as u64 + EXEC_OUTPUT_EVENT_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exec_limits_are_valid() {
        assert_eq!(ExecLimits::default().validate(), Ok(()));
    }

    #[test]
    fn exec_limits_reject_zero_executions() {
        let limits = ExecLimits { max_executions: 0, ..ExecLimits::default() };
        assert_eq!(limits.validate(), Err(ExecLimitsError::NoExecutions));
    }

    #[test]
    fn exec_limits_reject_output_chunk_without_room_for_overhead() {
        let limits =
            ExecLimits { output_chunk_size: 1000, output_limit: 1200, ..ExecLimits::default() };
        assert!(matches!(limits.validate(), Err(ExecLimitsError::OutputChunkAboveLimit { .. })));
    }

    #[test]
    fn exec_limits_reject_stdin_chunk_above_input_limit() {
        let limits = ExecLimits { stdin_chunk_size: 100, input_limit: 99, ..ExecLimits::default() };
        assert!(matches!(limits.validate(), Err(ExecLimitsError::StdinChunkAboveLimit { .. })));
    }

    #[test]
    fn unknown_failure_kind_is_kept_verbatim() {
        let kind = ExecFailureKind::from_wire("quota_exceeded");
        assert_eq!(kind.as_str(), "quota_exceeded");
        assert_eq!(ExecFailureKind::from_wire("not_found"), ExecFailureKind::NotFound);
    }

    #[test]
    fn output_charge_adds_overhead() {
        assert_eq!(output_charge(3), 259);
    }
}
