//! Sign-in, when the server requires signatures: an access key id and its secret, checked
//! against the server's keys; success starts a signed-in session.

use std::collections::BTreeMap;

use crate::auth::Auth;
use crate::html::{csrf_field, esc, page, Nav};
use crate::{Response, Session};

/// Where to go after signing in: only a console page of this server, never another site.
fn next_of(next: Option<&String>) -> String {
    match next {
        Some(n)
            if crate::is_console_path(n.split('?').next().unwrap_or(""))
                && !n.contains("//")
                && n.is_ascii() =>
        {
            n.clone()
        }
        _ => "/console".into(),
    }
}

pub fn show(
    auth: &Auth,
    session: &Session,
    query: &BTreeMap<String, String>,
    error: Option<(&str, &str)>,
) -> Response {
    if !auth.required() {
        return Response::redirect("/console".into());
    }
    let next = next_of(query.get("next"));
    let (key_id, message) = error.unwrap_or(("", ""));
    let body = format!(
        "<h1>Sign in</h1><p>This server requires signed requests. Sign in with one of its access keys (the keys the aws CLI signs with).</p>\
         <form class=\"api-form\" method=\"post\" action=\"/console/login\">{}\
         <input type=\"hidden\" name=\"next\" value=\"{}\">{}\
         <div class=\"field\"><label for=\"f-accessKeyId\">Access key id</label>\
         <input type=\"text\" id=\"f-accessKeyId\" name=\"accessKeyId\" value=\"{}\" autocomplete=\"username\"></div>\
         <div class=\"field\"><label for=\"f-secretAccessKey\">Secret access key</label>\
         <input type=\"password\" id=\"f-secretAccessKey\" name=\"secretAccessKey\" autocomplete=\"current-password\"></div>\
         <button type=\"submit\" class=\"primary\">Sign in</button></form>",
        csrf_field(session),
        esc(&next),
        if message.is_empty() {
            String::new()
        } else {
            format!("<p class=\"form-error\" id=\"form-error\">{}</p>", esc(message))
        },
        esc(key_id),
    );
    let status = if error.is_some() { 401 } else { 200 };
    Response::html(status, page("Sign in", Nav::None, session, &body))
}

pub fn submit(
    auth: &Auth,
    session: &Session,
    fields: &BTreeMap<String, String>,
    now_ms: i64,
) -> Response {
    if !auth.required() {
        return Response::redirect("/console".into());
    }
    let key_id = fields.get("accessKeyId").map(|s| s.trim()).unwrap_or("");
    let secret = fields
        .get("secretAccessKey")
        .map(String::as_str)
        .unwrap_or("");
    if !auth.sign_in(key_id, secret) {
        let mut query = BTreeMap::new();
        if let Some(n) = fields.get("next") {
            query.insert("next".to_string(), n.clone());
        }
        return show(
            auth,
            session,
            &query,
            Some((
                key_id,
                "That access key id and secret access key are not one of this server's keys.",
            )),
        );
    }
    let (_, cookie) = auth.start(key_id, now_ms);
    let mut r = Response::redirect(next_of(fields.get("next")));
    r.headers.push(("set-cookie", cookie));
    r
}
