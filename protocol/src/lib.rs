//! moat's agent wire protocol, byte-compatible with microsandbox 0.7.13.
//!
//! ```text
//!  bytes ──FrameDecoder──► RawFrame {id, flags, body} ──decode_frame──► Decoded
//!                                                                        ├─ Message(MessageFrame {id, v, Message})
//!                                                                        ├─ Bulk(BulkRecord)
//!                                                                        ├─ Lease(LeaseRecord)
//!                                                                        └─ LocalTransport(opaque)
//!  MessageFrame::encode / BulkRecord::encode / LeaseRecord::encode ──► bytes
//! ```
//!
//! This crate is the only code in moat that reads or writes frame bytes. It has no I/O (the
//! optional `tokio` feature adds a codec adapter) and no `unsafe`, and no input makes it panic or
//! allocate from a length the input does not back. The facts it implements are in
//! `shared/reference/PROTOCOL.md`; each module names the section it owns.

#![forbid(unsafe_code)]

pub mod bulk;
pub mod cbor;
#[cfg(feature = "tokio")]
pub mod codec;
pub mod decode;
pub mod envelope;
pub mod error;
pub mod exec_log;
pub mod flags;
pub mod frame;
pub mod generation;
pub mod limits;
pub mod message;
pub mod message_type;
pub mod payload;
pub mod records;
pub mod relay;
pub mod vectors;

pub use bulk::{BulkFlow, BulkKind, BulkRecord};
pub use decode::{Decoded, decode_frame};
pub use error::{DecodeError, EncodeError, FrameError, PayloadError};
pub use flags::Flags;
pub use frame::{FrameDecoder, RawFrame};
pub use generation::Negotiated;
pub use message::{Message, MessageFrame, UnknownMessage};
pub use message_type::{Direction, MessageType};
