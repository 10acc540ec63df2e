//! The VM backend: a libkrun microVM with the static `moat-agentd` as its init.
//!
//! ```text
//!  moat __sandbox DIR  (supervisor; its pid is the sandbox's)
//!   └─ unshare --mount --propagation private moat __vm DIR   (the VM process; unprivileged,
//!        with `--user --map-root-user` first, [`vm_unshare_args`]: not yet booted on a real host)
//!        root: --rootfs DIR as is, or the host root assembled on DIR/root (private mounts)
//!        listen DIR/agent-vm.sock ─► thread: accept the agent (timeout: AgentNeverConnected
//!          with the guest console's tail) ─► core.bootstrap handshake (virtiofs tags)
//!          ─► relay on DIR/agent.sock ─► "ok" ─► serve until the guest closes
//!        main thread: krun_start_enter (never returns; libkrun _exits when the guest powers off)
//!   waitpid: exit 0 after "ok" ─► record `stopped`; anything else ─► the cause on the startup
//!   pipe (VMM error text, guest console tail) or, once running, the sandbox reads `crashed`
//! ```
//!
//! Why a supervisor: libkrun ends the VM process with `_exit`, so no hook of ours runs after the
//! guest powers off; the parent learns the outcome from `waitpid` instead and records it. The
//! VM process itself follows DESIGN.md's process model (relay and agent channel on threads,
//! `krun_start_enter` on the main thread).
//!
//! Guest view: the root is a read-only virtiofs share (tag `/dev/root`), agentd is served in it
//! as `/init.krun` by libkrun's overlay-file API (so the user's root is never written, not even
//! to add the init), agentd overlays a tmpfs upper layer on it, and `-v`/`--script` shares are
//! virtiofs tags `moat-share-N` that agentd mounts. The shared root never has mounts below it:
//! libkrun announces those as virtiofs submounts, which overlayfs refuses to traverse (`EREMOTE`,
//! seen as "Object is remote" on every exec). So `--rootfs DIR` is a non-recursive bind of DIR
//! (its own filesystem, as on the namespace backend), `--image REF` is the image's layers stacked
//! by a read-only overlay in the VM process's mount namespace (the namespace backend's
//! [`crate::image::mount::mount_layers`]; docs/VM-BACKEND.md says why not a share per layer),
//! and `--rootfs host` shares a skeleton
//! (generated `/etc`, empty directories, the host's top-level symlinks) as the root and each
//! host system directory (`/usr`, `/lib`, ...) as its own read-only tag `moat-sys-NAME`, which
//! agentd mounts nosuid and nodev at the same path. The guest console (kernel messages and the
//! agent's stderr) goes to `DIR/logs/kernel.log`.
//!
//! Network (docs/NETWORK.md): with none asked for (the default), the vsock device has no TSI and
//! the guest has no network at all. With one, libkrun's TSI (transparent socket impersonation)
//! makes each of the guest's INET sockets a socket of the VM process, which `unshare --net` put
//! in a network namespace of its own; the supervisor wires that namespace to the same router
//! namespace, ruleset and DNS forwarder as the namespace backend's ([`crate::network::attach`])
//! before it passes "ok" on. The policy is judged on the VM process's sockets, outside the guest,
//! which can change nothing there. The guest's `/etc/resolv.conf` is a root patch naming the
//! forwarder; published ports reach the VM process's namespace, where TSI listens for a guest
//! server.

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_protocol::payload::bootstrap::GuestBootstrap;
use moat_vmm::{Share as VmShare, VmConfig, VsockDirection, VsockPort};

use crate::api::config::RootSource;
use crate::config::{Share, ShareNaming};
use crate::error::RuntimeError;
use crate::limits::{
    POLL_INTERVAL_MS, VM_AGENT_CONNECT_TIMEOUT_MS, VM_LOG_TAIL_LINES, VM_POWER_OFF_GRACE_MS,
};
use crate::store::home::{SandboxDir, SandboxSpec, tail_lines};
use crate::supervisor::{ENDED_UNASKED, STARTUP_OK, TimeLimits, report_startup};

/// The vsock port the guest agent connects to (agentd's default as a VM's init).
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The host's vsock CID, which the guest agent connects to.
pub const HOST_CID: u32 = 2;

/// vCPUs when `--cpus` is not given.
pub const DEFAULT_VCPUS: u8 = 1;

/// Guest RAM in MiB when `--memory` is not given.
pub const DEFAULT_MEMORY_MIB: u32 = 512;

/// libkrun's log level on the sandbox log: info, so the log says how the guest ended (libkrun
/// reports a power-off, a reset or a triple fault only at info), besides warnings and errors.
const VMM_LOG_LEVEL: u32 = 3;

/// `moat __sandbox DIR` for a VM: starts the VM process, forwards its startup line, waits for
/// it and records how it ended.
pub fn supervise(dir: &SandboxDir) -> Result<(), RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("find own executable", "moat"))?;
    let network = dir.read_spec()?.config.network;
    let networked = network.needs_network();
    let mut command = Command::new("unshare");
    command
        .args(vm_unshare_args(crate::backend::namespace::rootless::is_rootless(), networked))
        .arg(exe)
        .arg("__vm")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    crate::backend::namespace::pre_exec::kill_with_parent(&mut command);
    let mut child = command.spawn().map_err(RuntimeError::io("spawn", "unshare"))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let mut line = line.trim_end().to_owned();
    // Held until the VM process ends: dropping it takes the guest network down. Wired before
    // "ok" is passed on, so no client of this sandbox runs anything before the network is there.
    // `unshare` execs the VM process: its pid is the child's, and its network namespace (new,
    // empty) is the one the router gets wired to.
    let mut router = None;
    if line == STARTUP_OK && networked {
        match crate::network::attach(
            &network,
            child.id(),
            dir,
            crate::network::GuestResolver::WrittenAtBoot,
        ) {
            Ok(wired) => router = wired,
            Err(err) => {
                tracing::error!(%err, "the guest network could not be set up");
                let _ = child.kill();
                line = format!("error: {}", one_line(&err.to_string()));
            }
        }
    }
    let line = line.as_str();
    let started = line == STARTUP_OK;
    if started || line.starts_with("error: ") {
        report_startup(line);
    }
    let status = child.wait().map_err(RuntimeError::io("wait for", "the VM process"))?;
    drop(router);
    if started {
        if status.success() {
            // libkrun ends the process with `_exit` on any guest power-off or reset: only the
            // reason file (a time limit, a client's `core.shutdown`) tells an asked-for end from
            // a guest that died by itself.
            match std::fs::read_to_string(dir.stop_reason_file()) {
                Ok(reason) => crate::supervisor::record_own_exit(dir, reason.trim()),
                Err(_) => {
                    let reason = unasked_end_reason(dir);
                    tracing::error!(reason, "the sandbox crashed");
                    crate::supervisor::record_own_crash(dir, &reason);
                }
            }
        } else {
            // Not recorded: a live record whose process is gone reads as `crashed`.
            tracing::error!(%status, "the VM ended abnormally; see logs/kernel.log");
        }
        return Ok(());
    }
    if line.starts_with("error: ") {
        tracing::error!(%status, reason = line, "the VM did not start");
        return Ok(());
    }
    Err(RuntimeError::VmExited {
        status: status.to_string(),
        vmm_log_tail: one_line(&vmm_errors(&dir.sandbox_log())),
        kernel_log_tail: one_line(&tail_lines(&dir.kernel_log(), VM_LOG_TAIL_LINES)),
    })
}

/// Why a VM that nobody asked to stop ended: libkrun's own account of the guest's last exit from
/// the sandbox log, and the last line of the guest console.
fn unasked_end_reason(dir: &SandboxDir) -> String {
    let log = tail_lines(&dir.sandbox_log(), 200);
    let vmm = vmm_exit_line(&log);
    let console = tail_lines(&dir.kernel_log(), 1);
    let console = console.trim();
    format!(
        "{ENDED_UNASKED}: {}; the guest console's last line: {}",
        vmm.map_or_else(
            || {
                "libkrun reported no vCPU exit, so most likely the guest kernel rebooted (a kernel \
                 panic, the agent's death, or the agent powering off after its channel broke: see \
                 logs/kernel.log)"
                    .to_owned()
            },
            |line| format!("libkrun: {line}{}", exit_meaning(line)),
        ),
        if console.is_empty() { "(none)" } else { console },
    )
}

/// The last line in which libkrun reports how a vCPU left the guest (`Received KVM_EXIT_...`),
/// without its log prefix.
fn vmm_exit_line(log: &str) -> Option<&str> {
    log.lines().rev().filter(|l| l.contains("krun_vmm")).find_map(|l| {
        let (_, text) = l.split_once("] ")?;
        let text = text.trim();
        text.starts_with("Received ").then_some(text)
    })
}

/// What a libkrun exit line means for the guest, in words.
fn exit_meaning(line: &str) -> &'static str {
    if line.contains("KVM_EXIT_SHUTDOWN") {
        " (the guest CPU reset itself, most likely a triple fault: a guest reboot normally ends \
         through the i8042 reset first and shows no such line)"
    } else if line.contains("KVM_EXIT_INTERNAL_ERROR") || line.contains("KVM_EXIT_FAIL_ENTRY") {
        " (KVM could not run the guest)"
    } else {
        ""
    }
}

/// libkrun's own lines in the sandbox log (its `env_logger` lines carry `ERROR`/`WARN`, and a few
/// messages are bare `eprintln!`s), the last few.
fn vmm_errors(log: &Path) -> String {
    let text = tail_lines(log, 200);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.contains(" INFO ")
                && !l.contains(" DEBUG ")
                && !l.contains(" TRACE ")
                && !l.is_empty()
        })
        .collect();
    lines[lines.len().saturating_sub(VM_LOG_TAIL_LINES)..].join("\n")
}

/// Lines joined with ` | ` for a one-line error.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// `unshare(1)`'s flags for the VM process: a private mount namespace, owned by a new user
/// namespace whose root is the user when moat runs unprivileged (the only privilege `__vm` needs
/// is to mount in its own mount namespace; `/dev/kvm` is opened with the user's own access); and
/// with a guest network, a new network namespace, which the router gets wired to (libkrun's TSI
/// makes the guest's sockets sockets of the VM process, so they start there).
pub fn vm_unshare_args(rootless: bool, network: bool) -> Vec<&'static str> {
    let user: &[&str] = if rootless { &["--user", "--map-root-user"] } else { &[] };
    let net: &[&str] = if network { &["--net"] } else { &[] };
    [user, net, &["--mount", "--propagation", "private"]].concat()
}

/// `moat __vm DIR` (in a private mount namespace): builds the VM and enters it. Returns only on
/// failure, after reporting it on the startup pipe.
pub fn run_vm(dir: &SandboxDir) -> RuntimeError {
    match prepare(dir) {
        Ok((config, channel)) => {
            let listener = channel.listener;
            let bootstrap = channel.bootstrap;
            let limits = channel.limits;
            let thread_dir = dir.clone();
            let spawned = std::thread::Builder::new()
                .name("agent-channel".into())
                .spawn(move || serve_agent(&thread_dir, &listener, bootstrap, limits));
            if let Err(err) = spawned {
                return RuntimeError::io("start the agent channel thread", dir.path())(err);
            }
            match config.enter() {
                Ok(never) => match never {},
                Err(err) => RuntimeError::Vmm(err),
            }
        }
        Err(err) => err,
    }
}

/// What the agent channel thread needs.
struct Channel {
    listener: UnixListener,
    bootstrap: GuestBootstrap,
    limits: TimeLimits,
}

fn prepare(dir: &SandboxDir) -> Result<(VmConfig, Channel), RuntimeError> {
    let mut spec = dir.read_spec()?;
    if spec.config.network.needs_network() {
        // The guest resolves through the DNS forwarder in the router namespace: written by agentd
        // at boot, as a root patch into its tmpfs upper (replacing a file or symlink there).
        spec.config.patches.push(crate::patches::Patch::Text {
            path: "/etc/resolv.conf".into(),
            content: crate::network::guest_resolv_conf(),
            mode: Some(0o644),
            replace: true,
        });
    }
    spec.config.write_scripts(&dir.scripts_dir())?;
    crate::patches::write_bundle(&spec.config.patches, &dir.patches_dir())?;
    let mut shares = spec.config.shares(&dir.scripts_dir(), ShareNaming::VirtioFsTag);
    // A mount below a virtiofs share reaches the guest as a submount, and overlayfs refuses to
    // traverse one (EREMOTE): so the shared root never has mounts below it.
    let root = match &spec.root {
        RootSource::Dir(source) => {
            // A non-recursive read-only bind, as the namespace backend makes: SRC's own
            // filesystem, without the mounts below it.
            let lower = dir.lower_mount();
            crate::backend::namespace::init::bind_rootfs(source, &lower)?;
            lower
        }
        RootSource::Image(image) => {
            // The layers stacked here, in the host's mount namespace, by the same read-only
            // overlay the namespace backend mounts: the guest gets one virtiofs root (the merged
            // view, whiteouts and opaque directories already applied) and puts its tmpfs upper
            // on it as on a `--rootfs DIR`. All layers live in one store filesystem, so the
            // overlay reports one st_dev and libkrun announces no submount inside it.
            let lower = dir.lower_mount();
            crate::image::mount::mount_layers(&image.layers, &lower)?;
            lower
        }
        RootSource::Host => {
            let root = dir.root_mount();
            std::fs::create_dir_all(&root)
                .map_err(RuntimeError::io("create root mount point", &root))?;
            let system_dirs =
                crate::backend::namespace::host_root::assemble_skeleton(&root, &spec.name)?;
            shares.extend(system_dirs.into_iter().map(system_share));
            root
        }
    };
    let mut bootstrap = spec.config.bootstrap(&spec.name, &shares);
    for mount in &mut bootstrap.dir_mounts {
        if mount.tag.starts_with(SYSTEM_TAG_PREFIX) {
            mount.flags.nosuid = true;
            mount.flags.nodev = true;
        }
    }
    let init = std::fs::read(&spec.agentd).map_err(RuntimeError::io("read", &spec.agentd))?;
    let log_dir = dir.log_dir();
    std::fs::create_dir_all(&log_dir)
        .map_err(RuntimeError::io("create log directory", &log_dir))?;
    let krunfw = crate::doctor::find_libkrunfw(&crate::doctor::HostPaths::system());
    let config = vm_config(&spec, dir, root, init, &shares, krunfw);
    config.validate()?;
    let socket = dir.agent_vm_socket();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.stop_reason_file());
    let listener = UnixListener::bind(&socket).map_err(RuntimeError::io("listen on", &socket))?;
    let limits = TimeLimits {
        max_duration: spec.config.max_duration(),
        idle_timeout: spec.config.idle_timeout(),
        reason_file: Some(dir.stop_reason_file()),
    };
    Ok((config, Channel { listener, bootstrap, limits }))
}

/// Tag prefix of the host system directories shared into a `--rootfs host` guest.
const SYSTEM_TAG_PREFIX: &str = "moat-sys-";

/// The host's `/name` (a [`crate::backend::namespace::host_root::SYSTEM_DIRS`] entry) as a read-only share at the
/// same place in the guest.
fn system_share(name: &str) -> Share {
    Share {
        tag: format!("{SYSTEM_TAG_PREFIX}{name}"),
        host: Path::new("/").join(name),
        guest: format!("/{name}"),
        readonly: true,
        noexec: false,
        nosuid: false,
        nodev: false,
    }
}

/// The VM a sandbox spec asks for: `--cpus`/`--memory` (or the defaults), the root, the static
/// agent as init, the shares as virtiofs tags, the agent's vsock port on `DIR/agent-vm.sock`,
/// the console on `DIR/logs/kernel.log`.
pub fn vm_config(
    spec: &SandboxSpec,
    dir: &SandboxDir,
    root: PathBuf,
    init: Vec<u8>,
    shares: &[Share],
    krunfw: Option<PathBuf>,
) -> VmConfig {
    let mut config = VmConfig::new(root, init);
    config.vcpus = spec.config.vcpus.unwrap_or(DEFAULT_VCPUS);
    config.memory_mib = spec.config.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    config.shares = shares
        .iter()
        .map(|s| VmShare { tag: s.tag.clone(), host_path: s.host.clone(), read_only: s.readonly })
        .collect();
    config.vsock_ports = vec![VsockPort {
        port: AGENT_VSOCK_PORT,
        socket: dir.agent_vm_socket(),
        direction: VsockDirection::GuestConnects,
    }];
    config.console = Some(dir.kernel_log());
    config.env = vec![
        ("MOAT_AGENT_CHANNEL".into(), format!("vsock:{HOST_CID}:{AGENT_VSOCK_PORT}")),
        ("MOAT_AGENT_LOG".into(), "info".into()),
        (crate::security::AGENT_PROFILE_ENV.into(), spec.config.security_profile.as_str().into()),
    ];
    config.krunfw = krunfw;
    config.log_level = VMM_LOG_LEVEL;
    config.tsi_inet = spec.config.network.needs_network();
    config
}

/// The agent channel thread: accept, handshake, relay. Ends the process on failure (the main
/// thread is inside libkrun), and once the relay stopped and the guest did not power off in time.
fn serve_agent(
    dir: &SandboxDir,
    listener: &UnixListener,
    bootstrap: GuestBootstrap,
    limits: TimeLimits,
) {
    let timeout = Duration::from_millis(VM_AGENT_CONNECT_TIMEOUT_MS);
    let outcome = accept_agent(dir, listener, timeout)
        .and_then(|channel| {
            let ready = crate::supervisor::handshake(&channel, bootstrap)?;
            Ok((channel, ready))
        })
        .and_then(|(channel, ready)| crate::supervisor::run_relay(dir, channel, ready, limits));
    match outcome {
        Ok(reason) => {
            tracing::info!(reason, "relay stopped; waiting for the guest to power off");
            std::thread::sleep(Duration::from_millis(VM_POWER_OFF_GRACE_MS));
            tracing::warn!("the guest did not power off in time; ending the VM");
            std::process::exit(0);
        }
        Err(err) => {
            tracing::error!(%err, "the VM's agent channel failed");
            report_startup(&format!("error: {}", one_line(&err.to_string())));
            std::process::exit(1);
        }
    }
}

/// Waits up to `timeout` for the guest agent's connection (libkrun connects the guest's vsock
/// port to our listener).
fn accept_agent(
    dir: &SandboxDir,
    listener: &UnixListener,
    timeout: Duration,
) -> Result<UnixStream, RuntimeError> {
    let socket = dir.agent_vm_socket();
    listener.set_nonblocking(true).map_err(RuntimeError::io("set non-blocking", &socket))?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(RuntimeError::io("set blocking", &socket))?;
                return Ok(stream);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(RuntimeError::io("accept the agent on", &socket)(err)),
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::AgentNeverConnected {
                port: AGENT_VSOCK_PORT,
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                kernel_log_tail: one_line(&tail_lines(&dir.kernel_log(), VM_LOG_TAIL_LINES)),
            });
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SandboxConfig, Volume};

    fn spec(config: SandboxConfig) -> SandboxSpec {
        SandboxSpec {
            name: "box".into(),
            root: RootSource::Dir("/srv/root".into()),
            agentd: "/opt/moat-agentd-static".into(),
            backend: crate::backend::isolation::BackendKind::Vm,
            rootless: false,
            config,
        }
    }

    #[test]
    fn system_directories_are_shared_read_only_at_the_same_path() {
        let share = system_share("usr");
        assert_eq!(share.tag, "moat-sys-usr");
        assert_eq!(share.host, PathBuf::from("/usr"));
        assert_eq!(share.guest, "/usr");
        assert!(share.readonly);
        for name in crate::backend::namespace::host_root::SYSTEM_DIRS {
            assert!(system_share(name).tag.len() <= 36, "{name}");
        }
    }

    #[test]
    fn an_unprivileged_vm_process_gets_a_user_namespace_for_its_mounts() {
        assert_eq!(vm_unshare_args(false, false), ["--mount", "--propagation", "private"]);
        assert_eq!(
            vm_unshare_args(true, false),
            ["--user", "--map-root-user", "--mount", "--propagation", "private"]
        );
        assert_eq!(vm_unshare_args(false, true), ["--net", "--mount", "--propagation", "private"]);
    }

    #[test]
    fn defaults_are_one_vcpu_and_512_mib() {
        let dir = SandboxDir::open("/run/moat/box");
        let config =
            vm_config(&spec(SandboxConfig::default()), &dir, "/r".into(), vec![1], &[], None);
        assert_eq!((config.vcpus, config.memory_mib), (1, 512));
        // No network asked for: no TSI, so the guest has no network at all.
        assert!(!config.tsi_inet);
        config.validate().unwrap();
    }

    #[test]
    fn a_guest_network_turns_tsi_on() {
        let dir = SandboxDir::open("/run/moat/box");
        let mut sandbox = SandboxConfig::default();
        sandbox.network.mode = crate::network::NetworkMode::Public;
        let config = vm_config(&spec(sandbox), &dir, "/r".into(), vec![1], &[], None);
        assert!(config.tsi_inet);
        // A deny rule alone asks for no network.
        let mut sandbox = SandboxConfig::default();
        sandbox.network.rules = vec![
            crate::network::parse::parse_rule(crate::network::Action::Deny, "10.0.0.0/8").unwrap(),
        ];
        let config = vm_config(&spec(sandbox), &dir, "/r".into(), vec![1], &[], None);
        assert!(!config.tsi_inet);
    }

    #[test]
    fn the_spec_becomes_the_vm() {
        let dir = SandboxDir::open("/run/moat/box");
        let sandbox = SandboxConfig {
            vcpus: Some(2),
            memory_mib: Some(1024),
            volumes: vec![Volume {
                host: "/data".into(),
                guest: "/mnt/data".into(),
                readonly: true,
                ..Volume::default()
            }],
            ..SandboxConfig::default()
        };
        let spec = spec(sandbox);
        let shares = spec.config.shares(&dir.scripts_dir(), ShareNaming::VirtioFsTag);
        let config = vm_config(
            &spec,
            &dir,
            "/srv/root".into(),
            b"agent".to_vec(),
            &shares,
            Some("/lib/libkrunfw.so.5".into()),
        );
        assert_eq!((config.vcpus, config.memory_mib), (2, 1024));
        assert_eq!(config.root, PathBuf::from("/srv/root"));
        assert_eq!(config.init, b"agent");
        assert_eq!(
            config.shares,
            vec![VmShare {
                tag: "moat-share-0".into(),
                host_path: "/data".into(),
                read_only: true
            }]
        );
        assert_eq!(config.vsock_ports[0].port, AGENT_VSOCK_PORT);
        assert_eq!(config.vsock_ports[0].socket, PathBuf::from("/run/moat/box/agent-vm.sock"));
        assert_eq!(config.vsock_ports[0].direction, VsockDirection::GuestConnects);
        assert_eq!(config.console, Some(PathBuf::from("/run/moat/box/logs/kernel.log")));
        assert!(config.env.contains(&("MOAT_AGENT_CHANNEL".into(), "vsock:2:1024".into())));
        // The guest's agent gets the sandbox's security profile (default unless set).
        let profile = (crate::security::AGENT_PROFILE_ENV.into(), "default".into());
        assert!(config.env.contains(&profile), "{:?}", config.env);
        assert_eq!(config.krunfw, Some(PathBuf::from("/lib/libkrunfw.so.5")));
        config.validate().unwrap();
        // The bootstrap names the same tag agentd mounts.
        let bootstrap = spec.config.bootstrap(&spec.name, &shares);
        assert_eq!(bootstrap.dir_mounts[0].tag, "moat-share-0");
    }

    #[test]
    fn an_absent_agent_is_a_typed_error_with_the_console_tail() {
        let base = std::env::temp_dir().join(format!("moat-vm-unit-{}", std::process::id()));
        let dir = SandboxDir::create(&base, "box").unwrap();
        std::fs::create_dir_all(dir.log_dir()).unwrap();
        std::fs::write(dir.kernel_log(), "line one\nKernel panic - not syncing\n").unwrap();
        let listener = UnixListener::bind(dir.agent_vm_socket()).unwrap();
        let err = accept_agent(&dir, &listener, Duration::from_millis(50)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RuntimeError::AgentNeverConnected { port: 1024, .. }), "{text}");
        assert!(text.contains("line one | Kernel panic - not syncing"), "{text}");
        assert!(!text.contains('\n'));
        // A connecting agent is accepted.
        let _agent = UnixStream::connect(dir.agent_vm_socket()).unwrap();
        accept_agent(&dir, &listener, Duration::from_secs(5)).unwrap();
        dir.remove().unwrap();
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn only_libkrun_problem_lines_are_quoted() {
        let base = std::env::temp_dir().join(format!("moat-vm-log-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let log = base.join("sandbox.log");
        std::fs::write(
            &log,
            "2026 INFO sandbox: started\n[2026 ERROR vmm] Building the microVM failed: Kvm\n",
        )
        .unwrap();
        assert_eq!(vmm_errors(&log), "[2026 ERROR vmm] Building the microVM failed: Kvm");
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn a_guest_that_ended_unasked_is_explained_from_libkrun_and_the_console() {
        let base = std::env::temp_dir().join(format!("moat-vm-unasked-{}", std::process::id()));
        let dir = SandboxDir::create(&base, "box").unwrap();
        std::fs::create_dir_all(dir.log_dir()).unwrap();
        std::fs::write(dir.kernel_log(), "boot\nINFO moat_agentd: ready\n").unwrap();
        std::fs::write(
            dir.sandbox_log(),
            "[2026 INFO  krun_vmm::linux::vstate] Received KVM_EXIT_SHUTDOWN signal\n\
             2026 INFO relay: client connected\n\
             [2026 INFO  krun_vmm] Vmm is stopping.\n",
        )
        .unwrap();
        let reason = unasked_end_reason(&dir);
        assert!(reason.starts_with(ENDED_UNASKED), "{reason}");
        assert!(reason.contains("libkrun: Received KVM_EXIT_SHUTDOWN signal (the guest CPU reset"));
        assert!(reason.ends_with("last line: INFO moat_agentd: ready"), "{reason}");
        // No exit line from libkrun and an empty console are said so.
        std::fs::write(dir.sandbox_log(), "[2026 INFO  krun_vmm] Vmm is stopping.\n").unwrap();
        std::fs::write(dir.kernel_log(), "").unwrap();
        let reason = unasked_end_reason(&dir);
        assert!(reason.contains("libkrun reported no vCPU exit"), "{reason}");
        assert!(reason.ends_with("last line: (none)"), "{reason}");
        dir.remove().unwrap();
        let _ = std::fs::remove_dir_all(base);
    }
}
