//! End to end: the namespace backend's hardening, probed from inside real sandboxes: the seccomp
//! filter of each `--security-profile`, the capability bounding set, the masked and read-only
//! kernel paths, the pids limit (`--pids-limit` and its default), and that ordinary work (python3,
//! a C compiler, a PTY, shell pipelines) still runs under the default profile. Needs root.
//!
//! The probes call syscalls by number through python3's ctypes; the numbers come from the libc
//! crate of this build, so they are right on x86_64 and aarch64 alike.

use std::path::Path;

mod support;
use support::{
    DPKG_PROBE, DPKG_PROBE_OUTPUT, moat, moat_home, processes_mentioning, require_root, stderr,
    stdout, syscall_probe,
};

/// Runs `python3 -c PROGRAM` in a fresh sandbox with `extra` options; returns its stdout.
fn run_python(test: &str, extra: &[&str], program: &str) -> String {
    let home = moat_home(test);
    let mut args = vec!["run", "--isolation", "namespace"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", "-c", program]);
    let output = moat(&home, &args);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    stdout(&output)
}

/// The seccomp, capability and no_new_privs lines of `/proc/self/status` inside a sandbox.
fn status_fields(test: &str, extra: &[&str]) -> String {
    let home = moat_home(test);
    let mut args = vec!["run", "--isolation", "namespace"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "grep", "-E", "^(Seccomp|CapBnd|CapEff|NoNewPrivs):"]);
    args.push("/proc/self/status");
    let output = moat(&home, &args);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    stdout(&output)
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const CLONE_NEWNS: u64 = libc::CLONE_NEWNS as u64;

#[test]
fn default_profile_installs_a_filter_and_keeps_dockers_capabilities_as_root() {
    require_root();
    let status = status_fields("hd-status", &[]);
    assert_eq!(field(&status, "Seccomp"), "2", "{status}");
    assert_eq!(field(&status, "CapBnd"), DOCKER_DEFAULT_CAPS, "{status}");
    assert_eq!(field(&status, "CapEff"), DOCKER_DEFAULT_CAPS, "{status}");
    // No no_new_privs, so set-user-id programs in an image keep working.
    assert_eq!(field(&status, "NoNewPrivs"), "0", "{status}");
}

#[test]
fn default_profile_denies_kernel_attack_surface_with_eperm_as_root() {
    require_root();
    let denied: &[(&str, i64, u64)] = &[
        ("keyctl", libc::SYS_keyctl, 0),
        ("add_key", libc::SYS_add_key, 0),
        ("request_key", libc::SYS_request_key, 0),
        ("bpf", libc::SYS_bpf, 0),
        ("perf_event_open", libc::SYS_perf_event_open, 0),
        ("userfaultfd", libc::SYS_userfaultfd, 0),
        ("init_module", libc::SYS_init_module, 0),
        ("finit_module", libc::SYS_finit_module, 0),
        ("delete_module", libc::SYS_delete_module, 0),
        ("kexec_load", libc::SYS_kexec_load, 0),
        ("unshare_newuser", libc::SYS_unshare, CLONE_NEWUSER),
        ("clone_newuser", libc::SYS_clone, CLONE_NEWUSER),
        ("mount", libc::SYS_mount, 0),
        ("umount2", libc::SYS_umount2, 0),
        ("pivot_root", libc::SYS_pivot_root, 0),
        ("swapon", libc::SYS_swapon, 0),
        ("reboot", libc::SYS_reboot, 0),
        ("syslog", libc::SYS_syslog, 0),
        ("acct", libc::SYS_acct, 0),
        ("settimeofday", libc::SYS_settimeofday, 0),
        ("clock_settime", libc::SYS_clock_settime, 0),
        ("adjtimex", libc::SYS_adjtimex, 0),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, 0),
        ("name_to_handle_at", libc::SYS_name_to_handle_at, 0),
        ("quotactl", libc::SYS_quotactl, 0),
        ("personality_odd", libc::SYS_personality, 0x0040_0000),
    ];
    let mut calls = denied.to_vec();
    calls.push(("clone3", libc::SYS_clone3, 0));
    calls.push(("personality_query", libc::SYS_personality, 0xffff_ffff));
    calls.push(("getpid", libc::SYS_getpid, 0));
    let out = run_python("hd-calls", &[], &syscall_probe(&calls));
    for (name, _, _) in denied {
        assert!(out.lines().any(|l| l == format!("{name} {}", libc::EPERM)), "{name}: {out}");
    }
    // clone3's flags are out of a filter's reach: ENOSYS makes libc fall back to clone.
    assert!(out.lines().any(|l| l == format!("clone3 {}", libc::ENOSYS)), "{out}");
    assert!(out.lines().any(|l| l == "personality_query 0"), "{out}");
    assert!(out.lines().any(|l| l == "getpid 0"), "{out}");
}

#[test]
fn restricted_profile_also_denies_ptrace_namespaces_and_io_uring_as_root() {
    require_root();
    let calls: &[(&str, i64, u64)] = &[
        ("ptrace", libc::SYS_ptrace, 0),
        ("unshare_newns", libc::SYS_unshare, CLONE_NEWNS),
        ("setns", libc::SYS_setns, 0),
        ("chroot", libc::SYS_chroot, 0),
        ("io_uring_setup", libc::SYS_io_uring_setup, 0),
        ("process_vm_readv", libc::SYS_process_vm_readv, 0),
        ("keyctl", libc::SYS_keyctl, 0),
    ];
    let out =
        run_python("hd-restrict", &["--security-profile", "restricted"], &syscall_probe(calls));
    for (name, _, _) in calls {
        assert!(out.lines().any(|l| l == format!("{name} {}", libc::EPERM)), "{name}: {out}");
    }
}

#[test]
fn default_profile_still_allows_ptrace_as_root() {
    require_root();
    // ptrace(PTRACE_TRACEME) succeeds: debuggers and strace work under the default profile.
    let calls: &[(&str, i64, u64)] = &[("ptrace", libc::SYS_ptrace, 0)];
    let out = run_python("hd-ptrace", &[], &syscall_probe(calls));
    assert_eq!(out, "ptrace 0\n");
}

#[test]
fn none_profile_has_no_filter_and_every_capability_as_root() {
    require_root();
    let status = status_fields("hd-none", &["--security-profile", "none"]);
    assert_eq!(field(&status, "Seccomp"), "0", "{status}");
    let bounding = u64::from_str_radix(field(&status, "CapBnd"), 16).unwrap();
    assert_ne!(bounding & (1 << 21), 0, "CAP_SYS_ADMIN kept under none: {status}");
}

#[test]
fn kernel_paths_are_masked_or_read_only_as_root() {
    require_root();
    let home = moat_home("hd-masks");
    let script = "for f in /proc/keys /proc/timer_list /proc/sched_debug /proc/sysrq-trigger \
                  /proc/kcore; do [ -e $f ] && printf '%s %s\\n' $f $(wc -c < $f); done; \
                  for d in /proc/acpi /proc/scsi /sys/firmware; do \
                  [ -d $d ] && echo $d $(ls -A $d | wc -l); done; \
                  echo x > /proc/sys/kernel/domainname 2>/dev/null && echo proc-sys-writable; \
                  touch /sys/moat-probe 2>/dev/null && echo sys-writable; \
                  echo > /proc/sysrq-trigger 2>/dev/null; echo done";
    let output = moat(&home, &["run", "--isolation", "namespace", "--", "sh", "-c", script]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let out = stdout(&output);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("writable"), "{out}");
    // Every path that exists reads as empty (a masked file is /dev/null, a masked dir empty).
    for line in out.lines().filter(|l| l.starts_with('/')) {
        assert!(line.ends_with(" 0"), "{line} is not empty in {out}");
    }
    assert!(out.contains("/sys/firmware 0") || !Path::new("/sys/firmware").exists(), "{out}");
}

#[test]
fn pids_limit_stops_a_fork_loop_inside_and_nothing_is_left_as_root() {
    require_root();
    // 4321 marks this test's sleepers on the host's process list.
    let program = "import subprocess, errno\n\
                   n = 0\n\
                   try:\n\
                   \x20   while n < 6000:\n\
                   \x20       subprocess.Popen(['sleep', '4321'], stdout=subprocess.DEVNULL,\n\
                   \x20                        stderr=subprocess.DEVNULL)\n\
                   \x20       n += 1\n\
                   except OSError as e:\n\
                   \x20   print('stopped', n, errno.errorcode[e.errno])\n";
    let out = run_python("hd-pids", &["--pids-limit", "64"], program);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"stopped"), "{out}");
    let started: u32 = words[1].parse().unwrap();
    assert!((32..64).contains(&started), "{out}");
    assert_eq!(words[2], "EAGAIN", "{out}");
    // The host is unaffected and the sandbox's processes died with it.
    assert!(std::process::Command::new("true").status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !processes_mentioning("sleep 4321").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(processes_mentioning("sleep 4321"), Vec::<String>::new());
}

#[test]
fn a_sandbox_has_a_pids_limit_of_4096_by_default_as_root() {
    require_root();
    let home = moat_home("hd-pidsdef");
    let output = moat(&home, &["create", "pidsdefault", "--isolation", "namespace"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let inspect = moat(&home, &["inspect", "pidsdefault"]);
    assert_eq!(inspect.status.code(), Some(0), "{}", stderr(&inspect));
    let state: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let leaf = format!("pidsdefault-{}", state["pid"]);
    let v2 = Path::new("/sys/fs/cgroup").join(format!("moat-{leaf}"));
    let v1 = Path::new("/sys/fs/cgroup/pids/moat").join(&leaf);
    let limit = std::fs::read_to_string(v2.join("pids.max"))
        .or_else(|_| std::fs::read_to_string(v1.join("pids.max")));
    let removed = moat(&home, &["rm", "-f", "pidsdefault"]);
    assert_eq!(limit.expect("the sandbox's pids cgroup").trim(), "4096");
    assert_eq!(removed.status.code(), Some(0), "{}", stderr(&removed));
    // A killed sandbox process cannot remove its cgroup: `moat rm -f` does.
    assert!(!v2.exists() && !v1.exists(), "{} or {} left behind", v2.display(), v1.display());
    // `moat inspect` showed the isolation the live sandbox had, read back from its agent.
    let isolation = &state["isolation"];
    assert_eq!(isolation["backend"], "namespace", "{state}");
    assert_eq!(isolation["security_profile"], "default", "{state}");
    assert_eq!(isolation["pids_limit"], 4096, "{state}");
    assert_eq!(isolation["live"]["agent_seccomp"], "2", "{state}");
    assert_eq!(isolation["live"]["pids_max"], "4096", "{state}");
    let uid_map = isolation["live"]["uid_map"].as_str().unwrap_or_default().to_owned();
    let fields: Vec<&str> = uid_map.split(' ').collect();
    assert_eq!((fields.len(), fields[0], fields[2]), (3, "0", "65536"), "{state}");
    assert!(host_range().block_of(fields[1].parse().unwrap()).is_some(), "{state}");
}

#[test]
fn ordinary_work_runs_under_the_default_profile_as_root() {
    require_root();
    for tool in ["/usr/bin/cc", "/usr/bin/setpriv", "/usr/bin/python3"] {
        assert!(Path::new(tool).exists(), "this test needs {tool} on the host (the sandbox root)");
    }
    let home = moat_home("hd-work");
    let script = "set -e; cd /tmp; \
                  printf '#include <stdio.h>\\nint main(void){puts(\"compiled\");return 0;}\\n' \
                  > hello.c; cc -o hello hello.c; ./hello; \
                  python3 -c 'import threading, subprocess; t = threading.Thread(target=print, \
                  args=(\"thread\",)); t.start(); t.join(); \
                  print(subprocess.run([\"echo\", \"subprocess\"], capture_output=True).stdout \
                  .decode().strip())'; \
                  seq 1 100 | sort -rn | head -1; \
                  setpriv --reuid 65534 --regid 65534 --clear-groups id -u";
    let output = moat(&home, &["run", "--isolation", "namespace", "--", "sh", "-c", script]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "compiled\nthread\nsubprocess\n100\n65534\n");
    let pty = moat(
        &home,
        &["run", "--isolation", "namespace", "-t", "--", "sh", "-c", "test -t 0 && echo pty"],
    );
    assert_eq!(pty.status.code(), Some(0), "{}", stderr(&pty));
    assert!(stdout(&pty).contains("pty"), "{}", stdout(&pty));
}

/// Runs `sh -c script` as host uid and gid `id` (no supplementary groups, no capabilities): the
/// host's view of a sandbox's root under an unprivileged id map.
fn sh_as(id: u32, script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .uid(id)
        .gid(id)
        .output()
        .expect("run /bin/sh")
}

#[test]
fn idmapped_bind_gives_the_sandbox_roots_files_to_the_directory_owner_as_root() {
    use moat_runtime::backend::namespace::idmap::{RESERVED_BASE, owner_map};
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root();
    const OWNER: u32 = 4321;
    let scratch = std::env::temp_dir().join(format!("moat-idmount-{}", std::process::id()));
    let (volume, mnt) = (scratch.join("volume"), scratch.join("mnt"));
    for dir in [&scratch, &volume, &mnt] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::chown(&volume, Some(OWNER), Some(OWNER)).unwrap();
    // A host-root file in the volume: mode 0644, so only its owner may write it.
    std::fs::write(volume.join("root-file"), "host\n").unwrap();
    let map = owner_map(OWNER, RESERVED_BASE);
    let userns = moat_runtime::backend::namespace::userns::user_namespace(&map, &map).unwrap();
    moat_runtime::backend::namespace::idmount::idmapped_bind(&volume, &mnt, userns.as_fd(), false)
        .unwrap();

    let seen = std::fs::metadata(&mnt).unwrap();
    let root_file = std::fs::metadata(mnt.join("root-file")).unwrap();
    let write = sh_as(RESERVED_BASE, &format!("echo sandbox > {}/new", mnt.display()));
    let append = sh_as(RESERVED_BASE, &format!("echo x >> {}/root-file", mnt.display()));
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();

    // Through the mount the owner is the sandbox's root; host root is unmapped (the overflow id).
    assert_eq!((seen.uid(), seen.gid()), (RESERVED_BASE, RESERVED_BASE));
    assert_eq!((root_file.uid(), root_file.gid()), (65534, 65534));
    assert_eq!(write.status.code(), Some(0), "{}", String::from_utf8_lossy(&write.stderr));
    assert_ne!(append.status.code(), Some(0), "the sandbox's root wrote a host-root file");
    let new = std::fs::metadata(volume.join("new")).unwrap();
    assert_eq!((new.uid(), new.gid()), (OWNER, OWNER), "on disk the volume's owner owns it");
    assert_eq!(std::fs::read_to_string(volume.join("root-file")).unwrap(), "host\n");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The pool this host's sandboxes get their ids from, as `moat doctor` reports it.
fn host_range() -> moat_runtime::backend::namespace::idmap::IdPool {
    moat_runtime::backend::namespace::idmap::choose_for_host()
        .expect("an unprivileged id range on this host")
}

#[test]
fn a_sandboxs_ids_map_to_an_unprivileged_host_range_as_root() {
    require_root();
    let pool = host_range();
    let home = moat_home("hd-idmap");
    let maps = "cat /proc/self/uid_map /proc/self/gid_map";
    // A detached sandbox holds its block while a second one runs: each has its own ids.
    let created = moat(&home, &["create", "idmap-held", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let held = moat(&home, &["exec", "idmap-held", "--", "sh", "-c", maps]);
    let output = moat(&home, &["run", "--isolation", "namespace", "--", "sh", "-c", maps]);
    let removed = moat(&home, &["rm", "-f", "idmap-held"]);
    assert_eq!(removed.status.code(), Some(0), "{}", stderr(&removed));
    let mut bases = Vec::new();
    for output in [&held, &output] {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        let maps: Vec<Vec<String>> = stdout(output)
            .lines()
            .map(|line| line.split_whitespace().map(str::to_owned).collect())
            .collect();
        assert_eq!(maps.len(), 2, "{maps:?}");
        let base: u32 = maps[0][1].parse().unwrap();
        let ids = pool.block(pool.block_of(base).expect("a block of the pool"));
        let (uid_base, gid_base) = (ids.uids.base.to_string(), ids.gids.base.to_string());
        assert_eq!(maps, [["0", uid_base.as_str(), "65536"], ["0", gid_base.as_str(), "65536"]]);
        assert!(ids.uids.base >= 65_536 && ids.gids.base >= 65_536, "{ids:?}");
        bases.push(base);
    }
    assert_ne!(bases[0], bases[1], "two running sandboxes share host ids");
}

/// A directory under cargo's tmp dir owned by `owner`, holding a host-root file `root-file`
/// (mode 0644).
fn volume_dir(name: &str, owner: u32) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moat-volumes").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root-file"), "host\n").unwrap();
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).unwrap();
    dir
}

#[test]
fn files_the_sandbox_root_writes_in_a_volume_belong_to_its_host_owner_as_root() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let (user, root) = (volume_dir("owned-4321", 4321), volume_dir("owned-root", 0));
    let home = moat_home("hd-volume-owner");
    let volumes = format!("{}:/user", user.display());
    let root_volume = format!("{}:/rootvol", root.display());
    let script = "set -e; stat -c '%u:%g' /user /user/root-file; echo a > /user/new; \
                  mkdir /user/sub; echo b > /rootvol/new; \
                  if echo x >> /user/root-file; then echo wrote; else echo denied; fi";
    let output = moat(
        &home,
        &[
            "run",
            "--isolation",
            "namespace",
            "-v",
            &volumes,
            "-v",
            &root_volume,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Inside, the volume's owner is the sandbox's root; host root is nobody.
    assert_eq!(stdout(&output), "0:0\n65534:65534\ndenied\n");
    for made in ["new", "sub"] {
        let meta = std::fs::metadata(user.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4321), "{made}");
    }
    let meta = std::fs::metadata(root.join("new")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "a root-owned volume's writes stay root's");
    assert_eq!(std::fs::read_to_string(user.join("root-file")).unwrap(), "host\n");
}

#[test]
fn host_root_files_outside_volumes_are_not_writable_by_the_sandbox_root_as_root() {
    require_root();
    let home = moat_home("hd-host-files");
    // /usr is the host's, idmapped read-only: its root-owned files read as the sandbox root's,
    // but neither writing them nor remounting /usr read-write works (the mount is locked).
    let script = "stat -c '%u' /usr/bin/env; \
                  if echo x >> /usr/bin/env; then echo wrote; else echo denied; fi; \
                  if mount -o remount,bind,rw /usr; then echo remounted; else echo locked; fi; \
                  if touch /usr/new-file; then echo created; else echo denied; fi";
    let output = moat(&home, &["run", "--isolation", "namespace", "--", "sh", "-c", script]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "0\ndenied\nlocked\ndenied\n", "{}", stderr(&output));
    assert!(!Path::new("/usr/new-file").exists());
    // On the host, what the sandbox runs as is an id in its range, never host root.
    let home = moat_home("hd-host-ids");
    let created = moat(&home, &["create", "hostids", "--isolation", "namespace"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let inspect = moat(&home, &["inspect", "hostids"]);
    let state: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let agent = state["isolation"]["live"]["agent_pid"].as_u64().expect("a live agent");
    let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    let removed = moat(&home, &["rm", "-f", "hostids"]);
    assert_eq!(removed.status.code(), Some(0), "{}", stderr(&removed));
    let uids: Vec<&str> = field(&status, "Uid").split_whitespace().collect();
    assert!(uids.iter().all(|uid| *uid == uids[0]), "{uids:?}");
    let block = host_range().block_of(uids[0].parse().unwrap());
    assert!(block.is_some(), "the agent runs as host uid {}, not its block's root", uids[0]);
}

#[test]
fn the_identity_map_start_still_works_when_asked_for_as_root() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let volume = volume_dir("identity-4321", 4321);
    let home = moat_home("hd-identity");
    let bind = format!("{}:/v", volume.display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["run", "--isolation", "namespace", "-v", &bind, "--", "sh", "-c"])
        .arg("cat /proc/self/uid_map; echo a > /v/new")
        .env("MOAT_HOME", &home)
        .env(moat_runtime::backend::namespace::idmap::IDENTITY_ENV, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
    // Never weaker silently: the CLI says which map the sandbox got, and why.
    assert!(stderr(&output).contains("identity id map"), "{}", stderr(&output));
    // Without the range, the sandbox's root writes as host root.
    assert_eq!(std::fs::metadata(volume.join("new")).unwrap().uid(), 0);
}

#[test]
fn dpkg_builds_and_installs_a_package_under_the_default_profile_as_root() {
    require_root();
    let home = moat_home("hd-dpkg");
    let output = moat(&home, &["run", "--isolation", "namespace", "--", "sh", "-c", DPKG_PROBE]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), DPKG_PROBE_OUTPUT, "stderr: {}", stderr(&output));
}

/// Regression: each id-map user namespace is made by a forked holder child. Holders forked at
/// the same moment by different threads inherit each other's pipe ends (no exec, so `O_CLOEXEC`
/// does not close them); when a holder waited for EOF on its pipe, two of them could wait for each
/// other forever (seen: `api_as_root` hung with two holders blocked in `read`). Many threads
/// making namespaces at once must all finish.
#[test]
fn concurrent_user_namespaces_never_wait_for_each_other_as_root() {
    require_root();
    let (done, finished) = std::sync::mpsc::channel();
    for _ in 0..8 {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..25 {
                let map = "0 1879048192 65536\n";
                let ns =
                    moat_runtime::backend::namespace::userns::user_namespace(map, map).unwrap();
                drop(ns);
            }
            done.send(()).unwrap();
        });
    }
    for i in 0..8 {
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("only {i} of 8 threads made their 25 namespaces in 120 s"));
    }
}
