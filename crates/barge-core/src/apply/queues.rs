//! Job queues: create, update, delete, and the compute environment order rules.

use super::*;

pub(super) fn find_queue_name(state: &State, reference: &str) -> Result<String, CoreError> {
    name_from_reference(reference, ResourceKind::JobQueue)
        .filter(|n| state.job_queues.contains_key(*n))
        .map(str::to_string)
        .ok_or_else(|| CoreError::NotFound(format!("job queue {reference} does not exist")))
}

/// Resolves names or ARNs to environment names and checks AWS's rules for an order.
pub(super) fn resolve_order(
    state: &State,
    order: Vec<ComputeEnvironmentOrder>,
) -> Result<Vec<ComputeEnvironmentOrder>, CoreError> {
    if order.is_empty() || order.len() > QUEUE_COMPUTE_ENVIRONMENTS_MAX {
        return Err(CoreError::Invalid(format!(
            "computeEnvironmentOrder must list 1 to {QUEUE_COMPUTE_ENVIRONMENTS_MAX} compute environments, got {}",
            order.len()
        )));
    }
    let mut resolved = Vec::with_capacity(order.len());
    let mut fargate = Vec::new();
    for entry in order {
        let name = find_ce_name(state, &entry.compute_environment)?;
        if resolved
            .iter()
            .any(|o: &ComputeEnvironmentOrder| o.compute_environment == name)
        {
            return Err(CoreError::Invalid(format!(
                "computeEnvironmentOrder lists compute environment {name} twice"
            )));
        }
        if resolved
            .iter()
            .any(|o: &ComputeEnvironmentOrder| o.order == entry.order)
        {
            return Err(CoreError::Invalid(format!(
                "computeEnvironmentOrder uses order {} twice; each entry needs its own order",
                entry.order
            )));
        }
        let ce = &state.compute_environments[&name];
        fargate.push(
            ce.compute_resources
                .as_ref()
                .and_then(|r| r.kind.as_deref())
                .is_some_and(|k| k.starts_with("FARGATE")),
        );
        resolved.push(ComputeEnvironmentOrder {
            order: entry.order,
            compute_environment: name,
        });
    }
    if fargate.iter().any(|f| *f) && fargate.iter().any(|f| !*f) {
        return Err(CoreError::Invalid(
            "a job queue cannot mix EC2/SPOT and FARGATE compute environments".into(),
        ));
    }
    resolved.sort_by_key(|o| o.order);
    Ok(resolved)
}

pub(super) fn create_job_queue(
    state: &mut State,
    mut q: JobQueue,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if state.job_queues.contains_key(&q.name) {
        return Err(CoreError::Conflict(format!(
            "job queue {} already exists",
            q.name
        )));
    }
    if state.job_queues.len() >= JOB_QUEUES_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "Barge holds at most {JOB_QUEUES_MAX} job queues; delete one first"
        )));
    }
    q.scheduling_policy_arn =
        resolve_queue_policy(state, None, true, q.scheduling_policy_arn.as_deref())?;
    q.compute_environment_order =
        resolve_order(state, std::mem::take(&mut q.compute_environment_order))?;
    let name = q.name.clone();
    state.job_queues.insert(name.clone(), Arc::new(q));
    changes.dirty.push(Key::JobQueue(name.clone()));
    changes.schedule = true;
    Ok(Reply::JobQueue { name })
}

pub(super) fn update_job_queue(
    state: &mut State,
    u: JobQueueUpdate,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_queue_name(state, &u.reference)?;
    let mut q = (**state.job_queues.get(&name).expect("found above")).clone();
    let policy = resolve_queue_policy(
        state,
        q.scheduling_policy_arn.as_deref(),
        false,
        u.scheduling_policy_arn.as_deref(),
    )?;
    if policy != q.scheduling_policy_arn {
        // Usage so far accrued under the old policy's decay; book it before the switch.
        crate::fairshare::advance_usage(state, &name);
        q.scheduling_policy_arn = policy;
    }
    if let Some(s) = u.state {
        q.state = s;
    }
    if let Some(p) = u.priority {
        q.priority = p;
    }
    if let Some(actions) = u.job_state_time_limit_actions {
        q.job_state_time_limit_actions = actions;
    }
    if let Some(order) = u.compute_environment_order {
        q.compute_environment_order = resolve_order(state, order)?;
    }
    for (k, v) in u.other {
        q.other.insert(k, v);
    }
    state.job_queues.insert(name.clone(), Arc::new(q));
    changes.dirty.push(Key::JobQueue(name.clone()));
    changes.schedule = true;
    Ok(Reply::JobQueue { name })
}

pub(super) fn delete_job_queue(
    state: &mut State,
    reference: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_queue_name(state, reference)?;
    if state.job_queues[&name].state != ResourceState::Disabled {
        return Err(CoreError::Conflict(format!(
            "job queue {name} is ENABLED; disable it (update-job-queue --state DISABLED) before deleting it"
        )));
    }
    // AWS terminates a deleted queue's jobs: waiting ones fail now, live ones are stopped.
    let reason = "Job queue was deleted".to_string();
    for status in [
        JobStatus::Submitted,
        JobStatus::Pending,
        JobStatus::Runnable,
        JobStatus::Starting,
        JobStatus::Running,
    ] {
        let ids: Vec<String> = state
            .jobs_in(&name, status)
            .map(|s| s.iter().map(|(_, id)| id.clone()).collect())
            .unwrap_or_default();
        for id in ids {
            terminate_job(state, &id, reason.clone(), now, changes)?;
        }
    }
    state.job_queues.remove(&name);
    if state.share_usage.remove(&name).is_some() {
        changes.dirty.push(Key::ShareUsage(name.clone()));
    }
    changes.dirty.push(Key::JobQueue(name));
    Ok(Reply::Done)
}
