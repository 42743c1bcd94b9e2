//! What a remote agent should be doing, computed from the state rather than remembered as a
//! queue of messages. A remote agent polls with the attempts it holds; the answer launches
//! every attempt the state gives it that it does not hold, and stops every attempt it holds that
//! is not (any more) its own or that a terminate or a timeout is stopping. Level-triggered
//! instructions repair themselves: a lost answer, a partition, a restart of the agent or a new
//! leader only delay them to the next poll.

use crate::agent::{AgentInstruction, AttemptSpec};
use crate::model::*;
use crate::state::State;

use super::attempts::attempt_spec;
use super::multinode::node_spec;

/// One attempt an agent holds: running, or ended with its end not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAttempt {
    pub job_id: String,
    pub attempt_id: String,
}

/// The instructions for `agent_id`, which holds `held`. Launches come first, in job order;
/// an agent ignores a launch of an attempt it ran before (see the agent's loop), so an answer
/// that crosses the agent's own report of an end is harmless.
pub fn reconcile(state: &State, agent_id: &str, held: &[HeldAttempt]) -> Vec<AgentInstruction> {
    let holds = |attempt_id: &str| held.iter().any(|h| h.attempt_id == attempt_id);
    let mut launch: Vec<AttemptSpec> = Vec::new();
    let mut stop: Vec<AgentInstruction> = Vec::new();
    let mut assigned: Vec<&str> = Vec::new();
    for status in [JobStatus::Starting, JobStatus::Running] {
        for queue in state.queues_with(status) {
            for (_, id) in state.jobs_in(&queue, status).into_iter().flatten() {
                let job = &state.jobs[id];
                let Some(a) = &job.current else { continue };
                if a.agent_id != agent_id || a.stopped_at.is_some() {
                    continue;
                }
                // A node of a gang runs only once its main node does.
                if job.node.as_ref().is_some_and(|n| !n.launched) {
                    continue;
                }
                assigned.push(&a.id);
                match (&job.stop_reason, holds(&a.id)) {
                    (None, true) => {}
                    (None, false) => launch.push(match job.node {
                        Some(_) => node_spec(state, id),
                        None => attempt_spec(state, job, a),
                    }),
                    // Being stopped: the agent stops it, or, not holding it, answers that it
                    // is over, so the job does not wait for it.
                    (Some(_), _) => stop.push(AgentInstruction::Stop {
                        job_id: job.id.clone(),
                        attempt_id: a.id.clone(),
                        grace_ms: state.stop_grace_ms(&a.compute_environment),
                    }),
                }
            }
        }
    }
    for h in held {
        if !assigned.contains(&h.attempt_id.as_str()) {
            // Not this agent's live attempt: it ended here already, was failed when the agent
            // was lost, or belongs to another agent now. Stop it at once.
            stop.push(AgentInstruction::Stop {
                job_id: h.job_id.clone(),
                attempt_id: h.attempt_id.clone(),
                grace_ms: 0,
            });
        }
    }
    launch
        .into_iter()
        .map(AgentInstruction::Launch)
        .chain(stop)
        .collect()
}
