//! The smallest HTTP client that the people-facing commands need: one GET to a Barge endpoint
//! over plain HTTP/1.1. Commands that need more (signing, TLS) arrive with the CLI of a later
//! version.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// How long a command waits for Barge to answer.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The largest answer a command reads.
const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// GETs `path` from `endpoint` (`http://host:port`); returns the status and the body.
pub fn get(endpoint: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let Some(authority) = endpoint.strip_prefix("http://") else {
        bail!("endpoint {endpoint} is not an http:// URL; pass --endpoint http://HOST:PORT");
    };
    let authority = authority.trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)
        .with_context(|| format!("cannot reach Barge at {endpoint}; is `barge up` running?"))?;
    let timeout = Some(Duration::from_millis(REQUEST_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .context("reading Barge's answer")?;
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
