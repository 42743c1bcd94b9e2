//! The smallest HTTP client that the people-facing commands need: one GET to a Barge endpoint
//! over HTTP/1.1 or HTTPS, signed with SigV4 when credentials are at hand, the way the aws
//! CLI finds them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use barge_api::sigv4;

/// How long a command waits for Barge to answer.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The largest answer a command reads.
const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The largest credentials or CA bundle file read.
const LOCAL_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Barge's default region: what a signature is scoped to when the environment names none.
const REGION_DEFAULT: &str = "us-east-1";
/// Where Debian, Alpine, Fedora/RHEL and macOS keep the system's trusted CAs.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// An access key to sign with, and the region to scope signatures to.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// The credentials the aws CLI would use, as far as Barge's commands follow it: the
/// environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), else the profile AWS_PROFILE
/// (or `default`) of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
/// ~/.aws/credentials). The region is AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1.
/// None when there are none: the request goes unsigned, as a loopback Barge takes it.
pub fn credentials_from_environment() -> anyhow::Result<Option<Credentials>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| REGION_DEFAULT.to_string());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                region,
            }))
        }
        (Some(_), None) => {
            bail!("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both")
        }
        (None, Some(_)) => {
            bail!("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both")
        }
        (None, None) => {}
    }
    let Some(file) = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".aws/credentials")))
    else {
        return Ok(None);
    };
    if !file.exists() {
        return Ok(None);
    }
    let chosen = var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE"));
    let text = String::from_utf8(read_bounded(&file)?)
        .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    let profiles = sigv4::credentials::parse(&text)
        .map_err(|e| anyhow::anyhow!("credentials file {}: {e}", file.display()))?;
    let name = chosen.as_deref().unwrap_or("default");
    match profiles.into_iter().find(|p| p.name == name) {
        Some(p) => Ok(Some(Credentials {
            access_key_id: p.access_key_id,
            secret_access_key: p.secret_access_key,
            region,
        })),
        None if chosen.is_some() => bail!(
            "AWS_PROFILE is {name}, but {} has no profile [{name}] with an access key",
            file.display()
        ),
        None => Ok(None),
    }
}

/// GETs `path` from `endpoint` (`http://host:port` or `https://host:port`); returns the status
/// and the body. HTTPS trusts `ca_bundle` when given, else the system's CAs.
pub fn get(
    endpoint: &str,
    path: &str,
    credentials: Option<&Credentials>,
    ca_bundle: Option<&Path>,
) -> anyhow::Result<(u16, String)> {
    let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else {
        bail!("endpoint {endpoint} is not an http:// or https:// URL; pass --endpoint http://HOST:PORT");
    };
    let authority = rest.trim_end_matches('/');
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(c) = credentials {
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let headers = [("host", authority.as_bytes())];
        let request = sigv4::Request {
            method: "GET",
            path: path_only,
            query,
            headers: &headers,
            body: b"",
        };
        let key = sigv4::SigningKey {
            access_key_id: &c.access_key_id,
            secret_access_key: &c.secret_access_key,
            region: &c.region,
            // Barge's own API verifies as Batch's.
            service: "batch",
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (name, value) in sigv4::sign(&request, &key, now_ms) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");

    let tcp = TcpStream::connect(authority)
        .with_context(|| format!("cannot reach Barge at {endpoint}; is `barge up` running?"))?;
    let timeout = Some(Duration::from_millis(REQUEST_TIMEOUT_MS));
    tcp.set_read_timeout(timeout)?;
    tcp.set_write_timeout(timeout)?;
    let raw = if tls {
        let config = tls_config(ca_bundle)?;
        let host = host_of(authority);
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .with_context(|| format!("'{host}' is not a host name or IP address"))?;
        let connection =
            rustls::ClientConnection::new(config, name).context("starting the TLS connection")?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        exchange(&mut stream, head.as_bytes()).with_context(|| {
            format!("talking HTTPS to {endpoint} (if its certificate is self-signed, pass --ca-bundle with it)")
        })?
    } else {
        let mut stream = tcp;
        exchange(&mut stream, head.as_bytes())?
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("Barge's answer has no HTTP header")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("Barge's answer has no HTTP status")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("Barge answered with a chunked body, which this client does not read");
    }
    Ok((status, body.to_string()))
}

/// Sends the request and reads the answer to the end of the connection.
fn exchange(stream: &mut (impl Read + Write), request: &[u8]) -> anyhow::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: the answer is whole if it arrived.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e).context("reading Barge's answer"),
    }
    Ok(raw)
}

/// `host` of `host:port`, `[v6]:port`, `host`.
fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn tls_config(ca_bundle: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let bundle = match ca_bundle {
        Some(path) => path.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("no system CA bundle found; pass --ca-bundle (or AWS_CA_BUNDLE) with the certificate Barge serves or its CA's")?,
    };
    use rustls_pki_types::pem::PemObject;
    let pem = read_bounded(&bundle)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("{} is not a PEM bundle", bundle.display()))?;
        pinned.push(cert.clone());
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} cannot be used", bundle.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no PEM certificate", bundle.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("setting up certificate verification")?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// WebPKI verification, plus one case it refuses: the server's certificate is itself in the
/// bundle. `openssl req -x509` makes self-signed certificates marked as CAs, which WebPKI will
/// not accept as a server's own; the aws CLI (OpenSSL) does. A certificate the operator put in
/// the bundle byte for byte is trusted as the aws CLI trusts it: the host name is still
/// checked, its validity dates are not (the operator chose this very certificate).
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if verdict.is_err()
            && self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        verdict
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(LOCAL_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > LOCAL_FILE_BYTES_MAX {
        bail!(
            "{} is larger than {LOCAL_FILE_BYTES_MAX} bytes; is it the right file?",
            path.display()
        );
    }
    Ok(bytes)
}
