//! HTTP: one thin handler that routes AWS Batch (`/v1/...`), tag (`/v1/tags/{arn}`) and
//! CloudWatch Logs (`POST /` with `X-Amz-Target`) requests to the API crate.

use axum::body::{to_bytes, Body};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use barge_api::{body_limit_bytes, Answer, ApiError};
use barge_core::limits::REQUEST_BODY_BYTES_MAX;
use percent_encoding::percent_decode_str;

use crate::shared::Shared;

/// What serves a request: this server's control plane when it has one (a single server, or
/// the leader of several), else the leader it forwards to.
#[derive(Clone)]
pub struct App {
    pub local: Arc<ArcSwapOption<Shared>>,
    /// The leader's advertised URL, while this server follows.
    pub leader_url: Arc<ArcSwapOption<String>>,
    /// The web console at `/console` (its sign-in and per-boot session secret).
    pub console: Arc<barge_console::Console>,
}

pub fn router(app: App) -> Router {
    Router::new().fallback(entry).with_state(app)
}

async fn entry(AxState(app): AxState<App>, req: Request<Body>) -> Response {
    if let Some(shared) = app.local.load_full() {
        if barge_console::is_console_path(req.uri().path()) {
            return console(&app.console, &shared, req).await;
        }
        return handle((*shared).clone(), req).await;
    }
    if req.uri().path() == "/health" {
        return Response::new(Body::from("ok (following)\n"));
    }
    // A follower's own process metrics: forwarded, a scrape would be the leader's.
    if req.method() == Method::GET && req.uri().path() == crate::metrics::PATH {
        return crate::metrics::respond(None);
    }
    match app.leader_url.load_full() {
        Some(url) => crate::proxy::forward(&url, req).await,
        None => crate::proxy::unavailable(
            "no server leads yet (one takes the lease within seconds); retry",
        ),
    }
}

fn respond(answer: Answer, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    if let Some(code) = answer.error_code {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(code));
    }
    resp
}

pub(crate) fn error(e: ApiError) -> Response {
    respond(Answer::from_result(Err(e)), "application/json")
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    // One byte over the limit is enough to know it is too large; the API names the limit.
    match to_bytes(body, limit + 1).await {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(ApiError::client(format!(
            "The request body is larger than {limit} bytes, the most this operation accepts"
        ))),
    }
}

fn tag_keys(uri: &Uri) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

async fn handle(shared: Shared, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/health") => Response::new(Body::from("ok\n")),
        (&Method::GET, crate::metrics::PATH) => {
            crate::metrics::respond(Some(&shared.published.load()))
        }
        (&Method::POST, "/") => logs(shared, &parts.headers, body).await,
        (&Method::POST, p) if p.starts_with(barge_agent::protocol::PATH_PREFIX) => {
            let operation = &p[barge_agent::protocol::PATH_PREFIX.len()..];
            crate::agents::handle(&shared, &shared.agents, operation, &parts.headers, body).await
        }
        (&Method::GET, "/barge/v1/events") => {
            crate::events::sse::stream(&shared.events, &parts.headers, &parts.uri)
                .unwrap_or_else(error)
        }
        (&Method::GET, p) if why_job_id(p).is_some() => {
            let raw = why_job_id(p).unwrap_or_default();
            let job_id = percent_decode_str(raw).decode_utf8_lossy().into_owned();
            respond(
                barge_api::extensions::why(&shared, &job_id),
                "application/json",
            )
        }
        (method, p) if p.starts_with(barge_api::schedules::PATH) => {
            let rest = &p[barge_api::schedules::PATH.len()..];
            if !(rest.is_empty() || rest.starts_with('/')) {
                return error(ApiError {
                    status: 404,
                    code: "UnknownOperationException",
                    message: format!("{method} {p} is not an operation"),
                });
            }
            let body = match read_body(body, REQUEST_BODY_BYTES_MAX).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            let query = parts.uri.query().unwrap_or("");
            let answer =
                barge_api::schedules::operation(&shared, method.as_str(), rest, query, &body).await;
            respond(answer, "application/json")
        }
        (method, p) if p.starts_with("/v1/tags/") => {
            // Decode only the captured segment, so an encoded '/' in the ARN stays inside it.
            let raw = &p["/v1/tags/".len()..];
            let arn = percent_decode_str(raw).decode_utf8_lossy().into_owned();
            let body = match read_body(body, REQUEST_BODY_BYTES_MAX).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            let answer = barge_api::tags_operation(
                &shared,
                method.as_str(),
                &arn,
                &body,
                tag_keys(&parts.uri),
            )
            .await;
            respond(answer, "application/json")
        }
        (&Method::POST, p) if p.starts_with("/v1/") => {
            let op = p["/v1/".len()..].trim_end_matches('/').to_ascii_lowercase();
            let body = match read_body(body, body_limit_bytes(&op)).await {
                Ok(b) => b,
                Err(e) => return error(e),
            };
            respond(
                barge_api::batch_operation(&shared, &op, &body).await,
                "application/json",
            )
        }
        (method, p) => error(ApiError {
            status: 404,
            code: "UnknownOperationException",
            message: format!("{method} {p} is not an AWS Batch or CloudWatch Logs operation"),
        }),
    }
}

/// `/console…`: the web console, which checks its own sign-in (see security.rs).
async fn console(
    console: &barge_console::Console,
    shared: &Shared,
    req: Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body, barge_console::limits::FORM_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let request = barge_console::Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        cookie: parts
            .headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ")
            .into(),
        body,
    };
    let answer = console.handle(shared, &shared.logs, request).await;
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static(answer.content_type),
    );
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(name, v);
        }
    }
    resp
}

/// The job id in `/barge/v1/jobs/{jobId}/why`.
fn why_job_id(path: &str) -> Option<&str> {
    path.strip_prefix("/barge/v1/jobs/")?
        .strip_suffix("/why")
        .filter(|id| !id.is_empty())
}

async fn logs(shared: Shared, headers: &HeaderMap, body: Body) -> Response {
    let Some(target) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return error(ApiError::client(
            "POST / needs an X-Amz-Target header naming a CloudWatch Logs operation (Logs_20140328.GetLogEvents, …)",
        ));
    };
    let body = match read_body(body, REQUEST_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let state = shared.published.load_full();
    let reader = shared.logs.clone();
    let answer = tokio::task::spawn_blocking(move || {
        barge_api::logs::logs_operation(&state, &reader, &target, &body)
    })
    .await
    .unwrap_or_else(|_| Answer::from_result(Err(ApiError::server("the log query failed"))));
    respond(answer, "application/x-amz-json-1.1")
}
