//! multi_client: clients of one relay cannot see or touch each other's work. Each gets its own id
//! range and only the frames of its own sessions; a frame on another client's id disconnects the
//! sender before it reaches the agent; filesystem handles belong to the client that opened them
//! (PROTOCOL.md §4.1, §9.1, §13.3, §13.4).

use moat_protocol::Message;
use moat_protocol::payload::exec::ExecRequest;
use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsResponseData};

use super::{exit_code, skip_if_missing, text};
use crate::client::Conn;
use crate::error::{CaseError, ClientError, ensure, fail};
use crate::limits::CLOSE_WAIT;
use crate::ops::ExecOutcome;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// How far into the victim's range the offender's forged id lies (an id the victim never uses).
const FORGED_ID_OFFSET: u32 = 1000;

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::MultiClient,
        name: "output_routed_to_owner",
        needs_generation: 1,
        checks: "two clients get disjoint id ranges, and each receives only its own session's frames",
        run: output_routed_to_owner,
    },
    Case {
        family: Family::MultiClient,
        name: "foreign_id_refused",
        needs_generation: 1,
        checks: "an exec request on another client's id disconnects the sender and never reaches the owner",
        run: foreign_id_refused,
    },
    Case {
        family: Family::MultiClient,
        name: "fs_handle_scoped",
        needs_generation: 2,
        checks: "a handle opened by one client cannot be read, stat'ed or closed by another",
        run: fs_handle_scoped,
    },
];

fn start_cat(conn: &mut Conn) -> Result<(u32, ExecOutcome), CaseError> {
    let id = conn.exec_start(ExecRequest::new("cat"))?;
    let mut outcome = ExecOutcome::default();
    conn.exec_wait_started(id, &mut outcome)?;
    skip_if_missing(&outcome, "cat")?;
    ensure!(outcome.end.is_none(), "`cat` ended before its stdin: {:?}", outcome.exit_code());
    Ok((id, outcome))
}

fn output_routed_to_owner(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.connect()?;
    let mut b = ctx.connect()?;
    let (ra, rb) = (a.range(), b.range());
    ensure!(
        ra.end_exclusive <= rb.start || rb.end_exclusive <= ra.start,
        "the ranges [{}, {}) and [{}, {}) overlap",
        ra.start,
        ra.end_exclusive,
        rb.start,
        rb.end_exclusive
    );
    let (id_a, mut out_a) = start_cat(&mut a)?;
    let (id_b, mut out_b) = start_cat(&mut b)?;
    let (input_a, input_b) = (b"for client A only\n".repeat(50), b"for client B only\n".repeat(70));
    a.exec_stdin(id_a, &input_a)?;
    b.exec_stdin(id_b, &input_b)?;
    a.exec_eof(id_a)?;
    b.exec_eof(id_b)?;
    // recv_on fails the case on any frame for an id other than the client's own session.
    a.exec_finish(id_a, &mut out_a)?;
    b.exec_finish(id_b, &mut out_b)?;
    ensure!(out_a.stdout == input_a, "client A got stdout {}", text(&out_a.stdout));
    ensure!(out_b.stdout == input_b, "client B got stdout {}", text(&out_b.stdout));
    exit_code(&out_a)?;
    exit_code(&out_b)?;
    Ok(Passed::plain())
}

fn foreign_id_refused(ctx: &Ctx) -> CaseResult {
    let mut victim = ctx.connect()?;
    let mut offender = ctx.connect()?;
    let forged = victim.range().first_usable().saturating_add(FORGED_ID_OFFSET);
    ensure!(victim.range().contains(forged), "the victim's range is too small for the case");
    let mut request = ExecRequest::new("echo");
    request.args = vec!["forged".to_owned()];
    let _ = offender.send(forged, Message::ExecRequest(request));
    match offender.wait_closed(CLOSE_WAIT) {
        Ok(_) => {}
        Err(ClientError::Timeout { .. }) => fail!(
            "the relay kept the sender connected after a frame on id {forged}, outside its range"
        ),
        Err(e) => return Err(e.into()),
    }
    // The victim's next session must see nothing on the forged id (recv_on would fail on it).
    let mut request = ExecRequest::new("echo");
    request.args = vec!["mine".to_owned()];
    let outcome = victim.exec(request, None)?;
    skip_if_missing(&outcome, "echo")?;
    ensure!(
        outcome.stdout == b"mine\n",
        "the victim's session got stdout {}",
        text(&outcome.stdout)
    );
    Ok(Passed::plain())
}

fn fs_handle_scoped(ctx: &Ctx) -> CaseResult {
    let mut owner = ctx.connect()?;
    let mut other = ctx.connect()?;
    let path = ctx.scratch();
    let options = FsOpenOptions {
        write: true,
        create: true,
        truncate: true,
        read: true,
        ..FsOpenOptions::default()
    };
    let opened = owner.fs(FsOp::OpenFile { path: path.clone(), options })?;
    let handle = match opened.data {
        Some(FsResponseData::Handle(h)) if opened.ok => h,
        _ => fail!("OpenFile {path}: {:?}", opened.error),
    };
    let result = (|| -> CaseResult {
        let fstat = other.fs(FsOp::FStat { handle })?;
        ensure!(!fstat.ok, "another client's FStat on handle {handle} answered ok:true");
        let (chunks, read) = other.fs_read(handle, 0, None)?;
        ensure!(
            !read.ok && chunks.is_empty(),
            "another client's Read on handle {handle} succeeded"
        );
        let closed = other.fs(FsOp::CloseHandle { handle })?;
        ensure!(!closed.ok, "another client's CloseHandle on handle {handle} answered ok:true");
        let mine = owner.fs(FsOp::FStat { handle })?;
        ensure!(mine.ok, "the owner's handle stopped working: {:?}", mine.error);
        Ok(Passed::note(format!("refused with {:?}", fstat.error.unwrap_or_default())))
    })();
    let _ = owner.fs(FsOp::CloseHandle { handle });
    let _ = owner.fs(FsOp::Remove { path });
    result
}
