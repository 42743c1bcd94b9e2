//! Waiting reasons: every waiting job, born or unborn, says why.

use std::sync::Arc;

use barge_core::arrays::{child_id, job_view, unborn_status_at};
use barge_core::model::Job;
use barge_core::State;

use super::{fail, over_jobs, Violation, ARRAY_CHILDREN, WAITING_REASON};

/// "Failing to place is data": every SUBMITTED, PENDING or RUNNABLE job has a non-empty reason
/// it is waiting, derived from the state.
pub fn check_waiting_reasons(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| waiting_reasons_of(state, jobs))
}

fn waiting_reasons_of(
    state: &State,
    jobs: &mut dyn Iterator<Item = &Arc<Job>>,
) -> Result<(), Violation> {
    for job in jobs {
        if job.array.is_some() {
            unborn_reason(state, job)?;
        }
        if !job.status.is_before_start() {
            continue;
        }
        let reason = barge_core::reason::why_waiting(state, job);
        if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return fail(
                WAITING_REASON,
                format!(
                    "job {} is {} in queue {} with no reason ({reason:?})",
                    job.id,
                    job.status.as_str(),
                    job.queue
                ),
            );
        }
    }
    Ok(())
}

/// The unborn children of a parent that still wait say why too (as DescribeJobs renders them):
/// the lowest unborn one stands for all of them.
fn unborn_reason(state: &State, parent: &Job) -> Result<(), Violation> {
    let Some(array) = &parent.array else {
        return Ok(());
    };
    let cursor = state.array_index(&parent.id).map_or(0, |i| i.cursor);
    // The lowest unborn child may lie past where a SEQUENTIAL failure closed the array: then
    // it is FAILED with the array's reason, and waits for nothing.
    if cursor >= array.size || !unborn_status_at(parent, cursor).is_before_start() {
        return Ok(());
    }
    let id = child_id(&parent.id, cursor);
    let Some(child) = job_view(state, &id) else {
        return fail(
            ARRAY_CHILDREN,
            format!("unborn child {id} cannot be rendered"),
        );
    };
    let reason = barge_core::reason::why_waiting(state, &child);
    if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return fail(
            WAITING_REASON,
            format!(
                "unborn child {id} is {} with no reason ({reason:?})",
                child.status.as_str()
            ),
        );
    }
    Ok(())
}
