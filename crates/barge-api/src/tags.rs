//! ListTagsForResource, TagResource and UntagResource on any Barge resource ARN.

use barge_core::arn::{parse_batch_arn, ResourceKind};
use barge_core::model::Tags;
use barge_core::Command;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::*;
use crate::Backend;

pub fn list<B: Backend>(b: &B, arn: &str) -> Result<Value, ApiError> {
    let state = b.snapshot();
    let not_found = || ApiError::client(format!("resource {arn} does not exist"));
    let (kind, rest) = parse_batch_arn(arn).ok_or_else(|| {
        ApiError::client(format!(
            "resourceArn {arn} is not an AWS Batch resource ARN"
        ))
    })?;
    let tags: Tags = match kind {
        ResourceKind::ComputeEnvironment => state
            .compute_environments
            .get(rest)
            .ok_or_else(not_found)?
            .tags
            .clone(),
        ResourceKind::JobQueue => state
            .job_queues
            .get(rest)
            .ok_or_else(not_found)?
            .tags
            .clone(),
        ResourceKind::JobDefinition => {
            let (name, rev) = rest.rsplit_once(':').ok_or_else(not_found)?;
            let rev: u32 = rev.parse().map_err(|_| not_found())?;
            state
                .job_definitions
                .get(&(name.to_string(), rev))
                .ok_or_else(not_found)?
                .tags
                .clone()
        }
        ResourceKind::Job => state.job(rest).ok_or_else(not_found)?.tags.clone(),
        ResourceKind::SchedulingPolicy => state
            .scheduling_policies
            .get(rest)
            .ok_or_else(not_found)?
            .tags
            .clone(),
    };
    Ok(json!({ "tags": tags }))
}

#[derive(Deserialize)]
struct TagInput {
    tags: Tags,
}

pub async fn tag<B: Backend>(b: &B, arn: &str, body: &[u8]) -> Result<Value, ApiError> {
    let i: TagInput = parse(body)?;
    if i.tags.is_empty() {
        return Err(ApiError::client("tags must hold at least one tag"));
    }
    check_tags("tags", &i.tags)?;
    b.execute(Command::TagResource {
        arn: arn.to_string(),
        tags: i.tags,
    })
    .await?;
    Ok(json!({}))
}

pub async fn untag<B: Backend>(b: &B, arn: &str, keys: Vec<String>) -> Result<Value, ApiError> {
    if keys.is_empty() || keys.len() > barge_core::limits::TAGS_PER_RESOURCE_MAX {
        return Err(ApiError::client(format!(
            "tagKeys must list 1 to {} keys, got {}",
            barge_core::limits::TAGS_PER_RESOURCE_MAX,
            keys.len()
        )));
    }
    b.execute(Command::UntagResource {
        arn: arn.to_string(),
        keys,
    })
    .await?;
    Ok(json!({}))
}
