//! The web UI: `/admin` (the admin console) and `/app` (the learner page), plain HTML and a
//! little JavaScript built into the binary. The learner page runs `client-wasm`, whose bundle
//! (`scripts/build-wasm.sh` writes it to `client-wasm/pkg`) is served from disk.

use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;

const ADMIN_HTML: &str = include_str!("../web/admin/index.html");
const ADMIN_JS: &str = include_str!("../web/admin/admin.js");
const APP_HTML: &str = include_str!("../web/app/index.html");
const APP_JS: &str = include_str!("../web/app/app.js");
const STYLE_CSS: &str = include_str!("../web/shared/style.css");
const API_JS: &str = include_str!("../web/shared/api.js");
/// The browser client's JavaScript shell (WebSocket, timers, localStorage around client-wasm).
const LEARNSYNC_JS: &str = include_str!("../../client-wasm/js/learnsync.js");
const APP_CSS: &str = include_str!("../web/app/app.css");
const APP_SW: &str = include_str!("../web/app/sw.js");

/// The pages are same-origin only; the wasm client needs `wasm-unsafe-eval` to instantiate.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'";

/// UI routes.
pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::temporary("/app") }),
        )
        .route("/admin", get(|| page(ADMIN_HTML)))
        .route("/admin/", get(|| page(ADMIN_HTML)))
        .route("/admin/{section}", get(admin_section))
        .route("/app", get(|| page(APP_HTML)))
        .route("/app/", get(|| page(APP_HTML)))
        .route("/app/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route(
            "/app/learnsync.js",
            get(|| asset(LEARNSYNC_JS, "text/javascript")),
        )
        .route("/app/app.css", get(|| asset(APP_CSS, "text/css")))
        .route("/app/sw.js", get(service_worker))
        .route(
            "/static/admin.js",
            get(|| asset(ADMIN_JS, "text/javascript")),
        )
        .route("/static/style.css", get(|| asset(STYLE_CSS, "text/css")))
        .route("/static/api.js", get(|| asset(API_JS, "text/javascript")))
        .route("/app/pkg/{*file}", get(wasm_asset));
    pages
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
}

async fn admin_section(axum::extract::Path(section): axum::extract::Path<String>) -> Response {
    if section == "admin.js" {
        return asset(ADMIN_JS, "text/javascript").await;
    }
    page(ADMIN_HTML).await
}

async fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// The learner page's service worker, allowed to control `/app` itself (not only `/app/…`), so
/// that a reload with the server down still shows the page.
async fn service_worker() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("service-worker-allowed"),
                "/app",
            ),
        ],
        APP_SW,
    )
        .into_response()
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Where the built browser client is: `--web-dir`, else `client-wasm/pkg` under the working
/// directory or next to the executable's workspace.
fn wasm_dir(state: &AppState) -> Option<PathBuf> {
    if let Some(dir) = &state.config.web_dir {
        return Some(dir.clone());
    }
    let mut candidates = vec![PathBuf::from("client-wasm/pkg")];
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join("client-wasm/pkg"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.join("client_wasm.js").exists())
}

async fn wasm_asset(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let Some(dir) = wasm_dir(&state) else {
        return (
            StatusCode::NOT_FOUND,
            "the browser client is not built: run scripts/build-wasm.sh (or set LEARNSYNC_WEB_DIR)",
        )
            .into_response();
    };
    let path = request
        .uri()
        .path()
        .trim_start_matches("/app/pkg")
        .to_string();
    let mut parts = request.into_parts();
    parts.0.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let request = axum::extract::Request::from_parts(parts.0, parts.1);
    use tower::ServiceExt;
    match ServeDir::new(dir).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
