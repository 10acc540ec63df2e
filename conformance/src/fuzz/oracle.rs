//! What counts as a bug. The oracle is checked on every reply frame as it arrives
//! ([`check_reply`]) and after every input ([`fresh_client`], [`Resources`]):
//!
//! ```text
//!  every reply      decodes as a frame of the protocol (known type with its flags, or a name
//!                   the catalogue lacks); its id is in the client's range and is one the client
//!                   used; session events (exec/fs/tcp/bulk) only on ids that opened a session;
//!                   never a lease or local-transport record
//!  every close      the peer may close a client only after a frame PROTOCOL.md §13.4 refuses
//!                   (bad length or flags, foreign id, malformed body, host-only type, reused id)
//!  after the input  each client still open and frame-aligned answers core.ping within the bound;
//!                   a fresh client gets the prologue and core.ready, and a pong within the bound
//!  with --pid       after every client has gone and the counts have settled (bounded), the
//!                   process has no more fds and no more descendants than before the input
//! ```
//!
//! This module decides; [`super::execute`] does the sending and reading.

use std::path::Path;
use std::time::{Duration, Instant};

use moat_protocol::payload::fs::FsResponse;
use moat_protocol::relay::IdRange;
use moat_protocol::{Decoded, Message, RawFrame, decode_frame};
use serde::{Deserialize, Serialize};

use super::procs::{self, Usage};
use crate::client::{Conn, Deadline};
use crate::limits::{FUZZ_HANDSHAKE_BOUND, FUZZ_SETTLE_POLL};

/// The kinds of bug the oracle reports. Minimisation keeps the kind: a smaller input that fails
/// differently does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A client still connected got no `core.pong` within the bound.
    NoPong,
    /// A fresh client got no prologue and `core.ready`, or no pong.
    NoHandshake,
    /// A reply is not a well-formed frame of the protocol.
    MalformedReply,
    /// A reply carries an id outside the client's range.
    ForeignId,
    /// A reply carries an id in range that the client never used.
    UnusedId,
    /// A session event on an id that never opened a session.
    UnopenedSession,
    /// A lease or local-transport record reached a client.
    UnexpectedRecord,
    /// The peer closed a client that sent only frames the relay must forward.
    ClosedAfterAdmissible,
    /// `--pid` holds more file descriptors after the input than before.
    FdGrowth,
    /// `--pid` has more descendant processes after the input than before.
    ProcessGrowth,
}

/// One bug, with what the oracle saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Its kind.
    pub kind: FindingKind,
    /// What was seen, in a sentence.
    pub detail: String,
}

impl Finding {
    /// A finding of `kind`.
    pub fn new(kind: FindingKind, detail: impl Into<String>) -> Finding {
        Finding { kind, detail: detail.into() }
    }
}

/// What the oracle needs to know about the client a reply arrived on.
pub struct ClientView<'a> {
    /// The client's index in the input.
    pub index: u8,
    /// Its id range.
    pub range: IdRange,
    /// The type names it sent on `id`, first first; `None` if it never used `id`.
    pub used: &'a dyn Fn(u32) -> Option<Vec<String>>,
    /// Whether `id` opened a session.
    pub opened: &'a dyn Fn(u32) -> bool,
}

/// Checks one reply frame; returns the behaviour features it shows.
pub fn check_reply(client: &ClientView<'_>, frame: &RawFrame) -> Result<Vec<String>, Finding> {
    let c = client.index;
    let id = frame.id;
    if id < client.range.start || id >= client.range.end_exclusive {
        return Err(Finding::new(
            FindingKind::ForeignId,
            format!(
                "conn {c}: a reply on id {id}, outside the client's range [{}, {})",
                client.range.start, client.range.end_exclusive
            ),
        ));
    }
    let Some(sent) = (client.used)(id) else {
        return Err(Finding::new(
            FindingKind::UnusedId,
            format!("conn {c}: a reply on id {id}, which the client never used"),
        ));
    };
    let sent_t = sent.first().cloned().unwrap_or_default();
    let decoded = decode_frame(frame).map_err(|e| {
        Finding::new(
            FindingKind::MalformedReply,
            format!("conn {c}: the reply on id {id} (flags {}) does not decode: {e}", frame.flags),
        )
    })?;
    let message = match decoded {
        Decoded::Message(m) => m.message,
        Decoded::Bulk(_) if (client.opened)(id) => return Ok(vec![format!("{sent_t}->bulk")]),
        Decoded::Bulk(_) => {
            return Err(Finding::new(
                FindingKind::UnopenedSession,
                format!("conn {c}: a raw bulk record on id {id}, which never opened a session"),
            ));
        }
        Decoded::Lease(_) | Decoded::LocalTransport(_) => {
            return Err(Finding::new(
                FindingKind::UnexpectedRecord,
                format!("conn {c}: a lease or local-transport record on id {id}"),
            ));
        }
    };
    if is_session_event(&message)
        && !(client.opened)(id)
        && !unknown_session_answer(&message, &sent)
    {
        return Err(Finding::new(
            FindingKind::UnopenedSession,
            format!(
                "conn {c}: {} on id {id}, which never opened a session (it carried {sent_t})",
                message.wire_name()
            ),
        ));
    }
    Ok(vec![format!("{sent_t}->{}", reply_feature(&message))])
}

/// The reply's type, with the detail that tells behaviours apart (error kind, fs outcome).
fn reply_feature(message: &Message) -> String {
    match message {
        Message::Error(e) => format!("core.error:{:?}", e.kind),
        Message::FsResponse(FsResponse { ok, .. }) => format!("core.fs.response:ok={ok}"),
        Message::ExecFailed(f) => format!("core.exec.failed:{:?}", f.kind),
        other => other.wire_name().to_owned(),
    }
}

/// The terminal answers the protocol gives a follow-up on a session that does not exist: an
/// `fs.data` gets `fs.response ok:false` "unknown write session" (PROTOCOL.md §9.4), tcp data
/// gets `tcp.failed` "unknown TCP session" (§10).
fn unknown_session_answer(message: &Message, sent: &[String]) -> bool {
    let sent_any = |names: &[&str]| sent.iter().any(|t| names.contains(&t.as_str()));
    match message {
        Message::FsResponse(FsResponse { ok: false, .. }) => sent_any(&["core.fs.data"]),
        Message::TcpFailed(_) => sent_any(&["core.tcp.data", "core.tcp.eof", "core.tcp.close"]),
        _other => false,
    }
}

/// Whether a message belongs to an exec, fs, tcp or bulk session (PROTOCOL.md §4.2).
fn is_session_event(message: &Message) -> bool {
    matches!(
        message,
        Message::ExecStarted(_)
            | Message::ExecStdout(_)
            | Message::ExecStderr(_)
            | Message::ExecStdinError(_)
            | Message::ExecStdinAck(_)
            | Message::ExecExited(_)
            | Message::ExecFailed(_)
            | Message::FsData(_)
            | Message::FsResponse(_)
            | Message::TcpConnected
            | Message::TcpData(_)
            | Message::TcpEof
            | Message::TcpClosed
            | Message::TcpFailed(_)
            | Message::BulkAccepted(_)
            | Message::BulkCredit(_)
            | Message::BulkFinish(_)
            | Message::BulkCancel(_)
    )
}

/// A fresh client must get the handshake and a pong within `ping_bound`.
pub fn fresh_client(socket: &Path, ping_bound: Duration) -> Result<Conn, Finding> {
    let mut conn = Conn::connect(socket, Deadline::after(FUZZ_HANDSHAKE_BOUND)).map_err(|e| {
        Finding::new(FindingKind::NoHandshake, format!("a fresh client got no handshake: {e}"))
    })?;
    conn.set_deadline(Deadline::after(ping_bound));
    conn.ping().map_err(|e| {
        Finding::new(
            FindingKind::NoHandshake,
            format!(
                "a fresh client got no reply to core.ping within {} ms: {e}",
                ping_bound.as_millis()
            ),
        )
    })?;
    Ok(conn)
}

/// `--pid`'s resources, measured before an input and compared after it.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pid: u32,
    settle: Duration,
}

impl Resources {
    /// Watches `pid`, waiting up to `settle` for counts to come back down.
    pub fn new(pid: u32, settle: Duration) -> Resources {
        Resources { pid, settle }
    }

    /// The counts now.
    pub fn measure(&self) -> Result<Usage, Finding> {
        procs::usage(self.pid).map_err(|e| {
            Finding::new(
                FindingKind::NoHandshake,
                format!("cannot read /proc/{} (did the process exit?): {e}", self.pid),
            )
        })
    }

    /// Waits (bounded) until the counts are back at or below `before`; the growth that remains
    /// is the finding.
    pub fn settled(&self, before: Usage) -> Result<(), Finding> {
        let started = Instant::now();
        loop {
            let now = self.measure()?;
            if now.fds <= before.fds && now.descendants <= before.descendants {
                return Ok(());
            }
            if started.elapsed() >= self.settle {
                let (kind, what) = if now.descendants > before.descendants {
                    (FindingKind::ProcessGrowth, "descendant processes")
                } else {
                    (FindingKind::FdGrowth, "open fds")
                };
                return Err(Finding::new(
                    kind,
                    format!(
                        "pid {} went from {} to {} {what} ({} to {} fds, {} to {} descendants) \
                         across the input, {} ms after its clients left",
                        self.pid,
                        if kind == FindingKind::ProcessGrowth {
                            before.descendants
                        } else {
                            before.fds
                        },
                        if kind == FindingKind::ProcessGrowth { now.descendants } else { now.fds },
                        before.fds,
                        now.fds,
                        before.descendants,
                        now.descendants,
                        self.settle.as_millis()
                    ),
                ));
            }
            std::thread::sleep(FUZZ_SETTLE_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use moat_protocol::{Flags, MessageFrame};

    use super::*;

    fn view<'a>(
        used: &'a dyn Fn(u32) -> Option<Vec<String>>,
        opened: &'a dyn Fn(u32) -> bool,
    ) -> ClientView<'a> {
        ClientView { index: 0, range: IdRange { start: 1, end_exclusive: 100 }, used, opened }
    }

    fn raw(id: u32, message: Message) -> RawFrame {
        let bytes = MessageFrame::new(id, message).to_bytes().unwrap();
        let mut decoder = moat_protocol::FrameDecoder::new();
        decoder.push(&bytes);
        decoder.next_frame().unwrap().unwrap()
    }

    #[test]
    fn a_pong_on_a_used_id_is_fine_and_named_by_what_was_sent() {
        let used = |id| (id == 5).then(|| vec!["core.ping".to_owned()]);
        let features = check_reply(&view(&used, &|_| false), &raw(5, Message::Pong)).unwrap();
        assert_eq!(features, ["core.ping->core.pong"]);
    }

    #[test]
    fn replies_on_foreign_or_unused_ids_are_findings() {
        let used = |_| Some(vec!["core.ping".to_owned()]);
        let foreign = check_reply(&view(&used, &|_| false), &raw(100, Message::Pong));
        assert_eq!(foreign.unwrap_err().kind, FindingKind::ForeignId);
        let never = |_| None;
        let unused = check_reply(&view(&never, &|_| false), &raw(5, Message::Pong));
        assert_eq!(unused.unwrap_err().kind, FindingKind::UnusedId);
    }

    #[test]
    fn a_session_event_on_an_id_that_opened_none_is_a_finding() {
        let used = |_| Some(vec!["core.exec.stdin".to_owned()]);
        let exited = Message::ExecExited(moat_protocol::payload::exec::ExecExited { code: 0 });
        let found = check_reply(&view(&used, &|_| false), &raw(5, exited.clone()));
        assert_eq!(found.unwrap_err().kind, FindingKind::UnopenedSession);
        assert!(check_reply(&view(&used, &|_| true), &raw(5, exited)).is_ok());
    }

    #[test]
    fn the_documented_unknown_session_answers_are_not_findings() {
        let fs_data = |_| Some(vec!["core.fs.data".to_owned()]);
        let refused =
            FsResponse { ok: false, error: Some("unknown write session: 5".into()), data: None };
        let reply = raw(5, Message::FsResponse(refused));
        assert!(check_reply(&view(&fs_data, &|_| false), &reply).is_ok());
        let tcp_eof = |_| Some(vec!["core.tcp.eof".to_owned()]);
        let failed =
            Message::TcpFailed(moat_protocol::payload::tcp::TcpFailed { error: "x".into() });
        assert!(check_reply(&view(&tcp_eof, &|_| false), &raw(5, failed.clone())).is_ok());
        let ping = |_| Some(vec!["core.ping".to_owned()]);
        let found = check_reply(&view(&ping, &|_| false), &raw(5, failed));
        assert_eq!(found.unwrap_err().kind, FindingKind::UnopenedSession);
        let ok = FsResponse { ok: true, error: None, data: None };
        let found = check_reply(&view(&fs_data, &|_| false), &raw(5, Message::FsResponse(ok)));
        assert_eq!(found.unwrap_err().kind, FindingKind::UnopenedSession);
    }

    #[test]
    fn a_known_type_with_wrong_flags_is_a_malformed_reply() {
        let used = |_| Some(vec!["core.ping".to_owned()]);
        let mut frame = raw(5, Message::Pong);
        frame.flags = Flags::NONE;
        let found = check_reply(&view(&used, &|_| false), &frame);
        assert_eq!(found.unwrap_err().kind, FindingKind::MalformedReply);
    }
}
