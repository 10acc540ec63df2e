//! Pull progress: an indicatif bar on a terminal, plain lines otherwise (logs, CI, pipes).
//! The pull reports events; it never prints.

use std::io::IsTerminal;
use std::sync::Mutex;

/// What a pull reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest and config are in: this many layers, this many compressed bytes to fetch.
    Resolved {
        /// The canonical reference.
        reference: String,
        /// Layers in the image.
        layers: usize,
        /// Layers already in the store.
        cached: usize,
        /// Compressed bytes still to download.
        bytes: u64,
    },
    /// Bytes of a layer arrived.
    Bytes(u64),
    /// A layer was downloaded, verified, unpacked and committed.
    LayerDone {
        /// Its diff id.
        diff_id: String,
    },
    /// Every layer is in the store and the image is recorded.
    Done {
        /// The manifest digest.
        digest: String,
    },
}

/// Receives pull events (from the pulling thread).
pub trait PullProgress: Sync {
    /// One event.
    fn event(&self, event: PullEvent);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl PullProgress for Silent {
    fn event(&self, _: PullEvent) {}
}

/// Plain lines on stderr: one per layer and one at each end.
#[derive(Debug, Default)]
pub struct Lines {
    state: Mutex<(usize, usize)>,
}

impl PullProgress for Lines {
    fn event(&self, event: PullEvent) {
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            PullEvent::Resolved { reference, layers, cached, bytes } => {
                *state = (cached, layers);
                eprintln!(
                    "pulling {reference}: {layers} layers ({cached} already stored), {} to download",
                    human_bytes(bytes)
                );
            }
            PullEvent::Bytes(_) => {}
            PullEvent::LayerDone { diff_id } => {
                state.0 += 1;
                eprintln!("layer {}/{} {} unpacked", state.0, state.1, short(&diff_id));
            }
            PullEvent::Done { digest } => eprintln!("pulled {digest}"),
        }
    }
}

/// An indicatif bar of downloaded bytes, with the layer count in its message.
#[derive(Debug)]
pub struct Bar {
    bar: indicatif::ProgressBar,
    layers: Mutex<(usize, usize)>,
}

impl Default for Bar {
    fn default() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar { bar, layers: Mutex::new((0, 0)) }
    }
}

impl PullProgress for Bar {
    fn event(&self, event: PullEvent) {
        let Ok(mut layers) = self.layers.lock() else { return };
        match event {
            PullEvent::Resolved { reference, layers: total, cached, bytes } => {
                *layers = (cached, total);
                self.bar.set_length(bytes);
                self.bar.set_message(format!("{reference} layers {cached}/{total}"));
            }
            PullEvent::Bytes(n) => self.bar.inc(n),
            PullEvent::LayerDone { .. } => {
                layers.0 += 1;
                let message = self.bar.message();
                let name = message.split(" layers ").next().unwrap_or_default().to_owned();
                self.bar.set_message(format!("{name} layers {}/{}", layers.0, layers.1));
            }
            PullEvent::Done { digest } => {
                self.bar.finish_and_clear();
                eprintln!("pulled {digest}");
            }
        }
    }
}

/// The bar when stderr is a terminal, lines otherwise.
pub fn for_stderr() -> Box<dyn PullProgress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar::default())
    } else {
        Box::new(Lines::default())
    }
}

/// `12.3 MB`-style sizes (SI units, as docker prints them).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_printed_in_si_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
