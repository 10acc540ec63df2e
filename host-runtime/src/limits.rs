//! Every timeout and size the host runtime uses, with its unit in the name.

/// Longest wait for one frame of the bootstrap handshake with the agent.
pub const HANDSHAKE_FRAME_TIMEOUT_MS: u64 = 30_000;

/// Longest wait for the relay socket to appear after the relay task starts.
pub const RELAY_SOCKET_WAIT_MS: u64 = 5_000;

/// Poll interval while waiting for a file or a process.
pub const POLL_INTERVAL_MS: u64 = 10;

/// Polling interval for a wait on the start-up path that usually ends within a millisecond (the
/// relay binding its socket, `unshare` entering its user namespace): at [`POLL_INTERVAL_MS`]
/// each of those waits cost a whole 10 ms sleep on every create. (The supervisor's async wait
/// gets tokio's timer resolution, 1 ms.)
pub const STARTUP_POLL_INTERVAL_US: u64 = 200;

/// Events a streamed exec (`api::ExecStream`) holds before its reader stops reading the
/// session (and, through the output acks, the command's output): with the agent's frames at
/// most a few MiB each, the memory a slow consumer costs is bounded.
pub const EXEC_STREAM_EVENTS: usize = 16;

/// How long the CLI waits for the sandbox process to exit after `core.shutdown` before SIGKILL.
pub const SANDBOX_EXIT_TIMEOUT_MS: u64 = 10_000;

/// After a time limit sent `core.shutdown`, how long the sandbox process waits for the guest to
/// close before stopping the relay (and then the agent).
pub const GUEST_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// How often the sandbox process looks for a drain request (`DIR/drain`).
pub const DRAIN_POLL_INTERVAL_MS: u64 = 50;

/// How long `moat drain` waits for the sandbox process to confirm that new execs are refused.
pub const DRAIN_CONFIRM_TIMEOUT_MS: u64 = 5_000;

/// How long the sandbox process waits for the agent to exit once the relay stopped before SIGKILL.
pub const AGENT_EXIT_TIMEOUT_MS: u64 = 5_000;

/// Bytes read from the CLI's stdin per `core.exec.stdin` frame.
pub const STDIN_CHUNK_BYTES: usize = 64 * 1024;

/// Send buffer asked for on each end of the agent channel (`SO_SNDBUF`; the kernel doubles it
/// for its bookkeeping and caps it at `net.core.wmem_max`): room for a whole 3 MiB bulk record.
pub const AGENT_CHANNEL_SEND_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// `output_chunk_size` of the `exec_limits` moat's bootstrap sets (PROTOCOL.md §8.4): 256 KiB,
/// agentd's largest chunk, where the protocol's default of 16 KiB makes a fast stream cross in
/// sixteen times as many frames (and relay passes, `exec.log` records and acks).
pub const EXEC_OUTPUT_CHUNK_BYTES: u32 = 256 * 1024;

/// `output_limit` of that policy: 4 MiB of unacknowledged output per exec (sixteen chunks),
/// so an ack sent at half the window arrives long before the agent runs out of room. The
/// protocol's default 1 MiB is four of these chunks.
pub const EXEC_OUTPUT_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// Bytes read from the relay socket per read call.
pub const SOCKET_READ_CHUNK_BYTES: usize = 256 * 1024;

/// The agent generation from which the fs client moves file bytes as raw bulk records
/// (PROTOCOL.md §11) rather than CBOR `core.fs.data`.
pub const FS_BULK_GENERATION: u8 = 8;

/// The credit window of a bulk fs read: bytes the agent may send beyond what was consumed.
pub const FS_BULK_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// Exact-length writes up to this size skip the bulk offer (as the reference SDK does): the
/// acceptance round trip would cost more than the bytes.
pub const FS_BULK_MIN_WRITE_BYTES: u64 = 16 * 1024;

/// How long a VM's sandbox process waits for the guest agent to connect to its vsock port
/// (a microVM boots in well under a second on real KVM, ~3-4 s under nested TCG emulation).
pub const VM_AGENT_CONNECT_TIMEOUT_MS: u64 = 30_000;

/// After the relay stopped, how long a VM's sandbox process waits for libkrun to end the
/// process (the guest powering off) before ending it itself.
pub const VM_POWER_OFF_GRACE_MS: u64 = 5_000;

/// Lines of the guest console (and of libkrun's log) put into a VM boot error.
pub const VM_LOG_TAIL_LINES: usize = 8;

/// The most of a log's end read to quote its last lines: logs grow for the sandbox's whole life.
pub const LOG_TAIL_READ_BYTES: u64 = 64 * 1024;

/// Lines of the agent log shown when a sandbox fails to boot.
pub const AGENT_LOG_TAIL_LINES: usize = 20;

/// Longest sandbox name, in UTF-8 bytes.
pub const MAX_SANDBOX_NAME_BYTES: usize = 128;

/// How long `moat stop` waits after SIGTERM before SIGKILL.
pub const STOP_TERM_GRACE_MS: u64 = 2_000;

/// How long the sandbox process retries removing its cgroup after the agent exited.
pub const CGROUP_REMOVE_TIMEOUT_MS: u64 = 2_000;

/// How long the sandbox process waits for `unshare` to enter its new user namespace.
pub const USERNS_SWITCH_TIMEOUT_MS: u64 = 5_000;

/// How long `moat kill` waits for the killed sandbox process to disappear.
pub const KILL_WAIT_MS: u64 = 5_000;

/// How often `moat logs -f` looks for new lines.
pub const LOG_FOLLOW_INTERVAL_MS: u64 = 200;

/// How long after its `until` a followed log keeps reading before it ends: the relay stamps a
/// record when the output passes and writes it on its own thread, a moment later.
pub const LOG_UNTIL_GRACE_MS: u64 = 1_000;

const _: () = assert!(POLL_INTERVAL_MS < RELAY_SOCKET_WAIT_MS);
const _: () = assert!(AGENT_EXIT_TIMEOUT_MS < SANDBOX_EXIT_TIMEOUT_MS);

/// Most entries one image layer may hold.
pub const MAX_LAYER_ENTRIES: u64 = 2_000_000;

/// Most layers one image may have (the overlay's lowerdir list must fit a page).
pub const MAX_IMAGE_LAYERS: usize = 60;

/// Largest image config blob accepted.
pub const MAX_IMAGE_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The unpacker's read buffer over a layer blob.
pub const UNPACK_READ_BUFFER_BYTES: usize = 256 * 1024;

/// How long connecting to a registry may take.
pub const REGISTRY_CONNECT_TIMEOUT_MS: u64 = 10_000;

// `lowerdir=` and the lower dirs, each 64 hex digits and a `:`, fit the 4 KiB mount option page.
const _: () = assert!("lowerdir=".len() + MAX_IMAGE_LAYERS * 65 < 4096);

/// Smallest named-volume quota (an ext4 image below this has little room after its metadata).
pub const MIN_VOLUME_QUOTA_MIB: u64 = 16;

/// Largest named-volume quota (1 TiB; the image is sparse, so only what is written takes room).
pub const MAX_VOLUME_QUOTA_MIB: u64 = 1024 * 1024;

/// Most entries one host-side listing of a directory in a volume returns.
pub const MAX_VOLUME_LIST_ENTRIES: usize = 100_000;

/// Most entries `moat volume inspect` walks to measure a volume without a quota.
pub const MAX_VOLUME_SIZE_WALK_ENTRIES: usize = 1_000_000;

/// Time between the two samples of a metrics snapshot (CPU percent is measured over it).
pub const CPU_SAMPLE_MS: u64 = 250;

/// Shortest interval of a metrics stream.
pub const MIN_METRICS_INTERVAL_MS: u64 = 100;

/// Most bytes of file content the root patches of one sandbox carry.
pub const MAX_PATCH_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// Most steps (files, directories, links, removals) the root patches of one sandbox make.
pub const MAX_PATCH_BUNDLE_ENTRIES: usize = 100_000;

/// Bytes a TCP tunnel reads from its local side per `core.tcp.data` (the agent's own chunk).
pub const TUNNEL_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes buffered inside a TCP tunnel between the relay and its user, each way: a user that
/// stops reading stops the tunnel reading the relay.
pub const TUNNEL_BUFFER_BYTES: usize = 256 * 1024;

/// How long opening a TCP tunnel (relay handshake and the agent's connect) may take.
pub const TUNNEL_OPEN_TIMEOUT_MS: u64 = 35_000;

/// Pause between connect attempts of `wait_for_listener`.
pub const LISTENER_POLL_MS: u64 = 50;

/// Largest HTTP response (head and body) `Sandbox::fetch` reads.
pub const MAX_FETCH_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long `Sandbox::fetch` may take in all.
pub const FETCH_TIMEOUT_MS: u64 = 60_000;

/// Connections one `moat port-forward` carries at once; more wait in the listen backlog. Each
/// is one relay client, and a relay has 128.
pub const MAX_FORWARDED_CONNECTIONS: usize = 64;

const _: () = assert!(TUNNEL_CHUNK_BYTES <= TUNNEL_BUFFER_BYTES);
const _: () = assert!(MAX_FORWARDED_CONNECTIONS < moat_protocol::limits::RELAY_SLOTS as usize);
