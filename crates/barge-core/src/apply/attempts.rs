//! Placement and attempts: scheduler passes, agent reports, logs, the end of an attempt
//! (success, retry, failure), timeouts, time-limit actions and orphaned attempts.

use super::*;
use crate::container::ContainerHost;

pub(super) fn scheduler_pass(
    state: &mut State,
    plan: Plan,
    now: i64,
    changes: &mut Changes,
) -> Reply {
    for id in plan.admit {
        let Some(job) = state.job(&id) else { continue };
        if job.status != JobStatus::Submitted {
            continue;
        }
        if let Some(reason) = too_many_propagated_tags(state, job) {
            let mut job = (**job).clone();
            job.status = JobStatus::Failed;
            job.status_reason = Some(reason.clone());
            job.stopped_at = Some(now);
            if let Some(array) = job.array.as_mut() {
                array.closed = Some(reason);
            }
            state.put_job(job);
            changes.dirty.push(Key::Job(id.clone()));
            continue;
        }
        if job.array.is_some() {
            admit_array(state, &id, now, changes);
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
    for g in plan.gangs {
        if multinode::place_gang(state, &g, now, changes) {
            placed += 1;
        }
    }
    Reply::Placed { placed }
}

/// AWS fails a job whose tags and definition tags, propagated together to its task, would be
/// more than a resource may hold (job tags win over definition tags of the same key).
fn too_many_propagated_tags(state: &State, job: &Job) -> Option<String> {
    if job.propagate_tags != Some(true) {
        return None;
    }
    let definition = state
        .job_definitions
        .get(&(job.definition_name.clone(), job.definition_revision))?;
    let combined = definition
        .tags
        .keys()
        .chain(job.tags.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    (combined > TAGS_PER_RESOURCE_MAX).then(|| {
        format!(
            "propagateTags: the job's and its job definition's tags together are {combined}, more than the {TAGS_PER_RESOURCE_MAX} a task may carry"
        )
    })
}

/// An array parent is admitted to PENDING, where it stays until its children have finished;
/// its children may start as soon as its own dependencies are met.
fn admit_array(state: &mut State, id: &str, now: i64, changes: &mut Changes) {
    let mut parent = (**state.job(id).expect("admitted jobs exist")).clone();
    parent.status = JobStatus::Pending;
    let deps = dependencies(state, &parent);
    state.put_job(parent);
    changes.dirty.push(Key::Job(id.to_string()));
    match deps {
        Dependencies::Met => arrays::release(state, id, now, changes),
        Dependencies::Waiting(_) => {}
        Dependencies::Failed(_) => arrays::close(
            state,
            id,
            REASON_DEPENDENCY_FAILED.into(),
            arrays::Stop::None,
            now,
            changes,
        ),
    }
}

/// Re-checks a proposed placement against the current state and commits it when it holds. An
/// array child that has not been born yet is born as it is placed.
pub(super) fn place(state: &mut State, p: &Placement, now: i64, changes: &mut Changes) -> bool {
    let unborn;
    let job = match state.job(&p.job_id) {
        Some(job) => &**job,
        None => match arrays::unborn_runnable(state, &p.job_id, now) {
            Some(child) => {
                unborn = child;
                &unborn
            }
            None => return false,
        },
    };
    // Multi-node jobs are placed only as whole gangs (`multinode::place_gang`).
    if job.status != JobStatus::Runnable
        || job.current.is_some()
        || job.multinode.is_some()
        || job.node.is_some()
    {
        return false;
    }
    let Some(ce) = state.environment_of_queue(&job.queue, &p.compute_environment) else {
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
    let mut job = job.clone();
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
    let spec = attempt_spec(state, &job, &attempt);
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

pub(super) fn attempt_spec(state: &State, job: &Job, attempt: &Attempt) -> AttemptSpec {
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
    if let Some(child) = &job.array_child {
        environment.extend([
            (
                "AWS_BATCH_JOB_ARRAY_INDEX".to_string(),
                child.index.to_string(),
            ),
            (
                "AWS_BATCH_JOB_ARRAY_SIZE".to_string(),
                child.size.to_string(),
            ),
        ]);
    }
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
        user: job.container.user.clone(),
        host: Box::new(container_host(job)),
        runner: state.runner_of(&attempt.compute_environment),
    }
}

/// The job's host settings. A definition stored before Barge checked them may not pass: the
/// attempt then carries the reason, and the runner fails it with that rather than running the
/// container without what it asked for.
fn container_host(job: &Job) -> ContainerHost {
    let mut host = crate::container::container_host("containerProperties", &job.container)
        .unwrap_or_else(|err| ContainerHost {
            refused: Some(err),
            ..ContainerHost::default()
        });
    host.gpus = job.resources.gpus;
    host
}

/// Applies one agent report. Returns false when it is refused: the attempt it names is not the
/// job's current one, or belongs to another agent. A stale `Running` is answered with a Stop,
/// so an attempt the control plane has given up on never keeps running.
pub(super) fn apply_report(
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
        // A node that exited while its gang runs on keeps its attempt, already ended, until
        // the job ends: reports for it are then stale.
        .is_some_and(|a| a.id == attempt_id && a.agent_id == agent_id && a.stopped_at.is_none());
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
    if state.jobs[&job_id].node.is_some() && !matches!(report, AgentReport::Logs { .. }) {
        multinode::node_report(state, &job_id, report, now, changes);
        return true;
    }
    let mut job = (**state.job(&job_id).expect("checked above")).clone();
    let stream = job
        .current
        .as_ref()
        .expect("current")
        .log_stream_name
        .clone();
    match report {
        AgentReport::Running { at_ms, .. } => {
            if job.status == JobStatus::Starting {
                job.status = JobStatus::Running;
                job.started_at = Some(at_ms);
                job.current.as_mut().expect("current").started_at = Some(at_ms);
                // The stream exists from RUNNING on, so a client following the job's
                // logStreamName finds it before the first line.
                ensure_log_stream(state, &stream, now, changes);
            }
        }
        AgentReport::Logs { lines, .. } => {
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

pub(super) fn ensure_log_stream(
    state: &mut State,
    stream_name: &str,
    now: i64,
    changes: &mut Changes,
) {
    if !state.log_streams.contains_key(stream_name) {
        append_logs(state, stream_name, Vec::new(), now, changes);
    }
}

pub(super) fn append_logs(
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
pub(super) fn evaluate_on_exit_retries(job: &Job, attempt: &Attempt) -> bool {
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

pub(super) fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect()
    }
}

/// Ends the job's live attempt and decides what follows: success, a retry, or failure.
/// `status_reason` overrides the attempt's statusReason (host lost); otherwise the container
/// exited on its own.
pub(super) fn finish_attempt(
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
            // A multi-node job's timeout covers the whole job, from its main node's start.
            let started = match &job.multinode {
                Some(_) => job.started_at,
                None => job.current.as_ref().and_then(|a| a.started_at),
            };
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
        // An array's unborn children all wait for the same reason, since its release: the
        // action cancels them together (through the parent).
        for (_, parent_id) in state
            .arrays_with_unborn_runnable(&queue.name)
            .into_iter()
            .flatten()
        {
            let parent = &state.jobs[parent_id];
            let cursor = state.array_index(parent_id).map_or(0, |i| i.cursor);
            let Some(child) = arrays::job_view(state, &arrays::child_id(parent_id, cursor)) else {
                continue;
            };
            let since = parent
                .array
                .as_ref()
                .and_then(|a| a.released_at)
                .unwrap_or(parent.created_at);
            let Some(reason) = crate::reason::why_waiting(state, &child) else {
                continue;
            };
            let action = queue.job_state_time_limit_actions.iter().find(|a| {
                reason.starts_with(a.reason.as_str())
                    && now.saturating_sub(since) >= a.max_time_seconds.saturating_mul(1000)
            });
            if let Some(a) = action {
                due.push((parent_id.clone(), a.reason.clone()));
            }
        }
    }
    due
}

/// Fails every live attempt whose agent is not registered, as AWS does when an instance goes
/// away: statusReason "Host EC2 (instance …) terminated.", retried when attempts remain.
pub(super) fn fail_orphans(state: &mut State, now: i64, changes: &mut Changes) {
    let orphans = live_attempts_where(state, &[JobStatus::Starting, JobStatus::Running], |a| {
        !state.agents.contains_key(&a.agent_id)
    });
    fail_host_terminated(state, orphans, now, changes);
}

/// An agent registered again under the id it had: its RUNNING attempts that it no longer
/// runs died with its previous run (a restart that could not recover them).
pub(super) fn fail_lost_on_reregister(
    state: &mut State,
    agent_id: &str,
    running: &[String],
    now: i64,
    changes: &mut Changes,
) {
    let lost = live_attempts_where(state, &[JobStatus::Running], |a| {
        a.agent_id == agent_id && a.stopped_at.is_none() && !running.contains(&a.id)
    });
    fail_host_terminated(state, lost, now, changes);
}

/// The ids of jobs in `statuses` whose current attempt matches.
fn live_attempts_where(
    state: &State,
    statuses: &[JobStatus],
    matches: impl Fn(&Attempt) -> bool,
) -> Vec<String> {
    let mut found = Vec::new();
    for &status in statuses {
        for queue in state.queues_with(status) {
            for (_, id) in state.jobs_in(&queue, status).into_iter().flatten() {
                if state.jobs[id].current.as_ref().is_some_and(&matches) {
                    found.push(id.clone());
                }
            }
        }
    }
    found
}

/// Ends the live attempts of `ids` as their host's loss ends them.
fn fail_host_terminated(state: &mut State, ids: Vec<String>, now: i64, changes: &mut Changes) {
    for id in ids {
        if state.jobs[&id].node.is_some() {
            multinode::node_orphaned(state, &id, now, changes);
            continue;
        }
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
