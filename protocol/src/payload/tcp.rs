//! Payloads of guest-originated TCP sessions (PROTOCOL.md §6.4, §10).

use serde::{Deserialize, Serialize};

use crate::payload::bulk::BulkOffer;

/// `core.tcp.connect`: ask the guest to connect to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpConnect {
    /// Host name or address, resolved in the guest.
    pub host: String,
    /// Port.
    pub port: u16,
    /// A raw-bulk offer (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkOffer>,
}

/// `core.tcp.failed`: the connect failed or the session broke (terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFailed {
    /// Why.
    pub error: String,
}
