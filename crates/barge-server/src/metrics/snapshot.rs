//! The gauges read from one published snapshot: job queues, compute environments, agents.
//! Everything here is a lookup in an index the state keeps anyway (jobs per queue and
//! status, vCPUs in use per environment) or a walk over queues, environments and agents,
//! which are bounded (500 queues, 500 environments) or few; never a walk over jobs.

use barge_core::model::{Agent, AgentScope, ComputeEnvironment, ComputeEnvironmentType};
use barge_core::State;

use super::exposition::{Kind, Text};
use super::STATUS_NAMES;

pub(super) fn render(t: &mut Text, state: &State) {
    job_queues(t, state);
    compute_environments(t, state);
    agents(t, state);
}

fn job_queues(t: &mut Text, state: &State) {
    let queues: Vec<&str> = state.job_queues.keys().map(String::as_str).collect();
    for (status, aws_name) in STATUS_NAMES {
        let name = format!("barge_job_queue_{aws_name}");
        t.family(
            &name,
            Kind::Gauge,
            &format!(
                "Jobs of the job queue in {} (AWS Batch's {aws_name}): the jobs ListJobs --job-queue Q --job-status {} lists; an array parent counts once in its own status, born array children and multi-node nodes each in theirs, unborn array children in none.",
                status.as_str(),
                status.as_str()
            ),
        );
        for q in &queues {
            t.sample(&name, &[("job_queue", q)], state.count_in(q, status) as f64);
        }
    }
    t.family(
        "barge_job_queue_QueueSize",
        Kind::Gauge,
        "Jobs of the job queue not yet finished: SubmittedJobs + PendingJobs + RunnableJobs + StartingJobs + RunningJobs.",
    );
    for q in &queues {
        let unfinished: usize = STATUS_NAMES
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(s, _)| state.count_in(q, *s))
            .sum();
        t.sample(
            "barge_job_queue_QueueSize",
            &[("job_queue", q)],
            unfinished as f64,
        );
    }
    t.family(
        "barge_job_queue_unborn_runnable_array_children",
        Kind::Gauge,
        "Array children of the job queue that are RUNNABLE but not born yet (no job row until placed), so counted in no status above: the scheduler's backlog beyond RunnableJobs.",
    );
    for q in &queues {
        t.sample(
            "barge_job_queue_unborn_runnable_array_children",
            &[("job_queue", q)],
            unborn_runnable_children(state, q) as f64,
        );
    }
    t.family(
        "barge_job_queue_info",
        Kind::Gauge,
        "Always 1; the job queue's state (ENABLED, DISABLED) and status are labels.",
    );
    for (name, q) in &state.job_queues {
        t.sample(
            "barge_job_queue_info",
            &[
                ("job_queue", name),
                ("state", q.state.as_str()),
                ("status", "VALID"),
            ],
            1.0,
        );
    }
    t.family(
        "barge_job_queue_priority",
        Kind::Gauge,
        "The job queue's priority (higher is served first).",
    );
    for (name, q) in &state.job_queues {
        t.sample(
            "barge_job_queue_priority",
            &[("job_queue", name)],
            q.priority as f64,
        );
    }
}

/// One entry per array whose unborn children are RUNNABLE: those children are the array's
/// size less its born ones (such an array is neither closed nor ordered by per-child
/// dependencies, or its unborn children would not be RUNNABLE).
fn unborn_runnable_children(state: &State, queue: &str) -> u64 {
    let Some(parents) = state.arrays_with_unborn_runnable(queue) else {
        return 0;
    };
    parents
        .iter()
        .filter_map(|(_, id)| {
            let size = state.job(id)?.array.as_ref()?.size;
            let born = state.array_index(id).map_or(0, |i| i.born.len());
            Some(u64::from(size).saturating_sub(born as u64))
        })
        .sum()
}

fn compute_environments(t: &mut Text, state: &State) {
    let ces: Vec<&ComputeEnvironment> = state
        .compute_environments
        .values()
        .map(|c| c.as_ref())
        .collect();
    t.family(
        "barge_compute_environment_info",
        Kind::Gauge,
        "Always 1; the compute environment's type (MANAGED, UNMANAGED), state (ENABLED, DISABLED) and status are labels.",
    );
    for ce in &ces {
        t.sample(
            "barge_compute_environment_info",
            &[
                ("compute_environment", &ce.name),
                ("type", ce.kind.as_str()),
                ("state", ce.state.as_str()),
                ("status", "VALID"),
            ],
            1.0,
        );
    }
    type Bound = fn(&barge_core::model::ComputeResources) -> Option<i64>;
    let bounds: [(&str, &str, Bound); 3] = [
        ("minvCpus", "computeResources.minvCpus", |r| r.min_vcpus),
        (
            "desiredvCpus",
            "computeResources.desiredvCpus (the scaler keeps it)",
            |r| r.desired_vcpus,
        ),
        (
            "maxvCpus",
            "computeResources.maxvCpus: the bound on vCPUs in use",
            |r| r.max_vcpus,
        ),
    ];
    for (field, help, get) in bounds {
        let name = format!("barge_compute_environment_{field}");
        t.family(
            &name,
            Kind::Gauge,
            &format!("The MANAGED compute environment's {help}, as DescribeComputeEnvironments answers; absent for UNMANAGED ones and unset values."),
        );
        for ce in &ces {
            let value = ce
                .compute_resources
                .as_ref()
                .filter(|_| ce.kind == ComputeEnvironmentType::Managed)
                .and_then(get);
            if let Some(v) = value {
                t.sample(&name, &[("compute_environment", &ce.name)], v as f64);
            }
        }
    }
    t.family(
        "barge_compute_environment_vcpus_in_use",
        Kind::Gauge,
        "vCPUs held by the live attempts (STARTING or RUNNING) placed in the compute environment.",
    );
    for ce in &ces {
        t.sample(
            "barge_compute_environment_vcpus_in_use",
            &[("compute_environment", &ce.name)],
            state.ce_used_vcpus_milli(&ce.name) as f64 / 1000.0,
        );
    }
    t.family(
        "barge_compute_environment_agents",
        Kind::Gauge,
        "Agents (hosts, instances) that serve the compute environment, by state: ACTIVE ones take attempts, DRAINING ones are being scaled in.",
    );
    for ce in &ces {
        let (mut active, mut draining) = (0u64, 0u64);
        for agent in state.agents.values() {
            if scope_covers(agent, ce) {
                if agent.draining {
                    draining += 1;
                } else {
                    active += 1;
                }
            }
        }
        for (label, n) in [("ACTIVE", active), ("DRAINING", draining)] {
            t.sample(
                "barge_compute_environment_agents",
                &[("compute_environment", &ce.name), ("state", label)],
                n as f64,
            );
        }
    }
    t.family(
        "barge_compute_environment_agent_vcpus",
        Kind::Gauge,
        "vCPUs the ACTIVE agents serving the compute environment offer (an agent serving several environments counts in each).",
    );
    for ce in &ces {
        let vcpus_milli: u64 = state
            .agents
            .values()
            .filter(|a| a.serves(ce))
            .map(|a| a.vcpus_milli)
            .sum();
        t.sample(
            "barge_compute_environment_agent_vcpus",
            &[("compute_environment", &ce.name)],
            vcpus_milli as f64 / 1000.0,
        );
    }
}

/// Whether `agent` serves `ce`, draining or not (`Agent::serves` says no while draining).
fn scope_covers(agent: &Agent, ce: &ComputeEnvironment) -> bool {
    match &agent.scope {
        AgentScope::ComputeEnvironment(name) => *name == ce.name,
        AgentScope::AllManaged => {
            if agent.draining {
                Agent {
                    draining: false,
                    ..agent.clone()
                }
                .serves(ce)
            } else {
                agent.serves(ce)
            }
        }
    }
}

fn agents(t: &mut Text, state: &State) {
    t.family(
        "barge_agents",
        Kind::Gauge,
        "Registered agents: kind local (barge up's own) or remote (barge agent, scaled instances), state ACTIVE or DRAINING.",
    );
    let mut counts = [[0u64; 2]; 2];
    for agent in state.agents.values() {
        let kind = usize::from(matches!(agent.scope, AgentScope::ComputeEnvironment(_)));
        counts[kind][usize::from(agent.draining)] += 1;
    }
    for (k, kind) in ["local", "remote"].into_iter().enumerate() {
        for (s, st) in ["ACTIVE", "DRAINING"].into_iter().enumerate() {
            t.sample(
                "barge_agents",
                &[("kind", kind), ("state", st)],
                counts[k][s] as f64,
            );
        }
    }
    t.family(
        "barge_agent_vcpus",
        Kind::Gauge,
        "vCPUs all registered agents offer, and those their live attempts hold (used).",
    );
    let (total, used) = state.agents.values().fold((0u64, 0u64), |(t, u), a| {
        (t + a.vcpus_milli, u + a.used_vcpus_milli)
    });
    t.sample(
        "barge_agent_vcpus",
        &[("use", "offered")],
        total as f64 / 1000.0,
    );
    t.sample(
        "barge_agent_vcpus",
        &[("use", "used")],
        used as f64 / 1000.0,
    );
}
