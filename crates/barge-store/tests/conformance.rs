//! One conformance suite for both store backends. Each check is written once as a function of
//! a `TestDb` (a fresh, empty database it can open stores on) and instantiated for SQLite and
//! for PostgreSQL by `suite!` at the bottom; the lease checks that only mean something with
//! several servers run on PostgreSQL alone.
//!
//! The PostgreSQL half needs a server: `BARGE_TEST_DATABASE_URL` names a database whose role
//! may create databases (scripts/test.sh starts a throwaway cluster and sets it). Each test
//! creates a database of its own and drops it afterwards, so the tests run in parallel. Without
//! the variable those tests fail, saying how to run them: a suite that silently skipped its
//! PostgreSQL half would prove nothing about it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use barge_core::agent::{AgentInstruction, AgentReport, LogLine};
use barge_core::command::{NewLogEvent, SubmitJob};
use barge_core::model::*;
use barge_core::{apply, scheduler, Changes, Command, Effect, Key, Reply, State};
use barge_store::{
    Direction, EventPage, LeaderInfo, Store, StoreError, StoredEvent, LEASE_TTL_MS_MAX,
};
use serde_json::Map;

// ---- test databases -----------------------------------------------------------------------

/// A fresh database for one test, on one backend.
trait TestDb {
    /// Opens a store on it (each call is a separate store, as a separate server would be).
    fn open(&self) -> Result<Store, StoreError>;
    /// Marks the database as written by a schema `version`, behind the store's back.
    fn set_schema_version(&self, version: i64);
}

struct SqliteDb {
    dir: tempfile::TempDir,
}

impl SqliteDb {
    fn new() -> SqliteDb {
        SqliteDb {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl TestDb for SqliteDb {
    fn open(&self) -> Result<Store, StoreError> {
        Store::open(self.dir.path())
    }
    fn set_schema_version(&self, version: i64) {
        let conn = rusqlite::Connection::open(self.dir.path().join("barge.db")).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }
}

const DATABASE_URL_VAR: &str = "BARGE_TEST_DATABASE_URL";

struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    /// Creates the database `barge_t_<pid>_<test>` (dropped when this is dropped).
    fn new(test: &str) -> PgDb {
        let admin_url = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{DATABASE_URL_VAR} is not set, so the PostgreSQL half of the store's \
                 conformance suite cannot run. Run scripts/test.sh (it starts a throwaway \
                 PostgreSQL and sets the variable), or start one yourself: \
                 eval \"$(scripts/test-postgres.sh start)\"; cargo test --release -p barge-store; \
                 scripts/test-postgres.sh stop \"$BARGE_PG_DIR\""
            )
        });
        let mut name = format!("barge_t_{}_{test}", std::process::id());
        name.truncate(63); // PostgreSQL's identifier length
        let mut admin = admin_client(&admin_url);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the test database {name} (does the role have CREATEDB?): {e:?}"
                )
            });
        let url = with_dbname(&admin_url, &name);
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

fn admin_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR}={url}: {e:?}"))
}

/// The same connection URL naming another database.
fn with_dbname(url: &str, db: &str) -> String {
    if !url.contains("://") {
        // libpq's key=value form: a later key wins.
        return format!("{url} dbname={db}");
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").unwrap() + 3;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let result =
            postgres::Client::connect(&self.admin_url, postgres::NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
            });
        if let Err(e) = result {
            eprintln!("could not drop test database {}: {e:?}", self.name);
        }
    }
}

impl TestDb for PgDb {
    fn open(&self) -> Result<Store, StoreError> {
        Store::open_postgres(&self.url)
    }
    fn set_schema_version(&self, version: i64) {
        let mut c = admin_client(&self.url);
        c.execute("UPDATE schema_version SET version = $1", &[&version])
            .unwrap();
    }
}

// ---- a world built by the real core ---------------------------------------------------------

/// Applies commands as the writer does (each command's changes committed in one batch) and
/// keeps the state the store should now hold.
struct Driver {
    state: State,
    now: i64,
    attempt_ids: u64,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            state: State::new(Default::default()),
            now: 1_700_000_000_000,
            attempt_ids: 0,
        }
    }

    /// Applies `command` and commits its changes; returns the reply and the changes.
    fn run(&mut self, store: &mut Store, command: Command) -> (Reply, Changes) {
        self.now += 1_000;
        let mut changes = Changes::default();
        let what = command.name();
        let reply = apply(&mut self.state, command, self.now, &mut changes)
            .unwrap_or_else(|e| panic!("{what} should succeed: {e:?}"));
        store.commit(&self.state, &changes).expect("commit");
        (reply, changes)
    }

    /// Scheduling passes until one places nothing; returns the launches (job id, attempt id).
    fn schedule(&mut self, store: &mut Store) -> Vec<(String, String)> {
        let mut launches = Vec::new();
        loop {
            let now = self.now;
            let ids = &mut self.attempt_ids;
            let plan = scheduler::plan(&self.state, &mut || {
                *ids += 1;
                format!("att-{ids}-{now}")
            });
            if plan.is_empty() {
                return launches;
            }
            let (_, changes) = self.run(store, Command::SchedulerPass(plan));
            let before = launches.len();
            launches.extend(changes.effects.into_iter().filter_map(|e| match e {
                Effect::Agent {
                    instruction: AgentInstruction::Launch(spec),
                    ..
                } => Some((spec.job_id, spec.attempt_id)),
                _ => None,
            }));
            if launches.len() == before && changes.dirty.is_empty() {
                return launches;
            }
        }
    }

    fn report(&mut self, store: &mut Store, report: AgentReport) {
        let (reply, _) = self.run(
            store,
            Command::AgentReports {
                agent_id: "agent-1".into(),
                reports: vec![report],
            },
        );
        assert_eq!(reply, Reply::Reports { refused: 0 });
    }
}

fn managed_ce(name: &str) -> ComputeEnvironment {
    ComputeEnvironment {
        name: name.into(),
        uuid: format!("uuid-{name}"),
        kind: ComputeEnvironmentType::Managed,
        state: ResourceState::Enabled,
        compute_resources: Some(ComputeResources {
            kind: Some("EC2".into()),
            max_vcpus: Some(64),
            ..Default::default()
        }),
        unmanaged_vcpus: None,
        service_role: None,
        update_policy: None,
        tags: Tags::from([("team".to_string(), "ünïcødé".to_string())]),
        other: Map::new(),
    }
}

fn queue(name: &str, policy_arn: Option<String>) -> JobQueue {
    JobQueue {
        name: name.into(),
        state: ResourceState::Enabled,
        priority: 10,
        compute_environment_order: vec![ComputeEnvironmentOrder {
            order: 1,
            compute_environment: "ce".into(),
        }],
        scheduling_policy_arn: policy_arn,
        job_state_time_limit_actions: Vec::new(),
        tags: Tags::new(),
        other: Map::new(),
    }
}

fn definition(name: &str) -> JobDefinition {
    JobDefinition {
        name: name.into(),
        revision: 0,
        status: DefinitionStatus::Active,
        kind: "container".into(),
        parameters: BTreeMap::from([("word".into(), "hi\0there".into())]),
        scheduling_priority: None,
        container_properties: Some(ContainerProperties {
            image: Some("busybox".into()),
            command: Some(vec!["echo".into(), "Ref::word".into()]),
            resource_requirements: Some(vec![
                ResourceRequirement {
                    kind: "VCPU".into(),
                    value: "1".into(),
                },
                ResourceRequirement {
                    kind: "MEMORY".into(),
                    value: "128".into(),
                },
            ]),
            ..Default::default()
        }),
        node_properties: None,
        retry_strategy: Some(RetryStrategy {
            attempts: Some(2),
            evaluate_on_exit: None,
        }),
        timeout: None,
        propagate_tags: None,
        platform_capabilities: None,
        tags: Tags::new(),
        other: Map::new(),
    }
}

fn submit(id: &str, queue: &str) -> SubmitJob {
    SubmitJob {
        job_id: id.into(),
        name: format!("name-{id}"),
        queue: queue.into(),
        definition: "def".into(),
        ..Default::default()
    }
}

/// Builds, through the core and commit by commit, a world holding every kind the store
/// knows: an agent, a scheduling policy, a compute environment, a FIFO and a fair-share queue,
/// two revisions of a definition (one deregistered), plain, dependent and array jobs (with
/// born children), a finished job with a log stream and its events, and fair-share usage.
fn build_world(store: &mut Store) -> Driver {
    let mut d = Driver::new();
    d.run(
        store,
        Command::RegisterAgent {
            id: "agent-1".into(),
            vcpus_milli: 8_000,
            memory_mib: 8_192,
            scope: AgentScope::AllManaged,
            private_ipv4: Some("10.0.0.5".into()),
            gpus: 0,
            runner: None,
            running: Vec::new(),
        },
    );
    d.run(
        store,
        Command::CreateSchedulingPolicy(SchedulingPolicy {
            name: "fair".into(),
            fairshare_policy: Some(FairsharePolicy {
                share_decay_seconds: Some(3_600),
                compute_reservation: None,
                share_distribution: vec![ShareWeight {
                    share_identifier: "blue".into(),
                    weight_factor_e4: Some(5_000),
                }],
            }),
            tags: Tags::from([("k".to_string(), "v".to_string())]),
        }),
    );
    d.run(store, Command::CreateComputeEnvironment(managed_ce("ce")));
    d.run(store, Command::CreateJobQueue(queue("q", None)));
    let policy_arn = d.state.identity.scheduling_policy_arn("fair");
    d.run(
        store,
        Command::CreateJobQueue(queue("fq", Some(policy_arn))),
    );
    d.run(store, Command::RegisterJobDefinition(definition("def")));
    d.run(store, Command::RegisterJobDefinition(definition("def")));
    d.run(
        store,
        Command::DeregisterJobDefinition {
            reference: "def:1".into(),
        },
    );
    d.run(store, Command::SubmitJob(Box::new(submit("plain", "q"))));
    let mut dependent = submit("dependent", "q");
    dependent.depends_on = vec![JobDependency {
        job_id: Some("plain".into()),
        kind: None,
    }];
    d.run(store, Command::SubmitJob(Box::new(dependent)));
    let mut array = submit("array", "q");
    array.array_size = Some(3);
    d.run(store, Command::SubmitJob(Box::new(array)));
    let mut shared = submit("shared", "fq");
    shared.share_identifier = Some("blue".into());
    d.run(store, Command::SubmitJob(Box::new(shared)));

    let launches = d.schedule(store);
    let attempt_of = |job: &str| {
        launches
            .iter()
            .find(|(j, _)| j == job)
            .unwrap_or_else(|| panic!("{job} should have been placed: {launches:?}"))
            .1
            .clone()
    };
    for job in ["plain", "shared"] {
        let attempt_id = attempt_of(job);
        let at = d.now;
        d.report(
            store,
            AgentReport::Running {
                job_id: job.into(),
                attempt_id: attempt_id.clone(),
                at_ms: at,
            },
        );
        d.report(
            store,
            AgentReport::Logs {
                job_id: job.into(),
                attempt_id: attempt_id.clone(),
                lines: vec![
                    LogLine {
                        timestamp_ms: at + 1,
                        message: format!("hello from {job}"),
                    },
                    LogLine {
                        timestamp_ms: at + 2,
                        message: "tab\there, nul\0there, ünïcødé".into(),
                    },
                ],
            },
        );
        d.report(
            store,
            AgentReport::Exited {
                job_id: job.into(),
                attempt_id,
                at_ms: at + 500,
                exit_code: Some(0),
                reason: None,
            },
        );
    }
    d
}

/// Asserts that `loaded` holds exactly the entities of `expected`, kind by kind.
fn assert_same_entities(loaded: &State, expected: &State) {
    assert_eq!(loaded.compute_environments, expected.compute_environments);
    assert_eq!(loaded.job_queues, expected.job_queues);
    assert_eq!(loaded.job_definitions, expected.job_definitions);
    assert_eq!(loaded.jobs, expected.jobs);
    assert_eq!(loaded.log_streams, expected.log_streams);
    assert_eq!(loaded.scheduling_policies, expected.scheduling_policies);
    assert_eq!(loaded.share_usage, expected.share_usage);
    assert_eq!(loaded.agents, expected.agents);
    assert_eq!(loaded.next_job_seq, expected.next_job_seq);
    assert_eq!(
        loaded.next_log_stream_number,
        expected.next_log_stream_number
    );
}

/// A message filter, as the API's filterPattern becomes.
type Keep = dyn Fn(&str) -> bool;

// ---- checks for both backends ---------------------------------------------------------------

fn every_kind_reads_back_exactly(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    let d = build_world(&mut store);
    let s = &d.state;
    // The world really holds every kind, including born array children and share usage.
    assert!(!s.compute_environments.is_empty() && !s.job_queues.is_empty());
    assert_eq!(s.job_definitions.len(), 2);
    assert!(s.jobs.values().any(|j| j.array.is_some()));
    assert!(s.jobs.values().any(|j| j.array_child.is_some()));
    assert!(s.jobs.values().any(|j| j.status == JobStatus::Succeeded));
    assert_eq!(s.log_streams.len(), 2);
    assert_eq!(s.scheduling_policies.len(), 1);
    assert_eq!(s.share_usage.len(), 1);
    assert_eq!(s.agents.len(), 1);

    // The same store loads it again, and so does a fresh one (a restart).
    assert_same_entities(&store.load(Default::default()).unwrap(), s);
    drop(store);
    let store = db.open().unwrap();
    let loaded = store.load(Default::default()).unwrap();
    assert_same_entities(&loaded, s);
    // The derived indexes are rebuilt: the agent's capacity in use matches the live state's.
    assert_eq!(
        loaded.agents["agent-1"].used_vcpus_milli,
        s.agents["agent-1"].used_vcpus_milli
    );
    // And the events the agent sent are there, NUL and all.
    let reader = store.reader().unwrap();
    for stream in s.log_streams.values() {
        let events = reader
            .stream_events(stream.number, 0, Direction::Forward, None, None, 100)
            .unwrap();
        assert_eq!(events.len() as u64, stream.next_event_seq);
        assert_eq!(events[1].message, "tab\there, nul\0there, ünïcødé");
    }
}

fn updates_and_deletes_are_stored(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    let mut d = build_world(&mut store);
    d.run(
        &mut store,
        Command::UpdateComputeEnvironment(barge_core::command::ComputeEnvironmentUpdate {
            reference: "ce".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        }),
    );
    d.run(
        &mut store,
        Command::TagResource {
            arn: d.state.identity.job_queue_arn("q"),
            tags: Tags::from([("added".to_string(), "later".to_string())]),
        },
    );
    d.run(
        &mut store,
        Command::UpdateJobQueue(barge_core::command::JobQueueUpdate {
            reference: "fq".into(),
            state: Some(ResourceState::Disabled),
            ..Default::default()
        }),
    );
    d.run(
        &mut store,
        Command::DeleteJobQueue {
            reference: "fq".into(),
        },
    );
    d.run(
        &mut store,
        Command::DeleteSchedulingPolicy {
            reference: "fair".into(),
        },
    );
    assert!(!d.state.job_queues.contains_key("fq"));
    assert!(!d.state.scheduling_policies.contains_key("fair"));
    drop(store);
    let loaded = db.open().unwrap().load(Default::default()).unwrap();
    assert_same_entities(&loaded, &d.state);
    assert_eq!(
        loaded.compute_environments["ce"].state,
        ResourceState::Disabled
    );
    assert_eq!(loaded.job_queues["q"].tags["added"], "later");

    // A key committed while absent from the state is deleted, whatever its kind.
    let mut store = db.open().unwrap();
    let mut state = loaded.clone();
    let mut changes = Changes::default();
    let job_ids: Vec<String> = state.jobs.keys().cloned().collect();
    for id in &job_ids {
        state.jobs.remove(id);
        changes.dirty.push(Key::Job(id.clone()));
    }
    state.agents.remove("agent-1");
    changes.dirty.push(Key::Agent("agent-1".into()));
    let streams: Vec<String> = state.log_streams.keys().cloned().collect();
    for name in &streams {
        state.log_streams.remove(name);
        changes.dirty.push(Key::LogStream(name.clone()));
    }
    state.share_usage.clear();
    changes.dirty.push(Key::ShareUsage("fq".into()));
    // Deleting what was never stored is not an error.
    changes.dirty.push(Key::JobDefinition("never".into(), 9));
    store.commit(&state, &changes).unwrap();
    let reloaded = store.load(Default::default()).unwrap();
    assert!(reloaded.jobs.is_empty());
    assert!(reloaded.agents.is_empty());
    assert!(reloaded.log_streams.is_empty());
    assert!(reloaded.share_usage.is_empty());
    assert_eq!(reloaded.job_definitions.len(), 2);
    assert_eq!(reloaded.compute_environments.len(), 1);
}

fn log_stream(name: &str, number: u64, events: u64) -> LogStream {
    LogStream {
        name: name.into(),
        number,
        created_at: 1,
        first_event_at: Some(10),
        last_event_at: Some(14),
        last_ingestion_at: Some(15),
        next_event_seq: events,
        stored_bytes: 5,
    }
}

/// Commits streams 7 and 9 with events whose timestamps tie across streams; returns them.
fn commit_log_events(store: &mut Store) -> Vec<StoredEvent> {
    let mut state = State::new(Default::default());
    let mut changes = Changes::default();
    // (stream, timestamps by seq)
    let layout: [(u64, &[i64]); 2] = [(7, &[10, 10, 11, 12, 14]), (9, &[10, 11, 11, 13])];
    let mut all = Vec::new();
    for (number, times) in layout {
        let name = format!("stream-{number}");
        state.log_streams.insert(
            name.clone(),
            Arc::new(log_stream(&name, number, times.len() as u64)),
        );
        changes.dirty.push(Key::LogStream(name));
        for (seq, ts) in times.iter().enumerate() {
            let e = StoredEvent {
                stream: number,
                seq: seq as u64,
                timestamp_ms: *ts,
                ingestion_ms: 15,
                message: format!("s{number} line {seq}"),
            };
            changes.log_events.push(NewLogEvent {
                stream_number: e.stream,
                seq: e.seq,
                timestamp_ms: e.timestamp_ms,
                ingestion_ms: e.ingestion_ms,
                message: e.message.clone(),
            });
            all.push(e);
        }
    }
    store.commit(&state, &changes).unwrap();
    all
}

/// What `stream_events` must answer, computed from the events themselves.
fn expected_stream(
    all: &[StoredEvent],
    stream: u64,
    cursor: u64,
    direction: Direction,
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
) -> Vec<StoredEvent> {
    let mut v: Vec<StoredEvent> = all
        .iter()
        .filter(|e| e.stream == stream)
        .filter(|e| match direction {
            Direction::Forward => e.seq >= cursor,
            Direction::Backward => e.seq < cursor,
        })
        .filter(|e| start.is_none_or(|s| e.timestamp_ms >= s))
        .filter(|e| end.is_none_or(|t| e.timestamp_ms < t))
        .cloned()
        .collect();
    v.sort_by_key(|e| e.seq);
    if direction == Direction::Backward {
        v.reverse();
    }
    v.truncate(limit);
    v
}

/// What `filter_events` must answer, computed from the events themselves.
#[allow(clippy::too_many_arguments)]
fn expected_filter(
    all: &[StoredEvent],
    streams: &[u64],
    after: Option<(i64, u64, u64)>,
    start: Option<i64>,
    end: Option<i64>,
    limit: usize,
    scan_max: usize,
    keep: &dyn Fn(&str) -> bool,
) -> EventPage {
    let mut rows: Vec<&StoredEvent> = all
        .iter()
        .filter(|e| streams.contains(&e.stream))
        .filter(|e| start.is_none_or(|s| e.timestamp_ms >= s))
        .filter(|e| end.is_none_or(|t| e.timestamp_ms < t))
        .filter(|e| after.is_none_or(|a| (e.timestamp_ms, e.stream, e.seq) > a))
        .collect();
    rows.sort_by_key(|e| (e.timestamp_ms, e.stream, e.seq));
    rows.truncate(scan_max);
    let (mut out, mut last, mut scanned) = (Vec::new(), None, 0);
    for e in rows {
        scanned += 1;
        last = Some((e.timestamp_ms, e.stream, e.seq));
        if keep(&e.message) {
            out.push(e.clone());
            if out.len() >= limit {
                break;
            }
        }
    }
    (out.clone(), last, out.len() < limit && scanned < scan_max)
}

fn log_queries_page_and_filter(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    let all = commit_log_events(&mut store);
    let reader = store.reader().unwrap();

    // The cases the API relies on, spelled out.
    let seqs = |v: Vec<StoredEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let fwd = reader
        .stream_events(7, 2, Direction::Forward, None, None, 2)
        .unwrap();
    assert_eq!(seqs(fwd), vec![2, 3]);
    let back = reader
        .stream_events(7, u64::MAX, Direction::Backward, None, None, 2)
        .unwrap();
    assert_eq!(seqs(back), vec![4, 3]);
    let windowed = reader
        .stream_events(7, 0, Direction::Forward, Some(11), Some(14), 10)
        .unwrap();
    assert_eq!(
        windowed
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec!["s7 line 2", "s7 line 3"]
    );
    assert!(reader
        .stream_events(7, 5, Direction::Forward, None, None, 10)
        .unwrap()
        .is_empty());
    assert!(reader
        .stream_events(8, 0, Direction::Forward, None, None, 10)
        .unwrap()
        .is_empty());
    let (events, last, exhausted) = reader
        .filter_events(&[7, 9], None, None, None, 100, 1000, &|_| true)
        .unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.timestamp_ms, e.stream, e.seq))
            .collect::<Vec<_>>(),
        vec![
            (10, 7, 0),
            (10, 7, 1),
            (10, 9, 0),
            (11, 7, 2),
            (11, 9, 1),
            (11, 9, 2),
            (12, 7, 3),
            (13, 9, 3),
            (14, 7, 4)
        ]
    );
    assert_eq!(last, Some((14, 7, 4)));
    assert!(exhausted);
    assert_eq!(
        reader
            .filter_events(&[], None, None, None, 10, 10, &|_| true)
            .unwrap(),
        (Vec::new(), None, true)
    );
    assert!(reader.has_events(7).unwrap());
    assert!(!reader.has_events(8).unwrap());

    // Every combination, against the model.
    let directions = [Direction::Forward, Direction::Backward];
    let windows = [
        (None, None),
        (Some(11), None),
        (None, Some(12)),
        (Some(10), Some(11)),
        (Some(20), None),
    ];
    for stream in [7, 9] {
        for cursor in [0, 1, 3, 5, u64::MAX] {
            for direction in directions {
                for (start, end) in windows {
                    for limit in [1, 2, 100] {
                        assert_eq!(
                            reader
                                .stream_events(stream, cursor, direction, start, end, limit)
                                .unwrap(),
                            expected_stream(&all, stream, cursor, direction, start, end, limit),
                            "stream_events({stream}, {cursor}, {direction:?}, {start:?}, {end:?}, {limit})"
                        );
                    }
                }
            }
        }
    }
    let keeps: [(&str, &Keep); 3] = [
        ("all", &|_| true),
        ("line 2 or 3", &|m| m.ends_with('2') || m.ends_with('3')),
        ("none", &|_| false),
    ];
    let afters = [None, Some((10, 7, 1)), Some((11, 9, 1)), Some((14, 7, 4))];
    for streams in [&[7u64][..], &[9], &[7, 9], &[9, 7, 8]] {
        for after in afters {
            for (start, end) in windows {
                for (limit, scan_max) in [(1, 100), (2, 3), (100, 4), (100, 100)] {
                    for (what, keep) in keeps {
                        assert_eq!(
                            reader
                                .filter_events(streams, after, start, end, limit, scan_max, keep)
                                .unwrap(),
                            expected_filter(&all, streams, after, start, end, limit, scan_max, keep),
                            "filter_events({streams:?}, {after:?}, {start:?}, {end:?}, {limit}, {scan_max}, {what})"
                        );
                    }
                }
            }
        }
    }

    // Paging with the position each page returns visits every event exactly once.
    let keep_even: &dyn Fn(&str) -> bool = &|m| m.ends_with(['0', '2', '4']);
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let (events, last, exhausted) = reader
            .filter_events(&[7, 9], after, None, None, 2, 3, keep_even)
            .unwrap();
        seen.extend(events.into_iter().map(|e| (e.stream, e.seq)));
        if exhausted {
            break;
        }
        after = last;
    }
    let expected: Vec<(u64, u64)> =
        expected_filter(&all, &[7, 9], None, None, None, 100, 100, keep_even)
            .0
            .into_iter()
            .map(|e| (e.stream, e.seq))
            .collect();
    assert_eq!(seen, expected);
}

fn a_newer_schema_is_refused(db: &dyn TestDb) {
    drop(db.open().unwrap());
    db.set_schema_version(999);
    match db.open() {
        Err(StoreError::NewerSchema { found, known }) => {
            assert_eq!(found, 999);
            assert!(known < 999);
        }
        Err(e) => panic!("expected NewerSchema, got {e}"),
        Ok(_) => panic!("a database of a newer schema was opened"),
    }
    let message = db.open().err().unwrap().to_string();
    assert!(message.contains("upgrade Barge"), "{message}");
}

fn is_new_only_on_the_first_open(db: &dyn TestDb) {
    let store = db.open().unwrap();
    assert!(store.is_new());
    drop(store);
    assert!(!db.open().unwrap().is_new());
    // Even an empty store is not new once its schema exists (a second server starting).
    assert!(!db.open().unwrap().is_new());
}

fn large_batches_commit_whole(db: &dyn TestDb) {
    const JOBS: usize = 12_000;
    const EVENTS: u64 = 25_000;
    let mut store = db.open().unwrap();
    let mut d = Driver::new();
    d.run(
        &mut store,
        Command::CreateComputeEnvironment(managed_ce("ce")),
    );
    d.run(&mut store, Command::CreateJobQueue(queue("q", None)));
    d.run(
        &mut store,
        Command::RegisterJobDefinition(definition("def")),
    );
    // One batch, as the writer's group commit makes it: thousands of submissions and a log
    // stream's worth of events.
    let mut changes = Changes::default();
    for i in 0..JOBS {
        apply(
            &mut d.state,
            Command::SubmitJob(Box::new(submit(&format!("job-{i:05}"), "q"))),
            d.now,
            &mut changes,
        )
        .unwrap();
    }
    d.state
        .log_streams
        .insert("big".into(), Arc::new(log_stream("big", 1, EVENTS)));
    d.state.next_log_stream_number = 2;
    changes.dirty.push(Key::LogStream("big".into()));
    changes.log_events = (0..EVENTS)
        .map(|seq| NewLogEvent {
            stream_number: 1,
            seq,
            timestamp_ms: 1_000 + seq as i64,
            ingestion_ms: 2_000,
            message: format!("line {seq}"),
        })
        .collect();
    store.commit(&d.state, &changes).unwrap();
    drop(store);

    let mut store = db.open().unwrap();
    let loaded = store.load(Default::default()).unwrap();
    assert_eq!(loaded.jobs.len(), JOBS);
    assert_same_entities(&loaded, &d.state);
    let reader = store.reader().unwrap();
    let events = reader
        .stream_events(1, 0, Direction::Forward, None, None, 100_000)
        .unwrap();
    assert_eq!(events.len() as u64, EVENTS);
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    assert_eq!(events[24_999].message, "line 24999");

    // And one batch deleting them all.
    let mut state = loaded;
    let mut changes = Changes::default();
    for i in 0..JOBS {
        let id = format!("job-{i:05}");
        state.jobs.remove(&id);
        changes.dirty.push(Key::Job(id));
    }
    store.commit(&state, &changes).unwrap();
    assert!(store.load(Default::default()).unwrap().jobs.is_empty());
}

fn a_failed_commit_writes_nothing(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    commit_log_events(&mut store);
    // A batch with a new entity and an event that repeats a stored (stream, seq): the
    // repeat is refused, and with it the whole batch.
    let mut state = State::new(Default::default());
    state
        .compute_environments
        .insert("new".into(), Arc::new(managed_ce("new")));
    let mut changes = Changes::default();
    changes.dirty.push(Key::ComputeEnvironment("new".into()));
    changes.log_events.push(NewLogEvent {
        stream_number: 9,
        seq: 4,
        timestamp_ms: 20,
        ingestion_ms: 20,
        message: "new".into(),
    });
    changes.log_events.push(NewLogEvent {
        stream_number: 7,
        seq: 0,
        timestamp_ms: 20,
        ingestion_ms: 20,
        message: "repeat".into(),
    });
    assert!(store.commit(&state, &changes).is_err());
    let loaded = store.load(Default::default()).unwrap();
    assert!(loaded.compute_environments.is_empty());
    let reader = store.reader().unwrap();
    let s9 = reader
        .stream_events(9, 0, Direction::Forward, None, None, 100)
        .unwrap();
    assert_eq!(s9.len(), 4);
    // The store is still usable afterwards.
    changes.log_events.pop();
    store.commit(&state, &changes).unwrap();
    assert_eq!(
        store
            .load(Default::default())
            .unwrap()
            .compute_environments
            .len(),
        1
    );
}

fn load_again_sees_another_stores_commits(db: &dyn TestDb) {
    // Opened first and loaded empty, like a follower waiting for the lease.
    let follower = db.open().unwrap();
    assert!(follower.load(Default::default()).unwrap().jobs.is_empty());
    let mut leader = db.open().unwrap();
    let d = build_world(&mut leader);
    assert_same_entities(&follower.load(Default::default()).unwrap(), &d.state);
}

fn lease_ttl_is_bounded(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    for ttl in [0, LEASE_TTL_MS_MAX + 1] {
        match store.try_acquire_lease("a", "http://a", ttl) {
            Err(StoreError::LeaseTtl { ttl_ms, max_ms }) => {
                assert_eq!((ttl_ms, max_ms), (ttl, LEASE_TTL_MS_MAX));
            }
            other => panic!("ttl {ttl}: expected LeaseTtl, got {other:?}"),
        }
    }
    assert!(store
        .try_acquire_lease("a", "http://a", LEASE_TTL_MS_MAX)
        .unwrap()
        .is_some());
}

// ---- SQLite only ------------------------------------------------------------------------------

/// One SQLite file serves one server, so its lease is always granted and never fences.
fn sqlite_lease_is_trivially_held(db: &dyn TestDb) {
    let mut store = db.open().unwrap();
    let a = store
        .try_acquire_lease("a", "http://a", 1)
        .unwrap()
        .unwrap();
    let b = store
        .try_acquire_lease("b", "http://b", 1)
        .unwrap()
        .unwrap();
    assert_eq!(a.epoch, b.epoch);
    sleep(Duration::from_millis(20));
    assert!(store.renew_lease(&a, 1).unwrap());
    assert_eq!(
        store.current_leader().unwrap().map(|l| (l.holder, l.url)),
        Some(("b".to_string(), "http://b".to_string()))
    );
    let mut keeper = store.lease_keeper().unwrap();
    assert_eq!(keeper.current_leader().unwrap().unwrap().holder, "b");
    assert!(keeper.release(&b).unwrap());
    assert_eq!(store.current_leader().unwrap(), None);
    // Long after the "TTL", commits still go through.
    build_world(&mut store);
}

// ---- PostgreSQL only: the lease between servers -----------------------------------------------

const LONG_TTL_MS: u64 = 60_000;
/// Short enough to wait out in a test; the waits below are several times longer, and expiry
/// is judged by the database's clock alone.
const SHORT_TTL_MS: u64 = 200;

fn wait_out(ttl_ms: u64) {
    sleep(Duration::from_millis(ttl_ms * 2 + 100));
}

/// A batch adding one compute environment and one log event to stream `stream`.
fn small_batch(name: &str, stream: u64) -> (State, Changes) {
    let mut state = State::new(Default::default());
    state
        .compute_environments
        .insert(name.into(), Arc::new(managed_ce(name)));
    let mut changes = Changes::default();
    changes.dirty.push(Key::ComputeEnvironment(name.into()));
    changes.log_events.push(NewLogEvent {
        stream_number: stream,
        seq: 0,
        timestamp_ms: 1,
        ingestion_ms: 1,
        message: name.into(),
    });
    (state, changes)
}

fn assert_fenced(result: Result<(), StoreError>, holder: &str, epoch: i64) {
    match result {
        Err(StoreError::Fenced {
            holder: h,
            epoch: e,
            ..
        }) => assert_eq!((h.as_str(), e), (holder, epoch)),
        other => panic!("expected Fenced for {holder} at epoch {epoch}, got {other:?}"),
    }
}

fn lease_is_exclusive_while_held(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let mut b = db.open().unwrap();
    assert_eq!(a.current_leader().unwrap(), None);
    let lease = a
        .try_acquire_lease("a", "http://10.0.0.1:8080", LONG_TTL_MS)
        .unwrap()
        .expect("a free lease is granted");
    assert!(lease.epoch >= 1);
    assert_eq!(a.lease(), Some(&lease));
    assert_eq!(
        b.try_acquire_lease("b", "http://b", LONG_TTL_MS).unwrap(),
        None
    );
    assert_eq!(b.lease(), None);
    let leader: LeaderInfo = b.current_leader().unwrap().expect("a leader");
    assert_eq!(
        (leader.holder.as_str(), leader.url.as_str(), leader.epoch),
        ("a", "http://10.0.0.1:8080", lease.epoch)
    );
    assert!(leader.expires_in_ms > 0 && leader.expires_in_ms <= LONG_TTL_MS as i64);
    // Asking again while holding it keeps the tenure (and its epoch).
    assert_eq!(
        a.try_acquire_lease("a", "http://10.0.0.1:8080", LONG_TTL_MS)
            .unwrap(),
        Some(lease.clone())
    );
    // The holder writes; the refused server never took a lease, so nothing fences it here
    // (a server writes only once it leads).
    let (state, changes) = small_batch("by-a", 1);
    a.commit(&state, &changes).unwrap();
}

fn racing_servers_elect_exactly_one(db: &dyn TestDb) {
    let stores: Vec<Store> = (0..4).map(|_| db.open().unwrap()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(stores.len()));
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, mut store)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .try_acquire_lease(&format!("server-{i}"), "http://x", LONG_TTL_MS)
                    .unwrap()
            })
        })
        .collect();
    let won: Vec<_> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
}

fn takeover_after_expiry_bumps_the_epoch(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let mut b = db.open().unwrap();
    let first = a
        .try_acquire_lease("a", "http://a", SHORT_TTL_MS)
        .unwrap()
        .unwrap();
    wait_out(SHORT_TTL_MS);
    assert_eq!(
        a.current_leader().unwrap(),
        None,
        "an expired lease has no leader"
    );
    let second = b
        .try_acquire_lease("b", "http://b", LONG_TTL_MS)
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(a.current_leader().unwrap().unwrap().holder, "b");
    assert!(!a.renew_lease(&first, LONG_TTL_MS).unwrap());
    assert!(!a.release_lease(&first).unwrap());
    assert_eq!(
        a.try_acquire_lease("a", "http://a", LONG_TTL_MS).unwrap(),
        None
    );
}

fn a_deposed_leader_is_fenced_and_writes_nothing(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let mut b = db.open().unwrap();
    let old = a
        .try_acquire_lease("a", "http://a", SHORT_TTL_MS)
        .unwrap()
        .unwrap();
    let (state, changes) = small_batch("before", 1);
    a.commit(&state, &changes).unwrap();
    wait_out(SHORT_TTL_MS);
    let new = b
        .try_acquire_lease("b", "http://b", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    // The new leader loads what the old one committed.
    let loaded = b.load(Default::default()).unwrap();
    assert!(loaded.compute_environments.contains_key("before"));

    // The old leader, unaware, commits: refused, nothing written, however often it tries.
    let (state, changes) = small_batch("after", 2);
    assert_fenced(a.commit(&state, &changes), "a", old.epoch);
    assert_fenced(a.commit(&state, &changes), "a", old.epoch);
    let message = a.commit(&state, &changes).unwrap_err().to_string();
    assert!(message.contains("no longer the leader"), "{message}");
    let loaded = b.load(Default::default()).unwrap();
    assert!(!loaded.compute_environments.contains_key("after"));
    assert!(!b.reader().unwrap().has_events(2).unwrap());

    // The new leader writes.
    let (state, changes) = small_batch("by-b", 3);
    b.commit(&state, &changes).unwrap();
    assert_eq!(b.lease().map(|l| l.epoch), Some(new.epoch));
    assert!(a
        .load(Default::default())
        .unwrap()
        .compute_environments
        .contains_key("by-b"));
}

fn a_lapsed_lease_fences_until_taken_again(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let old = a
        .try_acquire_lease("a", "http://a", SHORT_TTL_MS)
        .unwrap()
        .unwrap();
    wait_out(SHORT_TTL_MS);
    // Nobody took over, but the tenure is over: another server could have, at any moment.
    let (state, changes) = small_batch("late", 1);
    assert_fenced(a.commit(&state, &changes), "a", old.epoch);
    assert!(!a.renew_lease(&old, LONG_TTL_MS).unwrap());
    assert!(a
        .load(Default::default())
        .unwrap()
        .compute_environments
        .is_empty());
    // Taking it again is a new tenure, and the commit goes through.
    let again = a
        .try_acquire_lease("a", "http://a", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    assert_eq!(again.epoch, old.epoch + 1);
    a.commit(&state, &changes).unwrap();
    assert!(a
        .load(Default::default())
        .unwrap()
        .compute_environments
        .contains_key("late"));
}

fn renewing_keeps_the_lease(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let mut b = db.open().unwrap();
    let lease = a
        .try_acquire_lease("a", "http://a", SHORT_TTL_MS * 3)
        .unwrap()
        .unwrap();
    // Renewed well within its TTL, for several TTLs in all.
    for _ in 0..6 {
        sleep(Duration::from_millis(SHORT_TTL_MS));
        assert!(a.renew_lease(&lease, SHORT_TTL_MS * 3).unwrap());
        assert_eq!(
            b.try_acquire_lease("b", "http://b", LONG_TTL_MS).unwrap(),
            None
        );
    }
    let (state, changes) = small_batch("still-leader", 1);
    a.commit(&state, &changes).unwrap();
    assert_eq!(b.current_leader().unwrap().unwrap().epoch, lease.epoch);
}

fn releasing_hands_over_at_once(db: &dyn TestDb) {
    let mut a = db.open().unwrap();
    let mut b = db.open().unwrap();
    let old = a
        .try_acquire_lease("a", "http://a", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    assert!(a.release_lease(&old).unwrap());
    assert!(!a.release_lease(&old).unwrap());
    assert_eq!(b.current_leader().unwrap(), None);
    let new = b
        .try_acquire_lease("b", "http://b", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    let (state, changes) = small_batch("after-release", 1);
    assert_fenced(a.commit(&state, &changes), "a", old.epoch);
    b.commit(&state, &changes).unwrap();
}

fn a_keeper_renews_beside_the_writer(db: &dyn TestDb) {
    // The server's shape: the writer thread owns the store, a keeper on its own connection
    // takes and renews the lease, and hands it to the writer's store to fence with.
    let mut writer = db.open().unwrap();
    let mut keeper = writer.lease_keeper().unwrap();
    let lease = keeper
        .try_acquire("a", "http://a", SHORT_TTL_MS * 3)
        .unwrap()
        .unwrap();
    assert_eq!(writer.lease(), None);
    writer.fence_with(lease.clone());
    let renewer = std::thread::spawn(move || {
        for _ in 0..4 {
            sleep(Duration::from_millis(SHORT_TTL_MS));
            assert!(keeper.renew(&lease, SHORT_TTL_MS * 3).unwrap());
        }
        keeper
    });
    for i in 0..8 {
        let (state, changes) = small_batch(&format!("w{i}"), i);
        writer.commit(&state, &changes).unwrap();
        sleep(Duration::from_millis(SHORT_TTL_MS / 2));
    }
    let mut keeper = renewer.join().unwrap();
    // The keeper stops renewing; another server takes over; the writer is fenced.
    wait_out(SHORT_TTL_MS * 3);
    let mut other = db.open().unwrap().lease_keeper().unwrap();
    let taken = other
        .try_acquire("b", "http://b", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    assert_eq!(keeper.current_leader().unwrap().unwrap().epoch, taken.epoch);
    let (state, changes) = small_batch("too-late", 99);
    let fenced_epoch = writer.lease().unwrap().epoch;
    assert_fenced(writer.commit(&state, &changes), "a", fenced_epoch);
}

fn a_new_leader_loads_what_the_old_one_committed(db: &dyn TestDb) {
    let mut b = db.open().unwrap();
    let mut a = db.open().unwrap();
    let old = a
        .try_acquire_lease("a", "http://a", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    let d = build_world(&mut a);
    assert!(a.release_lease(&old).unwrap());
    b.try_acquire_lease("b", "http://b", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    assert_same_entities(&b.load(Default::default()).unwrap(), &d.state);
}

/// Ends every other session on the test database, as a server restart or a proxy would.
fn drop_connections(db: &PgDb) {
    let mut admin = admin_client(&db.url);
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
}

fn broken_connections_are_reopened(db: &PgDb) {
    let mut store = db.open().unwrap();
    let reader = store.reader().unwrap();
    let (state, changes) = small_batch("first", 1);
    store.commit(&state, &changes).unwrap();
    assert!(reader.has_events(1).unwrap());
    drop_connections(db);
    // The log reader repeats a read on a fresh connection: no error reaches the caller.
    assert!(reader.has_events(1).unwrap());
    // The writer finds out on its next commit, which fails (a commit is not repeated: it may
    // have landed), and the one after runs on a new connection.
    let (state, changes) = small_batch("second", 2);
    if store.commit(&state, &changes).is_err() {
        store.commit(&state, &changes).unwrap();
    }
    // Reads and lease operations are repeated on a fresh connection.
    drop_connections(db);
    let loaded = store.load(Default::default()).unwrap();
    assert!(loaded.compute_environments.contains_key("second"));
    drop_connections(db);
    let lease = store
        .try_acquire_lease("a", "http://a", LONG_TTL_MS)
        .unwrap()
        .unwrap();
    let mut keeper = store.lease_keeper().unwrap();
    drop_connections(db);
    assert!(keeper.renew(&lease, LONG_TTL_MS).unwrap());
    assert_eq!(store.current_leader().unwrap().unwrap().epoch, lease.epoch);
}

// ---- without a server ---------------------------------------------------------------------------

#[test]
fn postgres_errors_say_what_to_check() {
    let message = Store::open_postgres("postgres://barge@127.0.0.1:1/nowhere")
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(
        message.contains("cannot connect to PostgreSQL at barge@127.0.0.1:1/nowhere")
            && message.contains("--database-url"),
        "{message}"
    );
    let message = Store::open_postgres("postgres://barge:secret@127.0.0.1:1/nowhere")
        .err()
        .unwrap()
        .to_string();
    assert!(!message.contains("secret"), "{message}");
    let message = Store::open_postgres("postgres://barge@127.0.0.1:notaport/x")
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("the database URL is not valid"),
        "{message}"
    );
}

#[test]
fn test_urls_name_the_test_database() {
    assert_eq!(
        with_dbname("postgres://barge@127.0.0.1:5432/barge", "t1"),
        "postgres://barge@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_dbname("postgres://u:p@h/db?sslmode=disable", "t1"),
        "postgres://u:p@h/t1?sslmode=disable"
    );
    assert_eq!(with_dbname("postgres://h:1", "t1"), "postgres://h:1/t1");
    assert_eq!(
        with_dbname("host=h user=u", "t1"),
        "host=h user=u dbname=t1"
    );
}

// ---- instantiation --------------------------------------------------------------------------

macro_rules! suite {
    (both: [$($both:ident),* $(,)?], sqlite: [$($lite:ident),* $(,)?], postgres: [$($pg:ident),* $(,)?] $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $both() { super::$both(&super::SqliteDb::new()) } )*
            $( #[test] fn $lite() { super::$lite(&super::SqliteDb::new()) } )*
        }
        mod on_postgres {
            $( #[test] fn $both() { super::$both(&super::PgDb::new(stringify!($both))) } )*
            $( #[test] fn $pg() { super::$pg(&super::PgDb::new(stringify!($pg))) } )*
        }
    };
}

suite! {
    both: [
        every_kind_reads_back_exactly,
        updates_and_deletes_are_stored,
        log_queries_page_and_filter,
        a_newer_schema_is_refused,
        is_new_only_on_the_first_open,
        large_batches_commit_whole,
        a_failed_commit_writes_nothing,
        load_again_sees_another_stores_commits,
        lease_ttl_is_bounded,
    ],
    sqlite: [sqlite_lease_is_trivially_held],
    postgres: [
        lease_is_exclusive_while_held,
        racing_servers_elect_exactly_one,
        takeover_after_expiry_bumps_the_epoch,
        a_deposed_leader_is_fenced_and_writes_nothing,
        a_lapsed_lease_fences_until_taken_again,
        renewing_keeps_the_lease,
        releasing_hands_over_at_once,
        a_keeper_renews_beside_the_writer,
        a_new_leader_loads_what_the_old_one_committed,
        broken_connections_are_reopened,
    ],
}
