//! Job dependencies (`dependsOn` on other jobs): a job waits PENDING until every job it depends
//! on has SUCCEEDED, and fails when one of them fails, cascading down the graph.
//!
//! Cycles cannot be built: a job may only depend on jobs that exist when it is submitted, so
//! every edge points from a newer job to an older one (asserted at submit).

use crate::arrays;
use crate::command::{Changes, CoreError, Key};
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

/// N_TO_N entries wait child by child (see `arrays`); every other entry with a jobId waits
/// for the whole job.
pub fn is_whole_job(dep: &JobDependency) -> bool {
    dep.kind.as_deref() != Some(N_TO_N)
}

pub const N_TO_N: &str = "N_TO_N";
pub const SEQUENTIAL: &str = "SEQUENTIAL";

/// Where a job's whole-job dependencies stand.
pub fn dependencies(state: &State, job: &Job) -> Dependencies {
    let mut waiting = None;
    for id in job
        .depends_on
        .iter()
        .filter(|d| is_whole_job(d))
        .filter_map(|d| d.job_id.as_ref())
    {
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

/// Checks a submission's `dependsOn` (`array_size` is the job's own arrayProperties.size) and
/// returns it with duplicates removed.
pub fn check_depends_on(
    state: &State,
    job_id: &str,
    depends_on: Vec<JobDependency>,
    array_size: Option<u32>,
) -> Result<Vec<JobDependency>, CoreError> {
    let max = state.config.depends_on_max;
    if depends_on.len() > max {
        return Err(CoreError::LimitExceeded(format!(
            "dependsOn lists {} jobs; this Barge allows at most {max} (barge up --depends-on-max)",
            depends_on.len()
        )));
    }
    let mut out: Vec<JobDependency> = Vec::with_capacity(depends_on.len());
    for (i, dep) in depends_on.into_iter().enumerate() {
        let field = format!("dependsOn[{i}]");
        match dep.kind.as_deref() {
            None => {}
            Some(SEQUENTIAL) | Some(N_TO_N) if array_size.is_none() => {
                return Err(CoreError::Invalid(format!(
                    "{field}.type {} orders the children of an array job, and this job has no arrayProperties; leave type out to wait for a whole job",
                    dep.kind.as_deref().unwrap_or_default()
                )))
            }
            Some(SEQUENTIAL) | Some(N_TO_N) => {}
            Some(other) => {
                return Err(CoreError::Invalid(format!(
                    "{field}.type must be N_TO_N or SEQUENTIAL, not {other}"
                )))
            }
        }
        let Some(id) = dep.job_id.as_deref() else {
            if dep.kind.as_deref() == Some(SEQUENTIAL) {
                if !out.iter().any(|d| d.job_id.is_none()) {
                    out.push(dep);
                }
                continue;
            }
            return Err(CoreError::Invalid(format!(
                "{field}.jobId is required (only a SEQUENTIAL entry of an array job may leave it out)"
            )));
        };
        let is_child = match state.job(id) {
            Some(job) => job.array_child.is_some(),
            None => crate::arrays::job_view(state, id).is_some(),
        };
        if is_child {
            return Err(CoreError::Invalid(format!(
                "{field}.jobId {id} is a child of an array job; depend on the array job itself, or on its children one by one with type N_TO_N"
            )));
        }
        let Some(target) = state.job(id).filter(|_| id != job_id) else {
            return Err(CoreError::NotFound(format!(
                "{field}.jobId {id} does not exist; a job can only depend on jobs already submitted"
            )));
        };
        if dep.kind.as_deref() == Some(N_TO_N) {
            let size = target.array.as_ref().map(|a| a.size);
            if size.is_none() {
                return Err(CoreError::Invalid(format!(
                    "{field}: N_TO_N needs jobId {id} to be an array job; leave type out to wait for the whole job"
                )));
            }
            if size != array_size {
                return Err(CoreError::Invalid(format!(
                    "{field}: N_TO_N pairs child i with child i, so array job {id} (size {}) and this one (size {}) must have the same size",
                    size.unwrap_or_default(),
                    array_size.unwrap_or_default()
                )));
            }
        }
        if !out
            .iter()
            .any(|d| d.job_id == dep.job_id && d.kind == dep.kind)
        {
            out.push(dep);
        }
    }
    Ok(out)
}

/// Moves the PENDING dependents of every job that just finished: to RUNNABLE when all their
/// dependencies have SUCCEEDED, to FAILED when one failed (which cascades, as the failed
/// dependent is itself a job that just finished). Array children that finish move their
/// siblings and their parent on (see `arrays`).
pub(crate) fn settle(state: &mut State, now: i64, changes: &mut Changes) {
    // First finished, first settled: an array parent finishes after its last child, and the
    // arrays that depend on it N_TO_N must see that child's result before the parent's.
    let mut next = 0;
    while next < state.newly_finished.len() {
        let finished = state.newly_finished[next].clone();
        next += 1;
        let Some(finished_job) = state.job(&finished).cloned() else {
            continue;
        };
        if let Some(child) = &finished_job.array_child {
            arrays::child_finished(state, child, now, changes);
            continue;
        }
        for id in state.dependents_of(&finished) {
            let Some(job) = state.job(&id) else { continue };
            if job.status != JobStatus::Pending {
                continue;
            }
            if let Some(array) = &job.array {
                if array.n_to_n.contains(&finished) {
                    arrays::n_to_n_finished(state, &id, &finished_job, now, changes);
                }
                let Some(array) = state.job(&id).and_then(|j| j.array.clone()) else {
                    continue;
                };
                // An array closed only past a failed SEQUENTIAL child (cancelled by id) still
                // releases the children before it.
                if array.released_at.is_some() || (array.closed.is_some() && array.closed_from == 0)
                {
                    continue;
                }
                match dependencies(state, &state.jobs[&id]) {
                    Dependencies::Met => arrays::release(state, &id, now, changes),
                    Dependencies::Failed(_) => arrays::close(
                        state,
                        &id,
                        REASON_DEPENDENCY_FAILED.into(),
                        arrays::Stop::None,
                        now,
                        changes,
                    ),
                    Dependencies::Waiting(_) => {}
                }
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
    state.newly_finished.clear();
}
