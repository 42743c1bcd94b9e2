//! Job definitions: register, deregister, describe.

use std::collections::BTreeMap;

use barge_core::arn::{name_from_reference, ResourceKind};
use barge_core::container::container_host;
use barge_core::limits::*;
use barge_core::model::*;
use barge_core::multinode::{check_node_properties, NodeProperties};
use barge_core::{Command, Reply, State};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::wire::*;
use crate::Backend;

/// Checks a retryStrategy as AWS does: attempts 1–10, at most 5 evaluateOnExit rules, each
/// with a RETRY or EXIT action and patterns of the allowed characters.
pub fn check_retry_strategy(field: &str, r: &RetryStrategy) -> Result<(), ApiError> {
    if let Some(a) = r.attempts {
        check_range(
            &format!("{field}.attempts"),
            i64::from(a),
            i64::from(RETRY_ATTEMPTS_MIN),
            i64::from(RETRY_ATTEMPTS_MAX),
        )?;
    }
    let rules = r.evaluate_on_exit.as_deref().unwrap_or_default();
    if !rules.is_empty() && r.attempts.is_none() {
        return Err(ApiError::client(format!(
            "{field}.evaluateOnExit needs {field}.attempts"
        )));
    }
    if rules.len() > EVALUATE_ON_EXIT_RULES_MAX {
        return Err(ApiError::client(format!(
            "{field}.evaluateOnExit has {} entries; at most {EVALUATE_ON_EXIT_RULES_MAX} are allowed",
            rules.len()
        )));
    }
    for (n, rule) in rules.iter().enumerate() {
        let at = format!("{field}.evaluateOnExit[{n}]");
        if !rule.action.eq_ignore_ascii_case("RETRY") && !rule.action.eq_ignore_ascii_case("EXIT") {
            return Err(ApiError::client(format!(
                "{at}.action {:?} is not one of RETRY, EXIT",
                rule.action
            )));
        }
        let patterns = [
            ("onExitCode", &rule.on_exit_code, true),
            ("onReason", &rule.on_reason, false),
            ("onStatusReason", &rule.on_status_reason, false),
        ];
        for (name, pattern, digits) in patterns {
            let Some(p) = pattern else { continue };
            if p.chars().count() > EVALUATE_ON_EXIT_PATTERN_CHARS_MAX {
                return Err(ApiError::client(format!(
                    "{at}.{name} is longer than {EVALUATE_ON_EXIT_PATTERN_CHARS_MAX} characters"
                )));
            }
            let body = p.strip_suffix('*').unwrap_or(p);
            let ok = if digits {
                body.chars().all(|c| c.is_ascii_digit())
            } else {
                body.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':' || c.is_whitespace())
            };
            if !ok {
                return Err(ApiError::client(format!(
                    "{at}.{name} {p:?} may contain only {} and end with an optional *",
                    if digits {
                        "digits"
                    } else {
                        "letters, digits, '.', ':' and spaces"
                    }
                )));
            }
        }
    }
    Ok(())
}

pub fn check_timeout(field: &str, t: &JobTimeout) -> Result<(), ApiError> {
    match t.attempt_duration_seconds {
        Some(s) if s < ATTEMPT_DURATION_SECONDS_MIN => Err(ApiError::client(format!(
            "{field}.attemptDurationSeconds must be at least {ATTEMPT_DURATION_SECONDS_MIN}, got {s}"
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterInput {
    job_definition_name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    scheduling_priority: Option<i64>,
    container_properties: Option<ContainerProperties>,
    node_properties: Option<NodeProperties>,
    retry_strategy: Option<RetryStrategy>,
    propagate_tags: Option<bool>,
    timeout: Option<JobTimeout>,
    #[serde(default)]
    tags: Tags,
    platform_capabilities: Option<Vec<String>>,
    eks_properties: Option<Value>,
    ecs_properties: Option<Value>,
    consumable_resource_properties: Option<Value>,
}

pub async fn register<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: RegisterInput = parse(body)?;
    check_name("jobDefinitionName", &i.job_definition_name)?;
    check_enum("type", &i.kind, &["container", "multinode"])?;
    if let Some(p) = i.scheduling_priority {
        check_range(
            "schedulingPriority",
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
    for p in i.platform_capabilities.iter().flatten() {
        check_enum(
            "platformCapabilities",
            p,
            &["EC2", "FARGATE", "MANAGED_INSTANCES"],
        )?;
    }
    if i.eks_properties.is_some() || i.ecs_properties.is_some() {
        return Err(ApiError::client(
            "eksProperties and ecsProperties are not supported by this version of Barge; use containerProperties",
        ));
    }
    if i.consumable_resource_properties.is_some() {
        return Err(ApiError::client(
            "consumableResourceProperties is not supported by this version of Barge",
        ));
    }
    match i.kind.as_str() {
        "container" => {
            let c = i.container_properties.as_ref().ok_or_else(|| {
                ApiError::client(
                    "containerProperties is required for a job definition of type container",
                )
            })?;
            if c.image.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::client(
                    "Missing required member containerProperties.image",
                ));
            }
            if i.node_properties.is_some() {
                return Err(ApiError::client(
                    "nodeProperties applies only to type multinode",
                ));
            }
            container_host("containerProperties", c).map_err(ApiError::client)?;
        }
        _ => {
            let Some(np) = &i.node_properties else {
                return Err(ApiError::client(
                    "nodeProperties is required for a job definition of type multinode",
                ));
            };
            if i.container_properties.is_some() {
                return Err(ApiError::client(
                    "containerProperties applies only to type container; use nodeProperties",
                ));
            }
            if i.platform_capabilities
                .iter()
                .flatten()
                .any(|p| p == "FARGATE")
            {
                return Err(ApiError::client(
                    "platformCapabilities FARGATE cannot run multi-node parallel jobs (type multinode); use EC2",
                ));
            }
            check_node_properties(np).map_err(ApiError::client)?;
            for (n, range) in np.node_range_properties.iter().enumerate() {
                if let Some(c) = &range.container {
                    let field = format!("nodeProperties.nodeRangeProperties[{n}].container");
                    container_host(&field, c).map_err(ApiError::client)?;
                }
            }
        }
    }
    let d = JobDefinition {
        name: i.job_definition_name,
        revision: 0,
        status: DefinitionStatus::Active,
        kind: i.kind,
        parameters: i.parameters,
        scheduling_priority: i.scheduling_priority,
        container_properties: i.container_properties,
        node_properties: i.node_properties,
        retry_strategy: i.retry_strategy,
        timeout: i.timeout,
        propagate_tags: i.propagate_tags,
        platform_capabilities: i.platform_capabilities,
        tags: i.tags,
        other: Map::new(),
    };
    let Reply::JobDefinition { name, revision } =
        b.execute(Command::RegisterJobDefinition(d)).await?
    else {
        return Err(ApiError::server(
            "unexpected reply to RegisterJobDefinition",
        ));
    };
    let arn = b.snapshot().identity.job_definition_arn(&name, revision);
    Ok(json!({ "jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeregisterInput {
    job_definition: String,
}

pub async fn deregister<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DeregisterInput = parse(body)?;
    non_empty("jobDefinition", &i.job_definition)?;
    b.execute(Command::DeregisterJobDefinition {
        reference: i.job_definition,
    })
    .await?;
    Ok(json!({}))
}

pub fn render_job_definition(state: &State, d: &JobDefinition) -> Value {
    let mut v = json!({
        "jobDefinitionName": d.name,
        "jobDefinitionArn": state.identity.job_definition_arn(&d.name, d.revision),
        "revision": d.revision,
        "status": d.status.as_str(),
        "type": d.kind,
        "schedulingPriority": d.scheduling_priority,
        "parameters": d.parameters,
        "retryStrategy": d.retry_strategy,
        "containerProperties": d.container_properties,
        "timeout": d.timeout,
        "nodeProperties": d.node_properties,
        "tags": d.tags,
        "propagateTags": d.propagate_tags,
        "platformCapabilities": d.platform_capabilities,
        "containerOrchestrationType": "ECS",
    });
    merge_other(&mut v, &d.other);
    compact(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    job_definitions: Option<Vec<String>>,
    max_results: Option<i64>,
    job_definition_name: Option<String>,
    status: Option<String>,
    next_token: Option<String>,
}

/// Which revisions a `jobDefinitions` entry names: `name:rev` or an ARN with revision is one;
/// a bare name (or ARN without revision) is every revision of it.
fn matches_reference(d: &JobDefinition, reference: &str) -> bool {
    let Some(spec) = name_from_reference(reference, ResourceKind::JobDefinition) else {
        return false;
    };
    match spec.rsplit_once(':') {
        Some((name, rev)) => name == d.name && rev.parse::<u32>().ok() == Some(d.revision),
        None => spec == d.name,
    }
}

pub fn describe<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeInput = parse(body)?;
    let size = page_size(
        "maxResults",
        i.max_results,
        DESCRIBE_PAGE_ITEMS_MAX,
        DESCRIBE_PAGE_ITEMS_MAX,
    )?;
    let refs = i.job_definitions.unwrap_or_default();
    if refs.len() > DESCRIBE_PAGE_ITEMS_MAX {
        return Err(ApiError::client(format!(
            "jobDefinitions lists {} entries; at most {DESCRIBE_PAGE_ITEMS_MAX} are allowed",
            refs.len()
        )));
    }
    if !refs.is_empty() && (i.job_definition_name.is_some() || i.status.is_some()) {
        return Err(ApiError::client(
            "jobDefinitions cannot be combined with jobDefinitionName or status",
        ));
    }
    if let Some(s) = &i.status {
        check_enum("status", s, &["ACTIVE", "INACTIVE"])?;
    }
    // Position: "name:revision" of the first item of the next page, ordered by (name, rev).
    let after: Option<(String, u32)> = decode_token(&i.next_token)?
        .map(|t| {
            t.rsplit_once(':')
                .and_then(|(n, r)| Some((n.to_string(), r.parse().ok()?)))
                .ok_or_else(|| ApiError::client("nextToken is not a token this operation returned"))
        })
        .transpose()?;
    let state = b.snapshot();
    let mut out = Vec::new();
    let mut next = None;
    for ((name, rev), d) in state.job_definitions.iter() {
        if after
            .as_ref()
            .is_some_and(|(an, ar)| (name, rev) < (an, ar))
        {
            continue;
        }
        let keep = if refs.is_empty() {
            i.job_definition_name.as_ref().is_none_or(|n| n == name)
                && i.status.as_ref().is_none_or(|s| s == d.status.as_str())
        } else {
            refs.iter().any(|r| matches_reference(d, r))
        };
        if !keep {
            continue;
        }
        if out.len() == size {
            next = Some(encode_token(&format!("{name}:{rev}")));
            break;
        }
        out.push(render_job_definition(&state, d));
    }
    Ok(compact(json!({ "jobDefinitions": out, "nextToken": next })))
}
