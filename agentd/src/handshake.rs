//! The boot handshake on the agent channel (PROTOCOL.md §7.1, §7.3):
//!
//! ```text
//! host  core.bootstrap  (id 0, flags 0, v >= 7)  ──►  first frame, 60 s deadline
//!                                                ◄──  core.init.resolved {default_user}
//! host  core.init.ack {}                         ──►  60 s deadline
//!                                                ◄──  core.ready {boot/init/ready times, version}
//! ```
//!
//! and the failure path: `core.error {kind: initialization_failed}` on id 0, then a bounded wait
//! for `core.init.ack {failure: true}` so the host can save the cause before the agent exits.

use std::time::Duration;

use moat_protocol::payload::bootstrap::GuestBootstrap;
use moat_protocol::payload::core::{
    CoreError, CoreErrorKind, InitFailureReason, InitResolved, Ready, ResolvedUser,
};
use moat_protocol::payload::exec::{ExecLimits, ExecLimitsError};
use moat_protocol::{DecodeError, Decoded, Flags, FrameError, Message, decode_frame};

use crate::driver::{FrameReader, ReadError};
use crate::outbound::{ChannelClosed, Outbound};

/// How long the agent waits for the bootstrap and for the init ack.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the agent waits for the host to acknowledge a reported init failure when the host
/// did not promise to (`init_failure_ack: false`).
pub const FAILURE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The oldest bootstrap generation accepted.
pub const MIN_BOOTSTRAP_GENERATION: u8 = 7;

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Nothing arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The host closed the channel.
    #[error("the host closed the agent channel during the handshake")]
    Closed,
    /// The byte stream is not well framed.
    #[error("bad frame from the host: {0}")]
    Frame(#[from] FrameError),
    /// The channel failed.
    #[error("agent channel read failed: {0}")]
    Io(std::io::Error),
    /// A frame did not decode.
    #[error("undecodable frame from the host: {0}")]
    Decode(#[from] DecodeError),
    /// The first frame is not a bootstrap on id 0 with flags 0.
    #[error("expected core.bootstrap on id 0 with flags 0 as the first frame, got {what}")]
    NotBootstrap {
        /// What arrived.
        what: String,
    },
    /// The bootstrap's generation is too old.
    #[error("core.bootstrap generation {0} is below {MIN_BOOTSTRAP_GENERATION}")]
    OldGeneration(u8),
    /// Something other than the init ack arrived while waiting for it.
    #[error("expected core.init.ack, got {0}")]
    NotInitAck(String),
    /// The writer side is gone.
    #[error(transparent)]
    ChannelClosed(#[from] ChannelClosed),
}

impl From<ReadError> for HandshakeError {
    fn from(err: ReadError) -> HandshakeError {
        match err {
            ReadError::Frame(e) => HandshakeError::Frame(e),
            ReadError::Io(e) => HandshakeError::Io(e),
        }
    }
}

async fn next_message(
    reader: &mut FrameReader,
    what: &'static str,
) -> Result<(u32, Flags, u8, Message), HandshakeError> {
    let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next_frame())
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT, what))??
        .ok_or(HandshakeError::Closed)?;
    match decode_frame(&frame)? {
        Decoded::Message(m) => Ok((frame.id, frame.flags, m.v, m.message)),
        other => {
            Err(HandshakeError::NotBootstrap { what: format!("a non-message record {other:?}") })
        }
    }
}

/// Reads and checks the first frame.
pub async fn receive_bootstrap(reader: &mut FrameReader) -> Result<GuestBootstrap, HandshakeError> {
    match next_message(reader, "core.bootstrap").await? {
        (0, flags, v, Message::Bootstrap(bootstrap)) if flags == Flags::NONE => {
            if v < MIN_BOOTSTRAP_GENERATION {
                return Err(HandshakeError::OldGeneration(v));
            }
            Ok(*bootstrap)
        }
        (id, flags, _, message) => Err(HandshakeError::NotBootstrap {
            what: format!("{} on id {id} with flags {flags}", message.wire_name()),
        }),
    }
}

/// The flow-control policy the agent enforces and announces: the bootstrap's `exec_limits`, or
/// the defaults when it has none. An invalid policy is a boot failure.
pub fn exec_limits(bootstrap: &GuestBootstrap) -> Result<ExecLimits, ExecLimitsError> {
    let limits = bootstrap.exec_limits.unwrap_or_default();
    limits.validate()?;
    Ok(limits)
}

/// Sends `core.init.resolved` and waits for `core.init.ack`.
pub async fn report_init(
    reader: &mut FrameReader,
    out: &Outbound,
    user: ResolvedUser,
) -> Result<(), HandshakeError> {
    out.send(0, Message::InitResolved(InitResolved { default_user: user })).await?;
    match next_message(reader, "core.init.ack").await? {
        (_, _, _, Message::InitAck(_)) => Ok(()),
        (_, _, _, other) => Err(HandshakeError::NotInitAck(other.wire_name().to_owned())),
    }
}

/// Sends `core.ready`, echoing the flow-control policy the agent enforces (PROTOCOL.md §6.1).
pub async fn send_ready(
    out: &Outbound,
    boot_time_ns: u64,
    init_time_ns: u64,
    exec_limits: ExecLimits,
) -> Result<(), ChannelClosed> {
    let ready = Ready {
        boot_time_ns,
        init_time_ns,
        ready_time_ns: crate::sys::boottime_ns(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        exec_limits: Some(exec_limits),
        ..Ready::default()
    };
    out.send(0, Message::Ready(ready)).await
}

/// Reports a boot failure and waits (bounded unless the host promised an ack) for the host's
/// `core.init.ack {failure: true}`. Late `failure: false` acks are ignored.
pub async fn report_failure(
    reader: Option<&mut FrameReader>,
    out: &Outbound,
    message: String,
    reason: Option<InitFailureReason>,
    host_promised_ack: bool,
) {
    let error = CoreError {
        kind: CoreErrorKind::InitializationFailed,
        message,
        offending_type: None,
        init_failure: reason,
        workload_failure: None,
    };
    if out.send(0, Message::Error(error)).await.is_err() {
        return;
    }
    let Some(reader) = reader else {
        // The reader is gone (the channel failed): give the writer a moment to flush.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    };
    let wait = async {
        loop {
            match reader.next_frame().await {
                Ok(Some(frame)) => {
                    if let Ok(Decoded::Message(m)) = decode_frame(&frame) {
                        if matches!(m.message, Message::InitAck(ack) if ack.failure) {
                            return;
                        }
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    };
    if host_promised_ack {
        wait.await;
    } else {
        let _ = tokio::time::timeout(FAILURE_ACK_TIMEOUT, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_limits_default_when_the_bootstrap_has_none() {
        assert_eq!(exec_limits(&GuestBootstrap::default()), Ok(ExecLimits::default()));
    }

    #[test]
    fn exec_limits_echo_the_bootstraps_policy() {
        let limits =
            ExecLimits { max_executions: 3, input_limit: 1 << 20, ..ExecLimits::default() };
        let bootstrap = GuestBootstrap { exec_limits: Some(limits), ..GuestBootstrap::default() };
        assert_eq!(exec_limits(&bootstrap), Ok(limits));
    }

    #[test]
    fn an_invalid_policy_is_a_boot_failure() {
        let limits = ExecLimits { max_executions: 0, ..ExecLimits::default() };
        let bootstrap = GuestBootstrap { exec_limits: Some(limits), ..GuestBootstrap::default() };
        assert_eq!(exec_limits(&bootstrap), Err(ExecLimitsError::NoExecutions));
    }
}
