//! The TLS client side, shared by `barge agent` (to a server with `--tls-cert`) and the
//! people-facing commands: rustls with the ring provider, trusting a CA bundle the operator
//! gives or the system's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest CA bundle read.
const CA_BUNDLE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Where Debian, Alpine, Fedora/RHEL and macOS keep the system's trusted CAs.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A TLS client configuration trusting `ca_bundle` (PEM) when given, else the system's CAs.
/// Err says what is wrong and what to pass.
pub fn client_config(ca_bundle: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let bundle = match ca_bundle {
        Some(path) => path.to_path_buf(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("no system CA bundle found; pass --ca-bundle with the certificate Barge serves or its CA's")?,
    };
    use rustls_pki_types::pem::PemObject;
    let pem = read_bounded(&bundle)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{} is not a PEM bundle: {e}", bundle.display()))?;
        pinned.push(cert.clone());
        roots
            .add(cert)
            .map_err(|e| format!("a certificate in {} cannot be used: {e}", bundle.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", bundle.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("setting up certificate verification: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("setting up TLS: {e}"))?
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

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(CA_BUNDLE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.len() as u64 > CA_BUNDLE_BYTES_MAX {
        return Err(format!(
            "{} is larger than {CA_BUNDLE_BYTES_MAX} bytes; is it the right file?",
            path.display()
        ));
    }
    Ok(bytes)
}
