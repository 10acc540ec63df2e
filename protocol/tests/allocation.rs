//! Decoders never allocate from a length the input does not back (STYLE.md, PROTOCOL.md §1.1):
//! hostile length fields (a 4 GiB frame prefix, byte strings and arrays claiming gigabytes) are
//! refused without a large allocation. A counting global allocator records the largest single
//! allocation made on the test's own thread, so parallel tests do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use moat_protocol::{FrameDecoder, FrameError, Message, MessageType, decode_frame};

/// Forwards to [`System`], noting the size of every allocation on the calling thread.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // A const-initialised `Cell` needs no allocation and no destructor; `try_with` only fails
    // while the thread is being torn down, when nothing is measured.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a thread-local counter update that cannot allocate.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, which is `System.alloc_zeroed`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every allocation here does) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation_during(f: impl FnOnce()) -> usize {
    LARGEST.with(|largest| largest.set(0));
    f();
    LARGEST.with(Cell::get)
}

/// Far above what any of the inputs below backs, far below what they claim.
const SMALL_BYTES: usize = 64 * 1024;

/// `[len][id 1][flags 0]` followed by `body`.
fn frame(len: u32, body: &[u8]) -> Vec<u8> {
    [len.to_be_bytes().to_vec(), vec![0, 0, 0, 1, 0], body.to_vec()].concat()
}

#[test]
fn counter_sees_a_large_allocation() {
    let largest = largest_allocation_during(|| drop(std::hint::black_box(vec![0u8; 1 << 20])));
    assert!(largest >= 1 << 20, "{largest}");
}

#[test]
fn four_gib_length_prefix_allocates_nothing_large() {
    let largest = largest_allocation_during(|| {
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame(u32::MAX, &[0; 32]));
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: u32::MAX }));
    });
    assert!(largest < SMALL_BYTES, "{largest}");
}

#[test]
fn envelope_payload_claiming_4_gib_allocates_nothing_large() {
    // {"v": 10, "t": "core.ping", "p": bstr(0xffffffff) ...} with 4 bytes present.
    let mut body = vec![0xa3, 0x61, b'v', 0x0a, 0x61, b't', 0x69];
    body.extend_from_slice(b"core.ping");
    body.extend_from_slice(&[0x61, b'p', 0x5a, 0xff, 0xff, 0xff, 0xff, 0xa0, 0xa0, 0xa0, 0xa0]);
    let len = u32::try_from(5 + body.len()).expect("small");
    let largest = largest_allocation_during(|| {
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame(len, &body));
        let raw = decoder.next_frame().expect("frames").expect("whole");
        assert!(decode_frame(&raw).is_err());
    });
    assert!(largest < SMALL_BYTES, "{largest}");
}

#[test]
fn payload_strings_claiming_4_gib_allocate_nothing_large() {
    let claims = [
        // {"data": bstr(0xffffffff)}: the hand-written data path.
        (
            MessageType::ExecStdout,
            vec![0xa1, 0x64, b'd', b'a', b't', b'a', 0x5a, 0xff, 0xff, 0xff, 0xff, 0],
        ),
        // {"error": text(0xffffffff)}: the serde path.
        (
            MessageType::TcpFailed,
            vec![0xa1, 0x65, b'e', b'r', b'r', b'o', b'r', 0x7a, 0xff, 0xff, 0xff, 0xff, b'x'],
        ),
    ];
    for (t, p) in claims {
        let largest =
            largest_allocation_during(|| assert!(Message::decode_payload(t, &p).is_err()));
        assert!(largest < SMALL_BYTES, "{t}: {largest}");
    }
}

#[test]
fn payload_array_claiming_2_pow_64_items_allocates_nothing_large() {
    // {"cmd": "x", "args": array(u64::MAX) "a"}
    let mut p = vec![0xa2, 0x63, b'c', b'm', b'd', 0x61, b'x', 0x64, b'a', b'r', b'g', b's', 0x9b];
    p.extend_from_slice(&u64::MAX.to_be_bytes());
    p.extend_from_slice(&[0x61, b'a']);
    let largest = largest_allocation_during(|| {
        assert!(Message::decode_payload(MessageType::ExecRequest, &p).is_err());
    });
    assert!(largest < SMALL_BYTES, "{largest}");
}

#[test]
fn payload_data_array_claiming_2_pow_32_bytes_allocates_nothing_large() {
    // {"data": array(0xffffffff) 1, 2}: the lenient array-of-integers form.
    let p = [0xa1, 0x64, b'd', b'a', b't', b'a', 0x9a, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02];
    let largest = largest_allocation_during(|| {
        assert!(Message::decode_payload(MessageType::TcpData, &p).is_err());
    });
    assert!(largest < SMALL_BYTES, "{largest}");
}
