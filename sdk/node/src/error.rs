//! The addon's errors and the one place they become JS exceptions.
//!
//! napi-rs rejects a promise with an `Error` whose `code` is a napi status name; moat's codes
//! travel in the message as `CODE: text`, and the JS entry (`index.js`) turns every rejection
//! into the matching `MoatError` subclass with that `code` (see `errors.js`). napi's own argument
//! conversion failures (`StringExpected`, `InvalidArg`, ...) are mapped there too.

use std::time::Duration;

use moat_runtime::api::GuestFsError;
use moat_runtime::error::RuntimeError;
use moat_runtime::image::ImageError;
use moat_runtime::network::NetworkError;
use moat_runtime::store::volumes::VolumeError;

/// What went wrong in a call from JS.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A config field or call moat does not implement yet.
    #[error("not supported by moat: {0}")]
    NotSupported(String),
    /// A value from JS that cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// The call needs the handle's sandbox, which is gone.
    #[error("sandbox {0:?} does not exist (removed?)")]
    NotFound(String),
    /// A sandbox runtime call failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// An image store call failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A volume store call failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The command never started, or the agent refused it.
    #[error("exec failed: {0}")]
    ExecFailed(String),
    /// The relay connection failed or spoke out of turn.
    #[error("agent connection: {0}")]
    Protocol(String),
    /// The connection or stream was closed by this program.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// A file read as text is not UTF-8.
    #[error("{0:?} is not UTF-8 text")]
    NotUtf8(String),
    /// A command ran past its `timeoutMs` and was killed.
    #[error("the command ran longer than its {0:?} timeout and was killed")]
    ExecTimeout(Duration),
    /// The blocking worker thread died (a bug: the library panicked).
    #[error("moat worker thread failed: {0}")]
    Worker(String),
}

impl NodeError {
    /// The `code` the JS error carries.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            NodeError::NotSupported(_) => "ERR_MOAT_NOT_SUPPORTED",
            NodeError::InvalidArgument(_) => "ERR_MOAT_INVALID_ARGUMENT",
            NodeError::NotFound(_) => "ERR_MOAT_NOT_FOUND",
            NodeError::Runtime(err) => runtime_code(err),
            NodeError::Image(ImageError::NotInStore(_)) => "ERR_MOAT_NOT_FOUND",
            NodeError::Image(_) => "ERR_MOAT_IMAGE",
            NodeError::Volume(err) => volume_code(err),
            NodeError::ExecFailed(_) => "ERR_MOAT_EXEC_FAILED",
            NodeError::Protocol(_) => "ERR_MOAT_PROTOCOL",
            NodeError::Closed(_) => "ERR_MOAT_CLOSED",
            NodeError::ExecTimeout(_) => "ERR_MOAT_TIMEOUT",
            NodeError::NotUtf8(_) => "ERR_MOAT_NOT_UTF8",
            NodeError::Worker(_) => "ERR_MOAT_INTERNAL",
        }
    }
}

fn runtime_code(err: &RuntimeError) -> &'static str {
    match err {
        RuntimeError::UnknownSandbox(_) => "ERR_MOAT_NOT_FOUND",
        RuntimeError::DuplicateName(_) => "ERR_MOAT_ALREADY_EXISTS",
        RuntimeError::InvalidName { .. } | RuntimeError::Config(_) => "ERR_MOAT_INVALID_ARGUMENT",
        RuntimeError::NotRunning { .. } => "ERR_MOAT_NOT_RUNNING",
        RuntimeError::StillRunning(_) => "ERR_MOAT_STILL_RUNNING",
        RuntimeError::WaitTimeout { .. } => "ERR_MOAT_TIMEOUT",
        RuntimeError::Image(ImageError::NotInStore(_)) => "ERR_MOAT_NOT_FOUND",
        RuntimeError::Image(_) => "ERR_MOAT_IMAGE",
        RuntimeError::GuestFs(err) => guest_fs_code(err),
        RuntimeError::AlreadyRunning { .. } => "ERR_MOAT_ALREADY_RUNNING",
        RuntimeError::Volume(err) => volume_code(err),
        // What the backend cannot give (a VM's network, an unprivileged one) is not built yet.
        RuntimeError::Network(NetworkError::NotBuilt { .. }) => "ERR_MOAT_NOT_SUPPORTED",
        RuntimeError::Network(NetworkError::PortUnavailable { .. }) => "ERR_MOAT_PORT_UNAVAILABLE",
        RuntimeError::Network(_) => "ERR_MOAT_NETWORK",
        // The sandbox process reports its network's errors as its boot failure's text.
        RuntimeError::Boot { message, .. } if message.contains("cannot bind the host port") => {
            "ERR_MOAT_PORT_UNAVAILABLE"
        }
        RuntimeError::Boot { .. } => "ERR_MOAT_BOOT",
        RuntimeError::PeerGone { .. }
        | RuntimeError::Unexpected { .. }
        | RuntimeError::Prologue(_)
        | RuntimeError::LegacyRelay
        | RuntimeError::IdsExhausted
        | RuntimeError::Frame { .. }
        | RuntimeError::Decode { .. }
        | RuntimeError::Encode { .. } => "ERR_MOAT_PROTOCOL",
        _ => "ERR_MOAT_RUNTIME",
    }
}

/// A failed filesystem call in the guest: the conditions a caller acts on get their own code.
fn guest_fs_code(err: &GuestFsError) -> &'static str {
    match err {
        GuestFsError::NotFound { .. } => "ERR_MOAT_NOT_FOUND",
        GuestFsError::AlreadyExists { .. } => "ERR_MOAT_ALREADY_EXISTS",
        GuestFsError::IsADirectory { .. } => "ERR_MOAT_IS_A_DIRECTORY",
        GuestFsError::NotADirectory { .. } => "ERR_MOAT_NOT_A_DIRECTORY",
        GuestFsError::NotEmpty { .. } => "ERR_MOAT_NOT_EMPTY",
        GuestFsError::PermissionDenied { .. } => "ERR_MOAT_PERMISSION_DENIED",
        GuestFsError::TooLarge { .. } => "ERR_MOAT_TOO_LARGE",
        GuestFsError::NotUtf8 { .. } => "ERR_MOAT_NOT_UTF8",
        GuestFsError::StreamEnded { .. } => "ERR_MOAT_CLOSED",
        GuestFsError::Failed { .. } => "ERR_MOAT_FS",
    }
}

/// A failed volume store call: the conditions a caller acts on get their own code.
fn volume_code(err: &VolumeError) -> &'static str {
    match err {
        VolumeError::Unknown(_) => "ERR_MOAT_NOT_FOUND",
        VolumeError::Exists(_) => "ERR_MOAT_ALREADY_EXISTS",
        VolumeError::InvalidName { .. } | VolumeError::BadQuota { .. } => {
            "ERR_MOAT_INVALID_ARGUMENT"
        }
        VolumeError::PathEscapes { .. } => "ERR_MOAT_PATH_ESCAPES",
        VolumeError::InUse { .. } => "ERR_MOAT_IN_USE",
        VolumeError::QuotaNeedsRoot(_) => "ERR_MOAT_PERMISSION_DENIED",
        VolumeError::QuotaExceeded { .. } => "ERR_MOAT_QUOTA_EXCEEDED",
        VolumeError::TooLarge { .. } => "ERR_MOAT_TOO_LARGE",
        VolumeError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => "ERR_MOAT_NOT_FOUND",
            std::io::ErrorKind::AlreadyExists => "ERR_MOAT_ALREADY_EXISTS",
            std::io::ErrorKind::IsADirectory => "ERR_MOAT_IS_A_DIRECTORY",
            std::io::ErrorKind::NotADirectory => "ERR_MOAT_NOT_A_DIRECTORY",
            std::io::ErrorKind::DirectoryNotEmpty => "ERR_MOAT_NOT_EMPTY",
            std::io::ErrorKind::PermissionDenied => "ERR_MOAT_PERMISSION_DENIED",
            _ => "ERR_MOAT_VOLUME",
        },
        _ => "ERR_MOAT_VOLUME",
    }
}

impl From<NodeError> for napi::Error {
    fn from(err: NodeError) -> napi::Error {
        napi::Error::new(napi::Status::GenericFailure, format!("{}: {err}", err.code()))
    }
}

/// The addon's result type.
pub(crate) type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Runs a blocking library call on tokio's blocking pool, so node's event loop never waits on
/// a socket, a child process or a file.
pub(crate) async fn blocking<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(join) => Err(NodeError::Worker(join.to_string())),
    }
}

/// Runs a blocking library call on tokio's blocking pool and settles the returned promise from
/// that thread: one hop to the pool and one back to node's thread. (An `async fn` awaiting
/// [`blocking`] adds a third: the runtime's worker that polls the future is woken by the pool
/// and only then settles the promise; for a short call such as an exec round trip that wake-up
/// is a measurable share.)
pub(crate) fn promise_blocking<'env, T, F>(
    env: &'env napi::Env,
    call: F,
) -> napi::Result<napi::bindgen_prelude::Object<'env>>
where
    T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred()?;
    napi::bindgen_prelude::spawn_blocking(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            Ok(Ok(value)) => deferred.resolve(move |_| Ok(value)),
            Ok(Err(err)) => deferred.reject(err.into()),
            Err(_) => deferred.reject(NodeError::Worker("the library call panicked".into()).into()),
        }
    });
    Ok(promise)
}
