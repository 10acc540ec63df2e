//! Error types of the protocol crate, and the one place they become wire error kinds
//! ([`DecodeError::core_error`]).

use crate::bulk::BulkRecordError;
use crate::cbor::CborError;
use crate::envelope::EnvelopeError;
use crate::flags::Flags;
use crate::limits::{FRAME_HEADER_BYTES, MAX_EXEC_CONTROL_FRAME_BYTES, MAX_FRAME_BYTES};
use crate::message_type::MessageType;
use crate::payload::core::{CoreError, CoreErrorKind};
use crate::records::LeaseRecordError;

/// A framing error. Every variant is fatal for the stream it came from (PROTOCOL.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `len` is below the 5-byte header.
    #[error("frame too short: length {len} is below the {FRAME_HEADER_BYTES}-byte header")]
    TooShort {
        /// The length prefix as read.
        len: u32,
    },
    /// `len` is above 4 MiB.
    #[error("frame too large: length {len} exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge {
        /// The length prefix as read.
        len: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {buffered} of {needed} bytes received")]
    Truncated {
        /// Bytes of the partial frame received.
        buffered: usize,
        /// Bytes the frame needs (prefix included), or 4 when the prefix itself is incomplete.
        needed: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The frame would exceed 4 MiB.
    #[error("frame too large: length {len} exceeds the {MAX_FRAME_BYTES}-byte limit")]
    FrameTooLarge {
        /// The length the frame would have had.
        len: usize,
    },
    /// An exec-control frame would exceed its 4 KiB limit.
    #[error(
        "execution control frame of {len} bytes exceeds the {MAX_EXEC_CONTROL_FRAME_BYTES}-byte limit"
    )]
    ExecControlTooLarge {
        /// The complete wire length.
        len: usize,
    },
    /// A raw bulk record its receiver would reject (empty or oversized payload, offset overflow).
    #[error("bulk record cannot be encoded: {0}")]
    BulkRecord(#[from] BulkRecordError),
    /// The payload serializer failed.
    #[error("payload could not be encoded: {0}")]
    Payload(#[source] ciborium::ser::Error<std::io::Error>),
}

/// Why a payload did not decode for its type (`core.error` kind `invalid_payload`).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload is not well-formed CBOR.
    #[error("{0}")]
    Cbor(#[from] CborError),
    /// Well-formed CBOR that does not match the type's schema.
    #[error("{0}")]
    Schema(#[source] ciborium::de::Error<std::io::Error>),
    /// A required field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field appears twice.
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
}

/// Why a frame's body could not be decoded into a message or record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not an envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A known type arrived with the wrong flags byte.
    #[error("invalid flags for {message_type}: got {got}, expected {expected}")]
    InvalidFlags {
        /// The type named in the envelope.
        message_type: MessageType,
        /// The flags received.
        got: Flags,
        /// The flags the type requires.
        expected: Flags,
    },
    /// A known type's payload did not decode.
    #[error("decode payload for {message_type}: {source}")]
    Payload {
        /// The type named in the envelope.
        message_type: MessageType,
        /// What went wrong.
        source: PayloadError,
    },
    /// A raw bulk record (flags `0x08`) is malformed.
    #[error(transparent)]
    Bulk(#[from] BulkRecordError),
    /// An `MSBL` lease record is malformed.
    #[error(transparent)]
    Lease(#[from] LeaseRecordError),
}

impl DecodeError {
    /// The `core.error` kind a peer answers this error with (PROTOCOL.md §12).
    pub fn core_error_kind(&self) -> CoreErrorKind {
        match self {
            DecodeError::Envelope(_) | DecodeError::Bulk(_) | DecodeError::Lease(_) => {
                CoreErrorKind::MalformedMessage
            }
            DecodeError::InvalidFlags { .. } => CoreErrorKind::InvalidFlags,
            DecodeError::Payload { .. } => CoreErrorKind::InvalidPayload,
        }
    }

    /// The type named in the envelope, when it was read.
    pub fn message_type(&self) -> Option<MessageType> {
        match self {
            DecodeError::InvalidFlags { message_type, .. }
            | DecodeError::Payload { message_type, .. } => Some(*message_type),
            DecodeError::Envelope(_) | DecodeError::Bulk(_) | DecodeError::Lease(_) => None,
        }
    }

    /// The `core.error` payload that answers this error.
    pub fn core_error(&self) -> CoreError {
        CoreError {
            kind: self.core_error_kind(),
            message: self.to_string(),
            offending_type: self.message_type().map(|t| t.wire_name().to_owned()),
            init_failure: None,
            workload_failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_flags_message_names_type_and_both_bytes() {
        let err = DecodeError::InvalidFlags {
            message_type: MessageType::ExecRequest,
            got: Flags::NONE,
            expected: Flags::SESSION_START,
        };
        assert_eq!(err.to_string(), "invalid flags for core.exec.request: got 0x00, expected 0x02");
        let core = err.core_error();
        assert_eq!(core.kind, CoreErrorKind::InvalidFlags);
        assert_eq!(core.offending_type.as_deref(), Some("core.exec.request"));
    }

    #[test]
    fn envelope_errors_map_to_malformed_message() {
        let err = DecodeError::Envelope(EnvelopeError::MissingKey("t"));
        assert_eq!(err.core_error_kind(), CoreErrorKind::MalformedMessage);
        assert_eq!(err.core_error().offending_type, None);
    }
}
