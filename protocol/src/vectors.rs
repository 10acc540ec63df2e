//! The golden-vector text format (`vectors/reference-0.7.13.txt`) and the byte-for-byte check
//! every record must pass: decode, compare with what the record declares, re-encode, compare
//! bytes. The protocol tests and `moat-conformance vectors` both use it, so an SDK author can check
//! vectors their own encoder produced in the same format.
//!
//! The format, line by line:
//!
//! ```text
//! # comment
//! RANGE_STEP=33554431
//! slot 0: Some((1, 33554431))
//! ### <name>                                   starts a record
//!  type=core.ping id=1 flags=0 payload_len=1 frame_len=29
//!  payload: a0                                 the envelope's inner CBOR
//!  frame:   000000190000000100a3...            the complete wire frame
//! ### <name>: 4d534242...                      an unframed record (MSBB/MSBA binding)
//! payload: ... / frame: ...                    unindented: a new unnamed record
//! decodes as Ready: 3                          the unnamed record must decode as that type
//! ```

use std::fmt;

use bytes::Bytes;

use crate::decode::{Decoded, decode_frame};
use crate::frame::FrameDecoder;
use crate::limits::RELAY_SLOT_STEP_IDS;
use crate::message::{Message, MessageFrame};
use crate::records::BindingRecord;
use crate::relay::{IdRange, Slot};

/// One record of a vector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vector {
    /// The record's heading (or a generated name).
    pub name: String,
    /// 1-based line where the record starts.
    pub line: usize,
    /// What it holds.
    pub body: VectorBody,
}

/// The contents of a vector record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorBody {
    /// A framed record: envelope, raw bulk or lease.
    Frame {
        /// Declared header fields, when the record has a `type=` line.
        header: Option<DeclaredHeader>,
        /// Declared type from a `decodes as <Type>` line (the catalogue's Rust name, e.g. `Ready`).
        decodes_as: Option<String>,
        /// The inner payload CBOR, when given.
        payload: Option<Vec<u8>>,
        /// The complete frame.
        frame: Vec<u8>,
    },
    /// An unframed 24-byte bulk-port binding record.
    Binding(Vec<u8>),
    /// `RANGE_STEP=N`.
    RangeStep(u64),
    /// `slot K: Some((start, end))`.
    Slot {
        /// Slot index.
        index: u32,
        /// Declared range.
        range: IdRange,
    },
}

/// The fields of a `type=... id=... flags=... payload_len=... frame_len=...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredHeader {
    /// Wire name.
    pub t: String,
    /// Correlation id.
    pub id: u32,
    /// Flags byte.
    pub flags: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Complete frame length.
    pub frame_len: usize,
}

/// A line the parser could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Why a record failed its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} (line {line}): {reason}")]
pub struct Mismatch {
    /// The record's name.
    pub name: String,
    /// Its line.
    pub line: usize,
    /// What differed.
    pub reason: String,
}

/// What a record decoded to, for callers that want to look further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A frame (message, bulk or lease record).
    Frame(Decoded),
    /// A binding record.
    Binding(BindingRecord),
    /// A range-step or slot line that matched.
    Constant,
}

/// Parses a vector file.
pub fn parse(text: &str) -> Result<Vec<Vector>, ParseError> {
    let mut out: Vec<Vector> = Vec::new();
    let mut unnamed = 0usize;
    // Set while unindented payload/frame lines are filling an unnamed record.
    let mut in_unnamed = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |reason: String| ParseError { line, reason };
        let indented = raw.starts_with(' ');
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with("# ") || trimmed == "#" {
            continue;
        }
        let field_line = ["payload:", "frame:", "type="].iter().any(|p| trimmed.starts_with(p));
        if field_line && !indented && !in_unnamed {
            unnamed += 1;
            in_unnamed = true;
            out.push(Vector {
                name: format!("unnamed record {unnamed}"),
                line,
                body: empty_frame(),
            });
        } else if !field_line || indented {
            in_unnamed = in_unnamed && !indented && trimmed.starts_with("decodes as ");
        }
        if let Some(rest) = trimmed.strip_prefix("### ") {
            match rest.split_once(": ") {
                Some((name, hex)) if !hex.trim().is_empty() => out.push(Vector {
                    name: name.trim().to_owned(),
                    line,
                    body: VectorBody::Binding(unhex(hex).map_err(err)?),
                }),
                _ => out.push(Vector { name: rest.trim().to_owned(), line, body: empty_frame() }),
            }
        } else if let Some(step) = trimmed.strip_prefix("RANGE_STEP=") {
            let step = step.parse().map_err(|_| err(format!("bad RANGE_STEP {step:?}")))?;
            out.push(Vector { name: "RANGE_STEP".into(), line, body: VectorBody::RangeStep(step) });
        } else if trimmed.starts_with("slot ") {
            out.push(Vector {
                name: trimmed.into(),
                line,
                body: parse_slot(trimmed).map_err(err)?,
            });
        } else if let Some(decl) = trimmed.strip_prefix("decodes as ") {
            let t = decl.split(':').next().unwrap_or_default().trim().to_owned();
            let (_, decodes_as, _, _) =
                current_frame(&mut out).ok_or_else(|| err("no record to attach to".into()))?;
            *decodes_as = Some(t);
        } else if field_line {
            let (header, _, payload, frame) = current_frame(&mut out)
                .ok_or_else(|| err("payload/frame line outside a record".into()))?;
            if let Some(hex) = trimmed.strip_prefix("payload:") {
                *payload = Some(unhex(hex).map_err(err)?);
            } else if let Some(hex) = trimmed.strip_prefix("frame:") {
                *frame = unhex(hex).map_err(err)?;
            } else {
                *header = Some(parse_header(trimmed).map_err(err)?);
            }
        } else {
            return Err(err(format!("unrecognised line {trimmed:?}")));
        }
    }
    Ok(out)
}

fn empty_frame() -> VectorBody {
    VectorBody::Frame { header: None, decodes_as: None, payload: None, frame: Vec::new() }
}

type FrameFields<'a> = (
    &'a mut Option<DeclaredHeader>,
    &'a mut Option<String>,
    &'a mut Option<Vec<u8>>,
    &'a mut Vec<u8>,
);

fn current_frame(out: &mut [Vector]) -> Option<FrameFields<'_>> {
    match out.last_mut().map(|v| &mut v.body) {
        Some(VectorBody::Frame { header, decodes_as, payload, frame }) => {
            Some((header, decodes_as, payload, frame))
        }
        _ => None,
    }
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "non-ASCII hex".to_owned())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("bad hex digits {s:?}"))
        })
        .collect()
}

fn parse_header(line: &str) -> Result<DeclaredHeader, String> {
    let mut t = None;
    let (mut id, mut flags, mut payload_len, mut frame_len) = (None, None, None, None);
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=').ok_or(format!("bad field {field:?}"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("bad number in {field:?}"));
        match key {
            "type" => t = Some(value.to_owned()),
            "id" => {
                id = Some(
                    u32::try_from(number()?)
                        .map_err(|_| format!("id out of range in {field:?}"))?,
                )
            }
            "flags" => {
                flags = Some(
                    u8::try_from(number()?)
                        .map_err(|_| format!("flags out of range in {field:?}"))?,
                )
            }
            "payload_len" => payload_len = Some(number()? as usize),
            "frame_len" => frame_len = Some(number()? as usize),
            _ => return Err(format!("unknown field {key:?}")),
        }
    }
    Ok(DeclaredHeader {
        t: t.ok_or("missing type=")?,
        id: id.ok_or("missing id=")?,
        flags: flags.ok_or("missing flags=")?,
        payload_len: payload_len.ok_or("missing payload_len=")?,
        frame_len: frame_len.ok_or("missing frame_len=")?,
    })
}

fn parse_slot(line: &str) -> Result<VectorBody, String> {
    // slot 0: Some((1, 33554431))
    let bad = || format!("bad slot line {line:?}");
    let (head, tail) = line.split_once(':').ok_or_else(bad)?;
    let index = head.trim_start_matches("slot").trim().parse().map_err(|_| bad())?;
    let inner =
        tail.trim().strip_prefix("Some((").and_then(|s| s.strip_suffix("))")).ok_or_else(bad)?;
    let (a, b) = inner.split_once(',').ok_or_else(bad)?;
    let range = IdRange {
        start: a.trim().parse().map_err(|_| bad())?,
        end_exclusive: b.trim().parse().map_err(|_| bad())?,
    };
    Ok(VectorBody::Slot { index, range })
}

/// Checks one record byte for byte.
pub fn check(vector: &Vector) -> Result<Checked, Mismatch> {
    let fail = |reason: String| Mismatch { name: vector.name.clone(), line: vector.line, reason };
    match &vector.body {
        VectorBody::RangeStep(step) if *step == u64::from(RELAY_SLOT_STEP_IDS) => {
            Ok(Checked::Constant)
        }
        VectorBody::RangeStep(step) => {
            Err(fail(format!("RANGE_STEP {step}, expected {RELAY_SLOT_STEP_IDS}")))
        }
        VectorBody::Slot { index, range } => match Slot::new(*index) {
            Some(slot) if slot.range() == *range => Ok(Checked::Constant),
            Some(slot) => {
                Err(fail(format!("slot {index} is {:?}, vector says {range:?}", slot.range())))
            }
            None => Err(fail(format!("slot {index} does not exist"))),
        },
        VectorBody::Binding(bytes) => {
            let record = BindingRecord::parse(bytes).map_err(|e| fail(e.to_string()))?;
            if record.to_bytes()[..] != bytes[..] {
                return Err(fail("binding record re-encodes to different bytes".into()));
            }
            Ok(Checked::Binding(record))
        }
        VectorBody::Frame { header, decodes_as, payload, frame } => {
            check_frame(header.as_ref(), decodes_as.as_deref(), payload.as_deref(), frame)
                .map(Checked::Frame)
                .map_err(fail)
        }
    }
}

fn check_frame(
    header: Option<&DeclaredHeader>,
    decodes_as: Option<&str>,
    payload: Option<&[u8]>,
    frame: &[u8],
) -> Result<Decoded, String> {
    if frame.is_empty() {
        return Err("record has no frame".into());
    }
    let mut decoder = FrameDecoder::new();
    decoder.push(frame);
    let raw = decoder
        .next_frame()
        .map_err(|e| format!("framing: {e}"))?
        .ok_or("frame is shorter than its length prefix")?;
    if decoder.buffered() != 0 {
        return Err(format!("{} bytes after the frame", decoder.buffered()));
    }
    let decoded = decode_frame(&raw).map_err(|e| format!("decode: {e}"))?;
    let mut again = Vec::new();
    let encoded = match &decoded {
        Decoded::Message(m) => {
            check_message(m, header, decodes_as, payload, frame.len())?;
            m.encode(&mut again)
        }
        Decoded::Bulk(record) => record.encode(&mut again),
        Decoded::Lease(record) => record.encode(&mut again),
        Decoded::LocalTransport(_) => {
            return Err("MSBS local-transport frames are not checked".into());
        }
    };
    encoded.map_err(|e| format!("re-encode: {e}"))?;
    if again != frame {
        return Err(format!(
            "re-encodes to different bytes:\n  vector: {}\n  ours:   {}",
            hex(frame),
            hex(&again)
        ));
    }
    Ok(decoded)
}

fn check_message(
    m: &MessageFrame,
    header: Option<&DeclaredHeader>,
    decodes_as: Option<&str>,
    payload: Option<&[u8]>,
    frame_len: usize,
) -> Result<(), String> {
    if let Message::Unknown(unknown) = &m.message {
        return Err(format!("type {:?} is not in the catalogue", unknown.t));
    }
    if let Some(h) = header {
        let got = (m.message.wire_name(), m.id, m.flags().bits(), frame_len);
        let want = (h.t.as_str(), h.id, h.flags, h.frame_len);
        if got != want {
            return Err(format!(
                "header (type, id, flags, frame_len) is {got:?}, vector says {want:?}"
            ));
        }
    }
    if let Some(name) = decodes_as {
        let got = m.message.message_type().map(|t| format!("{t:?}")).unwrap_or_default();
        if got != name {
            return Err(format!("decodes as {got}, vector says {name}"));
        }
    }
    let mut ours = Vec::new();
    m.message.encode_payload(&mut ours).map_err(|e| format!("payload re-encode: {e}"))?;
    if let Some(p) = payload {
        if ours != p {
            return Err(format!(
                "payload re-encodes differently:\n  vector: {}\n  ours:   {}",
                hex(p),
                hex(&ours)
            ));
        }
    }
    if let Some(h) = header {
        if ours.len() != h.payload_len {
            return Err(format!("payload is {} bytes, vector says {}", ours.len(), h.payload_len));
        }
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    struct Hex<'a>(&'a [u8]);
    impl fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
    Hex(bytes).to_string()
}

/// Parses hex (whitespace ignored), as vector files write bytes.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    unhex(text)
}

/// A frame from hex bytes, as a [`Bytes`] body for tests and tools.
pub fn frame_bytes(text: &str) -> Result<Bytes, String> {
    unhex(text).map(Bytes::from)
}
