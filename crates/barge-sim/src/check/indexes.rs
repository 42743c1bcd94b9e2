//! Derived indexes: the job, array and usage indexes match a rebuild from the jobs.

use std::collections::{BTreeMap, BTreeSet};

use barge_core::arrays::unborn_status;
use barge_core::model::JobStatus;
use barge_core::State;

use super::{check_share_index, fail, usage, Usage, Violation, INDEXES};

/// Invariant 6: the job indexes hold exactly the jobs (right queue, status and seq), and the
/// agents' and compute environments' usage counters equal a recount from the live attempts.
pub fn check_indexes(state: &State) -> Result<(), Violation> {
    indexes_with(state, &usage(state))
}

pub(super) fn indexes_with(state: &State, u: &Usage) -> Result<(), Violation> {
    let mut per_status: BTreeMap<JobStatus, usize> = BTreeMap::new();
    let mut per_queue: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_queue_status: BTreeMap<(&str, JobStatus), usize> = BTreeMap::new();
    for job in state.jobs.values() {
        *per_status.entry(job.status).or_insert(0) += 1;
        // Array children are listed through their parent, not among their queue's jobs.
        if job.array_child.is_none() {
            *per_queue.entry(job.queue.as_str()).or_insert(0) += 1;
        }
        *per_queue_status
            .entry((job.queue.as_str(), job.status))
            .or_insert(0) += 1;
    }
    for status in JobStatus::ALL {
        let mut indexed = 0;
        for queue in state.queues_with(status) {
            for (seq, id) in state.jobs_in(&queue, status).into_iter().flatten() {
                indexed += 1;
                let ok = state
                    .job(id)
                    .is_some_and(|j| j.queue == queue && j.status == status && j.seq == *seq);
                if !ok {
                    return fail(
                        INDEXES,
                        format!(
                            "index ({queue}, {}) lists job {id} (seq {seq}), which is not there in that queue and status",
                            status.as_str()
                        ),
                    );
                }
            }
        }
        let actual = per_status.get(&status).copied().unwrap_or(0);
        if indexed != actual {
            return fail(
                INDEXES,
                format!(
                    "the indexes hold {indexed} {} jobs but there are {actual}",
                    status.as_str()
                ),
            );
        }
    }
    for ((queue, status), n) in &per_queue_status {
        let counted = state.count_in(queue, *status);
        if counted != *n {
            return fail(
                INDEXES,
                format!(
                    "count_in({queue}, {}) is {counted} but {n} jobs have it",
                    status.as_str()
                ),
            );
        }
    }
    for (queue, n) in &per_queue {
        let listed = state.jobs_of_queue(queue).map_or(0, |s| s.len());
        if listed != *n {
            return fail(
                INDEXES,
                format!("jobs_of_queue({queue}) lists {listed} jobs but {n} are in it"),
            );
        }
    }
    unborn_runnable_index(state)?;
    for agent in state.agents.values() {
        let (vcpus, memory) = u.agents.get(&agent.id).copied().unwrap_or((0, 0));
        if agent.used_vcpus_milli != vcpus || agent.used_memory_mib != memory {
            return fail(
                INDEXES,
                format!(
                    "agent {} counts {} mvCPU / {} MiB in use but its live attempts need {vcpus} / {memory}",
                    agent.id, agent.used_vcpus_milli, agent.used_memory_mib
                ),
            );
        }
    }
    check_share_index(state)?;
    let names: BTreeSet<&String> = state
        .compute_environments
        .keys()
        .chain(u.compute_environments.keys())
        .collect();
    for name in names {
        let counted = state.ce_used_vcpus_milli(name);
        let actual = u.compute_environments.get(name).copied().unwrap_or(0);
        if counted != actual {
            return fail(
                INDEXES,
                format!(
                    "compute environment {name} counts {counted} mvCPU in use but its live attempts need {actual}"
                ),
            );
        }
    }
    Ok(())
}

/// The scheduler's list of arrays whose unborn children are RUNNABLE holds, per queue, exactly
/// the parents whose unborn status is RUNNABLE, whose children wait for nothing of their own,
/// and that have a child left to place.
fn unborn_runnable_index(state: &State) -> Result<(), Violation> {
    let mut queues: BTreeSet<&str> = state.job_queues.keys().map(String::as_str).collect();
    let mut wanted = 0;
    for parent in state.jobs.values() {
        let Some(array) = &parent.array else { continue };
        queues.insert(parent.queue.as_str());
        let cursor = state.array_index(&parent.id).map_or(0, |i| i.cursor);
        let want = unborn_status(parent) == JobStatus::Runnable
            && !array.has_child_dependencies()
            && cursor < array.size;
        let listed = state
            .arrays_with_unborn_runnable(&parent.queue)
            .is_some_and(|set| set.contains(&(parent.seq, parent.id.clone())));
        if want != listed {
            return fail(
                INDEXES,
                format!(
                    "array {} ({} unborn, cursor {cursor} of {}) is {}listed among its queue's arrays with unborn RUNNABLE children",
                    parent.id,
                    unborn_status(parent).as_str(),
                    array.size,
                    if listed { "" } else { "not " }
                ),
            );
        }
        wanted += usize::from(want);
    }
    let listed: usize = queues
        .iter()
        .map(|q| state.arrays_with_unborn_runnable(q).map_or(0, |s| s.len()))
        .sum();
    if listed != wanted {
        return fail(
            INDEXES,
            format!(
                "{listed} arrays are listed with unborn RUNNABLE children but {wanted} have them"
            ),
        );
    }
    Ok(())
}
