//! `GET /sync` (the automerge-repo WebSocket) and `GET /api/sync/documents`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt, future};
use serde::{Deserialize, Serialize};
use sync_core::{DocumentId, UserNamespace};
use tower_sessions::Session;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::socket::{self, Frame, PeerAuth};
use crate::auth::{CurrentUser, SESSION_USER, routes::client_ip, tokens};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::model::{Role, now_ms};
use crate::state::AppState;
use crate::store::UserRecord;

/// The sync routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_socket))
        .routes(routes!(documents))
}

/// Query of `GET /sync`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SocketQuery {
    /// An API token, for clients that cannot set headers on a WebSocket (browsers use the
    /// session cookie instead).
    pub token: Option<String>,
}

/// The user's document ids: every device derives the same ids, and learns them here once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncDocuments {
    /// The preferences document.
    pub preferences: String,
    /// The learning index.
    pub learning: String,
    /// Course progress documents by course id.
    pub courses: BTreeMap<String, String>,
}

/// Whether `origin` may open a socket: same origin as the request, or configured.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a browser (mobile apps, tools): nothing to check.
        return true;
    };
    if state
        .config
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    !host.is_empty() && origin_host == host
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &SocketQuery,
    session: &Session,
) -> ApiResult<UserRecord> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string())
        })
        .or_else(|| query.token.clone());
    let user = if let Some(token) = token {
        state
            .store
            .token_user(&tokens::hash(&token), now_ms())
            .await?
    } else {
        match session.get::<String>(SESSION_USER).await.ok().flatten() {
            Some(uid) => state.store.user(&uid).await?,
            None => None,
        }
    };
    user.filter(|u| !u.user.disabled)
        .ok_or(ApiError::Unauthorized)
}

/// Open the sync WebSocket (automerge-repo protocol, binary CBOR frames).
#[utoipa::path(
    get, path = "/sync", tag = "sync",
    params(SocketQuery),
    responses(
        (status = 101, description = "Switching to the automerge-repo protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Origin not allowed", body = ErrorBody),
        (status = 422, body = ErrorBody)
    )
)]
async fn sync_socket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<SocketQuery>,
    session: Session,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let user = authenticate(&state, &headers, &query, &session).await?;
    if !origin_allowed(&state, &headers) {
        return Err(ApiError::Forbidden(
            "this origin may not open a sync connection".into(),
        ));
    }
    let upgrade =
        upgrade.map_err(|_| ApiError::BadRequest("expected a WebSocket upgrade request".into()))?;
    let global = state.store.global_sync_epoch().await?;
    let auth = Box::new(PeerAuth {
        epoch: u64::try_from(global.saturating_add(user.sync_epoch)).unwrap_or(0),
        is_admin: user.user.role == Role::Admin,
        doc_seed: user.doc_seed,
        user_id: user.user.id,
        remote_addr: client_ip(&headers, Some(peer), state.config.trust_proxy),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        degraded: state.is_degraded(),
    });
    let max = state.config.max_message_bytes;
    let engine = state.sync.clone();
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // Each connection keeps its read buffer for its whole life; 1 KiB holds the usual
        // sync message, and a larger frame gets room for its full length as soon as its
        // header is read (tungstenite), so only small frames pay for the smaller buffer.
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_write_buffer_size(max.saturating_mul(2))
        .on_upgrade(move |ws| async move {
            let (sink, stream) = ws.split();
            let sink = sink.with(|f: Frame| future::ready(Ok::<_, axum::Error>(to_message(f))));
            let stream = stream.map(|m| m.map(from_message));
            socket::serve(engine, Box::pin(sink), stream, auth).await;
        }))
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Binary(b) => Message::Binary(b.into()),
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Ping(b) => Message::Ping(b.into()),
        Frame::Pong(b) => Message::Pong(b.into()),
        Frame::Close(code, reason) => Message::Close(Some(axum::extract::ws::CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

fn from_message(message: Message) -> Frame {
    match message {
        Message::Binary(b) => Frame::Binary(b.to_vec()),
        Message::Text(t) => Frame::Text(t.to_string()),
        Message::Ping(b) => Frame::Ping(b.to_vec()),
        Message::Pong(b) => Frame::Pong(b.to_vec()),
        Message::Close(c) => c
            .map(|c| Frame::Close(c.code, c.reason.to_string()))
            .unwrap_or(Frame::Close(1005, String::new())),
    }
}

/// The ids of the user's documents, for a device's first sync.
#[utoipa::path(
    get, path = "/api/sync/documents", tag = "sync",
    responses((status = 200, body = SyncDocuments), (status = 401, body = ErrorBody))
)]
async fn documents(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Json<SyncDocuments>> {
    let ns = UserNamespace::from_bytes(user.record.doc_seed);
    let learning = DocumentId::learning(&ns);
    let mut courses = BTreeMap::new();
    for e in state.store.enrollments(user.id()).await? {
        courses.insert(
            e.course_id.clone(),
            DocumentId::course(&learning, &e.course_id).to_string(),
        );
    }
    for d in state.store.user_documents(user.id()).await? {
        if let (Some(course), "course") = (d.course_id, d.kind.as_str()) {
            courses.entry(course).or_insert(d.id);
        }
    }
    Ok(Json(SyncDocuments {
        preferences: DocumentId::preferences(&ns).to_string(),
        learning: learning.to_string(),
        courses,
    }))
}
