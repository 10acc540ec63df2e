//! Metrics from the library: [`Sandbox::metrics`] (a snapshot), [`Sandbox::metrics_stream`]
//! (one every interval) and [`Moat::metrics_all`] (every running sandbox); what they read is
//! [`crate::metrics`].
//!
//! ```no_run
//! use std::time::Duration;
//! use moat_runtime::api::Moat;
//!
//! let moat = Moat::from_env();
//! let sandbox = moat.get("web")?;
//! let now = sandbox.metrics()?;
//! println!("{:.1}% cpu, {} bytes", now.cpu_percent, now.memory_bytes);
//! for metrics in sandbox.metrics_stream(Duration::from_secs(1)).take(3) {
//!     println!("{:.1}% cpu", metrics?.cpu_percent);
//! }
//! # Ok::<(), moat_runtime::error::RuntimeError>(())
//! ```

use std::time::Duration;

use super::{Moat, Sandbox};
use crate::error::RuntimeError;
use crate::metrics::{self, Metrics, MetricsStream};

impl Moat {
    /// A snapshot of every running sandbox, sorted by name.
    pub fn metrics_all(&self) -> Result<Vec<Metrics>, RuntimeError> {
        metrics::snapshot_all(self.home())
    }
}

impl Sandbox {
    /// A snapshot of what it uses (takes [`crate::limits::CPU_SAMPLE_MS`], for CPU percent).
    pub fn metrics(&self) -> Result<Metrics, RuntimeError> {
        metrics::snapshot(&self.dir)
    }

    /// Its metrics every `interval`, until it stops (the stream's last item is that error).
    pub fn metrics_stream(&self, interval: Duration) -> MetricsStream {
        MetricsStream::new(self.dir.clone(), interval)
    }
}
