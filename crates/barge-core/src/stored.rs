//! The stored form of the state: which row a `Key` names (its kind and key) with the entity's
//! JSON, and how rows become a `State` again. Plain serde, no IO: barge-store writes and reads
//! exactly this on both backends, and the simulator's model of the store uses the same code,
//! so a simulated restart sees only what a real one would.

use std::sync::Arc;

use crate::command::Key;
use crate::fairshare::ShareUsage;
use crate::model::*;
use crate::State;

pub const KIND_CE: &str = "compute_environment";
pub const KIND_QUEUE: &str = "job_queue";
pub const KIND_DEFINITION: &str = "job_definition";
pub const KIND_JOB: &str = "job";
pub const KIND_LOG_STREAM: &str = "log_stream";
pub const KIND_POLICY: &str = "scheduling_policy";
pub const KIND_SHARE_USAGE: &str = "share_usage";
pub const KIND_AGENT: &str = "agent";
pub const KIND_SCHEDULE: &str = "schedule";

/// The row a key names, and the entity's JSON as `state` has it (None: absent, so the row is
/// deleted).
pub fn entity_row(state: &State, key: &Key) -> (&'static str, String, Option<Vec<u8>>) {
    match key {
        Key::ComputeEnvironment(n) => (
            KIND_CE,
            n.clone(),
            state.compute_environments.get(n).map(|v| json(&**v)),
        ),
        Key::JobQueue(n) => (
            KIND_QUEUE,
            n.clone(),
            state.job_queues.get(n).map(|v| json(&**v)),
        ),
        Key::JobDefinition(n, r) => (
            KIND_DEFINITION,
            format!("{n}:{r}"),
            state
                .job_definitions
                .get(&(n.clone(), *r))
                .map(|v| json(&**v)),
        ),
        Key::Job(id) => (KIND_JOB, id.clone(), state.jobs.get(id).map(|v| json(&**v))),
        Key::LogStream(n) => (
            KIND_LOG_STREAM,
            n.clone(),
            state.log_streams.get(n).map(|v| json(&**v)),
        ),
        Key::SchedulingPolicy(n) => (
            KIND_POLICY,
            n.clone(),
            state.scheduling_policies.get(n).map(|v| json(&**v)),
        ),
        Key::ShareUsage(n) => (
            KIND_SHARE_USAGE,
            n.clone(),
            state.share_usage.get(n).map(|v| json(&**v)),
        ),
        Key::Agent(id) => (
            KIND_AGENT,
            id.clone(),
            state.agents.get(id).map(|v| json(&**v)),
        ),
        Key::Schedule(n) => (
            KIND_SCHEDULE,
            n.clone(),
            state.schedules.get(n).map(|v| json(&**v)),
        ),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("core types always serialize")
}

/// Puts one stored row into `state`. The caller runs `rebuild_indexes` once all are in.
pub fn put_entity(state: &mut State, kind: &str, body: &[u8]) -> Result<(), serde_json::Error> {
    match kind {
        KIND_CE => {
            let v: ComputeEnvironment = serde_json::from_slice(body)?;
            state
                .compute_environments
                .insert(v.name.clone(), Arc::new(v));
        }
        KIND_QUEUE => {
            let v: JobQueue = serde_json::from_slice(body)?;
            state.job_queues.insert(v.name.clone(), Arc::new(v));
        }
        KIND_DEFINITION => {
            let v: JobDefinition = serde_json::from_slice(body)?;
            state
                .job_definitions
                .insert((v.name.clone(), v.revision), Arc::new(v));
        }
        KIND_JOB => {
            let v: Job = serde_json::from_slice(body)?;
            state.jobs.insert(v.id.clone(), Arc::new(v));
        }
        KIND_LOG_STREAM => {
            let v: LogStream = serde_json::from_slice(body)?;
            state.log_streams.insert(v.name.clone(), Arc::new(v));
        }
        KIND_POLICY => {
            let v: SchedulingPolicy = serde_json::from_slice(body)?;
            state
                .scheduling_policies
                .insert(v.name.clone(), Arc::new(v));
        }
        KIND_SHARE_USAGE => {
            let v: ShareUsage = serde_json::from_slice(body)?;
            state.share_usage.insert(v.queue.clone(), Arc::new(v));
        }
        KIND_AGENT => {
            let v: Agent = serde_json::from_slice(body)?;
            state.agents.insert(v.id.clone(), Arc::new(v));
        }
        KIND_SCHEDULE => {
            let v: crate::schedule::Schedule = serde_json::from_slice(body)?;
            state.schedules.insert(v.name.clone(), Arc::new(v));
        }
        // A kind this build does not know was written by a newer one; the schema version
        // check refuses that case before we get here.
        _ => {}
    }
    Ok(())
}
