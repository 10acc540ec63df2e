//! An image's layers as one read-only overlayfs mount (lower dirs only, top first), made by
//! `moat __ns-prepare` in the host's user namespace, so overlayfs reads the layers' whiteouts
//! (char devices 0/0) and `trusted.overlay.opaque` xattrs. The agent then puts its throw-away
//! tmpfs upper over this mount exactly as it does over a `--rootfs` directory.
//!
//! The lower dirs are named relative to the store's `layers/` directory (the mount runs with it
//! as the working directory), so 60 layers fit the one-page mount option limit.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::error::RuntimeError;
use crate::image::ImageError;

/// Mounts `layers` (top first, all in one directory) read-only on `target`.
pub fn mount_layers(layers: &[PathBuf], target: &Path) -> Result<(), RuntimeError> {
    let Some(first) = layers.first() else {
        return Err(ImageError::BadImage {
            reference: target.display().to_string(),
            reason: "the image has no layers".to_owned(),
        }
        .into());
    };
    if layers.len() == 1 {
        return crate::backend::namespace::init::bind_rootfs(first, target);
    }
    let store = first.parent().unwrap_or(Path::new("/"));
    let mut names = Vec::new();
    for layer in layers {
        let name = layer.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if layer.parent() != Some(store) || name.is_empty() || name.contains([':', ',']) {
            return Err(RuntimeError::Config(format!(
                "image layer {} is not a layer of the store {}",
                layer.display(),
                store.display()
            )));
        }
        names.push(name);
    }
    std::fs::create_dir_all(target)
        .map_err(RuntimeError::io("create lower mount point", target))?;
    let cwd = std::env::current_dir().map_err(RuntimeError::io("read working directory", "."))?;
    std::env::set_current_dir(store).map_err(RuntimeError::io("enter layer store", store))?;
    let options = format!("lowerdir={}", names.join(":"));
    let mounted = nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        Some(options.as_str()),
    );
    std::env::set_current_dir(&cwd)
        .map_err(RuntimeError::io("return to working directory", &cwd))?;
    mounted.map_err(RuntimeError::mount("mount image layers (overlay)", target))
}
