//! Named volumes from the library: [`Moat::volumes`] is the home's volume store
//! ([`crate::store::volumes`]): create (optionally with a quota), list, inspect, remove, and
//! host-side file access contained in a volume. A sandbox mounts one by name with a
//! [`crate::config::Volume`] whose `name` is set (`-v NAME:/path` on the CLI).
//!
//! ```no_run
//! use moat_runtime::api::Moat;
//! use moat_runtime::store::volumes::VolumeOptions;
//!
//! let moat = Moat::new("/var/lib/moat");
//! let volumes = moat.volumes();
//! volumes.create("cache", VolumeOptions { quota_mib: Some(64) })?;
//! volumes.write("cache", "/seed.txt", b"hello")?;
//! assert_eq!(volumes.read("cache", "seed.txt", 1024)?, b"hello");
//! # Ok::<(), moat_runtime::store::volumes::VolumeError>(())
//! ```

use super::{Moat, blocking};
use crate::store::volumes::Volumes;

impl Moat {
    /// The home's named volumes (blocking calls: each is a few file operations).
    pub fn volumes(&self) -> Volumes {
        Volumes::new(self.home())
    }
}

impl blocking::Moat {
    /// The home's named volumes.
    pub fn volumes(&self) -> Volumes {
        Volumes::new(self.home())
    }
}
