//! handshake: the 8-byte prologue names a range inside one relay slot, the ready frame that
//! follows decodes, and its generation is respected (PROTOCOL.md §3, §13.2, §13.3).

use moat_protocol::relay::Slot;
use moat_protocol::{Decoded, Flags, Message, MessageType, decode_frame};

use super::{exit_code, skip_if_missing};
use crate::client::permits;
use crate::error::{CaseError, ensure, fail};
use crate::limits::SUITE_GENERATION;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Handshake,
        name: "prologue_range_in_slot",
        needs_generation: 1,
        checks: "the prologue is [start, end) with 0 < start < end, inside one of the 128 slots",
        run: prologue_range_in_slot,
    },
    Case {
        family: Family::Handshake,
        name: "ready_decodes",
        needs_generation: 1,
        checks: "the first frame is core.ready on id 0, flags 0, with a payload that decodes",
        run: ready_decodes,
    },
    Case {
        family: Family::Handshake,
        name: "generation_respected",
        needs_generation: 1,
        checks: "ready's v is a known generation; a request written with v=10 is served, and the \
                 reply carries the agent's generation",
        run: generation_respected,
    },
];

fn prologue_range_in_slot(ctx: &Ctx) -> CaseResult {
    let conn = ctx.connect()?;
    let range = conn.range();
    ensure!(
        range.start > 0,
        "the range [{}, {}) includes the reserved id 0",
        range.start,
        range.end_exclusive
    );
    let first = Slot::of_id(range.start);
    let last = Slot::of_id(range.end_exclusive - 1);
    let slot = match (first, last) {
        (Some(a), Some(b)) if a == b => a,
        _ => fail!(
            "the range [{}, {}) is not inside one relay slot (slot {:?} .. slot {:?})",
            range.start,
            range.end_exclusive,
            first.map(Slot::index),
            last.map(Slot::index)
        ),
    };
    let canonical = if slot.range() == range { "the whole slot" } else { "part of the slot" };
    Ok(Passed::note(format!(
        "slot {}, ids [{}, {}) ({canonical})",
        slot.index(),
        range.start,
        range.end_exclusive
    )))
}

fn ready_decodes(ctx: &Ctx) -> CaseResult {
    let conn = ctx.connect()?;
    let frame = conn.ready_frame();
    ensure!(
        frame.id == 0 && frame.flags == Flags::NONE,
        "ready frame on id {} flags {}",
        frame.id,
        frame.flags
    );
    match decode_frame(frame) {
        Ok(Decoded::Message(m)) if matches!(m.message, Message::Ready(_)) => {}
        Ok(_) => fail!("the frame after the prologue is not core.ready"),
        Err(e) => fail!("core.ready does not decode: {e}"),
    }
    let ready = conn.ready();
    ensure!(
        ready.ready_time_ns >= ready.boot_time_ns,
        "ready_time_ns {} is before boot_time_ns {}",
        ready.ready_time_ns,
        ready.boot_time_ns
    );
    if let Some(limits) = &ready.exec_limits {
        limits.validate().map_err(|e| CaseError::Failed(format!("exec_limits: {e}")))?;
    }
    let version = if ready.agent_version.is_empty() { "unnamed" } else { &ready.agent_version };
    Ok(Passed::note(format!("v={}, agent {version}", conn.ready_v())))
}

fn generation_respected(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let ready_v = conn.ready_v();
    ensure!(ready_v >= 1, "core.ready announces generation 0");
    let negotiated = conn.negotiated();
    ensure!(
        negotiated.get() == ready_v.min(SUITE_GENERATION),
        "negotiated {} is not min({SUITE_GENERATION}, {ready_v})",
        negotiated.get()
    );
    // Current clients write v=10 whatever the agent's generation (PROTOCOL.md §3).
    let (what, reply_v) = if permits(negotiated, MessageType::Ping) {
        let id = conn.next_id()?;
        conn.send(id, Message::Ping)?;
        let reply = conn.recv_on(id, "core.pong")?;
        ensure!(
            matches!(reply.message, Message::Pong),
            "{} instead of core.pong",
            reply.message.wire_name()
        );
        ("core.ping", reply.v)
    } else {
        let mut request = moat_protocol::payload::exec::ExecRequest::new("true");
        request.args.clear();
        let id = conn.exec_start(request)?;
        let mut outcome = crate::ops::ExecOutcome::default();
        let frame = conn.recv_on(id, "core.exec.started")?;
        conn.exec_absorb(&frame, &mut outcome)?;
        conn.exec_finish(id, &mut outcome)?;
        skip_if_missing(&outcome, "true")?;
        exit_code(&outcome)?;
        ("core.exec.request", frame.v)
    };
    ensure!(
        reply_v == ready_v,
        "the reply to {what} carries v={reply_v}, but core.ready announced v={ready_v}"
    );
    Ok(Passed::note(format!(
        "ready v={ready_v}, negotiated {}; {what} sent with v={SUITE_GENERATION} answered with v={reply_v}",
        negotiated.get()
    )))
}
