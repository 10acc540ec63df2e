//! Generation-8 raw bulk for filesystem streams (PROTOCOL.md §9.3, §9.4, §11): the offer check
//! and acceptance, the credit arithmetic of both flows, and the bulk read pump.
//!
//! ```text
//!  Read  H→G fs.request {Read, bulk}  G→H bulk.accepted {flows 2, g2h = offer}
//!        G→H raw records (kind 1, flow 2) from offset 0, never past the host's credit_limit
//!        H→G bulk.credit {flow 2, consumed, limit}   G→H bulk.finish {final}   G→H fs.response
//!  Write H→G fs.request {Write, bulk} G→H bulk.accepted {flows 1, h2g = 8 MiB}
//!        H→G raw records (kind 1, flow 1), contiguous, within credit; G→H bulk.credit as the
//!        disk takes them; H→G bulk.finish {final}   G→H fs.response
//!  A protocol breach (bad credit, record past credit or out of order, CBOR data after
//!  acceptance, a wrong final offset): G→H bulk.cancel {reason 5} then fs.response ok:false.
//!  H→G bulk.cancel: the stream is torn down and answered with fs.response ok:false.
//! ```
//!
//! The streams themselves are `read` (this module's [`spawn_read`]) and `write` (its session,
//! with [`Grant`] returning credit as chunks reach the disk); the service in `mod.rs` routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moat_protocol::bulk::BULK_RECORD_WIRE_HEADER_BYTES;
use moat_protocol::limits::{
    FS_CHUNK_BYTES, MAX_BULK_CREDIT_WINDOW_BYTES, MAX_BULK_RECORD_PAYLOAD_BYTES,
    MIN_BULK_OFFER_RECORD_PAYLOAD_BYTES,
};
use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish, BulkOffer};
use moat_protocol::payload::fs::FsOp;
use moat_protocol::{BulkFlow, BulkKind, BulkRecord, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::outbound::Outbound;

use super::error::{self, FsError, Op};
use super::handles::OpenFile;
use super::read::read_chunk_after;

/// The generation that introduced raw bulk.
pub(crate) const BULK_GENERATION: u8 = 8;

/// The credit window the agent grants a bulk write (PROTOCOL.md §11.2 default).
pub(crate) const BULK_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// `kind` of filesystem bulk operations.
const FS_KIND: u8 = 1;

/// `flows` / `flow` bits.
const HOST_TO_GUEST: u8 = 1;
const GUEST_TO_HOST: u8 = 2;

/// `core.bulk.cancel` reason for protocol-state errors.
const REASON_PROTOCOL_STATE: u8 = 5;

const _: () = assert!(BULK_WINDOW_BYTES <= MAX_BULK_CREDIT_WINDOW_BYTES);
const _: () = assert!(MAX_BULK_RECORD_PAYLOAD_BYTES <= FS_CHUNK_BYTES);

/// Checks a request's offer (PROTOCOL.md §9.1, §11.2) and returns the acceptance to send.
pub(crate) fn accept(v: u8, op: &FsOp, offer: &BulkOffer) -> Result<BulkAccepted, FsError> {
    let read = match op {
        FsOp::Read { .. } => true,
        FsOp::Write { .. } => false,
        _ => return Err(FsError::BulkNotAStream),
    };
    if v < BULK_GENERATION {
        return Err(FsError::BulkNeedsGeneration8);
    }
    if offer.format != 1 {
        return Err(FsError::BulkOffer("format must be 1"));
    }
    if !(MIN_BULK_OFFER_RECORD_PAYLOAD_BYTES..=MAX_BULK_RECORD_PAYLOAD_BYTES as u32)
        .contains(&offer.max_record_payload)
    {
        return Err(FsError::BulkOffer("max_record_payload must be 16384..=3145728"));
    }
    if offer.guest_to_host_credit_limit > MAX_BULK_CREDIT_WINDOW_BYTES {
        return Err(FsError::BulkOffer("guest_to_host_credit_limit exceeds 32 MiB"));
    }
    let (flows, h2g, g2h) = if read {
        if offer.guest_to_host_credit_limit == 0 {
            return Err(FsError::BulkOffer("a read needs guest_to_host credit"));
        }
        (GUEST_TO_HOST, 0, offer.guest_to_host_credit_limit)
    } else {
        if offer.guest_to_host_credit_limit != 0 {
            return Err(FsError::BulkOffer("a write carries no guest_to_host credit"));
        }
        (HOST_TO_GUEST, BULK_WINDOW_BYTES, 0)
    };
    Ok(BulkAccepted {
        kind: FS_KIND,
        flows,
        format: 1,
        max_record_payload: offer.max_record_payload,
        host_to_guest_credit_limit: h2g,
        guest_to_host_credit_limit: g2h,
    })
}

/// A breach of the bulk rules by the host: the operation is cancelled with reason 5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Breach {
    #[error("bulk {what} has kind {kind} flow {flow}, expected kind 1 flow {expected}")]
    WrongFlow { what: &'static str, kind: u8, flow: u8, expected: u8 },
    #[error("bulk credit limit {limit} goes back from {current}")]
    CreditRegresses { limit: u64, current: u64 },
    #[error(
        "bulk credit window {consumed}..{limit} is invalid (consumed past sent {sent}, or over 32 MiB)"
    )]
    BadWindow { consumed: u64, limit: u64, sent: u64 },
    #[error("bulk record at {offset} is not contiguous with {expected}")]
    NotContiguous { offset: u64, expected: u64 },
    #[error("bulk record of {len} bytes exceeds max_record_payload {max}")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("bulk record ending at {end} exceeds the credit limit {limit}")]
    PastCredit { end: u64, limit: u64 },
    #[error("bulk finish at {final_offset} after {received} bytes")]
    WrongFinal { final_offset: u64, received: u64 },
    #[error("CBOR filesystem data is invalid after raw bulk acceptance")]
    CborAfterAcceptance,
    #[error("a raw bulk record on a bulk read")]
    RecordOnRead,
    #[error("bulk finish on a bulk read: the agent is that flow's sender")]
    FinishOnRead,
}

/// The credit of a bulk read's guest→host flow, fed by the host's `core.bulk.credit`.
#[derive(Debug)]
pub(crate) struct ReadCredit {
    limit: watch::Sender<u64>,
    sent: Arc<AtomicU64>,
}

impl ReadCredit {
    /// Applies a `core.bulk.credit`.
    pub(crate) fn credit(&self, credit: &BulkCredit) -> Result<(), Breach> {
        if credit.kind != FS_KIND || credit.flow != GUEST_TO_HOST {
            return Err(Breach::WrongFlow {
                what: "credit",
                kind: credit.kind,
                flow: credit.flow,
                expected: GUEST_TO_HOST,
            });
        }
        let current = *self.limit.borrow();
        let sent = self.sent.load(Ordering::Acquire);
        if credit.credit_limit < current {
            return Err(Breach::CreditRegresses { limit: credit.credit_limit, current });
        }
        let window = credit.credit_limit.checked_sub(credit.consumed_offset);
        if credit.consumed_offset > sent || window.is_none_or(|w| w > MAX_BULK_CREDIT_WINDOW_BYTES)
        {
            return Err(Breach::BadWindow {
                consumed: credit.consumed_offset,
                limit: credit.credit_limit,
                sent,
            });
        }
        self.limit.send_replace(credit.credit_limit);
        Ok(())
    }
}

/// A bulk write's host→guest flow as the service sees it.
#[derive(Debug)]
pub(crate) struct WriteFlow {
    /// Bytes received in records so far (the next record's offset).
    pub(crate) received: u64,
    /// The credit limit granted to the host (raised by the write task as the disk takes data).
    pub(crate) limit: Arc<AtomicU64>,
    max_record: u32,
}

impl WriteFlow {
    /// A flow with the initial window of `accepted`, shared with the task's [`Grant`].
    pub(crate) fn new(accepted: &BulkAccepted) -> (WriteFlow, Arc<AtomicU64>) {
        let limit = Arc::new(AtomicU64::new(accepted.host_to_guest_credit_limit));
        let flow = WriteFlow {
            received: 0,
            limit: Arc::clone(&limit),
            max_record: accepted.max_record_payload,
        };
        (flow, limit)
    }

    /// Checks a record against the flow and counts it.
    pub(crate) fn record(&mut self, record: &BulkRecord) -> Result<(), Breach> {
        if record.kind != BulkKind::Filesystem || record.flow != BulkFlow::HostToGuest {
            return Err(Breach::WrongFlow {
                what: "record",
                kind: record.kind.to_byte(),
                flow: record.flow.to_byte(),
                expected: HOST_TO_GUEST,
            });
        }
        if record.offset != self.received {
            return Err(Breach::NotContiguous { offset: record.offset, expected: self.received });
        }
        let len = record.payload.len();
        if len > self.max_record as usize {
            return Err(Breach::RecordTooLarge { len, max: self.max_record });
        }
        let end = record.offset.saturating_add(len as u64);
        let limit = self.limit.load(Ordering::Acquire);
        if end > limit {
            return Err(Breach::PastCredit { end, limit });
        }
        self.received = end;
        Ok(())
    }

    /// Checks the host's `core.bulk.finish`.
    pub(crate) fn finish(&self, finish: &BulkFinish) -> Result<(), Breach> {
        if finish.kind != FS_KIND || finish.flow != HOST_TO_GUEST {
            return Err(Breach::WrongFlow {
                what: "finish",
                kind: finish.kind,
                flow: finish.flow,
                expected: HOST_TO_GUEST,
            });
        }
        if finish.final_offset != self.received {
            return Err(Breach::WrongFinal {
                final_offset: finish.final_offset,
                received: self.received,
            });
        }
        Ok(())
    }
}

/// The write task's side of a bulk write: returns credit as chunks reach the disk.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) id: u32,
    pub(crate) limit: Arc<AtomicU64>,
    pub(crate) out: Outbound,
    /// Sent by the task before anything else, so no answer can overtake it.
    pub(crate) accepted: BulkAccepted,
}

impl Grant {
    /// Sends the acceptance.
    pub(crate) async fn accept(&self) -> Result<(), crate::outbound::ChannelClosed> {
        self.out.send(self.id, Message::BulkAccepted(self.accepted)).await
    }

    /// `written` bytes are on disk: once less than half a window of credit remains, grant
    /// `written + window`.
    pub(crate) async fn written(&self, written: u64) {
        let limit = self.limit.load(Ordering::Acquire);
        if limit.saturating_sub(written) >= BULK_WINDOW_BYTES / 2 {
            return;
        }
        let credit_limit = written.saturating_add(BULK_WINDOW_BYTES);
        self.limit.store(credit_limit, Ordering::Release);
        let credit = BulkCredit {
            kind: FS_KIND,
            flow: HOST_TO_GUEST,
            consumed_offset: written,
            credit_limit,
        };
        let _closed = self.out.send(self.id, Message::BulkCredit(credit)).await;
    }
}

/// Sends `core.bulk.cancel {reason 5}` for `breach`, then the failed `core.fs.response`.
pub(crate) fn cancel(id: u32, op: Op, breach: Breach, out: &Outbound) {
    let out = out.clone();
    tracing::warn!(id, %breach, "cancelling a bulk transfer");
    tokio::spawn(async move {
        let message = breach.to_string();
        let cancel = BulkCancel { kind: FS_KIND, reason: REASON_PROTOCOL_STATE, message };
        if out.send(id, Message::BulkCancel(cancel)).await.is_ok() {
            let failed = Err(FsError::BulkBreach { op, breach });
            let _closed = out.send(id, Message::FsResponse(error::response(failed))).await;
        }
    });
}

/// Starts a bulk read of `len` bytes (to EOF for `None`) of `file` from `offset` on `id`, after
/// sending `accepted`. Returns the task and the credit the service feeds.
pub(crate) fn spawn_read(
    id: u32,
    file: Arc<OpenFile>,
    offset: u64,
    len: Option<u64>,
    accepted: BulkAccepted,
    out: Outbound,
) -> (JoinHandle<()>, ReadCredit) {
    let (limit_tx, limit_rx) = watch::channel(accepted.guest_to_host_credit_limit);
    let sent = Arc::new(AtomicU64::new(0));
    let credit = ReadCredit { limit: limit_tx, sent: Arc::clone(&sent) };
    let span = tracing::debug_span!("fs_bulk_read", id, offset, len);
    let task = tokio::spawn(
        async move {
            if out.send(id, Message::BulkAccepted(accepted)).await.is_err() {
                return;
            }
            let max = accepted.max_record_payload as usize;
            let pumped = pump(id, file, offset, len, max, limit_rx, &sent, &out).await;
            let result = match pumped {
                Ok(total) => {
                    let finish =
                        BulkFinish { kind: FS_KIND, flow: GUEST_TO_HOST, final_offset: total };
                    if out.send(id, Message::BulkFinish(finish)).await.is_err() {
                        return;
                    }
                    Ok(None)
                }
                Err(Some(err)) => Err(err),
                Err(None) => return,
            };
            let _closed = out.send(id, Message::FsResponse(error::response(result))).await;
        }
        .instrument(span),
    );
    (task, credit)
}

/// Sends records within credit until the range or file ends; the total sent, or the failure
/// (`None`: the host or the service is gone).
#[allow(clippy::too_many_arguments)]
async fn pump(
    id: u32,
    file: Arc<OpenFile>,
    mut offset: u64,
    mut remaining: Option<u64>,
    max_record: usize,
    mut limit: watch::Receiver<u64>,
    sent: &AtomicU64,
    out: &Outbound,
) -> Result<u64, Option<FsError>> {
    let mut total: u64 = 0;
    loop {
        let want = match remaining {
            Some(0) => return Ok(total),
            Some(left) => left.min(max_record as u64) as usize,
            None => max_record,
        };
        // Wait for credit past what was sent.
        let credit_limit =
            *limit.wait_for(|limit| *limit > total).await.map_err(|_| None::<FsError>)?;
        let want = want.min((credit_limit - total).min(max_record as u64) as usize);
        let shared = Arc::clone(&file);
        // The chunk is read straight into the frame, behind room for its header: one buffer
        // and no copy per record.
        let (mut frame, read) = tokio::task::spawn_blocking(move || {
            let mut frame = Vec::with_capacity(BULK_RECORD_WIRE_HEADER_BYTES + want);
            let read = read_chunk_after(
                &shared.file,
                offset,
                want,
                &mut frame,
                BULK_RECORD_WIRE_HEADER_BYTES,
            );
            (frame, read)
        })
        .await
        .map_err(|source| Some(FsError::Task { op: Op::Read, source }))?;
        read.map_err(|err| Some(FsError::positional(Op::Read)(err)))?;
        let got = frame.len() - BULK_RECORD_WIRE_HEADER_BYTES;
        if got == 0 {
            return Ok(total);
        }
        let kind = BulkKind::Filesystem;
        match BulkRecord::wire_header(id, kind, BulkFlow::GuestToHost, total, got) {
            Ok(header) => frame[..BULK_RECORD_WIRE_HEADER_BYTES].copy_from_slice(&header),
            Err(err) => {
                tracing::error!(%err, "bulk record cannot be encoded");
                return Err(None);
            }
        }
        out.send_raw(frame).await.map_err(|_| None::<FsError>)?;
        let got = got as u64;
        total += got;
        sent.store(total, Ordering::Release);
        offset = offset.saturating_add(got);
        remaining = remaining.map(|left| left - got);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(g2h: u64) -> BulkOffer {
        BulkOffer { format: 1, max_record_payload: 1 << 20, guest_to_host_credit_limit: g2h }
    }

    fn read_op() -> FsOp {
        FsOp::Read { handle: 1, offset: 0, len: None }
    }

    fn write_op() -> FsOp {
        FsOp::Write { handle: 1, offset: 0, len: None }
    }

    #[test]
    fn a_read_offer_is_accepted_echoing_its_credit() {
        let accepted = accept(10, &read_op(), &offer(8 << 20)).unwrap();
        assert_eq!((accepted.kind, accepted.flows), (1, 2));
        assert_eq!(accepted.guest_to_host_credit_limit, 8 << 20);
        assert_eq!(accepted.host_to_guest_credit_limit, 0);
        assert_eq!(accepted.max_record_payload, 1 << 20);
    }

    #[test]
    fn a_write_offer_is_accepted_with_a_window() {
        let accepted = accept(8, &write_op(), &offer(0)).unwrap();
        assert_eq!((accepted.kind, accepted.flows), (1, 1));
        assert_eq!(accepted.host_to_guest_credit_limit, BULK_WINDOW_BYTES);
        assert_eq!(accepted.guest_to_host_credit_limit, 0);
    }

    #[test]
    fn bad_offers_are_refused_with_the_reference_texts() {
        let stat = FsOp::Stat { path: "/".into(), follow_symlink: true };
        let text = |r: Result<BulkAccepted, FsError>| r.unwrap_err().to_string();
        assert_eq!(
            text(accept(10, &stat, &offer(1))),
            "raw bulk is only valid for streaming reads and writes"
        );
        assert_eq!(
            text(accept(7, &read_op(), &offer(1))),
            "raw bulk offer requires protocol generation 8"
        );
        assert!(accept(10, &read_op(), &offer(0)).is_err(), "a read without credit");
        assert!(accept(10, &write_op(), &offer(1)).is_err(), "a write with g2h credit");
        assert!(accept(10, &read_op(), &offer(33 << 20)).is_err(), "over 32 MiB");
        let small = BulkOffer { max_record_payload: 100, ..offer(1) };
        assert!(accept(10, &read_op(), &small).is_err());
        let format = BulkOffer { format: 2, ..offer(1) };
        assert!(accept(10, &read_op(), &format).is_err());
    }

    fn record(offset: u64, len: usize) -> BulkRecord {
        BulkRecord {
            id: 1,
            kind: BulkKind::Filesystem,
            flow: BulkFlow::HostToGuest,
            offset,
            payload: bytes::Bytes::from(vec![0; len]),
        }
    }

    fn write_flow() -> WriteFlow {
        WriteFlow::new(&accept(10, &write_op(), &offer(0)).unwrap()).0
    }

    #[test]
    fn write_records_must_be_contiguous_and_within_credit() {
        let mut flow = write_flow();
        assert_eq!(flow.record(&record(0, 1 << 20)), Ok(()));
        assert_eq!(
            flow.record(&record(5, 1)),
            Err(Breach::NotContiguous { offset: 5, expected: 1 << 20 })
        );
        for n in 1..8 {
            assert_eq!(flow.record(&record(n << 20, 1 << 20)), Ok(()));
        }
        assert_eq!(
            flow.record(&record(8 << 20, 1)),
            Err(Breach::PastCredit { end: (8 << 20) + 1, limit: 8 << 20 })
        );
        assert!(matches!(
            flow.record(&record(8 << 20, 2 << 20)),
            Err(Breach::RecordTooLarge { .. })
        ));
    }

    #[test]
    fn a_write_finish_must_name_the_bytes_received() {
        let mut flow = write_flow();
        flow.record(&record(0, 10)).unwrap();
        let finish = |final_offset| BulkFinish { kind: 1, flow: 1, final_offset };
        assert_eq!(flow.finish(&finish(10)), Ok(()));
        assert_eq!(
            flow.finish(&finish(11)),
            Err(Breach::WrongFinal { final_offset: 11, received: 10 })
        );
    }

    #[test]
    fn read_credit_may_repeat_but_not_regress_or_exceed_the_window() {
        let (limit, _rx) = watch::channel(100);
        let credit = ReadCredit { limit, sent: Arc::new(AtomicU64::new(50)) };
        let grant = |consumed_offset, credit_limit| BulkCredit {
            kind: 1,
            flow: 2,
            consumed_offset,
            credit_limit,
        };
        assert_eq!(credit.credit(&grant(50, 150)), Ok(()));
        assert_eq!(credit.credit(&grant(50, 150)), Ok(()), "a duplicate grants nothing");
        assert!(matches!(credit.credit(&grant(50, 120)), Err(Breach::CreditRegresses { .. })));
        assert!(matches!(credit.credit(&grant(60, 200)), Err(Breach::BadWindow { .. })));
        assert!(matches!(credit.credit(&grant(0, 40 << 20)), Err(Breach::BadWindow { .. })));
        let wrong = BulkCredit { flow: 1, ..grant(50, 150) };
        assert!(matches!(credit.credit(&wrong), Err(Breach::WrongFlow { .. })));
    }
}
