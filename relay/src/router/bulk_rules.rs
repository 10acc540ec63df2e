//! The router's raw-bulk rules (PROTOCOL.md §13.4 rules 6 and 7): bulk-opening requests,
//! client raw records, and the guest's acceptance and terminal frames that move an operation
//! along. The bookkeeping is [`crate::bulk::ClientBulk`], one per client.

use moat_protocol::envelope::Envelope;
use moat_protocol::message::{Message, MessageFrame};
use moat_protocol::message_type::MessageType;
use moat_protocol::payload::fs::{FsOp, FsResponse};
use moat_protocol::payload::tcp::TcpFailed;
use moat_protocol::{BulkKind, BulkRecord, Decoded, Flags, RawFrame};

use super::execution::Verdict;
use super::{ClientId, CloseReason, Router, decode_frame};
use crate::bulk::{BulkViolation, OpenVerdict, RecordVerdict};
use crate::limits::MAX_ACTIVE_BULK_PER_CLIENT;

/// The relay's answer to the 65th concurrent bulk operation of a client.
pub const TOO_MANY_BULK_MESSAGE: &str =
    "client already has the maximum of 64 active bulk operations";

const _: () = assert!(MAX_ACTIVE_BULK_PER_CLIENT == 64);

impl Router {
    /// A client message that may open a bulk operation (an fs Read/Write or a tcp connect with
    /// an offer, as SESSION_START).
    pub(super) fn client_bulk_open(
        &mut self,
        client: ClientId,
        frame: &RawFrame,
        envelope: &Envelope<'_>,
    ) -> Result<Verdict, CloseReason> {
        if frame.flags != Flags::SESSION_START {
            return Ok(Verdict::Forward);
        }
        let kind = match MessageType::from_wire_name(&envelope.t) {
            Some(MessageType::FsRequest) => {
                match Message::decode_payload(MessageType::FsRequest, &envelope.p) {
                    Ok(Message::FsRequest(request))
                        if request.bulk.is_some()
                            && matches!(request.op, FsOp::Read { .. } | FsOp::Write { .. }) =>
                    {
                        BulkKind::Filesystem
                    }
                    _ => return Ok(Verdict::Forward),
                }
            }
            Some(MessageType::TcpConnect) => {
                match Message::decode_payload(MessageType::TcpConnect, &envelope.p) {
                    Ok(Message::TcpConnect(connect)) if connect.bulk.is_some() => BulkKind::Tcp,
                    _ => return Ok(Verdict::Forward),
                }
            }
            _ => return Ok(Verdict::Forward),
        };
        let Some(state) = self.clients.get_mut(&client) else { return Ok(Verdict::Forward) };
        match state.bulk.open(frame.id, kind)? {
            OpenVerdict::Opened => Ok(Verdict::Forward),
            OpenVerdict::TooMany => {
                let refusal = match kind {
                    BulkKind::Filesystem => {
                        Message::FsResponse(FsResponse::err(TOO_MANY_BULK_MESSAGE))
                    }
                    BulkKind::Tcp => {
                        Message::TcpFailed(TcpFailed { error: TOO_MANY_BULK_MESSAGE.into() })
                    }
                };
                Ok(Verdict::Answered(self.answer(client, frame.id, envelope.v, refusal)))
            }
        }
    }

    /// A raw record from `client`: forward, discard, or disconnect.
    pub(super) fn client_bulk_record(
        &mut self,
        client: ClientId,
        frame: &RawFrame,
    ) -> Result<RecordVerdict, CloseReason> {
        let record = BulkRecord::parse(frame.id, &frame.body)
            .map_err(|_| BulkViolation::Malformed { id: frame.id })?;
        let Some(state) = self.clients.get(&client) else { return Ok(RecordVerdict::Discard) };
        Ok(state.bulk.record(&record)?)
    }

    /// A guest frame on `id`, owned by `client`: an acceptance or the operation's terminal.
    pub(super) fn guest_bulk_frame(
        &mut self,
        client: ClientId,
        frame: &RawFrame,
        t: Option<MessageType>,
    ) {
        let Some(state) = self.clients.get_mut(&client) else { return };
        if !state.bulk.is_active(frame.id) {
            return;
        }
        if t == Some(MessageType::BulkAccepted) {
            if let Ok(Decoded::Message(MessageFrame {
                message: Message::BulkAccepted(a), ..
            })) = decode_frame(frame)
            {
                state.bulk.accepted(frame.id, a.flows);
            }
        } else if frame.flags == Flags::TERMINAL {
            state.bulk.end(frame.id);
        }
    }
}
