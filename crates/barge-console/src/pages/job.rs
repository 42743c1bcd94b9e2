//! One job: status, timeline, attempts, why it waits (the same diagnosis as `barge why`),
//! array progress, dependencies, its log (followed live by the page's script through
//! `log.json`), and the cancel and terminate buttons.

use std::collections::BTreeMap;
use std::fmt::Write;

use barge_api::{Answer, Backend};
use barge_core::arrays::{child_id, job_view};
use barge_core::model::{Attempt, JobStatus, LOG_GROUP_NAME};
use barge_store::LogReader;
use serde_json::{json, Value};

use crate::html::{csrf_field, esc, page, status_badge, time, url, Nav};
use crate::limits::{
    ARRAY_CHILD_LINKS_MAX, DEPENDENTS_SHOWN_MAX, LOG_EVENTS_PAGE_MAX, LOG_LINES_KEPT_MAX,
    LOG_POLL_MS,
};
use crate::{Response, Session};

/// The JSON body of an API answer, or its error message.
pub fn answer_json(answer: Answer) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status == 200 {
        Ok(v)
    } else {
        Err(v["message"]
            .as_str()
            .unwrap_or("the request failed")
            .to_string())
    }
}

fn attempt_row(out: &mut String, n: usize, a: &Attempt, live: bool) {
    let _ = write!(
        out,
        "<tr><td class=\"num\">{}{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
        n,
        if live { " (live)" } else { "" },
        esc(&a.agent_id),
        esc(&a.compute_environment),
        time(Some(a.placed_at)),
        time(a.started_at),
        time(a.stopped_at),
        a.exit_code.map_or("–".into(), |c| c.to_string()),
        esc(a.reason.as_deref().unwrap_or("")),
        esc(a.status_reason.as_deref().unwrap_or("")),
    );
}

pub fn show<B: Backend>(
    backend: &B,
    session: &Session,
    id: &str,
    query: &BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let Some(job) = job_view(&state, id) else {
        return super::message(
            404,
            session,
            "No such job",
            &format!("Job {id} does not exist."),
        );
    };
    let job = job.into_owned();
    let mut body = format!(
        "<h1>Job {} {}</h1><dl class=\"facts\"><dt>Job id</dt><dd class=\"id\">{}</dd>\
         <dt>Job queue</dt><dd><a href=\"/console/queues/{}\">{}</a></dd>\
         <dt>Job definition</dt><dd>{}:{}</dd>",
        esc(&job.name),
        status_badge(job.status.as_str()),
        esc(&job.id),
        url(&job.queue),
        esc(&job.queue),
        esc(&job.definition_name),
        job.definition_revision,
    );
    if let Some(child) = &job.array_child {
        let _ = write!(
            body,
            "<dt>Array parent</dt><dd><a href=\"/console/jobs/{}\">{}</a></dd>",
            url(&child.parent),
            esc(&child.parent)
        );
    }
    if let Some(command) = &job.container.command {
        let _ = write!(
            body,
            "<dt>Command</dt><dd><code>{}</code></dd>",
            esc(&shell_words(command))
        );
    }
    body.push_str("</dl>");

    // Why it is where it is: barge why's diagnosis, through the same API function.
    if !job.status.is_terminal() {
        if let Ok(why) = answer_json(barge_api::extensions::why(backend, &job.id)) {
            let _ = write!(
                body,
                "<section class=\"why\"><h2>Why it is {}</h2><p id=\"status-reason\">{}</p>",
                esc(why["status"].as_str().unwrap_or("")),
                esc(why["statusReason"]
                    .as_str()
                    .unwrap_or("No reason recorded."))
            );
            if let Some(n) = why["jobsAhead"].as_u64() {
                let _ = write!(body, "<p>{n} RUNNABLE jobs ahead of it in its queue.</p>");
            }
            let unblock: Vec<&str> = why["unblock"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !unblock.is_empty() {
                body.push_str("<p>What would move it on:</p><ul>");
                for u in unblock {
                    let _ = write!(body, "<li>{}</li>", esc(u));
                }
                body.push_str("</ul>");
            }
            body.push_str("</section>");
        }
        let _ = write!(
            body,
            "<section class=\"stop\"><h2>Stop it</h2><form method=\"post\" action=\"/console/jobs/{}/stop\">{}\
             <label>Reason <input type=\"text\" name=\"reason\" value=\"Stopped from the console\" maxlength=\"1024\"></label> \
             <button type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button> \
             <button type=\"submit\" name=\"action\" value=\"terminate\" class=\"danger\">Terminate</button>\
             <p class=\"help\">Cancel stops a job that has not started; terminate also stops a running one.</p></form></section>",
            url(&job.id),
            csrf_field(session)
        );
    } else if let Some(reason) = &job.status_reason {
        let _ = write!(
            body,
            "<section class=\"why\"><h2>Status reason</h2><p id=\"status-reason\">{}</p></section>",
            esc(reason)
        );
    }

    // Timeline, in time order (events of the same millisecond keep their natural order).
    body.push_str("<section><h2>Timeline</h2><table class=\"timeline\"><tbody>");
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut event = |what: String, at: Option<i64>| {
        if let Some(at) = at {
            events.push((at, what));
        }
    };
    event("Created (SUBMITTED)".into(), Some(job.created_at));
    event("RUNNABLE".into(), job.runnable_at);
    event("Job started".into(), job.started_at);
    for a in job.attempts.iter().chain(job.current.as_ref()) {
        event(
            format!("Attempt {}: placed on {}", a.number, esc(&a.agent_id)),
            Some(a.placed_at),
        );
        event(format!("Attempt {}: started", a.number), a.started_at);
        let exit = a
            .exit_code
            .map_or(String::new(), |c| format!(", exit code {c}"));
        event(format!("Attempt {}: stopped{exit}", a.number), a.stopped_at);
    }
    event(
        format!("Job stopped ({})", job.status.as_str()),
        job.stopped_at,
    );
    events.sort_by_key(|(at, _)| *at);
    for (at, what) in events {
        let _ = write!(body, "<tr><td>{}</td><td>{what}</td></tr>", time(Some(at)));
    }
    body.push_str("</tbody></table></section>");

    // Attempts.
    if !job.attempts.is_empty() || job.current.is_some() {
        body.push_str(
            "<section><h2>Attempts</h2><table class=\"attempts\"><thead><tr><th>#</th><th>Agent</th>\
             <th>Compute environment</th><th>Placed</th><th>Started</th><th>Stopped</th><th>Exit code</th>\
             <th>Reason</th><th>Status reason</th></tr></thead><tbody>",
        );
        for (i, a) in job.attempts.iter().enumerate() {
            attempt_row(&mut body, i + 1, a, false);
        }
        if let Some(a) = &job.current {
            attempt_row(&mut body, job.attempts.len() + 1, a, true);
        }
        body.push_str("</tbody></table></section>");
    }

    // Array progress: the API's statusSummary, as a bar, and links to the children.
    if let Some(array) = &job.array {
        // The same summary DescribeJobs answers (unborn children counted by their derived
        // status).
        let summary = barge_core::arrays::status_summary(&state, &job);
        let _ = write!(body, "<section><h2>Array of {}</h2>", array.size);
        body.push_str(&summary_bar(&summary, array.size));
        let from: u32 = query
            .get("children")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
            .min(array.size);
        let to = from.saturating_add(ARRAY_CHILD_LINKS_MAX).min(array.size);
        body.push_str("<ol class=\"children\">");
        for i in from..to {
            let cid = child_id(&job.id, i);
            let status = job_view(&state, &cid).map_or("?", |c| c.status.as_str());
            let _ = write!(
                body,
                "<li><a href=\"/console/jobs/{}\">{i}</a> {}</li>",
                url(&cid),
                status_badge(status)
            );
        }
        body.push_str("</ol><nav class=\"pager\">");
        if from > 0 {
            let _ = write!(
                body,
                "<a href=\"/console/jobs/{}?children={}\">‹ Earlier children</a> ",
                url(&job.id),
                from.saturating_sub(ARRAY_CHILD_LINKS_MAX)
            );
        }
        if to < array.size {
            let _ = write!(
                body,
                "<a href=\"/console/jobs/{}?children={to}\">Later children ›</a>",
                url(&job.id)
            );
        }
        body.push_str("</nav></section>");
    }

    // Dependencies, both ways.
    let (dependents, dependents_total) = state.dependents_first(&job.id, DEPENDENTS_SHOWN_MAX);
    if !job.depends_on.is_empty() || !dependents.is_empty() {
        body.push_str("<section><h2>Dependencies</h2>");
        if !job.depends_on.is_empty() {
            body.push_str("<p>Depends on:</p><ul class=\"deps\">");
            for d in &job.depends_on {
                let id = d.job_id.as_deref().unwrap_or("");
                let status = job_view(&state, id).map_or("?", |j| j.status.as_str());
                let _ = write!(
                    body,
                    "<li><a href=\"/console/jobs/{}\">{}</a> {} {}</li>",
                    url(id),
                    esc(id),
                    status_badge(status),
                    esc(d.kind.as_deref().unwrap_or(""))
                );
            }
            body.push_str("</ul>");
        }
        if !dependents.is_empty() {
            body.push_str("<p>Jobs that depend on it:</p><ul class=\"deps\">");
            for id in &dependents {
                let _ = write!(
                    body,
                    "<li><a href=\"/console/jobs/{}\">{}</a></li>",
                    url(id),
                    esc(id)
                );
            }
            if dependents_total > dependents.len() {
                let _ = write!(
                    body,
                    "<li>… and {} more</li>",
                    dependents_total - dependents.len()
                );
            }
            body.push_str("</ul>");
        }
        body.push_str("</section>");
    }

    // The log, followed live by console.js.
    if job.array.is_none() && job.multinode.is_none() {
        let _ = write!(
            body,
            "<section><h2>Log</h2><p class=\"help\" id=\"log-state\">Loading the log…</p>\
             <pre id=\"log\" data-src=\"/console/jobs/{}/log.json\" data-poll-ms=\"{LOG_POLL_MS}\" data-keep=\"{LOG_LINES_KEPT_MAX}\"></pre>\
             <noscript>The live log needs JavaScript; the same lines come from aws logs get-log-events.</noscript></section>\
             <script src=\"/console/static/console.js\" defer></script>",
            url(&job.id)
        );
    }
    Response::html(
        200,
        page(&format!("Job {}", job.name), Nav::None, session, &body),
    )
}

/// A command as one would type it: arguments with spaces, quotes or other shell characters
/// are single-quoted.
pub(super) fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// statusSummary as a bar of one SVG rectangle per status (no inline styles: the console's
/// content security policy allows none), with the counts beside it.
fn summary_bar(summary: &[(JobStatus, u32)], size: u32) -> String {
    let mut bar = String::from(
        "<svg class=\"summary\" viewBox=\"0 0 1000 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"array progress\">",
    );
    let mut legend = String::from("<ul class=\"legend\">");
    let mut x = 0u64;
    for s in JobStatus::ALL {
        let n = summary
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(0, |(_, n)| u64::from(*n));
        let w = if size == 0 {
            0
        } else {
            n * 1000 / u64::from(size)
        };
        if w > 0 {
            let _ = write!(
                bar,
                "<rect class=\"s-{}\" x=\"{x}\" y=\"0\" width=\"{w}\" height=\"24\"><title>{} {n}</title></rect>",
                s.as_str().to_ascii_lowercase(),
                s.as_str()
            );
            x += w;
        }
        let _ = write!(legend, "<li>{} {n}</li>", status_badge(s.as_str()));
    }
    bar.push_str("</svg>");
    legend.push_str("</ul>");
    bar + &legend
}

/// `GET /console/jobs/{id}/log.json?stream=&token=`: the next log lines of the job's latest
/// attempt, through CloudWatch Logs' GetLogEvents. A new attempt has a new stream: the
/// page starts again from its head when `stream` changes.
pub async fn log_json<B: Backend>(
    backend: &B,
    logs: &LogReader,
    id: &str,
    query: &BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let Some(job) = job_view(&state, id) else {
        return Response::json(
            404,
            &json!({ "message": format!("job {id} does not exist") }),
        );
    };
    let status = job.status;
    // Once the job has ended, its own reason (the page showed the waiting reason before).
    let reason = job.status_reason.clone().filter(|_| status.is_terminal());
    let stream = job
        .current
        .as_ref()
        .or(job.attempts.last())
        .map(|a| a.log_stream_name.clone());
    let done = status.is_terminal();
    let Some(stream) = stream.filter(|s| state.log_streams.contains_key(s)) else {
        return Response::json(
            200,
            &json!({ "events": [], "status": status.as_str(), "reason": reason, "done": done }),
        );
    };
    let mut request = json!({
        "logGroupName": LOG_GROUP_NAME,
        "logStreamName": stream,
        "startFromHead": true,
        "limit": LOG_EVENTS_PAGE_MAX,
    });
    if query.get("stream") == Some(&stream) {
        if let Some(t) = query.get("token").filter(|t| !t.is_empty()) {
            request["nextToken"] = Value::String(t.clone());
        }
    }
    let reader = logs.clone();
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let answer = tokio::task::spawn_blocking(move || {
        barge_api::logs::logs_operation(&state, &reader, "Logs_20140328.GetLogEvents", &body)
    })
    .await;
    let Ok(answer) = answer else {
        return Response::json(500, &json!({ "message": "the log query failed" }));
    };
    match answer_json(answer) {
        Ok(v) => {
            let events: Vec<Value> = v["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| json!({ "t": e["timestamp"], "m": e["message"] }))
                        .collect()
                })
                .unwrap_or_default();
            let full = events.len() as i64 >= LOG_EVENTS_PAGE_MAX;
            Response::json(
                200,
                &json!({
                    "stream": stream,
                    "token": v["nextForwardToken"],
                    "events": events,
                    "status": status.as_str(),
                    "reason": reason,
                    "more": full,
                    "done": done && !full,
                }),
            )
        }
        Err(message) => Response::json(400, &json!({ "message": message })),
    }
}

/// `POST /console/jobs/{id}/stop`: CancelJob or TerminateJob with the reason given.
pub async fn stop<B: Backend>(
    backend: &B,
    session: &Session,
    id: &str,
    fields: &BTreeMap<String, String>,
) -> Response {
    let op = match fields.get("action").map(String::as_str) {
        Some("terminate") => "terminatejob",
        _ => "canceljob",
    };
    let body = json!({
        "jobId": id,
        "reason": fields.get("reason").cloned().unwrap_or_default(),
    });
    let answer =
        barge_api::batch_operation(backend, op, &serde_json::to_vec(&body).unwrap_or_default())
            .await;
    match answer_json(answer) {
        Ok(_) => Response::redirect(format!("/console/jobs/{}", url(id))),
        Err(message) => super::message(400, session, "The job was not stopped", &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Memory;

    #[test]
    fn what_a_job_carries_is_escaped_on_its_page() {
        let m = Memory::with_queue();
        let job = m.call(
            "submitjob",
            json!({"jobName": "j", "jobQueue": "q", "jobDefinition": "d",
                   "containerOverrides": {"command": ["echo", "<script>alert('x')</script>"]}}),
        );
        let session = crate::auth::Auth::new(Default::default(), false)
            .start("", 0)
            .0;
        let r = show(
            &m,
            &session,
            job["jobId"].as_str().unwrap(),
            &BTreeMap::new(),
        );
        let html = String::from_utf8(r.body).unwrap();
        let shown = esc(&shell_words(&[
            "echo".into(),
            "<script>alert('x')</script>".into(),
        ]));
        assert!(
            shown.starts_with("echo &#39;&lt;script&gt;alert("),
            "{shown}"
        );
        assert!(html.contains(&shown), "{html}");
        assert_eq!(
            shell_words(&["sh".into(), "-c".into(), "echo 'a b'".into(), "x".into()]),
            r"sh -c 'echo '\''a b'\''' x"
        );
        assert!(!html.contains("<script>alert"));
        // The waiting reason, as barge why gives it.
        assert!(html.contains("<h2>Why it is"), "{html}");

        // An array job: statusSummary as a bar, links to its (unborn) children, and a child
        // links back to its parent.
        let parent = m.call(
            "submitjob",
            json!({"jobName": "arr", "jobQueue": "q", "jobDefinition": "d",
                   "arrayProperties": {"size": 5}}),
        );
        let pid = parent["jobId"].as_str().unwrap();
        let html = String::from_utf8(show(&m, &session, pid, &BTreeMap::new()).body).unwrap();
        assert!(html.contains("<svg class=\"summary\""), "{html}");
        assert!(html.contains("<h2>Array of 5</h2>"));
        for i in 0..5 {
            assert!(html.contains(&format!(
                "href=\"/console/jobs/{}\"",
                url(&child_id(pid, i))
            )));
        }
        let child = String::from_utf8(show(&m, &session, &child_id(pid, 3), &BTreeMap::new()).body)
            .unwrap();
        assert!(child.contains(&format!(
            "<dt>Array parent</dt><dd><a href=\"/console/jobs/{}\"",
            url(pid)
        )));
    }
}
