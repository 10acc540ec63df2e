//! End to end: the namespace backend run by an unprivileged user ([`moat_runtime::backend::namespace::rootless`]).
//! Root only sets up: the test users `moat-test` (with `/etc/subuid` and `/etc/subgid` ranges,
//! created when missing) and `moat-test-single` (without them), a copy of `moat` and
//! `moat-agentd` every user can run, and a `HOME`/`MOAT_HOME` the user owns. Every `moat`
//! command then runs as that user through `setpriv`. A setup that fails fails the test, saying
//! why. Needs root, `useradd`, `setpriv` (util-linux) and `newuidmap`/`newgidmap` (uidmap).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

mod support;
use support::{DPKG_PROBE, DPKG_PROBE_OUTPUT, require_root, stderr, stdout, syscall_probe};

/// The user with subordinate ids.
const USER: &str = "moat-test";
/// The user without subordinate ids (the single-id map).
const SINGLE_USER: &str = "moat-test-single";
/// The size of the subordinate range the setup gives [`USER`].
const SUB_COUNT: u32 = 65_536;

/// One unprivileged user, ready to run moat.
struct TestUser {
    name: &'static str,
    uid: u32,
    gid: u32,
    bin: PathBuf,
}

/// Creates `name` when missing, with a subordinate range when `subordinate`; fails the test
/// with the reason when it cannot.
fn ensure_user(name: &'static str, subordinate: bool) -> TestUser {
    require_root();
    // The tests run on parallel threads: one creates the user and its entries, once.
    static SETUP: Mutex<()> = Mutex::new(());
    let _setup = SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for tool in ["useradd", "setpriv", "newuidmap", "newgidmap"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "{tool} is not on PATH: install passwd, util-linux and uidmap (apt-get install uidmap)"
        );
    }
    if id(name, "-u").is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .expect("run useradd");
        assert!(out.status.success(), "useradd {name} failed: {}", stderr(&out));
    }
    let uid = id(name, "-u").unwrap_or_else(|| panic!("id -u {name}: no such user after useradd"));
    let gid = id(name, "-g").unwrap_or_else(|| panic!("id -g {name}: no such group"));
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let has = text.lines().any(|l| l.starts_with(&format!("{name}:")));
        if subordinate && !has {
            let line = format!("{name}:{}:{SUB_COUNT}\n", free_base(&text));
            std::fs::write(file, format!("{text}{line}"))
                .unwrap_or_else(|err| panic!("add {line:?} to {file}: {err}"));
        }
        assert!(
            subordinate || !has,
            "{file} has an entry for {name}, which must have none (remove it)"
        );
    }
    TestUser { name, uid, gid, bin: shared_bin() }
}

/// The first base after every entry of a subordinate-id file (at least 100000).
fn free_base(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':').skip(1).map(str::parse::<u64>);
            Some(fields.next()?.ok()? + fields.next()?.ok()?)
        })
        .chain([100_000])
        .max()
        .unwrap_or(100_000)
}

fn id(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|_| out.status.success())
}

/// `moat`, `moat-sandbox` and `moat-agentd` copied where any user can run them (the build may
/// sit under a directory only root can enter).
fn shared_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let executables = support::executables();
        let bin = std::env::temp_dir().join("moat-rootless-bin");
        let _ = std::fs::remove_dir_all(&bin);
        std::fs::create_dir_all(&bin).unwrap();
        let sandbox = PathBuf::from(env!("CARGO_BIN_EXE_moat-sandbox"));
        for source in [&executables.moat, &sandbox, &executables.agentd] {
            let target = bin.join(source.file_name().unwrap());
            std::fs::copy(source, &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    })
    .clone()
}

/// A fresh home directory owned by `user`, mode 0700, under the system temp directory.
fn user_home(user: &TestUser, test: &str) -> PathBuf {
    let home = std::env::temp_dir().join(format!("moat-rootless-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    chown(&home, user);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    home
}

fn chown(path: &Path, user: &TestUser) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
}

/// Runs `moat ARGS...` as `user` with `HOME=home` and `MOAT_HOME=home/moat`.
fn moat_as(user: &TestUser, home: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", user.name, "--regid", user.name, "--init-groups", "--"])
        .arg(user.bin.join("moat"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", home)
        .env("MOAT_HOME", home.join("moat"))
        .current_dir(home)
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv")
}

/// The subordinate base of `name` in `file`.
fn sub_base(file: &str, name: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap();
    line.split(':').nth(1).unwrap().to_owned()
}

fn map_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn run_returns_the_exit_code_with_the_users_map_and_seccomp_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "run");
    let script = "echo hello; cat /proc/self/uid_map /proc/self/gid_map; \
                  grep ^Seccomp: /proc/self/status; exit 7";
    let output =
        moat_as(&user, &home, &["run", "--isolation", "namespace", "--", "sh", "-c", script]);
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(7), "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("hello\n"), "{out}");
    let lines = map_lines(&out);
    let uid_base = sub_base("/etc/subuid", USER);
    let gid_base = sub_base("/etc/subgid", USER);
    assert_eq!(lines[1], format!("0 {} 1", user.uid), "{out}");
    assert_eq!(lines[2], format!("1 {uid_base} 65535"), "{out}");
    assert_eq!(lines[3], format!("0 {} 1", user.gid), "{out}");
    assert_eq!(lines[4], format!("1 {gid_base} 65535"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // The documented warning, once: no pids limit applies unprivileged on this host.
    assert_eq!(err.lines().filter(|l| l.contains("no pids limit applies")).count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_volume_of_the_user_is_writable_and_keeps_their_ownership_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "volume");
    let volume = home.join("work");
    std::fs::create_dir(&volume).unwrap();
    chown(&volume, &user);
    let bind = format!("{}:/work", volume.display());
    let script = "echo data > /work/file && mkdir /work/dir && stat -c '%u %g' /work/file";
    let output = moat_as(
        &user,
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--pids-limit",
            "0",
            "-v",
            &bind,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    // Inside, the user's files belong to the sandbox's root.
    assert_eq!(stdout(&output), "0 0\n");
    for path in [volume.join("file"), volume.join("dir")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{}", path.display());
    }
    assert_eq!(std::fs::read_to_string(volume.join("file")).unwrap(), "data\n");
    // --pids-limit 0 asks for no limit: nothing to warn about.
    assert!(!err.contains("no pids limit applies"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn create_exec_ls_inspect_stop_rm_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "lifecycle");
    let created = moat_as(&user, &home, &["create", "box", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "stderr: {}", stderr(&created));
    assert!(stderr(&created).contains("no pids limit applies"), "{}", stderr(&created));
    let exec = moat_as(&user, &home, &["exec", "box", "--", "sh", "-c", "echo in; exit 3"]);
    assert_eq!(
        (exec.status.code(), stdout(&exec).as_str()),
        (Some(3), "in\n"),
        "{}",
        stderr(&exec)
    );
    let ls = stdout(&moat_as(&user, &home, &["ls"]));
    assert!(ls.lines().any(|l| l.starts_with("box ") && l.contains("running")), "{ls}");
    let inspect = moat_as(&user, &home, &["inspect", "box"]);
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let isolation = &report["isolation"];
    assert_eq!(isolation["pids_limit"], serde_json::Value::Null, "{isolation}");
    assert!(isolation["limits_not_applied"].as_str().unwrap().contains("no pids"), "{isolation}");
    let uid_map = isolation["live"]["uid_map"].as_str().unwrap();
    assert!(uid_map.starts_with(&format!("0 {} 1; 1 ", user.uid)), "{uid_map}");
    assert_eq!(isolation["live"]["agent_seccomp"], "2");
    let stop = moat_as(&user, &home, &["stop", "box"]);
    assert_eq!(stop.status.code(), Some(0), "stderr: {}", stderr(&stop));
    let rm = moat_as(&user, &home, &["rm", "box"]);
    assert_eq!(rm.status.code(), Some(0), "stderr: {}", stderr(&rm));
    let ls = stdout(&moat_as(&user, &home, &["ls"]));
    assert!(!ls.contains("box"), "{ls}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn explicit_limits_are_refused_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "limits");
    for (option, value) in [("--pids-limit", "64"), ("--memory", "256"), ("--cpus", "1")] {
        let output = moat_as(
            &user,
            &home,
            &["run", "--isolation", "namespace", option, value, "--", "true"],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{option}: {err}");
        assert!(err.contains(&format!("{option}: moat runs unprivileged")), "{err}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// `--image` needs root on both backends: refused with that reason before the backend is probed
/// (so an unprivileged user on a host without KVM still learns the real obstacle).
#[test]
fn an_image_is_refused_with_the_reason_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "image");
    for isolation in ["namespace", "vm"] {
        let output = moat_as(
            &user,
            &home,
            &["run", "--isolation", isolation, "--image", "127.0.0.1:1/x:1", "--", "true"],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(125), "{isolation}: {err}");
        assert!(err.contains("--image needs root"), "{isolation}: {err}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_user_without_subordinate_ids_gets_the_single_id_map_and_a_warning_as_unprivileged_user() {
    let user = ensure_user(SINGLE_USER, false);
    let home = user_home(&user, "single");
    let output = moat_as(
        &user,
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--pids-limit",
            "0",
            "--",
            "cat",
            "/proc/self/uid_map",
        ],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(map_lines(&stdout(&output)), [format!("0 {} 1", user.uid)]);
    assert_eq!(err.lines().filter(|l| l.contains("single-id map")).count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_rootfs_directory_of_the_user_is_the_root_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "rootfs");
    let rootfs = home.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "/bin/busybox is missing: install busybox-static");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("marker"), "from the user's rootfs\n").unwrap();
    let root = rootfs.to_str().unwrap();
    let output = moat_as(
        &user,
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "--pids-limit",
            "0",
            "--rootfs",
            root,
            "--",
            "/bin/sh",
            "-c",
            "/bin/busybox cat /marker && echo new > /new",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "from the user's rootfs\n");
    // The agent's overlay takes the writes: the user's directory is never written.
    assert!(!rootfs.join("new").exists(), "a write reached the --rootfs directory");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn doctor_reports_the_users_map_and_a_working_namespace_probe_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "doctor");
    let output = moat_as(&user, &home, &["doctor"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let base = sub_base("/etc/subuid", USER);
    let user_line = out.lines().find(|l| l.starts_with("user ")).unwrap_or_else(|| panic!("{out}"));
    assert!(user_line.contains(&format!("unprivileged (uid {})", user.uid)), "{user_line}");
    assert!(user_line.contains(&format!("uids from {base}")), "{user_line}");
    assert!(out.lines().any(|l| l.starts_with("namespaces ok")), "{out}");
    assert!(out.contains("namespace: this host can run the namespace backend"), "{out}");
    assert!(out.contains("no pids, memory or CPU limit"), "{out}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn the_default_profile_denies_kernel_calls_masks_proc_and_runs_python_and_cc_as_unprivileged_user()
{
    let user = ensure_user(USER, true);
    let home = user_home(&user, "probes");
    let denied: &[(&str, i64, u64)] = &[
        ("keyctl", libc::SYS_keyctl, 0),
        ("bpf", libc::SYS_bpf, 0),
        ("perf_event_open", libc::SYS_perf_event_open, 0),
        ("userfaultfd", libc::SYS_userfaultfd, 0),
        ("unshare_newuser", libc::SYS_unshare, libc::CLONE_NEWUSER as u64),
        ("mount", libc::SYS_mount, 0),
        ("init_module", libc::SYS_init_module, 0),
    ];
    let python = syscall_probe(denied);
    // Masked paths read as nothing; a C program compiles and runs in the throw-away root.
    let script = "python3 -c \"$PROBE\"; \
                  echo masked $(cat /proc/kcore /proc/keys /proc/timer_list 2>/dev/null | wc -c); \
                  printf 'int main(void) { return 3; }\\n' >/tmp/t.c && cc /tmp/t.c -o /tmp/t; \
                  /tmp/t; echo cc $?";
    let output = moat_as(
        &user,
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "-e",
            &format!("PROBE={python}"),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "stdout: {out}\nstderr: {err}");
    for (name, _, _) in denied {
        assert!(out.lines().any(|l| l == format!("{name} {}", libc::EPERM)), "{name}: {out}");
    }
    assert!(out.lines().any(|l| l == "masked 0"), "{out}");
    assert!(out.lines().any(|l| l == "cc 3"), "{out}\nstderr: {err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn dpkg_builds_and_installs_a_package_as_unprivileged_user() {
    let user = ensure_user(USER, true);
    let home = user_home(&user, "dpkg");
    let output =
        moat_as(&user, &home, &["run", "--isolation", "namespace", "--", "sh", "-c", DPKG_PROBE]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), DPKG_PROBE_OUTPUT, "stderr: {}", stderr(&output));
    let _ = std::fs::remove_dir_all(&home);
}
