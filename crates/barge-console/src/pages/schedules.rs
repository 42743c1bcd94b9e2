//! Scheduled jobs: the list (paged by name), one schedule's page with its enable, disable and
//! delete buttons, and the create and edit forms. Every change goes through the schedules
//! API's own function (`barge_api::schedules::operation`), so the console accepts and refuses
//! exactly what `/barge/v1/schedules` does, with its messages, shown next to the field they
//! name. Reads come from the snapshot.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Bound;

use barge_api::Backend;
use barge_core::apply::schedules::finished;
use barge_core::model::ResourceState;
use barge_core::schedule::Schedule;
use barge_core::State;
use serde_json::{json, Map, Value};

use super::forms::{command, environment, f, fields_html, number, text, Field, Kind, STATES};
use super::job::{answer_json, shell_words};
use crate::form::field_of;
use crate::html::{csrf_field, esc, page, status_badge, time, url, Nav};
use crate::limits::{OVERVIEW_SCHEDULES_SHOWN, SCHEDULES_PAGE_ITEMS};
use crate::{Response, Session};

const OVERLAP_POLICIES: &[&str] = &["ALLOW", "SKIP", "CANCEL_PREVIOUS"];

/// The schedule's own fields. The edit form leaves out the first (a name does not change).
const SCHEDULE_FIELDS: &[Field] = &[
    f("scheduleName", "Name", Kind::Text, &["scheduleName"], "", "Letters, numbers, hyphens and underscores; up to 128."),
    f("scheduleExpression", "Expression", Kind::Text, &["scheduleExpression"], "", "cron(minutes hours day-of-month month day-of-week year), rate(5 minutes) or at(2027-01-31T09:30:00)."),
    f("scheduleExpressionTimezone", "Time zone", Kind::Text, &["scheduleExpressionTimezone"], "UTC", "An IANA name: UTC, Europe/Paris, America/New_York."),
    f("overlapPolicy", "Overlap policy", Kind::Select(OVERLAP_POLICIES), &["overlapPolicy"], "ALLOW", "While an earlier run is unfinished: submit anyway (ALLOW), submit nothing (SKIP), or terminate it and submit (CANCEL_PREVIOUS)."),
    f("state", "State", Kind::Select(STATES), &["state"], "ENABLED", ""),
    f("description", "Description", Kind::Text, &["description"], "", "Optional."),
];

/// Its job template, as the submit-job form has them.
const TEMPLATE_FIELDS: &[Field] = &[
    f(
        "jobName",
        "Job name",
        Kind::Text,
        &["jobTemplate.jobName", "jobName"],
        "",
        "The name of every job it submits.",
    ),
    f(
        "jobQueue",
        "Job queue",
        Kind::Choose("job-queues"),
        &["jobTemplate.jobQueue", "jobQueue", "job queue"],
        "",
        "",
    ),
    f(
        "jobDefinition",
        "Job definition",
        Kind::Suggest("job-definitions"),
        &[
            "jobTemplate.jobDefinition",
            "jobDefinition",
            "job definition",
        ],
        "",
        "A name (latest ACTIVE revision), name:revision or ARN.",
    ),
    f(
        "command",
        "Command override",
        Kind::Text,
        &[
            "jobTemplate.containerOverrides.command",
            "containerOverrides.command",
            "command",
        ],
        "",
        "Optional; shell-like words, as in the submit form.",
    ),
    f(
        "environment",
        "Environment overrides",
        Kind::Lines,
        &[
            "jobTemplate.containerOverrides.environment",
            "containerOverrides.environment",
            "environment",
        ],
        "",
        "Optional; one NAME=value per line.",
    ),
    f(
        "arraySize",
        "Array size",
        Kind::Number,
        &[
            "jobTemplate.arrayProperties.size",
            "arrayProperties.size",
            "arrayProperties",
        ],
        "",
        "Optional: makes each run an array job.",
    ),
];

fn state_str(s: ResourceState) -> &'static str {
    match s {
        ResourceState::Enabled => "ENABLED",
        ResourceState::Disabled => "DISABLED",
    }
}

fn schedule_link(name: &str) -> String {
    format!(
        "<a href=\"/console/schedules/{}\">{}</a>",
        url(name),
        esc(name)
    )
}

fn job_link(id: &str) -> String {
    format!(
        "<a class=\"id\" href=\"/console/jobs/{}\">{}</a>",
        url(id),
        esc(id)
    )
}

/// `/console/schedules?after=NAME`: schedules by name, a page at a time.
pub fn list<B: Backend>(
    backend: &B,
    session: &Session,
    query: &BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let after = query.get("after").cloned().unwrap_or_default();
    let from = if after.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(after.clone())
    };
    let mut body = String::from(
        "<h1>Schedules</h1><p><a class=\"button\" href=\"/console/new/schedule\">Create a schedule</a></p>\
         <table class=\"schedules\"><thead><tr><th>Name</th><th>Expression</th><th>Time zone</th>\
         <th>State</th><th>Overlap policy</th><th>Next fire (UTC)</th><th>Last fired (UTC)</th>\
         <th>Last job</th><th class=\"num\">Fired</th><th class=\"num\">Skipped</th>\
         <th class=\"num\">Failed</th><th>Last error</th></tr></thead><tbody>",
    );
    let mut rows = state
        .schedules
        .range::<_, String>((from, Bound::Unbounded))
        .map(|(_, s)| s);
    let mut shown = 0;
    let mut last = None;
    let mut more = false;
    for s in rows.by_ref() {
        if shown == SCHEDULES_PAGE_ITEMS {
            more = true;
            break;
        }
        let _ =
            write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            schedule_link(&s.name),
            esc(&s.expression),
            esc(&s.time_zone),
            state_str(s.state),
            s.overlap_policy.as_str(),
            time(s.next_fire_at),
            time(s.last_fired_at),
            s.last_job_id.as_deref().map(job_link).unwrap_or_else(|| "–".into()),
            s.fired,
            s.skipped,
            s.failed,
            esc(s.last_error.as_deref().unwrap_or("")),
        );
        shown += 1;
        last = Some(s.name.clone());
    }
    if shown == 0 {
        body.push_str(if after.is_empty() {
            "<tr><td colspan=\"12\">No schedules yet: <a href=\"/console/new/schedule\">create one</a>.</td></tr>"
        } else {
            "<tr><td colspan=\"12\">No schedules on this page.</td></tr>"
        });
    }
    body.push_str("</tbody></table><nav class=\"pager\">");
    if !after.is_empty() {
        body.push_str("<a href=\"/console/schedules\">First</a> ");
    }
    if let (true, Some(last)) = (more, last) {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"/console/schedules?after={}\">Next ›</a>",
            url(&last)
        );
    }
    body.push_str("</nav>");
    Response::html(200, page("Schedules", Nav::Schedules, session, &body))
}

/// The overview's panel: how many schedules there are and the next few to fire. Finding those
/// walks every schedule, which the core bounds (`SCHEDULES_MAX`).
pub fn overview_panel(state: &State) -> String {
    let enabled = state
        .schedules
        .values()
        .filter(|s| s.state == ResourceState::Enabled)
        .count();
    let mut next: Vec<(i64, &Schedule)> = state
        .schedules
        .values()
        .filter_map(|s| s.next_fire_at.map(|t| (t, s.as_ref())))
        .collect();
    next.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let mut out = format!(
        "<section class=\"schedules\"><h2>Schedules</h2><p><a href=\"/console/schedules\">{} schedule{}</a>, {enabled} enabled. \
         <a href=\"/console/new/schedule\">Create one</a>.</p>",
        state.schedules.len(),
        if state.schedules.len() == 1 { "" } else { "s" },
    );
    if !next.is_empty() {
        out.push_str(
            "<table class=\"next-fires\"><thead><tr><th>Next to fire</th><th>Expression</th>\
             <th>At (UTC)</th></tr></thead><tbody>",
        );
        for (at, s) in next.iter().take(OVERVIEW_SCHEDULES_SHOWN) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code> {}</td><td>{}</td></tr>",
                schedule_link(&s.name),
                esc(&s.expression),
                esc(&s.time_zone),
                time(Some(*at)),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

/// `/console/schedules/NAME`: everything about one schedule, and its buttons.
pub fn show<B: Backend>(backend: &B, session: &Session, name: &str) -> Response {
    let state = backend.snapshot();
    let Some(s) = state.schedules.get(name) else {
        return super::message(
            404,
            session,
            "No such schedule",
            &format!("Schedule {name} does not exist."),
        );
    };
    let n = url(&s.name);
    let mut body = format!(
        "<h1>Schedule {} <span id=\"schedule-state\">{}</span></h1><dl class=\"facts\">\
         <dt>ARN</dt><dd class=\"id\">{}</dd>",
        esc(&s.name),
        status_badge(state_str(s.state)),
        esc(&s.arn),
    );
    if let Some(d) = &s.description {
        let _ = write!(body, "<dt>Description</dt><dd>{}</dd>", esc(d));
    }
    let _ = write!(
        body,
        "<dt>Expression</dt><dd><code id=\"schedule-expression\">{}</code></dd>\
         <dt>Time zone</dt><dd>{}</dd><dt>Overlap policy</dt><dd>{}</dd>\
         <dt>Next fire</dt><dd id=\"next-fire\">{} UTC</dd><dt>Last fired</dt><dd>{} UTC</dd>\
         <dt>Last job</dt><dd id=\"last-job\">{}</dd>\
         <dt>Fired</dt><dd id=\"fired\">{}</dd><dt>Skipped</dt><dd>{}</dd><dt>Failed</dt><dd>{}</dd>\
         <dt>Last error</dt><dd id=\"last-error\">{}</dd>\
         <dt>Created</dt><dd>{} UTC</dd><dt>Updated</dt><dd>{} UTC</dd></dl>",
        esc(&s.expression),
        esc(&s.time_zone),
        s.overlap_policy.as_str(),
        time(s.next_fire_at),
        time(s.last_fired_at),
        s.last_job_id
            .as_deref()
            .map(job_link)
            .unwrap_or_else(|| "–".into()),
        s.fired,
        s.skipped,
        s.failed,
        esc(s.last_error.as_deref().unwrap_or("–")),
        time(Some(s.created_at)),
        time(Some(s.updated_at)),
    );

    // The actions: enable or disable, edit, delete.
    let (to, label) = match s.state {
        ResourceState::Enabled => ("DISABLED", "Disable"),
        ResourceState::Disabled => ("ENABLED", "Enable"),
    };
    let _ = write!(
        body,
        "<section class=\"actions\"><form class=\"inline\" method=\"post\" action=\"/console/schedules/{n}/state\">{csrf}\
         <button type=\"submit\" name=\"state\" value=\"{to}\" id=\"toggle-state\">{label}</button></form> \
         <a class=\"button\" id=\"edit\" href=\"/console/schedules/{n}/edit\">Edit</a> \
         <form class=\"inline\" method=\"post\" action=\"/console/schedules/{n}/delete\">{csrf}\
         <button type=\"submit\" class=\"danger\" id=\"delete\">Delete</button></form>\
         <p class=\"help\">Disabling stops the firing (it does not catch up when enabled again); deleting leaves the jobs it submitted alone.</p></section>",
        csrf = csrf_field(session),
    );

    // The runs it follows that have not finished.
    let active: Vec<&String> = s
        .active_job_ids
        .iter()
        .filter(|id| !finished(&state, id))
        .collect();
    body.push_str("<section><h2>Active runs</h2>");
    if active.is_empty() {
        body.push_str("<p class=\"note\" id=\"active-runs\">None unfinished.</p>");
    } else {
        body.push_str("<ul id=\"active-runs\">");
        for id in active {
            let status = state
                .jobs
                .get(id.as_str())
                .map(|j| status_badge(j.status.as_str()))
                .unwrap_or_default();
            let _ = write!(body, "<li>{} {status}</li>", job_link(id));
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");

    // The job template, the fields the form edits and the whole of it as the API shows it.
    let t = &s.template;
    let o = t.container_overrides.as_ref();
    let _ = write!(
        body,
        "<section><h2>Job template</h2><dl class=\"facts\" id=\"template\"><dt>Job name</dt><dd>{}</dd>\
         <dt>Job queue</dt><dd><a href=\"/console/queues/{}\">{}</a></dd><dt>Job definition</dt><dd>{}</dd>\
         <dt>Command override</dt><dd><code>{}</code></dd><dt>Environment overrides</dt><dd><code>{}</code></dd>\
         <dt>Array size</dt><dd>{}</dd></dl>\
         <details><summary>As the API shows it</summary><pre><code>{}</code></pre></details></section>",
        esc(&t.job_name),
        url(&t.job_queue),
        esc(&t.job_queue),
        esc(&t.job_definition),
        esc(&o.and_then(|o| o.command.as_deref()).map(shell_words).unwrap_or_default()),
        esc(&environment_lines(s).replace('\n', " ")),
        t.array_properties
            .as_ref()
            .map_or("–".to_string(), |a| a.size.to_string()),
        esc(&serde_json::to_string_pretty(t).unwrap_or_default()),
    );
    if !s.tags.is_empty() {
        body.push_str("<section><h2>Tags</h2><dl class=\"facts\">");
        for (k, v) in &s.tags {
            let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        }
        body.push_str("</dl></section>");
    }
    Response::html(
        200,
        page(
            &format!("Schedule {}", s.name),
            Nav::Schedules,
            session,
            &body,
        ),
    )
}

fn environment_lines(s: &Schedule) -> String {
    s.template
        .container_overrides
        .as_ref()
        .and_then(|o| o.environment.as_ref())
        .map(|env| {
            env.iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.name.as_deref().unwrap_or(""),
                        kv.value.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Which form: a new schedule, or an existing one's.
#[derive(Clone, Copy)]
enum Form<'a> {
    Create,
    Edit(&'a str),
}

fn render_form<B: Backend>(
    backend: &B,
    session: &Session,
    form: Form,
    values: &BTreeMap<String, String>,
    error: Option<&str>,
    status: u16,
) -> Response {
    let (title, action, own, button) = match form {
        Form::Create => (
            "Create schedule".to_string(),
            "/console/new/schedule".to_string(),
            SCHEDULE_FIELDS,
            "Create schedule",
        ),
        Form::Edit(name) => (
            format!("Edit schedule {name}"),
            format!("/console/schedules/{}/edit", url(name)),
            &SCHEDULE_FIELDS[1..],
            "Save schedule",
        ),
    };
    let members: Vec<(&str, &[&str])> = own
        .iter()
        .chain(TEMPLATE_FIELDS)
        .map(|f| (f.name, f.members))
        .collect();
    let error_field = error.and_then(|e| field_of(e, &members));
    let mut body = format!(
        "<h1>{}</h1><form class=\"api-form\" method=\"post\" action=\"{action}\" novalidate>{}",
        esc(&title),
        csrf_field(session)
    );
    if let Some(e) = error {
        match error_field {
            Some(_) => body.push_str(
                "<p class=\"form-error\" id=\"form-error\">The API refused this; see the field marked below.</p>",
            ),
            None => {
                let _ = write!(body, "<p class=\"form-error\" id=\"form-error\">{}</p>", esc(e));
            }
        }
    }
    let state = backend.snapshot();
    fields_html(&mut body, &state, own, values, error_field, error);
    body.push_str("<h2 class=\"form-part\">The job it submits</h2>");
    fields_html(
        &mut body,
        &state,
        TEMPLATE_FIELDS,
        values,
        error_field,
        error,
    );
    let _ = write!(
        body,
        "<button type=\"submit\" class=\"primary\">{button}</button></form>"
    );
    Response::html(status, page(&title, Nav::Schedules, session, &body))
}

/// `GET /console/new/schedule`: the create form (links may fill fields in).
pub fn new_form<B: Backend>(
    backend: &B,
    session: &Session,
    query: &BTreeMap<String, String>,
) -> Response {
    let mut values: BTreeMap<String, String> = SCHEDULE_FIELDS
        .iter()
        .chain(TEMPLATE_FIELDS)
        .map(|f| {
            let v = query.get(f.name).map_or(f.default, String::as_str);
            (f.name.to_string(), v.to_string())
        })
        .collect();
    if values["jobQueue"].is_empty() {
        if let Some(first) = backend.snapshot().job_queues.keys().next() {
            values.insert("jobQueue".into(), first.clone());
        }
    }
    render_form(backend, session, Form::Create, &values, None, 200)
}

/// `GET /console/schedules/NAME/edit`: the form, filled from the stored schedule.
pub fn edit_form<B: Backend>(backend: &B, session: &Session, name: &str) -> Response {
    let state = backend.snapshot();
    let Some(s) = state.schedules.get(name) else {
        return super::message(
            404,
            session,
            "No such schedule",
            &format!("Schedule {name} does not exist."),
        );
    };
    let t = &s.template;
    let values: BTreeMap<String, String> = [
        ("scheduleExpression", s.expression.clone()),
        ("scheduleExpressionTimezone", s.time_zone.clone()),
        ("overlapPolicy", s.overlap_policy.as_str().to_string()),
        ("state", state_str(s.state).to_string()),
        ("description", s.description.clone().unwrap_or_default()),
        ("jobName", t.job_name.clone()),
        ("jobQueue", t.job_queue.clone()),
        ("jobDefinition", t.job_definition.clone()),
        (
            "command",
            t.container_overrides
                .as_ref()
                .and_then(|o| o.command.as_deref())
                .map(shell_words)
                .unwrap_or_default(),
        ),
        ("environment", environment_lines(s)),
        (
            "arraySize",
            t.array_properties
                .as_ref()
                .map_or(String::new(), |a| a.size.to_string()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    render_form(backend, session, Form::Edit(name), &values, None, 200)
}

fn values_of(fields: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    SCHEDULE_FIELDS
        .iter()
        .chain(TEMPLATE_FIELDS)
        .map(|f| {
            (
                f.name.to_string(),
                fields.get(f.name).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// The job template the form's fields make. `base` is the stored template when editing: the
/// members the form has no field for (retry strategy, timeout, parameters, tags, other
/// overrides…) are kept, since the API replaces a template whole.
fn template_of(v: &BTreeMap<String, String>, base: Option<Value>) -> Result<Value, String> {
    let mut t = match base {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    t.insert("jobName".into(), json!(v["jobName"]));
    t.insert("jobQueue".into(), json!(v["jobQueue"].trim()));
    t.insert("jobDefinition".into(), json!(v["jobDefinition"].trim()));
    let mut o = match t.remove("containerOverrides") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    match command("containerOverrides.command", &v["command"])? {
        Some(cmd) => o.insert("command".into(), json!(cmd)),
        None => o.remove("command"),
    };
    let env = environment(&v["environment"]);
    if env.is_empty() {
        o.remove("environment");
    } else {
        o.insert("environment".into(), json!(env));
    }
    if !o.is_empty() {
        t.insert("containerOverrides".into(), Value::Object(o));
    }
    match number(&v["arraySize"]) {
        Some(n) => t.insert("arrayProperties".into(), json!({ "size": n })),
        None => t.remove("arrayProperties"),
    };
    Ok(Value::Object(t))
}

/// The API request (create's or update's) the form's values make.
fn request_of(v: &BTreeMap<String, String>, existing: Option<&Schedule>) -> Result<Value, String> {
    let mut r = Map::new();
    if existing.is_none() {
        r.insert("scheduleName".into(), json!(v["scheduleName"].trim()));
    }
    r.insert(
        "scheduleExpression".into(),
        json!(v["scheduleExpression"].trim()),
    );
    if let Some(tz) = text(&v["scheduleExpressionTimezone"]) {
        r.insert("scheduleExpressionTimezone".into(), tz);
    }
    if let Some(p) = text(&v["overlapPolicy"]) {
        r.insert("overlapPolicy".into(), p);
    }
    if let Some(st) = text(&v["state"]) {
        r.insert("state".into(), st);
    }
    // An empty description is left out, unless it clears one that was set.
    let had_description = existing.is_some_and(|s| s.description.is_some());
    if had_description || !v["description"].trim().is_empty() {
        r.insert("description".into(), json!(v["description"].trim()));
    }
    let base = existing.and_then(|s| serde_json::to_value(&s.template).ok());
    r.insert("jobTemplate".into(), template_of(v, base)?);
    Ok(Value::Object(r))
}

/// `POST /console/new/schedule`.
pub async fn create<B: Backend>(
    backend: &B,
    session: &Session,
    fields: &BTreeMap<String, String>,
) -> Response {
    let values = values_of(fields);
    let request = match request_of(&values, None) {
        Ok(r) => r,
        Err(m) => return render_form(backend, session, Form::Create, &values, Some(&m), 400),
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let answer = barge_api::schedules::operation(backend, "POST", "", "", &body).await;
    match answer_json(answer) {
        Ok(_) => Response::redirect(format!(
            "/console/schedules/{}",
            url(values["scheduleName"].trim())
        )),
        Err(m) => render_form(backend, session, Form::Create, &values, Some(&m), 400),
    }
}

/// `POST /console/schedules/NAME/edit`: UpdateSchedule with every field of the form (the
/// timing restarts only when the expression, time zone or state really changed).
pub async fn edit<B: Backend>(
    backend: &B,
    session: &Session,
    name: &str,
    fields: &BTreeMap<String, String>,
) -> Response {
    let state = backend.snapshot();
    let Some(existing) = state.schedules.get(name) else {
        return super::message(
            404,
            session,
            "No such schedule",
            &format!("Schedule {name} does not exist."),
        );
    };
    let values = values_of(fields);
    let form = Form::Edit(name);
    let request = match request_of(&values, Some(existing)) {
        Ok(r) => r,
        Err(m) => return render_form(backend, session, form, &values, Some(&m), 400),
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let rest = format!("/{}", url(name));
    let answer = barge_api::schedules::operation(backend, "PATCH", &rest, "", &body).await;
    match answer_json(answer) {
        Ok(_) => Response::redirect(format!("/console/schedules/{}", url(name))),
        Err(m) => render_form(backend, session, form, &values, Some(&m), 400),
    }
}

/// `POST /console/schedules/NAME/state`: enable or disable.
pub async fn set_state<B: Backend>(
    backend: &B,
    session: &Session,
    name: &str,
    fields: &BTreeMap<String, String>,
) -> Response {
    let to = fields.get("state").cloned().unwrap_or_default();
    let body = serde_json::to_vec(&json!({ "state": to })).unwrap_or_default();
    let rest = format!("/{}", url(name));
    let answer = barge_api::schedules::operation(backend, "PATCH", &rest, "", &body).await;
    match answer_json(answer) {
        Ok(_) => Response::redirect(format!("/console/schedules/{}", url(name))),
        Err(m) => super::message(400, session, "The schedule was not changed", &m),
    }
}

/// `POST /console/schedules/NAME/delete`: the jobs it submitted stay.
pub async fn delete<B: Backend>(backend: &B, session: &Session, name: &str) -> Response {
    let rest = format!("/{}", url(name));
    let answer = barge_api::schedules::operation(backend, "DELETE", &rest, "", &[]).await;
    match answer_json(answer) {
        Ok(_) => Response::redirect("/console/schedules".into()),
        Err(m) => super::message(400, session, "The schedule was not deleted", &m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{futures_lite, Memory};

    fn session() -> Session {
        crate::auth::Auth::new(Default::default(), false)
            .start("", 0)
            .0
    }

    fn setup() -> Memory {
        let m = Memory::with_queue();
        m
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut f: BTreeMap<String, String> = [
            ("scheduleName", "nightly"),
            ("scheduleExpression", "rate(30 minutes)"),
            ("scheduleExpressionTimezone", "UTC"),
            ("overlapPolicy", "SKIP"),
            ("state", "ENABLED"),
            ("jobName", "report"),
            ("jobQueue", "q"),
            ("jobDefinition", "d"),
            ("command", "echo 'hello there'"),
            ("environment", "MODE=full"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            f.insert(k.to_string(), v.to_string());
        }
        f
    }

    fn html(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    /// The API's message lands next to the field it names, and what was typed stays.
    #[test]
    fn form_errors_are_placed_at_their_field() {
        let m = setup();
        for (field, value, expect) in [
            ("scheduleExpression", "cron(<b>", "scheduleExpression"),
            (
                "scheduleExpressionTimezone",
                "Mars/Olympus",
                "scheduleExpressionTimezone",
            ),
            ("jobQueue", "nowhere", "nowhere"),
            ("jobDefinition", "missing", "missing"),
            ("command", "echo 'open", "containerOverrides.command"),
            ("scheduleName", "bad name", "scheduleName"),
            ("arraySize", "many", "arrayProperties"),
        ] {
            let r = futures_lite(create(&m, &session(), &fields(&[(field, value)])));
            assert_eq!(r.status, 400, "{field}");
            let page = html(&r);
            let at = page
                .find(&format!("id=\"error-{field}\""))
                .unwrap_or_else(|| panic!("no error at {field}: {page}"));
            let message = &page[at..page[at..].find("</p>").unwrap() + at];
            assert!(message.contains(expect), "{field}: {message}");
            assert_eq!(page.matches("class=\"error\"").count(), 1, "{field}");
            assert!(page.contains("id=\"form-error\""));
            assert!(
                !page.contains("<b>"),
                "{field}: typed markup must be escaped"
            );
        }
        // The bad expression is kept, escaped, in its field.
        let page = html(&futures_lite(create(
            &m,
            &session(),
            &fields(&[("scheduleExpression", "cron(\"<b>")]),
        )));
        assert!(page.contains("value=\"cron(&quot;&lt;b&gt;\""), "{page}");
        // The queue that is not in the state's list stays selected.
        let page = html(&futures_lite(create(
            &m,
            &session(),
            &fields(&[("jobQueue", "gone<q>")]),
        )));
        assert!(
            page.contains("<option value=\"gone&lt;q&gt;\" selected>"),
            "{page}"
        );
        assert!(m.snapshot().schedules.is_empty());
    }

    #[test]
    fn create_show_edit_disable_and_delete() {
        let m = setup();
        let desc = "<script>alert('x')</script>";
        let r = futures_lite(create(&m, &session(), &fields(&[("description", desc)])));
        assert_eq!(r.status, 303, "{}", html(&r));
        assert_eq!(r.headers[0].1, "/console/schedules/nightly");
        let s = m.snapshot().schedules["nightly"].clone();
        assert_eq!(s.overlap_policy.as_str(), "SKIP");
        let o = s.template.container_overrides.as_ref().unwrap();
        assert_eq!(o.command.as_deref().unwrap(), ["echo", "hello there"]);

        let page = html(&show(&m, &session(), "nightly"));
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)"));
        assert!(
            page.contains("<code>echo &#39;hello there&#39;</code>"),
            "{page}"
        );
        assert!(page.contains("value=\"DISABLED\""));
        assert!(page.contains("action=\"/console/schedules/nightly/delete\""));
        assert_eq!(page.matches("name=\"csrf\"").count(), 2);
        let list_page = html(&list(&m, &session(), &BTreeMap::new()));
        assert!(list_page.contains("<a href=\"/console/schedules/nightly\">nightly</a>"));
        assert!(list_page.contains("<code>rate(30 minutes)</code>"));
        assert!(overview_panel(&m.snapshot()).contains("1 schedule</a>, 1 enabled"));

        // A template member the form has no field for survives an edit through the form.
        m.call(
            "createjobqueue",
            json!({"jobQueueName": "q2", "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}]}),
        );
        let body = json!({"jobTemplate": {"jobName": "report", "jobQueue": "q", "jobDefinition": "d",
            "retryStrategy": {"attempts": 3}}});
        futures_lite(barge_api::schedules::operation(
            &m,
            "PATCH",
            "/nightly",
            "",
            &serde_json::to_vec(&body).unwrap(),
        ));
        let form = html(&edit_form(&m, &session(), "nightly"));
        assert!(
            !form.contains("name=\"scheduleName\""),
            "the name does not change"
        );
        assert!(form.contains("value=\"rate(30 minutes)\""));
        let r = futures_lite(edit(
            &m,
            &session(),
            "nightly",
            &fields(&[("jobQueue", "q2"), ("scheduleExpression", "rate(1 hour)")]),
        ));
        assert_eq!(r.status, 303, "{}", html(&r));
        let s = m.snapshot().schedules["nightly"].clone();
        assert_eq!(s.expression, "rate(1 hour)");
        assert_eq!(s.template.job_queue, "q2");
        assert_eq!(
            s.template.retry_strategy.as_ref().unwrap().attempts,
            Some(3)
        );
        // An edit the API refuses comes back to the edit form, with the message at its field.
        let r = futures_lite(edit(
            &m,
            &session(),
            "nightly",
            &fields(&[("overlapPolicy", "SOMETIMES")]),
        ));
        assert_eq!(r.status, 400);
        assert!(html(&r).contains("id=\"error-overlapPolicy\""));

        let disable: BTreeMap<String, String> =
            [("state".to_string(), "DISABLED".to_string())].into();
        assert_eq!(
            futures_lite(set_state(&m, &session(), "nightly", &disable)).status,
            303
        );
        let s = m.snapshot().schedules["nightly"].clone();
        assert_eq!(s.state, ResourceState::Disabled);
        assert!(html(&show(&m, &session(), "nightly")).contains("value=\"ENABLED\""));
        assert_eq!(futures_lite(delete(&m, &session(), "nightly")).status, 303);
        assert!(m.snapshot().schedules.is_empty());
        assert_eq!(show(&m, &session(), "nightly").status, 404);
        assert_eq!(futures_lite(delete(&m, &session(), "nightly")).status, 400);
    }

    #[test]
    fn the_list_pages_by_name() {
        let m = setup();
        for i in 0..SCHEDULES_PAGE_ITEMS + 3 {
            let name = format!("s{i:03}");
            let r = futures_lite(create(&m, &session(), &fields(&[("scheduleName", &name)])));
            assert_eq!(r.status, 303);
        }
        let first = html(&list(&m, &session(), &BTreeMap::new()));
        assert_eq!(
            first.matches("<tr><td><a href").count(),
            SCHEDULES_PAGE_ITEMS
        );
        let last = format!("s{:03}", SCHEDULES_PAGE_ITEMS - 1);
        assert!(first.contains(&format!(
            "rel=\"next\" href=\"/console/schedules?after={last}\""
        )));
        let query = [("after".to_string(), last)].into();
        let second = html(&list(&m, &session(), &query));
        assert_eq!(second.matches("<tr><td><a href").count(), 3);
        assert!(!second.contains("rel=\"next\""));
        let panel = overview_panel(&m.snapshot());
        assert_eq!(
            panel.matches("<tr><td><a href").count(),
            OVERVIEW_SCHEDULES_SHOWN
        );
    }
}
