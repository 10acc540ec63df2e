//! The image domain's errors: references, registries, verification, unpacking, the store.
//! Every variant prints as one line naming what failed (the reference, the blob, the entry).

use std::path::PathBuf;

/// Why a layer could not be unpacked. The entry is the path as the tar archive spells it.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry whose path has a `..` component.
    #[error("entry {entry:?} has a `..` component; refused")]
    DotDot {
        /// The entry's path.
        entry: String,
    },
    /// An entry with an absolute path.
    #[error("entry {entry:?} has an absolute path; refused")]
    Absolute {
        /// The entry's path.
        entry: String,
    },
    /// An entry whose parent path goes through a symlink (or a non-directory) of its own layer.
    #[error(
        "entry {entry:?} goes through {component:?}, which is not a directory in its layer (a symlink?); refused"
    )]
    ThroughSymlink {
        /// The entry's path.
        entry: String,
        /// The prefix that is not a directory.
        component: String,
    },
    /// A hard link whose target is unusable (absolute, `..`, missing, or through a symlink).
    #[error("hard link {entry:?} -> {target:?}: {reason}; refused")]
    BadHardLink {
        /// The link's path.
        entry: String,
        /// Its target as the archive spells it.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// A character or block device node.
    #[error("entry {entry:?} is a device node; images may not carry device nodes; refused")]
    DeviceNode {
        /// The entry's path.
        entry: String,
    },
    /// A path that is not UTF-8 or has a NUL byte.
    #[error("entry {entry:?} has an unusable path: {reason}")]
    BadPath {
        /// The entry's path, lossily decoded.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// The layer has more entries than [`crate::limits::MAX_LAYER_ENTRIES`].
    #[error("the layer has more than {max} entries; refused")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// A filesystem operation on an entry failed.
    #[error("entry {entry:?}: {op}: {source}")]
    Io {
        /// The entry's path.
        entry: String,
        /// The operation, e.g. `"create file"`.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The archive (or its compression) is malformed.
    #[error("malformed layer archive: {0}")]
    Archive(std::io::Error),
    /// The uncompressed layer does not hash to the diff id the image config names.
    #[error("uncompressed layer is {actual}, the image config says {expected}")]
    DiffIdMismatch {
        /// The config's diff id.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// What went wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error("image reference {reference:?}: {reason}")]
    BadReference {
        /// What the user gave.
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The registry could not be reached (refused, no route, DNS, TLS).
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The transport's one-line reason.
        reason: String,
    },
    /// The registry does not have the image.
    #[error("{reference}: not found in the registry")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The registry refused our credentials (or asked for some).
    #[error(
        "{reference}: the registry refused access (give credentials with --registry-auth USER:PASS or in ~/.docker/config.json)"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
    },
    /// Any other registry failure.
    #[error("{reference}: registry: {reason}")]
    Registry {
        /// The reference.
        reference: String,
        /// oci-client's description, on one line.
        reason: String,
    },
    /// An image index with no manifest for this host.
    #[error("{reference}: the image has no linux/{arch} manifest")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// This host's architecture.
        arch: &'static str,
    },
    /// A manifest, config or layer whose bytes do not hash to its digest.
    #[error("{what} {expected}: the downloaded bytes hash to {actual}; nothing was kept")]
    DigestMismatch {
        /// `"layer"`, `"config"`.
        what: &'static str,
        /// The digest the manifest names.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A blob shorter or longer than its descriptor says.
    #[error("{what} {digest}: got {actual} bytes, the manifest says {expected}; nothing was kept")]
    SizeMismatch {
        /// `"layer"`, `"config"`.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Bytes the manifest announces.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A digest string that is not `sha256:` and 64 lowercase hex digits.
    #[error("unsupported digest {0:?} (only sha256 is supported)")]
    BadDigest(String),
    /// A manifest or config that breaks a rule (too many layers, wrong counts, too large).
    #[error("{reference}: {reason}")]
    BadImage {
        /// The reference.
        reference: String,
        /// The rule.
        reason: String,
    },
    /// A layer could not be unpacked; nothing of it was kept.
    #[error("layer {layer}: {source}")]
    Unpack {
        /// The layer's digest.
        layer: String,
        /// The cause.
        source: UnpackError,
    },
    /// An upper layer writes through a symlink planted by a lower layer.
    #[error(
        "layer {layer}: {path:?} goes through the symlink {symlink:?} of a lower layer; refused"
    )]
    CrossLayerSymlink {
        /// The upper layer's diff id.
        layer: String,
        /// The path it writes under.
        path: String,
        /// The lower layer's symlink.
        symlink: String,
    },
    /// The image is not in the store.
    #[error("no image {0} in the store (moat pull it first)")]
    NotInStore(String),
    /// `moat rmi` on an image a sandbox still uses.
    #[error(
        "image {reference} is used by sandbox {sandbox:?}; remove the sandbox or use `moat rmi -f`"
    )]
    InUse {
        /// The image.
        reference: String,
        /// A sandbox that uses it.
        sandbox: String,
    },
    /// `run --image` without a command, and the image has neither Entrypoint nor Cmd.
    #[error("{reference} has no Entrypoint or Cmd; give a command after --")]
    NoCommand {
        /// The image.
        reference: String,
    },
    /// `--image` without root: unpacking a layer writes overlayfs whiteouts (device nodes) and
    /// `trusted.*` xattrs, and the layers are mounted before the user namespace exists.
    #[error(
        "--image needs root for now: unpacking layers writes device-node whiteouts and trusted xattrs (use --rootfs DIR without root)"
    )]
    NeedsRoot,
    /// A store file or directory operation failed.
    #[error("image store: {what} {}: {source}", path.display())]
    Io {
        /// The step.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A store file that does not parse.
    #[error("image store: {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// `~/.docker/config.json` or `--registry-auth` is unusable.
    #[error("registry credentials: {0}")]
    Credentials(String),
}

impl ImageError {
    /// An [`ImageError::Io`] builder for `map_err`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { what, path, source }
    }
}

impl UnpackError {
    /// An [`UnpackError::Io`] builder for `map_err`.
    pub(crate) fn io(entry: &str, op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let entry = entry.to_owned();
        move |source| UnpackError::Io { entry, op, source }
    }
}
