//! Import of the old learnMode app's `localStorage` (`JSON.stringify(localStorage)`).
//!
//! Two steps, both pure:
//! 1. [`parse`] reads a whole dump, tolerating the mess real browsers hold (ids as numbers or
//!    text, progress as fractions or percentages, ISO or epoch dates, bare or JSON-quoted
//!    strings, overlapping enrollment keys, duplicates, invalid JSON in one key, unknown keys)
//!    into a [`Dump`]: typed catalog, report and log rows for the server's tables, enrollments
//!    per legacy user, settings, and every value it could not map, kept raw ([`KeptValue`]).
//! 2. A [`UserImport`] (from [`Dump::for_user`]) applies one user's part to that user's
//!    documents, as ordinary edits: the server runs them inside its hub, the browser client
//!    inside its own. Each apply is idempotent (a second run writes nothing) and never
//!    overwrites what the user already set through sync: settings already set are kept, an
//!    enrollment already present keeps its status, progress only goes up, and legacy progress
//!    goes into attempt 1, never into an attempt the user started over with.
//!
//! Every value ends up somewhere: imported, merged, or skipped with a reason and kept raw (in
//! the preferences document's legacy map when the dump belongs to a user, else in the run
//! record). Each step returns [`KeyReport`] rows saying which.

mod apply;
pub mod generate;
mod parse;
mod report;
mod values;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value as Json;

pub use apply::UserImport;
pub use parse::parse;
pub use report::{KeyReport, Outcome, Report};

/// The keys of the old app this import understands.
pub const KNOWN_KEYS: [&str; 11] = [
    "learnModeCourses",
    "learnModeSubjects",
    "adminSubjects",
    "userEnrollments",
    "courseEnrollments",
    "subjectEnrollments",
    "theme",
    "language",
    "moderationQueue",
    "moderationData",
    "errorLog",
];

/// Largest dump accepted, in bytes: browsers cap `localStorage` at 5–10 MB per origin, so
/// anything much larger is not a dump.
pub const MAX_DUMP_BYTES: usize = 32 * 1024 * 1024;

/// Largest raw value kept in a user's preferences document; larger unmapped values are kept in
/// the run record only, so one stray cache key cannot bloat a document every device syncs.
pub const MAX_KEPT_IN_DOCUMENT: usize = 16 * 1024;

/// Why a dump could not be read at all. A dump that parses as a JSON object is always
/// accepted; problems inside it are reported per key instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not JSON.
    #[error("the dump is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object of keys.
    #[error("the dump is not a JSON object of localStorage keys (found {0})")]
    NotAnObject(&'static str),
    /// Too large.
    #[error("the dump is larger than {MAX_DUMP_BYTES} bytes")]
    TooLarge,
}

/// A catalog entry is a course or a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// From `learnModeCourses`.
    Course,
    /// From `learnModeSubjects` or `adminSubjects`.
    Subject,
}

/// Publication status of an imported catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogStatus {
    /// Visible to its author and admins.
    Draft,
    /// Visible to everyone (the default: the old app showed every entry).
    Published,
    /// Soft-deleted.
    Archived,
}

/// A lesson of a course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyLesson {
    /// Lesson id.
    pub id: String,
    /// Title (the id when the old app had none).
    pub title: String,
}

/// A course or subject for the server's `courses` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEntry {
    /// The key it came from.
    pub source: &'static str,
    /// Id, as text.
    pub id: String,
    /// Course or subject.
    pub kind: CatalogKind,
    /// Title (`title` or `name`).
    pub title: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: Option<String>,
    /// Level.
    pub level: Option<String>,
    /// Status.
    pub status: CatalogStatus,
    /// The author's legacy user id.
    pub author: Option<String>,
    /// Lessons, in order, without duplicates.
    pub lessons: Vec<LegacyLesson>,
    /// Creation time (epoch ms).
    pub created_at: Option<i64>,
    /// Every field that has no column, as it was (e.g. a subject's `courses`).
    pub extra: serde_json::Map<String, Json>,
}

/// One user's enrollment in one course or subject, merged over the enrollment keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyEnrollment {
    /// Course or subject id.
    pub course_id: String,
    /// The keys that mention it; the first is where it is reported as imported, the others as
    /// merged.
    pub sources: Vec<&'static str>,
    /// Earliest enrollment time given.
    pub enrolled_at: Option<i64>,
    /// Highest progress given, in percent.
    pub progress: Option<f64>,
    /// Completed lessons (a set).
    pub completed: BTreeSet<String>,
    /// Latest activity time given.
    pub last_activity: Option<i64>,
    /// Whether every source that gave a status said the user left the course.
    pub unenrolled: bool,
    /// Fields that have no place in the documents, as they were.
    pub extra: serde_json::Map<String, Json>,
    /// How messy values were read.
    pub notes: Vec<String>,
}

/// A setting of the old app (`theme`, `language`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacySetting {
    /// The value as stored.
    pub raw: String,
    /// The value to import, if valid.
    pub value: Option<String>,
    /// How it was read, or why it is not valid.
    pub note: Option<String>,
}

/// State of an imported report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    /// Waiting for a moderator.
    Pending,
    /// Acted upon.
    Resolved,
    /// Rejected.
    Dismissed,
}

/// A course report from `moderationQueue`, with its decision from `moderationData`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyReport {
    /// The old app's report id, or a content fingerprint (`h:…`) when it had none.
    pub legacy_id: String,
    /// The reported course.
    pub course_id: String,
    /// Reason.
    pub reason: String,
    /// Details.
    pub details: Option<String>,
    /// Reporter's legacy user id.
    pub reporter: Option<String>,
    /// State.
    pub state: ReportState,
    /// Moderator's note.
    pub note: Option<String>,
    /// Moderator's legacy user id.
    pub resolved_by: Option<String>,
    /// When it was decided.
    pub resolved_at: Option<i64>,
    /// When it was filed.
    pub created_at: Option<i64>,
    /// Unmapped fields of the report and its decision.
    pub extra: serde_json::Map<String, Json>,
}

/// Severity of an imported log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSeverity {
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something odd.
    Warn,
    /// A failure (the default: the key is `errorLog`).
    Error,
}

/// An entry of `errorLog`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyLog {
    /// A fingerprint of the entry's content, stable across runs, so a re-import inserts nothing.
    pub fingerprint: String,
    /// Severity.
    pub level: LogSeverity,
    /// Message.
    pub message: String,
    /// When (epoch ms).
    pub created_at: Option<i64>,
    /// Every other field (stack, url, …), as it was.
    pub context: serde_json::Map<String, Json>,
}

/// A value nothing maps to, or that could not be read: kept as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptValue {
    /// The key it was stored under (`key` for a whole value, `key[i]` for one entry).
    pub key: String,
    /// The report row it belongs to (the top-level key).
    pub report_key: String,
    /// The raw text.
    pub raw: String,
    /// Why it was not imported.
    pub reason: String,
}

/// A parsed dump.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dump {
    /// Every top-level key, in the dump's order.
    pub keys: Vec<String>,
    /// Catalog entries, first occurrence of each id.
    pub catalog: Vec<CatalogEntry>,
    /// Enrollments per legacy user id (`None`: entries that name no user, which belong to the
    /// dump's own user), then per course id.
    pub enrollments: BTreeMap<Option<String>, BTreeMap<String, LegacyEnrollment>>,
    /// `theme`.
    pub theme: Option<LegacySetting>,
    /// `language`.
    pub language: Option<LegacySetting>,
    /// Reports.
    pub reports: Vec<LegacyReport>,
    /// Log entries.
    pub logs: Vec<LegacyLog>,
    /// What could not be mapped, kept raw.
    pub kept: Vec<KeptValue>,
    /// What parsing alone could tell: duplicates merged, entries skipped and why.
    #[serde(skip)]
    pub report: Report,
}

impl Dump {
    /// The legacy user ids the dump's enrollment keys name.
    pub fn legacy_users(&self) -> Vec<String> {
        self.enrollments.keys().flatten().cloned().collect()
    }

    /// The dump's own user, when the dump tells: the only legacy user its enrollments name.
    pub fn owner_hint(&self) -> Option<String> {
        let users = self.legacy_users();
        match users.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        }
    }

    /// The part of the dump that goes into one user's documents. `Some(id)`: that legacy
    /// user's enrollments plus the entries that name no user; `None`: every enrollment in the
    /// dump (a dump explicitly tied to one user). Settings and kept values come along; use
    /// [`UserImport::enrollments_only`] for the other users a shared browser's dump names.
    pub fn for_user(&self, legacy_user: Option<&str>) -> UserImport {
        let mut enrollments: BTreeMap<String, LegacyEnrollment> = BTreeMap::new();
        for (user, courses) in &self.enrollments {
            let wanted = match (legacy_user, user) {
                (None, _) | (_, None) => true,
                (Some(want), Some(have)) => want == have,
            };
            if !wanted {
                continue;
            }
            for (course, e) in courses {
                match enrollments.get_mut(course) {
                    Some(existing) => parse::merge_enrollment(existing, e.clone()),
                    None => {
                        enrollments.insert(course.clone(), e.clone());
                    }
                }
            }
        }
        let catalog_ids = self.catalog.iter().map(|c| c.id.clone()).collect();
        UserImport::new(
            enrollments,
            self.theme.clone(),
            self.language.clone(),
            self.kept.clone(),
            catalog_ids,
        )
    }
}

#[cfg(test)]
mod tests;
