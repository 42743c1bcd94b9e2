//! Placement: `plan(snapshot)` proposes which SUBMITTED jobs to admit and which RUNNABLE jobs to
//! start where. It never changes state; the applier re-checks every proposal when it commits.
//!
//! Rules (v1): enabled and disabled queues alike drain what they hold (a disabled queue only
//! refuses new jobs), in descending priority; within a queue, jobs go in submission order (a
//! queue with a fair-share policy orders them by share instead, see `fairshare`); each
//! job tries its queue's compute environments in ascending order and takes the first ENABLED
//! one whose maxvCpus bound and an agent's free vCPUs and memory both have room. A job that
//! can never fit is skipped (its statusReason says why) rather than blocking the queue.

use std::collections::BTreeMap;

use crate::command::{Placement, Plan};
use crate::dependencies::{dependencies, Dependencies};
use crate::fairshare;
use crate::limits::*;
use crate::model::*;
use crate::multinode;
use crate::resources::{agent_could_fit, agent_has_room, ce_has_room};
use crate::state::State;

/// Proposes a plan. `new_attempt_id` names each placement's attempt (a UUID in the server, a
/// counter in the simulator).
pub fn plan(state: &State, new_attempt_id: &mut dyn FnMut() -> String) -> Plan {
    let mut plan = Plan::default();

    // Admission: a SUBMITTED job becomes RUNNABLE, PENDING (dependencies unfinished) or FAILED
    // (a dependency failed); the applier decides against the state it commits to.
    let mut admitted: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    'admit: for queue in state.queues_with(JobStatus::Submitted) {
        for (seq, id) in state
            .jobs_in(&queue, JobStatus::Submitted)
            .into_iter()
            .flatten()
        {
            if plan.admit.len() >= SCHEDULER_ADMIT_PER_PASS_MAX {
                break 'admit;
            }
            plan.admit.push(id.clone());
            // Only jobs whose dependencies are met become RUNNABLE, and so placeable, now (an
            // array parent never does: its children are placed from the next pass on).
            let job = &state.jobs[id];
            if job.array.is_none() && dependencies(state, job) == Dependencies::Met {
                admitted
                    .entry(queue.clone())
                    .or_default()
                    .push((*seq, id.clone()));
            }
        }
    }

    // Working copies of what is free, updated as the plan books capacity.
    let mut agents: Vec<Agent> = state.agents.values().map(|a| (**a).clone()).collect();
    let mut ce_used: BTreeMap<String, u64> = state
        .compute_environments
        .keys()
        .map(|n| (n.clone(), state.ce_used_vcpus_milli(n)))
        .collect();

    let mut queues: Vec<&JobQueue> = state.job_queues.values().map(|q| &**q).collect();
    queues.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });

    let mut visits = 0;
    // Nodes of the gangs planned so far: each is a placement the applier commits.
    let mut gang_nodes = 0;
    for queue in queues {
        if agents.iter().all(|a| a.free_vcpus_milli() == 0) {
            break;
        }
        let fresh: &[(u64, String)] = admitted.get(&queue.name).map_or(&[], |v| v);
        let mut reservation = fairshare::Reservation::new(state, queue);
        let mut misses = 0;
        for candidate in queue_order(state, queue, fresh) {
            let (job, indexes): (&Job, Box<dyn Iterator<Item = u32>>) = match candidate {
                Candidate::Job(id) => (&*state.jobs[id], Box::new(std::iter::empty())),
                // The unborn children of an array, in index order. They all need the same, so
                // the first that does not fit ends the array's turn.
                Candidate::Array(parent_id) => {
                    let parent = &state.jobs[parent_id];
                    let size = parent.array.as_ref().map_or(0, |a| a.size);
                    let born = state.array_index(parent_id);
                    let cursor = born.map_or(0, |b| b.cursor);
                    let unborn =
                        (cursor..size).filter(move |i| born.is_none_or(|b| !b.born.contains(i)));
                    (&**parent, Box::new(unborn))
                }
            };
            if job.node.is_some() {
                // A node waits for its job's next gang; it is never placed on its own.
                continue;
            }
            if let Some(m) = &job.multinode {
                if plan.placements.len() + gang_nodes >= SCHEDULER_PLACEMENTS_PER_PASS_MAX {
                    return plan;
                }
                visits += 1;
                if visits > SCHEDULER_VISITS_PER_PASS_MAX {
                    return plan;
                }
                match multinode::plan_gang(
                    state,
                    queue,
                    job,
                    &mut agents,
                    &mut ce_used,
                    new_attempt_id,
                ) {
                    Some(gang) => {
                        gang_nodes += gang.nodes.len();
                        plan.gangs.push(gang);
                    }
                    // As for a single job: a gang that can never fit here must not use up
                    // the queue's misses.
                    None if !multinode::gang_could_ever_fit(state, queue, m) => {}
                    None => misses += 1,
                }
                if misses >= SCHEDULER_MISSES_PER_QUEUE_MAX {
                    break;
                }
                continue;
            }
            let ids: Box<dyn Iterator<Item = String>> = if job.array.is_some() {
                let parent_id = job.id.clone();
                Box::new(indexes.map(move |i| crate::arrays::child_id(&parent_id, i)))
            } else {
                Box::new(std::iter::once(job.id.clone()))
            };
            for id in ids {
                if plan.placements.len() + gang_nodes >= SCHEDULER_PLACEMENTS_PER_PASS_MAX {
                    return plan;
                }
                visits += 1;
                if visits > SCHEDULER_VISITS_PER_PASS_MAX {
                    return plan;
                }
                let cap = |ce: &ComputeEnvironment| reservation.as_ref()?.cap_milli(job, ce);
                match choose(state, queue, job.resources, &agents, &ce_used, &cap) {
                    Some((ce, agent_index)) => {
                        if let Some(r) = &mut reservation {
                            r.placed(job);
                        }
                        let agent = &mut agents[agent_index];
                        agent.used_vcpus_milli += u64::from(job.resources.vcpus_milli);
                        agent.used_memory_mib += job.resources.memory_mib;
                        agent.used_gpus += job.resources.gpus;
                        *ce_used.entry(ce.clone()).or_insert(0) +=
                            u64::from(job.resources.vcpus_milli);
                        plan.placements.push(Placement {
                            job_id: id,
                            compute_environment: ce,
                            agent_id: agent.id.clone(),
                            attempt_id: new_attempt_id(),
                        });
                    }
                    // A job that can never fit here waits with a MISCONFIGURATION reason; it
                    // must not use up the queue's misses, or enough of them would starve the
                    // jobs behind them.
                    None if !could_ever_fit(state, queue, job.resources) => break,
                    None => {
                        misses += 1;
                        break;
                    }
                }
            }
            if misses >= SCHEDULER_MISSES_PER_QUEUE_MAX {
                break;
            }
        }
    }
    plan
}

/// The first `max` RUNNABLE jobs of a queue in the order the scheduler takes them, each with
/// the time it took its place (GetJobQueueSnapshot). Unborn array children count as jobs.
pub fn front_of_queue(state: &State, queue: &JobQueue, max: usize) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for candidate in queue_order(state, queue, &[]) {
        if out.len() >= max {
            break;
        }
        match candidate {
            Candidate::Job(id) => {
                let job = &state.jobs[id];
                // A node waiting for its job's next gang is not in line: its job is.
                if job.node.is_none() {
                    out.push((id.clone(), job.runnable_at.unwrap_or(job.created_at)));
                }
            }
            Candidate::Array(parent_id) => {
                let parent = &state.jobs[parent_id];
                let Some(array) = &parent.array else { continue };
                let since = array.released_at.unwrap_or(parent.created_at);
                let born = state.array_index(parent_id);
                let cursor = born.map_or(0, |b| b.cursor);
                let unborn = (cursor..array.size)
                    .filter(|i| born.is_none_or(|b| !b.born.contains(i)))
                    .take(max - out.len());
                out.extend(unborn.map(|i| (crate::arrays::child_id(parent_id, i), since)));
            }
        }
    }
    out
}

/// A queue's candidates in the order it dispatches them: by share in a queue with a fair-share
/// policy (see `fairshare`, where an array with unborn RUNNABLE children stands in its share by
/// its parent), else in submission order.
fn queue_order<'a>(
    state: &'a State,
    queue: &JobQueue,
    fresh: &'a [(u64, String)],
) -> Box<dyn Iterator<Item = Candidate<'a>> + 'a> {
    match fairshare::dispatch_order(state, queue, fresh) {
        Some(by_share) => Box::new(by_share.map(|id| {
            if state.jobs[id].array.is_some() {
                Candidate::Array(id)
            } else {
                Candidate::Job(id)
            }
        })),
        None => Box::new(candidates(state, &queue.name, fresh)),
    }
}

/// What a queue's walk visits: a RUNNABLE job, or an array parent whose unborn children are
/// RUNNABLE.
enum Candidate<'a> {
    Job(&'a String),
    Array(&'a String),
}

/// A queue's RUNNABLE jobs (then those admitted in this pass) merged with its arrays that have
/// unborn RUNNABLE children, all in submission order. A child that was born and went back to
/// RUNNABLE (a retry) comes before its unborn siblings.
fn candidates<'a>(
    state: &'a State,
    queue: &str,
    admitted: &'a [(u64, String)],
) -> impl Iterator<Item = Candidate<'a>> + 'a {
    let mut jobs = state
        .jobs_in(queue, JobStatus::Runnable)
        .into_iter()
        .flatten()
        .chain(admitted)
        .peekable();
    let mut arrays = state
        .arrays_with_unborn_runnable(queue)
        .into_iter()
        .flatten()
        .peekable();
    std::iter::from_fn(move || match (jobs.peek(), arrays.peek()) {
        (Some((job_seq, _)), Some((array_seq, _))) if array_seq < job_seq => {
            arrays.next().map(|(_, id)| Candidate::Array(id))
        }
        (Some(_), _) => jobs.next().map(|(_, id)| Candidate::Job(id)),
        (None, _) => arrays.next().map(|(_, id)| Candidate::Array(id)),
    })
}

/// Whether some environment of the queue, ENABLED or not, could take `res` were it idle: its
/// maxvCpus bound allows it and one of its agents (or, where a provider scales it, one of the
/// instance types it may launch) is big enough.
pub fn could_ever_fit(state: &State, queue: &JobQueue, res: Resources) -> bool {
    queue.compute_environment_order.iter().any(|entry| {
        state
            .compute_environments
            .get(&entry.compute_environment)
            .is_some_and(|ce| {
                ce_has_room(ce, 0, res)
                    && (state
                        .agents
                        .values()
                        .any(|a| a.serves(ce) && agent_could_fit(a, res))
                        // An environment that scales can launch a type that fits.
                        || (crate::scaling::scaled_by(&state.config.scaling, ce).is_some()
                            && crate::scaling::type_fits(state, ce, res)))
            })
    })
}

/// The first compute environment of the queue, in order, with room for `res`, and the agent
/// there that fits it most tightly (best fit, as AWS's BEST_FIT allocation). `cap` is the most
/// an environment may have in use after the placement, where fair share holds some back.
fn choose(
    state: &State,
    queue: &JobQueue,
    res: Resources,
    agents: &[Agent],
    ce_used: &BTreeMap<String, u64>,
    cap: &dyn Fn(&ComputeEnvironment) -> Option<u64>,
) -> Option<(String, usize)> {
    for entry in &queue.compute_environment_order {
        let Some(ce) = state.compute_environments.get(&entry.compute_environment) else {
            continue;
        };
        if ce.state != ResourceState::Enabled {
            continue;
        }
        let used = ce_used.get(&ce.name).copied().unwrap_or(0);
        if !ce_has_room(ce, used, res)
            || cap(ce).is_some_and(|c| used + u64::from(res.vcpus_milli) > c)
        {
            continue;
        }
        let best = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.serves(ce) && agent_has_room(a, res))
            .min_by_key(|(_, a)| (a.free_vcpus_milli(), a.id.clone()));
        if let Some((index, _)) = best {
            return Some((ce.name.clone(), index));
        }
    }
    None
}
