//! The real server in-process on a random port, with HTTP clients that behave like a browser
//! (cookies kept, `X-CSRF-Token` echoed from the `csrf_token` cookie) or like a mobile app
//! (bearer token, no cookies).
//!
//! ```ignore
//! let app = TestApp::spawn(Backend::Sqlite).await;
//! let teacher = app.user(Role::Teacher).await;
//! let created = teacher.post("/api/courses", &json!({"title": "Rust"})).await;
//! assert_eq!(created.status, 201);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use learnsync::model::Role;
use learnsync::state::AppState;
use learnsync::store::UserPatch;
use learnsync::{Application, Config};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::{Backend, TestDb};

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running server with its own fresh database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bound port.
    pub port: u16,
    /// The server's shared state (to reach the store directly).
    pub state: AppState,
    db: TestDb,
    cancel: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    next_user: AtomicU64,
}

/// An HTTP answer, its body parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// JSON body, or `Value::Null` when empty or not JSON.
    pub body: Value,
    /// The raw body.
    pub text: String,
}

impl Resp {
    /// The error code of an error body (`error.code`), if any.
    pub fn code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    /// Asserts the status and that the body has the one error shape with a non-empty message.
    pub fn assert_error(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status, body: {}",
            self.text
        );
        let code = self
            .code()
            .unwrap_or_else(|| panic!("no error.code in {}", self.text));
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "code {code:?}"
        );
        let message = self.body.pointer("/error/message").and_then(Value::as_str);
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "no error.message in {}",
            self.text
        );
        self
    }

    /// Asserts the status (with the body in the failure message) and returns the body.
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status, body: {}",
            self.text
        );
        &self.body
    }

    /// Every `Set-Cookie` header line.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Set-Cookie` line for cookie `name` (with its attributes).
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split('=').next() == Some(name))
    }

    /// `name=value` of a cookie this answer set, ready for a `Cookie` header.
    pub fn cookie_pair(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client of the test server: anonymous, logged in by cookie, or holding a bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    jar: Arc<Jar>,
    base: Url,
    bearer: Option<String>,
    /// The user this client acts as (`id`, `email`, `role`, …), when it is one.
    pub user: Option<Value>,
    /// The user's password, when it is one.
    pub password: Option<String>,
}

impl Client {
    fn new(base: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self {
            http,
            jar,
            base: Url::parse(base).expect("base url"),
            bearer: None,
            user: None,
            password: None,
        }
    }

    /// The same client (cookies and token kept) talking to another server address, e.g. after
    /// a restart on a new port.
    pub fn rebase(&self, base: &str) -> Client {
        let mut c = self.clone();
        let new_base = Url::parse(base).expect("base url");
        // Cookies are scoped by host (not port), so the jar carries over.
        c.base = new_base;
        c
    }

    /// The same identity through a bearer token only (no cookies), like a mobile app.
    pub fn with_bearer(&self, token: &str) -> Client {
        let mut c = Client::new(self.base.as_str());
        c.bearer = Some(token.to_string());
        c.user = self.user.clone();
        c.password = self.password.clone();
        c
    }

    /// The user's id.
    pub fn id(&self) -> &str {
        self.user
            .as_ref()
            .and_then(|u| u["id"].as_str())
            .expect("client has no user")
    }

    /// The user's email.
    pub fn email(&self) -> &str {
        self.user
            .as_ref()
            .and_then(|u| u["email"].as_str())
            .expect("client has no user")
    }

    /// The current value of the `csrf_token` cookie.
    pub fn csrf(&self) -> Option<String> {
        let cookies = self.jar.cookies(&self.base)?;
        let cookies = cookies.to_str().ok()?.to_string();
        cookies.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == "csrf_token" && !v.is_empty()).then(|| v.to_string())
        })
    }

    /// Whether a session cookie is held.
    pub fn has_session(&self) -> bool {
        self.jar
            .cookies(&self.base)
            .and_then(|c| c.to_str().ok().map(|s| s.contains("learnsync_session=")))
            .unwrap_or(false)
    }

    /// A request with the client's credentials: bearer token, or cookies plus the CSRF header.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.base.join(path).expect("path");
        let mut rb = self.http.request(method, url);
        if let Some(token) = &self.bearer {
            rb = rb.bearer_auth(token);
        } else if let Some(csrf) = self.csrf() {
            rb = rb.header("x-csrf-token", csrf);
        }
        rb
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let retry = rb.try_clone();
        let res = match (rb.send().await, retry) {
            (Ok(res), _) => res,
            // A pooled keep-alive connection the server closed after its previous answer (it
            // does so when it answered without reading a request body): the request never
            // reached the server, so it is sent once more on a new connection, as browsers do.
            (Err(e), Some(retry)) if is_stale_connection(&e) => retry
                .send()
                .await
                .expect("request failed to reach the server"),
            (Err(e), _) => panic!("request failed to reach the server: {e:?}"),
        };
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST` without a body.
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(self.request(Method::POST, path)).await
    }

    /// `PUT` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// `PATCH` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Any method with a raw body and content type (for malformed input).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        self.send(
            self.request(method, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// Creates an API token from this client's session and returns its secret.
    pub async fn create_token(&self, name: &str) -> String {
        let r = self
            .post("/api/auth/tokens", &json!({ "name": name }))
            .await;
        r.ok(201)["token"].as_str().expect("token").to_string()
    }

    /// A client acting as the same user through a fresh bearer token.
    pub async fn bearer(&self) -> Client {
        let token = self.create_token("test").await;
        self.with_bearer(&token)
    }
}

impl TestApp {
    /// Starts a server on a fresh database of `backend`.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server with a configuration tweaked by `configure`.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::new(backend).await;
        let mut config = Config::for_tests(db.url());
        configure(&mut config);
        let app = Application::build(config)
            .await
            .unwrap_or_else(|e| panic!("server did not start on {backend:?}: {e}"));
        let port = app.port();
        let state = app.state().clone();
        let cancel = app.shutdown_token();
        let server = tokio::spawn(app.run_until_stopped());
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state,
            db,
            cancel,
            server: Some(server),
            next_user: AtomicU64::new(1),
        }
    }

    /// The database backend.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The database URL (for a second server on the same database, or direct checks).
    pub fn database_url(&self) -> &str {
        self.db.url()
    }

    /// A full URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client with no credentials.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.base)
    }

    /// Registers a new user (unique email), gives it `role` directly in the store, and returns
    /// a client logged in by cookie session.
    pub async fn user(&self, role: Role) -> Client {
        let n = self.next_user.fetch_add(1, Ordering::Relaxed);
        let email = format!("{}{n}@example.test", role.as_str());
        let client = self.anonymous();
        let r = client
            .post(
                "/api/auth/register",
                &json!({ "email": email, "password": PASSWORD, "display_name": format!("{role} {n}") }),
            )
            .await;
        let user = r.ok(201).clone();
        let id = user["id"].as_str().expect("user id").to_string();
        if role != Role::Learner {
            self.state
                .store
                .update_user(
                    &id,
                    &UserPatch {
                        role: Some(role),
                        ..UserPatch::default()
                    },
                    learnsync::model::now_ms(),
                )
                .await
                .expect("set role");
        }
        let mut client = client;
        let me = client.get("/api/auth/me").await;
        client.user = Some(me.ok(200).clone());
        client.password = Some(PASSWORD.to_string());
        assert_eq!(
            client.user.as_ref().map(|u| u["role"].clone()),
            Some(json!(role.as_str()))
        );
        client
    }

    /// A user of `role` that talks through a bearer token only.
    pub async fn bearer_user(&self, role: Role) -> Client {
        self.user(role).await.bearer().await
    }

    /// Stops the server gracefully and starts a new one on the same database (new port).
    pub async fn restart(mut self) -> TestApp {
        self.shutdown().await;
        let config = Config::for_tests(self.db.url());
        let app = Application::build(config)
            .await
            .unwrap_or_else(|e| panic!("server did not restart: {e}"));
        self.port = app.port();
        self.base = format!("http://127.0.0.1:{}", self.port);
        self.state = app.state().clone();
        self.cancel = app.shutdown_token();
        self.server = Some(tokio::spawn(app.run_until_stopped()));
        self
    }

    async fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped with an error");
        }
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Checks a JSON body against the schema the OpenAPI document declares for `method path
/// status` (`application/json` content), the way schema-driven fuzzers do. Returns what does
/// not match (empty when it conforms, or when the document declares no JSON schema for it).
///
/// Supports what the server's document uses: `$ref`, `allOf`, `oneOf`/`anyOf`, `type` (also
/// as a list), `required`, `properties`, `items` and `enum`.
pub fn schema_violations(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> Vec<String> {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"];
    if schema.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    check_schema(doc, schema, body, "$", &mut out);
    out
}

fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            out.push(format!("{at}: unresolved {reference}"));
        } else {
            check_schema(doc, target, value, at, out);
        }
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_schema(doc, s, value, at, out);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let fits = options.iter().any(|s| {
                let mut errs = Vec::new();
                check_schema(doc, s, value, at, &mut errs);
                errs.is_empty()
            });
            if !fits {
                out.push(format!("{at}: {value} matches none of {key}"));
            }
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        });
        if !fits {
            out.push(format!("{at}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    out.push(format!("{at}: required property {name:?} missing"));
                }
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, sub) in properties {
                if let Some(v) = object.get(name) {
                    check_schema(doc, sub, v, &format!("{at}.{name}"), out);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            check_schema(doc, items, v, &format!("{at}[{i}]"), out);
        }
    }
}

/// hyper's "connection closed before message completed" on a reused connection (reqwest does
/// not expose hyper's error type; its debug form names the kind).
fn is_stale_connection(e: &reqwest::Error) -> bool {
    // `IncompleteMessage`: the connection closed before an answer came. `BodyWrite` with a
    // broken pipe or a reset: it closed while the request's body was still being written
    // (the server had answered the previous request without reading its body).
    let text = format!("{e:?}");
    e.is_request()
        && (text.contains("IncompleteMessage")
            || (text.contains("BodyWrite")
                && (text.contains("BrokenPipe") || text.contains("ConnectionReset"))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::schema_violations;

    #[test]
    fn schema_check_finds_missing_and_mistyped_fields() {
        let doc = json!({
            "paths": { "/x": { "get": { "responses": { "200": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Thing" } } } } } } } },
            "components": { "schemas": {
                "Thing": { "type": "object", "required": ["id", "tags"], "properties": {
                    "id": { "type": "string" },
                    "n": { "type": ["integer", "null"] },
                    "kind": { "oneOf": [{ "type": "null" }, { "$ref": "#/components/schemas/Kind" }] },
                    "tags": { "type": "array", "items": { "type": "string" } } } },
                "Kind": { "type": "string", "enum": ["a", "b"] } } }
        });
        let ok = json!({ "id": "1", "n": null, "kind": "a", "tags": ["x"] });
        assert!(schema_violations(&doc, "get", "/x", 200, &ok).is_empty());
        assert_eq!(
            schema_violations(&doc, "get", "/x", 200, &json!({ "id": "1" })).len(),
            1
        );
        assert_eq!(
            schema_violations(&doc, "get", "/x", 200, &json!({ "id": 1, "tags": [] })).len(),
            1
        );
        assert_eq!(
            schema_violations(
                &doc,
                "get",
                "/x",
                200,
                &json!({ "id": "1", "tags": [2], "n": 1.5 })
            )
            .len(),
            2
        );
        assert_eq!(
            schema_violations(
                &doc,
                "get",
                "/x",
                200,
                &json!({ "id": "1", "tags": [], "kind": "c" })
            )
            .len(),
            1
        );
        assert!(
            schema_violations(&doc, "get", "/x", 404, &json!(1)).is_empty(),
            "undeclared: nothing to check"
        );
    }
}
