//! API fuzzing from the OpenAPI document (GOALS.md R5): schemathesis (PyPI, pinned in
//! `scripts/setup-schemathesis.sh`) generates requests for every operation of
//! `/api/openapi.json`, as an anonymous client and as a learner, a teacher and an admin (bearer
//! tokens), and checks that no answer is a 5xx and every answer matches the document (status
//! code, content type, headers, body schema).
//!
//! In the suite each operation gets `SCHEMATHESIS_MAX_EXAMPLES` examples (5 by default). The
//! long run:
//! `SCHEMATHESIS_MAX_EXAMPLES=200 cargo nextest run -p e2e --test faults_schemathesis --no-capture`.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::app::TestApp;
use e2e::db::Backend;
use learnsync::model::Role;
use serde_json::json;

fn schemathesis() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/setup-schemathesis.sh"))
        .status()
        .expect("run scripts/setup-schemathesis.sh (needs python3 with venv)");
    assert!(status.success(), "installing schemathesis failed");
    let venv = std::env::var("SCHEMATHESIS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"))
                .join("schemathesis-venv")
        });
    venv.join("bin/st")
}

fn max_examples() -> String {
    std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "5".into())
}

/// Runs schemathesis against the server as `who` (extra headers), returns its output.
fn run(st: &Path, app: &TestApp, who: &str, headers: &[String]) {
    let mut cmd = Command::new(st);
    cmd.arg("run")
        .arg(app.url("/api/openapi.json"))
        .args(["--url", &app.base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &max_examples()])
        .args(["--workers", "1"])
        .args(["--seed", "1"])
        .args(["--request-timeout", "30"])
        .args(["--suppress-health-check", "all"])
        .args(["--warnings", "off"])
        .arg("--no-color")
        // It keeps a replay cache in `.schemathesis/` of the working directory.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1");
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- schemathesis as {who}:\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis found problems as {who} (output above)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_survives_fuzzing_from_its_openapi_document() {
    let st = schemathesis();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        // Fuzzing sends many failed logins and reports; rate limits are tested elsewhere.
        c.login_attempts_per_minute = 100_000;
        c.client_logs_per_minute = 100_000;
    })
    .await;
    // Something to find: a published course with a lesson, an enrollment, a report.
    let teacher = app.user(Role::Teacher).await;
    teacher
        .post(
            "/api/courses",
            &json!({"id": "algebra", "title": "Algebra", "status": "published",
                    "lessons": [{"id": "l1", "title": "One"}]}),
        )
        .await
        .ok(201);
    let learner = app.user(Role::Learner).await;
    learner
        .post("/api/enrollments", &json!({"course_id": "algebra"}))
        .await
        .ok(201);
    let admin = app.user(Role::Admin).await;
    let tokens = [
        ("learner", learner.create_token("fuzz").await),
        ("teacher", teacher.create_token("fuzz").await),
        ("admin", admin.create_token("fuzz").await),
    ];
    let st_clone = st.clone();
    tokio::task::block_in_place(|| {
        run(&st_clone, &app, "anonymous", &[]);
        for (who, token) in &tokens {
            run(&st, &app, who, &[format!("Authorization: Bearer {token}")]);
        }
    });
    // The server is still healthy and the seeded data is intact.
    app.anonymous().get("/healthz").await.ok(200);
    let e = learner.get("/api/enrollments").await;
    assert_eq!(e.ok(200)["items"][0]["course_id"], "algebra");
}
