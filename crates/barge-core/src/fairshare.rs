//! Fair-share scheduling: how a job queue with a scheduling policy orders its RUNNABLE jobs,
//! how much vCPU-time each share has used, and what computeReservation holds back.
//!
//! - **Shares.** A job belongs to the shareDistribution entry that names its shareIdentifier
//!   exactly, else to the wildcard entry (`UserA*`) whose prefix it starts with: one share for
//!   every identifier the wildcard matches, their usage pooled under one weight. An identifier
//!   no entry matches is a share of its own with weight 1.
//! - **Usage.** Per queue and identifier: the vCPUs its live attempts book, from placement to
//!   the end of the attempt (exactly what the compute environment's counter books), integrated
//!   over time and decayed exponentially with a half-life of shareDecaySeconds (0: 600 s). Times
//!   are those of the commands that book and release the capacity (`State::latest_command_ms`),
//!   so the core needs no clock. The record (`ShareUsage`, one per queue) is history the jobs no
//!   longer tell cheaply, so it is stored; it advances whenever a share of its queue starts or
//!   stops running work. Running vCPUs per identifier are derived from live attempts.
//! - **Order.** The share with the lowest weighted usage (usage × weightFactor, read as of the
//!   latest command, running work included) dispatches first; ties go to the share running
//!   less, then to the share whose next job was submitted first. Within a share: higher
//!   schedulingPriority first, then submission order. One scheduling pass keeps one ranking.
//! - **Reservation.** With computeReservation `cr`, while `n` shares of the queue run work, jobs
//!   of those shares may fill a compute environment only to `1 − (cr/100)^n` of its maxvCpus
//!   (unmanagedvCpus when UNMANAGED); a share with nothing running may use the rest. This is
//!   the scheduler's policy only: the applier re-checks hard capacity, not the reservation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::arn::{name_from_reference, ResourceKind};
use crate::command::CoreError;
use crate::limits::*;
use crate::model::*;
use crate::resources::{agent_has_room, ce_has_room};
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
    runnable: HashMap<String, OrdMap<String, OrdSet<RunnableKey>>>,
    /// queue → identifier → load; an identifier with no unfinished job has no entry.
    load: HashMap<String, OrdMap<String, ShareLoad>>,
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

// ---------------------------------------------------------------------------------------------
// Policies: validation and weights

/// A shareIdentifier, on a job or in a distribution: 1–255 characters, no whitespace, and `*`
/// only as the last one.
pub fn check_share_identifier(field: &str, v: &str) -> Result<(), String> {
    let body = v.strip_suffix('*').unwrap_or(v);
    let chars = body.chars().count();
    if chars == 0 || chars > SHARE_IDENTIFIER_CHARS_MAX {
        return Err(format!(
            "{field} must be 1 to {SHARE_IDENTIFIER_CHARS_MAX} characters long (plus an optional trailing *), got {chars}"
        ));
    }
    if let Some(bad) = body
        .chars()
        .find(|c| *c == '*' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{field} {v:?} contains {bad:?}; an asterisk may only end it, and spaces are not allowed"
        ));
    }
    Ok(())
}

/// Whether two distribution entries could match the same identifier.
fn overlap(a: &str, b: &str) -> bool {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
        (Some(pa), None) => b.starts_with(pa),
        (None, Some(pb)) => a.starts_with(pb),
        (None, None) => a == b,
    }
}

/// AWS's rules for a fairsharePolicy; the message names the member at fault.
pub fn check_policy(p: &FairsharePolicy) -> Result<(), String> {
    if let Some(d) = p.share_decay_seconds {
        if !(0..=SHARE_DECAY_SECONDS_MAX).contains(&d) {
            return Err(format!(
                "fairsharePolicy.shareDecaySeconds must be between 0 and {SHARE_DECAY_SECONDS_MAX}, got {d}"
            ));
        }
    }
    if let Some(c) = p.compute_reservation {
        if !(0..=COMPUTE_RESERVATION_MAX).contains(&c) {
            return Err(format!(
                "fairsharePolicy.computeReservation must be between 0 and {COMPUTE_RESERVATION_MAX}, got {c}"
            ));
        }
    }
    let entries = &p.share_distribution;
    if entries.len() > SHARE_DISTRIBUTION_ENTRIES_MAX {
        return Err(format!(
            "fairsharePolicy.shareDistribution lists {} entries; at most {SHARE_DISTRIBUTION_ENTRIES_MAX} are allowed",
            entries.len()
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        let at = format!("fairsharePolicy.shareDistribution[{i}]");
        check_share_identifier(&format!("{at}.shareIdentifier"), &e.share_identifier)?;
        if let Some(w) = e.weight_factor_e4 {
            if !(WEIGHT_FACTOR_E4_MIN..=WEIGHT_FACTOR_E4_MAX).contains(&w) {
                return Err(format!(
                    "{at}.weightFactor must be between 0.0001 and 999.9999, got {}",
                    f64::from(w) / 1e4
                ));
            }
        }
        for (j, other) in entries[..i].iter().enumerate() {
            let (a, b) = (&other.share_identifier, &e.share_identifier);
            if a == b {
                return Err(format!(
                    "fairsharePolicy.shareDistribution lists shareIdentifier {a:?} twice (entries {j} and {i})"
                ));
            }
            if overlap(a, b) {
                return Err(format!(
                    "fairsharePolicy.shareDistribution: shareIdentifier {a:?} (entry {j}) and {b:?} (entry {i}) overlap; an identifier may match only one entry"
                ));
            }
        }
    }
    Ok(())
}

/// The policy a queue names, if any.
pub fn policy_of<'a>(state: &'a State, queue: &JobQueue) -> Option<&'a SchedulingPolicy> {
    let arn = queue.scheduling_policy_arn.as_deref()?;
    let name = name_from_reference(arn, ResourceKind::SchedulingPolicy)?;
    state.scheduling_policies.get(name).map(|p| &**p)
}

/// A policy's rules, with AWS's defaults filled in, and its weights indexed for lookup.
pub struct Rules<'a> {
    pub half_life_ms: f64,
    pub reservation_percent: i64,
    exact: BTreeMap<&'a str, u32>,
    /// Wildcard prefixes. They do not overlap, so the only one that can match an identifier is
    /// the greatest prefix not after it.
    prefixes: BTreeMap<&'a str, (&'a str, u32)>,
}

impl<'a> Rules<'a> {
    pub fn of(policy: &'a SchedulingPolicy) -> Rules<'a> {
        let default = FairsharePolicy::default();
        let p = policy.fairshare_policy.as_ref().unwrap_or(&default);
        let decay_s = match p.share_decay_seconds.unwrap_or(0) {
            0 => SHARE_DECAY_SECONDS_DEFAULT,
            s => s,
        };
        let mut rules = Rules {
            half_life_ms: (decay_s * 1000) as f64,
            reservation_percent: p.compute_reservation.unwrap_or(0),
            exact: BTreeMap::new(),
            prefixes: BTreeMap::new(),
        };
        for e in policy
            .fairshare_policy
            .as_ref()
            .map_or(&[][..], |p| &p.share_distribution[..])
        {
            let weight = e.weight_factor_e4.unwrap_or(WEIGHT_FACTOR_E4_DEFAULT);
            match e.share_identifier.strip_suffix('*') {
                Some(prefix) => drop(rules.prefixes.insert(prefix, (&e.share_identifier, weight))),
                None => drop(rules.exact.insert(&e.share_identifier, weight)),
            }
        }
        rules
    }

    pub fn for_queue(state: &'a State, queue: &JobQueue) -> Option<Rules<'a>> {
        policy_of(state, queue).map(Rules::of)
    }

    /// The share an identifier belongs to, and its weight in ten-thousandths.
    pub fn share_of<'b>(&self, identifier: &'b str) -> (&'b str, u32)
    where
        'a: 'b,
    {
        if let Some(w) = self.exact.get(identifier) {
            return (identifier, *w);
        }
        if let Some((prefix, (entry, w))) = self.prefixes.range(..=identifier).next_back() {
            if identifier.starts_with(prefix) {
                return (entry, *w);
            }
        }
        (identifier, WEIGHT_FACTOR_E4_DEFAULT)
    }
}

/// SubmitJob's fair-share rules: a shareIdentifier exactly when the queue has a policy, and at
/// most `ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX` active identifiers per queue.
pub fn check_submit(
    state: &State,
    queue: &JobQueue,
    identifier: Option<&str>,
) -> Result<(), CoreError> {
    match (&queue.scheduling_policy_arn, identifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(CoreError::Invalid(format!(
            "shareIdentifier is only allowed on a job queue with a fair-share scheduling policy, and job queue {} has none (it is FIFO)",
            queue.name
        ))),
        (Some(arn), None) => Err(CoreError::Invalid(format!(
            "shareIdentifier is required: job queue {} has the fair-share scheduling policy {arn}",
            queue.name
        ))),
        (Some(_), Some(id)) => {
            check_share_identifier("shareIdentifier", id).map_err(CoreError::Invalid)?;
            let active = state.shares.load.get(&queue.name);
            let count = active.map_or(0, |m| m.len());
            if count >= ACTIVE_SHARE_IDENTIFIERS_PER_QUEUE_MAX
                && !active.is_some_and(|m| m.contains_key(id))
            {
                return Err(CoreError::LimitExceeded(format!(
                    "job queue {} already has {count} active share identifiers (with unfinished jobs), the most allowed; shareIdentifier {id:?} would be one more",
                    queue.name
                )));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Indexes and usage, kept in step with the jobs

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
    if job.status == JobStatus::Runnable {
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

// ---------------------------------------------------------------------------------------------
// Ranking and dispatch order

/// One share waiting to dispatch, as the scheduler ranks it.
#[derive(Clone, Debug)]
pub struct RankedShare<'a> {
    /// The distribution entry (`UserA*`) or the identifier itself.
    pub key: &'a str,
    pub weight_e4: u32,
    /// Pooled over its identifiers, thousandths of a vCPU × ms, unweighted.
    pub usage_mvcpu_ms: f64,
    pub running_vcpus_milli: u64,
    /// Its identifiers that have jobs waiting.
    pub identifiers: Vec<&'a str>,
    /// Its next job: (priority, seq).
    head: (Reverse<i64>, u64),
}

impl RankedShare<'_> {
    pub fn weighted_usage(&self) -> f64 {
        self.usage_mvcpu_ms * f64::from(self.weight_e4) / 1e4
    }
    fn weighted_running(&self) -> f64 {
        self.running_vcpus_milli as f64 * f64::from(self.weight_e4) / 1e4
    }
}

type Entry<'a> = (Reverse<i64>, u64, &'a String);

/// The shares of a fair-share queue that have jobs waiting (RUNNABLE, or `fresh`: admitted in
/// this pass), best first. None for a queue without a policy.
pub fn rank<'a>(
    state: &'a State,
    queue: &JobQueue,
    fresh: &[(u64, String)],
) -> Option<(Vec<RankedShare<'a>>, BTreeMap<&'a str, Vec<Entry<'a>>>)> {
    let rules = Rules::for_queue(state, queue)?;
    // Jobs admitted in this pass are still SUBMITTED in the state; they join their share's
    // order here.
    let mut fresh_by_id: BTreeMap<&'a str, Vec<Entry<'a>>> = BTreeMap::new();
    for (_, id) in fresh {
        let Some(job) = state.jobs.get(id) else {
            continue;
        };
        let Some(share_id) = job.share_identifier.as_deref() else {
            continue;
        };
        fresh_by_id.entry(share_id).or_default().push((
            Reverse(job.scheduling_priority.unwrap_or(0)),
            job.seq,
            &job.id,
        ));
    }
    for entries in fresh_by_id.values_mut() {
        entries.sort();
    }
    let mut heads: BTreeMap<&'a str, (Reverse<i64>, u64)> = BTreeMap::new();
    if let Some(per_id) = state.shares.runnable.get(&queue.name) {
        for (id, set) in per_id {
            if let Some((p, seq, _)) = set.get_min() {
                heads.insert(id.as_str(), (*p, *seq));
            }
        }
    }
    for (id, entries) in &fresh_by_id {
        let head = (entries[0].0, entries[0].1);
        let h = heads.entry(id).or_insert(head);
        *h = (*h).min(head);
    }
    let usage = usage_now(state, &queue.name, &rules);
    let load = state.shares.load.get(&queue.name);
    let mut shares: BTreeMap<&'a str, RankedShare<'a>> = BTreeMap::new();
    for (id, head) in heads {
        let (key, weight_e4) = rules.share_of(id);
        let share = shares.entry(key).or_insert_with(|| RankedShare {
            key,
            weight_e4,
            usage_mvcpu_ms: 0.0,
            running_vcpus_milli: 0,
            identifiers: Vec::new(),
            head,
        });
        share.identifiers.push(id);
        share.head = share.head.min(head);
    }
    // Usage and running work pool over every identifier of a share, waiting or not.
    for (id, used) in &usage {
        if let Some(share) = shares.get_mut(rules.share_of(id).0) {
            share.usage_mvcpu_ms += used;
        }
    }
    for (id, l) in load.into_iter().flatten() {
        if let Some(share) = shares.get_mut(rules.share_of(id).0) {
            share.running_vcpus_milli += l.running_vcpus_milli;
        }
    }
    let mut ranked: Vec<RankedShare<'a>> = shares.into_values().collect();
    ranked.sort_by(|a, b| {
        a.weighted_usage()
            .total_cmp(&b.weighted_usage())
            .then_with(|| a.weighted_running().total_cmp(&b.weighted_running()))
            .then_with(|| a.head.1.cmp(&b.head.1))
            .then_with(|| a.key.cmp(b.key))
    });
    Some((ranked, fresh_by_id))
}

/// A fair-share queue's waiting jobs in the order the scheduler takes them, lazily: shares by
/// rank, each share's jobs merged from its identifiers. None for a queue without a policy.
pub fn dispatch_order<'a>(
    state: &'a State,
    queue: &JobQueue,
    fresh: &[(u64, String)],
) -> Option<DispatchOrder<'a>> {
    let (ranked, mut fresh_by_id) = rank(state, queue, fresh)?;
    let mut shares = Vec::with_capacity(ranked.len());
    for share in ranked {
        let mut sources: Vec<Box<dyn Iterator<Item = Entry<'a>> + 'a>> = Vec::new();
        for id in share.identifiers {
            sources.push(Box::new(
                runnable_of(state, &queue.name, id).map(|(p, s, j)| (*p, *s, j)),
            ));
            if let Some(entries) = fresh_by_id.remove(id) {
                sources.push(Box::new(entries.into_iter()));
            }
        }
        shares.push(sources);
    }
    Some(DispatchOrder {
        shares: shares.into_iter(),
        current: Merge::default(),
    })
}

/// See `dispatch_order`.
pub struct DispatchOrder<'a> {
    shares: std::vec::IntoIter<Vec<Box<dyn Iterator<Item = Entry<'a>> + 'a>>>,
    current: Merge<'a>,
}

impl<'a> Iterator for DispatchOrder<'a> {
    type Item = &'a String;
    fn next(&mut self) -> Option<&'a String> {
        loop {
            if let Some((_, _, id)) = self.current.next() {
                return Some(id);
            }
            self.current = Merge::new(self.shares.next()?);
        }
    }
}

/// A k-way merge of sorted sources.
#[derive(Default)]
struct Merge<'a> {
    heap: BinaryHeap<Reverse<(Entry<'a>, usize)>>,
    sources: Vec<Box<dyn Iterator<Item = Entry<'a>> + 'a>>,
}

impl<'a> Merge<'a> {
    fn new(mut sources: Vec<Box<dyn Iterator<Item = Entry<'a>> + 'a>>) -> Merge<'a> {
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(e) = s.next() {
                heap.push(Reverse((e, i)));
            }
        }
        Merge { heap, sources }
    }
}

impl<'a> Iterator for Merge<'a> {
    type Item = Entry<'a>;
    fn next(&mut self) -> Option<Entry<'a>> {
        let Reverse((e, i)) = self.heap.pop()?;
        if let Some(n) = self.sources[i].next() {
            self.heap.push(Reverse((n, i)));
        }
        Some(e)
    }
}

// ---------------------------------------------------------------------------------------------
// computeReservation

/// What computeReservation holds back in one scheduling pass over one queue.
pub struct Reservation<'a> {
    percent: i64,
    rules: Rules<'a>,
    /// Shares of the queue with work running, including what this pass placed.
    running: BTreeSet<String>,
}

impl<'a> Reservation<'a> {
    /// None when the queue has no policy or reserves nothing.
    pub fn new(state: &'a State, queue: &JobQueue) -> Option<Reservation<'a>> {
        let rules = Rules::for_queue(state, queue)?;
        if rules.reservation_percent == 0 {
            return None;
        }
        let running = loads(state, &queue.name)
            .filter(|(_, l)| l.running_vcpus_milli > 0)
            .map(|(id, _)| rules.share_of(id).0.to_string())
            .collect();
        Some(Reservation {
            percent: rules.reservation_percent,
            rules,
            running,
        })
    }

    /// The most vCPUs (thousandths) `ce` may have in use once `job` is placed there; None when
    /// the reservation does not apply (the job's share runs nothing yet, or `ce` has no bound).
    pub fn cap_milli(&self, job: &Job, ce: &ComputeEnvironment) -> Option<u64> {
        let key = self.rules.share_of(job.share_identifier.as_deref()?).0;
        if !self.running.contains(key) {
            return None;
        }
        let (base, held) = held_back_milli(ce, self.percent, self.running.len())?;
        Some(base - held)
    }

    pub fn placed(&mut self, job: &Job) {
        if let Some(id) = job.share_identifier.as_deref() {
            let key = self.rules.share_of(id).0.to_string();
            self.running.insert(key);
        }
    }
}

/// (the environment's bound, what `percent` held back over `active` shares takes of it), in
/// thousandths of a vCPU; None for an environment with no bound to reserve from.
fn held_back_milli(ce: &ComputeEnvironment, percent: i64, active: usize) -> Option<(u64, u64)> {
    let base = match ce.kind {
        ComputeEnvironmentType::Managed => ce.max_vcpus_milli()?,
        ComputeEnvironmentType::Unmanaged => ce.unmanaged_vcpus?.max(0) as u64 * 1000,
    };
    let share = (percent as f64 / 100.0).powi(active.min(i32::MAX as usize) as i32);
    Some((base, ((base as f64) * share).ceil() as u64))
}

// ---------------------------------------------------------------------------------------------
// Why a job waits

/// Where a RUNNABLE job of a fair-share queue stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub share: String,
    pub weight_e4: u32,
    pub usage_mvcpu_ms: f64,
    /// Shares that dispatch before this one.
    pub shares_ahead: usize,
    /// Environments with room that computeReservation keeps from this job's share:
    /// (name, vCPUs held back, thousandths).
    pub reserved: Vec<(String, u64)>,
}

impl Standing {
    /// "share teamA has used 12.5 vCPU-s (weight 0.25), 2 shares ahead".
    pub fn describe(&self) -> String {
        let ahead = match self.shares_ahead {
            0 => "next to dispatch".to_string(),
            1 => "1 share ahead".to_string(),
            n => format!("{n} shares ahead"),
        };
        format!(
            "share {} has used {} vCPU-s (weight {}), {ahead}",
            self.share,
            format_amount(self.usage_mvcpu_ms / 1e6),
            format_amount(f64::from(self.weight_e4) / 1e4)
        )
    }
}

fn format_amount(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

pub fn standing(state: &State, job: &Job) -> Option<Standing> {
    let identifier = job.share_identifier.as_deref()?;
    let queue = state.job_queues.get(&job.queue)?;
    let (ranked, _) = rank(state, queue, &[])?;
    let rules = Rules::for_queue(state, queue)?;
    let key = rules.share_of(identifier).0;
    let position = ranked.iter().position(|s| s.key == key)?;
    let share = &ranked[position];
    let mut reserved = Vec::new();
    if let Some(r) = Reservation::new(state, queue) {
        for entry in &queue.compute_environment_order {
            let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
                continue;
            };
            let used = state.ce_used_vcpus_milli(&ce.name);
            let has_room = ce.state == ResourceState::Enabled
                && ce_has_room(ce, used, job.resources)
                && state
                    .agents
                    .values()
                    .any(|a| a.serves(ce) && agent_has_room(a, job.resources));
            if let Some(cap) = r.cap_milli(job, ce) {
                if has_room && used + u64::from(job.resources.vcpus_milli) > cap {
                    let (_, held) = held_back_milli(ce, r.percent, r.running.len())?;
                    reserved.push((ce.name.clone(), held));
                }
            }
        }
    }
    Some(Standing {
        share: key.to_string(),
        weight_e4: share.weight_e4,
        usage_mvcpu_ms: share.usage_mvcpu_ms,
        shares_ahead: position,
        reserved,
    })
}

/// RUNNABLE jobs ahead of `job` in its fair-share queue's dispatch order.
pub fn jobs_ahead(state: &State, job: &Job) -> Option<usize> {
    let queue = state.job_queues.get(&job.queue)?;
    job.share_identifier.as_ref()?;
    dispatch_order(state, queue, &[])?.position(|id| *id == job.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[(&str, Option<u32>)]) -> FairsharePolicy {
        FairsharePolicy {
            share_decay_seconds: None,
            compute_reservation: None,
            share_distribution: entries
                .iter()
                .map(|(id, w)| ShareWeight {
                    share_identifier: id.to_string(),
                    weight_factor_e4: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn overlapping_and_duplicate_identifiers_are_named() {
        let e = check_policy(&policy(&[("UserA*", None), ("UserA1", None)])).unwrap_err();
        assert!(
            e.contains("\"UserA*\"") && e.contains("\"UserA1\"") && e.contains("overlap"),
            "{e}"
        );
        let e = check_policy(&policy(&[("b", None), ("b", None)])).unwrap_err();
        assert!(e.contains("\"b\" twice"), "{e}");
        let e = check_policy(&policy(&[("User*", None), ("UserB*", None)])).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        check_policy(&policy(&[
            ("UserA*", None),
            ("UserB*", None),
            ("Other", Some(5)),
        ]))
        .unwrap();
        let e = check_policy(&policy(&[("a", Some(0))])).unwrap_err();
        assert!(e.contains("shareDistribution[0].weightFactor"), "{e}");
        let e = check_policy(&policy(&[("a*b", None)])).unwrap_err();
        assert!(e.contains("shareDistribution[0].shareIdentifier"), "{e}");
        let mut p = policy(&[]);
        p.share_decay_seconds = Some(SHARE_DECAY_SECONDS_MAX + 1);
        assert!(check_policy(&p).unwrap_err().contains("shareDecaySeconds"));
        p.share_decay_seconds = Some(0);
        p.compute_reservation = Some(100);
        assert!(check_policy(&p).unwrap_err().contains("computeReservation"));
    }

    #[test]
    fn identifiers_find_their_share() {
        let p = SchedulingPolicy {
            name: "p".into(),
            fairshare_policy: Some(policy(&[
                ("UserA*", Some(2500)),
                ("UserB", Some(5000)),
                ("Z*", None),
            ])),
            tags: Tags::new(),
        };
        let rules = Rules::of(&p);
        assert_eq!(rules.share_of("UserA1"), ("UserA*", 2500));
        assert_eq!(rules.share_of("UserA"), ("UserA*", 2500));
        assert_eq!(rules.share_of("UserB"), ("UserB", 5000));
        assert_eq!(rules.share_of("UserB2"), ("UserB2", 10_000));
        assert_eq!(rules.share_of("User"), ("User", 10_000));
        assert_eq!(rules.share_of("Zed"), ("Z*", 10_000));
        assert_eq!(rules.half_life_ms, 600_000.0);
    }

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
