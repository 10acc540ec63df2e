//! The moat host runtime library.
//!
//! Today it holds the host checks behind `moat doctor` ([`doctor`]). Sandbox specs, state,
//! lifecycle and the two backends (libkrun VM, Linux namespaces) are not built yet; the CLI says so
//! instead of pretending.

#![forbid(unsafe_code)]

pub mod doctor;
