//! Array jobs. A parent `P` of size n stands for children `P:0` … `P:n-1`, but only the
//! children that have been *born* exist as job rows. A child is born:
//! - when the scheduler places it (arrays without per-child dependencies),
//! - when it becomes RUNNABLE through SEQUENTIAL (child i-1 succeeded) or N_TO_N (child i of
//!   the other array succeeded), or FAILED because that dependency failed,
//! - when a caller cancels or terminates it by id.
//!
//! An unborn child's status follows from its parent (`unborn_status`), so a million-child array
//! is one row until its children run, and cancelling it touches only the children born so far.
//!
//! The parent only keeps the books, as AWS's does: it is PENDING from admission until every
//! child has finished, then SUCCEEDED if all of them succeeded and FAILED otherwise.

use std::borrow::Cow;

use crate::agent::AgentInstruction;
use crate::command::{Changes, CoreError, Effect, Key};
use crate::model::*;
use crate::state::State;

/// AWS's statusReason for a job whose dependency failed (also in `dependencies`).
use crate::dependencies::REASON_DEPENDENCY_FAILED;

impl ArrayJob {
    /// Children wait for something of their own (a sibling, or a child of another array), so
    /// they are born when that happens rather than taken by the scheduler in index order.
    pub fn has_child_dependencies(&self) -> bool {
        self.sequential || !self.n_to_n.is_empty()
    }
}

pub fn child_id(parent: &str, index: u32) -> String {
    format!("{parent}:{index}")
}

/// `P:i` → (P, i). Job ids Barge makes are UUIDs, which have no ':'.
pub fn parse_child_id(id: &str) -> Option<(&str, u32)> {
    let (parent, index) = id.rsplit_once(':')?;
    if parent.is_empty() || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, index.parse().ok()?))
}

/// The status of the unborn children of `parent` that are not closed (see `unborn_status_at`).
pub fn unborn_status(parent: &Job) -> JobStatus {
    let Some(array) = &parent.array else {
        return parent.status;
    };
    if (array.closed.is_some() && array.closed_from == 0) || parent.status.is_terminal() {
        JobStatus::Failed
    } else if parent.status == JobStatus::Submitted {
        JobStatus::Submitted
    } else if array.released_at.is_none() || array.has_child_dependencies() {
        JobStatus::Pending
    } else {
        JobStatus::Runnable
    }
}

/// The status of unborn child `index`: FAILED at or past where the array was closed.
pub fn unborn_status_at(parent: &Job, index: u32) -> JobStatus {
    match &parent.array {
        Some(a) if a.closed.is_some() && index >= a.closed_from => JobStatus::Failed,
        _ => unborn_status(parent),
    }
}

/// Unborn children that are not closed, and may still run.
fn open_unborn(state: &State, parent: &Job) -> u32 {
    let Some(array) = &parent.array else { return 0 };
    let end = match array.closed {
        Some(_) => array.closed_from.min(array.size),
        None => array.size,
    };
    let born_below = state
        .array_index(&parent.id)
        .map_or(0, |i| i.born.range(..end).count() as u32);
    end.saturating_sub(born_below)
}

/// A job by id, born or not: an unborn child is rendered from its parent.
pub fn job_view<'a>(state: &'a State, id: &str) -> Option<Cow<'a, Job>> {
    if let Some(job) = state.job(id) {
        return Some(Cow::Borrowed(&**job));
    }
    let (parent_id, index) = parse_child_id(id)?;
    let parent = state.job(parent_id)?;
    let size = parent.array.as_ref()?.size;
    if index >= size {
        return None;
    }
    let mut child = new_child(parent, index, parent.created_at);
    child.status = unborn_status_at(parent, index);
    if child.status == JobStatus::Failed {
        child.status_reason = parent.array.as_ref().and_then(|a| a.closed.clone());
        child.is_cancelled = parent.is_cancelled;
        child.is_terminated = parent.is_terminated;
    }
    Some(Cow::Owned(child))
}

/// A child as it is born: the parent's definition, overrides, retry strategy and timeout,
/// with no dependencies of its own (its parent's are met, its per-child ones are implied).
fn new_child(parent: &Job, index: u32, now: i64) -> Job {
    let size = parent.array.as_ref().map_or(0, |a| a.size);
    Job {
        id: child_id(&parent.id, index),
        name: parent.name.clone(),
        seq: parent.seq,
        queue: parent.queue.clone(),
        definition_name: parent.definition_name.clone(),
        definition_revision: parent.definition_revision,
        status: JobStatus::Runnable,
        status_reason: None,
        created_at: now,
        runnable_at: Some(now),
        started_at: None,
        stopped_at: None,
        parameters: parent.parameters.clone(),
        container: parent.container.clone(),
        resources: parent.resources,
        retry_strategy: parent.retry_strategy.clone(),
        timeout: parent.timeout.clone(),
        propagate_tags: parent.propagate_tags,
        platform_capabilities: parent.platform_capabilities.clone(),
        scheduling_priority: parent.scheduling_priority,
        share_identifier: parent.share_identifier.clone(),
        depends_on: Vec::new(),
        tags: parent.tags.clone(),
        attempts: Vec::new(),
        current: None,
        is_cancelled: false,
        is_terminated: false,
        stop_reason: None,
        multinode: None,
        node: None,
        array: None,
        array_child: Some(ArrayChild {
            parent: parent.id.clone(),
            index,
            size,
        }),
    }
}

/// An unborn child the scheduler may place now, ready to be born as it is placed.
pub fn unborn_runnable(state: &State, id: &str, now: i64) -> Option<Job> {
    let (parent_id, index) = parse_child_id(id)?;
    let parent = state.job(parent_id)?;
    let array = parent.array.as_ref()?;
    if index >= array.size
        || state.jobs.contains_key(id)
        || unborn_status_at(parent, index) != JobStatus::Runnable
    {
        return None;
    }
    Some(new_child(parent, index, now))
}

/// Counts of the parent's children per status, born and unborn: AWS's statusSummary.
pub fn status_summary(state: &State, parent: &Job) -> Vec<(JobStatus, u32)> {
    let size = parent.array.as_ref().map_or(0, |a| a.size);
    let index = state.array_index(&parent.id);
    let born = index.map_or(0, |i| i.born.len() as u32);
    let open = open_unborn(state, parent);
    let closed = size.saturating_sub(born).saturating_sub(open);
    let open_status = unborn_status(parent);
    JobStatus::ALL
        .into_iter()
        .map(|s| {
            let mut n = index.map_or(0, |i| i.count(s));
            if s == open_status {
                n += open;
            }
            if s == JobStatus::Failed {
                n += closed;
            }
            (s, n)
        })
        .collect()
}

fn birth(state: &mut State, child: Job, changes: &mut Changes) {
    changes.dirty.push(Key::Job(child.id.clone()));
    changes.schedule = true;
    state.put_job(child);
}

fn put(state: &mut State, job: Job, changes: &mut Changes) {
    changes.dirty.push(Key::Job(job.id.clone()));
    state.put_job(job);
}

/// Where a child with per-child dependencies stands.
enum Ready {
    Yes,
    Waiting,
    Failed,
}

fn child_status(state: &State, parent_id: &str, index: u32) -> Option<JobStatus> {
    job_view(state, &child_id(parent_id, index)).map(|j| j.status)
}

fn ready(state: &State, parent: &Job, index: u32) -> Ready {
    let Some(array) = &parent.array else {
        return Ready::Waiting;
    };
    let mut waiting = false;
    let mut deps: Vec<(String, u32)> = array.n_to_n.iter().map(|a| (a.clone(), index)).collect();
    if array.sequential && index > 0 {
        deps.push((parent.id.clone(), index - 1));
    }
    for (dep_parent, dep_index) in deps {
        match child_status(state, &dep_parent, dep_index) {
            Some(JobStatus::Succeeded) => {}
            Some(JobStatus::Failed) | None => return Ready::Failed,
            Some(_) => waiting = true,
        }
    }
    if waiting {
        Ready::Waiting
    } else {
        Ready::Yes
    }
}

/// Gives birth to child `index` if its per-child dependencies have settled: RUNNABLE when
/// they succeeded, FAILED when one failed (which cascades further, as a finished job).
fn settle_child(state: &mut State, parent_id: &str, index: u32, now: i64, changes: &mut Changes) {
    let id = child_id(parent_id, index);
    let Some(parent) = state.job(parent_id).cloned() else {
        return;
    };
    if state.jobs.contains_key(&id)
        || parent.status.is_terminal()
        || parent.array.as_ref().is_none_or(|a| {
            a.released_at.is_none()
                || (a.closed.is_some() && index >= a.closed_from)
                || index >= a.size
        })
    {
        return;
    }
    let mut child = new_child(&parent, index, now);
    match ready(state, &parent, index) {
        Ready::Yes => {}
        Ready::Waiting => return,
        Ready::Failed => {
            child.status = JobStatus::Failed;
            child.status_reason = Some(REASON_DEPENDENCY_FAILED.to_string());
            child.runnable_at = None;
            child.stopped_at = Some(now);
        }
    }
    birth(state, child, changes);
}

/// The parent's own dependencies are met: its children may start. Children with per-child
/// dependencies that are already satisfied (or failed) are born now.
pub(crate) fn release(state: &mut State, parent_id: &str, now: i64, changes: &mut Changes) {
    let Some(parent) = state.job(parent_id) else {
        return;
    };
    let mut parent = (**parent).clone();
    let Some(array) = parent.array.as_mut() else {
        return;
    };
    if array.released_at.is_some() {
        return;
    }
    array.released_at = Some(now);
    let sequential = array.sequential;
    let n_to_n = array.n_to_n.clone();
    parent.status = JobStatus::Pending;
    put(state, parent, changes);
    changes.schedule = true;
    if n_to_n.is_empty() {
        if sequential {
            settle_child(state, parent_id, 0, now, changes);
        }
        return;
    }
    // Only children of the other arrays that were born can have finished; the rest are
    // decided when they finish, or all at once if their array closes.
    let mut candidates: Vec<u32> = Vec::new();
    for other in &n_to_n {
        if let Some(index) = state.array_index(other) {
            candidates.extend(index.born.iter().copied());
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    for index in candidates {
        settle_child(state, parent_id, index, now, changes);
    }
    for other in &n_to_n {
        if let Some(other) = state.job(other).cloned() {
            n_to_n_finished(state, parent_id, &other, now, changes);
        }
    }
}

/// How `close` treats the children already born.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Leave them (a dependency failed: siblings that run finish on their own).
    None,
    /// Cancel those that have not started.
    Cancel,
    /// Cancel those that have not started and stop those that have.
    Terminate,
}

/// No more children of `parent_id` will be born: the unborn ones end FAILED with `reason`.
/// Finishes the parent when nothing it has born is still going.
pub(crate) fn close(
    state: &mut State,
    parent_id: &str,
    reason: String,
    stop: Stop,
    now: i64,
    changes: &mut Changes,
) {
    let Some(parent) = state.job(parent_id) else {
        return;
    };
    if parent.status.is_terminal() {
        return;
    }
    let mut parent = (**parent).clone();
    let Some(array) = parent.array.as_mut() else {
        return;
    };
    if array.closed.is_none() {
        array.closed = Some(reason.clone());
    }
    array.closed_from = 0;
    match stop {
        Stop::None => {}
        Stop::Cancel => parent.is_cancelled = true,
        Stop::Terminate => parent.is_terminated = true,
    }
    put(state, parent, changes);
    if stop != Stop::None {
        let born: Vec<u32> = state
            .array_index(parent_id)
            .map(|i| i.born.iter().copied().collect())
            .unwrap_or_default();
        for index in born {
            let id = child_id(parent_id, index);
            let Some(child) = state.job(&id) else {
                continue;
            };
            let mut child = (**child).clone();
            if child.status.is_before_start() {
                child.status = JobStatus::Failed;
                child.status_reason = Some(reason.clone());
                child.stopped_at = Some(now);
                if stop == Stop::Cancel {
                    child.is_cancelled = true;
                } else {
                    child.is_terminated = true;
                }
                put(state, child, changes);
            } else if stop == Stop::Terminate
                && child.current.is_some()
                && child.stop_reason.is_none()
            {
                let attempt = child.current.as_ref().expect("checked");
                changes.effects.push(Effect::Agent {
                    agent_id: attempt.agent_id.clone(),
                    instruction: AgentInstruction::Stop {
                        job_id: id.clone(),
                        attempt_id: attempt.id.clone(),
                        grace_ms: state.stop_grace_ms(&attempt.compute_environment),
                    },
                });
                child.stop_reason = Some(reason.clone());
                child.is_terminated = true;
                put(state, child, changes);
            }
        }
    }
    finish_if_done(state, parent_id, now, changes);
}

/// SEQUENTIAL child `index` failed: the unborn children after it fail with it (the ones
/// before it do not depend on it and go on).
fn close_after(state: &mut State, parent_id: &str, index: u32, now: i64, changes: &mut Changes) {
    let Some(parent) = state.job(parent_id) else {
        return;
    };
    if parent.status.is_terminal() {
        return;
    }
    let mut parent = (**parent).clone();
    let Some(array) = parent.array.as_mut() else {
        return;
    };
    let from = index + 1;
    if array.closed.is_some() && array.closed_from <= from {
        return;
    }
    array.closed = Some(REASON_DEPENDENCY_FAILED.into());
    array.closed_from = from;
    put(state, parent, changes);
    finish_if_done(state, parent_id, now, changes);
}

/// Ends the parent once every child has finished (or will never be born).
pub(crate) fn finish_if_done(state: &mut State, parent_id: &str, now: i64, changes: &mut Changes) {
    let Some(parent) = state.job(parent_id) else {
        return;
    };
    let Some(array) = &parent.array else { return };
    if parent.status.is_terminal() {
        return;
    }
    let index = state.array_index(parent_id);
    let born = index.map_or(0, |i| i.born.len() as u32);
    let succeeded = index.map_or(0, |i| i.count(JobStatus::Succeeded));
    let failed = index.map_or(0, |i| i.count(JobStatus::Failed));
    if succeeded + failed < born || open_unborn(state, parent) > 0 {
        return;
    }
    let mut parent = (**parent).clone();
    let size = array.size;
    if succeeded == size {
        parent.status = JobStatus::Succeeded;
    } else {
        parent.status = JobStatus::Failed;
        parent.status_reason = Some(
            array
                .closed
                .clone()
                .unwrap_or_else(|| format!("{failed} of {size} array child jobs failed")),
        );
    }
    parent.stopped_at = Some(now);
    put(state, parent, changes);
}

/// A child just finished: start what waited for it (its next sibling under SEQUENTIAL, child
/// i of the arrays that depend on its parent N_TO_N) and end the parent if it was the last.
pub(crate) fn child_finished(
    state: &mut State,
    child: &ArrayChild,
    now: i64,
    changes: &mut Changes,
) {
    let Some(status) = state
        .job(&child_id(&child.parent, child.index))
        .map(|j| j.status)
    else {
        return;
    };
    let sequential = state
        .job(&child.parent)
        .and_then(|p| p.array.as_ref())
        .is_some_and(|a| a.sequential);
    if sequential && child.index + 1 < child.size {
        if status == JobStatus::Failed {
            close_after(state, &child.parent, child.index, now, changes);
        } else {
            settle_child(state, &child.parent, child.index + 1, now, changes);
        }
    }
    for dependent in state.dependents_of(&child.parent) {
        let waits = state
            .job(&dependent)
            .and_then(|d| d.array.as_ref())
            .is_some_and(|a| a.n_to_n.contains(&child.parent));
        if waits {
            settle_child(state, &dependent, child.index, now, changes);
        }
    }
    finish_if_done(state, &child.parent, now, changes);
}

/// An array this one depends on N_TO_N has finished. If it failed, the children still unborn
/// here whose counterpart did not succeed wait for something that will never happen: they fail.
pub(crate) fn n_to_n_finished(
    state: &mut State,
    parent_id: &str,
    other: &Job,
    now: i64,
    changes: &mut Changes,
) {
    if other.status != JobStatus::Failed {
        return;
    }
    let Some(parent) = state.job(parent_id).cloned() else {
        return;
    };
    let Some(array) = &parent.array else { return };
    if array.released_at.is_none() || parent.status.is_terminal() {
        return;
    }
    if !array.sequential && array.n_to_n.len() == 1 {
        // Every unborn child here waits for exactly the counterpart that did not succeed
        // (one that did gave birth to it already): all of them fail, without a row each.
        close(
            state,
            parent_id,
            REASON_DEPENDENCY_FAILED.into(),
            Stop::None,
            now,
            changes,
        );
        return;
    }
    // Otherwise a child may wait for something else too (its previous sibling, another
    // array), so only the ones whose counterpart here did not succeed fail, each as a row;
    // under SEQUENTIAL the first of them takes the rest with it.
    let born = state.array_index(parent_id).map(|i| i.born.clone());
    let unborn: Vec<u32> = (0..array.size)
        .filter(|i| born.as_ref().is_none_or(|b| !b.contains(i)))
        .filter(|i| child_status(state, &other.id, *i) != Some(JobStatus::Succeeded))
        .collect();
    for index in unborn {
        settle_child(state, parent_id, index, now, changes);
        if array.sequential {
            break;
        }
    }
}

/// Cancel or terminate by id of a child that has not been born: it is born FAILED.
pub(crate) fn stop_unborn(
    state: &mut State,
    id: &str,
    reason: String,
    terminate: bool,
    now: i64,
    changes: &mut Changes,
) -> Result<(), CoreError> {
    let view = job_view(state, id)
        .map(|j| j.into_owned())
        .ok_or_else(|| CoreError::NotFound(format!("job {id} does not exist")))?;
    if view.status.is_terminal() {
        return Ok(());
    }
    let mut child = view;
    child.status = JobStatus::Failed;
    child.status_reason = Some(reason);
    child.created_at = now;
    child.runnable_at = None;
    child.stopped_at = Some(now);
    if terminate {
        child.is_terminated = true;
    } else {
        child.is_cancelled = true;
    }
    birth(state, child, changes);
    Ok(())
}
