//! Legal transitions: statuses move only along their lifecycles, no job is lost, births are legal.

use std::sync::Arc;

use barge_core::arrays::{child_id, job_view, unborn_status};
use barge_core::model::{Job, JobStatus};
use barge_core::State;

use super::attempts::timed_out;
use super::{
    attempt_succeeded, fail, over_jobs, retry_allowed, Violation, ARRAY_CHILDREN, ARRAY_PARENT,
    ATTEMPTS, LEGAL_TRANSITIONS, NO_JOB_LOST,
};

/// Whether `to` is reachable from `from` in at most `hops` legal transitions.
pub fn reachable(from: JobStatus, to: JobStatus, hops: usize) -> bool {
    reachable_by(from, to, hops, &|a, b| a.may_become(b))
}

/// The lifecycle of an array parent, which keeps the books and never runs: admitted to
/// PENDING, where it stays until its children have finished; FAILED at once when it is
/// cancelled, or its dependency fails, before it was admitted.
pub fn parent_may_become(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (Submitted, Pending | Failed) | (Pending, Succeeded | Failed)
    )
}

/// `reachable` along `parent_may_become`.
pub fn parent_reachable(from: JobStatus, to: JobStatus, hops: usize) -> bool {
    reachable_by(from, to, hops, &parent_may_become)
}

fn reachable_by(
    from: JobStatus,
    to: JobStatus,
    hops: usize,
    may: &dyn Fn(JobStatus, JobStatus) -> bool,
) -> bool {
    let mut frontier = vec![from];
    for _ in 0..hops {
        if frontier.contains(&to) {
            return true;
        }
        let mut next = Vec::new();
        for s in &frontier {
            for t in JobStatus::ALL {
                if may(*s, t) && !next.contains(&t) {
                    next.push(t);
                }
            }
        }
        frontier = next;
    }
    frontier.contains(&to)
}

/// Invariant 1 (and 4 within a run): every job of `prev` is still in `next`, each status moved
/// only along `JobStatus::may_become` (at most `hops(job)` transitions: a scheduler pass may
/// admit and place a job, a batch of reports may move it once per report), and a terminal job
/// changes nothing but its tags. New jobs appear only as `created` (a SubmitJob), SUBMITTED.
///
/// Array jobs: a parent moves along `parent_may_become`; its unborn children, which all share
/// the status `unborn_status` derives from it, move along `may_become` within the parent's
/// hops; a child that is born moves from its unborn status to its first born one (RUNNABLE
/// when its dependency settles, STARTING when placed, FAILED by a cascade or a stop by id),
/// which is one more legal transition.
pub fn check_transitions(
    prev: &State,
    next: &State,
    hops: &dyn Fn(&str) -> usize,
    created: Option<&str>,
) -> Result<(), Violation> {
    if prev.jobs.ptr_eq(&next.jobs) {
        return Ok(());
    }
    over_jobs(prev, |jobs| transitions_of(jobs, next, hops))?;
    if next.jobs.len() != prev.jobs.len() {
        let only_created = created.is_some_and(|id| {
            next.jobs.len() == prev.jobs.len() + 1
                && prev.job(id).is_none()
                && next.job(id).is_some()
        });
        let mut new_jobs: Vec<&Arc<Job>> = match created.and_then(|id| next.job(id)) {
            Some(job) if only_created => vec![job],
            _ => next
                .jobs
                .values()
                .filter(|j| prev.job(&j.id).is_none())
                .collect(),
        };
        new_jobs.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        for new in new_jobs {
            if new_node_of_placed_gang(prev, next, new) {
                continue;
            }
            if created != Some(new.id.as_str()) {
                if new.array_child.is_some() {
                    check_birth(prev, new, hops(&new.id).max(1))?;
                    continue;
                }
                return fail(
                    LEGAL_TRANSITIONS,
                    format!("job {} appeared without a SubmitJob for it", new.id),
                );
            }
            if new.status != JobStatus::Submitted {
                return fail(
                    LEGAL_TRANSITIONS,
                    format!(
                        "job {} was created {}, not SUBMITTED",
                        new.id,
                        new.status.as_str()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// A node row appears when its job's first gang is placed: STARTING, with an attempt, while
/// its parent went from RUNNABLE (or SUBMITTED, admitted in the same pass) to STARTING.
fn new_node_of_placed_gang(prev: &State, next: &State, new: &Job) -> bool {
    let Some(n) = &new.node else { return false };
    new.status == JobStatus::Starting
        && new.current.is_some()
        && prev
            .job(&n.parent_id)
            .is_some_and(|p| p.status.is_before_start())
        && next
            .job(&n.parent_id)
            .is_some_and(|p| p.status == JobStatus::Starting)
}

fn transitions_of<'a>(
    jobs: &mut dyn Iterator<Item = &'a Arc<Job>>,
    next: &State,
    hops: &dyn Fn(&str) -> usize,
) -> Result<(), Violation> {
    for old in jobs {
        let Some(new) = next.job(&old.id) else {
            return fail(
                NO_JOB_LOST,
                format!("job {} ({}) disappeared", old.id, old.status.as_str()),
            );
        };
        if Arc::ptr_eq(old, new) {
            continue;
        }
        let parent = old.array.is_some();
        let legal = if parent {
            parent_reachable(old.status, new.status, hops(&old.id))
        } else {
            reachable(old.status, new.status, hops(&old.id))
        };
        if !legal {
            return fail(
                LEGAL_TRANSITIONS,
                format!(
                    "{} {} went {} -> {} (allowed: {} transition(s) along {})",
                    if parent { "array parent" } else { "job" },
                    old.id,
                    old.status.as_str(),
                    new.status.as_str(),
                    hops(&old.id),
                    if parent {
                        "parent_may_become"
                    } else {
                        "JobStatus::may_become"
                    }
                ),
            );
        }
        if parent {
            unborn_transition(old, new, next, hops(&old.id))?;
        }
        let was_live = matches!(old.status, JobStatus::Starting | JobStatus::Running);
        // A node's status follows its job's attempts, not a retry strategy of its own.
        if was_live
            && new.status == JobStatus::Failed
            && !new.is_terminated
            && !new.is_cancelled
            && new.node.is_none()
        {
            // It failed on its own: that is only right when no retry was due.
            if let Some(last) = new.attempts.last() {
                let retry_due = !attempt_succeeded(last)
                    && !timed_out(last)
                    && new.attempts_made() < new.max_attempts()
                    && next.job_queues.contains_key(&new.queue)
                    && retry_allowed(new, last);
                if retry_due {
                    return fail(
                        ATTEMPTS,
                        format!(
                            "job {} FAILED after attempt {} of {} although its retry strategy retries it",
                            new.id,
                            new.attempts_made(),
                            new.max_attempts()
                        ),
                    );
                }
            }
        }
        if old.status.is_terminal() {
            let mut same = (**old).clone();
            same.tags = new.tags.clone();
            if same != **new {
                return fail(
                    LEGAL_TRANSITIONS,
                    format!(
                        "terminal job {} ({}) changed beyond its tags",
                        old.id,
                        old.status.as_str()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The unborn children of an array parent, which all share one derived status, moved legally.
fn unborn_transition(old: &Job, new: &Job, next: &State, hops: usize) -> Result<(), Violation> {
    let Some(array) = &new.array else {
        return fail(
            ARRAY_PARENT,
            format!("array parent {} is no longer an array", new.id),
        );
    };
    let born = next.array_index(&new.id).map_or(0, |i| i.born.len() as u32);
    if born >= array.size {
        return Ok(());
    }
    let (from, to) = (unborn_status(old), unborn_status(new));
    if !reachable(from, to, hops) {
        return fail(
            LEGAL_TRANSITIONS,
            format!(
                "the {} unborn children of array {} went {} -> {} (allowed: {hops} transition(s))",
                array.size - born,
                new.id,
                from.as_str(),
                to.as_str()
            ),
        );
    }
    Ok(())
}

/// A child that was not a row in `prev` was born in `next`: from its unborn status there to
/// RUNNABLE (its dependency succeeded), STARTING (placed) or FAILED (its dependency failed, or
/// it was cancelled or terminated by id), in at most `hops` legal transitions, and never to the
/// status it already had unborn (children are born lazily, as they change). A child that was
/// already FAILED unborn (its parent closed) is never born.
fn check_birth(prev: &State, new: &Job, hops: usize) -> Result<(), Violation> {
    let Some(c) = &new.array_child else {
        return Ok(());
    };
    if new.id != child_id(&c.parent, c.index) {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "child {} was born as index {} of {}",
                new.id, c.index, c.parent
            ),
        );
    }
    let Some(before) = job_view(prev, &new.id) else {
        return fail(
            LEGAL_TRANSITIONS,
            format!(
                "child {} was born, but {} had no such child before",
                new.id, c.parent
            ),
        );
    };
    if before.status.is_terminal() {
        return fail(
            LEGAL_TRANSITIONS,
            format!(
                "child {} was born {} although it had already ended {} unborn",
                new.id,
                new.status.as_str(),
                before.status.as_str()
            ),
        );
    }
    // Laziness: a child is born only as its status changes (placed, its dependency settled,
    // stopped by id), never to sit in the status its parent already gave it.
    let first = matches!(
        new.status,
        JobStatus::Runnable | JobStatus::Starting | JobStatus::Failed
    ) && new.status != before.status;
    if !first || !reachable(before.status, new.status, hops) {
        return fail(
            LEGAL_TRANSITIONS,
            format!(
                "child {} was born {} from {} unborn (a child is born RUNNABLE, STARTING or FAILED, {hops} transition(s) allowed)",
                new.id,
                new.status.as_str(),
                before.status.as_str()
            ),
        );
    }
    Ok(())
}
