//! Accounting of one client's outbound queue: what the router handed to the client's writer and
//! the writer has not yet put on the socket, in frames and in bytes.
//!
//! ```text
//!  guest frame ──try_push──► [ queued: frames, bytes ] ──wrote──► socket
//!                 │                  │
//!                 │ no room ⇒ the guest reader waits while the client still makes progress
//!                 │           (CLIENT_BACKLOG_PATIENCE_MS); past that, Overflow: disconnected
//!                 │ over HIGH_WATER ⇒ backlogged: the relay stops reading the client's requests
//!                 └ non-empty and no write progress for CLIENT_WRITE_STALL_MS ⇒ stalled
//! ```
//!
//! The bytes themselves travel in the driver's bounded channel; this module owns only the counts
//! and the time of the last progress, so the slow-client policy is decided (and tested) without
//! sockets.

use std::time::{Duration, Instant};

use crate::limits::{
    CLIENT_BACKLOG_PATIENCE_MS, CLIENT_QUEUE_HIGH_WATER_BYTES, CLIENT_QUEUE_HIGH_WATER_FRAMES,
    CLIENT_QUEUE_MAX_BYTES, CLIENT_QUEUE_MAX_FRAMES, CLIENT_WRITE_STALL_MS,
};

/// A push that would take the queue past a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Frames queued before the push.
    pub queued_frames: usize,
    /// Bytes queued before the push.
    pub queued_bytes: usize,
    /// Size of the frame that did not fit.
    pub frame_bytes: usize,
}

/// Counts of one client's queued output.
#[derive(Debug, Clone, Default)]
pub struct OutboundQueue {
    frames: usize,
    bytes: usize,
    /// Set while the queue is non-empty: when it became non-empty or last made progress.
    waiting_since: Option<Instant>,
}

impl OutboundQueue {
    /// Accounts for `len` more bytes in one frame, or refuses if a cap would be passed.
    pub fn try_push(&mut self, len: usize, now: Instant) -> Result<(), Overflow> {
        if self.frames + 1 > CLIENT_QUEUE_MAX_FRAMES || self.bytes + len > CLIENT_QUEUE_MAX_BYTES {
            return Err(Overflow {
                queued_frames: self.frames,
                queued_bytes: self.bytes,
                frame_bytes: len,
            });
        }
        self.frames += 1;
        self.bytes += len;
        self.waiting_since.get_or_insert(now);
        Ok(())
    }

    /// Whether a frame of `len` bytes fits now.
    pub fn has_room(&self, len: usize) -> bool {
        self.frames < CLIENT_QUEUE_MAX_FRAMES && self.bytes + len <= CLIENT_QUEUE_MAX_BYTES
    }

    /// Whether a full queue is worth waiting for: the socket took bytes (or the queue filled)
    /// less than [`CLIENT_BACKLOG_PATIENCE_MS`] ago.
    pub fn progressing(&self, now: Instant) -> bool {
        self.waiting_since.is_none_or(|since| {
            now.saturating_duration_since(since) < Duration::from_millis(CLIENT_BACKLOG_PATIENCE_MS)
        })
    }

    /// The writer put `frames` frames of `bytes` bytes on the socket.
    pub fn wrote(&mut self, frames: usize, bytes: usize, now: Instant) {
        self.frames = self.frames.saturating_sub(frames);
        self.bytes = self.bytes.saturating_sub(bytes);
        self.waiting_since = (self.frames > 0).then_some(now);
    }

    /// Whether the queue is above its high-water mark.
    pub fn backlogged(&self) -> bool {
        self.frames > CLIENT_QUEUE_HIGH_WATER_FRAMES || self.bytes > CLIENT_QUEUE_HIGH_WATER_BYTES
    }

    /// How long queued output has waited without progress, if that passed the stall deadline.
    pub fn stalled(&self, now: Instant) -> Option<Duration> {
        let waited = now.saturating_duration_since(self.waiting_since?);
        (waited >= Duration::from_millis(CLIENT_WRITE_STALL_MS)).then_some(waited)
    }

    /// Frames queued.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(CLIENT_WRITE_STALL_MS);

    #[test]
    fn push_past_the_byte_cap_overflows_without_counting() {
        let now = Instant::now();
        let mut queue = OutboundQueue::default();
        queue.try_push(CLIENT_QUEUE_MAX_BYTES - 10, now).unwrap();
        assert_eq!(
            queue.try_push(11, now),
            Err(Overflow {
                queued_frames: 1,
                queued_bytes: CLIENT_QUEUE_MAX_BYTES - 10,
                frame_bytes: 11
            })
        );
        assert_eq!((queue.frames(), queue.bytes()), (1, CLIENT_QUEUE_MAX_BYTES - 10));
        queue.try_push(10, now).unwrap();
    }

    #[test]
    fn push_past_the_frame_cap_overflows() {
        let now = Instant::now();
        let mut queue = OutboundQueue::default();
        for _ in 0..CLIENT_QUEUE_MAX_FRAMES {
            queue.try_push(1, now).unwrap();
        }
        assert!(queue.try_push(1, now).is_err());
    }

    #[test]
    fn a_full_queue_is_waited_for_only_while_it_makes_progress() {
        let patience = Duration::from_millis(CLIENT_BACKLOG_PATIENCE_MS);
        let start = Instant::now();
        let mut queue = OutboundQueue::default();
        assert!(queue.has_room(CLIENT_QUEUE_MAX_BYTES) && queue.progressing(start));
        queue.try_push(CLIENT_QUEUE_MAX_BYTES - 10, start).unwrap();
        assert!(queue.has_room(10) && !queue.has_room(11));
        assert!(queue.progressing(start + patience / 2));
        assert!(!queue.progressing(start + patience));
        queue.wrote(0, 0, start + patience);
        assert!(queue.progressing(start + patience + patience / 2));
    }

    #[test]
    fn backlogged_above_the_high_water_mark() {
        let now = Instant::now();
        let mut queue = OutboundQueue::default();
        queue.try_push(CLIENT_QUEUE_HIGH_WATER_BYTES, now).unwrap();
        assert!(!queue.backlogged());
        queue.try_push(1, now).unwrap();
        assert!(queue.backlogged());
        queue.wrote(1, CLIENT_QUEUE_HIGH_WATER_BYTES, now);
        assert!(!queue.backlogged());
    }

    #[test]
    fn stalls_only_when_output_waits_without_progress() {
        let start = Instant::now();
        let mut queue = OutboundQueue::default();
        assert_eq!(queue.stalled(start + STALL * 2), None, "an empty queue never stalls");
        queue.try_push(100, start).unwrap();
        queue.try_push(100, start).unwrap();
        assert_eq!(queue.stalled(start + STALL / 2), None);
        // Progress restarts the clock.
        queue.wrote(1, 100, start + STALL / 2);
        assert_eq!(queue.stalled(start + STALL), None);
        assert_eq!(queue.stalled(start + STALL / 2 + STALL), Some(STALL));
        // Drained: nothing waits.
        queue.wrote(1, 100, start + STALL * 3);
        assert_eq!(queue.stalled(start + STALL * 10), None);
    }
}
