//! The order a fair-share queue dispatches in: shares ranked by weighted usage, each share's
//! jobs by priority and submission, merged lazily so a pass reads only what it places.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::{runnable_of, usage_now, Rules};
use crate::model::*;
use crate::state::State;

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

/// The waiting shares of a queue, best first, and the jobs admitted in this pass by identifier.
pub struct Ranking<'a> {
    pub shares: Vec<RankedShare<'a>>,
    fresh: BTreeMap<&'a str, Vec<Entry<'a>>>,
}

/// The shares of a fair-share queue that have jobs waiting (RUNNABLE, or `fresh`: admitted in
/// this pass), best first. None for a queue without a policy.
pub fn rank<'a>(
    state: &'a State,
    queue: &JobQueue,
    fresh: &[(u64, String)],
) -> Option<Ranking<'a>> {
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
    Some(Ranking {
        shares: ranked,
        fresh: fresh_by_id,
    })
}

/// A fair-share queue's waiting jobs in the order the scheduler takes them, lazily: shares by
/// rank, each share's jobs merged from its identifiers. None for a queue without a policy.
pub fn dispatch_order<'a>(
    state: &'a State,
    queue: &JobQueue,
    fresh: &[(u64, String)],
) -> Option<DispatchOrder<'a>> {
    let Ranking {
        shares: ranked,
        fresh: mut fresh_by_id,
    } = rank(state, queue, fresh)?;
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

/// RUNNABLE jobs ahead of `job` in its fair-share queue's dispatch order.
pub fn jobs_ahead(state: &State, job: &Job) -> Option<usize> {
    let queue = state.job_queues.get(&job.queue)?;
    job.share_identifier.as_ref()?;
    dispatch_order(state, queue, &[])?.position(|id| *id == job.id)
}
