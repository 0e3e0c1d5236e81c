//! Who is calling: cookie sessions (browsers) and bearer tokens (mobile apps), CSRF protection
//! for cookie-authenticated writes, login rate limits, role checks.

pub mod password;
pub mod rate_limit;
pub mod routes;
pub mod tokens;

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{ExpiredDeletion, Session};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::error::ApiError;
use crate::model::{Role, now_ms};
use crate::state::AppState;
use crate::store::UserRecord;

/// Session key of the logged-in user's id.
pub const SESSION_USER: &str = "uid";
/// Session key of the CSRF token bound to the session.
pub const SESSION_CSRF: &str = "csrf";
/// The cookie carrying the CSRF token for JavaScript to echo in `X-CSRF-Token`.
pub const CSRF_COOKIE: &str = "csrf_token";
/// The header a cookie-authenticated write must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The session cookie.
pub const SESSION_COOKIE: &str = "learnsync_session";

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// Session cookie (CSRF-checked for writes).
    Session,
    /// `Authorization: Bearer` (no CSRF: not sent automatically by browsers).
    Bearer,
}

/// The authenticated user of a request. Rejects with 401 when there is none, 403 when a
/// cookie-authenticated write lacks the CSRF token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub record: UserRecord,
    /// How.
    pub via: AuthVia,
}

impl CurrentUser {
    /// The user's id.
    pub fn id(&self) -> &str {
        &self.record.user.id
    }

    /// The user's role.
    pub fn role(&self) -> Role {
        self.record.user.role
    }

    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }

    /// 403 unless the user has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state).await? {
            Some(user) => Ok(user),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// The authenticated user, if any (public endpoints that show more to some users).
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeUser(authenticate(parts, state).await?))
    }
}

/// An admin. 401/403 otherwise.
#[derive(Debug, Clone)]
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require(&[Role::Admin])?;
        Ok(AdminUser(user))
    }
}

/// Bearer token from the `Authorization` header.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<CurrentUser>, ApiError> {
    if let Some(token) = bearer(parts) {
        let user = state
            .store
            .token_user(&tokens::hash(token), now_ms())
            .await?
            .filter(|u| !u.user.disabled)
            .ok_or(ApiError::Unauthorized)?;
        return Ok(Some(CurrentUser {
            record: user,
            via: AuthVia::Bearer,
        }));
    }
    let Ok(session) = Session::from_request_parts(parts, state).await else {
        return Ok(None);
    };
    let Some(uid) = session
        .get::<String>(SESSION_USER)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    else {
        return Ok(None);
    };
    let Some(user) = state.store.user(&uid).await?.filter(|u| !u.user.disabled) else {
        // The account was deleted or disabled: end the session.
        let _ = session.flush().await;
        return Ok(None);
    };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let expected = session
            .get::<String>(SESSION_CSRF)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        match (expected, given) {
            (Some(expected), Some(given))
                if constant_time_eq(expected.as_bytes(), given.as_bytes()) => {}
            _ => return Err(ApiError::Csrf),
        }
    }
    Ok(Some(CurrentUser {
        record: user,
        via: AuthVia::Session,
    }))
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random CSRF token.
pub fn new_csrf_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The tower-sessions store on whichever database the server uses.
#[derive(Debug, Clone)]
pub enum SessionBackend {
    /// PostgreSQL (`tower_sessions.session`).
    Postgres(PostgresStore),
    /// SQLite (`tower_sessions`).
    Sqlite(SqliteStore),
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Postgres(s) => s.create(record).await,
            SessionBackend::Sqlite(s) => s.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            SessionBackend::Postgres(s) => s.save(record).await,
            SessionBackend::Sqlite(s) => s.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            SessionBackend::Postgres(s) => s.load(id).await,
            SessionBackend::Sqlite(s) => s.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            SessionBackend::Postgres(s) => s.delete(id).await,
            SessionBackend::Sqlite(s) => s.delete(id).await,
        }
    }
}

#[async_trait]
impl ExpiredDeletion for SessionBackend {
    async fn delete_expired(&self) -> session_store::Result<()> {
        match self {
            SessionBackend::Postgres(s) => s.delete_expired().await,
            SessionBackend::Sqlite(s) => s.delete_expired().await,
        }
    }
}
