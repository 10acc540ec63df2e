//! End to end: root patches through the library (`SandboxConfig::patches`) on the namespace
//! backend: visible inside, the lower untouched, the bundle never visible. Needs root and
//! `/bin/busybox` (busybox-static).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::blocking::Moat;
use moat_runtime::api::config::{Isolation, RootSource, SandboxOptions};
use moat_runtime::config::SandboxConfig;
use moat_runtime::patches::{Patch, parse_patch};
use moat_runtime::relay_client::ExecOutcome;

mod support;
use support::{executables, moat_home, require_root};

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("/bin/sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc/old")).unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "/bin/busybox is missing: install busybox-static");
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("etc/profile"), "a\n").unwrap();
    std::fs::write(dir.join("etc/old/x"), "old\n").unwrap();
}

#[test]
fn patches_are_visible_inside_and_the_lower_is_untouched_as_root() {
    require_root();
    let home = moat_home("patches-rootfs");
    let rootfs = home.join("rootfs");
    busybox_rootfs(&rootfs);
    let source = home.join("source");
    std::fs::create_dir_all(source.join("tree/sub")).unwrap();
    std::fs::write(source.join("tree/sub/f"), "in tree\n").unwrap();
    std::fs::write(source.join("file"), "copied\n").unwrap();
    std::fs::set_permissions(source.join("file"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let forms = [
        "text:/etc/app.conf=key=value".to_owned(),
        "append:/etc/profile=b".to_owned(),
        format!("copy-file:{}=/usr/local/f", source.join("file").display()),
        format!("copy-dir:{}=/opt/tree", source.join("tree").display()),
        "symlink:/etc/link=/etc/app.conf".to_owned(),
        "mkdir:/srv/data:700".to_owned(),
        "rm:/etc/old".to_owned(),
    ];
    let config = SandboxConfig {
        patches: forms.iter().map(|f| parse_patch(f).unwrap()).collect(),
        ..SandboxConfig::default()
    };
    let moat = Moat::new(&home).with_executables(executables());
    let sandbox = moat
        .create(SandboxOptions {
            name: "patched".to_owned(),
            root: RootSource::Dir(rootfs.clone()),
            isolation: Isolation::Namespace,
            config,
        })
        .unwrap();
    let seen = sandbox.exec(
        sh("cd /bin; ./busybox cat /etc/app.conf /etc/profile /usr/local/f /opt/tree/sub/f /etc/link; \
            ./busybox stat -c %a /usr/local/f /srv/data; \
            ./busybox test -e /etc/old || echo old-gone; \
            ./busybox test -e /.msb/patches || echo bundle-unseen"),
        b"",
        None,
    );
    sandbox.remove(true).unwrap();
    let seen = seen.unwrap();
    assert_eq!(seen.outcome, ExecOutcome::Exited(0), "{}", String::from_utf8_lossy(&seen.stderr));
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "key=valuea\nbcopied\nin tree\nkey=value600\n700\nold-gone\nbundle-unseen\n"
    );
    // The lower (the user's --rootfs directory) is as it was.
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/profile")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/old/x")).unwrap(), "old\n");
    for made in ["etc/app.conf", "etc/link", "usr", "opt", "srv"] {
        assert!(!rootfs.join(made).exists(), "{made} reached the lower");
    }
}

#[test]
fn a_patch_on_the_host_root_stays_in_the_sandbox_as_root() {
    require_root();
    let moat = Moat::new(moat_home("patches-host")).with_executables(executables());
    let config = SandboxConfig {
        patches: vec![parse_patch("text:/etc/moat-patch-test=hello").unwrap()],
        ..SandboxConfig::default()
    };
    let sandbox = moat
        .create(SandboxOptions {
            name: "hostroot".to_owned(),
            root: RootSource::Host,
            isolation: Isolation::Namespace,
            config,
        })
        .unwrap();
    let seen = sandbox.exec(sh("cat /etc/moat-patch-test"), b"", None);
    sandbox.remove(true).unwrap();
    assert_eq!(seen.unwrap().stdout, b"hello");
    assert!(!Path::new("/etc/moat-patch-test").exists());
}

#[test]
fn a_patch_that_cannot_apply_fails_the_boot_with_its_reason_as_root() {
    require_root();
    let home = moat_home("patches-refused");
    let rootfs = home.join("rootfs");
    busybox_rootfs(&rootfs);
    let config = SandboxConfig {
        patches: vec![Patch::Text {
            path: "/etc/profile".into(),
            content: "replaced".into(),
            mode: None,
            replace: false,
        }],
        ..SandboxConfig::default()
    };
    let moat = Moat::new(&home).with_executables(executables());
    let err = moat
        .create(SandboxOptions {
            name: "refused".to_owned(),
            root: RootSource::Dir(rootfs.clone()),
            isolation: Isolation::Namespace,
            config,
        })
        .unwrap_err();
    assert!(err.to_string().contains("/etc/profile"), "{err}");
    let _ = moat.get("refused").map(|s| s.remove(true));
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/profile")).unwrap(), "a\n");
    assert!(support::processes_mentioning("patches-refused").is_empty());
}
