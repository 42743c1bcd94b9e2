//! The forms: create a compute environment, create a job queue, register a job definition,
//! submit a job. Each form becomes the API's JSON request and goes through
//! `barge_api::batch_operation`, so validation is exactly the API's; its message is shown
//! next to the field whose API member it names (at the top when it names none), and what the
//! person typed is kept.

use std::collections::BTreeMap;
use std::fmt::Write;

use barge_api::Backend;
use barge_core::State;
use serde_json::{json, Map, Value};

use crate::form::{field_of, split_command};
use crate::html::{csrf_field, esc, page, url, Nav};
use crate::limits::OVERVIEW_ROWS_MAX;
use crate::pages::job::answer_json;
use crate::{Response, Session};

pub(super) enum Kind {
    Text,
    /// A number as text: what is not a whole number goes to the API as a string, which it
    /// refuses naming the member.
    Number,
    Select(&'static [&'static str]),
    /// Free text with suggestions (queue and definition names).
    Suggest(&'static str),
    Lines,
    /// One of the names in a list from the state (job queues); a value not in it (typed
    /// before it was deleted, or kept after an error) stays selectable.
    Choose(&'static str),
}

pub(super) struct Field {
    pub(super) name: &'static str,
    label: &'static str,
    kind: Kind,
    /// The API members this field sets, as error messages name them.
    pub(super) members: &'static [&'static str],
    pub(super) default: &'static str,
    help: &'static str,
}

pub(super) const fn f(
    name: &'static str,
    label: &'static str,
    kind: Kind,
    members: &'static [&'static str],
    default: &'static str,
    help: &'static str,
) -> Field {
    Field {
        name,
        label,
        kind,
        members,
        default,
        help,
    }
}

pub(super) const STATES: &[&str] = &["ENABLED", "DISABLED"];

struct Spec {
    title: &'static str,
    operation: &'static str,
    button: &'static str,
    fields: &'static [Field],
}

const COMPUTE_ENVIRONMENT: Spec = Spec {
    title: "Create compute environment",
    operation: "createcomputeenvironment",
    button: "Create compute environment",
    fields: &[
        f("computeEnvironmentName", "Name", Kind::Text, &["computeEnvironmentName"], "", "Letters, numbers, hyphens and underscores; up to 128."),
        f("type", "Type", Kind::Select(&["MANAGED", "UNMANAGED"]), &["type"], "MANAGED", "MANAGED: Barge's agents (and instance providers) serve it. UNMANAGED: hosts you start with barge agent join it."),
        f("state", "State", Kind::Select(STATES), &["state"], "ENABLED", ""),
        f("computeResourcesType", "Compute resources type", Kind::Select(&["EC2", "SPOT", "FARGATE", "FARGATE_SPOT"]), &["computeResources.type", "computeResources"], "EC2", "MANAGED only."),
        f("minvCpus", "Minimum vCPUs", Kind::Number, &["computeResources.minvCpus", "minvCpus"], "0", "MANAGED only."),
        f("desiredvCpus", "Desired vCPUs", Kind::Number, &["computeResources.desiredvCpus", "desiredvCpus"], "0", "MANAGED only."),
        f("maxvCpus", "Maximum vCPUs", Kind::Number, &["computeResources.maxvCpus", "maxvCpus"], "4", "MANAGED only: the most vCPUs its jobs may use at once."),
        f("instanceTypes", "Instance types", Kind::Text, &["computeResources.instanceTypes", "instanceTypes"], "", "MANAGED only; comma-separated, e.g. optimal."),
        f("unmanagedvCpus", "Unmanaged vCPUs", Kind::Number, &["unmanagedvCpus"], "", "UNMANAGED only; optional."),
    ],
};

const JOB_QUEUE: Spec = Spec {
    title: "Create job queue",
    operation: "createjobqueue",
    button: "Create job queue",
    fields: &[
        f(
            "jobQueueName",
            "Name",
            Kind::Text,
            &["jobQueueName"],
            "",
            "Letters, numbers, hyphens and underscores; up to 128.",
        ),
        f(
            "priority",
            "Priority",
            Kind::Number,
            &["priority"],
            "1",
            "Higher goes first where queues share compute environments.",
        ),
        f(
            "state",
            "State",
            Kind::Select(STATES),
            &["state"],
            "ENABLED",
            "",
        ),
        f(
            "computeEnvironments",
            "Compute environments",
            Kind::Suggest("compute-environments"),
            &["computeEnvironmentOrder", "computeEnvironment"],
            "",
            "Names in the order to try them, comma-separated.",
        ),
        f(
            "schedulingPolicyArn",
            "Scheduling policy ARN",
            Kind::Text,
            &["schedulingPolicyArn"],
            "",
            "Optional: makes it a fair-share queue.",
        ),
    ],
};

const JOB_DEFINITION: Spec = Spec {
    title: "Register job definition",
    operation: "registerjobdefinition",
    button: "Register job definition",
    fields: &[
        f(
            "jobDefinitionName",
            "Name",
            Kind::Text,
            &["jobDefinitionName"],
            "",
            "Registering a name again adds a revision.",
        ),
        f(
            "image",
            "Image",
            Kind::Text,
            &["containerProperties.image", "image"],
            "busybox",
            "The container image (the process runner runs the command on the host instead).",
        ),
        f(
            "command",
            "Command",
            Kind::Text,
            &["containerProperties.command", "command"],
            "",
            "As you would type it in a shell: words, 'single' and \"double\" quotes.",
        ),
        f(
            "vcpus",
            "vCPUs",
            Kind::Text,
            &["resourceRequirements VCPU", "VCPU", "vcpus"],
            "1",
            "",
        ),
        f(
            "memory",
            "Memory (MiB)",
            Kind::Text,
            &["resourceRequirements MEMORY", "MEMORY", "memory"],
            "512",
            "",
        ),
        f(
            "environment",
            "Environment",
            Kind::Lines,
            &["containerProperties.environment", "environment"],
            "",
            "One NAME=value per line.",
        ),
        f(
            "retryAttempts",
            "Attempts",
            Kind::Number,
            &["retryStrategy.attempts", "retryStrategy", "attempts"],
            "",
            "Optional: 1 to 10 attempts.",
        ),
        f(
            "timeoutSeconds",
            "Attempt timeout (seconds)",
            Kind::Number,
            &[
                "timeout.attemptDurationSeconds",
                "attemptDurationSeconds",
                "timeout",
            ],
            "",
            "Optional: at least 60.",
        ),
    ],
};

const SUBMIT_JOB: Spec = Spec {
    title: "Submit job",
    operation: "submitjob",
    button: "Submit job",
    fields: &[
        f("jobName", "Job name", Kind::Text, &["jobName"], "", ""),
        f(
            "jobQueue",
            "Job queue",
            Kind::Suggest("job-queues"),
            &["jobQueue"],
            "",
            "",
        ),
        f(
            "jobDefinition",
            "Job definition",
            Kind::Suggest("job-definitions"),
            &["jobDefinition"],
            "",
            "A name (latest ACTIVE revision), name:revision or ARN.",
        ),
        f(
            "command",
            "Command override",
            Kind::Text,
            &["containerOverrides.command", "command"],
            "",
            "Optional; shell-like words, as for the definition.",
        ),
        f(
            "environment",
            "Environment overrides",
            Kind::Lines,
            &["containerOverrides.environment", "environment"],
            "",
            "Optional; one NAME=value per line.",
        ),
        f(
            "arraySize",
            "Array size",
            Kind::Number,
            &["arrayProperties.size", "arrayProperties"],
            "",
            "Optional: 2 to the server's array size bound makes it an array job.",
        ),
        f(
            "dependsOn",
            "Depends on",
            Kind::Text,
            &["dependsOn"],
            "",
            "Optional: job ids, comma-separated.",
        ),
    ],
};

fn spec(kind: &str) -> Option<&'static Spec> {
    match kind {
        "compute-environment" => Some(&COMPUTE_ENVIRONMENT),
        "job-queue" => Some(&JOB_QUEUE),
        "job-definition" => Some(&JOB_DEFINITION),
        "job" => Some(&SUBMIT_JOB),
        _ => None,
    }
}

pub fn index(session: &Session) -> Response {
    let body = "<h1>Create</h1><ul class=\"create\">\
        <li><a href=\"/console/new/compute-environment\">Compute environment</a></li>\
        <li><a href=\"/console/new/job-queue\">Job queue</a></li>\
        <li><a href=\"/console/new/job-definition\">Job definition</a></li>\
        <li><a href=\"/console/new/job\">Job (submit)</a></li>\
        <li><a href=\"/console/new/schedule\">Schedule</a></li></ul>";
    Response::html(200, page("Create", Nav::Create, session, body))
}

pub fn show<B: Backend>(
    backend: &B,
    session: &Session,
    kind: &str,
    query: &BTreeMap<String, String>,
) -> Response {
    let Some(spec) = spec(kind) else {
        return super::message(404, session, "Not found", "There is no such form.");
    };
    let mut values: BTreeMap<String, String> = spec
        .fields
        .iter()
        .map(|f| (f.name.to_string(), f.default.to_string()))
        .collect();
    // Links may fill fields in (Submit a job to this queue).
    for f in spec.fields {
        if let Some(v) = query.get(f.name) {
            values.insert(f.name.to_string(), v.clone());
        }
    }
    if kind == "job" && values["jobQueue"].is_empty() {
        if let Some(v) = query.get("queue") {
            values.insert("jobQueue".into(), v.clone());
        }
    }
    if kind == "job-queue" && values["computeEnvironments"].is_empty() {
        let state = backend.snapshot();
        if let Some(first) = state.compute_environments.keys().next() {
            values.insert("computeEnvironments".into(), first.clone());
        }
    }
    render(backend, session, kind, spec, &values, None, 200)
}

fn render<B: Backend>(
    backend: &B,
    session: &Session,
    kind: &str,
    spec: &Spec,
    values: &BTreeMap<String, String>,
    error: Option<&str>,
    status: u16,
) -> Response {
    let members: Vec<(&str, &[&str])> = spec.fields.iter().map(|f| (f.name, f.members)).collect();
    let error_field = error.and_then(|e| field_of(e, &members));
    let mut body = format!(
        "<h1>{}</h1><form class=\"api-form\" method=\"post\" action=\"/console/new/{kind}\" novalidate>{}",
        esc(spec.title),
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
    fields_html(
        &mut body,
        &backend.snapshot(),
        spec.fields,
        values,
        error_field,
        error,
    );
    let _ = write!(
        body,
        "<button type=\"submit\" class=\"primary\">{}</button></form>",
        esc(spec.button)
    );
    Response::html(status, page(spec.title, nav_of(kind), session, &body))
}

/// The fields of a form, each with its label, its value (kept after an error), the API's
/// message when it is the field `error_field` names, and its help line.
pub(super) fn fields_html(
    body: &mut String,
    state: &State,
    fields: &[Field],
    values: &BTreeMap<String, String>,
    error_field: Option<&str>,
    error: Option<&str>,
) {
    for field in fields {
        let value = values.get(field.name).map(String::as_str).unwrap_or("");
        let id = format!("f-{}", field.name);
        let bad = error_field == Some(field.name);
        let _ = write!(
            body,
            "<div class=\"field{}\"><label for=\"{id}\">{}</label>",
            if bad { " has-error" } else { "" },
            esc(field.label)
        );
        match &field.kind {
            Kind::Text | Kind::Number => {
                let _ = write!(
                    body,
                    "<input type=\"text\" id=\"{id}\" name=\"{}\" value=\"{}\"{}>",
                    field.name,
                    esc(value),
                    if matches!(field.kind, Kind::Number) {
                        " inputmode=\"numeric\""
                    } else {
                        ""
                    }
                );
            }
            Kind::Select(options) => {
                let _ = write!(body, "<select id=\"{id}\" name=\"{}\">", field.name);
                for o in *options {
                    let _ = write!(
                        body,
                        "<option{}>{o}</option>",
                        if *o == value { " selected" } else { "" }
                    );
                }
                body.push_str("</select>");
            }
            Kind::Suggest(list) => {
                let _ = write!(
                    body,
                    "<input type=\"text\" id=\"{id}\" name=\"{}\" value=\"{}\" list=\"{list}\"><datalist id=\"{list}\">",
                    field.name,
                    esc(value)
                );
                let names = names_of(state, list);
                for n in names {
                    let _ = write!(body, "<option value=\"{}\">", esc(&n));
                }
                body.push_str("</datalist>");
            }
            Kind::Choose(list) => {
                let _ = write!(body, "<select id=\"{id}\" name=\"{}\">", field.name);
                let names = names_of(state, list);
                if !names.iter().any(|n| n == value) {
                    let _ = write!(
                        body,
                        "<option value=\"{0}\" selected>{0}</option>",
                        esc(value)
                    );
                }
                for n in names {
                    let _ = write!(
                        body,
                        "<option value=\"{0}\"{1}>{0}</option>",
                        esc(&n),
                        if n == value { " selected" } else { "" }
                    );
                }
                body.push_str("</select>");
            }
            Kind::Lines => {
                let _ = write!(
                    body,
                    "<textarea id=\"{id}\" name=\"{}\" rows=\"3\">{}</textarea>",
                    field.name,
                    esc(value)
                );
            }
        }
        if bad {
            let _ = write!(
                body,
                "<p class=\"error\" id=\"error-{}\">{}</p>",
                field.name,
                esc(error.unwrap_or(""))
            );
        }
        if !field.help.is_empty() {
            let _ = write!(body, "<p class=\"help\">{}</p>", esc(field.help));
        }
        body.push_str("</div>");
    }
}

/// Names from the state for a suggestion list or a select, bounded.
fn names_of(state: &State, list: &str) -> Vec<String> {
    match list {
        "job-queues" => state
            .job_queues
            .keys()
            .take(OVERVIEW_ROWS_MAX)
            .cloned()
            .collect(),
        "compute-environments" => state
            .compute_environments
            .keys()
            .take(OVERVIEW_ROWS_MAX)
            .cloned()
            .collect(),
        _ => {
            let mut names: Vec<String> = state
                .job_definitions
                .keys()
                .map(|(n, _)| n.clone())
                .take(OVERVIEW_ROWS_MAX * 4)
                .collect();
            names.dedup();
            names.truncate(OVERVIEW_ROWS_MAX);
            names
        }
    }
}

fn nav_of(kind: &str) -> Nav {
    if kind == "job" {
        Nav::Submit
    } else {
        Nav::Create
    }
}

pub async fn submit<B: Backend>(
    backend: &B,
    session: &Session,
    kind: &str,
    fields: &BTreeMap<String, String>,
) -> Response {
    let Some(spec) = spec(kind) else {
        return super::message(404, session, "Not found", "There is no such form.");
    };
    let values: BTreeMap<String, String> = spec
        .fields
        .iter()
        .map(|f| {
            (
                f.name.to_string(),
                fields.get(f.name).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let request = match request_of(kind, &values) {
        Ok(r) => r,
        Err(message) => return render(backend, session, kind, spec, &values, Some(&message), 400),
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    match answer_json(barge_api::batch_operation(backend, spec.operation, &body).await) {
        Ok(reply) => Response::redirect(match kind {
            "job" => format!(
                "/console/jobs/{}",
                url(reply["jobId"].as_str().unwrap_or(""))
            ),
            "job-queue" => format!("/console/queues/{}", url(&values["jobQueueName"])),
            "job-definition" => "/console/job-definitions".into(),
            _ => "/console".into(),
        }),
        Err(message) => render(backend, session, kind, spec, &values, Some(&message), 400),
    }
}

pub(super) fn text(v: &str) -> Option<Value> {
    let v = v.trim();
    (!v.is_empty()).then(|| Value::String(v.to_string()))
}

/// A whole number when it is one; other text goes as a string for the API to refuse.
pub(super) fn number(v: &str) -> Option<Value> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse::<i64>()
            .map_or_else(|_| Value::String(v.to_string()), Value::from),
    )
}

fn list(v: &str) -> Vec<String> {
    v.split([',', '\n', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `NAME=value` lines as AWS's [{name, value}] (a line without `=` is a name with no value,
/// which the API refuses if it must).
pub(super) fn environment(v: &str) -> Vec<Value> {
    v.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.split_once('=').unwrap_or((l, ""));
            json!({ "name": name.trim(), "value": value })
        })
        .collect()
}

pub(super) fn command(field: &str, v: &str) -> Result<Option<Vec<String>>, String> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    split_command(v)
        .map(Some)
        .ok_or_else(|| format!("{field}: a quote is not closed"))
}

fn put(map: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        map.insert(key.to_string(), v);
    }
}

/// The API request a form's values make.
fn request_of(kind: &str, v: &BTreeMap<String, String>) -> Result<Value, String> {
    let mut r = Map::new();
    match kind {
        "compute-environment" => {
            r.insert(
                "computeEnvironmentName".into(),
                json!(v["computeEnvironmentName"]),
            );
            r.insert("type".into(), json!(v["type"]));
            put(&mut r, "state", text(&v["state"]));
            if v["type"] == "UNMANAGED" {
                put(&mut r, "unmanagedvCpus", number(&v["unmanagedvCpus"]));
            } else {
                let mut c = Map::new();
                put(&mut c, "type", text(&v["computeResourcesType"]));
                put(&mut c, "minvCpus", number(&v["minvCpus"]));
                put(&mut c, "desiredvCpus", number(&v["desiredvCpus"]));
                put(&mut c, "maxvCpus", number(&v["maxvCpus"]));
                let types = list(&v["instanceTypes"]);
                if !types.is_empty() {
                    c.insert("instanceTypes".into(), json!(types));
                }
                r.insert("computeResources".into(), Value::Object(c));
            }
        }
        "job-queue" => {
            r.insert("jobQueueName".into(), json!(v["jobQueueName"]));
            put(&mut r, "priority", number(&v["priority"]));
            put(&mut r, "state", text(&v["state"]));
            let order: Vec<Value> = list(&v["computeEnvironments"])
                .into_iter()
                .enumerate()
                .map(|(i, ce)| json!({ "order": i + 1, "computeEnvironment": ce }))
                .collect();
            r.insert("computeEnvironmentOrder".into(), json!(order));
            put(
                &mut r,
                "schedulingPolicyArn",
                text(&v["schedulingPolicyArn"]),
            );
        }
        "job-definition" => {
            r.insert("jobDefinitionName".into(), json!(v["jobDefinitionName"]));
            r.insert("type".into(), json!("container"));
            let mut c = Map::new();
            put(&mut c, "image", text(&v["image"]));
            if let Some(cmd) = command("containerProperties.command", &v["command"])? {
                c.insert("command".into(), json!(cmd));
            }
            let mut req = Vec::new();
            if let Some(x) = text(&v["vcpus"]) {
                req.push(json!({ "type": "VCPU", "value": x }));
            }
            if let Some(x) = text(&v["memory"]) {
                req.push(json!({ "type": "MEMORY", "value": x }));
            }
            if !req.is_empty() {
                c.insert("resourceRequirements".into(), json!(req));
            }
            let env = environment(&v["environment"]);
            if !env.is_empty() {
                c.insert("environment".into(), json!(env));
            }
            r.insert("containerProperties".into(), Value::Object(c));
            if let Some(n) = number(&v["retryAttempts"]) {
                r.insert("retryStrategy".into(), json!({ "attempts": n }));
            }
            if let Some(n) = number(&v["timeoutSeconds"]) {
                r.insert("timeout".into(), json!({ "attemptDurationSeconds": n }));
            }
        }
        "job" => {
            r.insert("jobName".into(), json!(v["jobName"]));
            r.insert("jobQueue".into(), json!(v["jobQueue"].trim()));
            r.insert("jobDefinition".into(), json!(v["jobDefinition"].trim()));
            let mut o = Map::new();
            if let Some(cmd) = command("containerOverrides.command", &v["command"])? {
                o.insert("command".into(), json!(cmd));
            }
            let env = environment(&v["environment"]);
            if !env.is_empty() {
                o.insert("environment".into(), json!(env));
            }
            if !o.is_empty() {
                r.insert("containerOverrides".into(), Value::Object(o));
            }
            if let Some(n) = number(&v["arraySize"]) {
                r.insert("arrayProperties".into(), json!({ "size": n }));
            }
            let deps: Vec<Value> = list(&v["dependsOn"])
                .into_iter()
                .map(|id| json!({ "jobId": id }))
                .collect();
            if !deps.is_empty() {
                r.insert("dependsOn".into(), json!(deps));
            }
        }
        _ => {}
    }
    Ok(Value::Object(r))
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

    fn submit_form(m: &Memory, kind: &str, pairs: &[(&str, &str)]) -> Response {
        let fields = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        futures_lite(submit(m, &session(), kind, &fields))
    }

    #[test]
    fn the_api_message_goes_next_to_its_field_and_the_input_is_kept() {
        let m = Memory::new();
        let r = submit_form(
            &m,
            "compute-environment",
            &[
                ("computeEnvironmentName", "ce\"x"),
                ("type", "MANAGED"),
                ("computeResourcesType", "EC2"),
                ("maxvCpus", "lots"),
            ],
        );
        assert_eq!(r.status, 400);
        let html = String::from_utf8(r.body).unwrap();
        let at = html
            .find("id=\"error-maxvCpus\"")
            .expect("error next to maxvCpus");
        assert!(html[at..].contains("computeResources.maxvCpus"));
        assert!(html.contains("value=\"lots\""));
        assert!(html.contains("value=\"ce&quot;x\""), "kept and escaped");
        // A good one is created and leads to the overview.
        let r = submit_form(
            &m,
            "compute-environment",
            &[
                ("computeEnvironmentName", "ce"),
                ("type", "MANAGED"),
                ("computeResourcesType", "EC2"),
                ("maxvCpus", "4"),
            ],
        );
        assert_eq!(r.status, 303);
        assert!(m.snapshot().compute_environments.contains_key("ce"));
    }

    #[test]
    fn a_message_that_names_no_field_goes_on_top() {
        let m = Memory::new();
        let r = submit_form(
            &m,
            "job",
            &[
                ("jobName", "j"),
                ("jobQueue", "nowhere"),
                ("jobDefinition", "d"),
                ("command", "echo 'open"),
            ],
        );
        let html = String::from_utf8(r.body).unwrap();
        assert!(html.contains("id=\"error-command\""), "{html}");
        let r = submit_form(
            &m,
            "job",
            &[
                ("jobName", "j"),
                ("jobQueue", "nowhere"),
                ("jobDefinition", "d"),
            ],
        );
        let html = String::from_utf8(r.body).unwrap();
        assert_eq!(r.status, 400);
        assert!(html.contains("class=\"form-error\""), "{html}");
    }
}
