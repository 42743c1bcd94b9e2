//! The invariant checkers. Each is a plain function over core states (and, where it needs them,
//! what a command returned), so the simulator runs them after every command and the tests can
//! feed them hand-corrupted states to show that they do fail.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use barge_core::agent::{AgentInstruction, AgentReport};
use barge_core::apply::REASON_CONTAINER_EXITED;
use barge_core::arrays::{child_id, job_view, status_summary, unborn_status, unborn_status_at};
use barge_core::command::{Effect, Key};
use barge_core::dependencies::REASON_DEPENDENCY_FAILED;
use barge_core::fairshare::{self, RunnableKey, ShareLoad};
use barge_core::model::*;
use barge_core::resources::{agent_could_fit, resources_of};
use barge_core::State;

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

/// The status of child `index` of `parent`, born or not: its row's, or the one its parent
/// gives its unborn children. None when there is no such child.
pub fn child_status(state: &State, parent: &str, index: u32) -> Option<JobStatus> {
    if let Some(job) = state.job(&child_id(parent, index)) {
        return Some(job.status);
    }
    let p = state.job(parent)?;
    (index < p.array.as_ref()?.size).then(|| unborn_status_at(p, index))
}

/// The born status of child `index` of `parent`: None while it is unborn.
fn born_status(state: &State, parent: &str, index: u32) -> Option<JobStatus> {
    state.job(&child_id(parent, index)).map(|j| j.status)
}

/// The children of one parent that exist as rows, as the rows say.
#[derive(Default)]
struct Born {
    indexes: BTreeSet<u32>,
    counts: BTreeMap<JobStatus, u32>,
}

impl Born {
    fn count(&self, status: JobStatus) -> u32 {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

/// Array jobs, over every parent and every born child (never over unborn ones, so a large
/// array costs what it has born):
/// - no child lost: the born children are exactly the rows `P:i` whose `array_child` names P,
///   each with `i` below the size; the parent's index agrees with them (born set, counts per
///   status, cursor); born + unborn = size, and statusSummary adds up to the size;
/// - a born child never waits for a dependency (it is born when its dependency settles), and
///   is FAILED whenever its parent's own dependencies have not been met;
/// - the parent never runs, and is terminal exactly when every child is (every born one is,
///   and the unborn ones are FAILED because the parent closed), SUCCEEDED exactly when every
///   child SUCCEEDED;
/// - SEQUENTIAL: a child i > 0 that is RUNNABLE or later, or ran, has child i-1 SUCCEEDED;
/// - N_TO_N: a child i that is RUNNABLE or later, or ran, has child i of every array it depends
///   on SUCCEEDED (so one whose counterpart FAILED never runs);
/// - a child born FAILED by a cascade has a per-child dependency that FAILED, and a child whose
///   per-child dependencies all ended (as born rows) has been born.
pub fn check_arrays(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| arrays_of(state, jobs))
}

fn arrays_of<'a>(
    state: &'a State,
    jobs: &mut dyn Iterator<Item = &'a Arc<Job>>,
) -> Result<(), Violation> {
    let mut parents: Vec<&Arc<Job>> = Vec::new();
    let mut born: BTreeMap<&str, Born> = BTreeMap::new();
    for job in jobs {
        if job.array.is_some() {
            if job.array_child.is_some() {
                return fail(
                    ARRAY_CHILDREN,
                    format!("job {} is both an array parent and a child", job.id),
                );
            }
            parents.push(job);
            continue;
        }
        let Some(c) = &job.array_child else { continue };
        child_of(state, job, c)?;
        let b = born.entry(c.parent.as_str()).or_default();
        b.indexes.insert(c.index);
        *b.counts.entry(job.status).or_insert(0) += 1;
    }
    let none = Born::default();
    for parent in parents {
        parent_of(state, parent, born.get(parent.id.as_str()).unwrap_or(&none))?;
    }
    Ok(())
}

/// One born child, against its parent and its per-child dependencies.
fn child_of(state: &State, job: &Job, c: &ArrayChild) -> Result<(), Violation> {
    use JobStatus::*;
    let Some(parent) = state.job(&c.parent) else {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "child {} names parent {}, which does not exist",
                job.id, c.parent
            ),
        );
    };
    let Some(array) = &parent.array else {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "child {} names parent {}, which is not an array",
                job.id, c.parent
            ),
        );
    };
    if job.id != child_id(&c.parent, c.index) || c.index >= array.size || c.size != array.size {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "row {} says it is child {} of {} (size {}), but the array has size {}",
                job.id, c.index, c.parent, c.size, array.size
            ),
        );
    }
    if job.queue != parent.queue || job.seq != parent.seq || !job.depends_on.is_empty() {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "child {} differs from its parent in queue, seq or dependencies",
                job.id
            ),
        );
    }
    if matches!(job.status, Submitted | Pending) {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "child {} is born {}: a child is born only once its dependency settles",
                job.id,
                job.status.as_str()
            ),
        );
    }
    if job.status != Failed && array.released_at.is_none() {
        return fail(
            DEPENDENCY_ORDER,
            format!(
                "child {} is {} although its parent's dependencies have not been met",
                job.id,
                job.status.as_str()
            ),
        );
    }
    let ran =
        matches!(job.status, Runnable | Starting | Running | Succeeded) || !job.attempts.is_empty();
    let before = (array.sequential && c.index > 0).then(|| c.index - 1);
    if let Some(before) = before {
        let status = child_status(state, &c.parent, before);
        if ran && status != Some(Succeeded) {
            return fail(
                SEQUENTIAL_ORDER,
                format!(
                    "child {} is {}{} while child {before} is {}",
                    job.id,
                    job.status.as_str(),
                    if job.attempts.is_empty() {
                        ""
                    } else {
                        " (it ran)"
                    },
                    status.map_or("missing", JobStatus::as_str)
                ),
            );
        }
    }
    for other in &array.n_to_n {
        let status = child_status(state, other, c.index);
        if ran && status != Some(Succeeded) {
            return fail(
                N_TO_N_ORDER,
                format!(
                    "child {} is {}{} while its counterpart {} is {}",
                    job.id,
                    job.status.as_str(),
                    if job.attempts.is_empty() {
                        ""
                    } else {
                        " (it ran)"
                    },
                    child_id(other, c.index),
                    status.map_or("missing", JobStatus::as_str)
                ),
            );
        }
    }
    let cascaded = job.status == Failed
        && job.status_reason.as_deref() == Some(REASON_DEPENDENCY_FAILED)
        && job.attempts.is_empty()
        && !job.is_cancelled
        && !job.is_terminated;
    if cascaded {
        let failed = |s: Option<JobStatus>| s.is_none_or(|s| s == Failed);
        let cause = before.is_some_and(|b| failed(child_status(state, &c.parent, b)))
            || array
                .n_to_n
                .iter()
                .any(|o| failed(child_status(state, o, c.index)));
        if !cause {
            return fail(
                if array.n_to_n.is_empty() {
                    SEQUENTIAL_ORDER
                } else {
                    N_TO_N_ORDER
                },
                format!(
                    "child {} was born FAILED for a dependency, but none of its dependencies failed",
                    job.id
                ),
            );
        }
    }
    Ok(())
}

/// One parent, against the rows of its born children and its index.
fn parent_of(state: &State, parent: &Job, rows: &Born) -> Result<(), Violation> {
    use JobStatus::*;
    let array = parent.array.as_ref().expect("parents only");
    let id = &parent.id;
    let index = state.array_index(id);
    let indexed: BTreeSet<u32> = index
        .map(|i| i.born.iter().copied().collect())
        .unwrap_or_default();
    if indexed != rows.indexes {
        let lost = indexed.difference(&rows.indexes).next();
        let extra = rows.indexes.difference(&indexed).next();
        return fail(
            ARRAY_CHILDREN,
            format!(
                "array {id}: its index lists {} born children and {} rows exist (first listed without a row: {lost:?}, first row not listed: {extra:?})",
                indexed.len(),
                rows.indexes.len()
            ),
        );
    }
    for s in JobStatus::ALL {
        let counted = index.map_or(0, |i| i.count(s));
        if counted != rows.count(s) {
            return fail(
                ARRAY_CHILDREN,
                format!(
                    "array {id}: its index counts {counted} {} children, the rows {}",
                    s.as_str(),
                    rows.count(s)
                ),
            );
        }
    }
    let lowest_unborn = (0..).find(|i| !rows.indexes.contains(i)).unwrap_or(0);
    if let Some(i) = index {
        if i.cursor != lowest_unborn {
            return fail(
                ARRAY_CHILDREN,
                format!(
                    "array {id}: cursor {} but the lowest unborn child is {lowest_unborn}",
                    i.cursor
                ),
            );
        }
    }
    let born = rows.indexes.len() as u32;
    if born > array.size {
        return fail(
            ARRAY_CHILDREN,
            format!("array {id} of size {} has {born} born children", array.size),
        );
    }
    let unborn = array.size - born;
    // A closed array's unborn children are FAILED from `closed_from` on (0: all of them); the
    // ones before it keep the parent's open status.
    let open_end = match array.closed {
        Some(_) => array.closed_from.min(array.size),
        None => array.size,
    };
    let open_unborn = open_end - rows.indexes.range(..open_end).count() as u32;
    let closed_unborn = unborn - open_unborn;
    let unborn_is = unborn_status(parent);
    let summary = status_summary(state, parent);
    let total: u64 = summary.iter().map(|(_, n)| u64::from(*n)).sum();
    if total != u64::from(array.size) {
        return fail(
            ARRAY_CHILDREN,
            format!(
                "array {id}: statusSummary adds up to {total} children, not {}",
                array.size
            ),
        );
    }
    for (s, n) in &summary {
        let expected = rows.count(*s)
            + if *s == unborn_is { open_unborn } else { 0 }
            + if *s == Failed { closed_unborn } else { 0 };
        if *n != expected {
            return fail(
                ARRAY_CHILDREN,
                format!(
                    "array {id}: statusSummary says {n} {} children, but {} are born so, {open_unborn} unborn ones are {} and {closed_unborn} closed ones FAILED",
                    s.as_str(),
                    rows.count(*s),
                    unborn_is.as_str()
                ),
            );
        }
    }
    for other in &array.n_to_n {
        let size = state
            .job(other)
            .and_then(|o| o.array.as_ref())
            .map(|a| a.size);
        if size != Some(array.size) {
            return fail(
                N_TO_N_ORDER,
                format!(
                    "array {id} (size {}) depends N_TO_N on {other}, which is not an array of that size ({size:?})",
                    array.size
                ),
            );
        }
    }

    // The parent's own status.
    if matches!(parent.status, Runnable | Starting | Running)
        || parent.current.is_some()
        || !parent.attempts.is_empty()
    {
        return fail(
            ARRAY_PARENT,
            format!(
                "array parent {id} is {} with {} attempt(s): a parent never runs",
                parent.status.as_str(),
                parent.attempts_made()
            ),
        );
    }
    let succeeded = rows.count(Succeeded);
    let finished = succeeded + rows.count(Failed);
    let all_done = finished == born && open_unborn == 0;
    if parent.status.is_terminal() != all_done {
        return fail(
            ARRAY_PARENT,
            format!(
                "array parent {id} is {} while {finished} of {born} born children have finished and {unborn} unborn ones {} (closed: {:?})",
                parent.status.as_str(),
                if array.closed.is_some() { "are FAILED" } else { "may still run" },
                array.closed
            ),
        );
    }
    if (parent.status == Succeeded) != (succeeded == array.size) {
        return fail(
            ARRAY_PARENT,
            format!(
                "array parent {id} is {} while {succeeded} of its {} children SUCCEEDED",
                parent.status.as_str(),
                array.size
            ),
        );
    }
    if parent.status == Submitted && array.released_at.is_some() {
        return fail(
            ARRAY_PARENT,
            format!("array parent {id} is SUBMITTED but its children were released"),
        );
    }

    // Children whose per-child dependencies have settled have been born: the dependency that
    // ended last gave birth to them (only ended born rows count: an unborn counterpart that
    // is FAILED because its array closed is decided when that array finishes).
    if !array.has_child_dependencies()
        || array.released_at.is_none()
        || array.closed.is_some()
        || parent.status.is_terminal()
    {
        return Ok(());
    }
    let mut candidates: BTreeSet<u32> = BTreeSet::new();
    if array.sequential {
        candidates.insert(0);
        candidates.extend(rows.indexes.iter().map(|i| i + 1));
    }
    for other in &array.n_to_n {
        if let Some(i) = state.array_index(other) {
            candidates.extend(i.born.iter().copied());
        }
    }
    for i in candidates {
        if i >= array.size || rows.indexes.contains(&i) {
            continue;
        }
        let mut deps: Vec<(&str, u32)> = array.n_to_n.iter().map(|o| (o.as_str(), i)).collect();
        if array.sequential && i > 0 {
            deps.push((id.as_str(), i - 1));
        }
        let statuses: Vec<Option<JobStatus>> = deps
            .iter()
            .map(|(p, j)| born_status(state, p, *j))
            .collect();
        let failed = statuses.contains(&Some(Failed));
        let succeeded = statuses.iter().all(|s| *s == Some(Succeeded));
        if failed || succeeded {
            return fail(
                if array.n_to_n.is_empty() {
                    SEQUENTIAL_ORDER
                } else {
                    N_TO_N_ORDER
                },
                format!(
                    "child {} is still unborn ({}) although its dependencies {} ended {}",
                    child_id(id, i),
                    unborn_is.as_str(),
                    deps.iter()
                        .map(|(p, j)| child_id(p, *j))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if failed {
                        "with a failure"
                    } else {
                        "SUCCEEDED"
                    }
                ),
            );
        }
    }
    Ok(())
}

/// A failure cascades only to dependents: when an array closed because a dependency failed,
/// its unborn children are FAILED for that reason, so each must depend on something that
/// failed. The lowest unborn child, which depends on the least, stands for them all: the
/// parent's own dependencies failed, or (SEQUENTIAL) a child before it failed, or (N_TO_N)
/// its counterpart in another array failed.
/// (It found two core bugs: a failed SEQUENTIAL child closed the children before it too, and an
/// N_TO_N array saw its partner's end before the partner's last child.)
pub fn check_cascade_causes(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| {
        for parent in jobs {
            if parent.array.is_some() {
                cascade_cause(state, parent)?;
            }
        }
        Ok(())
    })
}

fn cascade_cause(state: &State, parent: &Job) -> Result<(), Violation> {
    use barge_core::dependencies::{dependencies, Dependencies};
    let array = parent.array.as_ref().expect("parents only");
    let rows = Born {
        indexes: state
            .array_index(&parent.id)
            .map(|i| i.born.iter().copied().collect())
            .unwrap_or_default(),
        counts: BTreeMap::new(),
    };
    let unborn = array.size.saturating_sub(rows.indexes.len() as u32);
    if unborn == 0
        || array.closed.as_deref() != Some(REASON_DEPENDENCY_FAILED)
        || parent.is_cancelled
        || parent.is_terminated
    {
        return Ok(());
    }
    // The array is closed from `closed_from` on (a SEQUENTIAL failure closes only what comes
    // after it): the lowest unborn child from there stands for the closed ones.
    let lowest = (array.closed_from..)
        .find(|i| !rows.indexes.contains(i))
        .unwrap_or(array.closed_from);
    if lowest >= array.size {
        return Ok(());
    }
    let own = matches!(dependencies(state, parent), Dependencies::Failed(_));
    let before = array.sequential
        && rows
            .indexes
            .range(..lowest)
            .any(|i| born_status(state, &parent.id, *i) == Some(JobStatus::Failed));
    let counterpart = array
        .n_to_n
        .iter()
        .any(|o| child_status(state, o, lowest).is_none_or(|s| s == JobStatus::Failed));
    if own || before || counterpart {
        return Ok(());
    }
    let invariant = if array.sequential {
        SEQUENTIAL_ORDER
    } else if !array.n_to_n.is_empty() {
        N_TO_N_ORDER
    } else {
        DEPENDENCY_ORDER
    };
    fail(
        invariant,
        format!(
            "array {} closed for a failed dependency, so its unborn child {} is FAILED, but nothing it depends on failed (children before it: {}; counterparts: {})",
            parent.id,
            child_id(&parent.id, lowest),
            rows.indexes
                .range(..lowest)
                .map(|i| format!(
                    "{i} {}",
                    born_status(state, &parent.id, *i).map_or("unborn", JobStatus::as_str)
                ))
                .collect::<Vec<_>>()
                .join(", "),
            array
                .n_to_n
                .iter()
                .map(|o| format!(
                    "{} {}",
                    child_id(o, lowest),
                    child_status(state, o, lowest).map_or("missing", JobStatus::as_str)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Invariant 3, within the state: `current` is Some exactly when the job is STARTING or RUNNING,
/// it is on a registered agent (a lost agent's attempts are failed at once), and no attempt id
/// is used twice anywhere.
pub fn check_live_attempts(state: &State) -> Result<(), Violation> {
    over_jobs(state, |jobs| live_attempts_of(state, jobs))
}

fn live_attempts_of(
    state: &State,
    jobs: &mut dyn Iterator<Item = &Arc<Job>>,
) -> Result<(), Violation> {
    let mut attempt_ids: HashSet<&str> = HashSet::new();
    for job in jobs {
        let live = matches!(job.status, JobStatus::Starting | JobStatus::Running);
        // A multi-node parent runs nothing itself: its nodes hold the live attempts.
        if job.multinode.is_some() {
            if job.current.is_some() {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!("multi-node job {} has an attempt of its own", job.id),
                );
            }
            continue;
        }
        if live != job.current.is_some() {
            return fail(
                ONE_LIVE_ATTEMPT,
                format!(
                    "job {} is {} but {} a current attempt",
                    job.id,
                    job.status.as_str(),
                    if job.current.is_some() {
                        "has"
                    } else {
                        "has no"
                    }
                ),
            );
        }
        if job.stop_reason.is_some() && !live {
            return fail(
                ONE_LIVE_ATTEMPT,
                format!(
                    "job {} is {} with a pending stop",
                    job.id,
                    job.status.as_str()
                ),
            );
        }
        if let Some(a) = &job.current {
            if !state.agents.contains_key(&a.agent_id) {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!(
                        "job {} has live attempt {} on agent {}, which is not registered (it would be retried while possibly still running)",
                        job.id, a.id, a.agent_id
                    ),
                );
            }
            if job.status == JobStatus::Running && a.started_at.is_none() {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!(
                        "job {} is RUNNING but attempt {} never started",
                        job.id, a.id
                    ),
                );
            }
        }
        for a in job.attempts.iter().chain(job.current.as_ref()) {
            if !attempt_ids.insert(a.id.as_str()) {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!("attempt id {} is used twice (job {})", a.id, job.id),
                );
            }
        }
    }
    Ok(())
}

/// Whether a finished attempt counts as a success.
pub fn attempt_succeeded(a: &Attempt) -> bool {
    a.exit_code == Some(0)
        && a.reason.is_none()
        && a.status_reason.as_deref() == Some(REASON_CONTAINER_EXITED)
}

/// Invariant 5: attempts are numbered 1, 2, … with the live one last; never more than the retry
/// strategy allows; only a failed attempt is followed by another; a waiting job that has run
/// before has a failed last attempt and retries left; a SUCCEEDED job's last attempt succeeded.
pub fn check_attempts(state: &State) -> Result<(), Violation> {
    over_jobs(state, attempts_of)
}

fn attempts_of(jobs: &mut dyn Iterator<Item = &Arc<Job>>) -> Result<(), Violation> {
    for job in jobs {
        if job.array.is_some() {
            // A parent never runs (see `check_arrays`): its children make the attempts.
            continue;
        }
        let made = job.attempts_made();
        if made > job.max_attempts() {
            return fail(
                ATTEMPTS,
                format!(
                    "job {} made {made} attempts but allows {}",
                    job.id,
                    job.max_attempts()
                ),
            );
        }
        for (i, a) in job.attempts.iter().chain(job.current.as_ref()).enumerate() {
            if a.number as usize != i + 1 {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} attempt {} is numbered {} at position {}",
                        job.id,
                        a.id,
                        a.number,
                        i + 1
                    ),
                );
            }
        }
        for (i, a) in job.attempts.iter().enumerate() {
            if a.stopped_at.is_none() {
                return fail(
                    ATTEMPTS,
                    format!("job {} finished attempt {} has no stoppedAt", job.id, a.id),
                );
            }
            let last = i + 1 == job.attempts.len();
            // A node runs again with every attempt of its job, whatever its own last result
            // (`check_gangs` holds nodes to their job instead).
            if job.node.is_some() {
                continue;
            }
            if attempt_succeeded(a) && (!last || job.current.is_some() || !job.status.is_terminal())
            {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} ({}) was retried after attempt {} succeeded",
                        job.id,
                        job.status.as_str(),
                        a.id
                    ),
                );
            }
        }
        if job.node.is_some() {
            continue;
        }
        if job.status.is_before_start() && !job.attempts.is_empty() {
            let last = job.attempts.last().expect("not empty");
            if attempt_succeeded(last)
                || timed_out(last)
                || job.is_cancelled
                || job.is_terminated
                || !retry_allowed(job, last)
            {
                return fail(
                    ATTEMPTS,
                    format!(
                        "job {} is {} again although attempt {} succeeded, it was stopped, or evaluateOnExit says EXIT",
                        job.id,
                        job.status.as_str(),
                        last.id
                    ),
                );
            }
        }
        if job.status == JobStatus::Succeeded && !job.attempts.last().is_some_and(attempt_succeeded)
        {
            return fail(
                ATTEMPTS,
                format!(
                    "job {} is SUCCEEDED without a successful last attempt",
                    job.id
                ),
            );
        }
    }
    Ok(())
}

/// A timed-out attempt is never retried (AWS).
fn timed_out(attempt: &Attempt) -> bool {
    attempt.status_reason.as_deref() == Some(barge_core::apply::REASON_TIMEOUT)
}

/// Whether the job's retry strategy lets a failed attempt be retried, by AWS's evaluateOnExit
/// rules (derived here from AWS's documentation, independently of the core): the first rule
/// whose given conditions all match decides, RETRY or EXIT, case-insensitively; a pattern
/// matches exactly, or by prefix when it ends in `*`; with no matching rule, retry.
pub fn retry_allowed(job: &Job, attempt: &Attempt) -> bool {
    fn matches(pattern: &Option<String>, value: Option<&str>) -> bool {
        match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| match p.strip_suffix('*') {
                Some(prefix) => v.starts_with(prefix),
                None => v == p,
            }),
        }
    }
    let Some(rules) = job
        .retry_strategy
        .as_ref()
        .and_then(|r| r.evaluate_on_exit.as_ref())
    else {
        return true;
    };
    let code = attempt.exit_code.map(|c| c.to_string());
    for rule in rules {
        if matches(&rule.on_exit_code, code.as_deref())
            && matches(&rule.on_reason, attempt.reason.as_deref())
            && matches(&rule.on_status_reason, attempt.status_reason.as_deref())
        {
            return rule.action.eq_ignore_ascii_case("RETRY");
        }
    }
    true
}

/// What the live attempts add up to, recomputed from the jobs: per agent (vCPUs, MiB) and per
/// compute environment (vCPUs).
pub struct Usage {
    pub agents: BTreeMap<String, (u64, u64)>,
    pub compute_environments: BTreeMap<String, u64>,
}

pub fn usage(state: &State) -> Usage {
    let mut u = Usage {
        agents: BTreeMap::new(),
        compute_environments: BTreeMap::new(),
    };
    for job in state.jobs.values() {
        if let Some(a) = &job.current {
            let vcpus = u64::from(job.resources.vcpus_milli);
            let e = u.agents.entry(a.agent_id.clone()).or_insert((0, 0));
            e.0 += vcpus;
            e.1 += job.resources.memory_mib;
            *u.compute_environments
                .entry(a.compute_environment.clone())
                .or_insert(0) += vcpus;
        }
    }
    u
}

/// Invariant 6: the job indexes hold exactly the jobs (right queue, status and seq), and the
/// agents' and compute environments' usage counters equal a recount from the live attempts.
pub fn check_indexes(state: &State) -> Result<(), Violation> {
    indexes_with(state, &usage(state))
}

fn indexes_with(state: &State, u: &Usage) -> Result<(), Violation> {
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

/// Invariant 2, per agent: the live attempts on an agent fit its size. (The per-environment
/// maxvCpus bound is checked when placements are made, see `check_placements`, because lowering
/// maxvCpus below current use is allowed and only stops new placements.)
pub fn check_capacity(state: &State) -> Result<(), Violation> {
    capacity_with(state, &usage(state))
}

fn capacity_with(state: &State, u: &Usage) -> Result<(), Violation> {
    for (agent_id, (vcpus, memory)) in &u.agents {
        let Some(agent) = state.agents.get(agent_id) else {
            continue; // reported by check_live_attempts
        };
        if *vcpus > agent.vcpus_milli || *memory > agent.memory_mib {
            return fail(
                CAPACITY,
                format!(
                    "agent {agent_id} runs {vcpus} mvCPU / {memory} MiB but has {} / {}",
                    agent.vcpus_milli, agent.memory_mib
                ),
            );
        }
    }
    Ok(())
}

/// Invariant 2 at placement time, and the placement rules: each Launch a command emitted is for
/// a job that was waiting with no live attempt and is now STARTING with exactly that attempt, on
/// an ENABLED environment of its queue that the agent serves, and that environment's live
/// attempts stay within maxvCpus. Returns how many Launches there were.
pub fn check_placements(
    prev: &State,
    next: &State,
    effects: &[Effect],
) -> Result<usize, Violation> {
    let mut launched = 0;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for effect in effects {
        let Effect::Agent {
            agent_id,
            instruction,
        } = effect;
        let AgentInstruction::Launch(spec) = instruction else {
            continue;
        };
        launched += 1;
        let id = &spec.job_id;
        let Some(job) = next.job(id) else {
            return fail(PLACEMENT, format!("launch of unknown job {id}"));
        };
        // An unborn array child is born as it is placed: before, it was its parent's view.
        let before = job_view(prev, id);
        let deferred_node = before.as_ref().is_some_and(|b| {
            b.node.as_ref().is_some_and(|n| !n.launched)
                && b.current.as_ref().is_some_and(|a| a.id == spec.attempt_id)
        });
        match before {
            // The main node of a gang placed for the first time: its row is new.
            None if job.node.as_ref().is_some_and(|n| n.is_main) => {}
            None => {
                return fail(
                    PLACEMENT,
                    format!("launch of job {id} created in the same command"),
                )
            }
            // A node placed with its gang, launched once the main node runs: same attempt.
            Some(_) if deferred_node => {}
            Some(before) if before.array.is_some() => {
                return fail(
                    PLACEMENT,
                    format!("array parent {id} was launched: only its children run"),
                );
            }
            Some(before) if before.current.is_some() || !before.status.is_before_start() => {
                return fail(
                    ONE_LIVE_ATTEMPT,
                    format!(
                        "job {id} was placed again while {} with attempt {:?}",
                        before.status.as_str(),
                        before.current.as_ref().map(|a| &a.id)
                    ),
                );
            }
            Some(_) => {}
        }
        let Some(cur) = job.current.as_ref() else {
            return fail(
                PLACEMENT,
                format!("job {id} was launched but has no live attempt"),
            );
        };
        if cur.id != spec.attempt_id
            || cur.agent_id != *agent_id
            || job.status != JobStatus::Starting
        {
            return fail(
                PLACEMENT,
                format!(
                    "launch of {} on {agent_id} but job {id} is {} with attempt {} on {}",
                    spec.attempt_id,
                    job.status.as_str(),
                    cur.id,
                    cur.agent_id
                ),
            );
        }
        if spec.vcpus_milli != job.resources.vcpus_milli
            || spec.memory_mib != job.resources.memory_mib
            || spec.attempt_number as usize != job.attempts.len() + 1
        {
            return fail(
                PLACEMENT,
                format!("launch spec of {} disagrees with job {id}", spec.attempt_id),
            );
        }
        if deferred_node {
            // Its place (environment, queue, capacity) was checked when its gang was placed;
            // an environment disabled since then stops new placements, not this launch.
            continue;
        }
        let ce_name = &cur.compute_environment;
        let Some(ce) = next.compute_environments.get(ce_name) else {
            return fail(
                PLACEMENT,
                format!("job {id} placed on missing environment {ce_name}"),
            );
        };
        if ce.state != ResourceState::Enabled {
            return fail(
                PLACEMENT,
                format!("job {id} placed on DISABLED environment {ce_name}"),
            );
        }
        let in_queue = next.job_queues.get(&job.queue).is_some_and(|q| {
            q.compute_environment_order
                .iter()
                .any(|o| o.compute_environment == *ce_name)
        });
        if !in_queue {
            return fail(
                PLACEMENT,
                format!(
                    "job {id} placed on {ce_name}, which its queue {} does not list",
                    job.queue
                ),
            );
        }
        match next.agents.get(agent_id) {
            Some(agent) if agent.serves(ce) => {}
            Some(_) => {
                return fail(
                    PLACEMENT,
                    format!("job {id} placed on agent {agent_id}, which does not serve {ce_name}"),
                )
            }
            None => {
                return fail(
                    PLACEMENT,
                    format!("job {id} placed on unregistered agent {agent_id}"),
                )
            }
        }
        touched.insert(ce_name.clone());
    }
    if !touched.is_empty() {
        let u = usage(next);
        for name in touched {
            let ce = &next.compute_environments[&name];
            if let Some(max) = ce.max_vcpus_milli() {
                let used = u.compute_environments.get(&name).copied().unwrap_or(0);
                if used > max {
                    return fail(
                        CAPACITY,
                        format!(
                            "a placement brought compute environment {name} to {used} mvCPU, over its maxvCpus ({max} mvCPU)"
                        ),
                    );
                }
            }
        }
    }
    Ok(launched)
}

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

/// A batch of agent reports: exactly the reports whose attempt is (still) the job's live one on
/// this agent are accepted, every refused `Running` is answered with a Stop, and each accepted
/// `Exited` ended its attempt with the reported exit code.
pub fn check_reports(
    prev: &State,
    next: &State,
    agent_id: &str,
    reports: &[AgentReport],
    refused: usize,
    effects: &[Effect],
) -> Result<(), Violation> {
    let mut ended: HashSet<&str> = HashSet::new();
    let mut expected_refused = 0;
    let mut stale_running = 0;
    for r in reports {
        let (job_id, attempt_id) = r.ids();
        let live = prev
            .job(job_id)
            .and_then(|j| j.current.as_ref())
            .is_some_and(|a| {
                a.id == attempt_id && a.agent_id == agent_id && a.stopped_at.is_none()
            })
            && !ended.contains(attempt_id);
        if !live {
            expected_refused += 1;
            if matches!(r, AgentReport::Running { .. }) {
                stale_running += 1;
            }
            continue;
        }
        if let AgentReport::Exited { exit_code, .. } = r {
            ended.insert(attempt_id);
            // A node that exits while its job runs on keeps the ended attempt as its current
            // one until the job ends.
            let recorded = next.job(job_id).is_some_and(|j| {
                j.attempts
                    .iter()
                    .chain(j.current.as_ref().filter(|a| a.stopped_at.is_some()))
                    .any(|a| a.id == attempt_id && a.exit_code == *exit_code)
            });
            if !recorded {
                return fail(
                    STALE_REPORTS,
                    format!(
                        "accepted exit of attempt {attempt_id} (job {job_id}) was not recorded"
                    ),
                );
            }
        }
    }
    if refused != expected_refused {
        return fail(
            STALE_REPORTS,
            format!(
                "agent {agent_id}: {refused} of {} reports refused, expected {expected_refused}",
                reports.len()
            ),
        );
    }
    let stops = effects
        .iter()
        .filter(|e| {
            // Stale Running reports are answered with an immediate stop (no grace); a multi-node
            // job whose attempt ended stops its other nodes with the usual grace.
            matches!(e, Effect::Agent { agent_id: a, instruction: AgentInstruction::Stop { grace_ms: 0, .. } } if a == agent_id)
        })
        .count();
    if stops != stale_running {
        return fail(
            STALE_REPORTS,
            format!(
                "agent {agent_id}: {stale_running} stale Running reports but {stops} Stops sent back"
            ),
        );
    }
    Ok(())
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

/// Whether a job could start now if capacity were free: its queue lists an ENABLED environment
/// whose maxvCpus bound admits it and a registered agent serving it is large enough.
pub fn could_run(state: &State, job: &Job) -> bool {
    if let Some(n) = &job.node {
        // A node runs when its job does.
        return state.job(&n.parent_id).is_some_and(|p| could_run(state, p));
    }
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return false;
    };
    // A job waits on its dependencies: it can run only if each has SUCCEEDED or could run
    // itself (dependencies are older jobs, so this ends).
    let deps_can_succeed = job
        .depends_on
        .iter()
        .filter_map(|d| d.job_id.as_ref())
        .all(|id| {
            state.job(id).is_some_and(|dep| match dep.status {
                JobStatus::Succeeded => true,
                JobStatus::Failed => false,
                _ => could_run(state, dep),
            })
        });
    if !deps_can_succeed {
        return false;
    }
    queue.compute_environment_order.iter().any(|o| {
        let Some(ce) = state.compute_environments.get(&o.compute_environment) else {
            return false;
        };
        if ce.state != ResourceState::Enabled {
            return false;
        }
        if let Some(m) = &job.multinode {
            // The whole gang at once: its sum under maxvCpus, every node on an idle host. The
            // packing is the core's own (largest first, best fit), which places what it finds.
            let (total, _) = m.total();
            let needs: Vec<(u32, Resources)> =
                (0..m.num_nodes).map(|i| (i, m.resources_of(i))).collect();
            let idle: Vec<(u64, u64)> = state
                .agents
                .values()
                .filter(|a| a.serves(ce))
                .map(|a| (a.vcpus_milli, a.memory_mib))
                .collect();
            return ce.max_vcpus_milli().is_none_or(|max| max >= total)
                && barge_core::multinode::pack(&needs, &idle).is_some();
        }
        ce.max_vcpus_milli()
            .is_none_or(|max| max >= u64::from(job.resources.vcpus_milli))
            && state
                .agents
                .values()
                .any(|a| a.serves(ce) && agent_could_fit(a, job.resources))
    })
}

/// Gang all-or-none, for every multi-node job and its node rows `<id>#<n>`:
/// - node rows exist for every node or for none (a gang is placed whole), each naming its job,
///   its index and whether it is the main node;
/// - while the job is STARTING or RUNNING every node is live, all on one compute environment
///   and all in the job's attempt in progress: one live gang, never a part of one; only the
///   main node is launched before it has started;
/// - otherwise a node still live is being stopped, in the job's last attempt (a new gang never
///   starts beside an old one); a node waits RUNNABLE only while its job does, and is terminal
///   only once its job is;
/// - the main node decides: an attempt that ended by its container carries the main node's
///   exit code and reason, and the job SUCCEEDED only if its main node's attempt did; a node is
///   SUCCEEDED only if it succeeded itself or was stopped when its job succeeded.
pub fn check_gangs(state: &State) -> Result<(), Violation> {
    let mut parents: Vec<&Arc<Job>> = state
        .jobs
        .values()
        .filter(|j| j.multinode.is_some())
        .collect();
    parents.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    for p in parents {
        gang_of(state, p)?;
    }
    for node in state.jobs.values().filter(|j| j.node.is_some()) {
        let n = node.node.as_ref().expect("a node");
        let in_its_job = state
            .job(&n.parent_id)
            .and_then(|p| p.multinode.as_ref())
            .is_some_and(|m| n.index < m.num_nodes);
        if !in_its_job {
            return fail(
                GANG,
                format!("node {} belongs to no multi-node job", node.id),
            );
        }
    }
    Ok(())
}

fn gang_of(state: &State, p: &Job) -> Result<(), Violation> {
    let m = p.multinode.as_ref().expect("a parent");
    let nodes: Vec<Option<&Arc<Job>>> = (0..m.num_nodes)
        .map(|i| state.job(&barge_core::multinode::node_id(&p.id, i)))
        .collect();
    let existing = nodes.iter().flatten().count();
    if existing != 0 && existing != nodes.len() {
        return fail(
            GANG,
            format!(
                "multi-node job {} has {existing} of its {} node rows",
                p.id, m.num_nodes
            ),
        );
    }
    let live = matches!(p.status, JobStatus::Starting | JobStatus::Running);
    if live && existing == 0 {
        return fail(
            GANG,
            format!(
                "multi-node job {} is {} without nodes",
                p.id,
                p.status.as_str()
            ),
        );
    }
    let attempt_now = p.attempts.len() as u32 + u32::from(live);
    let main = nodes[m.main_node as usize];
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let r = node.node.as_ref();
        if r.is_none_or(|r| {
            r.parent_id != p.id || r.index as usize != i || r.is_main != (i as u32 == m.main_node)
        }) {
            return fail(
                GANG,
                format!(
                    "node row {} does not name its place in job {}",
                    node.id, p.id
                ),
            );
        }
        let r = r.expect("checked");
        if node.attempts_made() > attempt_now {
            return fail(
                GANG,
                format!(
                    "node {} has made {} attempts but its job only {attempt_now}",
                    node.id,
                    node.attempts_made()
                ),
            );
        }
        match (&node.current, live) {
            (None, true) => {
                return fail(
                    GANG,
                    format!(
                        "multi-node job {} is {} but its node {} is not placed (a partial gang)",
                        p.id,
                        p.status.as_str(),
                        node.id
                    ),
                )
            }
            (Some(a), true) => {
                let main_ce = main
                    .and_then(|m| m.current.as_ref())
                    .map(|a| a.compute_environment.as_str());
                if a.number != attempt_now || Some(a.compute_environment.as_str()) != main_ce {
                    return fail(
                        GANG,
                        format!(
                            "node {} runs attempt {} on {} but its job {} is in attempt {attempt_now} on {main_ce:?} (more than one gang)",
                            node.id, a.number, a.compute_environment, p.id
                        ),
                    );
                }
                let main_started = main
                    .and_then(|m| m.current.as_ref())
                    .is_some_and(|a| a.started_at.is_some());
                if !r.is_main && r.launched && !main_started {
                    return fail(
                        GANG,
                        format!(
                            "node {} was launched before main node {} started",
                            node.id, m.main_node
                        ),
                    );
                }
            }
            (Some(a), false) => {
                if a.number != attempt_now || node.stop_reason.is_none() || a.stopped_at.is_some() {
                    return fail(
                        GANG,
                        format!(
                            "node {} is live in attempt {} while its job {} is {} after {attempt_now} attempt(s), and not being stopped",
                            node.id,
                            a.number,
                            p.id,
                            p.status.as_str()
                        ),
                    );
                }
            }
            (None, false) => {}
        }
        let status_ok = match node.status {
            JobStatus::Runnable => p.status == JobStatus::Runnable,
            s if s.is_terminal() => p.status.is_terminal(),
            JobStatus::Starting | JobStatus::Running => node.current.is_some(),
            _ => false,
        };
        if !status_ok {
            return fail(
                GANG,
                format!(
                    "node {} is {} while its job {} is {}",
                    node.id,
                    node.status.as_str(),
                    p.id,
                    p.status.as_str()
                ),
            );
        }
        if node.status == JobStatus::Succeeded
            && !node.attempts.last().is_some_and(attempt_succeeded)
            && p.status != JobStatus::Succeeded
        {
            return fail(
                GANG,
                format!(
                    "node {} SUCCEEDED without succeeding while its job {} is {}",
                    node.id,
                    p.id,
                    p.status.as_str()
                ),
            );
        }
    }
    // The main node decides how each attempt of the job ended.
    if let Some(last) = p.attempts.last() {
        let k = p.attempts.len();
        // Ended by another node's lost host, the main node may still be stopping.
        let main_attempt = main.and_then(|m| {
            m.attempts
                .get(k - 1)
                .or(m.current.as_ref().filter(|a| a.number as usize == k))
        });
        let Some(ma) = main_attempt else {
            return fail(
                GANG,
                format!(
                    "multi-node job {} finished attempt {k} but its main node has no attempt {k}",
                    p.id
                ),
            );
        };
        let by_container = last.status_reason.as_deref() == Some(REASON_CONTAINER_EXITED);
        if by_container && (ma.exit_code != last.exit_code || ma.reason != last.reason) {
            return fail(
                GANG,
                format!(
                    "multi-node job {} attempt {k} ended with exit {:?} but its main node exited {:?}",
                    p.id, last.exit_code, ma.exit_code
                ),
            );
        }
        if p.status == JobStatus::Succeeded && !attempt_succeeded(ma) {
            return fail(
                GANG,
                format!(
                    "multi-node job {} SUCCEEDED but its main node's attempt {k} did not",
                    p.id
                ),
            );
        }
    }
    Ok(())
}

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

/// The fair-share index holds, per queue and share identifier, exactly the unfinished jobs,
/// the vCPUs their live attempts book, and the RUNNABLE jobs in (priority, submission) order,
/// recounted here from the jobs.
pub fn check_share_index(state: &State) -> Result<(), Violation> {
    type QueueShare = (String, String);
    let mut loads: BTreeMap<QueueShare, ShareLoad> = BTreeMap::new();
    let mut runnable: BTreeMap<QueueShare, Vec<RunnableKey>> = BTreeMap::new();
    for job in jobs_sorted(state) {
        let Some(id) = &job.share_identifier else {
            continue;
        };
        let key = (job.queue.clone(), id.clone());
        if !job.status.is_terminal() {
            let l = loads.entry(key.clone()).or_default();
            l.unfinished += 1;
            if job.current.is_some() {
                l.running_vcpus_milli += u64::from(job.resources.vcpus_milli);
            }
        }
        // An array parent whose unborn children are RUNNABLE stands for them in its share.
        let waiting_array = job.array.as_ref().is_some_and(|a| {
            !a.has_child_dependencies() && unborn_status(job) == JobStatus::Runnable
        });
        if job.status == JobStatus::Runnable || waiting_array {
            runnable.entry(key).or_default().push((
                std::cmp::Reverse(job.scheduling_priority.unwrap_or(0)),
                job.seq,
                job.id.clone(),
            ));
        }
    }
    for list in runnable.values_mut() {
        list.sort();
    }
    let (indexed_loads, indexed_runnable) = fairshare::index_contents(state);
    if indexed_loads != loads {
        let at = loads
            .keys()
            .chain(indexed_loads.keys())
            .find(|k| loads.get(*k) != indexed_loads.get(*k));
        return fail(
            INDEXES,
            format!(
                "the share index's load differs from a recount at {at:?}: indexed {:?}, recounted {:?}",
                at.and_then(|k| indexed_loads.get(k)),
                at.and_then(|k| loads.get(k))
            ),
        );
    }
    if indexed_runnable != runnable {
        return fail(
            INDEXES,
            "the share index's RUNNABLE jobs differ from a recount".to_string(),
        );
    }
    Ok(())
}

/// The share a job's identifier belongs to under a distribution, derived here from AWS's
/// documentation: the entry naming it exactly, else the wildcard whose prefix it starts with,
/// else itself.
pub fn share_key(distribution: &[ShareWeight], identifier: &str) -> String {
    for e in distribution {
        let hit = match e.share_identifier.strip_suffix('*') {
            Some(prefix) => identifier.starts_with(prefix),
            None => e.share_identifier == identifier,
        };
        if hit {
            return e.share_identifier.clone();
        }
    }
    identifier.to_string()
}

/// After a scheduling pass planned on exactly `prev`: in every queue, a job placed from among
/// those already RUNNABLE was not taken ahead of one that goes before it and asks for no more
/// (vCPUs, memory, GPUs), since whatever had room for the larger one had room for the smaller
/// one first. "Before" is submission order in a FIFO queue, and (priority, submission) within
/// one share of a fair-share queue. Shares are ranked by usage, which is not recomputed here;
/// queues that reserve capacity (computeReservation) are skipped, since the reservation eases
/// as more shares run within a pass.
pub fn check_queue_order(prev: &State, next: &State) -> Result<(), Violation> {
    let mut placed: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    let mut missed: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for queue in prev.queues_with(JobStatus::Runnable) {
        for (_, id) in prev
            .jobs_in(&queue, JobStatus::Runnable)
            .into_iter()
            .flatten()
        {
            let job = &**prev.jobs.get(id).expect("indexed jobs exist");
            // A multi-node job needs a whole gang (its own resources say nothing), and its
            // nodes wait for their job: neither compares with single jobs.
            if job.multinode.is_some() || job.node.is_some() {
                continue;
            }
            let now_live = next.job(id).is_some_and(|j| j.current.is_some());
            let list = if now_live { &mut placed } else { &mut missed };
            list.entry(job.queue.as_str()).or_default().push(job);
        }
    }
    for (queue_name, placed) in placed {
        let Some(queue) = prev.job_queues.get(queue_name) else {
            continue;
        };
        let policy = queue.scheduling_policy_arn.as_deref().and_then(|arn| {
            let name = arn.rsplit('/').next()?;
            prev.scheduling_policies.get(name)
        });
        let rules = policy.map(|p| p.fairshare_policy.clone().unwrap_or_default());
        if rules
            .as_ref()
            .is_some_and(|r| r.compute_reservation.unwrap_or(0) > 0)
        {
            continue;
        }
        let order_key = |j: &Job| match &rules {
            None => (String::new(), 0, j.seq),
            Some(r) => (
                share_key(
                    &r.share_distribution,
                    j.share_identifier.as_deref().unwrap_or(""),
                ),
                -j.scheduling_priority.unwrap_or(0),
                j.seq,
            ),
        };
        for y in &placed {
            let ky = order_key(y);
            for x in missed.get(queue_name).into_iter().flatten() {
                let kx = order_key(x);
                let before = kx.0 == ky.0 && (kx.1, kx.2) < (ky.1, ky.2);
                let smaller = x.resources.vcpus_milli <= y.resources.vcpus_milli
                    && x.resources.memory_mib <= y.resources.memory_mib
                    && x.resources.gpus <= y.resources.gpus;
                if before && smaller {
                    return fail(
                        QUEUE_ORDER,
                        format!(
                            "job queue {queue_name}: job {} was placed while job {}, which goes before it and needs no more, was passed over",
                            y.id, x.id
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// After a scheduling pass planned on exactly `prev`: no job of a lower-priority queue was
/// placed on a compute environment while the job at the head of a higher-priority queue that
/// uses that environment, and needs no more (vCPUs, memory, GPUs), was left waiting: queues
/// are served in descending priority, and the head of a queue is always looked at. Queues that
/// reserve capacity (computeReservation) and multi-node heads (gangs need more than their
/// own resources say) are left out.
pub fn check_queue_priority(prev: &State, next: &State) -> Result<(), Violation> {
    let live = |s: &State, id: &str| job_view(s, id).is_some_and(|j| j.current.is_some());
    let mut placed: Vec<(&Job, &str)> = Vec::new();
    for job in next.jobs.values() {
        if let Some(a) = &job.current {
            if job.node.is_none() && !live(prev, &job.id) {
                placed.push((&**job, a.compute_environment.as_str()));
            }
        }
    }
    if placed.is_empty() {
        return Ok(());
    }
    for high in prev.job_queues.values() {
        let reserves = high
            .scheduling_policy_arn
            .as_deref()
            .and_then(|arn| prev.scheduling_policies.get(arn.rsplit('/').next()?))
            .and_then(|p| p.fairshare_policy.as_ref())
            .is_some_and(|f| f.compute_reservation.unwrap_or(0) > 0);
        if reserves {
            continue;
        }
        let Some((head_id, _)) = barge_core::scheduler::front_of_queue(prev, high, 1).pop() else {
            continue;
        };
        let Some(head) = job_view(prev, &head_id) else {
            continue;
        };
        if head.multinode.is_some() || live(next, &head_id) {
            continue;
        }
        for (y, ce) in &placed {
            let Some(low) = prev.job_queues.get(&y.queue) else {
                continue;
            };
            let shared = high
                .compute_environment_order
                .iter()
                .any(|o| o.compute_environment == *ce);
            let smaller = head.resources.vcpus_milli <= y.resources.vcpus_milli
                && head.resources.memory_mib <= y.resources.memory_mib
                && head.resources.gpus <= y.resources.gpus;
            if high.priority > low.priority && shared && smaller {
                return fail(
                    QUEUE_PRIORITY,
                    format!(
                        "job {} of job queue {} (priority {}) was placed on {ce} while job {head_id}, at the head of job queue {} (priority {}) and needing no more, was left waiting",
                        y.id, low.name, low.priority, high.name, high.priority
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Over a long saturated run, each share's vCPU-time relative to the others' is the inverse of
/// its weightFactor, within `tolerance` (0.1 = 10%). `used` and `weights` are per share.
pub fn check_share_weights(
    used: &BTreeMap<String, f64>,
    weights: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Result<(), Violation> {
    let total_used: f64 = used.values().sum();
    let total_entitlement: f64 = weights.values().map(|w| 1.0 / w).sum();
    if total_used <= 0.0 {
        return fail(SHARE_WEIGHTS, "no share used anything");
    }
    for (share, w) in weights {
        let expected = (1.0 / w) / total_entitlement;
        let got = used.get(share).copied().unwrap_or(0.0) / total_used;
        if (got / expected - 1.0).abs() > tolerance {
            return fail(
                SHARE_WEIGHTS,
                format!(
                    "share {share} (weight {w}) got {:.1}% of the vCPU-time, expected {:.1}% ± {:.0}%",
                    got * 100.0,
                    expected * 100.0,
                    tolerance * 100.0
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
