//! bulk: generation-8 raw bulk filesystem transfers (PROTOCOL.md §9.3, §9.4, §11, §13.4 rules 6
//! and 7). Every case needs generation 8.
//!
//! - `write_then_read`: a 6 MiB bulk write (records within the granted credit, then
//!   `core.bulk.finish`) and a bulk read of it back (records within the client's credit,
//!   re-granted as it reads), byte for byte.
//! - `offer_on_a_one_shot_op`: a bulk offer on `Stat` gets `ok:false` "raw bulk is only valid
//!   for streaming reads and writes".
//! - `record_without_acceptance_closes`: a raw record on an id with no accepted bulk operation
//!   disconnects its sender, and nobody else.

use moat_protocol::payload::bulk::{BulkCredit, BulkFinish, BulkOffer};
use moat_protocol::payload::fs::{FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData};
use moat_protocol::{BulkFlow, BulkKind, BulkRecord, Decoded, Message, decode_frame};

use super::framing::violation_closes_only_sender;
use crate::client::Conn;
use crate::error::{CaseError, ClientError, ensure, fail};
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// Bytes the round-trip case moves each way: under one default window, then past it.
const ROUND_TRIP_BYTES: usize = 6 << 20;

/// Record payload the suite offers and sends.
const RECORD_BYTES: u32 = 1 << 20;

/// Credit window the suite grants a bulk read (smaller than the file, so it must re-grant).
const READ_WINDOW_BYTES: u64 = 4 << 20;

pub(crate) const CASES: &[Case] = &[
    Case {
        family: Family::Bulk,
        name: "write_then_read",
        needs_generation: 8,
        checks: "a 6 MiB bulk write under the agent's credit and a bulk read under the client's \
                 credit carry the same bytes",
        run: write_then_read,
    },
    Case {
        family: Family::Bulk,
        name: "offer_on_a_one_shot_op",
        needs_generation: 8,
        checks: "a bulk offer on Stat gets ok:false naming streaming reads and writes",
        run: offer_on_a_one_shot_op,
    },
    Case {
        family: Family::Bulk,
        name: "record_without_acceptance_closes",
        needs_generation: 8,
        checks: "a raw record with no accepted bulk operation closes that connection only",
        run: record_without_acceptance_closes,
    },
];

fn open(conn: &mut Conn, path: &str, write: bool) -> Result<u64, CaseError> {
    let options = FsOpenOptions {
        read: !write,
        write,
        create: write,
        truncate: write,
        ..FsOpenOptions::default()
    };
    let response = conn.fs(FsOp::OpenFile { path: path.to_owned(), options })?;
    match response.data {
        Some(FsResponseData::Handle(handle)) if response.ok => Ok(handle),
        _ => fail!("open {path}: {:?}", response.error),
    }
}

fn record_bytes(id: u32, offset: u64, payload: &[u8]) -> Result<Vec<u8>, CaseError> {
    let record = BulkRecord {
        id,
        kind: BulkKind::Filesystem,
        flow: BulkFlow::HostToGuest,
        offset,
        payload: payload.to_vec().into(),
    };
    let mut out = Vec::new();
    record.encode(&mut out).map_err(ClientError::from)?;
    Ok(out)
}

/// The terminal response of a bulk write, skipping the credits that may precede it.
fn write_response(conn: &mut Conn, id: u32) -> Result<FsResponse, CaseError> {
    loop {
        match conn.recv_on(id, "core.fs.response")?.message {
            Message::BulkCredit(_) => {}
            Message::FsResponse(response) => return Ok(response),
            other => fail!("{} while waiting for the write's response", other.wire_name()),
        }
    }
}

fn bulk_write(conn: &mut Conn, handle: u64, content: &[u8]) -> Result<(), CaseError> {
    let id = conn.next_id()?;
    let offer =
        BulkOffer { format: 1, max_record_payload: RECORD_BYTES, guest_to_host_credit_limit: 0 };
    let op = FsOp::Write { handle, offset: 0, len: Some(content.len() as u64) };
    conn.send(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) }))?;
    let accepted = match conn.recv_on(id, "core.bulk.accepted")?.message {
        Message::BulkAccepted(accepted) => accepted,
        other => fail!("{} instead of core.bulk.accepted", other.wire_name()),
    };
    ensure!(accepted.flows == 1, "a write accepted with flows {}", accepted.flows);
    let mut limit = accepted.host_to_guest_credit_limit as usize;
    let max = (accepted.max_record_payload as usize).min(RECORD_BYTES as usize);
    let mut sent = 0;
    while sent < content.len() {
        if sent >= limit {
            match conn.recv_on(id, "core.bulk.credit")?.message {
                Message::BulkCredit(credit) => limit = credit.credit_limit as usize,
                other => fail!("{} while waiting for credit", other.wire_name()),
            }
            continue;
        }
        let end = (sent + max).min(limit).min(content.len());
        conn.send_bytes(&record_bytes(id, sent as u64, &content[sent..end])?)?;
        sent = end;
    }
    let finish = BulkFinish { kind: 1, flow: 1, final_offset: sent as u64 };
    conn.send(id, Message::BulkFinish(finish))?;
    let response = write_response(conn, id)?;
    ensure!(response.ok, "the bulk write failed: {:?}", response.error);
    Ok(())
}

fn bulk_read(conn: &mut Conn, handle: u64) -> Result<Vec<u8>, CaseError> {
    let id = conn.next_id()?;
    let offer = BulkOffer {
        format: 1,
        max_record_payload: RECORD_BYTES,
        guest_to_host_credit_limit: READ_WINDOW_BYTES,
    };
    let op = FsOp::Read { handle, offset: 0, len: None };
    conn.send(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) }))?;
    let mut read = Vec::new();
    let mut limit = READ_WINDOW_BYTES;
    let mut finished = None;
    loop {
        let raw = conn.recv_raw("a bulk record, core.bulk.finish or core.fs.response")?;
        ensure!(raw.id == id, "a frame on id {} during the read on {id}", raw.id);
        match decode_frame(&raw).map_err(ClientError::from)? {
            Decoded::Bulk(record) => {
                ensure!(record.offset == read.len() as u64, "record at {}", record.offset);
                let end = record.offset + record.payload.len() as u64;
                ensure!(end <= limit, "a record ending at {end} past the credit {limit}");
                read.extend_from_slice(&record.payload);
                if limit - read.len() as u64 <= READ_WINDOW_BYTES / 2 {
                    limit = read.len() as u64 + READ_WINDOW_BYTES;
                    let consumed_offset = read.len() as u64;
                    let credit =
                        BulkCredit { kind: 1, flow: 2, consumed_offset, credit_limit: limit };
                    conn.send(id, Message::BulkCredit(credit))?;
                }
            }
            Decoded::Message(frame) => match frame.message {
                Message::BulkAccepted(accepted) => {
                    ensure!(accepted.flows == 2, "a read accepted with flows {}", accepted.flows);
                }
                Message::BulkFinish(finish) => finished = Some(finish.final_offset),
                Message::FsResponse(response) => {
                    ensure!(response.ok, "the bulk read failed: {:?}", response.error);
                    ensure!(
                        finished == Some(read.len() as u64),
                        "ok:true after bulk.finish {finished:?}, {} bytes read",
                        read.len()
                    );
                    return Ok(read);
                }
                other => fail!("{} during a bulk read", other.wire_name()),
            },
            other => fail!("unexpected record {other:?}"),
        }
    }
}

fn write_then_read(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let path = format!("{}.bin", ctx.scratch());
    let content: Vec<u8> =
        (0..ROUND_TRIP_BYTES).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect();
    let handle = open(&mut conn, &path, true)?;
    bulk_write(&mut conn, handle, &content)?;
    conn.fs(FsOp::CloseHandle { handle })?;
    let handle = open(&mut conn, &path, false)?;
    let read = bulk_read(&mut conn, handle)?;
    conn.fs(FsOp::CloseHandle { handle })?;
    conn.fs(FsOp::Remove { path })?;
    ensure!(read.len() == content.len(), "read {} of {} bytes", read.len(), content.len());
    ensure!(read == content, "the bytes read differ from the bytes written");
    Ok(Passed::note(format!("{ROUND_TRIP_BYTES} bytes each way")))
}

fn offer_on_a_one_shot_op(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    let id = conn.next_id()?;
    let offer =
        BulkOffer { format: 1, max_record_payload: RECORD_BYTES, guest_to_host_credit_limit: 1 };
    let op = FsOp::Stat { path: "/".to_owned(), follow_symlink: true };
    conn.send(id, Message::FsRequest(FsRequest { op, bulk: Some(offer) }))?;
    match conn.recv_on(id, "core.fs.response")?.message {
        Message::FsResponse(response) => {
            ensure!(!response.ok, "a bulk Stat succeeded");
            ensure!(
                response.error.as_deref()
                    == Some("raw bulk is only valid for streaming reads and writes"),
                "error {:?}",
                response.error
            );
        }
        other => fail!("{} instead of core.fs.response", other.wire_name()),
    }
    Ok(Passed::plain())
}

fn record_without_acceptance_closes(ctx: &Ctx) -> CaseResult {
    violation_closes_only_sender(ctx, |conn| {
        let id = conn.next_id()?;
        record_bytes(id, 0, b"no credit")
    })
}
