//! Guest ports from the host, through the relay's TCP tunnel (generation 4): no guest network
//! is needed, the agent connects to the port on the sandbox's own loopback.
//!
//! ```text
//!  Sandbox::connect_tcp(port)              ─► TcpTunnel (AsyncRead + AsyncWrite)
//!  Sandbox::wait_for_listener(port, t)     ─► connect until the port accepts, or ListenerTimeout
//!  Sandbox::fetch(port, path)              ─► HTTP/1.1 GET ─► HttpResponse {status, headers, body}
//!  Sandbox::forward(listener, port, stop)  ─► each accepted connection ─► its own tunnel
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Sandbox;
use crate::limits::{
    FETCH_TIMEOUT_MS, LISTENER_POLL_MS, MAX_FETCH_RESPONSE_BYTES, MAX_FORWARDED_CONNECTIONS,
    POLL_INTERVAL_MS,
};
pub use crate::relay_client::tcp::{TcpTunnel, TunnelError};

/// Why a port call failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The tunnel could not be opened (the sandbox is not running, the port refused, ...).
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// Nothing listened on the port in time.
    #[error("guest port {port}: nothing accepted a connection within {timeout:?} (last: {last})")]
    ListenerTimeout {
        /// The guest port.
        port: u16,
        /// How long we tried.
        timeout: Duration,
        /// The last refusal.
        last: String,
    },
    /// The tunnel broke while the request or response was in flight.
    #[error("guest port {port}: {source}")]
    Io {
        /// The guest port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The response is not HTTP/1.x as [`Sandbox::fetch`] reads it.
    #[error("guest port {port}: bad HTTP response: {why}")]
    BadResponse {
        /// The guest port.
        port: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// The response is larger than [`MAX_FETCH_RESPONSE_BYTES`].
    #[error("guest port {port}: the response is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The guest port.
        port: u16,
        /// The limit.
        limit: usize,
    },
    /// The server took longer than [`FETCH_TIMEOUT_MS`].
    #[error("guest port {port}: no complete response within {timeout:?}")]
    FetchTimeout {
        /// The guest port.
        port: u16,
        /// The limit.
        timeout: Duration,
    },
    /// The path is not an absolute request target without spaces or line breaks.
    #[error("fetch path {0:?}: expected an absolute path such as /index.html")]
    BadPath(String),
}

/// An HTTP response read by [`Sandbox::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header fields, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Sandbox {
    /// Opens a TCP stream to `port` on the sandbox's loopback ([`TunnelError::Refused`] with
    /// the agent's reason when nothing listens there).
    pub async fn connect_tcp(&self, port: u16) -> Result<TcpTunnel, TunnelError> {
        let inner = self.inner.clone();
        super::blocking(move || inner.require_running()).await?;
        TcpTunnel::open(&self.socket(), port).await
    }

    /// Waits until something accepts connections on `port` inside the sandbox, trying every
    /// [`LISTENER_POLL_MS`]; [`PortError::ListenerTimeout`] after `timeout`. Each try that
    /// succeeds is a connection the guest program sees open and close at once.
    pub async fn wait_for_listener(&self, port: u16, timeout: Duration) -> Result<(), PortError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = "no connect attempt finished in time".to_owned();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.connect_tcp(port)).await {
                Ok(Ok(_tunnel)) => return Ok(()),
                Ok(Err(TunnelError::Refused { reason, .. })) => last = reason,
                Ok(Err(other)) => return Err(other.into()),
                // The deadline cut this try short: the last refusal still says why.
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PortError::ListenerTimeout { port, timeout, last });
            }
            tokio::time::sleep(Duration::from_millis(LISTENER_POLL_MS)).await;
        }
    }

    /// `GET path` over HTTP/1.1 to `port` inside the sandbox (`Connection: close`), reading at
    /// most [`MAX_FETCH_RESPONSE_BYTES`] within [`FETCH_TIMEOUT_MS`].
    pub async fn fetch(&self, port: u16, path: &str) -> Result<HttpResponse, PortError> {
        if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(PortError::BadPath(path.to_owned()));
        }
        let timeout = Duration::from_millis(FETCH_TIMEOUT_MS);
        let exchange = async {
            let mut tunnel = self.connect_tcp(port).await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: moat\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n"
            );
            let io = |source| PortError::Io { port, source };
            tunnel.write_all(request.as_bytes()).await.map_err(io)?;
            let mut raw = Vec::new();
            let limit = MAX_FETCH_RESPONSE_BYTES as u64 + 1;
            (&mut tunnel).take(limit).read_to_end(&mut raw).await.map_err(io)?;
            if raw.len() > MAX_FETCH_RESPONSE_BYTES {
                return Err(PortError::ResponseTooLarge { port, limit: MAX_FETCH_RESPONSE_BYTES });
            }
            parse_response(&raw).map_err(|why| PortError::BadResponse { port, why })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(PortError::FetchTimeout { port, timeout }))
    }

    /// Forwards every connection `listener` accepts to `port` inside the sandbox, each over its
    /// own tunnel, at most [`MAX_FORWARDED_CONNECTIONS`] at once (the rest wait to be
    /// accepted), until `stop` resolves or the sandbox is no longer running. A connection whose
    /// tunnel cannot open is closed and logged; the forwarding goes on.
    pub async fn forward(
        &self,
        listener: TcpListener,
        port: u16,
        stop: impl Future<Output = ()>,
    ) -> Result<(), TunnelError> {
        let slots = Arc::new(Semaphore::new(MAX_FORWARDED_CONNECTIONS));
        let ended = self.until_not_running();
        tokio::pin!(stop, ended);
        loop {
            let permit = tokio::select! {
                () = &mut stop => return Ok(()),
                result = &mut ended => return result,
                permit = Arc::clone(&slots).acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
            };
            let (stream, peer) = tokio::select! {
                () = &mut stop => return Ok(()),
                result = &mut ended => return result,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(LISTENER_POLL_MS)).await;
                        continue;
                    }
                },
            };
            let sandbox = self.clone();
            tokio::spawn(async move {
                carry(&sandbox, stream, peer, port).await;
                drop(permit);
            });
        }
    }

    /// Resolves once the sandbox is no longer running (`Ok`), or its state cannot be read.
    async fn until_not_running(&self) -> Result<(), TunnelError> {
        loop {
            let record = self.state().await?;
            if record.status != super::Status::Running {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

/// One forwarded connection: bytes both ways until both sides are done.
async fn carry(sandbox: &Sandbox, mut stream: TcpStream, peer: SocketAddr, port: u16) {
    let mut tunnel = match sandbox.connect_tcp(port).await {
        Ok(tunnel) => tunnel,
        Err(err) => {
            tracing::warn!(%peer, %err, "forwarded connection refused");
            return;
        }
    };
    if let Err(err) = tokio::io::copy_bidirectional(&mut stream, &mut tunnel).await {
        tracing::debug!(%peer, %err, "forwarded connection ended with an error");
    }
}

/// Parses an HTTP/1.x response: status line, header fields, then the body by
/// `Transfer-Encoding: chunked`, `Content-Length`, or the end of the stream.
fn parse_response(raw: &[u8]) -> Result<HttpResponse, &'static str> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the header")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "the header is not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("the status line does not start with HTTP/1.x");
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or("no three-digit status code")?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a header line without ':'")?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let response = HttpResponse { status, headers, body: Vec::new() };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| "a Content-Length that is not a number")?;
        rest.get(..len).ok_or("the body is shorter than its Content-Length")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { body, ..response })
}

/// The body of a `Transfer-Encoding: chunked` message (trailers are ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("a cut chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a cut chunk")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).ok_or("a cut chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_content_length_keeps_only_that_many_bytes() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello, extra";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.body, b"hello");
    }

    #[test]
    fn a_chunked_response_is_dechunked() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let response = parse_response(raw).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (404, &b"abcde"[..]));
    }

    #[test]
    fn a_response_without_a_length_runs_to_the_end_of_the_stream() {
        let response = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(response.body, b"all of it");
    }

    #[test]
    fn malformed_responses_are_refused_with_a_reason() {
        for (raw, why) in [
            (&b"SSH-2.0-OpenSSH\r\n"[..], "no end of the header"),
            (b"SSH-2.0 x\r\n\r\n", "the status line does not start with HTTP/1.x"),
            (b"HTTP/1.1 OK\r\n\r\n", "no three-digit status code"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                "the body is shorter than its Content-Length",
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab", "a cut chunk"),
        ] {
            assert_eq!(parse_response(raw), Err(why), "{}", String::from_utf8_lossy(raw));
        }
    }
}
