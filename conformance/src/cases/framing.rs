//! framing: the relay reassembles frames split across writes and separates frames coalesced into
//! one write; a frame whose length prefix is over 4 MiB, or whose flags byte is not one of
//! 0x00/0x01/0x02/0x04/0x08, gets the sender disconnected and nobody else (PROTOCOL.md §1, §13.4).
//! So does a `core.workload.freeze` on the runtime's private id `0xFFFFFFFF`, which is in no
//! client's range (§4.1, §13.4 rule 3).

use std::collections::BTreeSet;
use std::time::Duration;

use moat_protocol::limits::MAX_FRAME_BYTES;
use moat_protocol::{Flags, FrameDecoder, Message, MessageFrame, RawFrame};

use crate::client::Conn;
use crate::error::{CaseError, ensure};
use crate::limits::{CLOSE_WAIT, SUITE_GENERATION};
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// Pause between the single bytes of a split frame, so the relay sees partial reads.
const SPLIT_BYTE_PAUSE: Duration = Duration::from_millis(1);

/// Pings sent in one write by the coalesced case.
const COALESCED_PINGS: usize = 8;

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Framing,
        name: "split_writes",
        needs_generation: 6,
        checks: "a ping written one byte at a time is reassembled and answered",
        run: split_writes,
    },
    Case {
        family: Family::Framing,
        name: "coalesced_writes",
        needs_generation: 6,
        checks: "eight pings in a single write are each answered on their own id",
        run: coalesced_writes,
    },
    Case {
        family: Family::Framing,
        name: "oversized_length_closes",
        needs_generation: 6,
        checks: "a length prefix over 4 MiB closes that connection; a second client still gets pongs",
        run: oversized_length_closes,
    },
    Case {
        family: Family::Framing,
        name: "bad_flags_closes",
        needs_generation: 6,
        checks: "a ping with flags 0x03 closes that connection; a second client still gets pongs",
        run: bad_flags_closes,
    },
    Case {
        family: Family::Framing,
        name: "workload_channel_closes",
        needs_generation: 9,
        checks: "a core.workload.freeze on the private id 0xFFFFFFFF closes that connection; a \
                 second client still gets pongs",
        run: workload_channel_closes,
    },
];

fn ping_bytes(id: u32) -> Result<Vec<u8>, CaseError> {
    let frame = MessageFrame { id, v: SUITE_GENERATION, message: Message::Ping };
    Ok(frame.to_bytes().map_err(crate::error::ClientError::from)?)
}

fn split_writes(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let id = conn.next_id()?;
    for byte in ping_bytes(id)? {
        conn.send_bytes(&[byte])?;
        std::thread::sleep(SPLIT_BYTE_PAUSE);
    }
    let reply = conn.recv_on(id, "core.pong")?;
    ensure!(
        matches!(reply.message, Message::Pong),
        "{} instead of core.pong",
        reply.message.wire_name()
    );
    Ok(Passed::plain())
}

fn coalesced_writes(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let mut bytes = Vec::new();
    let mut waiting = BTreeSet::new();
    for _ in 0..COALESCED_PINGS {
        let id = conn.next_id()?;
        bytes.extend(ping_bytes(id)?);
        waiting.insert(id);
    }
    conn.send_bytes(&bytes)?;
    while !waiting.is_empty() {
        let reply = conn.recv("core.pong")?;
        ensure!(
            matches!(reply.message, Message::Pong),
            "{} on id {} instead of core.pong",
            reply.message.wire_name(),
            reply.id
        );
        ensure!(
            waiting.remove(&reply.id),
            "core.pong on id {}, which is not a waiting ping",
            reply.id
        );
    }
    Ok(Passed::plain())
}

/// Sends `bad` on a fresh connection, expects that connection closed, and a bystander connected
/// before it unaffected.
pub(crate) fn violation_closes_only_sender(
    ctx: &Ctx,
    bad: impl FnOnce(&mut Conn) -> Result<Vec<u8>, CaseError>,
) -> CaseResult {
    let mut bystander = ctx.connect()?;
    let mut offender = ctx.connect()?;
    let bytes = bad(&mut offender)?;
    // The relay may close before it reads all of it: a failed write is fine.
    let _ = offender.send_bytes(&bytes);
    match offender.wait_closed(CLOSE_WAIT) {
        Ok(_) => {}
        Err(crate::error::ClientError::Timeout { .. }) => {
            return Err(CaseError::Failed(format!(
                "the connection stayed open {} s after the bad frame",
                CLOSE_WAIT.as_secs()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    bystander
        .ping()
        .map_err(|e| CaseError::Failed(format!("the other client was affected: {e}")))?;
    Ok(Passed::plain())
}

fn oversized_length_closes(ctx: &Ctx) -> CaseResult {
    violation_closes_only_sender(ctx, |conn| {
        let id = conn.next_id()?;
        // Deliberately invalid bytes: a header whose length is one past the 4 MiB limit. The
        // protocol crate refuses to encode such a frame, so the suite writes it by hand.
        let mut bytes = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.push(0);
        Ok(bytes)
    })
}

fn bad_flags_closes(ctx: &Ctx) -> CaseResult {
    violation_closes_only_sender(ctx, |conn| {
        let id = conn.next_id()?;
        let mut decoder = FrameDecoder::new();
        decoder.push(&ping_bytes(id)?);
        let ping = decoder
            .next_frame()
            .map_err(crate::error::ClientError::from)?
            .ok_or_else(|| CaseError::Failed("an encoded ping is not one frame".to_owned()))?;
        let bad = RawFrame { id, flags: Flags::from_bits(0x03), body: ping.body };
        Ok(bad.to_bytes().map_err(crate::error::ClientError::from)?)
    })
}

fn workload_channel_closes(ctx: &Ctx) -> CaseResult {
    use moat_protocol::payload::workload::WorkloadFreeze;
    violation_closes_only_sender(ctx, |_| {
        let freeze = Message::WorkloadFreeze(WorkloadFreeze {
            external_mount_tags: Vec::new(),
            attempt_id: "moat-conformance".to_owned(),
            host_input: Default::default(),
        });
        let frame = MessageFrame { id: u32::MAX, v: SUITE_GENERATION, message: freeze };
        Ok(frame.to_bytes().map_err(crate::error::ClientError::from)?)
    })
}
