//! moat's protocol conformance suite.
//!
//! Built today: the golden-vector check ([`vectors`]). The live-relay scenario cases
//! (`moat-conformance run --socket PATH`) are not built yet.

#![forbid(unsafe_code)]

pub mod vectors;
