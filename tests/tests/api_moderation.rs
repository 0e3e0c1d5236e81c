//! Reports and the moderation queue, client error logs and the system log, admin user
//! management — with the audit trail every admin action leaves. Both backends.

use e2e::app::{Client, TestApp};
use e2e::both_backends;
use learnsync::model::Role;
use serde_json::{Value, json};

async fn published(teacher: &Client, id: &str) {
    teacher
        .post(
            "/api/courses",
            &json!({ "id": id, "title": format!("Course {id}"), "status": "published" }),
        )
        .await
        .ok(201);
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items")
}

async fn audit_messages(admin: &Client) -> Vec<Value> {
    items(
        admin
            .get("/api/admin/logs?source=audit&limit=100")
            .await
            .ok(200),
    )
    .clone()
}

both_backends!(learner_reports_and_admin_resolves, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let teacher = app.user(Role::Teacher).await;
    let admin = app.user(Role::Admin).await;
    let anna = app.user(Role::Learner).await;
    let boris = app.user(Role::Learner).await;
    published(&teacher, "c1").await;
    published(&teacher, "c2").await;
    teacher
        .post("/api/courses", &json!({ "id": "hidden", "title": "Draft" }))
        .await
        .ok(201);

    let r = anna
        .post(
            "/api/reports",
            &json!({ "course_id": "c1", "reason": "Spam", "details": "Links to a casino" }),
        )
        .await;
    let report = r.ok(201).clone();
    assert_eq!(report["status"], "pending");
    assert_eq!(report["reporter_id"], anna.id());
    assert_eq!(report["course_id"], "c1");
    anna.post(
        "/api/reports",
        &json!({ "course_id": "c2", "reason": "Offensive" }),
    )
    .await
    .ok(201);
    boris
        .post(
            "/api/reports",
            &json!({ "course_id": "c1", "reason": "Copied" }),
        )
        .await
        .ok(201);
    // Unknown or invisible courses cannot be reported.
    anna.post(
        "/api/reports",
        &json!({ "course_id": "nope", "reason": "x" }),
    )
    .await
    .assert_error(404);
    anna.post(
        "/api/reports",
        &json!({ "course_id": "hidden", "reason": "x" }),
    )
    .await
    .assert_error(404);

    // Each learner sees their own reports only.
    let mine = anna.get("/api/reports").await;
    assert_eq!(items(mine.ok(200)).len(), 2);
    assert!(
        items(&mine.body)
            .iter()
            .all(|r| r["reporter_id"] == anna.id())
    );
    let id = report["id"].as_str().unwrap();
    assert_eq!(
        anna.get(&format!("/api/reports/{id}")).await.ok(200)["reason"],
        "Spam"
    );
    boris
        .get(&format!("/api/reports/{id}"))
        .await
        .assert_error(404);

    // The queue, with filters.
    let queue = admin.get("/api/admin/reports").await;
    assert_eq!(items(queue.ok(200)).len(), 3);
    let c1 = admin.get("/api/admin/reports?course_id=c1").await;
    assert_eq!(items(c1.ok(200)).len(), 2);
    let by_boris = admin
        .get(&format!("/api/admin/reports?reporter_id={}", boris.id()))
        .await;
    assert_eq!(items(by_boris.ok(200)).len(), 1);
    let paged = admin.get("/api/admin/reports?limit=2").await;
    assert_eq!(items(paged.ok(200)).len(), 2);
    let cursor = paged.body["next_cursor"].as_str().expect("a second page");
    let rest = admin
        .get(&format!("/api/admin/reports?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(items(rest.ok(200)).len(), 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);

    // Resolve with a note; the queue filter by status follows.
    let r = admin
        .post(
            &format!("/api/admin/reports/{id}/resolve"),
            &json!({ "status": "resolved", "note": "Removed the links" }),
        )
        .await;
    let resolved = r.ok(200).clone();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["note"], "Removed the links");
    assert_eq!(resolved["resolved_by"], admin.id());
    assert!(resolved["resolved_at"].is_string());
    let pending = admin.get("/api/admin/reports?status=pending").await;
    assert_eq!(items(pending.ok(200)).len(), 2);
    assert!(items(&pending.body).iter().all(|r| r["id"] != id));
    admin
        .post(
            &format!("/api/admin/reports/{id}/resolve"),
            &json!({ "status": "pending" }),
        )
        .await
        .assert_error(422);
    admin
        .post(
            "/api/admin/reports/missing/resolve",
            &json!({ "status": "dismissed" }),
        )
        .await
        .assert_error(404);
    // The reporter sees the outcome.
    assert_eq!(
        anna.get(&format!("/api/reports/{id}")).await.ok(200)["status"],
        "resolved"
    );
    // Audited, with who and what.
    let audit = audit_messages(&admin).await;
    let entry = audit
        .iter()
        .find(|l| l["context"]["report_id"] == id)
        .unwrap_or_else(|| panic!("no audit entry for the report: {audit:?}"));
    assert_eq!(entry["user_id"], admin.id());
    assert_eq!(entry["context"]["status"], "resolved");
});

both_backends!(client_logs_ingest_and_admin_query, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let admin = app.user(Role::Admin).await;
    let anna = app.user(Role::Learner).await;
    let mobile = app.user(Role::Learner).await.bearer().await;
    let r = anna
        .post("/api/logs", &json!({ "level": "error", "message": "TypeError: x is undefined", "context": { "url": "/app", "line": 12 } }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    anna.post(
        "/api/logs",
        &json!({ "level": "warn", "message": "slow load" }),
    )
    .await;
    assert_eq!(
        mobile
            .post("/api/logs", &json!({ "message": "crash on start" }))
            .await
            .status,
        202
    );
    app.anonymous()
        .post("/api/logs", &json!({ "message": "anon" }))
        .await
        .assert_error(401);

    let all = admin.get("/api/admin/logs?source=client").await;
    let entries = items(all.ok(200)).clone();
    assert_eq!(entries.len(), 3);
    let first = entries
        .iter()
        .find(|e| e["message"] == "TypeError: x is undefined")
        .unwrap();
    assert_eq!(first["level"], "error");
    assert_eq!(first["user_id"], anna.id());
    assert_eq!(first["context"]["url"], "/app");
    assert!(
        first["request_id"].is_string(),
        "the request id is kept: {first}"
    );
    assert_eq!(
        entries
            .iter()
            .find(|e| e["message"] == "crash on start")
            .unwrap()["level"],
        "error",
        "default level"
    );

    let warn = admin.get("/api/admin/logs?level=warn").await;
    assert_eq!(
        items(warn.ok(200))
            .iter()
            .map(|e| e["message"].clone())
            .collect::<Vec<_>>(),
        [json!("slow load")]
    );
    let by_user = admin
        .get(&format!(
            "/api/admin/logs?user_id={}&source=client",
            anna.id()
        ))
        .await;
    assert_eq!(items(by_user.ok(200)).len(), 2);
    // Time range: everything is after 2000 and before 2100.
    let range = admin
        .get("/api/admin/logs?source=client&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(items(range.ok(200)).len(), 3);
    let none = admin
        .get("/api/admin/logs?source=client&to=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(items(none.ok(200)).len(), 0);
    admin
        .get("/api/admin/logs?from=yesterday")
        .await
        .assert_error(422);
    // Pagination.
    let p1 = admin.get("/api/admin/logs?source=client&limit=2").await;
    assert_eq!(items(p1.ok(200)).len(), 2);
    let cursor = p1.body["next_cursor"].as_str().unwrap();
    let p2 = admin
        .get(&format!(
            "/api/admin/logs?source=client&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(items(p2.ok(200)).len(), 1);
});

both_backends!(
    client_logs_are_size_and_rate_limited,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.client_logs_per_minute = 3).await;
        let admin = app.user(Role::Admin).await;
        let anna = app.user(Role::Learner).await;
        anna.post("/api/logs", &json!({ "message": "x".repeat(2_001) }))
            .await
            .assert_error(422);
        anna.post(
            "/api/logs",
            &json!({ "message": "big", "context": { "blob": "y".repeat(9_000) } }),
        )
        .await
        .assert_error(422);
        for n in 0..3 {
            assert_eq!(
                anna.post("/api/logs", &json!({ "message": format!("m{n}") }))
                    .await
                    .status,
                202
            );
        }
        let r = anna
            .post("/api/logs", &json!({ "message": "one too many" }))
            .await;
        r.assert_error(429);
        assert!(r.header("retry-after").is_some());
        // Another user has their own allowance.
        let boris = app.user(Role::Learner).await;
        assert_eq!(
            boris
                .post("/api/logs", &json!({ "message": "b" }))
                .await
                .status,
            202
        );
        let stored = admin.get("/api/admin/logs?source=client").await;
        assert_eq!(
            items(stored.ok(200)).len(),
            4,
            "rejected reports stored nothing"
        );
    }
);

both_backends!(admin_manages_users_with_audit, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let admin = app.user(Role::Admin).await;
    let anna = app.user(Role::Learner).await;
    let _t = app.user(Role::Teacher).await;
    let list = admin.get("/api/admin/users").await;
    let users = items(list.ok(200)).clone();
    assert_eq!(users.len(), 3);
    assert!(
        users
            .iter()
            .all(|u| u.get("password_hash").is_none() && u.get("doc_seed").is_none())
    );
    let teachers = admin.get("/api/admin/users?role=teacher").await;
    assert_eq!(items(teachers.ok(200)).len(), 1);
    let found = admin
        .get(&format!("/api/admin/users?q={}", anna.email()))
        .await;
    assert_eq!(items(found.ok(200))[0]["id"], anna.id());
    let p1 = admin.get("/api/admin/users?limit=2").await;
    let cursor = p1.ok(200)["next_cursor"].as_str().unwrap().to_string();
    let p2 = admin
        .get(&format!("/api/admin/users?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(items(p2.ok(200)).len(), 1);

    // Promote anna to teacher: she may now create courses.
    let r = admin
        .patch(
            &format!("/api/admin/users/{}", anna.id()),
            &json!({ "role": "teacher" }),
        )
        .await;
    assert_eq!(r.ok(200)["role"], "teacher");
    anna.post("/api/courses", &json!({ "title": "Anna's course" }))
        .await
        .ok(201);
    // Admins cannot lock themselves out.
    admin
        .patch(
            &format!("/api/admin/users/{}", admin.id()),
            &json!({ "disabled": true }),
        )
        .await
        .assert_error(409);
    admin
        .patch(
            &format!("/api/admin/users/{}", admin.id()),
            &json!({ "role": "learner" }),
        )
        .await
        .assert_error(409);
    admin
        .patch("/api/admin/users/nobody", &json!({ "role": "teacher" }))
        .await
        .assert_error(404);
    admin
        .patch(
            &format!("/api/admin/users/{}", anna.id()),
            &json!({ "role": "superuser" }),
        )
        .await
        .assert_error(422);
    assert_eq!(admin.get("/api/auth/me").await.ok(200)["role"], "admin");

    let audit = audit_messages(&admin).await;
    let entry = audit
        .iter()
        .find(|l| l["context"]["user_id"] == anna.id())
        .unwrap_or_else(|| panic!("role change not audited: {audit:?}"));
    assert_eq!(entry["user_id"], admin.id());
    assert_eq!(entry["context"]["role"], "teacher");
});
