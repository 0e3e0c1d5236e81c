//! The PostgreSQL store: production, one or many server instances. Cross-instance fan-out
//! rides on `NOTIFY` inside the write transaction, so a notification is sent exactly when the
//! change commits.

use std::time::Duration;

use base64::Engine;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::{Backend, SearchPlan, StoreError, StoreResult};

/// The channel other instances listen on for stored changes.
pub const CHANGES_CHANNEL: &str = "learnsync_changes";
/// The channel for instance-wide events (forced sync, catalog changes, disconnects).
pub const EVENTS_CHANNEL: &str = "learnsync_events";

/// How many rows of the catalog, in the order asked for, a search tests one by one per row of
/// its page before it looks its matches up instead (see `search_plan`): when at least 1% of
/// the catalog matches, the walk finds the page. Each row costs about a microsecond.
const WALK_ROWS_PER_MATCH: i64 = 100;

/// The longest prefix `search_prefixes` holds of a word (migration 0003).
const PREFIX_CHARS: usize = 32;

/// The notifications of a PostgreSQL store, for the change listener.
#[derive(Clone)]
pub struct ChangeFeed {
    /// Where to `LISTEN`.
    pub pool: PgPool,
    /// The origin of this store's own notifications, which the listener skips. Taken from the
    /// store rather than passed beside it: the import CLI once named its store and its engine
    /// differently and applied every change it stored a second time, as another instance's.
    pub origin: String,
}

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

    /// Where other instances' changes arrive, with the origin this store stamps on its own
    /// notifications: the listener skips exactly what this store sent.
    pub fn change_feed(&self) -> ChangeFeed {
        ChangeFeed {
            pool: self.pool.clone(),
            origin: self.origin.clone(),
        }
    }

    /// Where writes go: the one pool (PostgreSQL has row locks, writers run side by side).
    fn writes(&self) -> &PgPool {
        &self.pool
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/postgres")
    }

    /// Every term, as a prefix. `selective` (the matches are looked up): through the index of
    /// every word's prefixes (`search_prefixes`, migration 0003), where a prefix is one exact
    /// lexeme, then checked on the words themselves; otherwise the words are tested row by
    /// row. Both give the same matches: the check is what decides.
    fn push_search(qb: &mut sqlx::QueryBuilder<'_, Postgres>, terms: &[String], selective: bool) {
        if selective {
            let lexemes = terms
                .iter()
                .map(|t| t.chars().take(PREFIX_CHARS).collect::<String>())
                .collect::<Vec<_>>()
                .join(" & ");
            qb.push("search_prefixes @@ to_tsquery('simple', ")
                .push_bind(lexemes)
                .push(") AND ");
        }
        let query = terms
            .iter()
            .map(|t| format!("{t}:*"))
            .collect::<Vec<_>>()
            .join(" & ");
        qb.push("search @@ to_tsquery('simple', ")
            .push_bind(query)
            .push(")");
    }

    /// Always a bounded walk, then the index if the walk did not fill the page. No estimate is
    /// needed: the planner's are wrong for prefixes, and counting the matches first cost as
    /// much as the query (5–10 ms for `1:*` over 100,000 courses), where the walk finds a page
    /// of "algebra 1" in about a millisecond and the index a rare one in about as much.
    async fn search_plan(&self, _terms: &[String], limit: i64) -> StoreResult<SearchPlan> {
        Ok(SearchPlan::WalkFirst((limit + 1) * WALK_ROWS_PER_MATCH))
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
