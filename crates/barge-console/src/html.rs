//! HTML building blocks: escaping (every string a user or job supplied passes through `esc`),
//! the page layout, and small pieces the pages share.

use std::fmt::Write;

use crate::auth::Session;

/// Escapes text for an HTML text node or a double- or single-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Everything but letters, digits, `-`, `_` and `~` (RFC 3986's unreserved characters, less
/// the dot, so that no segment is ever `.` or `..`): names stay readable in links.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment or query value (job ids, queue names).
pub fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// The parts of the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Definitions,
    Submit,
    Create,
    Schedules,
    None,
}

/// A whole page: header with navigation, then `body`.
pub fn page(title: &str, nav: Nav, session: &Session, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let item = |n: Nav, href: &str, label: &str| {
        format!(
            "<a href=\"{href}\"{}>{label}</a>",
            if n == nav { " class=\"active\"" } else { "" }
        )
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Barge</title><link rel=\"stylesheet\" href=\"/console/static/style.css\">\
         </head><body><header><a class=\"brand\" href=\"/console\">Barge</a><nav>{}{}{}{}{}</nav>{}</header>\
         <main>{body}</main></body></html>\n",
        esc(title),
        item(Nav::Overview, "/console", "Overview"),
        item(Nav::Definitions, "/console/job-definitions", "Job definitions"),
        item(Nav::Submit, "/console/new/job", "Submit job"),
        item(Nav::Create, "/console/new", "Create"),
        item(Nav::Schedules, "/console/schedules", "Schedules"),
        account(session),
    );
    out
}

fn account(session: &Session) -> String {
    if session.key_id.is_empty() {
        return String::new();
    }
    format!(
        "<form class=\"signout\" method=\"post\" action=\"/console/logout\">{}\
         <span>{}</span> <button type=\"submit\">Sign out</button></form>",
        csrf_field(session),
        esc(&session.key_id)
    )
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// A status as a coloured badge.
pub fn status_badge(status: &str) -> String {
    format!(
        "<span class=\"status s-{}\">{}</span>",
        esc(&status.to_ascii_lowercase()),
        esc(status)
    )
}

/// Epoch milliseconds as UTC `YYYY-MM-DD HH:MM:SS` (no clock or time zone database needed).
pub fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "–".into();
    };
    let t = barge_core::time::UtcTime::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain-name_1"), "plain-name_1");
        assert_eq!(url("a b/c:1"), "a%20b%2Fc%3A1");
        assert_eq!(url("half-hourly_2~"), "half-hourly_2~");
        assert_eq!(url(".."), "%2E%2E");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(time(Some(1_795_000_000_000)), "2026-11-18 11:06:40");
        assert_eq!(time(None), "–");
    }
}
