//! The remote agent's HTTP client: one JSON POST per call, on a fresh connection, bounded in
//! time and size. Agents make a poll every few seconds and a report call per batch, so a
//! connection pool would buy little and a fresh connection never carries a broken one's state
//! across a partition.

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
    /// `host:port` of the server.
    authority: String,
    token: Option<String>,
}

impl Client {
    /// A client for `server` (`http://HOST:PORT`).
    pub fn new(server: &str, token: Option<String>) -> Result<Client, String> {
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
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Client { authority, token })
    }

    /// POSTs `body` to `operation` and reads the answer, all within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        match tokio::time::timeout(timeout, self.call_once(operation, body)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Unavailable(format!(
                "{operation}: no answer from {} within {} ms",
                self.authority,
                timeout.as_millis()
            ))),
        }
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            CallError::Unavailable(format!("{operation}: {what} {}: {e}", self.authority))
        };
        let payload = serde_json::to_vec(body).expect("protocol types serialize");
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unavailable("cannot connect to", &e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable("HTTP handshake with", &e))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::post(format!("{PATH_PREFIX}{operation}"))
            .header("host", &self.authority)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            Client::new("http://barge:8433/", None).unwrap().authority,
            "barge:8433"
        );
        assert_eq!(
            Client::new("http://barge", None).unwrap().authority,
            "barge:80"
        );
        assert!(Client::new("barge:8433", None).is_err());
        assert!(Client::new("http://barge:8433/x", None).is_err());
        assert!(Client::new("https://barge:8433", None)
            .unwrap_err()
            .contains("plain HTTP"));
    }
}
