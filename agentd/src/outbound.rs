//! The queue of frames going to the host. Every part of the agent that answers the host (the
//! dispatcher, exec sessions, filesystem streams) holds an [`Outbound`]; one writer task in
//! [`crate::driver`] drains it onto the channel.
//!
//! The queue is bounded in frames and each frame is bounded by the protocol's 4 MiB limit, so the
//! agent's buffered output is bounded too. A producer that outruns the host waits in
//! [`Outbound::send`]: an exec session stops reading its child's pipe, and the child blocks on
//! its next write. Waiting senders are served in order, so one flooding session cannot starve
//! another.

use moat_protocol::limits::AGENT_GENERATION;
use moat_protocol::{Message, MessageFrame};
use tokio::sync::mpsc;

/// Frames queued for the channel writer before producers start waiting.
pub const OUTBOUND_QUEUE_FRAMES: usize = 64;

/// The host went away: the channel writer has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent channel is closed")]
pub struct ChannelClosed;

/// A cloneable handle that queues encoded frames for the host.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Outbound {
    /// A handle and the receiving end the writer task drains.
    pub fn channel() -> (Outbound, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_FRAMES);
        (Outbound { tx }, rx)
    }

    /// Encodes and queues `message` on `id`, waiting while the queue is full. Every frame carries
    /// the agent's generation, [`AGENT_GENERATION`], as its `v`: clients negotiate
    /// `min(theirs, ready.v)` from it.
    ///
    /// A message that cannot be encoded (over the frame limit) is a bug in the caller: it is
    /// logged and dropped rather than taking the agent down.
    pub async fn send(&self, id: u32, message: Message) -> Result<(), ChannelClosed> {
        self.send_frame(&MessageFrame { id, v: AGENT_GENERATION, message }).await
    }

    /// [`Outbound::send`] of a frame the caller keeps, so a streamer can take its data buffer
    /// back and reuse it for the next chunk. `frame.v` should be [`AGENT_GENERATION`].
    pub async fn send_frame(&self, frame: &MessageFrame) -> Result<(), ChannelClosed> {
        match frame.to_bytes() {
            Ok(bytes) => self.tx.send(bytes).await.map_err(|_| ChannelClosed),
            Err(err) => {
                tracing::error!(id = frame.id, message = frame.message.wire_name(), %err, "dropping an unencodable frame");
                Ok(())
            }
        }
    }

    /// Queues a frame already encoded (a raw bulk record), waiting while the queue is full.
    pub async fn send_raw(&self, frame: Vec<u8>) -> Result<(), ChannelClosed> {
        self.tx.send(frame).await.map_err(|_| ChannelClosed)
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
