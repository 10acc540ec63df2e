//! The relay's error types: why [`crate::serve`] failed, and why the host's frame could not be
//! sent. Client misbehaviour is not an error of the relay: it disconnects that client
//! ([`crate::router::CloseReason`]).

use std::io;

use moat_protocol::error::{EncodeError, FrameError};

use crate::exec_log::ExecLogError;
use crate::router::{GuestFrameError, ReadyError};
use crate::socket::SocketError;

/// Why the relay could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The ready frame handed in is not the agent's `core.ready`.
    #[error("invalid ready frame: {0}")]
    Ready(#[from] ReadyError),
    /// The listening socket could not be created.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// `exec.log` could not be opened.
    #[error(transparent)]
    ExecLog(#[from] ExecLogError),
    /// Reading the guest stream failed.
    #[error("cannot read the guest stream: {0}")]
    GuestRead(#[source] io::Error),
    /// Writing the guest stream failed.
    #[error("cannot write the guest stream: {0}")]
    GuestWrite(#[source] io::Error),
    /// The guest stream is not framed.
    #[error("guest stream is not framed: {0}")]
    GuestFraming(#[from] FrameError),
    /// The guest stream ended inside a frame.
    #[error("guest stream ended inside a frame ({buffered} bytes of it received)")]
    GuestTruncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
    /// The guest sent a frame the relay cannot route.
    #[error(transparent)]
    GuestFrame(#[from] GuestFrameError),
    /// One of the relay's tasks panicked.
    #[error("the relay's {0} task panicked")]
    TaskPanicked(&'static str),
}

/// Why [`crate::RelayHandle::send_to_guest`] did not queue the frame.
#[derive(Debug, thiserror::Error)]
pub enum HostSendError {
    /// The id belongs to a client slot; the host uses id 0 or ids outside every slot.
    #[error("id {id} belongs to a relay client slot")]
    ClientId {
        /// The id.
        id: u32,
    },
    /// The frame cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The relay has stopped; nothing reaches the guest through it any more.
    #[error("the relay has stopped")]
    Stopped,
}
