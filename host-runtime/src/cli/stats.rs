//! `moat stats [NAME] [--json]`: parsing and printing only; the figures are [`crate::metrics`].
//! With `--json`, one snapshot (an object for NAME, an array for every running sandbox); without,
//! a table every [`STATS_REFRESH_MS`], redrawn in place on a terminal and appended as plain lines
//! otherwise, until the sandbox (or, for all, every sandbox) stops or the user interrupts.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::RuntimeError;
use crate::metrics::{self, Metrics};

/// How often the live table refreshes.
pub const STATS_REFRESH_MS: u64 = 1_000;

/// A parsed `moat stats`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StatsArgs {
    /// One sandbox (default: every running one).
    pub name: Option<String>,
    /// Print one JSON snapshot (else a table every second).
    #[arg(long)]
    pub json: bool,
}

/// Why `moat stats` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Reading the metrics failed (exit 1).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Writing the output failed (exit 1).
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `moat stats` against the moat home `home`, printing to stdout.
pub fn run(home: &Path, args: StatsArgs) -> Result<(), StatsError> {
    let mut out = std::io::stdout().lock();
    let dir = match &args.name {
        Some(name) => Some(crate::lifecycle::open_named_in(home, name)?),
        None => None,
    };
    if args.json {
        match &dir {
            Some(dir) => serde_json::to_writer_pretty(&mut out, &metrics::snapshot(dir)?),
            None => serde_json::to_writer_pretty(&mut out, &metrics::snapshot_all(home)?),
        }
        .map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let terminal = out.is_terminal();
    let interval = Duration::from_millis(STATS_REFRESH_MS);
    match dir {
        Some(dir) => {
            for metrics in metrics::MetricsStream::new(dir, interval) {
                print_table(&mut out, &[metrics?], terminal)?;
            }
        }
        None => loop {
            let all = metrics::snapshot_all(home)?;
            print_table(&mut out, &all, terminal)?;
            std::thread::sleep(
                interval.saturating_sub(Duration::from_millis(crate::limits::CPU_SAMPLE_MS)),
            );
        },
    }
    Ok(())
}

fn print_table(out: &mut impl Write, rows: &[Metrics], terminal: bool) -> std::io::Result<()> {
    if terminal {
        // Home and clear, so the table redraws in place.
        write!(out, "\x1b[H\x1b[2J")?;
    }
    out.write_all(table(rows).as_bytes())?;
    out.flush()
}

/// The table `moat stats` prints: a header and one line per sandbox.
pub fn table(rows: &[Metrics]) -> String {
    let mut text = format!(
        "{:<20} {:>7} {:>21} {:>19} {:>19} {:>10}\n",
        "NAME", "CPU %", "MEM / LIMIT", "DISK R / W", "NET RX / TX", "UPTIME"
    );
    for m in rows {
        let limit = m.memory_limit_bytes.map_or("-".to_owned(), human);
        let net = match (m.net_rx_bytes, m.net_tx_bytes) {
            (Some(rx), Some(tx)) => format!("{} / {}", human(rx), human(tx)),
            _ => "-".to_owned(),
        };
        text.push_str(&format!(
            "{:<20} {:>7.1} {:>21} {:>19} {:>19} {:>9}s\n",
            m.sandbox,
            m.cpu_percent,
            format!("{} / {}", human(m.memory_bytes), limit),
            format!("{} / {}", human(m.disk_read_bytes), human(m.disk_write_bytes)),
            net,
            m.uptime_ms / 1000,
        ));
    }
    text
}

/// Bytes in binary units with one decimal: `1.5MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Stats {
        #[command(flatten)]
        args: StatsArgs,
    }

    fn parse(line: &str) -> Result<StatsArgs, clap::Error> {
        use clap::Parser;
        Stats::try_parse_from(std::iter::once("stats").chain(line.split_whitespace()))
            .map(|parsed| parsed.args)
    }

    #[test]
    fn name_and_json_parse_in_any_order() {
        assert_eq!(parse("").unwrap(), StatsArgs { name: None, json: false });
        assert_eq!(
            parse("--json box").unwrap(),
            StatsArgs { name: Some("box".into()), json: true }
        );
        for bad in ["a b", "--frob", "-j"] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn table_rows_show_units_and_dashes_for_what_is_not_measured() {
        let row = Metrics {
            sandbox: "box".into(),
            timestamp_unix_ms: 0,
            uptime_ms: 61_500,
            cpu_percent: 12.34,
            cpu_time_ns: 0,
            memory_bytes: 3 << 20,
            memory_limit_bytes: None,
            disk_read_bytes: 512,
            disk_write_bytes: 1536,
            net_rx_bytes: None,
            net_tx_bytes: None,
            source: "vmm-process",
        };
        let text = table(&[row]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("box"), "{line}");
        for part in ["12.3", "3.0MiB / -", "512B / 1.5KiB", "61s"] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
}
