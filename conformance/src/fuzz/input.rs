//! What the fuzzer sends: an [`Input`] is a sequence of [`Step`]s over up to
//! [`MAX_CONNS`](crate::limits::FUZZ_MAX_CONNS) client connections. Inputs are plain data (serde),
//! so the same type is generated, mutated, minimised, stored in the corpus and written to a
//! reproducer file.
//!
//! ```text
//!  Input ─ steps ─┬─ Connect                       another client (conn 0 is open before step 1)
//!                 ├─ Send { conn, frame }          one complete frame
//!                 ├─ Truncated { conn, frame, keep }   the first `keep` bytes of a frame, no more
//!                 ├─ BadLength { conn, len }       a frame header whose length is out of bounds
//!                 ├─ Flood { conn, count }         `count` pings in one write
//!                 ├─ SlowRead { conn, ms }         read replies one frame per 10 ms for `ms`
//!                 ├─ Disconnect { conn }           close abruptly, unread replies and all
//!                 └─ Pause { ms }                  wait, reading replies
//!  FrameSpec { id: IdSpec, flags: Option<u8>, v, body: Envelope { t, p } | Raw { bytes } }
//! ```
//!
//! Ids are symbolic ([`IdSpec`]) because a client's range depends on the slot the relay gives it:
//! a reproducer must mean the same thing in any slot. Turning specs into bytes is
//! [`super::execute`]'s job; this module owns only the shapes.

use serde::{Deserialize, Serialize};

/// One fuzz input: the steps of a conversation with the peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One action of an input. `conn` names a connection by the order it was opened (0 is opened
/// before the first step); a `conn` that is not open when the step runs makes the step a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Opens one more client connection (prologue and ready), up to the connection cap.
    Connect,
    /// Sends one complete frame.
    Send {
        /// Connection index.
        conn: u8,
        /// The frame.
        frame: FrameSpec,
    },
    /// Sends the first `keep` bytes of a frame and never the rest (`keep` is clamped below the
    /// frame's length), leaving the stream mid-frame.
    Truncated {
        /// Connection index.
        conn: u8,
        /// The frame to cut.
        frame: FrameSpec,
        /// How many bytes of it to send.
        keep: u32,
    },
    /// Sends a frame header whose length prefix is `len` (over 4 MiB or under 5) and a few body
    /// bytes.
    BadLength {
        /// Connection index.
        conn: u8,
        /// The length prefix.
        len: u32,
    },
    /// Sends `count` pings, each on a fresh id, in one write.
    Flood {
        /// Connection index.
        conn: u8,
        /// How many pings.
        count: u16,
    },
    /// Reads the connection's replies slowly (at most one frame per 10 ms) for `ms` ms.
    SlowRead {
        /// Connection index.
        conn: u8,
        /// For how long.
        ms: u16,
    },
    /// Closes the connection abruptly without reading what is pending.
    Disconnect {
        /// Connection index.
        conn: u8,
    },
    /// Waits `ms` ms, reading replies on every open connection.
    Pause {
        /// For how long.
        ms: u16,
    },
}

impl Step {
    /// The connection the step acts on, if it acts on one.
    pub fn conn(&self) -> Option<u8> {
        match self {
            Step::Send { conn, .. }
            | Step::Truncated { conn, .. }
            | Step::BadLength { conn, .. }
            | Step::Flood { conn, .. }
            | Step::SlowRead { conn, .. }
            | Step::Disconnect { conn } => Some(*conn),
            Step::Connect | Step::Pause { .. } => None,
        }
    }

    /// A short name of the step's kind, for behaviour features and transcripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Send { .. } => "send",
            Step::Truncated { .. } => "truncated",
            Step::BadLength { .. } => "bad_length",
            Step::Flood { .. } => "flood",
            Step::SlowRead { .. } => "slow_read",
            Step::Disconnect { .. } => "disconnect",
            Step::Pause { .. } => "pause",
        }
    }
}

/// One frame, symbolically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameSpec {
    /// Which id it carries.
    pub id: IdSpec,
    /// The flags byte; `None` means the flags the type requires (0 for a name not in the
    /// catalogue).
    pub flags: Option<u8>,
    /// The envelope generation `v`.
    pub v: u8,
    /// The body.
    pub body: Body,
}

/// Which correlation id a frame carries, relative to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "id", rename_all = "snake_case")]
pub enum IdSpec {
    /// The connection's next unused id.
    Fresh,
    /// The id of the connection's `nth` session-opening frame (exec.request, fs.request,
    /// tcp.connect), counted modulo how many there were; a fresh id when there was none.
    Session {
        /// Which session.
        nth: u8,
    },
    /// The id of the connection's `back`-th most recent frame (0 = the last one), counted modulo
    /// how many there were; a fresh id when there was none.
    Reuse {
        /// How far back.
        back: u8,
    },
    /// An id outside the connection's range.
    Outside {
        /// Which one.
        which: OutsideId,
    },
}

/// Ids no client owns, or another client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutsideId {
    /// Id 0, the lifecycle id.
    Zero,
    /// `0xFFFFFFFF`, the runtime's private workload id.
    Max,
    /// The range's exclusive end (the next slot's first id, or a boundary).
    End,
    /// One below the range's start.
    BeforeStart,
}

/// A frame body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "body", rename_all = "snake_case")]
pub enum Body {
    /// A CBOR envelope `{v, t, p}` with any type name and any payload bytes.
    Envelope {
        /// The type name.
        t: String,
        /// The payload bytes (`p`), hex in files.
        #[serde(with = "hex")]
        p: Vec<u8>,
    },
    /// Body bytes written as they are (a cut envelope, garbage).
    Raw {
        /// The bytes, hex in files.
        #[serde(with = "hex")]
        bytes: Vec<u8>,
    },
}

/// Byte strings as lowercase hex in JSON.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("hex text of odd length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_round_trips_through_json_with_hex_payloads() {
        let input = Input {
            steps: vec![
                Step::Send {
                    conn: 0,
                    frame: FrameSpec {
                        id: IdSpec::Outside { which: OutsideId::End },
                        flags: Some(1),
                        v: 10,
                        body: Body::Envelope { t: "core.ping".into(), p: vec![0xa0] },
                    },
                },
                Step::Pause { ms: 3 },
            ],
        };
        let text = serde_json::to_string(&input).unwrap();
        assert!(text.contains("\"p\":\"a0\""), "{text}");
        assert!(text.contains("\"step\":\"send\""), "{text}");
        assert_eq!(serde_json::from_str::<Input>(&text).unwrap(), input);
    }

    #[test]
    fn odd_or_non_hex_payloads_are_refused() {
        let bad = r#"{"steps":[{"step":"send","conn":0,"frame":{"id":{"id":"fresh"},"flags":null,"v":10,"body":{"body":"raw","bytes":"abc"}}}]}"#;
        assert!(serde_json::from_str::<Input>(bad).is_err());
        let bad = bad.replace("abc", "zz");
        assert!(serde_json::from_str::<Input>(&bad).is_err());
    }
}
