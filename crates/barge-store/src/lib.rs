//! Barge's durable store. It owns the stored form of the state and nothing else: it never
//! decides anything, it writes what the core changed and reads it back.
//!
//! Two backends behind one `Store`: SQLite under a data directory (`Store::open`, for
//! `barge up` and a single server) and PostgreSQL (`Store::open_postgres`, for several servers
//! on one database). Both hold the same rows: every resource is one row of
//! `entities(kind, key, body)` holding its JSON, so adding a field never needs a migration;
//! log events, which are many and never change, have their own table keyed by (stream number,
//! sequence). `commit` writes one batch in one durable transaction; `load` reads everything
//! back and rebuilds the indexes.
//!
//! Several servers on one PostgreSQL database elect a leader with a lease held in the database
//! (`try_acquire_lease`, `renew_lease`, `release_lease`, `current_leader`). Once a store holds
//! a lease, each of its commits checks, inside the same transaction, that the lease is still
//! its own and unexpired, and is refused with `StoreError::Fenced` otherwise: a deposed leader
//! cannot write. SQLite's lease is trivially held (one file, one server).
//!
//! Every call blocks: call from a plain thread or `spawn_blocking`. The PostgreSQL client in
//! particular panics if called from inside an async task.

mod codec;
mod pg;
mod sqlite;

use std::path::{Path, PathBuf};

use barge_core::arn::Identity;
use barge_core::command::Changes;
use barge_core::State;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL failed {what}: {}", chain(.source))]
    Postgres {
        what: &'static str,
        source: postgres::Error,
    },
    #[error("cannot connect to PostgreSQL at {target}: {}; check --database-url and that the server is running and reachable", chain(.source))]
    Connect {
        target: String,
        source: postgres::Error,
    },
    #[error("the database URL is not valid ({}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE", chain(.source))]
    DatabaseUrl { source: postgres::Error },
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
    #[error("this server is no longer the leader ({why}); the commit of lease holder {holder:?} at epoch {epoch} was refused and nothing was written: stop writing, and load the state again before writing if this server becomes leader again")]
    Fenced {
        holder: String,
        epoch: i64,
        why: String,
    },
    #[error(
        "a leader lease of {ttl_ms} ms is outside 1..={max_ms} ms; choose a TTL in that range"
    )]
    LeaseTtl { ttl_ms: u64, max_ms: u64 },
}

/// An error and its causes, one after the other: the PostgreSQL client's own message is only
/// a category ("db error"); the server's words are in the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The longest leader lease: a leader that dies unannounced stalls writes for up to one TTL,
/// so a longer one is a misconfiguration, not a choice.
pub const LEASE_TTL_MS_MAX: u64 = 10 * 60 * 1000;

/// One leadership tenure: who holds the lease and its epoch, the fencing token. The epoch goes
/// up on every new tenure (another holder, or the same holder after its lease lapsed), so a
/// store that commits with an older epoch is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
}

/// Who leads now, for followers to forward requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    pub holder: String,
    /// The URL the leader advertised when it took the lease.
    pub url: String,
    pub epoch: i64,
    /// Time left on the lease by the database's clock (always > 0; SQLite's: `i64::MAX`).
    pub expires_in_ms: i64,
}

fn check_ttl(ttl_ms: u64) -> Result<(), StoreError> {
    if ttl_ms == 0 || ttl_ms > LEASE_TTL_MS_MAX {
        return Err(StoreError::LeaseTtl {
            ttl_ms,
            max_ms: LEASE_TTL_MS_MAX,
        });
    }
    Ok(())
}

/// The durable store: one backend, chosen at open.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<pg::PgStore>),
}

impl Store {
    /// Opens (creating when needed) the SQLite database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(data_dir)?),
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:pass@host:port/db`, or
    /// libpq's `key=value` form), creating or migrating its tables. Without TLS.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(Box::new(pg::PgStore::open(url)?)),
        })
    }

    /// "sqlite" or "postgres", for messages.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether this open created the database (Barge's first start on it).
    pub fn is_new(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(s) => s.is_new(),
            Backend::Postgres(s) => s.is_new(),
        }
    }

    /// Reads the whole state back. May be called again at any time, e.g. by a server that just
    /// became leader, to see everything the previous leader committed.
    pub fn load(&self, identity: Identity) -> Result<State, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.load(identity),
            Backend::Postgres(s) => s.load(identity),
        }
    }

    /// Writes everything `changes` names, as found in `state`, in one durable transaction:
    /// each dirty key's entity, or a delete when the state no longer has it, and the new log
    /// events. Once this store holds a lease, the commit is refused with `Fenced` (and writes
    /// nothing) unless the lease is still its own and unexpired.
    pub fn commit(&mut self, state: &State, changes: &Changes) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.commit(state, changes),
            Backend::Postgres(s) => s.commit(state, changes),
        }
    }

    /// A pool of read connections for log queries.
    pub fn reader(&self) -> Result<LogReader, StoreError> {
        Ok(LogReader {
            backend: match &self.backend {
                Backend::Sqlite(s) => ReaderBackend::Sqlite(s.reader()),
                Backend::Postgres(s) => ReaderBackend::Postgres(Box::new(s.reader())),
            },
        })
    }

    /// Takes the leader lease for `ttl_ms` if it is free, expired or already `holder`'s, and
    /// from then on fences this store's commits with it. `holder` must be unique to this
    /// process run (a fresh id per start); `url` is where followers forward requests. None:
    /// another holder's lease is live. A new tenure gets a higher epoch than any before it;
    /// after it, `load` before writing (the previous leader may have written).
    pub fn try_acquire_lease(
        &mut self,
        holder: &str,
        url: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        check_ttl(ttl_ms)?;
        match &mut self.backend {
            Backend::Sqlite(s) => Ok(Some(sqlite::acquire(&s.leader(), holder, url))),
            Backend::Postgres(s) => {
                let lease = s.with_client(|c| pg::try_acquire(c, holder, url, ttl_ms))?;
                if let Some(lease) = &lease {
                    s.set_fence(lease.clone());
                }
                Ok(lease)
            }
        }
    }

    /// Extends a live lease to `ttl_ms` from now. False: the lease lapsed or another holder
    /// took over; this tenure is over (its commits are refused from now on).
    pub fn renew_lease(&self, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError> {
        check_ttl(ttl_ms)?;
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(s) => s.with_client(|c| pg::renew(c, lease, ttl_ms)),
        }
    }

    /// Gives the lease up now, so another server can take over without waiting for it to
    /// expire. This store's later commits are refused. False: it was no longer held.
    pub fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(sqlite::release(&s.leader(), lease)),
            Backend::Postgres(s) => s.with_client(|c| pg::release(c, lease)),
        }
    }

    /// Who holds a live lease now; None when nobody does (never taken, released, expired).
    pub fn current_leader(&self) -> Result<Option<LeaderInfo>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(sqlite::current_leader(&s.leader())),
            Backend::Postgres(s) => s.with_client(pg::current_leader),
        }
    }

    /// The lease this store's commits are fenced with, if any.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s) => s.fence(),
        }
    }

    /// Fences this store's commits with a lease taken through a `LeaseKeeper`.
    pub fn fence_with(&mut self, lease: Lease) {
        match &mut self.backend {
            Backend::Sqlite(_) => {}
            Backend::Postgres(s) => s.set_fence(lease),
        }
    }

    /// A handle for lease work on its own connection (PostgreSQL), beside a writer that owns
    /// this store: a renewal thread, or a follower asking who leads.
    pub fn lease_keeper(&self) -> Result<LeaseKeeper, StoreError> {
        Ok(LeaseKeeper {
            backend: match &self.backend {
                Backend::Sqlite(s) => KeeperBackend::Sqlite(s.leader()),
                Backend::Postgres(s) => {
                    KeeperBackend::Postgres(Box::new(pg::PgLeaseConn::open(s.target())?))
                }
            },
        })
    }
}

/// The lease operations of `Store`, on a connection of their own. A lease taken here fences
/// nothing until given to the writer's store with `Store::fence_with`.
pub struct LeaseKeeper {
    backend: KeeperBackend,
}

enum KeeperBackend {
    Sqlite(sqlite::SqliteLeader),
    Postgres(Box<pg::PgLeaseConn>),
}

impl LeaseKeeper {
    /// As `Store::try_acquire_lease`, without fencing any store.
    pub fn try_acquire(
        &mut self,
        holder: &str,
        url: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        check_ttl(ttl_ms)?;
        match &mut self.backend {
            KeeperBackend::Sqlite(l) => Ok(Some(sqlite::acquire(l, holder, url))),
            KeeperBackend::Postgres(c) => c.run(|c| pg::try_acquire(c, holder, url, ttl_ms)),
        }
    }

    /// As `Store::renew_lease`.
    pub fn renew(&mut self, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError> {
        check_ttl(ttl_ms)?;
        match &mut self.backend {
            KeeperBackend::Sqlite(_) => Ok(true),
            KeeperBackend::Postgres(c) => c.run(|c| pg::renew(c, lease, ttl_ms)),
        }
    }

    /// As `Store::release_lease`.
    pub fn release(&mut self, lease: &Lease) -> Result<bool, StoreError> {
        match &mut self.backend {
            KeeperBackend::Sqlite(l) => Ok(sqlite::release(l, lease)),
            KeeperBackend::Postgres(c) => c.run(|c| pg::release(c, lease)),
        }
    }

    /// As `Store::current_leader`.
    pub fn current_leader(&mut self) -> Result<Option<LeaderInfo>, StoreError> {
        match &mut self.backend {
            KeeperBackend::Sqlite(l) => Ok(sqlite::current_leader(l)),
            KeeperBackend::Postgres(c) => c.run(pg::current_leader),
        }
    }
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
    backend: ReaderBackend,
}

#[derive(Clone)]
enum ReaderBackend {
    Sqlite(sqlite::SqliteLogReader),
    Postgres(Box<pg::PgLogReader>),
}

impl LogReader {
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
        match &self.backend {
            ReaderBackend::Sqlite(r) => {
                r.stream_events(stream, cursor, direction, start_ms, end_ms, limit)
            }
            ReaderBackend::Postgres(r) => {
                r.stream_events(stream, cursor, direction, start_ms, end_ms, limit)
            }
        }
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
        match &self.backend {
            ReaderBackend::Sqlite(r) => {
                r.filter_events(streams, after, start_ms, end_ms, limit, scan_max, keep)
            }
            ReaderBackend::Postgres(r) => {
                r.filter_events(streams, after, start_ms, end_ms, limit, scan_max, keep)
            }
        }
    }

    /// Whether any event exists in the stream (used by tests and diagnostics).
    pub fn has_events(&self, stream: u64) -> Result<bool, StoreError> {
        match &self.backend {
            ReaderBackend::Sqlite(r) => r.has_events(stream),
            ReaderBackend::Postgres(r) => r.has_events(stream),
        }
    }
}
