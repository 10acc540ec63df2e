//! fs: every filesystem operation of PROTOCOL.md §9.1 in a scratch directory under `/tmp`,
//! reads streamed in chunks of at most 3 MiB, writes streamed in chunks of any size and ended by
//! an empty `core.fs.data`, and `ok:false` answers with the operation's prefix for missing paths.
//! Each case removes its scratch directory when it ends.

use moat_protocol::limits::FS_CHUNK_BYTES;
use moat_protocol::payload::fs::{
    FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsResponse, FsResponseData, FsSetAttrs,
};

use crate::client::Conn;
use crate::error::{CaseError, ensure, fail};
use crate::run::{Case, CaseResult, Ctx, Family, Passed};

/// `S_IFMT` and the regular-file and directory type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// Permission bits of `st_mode`.
const PERMISSION_BITS: u32 = 0o7777;

const MIB: usize = 1024 * 1024;

/// Size of the file the chunking case reads: two full 3 MiB chunks and a partial one.
const CHUNKED_FILE_BYTES: usize = 2 * FS_CHUNK_BYTES + MIB + 5;

pub(crate) const CASES: &[Case] = &[
    fs_case("mkdir", "Mkdir creates missing parents and applies its mode", mkdir),
    fs_case(
        "write_read",
        "OpenFile, Write{len} + data + EOF, CloseHandle, then Read gives the bytes back",
        write_read,
    ),
    fs_case(
        "stat",
        "Stat reports kind, size, st_mode type bits; follow_symlink picks stat or lstat",
        stat,
    ),
    fs_case("set_stat", "SetStat changes mode, size and mtime", set_stat),
    fs_case(
        "list",
        "List gives every entry once with its full path and kind, without . and ..",
        list,
    ),
    fs_case(
        "symlink_readlink",
        "Symlink creates a link whose ReadLink is its target",
        symlink_readlink,
    ),
    fs_case("realpath", "RealPath resolves symlinks and keeps a missing leaf", realpath),
    fs_case("copy", "Copy duplicates a file's bytes", copy),
    fs_case("rename", "Rename moves a file", rename),
    fs_case("remove", "Remove unlinks a file", remove),
    fs_case(
        "remove_dir",
        "RemoveDir removes an empty directory, and with recursive a full one",
        remove_dir,
    ),
    fs_case(
        "read_dir",
        "OpenDir + ReadDir{limit: 1} pages through every entry, then an empty batch",
        read_dir,
    ),
    fs_case("fstat_fsetstat", "FStat and FSetStat work through a handle", fstat_fsetstat),
    fs_case(
        "read_chunking",
        "a 7 MiB read arrives as fs.data chunks of at most 3 MiB, then fs.response",
        read_chunking,
    ),
    fs_case(
        "streamed_write",
        "a Write without len takes chunks of any size (up to 3 MiB) until the empty EOF chunk",
        streamed_write,
    ),
    fs_case(
        "missing_path_errors",
        "ops on a missing path answer ok:false, error \"<op>: ... (os error 2)\", data null",
        missing_path_errors,
    ),
];

const fn fs_case(name: &'static str, checks: &'static str, run: fn(&Ctx) -> CaseResult) -> Case {
    Case { family: Family::Fs, name, needs_generation: 2, checks, run }
}

/// Runs `body` with a fresh scratch directory, then removes the directory whatever happened.
fn with_scratch(ctx: &Ctx, body: impl FnOnce(&mut Conn, &str) -> CaseResult) -> CaseResult {
    let mut conn = ctx.connect()?;
    let dir = ctx.scratch();
    let _ = conn.fs(FsOp::RemoveDir { path: dir.clone(), recursive: true });
    ok(conn.fs(FsOp::Mkdir { path: dir.clone(), mode: None, user: None })?, "Mkdir scratch")?;
    let result = body(&mut conn, &dir);
    let cleanup = conn.fs(FsOp::RemoveDir { path: dir, recursive: true });
    let passed = result?;
    ok(cleanup?, "RemoveDir scratch")?;
    Ok(passed)
}

/// The response's data, or a failure naming `what` when it is `ok:false`.
fn ok(response: FsResponse, what: &str) -> Result<Option<FsResponseData>, CaseError> {
    if !response.ok {
        fail!("{what}: ok:false, error {:?}", response.error.unwrap_or_default());
    }
    Ok(response.data)
}

fn options(read: bool, write: bool) -> FsOpenOptions {
    FsOpenOptions { read, write, create: write, truncate: write, ..FsOpenOptions::default() }
}

fn open(conn: &mut Conn, path: &str, options: FsOpenOptions) -> Result<u64, CaseError> {
    match ok(conn.fs(FsOp::OpenFile { path: path.to_owned(), options })?, "OpenFile")? {
        Some(FsResponseData::Handle(h)) => Ok(h),
        other => fail!("OpenFile answered {other:?} instead of a Handle"),
    }
}

fn close(conn: &mut Conn, handle: u64) -> Result<(), CaseError> {
    ok(conn.fs(FsOp::CloseHandle { handle })?, "CloseHandle")?;
    Ok(())
}

fn write_file(conn: &mut Conn, path: &str, bytes: &[u8]) -> Result<(), CaseError> {
    let handle = open(conn, path, options(false, true))?;
    let chunks: Vec<&[u8]> = bytes.chunks(MIB).collect();
    ok(conn.fs_write(handle, 0, Some(bytes.len() as u64), &chunks)?, "Write")?;
    close(conn, handle)
}

fn read_file(conn: &mut Conn, path: &str) -> Result<Vec<u8>, CaseError> {
    let handle = open(conn, path, options(true, false))?;
    let (chunks, response) = conn.fs_read(handle, 0, None)?;
    ok(response, "Read")?;
    close(conn, handle)?;
    Ok(chunks.concat())
}

fn stat_of(conn: &mut Conn, path: &str, follow_symlink: bool) -> Result<FsEntryInfo, CaseError> {
    match ok(conn.fs(FsOp::Stat { path: path.to_owned(), follow_symlink })?, "Stat")? {
        Some(FsResponseData::Stat(info)) => Ok(info),
        other => fail!("Stat answered {other:?} instead of Stat data"),
    }
}

fn path_of(response: FsResponse, what: &str) -> Result<String, CaseError> {
    match ok(response, what)? {
        Some(FsResponseData::Path(p)) => Ok(p),
        other => fail!("{what} answered {other:?} instead of a Path"),
    }
}

fn entries(data: Option<FsResponseData>, what: &str) -> Result<Vec<FsEntryInfo>, CaseError> {
    match data {
        Some(FsResponseData::List(list)) => Ok(list),
        other => fail!("{what} answered {other:?} instead of a List"),
    }
}

/// Whether `path` is gone (Stat answers ok:false).
fn gone(conn: &mut Conn, path: &str) -> Result<bool, CaseError> {
    Ok(!conn.fs(FsOp::Stat { path: path.to_owned(), follow_symlink: false })?.ok)
}

/// Deterministic bytes that differ at every offset modulo 251, so a shifted or reordered chunk
/// shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i % 251) as u8).wrapping_add(seed)).collect()
}

fn mkdir(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let deep = format!("{dir}/a/b");
        ok(conn.fs(FsOp::Mkdir { path: deep.clone(), mode: Some(0o750), user: None })?, "Mkdir")?;
        for path in [format!("{dir}/a"), deep.clone()] {
            let info = stat_of(conn, &path, true)?;
            ensure!(info.kind == FsEntryKind::Dir, "{path} is {:?}, not a directory", info.kind);
            ensure!(info.mode & S_IFMT == S_IFDIR, "{path} st_mode {:o} lacks S_IFDIR", info.mode);
        }
        let mode = stat_of(conn, &deep, true)?.mode & PERMISSION_BITS;
        ensure!(mode == 0o750, "mode {mode:o} instead of 750");
        Ok(Passed::plain())
    })
}

fn write_read(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/file");
        let bytes = b"hello, conformance\n";
        write_file(conn, &path, bytes)?;
        let back = read_file(conn, &path)?;
        ensure!(
            back == bytes,
            "read back {} bytes that differ from the {} written",
            back.len(),
            bytes.len()
        );
        Ok(Passed::plain())
    })
}

fn stat(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/file");
        write_file(conn, &path, &pattern(1234, 0))?;
        let info = stat_of(conn, &path, true)?;
        ensure!(info.path == path, "Stat echoed path {:?} instead of {path:?}", info.path);
        ensure!(info.kind == FsEntryKind::File, "kind {:?} instead of file", info.kind);
        ensure!(info.size == 1234, "size {} instead of 1234", info.size);
        ensure!(info.mode & S_IFMT == S_IFREG, "st_mode {:o} lacks S_IFREG", info.mode);
        let link = format!("{dir}/link");
        let symlink = FsOp::Symlink { target: path.clone(), link_path: link.clone(), user: None };
        ok(conn.fs(symlink)?, "Symlink")?;
        let lstat = stat_of(conn, &link, false)?;
        ensure!(
            lstat.kind == FsEntryKind::Symlink,
            "follow_symlink:false gave {:?}, not symlink",
            lstat.kind
        );
        let followed = stat_of(conn, &link, true)?;
        ensure!(
            followed.kind == FsEntryKind::File,
            "follow_symlink:true gave {:?}, not file",
            followed.kind
        );
        Ok(Passed::plain())
    })
}

fn set_stat(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/file");
        write_file(conn, &path, &pattern(100, 1))?;
        let attrs = FsSetAttrs {
            mode: Some(0o600),
            size: Some(4),
            mtime: Some(1_000_000_000),
            ..FsSetAttrs::default()
        };
        ok(conn.fs(FsOp::SetStat { path: path.clone(), follow_symlink: true, attrs })?, "SetStat")?;
        let info = stat_of(conn, &path, true)?;
        ensure!(
            info.mode & PERMISSION_BITS == 0o600,
            "mode {:o} instead of 600",
            info.mode & PERMISSION_BITS
        );
        ensure!(info.size == 4, "size {} instead of 4", info.size);
        ensure!(info.mtime == Some(1_000_000_000), "mtime {:?} instead of 1000000000", info.mtime);
        Ok(Passed::plain())
    })
}

fn make_tree(conn: &mut Conn, dir: &str) -> Result<Vec<(String, FsEntryKind)>, CaseError> {
    write_file(conn, &format!("{dir}/a"), b"a")?;
    write_file(conn, &format!("{dir}/b"), b"bb")?;
    ok(conn.fs(FsOp::Mkdir { path: format!("{dir}/c"), mode: None, user: None })?, "Mkdir")?;
    Ok(vec![
        (format!("{dir}/a"), FsEntryKind::File),
        (format!("{dir}/b"), FsEntryKind::File),
        (format!("{dir}/c"), FsEntryKind::Dir),
    ])
}

fn check_entries(
    mut got: Vec<FsEntryInfo>,
    want: &[(String, FsEntryKind)],
) -> Result<(), CaseError> {
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let got: Vec<(String, FsEntryKind)> = got.into_iter().map(|e| (e.path, e.kind)).collect();
    ensure!(got == want, "entries {got:?} instead of {want:?}");
    Ok(())
}

fn list(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let want = make_tree(conn, dir)?;
        let data = ok(conn.fs(FsOp::List { path: dir.to_owned() })?, "List")?;
        check_entries(entries(data, "List")?, &want)?;
        Ok(Passed::plain())
    })
}

fn symlink_readlink(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let link = format!("{dir}/link");
        let symlink =
            FsOp::Symlink { target: "some/target".to_owned(), link_path: link.clone(), user: None };
        ok(conn.fs(symlink)?, "Symlink")?;
        let target = path_of(conn.fs(FsOp::ReadLink { path: link })?, "ReadLink")?;
        ensure!(target == "some/target", "ReadLink gave {target:?} instead of \"some/target\"");
        Ok(Passed::plain())
    })
}

fn realpath(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let base = path_of(conn.fs(FsOp::RealPath { path: dir.to_owned() })?, "RealPath")?;
        ok(conn.fs(FsOp::Mkdir { path: format!("{dir}/real"), mode: None, user: None })?, "Mkdir")?;
        let symlink = FsOp::Symlink {
            target: format!("{dir}/real"),
            link_path: format!("{dir}/link"),
            user: None,
        };
        ok(conn.fs(symlink)?, "Symlink")?;
        let resolved =
            path_of(conn.fs(FsOp::RealPath { path: format!("{dir}/link") })?, "RealPath")?;
        ensure!(
            resolved == format!("{base}/real"),
            "RealPath of the link gave {resolved:?}, not {base}/real"
        );
        let missing =
            path_of(conn.fs(FsOp::RealPath { path: format!("{dir}/link/missing") })?, "RealPath")?;
        ensure!(
            missing == format!("{base}/real/missing"),
            "RealPath with a missing leaf gave {missing:?}, not {base}/real/missing"
        );
        Ok(Passed::plain())
    })
}

fn copy(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let bytes = pattern(70_000, 2);
        write_file(conn, &format!("{dir}/src"), &bytes)?;
        ok(conn.fs(FsOp::Copy { src: format!("{dir}/src"), dst: format!("{dir}/dst") })?, "Copy")?;
        ensure!(read_file(conn, &format!("{dir}/dst"))? == bytes, "the copy's bytes differ");
        ensure!(read_file(conn, &format!("{dir}/src"))? == bytes, "the source changed");
        Ok(Passed::plain())
    })
}

fn rename(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let bytes = pattern(5000, 3);
        write_file(conn, &format!("{dir}/old"), &bytes)?;
        ok(
            conn.fs(FsOp::Rename { src: format!("{dir}/old"), dst: format!("{dir}/new") })?,
            "Rename",
        )?;
        ensure!(gone(conn, &format!("{dir}/old"))?, "the source still exists after Rename");
        ensure!(
            read_file(conn, &format!("{dir}/new"))? == bytes,
            "the renamed file's bytes differ"
        );
        Ok(Passed::plain())
    })
}

fn remove(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/file");
        write_file(conn, &path, b"x")?;
        ok(conn.fs(FsOp::Remove { path: path.clone() })?, "Remove")?;
        ensure!(gone(conn, &path)?, "the file still exists after Remove");
        Ok(Passed::plain())
    })
}

fn remove_dir(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let empty = format!("{dir}/empty");
        ok(conn.fs(FsOp::Mkdir { path: empty.clone(), mode: None, user: None })?, "Mkdir")?;
        ok(conn.fs(FsOp::RemoveDir { path: empty.clone(), recursive: false })?, "RemoveDir")?;
        ensure!(gone(conn, &empty)?, "the empty directory still exists after RemoveDir");
        let full = format!("{dir}/full");
        ok(conn.fs(FsOp::Mkdir { path: full.clone(), mode: None, user: None })?, "Mkdir")?;
        make_tree(conn, &full)?;
        let refused = conn.fs(FsOp::RemoveDir { path: full.clone(), recursive: false })?;
        ensure!(!refused.ok, "RemoveDir without recursive removed a non-empty directory");
        ok(
            conn.fs(FsOp::RemoveDir { path: full.clone(), recursive: true })?,
            "RemoveDir recursive",
        )?;
        ensure!(gone(conn, &full)?, "the directory still exists after a recursive RemoveDir");
        Ok(Passed::plain())
    })
}

fn read_dir(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let want = make_tree(conn, dir)?;
        let handle = match ok(conn.fs(FsOp::OpenDir { path: dir.to_owned() })?, "OpenDir")? {
            Some(FsResponseData::Handle(h)) => h,
            other => fail!("OpenDir answered {other:?} instead of a Handle"),
        };
        let mut got = Vec::new();
        loop {
            let data = ok(conn.fs(FsOp::ReadDir { handle, limit: Some(1) })?, "ReadDir")?;
            let batch = entries(data, "ReadDir")?;
            ensure!(batch.len() <= 1, "ReadDir{{limit: 1}} gave {} entries", batch.len());
            if batch.is_empty() {
                break;
            }
            ensure!(got.len() < want.len(), "ReadDir gave more entries than the directory has");
            got.extend(batch);
        }
        close(conn, handle)?;
        check_entries(got, &want)?;
        Ok(Passed::plain())
    })
}

fn fstat_fsetstat(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/file");
        write_file(conn, &path, &pattern(300, 4))?;
        let handle = open(
            conn,
            &path,
            FsOpenOptions { read: true, write: true, ..FsOpenOptions::default() },
        )?;
        let fstat = |conn: &mut Conn| -> Result<FsEntryInfo, CaseError> {
            match ok(conn.fs(FsOp::FStat { handle })?, "FStat")? {
                Some(FsResponseData::Stat(info)) => Ok(info),
                other => fail!("FStat answered {other:?} instead of Stat data"),
            }
        };
        let before = fstat(conn)?;
        ensure!(before.size == 300 && before.kind == FsEntryKind::File, "FStat gave {before:?}");
        let attrs = FsSetAttrs { mode: Some(0o640), size: Some(10), ..FsSetAttrs::default() };
        ok(conn.fs(FsOp::FSetStat { handle, attrs })?, "FSetStat")?;
        let after = fstat(conn)?;
        close(conn, handle)?;
        ensure!(after.size == 10, "size {} after FSetStat instead of 10", after.size);
        ensure!(
            after.mode & PERMISSION_BITS == 0o640,
            "mode {:o} after FSetStat instead of 640",
            after.mode & PERMISSION_BITS
        );
        Ok(Passed::plain())
    })
}

fn read_chunking(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/big");
        let bytes = pattern(CHUNKED_FILE_BYTES, 5);
        write_file(conn, &path, &bytes)?;
        let handle = open(conn, &path, options(true, false))?;
        let whole = conn.fs_read(handle, 0, None);
        let part = conn.fs_read(handle, MIB as u64, Some(4 * MIB as u64));
        close(conn, handle)?;
        let (chunks, response) = whole?;
        ok(response, "Read")?;
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        ensure!(
            sizes.iter().all(|&n| n > 0 && n <= FS_CHUNK_BYTES),
            "chunk sizes {sizes:?}: each must be 1..=3 MiB"
        );
        ensure!(
            sizes.len() == CHUNKED_FILE_BYTES.div_ceil(FS_CHUNK_BYTES),
            "{} chunks {sizes:?} for {CHUNKED_FILE_BYTES} bytes",
            sizes.len()
        );
        ensure!(chunks.concat() == bytes, "the bytes read differ from the bytes written");
        let (chunks, response) = part?;
        ok(response, "Read{offset: 1 MiB, len: 4 MiB}")?;
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        ensure!(
            sizes == [FS_CHUNK_BYTES, MIB],
            "Read{{offset: 1 MiB, len: 4 MiB}} chunks {sizes:?}"
        );
        ensure!(chunks.concat() == bytes[MIB..5 * MIB], "Read{{offset, len}} gave the wrong bytes");
        Ok(Passed::note(format!(
            "{} chunks for {CHUNKED_FILE_BYTES} bytes",
            CHUNKED_FILE_BYTES.div_ceil(FS_CHUNK_BYTES)
        )))
    })
}

fn streamed_write(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let path = format!("{dir}/streamed");
        let parts = [
            pattern(1, 6),
            pattern(16 * 1024, 7),
            pattern(FS_CHUNK_BYTES, 8),
            pattern(100_000, 9),
            pattern(7, 10),
        ];
        let handle = open(conn, &path, options(false, true))?;
        let chunks: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let written = conn.fs_write(handle, 0, None, &chunks);
        close(conn, handle)?;
        ok(written?, "Write")?;
        ensure!(
            read_file(conn, &path)? == parts.concat(),
            "the file's bytes differ from the chunks streamed"
        );
        Ok(Passed::plain())
    })
}

fn missing_path_errors(ctx: &Ctx) -> CaseResult {
    with_scratch(ctx, |conn, dir| {
        let missing = format!("{dir}/missing");
        let ops = [
            ("stat", FsOp::Stat { path: missing.clone(), follow_symlink: true }),
            ("open", FsOp::OpenFile { path: missing.clone(), options: options(true, false) }),
            ("readdir", FsOp::List { path: missing.clone() }),
            ("readlink", FsOp::ReadLink { path: missing.clone() }),
            ("remove", FsOp::Remove { path: missing.clone() }),
            ("remove_dir", FsOp::RemoveDir { path: missing.clone(), recursive: false }),
            ("rename", FsOp::Rename { src: missing.clone(), dst: format!("{dir}/other") }),
        ];
        for (prefix, op) in ops {
            let name = op.name();
            let response = conn.fs(op)?;
            ensure!(!response.ok, "{name} of a missing path answered ok:true");
            ensure!(response.data.is_none(), "{name} error carries data {:?}", response.data);
            let error = response.error.unwrap_or_default();
            ensure!(
                error.starts_with(&format!("{prefix}:")),
                "{name} error {error:?} does not start with \"{prefix}:\""
            );
            ensure!(
                error.ends_with("(os error 2)"),
                "{name} error {error:?} does not end with \"(os error 2)\" (ENOENT)"
            );
        }
        Ok(Passed::plain())
    })
}
