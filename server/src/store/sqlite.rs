//! The SQLite store: one instance, zero setup, a single file. WAL mode with `synchronous=FULL`
//! so that a change reported stored survives a crash or power loss.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::{Backend, StoreError, StoreResult};

/// A store on SQLite.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    /// SQLite has one writer at a time; transactions are already serialised.
    const FOR_UPDATE: &'static str = "";

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
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The pool (for the session store).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/sqlite")
    }

    fn push_search(qb: &mut sqlx::QueryBuilder<'_, Sqlite>, terms: &[String]) {
        // Terms are runs of letters and digits, so quoting them is enough to keep FTS5 syntax out.
        let query = terms
            .iter()
            .map(|t| format!("\"{t}\"*"))
            .collect::<Vec<_>>()
            .join(" AND ");
        qb.push("seq IN (SELECT rowid FROM courses_fts WHERE courses_fts MATCH ")
            .push_bind(query)
            .push(")");
    }

    /// SQLite always starts a search from the FTS5 index (its planner drives the `IN` from
    /// the match list), so there is no plan to choose.
    async fn search_is_selective(&self, _terms: &[String]) -> StoreResult<bool> {
        Ok(false)
    }

    /// One instance only: the hub fans out in process, nothing to notify.
    async fn notify(
        &self,
        _tx: &mut sqlx::Transaction<'_, Sqlite>,
        _notes: &[(String, i64, Option<&Vec<u8>>)],
    ) -> StoreResult<()> {
        Ok(())
    }

    /// One instance only: events are handled in process.
    async fn broadcast_event(&self, _event: &str) -> StoreResult<()> {
        Ok(())
    }
}

super::common::impl_store!(SqliteStore, Sqlite);
