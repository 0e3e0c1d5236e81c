//! The OpenAPI document, generated from the routes themselves (utoipa-axum collects every
//! route registered through `routes!`), served at `/api/openapi.json`.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Top-level document metadata.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "LearnSync",
        description = "Offline-first sync server for the learnMode learning platform. Browsers authenticate with the session cookie (writes need the X-CSRF-Token header); mobile apps with `Authorization: Bearer <token>`. Errors share one shape: `{\"error\": {\"code\", \"message\", \"details\"?}}`.",
        license(name = "MIT")
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Accounts, sessions, API tokens"),
        (name = "courses", description = "The catalog"),
        (name = "enrollments", description = "A learner's enrollments and progress (synced documents)"),
        (name = "preferences", description = "A learner's preferences (synced document)"),
        (name = "reports", description = "Course reports"),
        (name = "logs", description = "Client error reports"),
        (name = "sync", description = "The automerge-repo WebSocket and document ids"),
        (name = "admin", description = "Administration"),
        (name = "health", description = "Probes and metrics")
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}
