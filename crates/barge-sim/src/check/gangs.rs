//! Multi-node jobs: a gang is placed, run and ended all-or-none, and its main node decides.

use std::sync::Arc;

use barge_core::apply::REASON_CONTAINER_EXITED;
use barge_core::model::{Job, JobStatus};
use barge_core::State;

use super::{attempt_succeeded, fail, Violation, GANG};

/// Gang all-or-none, for every multi-node job and its node rows `<id>#<n>`:
/// - node rows exist for every node or for none (a gang is placed whole), each naming its job,
///   its index and whether it is the main node;
/// - while the job is STARTING or RUNNING every node is live, all on one compute environment
///   and all in the job's attempt in progress: one live gang, never a part of one; only the
///   main node is launched before it has started;
/// - otherwise a node still live is being stopped, in the job's last attempt (a new gang never
///   starts beside an old one); a node waits RUNNABLE only while its job does, and is terminal
///   only once its job is;
/// - the main node decides: an attempt that ended by its container carries the main node's
///   exit code and reason, and the job SUCCEEDED only if its main node's attempt did; a node is
///   SUCCEEDED only if it succeeded itself or was stopped when its job succeeded.
pub fn check_gangs(state: &State) -> Result<(), Violation> {
    let mut parents: Vec<&Arc<Job>> = state
        .jobs
        .values()
        .filter(|j| j.multinode.is_some())
        .collect();
    parents.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    for p in parents {
        gang_of(state, p)?;
    }
    for node in state.jobs.values().filter(|j| j.node.is_some()) {
        let n = node.node.as_ref().expect("a node");
        let in_its_job = state
            .job(&n.parent_id)
            .and_then(|p| p.multinode.as_ref())
            .is_some_and(|m| n.index < m.num_nodes);
        if !in_its_job {
            return fail(
                GANG,
                format!("node {} belongs to no multi-node job", node.id),
            );
        }
    }
    Ok(())
}

fn gang_of(state: &State, p: &Job) -> Result<(), Violation> {
    let m = p.multinode.as_ref().expect("a parent");
    let nodes: Vec<Option<&Arc<Job>>> = (0..m.num_nodes)
        .map(|i| state.job(&barge_core::multinode::node_id(&p.id, i)))
        .collect();
    let existing = nodes.iter().flatten().count();
    if existing != 0 && existing != nodes.len() {
        return fail(
            GANG,
            format!(
                "multi-node job {} has {existing} of its {} node rows",
                p.id, m.num_nodes
            ),
        );
    }
    let live = matches!(p.status, JobStatus::Starting | JobStatus::Running);
    if live && existing == 0 {
        return fail(
            GANG,
            format!(
                "multi-node job {} is {} without nodes",
                p.id,
                p.status.as_str()
            ),
        );
    }
    let attempt_now = p.attempts.len() as u32 + u32::from(live);
    let main = nodes[m.main_node as usize];
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let r = node.node.as_ref();
        if r.is_none_or(|r| {
            r.parent_id != p.id || r.index as usize != i || r.is_main != (i as u32 == m.main_node)
        }) {
            return fail(
                GANG,
                format!(
                    "node row {} does not name its place in job {}",
                    node.id, p.id
                ),
            );
        }
        let r = r.expect("checked");
        if node.attempts_made() > attempt_now {
            return fail(
                GANG,
                format!(
                    "node {} has made {} attempts but its job only {attempt_now}",
                    node.id,
                    node.attempts_made()
                ),
            );
        }
        match (&node.current, live) {
            (None, true) => {
                return fail(
                    GANG,
                    format!(
                        "multi-node job {} is {} but its node {} is not placed (a partial gang)",
                        p.id,
                        p.status.as_str(),
                        node.id
                    ),
                )
            }
            (Some(a), true) => {
                let main_ce = main
                    .and_then(|m| m.current.as_ref())
                    .map(|a| a.compute_environment.as_str());
                if a.number != attempt_now || Some(a.compute_environment.as_str()) != main_ce {
                    return fail(
                        GANG,
                        format!(
                            "node {} runs attempt {} on {} but its job {} is in attempt {attempt_now} on {main_ce:?} (more than one gang)",
                            node.id, a.number, a.compute_environment, p.id
                        ),
                    );
                }
                let main_started = main
                    .and_then(|m| m.current.as_ref())
                    .is_some_and(|a| a.started_at.is_some());
                if !r.is_main && r.launched && !main_started {
                    return fail(
                        GANG,
                        format!(
                            "node {} was launched before main node {} started",
                            node.id, m.main_node
                        ),
                    );
                }
            }
            (Some(a), false) => {
                if a.number != attempt_now || node.stop_reason.is_none() || a.stopped_at.is_some() {
                    return fail(
                        GANG,
                        format!(
                            "node {} is live in attempt {} while its job {} is {} after {attempt_now} attempt(s), and not being stopped",
                            node.id,
                            a.number,
                            p.id,
                            p.status.as_str()
                        ),
                    );
                }
            }
            (None, false) => {}
        }
        let status_ok = match node.status {
            JobStatus::Runnable => p.status == JobStatus::Runnable,
            s if s.is_terminal() => p.status.is_terminal(),
            JobStatus::Starting | JobStatus::Running => node.current.is_some(),
            _ => false,
        };
        if !status_ok {
            return fail(
                GANG,
                format!(
                    "node {} is {} while its job {} is {}",
                    node.id,
                    node.status.as_str(),
                    p.id,
                    p.status.as_str()
                ),
            );
        }
        if node.status == JobStatus::Succeeded
            && !node.attempts.last().is_some_and(attempt_succeeded)
            && p.status != JobStatus::Succeeded
        {
            return fail(
                GANG,
                format!(
                    "node {} SUCCEEDED without succeeding while its job {} is {}",
                    node.id,
                    p.id,
                    p.status.as_str()
                ),
            );
        }
    }
    // The main node decides how each attempt of the job ended.
    if let Some(last) = p.attempts.last() {
        let k = p.attempts.len();
        // Ended by another node's lost host, the main node may still be stopping.
        let main_attempt = main.and_then(|m| {
            m.attempts
                .get(k - 1)
                .or(m.current.as_ref().filter(|a| a.number as usize == k))
        });
        let Some(ma) = main_attempt else {
            return fail(
                GANG,
                format!(
                    "multi-node job {} finished attempt {k} but its main node has no attempt {k}",
                    p.id
                ),
            );
        };
        let by_container = last.status_reason.as_deref() == Some(REASON_CONTAINER_EXITED);
        if by_container && (ma.exit_code != last.exit_code || ma.reason != last.reason) {
            return fail(
                GANG,
                format!(
                    "multi-node job {} attempt {k} ended with exit {:?} but its main node exited {:?}",
                    p.id, last.exit_code, ma.exit_code
                ),
            );
        }
        if p.status == JobStatus::Succeeded && !attempt_succeeded(ma) {
            return fail(
                GANG,
                format!(
                    "multi-node job {} SUCCEEDED but its main node's attempt {k} did not",
                    p.id
                ),
            );
        }
    }
    Ok(())
}
