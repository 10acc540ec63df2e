//! End to end: named volumes through the library (`Moat::volumes`, `-v NAME:/path` as a
//! `config::Volume` with a name) on the namespace backend. Needs root (quota volumes loop-mount
//! an ext4 image).

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::blocking::Moat;
use moat_runtime::api::config::{Isolation, RootSource, SandboxOptions};
use moat_runtime::config::{SandboxConfig, parse_volume};
use moat_runtime::relay_client::ExecOutcome;
use moat_runtime::store::volumes::{VolumeError, VolumeOptions};

mod support;
use support::{executables, moat_home, require_root};

fn with_volumes(name: &str, volumes: &[&str]) -> SandboxOptions {
    let config = SandboxConfig {
        volumes: volumes.iter().map(|v| parse_volume(v).unwrap()).collect(),
        ..SandboxConfig::default()
    };
    SandboxOptions {
        name: name.to_owned(),
        root: RootSource::Host,
        isolation: Isolation::Namespace,
        config,
    }
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

#[test]
fn a_volume_shared_by_two_sandboxes_keeps_its_data_after_both_are_removed_as_root() {
    require_root();
    let moat = Moat::new(moat_home("volume-shared")).with_executables(executables());
    let volumes = moat.volumes();
    let info = volumes.create("shared", VolumeOptions::default()).unwrap();

    let writer = moat.create(with_volumes("writer", &["shared:/data"])).unwrap();
    let reader =
        moat.create(with_volumes("reader", &["shared:/data:ro,noexec,nosuid,nodev"])).unwrap();
    let wrote = writer.exec(sh("echo from-writer > /data/note && id -u"), b"", None).unwrap();
    assert_eq!(wrote.outcome, ExecOutcome::Exited(0), "{}", String::from_utf8_lossy(&wrote.stderr));
    let read =
        reader.exec(sh("cat /data/note; grep ' /data ' /proc/self/mounts"), b"", None).unwrap();
    let text = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(text.starts_with("from-writer\n"), "{text}");
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(text.split([' ', ',']).any(|f| f == flag), "{flag} missing: {text}");
    }
    let refused = reader.exec(sh("echo x > /data/other"), b"", None).unwrap();
    assert_ne!(refused.outcome, ExecOutcome::Exited(0), "a read-only volume took a write");

    // The file the sandbox's root wrote belongs to the volume's owner (root) on the host.
    let meta = std::fs::metadata(info.path.join("note")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    let users = volumes.inspect("shared").unwrap().used_by;
    assert_eq!(users.len(), 2, "{users:?}");
    let err = volumes.remove("shared", false).unwrap_err();
    assert!(matches!(err, VolumeError::InUse { .. }), "{err}");

    writer.remove(true).unwrap();
    reader.remove(true).unwrap();
    assert_eq!(volumes.read("shared", "/note", 1024).unwrap(), b"from-writer\n");
    assert!(volumes.inspect("shared").unwrap().used_by.is_empty());
    volumes.remove("shared", false).unwrap();
    assert!(!info.path.exists());
}

#[test]
fn a_host_path_outside_a_volume_is_refused_as_root() {
    require_root();
    let home = moat_home("volume-escape");
    let moat = Moat::new(&home).with_executables(executables());
    let volumes = moat.volumes();
    volumes.create("box", VolumeOptions::default()).unwrap();
    let sandbox = moat.create(with_volumes("escaper", &["box:/data"])).unwrap();
    // The sandbox plants a symlink to the host's /etc/passwd (an absolute path) in the volume.
    let planted =
        sandbox.exec(sh("ln -s /etc/passwd /data/link && ln -s ../../.. /data/up"), b"", None);
    sandbox.remove(true).unwrap();
    assert_eq!(planted.unwrap().outcome, ExecOutcome::Exited(0));
    for path in ["/link", "up/etc/passwd", "../volumes", "/a/../../x"] {
        let err = volumes.read("box", path, 1 << 20).unwrap_err();
        assert!(matches!(err, VolumeError::PathEscapes { .. }), "{path}: {err}");
    }
    let err = volumes.write("box", "/link", b"pwned").unwrap_err();
    assert!(matches!(err, VolumeError::PathEscapes { .. }), "{err}");
    volumes.remove("box", false).unwrap();
}

#[test]
fn a_quota_exceeded_gives_enospc_inside_and_a_typed_error_outside_as_root() {
    require_root();
    let moat = Moat::new(moat_home("volume-quota")).with_executables(executables());
    let volumes = moat.volumes();
    let info = volumes.create("small", VolumeOptions { quota_mib: Some(16) }).unwrap();
    let sandbox = moat.create(with_volumes("filler", &["small:/data"])).unwrap();
    let filled = sandbox
        .exec(sh("dd if=/dev/zero of=/data/big bs=1M count=32 2>&1; echo status=$?"), b"", None)
        .unwrap();
    sandbox.remove(true).unwrap();
    let text = String::from_utf8_lossy(&filled.stdout).into_owned();
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!text.contains("status=0"), "{text}");

    let err = volumes.write_from("small", "/more", std::io::repeat(7).take(32 << 20)).unwrap_err();
    assert!(matches!(err, VolumeError::QuotaExceeded { quota_mib: 16, .. }), "{err}");
    let details = volumes.inspect("small").unwrap();
    assert!(details.used_bytes > 10 << 20, "{details:?}");
    volumes.remove("small", false).unwrap();
    assert!(!info.path.exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(info.path.to_str().unwrap()), "still mounted: {mounts}");
}
