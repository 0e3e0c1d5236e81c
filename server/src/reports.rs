//! Course reports: learners report a course (`/api/reports`), moderators work the queue
//! (`/api/admin/reports`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminUser, CurrentUser};
use crate::courses::{audit, id, line, text};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::model::{CourseStatus, Page, Report, ReportStatus, now_ms};
use crate::state::AppState;
use crate::store::{NewReport, ReportQuery};

/// Report routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_report, my_reports))
        .routes(routes!(get_report))
        .routes(routes!(queue))
        .routes(routes!(resolve))
}

/// `POST /api/reports` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    /// The course.
    pub course_id: String,
    /// Why (1–500 characters).
    pub reason: String,
    /// More (up to 5,000 characters).
    pub details: Option<String>,
}

/// `POST /api/admin/reports/{id}/resolve` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveReport {
    /// `resolved` or `dismissed`.
    pub status: ReportStatus,
    /// Moderator's note (up to 2,000 characters).
    pub note: Option<String>,
}

/// Query of the moderation queue.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Status filter.
    pub status: Option<ReportStatus>,
    /// Course filter.
    pub course_id: Option<String>,
    /// Reporter filter.
    pub reporter_id: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// 1–100 (default 50).
    pub limit: Option<u32>,
}

/// Query of the user's own reports.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MineQuery {
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// 1–100 (default 50).
    pub limit: Option<u32>,
}

fn limit(l: Option<u32>) -> ApiResult<u32> {
    let l = l.unwrap_or(50);
    if (1..=100).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::invalid("limit", "limit must be 1–100"))
    }
}

/// Report a course.
#[utoipa::path(
    post, path = "/api/reports", tag = "reports",
    request_body = CreateReport,
    responses(
        (status = 201, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)
    )
)]
async fn create_report(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<CreateReport>,
) -> ApiResult<(StatusCode, Json<Report>)> {
    let course_id = id("course_id", &body.course_id)?;
    let reason = line("reason", &body.reason, 1, 500)?;
    let details = body
        .details
        .as_deref()
        .map(|d| text("details", d, 5_000))
        .transpose()?;
    state
        .limits
        .reports
        .check(user.id(), now_ms())
        .map_err(ApiError::RateLimited)?;
    let course = state.store.course(&course_id).await?;
    let visible = course.is_some_and(|c| {
        c.status == CourseStatus::Published
            || user.is_admin()
            || c.author_id.as_deref() == Some(user.id())
    });
    if !visible {
        return Err(ApiError::NotFound("course"));
    }
    let report = state
        .store
        .create_report(&NewReport {
            id: uuid::Uuid::new_v4().to_string(),
            course_id,
            reporter_id: Some(user.id().to_string()),
            reason,
            details,
            status: ReportStatus::Pending,
            note: None,
            resolved_by: None,
            resolved_at: None,
            legacy_id: None,
            extra: serde_json::json!({}),
            created_at: now_ms(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(report)))
}

/// The reports the user filed.
#[utoipa::path(
    get, path = "/api/reports", tag = "reports",
    params(MineQuery),
    responses((status = 200, body = Page<Report>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn my_reports(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<MineQuery>,
) -> ApiResult<Json<Page<Report>>> {
    Ok(Json(
        state
            .store
            .list_reports(&ReportQuery {
                reporter_id: Some(user.id().to_string()),
                cursor: q.cursor,
                limit: limit(q.limit)?,
                ..ReportQuery::default()
            })
            .await?,
    ))
}

/// One report (its reporter or an admin).
#[utoipa::path(
    get, path = "/api/reports/{id}", tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_report(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(report_id): Path<String>,
) -> ApiResult<Json<Report>> {
    let report = state
        .store
        .report(&report_id)
        .await?
        .filter(|r| user.is_admin() || r.reporter_id.as_deref() == Some(user.id()))
        .ok_or(ApiError::NotFound("report"))?;
    Ok(Json(report))
}

/// The moderation queue (admins), newest first.
#[utoipa::path(
    get, path = "/api/admin/reports", tag = "admin",
    params(QueueQuery),
    responses(
        (status = 200, body = Page<Report>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn queue(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<QueueQuery>,
) -> ApiResult<Json<Page<Report>>> {
    Ok(Json(
        state
            .store
            .list_reports(&ReportQuery {
                status: q.status,
                course_id: q.course_id,
                reporter_id: q.reporter_id,
                cursor: q.cursor,
                limit: limit(q.limit)?,
            })
            .await?,
    ))
}

/// Resolve or dismiss a report with a note (admins; audited).
#[utoipa::path(
    post, path = "/api/admin/reports/{id}/resolve", tag = "admin",
    params(("id" = String, Path, description = "Report id")),
    request_body = ResolveReport,
    responses(
        (status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn resolve(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(report_id): Path<String>,
    Json(body): Json<ResolveReport>,
) -> ApiResult<Json<Report>> {
    if body.status == ReportStatus::Pending {
        return Err(ApiError::invalid(
            "status",
            "status must be resolved or dismissed",
        ));
    }
    let note = body
        .note
        .as_deref()
        .map(|n| text("note", n, 2_000))
        .transpose()?;
    let report = state
        .store
        .resolve_report(
            &report_id,
            body.status,
            note.as_deref(),
            admin.id(),
            now_ms(),
        )
        .await?
        .ok_or(ApiError::NotFound("report"))?;
    audit(
        &state,
        &admin,
        &format!("report {}", body.status),
        serde_json::json!({ "report_id": report_id, "status": body.status, "note": note }),
    )
    .await;
    Ok(Json(report))
}
