//! The PostgreSQL backend, for several `barge server` processes sharing one database. The same
//! layout as SQLite's: one JSON row per resource in `entities(kind, key, body)`, log events in
//! `log_events(stream, seq, …)`, plus `schema_version` and the single-row `leader_lease`.
//!
//! The synchronous `postgres` client: the writer is a plain thread, so the store needs no async
//! runtime of its own to manage (the client runs a small private one per connection). That
//! client blocks, so every call here must come from a plain thread or `spawn_blocking`,
//! never from inside an async task (tokio refuses to block a thread driving tasks).
//!
//! Connections are unencrypted (`NoTls`): the database is expected on loopback or a private
//! network. A URL asking for `sslmode=require` fails to connect rather than falling back.
//!
//! Bodies and log messages are `bytea`, not `jsonb`/`text`: rows are always read and written
//! whole, so jsonb's parse on every write buys nothing, and PostgreSQL's text (and jsonb) cannot
//! hold a NUL character, which a container's output and SQLite's TEXT can. Bytes keep both
//! backends returning exactly what was stored. (`convert_from(body, 'UTF8')::jsonb` reads a
//! body as JSON by hand.)
//!
//! A commit is one transaction whose writes are a few array statements (`UNNEST`), whatever
//! the batch's size, so a batch of thousands of changes costs a handful of round trips.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barge_core::arn::Identity;
use barge_core::command::{Changes, Key};
use barge_core::State;
use postgres::config::Host;
use postgres::error::Severity;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Row, Statement};

use crate::codec::{entity_row, filter_after, filter_page, put_entity};
use crate::{Direction, EventPage, LeaderInfo, Lease, StoreError, StoredEvent};

/// The schema version this build writes (the row of `schema_version`); `migrate` brings older
/// databases up to it.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Rows per array statement in a commit: bounds one statement's parameter payload (and the
/// server's memory for it) while keeping a large batch to a few round trips.
const STATEMENT_ROWS_MAX: usize = 10_000;

/// How long opening a connection may take before the open fails with its reason.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// How long a statement waits for a row lock (the lease row, mostly) before failing. A
/// competing server's commit holds the lease row only for its transaction.
const LOCK_TIMEOUT_MS: u64 = 5_000;

/// A session that stays inside a transaction this long without sending anything is ended by
/// the server, releasing its locks: a leader that hangs mid-commit cannot hold the lease row
/// (and with it every takeover) for longer.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;

/// TCP keepalive idle time, so a connection to a vanished peer is noticed in seconds, not the
/// kernel's default two hours.
const KEEPALIVE_IDLE_MS: u64 = 10_000;

/// Read connections kept for log queries. Each query holds one for its duration.
const READ_CONNECTIONS_MAX: usize = 4;

/// The advisory lock that serialises migrations when several servers open at once ("BARGE"
/// in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x42_41_52_47_45;

/// A parsed database URL and how to name it in messages (never with its password).
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    described: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let config: Config = url
            .parse()
            .map_err(|source| StoreError::DatabaseUrl { source })?;
        let described = describe(&config);
        Ok(Target { config, described })
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        }
        config.keepalives_idle(Duration::from_millis(KEEPALIVE_IDLE_MS));
        if config.get_application_name().is_none() {
            config.application_name("barge");
        }
        let mut client = config
            .connect(NoTls)
            .map_err(|source| StoreError::Connect {
                target: self.described.clone(),
                source,
            })?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = {LOCK_TIMEOUT_MS};
                 SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS};"
            ))
            .map_err(pg("configuring the session"))?;
        Ok(client)
    }
}

/// `user@host:port/dbname`, for messages.
fn describe(config: &Config) -> String {
    let hosts = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>();
    let host = if hosts.is_empty() {
        "localhost".to_string()
    } else {
        hosts.join(",")
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(no user)");
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// Whether a failed call means the session is gone (the server ended it, the socket broke), so
/// a repeatable call may run again on a new connection. The client marks itself closed only
/// once it has read the end of the stream, which may come after the error, so the error's own
/// kind counts too: a FATAL always ends the session.
fn session_lost(result: &Result<impl Sized, StoreError>, client: &Client) -> bool {
    let Err(e) = result else {
        return false;
    };
    if client.is_closed() {
        return true;
    }
    let StoreError::Postgres { source, .. } = e else {
        return false;
    };
    source.is_closed()
        || source.as_db_error().is_some_and(|db| {
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            )
        })
        || std::error::Error::source(source).is_some_and(|c| c.is::<std::io::Error>())
}

/// Wraps a client error with what the store was doing.
pub(crate) fn pg(what: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { what, source }
}

/// The writer's connection with its prepared statements (prepared once per connection).
struct Conn {
    client: Client,
    upsert: Statement,
    delete: Statement,
    insert_events: Statement,
    fence_check: Statement,
}

impl Conn {
    fn open(target: &Target) -> Result<Conn, StoreError> {
        Conn::prepare(target.connect()?)
    }

    fn prepare(mut client: Client) -> Result<Conn, StoreError> {
        let prepare = pg("preparing the store's statements");
        let upsert = client
            .prepare(
                "INSERT INTO entities (kind, key, body)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
                 ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            )
            .map_err(&prepare)?;
        let delete = client
            .prepare(
                "DELETE FROM entities e USING UNNEST($1::text[], $2::text[]) AS d(kind, key)
                 WHERE e.kind = d.kind AND e.key = d.key",
            )
            .map_err(&prepare)?;
        let insert_events = client
            .prepare(
                "INSERT INTO log_events (stream, seq, timestamp, ingestion, message)
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::bytea[])",
            )
            .map_err(&prepare)?;
        // FOR UPDATE: a takeover or renewal (an UPDATE of this row) waits until the commit
        // ends, so a new leader's load always comes after the old leader's last commit.
        let fence_check = client
            .prepare("SELECT holder, epoch, expires_at > now() FROM leader_lease FOR UPDATE")
            .map_err(&prepare)?;
        Ok(Conn {
            client,
            upsert,
            delete,
            insert_events,
            fence_check,
        })
    }
}

pub(crate) struct PgStore {
    target: Target,
    /// None after the connection broke; the next call opens a new one. A RefCell because
    /// `load` and the lease queries take `&self` (the store is owned by one thread).
    conn: RefCell<Option<Conn>>,
    is_new: bool,
    /// The lease every commit must still hold, once one was taken.
    fence: Option<Lease>,
}

impl PgStore {
    pub(crate) fn open(url: &str) -> Result<PgStore, StoreError> {
        let target = Target::parse(url)?;
        let mut client = target.connect()?;
        let is_new = migrate(&mut client)?;
        let conn = Conn::prepare(client)?;
        Ok(PgStore {
            target,
            conn: RefCell::new(Some(conn)),
            is_new,
            fence: None,
        })
    }

    pub(crate) fn is_new(&self) -> bool {
        self.is_new
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn fence(&self) -> Option<&Lease> {
        self.fence.as_ref()
    }

    pub(crate) fn set_fence(&mut self, lease: Lease) {
        self.fence = Some(lease);
    }

    /// Runs `f` on the writer connection, opening a new one if the last one broke. With
    /// `repeat`, a call that failed because the connection had died while idle (a server
    /// restart, a proxy's timeout: only found out by using it) runs once more on a new one;
    /// only for calls whose repeat is harmless (reads, lease updates that are idempotent for
    /// their holder), never for a commit, which may have landed.
    fn with_conn<T>(
        &self,
        repeat: bool,
        mut f: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.conn.borrow_mut();
        let mut tries_left = if repeat { 2 } else { 1 };
        loop {
            let fresh = slot.as_ref().is_none_or(|c| c.client.is_closed());
            if fresh {
                *slot = None;
                *slot = Some(Conn::open(&self.target)?);
            }
            let conn = slot.as_mut().expect("opened above");
            let result = f(conn);
            tries_left -= 1;
            if !session_lost(&result, &conn.client) {
                return result;
            }
            // A lost session is never used again: the next call opens a new one.
            *slot = None;
            // On a connection just opened the server itself is the trouble: say so now.
            if fresh || tries_left == 0 {
                return result;
            }
        }
    }

    /// Runs a repeatable `f` (see `with_conn`) on the writer connection's client.
    pub(crate) fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(true, |c| f(&mut c.client))
    }

    pub(crate) fn load(&self, identity: Identity) -> Result<State, StoreError> {
        let mut state = self.with_conn(true, |conn| {
            let mut state = State::new(identity.clone());
            let read = pg("reading the stored state");
            // Streamed row by row: the state can be large, and one statement sees one
            // consistent snapshot.
            let mut rows = conn
                .client
                .query_raw(
                    "SELECT kind, key, body FROM entities",
                    std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>(),
                )
                .map_err(&read)?;
            while let Some(row) = rows.next().map_err(&read)? {
                let kind: &str = row.try_get(0).map_err(&read)?;
                let key: &str = row.try_get(1).map_err(&read)?;
                let body: &[u8] = row.try_get(2).map_err(&read)?;
                put_entity(&mut state, kind, key, body)?;
            }
            Ok(state)
        })?;
        state.rebuild_indexes();
        Ok(state)
    }

    pub(crate) fn commit(&mut self, state: &State, changes: &Changes) -> Result<(), StoreError> {
        // Encoded before the transaction, so the JSON work does not hold the lease row.
        let keys: BTreeSet<&Key> = changes.dirty.iter().collect();
        let (mut up_kinds, mut up_keys, mut up_bodies) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_kinds, mut del_keys) = (Vec::new(), Vec::new());
        for key in keys {
            let (kind, id, body) = entity_row(state, key);
            match body {
                Some(body) => {
                    up_kinds.push(kind);
                    up_keys.push(id);
                    up_bodies.push(body);
                }
                None => {
                    del_kinds.push(kind);
                    del_keys.push(id);
                }
            }
        }
        let events = &changes.log_events;
        let ev_streams: Vec<i64> = events.iter().map(|e| e.stream_number as i64).collect();
        let ev_seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let ev_times: Vec<i64> = events.iter().map(|e| e.timestamp_ms).collect();
        let ev_ingestions: Vec<i64> = events.iter().map(|e| e.ingestion_ms).collect();
        let ev_messages: Vec<&[u8]> = events.iter().map(|e| e.message.as_bytes()).collect();

        let fence = self.fence.clone();
        self.with_conn(false, |conn| {
            let write = pg("committing a batch");
            let Conn {
                client,
                upsert,
                delete,
                insert_events,
                fence_check,
            } = conn;
            let mut tx = client.transaction().map_err(&write)?;
            if let Some(lease) = &fence {
                let row = tx.query_opt(&*fence_check, &[]).map_err(&write)?;
                if let Some(why) = fenced_why(lease, row.as_ref())? {
                    // Dropping the transaction rolls it back; nothing was written yet.
                    drop(tx);
                    return Err(StoreError::Fenced {
                        holder: lease.holder.clone(),
                        epoch: lease.epoch,
                        why,
                    });
                }
            }
            for r in chunks(up_kinds.len()) {
                let (kinds, keys, bodies) =
                    (&up_kinds[r.clone()], &up_keys[r.clone()], &up_bodies[r]);
                tx.execute(&*upsert, &[&kinds, &keys, &bodies])
                    .map_err(&write)?;
            }
            for r in chunks(del_kinds.len()) {
                let (kinds, keys) = (&del_kinds[r.clone()], &del_keys[r]);
                tx.execute(&*delete, &[&kinds, &keys]).map_err(&write)?;
            }
            for r in chunks(events.len()) {
                let (streams, seqs, times, ingestions, messages) = (
                    &ev_streams[r.clone()],
                    &ev_seqs[r.clone()],
                    &ev_times[r.clone()],
                    &ev_ingestions[r.clone()],
                    &ev_messages[r],
                );
                tx.execute(
                    &*insert_events,
                    &[&streams, &seqs, &times, &ingestions, &messages],
                )
                .map_err(&write)?;
            }
            tx.commit().map_err(&write)
        })
    }

    pub(crate) fn reader(&self) -> PgLogReader {
        PgLogReader {
            target: self.target.clone(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// Ranges of at most `STATEMENT_ROWS_MAX` rows covering `0..len`.
fn chunks(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..len)
        .step_by(STATEMENT_ROWS_MAX)
        .map(move |start| start..(start + STATEMENT_ROWS_MAX).min(len))
}

/// Why the lease row no longer backs `lease` (None: it does).
fn fenced_why(lease: &Lease, row: Option<&Row>) -> Result<Option<String>, StoreError> {
    let Some(row) = row else {
        return Ok(Some("the lease row is missing".into()));
    };
    let read = pg("reading the lease");
    let holder: &str = row.try_get(0).map_err(&read)?;
    let epoch: i64 = row.try_get(1).map_err(&read)?;
    let live: bool = row.try_get(2).map_err(&read)?;
    Ok(if holder != lease.holder || epoch != lease.epoch {
        Some(format!(
            "the lease is now held by {holder:?} at epoch {epoch}"
        ))
    } else if !live {
        Some("the lease expired before it was renewed".into())
    } else {
        None
    })
}

/// Brings the schema up to date; returns whether the database was new.
fn migrate(client: &mut Client) -> Result<bool, StoreError> {
    let step = pg("migrating the schema");
    let mut tx = client.transaction().map_err(&step)?;
    // Two servers starting at once must not both create the tables.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::bigint)",
        &[&MIGRATION_LOCK_KEY],
    )
    .map_err(&step)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")
        .map_err(&step)?;
    let version: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])
        .and_then(|r| r.try_get(0))
        .map_err(&step)?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        // The lease row exists from the start (epoch 0, long expired), so acquiring it is
        // always an UPDATE that concurrent servers serialise on.
        tx.batch_execute(
            "CREATE TABLE entities (
                 kind text NOT NULL, key text NOT NULL, body bytea NOT NULL,
                 PRIMARY KEY (kind, key));
             CREATE TABLE log_events (
                 stream bigint NOT NULL, seq bigint NOT NULL, timestamp bigint NOT NULL,
                 ingestion bigint NOT NULL, message bytea NOT NULL,
                 PRIMARY KEY (stream, seq));
             CREATE TABLE leader_lease (
                 singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                 holder text NOT NULL, url text NOT NULL, epoch bigint NOT NULL,
                 expires_at timestamptz NOT NULL);
             INSERT INTO leader_lease (holder, url, epoch, expires_at)
                 VALUES ('', '', 0, '-infinity');
             DELETE FROM schema_version;
             INSERT INTO schema_version (version) VALUES (1);",
        )
        .map_err(&step)?;
    }
    tx.commit().map_err(&step)?;
    Ok(version == 0)
}

// ---- the leader lease -------------------------------------------------------------------
//
// Every time is the database's (`now()`), so the servers' clocks never matter: a lease expires
// when the database says so, for everyone at once.

pub(crate) fn try_acquire(
    client: &mut Client,
    holder: &str,
    url: &str,
    ttl_ms: u64,
) -> Result<Option<Lease>, StoreError> {
    // Free (never taken, released or expired) or ours: take it. A new tenure (another holder
    // before, or ours but lapsed) gets the next epoch; a live lease of ours keeps its epoch.
    // Concurrent acquirers serialise on the row: the second re-checks the WHERE against the
    // first's result and finds it held.
    let row = client
        .query_opt(
            "UPDATE leader_lease SET
                 epoch = CASE WHEN holder = $1 AND expires_at > now() THEN epoch
                              ELSE epoch + 1 END,
                 holder = $1, url = $2,
                 expires_at = now() + $3::bigint * interval '1 millisecond'
             WHERE (holder = $1 AND expires_at > now()) OR expires_at <= now()
             RETURNING epoch",
            &[&holder, &url, &(ttl_ms as i64)],
        )
        .map_err(pg("acquiring the leader lease"))?;
    row.map(|r| {
        Ok(Lease {
            holder: holder.to_string(),
            epoch: r.try_get(0).map_err(pg("acquiring the leader lease"))?,
        })
    })
    .transpose()
}

pub(crate) fn renew(client: &mut Client, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError> {
    // A lapsed lease is not renewed: another server may have loaded and written since, so the
    // holder must acquire again (a new epoch) and reload.
    let n = client
        .execute(
            "UPDATE leader_lease SET expires_at = now() + $3::bigint * interval '1 millisecond'
             WHERE holder = $1 AND epoch = $2 AND expires_at > now()",
            &[&lease.holder, &lease.epoch, &(ttl_ms as i64)],
        )
        .map_err(pg("renewing the leader lease"))?;
    Ok(n == 1)
}

pub(crate) fn release(client: &mut Client, lease: &Lease) -> Result<bool, StoreError> {
    // Expired rather than cleared: the next holder's epoch still counts up from this one.
    let n = client
        .execute(
            "UPDATE leader_lease SET expires_at = '-infinity'
             WHERE holder = $1 AND epoch = $2 AND expires_at > now()",
            &[&lease.holder, &lease.epoch],
        )
        .map_err(pg("releasing the leader lease"))?;
    Ok(n == 1)
}

pub(crate) fn current_leader(client: &mut Client) -> Result<Option<LeaderInfo>, StoreError> {
    let read = pg("reading the leader lease");
    let row = client
        .query_opt(
            "SELECT holder, url, epoch,
                    ceil(extract(epoch FROM expires_at - now()) * 1000)::bigint
             FROM leader_lease WHERE expires_at > now()",
            &[],
        )
        .map_err(&read)?;
    row.map(|r| {
        Ok(LeaderInfo {
            holder: r.try_get(0).map_err(&read)?,
            url: r.try_get(1).map_err(&read)?,
            epoch: r.try_get(2).map_err(&read)?,
            expires_in_ms: r.try_get(3).map_err(&read)?,
        })
    })
    .transpose()
}

/// A connection of its own for lease work beside the writer (renewals, followers asking who
/// leads), reopened when it breaks.
pub(crate) struct PgLeaseConn {
    target: Target,
    client: Option<Client>,
}

impl PgLeaseConn {
    pub(crate) fn open(target: &Target) -> Result<PgLeaseConn, StoreError> {
        Ok(PgLeaseConn {
            target: target.clone(),
            client: Some(target.connect()?),
        })
    }

    /// Runs `f`, once more on a new connection if the last one had died while idle (every
    /// lease operation is idempotent for its holder, so a repeat is harmless).
    pub(crate) fn run<T>(
        &mut self,
        mut f: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tries_left = 2;
        loop {
            let fresh = self.client.as_ref().is_none_or(|c| c.is_closed());
            if fresh {
                self.client = None;
                self.client = Some(self.target.connect()?);
            }
            let client = self.client.as_mut().expect("opened above");
            let result = f(client);
            tries_left -= 1;
            if !session_lost(&result, client) {
                return result;
            }
            self.client = None;
            if fresh || tries_left == 0 {
                return result;
            }
        }
    }
}

// ---- log queries --------------------------------------------------------------------------

/// Log queries on their own connections, opened on demand and reused.
#[derive(Clone)]
pub(crate) struct PgLogReader {
    target: Target,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl PgLogReader {
    fn with_client<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().expect("log reader pool").pop();
        let (mut client, pooled) = match idle {
            Some(c) if !c.is_closed() => (c, true),
            _ => (self.target.connect()?, false),
        };
        let mut result = f(&mut client);
        // A pooled connection may have died while idle (a server restart, a proxy's timeout);
        // that is only found out by using it. Reads are safe to repeat, so once on a fresh one.
        if pooled && session_lost(&result, &client) {
            client = self.target.connect()?;
            result = f(&mut client);
        }
        if !client.is_closed() && !session_lost(&result, &client) {
            let mut idle = self.idle.lock().expect("log reader pool");
            if idle.len() < READ_CONNECTIONS_MAX {
                idle.push(client);
            }
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
                 WHERE stream = $1 AND seq >= $2 AND timestamp >= $3 AND timestamp < $4
                 ORDER BY seq ASC LIMIT $5"
            }
            Direction::Backward => {
                "SELECT stream, seq, timestamp, ingestion, message FROM log_events
                 WHERE stream = $1 AND seq < $2 AND timestamp >= $3 AND timestamp < $4
                 ORDER BY seq DESC LIMIT $5"
            }
        };
        self.with_client(|client| {
            let read = pg("reading log events");
            let rows = client
                .query(
                    sql,
                    &[
                        &(stream as i64),
                        &(cursor.min(i64::MAX as u64) as i64),
                        &start_ms.unwrap_or(i64::MIN),
                        &end_ms.unwrap_or(i64::MAX),
                        &(limit.min(i64::MAX as usize) as i64),
                    ],
                )
                .map_err(&read)?;
            rows.iter().map(event_from_row).collect()
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
        let streams: Vec<i64> = streams.iter().map(|s| *s as i64).collect();
        let (ats, ast, asq) = filter_after(after);
        let start = start_ms.unwrap_or(i64::MIN);
        let end = end_ms.unwrap_or(i64::MAX);
        let scan = scan_max.min(i64::MAX as usize) as i64;
        self.with_client(|client| {
            let read = pg("filtering log events");
            // Streamed, so a page that fills early does not wait for `scan_max` rows to be
            // decoded.
            let params: [&(dyn postgres::types::ToSql + Sync); 7] =
                [&streams, &start, &end, &ats, &ast, &asq, &scan];
            let rows = client
                .query_raw(
                    "SELECT stream, seq, timestamp, ingestion, message FROM log_events
                     WHERE stream = ANY($1) AND timestamp >= $2 AND timestamp < $3
                       AND (timestamp, stream, seq) > ($4, $5, $6)
                     ORDER BY timestamp, stream, seq LIMIT $7",
                    params,
                )
                .map_err(&read)?;
            let rows = rows
                .iterator()
                .map(|r| r.map_err(&read).and_then(|r| event_from_row(&r)));
            filter_page(rows, limit, scan_max, keep)
        })
    }

    pub(crate) fn has_events(&self, stream: u64) -> Result<bool, StoreError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM log_events WHERE stream = $1 LIMIT 1",
                    &[&(stream as i64)],
                )
                .map_err(pg("reading log events"))?
                .is_some())
        })
    }
}

fn event_from_row(row: &Row) -> Result<StoredEvent, StoreError> {
    let read = pg("reading log events");
    let message: &[u8] = row.try_get(4).map_err(&read)?;
    Ok(StoredEvent {
        stream: row.try_get::<_, i64>(0).map_err(&read)? as u64,
        seq: row.try_get::<_, i64>(1).map_err(&read)? as u64,
        timestamp_ms: row.try_get(2).map_err(&read)?,
        ingestion_ms: row.try_get(3).map_err(&read)?,
        // Only ever written from a Rust String, so always UTF-8.
        message: String::from_utf8_lossy(message).into_owned(),
    })
}
