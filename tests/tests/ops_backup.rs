//! Backup and restore through the real `learnsync` binary (`cargo build -p learnsync` first),
//! on both backends: a backup taken while the server runs and a device is connected, more
//! writes after it, the OLDER backup restored into a fresh database, a server started on it —
//! and the device that still holds the newer changes gives them back, so nothing is lost.

use e2e::process::learnsync_bin;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::app::{Client as Http, TestApp};
use e2e::both_backends;
use e2e::db::TestDb;
use e2e::device::{Credentials, Device, DocIds};
use learnsync::model::{CourseKind, CourseStatus, Role};
use learnsync::store::NewCourse;
use serde_json::{Value, json};
use sync_core::DocumentId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn now() -> i64 {
    learnsync::model::now_ms()
}

/// `learnsync <command> <file> --database-url <url>`.
fn cli(command: &str, file: &Path, url: &str) -> Output {
    Command::new(learnsync_bin())
        .arg(command)
        .arg(file)
        .arg("--database-url")
        .arg(url)
        .env("LEARNSYNC_LOG", "warn")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server on a database this test owns (the restored one).
struct Server {
    base: String,
    cancel: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(url: &str) -> Server {
        let app = learnsync::Application::build(learnsync::Config::for_tests(url))
            .await
            .unwrap_or_else(|e| panic!("server did not start on the restored database: {e}"));
        let base = format!("http://127.0.0.1:{}", app.port());
        let cancel = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Server { base, cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn doc_ids(user: &Http) -> DocIds {
    let r = user.get("/api/sync/documents").await;
    let body = r.ok(200);
    DocIds {
        preferences: DocumentId::parse(body["preferences"].as_str().unwrap()).unwrap(),
        learning: DocumentId::parse(body["learning"].as_str().unwrap()).unwrap(),
    }
}

/// What the server holds for a user, through REST (the projection of the stored documents).
async fn state_of(user: &Http) -> (Value, Value) {
    let enrollments = user.get("/api/enrollments").await.ok(200).clone();
    let preferences = user.get("/api/preferences").await.ok(200).clone();
    (enrollments, preferences)
}

fn enrollment<'a>(enrollments: &'a Value, course: &str) -> Option<&'a Value> {
    enrollments["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["course_id"] == course))
}

/// Polls the server until `cond` holds on the user's state, or fails after [`WAIT`].
async fn until(user: &Http, what: &str, cond: impl Fn(&Value, &Value) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (e, p) = state_of(user).await;
        if cond(&e, &p) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}\nenrollments: {e}\npreferences: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state after the backup: the algebra progress at 80 with two lessons, geometry enrolled,
/// the light theme and Russian set through REST.
fn has_everything(e: &Value, p: &Value) -> bool {
    enrollment(e, "algebra")
        .is_some_and(|a| a["progress"] == 80.0 && a["completed_lessons"] == json!(["l1", "l2"]))
        && enrollment(e, "geometry").is_some_and(|g| g["status"] == "active")
        && p["theme"] == "light"
        && p["language"] == "ru"
}

both_backends!(
    restored_backup_gets_newer_changes_back_from_devices,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        for (id, title) in [("algebra", "Algebra"), ("geometry", "Geometry")] {
            app.state
                .store
                .create_course(&NewCourse {
                    id: id.into(),
                    kind: CourseKind::Course,
                    title: title.into(),
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
        let anna = app.user(Role::Learner).await;
        let token = anna.create_token("phone").await;
        let ids = doc_ids(&anna).await;
        let mut phone = Device::new(&app.base, Credentials::Bearer(token.clone()), ids);
        phone.connect().await;
        phone.synced().await;
        phone.edit(|c| {
            c.enroll("algebra", now()).unwrap();
            c.complete_lesson("algebra", "l1", now()).unwrap();
            c.set_progress("algebra", 30.0, now()).unwrap();
            c.set_preference("theme", &json!("dark"), now()).unwrap();
        });
        until(&anna, "the first changes stored", |e, p| {
            enrollment(e, "algebra").is_some_and(|a| a["progress"] == 30.0) && p["theme"] == "dark"
        })
        .await;

        // The backup, while the server runs and the device is connected.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("learnsync.backup");
        let out = cli("backup", &file, app.database_url());
        assert!(out.status.success(), "backup failed: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("backup written"),
            "{}",
            text(&out)
        );
        assert!(file.metadata().unwrap().len() > 0);
        assert!(
            !dir.path().join("learnsync.backup.partial").exists(),
            "the partial file is renamed"
        );
        // A backup never overwrites a file.
        let again = cli("backup", &file, app.database_url());
        assert!(!again.status.success(), "{}", text(&again));
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("exists"),
            "{}",
            text(&again)
        );

        // Life goes on after the backup: on the device, and through REST.
        phone.edit(|c| {
            c.complete_lesson("algebra", "l2", now()).unwrap();
            c.set_progress("algebra", 80.0, now()).unwrap();
            c.enroll("geometry", now()).unwrap();
            c.set_preference("theme", &json!("light"), now()).unwrap();
        });
        anna.patch("/api/preferences", &json!({ "language": "ru" }))
            .await
            .ok(200);
        until(&anna, "the later changes stored", has_everything).await;
        phone
            .wait_for("the REST change reached the device", WAIT, |c| {
                c.preferences().unwrap().get("language") == Some(&json!("ru"))
            })
            .await;

        // Restore refuses a database that is not empty (the live one).
        let refused = cli("restore", &file, app.database_url());
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("not empty"),
            "{}",
            text(&refused)
        );
        until(&anna, "the live database untouched", has_everything).await;

        // Disaster: the database is gone. The device is offline meanwhile.
        phone.disconnect().await;
        app.stop().await;

        // The OLDER backup into a fresh database, and a server on it.
        let fresh = TestDb::new(backend).await;
        let out = cli("restore", &file, fresh.url());
        assert!(out.status.success(), "restore failed: {}", text(&out));
        let server = Server::start(fresh.url()).await;
        // The session cookie was in the backup: the same browser is still logged in.
        let anna = anna.rebase(&server.base);
        let (e, p) = state_of(&anna).await;
        let algebra = enrollment(&e, "algebra").expect("algebra was in the backup");
        assert_eq!(
            algebra["progress"], 30.0,
            "the backup is the older state: {e}"
        );
        assert_eq!(algebra["completed_lessons"], json!(["l1"]));
        assert!(enrollment(&e, "geometry").is_none(), "{e}");
        assert_eq!(p["theme"], "dark");
        assert_eq!(p["language"], Value::Null);

        // The device comes back with what it holds, newer than the backup, and sends it.
        let mut back = Device::new(&server.base, Credentials::Bearer(token.clone()), ids);
        back.client = phone.client.clone();
        back.connect().await;
        until(&anna, "the device's newer changes restored", has_everything).await;
        back.synced().await;

        // A new device of the same user gets all of it from the restored server.
        let tablet_token = anna.create_token("tablet").await;
        let mut tablet = Device::new(&server.base, Credentials::Bearer(tablet_token), ids);
        tablet.connect().await;
        tablet
            .wait_for("everything on a new device", WAIT, |c| {
                let e = c.enrollments().unwrap();
                let algebra = e.iter().find(|e| e.course_id == "algebra");
                let prefs = c.preferences().unwrap();
                algebra
                    .and_then(|a| a.progress.as_ref())
                    .is_some_and(|p| p.progress == 80.0 && p.completed.len() == 2)
                    && e.iter().any(|e| e.course_id == "geometry")
                    && prefs.get("theme") == Some(&json!("light"))
                    && prefs.get("language") == Some(&json!("ru"))
            })
            .await;

        // Restoring twice into the same database is refused: it is not empty any more.
        let twice = cli("restore", &file, fresh.url());
        assert!(!twice.status.success(), "{}", text(&twice));
        assert!(
            String::from_utf8_lossy(&twice.stderr).contains("not empty"),
            "{}",
            text(&twice)
        );

        tablet.disconnect().await;
        back.disconnect().await;
        server.stop().await;
        drop(fresh);
    }
);

/// A file that is not a backup, or a backup of the other backend, is refused with a message
/// saying what it is, and the target database stays empty.
#[tokio::test]
async fn restore_refuses_files_that_are_not_backups() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.backup");
    std::fs::write(&junk, b"definitely not a database").unwrap();
    let target = dir.path().join("target.db");
    let url = format!("sqlite://{}?mode=rwc", target.display());
    let out = cli("restore", &junk, &url);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a SQLite backup"),
        "{}",
        text(&out)
    );
    let pg_like = dir.path().join("pg.backup");
    std::fs::write(&pg_like, b"PGDMP\x01\x0e\x00").unwrap();
    let out = cli("restore", &pg_like, &url);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is a PostgreSQL backup"),
        "{}",
        text(&out)
    );
    let missing = cli(
        "backup",
        &dir.path().join("b"),
        "sqlite:///nonexistent/dir/x.db",
    );
    assert!(!missing.status.success(), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no database at"),
        "{}",
        text(&missing)
    );
    assert!(!target.exists() || std::fs::metadata(&target).unwrap().len() == 0);
}
