//! The one place the fuzzer writes frame bytes by hand: a frame header whose length prefix is out
//! of bounds (0, 1, 4, or over 4 MiB). The protocol crate refuses to encode such a frame, by
//! design, so it cannot produce these bytes; every other malformed frame the fuzzer sends (wrong
//! flags, foreign ids, cut envelopes, garbage bodies, bodies cut mid-stream) is encoded by
//! `moat-protocol` and, at most, cut short.
//!
//! ```text
//!  0        4        8     9
//!  +--------+--------+-----+-----------------+
//!  | len    | id     |flags| up to 8 bytes   |   len outside [5, 4 MiB]; big-endian
//!  +--------+--------+-----+-----------------+
//! ```

/// Body bytes sent after the bad header, so a peer that trusts the length has something to read.
const TRAILING_BYTES: usize = 8;

/// A frame header claiming `len` bytes, on `id` with flags 0, followed by a few bytes.
pub fn bad_length_frame(len: u32, id: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + TRAILING_BYTES);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&[0xa0; TRAILING_BYTES]);
    bytes
}

#[cfg(test)]
mod tests {
    use moat_protocol::FrameDecoder;
    use moat_protocol::error::FrameError;

    use super::*;

    #[test]
    fn the_protocol_decoder_refuses_every_bad_length_the_fuzzer_sends() {
        for len in super::super::generate::BAD_LENGTHS {
            let mut decoder = FrameDecoder::new();
            decoder.push(&bad_length_frame(len, 7));
            let refused: Result<_, FrameError> = decoder.next_frame();
            assert!(refused.is_err(), "len {len} was accepted");
        }
    }
}
