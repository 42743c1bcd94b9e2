//! Jobs: submit, describe, list, cancel and terminate.

use std::collections::BTreeMap;

use barge_core::arn::{name_from_reference, ResourceKind};
use barge_core::arrays;
use barge_core::command::SubmitJob;
use barge_core::fairshare::check_share_identifier;
use barge_core::limits::*;
use barge_core::model::*;
use barge_core::multinode::{node_id, NodeOverrides};
use barge_core::reason::why_waiting;
use barge_core::{Command, Reply, State};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::definitions::{check_retry_strategy, check_timeout};
use crate::error::ApiError;
use crate::wire::*;
use crate::Backend;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubmitInput {
    job_name: String,
    job_queue: String,
    job_definition: String,
    share_identifier: Option<String>,
    scheduling_priority_override: Option<i64>,
    array_properties: Option<ArrayPropertiesInput>,
    #[serde(default)]
    depends_on: Vec<JobDependency>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    container_overrides: Option<ContainerOverrides>,
    node_overrides: Option<NodeOverrides>,
    retry_strategy: Option<RetryStrategy>,
    propagate_tags: Option<bool>,
    timeout: Option<JobTimeout>,
    #[serde(default)]
    tags: Tags,
    eks_properties_override: Option<Value>,
    ecs_properties_override: Option<Value>,
    consumable_resource_properties_override: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrayPropertiesInput {
    size: Option<i64>,
}

pub async fn submit<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: SubmitInput = parse(body)?;
    let s = check_submit(i, b.new_id())?;
    let Reply::Job { id, name } = b.execute(Command::SubmitJob(Box::new(s))).await? else {
        return Err(ApiError::server("unexpected reply to SubmitJob"));
    };
    let arn = b.snapshot().identity.job_arn(&id);
    Ok(json!({ "jobArn": arn, "jobName": name, "jobId": id }))
}

/// A SubmitJob request's checks of shapes and ranges (the core checks what depends on state).
/// Schedules check their job templates with it too.
pub(crate) fn check_submit(i: SubmitInput, job_id: String) -> Result<SubmitJob, ApiError> {
    check_job_name(&i.job_name)?;
    non_empty("jobQueue", &i.job_queue)?;
    non_empty("jobDefinition", &i.job_definition)?;
    if let Some(p) = i.scheduling_priority_override {
        check_range(
            "schedulingPriorityOverride",
            p,
            0,
            i64::from(SCHEDULING_PRIORITY_MAX),
        )?;
    }
    if let Some(r) = &i.retry_strategy {
        check_retry_strategy("retryStrategy", r)?;
    }
    if let Some(t) = &i.timeout {
        check_timeout("timeout", t)?;
    }
    check_tags("tags", &i.tags)?;
    // The bound itself is the operator's (barge up --array-size-max): the core checks it, and
    // refuses arrays of multi-node parallel jobs as AWS does.
    let array_size = i
        .array_properties
        .and_then(|a| a.size)
        .map(|n| u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX }));
    if array_size.is_some() && i.node_overrides.is_some() {
        return Err(ApiError::client(
            "arrayProperties cannot be used with a multi-node parallel job (nodeOverrides)",
        ));
    }
    if i.eks_properties_override.is_some() || i.ecs_properties_override.is_some() {
        return Err(ApiError::client(
            "eksPropertiesOverride and ecsPropertiesOverride are not supported by Barge",
        ));
    }
    if i.consumable_resource_properties_override.is_some() {
        return Err(ApiError::client(
            "consumableResourcePropertiesOverride is not supported by this version of Barge",
        ));
    }
    // Whether the queue wants one is the core's to say; the shape is checked here.
    if let Some(id) = &i.share_identifier {
        check_share_identifier("shareIdentifier", id).map_err(ApiError::client)?;
    }
    Ok(SubmitJob {
        job_id,
        name: i.job_name,
        queue: i.job_queue,
        definition: i.job_definition,
        parameters: i.parameters,
        container_overrides: i.container_overrides,
        node_overrides: i.node_overrides,
        retry_strategy: i.retry_strategy,
        timeout: i.timeout,
        propagate_tags: i.propagate_tags,
        tags: i.tags,
        depends_on: i.depends_on,
        share_identifier: i.share_identifier,
        scheduling_priority_override: i.scheduling_priority_override,
        array_size,
    })
}

/// The attempt whose container fields a job shows: the live one, else the last.
fn latest_attempt(job: &Job) -> Option<&Attempt> {
    job.current.as_ref().or(job.attempts.last())
}

fn status_reason(state: &State, job: &Job) -> Option<String> {
    job.status_reason
        .clone()
        .or_else(|| why_waiting(state, job))
}

fn render_attempt(state: &State, a: &Attempt) -> Value {
    json!({
        "container": {
            "containerInstanceArn": state.identity.container_instance_arn(&a.agent_id),
            "taskArn": state.identity.task_arn(&a.id),
            "exitCode": a.exit_code,
            "reason": a.reason,
            "logStreamName": a.log_stream_name,
            "networkInterfaces": [],
        },
        "startedAt": a.started_at,
        "stoppedAt": a.stopped_at,
        "statusReason": a.status_reason,
    })
}

/// AWS's JobDetail.
pub fn render_job_detail(state: &State, job: &Job) -> Value {
    let id = &state.identity;
    let mut container = serde_json::to_value(&job.container).expect("container serializes");
    if let (Value::Object(c), Some(a)) = (&mut container, latest_attempt(job)) {
        c.insert("exitCode".into(), json!(a.exit_code));
        c.insert("reason".into(), json!(a.reason));
        c.insert(
            "containerInstanceArn".into(),
            json!(id.container_instance_arn(&a.agent_id)),
        );
        c.insert("taskArn".into(), json!(id.task_arn(&a.id)));
        // AWS shows the log stream once the attempt runs.
        if a.started_at.is_some() || a.stopped_at.is_some() {
            c.insert("logStreamName".into(), json!(a.log_stream_name));
        }
        c.insert("networkInterfaces".into(), json!([]));
    }
    let attempts: Vec<Value> = job
        .attempts
        .iter()
        .map(|a| render_attempt(state, a))
        .collect();
    // A multi-node parent shows its nodes' properties instead of a container; a node says
    // where it stands in its job.
    let (container, node_properties) = match &job.multinode {
        Some(m) => (Value::Null, node_properties(m)),
        None => (container, Value::Null),
    };
    let node_details = job
        .node
        .as_ref()
        .map(|n| json!({ "nodeIndex": n.index, "isMainNode": n.is_main }));
    compact(json!({
        "jobArn": id.job_arn(&job.id),
        "jobName": job.name,
        "jobId": job.id,
        "jobQueue": id.job_queue_arn(&job.queue),
        "status": job.status.as_str(),
        "shareIdentifier": job.share_identifier,
        "schedulingPriority": job.scheduling_priority,
        "attempts": attempts,
        "statusReason": status_reason(state, job),
        "createdAt": job.created_at,
        "retryStrategy": job.retry_strategy,
        "startedAt": job.started_at,
        "stoppedAt": job.stopped_at,
        "dependsOn": job.depends_on,
        "jobDefinition": id.job_definition_arn(&job.definition_name, job.definition_revision),
        "parameters": job.parameters,
        "container": container,
        "nodeProperties": node_properties,
        "nodeDetails": node_details,
        "timeout": job.timeout,
        "tags": job.tags,
        "propagateTags": job.propagate_tags,
        "platformCapabilities": job.platform_capabilities,
        "isCancelled": job.is_cancelled,
        "isTerminated": job.is_terminated,
        "arrayProperties": array_properties(state, job, true),
    }))
}

/// AWS's NodeProperties of a submitted multi-node job: its effective size, main node and node
/// groups (nodeOverrides applied), each as a range with its container.
fn node_properties(m: &barge_core::multinode::MultiNodeJob) -> Value {
    let ranges: Vec<Value> = m
        .groups
        .iter()
        .map(|g| {
            json!({
                "targetNodes": format!("{}:{}", g.first, g.last),
                "container": g.container,
            })
        })
        .collect();
    json!({ "numNodes": m.num_nodes, "mainNode": m.main_node, "nodeRangeProperties": ranges })
}

/// AWS's NodePropertiesSummary: the size for a parent; index, size and role for a node.
fn node_summary(state: &State, job: &Job) -> Value {
    if let Some(m) = &job.multinode {
        return json!({ "numNodes": m.num_nodes });
    }
    let Some(n) = &job.node else {
        return Value::Null;
    };
    let num_nodes = state
        .job(&n.parent_id)
        .and_then(|p| p.multinode.as_ref())
        .map(|m| m.num_nodes);
    json!({ "isMainNode": n.is_main, "numNodes": num_nodes, "nodeIndex": n.index })
}

/// arrayProperties: the size and statusSummary on a parent, the index on a child.
fn array_properties(state: &State, job: &Job, detail: bool) -> Option<Value> {
    if let Some(child) = &job.array_child {
        return Some(json!({ "index": child.index }));
    }
    let array = job.array.as_ref()?;
    let summary: serde_json::Map<String, Value> = arrays::status_summary(state, job)
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let mut out = json!({ "size": array.size, "statusSummary": summary });
    if detail {
        let children = state.array_index(&job.id).map_or(0, |i| i.last_update_ms);
        let own = [Some(job.created_at), array.released_at, job.stopped_at];
        let latest = own.into_iter().flatten().chain([children]).max();
        out["statusSummaryLastUpdatedAt"] = json!(latest);
    }
    Some(out)
}

/// AWS's JobSummary (ListJobs).
fn render_job_summary(state: &State, job: &Job) -> Value {
    let id = &state.identity;
    let container = latest_attempt(job)
        .filter(|a| a.stopped_at.is_some())
        .map(|a| json!({ "exitCode": a.exit_code, "reason": a.reason }));
    compact(json!({
        "jobArn": id.job_arn(&job.id),
        "jobId": job.id,
        "jobName": job.name,
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "stoppedAt": job.stopped_at,
        "status": job.status.as_str(),
        "statusReason": status_reason(state, job),
        "container": container,
        "jobDefinition": id.job_definition_arn(&job.definition_name, job.definition_revision),
        "shareIdentifier": job.share_identifier,
        "nodeProperties": node_summary(state, job),
        "isCancelled": job.is_cancelled.then_some(true),
        "isTerminated": job.is_terminated.then_some(true),
        "arrayProperties": array_properties(state, job, false),
    }))
}

#[derive(Deserialize)]
struct DescribeInput {
    jobs: Vec<String>,
}

pub fn describe<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeInput = parse(body)?;
    if i.jobs.len() > DESCRIBE_JOBS_IDS_MAX {
        return Err(ApiError::client(format!(
            "jobs lists {} ids; DescribeJobs takes at most {DESCRIBE_JOBS_IDS_MAX}",
            i.jobs.len()
        )));
    }
    let state = b.snapshot();
    let jobs: Vec<Value> = i
        .jobs
        .iter()
        .filter_map(|r| name_from_reference(r, ResourceKind::Job))
        .filter_map(|id| arrays::job_view(&state, id))
        .map(|job| render_job_detail(&state, &job))
        .collect();
    Ok(json!({ "jobs": jobs }))
}

#[derive(Deserialize)]
struct ListFilter {
    name: String,
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    job_queue: Option<String>,
    array_job_id: Option<String>,
    multi_node_job_id: Option<String>,
    job_status: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    filters: Option<Vec<ListFilter>>,
}

enum Filter {
    Name {
        prefix: bool,
        value: String,
    },
    Definition {
        name: String,
        revision: Option<u32>,
    },
    /// `name*`: every definition whose name starts with the prefix.
    DefinitionPrefix(String),
    CreatedBefore(i64),
    CreatedAfter(i64),
    Share(String),
}

impl Filter {
    fn parse(f: &ListFilter) -> Result<Filter, ApiError> {
        let [value] = f.values.as_slice() else {
            return Err(ApiError::client(format!(
                "filters {} takes exactly one value, got {}",
                f.name,
                f.values.len()
            )));
        };
        let epoch = |v: &str| {
            v.parse::<i64>().map_err(|_| {
                ApiError::client(format!(
                    "filters {}: {v:?} is not a time in epoch milliseconds",
                    f.name
                ))
            })
        };
        match f.name.as_str() {
            "JOB_NAME" => Ok(match value.strip_suffix('*') {
                Some(p) => Filter::Name { prefix: true, value: p.to_lowercase() },
                None => Filter::Name { prefix: false, value: value.to_lowercase() },
            }),
            "JOB_DEFINITION" if value.ends_with('*') && !value.starts_with("arn:") => {
                Ok(Filter::DefinitionPrefix(value.trim_end_matches('*').to_string()))
            }
            "JOB_DEFINITION" => {
                let spec = name_from_reference(value, ResourceKind::JobDefinition).ok_or_else(|| {
                    ApiError::client(format!("filters JOB_DEFINITION: {value:?} is not a job definition name or ARN"))
                })?;
                Ok(match spec.rsplit_once(':') {
                    Some((n, r)) => Filter::Definition {
                        name: n.to_string(),
                        revision: Some(r.parse().map_err(|_| {
                            ApiError::client(format!("filters JOB_DEFINITION: revision {r:?} is not a number"))
                        })?),
                    },
                    None => Filter::Definition { name: spec.to_string(), revision: None },
                })
            }
            "BEFORE_CREATED_AT" => Ok(Filter::CreatedBefore(epoch(value)?)),
            "AFTER_CREATED_AT" => Ok(Filter::CreatedAfter(epoch(value)?)),
            "SHARE_IDENTIFIER" => Ok(Filter::Share(value.clone())),
            other => Err(ApiError::client(format!(
                "filters name {other:?} is not one of JOB_NAME, JOB_DEFINITION, BEFORE_CREATED_AT, AFTER_CREATED_AT, SHARE_IDENTIFIER"
            ))),
        }
    }

    fn keeps(&self, job: &Job) -> bool {
        match self {
            Filter::Name {
                prefix: true,
                value,
            } => job.name.to_lowercase().starts_with(value.as_str()),
            Filter::Name {
                prefix: false,
                value,
            } => job.name.to_lowercase() == *value,
            Filter::Definition { name, revision } => {
                job.definition_name == *name
                    && revision.is_none_or(|r| r == job.definition_revision)
            }
            Filter::DefinitionPrefix(p) => job.definition_name.starts_with(p.as_str()),
            Filter::CreatedBefore(t) => job.created_at < *t,
            Filter::CreatedAfter(t) => job.created_at > *t,
            Filter::Share(s) => job.share_identifier.as_deref() == Some(s.as_str()),
        }
    }
}

pub fn list<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: ListInput = parse(body)?;
    let targets = [
        i.job_queue.is_some(),
        i.array_job_id.is_some(),
        i.multi_node_job_id.is_some(),
    ];
    if targets.iter().filter(|t| **t).count() != 1 {
        return Err(ApiError::client(
            "Give exactly one of jobQueue, arrayJobId or multiNodeJobId",
        ));
    }
    let filters = i.filters.unwrap_or_default();
    if filters.len() > 1 {
        return Err(ApiError::client("filters takes one filter"));
    }
    let filter = filters.first().map(Filter::parse).transpose()?;
    let status = match &i.job_status {
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::client(format!(
                "jobStatus {s:?} is not one of SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED"
            ))
        })?),
        None => None,
    };
    let page_max = if filter.is_some() {
        LIST_JOBS_FILTERED_PAGE_ITEMS_MAX
    } else {
        LIST_JOBS_PAGE_ITEMS_MAX
    };
    let size = page_size("maxResults", i.max_results, page_max, page_max)?;
    // Tokens: "<seq>" or "<seq> <job id>" (queue listings), "<index>" (array children).
    let bad_token = || ApiError::client("nextToken is not a token this operation returned");
    let token = decode_token(&i.next_token)?;
    let (after, after_id): (Option<u64>, String) = match token.as_deref() {
        None => (None, String::new()),
        Some(t) => {
            let (seq, id) = t.split_once(' ').unwrap_or((t, ""));
            (Some(seq.parse().map_err(|_| bad_token())?), id.to_string())
        }
    };
    let state = b.snapshot();
    if let Some(parent) = &i.multi_node_job_id {
        return list_nodes(&state, parent, status, filter.as_ref(), size, after);
    }
    if let Some(parent_ref) = &i.array_job_id {
        let parent_id = name_from_reference(parent_ref, ResourceKind::Job).unwrap_or(parent_ref);
        let from = u32::try_from(after.unwrap_or(0)).map_err(|_| bad_token())?;
        return list_children(&state, parent_id, status, filter.as_ref(), from, size);
    }
    let Some(queue_ref) = i.job_queue else {
        // Exactly one of the three was given, checked above.
        return Ok(json!({ "jobSummaryList": [] }));
    };
    let queue = name_from_reference(&queue_ref, ResourceKind::JobQueue)
        .filter(|q| state.job_queues.contains_key(*q) || state.jobs_of_queue(q).is_some())
        .ok_or_else(|| ApiError::client(format!("job queue {queue_ref} does not exist")))?
        .to_string();
    let mut out = Vec::new();
    let mut next = None;
    match filter {
        // With a filter: every status (AWS: but SHARE_IDENTIFIER heeds jobStatus), newest
        // first; the token is the seq to continue below.
        Some(filter) => {
            let status = status.filter(|_| matches!(filter, Filter::Share(_)));
            let all = state.jobs_of_queue(&queue);
            for (seq, id) in all.into_iter().flat_map(|s| s.iter().rev()) {
                if after.is_some_and(|a| *seq > a) {
                    continue;
                }
                let job = &state.jobs[id];
                // AWS leaves multi-node jobs' nodes out of filtered listings.
                if job.node.is_some()
                    || !filter.keeps(job)
                    || status.is_some_and(|s| s != job.status)
                {
                    continue;
                }
                if out.len() == size {
                    next = Some(encode_token(&seq.to_string()));
                    break;
                }
                out.push(render_job_summary(&state, job));
            }
        }
        // By status (RUNNING when none is given), in submission order.
        None => {
            let status = status.unwrap_or(JobStatus::Running);
            let set = state.jobs_in(&queue, status);
            // Array children share their parent's seq, so the token names the job too.
            let start = (after.unwrap_or(0), after_id);
            for (seq, id) in set.into_iter().flat_map(|s| s.range(start.clone()..)) {
                if out.len() == size {
                    next = Some(encode_token(&format!("{seq} {id}")));
                    break;
                }
                out.push(render_job_summary(&state, &state.jobs[id]));
            }
        }
    }
    Ok(compact(json!({ "jobSummaryList": out, "nextToken": next })))
}

/// ListJobs(multiNodeJobId): the job's nodes in node order, by status (RUNNING when none is
/// given) or, with a filter, every status; the token is the next node index.
fn list_nodes(
    state: &State,
    reference: &str,
    status: Option<JobStatus>,
    filter: Option<&Filter>,
    size: usize,
    after: Option<u64>,
) -> Result<Value, ApiError> {
    let parent_id = name_from_reference(reference, ResourceKind::Job).unwrap_or(reference);
    let parent = state.job(parent_id).ok_or_else(|| {
        ApiError::client(format!("multiNodeJobId: job {reference} does not exist"))
    })?;
    let Some(m) = &parent.multinode else {
        return Err(ApiError::client(format!(
            "multiNodeJobId: job {reference} is not a multi-node parallel job"
        )));
    };
    let status = status.unwrap_or(JobStatus::Running);
    let mut out = Vec::new();
    let mut next = None;
    let start = after.unwrap_or(0).min(u64::from(m.num_nodes)) as u32;
    for index in start..m.num_nodes {
        // Nodes exist once the job's first gang is placed.
        let Some(node) = state.job(&node_id(&parent.id, index)) else {
            break;
        };
        let keep = match filter {
            Some(f) => f.keeps(node),
            None => node.status == status,
        };
        if !keep {
            continue;
        }
        if out.len() == size {
            next = Some(encode_token(&index.to_string()));
            break;
        }
        out.push(render_job_summary(state, node));
    }
    Ok(compact(json!({ "jobSummaryList": out, "nextToken": next })))
}

/// ListJobs(arrayJobId): the children in index order, born or not, with the status given (or
/// RUNNING). A page looks at no more than `ARRAY_LIST_SCAN_MAX` indexes, so it may come back
/// short with a nextToken.
fn list_children(
    state: &State,
    parent_id: &str,
    status: Option<JobStatus>,
    filter: Option<&Filter>,
    from: u32,
    size: usize,
) -> Result<Value, ApiError> {
    let parent = state
        .job(parent_id)
        .filter(|p| p.array.is_some())
        .ok_or_else(|| ApiError::client(format!("array job {parent_id} does not exist")))?;
    let array_size = parent.array.as_ref().map_or(0, |a| a.size);
    // AWS: without a status or filter, ListJobs lists RUNNING jobs.
    let status = match (status, filter) {
        (Some(s), _) => Some(s),
        (None, None) => Some(JobStatus::Running),
        (None, Some(_)) => None,
    };
    let born = state.array_index(parent_id);
    let mut out = Vec::new();
    let mut next = None;
    let end = from.saturating_add(ARRAY_LIST_SCAN_MAX).min(array_size);
    for index in from..end {
        let is_born = born.is_some_and(|b| b.born.contains(&index));
        // Unborn children all share one status: skip them cheaply when it is not wanted.
        if !is_born && status.is_some_and(|s| s != arrays::unborn_status_at(parent, index)) {
            continue;
        }
        let Some(child) = arrays::job_view(state, &arrays::child_id(parent_id, index)) else {
            continue;
        };
        if status.is_some_and(|s| s != child.status) || filter.is_some_and(|f| !f.keeps(&child)) {
            continue;
        }
        if out.len() == size {
            next = Some(index);
            break;
        }
        out.push(render_job_summary(state, &child));
    }
    if next.is_none() && end < array_size {
        next = Some(end);
    }
    Ok(compact(json!({
        "jobSummaryList": out,
        "nextToken": next.map(|n| encode_token(&n.to_string())),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelInput {
    job_id: String,
    reason: String,
}

pub async fn cancel<B: Backend>(b: &B, body: &[u8], terminate: bool) -> Result<Value, ApiError> {
    let i: CancelInput = parse(body)?;
    non_empty("jobId", &i.job_id)?;
    check_reason(&i.reason)?;
    let job_id = name_from_reference(&i.job_id, ResourceKind::Job)
        .unwrap_or(&i.job_id)
        .to_string();
    refuse_node(b, &job_id)?;
    let command = if terminate {
        Command::TerminateJob {
            job_id,
            reason: i.reason,
        }
    } else {
        Command::CancelJob {
            job_id,
            reason: i.reason,
        }
    };
    b.execute(command).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct CancelManyInput {
    jobs: Vec<String>,
    reason: String,
}

/// CancelJobs / TerminateJobs: each job as CancelJob / TerminateJob would treat it. Unknown ids
/// count as successful, as AWS documents; per-job errors come back inside the 200.
pub async fn cancel_many<B: Backend>(
    b: &B,
    body: &[u8],
    terminate: bool,
) -> Result<Value, ApiError> {
    let i: CancelManyInput = parse(body)?;
    if i.jobs.is_empty() || i.jobs.len() > BULK_JOBS_IDS_MAX {
        return Err(ApiError::client(format!(
            "jobs must list 1 to {BULK_JOBS_IDS_MAX} job ids, got {}",
            i.jobs.len()
        )));
    }
    check_reason(&i.reason)?;
    let mut successful = Vec::new();
    let mut errors = Vec::new();
    for reference in i.jobs {
        let job_id = name_from_reference(&reference, ResourceKind::Job)
            .unwrap_or(&reference)
            .to_string();
        // AWS counts an unknown id as successful: there is nothing left to stop.
        if arrays::job_view(&b.snapshot(), &job_id).is_none() {
            successful.push(reference);
            continue;
        }
        if let Err(e) = refuse_node(b, &job_id) {
            errors.push(json!({ "job": reference, "code": e.code, "message": e.message }));
            continue;
        }
        let reason = i.reason.clone();
        let command = if terminate {
            Command::TerminateJob { job_id, reason }
        } else {
            Command::CancelJob { job_id, reason }
        };
        match b.execute(command).await {
            Ok(_) => successful.push(reference),
            Err(e) => {
                errors.push(json!({ "job": reference, "code": e.code, "message": e.message }))
            }
        }
    }
    Ok(json!({ "successful": successful, "errors": errors }))
}

/// A node of a multi-node job is cancelled or terminated with its whole job, never alone.
fn refuse_node<B: Backend>(b: &B, job_id: &str) -> Result<(), ApiError> {
    match b.snapshot().job(job_id).and_then(|j| j.node.clone()) {
        Some(n) => Err(ApiError::client(format!(
            "jobId {job_id} is node {} of multi-node parallel job {}; cancel or terminate {} to stop all of its nodes",
            n.index, n.parent_id, n.parent_id
        ))),
        None => Ok(()),
    }
}

/// A cancel/terminate reason: it becomes the job's statusReason.
fn check_reason(reason: &str) -> Result<(), ApiError> {
    non_empty("reason", reason)?;
    if reason.chars().count() > REASON_CHARS_MAX {
        return Err(ApiError::client(format!(
            "reason is longer than {REASON_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInput {
    job_queue: String,
}

/// GetJobQueueSnapshot: the first RUNNABLE jobs of a queue, in the order the scheduler takes
/// them (submission order, or by share in a fair-share queue), each with the time it took its
/// place.
pub fn queue_snapshot<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: SnapshotInput = parse(body)?;
    non_empty("jobQueue", &i.job_queue)?;
    let state = b.snapshot();
    let queue = name_from_reference(&i.job_queue, ResourceKind::JobQueue)
        .filter(|q| state.job_queues.contains_key(*q))
        .ok_or_else(|| ApiError::client(format!("job queue {} does not exist", i.job_queue)))?;
    let queue = &state.job_queues[queue];
    let jobs: Vec<Value> =
        barge_core::scheduler::front_of_queue(&state, queue, QUEUE_SNAPSHOT_JOBS_MAX)
            .into_iter()
            .map(|(id, since)| {
                json!({
                    "jobArn": state.identity.job_arn(&id),
                    "earliestTimeAtPosition": since,
                })
            })
            .collect();
    Ok(json!({ "frontOfQueue": { "jobs": jobs, "lastUpdatedAt": b.now_ms() } }))
}
