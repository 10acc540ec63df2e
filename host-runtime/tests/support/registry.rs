//! A real registry for the image tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free 127.0.0.1 port with filesystem storage in a temporary directory, stopped
//! when dropped; and images built by the tests themselves (tar layers, a config, a manifest)
//! pushed to it with oci-client. Nothing here talks to any other address.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::token::{ISSUER, SERVICE, TokenServer};

/// Where Debian's package puts the registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The static busybox the test images are made of.
pub const BUSYBOX_BIN: &str = "/bin/busybox";

/// The password of [`Registry::start_with_basic_auth`]'s user `moat`.
pub const AUTH_PASSWORD: &str = "s3cret";

/// bcrypt of [`AUTH_PASSWORD`] (made once with libxcrypt), for the registry's htpasswd file.
const AUTH_BCRYPT: &str = "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK";

/// How a registry asks clients to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    None,
    Basic,
    Token,
}

/// A running registry.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    auth: RegistryAuth,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    /// Starts one that asks for HTTP basic auth: user `moat`, password [`AUTH_PASSWORD`].
    pub fn start_with_basic_auth() -> Registry {
        Registry::start_configured(true)
    }

    /// Starts one; fails the test saying what to install when the binary is missing.
    pub fn start() -> Registry {
        Registry::start_configured(false)
    }

    /// Starts one that asks for a bearer token from a [`TokenServer`] (Docker token auth), which
    /// gives one for user `moat`, password [`AUTH_PASSWORD`].
    pub fn start_with_token_auth() -> Registry {
        Registry::start_configured_with(Auth::Token)
    }

    fn start_configured(basic_auth: bool) -> Registry {
        Registry::start_configured_with(if basic_auth { Auth::Basic } else { Auth::None })
    }

    fn start_configured_with(kind: Auth) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: install it with `apt-get install docker-registry`"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut auth = RegistryAuth::Anonymous;
        if kind == Auth::Token {
            let server = TokenServer::start(dir.path());
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                server.realm,
                server.cert.display()
            ));
            auth = RegistryAuth::Basic("moat".to_owned(), AUTH_PASSWORD.to_owned());
        }
        if kind == Auth::Basic {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("moat:{AUTH_BCRYPT}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: moat-test\n    path: {}\n",
                htpasswd.display()
            ));
            auth = RegistryAuth::Basic("moat".to_owned(), AUTH_PASSWORD.to_owned());
        }
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, dir, auth, addr };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:PORT/name`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// The file the registry serves the blob `digest` from.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes an image made of `layers` (bottom first) with `config` as its config section;
    /// returns the layer blobs' digests.
    pub fn push(&self, name: &str, layers: &[Layer], config: serde_json::Value) -> Vec<String> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
        let config_blob = serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let blobs: Vec<ImageLayer> = layers.iter().map(Layer::image_layer).collect();
        let digests = blobs.iter().map(ImageLayer::sha256_digest).collect();
        let config = Config::oci_v1(serde_json::to_vec(&config_blob).unwrap(), None);
        let reference: Reference = self.reference(name).parse().unwrap();
        block_on(async {
            self.client().push(&reference, &blobs, config, &self.auth, None).await.unwrap();
        });
        digests
    }

    /// Pushes an image index at `name` whose `linux/<arch>` entries point at the pushed images
    /// `by_arch` (`(arch, name)`).
    pub fn push_index(&self, name: &str, by_arch: &[(&str, &str)]) {
        block_on(async {
            let client = self.client();
            let mut manifests = Vec::new();
            for (arch, image) in by_arch {
                let reference: Reference = self.reference(image).parse().unwrap();
                let (raw, digest) = client
                    .pull_manifest_raw(
                        &reference,
                        &self.auth,
                        &["application/vnd.oci.image.manifest.v1+json"],
                    )
                    .await
                    .unwrap();
                manifests.push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": raw.len(),
                    "platform": {"architecture": arch, "os": "linux"},
                }));
            }
            let index = serde_json::from_value(serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": manifests,
            }))
            .unwrap();
            let reference: Reference = self.reference(name).parse().unwrap();
            client.push_manifest_list(&reference, &self.auth, index).await.unwrap();
        });
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The OCI name of this host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// One layer: an uncompressed tar and how to ship it.
pub struct Layer {
    /// The tar.
    pub tar: Vec<u8>,
    /// Its compression on the wire.
    pub compression: Compression,
}

impl Layer {
    fn image_layer(&self) -> ImageLayer {
        let (data, media_type) = match self.compression {
            Compression::None => (self.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&self.tar).unwrap();
                (gz.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => (
                zstd::encode_all(&self.tar[..], 1).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        ImageLayer::new(data, media_type.to_owned(), None)
    }
}

/// A tar built entry by entry; paths and link targets are written raw (hostile ones too).
pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }
}

impl TarBuilder {
    fn append(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        link: &str,
        data: &[u8],
    ) -> TarBuilder {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    /// A regular file.
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> TarBuilder {
        self.append(path, tar::EntryType::Regular, mode, "", data)
    }

    /// A directory.
    pub fn dir(self, path: &str) -> TarBuilder {
        self.append(path, tar::EntryType::Directory, 0o755, "", &[])
    }

    /// A symlink.
    pub fn symlink(self, path: &str, target: &str) -> TarBuilder {
        self.append(path, tar::EntryType::Symlink, 0o777, target, &[])
    }

    /// A character device.
    pub fn char_device(self, path: &str) -> TarBuilder {
        self.append(path, tar::EntryType::Char, 0o600, "", &[])
    }

    /// The tar's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A layer with the static busybox at /bin/busybox, applets as symlinks, /etc/passwd, /tmp.
pub fn busybox_layer() -> TarBuilder {
    assert!(
        Path::new(BUSYBOX_BIN).is_file(),
        "{BUSYBOX_BIN} is missing: install it with `apt-get install busybox-static`"
    );
    let busybox = std::fs::read(BUSYBOX_BIN).unwrap();
    let mut tar = TarBuilder::default().dir("bin/").file("bin/busybox", 0o755, &busybox);
    for applet in ["sh", "ls", "cat", "echo", "env", "pwd", "id", "test", "true", "stat"] {
        tar = tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.dir("etc/")
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .dir("tmp/")
        .dir("root/")
}
