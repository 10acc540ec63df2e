//! The moat host runtime library.
//!
//! ```text
//!  moat run ──► run::execute ──spawn──► moat __sandbox DIR (sandbox::serve_sandbox)
//!      │                                   │ unshare --mount: moat __ns-prepare DIR (ns_mapped:
//!      │                                   │ idmapped root and volumes, the user namespace as its
//!      │                                   │ root, then exec unshare --pid --mount --uts --ipc)
//!      │                                   ▼
//!      │                                moat-agentd (PID 1) ◄── socketpair ── relay (agent.sock)
//!      └── client::ExecSession ── unix socket DIR/agent.sock ──────────────────────┘
//! ```
//!
//! - [`api`]: the library's typed entry point (`Moat` → `Sandbox`), what bindings use.
//! - [`doctor`]: can this host boot a microVM, and why not; [`ns_probe`]: the namespace backend.
//! - [`config`]: sandbox options (mounts, limits, hostname) and the bootstrap they become;
//!   [`cgroup`]: `--cpus`/`--memory` on the namespace backend; `tty`: the CLI's terminal for `-t`.
//! - [`cli`]: parsing `moat run` arguments; [`isolation`]: choosing a backend.
//! - [`security`]: the `--security-profile` agentd applies; [`hardening`]: what isolation a
//!   sandbox has, for `moat inspect` and `moat doctor`.
//! - [`home`]: the moat home, sandbox directories and their spec file.
//! - [`image`]: OCI images: pull, the content-addressed store, unpacking, image defaults.
//! - [`agentd_bin`]: finding (or building) the `moat-agentd` binary.
//! - [`sandbox`]: the per-sandbox process (agent start, bootstrap handshake, relay).
//! - [`ns_init`] and [`host_root`]: inside the new namespaces, the root the agent gets;
//!   [`idmap`]: the unprivileged host id ranges sandboxes' ids map to; [`idlease`]: one block
//!   of them per running sandbox; [`idmount`]: idmapped
//!   bind mounts; [`ns_mapped`]: the start with that map (the default); [`userns`]: user
//!   namespaces, and the identity-map start on hosts without idmapped mounts.
//! - [`client`]: a relay client running one exec session.
//! - [`run`]: `moat run` from start to cleanup.
//! - [`state`]: the per-sandbox `state.json` store and name rules; [`lifecycle`]: named
//!   sandboxes (`create`, `exec`, `ls`, `inspect`, `socket`, `stop`, `kill`, `rm`); [`logs`]:
//!   `moat logs`.
//!
//! The libkrun VM backend is not built: `--isolation vm` says so with the doctor's reason.

#![deny(unsafe_code)]

pub mod agentd_bin;
pub mod api;
pub mod bench;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod config;
pub mod doctor;
pub mod error;
pub mod flow;
pub mod hardening;
pub mod home;
pub mod host_root;
pub mod idlease;
pub mod idmap;
pub mod idmount;
pub mod image;
pub mod isolation;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod ns_init;
pub mod ns_mapped;
pub mod ns_probe;
mod pre_exec;
pub mod rootless;
pub mod run;
pub mod sandbox;
pub mod security;
pub mod state;
mod sys;
mod tty;
pub mod userns;
pub mod vm;
