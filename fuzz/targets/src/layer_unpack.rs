//! `layer_unpack`: moat's image layer unpacker on hostile archives.
//!
//! ```text
//!  input: a layer blob as a registry would send it: a tar, or a gzip or zstd stream of one
//! ```
//!
//! The blob is unpacked into `<tmp>/layer/` beside an empty `<tmp>/outside/` (as root, with
//! whiteout devices and ownership, as `moat pull` does). Whatever the bytes, the unpacker returns
//! (`Ok` or an error naming an entry) without panicking, and writes nothing outside `layer/`:
//! `outside/` stays empty and `<tmp>` holds only the two directories.

use std::path::Path;

use moat_runtime::image::unpack::{UnpackOptions, unpack_layer};

/// The target body.
pub fn run(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let layer = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&layer).expect("create layer/");
    std::fs::create_dir(&outside).expect("create outside/");
    let privileged = nix::unistd::geteuid().is_root();
    let _ = unpack_layer(data, &layer, UnpackOptions { privileged });
    assert_eq!(names(&outside), Vec::<String>::new(), "the layer wrote into outside/");
    assert_eq!(names(tmp.path()), ["layer", "outside"], "the layer wrote beside its directory");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list a directory")
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Hostile and ordinary layers for the seed corpus: `(what, blob)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use std::io::Write;
    let plain = tar(&[
        ("bin/", Kind::Dir, ""),
        ("bin/tool", Kind::File(b"#!/bin/sh\n"), ""),
        ("bin/alias", Kind::Symlink, "tool"),
        ("bin/copy", Kind::HardLink, "bin/tool"),
        ("etc/.wh.old", Kind::File(b""), ""),
        ("var/.wh..wh..opq", Kind::File(b""), ""),
    ]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&plain).expect("gzip in memory");
    vec![
        ("ordinary layer", plain.clone()),
        ("gzip layer", gzip.finish().expect("gzip in memory")),
        ("zstd layer", zstd::encode_all(&plain[..], 1).expect("zstd in memory")),
        ("dot dot", tar(&[("a/../../outside/x", Kind::File(b"x"), "")])),
        ("absolute", tar(&[("/tmp/moat-fuzz-planted", Kind::File(b"x"), "")])),
        (
            "symlink escape",
            tar(&[("esc", Kind::Symlink, "../outside"), ("esc/x", Kind::File(b"x"), "")]),
        ),
        (
            "absolute symlink",
            tar(&[("esc", Kind::Symlink, "/"), ("esc/tmp/x", Kind::File(b"x"), "")]),
        ),
        ("hard link out", tar(&[("hl", Kind::HardLink, "../outside/x")])),
        ("device node", tar(&[("dev/kmem", Kind::Char, "")])),
        ("whiteout of dot dot", tar(&[(".wh...", Kind::File(b""), "")])),
        (
            "symlink then file",
            tar(&[("f", Kind::Symlink, "../outside/f"), ("f", Kind::File(b"x"), "")]),
        ),
    ]
}

enum Kind {
    Dir,
    File(&'static [u8]),
    Symlink,
    HardLink,
    Char,
}

/// A tar whose names and link targets are written raw, hostile ones included.
fn tar(entries: &[(&str, Kind, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        let (entry_type, data): (tar::EntryType, &[u8]) = match kind {
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::File(data) => (tar::EntryType::Regular, data),
            Kind::Symlink => (tar::EntryType::Symlink, b""),
            Kind::HardLink => (tar::EntryType::Link, b""),
            Kind::Char => (tar::EntryType::Char, b""),
        };
        header.set_entry_type(entry_type);
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).expect("a tar in memory");
    }
    builder.into_inner().expect("a tar in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs() {
        for (_, blob) in seeds() {
            run(&blob);
        }
    }
}
