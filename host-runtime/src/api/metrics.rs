//! Metrics from the library: [`Sandbox::metrics`] (a snapshot), [`Sandbox::metrics_stream`]
//! (one every interval) and [`Moat::metrics_all`] (every running sandbox); what they read is
//! [`crate::metrics`]. The same calls exist without async on [`super::blocking`].
//!
//! ```no_run
//! # async fn example() -> Result<(), moat_runtime::error::RuntimeError> {
//! use std::time::Duration;
//! use moat_runtime::api::Moat;
//!
//! let moat = Moat::from_env();
//! let sandbox = moat.get("web").await?;
//! let now = sandbox.metrics().await?;
//! println!("{:.1}% cpu, {} bytes", now.cpu_percent, now.memory_bytes);
//! let mut stream = sandbox.metrics_stream(Duration::from_secs(1));
//! while let Some(metrics) = stream.next().await {
//!     println!("{:.1}% cpu", metrics?.cpu_percent);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use super::{Moat, Sandbox, blocking};
use crate::error::RuntimeError;
use crate::metrics::{self, Metrics, MetricsStream};

impl blocking::Moat {
    /// A snapshot of every running sandbox, sorted by name.
    pub fn metrics_all(&self) -> Result<Vec<Metrics>, RuntimeError> {
        metrics::snapshot_all(self.home())
    }
}

impl blocking::Sandbox {
    /// A snapshot of what it uses (takes [`crate::limits::CPU_SAMPLE_MS`], for CPU percent).
    pub fn metrics(&self) -> Result<Metrics, RuntimeError> {
        metrics::snapshot(self.dir())
    }

    /// Its metrics every `interval`, until it stops (the stream's last item is that error).
    pub fn metrics_stream(&self, interval: Duration) -> MetricsStream {
        MetricsStream::new(self.dir().clone(), interval)
    }
}

impl Moat {
    /// A snapshot of every running sandbox, sorted by name.
    pub async fn metrics_all(&self) -> Result<Vec<Metrics>, RuntimeError> {
        let inner = self.inner.clone();
        super::blocking(move || inner.metrics_all()).await
    }
}

impl Sandbox {
    /// A snapshot of what it uses (takes [`crate::limits::CPU_SAMPLE_MS`], for CPU percent).
    pub async fn metrics(&self) -> Result<Metrics, RuntimeError> {
        let inner = self.inner.clone();
        super::blocking(move || inner.metrics()).await
    }

    /// Its metrics every `interval`, until it stops (the stream's last item is that error).
    pub fn metrics_stream(&self, interval: Duration) -> MetricsWatch {
        MetricsWatch { stream: Some(self.inner.metrics_stream(interval)) }
    }
}

/// [`Sandbox::metrics_stream`]: each `next` waits for the next sample on tokio's blocking pool.
#[derive(Debug)]
pub struct MetricsWatch {
    stream: Option<MetricsStream>,
}

impl MetricsWatch {
    /// The next sample; `None` after the item that ended the stream.
    pub async fn next(&mut self) -> Option<Result<Metrics, RuntimeError>> {
        let mut stream = self.stream.take()?;
        let sampled = tokio::task::spawn_blocking(move || (stream.next(), stream)).await;
        match sampled {
            Ok((item, stream)) => {
                if item.is_some() {
                    self.stream = Some(stream);
                }
                item
            }
            Err(err) => Some(Err(RuntimeError::BlockingTask(err))),
        }
    }
}
