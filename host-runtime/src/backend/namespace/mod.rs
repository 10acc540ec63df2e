//! The namespace backend: agentd as PID 1 in new PID, mount, UTS, IPC (and network) namespaces.
//!
//! ```text
//!  supervisor ─spawn─► unshare --mount: moat __ns-prepare DIR (mapped: idmapped root and
//!                      volumes, the user namespace as its root, then exec unshare --pid --mount
//!                      --uts --ipc) ─► moat __ns-init DIR (init: the root the agent gets) ─► agentd
//! ```
//!
//! - [`probe`]: can this host run it, and how (`moat doctor`).
//! - [`mapped`]: the start with the unprivileged id map (the default); [`userns`]: user
//!   namespaces, and the identity-map start on hosts without idmapped mounts; [`rootless`]: what
//!   differs when moat itself runs unprivileged.
//! - [`idmap`]: the host id ranges sandboxes' ids map to; [`idlease`]: one block of them per
//!   running sandbox; [`idmount`]: idmapped bind mounts.
//! - [`init`] and [`host_root`]: inside the new namespaces, the root the agent gets.
//! - [`cgroup`]: `--cpus`, `--memory`, `--pids-limit`.
//! - `sys` and `pre_exec`: the raw system calls and the fork-time code, the only `unsafe` here.

pub mod cgroup;
pub mod host_root;
pub mod idlease;
pub mod idmap;
pub mod idmount;
pub mod init;
pub mod mapped;
pub(crate) mod pre_exec;
pub mod probe;
pub mod rootless;
pub(crate) mod sys;
pub mod userns;
