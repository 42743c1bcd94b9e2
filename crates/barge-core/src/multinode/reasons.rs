//! Why a multi-node job or node waits, and what would move it on (statusReason, `barge why`).

use super::*;

fn describe_gang(m: &MultiNodeJob) -> String {
    let (v, mem) = m.total();
    format!(
        "all {} nodes ({} vCPU and {mem} MiB of memory in all)",
        m.num_nodes,
        format_vcpus(v)
    )
}

/// The waiting reason of a RUNNABLE multi-node parent or node.
pub fn why_waiting(state: &State, job: &Job) -> String {
    if let Some(n) = &job.node {
        return format!(
            "Waiting for the next attempt of multi-node parallel job {}, which runs its nodes together",
            n.parent_id
        );
    }
    let Some(m) = &job.multinode else {
        return "Waiting".into();
    };
    let Some(queue) = state.job_queues.get(&job.queue) else {
        return format!("Job queue {} no longer exists", job.queue);
    };
    if has_live_node(state, &job.id, m) {
        return format!(
            "Waiting for the nodes of attempt {} to stop before the whole gang starts again",
            job.attempts.len()
        );
    }
    let found = gang_obstacles(state, queue, m);
    let need = describe_gang(m);
    if let Some(GangObstacle::None { ce }) = found
        .iter()
        .find(|o| matches!(o, GangObstacle::None { .. }))
    {
        return format!(
            "Waiting for the scheduler to place {need} together on compute environment {ce}"
        );
    }
    if !found.is_empty() && found.iter().all(GangObstacle::never) {
        let parts: Vec<String> = found
            .iter()
            .filter_map(|o| match o {
                GangObstacle::MaxVcpus { ce, max_milli } => Some(format!(
                    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - compute environment {ce} allows at most {} vCPU (maxvCpus) and the multi-node job needs {need}",
                    format_vcpus(*max_milli)
                )),
                GangObstacle::HostsTooSmall { ce, hosts } => Some(format!(
                    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - the multi-node job needs {need} placed at once, and the {hosts} host(s) of compute environment {ce} cannot hold them even when idle"
                )),
                _ => None,
            })
            .collect();
        return parts.join("; ");
    }
    let busy: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::Busy { ce, fit } => Some(format!(
                "{ce} (room for {fit} of {} nodes now)",
                m.num_nodes
            )),
            _ => None,
        })
        .collect();
    if !busy.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - waiting for room for {need} at once on compute environment {}",
            busy.join(", ")
        );
    }
    let no_agents: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::NoAgents { ce } => Some(ce.clone()),
            _ => None,
        })
        .collect();
    if !no_agents.is_empty() {
        return format!(
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - no agent has joined compute environment {}; start `barge agent` for it",
            no_agents.join(", ")
        );
    }
    let disabled: Vec<String> = found
        .iter()
        .filter_map(|o| match o {
            GangObstacle::Disabled { ce } => Some(ce.clone()),
            _ => None,
        })
        .collect();
    format!(
        "Waiting: compute environment {} of job queue {} is DISABLED; enable it to run this job",
        disabled.join(", "),
        queue.name
    )
}

/// `barge why`'s advice for a RUNNABLE multi-node parent, one line per compute environment.
pub fn unblock(state: &State, job: &Job) -> Vec<String> {
    let (Some(m), Some(queue)) = (&job.multinode, state.job_queues.get(&job.queue)) else {
        return Vec::new();
    };
    if has_live_node(state, &job.id, m) {
        return vec![format!(
            "wait for the nodes of attempt {} to stop; the next attempt places all nodes together",
            job.attempts.len()
        )];
    }
    let (total_v, _) = m.total();
    gang_obstacles(state, queue, m)
        .into_iter()
        .map(|o| match o {
            GangObstacle::MaxVcpus { ce, .. } => format!(
                "raise maxvCpus of compute environment {ce} to at least {} (the sum over all nodes), or ask for fewer nodes or vCPUs",
                total_v.div_ceil(1000)
            ),
            GangObstacle::HostsTooSmall { ce, .. } => format!(
                "add hosts to compute environment {ce} or bigger ones (barge up --agent-vcpus / --agent-memory-mib), or ask for fewer nodes (nodeOverrides.numNodes) or smaller ones"
            ),
            GangObstacle::Disabled { ce } => format!(
                "enable compute environment {ce} (aws batch update-compute-environment --compute-environment {ce} --state ENABLED)"
            ),
            GangObstacle::NoAgents { ce } => format!("start an agent for compute environment {ce}"),
            GangObstacle::Busy { ce, fit } => format!(
                "wait for jobs on compute environment {ce} to finish: {fit} of {} nodes fit now, and a multi-node job starts only when all do",
                m.num_nodes
            ),
            GangObstacle::None { ce } => format!(
                "nothing: compute environment {ce} has room for every node, the next scheduling pass places them"
            ),
        })
        .collect()
}
