//! moat's protocol conformance suite, for moat and for anybody's relay, agent or encoder that
//! claims compatibility with microsandbox 0.7.13.
//!
//! ```text
//!  vectors [FILE]        golden frames decode and re-encode byte for byte      (vectors)
//!  run --socket PATH     named cases driven against a live relay socket        (run, cases)
//!                        └─ client: handshake, ids, generation gate, deadlines (client, ops)
//!  fuzz --socket PATH    structure-aware fuzzing with an oracle, minimised reproducers (fuzz)
//!  replay FILE --socket  runs a reproducer again                                     (fuzz::replay)
//! ```
//!
//! The live suite depends on `moat-protocol` only, never on moat's relay or runtime, so what it
//! checks is the wire contract and nothing else. [`run::Suite`] is the library entry point;
//! the `moat-conformance` binary is a thin layer over it. `docs/CONFORMANCE.md` is the user guide.

#![forbid(unsafe_code)]

mod cases;
pub mod client;
pub mod error;
pub mod fuzz;
pub mod limits;
pub mod ops;
pub mod pattern;
pub mod run;
pub mod vectors;
