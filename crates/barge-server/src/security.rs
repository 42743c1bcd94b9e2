//! Who may talk to Barge: the access keys whose SigV4 signatures it accepts, the rule that it
//! never listens beyond loopback without them, TLS with the operator's certificate, and the
//! layer that verifies every request before it is routed.
//!
//! The verification sits in front of the one handler, so every path is covered, including
//! paths added later, except `GET /health` (probes carry no credentials),
//! `/barge/agent/…` (agents authenticate with their own tokens) and `/console…` (browsers
//! cannot sign requests: the console signs people in against the same keys and checks its
//! session cookie on every request; see barge-console).

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use barge_api::sigv4::{self, AccessKeys};
use barge_core::limits::REQUEST_BODY_BYTES_MAX;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::limits::SECURITY_FILE_BYTES_MAX;

/// How `barge up` authenticates and encrypts. The default (no keys, no TLS) is `barge up`'s
/// zero configuration, allowed on loopback only.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// Keys whose signatures are accepted. Empty: requests are not verified.
    pub access_keys: Arc<AccessKeys>,
    /// Where the keys came from, for the banner.
    pub key_sources: Vec<String>,
    /// HTTPS instead of HTTP, on the same port.
    pub tls: Option<TlsConfig>,
    /// The bearer token `GET /metrics` may carry instead of a signature (Prometheus cannot
    /// sign). Only consulted when signatures are required.
    pub metrics_token: Option<crate::metrics::MetricsToken>,
}

/// A loaded certificate chain and key.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

const HOW_TO_CONFIGURE: &str = "Give Barge access keys with --credentials-file PATH (the aws CLI's credentials format: a [default] section with aws_access_key_id = … and aws_secret_access_key = …) or with the environment variables BARGE_ACCESS_KEY_ID and BARGE_SECRET_ACCESS_KEY; clients then sign with the same keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).";

impl SecurityConfig {
    /// Loads the keys and the certificate. Every problem is reported here, at start, naming
    /// the file and what to fix.
    pub fn load(
        credentials_file: Option<&Path>,
        env_access_key_id: Option<String>,
        env_secret_access_key: Option<String>,
        tls_cert: Option<&Path>,
        tls_key: Option<&Path>,
    ) -> anyhow::Result<SecurityConfig> {
        let mut keys = AccessKeys::default();
        let mut key_sources = Vec::new();
        if let Some(path) = credentials_file {
            let text = read_bounded(path, "credentials file")?;
            warn_if_readable_by_others(path);
            let profiles = sigv4::credentials::parse(&text)
                .map_err(|e| anyhow::anyhow!("credentials file {}: {e}", path.display()))?;
            if profiles.is_empty() {
                bail!(
                    "credentials file {} has no profile with both aws_access_key_id and aws_secret_access_key; add one, e.g.\n[default]\naws_access_key_id = AKIA…\naws_secret_access_key = …",
                    path.display()
                );
            }
            for p in &profiles {
                keys.insert(&p.access_key_id, &p.secret_access_key)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "credentials file {}, profile [{}]: {e}",
                            path.display(),
                            p.name
                        )
                    })?;
            }
            key_sources.push(format!(
                "{} (profile{} {})",
                path.display(),
                if profiles.len() == 1 { "" } else { "s" },
                profiles
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // An empty variable counts as unset, as clap treats the other BARGE_ variables.
        let env_id = env_access_key_id.filter(|v| !v.is_empty());
        let env_secret = env_secret_access_key.filter(|v| !v.is_empty());
        match (env_id, env_secret) {
            (Some(id), Some(secret)) => {
                keys.insert(&id, &secret)
                    .map_err(|e| anyhow::anyhow!("BARGE_ACCESS_KEY_ID: {e}"))?;
                key_sources.push("BARGE_ACCESS_KEY_ID".into());
            }
            (Some(_), None) => bail!(
                "BARGE_ACCESS_KEY_ID is set but BARGE_SECRET_ACCESS_KEY is not; set both, or neither"
            ),
            (None, Some(_)) => bail!(
                "BARGE_SECRET_ACCESS_KEY is set but BARGE_ACCESS_KEY_ID is not; set both, or neither"
            ),
            (None, None) => {}
        }
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            (None, None) => None,
            (Some(_), None) => {
                bail!("--tls-cert needs --tls-key: the certificate's private key (PEM)")
            }
            (None, Some(_)) => bail!("--tls-key needs --tls-cert: the certificate chain (PEM)"),
        };
        Ok(SecurityConfig {
            access_keys: Arc::new(keys),
            key_sources,
            tls,
            metrics_token: None,
        })
    }

    /// Accepts `authorization: Bearer TOKEN` on `GET /metrics` as well as a signature.
    pub fn with_metrics_token(self, token: Option<String>) -> SecurityConfig {
        SecurityConfig {
            metrics_token: token.map(|t| crate::metrics::MetricsToken::new(&t)),
            ..self
        }
    }

    /// True when every request (but the exempt paths) must carry a valid signature.
    pub fn requires_signatures(&self) -> bool {
        !self.access_keys.is_empty()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Refuses an address beyond loopback without access keys: anyone who reached it could
    /// run commands on this host. Beyond loopback without TLS is allowed, with a warning:
    /// signatures keep requests from being forged or altered, not from being read.
    pub fn check_listen(&self, listen: SocketAddr) -> anyhow::Result<()> {
        if listen.ip().is_loopback() {
            return Ok(());
        }
        if !self.requires_signatures() {
            bail!(
                "refusing to listen on {listen} without credentials: anyone who can reach it could run commands on this host. {HOW_TO_CONFIGURE} Or listen on loopback only (--listen 127.0.0.1:8433)."
            );
        }
        if self.tls.is_none() {
            eprintln!(
                "barge: warning: serving {listen} over plain HTTP: signatures stop forged or altered requests, but anyone on the network path can read requests and answers (commands, environment, logs) and replay a captured request for up to 5 minutes. Pass --tls-cert and --tls-key to encrypt."
            );
        }
        Ok(())
    }
}

/// The banner's lines on credentials and TLS, ending with the `export` line people copy.
pub(crate) fn print_banner_lines(security: &SecurityConfig, region: &str) {
    if let Some(tls) = &security.tls {
        println!("  TLS with the certificate {}", tls.cert_path.display());
    }
    if security.requires_signatures() {
        let n = security.access_keys.len();
        println!(
            "  requests must be signed (AWS Signature Version 4) with one of {n} access key{} from {}",
            if n == 1 { "" } else { "s" },
            security.key_sources.join(" and ")
        );
        println!("Try it (with one of those keys):");
        println!(
            "  export AWS_ACCESS_KEY_ID=<access key id> AWS_SECRET_ACCESS_KEY=<secret access key> AWS_DEFAULT_REGION={region}"
        );
    } else {
        println!("Try it (any credentials work on loopback):");
        println!(
            "  export AWS_ACCESS_KEY_ID=barge AWS_SECRET_ACCESS_KEY=barge AWS_DEFAULT_REGION={region}"
        );
    }
    if let Some(tls) = &security.tls {
        println!(
            "  export AWS_CA_BUNDLE={}   # if the certificate is self-signed: clients trust it this way",
            tls.cert_path.display()
        );
    }
}

/// Wraps the router in SigV4 verification when keys are configured; returns it unchanged
/// otherwise (loopback with zero configuration).
pub(crate) fn protect(router: Router, security: &SecurityConfig, region: &str) -> Router {
    if !security.requires_signatures() {
        return router;
    }
    let verifier = Verifier {
        keys: security.access_keys.clone(),
        region: Arc::from(region),
        metrics_token: security.metrics_token.clone(),
    };
    router.layer(axum::middleware::from_fn_with_state(verifier, verify))
}

#[derive(Clone)]
struct Verifier {
    keys: Arc<AccessKeys>,
    region: Arc<str>,
    metrics_token: Option<crate::metrics::MetricsToken>,
}

/// Paths that never need a signature. Matched on the raw path, as the handler routes on
/// the raw path too: `/barge/agent/../v1/…` is no agent path and is not routed to `/v1/`.
fn exempt(method: &Method, path: &str) -> bool {
    (method == Method::GET && path == "/health")
        || path.starts_with("/barge/agent/")
        || barge_console::is_console_path(path)
}

/// The signing name of the API a request is for: CloudWatch Logs is `POST /`, everything
/// else (Batch, and Barge's own `/barge/v1/…`, which `barge why` signs as Batch) is `batch`.
fn service_of(method: &Method, path: &str) -> &'static str {
    if method == Method::POST && path == "/" {
        "logs"
    } else {
        "batch"
    }
}

async fn verify(State(verifier): State<Verifier>, request: Request, next: Next) -> Response {
    if exempt(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    // A scrape with a bearer token is judged by the token alone; one without is signed.
    if request.method() == Method::GET && request.uri().path() == crate::metrics::PATH {
        let token = verifier.metrics_token.as_ref();
        match crate::metrics::bearer_verdict(request.headers(), token) {
            Some(true) => return next.run(request).await,
            Some(false) => return crate::metrics::unauthorized(token.is_some()),
            None => {}
        }
    }
    let (parts, body) = request.into_parts();
    // An unsigned request is refused before its body is read. REQUEST_BODY_BYTES_MAX is the
    // most any route takes; the handler still applies each operation's own, smaller limit.
    let body = if parts.headers.contains_key("authorization") {
        match crate::http::read_body(body, REQUEST_BODY_BYTES_MAX).await {
            Ok(b) => b,
            Err(e) => return crate::http::error(e),
        }
    } else {
        Vec::new()
    };
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let service = service_of(&parts.method, parts.uri.path());
    let verdict = sigv4::verify(
        &signed,
        &verifier.keys,
        &verifier.region,
        service,
        crate::writer::now_ms(),
    );
    match verdict {
        Ok(_) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(e) => crate::http::error(e),
    }
}

/// Reads a small file whole, refusing one larger than SECURITY_FILE_BYTES_MAX.
fn read_bounded(path: &Path, what: &str) -> anyhow::Result<String> {
    let bytes = read_bounded_bytes(path, what)?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text; is it the right file?",
            path.display()
        )
    })
}

fn read_bounded_bytes(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(SECURITY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    if bytes.len() as u64 > SECURITY_FILE_BYTES_MAX {
        bail!(
            "the {what} {} is larger than {SECURITY_FILE_BYTES_MAX} bytes; is it the right file?",
            path.display()
        );
    }
    Ok(bytes)
}

/// Secrets readable by other users are not secret; say so (as ssh does), but go on: the
/// operator may have reasons, and refusing would only push them to looser settings.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "barge: warning: credentials file {} can be read by other users; chmod 600 it",
                path.display()
            );
        }
    }
}

/// The certificate chain and key as a rustls server configuration (ring provider, TLS 1.2
/// and 1.3, HTTP/1.1 by ALPN as that is all Barge serves).
fn load_tls(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsConfig> {
    let cert_pem = read_bounded_bytes(cert_path, "TLS certificate file")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "--tls-cert {}: not a PEM certificate chain ({e})",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "--tls-cert {} holds no certificate (expected PEM blocks 'BEGIN CERTIFICATE', the server's first)",
            cert_path.display()
        );
    }
    let key_pem = read_bounded_bytes(key_path, "TLS key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: no PEM private key found ({e}); expected 'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY'",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "--tls-cert {} and --tls-key {} cannot be used together: {e}. Is the key the certificate's own?",
                cert_path.display(),
                key_path.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfig {
        cert_path: cert_path.to_path_buf(),
        server: Arc::new(server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("barge-security-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loopback_needs_nothing_anything_else_needs_keys() {
        let none = SecurityConfig::default();
        assert!(none.check_listen("127.0.0.1:8433".parse().unwrap()).is_ok());
        assert!(none.check_listen("[::1]:8433".parse().unwrap()).is_ok());
        for addr in ["0.0.0.0:8000", "[::]:8000", "192.168.1.2:8000"] {
            let err = none
                .check_listen(addr.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("refusing to listen") && err.contains("--credentials-file"),
                "{err}"
            );
        }
        let keyed =
            SecurityConfig::load(None, Some("AKID".into()), Some("s".into()), None, None).unwrap();
        assert!(keyed.requires_signatures());
        assert!(keyed.check_listen("0.0.0.0:8000".parse().unwrap()).is_ok());
    }

    #[test]
    fn keys_come_from_the_file_and_the_environment() {
        let dir = temp_dir("keys");
        let file = write(
            &dir,
            "credentials",
            "[default]\naws_access_key_id = A1\naws_secret_access_key = s1\n[ci]\naws_access_key_id = A2\naws_secret_access_key = s2\n",
        );
        let c = SecurityConfig::load(
            Some(&file),
            Some("A3".into()),
            Some("s3".into()),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.access_keys.ids().collect::<Vec<_>>(), ["A1", "A2", "A3"]);
        assert_eq!(c.key_sources.len(), 2);
        assert!(c.key_sources[0].contains("profiles default, ci"));
        assert!(!format!("{c:?}").contains("s1"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let dir = temp_dir("bad");
        let empty = write(&dir, "empty", "[default]\nregion = us-east-1\n");
        let conflict = write(
            &dir,
            "conflict",
            "[a]\naws_access_key_id = A\naws_secret_access_key = one\n[b]\naws_access_key_id = A\naws_secret_access_key = two\n",
        );
        let junk = write(&dir, "junk.pem", "not a certificate\n");
        let err = |r: anyhow::Result<SecurityConfig>| format!("{:#}", r.unwrap_err());
        assert!(
            err(SecurityConfig::load(Some(&empty), None, None, None, None))
                .contains("has no profile with both")
        );
        assert!(err(SecurityConfig::load(
            Some(&conflict),
            None,
            None,
            None,
            None
        ))
        .contains("profile [b]: access key id 'A' is configured twice"));
        assert!(err(SecurityConfig::load(
            Some(&dir.join("missing")),
            None,
            None,
            None,
            None
        ))
        .contains("reading the credentials file"));
        assert!(err(SecurityConfig::load(
            None,
            Some("A".into()),
            None,
            None,
            None
        ))
        .contains("BARGE_SECRET_ACCESS_KEY is not"));
        assert!(
            err(SecurityConfig::load(None, None, None, Some(&junk), None))
                .contains("--tls-cert needs --tls-key")
        );
        assert!(err(SecurityConfig::load(
            None,
            None,
            None,
            Some(&junk),
            Some(&junk)
        ))
        .contains("holds no certificate"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn only_health_and_agent_paths_are_exempt() {
        assert!(exempt(&Method::GET, "/health"));
        assert!(!exempt(&Method::POST, "/health"));
        assert!(exempt(&Method::POST, "/barge/agent/register"));
        assert!(!exempt(&Method::GET, "/barge/v1/jobs/x/why"));
        assert!(!exempt(&Method::POST, "/v1/submitjob"));
        assert!(!exempt(&Method::POST, "/barge/agentx"));
        // The console checks its own sign-in; nothing else that merely starts alike is let by.
        assert!(exempt(&Method::GET, "/console"));
        assert!(exempt(&Method::POST, "/console/new/job"));
        assert!(!exempt(&Method::GET, "/consoles"));
        assert!(!exempt(&Method::POST, "/v1/console/x"));
        assert_eq!(service_of(&Method::POST, "/"), "logs");
        assert_eq!(service_of(&Method::POST, "/v1/describejobs"), "batch");
        assert_eq!(service_of(&Method::GET, "/barge/v1/jobs/x/why"), "batch");
    }
}
