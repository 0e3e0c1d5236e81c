//! Client error ingest (`POST /api/logs`) and the admin log query (`GET /api/admin/logs`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value as Json_;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminUser, CurrentUser};
use crate::courses::line;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::model::{LogEntry, LogLevel, Page, Timestamp, now_ms};
use crate::state::AppState;
use crate::store::{LogQuery, NewLog};

/// Largest accepted `context`, serialised.
const MAX_CONTEXT_BYTES: usize = 8 * 1024;

/// Log routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(query))
}

/// A client-side error report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientLog {
    /// Severity (default `error`).
    pub level: Option<LogLevel>,
    /// What happened (1–2,000 characters).
    pub message: String,
    /// Anything structured (stack, url, app version), up to 8 KiB.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Json_>,
}

/// Query of the system log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Severity.
    pub level: Option<LogLevel>,
    /// Source: `client` (reported by apps), `audit` (admin actions), `sync`, `legacy-import`
    /// (the old app's `errorLog`, imported).
    pub source: Option<String>,
    /// User id.
    pub user_id: Option<String>,
    /// From (RFC 3339, inclusive).
    pub from: Option<String>,
    /// To (RFC 3339, exclusive).
    pub to: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// 1–100 (default 50).
    pub limit: Option<u32>,
}

/// Report a client-side error (authenticated, size- and rate-limited).
#[utoipa::path(
    post, path = "/api/logs", tag = "logs",
    request_body = ClientLog,
    responses(
        (status = 202, description = "Recorded"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)
    )
)]
async fn ingest(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Json(body): Json<ClientLog>,
) -> ApiResult<StatusCode> {
    let message = line(
        "message",
        &body.message.replace(['\n', '\r', '\t'], " "),
        1,
        2_000,
    )?;
    let mut context = body.context.unwrap_or(Json_::Null);
    if serde_json::to_vec(&context)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
        > MAX_CONTEXT_BYTES
    {
        return Err(ApiError::invalid(
            "context",
            "context must be at most 8 KiB",
        ));
    }
    if let Some(agent) = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        let agent: String = agent.chars().take(256).collect();
        context = match context {
            Json_::Object(mut m) => {
                m.insert("user_agent".into(), agent.into());
                Json_::Object(m)
            }
            Json_::Null => serde_json::json!({ "user_agent": agent }),
            other => serde_json::json!({ "value": other, "user_agent": agent }),
        };
    }
    state
        .limits
        .client_logs
        .check(user.id(), now_ms())
        .map_err(ApiError::RateLimited)?;
    state
        .store
        .insert_logs(&[NewLog {
            level: body.level.unwrap_or(LogLevel::Error),
            source: "client".into(),
            message,
            context: Some(context),
            user_id: Some(user.id().to_string()),
            // The id comes from the client (or the request-id layer): keep a bounded prefix.
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|id| id.chars().take(128).collect()),
            legacy_key: None,
            created_at: now_ms(),
        }])
        .await?;
    Ok(StatusCode::ACCEPTED)
}

fn time(field: &str, value: &Option<String>) -> ApiResult<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            Timestamp::parse(v).map(|t| t.0).ok_or_else(|| {
                ApiError::invalid(field, format!("{field} must be an RFC 3339 timestamp"))
            })
        })
        .transpose()
}

/// Query the system log (admins), newest first.
#[utoipa::path(
    get, path = "/api/admin/logs", tag = "admin",
    params(LogsQuery),
    responses(
        (status = 200, body = Page<LogEntry>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn query(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<Page<LogEntry>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1–100"));
    }
    Ok(Json(
        state
            .store
            .list_logs(&LogQuery {
                level: q.level,
                source: q.source,
                user_id: q.user_id,
                from: time("from", &q.from)?,
                to: time("to", &q.to)?,
                cursor: q.cursor,
                limit,
            })
            .await?,
    ))
}
