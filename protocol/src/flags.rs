//! The frame flags byte (PROTOCOL.md §1.2).
//!
//! ```text
//!  bit  7 6 5 4 | 3    | 2        | 1             | 0
//!       reserved | BULK | SHUTDOWN | SESSION_START | TERMINAL
//! ```
//!
//! This module owns the bit values and which bytes are legal on the wire. Which flags each message
//! type must carry lives in [`crate::message_type::MessageType::flags`].

use std::fmt;

/// The flags byte of a frame header. Any byte can be represented (decoders must be able to report
/// what they saw); [`Flags::is_wire_valid`] says whether a relay accepts it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set: ordinary non-terminal messages.
    pub const NONE: Flags = Flags(0x00);
    /// Last frame for this correlation id.
    pub const TERMINAL: Flags = Flags(0x01);
    /// First frame of a new session (exec, fs, tcp).
    pub const SESSION_START: Flags = Flags(0x02);
    /// The frame requests sandbox shutdown.
    pub const SHUTDOWN: Flags = Flags(0x04);
    /// The body is a raw bulk record, not CBOR. Must be used alone.
    pub const BULK: Flags = Flags(0x08);

    /// Wraps a raw flags byte as seen on the wire.
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this byte is one a relay forwards: exactly one of the four defined flags, or none
    /// (PROTOCOL.md §13.4 rule 2). Combinations and reserved bits are rejected.
    pub const fn is_wire_valid(self) -> bool {
        matches!(self.0, 0x00 | 0x01 | 0x02 | 0x04 | 0x08)
    }

    /// Whether the body is a raw bulk record (the flags byte is exactly `0x08`).
    pub const fn is_bulk(self) -> bool {
        self.0 == Self::BULK.0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#04x})", self.0)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_valid_accepts_exactly_the_single_flags_and_none() {
        let valid: Vec<u8> = (0..=255u8).filter(|b| Flags::from_bits(*b).is_wire_valid()).collect();
        assert_eq!(valid, vec![0x00, 0x01, 0x02, 0x04, 0x08]);
    }

    #[test]
    fn bulk_must_be_alone() {
        assert!(Flags::BULK.is_bulk());
        assert!(!Flags::from_bits(0x09).is_bulk());
        assert!(!Flags::from_bits(0x09).is_wire_valid());
    }

    #[test]
    fn contains_checks_all_bits() {
        assert!(Flags::from_bits(0x03).contains(Flags::TERMINAL));
        assert!(!Flags::TERMINAL.contains(Flags::SESSION_START));
    }
}
