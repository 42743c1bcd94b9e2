//! Compute environments and job queues.

use std::sync::Arc;

use barge_core::arn::{name_from_reference, ResourceKind};
use barge_core::command::{ComputeEnvironmentUpdate, JobQueueUpdate};
use barge_core::limits::{
    DESCRIBE_PAGE_ITEMS_MAX, STATE_TIME_LIMIT_SECONDS_MAX, STATE_TIME_LIMIT_SECONDS_MIN,
};
use barge_core::model::*;
use barge_core::{Command, State};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::wire::*;
use crate::Backend;

const CE_TYPES: &[&str] = &["EC2", "SPOT", "FARGATE", "FARGATE_SPOT"];
const ALLOCATION_STRATEGIES: &[&str] = &[
    "BEST_FIT",
    "BEST_FIT_PROGRESSIVE",
    "SPOT_CAPACITY_OPTIMIZED",
    "SPOT_PRICE_CAPACITY_OPTIMIZED",
    "BEST_FIT_PROGRESSIVE_ORDERED",
    "SPOT_CAPACITY_OPTIMIZED_PRIORITIZED",
];

fn parse_state(field: &str, v: &Option<String>) -> Result<Option<ResourceState>, ApiError> {
    match v.as_deref() {
        None => Ok(None),
        Some("ENABLED") => Ok(Some(ResourceState::Enabled)),
        Some("DISABLED") => Ok(Some(ResourceState::Disabled)),
        Some(other) => Err(ApiError::client(format!(
            "{field} {other:?} is not one of ENABLED, DISABLED"
        ))),
    }
}

fn check_compute_resources(r: &ComputeResources, creating: bool) -> Result<(), ApiError> {
    if let Some(kind) = &r.kind {
        check_enum("computeResources.type", kind, CE_TYPES)?;
    } else if creating {
        return Err(ApiError::client(
            "Missing required member computeResources.type",
        ));
    }
    if creating && r.max_vcpus.is_none() {
        return Err(ApiError::client(
            "Missing required member computeResources.maxvCpus",
        ));
    }
    for (field, v) in [
        ("minvCpus", r.min_vcpus),
        ("maxvCpus", r.max_vcpus),
        ("desiredvCpus", r.desired_vcpus),
    ] {
        if let Some(v) = v {
            check_range(
                &format!("computeResources.{field}"),
                v,
                0,
                i64::from(i32::MAX),
            )?;
        }
    }
    if let Some(Value::String(s)) = r.other.get("allocationStrategy") {
        check_enum(
            "computeResources.allocationStrategy",
            s,
            ALLOCATION_STRATEGIES,
        )?;
    }
    if let Some(v) = r.other.get("bidPercentage") {
        match v.as_i64() {
            Some(p) => check_range("computeResources.bidPercentage", p, 0, 100)?,
            None => {
                return Err(ApiError::client(
                    "computeResources.bidPercentage must be an integer",
                ))
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateComputeEnvironmentInput {
    compute_environment_name: String,
    #[serde(rename = "type")]
    kind: String,
    state: Option<String>,
    #[serde(rename = "unmanagedvCpus")]
    unmanaged_vcpus: Option<i64>,
    compute_resources: Option<ComputeResources>,
    service_role: Option<String>,
    #[serde(default)]
    tags: Tags,
    eks_configuration: Option<Value>,
    context: Option<String>,
}

pub async fn create_compute_environment<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: CreateComputeEnvironmentInput = parse(body)?;
    check_name("computeEnvironmentName", &i.compute_environment_name)?;
    let kind = match check_enum("type", &i.kind, &["MANAGED", "UNMANAGED"])? {
        "MANAGED" => ComputeEnvironmentType::Managed,
        _ => ComputeEnvironmentType::Unmanaged,
    };
    if let Some(r) = &i.compute_resources {
        check_compute_resources(r, true)?;
    }
    check_tags("tags", &i.tags)?;
    if i.eks_configuration.is_some() {
        return Err(ApiError::client(
            "eksConfiguration is not supported: Barge runs jobs on its own agents, not on EKS",
        ));
    }
    let mut other = Map::new();
    if let Some(c) = i.context {
        other.insert("context".into(), Value::String(c));
    }
    let ce = ComputeEnvironment {
        name: i.compute_environment_name,
        uuid: b.new_id(),
        kind,
        state: parse_state("state", &i.state)?.unwrap_or(ResourceState::Enabled),
        compute_resources: i.compute_resources,
        unmanaged_vcpus: i.unmanaged_vcpus,
        service_role: i.service_role,
        update_policy: None,
        tags: i.tags,
        other,
    };
    let reply = b.execute(Command::CreateComputeEnvironment(ce)).await?;
    let barge_core::Reply::ComputeEnvironment { name } = reply else {
        return Err(ApiError::server(
            "unexpected reply to CreateComputeEnvironment",
        ));
    };
    let arn = b.snapshot().identity.compute_environment_arn(&name);
    Ok(json!({ "computeEnvironmentName": name, "computeEnvironmentArn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateComputeEnvironmentInput {
    compute_environment: String,
    state: Option<String>,
    #[serde(rename = "unmanagedvCpus")]
    unmanaged_vcpus: Option<i64>,
    compute_resources: Option<ComputeResources>,
    service_role: Option<String>,
    update_policy: Option<Value>,
}

pub async fn update_compute_environment<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: UpdateComputeEnvironmentInput = parse(body)?;
    non_empty("computeEnvironment", &i.compute_environment)?;
    let mut u = ComputeEnvironmentUpdate {
        reference: i.compute_environment,
        state: parse_state("state", &i.state)?,
        unmanaged_vcpus: i.unmanaged_vcpus,
        service_role: i.service_role,
        update_policy: i.update_policy,
        ..Default::default()
    };
    if let Some(r) = i.compute_resources {
        check_compute_resources(&r, false)?;
        if r.kind.is_some() {
            return Err(ApiError::client(
                "computeResources.type cannot be changed; create a new compute environment instead",
            ));
        }
        u.min_vcpus = r.min_vcpus;
        u.max_vcpus = r.max_vcpus;
        u.desired_vcpus = r.desired_vcpus;
        u.compute_resources_other = r.other;
    }
    let reply = b.execute(Command::UpdateComputeEnvironment(u)).await?;
    let barge_core::Reply::ComputeEnvironment { name } = reply else {
        return Err(ApiError::server(
            "unexpected reply to UpdateComputeEnvironment",
        ));
    };
    let arn = b.snapshot().identity.compute_environment_arn(&name);
    Ok(json!({ "computeEnvironmentName": name, "computeEnvironmentArn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteComputeEnvironmentInput {
    compute_environment: String,
}

pub async fn delete_compute_environment<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DeleteComputeEnvironmentInput = parse(body)?;
    non_empty("computeEnvironment", &i.compute_environment)?;
    b.execute(Command::DeleteComputeEnvironment {
        reference: i.compute_environment,
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeComputeEnvironmentsInput {
    compute_environments: Option<Vec<String>>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

pub fn render_compute_environment(state: &State, ce: &ComputeEnvironment) -> Value {
    let id = &state.identity;
    let mut v = json!({
        "computeEnvironmentName": ce.name,
        "computeEnvironmentArn": id.compute_environment_arn(&ce.name),
        "ecsClusterArn": id.ecs_cluster_arn(&ce.name),
        "tags": ce.tags,
        "type": ce.kind.as_str(),
        "state": ce.state.as_str(),
        "status": "VALID",
        "statusReason": "ComputeEnvironment Healthy",
        "computeResources": ce.compute_resources,
        "serviceRole": ce.service_role,
        "unmanagedvCpus": ce.unmanaged_vcpus,
        "updatePolicy": ce.update_policy,
        "uuid": ce.uuid,
        "containerOrchestrationType": "ECS",
    });
    merge_other(&mut v, &ce.other);
    compact(v)
}

/// Pages over names in order; the token is the first name of the next page.
fn page<'a, T: 'a>(
    items: impl Iterator<Item = (&'a String, T)>,
    token: Option<String>,
    size: usize,
) -> (Vec<T>, Option<String>) {
    let mut out = Vec::new();
    for (name, item) in items.filter(|(n, _)| token.as_ref().is_none_or(|t| *n >= t)) {
        if out.len() == size {
            return (out, Some(encode_token(name)));
        }
        out.push(item);
    }
    (out, None)
}

pub fn describe_compute_environments<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeComputeEnvironmentsInput = parse(body)?;
    let size = page_size(
        "maxResults",
        i.max_results,
        DESCRIBE_PAGE_ITEMS_MAX,
        DESCRIBE_PAGE_ITEMS_MAX,
    )?;
    let state = b.snapshot();
    let token = decode_token(&i.next_token)?;
    let wanted: Option<Vec<&str>> = match &i.compute_environments {
        Some(list) if !list.is_empty() => {
            if list.len() > DESCRIBE_PAGE_ITEMS_MAX {
                return Err(ApiError::client(format!(
                    "computeEnvironments lists {} entries; at most {DESCRIBE_PAGE_ITEMS_MAX} are allowed",
                    list.len()
                )));
            }
            Some(
                list.iter()
                    .filter_map(|r| name_from_reference(r, ResourceKind::ComputeEnvironment))
                    .collect(),
            )
        }
        _ => None,
    };
    let items = state
        .compute_environments
        .iter()
        .filter(|(n, _)| wanted.as_ref().is_none_or(|w| w.contains(&n.as_str())))
        .map(|(n, ce)| (n, render_compute_environment(&state, ce)));
    let (list, next) = page(items, token, size);
    Ok(compact(
        json!({ "computeEnvironments": list, "nextToken": next }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Job queues

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderInput {
    order: i64,
    compute_environment: String,
}

fn parse_order(list: Vec<OrderInput>) -> Result<Vec<ComputeEnvironmentOrder>, ApiError> {
    list.into_iter()
        .map(|o| {
            check_range(
                "computeEnvironmentOrder.order",
                o.order,
                0,
                i64::from(i32::MAX),
            )?;
            non_empty(
                "computeEnvironmentOrder.computeEnvironment",
                &o.compute_environment,
            )?;
            Ok(ComputeEnvironmentOrder {
                order: o.order,
                compute_environment: o.compute_environment,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateJobQueueInput {
    job_queue_name: String,
    state: Option<String>,
    scheduling_policy_arn: Option<String>,
    priority: i64,
    compute_environment_order: Option<Vec<OrderInput>>,
    service_environment_order: Option<Value>,
    job_queue_type: Option<String>,
    #[serde(default)]
    tags: Tags,
    job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
}

/// The statusReasons a jobStateTimeLimitAction may name (AWS).
const STATE_TIME_LIMIT_REASONS: &[&str] = &[
    "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
    "MISCONFIGURATION:EC2_INSTANCE_CONFIGURATION_UNSUPPORTED",
];

fn check_time_limit_actions(actions: &[JobStateTimeLimitAction]) -> Result<(), ApiError> {
    for (n, a) in actions.iter().enumerate() {
        let at = format!("jobStateTimeLimitActions[{n}]");
        check_enum(&format!("{at}.reason"), &a.reason, STATE_TIME_LIMIT_REASONS)?;
        check_enum(&format!("{at}.state"), &a.state, &["RUNNABLE"])?;
        check_range(
            &format!("{at}.maxTimeSeconds"),
            a.max_time_seconds,
            STATE_TIME_LIMIT_SECONDS_MIN,
            STATE_TIME_LIMIT_SECONDS_MAX,
        )?;
        if a.action == "TERMINATE" {
            return Err(ApiError::client(format!(
                "{at}.action TERMINATE applies only to SageMaker job queues; use CANCEL"
            )));
        }
        check_enum(&format!("{at}.action"), &a.action, &["CANCEL"])?;
    }
    Ok(())
}

const JOB_QUEUE_PRIORITY_MAX: i64 = i32::MAX as i64;

pub async fn create_job_queue<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: CreateJobQueueInput = parse(body)?;
    check_name("jobQueueName", &i.job_queue_name)?;
    check_range("priority", i.priority, 0, JOB_QUEUE_PRIORITY_MAX)?;
    check_tags("tags", &i.tags)?;
    if i.service_environment_order.is_some() {
        return Err(ApiError::client(
            "serviceEnvironmentOrder (SageMaker queues) is not supported by this version of Barge",
        ));
    }
    if let Some(t) = &i.job_queue_type {
        check_enum(
            "jobQueueType",
            t,
            &[
                "ECS",
                "ECS_FARGATE",
                "EKS",
                "SAGEMAKER_TRAINING",
                "ECS_MANAGED_INSTANCES",
            ],
        )?;
        if t == "EKS" || t == "SAGEMAKER_TRAINING" {
            return Err(ApiError::client(format!(
                "jobQueueType {t} is not supported by this version of Barge"
            )));
        }
    }
    let order = i
        .compute_environment_order
        .ok_or_else(|| ApiError::client("Missing required member computeEnvironmentOrder"))?;
    let mut other = Map::new();
    if let Some(t) = i.job_queue_type {
        other.insert("jobQueueType".into(), Value::String(t));
    }
    let actions = i.job_state_time_limit_actions.unwrap_or_default();
    check_time_limit_actions(&actions)?;
    let q = JobQueue {
        name: i.job_queue_name,
        state: parse_state("state", &i.state)?.unwrap_or(ResourceState::Enabled),
        priority: i.priority,
        compute_environment_order: parse_order(order)?,
        scheduling_policy_arn: i.scheduling_policy_arn,
        job_state_time_limit_actions: actions,
        tags: i.tags,
        other,
    };
    let reply = b.execute(Command::CreateJobQueue(q)).await?;
    let barge_core::Reply::JobQueue { name } = reply else {
        return Err(ApiError::server("unexpected reply to CreateJobQueue"));
    };
    let arn = b.snapshot().identity.job_queue_arn(&name);
    Ok(json!({ "jobQueueName": name, "jobQueueArn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateJobQueueInput {
    job_queue: String,
    state: Option<String>,
    scheduling_policy_arn: Option<String>,
    priority: Option<i64>,
    compute_environment_order: Option<Vec<OrderInput>>,
    service_environment_order: Option<Value>,
    job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
}

pub async fn update_job_queue<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: UpdateJobQueueInput = parse(body)?;
    non_empty("jobQueue", &i.job_queue)?;
    if let Some(p) = i.priority {
        check_range("priority", p, 0, JOB_QUEUE_PRIORITY_MAX)?;
    }
    if i.service_environment_order.is_some() {
        return Err(ApiError::client(
            "serviceEnvironmentOrder (SageMaker queues) is not supported by this version of Barge",
        ));
    }
    if let Some(actions) = &i.job_state_time_limit_actions {
        check_time_limit_actions(actions)?;
    }
    let u = JobQueueUpdate {
        reference: i.job_queue,
        state: parse_state("state", &i.state)?,
        priority: i.priority,
        compute_environment_order: i.compute_environment_order.map(parse_order).transpose()?,
        scheduling_policy_arn: i.scheduling_policy_arn,
        job_state_time_limit_actions: i.job_state_time_limit_actions,
        other: Map::new(),
    };
    let reply = b.execute(Command::UpdateJobQueue(u)).await?;
    let barge_core::Reply::JobQueue { name } = reply else {
        return Err(ApiError::server("unexpected reply to UpdateJobQueue"));
    };
    let arn = b.snapshot().identity.job_queue_arn(&name);
    Ok(json!({ "jobQueueName": name, "jobQueueArn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteJobQueueInput {
    job_queue: String,
}

pub async fn delete_job_queue<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DeleteJobQueueInput = parse(body)?;
    non_empty("jobQueue", &i.job_queue)?;
    b.execute(Command::DeleteJobQueue {
        reference: i.job_queue,
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeJobQueuesInput {
    job_queues: Option<Vec<String>>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

pub fn render_job_queue(state: &State, q: &JobQueue) -> Value {
    let id = &state.identity;
    let order: Vec<Value> = q
        .compute_environment_order
        .iter()
        .map(|o| json!({ "order": o.order, "computeEnvironment": id.compute_environment_arn(&o.compute_environment) }))
        .collect();
    let mut v = json!({
        "jobQueueName": q.name,
        "jobQueueArn": id.job_queue_arn(&q.name),
        "state": q.state.as_str(),
        "schedulingPolicyArn": q.scheduling_policy_arn,
        "status": "VALID",
        "statusReason": "JobQueue Healthy",
        "priority": q.priority,
        "computeEnvironmentOrder": order,
        "jobStateTimeLimitActions": (!q.job_state_time_limit_actions.is_empty())
            .then_some(&q.job_state_time_limit_actions),
        "tags": q.tags,
    });
    merge_other(&mut v, &q.other);
    compact(v)
}

pub fn describe_job_queues<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeJobQueuesInput = parse(body)?;
    let size = page_size(
        "maxResults",
        i.max_results,
        DESCRIBE_PAGE_ITEMS_MAX,
        DESCRIBE_PAGE_ITEMS_MAX,
    )?;
    let state: Arc<State> = b.snapshot();
    let token = decode_token(&i.next_token)?;
    let wanted: Option<Vec<&str>> = match &i.job_queues {
        Some(list) if !list.is_empty() => {
            if list.len() > DESCRIBE_PAGE_ITEMS_MAX {
                return Err(ApiError::client(format!(
                    "jobQueues lists {} entries; at most {DESCRIBE_PAGE_ITEMS_MAX} are allowed",
                    list.len()
                )));
            }
            Some(
                list.iter()
                    .filter_map(|r| name_from_reference(r, ResourceKind::JobQueue))
                    .collect(),
            )
        }
        _ => None,
    };
    let items = state
        .job_queues
        .iter()
        .filter(|(n, _)| wanted.as_ref().is_none_or(|w| w.contains(&n.as_str())))
        .map(|(n, q)| (n, render_job_queue(&state, q)));
    let (list, next) = page(items, token, size);
    Ok(compact(json!({ "jobQueues": list, "nextToken": next })))
}
