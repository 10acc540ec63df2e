//! latency: the round trip of `core.ping` → `core.pong` through the relay and agent, reported as
//! a figure. It fails only if a ping goes unanswered; the numbers are for reading, not judging.

use std::time::Duration;

use crate::limits::LATENCY_PINGS;
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// Pings sent and not measured first (connection and caches warm up).
const WARMUP_PINGS: usize = 5;

pub(crate) const CASES: &[Case] = &[Case {
    family: Family::Latency,
    name: "ping",
    needs_generation: 6,
    checks: "100 sequential pings are each answered; reports min, median, p99 and max round trip",
    run: ping,
}];

fn ping(ctx: &Ctx) -> CaseResult {
    let mut conn = ctx.connect()?;
    for _ in 0..WARMUP_PINGS {
        conn.ping()?;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(LATENCY_PINGS);
    for _ in 0..LATENCY_PINGS {
        samples.push(conn.ping()?);
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let (min, median, p99, max) = (samples[0], at(0.5), at(0.99), samples[samples.len() - 1]);
    Ok(Passed::note(format!(
        "median {:.0} µs, p99 {:.0} µs, min {:.0} µs, max {:.0} µs over {LATENCY_PINGS} pings",
        us(median),
        us(p99),
        us(min),
        us(max)
    ))
    .figure("pings", LATENCY_PINGS as f64)
    .figure("min_us", us(min))
    .figure("median_us", us(median))
    .figure("p99_us", us(p99))
    .figure("max_us", us(max)))
}
