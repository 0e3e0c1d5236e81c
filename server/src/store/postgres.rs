//! The PostgreSQL store: production, one or many server instances. Cross-instance fan-out
//! rides on `NOTIFY` inside the write transaction, so a notification is sent exactly when the
//! change commits.

use std::time::Duration;

use base64::Engine;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::{Backend, StoreError, StoreResult};

/// The channel other instances listen on for stored changes.
pub const CHANGES_CHANNEL: &str = "learnsync_changes";
/// The channel for instance-wide events (forced sync, catalog changes, disconnects).
pub const EVENTS_CHANNEL: &str = "learnsync_events";

/// Below this many full-text matches a catalog search sorts the matches instead of walking the
/// sort-order index (see `search_is_selective`).
const SELECTIVE_MATCHES: i64 = 500;

/// A store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// This instance's id, written into notifications so it can skip its own.
    origin: String,
}

impl PgStore {
    const BACKEND: Backend = Backend::Postgres;
    /// Serialises writers and compaction of one document.
    const FOR_UPDATE: &'static str = "FOR UPDATE";
    /// Write transactions start plainly; rows are locked with `FOR_UPDATE` where needed.
    const BEGIN_WRITE: &'static str = "BEGIN";

    /// Deletes the sessions whose record contains the bytes bound to `$1` (erasure).
    const DELETE_SESSIONS_CONTAINING: &'static str =
        "DELETE FROM tower_sessions.session WHERE position($1::bytea in data) > 0";

    /// Connects a pool. Connections are checked before use so that a database that went away
    /// and came back is picked up again.
    pub async fn connect(url: &str, max_connections: u32, origin: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Invalid(format!("DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            origin: origin.to_string(),
        })
    }

    /// The pool (for the session store and the change listener).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where writes go: the one pool (PostgreSQL has row locks, writers run side by side).
    fn writes(&self) -> &PgPool {
        &self.pool
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/postgres")
    }

    /// Every term, as a prefix. The plan is chosen by the ORDER BY (see
    /// `search_is_selective`), so `_selective` changes nothing here.
    fn push_search(qb: &mut sqlx::QueryBuilder<'_, Postgres>, terms: &[String], _selective: bool) {
        let query = terms
            .iter()
            .map(|t| format!("{t}:*"))
            .collect::<Vec<_>>()
            .join(" & ");
        qb.push("search @@ to_tsquery('simple', ")
            .push_bind(query)
            .push(")");
    }

    /// Whether a search matches few enough courses that the catalog query should start from
    /// the full-text index (find the matches, then sort them) instead of walking the sort-order
    /// index and testing every row. PostgreSQL's planner cannot estimate prefix searches well:
    /// left alone it walks the index for rare terms (a typo, "zzz", scans the whole table:
    /// ~50 ms at 100,000 courses) and starts from the full-text index for common ones (~60 ms
    /// for "a"). Counting up to [`SELECTIVE_MATCHES`] matches on the GIN index costs a few
    /// milliseconds at most and picks the right plan for both.
    async fn search_is_selective(&self, terms: &[String]) -> StoreResult<bool> {
        let mut qb = sqlx::QueryBuilder::<Postgres>::new(
            "SELECT count(*) FROM (SELECT 1 FROM courses WHERE ",
        );
        Self::push_search(&mut qb, terms, true);
        qb.push(" LIMIT ")
            .push_bind(SELECTIVE_MATCHES)
            .push(") AS matches");
        let (count,): (i64,) = qb
            .build_query_as()
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(count < SELECTIVE_MATCHES)
    }

    /// One NOTIFY per stored change: `<origin>\t<doc>\t<seq>\t<base64 changes or empty>`.
    async fn notify(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        notes: &[(String, i64, Option<&Vec<u8>>)],
    ) -> StoreResult<()> {
        if notes.is_empty() {
            return Ok(());
        }
        // One statement for the whole group commit: a round trip per note cost as much as the
        // change rows themselves.
        let payloads: Vec<String> = notes
            .iter()
            .map(|(doc, seq, changes)| {
                let data = changes
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
                    .unwrap_or_default();
                format!("{}\t{doc}\t{seq}\t{data}", self.origin)
            })
            .collect();
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS t(payload)")
            .bind(CHANGES_CHANNEL)
            .bind(&payloads)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn broadcast_event(&self, event: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(format!("{}\t{event}", self.origin))
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }
}

super::common::impl_store!(PgStore, Postgres);
