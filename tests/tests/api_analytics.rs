//! The admin analytics endpoints (`/api/admin/analytics/*`) on both backends, over the
//! enrollments the legacy fixtures import: per-course figures, daily series of all courses and
//! of one, and the parameters each series takes.

use std::path::Path;
use std::time::Duration;

use e2e::app::{Client as Http, TestApp};
use e2e::both_backends;
use learnsync::model::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Imports the three fixture dumps through the admin upload and waits until the run ends.
async fn import_fixtures(admin: &Http) {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sync-core/tests/fixtures/localstorage");
    let mut form = reqwest::multipart::Form::new();
    for name in ["learner-basic.json", "learner-messy.json", "admin.json"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        form = form.part(
            "files",
            reqwest::multipart::Part::text(text).file_name(name.to_string()),
        );
    }
    let started = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/api/admin/migrations")
                .multipart(form),
        )
        .await;
    let id = started.ok(202)["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let run = admin.get(&format!("/api/admin/migrations/{id}")).await;
        let status = run.ok(200)["status"].as_str().unwrap().to_string();
        if status != "running" {
            assert_eq!(status, "succeeded", "{}", run.text);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "import still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The total of a daily series.
fn total(series: &Value) -> u64 {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum()
}

both_backends!(analytics_of_imported_enrollments, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let admin = app.user(Role::Admin).await;
    import_fixtures(&admin).await;

    // u-anna: 1 (66 %), c-geo (50 %), s-phys; u-boris: 1 (80 %), c-geo, 999 (10 %).
    let courses = admin.get("/api/admin/analytics/courses").await;
    let courses = courses.ok(200).as_array().unwrap().clone();
    let figures: Vec<(String, i64, f64)> = courses
        .iter()
        .map(|c| {
            (
                c["course_id"].as_str().unwrap().to_string(),
                c["enrollments"].as_i64().unwrap(),
                c["average_progress"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        vec![
            ("1".into(), 2, 73.0),
            ("c-geo".into(), 2, 25.0),
            ("999".into(), 1, 10.0),
            ("s-phys".into(), 1, 0.0),
        ],
        "{courses:#?}"
    );
    assert_eq!(courses[0]["title"], "Алгебра 7 класс");
    assert_eq!(
        courses[2]["title"],
        Value::Null,
        "999 is not in the catalog"
    );

    // The enrollments the old app kept no date of (u-boris's three) count from the import;
    // u-anna's are from 2024, outside any window.
    let all = admin.get("/api/admin/analytics/enrollments?days=30").await;
    assert_eq!(total(all.ok(200)), 3, "{}", all.text);
    let year = admin.get("/api/admin/analytics/enrollments?days=366").await;
    assert_eq!(total(year.ok(200)), 3, "{}", year.text);
    let one = admin
        .get("/api/admin/analytics/enrollments?days=30&course_id=1")
        .await;
    assert_eq!(total(one.ok(200)), 1, "{}", one.text);
    let none = admin
        .get("/api/admin/analytics/enrollments?course_id=no-such-course")
        .await;
    assert_eq!(none.ok(200)["points"], json!([]));
    let completions = admin
        .get("/api/admin/analytics/enrollments?metric=completions")
        .await;
    assert_eq!(completions.ok(200)["metric"], "completions");
    assert_eq!(total(completions.ok(200)), 0);
    let active = admin.get("/api/admin/analytics/active-users").await;
    assert_eq!(active.ok(200)["metric"], "active_users");
    assert_eq!(
        total(active.ok(200)),
        1,
        "u-boris, active at the import: {}",
        active.text
    );

    // Active users are counted over all courses: a course or a metric is refused, not ignored.
    for query in [
        "/api/admin/analytics/active-users?course_id=1",
        "/api/admin/analytics/active-users?metric=completions",
        "/api/admin/analytics/active-users?days=0",
        "/api/admin/analytics/enrollments?days=367",
        "/api/admin/analytics/enrollments?metric=logins",
        "/api/admin/analytics/courses?limit=0",
        "/api/admin/analytics/courses?limit=101",
    ] {
        admin.get(query).await.assert_error(422);
    }
});
