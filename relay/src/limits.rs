//! Every limit of the relay, in one place, with its unit in its name.
//!
//! The wire limits (frame size, slot count, `exec.log` rotation size) belong to the protocol and
//! live in [`moat_protocol::limits`]; these are the relay's own queue bounds and deadlines.
//! Relations between them are checked at compile time at the bottom of this file.

use moat_protocol::limits::{
    MAX_BODY_BYTES, MAX_WIRE_FRAME_BYTES, RELAY_PROLOGUE_BYTES, RELAY_SLOTS,
};

/// Frames queued for one client and not yet written to its socket. A guest frame that would go
/// past this disconnects the client (the guest stream is never held up for one client).
pub const CLIENT_QUEUE_MAX_FRAMES: usize = 4096;

/// Bytes queued for one client and not yet written to its socket; same policy as
/// [`CLIENT_QUEUE_MAX_FRAMES`].
pub const CLIENT_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Above this many queued frames the relay stops reading the client's requests until its
/// writer catches up (backpressure on the client, not on the guest).
pub const CLIENT_QUEUE_HIGH_WATER_FRAMES: usize = CLIENT_QUEUE_MAX_FRAMES / 2;

/// Above this many queued bytes the relay stops reading the client's requests; see
/// [`CLIENT_QUEUE_HIGH_WATER_FRAMES`].
pub const CLIENT_QUEUE_HIGH_WATER_BYTES: usize = CLIENT_QUEUE_MAX_BYTES / 2;

/// A client with queued output whose socket accepted nothing for this long is disconnected.
pub const CLIENT_WRITE_STALL_MS: u64 = 5_000;

/// When a guest frame does not fit a client's full queue, the guest reader waits for room as long
/// as that client's socket took bytes within this window: a slow but still-reading client loses
/// nothing. A client idle for longer is disconnected (queue overflow), so it holds the shared
/// guest stream (and every other client) up for at most this long.
pub const CLIENT_BACKLOG_PATIENCE_MS: u64 = 500;

/// How often a guest reader waiting for room re-checks without being woken.
pub const GUEST_ROOM_RECHECK_MS: u64 = 50;

/// Longest a departed client's slot stays quarantined waiting for the terminal frames of the exec
/// sessions it left open (the agent kills them; their `exec.exited` normally follows at once).
/// After this the slot is freed anyway, so a session that never ends cannot leak a slot.
pub const ORPHANED_EXEC_DRAIN_MS: u64 = 10_000;

/// Frames a client writer takes off its queue before reporting progress to the router.
pub const CLIENT_WRITE_BATCH_FRAMES: usize = 64;

/// Bytes asked of the kernel per socket read (client and guest streams): one 256 KiB output
/// chunk (moat's `output_chunk_size`) per read instead of four.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Frames queued for the guest writer (from all clients and the host). Client readers wait when
/// the queue is full.
pub const GUEST_QUEUE_MAX_FRAMES: usize = 256;

/// Bytes queued for the guest writer; same policy as [`GUEST_QUEUE_MAX_FRAMES`].
pub const GUEST_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// How long a stopping relay keeps writing already-queued frames (such as the host's
/// `core.shutdown`) to the guest before it gives up.
pub const GUEST_FLUSH_TIMEOUT_MS: u64 = 2_000;

/// Guest frames on the private workload channel waiting for the host to read them; past this
/// they are dropped (the host asks one freeze or thaw at a time, so a backlog is the agent's).
pub const WORKLOAD_QUEUE_MAX_FRAMES: usize = 16;

/// Concurrent raw bulk operations per client (PROTOCOL.md §11.2): the next bulk offer gets the
/// relay's terminal rejection.
pub const MAX_ACTIVE_BULK_PER_CLIENT: usize = 64;

/// Completed bulk ids a client's late raw records are recognised (and dropped) for.
pub const REMEMBERED_COMPLETED_BULK_IDS: usize = 1024;

/// Period of the router's housekeeping tick (slow-client deadlines).
pub const TICK_INTERVAL_MS: u64 = 1_000;

/// Pause after a failed `accept` (for example `EMFILE`) before trying again.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// Exec sessions one client may have open at once; the next `core.exec.request` disconnects it.
pub const MAX_OPEN_EXECS_PER_CLIENT: usize = 1024;

/// Exec sessions the relay tracks at once, including those of clients that already left and whose
/// terminal frame has not arrived yet. At the cap, a client opening one more is disconnected.
pub const MAX_TRACKED_EXEC_SESSIONS: usize = 2 * RELAY_SLOTS as usize * MAX_OPEN_EXECS_PER_CLIENT;

/// `exec.log` records waiting for the writer thread; past this, records are dropped and counted.
pub const EXEC_LOG_QUEUE_MAX_LINES: usize = 4096;

/// Bytes of `exec.log` chunk data (raw output bytes) waiting for the writer thread; same policy as
/// [`EXEC_LOG_QUEUE_MAX_LINES`].
pub const EXEC_LOG_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Longest `t` kept in a log line or error about a refused `control.*` frame.
pub const MAX_LOGGED_TYPE_NAME_BYTES: usize = 64;

// A client's queue holds its greeting (prologue + ready) plus at least one largest frame.
const _: () = assert!(CLIENT_QUEUE_MAX_BYTES >= RELAY_PROLOGUE_BYTES + 2 * MAX_WIRE_FRAME_BYTES);
const _: () = assert!(CLIENT_QUEUE_HIGH_WATER_BYTES < CLIENT_QUEUE_MAX_BYTES);
const _: () = assert!(CLIENT_QUEUE_HIGH_WATER_FRAMES < CLIENT_QUEUE_MAX_FRAMES);
const _: () = assert!(CLIENT_WRITE_BATCH_FRAMES <= CLIENT_QUEUE_MAX_FRAMES);
// The largest client frame fits the guest queue, and its byte count fits a semaphore request.
const _: () = assert!(GUEST_QUEUE_MAX_BYTES >= MAX_WIRE_FRAME_BYTES);
const _: () = assert!(MAX_WIRE_FRAME_BYTES <= u32::MAX as usize);
// Lossy UTF-8 turns one bad byte into three: the largest output chunk still fits the log queue.
const _: () = assert!(EXEC_LOG_QUEUE_MAX_BYTES >= 3 * MAX_BODY_BYTES);
// The stall deadline is checked on the tick, so it must span several ticks.
const _: () = assert!(CLIENT_WRITE_STALL_MS >= 2 * TICK_INTERVAL_MS);
const _: () = assert!(ORPHANED_EXEC_DRAIN_MS >= 2 * TICK_INTERVAL_MS);
