//! The corpus: inputs that showed a behaviour feature no earlier input showed (a new reply type
//! or error kind for a sent type, a new close, a new timing class). Kept in memory up to
//! [`FUZZ_MAX_CORPUS_ENTRIES`], and with `--corpus DIR` also as one JSON file per entry
//! (`<hash>.json`, the [`Input`] format of a reproducer's `steps`), loaded at start.
//!
//! It owns what to keep; picking entries to mutate is the fuzz loop's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::input::Input;
use super::rng::Rng;
use crate::limits::{FUZZ_MAX_CORPUS_ENTRIES, FUZZ_MAX_FILE_BYTES};

/// Inputs worth mutating, and every feature seen so far.
#[derive(Debug, Default)]
pub struct Corpus {
    entries: Vec<Input>,
    seen: BTreeSet<String>,
    dir: Option<PathBuf>,
}

/// A problem with the corpus directory.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Reading or writing the directory failed.
    #[error("corpus {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Corpus {
    /// A corpus stored in `dir` (created if missing) when given, with the entries already there
    /// (files that are not inputs, or too large, are skipped).
    pub fn open(dir: Option<&Path>) -> Result<Corpus, CorpusError> {
        let mut corpus = Corpus { dir: dir.map(Path::to_owned), ..Corpus::default() };
        let Some(dir) = dir else { return Ok(corpus) };
        let io = |source| CorpusError::Io { path: dir.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            if corpus.entries.len() >= FUZZ_MAX_CORPUS_ENTRIES {
                break;
            }
            let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= FUZZ_MAX_FILE_BYTES);
            let text = if small { std::fs::read_to_string(&path).ok() } else { None };
            if let Some(input) = text.and_then(|t| serde_json::from_str::<Input>(&t).ok()) {
                corpus.entries.push(input);
            }
        }
        Ok(corpus)
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A random entry.
    pub fn pick(&self, rng: &mut Rng) -> Option<&Input> {
        if self.entries.is_empty() { None } else { Some(rng.pick(&self.entries)) }
    }

    /// Keeps `input` if it showed a feature not seen before; returns the name it is stored
    /// under when kept. A full corpus still learns the features but keeps no more entries.
    pub fn offer(&mut self, input: &Input, features: &BTreeSet<String>) -> Option<String> {
        let new = features.iter().filter(|f| !self.seen.contains(*f)).count();
        self.seen.extend(features.iter().cloned());
        if new == 0 || self.entries.len() >= FUZZ_MAX_CORPUS_ENTRIES {
            return None;
        }
        self.entries.push(input.clone());
        let text = serde_json::to_string_pretty(input).unwrap_or_default();
        let name = format!("{:016x}", fnv1a(text.as_bytes()));
        if let Some(dir) = &self.dir {
            // A corpus file that cannot be written costs only that entry's persistence.
            let _ = std::fs::write(dir.join(format!("{name}.json")), text);
        }
        Some(name)
    }
}

/// FNV-1a, for stable file names of corpus entries.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::input::Step;

    fn features(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn only_inputs_with_a_new_feature_are_kept_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut corpus = Corpus::open(Some(dir.path())).unwrap();
        let input = Input { steps: vec![Step::Pause { ms: 1 }] };
        assert!(corpus.offer(&input, &features(&["a", "b"])).is_some());
        assert!(corpus.offer(&input, &features(&["b"])).is_none());
        assert!(corpus.offer(&input, &features(&["c"])).is_some());
        assert_eq!(corpus.len(), 2);
        let reopened = Corpus::open(Some(dir.path())).unwrap();
        assert_eq!(reopened.len(), 1, "both entries are the same input, so one file");
    }

    #[test]
    fn files_that_are_not_inputs_are_skipped_on_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("ok.json"), r#"{"steps":[{"step":"connect"}]}"#).unwrap();
        assert_eq!(Corpus::open(Some(dir.path())).unwrap().len(), 1);
    }
}
