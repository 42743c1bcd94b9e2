//! Queue order and fair share: order within and across queues, the share index, share weights.

use std::collections::BTreeMap;

use barge_core::arrays::{job_view, unborn_status};
use barge_core::fairshare::{self, RunnableKey, ShareLoad};
use barge_core::model::{Job, JobStatus, ShareWeight};
use barge_core::State;

use super::{fail, jobs_sorted, Violation, INDEXES, QUEUE_ORDER, QUEUE_PRIORITY, SHARE_WEIGHTS};

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
