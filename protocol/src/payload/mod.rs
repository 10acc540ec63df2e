//! Typed payloads of every message type, one module per family. Each type serializes to exactly
//! the CBOR the reference encoder produces and deserializes as leniently as the reference does
//! (unknown keys ignored, missing optional keys defaulted).

pub mod bootstrap;
pub mod bulk;
pub mod core;
pub mod exec;
pub mod fs;
pub mod tcp;
pub mod workload;
