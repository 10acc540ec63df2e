//! exec: sessions as PROTOCOL.md §8 describes them. Output and exit code, death by signal as
//! `code: -1`, stdin EOF as an empty `core.exec.stdin`, stdout and stderr kept apart, large output
//! intact and in order, PTY sessions (one merged stream, a terminal on stdin and stdout, resize),
//! concurrent sessions on one connection, and `core.exec.failed` for a missing program.

use std::collections::BTreeMap;

use moat_protocol::Message;
use moat_protocol::payload::exec::{ExecFailureKind, ExecRequest, ExecResize};

use super::{exit_code, sh, skip_if_missing, text};
use crate::error::{CaseError, ensure, fail};
use crate::ops::{ExecEnd, ExecOutcome};
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// Lines the large-output case prints (8 bytes each: 2 MiB, past the 1 MiB output window).
const LARGE_OUTPUT_LINES: usize = 262_144;

/// Exit code `sh` reports for a command it cannot find.
const SH_NOT_FOUND: i32 = 127;

/// Sessions the concurrent case keeps open at once.
const CONCURRENT_SESSIONS: usize = 4;

/// A path no sandbox has.
const MISSING_PROGRAM: &str = "/nonexistent/moat-conformance-no-such-program";

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Exec,
        name: "echo",
        needs_generation: 1,
        checks: "started{pid} first, then stdout \"hello\\n\", then exited{code: 0}",
        run: echo,
    },
    Case {
        family: Family::Exec,
        name: "exit_code",
        needs_generation: 1,
        checks: "`sh -c 'exit 7'` ends with exited{code: 7}",
        run: exit_code_case,
    },
    Case {
        family: Family::Exec,
        name: "signal_exit",
        needs_generation: 1,
        checks: "signal 9 to a sleeping session ends it with exited{code: -1}",
        run: signal_exit,
    },
    Case {
        family: Family::Exec,
        name: "stdin_eof",
        needs_generation: 1,
        checks: "`cat` echoes its stdin and exits 0 after an empty core.exec.stdin",
        run: stdin_eof,
    },
    Case {
        family: Family::Exec,
        name: "stderr_separation",
        needs_generation: 1,
        checks: "stdout and stderr arrive as core.exec.stdout and core.exec.stderr, unmixed",
        run: stderr_separation,
    },
    Case {
        family: Family::Exec,
        name: "large_output",
        needs_generation: 1,
        checks: "2 MiB of numbered lines arrive complete and in order",
        run: large_output,
    },
    Case {
        family: Family::Exec,
        name: "pty",
        needs_generation: 1,
        checks: "tty:true gives a terminal on stdin and stdout, and stderr merged into stdout",
        run: pty,
    },
    Case {
        family: Family::Exec,
        name: "resize",
        needs_generation: 1,
        checks: "a PTY starts at rows x cols of the request; core.exec.resize changes it",
        run: resize,
    },
    Case {
        family: Family::Exec,
        name: "concurrent_sessions",
        needs_generation: 1,
        checks: "four `cat` sessions open at once on one connection each get only their own stdin",
        run: concurrent_sessions,
    },
    Case {
        family: Family::Exec,
        name: "not_found",
        needs_generation: 1,
        checks: "a missing program ends with core.exec.failed{kind: not_found} and no started",
        run: not_found,
    },
];

/// Checks the ordering rules every finished session obeys.
fn check_order(outcome: &ExecOutcome) -> Result<(), CaseError> {
    ensure!(!outcome.output_before_started, "output arrived before core.exec.started");
    if matches!(outcome.end, Some(ExecEnd::Exited(_))) {
        ensure!(outcome.pid.is_some(), "core.exec.exited without core.exec.started");
    }
    Ok(())
}

fn run(
    ctx: &Ctx,
    request: ExecRequest,
    stdin: Option<&[u8]>,
    tool: &str,
) -> Result<ExecOutcome, CaseError> {
    let mut conn = ctx.connect()?;
    let outcome = conn.exec(request, stdin)?;
    skip_if_missing(&outcome, tool)?;
    check_order(&outcome)?;
    Ok(outcome)
}

fn echo(ctx: &Ctx) -> CaseResult {
    let mut request = ExecRequest::new("echo");
    request.args = vec!["hello".to_owned()];
    let outcome = run(ctx, request, None, "echo")?;
    let code = exit_code(&outcome)?;
    ensure!(
        outcome.stdout == b"hello\n",
        "stdout {} instead of \"hello\\n\"",
        text(&outcome.stdout)
    );
    ensure!(outcome.stderr.is_empty(), "unexpected stderr {}", text(&outcome.stderr));
    ensure!(code == 0, "exit code {code} instead of 0");
    Ok(Passed::plain())
}

fn exit_code_case(ctx: &Ctx) -> CaseResult {
    let outcome = run(ctx, sh("exit 7"), None, "sh")?;
    let code = exit_code(&outcome)?;
    ensure!(code == 7, "exit code {code} instead of 7");
    Ok(Passed::plain())
}

fn signal_exit(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let mut request = ExecRequest::new("sleep");
    request.args = vec!["1000".to_owned()];
    let id = conn.exec_start(request)?;
    let mut outcome = ExecOutcome::default();
    conn.exec_wait_started(id, &mut outcome)?;
    skip_if_missing(&outcome, "sleep")?;
    ensure!(
        outcome.end.is_none(),
        "the session ended before the signal: {:?}",
        outcome.exit_code()
    );
    conn.exec_signal(id, 9)?;
    conn.exec_finish(id, &mut outcome)?;
    check_order(&outcome)?;
    let code = exit_code(&outcome)?;
    ensure!(code == -1, "exit code {code} instead of -1 after signal 9");
    Ok(Passed::plain())
}

fn stdin_eof(ctx: &Ctx) -> CaseResult {
    let input = b"line one\nline two\n";
    let outcome = run(ctx, ExecRequest::new("cat"), Some(input), "cat")?;
    let code = exit_code(&outcome)?;
    ensure!(outcome.stdout == input, "stdout {} instead of the stdin sent", text(&outcome.stdout));
    ensure!(code == 0, "exit code {code} instead of 0");
    Ok(Passed::plain())
}

fn stderr_separation(ctx: &Ctx) -> CaseResult {
    let outcome = run(ctx, sh("echo out; echo err >&2; echo out2"), None, "sh")?;
    let code = exit_code(&outcome)?;
    ensure!(
        outcome.stdout == b"out\nout2\n",
        "stdout {} instead of \"out\\nout2\\n\"",
        text(&outcome.stdout)
    );
    ensure!(outcome.stderr == b"err\n", "stderr {} instead of \"err\\n\"", text(&outcome.stderr));
    ensure!(code == 0, "exit code {code} instead of 0");
    Ok(Passed::plain())
}

fn large_output(ctx: &Ctx) -> CaseResult {
    let script =
        format!("BEGIN {{ for (i = 0; i < {LARGE_OUTPUT_LINES}; i++) printf \"%07d\\n\", i }}");
    let mut request = ExecRequest::new("awk");
    request.args = vec![script];
    let outcome = run(ctx, request, None, "awk")?;
    let code = exit_code(&outcome)?;
    ensure!(code == 0, "exit code {code} instead of 0; stderr {}", text(&outcome.stderr));
    let expected: Vec<u8> =
        (0..LARGE_OUTPUT_LINES).flat_map(|i| format!("{i:07}\n").into_bytes()).collect();
    ensure!(
        outcome.stdout.len() == expected.len(),
        "{} bytes of stdout instead of {}",
        outcome.stdout.len(),
        expected.len()
    );
    if let Some(at) = outcome.stdout.iter().zip(&expected).position(|(a, b)| a != b) {
        fail!("stdout differs from the expected lines at byte {at}");
    }
    Ok(Passed::note(format!("{} bytes", expected.len())))
}

fn pty(ctx: &Ctx) -> CaseResult {
    let mut request = sh("test -t 0 && test -t 1 && echo tty-yes; echo err-line >&2");
    request.tty = true;
    let outcome = run(ctx, request, None, "sh")?;
    let code = exit_code(&outcome)?;
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    ensure!(
        stdout.contains("tty-yes"),
        "stdin and stdout are not a terminal: stdout {}",
        text(&outcome.stdout)
    );
    ensure!(
        stdout.contains("err-line"),
        "stderr is not merged into stdout: stdout {}",
        text(&outcome.stdout)
    );
    ensure!(
        outcome.stderr_frames == 0,
        "{} core.exec.stderr frames in a PTY session",
        outcome.stderr_frames
    );
    ensure!(code == 0, "exit code {code} instead of 0");
    Ok(Passed::plain())
}

fn resize(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let mut request = sh(&format!(
        "command -v stty >/dev/null || exit {SH_NOT_FOUND}; stty size; read line; stty size"
    ));
    request.tty = true;
    request.rows = 24;
    request.cols = 80;
    let id = conn.exec_start(request)?;
    let mut outcome = ExecOutcome::default();
    while outcome.end.is_none() && !String::from_utf8_lossy(&outcome.stdout).contains("24 80") {
        conn.exec_step(id, &mut outcome, "`stty size` to print 24 80")?;
    }
    skip_if_missing(&outcome, "sh")?;
    if outcome.end == Some(ExecEnd::Exited(SH_NOT_FOUND)) {
        return Err(CaseError::Skipped("`stty` is not in the sandbox's root".to_owned()));
    }
    ensure!(
        outcome.end.is_none(),
        "the session ended before printing 24 80: stdout {}",
        text(&outcome.stdout)
    );
    conn.send(id, Message::ExecResize(ExecResize { rows: 50, cols: 132 }))?;
    conn.exec_stdin(id, b"\n")?;
    conn.exec_finish(id, &mut outcome)?;
    check_order(&outcome)?;
    let code = exit_code(&outcome)?;
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    ensure!(
        stdout.contains("50 132"),
        "after resize to 50x132 `stty size` printed {}",
        text(&outcome.stdout)
    );
    ensure!(code == 0, "exit code {code} instead of 0");
    Ok(Passed::plain())
}

fn concurrent_sessions(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let mut sessions: BTreeMap<u32, (Vec<u8>, ExecOutcome)> = BTreeMap::new();
    for n in 0..CONCURRENT_SESSIONS {
        let id = conn.exec_start(ExecRequest::new("cat"))?;
        let input = format!("session {n} of {CONCURRENT_SESSIONS}\n").repeat(n + 1).into_bytes();
        sessions.insert(id, (input, ExecOutcome::default()));
    }
    // Wait until every session has started, so all of them are open at once.
    while sessions.values().any(|(_, o)| o.pid.is_none() && o.end.is_none()) {
        absorb_any(&mut conn, &mut sessions)?;
    }
    for (_, outcome) in sessions.values() {
        skip_if_missing(outcome, "cat")?;
        ensure!(
            outcome.end.is_none(),
            "a session ended before its stdin: {:?}",
            outcome.exit_code()
        );
    }
    // Feed them in reverse order of opening.
    let ids: Vec<u32> = sessions.keys().rev().copied().collect();
    for id in ids {
        let input = sessions[&id].0.clone();
        conn.exec_stdin(id, &input)?;
        conn.exec_eof(id)?;
    }
    while sessions.values().any(|(_, o)| o.end.is_none()) {
        absorb_any(&mut conn, &mut sessions)?;
    }
    for (id, (input, outcome)) in &sessions {
        check_order(outcome)?;
        let code = exit_code(outcome)?;
        ensure!(code == 0, "session {id} exit code {code} instead of 0");
        ensure!(
            &outcome.stdout == input,
            "session {id} got stdout {} instead of its own stdin",
            text(&outcome.stdout)
        );
    }
    Ok(Passed::plain())
}

fn absorb_any(
    conn: &mut crate::client::Conn,
    sessions: &mut BTreeMap<u32, (Vec<u8>, ExecOutcome)>,
) -> Result<(), CaseError> {
    let frame = conn.recv("frames of the concurrent sessions")?;
    let Some((_, outcome)) = sessions.get_mut(&frame.id) else {
        fail!(
            "{} on id {}, which is not one of this connection's sessions",
            frame.message.wire_name(),
            frame.id
        );
    };
    conn.exec_absorb(&frame, outcome)?;
    Ok(())
}

fn not_found(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let outcome = conn.exec(ExecRequest::new(MISSING_PROGRAM), None)?;
    match &outcome.end {
        Some(ExecEnd::Failed(failed)) if failed.kind == ExecFailureKind::NotFound => {}
        other => fail!("{other:?} instead of core.exec.failed{{kind: not_found}}"),
    }
    ensure!(
        outcome.pid.is_none(),
        "core.exec.started (pid {:?}) before core.exec.failed",
        outcome.pid
    );
    ensure!(
        outcome.stdout.is_empty() && outcome.stderr.is_empty(),
        "output from a program that never started"
    );
    // The connection keeps working after the failure.
    conn.exec(ExecRequest::new(MISSING_PROGRAM), None)?;
    Ok(Passed::plain())
}
