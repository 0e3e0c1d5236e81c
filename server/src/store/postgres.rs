//! The PostgreSQL store: production, one or many server instances. Cross-instance fan-out
//! rides on `NOTIFY` inside the write transaction, so a notification is sent exactly when the
//! change commits.

use std::time::Duration;

use base64::Engine;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::{Backend, SearchPlan, StoreError, StoreResult};

/// The channel other instances listen on for stored changes. Named for its payload's format
/// (several changes per notification, [`change_payloads`]): an instance of an older version,
/// during a rolling upgrade, listens on the old name and so never misreads a new payload.
pub const CHANGES_CHANNEL: &str = "learnsync_changes_v2";

/// The channel for instance-wide events (forced sync, catalog changes, disconnects).
pub const EVENTS_CHANNEL: &str = "learnsync_events";

/// PostgreSQL refuses a notification payload of 8000 bytes or more.
const MAX_PAYLOAD_BYTES: usize = 7_900;

/// The largest change that rides in a notification (base64 makes it 6,668 bytes); a larger one
/// is announced without its bytes and read by sequence number.
const MAX_NOTIFY_CHANGE_BYTES: usize = 5_000;

/// The notifications announcing one group commit's stored changes:
/// `<origin>\t<entry>\n<entry>…`, each entry `<doc>\t<seq>\t<base64 changes or empty>`
/// (empty when the change is too large to ride along: the listener reads it by sequence
/// number), as many entries per payload as fit under PostgreSQL's limit.
///
/// Why packed: every instance listens on the channel, this one too, and PostgreSQL has no way
/// to leave the sender out. One notification per change cost a listener wake-up, a message and
/// a parse per change on every instance, the sender's own included; packed, their number
/// follows the commits, not the changes. (At P1's 2,000 changes/s, where one writer's commits
/// hold a few changes each, no difference in CPU was measured: BENCHMARKS.md, 2026-12-04, fifth
/// session.)
pub(crate) fn change_payloads(origin: &str, notes: &[(String, i64, &[u8])]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for (doc, seq, changes) in notes {
        let data = if changes.len() <= MAX_NOTIFY_CHANGE_BYTES {
            base64::engine::general_purpose::STANDARD.encode(changes)
        } else {
            String::new()
        };
        let entry = format!("{doc}\t{seq}\t{data}");
        if !current.is_empty() && current.len() + 1 + entry.len() > MAX_PAYLOAD_BYTES {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(origin);
            current.push('\t');
        } else {
            current.push('\n');
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// The entries of a change notification after its origin (see [`change_payloads`]), each
/// `(doc, seq, base64 changes or empty)`; a malformed entry is skipped.
pub(crate) fn change_entries(rest: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    rest.split('\n').filter_map(|entry| {
        let mut parts = entry.splitn(3, '\t');
        Some((parts.next()?, parts.next()?, parts.next()?))
    })
}

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

    /// The group commit's stored changes, packed into as few notifications as fit (see
    /// [`change_payloads`]).
    async fn notify(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        notes: &[(String, i64, &[u8])],
    ) -> StoreResult<()> {
        if notes.is_empty() {
            return Ok(());
        }
        // One statement for the whole group commit: a round trip per note cost as much as the
        // change rows themselves.
        let payloads = change_payloads(&self.origin, notes);
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

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::{MAX_NOTIFY_CHANGE_BYTES, change_entries, change_payloads};

    #[test]
    fn a_group_commit_packs_into_few_payloads_that_unpack_to_every_change_in_order() {
        let small = vec![7u8; 300];
        let large = vec![9u8; MAX_NOTIFY_CHANGE_BYTES + 1];
        let notes: Vec<(String, i64, &[u8])> = (0..200)
            .map(|i| {
                let changes = match i % 50 {
                    0 | 1 => large.as_slice(),
                    _ => small.as_slice(),
                };
                (format!("doc{i}"), 1_000 + i as i64, changes)
            })
            .collect();
        let payloads = change_payloads("instance-a", &notes);
        // 200 entries of about 420 bytes: 18 to a payload.
        assert!(
            payloads.len() > 1 && payloads.len() <= 12,
            "{} payloads",
            payloads.len()
        );
        let mut seen = Vec::new();
        for p in &payloads {
            assert!(
                p.len() < 8000,
                "PostgreSQL refuses a payload of {} bytes",
                p.len()
            );
            let (origin, rest) = p.split_once('\t').expect("origin");
            assert_eq!(origin, "instance-a");
            for (doc, seq, data) in change_entries(rest) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64");
                seen.push((doc.to_string(), seq.parse::<i64>().expect("seq"), bytes));
            }
        }
        assert_eq!(seen.len(), notes.len());
        for ((doc, seq, bytes), (want_doc, want_seq, want)) in seen.iter().zip(&notes) {
            assert_eq!((doc, seq), (want_doc, want_seq));
            // Too large: empty, so the listener reads it by sequence number.
            let expected: &[u8] = if want.len() <= MAX_NOTIFY_CHANGE_BYTES {
                want
            } else {
                &[]
            };
            assert_eq!(bytes.as_slice(), expected, "{doc}");
        }
    }

    #[test]
    fn a_malformed_entry_is_skipped_and_the_rest_still_read() {
        let entries: Vec<_> = change_entries("d1\t1\tAAE=\ngarbage\nd2\t2\t").collect();
        assert_eq!(entries, vec![("d1", "1", "AAE="), ("d2", "2", "")]);
    }
}
