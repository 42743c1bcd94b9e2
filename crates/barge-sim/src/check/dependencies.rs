//! Dependency order: a job runs only after its dependencies SUCCEEDED, fails only if one failed.

use barge_core::dependencies::REASON_DEPENDENCY_FAILED;
use barge_core::model::JobStatus;
use barge_core::State;

use super::{fail, Violation, DEPENDENCY_ORDER};

/// Dependency order: a job runs (or ran) only after every job it depends on SUCCEEDED; a
/// PENDING job still has an unfinished dependency and none failed; a job failed for a
/// dependency has one that failed. An array parent stays PENDING while its children run: its
/// children were released only once its own dependencies SUCCEEDED, it waits PENDING before
/// that only while one is unfinished, and it failed for a dependency only if one failed (or
/// one of its own children did: a SEQUENTIAL successor of a failed child fails too).
pub fn check_dependencies(state: &State) -> Result<(), Violation> {
    use barge_core::dependencies::{dependencies, Dependencies};
    for job in state.jobs.values() {
        if job.depends_on.is_empty() {
            continue;
        }
        let deps = dependencies(state, job);
        if let Some(array) = &job.array {
            let failed_child = state
                .array_index(&job.id)
                .is_some_and(|i| i.count(JobStatus::Failed) > 0);
            let ok = if array.released_at.is_some() {
                deps == Dependencies::Met
            } else {
                match job.status {
                    JobStatus::Pending if array.closed.is_none() => {
                        matches!(deps, Dependencies::Waiting(_))
                    }
                    JobStatus::Succeeded => false,
                    JobStatus::Failed
                        if job.status_reason.as_deref() == Some(REASON_DEPENDENCY_FAILED) =>
                    {
                        matches!(deps, Dependencies::Failed(_)) || failed_child
                    }
                    _ => true,
                }
            };
            if !ok {
                return fail(
                    DEPENDENCY_ORDER,
                    format!(
                        "array job {} is {} ({}) while its dependencies stand at {deps:?}",
                        job.id,
                        job.status.as_str(),
                        if array.released_at.is_some() {
                            "children released"
                        } else {
                            "children not released"
                        }
                    ),
                );
            }
            continue;
        }
        let ok = match job.status {
            JobStatus::Runnable
            | JobStatus::Starting
            | JobStatus::Running
            | JobStatus::Succeeded => deps == Dependencies::Met,
            JobStatus::Pending => matches!(deps, Dependencies::Waiting(_)),
            JobStatus::Failed if job.status_reason.as_deref() == Some(REASON_DEPENDENCY_FAILED) => {
                matches!(deps, Dependencies::Failed(_))
            }
            _ => true,
        };
        if !ok {
            return fail(
                DEPENDENCY_ORDER,
                format!(
                    "job {} is {} while its dependencies stand at {deps:?}",
                    job.id,
                    job.status.as_str()
                ),
            );
        }
    }
    Ok(())
}
