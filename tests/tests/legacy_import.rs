//! The legacy import pipeline through its three entry points, on both backends: the CLI
//! (`learnsync import`, a real process), the admin upload with its live progress stream, and
//! the browser client's first-run endpoint; imported state reaches connected devices.

use e2e::process::learnsync_bin;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::app::{Client as Http, TestApp};
use e2e::both_backends;
use e2e::db::{Backend, TestDb};
use e2e::device::{Credentials, Device, DocIds};
use learnsync::model::{CourseStatus, ReportStatus, Role};
use learnsync::store::{CourseQuery, ReportQuery, Visibility};
use serde_json::{Value, json};
use sync_core::DocumentId;
use sync_core::docs::learning;

const WAIT: Duration = Duration::from_secs(30);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sync-core/tests/fixtures/localstorage")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

/// Runs `learnsync import … --json` and returns (exit success, the run).
fn cli_import(db: &str, args: &[&str]) -> (bool, Value) {
    let out = Command::new(learnsync_bin())
        .arg("import")
        .args(args)
        .arg("--json")
        .arg("--database-url")
        .arg(db)
        .env("LEARNSYNC_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "import printed no run ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), run)
}

fn count(run: &Value, outcome: &str) -> u64 {
    run["counts"][outcome].as_u64().unwrap_or(0)
}

/// Sum of a key's rows with `outcome` over all dumps of a run.
fn key_count(run: &Value, key: &str, outcome: &str) -> u64 {
    run["report"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["keys"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["key"] == key && r["outcome"] == outcome)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

fn now() -> i64 {
    learnsync::model::now_ms()
}

async fn doc_ids(user: &Http) -> DocIds {
    let body = user.get("/api/sync/documents").await;
    let body = body.ok(200);
    DocIds {
        preferences: DocumentId::parse(body["preferences"].as_str().unwrap()).unwrap(),
        learning: DocumentId::parse(body["learning"].as_str().unwrap()).unwrap(),
    }
}

both_backends!(cli_imports_the_fixtures_once, |backend| async move {
    let db = TestDb::new(backend).await;
    let dir = fixtures();
    let dir = dir.to_str().unwrap();

    // A dry run on an empty database reports everything as new and writes nothing.
    let (ok, dry) = cli_import(db.url(), &[dir, "--dry-run"]);
    assert!(ok, "{dry:#}");
    assert_eq!(dry["dry_run"], true);
    assert!(count(&dry, "imported") > 10, "{dry:#}");

    let (ok, first) = cli_import(db.url(), &[dir]);
    assert!(ok, "{first:#}");
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["dumps_done"], 3);
    assert_eq!(
        count(&dry, "imported"),
        count(&first, "imported"),
        "the dry run predicted the real run"
    );
    assert_eq!(key_count(&first, "userEnrollments", "imported"), 4);
    assert_eq!(key_count(&first, "moderationQueue", "imported"), 2);
    assert_eq!(key_count(&first, "errorLog", "imported"), 2);
    assert_eq!(key_count(&first, "someOtherAppKey", "skipped"), 1);
    assert_eq!(first["counts"]["users"].as_array().unwrap().len(), 2);

    let (ok, second) = cli_import(db.url(), &[dir]);
    assert!(ok, "{second:#}");
    assert_eq!(count(&second, "imported"), 0, "{second:#}");
    assert_eq!(count(&second, "merged"), 0, "{second:#}");
    assert!(count(&second, "unchanged") > 10);
    assert_eq!(second["counts"]["users"], json!([]));

    // What landed, read through a server on the same database.
    let connected = learnsync::store::connect(db.url(), 2, "check")
        .await
        .unwrap();
    let store = connected.store();
    let anna = store
        .user_by_legacy_id("u-anna")
        .await
        .unwrap()
        .expect("placeholder for u-anna");
    assert!(anna.password_hash.is_none() && anna.user.email.is_none());
    let rows = store.enrollments(&anna.user.id).await.unwrap();
    let mut courses: Vec<_> = rows.iter().map(|e| e.course_id.as_str()).collect();
    courses.sort();
    assert_eq!(courses, vec!["1", "c-geo", "s-phys"]);
    let algebra = rows.iter().find(|e| e.course_id == "1").unwrap();
    assert_eq!(algebra.progress, 66.0);
    let prefs = store.preferences(&anna.user.id).await.unwrap().unwrap();
    assert_eq!(prefs.theme.as_deref(), Some("dark"));
    assert_eq!(prefs.language.as_deref(), Some("ru"));
    let boris = store.user_by_legacy_id("u-boris").await.unwrap().unwrap();
    let boris_rows = store.enrollments(&boris.user.id).await.unwrap();
    assert_eq!(
        boris_rows.len(),
        3,
        "an enrollment in a course missing from the catalog is kept too"
    );
    let catalog = store
        .list_courses(&CourseQuery {
            q: None,
            kind: None,
            category: None,
            level: None,
            status: None,
            author: None,
            visibility: Visibility::All,
            sort: Default::default(),
            cursor: None,
            limit: 100,
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = catalog.items.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["1", "c-geo", "s-chem", "s-phys"]);
    let chem = catalog.items.iter().find(|c| c.id == "s-chem").unwrap();
    assert_eq!(chem.status, CourseStatus::Draft);
    let reports = store
        .list_reports(&ReportQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reports.items.len(), 2);
    let r1 = reports
        .items
        .iter()
        .find(|r| r.note.as_deref() == Some("removed link"))
        .unwrap();
    assert_eq!(r1.status, ReportStatus::Resolved);
    let runs = store.list_runs(None, 10).await.unwrap();
    assert_eq!(
        runs.items.len(),
        3,
        "every run is recorded, the dry run too"
    );
});

// A dump whose log rows the database refuses still has its documents imported and reported
// (its rows and its documents are written at the same time); the dump fails, and running the
// import again stores the rows and leaves the documents as they are.
both_backends!(
    refused_log_rows_do_not_hold_back_the_documents,
    |backend| async move {
        let db = TestDb::new(backend).await;
        let connected = learnsync::store::connect(db.url(), 2, "check")
            .await
            .unwrap();
        let store = connected.store();
        store.migrate().await.unwrap();
        let (refuse, allow) = match backend {
            Backend::Sqlite => (
                "CREATE TRIGGER refuse_logs BEFORE INSERT ON system_logs \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
                "DROP TRIGGER refuse_logs;",
            ),
            Backend::Postgres => (
                "CREATE FUNCTION refuse_logs() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_logs BEFORE INSERT ON system_logs \
             FOR EACH ROW EXECUTE FUNCTION refuse_logs();",
                "DROP TRIGGER refuse_logs ON system_logs; DROP FUNCTION refuse_logs();",
            ),
        };
        let sql = |text: &'static str| async {
            match &connected {
                learnsync::store::Connected::Sqlite(s) => {
                    sqlx::raw_sql(text).execute(s.pool()).await.map(drop)
                }
                learnsync::store::Connected::Postgres(s) => {
                    sqlx::raw_sql(text).execute(s.pool()).await.map(drop)
                }
            }
            .unwrap()
        };
        sql(refuse).await;
        let dir = tempfile::tempdir().unwrap();
        // A learner's dump with the admin dump's error log in it.
        let mut dump: serde_json::Map<String, Value> =
            serde_json::from_str(&fixture("learner-basic.json")).unwrap();
        let admin: serde_json::Map<String, Value> =
            serde_json::from_str(&fixture("admin.json")).unwrap();
        dump.insert("errorLog".into(), admin["errorLog"].clone());
        std::fs::write(
            dir.path().join("learner.json"),
            serde_json::to_string(&dump).unwrap(),
        )
        .unwrap();
        let dir = dir.path().to_str().unwrap().to_string();

        let (ok, run) = cli_import(db.url(), &[&dir]);
        assert!(!ok, "a failed dump makes the command fail: {run:#}");
        assert_eq!(run["counts"]["dumps_failed"], 1, "{run:#}");
        assert!(
            run["report"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("run the import again"),
            "{run:#}"
        );
        assert_eq!(key_count(&run, "errorLog", "imported"), 0, "{run:#}");
        let enrolled = key_count(&run, "userEnrollments", "imported");
        assert!(
            enrolled > 0,
            "the documents are imported and reported: {run:#}"
        );
        let users = run["counts"]["users"].as_array().unwrap().clone();
        assert_eq!(users.len(), 1, "{run:#}");
        let owner = users[0].as_str().unwrap();
        assert!(
            !store.enrollments(owner).await.unwrap().is_empty(),
            "the enrollments are stored"
        );
        sql(allow).await;
        let (ok, again) = cli_import(db.url(), &[&dir]);
        assert!(ok, "{again:#}");
        assert!(key_count(&again, "errorLog", "imported") > 0, "{again:#}");
        assert_eq!(
            key_count(&again, "userEnrollments", "imported"),
            0,
            "{again:#}"
        );
        assert_eq!(again["counts"]["users"], json!([]), "{again:#}");
    }
);

both_backends!(cli_reports_bad_input_and_fails, |backend| async move {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("array.json"), "[1, 2]").unwrap();
    std::fs::write(dir.path().join("good.json"), fixture("learner-basic.json")).unwrap();
    let (ok, run) = cli_import(db.url(), &[dir.path().to_str().unwrap()]);
    assert!(!ok, "a failed dump makes the command fail");
    assert_eq!(run["status"], "partial");
    assert_eq!(run["counts"]["dumps_failed"], 1);
    let failed = &run["report"][0];
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{failed:#}"
    );
    assert!(
        count(&run, "imported") > 0,
        "the good dump is imported all the same"
    );

    // Unknown users are refused before anything happens.
    let out = Command::new(learnsync_bin())
        .args([
            "import",
            dir.path().to_str().unwrap(),
            "--user",
            "nobody@example.test",
            "--database-url",
            db.url(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
});

/// The CLI on a generated set of dumps: each its own user, all merging into one catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_imports_a_thousand_generated_dumps() {
    let n: u64 = std::env::var("IMPORT_DUMPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let options = sync_core::import::generate::Options::default();
    for seed in 0..n {
        let text = sync_core::import::generate::dump(seed, &options);
        std::fs::write(dir.path().join(format!("dump-{seed:05}.json")), text).unwrap();
    }
    let (ok, run) = cli_import(db.url(), &[dir.path().to_str().unwrap()]);
    assert!(ok, "{}", run["errors"]);
    assert_eq!(run["dumps_done"], n);
    assert_eq!(run["counts"]["users"].as_array().unwrap().len() as u64, n);
    let (ok, again) = cli_import(db.url(), &[dir.path().to_str().unwrap()]);
    assert!(ok);
    assert_eq!(
        count(&again, "imported") + count(&again, "merged"),
        0,
        "{}",
        again["counts"]
    );
}

/// Reads a server-sent event stream until `finished`, returning the progress events and the
/// finished run.
async fn follow_events(admin: &Http, run_id: &str) -> (Vec<Value>, Value) {
    let response = admin
        .request(
            reqwest::Method::GET,
            &format!("/api/admin/migrations/{run_id}/events"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut response = response;
    let mut buffer = String::new();
    let mut progress = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the run finished in time")
            .unwrap()
            .expect("the stream stayed open until finished");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let mut name = "";
            let mut data = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            match name {
                "progress" => progress.push(serde_json::from_str(&data).unwrap()),
                "finished" => return (progress, serde_json::from_str(&data).unwrap()),
                _ => {}
            }
        }
    }
}

async fn upload(admin: &Http, files: &[&str], user: Option<&str>, dry_run: bool) -> e2e::app::Resp {
    let mut form = reqwest::multipart::Form::new();
    for name in files {
        form = form.part(
            "files",
            reqwest::multipart::Part::text(fixture(name)).file_name(name.to_string()),
        );
    }
    if let Some(u) = user {
        form = form.text("user", u.to_string());
    }
    if dry_run {
        form = form.text("dry_run", "true");
    }
    admin
        .send(
            admin
                .request(reqwest::Method::POST, "/api/admin/migrations")
                .multipart(form),
        )
        .await
}

both_backends!(
    admin_upload_streams_progress_and_is_idempotent,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.user(Role::Admin).await;
        let learner = app.user(Role::Learner).await;

        let files = ["learner-basic.json", "learner-messy.json", "admin.json"];
        let started = upload(&admin, &files, None, false).await;
        let started = started.ok(202).clone();
        let (progress, run) = follow_events(&admin, started["id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        assert_eq!(run["dumps_done"], 3);
        if let Some(last) = progress.last() {
            assert_eq!(last["total"], 3);
        }
        assert!(count(&run, "imported") > 10);
        let report = run["report"].as_array().unwrap();
        let messy = report
            .iter()
            .find(|d| d["dump"] == "learner-messy.json")
            .unwrap();
        let skipped: Vec<_> = messy["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["outcome"] == "skipped")
            .map(|k| k["key"].as_str().unwrap())
            .collect();
        assert!(
            skipped.contains(&"errorLog") && skipped.contains(&"someOtherAppKey"),
            "{messy:#}"
        );

        // The same upload again changes nothing; the finished run is also readable directly.
        let again = upload(&admin, &files, None, false).await;
        let again_id = again.ok(202)["id"].as_str().unwrap().to_string();
        let (_, again) = follow_events(&admin, &again_id).await;
        assert_eq!(
            count(&again, "imported") + count(&again, "merged"),
            0,
            "{:#}",
            again["counts"]
        );
        let stored = admin
            .get(&format!("/api/admin/migrations/{again_id}"))
            .await;
        assert_eq!(stored.ok(200)["status"], "succeeded");
        // A finished run's event stream answers at once with `finished`.
        let (_, replay) = follow_events(&admin, &again_id).await;
        assert_eq!(replay["id"], again_id.as_str());
        let runs = admin.get("/api/admin/migrations?limit=10").await;
        assert_eq!(runs.ok(200)["items"].as_array().unwrap().len(), 2);

        // The admin dump tied to a learner: its theme goes to that learner.
        let tied = upload(&admin, &["admin.json"], Some(learner.email()), false).await;
        let (_, tied) = follow_events(&admin, tied.ok(202)["id"].as_str().unwrap()).await;
        assert_eq!(tied["status"], "succeeded");
        let prefs = learner.get("/api/preferences").await;
        assert_eq!(prefs.ok(200)["theme"], "system");

        // Bad uploads change nothing.
        let none = admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/api/admin/migrations")
                    .multipart(reqwest::multipart::Form::new()),
            )
            .await;
        // (An empty form is not even valid multipart.)
        none.assert_error(400);
        let no_files = admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/api/admin/migrations")
                    .multipart(reqwest::multipart::Form::new().text("dry_run", "true")),
            )
            .await;
        no_files.assert_error(422);
        let unknown = upload(&admin, &["admin.json"], Some("nobody-at-all"), false).await;
        unknown.assert_error(404);
        let forbidden = upload(&learner, &["admin.json"], None, false).await;
        forbidden.assert_error(403);
        let runs = admin.get("/api/admin/migrations?limit=10").await;
        assert_eq!(runs.ok(200)["items"].as_array().unwrap().len(), 3);
    }
);

both_backends!(
    first_run_import_reaches_connected_devices,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let anna = app.user(Role::Learner).await;
        let token = anna.create_token("phone").await;
        let mut phone = Device::new(&app.base, Credentials::Bearer(token), doc_ids(&anna).await);
        phone.connect().await;
        phone.synced().await;
        // A setting made on the phone before the import wins over the legacy one.
        phone.edit(|c| c.set_preference("language", &json!("en"), now()).unwrap());
        phone.flush();
        phone
            .wait_for("language stored", WAIT, |c| {
                c.preferences().unwrap().get("language") == Some(&json!("en"))
            })
            .await;
        phone.synced().await;

        let dump: Value = serde_json::from_str(&fixture("learner-basic.json")).unwrap();
        let run = anna
            .post("/api/me/legacy-import", &json!({ "dump": dump }))
            .await;
        let run = run.ok(200).clone();
        assert_eq!(run["source"], "client");
        assert_eq!(run["status"], "succeeded");
        assert_eq!(key_count(&run, "language", "skipped"), 1, "{run:#}");

        phone
            .wait_for("imported state on the phone", WAIT, |c| {
                let prefs = c.preferences().unwrap();
                let enrolled = c.enrollments().unwrap();
                prefs.get("theme") == Some(&json!("dark"))
                    && enrolled
                        .iter()
                        .filter(|e| e.status == learning::Status::Active)
                        .count()
                        == 3
            })
            .await;
        phone.edit(|c| assert_eq!(c.preferences().unwrap().get("language"), Some(&json!("en"))));

        // Again: nothing changes. Garbage is refused with nothing recorded.
        let again = anna
            .post("/api/me/legacy-import", &json!({ "dump": dump }))
            .await;
        assert_eq!(count(again.ok(200), "imported"), 0);
        anna.post("/api/me/legacy-import", &json!({ "dump": [1, 2] }))
            .await
            .assert_error(422);
        anna.post("/api/me/legacy-import", &json!({ "nope": 1 }))
            .await
            .assert_error(400);
        app.anonymous()
            .post("/api/me/legacy-import", &json!({ "dump": dump }))
            .await
            .assert_error(401);
        let admin = app.user(Role::Admin).await;
        let runs = admin.get("/api/admin/migrations?limit=10").await;
        assert_eq!(runs.ok(200)["items"].as_array().unwrap().len(), 2);
    }
);

/// A bad `LEARNSYNC_*` setting stops the import before it touches the database, with an error
/// that names the setting (it used to fall back silently to other settings).
#[test]
fn cli_import_refuses_an_invalid_setting_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("untouched.db");
    let out = Command::new(learnsync_bin())
        .args([
            "import",
            fixtures().to_str().unwrap(),
            "--database-url",
            &format!("sqlite://{}?mode=rwc", db_file.display()),
        ])
        .env("LEARNSYNC_COMMIT_GATHER_US", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("LEARNSYNC_") && stderr.contains("commit-gather-us"),
        "{stderr}"
    );
    assert!(!db_file.exists(), "the database was created: {stderr}");
}
