//! moat's Node addon: microsandbox's Node SDK surface (`Sandbox`, `SandboxHandle`,
//! `ExecOutput`, `ExecHandle`, `SandboxFs`, `LogStream`, `MetricsStream`, `Volume`, the image
//! functions, the raw `AgentClient`) over `moat_runtime`.
//!
//! ```text
//!  index.js ── errors.js (MoatError subclasses by code)
//!     │
//!  #[napi] classes: sandbox.rs, exec.rs, exec_stream.rs, fs.rs, logs.rs, metrics.rs,
//!                   volume.rs, images.rs, agent_client.rs; config.rs + network.rs (SandboxConfig)
//!     │   (async: every blocking call runs on tokio's blocking pool, never on node's thread)
//!  library.rs ── the only caller of moat_runtime ──► moat_runtime::api
//!  agent_client.rs ── moat_protocol over a tokio UnixStream ──► the sandbox's relay socket
//! ```

#![deny(clippy::unwrap_used)]
// `#[napi]` items are reached through the addon's export table, not through Rust paths, so
// they are `pub` in private modules.
#![allow(unreachable_pub)]
// napi-derive registers the exports only outside `cfg(test)`; `clippy --all-targets` checks the
// library under `cfg(test)` too, where the exports look unused.
#![cfg_attr(test, allow(dead_code))]

mod agent_client;
mod config;
mod error;
mod exec;
mod exec_stream;
mod fs;
mod images;
mod info;
mod library;
mod logs;
mod metrics;
mod network;
mod sandbox;
mod volume;
