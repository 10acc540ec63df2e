//! Structure-aware mutation of inputs: whole steps are deleted, duplicated, swapped, inserted or
//! spliced from another corpus entry; frames get wrong flags, reused or foreign ids, other
//! generations, other or unknown type names, and payloads with bytes flipped, cut, extended or
//! replaced; a frame's envelope may be cut short (a frame whose body is a truncated envelope).
//!
//! Mutation never adds a type [`super::generate::sample`] refuses to send, and never grows an
//! input past [`FUZZ_MAX_INPUT_STEPS`] or a body past [`FUZZ_MAX_PAYLOAD_BYTES`].

use moat_protocol::{Message, MessageFrame, MessageType, UnknownMessage};

use super::generate::{self, Generation};
use super::input::{Body, FrameSpec, IdSpec, Input, OutsideId, Step};
use super::rng::Rng;
use crate::limits::{FUZZ_MAX_CONNS, FUZZ_MAX_INPUT_STEPS, FUZZ_MAX_PAYLOAD_BYTES};

/// Type names no catalogue has, and names the relay must refuse.
const FOREIGN_NAMES: &[&str] =
    &["core.fuzz.unknown", "core.exec.request.v2", "moat.fuzz", "", "control.exec.signal"];

/// CBOR items that replace a payload whole.
const REPLACEMENT_PAYLOADS: &[&[u8]] = &[
    &[],
    &[0xa0],
    &[0xf6],
    &[0x80],
    &[0x00],
    &[0xff],
    &[0xa1, 0x61, 0x78, 0x01],
    &[0x5f, 0x41, 0x00, 0xff],
    &[0xbf, 0x61, 0x61, 0x01],
    &[0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f],
];

/// A mutated copy of `base`; `other` (another corpus entry) may be spliced in.
pub fn input(rng: &mut Rng, base: &Input, other: Option<&Input>, g: Generation) -> Input {
    let mut out = base.clone();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        mutate_once(rng, &mut out, other, g);
    }
    out.steps.truncate(FUZZ_MAX_INPUT_STEPS);
    out
}

fn mutate_once(rng: &mut Rng, input: &mut Input, other: Option<&Input>, g: Generation) {
    let len = input.steps.len();
    let conns = FUZZ_MAX_CONNS.min(1 + count_connects(input));
    match rng.below(7) {
        0 if len > 1 => {
            input.steps.remove(rng.below(len));
        }
        1 if len > 0 && len < FUZZ_MAX_INPUT_STEPS => {
            let k = rng.below(len);
            let copy = input.steps[k].clone();
            input.steps.insert(k, copy);
        }
        2 if len > 1 => {
            let (a, b) = (rng.below(len), rng.below(len));
            input.steps.swap(a, b);
        }
        3 if len > 0 => {
            let k = rng.below(len);
            step(rng, &mut input.steps[k], conns, g);
        }
        4 => {
            if let Some(other) = other.filter(|o| !o.steps.is_empty()) {
                let from = rng.below(other.steps.len());
                let take = 1 + rng.below(other.steps.len() - from);
                let at = rng.below(len + 1);
                let spliced = other.steps[from..from + take].iter().cloned();
                input.steps.splice(at..at, spliced);
            }
        }
        _ if len < FUZZ_MAX_INPUT_STEPS => {
            let at = rng.below(len + 1);
            input.steps.insert(at, generate::step(rng, conns, g));
        }
        _ => {}
    }
}

fn count_connects(input: &Input) -> u8 {
    input.steps.iter().filter(|s| matches!(s, Step::Connect)).count().min(255) as u8
}

/// Mutates one step in place.
pub fn step(rng: &mut Rng, s: &mut Step, conns: u8, g: Generation) {
    match s {
        Step::Send { frame, conn } | Step::Truncated { frame, conn, .. } => {
            if rng.percent(15) {
                *conn = rng.below(usize::from(conns)) as u8;
            } else {
                self::frame(rng, frame);
            }
        }
        Step::BadLength { len, .. } => *len = *rng.pick(&generate::BAD_LENGTHS),
        Step::Flood { count, .. } => *count = count.saturating_mul(2).max(2) % 512 + 1,
        Step::SlowRead { ms, .. } | Step::Pause { ms } => *ms = (*ms / 2).max(rng.below(50) as u16),
        Step::Connect | Step::Disconnect { .. } => *s = generate::step(rng, conns, g),
    }
}

/// Mutates one frame in place: its id, flags, generation, type name, payload or body shape.
pub fn frame(rng: &mut Rng, frame: &mut FrameSpec) {
    match rng.below(8) {
        0 => frame.id = id(rng),
        1 => frame.flags = Some(*rng.pick(&[0x00, 0x01, 0x02, 0x03, 0x08, 0x10, 0x80, 0xff])),
        2 => frame.v = *rng.pick(&[0, 1, 5, 6, 7, 9, 11, 255]),
        3 => rename(rng, frame),
        4 => cut_envelope(rng, frame),
        _ => payload(rng, frame),
    }
}

fn id(rng: &mut Rng) -> IdSpec {
    match rng.below(4) {
        0 => IdSpec::Fresh,
        1 => IdSpec::Session { nth: rng.below(4) as u8 },
        2 => IdSpec::Reuse { back: rng.below(4) as u8 },
        _ => IdSpec::Outside {
            which: *rng.pick(&[
                OutsideId::Zero,
                OutsideId::Max,
                OutsideId::End,
                OutsideId::BeforeStart,
            ]),
        },
    }
}

fn rename(rng: &mut Rng, frame: &mut FrameSpec) {
    let Body::Envelope { t, .. } = &mut frame.body else { return };
    *t = if rng.percent(50) {
        let known = *rng.pick(&MessageType::ALL);
        if generate::sample(rng, known).is_none() {
            return;
        }
        known.wire_name().to_owned()
    } else {
        (*rng.pick(FOREIGN_NAMES)).to_owned()
    };
}

fn payload(rng: &mut Rng, frame: &mut FrameSpec) {
    let bytes = match &mut frame.body {
        Body::Envelope { p, .. } => p,
        Body::Raw { bytes } => bytes,
    };
    match rng.below(5) {
        0 if !bytes.is_empty() => {
            let k = rng.below(bytes.len());
            bytes[k] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => bytes.truncate(rng.below(bytes.len())),
        2 => {
            let len = 1 + rng.below(16);
            let extra = rng.bytes(len);
            bytes.extend(extra);
        }
        3 if !bytes.is_empty() => {
            let k = rng.below(bytes.len());
            bytes[k] = *rng.pick(&[0x00, 0x17, 0x18, 0x1f, 0x5b, 0x7f, 0x9b, 0xbb, 0xff]);
        }
        _ => *bytes = rng.pick(REPLACEMENT_PAYLOADS).to_vec(),
    }
    bytes.truncate(FUZZ_MAX_PAYLOAD_BYTES);
}

/// Turns an envelope body into the first bytes of its own encoding: a complete frame whose body
/// is a truncated envelope.
pub fn cut_envelope(rng: &mut Rng, frame: &mut FrameSpec) {
    let Body::Envelope { t, p } = &frame.body else { return };
    let Some(body) = envelope_bytes(frame.v, t, p) else { return };
    let keep = rng.below(body.len().max(1));
    frame.body = Body::Raw { bytes: body[..keep].to_vec() };
}

/// The CBOR envelope `{v, t, p}` as bytes, encoded by the protocol crate (a frame is encoded and
/// its body taken back out through the frame decoder, so no header layout is written here).
pub fn envelope_bytes(v: u8, t: &str, p: &[u8]) -> Option<Vec<u8>> {
    let message = Message::Unknown(UnknownMessage {
        t: t.to_owned(),
        flags: moat_protocol::Flags::NONE,
        payload: p.to_vec(),
    });
    let bytes = MessageFrame { id: 1, v, message }.to_bytes().ok()?;
    let mut decoder = moat_protocol::FrameDecoder::new();
    decoder.push(&bytes);
    let frame = decoder.next_frame().ok()??;
    Some(frame.body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        let g = Generation::default();
        let mut x = generate::input(&mut a, g);
        let mut y = generate::input(&mut b, g);
        for _ in 0..300 {
            x = input(&mut a, &x, None, g);
            y = input(&mut b, &y, None, g);
            assert_eq!(x, y);
            assert!(x.steps.len() <= FUZZ_MAX_INPUT_STEPS);
        }
    }

    #[test]
    fn a_cut_envelope_is_a_strict_prefix_of_the_encoding() {
        let full = envelope_bytes(10, "core.ping", &[0xa0]).unwrap();
        assert_eq!(full[0], 0xa3, "a 3-entry map");
        let mut frame = FrameSpec {
            id: IdSpec::Fresh,
            flags: None,
            v: 10,
            body: Body::Envelope { t: "core.ping".into(), p: vec![0xa0] },
        };
        cut_envelope(&mut Rng::new(1), &mut frame);
        let Body::Raw { bytes } = &frame.body else { panic!("{frame:?}") };
        assert!(bytes.len() < full.len() && full.starts_with(bytes));
    }

    #[test]
    fn payload_mutation_keeps_bodies_under_the_cap() {
        let mut rng = Rng::new(11);
        let mut frame = generate::valid_frame(&mut rng, Generation::default());
        for _ in 0..2000 {
            payload(&mut rng, &mut frame);
            let Body::Envelope { p, .. } = &frame.body else { panic!() };
            assert!(p.len() <= FUZZ_MAX_PAYLOAD_BYTES);
        }
    }
}
