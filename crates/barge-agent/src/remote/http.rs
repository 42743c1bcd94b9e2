//! The remote agent's HTTP client: one JSON POST per call, on a fresh connection, bounded in
//! time and size. Agents make a poll every few seconds and a report call per batch, so a
//! connection pool would buy little and a fresh connection never carries a broken one's state
//! across a partition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::limits::AGENT_RESPONSE_BYTES_MAX;
use crate::protocol::{ErrorBody, PATH_PREFIX};

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server could not be reached or did not answer in time, or answered 5xx: try again.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered with an error that trying again will not fix as is.
    #[error("{code}: {message} (HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

#[derive(Clone, Debug)]
pub struct Client {
    /// `host:port` of each server; calls go to the current one and move on to the next when
    /// it cannot be reached (several servers share one PostgreSQL database; any of them
    /// serves agents).
    authorities: Arc<Vec<Target>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    /// Set when some server is an https:// one.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One server: where to connect, and whether over TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    authority: String,
    tls: bool,
}

impl Client {
    /// A client for `servers`: one `http(s)://HOST:PORT` URL, or several separated by commas.
    /// https servers are verified against `ca_bundle` (PEM), else the system's CAs.
    pub fn new(
        servers: &str,
        token: Option<String>,
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Client, String> {
        let authorities = servers
            .split(',')
            .map(|s| target_of(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match authorities.iter().any(|t| t.tls) {
            true => Some(crate::tls::client_config(ca_bundle)?),
            false => None,
        };
        Ok(Client {
            authorities: Arc::new(authorities),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            tls,
        })
    }

    fn target(&self) -> &Target {
        &self.authorities[self.current.load(Ordering::Relaxed) % self.authorities.len()]
    }

    #[cfg(test)]
    fn authority(&self) -> &str {
        &self.target().authority
    }

    /// The next server, after one could not be reached.
    fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// POSTs `body` to `operation` and reads the answer, all within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let target = self.target().clone();
        let authority = target.authority.clone();
        let result =
            match tokio::time::timeout(timeout, self.call_once(&target, operation, body)).await {
                Ok(result) => result,
                Err(_) => Err(CallError::Unavailable(format!(
                    "{operation}: no answer from {authority} within {} ms",
                    timeout.as_millis()
                ))),
            };
        if matches!(result, Err(CallError::Unavailable(_))) {
            self.rotate();
        }
        result
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: &Target,
        operation: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let authority = target.authority.as_str();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            CallError::Unavailable(format!("{operation}: {what} {authority}: {e}"))
        };
        let payload = serde_json::to_vec(body).expect("protocol types serialize");
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| unavailable("cannot connect to", &e))?;
        let _ = stream.set_nodelay(true);
        let mut request = Request::post(format!("{PATH_PREFIX}{operation}"))
            .header("host", authority)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .expect("a valid request");
        let (status, bytes) = match (&self.tls, target.tls) {
            (Some(config), true) => {
                let host = host_of(authority).to_string();
                let name = rustls_pki_types::ServerName::try_from(host)
                    .map_err(|e| unavailable("the server name of", &e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| unavailable("TLS handshake with", &e))?;
                exchange(tls, request).await
            }
            _ => exchange(stream, request).await,
        }
        .map_err(|(what, e)| unavailable(what, &e))?;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Refused {
                status,
                code: "InvalidResponse".into(),
                message: format!("the server's answer is not a protocol v1 answer: {e}"),
            });
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match error {
            Some(e) => (e.code, e.message),
            None => (
                format!("HTTP{status}"),
                String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            ),
        };
        if status >= 500 {
            return Err(CallError::Unavailable(format!(
                "{operation}: {code}: {message}"
            )));
        }
        Err(CallError::Refused {
            status,
            code,
            message,
        })
    }
}

/// One request on a fresh connection (plain or TLS): the status and the body, bounded.
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), (&'static str, String)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ("HTTP handshake with", e.to_string()))?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ("request to", e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), AGENT_RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| ("reading the answer of", e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    answer
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Where `server` (`http(s)://HOST[:PORT]`) is.
fn target_of(server: &str) -> Result<Target, String> {
    let (rest, tls, port) = match server.split_once("://") {
        Some(("http", rest)) => (rest, false, 80),
        Some(("https", rest)) => (rest, true, 443),
        _ => return Err(format!("{server} is not an http(s)://HOST:PORT URL")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "{server} is not an http(s)://HOST:PORT URL (no path allowed)"
        ));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    };
    Ok(Target { authority, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            Client::new("http://barge:8433/", None, None)
                .unwrap()
                .authority(),
            "barge:8433"
        );
        assert_eq!(
            Client::new("http://barge", None, None).unwrap().authority(),
            "barge:80"
        );
        assert!(Client::new("barge:8433", None, None).is_err());
        assert!(Client::new("http://barge:8433/x", None, None).is_err());
        assert_eq!(
            target_of("https://barge").unwrap(),
            Target {
                authority: "barge:443".into(),
                tls: true
            }
        );
        assert!(Client::new("http://a:1,nope", None, None).is_err());
    }

    #[test]
    fn an_unreachable_server_passes_calls_to_the_next() {
        let client = Client::new("http://a:1, http://b:2", None, None).unwrap();
        assert_eq!(client.authority(), "a:1");
        client.rotate();
        assert_eq!(client.authority(), "b:2");
        client.rotate();
        assert_eq!(client.authority(), "a:1");
    }
}
