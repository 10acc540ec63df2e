//! `tokio_util::codec` adapters (feature `tokio`): [`FrameCodec`] turns a byte stream into
//! [`RawFrame`]s and back. Decoding bodies stays with [`crate::decode_frame`], so a relay can route
//! frames by header without decoding them.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{EncodeError, FrameError};
use crate::frame::{self, RawFrame};
use crate::message::MessageFrame;

/// Errors of the codec: I/O, framing (fatal for the stream) or encoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The byte stream is not well framed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Frames in, frames out.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = RawFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        Ok(frame::split_frame(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                frame::truncated(src)?;
                Ok(None)
            }
        }
    }
}

impl Encoder<RawFrame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: RawFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let mut out = Vec::with_capacity(item.wire_len());
        item.encode(&mut out)?;
        dst.extend_from_slice(&out);
        Ok(())
    }
}

impl Encoder<&MessageFrame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &MessageFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let mut out = Vec::new();
        item.encode(&mut out)?;
        dst.extend_from_slice(&out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn codec_round_trips_a_message_and_reports_truncation_at_eof() {
        let mut codec = FrameCodec;
        let mut buf = BytesMut::new();
        codec.encode(&MessageFrame::new(3, Message::Ping), &mut buf).unwrap();
        let wire = buf.clone();
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.id, 3);
        let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
        assert!(matches!(
            codec.decode_eof(&mut partial),
            Err(CodecError::Frame(FrameError::Truncated { .. }))
        ));
    }
}
