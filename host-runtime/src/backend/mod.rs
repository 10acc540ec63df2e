//! The two backends a sandbox runs on, and the choice between them.
//!
//! - [`isolation`]: choosing a backend (never weaker than asked, never silently weaker than a VM).
//! - [`namespace`]: Linux namespaces, agentd as PID 1 over a unix socket.
//! - [`vm`]: a libkrun microVM, agentd as the guest's init over vsock.

pub mod isolation;
pub mod namespace;
pub mod vm;
