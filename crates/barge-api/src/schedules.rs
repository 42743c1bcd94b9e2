//! Barge's schedules API under `/barge/v1/schedules` (docs/schedules.md): create, list,
//! describe, update and delete schedules that submit jobs from a template.

use std::collections::BTreeMap;

use barge_core::command::ScheduleUpdate;
use barge_core::limits::*;
use barge_core::model::{ResourceState, Tags};
use barge_core::schedule::{JobTemplate, OverlapPolicy, Schedule, DEFAULT_TIME_ZONE};
use barge_core::{Command, State};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::jobs::{check_submit, SubmitInput};
use crate::wire::*;
use crate::{Answer, Backend};

/// Where the schedules API lives.
pub const PATH: &str = "/barge/v1/schedules";

/// Handles a request whose path starts with `PATH`: `rest` is what follows it ("" or
/// "/{name}"), `query` the raw query string.
pub async fn operation<B: Backend>(
    b: &B,
    method: &str,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Answer {
    Answer::from_result(route(b, method, rest, query, body).await)
}

async fn route<B: Backend>(
    b: &B,
    method: &str,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return match method {
            "POST" => create(b, body).await,
            "GET" => list(b, query),
            _ => Err(not_allowed(method, PATH)),
        };
    }
    let Some(raw) = rest.strip_prefix('/').filter(|r| !r.contains('/')) else {
        return Err(not_found_path(method, rest));
    };
    let name = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    match method {
        "GET" => describe(b, &name),
        "PUT" | "PATCH" => update(b, &name, body).await,
        "DELETE" => delete(b, &name).await,
        _ => Err(not_allowed(method, &format!("{PATH}/{{scheduleName}}"))),
    }
}

fn not_allowed(method: &str, path: &str) -> ApiError {
    ApiError {
        status: 405,
        code: "ClientException",
        message: format!("{method} is not an operation on {path}"),
    }
}

fn not_found_path(method: &str, rest: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "UnknownOperationException",
        message: format!("{method} {PATH}{rest} is not a schedules operation"),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "ClientException",
        message: format!("schedule {name} does not exist"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInput {
    schedule_name: String,
    schedule_expression: String,
    schedule_expression_timezone: Option<String>,
    description: Option<String>,
    state: Option<String>,
    overlap_policy: Option<String>,
    job_template: SubmitInput,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateInput {
    schedule_expression: Option<String>,
    schedule_expression_timezone: Option<String>,
    description: Option<String>,
    state: Option<String>,
    overlap_policy: Option<String>,
    job_template: Option<SubmitInput>,
    tags: Option<Tags>,
}

fn check_expression(e: &str) -> Result<(), ApiError> {
    non_empty("scheduleExpression", e)?;
    // The syntax itself is the core's to check (it parses it to compute fire times).
    if e.chars().count() > SCHEDULE_EXPRESSION_CHARS_MAX {
        return Err(ApiError::client(format!(
            "scheduleExpression is longer than {SCHEDULE_EXPRESSION_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > SCHEDULE_DESCRIPTION_CHARS_MAX {
        return Err(ApiError::client(format!(
            "description is longer than {SCHEDULE_DESCRIPTION_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

fn parse_state(s: &str) -> Result<ResourceState, ApiError> {
    match check_enum("state", s, &["ENABLED", "DISABLED"])? {
        "ENABLED" => Ok(ResourceState::Enabled),
        _ => Ok(ResourceState::Disabled),
    }
}

fn parse_overlap(s: &str) -> Result<OverlapPolicy, ApiError> {
    check_enum("overlapPolicy", s, &["ALLOW", "SKIP", "CANCEL_PREVIOUS"])?;
    Ok(OverlapPolicy::parse(s).expect("checked above"))
}

/// A job template, checked as SubmitJob checks its request; messages say it is the template.
fn check_template(i: SubmitInput) -> Result<JobTemplate, ApiError> {
    let in_template = |e: ApiError| ApiError::client(format!("jobTemplate: {}", e.message));
    let s = check_submit(i, String::new()).map_err(in_template)?;
    if !s.depends_on.is_empty() {
        return Err(ApiError::client(
            "jobTemplate.dependsOn is not supported: a scheduled run has no fixed jobs to depend on",
        ));
    }
    if s.tags.contains_key(SCHEDULE_TAG) {
        return Err(ApiError::client(format!(
            "jobTemplate.tags: the tag {SCHEDULE_TAG} is set by the schedule itself"
        )));
    }
    // The schedule adds its own tag to each job.
    if s.tags.len() >= TAGS_PER_RESOURCE_MAX {
        return Err(ApiError::client(format!(
            "jobTemplate.tags has {} tags; a template may have at most {} (the schedule adds {SCHEDULE_TAG})",
            s.tags.len(),
            TAGS_PER_RESOURCE_MAX - 1
        )));
    }
    Ok(JobTemplate::from_submit(&s))
}

async fn create<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: CreateInput = parse(body)?;
    check_name("scheduleName", &i.schedule_name)?;
    check_expression(&i.schedule_expression)?;
    if let Some(d) = &i.description {
        check_description(d)?;
    }
    let state = i.state.as_deref().map(parse_state).transpose()?;
    let overlap = i.overlap_policy.as_deref().map(parse_overlap).transpose()?;
    check_tags("tags", &i.tags)?;
    let template = check_template(i.job_template)?;
    let schedule = Schedule {
        name: i.schedule_name.clone(),
        arn: String::new(),
        description: i.description,
        expression: i.schedule_expression,
        time_zone: i
            .schedule_expression_timezone
            .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string()),
        state: state.unwrap_or(ResourceState::Enabled),
        overlap_policy: overlap.unwrap_or(OverlapPolicy::Allow),
        template,
        tags: i.tags,
        created_at: 0,
        updated_at: 0,
        anchor_ms: 0,
        next_fire_at: None,
        last_fired_at: None,
        last_job_id: None,
        active_job_ids: Vec::new(),
        fired: 0,
        skipped: 0,
        failed: 0,
        last_error: None,
    };
    let command = Command::CreateSchedule {
        schedule: Box::new(schedule),
        clock_ms: b.schedule_clock_ms(),
    };
    b.execute(command).await?;
    describe(b, &i.schedule_name)
}

async fn update<B: Backend>(b: &B, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    if !b.snapshot().schedules.contains_key(name) {
        return Err(not_found(name));
    }
    let i: UpdateInput = parse(body)?;
    if let Some(e) = &i.schedule_expression {
        check_expression(e)?;
    }
    if let Some(d) = &i.description {
        check_description(d)?;
    }
    if let Some(t) = &i.tags {
        check_tags("tags", t)?;
    }
    let update = ScheduleUpdate {
        name: name.to_string(),
        description: i.description,
        expression: i.schedule_expression,
        time_zone: i.schedule_expression_timezone,
        state: i.state.as_deref().map(parse_state).transpose()?,
        overlap_policy: i.overlap_policy.as_deref().map(parse_overlap).transpose()?,
        template: i.job_template.map(check_template).transpose()?,
        tags: i.tags,
    };
    let command = Command::UpdateSchedule {
        update: Box::new(update),
        clock_ms: b.schedule_clock_ms(),
    };
    b.execute(command).await?;
    describe(b, name)
}

async fn delete<B: Backend>(b: &B, name: &str) -> Result<Value, ApiError> {
    if !b.snapshot().schedules.contains_key(name) {
        return Err(not_found(name));
    }
    b.execute(Command::DeleteSchedule {
        name: name.to_string(),
    })
    .await?;
    Ok(json!({}))
}

fn describe<B: Backend>(b: &B, name: &str) -> Result<Value, ApiError> {
    let state = b.snapshot();
    let s = state.schedules.get(name).ok_or_else(|| not_found(name))?;
    Ok(render(&state, s))
}

/// A schedule as the API shows it. Times are epoch milliseconds, as AWS Batch's are.
pub fn render(state: &State, s: &Schedule) -> Value {
    // The stored list is pruned only when the schedule next fires; what is shown is the runs
    // that are still unfinished now.
    let active: Vec<&String> = s
        .active_job_ids
        .iter()
        .filter(|id| !barge_core::apply::schedules::finished(state, id))
        .collect();
    compact(json!({
        "scheduleName": s.name,
        "scheduleArn": s.arn,
        "description": s.description,
        "scheduleExpression": s.expression,
        "scheduleExpressionTimezone": s.time_zone,
        "state": s.state,
        "overlapPolicy": s.overlap_policy.as_str(),
        "jobTemplate": s.template,
        "tags": s.tags,
        "createdAt": s.created_at,
        "updatedAt": s.updated_at,
        "nextFireAt": s.next_fire_at,
        "lastFiredAt": s.last_fired_at,
        "lastJobId": s.last_job_id,
        "activeJobIds": active,
        "firedCount": s.fired,
        "skippedCount": s.skipped,
        "failedCount": s.failed,
        "lastError": s.last_error,
    }))
}

/// `GET /barge/v1/schedules?maxResults=N&nextToken=T`: schedules by name, a page at a time.
fn list<B: Backend>(b: &B, query: &str) -> Result<Value, ApiError> {
    let params = query_params(query);
    let max = match params.get("maxResults") {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            ApiError::client(format!("maxResults must be a whole number, got {v:?}"))
        })?),
    };
    let max = page_size("maxResults", max, SCHEDULES_PAGE_MAX, SCHEDULES_PAGE_MAX)?;
    let after = decode_token(&params.get("nextToken").cloned())?;
    let state = b.snapshot();
    let mut last_name = String::new();
    let mut page = Vec::new();
    let mut next = None;
    let range = match after {
        Some(a) => state
            .schedules
            .range::<_, String>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
        None => state.schedules.range::<_, String>(..),
    };
    for (name, s) in range {
        if page.len() == max {
            // The token is the last name shown; the next page starts after it.
            next = page.last().map(|_: &Value| encode_token(&last_name));
            break;
        }
        last_name = name.clone();
        page.push(render(&state, s));
    }
    Ok(compact(json!({ "schedules": page, "nextToken": next })))
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}
