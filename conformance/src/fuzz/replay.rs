//! The reproducer file: a failing input written by `fuzz` and run again by `replay`. JSON, so a
//! person can read and edit it; `version` says which shape it has.
//!
//! ```text
//!  {
//!    "format": "moat-conformance-fuzz-reproducer",
//!    "version": 1,
//!    "finding": { "kind": "no_pong", "detail": "conn 0: no reply to core.ping within 2000 ms ..." },
//!    "seed": 1234, "job": 0, "minimised": true,
//!    "steps": [ { "step": "send", "conn": 0, "frame": { "id": { "id": "fresh" }, "flags": null,
//!                 "v": 10, "body": { "body": "raw", "bytes": "a361760a" } } } ]
//!  }
//! ```
//!
//! `steps` has the [`Input`] shape (see [`super::input`]); corpus files hold `{"steps": [...]}`
//! alone. A replay runs the steps against a socket with the same oracle as the fuzzer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::input::{Input, Step};
use super::oracle::Finding;
use super::transcript::Transcript;
use crate::limits::FUZZ_MAX_FILE_BYTES;

/// The `format` field's value.
pub const FORMAT: &str = "moat-conformance-fuzz-reproducer";

/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// A reproducer file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reproducer {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for files this build writes.
    pub version: u32,
    /// What the fuzzer saw fail.
    pub finding: Finding,
    /// The run's `--seed`.
    pub seed: u64,
    /// The job that found it.
    pub job: usize,
    /// Whether minimisation finished (false when it stopped early).
    pub minimised: bool,
    /// The steps.
    pub steps: Vec<Step>,
}

/// A reproducer that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReproducerError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any reproducer.
    #[error("{path}: larger than {FUZZ_MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The path.
        path: String,
    },
    /// The file is not a reproducer.
    #[error("{path}: not a reproducer: {source}")]
    Parse {
        /// The path.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A reproducer of another format or version.
    #[error(
        "{path}: format {format:?} version {version}; this build reads {FORMAT:?} version {VERSION}"
    )]
    Version {
        /// The path.
        path: String,
        /// Its format.
        format: String,
        /// Its version.
        version: u32,
    },
}

impl Reproducer {
    /// The input it replays.
    pub fn input(&self) -> Input {
        Input { steps: self.steps.clone() }
    }

    /// Reads and checks a reproducer file.
    pub fn read(path: &Path) -> Result<Reproducer, ReproducerError> {
        let shown = path.display().to_string();
        let io = |source| ReproducerError::Io { path: shown.clone(), source };
        if std::fs::metadata(path).map_err(io)?.len() > FUZZ_MAX_FILE_BYTES {
            return Err(ReproducerError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let repro: Reproducer = serde_json::from_str(&text)
            .map_err(|source| ReproducerError::Parse { path: shown.clone(), source })?;
        if repro.format != FORMAT || repro.version != VERSION {
            return Err(ReproducerError::Version {
                path: shown,
                format: repro.format,
                version: repro.version,
            });
        }
        Ok(repro)
    }

    /// Writes `<dir>/<stem>.json` and the transcript `<dir>/<stem>.txt`; returns the JSON path.
    pub fn write(
        &self,
        dir: &Path,
        stem: &str,
        transcript: &Transcript,
    ) -> Result<PathBuf, ReproducerError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ReproducerError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&json, text + "\n").map_err(io(&json))?;
        let txt = dir.join(format!("{stem}.txt"));
        let header = format!(
            "moat-conformance fuzz reproducer ({} steps, seed {}, job {})\nfinding ({:?}): {}\n\n\
             replay: moat-conformance replay {} --socket PATH\n\n",
            self.steps.len(),
            self.seed,
            self.job,
            self.finding.kind,
            self.finding.detail,
            json.display()
        );
        std::fs::write(&txt, header + &transcript.to_string()).map_err(io(&txt))?;
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::oracle::FindingKind;

    fn sample() -> Reproducer {
        Reproducer {
            format: FORMAT.to_owned(),
            version: VERSION,
            finding: Finding::new(FindingKind::NoPong, "conn 0: no pong"),
            seed: 7,
            job: 1,
            minimised: true,
            steps: vec![Step::Pause { ms: 1 }],
        }
    }

    #[test]
    fn a_written_reproducer_reads_back_with_its_transcript_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut transcript = Transcript::default();
        transcript.line("step 1: pause 1 ms".to_owned());
        let path = sample().write(dir.path(), "repro", &transcript).unwrap();
        assert_eq!(Reproducer::read(&path).unwrap(), sample());
        let txt = std::fs::read_to_string(dir.path().join("repro.txt")).unwrap();
        assert!(txt.contains("finding (NoPong): conn 0: no pong") && txt.contains("pause 1 ms"));
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut newer = sample();
        newer.version = 2;
        let path = dir.path().join("newer.json");
        std::fs::write(&path, serde_json::to_string(&newer).unwrap()).unwrap();
        let e = Reproducer::read(&path).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("version 1"), "{e}");
    }
}
