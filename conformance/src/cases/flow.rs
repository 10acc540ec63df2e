//! flow_control: generation-10 exec flow control (PROTOCOL.md §8.4, §13.5). Every case needs
//! generation 10 and a Ready with `exec_limits`; without them it is skipped saying which.
//!
//! - `exec_limits`: the Ready's policy is valid (§6.1).
//! - `exited_waits_for_ack`: `exec.exited` is withheld while output is unacknowledged.
//! - `never_acking_client`: a client that never acks gets at most one window of output, the
//!   exec does not finish, and the agent's memory (PID 1's `VmRSS`) stays bounded while the
//!   command tries to write 64 MiB; acknowledging then lets it end.
//! - `bad_output_ack`: an ack past what was sent ends the session with `core.error` (moat's
//!   agent) or the connection (a relay enforcing §13.5); a new connection is served.
//! - `stdin_ack`: stdin written into the child is reported with cumulative `exec.stdin.ack`.
//! - `stdin_over_chunk_size`, `stdin_after_eof`: a stdin chunk over `stdin_chunk_size`, or any
//!   stdin after EOF, to a started `sleep 30`, disconnects the client (a relay enforcing §13.5) or gets
//!   `core.exec.stdin.error` (an agent alone); either way a new connection is served.
//! - `admission_limit`: with `max_executions` execs running, one more gets `exec.failed
//!   {resource_limit, stage execution_admission}`; once one ends, the next is admitted.

use std::time::{Duration, Instant};

use moat_protocol::Message;
use moat_protocol::payload::core::CoreErrorKind;
use moat_protocol::payload::exec::{Consumed, Data, ExecLimits, ExecRequest, output_charge};

use super::sh;
use crate::client::Conn;
use crate::error::{CaseError, ClientError, ensure, fail};
use crate::ops::ExecOutcome;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);

/// How long a case waits for an exec's first output before the quiet window applies.
const FIRST_OUTPUT: Duration = Duration::from_secs(30);

/// Bytes the never-acking case's command tries to write: 64 windows of the default policy.
const FLOOD_BYTES: u64 = 64 * 1024 * 1024;

/// Growth of the agent's resident set the never-acking case tolerates while the flood is held.
const MAX_AGENT_RSS_GROWTH_KIB: u64 = 16 * 1024;

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::FlowControl,
        name: "exec_limits",
        needs_generation: 10,
        checks: "the Ready's exec_limits is a valid policy",
        run: exec_limits,
    },
    Case {
        family: Family::FlowControl,
        name: "exited_waits_for_ack",
        needs_generation: 10,
        checks: "exec.exited is withheld until every output chunk is acknowledged",
        run: exited_waits_for_ack,
    },
    Case {
        family: Family::FlowControl,
        name: "never_acking_client",
        needs_generation: 10,
        checks: "a client that never acks gets one window, the exec does not finish, and the \
                 agent's memory stays bounded; acks then let it end",
        run: never_acking_client,
    },
    Case {
        family: Family::FlowControl,
        name: "bad_output_ack",
        needs_generation: 10,
        checks: "an output ack past what was sent ends the session (core.error) or the client; \
                 the agent keeps serving",
        run: bad_output_ack,
    },
    Case {
        family: Family::FlowControl,
        name: "stdin_ack",
        needs_generation: 10,
        checks: "stdin written into the child is reported with cumulative exec.stdin.ack",
        run: stdin_ack,
    },
    Case {
        family: Family::FlowControl,
        name: "stdin_over_chunk_size",
        needs_generation: 10,
        checks: "a stdin chunk over stdin_chunk_size disconnects the client or gets \
                 exec.stdin.error; a new connection is served",
        run: stdin_over_chunk_size,
    },
    Case {
        family: Family::FlowControl,
        name: "stdin_after_eof",
        needs_generation: 10,
        checks: "stdin after EOF disconnects the client or gets exec.stdin.error; a new \
                 connection is served",
        run: stdin_after_eof,
    },
    Case {
        family: Family::FlowControl,
        name: "admission_limit",
        needs_generation: 10,
        checks: "past max_executions running execs, one more gets exec.failed resource_limit \
                 (execution_admission); when one ends the next is admitted",
        run: admission_limit,
    },
];

/// Most execs the admission case starts (a policy allowing more is not exercised).
const MAX_ADMISSION_EXECS: u32 = 256;

/// A connection with flow control on, and its policy; skipped when the Ready has none.
fn flow_conn(ctx: &Ctx) -> Result<(Conn, ExecLimits), CaseError> {
    let conn = ctx.connect()?;
    let Some(limits) = conn.ready().exec_limits.filter(|_| conn.exec_flow_control()) else {
        return Err(CaseError::Skipped(
            "the Ready has no exec_limits: the sandbox does not flow-control execs".to_owned(),
        ));
    };
    Ok((conn, limits))
}

/// Reads session `id` without acknowledging until nothing arrives for [`QUIET`]; returns the
/// output charge received and whether the session ended.
fn read_unacked(conn: &mut Conn, id: u32, charge: &mut u64) -> Result<bool, CaseError> {
    // The quiet window starts once output flows: a loaded peer may take longer than QUIET to
    // start the command at all.
    while let Some(raw) = conn.poll_raw(if *charge == 0 { FIRST_OUTPUT } else { QUIET })? {
        let frame = match moat_protocol::decode_frame(&raw).map_err(ClientError::from)? {
            moat_protocol::Decoded::Message(frame) => frame,
            other => fail!("a non-message record {other:?}"),
        };
        ensure!(frame.id == id, "{} on id {}, not {id}", frame.message.wire_name(), frame.id);
        match frame.message {
            Message::ExecStdout(Data { data }) | Message::ExecStderr(Data { data }) => {
                *charge += output_charge(data.len());
            }
            Message::ExecStarted(_) | Message::ExecStdinAck(_) | Message::ExecStdinError(_) => {}
            Message::ExecExited(_) | Message::ExecFailed(_) | Message::Error(_) => return Ok(true),
            other => fail!("{} in an exec session", other.wire_name()),
        }
    }
    Ok(false)
}

/// Acknowledges `charge` and reads the session to its end, acknowledging as it goes.
fn ack_and_finish(conn: &mut Conn, id: u32, charge: u64) -> Result<ExecOutcome, CaseError> {
    conn.send(id, Message::ExecOutputAck(Consumed { consumed: charge }))?;
    let mut outcome = ExecOutcome::default();
    outcome.pid = Some(0);
    outcome.acknowledged(charge);
    conn.exec_finish(id, &mut outcome)?;
    Ok(outcome)
}

fn exec_limits(ctx: &Ctx) -> CaseResult {
    let (_conn, limits) = flow_conn(ctx)?;
    limits.validate().map_err(|e| CaseError::Failed(format!("exec_limits: {e}")))?;
    Ok(Passed::note(format!("{limits:?}")))
}

fn exited_waits_for_ack(ctx: &Ctx) -> CaseResult {
    let (mut conn, _) = flow_conn(ctx)?;
    let id = conn.exec_start(sh("echo hi"))?;
    let mut charge = 0;
    let ended = read_unacked(&mut conn, id, &mut charge)?;
    ensure!(!ended, "the session ended with its output unacknowledged");
    ensure!(charge == output_charge(3), "received charge {charge}, expected one 3-byte chunk");
    let outcome = ack_and_finish(&mut conn, id, charge)?;
    ensure!(outcome.exit_code() == Ok(0), "after the ack: {:?}", outcome.exit_code());
    Ok(Passed::plain())
}

/// PID 1's resident set in KiB, read through an exec (acknowledged as usual).
fn agent_rss_kib(conn: &mut Conn) -> Result<Option<u64>, CaseError> {
    let outcome = conn.exec(sh("grep VmRSS /proc/1/status"), None)?;
    let text = String::from_utf8_lossy(&outcome.stdout);
    Ok(text.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()))
}

fn never_acking_client(ctx: &Ctx) -> CaseResult {
    let (mut conn, limits) = flow_conn(ctx)?;
    let mut observer = ctx.connect()?;
    let before = agent_rss_kib(&mut observer)?;
    let id = conn.exec_start(sh(&format!("head -c {FLOOD_BYTES} /dev/zero")))?;
    let mut charge = 0;
    let started = Instant::now();
    let ended = read_unacked(&mut conn, id, &mut charge)?;
    ensure!(!ended, "the exec finished without a single ack");
    let window = u64::from(limits.output_limit);
    ensure!(charge <= window, "{charge} bytes of charge unacknowledged, window {window}");
    ensure!(charge > 0, "no output at all");
    let after = agent_rss_kib(&mut observer)?;
    let growth = match (before, after) {
        (Some(before), Some(after)) => {
            let growth = after.saturating_sub(before);
            ensure!(
                growth <= MAX_AGENT_RSS_GROWTH_KIB,
                "the agent grew by {growth} KiB while holding unacknowledged output"
            );
            format!("agent VmRSS +{growth} KiB")
        }
        _ => "PID 1's VmRSS unreadable; memory not checked".to_owned(),
    };
    let held = started.elapsed();
    let outcome = ack_and_finish(&mut conn, id, charge)?;
    ensure!(outcome.exit_code() == Ok(0), "after acking: {:?}", outcome.exit_code());
    let total = charge + outcome.stdout.len() as u64;
    ensure!(total > FLOOD_BYTES / 2, "only {total} bytes arrived");
    Ok(Passed::note(format!("held at {charge} of {window} bytes of charge for {held:?}; {growth}")))
}

fn bad_output_ack(ctx: &Ctx) -> CaseResult {
    let (mut conn, _) = flow_conn(ctx)?;
    let id = conn.exec_start(sh("echo hi; exec sleep 30"))?;
    let mut charge = 0;
    read_unacked(&mut conn, id, &mut charge)?;
    conn.send(id, Message::ExecOutputAck(Consumed { consumed: charge + 1 }))?;
    let how = match conn.recv_on(id, "core.error for the over-claiming ack") {
        Ok(frame) => match frame.message {
            Message::Error(error) if error.kind == CoreErrorKind::InvalidPayload => {
                format!("core.error invalid_payload: {}", error.message)
            }
            other => fail!("{} instead of core.error invalid_payload", other.wire_name()),
        },
        Err(ClientError::Closed { .. }) => "the relay closed the client".to_owned(),
        Err(other) => return Err(other.into()),
    };
    let mut fresh = ctx.connect()?;
    let outcome = fresh.exec(sh("echo still serving"), None)?;
    ensure!(outcome.stdout == b"still serving\n", "a new connection was not served");
    Ok(Passed::note(how))
}

fn stdin_ack(ctx: &Ctx) -> CaseResult {
    let (mut conn, limits) = flow_conn(ctx)?;
    let id = conn.exec_start(ExecRequest::new("cat"))?;
    let mut outcome = ExecOutcome::default();
    conn.exec_wait_started(id, &mut outcome)?;
    let chunk = vec![b'x'; (limits.stdin_chunk_size as usize).min(1000)];
    conn.exec_stdin(id, &chunk)?;
    conn.exec_stdin(id, &chunk)?;
    let want = 2 * chunk.len() as u64;
    let mut acked = 0;
    while acked < want {
        let frame = conn.recv_on(id, "core.exec.stdin.ack")?;
        if let Message::ExecStdinAck(ack) = &frame.message {
            ensure!(ack.consumed > acked, "stdin ack {} after {acked}", ack.consumed);
            ensure!(ack.consumed <= want, "stdin ack {} past the {want} sent", ack.consumed);
            acked = ack.consumed;
        }
        conn.exec_absorb(&frame, &mut outcome)?;
        ensure!(outcome.end.is_none(), "the session ended before stdin was acknowledged");
    }
    conn.exec_eof(id)?;
    conn.exec_finish(id, &mut outcome)?;
    ensure!(outcome.stdout.len() as u64 == want, "cat echoed {} bytes", outcome.stdout.len());
    Ok(Passed::note(format!("acknowledged {acked} bytes")))
}

/// Starts `cat` and waits for it to start; returns its id and outcome so far.
fn started_cat(conn: &mut Conn) -> Result<(u32, ExecOutcome), CaseError> {
    started(conn, ExecRequest::new("cat"), "cat")
}

/// Starts `request` (running `tool`) and waits for it to start.
fn started(
    conn: &mut Conn,
    request: ExecRequest,
    tool: &str,
) -> Result<(u32, ExecOutcome), CaseError> {
    let id = conn.exec_start(request)?;
    let mut outcome = ExecOutcome::default();
    conn.exec_wait_started(id, &mut outcome)?;
    super::skip_if_missing(&outcome, tool)?;
    ensure!(outcome.end.is_none(), "{tool} ended at once: {:?}", outcome.exit_code());
    Ok((id, outcome))
}

/// After `bad` stdin on a started `sleep` (which outlives its stdin, so the session is still
/// open when the bad frame arrives): the relay closes the connection, or the agent answers
/// `core.exec.stdin.error`. A new connection is served either way.
fn bad_stdin(ctx: &Ctx, bad: impl FnOnce(&mut Conn, u32) -> Result<(), CaseError>) -> CaseResult {
    let (mut conn, _) = flow_conn(ctx)?;
    let mut sleep = ExecRequest::new("sleep");
    sleep.args = vec!["30".to_owned()];
    let (id, _) = started(&mut conn, sleep, "sleep")?;
    bad(&mut conn, id)?;
    let how = match conn.recv_on(id, "core.exec.stdin.error or the connection's close") {
        Ok(frame) => match frame.message {
            Message::ExecStdinError(error) => format!("exec.stdin.error: {}", error.message),
            other => fail!("{} instead of exec.stdin.error or a close", other.wire_name()),
        },
        Err(ClientError::Closed { .. }) => "the relay closed the client".to_owned(),
        Err(other) => return Err(other.into()),
    };
    let mut fresh = ctx.connect()?;
    let outcome = fresh.exec(sh("echo still serving"), None)?;
    ensure!(outcome.stdout == b"still serving\n", "a new connection was not served");
    Ok(Passed::note(how))
}

fn stdin_over_chunk_size(ctx: &Ctx) -> CaseResult {
    let (_, limits) = flow_conn(ctx)?;
    let len = limits.stdin_chunk_size as usize + 1;
    bad_stdin(ctx, |conn, id| Ok(conn.send(id, Message::ExecStdin(Data::new(vec![b'x'; len])))?))
}

fn stdin_after_eof(ctx: &Ctx) -> CaseResult {
    bad_stdin(ctx, |conn, id| {
        conn.exec_eof(id)?;
        Ok(conn.send(id, Message::ExecStdin(Data::new(b"late".to_vec())))?)
    })
}

fn admission_limit(ctx: &Ctx) -> CaseResult {
    let (mut conn, limits) = flow_conn(ctx)?;
    let max = limits.max_executions;
    if max > MAX_ADMISSION_EXECS {
        return Err(CaseError::Skipped(format!(
            "max_executions {max} is over the {MAX_ADMISSION_EXECS} execs this case starts"
        )));
    }
    let mut running = Vec::new();
    for _ in 0..max {
        running.push(started_cat(&mut conn)?);
    }
    let refused = conn.exec_start(ExecRequest::new("cat"))?;
    let reply = conn.recv_on(refused, "core.exec.failed for the exec past the limit")?;
    let Message::ExecFailed(failed) = reply.message else {
        fail!("{} for exec {} of {max}", reply.message.wire_name(), max + 1);
    };
    ensure!(
        failed.kind == moat_protocol::payload::exec::ExecFailureKind::ResourceLimit
            && failed.stage.as_deref() == Some("execution_admission"),
        "exec.failed {} stage {:?}: {}",
        failed.kind.as_str(),
        failed.stage,
        failed.message
    );
    // End one; then one more is admitted. End the rest, so later cases find every slot free.
    let (first, mut outcome) = running.remove(0);
    conn.exec_eof(first)?;
    conn.exec_finish(first, &mut outcome)?;
    let (extra, extra_outcome) = started_cat(&mut conn)?;
    running.push((extra, extra_outcome));
    // One at a time: recv_on takes only frames of the session it waits for.
    for (id, outcome) in &mut running {
        conn.exec_eof(*id)?;
        conn.exec_finish(*id, outcome)?;
    }
    Ok(Passed::note(format!("{max} running; {}", failed.message)))
}
