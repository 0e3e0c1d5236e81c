//! Bad input on every route: malformed JSON, wrong content types, wrong types, unknown fields,
//! unknown enum values, too-long text, unknown ids, SQL metacharacters, oversized bodies. Every
//! answer is a 4xx in the one error shape, never a 5xx, and nothing stored changes.
//!
//! The generic part walks the served OpenAPI document (every operation with a body, a path
//! parameter or query parameters), so new routes are covered without an edit here; the
//! specific part checks the field rules of each REST area.

use e2e::app::{Client, Resp, TestApp};
use e2e::both_backends;
use learnsync::model::Role;
use reqwest::Method;
use serde_json::{Value, json};

/// Everything a bad request could have changed, read back through the store.
async fn snapshot(app: &TestApp) -> Value {
    use learnsync::store::{CourseQuery, CourseSort, LogQuery, ReportQuery, UserQuery, Visibility};
    let store = &app.state.store;
    let users = store
        .list_users(&UserQuery {
            limit: 100,
            ..UserQuery::default()
        })
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for u in &users.items {
        tokens.push(serde_json::to_value(store.list_tokens(&u.user.id).await.unwrap()).unwrap());
    }
    let courses = store
        .list_courses(&CourseQuery {
            q: None,
            kind: None,
            category: None,
            level: None,
            status: None,
            author: None,
            visibility: Visibility::All,
            sort: CourseSort::default(),
            cursor: None,
            limit: 100,
        })
        .await
        .unwrap();
    let reports = store
        .list_reports(&ReportQuery {
            limit: 100,
            ..ReportQuery::default()
        })
        .await
        .unwrap();
    let logs = store
        .list_logs(&LogQuery {
            limit: 100,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    let mut prefs = Vec::new();
    let mut enrollments = Vec::new();
    for u in &users.items {
        prefs.push(serde_json::to_value(store.preferences(&u.user.id).await.unwrap()).unwrap());
        enrollments
            .push(serde_json::to_value(store.enrollments(&u.user.id).await.unwrap()).unwrap());
    }
    json!({
        "users": users.items.iter().map(|u| (serde_json::to_value(&u.user).unwrap(), u.sync_epoch)).collect::<Vec<_>>(),
        "tokens": tokens,
        "courses": courses.items,
        "reports": reports.items,
        "logs": logs.items,
        "preferences": prefs,
        "enrollments": enrollments,
        "global_epoch": store.global_sync_epoch().await.unwrap(),
    })
}

fn assert_4xx(r: &Resp, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text
    );
    r.assert_error(r.status);
}

fn method_of(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

const HOSTILE_IDS: [&str; 6] = [
    "%27%20OR%20%271%27%3D%271",
    "1%3B%20DROP%20TABLE%20users%3B--",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "%E2%80%AE%F0%9F%98%80",
    "does-not-exist",
];

both_backends!(generic_bad_input_on_every_operation, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let admin = app.user(Role::Admin).await;
    let teacher = app.user(Role::Teacher).await;
    teacher
        .post(
            "/api/courses",
            &json!({ "id": "c1", "title": "Kept", "status": "published" }),
        )
        .await
        .ok(201);
    let learner = app.user(Role::Learner).await;
    learner
        .post(
            "/api/reports",
            &json!({ "course_id": "c1", "reason": "kept" }),
        )
        .await
        .ok(201);
    let doc = admin.get("/api/openapi.json").await.ok(200).clone();
    let before = snapshot(&app).await;
    let long_id = "x".repeat(300);
    let mut checked = 0;
    // Fuzzers built on the OpenAPI document treat an undocumented status as a failure.
    let mut undocumented = std::collections::BTreeSet::new();
    let mut mismatched = Vec::new();
    let mut note = |method: &str, path: &str, r: &Resp| {
        mismatched.extend(
            e2e::app::schema_violations(&doc, method, path, r.status, &r.body)
                .into_iter()
                .map(|v| format!("{} {path} {}: {v}", method.to_uppercase(), r.status)),
        );
        let status = r.status;
        let documented = doc["paths"][path][method]["responses"]
            .as_object()
            .is_some_and(|m| m.contains_key(&status.to_string()));
        if !documented {
            undocumented.insert(format!("{} {path} -> {status}", method.to_uppercase()));
        }
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let m = method_of(method);
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let has_path_param = path.contains('{');
            // 1. Hostile and unknown ids in every path parameter.
            if has_path_param {
                for id in HOSTILE_IDS.iter().copied().chain([long_id.as_str()]) {
                    let concrete = regex_free_fill(path, id);
                    let body = if op.get("requestBody").is_some() {
                        Some(json!({}))
                    } else {
                        None
                    };
                    let mut rb = admin.request(m.clone(), &concrete);
                    if let Some(b) = &body {
                        rb = rb.json(b);
                    }
                    let r = admin.send(rb).await;
                    assert_4xx(&r, &format!("{method} {concrete}"));
                    note(method, path, &r);
                    checked += 1;
                }
            }
            let concrete = regex_free_fill(path, "c1");
            // 2. Bodies that are not the JSON object the operation expects.
            if op.get("requestBody").is_some() {
                let cases: [(&str, &str); 7] = [
                    ("application/json", "{\"title\": "),
                    ("application/json", "[1, 2, 3]"),
                    ("application/json", "\"just a string\""),
                    ("application/json", "null"),
                    ("application/json", "{\"a\": \"\\ud800\"}"),
                    ("text/plain", "{}"),
                    ("application/x-www-form-urlencoded", "title=x"),
                ];
                for (ct, body) in cases {
                    let r = admin.raw(m.clone(), &concrete, ct, body.to_string()).await;
                    assert_4xx(&r, &format!("{method} {concrete} with {ct} {body}"));
                    note(method, path, &r);
                    checked += 1;
                }
                // Larger than the body limit (1 MiB in tests).
                let huge = format!("{{\"title\": \"{}\"}}", "a".repeat(1_100_000));
                let r = admin
                    .raw(m.clone(), &concrete, "application/json", huge)
                    .await;
                assert_4xx(&r, &format!("{method} {concrete} with a huge body"));
                note(method, path, &r);
                checked += 1;
            }
            // 3. Query parameters: wrong types, hostile text, unknown parameters.
            let query_params: Vec<&Value> = params.iter().filter(|p| p["in"] == "query").collect();
            if !query_params.is_empty() && method == "get" {
                let r = admin.get(&format!("{concrete}?zzz_unknown=1")).await;
                if path != "/sync" {
                    assert_4xx(&r, &format!("unknown parameter on {path}"));
                }
                note(method, path, &r);
                for p in &query_params {
                    let name = p["name"].as_str().unwrap();
                    for value in [
                        "%27%3B%20DROP%20TABLE%20courses%3B--",
                        "-1",
                        "%7B%22a%22%3A1%7D",
                        &"9".repeat(40),
                    ] {
                        let r = admin.get(&format!("{concrete}?{name}={value}")).await;
                        assert!(
                            r.status < 500,
                            "GET {path}?{name}={value}: {} {}",
                            r.status,
                            r.text
                        );
                        if r.status >= 400 {
                            r.assert_error(r.status);
                        }
                        note(method, path, &r);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 150, "only {checked} checks ran");
    assert_eq!(
        snapshot(&app).await,
        before,
        "a rejected request changed stored data"
    );
    assert!(
        mismatched.is_empty(),
        "error bodies that do not match the document:\n{}",
        mismatched.join("\n")
    );
    assert!(
        undocumented.is_empty(),
        "statuses missing from the OpenAPI document:\n{}",
        undocumented.into_iter().collect::<Vec<_>>().join("\n")
    );
});

/// Fills every `{param}` of a path template with `value`.
fn regex_free_fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str(value);
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sends each body and asserts a 4xx with the error shape naming `field` when given.
async fn reject_all(c: &Client, method: Method, path: &str, cases: &[(Value, Option<&str>)]) {
    for (body, field) in cases {
        let r = c.send(c.request(method.clone(), path).json(body)).await;
        assert_4xx(&r, &format!("{method} {path} {body}"));
        if let Some(field) = field {
            assert_eq!(
                r.body["error"]["details"]["field"], *field,
                "{method} {path} {body}: {}",
                r.text
            );
        }
    }
}

both_backends!(field_rules_of_each_area, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let admin = app.user(Role::Admin).await;
    let teacher = app.user(Role::Teacher).await;
    let learner = app.user(Role::Learner).await;
    teacher
        .post(
            "/api/courses",
            &json!({ "id": "c1", "title": "Kept", "status": "published" }),
        )
        .await
        .ok(201);
    let report = learner
        .post(
            "/api/reports",
            &json!({ "course_id": "c1", "reason": "kept" }),
        )
        .await;
    let report_id = report.ok(201)["id"].as_str().unwrap().to_string();
    let before = snapshot(&app).await;
    let long = "x".repeat(201);

    reject_all(
        &teacher,
        Method::POST,
        "/api/courses",
        &[
            (json!({}), None),
            (json!({ "title": "" }), Some("title")),
            (json!({ "title": "   " }), Some("title")),
            (json!({ "title": long }), Some("title")),
            (json!({ "title": "a\u{0000}b" }), Some("title")),
            (json!({ "title": 5 }), None),
            (json!({ "title": ["x"] }), None),
            (json!({ "title": "ok", "kind": "video" }), None),
            (json!({ "title": "ok", "status": "deleted" }), None),
            (json!({ "title": "ok", "author_id": "someone" }), None),
            (json!({ "title": "ok", "id": "has space" }), Some("id")),
            (json!({ "title": "ok", "id": "x'; DROP TABLE courses; --" }), Some("id")),
            (json!({ "title": "ok", "id": "c1" }), None),
            (json!({ "title": "ok", "category": "c".repeat(65) }), Some("category")),
            (json!({ "title": "ok", "description": "d".repeat(10_001) }), Some("description")),
            (json!({ "title": "ok", "lessons": [{ "id": "l1", "title": "a" }, { "id": "l1", "title": "b" }] }), Some("lessons.id")),
            (json!({ "title": "ok", "lessons": [{ "id": "l1" }] }), None),
            (json!({ "title": "ok", "lessons": "l1" }), None),
        ],
    )
    .await;
    reject_all(
        &teacher,
        Method::PATCH,
        "/api/courses/c1",
        &[
            (json!({ "title": "" }), Some("title")),
            (json!({ "title": null }), None),
            (json!({ "status": "gone" }), None),
            (json!({ "level": 3 }), None),
            (json!({ "id": "renamed" }), None),
            (json!({ "author_id": "x" }), None),
        ],
    )
    .await;
    reject_all(
        &learner,
        Method::POST,
        "/api/reports",
        &[
            (json!({ "course_id": "c1" }), None),
            (json!({ "course_id": "c1", "reason": "" }), Some("reason")),
            (
                json!({ "course_id": "c1", "reason": "r".repeat(501) }),
                Some("reason"),
            ),
            (
                json!({ "course_id": "c1", "reason": "ok", "details": "d".repeat(5_001) }),
                Some("details"),
            ),
            (
                json!({ "course_id": "' OR 1=1 --", "reason": "ok" }),
                Some("course_id"),
            ),
            (json!({ "course_id": "missing", "reason": "ok" }), None),
            (json!({ "course_id": 1, "reason": "ok" }), None),
            (
                json!({ "course_id": "c1", "reason": "ok", "status": "resolved" }),
                None,
            ),
        ],
    )
    .await;
    reject_all(
        &admin,
        Method::POST,
        &format!("/api/admin/reports/{report_id}/resolve"),
        &[
            (json!({}), None),
            (json!({ "status": "closed" }), None),
            (json!({ "status": "pending" }), Some("status")),
            (
                json!({ "status": "resolved", "note": "n".repeat(2_001) }),
                Some("note"),
            ),
        ],
    )
    .await;
    reject_all(
        &learner,
        Method::POST,
        "/api/logs",
        &[
            (json!({}), None),
            (json!({ "message": "" }), Some("message")),
            (json!({ "message": "ok", "level": "fatal" }), None),
            (json!({ "message": "ok", "source": "server" }), None),
            (json!({ "message": "ok", "user_id": "someone" }), None),
        ],
    )
    .await;
    reject_all(
        &admin,
        Method::PATCH,
        &format!("/api/admin/users/{}", learner.id()),
        &[
            (json!({ "role": "root" }), None),
            (json!({ "disabled": "yes" }), None),
            (json!({ "email": "new@example.test" }), None),
            (json!({ "password_hash": "x" }), None),
        ],
    )
    .await;
    reject_all(
        &app.anonymous(),
        Method::POST,
        "/api/auth/login",
        &[
            (json!({ "email": "a@example.test" }), None),
            (json!({ "email": 1, "password": "x" }), None),
            (
                json!({ "email": "' OR 1=1 --", "password": "' OR 1=1 --" }),
                None,
            ),
            (
                json!({ "email": "a@example.test", "password": "p".repeat(10_000) }),
                None,
            ),
        ],
    )
    .await;
    reject_all(
        &learner,
        Method::POST,
        "/api/auth/tokens",
        &[
            (json!({}), None),
            (json!({ "name": "" }), Some("name")),
            (json!({ "name": "n".repeat(101) }), Some("name")),
            (json!({ "name": "x", "email": learner.email() }), None),
            (json!({ "name": "x", "scopes": ["admin"] }), None),
        ],
    )
    .await;
    // Query values of the admin lists.
    for q in [
        "/api/admin/users?role=root",
        "/api/admin/users?limit=1000",
        "/api/admin/reports?status=open",
        "/api/admin/reports?limit=0",
        "/api/admin/logs?level=fatal",
        "/api/admin/logs?to=tomorrow",
        "/api/admin/logs?limit=abc",
        "/api/admin/logs?cursor=AAAA",
        "/api/admin/users?cursor=%27--",
        "/api/courses?status=gone",
    ] {
        assert_4xx(&admin.get(q).await, q);
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "a rejected request changed stored data"
    );

    // SQL metacharacters in valid text are data, stored and returned verbatim.
    let sneaky = "Robert'); DROP TABLE courses;-- \" % _ \\";
    let r = teacher
        .post(
            "/api/courses",
            &json!({ "title": sneaky, "category": "100%_real" }),
        )
        .await;
    let id = r.ok(201)["id"].as_str().unwrap().to_string();
    assert_eq!(
        teacher.get(&format!("/api/courses/{id}")).await.ok(200)["title"],
        sneaky
    );
    let cat = teacher.get("/api/courses?category=100%25_real").await;
    assert_eq!(cat.ok(200)["items"].as_array().unwrap().len(), 1);
    let wildcard = teacher.get("/api/courses?category=100%25%25real").await;
    assert_eq!(
        wildcard.ok(200)["items"].as_array().unwrap().len(),
        0,
        "no LIKE wildcards in exact filters"
    );
});
