//! The smallest HTTP client that the people-facing commands need: one request with a JSON
//! body to a Barge endpoint over HTTP/1.1 or HTTPS, signed with SigV4 when credentials are at
//! hand, the way the aws CLI finds them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

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

/// An access key to sign with, and the region to scope signatures to.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// The credentials the aws CLI would use, as far as Barge's commands follow it: `profile`
/// (the `--profile` flag) of the shared credentials file when given; else the environment
/// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), else the profile AWS_PROFILE (or
/// `default`) of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
/// ~/.aws/credentials). The region is AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1.
/// None when there are none: the request goes unsigned, as a loopback Barge takes it.
pub fn credentials_from_environment(profile: Option<&str>) -> anyhow::Result<Option<Credentials>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| REGION_DEFAULT.to_string());
    // As in the aws CLI, an explicit --profile wins over keys in the environment.
    if profile.is_none() {
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
    }
    let (chosen, source) = match profile {
        Some(p) => (Some(p.to_string()), "--profile"),
        None => (
            var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE")),
            "AWS_PROFILE",
        ),
    };
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".aws/credentials")));
    let Some(file) = file.filter(|f| f.exists()) else {
        if let Some(name) = profile {
            bail!("--profile {name}: there is no shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials)");
        }
        return Ok(None);
    };
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
            "{source} is {name}, but {} has no profile [{name}] with an access key",
            file.display()
        ),
        None => Ok(None),
    }
}

/// Why a request got no answer from Barge: the exit codes differ, since a script may retry
/// when Barge could not be reached but not when it refused.
#[derive(Debug)]
pub enum SendError {
    /// No connection (refused, no route, bad host): Barge is not there.
    Unreachable(String),
    /// Anything else: a bad endpoint, a TLS failure, an answer that is not HTTP.
    Failed(anyhow::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unreachable(m) => f.write_str(m),
            SendError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for SendError {
    fn from(e: anyhow::Error) -> Self {
        SendError::Failed(e)
    }
}

impl From<std::io::Error> for SendError {
    fn from(e: std::io::Error) -> Self {
        SendError::Failed(e.into())
    }
}

/// One request: `method` `path` (with its query, already encoded) with `headers` besides
/// Host, Content-Length and the signature, and `body`.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// The SigV4 service the signature is scoped to: `batch` (Barge's own API verifies as
    /// Batch's) or `logs`.
    pub service: &'a str,
}

/// Sends `request` to `endpoint` (`http://host:port` or `https://host:port`); returns the
/// status and the body. HTTPS trusts `ca_bundle` when given, else the system's CAs.
pub fn send(
    endpoint: &str,
    request: &Request<'_>,
    credentials: Option<&Credentials>,
    ca_bundle: Option<&Path>,
) -> Result<(u16, String), SendError> {
    let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(SendError::Failed(anyhow::anyhow!(
            "endpoint {endpoint} is not an http:// or https:// URL; pass --endpoint http://HOST:PORT"
        )));
    };
    let authority = rest.trim_end_matches('/');
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(c) = credentials {
        let (path_only, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        let mut headers: Vec<(&str, &[u8])> = vec![("host", authority.as_bytes())];
        headers.extend(request.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        let signed = sigv4::Request {
            method: request.method,
            path: path_only,
            query,
            headers: &headers,
            body: request.body,
        };
        let key = sigv4::SigningKey {
            access_key_id: &c.access_key_id,
            secret_access_key: &c.secret_access_key,
            region: &c.region,
            service: request.service,
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (name, value) in sigv4::sign(&signed, &key, now_ms) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(request.body);

    let tcp = TcpStream::connect(authority).map_err(|e| {
        SendError::Unreachable(format!(
            "cannot reach Barge at {endpoint} ({e}); is `barge up` running? (--endpoint or BARGE_ENDPOINT says where)"
        ))
    })?;
    let timeout = Some(Duration::from_millis(REQUEST_TIMEOUT_MS));
    tcp.set_read_timeout(timeout)?;
    tcp.set_write_timeout(timeout)?;
    let raw = if tls {
        let config = barge_agent::tls::client_config(ca_bundle).map_err(anyhow::Error::msg)?;
        let host = host_of(authority);
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .with_context(|| format!("'{host}' is not a host name or IP address"))?;
        let connection =
            rustls::ClientConnection::new(config, name).context("starting the TLS connection")?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        exchange(&mut stream, &bytes).with_context(|| {
            format!("talking HTTPS to {endpoint} (if its certificate is self-signed, pass --ca-bundle with it)")
        })?
    } else {
        let mut stream = tcp;
        exchange(&mut stream, &bytes)?
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
        return Err(SendError::Failed(anyhow::anyhow!(
            "Barge answered with a chunked body, which this client does not read"
        )));
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
