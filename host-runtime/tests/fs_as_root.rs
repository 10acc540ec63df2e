//! End to end: the sandbox filesystem from the host, through the library (`Sandbox::fs`) and
//! through `moat cp`, on the namespace backend. Needs root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{
    ExecOutcome, FsEntryKind, GuestFsError, Isolation, Moat, Sandbox, SandboxOptions,
};
use moat_runtime::config::{SandboxConfig, Tmpfs};
use moat_runtime::error::RuntimeError;
use sha2::{Digest, Sha256};

mod support;
use support::{executables, moat, moat_home, require_root, stderr};

const MIB: usize = 1024 * 1024;

/// The guest directory the tests write to: a tmpfs of the sandbox's own.
const DATA: &str = "/data";

/// A 2 MiB tmpfs, to fill.
const SMALL: &str = "/small";

fn moat_lib(home: &Path) -> Moat {
    require_root();
    Moat::new(home).with_executables(executables())
}

async fn sandbox(moat: &Moat, name: &str) -> Sandbox {
    let config = SandboxConfig {
        tmpfs: vec![
            Tmpfs { path: DATA.to_owned(), size_mib: Some(128) },
            Tmpfs { path: SMALL.to_owned(), size_mib: Some(2) },
        ],
        ..SandboxConfig::default()
    };
    let options = SandboxOptions::new(name).isolation(Isolation::Namespace).config(config);
    moat.create(options).await.unwrap()
}

/// `len` bytes that are not a repeating pattern a short-circuiting bug could fake.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a guest file, computed in the guest.
async fn guest_sha256(sandbox: &Sandbox, path: &str) -> String {
    let mut request = ExecRequest::new("sha256sum");
    request.args = vec![path.to_owned()];
    let ran = sandbox.exec(request, Vec::new()).await.unwrap();
    assert_eq!(ran.outcome, ExecOutcome::Exited(0), "{}", String::from_utf8_lossy(&ran.stderr));
    String::from_utf8(ran.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn host_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fs-host").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_20_mib_file_round_trips_through_the_library_as_root() {
    let home = moat_home("fs-api-big");
    let moat = moat_lib(&home);
    let sandbox = sandbox(&moat, "fsbig").await;
    let fs = sandbox.fs();
    let dir = host_dir("api-big");
    let content = pseudo_random(20 * MIB);
    let hash = sha256_hex(&content);
    std::fs::write(dir.join("up.bin"), &content).unwrap();

    let sent = fs.copy_from_host(dir.join("up.bin"), "/data/big.bin").await.unwrap();
    assert_eq!(sent, content.len() as u64);
    assert_eq!(fs.stat("/data/big.bin").await.unwrap().size, content.len() as u64);
    assert_eq!(guest_sha256(&sandbox, "/data/big.bin").await, hash);

    let got = fs.copy_to_host("/data/big.bin", dir.join("down.bin")).await.unwrap();
    assert_eq!(got, content.len() as u64);
    assert_eq!(sha256_hex(&std::fs::read(dir.join("down.bin")).unwrap()), hash);

    // A stream of 256 KiB chunks: never a bigger one, and all of it in order.
    let mut stream = fs.read_stream("/data/big.bin", 256 * 1024).await.unwrap();
    assert_eq!(stream.chunk_bytes(), 256 * 1024);
    let (mut streamed, mut chunks) = (Sha256::new(), 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(!chunk.is_empty() && chunk.len() <= 256 * 1024, "chunk of {}", chunk.len());
        streamed.update(&chunk);
        chunks += 1;
    }
    assert_eq!(chunks, 80);
    let streamed: String = streamed.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(streamed, hash);

    // Written back one piece at a time, pieces bigger and smaller than a wire chunk.
    let mut writer = fs.write_stream("/data/copy.bin").await.unwrap();
    for piece in content.chunks(7 * MIB + 3) {
        writer.write(piece.to_vec()).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), content.len() as u64);
    assert_eq!(guest_sha256(&sandbox, "/data/copy.bin").await, hash);

    // The whole-file calls, and their limit.
    assert_eq!(sha256_hex(&fs.read("/data/copy.bin").await.unwrap()), hash);
    let err = fs.read_with_limit("/data/copy.bin", MIB as u64).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::TooLarge { .. })), "{err}");
    fs.write("/data/note.txt", "hello\n").await.unwrap();
    assert_eq!(fs.read_to_string("/data/note.txt").await.unwrap(), "hello\n");
    fs.write("/data/bytes", vec![0xff, 0xfe]).await.unwrap();
    let err = fs.read_to_string("/data/bytes").await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::NotUtf8 { .. })), "{err}");
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn raw_bulk_and_cbor_transfers_carry_the_same_bytes_as_root() {
    let home = moat_home("fs-modes");
    let moat = moat_lib(&home);
    let sandbox = sandbox(&moat, "fsmodes").await;
    let dir = host_dir("modes");
    let content = pseudo_random(12 * MIB + 5);
    let hash = sha256_hex(&content);
    std::fs::write(dir.join("up.bin"), &content).unwrap();
    let blocking = moat_runtime::api::blocking::Moat::new(&home).get("fsmodes").unwrap();
    let dir_in = dir.clone();
    let content_len = content.len();
    tokio::task::spawn_blocking(move || {
        let mut bulk = blocking.fs().unwrap();
        assert!(bulk.uses_bulk(), "a generation-10 agent takes raw bulk");
        let mut cbor = blocking.fs().unwrap().cbor_only();
        assert!(!cbor.uses_bulk());
        // Up in one mode, down in the other, both ways.
        bulk.copy_from_host(&dir_in.join("up.bin"), "/data/by-bulk").unwrap();
        cbor.copy_from_host(&dir_in.join("up.bin"), "/data/by-cbor").unwrap();
        cbor.copy_to_host("/data/by-bulk", &dir_in.join("bulk-then-cbor")).unwrap();
        bulk.copy_to_host("/data/by-cbor", &dir_in.join("cbor-then-bulk")).unwrap();
        // A read of a range, in both modes.
        for client in [&mut bulk, &mut cbor] {
            let file = client.open("/data/by-bulk", moat_runtime::api::fs::OpenMode::Read).unwrap();
            let mut got = Vec::new();
            let n = client
                .read_at(&file, 5 * MIB as u64, Some(4 * MIB as u64 + 1), |data| {
                    got.extend_from_slice(data);
                    Ok(())
                })
                .unwrap();
            client.close(file).unwrap();
            assert_eq!(n, 4 * MIB as u64 + 1);
            assert!(got == std::fs::read(dir_in.join("up.bin")).unwrap()[5 * MIB..9 * MIB + 1]);
        }
        // A sink that fails ends a read with its error, and the client goes on.
        for client in [&mut bulk, &mut cbor] {
            let file = client.open("/data/by-bulk", moat_runtime::api::fs::OpenMode::Read).unwrap();
            let full = || RuntimeError::io("test sink", "/")(std::io::Error::other("full"));
            let err = client.read_at(&file, 0, None, |_| Err(full())).unwrap_err();
            assert!(matches!(err, RuntimeError::Io { what: "test sink", .. }), "{err}");
            client.close(file).unwrap();
            assert_eq!(client.read("/data/by-cbor", 64 * MIB as u64).unwrap().len(), content_len);
        }
    })
    .await
    .unwrap();
    assert_eq!(guest_sha256(&sandbox, "/data/by-bulk").await, hash);
    assert_eq!(guest_sha256(&sandbox, "/data/by-cbor").await, hash);
    assert_eq!(sha256_hex(&std::fs::read(dir.join("bulk-then-cbor")).unwrap()), hash);
    assert_eq!(sha256_hex(&std::fs::read(dir.join("cbor-then-bulk")).unwrap()), hash);
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn list_stat_mkdir_copy_rename_and_remove_behave_as_root() {
    let home = moat_home("fs-api-ops");
    let moat = moat_lib(&home);
    let sandbox = sandbox(&moat, "fsops").await;
    let fs = sandbox.fs();

    fs.mkdir("/data/a/b/c").await.unwrap();
    fs.mkdir("/data/a/b/c").await.unwrap();
    assert_eq!(fs.stat("/data/a/b/c").await.unwrap().kind, FsEntryKind::Dir);
    fs.write("/data/a/one.txt", "1").await.unwrap();
    let info = fs.stat("/data/a/one.txt").await.unwrap();
    assert_eq!((info.kind, info.size), (FsEntryKind::File, 1));

    fs.copy("/data/a/one.txt", "/data/a/two.txt").await.unwrap();
    fs.rename("/data/a/one.txt", "/data/a/b/moved.txt").await.unwrap();
    assert!(!fs.exists("/data/a/one.txt").await.unwrap());
    assert!(!fs.exists("/data/a/two.txt/under-a-file").await.unwrap());
    assert!(fs.exists("/data/a/b/moved.txt").await.unwrap());
    assert_eq!(fs.read_to_string("/data/a/two.txt").await.unwrap(), "1");

    let mut names: Vec<String> =
        fs.list("/data/a").await.unwrap().into_iter().map(|e| e.path).collect();
    names.sort();
    assert_eq!(names, ["/data/a/b", "/data/a/two.txt"]);

    fs.remove("/data/a/two.txt").await.unwrap();
    assert!(!fs.exists("/data/a/two.txt").await.unwrap());
    let err = fs.remove_dir("/data/a/b", false).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::NotEmpty { .. })), "{err}");
    fs.remove_dir("/data/a", true).await.unwrap();
    assert!(!fs.exists("/data/a").await.unwrap());
    assert!(fs.list(DATA).await.unwrap().is_empty());
    sandbox.remove(true).await.unwrap();
}

#[tokio::test]
async fn guest_and_sandbox_errors_are_typed_as_root() {
    let home = moat_home("fs-api-errors");
    let moat = moat_lib(&home);
    let sandbox = sandbox(&moat, "fserr").await;
    let fs = sandbox.fs();
    let not_found = |err: &RuntimeError, want: &str| matches!(err, RuntimeError::GuestFs(GuestFsError::NotFound { path }) if path == want);

    let err = fs.read("/data/missing").await.unwrap_err();
    assert!(not_found(&err, "/data/missing"), "{err}");
    assert!(err.to_string().contains("no such file or directory"), "{err}");
    let err = fs.stat("/data/missing").await.unwrap_err();
    assert!(not_found(&err, "/data/missing"), "{err}");
    let err = fs.read_stream("/data/missing", 4096).await.unwrap_err();
    assert!(not_found(&err, "/data/missing"), "{err}");
    let err = fs.list("/data/missing").await.unwrap_err();
    assert!(not_found(&err, "/data/missing"), "{err}");
    let err = fs.write("/data/no/such/dir/f", "x").await.unwrap_err();
    assert!(not_found(&err, "/data/no/such/dir/f"), "{err}");
    let err = fs.copy_to_host("/data/missing", host_dir("errors").join("f")).await.unwrap_err();
    assert!(not_found(&err, "/data/missing"), "{err}");
    assert!(std::fs::read_dir(host_dir("errors")).unwrap().next().is_none(), "left a file");

    let err = fs.read(DATA).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::IsADirectory { .. })), "{err}");
    let err = fs.copy_to_host(DATA, host_dir("errors").join("d")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::IsADirectory { .. })), "{err}");

    // A full filesystem ends a streamed write with the agent's error; one client can go on
    // after it (the answers to data sent after the failure do not confuse later calls).
    let big = host_dir("errors-full").join("big.bin");
    std::fs::write(&big, pseudo_random(8 * MIB)).unwrap();
    let err = fs.copy_from_host(&big, "/small/big.bin").await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::GuestFs(GuestFsError::Failed { message, .. })
            if message.contains("No space left on device")),
        "{err}"
    );
    let blocking = moat_runtime::api::blocking::Moat::new(&home).get("fserr").unwrap();
    let after = tokio::task::spawn_blocking(move || {
        let mut client = blocking.fs().unwrap();
        let failed = client.copy_from_host(&big, "/small/again.bin").unwrap_err();
        client.write("/data/after.txt", b"after").unwrap();
        (failed, client.read("/data/after.txt", 100).unwrap(), client.exists("/data").unwrap())
    })
    .await
    .unwrap();
    assert!(matches!(after.0, RuntimeError::GuestFs(GuestFsError::Failed { .. })), "{}", after.0);
    assert_eq!((after.1, after.2), (b"after".to_vec(), true));
    let mut writer = fs.write_stream("/small/streamed.bin").await.unwrap();
    let mut failed = None;
    for _ in 0..4 {
        if let Err(err) = writer.write(vec![1u8; MIB]).await {
            failed = Some(err);
            break;
        }
    }
    let failed = failed.expect("4 MiB fit in a 2 MiB tmpfs");
    assert!(matches!(failed, RuntimeError::GuestFs(GuestFsError::Failed { .. })), "{failed}");
    let err = writer.write(vec![1u8]).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GuestFs(GuestFsError::StreamEnded { .. })), "{err}");

    sandbox.stop().await.unwrap();
    let err = fs.read("/etc/hostname").await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { status: "stopped", .. }), "{err}");
    let err = fs.copy_from_host("/etc/hostname", "/data/h").await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { .. }), "{err}");
    sandbox.remove(false).await.unwrap();

    let err = moat.get("fserr").await.unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownSandbox(_)), "{err}");
}

#[tokio::test]
async fn moat_cp_copies_a_20_mib_file_and_a_tree_both_ways_as_root() {
    let home = moat_home("fs-cli-cp");
    let moat_api = moat_lib(&home);
    let sandbox = sandbox(&moat_api, "cpbox").await;
    let dir = host_dir("cli-cp");
    let content = pseudo_random(20 * MIB + 17);
    let hash = sha256_hex(&content);
    let up = dir.join("up.bin");
    std::fs::write(&up, &content).unwrap();
    let cp = |args: &[&str]| moat(&home, &[&["cp"], args].concat());

    let out = cp(&[up.to_str().unwrap(), "cpbox:/data/big.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(guest_sha256(&sandbox, "/data/big.bin").await, hash);
    // Into an existing guest directory: the file keeps its name.
    let out = cp(&[up.to_str().unwrap(), "cpbox:/data/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(guest_sha256(&sandbox, "/data/up.bin").await, hash);

    let down = dir.join("down.bin");
    let out = cp(&["cpbox:/data/big.bin", down.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_hex(&std::fs::read(&down).unwrap()), hash);
    // Into an existing host directory.
    let out = cp(&["cpbox:/data/big.bin", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_hex(&std::fs::read(dir.join("big.bin")).unwrap()), hash);

    // Failures: one line each, exit 1.
    let out = cp(&["cpbox:/data/missing", down.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/data/missing: no such file or directory"), "{}", stderr(&out));
    let out = cp(&["ghost:/data/x", down.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no sandbox named \"ghost\""), "{}", stderr(&out));

    // A directory tree, into an existing guest directory and back to a new host one.
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::create_dir(tree.join("empty")).unwrap();
    std::fs::write(tree.join("a.txt"), "a\n").unwrap();
    std::fs::write(tree.join("sub/deeper/b.bin"), &content[..MIB]).unwrap();
    std::fs::set_permissions(tree.join("a.txt"), PermissionsExt::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    let out = cp(&[tree.to_str().unwrap(), "cpbox:/data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fs = sandbox.fs();
    assert_eq!(fs.read_to_string("/data/tree/link").await.unwrap(), "a\n");
    assert_eq!(fs.stat("/data/tree/a.txt").await.unwrap().mode & 0o777, 0o750);
    assert_eq!(fs.stat("/data/tree/empty").await.unwrap().kind, FsEntryKind::Dir);
    let back = dir.join("back");
    let out = cp(&["cpbox:/data/tree", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(back.join("sub/deeper/b.bin")).unwrap(), &content[..MIB]);
    assert_eq!(std::fs::read_link(back.join("link")).unwrap(), Path::new("a.txt"));
    let mode = std::fs::metadata(back.join("a.txt")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);
    assert!(std::fs::read_dir(back.join("empty")).unwrap().next().is_none());

    sandbox.stop().await.unwrap();
    let out = cp(&[up.to_str().unwrap(), "cpbox:/data/again.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
    sandbox.remove(false).await.unwrap();
}

#[test]
fn moat_cp_with_a_malformed_argument_exits_2() {
    let home = moat_home("fs-cli-usage");
    for args in [
        &["cp", "/etc/hostname", "box:etc/hostname"][..],
        &["cp", ":/x", "/tmp/x"],
        &["cp", "/etc/hostname", "/tmp/x"],
        &["cp", "a:/x", "b:/y"],
        &["cp", "/etc/hostname"],
    ] {
        let out = moat(&home, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("moat"), "{args:?}: {}", stderr(&out));
    }
}
