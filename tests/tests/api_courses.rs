//! `/api/courses`: create, read, update, archive, visibility per role, ETags, and search with
//! keyset pagination over a few thousand seeded courses, on both backends.

use std::collections::{BTreeSet, HashSet};

use e2e::app::{Client, TestApp};
use e2e::both_backends;
use learnsync::model::{CourseKind, CourseStatus, Lesson, Role};
use learnsync::store::NewCourse;
use serde_json::{Value, json};

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// Follows `next_cursor` to the end; returns every item in order.
async fn all_pages(c: &Client, path_and_query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = match &cursor {
            Some(cur) => format!("{path_and_query}{sep}cursor={cur}"),
            None => path_and_query.to_string(),
        };
        let r = c.get(&url).await;
        let body = r.ok(200);
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

both_backends!(course_lifecycle, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let teacher = app.user(Role::Teacher).await;
    let r = teacher
        .post(
            "/api/courses",
            &json!({
                "title": "  Rust basics  ",
                "description": "Ownership\nand borrowing",
                "category": "programming",
                "level": "beginner",
                "lessons": [{ "id": "l1", "title": "Hello" }, { "id": "l2", "title": "Ownership" }]
            }),
        )
        .await;
    let c = r.ok(201).clone();
    let id = c["id"].as_str().unwrap().to_string();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "new courses get a UUID: {id}"
    );
    assert_eq!(c["title"], "Rust basics");
    assert_eq!(c["kind"], "course");
    assert_eq!(c["status"], "draft", "drafts by default");
    assert_eq!(c["author_id"], teacher.id());
    assert_eq!(c["lessons"][1]["id"], "l2");
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));

    // An explicit id (legacy-style) and a duplicate.
    teacher
        .post(
            "/api/courses",
            &json!({ "id": "c-geo", "title": "Geo", "kind": "subject", "status": "published" }),
        )
        .await
        .ok(201);
    teacher
        .post(
            "/api/courses",
            &json!({ "id": "c-geo", "title": "Geo again" }),
        )
        .await
        .assert_error(409);

    let got = teacher.get(&format!("/api/courses/{id}")).await;
    assert_eq!(got.ok(200)["title"], "Rust basics");
    // Drafts are invisible to others.
    app.anonymous()
        .get(&format!("/api/courses/{id}"))
        .await
        .assert_error(404);
    app.user(Role::Learner)
        .await
        .get(&format!("/api/courses/{id}"))
        .await
        .assert_error(404);
    app.user(Role::Teacher)
        .await
        .get(&format!("/api/courses/{id}"))
        .await
        .assert_error(404);

    let r = teacher
        .patch(
            &format!("/api/courses/{id}"),
            &json!({ "status": "published", "category": null, "title": "Rust 101" }),
        )
        .await;
    let updated = r.ok(200).clone();
    assert_eq!(updated["status"], "published");
    assert_eq!(updated["category"], Value::Null);
    assert_eq!(updated["level"], "beginner");
    assert_eq!(updated["title"], "Rust 101");
    assert_eq!(updated["created_at"], c["created_at"]);
    assert_eq!(
        app.anonymous()
            .get(&format!("/api/courses/{id}"))
            .await
            .ok(200)["title"],
        "Rust 101"
    );

    // Another teacher may read but not change it; an admin may.
    let other = app.user(Role::Teacher).await;
    other
        .patch(
            &format!("/api/courses/{id}"),
            &json!({ "title": "Mine now" }),
        )
        .await
        .assert_error(403);
    let admin = app.user(Role::Admin).await;
    admin
        .patch(
            &format!("/api/courses/{id}"),
            &json!({ "level": "advanced" }),
        )
        .await
        .ok(200);
    // Delete: admins only, a soft delete.
    teacher
        .delete(&format!("/api/courses/{id}"))
        .await
        .assert_error(403);
    assert_eq!(
        admin.delete(&format!("/api/courses/{id}")).await.status,
        204
    );
    let archived = admin.get(&format!("/api/courses/{id}")).await;
    assert_eq!(archived.ok(200)["status"], "archived");
    assert_eq!(archived.body["level"], "advanced");
    app.anonymous()
        .get(&format!("/api/courses/{id}"))
        .await
        .assert_error(404);
    admin
        .delete("/api/courses/does-not-exist")
        .await
        .assert_error(404);
    // The archive is in the audit log.
    let logs = admin.get("/api/admin/logs?source=audit").await;
    assert!(
        logs.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains("archived")
                && l["user_id"] == admin.id()),
        "{}",
        logs.text
    );
});

both_backends!(
    learners_cannot_create_and_lists_respect_roles,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let learner = app.user(Role::Learner).await;
        learner
            .post("/api/courses", &json!({ "title": "Nope" }))
            .await
            .assert_error(403);
        app.anonymous()
            .post("/api/courses", &json!({ "title": "Nope" }))
            .await
            .assert_error(401);
        let t1 = app.user(Role::Teacher).await;
        let t2 = app.user(Role::Teacher).await;
        let admin = app.user(Role::Admin).await;
        t1.post(
            "/api/courses",
            &json!({ "id": "pub", "title": "Pub", "status": "published" }),
        )
        .await
        .ok(201);
        t1.post("/api/courses", &json!({ "id": "d1", "title": "Draft 1" }))
            .await
            .ok(201);
        t2.post("/api/courses", &json!({ "id": "d2", "title": "Draft 2" }))
            .await
            .ok(201);
        t2.post(
            "/api/courses",
            &json!({ "id": "arch", "title": "Old", "status": "archived" }),
        )
        .await
        .ok(201);
        let sorted = |v: Vec<String>| {
            v.into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sorted(ids(app.anonymous().get("/api/courses").await.ok(200))),
            ["pub"]
        );
        assert_eq!(
            sorted(ids(learner.get("/api/courses").await.ok(200))),
            ["pub"]
        );
        assert_eq!(
            sorted(ids(learner.get("/api/courses?status=draft").await.ok(200))),
            Vec::<String>::new()
        );
        assert_eq!(
            sorted(ids(t1.get("/api/courses").await.ok(200))),
            ["d1", "pub"]
        );
        assert_eq!(
            sorted(ids(admin.get("/api/courses").await.ok(200))),
            ["arch", "d1", "d2", "pub"]
        );
        assert_eq!(
            sorted(ids(admin.get("/api/courses?status=archived").await.ok(200))),
            ["arch"]
        );
        assert_eq!(
            sorted(ids(admin
                .get(&format!("/api/courses?author={}", t2.id()))
                .await
                .ok(200))),
            ["arch", "d2"]
        );
    }
);

both_backends!(etags_and_not_modified, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let teacher = app.user(Role::Teacher).await;
    teacher
        .post(
            "/api/courses",
            &json!({ "id": "e1", "title": "Etag", "status": "published" }),
        )
        .await
        .ok(201);
    let anon = app.anonymous();
    let first = anon.get("/api/courses").await;
    first.ok(200);
    let etag = first.header("etag").expect("ETag").to_string();
    let again = anon
        .send(
            anon.request(reqwest::Method::GET, "/api/courses")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    // One course: same for the item.
    let one = anon.get("/api/courses/e1").await;
    let item_etag = one.header("etag").unwrap().to_string();
    let r = anon
        .send(
            anon.request(reqwest::Method::GET, "/api/courses/e1")
                .header("if-none-match", &item_etag),
        )
        .await;
    assert_eq!(r.status, 304);
    // A change gives a new ETag and a full answer.
    teacher
        .patch("/api/courses/e1", &json!({ "title": "Etag 2" }))
        .await
        .ok(200);
    let after = anon
        .send(
            anon.request(reqwest::Method::GET, "/api/courses")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body["items"][0]["title"], "Etag 2");
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    // A different query is a different page.
    let filtered = anon
        .send(
            anon.request(reqwest::Method::GET, "/api/courses?kind=subject")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(filtered.status, 200);
    assert_eq!(filtered.body["items"], json!([]));
});

const TOPICS: [&str; 6] = [
    "algebra",
    "biology",
    "chemistry",
    "drawing",
    "economics",
    "french",
];
const LEVELS: [&str; 3] = ["beginner", "intermediate", "advanced"];

/// Seeds `n` courses straight through the store (the API path is tested above).
async fn seed(app: &TestApp, n: usize, author: &str) {
    let base = 1_700_000_000_000i64;
    let mut batch = Vec::with_capacity(n);
    for i in 0..n {
        let topic = TOPICS[i % TOPICS.len()];
        batch.push(NewCourse {
            id: format!("seed-{i:05}"),
            kind: if i % 10 == 0 {
                CourseKind::Subject
            } else {
                CourseKind::Course
            },
            title: format!(
                "{} {} part {}",
                topic[..1].to_uppercase() + &topic[1..],
                i % 97,
                i
            ),
            description: format!("Course number {i} about {topic}"),
            category: Some(topic.to_string()),
            level: Some(LEVELS[i % 3].to_string()),
            status: match i % 7 {
                0 => CourseStatus::Draft,
                1 => CourseStatus::Archived,
                _ => CourseStatus::Published,
            },
            author_id: (i % 4 == 0).then(|| author.to_string()),
            lessons: vec![Lesson {
                id: "l1".into(),
                title: "One".into(),
            }],
            extra: json!({}),
            // Many equal timestamps, so the id tie-break is exercised.
            created_at: base + (i as i64 / 5),
            now: base + ((n - i) as i64 / 3),
        });
    }
    let store = app.state.store.clone();
    // A few writers at once (SQLite serialises them; PostgreSQL runs them in parallel).
    let chunks: Vec<Vec<NewCourse>> = batch
        .chunks(n.div_ceil(4))
        .map(<[NewCourse]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for c in chunk {
                store.insert_course_if_absent(&c).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

both_backends!(
    search_and_keyset_pagination_over_thousands,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.user(Role::Admin).await;
        let author = app.user(Role::Teacher).await;
        const N: usize = 2_500;
        seed(&app, N, author.id()).await;
        let visible_published = (0..N).filter(|i| i % 7 >= 2).count();

        // Everything an admin can see, 100 at a time, newest first: every course once, no gaps.
        let all = all_pages(&admin, "/api/courses?limit=100").await;
        assert_eq!(all.len(), N);
        let unique: HashSet<_> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(unique.len(), N);
        for w in all.windows(2) {
            let a = (
                w[0]["created_at"].as_str().unwrap(),
                w[0]["id"].as_str().unwrap(),
            );
            let b = (
                w[1]["created_at"].as_str().unwrap(),
                w[1]["id"].as_str().unwrap(),
            );
            assert!(a > b, "newest first: {a:?} then {b:?}");
        }

        // Anonymous readers: published only, pages of 37 sorted by title.
        let anon = app.anonymous();
        let by_title = all_pages(&anon, "/api/courses?limit=37&sort=title").await;
        assert_eq!(by_title.len(), visible_published);
        assert!(by_title.iter().all(|c| c["status"] == "published"));
        let titles: Vec<(String, String)> = by_title
            .iter()
            .map(|c| {
                (
                    c["title"].as_str().unwrap().to_string(),
                    c["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut sorted = titles.clone();
        sorted.sort();
        assert_eq!(titles, sorted, "title order with id tie-break");

        // Search plus filters, paged, against the expected set computed here.
        let expected: BTreeSet<String> = (0..N)
            .filter(|i| {
                TOPICS[i % TOPICS.len()] == "chemistry" && LEVELS[i % 3] == "advanced" && i % 7 >= 2
            })
            .map(|i| format!("seed-{i:05}"))
            .collect();
        assert!(expected.len() > 100, "the filtered set spans several pages");
        let found = all_pages(&anon, "/api/courses?q=chemis&level=advanced&limit=25").await;
        let found_ids: Vec<String> = found
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(found_ids.len(), expected.len(), "no duplicates");
        assert_eq!(found_ids.iter().cloned().collect::<BTreeSet<_>>(), expected);

        // A search matching every course (more than the store's "selective" threshold, so the
        // database walks the sort index instead of sorting the matches): all pages, in order.
        let broad = all_pages(&anon, "/api/courses?q=cour&limit=100&sort=created_at").await;
        assert_eq!(broad.len(), visible_published);
        for w in broad.windows(2) {
            let a = (
                w[0]["created_at"].as_str().unwrap(),
                w[0]["id"].as_str().unwrap(),
            );
            let b = (
                w[1]["created_at"].as_str().unwrap(),
                w[1]["id"].as_str().unwrap(),
            );
            assert!(a < b, "oldest first: {a:?} then {b:?}");
        }
        // A selective search sorted by title: the matches, sorted, paged.
        let few = all_pages(&anon, "/api/courses?q=economics%2096&sort=title&limit=3").await;
        let mut expected_few: Vec<(String, String)> = (0..N)
            .filter(|i| TOPICS[i % TOPICS.len()] == "economics" && i % 7 >= 2)
            .filter(|i| {
                let title = format!("Economics {} part {i}", i % 97);
                let description = format!("Course number {i}");
                title
                    .split(' ')
                    .chain(description.split(' '))
                    .any(|w| w.starts_with("96"))
            })
            .map(|i| {
                (
                    format!("Economics {} part {i}", i % 97),
                    format!("seed-{i:05}"),
                )
            })
            .collect();
        expected_few.sort();
        let got_few: Vec<(String, String)> = few
            .iter()
            .map(|c| {
                (
                    c["title"].as_str().unwrap().to_string(),
                    c["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(!expected_few.is_empty());
        assert_eq!(got_few, expected_few);

        // Two words: both must match (title word "Drawing" and the number in the description).
        let two = all_pages(&anon, "/api/courses?q=drawing%20number%201005&limit=10").await;
        assert_eq!(
            two.iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["seed-01005"]
        );

        // kind + category, oldest first, by a teacher who sees their drafts as well.
        let subjects = all_pages(
            &author,
            "/api/courses?kind=subject&category=algebra&sort=created_at&limit=9",
        )
        .await;
        let expected_subjects: Vec<String> = (0..N)
            .filter(|i| i % 10 == 0 && TOPICS[i % 6] == "algebra" && (i % 7 >= 2 || i % 4 == 0))
            .map(|i| format!("seed-{i:05}"))
            .collect();
        assert_eq!(
            subjects
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            expected_subjects
        );

        // Recently updated first, by an admin, filtered by author.
        let by_author = all_pages(
            &admin,
            &format!(
                "/api/courses?author={}&sort=-updated_at&limit=50",
                author.id()
            ),
        )
        .await;
        assert_eq!(by_author.len(), N.div_ceil(4));
        for w in by_author.windows(2) {
            let a = (
                w[0]["updated_at"].as_str().unwrap(),
                w[0]["id"].as_str().unwrap(),
            );
            let b = (
                w[1]["updated_at"].as_str().unwrap(),
                w[1]["id"].as_str().unwrap(),
            );
            assert!(a > b, "recently updated first: {a:?} then {b:?}");
        }

        // Search that matches nothing, and hostile search text, answer an empty page.
        assert_eq!(
            ids(anon.get("/api/courses?q=zzzzqqq").await.ok(200)),
            Vec::<String>::new()
        );
        let hostile = anon
            .get("/api/courses?q=%27%3B%20DROP%20TABLE%20courses%3B%20--")
            .await;
        assert_eq!(hostile.ok(200)["items"], json!([]));
        assert_eq!(
            all_pages(&admin, "/api/courses?limit=100").await.len(),
            N,
            "nothing changed"
        );
    }
);

both_backends!(list_limits_and_cursor_validation, |backend| async move {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    for q in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "sort=price",
        "kind=video",
        "status=deleted",
        "unknown=1",
    ] {
        let r = anon.get(&format!("/api/courses?{q}")).await;
        assert!(r.status == 400 || r.status == 422, "{q}: {}", r.status);
        r.assert_error(r.status);
    }
    for cursor in ["garbage", "eyJ4IjoxfQ", "%27%20OR%201%3D1"] {
        anon.get(&format!("/api/courses?cursor={cursor}"))
            .await
            .assert_error(400);
    }
    let long = "a".repeat(600);
    anon.get(&format!("/api/courses?q={long}"))
        .await
        .assert_error(422);
});
