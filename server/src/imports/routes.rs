//! The import pipeline over HTTP: the admin page's uploads with live progress
//! (`/api/admin/migrations…`) and the browser client's first-run import
//! (`/api/me/legacy-import`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::files::MAX_ZIP_EXPANDED_BYTES;
use super::{DumpInput, ImportOptions, Importer, JobEvent, MAX_DUMPS, Progress, read_dumps};
use crate::auth::{AdminUser, CurrentUser};
use crate::courses::audit;
use crate::error::{ApiError, ApiResult, ErrorBody, Json as JsonBody, Path, Query};
use crate::model::{MigrationRun, Page, RunSource, RunStatus, now_ms};
use crate::state::AppState;
use crate::store::UserRecord;

/// Import routes. Uploads are bounded by `max_upload_bytes` inside the handlers (the general
/// body limit is for ordinary requests), so the default limit is lifted here.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_migration, list_migrations))
        .routes(routes!(get_migration))
        .routes(routes!(migration_events))
        .routes(routes!(legacy_import))
        .layer(DefaultBodyLimit::disable())
}

/// The upload form of `POST /api/admin/migrations`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct MigrationForm {
    /// Dumps: `.json` files (`JSON.stringify(localStorage)`) or `.zip` archives of them.
    #[schema(value_type = Vec<String>, format = Binary)]
    files: Vec<Vec<u8>>,
    /// The user every dump belongs to (account id, email or legacy id); by default each
    /// dump's own legacy user id decides.
    user: Option<String>,
    /// `true`: report what would change, change nothing.
    dry_run: Option<bool>,
}

/// A run was started.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedMigration {
    /// Run id: follow it at `/api/admin/migrations/{id}/events`.
    pub id: String,
    /// Dumps found in the upload.
    pub dumps_total: usize,
    /// Whether this is a dry run.
    pub dry_run: bool,
}

/// Upload dumps and start an import (admins; audited). Answers at once; progress streams at
/// `/api/admin/migrations/{id}/events`.
#[utoipa::path(
    post, path = "/api/admin/migrations", tag = "admin",
    request_body(content = MigrationForm, content_type = "multipart/form-data"),
    responses((status = 202, body = StartedMigration), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn start_migration(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, JsonBody<StartedMigration>)> {
    // Not multipart at all (another content type, no boundary): the one error shape too.
    let mut form =
        form.map_err(|e| ApiError::BadRequest(format!("malformed upload: {}", e.body_text())))?;
    let limit = state.config.max_upload_bytes;
    let mut received = 0usize;
    let mut expanded = 0usize;
    let mut dumps: Vec<DumpInput> = Vec::new();
    let mut names = Vec::new();
    let mut user: Option<String> = None;
    let mut dry_run = false;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed upload: {e}")))?
    {
        let field_name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| ApiError::BadRequest(format!("malformed upload: {e}")))?
        {
            received += chunk.len();
            if received > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        match field_name.as_str() {
            "files" | "file" => {
                let name = file_name.unwrap_or_else(|| format!("upload-{}", names.len() + 1));
                names.push(name.clone());
                let read = read_dumps(&name, bytes);
                // Zips expand: bound what one upload holds in memory, not only what it sends.
                expanded += read
                    .iter()
                    .map(|d| d.text.as_ref().map_or(0, String::len))
                    .sum::<usize>();
                if expanded > MAX_ZIP_EXPANDED_BYTES {
                    return Err(ApiError::PayloadTooLarge);
                }
                dumps.extend(read);
            }
            "user" => {
                let text =
                    String::from_utf8(bytes).map_err(|_| validation("user", "must be text"))?;
                let text = text.trim();
                if !text.is_empty() {
                    user = Some(text.to_string());
                }
            }
            "dry_run" => {
                dry_run = match std::str::from_utf8(&bytes).map(str::trim) {
                    Ok("true" | "1" | "on") => true,
                    Ok("false" | "0" | "off" | "") => false,
                    _ => return Err(validation("dry_run", "must be true or false")),
                };
            }
            other => {
                return Err(validation(
                    other,
                    "unknown form field (expected files, user, dry_run)",
                ));
            }
        }
    }
    if dumps.is_empty() {
        return Err(validation(
            "files",
            "upload at least one .json dump or .zip of dumps",
        ));
    }
    if dumps.len() > MAX_DUMPS {
        return Err(validation(
            "files",
            &format!("at most {MAX_DUMPS} dumps per run"),
        ));
    }
    let user = match user {
        Some(who) => Some(find_user(&state, &who).await?),
        None => None,
    };
    let options = ImportOptions {
        source: RunSource::Admin,
        actor_id: Some(admin.record.user.id.clone()),
        label: label(&names, user.as_ref()),
        user,
        dry_run,
    };
    let importer =
        Importer::new(state.store.clone(), state.sync.clone()).with_catalog(state.catalog.clone());
    let run = importer.begin(dumps.len(), &options).await?;
    audit(
        &state,
        &admin,
        "legacy import started",
        serde_json::json!({ "run_id": run.id, "dumps": dumps.len(), "dry_run": dry_run, "label": run.label }),
    )
    .await;
    let started = StartedMigration {
        id: run.id.clone(),
        dumps_total: dumps.len(),
        dry_run,
    };
    let events = state.imports.start(&run.id);
    let jobs = state.imports.clone();
    let run_id = run.id.clone();
    tokio::spawn(async move {
        let progress = events.clone();
        let result = importer
            .run(run.clone(), dumps, &options, move |p| {
                let _ = progress.send(JobEvent::Progress(p.clone()));
            })
            .await;
        match result {
            Ok(finished) => {
                let _ = events.send(JobEvent::Finished(Box::new(finished)));
            }
            Err(e) => {
                tracing::error!(error = %e, run = %run_id, "legacy import could not record its run");
                let mut failed = run;
                failed.status = RunStatus::Failed;
                failed.errors =
                    serde_json::json!([{ "error": "storage failed while recording the run" }]);
                let _ = events.send(JobEvent::Finished(Box::new(failed)));
            }
        }
        jobs.finish(&run_id);
    });
    Ok((StatusCode::ACCEPTED, JsonBody(started)))
}

fn validation(field: &str, message: &str) -> ApiError {
    ApiError::Validation {
        message: format!("{field}: {message}"),
        field: Some(field.to_string()),
    }
}

/// An account by id, email or legacy id.
async fn find_user(state: &AppState, who: &str) -> ApiResult<UserRecord> {
    if let Some(u) = state.store.user(who).await? {
        return Ok(u);
    }
    if who.contains('@')
        && let Some(u) = state.store.user_by_email(&who.to_lowercase()).await?
    {
        return Ok(u);
    }
    if let Some(u) = state.store.user_by_legacy_id(who).await? {
        return Ok(u);
    }
    Err(ApiError::NotFound("user"))
}

fn label(names: &[String], user: Option<&UserRecord>) -> String {
    let mut label = match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
    };
    if let Some(u) = user {
        label.push_str(&format!(
            " → {}",
            u.user.email.as_deref().unwrap_or(&u.user.id)
        ));
    }
    label
}

/// Query of the run list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// 1–100 (default 20).
    pub limit: Option<u32>,
}

/// Past and running imports, newest first (admins).
#[utoipa::path(
    get, path = "/api/admin/migrations", tag = "admin",
    params(RunsQuery),
    responses((status = 200, body = Page<MigrationRun>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
async fn list_migrations(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(q): Query<RunsQuery>,
) -> ApiResult<JsonBody<Page<MigrationRun>>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    Ok(JsonBody(
        state.store.list_runs(q.cursor.as_deref(), limit).await?,
    ))
}

/// One import run with its per-dump, per-key report (admins).
#[utoipa::path(
    get, path = "/api/admin/migrations/{id}", tag = "admin",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = MigrationRun), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_migration(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
) -> ApiResult<JsonBody<MigrationRun>> {
    state
        .store
        .run(&id)
        .await?
        .map(JsonBody)
        .ok_or(ApiError::NotFound("migration run"))
}

/// Live progress of a run as server-sent events (admins): `progress` events
/// (`{done, total, current}`) after each dump, then one `finished` event with the run. A run
/// that already finished gets its `finished` event at once; a run running on another instance
/// is followed through storage.
/// One event of a migration's progress stream. In OpenAPI 3.1 the `schema` of a
/// `text/event-stream` response describes each event (its `event` and `data` fields), which is
/// how schema-driven clients and fuzzers read it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationEvent {
    /// `progress` (data: the progress so far) or `finished` (data: the run record).
    #[schema(pattern = "^(progress|finished)$")]
    pub event: String,
    /// The event's JSON, as text.
    pub data: String,
}

#[utoipa::path(
    get, path = "/api/admin/migrations/{id}/events", tag = "admin",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "text/event-stream of `progress` and `finished` events", content_type = "text/event-stream", body = MigrationEvent), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn migration_events(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let live = state.imports.subscribe(&id);
    let stored = state
        .store
        .run(&id)
        .await?
        .ok_or(ApiError::NotFound("migration run"))?;
    enum Follow {
        Live(broadcast::Receiver<JobEvent>),
        Stored(Option<MigrationRun>),
        Done,
    }
    let start = match live {
        Some(rx) if stored.status == RunStatus::Running => Follow::Live(rx),
        _ => Follow::Stored(Some(stored)),
    };
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(start, move |follow| {
        let store = store.clone();
        let id = id.clone();
        async move {
            match follow {
                Follow::Done => None,
                Follow::Live(mut rx) => loop {
                    match rx.recv().await {
                        Ok(JobEvent::Progress(p)) => {
                            return Some((Ok(progress_event(&p)), Follow::Live(rx)));
                        }
                        Ok(JobEvent::Finished(run)) => {
                            return Some((Ok(finished_event(&run)), Follow::Done));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            let run = store.run(&id).await.ok().flatten();
                            return run.map(|run| (Ok(finished_event(&run)), Follow::Done));
                        }
                    }
                },
                Follow::Stored(run) => {
                    let run = match run {
                        Some(run) => run,
                        None => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            store.run(&id).await.ok().flatten()?
                        }
                    };
                    if run.status == RunStatus::Running {
                        let p = Progress {
                            done: run.dumps_done as usize,
                            total: run.dumps_total as usize,
                            current: String::new(),
                        };
                        Some((Ok(progress_event(&p)), Follow::Stored(None)))
                    } else {
                        Some((Ok(finished_event(&run)), Follow::Done))
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn progress_event(p: &Progress) -> Event {
    Event::default()
        .event("progress")
        .data(serde_json::to_string(p).unwrap_or_else(|_| "{}".into()))
}

fn finished_event(run: &MigrationRun) -> Event {
    Event::default()
        .event("finished")
        .data(serde_json::to_string(run).unwrap_or_else(|_| "{}".into()))
}

/// The browser client's first-run import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyImport {
    /// The legacy `localStorage` contents: the object `JSON.stringify(localStorage)` encodes
    /// (or that text itself).
    #[schema(value_type = Object)]
    pub dump: Json,
}

/// Import the caller's own legacy `localStorage` (the browser client's first run): settings,
/// enrollments and progress go into the caller's documents (reaching their other devices at
/// once), catalog, reports and logs into the tables. Idempotent; recorded as a run.
#[utoipa::path(
    post, path = "/api/me/legacy-import", tag = "sync",
    request_body = LegacyImport,
    responses((status = 200, body = MigrationRun), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody))
)]
async fn legacy_import(
    State(state): State<AppState>,
    user: CurrentUser,
    body: axum::body::Body,
) -> ApiResult<JsonBody<MigrationRun>> {
    let bytes = axum::body::to_bytes(body, sync_core::import::MAX_DUMP_BYTES + 1024)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let body: LegacyImport = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let text = match body.dump {
        Json::String(text) => text,
        obj @ Json::Object(_) => obj.to_string(),
        _ => return Err(validation("dump", "must be the localStorage object")),
    };
    if let Err(e) = sync_core::import::parse(&text) {
        return Err(validation("dump", &e.to_string()));
    }
    state
        .limits
        .imports
        .check(&user.record.user.id, now_ms())
        .map_err(ApiError::RateLimited)?;
    let options = ImportOptions {
        source: RunSource::Client,
        actor_id: Some(user.record.user.id.clone()),
        user: Some(user.record.clone()),
        dry_run: false,
        label: "browser first run".into(),
    };
    let importer =
        Importer::new(state.store.clone(), state.sync.clone()).with_catalog(state.catalog.clone());
    let run = importer.begin(1, &options).await?;
    let dump = DumpInput {
        name: "localStorage".into(),
        text: Ok(text),
    };
    Ok(JsonBody(
        importer.run(run, vec![dump], &options, |_| {}).await?,
    ))
}
