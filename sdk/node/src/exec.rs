//! Exec options from JS and `ExecOutput`, the collected result of one command.

use std::collections::HashMap;
use std::time::Duration;

use moat_protocol::payload::exec::{ExecRequest, ExecRlimit};
use moat_runtime::relay_client::{CapturedExec, ExecOutcome};
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;

use crate::error::{NodeError, Result};

/// An exit code and whether it is 0.
#[napi(object)]
pub struct ExitStatus {
    /// The exit code (-1 when killed by a signal or unknown).
    pub code: i32,
    /// `code == 0`.
    pub success: bool,
}

impl ExitStatus {
    pub(crate) fn of(code: Option<i32>) -> ExitStatus {
        let code = code.unwrap_or(-1);
        ExitStatus { code, success: code == 0 }
    }
}

/// What a command reads on stdin.
#[napi(object)]
pub struct StdinMode {
    /// `"null"` (default), `"bytes"`, or `"pipe"` (streamed execs only: `takeStdin()`).
    pub kind: String,
    /// The bytes, for `"bytes"`.
    pub data: Option<Either<Vec<u8>, Buffer>>,
}

/// One resource limit of the command.
#[napi(object)]
pub struct Rlimit {
    /// Lowercase resource name (`nofile`, `nproc`, ...).
    pub resource: String,
    /// Soft limit.
    pub soft: f64,
    /// Hard limit.
    pub hard: f64,
}

/// Per-command options (`execWith`).
#[napi(object)]
pub struct ExecOptions {
    /// Arguments after the command.
    pub args: Option<Vec<String>>,
    /// Working directory.
    pub cwd: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Environment added to the sandbox's.
    pub env: Option<HashMap<String, String>>,
    /// The command is killed (SIGKILL) when it runs longer than this.
    pub timeout_ms: Option<f64>,
    /// Standard input.
    pub stdin: Option<StdinMode>,
    /// Run on a pseudo-terminal.
    pub tty: Option<bool>,
    /// Resource limits.
    pub rlimits: Option<Vec<Rlimit>>,
}

/// A request and its stdin bytes, checked.
pub(crate) struct ExecPlan {
    pub request: ExecRequest,
    pub stdin: Vec<u8>,
    /// Stdin stays open for the program's `ExecSink` (streamed execs only).
    pub stdin_pipe: bool,
    /// Killed after this long.
    pub timeout: Option<Duration>,
}

/// Whether a plan is for a collected exec (`execWith`) or a streamed one (`execStreamWith`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecKind {
    Collected,
    Streamed,
}

impl ExecPlan {
    /// `cmd args...` with no options.
    pub(crate) fn simple(cmd: String, args: Option<Vec<String>>) -> Result<ExecPlan> {
        check_cmd(&cmd)?;
        let mut request = ExecRequest::new(cmd);
        request.args = args.unwrap_or_default();
        Ok(ExecPlan { request, stdin: Vec::new(), stdin_pipe: false, timeout: None })
    }

    /// `request` as it is (the shell's), with no options.
    pub(crate) fn of(request: ExecRequest) -> ExecPlan {
        ExecPlan { request, stdin: Vec::new(), stdin_pipe: false, timeout: None }
    }

    /// `cmd` with `options`.
    pub(crate) fn with_options(
        cmd: String,
        options: ExecOptions,
        kind: ExecKind,
    ) -> Result<ExecPlan> {
        let mut plan = ExecPlan::simple(cmd, options.args)?;
        plan.timeout = options.timeout_ms.map(timeout).transpose()?;
        let request = &mut plan.request;
        request.cwd = options.cwd;
        request.user = options.user;
        request.tty = options.tty.unwrap_or(false);
        let mut env: Vec<String> =
            options.env.unwrap_or_default().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        request.env = env;
        for limit in options.rlimits.unwrap_or_default() {
            request.rlimits.push(ExecRlimit {
                soft: limit_value(&limit.resource, limit.soft)?,
                hard: limit_value(&limit.resource, limit.hard)?,
                resource: limit.resource,
            });
        }
        if let Some(stdin) = options.stdin {
            plan.stdin = match (stdin.kind.as_str(), stdin.data) {
                ("null", None) => Vec::new(),
                ("bytes", Some(Either::A(bytes))) => bytes,
                ("bytes", Some(Either::B(buffer))) => buffer.to_vec(),
                ("bytes", None) => {
                    return Err(NodeError::InvalidArgument(
                        "stdin kind \"bytes\" needs data".into(),
                    ));
                }
                ("pipe", None) if kind == ExecKind::Streamed => {
                    plan.stdin_pipe = true;
                    Vec::new()
                }
                ("pipe", None) => {
                    return Err(NodeError::NotSupported(
                        "stdin \"pipe\" for a collected exec (use execStreamWith)".into(),
                    ));
                }
                (other, _) => {
                    return Err(NodeError::InvalidArgument(format!(
                        "stdin kind must be \"null\", \"pipe\" or \"bytes\" (data only for \"bytes\"), not {other:?}"
                    )));
                }
            };
        }
        Ok(plan)
    }
}

/// `timeoutMs`: a positive, finite number of milliseconds.
fn timeout(ms: f64) -> Result<Duration> {
    if !(ms.is_finite() && ms > 0.0) {
        return Err(NodeError::InvalidArgument(format!(
            "timeoutMs must be a positive number of milliseconds, not {ms}"
        )));
    }
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| NodeError::InvalidArgument(format!("timeoutMs {ms} is too large")))
}

fn check_cmd(cmd: &str) -> Result<()> {
    if cmd.is_empty() {
        return Err(NodeError::InvalidArgument("the command is empty".into()));
    }
    Ok(())
}

/// A JS number as an rlimit value: a non-negative integer, or `Infinity` for unlimited.
fn limit_value(resource: &str, value: f64) -> Result<u64> {
    if value == f64::INFINITY {
        return Ok(u64::MAX);
    }
    if !(value >= 0.0 && value.fract() == 0.0 && value <= u64::MAX as f64) {
        return Err(NodeError::InvalidArgument(format!(
            "rlimit {resource}: {value} is not a non-negative integer"
        )));
    }
    Ok(value as u64)
}

/// The collected result of one command.
#[napi]
pub struct ExecOutput {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ExecOutput {
    pub(crate) fn new(code: i32, stdout: Vec<u8>, stderr: Vec<u8>) -> ExecOutput {
        ExecOutput { code, stdout, stderr }
    }

    pub(crate) fn from_captured(captured: CapturedExec) -> ExecOutput {
        let code = match captured.outcome {
            ExecOutcome::Exited(code) => code,
            ExecOutcome::Failed(_) | ExecOutcome::Refused(_) => -1,
        };
        ExecOutput { code, stdout: captured.stdout, stderr: captured.stderr }
    }
}

#[napi]
impl ExecOutput {
    /// The exit code (-1 when killed by a signal).
    #[napi(getter)]
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Whether the exit code is 0.
    #[napi(getter)]
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output as UTF-8 (invalid sequences replaced).
    #[napi]
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as UTF-8 (invalid sequences replaced).
    #[napi]
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Standard output as bytes.
    #[napi]
    pub fn stdout_bytes(&self) -> Buffer {
        self.stdout.clone().into()
    }

    /// Standard error as bytes.
    #[napi]
    pub fn stderr_bytes(&self) -> Buffer {
        self.stderr.clone().into()
    }

    /// `{ code, success }`.
    #[napi]
    pub fn status(&self) -> ExitStatus {
        ExitStatus::of(Some(self.code))
    }
}
