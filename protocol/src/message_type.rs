//! The catalogue of message types (PROTOCOL.md §3, §5): wire names, the generation each type was
//! introduced in, the exact flags byte each must carry, and its direction.
//!
//! Every table here is an exhaustive `match`, so adding a type fails to compile until each table
//! knows it.

use std::fmt;

use crate::flags::Flags;

/// Who sends a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host, relay or client to the guest agent.
    HostToGuest,
    /// Guest agent to host.
    GuestToHost,
    /// Either side.
    Both,
}

/// The 46 message types of generation 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// `core.bootstrap`
    Bootstrap,
    /// `core.init.resolved`
    InitResolved,
    /// `core.init.ack`
    InitAck,
    /// `core.ready`
    Ready,
    /// `core.shutdown`
    Shutdown,
    /// `core.relay.client.disconnected`
    RelayClientDisconnected,
    /// `core.clock.sync`
    ClockSync,
    /// `core.ping`
    Ping,
    /// `core.pong`
    Pong,
    /// `core.touch`
    Touch,
    /// `core.touched`
    Touched,
    /// `core.error`
    Error,
    /// `core.workload.freeze`
    WorkloadFreeze,
    /// `core.workload.frozen`
    WorkloadFrozen,
    /// `core.workload.thaw`
    WorkloadThaw,
    /// `core.workload.thawed`
    WorkloadThawed,
    /// `core.workload.transport.credit`
    WorkloadTransportCredit,
    /// `core.root_disk.prepare`
    RootDiskPrepare,
    /// `core.root_disk.grow`
    RootDiskGrow,
    /// `core.root_disk.state`
    RootDiskState,
    /// `core.bulk.accepted`
    BulkAccepted,
    /// `core.bulk.credit`
    BulkCredit,
    /// `core.bulk.finish`
    BulkFinish,
    /// `core.bulk.cancel`
    BulkCancel,
    /// `core.exec.request`
    ExecRequest,
    /// `core.exec.started`
    ExecStarted,
    /// `core.exec.stdin`
    ExecStdin,
    /// `core.exec.stdin.error`
    ExecStdinError,
    /// `core.exec.stdout`
    ExecStdout,
    /// `core.exec.stderr`
    ExecStderr,
    /// `core.exec.exited`
    ExecExited,
    /// `core.exec.failed`
    ExecFailed,
    /// `core.exec.resize`
    ExecResize,
    /// `core.exec.signal`
    ExecSignal,
    /// `core.exec.output.ack`
    ExecOutputAck,
    /// `core.exec.stdin.ack`
    ExecStdinAck,
    /// `core.fs.request`
    FsRequest,
    /// `core.fs.response`
    FsResponse,
    /// `core.fs.data`
    FsData,
    /// `core.tcp.connect`
    TcpConnect,
    /// `core.tcp.connected`
    TcpConnected,
    /// `core.tcp.data`
    TcpData,
    /// `core.tcp.eof`
    TcpEof,
    /// `core.tcp.close`
    TcpClose,
    /// `core.tcp.closed`
    TcpClosed,
    /// `core.tcp.failed`
    TcpFailed,
}

impl MessageType {
    /// Every type, in catalogue order.
    pub const ALL: [MessageType; 46] = [
        MessageType::Bootstrap,
        MessageType::InitResolved,
        MessageType::InitAck,
        MessageType::Ready,
        MessageType::Shutdown,
        MessageType::RelayClientDisconnected,
        MessageType::ClockSync,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Touch,
        MessageType::Touched,
        MessageType::Error,
        MessageType::WorkloadFreeze,
        MessageType::WorkloadFrozen,
        MessageType::WorkloadThaw,
        MessageType::WorkloadThawed,
        MessageType::WorkloadTransportCredit,
        MessageType::RootDiskPrepare,
        MessageType::RootDiskGrow,
        MessageType::RootDiskState,
        MessageType::BulkAccepted,
        MessageType::BulkCredit,
        MessageType::BulkFinish,
        MessageType::BulkCancel,
        MessageType::ExecRequest,
        MessageType::ExecStarted,
        MessageType::ExecStdin,
        MessageType::ExecStdinError,
        MessageType::ExecStdout,
        MessageType::ExecStderr,
        MessageType::ExecExited,
        MessageType::ExecFailed,
        MessageType::ExecResize,
        MessageType::ExecSignal,
        MessageType::ExecOutputAck,
        MessageType::ExecStdinAck,
        MessageType::FsRequest,
        MessageType::FsResponse,
        MessageType::FsData,
        MessageType::TcpConnect,
        MessageType::TcpConnected,
        MessageType::TcpData,
        MessageType::TcpEof,
        MessageType::TcpClose,
        MessageType::TcpClosed,
        MessageType::TcpFailed,
    ];

    /// The wire name carried in the envelope's `t`.
    pub const fn wire_name(self) -> &'static str {
        match self {
            MessageType::Bootstrap => "core.bootstrap",
            MessageType::InitResolved => "core.init.resolved",
            MessageType::InitAck => "core.init.ack",
            MessageType::Ready => "core.ready",
            MessageType::Shutdown => "core.shutdown",
            MessageType::RelayClientDisconnected => "core.relay.client.disconnected",
            MessageType::ClockSync => "core.clock.sync",
            MessageType::Ping => "core.ping",
            MessageType::Pong => "core.pong",
            MessageType::Touch => "core.touch",
            MessageType::Touched => "core.touched",
            MessageType::Error => "core.error",
            MessageType::WorkloadFreeze => "core.workload.freeze",
            MessageType::WorkloadFrozen => "core.workload.frozen",
            MessageType::WorkloadThaw => "core.workload.thaw",
            MessageType::WorkloadThawed => "core.workload.thawed",
            MessageType::WorkloadTransportCredit => "core.workload.transport.credit",
            MessageType::RootDiskPrepare => "core.root_disk.prepare",
            MessageType::RootDiskGrow => "core.root_disk.grow",
            MessageType::RootDiskState => "core.root_disk.state",
            MessageType::BulkAccepted => "core.bulk.accepted",
            MessageType::BulkCredit => "core.bulk.credit",
            MessageType::BulkFinish => "core.bulk.finish",
            MessageType::BulkCancel => "core.bulk.cancel",
            MessageType::ExecRequest => "core.exec.request",
            MessageType::ExecStarted => "core.exec.started",
            MessageType::ExecStdin => "core.exec.stdin",
            MessageType::ExecStdinError => "core.exec.stdin.error",
            MessageType::ExecStdout => "core.exec.stdout",
            MessageType::ExecStderr => "core.exec.stderr",
            MessageType::ExecExited => "core.exec.exited",
            MessageType::ExecFailed => "core.exec.failed",
            MessageType::ExecResize => "core.exec.resize",
            MessageType::ExecSignal => "core.exec.signal",
            MessageType::ExecOutputAck => "core.exec.output.ack",
            MessageType::ExecStdinAck => "core.exec.stdin.ack",
            MessageType::FsRequest => "core.fs.request",
            MessageType::FsResponse => "core.fs.response",
            MessageType::FsData => "core.fs.data",
            MessageType::TcpConnect => "core.tcp.connect",
            MessageType::TcpConnected => "core.tcp.connected",
            MessageType::TcpData => "core.tcp.data",
            MessageType::TcpEof => "core.tcp.eof",
            MessageType::TcpClose => "core.tcp.close",
            MessageType::TcpClosed => "core.tcp.closed",
            MessageType::TcpFailed => "core.tcp.failed",
        }
    }

    /// Looks a wire name up; `None` for a name this generation does not know.
    pub fn from_wire_name(name: &str) -> Option<MessageType> {
        Some(match name {
            "core.bootstrap" => MessageType::Bootstrap,
            "core.init.resolved" => MessageType::InitResolved,
            "core.init.ack" => MessageType::InitAck,
            "core.ready" => MessageType::Ready,
            "core.shutdown" => MessageType::Shutdown,
            "core.relay.client.disconnected" => MessageType::RelayClientDisconnected,
            "core.clock.sync" => MessageType::ClockSync,
            "core.ping" => MessageType::Ping,
            "core.pong" => MessageType::Pong,
            "core.touch" => MessageType::Touch,
            "core.touched" => MessageType::Touched,
            "core.error" => MessageType::Error,
            "core.workload.freeze" => MessageType::WorkloadFreeze,
            "core.workload.frozen" => MessageType::WorkloadFrozen,
            "core.workload.thaw" => MessageType::WorkloadThaw,
            "core.workload.thawed" => MessageType::WorkloadThawed,
            "core.workload.transport.credit" => MessageType::WorkloadTransportCredit,
            "core.root_disk.prepare" => MessageType::RootDiskPrepare,
            "core.root_disk.grow" => MessageType::RootDiskGrow,
            "core.root_disk.state" => MessageType::RootDiskState,
            "core.bulk.accepted" => MessageType::BulkAccepted,
            "core.bulk.credit" => MessageType::BulkCredit,
            "core.bulk.finish" => MessageType::BulkFinish,
            "core.bulk.cancel" => MessageType::BulkCancel,
            "core.exec.request" => MessageType::ExecRequest,
            "core.exec.started" => MessageType::ExecStarted,
            "core.exec.stdin" => MessageType::ExecStdin,
            "core.exec.stdin.error" => MessageType::ExecStdinError,
            "core.exec.stdout" => MessageType::ExecStdout,
            "core.exec.stderr" => MessageType::ExecStderr,
            "core.exec.exited" => MessageType::ExecExited,
            "core.exec.failed" => MessageType::ExecFailed,
            "core.exec.resize" => MessageType::ExecResize,
            "core.exec.signal" => MessageType::ExecSignal,
            "core.exec.output.ack" => MessageType::ExecOutputAck,
            "core.exec.stdin.ack" => MessageType::ExecStdinAck,
            "core.fs.request" => MessageType::FsRequest,
            "core.fs.response" => MessageType::FsResponse,
            "core.fs.data" => MessageType::FsData,
            "core.tcp.connect" => MessageType::TcpConnect,
            "core.tcp.connected" => MessageType::TcpConnected,
            "core.tcp.data" => MessageType::TcpData,
            "core.tcp.eof" => MessageType::TcpEof,
            "core.tcp.close" => MessageType::TcpClose,
            "core.tcp.closed" => MessageType::TcpClosed,
            "core.tcp.failed" => MessageType::TcpFailed,
            _ => return None,
        })
    }

    /// The generation that introduced this type.
    pub const fn introduced_in(self) -> u8 {
        match self {
            MessageType::Ready
            | MessageType::InitResolved
            | MessageType::InitAck
            | MessageType::Shutdown
            | MessageType::RelayClientDisconnected
            | MessageType::ClockSync
            | MessageType::ExecRequest
            | MessageType::ExecStarted
            | MessageType::ExecStdin
            | MessageType::ExecStdinError
            | MessageType::ExecStdout
            | MessageType::ExecStderr
            | MessageType::ExecExited
            | MessageType::ExecFailed
            | MessageType::ExecResize
            | MessageType::ExecSignal => 1,
            MessageType::FsRequest | MessageType::FsResponse | MessageType::FsData => 2,
            MessageType::TcpConnect
            | MessageType::TcpConnected
            | MessageType::TcpData
            | MessageType::TcpEof
            | MessageType::TcpClose
            | MessageType::TcpClosed
            | MessageType::TcpFailed => 4,
            MessageType::Error => 5,
            MessageType::Ping | MessageType::Pong | MessageType::Touch | MessageType::Touched => 6,
            MessageType::Bootstrap => 7,
            MessageType::BulkAccepted
            | MessageType::BulkCredit
            | MessageType::BulkFinish
            | MessageType::BulkCancel => 8,
            MessageType::WorkloadFreeze
            | MessageType::WorkloadFrozen
            | MessageType::WorkloadThaw
            | MessageType::WorkloadThawed
            | MessageType::WorkloadTransportCredit
            | MessageType::RootDiskPrepare
            | MessageType::RootDiskGrow
            | MessageType::RootDiskState => 9,
            MessageType::ExecOutputAck | MessageType::ExecStdinAck => 10,
        }
    }

    /// The exact flags byte frames of this type carry.
    pub const fn flags(self) -> Flags {
        match self {
            MessageType::Pong
            | MessageType::Touched
            | MessageType::WorkloadFrozen
            | MessageType::WorkloadThawed
            | MessageType::RootDiskState
            | MessageType::Error
            | MessageType::ExecExited
            | MessageType::ExecFailed
            | MessageType::FsResponse
            | MessageType::TcpClosed
            | MessageType::TcpFailed => Flags::TERMINAL,
            MessageType::ExecRequest | MessageType::FsRequest | MessageType::TcpConnect => {
                Flags::SESSION_START
            }
            MessageType::Shutdown => Flags::SHUTDOWN,
            MessageType::Bootstrap
            | MessageType::InitResolved
            | MessageType::InitAck
            | MessageType::Ready
            | MessageType::RelayClientDisconnected
            | MessageType::ClockSync
            | MessageType::Ping
            | MessageType::Touch
            | MessageType::WorkloadFreeze
            | MessageType::WorkloadThaw
            | MessageType::WorkloadTransportCredit
            | MessageType::RootDiskPrepare
            | MessageType::RootDiskGrow
            | MessageType::BulkAccepted
            | MessageType::BulkCredit
            | MessageType::BulkFinish
            | MessageType::BulkCancel
            | MessageType::ExecStarted
            | MessageType::ExecStdin
            | MessageType::ExecStdinError
            | MessageType::ExecStdout
            | MessageType::ExecStderr
            | MessageType::ExecResize
            | MessageType::ExecSignal
            | MessageType::ExecOutputAck
            | MessageType::ExecStdinAck
            | MessageType::FsData
            | MessageType::TcpConnected
            | MessageType::TcpData
            | MessageType::TcpEof
            | MessageType::TcpClose => Flags::NONE,
        }
    }

    /// Who sends this type.
    pub const fn direction(self) -> Direction {
        match self {
            MessageType::Bootstrap
            | MessageType::InitAck
            | MessageType::Shutdown
            | MessageType::RelayClientDisconnected
            | MessageType::ClockSync
            | MessageType::Ping
            | MessageType::Touch
            | MessageType::WorkloadFreeze
            | MessageType::WorkloadThaw
            | MessageType::RootDiskPrepare
            | MessageType::RootDiskGrow
            | MessageType::ExecRequest
            | MessageType::ExecStdin
            | MessageType::ExecResize
            | MessageType::ExecSignal
            | MessageType::ExecOutputAck
            | MessageType::FsRequest
            | MessageType::TcpConnect
            | MessageType::TcpClose => Direction::HostToGuest,
            MessageType::InitResolved
            | MessageType::Ready
            | MessageType::Pong
            | MessageType::Touched
            | MessageType::Error
            | MessageType::WorkloadFrozen
            | MessageType::WorkloadThawed
            | MessageType::WorkloadTransportCredit
            | MessageType::RootDiskState
            | MessageType::BulkAccepted
            | MessageType::ExecStarted
            | MessageType::ExecStdinError
            | MessageType::ExecStdout
            | MessageType::ExecStderr
            | MessageType::ExecExited
            | MessageType::ExecFailed
            | MessageType::ExecStdinAck
            | MessageType::FsResponse
            | MessageType::TcpConnected
            | MessageType::TcpClosed
            | MessageType::TcpFailed => Direction::GuestToHost,
            MessageType::BulkCredit
            | MessageType::BulkFinish
            | MessageType::BulkCancel
            | MessageType::FsData
            | MessageType::TcpData
            | MessageType::TcpEof => Direction::Both,
        }
    }

    /// Whether this is one of the exec-control types capped at
    /// [`crate::limits::MAX_EXEC_CONTROL_FRAME_BYTES`] of complete wire frame.
    pub const fn is_exec_control(self) -> bool {
        matches!(
            self,
            MessageType::ExecOutputAck
                | MessageType::ExecStdinAck
                | MessageType::ExecSignal
                | MessageType::ExecResize
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_46_distinct_types_that_round_trip_by_name() {
        let mut names: Vec<&str> = MessageType::ALL.iter().map(|t| t.wire_name()).collect();
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_wire_name(t.wire_name()), Some(t));
            assert!(t.wire_name().starts_with("core."));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 46);
    }

    #[test]
    fn unknown_and_control_names_are_not_types() {
        assert_eq!(MessageType::from_wire_name("core.exec.teleport"), None);
        assert_eq!(MessageType::from_wire_name("control.exec.signal"), None);
        assert_eq!(MessageType::from_wire_name(""), None);
    }

    #[test]
    fn generation_table_counts_match_protocol() {
        let count = |g| MessageType::ALL.iter().filter(|t| t.introduced_in() == g).count();
        assert_eq!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map(count), [16, 3, 0, 7, 1, 4, 1, 4, 8, 2]);
    }

    #[test]
    fn flags_table_matches_protocol() {
        let with = |f: Flags| MessageType::ALL.iter().filter(|t| t.flags() == f).count();
        assert_eq!(with(Flags::TERMINAL), 11);
        assert_eq!(with(Flags::SESSION_START), 3);
        assert_eq!(with(Flags::SHUTDOWN), 1);
        assert_eq!(with(Flags::NONE), 31);
        assert!(MessageType::ALL.iter().all(|t| t.flags().is_wire_valid() && !t.flags().is_bulk()));
    }
}
