//! Attached sandboxes: a sandbox whose lifetime is tied to its creator (`moat create --attach`,
//! the library's `create_attached` and `start_attached`, microsandbox's attached mode).
//!
//! ```text
//!  creator: pipe (close-on-exec) ─► spawn `moat __sandbox DIR --attached`, stdin = read end
//!           keeps the write end ([`Attachment`]: the CLI process, or the library handle)
//!  sandbox process: a thread reads stdin ─► EOF (the creator exited, was killed, or dropped
//!           its handle) ─► DIR/stop-request "creator-gone" ─► the relay stops the sandbox as
//!           `moat stop` does (its stop signal to every exec, then core.shutdown)
//!           a DETACH byte instead ─► the thread stops watching: the sandbox lives on
//! ```
//!
//! The kernel closes the write end whenever the creator ends, however it ends (even SIGKILL), so
//! no leftover sandbox outlives a crashed creator. The sandbox process still leads its own
//! session, as a detached one: `moat stop`, `kill` and `rm -f` work on it the same way.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::error::RuntimeError;
use crate::lifecycle::stop_signal::{self, StopRequest};
use crate::limits::SANDBOX_EXIT_TIMEOUT_MS;
use crate::store::home::SandboxDir;

/// The byte an [`Attachment`] writes to let its sandbox outlive it.
const DETACH: u8 = b'd';

/// The creator's end of an attached sandbox's lifeline: while it is open the sandbox runs; when
/// it closes (dropped, or this process ended) the sandbox stops.
#[derive(Debug)]
pub struct Attachment {
    write_end: OwnedFd,
    /// [`Attachment::detach`] succeeded.
    detached: std::sync::atomic::AtomicBool,
}

impl Attachment {
    /// A lifeline: the attachment, and the read end the sandbox process gets as its stdin.
    pub(crate) fn pipe() -> Result<(Attachment, OwnedFd), RuntimeError> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| RuntimeError::io("create a pipe", "attach")(errno.into()))?;
        let detached = std::sync::atomic::AtomicBool::new(false);
        Ok((Attachment { write_end, detached }, read_end))
    }

    /// Lets the sandbox outlive this attachment (and the process holding it): it becomes a
    /// detached sandbox. Idempotent.
    pub fn detach(&self) -> Result<(), RuntimeError> {
        let mut pipe = std::fs::File::from(
            self.write_end.try_clone().map_err(RuntimeError::io("detach", "attach pipe"))?,
        );
        match pipe.write_all(&[DETACH]) {
            // A broken pipe: the sandbox process is gone already, nothing is attached any more.
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(err) => return Err(RuntimeError::io("detach", "attach pipe")(err)),
        }
        self.detached.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether [`Attachment::detach`] was called (on any handle sharing it).
    pub fn is_detached(&self) -> bool {
        self.detached.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// In an attached sandbox's process: watches stdin (the creator's lifeline) on a thread, and
/// when the creator goes away asks for a stop with the sandbox's stop signal, as `moat stop`
/// without a timeout would.
pub fn watch_creator(dir: &SandboxDir) {
    let stdin = std::io::stdin();
    let dir = dir.clone();
    std::thread::spawn(move || {
        let mut lifeline = stdin.lock();
        let mut buf = [0u8; 64];
        loop {
            match lifeline.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if buf[..n].contains(&DETACH) => {
                    tracing::info!("detached: the sandbox outlives its creator");
                    return;
                }
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::warn!(%err, "the creator's lifeline failed; stopping");
                    break;
                }
            }
        }
        tracing::info!("the creator of this attached sandbox went away; stopping");
        let signal = dir.read_spec().ok().and_then(|spec| stop_signal::configured(&spec.config));
        let request = StopRequest {
            signal,
            grace: Duration::from_millis(SANDBOX_EXIT_TIMEOUT_MS),
            creator_gone: true,
        };
        if let Err(err) = request.write(&dir) {
            tracing::error!(%err, "could not ask for the stop");
        }
    });
}
