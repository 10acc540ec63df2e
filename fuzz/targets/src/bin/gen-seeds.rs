//! Writes the generated seed corpora to `fuzz/seeds/<target>/` (or to the folder given as the
//! only argument), replacing the `gen-*` files and keeping every other file:
//!
//! ```text
//!  cargo run --manifest-path fuzz/targets/Cargo.toml --bin gen-seeds
//! ```

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use moat_fuzz_targets::TARGETS;
use moat_fuzz_targets::seeds::{self, GENERATED_PREFIX, Seed};

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args_os().nth(1).map_or_else(seeds::seeds_dir, PathBuf::from);
    let generated = seeds::generate();
    for target in TARGETS {
        let dir = out.join(target.name);
        fs::create_dir_all(&dir)?;
        remove_generated(&dir)?;
        let mine: Vec<&Seed> = generated.iter().filter(|s| s.target == target.name).collect();
        for seed in &mine {
            fs::write(dir.join(&seed.name), &seed.bytes)?;
        }
        let bytes: usize = mine.iter().map(|s| s.bytes.len()).sum();
        println!("{}: {} seeds, {bytes} bytes", dir.display(), mine.len());
    }
    Ok(())
}

fn remove_generated(dir: &Path) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(GENERATED_PREFIX) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
