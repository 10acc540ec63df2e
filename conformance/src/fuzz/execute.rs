//! Runs one [`Input`] against a peer's socket: opens the clients, turns each symbolic step into
//! bytes (through `moat-protocol`'s encoders, and [`super::raw`] for bad lengths), reads replies
//! after every step with short bounded waits, checks each reply with the oracle, and at the end
//! pings every client still open and frame-aligned. Every read and write is bounded, so a hung
//! peer is a finding, never a hung fuzzer.
//!
//! It does not decide what is a bug ([`super::oracle`]) and does not run the after-input checks
//! that need every client gone (the fresh client, `--pid`); [`super::trial`] does those.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use moat_protocol::{Flags, Message, MessageFrame, MessageType, RawFrame, UnknownMessage};

use super::generate::{is_follow_up, opens_session};
use super::input::{Body, FrameSpec, IdSpec, Input, OutsideId, Step};
use super::oracle::{self, ClientView, Finding, FindingKind};
use super::raw;
use super::transcript::Transcript;
use crate::client::{Conn, Deadline};
use crate::error::ClientError;
use crate::limits::{
    FUZZ_FINAL_IDLE, FUZZ_FINAL_READ_MAX, FUZZ_HANDSHAKE_BOUND, FUZZ_MAX_CONNS,
    FUZZ_MAX_REPLY_FRAMES, FUZZ_REPLY_IDLE, FUZZ_STEP_READ_MAX, FUZZ_WRITE_TIMEOUT,
    SUITE_GENERATION,
};

/// Pause between single-frame reads of a slow-read step.
const SLOW_READ_PAUSE: Duration = Duration::from_millis(10);

/// How long a client's reads may go on in all (each read is bounded far tighter).
const CONN_LIFETIME: Duration = Duration::from_secs(120);

/// What running one input showed.
#[derive(Debug, Default)]
pub struct Executed {
    /// Behaviour features (reply kinds per sent type, closes, timing classes).
    pub features: BTreeSet<String>,
    /// The first bug seen, if any.
    pub finding: Option<Finding>,
    /// What was sent and received.
    pub transcript: Transcript,
}

/// One client connection of an input and what it has sent.
struct Client {
    conn: Conn,
    /// Ids in the order frames were sent on them.
    sent: Vec<u32>,
    /// The type names sent on each id, in order.
    types: HashMap<u32, Vec<String>>,
    /// Ids that opened a session, in order.
    sessions: Vec<u32>,
    opened: HashSet<u32>,
    /// Every frame sent so far is one the relay must forward: closing this client is a bug.
    admissible: bool,
    /// The byte stream is at a frame boundary (no truncated frame, no bad length sent).
    aligned: bool,
    /// Sends and reads stop once the peer closed it.
    closed: bool,
}

/// Runs inputs against one socket.
#[derive(Debug, Clone)]
pub struct Executor {
    socket: std::path::PathBuf,
    ping_bound: Duration,
}

impl Executor {
    /// An executor for the peer at `socket`, allowing `ping_bound` per ping.
    pub fn new(socket: &Path, ping_bound: Duration) -> Executor {
        Executor { socket: socket.to_owned(), ping_bound }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The ping bound.
    pub fn ping_bound(&self) -> Duration {
        self.ping_bound
    }

    /// Runs `input`; every client it opened is closed when this returns.
    pub fn run(&self, input: &Input) -> Executed {
        let mut run =
            Run { ex: self, clients: Vec::new(), out: Executed::default(), frames_read: 0 };
        run.connect();
        for (k, step) in input.steps.iter().enumerate() {
            if run.out.finding.is_some() {
                break;
            }
            run.out.transcript.line(format!("step {}: {}", k + 1, Transcript::step(step)));
            let sent_at = Instant::now();
            run.step(step);
            run.drain(FUZZ_REPLY_IDLE, FUZZ_STEP_READ_MAX, Some((step, sent_at)));
        }
        if run.out.finding.is_none() {
            run.drain(FUZZ_FINAL_IDLE, FUZZ_FINAL_READ_MAX, None);
        }
        if run.out.finding.is_none() {
            run.ping_open_clients();
        }
        run.out
    }
}

struct Run<'a> {
    ex: &'a Executor,
    clients: Vec<Option<Client>>,
    out: Executed,
    frames_read: usize,
}

impl Run<'_> {
    fn find(&mut self, finding: Finding) {
        self.out.transcript.line(format!("FINDING ({:?}): {}", finding.kind, finding.detail));
        if self.out.finding.is_none() {
            self.out.finding = Some(finding);
        }
    }

    fn connect(&mut self) {
        if self.clients.len() >= usize::from(FUZZ_MAX_CONNS) {
            return;
        }
        let index = self.clients.len() as u8;
        match Conn::connect(&self.ex.socket, Deadline::after(FUZZ_HANDSHAKE_BOUND)) {
            Ok(mut conn) => {
                conn.set_deadline(Deadline::after(CONN_LIFETIME));
                let range = conn.range();
                self.out.transcript.line(format!(
                    "  conn {index}: range [{}, {}), ready v {}",
                    range.start,
                    range.end_exclusive,
                    conn.ready_v()
                ));
                self.clients.push(Some(Client {
                    conn,
                    sent: Vec::new(),
                    types: HashMap::new(),
                    sessions: Vec::new(),
                    opened: HashSet::new(),
                    admissible: true,
                    aligned: true,
                    closed: false,
                }));
            }
            Err(e) => {
                self.clients.push(None);
                self.find(Finding::new(
                    FindingKind::NoHandshake,
                    format!("conn {index}: a new client got no handshake: {e}"),
                ));
            }
        }
    }

    fn client(&mut self, conn: u8) -> Option<&mut Client> {
        self.clients.get_mut(usize::from(conn))?.as_mut().filter(|c| !c.closed)
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Connect => self.connect(),
            Step::Send { conn, frame } => self.send(*conn, frame, None),
            Step::Truncated { conn, frame, keep } => self.send(*conn, frame, Some(*keep)),
            Step::BadLength { conn, len } => {
                let Some(client) = self.client(*conn) else { return };
                let id = client.conn.next_id().unwrap_or(client.conn.range().start);
                client.note_sent(id, "(bad length)", false);
                client.admissible = false;
                client.aligned = false;
                let bytes = raw::bad_length_frame(*len, id);
                self.write(*conn, &bytes);
            }
            Step::Flood { conn, count } => {
                let Some(client) = self.client(*conn) else { return };
                let mut bytes = Vec::new();
                for _ in 0..*count {
                    let Ok(id) = client.conn.next_id() else { break };
                    client.note_sent(id, MessageType::Ping.wire_name(), false);
                    let ping = MessageFrame { id, v: SUITE_GENERATION, message: Message::Ping };
                    if ping.encode(&mut bytes).is_err() {
                        break;
                    }
                }
                self.write(*conn, &bytes);
            }
            Step::SlowRead { conn, ms } => {
                self.slow_read(*conn, Duration::from_millis(u64::from(*ms)))
            }
            Step::Disconnect { conn } => {
                if let Some(slot) = self.clients.get_mut(usize::from(*conn)) {
                    *slot = None;
                }
            }
            Step::Pause { ms } => {
                let until = Instant::now() + Duration::from_millis(u64::from(*ms));
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    self.drain(left.min(FUZZ_REPLY_IDLE), left, None);
                    if self.out.finding.is_some() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends `frame` on `conn`, whole or (with `keep`) only its first bytes.
    fn send(&mut self, conn: u8, spec: &FrameSpec, keep: Option<u32>) {
        let Some(client) = self.client(conn) else { return };
        let (id, reused) = client.resolve(spec.id);
        let (t, known) = match &spec.body {
            Body::Envelope { t, .. } => (t.clone(), MessageType::from_wire_name(t)),
            Body::Raw { .. } => ("(raw body)".to_owned(), None),
        };
        let flags = Flags::from_bits(spec.flags.unwrap_or(known.map_or(0, |k| k.flags().bits())));
        let bytes = match &spec.body {
            Body::Envelope { t, p } => {
                let message =
                    Message::Unknown(UnknownMessage { t: t.clone(), flags, payload: p.clone() });
                MessageFrame { id, v: spec.v, message }.to_bytes()
            }
            Body::Raw { bytes } => RawFrame { id, flags, body: bytes.clone().into() }.to_bytes(),
        };
        let mut bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => {
                self.out.transcript.line(format!("  (not sent: {e})"));
                return;
            }
        };
        let admissible = keep.is_none()
            && spec.flags.is_none()
            && matches!(spec.body, Body::Envelope { .. })
            && forwarded_type(&t, known)
            && id_admissible(id, client.conn.range())
            && (!reused || (client.opened.contains(&id) && known.is_some_and(is_follow_up)))
            && !(client.conn.exec_flow_control() && t.starts_with("core.exec."));
        client.admissible &= admissible;
        if let Some(keep) = keep {
            bytes.truncate((keep as usize).clamp(1, bytes.len().saturating_sub(1).max(1)));
            client.aligned = false;
        }
        let opens = keep.is_none() && known.is_some_and(opens_session);
        client.note_sent(id, &t, opens);
        self.out.transcript.line(format!("  conn {conn} -> id {id}: {} bytes", bytes.len()));
        self.write(conn, &bytes);
    }

    fn write(&mut self, conn: u8, bytes: &[u8]) {
        let Some(client) = self.client(conn) else { return };
        client.conn.set_deadline(Deadline::after(FUZZ_WRITE_TIMEOUT));
        let result = client.conn.send_bytes(bytes);
        client.conn.set_deadline(Deadline::after(CONN_LIFETIME));
        match result {
            Ok(()) => {}
            Err(ClientError::Timeout { .. }) => {
                self.out.features.insert("write_blocked".to_owned());
                self.out.transcript.line(format!("  conn {conn}: the peer stopped reading"));
            }
            Err(_) => self.closed_by_peer(conn, "a write failed"),
        }
    }

    fn closed_by_peer(&mut self, conn: u8, how: &str) {
        let Some(client) = self.client(conn) else { return };
        client.closed = true;
        let admissible = client.admissible;
        let last = client.sent.last().and_then(|id| client.types.get(id)?.last()).cloned();
        self.out.features.insert(format!("closed:{}", last.clone().unwrap_or_default()));
        self.out.transcript.line(format!("  conn {conn}: closed by the peer ({how})"));
        if admissible {
            self.find(Finding::new(
                FindingKind::ClosedAfterAdmissible,
                format!(
                    "conn {conn}: the peer closed the connection ({how}) although every frame it \
                     sent is one the relay must forward (last: {})",
                    last.unwrap_or_else(|| "none".to_owned())
                ),
            ));
        }
    }

    /// Reads replies on every open client until each is idle for `idle` (at most `max`).
    fn drain(&mut self, idle: Duration, max: Duration, timed: Option<(&Step, Instant)>) {
        for k in 0..self.clients.len() {
            let started = Instant::now();
            let mut first = true;
            while started.elapsed() < max && self.frames_read < FUZZ_MAX_REPLY_FRAMES {
                let Some(client) = self.client(k as u8) else { break };
                match client.conn.poll_raw(idle) {
                    Ok(Some(frame)) => {
                        if first {
                            if let Some((step, at)) =
                                timed.filter(|(s, _)| s.conn() == Some(k as u8))
                            {
                                self.out.features.insert(timing_feature(step, at.elapsed()));
                            }
                            first = false;
                        }
                        self.reply(k as u8, &frame);
                    }
                    Ok(None) => break,
                    Err(ClientError::Closed { .. }) => {
                        self.closed_by_peer(k as u8, "end of stream")
                    }
                    Err(ClientError::Frame(e)) => {
                        self.find(Finding::new(
                            FindingKind::MalformedReply,
                            format!("conn {k}: the reply stream is not framed: {e}"),
                        ));
                    }
                    Err(e) => self.closed_by_peer(k as u8, &e.to_string()),
                }
                if self.out.finding.is_some() {
                    return;
                }
            }
        }
    }

    fn reply(&mut self, conn: u8, frame: &RawFrame) {
        self.frames_read += 1;
        let Some(client) = self.client(conn) else { return };
        let checked = {
            let types = &client.types;
            let opened = &client.opened;
            let used = |id: u32| types.get(&id).cloned();
            let is_opened = |id: u32| opened.contains(&id);
            let range = client.conn.range();
            let view = ClientView { index: conn, range, used: &used, opened: &is_opened };
            oracle::check_reply(&view, frame)
        };
        let name = describe(frame);
        self.out.transcript.line(format!("  conn {conn} <- id {}: {name}", frame.id));
        match checked {
            Ok(features) => self.out.features.extend(features),
            Err(finding) => self.find(finding),
        }
    }

    fn slow_read(&mut self, conn: u8, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until {
            let Some(client) = self.client(conn) else { return };
            match client.conn.poll_raw(Duration::from_millis(1)) {
                Ok(Some(frame)) => self.reply(conn, &frame),
                Ok(None) => {}
                Err(ClientError::Closed { .. }) => {
                    return self.closed_by_peer(conn, "end of stream");
                }
                Err(e) => return self.closed_by_peer(conn, &e.to_string()),
            }
            if self.out.finding.is_some() {
                return;
            }
            std::thread::sleep(SLOW_READ_PAUSE);
        }
    }

    /// Every client still open and at a frame boundary must answer a ping within the bound.
    fn ping_open_clients(&mut self) {
        let bound = self.ex.ping_bound;
        for k in 0..self.clients.len() {
            let Some(client) = self.client(k as u8) else { continue };
            if !client.aligned {
                continue;
            }
            let Ok(id) = client.conn.next_id() else { continue };
            client.note_sent(id, MessageType::Ping.wire_name(), false);
            self.write(k as u8, &ping_bytes(id));
            let deadline = Instant::now() + bound;
            while let Some(client) = self.client(k as u8) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.find(Finding::new(
                        FindingKind::NoPong,
                        format!(
                            "conn {k}: no reply to core.ping within {} ms on a connection the \
                             peer kept open",
                            bound.as_millis()
                        ),
                    ));
                    return;
                }
                match client.conn.poll_raw(left) {
                    Ok(Some(frame)) => {
                        let pong = frame.id == id;
                        self.reply(k as u8, &frame);
                        if pong || self.out.finding.is_some() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(ClientError::Closed { .. }) => {
                        self.closed_by_peer(k as u8, "end of stream, waiting for core.pong");
                        break;
                    }
                    Err(e) => {
                        self.closed_by_peer(k as u8, &e.to_string());
                        break;
                    }
                }
            }
            if self.out.finding.is_some() {
                return;
            }
        }
    }
}

impl Client {
    fn note_sent(&mut self, id: u32, t: &str, opens: bool) {
        self.sent.push(id);
        self.types.entry(id).or_default().push(t.to_owned());
        if opens && self.opened.insert(id) {
            self.sessions.push(id);
        }
    }

    /// The id a spec names on this client, and whether it was used before.
    fn resolve(&mut self, spec: IdSpec) -> (u32, bool) {
        let range = self.conn.range();
        let id = match spec {
            IdSpec::Fresh => None,
            IdSpec::Session { nth } if !self.sessions.is_empty() => {
                Some(self.sessions[usize::from(nth) % self.sessions.len()])
            }
            IdSpec::Reuse { back } if !self.sent.is_empty() => {
                let back = usize::from(back) % self.sent.len();
                Some(self.sent[self.sent.len() - 1 - back])
            }
            IdSpec::Session { .. } | IdSpec::Reuse { .. } => None,
            IdSpec::Outside { which } => Some(match which {
                OutsideId::Zero => 0,
                OutsideId::Max => u32::MAX,
                OutsideId::End => range.end_exclusive,
                OutsideId::BeforeStart => range.start.wrapping_sub(1),
            }),
        };
        match id {
            Some(id) => (id, self.types.contains_key(&id)),
            None => (self.conn.next_id().unwrap_or(range.start), false),
        }
    }
}

/// Whether the relay must forward a frame of type `t` (PROTOCOL.md §13.4 rule 5, and moat's
/// documented rule 6: host-only lifecycle types are the host's alone). Unknown names count as
/// forwarded: a peer that cannot handle one must still not drop the client.
fn forwarded_type(t: &str, known: Option<MessageType>) -> bool {
    match known {
        None => !t.is_empty() && !t.starts_with("control."),
        Some(k) => !matches!(
            k,
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
        ),
    }
}

fn id_admissible(id: u32, range: moat_protocol::relay::IdRange) -> bool {
    id != 0 && id >= range.start && id < range.end_exclusive
}

fn ping_bytes(id: u32) -> Vec<u8> {
    MessageFrame { id, v: SUITE_GENERATION, message: Message::Ping }.to_bytes().unwrap_or_default()
}

fn describe(frame: &RawFrame) -> String {
    match moat_protocol::decode_frame(frame) {
        Ok(moat_protocol::Decoded::Message(m)) => match &m.message {
            Message::Error(e) => format!("core.error {:?}: {}", e.kind, e.message),
            other => format!("{} (flags {})", other.wire_name(), frame.flags),
        },
        Ok(_) => format!("a non-message record (flags {})", frame.flags),
        Err(e) => format!("undecodable (flags {}): {e}", frame.flags),
    }
}

/// The timing class of a step's first reply: what separates "answered at once" from "answered
/// after a timer" or "after a long stall".
fn timing_feature(step: &Step, after: Duration) -> String {
    let class = match after.as_millis() {
        0..=1 => "instant",
        2..=20 => "fast",
        21..=200 => "slow",
        _ => "stalled",
    };
    format!("timing:{}:{class}", step.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_host_only_types_are_not_forwarded_but_unknown_names_are() {
        assert!(forwarded_type("core.fuzz.unknown", None));
        assert!(!forwarded_type("control.exec.signal", None));
        assert!(!forwarded_type("", None));
        assert!(!forwarded_type("core.clock.sync", Some(MessageType::ClockSync)));
        assert!(forwarded_type("core.ping", Some(MessageType::Ping)));
    }

    #[test]
    fn ids_outside_the_range_or_zero_are_not_admissible() {
        let range = moat_protocol::relay::IdRange { start: 1, end_exclusive: 10 };
        assert!(id_admissible(1, range) && id_admissible(9, range));
        assert!(!id_admissible(0, range) && !id_admissible(10, range));
    }

    #[test]
    fn timing_classes_split_at_1_20_and_200_ms() {
        let step = Step::Pause { ms: 0 };
        assert_eq!(timing_feature(&step, Duration::from_millis(1)), "timing:pause:instant");
        assert_eq!(timing_feature(&step, Duration::from_millis(20)), "timing:pause:fast");
        assert_eq!(timing_feature(&step, Duration::from_secs(1)), "timing:pause:stalled");
    }
}
