//! Array jobs: no child lost, the parent follows its children, SEQUENTIAL/N_TO_N order, cascades.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use barge_core::arrays::{child_id, status_summary, unborn_status, unborn_status_at};
use barge_core::dependencies::REASON_DEPENDENCY_FAILED;
use barge_core::model::{ArrayChild, Job, JobStatus};
use barge_core::State;

use super::{
    fail, over_jobs, Violation, ARRAY_CHILDREN, ARRAY_PARENT, DEPENDENCY_ORDER, N_TO_N_ORDER,
    SEQUENTIAL_ORDER,
};

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
