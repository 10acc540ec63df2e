//! In-process codec rates: what decoding costs a client before any I/O.

use std::time::Instant;

use moat_protocol::payload::exec::Data;
use moat_protocol::{Decoded, FrameDecoder, Message, MessageFrame, decode_frame};

use super::stats::mib_per_s;
use crate::error::RuntimeError;

/// The 3 MiB `core.fs.data` payload (the largest streamed frame).
const CHUNK_BYTES: usize = 3 * 1024 * 1024;

fn encode(frame: &MessageFrame) -> Result<Vec<u8>, RuntimeError> {
    frame.to_bytes().map_err(|source| RuntimeError::Encode { what: "a codec sample", source })
}

/// Decodes `wire` `n` times through the path a connection runs (push, split, typed decode);
/// returns the seconds taken.
fn decode_n(wire: &[u8], n: usize) -> Result<f64, RuntimeError> {
    let mut decoder = FrameDecoder::new();
    let start = Instant::now();
    for _ in 0..n {
        decoder.push(wire);
        let raw = decoder
            .next_frame()
            .map_err(|source| RuntimeError::Frame { peer: "the codec sample", source })?;
        let Some(raw) = raw else {
            return Err(RuntimeError::PeerGone {
                peer: "the codec sample",
                while_doing: "decoding",
            });
        };
        match decode_frame(&raw) {
            Ok(Decoded::Message(frame)) => {
                std::hint::black_box(frame);
            }
            Ok(_) => {}
            Err(source) => return Err(RuntimeError::Decode { peer: "the codec sample", source }),
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `core.ping` frames decoded per second.
pub(super) fn small_decode_per_s(n: usize) -> Result<f64, RuntimeError> {
    let wire = encode(&MessageFrame::new(1, Message::Ping))?;
    Ok(n as f64 / decode_n(&wire, n)?.max(1e-9))
}

/// MiB/s of 3 MiB `core.fs.data` frames decoded (wire bytes).
pub(super) fn chunk_decode_mib_s(n: usize) -> Result<f64, RuntimeError> {
    let wire = encode(&MessageFrame::new(1, Message::FsData(Data::new(vec![7u8; CHUNK_BYTES]))))?;
    let secs = decode_n(&wire, n)?;
    Ok(mib_per_s((wire.len() * n) as u64, std::time::Duration::from_secs_f64(secs)))
}
