//! The moat host runtime library.
//!
//! ```text
//!  api (Moat → Sandbox) ──┐        cli (the `moat` binary's arguments) ──┐
//!                         ▼                                               ▼
//!  lifecycle: create, exec, stop, kill, rm, `run` (ephemeral), logs ◄─────┘
//!      │ store: the moat home, sandbox dirs, state.json        image: the OCI store
//!      │ spawn `moat __sandbox DIR`
//!      ▼
//!  supervisor (the per-sandbox process) ──► backend::namespace | backend::vm ──► moat-agentd
//!      └── relay (agent.sock) ◄── relay_client: exec sessions, generation-10 flow control
//! ```
//!
//! - [`api`]: the library's typed entry point (`Moat` → `Sandbox`), what bindings use.
//! - [`cli`]: parsing the `moat` command line; the binary (`main.rs`) dispatches on it.
//! - [`lifecycle`]: named sandboxes (`create`, `exec`, `ls`, `inspect`, `socket`, `stop`, `kill`,
//!   `rm`), `moat run` ([`lifecycle::run`]) and `moat logs` ([`lifecycle::logs`]).
//! - [`store`]: the moat home, sandbox directories and their spec, the `state.json` store.
//! - [`supervisor`]: the per-sandbox process (agent start, bootstrap handshake, relay, time limits).
//! - [`backend`]: choosing a backend ([`backend::isolation`]); the namespace backend
//!   ([`backend::namespace`]) and the libkrun VM backend ([`backend::vm`]).
//! - [`relay_client`]: a relay client running exec sessions, with generation-10 flow control.
//! - [`config`]: sandbox options (mounts, limits, hostname) and the bootstrap they become.
//! - [`security`]: the `--security-profile` agentd applies; [`security::hardening`]: what
//!   isolation a sandbox has, for `moat inspect` and `moat doctor`.
//! - [`image`]: OCI images: pull, the content-addressed store, unpacking, image defaults.
//! - [`metrics`]: cpu, memory, disk and network use of running sandboxes (`moat stats`).
//! - [`patches`]: changes to the root made before boot (`--patch`), applied by agentd.
//! - [`doctor`]: can this host boot a microVM, and why not.
//! - [`agentd_bin`]: finding (or building) the `moat-agentd` binary.
//! - [`bench`](mod@bench): `moat bench`. [`error`]: the runtime's errors. [`limits`]: its named bounds.
//!
//! `unsafe` lives only in `backend::namespace::{sys, pre_exec}` and `cli::tty`.

#![deny(unsafe_code)]

pub mod agentd_bin;
pub mod api;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod image;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod patches;
pub mod relay_client;
pub mod security;
pub mod store;
pub mod supervisor;
