//! Placements and capacity: every Launch is legal, and live attempts fit agents and environments.

use std::collections::{BTreeMap, BTreeSet};

use barge_core::agent::AgentInstruction;
use barge_core::arrays::job_view;
use barge_core::command::Effect;
use barge_core::model::{JobStatus, ResourceState};
use barge_core::State;

use super::{fail, Violation, CAPACITY, ONE_LIVE_ATTEMPT, PLACEMENT};

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

/// Invariant 2, per agent: the live attempts on an agent fit its size. (The per-environment
/// maxvCpus bound is checked when placements are made, see `check_placements`, because lowering
/// maxvCpus below current use is allowed and only stops new placements.)
pub fn check_capacity(state: &State) -> Result<(), Violation> {
    capacity_with(state, &usage(state))
}

pub(super) fn capacity_with(state: &State, u: &Usage) -> Result<(), Violation> {
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
