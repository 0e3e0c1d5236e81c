//! `/api/auth/*`: register, login, logout, me, API tokens.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    CSRF_COOKIE, CurrentUser, MaybeUser, SESSION_CSRF, SESSION_USER, new_csrf_token, password,
    tokens,
};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::model::{ApiToken, Role, User, now_ms};
use crate::state::AppState;
use crate::store::{NewToken, NewUser, UserRecord};

/// The auth routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// `POST /api/auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Login email.
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// Name shown to people.
    pub display_name: String,
}

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// The user, plus the CSRF token to send as `X-CSRF-Token` on cookie-authenticated writes.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Echo this in `X-CSRF-Token` (it is also in the `csrf_token` cookie).
    pub csrf_token: String,
}

/// `POST /api/auth/tokens` body: from a session `{name}`; from an app without a session
/// `{email, password, name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// What the token is for (e.g. "Anna's phone").
    pub name: String,
    /// Email, when no session.
    pub email: Option<String>,
    /// Password, when no session.
    pub password: Option<String>,
}

/// A new token. The secret is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// Token id (to revoke it).
    pub id: String,
    /// The secret: send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The token's name.
    pub name: String,
}

/// Normalises and checks an email address.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("email", "not a valid email address"))
    }
}

/// Checks a display name.
pub fn validate_display_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "display_name",
            "display name must be 1–100 characters",
        ));
    }
    Ok(name.to_string())
}

/// The client address, for rate limits and the devices list.
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trust_proxy: bool) -> String {
    if trust_proxy
        && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
        && let Some(first) = forwarded.split(',').next()
    {
        return first.trim().to_string();
    }
    peer.map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A new user id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new random document namespace.
pub fn new_doc_seed() -> [u8; 16] {
    let mut seed = [0u8; 16];
    rand::fill(&mut seed);
    seed
}

fn csrf_cookie(state: &AppState, value: &str, clear: bool) -> HeaderValue {
    let mut cookie = format!("{CSRF_COOKIE}={value}; Path=/; SameSite=Lax");
    if clear {
        cookie.push_str("; Max-Age=0");
    }
    if state.config.secure_cookies {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("csrf_token=; Path=/"))
}

/// Logs the session in as `user`: a new session id (no fixation), a new CSRF token.
async fn start_session(
    state: &AppState,
    session: &Session,
    user: &UserRecord,
    status: StatusCode,
) -> ApiResult<Response> {
    session
        .cycle_id()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let csrf = new_csrf_token();
    session
        .insert(SESSION_USER, &user.user.id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    session
        .insert(SESSION_CSRF, &csrf)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = (
        status,
        axum::Json(AuthResponse {
            user: user.user.clone(),
            csrf_token: csrf.clone(),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, csrf_cookie(state, &csrf, false));
    Ok(response)
}

/// Create an account (a learner) and log in.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and logged in", body = AuthResponse),
        (status = 400, body = ErrorBody), (status = 409, description = "Email taken", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<Response> {
    let ip = client_ip(&headers, Some(peer), state.config.trust_proxy);
    state
        .limits
        .register
        .check(&ip, now_ms())
        .map_err(ApiError::RateLimited)?;
    let email = normalize_email(&body.email)?;
    password::validate(&body.password)?;
    let display_name = validate_display_name(&body.display_name)?;
    if state.store.user_by_email(&email).await?.is_some() {
        return Err(ApiError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    let hash = password::hash(body.password).await?;
    let user = state
        .store
        .create_user(&NewUser {
            id: new_id(),
            email: Some(email),
            display_name,
            password_hash: Some(hash),
            role: Role::Learner,
            legacy_id: None,
            doc_seed: new_doc_seed(),
            now: now_ms(),
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ApiError::Conflict("an account with this email exists".into())
            }
            other => other.into(),
        })?;
    start_session(&state, &session, &user, StatusCode::CREATED).await
}

/// Checks email and password with rate limiting; the user on success.
async fn check_credentials(
    state: &AppState,
    ip: &str,
    email: &str,
    password_text: String,
) -> ApiResult<UserRecord> {
    let now = now_ms();
    let email = email.trim().to_lowercase();
    let email_key = format!("email:{email}");
    let ip_key = format!("ip:{ip}");
    if let Some(secs) = state
        .limits
        .login
        .exceeded(&ip_key, now)
        .or_else(|| state.limits.login.exceeded(&email_key, now))
    {
        return Err(ApiError::RateLimited(secs));
    }
    let user = state.store.user_by_email(&email).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::decoy_hash().to_string());
    let ok = password::verify(hash, password_text).await?
        && user.as_ref().is_some_and(|u| u.password_hash.is_some());
    match user {
        Some(user) if ok && !user.user.disabled => {
            state.limits.login.reset(&email_key);
            Ok(user)
        }
        _ => {
            let _ = state.limits.login.check(&ip_key, now);
            let _ = state.limits.login.check(&email_key, now);
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// Log in with email and password; sets the session cookie.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Response> {
    if body.password.len() > password::MAX_LEN || body.email.len() > 254 {
        return Err(ApiError::InvalidCredentials);
    }
    let ip = client_ip(&headers, Some(peer), state.config.trust_proxy);
    let user = check_credentials(&state, &ip, &body.email, body.password).await?;
    start_session(&state, &session, &user, StatusCode::OK).await
}

/// Log out (ends the session).
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204, description = "Logged out"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    session: Session,
) -> ApiResult<Response> {
    let _ = user;
    session
        .flush()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, csrf_cookie(&state, "", true));
    Ok(response)
}

/// The logged-in user.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = User), (status = 401, body = ErrorBody))
)]
async fn me(user: CurrentUser) -> Json<User> {
    Json(user.record.user)
}

/// Create an API token (shown once).
#[utoipa::path(
    post, path = "/api/auth/tokens", tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn create_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    MaybeUser(current): MaybeUser,
    Json(body): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "token name must be 1–100 characters",
        ));
    }
    let user = match (body.email, body.password) {
        (Some(email), Some(pw)) => {
            if pw.len() > password::MAX_LEN || email.len() > 254 {
                return Err(ApiError::InvalidCredentials);
            }
            let ip = client_ip(&headers, Some(peer), state.config.trust_proxy);
            check_credentials(&state, &ip, &email, pw).await?
        }
        (None, None) => current.ok_or(ApiError::Unauthorized)?.record,
        _ => {
            return Err(ApiError::invalid(
                "password",
                "give both email and password, or neither",
            ));
        }
    };
    let (secret, hash) = tokens::generate();
    let token = state
        .store
        .create_token(&NewToken {
            id: new_id(),
            user_id: user.user.id.clone(),
            name: name.to_string(),
            token_hash: hash,
            now: now_ms(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.id,
            token: secret,
            name: token.name,
        }),
    ))
}

/// The user's API tokens (without secrets).
#[utoipa::path(
    get, path = "/api/auth/tokens", tag = "auth",
    responses((status = 200, body = Vec<ApiToken>), (status = 401, body = ErrorBody))
)]
async fn list_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(state.store.list_tokens(user.id()).await?))
}

/// Revoke one of the user's API tokens.
#[utoipa::path(
    delete, path = "/api/auth/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.revoke_token(user.id(), &id, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("token"))
    }
}
