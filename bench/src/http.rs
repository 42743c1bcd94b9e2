//! A minimal HTTP/1.1 keep-alive client: one TCP connection per `Conn`, requests one at a
//! time, like one AWS SDK client with a single pooled connection. Built on hyper's connection
//! API so that each benchmark client owns exactly one connection and nothing is pooled or
//! shared behind our back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// No single request may take longer than this; a server that stalls this long is broken
/// for the purpose of a benchmark.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to open a loopback TCP connection and finish the HTTP/1.1 handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections a request may open after the previous one was closed under it.
pub const RECONNECTS_PER_REQUEST_MAX: usize = 2;
/// Bytes of an error body kept for the report.
pub const ERROR_BODY_CHARS_MAX: usize = 500;

pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let (sender, driver) = tokio::time::timeout(CONNECT_TIMEOUT, open(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} took longer than {CONNECT_TIMEOUT:?}"))??;
        Ok(Conn {
            addr,
            host: addr.to_string(),
            sender,
            driver,
        })
    }

    /// Sends one request and reads the whole response. If the server closed the kept-alive
    /// connection, opens a new one and tries again (a bounded number of times).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let mut reconnects = 0;
        loop {
            if self.sender.is_closed() || self.sender.ready().await.is_err() {
                if reconnects == RECONNECTS_PER_REQUEST_MAX {
                    bail!("{method} {path}: the server keeps closing the connection");
                }
                reconnects += 1;
                self.reconnect().await?;
                continue;
            }
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(HOST, &self.host)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .context("building a request")?;
            let exchange = async {
                let response = self.sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Err(_) => bail!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"),
                Ok(Ok(answer)) => return Ok(answer),
                // A kept-alive connection closed by the server just as we sent: the request
                // was not processed, so it is safe to send it again on a new connection.
                Ok(Err(e)) if e.is_canceled() && reconnects < RECONNECTS_PER_REQUEST_MAX => {
                    reconnects += 1;
                    self.reconnect().await?;
                }
                Ok(Err(e)) => return Err(anyhow!(e).context(format!("{method} {path}"))),
            }
        }
    }

    async fn reconnect(&mut self) -> Result<()> {
        let fresh = Conn::connect(self.addr).await?;
        // The old driver is aborted when `fresh`'s fields swap in and the old ones drop.
        *self = fresh;
        Ok(())
    }

    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, body).await
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, Bytes::new()).await
    }
}

async fn open(addr: SocketAddr) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    let driver = tokio::spawn(async move {
        // Errors surface on the sender side as a failed request.
        let _ = connection.await;
    });
    Ok((sender, driver))
}

/// The AWS Batch API over one connection, for set-up calls and polling, where any answer but
/// 200 is an error.
pub struct Api {
    conn: Conn,
}

impl Api {
    pub async fn connect(addr: SocketAddr) -> Result<Api> {
        Ok(Api {
            conn: Conn::connect(addr).await?,
        })
    }

    /// `POST /v1/<operation in lowercase>` with a JSON body; the parsed JSON answer.
    pub async fn call(&mut self, operation: &str, input: &Value) -> Result<Value> {
        let path = format!("/v1/{}", operation.to_ascii_lowercase());
        let body = Bytes::from(serde_json::to_vec(input)?);
        let (status, answer) = self.conn.post(&path, body).await?;
        if status != StatusCode::OK {
            bail!(
                "{operation} answered {status}: {}",
                body_excerpt(&answer, ERROR_BODY_CHARS_MAX)
            );
        }
        serde_json::from_slice(&answer).with_context(|| {
            format!(
                "{operation} answered 200 with a body that is not JSON: {}",
                body_excerpt(&answer, ERROR_BODY_CHARS_MAX)
            )
        })
    }
}

/// The start of a response body as text, for error messages.
pub fn body_excerpt(body: &[u8], chars_max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text.chars().take(chars_max).collect();
    if text.chars().count() > chars_max {
        excerpt.push('…');
    }
    if excerpt.is_empty() {
        excerpt.push_str("(empty body)");
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_never_empty() {
        assert_eq!(body_excerpt(b"", 10), "(empty body)");
        assert_eq!(body_excerpt(b"short", 10), "short");
        assert_eq!(body_excerpt(b"0123456789abc", 10), "0123456789…");
        assert_eq!(body_excerpt("é".repeat(20).as_bytes(), 3), "ééé…");
    }
}
