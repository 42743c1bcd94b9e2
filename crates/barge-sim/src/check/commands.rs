//! What one command did: a refused one changes nothing, every change is dirty, submissions valid.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use barge_core::command::Key;
use barge_core::model::{
    Agent, DefinitionStatus, Job, JobDefinition, JobStatus, ResourceState, Resources,
};
use barge_core::resources::resources_of;
use barge_core::State;

use super::{fail, Violation, ACCEPTED, ATOMIC, DURABLE, NO_JOB_LOST};

/// A refused command leaves every part of the state as it was.
pub fn check_unchanged(before: &State, after: &State) -> Result<(), Violation> {
    let same = (before.jobs.ptr_eq(&after.jobs) || before.jobs == after.jobs)
        && (before
            .compute_environments
            .ptr_eq(&after.compute_environments)
            || before.compute_environments == after.compute_environments)
        && (before.job_queues.ptr_eq(&after.job_queues) || before.job_queues == after.job_queues)
        && (before.job_definitions.ptr_eq(&after.job_definitions)
            || before.job_definitions == after.job_definitions)
        && (before.log_streams.ptr_eq(&after.log_streams)
            || before.log_streams == after.log_streams)
        && (before.agents.ptr_eq(&after.agents) || before.agents == after.agents)
        && (before
            .scheduling_policies
            .ptr_eq(&after.scheduling_policies)
            || before.scheduling_policies == after.scheduling_policies)
        && (before.share_usage.ptr_eq(&after.share_usage)
            || before.share_usage == after.share_usage)
        && before.next_job_seq == after.next_job_seq
        && before.next_log_stream_number == after.next_log_stream_number;
    if !same {
        return fail(
            ATOMIC,
            "the state differs after a command that returned an error",
        );
    }
    Ok(())
}

/// Every entity that differs between `prev` and `next` is named in `dirty`, so the store writes
/// it: otherwise a restart would silently lose an acknowledged change.
pub fn check_dirty(prev: &State, next: &State, dirty: &[Key]) -> Result<(), Violation> {
    let dirty: HashSet<&Key> = dirty.iter().collect();
    let mut missing: Vec<Key> = Vec::new();
    if !prev.jobs.ptr_eq(&next.jobs) {
        for (id, new) in next.jobs.iter() {
            let changed = prev
                .jobs
                .get(id)
                .is_none_or(|old| !Arc::ptr_eq(old, new) && **old != **new);
            if changed {
                missing.push(Key::Job(id.clone()));
            }
        }
        for id in prev.jobs.keys() {
            if !next.jobs.contains_key(id) {
                missing.push(Key::Job(id.clone()));
            }
        }
    }
    fn diff<K: Ord + Clone, V: PartialEq>(
        prev: impl Iterator<Item = (K, Arc<V>)>,
        next: impl Iterator<Item = (K, Arc<V>)>,
        key: impl Fn(K) -> Key,
        out: &mut Vec<Key>,
    ) {
        let prev: BTreeMap<K, Arc<V>> = prev.collect();
        let next: BTreeMap<K, Arc<V>> = next.collect();
        for (k, new) in &next {
            if prev
                .get(k)
                .is_none_or(|old| !Arc::ptr_eq(old, new) && **old != **new)
            {
                out.push(key(k.clone()));
            }
        }
        for k in prev.keys() {
            if !next.contains_key(k) {
                out.push(key(k.clone()));
            }
        }
    }
    if !prev.compute_environments.ptr_eq(&next.compute_environments) {
        diff(
            prev.compute_environments
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.compute_environments
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            Key::ComputeEnvironment,
            &mut missing,
        );
    }
    if !prev.job_queues.ptr_eq(&next.job_queues) {
        diff(
            prev.job_queues.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.job_queues.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::JobQueue,
            &mut missing,
        );
    }
    if !prev.job_definitions.ptr_eq(&next.job_definitions) {
        diff(
            prev.job_definitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.job_definitions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            |(n, r)| Key::JobDefinition(n, r),
            &mut missing,
        );
    }
    if !prev.log_streams.ptr_eq(&next.log_streams) {
        diff(
            prev.log_streams.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.log_streams.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::LogStream,
            &mut missing,
        );
    }
    if !prev.scheduling_policies.ptr_eq(&next.scheduling_policies) {
        diff(
            prev.scheduling_policies
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            next.scheduling_policies
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
            Key::SchedulingPolicy,
            &mut missing,
        );
    }
    if !prev.share_usage.ptr_eq(&next.share_usage) {
        diff(
            prev.share_usage.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.share_usage.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::ShareUsage,
            &mut missing,
        );
    }
    if !prev.schedules.ptr_eq(&next.schedules) {
        diff(
            prev.schedules.iter().map(|(k, v)| (k.clone(), v.clone())),
            next.schedules.iter().map(|(k, v)| (k.clone(), v.clone())),
            Key::Schedule,
            &mut missing,
        );
    }
    if !prev.agents.ptr_eq(&next.agents) {
        // An agent's usage counters change with every placement but are derived, never
        // stored: compare what the store writes.
        let stored = |(k, v): (&String, &Arc<Agent>)| {
            let json = serde_json::to_string(&**v).expect("agents serialize");
            (k.clone(), Arc::new(json))
        };
        diff(
            prev.agents.iter().map(stored),
            next.agents.iter().map(stored),
            Key::Agent,
            &mut missing,
        );
    }
    missing.retain(|k| !dirty.contains(k));
    missing.sort();
    match missing.first() {
        Some(k) => fail(
            DURABLE,
            format!(
                "{k:?} changed but is not in Changes.dirty ({} such)",
                missing.len()
            ),
        ),
        None => Ok(()),
    }
}

/// An accepted SubmitJob created a SUBMITTED job, new under its id, in a queue that existed and
/// was ENABLED, from an ACTIVE container definition, with resources that follow from its
/// effective container.
pub fn check_submit(prev: &State, next: &State, job_id: &str) -> Result<(), Violation> {
    if prev.job(job_id).is_some() {
        return fail(
            ACCEPTED,
            format!("SubmitJob accepted {job_id}, which already existed"),
        );
    }
    let Some(job) = next.job(job_id) else {
        return fail(
            NO_JOB_LOST,
            format!("SubmitJob acknowledged {job_id} but it is not there"),
        );
    };
    if job.status != JobStatus::Submitted {
        return fail(
            ACCEPTED,
            format!("new job {job_id} is {}", job.status.as_str()),
        );
    }
    if !prev
        .job_queues
        .get(&job.queue)
        .is_some_and(|q| q.state == ResourceState::Enabled)
    {
        return fail(
            ACCEPTED,
            format!(
                "job {job_id} accepted into missing or DISABLED queue {}",
                job.queue
            ),
        );
    }
    let def = prev
        .job_definitions
        .get(&(job.definition_name.clone(), job.definition_revision));
    let runnable_kind = |d: &JobDefinition| match d.kind.as_str() {
        "container" => d.container_properties.is_some() && job.multinode.is_none(),
        "multinode" => d.node_properties.is_some() && job.multinode.is_some(),
        _ => false,
    };
    if !def.is_some_and(|d| d.status == DefinitionStatus::Active && runnable_kind(d)) {
        return fail(
            ACCEPTED,
            format!(
                "job {job_id} accepted with missing, INACTIVE or unrunnable definition {}:{}",
                job.definition_name, job.definition_revision
            ),
        );
    }
    if let Some(m) = &job.multinode {
        // The parent books nothing; each node group books what its container asks for.
        let groups_ok = m.groups.first().is_some_and(|g| g.first == 0)
            && m.groups.last().is_some_and(|g| g.last + 1 == m.num_nodes)
            && m.groups.windows(2).all(|w| w[0].last + 1 == w[1].first)
            && m.main_node < m.num_nodes
            && m.groups
                .iter()
                .all(|g| resources_of(&g.container).is_ok_and(|r| r == g.resources));
        if job.resources != Resources::default() || !groups_ok || job.node.is_some() {
            return fail(
                ACCEPTED,
                format!("multi-node job {job_id} was accepted with inconsistent node groups"),
            );
        }
    } else {
        match resources_of(&job.container) {
            Ok(r) if r == job.resources => {}
            other => {
                return fail(
                    ACCEPTED,
                    format!(
                        "job {job_id} books {:?} but its container asks for {other:?}",
                        job.resources
                    ),
                )
            }
        }
    }
    if job.seq + 1 != next.next_job_seq || prev.jobs.values().any(|j| j.seq >= job.seq) {
        return fail(
            ACCEPTED,
            format!("job {job_id} got seq {} out of order", job.seq),
        );
    }
    check_submitted_array(prev, next, job)
}

/// An accepted submission's array properties and dependencies are valid: an array's size is
/// within bounds; SEQUENTIAL and N_TO_N appear only on arrays, a SEQUENTIAL entry without a
/// jobId, an N_TO_N one naming an array of the same size; every jobId names a job that existed
/// and is not an array child (born or not); and the new array has no children yet.
fn check_submitted_array(prev: &State, next: &State, job: &Job) -> Result<(), Violation> {
    use barge_core::dependencies::{N_TO_N, SEQUENTIAL};
    let id = &job.id;
    if job.array_child.is_some() {
        return fail(ACCEPTED, format!("submitted job {id} is an array child"));
    }
    let size = job.array.as_ref().map(|a| a.size);
    for dep in &job.depends_on {
        let kind = dep.kind.as_deref();
        // A jobId names a job that existed, never an array child, born or not.
        let exists = |target: &String| prev.job(target).is_some_and(|t| t.array_child.is_none());
        let ok = match (kind, &dep.job_id) {
            (None, Some(target)) => exists(target),
            (Some(SEQUENTIAL), None) => size.is_some(),
            (Some(SEQUENTIAL), Some(target)) => size.is_some() && exists(target),
            (Some(N_TO_N), Some(target)) => {
                size.is_some()
                    && prev
                        .job(target)
                        .and_then(|t| t.array.as_ref())
                        .is_some_and(|a| Some(a.size) == size)
            }
            _ => false,
        };
        if !ok {
            return fail(
                ACCEPTED,
                format!(
                    "job {id} (array size {size:?}) was accepted with dependsOn {{jobId: {:?}, type: {kind:?}}}",
                    dep.job_id
                ),
            );
        }
    }
    let Some(array) = &job.array else {
        return Ok(());
    };
    let bound = barge_core::limits::ARRAY_SIZE_MIN..=prev.config.array_size_max;
    let sequential = job
        .depends_on
        .iter()
        .any(|d| d.job_id.is_none() && d.kind.as_deref() == Some(SEQUENTIAL));
    let n_to_n: BTreeSet<&String> = job
        .depends_on
        .iter()
        .filter(|d| d.kind.as_deref() == Some(N_TO_N))
        .filter_map(|d| d.job_id.as_ref())
        .collect();
    if !bound.contains(&array.size)
        || array.sequential != sequential
        || array.n_to_n.iter().collect::<BTreeSet<_>>() != n_to_n
        || array.released_at.is_some()
        || array.closed.is_some()
        || next.array_index(id).is_some_and(|i| !i.born.is_empty())
    {
        return fail(
            ACCEPTED,
            format!(
                "array job {id} was accepted as {array:?} (sizes {bound:?} allowed, SEQUENTIAL {sequential}, N_TO_N on {n_to_n:?})"
            ),
        );
    }
    Ok(())
}
