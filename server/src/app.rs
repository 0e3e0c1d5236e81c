//! Building and running the server: database, migrations, sync engine, routes, middleware,
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{self, SESSION_COOKIE};
use crate::config::Config;
use crate::courses::CatalogCache;
use crate::error::ApiError;
use crate::imports::ImportJobs;
use crate::openapi::ApiDoc;
use crate::state::{AppState, Limits};
use crate::store::{self, StoreError};
use crate::sync::{SyncConfig, SyncEngine};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    cancel: CancellationToken,
    tracker: TaskTracker,
    local: SocketAddr,
}

/// The process-wide Prometheus recorder (installed once, shared by every server in a process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            builder
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

impl Application {
    /// Opens the database, applies migrations, starts the sync engine and binds the listener
    /// (port 0 picks a free port: see [`Application::port`]).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let instance_id = config
            .instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()[..8].to_string());
        let connected = store::connect(
            &config.database_url,
            config.db_max_connections,
            &instance_id,
        )
        .await?;
        let store = connected.store();
        store.migrate().await?;
        let listener = TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sync = SyncEngine::start(
            store.clone(),
            connected.change_feed(),
            SyncConfig::from_config(&config),
            instance_id.clone(),
            local.to_string(),
            cancel.clone(),
            &tracker,
        )
        .await?;
        let catalog = Arc::new(CatalogCache::default());
        {
            let catalog = catalog.clone();
            sync.add_event_hook(Arc::new(move |event: &str| {
                if event == "catalog" {
                    catalog.bump();
                }
            }));
        }
        let state = AppState {
            store: store.clone(),
            limits: Arc::new(Limits::new(&config)),
            config: Arc::new(config),
            sync,
            metrics: metrics_handle(),
            catalog,
            imports: Arc::new(ImportJobs::default()),
            instance_id: instance_id.into(),
            db_healthy: Arc::new(AtomicBool::new(true)),
        };
        tracker.spawn(watch_database(state.clone(), cancel.clone()));
        let session_store = connected.session_store();
        tracker.spawn({
            let session_store = session_store.clone();
            let cancel = cancel.clone();
            async move {
                use tower_sessions::ExpiredDeletion;
                tokio::select! {
                    _ = session_store.continuously_delete_expired(Duration::from_secs(3600)) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        });
        let router = router(state.clone(), session_store);
        Ok(Self {
            listener,
            router,
            state,
            cancel,
            tracker,
            local,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// The bound address (with the port picked when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The shared state (tests use it to reach the store and the engine).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token shuts the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Serves until the shutdown token fires, then closes sockets cleanly, finishes every write
    /// in flight, and returns.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let cancel = self.cancel.clone();
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        // Never below two sync pings: a quiet device must not be mistaken for a dead one.
        let idle = Duration::from_secs(self.state.config.idle_connection_secs)
            .max(self.state.sync.config().ping_interval * 2 + Duration::from_secs(1));
        let listener =
            crate::listener::IdleTimeoutListener::new(self.listener, idle).tap_io(|_| {});
        axum::serve(listener, service)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .await?;
        cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        Ok(())
    }
}

/// Probes the database every two seconds; tells devices when the server becomes degraded and
/// when it recovers.
async fn watch_database(state: AppState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), state.store.ping())
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        let was = state.db_healthy.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("database reachable again");
                state.sync.broadcast_status(true, None);
            } else {
                tracing::error!(
                    "database unreachable: degraded, changes stay on devices until it returns"
                );
                state.sync.broadcast_status(
                    false,
                    Some(
                        "the server cannot store changes right now; they stay on this device"
                            .into(),
                    ),
                );
            }
        }
        metrics::gauge!("learnsync_database_up").set(if ok { 1.0 } else { 0.0 });
    }
}

/// Every route, with the OpenAPI document built from them.
pub fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes::router())
        .merge(crate::courses::router())
        .merge(crate::reports::router())
        .merge(crate::logs::router())
        .merge(crate::admin::router())
        .merge(crate::erasure::router())
        .merge(crate::export::router())
        .merge(crate::imports::routes::router())
        .merge(crate::learning::router())
        .merge(crate::sync::routes::router())
        .merge(crate::health::router())
        .split_for_parts();
    crate::openapi::document_common_errors(&mut openapi);
    (router, openapi)
}

fn router(state: AppState, sessions: auth::SessionBackend) -> Router {
    let (api, openapi) = api_router();
    let openapi = Arc::new(openapi);
    let request_id = HeaderName::from_static("x-request-id");
    let session_layer = SessionManagerLayer::new(sessions)
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.secure_cookies)
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::days(14),
        ));
    let max_body = state.config.max_body_bytes;
    api.route(
        "/api/openapi.json",
        axum::routing::get(move || {
            let doc = openapi.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .merge(crate::web::router())
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(DefaultBodyLimit::max(max_body))
    .layer(session_layer)
    .layer(middleware::from_fn(record_metrics))
    .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            })
            // One line per request (status, latency) at the default `info` level, inside the
            // span that carries the request id.
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
    )
    .layer(PropagateRequestIdLayer::new(request_id.clone()))
    .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
    .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::BadRequest("method not allowed on this route".into()).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
