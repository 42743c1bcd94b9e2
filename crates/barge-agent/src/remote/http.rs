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
    authorities: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
}

impl Client {
    /// A client for `servers`: one `http://HOST:PORT` URL, or several separated by commas.
    pub fn new(servers: &str, token: Option<String>) -> Result<Client, String> {
        let authorities = servers
            .split(',')
            .map(|s| authority_of(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            authorities: Arc::new(authorities),
            current: Arc::new(AtomicUsize::new(0)),
            token,
        })
    }

    fn authority(&self) -> &str {
        &self.authorities[self.current.load(Ordering::Relaxed) % self.authorities.len()]
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
        let authority = self.authority().to_string();
        let result = match tokio::time::timeout(
            timeout,
            self.call_once(&authority, operation, body),
        )
        .await
        {
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
        authority: &str,
        operation: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            CallError::Unavailable(format!("{operation}: {what} {authority}: {e}"))
        };
        let payload = serde_json::to_vec(body).expect("protocol types serialize");
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| unavailable("cannot connect to", &e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable("HTTP handshake with", &e))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::post(format!("{PATH_PREFIX}{operation}"))
            .header("host", authority)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unavailable("request to", &e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), AGENT_RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| unavailable("reading the answer of", &e))?
            .to_bytes();
        driver.abort();
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

/// `host:port` of `server` (`http://HOST[:PORT]`).
fn authority_of(server: &str) -> Result<String, String> {
    let rest = match server.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "{server}: this agent speaks plain HTTP to the server; put it on a private network or behind a TLS tunnel"
            ))
        }
        _ => return Err(format!("{server} is not an http://HOST:PORT URL")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "{server} is not an http://HOST:PORT URL (no path allowed)"
        ));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            Client::new("http://barge:8433/", None).unwrap().authority(),
            "barge:8433"
        );
        assert_eq!(
            Client::new("http://barge", None).unwrap().authority(),
            "barge:80"
        );
        assert!(Client::new("barge:8433", None).is_err());
        assert!(Client::new("http://barge:8433/x", None).is_err());
        assert!(Client::new("https://barge:8433", None)
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(Client::new("http://a:1,nope", None).is_err());
    }

    #[test]
    fn an_unreachable_server_passes_calls_to_the_next() {
        let client = Client::new("http://a:1, http://b:2", None).unwrap();
        assert_eq!(client.authority(), "a:1");
        client.rotate();
        assert_eq!(client.authority(), "b:2");
        client.rotate();
        assert_eq!(client.authority(), "a:1");
    }
}
