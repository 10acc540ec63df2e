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
];

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
    while let Some(raw) = conn.poll_raw(QUIET)? {
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
