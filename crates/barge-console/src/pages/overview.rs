//! The overview: every job queue with its counts by status (each count from an index, O(1)),
//! every compute environment with its vCPU bounds, the vCPUs in use and its agents, and the
//! schedules: how many, and the next few to fire.

use std::fmt::Write;

use barge_api::Backend;
use barge_core::model::{ComputeEnvironmentType, JobStatus, ResourceState};

use crate::html::{esc, page, url, Nav};
use crate::limits::OVERVIEW_ROWS_MAX;
use crate::{Response, Session};

fn state_str(s: ResourceState) -> &'static str {
    match s {
        ResourceState::Enabled => "ENABLED",
        ResourceState::Disabled => "DISABLED",
    }
}

pub fn show<B: Backend>(backend: &B, session: &Session) -> Response {
    let state = backend.snapshot();
    let mut body = String::from("<h1>Overview</h1><section><h2>Job queues</h2>");
    body.push_str(
        "<table class=\"queues\"><thead><tr><th>Name</th><th>State</th><th>Priority</th>\
         <th>Compute environments</th>",
    );
    for s in JobStatus::ALL {
        let _ = write!(body, "<th class=\"num\">{}</th>", s.as_str());
    }
    body.push_str("</tr></thead><tbody>");
    for queue in state.job_queues.values().take(OVERVIEW_ROWS_MAX) {
        let q = url(&queue.name);
        let _ = write!(
            body,
            "<tr><td><a href=\"/console/queues/{q}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td>{}</td>",
            esc(&queue.name),
            state_str(queue.state),
            queue.priority,
            queue
                .compute_environment_order
                .iter()
                .map(|o| esc(&o.compute_environment))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for s in JobStatus::ALL {
            let n = state.count_in(&queue.name, s);
            let _ = write!(
                body,
                "<td class=\"num\"><a href=\"/console/queues/{q}?status={}\">{n}</a></td>",
                s.as_str()
            );
        }
        body.push_str("</tr>");
    }
    if state.job_queues.is_empty() {
        body.push_str("<tr><td colspan=\"11\">No job queues yet: <a href=\"/console/new/job-queue\">create one</a>.</td></tr>");
    }
    body.push_str("</tbody></table></section>");

    body.push_str(
        "<section><h2>Compute environments</h2><table class=\"environments\"><thead><tr>\
         <th>Name</th><th>State</th><th>Type</th><th class=\"num\">Min vCPUs</th>\
         <th class=\"num\">Desired vCPUs</th><th class=\"num\">Max vCPUs</th>\
         <th class=\"num\">vCPUs in use</th><th>Capacity in use</th><th class=\"num\">Agents</th>\
         </tr></thead><tbody>",
    );
    for ce in state.compute_environments.values().take(OVERVIEW_ROWS_MAX) {
        let r = ce.compute_resources.as_ref();
        let kind = match ce.kind {
            ComputeEnvironmentType::Managed => format!(
                "MANAGED ({})",
                esc(r.and_then(|r| r.kind.as_deref()).unwrap_or("?"))
            ),
            ComputeEnvironmentType::Unmanaged => "UNMANAGED".into(),
        };
        let num = |v: Option<i64>| v.map_or("–".to_string(), |v| v.to_string());
        let used_milli = state.ce_used_vcpus_milli(&ce.name);
        let hosts = state.hosts_of(ce);
        // Capacity: the environment's bound when it has one, else what its agents offer.
        let capacity_milli = ce
            .max_vcpus_milli()
            .unwrap_or_else(|| hosts.iter().map(|a| a.vcpus_milli).sum());
        let used = used_milli as f64 / 1000.0;
        let capacity = capacity_milli as f64 / 1000.0;
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{kind}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{used}</td>\
             <td><meter min=\"0\" max=\"{capacity}\" value=\"{used}\" title=\"{used} of {capacity} vCPUs\"></meter> {}</td>\
             <td class=\"num\">{}</td></tr>",
            esc(&ce.name),
            state_str(ce.state),
            num(r.and_then(|r| r.min_vcpus)),
            num(r.and_then(|r| r.desired_vcpus)),
            num(r.and_then(|r| r.max_vcpus).or(ce.unmanaged_vcpus)),
            (used_milli * 100)
                .checked_div(capacity_milli)
                .map_or("no capacity".to_string(), |p| format!("{p}%")),
            hosts.len(),
        );
    }
    if state.compute_environments.is_empty() {
        body.push_str("<tr><td colspan=\"9\">No compute environments yet: <a href=\"/console/new/compute-environment\">create one</a>.</td></tr>");
    }
    body.push_str("</tbody></table></section>");
    body.push_str(&super::schedules::overview_panel(&state));
    Response::html(200, page("Overview", Nav::Overview, session, &body))
}
