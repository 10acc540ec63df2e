//! disconnect: when a client goes away, the relay kills the exec sessions it left open (signal 9
//! to each process group) and tells the agent to release its range, which closes its
//! filesystem handles (PROTOCOL.md §8.5, §13.6).

use std::time::Instant;

use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsResponseData};

use super::{sh, skip_if_missing, text};
use crate::error::{CaseError, ensure, fail};
use crate::limits::{CLEANUP_POLL, CLEANUP_WAIT};
use crate::ops::ExecOutcome;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// Most probe clients `releases_fs_handles` keeps connected while it looks for the departed slot.
const MAX_HELD_PROBES: usize = 8;

/// Exit status of the probe script while any of the pids is still alive.
const STILL_ALIVE: i32 = 3;

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Disconnect,
        name: "kills_execs",
        needs_generation: 1,
        checks: "a departed client's session and its background child are killed and reaped",
        run: kills_execs,
    },
    Case {
        family: Family::Disconnect,
        name: "releases_fs_handles",
        needs_generation: 2,
        checks: "a departed client's file handles are closed: the next client in its slot cannot use them",
        run: releases_fs_handles,
    },
];

fn kills_execs(ctx: &Ctx) -> CaseResult {
    let mut leaving = ctx.connect()?;
    let id = leaving.exec_start(sh("sleep 1000 & echo $!; wait"))?;
    let mut outcome = ExecOutcome::default();
    leaving.exec_wait_started(id, &mut outcome)?;
    skip_if_missing(&outcome, "sh")?;
    while outcome.end.is_none() && !outcome.stdout.ends_with(b"\n") {
        leaving.exec_step(id, &mut outcome, "the background pid")?;
    }
    ensure!(
        outcome.end.is_none(),
        "the session ended early: {:?}, stderr {}",
        outcome.exit_code(),
        text(&outcome.stderr)
    );
    let shell = outcome.pid.unwrap_or_default();
    let child: u32 = match String::from_utf8_lossy(&outcome.stdout).trim().parse() {
        Ok(pid) => pid,
        Err(_) => fail!("`echo $!` printed {}", text(&outcome.stdout)),
    };
    drop(leaving);
    let mut observer = ctx.connect()?;
    let probe = format!(
        "for p in {shell} {child}; do kill -0 $p 2>/dev/null && exit {STILL_ALIVE}; done; exit 0"
    );
    let started = Instant::now();
    loop {
        let outcome = observer.exec(sh(&probe), None)?;
        match outcome.exit_code() {
            Ok(0) => break,
            Ok(STILL_ALIVE) if started.elapsed() < CLEANUP_WAIT => std::thread::sleep(CLEANUP_POLL),
            Ok(STILL_ALIVE) => fail!(
                "pid {shell} or its child {child} still alive {} s after the client left",
                CLEANUP_WAIT.as_secs()
            ),
            other => fail!(
                "the probe `kill -0` script ended with {other:?}, stderr {}",
                text(&outcome.stderr)
            ),
        }
    }
    Ok(Passed::note(format!("gone after {} ms", started.elapsed().as_millis())))
}

fn releases_fs_handles(ctx: &Ctx) -> CaseResult {
    let path = ctx.scratch();
    let mut leaving = ctx.connect()?;
    let range = leaving.range();
    let options =
        FsOpenOptions { write: true, create: true, truncate: true, ..FsOpenOptions::default() };
    let opened = leaving.fs(FsOp::OpenFile { path: path.clone(), options })?;
    let handle = match opened.data {
        Some(FsResponseData::Handle(h)) if opened.ok => h,
        _ => fail!("OpenFile {path}: {:?}", opened.error),
    };
    drop(leaving);
    // The relay frees the slot once it has told the agent; until then a new client gets another.
    // Clients that got another slot stay connected (up to a few), so the lowest free slot moves
    // up to the departed one instead of being the one a probe just left (a relay may keep any
    // departed client's slot quarantined for a moment).
    let started = Instant::now();
    let mut held = Vec::new();
    let mut next = loop {
        let conn = ctx.connect()?;
        if conn.range() == range {
            break conn;
        }
        held.push(conn);
        if held.len() > MAX_HELD_PROBES {
            held.clear();
        }
        if started.elapsed() >= CLEANUP_WAIT {
            return Err(CaseError::Skipped(format!(
                "no new client got the departed client's slot [{}, {}) within {} s (another client holds it?)",
                range.start,
                range.end_exclusive,
                CLEANUP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(CLEANUP_POLL);
    };
    drop(held);
    let fstat = next.fs(FsOp::FStat { handle })?;
    let _ = next.fs(FsOp::Remove { path });
    ensure!(
        !fstat.ok,
        "handle {handle} of the departed client still works for the next client in its slot"
    );
    Ok(Passed::note(format!("refused with {:?}", fstat.error.unwrap_or_default())))
}
