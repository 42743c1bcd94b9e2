//! What is committed comes back after reopening, and log queries page correctly.

use std::sync::Arc;

use barge_core::command::{Changes, Key, NewLogEvent};
use barge_core::model::*;
use barge_core::State;
use barge_store::{Direction, Store};
use serde_json::Map;

fn ce(name: &str) -> ComputeEnvironment {
    ComputeEnvironment {
        name: name.into(),
        uuid: "u".into(),
        kind: ComputeEnvironmentType::Unmanaged,
        state: ResourceState::Enabled,
        compute_resources: None,
        unmanaged_vcpus: Some(4),
        service_role: None,
        update_policy: None,
        tags: Tags::from([("team".to_string(), "a".to_string())]),
        other: Map::new(),
    }
}

#[test]
fn committed_entities_and_events_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(store.is_new());
    let mut state = State::new(Default::default());
    state
        .compute_environments
        .insert("a".into(), Arc::new(ce("a")));
    state
        .compute_environments
        .insert("b".into(), Arc::new(ce("b")));
    state.log_streams.insert(
        "s".into(),
        Arc::new(LogStream {
            name: "s".into(),
            number: 7,
            created_at: 1,
            first_event_at: Some(10),
            last_event_at: Some(14),
            last_ingestion_at: Some(15),
            next_event_seq: 5,
            stored_bytes: 5,
        }),
    );
    let mut changes = Changes::default();
    changes.dirty.push(Key::ComputeEnvironment("a".into()));
    changes.dirty.push(Key::ComputeEnvironment("b".into()));
    changes.dirty.push(Key::LogStream("s".into()));
    changes.log_events = (0..5)
        .map(|i| NewLogEvent {
            stream_number: 7,
            seq: i,
            timestamp_ms: 10 + i as i64,
            ingestion_ms: 15,
            message: format!("line {i}"),
        })
        .collect();
    store.commit(&state, &changes).unwrap();

    // Deleting one: absent from the state when committed means deleted.
    state.compute_environments.remove("b");
    let mut changes = Changes::default();
    changes.dirty.push(Key::ComputeEnvironment("b".into()));
    store.commit(&state, &changes).unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert!(!store.is_new());
    let loaded = store.load(Default::default()).unwrap();
    assert_eq!(loaded.compute_environments.len(), 1);
    assert_eq!(*loaded.compute_environments["a"], ce("a"));
    assert_eq!(loaded.next_log_stream_number, 8);

    let reader = store.reader().unwrap();
    let fwd = reader
        .stream_events(7, 2, Direction::Forward, None, None, 2)
        .unwrap();
    assert_eq!(fwd.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    let back = reader
        .stream_events(7, u64::MAX, Direction::Backward, None, None, 2)
        .unwrap();
    assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 3]);
    let windowed = reader
        .stream_events(7, 0, Direction::Forward, Some(11), Some(13), 10)
        .unwrap();
    assert_eq!(
        windowed
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec!["line 1", "line 2"]
    );
    let (events, last, exhausted) = reader
        .filter_events(&[7], None, None, None, 10, 1000, &|m| {
            m.ends_with('3') || m.ends_with('4')
        })
        .unwrap();
    assert_eq!(events.len(), 2);
    assert!(exhausted);
    assert_eq!(last, Some((14, 7, 4)));
    let (events, _, _) = reader
        .filter_events(&[7], Some((12, 7, 2)), None, None, 10, 1000, &|_| true)
        .unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn scheduling_policies_and_share_usage_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut state = State::new(Default::default());
    let policy = SchedulingPolicy {
        name: "p".into(),
        fairshare_policy: Some(FairsharePolicy {
            share_decay_seconds: Some(3600),
            compute_reservation: None,
            share_distribution: vec![ShareWeight {
                share_identifier: "team*".into(),
                weight_factor_e4: Some(1_234),
            }],
        }),
        tags: Tags::from([("k".to_string(), "v".to_string())]),
    };
    let usage = barge_core::fairshare::ShareUsage {
        queue: "q".into(),
        as_of_ms: 1_700_000_000_123,
        usage_mvcpu_ms: [("team1".to_string(), 987_654_321_987)].into(),
    };
    state
        .scheduling_policies
        .insert("p".into(), Arc::new(policy.clone()));
    state
        .share_usage
        .insert("q".into(), Arc::new(usage.clone()));
    let mut changes = Changes::default();
    changes.dirty.push(Key::SchedulingPolicy("p".into()));
    changes.dirty.push(Key::ShareUsage("q".into()));
    store.commit(&state, &changes).unwrap();
    drop(store);
    let loaded = Store::open(dir.path())
        .unwrap()
        .load(Default::default())
        .unwrap();
    assert_eq!(*loaded.scheduling_policies["p"], policy);
    assert_eq!(*loaded.share_usage["q"], usage);
}
