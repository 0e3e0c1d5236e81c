//! What operators and tools rely on: health and readiness (including a database outage),
//! Prometheus metrics, request ids, the OpenAPI document, the error shape of unknown routes,
//! and graceful shutdown.

use e2e::app::TestApp;
use e2e::both_backends;
use e2e::db::{Backend, postgres_admin_url};
use learnsync::model::Role;
use serde_json::{Value, json};
use sqlx::Connection;

both_backends!(health_and_readiness, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let c = app.anonymous();
    let h = c.get("/healthz").await;
    assert_eq!(h.status, 200);
    let r = c.get("/readyz").await;
    assert_eq!(r.ok(200)["status"], "ok");
    assert_eq!(r.body["database"], "ok");
});

both_backends!(
    metrics_count_requests_by_route_and_status,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let c = app.anonymous();
        c.get("/api/courses").await.ok(200);
        c.get("/api/courses/missing").await.assert_error(404);
        let m = c.get("/metrics").await;
        assert_eq!(m.status, 200);
        assert!(
            m.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain"))
        );
        let lines: Vec<&str> = m.text.lines().collect();
        let has = |needles: &[&str]| {
            lines.iter().any(|l| {
                l.starts_with("http_requests_total") && needles.iter().all(|n| l.contains(n))
            })
        };
        assert!(
            has(&["route=\"/api/courses\"", "status=\"200\""]),
            "{}",
            m.text
        );
        assert!(
            has(&["route=\"/api/courses/{id}\"", "status=\"404\""]),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("http_request_duration_seconds"),
            "latency histogram"
        );
    }
);

both_backends!(request_ids_are_set_and_propagated, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let c = app.anonymous();
    let r = c.get("/api/courses").await;
    let generated = r.header("x-request-id").expect("a request id is generated");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let r = c
        .send(
            c.request(reqwest::Method::GET, "/api/courses")
                .header("x-request-id", "trace-me-42"),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
    // Client error reports keep the request id that carried them.
    let admin = app.user(Role::Admin).await;
    let user = app.user(Role::Learner).await;
    let r = user
        .send(
            user.request(reqwest::Method::POST, "/api/logs")
                .header("x-request-id", "req-from-app")
                .json(&json!({ "message": "boom" })),
        )
        .await;
    assert_eq!(r.status, 202);
    let logs = admin.get("/api/admin/logs?source=client").await;
    assert_eq!(logs.ok(200)["items"][0]["request_id"], "req-from-app");
    // A huge id from a client is stored as a bounded prefix.
    let huge = "r".repeat(5_000);
    let r = user
        .send(
            user.request(reqwest::Method::POST, "/api/logs")
                .header("x-request-id", &huge)
                .json(&json!({ "message": "huge id" })),
        )
        .await;
    assert_eq!(r.status, 202);
    let logs = admin.get("/api/admin/logs?source=client").await;
    assert_eq!(logs.ok(200)["items"][0]["request_id"], "r".repeat(128));
});

both_backends!(
    unknown_routes_and_methods_use_the_error_shape,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let c = app.anonymous();
        let r = c.get("/api/nothing-here").await;
        r.assert_error(404);
        let r = c
            .send(c.request(reqwest::Method::PUT, "/api/courses"))
            .await;
        r.assert_error(405);
    }
);

both_backends!(
    openapi_document_describes_every_route,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let doc = app
            .anonymous()
            .get("/api/openapi.json")
            .await
            .ok(200)
            .clone();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in [
            ("post", "/api/auth/register"),
            ("post", "/api/auth/login"),
            ("post", "/api/auth/logout"),
            ("get", "/api/auth/me"),
            ("post", "/api/auth/tokens"),
            ("get", "/api/auth/tokens"),
            ("delete", "/api/auth/tokens/{id}"),
            ("get", "/api/courses"),
            ("post", "/api/courses"),
            ("get", "/api/courses/{id}"),
            ("patch", "/api/courses/{id}"),
            ("delete", "/api/courses/{id}"),
            ("post", "/api/reports"),
            ("get", "/api/admin/reports"),
            ("post", "/api/admin/reports/{id}/resolve"),
            ("post", "/api/logs"),
            ("get", "/api/admin/logs"),
            ("get", "/api/admin/users"),
            ("patch", "/api/admin/users/{id}"),
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/metrics"),
        ] {
            let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
            assert!(op.is_object(), "{method} {path} missing");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}: no success response"
            );
            // Every documented error answers with the error shape.
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                    assert!(
                        schema.as_str().is_some_and(|s| s.ends_with("/ErrorBody"))
                            || path == "/readyz",
                        "{method} {path} {status}: error responses must use ErrorBody, got {resp}"
                    );
                }
            }
        }
        // The error schema matches what the server sends.
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], json!(["error"]));
        let detail = &doc["components"]["schemas"]["ErrorDetail"];
        let required: Vec<&str> = detail["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(required.contains(&"code") && required.contains(&"message"));
        // Course timestamps are documented as date-time strings, as they are sent.
        let mut created =
            doc["components"]["schemas"]["Course"]["properties"]["created_at"].clone();
        if let Some(reference) = created["$ref"].as_str() {
            let name = reference.rsplit('/').next().unwrap();
            created = doc["components"]["schemas"][name].clone();
        }
        assert_eq!(created["type"], "string", "{created}");
        assert_eq!(created["format"], "date-time", "{created}");
    }
);

both_backends!(
    graceful_shutdown_then_restart_keeps_data,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let teacher = app.user(Role::Teacher).await;
        teacher
            .post(
                "/api/courses",
                &json!({ "id": "kept", "title": "Kept", "status": "published" }),
            )
            .await
            .ok(201);
        let old_base = app.base.clone();
        let app = app.restart().await;
        assert!(
            reqwest::get(format!("{old_base}/healthz")).await.is_err(),
            "the old port is closed after shutdown"
        );
        assert_eq!(
            app.anonymous().get("/api/courses/kept").await.ok(200)["title"],
            "Kept"
        );
        // Sessions are stored in the database: a browser stays logged in across the restart.
        let moved = teacher.rebase(&app.base);
        assert_eq!(moved.get("/api/auth/me").await.ok(200)["id"], teacher.id());
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_database_outage_and_recovery() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let c = app.anonymous();
    assert_eq!(c.get("/readyz").await.status, 200);
    let name = app
        .database_url()
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["database"], "unreachable");
    // The process itself is alive, and API calls fail cleanly (503 in the error shape).
    assert_eq!(c.get("/healthz").await.status, 200);
    let api = c.get("/api/courses/x").await;
    api.assert_error(503);
    assert_eq!(api.code(), Some("unavailable"));
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if c.get("/readyz").await.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again after the database returned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(c.get("/api/courses").await.status, 200);
}

/// A batch command (here `learnsync import`) turns transparent huge pages off for itself
/// (BENCHMARKS.md, 2026-12-04 third session: the kernel zeroed 2 MiB per fault of mimalloc's
/// arenas), `serve` keeps the system's choice (P1 was worse without), and an operator who sets
/// `MIMALLOC_ALLOW_THP` gets mimalloc's default back. Read from the kernel's view of the
/// running process, `/proc/<pid>/status`; the import is held on a database that accepts its
/// connection and never answers, so it is alive while it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_commands_run_without_transparent_huge_pages_unless_asked() {
    fn thp_enabled(pid: u32) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled line in /proc/{pid}/status:\n{status}"))
            .trim()
            .to_string()
    }
    async fn held_import(env: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dump.json"), "{}").unwrap();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("postgres://postgres@{}/held", silent.local_addr().unwrap());
        let mut child = tokio::process::Command::new(e2e::process::learnsync_bin())
            .arg("import")
            .arg(dir.path())
            .args(["--database-url", &url])
            .env_remove("MIMALLOC_ALLOW_THP")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (_held, _) = tokio::time::timeout(std::time::Duration::from_secs(30), silent.accept())
            .await
            .expect("the import connects to its database")
            .unwrap();
        let seen = thp_enabled(child.id().expect("the import is still running"));
        child.kill().await.unwrap();
        seen
    }
    assert_eq!(held_import(&[]).await, "0");
    assert_eq!(held_import(&[("MIMALLOC_ALLOW_THP", "1")]).await, "1");
    let db = e2e::db::TestDb::new(Backend::Sqlite).await;
    let server = e2e::process::ServerProcess::start(db.url(), &[]).await;
    assert_eq!(
        thp_enabled(server.pid().expect("the server is running")),
        "1"
    );
}
