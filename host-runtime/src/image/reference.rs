//! Image references as docker reads them: `name[:tag][@digest]`, Docker Hub short names
//! (`python:3.12` is `docker.io/library/python:3.12`), registries with ports. Parsing is
//! oci-client's (the distribution grammar); this module adds what moat decides on top: which
//! registries are spoken to over plain HTTP, and the canonical name the store keys images by.
//!
//! ```text
//!  python:3.12                    ─► docker.io/library/python:3.12
//!  127.0.0.1:5000/tools/bb        ─► 127.0.0.1:5000/tools/bb:latest     (plain HTTP: loopback)
//!  ghcr.io/o/r@sha256:<64 hex>    ─► ghcr.io/o/r@sha256:<64 hex>
//! ```

use std::net::IpAddr;

use oci_client::Reference;

use crate::image::error::ImageError;

/// The environment variable listing extra registries (`host:port,...`) spoken to over HTTP.
pub const INSECURE_REGISTRIES_ENV: &str = "MOAT_INSECURE_REGISTRIES";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses `text` the way docker does.
    pub fn parse(text: &str) -> Result<ImageRef, ImageError> {
        let bad = |reason: String| ImageError::BadReference { reference: text.to_owned(), reason };
        if text.is_empty() || text.trim() != text {
            return Err(bad("empty or surrounded by whitespace".to_owned()));
        }
        let inner: Reference = text.parse().map_err(|err| bad(format!("{err}")))?;
        if let Some(digest) = inner.digest() {
            crate::image::store::digest_hex(digest).map_err(|_| {
                bad(format!("digest {digest:?}: only sha256 with 64 hex digits is supported"))
            })?;
        }
        Ok(ImageRef { inner })
    }

    /// The canonical name the store keys the image by, e.g. `docker.io/library/busybox:latest`.
    pub fn canonical(&self) -> String {
        self.inner.whole()
    }

    /// The registry as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/python`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// oci-client's reference.
    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }

    /// Whether this registry is spoken to over plain HTTP: a loopback address, or listed in
    /// `insecure` (the value of [`INSECURE_REGISTRIES_ENV`]).
    pub fn plain_http(&self, insecure: Option<&str>) -> bool {
        let registry = self.registry();
        is_loopback_registry(registry)
            || insecure
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .any(|listed| !listed.is_empty() && listed == registry)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Whether `registry` (`host[:port]`) names a loopback host: 127.0.0.0/8, `::1`, `localhost`.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(host, _port)| host),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        ImageRef::parse(text).unwrap().canonical()
    }

    #[test]
    fn docker_hub_short_names_get_library_and_latest() {
        assert_eq!(canonical("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canonical("python:3.12"), "docker.io/library/python:3.12");
        assert_eq!(canonical("someone/tool:1"), "docker.io/someone/tool:1");
    }

    #[test]
    fn explicit_registries_with_ports_are_kept() {
        let r = ImageRef::parse("127.0.0.1:5000/tools/bb:v2").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "tools/bb", Some("v2"))
        );
        assert_eq!(canonical("localhost:5000/bb"), "localhost:5000/bb:latest");
    }

    #[test]
    fn a_digest_pins_the_reference() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/r@{digest}")).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
        let both = ImageRef::parse(&format!("ghcr.io/o/r:1@{digest}")).unwrap();
        assert_eq!((both.tag(), both.digest()), (Some("1"), Some(digest.as_str())));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in
            ["", " busybox", "bb:bad!tag", "Busybox", "bb@sha256:short", "a:b:c", "bb@md5:abcd"]
        {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        for registry in ["127.0.0.1:5000", "127.8.9.1", "localhost:1", "[::1]:5000"] {
            assert!(is_loopback_registry(registry), "{registry}");
        }
        for registry in ["docker.io", "10.0.0.1:5000", "128.0.0.1", "localhost.example:5"] {
            assert!(!is_loopback_registry(registry), "{registry}");
        }
    }

    #[test]
    fn insecure_registries_are_listed_by_host_and_port() {
        let r = ImageRef::parse("reg.lan:5000/x").unwrap();
        assert!(!r.plain_http(None));
        assert!(r.plain_http(Some("other:1, reg.lan:5000")));
        assert!(!r.plain_http(Some("reg.lan")));
    }
}
