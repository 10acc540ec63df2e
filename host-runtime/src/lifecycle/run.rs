//! `moat run`: one ephemeral sandbox, one command, then nothing left behind.
//!
//! ```text
//!  choose backend ─► find agent ─► sandbox dir + spec ─► spawn `moat __sandbox DIR`
//!   ─► startup line ("ok" | error + agent log tail) ─► relay client: exec, stream, exit code
//!   ─► core.shutdown ─► wait for the sandbox process (SIGKILL after a timeout) ─► remove DIR
//! ```

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::{ExecFailed, ExecFailureKind};

use crate::api::config::{ImageSource, RootSource, RunOptions};
use crate::backend::isolation::{self, BackendKind};
use crate::error::RuntimeError;
use crate::image::{ImageDefaults, ImageError, Images, PullOptions};
use crate::limits::{AGENT_LOG_TAIL_LINES, POLL_INTERVAL_MS, SANDBOX_EXIT_TIMEOUT_MS};
use crate::relay_client::{ExecOutcome, RelayClient, exit_status};
use crate::store::home::{self, SandboxDir, SandboxSpec};
use crate::supervisor::STARTUP_OK;

/// Runs `args` in an ephemeral sandbox; returns the process exit status for the CLI.
pub fn execute(mut args: RunOptions) -> Result<u8, RuntimeError> {
    refuse_image_without_root(&args.root)?;
    let backend = isolation::prepare_backend(args.isolation)?;
    crate::relay_client::block_forwarded_signals()?;
    let (root, defaults) = resolve_root(&home::moat_home(), &args.root)?;
    if let Some(defaults) = defaults {
        apply_image_defaults(&mut args, &defaults, &root)?;
    }
    let mut config = args.config.clone();
    crate::store::volumes::resolve_named(&home::moat_home(), &mut config)?;
    config.resolve()?;
    isolation::check_limits(backend, &config)?;
    let rootless = crate::backend::namespace::rootless::is_rootless();
    let agentd = crate::agentd_bin::locate_for(backend)?;
    let name = home::ephemeral_name();
    let dir = SandboxDir::create(&home::moat_home(), &name)?;
    let span = tracing::info_span!("sandbox", %name);
    let _entered = span.enter();
    let result = run_in(&dir, SandboxSpec { name, root, agentd, backend, rootless, config }, args);
    if let Err(err) = dir.remove() {
        tracing::warn!(%err, "could not remove the sandbox directory");
    }
    result
}

/// `--image` without root is refused (on either backend) before the backend is probed, so the
/// error names what is missing rather than the host's KVM or user namespaces.
pub(crate) fn refuse_image_without_root(root: &RootSource) -> Result<(), RuntimeError> {
    if matches!(root, RootSource::Image(_)) && crate::backend::namespace::rootless::is_rootless() {
        return Err(ImageError::NeedsRoot.into());
    }
    Ok(())
}

/// The root a sandbox gets, and the image's exec defaults: `--image REF` is found in the store
/// of `home` (pulled when missing, with progress on stderr) and resolved to its layer
/// directories (root only: [`refuse_image_without_root`] ran first); `--rootfs DIR` is checked
/// by [`checked_root`].
pub(crate) fn resolve_root(
    home: &Path,
    root: &RootSource,
) -> Result<(RootSource, Option<ImageDefaults>), RuntimeError> {
    let RootSource::Image(source) = root else {
        return Ok((checked_root(root)?, None));
    };
    let images = Images::new(home);
    let options = PullOptions::from_env(source.registry_auth.as_deref())?;
    let progress = crate::image::progress::for_stderr();
    let record = images.ensure(&source.reference, &options, progress.as_ref())?;
    let resolved = images.root(&record)?;
    let image =
        ImageSource { reference: record.reference, registry_auth: None, layers: resolved.layers };
    Ok((RootSource::Image(image), Some(resolved.defaults)))
}

/// The image's defaults under `moat run`'s explicit options: `-e` wins per variable, `-w` and
/// `-u` win, and the command is Entrypoint + (the explicit command, or Cmd).
fn apply_image_defaults(
    args: &mut RunOptions,
    defaults: &ImageDefaults,
    root: &RootSource,
) -> Result<(), RuntimeError> {
    let command = &mut args.command;
    command.env = defaults.merged_env(&command.env);
    command.cwd = command.cwd.take().or_else(|| defaults.working_dir.clone());
    command.user = command.user.take().or_else(|| defaults.user.clone());
    args.config.stop_signal =
        args.config.stop_signal.take().or_else(|| defaults.stop_signal.clone());
    let mut explicit = Vec::new();
    if !command.cmd.is_empty() {
        explicit.push(std::mem::take(&mut command.cmd));
        explicit.append(&mut command.args);
    }
    let mut command = defaults.command(&explicit).into_iter();
    let reference = match root {
        RootSource::Image(image) => image.reference.clone(),
        _ => String::new(),
    };
    args.command.cmd = command.next().ok_or(ImageError::NoCommand { reference })?;
    args.command.args = command.collect();
    Ok(())
}

/// `--rootfs DIR` must be an existing directory; resolved to an absolute path.
pub(crate) fn checked_root(root: &RootSource) -> Result<RootSource, RuntimeError> {
    match root {
        RootSource::Host => Ok(RootSource::Host),
        RootSource::Image(_) => Ok(root.clone()),
        RootSource::Dir(dir) => {
            let resolved = dir.canonicalize().map_err(RuntimeError::io("open --rootfs", dir))?;
            if !resolved.is_dir() {
                return Err(RuntimeError::Io {
                    what: "open --rootfs",
                    path: resolved,
                    source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
                });
            }
            Ok(RootSource::Dir(resolved))
        }
    }
}

fn run_in(dir: &SandboxDir, spec: SandboxSpec, args: RunOptions) -> Result<u8, RuntimeError> {
    dir.write_spec(&spec)?;
    let mut sandbox =
        spawn_sandbox(dir, Lifetime::WithCli, spec.backend, &own_executable()?, None)?;
    let cmd = args.command.cmd.clone();
    let result = wait_startup(dir, &mut sandbox).and_then(|()| exec_and_shutdown(dir, args));
    stop_sandbox(&mut sandbox);
    let outcome = result?;
    if let ExecOutcome::Failed(failed) = &outcome {
        eprintln!("{}", exec_failed_line(&cmd, failed));
    }
    if let ExecOutcome::Refused(message) = &outcome {
        eprintln!("moat: the agent refused the command: {message}");
    }
    Ok(exit_status(&outcome))
}

/// One line for a command that never started.
pub fn exec_failed_line(cmd: &str, failed: &ExecFailed) -> String {
    match failed.kind {
        ExecFailureKind::NotFound => {
            format!("moat: {cmd}: command not found in the sandbox ({})", failed.message)
        }
        _ => format!("moat: {cmd}: cannot start ({}): {}", failed.kind.as_str(), failed.message),
    }
}

/// How long a sandbox process lives relative to the CLI that spawns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// `moat run`: its own process group, killed by the kernel when the CLI dies.
    WithCli,
    /// `moat create`: its own session, outliving the CLI.
    Detached,
}

/// Spawns `moat-sandbox __sandbox DIR`, the per-sandbox binary next to `moat` (a `moat`
/// binary, normally this one; [`crate::agentd_bin::locate_sandbox`]). A VM sandbox runs
/// `moat __sandbox DIR` instead: its start is the VM's boot, and `moat` is the one binary a VM
/// test host installs. With `creator` (the read end of an
/// [`crate::lifecycle::attach::Attachment`]'s pipe, as its stdin), it runs `--attached`: it
/// stops when the creator goes away.
pub(crate) fn spawn_sandbox(
    dir: &SandboxDir,
    lifetime: Lifetime,
    backend: BackendKind,
    moat: &Path,
    creator: Option<std::os::fd::OwnedFd>,
) -> Result<Child, RuntimeError> {
    let exe = match backend {
        BackendKind::Namespace => crate::agentd_bin::locate_sandbox(moat)?,
        BackendKind::Vm => moat.to_path_buf(),
    };
    let log_path = dir.sandbox_log();
    let log = std::fs::File::create(&log_path)
        .map_err(RuntimeError::io("create sandbox log", &log_path))?;
    let mut command = Command::new(&exe);
    command.arg("__sandbox").arg(dir.path()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    match creator {
        Some(lifeline) => command.arg("--attached").stdin(Stdio::from(lifeline)),
        None => command.stdin(Stdio::null()),
    };
    match lifetime {
        Lifetime::WithCli => {
            // Its own process group: a terminal's Ctrl-C reaches the CLI (which forwards it to
            // the command), not the sandbox process or the agent.
            command.process_group(0);
            crate::backend::namespace::pre_exec::kill_with_parent(&mut command);
        }
        Lifetime::Detached => crate::backend::namespace::pre_exec::new_session(&mut command),
    }
    command.spawn().map_err(RuntimeError::io("spawn sandbox process", exe))
}

/// This process's executable (the `moat` CLI, which is also the sandbox process).
pub(crate) fn own_executable() -> Result<PathBuf, RuntimeError> {
    std::env::current_exe().map_err(RuntimeError::io("find own executable", "moat"))
}

/// Reads the one startup line from the sandbox process.
pub(crate) fn wait_startup(dir: &SandboxDir, sandbox: &mut Child) -> Result<(), RuntimeError> {
    let mut line = String::new();
    if let Some(stdout) = sandbox.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let line = line.trim_end();
    if line == STARTUP_OK {
        return Ok(());
    }
    let message = match line.strip_prefix("error: ") {
        Some(reason) => reason.to_owned(),
        None => "the sandbox process exited before reporting".to_owned(),
    };
    Err(RuntimeError::Boot { message, agent_log: dir.agent_log_tail(AGENT_LOG_TAIL_LINES) })
}

fn exec_and_shutdown(dir: &SandboxDir, args: RunOptions) -> Result<ExecOutcome, RuntimeError> {
    let mut client = RelayClient::connect(&dir.socket())?;
    let outcome = client.run_exec(args.command);
    if let Err(err) = client.request_shutdown() {
        tracing::warn!(%err, "could not send core.shutdown; the sandbox will be killed");
    }
    outcome
}

/// Waits for the sandbox process to exit, then SIGKILLs it (which takes the agent with it).
fn stop_sandbox(sandbox: &mut Child) {
    let deadline = Instant::now() + Duration::from_millis(SANDBOX_EXIT_TIMEOUT_MS);
    while Instant::now() < deadline {
        match sandbox.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
        }
    }
    tracing::warn!("sandbox process did not exit after core.shutdown; killing it");
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}

#[cfg(test)]
mod tests {
    use moat_protocol::payload::exec::ExecRequest;

    use super::*;
    use crate::api::config::Isolation;

    fn image_run(cmd: &[&str], env: &[&str], cwd: Option<&str>) -> RunOptions {
        let mut cmd = cmd.iter().map(|s| (*s).to_owned());
        let mut command = ExecRequest::new(cmd.next().unwrap_or_default());
        command.args = cmd.collect();
        command.env = env.iter().map(|s| (*s).to_owned()).collect();
        command.cwd = cwd.map(str::to_owned);
        RunOptions {
            root: RootSource::Image(ImageSource::new("img")),
            isolation: Isolation::Auto,
            config: crate::config::SandboxConfig::default(),
            command,
        }
    }

    fn defaults() -> ImageDefaults {
        ImageDefaults {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: Some("/app".into()),
            user: Some("app".into()),
            entrypoint: vec!["/init".into()],
            cmd: vec!["serve".into()],
            stop_signal: Some("SIGQUIT".into()),
        }
    }

    #[test]
    fn a_bare_image_run_takes_every_default() {
        let mut args = image_run(&[], &[], None);
        let root = args.root.clone();
        apply_image_defaults(&mut args, &defaults(), &root).unwrap();
        assert_eq!(
            (args.command.cmd.as_str(), args.command.args.clone()),
            ("/init", vec!["serve".to_owned()])
        );
        assert_eq!(
            (args.command.cwd.as_deref(), args.command.user.as_deref()),
            (Some("/app"), Some("app"))
        );
        assert_eq!(args.command.env, ["PATH=/bin", "A=1"]);
        assert_eq!(args.config.stop_signal.as_deref(), Some("SIGQUIT"));
    }

    #[test]
    fn explicit_options_and_command_win_over_the_image() {
        let mut args = image_run(&["debug", "-v"], &["A=2"], Some("/tmp"));
        let root = args.root.clone();
        apply_image_defaults(&mut args, &defaults(), &root).unwrap();
        assert_eq!(
            (args.command.cmd.as_str(), args.command.args.clone()),
            ("/init", vec!["debug".to_owned(), "-v".to_owned()])
        );
        assert_eq!(
            (args.command.cwd.as_deref(), args.command.env.clone()),
            (Some("/tmp"), vec!["PATH=/bin".to_owned(), "A=2".to_owned()])
        );
    }

    #[test]
    fn an_image_without_entrypoint_or_cmd_needs_a_command() {
        let mut args = image_run(&[], &[], None);
        let root = args.root.clone();
        let err = apply_image_defaults(&mut args, &ImageDefaults::default(), &root).unwrap_err();
        assert!(err.to_string().contains("no Entrypoint or Cmd"), "{err}");
    }

    #[test]
    fn not_found_names_the_command_on_one_line() {
        let failed = ExecFailed {
            kind: ExecFailureKind::NotFound,
            errno: Some(2),
            errno_name: Some("ENOENT".into()),
            message: "execvp: No such file or directory".into(),
            stage: None,
        };
        let line = exec_failed_line("nosuchcmd", &failed);
        assert!(line.starts_with("moat: nosuchcmd: command not found"), "{line}");
        assert!(!line.contains('\n'));
    }
}
