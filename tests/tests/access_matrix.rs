//! The access matrix: every route of the served OpenAPI document × anonymous / learner /
//! teacher / admin × their own resource / someone else's. The route list comes from the server,
//! so a route added without an entry here fails the test instead of going unchecked. Every
//! observed status must also be documented for that operation in the OpenAPI document.

use std::collections::{BTreeSet, HashMap};

use e2e::app::{Client, Resp, TestApp};
use e2e::both_backends;
use learnsync::model::{CourseKind, CourseStatus, Role};
use learnsync::store::NewCourse;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    Learner,
    Teacher,
    Admin,
}

const EVERYONE: [Who; 4] = [Who::Anonymous, Who::Learner, Who::Teacher, Who::Admin];

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 2xx (or 304).
    Allowed,
    /// 401, 403 or 404 (404 when the resource is invisible to the caller).
    Denied,
    /// Past the access check, refused for another reason (a 4xx other than 401/403/404).
    Reached,
}

struct World {
    app: TestApp,
    /// (role, is the "other" user of that role) → client.
    users: HashMap<(Who, bool), Client>,
    anonymous: Client,
    n: std::sync::atomic::AtomicU32,
}

impl World {
    async fn new(app: TestApp) -> World {
        let mut users = HashMap::new();
        for (who, role) in [
            (Who::Learner, Role::Learner),
            (Who::Teacher, Role::Teacher),
            (Who::Admin, Role::Admin),
        ] {
            users.insert((who, false), app.user(role).await);
            users.insert((who, true), app.user(role).await);
        }
        let anonymous = app.anonymous();
        World {
            app,
            users,
            anonymous,
            n: Default::default(),
        }
    }

    fn client(&self, who: Who) -> &Client {
        match who {
            Who::Anonymous => &self.anonymous,
            w => &self.users[&(w, false)],
        }
    }

    /// The user whose resource is "own" (the caller) or "other's" (another user of the same
    /// role; for anonymous callers and learners' courses, a teacher).
    fn owner(&self, who: Who, own: bool) -> &Client {
        match (who, own) {
            (Who::Anonymous, _) => &self.users[&(Who::Learner, true)],
            (w, own) => &self.users[&(w, !own)],
        }
    }

    fn next(&self) -> u32 {
        self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// An admin's upload of one small dump as a dry run (changes nothing): the form, and a run.
    fn dump_form() -> reqwest::multipart::Form {
        reqwest::multipart::Form::new()
            .part(
                "files",
                reqwest::multipart::Part::text("{\"theme\": \"dark\"}").file_name("matrix.json"),
            )
            .text("dry_run", "true")
    }

    async fn run(&self) -> String {
        let admin = &self.users[&(Who::Admin, true)];
        let started = admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/api/admin/migrations")
                    .multipart(Self::dump_form()),
            )
            .await;
        started.ok(202)["id"].as_str().unwrap().to_string()
    }

    async fn course(&self, author: Option<&str>, status: CourseStatus) -> String {
        let id = format!("m-{}", self.next());
        let now = learnsync::model::now_ms();
        self.app
            .state
            .store
            .create_course(&NewCourse {
                id: id.clone(),
                kind: CourseKind::Course,
                title: format!("Matrix {id}"),
                description: String::new(),
                category: None,
                level: None,
                status,
                author_id: author.map(str::to_string),
                lessons: vec![],
                extra: json!({}),
                created_at: now,
                now,
            })
            .await
            .unwrap();
        id
    }
}

/// Sends the request for `route` as `who` against their own or someone else's resource, and
/// says what must come back. `None` when the combination means nothing (no "own" resource
/// for an anonymous caller, no other's resource for a route without one).
async fn probe(w: &World, method: &str, path: &str, who: Who, own: bool) -> Option<(Resp, Expect)> {
    use Expect::*;
    let c = w.client(who);
    let anon = who == Who::Anonymous;
    let authed = if anon { Denied } else { Allowed };
    let admin_only = if who == Who::Admin { Allowed } else { Denied };
    if anon && own {
        return None;
    }
    let owner = w.owner(who, own);
    let has_resource = path.contains('{');
    if !own && !has_resource && !anon {
        return None;
    }
    let r = match (method, path) {
        ("get", "/healthz")
        | ("get", "/readyz")
        | ("get", "/metrics")
        | ("get", "/api/openapi.json") => (c.get(path).await, Allowed),
        ("post", "/api/auth/register") => {
            let body = json!({ "email": format!("new{}@example.test", w.next()), "password": e2e::app::PASSWORD, "display_name": "N" });
            // A fresh client: registering logs the client in, which must not change `c`.
            (w.app.anonymous().post(path, &body).await, Allowed)
        }
        ("post", "/api/auth/login") => {
            let email = if anon {
                owner.email().to_string()
            } else {
                c.email().to_string()
            };
            let fresh = w.app.anonymous();
            (
                fresh
                    .post(
                        path,
                        &json!({ "email": email, "password": e2e::app::PASSWORD }),
                    )
                    .await,
                Allowed,
            )
        }
        ("post", "/api/auth/logout") => {
            // Log out a second session of the same user, so `c` stays logged in.
            if anon {
                (c.post_empty(path).await, Denied)
            } else {
                let second = w.app.anonymous();
                second
                    .post(
                        "/api/auth/login",
                        &json!({ "email": c.email(), "password": e2e::app::PASSWORD }),
                    )
                    .await
                    .ok(200);
                (second.post_empty(path).await, Allowed)
            }
        }
        ("get", "/api/auth/me") | ("get", "/api/auth/tokens") => (c.get(path).await, authed),
        ("post", "/api/auth/tokens") => (c.post(path, &json!({ "name": "matrix" })).await, authed),
        ("delete", "/api/auth/tokens/{id}") => {
            let token = owner
                .post("/api/auth/tokens", &json!({ "name": "victim" }))
                .await;
            let id = token.ok(201)["id"].as_str().unwrap().to_string();
            // Tokens are personal: not even an admin revokes another user's token here.
            (
                c.delete(&format!("/api/auth/tokens/{id}")).await,
                if own { Allowed } else { Denied },
            )
        }
        ("get", "/api/courses") => (c.get(path).await, Allowed),
        ("post", "/api/courses") => {
            let expect = if matches!(who, Who::Teacher | Who::Admin) {
                Allowed
            } else {
                Denied
            };
            (
                c.post(path, &json!({ "title": "Matrix new" })).await,
                expect,
            )
        }
        ("get", "/api/courses/{id}")
        | ("patch", "/api/courses/{id}")
        | ("delete", "/api/courses/{id}") => {
            // A draft: visible to its author and admins only.
            let author = if who == Who::Learner || anon {
                w.users[&(Who::Teacher, true)].id().to_string()
            } else {
                owner.id().to_string()
            };
            let id = w.course(Some(&author), CourseStatus::Draft).await;
            let url = format!("/api/courses/{id}");
            let is_author = !anon && c.id() == author;
            let expect = match method {
                "get" | "patch" => {
                    if who == Who::Admin || is_author {
                        Allowed
                    } else {
                        Denied
                    }
                }
                _ => admin_only,
            };
            let r = match method {
                "get" => c.get(&url).await,
                "patch" => c.patch(&url, &json!({ "title": "Changed" })).await,
                _ => c.delete(&url).await,
            };
            (r, expect)
        }
        ("post", "/api/reports") => {
            let id = w.course(None, CourseStatus::Published).await;
            (
                c.post(path, &json!({ "course_id": id, "reason": "matrix" }))
                    .await,
                authed,
            )
        }
        ("get", "/api/reports") => (c.get(path).await, authed),
        ("get", "/api/reports/{id}") => {
            let course = w.course(None, CourseStatus::Published).await;
            let report = owner
                .post(
                    "/api/reports",
                    &json!({ "course_id": course, "reason": "mine" }),
                )
                .await;
            let id = report.ok(201)["id"].as_str().unwrap().to_string();
            let expect = if anon {
                Denied
            } else if own || who == Who::Admin {
                Allowed
            } else {
                Denied
            };
            (c.get(&format!("/api/reports/{id}")).await, expect)
        }
        ("get", "/api/admin/reports")
        | ("get", "/api/admin/users")
        | ("get", "/api/admin/logs")
        | ("get", "/api/admin/devices") => (c.get(path).await, admin_only),
        ("get", p) if p.starts_with("/api/admin/analytics/") => (c.get(path).await, admin_only),
        ("post", "/api/admin/reports/{id}/resolve") => {
            let course = w.course(None, CourseStatus::Published).await;
            let report = owner
                .post(
                    "/api/reports",
                    &json!({ "course_id": course, "reason": "x" }),
                )
                .await;
            let id = report.ok(201)["id"].as_str().unwrap().to_string();
            (
                c.post(
                    &format!("/api/admin/reports/{id}/resolve"),
                    &json!({ "status": "dismissed", "note": "m" }),
                )
                .await,
                admin_only,
            )
        }
        ("patch", "/api/admin/users/{id}") => {
            let role = owner.user.as_ref().unwrap()["role"].clone();
            (
                c.patch(
                    &format!("/api/admin/users/{}", owner.id()),
                    &json!({ "role": role }),
                )
                .await,
                admin_only,
            )
        }
        ("delete", "/api/admin/users/{id}") => {
            // Erasure: a fresh user each time, so the matrix's own users stay.
            let victim = w.app.user(Role::Learner).await;
            let id = victim.id();
            (
                c.delete(&format!("/api/admin/users/{id}?confirm={id}"))
                    .await,
                admin_only,
            )
        }
        ("get", "/api/me/export") => (c.get(path).await, authed),
        ("get", "/api/admin/migrations") => (c.get(path).await, admin_only),
        ("post", "/api/admin/migrations") => (
            c.send(
                c.request(reqwest::Method::POST, path)
                    .multipart(World::dump_form()),
            )
            .await,
            admin_only,
        ),
        ("get", "/api/admin/migrations/{id}") | ("get", "/api/admin/migrations/{id}/events") => {
            // Runs belong to no one: admins see every run, nobody else any.
            let id = w.run().await;
            (c.get(&path.replace("{id}", &id)).await, admin_only)
        }
        ("post", "/api/me/legacy-import") => (
            c.post(path, &json!({ "dump": { "theme": "dark" } })).await,
            authed,
        ),
        ("post", "/api/admin/sync") => (
            c.post(path, &json!({ "user": owner.id() })).await,
            admin_only,
        ),
        ("post", "/api/logs") => (c.post(path, &json!({ "message": "matrix" })).await, authed),
        ("get", "/api/sync/documents")
        | ("get", "/api/preferences")
        | ("get", "/api/enrollments") => (c.get(path).await, authed),
        ("put", "/api/preferences") => (c.put(path, &json!({ "theme": "dark" })).await, authed),
        ("patch", "/api/preferences") => {
            (c.patch(path, &json!({ "language": "ru" })).await, authed)
        }
        ("post", "/api/enrollments") => {
            let course = w.course(None, CourseStatus::Published).await;
            (c.post(path, &json!({ "course_id": course })).await, authed)
        }
        ("get", "/api/enrollments/{course_id}")
        | ("patch", "/api/enrollments/{course_id}")
        | ("delete", "/api/enrollments/{course_id}") => {
            // Enrollments are per user: "other's" is a course someone else is enrolled in.
            let course = w.course(None, CourseStatus::Published).await;
            owner
                .post("/api/enrollments", &json!({ "course_id": course }))
                .await
                .ok(201);
            let url = format!("/api/enrollments/{course}");
            let expect = if !anon && own { Allowed } else { Denied };
            let r = match method {
                "get" => c.get(&url).await,
                "patch" => c.patch(&url, &json!({ "progress": 10.0 })).await,
                _ => c.delete(&url).await,
            };
            (r, expect)
        }
        ("get", "/sync") => {
            // A plain GET (no upgrade): anonymous is refused first, a user gets past auth to
            // "expected a WebSocket upgrade".
            (c.get(path).await, if anon { Denied } else { Reached })
        }
        _ => panic!(
            "route {} {path} has no entry in the access matrix: add one",
            method.to_uppercase()
        ),
    };
    Some(r)
}

fn documented(doc: &Value, method: &str, path: &str) -> BTreeSet<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

both_backends!(every_route_every_role, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let doc = app
        .anonymous()
        .get("/api/openapi.json")
        .await
        .ok(200)
        .clone();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_string(), path.clone()));
            }
        }
    }
    // The OpenAPI document itself is served outside the generated router.
    if !routes.iter().any(|(_, p)| p == "/api/openapi.json") {
        routes.push(("get".into(), "/api/openapi.json".into()));
    }
    assert!(
        routes.len() >= 30,
        "the route table looks incomplete: {routes:?}"
    );
    let w = World::new(app).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, path) in &routes {
        for who in EVERYONE {
            for own in [true, false] {
                let Some((r, expect)) = probe(&w, method, path, who, own).await else {
                    continue;
                };
                checked += 1;
                let ok = match expect {
                    Expect::Allowed => (200..300).contains(&r.status) || r.status == 304,
                    Expect::Denied => matches!(r.status, 401 | 403 | 404),
                    Expect::Reached => {
                        (400..500).contains(&r.status) && !matches!(r.status, 401 | 403 | 404)
                    }
                };
                if !ok {
                    failures.push(format!(
                        "{} {path} as {who:?} ({}): expected {expect:?}, got {} {}",
                        method.to_uppercase(),
                        if own { "own" } else { "other's" },
                        r.status,
                        r.text.chars().take(200).collect::<String>()
                    ));
                }
                if r.status >= 400 {
                    r.assert_error(r.status);
                }
                if !r.body.is_null() {
                    for v in e2e::app::schema_violations(&doc, method, path, r.status, &r.body) {
                        failures.push(format!(
                            "{} {path} {}: body does not match the documented schema: {v}",
                            method.to_uppercase(),
                            r.status
                        ));
                    }
                }
                if path != "/api/openapi.json" {
                    let statuses = documented(&doc, method, path);
                    if !statuses.contains(&r.status.to_string()) {
                        failures.push(format!(
                            "{} {path}: status {} is not documented (documented: {statuses:?})",
                            method.to_uppercase(),
                            r.status
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 100, "only {checked} checks ran");
});

/// Pages and assets served outside the OpenAPI document: static, the same for everyone, no
/// user data (what they show comes from the API, which the matrix covers). A route the server
/// registers with a plain `.route()` must be listed here, or be documented (and so be in the
/// matrix above): a new undocumented route fails this test.
const PUBLIC_PAGES: &[&str] = &[
    "/",
    "/admin",
    "/admin/",
    "/admin/{section}",
    "/app",
    "/app/",
    "/app/app.js",
    "/app/learnsync.js",
    "/app/app.css",
    "/app/sw.js",
    "/static/admin.js",
    "/static/style.css",
    "/static/api.js",
    "/app/pkg/{*file}",
    // The document itself, served beside the router it describes.
    "/api/openapi.json",
];

/// Every `.route("…")`/`.route_service`/`.nest`/`.nest_service` path literal in `server/src`.
fn undocumented_routes_in_source() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            for (i, _) in text.match_indices(call) {
                let rest = text[i + call.len()..].trim_start();
                let path = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("<not a literal>");
                found.push((
                    f.strip_prefix(&root).unwrap().display().to_string(),
                    path.to_string(),
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_or_a_public_page() {
    let found = undocumented_routes_in_source();
    assert!(
        found.iter().any(|(_, p)| p == "/admin"),
        "the source scan found no page routes: {found:?}"
    );
    let unknown: Vec<_> = found
        .iter()
        .filter(|(_, p)| !PUBLIC_PAGES.contains(&p.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "routes registered outside the OpenAPI document (so outside the access matrix): \
         {unknown:?}; register API routes with utoipa `routes!` so they are documented and \
         checked, or list a static page in PUBLIC_PAGES"
    );
    // The public pages answer anyone, without credentials, and never with a server error.
    let app = TestApp::spawn(e2e::db::Backend::Sqlite).await;
    let anon = app.anonymous();
    for page in PUBLIC_PAGES {
        let path = page
            .replace("{section}", "users")
            .replace("{*file}", "missing.wasm");
        let r = anon.get(&path).await;
        assert!(
            r.status < 500 && !matches!(r.status, 401 | 403),
            "{path}: {} {}",
            r.status,
            r.text.chars().take(200).collect::<String>()
        );
    }
}
