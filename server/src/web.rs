//! The web UI: `/admin` (the admin console) and `/app` (the learner page), plain HTML and a
//! little JavaScript, served by the server itself.

use axum::Router;

use crate::state::AppState;

/// UI routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
