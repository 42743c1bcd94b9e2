//! Scheduling policies: create, update, delete. The fair-share rules themselves are in
//! `fairshare.rs`.

use super::*;
use crate::fairshare;

pub(super) fn find_policy_name(state: &State, reference: &str) -> Result<String, CoreError> {
    name_from_reference(reference, ResourceKind::SchedulingPolicy)
        .filter(|n| state.scheduling_policies.contains_key(*n))
        .map(str::to_string)
        .ok_or_else(|| CoreError::NotFound(format!("scheduling policy {reference} does not exist")))
}

/// The job queues that use a policy, by name.
fn queues_using(state: &State, name: &str) -> Vec<String> {
    let arn = state.identity.scheduling_policy_arn(name);
    state
        .job_queues
        .values()
        .filter(|q| q.scheduling_policy_arn.as_deref() == Some(arn.as_str()))
        .map(|q| q.name.clone())
        .collect()
}

fn check_fairshare(p: &Option<FairsharePolicy>) -> Result<(), CoreError> {
    match p {
        Some(p) => fairshare::check_policy(p).map_err(CoreError::Invalid),
        None => Ok(()),
    }
}

pub(super) fn create_scheduling_policy(
    state: &mut State,
    p: SchedulingPolicy,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if state.scheduling_policies.contains_key(&p.name) {
        return Err(CoreError::Conflict(format!(
            "scheduling policy {} already exists",
            p.name
        )));
    }
    if state.scheduling_policies.len() >= SCHEDULING_POLICIES_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "Barge holds at most {SCHEDULING_POLICIES_MAX} scheduling policies; delete one first"
        )));
    }
    check_fairshare(&p.fairshare_policy)?;
    check_tags(&p.tags)?;
    let name = p.name.clone();
    state.scheduling_policies.insert(name.clone(), Arc::new(p));
    changes.dirty.push(Key::SchedulingPolicy(name.clone()));
    Ok(Reply::SchedulingPolicy { name })
}

pub(super) fn update_scheduling_policy(
    state: &mut State,
    reference: &str,
    fairshare_policy: Option<FairsharePolicy>,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_policy_name(state, reference)?;
    let Some(new) = fairshare_policy else {
        return Ok(Reply::SchedulingPolicy { name });
    };
    fairshare::check_policy(&new).map_err(CoreError::Invalid)?;
    // Usage so far accrued under the old decay; book it before the rules change.
    for queue in queues_using(state, &name) {
        fairshare::advance_usage(state, &queue);
    }
    let mut p = (**state.scheduling_policies.get(&name).expect("found above")).clone();
    p.fairshare_policy = Some(new);
    state.scheduling_policies.insert(name.clone(), Arc::new(p));
    changes.dirty.push(Key::SchedulingPolicy(name.clone()));
    changes.schedule = true;
    Ok(Reply::SchedulingPolicy { name })
}

pub(super) fn delete_scheduling_policy(
    state: &mut State,
    reference: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_policy_name(state, reference)?;
    let users = queues_using(state, &name);
    if !users.is_empty() {
        return Err(CoreError::Conflict(format!(
            "scheduling policy {name} is used by job queue {}; a queue's policy can be replaced (update-job-queue --scheduling-policy-arn) but not removed, so delete those queues first",
            users.join(", ")
        )));
    }
    state.scheduling_policies.remove(&name);
    changes.dirty.push(Key::SchedulingPolicy(name));
    Ok(Reply::Done)
}

/// AWS's rules for a queue's schedulingPolicyArn: it names an existing policy (stored as its
/// ARN); a queue's policy can be replaced but never removed, and a FIFO queue (created without
/// one) never gains one.
pub(super) fn resolve_queue_policy(
    state: &State,
    current: Option<&str>,
    creating: bool,
    requested: Option<&str>,
) -> Result<Option<String>, CoreError> {
    let Some(requested) = requested else {
        return Ok(current.map(str::to_string));
    };
    if requested.is_empty() {
        return Err(CoreError::Invalid(
            "schedulingPolicyArn cannot be empty: a job queue's scheduling policy can be replaced but not removed".into(),
        ));
    }
    if !creating && current.is_none() {
        return Err(CoreError::Invalid(
            "schedulingPolicyArn: this job queue was created without a scheduling policy (FIFO) and cannot gain one; create a new job queue with --scheduling-policy-arn".into(),
        ));
    }
    let name = find_policy_name(state, requested).map_err(|_| {
        CoreError::NotFound(format!(
            "schedulingPolicyArn: scheduling policy {requested} does not exist"
        ))
    })?;
    Ok(Some(state.identity.scheduling_policy_arn(&name)))
}
