//! The image functions (`imageList`, `imageGet`, `imageInspect`, `imageRemove`, `imageGc`) over
//! the moat home's image store.

use moat_runtime::image::{ImageRecord, ImageRoot, ImageSummary};
use napi_derive::napi;

use crate::error::{NodeError, blocking};
use crate::library;

/// An image as `imageList` and `imageGet` report it.
#[napi(object)]
pub struct ImageInfo {
    /// The canonical reference.
    pub reference: String,
    /// The manifest digest.
    pub manifest_digest: Option<String>,
    /// Layers.
    pub layer_count: u32,
    /// Bytes of file content of its unpacked layers.
    pub size_bytes: Option<f64>,
    /// When it was pulled, ms since the epoch.
    pub created_at: Option<f64>,
}

impl ImageInfo {
    fn of(summary: ImageSummary) -> ImageInfo {
        ImageInfo {
            reference: summary.reference,
            manifest_digest: Some(summary.digest),
            layer_count: u32::try_from(summary.layers).unwrap_or(u32::MAX),
            size_bytes: Some(summary.unpacked_bytes as f64),
            created_at: Some(summary.pulled_at as f64 * 1000.0),
        }
    }
}

/// The image's OCI config fields moat records.
#[napi(object)]
pub struct ImageConfigDetail {
    /// The config blob's digest.
    pub digest: String,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
}

/// One layer of an image.
#[napi(object)]
pub struct ImageLayerDetail {
    /// The uncompressed digest.
    pub diff_id: String,
    /// The blob digest.
    pub blob_digest: String,
    /// Compressed size.
    pub compressed_size_bytes: Option<f64>,
    /// Position, 0 = bottom.
    pub position: u32,
}

/// What `imageInspect` returns.
#[napi(object)]
pub struct ImageDetail {
    /// The canonical reference.
    pub reference: String,
    /// The manifest digest.
    pub manifest_digest: Option<String>,
    /// Layers.
    pub layer_count: u32,
    /// Compressed bytes of its layers.
    pub size_bytes: Option<f64>,
    /// When it was pulled, ms since the epoch.
    pub created_at: Option<f64>,
    /// Its config.
    pub config: Option<ImageConfigDetail>,
    /// Its layers, bottom first.
    pub layers: Vec<ImageLayerDetail>,
}

fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

impl ImageDetail {
    fn of(record: ImageRecord, root: ImageRoot) -> ImageDetail {
        let size: u64 = record.layers.iter().map(|layer| layer.size).sum();
        let defaults = root.defaults;
        ImageDetail {
            layer_count: u32::try_from(record.layers.len()).unwrap_or(u32::MAX),
            size_bytes: Some(size as f64),
            created_at: Some(record.pulled_at as f64 * 1000.0),
            config: Some(ImageConfigDetail {
                digest: record.config_digest,
                env: defaults.env,
                cmd: non_empty(defaults.cmd),
                entrypoint: non_empty(defaults.entrypoint),
                working_dir: defaults.working_dir,
                user: defaults.user,
                stop_signal: defaults.stop_signal,
            }),
            layers: record
                .layers
                .into_iter()
                .enumerate()
                .map(|(position, layer)| ImageLayerDetail {
                    diff_id: layer.diff_id,
                    blob_digest: layer.digest,
                    compressed_size_bytes: Some(layer.size as f64),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                })
                .collect(),
            reference: record.reference,
            manifest_digest: Some(record.manifest_digest),
        }
    }
}

/// Every image in the store.
#[napi]
pub async fn image_list() -> napi::Result<Vec<ImageInfo>> {
    let images = blocking(library::image_list).await?;
    Ok(images.into_iter().map(ImageInfo::of).collect())
}

/// The stored image `reference` (`ERR_MOAT_NOT_FOUND` when it is not in the store).
#[napi]
pub async fn image_get(reference: String) -> napi::Result<ImageInfo> {
    let detail = image_inspect(reference).await?;
    Ok(ImageInfo {
        reference: detail.reference,
        manifest_digest: detail.manifest_digest,
        layer_count: detail.layer_count,
        size_bytes: detail.size_bytes,
        created_at: detail.created_at,
    })
}

/// The stored image `reference` with its config and layers.
#[napi]
pub async fn image_inspect(reference: String) -> napi::Result<ImageDetail> {
    let wanted = reference.clone();
    let found = blocking(move || library::image_find(&wanted)).await?;
    match found {
        Some((record, root)) => Ok(ImageDetail::of(record, root)),
        None => {
            Err(NodeError::Image(moat_runtime::image::ImageError::NotInStore(reference)).into())
        }
    }
}

/// Removes an image; `force` removes it even when a sandbox uses it.
#[napi]
pub async fn image_remove(reference: String, force: Option<bool>) -> napi::Result<()> {
    blocking(move || library::image_remove(&reference, force.unwrap_or(false))).await?;
    Ok(())
}

/// Removes unreferenced layers and leftovers; returns how many layers it removed.
#[napi]
pub async fn image_gc() -> napi::Result<u32> {
    let report = blocking(library::image_gc).await?;
    Ok(u32::try_from(report.layers).unwrap_or(u32::MAX))
}
