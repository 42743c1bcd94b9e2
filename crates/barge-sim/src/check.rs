//! The invariant checkers. Each is a plain function over core states (and, where it needs them,
//! what a command returned), so the simulator runs them after every command and the tests can
//! feed them hand-corrupted states to show that they do fail.
//!
//! The checkers are grouped by the invariants they hold, one submodule each; every one is
//! re-exported here, so a checker's path is `check::X` whichever file it lives in.

mod arrays;
mod attempts;
mod commands;
mod dependencies;
mod gangs;
mod indexes;
mod liveness;
mod placements;
mod queues;
mod reasons;
mod transitions;

use std::fmt;
use std::sync::Arc;

use barge_core::model::Job;
use barge_core::State;

use indexes::indexes_with;
use placements::capacity_with;

pub use arrays::{check_arrays, check_cascade_causes, child_status};
pub use attempts::{
    attempt_succeeded, check_attempts, check_live_attempts, check_reports, retry_allowed,
};
pub use commands::{check_dirty, check_submit, check_unchanged};
pub use dependencies::check_dependencies;
pub use gangs::check_gangs;
pub use indexes::check_indexes;
pub use liveness::could_run;
pub use placements::{check_capacity, check_placements, usage, Usage};
pub use queues::{
    check_queue_order, check_queue_priority, check_share_index, check_share_weights, share_key,
};
pub use reasons::check_waiting_reasons;
pub use transitions::{check_transitions, parent_may_become, parent_reachable, reachable};

pub const LEGAL_TRANSITIONS: &str = "only legal transitions";
pub const CAPACITY: &str = "capacity never over-committed";
pub const ONE_LIVE_ATTEMPT: &str = "at most one live attempt per job";
pub const NO_JOB_LOST: &str = "no acknowledged job lost";
pub const ATTEMPTS: &str = "attempts accounting";
pub const INDEXES: &str = "derived indexes match a rebuild";
pub const ATOMIC: &str = "a refused command changes nothing";
pub const DURABLE: &str = "every change is named in Changes.dirty";
pub const RESTART: &str = "a restart loads exactly what was committed";
pub const STALE_REPORTS: &str = "reports for stale attempts are refused";
pub const PLACEMENT: &str = "placements are legal";
pub const ACCEPTED: &str = "accepted submissions are valid";
pub const ALWAYS_OK: &str = "internal commands never fail";
pub const AGENT_MODEL: &str = "agents run exactly the live attempts";
pub const LIVENESS: &str = "every job that can run finishes";
pub const WAITING_REASON: &str = "every waiting job says why";
pub const NO_PANIC: &str = "the core never panics";
pub const DEPENDENCY_ORDER: &str = "dependency order respected";
pub const QUEUE_ORDER: &str = "each queue dispatches in its order";
pub const QUEUE_PRIORITY: &str = "a higher-priority queue is not passed over by a lower one";
pub const SHARE_WEIGHTS: &str = "share weights are honoured";
pub const GANG: &str = "gang all-or-none";
pub const ARRAY_CHILDREN: &str = "no array child lost";
pub const ARRAY_PARENT: &str = "an array parent's status follows its children";
pub const SEQUENTIAL_ORDER: &str = "SEQUENTIAL children run in index order";
pub const N_TO_N_ORDER: &str = "N_TO_N children wait for their counterparts";

/// One broken invariant: which, and what exactly was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant \"{}\" violated: {}",
            self.invariant, self.detail
        )
    }
}

fn fail<T>(invariant: &'static str, detail: impl Into<String>) -> Result<T, Violation> {
    Err(Violation::new(invariant, detail))
}

/// Jobs in submission order, so every checker reports the same first violation on every run
/// (the state's job map iterates in a per-process random order).
pub fn jobs_sorted(state: &State) -> Vec<&Arc<Job>> {
    let mut jobs: Vec<&Arc<Job>> = state.jobs.values().collect();
    jobs.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    jobs
}

/// Runs a check over the jobs in the map's own order (fast, but random per process) and, only
/// when it fails, again in submission order, so the violation reported is the same every run.
fn over_jobs<'a>(
    state: &'a State,
    check: impl Fn(&mut dyn Iterator<Item = &'a Arc<Job>>) -> Result<(), Violation>,
) -> Result<(), Violation> {
    if check(&mut state.jobs.values()).is_ok() {
        return Ok(());
    }
    check(&mut jobs_sorted(state).into_iter())
}

/// Everything that must hold of any single state (after any committed command).
pub fn check_state(state: &State) -> Result<(), Violation> {
    check_dependencies(state)?;
    check_arrays(state)?;
    check_cascade_causes(state)?;
    check_live_attempts(state)?;
    check_gangs(state)?;
    check_attempts(state)?;
    let u = usage(state);
    indexes_with(state, &u)?;
    capacity_with(state, &u)
}
