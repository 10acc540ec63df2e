//! Summaries of repeated timings.

use std::time::Duration;

/// Durations sorted ascending, summarised by percentile.
#[derive(Debug, Clone)]
pub(super) struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Sorts `samples`.
    pub(super) fn new(mut samples: Vec<Duration>) -> Samples {
        samples.sort_unstable();
        Samples { sorted: samples }
    }

    /// The `p`th percentile (0..=100, nearest rank); zero when there are no samples.
    pub(super) fn percentile(&self, p: u32) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.sorted.len() * p.min(100) as usize).div_ceil(100);
        self.sorted[rank.saturating_sub(1).min(self.sorted.len() - 1)]
    }
}

/// A duration in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in microseconds.
pub(super) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `bytes` moved in `elapsed`, in MiB/s (MiB = 2^20 bytes).
pub(super) fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(samples.percentile(50), Duration::from_millis(50));
        assert_eq!(samples.percentile(99), Duration::from_millis(99));
        assert_eq!(samples.percentile(100), Duration::from_millis(100));
        assert_eq!(samples.percentile(0), Duration::from_millis(1));
    }

    #[test]
    fn no_samples_give_zero() {
        assert_eq!(Samples::new(Vec::new()).percentile(50), Duration::ZERO);
    }

    #[test]
    fn rates_are_in_mebibytes() {
        assert_eq!(mib_per_s(2 * 1024 * 1024, Duration::from_secs(1)), 2.0);
    }
}
