//! Job definitions, by name, paged by name (a cursor is the last name shown).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Bound;

use barge_api::Backend;
use barge_core::model::DefinitionStatus;

use crate::html::{esc, page, url, Nav};
use crate::limits::DEFINITIONS_PAGE_ITEMS;
use crate::{Response, Session};

pub fn list<B: Backend>(
    backend: &B,
    session: &Session,
    query: &BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let after = query.get("after").cloned().unwrap_or_default();
    let mut body = String::from(
        "<h1>Job definitions</h1><p><a class=\"button\" href=\"/console/new/job-definition\">Register a job definition</a></p>\
         <table class=\"definitions\"><thead><tr><th>Name</th><th class=\"num\">Revision</th><th>Status</th>\
         <th>Type</th><th>Image</th><th>Command</th><th></th></tr></thead><tbody>",
    );
    // The latest revision of each name, hopping from name to name through the map's order
    // (two O(log n) lookups per name), so a name with many revisions costs no more.
    let mut rows = Vec::new();
    let mut last_name: Option<String> = None;
    let mut more = false;
    let mut from = if after.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded((after.clone(), u32::MAX))
    };
    while let Some(((name, _), _)) = state.job_definitions.range((from, Bound::Unbounded)).next() {
        if rows.len() == DEFINITIONS_PAGE_ITEMS {
            more = true;
            break;
        }
        let name = name.clone();
        let latest = state
            .job_definitions
            .range((name.clone(), 0)..=(name.clone(), u32::MAX))
            .next_back()
            .map(|(_, d)| d.clone());
        rows.extend(latest);
        from = Bound::Excluded((name.clone(), u32::MAX));
        last_name = Some(name);
    }
    for def in &rows {
        let c = def.container_properties.as_ref();
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td><a href=\"/console/new/job?jobDefinition={}\">Submit</a></td></tr>",
            esc(&def.name),
            def.revision,
            if def.status == DefinitionStatus::Active { "ACTIVE" } else { "INACTIVE" },
            esc(&def.kind),
            esc(c.and_then(|c| c.image.as_deref()).unwrap_or("")),
            esc(&c.and_then(|c| c.command.as_ref()).map(|c| c.join(" ")).unwrap_or_default()),
            url(&def.name),
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"7\">No job definitions on this page.</td></tr>");
    }
    body.push_str("</tbody></table><nav class=\"pager\">");
    if !after.is_empty() {
        body.push_str("<a href=\"/console/job-definitions\">First</a> ");
    }
    if let (true, Some(last)) = (more, last_name) {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"/console/job-definitions?after={}\">Next ›</a>",
            url(&last)
        );
    }
    body.push_str("</nav>");
    Response::html(
        200,
        page("Job definitions", Nav::Definitions, session, &body),
    )
}
