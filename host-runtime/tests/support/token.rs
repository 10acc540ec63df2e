//! A Docker token server for the bearer-auth test, on a free 127.0.0.1 port: `docker-registry`
//! supports only htpasswd basic auth by itself, and with `auth: token` it sends clients to a
//! token server's realm. This one answers `GET /token?service=..&scope=..` with HTTP basic
//! credentials `moat` / [`super::registry::AUTH_PASSWORD`] by a JWT (RS256, signed with the
//! `openssl` command line) granting exactly the scopes asked for; anything else gets 401.
//!
//! The registry trusts the key through `rootcertbundle` (a self-signed certificate of it) and
//! finds it by the JWT's `kid`, which distribution computes as libtrust does: the SHA-256 of
//! the key's DER SubjectPublicKeyInfo, first 30 bytes, base32, in groups of four joined by `:`.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use sha2::{Digest, Sha256};

/// The `service` (JWT audience) the registry is configured with.
pub const SERVICE: &str = "moat-test";

/// The JWT issuer the registry is configured with.
pub const ISSUER: &str = "moat-test-issuer";

/// A running token server (its thread lives as long as the test process).
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The certificate the registry trusts.
    pub cert: PathBuf,
}

impl TokenServer {
    /// Makes a key and certificate in `dir` and starts serving.
    pub fn start(dir: &Path) -> TokenServer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=moat-test-token", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
        let spki = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(spki.status.success(), "openssl pkey: {}", String::from_utf8_lossy(&spki.stderr));
        let kid = libtrust_key_id(&spki.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &key, &kid);
            }
        });
        TokenServer { realm, cert }
    }
}

/// libtrust's key id of a DER SubjectPublicKeyInfo.
fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki);
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = String::new();
    for byte in &hash[..30] {
        bits = (bits << 8) | u64::from(*byte);
        count += 8;
        while count >= 5 {
            count -= 5;
            out.push(ALPHABET[((bits >> count) & 31) as usize] as char);
        }
    }
    let groups: Vec<String> =
        out.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    groups.join(":")
}

fn serve(stream: std::net::TcpStream, key: &Path, kid: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim().split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                let expected = base64::engine::general_purpose::STANDARD
                    .encode(format!("moat:{}", super::registry::AUTH_PASSWORD));
                authorized = value.trim() == format!("Basic {expected}");
            }
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let mut stream = stream;
    if !authorized || !path.starts_with("/token") {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let token = sign(&scopes(&path), key, kid);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 3600}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The `access` claim for each `scope=repository:NAME:ACTIONS` of the query.
fn scopes(path: &str) -> Vec<serde_json::Value> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .flat_map(|scope| percent_decode(scope).split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions.split(',').collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An RS256 JWT for `access`, signed with `key` by `openssl dgst`.
fn sign(access: &[serde_json::Value], key: &Path, kid: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "moat", "aud": SERVICE, "exp": now + 3600, "nbf": now - 60,
        "iat": now - 60, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let input =
        format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", b64(&output.stdout))
}
