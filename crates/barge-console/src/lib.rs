//! The web console at `/console`: server-rendered HTML pages over the same operations the API
//! serves, one stylesheet and one small script embedded in the binary, no build step.
//!
//! It reaches Barge only through `barge_api::Backend` (the published snapshot and durable
//! execution) and the API's own functions: forms become the API's JSON requests and go
//! through `barge_api::batch_operation`, so what the console accepts and refuses is exactly
//! what the API does, with the API's messages. Reads come from the snapshot's indexes and are
//! bounded (see `limits`). It knows nothing of HTTP frameworks: the server hands it a
//! `Request` and writes back its `Response`.

use std::sync::Arc;

use barge_api::sigv4::AccessKeys;
use barge_api::Backend;
use barge_store::LogReader;
use percent_encoding::percent_decode_str;

mod auth;
mod form;
mod html;
pub mod limits;
mod pages;
#[cfg(test)]
mod testing;

pub use auth::Session;

/// Where the console lives on the API's port.
pub const PREFIX: &str = "/console";

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/console.js");

/// Whether a request is the console's (the server routes it here, and the SigV4 layer leaves
/// it to the console's own sign-in).
pub fn is_console_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/console/")
}

/// A request, as the server read it. `body` is at most `limits::FORM_BODY_BYTES_MAX` bytes.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub cookie: Option<String>,
    pub body: Vec<u8>,
}

/// What to answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn html(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
    /// 303 See Other: after a form, the browser fetches `location` with GET.
    pub(crate) fn redirect(location: String) -> Response {
        Response {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            headers: vec![("location", location)],
            body: Vec::new(),
        }
    }
    fn asset(content_type: &'static str, body: &'static str) -> Response {
        Response {
            status: 200,
            content_type,
            headers: vec![("cache-control", "max-age=300".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// The console: its sign-in (keys and the per-boot secret).
pub struct Console {
    auth: auth::Auth,
}

impl Console {
    /// `keys`: the server's access keys (empty: the console is open, as the API is).
    /// `https`: the server speaks HTTPS, so cookies are marked Secure.
    pub fn new(keys: Arc<AccessKeys>, https: bool) -> Console {
        Console {
            auth: auth::Auth::new(keys, https),
        }
    }

    /// Whether people must sign in.
    pub fn requires_sign_in(&self) -> bool {
        self.auth.required()
    }

    /// Answers one console request. Log reads block on the store; they run on tokio's
    /// blocking pool.
    pub async fn handle<B: Backend>(
        &self,
        backend: &B,
        logs: &LogReader,
        req: Request,
    ) -> Response {
        let now = backend.now_ms();
        let path = req.path.strip_prefix(PREFIX).unwrap_or("").to_string();
        if req.method == "GET" && path == "/static/style.css" {
            return Response::asset("text/css; charset=utf-8", STYLE);
        }
        if req.method == "GET" && path == "/static/console.js" {
            return Response::asset("text/javascript; charset=utf-8", SCRIPT);
        }
        let (session, new_cookie) = match self.auth.session(req.cookie.as_deref(), now) {
            Some(s) => (s, None),
            None => {
                let (s, cookie) = self.auth.start("", now);
                (s, Some(cookie))
            }
        };
        let mut resp = self.route(backend, logs, &req, &path, &session, now).await;
        if let Some(cookie) = new_cookie {
            if !resp.headers.iter().any(|(k, _)| *k == "set-cookie") {
                resp.headers.push(("set-cookie", cookie));
            }
        }
        // Pages hold job data: never cached, never framed, scripts and styles only our own.
        resp.headers.extend([
            ("cache-control", "no-store".to_string()),
            ("x-frame-options", "DENY".into()),
            ("x-content-type-options", "nosniff".into()),
            ("referrer-policy", "same-origin".into()),
            (
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
                    .into(),
            ),
        ]);
        resp
    }

    async fn route<B: Backend>(
        &self,
        backend: &B,
        logs: &LogReader,
        req: &Request,
        path: &str,
        session: &Session,
        now: i64,
    ) -> Response {
        let query = form::parse(&req.query);
        let post = req.method == "POST";
        let fields = if post {
            form::parse(&String::from_utf8_lossy(&req.body))
        } else {
            Default::default()
        };
        if post
            && !self
                .auth
                .csrf_ok(session, fields.get("csrf").map(String::as_str))
        {
            return pages::message(
                403,
                session,
                "Form expired",
                "This form was not issued to this session (it is older than the session, or came from another site). Go back, reload the page and try again.",
            );
        }
        match (post, path) {
            (false, "/login") => return pages::login::show(&self.auth, session, &query, None),
            (true, "/login") => return pages::login::submit(&self.auth, session, &fields, now),
            (true, "/logout") => {
                let (_, cookie) = self.auth.start("", now);
                let mut r = Response::redirect("/console/login".into());
                r.headers.push(("set-cookie", cookie));
                return r;
            }
            _ => {}
        }
        if !self.auth.admits(session) {
            if post || path.ends_with(".json") {
                return pages::message(401, session, "Sign in", "Sign in to use the console.");
            }
            let mut next = format!("{PREFIX}{path}");
            if !req.query.is_empty() {
                next = format!("{next}?{}", req.query);
            }
            return Response::redirect(format!("/console/login?next={}", html::url(&next)));
        }
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (post, segs.as_slice()) {
            (false, [""]) => pages::overview::show(backend, session),
            (false, ["job-definitions"]) => pages::definitions::list(backend, session, &query),
            (false, ["queues", queue]) => pages::jobs::list(backend, session, queue, &query),
            (false, ["jobs", id]) => pages::job::show(backend, session, id, &query),
            (false, ["jobs", id, "log.json"]) => {
                pages::job::log_json(backend, logs, id, &query).await
            }
            (true, ["jobs", id, "stop"]) => pages::job::stop(backend, session, id, &fields).await,
            (false, ["new"]) => pages::forms::index(session),
            (false, ["new", "schedule"]) => pages::schedules::new_form(backend, session, &query),
            (true, ["new", "schedule"]) => {
                pages::schedules::create(backend, session, &fields).await
            }
            (false, ["new", kind]) => pages::forms::show(backend, session, kind, &query),
            (true, ["new", kind]) => pages::forms::submit(backend, session, kind, &fields).await,
            (false, ["schedules"]) => pages::schedules::list(backend, session, &query),
            (false, ["schedules", name]) => pages::schedules::show(backend, session, name),
            (false, ["schedules", name, "edit"]) => {
                pages::schedules::edit_form(backend, session, name)
            }
            (true, ["schedules", name, "edit"]) => {
                pages::schedules::edit(backend, session, name, &fields).await
            }
            (true, ["schedules", name, "state"]) => {
                pages::schedules::set_state(backend, session, name, &fields).await
            }
            (true, ["schedules", name, "delete"]) => {
                pages::schedules::delete(backend, session, name).await
            }
            _ => pages::message(
                404,
                session,
                "Not found",
                &format!("{} {} is not a console page.", req.method, req.path),
            ),
        }
    }
}
