//! One error type for the whole API and its one JSON shape:
//! `{ "error": { "code": "…", "message": "…", "details": … } }`.
//!
//! Codes are stable snake_case strings clients can branch on; messages are for people. Internal
//! failures are logged with the request id and answered with a generic 500: no internal text
//! ever reaches a client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value as JsonValue;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Everything an API handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (bad JSON, bad query, bad cursor).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid input.
    #[error("{message}")]
    Validation {
        /// What is wrong.
        message: String,
        /// Which field, when known.
        field: Option<String>,
    },
    /// No valid session or token.
    #[error("authentication required")]
    Unauthorized,
    /// Wrong email or password (deliberately not saying which).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A cookie-authenticated write without the right `X-CSRF-Token`.
    #[error("missing or invalid X-CSRF-Token header")]
    Csrf,
    /// Nothing there (or nothing this user may see).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Clashes with existing data.
    #[error("{0}")]
    Conflict(String),
    /// Too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Too many requests; retry after the given seconds.
    #[error("too many requests, retry in {0} seconds")]
    RateLimited(u64),
    /// The database cannot be reached; nothing was changed.
    #[error("storage is unavailable, try again later")]
    Unavailable,
    /// A bug or an unexpected failure (logged, never shown).
    #[error("internal error")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Extra structured information (e.g. the offending field).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<JsonValue>,
}

impl ApiError {
    /// A validation error about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Validation { .. } => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf => "csrf_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let details = match &self {
            ApiError::Validation { field: Some(f), .. } => Some(serde_json::json!({ "field": f })),
            ApiError::RateLimited(secs) => Some(serde_json::json!({ "retry_after_secs": secs })),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                details,
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::RateLimited(secs) = self
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::Unavailable;
        }
        match e {
            StoreError::Conflict(_) => ApiError::Conflict("it already exists".into()),
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Validation {
                message: format!("invalid JSON body: {}", e.body_text()),
                field: None,
            },
            JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest("malformed JSON body".into()),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("expected Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(_) => ApiError::PayloadTooLarge,
            _ => ApiError::BadRequest("invalid JSON body".into()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Validation {
            message: format!("invalid query string: {}", r.body_text()),
            field: None,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", r.body_text()))
    }
}

impl From<sync_core::docs::DocError> for ApiError {
    fn from(e: sync_core::docs::DocError) -> Self {
        match e {
            sync_core::docs::DocError::Automerge(m) => ApiError::Internal(m),
            other => ApiError::Validation {
                message: other.to_string(),
                field: None,
            },
        }
    }
}

/// `Json` that rejects with [`ApiError`] (the one error shape) instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` that rejects with [`ApiError`].
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `Path` that rejects with [`ApiError`].
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Result of an API handler.
pub type ApiResult<T> = Result<T, ApiError>;
