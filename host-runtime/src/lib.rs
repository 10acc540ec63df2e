//! The moat host runtime library.
//!
//! ```text
//!  moat run ──► run::execute ──spawn──► moat __sandbox DIR (sandbox::serve_sandbox)
//!      │                                   │ unshare --mount: moat __ns-prepare DIR (rootfs bind)
//!      │                                   │ exec unshare --user --pid --mount --uts --ipc --net
//!      │                                   ▼
//!      │                                moat __ns-init DIR (ns_init: root assembly, then exec)
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
//! - [`home`]: the moat home, sandbox directories and their spec file.
//! - [`image`]: OCI images: pull, the content-addressed store, unpacking, image defaults.
//! - [`agentd_bin`]: finding (or building) the `moat-agentd` binary.
//! - [`sandbox`]: the per-sandbox process (agent start, bootstrap handshake, relay).
//! - [`ns_init`] and [`host_root`]: inside the new namespaces, the root the agent gets.
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
pub mod home;
pub mod host_root;
pub mod image;
pub mod isolation;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod ns_init;
pub mod ns_probe;
mod pre_exec;
pub mod run;
pub mod sandbox;
pub mod state;
mod sys;
mod tty;
pub mod userns;
pub mod vm;
