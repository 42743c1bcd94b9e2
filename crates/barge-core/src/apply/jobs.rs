//! Jobs: submit (overrides, parameters, dependencies), cancel and terminate.

use super::*;

/// Replaces `Ref::name` in each argument with the parameter's value. Longer names first, so
/// `Ref::ab` is not eaten by a parameter `a`. Unknown names stay literal, as moto and AWS do.
pub fn substitute_parameters(
    command: &[String],
    parameters: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut names: Vec<&String> = parameters.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    command
        .iter()
        .map(|arg| {
            if !arg.contains("Ref::") {
                return arg.clone();
            }
            let mut out = arg.clone();
            for name in &names {
                out = out.replace(&format!("Ref::{name}"), &parameters[*name]);
            }
            out
        })
        .collect()
}

/// The definition's container with submit-time overrides: command replaced, environment
/// merged by name, resourceRequirements replaced per type, deprecated vcpus/memory only where
/// the definition has no requirement of that type.
pub(super) fn effective_container(
    base: &ContainerProperties,
    overrides: Option<&ContainerOverrides>,
    parameters: &BTreeMap<String, String>,
) -> Result<ContainerProperties, CoreError> {
    let mut c = base.clone();
    if let Some(o) = overrides {
        check_environment(&o.environment, "containerOverrides.environment")?;
        check_requirements(&o.resource_requirements)?;
        if let Some(cmd) = &o.command {
            c.command = Some(cmd.clone());
        }
        if let Some(env) = &o.environment {
            c.environment = Some(merge_by(c.environment.take(), env, |e| e.name.clone()));
        }
        let has_req = |c: &ContainerProperties, kind: &str| {
            c.resource_requirements
                .iter()
                .flatten()
                .any(|r| r.kind == kind)
        };
        if let Some(v) = o.vcpus {
            if !has_req(&c, "VCPU") {
                c.vcpus = Some(v);
            }
        }
        if let Some(m) = o.memory {
            if !has_req(&c, "MEMORY") {
                c.memory = Some(m);
            }
        }
        if let Some(reqs) = &o.resource_requirements {
            c.resource_requirements = Some(merge_by(c.resource_requirements.take(), reqs, |r| {
                r.kind.clone()
            }));
        }
        if let Some(t) = &o.instance_type {
            c.other
                .insert("instanceType".into(), serde_json::Value::String(t.clone()));
        }
    }
    if let Some(cmd) = &c.command {
        c.command = Some(substitute_parameters(cmd, parameters));
    }
    Ok(c)
}

/// `base` with each of `overrides` replacing the entry of the same key, or appended.
fn merge_by<T: Clone, K: PartialEq>(
    base: Option<Vec<T>>,
    overrides: &[T],
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut merged = base.unwrap_or_default();
    for item in overrides {
        match merged.iter_mut().find(|e| key(e) == key(item)) {
            Some(existing) => *existing = item.clone(),
            None => merged.push(item.clone()),
        }
    }
    merged
}

pub(super) fn submit_job(
    state: &mut State,
    s: SubmitJob,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let queue_name = find_queue_name(state, &s.queue)?;
    if state.job_queues[&queue_name].state != ResourceState::Enabled {
        return Err(CoreError::Conflict(format!(
            "job queue {queue_name} is DISABLED and accepts no new jobs; enable it or submit to another queue"
        )));
    }
    crate::fairshare::check_submit(
        state,
        &state.job_queues[&queue_name],
        s.share_identifier.as_deref(),
    )?;
    let def = resolve_definition(state, &s.definition)?;
    if def.status != DefinitionStatus::Active {
        return Err(CoreError::Conflict(format!(
            "job definition {}:{} is INACTIVE; submit with an ACTIVE revision",
            def.name, def.revision
        )));
    }
    let mut parameters = def.parameters.clone();
    parameters.extend(s.parameters.clone());
    // A multi-node parent runs no container of its own: its nodes do (see apply::multinode).
    let (container, resources, multinode) = if def.kind == "multinode" {
        let m = multinode::job_nodes(&def, &s, &parameters)?;
        (
            ContainerProperties::default(),
            Resources::default(),
            Some(m),
        )
    } else {
        if s.node_overrides.is_some() {
            return Err(CoreError::Invalid(format!(
                "nodeOverrides applies only to multi-node parallel jobs, and job definition {}:{} has type {}",
                def.name, def.revision, def.kind
            )));
        }
        if def.kind != "container" {
            return Err(CoreError::Invalid(format!(
                "job definition {}:{} has type {}; Barge runs only type container and multinode jobs",
                def.name, def.revision, def.kind
            )));
        }
        let Some(base) = def.container_properties.as_ref() else {
            return Err(CoreError::Invalid(format!(
                "job definition {}:{} has no containerProperties; Barge runs only containerProperties jobs so far",
                def.name, def.revision
            )));
        };
        let container = effective_container(base, s.container_overrides.as_ref(), &parameters)?;
        let resources = resources_of(&container)?;
        (container, resources, None)
    };
    if state.jobs.contains_key(&s.job_id) {
        return Err(CoreError::Conflict(format!(
            "job {} already exists",
            s.job_id
        )));
    }
    if let Some(size) = s.array_size {
        if multinode.is_some() {
            return Err(CoreError::Invalid(
                "arrayProperties cannot be used with a multi-node parallel job definition".into(),
            ));
        }
        let max = state.config.array_size_max;
        if !(ARRAY_SIZE_MIN..=max).contains(&size) {
            return Err(CoreError::Invalid(format!(
                "arrayProperties.size must be between {ARRAY_SIZE_MIN} and {max}, not {size}{}",
                if size > max {
                    " (barge up --array-size-max raises the bound)"
                } else {
                    ""
                }
            )));
        }
    }
    let depends_on = check_depends_on(state, &s.job_id, s.depends_on, s.array_size)?;
    let array = s.array_size.map(|size| ArrayJob {
        size,
        released_at: None,
        sequential: depends_on
            .iter()
            .any(|d| d.kind.as_deref() == Some(dependencies::SEQUENTIAL) && d.job_id.is_none()),
        n_to_n: depends_on
            .iter()
            .filter(|d| d.kind.as_deref() == Some(dependencies::N_TO_N))
            .filter_map(|d| d.job_id.clone())
            .collect(),
        closed: None,
        closed_from: 0,
    });
    let job = Job {
        id: s.job_id.clone(),
        name: s.name.clone(),
        seq: state.next_job_seq,
        queue: queue_name,
        definition_name: def.name.clone(),
        definition_revision: def.revision,
        status: JobStatus::Submitted,
        status_reason: None,
        created_at: now,
        runnable_at: None,
        started_at: None,
        stopped_at: None,
        parameters,
        container,
        resources,
        retry_strategy: s.retry_strategy.or_else(|| def.retry_strategy.clone()),
        timeout: s.timeout.or_else(|| def.timeout.clone()),
        propagate_tags: s.propagate_tags.or(def.propagate_tags),
        platform_capabilities: def.platform_capabilities.clone(),
        scheduling_priority: s.scheduling_priority_override.or(def.scheduling_priority),
        share_identifier: s.share_identifier,
        depends_on,
        tags: s.tags,
        attempts: Vec::new(),
        current: None,
        is_cancelled: false,
        is_terminated: false,
        stop_reason: None,
        multinode,
        node: None,
        array,
        array_child: None,
    };
    state.put_job(job);
    changes.dirty.push(Key::Job(s.job_id.clone()));
    changes.schedule = true;
    Ok(Reply::Job {
        id: s.job_id,
        name: s.name,
    })
}

pub(super) fn find_job(state: &State, job_id: &str) -> Result<Job, CoreError> {
    state
        .job(job_id)
        .map(|j| (**j).clone())
        .ok_or_else(|| CoreError::NotFound(format!("job {job_id} does not exist")))
}

/// Cancel and terminate of an array parent (cascades to its children) or of a child not born
/// yet. None when `job_id` is neither, and the plain job rules apply.
fn stop_array_job(
    state: &mut State,
    job_id: &str,
    reason: String,
    terminate: bool,
    now: i64,
    changes: &mut Changes,
) -> Result<Option<Reply>, CoreError> {
    match state.job(job_id) {
        Some(job) if job.array.is_some() => {
            let stop = if terminate {
                arrays::Stop::Terminate
            } else {
                arrays::Stop::Cancel
            };
            arrays::close(state, job_id, reason, stop, now, changes);
            Ok(Some(Reply::Done))
        }
        Some(_) => Ok(None),
        None if arrays::parse_child_id(job_id).is_some() => {
            arrays::stop_unborn(state, job_id, reason, terminate, now, changes)?;
            Ok(Some(Reply::Done))
        }
        None => Ok(None),
    }
}

/// A job that never started ends FAILED with the caller's reason (cancel and terminate alike).
fn fail_before_start(job: &mut Job, reason: String) {
    job.status = JobStatus::Failed;
    job.status_reason = Some(reason);
}

pub(super) fn cancel_job(
    state: &mut State,
    job_id: &str,
    reason: String,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if let Some(done) = stop_array_job(state, job_id, reason.clone(), false, now, changes)? {
        return Ok(done);
    }
    let mut job = find_job(state, job_id)?;
    if let Some(n) = &job.node {
        // A node is stopped with its whole job (the API refuses to name one directly; queue
        // deletion reaches nodes too).
        let parent = n.parent_id.clone();
        return cancel_job(state, &parent, reason, now, changes);
    }
    // AWS: cancel stops only jobs that have not started; for the others it is a no-op.
    if job.status.is_before_start() {
        fail_before_start(&mut job, reason);
        job.is_cancelled = true;
        state.put_job(job);
        changes.dirty.push(Key::Job(job_id.to_string()));
    }
    Ok(Reply::Done)
}

pub(super) fn terminate_job(
    state: &mut State,
    job_id: &str,
    reason: String,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if let Some(done) = stop_array_job(state, job_id, reason.clone(), true, now, changes)? {
        return Ok(done);
    }
    let mut job = find_job(state, job_id)?;
    if let Some(n) = &job.node {
        let parent = n.parent_id.clone();
        return terminate_job(state, &parent, reason, now, changes);
    }
    if job.multinode.is_some() && matches!(job.status, JobStatus::Starting | JobStatus::Running) {
        if job.stop_reason.is_none() {
            job.is_terminated = true;
            state.put_job(job);
            changes.dirty.push(Key::Job(job_id.to_string()));
            multinode::stop_gang(state, job_id, reason, changes);
        }
        return Ok(Reply::Done);
    }
    match job.status {
        s if s.is_before_start() => {
            fail_before_start(&mut job, reason);
            job.is_terminated = true;
        }
        JobStatus::Starting | JobStatus::Running => {
            // The job fails when the agent reports the attempt's exit, so capacity is freed
            // only once the process tree is really gone.
            if job.stop_reason.is_some() {
                return Ok(Reply::Done);
            }
            let attempt = job
                .current
                .as_ref()
                .expect("a live job has a current attempt");
            changes.effects.push(Effect::Agent {
                agent_id: attempt.agent_id.clone(),
                instruction: AgentInstruction::Stop {
                    job_id: job.id.clone(),
                    attempt_id: attempt.id.clone(),
                    grace_ms: state.stop_grace_ms(&attempt.compute_environment),
                },
            });
            job.stop_reason = Some(reason);
            job.is_terminated = true;
        }
        _ => return Ok(Reply::Done),
    }
    state.put_job(job);
    changes.dirty.push(Key::Job(job_id.to_string()));
    Ok(Reply::Done)
}
