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
//! - [`api`]: the library's async entry point (`Moat` → `Sandbox`), what bindings use; its
//!   configuration types ([`api::config`]); [`api::blocking`], the same without async.
//! - [`cli`]: the `moat` command line (clap derive), the only place that knows about flags; the
//!   binary (`main.rs`) dispatches on it to the library.
//! - [`lifecycle`]: named sandboxes (`create`, `exec`, `ls`, `inspect`, `socket`, `stop`, `kill`,
//!   `rm`), `moat run` ([`lifecycle::run`]) and `moat logs` ([`lifecycle::logs`]).
//! - [`store`]: the moat home, sandbox directories and their spec, the `state.json` store.
//! - [`supervisor`]: the per-sandbox process (agent start, bootstrap handshake, relay, time limits).
//! - [`backend`]: choosing a backend ([`backend::isolation`]); the namespace backend
//!   ([`backend::namespace`]) and the libkrun VM backend ([`backend::vm`]).
//! - [`relay_client`]: a relay client running exec sessions, with generation-10 flow control,
//!   and the filesystem client ([`relay_client::fs`]) under [`api::fs`] and `moat cp`.
//! - [`network`]: the network policy, published ports and the option parsers for them.
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
//!
//! # Examples
//!
//! The examples need root (the namespace backend) or a host that boots microVMs.
//!
//! Lifecycle: create a labelled sandbox, list by label, stop, wait, remove.
//!
//! ```no_run
//! use std::time::Duration;
//! use moat_runtime::api::{Isolation, LabelFilter, Moat, SandboxOptions};
//! use moat_runtime::config::SandboxConfig;
//! use moat_runtime::lifecycle::Executables;
//!
//! # async fn demo() -> Result<(), moat_runtime::error::RuntimeError> {
//! // A program that is not `moat` itself names the binaries its sandboxes run.
//! let moat = Moat::from_env().with_executables(Executables {
//!     moat: "/usr/local/bin/moat".into(),
//!     agentd: "/usr/local/bin/moat-agentd".into(),
//! });
//! let config = SandboxConfig { memory_mib: Some(256), ..SandboxConfig::default() };
//! let options = SandboxOptions::new("build-1")
//!     .isolation(Isolation::Namespace)
//!     .config(config)
//!     .label("team", "infra");
//! let sandbox = moat.create(options).await?;
//! let infra = LabelFilter { key: "team".into(), value: Some("infra".into()) };
//! assert_eq!(moat.list_filtered(vec![infra]).await?.len(), 1);
//! sandbox.stop().await?;
//! let ended = sandbox.wait(Duration::from_secs(5)).await?;
//! println!("exit code {:?}", ended.exit_code);
//! sandbox.remove(false).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Exec, collected: per-exec environment, directory, user and rlimits, and a time limit.
//!
//! ```no_run
//! use std::time::Duration;
//! use moat_protocol::payload::exec::{ExecRequest, ExecRlimit};
//! use moat_runtime::api::{ExecOutcome, Moat};
//!
//! # async fn demo() -> Result<(), moat_runtime::error::RuntimeError> {
//! let sandbox = Moat::from_env().get("build-1").await?;
//! let mut make = ExecRequest::new("make");
//! make.env = vec!["CC=clang".into()];
//! make.cwd = Some("/src".into());
//! make.user = Some("1000:1000".into());
//! make.rlimits = vec![ExecRlimit { resource: "nofile".into(), soft: 1024, hard: 1024 }];
//! let ran = sandbox.exec_with_timeout(make, Vec::new(), Duration::from_secs(600)).await?;
//! if ran.timed_out {
//!     eprintln!("make ran past 10 minutes and was killed");
//! } else if ran.outcome != ExecOutcome::Exited(0) {
//!     eprintln!("make failed: {}", String::from_utf8_lossy(&ran.stderr));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Exec, streamed: events in order, a stdin sink, signals.
//!
//! ```no_run
//! use moat_protocol::payload::exec::ExecRequest;
//! use moat_runtime::api::{ExecEvent, Moat};
//!
//! # async fn demo() -> Result<(), moat_runtime::error::RuntimeError> {
//! let sandbox = Moat::from_env().get("build-1").await?;
//! let mut stream = sandbox.exec_stream(ExecRequest::new("cat")).await?;
//! stream.write_stdin(b"hello\n".to_vec()).await?;
//! stream.close_stdin().await?;
//! while let Some(event) = stream.next().await {
//!     match event {
//!         ExecEvent::Started => {}
//!         ExecEvent::Stdout(data) | ExecEvent::Stderr(data) => {
//!             print!("{}", String::from_utf8_lossy(&data));
//!         }
//!         ExecEvent::Exited(outcome) => println!("ended: {outcome:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

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
pub mod network;
pub mod patches;
pub mod relay_client;
pub mod security;
pub mod store;
pub mod supervisor;
