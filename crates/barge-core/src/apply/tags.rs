//! Tags on any resource, by ARN.

use super::*;

pub(super) fn check_tags(tags: &Tags) -> Result<(), CoreError> {
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "a resource holds at most {TAGS_PER_RESOURCE_MAX} tags, this would make {}",
            tags.len()
        )));
    }
    if let Some(v) = tags.get(RUNNER_TAG) {
        if crate::agent::RunnerKind::parse(v).is_none() {
            return Err(CoreError::Invalid(format!(
                "tag {RUNNER_TAG} must be docker or process, not {v:?}"
            )));
        }
    }
    if let Some(v) = tags.get(STOP_GRACE_TAG) {
        if crate::state::parse_stop_grace_seconds(v).is_none() {
            return Err(CoreError::Invalid(format!(
                "tag {STOP_GRACE_TAG} must be a whole number of seconds from 0 to {STOP_GRACE_SECONDS_MAX}, not {v:?}"
            )));
        }
    }
    Ok(())
}

/// Runs `f` on the tags of the resource `arn` names and records the change.
pub(super) fn with_tags(
    state: &mut State,
    arn: &str,
    changes: &mut Changes,
    f: impl FnOnce(&mut Tags) -> Result<(), CoreError>,
) -> Result<Reply, CoreError> {
    let not_found = || CoreError::NotFound(format!("resource {arn} does not exist"));
    let (kind, rest) = parse_batch_arn(arn).ok_or_else(|| {
        CoreError::Invalid(format!(
            "resourceArn {arn} is not an AWS Batch resource ARN"
        ))
    })?;
    match kind {
        ResourceKind::ComputeEnvironment => {
            let ce = state
                .compute_environments
                .get_mut(rest)
                .ok_or_else(not_found)?;
            f(&mut Arc::make_mut(ce).tags)?;
            changes
                .dirty
                .push(Key::ComputeEnvironment(rest.to_string()));
        }
        ResourceKind::JobQueue => {
            let q = state.job_queues.get_mut(rest).ok_or_else(not_found)?;
            f(&mut Arc::make_mut(q).tags)?;
            changes.dirty.push(Key::JobQueue(rest.to_string()));
        }
        ResourceKind::JobDefinition => {
            let (name, rev) = rest.rsplit_once(':').ok_or_else(|| {
                CoreError::Invalid(format!(
                    "resourceArn {arn}: a job definition ARN needs its :revision"
                ))
            })?;
            let rev: u32 = rev.parse().map_err(|_| not_found())?;
            let d = state
                .job_definitions
                .get_mut(&(name.to_string(), rev))
                .ok_or_else(not_found)?;
            f(&mut Arc::make_mut(d).tags)?;
            changes
                .dirty
                .push(Key::JobDefinition(name.to_string(), rev));
        }
        ResourceKind::Job => {
            let mut job = find_job(state, rest).map_err(|_| not_found())?;
            f(&mut job.tags)?;
            state.put_job(job);
            changes.dirty.push(Key::Job(rest.to_string()));
        }
        ResourceKind::SchedulingPolicy => {
            let p = state
                .scheduling_policies
                .get_mut(rest)
                .ok_or_else(not_found)?;
            f(&mut Arc::make_mut(p).tags)?;
            changes.dirty.push(Key::SchedulingPolicy(rest.to_string()));
        }
    }
    Ok(Reply::Done)
}

pub(super) fn tag_resource(
    state: &mut State,
    arn: &str,
    tags: Tags,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let names_provider = tags.contains_key(PROVIDER_TAG);
    let reply = with_tags(state, arn, changes, |existing| {
        existing.extend(tags);
        check_tags(existing)
    })?;
    // A provider is checked against the environment it would scale (apply undoes the tagging
    // when this refuses it).
    if let Some((ResourceKind::ComputeEnvironment, name)) =
        parse_batch_arn(arn).filter(|_| names_provider)
    {
        if let Some(ce) = state.compute_environments.get(name) {
            crate::scaling::check_environment(&state.config.scaling, ce)?;
        }
    }
    Ok(reply)
}

pub(super) fn untag_resource(
    state: &mut State,
    arn: &str,
    keys: &[String],
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    with_tags(state, arn, changes, |existing| {
        for k in keys {
            existing.remove(k);
        }
        Ok(())
    })
}
