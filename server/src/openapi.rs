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

/// Documents the errors every operation can answer whatever its handler says, so that tools
/// driven by this document (schemathesis, generated clients) see every status the server
/// really sends: a body over the size limit (413) on operations that take a body, and
/// malformed (400) or invalid (422) input on operations that take any input at all.
pub fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let has_body = op.request_body.is_some();
            let has_input = has_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let responses = &mut op.responses.responses;
            if has_body {
                responses
                    .entry("413".into())
                    .or_insert_with(|| error("Request body too large"));
            }
            if has_input {
                responses
                    .entry("400".into())
                    .or_insert_with(|| error("Malformed request"));
                responses
                    .entry("422".into())
                    .or_insert_with(|| error("Invalid input"));
            }
        }
    }
}
