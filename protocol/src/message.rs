//! Typed messages: [`Message`] (one variant per message type, plus [`Message::Unknown`]) and
//! [`MessageFrame`], a message with its correlation id and envelope generation, encoded to and
//! decoded from complete wire frames.
//!
//! Payload bytes are produced by `ciborium` through the serde derives in [`crate::payload`], which
//! is how the reference encodes them; the `{data}` payloads on the hot path are encoded and decoded
//! by hand with identical bytes. Before any typed decoder runs, [`crate::cbor::check_item`] has
//! checked the payload is well-formed, so no declared length is trusted.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cbor::{self, CborError, Key, Reader};
use crate::envelope::{self, Envelope};
use crate::error::{DecodeError, EncodeError, PayloadError};
use crate::flags::Flags;
use crate::frame;
use crate::limits::{MAX_EXEC_CONTROL_FRAME_BYTES, PROTOCOL_GENERATION};
use crate::message_type::MessageType;
use crate::payload::bootstrap::GuestBootstrap;
use crate::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish};
use crate::payload::core::{
    ClockSync, CoreError, Empty, InitAck, InitResolved, Ready, RelayClientDisconnected,
    RootDiskGrow, RootDiskState, Touched,
};
use crate::payload::exec::{
    Consumed, Data, ExecExited, ExecFailed, ExecRequest, ExecResize, ExecSignal, ExecStarted,
    ExecStdinError,
};
use crate::payload::fs::{FsRequest, FsResponse};
use crate::payload::tcp::{TcpConnect, TcpFailed};
use crate::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawed, WorkloadTransportCredit,
};

/// One protocol message with its typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `core.bootstrap`
    Bootstrap(Box<GuestBootstrap>),
    /// `core.init.resolved`
    InitResolved(InitResolved),
    /// `core.init.ack`
    InitAck(InitAck),
    /// `core.ready`
    Ready(Ready),
    /// `core.shutdown` (payload `null`)
    Shutdown,
    /// `core.relay.client.disconnected`
    RelayClientDisconnected(RelayClientDisconnected),
    /// `core.clock.sync`
    ClockSync(ClockSync),
    /// `core.ping` (payload `{}`)
    Ping,
    /// `core.pong` (payload `{}`)
    Pong,
    /// `core.touch` (payload `{}`)
    Touch,
    /// `core.touched`
    Touched(Touched),
    /// `core.error`
    Error(CoreError),
    /// `core.workload.freeze`
    WorkloadFreeze(WorkloadFreeze),
    /// `core.workload.frozen`
    WorkloadFrozen(WorkloadFrozen),
    /// `core.workload.thaw`
    WorkloadThaw(WorkloadThaw),
    /// `core.workload.thawed`
    WorkloadThawed(WorkloadThawed),
    /// `core.workload.transport.credit`
    WorkloadTransportCredit(WorkloadTransportCredit),
    /// `core.root_disk.prepare`
    RootDiskPrepare(RootDiskGrow),
    /// `core.root_disk.grow`
    RootDiskGrow(RootDiskGrow),
    /// `core.root_disk.state`
    RootDiskState(RootDiskState),
    /// `core.bulk.accepted`
    BulkAccepted(BulkAccepted),
    /// `core.bulk.credit`
    BulkCredit(BulkCredit),
    /// `core.bulk.finish`
    BulkFinish(BulkFinish),
    /// `core.bulk.cancel`
    BulkCancel(BulkCancel),
    /// `core.exec.request`
    ExecRequest(ExecRequest),
    /// `core.exec.started`
    ExecStarted(ExecStarted),
    /// `core.exec.stdin` (empty data = EOF)
    ExecStdin(Data),
    /// `core.exec.stdin.error`
    ExecStdinError(ExecStdinError),
    /// `core.exec.stdout`
    ExecStdout(Data),
    /// `core.exec.stderr`
    ExecStderr(Data),
    /// `core.exec.exited`
    ExecExited(ExecExited),
    /// `core.exec.failed`
    ExecFailed(ExecFailed),
    /// `core.exec.resize`
    ExecResize(ExecResize),
    /// `core.exec.signal`
    ExecSignal(ExecSignal),
    /// `core.exec.output.ack`
    ExecOutputAck(Consumed),
    /// `core.exec.stdin.ack`
    ExecStdinAck(Consumed),
    /// `core.fs.request`
    FsRequest(FsRequest),
    /// `core.fs.response`
    FsResponse(FsResponse),
    /// `core.fs.data` (empty data = write EOF)
    FsData(Data),
    /// `core.tcp.connect`
    TcpConnect(TcpConnect),
    /// `core.tcp.connected` (payload `{}`)
    TcpConnected,
    /// `core.tcp.data`
    TcpData(Data),
    /// `core.tcp.eof` (payload `{}`)
    TcpEof,
    /// `core.tcp.close` (payload `{}`)
    TcpClose,
    /// `core.tcp.closed` (payload `{}`)
    TcpClosed,
    /// `core.tcp.failed`
    TcpFailed(TcpFailed),
    /// A type name this generation does not know. Not an error: a peer answers it with
    /// `core.error` (`unsupported_message_type`) and keeps serving.
    Unknown(UnknownMessage),
}

/// A message whose type name is not in the catalogue, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMessage {
    /// The wire name as received.
    pub t: String,
    /// The frame's flags byte as received.
    pub flags: Flags,
    /// The payload bytes as received.
    pub payload: Vec<u8>,
}

impl Message {
    /// The catalogue type, or `None` for [`Message::Unknown`].
    pub const fn message_type(&self) -> Option<MessageType> {
        Some(match self {
            Message::Bootstrap(_) => MessageType::Bootstrap,
            Message::InitResolved(_) => MessageType::InitResolved,
            Message::InitAck(_) => MessageType::InitAck,
            Message::Ready(_) => MessageType::Ready,
            Message::Shutdown => MessageType::Shutdown,
            Message::RelayClientDisconnected(_) => MessageType::RelayClientDisconnected,
            Message::ClockSync(_) => MessageType::ClockSync,
            Message::Ping => MessageType::Ping,
            Message::Pong => MessageType::Pong,
            Message::Touch => MessageType::Touch,
            Message::Touched(_) => MessageType::Touched,
            Message::Error(_) => MessageType::Error,
            Message::WorkloadFreeze(_) => MessageType::WorkloadFreeze,
            Message::WorkloadFrozen(_) => MessageType::WorkloadFrozen,
            Message::WorkloadThaw(_) => MessageType::WorkloadThaw,
            Message::WorkloadThawed(_) => MessageType::WorkloadThawed,
            Message::WorkloadTransportCredit(_) => MessageType::WorkloadTransportCredit,
            Message::RootDiskPrepare(_) => MessageType::RootDiskPrepare,
            Message::RootDiskGrow(_) => MessageType::RootDiskGrow,
            Message::RootDiskState(_) => MessageType::RootDiskState,
            Message::BulkAccepted(_) => MessageType::BulkAccepted,
            Message::BulkCredit(_) => MessageType::BulkCredit,
            Message::BulkFinish(_) => MessageType::BulkFinish,
            Message::BulkCancel(_) => MessageType::BulkCancel,
            Message::ExecRequest(_) => MessageType::ExecRequest,
            Message::ExecStarted(_) => MessageType::ExecStarted,
            Message::ExecStdin(_) => MessageType::ExecStdin,
            Message::ExecStdinError(_) => MessageType::ExecStdinError,
            Message::ExecStdout(_) => MessageType::ExecStdout,
            Message::ExecStderr(_) => MessageType::ExecStderr,
            Message::ExecExited(_) => MessageType::ExecExited,
            Message::ExecFailed(_) => MessageType::ExecFailed,
            Message::ExecResize(_) => MessageType::ExecResize,
            Message::ExecSignal(_) => MessageType::ExecSignal,
            Message::ExecOutputAck(_) => MessageType::ExecOutputAck,
            Message::ExecStdinAck(_) => MessageType::ExecStdinAck,
            Message::FsRequest(_) => MessageType::FsRequest,
            Message::FsResponse(_) => MessageType::FsResponse,
            Message::FsData(_) => MessageType::FsData,
            Message::TcpConnect(_) => MessageType::TcpConnect,
            Message::TcpConnected => MessageType::TcpConnected,
            Message::TcpData(_) => MessageType::TcpData,
            Message::TcpEof => MessageType::TcpEof,
            Message::TcpClose => MessageType::TcpClose,
            Message::TcpClosed => MessageType::TcpClosed,
            Message::TcpFailed(_) => MessageType::TcpFailed,
            Message::Unknown(_) => return None,
        })
    }

    /// The wire name (`t`).
    pub fn wire_name(&self) -> &str {
        match self {
            Message::Unknown(unknown) => &unknown.t,
            known => known.message_type().map_or("", MessageType::wire_name),
        }
    }

    /// The flags byte this message's frame carries.
    pub fn flags(&self) -> Flags {
        match self {
            Message::Unknown(unknown) => unknown.flags,
            known => known.message_type().map_or(Flags::NONE, MessageType::flags),
        }
    }

    /// The `{data}` payload of a data-carrying message, which takes the hand-written fast path.
    fn data_payload(&self) -> Option<&Data> {
        match self {
            Message::ExecStdin(d)
            | Message::ExecStdout(d)
            | Message::ExecStderr(d)
            | Message::FsData(d)
            | Message::TcpData(d) => Some(d),
            _ => None,
        }
    }

    /// Appends this message's payload CBOR (the bytes the envelope's `p` wraps).
    pub fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Message::ExecStdin(d)
            | Message::ExecStdout(d)
            | Message::ExecStderr(d)
            | Message::FsData(d)
            | Message::TcpData(d) => {
                write_data_payload(out, &d.data);
                Ok(())
            }
            Message::Bootstrap(p) => ser(p, out),
            Message::InitResolved(p) => ser(p, out),
            Message::InitAck(p) => ser(p, out),
            Message::Ready(p) => ser(p, out),
            Message::Shutdown => ser(&(), out),
            Message::RelayClientDisconnected(p) => ser(p, out),
            Message::ClockSync(p) => ser(p, out),
            Message::Ping
            | Message::Pong
            | Message::Touch
            | Message::TcpConnected
            | Message::TcpEof
            | Message::TcpClose
            | Message::TcpClosed => ser(&Empty {}, out),
            Message::Touched(p) => ser(p, out),
            Message::Error(p) => ser(p, out),
            Message::WorkloadFreeze(p) => ser(p, out),
            Message::WorkloadFrozen(p) => ser(p, out),
            Message::WorkloadThaw(p) => ser(p, out),
            Message::WorkloadThawed(p) => ser(p, out),
            Message::WorkloadTransportCredit(p) => ser(p, out),
            Message::RootDiskPrepare(p) | Message::RootDiskGrow(p) => ser(p, out),
            Message::RootDiskState(p) => ser(p, out),
            Message::BulkAccepted(p) => ser(p, out),
            Message::BulkCredit(p) => ser(p, out),
            Message::BulkFinish(p) => ser(p, out),
            Message::BulkCancel(p) => ser(p, out),
            Message::ExecRequest(p) => ser(p, out),
            Message::ExecStarted(p) => ser(p, out),
            Message::ExecStdinError(p) => ser(p, out),
            Message::ExecExited(p) => ser(p, out),
            Message::ExecFailed(p) => ser(p, out),
            Message::ExecResize(p) => ser(p, out),
            Message::ExecSignal(p) => ser(p, out),
            Message::ExecOutputAck(p) | Message::ExecStdinAck(p) => ser(p, out),
            Message::FsRequest(p) => ser(p, out),
            Message::FsResponse(p) => ser(p, out),
            Message::TcpConnect(p) => ser(p, out),
            Message::TcpFailed(p) => ser(p, out),
            Message::Unknown(unknown) => {
                out.extend_from_slice(&unknown.payload);
                Ok(())
            }
        }
    }

    /// Decodes the payload bytes `p` of a message of type `t`.
    pub fn decode_payload(t: MessageType, p: &[u8]) -> Result<Message, PayloadError> {
        cbor::check_item(p)?;
        Ok(match t {
            MessageType::Bootstrap => Message::Bootstrap(Box::new(de(p)?)),
            MessageType::InitResolved => Message::InitResolved(de(p)?),
            MessageType::InitAck => Message::InitAck(de(p)?),
            MessageType::Ready => Message::Ready(de(p)?),
            MessageType::Shutdown => {
                de::<()>(p)?;
                Message::Shutdown
            }
            MessageType::RelayClientDisconnected => Message::RelayClientDisconnected(de(p)?),
            MessageType::ClockSync => Message::ClockSync(de(p)?),
            MessageType::Ping => de_empty(p, Message::Ping)?,
            MessageType::Pong => de_empty(p, Message::Pong)?,
            MessageType::Touch => de_empty(p, Message::Touch)?,
            MessageType::Touched => Message::Touched(de(p)?),
            MessageType::Error => Message::Error(de(p)?),
            MessageType::WorkloadFreeze => Message::WorkloadFreeze(de(p)?),
            MessageType::WorkloadFrozen => Message::WorkloadFrozen(de(p)?),
            MessageType::WorkloadThaw => Message::WorkloadThaw(de(p)?),
            MessageType::WorkloadThawed => Message::WorkloadThawed(de(p)?),
            MessageType::WorkloadTransportCredit => Message::WorkloadTransportCredit(de(p)?),
            MessageType::RootDiskPrepare => Message::RootDiskPrepare(de(p)?),
            MessageType::RootDiskGrow => Message::RootDiskGrow(de(p)?),
            MessageType::RootDiskState => Message::RootDiskState(de(p)?),
            MessageType::BulkAccepted => Message::BulkAccepted(de(p)?),
            MessageType::BulkCredit => Message::BulkCredit(de(p)?),
            MessageType::BulkFinish => Message::BulkFinish(de(p)?),
            MessageType::BulkCancel => Message::BulkCancel(de(p)?),
            MessageType::ExecRequest => Message::ExecRequest(de(p)?),
            MessageType::ExecStarted => Message::ExecStarted(de(p)?),
            MessageType::ExecStdin => Message::ExecStdin(de_data(p)?),
            MessageType::ExecStdinError => Message::ExecStdinError(de(p)?),
            MessageType::ExecStdout => Message::ExecStdout(de_data(p)?),
            MessageType::ExecStderr => Message::ExecStderr(de_data(p)?),
            MessageType::ExecExited => Message::ExecExited(de(p)?),
            MessageType::ExecFailed => Message::ExecFailed(de(p)?),
            MessageType::ExecResize => Message::ExecResize(de(p)?),
            MessageType::ExecSignal => Message::ExecSignal(de(p)?),
            MessageType::ExecOutputAck => Message::ExecOutputAck(de(p)?),
            MessageType::ExecStdinAck => Message::ExecStdinAck(de(p)?),
            MessageType::FsRequest => Message::FsRequest(de(p)?),
            MessageType::FsResponse => Message::FsResponse(de(p)?),
            MessageType::FsData => Message::FsData(de_data(p)?),
            MessageType::TcpConnect => Message::TcpConnect(de(p)?),
            MessageType::TcpConnected => de_empty(p, Message::TcpConnected)?,
            MessageType::TcpData => Message::TcpData(de_data(p)?),
            MessageType::TcpEof => de_empty(p, Message::TcpEof)?,
            MessageType::TcpClose => de_empty(p, Message::TcpClose)?,
            MessageType::TcpClosed => de_empty(p, Message::TcpClosed)?,
            MessageType::TcpFailed => Message::TcpFailed(de(p)?),
        })
    }
}

fn ser<T: Serialize>(payload: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    ciborium::into_writer(payload, out).map_err(EncodeError::Payload)
}

fn de<T: DeserializeOwned>(p: &[u8]) -> Result<T, PayloadError> {
    ciborium::from_reader(p).map_err(PayloadError::Schema)
}

fn de_empty(p: &[u8], message: Message) -> Result<Message, PayloadError> {
    de::<Empty>(p).map(|_| message)
}

/// `{"data": h'..'}` as the reference writes it: `a1 64 "data" <bytes head> <bytes>`.
fn write_data_payload(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data_payload_len(data.len()));
    out.extend_from_slice(&[0xa1, 0x64, b'd', b'a', b't', b'a']);
    cbor::write_head(out, cbor::MAJOR_BYTES, data.len() as u64);
    out.extend_from_slice(data);
}

const fn data_payload_len(len: usize) -> usize {
    6 + cbor::head_len(len as u64) + len
}

/// Decodes a `{data}` payload as the serde path does: the key as a definite text or byte string
/// (an indefinite-length key is refused, as serde refuses it), unknown keys skipped, tags skipped,
/// the bytes as a byte string (definite or chunked) or an array of integers. A text string, a
/// missing key or a repeated key is an error.
fn de_data(p: &[u8]) -> Result<Data, PayloadError> {
    let mut reader = Reader::new(p);
    let len = reader.map_head()?;
    let mut data = None;
    let mut index = 0u64;
    loop {
        match len {
            Some(n) if index == n => break,
            None if reader.at_break()? => break,
            _ => {}
        }
        index += 1;
        match reader.peek_key()? {
            Key::Definite(b"data") => {
                reader.skip(1)?;
                if data.is_some() {
                    return Err(PayloadError::DuplicateField("data"));
                }
                data = Some(reader.bytes_lenient()?.into_owned());
            }
            Key::Indefinite { at } => {
                return Err(
                    CborError::UnexpectedType { expected: "definite-length map key", at }.into()
                );
            }
            Key::Definite(_) | Key::Other => {
                reader.skip(1)?;
                reader.skip(1)?;
            }
        }
    }
    data.map(|data| Data { data }).ok_or(PayloadError::MissingField("data"))
}

/// A message with its correlation id and envelope generation: everything a frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFrame {
    /// Correlation id.
    pub id: u32,
    /// Envelope generation `v` (moat writes [`PROTOCOL_GENERATION`]).
    pub v: u8,
    /// The message.
    pub message: Message,
}

impl MessageFrame {
    /// A frame for `message` on `id`, written with the current generation.
    pub fn new(id: u32, message: Message) -> MessageFrame {
        MessageFrame { id, v: PROTOCOL_GENERATION, message }
    }

    /// The flags byte this frame carries.
    pub fn flags(&self) -> Flags {
        self.message.flags()
    }

    /// Appends the complete wire frame. Refuses a frame over the 4 MiB limit, and an
    /// exec-control message over its 4 KiB limit; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let t = self.message.wire_name();
        let start = out.len();
        let result = match self.message.data_payload() {
            Some(data) => {
                let payload_len = data_payload_len(data.data.len());
                let body_len = envelope::overhead(self.v, t, payload_len) + payload_len;
                frame::write_header(out, body_len, self.id, self.flags()).map(|()| {
                    envelope::write_prefix(out, self.v, t, payload_len);
                    write_data_payload(out, &data.data);
                })
            }
            None => {
                let mut payload = Vec::new();
                self.message.encode_payload(&mut payload)?;
                let body_len = envelope::overhead(self.v, t, payload.len()) + payload.len();
                frame::write_header(out, body_len, self.id, self.flags()).map(|()| {
                    envelope::write_prefix(out, self.v, t, payload.len());
                    out.extend_from_slice(&payload);
                })
            }
        };
        let result = result.and_then(|()| self.check_exec_control(out.len() - start));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The complete wire frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// The cap applies to the wire name, so it also holds for a [`Message::Unknown`] written
    /// verbatim under an exec-control name (the only way such a frame can outgrow 4 KiB).
    fn check_exec_control(&self, wire_len: usize) -> Result<(), EncodeError> {
        if wire_len <= MAX_EXEC_CONTROL_FRAME_BYTES {
            return Ok(());
        }
        match MessageType::from_wire_name(self.message.wire_name()) {
            Some(t) if t.is_exec_control() => {
                Err(EncodeError::ExecControlTooLarge { len: wire_len })
            }
            _ => Ok(()),
        }
    }

    /// Decodes a non-bulk frame's header fields and body.
    ///
    /// - an unknown type name gives `Ok` with [`Message::Unknown`] (any flags accepted);
    /// - a known type with the wrong flags gives [`DecodeError::InvalidFlags`];
    /// - a payload that does not decode gives [`DecodeError::Payload`];
    /// - a body that is not an envelope gives [`DecodeError::Envelope`].
    pub fn decode(id: u32, flags: Flags, body: &[u8]) -> Result<MessageFrame, DecodeError> {
        let env = Envelope::decode(body)?;
        let message = match MessageType::from_wire_name(&env.t) {
            None => Message::Unknown(UnknownMessage {
                t: env.t.into_owned(),
                flags,
                payload: env.p.into_owned(),
            }),
            Some(t) => {
                if flags != t.flags() {
                    return Err(DecodeError::InvalidFlags {
                        message_type: t,
                        got: flags,
                        expected: t.flags(),
                    });
                }
                Message::decode_payload(t, &env.p)
                    .map_err(|source| DecodeError::Payload { message_type: t, source })?
            }
        };
        Ok(MessageFrame { id, v: env.v, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_may_be_a_byte_string_as_with_serde() {
        // {h'64617461': h'01'}
        let p = [0xa1, 0x44, b'd', b'a', b't', b'a', 0x41, 0x01];
        assert_eq!(de_data(&p).unwrap().data, vec![1]);
    }

    #[test]
    fn indefinite_length_data_key_is_refused_as_with_serde() {
        // {(_ "da", "ta"): h'01'}
        let p = [0xa1, 0x7f, 0x62, b'd', b'a', 0x62, b't', b'a', 0xff, 0x41, 0x01];
        assert!(matches!(de_data(&p), Err(PayloadError::Cbor(CborError::UnexpectedType { .. }))));
    }

    #[test]
    fn data_fast_path_agrees_with_serde_on_plain_and_tagged_payloads() {
        for p in [
            &[0xa1, 0x64, b'd', b'a', b't', b'a', 0x42, 1, 2][..],
            &[0xa2, 0x61, b'x', 0x00, 0x64, b'd', b'a', b't', b'a', 0xd8, 0x40, 0x41, 7][..],
        ] {
            let serde: Data = ciborium::from_reader(p).unwrap();
            assert_eq!(de_data(p).unwrap(), serde);
        }
    }
}
