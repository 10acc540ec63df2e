//! Generation-8 raw bulk for [`FsClient`]'s streamed reads and writes (PROTOCOL.md §9.3, §9.4,
//! §11): the bytes travel as raw records under credit instead of CBOR `core.fs.data`.
//!
//! ```text
//!  read:   Read {…, bulk: offer(g2h credit W)} ─► bulk.accepted {flows 2} ─► records (contiguous,
//!          ≤ credit) ─► bulk.credit {consumed, consumed + W} when < W/2 is left ─► bulk.finish
//!          {final_offset} ─► fs.response (ok:true without a finish is an error)
//!  write:  Write {…, bulk: offer(g2h 0)} ─► bulk.accepted {flows 1, h2g credit} ─► records within
//!          credit, bulk.credit raises it ─► bulk.finish {final_offset} ─► fs.response
//!          (a failed host source: bulk.cancel {caller_cancelled} ─► fs.response)
//!  either: a failing host side cancels with caller_cancelled
//! ```
//!
//! [`ReadFlow`] and [`WriteFlow`] are the sans-IO checks and credit arithmetic; the two driver
//! functions do the I/O on the client's connection. A breach by the agent cancels the transfer
//! (`bulk.cancel {protocol_state}`) and fails it.

use std::io::Read;

use moat_protocol::limits::{MAX_BULK_CREDIT_WINDOW_BYTES, MAX_BULK_RECORD_PAYLOAD_BYTES};
use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish, BulkOffer};
use moat_protocol::payload::fs::FsOp;
use moat_protocol::{BulkFlow, BulkKind, BulkRecord, Message, MessageFrame};

use super::{FsClient, GuestFile, fill};
use crate::error::RuntimeError;
use crate::limits::FS_BULK_WINDOW_BYTES;
use crate::relay_client::conn::Incoming;

const AGENT: &str = "the agent";

/// `kind` of a filesystem bulk transfer.
const FS_KIND: u8 = 1;
/// `flow`/`flows` bit: host to guest.
const HOST_TO_GUEST: u8 = 1;
/// `flow`/`flows` bit: guest to host.
const GUEST_TO_HOST: u8 = 2;
/// `core.bulk.cancel` reasons.
const CANCEL_CALLER: u8 = 1;
const CANCEL_PROTOCOL: u8 = 5;

/// The largest record this client offers to send or take.
const MAX_RECORD_BYTES: u32 = MAX_BULK_RECORD_PAYLOAD_BYTES as u32;

const _: () = assert!(FS_BULK_WINDOW_BYTES <= MAX_BULK_CREDIT_WINDOW_BYTES);
const _: () = assert!(FS_BULK_WINDOW_BYTES >= 2 * MAX_BULK_RECORD_PAYLOAD_BYTES as u64);

/// A breach of the bulk rules by the agent, in words.
type Breach = &'static str;

/// The receiving side of a bulk read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadFlow {
    accepted: bool,
    finished: bool,
    received: u64,
    credit_limit: u64,
}

impl ReadFlow {
    /// The offer a read makes.
    pub(super) fn offer() -> BulkOffer {
        BulkOffer {
            format: 1,
            max_record_payload: MAX_RECORD_BYTES,
            guest_to_host_credit_limit: FS_BULK_WINDOW_BYTES,
        }
    }

    pub(super) fn new() -> ReadFlow {
        ReadFlow { accepted: false, finished: false, received: 0, credit_limit: 0 }
    }

    pub(super) fn accept(&mut self, accepted: &BulkAccepted) -> Result<(), Breach> {
        let offer = ReadFlow::offer();
        if self.accepted
            || accepted.kind != FS_KIND
            || accepted.flows != GUEST_TO_HOST
            || accepted.format != 1
            || accepted.max_record_payload > offer.max_record_payload
            || accepted.guest_to_host_credit_limit != offer.guest_to_host_credit_limit
            || accepted.host_to_guest_credit_limit != 0
        {
            return Err("a core.bulk.accepted that does not match the read's offer");
        }
        self.accepted = true;
        self.credit_limit = offer.guest_to_host_credit_limit;
        Ok(())
    }

    /// Checks a record and counts it.
    pub(super) fn record(&mut self, record: &BulkRecord) -> Result<(), Breach> {
        if !self.accepted || self.finished {
            return Err("a raw record outside an accepted read");
        }
        if record.kind != BulkKind::Filesystem || record.flow != BulkFlow::GuestToHost {
            return Err("a raw record of the wrong kind or flow");
        }
        if record.offset != self.received {
            return Err("a raw record that is not contiguous");
        }
        let end = self.received + record.payload.len() as u64;
        if end > self.credit_limit {
            return Err("a raw record past the credit given");
        }
        self.received = end;
        Ok(())
    }

    /// The credit to grant now that the records so far are consumed, if less than half a
    /// window is left.
    pub(super) fn credit_due(&mut self) -> Option<BulkCredit> {
        if self.finished || self.credit_limit - self.received >= FS_BULK_WINDOW_BYTES / 2 {
            return None;
        }
        self.credit_limit = self.received + FS_BULK_WINDOW_BYTES;
        Some(BulkCredit {
            kind: FS_KIND,
            flow: GUEST_TO_HOST,
            consumed_offset: self.received,
            credit_limit: self.credit_limit,
        })
    }

    pub(super) fn finish(&mut self, finish: &BulkFinish) -> Result<(), Breach> {
        if !self.accepted
            || self.finished
            || finish.kind != FS_KIND
            || finish.flow != GUEST_TO_HOST
            || finish.final_offset != self.received
        {
            return Err("a core.bulk.finish that does not match the records received");
        }
        self.finished = true;
        Ok(())
    }

    /// Whether a successful response may end the read now.
    pub(super) fn complete(&self) -> Result<u64, Breach> {
        match self.finished {
            true => Ok(self.received),
            false => Err("ok:true before core.bulk.finish"),
        }
    }
}

/// The sending side of a bulk write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WriteFlow {
    max_record: usize,
    sent: u64,
    credit_limit: u64,
}

impl WriteFlow {
    /// The offer a write makes.
    pub(super) fn offer() -> BulkOffer {
        BulkOffer { format: 1, max_record_payload: MAX_RECORD_BYTES, guest_to_host_credit_limit: 0 }
    }

    /// The flow the agent's acceptance opens.
    pub(super) fn accept(accepted: &BulkAccepted) -> Result<WriteFlow, Breach> {
        if accepted.kind != FS_KIND
            || accepted.flows != HOST_TO_GUEST
            || accepted.format != 1
            || accepted.max_record_payload == 0
            || accepted.max_record_payload > MAX_RECORD_BYTES
            || accepted.guest_to_host_credit_limit != 0
            || accepted.host_to_guest_credit_limit == 0
            || accepted.host_to_guest_credit_limit > MAX_BULK_CREDIT_WINDOW_BYTES
        {
            return Err("a core.bulk.accepted that does not match the write's offer");
        }
        Ok(WriteFlow {
            max_record: accepted.max_record_payload as usize,
            sent: 0,
            credit_limit: accepted.host_to_guest_credit_limit,
        })
    }

    pub(super) fn credit(&mut self, credit: &BulkCredit) -> Result<(), Breach> {
        if credit.kind != FS_KIND
            || credit.flow != HOST_TO_GUEST
            || credit.consumed_offset > self.sent
            || credit.credit_limit < self.credit_limit
            || credit.credit_limit - credit.consumed_offset.min(credit.credit_limit)
                > MAX_BULK_CREDIT_WINDOW_BYTES
        {
            return Err("a core.bulk.credit that regresses or exceeds the window");
        }
        self.credit_limit = credit.credit_limit;
        Ok(())
    }

    /// Bytes that may be sent now.
    pub(super) fn room(&self) -> u64 {
        self.credit_limit - self.sent
    }

    pub(super) fn sent(&mut self, len: usize) {
        self.sent += len as u64;
    }
}

/// A streamed read of `file` in bulk mode; the bytes read.
pub(super) fn read(
    client: &mut FsClient,
    file: &GuestFile,
    offset: u64,
    len: Option<u64>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), RuntimeError>,
) -> Result<u64, RuntimeError> {
    let op = FsOp::Read { handle: file.handle, offset, len };
    let id = client.request_with(op, Some(ReadFlow::offer()))?;
    let mut flow = ReadFlow::new();
    loop {
        let frame = match client.conn.recv_any("reading a file")? {
            Incoming::Bulk(record) if record.id == id => {
                if let Err(breach) = flow.record(&record) {
                    return Err(cancel(client, id, breach));
                }
                if let Err(err) = sink(&record.payload) {
                    // Stop the agent sending; its terminal answer is left for later reads to skip.
                    let message = "the host could not take the data".to_owned();
                    let stop = BulkCancel { kind: FS_KIND, reason: CANCEL_CALLER, message };
                    let _ = client.send_message(id, Message::BulkCancel(stop), "core.bulk.cancel");
                    return Err(err);
                }
                if let Some(credit) = flow.credit_due() {
                    client.send_message(id, Message::BulkCredit(credit), "core.bulk.credit")?;
                }
                continue;
            }
            Incoming::Message(frame) if frame.id == id => frame,
            _ => continue,
        };
        let checked = match &frame.message {
            Message::BulkAccepted(accepted) => flow.accept(accepted),
            Message::BulkFinish(finish) => flow.finish(finish),
            Message::BulkCancel(cancel) => {
                tracing::debug!(message = %cancel.message, "the agent cancelled a bulk read");
                Ok(())
            }
            _ => {
                client.settle(frame, &file.path)?;
                return flow.complete().map_err(breach_error);
            }
        };
        if let Err(breach) = checked {
            return Err(cancel(client, id, breach));
        }
    }
}

/// A streamed write of `source` into `file` in bulk mode; the bytes written.
pub(super) fn write(
    client: &mut FsClient,
    file: &GuestFile,
    offset: u64,
    len: Option<u64>,
    source: &mut dyn Read,
) -> Result<u64, RuntimeError> {
    let op = FsOp::Write { handle: file.handle, offset, len };
    let id = client.request_with(op, Some(WriteFlow::offer()))?;
    let mut flow = loop {
        match client.conn.recv_any("waiting for core.bulk.accepted")? {
            Incoming::Message(frame) if frame.id == id => match &frame.message {
                Message::BulkAccepted(accepted) => match WriteFlow::accept(accepted) {
                    Ok(flow) => break flow,
                    Err(breach) => return Err(cancel(client, id, breach)),
                },
                _ => {
                    client.settle(frame, &file.path)?;
                    return Err(breach_error("a write answered before core.bulk.accepted"));
                }
            },
            _ => continue,
        }
    };
    let mut buf = Vec::with_capacity(flow.max_record);
    loop {
        // Take credit and an early failure as they come, without waiting.
        while let Some(incoming) = client.conn.try_recv_any("writing a file")? {
            if let Some(done) = write_control(client, id, &mut flow, incoming, &file.path)? {
                return Ok(done.min(flow.sent));
            }
        }
        let n = match fill(source, &mut buf, flow.max_record) {
            Ok(n) => n,
            Err(err) => {
                let message = format!("the host source failed: {err}");
                let stop = BulkCancel { kind: FS_KIND, reason: CANCEL_CALLER, message };
                client.send_message(id, Message::BulkCancel(stop), "core.bulk.cancel")?;
                let _ = finish_write(client, id, &mut flow, &file.path);
                return Err(RuntimeError::io("read the data to write", &file.path)(err));
            }
        };
        if n == 0 {
            break;
        }
        let mut piece = &buf[..n];
        while !piece.is_empty() {
            while flow.room() == 0 {
                let incoming = client.conn.recv_any("waiting for core.bulk.credit")?;
                if let Some(done) = write_control(client, id, &mut flow, incoming, &file.path)? {
                    return Ok(done.min(flow.sent));
                }
            }
            let take = piece.len().min(usize::try_from(flow.room()).unwrap_or(usize::MAX));
            // Written from `buf` as it is: no copy into a record or a frame buffer.
            client.conn.send_record_from(
                id,
                BulkKind::Filesystem,
                BulkFlow::HostToGuest,
                flow.sent,
                &piece[..take],
            )?;
            flow.sent(take);
            piece = &piece[take..];
        }
    }
    let finish = BulkFinish { kind: FS_KIND, flow: HOST_TO_GUEST, final_offset: flow.sent };
    client.send_message(id, Message::BulkFinish(finish), "core.bulk.finish")?;
    finish_write(client, id, &mut flow, &file.path)
}

/// Reads the write's frames until its terminal response.
fn finish_write(
    client: &mut FsClient,
    id: u32,
    flow: &mut WriteFlow,
    path: &str,
) -> Result<u64, RuntimeError> {
    loop {
        let incoming = client.conn.recv_any("waiting for core.fs.response")?;
        if let Some(done) = write_control(client, id, flow, incoming, path)? {
            return Ok(done);
        }
    }
}

/// Handles one frame during a write: credit moves the window (`None`); the terminal response
/// ends it (`Some(bytes sent)`, or the agent's error).
fn write_control(
    client: &mut FsClient,
    id: u32,
    flow: &mut WriteFlow,
    incoming: Incoming,
    path: &str,
) -> Result<Option<u64>, RuntimeError> {
    let Incoming::Message(frame) = incoming else { return Ok(None) };
    if frame.id != id {
        return Ok(None);
    }
    match &frame.message {
        Message::BulkCredit(credit) => match flow.credit(credit) {
            Ok(()) => Ok(None),
            Err(breach) => Err(cancel(client, id, breach)),
        },
        Message::BulkCancel(cancel) => {
            tracing::debug!(message = %cancel.message, "the agent cancelled a bulk write");
            Ok(None)
        }
        _ => client.settle(frame, path).map(|_| Some(flow.sent)),
    }
}

/// Cancels the transfer on `id` for the agent's `breach` and returns the error to report.
fn cancel(client: &mut FsClient, id: u32, breach: Breach) -> RuntimeError {
    let message = breach.to_owned();
    let stop = BulkCancel { kind: FS_KIND, reason: CANCEL_PROTOCOL, message };
    if let Err(err) = client.send_message(id, Message::BulkCancel(stop), "core.bulk.cancel") {
        tracing::debug!(%err, "could not cancel a bulk transfer");
    }
    breach_error(breach)
}

fn breach_error(breach: Breach) -> RuntimeError {
    RuntimeError::Unexpected {
        peer: AGENT,
        got: breach.to_owned(),
        while_doing: "a raw bulk file transfer",
    }
}

impl FsClient {
    /// Sends `message` on `id`.
    fn send_message(
        &mut self,
        id: u32,
        message: Message,
        what: &'static str,
    ) -> Result<(), RuntimeError> {
        self.conn.send(&MessageFrame::new(id, message), what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_accepted() -> BulkAccepted {
        BulkAccepted {
            kind: FS_KIND,
            flows: GUEST_TO_HOST,
            format: 1,
            max_record_payload: MAX_RECORD_BYTES,
            host_to_guest_credit_limit: 0,
            guest_to_host_credit_limit: FS_BULK_WINDOW_BYTES,
        }
    }

    fn record(flow: BulkFlow, offset: u64, len: usize) -> BulkRecord {
        BulkRecord {
            id: 1,
            kind: BulkKind::Filesystem,
            flow,
            offset,
            payload: bytes::Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn a_read_takes_contiguous_records_within_credit_and_regrants_at_half() {
        let mut flow = ReadFlow::new();
        flow.accept(&read_accepted()).unwrap();
        let half = (FS_BULK_WINDOW_BYTES / 2) as usize;
        flow.record(&record(BulkFlow::GuestToHost, 0, half)).unwrap();
        assert_eq!(flow.credit_due(), None, "half a window is still left");
        flow.record(&record(BulkFlow::GuestToHost, half as u64, 1)).unwrap();
        let credit = flow.credit_due().unwrap();
        assert_eq!(credit.consumed_offset, half as u64 + 1);
        assert_eq!(credit.credit_limit, half as u64 + 1 + FS_BULK_WINDOW_BYTES);
    }

    #[test]
    fn a_read_refuses_gaps_overruns_and_records_before_acceptance() {
        let mut flow = ReadFlow::new();
        assert!(flow.record(&record(BulkFlow::GuestToHost, 0, 1)).is_err());
        flow.accept(&read_accepted()).unwrap();
        assert!(flow.record(&record(BulkFlow::GuestToHost, 5, 1)).is_err());
        assert!(flow.record(&record(BulkFlow::HostToGuest, 0, 1)).is_err());
        let past = FS_BULK_WINDOW_BYTES as usize + 1;
        assert!(flow.record(&record(BulkFlow::GuestToHost, 0, past)).is_err());
    }

    #[test]
    fn a_read_ends_only_after_a_finish_naming_every_byte() {
        let mut flow = ReadFlow::new();
        flow.accept(&read_accepted()).unwrap();
        flow.record(&record(BulkFlow::GuestToHost, 0, 10)).unwrap();
        assert!(flow.complete().is_err());
        let finish = |final_offset| BulkFinish { kind: FS_KIND, flow: GUEST_TO_HOST, final_offset };
        assert!(flow.finish(&finish(9)).is_err());
        flow.finish(&finish(10)).unwrap();
        assert_eq!(flow.complete(), Ok(10));
    }

    #[test]
    fn a_read_acceptance_must_echo_the_offer() {
        let mut wrong = read_accepted();
        wrong.guest_to_host_credit_limit -= 1;
        assert!(ReadFlow::new().accept(&wrong).is_err());
    }

    #[test]
    fn a_write_sends_within_credit_and_credit_never_regresses() {
        let accepted = BulkAccepted {
            kind: FS_KIND,
            flows: HOST_TO_GUEST,
            format: 1,
            max_record_payload: MAX_RECORD_BYTES,
            host_to_guest_credit_limit: 100,
            guest_to_host_credit_limit: 0,
        };
        let mut flow = WriteFlow::accept(&accepted).unwrap();
        assert_eq!(flow.room(), 100);
        flow.sent(100);
        assert_eq!(flow.room(), 0);
        let credit = |consumed_offset, credit_limit| BulkCredit {
            kind: FS_KIND,
            flow: HOST_TO_GUEST,
            consumed_offset,
            credit_limit,
        };
        flow.credit(&credit(100, 300)).unwrap();
        assert_eq!(flow.room(), 200);
        assert!(flow.credit(&credit(100, 200)).is_err(), "a regression");
        assert!(flow.credit(&credit(200, 300)).is_err(), "consumed more than was sent");
    }

    #[test]
    fn a_write_acceptance_without_credit_is_refused() {
        let accepted = BulkAccepted {
            kind: FS_KIND,
            flows: HOST_TO_GUEST,
            format: 1,
            max_record_payload: MAX_RECORD_BYTES,
            host_to_guest_credit_limit: 0,
            guest_to_host_credit_limit: 0,
        };
        assert!(WriteFlow::accept(&accepted).is_err());
    }
}
