//! `/api/preferences` and `/api/enrollments`: REST over the synced documents.
//!
//! Reads come from the projection rows; writes become changes on the user's documents through
//! the sync engine (stored, projected and fanned out to the user's connected devices before the
//! response is sent), exactly like a change made on a device.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use sync_core::docs::{DocSpec, course, learning, preferences, projection};
use sync_core::hub::{EditError, StorageFailure};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::courses::id;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::model::{CourseStatus, Enrollment, EnrollmentStatus, Preferences, now_ms};
use crate::state::AppState;

/// Preference and enrollment routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_preferences, put_preferences, patch_preferences))
        .routes(routes!(list_enrollments, enroll))
        .routes(routes!(get_enrollment, update_enrollment, unenroll))
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Doc(d) => d.into(),
            EditError::Storage(StorageFailure::Unavailable(_)) => ApiError::Unavailable,
            EditError::Storage(StorageFailure::Rejected(why)) => ApiError::Conflict(why),
        }
    }
}

/// `PUT /api/preferences`: the complete preferences (anything not given is removed).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPreferences {
    /// `light`, `dark` or `system`.
    pub theme: Option<String>,
    /// A language tag.
    pub language: Option<String>,
    /// Every other setting.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: BTreeMap<String, JsonValue>,
}

/// `PATCH /api/preferences`: only the keys given change; `null` removes a key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPreferences {
    /// `light`, `dark`, `system`, or `null` to remove.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub theme: Option<JsonValue>,
    /// A language tag, or `null` to remove.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub language: Option<JsonValue>,
    /// Settings to set (`null` removes).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: BTreeMap<String, JsonValue>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<JsonValue>, D::Error> {
    JsonValue::deserialize(d).map(Some)
}

/// `POST /api/enrollments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// The course or subject.
    pub course_id: String,
}

/// `PATCH /api/enrollments/{course_id}` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnrollment {
    /// New progress of the current attempt (0–100); it never goes down.
    pub progress: Option<f64>,
    /// Lessons to mark completed.
    #[serde(default)]
    pub completed_lessons: Vec<String>,
    /// Seconds to add to the time spent (0–86,400).
    pub add_time_secs: Option<i64>,
    /// Start a new attempt (before the other fields apply).
    #[serde(default)]
    pub restart: bool,
}

/// Enrollments with totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentList {
    /// Every enrollment.
    pub items: Vec<Enrollment>,
    /// Totals.
    pub stats: EnrollmentStats,
}

/// Totals over a user's enrollments.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentStats {
    /// All enrollments.
    pub total: usize,
    /// Active.
    pub active: usize,
    /// Completed.
    pub completed: usize,
    /// Unenrolled (progress kept).
    pub unenrolled: usize,
    /// Mean progress of active and completed enrollments.
    pub average_progress: f64,
    /// Seconds spent in all courses.
    pub time_spent_secs: i64,
}

fn prefs_from_row(row: projection::PreferencesRow) -> Preferences {
    Preferences {
        theme: row.theme,
        language: row.language,
        settings: serde_json::to_value(row.settings).unwrap_or(JsonValue::Null),
        updated_at: Some(crate::model::Timestamp::now()),
    }
}

/// The user's preferences.
#[utoipa::path(
    get, path = "/api/preferences", tag = "preferences",
    responses((status = 200, body = Preferences), (status = 401, body = ErrorBody))
)]
async fn get_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Json<Preferences>> {
    Ok(Json(state.store.preferences(user.id()).await?.unwrap_or(
        Preferences {
            theme: None,
            language: None,
            settings: serde_json::json!({}),
            updated_at: None,
        },
    )))
}

fn validate_all(settings: &BTreeMap<String, JsonValue>) -> ApiResult<()> {
    if settings.len() > preferences::MAX_KEYS {
        return Err(ApiError::invalid(
            "settings",
            format!("at most {} settings", preferences::MAX_KEYS),
        ));
    }
    for (k, v) in settings {
        if !v.is_null() {
            preferences::validate(k, v).map_err(|e| ApiError::invalid(k, e.to_string()))?;
        }
    }
    Ok(())
}

/// Replace all preferences.
#[utoipa::path(
    put, path = "/api/preferences", tag = "preferences",
    request_body = PutPreferences,
    responses((status = 200, body = Preferences), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn put_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<PutPreferences>,
) -> ApiResult<Json<Preferences>> {
    let mut wanted = body.settings;
    if let Some(t) = body.theme {
        wanted.insert("theme".into(), JsonValue::String(t));
    }
    if let Some(l) = body.language {
        wanted.insert("language".into(), JsonValue::String(l));
    }
    validate_all(&wanted)?;
    let now = now_ms();
    let row = state
        .sync
        .edit(&user.record, DocSpec::Preferences, move |doc| {
            for key in preferences::all(doc)?.keys() {
                if !wanted.contains_key(key) {
                    preferences::remove(doc, key)?;
                }
            }
            for (k, v) in &wanted {
                if v.is_null() {
                    preferences::remove(doc, k)?;
                } else {
                    preferences::set(doc, k, v, now)?;
                }
            }
            projection::preferences_row(doc)
        })
        .await?;
    Ok(Json(prefs_from_row(row)))
}

/// Change some preferences.
#[utoipa::path(
    patch, path = "/api/preferences", tag = "preferences",
    request_body = PatchPreferences,
    responses((status = 200, body = Preferences), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn patch_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<PatchPreferences>,
) -> ApiResult<Json<Preferences>> {
    let mut changes = body.settings;
    if let Some(t) = body.theme {
        changes.insert("theme".into(), t);
    }
    if let Some(l) = body.language {
        changes.insert("language".into(), l);
    }
    validate_all(&changes)?;
    let now = now_ms();
    let row = state
        .sync
        .edit(&user.record, DocSpec::Preferences, move |doc| {
            for (k, v) in &changes {
                if v.is_null() {
                    preferences::remove(doc, k)?;
                } else {
                    preferences::set(doc, k, v, now)?;
                }
            }
            projection::preferences_row(doc)
        })
        .await?;
    Ok(Json(prefs_from_row(row)))
}

fn stats(items: &[Enrollment]) -> EnrollmentStats {
    let counted: Vec<&Enrollment> = items
        .iter()
        .filter(|e| e.status != EnrollmentStatus::Unenrolled)
        .collect();
    EnrollmentStats {
        total: items.len(),
        active: items
            .iter()
            .filter(|e| e.status == EnrollmentStatus::Active)
            .count(),
        completed: items
            .iter()
            .filter(|e| e.status == EnrollmentStatus::Completed)
            .count(),
        unenrolled: items
            .iter()
            .filter(|e| e.status == EnrollmentStatus::Unenrolled)
            .count(),
        average_progress: if counted.is_empty() {
            0.0
        } else {
            counted.iter().map(|e| e.progress).sum::<f64>() / counted.len() as f64
        },
        time_spent_secs: items.iter().map(|e| e.time_spent_secs).sum(),
    }
}

/// The user's enrollments with totals.
#[utoipa::path(
    get, path = "/api/enrollments", tag = "enrollments",
    responses((status = 200, body = EnrollmentList), (status = 401, body = ErrorBody))
)]
async fn list_enrollments(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Json<EnrollmentList>> {
    let items = state.store.enrollments(user.id()).await?;
    Ok(Json(EnrollmentList {
        stats: stats(&items),
        items,
    }))
}

async fn enrollment_of(
    state: &AppState,
    user: &CurrentUser,
    course_id: &str,
) -> ApiResult<Enrollment> {
    state
        .store
        .enrollments(user.id())
        .await?
        .into_iter()
        .find(|e| e.course_id == course_id)
        .ok_or(ApiError::NotFound("enrollment"))
}

/// Enroll in a course (again, if unenrolled: progress is kept).
#[utoipa::path(
    post, path = "/api/enrollments", tag = "enrollments",
    request_body = Enroll,
    responses((status = 201, body = Enrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn enroll(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(body): Json<Enroll>,
) -> ApiResult<(StatusCode, Json<Enrollment>)> {
    let course_id = id("course_id", &body.course_id)?;
    let course = state.store.course(&course_id).await?;
    let open = course.is_some_and(|c| {
        c.status == CourseStatus::Published
            || user.is_admin()
            || c.author_id.as_deref() == Some(user.id())
    });
    if !open {
        return Err(ApiError::NotFound("course"));
    }
    let now = now_ms();
    let cid = course_id.clone();
    state
        .sync
        .edit(&user.record, DocSpec::Learning, move |doc| {
            learning::enroll(doc, &cid, now)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(enrollment_of(&state, &user, &course_id).await?),
    ))
}

/// One enrollment.
#[utoipa::path(
    get, path = "/api/enrollments/{course_id}", tag = "enrollments",
    params(("course_id" = String, Path, description = "Course id")),
    responses((status = 200, body = Enrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_enrollment(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(course_id): Path<String>,
) -> ApiResult<Json<Enrollment>> {
    Ok(Json(enrollment_of(&state, &user, &course_id).await?))
}

/// Record progress: lessons completed, progress, time spent, or a restart.
#[utoipa::path(
    patch, path = "/api/enrollments/{course_id}", tag = "enrollments",
    params(("course_id" = String, Path, description = "Course id")),
    request_body = UpdateEnrollment,
    responses((status = 200, body = Enrollment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Progress would go backwards", body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn update_enrollment(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(course_id): Path<String>,
    Json(body): Json<UpdateEnrollment>,
) -> ApiResult<Json<Enrollment>> {
    let course_id = id("course_id", &course_id)?;
    if body.completed_lessons.len() > 500 {
        return Err(ApiError::invalid(
            "completed_lessons",
            "at most 500 lessons at once",
        ));
    }
    for l in &body.completed_lessons {
        id("completed_lessons", l)?;
    }
    if let Some(p) = body.progress
        && !(p.is_finite() && (0.0..=100.0).contains(&p))
    {
        return Err(ApiError::invalid(
            "progress",
            "progress must be a number from 0 to 100",
        ));
    }
    if let Some(t) = body.add_time_secs
        && !(0..=86_400).contains(&t)
    {
        return Err(ApiError::invalid(
            "add_time_secs",
            "add_time_secs must be 0–86400",
        ));
    }
    // The course must be in the learning index (enrolled or unenrolled with progress kept).
    enrollment_of(&state, &user, &course_id).await?;
    let now = now_ms();
    let spec = DocSpec::Course {
        course_id: course_id.clone(),
    };
    let outcome = state
        .sync
        .edit(&user.record, spec, move |doc| {
            if body.restart {
                course::restart(doc, now)?;
            }
            for l in &body.completed_lessons {
                course::complete_lesson(doc, l, now)?;
            }
            if let Some(t) = body.add_time_secs {
                course::add_time(doc, t, now)?;
            }
            let progress = match body.progress {
                Some(p) => Some(course::set_progress(doc, p, now)?),
                None => None,
            };
            Ok(progress)
        })
        .await?;
    if let Some(course::ProgressOutcome::Kept { current }) = outcome
        && body.progress.is_some_and(|p| p < current)
    {
        return Err(ApiError::Conflict(format!(
            "progress never goes backwards (it is {current}); restart the course to start over"
        )));
    }
    Ok(Json(enrollment_of(&state, &user, &course_id).await?))
}

/// Unenroll (kept as a status: progress survives re-enrolling).
#[utoipa::path(
    delete, path = "/api/enrollments/{course_id}", tag = "enrollments",
    params(("course_id" = String, Path, description = "Course id")),
    responses((status = 204, description = "Unenrolled"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn unenroll(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(course_id): Path<String>,
) -> ApiResult<StatusCode> {
    let course_id = id("course_id", &course_id)?;
    let cid = course_id.clone();
    let changed = state
        .sync
        .edit(&user.record, DocSpec::Learning, move |doc| {
            learning::unenroll(doc, &cid)
        })
        .await?;
    if changed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("enrollment"))
    }
}
