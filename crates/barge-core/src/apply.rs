//! The one place state changes: `apply(state, command, now)`. Each command either applies
//! whole or not at all (the state is restored on error; clones are O(1)).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::agent::{AgentInstruction, AgentReport, AttemptSpec, LogLine};
use crate::arn::{name_from_reference, parse_batch_arn, ResourceKind};
use crate::command::*;
use crate::dependencies::{
    self, check_depends_on, dependencies, Dependencies, REASON_DEPENDENCY_FAILED,
};
use crate::limits::*;
use crate::model::*;
use crate::resources::{agent_has_room, ce_has_room, check_requirements, resources_of};
use crate::state::State;

/// The statusReason AWS gives a job whose container exited on its own.
pub const REASON_CONTAINER_EXITED: &str = "Essential container in task exited";

/// The statusReason AWS gives a job stopped by its timeout.
pub const REASON_TIMEOUT: &str = "Job attempt duration exceeded timeout";

/// The statusReason AWS gives attempts on a host that went away.
pub fn host_terminated_reason(agent_id: &str) -> String {
    format!("Host EC2 (instance {agent_id}) terminated.")
}

/// Applies one command. On error nothing in `state` or `changes` is touched.
pub fn apply(
    state: &mut State,
    command: Command,
    now_ms: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let before = state.clone();
    let mark = changes.mark();
    let result = apply_inner(state, command, now_ms, changes);
    if result.is_ok() {
        dependencies::settle(state, now_ms, changes);
    }
    if result.is_err() {
        *state = before;
        changes.rollback(mark);
    }
    result
}

fn apply_inner(
    state: &mut State,
    command: Command,
    now: i64,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    match command {
        Command::CreateComputeEnvironment(ce) => create_compute_environment(state, ce, changes),
        Command::UpdateComputeEnvironment(u) => update_compute_environment(state, u, changes),
        Command::DeleteComputeEnvironment { reference } => {
            delete_compute_environment(state, &reference, changes)
        }
        Command::CreateJobQueue(q) => create_job_queue(state, q, changes),
        Command::UpdateJobQueue(u) => update_job_queue(state, u, changes),
        Command::DeleteJobQueue { reference } => delete_job_queue(state, &reference, changes),
        Command::RegisterJobDefinition(d) => register_job_definition(state, d, changes),
        Command::DeregisterJobDefinition { reference } => {
            deregister_job_definition(state, &reference, changes)
        }
        Command::SubmitJob(s) => submit_job(state, *s, now, changes),
        Command::CancelJob { job_id, reason } => cancel_job(state, &job_id, reason, changes),
        Command::TerminateJob { job_id, reason } => terminate_job(state, &job_id, reason, changes),
        Command::TagResource { arn, tags } => tag_resource(state, &arn, tags, changes),
        Command::UntagResource { arn, keys } => untag_resource(state, &arn, &keys, changes),
        Command::RegisterAgent {
            id,
            vcpus_milli,
            memory_mib,
            scope,
        } => {
            let (used_vcpus_milli, used_memory_mib) = state
                .agents
                .get(&id)
                .map_or((0, 0), |a| (a.used_vcpus_milli, a.used_memory_mib));
            let agent = Agent {
                id: id.clone(),
                vcpus_milli,
                memory_mib,
                scope,
                used_vcpus_milli,
                used_memory_mib,
            };
            state.agents.insert(id, Arc::new(agent));
            changes.schedule = true;
            Ok(Reply::Done)
        }
        Command::AgentLost { id } => {
            state.agents.remove(&id);
            fail_orphans(state, now, changes);
            Ok(Reply::Done)
        }
        Command::FailOrphans => {
            fail_orphans(state, now, changes);
            Ok(Reply::Done)
        }
        Command::AgentReports { agent_id, reports } => {
            let mut refused = 0;
            for report in reports {
                if !apply_report(state, &agent_id, report, now, changes) {
                    refused += 1;
                }
            }
            Ok(Reply::Reports { refused })
        }
        Command::SchedulerPass(plan) => Ok(scheduler_pass(state, plan, now, changes)),
        Command::EnforceStateTimeLimits => {
            for (id, reason) in due_state_time_limits(state, now) {
                let mut job = (**state.job(&id).expect("due jobs exist")).clone();
                job.status = JobStatus::Failed;
                job.is_cancelled = true;
                job.status_reason = Some(format!(
                    "Canceled by JobStateTimeLimit action due to reason: {reason}"
                ));
                state.put_job(job);
                changes.dirty.push(Key::Job(id));
            }
            Ok(Reply::Done)
        }
        Command::EnforceTimeouts => {
            for id in due_timeouts(state, now) {
                let mut job = (**state.job(&id).expect("due jobs exist")).clone();
                let attempt = job.current.as_ref().expect("a RUNNING job has an attempt");
                changes.effects.push(Effect::Agent {
                    agent_id: attempt.agent_id.clone(),
                    instruction: AgentInstruction::Stop {
                        job_id: id.clone(),
                        attempt_id: attempt.id.clone(),
                        grace_ms: STOP_GRACE_MS,
                    },
                });
                job.stop_reason = Some(REASON_TIMEOUT.to_string());
                state.put_job(job);
                changes.dirty.push(Key::Job(id));
            }
            Ok(Reply::Done)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compute environments

fn find_ce_name(state: &State, reference: &str) -> Result<String, CoreError> {
    name_from_reference(reference, ResourceKind::ComputeEnvironment)
        .filter(|n| state.compute_environments.contains_key(*n))
        .map(str::to_string)
        .ok_or_else(|| {
            CoreError::NotFound(format!("compute environment {reference} does not exist"))
        })
}

fn check_vcpu_bounds(min: i64, max: i64, desired: i64) -> Result<(), CoreError> {
    if min < 0 || max < 0 || desired < 0 {
        return Err(CoreError::Invalid(
            "minvCpus, maxvCpus and desiredvCpus must not be negative".into(),
        ));
    }
    if min > max {
        return Err(CoreError::Invalid(format!(
            "minvCpus ({min}) must not be greater than maxvCpus ({max})"
        )));
    }
    if desired < min || desired > max {
        return Err(CoreError::Invalid(format!(
            "desiredvCpus ({desired}) must lie between minvCpus ({min}) and maxvCpus ({max})"
        )));
    }
    Ok(())
}

fn create_compute_environment(
    state: &mut State,
    mut ce: ComputeEnvironment,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if state.compute_environments.contains_key(&ce.name) {
        return Err(CoreError::Conflict(format!(
            "compute environment {} already exists",
            ce.name
        )));
    }
    if state.compute_environments.len() >= COMPUTE_ENVIRONMENTS_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "Barge holds at most {COMPUTE_ENVIRONMENTS_MAX} compute environments; delete one first"
        )));
    }
    match ce.kind {
        ComputeEnvironmentType::Managed => {
            let Some(res) = ce.compute_resources.as_mut() else {
                return Err(CoreError::Invalid(
                    "computeResources is required for a MANAGED compute environment".into(),
                ));
            };
            if ce.unmanaged_vcpus.is_some() {
                return Err(CoreError::Invalid(
                    "unmanagedvCpus applies only to UNMANAGED compute environments".into(),
                ));
            }
            let max = res.max_vcpus.ok_or_else(|| {
                CoreError::Invalid("computeResources.maxvCpus is required".into())
            })?;
            let min = res.min_vcpus.unwrap_or(0);
            let desired = res.desired_vcpus.unwrap_or(min);
            check_vcpu_bounds(min, max, desired)?;
            let fargate = res
                .kind
                .as_deref()
                .is_some_and(|k| k.starts_with("FARGATE"));
            if !fargate {
                res.min_vcpus = Some(min);
                res.desired_vcpus = Some(desired);
            }
        }
        ComputeEnvironmentType::Unmanaged => {
            if ce.compute_resources.is_some() {
                return Err(CoreError::Invalid(
                    "computeResources applies only to MANAGED compute environments; an UNMANAGED one gets its capacity from the agents that join it".into(),
                ));
            }
            if ce.unmanaged_vcpus.is_some_and(|v| v < 0) {
                return Err(CoreError::Invalid(
                    "unmanagedvCpus must not be negative".into(),
                ));
            }
        }
    }
    let name = ce.name.clone();
    state
        .compute_environments
        .insert(name.clone(), Arc::new(ce));
    changes.dirty.push(Key::ComputeEnvironment(name.clone()));
    changes.schedule = true;
    Ok(Reply::ComputeEnvironment { name })
}

fn update_compute_environment(
    state: &mut State,
    u: ComputeEnvironmentUpdate,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_ce_name(state, &u.reference)?;
    let mut ce = (**state.compute_environments.get(&name).expect("found above")).clone();
    if let Some(s) = u.state {
        ce.state = s;
    }
    let touches_resources = u.min_vcpus.is_some()
        || u.max_vcpus.is_some()
        || u.desired_vcpus.is_some()
        || !u.compute_resources_other.is_empty();
    if touches_resources {
        let Some(res) = ce.compute_resources.as_mut() else {
            return Err(CoreError::Invalid(format!(
                "compute environment {name} is UNMANAGED and has no computeResources to update"
            )));
        };
        if res
            .kind
            .as_deref()
            .is_some_and(|k| k.starts_with("FARGATE"))
            && u.desired_vcpus.is_some()
        {
            return Err(CoreError::Invalid(
                "desiredvCpus cannot be set on a Fargate compute environment".into(),
            ));
        }
        let min = u.min_vcpus.or(res.min_vcpus).unwrap_or(0);
        let max = u.max_vcpus.or(res.max_vcpus).unwrap_or(0);
        let current_desired = res.desired_vcpus.unwrap_or(min);
        let desired = match u.desired_vcpus {
            Some(d) => {
                if d < current_desired {
                    return Err(CoreError::Invalid(format!(
                        "desiredvCpus cannot be decreased (current {current_desired}, requested {d}); AWS Batch lowers it itself as demand falls"
                    )));
                }
                d
            }
            None => current_desired.clamp(min.min(max), max.max(min)),
        };
        check_vcpu_bounds(min, max, desired)?;
        if res.min_vcpus.is_some() || u.min_vcpus.is_some() {
            res.min_vcpus = Some(min);
        }
        res.max_vcpus = Some(max);
        if res.desired_vcpus.is_some() || u.desired_vcpus.is_some() {
            res.desired_vcpus = Some(desired);
        }
        for (k, v) in u.compute_resources_other {
            res.other.insert(k, v);
        }
    }
    if let Some(v) = u.unmanaged_vcpus {
        if ce.kind != ComputeEnvironmentType::Unmanaged {
            return Err(CoreError::Invalid(
                "unmanagedvCpus applies only to UNMANAGED compute environments".into(),
            ));
        }
        if v < 0 {
            return Err(CoreError::Invalid(
                "unmanagedvCpus must not be negative".into(),
            ));
        }
        ce.unmanaged_vcpus = Some(v);
    }
    if let Some(role) = u.service_role {
        ce.service_role = Some(role);
    }
    if let Some(p) = u.update_policy {
        ce.update_policy = Some(p);
    }
    state
        .compute_environments
        .insert(name.clone(), Arc::new(ce));
    changes.dirty.push(Key::ComputeEnvironment(name.clone()));
    changes.schedule = true;
    Ok(Reply::ComputeEnvironment { name })
}

fn delete_compute_environment(
    state: &mut State,
    reference: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_ce_name(state, reference)?;
    if state.compute_environments[&name].state != ResourceState::Disabled {
        return Err(CoreError::Conflict(format!(
            "compute environment {name} is ENABLED; disable it (update-compute-environment --state DISABLED) before deleting it"
        )));
    }
    let users: Vec<&str> = state
        .job_queues
        .values()
        .filter(|q| {
            q.compute_environment_order
                .iter()
                .any(|o| o.compute_environment == name)
        })
        .map(|q| q.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(CoreError::Conflict(format!(
            "compute environment {name} is still attached to job queue(s) {}; remove it from their computeEnvironmentOrder first",
            users.join(", ")
        )));
    }
    state.compute_environments.remove(&name);
    changes.dirty.push(Key::ComputeEnvironment(name));
    Ok(Reply::Done)
}

// ---------------------------------------------------------------------------------------------
// Job queues

fn find_queue_name(state: &State, reference: &str) -> Result<String, CoreError> {
    name_from_reference(reference, ResourceKind::JobQueue)
        .filter(|n| state.job_queues.contains_key(*n))
        .map(str::to_string)
        .ok_or_else(|| CoreError::NotFound(format!("job queue {reference} does not exist")))
}

/// Resolves names or ARNs to environment names and checks AWS's rules for an order.
fn resolve_order(
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

fn refuse_scheduling_policy(arn: &Option<String>) -> Result<(), CoreError> {
    match arn {
        Some(arn) => Err(CoreError::NotFound(format!(
            "scheduling policy {arn} does not exist (Barge does not support scheduling policies yet)"
        ))),
        None => Ok(()),
    }
}

fn create_job_queue(
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
    refuse_scheduling_policy(&q.scheduling_policy_arn)?;
    q.compute_environment_order =
        resolve_order(state, std::mem::take(&mut q.compute_environment_order))?;
    let name = q.name.clone();
    state.job_queues.insert(name.clone(), Arc::new(q));
    changes.dirty.push(Key::JobQueue(name.clone()));
    changes.schedule = true;
    Ok(Reply::JobQueue { name })
}

fn update_job_queue(
    state: &mut State,
    u: JobQueueUpdate,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_queue_name(state, &u.reference)?;
    let mut q = (**state.job_queues.get(&name).expect("found above")).clone();
    refuse_scheduling_policy(&u.scheduling_policy_arn)?;
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

fn delete_job_queue(
    state: &mut State,
    reference: &str,
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
            terminate_job(state, &id, reason.clone(), changes)?;
        }
    }
    state.job_queues.remove(&name);
    changes.dirty.push(Key::JobQueue(name));
    Ok(Reply::Done)
}

// ---------------------------------------------------------------------------------------------
// Job definitions

fn check_environment(env: &Option<Vec<KeyValuePair>>, field: &str) -> Result<(), CoreError> {
    for kv in env.iter().flatten() {
        let name = kv.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(CoreError::Invalid(format!(
                "{field} has an entry without a name"
            )));
        }
        if name.starts_with("AWS_BATCH") {
            return Err(CoreError::Invalid(format!(
                "{field} variable {name} uses the reserved prefix AWS_BATCH; rename it"
            )));
        }
    }
    Ok(())
}

fn register_job_definition(
    state: &mut State,
    mut d: JobDefinition,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if let Some(c) = &d.container_properties {
        check_environment(&c.environment, "containerProperties.environment")?;
        check_requirements(&c.resource_requirements)?;
        resources_of(c)?;
    }
    d.revision = state.latest_revision(&d.name) + 1;
    d.status = DefinitionStatus::Active;
    let reply = Reply::JobDefinition {
        name: d.name.clone(),
        revision: d.revision,
    };
    changes
        .dirty
        .push(Key::JobDefinition(d.name.clone(), d.revision));
    state
        .job_definitions
        .insert((d.name.clone(), d.revision), Arc::new(d));
    Ok(reply)
}

/// `name`, `name:revision`, or an ARN with or without `:revision`. A bare name means the
/// latest ACTIVE revision.
fn resolve_definition(state: &State, reference: &str) -> Result<Arc<JobDefinition>, CoreError> {
    let not_found = || CoreError::NotFound(format!("job definition {reference} does not exist"));
    let spec = name_from_reference(reference, ResourceKind::JobDefinition).ok_or_else(not_found)?;
    match spec.rsplit_once(':') {
        Some((name, rev)) => {
            let rev: u32 = rev.parse().map_err(|_| {
                CoreError::Invalid(format!(
                    "job definition {reference}: revision {rev:?} is not a number"
                ))
            })?;
            state
                .job_definitions
                .get(&(name.to_string(), rev))
                .cloned()
                .ok_or_else(not_found)
        }
        None => state
            .latest_active_definition(spec)
            .cloned()
            .ok_or_else(|| {
                if state.latest_revision(spec) > 0 {
                    CoreError::NotFound(format!(
                        "job definition {spec} has no ACTIVE revision; register a new one"
                    ))
                } else {
                    not_found()
                }
            }),
    }
}

fn deregister_job_definition(
    state: &mut State,
    reference: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let spec = name_from_reference(reference, ResourceKind::JobDefinition).unwrap_or(reference);
    if !spec.contains(':') {
        return Err(CoreError::Invalid(format!(
            "jobDefinition {reference}: give name:revision or the full ARN of the revision to deregister"
        )));
    }
    let d = resolve_definition(state, reference)?;
    let mut d = (*d).clone();
    d.status = DefinitionStatus::Inactive;
    changes
        .dirty
        .push(Key::JobDefinition(d.name.clone(), d.revision));
    state
        .job_definitions
        .insert((d.name.clone(), d.revision), Arc::new(d));
    Ok(Reply::Done)
}

// ---------------------------------------------------------------------------------------------
// Jobs

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
fn effective_container(
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
            let mut merged = c.environment.take().unwrap_or_default();
            for kv in env {
                match merged.iter_mut().find(|e| e.name == kv.name) {
                    Some(existing) => existing.value = kv.value.clone(),
                    None => merged.push(kv.clone()),
                }
            }
            c.environment = Some(merged);
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
            let mut merged = c.resource_requirements.take().unwrap_or_default();
            for r in reqs {
                match merged.iter_mut().find(|e| e.kind == r.kind) {
                    Some(existing) => existing.value = r.value.clone(),
                    None => merged.push(r.clone()),
                }
            }
            c.resource_requirements = Some(merged);
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

fn submit_job(
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
    let def = resolve_definition(state, &s.definition)?;
    if def.status != DefinitionStatus::Active {
        return Err(CoreError::Conflict(format!(
            "job definition {}:{} is INACTIVE; submit with an ACTIVE revision",
            def.name, def.revision
        )));
    }
    if def.kind != "container" {
        return Err(CoreError::Invalid(format!(
            "job definition {}:{} has type {}; Barge runs only type container jobs so far",
            def.name, def.revision, def.kind
        )));
    }
    let Some(base) = def.container_properties.as_ref() else {
        return Err(CoreError::Invalid(format!(
            "job definition {}:{} has no containerProperties; Barge runs only containerProperties jobs so far",
            def.name, def.revision
        )));
    };
    if state.jobs.contains_key(&s.job_id) {
        return Err(CoreError::Conflict(format!(
            "job {} already exists",
            s.job_id
        )));
    }
    let depends_on = check_depends_on(state, &s.job_id, s.depends_on)?;
    let mut parameters = def.parameters.clone();
    parameters.extend(s.parameters);
    let container = effective_container(base, s.container_overrides.as_ref(), &parameters)?;
    let resources = resources_of(&container)?;
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
    };
    state.put_job(job);
    changes.dirty.push(Key::Job(s.job_id.clone()));
    changes.schedule = true;
    Ok(Reply::Job {
        id: s.job_id,
        name: s.name,
    })
}

fn find_job(state: &State, job_id: &str) -> Result<Job, CoreError> {
    state
        .job(job_id)
        .map(|j| (**j).clone())
        .ok_or_else(|| CoreError::NotFound(format!("job {job_id} does not exist")))
}

fn cancel_job(
    state: &mut State,
    job_id: &str,
    reason: String,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let mut job = find_job(state, job_id)?;
    // AWS: cancel stops only jobs that have not started; for the others it is a no-op.
    if job.status.is_before_start() {
        job.status = JobStatus::Failed;
        job.status_reason = Some(reason);
        job.is_cancelled = true;
        state.put_job(job);
        changes.dirty.push(Key::Job(job_id.to_string()));
    }
    Ok(Reply::Done)
}

fn terminate_job(
    state: &mut State,
    job_id: &str,
    reason: String,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let mut job = find_job(state, job_id)?;
    match job.status {
        s if s.is_before_start() => {
            job.status = JobStatus::Failed;
            job.status_reason = Some(reason);
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
                    grace_ms: STOP_GRACE_MS,
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

// ---------------------------------------------------------------------------------------------
// Tags

fn check_tags(tags: &Tags) -> Result<(), CoreError> {
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "a resource holds at most {TAGS_PER_RESOURCE_MAX} tags, this would make {}",
            tags.len()
        )));
    }
    Ok(())
}

/// Runs `f` on the tags of the resource `arn` names and records the change.
fn with_tags(
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
        ResourceKind::SchedulingPolicy => return Err(not_found()),
    }
    Ok(Reply::Done)
}

fn tag_resource(
    state: &mut State,
    arn: &str,
    tags: Tags,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    with_tags(state, arn, changes, |existing| {
        existing.extend(tags);
        check_tags(existing)
    })
}

fn untag_resource(
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

// ---------------------------------------------------------------------------------------------
// Placement and attempts

fn scheduler_pass(state: &mut State, plan: Plan, now: i64, changes: &mut Changes) -> Reply {
    for id in plan.admit {
        let Some(job) = state.job(&id) else { continue };
        if job.status != JobStatus::Submitted {
            continue;
        }
        let mut job = (**job).clone();
        match dependencies(state, &job) {
            Dependencies::Met => {
                job.status = JobStatus::Runnable;
                job.runnable_at = Some(now);
            }
            Dependencies::Waiting(_) => job.status = JobStatus::Pending,
            Dependencies::Failed(_) => {
                job.status = JobStatus::Failed;
                job.status_reason = Some(REASON_DEPENDENCY_FAILED.to_string());
            }
        }
        state.put_job(job);
        changes.dirty.push(Key::Job(id));
    }
    let mut placed = 0;
    for p in plan.placements {
        if place(state, &p, now, changes) {
            placed += 1;
        }
    }
    Reply::Placed { placed }
}

/// Re-checks a proposed placement against the current state and commits it when it holds.
fn place(state: &mut State, p: &Placement, now: i64, changes: &mut Changes) -> bool {
    let Some(job) = state.job(&p.job_id) else {
        return false;
    };
    if job.status != JobStatus::Runnable || job.current.is_some() {
        return false;
    }
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return false;
    };
    if !queue
        .compute_environment_order
        .iter()
        .any(|o| o.compute_environment == p.compute_environment)
    {
        return false;
    }
    let Some(ce) = state.compute_environments.get(&p.compute_environment) else {
        return false;
    };
    let Some(agent) = state.agents.get(&p.agent_id) else {
        return false;
    };
    if ce.state != ResourceState::Enabled
        || !agent.serves(ce)
        || !ce_has_room(ce, state.ce_used_vcpus_milli(&ce.name), job.resources)
        || !agent_has_room(agent, job.resources)
    {
        return false;
    }
    let mut job = (**job).clone();
    let number = job.attempts_made() + 1;
    let attempt = Attempt {
        id: p.attempt_id.clone(),
        number,
        agent_id: p.agent_id.clone(),
        compute_environment: p.compute_environment.clone(),
        log_stream_name: log_stream_name(&job.definition_name, &p.attempt_id),
        placed_at: now,
        started_at: None,
        stopped_at: None,
        exit_code: None,
        reason: None,
        status_reason: None,
    };
    let spec = attempt_spec(&job, &attempt);
    state.account(&p.compute_environment, &p.agent_id, job.resources, true);
    job.current = Some(attempt);
    job.status = JobStatus::Starting;
    job.status_reason = None;
    state.put_job(job);
    changes.dirty.push(Key::Job(p.job_id.clone()));
    changes.effects.push(Effect::Agent {
        agent_id: p.agent_id.clone(),
        instruction: AgentInstruction::Launch(spec),
    });
    true
}

/// AWS: `<first 200 chars of the definition name>/default/<task id>`.
pub fn log_stream_name(definition_name: &str, attempt_id: &str) -> String {
    let prefix: String = definition_name.chars().take(200).collect();
    format!("{prefix}/default/{attempt_id}")
}

fn attempt_spec(job: &Job, attempt: &Attempt) -> AttemptSpec {
    let mut environment: Vec<(String, String)> = job
        .container
        .environment
        .iter()
        .flatten()
        .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default())))
        .collect();
    environment.extend([
        ("AWS_BATCH_JOB_ID".to_string(), job.id.clone()),
        (
            "AWS_BATCH_JOB_ATTEMPT".to_string(),
            attempt.number.to_string(),
        ),
        ("AWS_BATCH_JQ_NAME".to_string(), job.queue.clone()),
        (
            "AWS_BATCH_CE_NAME".to_string(),
            attempt.compute_environment.clone(),
        ),
    ]);
    AttemptSpec {
        job_id: job.id.clone(),
        attempt_id: attempt.id.clone(),
        attempt_number: attempt.number,
        image: job.container.image.clone(),
        command: job.container.command.clone().unwrap_or_default(),
        environment,
        vcpus_milli: job.resources.vcpus_milli,
        memory_mib: job.resources.memory_mib,
        log_stream_name: attempt.log_stream_name.clone(),
    }
}

/// Applies one agent report. Returns false when it is refused: the attempt it names is not the
/// job's current one, or belongs to another agent. A stale `Running` is answered with a Stop,
/// so an attempt the control plane has given up on never keeps running.
fn apply_report(
    state: &mut State,
    agent_id: &str,
    report: AgentReport,
    now: i64,
    changes: &mut Changes,
) -> bool {
    let (job_id, attempt_id) = {
        let (j, a) = report.ids();
        (j.to_string(), a.to_string())
    };
    let current = state
        .job(&job_id)
        .and_then(|j| j.current.as_ref())
        .is_some_and(|a| a.id == attempt_id && a.agent_id == agent_id);
    if !current {
        if matches!(report, AgentReport::Running { .. }) {
            changes.effects.push(Effect::Agent {
                agent_id: agent_id.to_string(),
                instruction: AgentInstruction::Stop {
                    job_id,
                    attempt_id,
                    grace_ms: 0,
                },
            });
        }
        return false;
    }
    let mut job = (**state.job(&job_id).expect("checked above")).clone();
    match report {
        AgentReport::Running { at_ms, .. } => {
            if job.status == JobStatus::Starting {
                job.status = JobStatus::Running;
                job.started_at = Some(at_ms);
                job.current.as_mut().expect("current").started_at = Some(at_ms);
                // The stream exists from RUNNING on, so a client following the job's
                // logStreamName finds it before the first line.
                let stream = job
                    .current
                    .as_ref()
                    .expect("current")
                    .log_stream_name
                    .clone();
                ensure_log_stream(state, &stream, now, changes);
            }
        }
        AgentReport::Logs { lines, .. } => {
            let stream = job
                .current
                .as_ref()
                .expect("current")
                .log_stream_name
                .clone();
            append_logs(state, &stream, lines, now, changes);
            return true;
        }
        AgentReport::Exited {
            at_ms,
            exit_code,
            reason,
            ..
        } => {
            finish_attempt(state, &mut job, at_ms, exit_code, reason, None);
            changes.schedule = true;
        }
    }
    state.put_job(job);
    changes.dirty.push(Key::Job(job_id));
    true
}

fn ensure_log_stream(state: &mut State, stream_name: &str, now: i64, changes: &mut Changes) {
    if !state.log_streams.contains_key(stream_name) {
        append_logs(state, stream_name, Vec::new(), now, changes);
    }
}

fn append_logs(
    state: &mut State,
    stream_name: &str,
    lines: Vec<LogLine>,
    now: i64,
    changes: &mut Changes,
) {
    let mut stream = match state.log_streams.get(stream_name) {
        Some(s) => (**s).clone(),
        None => {
            let number = state.next_log_stream_number;
            state.next_log_stream_number += 1;
            LogStream {
                name: stream_name.to_string(),
                number,
                created_at: now,
                first_event_at: None,
                last_event_at: None,
                last_ingestion_at: None,
                next_event_seq: 0,
                stored_bytes: 0,
            }
        }
    };
    for line in lines {
        // Events are stored in arrival order, and readers expect their timestamps in that
        // order too (CloudWatch sorts by time). stdout and stderr are read apart, so a line may
        // arrive a moment after a later-stamped one: it takes that one's time instead.
        let timestamp_ms = stream
            .last_event_at
            .map_or(line.timestamp_ms, |t| t.max(line.timestamp_ms));
        stream.first_event_at.get_or_insert(timestamp_ms);
        stream.last_event_at = Some(timestamp_ms);
        stream.stored_bytes += line.message.len() as u64;
        changes.log_events.push(NewLogEvent {
            stream_number: stream.number,
            seq: stream.next_event_seq,
            timestamp_ms,
            ingestion_ms: now,
            message: line.message,
        });
        stream.next_event_seq += 1;
    }
    if stream.next_event_seq > 0 {
        stream.last_ingestion_at = Some(now);
    }
    changes.dirty.push(Key::LogStream(stream.name.clone()));
    state
        .log_streams
        .insert(stream.name.clone(), Arc::new(stream));
}

/// AWS's evaluateOnExit: the first rule whose given conditions all match decides (RETRY or
/// EXIT); when none matches, the attempt is retried.
fn evaluate_on_exit_retries(job: &Job, attempt: &Attempt) -> bool {
    let rules = job
        .retry_strategy
        .as_ref()
        .and_then(|r| r.evaluate_on_exit.as_deref())
        .unwrap_or_default();
    let exit_code = attempt.exit_code.map(|c| c.to_string());
    for rule in rules {
        let conditions = [
            (&rule.on_exit_code, exit_code.as_deref()),
            (&rule.on_reason, attempt.reason.as_deref()),
            (&rule.on_status_reason, attempt.status_reason.as_deref()),
        ];
        let matched = conditions.iter().all(|(pattern, value)| match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| pattern_matches(p, v)),
        });
        if matched {
            return rule.action.eq_ignore_ascii_case("RETRY");
        }
    }
    true
}

/// evaluateOnExit patterns: exact, or a prefix match when the pattern ends in `*`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect()
    }
}

/// Ends the job's live attempt and decides what follows: success, a retry, or failure.
/// `status_reason` overrides the attempt's statusReason (host lost); otherwise the container
/// exited on its own.
fn finish_attempt(
    state: &mut State,
    job: &mut Job,
    at: i64,
    exit_code: Option<i32>,
    reason: Option<String>,
    status_reason: Option<String>,
) {
    let mut attempt = job
        .current
        .take()
        .expect("finish_attempt needs a live attempt");
    state.account(
        &attempt.compute_environment,
        &attempt.agent_id,
        job.resources,
        false,
    );
    let host_lost = status_reason.is_some();
    attempt.stopped_at = Some(at);
    attempt.exit_code = exit_code;
    attempt.reason = reason.map(|r| truncate_chars(r, CONTAINER_REASON_CHARS_MAX));
    attempt.status_reason =
        Some(status_reason.unwrap_or_else(|| REASON_CONTAINER_EXITED.to_string()));
    let succeeded = exit_code == Some(0) && attempt.reason.is_none() && !host_lost;
    let attempt_status_reason = attempt.status_reason.clone();
    job.attempts.push(attempt);
    if let Some(stop_reason) = job.stop_reason.take() {
        // Stopped on purpose (terminate, timeout): never retried.
        if stop_reason == REASON_TIMEOUT {
            job.attempts.last_mut().expect("just pushed").status_reason = Some(stop_reason.clone());
        }
        job.status = JobStatus::Failed;
        job.status_reason = Some(stop_reason);
        job.stopped_at = Some(at);
    } else if succeeded {
        job.status = JobStatus::Succeeded;
        job.status_reason = attempt_status_reason;
        job.stopped_at = Some(at);
    } else if job.attempts_made() < job.max_attempts()
        && state.job_queues.contains_key(&job.queue)
        && evaluate_on_exit_retries(job, job.attempts.last().expect("just pushed"))
    {
        job.status = JobStatus::Runnable;
        job.runnable_at = Some(at);
        job.status_reason = None;
    } else {
        job.status = JobStatus::Failed;
        job.status_reason = attempt_status_reason;
        job.stopped_at = Some(at);
    }
}

/// RUNNING jobs whose attempt has run for its timeout.attemptDurationSeconds (counted from the
/// attempt's start, as AWS does) and that have not been asked to stop yet.
pub fn due_timeouts(state: &State, now: i64) -> Vec<String> {
    let mut due = Vec::new();
    for queue in state.queues_with(JobStatus::Running) {
        for (_, id) in state
            .jobs_in(&queue, JobStatus::Running)
            .into_iter()
            .flatten()
        {
            let job = &state.jobs[id];
            let limit_s = job
                .timeout
                .as_ref()
                .and_then(|t| t.attempt_duration_seconds);
            let started = job.current.as_ref().and_then(|a| a.started_at);
            if let (Some(limit_s), Some(started), None) = (limit_s, started, &job.stop_reason) {
                let limit_ms = i64::try_from(limit_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                if now >= started.saturating_add(limit_ms) {
                    due.push(id.clone());
                }
            }
        }
    }
    due
}

/// RUNNABLE jobs that a queue's jobStateTimeLimitActions cancel now: their statusReason
/// starts with the action's reason and they have been RUNNABLE for its maxTimeSeconds. Barge
/// does not let a job that can never fit block its queue, so every such job is considered,
/// not only the head of the queue; the time counts from when the job last became RUNNABLE.
pub fn due_state_time_limits(state: &State, now: i64) -> Vec<(String, String)> {
    let mut due = Vec::new();
    for queue in state.job_queues.values() {
        if queue.job_state_time_limit_actions.is_empty() {
            continue;
        }
        let runnable = state
            .jobs_in(&queue.name, JobStatus::Runnable)
            .into_iter()
            .flatten();
        for (_, id) in runnable.take(STATE_TIME_LIMIT_SCAN_PER_QUEUE_MAX) {
            let job = &state.jobs[id];
            let since = job.runnable_at.unwrap_or(job.created_at);
            let Some(reason) = crate::reason::why_waiting(state, job) else {
                continue;
            };
            let action = queue.job_state_time_limit_actions.iter().find(|a| {
                reason.starts_with(a.reason.as_str())
                    && now.saturating_sub(since) >= a.max_time_seconds.saturating_mul(1000)
            });
            if let Some(a) = action {
                due.push((id.clone(), a.reason.clone()));
            }
        }
    }
    due
}

/// Fails every live attempt whose agent is not registered, as AWS does when an instance goes
/// away: statusReason "Host EC2 (instance …) terminated.", retried when attempts remain.
fn fail_orphans(state: &mut State, now: i64, changes: &mut Changes) {
    let mut orphans = Vec::new();
    for status in [JobStatus::Starting, JobStatus::Running] {
        for queue in state.queues_with(status) {
            for (_, id) in state.jobs_in(&queue, status).into_iter().flatten() {
                let job = &state.jobs[id];
                if let Some(a) = &job.current {
                    if !state.agents.contains_key(&a.agent_id) {
                        orphans.push(id.clone());
                    }
                }
            }
        }
    }
    for id in orphans {
        let mut job = (*state.jobs[&id]).clone();
        let agent_id = job
            .current
            .as_ref()
            .expect("orphan has an attempt")
            .agent_id
            .clone();
        finish_attempt(
            state,
            &mut job,
            now,
            None,
            None,
            Some(host_terminated_reason(&agent_id)),
        );
        state.put_job(job);
        changes.dirty.push(Key::Job(id));
        changes.schedule = true;
    }
}
