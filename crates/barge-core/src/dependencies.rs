//! Job dependencies (`dependsOn` on other jobs): a job waits PENDING until every job it depends
//! on has SUCCEEDED, and fails when one of them fails, cascading down the graph.
//!
//! Cycles cannot be built: a job may only depend on jobs that exist when it is submitted, so
//! every edge points from a newer job to an older one (asserted at submit).

use crate::command::{Changes, CoreError, Key};
use crate::limits::DEPENDS_ON_MAX;
use crate::model::{Job, JobDependency, JobStatus};
use crate::state::State;

/// AWS's statusReason for a job whose dependency failed.
pub const REASON_DEPENDENCY_FAILED: &str = "Dependent Job failed";

/// Where a job's dependencies stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dependencies {
    /// All SUCCEEDED (or none).
    Met,
    /// This one FAILED.
    Failed(String),
    /// Some have not finished; the first of them.
    Waiting(String),
}

pub fn dependencies(state: &State, job: &Job) -> Dependencies {
    let mut waiting = None;
    for id in job.depends_on.iter().filter_map(|d| d.job_id.as_ref()) {
        match state.job(id).map(|j| j.status) {
            Some(JobStatus::Succeeded) => {}
            Some(JobStatus::Failed) => return Dependencies::Failed(id.clone()),
            // A dependency that vanished cannot succeed any more.
            None => return Dependencies::Failed(id.clone()),
            Some(_) => {
                waiting.get_or_insert_with(|| id.clone());
            }
        }
    }
    match waiting {
        Some(id) => Dependencies::Waiting(id),
        None => Dependencies::Met,
    }
}

/// Checks a submission's `dependsOn` and returns it with duplicates removed.
pub fn check_depends_on(
    state: &State,
    job_id: &str,
    depends_on: Vec<JobDependency>,
) -> Result<Vec<JobDependency>, CoreError> {
    if depends_on.len() > DEPENDS_ON_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "dependsOn lists {} jobs; Barge allows at most {DEPENDS_ON_MAX}",
            depends_on.len()
        )));
    }
    let mut out: Vec<JobDependency> = Vec::with_capacity(depends_on.len());
    for dep in depends_on {
        if dep.kind.is_some() {
            return Err(CoreError::Invalid(format!(
                "dependsOn type {} applies to array jobs, which this version of Barge does not support yet; leave type out to wait for a whole job",
                dep.kind.as_deref().unwrap_or_default()
            )));
        }
        let Some(id) = dep.job_id.as_deref() else {
            return Err(CoreError::Invalid("dependsOn entries need a jobId".into()));
        };
        if id == job_id || state.job(id).is_none() {
            return Err(CoreError::NotFound(format!(
                "dependsOn job {id} does not exist; a job can only depend on jobs already submitted"
            )));
        }
        if !out.iter().any(|d| d.job_id == dep.job_id) {
            out.push(dep);
        }
    }
    Ok(out)
}

/// Moves the PENDING dependents of every job that just finished: to RUNNABLE when all their
/// dependencies have SUCCEEDED, to FAILED when one failed (which cascades, as the failed
/// dependent is itself a job that just finished).
pub(crate) fn settle(state: &mut State, now: i64, changes: &mut Changes) {
    while let Some(finished) = state.newly_finished.pop() {
        for id in state.dependents_of(&finished) {
            let Some(job) = state.job(&id) else { continue };
            if job.status != JobStatus::Pending {
                continue;
            }
            let next = match dependencies(state, job) {
                Dependencies::Met => JobStatus::Runnable,
                Dependencies::Failed(_) => JobStatus::Failed,
                Dependencies::Waiting(_) => continue,
            };
            let mut job = (**job).clone();
            job.status = next;
            match next {
                JobStatus::Failed => job.status_reason = Some(REASON_DEPENDENCY_FAILED.to_string()),
                _ => job.runnable_at = Some(now),
            }
            state.put_job(job);
            changes.dirty.push(Key::Job(id));
            changes.schedule = true;
        }
    }
}
