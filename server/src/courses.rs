//! `/api/courses`: the catalog — search, filters, keyset pagination, ETags, and a cache of
//! public pages so that the busiest request (browsing the catalog) costs no query at all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, MaybeUser};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::model::{Course, CourseKind, CourseStatus, Lesson, LogLevel, Page, Role, now_ms};
use crate::state::AppState;
use crate::store::{CoursePatch, CourseQuery, CourseSort, NewCourse, NewLog, Visibility};

/// The catalog routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_courses, create_course))
        .routes(routes!(get_course, update_course, delete_course))
}

/// Public catalog pages by query, valid for one catalog version.
#[derive(Debug, Default)]
pub struct CatalogCache {
    version: AtomicU64,
    pages: Mutex<HashMap<String, (u64, String, Bytes)>>,
}

/// Most cached pages (a page is a few KB).
const MAX_CACHED_PAGES: usize = 2048;

impl CatalogCache {
    /// Invalidates every cached page (any course changed, here or on another instance).
    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, key: &str) -> Option<(String, Bytes)> {
        let version = self.version.load(Ordering::Relaxed);
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages
            .get(key)
            .filter(|(v, _, _)| *v == version)
            .map(|(_, etag, body)| (etag.clone(), body.clone()))
    }

    fn put(&self, key: String, version: u64, etag: String, body: Bytes) {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if pages.len() >= MAX_CACHED_PAGES {
            pages.clear();
        }
        pages.insert(key, (version, etag, body));
    }
}

/// Query of `GET /api/courses`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Full-text search over title, description and category (all words, prefix match).
    pub q: Option<String>,
    /// `course` or `subject`.
    pub kind: Option<CourseKind>,
    /// Category, exact.
    pub category: Option<String>,
    /// Level, exact.
    pub level: Option<String>,
    /// Status (learners only ever see `published`).
    pub status: Option<CourseStatus>,
    /// Author's user id.
    pub author: Option<String>,
    /// `-created_at` (default), `created_at`, `title`, `-updated_at`.
    pub sort: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
}

/// `POST /api/courses` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCourse {
    /// Optional id (letters, digits, `-_.:`); a UUID is generated when absent.
    pub id: Option<String>,
    /// Course (default) or subject.
    pub kind: Option<CourseKind>,
    /// 1–200 characters.
    pub title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    pub description: String,
    /// Up to 64 characters.
    pub category: Option<String>,
    /// Up to 64 characters.
    pub level: Option<String>,
    /// Draft (default), published or archived.
    pub status: Option<CourseStatus>,
    /// Up to 500 lessons with unique ids.
    #[serde(default)]
    pub lessons: Vec<Lesson>,
}

/// `PATCH /api/courses/{id}` body: only the fields given change; `null` clears category/level.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCourse {
    /// New title.
    #[serde(default, deserialize_with = "present")]
    pub title: Option<String>,
    /// New description.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    /// New category (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    /// New level (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub level: Option<Option<String>>,
    /// New status.
    #[serde(default, deserialize_with = "present")]
    pub status: Option<CourseStatus>,
    /// New lessons (replace the list).
    #[serde(default, deserialize_with = "present")]
    pub lessons: Option<Vec<Lesson>>,
}

/// A field that may be absent (no change) but not `null`: these fields cannot be cleared, and
/// a client sending `null` should hear so instead of seeing nothing happen.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Checks a single-line text field; trims it.
pub fn line(field: &str, value: &str, min: usize, max: usize) -> ApiResult<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max || v.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min}–{max} characters without control characters"),
        ));
    }
    Ok(v.to_string())
}

/// Checks a multi-line text field.
pub fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    if value.chars().count() > max
        || value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(value.to_string())
}

/// Checks an id given by a client (course ids, lesson ids).
pub fn id(field: &str, value: &str) -> ApiResult<String> {
    if value.is_empty()
        || value.len() > 128
        || !value
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1–128 letters, digits or -_.:"),
        ));
    }
    Ok(value.to_string())
}

fn lessons(list: &[Lesson]) -> ApiResult<Vec<Lesson>> {
    if list.len() > 500 {
        return Err(ApiError::invalid("lessons", "at most 500 lessons"));
    }
    let mut seen = std::collections::HashSet::new();
    list.iter()
        .map(|l| {
            let lesson_id = id("lessons.id", &l.id)?;
            if !seen.insert(lesson_id.clone()) {
                return Err(ApiError::invalid(
                    "lessons.id",
                    format!("duplicate lesson id {lesson_id}"),
                ));
            }
            Ok(Lesson {
                id: lesson_id,
                title: line("lessons.title", &l.title, 1, 200)?,
            })
        })
        .collect()
}

fn optional_line(field: &str, value: &Option<String>) -> ApiResult<Option<String>> {
    value.as_deref().map(|v| line(field, v, 1, 64)).transpose()
}

/// What this reader may see.
fn visibility(user: &Option<CurrentUser>) -> Visibility {
    match user {
        Some(u) if u.role() == Role::Admin => Visibility::All,
        Some(u) if u.role() == Role::Teacher => Visibility::PublishedOrAuthor(u.id().to_string()),
        _ => Visibility::Published,
    }
}

fn may_see(user: &Option<CurrentUser>, course: &Course) -> bool {
    course.status == CourseStatus::Published
        || user
            .as_ref()
            .is_some_and(|u| u.is_admin() || course.author_id.as_deref() == Some(u.id()))
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..32])
}

/// A JSON body with an ETag, or 304 when the client has it already.
fn with_etag(headers: &HeaderMap, etag: &str, body: Bytes, public: bool) -> Response {
    let cache = if public {
        "public, max-age=0, must-revalidate"
    } else {
        "private, max-age=0, must-revalidate"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// List and search the catalog.
#[utoipa::path(
    get, path = "/api/courses", tag = "courses",
    params(ListQuery),
    responses(
        (status = 200, body = Page<Course>, headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn list_courses(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1–100"));
    }
    let sort = match q.sort.as_deref() {
        None => CourseSort::default(),
        Some(s) => CourseSort::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "sort",
                "sort must be -created_at, created_at, title or -updated_at",
            )
        })?,
    };
    for (field, value) in [
        ("q", &q.q),
        ("category", &q.category),
        ("level", &q.level),
        ("author", &q.author),
        ("cursor", &q.cursor),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > 512) {
            return Err(ApiError::invalid(field, format!("{field} is too long")));
        }
    }
    let visibility = visibility(&user);
    let public = visibility == Visibility::Published;
    let cache_key = public.then(|| {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            q.q, q.kind, q.category, q.level, q.status, q.author, sort, q.cursor, limit
        )
    });
    if let Some(key) = &cache_key
        && let Some((etag, body)) = state.catalog.get(key)
    {
        return Ok(with_etag(&headers, &etag, body, true));
    }
    let version = state.catalog.version.load(Ordering::Relaxed);
    let page = state
        .store
        .list_courses(&CourseQuery {
            q: q.q.filter(|s| !s.trim().is_empty()),
            kind: q.kind,
            category: q.category,
            level: q.level,
            status: q.status,
            author: q.author,
            visibility,
            sort,
            cursor: q.cursor,
            limit,
        })
        .await?;
    let body =
        Bytes::from(serde_json::to_vec(&page).map_err(|e| ApiError::Internal(e.to_string()))?);
    let etag = etag_of(&body);
    if let Some(key) = cache_key {
        state.catalog.put(key, version, etag.clone(), body.clone());
    }
    Ok(with_etag(&headers, &etag, body, public))
}

/// Create a course or subject (teachers and admins).
#[utoipa::path(
    post, path = "/api/courses", tag = "courses",
    request_body = CreateCourse,
    responses(
        (status = 201, body = Course), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn create_course(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<CreateCourse>,
) -> ApiResult<(StatusCode, Json<Course>)> {
    user.require(&[Role::Teacher, Role::Admin])?;
    let now = now_ms();
    let course = NewCourse {
        id: match &body.id {
            Some(given) => id("id", given)?,
            None => uuid::Uuid::new_v4().to_string(),
        },
        kind: body.kind.unwrap_or(CourseKind::Course),
        title: line("title", &body.title, 1, 200)?,
        description: text("description", &body.description, 10_000)?,
        category: optional_line("category", &body.category)?,
        level: optional_line("level", &body.level)?,
        status: body.status.unwrap_or(CourseStatus::Draft),
        author_id: Some(user.id().to_string()),
        lessons: lessons(&body.lessons)?,
        extra: serde_json::json!({}),
        created_at: now,
        now,
    };
    let created = state
        .store
        .create_course(&course)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("a course with id {} exists", course.id))
            }
            other => other.into(),
        })?;
    catalog_changed(&state).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One course or subject.
#[utoipa::path(
    get, path = "/api/courses/{id}", tag = "courses",
    params(("id" = String, Path, description = "Course id")),
    responses(
        (status = 200, body = Course, headers(("ETag" = String))), (status = 304, description = "Not modified"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
async fn get_course(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Path(course_id): Path<String>,
) -> ApiResult<Response> {
    let course = state
        .store
        .course(&course_id)
        .await?
        .filter(|c| may_see(&user, c))
        .ok_or(ApiError::NotFound("course"))?;
    let public = course.status == CourseStatus::Published;
    let body =
        Bytes::from(serde_json::to_vec(&course).map_err(|e| ApiError::Internal(e.to_string()))?);
    let etag = etag_of(&body);
    Ok(with_etag(&headers, &etag, body, public))
}

/// Change a course (its author or an admin).
#[utoipa::path(
    patch, path = "/api/courses/{id}", tag = "courses",
    params(("id" = String, Path, description = "Course id")),
    request_body = UpdateCourse,
    responses(
        (status = 200, body = Course), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
async fn update_course(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(course_id): Path<String>,
    Json(body): Json<UpdateCourse>,
) -> ApiResult<Json<Course>> {
    let existing = state
        .store
        .course(&course_id)
        .await?
        .filter(|c| may_see(&Some(user.clone()), c))
        .ok_or(ApiError::NotFound("course"))?;
    if !user.is_admin() && existing.author_id.as_deref() != Some(user.id()) {
        return Err(ApiError::Forbidden(
            "only the course's author or an admin may change it".into(),
        ));
    }
    let patch = CoursePatch {
        title: body
            .title
            .as_deref()
            .map(|t| line("title", t, 1, 200))
            .transpose()?,
        description: body
            .description
            .as_deref()
            .map(|t| text("description", t, 10_000))
            .transpose()?,
        category: body
            .category
            .map(|c| optional_line("category", &c))
            .transpose()?,
        level: body.level.map(|l| optional_line("level", &l)).transpose()?,
        status: body.status,
        lessons: body.lessons.as_deref().map(lessons).transpose()?,
    };
    let updated = state
        .store
        .update_course(&course_id, &patch, now_ms())
        .await?
        .ok_or(ApiError::NotFound("course"))?;
    catalog_changed(&state).await;
    Ok(Json(updated))
}

/// Archive a course (admins; a soft delete: enrollments and progress stay).
#[utoipa::path(
    delete, path = "/api/courses/{id}", tag = "courses",
    params(("id" = String, Path, description = "Course id")),
    responses(
        (status = 204, description = "Archived"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
async fn delete_course(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(course_id): Path<String>,
) -> ApiResult<StatusCode> {
    user.require(&[Role::Admin])?;
    let patch = CoursePatch {
        status: Some(CourseStatus::Archived),
        ..CoursePatch::default()
    };
    state
        .store
        .update_course(&course_id, &patch, now_ms())
        .await?
        .ok_or(ApiError::NotFound("course"))?;
    catalog_changed(&state).await;
    audit(
        &state,
        &user,
        "course archived",
        serde_json::json!({ "course_id": course_id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Invalidates cached catalog pages here and on the other instances.
pub async fn catalog_changed(state: &AppState) {
    state.catalog.bump();
    if let Err(e) = state.store.broadcast("catalog").await {
        tracing::warn!(error = %e, "other instances not told about a catalog change");
    }
}

/// Writes an admin action to the audit log (failures are logged, never fail the action).
pub async fn audit(
    state: &AppState,
    actor: &CurrentUser,
    message: &str,
    context: serde_json::Value,
) {
    let entry = NewLog {
        level: LogLevel::Info,
        source: "audit".into(),
        message: message.into(),
        context: Some(context),
        user_id: Some(actor.id().to_string()),
        request_id: None,
        legacy_key: None,
        created_at: now_ms(),
    };
    if let Err(e) = state.store.insert_logs(&[entry]).await {
        tracing::error!(error = %e, message, "audit entry not written");
    }
}
