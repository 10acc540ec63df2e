//! Talking to a registry, through oci-client: the manifest for this host's platform (image
//! indexes and Docker manifest lists resolved to linux + this architecture), and blobs streamed
//! to a writer that counts and hashes them, so every blob is verified against its descriptor's
//! size and sha256 digest whatever the registry sends.
//!
//! Transport: HTTPS, except plain HTTP to loopback registries and those in
//! `MOAT_INSECURE_REGISTRIES`. Auth: oci-client answers bearer-token and basic challenges with
//! the credentials given (`--registry-auth`, else `~/.docker/config.json`), anonymous otherwise.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use base64::Engine as _;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

use crate::image::error::ImageError;
use crate::image::reference::ImageRef;
use crate::limits::REGISTRY_CONNECT_TIMEOUT_MS;

/// The `auths` key docker uses for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (`--registry-auth`).
    pub fn parse(text: &str) -> Result<Credentials, ImageError> {
        match text.split_once(':') {
            Some((user, pass)) if !user.is_empty() => {
                Ok(Credentials { username: user.to_owned(), password: pass.to_owned() })
            }
            _ => Err(ImageError::Credentials("--registry-auth: expected USER:PASS".to_owned())),
        }
    }

    /// `text` (a docker config, or empty for none) with these credentials as `registry`'s
    /// `auths` entry (`moat login`); every other field is kept.
    pub fn into_docker_config(&self, text: &str, registry: &str) -> Result<String, ImageError> {
        let mut config: serde_json::Value = if text.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(text)
                .map_err(|err| ImageError::Credentials(format!("~/.docker/config.json: {err}")))?
        };
        let key = if ["docker.io", "index.docker.io", "registry-1.docker.io"].contains(&registry) {
            DOCKER_HUB_AUTH_KEY
        } else {
            registry
        };
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        let Some(object) = config.as_object_mut() else {
            return Err(ImageError::Credentials("~/.docker/config.json is not an object".into()));
        };
        let auths = object.entry("auths").or_insert_with(|| serde_json::json!({}));
        let Some(auths) = auths.as_object_mut() else {
            return Err(ImageError::Credentials(
                "~/.docker/config.json: auths is not an object".into(),
            ));
        };
        auths.insert(key.to_owned(), serde_json::json!({ "auth": encoded }));
        Ok(serde_json::to_string_pretty(&config).unwrap_or_default())
    }

    /// The credentials `~/.docker/config.json` (its text) holds for `registry`, from `auths`'
    /// base64 `auth` field. Docker Hub is keyed `https://index.docker.io/v1/`.
    pub fn from_docker_config(
        text: &str,
        registry: &str,
    ) -> Result<Option<Credentials>, ImageError> {
        let config: serde_json::Value = serde_json::from_str(text)
            .map_err(|err| ImageError::Credentials(format!("~/.docker/config.json: {err}")))?;
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        for (key, value) in auths {
            let host = key.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or_default();
            let matches = host == registry || (hub.contains(&registry) && hub.contains(&host));
            let Some(encoded) = value.get("auth").and_then(|a| a.as_str()).filter(|_| matches)
            else {
                continue;
            };
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|err| {
                    ImageError::Credentials(format!("~/.docker/config.json auth for {key}: {err}"))
                })?;
            let text = String::from_utf8(decoded).map_err(|_| {
                ImageError::Credentials(format!("~/.docker/config.json auth for {key}: not UTF-8"))
            })?;
            return Credentials::parse(&text).map(Some).map_err(|_| {
                ImageError::Credentials(format!(
                    "~/.docker/config.json auth for {key}: expected base64 of USER:PASS"
                ))
            });
        }
        Ok(None)
    }
}

/// A client for one image's registry.
pub(crate) struct Registry {
    client: Client,
    auth: RegistryAuth,
    index_without_match: Arc<AtomicBool>,
}

impl Registry {
    /// A client for `image`'s registry; `insecure` is `MOAT_INSECURE_REGISTRIES`'s value.
    pub(crate) fn new(
        image: &ImageRef,
        credentials: Option<Credentials>,
        insecure: Option<&str>,
    ) -> Registry {
        let index_without_match = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&index_without_match);
        let protocol = if image.plain_http(insecure) {
            ClientProtocol::HttpsExcept(vec![
                image.registry().to_owned(),
                image.oci().resolve_registry().to_owned(),
            ])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_millis(REGISTRY_CONNECT_TIMEOUT_MS)),
            platform_resolver: Some(Box::new(move |entries: &[ImageIndexEntry]| {
                let chosen = host_platform_manifest(entries);
                if chosen.is_none() {
                    flag.store(true, Ordering::Relaxed);
                }
                chosen
            })),
            ..ClientConfig::default()
        };
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        Registry { client: Client::new(config), auth, index_without_match }
    }

    /// The image manifest for this host and its digest.
    pub(crate) async fn manifest(
        &self,
        image: &ImageRef,
    ) -> Result<(OciImageManifest, String), ImageError> {
        let pulled = self.client.pull_image_manifest(image.oci(), &self.auth).await;
        pulled.map_err(|err| {
            if self.index_without_match.load(Ordering::Relaxed) {
                ImageError::NoPlatform {
                    reference: image.canonical(),
                    arch: std::env::consts::ARCH,
                }
            } else {
                registry_error(image, err)
            }
        })
    }

    /// Streams the blob `descriptor` into `out`, calling `progress` with each chunk's size;
    /// fails unless exactly `descriptor.size` bytes hashing to its digest arrived.
    pub(crate) async fn blob(
        &self,
        image: &ImageRef,
        descriptor: &OciDescriptor,
        what: &'static str,
        out: &mut dyn Write,
        progress: &dyn Fn(u64),
    ) -> Result<(), ImageError> {
        crate::image::store::digest_hex(&descriptor.digest)?;
        let expected = u64::try_from(descriptor.size).unwrap_or(0);
        let mut sink =
            VerifyingWriter { out, hasher: Sha256::new(), written: 0, limit: expected, progress };
        let result = self.client.pull_blob(image.oci(), descriptor, &mut sink).await;
        let actual = sink.written;
        if actual != expected {
            return Err(ImageError::SizeMismatch {
                what,
                digest: descriptor.digest.clone(),
                expected,
                actual,
            });
        }
        let digest = format!("sha256:{}", hex::encode(sink.hasher.finalize()));
        if digest != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                what,
                expected: descriptor.digest.clone(),
                actual: digest,
            });
        }
        result.map_err(|err| registry_error(image, err))
    }
}

/// linux + this host's architecture, from an image index.
fn host_platform_manifest(entries: &[ImageIndexEntry]) -> Option<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    entries
        .iter()
        .find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
        })
        .map(|entry| entry.digest.clone())
}

/// Counts, hashes and bounds what oci-client writes; writes through to a blocking writer.
struct VerifyingWriter<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    written: u64,
    limit: u64,
    progress: &'a dyn Fn(u64),
}

impl tokio::io::AsyncWrite for VerifyingWriter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let len = buf.len() as u64;
        this.written += len;
        if this.written > this.limit {
            return Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than its descriptor says",
            )));
        }
        this.hasher.update(buf);
        (this.progress)(len);
        Poll::Ready(this.out.write_all(buf).map(|()| buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.out.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One typed, one-line error for an oci-client failure.
fn registry_error(image: &ImageRef, err: OciDistributionError) -> ImageError {
    let reference = image.canonical();
    match err {
        OciDistributionError::RequestError(ref e) if e.is_connect() || e.is_timeout() => {
            ImageError::Unreachable {
                registry: image.registry().to_owned(),
                reason: one_line(&source_chain(e)),
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFound { reference },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                        | oci_client::errors::OciErrorCode::NotFound
                )
            }) =>
        {
            ImageError::NotFound { reference }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized { reference },
        OciDistributionError::ServerError { code: 404, .. } => ImageError::NotFound { reference },
        other => ImageError::Registry { reference, reason: one_line(&source_chain(&other)) },
    }
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_is_user_colon_password() {
        let c = Credentials::parse("me:pa:ss").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "pa:ss"));
        assert!(Credentials::parse("nobody").is_err());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn login_writes_an_entry_the_pull_reads_back_and_keeps_the_rest() {
        let c = Credentials::parse("me:pw").unwrap();
        let text = c
            .into_docker_config(r#"{"credsStore":"x","auths":{"a:1":{"auth":"eDp5"}}}"#, "b:2")
            .unwrap();
        assert_eq!(Credentials::from_docker_config(&text, "b:2").unwrap(), Some(c.clone()));
        assert!(Credentials::from_docker_config(&text, "a:1").unwrap().is_some());
        assert!(text.contains("credsStore"));
        let hub = c.into_docker_config("", "docker.io").unwrap();
        assert!(hub.contains(DOCKER_HUB_AUTH_KEY), "{hub}");
    }

    #[test]
    fn docker_config_auths_are_found_by_registry() {
        let config = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
                                  "127.0.0.1:5000":{"auth":"bG9jYWw6cHc="}}}"#;
        let hub = Credentials::from_docker_config(config, "docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("hub", "secret"));
        let local = Credentials::from_docker_config(config, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.username, "local");
        assert_eq!(Credentials::from_docker_config(config, "ghcr.io").unwrap(), None);
        assert!(Credentials::from_docker_config("{", "ghcr.io").is_err());
    }
}
