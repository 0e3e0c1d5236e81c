//! `/api/admin/*` for people who run the platform: users, forced sync, connected devices,
//! analytics. Every change here is written to the audit log.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sync_core::hub::ResyncScope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::courses::audit;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::model::{Device, Page, Role, User, now_ms};
use crate::state::AppState;
use crate::store::{CourseStats, DailyCount, UserPatch, UserQuery};

/// Admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(update_user))
        .routes(routes!(force_sync))
        .routes(routes!(devices))
        .routes(routes!(course_analytics))
        .routes(routes!(enrollment_analytics))
        .routes(routes!(active_users))
}

/// Query of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// Role filter.
    pub role: Option<Role>,
    /// Part of the email or name.
    pub q: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// 1–100 (default 50).
    pub limit: Option<u32>,
}

/// Changes to a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    pub role: Option<Role>,
    /// Disable (true) or enable (false) the account.
    pub disabled: Option<bool>,
}

/// Who a forced sync reaches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceSync {
    /// A user id, or `all`.
    pub user: String,
}

/// What a forced sync did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForcedSync {
    /// `all` or the user id.
    pub scope: String,
    /// The new epoch (devices that were offline resync when they see it).
    pub epoch: i64,
    /// Connected devices told at once, on this instance.
    pub devices_notified: usize,
}

/// Query of the device list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DevicesQuery {
    /// Only this user's devices.
    pub user_id: Option<String>,
}

/// Query of the daily series.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// Days back from today (1–366, default 30).
    pub days: Option<u32>,
    /// Only this course.
    pub course_id: Option<String>,
    /// `enrollments` (default) or `completions`.
    pub metric: Option<String>,
}

/// Query of the active-users series: activity is counted per user, over all courses.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ActiveUsersQuery {
    /// Days back from today (1–366, default 30).
    pub days: Option<u32>,
}

/// Query of the per-course analytics.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CoursesQuery {
    /// Most courses (1–100, default 20).
    pub limit: Option<u32>,
}

/// A daily series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// What is counted.
    pub metric: String,
    /// One point per day that has any.
    pub points: Vec<DailyCount>,
}

/// List users (admins).
#[utoipa::path(
    get, path = "/api/admin/users", tag = "admin",
    params(UsersQuery),
    responses((status = 200, body = Page<User>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<UsersQuery>,
) -> ApiResult<Json<Page<User>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1–100"));
    }
    if q.q.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(ApiError::invalid("q", "q is too long"));
    }
    let page = state
        .store
        .list_users(&UserQuery {
            role: q.role,
            q: q.q,
            cursor: q.cursor,
            limit,
        })
        .await?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|u| u.user).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Change a user's role or disable the account (admins; audited).
#[utoipa::path(
    patch, path = "/api/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    request_body = UpdateUser,
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "An admin cannot disable or demote themselves", body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(user_id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    if user_id == admin.id()
        && (body.disabled == Some(true) || body.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::Conflict(
            "admins cannot disable or demote themselves".into(),
        ));
    }
    let updated = state
        .store
        .update_user(
            &user_id,
            &UserPatch {
                role: body.role,
                disabled: body.disabled,
                ..UserPatch::default()
            },
            now_ms(),
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::NotFound("user"),
            other => other.into(),
        })?;
    if body.disabled == Some(true) {
        state.sync.disconnect_user(&user_id, "account disabled");
        let _ = state
            .store
            .broadcast(&format!("disconnect\t{user_id}"))
            .await;
    }
    audit(
        &state,
        &admin,
        "user changed",
        serde_json::json!({ "user_id": user_id, "role": body.role, "disabled": body.disabled }),
    )
    .await;
    Ok(Json(updated.user))
}

/// Force a full resync of one user's devices, or everyone's (admins; audited).
#[utoipa::path(
    post, path = "/api/admin/sync", tag = "admin",
    request_body = ForceSync,
    responses((status = 200, body = ForcedSync), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn force_sync(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(body): Json<ForceSync>,
) -> ApiResult<Json<ForcedSync>> {
    let (scope, epoch, event) = if body.user == "all" {
        let epoch = state.store.bump_sync_epoch(None).await?;
        (ResyncScope::All, epoch, format!("resync\tall\t{epoch}"))
    } else {
        if state.store.user(&body.user).await?.is_none() {
            return Err(ApiError::NotFound("user"));
        }
        let epoch = state.store.bump_sync_epoch(Some(&body.user)).await?;
        (
            ResyncScope::User(body.user.clone()),
            epoch,
            format!("resync\tuser\t{}\t{epoch}", body.user),
        )
    };
    let devices = state
        .store
        .list_devices(match &scope {
            ResyncScope::User(u) => Some(u.as_str()),
            ResyncScope::All => None,
        })
        .await?
        .into_iter()
        .filter(|d| d.instance_id == state.sync.instance_id())
        .count();
    state
        .sync
        .resync_local(scope, u64::try_from(epoch).unwrap_or(0));
    if let Err(e) = state.store.broadcast(&event).await {
        tracing::warn!(error = %e, "other instances not told about the forced sync");
    }
    audit(
        &state,
        &admin,
        "forced sync",
        serde_json::json!({ "scope": body.user, "epoch": epoch }),
    )
    .await;
    Ok(Json(ForcedSync {
        scope: body.user,
        epoch,
        devices_notified: devices,
    }))
}

/// Connected devices on every instance (admins).
#[utoipa::path(
    get, path = "/api/admin/devices", tag = "admin",
    params(DevicesQuery),
    responses((status = 200, body = Vec<Device>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn devices(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<DevicesQuery>,
) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(state.store.list_devices(q.user_id.as_deref()).await?))
}

/// Enrollments, completions and average progress per course (admins).
#[utoipa::path(
    get, path = "/api/admin/analytics/courses", tag = "admin",
    params(CoursesQuery),
    responses((status = 200, body = Vec<CourseStats>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn course_analytics(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<CoursesQuery>,
) -> ApiResult<Json<Vec<CourseStats>>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1–100"));
    }
    Ok(Json(state.store.course_stats(limit).await?))
}

fn window(days: Option<u32>) -> ApiResult<(i64, i64)> {
    let days = days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "days must be 1–366"));
    }
    let now = now_ms();
    let today = now - now.rem_euclid(86_400_000);
    Ok((today - i64::from(days - 1) * 86_400_000, today + 86_400_000))
}

/// New enrollments or completions per day (admins).
#[utoipa::path(
    get, path = "/api/admin/analytics/enrollments", tag = "admin",
    params(SeriesQuery),
    responses((status = 200, body = Series), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn enrollment_analytics(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<SeriesQuery>,
) -> ApiResult<Json<Series>> {
    let (from, to) = window(q.days)?;
    let completions = match q.metric.as_deref() {
        None | Some("enrollments") => false,
        Some("completions") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "metric",
                "metric must be enrollments or completions",
            ));
        }
    };
    let points = state
        .store
        .daily_enrollments(completions, q.course_id.as_deref(), from, to)
        .await?;
    Ok(Json(Series {
        metric: if completions {
            "completions"
        } else {
            "enrollments"
        }
        .into(),
        points,
    }))
}

/// Users with learning activity per day (admins).
#[utoipa::path(
    get, path = "/api/admin/analytics/active-users", tag = "admin",
    params(ActiveUsersQuery),
    responses((status = 200, body = Series), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn active_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(q): Query<ActiveUsersQuery>,
) -> ApiResult<Json<Series>> {
    let (from, to) = window(q.days)?;
    Ok(Json(Series {
        metric: "active_users".into(),
        points: state.store.daily_active_users(from, to).await?,
    }))
}
