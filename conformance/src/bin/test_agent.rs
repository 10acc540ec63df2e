//! `moat-conformance-test-agent`: a relay and agent in one process, listening on a unix socket,
//! that speaks the relay prologue and `core.ready` and answers pings, touches and session
//! openings. In `good` mode it behaves; each other mode plants one bug on purpose, so the
//! fuzzer's tests (and anyone's CI) can check that `moat-conformance fuzz` catches it:
//!
//! ```text
//!  good                 closes a client only for what PROTOCOL.md §13.4 refuses; answers an
//!                       unknown type with core.error (unsupported_message_type)
//!  exit-on-unknown      an unknown message type closes every client, as microsandbox 0.7.13's
//!                       agent does by exiting (§2.1)
//!  stall-on-truncated   a frame whose body is a cut (malformed) envelope stalls that client: it
//!                       is neither closed nor answered again
//!  leak-on-disconnect   every client that disconnects leaves a `sleep 30` child behind
//! ```
//!
//! Usage: `moat-conformance-test-agent --socket PATH --mode MODE`. Runs until killed.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use moat_protocol::error::DecodeError;
use moat_protocol::payload::core::{CoreError, CoreErrorKind, Ready, Touched};
use moat_protocol::payload::exec::{ExecFailed, ExecFailureKind};
use moat_protocol::payload::fs::FsResponse;
use moat_protocol::payload::tcp::TcpFailed;
use moat_protocol::relay::{IdRange, Prologue, Slot};
use moat_protocol::{FrameDecoder, Message, MessageFrame, MessageType, RawFrame};

/// Which bug to plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Good,
    ExitOnUnknown,
    StallOnTruncated,
    LeakOnDisconnect,
}

/// Clients connected now, by slot, so `exit-on-unknown` can close them all.
type Clients = Arc<Mutex<Vec<Option<UnixStream>>>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut socket, mut mode) = (None, None);
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--socket", Some(path)) => socket = Some(path.clone()),
            ("--mode", Some(m)) => {
                mode = match m.as_str() {
                    "good" => Some(Mode::Good),
                    "exit-on-unknown" => Some(Mode::ExitOnUnknown),
                    "stall-on-truncated" => Some(Mode::StallOnTruncated),
                    "leak-on-disconnect" => Some(Mode::LeakOnDisconnect),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    let (Some(socket), Some(mode)) = (socket, mode) else {
        eprintln!(
            "usage: moat-conformance-test-agent --socket PATH --mode good|exit-on-unknown|stall-on-truncated|leak-on-disconnect"
        );
        return ExitCode::from(2);
    };
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("moat-conformance-test-agent: bind {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let clients: Clients = Arc::new(Mutex::new((0..128).map(|_| None).collect()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let slot = {
            let mut all = clients.lock().unwrap_or_else(|p| p.into_inner());
            let free = all.iter().position(Option::is_none);
            if let (Some(k), Ok(clone)) = (free, stream.try_clone()) {
                all[k] = Some(clone);
            }
            free
        };
        let Some(slot) = slot else { continue };
        let clients = Arc::clone(&clients);
        std::thread::spawn(move || {
            serve(stream, slot as u32, mode, &clients);
            clients.lock().unwrap_or_else(|p| p.into_inner())[slot] = None;
            if mode == Mode::LeakOnDisconnect {
                // The planted bug: a child nobody waits for or kills.
                let _ = std::process::Command::new("sleep").arg("30").spawn();
            }
        });
    }
    ExitCode::SUCCESS
}

fn serve(mut stream: UnixStream, slot: u32, mode: Mode, clients: &Clients) {
    let Some(slot) = Slot::new(slot) else { return };
    let range = slot.range();
    let ready = MessageFrame::new(0, Message::Ready(Ready::default()));
    let Ok(ready) = ready.to_bytes() else { return };
    let greeting = [&Prologue::for_slot(slot).to_bytes()[..], &ready].concat();
    if stream.write_all(&greeting).is_err() {
        return;
    }
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 16 * 1024];
    let mut stalled = false;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            if stalled {
                continue;
            }
            match answer(&frame, range, mode) {
                Action::Reply(message) => {
                    let bytes = MessageFrame::new(frame.id, message).to_bytes().unwrap_or_default();
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Action::Ignore => {}
                Action::Close => return,
                Action::Stall => stalled = true,
                Action::CloseEveryone => {
                    for s in clients.lock().unwrap_or_else(|p| p.into_inner()).iter().flatten() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    return;
                }
            }
        }
    }
}

enum Action {
    Reply(Message),
    Ignore,
    Close,
    Stall,
    CloseEveryone,
}

fn error(kind: CoreErrorKind, message: &str, t: Option<&str>) -> Action {
    Action::Reply(Message::Error(CoreError {
        kind,
        message: message.to_owned(),
        offending_type: t.map(str::to_owned),
        init_failure: None,
        workload_failure: None,
    }))
}

/// What the agent does with one client frame.
fn answer(frame: &RawFrame, range: IdRange, mode: Mode) -> Action {
    if !frame.flags.is_wire_valid() || frame.flags.is_bulk() {
        return Action::Close;
    }
    if frame.id == 0 || frame.id < range.start || frame.id >= range.end_exclusive {
        return Action::Close;
    }
    let decoded = match MessageFrame::decode(frame.id, frame.flags, &frame.body) {
        Ok(decoded) => decoded,
        Err(DecodeError::InvalidFlags { message_type, .. }) => {
            return error(
                CoreErrorKind::InvalidFlags,
                "invalid flags",
                Some(message_type.wire_name()),
            );
        }
        Err(DecodeError::Payload { message_type, .. }) => {
            return error(
                CoreErrorKind::InvalidPayload,
                "bad payload",
                Some(message_type.wire_name()),
            );
        }
        Err(_) if mode == Mode::StallOnTruncated => return Action::Stall,
        Err(_) => return Action::Close,
    };
    match decoded.message {
        Message::Unknown(unknown) => {
            if unknown.t.is_empty() || unknown.t.starts_with("control.") {
                Action::Close
            } else if mode == Mode::ExitOnUnknown {
                Action::CloseEveryone
            } else {
                error(CoreErrorKind::UnsupportedMessageType, "unknown type", Some(&unknown.t))
            }
        }
        Message::Ping => Action::Reply(Message::Pong),
        Message::Touch => Action::Reply(Message::Touched(Touched { activity_seq: 1 })),
        Message::ExecRequest(_) => Action::Reply(Message::ExecFailed(ExecFailed {
            kind: ExecFailureKind::NotFound,
            errno: None,
            errno_name: None,
            message: "test agent: no programs".to_owned(),
            stage: None,
        })),
        Message::FsRequest(_) => Action::Reply(Message::FsResponse(FsResponse {
            ok: false,
            error: Some("test agent: no filesystem".to_owned()),
            data: None,
        })),
        Message::TcpConnect(_) => {
            Action::Reply(Message::TcpFailed(TcpFailed { error: "test agent: no network".into() }))
        }
        other if other.message_type().is_some_and(host_only) => Action::Close,
        // Every other type a client may send is accepted and dropped, as agentd drops what it
        // does not serve (PROTOCOL.md §5).
        _ignored => Action::Ignore,
    }
}

/// Lifecycle types only the host process sends (moat's relay rule 6).
fn host_only(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Bootstrap
            | MessageType::InitAck
            | MessageType::RelayClientDisconnected
            | MessageType::ClockSync
            | MessageType::Shutdown
            | MessageType::WorkloadFreeze
            | MessageType::WorkloadThaw
            | MessageType::WorkloadFrozen
            | MessageType::WorkloadThawed
            | MessageType::WorkloadTransportCredit
    )
}
