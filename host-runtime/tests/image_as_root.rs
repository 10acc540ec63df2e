//! End to end: OCI images from a real registry (Debian's `docker-registry` on 127.0.0.1, started
//! by each test) through `moat pull`, `images`, `rmi`, `image prune` and `run/create --image` with
//! the namespace backend. The images are built here: busybox-static in tar layers (gzip, zstd and
//! plain), configs, manifests, an index, and hostile layers. Needs root and the packages
//! `docker-registry` and `busybox-static`; without them every test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::registry::{
    AUTH_PASSWORD, Compression, Layer, Registry, TarBuilder, busybox_layer, host_arch,
};
use support::{moat, moat_home, require_root, stderr, stdout};

/// `moat ARGS` as root, with the test's home.
fn moat_as_root(home: &Path, args: &[&str]) -> Output {
    require_root();
    moat(home, args)
}

fn layer(tar: TarBuilder, compression: Compression) -> Layer {
    Layer { tar: tar.finish(), compression }
}

/// Three layers: busybox (gzip) with /etc/removeme, a zstd layer with /etc/greeting and /work,
/// a plain layer whiting out /etc/removeme. Its config sets Env, WorkingDir and Cmd.
fn push_app(registry: &Registry, name: &str) -> Vec<String> {
    let base = busybox_layer().file("etc/removeme", 0o644, b"old\n");
    let app =
        TarBuilder::default().dir("etc/").file("etc/greeting", 0o644, b"hello\n").dir("work/");
    let delete = TarBuilder::default().dir("etc/").file("etc/.wh.removeme", 0o644, b"");
    registry.push(
        name,
        &[layer(base, Compression::Gzip), layer(app, Compression::Zstd), layer(delete, Compression::None)],
        serde_json::json!({
            "Env": ["PATH=/bin", "GREETING=hi"],
            "WorkingDir": "/work",
            "Cmd": ["sh", "-c", "echo $GREETING from $(pwd); cat /etc/greeting; test -e /etc/removeme || echo removed"],
            "StopSignal": "SIGINT",
        }),
    )
}

fn layer_dirs(home: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(home.join("images/layers")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

fn temporaries(home: &Path) -> usize {
    std::fs::read_dir(home.join("images/tmp")).map_or(0, |e| e.count())
}

fn image_count(home: &Path) -> usize {
    let output = moat_as_root(home, &["images", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str::<Vec<serde_json::Value>>(&stdout(&output)).unwrap().len()
}

/// A pull that must fail: its one-line error, with nothing recorded or half-written kept.
fn failed_pull(home: &Path, reference: &str) -> String {
    let output = moat_as_root(home, &["pull", reference]);
    assert_eq!(output.status.code(), Some(1), "pull of {reference} succeeded: {}", stdout(&output));
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("moat pull:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    assert_eq!(image_count(home), 0);
    assert_eq!(temporaries(home), 0, "a partial download or unpack was left in tmp/");
    lines[0].to_owned()
}

#[test]
fn pull_then_run_uses_the_image_cmd_env_and_workdir_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:1");
    let home = moat_home("image-run");
    let reference = registry.reference("app:1");
    // What a pull killed midway (pid 999999999 is past any pid_max) leaves is swept by the next.
    let stale = home.join("images/tmp/999999999-0-0-layer");
    std::fs::create_dir_all(stale.join("usr/bin")).unwrap();
    let pulled = moat_as_root(&home, &["pull", &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert!(stdout(&pulled).starts_with(&format!("{reference} sha256:")), "{}", stdout(&pulled));
    assert!(stderr(&pulled).contains("3 layers"), "progress names the layers: {}", stderr(&pulled));
    assert!(!stale.exists(), "an interrupted pull's temporary was left");
    let listed = moat_as_root(&home, &["images", "--json"]);
    let images: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(images[0]["layers"], 3);
    assert!(images[0]["unpacked_bytes"].as_u64().unwrap() > 500_000, "{images}");
    assert_eq!(layer_dirs(&home).len(), 3);
    let digest = stdout(&pulled).split_whitespace().nth(1).unwrap().to_owned();
    let pinned = moat_as_root(&home, &["pull", &format!("{}@{digest}", registry.reference("app"))]);
    assert!(pinned.status.success(), "a digest pin pulls: {}", stderr(&pinned));
    let wrong = format!("{}@sha256:{}", registry.reference("app"), "0".repeat(64));
    let refused = moat_as_root(&home, &["pull", &wrong]);
    assert!(!refused.status.success(), "a wrong digest pin was pulled");

    let run = moat_as_root(&home, &["run", "--isolation", "namespace", "--image", &reference]);
    assert_eq!(stdout(&run), "hi from /work\nhello\nremoved\n", "stderr: {}", stderr(&run));
    assert_eq!(run.status.code(), Some(0));

    let explicit = moat_as_root(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--image",
            &reference,
            "-e",
            "GREETING=yo",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $PATH",
        ],
    );
    assert_eq!(stdout(&explicit), "yo /tmp /.msb/scripts:/bin\n", "stderr: {}", stderr(&explicit));
}

#[test]
fn run_pulls_an_image_the_store_lacks_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:1");
    let home = moat_home("image-run-pulls");
    let run = moat_as_root(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--image",
            &registry.reference("app:1"),
            "--",
            "cat",
            "/etc/greeting",
        ],
    );
    assert_eq!(stdout(&run), "hello\n", "stderr: {}", stderr(&run));
    assert!(stderr(&run).contains("pulling"), "{}", stderr(&run));
    assert_eq!(image_count(&home), 1);
}

#[test]
fn layers_are_shared_between_images_and_rmi_and_prune_keep_what_is_used_as_root() {
    let registry = Registry::start();
    let shared = push_app(&registry, "app:1");
    let extra = TarBuilder::default().file("extra", 0o644, b"x");
    let base = busybox_layer().file("etc/removeme", 0o644, b"old\n");
    let other = registry.push(
        "other:1",
        &[layer(base, Compression::Gzip), layer(extra, Compression::Gzip)],
        serde_json::json!({}),
    );
    assert_eq!(shared[0], other[0], "both images start with the same layer blob");
    let home = moat_home("image-shared");
    assert!(moat_as_root(&home, &["pull", &registry.reference("app:1")]).status.success());
    let second = moat_as_root(&home, &["pull", &registry.reference("other:1")]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("(1 already stored)"), "{}", stderr(&second));
    assert_eq!(layer_dirs(&home).len(), 4);

    let removed = moat_as_root(&home, &["rmi", &registry.reference("other:1")]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(layer_dirs(&home).len(), 3, "only the layer no other image uses is removed");
    let pruned = moat_as_root(&home, &["image", "prune"]);
    assert!(stdout(&pruned).starts_with("removed 0 layers"), "{}", stdout(&pruned));
    assert!(moat_as_root(&home, &["rmi", &registry.reference("app:1")]).status.success());
    assert_eq!(layer_dirs(&home).len(), 0);
    let missing = moat_as_root(&home, &["rmi", &registry.reference("app:1")]);
    assert!(stderr(&missing).contains("no image"), "{}", stderr(&missing));
}

#[test]
fn create_takes_the_image_defaults_and_rmi_refuses_while_it_is_used_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:1");
    let home = moat_home("image-create");
    let reference = registry.reference("app:1");
    let created = moat_as_root(
        &home,
        &["create", "imgbox", "--isolation", "namespace", "--image", &reference],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let exec = moat_as_root(&home, &["exec", "imgbox", "--", "sh", "-c", "echo $GREETING $(pwd)"]);
    assert_eq!(stdout(&exec), "hi /work\n", "stderr: {}", stderr(&exec));
    let refused = moat_as_root(&home, &["rmi", &reference]);
    assert!(stderr(&refused).contains("used by sandbox \"imgbox\""), "{}", stderr(&refused));
    let forced = moat_as_root(&home, &["rmi", "-f", &reference]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(layer_dirs(&home).len(), 3, "the sandbox's layers stay while it exists");
    let again = moat_as_root(&home, &["exec", "imgbox", "--", "cat", "/etc/greeting"]);
    assert_eq!(stdout(&again), "hello\n", "stderr: {}", stderr(&again));
    assert!(moat_as_root(&home, &["rm", "-f", "imgbox"]).status.success());
    moat_as_root(&home, &["image", "prune"]);
    assert_eq!(layer_dirs(&home).len(), 0);
}

#[test]
fn an_index_resolves_to_this_hosts_platform_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:native");
    let foreign = busybox_layer().file("etc/greeting", 0o644, b"wrong platform\n");
    registry.push("app:foreign", &[layer(foreign, Compression::Gzip)], serde_json::json!({}));
    let foreign_arch = if host_arch() == "arm64" { "amd64" } else { "arm64" };
    registry.push_index("app:multi", &[(foreign_arch, "app:foreign"), (host_arch(), "app:native")]);
    let home = moat_home("image-index");
    let run = moat_as_root(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--image",
            &registry.reference("app:multi"),
            "--",
            "cat",
            "/etc/greeting",
        ],
    );
    assert_eq!(stdout(&run), "hello\n", "stderr: {}", stderr(&run));
}

#[test]
fn two_concurrent_pulls_of_one_image_both_succeed_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:1");
    let home = moat_home("image-concurrent");
    let reference = registry.reference("app:1");
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (home, reference) = (home.clone(), reference.clone());
            std::thread::spawn(move || moat_as_root(&home, &["pull", &reference]))
        })
        .collect();
    for pull in pulls {
        let output = pull.join().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_eq!((layer_dirs(&home).len(), image_count(&home), temporaries(&home)), (3, 1, 0));
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused_as_root() {
    let registry = Registry::start();
    let digests = push_app(&registry, "app:1");
    let data = registry.blob_data(&digests[1]);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let home = moat_home("image-bad-digest");
    let line = failed_pull(&home, &registry.reference("app:1"));
    assert!(line.contains(&digests[1]) && line.contains("hash to"), "{line}");
    assert_eq!(layer_dirs(&home).len(), 1, "only the verified bottom layer is stored");
}

#[test]
fn a_truncated_blob_is_refused_as_root() {
    let registry = Registry::start();
    let digests = push_app(&registry, "app:1");
    let data = registry.blob_data(&digests[0]);
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let home = moat_home("image-truncated");
    let line = failed_pull(&home, &registry.reference("app:1"));
    assert!(line.contains(&digests[0]), "{line}");
    assert_eq!(layer_dirs(&home).len(), 0);
}

/// A tmpfs of `size` mounted on `dir` for a test's life, unmounted on drop (also on a panic).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> SmallDisk {
        require_root();
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a {size} tmpfs on {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_one_line_and_leaves_nothing_half_written_as_root() {
    let registry = Registry::start();
    push_app(&registry, "app:1");
    // busybox alone unpacks to about 2 MiB: a 1 MiB store cannot take it.
    let disk = SmallDisk::mount(moat_home("image-full-disk"), "1m");
    let line = failed_pull(&disk.0, &registry.reference("app:1"));
    assert!(line.contains("No space left on device"), "{line}");
    assert_eq!(layer_dirs(&disk.0).len(), 0, "a layer that did not fit was kept");
}

#[test]
fn a_missing_image_is_not_found_as_root() {
    let registry = Registry::start();
    let home = moat_home("image-missing");
    let line = failed_pull(&home, &registry.reference("nothing:1"));
    assert!(line.contains("not found"), "{line}");
}

#[test]
fn an_unreachable_registry_is_named_as_root() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let home = moat_home("image-unreachable");
    let line = failed_pull(&home, &format!("127.0.0.1:{port}/x:1"));
    assert!(line.contains(&format!("127.0.0.1:{port} is unreachable")), "{line}");
}

/// Each hostile image: one error line naming the entry; no layer of it kept; nothing written
/// outside the store.
#[test]
fn hostile_layers_are_refused_with_one_line_each_as_root() {
    let registry = Registry::start();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<TarBuilder>, &str)> = vec![
        (
            "dotdot",
            vec![TarBuilder::default().file("a/../../../../../../tmp/planted", 0o644, b"x")],
            "`..`",
        ),
        (
            "absolute",
            vec![TarBuilder::default().file(&format!("{target}/planted"), 0o644, b"x")],
            "absolute",
        ),
        (
            "symlink-in-layer",
            vec![TarBuilder::default().symlink("escape", &target).file(
                "escape/planted",
                0o644,
                b"x",
            )],
            "\"escape\"",
        ),
        (
            "symlink-relative",
            vec![TarBuilder::default().symlink("up", "../../../../../../..").file(
                &format!("up{target}/planted"),
                0o644,
                b"x",
            )],
            "\"up\"",
        ),
        (
            "symlink-across-layers",
            vec![
                TarBuilder::default().symlink("escape", &target),
                TarBuilder::default().file("escape/planted", 0o644, b"x"),
            ],
            "symlink \"escape\" of a lower layer",
        ),
        ("device", vec![TarBuilder::default().char_device("dev/kmem")], "device node"),
    ];
    for (name, layers, expected) in cases {
        let count = layers.len();
        let layers: Vec<Layer> = layers.into_iter().map(|t| layer(t, Compression::Gzip)).collect();
        registry.push(&format!("{name}:1"), &layers, serde_json::json!({}));
        let home = moat_home(&format!("image-hostile-{name}"));
        let line = failed_pull(&home, &registry.reference(&format!("{name}:1")));
        assert!(line.contains(expected), "{name}: {line}");
        // The layers below a refused one are whole and verified; the refused one is not kept.
        assert!(layer_dirs(&home).len() < count, "{name}: the hostile layer was kept");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{name} wrote outside the store"
        );
        assert!(!Path::new("/tmp/planted").exists(), "{name} wrote /tmp/planted");
        moat_as_root(&home, &["image", "prune"]);
        assert_eq!(layer_dirs(&home).len(), 0, "{name}: prune leaves no layer no image uses");
    }
}

#[test]
fn basic_auth_comes_from_the_flag_or_the_docker_config_as_root() {
    let registry = Registry::start_with_basic_auth();
    push_app(&registry, "private:1");
    let reference = registry.reference("private:1");
    let home = moat_home("image-auth");
    let refused = failed_pull(&home, &reference);
    assert!(refused.contains("refused access"), "{refused}");

    let auth = format!("moat:{AUTH_PASSWORD}");
    let flagged = moat_as_root(&home, &["pull", "--registry-auth", &auth, &reference]);
    assert!(flagged.status.success(), "{}", stderr(&flagged));

    let docker_home = tempfile::tempdir().unwrap();
    std::fs::create_dir(docker_home.path().join(".docker")).unwrap();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &auth);
    let config = serde_json::json!({"auths": {registry.addr.clone(): {"auth": encoded}}});
    std::fs::write(docker_home.path().join(".docker/config.json"), config.to_string()).unwrap();
    let fresh = moat_home("image-auth-config");
    let from_config = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["pull", &reference])
        .env("MOAT_HOME", &fresh)
        .env("HOME", docker_home.path())
        .output()
        .unwrap();
    assert!(from_config.status.success(), "{}", stderr(&from_config));

    // `moat login` writes the same entry (stdin password), which the next pull finds.
    let login_home = tempfile::tempdir().unwrap();
    let with_env = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_moat"));
        command
            .args(args)
            .env("MOAT_HOME", moat_home("image-auth-login"))
            .env("HOME", login_home.path());
        command
    };
    let mut login = with_env(&["login", &registry.addr, "-u", "moat", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut login.stdin.take().unwrap(),
        format!("{AUTH_PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    assert!(login.wait().unwrap().success());
    let config = login_home.path().join(".docker/config.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let after_login = with_env(&["pull", &reference]).output().unwrap();
    assert!(after_login.status.success(), "{}", stderr(&after_login));
}

/// Docker token auth: the registry sends the client to a token server (the test's own, on
/// loopback), which gives a bearer token for `moat`'s credentials only. A pull without them is
/// refused in one line; with `--registry-auth` it gets a token and succeeds, and the image runs.
#[test]
fn bearer_token_auth_gets_a_token_for_the_credentials_as_root() {
    let registry = Registry::start_with_token_auth();
    push_app(&registry, "app:1");
    let reference = registry.reference("app:1");
    let home = moat_home("image-token");
    let refused = failed_pull(&home, &reference);
    assert!(refused.contains(&registry.addr), "{refused}");

    let auth = format!("moat:{AUTH_PASSWORD}");
    let pulled = moat_as_root(&home, &["pull", "--registry-auth", &auth, &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let run = moat_as_root(&home, &["run", "--isolation", "namespace", "--image", &reference]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run), "hi from /work\nhello\nremoved\n");
}
