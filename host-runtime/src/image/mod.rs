//! OCI images: pull from registries, keep once in a content-addressed store, stack as roots.
//!
//! ```text
//!  "python:3.12" ─► reference ─► registry (oci-client): manifest for linux/<arch>, config blob
//!       ─► per layer not yet stored: blob ─► tmp file (size + sha256 checked while streaming)
//!            ─► unpack into tmp dir (diff id checked) ─► rename to layers/<diff id>/
//!       ─► stack check (no upper layer writes through a lower layer's symlink) ─► index.json
//!  run/create --image: layers/<diff id>/ top first ─► overlay lower dirs (namespace backend)
//! ```
//!
//! - [`mod@reference`]: docker's reference grammar, plain-HTTP rules.
//! - [`registry`]: oci-client, verification, credentials.
//! - [`unpack`]: the tar/whiteout unpacker (untrusted input).
//! - [`store`]: the on-disk store, locks, prune, the stack check.
//! - [`config`]: the image config and the exec defaults it supplies.
//! - [`progress`]: pull progress for terminals and logs.
//!
//! [`Images`] is the API the CLI and bindings call: blocking methods (each pull runs its own
//! current-thread tokio runtime) and [`Images::pull_async`] for async callers.

pub mod config;
pub mod error;
pub mod mount;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use config::{ImageConfig, ImageDefaults};
pub use error::{ImageError, UnpackError};
pub use progress::{PullEvent, PullProgress};
pub use reference::ImageRef;
pub use registry::Credentials;
pub use store::{ImageRecord, ImageStore, PruneReport};

use crate::limits::{MAX_IMAGE_CONFIG_BYTES, MAX_IMAGE_LAYERS};
use registry::Registry;
use store::{LayerMeta, LayerRef};
use unpack::UnpackOptions;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Credentials given explicitly (`--registry-auth`); else `~/.docker/config.json` is read.
    pub credentials: Option<Credentials>,
    /// Extra plain-HTTP registries (`MOAT_INSECURE_REGISTRIES`' format).
    pub insecure: Option<String>,
    /// Where the docker config is read (`None`: `$HOME/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

impl PullOptions {
    /// Options from the environment: `MOAT_INSECURE_REGISTRIES`, and `auth` (`USER:PASS`).
    pub fn from_env(auth: Option<&str>) -> Result<PullOptions, ImageError> {
        Ok(PullOptions {
            credentials: auth.map(Credentials::parse).transpose()?,
            insecure: std::env::var(reference::INSECURE_REGISTRIES_ENV).ok(),
            docker_config: None,
        })
    }

    /// The docker config file: the one given, else `$HOME/.docker/config.json`.
    pub fn docker_config_path(&self) -> Option<PathBuf> {
        match &self.docker_config {
            Some(path) => Some(path.clone()),
            None => {
                std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
            }
        }
    }

    /// `moat login`: records `credentials` for `registry` in the docker config (mode 0600),
    /// where later pulls find them. The registry is not contacted.
    pub fn login(&self, registry: &str, credentials: &Credentials) -> Result<PathBuf, ImageError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self
            .docker_config_path()
            .ok_or_else(|| ImageError::Credentials("no $HOME for ~/.docker/config.json".into()))?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let updated = credentials.into_docker_config(&text, registry)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(ImageError::io("create", dir))?;
        let tmp = path.with_extension("json.moat-tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(ImageError::io("create", &tmp))?;
        file.write_all(updated.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(ImageError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ImageError::io("replace", &path))?;
        Ok(path)
    }

    fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>, ImageError> {
        if self.credentials.is_some() {
            return Ok(self.credentials.clone());
        }
        let Some(path) = self.docker_config_path() else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Credentials::from_docker_config(&text, registry),
            Err(_) => Ok(None),
        }
    }
}

/// One line of `moat images`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageSummary {
    /// The canonical reference.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// Layers.
    pub layers: usize,
    /// Compressed bytes of its layers.
    pub compressed_bytes: u64,
    /// Bytes of file content of its unpacked layers.
    pub unpacked_bytes: u64,
    /// Seconds since the epoch when it was pulled.
    pub pulled_at: u64,
}

/// An image's root for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRoot {
    /// The record.
    pub record: ImageRecord,
    /// The layer directories, top first (overlayfs' lowerdir order).
    pub layers: Vec<PathBuf>,
    /// The exec defaults.
    pub defaults: ImageDefaults,
}

/// The images of one moat home.
#[derive(Debug, Clone)]
pub struct Images {
    home: PathBuf,
    store: ImageStore,
}

impl Images {
    /// The images of the moat home `home`.
    pub fn new(home: &Path) -> Images {
        Images { home: home.to_owned(), store: ImageStore::new(home) }
    }

    /// The store.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Pulls `reference` (blocking).
    pub fn pull(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord, ImageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ImageError::io("start the pull runtime", "tokio"))?;
        runtime.block_on(self.pull_async(reference, options, progress))
    }

    /// Pulls `reference`: every layer not yet stored is downloaded, verified and unpacked, then
    /// the image is recorded under its canonical reference.
    pub async fn pull_async(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord, ImageError> {
        let image = ImageRef::parse(reference)?;
        self.store.ensure()?;
        let _gc = self.store.gc_lock(false)?;
        // What an interrupted pull left: never trusted, removed here rather than only by prune.
        self.store.sweep_temporaries()?;
        let registry = Registry::new(
            &image,
            options.credentials_for(image.registry())?,
            options.insecure.as_deref(),
        );
        let (manifest, digest) = registry.manifest(&image).await?;
        let bad = |reason: String| ImageError::BadImage { reference: image.canonical(), reason };
        if manifest.layers.len() > MAX_IMAGE_LAYERS {
            return Err(bad(format!(
                "{} layers; moat stacks at most {MAX_IMAGE_LAYERS}",
                manifest.layers.len()
            )));
        }
        if u64::try_from(manifest.config.size).unwrap_or(u64::MAX) > MAX_IMAGE_CONFIG_BYTES {
            return Err(bad(format!("its config is over {MAX_IMAGE_CONFIG_BYTES} bytes")));
        }
        let mut config_bytes = Vec::new();
        registry.blob(&image, &manifest.config, "config", &mut config_bytes, &|_| {}).await?;
        let config = ImageConfig::parse(&config_bytes)
            .map_err(|err| bad(format!("its config does not parse: {err}")))?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "the manifest has {} layers and the config {} diff ids",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        if !config.os.is_empty() && config.os != "linux" {
            return Err(bad(format!("it is a {} image", config.os)));
        }
        self.store.write_blob(&manifest.config.digest, &config_bytes)?;
        let mut layers = Vec::new();
        let mut missing = Vec::new();
        for (descriptor, diff_id) in manifest.layers.iter().zip(&config.diff_ids) {
            store::digest_hex(&descriptor.digest)?;
            let layer = LayerRef {
                digest: descriptor.digest.clone(),
                diff_id: diff_id.clone(),
                size: u64::try_from(descriptor.size).unwrap_or(0),
            };
            if !self.store.has_layer(diff_id)? {
                missing.push((descriptor, layer.clone()));
            }
            layers.push(layer);
        }
        progress.event(PullEvent::Resolved {
            reference: image.canonical(),
            layers: layers.len(),
            cached: layers.len() - missing.len(),
            bytes: missing.iter().map(|(_, l)| l.size).sum(),
        });
        let fetched: Vec<String> = missing.iter().map(|(_, l)| l.diff_id.clone()).collect();
        for (descriptor, layer) in missing {
            self.fetch_layer(&registry, &image, descriptor, &layer, progress).await?;
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        if let Err(err) = self.store.check_stack(&diff_ids) {
            // Each layer is sound alone; together they are refused: keep none this pull brought.
            for diff_id in &fetched {
                self.store.discard_unused_layer(diff_id)?;
            }
            return Err(err);
        }
        let record = ImageRecord {
            reference: image.canonical(),
            manifest_digest: digest.clone(),
            config_digest: manifest.config.digest.clone(),
            layers,
            pulled_at: now_secs(),
            aliases: if reference == image.canonical() {
                Vec::new()
            } else {
                vec![reference.to_owned()]
            },
        };
        self.store.put_record(record.clone())?;
        progress.event(PullEvent::Done { digest });
        Ok(record)
    }

    async fn fetch_layer(
        &self,
        registry: &Registry,
        image: &ImageRef,
        descriptor: &oci_client::manifest::OciDescriptor,
        layer: &LayerRef,
        progress: &dyn PullProgress,
    ) -> Result<(), ImageError> {
        let blob = self.store.temp_path("blob");
        let result = async {
            let mut file = std::fs::File::create(&blob).map_err(ImageError::io("create", &blob))?;
            registry
                .blob(image, descriptor, "layer", &mut file, &|n| {
                    progress.event(PullEvent::Bytes(n))
                })
                .await?;
            drop(file);
            self.unpack_verified(&blob, layer)
        }
        .await;
        store::remove_any(&blob);
        result?;
        progress.event(PullEvent::LayerDone { diff_id: layer.diff_id.clone() });
        Ok(())
    }

    /// Unpacks a verified blob into a temporary directory, checks its diff id, commits it.
    fn unpack_verified(&self, blob: &Path, layer: &LayerRef) -> Result<(), ImageError> {
        let dir = self.store.temp_path("layer");
        std::fs::create_dir(&dir).map_err(ImageError::io("create", &dir))?;
        let result = (|| {
            let file = std::fs::File::open(blob).map_err(ImageError::io("open", blob))?;
            let options = UnpackOptions { privileged: nix::unistd::geteuid().is_root() };
            let unpack_error = |source| ImageError::Unpack { layer: layer.digest.clone(), source };
            let report = unpack::unpack_layer(file, &dir, options).map_err(unpack_error)?;
            if report.diff_id != layer.diff_id {
                return Err(unpack_error(UnpackError::DiffIdMismatch {
                    expected: layer.diff_id.clone(),
                    actual: report.diff_id,
                }));
            }
            let meta = LayerMeta {
                unpacked_bytes: report.bytes,
                entries: report.entries,
                implicit_dirs: report.implicit_dirs,
            };
            self.store.commit_layer(&dir, &layer.diff_id, &meta)
        })();
        if result.is_err() {
            store::remove_any(&dir);
        }
        result
    }

    /// The stored image `reference`, if any: found by the text as given when it is the
    /// canonical name or a spelling it was pulled as, else parsed (the reference grammar's regex
    /// costs tens of milliseconds to build, once per process).
    pub fn find(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        if let Some(record) = self.store.find_named(reference)? {
            return Ok(Some(record));
        }
        self.store.find(&ImageRef::parse(reference)?.canonical())
    }

    /// The stored image, pulled first when the store does not have it.
    pub fn ensure(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord, ImageError> {
        match self.find(reference)? {
            Some(record) if self.complete(&record)? => Ok(record),
            _ => self.pull(reference, options, progress),
        }
    }

    fn complete(&self, record: &ImageRecord) -> Result<bool, ImageError> {
        for layer in &record.layers {
            if !self.store.has_layer(&layer.diff_id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The root a sandbox gets from `record`: its layer directories, top first, and defaults.
    pub fn root(&self, record: &ImageRecord) -> Result<ImageRoot, ImageError> {
        let config =
            ImageConfig::parse(&self.store.read_blob(&record.config_digest)?).map_err(|err| {
                ImageError::BadImage {
                    reference: record.reference.clone(),
                    reason: format!("its stored config does not parse: {err}"),
                }
            })?;
        let layers = record
            .layers
            .iter()
            .rev()
            .map(|l| self.store.layer_dir(&l.diff_id))
            .collect::<Result<_, _>>()?;
        Ok(ImageRoot { record: record.clone(), layers, defaults: config.defaults })
    }

    /// Every stored image.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        Ok(self
            .store
            .records()?
            .into_iter()
            .map(|record| ImageSummary {
                unpacked_bytes: self.store.unpacked_bytes(&record),
                compressed_bytes: record.layers.iter().map(|l| l.size).sum(),
                layers: record.layers.len(),
                digest: record.manifest_digest,
                reference: record.reference,
                pulled_at: record.pulled_at,
            })
            .collect())
    }

    /// Removes the image `reference` and the layers only it used. Refused while a sandbox uses
    /// it, unless `force` (the sandbox keeps its layers until it is removed).
    pub fn remove(&self, reference: &str, force: bool) -> Result<PruneReport, ImageError> {
        let image = ImageRef::parse(reference)?;
        let _gc = self.store.gc_lock(true)?;
        let record = self
            .store
            .find(&image.canonical())?
            .ok_or_else(|| ImageError::NotInStore(image.canonical()))?;
        let users = sandbox_layer_users(&self.home);
        if !force {
            let layers: BTreeSet<&String> = record.layers.iter().map(|l| &l.diff_id).collect();
            if let Some((sandbox, _)) =
                users.iter().find(|(_, used)| used.iter().any(|d| layers.contains(d)))
            {
                return Err(ImageError::InUse {
                    reference: image.canonical(),
                    sandbox: sandbox.clone(),
                });
            }
        }
        self.store.remove_record(&image.canonical())?;
        self.store.prune(&users.into_iter().flat_map(|(_, used)| used).collect())
    }

    /// Removes layers no image and no sandbox uses, and abandoned temporary files.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        let _gc = self.store.gc_lock(true)?;
        let users = sandbox_layer_users(&self.home);
        self.store.prune(&users.into_iter().flat_map(|(_, used)| used).collect())
    }
}

/// Each sandbox of `home` whose root is an image, with the diff ids of its layers.
fn sandbox_layer_users(home: &Path) -> Vec<(String, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir(home.join("sandboxes")) else {
        return Vec::new();
    };
    let mut users = Vec::new();
    for entry in entries.flatten() {
        let Ok(spec) = crate::store::home::SandboxDir::open(entry.path()).read_spec() else {
            continue;
        };
        if let crate::api::config::RootSource::Image(source) = spec.root {
            let diff_ids = source
                .layers
                .iter()
                .filter_map(|dir| {
                    dir.file_name().map(|n| format!("sha256:{}", n.to_string_lossy()))
                })
                .collect();
            users.push((spec.name, diff_ids));
        }
    }
    users
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
