//! The simulated durable store: what barge-store would hold after each commit, as JSON bytes.
//! It is written exactly as barge-store's `commit` writes (each key in `Changes.dirty`: the
//! entity found in the state, or a delete when it is absent, through the same
//! `barge_core::stored` code) and read back exactly as its `load` reads (`stored::put_entity`,
//! then `rebuild_indexes`), so a restart in the simulator sees only what a real restart would.

use std::collections::{BTreeMap, BTreeSet};

use barge_core::arn::Identity;
use barge_core::command::{Changes, Key};
use barge_core::{stored, State};

#[derive(Clone, Debug, Default)]
pub struct SimStore {
    entities: BTreeMap<(&'static str, String), Vec<u8>>,
    /// How many log events each stream (by number) has stored.
    log_events: BTreeMap<u64, u64>,
}

/// The store row a key names, and the entity's JSON as `state` has it (None: absent), exactly
/// as barge-store writes it.
fn row(state: &State, key: &Key) -> ((&'static str, String), Option<Vec<u8>>) {
    let (kind, id, body) = stored::entity_row(state, key);
    ((kind, id), body)
}

/// Every key the state holds an entity for.
fn all_keys(state: &State) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    keys.extend(
        state
            .compute_environments
            .keys()
            .map(|n| Key::ComputeEnvironment(n.clone())),
    );
    keys.extend(state.job_queues.keys().map(|n| Key::JobQueue(n.clone())));
    keys.extend(
        state
            .job_definitions
            .keys()
            .map(|(n, r)| Key::JobDefinition(n.clone(), *r)),
    );
    keys.extend(state.jobs.keys().map(|id| Key::Job(id.clone())));
    keys.extend(state.log_streams.keys().map(|n| Key::LogStream(n.clone())));
    keys.extend(
        state
            .scheduling_policies
            .keys()
            .map(|n| Key::SchedulingPolicy(n.clone())),
    );
    keys.extend(state.share_usage.keys().map(|n| Key::ShareUsage(n.clone())));
    keys.extend(state.agents.keys().map(|id| Key::Agent(id.clone())));
    keys.extend(state.schedules.keys().map(|n| Key::Schedule(n.clone())));
    keys.sort();
    keys
}

impl SimStore {
    /// Writes what `changes` names, as found in `state`. Refuses log events that would leave a
    /// gap or a repeat in a stream's sequence (the real table's primary key would refuse a
    /// repeat; a gap would lose a line).
    pub fn commit(&mut self, state: &State, changes: &Changes) -> Result<(), String> {
        let keys: BTreeSet<&Key> = changes.dirty.iter().collect();
        for key in keys {
            let (k, body) = row(state, key);
            match body {
                Some(body) => {
                    self.entities.insert(k, body);
                }
                None => {
                    self.entities.remove(&k);
                }
            }
        }
        for e in &changes.log_events {
            let stored = self.log_events.entry(e.stream_number).or_insert(0);
            if e.seq != *stored {
                return Err(format!(
                    "log event for stream #{} has seq {} but the stream holds {} events",
                    e.stream_number, e.seq, stored
                ));
            }
            *stored += 1;
        }
        Ok(())
    }

    /// Reads the whole state back, as barge-store's `load` does.
    pub fn load(&self, identity: Identity) -> Result<State, String> {
        let mut state = State::new(identity);
        for ((kind, key), body) in &self.entities {
            stored::put_entity(&mut state, kind, body)
                .map_err(|e| format!("stored {kind} {key} cannot be read: {e}"))?;
        }
        state.rebuild_indexes();
        Ok(state)
    }

    /// Where the store and `state` disagree: an entity stored differently or not at all, a row
    /// for an entity the state no longer has, or a log stream whose stored events do not match
    /// its sequence. None when the store is an exact image of the state.
    pub fn mismatch(&self, state: &State) -> Option<String> {
        let keys = all_keys(state);
        for key in &keys {
            let (k, body) = row(state, key);
            match (self.entities.get(&k), body) {
                (None, _) => return Some(format!("{key:?} is in the state but not stored")),
                (Some(stored), Some(body)) if *stored != body => {
                    return Some(format!(
                        "{key:?} is stored as {} but the state has {}",
                        String::from_utf8_lossy(stored),
                        String::from_utf8_lossy(&body)
                    ))
                }
                _ => {}
            }
        }
        if self.entities.len() != keys.len() {
            let wanted: BTreeSet<(&'static str, String)> =
                keys.iter().map(|k| row(state, k).0).collect();
            if let Some(extra) = self.entities.keys().find(|k| !wanted.contains(*k)) {
                return Some(format!(
                    "{} {} is stored but the state no longer has it",
                    extra.0, extra.1
                ));
            }
        }
        for stream in state.log_streams.values() {
            let stored = self.log_events.get(&stream.number).copied().unwrap_or(0);
            if stored != stream.next_event_seq {
                return Some(format!(
                    "log stream {} (#{}) has next_event_seq {} but {} events are stored",
                    stream.name, stream.number, stream.next_event_seq, stored
                ));
            }
        }
        None
    }

    /// A short, stable digest of everything stored, to show two runs of a seed agree.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a: deterministic across runs, unlike std's RandomState hashers.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for ((kind, key), body) in &self.entities {
            eat(kind.as_bytes());
            eat(key.as_bytes());
            eat(body);
        }
        for (stream, count) in &self.log_events {
            eat(&stream.to_le_bytes());
            eat(&count.to_le_bytes());
        }
        h
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}
