//! `frame_split`: [`FrameDecoder`] gives the same frames, the same first error and the same
//! end-of-stream verdict however the byte stream is cut into reads, and how often frames are
//! taken out between reads.
//!
//! ```text
//!  input: [plan_len u8][plan: plan_len bytes][stream ...]
//!
//!  plan byte:   7   6 ........ 0
//!             +---+-------------+
//!             |hold| chunk len  |   push the next `chunk len` (0..=127) stream bytes, then take
//!             +---+-------------+   frames out unless `hold` is set
//! ```
//!
//! The plan is applied cyclically until the stream is used up; an empty plan, or a plan whose
//! chunks are all empty, pushes what is left in one go. The reference outcome is the whole stream
//! pushed at once. The frames taken out must also re-encode to exactly the bytes they came from.

use moat_protocol::{FrameDecoder, FrameError, RawFrame};

/// Plan bit: do not take frames out after this push.
const HOLD: u8 = 0x80;
/// Plan bits: the chunk length.
const CHUNK_LEN_MASK: u8 = 0x7f;

/// What a decoder made of a stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Every frame taken out, in order.
    frames: Vec<RawFrame>,
    /// The first framing error, if any.
    error: Option<FrameError>,
    /// Bytes still buffered after the last push and the last take.
    buffered: usize,
    /// The end-of-stream verdict.
    finish: Option<FrameError>,
}

/// The target body.
pub fn run(data: &[u8]) {
    let (plan, stream) = split_input(data);
    let whole = feed(stream, &[]);
    let split = feed(stream, plan);
    assert_eq!(split, whole, "feeding with plan {plan:02x?} differs from one push");
    check_frames_cover_their_bytes(stream, &whole);
}

/// Splits an input into its plan and its stream.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&plan_len, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(plan_len).min(rest.len()))
}

/// The inverse of [`split_input`], for seeds. A plan longer than 255 bytes is cut.
pub fn join_input(plan: &[u8], stream: &[u8]) -> Vec<u8> {
    let plan = &plan[..plan.len().min(usize::from(u8::MAX))];
    let mut out = Vec::with_capacity(1 + plan.len() + stream.len());
    out.push(plan.len() as u8);
    out.extend_from_slice(plan);
    out.extend_from_slice(stream);
    out
}

/// A plan byte: push `chunk_len` bytes (at most 127), then take frames out unless `hold`.
pub const fn plan_step(chunk_len: u8, hold: bool) -> u8 {
    (chunk_len & CHUNK_LEN_MASK) | if hold { HOLD } else { 0 }
}

fn feed(stream: &[u8], plan: &[u8]) -> Outcome {
    let mut decoder = FrameDecoder::new();
    let mut outcome = Outcome::default();
    let mut rest = stream;
    let mut steps = plan.iter().cycle();
    // Consecutive empty pushes: after a whole plan of them, the rest goes in one push.
    let mut idle = 0usize;
    while !rest.is_empty() {
        let (len, take) = match steps.next() {
            Some(&step) if idle < plan.len() => {
                (usize::from(step & CHUNK_LEN_MASK), step & HOLD == 0)
            }
            _ => (rest.len(), true),
        };
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        idle = if chunk.is_empty() { idle + 1 } else { 0 };
        decoder.push(chunk);
        rest = tail;
        if take {
            take_frames(&mut decoder, &mut outcome);
        }
    }
    take_frames(&mut decoder, &mut outcome);
    outcome.buffered = decoder.buffered();
    outcome.finish = decoder.finish().err();
    if let Some(error) = outcome.error {
        assert_eq!(outcome.buffered, 0, "a failed decoder still buffers bytes");
        assert_eq!(outcome.finish, Some(error), "finish after {error:?}");
    }
    outcome
}

/// Takes frames out until the decoder needs more bytes or fails.
fn take_frames(decoder: &mut FrameDecoder, outcome: &mut Outcome) {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                assert_eq!(outcome.error, None, "a frame after a framing error");
                outcome.frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(outcome.error, None, "a failed decoder recovered");
                return;
            }
            Err(error) => {
                // The decoder stays failed and repeats its first error.
                assert_eq!(*outcome.error.get_or_insert(error), error, "the error changed");
                return;
            }
        }
    }
}

/// The frames re-encode to exactly the stream's first bytes; without an error, those bytes and
/// the still-buffered tail make up the whole stream.
fn check_frames_cover_their_bytes(stream: &[u8], outcome: &Outcome) {
    let mut encoded = Vec::new();
    for frame in &outcome.frames {
        frame.encode(&mut encoded).expect("a decoded frame re-encodes");
    }
    assert!(stream.starts_with(&encoded), "frames do not re-encode to the bytes they came from");
    if outcome.error.is_none() {
        assert_eq!(encoded.len() + outcome.buffered, stream.len(), "bytes went missing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_input_inverts_join_input() {
        let joined = join_input(&[plan_step(3, true), 1], b"abc");
        assert_eq!(joined, [2, 0x83, 1, b'a', b'b', b'c']);
        assert_eq!(split_input(&joined), (&[0x83, 1][..], &b"abc"[..]));
    }

    #[test]
    fn split_input_clamps_a_plan_longer_than_the_input() {
        assert_eq!(split_input(&[9, 1, 2]), (&[1, 2][..], &[][..]));
        assert_eq!(split_input(&[]), (&[][..], &[][..]));
    }

    #[test]
    fn all_empty_chunks_still_feed_the_whole_stream() {
        let frame = [0, 0, 0, 5, 0, 0, 0, 1, 0];
        let outcome = feed(&frame, &[plan_step(0, false), plan_step(0, true)]);
        assert_eq!(outcome.frames.len(), 1);
        assert_eq!((outcome.buffered, outcome.error), (0, None));
    }

    #[test]
    fn a_bad_prefix_is_found_in_any_split() {
        let stream = [0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 4];
        run(&join_input(&[plan_step(1, false)], &stream));
        let outcome = feed(&stream, &[plan_step(1, false)]);
        assert_eq!(outcome.frames.len(), 1);
        assert_eq!(outcome.error, Some(FrameError::TooShort { len: 4 }));
    }
}
