//! The liveness oracle: whether a waiting job could start at all, given the environments.

use barge_core::model::{Job, JobStatus, ResourceState, Resources};
use barge_core::resources::agent_could_fit;
use barge_core::State;

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
