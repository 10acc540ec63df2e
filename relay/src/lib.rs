//! The per-sandbox relay (PROTOCOL.md §13): many clients share one agent channel, each in its own
//! id slot.
//!
//! ```text
//!  client ─┐ unix socket (0600)                         ┌──► guest writer ──► agent channel
//!  client ─┼──► accept ─► reader ─┐                     │
//!  client ─┘              writer ◄┼── Router (sans-IO) ─┤
//!                                 │   slots, checks,    └──◄ guest reader ◄── agent channel
//!                                 │   sessions, routing
//!                                 └──────────────────────────► exec.log writer thread
//! ```
//!
//! - [`router`]: the core. Inputs (client connected / frame / wrote / disconnected, guest frame,
//!   tick) become [`router::Effect`]s; no I/O, no waiting.
//! - [`validate`]: the §13.4 checks on client frames.
//! - [`sessions`], [`flow`], [`outbound`], [`slots`]: the core's bookkeeping (exec sessions,
//!   their generation-10 accounting, per-client queue accounting, the 128 slots).
//! - [`exec_log`]: the `exec.log` writer thread and rotation.
//! - [`driver`]: [`serve`], the tokio tasks that run the core; [`handle`]: how the host stops the
//!   relay and sends its own frames to the guest; [`socket`]: the listening socket.

//! # Policies
//!
//! - **Slots**: 128, lowest free first; the 129th connection is accepted and closed at once. A
//!   departed client's slot is quarantined until its `core.relay.client.disconnected` notice is
//!   queued for the guest, then freed (moat's agent does not lease ranges, so no `MSBL` ack).
//! - **Slow clients**: each client's outbound queue is bounded in frames and bytes
//!   ([`limits::CLIENT_QUEUE_MAX_FRAMES`], [`limits::CLIENT_QUEUE_MAX_BYTES`]). The guest stream
//!   never waits for a client: a guest frame that does not fit disconnects that client at once,
//!   and so does queued output that makes no progress for [`limits::CLIENT_WRITE_STALL_MS`].
//!   Before that, above the high-water mark the relay stops reading the client's requests
//!   (backpressure on the client). Each such disconnect is logged with the client and the reason.
//! - **Guest queue**: bounded in frames and bytes ([`limits::GUEST_QUEUE_MAX_FRAMES`],
//!   [`limits::GUEST_QUEUE_MAX_BYTES`]); client readers (and the host's
//!   [`RelayHandle::send_to_guest`]) wait when it is full, the guest reader never does.
//! - **`exec.log`**: written by its own thread from a queue bounded in records and bytes; when it
//!   falls behind, records are dropped and counted, never buffered without bound.

#![forbid(unsafe_code)]

pub mod bulk;
pub mod driver;
pub mod error;
pub mod exec_log;
pub mod flow;
pub mod handle;
pub mod limits;
pub mod outbound;
pub mod router;
pub mod sessions;
pub mod slots;
pub mod socket;
pub mod validate;

pub use driver::{RelayConfig, RelayStats, StopReason, serve};
pub use error::{HostSendError, RelayError};
pub use handle::{ExecActivity, RelayControl, RelayHandle};
