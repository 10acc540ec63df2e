//! Every numeric limit of the wire protocol, in one place, with its unit in its name.
//!
//! Relations between limits are checked at compile time at the bottom of this file. This module
//! owns numbers only; the code that enforces each limit lives next to the decoder it guards.

/// Current protocol generation, the `v` every moat peer emits (PROTOCOL.md §3).
pub const PROTOCOL_GENERATION: u8 = 10;

/// Generation announced by moat's agent in `core.ready`. The agent understands every type up to
/// generation 10: generation-4 TCP sessions (a raw-bulk offer on `core.tcp.connect` is refused
/// with `core.tcp.failed`), generation-8 raw bulk for filesystem reads and writes, generation-9
/// freeze/thaw (root-disk types get `capability_unavailable`) and generation-10 exec flow
/// control.
pub const AGENT_GENERATION: u8 = 10;

/// Lowest request `v` that gets exec flow control and execution admission (PROTOCOL.md §8.4,
/// §13.5), when the sandbox has `exec_limits`.
pub const FLOW_CONTROL_GENERATION: u8 = 10;

/// Size of the big-endian length prefix that starts every frame.
pub const LEN_PREFIX_BYTES: usize = 4;

/// Bytes of `id` (u32) plus `flags` (u8) after the length prefix; the smallest legal `len`.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Largest legal value of the `len` prefix (it counts id + flags + body, not itself).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Largest complete frame on the wire, length prefix included.
pub const MAX_WIRE_FRAME_BYTES: usize = LEN_PREFIX_BYTES + MAX_FRAME_BYTES;

/// Largest frame body (CBOR envelope or raw bulk record).
pub const MAX_BODY_BYTES: usize = MAX_FRAME_BYTES - FRAME_HEADER_BYTES;

/// Payload of one streamed `core.fs.data` chunk, chosen so an encoded chunk fits a frame.
pub const FS_CHUNK_BYTES: usize = 3 * 1024 * 1024;

/// Header of a raw bulk record body: kind, flow, 2 reserved bytes, u64 offset.
pub const BULK_RECORD_HEADER_BYTES: usize = 12;

/// Largest payload of one raw bulk record.
pub const MAX_BULK_RECORD_PAYLOAD_BYTES: usize = 3 * 1024 * 1024;

/// Smallest `max_record_payload` a bulk offer may carry.
pub const MIN_BULK_OFFER_RECORD_PAYLOAD_BYTES: u32 = 16 * 1024;

/// Largest credit window (`credit_limit - consumed_offset`) of one bulk flow.
pub const MAX_BULK_CREDIT_WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// Deepest CBOR nesting a decoder accepts (arrays, maps and tags each add one level).
pub const MAX_CBOR_NESTING: usize = 256;

/// Largest complete wire frame of an exec-control message (`exec.signal`, `exec.resize`,
/// `exec.output.ack`, `exec.stdin.ack`).
pub const MAX_EXEC_CONTROL_FRAME_BYTES: usize = 4096;

/// Charge added to each exec output chunk's payload length for generation-10 flow control.
pub const EXEC_OUTPUT_EVENT_OVERHEAD_BYTES: u64 = 256;

/// Largest exec output or stdin chunk a valid `ExecLimits` policy may declare.
pub const MAX_EXEC_CHUNK_BYTES: u32 = (MAX_FRAME_BYTES - 1024) as u32;

/// Number of relay client slots, and so of concurrent relay clients.
pub const RELAY_SLOTS: u32 = 128;

/// Ids per relay slot: `floor(u32::MAX / RELAY_SLOTS)`.
pub const RELAY_SLOT_STEP_IDS: u32 = u32::MAX / RELAY_SLOTS;

/// Size of the relay prologue `[id_start u32 BE][id_end_exclusive u32 BE]`.
pub const RELAY_PROLOGUE_BYTES: usize = 8;

/// Size of an `MSBL` relay-lease record body (after the 5-byte frame header).
pub const LEASE_RECORD_BODY_BYTES: usize = 32;

/// Size of an unframed `MSBB`/`MSBA` bulk-port binding record.
pub const BULK_BINDING_BYTES: usize = 24;

/// Size at which `exec.log` is rotated.
pub const EXEC_LOG_ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// Number of rotated `exec.log.N` files readers look at.
pub const EXEC_LOG_ROTATED_FILES: u32 = 4;

// Relations the protocol depends on.
const _: () = assert!(FRAME_HEADER_BYTES == 4 + 1);
const _: () = assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
// A 3 MiB fs.data chunk plus its envelope must fit in one frame.
const _: () = assert!(FS_CHUNK_BYTES + 1024 <= MAX_BODY_BYTES);
// A full bulk record must fit in one frame.
const _: () = assert!(BULK_RECORD_HEADER_BYTES + MAX_BULK_RECORD_PAYLOAD_BYTES <= MAX_BODY_BYTES);
const _: () =
    assert!(MIN_BULK_OFFER_RECORD_PAYLOAD_BYTES as usize <= MAX_BULK_RECORD_PAYLOAD_BYTES);
const _: () = assert!(RELAY_SLOT_STEP_IDS == 33_554_431);
const _: () = assert!(AGENT_GENERATION <= PROTOCOL_GENERATION);
const _: () = assert!(FLOW_CONTROL_GENERATION <= AGENT_GENERATION);
const _: () = assert!(MAX_EXEC_CONTROL_FRAME_BYTES < MAX_WIRE_FRAME_BYTES);
