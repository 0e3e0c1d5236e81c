//! A user's data: the export (`GET /api/me/export`, `learnsync admin export-user`) and the
//! erasure (`DELETE /api/admin/users/{id}?confirm=`), on both backends, with real devices.

use e2e::process::learnsync_bin;
use std::process::Command;
use std::time::Duration;

use e2e::app::{Client as Http, TestApp};
use e2e::both_backends;
use e2e::db::Backend;
use e2e::device::{Credentials, Device, DocIds};
use learnsync::model::{
    CourseKind, CourseStatus, MigrationRun, Role, RunSource, RunStatus, Timestamp,
};
use learnsync::store::NewCourse;
use serde_json::{Value, json};
use sync_core::DocumentId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(30);

fn now() -> i64 {
    learnsync::model::now_ms()
}

async fn doc_ids(user: &Http) -> (DocIds, Value) {
    let r = user.get("/api/sync/documents").await;
    let body = r.ok(200).clone();
    (
        DocIds {
            preferences: DocumentId::parse(body["preferences"].as_str().unwrap()).unwrap(),
            learning: DocumentId::parse(body["learning"].as_str().unwrap()).unwrap(),
        },
        body,
    )
}

async fn device(app: &TestApp, user: &Http, token: &str) -> Device {
    let (ids, _) = doc_ids(user).await;
    let mut d = Device::new(&app.base, Credentials::Bearer(token.into()), ids);
    d.connect().await;
    d.synced().await;
    d
}

async fn published_course(app: &TestApp, id: &str) {
    app.state
        .store
        .create_course(&NewCourse {
            id: id.into(),
            kind: CourseKind::Course,
            title: format!("Course {id}"),
            description: String::new(),
            category: None,
            level: None,
            status: CourseStatus::Published,
            author_id: None,
            lessons: vec![],
            extra: json!({}),
            created_at: now(),
            now: now(),
        })
        .await
        .unwrap();
}

/// Polls until the server's projection shows the course at `progress`.
async fn stored_progress(user: &Http, course: &str, progress: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = user.get("/api/enrollments").await.ok(200).clone();
        if e["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["course_id"] == course && x["progress"] == progress)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "progress {progress} of {course} never stored: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A learner with a device, progress, preferences, a report, a log entry and an import run.
async fn active_learner(app: &TestApp) -> (Http, Device, String) {
    published_course(app, "algebra").await;
    let anna = app.user(Role::Learner).await;
    let token = anna.create_token("anna's phone").await;
    let phone = device(app, &anna, &token).await;
    phone.edit(|c| {
        c.enroll("algebra", now()).unwrap();
        c.complete_lesson("algebra", "l1", now()).unwrap();
        c.set_progress("algebra", 50.0, now()).unwrap();
        c.add_time("algebra", 90, now()).unwrap();
        c.set_preference("theme", &json!("dark"), now()).unwrap();
        c.set_preference("fontSize", &json!(14), now()).unwrap();
    });
    stored_progress(&anna, "algebra", 50.0).await;
    anna.post(
        "/api/reports",
        &json!({ "course_id": "algebra", "reason": "typo", "details": "anna's words about lesson 3" }),
    )
    .await
    .ok(201);
    anna.post("/api/logs", &json!({ "message": "anna's client crashed" }))
        .await
        .ok(202);
    app.state
        .store
        .save_run(&MigrationRun {
            id: format!("run-{}", anna.id()),
            actor_id: Some(anna.id().to_string()),
            source: RunSource::Client,
            label: "first run in the browser".into(),
            status: RunStatus::Succeeded,
            dry_run: false,
            dumps_total: 1,
            dumps_done: 1,
            counts: json!({ "theme": { "imported": 1 } }),
            report: json!([]),
            errors: json!([]),
            started_at: Timestamp(now()),
            finished_at: Some(Timestamp(now())),
        })
        .await
        .unwrap();
    (anna, phone, token)
}

fn find_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k == key || find_key(v, key)),
        Value::Array(a) => a.iter().any(|v| find_key(v, key)),
        _ => false,
    }
}

both_backends!(
    export_holds_everything_about_the_user,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let (anna, _phone, _token) = active_learner(&app).await;
        let bob = app.user(Role::Learner).await;

        let r = anna.get("/api/me/export").await;
        let export = r.ok(200).clone();
        assert!(
            r.header("content-disposition")
                .is_some_and(|d| d.starts_with("attachment")),
            "{:?}",
            r.headers
        );
        assert_eq!(export["format"], "learnsync-user-export/1");
        assert_eq!(export["account"]["id"], anna.id());
        assert_eq!(export["account"]["email"], anna.email());
        assert_eq!(export["account"]["has_password"], true);
        for secret in ["password_hash", "doc_seed", "token_hash", "password"] {
            assert!(!find_key(&export, secret), "{secret} leaked: {export}");
        }
        assert!(!export.to_string().contains("argon2"), "{export}");
        // From the documents.
        assert_eq!(export["preferences"]["settings"]["theme"], "dark");
        assert_eq!(export["preferences"]["settings"]["fontSize"], 14);
        let enrollments = export["enrollments"].as_array().unwrap();
        assert_eq!(enrollments.len(), 1, "{export}");
        let algebra = &enrollments[0];
        assert_eq!(algebra["course_id"], "algebra");
        assert_eq!(algebra["status"], "active");
        assert!(algebra["enrolled_at"].is_string());
        assert_eq!(algebra["progress"]["progress"], 50.0);
        assert_eq!(algebra["progress"]["attempt"], 1);
        assert_eq!(algebra["progress"]["time_spent_secs"], 90);
        assert_eq!(
            algebra["progress"]["completed_lessons"][0]["lesson_id"],
            "l1"
        );
        let (_, doc_list) = doc_ids(&anna).await;
        let documents = export["documents"].as_array().unwrap();
        let kinds: Vec<&str> = documents
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"preferences")
                && kinds.contains(&"learning")
                && kinds.contains(&"course"),
            "{kinds:?}"
        );
        assert!(
            documents.iter().any(|d| d["id"] == doc_list["preferences"]),
            "{documents:?}"
        );
        // Rows the server keeps.
        assert_eq!(export["reports"].as_array().unwrap().len(), 1);
        assert_eq!(
            export["reports"][0]["details"],
            "anna's words about lesson 3"
        );
        assert!(
            export["logs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["message"] == "anna's client crashed"),
            "{export}"
        );
        assert_eq!(export["import_runs"][0]["id"], format!("run-{}", anna.id()));
        assert_eq!(export["api_tokens"][0]["name"], "anna's phone");

        // The OpenAPI document describes it.
        let doc = app
            .anonymous()
            .get("/api/openapi.json")
            .await
            .ok(200)
            .clone();
        assert!(doc["paths"]["/api/me/export"]["get"].is_object());
        let violations = e2e::app::schema_violations(&doc, "get", "/api/me/export", 200, &export);
        assert!(violations.is_empty(), "{violations:?}");
        assert!(doc["components"]["schemas"]["UserExport"].is_object());

        // Someone else's export holds none of it; anonymous gets nothing.
        let bobs = bob.get("/api/me/export").await.ok(200).clone();
        assert_eq!(bobs["account"]["id"], bob.id());
        assert!(bobs["enrollments"].as_array().unwrap().is_empty());
        assert!(bobs["reports"].as_array().unwrap().is_empty());
        assert!(bobs["import_runs"].as_array().unwrap().is_empty());
        assert!(!bobs.to_string().contains(anna.id()));
        app.anonymous()
            .get("/api/me/export")
            .await
            .assert_error(401);

        // The operator's command prints the same document.
        let out = Command::new(learnsync_bin())
            .args(["admin", "export-user", anna.id(), "--database-url"])
            .arg(app.database_url())
            .env("LEARNSYNC_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut from_cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut from_api = export.clone();
        from_cli["exported_at"] = Value::Null;
        from_api["exported_at"] = Value::Null;
        // Reading the export through the API used the token list; only last use times may differ.
        for e in [&mut from_cli, &mut from_api] {
            for t in e["api_tokens"].as_array_mut().unwrap() {
                t["last_used_at"] = Value::Null;
            }
        }
        assert_eq!(from_cli, from_api);
        let out = Command::new(learnsync_bin())
            .args(["admin", "export-user", "no-such-user", "--database-url"])
            .arg(app.database_url())
            .env("LEARNSYNC_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no user with id no-such-user"));
    }
);

/// Opens the sync socket with a bearer token and returns the HTTP status of a refusal, or
/// `None` if the upgrade succeeded.
async fn upgrade_status(base: &str, credentials: &Credentials) -> Option<u16> {
    let url = base.replacen("http://", "ws://", 1) + "/sync";
    let mut request = url.into_client_request().unwrap();
    match credentials {
        Credentials::Bearer(t) => {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Credentials::Cookie(c) => {
            request.headers_mut().insert("cookie", c.parse().unwrap());
        }
        Credentials::QueryToken(_) => unreachable!(),
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Some(response.status().as_u16())
        }
        Err(e) => panic!("unexpected socket error: {e}"),
    }
}

both_backends!(
    erasure_removes_the_user_and_refuses_their_devices,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.user(Role::Admin).await;
        let (anna, mut phone, token) = active_learner(&app).await;
        let anna_id = anna.id().to_string();
        let (ids, _) = doc_ids(&anna).await;
        let anna_cookie = {
            // A second browser session of anna's, to check that sessions go too.
            let browser = app.anonymous();
            let login = browser
                .post(
                    "/api/auth/login",
                    &json!({ "email": anna.email(), "password": e2e::app::PASSWORD }),
                )
                .await;
            login.ok(200);
            login
                .cookie_pair("learnsync_session")
                .expect("session cookie")
        };
        let bob = app.user(Role::Learner).await;
        let bob_token = bob.create_token("bob's phone").await;
        let bob_phone = device(&app, &bob, &bob_token).await;

        // Without the confirmation, or with a wrong one, nothing changes.
        let url = format!("/api/admin/users/{anna_id}");
        admin.delete(&url).await.assert_error(400);
        admin
            .delete(&format!("{url}?confirm=someone-else"))
            .await
            .assert_error(400);
        bob.delete(&format!("{url}?confirm={anna_id}"))
            .await
            .assert_error(403);
        admin
            .delete(&format!(
                "/api/admin/users/{}?confirm={}",
                admin.id(),
                admin.id()
            ))
            .await
            .assert_error(409);
        admin
            .delete("/api/admin/users/no-such-user?confirm=no-such-user")
            .await
            .assert_error(404);
        anna.get("/api/auth/me").await.ok(200);
        assert_eq!(
            app.state
                .store
                .user_documents(&anna_id)
                .await
                .unwrap()
                .len(),
            3
        );

        // Erase.
        let r = admin.delete(&format!("{url}?confirm={anna_id}")).await;
        let erased = r.ok(200).clone();
        let subject = learnsync::erasure::subject(&anna_id);
        assert_eq!(erased["subject"], subject);
        assert_eq!(erased["erased"]["documents"], 3, "{erased}");
        assert_eq!(erased["erased"]["enrollments"], 1);
        assert_eq!(erased["erased"]["preferences"], 1);
        assert_eq!(erased["erased"]["api_tokens"], 1);
        assert_eq!(
            erased["erased"]["sessions"], 2,
            "registration + second login: {erased}"
        );
        assert_eq!(erased["erased"]["reports"], 1);
        assert_eq!(erased["erased"]["logs"], 1);
        assert_eq!(erased["erased"]["import_runs"], 1);
        let doc = app
            .anonymous()
            .get("/api/openapi.json")
            .await
            .ok(200)
            .clone();
        // Documented next to the PATCH of the same path (utoipa merges the two operations).
        assert!(doc["paths"]["/api/admin/users/{id}"]["delete"].is_object());
        assert!(doc["paths"]["/api/admin/users/{id}"]["patch"].is_object());
        assert!(doc["components"]["schemas"]["Erased"].is_object());
        let violations =
            e2e::app::schema_violations(&doc, "delete", "/api/admin/users/{id}", 200, &erased);
        assert!(violations.is_empty(), "{violations:?}");

        // The connected device is closed...
        phone.closed(WAIT).await;
        // ...and refused when it comes back, by token or by session; nothing is recreated.
        assert_eq!(
            upgrade_status(&app.base, &Credentials::Bearer(token.clone())).await,
            Some(401)
        );
        assert_eq!(
            upgrade_status(&app.base, &Credentials::Cookie(anna_cookie.clone())).await,
            Some(401)
        );
        anna.get("/api/auth/me").await.assert_error(401);
        anna.get("/api/me/export").await.assert_error(401);
        let store = &app.state.store;
        assert_eq!(store.user(&anna_id).await.unwrap(), None);
        assert!(store.user_documents(&anna_id).await.unwrap().is_empty());
        for id in [ids.preferences, ids.learning] {
            assert!(
                store
                    .load_document(&id.to_string())
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(store.preferences(&anna_id).await.unwrap(), None);
        assert!(store.enrollments(&anna_id).await.unwrap().is_empty());
        assert!(store.list_devices(Some(&anna_id)).await.unwrap().is_empty());

        // The audit entry names a pseudonym, no personal data.
        let logs = admin
            .get("/api/admin/logs?source=audit")
            .await
            .ok(200)
            .clone();
        let entry = logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["message"] == "user erased")
            .unwrap_or_else(|| panic!("no erasure audit entry: {logs}"))
            .clone();
        assert_eq!(entry["context"]["subject"], subject);
        assert_eq!(entry["user_id"], admin.id());
        let text = entry.to_string();
        for personal in [anna_id.as_str(), anna.email(), "anna's words"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        let everything = admin
            .get("/api/admin/logs?limit=100")
            .await
            .ok(200)
            .to_string();
        assert!(
            !everything.contains("anna's client crashed"),
            "{everything}"
        );

        // Another user's device and data are untouched.
        bob_phone.edit(|c| c.set_preference("theme", &json!("light"), now()).unwrap());
        bob_phone.synced().await;
        assert_eq!(bob.get("/api/preferences").await.ok(200)["theme"], "light");
        assert_eq!(store.user_documents(bob.id()).await.unwrap().len(), 2);
    }
);

/// On PostgreSQL the device may be connected to another instance: the erasure reaches it
/// through `LISTEN/NOTIFY` and that instance refuses it afterwards too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_closes_devices_on_other_instances() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let admin = app.user(Role::Admin).await;
    let anna = app.user(Role::Learner).await;
    let token = anna.create_token("phone").await;
    let (ids, _) = doc_ids(&anna).await;
    let mut config = learnsync::Config::for_tests(app.database_url());
    config.instance_id = Some("second".into());
    let second = learnsync::Application::build(config).await.unwrap();
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let stop_second = second.shutdown_token();
    let server = tokio::spawn(second.run_until_stopped());

    let mut phone = Device::new(&second_base, Credentials::Bearer(token.clone()), ids);
    phone.connect().await;
    phone.synced().await;
    phone.edit(|c| c.set_preference("theme", &json!("dark"), now()).unwrap());
    phone.synced().await;

    admin
        .delete(&format!(
            "/api/admin/users/{}?confirm={}",
            anna.id(),
            anna.id()
        ))
        .await
        .ok(200);
    phone.closed(WAIT).await;
    assert_eq!(
        upgrade_status(&second_base, &Credentials::Bearer(token)).await,
        Some(401)
    );
    assert!(
        app.state
            .store
            .load_document(&ids.preferences.to_string())
            .await
            .unwrap()
            .is_none()
    );
    stop_second.cancel();
    let _ = server.await;
}
