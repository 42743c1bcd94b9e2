//! The stored form of the state, shared by both backends: which row a `Key` names and the JSON
//! it holds, and how rows become a `State` again. Keeping it in one place is what makes the
//! two backends hold the same bytes (barge-sim's `store.rs` models exactly this; keep its
//! kinds in step).

use std::sync::Arc;

use barge_core::command::Key;
use barge_core::fairshare::ShareUsage;
use barge_core::model::*;
use barge_core::State;

use crate::{EventPage, StoreError, StoredEvent};

pub(crate) const KIND_CE: &str = "compute_environment";
pub(crate) const KIND_QUEUE: &str = "job_queue";
pub(crate) const KIND_DEFINITION: &str = "job_definition";
pub(crate) const KIND_JOB: &str = "job";
pub(crate) const KIND_LOG_STREAM: &str = "log_stream";
pub(crate) const KIND_POLICY: &str = "scheduling_policy";
pub(crate) const KIND_SHARE_USAGE: &str = "share_usage";
pub(crate) const KIND_AGENT: &str = "agent";

/// The row a key names, and the entity's JSON as `state` has it (None: absent, so the row is
/// deleted).
pub(crate) fn entity_row(state: &State, key: &Key) -> (&'static str, String, Option<Vec<u8>>) {
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
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("core types always serialize")
}

/// Puts one stored row into `state`. The caller runs `rebuild_indexes` once all are in.
pub(crate) fn put_entity(
    state: &mut State,
    kind: &str,
    key: &str,
    body: &[u8],
) -> Result<(), StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        kind: kind.to_string(),
        key: key.to_string(),
        source,
    };
    match kind {
        KIND_CE => {
            let v: ComputeEnvironment = serde_json::from_slice(body).map_err(corrupt)?;
            state
                .compute_environments
                .insert(v.name.clone(), Arc::new(v));
        }
        KIND_QUEUE => {
            let v: JobQueue = serde_json::from_slice(body).map_err(corrupt)?;
            state.job_queues.insert(v.name.clone(), Arc::new(v));
        }
        KIND_DEFINITION => {
            let v: JobDefinition = serde_json::from_slice(body).map_err(corrupt)?;
            state
                .job_definitions
                .insert((v.name.clone(), v.revision), Arc::new(v));
        }
        KIND_JOB => {
            let v: Job = serde_json::from_slice(body).map_err(corrupt)?;
            state.jobs.insert(v.id.clone(), Arc::new(v));
        }
        KIND_LOG_STREAM => {
            let v: LogStream = serde_json::from_slice(body).map_err(corrupt)?;
            state.log_streams.insert(v.name.clone(), Arc::new(v));
        }
        KIND_POLICY => {
            let v: SchedulingPolicy = serde_json::from_slice(body).map_err(corrupt)?;
            state
                .scheduling_policies
                .insert(v.name.clone(), Arc::new(v));
        }
        KIND_SHARE_USAGE => {
            let v: ShareUsage = serde_json::from_slice(body).map_err(corrupt)?;
            state.share_usage.insert(v.queue.clone(), Arc::new(v));
        }
        KIND_AGENT => {
            let v: Agent = serde_json::from_slice(body).map_err(corrupt)?;
            state.agents.insert(v.id.clone(), Arc::new(v));
        }
        // A kind this build does not know was written by a newer one; the schema version
        // check refuses that case before we get here.
        _ => {}
    }
    Ok(())
}

/// The bound parameters of `filter_events`' resume condition `(timestamp, stream, seq) > (a,
/// b, c)`. Without a position the tuple sorts before every row (seq -1 is below any stored
/// seq), so both backends bind exactly the same values.
pub(crate) fn filter_after(after: Option<(i64, u64, u64)>) -> (i64, i64, i64) {
    match after {
        Some((ts, stream, seq)) => (ts, stream as i64, seq as i64),
        None => (i64::MIN, 0, -1),
    }
}

/// `filter_events`' page from rows already in (timestamp, stream, seq) order, at most
/// `scan_max` of them: the kept events up to `limit`, the position of the last row examined,
/// and whether the scan reached the end of the matching rows.
pub(crate) fn filter_page(
    rows: impl Iterator<Item = Result<StoredEvent, StoreError>>,
    limit: usize,
    scan_max: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Result<EventPage, StoreError> {
    let mut out = Vec::new();
    let mut last = None;
    let mut scanned = 0;
    for row in rows {
        let e = row?;
        scanned += 1;
        last = Some((e.timestamp_ms, e.stream, e.seq));
        if keep(&e.message) {
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
    }
    let exhausted = out.len() < limit && scanned < scan_max;
    Ok((out, last, exhausted))
}
