//! `moat start`: launches a stopped (or crashed) named sandbox again, with the configuration
//! recorded at `create`.
//!
//! ```text
//!  flock DIR ─► state: not live? ─► version ≥ 1? ─► named volumes and image layers there?
//!   ─► what a dead sandbox process left (cgroup, socket, stop-reason) ─► launch (as create)
//! ```
//!
//! What survives a restart: the sandbox's name, labels, configuration, named volumes and host
//! directories shared with `-v`, and its exec log. What does not: the root's writable layer is a
//! tmpfs the agent makes at each boot, so writes to the root outside a volume are gone after a
//! stop; an image root is the same layers from the store, with a fresh empty upper. This module
//! does not create or remove sandboxes; the rest of `lifecycle` does.

use std::path::Path;

use crate::api::config::RootSource;
use crate::error::RuntimeError;
use crate::lifecycle::attach::Attachment;
use crate::lifecycle::{Executables, launch, open_named_in, remove_cgroup_of, run};
use crate::store::home::{self, SandboxDir};
use crate::store::state::{self, SandboxState, Status};

/// `moat start NAME` in `$MOAT_HOME`.
pub fn start(name: &str) -> Result<SandboxState, RuntimeError> {
    start_in(&home::moat_home(), name, None)
}

/// Launches the stopped or crashed sandbox `name` of the moat home `home` again and returns its
/// state once it is ready. `executables`: the `moat` binary to run as its sandbox process
/// (`None`: this one); its agent is the one recorded at create.
pub fn start_in(
    home: &Path,
    name: &str,
    executables: Option<&Executables>,
) -> Result<SandboxState, RuntimeError> {
    let dir = open_named_in(home, name)?;
    start_dir(home, &dir, &moat_of(executables)?, None)
}

/// [`start_in`], attached ([`crate::lifecycle::attach`]): the sandbox stops when the returned
/// attachment is dropped or this process ends.
pub fn start_attached_in(
    home: &Path,
    name: &str,
    executables: Option<&Executables>,
) -> Result<(SandboxState, Attachment), RuntimeError> {
    let dir = open_named_in(home, name)?;
    let (attachment, creator) = Attachment::pipe()?;
    let state = start_dir(home, &dir, &moat_of(executables)?, Some(creator))?;
    Ok((state, attachment))
}

fn moat_of(executables: Option<&Executables>) -> Result<std::path::PathBuf, RuntimeError> {
    match executables {
        Some(given) => Ok(given.moat.clone()),
        None => run::own_executable(),
    }
}

fn start_dir(
    home: &Path,
    dir: &SandboxDir,
    moat: &Path,
    creator: Option<std::os::fd::OwnedFd>,
) -> Result<SandboxState, RuntimeError> {
    // Held until the new sandbox process reported: a second `start` of this sandbox waits here,
    // then finds it running.
    let _one_start = lock_for_start(dir)?;
    let mut record = state::read(dir.path())?;
    if matches!(record.status, Status::Running | Status::Draining) {
        return Err(RuntimeError::AlreadyRunning {
            name: record.name,
            status: record.status.as_str(),
        });
    }
    if record.version < state::STATE_VERSION {
        return Err(RuntimeError::CreatedByOlderMoat(record.name));
    }
    // A named volume's directory is found again (it fails when the volume was removed).
    crate::store::volumes::resolve_named(home, &mut record.spec.config)?;
    check_image_layers(&record)?;
    clear_leftovers(dir, &record);
    let span = tracing::info_span!("sandbox", name = %record.name);
    let _entered = span.enter();
    tracing::info!("starting the sandbox again");
    launch(dir, record, moat, creator)
}

/// An exclusive `flock` on the sandbox directory (closed on exec, so the sandbox process does
/// not inherit it).
fn lock_for_start(dir: &SandboxDir) -> Result<nix::fcntl::Flock<std::fs::File>, RuntimeError> {
    let what = "lock sandbox directory";
    let file = std::fs::File::open(dir.path()).map_err(RuntimeError::io(what, dir.path()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| RuntimeError::io(what, dir.path())(std::io::Error::from(errno)))
}

/// An image root's layers must still be in the store (`moat rmi` may have removed them).
fn check_image_layers(record: &SandboxState) -> Result<(), RuntimeError> {
    let RootSource::Image(image) = &record.spec.root else { return Ok(()) };
    match image.layers.iter().find(|layer| !layer.is_dir()) {
        Some(layer) => Err(RuntimeError::ImageGone {
            name: record.name.clone(),
            reference: image.reference.clone(),
            layer: layer.clone(),
        }),
        None => Ok(()),
    }
}

/// What the previous sandbox process may have left: the cgroup of one that was killed or
/// crashed, its relay socket (the new process waits for the socket to appear), the VM
/// backend's stop-reason note (the first reason written wins, so an old one would be reported)
/// and a drain or stop request (the new process would drain or stop at once).
fn clear_leftovers(dir: &SandboxDir, record: &SandboxState) {
    if let Some(pid) = record.pid {
        remove_cgroup_of(&record.name, pid);
    }
    let stop_request = crate::lifecycle::stop_signal::request_file(dir);
    for path in [dir.socket(), dir.stop_reason_file(), dir.drain_file(), stop_request] {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed a leftover"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(path = %path.display(), %err, "could not remove"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::ImageSource;
    use crate::store::home::SandboxSpec;

    fn record(root: RootSource) -> SandboxState {
        SandboxState {
            version: state::STATE_VERSION,
            name: "box".into(),
            spec: SandboxSpec {
                name: "box".into(),
                root,
                agentd: "/a".into(),
                backend: Default::default(),
                rootless: false,
                config: Default::default(),
            },
            status: Status::Stopped,
            pid: None,
            created_at: state::now(),
            started_at: None,
            stopped_at: None,
            exit_code: None,
            stop_reason: None,
        }
    }

    #[test]
    fn an_image_whose_layer_is_gone_cannot_start() {
        let image = ImageSource {
            layers: vec![std::env::temp_dir(), "/nonexistent/moat-layer".into()],
            ..ImageSource::new("alpine:3")
        };
        let err = check_image_layers(&record(RootSource::Image(image))).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::ImageGone { layer, .. } if layer.ends_with("moat-layer")),
            "{err}"
        );
        assert!(check_image_layers(&record(RootSource::Host)).is_ok());
    }
}
