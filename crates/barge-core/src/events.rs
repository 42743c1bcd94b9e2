//! Job state changes: which jobs one command moved from one status to another. The server
//! turns each into an EventBridge "Batch Job State Change" event (docs/events.md).
//!
//! Computed from the state before and after the command and the keys it dirtied, so only jobs
//! the command wrote are looked at. A job the command created (a submission) yields nothing
//! while it is SUBMITTED: AWS sends no event for the submission itself. An array child that
//! the command bore is compared with the status it had while unborn (`arrays::job_view`), so
//! being born RUNNABLE → STARTING is one change, not a new job. A command that moves a job
//! through several statuses (a scheduling pass that admits a job and places it at once, an
//! agent's report batch carrying both "running" and "exited") yields one change, from the
//! status before it to the status after it: the statuses passed through within one command
//! were never visible to anyone, so no event claims them.

use std::collections::HashSet;

use crate::arrays::job_view;
use crate::command::Key;
use crate::model::JobStatus;
use crate::state::State;

/// One job's change of status in one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub job_id: String,
    pub from: JobStatus,
    pub to: JobStatus,
}

/// The status changes one command made: `before` is the state it was applied to, `after` the
/// state it left, `dirty` the keys it dirtied (`Changes.dirty[mark..]`). In the order the
/// command first dirtied each job.
pub fn transitions(before: &State, after: &State, dirty: &[Key]) -> Vec<Transition> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for key in dirty {
        let Key::Job(id) = key else { continue };
        if !seen.insert(id.as_str()) {
            continue;
        }
        // Gone after the command (a purge): nothing to say about its status.
        let Some(now) = job_view(after, id) else {
            continue;
        };
        // A job that did not exist was submitted by this command: no event while it is
        // SUBMITTED, and a change from SUBMITTED if the same command moved it on.
        let from = job_view(before, id).map_or(JobStatus::Submitted, |j| j.status);
        if from != now.status {
            out.push(Transition {
                job_id: id.clone(),
                from,
                to: now.status,
            });
        }
    }
    out
}
