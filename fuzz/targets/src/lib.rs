//! The bodies of moat's fuzz targets, as plain functions of `&[u8]`.
//!
//! ```text
//!  fuzz/fuzz_targets/<name>.rs ──libfuzzer_sys::fuzz_target!──┐   (nightly, cargo-fuzz)
//!                                                               ├──► <name>::run(&[u8])
//!  tests/replay.rs: fuzz/seeds/<name>/*, fuzz/corpus/<name>/* ──┘   (stable, cargo test)
//! ```
//!
//! Each target checks one property of `moat-protocol` (or of the relay's router, agentd's
//! dispatcher, the exec.log reader built on it, the runtime's image layer unpacker) and panics when it does not hold; a panic is
//! what libFuzzer reports as a crash. Keeping the bodies here, with no libFuzzer dependency, lets
//! the committed seeds and any local corpus be replayed as ordinary tests on stable Rust.
//!
//! This crate owns the targets, their input layouts (each module's doc draws its own) and the seed
//! generator. It does not own the properties' subject: a crash is fixed in `protocol/`, with a
//! regression unit test there, and its minimized input is kept in `fuzz/seeds/<name>/`.

#![forbid(unsafe_code)]

pub mod agentd_dispatch;
pub mod exec_log_line;
pub mod exec_log_reader;
pub mod frame_split;
pub mod layer_unpack;
pub mod message_decode;
pub mod relay_router;
pub mod roundtrip;
pub mod seeds;
pub mod vector_text;

use moat_protocol::Flags;

/// A fuzz target: its cargo-fuzz name (the file name in `fuzz/fuzz_targets/` and the seed folder
/// name) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the libFuzzer binary and of its `fuzz/seeds/<name>/` folder.
    pub name: &'static str,
    /// The body: returns normally, or panics when the property does not hold.
    pub run: fn(&[u8]),
}

/// Every target, in the order `.ci/fuzz.sh` runs them.
pub const TARGETS: [Target; 9] = [
    Target { name: "frame_split", run: frame_split::run },
    Target { name: "message_decode", run: message_decode::run },
    Target { name: "roundtrip", run: roundtrip::run },
    Target { name: "exec_log_line", run: exec_log_line::run },
    Target { name: "vector_text", run: vector_text::run },
    Target { name: "relay_router", run: relay_router::run },
    Target { name: "exec_log_reader", run: exec_log_reader::run },
    Target { name: "agentd_dispatch", run: agentd_dispatch::run },
    Target { name: "layer_unpack", run: layer_unpack::run },
];

/// Looks a target up by name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// Bytes of the frame header fields after the length prefix: `id` (u32 BE) and `flags` (u8).
pub const HEADER_FIELDS_BYTES: usize = 5;

/// Splits `[id u32 BE][flags u8][rest ...]`, the layout of a wire frame without its length
/// prefix; `None` when `data` is shorter than the two fields.
pub fn split_header(data: &[u8]) -> Option<(u32, Flags, &[u8])> {
    let (fields, rest) = data.split_first_chunk::<HEADER_FIELDS_BYTES>()?;
    let id = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]);
    Some((id, Flags::from_bits(fields[4]), rest))
}

/// The inverse of [`split_header`], for seeds.
pub fn join_header(id: u32, flags: Flags, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_FIELDS_BYTES + rest.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(flags.bits());
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_header_inverts_join_header() {
        let joined = join_header(0x0102_0304, Flags::TERMINAL, b"body");
        assert_eq!(joined, [1, 2, 3, 4, 1, b'b', b'o', b'd', b'y']);
        assert_eq!(split_header(&joined), Some((0x0102_0304, Flags::TERMINAL, &b"body"[..])));
    }

    #[test]
    fn split_header_needs_five_bytes() {
        assert_eq!(split_header(&[1, 2, 3, 4]), None);
        assert_eq!(split_header(&[0, 0, 0, 0, 8]), Some((0, Flags::BULK, &[][..])));
    }

    #[test]
    fn target_names_are_unique_and_found() {
        for t in TARGETS {
            assert_eq!(TARGETS.iter().filter(|u| u.name == t.name).count(), 1, "{}", t.name);
            assert!(target(t.name).is_some());
        }
        assert!(target("nope").is_none());
    }
}
