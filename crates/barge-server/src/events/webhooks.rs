//! Webhooks: each job state change event POSTed as JSON to the operator's URLs, signed with
//! HMAC-SHA256 so a receiver can check who sent it and refuse a replay (docs/events.md).
//!
//! Each webhook has one bounded queue and one task that delivers in order: an event is retried
//! with exponential backoff until it is accepted (any 2xx) or its attempts run out, and only
//! then does the next one go. A full queue drops its oldest event. The renderer only pushes
//! onto the queue, so a slow or dead receiver never holds up the writer or the scheduler.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Event;
use crate::limits::*;

/// The header with the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-barge-signature";
/// The header with the event's sequence id (`BOOT-SEQ`), as the event stream numbers it.
pub const EVENT_ID_HEADER: &str = "x-barge-event-id";

/// One webhook, as configured (`[[webhooks]]` in the `--config` file).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC key (from `secret`, or the first line of `secret_file`).
    pub secret: String,
    /// Only events of jobs in this job queue (by name), if set.
    pub job_queue: Option<String>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("job_queue", &self.job_queue)
            .finish()
    }
}

/// Where a webhook's URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    pub host: String,
    /// Path and query.
    pub path: String,
}

/// `http(s)://HOST[:PORT][/PATH]`, or why not.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host (and no user:password@)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => authority.split(':').next().unwrap_or(authority).to_string(),
    };
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(Target {
        tls,
        authority,
        host,
        path,
    })
}

/// The signature header's value for `body` sent at `unix_s`.
pub fn sign(secret: &str, unix_s: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One webhook's queue of events waiting for delivery.
pub struct Queue {
    pub config: WebhookConfig,
    target: Target,
    events: Mutex<VecDeque<(String, Arc<Event>)>>,
    wake: Notify,
    /// Events dropped from the full queue, and given up after every attempt, since start.
    pub dropped: AtomicU64,
    pub given_up: AtomicU64,
}

impl Queue {
    pub fn new(config: WebhookConfig) -> Result<Arc<Queue>, String> {
        let target = parse_url(&config.url)?;
        Ok(Arc::new(Queue {
            config,
            target,
            events: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
        }))
    }

    /// Queues the events this webhook wants (the renderer thread; never waits on delivery).
    pub(super) fn push(&self, events: &[Arc<Event>], id: impl Fn(u64) -> String) {
        let mut queue = self.events.lock().expect("webhook queue");
        let mut dropped = 0;
        for e in events {
            if self
                .config
                .job_queue
                .as_ref()
                .is_some_and(|q| *q != e.queue)
            {
                continue;
            }
            if queue.len() == WEBHOOK_QUEUE_EVENTS_MAX {
                queue.pop_front();
                dropped += 1;
            }
            queue.push_back((id(e.seq), e.clone()));
        }
        drop(queue);
        if dropped > 0 {
            let total = self.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
            tracing::warn!(
                "webhook {}: its queue is full ({WEBHOOK_QUEUE_EVENTS_MAX} events); dropped the {dropped} oldest ({total} since start)",
                self.config.url
            );
        }
        self.wake.notify_one();
    }

    /// Delivers queued events in order until `stop` is notified.
    pub async fn run(self: Arc<Self>, stop: Arc<Notify>) {
        let tls = match self.target.tls {
            true => match barge_agent::tls::client_config(None) {
                Ok(config) => Some(config),
                Err(e) => {
                    tracing::error!("webhook {}: no TLS client: {e}", self.config.url);
                    return;
                }
            },
            false => None,
        };
        loop {
            let next = self.events.lock().expect("webhook queue").pop_front();
            let Some((id, event)) = next else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.notified() => return,
                }
            };
            tokio::select! {
                _ = self.deliver(&id, &event, tls.as_ref()) => {}
                _ = stop.notified() => return,
            }
        }
    }

    /// Tries one event until it is accepted or its attempts run out.
    async fn deliver(&self, id: &str, event: &Event, tls: Option<&Arc<rustls::ClientConfig>>) {
        let mut wait = WEBHOOK_RETRY_MS_INITIAL;
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let post = self.post(id, event, tls);
            let outcome =
                match tokio::time::timeout(Duration::from_millis(WEBHOOK_TIMEOUT_MS), post).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {WEBHOOK_TIMEOUT_MS} ms")),
                };
            match outcome {
                Ok(()) => return,
                Err(e) if attempt == WEBHOOK_ATTEMPTS_MAX => {
                    let total = self.given_up.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        "webhook {}: gave up event {id} after {attempt} attempts ({total} since start): {e}",
                        self.config.url
                    );
                }
                Err(e) => {
                    tracing::debug!(
                        "webhook {}: event {id}, attempt {attempt}: {e}; again in {wait} ms",
                        self.config.url
                    );
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    wait = (wait * 2).min(WEBHOOK_RETRY_MS_MAX);
                }
            }
        }
    }

    async fn post(
        &self,
        id: &str,
        event: &Event,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<(), String> {
        let t = &self.target;
        let unix_s = crate::writer::now_ms() / 1000;
        let body = Bytes::from(event.json.clone());
        let request = Request::post(&t.path)
            .header("host", &t.authority)
            .header("content-type", "application/json")
            .header("user-agent", "barge-webhooks")
            .header(EVENT_ID_HEADER, id)
            .header(SIGNATURE_HEADER, sign(&self.config.secret, unix_s, &body))
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let stream = TcpStream::connect(&t.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", t.authority))?;
        let _ = stream.set_nodelay(true);
        let status = match tls {
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("server name {}: {e}", t.host))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", t.authority))?;
                exchange(stream, request).await?
            }
            None => exchange(stream, request).await?,
        };
        match status {
            200..=299 => Ok(()),
            other => Err(format!("answered HTTP {other}")),
        }
    }
}

/// One request on a fresh connection; the answer's status.
async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        // Read (bounded) to end the exchange cleanly; what it says does not matter.
        let _ = Limited::new(response.into_body(), WEBHOOK_RESPONSE_BYTES_MAX)
            .collect()
            .await;
        Ok(status)
    }
    .await;
    driver.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_scheme_host_port_and_path() {
        let t = parse_url("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(
            (
                t.tls,
                t.authority.as_str(),
                t.host.as_str(),
                t.path.as_str()
            ),
            (false, "127.0.0.1:9000", "127.0.0.1", "/hook?x=1")
        );
        let t = parse_url("https://hooks.example.com").unwrap();
        assert_eq!(
            (t.tls, t.authority.as_str(), t.path.as_str()),
            (true, "hooks.example.com:443", "/")
        );
        let t = parse_url("http://[::1]:8080/h").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:8080")
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://u:p@host/").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // The same as `printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret`.
        assert_eq!(
            sign("s3cret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }
}
