//! The SQLite backend: one file under the data directory, WAL mode with synchronous=FULL, so a
//! commit is on disk when `commit` returns. One writer connection commits whole batches;
//! readers use their own connections (WAL lets them run beside the writer).
//!
//! Its leader lease is trivially held: a SQLite file serves one `barge up` on one host, so
//! there is never a second server to take over or to fence out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use barge_core::arn::Identity;
use barge_core::command::{Changes, Key};
use barge_core::State;
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::{entity_row, filter_after, filter_page, put_entity};
use crate::{Direction, EventPage, LeaderInfo, Lease, StoreError, StoredEvent};

/// The schema version this build writes (`PRAGMA user_version`); `migrate` brings older
/// databases up to it.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Read connections kept for log queries. Each query holds one for its duration.
const READ_CONNECTIONS_MAX: usize = 4;

/// How long a connection waits for another's lock before failing (a checkpoint, a reader).
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// The single epoch of a SQLite lease: there is only ever one tenure.
const SQLITE_LEASE_EPOCH: i64 = 1;

/// Who called `try_acquire_lease` last, shared with the store's lease keepers so that
/// `current_leader` answers the same from each.
pub(crate) type SqliteLeader = Arc<Mutex<Option<(String, String)>>>;

pub(crate) struct SqliteStore {
    path: PathBuf,
    writer: Connection,
    is_new: bool,
    leader: SqliteLeader,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    pub(crate) fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("barge.db");
        let writer = open_connection(&path)?;
        let is_new = migrate(&writer)?;
        Ok(SqliteStore {
            path,
            writer,
            is_new,
            leader: Arc::default(),
        })
    }

    pub(crate) fn is_new(&self) -> bool {
        self.is_new
    }

    pub(crate) fn load(&self, identity: Identity) -> Result<State, StoreError> {
        let mut state = State::new(identity);
        let mut stmt = self
            .writer
            .prepare("SELECT kind, key, body FROM entities")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let key: String = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            put_entity(&mut state, &kind, &key, &body)?;
        }
        state.rebuild_indexes();
        Ok(state)
    }

    pub(crate) fn commit(&mut self, state: &State, changes: &Changes) -> Result<(), StoreError> {
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
                let (kind, id, body) = entity_row(state, key);
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

    pub(crate) fn reader(&self) -> SqliteLogReader {
        SqliteLogReader {
            path: self.path.clone(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn leader(&self) -> SqliteLeader {
        self.leader.clone()
    }
}

/// The trivial lease: always granted, never expires, never fenced.
pub(crate) fn acquire(leader: &SqliteLeader, holder: &str, url: &str) -> Lease {
    *leader.lock().expect("sqlite leader") = Some((holder.to_string(), url.to_string()));
    Lease {
        holder: holder.to_string(),
        epoch: SQLITE_LEASE_EPOCH,
    }
}

/// A release forgets the holder; the next acquire (by anyone) succeeds as before.
pub(crate) fn release(leader: &SqliteLeader, lease: &Lease) -> bool {
    let mut held = leader.lock().expect("sqlite leader");
    let ours = held.as_ref().is_some_and(|(h, _)| *h == lease.holder);
    if ours {
        *held = None;
    }
    ours
}

pub(crate) fn current_leader(leader: &SqliteLeader) -> Option<LeaderInfo> {
    leader
        .lock()
        .expect("sqlite leader")
        .as_ref()
        .map(|(holder, url)| LeaderInfo {
            holder: holder.clone(),
            url: url.clone(),
            epoch: SQLITE_LEASE_EPOCH,
            expires_in_ms: i64::MAX,
        })
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

/// Log queries on read-only connections, opened on demand and reused.
#[derive(Clone)]
pub(crate) struct SqliteLogReader {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteLogReader {
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
                c.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
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

    pub(crate) fn stream_events(
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
                    limit.min(i64::MAX as usize) as i64
                ],
                event_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn filter_events(
        &self,
        streams: &[u64],
        after: Option<(i64, u64, u64)>,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: usize,
        scan_max: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<EventPage, StoreError> {
        // Stream numbers are integers, so listing them inline cannot inject anything.
        let list = streams
            .iter()
            .map(|s| (*s as i64).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (ats, ast, asq) = filter_after(after);
        let sql = format!(
            "SELECT stream, seq, timestamp, ingestion, message FROM log_events
             WHERE stream IN ({list}) AND timestamp >= ?1 AND timestamp < ?2
               AND (timestamp, stream, seq) > (?3, ?4, ?5)
             ORDER BY timestamp, stream, seq LIMIT ?6"
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(
                params![
                    start_ms.unwrap_or(i64::MIN),
                    end_ms.unwrap_or(i64::MAX),
                    ats,
                    ast,
                    asq,
                    scan_max.min(i64::MAX as usize) as i64
                ],
                event_from_row,
            )?;
            filter_page(
                rows.map(|r| r.map_err(StoreError::from)),
                limit,
                scan_max,
                keep,
            )
        })
    }

    pub(crate) fn has_events(&self, stream: u64) -> Result<bool, StoreError> {
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
