//! Multi-node parallel jobs in the applier: definitions and submissions (node groups after
//! nodeOverrides), placing a whole gang, launching the nodes, and ending the job.
//!
//! The lifecycle, as AWS documents it:
//! - The scheduler proposes a gang; `place_gang` re-checks every node against the state and
//!   commits all of them or none. Each node becomes (or, on a retry, is again) a job row
//!   `<id>#<n>` with an attempt on its agent. Only the main node is launched then; the others
//!   hold their capacity and are launched once the main node reports RUNNING.
//! - The parent's status follows the main node (STARTING, RUNNING). A non-main node that exits
//!   while the main node runs keeps its ended attempt (and its capacity) until the job ends.
//! - The job's attempt ends when the main node exits or when the host of any node is lost.
//!   The main node's result (or the host-terminated reason) decides the parent as any attempt
//!   would: success, a retry of the whole gang, or failure. Every other node still running is
//!   then stopped.
//! - A node takes its own result when it exited on its own, and its job's status when it was
//!   stopped (or never launched) because the job's attempt ended; between two attempts it
//!   waits RUNNABLE. A new gang is placed only once every node of the last one is down.

use super::*;
use crate::multinode::{
    has_live_node, node_id, segments, GangPlacement, MultiNodeJob, NodeGroup, NodeProperties,
    NodeRef,
};

/// The statusReason of a node that never ran because its job's attempt ended first.
pub const REASON_NODE_NOT_LAUNCHED: &str = "The job's attempt ended before this node was launched";

/// Members of node ranges and overrides Barge does not run.
const UNSUPPORTED_MEMBERS: [&str; 6] = [
    "ecsProperties",
    "eksProperties",
    "consumableResourceProperties",
    "ecsPropertiesOverride",
    "eksPropertiesOverride",
    "consumableResourcePropertiesOverride",
];

fn invalid(field: &str, e: CoreError) -> CoreError {
    CoreError::Invalid(format!("{field}: {e}"))
}

fn refuse_unsupported(
    field: &str,
    other: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CoreError> {
    for key in other.keys() {
        if UNSUPPORTED_MEMBERS.contains(&key.as_str()) {
            return Err(CoreError::Invalid(format!(
                "{field}.{key} is not supported by this version of Barge; use container properties"
            )));
        }
    }
    Ok(())
}

/// Checks a multinode definition's nodeProperties: its shape, and each range's container as a
/// container definition is checked.
pub(super) fn check_definition(np: &NodeProperties) -> Result<(), CoreError> {
    crate::multinode::check_node_properties(np).map_err(CoreError::Invalid)?;
    for (i, r) in np.node_range_properties.iter().enumerate() {
        let field = format!("nodeProperties.nodeRangeProperties[{i}]");
        refuse_unsupported(&field, &r.other)?;
        let c = r
            .container
            .as_ref()
            .expect("checked: every range has a container");
        check_environment(&c.environment, &format!("{field}.container.environment"))?;
        let at = format!("{field}.container");
        check_requirements(&c.resource_requirements).map_err(|e| invalid(&at, e))?;
        resources_of(c).map_err(|e| invalid(&at, e))?;
    }
    Ok(())
}

/// The node groups of a submission: the definition's ranges with nodeOverrides applied and
/// `Ref::` replaced, each with the resources its nodes book.
pub(super) fn job_nodes(
    def: &JobDefinition,
    s: &SubmitJob,
    parameters: &BTreeMap<String, String>,
) -> Result<MultiNodeJob, CoreError> {
    if s.container_overrides.is_some() {
        return Err(CoreError::Invalid(
            "containerOverrides does not apply to a multi-node parallel job; use nodeOverrides.nodePropertyOverrides[].containerOverrides"
                .into(),
        ));
    }
    let Some(np) = &def.node_properties else {
        return Err(CoreError::Invalid(format!(
            "job definition {}:{} has type multinode but no nodeProperties; register a new revision",
            def.name, def.revision
        )));
    };
    let overrides = s.node_overrides.as_ref();
    let (num_nodes, main_node, segs) = segments(np, overrides).map_err(CoreError::Invalid)?;
    let list = overrides
        .and_then(|o| o.node_property_overrides.as_deref())
        .unwrap_or_default();
    for (i, o) in list.iter().enumerate() {
        let field = format!("nodeOverrides.nodePropertyOverrides[{i}]");
        refuse_unsupported(&field, &o.other)?;
        if let Some(c) = &o.container_overrides {
            check_environment(
                &c.environment,
                &format!("{field}.containerOverrides.environment"),
            )?;
            check_requirements(&c.resource_requirements)
                .map_err(|e| invalid(&format!("{field}.containerOverrides"), e))?;
        }
    }
    let none = BTreeMap::new();
    let mut groups = Vec::with_capacity(segs.len());
    for seg in segs {
        let base = np.node_range_properties[seg.range]
            .container
            .as_ref()
            .expect("checked: every range has a container");
        let mut c = base.clone();
        for k in &seg.overrides {
            // Parameters are substituted once, after every override is in.
            c = effective_container(&c, list[*k].container_overrides.as_ref(), &none)?;
        }
        let c = effective_container(&c, None, parameters)?;
        let field = if seg.overrides.is_empty() {
            format!(
                "nodeProperties.nodeRangeProperties[{}].container",
                seg.range
            )
        } else {
            format!("nodes {}:{} after nodeOverrides", seg.first, seg.last)
        };
        let resources = resources_of(&c).map_err(|e| invalid(&field, e))?;
        groups.push(NodeGroup {
            first: seg.first,
            last: seg.last,
            container: c,
            resources,
        });
    }
    Ok(MultiNodeJob {
        num_nodes,
        main_node,
        groups,
    })
}

/// Re-checks a proposed gang against the current state and, when every node still fits,
/// commits all of them: each node gets an attempt on its agent, the main node is launched.
pub(super) fn place_gang(
    state: &mut State,
    g: &GangPlacement,
    now: i64,
    changes: &mut Changes,
) -> bool {
    let Some(parent) = state.job(&g.job_id) else {
        return false;
    };
    let Some(m) = parent.multinode.clone() else {
        return false;
    };
    if parent.status != JobStatus::Runnable || has_live_node(state, &parent.id, &m) {
        return false;
    }
    let indexes: Vec<u32> = g.nodes.iter().map(|n| n.index).collect();
    if indexes != (0..m.num_nodes).collect::<Vec<u32>>() {
        return false;
    }
    let Some(ce) = state.environment_of_queue(&parent.queue, &g.compute_environment) else {
        return false;
    };
    let (total_v, _) = m.total();
    if ce.state != ResourceState::Enabled
        || ce
            .max_vcpus_milli()
            .is_some_and(|max| state.ce_used_vcpus_milli(&ce.name) + total_v > max)
    {
        return false;
    }
    // The whole gang, summed per agent, must fit each agent's free capacity now.
    let mut per_agent: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for n in &g.nodes {
        let r = m.resources_of(n.index);
        if r.gpus > 0 {
            return false;
        }
        let e = per_agent.entry(n.agent_id.as_str()).or_insert((0, 0));
        e.0 += u64::from(r.vcpus_milli);
        e.1 += r.memory_mib;
    }
    for (agent_id, (v, mem)) in &per_agent {
        let Some(agent) = state.agents.get(*agent_id) else {
            return false;
        };
        if !agent.serves(ce) || agent.free_vcpus_milli() < *v || agent.free_memory_mib() < *mem {
            return false;
        }
    }

    let mut parent = (**parent).clone();
    let number = parent.attempts.len() as u32 + 1;
    for n in &g.nodes {
        let id = node_id(&parent.id, n.index);
        let is_main = n.index == m.main_node;
        let mut node = match state.job(&id) {
            Some(existing) => (**existing).clone(),
            None => new_node(state, &parent, &m, n.index, now),
        };
        let attempt = Attempt {
            id: n.attempt_id.clone(),
            number: node.attempts.len() as u32 + 1,
            agent_id: n.agent_id.clone(),
            compute_environment: g.compute_environment.clone(),
            log_stream_name: log_stream_name(&node.definition_name, &n.attempt_id),
            placed_at: now,
            started_at: None,
            stopped_at: None,
            exit_code: None,
            reason: None,
            status_reason: None,
        };
        debug_assert_eq!(attempt.number, number, "nodes run one attempt per gang");
        state.account(&g.compute_environment, &n.agent_id, node.resources, true);
        node.status = JobStatus::Starting;
        node.status_reason = None;
        node.stop_reason = None;
        node.node.as_mut().expect("a node").launched = is_main;
        node.current = Some(attempt);
        state.put_job(node);
        changes.dirty.push(Key::Job(id.clone()));
        if is_main {
            let spec = node_spec(state, &id);
            changes.effects.push(Effect::Agent {
                agent_id: n.agent_id.clone(),
                instruction: AgentInstruction::Launch(spec),
            });
        }
    }
    parent.status = JobStatus::Starting;
    parent.status_reason = None;
    changes.dirty.push(Key::Job(parent.id.clone()));
    state.put_job(parent);
    true
}

/// A node's job row, made when its job's first gang is placed.
fn new_node(state: &State, parent: &Job, m: &MultiNodeJob, index: u32, now: i64) -> Job {
    let group = m.group_of(index);
    Job {
        id: node_id(&parent.id, index),
        name: parent.name.clone(),
        seq: state.next_job_seq,
        queue: parent.queue.clone(),
        definition_name: parent.definition_name.clone(),
        definition_revision: parent.definition_revision,
        status: JobStatus::Starting,
        status_reason: None,
        created_at: now,
        runnable_at: None,
        started_at: None,
        stopped_at: None,
        parameters: parent.parameters.clone(),
        container: group.container.clone(),
        resources: group.resources,
        // A node is tried once per attempt of its job, so it shares the job's bound.
        retry_strategy: parent.retry_strategy.clone(),
        // The job's timeout covers the whole job, not each node (AWS).
        timeout: None,
        propagate_tags: parent.propagate_tags,
        platform_capabilities: parent.platform_capabilities.clone(),
        scheduling_priority: parent.scheduling_priority,
        share_identifier: parent.share_identifier.clone(),
        depends_on: Vec::new(),
        tags: parent.tags.clone(),
        attempts: Vec::new(),
        current: None,
        is_cancelled: false,
        is_terminated: false,
        stop_reason: None,
        multinode: None,
        node: Some(NodeRef {
            parent_id: parent.id.clone(),
            index,
            is_main: index == m.main_node,
            launched: false,
        }),
        array: None,
        array_child: None,
    }
}

/// What the agent needs to run a node's current attempt: the job's variables plus AWS's node
/// variables; the other nodes also get the main node's address.
pub(super) fn node_spec(state: &State, id: &str) -> AttemptSpec {
    let node = &state.jobs[id];
    let r = node.node.as_ref().expect("a node");
    let attempt = node.current.as_ref().expect("a placed node");
    let m = state.jobs[&r.parent_id]
        .multinode
        .as_ref()
        .expect("a node's parent is a multi-node job");
    let mut spec = attempt_spec(state, node, attempt);
    spec.environment.extend([
        ("AWS_BATCH_JOB_NODE_INDEX".to_string(), r.index.to_string()),
        (
            "AWS_BATCH_JOB_NUM_NODES".to_string(),
            m.num_nodes.to_string(),
        ),
        (
            "AWS_BATCH_JOB_MAIN_NODE_INDEX".to_string(),
            m.main_node.to_string(),
        ),
    ]);
    if !r.is_main {
        let main_ip = state
            .job(&node_id(&r.parent_id, m.main_node))
            .and_then(|main| main.current.as_ref())
            .and_then(|a| state.agents.get(&a.agent_id))
            .and_then(|agent| agent.private_ipv4.clone());
        if let Some(ip) = main_ip {
            spec.environment.push((
                "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS".to_string(),
                ip,
            ));
        }
    }
    spec
}

fn parent_of(state: &State, node: &Job) -> Job {
    let id = &node.node.as_ref().expect("a node").parent_id;
    (*state.jobs[id]).clone()
}

fn is_live(status: JobStatus) -> bool {
    matches!(status, JobStatus::Starting | JobStatus::Running)
}

/// A node's Running or Exited report (its attempt is current; Logs go the ordinary way).
pub(super) fn node_report(
    state: &mut State,
    id: &str,
    report: AgentReport,
    now: i64,
    changes: &mut Changes,
) {
    let mut node = (*state.jobs[id]).clone();
    let parent = parent_of(state, &node);
    let r = node.node.clone().expect("a node");
    match report {
        AgentReport::Running { at_ms, .. } => {
            if node.status != JobStatus::Starting {
                return;
            }
            node.status = JobStatus::Running;
            node.started_at = Some(at_ms);
            let a = node.current.as_mut().expect("current");
            a.started_at = Some(at_ms);
            let stream = a.log_stream_name.clone();
            ensure_log_stream(state, &stream, now, changes);
            state.put_job(node);
            changes.dirty.push(Key::Job(id.to_string()));
            if r.is_main && parent.status == JobStatus::Starting {
                main_running(state, parent, at_ms, changes);
            }
        }
        AgentReport::Exited {
            at_ms,
            exit_code,
            reason,
            ..
        } => {
            changes.schedule = true;
            if !is_live(parent.status) {
                // The job's attempt already ended; this node was being stopped.
                finish_node(state, node, at_ms, exit_code, reason, None, changes);
                return;
            }
            let a = node.current.as_mut().expect("current");
            a.stopped_at = Some(at_ms);
            a.exit_code = exit_code;
            a.reason = reason
                .clone()
                .map(|r| truncate_chars(r, CONTAINER_REASON_CHARS_MAX));
            state.put_job(node);
            changes.dirty.push(Key::Job(id.to_string()));
            if r.is_main {
                end_gang(
                    state,
                    &parent.id,
                    at_ms,
                    exit_code,
                    reason,
                    None,
                    format!("Stopped: main node {} of the job exited", r.index),
                    changes,
                );
            }
            // Otherwise the node's ended attempt waits for the job to end (AWS: only the
            // main node's exit ends the job).
        }
        AgentReport::Logs { .. } => unreachable!("logs are appended by apply_report"),
    }
}

/// The main node runs: so does the job, and the other nodes are launched now.
fn main_running(state: &mut State, mut parent: Job, at: i64, changes: &mut Changes) {
    parent.status = JobStatus::Running;
    parent.started_at = Some(at);
    let m = parent.multinode.clone().expect("a multi-node job");
    let stopping = parent.stop_reason.is_some();
    changes.dirty.push(Key::Job(parent.id.clone()));
    let parent_id = parent.id.clone();
    state.put_job(parent);
    if stopping {
        // Terminated or timed out while starting: the job ends with its main node.
        return;
    }
    for i in (0..m.num_nodes).filter(|i| *i != m.main_node) {
        let id = node_id(&parent_id, i);
        let mut node = (*state.jobs[&id]).clone();
        let Some(a) = &node.current else { continue };
        if node.node.as_ref().is_some_and(|r| r.launched) || a.stopped_at.is_some() {
            continue;
        }
        let agent_id = a.agent_id.clone();
        node.node.as_mut().expect("a node").launched = true;
        state.put_job(node);
        changes.dirty.push(Key::Job(id.clone()));
        let spec = node_spec(state, &id);
        changes.effects.push(Effect::Agent {
            agent_id,
            instruction: AgentInstruction::Launch(spec),
        });
    }
}

/// Ends the job's live attempt: decides the parent from the given result (the main node's,
/// or a lost host's), then ends or stops every node.
#[allow(clippy::too_many_arguments)]
fn end_gang(
    state: &mut State,
    parent_id: &str,
    at: i64,
    exit_code: Option<i32>,
    reason: Option<String>,
    status_reason: Option<String>,
    stop_nodes_because: String,
    changes: &mut Changes,
) {
    let mut parent = (*state.jobs[parent_id]).clone();
    let m = parent.multinode.clone().expect("a multi-node job");
    let main = state
        .job(&node_id(parent_id, m.main_node))
        .and_then(|n| n.current.clone())
        .expect("a live gang has a live main node");
    // The parent's attempt shows the main node's container (task, log stream), as AWS fills
    // a multi-node job's attempt details from its main node.
    parent.current = Some(Attempt {
        id: main.id,
        number: parent.attempts.len() as u32 + 1,
        agent_id: main.agent_id,
        compute_environment: main.compute_environment,
        log_stream_name: main.log_stream_name,
        placed_at: main.placed_at,
        started_at: main.started_at,
        stopped_at: None,
        exit_code: None,
        reason: None,
        status_reason: None,
    });
    // The parent books no capacity of its own (its resources are zero), so this decides its
    // status exactly as any attempt's end does: success, retry or failure.
    finish_attempt(state, &mut parent, at, exit_code, reason, status_reason);
    state.put_job(parent);
    changes.dirty.push(Key::Job(parent_id.to_string()));
    changes.schedule = true;

    for i in 0..m.num_nodes {
        let id = node_id(parent_id, i);
        let Some(node) = state.job(&id) else { continue };
        let Some(a) = node.current.clone() else {
            continue;
        };
        let mut node = (**node).clone();
        let launched = node.node.as_ref().is_some_and(|r| r.launched);
        if a.stopped_at.is_some() {
            // Exited already (the main node, or one that ended on its own).
            finish_node(state, node, at, a.exit_code, a.reason, None, changes);
        } else if !state.agents.contains_key(&a.agent_id) {
            let lost = host_terminated_reason(&a.agent_id);
            finish_node(state, node, at, None, None, Some(lost), changes);
        } else if !launched {
            node.stop_reason = Some(REASON_NODE_NOT_LAUNCHED.to_string());
            finish_node(state, node, at, None, None, None, changes);
        } else if node.stop_reason.is_none() {
            changes.effects.push(Effect::Agent {
                agent_id: a.agent_id.clone(),
                instruction: AgentInstruction::Stop {
                    job_id: id.clone(),
                    attempt_id: a.id.clone(),
                    grace_ms: STOP_GRACE_MS,
                },
            });
            node.stop_reason = Some(stop_nodes_because.clone());
            state.put_job(node);
            changes.dirty.push(Key::Job(id));
        }
    }
}

/// Ends a node's attempt once its job's attempt has ended. A node stopped (or never launched)
/// because the job's attempt ended takes the job's status; one that ended on its own (or lost
/// its host) keeps its own result; between two attempts of the job it waits RUNNABLE.
fn finish_node(
    state: &mut State,
    mut node: Job,
    at: i64,
    exit_code: Option<i32>,
    reason: Option<String>,
    status_reason: Option<String>,
    changes: &mut Changes,
) {
    let parent = parent_of(state, &node);
    let mut attempt = node.current.take().expect("a node with a live attempt");
    state.account(
        &attempt.compute_environment,
        &attempt.agent_id,
        node.resources,
        false,
    );
    let host_lost = status_reason.is_some();
    attempt.stopped_at = Some(attempt.stopped_at.unwrap_or(at));
    attempt.exit_code = exit_code;
    attempt.reason = reason.map(|r| truncate_chars(r, CONTAINER_REASON_CHARS_MAX));
    attempt.status_reason =
        Some(status_reason.unwrap_or_else(|| REASON_CONTAINER_EXITED.to_string()));
    let succeeded = exit_code == Some(0) && attempt.reason.is_none() && !host_lost;
    let attempt_status_reason = attempt.status_reason.clone();
    let stopped_at = attempt.stopped_at;
    node.attempts.push(attempt);
    let by_job = node.stop_reason.take();
    match parent.status {
        s if s.is_before_start() => {
            node.status = JobStatus::Runnable;
            node.runnable_at = Some(at);
            node.status_reason = None;
        }
        s if s.is_terminal() && by_job.is_some() => {
            node.status = s;
            node.status_reason = by_job;
            node.stopped_at = stopped_at;
        }
        _ => {
            node.status = if succeeded {
                JobStatus::Succeeded
            } else {
                JobStatus::Failed
            };
            node.status_reason = attempt_status_reason;
            node.stopped_at = stopped_at;
        }
    }
    changes.dirty.push(Key::Job(node.id.clone()));
    changes.schedule = true;
    state.put_job(node);
}

/// Terminate or timeout of a live multi-node job: every launched node is asked to stop; the
/// job ends, FAILED with `reason` and never retried, when its main node's exit arrives.
pub(super) fn stop_gang(state: &mut State, parent_id: &str, reason: String, changes: &mut Changes) {
    let mut parent = (*state.jobs[parent_id]).clone();
    if parent.stop_reason.is_some() || !is_live(parent.status) {
        return;
    }
    parent.stop_reason = Some(reason.clone());
    let m = parent.multinode.clone().expect("a multi-node job");
    state.put_job(parent);
    changes.dirty.push(Key::Job(parent_id.to_string()));
    for i in 0..m.num_nodes {
        let id = node_id(parent_id, i);
        let Some(node) = state.job(&id) else { continue };
        let Some(a) = &node.current else { continue };
        let launched = node.node.as_ref().is_some_and(|r| r.launched);
        if !launched || a.stopped_at.is_some() || node.stop_reason.is_some() {
            continue;
        }
        changes.effects.push(Effect::Agent {
            agent_id: a.agent_id.clone(),
            instruction: AgentInstruction::Stop {
                job_id: id.clone(),
                attempt_id: a.id.clone(),
                grace_ms: STOP_GRACE_MS,
            },
        });
        let mut node = (**node).clone();
        node.stop_reason = Some(reason.clone());
        state.put_job(node);
        changes.dirty.push(Key::Job(id));
    }
}

/// A node's agent is gone. While the job runs, that ends the job's attempt with AWS's
/// host-terminated reason (retried when attempts remain); afterwards it only ends the node.
pub(super) fn node_orphaned(state: &mut State, id: &str, now: i64, changes: &mut Changes) {
    let node = (*state.jobs[id]).clone();
    let Some(a) = &node.current else {
        return; // ended with its gang earlier in this command
    };
    let lost = host_terminated_reason(&a.agent_id);
    let parent = parent_of(state, &node);
    if is_live(parent.status) {
        let index = node.node.as_ref().expect("a node").index;
        end_gang(
            state,
            &parent.id,
            now,
            None,
            None,
            Some(lost.clone()),
            format!("Stopped: the host of node {index} of the job terminated"),
            changes,
        );
    } else {
        finish_node(state, node, now, None, None, Some(lost), changes);
    }
}

/// After every command: the nodes waiting (RUNNABLE) for the next attempt of a job that has
/// just finished (cancelled, terminated, timed out in the queue) fail with it.
pub(super) fn settle(state: &mut State, changes: &mut Changes) {
    let finished: Vec<(String, u32)> = state
        .newly_finished
        .iter()
        .filter_map(|id| state.job(id))
        .filter_map(|j| j.multinode.as_ref().map(|m| (j.id.clone(), m.num_nodes)))
        .collect();
    for (parent_id, n) in finished {
        let reason = state.jobs[&parent_id].status_reason.clone();
        for i in 0..n {
            let id = node_id(&parent_id, i);
            let Some(node) = state.job(&id) else { continue };
            if node.status != JobStatus::Runnable {
                continue;
            }
            let mut node = (**node).clone();
            node.status = JobStatus::Failed;
            node.status_reason = reason.clone();
            state.put_job(node);
            changes.dirty.push(Key::Job(id));
        }
    }
}
