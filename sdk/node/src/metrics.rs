//! `metrics()` and `metricsStream(intervalMs)`: microsandbox's `SandboxMetrics` and
//! `MetricsStream` over the library's sandbox metrics (`moat_runtime::metrics`).
//!
//! A stream samples only when `recv()` asks, one sample per interval, and ends (`null`) when
//! the sandbox stops.

use std::time::Duration;

use moat_runtime::error::RuntimeError;
use moat_runtime::metrics::{Metrics, MetricsStream as LibStream};
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::error::{NodeError, Result};

/// What a sandbox uses at one moment.
#[napi(object)]
pub struct SandboxMetrics {
    /// CPU used since the previous sample, in percent of one CPU.
    pub cpu_percent: f64,
    /// CPU time of everything it ran, in nanoseconds.
    pub vcpu_time_ns: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: f64,
    /// Its memory limit in bytes (absent when none is set).
    pub memory_limit_bytes: Option<f64>,
    /// Bytes read from storage.
    pub disk_read_bytes: f64,
    /// Bytes written to storage.
    pub disk_write_bytes: f64,
    /// Bytes received on its network interfaces but loopback (absent when not measured).
    pub net_rx_bytes: Option<f64>,
    /// Bytes sent on its network interfaces but loopback (absent when not measured).
    pub net_tx_bytes: Option<f64>,
    /// How long its sandbox process has run, in ms.
    pub uptime_ms: f64,
    /// When it was measured, ms since the epoch.
    pub timestamp_ms: f64,
}

impl SandboxMetrics {
    pub(crate) fn of(metrics: &Metrics) -> SandboxMetrics {
        SandboxMetrics {
            cpu_percent: metrics.cpu_percent,
            vcpu_time_ns: metrics.cpu_time_ns as f64,
            memory_bytes: metrics.memory_bytes as f64,
            memory_limit_bytes: metrics.memory_limit_bytes.map(|n| n as f64),
            disk_read_bytes: metrics.disk_read_bytes as f64,
            disk_write_bytes: metrics.disk_write_bytes as f64,
            net_rx_bytes: metrics.net_rx_bytes.map(|n| n as f64),
            net_tx_bytes: metrics.net_tx_bytes.map(|n| n as f64),
            uptime_ms: metrics.uptime_ms as f64,
            timestamp_ms: metrics.timestamp_unix_ms as f64,
        }
    }
}

/// `intervalMs`: a positive, finite number of milliseconds.
pub(crate) fn interval(ms: f64) -> Result<Duration> {
    if !(ms.is_finite() && ms >= 1.0) {
        return Err(NodeError::InvalidArgument(format!(
            "intervalMs must be a number of milliseconds of at least 1, not {ms}"
        )));
    }
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| NodeError::InvalidArgument(format!("intervalMs {ms} is too large")))
}

/// A sandbox's metrics, one sample per interval (async-iterable).
#[napi]
pub struct MetricsStream {
    /// `None` once the sandbox stopped or a sample failed.
    stream: Mutex<Option<LibStream>>,
}

impl MetricsStream {
    pub(crate) fn new(stream: LibStream) -> MetricsStream {
        MetricsStream { stream: Mutex::new(Some(stream)) }
    }
}

#[napi]
impl MetricsStream {
    /// The next sample, an interval after the previous one; `null` once the sandbox stopped.
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<SandboxMetrics>> {
        let mut guard = self.stream.lock().await;
        let Some(mut stream) = guard.take() else { return Ok(None) };
        let sampled = tokio::task::spawn_blocking(move || (stream.next(), stream)).await;
        match sampled {
            Ok((Some(Ok(metrics)), stream)) => {
                *guard = Some(stream);
                Ok(Some(SandboxMetrics::of(&metrics)))
            }
            Ok((None, _)) | Ok((Some(Err(RuntimeError::NotRunning { .. })), _)) => Ok(None),
            Ok((Some(Err(err)), _)) => Err(NodeError::from(err).into()),
            Err(join) => Err(NodeError::Worker(join.to_string()).into()),
        }
    }
}
