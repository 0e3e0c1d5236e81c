//! A user's data export: `GET /api/me/export` (the user) and `learnsync admin export-user <id>`
//! (an operator answering a request): everything the platform holds about one user, as one
//! JSON document.
//!
//! Preferences, enrollments and progress are read from the synced documents themselves (the
//! source of truth, through `sync_core::docs`), not from the projection rows, and written as
//! plain JSON; rows the server owns (reports, logs, import runs, tokens) come from the store.
//! The password hash and the secret document namespace are never part of it.

use std::collections::BTreeMap;

use automerge::Automerge;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value as JsonValue;
use sync_core::docs::{DocSpec, course, learning, preferences};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody, Json};
use crate::model::{ApiToken, LogEntry, MigrationRun, Report, Timestamp, User, now_ms};
use crate::state::AppState;
use crate::store::{LogQuery, ReportQuery, Store, StoreError};

/// The format name and version written into every export, so that a reader can tell what it
/// holds when the layout changes.
pub const EXPORT_FORMAT: &str = "learnsync-user-export/1";

/// Export routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(my_export))
}

/// Everything the platform holds about one user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserExport {
    /// `learnsync-user-export/1`.
    pub format: String,
    /// When the export was made.
    pub exported_at: Timestamp,
    /// The account (no password hash: `has_password` says whether there is one).
    pub account: User,
    /// API tokens (names and dates; the secrets are not stored, only their hashes).
    pub api_tokens: Vec<ApiToken>,
    /// Preferences, read from the preferences document; absent if it was never written.
    pub preferences: Option<ExportedPreferences>,
    /// Enrollments and progress, read from the learning index and the course documents.
    pub enrollments: Vec<ExportedEnrollment>,
    /// Every synced document of the user (ids and kinds).
    pub documents: Vec<ExportedDocument>,
    /// Course reports the user filed.
    pub reports: Vec<Report>,
    /// Log entries about the user (client error reports, imported legacy logs, audit entries
    /// of actions the user took as an admin).
    pub logs: Vec<LogEntry>,
    /// Legacy imports the user started.
    pub import_runs: Vec<MigrationRun>,
}

/// The preferences document as plain JSON.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedPreferences {
    /// Every setting (theme and language included), concurrent writes resolved.
    #[schema(value_type = Object)]
    pub settings: BTreeMap<String, JsonValue>,
    /// Raw values of the old app that could not be mapped, kept by the legacy import.
    pub legacy: BTreeMap<String, String>,
}

/// One enrollment with its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedEnrollment {
    /// The course or subject.
    pub course_id: String,
    /// `active` or `unenrolled` (as the learning index records it).
    pub status: String,
    /// First enrollment.
    pub enrolled_at: Option<Timestamp>,
    /// Progress of the current attempt, from the course document; absent if none is stored.
    pub progress: Option<ExportedProgress>,
}

/// A course document's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedProgress {
    /// Current attempt (1 for the first).
    pub attempt: u32,
    /// Percent 0–100 of the current attempt.
    pub progress: f64,
    /// Lessons completed in the current attempt, with when.
    pub completed_lessons: Vec<CompletedLesson>,
    /// Seconds spent, all attempts and devices.
    pub time_spent_secs: i64,
    /// Last activity.
    pub last_activity: Option<Timestamp>,
}

/// A completed lesson.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletedLesson {
    /// Lesson id.
    pub lesson_id: String,
    /// When it was completed.
    pub completed_at: Timestamp,
}

/// A synced document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedDocument {
    /// Document id (automerge-repo).
    pub id: String,
    /// `preferences`, `learning`, `course` or `other`.
    pub kind: String,
    /// The course of a course document.
    pub course_id: Option<String>,
    /// The content of a document of kind `other` (free-form documents of official
    /// automerge-repo clients) as plain JSON; the known kinds are spelled out above.
    #[schema(value_type = Option<Object>)]
    pub content: Option<JsonValue>,
}

/// The export of `user_id`, or `None` if there is no such user.
pub async fn build(store: &dyn Store, user_id: &str) -> Result<Option<UserExport>, StoreError> {
    let Some(record) = store.user(user_id).await? else {
        return Ok(None);
    };
    let mut export = UserExport {
        format: EXPORT_FORMAT.into(),
        exported_at: Timestamp(now_ms()),
        account: record.user,
        api_tokens: store.list_tokens(user_id).await?,
        preferences: None,
        enrollments: Vec::new(),
        documents: Vec::new(),
        reports: all_reports(store, user_id).await?,
        logs: all_logs(store, user_id).await?,
        import_runs: store.runs_by_actor(user_id).await?,
    };
    let mut index: Vec<learning::Enrollment> = Vec::new();
    let mut progress: BTreeMap<String, course::CourseProgress> = BTreeMap::new();
    for info in store.user_documents(user_id).await? {
        let doc = match store.load_document(&info.id).await? {
            Some(stored) => load(&info.id, &stored.chunks),
            None => continue,
        };
        let mut content = None;
        match sync_core::docs::identify(&doc) {
            Some(DocSpec::Preferences) => {
                if let (Ok(settings), Ok(legacy)) =
                    (preferences::all(&doc), preferences::legacy(&doc))
                {
                    export.preferences = Some(ExportedPreferences { settings, legacy });
                }
            }
            Some(DocSpec::Learning) => {
                if let Ok(enrollments) = learning::enrollments(&doc) {
                    index = enrollments;
                }
            }
            Some(DocSpec::Course { .. }) => {
                if let Ok(p) = course::read(&doc) {
                    progress.insert(p.course_id.clone(), p);
                }
            }
            None => {
                content = serde_json::to_value(automerge::AutoSerde::from(&doc)).ok();
            }
        }
        export.documents.push(ExportedDocument {
            id: info.id,
            kind: info.kind,
            course_id: info.course_id,
            content,
        });
    }
    for e in index {
        let p = progress.remove(&e.course_id);
        export.enrollments.push(ExportedEnrollment {
            course_id: e.course_id,
            status: e.status.as_str().into(),
            enrolled_at: e.enrolled_at.map(Timestamp),
            progress: p.map(exported_progress),
        });
    }
    // Progress documents of courses the index does not mention (it should; kept anyway, so
    // that nothing held about the user is left out).
    for (course_id, p) in progress {
        export.enrollments.push(ExportedEnrollment {
            course_id,
            status: "unknown".into(),
            enrolled_at: None,
            progress: Some(exported_progress(p)),
        });
    }
    Ok(Some(export))
}

fn exported_progress(p: course::CourseProgress) -> ExportedProgress {
    ExportedProgress {
        attempt: p.attempt,
        progress: p.progress,
        completed_lessons: p
            .completed
            .into_iter()
            .map(|(lesson_id, at)| CompletedLesson {
                lesson_id,
                completed_at: Timestamp(at),
            })
            .collect(),
        time_spent_secs: p.time_spent_secs,
        last_activity: p.last_activity.map(Timestamp),
    }
}

/// A stored document from its snapshot and change chunks. A chunk that does not load is
/// logged and skipped, as when the sync hub loads the document: it must not hide the others.
fn load(id: &str, chunks: &[Vec<u8>]) -> Automerge {
    let mut doc = Automerge::new();
    for chunk in chunks {
        if let Err(e) = doc.load_incremental(chunk) {
            tracing::warn!(document = %id, error = %e, "a stored chunk did not load; exported without it");
        }
    }
    doc
}

async fn all_reports(store: &dyn Store, user_id: &str) -> Result<Vec<Report>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_reports(&ReportQuery {
                reporter_id: Some(user_id.to_string()),
                cursor,
                limit: 100,
                ..ReportQuery::default()
            })
            .await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

async fn all_logs(store: &dyn Store, user_id: &str) -> Result<Vec<LogEntry>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_logs(&LogQuery {
                user_id: Some(user_id.to_string()),
                cursor,
                limit: 100,
                ..LogQuery::default()
            })
            .await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Download everything the platform holds about you, as one JSON document.
#[utoipa::path(
    get, path = "/api/me/export", tag = "auth",
    responses(
        (status = 200, description = "The export (sent as an attachment)", body = UserExport),
        (status = 401, body = ErrorBody)
    )
)]
async fn my_export(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<impl IntoResponse> {
    let export = build(state.store.as_ref(), user.id())
        .await?
        .ok_or(crate::error::ApiError::Unauthorized)?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"learnsync-export.json\"",
        )],
        Json(export),
    ))
}

/// `learnsync admin export-user <id>`: prints the export of one user (or writes it to a file).
pub async fn run_cli(
    database_url: &str,
    user_id: &str,
    output: Option<&std::path::Path>,
) -> Result<(), crate::cli::CliError> {
    let connected = crate::store::connect(database_url, 2, "cli").await?;
    let store = connected.store();
    store.migrate().await?;
    let export = build(store.as_ref(), user_id)
        .await?
        .ok_or_else(|| crate::cli::CliError::Input(format!("no user with id {user_id}")))?;
    let text = serde_json::to_string_pretty(&export)
        .map_err(|e| crate::cli::CliError::Input(format!("cannot encode the export: {e}")))?;
    match output {
        Some(path) => std::fs::write(path, text + "\n")?,
        None => println!("{text}"),
    }
    Ok(())
}
