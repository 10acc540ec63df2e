//! errors: what the agent does with types it cannot serve.
//!
//! - `unknown_type`: a type name no generation has gets `core.error {kind:
//!   unsupported_message_type}` on its id, and the connection keeps working. This is moat's
//!   documented behaviour (DESIGN.md, "What moat does better"); microsandbox 0.7.13's agent exits
//!   instead (PROTOCOL.md §2.1), so against such an agent this case fails and ends the sandbox.
//!   That is why the family runs last.
//! - `too_new_type`: a known type newer than the negotiated generation, sent past the client-side
//!   gate, gets `core.error {kind: unsupported_protocol_generation}` and the connection keeps
//!   working. Skipped at generation 10, where no type is too new.
//! - `root_disk_unavailable`: `core.root_disk.grow` on a sandbox without a root disk gets
//!   `core.error {kind: capability_unavailable}` (PROTOCOL.md §12) and the connection keeps
//!   working. Needs generation 9.

use moat_protocol::payload::bulk::BulkCancel;
use moat_protocol::payload::core::{CoreErrorKind, RootDiskGrow};
use moat_protocol::payload::exec::{Consumed, ExecRequest};
use moat_protocol::{Flags, Message, MessageFrame, MessageType, UnknownMessage};

use super::{skip_if_missing, text};
use crate::client::{Conn, permits};
use crate::error::{CaseError, ensure, fail};
use crate::limits::SUITE_GENERATION;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// A type name no generation defines (under `core.`, which relays forward).
const UNKNOWN_TYPE: &str = "core.moat_conformance.unknown";

/// The empty CBOR map `{}`.
const EMPTY_MAP: [u8; 1] = [0xa0];

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Errors,
        name: "unknown_type",
        needs_generation: 5,
        checks: "an unknown type gets core.error unsupported_message_type and the connection keeps working (moat behaviour)",
        run: unknown_type,
    },
    Case {
        family: Family::Errors,
        name: "too_new_type",
        needs_generation: 5,
        checks: "a type newer than the negotiated generation gets core.error unsupported_protocol_generation",
        run: too_new_type,
    },
    Case {
        family: Family::Errors,
        name: "root_disk_unavailable",
        needs_generation: 9,
        checks: "core.root_disk.grow without a root disk gets core.error capability_unavailable",
        run: root_disk_unavailable,
    },
];

/// Sends `message` past the generation gate and returns the `core.error` it must draw.
fn expect_error(
    conn: &mut Conn,
    message: Message,
    kind: CoreErrorKind,
) -> Result<String, CaseError> {
    let id = conn.next_id()?;
    conn.send_unchecked(MessageFrame { id, v: SUITE_GENERATION, message })?;
    let reply = conn.recv_on(id, "core.error")?;
    let Message::Error(error) = reply.message else {
        fail!("{} instead of core.error", reply.message.wire_name());
    };
    ensure!(
        error.kind == kind,
        "core.error kind {} instead of {}: {}",
        error.kind.as_str(),
        kind.as_str(),
        error.message
    );
    Ok(error.message)
}

/// The connection still serves a request after the error.
fn still_works(conn: &mut Conn) -> Result<(), CaseError> {
    if permits(conn.negotiated(), MessageType::Ping) {
        conn.ping()
            .map_err(|e| CaseError::Failed(format!("the connection stopped working: {e}")))?;
        return Ok(());
    }
    let mut request = ExecRequest::new("echo");
    request.args = vec!["alive".to_owned()];
    let outcome = conn.exec(request, None)?;
    skip_if_missing(&outcome, "echo")?;
    ensure!(
        outcome.stdout == b"alive\n",
        "after the error, echo printed {}",
        text(&outcome.stdout)
    );
    Ok(())
}

fn unknown_type(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let unknown = Message::Unknown(UnknownMessage {
        t: UNKNOWN_TYPE.to_owned(),
        flags: Flags::NONE,
        payload: EMPTY_MAP.to_vec(),
    });
    let message = expect_error(&mut conn, unknown, CoreErrorKind::UnsupportedMessageType)?;
    still_works(&mut conn)?;
    Ok(Passed::note(format!(
        "{message:?}; moat behaviour, microsandbox 0.7.13's agent exits instead"
    )))
}

fn too_new_type(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let negotiated = conn.negotiated().get();
    let candidates = [
        Message::Ping,
        Message::BulkCancel(BulkCancel { kind: 1, reason: 1, message: String::new() }),
        Message::RootDiskPrepare(RootDiskGrow { size_bytes: 0 }),
        Message::ExecOutputAck(Consumed { consumed: 0 }),
    ];
    let Some(message) = candidates
        .into_iter()
        .find(|m| m.message_type().is_some_and(|t| t.introduced_in() > negotiated))
    else {
        return Err(CaseError::Skipped(format!(
            "no message type is newer than the negotiated generation {negotiated}"
        )));
    };
    let t = message.wire_name().to_owned();
    let reply = expect_error(&mut conn, message, CoreErrorKind::UnsupportedProtocolGeneration)?;
    still_works(&mut conn)?;
    Ok(Passed::note(format!("sent {t} at generation {negotiated}: {reply:?}")))
}

fn root_disk_unavailable(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let grow = Message::RootDiskGrow(RootDiskGrow { size_bytes: 1 << 30 });
    let message = expect_error(&mut conn, grow, CoreErrorKind::CapabilityUnavailable)?;
    still_works(&mut conn)?;
    Ok(Passed::note(format!("{message:?}")))
}
