//! The pages. Each renders from the snapshot (or the API's own answers) into HTML, bounded by
//! `crate::limits`.

pub mod definitions;
pub mod forms;
pub mod job;
pub mod jobs;
pub mod login;
pub mod overview;
pub mod schedules;

use crate::html::{esc, page, Nav};
use crate::{Response, Session};

/// A page with a title and one paragraph.
pub fn message(status: u16, session: &Session, title: &str, text: &str) -> Response {
    Response::html(
        status,
        page(
            title,
            Nav::None,
            session,
            &format!(
                "<h1>{}</h1><p class=\"message\">{}</p>",
                esc(title),
                esc(text)
            ),
        ),
    )
}
