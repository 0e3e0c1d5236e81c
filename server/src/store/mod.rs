//! Storage: one [`Store`] trait, two implementations ([`postgres::PgStore`] for production and
//! several instances, [`sqlite::SqliteStore`] for one box with zero setup), one conformance
//! suite (`tests/tests/store_conformance.rs`) run against both.
//!
//! Both schemas use the same portable column types (text ids, epoch-millisecond BIGINTs, JSON
//! as text), so most queries are written once, in `common.rs`, and compiled for each backend;
//! only full-text search, connection setup and cross-instance notifications differ.

mod common;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sync_core::docs::projection::Projection;

use crate::model::{
    ApiToken, Course, CourseKind, CourseStatus, Device, Enrollment, Lesson, LogEntry, LogLevel,
    MigrationRun, Page, Preferences, Report, ReportStatus, Role, User,
};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint: the thing exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The stored data cannot be read (a bug or manual tampering).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A bad cursor or query value reached the store.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database could not be reached or failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether this looks like the database being unreachable (as opposed to a query bug).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::WorkerCrashed
            )
        ) || matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.code().is_some_and(is_unavailable_code))
    }
}

/// SQLSTATE codes meaning "the database cannot serve us right now" rather than "this query is
/// wrong": connection exceptions (08), operator intervention such as a shutdown or a terminated
/// backend (57), insufficient resources such as too many connections (53), and 55000, which
/// PostgreSQL answers to a connection attempt while the database does not allow connections.
fn is_unavailable_code(code: std::borrow::Cow<'_, str>) -> bool {
    code.starts_with("08") || code.starts_with("57") || code.starts_with("53") || code == "55000"
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A user with the fields the API never shows.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// The public part.
    pub user: User,
    /// argon2id PHC string; `None` for placeholder accounts.
    pub password_hash: Option<String>,
    /// The user's secret document namespace.
    pub doc_seed: [u8; 16],
    /// The user's forced-sync epoch.
    pub sync_epoch: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Id (UUID).
    pub id: String,
    /// Lowercased email, or `None` for placeholders.
    pub email: Option<String>,
    /// Display name.
    pub display_name: String,
    /// argon2id hash.
    pub password_hash: Option<String>,
    /// Role.
    pub role: Role,
    /// Old app's user id.
    pub legacy_id: Option<String>,
    /// Random document namespace.
    pub doc_seed: [u8; 16],
    /// Creation time (ms).
    pub now: i64,
}

/// Changes to a user (admin actions, invitations of placeholders).
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New role.
    pub role: Option<Role>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// New display name.
    pub display_name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New password hash.
    pub password_hash: Option<String>,
}

/// Filters for the admin user list.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Only this role.
    pub role: Option<Role>,
    /// Substring of email or display name.
    pub q: Option<String>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size (1–100).
    pub limit: u32,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Token id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// sha256 hex of the secret.
    pub token_hash: String,
    /// Now (ms).
    pub now: i64,
}

/// A catalog entry to create.
#[derive(Debug, Clone)]
pub struct NewCourse {
    /// Id.
    pub id: String,
    /// Course or subject.
    pub kind: CourseKind,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: Option<String>,
    /// Level.
    pub level: Option<String>,
    /// Status.
    pub status: CourseStatus,
    /// Author.
    pub author_id: Option<String>,
    /// Lessons.
    pub lessons: Vec<Lesson>,
    /// Unmapped legacy fields.
    pub extra: Json,
    /// Created (ms).
    pub created_at: i64,
    /// Now (ms).
    pub now: i64,
}

/// Changes to a catalog entry; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CoursePatch {
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Category (`Some(None)` clears it).
    pub category: Option<Option<String>>,
    /// Level (`Some(None)` clears it).
    pub level: Option<Option<String>>,
    /// Status.
    pub status: Option<CourseStatus>,
    /// Lessons.
    pub lessons: Option<Vec<Lesson>>,
}

/// Which catalog entries a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Published only (anonymous users and learners).
    Published,
    /// Published, plus everything by this author (teachers).
    PublishedOrAuthor(String),
    /// Everything (admins).
    All,
}

/// Sort orders of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CourseSort {
    /// Newest first (default).
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// Title A–Z.
    Title,
    /// Most recently updated first.
    RecentlyUpdated,
}

impl CourseSort {
    /// Parses the `sort` query parameter.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "-created_at" | "newest" => Some(Self::NewestFirst),
            "created_at" | "oldest" => Some(Self::OldestFirst),
            "title" => Some(Self::Title),
            "-updated_at" | "updated" => Some(Self::RecentlyUpdated),
            _ => None,
        }
    }
}

/// A catalog query.
#[derive(Debug, Clone)]
pub struct CourseQuery {
    /// Full-text search: every word must match (prefix match).
    pub q: Option<String>,
    /// Kind filter.
    pub kind: Option<CourseKind>,
    /// Category filter.
    pub category: Option<String>,
    /// Level filter.
    pub level: Option<String>,
    /// Status filter (within what `visibility` allows).
    pub status: Option<CourseStatus>,
    /// Author filter.
    pub author: Option<String>,
    /// What the reader may see.
    pub visibility: Visibility,
    /// Order.
    pub sort: CourseSort,
    /// Opaque cursor.
    pub cursor: Option<String>,
    /// Page size (1–100).
    pub limit: u32,
}

/// A report to file.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// Id.
    pub id: String,
    /// Course.
    pub course_id: String,
    /// Reporter.
    pub reporter_id: Option<String>,
    /// Reason.
    pub reason: String,
    /// Details.
    pub details: Option<String>,
    /// Initial status (legacy reports may arrive resolved).
    pub status: ReportStatus,
    /// Moderator note.
    pub note: Option<String>,
    /// Moderator.
    pub resolved_by: Option<String>,
    /// Resolved at (ms).
    pub resolved_at: Option<i64>,
    /// Legacy id (for idempotent import).
    pub legacy_id: Option<String>,
    /// Unmapped legacy fields.
    pub extra: Json,
    /// Created (ms).
    pub created_at: i64,
}

/// Moderation queue filters.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Status.
    pub status: Option<ReportStatus>,
    /// Course.
    pub course_id: Option<String>,
    /// Reporter.
    pub reporter_id: Option<String>,
    /// Cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A log entry to write.
#[derive(Debug, Clone)]
pub struct NewLog {
    /// Severity.
    pub level: LogLevel,
    /// Source.
    pub source: String,
    /// Message.
    pub message: String,
    /// Details.
    pub context: Option<Json>,
    /// User concerned.
    pub user_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Stable key of an imported legacy entry (re-imports insert nothing).
    pub legacy_key: Option<String>,
    /// When (ms).
    pub created_at: i64,
}

/// System log filters.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Severity.
    pub level: Option<LogLevel>,
    /// Source.
    pub source: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// From (ms, inclusive).
    pub from: Option<i64>,
    /// To (ms, exclusive).
    pub to: Option<i64>,
    /// Cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A document as storage holds it.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    /// Owner.
    pub owner_id: String,
    /// Kind (`preferences`, `learning`, `course`, `other`).
    pub kind: String,
    /// Course id of course documents.
    pub course_id: Option<String>,
    /// The compacted snapshot, then incremental chunks in order.
    pub chunks: Vec<Vec<u8>>,
    /// Persisted sync states (peer storage id, state).
    pub sync_states: Vec<(String, Vec<u8>)>,
}

/// One document write of a group commit.
#[derive(Debug, Clone)]
pub struct DocWrite {
    /// Document id.
    pub doc_id: String,
    /// Owner (must match the stored owner, if any).
    pub owner_id: String,
    /// Kind, for a new document.
    pub kind: String,
    /// Course id, for a new course document.
    pub course_id: Option<String>,
    /// Change chunks to append.
    pub changes: Vec<u8>,
    /// Projection rows that changed.
    pub projection: Option<Projection>,
    /// The writer believes the document has no row yet (`StoreWrite::likely_new`): the
    /// group commit inserts its row first and skips looking for it. Correct either way; a
    /// wrong hint costs one more statement.
    pub likely_new: bool,
}

/// What happened to one write of a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored with this change sequence number.
    Stored {
        /// The change row's sequence number.
        seq: i64,
        /// Change rows now waiting for compaction.
        pending_changes: i64,
    },
    /// Refused: the document belongs to someone else, or the owner has too many documents.
    Rejected(String),
}

/// A document of a user, for `GET /api/sync/documents` and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// Document id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Course id.
    pub course_id: Option<String>,
}

/// A persisted per-peer sync state.
#[derive(Debug, Clone)]
pub struct SyncStateRow {
    /// Document.
    pub doc_id: String,
    /// Peer storage id.
    pub storage_id: String,
    /// Encoded state.
    pub state: Vec<u8>,
}

/// What an erasure removed, in rows: the admin's answer and the audit entry (which holds
/// these counts and a pseudonym, never the user's data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErasedCounts {
    /// Synced documents (their change rows and sync states went with them).
    pub documents: i64,
    /// Change rows of those documents.
    pub document_changes: i64,
    /// Enrollment projection rows.
    pub enrollments: i64,
    /// Preference projection rows.
    pub preferences: i64,
    /// API tokens.
    pub api_tokens: i64,
    /// Browser sessions.
    pub sessions: i64,
    /// Course reports the user filed (their text is the user's).
    pub reports: i64,
    /// Log entries about the user (client error reports, imported logs).
    pub logs: i64,
    /// Audit entries the user wrote as an admin: kept, their actor replaced by the pseudonym.
    pub audit_entries_pseudonymised: i64,
    /// Browser first-run imports of the user's own dump.
    pub import_runs: i64,
    /// Rows of connected devices.
    pub devices: i64,
}

/// Counts for the admin analytics.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CourseStats {
    /// Course id.
    pub course_id: String,
    /// Course title, if the course is in the catalog.
    pub title: Option<String>,
    /// Enrollments (any status).
    pub enrollments: i64,
    /// Active enrollments.
    pub active: i64,
    /// Completed enrollments.
    pub completed: i64,
    /// Average progress of enrollments that are not unenrolled.
    pub average_progress: f64,
}

/// One point of a daily series.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DailyCount {
    /// The day (UTC), `YYYY-MM-DD`.
    pub day: String,
    /// The count.
    pub count: i64,
}

/// The storage interface. Object safe: the server holds an `Arc<dyn Store>`.
///
/// Every method is one transaction unless it says otherwise; methods that take `now` use it
/// for the rows they write.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- lifecycle ------------------------------------------------------------------------
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// A trivial query: is the database reachable?
    async fn ping(&self) -> StoreResult<()>;
    /// Reads a server setting.
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>>;
    /// Writes a server setting.
    async fn meta_set(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Returns the stored value, or stores and returns `value` if there is none (race-free).
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    // ---- users ----------------------------------------------------------------------------
    /// Creates a user. `Conflict` if the email or legacy id is taken.
    async fn create_user(&self, new: &NewUser) -> StoreResult<UserRecord>;
    /// A user by id.
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    /// A user by (lowercased) email.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    /// A user by legacy id.
    async fn user_by_legacy_id(&self, legacy_id: &str) -> StoreResult<Option<UserRecord>>;
    /// The user with this legacy id, creating a passwordless placeholder if there is none.
    /// Returns whether it was created. Safe against concurrent imports.
    async fn ensure_legacy_user(&self, new: &NewUser) -> StoreResult<(UserRecord, bool)>;
    /// The users with these legacy ids (those that exist), in one round trip per few hundred
    /// ids: a bulk import looks up a whole chunk of dumps' users at once.
    async fn users_by_legacy_ids(&self, legacy_ids: &[String]) -> StoreResult<Vec<UserRecord>>;
    /// [`Store::ensure_legacy_user`] for many placeholders in one transaction: the user of
    /// each legacy id, and whether this call created it. Safe against concurrent imports.
    async fn ensure_legacy_users(&self, new: &[NewUser]) -> StoreResult<Vec<(UserRecord, bool)>>;
    /// Admin list of users, newest first.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<UserRecord>>;
    /// Changes a user. `NotFound` if there is no such user; `Conflict` on a taken email.
    async fn update_user(&self, id: &str, patch: &UserPatch, now: i64) -> StoreResult<UserRecord>;
    /// Deletes a user and everything that cascades from it. Returns whether it existed.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    /// Erases a user and everything held about them, in ONE transaction: documents (with
    /// their changes and sync states), projection rows, tokens, sessions, reports they filed,
    /// their log entries, their own browser imports, device rows and the user row. Audit
    /// entries they wrote as an admin are kept with `subject` (a pseudonym) as their actor,
    /// and one audit entry `user erased` is written with `subject`, the counts and `actor_id`.
    /// Rows that only point at the user (courses they wrote, reports they moderated, imports
    /// they ran as an admin) are kept and unlinked. `None` if there is no such user.
    async fn erase_user(
        &self,
        user_id: &str,
        subject: &str,
        actor_id: Option<&str>,
        now: i64,
    ) -> StoreResult<Option<ErasedCounts>>;
    /// Bumps the forced-sync epoch of one user, or the global one; returns the new value.
    async fn bump_sync_epoch(&self, user_id: Option<&str>) -> StoreResult<i64>;
    /// The global forced-sync epoch.
    async fn global_sync_epoch(&self) -> StoreResult<i64>;

    // ---- API tokens -----------------------------------------------------------------------
    /// Stores a token.
    async fn create_token(&self, token: &NewToken) -> StoreResult<ApiToken>;
    /// The live token with this hash and its user; records the use.
    async fn token_user(&self, token_hash: &str, now: i64) -> StoreResult<Option<UserRecord>>;
    /// A user's tokens, newest first.
    async fn list_tokens(&self, user_id: &str) -> StoreResult<Vec<ApiToken>>;
    /// Revokes one of a user's tokens. Returns whether a live token was revoked.
    async fn revoke_token(&self, user_id: &str, token_id: &str, now: i64) -> StoreResult<bool>;

    // ---- courses --------------------------------------------------------------------------
    /// Creates a catalog entry. `Conflict` if the id exists.
    async fn create_course(&self, course: &NewCourse) -> StoreResult<Course>;
    /// Inserts a legacy catalog entry unless its id exists. Returns whether it was inserted.
    async fn insert_course_if_absent(&self, course: &NewCourse) -> StoreResult<bool>;
    /// A catalog entry by id.
    async fn course(&self, id: &str) -> StoreResult<Option<Course>>;
    /// Changes a catalog entry; `None` if it does not exist.
    async fn update_course(
        &self,
        id: &str,
        patch: &CoursePatch,
        now: i64,
    ) -> StoreResult<Option<Course>>;
    /// Catalog search and listing with keyset pagination.
    async fn list_courses(&self, query: &CourseQuery) -> StoreResult<Page<Course>>;

    // ---- moderation -----------------------------------------------------------------------
    /// Files a report.
    async fn create_report(&self, report: &NewReport) -> StoreResult<Report>;
    /// Writes the legacy reports and log entries of many imported dumps in one transaction: one
    /// commit (on SQLite, one fsync) for all of them instead of one per dump. A report whose
    /// legacy id, or a log entry whose legacy key, is already stored (or earlier in the same
    /// call) is skipped. Returns, per report and per log entry in order, whether it was
    /// inserted.
    async fn insert_legacy_rows(
        &self,
        reports: &[NewReport],
        logs: &[NewLog],
    ) -> StoreResult<(Vec<bool>, Vec<bool>)>;
    /// A report.
    async fn report(&self, id: &str) -> StoreResult<Option<Report>>;
    /// The moderation queue.
    async fn list_reports(&self, query: &ReportQuery) -> StoreResult<Page<Report>>;
    /// Resolves or dismisses a report; `None` if it does not exist.
    async fn resolve_report(
        &self,
        id: &str,
        status: ReportStatus,
        note: Option<&str>,
        by: &str,
        now: i64,
    ) -> StoreResult<Option<Report>>;

    // ---- logs -----------------------------------------------------------------------------
    /// Which of these legacy report ids and log keys are already stored (a dry-run import
    /// reports them unchanged without writing).
    async fn legacy_rows_present(
        &self,
        report_ids: &[String],
        log_keys: &[String],
    ) -> StoreResult<(Vec<String>, Vec<String>)>;
    /// Writes log entries; entries whose `legacy_key` exists are skipped. Returns how many
    /// were inserted.
    async fn insert_logs(&self, logs: &[NewLog]) -> StoreResult<u64>;
    /// Queries the log, newest first.
    async fn list_logs(&self, query: &LogQuery) -> StoreResult<Page<LogEntry>>;

    // ---- projection reads -----------------------------------------------------------------
    /// A user's preferences row.
    async fn preferences(&self, user_id: &str) -> StoreResult<Option<Preferences>>;
    /// A user's enrollments.
    async fn enrollments(&self, user_id: &str) -> StoreResult<Vec<Enrollment>>;
    /// Enrollment counts and average progress per course, most enrolled first.
    async fn course_stats(&self, limit: u32) -> StoreResult<Vec<CourseStats>>;
    /// New enrollments (or completions) per day in `[from, to)`, optionally for one course.
    async fn daily_enrollments(
        &self,
        completions: bool,
        course_id: Option<&str>,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<DailyCount>>;
    /// Distinct users with learning activity per day in `[from, to)`.
    async fn daily_active_users(&self, from: i64, to: i64) -> StoreResult<Vec<DailyCount>>;

    // ---- legacy import runs ---------------------------------------------------------------
    /// Records a run (insert or replace).
    async fn save_run(&self, run: &MigrationRun) -> StoreResult<()>;
    /// A run.
    async fn run(&self, id: &str) -> StoreResult<Option<MigrationRun>>;
    /// Every run a user started, newest first (a user's data export).
    async fn runs_by_actor(&self, actor_id: &str) -> StoreResult<Vec<MigrationRun>>;
    /// Runs, newest first.
    async fn list_runs(&self, cursor: Option<&str>, limit: u32) -> StoreResult<Page<MigrationRun>>;

    // ---- documents (sync) -----------------------------------------------------------------
    /// A document's meta, snapshot, changes and sync states.
    async fn load_document(&self, id: &str) -> StoreResult<Option<StoredDocument>>;
    /// [`Store::load_document`] for many documents in two statements (one when none exists),
    /// in the order of `ids`: a shard loads everything its devices asked for in one pass
    /// together (a reconnect storm, a bulk import's new documents).
    async fn load_documents(&self, ids: &[String]) -> StoreResult<Vec<Option<StoredDocument>>>;
    /// Stores a batch of document writes in ONE transaction (group commit), each with its
    /// projection rows. Writes to a document owned by someone else are rejected without
    /// failing the others. On PostgreSQL the commit also notifies other instances.
    async fn store_writes(&self, writes: &[DocWrite], now: i64) -> StoreResult<Vec<WriteOutcome>>;
    /// Folds a document's change rows into its snapshot, in one transaction.
    async fn compact_document(&self, id: &str) -> StoreResult<()>;
    /// Of `ids`, the documents a compaction would make smaller. Left out: documents with no
    /// change rows, and those stored as one change row no more than a quarter bigger than
    /// their snapshot would be (a new document written once: what an import leaves tens of
    /// thousands of). Reads only, on a reader: on SQLite every compaction waits for the one
    /// write connection.
    async fn documents_worth_compacting(&self, ids: &[String]) -> StoreResult<Vec<String>>;
    /// The change chunk with this sequence number (for notifications too large to carry it).
    async fn document_change(&self, seq: i64) -> StoreResult<Option<(String, Vec<u8>)>>;
    /// A user's documents.
    async fn user_documents(&self, user_id: &str) -> StoreResult<Vec<DocumentInfo>>;
    /// Persists sync states (upsert).
    async fn save_sync_states(&self, states: &[SyncStateRow], now: i64) -> StoreResult<()>;
    /// Forgets sync states of these peers, or of everyone.
    async fn delete_sync_states(&self, storage_ids: Option<&[String]>) -> StoreResult<()>;

    // ---- instances and devices ------------------------------------------------------------
    /// Registers or refreshes a server instance.
    async fn heartbeat_instance(
        &self,
        id: &str,
        address: &str,
        started_at: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// Forgets an instance and its devices (clean shutdown, or found dead).
    async fn remove_instance(&self, id: &str) -> StoreResult<()>;
    /// Removes instances (and their devices) whose heartbeat is older than `before`.
    async fn reap_instances(&self, before: i64) -> StoreResult<u64>;
    /// Records a connected device.
    async fn device_connected(&self, device: &Device) -> StoreResult<()>;
    /// Forgets a device.
    async fn device_disconnected(&self, conn_id: &str) -> StoreResult<()>;
    /// Updates devices' last sync times.
    async fn touch_devices(&self, seen: &[(String, i64)]) -> StoreResult<()>;
    /// Connected devices, optionally of one user.
    async fn list_devices(&self, user_id: Option<&str>) -> StoreResult<Vec<Device>>;
    /// Tells the other instances about an event (forced sync, catalog change, disconnect).
    /// A no-op on SQLite, which has one instance.
    async fn broadcast(&self, event: &str) -> StoreResult<()>;
}

/// A connected database: the store, plus what the session layer and the fan-out listener need
/// from the concrete backend.
pub enum Connected {
    /// PostgreSQL.
    Postgres(postgres::PgStore),
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
}

impl Connected {
    /// The store as the rest of the server uses it.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Connected::Postgres(s) => Arc::new(s.clone()),
            Connected::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The change notifications to listen to (PostgreSQL only).
    pub fn change_feed(&self) -> Option<postgres::ChangeFeed> {
        match self {
            Connected::Postgres(s) => Some(s.change_feed()),
            Connected::Sqlite(_) => None,
        }
    }

    /// The tower-sessions store on the same database.
    pub fn session_store(&self) -> crate::auth::SessionBackend {
        match self {
            Connected::Postgres(s) => crate::auth::SessionBackend::Postgres(
                tower_sessions_sqlx_store::PostgresStore::new(s.pool().clone()),
            ),
            Connected::Sqlite(s) => crate::auth::SessionBackend::Sqlite(
                tower_sessions_sqlx_store::SqliteStore::new(s.pool().clone()),
            ),
        }
    }
}

/// Opens the database named by a URL (`postgres://…` or `sqlite:…`). `origin` identifies this
/// instance in cross-instance notifications.
pub async fn connect(url: &str, max_connections: u32, origin: &str) -> StoreResult<Connected> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Connected::Postgres(
            postgres::PgStore::connect(url, max_connections, origin).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Connected::Sqlite(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Invalid(
            "DATABASE_URL must start with postgres:// or sqlite:".into(),
        ))
    }
}

/// The position after the last row of a page: the sort key and the id of that row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// Integer sort key (times, ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) n: Option<i64>,
    /// Text sort key (titles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) s: Option<String>,
    /// Tie-breaking id.
    pub(crate) id: String,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub(crate) fn decode(text: &str) -> StoreResult<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::Invalid("cursor is not one this server issued".into()))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::Invalid("cursor is not one this server issued".into()))
    }
}

/// How a catalog search finds its page, chosen per backend by `search_plan()`: the database's
/// planner cannot estimate prefix searches, and the wrong plan costs tens of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchPlan {
    /// Walk the sort-order index, testing every row: many matches, the page fills early.
    Walk,
    /// Find every match through the full-text index, then sort them: few matches.
    Matches,
    /// Test at most this many rows in sort order; when the page is not full by then, start
    /// again from the matches. Needs no estimate: a common search ends in the walk, a rare one
    /// costs the walk plus its few matches.
    WalkFirst(i64),
}

/// Turns a search text into safe prefix terms: runs of letters and digits, at most 8 terms.
pub(crate) fn search_terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(8)
        .map(|t| t.to_lowercase())
        .collect()
}

/// Clamps a page size to 1–100 (the API validates before; this protects the database).
pub(crate) fn page_size(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 100))
}
