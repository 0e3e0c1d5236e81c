//! The legacy `localStorage` import pipeline: one pipeline behind three entry points (the
//! CLI's `learnsync import`, the admin page's `/api/admin/migrations`, the browser client's
//! `/api/me/legacy-import`).
//!
//! `sync_core::import` decides everything (parsing, merge rules, idempotence); this module
//! moves the results into storage: catalog, report and log rows through the store (inserted
//! only when absent), document edits through the sync engine (stored, then fanned out to the
//! user's connected devices like any other change), legacy users mapped to accounts (a
//! passwordless placeholder for an id never seen), and every run recorded in `migration_runs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use automerge::AutoCommit;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value as Json, json};
use sync_core::docs::{DocSpec, create};
use sync_core::import::{self, Dump, KeptValue, KeyReport, Outcome, Report, UserImport};
use sync_core::{DocumentId, UserNamespace};
use tokio::sync::broadcast;

use crate::courses::CatalogCache;
use crate::model::{
    CourseKind, CourseStatus, Lesson, LogLevel, MigrationRun, ReportStatus, Role, RunSource,
    RunStatus, Timestamp, now_ms,
};
use crate::store::{Backend, NewCourse, NewLog, NewReport, NewUser, Store, StoreError, UserRecord};
use crate::sync::SyncEngine;
use legacy_rows::LegacyRowWriter;

/// Dumps imported at once: enough to keep the database and the hub shards busy (the writers
/// group the documents of many dumps into one commit), few enough that a large upload does not
/// hold thousands of documents in memory. SQLite has one writer at a time: more dumps in flight
/// would only queue for its lock while holding pool connections.
pub(crate) fn concurrency(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 24,
        Backend::Sqlite => 4,
    }
}

/// Dumps imported at once by `learnsync import`: a process of its own, so it may keep more in
/// flight than a server that also answers requests. Most of a dump's time is spent waiting for
/// its documents' group commit; the more dumps wait together, the more documents each commit
/// carries, and the fewer commits (and, on SQLite, synced writes) the run needs. 4,000 dumps
/// on PostgreSQL: 9.3 s at 24, 7.0 at 64, 5.9 at 256; on SQLite 11.8 s at 4, 9.3 at 32, 7.9 at
/// 256 (BENCHMARKS.md, P5). The documents leave memory a second after their edit, so memory
/// stays bounded (a 10,000-dump run peaked at 396 MB resident, against 795 MB before).
pub(crate) const CLI_CONCURRENCY: usize = 256;

/// Dumps parsed and prepared together: their users are looked up, and their placeholders
/// created, in one round trip and one transaction per chunk instead of two of each per dump.
const CHUNK: usize = 128;

/// The `source` of log entries imported from `errorLog`.
const LOG_SOURCE: &str = "legacy-import";

pub mod cli;
mod files;
mod legacy_rows;
pub mod routes;

pub use files::{MAX_DUMPS, read_dumps};

/// One dump to import: a name for the report (file name, zip entry) and its text, or why the
/// file could not be read (recorded in the run like any other failed dump).
#[derive(Debug, Clone)]
pub struct DumpInput {
    /// File name or zip entry.
    pub name: String,
    /// `JSON.stringify(localStorage)`, or why it could not be read.
    pub text: Result<String, String>,
}

/// How to run an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Where it was started.
    pub source: RunSource,
    /// Who started it (an account id), if anyone.
    pub actor_id: Option<String>,
    /// A user every dump belongs to; otherwise each dump's own legacy user id decides.
    pub user: Option<UserRecord>,
    /// Report what would change and change nothing.
    pub dry_run: bool,
    /// What was imported, for the run list (file names).
    pub label: String,
}

/// Progress of a run, after each dump.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Dumps done.
    pub done: usize,
    /// Dumps in the run.
    pub total: usize,
    /// The dump just done.
    pub current: String,
}

/// The report of one dump within a run.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    /// File name or zip entry.
    pub dump: String,
    /// The account its settings went to.
    pub user: Option<String>,
    /// Per-key rows.
    pub keys: Vec<KeyReport>,
    /// Why the dump could not be imported at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Raw values kept in this record because no document could take them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptValue>,
}

/// The import pipeline, shared by the three entry points.
#[derive(Clone)]
pub struct Importer {
    store: Arc<dyn Store>,
    sync: Arc<SyncEngine>,
    catalog: Option<Arc<CatalogCache>>,
    /// Dumps in flight.
    concurrency: usize,
}

/// State shared by the dumps of one run.
struct RunShared {
    /// Writes the dumps' report and log rows together.
    legacy_rows: LegacyRowWriter,
    /// Catalog ids already handled by a dump of this run (saves a query per dump per course in
    /// bulk imports, and makes a dry run count each id once).
    courses_present: Mutex<HashSet<String>>,
    /// Placeholder accounts created by this run, by legacy id.
    placeholders: Mutex<HashSet<String>>,
    /// Documents of those accounts this run has edited. A placeholder's document ids come
    /// from its fresh seed, so before this run's first edit of one, it is stored nowhere: that
    /// edit skips the load. Any later edit (the document may have left memory since) loads.
    placeholder_docs_edited: Mutex<HashSet<DocumentId>>,
    /// Accounts of legacy ids already looked up or created by this run.
    users: Mutex<HashMap<String, UserRecord>>,
    /// Whether this run inserted catalog rows (the catalog cache must be refreshed).
    catalog_changed: std::sync::atomic::AtomicBool,
}

impl RunShared {
    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            legacy_rows: LegacyRowWriter::start(store),
            courses_present: Mutex::default(),
            placeholders: Mutex::default(),
            placeholder_docs_edited: Mutex::default(),
            users: Mutex::default(),
            catalog_changed: std::sync::atomic::AtomicBool::default(),
        }
    }

    /// Whether `doc` of `user` is known to be stored nowhere, claiming it: true at most once
    /// per document, for a placeholder account this run created.
    ///
    /// Known limit: another import running at the same moment (a second CLI, an admin upload)
    /// that names the same legacy user finds the placeholder once its insert commits, and may
    /// store that user's document before this run's first edit. Both changes are stored; this
    /// process's live copy and the projection rows it writes miss the other run's change until
    /// the document is next loaded (the CLI evicts after a second) and written.
    fn claim_absent(&self, user: &UserRecord, doc: DocumentId) -> bool {
        let created_here = user.user.legacy_id.as_ref().is_some_and(|legacy| {
            self.placeholders
                .lock()
                .is_ok_and(|p| p.contains(legacy.as_str()))
        });
        created_here
            && self
                .placeholder_docs_edited
                .lock()
                .is_ok_and(|mut edited| edited.insert(doc))
    }
}

impl Importer {
    /// An importer writing through `store` and `sync`.
    pub fn new(store: Arc<dyn Store>, sync: Arc<SyncEngine>) -> Self {
        Self {
            concurrency: concurrency(store.backend()),
            store,
            sync,
            catalog: None,
        }
    }

    /// Keeps `n` dumps in flight instead of the default for the store's backend.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Also refreshes this instance's cached catalog pages when a run adds courses (other
    /// instances hear of it through the store's broadcast).
    pub fn with_catalog(mut self, catalog: Arc<CatalogCache>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Starts a run: records it as running and returns it, so callers can hand out its id
    /// before the work is done.
    pub async fn begin(
        &self,
        dumps: usize,
        options: &ImportOptions,
    ) -> Result<MigrationRun, StoreError> {
        let run = MigrationRun {
            id: uuid::Uuid::new_v4().to_string(),
            actor_id: options.actor_id.clone(),
            source: options.source,
            label: truncate(&options.label, 500),
            status: RunStatus::Running,
            dry_run: options.dry_run,
            dumps_total: dumps as i64,
            dumps_done: 0,
            counts: json!({}),
            report: json!([]),
            errors: json!([]),
            started_at: Timestamp::now(),
            finished_at: None,
        };
        self.store.save_run(&run).await?;
        Ok(run)
    }

    /// Imports `dumps` into the run `run` (from [`Importer::begin`]), calling `on_progress`
    /// after each dump, and records the finished run. Per-dump failures are recorded, not
    /// returned; only a failure to record the run itself is an error.
    pub async fn run(
        &self,
        mut run: MigrationRun,
        dumps: Vec<DumpInput>,
        options: &ImportOptions,
        mut on_progress: impl FnMut(&Progress) + Send,
    ) -> Result<MigrationRun, StoreError> {
        let total = dumps.len();
        let shared = Arc::new(RunShared::new(self.store.clone()));
        let mut totals = Report::new();
        let mut reports = Vec::with_capacity(total);
        let mut errors = Vec::new();
        let mut users_changed: Vec<String> = Vec::new();
        // The same users, to look up: a linear search per dump was quadratic in a bulk run.
        let mut users_seen: HashSet<String> = HashSet::new();
        let mut failed_dumps = 0usize;
        let now = now_ms();
        let mut done = 0;
        let mut last_saved = std::time::Instant::now();
        let mut progress_save: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
        // Chunk by chunk, prepared ahead: a task of its own parses the next chunk and prepares
        // its users (a read and, for placeholders, a write that queues behind the document
        // commits) while the dumps of the chunk before it are imported. Prepared inline, the
        // dumps in flight drained at every chunk boundary while that write waited.
        let mut chunks: Vec<Vec<DumpInput>> = Vec::new();
        let mut inputs = dumps.into_iter();
        loop {
            let chunk: Vec<DumpInput> = inputs.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        let (ready, ready_rx) = tokio::sync::mpsc::channel(1);
        let preparer = tokio::spawn({
            let shared = shared.clone();
            let this = self.clone();
            let options = options.clone();
            async move {
                for chunk in chunks {
                    let parsed = parse_all(chunk).await;
                    this.prefetch_users(&parsed, &options, &shared, now).await;
                    if ready.send(parsed).await.is_err() {
                        break;
                    }
                }
            }
        });
        let prepared = futures_util::stream::unfold(ready_rx, |mut ready_rx| async move {
            let parsed = ready_rx.recv().await?;
            Some((futures_util::stream::iter(parsed), ready_rx))
        })
        .flatten();
        let results = prepared
            .map(|(name, dump)| {
                let shared = shared.clone();
                let this = self.clone();
                let options = options.clone();
                async move { this.import_dump(name, dump, &options, &shared, now).await }
            })
            .buffered(self.concurrency);
        let mut results = std::pin::pin!(results);
        while let Some(outcome) = results.next().await {
            done += 1;
            if let Some(error) = &outcome.report.error {
                failed_dumps += 1;
                errors.push(json!({ "dump": outcome.report.dump, "error": error }));
            }
            totals.extend(outcome.report.keys.iter().cloned());
            for user in outcome.changed_users {
                if users_seen.insert(user.clone()) {
                    users_changed.push(user);
                }
            }
            let current = outcome.report.dump.clone();
            reports.push(outcome.report);
            on_progress(&Progress {
                done,
                total,
                current,
            });
            // The run list shows progress too; at most a few writes per second. The save runs
            // on its own task: awaited here, it would stop this loop polling the dumps in
            // flight, and one of them may hold the write connection it waits for (SQLite
            // writes go through one connection).
            if last_saved.elapsed() >= std::time::Duration::from_millis(500)
                && done < total
                && progress_save.as_ref().is_none_or(|s| s.is_finished())
            {
                run.dumps_done = done as i64;
                let (store, snapshot) = (self.store.clone(), run.clone());
                progress_save = Some(tokio::spawn(async move { store.save_run(&snapshot).await }));
                last_saved = std::time::Instant::now();
            }
        }
        // The last progress save must not land after the finished run.
        if let Some(save) = progress_save
            && let Ok(Err(e)) = save.await
        {
            tracing::warn!(error = %e, "import progress not saved");
        }
        // Every dump was handed over unless the preparing task died (a bug): then say so
        // rather than report a run that silently skipped dumps.
        if let Err(e) = preparer.await {
            return Err(StoreError::Invalid(format!(
                "preparing the dumps failed after {done} of {total}: {e}"
            )));
        }

        let failed_keys = totals.count(Outcome::Failed);
        run.status = if total > 0 && failed_dumps == total {
            RunStatus::Failed
        } else if failed_dumps > 0 || failed_keys > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Succeeded
        };
        run.dumps_done = done as i64;
        run.counts = json!({
            "imported": totals.count(Outcome::Imported),
            "merged": totals.count(Outcome::Merged),
            "unchanged": totals.count(Outcome::Unchanged),
            "skipped": totals.count(Outcome::Skipped),
            "failed": failed_keys,
            "dumps_failed": failed_dumps,
            "placeholders": shared.placeholders.lock().map(|p| p.len()).unwrap_or(0),
            "users": users_changed,
        });
        run.report = serde_json::to_value(&reports).unwrap_or_else(|_| json!([]));
        run.errors = Json::Array(errors);
        run.finished_at = Some(Timestamp::now());
        self.store.save_run(&run).await?;
        if shared
            .catalog_changed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            if let Some(catalog) = &self.catalog {
                catalog.bump();
            }
            if let Err(e) = self.store.broadcast("catalog").await {
                tracing::warn!(error = %e, "could not tell other instances the catalog changed");
            }
        }
        Ok(run)
    }

    /// Looks up, in one go, every account the dumps of a chunk name, and creates the
    /// placeholders their owners need (not in a dry run). A failure here only costs speed:
    /// each dump then asks on its own, and records what fails.
    async fn prefetch_users(
        &self,
        dumps: &[(String, Result<Dump, String>)],
        options: &ImportOptions,
        shared: &RunShared,
        now: i64,
    ) {
        let mut owners: Vec<String> = Vec::new();
        let mut named: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for dump in dumps.iter().filter_map(|(_, d)| d.as_ref().ok()) {
            if options.user.is_none() {
                match dump.owner_hint() {
                    Some(owner) => owners.push(owner),
                    None => owners.extend(dump.legacy_users()),
                }
            }
            named.extend(dump.catalog.iter().filter_map(|e| e.author.clone()));
            for r in &dump.reports {
                named.extend(r.reporter.iter().chain(&r.resolved_by).cloned());
            }
        }
        named.extend(owners.iter().cloned());
        let known: HashSet<String> = match shared.users.lock() {
            Ok(users) => named
                .iter()
                .filter(|id| users.contains_key(*id))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        let wanted: Vec<String> = named.into_iter().filter(|id| !known.contains(id)).collect();
        if wanted.is_empty() {
            return;
        }
        let found = match self.store.users_by_legacy_ids(&wanted).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "looking up a chunk's legacy users failed; each dump asks on its own");
                return;
            }
        };
        let mut missing: std::collections::BTreeSet<String> = owners
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        if let Ok(mut users) = shared.users.lock() {
            for user in found {
                if let Some(legacy) = user.user.legacy_id.clone() {
                    missing.remove(&legacy);
                    users.insert(legacy, user);
                }
            }
        }
        if options.dry_run || missing.is_empty() {
            return;
        }
        let new: Vec<NewUser> = missing
            .iter()
            .map(|legacy| placeholder(legacy, now))
            .collect();
        match self.store.ensure_legacy_users(&new).await {
            Ok(created) => {
                let (Ok(mut users), Ok(mut placeholders)) =
                    (shared.users.lock(), shared.placeholders.lock())
                else {
                    return;
                };
                for (user, was_created) in created {
                    if let Some(legacy) = user.user.legacy_id.clone() {
                        if was_created {
                            placeholders.insert(legacy.clone());
                        }
                        users.insert(legacy, user);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "creating a chunk's placeholder users failed; each dump tries on its own");
            }
        }
    }

    async fn import_dump(
        &self,
        name: String,
        parsed: Result<Dump, String>,
        options: &ImportOptions,
        shared: &RunShared,
        now: i64,
    ) -> DumpOutcome {
        let mut outcome = DumpOutcome {
            report: DumpReport {
                dump: name,
                user: None,
                keys: Vec::new(),
                error: None,
                kept: Vec::new(),
            },
            changed_users: Vec::new(),
        };
        let dump = match parsed {
            Ok(dump) => dump,
            Err(e) => {
                outcome.report.error = Some(e);
                return outcome;
            }
        };
        let mut report = dump.report.clone();
        match self
            .import_parsed(&dump, options, shared, now, &mut report, &mut outcome)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, dump = %outcome.report.dump, "legacy import of a dump failed");
                outcome.report.error = Some(match &e {
                    StoreError::Database(_) => {
                        "storage failed; run the import again to finish it".into()
                    }
                    other => other.to_string(),
                });
            }
        }
        outcome.report.keys = report.into_rows();
        outcome
    }

    async fn import_parsed(
        &self,
        dump: &Dump,
        options: &ImportOptions,
        shared: &RunShared,
        now: i64,
        report: &mut Report,
        outcome: &mut DumpOutcome,
    ) -> Result<(), StoreError> {
        // Who the dump's documents belong to.
        let mut targets: Vec<(Target, UserImport)> = Vec::new();
        let owner_legacy = dump.owner_hint();
        let owner = match (&options.user, &owner_legacy) {
            (Some(user), _) => Some(Target::Existing(user.clone())),
            (None, Some(legacy)) => Some(
                self.legacy_user(legacy, options.dry_run, shared, now)
                    .await?,
            ),
            (None, None) => None,
        };
        match owner {
            Some(owner) => {
                outcome.report.user = Some(owner.label());
                let import = match options.user {
                    Some(_) => dump.for_user(None),
                    None => dump.for_user(owner_legacy.as_deref()),
                };
                targets.push((owner, import));
            }
            None => {
                // No single user: each named user gets their enrollments; the settings, raw
                // values and unnamed enrollments wait in the run record for an admin to tie
                // the dump to a user.
                for legacy in dump.legacy_users() {
                    let target = self
                        .legacy_user(&legacy, options.dry_run, shared, now)
                        .await?;
                    targets.push((target, dump.for_user(Some(&legacy)).enrollments_only()));
                }
                let unowned = dump.for_user(None);
                let why = "the dump names no single user; import it again tied to a user to apply this (kept in the run record)";
                for key in ["theme", "language"] {
                    let setting = if key == "theme" {
                        &dump.theme
                    } else {
                        &dump.language
                    };
                    if let Some(s) = setting {
                        report.record(key, Outcome::Skipped, Some(why.into()));
                        outcome.report.kept.push(KeptValue {
                            key: key.into(),
                            report_key: key.into(),
                            raw: s.raw.clone(),
                            reason: why.into(),
                        });
                    }
                }
                for kept in unowned.kept() {
                    // Counted as skipped by the parse already.
                    report.add(
                        &kept.report_key,
                        Outcome::Skipped,
                        0,
                        Some("kept in the run record".into()),
                    );
                    outcome.report.kept.push(kept.clone());
                }
                if let Some(unnamed) = dump.enrollments.get(&None) {
                    for e in unnamed.values() {
                        let key = e.sources.first().copied().unwrap_or("userEnrollments");
                        report.record(
                            key,
                            Outcome::Skipped,
                            Some(format!("{}: names no user; {why}", e.course_id)),
                        );
                    }
                    outcome.report.kept.push(KeptValue {
                        key: "enrollments without a user".into(),
                        report_key: "userEnrollments".into(),
                        raw: serde_json::to_string(unnamed).unwrap_or_default(),
                        reason: why.into(),
                    });
                }
            }
        }
        let owner_id = targets
            .first()
            .and_then(|(t, _)| t.id().map(str::to_string));

        self.import_catalog(dump, options.dry_run, shared, now, report)
            .await?;
        // The report and log rows and the documents are independent writes: made together,
        // a dump waits for one commit at a time instead of two in a row (on SQLite both queue
        // for the one write connection, so in a row they doubled the time a dump was in flight).
        let dump_name = outcome.report.dump.clone();
        let legacy = async {
            let mut rows = Report::new();
            self.import_reports_and_logs(
                dump,
                owner_id.as_deref(),
                &dump_name,
                options.dry_run,
                shared,
                now,
                &mut rows,
            )
            .await
            .map(|()| rows)
        };
        let documents = async {
            let mut done = Vec::new();
            for (target, import) in targets {
                let rows = self
                    .import_documents(&target, import, options.dry_run, shared, now)
                    .await;
                let changed = rows.iter().any(|r| r.outcome.is_change() && r.count > 0);
                done.push((target.id().filter(|_| changed).map(str::to_string), rows));
            }
            done
        };
        let (legacy, documents) = futures_util::join!(legacy, documents);
        // The documents' rows are reported even when the legacy rows failed: they are stored.
        let failed = match legacy {
            Ok(rows) => {
                report.extend(rows.into_rows());
                None
            }
            Err(e) => Some(e),
        };
        for (changed_user, rows) in documents {
            outcome.changed_users.extend(changed_user);
            report.extend(rows);
        }
        failed.map_or(Ok(()), Err)
    }

    /// The account of a legacy user id, creating a passwordless placeholder the first time
    /// (not in a dry run).
    async fn legacy_user(
        &self,
        legacy: &str,
        dry_run: bool,
        shared: &RunShared,
        now: i64,
    ) -> Result<Target, StoreError> {
        if let Some(user) = shared
            .users
            .lock()
            .ok()
            .and_then(|u| u.get(legacy).cloned())
        {
            return Ok(Target::Existing(user));
        }
        let user = match self.store.user_by_legacy_id(legacy).await? {
            Some(user) => user,
            None if dry_run => return Ok(Target::WouldCreate(legacy.to_string())),
            None => {
                let (user, created) = self
                    .store
                    .ensure_legacy_user(&placeholder(legacy, now))
                    .await?;
                if created && let Ok(mut p) = shared.placeholders.lock() {
                    p.insert(legacy.to_string());
                }
                user
            }
        };
        if let Ok(mut users) = shared.users.lock() {
            users.insert(legacy.to_string(), user.clone());
        }
        Ok(Target::Existing(user))
    }

    async fn import_catalog(
        &self,
        dump: &Dump,
        dry_run: bool,
        shared: &RunShared,
        now: i64,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let mut authors: HashMap<String, Option<String>> = HashMap::new();
        for entry in &dump.catalog {
            // The first dump of the run to name an id claims it; the others report it unchanged
            // (in a dry run too, which then predicts the real run exactly).
            let claimed = shared
                .courses_present
                .lock()
                .map(|mut s| s.insert(entry.id.clone()))
                .unwrap_or(true);
            if !claimed {
                report.record(entry.source, Outcome::Unchanged, None);
                continue;
            }
            let mut extra = entry.extra.clone();
            let author_id = match &entry.author {
                None => None,
                Some(legacy) => {
                    let id = match authors.get(legacy) {
                        Some(id) => id.clone(),
                        None => {
                            let id = self
                                .legacy_user(legacy, dry_run, shared, now)
                                .await?
                                .id()
                                .map(str::to_string);
                            authors.insert(legacy.clone(), id.clone());
                            id
                        }
                    };
                    // The old app's id stays with the entry, whatever account it maps to.
                    extra.insert("legacyAuthorId".into(), Json::String(legacy.clone()));
                    id
                }
            };
            let inserted = if dry_run {
                self.store.course(&entry.id).await?.is_none()
            } else {
                let course = NewCourse {
                    id: entry.id.clone(),
                    kind: match entry.kind {
                        import::CatalogKind::Course => CourseKind::Course,
                        import::CatalogKind::Subject => CourseKind::Subject,
                    },
                    title: entry.title.clone(),
                    description: entry.description.clone(),
                    category: entry.category.clone(),
                    level: entry.level.clone(),
                    status: match entry.status {
                        import::CatalogStatus::Draft => CourseStatus::Draft,
                        import::CatalogStatus::Published => CourseStatus::Published,
                        import::CatalogStatus::Archived => CourseStatus::Archived,
                    },
                    author_id,
                    lessons: entry
                        .lessons
                        .iter()
                        .map(|l| Lesson {
                            id: l.id.clone(),
                            title: l.title.clone(),
                        })
                        .collect(),
                    extra: Json::Object(extra),
                    created_at: entry.created_at.unwrap_or(now),
                    now,
                };
                let inserted = self.store.insert_course_if_absent(&course).await?;
                if inserted {
                    shared
                        .catalog_changed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                inserted
            };
            if inserted {
                report.record(entry.source, Outcome::Imported, None);
            } else {
                report.record(entry.source, Outcome::Unchanged, None);
            }
        }
        Ok(())
    }

    /// The dump's moderation reports and error log entries, each inserted unless a row with
    /// its legacy id or key exists: written with the other dumps' in one transaction (a dry
    /// run only looks them up).
    #[allow(clippy::too_many_arguments)]
    async fn import_reports_and_logs(
        &self,
        dump: &Dump,
        owner_id: Option<&str>,
        dump_name: &str,
        dry_run: bool,
        shared: &RunShared,
        now: i64,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        if dump.reports.is_empty() && dump.logs.is_empty() {
            return Ok(());
        }
        let mut reports = Vec::with_capacity(dump.reports.len());
        let mut decided = Vec::with_capacity(dump.reports.len());
        for r in &dump.reports {
            let mut extra = r.extra.clone();
            let reporter_id = self
                .map_user(
                    r.reporter.as_deref(),
                    "legacyReporterId",
                    &mut extra,
                    dry_run,
                    shared,
                    now,
                )
                .await?;
            let resolved_by = self
                .map_user(
                    r.resolved_by.as_deref(),
                    "legacyResolvedBy",
                    &mut extra,
                    dry_run,
                    shared,
                    now,
                )
                .await?;
            decided.push(extra.contains_key("decidedIn"));
            reports.push(NewReport {
                id: crate::auth::routes::new_id(),
                course_id: r.course_id.clone(),
                reporter_id,
                reason: r.reason.clone(),
                details: r.details.clone(),
                status: match r.state {
                    import::ReportState::Pending => ReportStatus::Pending,
                    import::ReportState::Resolved => ReportStatus::Resolved,
                    import::ReportState::Dismissed => ReportStatus::Dismissed,
                },
                note: r.note.clone(),
                resolved_by,
                resolved_at: r.resolved_at,
                legacy_id: Some(r.legacy_id.clone()),
                extra: Json::Object(extra),
                created_at: r.created_at.unwrap_or(now),
            });
        }
        let logs = legacy_logs(dump, owner_id, dump_name, now);
        let (reports_new, logs_new) = if dry_run {
            absent_rows(self.store.as_ref(), &reports, &logs).await?
        } else {
            shared.legacy_rows.write(reports, logs).await?
        };

        for (inserted, decided) in reports_new.into_iter().zip(decided) {
            let outcome = if inserted {
                Outcome::Imported
            } else {
                Outcome::Unchanged
            };
            report.record("moderationQueue", outcome, None);
            if decided {
                let outcome = if inserted {
                    Outcome::Merged
                } else {
                    Outcome::Unchanged
                };
                report.record("moderationData", outcome, None);
            }
        }
        let total = logs_new.len() as u64;
        let inserted = logs_new.iter().filter(|new| **new).count() as u64;
        if inserted > 0 {
            report.add("errorLog", Outcome::Imported, inserted, None);
        }
        if total > inserted {
            report.add("errorLog", Outcome::Unchanged, total - inserted, None);
        }
        Ok(())
    }

    /// Maps a legacy user id to an account id (a placeholder for an id never seen; none in a
    /// dry run); the old id stays in `extra`.
    async fn map_user(
        &self,
        legacy: Option<&str>,
        field: &str,
        extra: &mut serde_json::Map<String, Json>,
        dry_run: bool,
        shared: &RunShared,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let Some(legacy) = legacy else {
            return Ok(None);
        };
        extra.insert(field.into(), Json::String(legacy.to_string()));
        Ok(self
            .legacy_user(legacy, dry_run, shared, now)
            .await?
            .id()
            .map(str::to_string))
    }

    /// Applies one user's part to their documents: through the sync engine (stored, then
    /// sent to their devices), or in a dry run to copies loaded from storage.
    async fn import_documents(
        &self,
        target: &Target,
        import: UserImport,
        dry_run: bool,
        shared: &RunShared,
        now: i64,
    ) -> Vec<KeyReport> {
        let import = Arc::new(import);
        let mut steps: Vec<DocSpec> = Vec::new();
        if import.has_preferences() {
            steps.push(DocSpec::Preferences);
        }
        if !import.enrollments().is_empty() {
            steps.push(DocSpec::Learning);
        }
        for course_id in import.course_ids() {
            steps.push(DocSpec::Course { course_id });
        }
        // The documents are independent: edit them all at once, so a dump costs one group
        // commit of the writers rather than one per document.
        let results = futures_util::future::join_all(steps.into_iter().map(|spec| {
            let import = import.clone();
            async move {
                let apply = {
                    let spec = spec.clone();
                    move |doc: &mut AutoCommit| match &spec {
                        DocSpec::Preferences => import.apply_preferences(doc, now),
                        DocSpec::Learning => import.apply_learning(doc, now),
                        DocSpec::Course { course_id } => import.apply_course(course_id, doc, now),
                    }
                };
                let result = match (target, dry_run) {
                    (Target::Existing(user), false) => {
                        let ns = UserNamespace::from_bytes(user.doc_seed);
                        let edited = if shared.claim_absent(user, spec.document_id(&ns)) {
                            self.sync.edit_known_absent(user, spec.clone(), apply).await
                        } else {
                            self.sync.edit(user, spec.clone(), apply).await
                        };
                        edited.map_err(|e| e.to_string())
                    }
                    (Target::Existing(user), true) => {
                        let ns = UserNamespace::from_bytes(user.doc_seed);
                        match self.stored_copy(&spec, &spec.document_id(&ns)).await {
                            Ok(mut doc) => apply(&mut doc).map_err(|e| e.to_string()),
                            Err(e) => Err(e),
                        }
                    }
                    (Target::WouldCreate(_), _) => match create(&spec, [0xd7; 16]) {
                        Ok(mut doc) => apply(&mut doc).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                };
                (spec, result)
            }
        }))
        .await;
        let mut report = Report::new();
        for (spec, result) in results {
            match result {
                Ok(rows) => report.extend(rows),
                Err(why) => {
                    let key = match &spec {
                        DocSpec::Preferences => "preferences".to_string(),
                        DocSpec::Learning => "userEnrollments".to_string(),
                        DocSpec::Course { course_id } => {
                            format!("userEnrollments/progress ({course_id})")
                        }
                    };
                    tracing::warn!(error = %why, user = %target.label(), "legacy import could not change a document");
                    report.record(&key, Outcome::Failed, Some(why));
                }
            }
        }
        report.into_rows()
    }

    /// A private copy of a stored document (a dry run edits it and throws it away).
    async fn stored_copy(&self, spec: &DocSpec, id: &DocumentId) -> Result<AutoCommit, String> {
        let stored = self
            .store
            .load_document(&id.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let mut doc = create(spec, [0xd7; 16]).map_err(|e| e.to_string())?;
        if let Some(stored) = stored {
            for chunk in &stored.chunks {
                // A corrupt chunk must not hide the others (as when the hub loads it).
                let _ = doc.load_incremental(chunk);
            }
        }
        Ok(doc)
    }
}

/// The dump's log entries as rows. The same entry in two users' dumps is two entries; in one
/// user's dumps, one.
fn legacy_logs(dump: &Dump, owner_id: Option<&str>, dump_name: &str, now: i64) -> Vec<NewLog> {
    let scope = owner_id.unwrap_or("-");
    dump.logs
        .iter()
        .map(|l| {
            let mut context = l.context.clone();
            context.insert("dump".into(), Json::String(dump_name.to_string()));
            NewLog {
                level: match l.level {
                    import::LogSeverity::Debug => LogLevel::Debug,
                    import::LogSeverity::Info => LogLevel::Info,
                    import::LogSeverity::Warn => LogLevel::Warn,
                    import::LogSeverity::Error => LogLevel::Error,
                },
                source: LOG_SOURCE.into(),
                message: truncate(&l.message, 4000),
                context: Some(Json::Object(context)),
                user_id: owner_id.map(str::to_string),
                request_id: None,
                legacy_key: Some(format!("{scope}:{}", l.fingerprint)),
                created_at: l.created_at.unwrap_or(now),
            }
        })
        .collect()
}

/// What a real run would insert, told without writing: rows whose legacy id or key is stored
/// already, or came earlier in the same dump, would be skipped.
async fn absent_rows(
    store: &dyn Store,
    reports: &[NewReport],
    logs: &[NewLog],
) -> Result<legacy_rows::Inserted, StoreError> {
    let ids: Vec<String> = reports.iter().filter_map(|r| r.legacy_id.clone()).collect();
    let keys: Vec<String> = logs.iter().filter_map(|l| l.legacy_key.clone()).collect();
    let (ids_present, keys_present) = store.legacy_rows_present(&ids, &keys).await?;
    let mut seen: HashSet<String> = ids_present.into_iter().collect();
    let reports_new = reports
        .iter()
        .map(|r| {
            r.legacy_id
                .as_ref()
                .is_none_or(|id| seen.insert(id.clone()))
        })
        .collect();
    let mut seen: HashSet<String> = keys_present.into_iter().collect();
    let logs_new = logs
        .iter()
        .map(|l| l.legacy_key.as_ref().is_none_or(|k| seen.insert(k.clone())))
        .collect();
    Ok((reports_new, logs_new))
}

/// The account a dump's documents go to.
enum Target {
    /// An account (possibly a placeholder this run created).
    Existing(UserRecord),
    /// A placeholder a real run would create (dry run).
    WouldCreate(String),
}

impl Target {
    fn id(&self) -> Option<&str> {
        match self {
            Target::Existing(u) => Some(&u.user.id),
            Target::WouldCreate(_) => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Existing(u) => u.user.id.clone(),
            Target::WouldCreate(legacy) => format!("(new placeholder for legacy user {legacy})"),
        }
    }
}

struct DumpOutcome {
    report: DumpReport,
    changed_users: Vec<String>,
}

/// The passwordless account of a legacy user id never seen before.
fn placeholder(legacy: &str, now: i64) -> NewUser {
    NewUser {
        id: crate::auth::routes::new_id(),
        email: None,
        display_name: truncate(&format!("Legacy user {legacy}"), 100),
        password_hash: None,
        role: Role::Learner,
        legacy_id: Some(legacy.to_string()),
        doc_seed: crate::auth::routes::new_doc_seed(),
        now,
    }
}

/// Parses a chunk of dumps off the async threads (a few milliseconds of CPU per chunk).
async fn parse_all(chunk: Vec<DumpInput>) -> Vec<(String, Result<Dump, String>)> {
    let names: Vec<String> = chunk.iter().map(|d| d.name.clone()).collect();
    let parse = move || {
        chunk
            .into_iter()
            .map(|input| {
                let parsed = match &input.text {
                    Ok(text) => import::parse(text).map_err(|e| e.to_string()),
                    Err(why) => Err(why.clone()),
                };
                (input.name, parsed)
            })
            .collect::<Vec<_>>()
    };
    match tokio::task::spawn_blocking(parse).await {
        Ok(parsed) => parsed,
        // The parser does not panic on any input (fuzzed); should it, the chunk's dumps fail
        // alone and the run goes on.
        Err(e) => names
            .into_iter()
            .map(|name| (name, Err(format!("the dump could not be parsed: {e}"))))
            .collect(),
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

/// Running import jobs: progress events for the admin page's live view.
#[derive(Debug, Default)]
pub struct ImportJobs {
    running: std::sync::Mutex<HashMap<String, broadcast::Sender<JobEvent>>>,
}

/// An event of a running job, as the admin page's event stream sends it.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// After each dump.
    Progress(Progress),
    /// The finished run.
    Finished(Box<MigrationRun>),
}

impl ImportJobs {
    /// Subscribes to a running job's events, if it is running here.
    pub fn subscribe(&self, run_id: &str) -> Option<broadcast::Receiver<JobEvent>> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .map(broadcast::Sender::subscribe)
    }

    /// Registers a job; events sent on the returned sender reach subscribers.
    pub fn start(&self, run_id: &str) -> broadcast::Sender<JobEvent> {
        let (tx, _) = broadcast::channel(256);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.to_string(), tx.clone());
        tx
    }

    /// Forgets a finished job.
    pub fn finish(&self, run_id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }
}
