//! Barge's durable store. It owns the on-disk form of the state and nothing else: it never
//! decides anything, it writes what the core changed and reads it back.
//!
//! Layout: every resource is one row of `entities(kind, key, body)` holding its JSON, so adding
//! a field never needs a migration; log events, which are many and never change, have their own
//! table keyed by (stream number, sequence). The database runs in WAL mode with
//! synchronous=FULL: a commit is on disk when `commit` returns. One writer connection commits
//! whole batches; readers use their own connections (WAL lets them run beside the writer).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use barge_core::arn::Identity;
use barge_core::command::{Changes, Key};
use barge_core::fairshare::ShareUsage;
use barge_core::model::*;
use barge_core::State;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored {kind} {key} cannot be read: {source}")]
    Corrupt {
        kind: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database was written by a newer Barge (schema {found}, this one knows {known}); upgrade Barge")]
    NewerSchema { found: i64, known: i64 },
}

/// The schema version this build writes; `migrate` brings older databases up to it.
const SCHEMA_VERSION: i64 = 1;

const KIND_CE: &str = "compute_environment";
const KIND_QUEUE: &str = "job_queue";
const KIND_DEFINITION: &str = "job_definition";
const KIND_JOB: &str = "job";
const KIND_LOG_STREAM: &str = "log_stream";
const KIND_POLICY: &str = "scheduling_policy";
const KIND_SHARE_USAGE: &str = "share_usage";
const KIND_AGENT: &str = "agent";

/// Read connections kept for log queries. Each query holds one for its duration.
const READ_CONNECTIONS_MAX: usize = 4;

pub struct Store {
    path: PathBuf,
    writer: Connection,
    is_new: bool,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating when needed) the database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("barge.db");
        let writer = open_connection(&path)?;
        let is_new = migrate(&writer)?;
        Ok(Store {
            path,
            writer,
            is_new,
        })
    }

    /// Whether this open created the database (Barge's first start in this data directory).
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// Reads the whole state back.
    pub fn load(&self, identity: Identity) -> Result<State, StoreError> {
        let mut state = State::new(identity);
        let mut stmt = self
            .writer
            .prepare("SELECT kind, key, body FROM entities")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let key: String = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            let corrupt = |source| StoreError::Corrupt {
                kind: kind.clone(),
                key: key.clone(),
                source,
            };
            match kind.as_str() {
                KIND_CE => {
                    let v: ComputeEnvironment = serde_json::from_slice(&body).map_err(corrupt)?;
                    state
                        .compute_environments
                        .insert(v.name.clone(), Arc::new(v));
                }
                KIND_QUEUE => {
                    let v: JobQueue = serde_json::from_slice(&body).map_err(corrupt)?;
                    state.job_queues.insert(v.name.clone(), Arc::new(v));
                }
                KIND_DEFINITION => {
                    let v: JobDefinition = serde_json::from_slice(&body).map_err(corrupt)?;
                    state
                        .job_definitions
                        .insert((v.name.clone(), v.revision), Arc::new(v));
                }
                KIND_JOB => {
                    let v: Job = serde_json::from_slice(&body).map_err(corrupt)?;
                    state.jobs.insert(v.id.clone(), Arc::new(v));
                }
                KIND_LOG_STREAM => {
                    let v: LogStream = serde_json::from_slice(&body).map_err(corrupt)?;
                    state.log_streams.insert(v.name.clone(), Arc::new(v));
                }
                KIND_POLICY => {
                    let v: SchedulingPolicy = serde_json::from_slice(&body).map_err(corrupt)?;
                    state
                        .scheduling_policies
                        .insert(v.name.clone(), Arc::new(v));
                }
                KIND_SHARE_USAGE => {
                    let v: ShareUsage = serde_json::from_slice(&body).map_err(corrupt)?;
                    state.share_usage.insert(v.queue.clone(), Arc::new(v));
                }
                KIND_AGENT => {
                    let v: Agent = serde_json::from_slice(&body).map_err(corrupt)?;
                    state.agents.insert(v.id.clone(), Arc::new(v));
                }
                // A kind this build does not know was written by a newer one; the schema
                // version check refuses that case before we get here.
                _ => {}
            }
        }
        state.rebuild_indexes();
        Ok(state)
    }

    /// Writes everything `changes` names, as found in `state`, in one durable transaction.
    pub fn commit(&mut self, state: &State, changes: &Changes) -> Result<(), StoreError> {
        let keys: BTreeSet<&Key> = changes.dirty.iter().collect();
        let tx = self.writer.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO entities (kind, key, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM entities WHERE kind = ?1 AND key = ?2")?;
            for key in keys {
                let (kind, id, body) = match key {
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
                };
                match body {
                    Some(body) => upsert.execute(params![kind, id, body])?,
                    None => delete.execute(params![kind, id])?,
                };
            }
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO log_events (stream, seq, timestamp, ingestion, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in &changes.log_events {
                insert_event.execute(params![
                    e.stream_number as i64,
                    e.seq as i64,
                    e.timestamp_ms,
                    e.ingestion_ms,
                    e.message
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A pool of read connections for log queries.
    pub fn reader(&self) -> Result<LogReader, StoreError> {
        Ok(LogReader {
            path: self.path.clone(),
            idle: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("core types always serialize")
}

/// Brings the schema up to date; returns whether the database was new.
fn migrate(conn: &Connection) -> Result<bool, StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS entities (
                 kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS log_events (
                 stream INTEGER NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                 ingestion INTEGER NOT NULL, message TEXT NOT NULL,
                 PRIMARY KEY (stream, seq)) WITHOUT ROWID;
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    Ok(version == 0)
}

/// One stored log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub stream: u64,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub ingestion_ms: i64,
    pub message: String,
}

/// A page of `filter_events`: the events, the position of the last row examined (to resume
/// from), and whether the scan reached the end.
pub type EventPage = (Vec<StoredEvent>, Option<(i64, u64, u64)>, bool);

/// Which way to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Events with seq ≥ the cursor, oldest first.
    Forward,
    /// Events with seq < the cursor, newest first.
    Backward,
}

/// Log queries. Cheap to clone; connections are opened on demand and reused.
#[derive(Clone)]
pub struct LogReader {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl LogReader {
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.idle.lock().expect("log reader pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c
            }
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().expect("log reader pool");
        if idle.len() < READ_CONNECTIONS_MAX {
            idle.push(conn);
        }
        result
    }

    /// Up to `limit` events of one stream from `cursor` in `direction`, within the optional
    /// [start, end) timestamp window.
    pub fn stream_events(
        &self,
        stream: u64,
        cursor: u64,
        direction: Direction,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = match direction {
            Direction::Forward => {
                "SELECT stream, seq, timestamp, ingestion, message FROM log_events
                 WHERE stream = ?1 AND seq >= ?2 AND timestamp >= ?3 AND timestamp < ?4
                 ORDER BY seq ASC LIMIT ?5"
            }
            Direction::Backward => {
                "SELECT stream, seq, timestamp, ingestion, message FROM log_events
                 WHERE stream = ?1 AND seq < ?2 AND timestamp >= ?3 AND timestamp < ?4
                 ORDER BY seq DESC LIMIT ?5"
            }
        };
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(
                params![
                    stream as i64,
                    cursor.min(i64::MAX as u64) as i64,
                    start_ms.unwrap_or(i64::MIN),
                    end_ms.unwrap_or(i64::MAX),
                    limit as i64
                ],
                event_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Events of several streams in (timestamp, stream, seq) order, after the position `after`
    /// (exclusive), within [start, end). `keep` filters messages; at most `scan_max` rows are
    /// examined so a selective filter cannot make one call unbounded. Returns the events and
    /// the position of the last row examined (to resume from).
    #[allow(clippy::too_many_arguments)]
    pub fn filter_events(
        &self,
        streams: &[u64],
        after: Option<(i64, u64, u64)>,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: usize,
        scan_max: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<EventPage, StoreError> {
        if streams.is_empty() {
            return Ok((Vec::new(), None, true));
        }
        let list = streams
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (ats, ast, asq) = after.unwrap_or((i64::MIN, 0, 0));
        let sql = format!(
            "SELECT stream, seq, timestamp, ingestion, message FROM log_events
             WHERE stream IN ({list}) AND timestamp >= ?1 AND timestamp < ?2
               AND (timestamp, stream, seq) > (?3, ?4, ?5)
             ORDER BY timestamp, stream, seq LIMIT ?6"
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params![
                start_ms.unwrap_or(i64::MIN),
                end_ms.unwrap_or(i64::MAX),
                if after.is_some() { ats } else { i64::MIN },
                ast as i64,
                asq as i64 - i64::from(after.is_none()),
                scan_max as i64
            ])?;
            let mut out = Vec::new();
            let mut last = None;
            let mut scanned = 0;
            while let Some(row) = rows.next()? {
                let e = event_from_row(row)?;
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
        })
    }

    /// Whether any event exists in the stream (used by tests and diagnostics).
    pub fn has_events(&self, stream: u64) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM log_events WHERE stream = ?1 LIMIT 1",
                    [stream as i64],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        stream: row.get::<_, i64>(0)? as u64,
        seq: row.get::<_, i64>(1)? as u64,
        timestamp_ms: row.get(2)?,
        ingestion_ms: row.get(3)?,
        message: row.get(4)?,
    })
}
