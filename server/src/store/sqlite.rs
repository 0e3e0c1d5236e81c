//! The SQLite store: one instance, zero setup, a single file. WAL mode with `synchronous=FULL`
//! so that a change reported stored survives a crash or power loss.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::{Backend, SearchPlan, StoreError, StoreResult};

/// Below this many full-text matches a catalog search looks the matches up and sorts them.
const SELECTIVE_MATCHES: i64 = 500;

/// The write connection's page cache, in KiB (SQLite's `cache_size` takes negative numbers as
/// KiB). SQLite's default of 2 MiB is far smaller than the pages one group commit of documents
/// dirties, so the writer spilled dirty pages to the WAL mid-transaction and read evicted ones
/// back: in a 10,000-dump import, 1.53 million page writes and 515,000 page reads, against 1.28
/// million and 240,000 with 64 MiB (BENCHMARKS.md, P5). SQLite fills it only as pages are used.
const WRITER_CACHE_SIZE: &str = "-65536";

/// Pages the WAL may hold before a commit copies them back into the database (SQLite's default
/// is 1,000). Documents land on pages all over their tables (their ids are random), so the same
/// page is written by many commits; checkpointing less often copies it back once for many of
/// them. With the cache above: 1.11 million page writes instead of 1.28, and 78,000 reads
/// instead of 240,000. The WAL then grows to about 40 MiB before it is reset.
const WAL_AUTOCHECKPOINT_PAGES: &str = "10000";

/// A store on SQLite.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers (and the session store).
    pub(crate) pool: SqlitePool,
    /// The one connection every write goes through. SQLite has one writer at a time; writers
    /// on several connections wait for its lock in its busy handler, which sleeps up to 100 ms
    /// between tries, so under a steady stream of writes the lock sat free while writers slept.
    /// Queued on one connection, the next writer starts the moment the last one commits.
    writer: SqlitePool,
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    /// SQLite has one writer at a time; transactions are already serialised.
    const FOR_UPDATE: &'static str = "";
    /// Write transactions take the write lock at once. A deferred transaction that reads first
    /// fails with SQLITE_BUSY, without waiting for the busy timeout, when it later tries to
    /// write while another connection holds the lock.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// Deletes the sessions whose record contains the bytes bound to `$1` (erasure).
    const DELETE_SESSIONS_CONTAINING: &'static str =
        "DELETE FROM tower_sessions WHERE instr(data, $1) > 0";

    /// Opens (creating if needed) the database file.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // A writer waits behind every write queued before it; a bulk import queues many.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(
                options
                    .pragma("cache_size", WRITER_CACHE_SIZE)
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
            )
            .await?;
        Ok(Self { pool, writer })
    }

    /// Where writes go (see the `writer` field).
    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool (for the session store).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/sqlite")
    }

    /// The FTS5 query for `terms`: every term, as a prefix. Terms are runs of letters and
    /// digits, so quoting them is enough to keep FTS5 syntax out.
    fn fts_query(terms: &[String]) -> String {
        terms
            .iter()
            .map(|t| format!("\"{t}\"*"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `selective`: few matches, so let SQLite look the matches up by rowid and sort them
    /// (its usual plan). Otherwise `+seq` stops it from driving the query from the match list,
    /// and it walks the sort-order index testing each row against the matches instead: 17 ms
    /// down to 3 ms for a word in a fifth of 100,000 courses.
    fn push_search(qb: &mut sqlx::QueryBuilder<'_, Sqlite>, terms: &[String], selective: bool) {
        qb.push(if selective { "seq" } else { "+seq" })
            .push(" IN (SELECT rowid FROM courses_fts WHERE courses_fts MATCH ")
            .push_bind(Self::fts_query(terms))
            .push(")");
    }

    /// Counts up to [`SELECTIVE_MATCHES`] matches: fewer, look them up and sort them; more,
    /// walk the sort-order index (see `push_search`). FTS5 tests a row only against the whole
    /// match list, so a bounded walk (PostgreSQL's plan) would build that list anyway.
    async fn search_plan(&self, terms: &[String], _limit: i64) -> StoreResult<SearchPlan> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT 1 FROM courses_fts WHERE courses_fts MATCH $1 LIMIT $2)",
        )
        .bind(Self::fts_query(terms))
        .bind(SELECTIVE_MATCHES)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(if count < SELECTIVE_MATCHES {
            SearchPlan::Matches
        } else {
            SearchPlan::Walk
        })
    }

    /// One instance only: the hub fans out in process, nothing to notify.
    async fn notify(
        &self,
        _tx: &mut sqlx::Transaction<'_, Sqlite>,
        _notes: &[(String, i64, &[u8])],
    ) -> StoreResult<()> {
        Ok(())
    }

    /// One instance only: events are handled in process.
    async fn broadcast_event(&self, _event: &str) -> StoreResult<()> {
        Ok(())
    }
}

super::common::impl_store!(SqliteStore, Sqlite);
