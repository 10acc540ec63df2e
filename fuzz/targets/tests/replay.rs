//! Corpus replay on stable Rust: every committed seed in `fuzz/seeds/<target>/`, and every input of
//! a local corpus in `fuzz/corpus/<target>/` when there is one, runs through its target's body.
//! This keeps fuzz findings fixed without nightly or cargo-fuzz (DESIGN.md, "Tests, in layers" 6).

use std::collections::BTreeSet;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use moat_fuzz_targets::seeds::{self, GENERATED_PREFIX};
use moat_fuzz_targets::{TARGETS, target};

/// The files of `dir`, sorted; none when `dir` does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let target = target(name).expect("a known target");
    let seeds = inputs(&seeds::seeds_dir().join(name));
    assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seeds: run gen-seeds");
    let corpus = inputs(&seeds::corpus_dir().join(name));
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&corpus) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if panic::catch_unwind(|| (target.run)(&data)).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{name} fails on {} inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{name}: replayed {} seeds and {} corpus inputs", seeds.len(), corpus.len());
}

#[test]
fn replays_frame_split_inputs() {
    replay("frame_split");
}

#[test]
fn replays_message_decode_inputs() {
    replay("message_decode");
}

#[test]
fn replays_roundtrip_inputs() {
    replay("roundtrip");
}

#[test]
fn replays_exec_log_line_inputs() {
    replay("exec_log_line");
}

#[test]
fn replays_vector_text_inputs() {
    replay("vector_text");
}

#[test]
fn replays_relay_router_inputs() {
    replay("relay_router");
}

#[test]
fn replays_exec_log_reader_inputs() {
    replay("exec_log_reader");
}

#[test]
fn replays_agentd_dispatch_inputs() {
    replay("agentd_dispatch");
}

#[test]
fn replays_layer_unpack_inputs() {
    replay("layer_unpack");
}

#[test]
fn every_fuzz_binary_has_a_replayed_target() {
    let dir = seeds::fuzz_dir().join("fuzz_targets");
    let binaries: BTreeSet<String> = inputs(&dir)
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().expect("a file name").to_string_lossy().into_owned())
        .collect();
    let targets: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(binaries, targets, "fuzz/fuzz_targets/*.rs and TARGETS differ");
}

#[test]
fn committed_seeds_are_what_gen_seeds_writes() {
    let generated = seeds::generate();
    let mut stale = Vec::new();
    for seed in &generated {
        let path = seeds::seeds_dir().join(seed.target).join(&seed.name);
        if fs::read(&path).ok().as_deref() != Some(&seed.bytes[..]) {
            stale.push(format!("missing or different: {}", path.display()));
        }
    }
    for t in TARGETS {
        for path in inputs(&seeds::seeds_dir().join(t.name)) {
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            let known = generated.iter().any(|s| s.target == t.name && s.name == name);
            if name.starts_with(GENERATED_PREFIX) && !known {
                stale.push(format!("no longer generated: {}", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz/seeds/ is out of date; run `cargo run --manifest-path fuzz/targets/Cargo.toml --bin gen-seeds`:\n{}",
        stale.join("\n")
    );
}
