//! Share usage and the share index: what each identifier of a fair-share queue has waiting,
//! runs and has used, kept in step with the jobs.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::Rules;
use crate::model::*;
use crate::state::State;

/// A RUNNABLE job in its share's order: higher priority first, then submission.
pub type RunnableKey = (Reverse<i64>, u64, String);

/// What one share identifier holds in a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareLoad {
    /// Jobs from SUBMITTED to RUNNING: the identifier is active while there are any.
    pub unfinished: usize,
    /// vCPUs (thousandths) booked by its live attempts.
    pub running_vcpus_milli: u64,
}

/// Indexes derived from the jobs, kept in step by `State::put_job` and rebuilt on load. Only
/// jobs with a shareIdentifier (those of fair-share queues) are in them.
#[derive(Clone, Debug, Default)]
pub struct ShareIndex {
    /// queue → identifier → its RUNNABLE jobs.
    pub(super) runnable: HashMap<String, OrdMap<String, OrdSet<RunnableKey>>>,
    /// queue → identifier → load; an identifier with no unfinished job has no entry.
    pub(super) load: HashMap<String, OrdMap<String, ShareLoad>>,
    /// Queues whose usage record changed during the current command. Transient: `apply`
    /// turns it into dirty keys.
    touched: Vec<String>,
}

/// The stored usage of one fair-share queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareUsage {
    pub queue: String,
    /// The time `usage_mvcpu_ms` is as of.
    pub as_of_ms: i64,
    /// Decayed vCPU-time per share identifier, in thousandths of a vCPU × ms. Integers, so the
    /// record reads back exactly what was stored.
    pub usage_mvcpu_ms: BTreeMap<String, u64>,
}

/// Called by `State::put_job` before `new` replaces `old`.
pub(crate) fn on_put_job(state: &mut State, old: Option<&Job>, new: &Job) {
    let old = old.filter(|o| o.share_identifier.is_some());
    if old.is_none() && new.share_identifier.is_none() {
        return;
    }
    let live = |j: Option<&Job>| j.is_some_and(|j| j.current.is_some());
    if live(old) != live(Some(new)) {
        // The share's rate changes now: bring the queue's usage up to now at the old rates.
        advance_usage(state, &new.queue);
    }
    if let Some(o) = old {
        index(&mut state.shares, o, false);
    }
    if new.share_identifier.is_some() {
        index(&mut state.shares, new, true);
    }
}

/// Adds (or removes) one job's entries.
fn index(shares: &mut ShareIndex, job: &Job, add: bool) {
    let Some(id) = &job.share_identifier else {
        return;
    };
    // An array parent whose unborn children are RUNNABLE stands for them in its share's order
    // (the scheduler takes its children in index order when its turn comes).
    let waiting_array = job.array.as_ref().is_some_and(|a| {
        !a.has_child_dependencies() && crate::arrays::unborn_status(job) == JobStatus::Runnable
    });
    if job.status == JobStatus::Runnable || waiting_array {
        let key: RunnableKey = (
            Reverse(job.scheduling_priority.unwrap_or(0)),
            job.seq,
            job.id.clone(),
        );
        let per_queue = shares.runnable.entry(job.queue.clone()).or_default();
        let set = per_queue.entry(id.clone()).or_default();
        if add {
            set.insert(key);
        } else {
            set.remove(&key);
            if set.is_empty() {
                per_queue.remove(id);
            }
        }
    }
    if job.status.is_terminal() {
        return;
    }
    let per_queue = shares.load.entry(job.queue.clone()).or_default();
    let load = per_queue.entry(id.clone()).or_default();
    let vcpus = if job.current.is_some() {
        u64::from(job.resources.vcpus_milli)
    } else {
        0
    };
    if add {
        load.unfinished += 1;
        load.running_vcpus_milli += vcpus;
    } else {
        load.unfinished = load.unfinished.saturating_sub(1);
        load.running_vcpus_milli = load.running_vcpus_milli.saturating_sub(vcpus);
        if load.unfinished == 0 {
            per_queue.remove(id);
        }
    }
}

pub(crate) fn rebuild_index(state: &mut State) {
    let mut shares = ShareIndex::default();
    for job in state.jobs.values() {
        index(&mut shares, job, true);
    }
    state.shares = shares;
}

/// The queues whose usage record the current command changed (emptied).
pub(crate) fn take_touched(state: &mut State) -> Vec<String> {
    std::mem::take(&mut state.shares.touched)
}

/// Brings a fair-share queue's usage record up to the latest command's time, at the rates its
/// shares ran at since the record's time. Called before any rate or rule changes.
pub(crate) fn advance_usage(state: &mut State, queue: &str) {
    let now = state.latest_command_ms;
    let half_life_ms = match state.job_queues.get(queue) {
        Some(q) => match Rules::for_queue(state, q) {
            Some(rules) => rules.half_life_ms,
            None => return,
        },
        None => return,
    };
    let record = match state.share_usage.get(queue) {
        Some(r) if r.as_of_ms >= now => return,
        Some(r) => r,
        None => {
            let fresh = ShareUsage {
                queue: queue.to_string(),
                as_of_ms: now,
                usage_mvcpu_ms: BTreeMap::new(),
            };
            state.share_usage.insert(queue.to_string(), Arc::new(fresh));
            touch(state, queue);
            return;
        }
    };
    let running = state.shares.load.get(queue);
    let (decay, accrual_ms) = decay_over(now - record.as_of_ms, half_life_ms);
    let mut next = ShareUsage {
        queue: queue.to_string(),
        as_of_ms: now,
        usage_mvcpu_ms: BTreeMap::new(),
    };
    for (id, used) in &record.usage_mvcpu_ms {
        next.usage_mvcpu_ms
            .insert(id.clone(), (*used as f64 * decay).floor() as u64);
    }
    for (id, load) in running.into_iter().flatten() {
        if load.running_vcpus_milli > 0 {
            *next.usage_mvcpu_ms.entry(id.clone()).or_insert(0) +=
                (load.running_vcpus_milli as f64 * accrual_ms).floor() as u64;
        }
    }
    next.usage_mvcpu_ms.retain(|_, used| *used > 0);
    state.share_usage.insert(queue.to_string(), Arc::new(next));
    touch(state, queue);
}

fn touch(state: &mut State, queue: &str) {
    if !state.shares.touched.iter().any(|q| q == queue) {
        state.shares.touched.push(queue.to_string());
    }
}

/// Over `dt_ms`, what an exponential decay with the given half-life leaves of a past amount,
/// and how much one unit running all along adds (ms): ∫ 2^(−(dt−s)/h) ds = h/ln 2 · (1 − 2^(−dt/h)).
fn decay_over(dt_ms: i64, half_life_ms: f64) -> (f64, f64) {
    if dt_ms <= 0 {
        return (1.0, 0.0);
    }
    let decay = (-(dt_ms as f64) / half_life_ms).exp2();
    (decay, half_life_ms / std::f64::consts::LN_2 * (1.0 - decay))
}

/// Each identifier's usage (thousandths of a vCPU × ms) as of the latest command, running work
/// included, without changing anything.
pub fn usage_now(state: &State, queue: &str, rules: &Rules) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let (as_of, stored) = match state.share_usage.get(queue) {
        Some(r) => (r.as_of_ms, Some(&r.usage_mvcpu_ms)),
        None => (state.latest_command_ms, None),
    };
    let (decay, accrual_ms) = decay_over(state.latest_command_ms - as_of, rules.half_life_ms);
    for (id, used) in stored.into_iter().flatten() {
        out.insert(id.clone(), *used as f64 * decay);
    }
    for (id, load) in state.shares.load.get(queue).into_iter().flatten() {
        *out.entry(id.clone()).or_insert(0.0) += load.running_vcpus_milli as f64 * accrual_ms;
    }
    out
}

/// The share identifiers of a queue with their load (unfinished and running work).
pub fn loads<'a>(
    state: &'a State,
    queue: &str,
) -> impl Iterator<Item = (&'a String, &'a ShareLoad)> {
    state.shares.load.get(queue).into_iter().flatten()
}

/// The RUNNABLE jobs of one identifier in a queue, in their share's order.
pub fn runnable_of<'a>(
    state: &'a State,
    queue: &str,
    identifier: &str,
) -> impl Iterator<Item = &'a RunnableKey> {
    state
        .shares
        .runnable
        .get(queue)
        .and_then(|m| m.get(identifier))
        .into_iter()
        .flatten()
}

/// Per (queue, identifier) share load and RUNNABLE jobs, as the derived index holds them,
/// flattened so that checkers can compare them with a recount from the jobs.
pub type IndexContents = (
    BTreeMap<(String, String), ShareLoad>,
    BTreeMap<(String, String), Vec<RunnableKey>>,
);

pub fn index_contents(state: &State) -> IndexContents {
    let mut loads = BTreeMap::new();
    for (queue, per_id) in &state.shares.load {
        for (id, l) in per_id {
            loads.insert((queue.clone(), id.clone()), *l);
        }
    }
    let mut runnable = BTreeMap::new();
    for (queue, per_id) in &state.shares.runnable {
        for (id, set) in per_id {
            if !set.is_empty() {
                runnable.insert((queue.clone(), id.clone()), set.iter().cloned().collect());
            }
        }
    }
    (loads, runnable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_halves_per_half_life_and_running_work_saturates() {
        let (d, a) = decay_over(600_000, 600_000.0);
        assert!((d - 0.5).abs() < 1e-12);
        // One unit for one half-life adds h/ln2 · ½.
        assert!((a - 600_000.0 / std::f64::consts::LN_2 * 0.5).abs() < 1e-6);
        assert_eq!(decay_over(0, 1.0), (1.0, 0.0));
        assert_eq!(decay_over(-5, 1.0), (1.0, 0.0));
    }
}
