//! Generation negotiation and the send-side gate (PROTOCOL.md §3).
//!
//! A peer never sends a type its counterpart's generation lacks: an unknown type name is fatal to
//! agentd 0.7.13. The negotiated generation is `min(ours, theirs)`, fixed once at the handshake.

use crate::message_type::MessageType;

/// The generation both sides understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Negotiated(u8);

/// A type the peer's generation does not have, refused locally and never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported operation: {message_type} needs protocol generation {introduced_in}, the peer speaks {negotiated}"
)]
pub struct UnsupportedByPeer {
    /// The refused type.
    pub message_type: MessageType,
    /// The generation it needs.
    pub introduced_in: u8,
    /// The negotiated generation.
    pub negotiated: u8,
}

impl Negotiated {
    /// `min(ours, theirs)`.
    pub fn new(ours: u8, theirs: u8) -> Negotiated {
        Negotiated(ours.min(theirs))
    }

    /// The negotiated generation.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Whether `message_type` may be sent to this peer.
    pub fn permits(self, message_type: MessageType) -> Result<(), UnsupportedByPeer> {
        let introduced_in = message_type.introduced_in();
        if introduced_in <= self.0 {
            Ok(())
        } else {
            Err(UnsupportedByPeer { message_type, introduced_in, negotiated: self.0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_minimum() {
        assert_eq!(Negotiated::new(10, 7).get(), 7);
        assert_eq!(Negotiated::new(5, 10).get(), 5);
    }

    #[test]
    fn gate_refuses_types_newer_than_the_peer() {
        let peer = Negotiated::new(10, 7);
        assert_eq!(peer.permits(MessageType::Bootstrap), Ok(()));
        assert_eq!(peer.permits(MessageType::Ping), Ok(()));
        let err = peer.permits(MessageType::ExecOutputAck).unwrap_err();
        assert_eq!((err.introduced_in, err.negotiated), (10, 7));
        assert!(err.to_string().starts_with("unsupported operation"));
        assert!(Negotiated::new(10, 1).permits(MessageType::FsRequest).is_err());
    }

    #[test]
    fn every_type_is_permitted_at_generation_10_and_only_gen_1_types_at_1() {
        let ten = Negotiated::new(10, 10);
        let one = Negotiated::new(10, 1);
        for t in MessageType::ALL {
            assert_eq!(ten.permits(t), Ok(()));
            assert_eq!(one.permits(t).is_ok(), t.introduced_in() == 1);
        }
    }
}
