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

// ---- the fuzzer (`moat-conformance fuzz`) ----

/// Most client connections one fuzz input opens at once (with [`FUZZ_MAX_JOBS`] jobs that is
/// well under the relay's 128 clients).
pub const FUZZ_MAX_CONNS: u8 = 4;

/// Most parallel fuzz jobs (`--jobs`).
pub const FUZZ_MAX_JOBS: usize = 16;

/// Most steps a generated input has.
pub const FUZZ_MAX_GENERATED_STEPS: usize = 10;

/// Most steps any input has (mutation and splicing stop growing it there).
pub const FUZZ_MAX_INPUT_STEPS: usize = 48;

/// Most payload or body bytes a generated or mutated frame carries.
pub const FUZZ_MAX_PAYLOAD_BYTES: usize = 2048;

/// Most pings one flood step sends.
pub const FUZZ_MAX_FLOOD_PINGS: u16 = 512;

/// Longest pause or slow read one step asks for, in milliseconds.
pub const FUZZ_MAX_STEP_MS: u16 = 200;

/// After each step, replies are read until none arrives for this long.
pub const FUZZ_REPLY_IDLE: Duration = Duration::from_millis(15);

/// After each step, replies are read for at most this long.
pub const FUZZ_STEP_READ_MAX: Duration = Duration::from_millis(500);

/// After the last step, replies are read until none arrives for this long...
pub const FUZZ_FINAL_IDLE: Duration = Duration::from_millis(60);

/// ...or for at most this long.
pub const FUZZ_FINAL_READ_MAX: Duration = Duration::from_secs(2);

/// How long one write may block before the step gives up on it (the peer stopped reading).
pub const FUZZ_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most reply frames one input reads; the rest are left unread (a peer cannot flood the fuzzer).
pub const FUZZ_MAX_REPLY_FRAMES: usize = 50_000;

/// Most transcript lines one input keeps (the count of the rest is kept).
pub const FUZZ_MAX_TRANSCRIPT_LINES: usize = 400;

/// Default bound on a `core.ping` round trip before the peer counts as hung (`--ping-ms`).
pub const FUZZ_DEFAULT_PING_BOUND: Duration = Duration::from_secs(2);

/// Bound on a fresh client's handshake (prologue and ready) in the oracle.
pub const FUZZ_HANDSHAKE_BOUND: Duration = Duration::from_secs(5);

/// Default longest wait for `--pid`'s fd and process counts to settle after an input
/// (`--settle-ms`): disconnect cleanup kills and reaps sessions asynchronously.
pub const FUZZ_DEFAULT_SETTLE: Duration = Duration::from_secs(3);

/// Pause between polls of `--pid`'s counts while they settle.
pub const FUZZ_SETTLE_POLL: Duration = Duration::from_millis(25);

/// How many times a resource growth must repeat (the input run again each time) before it is a
/// finding: a first run may open something lazily, once, for the sandbox's life.
pub const FUZZ_LEAK_CONFIRMATIONS: usize = 2;

/// Default fuzzing time (`--seconds`).
pub const FUZZ_DEFAULT_SECONDS: u64 = 60;

/// Most corpus entries kept in memory per job (and loaded from `--corpus DIR`).
pub const FUZZ_MAX_CORPUS_ENTRIES: usize = 512;

/// Largest corpus or reproducer file read.
pub const FUZZ_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most times the minimiser runs a candidate input.
pub const FUZZ_MAX_MINIMIZE_TRIALS: usize = 300;

/// Longest the minimiser runs.
pub const FUZZ_MINIMIZE_BUDGET: Duration = Duration::from_secs(120);

const _: () = assert!(FUZZ_MAX_GENERATED_STEPS <= FUZZ_MAX_INPUT_STEPS);
const _: () = assert!(FUZZ_MAX_JOBS * (FUZZ_MAX_CONNS as usize + 2) < 128);
const _: () = assert!(FUZZ_MAX_PAYLOAD_BYTES < moat_protocol::limits::MAX_EXEC_CONTROL_FRAME_BYTES);
