//! Every limit the live suite enforces, with its unit in the name.

use std::time::Duration;

/// How long one case may take by default, from connecting to its last check.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time the runner waits for a case's thread after its deadline before it reports the case
/// as hung and moves on (the case's sockets time out on their own shortly after).
pub const CASE_WATCHDOG_GRACE: Duration = Duration::from_secs(5);

/// How long a case waits for a relay to close a connection it expects closed.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Most bytes of exec output or file data one collection keeps before the case fails: a relay
/// that streams without end cannot exhaust the suite's memory.
pub const MAX_COLLECTED_BYTES: usize = 64 * 1024 * 1024;

/// Most frames one collection reads before the case fails.
pub const MAX_COLLECTED_FRAMES: usize = 100_000;

/// Largest stdin chunk the suite sends (the reference policy's `stdin_chunk_size`).
pub const STDIN_CHUNK_BYTES: usize = 16 * 1024;

/// Size of the read buffer for one `read(2)` on the relay socket.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Pings the latency case sends, one at a time.
pub const LATENCY_PINGS: usize = 100;

/// How long disconnect cases wait for the agent to kill and reap a departed client's processes.
pub const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// Pause between polls while waiting for cleanup to become visible.
pub const CLEANUP_POLL: Duration = Duration::from_millis(100);

/// The generation the suite writes in every envelope, as current clients do (PROTOCOL.md §3).
pub const SUITE_GENERATION: u8 = moat_protocol::limits::PROTOCOL_GENERATION;

const _: () = assert!(STDIN_CHUNK_BYTES <= READ_BUFFER_BYTES);
const _: () = assert!(MAX_COLLECTED_BYTES >= 8 * moat_protocol::limits::FS_CHUNK_BYTES);
