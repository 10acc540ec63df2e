//! moat-agentd: the guest agent. It runs as PID 1 in the sandbox (a libkrun microVM, or fresh
//! Linux namespaces), boots it, and serves the protocol on one agent channel: exec (pipes and
//! PTYs), filesystem operations, TCP streams to guest ports, liveness, shutdown.
//!
//! ```text
//!  channel ──► driver (read loop) ──► Dispatcher ──► ExecManager / FsService / TcpService / shutdown
//!     ▲                                    │ immediate replies (pong, errors)
//!     └──── writer task ◄── Outbound ◄─────┴── session output (started, stdout, exited, fs.data…)
//! ```

pub mod boot;
pub mod channel;
pub mod dispatch;
pub mod driver;
pub mod exec;
pub mod fs;
pub mod handshake;
pub mod outbound;
pub mod patches;
pub mod process;
pub mod seccomp;
pub mod shutdown;
pub mod sys;
pub mod tcp;
pub mod users;
pub mod workload;
