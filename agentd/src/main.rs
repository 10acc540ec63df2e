//! moat-agentd: PID 1 of a moat sandbox. A checklist of named phases; only `main` exits.
//!
//! ```text
//! moat-agentd [--channel fd:N|unix:PATH|vsock:[CID:]PORT] [--root DIR | --prepared-root DIR]
//!             [--security-profile default|restricted|none]
//! ```
//! The same settings come from `MOAT_AGENT_CHANNEL`, `MOAT_AGENT_ROOT`,
//! `MOAT_AGENT_PREPARED_ROOT` and `MOAT_AGENT_SECURITY_PROFILE` (a VM's init gets its
//! configuration from the environment libkrun puts on the kernel command line). As PID 1 with
//! nothing set, it is a VM guest: `vsock:1024` and an overlay on `/`. The security profile is
//! `default` unless set: after boot, before serving, the agent confines itself and everything it
//! starts ([`moat_agentd::seccomp`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use moat_agentd::boot::{self, BootOptions, RootPlan};
use moat_agentd::channel::{self, ChannelSpec};
use moat_agentd::driver::{self, AgentServices, Ended, FrameReader};
use moat_agentd::exec::{Confinement, ExecConfig, ExecManager};
use moat_agentd::fs::FsService;
use moat_agentd::handshake;
use moat_agentd::outbound::Outbound;
use moat_agentd::process::Reaper;
use moat_agentd::seccomp::{self, Scope, SecurityProfile};
use moat_agentd::shutdown;
use moat_agentd::sys;
use moat_agentd::tcp::TcpService;
use moat_agentd::users::UserDb;
use moat_agentd::workload::{ProcessFreezer, WorkloadLatch};
use moat_protocol::payload::core::ResolvedUser;

/// The vsock port a VM guest connects to when nothing else is configured.
const DEFAULT_VSOCK_PORT: u32 = 1024;

/// How long the writer gets to flush the last frames before the process ends.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// How long a VM guest's console gets to carry the agent's last lines out before an unrequested
/// power-off.
const CONSOLE_DRAIN: Duration = Duration::from_millis(500);

struct Options {
    channel: ChannelSpec,
    boot: BootOptions,
    pid1: bool,
    profile: SecurityProfile,
}

fn parse_options() -> Result<Options, String> {
    let mut channel = std::env::var("MOAT_AGENT_CHANNEL").ok();
    let mut root = std::env::var("MOAT_AGENT_ROOT").ok().map(PathBuf::from);
    let mut prepared = std::env::var("MOAT_AGENT_PREPARED_ROOT").ok().map(PathBuf::from);
    let mut profile = std::env::var(seccomp::PROFILE_ENV).ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--channel" => channel = Some(value()?),
            "--root" => root = Some(PathBuf::from(value()?)),
            "--prepared-root" => prepared = Some(PathBuf::from(value()?)),
            "--security-profile" => profile = Some(value()?),
            "--version" => return Err(format!("moat-agentd {}", env!("CARGO_PKG_VERSION"))),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let pid1 = std::process::id() == 1;
    let channel = match channel {
        Some(spec) => spec.parse().map_err(|e| format!("{e}"))?,
        None if pid1 => ChannelSpec::Vsock { cid: channel::HOST_CID, port: DEFAULT_VSOCK_PORT },
        None => return Err("not PID 1 and no --channel given".to_owned()),
    };
    let root = match (root, prepared) {
        (Some(_), Some(_)) => {
            return Err("--root and --prepared-root exclude each other".to_owned());
        }
        (Some(dir), None) => RootPlan::Overlay(dir),
        (None, Some(dir)) => RootPlan::Prepared(dir),
        (None, None) if pid1 && channel.is_vm() => RootPlan::Overlay(PathBuf::from("/")),
        (None, None) => RootPlan::InPlace,
    };
    if !pid1 && root != RootPlan::InPlace {
        return Err("root assembly needs PID 1 in a fresh pid and mount namespace".to_owned());
    }
    let vm = channel.is_vm();
    let profile = match profile {
        Some(name) => name.parse().map_err(|e| format!("{e}"))?,
        None => SecurityProfile::default(),
    };
    Ok(Options { channel, boot: BootOptions { root, vm }, pid1, profile })
}

fn init_logging() {
    let filter = std::env::var("MOAT_AGENT_LOG").unwrap_or_else(|_| "info".to_owned());
    let level = filter.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let boot_time_ns = sys::boottime_ns();
    init_logging();
    // PID 1's death ends the sandbox, and in a VM the console lines saying why can be lost with
    // it: the panic message gets time to reach the console first.
    let print_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print_panic(info);
        if std::process::id() == 1 {
            std::thread::sleep(CONSOLE_DRAIN);
        }
    }));
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("moat-agentd: {message}");
            return ExitCode::from(2);
        }
    };
    let reaper = match Reaper::start() {
        Ok(reaper) => reaper,
        Err(err) => {
            tracing::error!(%err, "cannot start the process reaper");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(options, reaper, boot_time_ns));
    // Session tasks still parked on dead pipes must not keep PID 1 alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(options: Options, reaper: Reaper, boot_time_ns: u64) -> ExitCode {
    let (read_half, write_half) = match channel::open(&options.channel).await {
        Ok(halves) => halves,
        Err(err) => {
            tracing::error!(%err, "cannot open the agent channel; nothing to serve");
            return ExitCode::FAILURE;
        }
    };
    let (out, rx) = Outbound::channel();
    let writer = tokio::spawn(driver::write_loop(rx, write_half));
    let mut reader = FrameReader::new(read_half);

    let bootstrap = match handshake::receive_bootstrap(&mut reader).await {
        Ok(bootstrap) => bootstrap,
        Err(err) => {
            tracing::error!(%err, "boot failed");
            handshake::report_failure(
                Some(&mut reader),
                &out,
                format!("receive bootstrap failed: {err}"),
                None,
                false,
            )
            .await;
            return finish(out, writer, ExitCode::FAILURE).await;
        }
    };
    let init_started = sys::boottime_ns();
    let promised_ack = bootstrap.init_failure_ack;
    let limits = match handshake::exec_limits(&bootstrap) {
        Ok(limits) => limits,
        Err(err) => {
            tracing::error!(%err, "boot failed");
            let message = format!("exec_limits: {err}");
            handshake::report_failure(Some(&mut reader), &out, message, None, promised_ack).await;
            return finish(out, writer, ExitCode::FAILURE).await;
        }
    };
    let booted = boot::assemble(&options.boot, &bootstrap).and_then(|()| {
        let identity = UserDb::load(std::path::Path::new("/"))
            .resolve(bootstrap.user.as_deref().unwrap_or(""))?;
        Ok(ResolvedUser { uid: identity.uid, gid: identity.gid })
    });
    let booted = booted.and_then(|user| Ok((user, confine(options.profile)?)));
    let (default_user, confinement) = match booted {
        Ok(booted) => booted,
        Err(err) => {
            tracing::error!(%err, "boot failed");
            let reason = err.init_failure_reason();
            handshake::report_failure(
                Some(&mut reader),
                &out,
                err.to_string(),
                reason,
                promised_ack,
            )
            .await;
            return finish(out, writer, ExitCode::FAILURE).await;
        }
    };
    if let Err(err) = handshake::report_init(&mut reader, &out, default_user).await {
        tracing::error!(%err, "boot failed");
        handshake::report_failure(
            Some(&mut reader),
            &out,
            format!("init handshake failed: {err}"),
            None,
            promised_ack,
        )
        .await;
        return finish(out, writer, ExitCode::FAILURE).await;
    }

    let config = ExecConfig {
        default_cwd: bootstrap.default_cwd.clone(),
        default_user: bootstrap.user.clone(),
        base_env: bootstrap.default_env.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
        root: PathBuf::from("/"),
        confinement,
        limits,
    };
    let mut services = AgentServices {
        exec: ExecManager::new(config, reaper.clone(), out.clone()),
        fs: FsService::new(PathBuf::from("/"), out.clone()),
        tcp: TcpService::new(out.clone()),
        may_set_clock: options.pid1 && options.boot.vm,
        workload: WorkloadLatch::new(ProcessFreezer::new(options.pid1)),
    };
    let init_time_ns = sys::boottime_ns().saturating_sub(init_started);
    if handshake::send_ready(&out, boot_time_ns, init_time_ns, limits).await.is_err() {
        return finish(out, writer, ExitCode::FAILURE).await;
    }
    tracing::info!(boot_time_ns, init_time_ns, "ready");

    let ended = driver::serve(&mut reader, &out, &mut services).await;
    let asked = matches!(ended, Ended::Shutdown);
    if asked {
        tracing::info!(?ended, "stopping");
    } else {
        tracing::error!(?ended, "the host channel ended without core.shutdown; stopping");
    }
    shutdown::stop_everything(&mut services, &reaper, options.pid1).await;
    drop(services);
    let code = match ended {
        Ended::Shutdown | Ended::HostClosed => ExitCode::SUCCESS,
        Ended::Broken(_) => ExitCode::FAILURE,
    };
    let code = finish(out, writer, code).await;
    if options.pid1 && options.boot.vm {
        if !asked {
            // libkrun ends the VM process as soon as the guest resets, and the console lines
            // still in flight are lost with it: give the ones that say why time to arrive.
            std::thread::sleep(CONSOLE_DRAIN);
        }
        shutdown::power_off_vm();
    }
    code
}

/// Installs `profile`'s filter on the agent itself (after boot, before serving) and returns the
/// confinement of the processes it will start: since they inherit the agent's filter, only what
/// the agent keeps for itself is added in each of them ([`Confinement::over_agent_filter`]).
fn confine(profile: SecurityProfile) -> Result<Confinement, boot::BootError> {
    let failed = |err: seccomp::SeccompError| boot::BootError::Confine(err.to_string());
    let agent = seccomp::programs(profile, Scope::Agent).map_err(failed)?;
    sys::install_seccomp(&agent).map_err(|source| boot::BootError::Sys {
        stage: "install the agent's seccomp filter",
        source,
    })?;
    let confinement = Confinement::over_agent_filter(profile).map_err(failed)?;
    tracing::info!(%profile, filters = agent.len(), "security profile applied");
    Ok(confinement)
}

/// Lets the writer flush what is queued, then returns `code`.
async fn finish(out: Outbound, writer: tokio::task::JoinHandle<()>, code: ExitCode) -> ExitCode {
    drop(out);
    let _ = tokio::time::timeout(FINAL_FLUSH, writer).await;
    code
}
