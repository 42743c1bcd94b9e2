//! A follower's HTTP: every request goes to the leader, as it came (method, path, query, every
//! end-to-end header — the SigV4 signature covers `host` and stays valid — and the body), and
//! the leader's answer comes back as it is. So every server serves the whole API, and the one
//! that leads is the only one that decides.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::limits::{PROXY_BODY_BYTES_MAX, PROXY_CONNECT_TIMEOUT_MS};

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An answer in AWS's shape for "try again": SDKs and the aws CLI retry 503s.
pub fn unavailable(message: &str) -> Response {
    let body = serde_json::json!({ "__type": "ServerException", "message": message });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("ServerException"),
    );
    resp
}

/// `host:port` of an `http://HOST:PORT` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.trim_end_matches('/');
    (!authority.is_empty() && !authority.contains('/')).then_some(authority)
}

/// Sends `req` to the leader at `leader_url` and returns its answer.
pub async fn forward(leader_url: &str, req: Request<Body>) -> Response {
    let Some(authority) = authority(leader_url) else {
        return unavailable(&format!(
            "the leader advertised {leader_url}, which is not an http://HOST:PORT URL"
        ));
    };
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, PROXY_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => {
            let mut resp = Response::new(Body::from(format!(
                "{{\"__type\":\"ClientException\",\"message\":\"The request body is larger than {PROXY_BODY_BYTES_MAX} bytes\"}}"
            )));
            *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return resp;
        }
    };
    let connect = tokio::time::timeout(
        Duration::from_millis(PROXY_CONNECT_TIMEOUT_MS),
        TcpStream::connect(authority),
    )
    .await;
    let stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return unavailable(&format!(
                "the leader at {leader_url} cannot be reached ({e}); retry"
            ))
        }
        Err(_) => {
            return unavailable(&format!(
                "the leader at {leader_url} did not answer in time; retry"
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return unavailable(&format!("the leader at {leader_url}: {e}; retry")),
        };
    let driver = tokio::spawn(connection);
    let mut forwarded = Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            forwarded = forwarded.header(name, value);
        }
    }
    let forwarded = match forwarded.body(http_body_util::Full::new(body)) {
        Ok(r) => r,
        Err(e) => return unavailable(&format!("cannot forward the request: {e}")),
    };
    let answer = match sender.send_request(forwarded).await {
        Ok(a) => a,
        Err(e) => {
            driver.abort();
            return unavailable(&format!(
                "the leader at {leader_url} failed the request ({e}); retry"
            ));
        }
    };
    let (parts, body) = answer.into_parts();
    let copy_headers = |resp: &mut Response| {
        *resp.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != "content-length" {
                resp.headers_mut().append(name, value.clone());
            }
        }
    };
    let streaming = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // The job state change stream does not end: pass it on as it comes (collecting it would
        // hang and grow without bound). The connection's task ends with it.
        let mut resp = Response::new(Body::new(body));
        copy_headers(&mut resp);
        return resp;
    }
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            driver.abort();
            return unavailable(&format!("reading the leader's answer failed ({e}); retry"));
        }
    };
    driver.abort();
    let mut resp = Response::new(Body::from(bytes));
    copy_headers(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_urls_are_plain_http_authorities() {
        assert_eq!(authority("http://10.0.0.1:8433"), Some("10.0.0.1:8433"));
        assert_eq!(authority("http://a:1/"), Some("a:1"));
        assert_eq!(authority("https://a:1"), None);
        assert_eq!(authority("http://a:1/x"), None);
    }
}
