//! One conformance suite for the `Store` trait, run against PostgreSQL and SQLite: both
//! implementations must give the same answers to the same calls.

use std::collections::HashSet;
use std::sync::Arc;

use e2e::both_backends;
use e2e::db::{Backend, TestDb};
use learnsync::model::{
    CourseKind, CourseStatus, Lesson, LogLevel, MigrationRun, ReportStatus, Role, RunSource,
    RunStatus, Timestamp,
};
use learnsync::store::{
    self, CoursePatch, CourseQuery, CourseSort, LogQuery, NewCourse, NewLog, NewReport, NewToken,
    NewUser, ReportQuery, Store, StoreError, UserPatch, UserQuery, Visibility,
};
use serde_json::json;

/// A migrated store on a fresh database (the `TestDb` must outlive the store's use).
async fn open(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(backend).await;
    let connected = store::connect(db.url(), 4, "conformance")
        .await
        .expect("connect");
    let store = connected.store();
    store.migrate().await.expect("migrate");
    (db, store)
}

fn new_user(n: u32, role: Role) -> NewUser {
    NewUser {
        id: uuid::Uuid::new_v4().to_string(),
        email: Some(format!("user{n}@example.test")),
        display_name: format!("User {n}"),
        password_hash: Some("$argon2id$placeholder".into()),
        role,
        legacy_id: None,
        doc_seed: [n as u8; 16],
        now: 1_700_000_000_000 + i64::from(n),
    }
}

fn new_course(
    id: &str,
    title: &str,
    status: CourseStatus,
    author: Option<&str>,
    at: i64,
) -> NewCourse {
    NewCourse {
        id: id.to_string(),
        kind: CourseKind::Course,
        title: title.to_string(),
        description: format!("About {title}"),
        category: Some("math".into()),
        level: Some("beginner".into()),
        status,
        author_id: author.map(str::to_string),
        lessons: vec![Lesson {
            id: "l1".into(),
            title: "First".into(),
        }],
        extra: json!({}),
        created_at: at,
        now: at,
    }
}

fn query(visibility: Visibility) -> CourseQuery {
    CourseQuery {
        q: None,
        kind: None,
        category: None,
        level: None,
        status: None,
        author: None,
        visibility,
        sort: CourseSort::default(),
        cursor: None,
        limit: 100,
    }
}

both_backends!(migrations_apply_twice_and_ping, |backend| async move {
    let (_db, store) = open(backend).await;
    store.migrate().await.expect("second migrate is a no-op");
    store.ping().await.expect("ping");
    assert_eq!(
        store.backend(),
        match backend {
            Backend::Postgres => store::Backend::Postgres,
            Backend::Sqlite => store::Backend::Sqlite,
        }
    );
});

both_backends!(server_meta_roundtrip, |backend| async move {
    let (_db, store) = open(backend).await;
    assert_eq!(store.meta_get("storage_id").await.unwrap(), None);
    assert_eq!(
        store.meta_get_or_insert("storage_id", "a").await.unwrap(),
        "a"
    );
    assert_eq!(
        store.meta_get_or_insert("storage_id", "b").await.unwrap(),
        "a",
        "first value stays"
    );
    store.meta_set("storage_id", "c").await.unwrap();
    assert_eq!(
        store.meta_get("storage_id").await.unwrap().as_deref(),
        Some("c")
    );
});

both_backends!(users_create_read_conflict, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut new = new_user(1, Role::Learner);
    new.legacy_id = Some("u-anna".into());
    let created = store.create_user(&new).await.unwrap();
    assert_eq!(created.user.email.as_deref(), Some("user1@example.test"));
    assert_eq!(created.user.role, Role::Learner);
    assert!(created.user.has_password);
    assert!(!created.user.disabled);
    assert_eq!(created.doc_seed, [1u8; 16]);
    assert_eq!(created.sync_epoch, 0);
    assert_eq!(created.user.created_at, Timestamp(new.now));

    assert_eq!(store.user(&new.id).await.unwrap(), Some(created.clone()));
    assert_eq!(
        store.user_by_email("user1@example.test").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.user_by_legacy_id("u-anna").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.user("nope").await.unwrap(), None);
    assert_eq!(
        store.user_by_email("nobody@example.test").await.unwrap(),
        None
    );

    let mut same_email = new_user(2, Role::Learner);
    same_email.email = new.email.clone();
    assert!(matches!(
        store.create_user(&same_email).await,
        Err(StoreError::Conflict(_))
    ));
    let mut same_legacy = new_user(3, Role::Learner);
    same_legacy.legacy_id = Some("u-anna".into());
    assert!(matches!(
        store.create_user(&same_legacy).await,
        Err(StoreError::Conflict(_))
    ));
    // Placeholders have no email; several of them must coexist.
    for n in 4..6 {
        let mut p = new_user(n, Role::Learner);
        p.email = None;
        p.password_hash = None;
        let u = store.create_user(&p).await.unwrap();
        assert!(!u.user.has_password);
    }
});

both_backends!(legacy_placeholder_is_created_once, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut p = new_user(1, Role::Learner);
    p.email = None;
    p.password_hash = None;
    p.legacy_id = Some("42".into());
    let (first, created) = store.ensure_legacy_user(&p).await.unwrap();
    assert!(created);
    let mut again = new_user(2, Role::Learner);
    again.email = None;
    again.password_hash = None;
    again.legacy_id = Some("42".into());
    let (second, created) = store.ensure_legacy_user(&again).await.unwrap();
    assert!(!created, "the second import finds the placeholder");
    assert_eq!(first.user.id, second.user.id);
    assert_eq!(first.doc_seed, second.doc_seed);
});

both_backends!(users_update_list_delete, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut ids = Vec::new();
    for n in 0..25 {
        let role = if n % 5 == 0 {
            Role::Teacher
        } else {
            Role::Learner
        };
        ids.push(store.create_user(&new_user(n, role)).await.unwrap().user.id);
    }
    let updated = store
        .update_user(
            &ids[1],
            &UserPatch {
                role: Some(Role::Admin),
                disabled: Some(true),
                display_name: Some("Renamed".into()),
                ..UserPatch::default()
            },
            1_800_000_000_000,
        )
        .await
        .unwrap();
    assert_eq!(updated.user.role, Role::Admin);
    assert!(updated.user.disabled);
    assert_eq!(updated.user.display_name, "Renamed");
    assert_eq!(
        store.user(&ids[1]).await.unwrap().unwrap().user,
        updated.user
    );
    assert!(matches!(
        store.update_user("missing", &UserPatch::default(), 0).await,
        Err(StoreError::NotFound)
    ));
    let taken = UserPatch {
        email: Some("user2@example.test".into()),
        ..UserPatch::default()
    };
    assert!(matches!(
        store.update_user(&ids[3], &taken, 0).await,
        Err(StoreError::Conflict(_))
    ));

    // Pages of 7, newest first, no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_users(&UserQuery {
                cursor: cursor.clone(),
                limit: 7,
                ..UserQuery::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|u| u.user.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, all users once");
    let teachers = store
        .list_users(&UserQuery {
            role: Some(Role::Teacher),
            limit: 100,
            ..UserQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(teachers.items.len(), 5);
    assert!(teachers.items.iter().all(|u| u.user.role == Role::Teacher));
    let by_text = store
        .list_users(&UserQuery {
            q: Some("user17@".into()),
            limit: 100,
            ..UserQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_text.items.len(), 1);
    assert_eq!(by_text.items[0].user.id, ids[17]);
    // LIKE metacharacters are literal.
    let wild = store
        .list_users(&UserQuery {
            q: Some("%".into()),
            limit: 100,
            ..UserQuery::default()
        })
        .await
        .unwrap();
    assert!(wild.items.is_empty(), "'%' must not match everything");

    assert!(store.delete_user(&ids[0]).await.unwrap());
    assert!(!store.delete_user(&ids[0]).await.unwrap());
    assert_eq!(store.user(&ids[0]).await.unwrap(), None);
    expected.retain(|id| id != &ids[0]);
    let all = store
        .list_users(&UserQuery {
            limit: 100,
            ..UserQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), expected.len());
});

both_backends!(bad_cursor_is_invalid_input, |backend| async move {
    let (_db, store) = open(backend).await;
    for cursor in ["not base64 !", "e30", "' OR 1=1 --"] {
        let r = store
            .list_users(&UserQuery {
                cursor: Some(cursor.into()),
                limit: 10,
                ..UserQuery::default()
            })
            .await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{cursor}: {r:?}");
        let mut q = query(Visibility::All);
        q.cursor = Some(cursor.into());
        assert!(
            matches!(store.list_courses(&q).await, Err(StoreError::Invalid(_))),
            "{cursor}"
        );
    }
});

both_backends!(sync_epochs, |backend| async move {
    let (_db, store) = open(backend).await;
    let u = store
        .create_user(&new_user(1, Role::Learner))
        .await
        .unwrap();
    assert_eq!(store.global_sync_epoch().await.unwrap(), 0);
    assert_eq!(store.bump_sync_epoch(None).await.unwrap(), 1);
    assert_eq!(store.bump_sync_epoch(None).await.unwrap(), 2);
    assert_eq!(store.global_sync_epoch().await.unwrap(), 2);
    assert_eq!(store.bump_sync_epoch(Some(&u.user.id)).await.unwrap(), 1);
    assert_eq!(store.user(&u.user.id).await.unwrap().unwrap().sync_epoch, 1);
});

both_backends!(api_tokens_lifecycle, |backend| async move {
    let (_db, store) = open(backend).await;
    let a = store
        .create_user(&new_user(1, Role::Learner))
        .await
        .unwrap();
    let b = store
        .create_user(&new_user(2, Role::Learner))
        .await
        .unwrap();
    let token = store
        .create_token(&NewToken {
            id: "t1".into(),
            user_id: a.user.id.clone(),
            name: "phone".into(),
            token_hash: "h1".into(),
            now: 1000,
        })
        .await
        .unwrap();
    assert_eq!(token.name, "phone");
    assert_eq!(token.last_used_at, None);
    let dup = NewToken {
        id: "t2".into(),
        user_id: b.user.id.clone(),
        name: "x".into(),
        token_hash: "h1".into(),
        now: 1000,
    };
    assert!(matches!(
        store.create_token(&dup).await,
        Err(StoreError::Conflict(_))
    ));

    let found = store
        .token_user("h1", 5000)
        .await
        .unwrap()
        .expect("token user");
    assert_eq!(found.user.id, a.user.id);
    assert_eq!(store.token_user("other", 5000).await.unwrap(), None);
    let listed = store.list_tokens(&a.user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(Timestamp(5000)));
    assert!(store.list_tokens(&b.user.id).await.unwrap().is_empty());
    // A use is recorded at most once a minute.
    store
        .token_user("h1", 60_000)
        .await
        .unwrap()
        .expect("token user");
    let listed = store.list_tokens(&a.user.id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(Timestamp(5000)));
    store
        .token_user("h1", 65_001)
        .await
        .unwrap()
        .expect("token user");
    let listed = store.list_tokens(&a.user.id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(Timestamp(65_001)));

    assert!(
        !store.revoke_token(&b.user.id, "t1", 6000).await.unwrap(),
        "not b's token"
    );
    assert!(store.token_user("h1", 6000).await.unwrap().is_some());
    assert!(store.revoke_token(&a.user.id, "t1", 6000).await.unwrap());
    assert!(
        !store.revoke_token(&a.user.id, "t1", 7000).await.unwrap(),
        "already revoked"
    );
    assert_eq!(store.token_user("h1", 8000).await.unwrap(), None);
    assert_eq!(
        store.list_tokens(&a.user.id).await.unwrap()[0].revoked_at,
        Some(Timestamp(6000))
    );

    // Deleting the user deletes the tokens.
    store
        .create_token(&NewToken {
            id: "t3".into(),
            user_id: b.user.id.clone(),
            name: "b".into(),
            token_hash: "h3".into(),
            now: 1000,
        })
        .await
        .unwrap();
    assert!(store.delete_user(&b.user.id).await.unwrap());
    assert_eq!(store.token_user("h3", 9000).await.unwrap(), None);
});

both_backends!(courses_crud, |backend| async move {
    let (_db, store) = open(backend).await;
    let author = store
        .create_user(&new_user(1, Role::Teacher))
        .await
        .unwrap();
    let mut c = new_course(
        "c-geo",
        "Geography",
        CourseStatus::Draft,
        Some(&author.user.id),
        1000,
    );
    c.extra = json!({ "legacyColor": "blue" });
    c.kind = CourseKind::Subject;
    let created = store.create_course(&c).await.unwrap();
    assert_eq!(created.id, "c-geo");
    assert_eq!(created.kind, CourseKind::Subject);
    assert_eq!(created.extra, json!({ "legacyColor": "blue" }));
    assert_eq!(created.lessons.len(), 1);
    assert_eq!(created.created_at, Timestamp(1000));
    assert_eq!(store.course("c-geo").await.unwrap(), Some(created.clone()));
    assert!(matches!(
        store.create_course(&c).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(!store.insert_course_if_absent(&c).await.unwrap());
    assert!(
        store
            .insert_course_if_absent(&new_course(
                "1",
                "Legacy one",
                CourseStatus::Published,
                None,
                5
            ))
            .await
            .unwrap()
    );
    assert_eq!(
        store.course("1").await.unwrap().unwrap().title,
        "Legacy one"
    );

    let patched = store
        .update_course(
            "c-geo",
            &CoursePatch {
                title: Some("World geography".into()),
                category: Some(None),
                status: Some(CourseStatus::Published),
                lessons: Some(vec![]),
                ..CoursePatch::default()
            },
            2000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.title, "World geography");
    assert_eq!(patched.category, None);
    assert_eq!(
        patched.level.as_deref(),
        Some("beginner"),
        "untouched field kept"
    );
    assert_eq!(patched.status, CourseStatus::Published);
    assert!(patched.lessons.is_empty());
    assert_eq!(patched.updated_at, Timestamp(2000));
    assert_eq!(patched.created_at, Timestamp(1000));
    assert_eq!(
        store
            .update_course("missing", &CoursePatch::default(), 1)
            .await
            .unwrap(),
        None
    );
    // The search index follows updates.
    let mut q = query(Visibility::All);
    q.q = Some("world".into());
    assert_eq!(store.list_courses(&q).await.unwrap().items.len(), 1);
    q.q = Some("geography".into());
    assert_eq!(store.list_courses(&q).await.unwrap().items[0].id, "c-geo");

    // Deleting the author keeps the course, without an author.
    assert!(store.delete_user(&author.user.id).await.unwrap());
    assert_eq!(
        store.course("c-geo").await.unwrap().unwrap().author_id,
        None
    );
});

both_backends!(course_visibility_and_filters, |backend| async move {
    let (_db, store) = open(backend).await;
    let t1 = store
        .create_user(&new_user(1, Role::Teacher))
        .await
        .unwrap()
        .user
        .id;
    let t2 = store
        .create_user(&new_user(2, Role::Teacher))
        .await
        .unwrap()
        .user
        .id;
    store
        .create_course(&new_course(
            "p1",
            "Public one",
            CourseStatus::Published,
            Some(&t1),
            1,
        ))
        .await
        .unwrap();
    store
        .create_course(&new_course(
            "d1",
            "Draft one",
            CourseStatus::Draft,
            Some(&t1),
            2,
        ))
        .await
        .unwrap();
    store
        .create_course(&new_course(
            "d2",
            "Draft two",
            CourseStatus::Draft,
            Some(&t2),
            3,
        ))
        .await
        .unwrap();
    store
        .create_course(&new_course(
            "a1",
            "Archived",
            CourseStatus::Archived,
            Some(&t2),
            4,
        ))
        .await
        .unwrap();
    let mut s = new_course("s1", "Subject", CourseStatus::Published, None, 5);
    s.kind = CourseKind::Subject;
    s.category = Some("art".into());
    s.level = Some("advanced".into());
    store.create_course(&s).await.unwrap();

    let ids = |q: CourseQuery| {
        let store = store.clone();
        async move {
            let mut v: Vec<String> = store
                .list_courses(&q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(ids(query(Visibility::Published)).await, ["p1", "s1"]);
    assert_eq!(
        ids(query(Visibility::PublishedOrAuthor(t1.clone()))).await,
        ["d1", "p1", "s1"]
    );
    assert_eq!(
        ids(query(Visibility::All)).await,
        ["a1", "d1", "d2", "p1", "s1"]
    );
    let mut q = query(Visibility::Published);
    q.status = Some(CourseStatus::Draft);
    assert!(
        ids(q).await.is_empty(),
        "a status filter cannot widen visibility"
    );
    let mut q = query(Visibility::All);
    q.kind = Some(CourseKind::Subject);
    assert_eq!(ids(q).await, ["s1"]);
    let mut q = query(Visibility::All);
    q.category = Some("art".into());
    assert_eq!(ids(q).await, ["s1"]);
    let mut q = query(Visibility::All);
    q.level = Some("beginner".into());
    assert_eq!(ids(q).await, ["a1", "d1", "d2", "p1"]);
    let mut q = query(Visibility::All);
    q.author = Some(t2.clone());
    assert_eq!(ids(q).await, ["a1", "d2"]);
    let mut q = query(Visibility::All);
    q.status = Some(CourseStatus::Archived);
    assert_eq!(ids(q).await, ["a1"]);
});

both_backends!(
    a_common_search_pages_through_every_match_in_order,
    |backend| async move {
        // Searches common and rare, page after page in every sort order: exactly the matches,
        // in the order, that the catalog without a search gives when filtered (the plan a
        // search takes must not show). Pages of one and seven over 600 courses also take
        // PostgreSQL's bounded walk (100 rows per row of the page) down each of its ways: the
        // page found in the walk, the walk cut short and the matches looked up, the walk
        // reaching the end of the catalog.
        let (_db, store) = open(backend).await;
        for i in 0..600i64 {
            let topic = ["Algebra", "Geometry", "Physics"][(i % 3) as usize];
            let status = if i % 7 == 0 {
                CourseStatus::Draft
            } else {
                CourseStatus::Published
            };
            let mut c = new_course(
                &format!("c{i:02}"),
                &format!("{topic} {} part {i}", i % 11),
                status,
                None,
                1_000 + (i * 37) % 600,
            );
            c.description = format!("About {} number {i}", topic.to_lowercase());
            store.create_course(&c).await.unwrap();
        }
        // Every page of a query, in order.
        let every_page = |mut q: CourseQuery| {
            let store = store.clone();
            async move {
                let mut got = Vec::new();
                loop {
                    let page = store.list_courses(&q).await.unwrap();
                    got.extend(page.items);
                    match page.next_cursor {
                        Some(next) => q.cursor = Some(next),
                        None => break got,
                    }
                }
            }
        };
        for sort in [
            CourseSort::NewestFirst,
            CourseSort::OldestFirst,
            CourseSort::RecentlyUpdated,
            CourseSort::Title,
        ] {
            let mut all = query(Visibility::Published);
            all.sort = sort;
            let catalog = every_page(all).await;
            // Common (a third, a tenth), rare (i = 37 and 370-379), and a single course.
            for (text, at_least) in [
                ("algebra", 150),
                ("ALG 1", 40),
                ("physics part", 150),
                ("part 37", 8),
                ("number 599", 1),
            ] {
                let expected: Vec<String> = catalog
                    .iter()
                    .filter(|c| {
                        let words: Vec<String> = format!("{} {}", c.title, c.description)
                            .to_lowercase()
                            .split_whitespace()
                            .map(str::to_string)
                            .collect();
                        text.to_lowercase()
                            .split_whitespace()
                            .all(|t| words.iter().any(|w| w.starts_with(t)))
                    })
                    .map(|c| c.id.clone())
                    .collect();
                assert!(
                    expected.len() >= at_least,
                    "{text}: {} matches",
                    expected.len()
                );
                for limit in [1, 7] {
                    let mut q = query(Visibility::Published);
                    q.sort = sort;
                    q.q = Some(text.into());
                    q.limit = limit;
                    let got: Vec<String> = every_page(q).await.into_iter().map(|c| c.id).collect();
                    assert_eq!(got, expected, "{text:?} sorted {sort:?}, pages of {limit}");
                }
            }
        }
    }
);

both_backends!(course_search_is_safe_and_prefix, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut a = new_course(
        "a",
        "Introduction to Algebra",
        CourseStatus::Published,
        None,
        1,
    );
    a.description =
        "Equations and polynomials (pneumonoultramicroscopicsilicovolcanoconiosis)".into();
    store.create_course(&a).await.unwrap();
    let mut b = new_course(
        "b",
        "Химия для начинающих",
        CourseStatus::Published,
        None,
        2,
    );
    b.description = "Атомы и молекулы".into();
    b.category = Some("science".into());
    store.create_course(&b).await.unwrap();
    let search = |text: &str| {
        let store = store.clone();
        let text = text.to_string();
        async move {
            let mut q = query(Visibility::All);
            q.q = Some(text);
            let mut v: Vec<String> = store
                .list_courses(&q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(search("algebra").await, ["a"]);
    assert_eq!(search("ALGEB").await, ["a"], "prefix and case-insensitive");
    assert_eq!(
        search("polynomials intro").await,
        ["a"],
        "all words, any field"
    );
    assert_eq!(search("algebra молекулы").await, Vec::<String>::new());
    assert_eq!(search("химия").await, ["b"]);
    assert_eq!(search("science").await, ["b"], "category is searched");
    // Past 32 characters (the longest prefix PostgreSQL indexes): still the whole term.
    assert_eq!(
        search("pneumonoultramicroscopicsilicovolcano").await,
        ["a"],
        "a long prefix"
    );
    assert_eq!(
        search("pneumonoultramicroscopicsilicovoXcano").await,
        Vec::<String>::new(),
        "a long term that differs after its first 32 characters"
    );
    for hostile in [
        "'; DROP TABLE courses; --",
        "\" OR 1=1",
        "a* NEAR(b)",
        "!!!",
        "%_%",
        "title:algebra",
        "(algebra",
        "\\",
    ] {
        let _ = search(hostile).await; // must not error
    }
    assert_eq!(
        search("'; DROP TABLE courses; --").await,
        Vec::<String>::new()
    );
    assert_eq!(
        search("(algebra*)").await,
        ["a"],
        "FTS syntax characters are only separators"
    );
    assert_eq!(
        search("NEAR(algebra)").await,
        Vec::<String>::new(),
        "operators are plain words"
    );
    assert_eq!(
        store
            .list_courses(&query(Visibility::All))
            .await
            .unwrap()
            .items
            .len(),
        2,
        "nothing dropped"
    );
});

both_backends!(course_pagination_every_sort, |backend| async move {
    let (_db, store) = open(backend).await;
    // 61 courses, with duplicate timestamps and titles so the id tie-break matters.
    for n in 0..61 {
        let mut c = new_course(
            &format!("c{n:03}"),
            &format!("Title {}", n % 7),
            CourseStatus::Published,
            None,
            1000 + n / 3,
        );
        c.now = 5000 - n / 2;
        store.create_course(&c).await.unwrap();
    }
    for sort in [
        CourseSort::NewestFirst,
        CourseSort::OldestFirst,
        CourseSort::Title,
        CourseSort::RecentlyUpdated,
    ] {
        let mut all = query(Visibility::All);
        all.sort = sort;
        let reference: Vec<_> = store.list_courses(&all).await.unwrap().items;
        assert_eq!(reference.len(), 61);
        // The reference order is the sort order.
        for w in reference.windows(2) {
            let ordered = match sort {
                CourseSort::NewestFirst => {
                    (w[0].created_at, &w[0].id) >= (w[1].created_at, &w[1].id)
                }
                CourseSort::OldestFirst => {
                    (w[0].created_at, &w[0].id) <= (w[1].created_at, &w[1].id)
                }
                CourseSort::Title => (&w[0].title, &w[0].id) <= (&w[1].title, &w[1].id),
                CourseSort::RecentlyUpdated => {
                    (w[0].updated_at, &w[0].id) >= (w[1].updated_at, &w[1].id)
                }
            };
            assert!(ordered, "{sort:?}: {} before {}", w[0].id, w[1].id);
        }
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let mut q = all.clone();
            q.limit = 8;
            q.cursor = cursor;
            let page = store.list_courses(&q).await.unwrap();
            assert!(page.items.len() <= 8);
            paged.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let ids: Vec<_> = paged.iter().map(|c| c.id.clone()).collect();
        let ref_ids: Vec<_> = reference.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, ref_ids, "{sort:?}: pages join up to the full list");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 61);
    }
});

fn new_report(id: &str, course: &str, reporter: Option<&str>, at: i64) -> NewReport {
    NewReport {
        id: id.into(),
        course_id: course.into(),
        reporter_id: reporter.map(str::to_string),
        reason: "spam".into(),
        details: Some("details".into()),
        status: ReportStatus::Pending,
        note: None,
        resolved_by: None,
        resolved_at: None,
        legacy_id: None,
        extra: json!({}),
        created_at: at,
    }
}

both_backends!(reports_queue_and_resolve, |backend| async move {
    let (_db, store) = open(backend).await;
    let r1 = store
        .create_user(&new_user(1, Role::Learner))
        .await
        .unwrap()
        .user
        .id;
    let r2 = store
        .create_user(&new_user(2, Role::Learner))
        .await
        .unwrap()
        .user
        .id;
    let admin = store
        .create_user(&new_user(3, Role::Admin))
        .await
        .unwrap()
        .user
        .id;
    for n in 0..12 {
        let reporter = if n % 2 == 0 { &r1 } else { &r2 };
        let course = if n < 6 { "c1" } else { "c2" };
        let created = store
            .create_report(&new_report(
                &format!("r{n:02}"),
                course,
                Some(reporter),
                100 + n,
            ))
            .await
            .unwrap();
        assert_eq!(created.status, ReportStatus::Pending);
        assert_eq!(created.created_at, Timestamp(100 + n));
    }
    let resolved = store
        .resolve_report(
            "r03",
            ReportStatus::Dismissed,
            Some("not spam"),
            &admin,
            999,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.status, ReportStatus::Dismissed);
    assert_eq!(resolved.note.as_deref(), Some("not spam"));
    assert_eq!(resolved.resolved_by.as_deref(), Some(admin.as_str()));
    assert_eq!(resolved.resolved_at, Some(Timestamp(999)));
    assert_eq!(store.report("r03").await.unwrap(), Some(resolved));
    assert_eq!(
        store
            .resolve_report("nope", ReportStatus::Resolved, None, &admin, 1)
            .await
            .unwrap(),
        None
    );

    let list = |q: ReportQuery| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let mut q = q;
            loop {
                let page = store.list_reports(&q).await.unwrap();
                out.extend(page.items.into_iter().map(|r| r.id));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break out,
                }
            }
        }
    };
    let all = list(ReportQuery {
        limit: 5,
        ..ReportQuery::default()
    })
    .await;
    let expected: Vec<String> = (0..12).rev().map(|n| format!("r{n:02}")).collect();
    assert_eq!(all, expected, "newest first, paged");
    let pending = list(ReportQuery {
        status: Some(ReportStatus::Pending),
        limit: 4,
        ..ReportQuery::default()
    })
    .await;
    assert_eq!(pending.len(), 11);
    assert!(!pending.contains(&"r03".to_string()));
    let by_course = list(ReportQuery {
        course_id: Some("c2".into()),
        reporter_id: Some(r1.clone()),
        limit: 100,
        ..ReportQuery::default()
    })
    .await;
    assert_eq!(by_course, ["r10", "r08", "r06"]);
});

both_backends!(legacy_reports_are_idempotent, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut r = new_report("x1", "c1", None, 5);
    r.legacy_id = Some("mq-7".into());
    r.status = ReportStatus::Resolved;
    r.note = Some("done".into());
    r.resolved_at = Some(9);
    assert_eq!(
        store.insert_legacy_rows(&[r.clone()], &[]).await.unwrap(),
        (vec![true], vec![])
    );
    let mut again = r.clone();
    again.id = "x2".into();
    assert_eq!(
        store.insert_legacy_rows(&[again], &[]).await.unwrap(),
        (vec![false], vec![])
    );
    let page = store
        .list_reports(&ReportQuery {
            limit: 10,
            ..ReportQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].status, ReportStatus::Resolved);
    assert_eq!(page.items[0].reporter_id, None);
});

fn log(level: LogLevel, source: &str, user: Option<&str>, at: i64) -> NewLog {
    NewLog {
        level,
        source: source.into(),
        message: format!("{source} at {at}"),
        context: Some(json!({ "at": at })),
        user_id: user.map(str::to_string),
        request_id: Some("req".into()),
        legacy_key: None,
        created_at: at,
    }
}

both_backends!(logs_insert_filter_page, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut batch = Vec::new();
    for n in 0..30 {
        let level = [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ][n % 4];
        let source = if n % 3 == 0 { "client" } else { "server" };
        let user = if n % 5 == 0 { Some("u1") } else { None };
        batch.push(log(level, source, user, 1000 + (n as i64) / 2));
    }
    assert_eq!(store.insert_logs(&batch).await.unwrap(), 30);
    let collect = |q: LogQuery| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let mut q = q;
            loop {
                let page = store.list_logs(&q).await.unwrap();
                out.extend(page.items);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break out,
                }
            }
        }
    };
    let all = collect(LogQuery {
        limit: 7,
        ..LogQuery::default()
    })
    .await;
    assert_eq!(all.len(), 30);
    for w in all.windows(2) {
        assert!(
            (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id),
            "newest first, strictly"
        );
    }
    assert_eq!(all[0].context, Some(json!({ "at": 1014 })));
    let errors = collect(LogQuery {
        level: Some(LogLevel::Error),
        limit: 3,
        ..LogQuery::default()
    })
    .await;
    assert_eq!(errors.len(), 7);
    assert!(errors.iter().all(|l| l.level == LogLevel::Error));
    let client_u1 = collect(LogQuery {
        source: Some("client".into()),
        user_id: Some("u1".into()),
        limit: 100,
        ..LogQuery::default()
    })
    .await;
    // n divisible by 15: 0, 15
    assert_eq!(client_u1.len(), 2);
    let window = collect(LogQuery {
        from: Some(1002),
        to: Some(1005),
        limit: 2,
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        window.len(),
        6,
        "[from, to): three timestamps, two entries each"
    );
    assert!(
        window
            .iter()
            .all(|l| (1002..1005).contains(&l.created_at.0))
    );
});

both_backends!(legacy_logs_are_idempotent, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut a = log(LogLevel::Error, "legacy", None, 1);
    a.legacy_key = Some("k1".into());
    let mut b = log(LogLevel::Error, "legacy", None, 2);
    b.legacy_key = Some("k2".into());
    assert_eq!(store.insert_logs(&[a.clone(), b.clone()]).await.unwrap(), 2);
    let mut c = log(LogLevel::Warn, "legacy", None, 3);
    c.legacy_key = Some("k3".into());
    assert_eq!(
        store.insert_logs(&[a, b, c]).await.unwrap(),
        1,
        "only the new key"
    );
    let page = store
        .list_logs(&LogQuery {
            limit: 100,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
});

both_backends!(
    legacy_rows_of_many_dumps_are_written_together,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let legacy_report = |id: &str, legacy: &str| {
            let mut r = new_report(id, "c1", None, 5);
            r.legacy_id = Some(legacy.into());
            r
        };
        let keyed_log = |key: Option<&str>, at: i64| {
            let mut l = log(LogLevel::Error, "legacy", None, at);
            l.legacy_key = key.map(str::to_string);
            l
        };
        assert_eq!(
            store
                .insert_legacy_rows(&[legacy_report("a", "mq-1")], &[keyed_log(Some("k1"), 1)])
                .await
                .unwrap(),
            (vec![true], vec![true])
        );
        // Stored before, new, repeated within the call (the first one counts), without a key.
        let reports = [
            legacy_report("b", "mq-1"),
            legacy_report("c", "mq-2"),
            legacy_report("d", "mq-2"),
            legacy_report("e", "mq-3"),
        ];
        let logs = [
            keyed_log(Some("k1"), 2),
            keyed_log(Some("k2"), 3),
            keyed_log(None, 4),
            keyed_log(Some("k2"), 5),
            keyed_log(None, 6),
        ];
        assert_eq!(
            store.insert_legacy_rows(&reports, &logs).await.unwrap(),
            (
                vec![false, true, false, true],
                vec![false, true, true, false, true]
            )
        );
        let stored_reports = store
            .list_reports(&ReportQuery {
                limit: 100,
                ..ReportQuery::default()
            })
            .await
            .unwrap();
        let mut ids: Vec<String> = stored_reports.items.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c", "e"]);
        let stored_logs = store
            .list_logs(&LogQuery {
                limit: 100,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let mut times: Vec<i64> = stored_logs.items.iter().map(|l| l.created_at.0).collect();
        times.sort();
        assert_eq!(times, [1, 3, 4, 6]);

        // One transaction: a row the database refuses (its reporter does not exist) leaves none
        // of the call's rows behind.
        let mut orphan = legacy_report("f", "mq-4");
        orphan.reporter_id = Some("nobody".into());
        assert!(
            store
                .insert_legacy_rows(
                    &[legacy_report("g", "mq-5"), orphan],
                    &[keyed_log(Some("k9"), 7)]
                )
                .await
                .is_err()
        );
        let after = store
            .list_logs(&LogQuery {
                limit: 100,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(after.items.len(), 4, "the failed call stored no log entry");
        let after = store
            .list_reports(&ReportQuery {
                limit: 100,
                ..ReportQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(after.items.len(), 3, "the failed call stored no report");
        assert_eq!(
            store.insert_legacy_rows(&[], &[]).await.unwrap(),
            (vec![], vec![])
        );

        // More rows than one statement binds: split into several, answered as one call.
        let many_reports: Vec<NewReport> = (0..600)
            .map(|n| legacy_report(&format!("m{n}"), &format!("mq-m{n}")))
            .collect();
        let many_logs: Vec<NewLog> = (0..900)
            .map(|n| keyed_log(Some(&format!("km{n}")), 100 + n))
            .collect();
        let (r, l) = store
            .insert_legacy_rows(&many_reports, &many_logs)
            .await
            .unwrap();
        assert!(r.len() == 600 && r.iter().all(|new| *new));
        assert!(l.len() == 900 && l.iter().all(|new| *new));
        let (r, l) = store
            .insert_legacy_rows(&many_reports, &many_logs)
            .await
            .unwrap();
        assert!(
            r.iter().chain(&l).all(|new| !*new),
            "all stored the first time"
        );
    }
);

both_backends!(migration_runs_roundtrip, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut run = MigrationRun {
        id: "run-1".into(),
        actor_id: None,
        source: RunSource::Cli,
        label: "dumps/".into(),
        status: RunStatus::Running,
        dry_run: false,
        dumps_total: 10,
        dumps_done: 0,
        counts: json!({}),
        report: json!([]),
        errors: json!([]),
        started_at: Timestamp(1000),
        finished_at: None,
    };
    store.save_run(&run).await.unwrap();
    assert_eq!(store.run("run-1").await.unwrap(), Some(run.clone()));
    run.status = RunStatus::Partial;
    run.dumps_done = 10;
    run.counts = json!({ "theme": { "imported": 9, "skipped": 1 } });
    run.errors = json!([{ "dump": "u7.json", "error": "invalid JSON" }]);
    run.finished_at = Some(Timestamp(2000));
    store.save_run(&run).await.unwrap();
    assert_eq!(store.run("run-1").await.unwrap(), Some(run.clone()));
    for n in 2..=5 {
        let mut r = run.clone();
        r.id = format!("run-{n}");
        r.started_at = Timestamp(1000 + n);
        store.save_run(&r).await.unwrap();
    }
    let first = store.list_runs(None, 3).await.unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["run-5", "run-4", "run-3"]
    );
    let second = store
        .list_runs(first.next_cursor.as_deref(), 3)
        .await
        .unwrap();
    assert_eq!(
        second
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["run-2", "run-1"]
    );
    assert_eq!(second.next_cursor, None);
    assert_eq!(store.run("missing").await.unwrap(), None);
});

both_backends!(title_order_is_by_code_point_on_both, |backend| async move {
    // The same order on both backends, whatever locale the PostgreSQL cluster has: code point
    // order, ids included (legacy ids of every shape).
    let (_db, store) = open(backend).await;
    let titles = [
        "apple",
        "Zebra",
        "Äpfel",
        "éclair",
        "Яблоко",
        "b-side",
        "b side",
        "bside",
        "10",
        "9",
        "_x",
        "Apple",
    ];
    let ids = [
        "u-1", "U_2", "3", "c-geo", "c_geo", "cgeo", "10", "9", "a.b", "A:b", "ab", "Ab",
    ];
    for (i, (title, id)) in titles.iter().zip(ids).enumerate() {
        store
            .create_course(&new_course(
                id,
                title,
                CourseStatus::Published,
                None,
                1000 + i as i64,
            ))
            .await
            .unwrap();
    }
    // Two courses with one title: the id breaks the tie.
    for id in ["same-b", "same-A", "same-a"] {
        store
            .create_course(&new_course(id, "Same", CourseStatus::Published, None, 1))
            .await
            .unwrap();
    }
    let mut q = query(Visibility::All);
    q.sort = CourseSort::Title;
    q.limit = 5;
    let mut got = Vec::new();
    loop {
        let page = store.list_courses(&q).await.unwrap();
        got.extend(page.items.into_iter().map(|c| (c.title, c.id)));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let mut expected = got.clone();
    expected.sort();
    assert_eq!(got, expected, "code point order of (title, id)");
    assert_eq!(got.len(), titles.len() + 3);
});

/// Inserts a session row whose record is `uid` → `user_id` (MessagePack, as
/// tower-sessions-sqlx-store writes it), straight into the backend's session table.
async fn insert_session(connected: &store::Connected, id: &str, user_id: &str) {
    fn str8(out: &mut Vec<u8>, s: &str) {
        if s.len() < 32 {
            out.push(0xa0 | s.len() as u8);
        } else {
            out.extend_from_slice(&[0xd9, s.len() as u8]);
        }
        out.extend_from_slice(s.as_bytes());
    }
    // [id, {"uid": user_id, "csrf": "x"}, expiry] — the shape matters less than the bytes.
    let mut data = vec![0x93];
    str8(&mut data, id);
    data.push(0x82);
    str8(&mut data, "uid");
    str8(&mut data, user_id);
    str8(&mut data, "csrf");
    str8(&mut data, "token");
    data.push(0x00);
    match connected {
        store::Connected::Postgres(s) => {
            sqlx::query("INSERT INTO tower_sessions.session (id, data, expiry_date) VALUES ($1, $2, now() + interval '1 day')")
                .bind(id)
                .bind(data)
                .execute(s.pool())
                .await
                .unwrap();
        }
        store::Connected::Sqlite(s) => {
            sqlx::query("INSERT INTO tower_sessions (id, data, expiry_date) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(data)
                .bind(4_000_000_000i64)
                .execute(s.pool())
                .await
                .unwrap();
        }
    }
}

async fn session_ids(connected: &store::Connected) -> Vec<String> {
    let mut ids: Vec<String> = match connected {
        store::Connected::Postgres(s) => {
            sqlx::query_scalar("SELECT id FROM tower_sessions.session")
                .fetch_all(s.pool())
                .await
                .unwrap()
        }
        store::Connected::Sqlite(s) => sqlx::query_scalar("SELECT id FROM tower_sessions")
            .fetch_all(s.pool())
            .await
            .unwrap(),
    };
    ids.sort();
    ids
}

both_backends!(
    erase_user_removes_everything_held_about_them,
    |backend| async move {
        use learnsync::model::Device;
        use learnsync::store::{DocWrite, ErasedCounts, SyncStateRow, WriteOutcome};
        use sync_core::docs::projection::{PreferencesRow, Projection};

        let db = TestDb::new(backend).await;
        let connected = store::connect(db.url(), 4, "conformance").await.unwrap();
        let store = connected.store();
        store.migrate().await.unwrap();
        let victim = store
            .create_user(&new_user(1, Role::Admin))
            .await
            .unwrap()
            .user
            .id;
        let other = store
            .create_user(&new_user(2, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let admin = store
            .create_user(&new_user(3, Role::Admin))
            .await
            .unwrap()
            .user
            .id;
        let now = 1_700_000_000_000;

        // Documents (with projection rows and sync states) of both users.
        let prefs = |owner: &str, doc: &str, theme: &str| DocWrite {
            doc_id: doc.into(),
            owner_id: owner.into(),
            kind: "preferences".into(),
            course_id: None,
            changes: vec![1, 2, 3],
            projection: Some(Projection::Preferences(PreferencesRow {
                theme: Some(theme.into()),
                language: None,
                settings: [("theme".to_string(), json!(theme))].into(),
            })),
            likely_new: true,
        };
        let course = |owner: &str, doc: &str| DocWrite {
            doc_id: doc.into(),
            owner_id: owner.into(),
            kind: "course".into(),
            course_id: Some("c1".into()),
            changes: vec![4, 5],
            projection: Some(Projection::Course(
                sync_core::docs::projection::CourseProgressRow {
                    course_id: "c1".into(),
                    attempt: 1,
                    progress: 40.0,
                    completed_lessons: vec!["l1".into()],
                    time_spent_secs: 60,
                    last_activity: Some(now),
                },
            )),
            likely_new: true,
        };
        let outcomes = store
            .store_writes(
                &[
                    prefs(&victim, "doc-v-prefs", "dark"),
                    course(&victim, "doc-v-c1"),
                    prefs(&victim, "doc-v-prefs", "light"),
                    prefs(&other, "doc-o-prefs", "dark"),
                    course(&other, "doc-o-c1"),
                ],
                now,
            )
            .await
            .unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, WriteOutcome::Stored { .. })),
            "{outcomes:?}"
        );
        store
            .save_sync_states(
                &[
                    SyncStateRow {
                        doc_id: "doc-v-prefs".into(),
                        storage_id: "peer".into(),
                        state: vec![9],
                    },
                    SyncStateRow {
                        doc_id: "doc-o-prefs".into(),
                        storage_id: "peer".into(),
                        state: vec![9],
                    },
                ],
                now,
            )
            .await
            .unwrap();
        for (user, token) in [(&victim, "t-v"), (&other, "t-o")] {
            store
                .create_token(&NewToken {
                    id: token.into(),
                    user_id: user.clone(),
                    name: "phone".into(),
                    token_hash: format!("hash-{token}"),
                    now,
                })
                .await
                .unwrap();
        }
        insert_session(&connected, "s-victim-1", &victim).await;
        insert_session(&connected, "s-victim-2", &victim).await;
        insert_session(&connected, "s-other", &other).await;
        // A course the victim wrote and one of the other user, reports on it.
        store
            .create_course(&new_course(
                "c1",
                "Algebra",
                CourseStatus::Published,
                Some(&victim),
                now,
            ))
            .await
            .unwrap();
        store
            .create_report(&new_report("r-victim", "c1", Some(&victim), now))
            .await
            .unwrap();
        store
            .create_report(&new_report("r-other", "c1", Some(&other), now + 1))
            .await
            .unwrap();
        store
            .resolve_report(
                "r-other",
                ReportStatus::Resolved,
                Some("ok"),
                &victim,
                now + 2,
            )
            .await
            .unwrap();
        store
            .insert_logs(&[
                log(LogLevel::Error, "client", Some(&victim), now),
                log(LogLevel::Info, "audit", Some(&victim), now + 1),
                log(LogLevel::Error, "client", Some(&other), now + 2),
            ])
            .await
            .unwrap();
        let run = |id: &str, actor: &str, source: RunSource, at: i64| MigrationRun {
            id: id.into(),
            actor_id: Some(actor.into()),
            source,
            label: "dump.json".into(),
            status: RunStatus::Succeeded,
            dry_run: false,
            dumps_total: 1,
            dumps_done: 1,
            counts: json!({}),
            report: json!([]),
            errors: json!([]),
            started_at: Timestamp(at),
            finished_at: Some(Timestamp(at + 1)),
        };
        store
            .save_run(&run("run-own", &victim, RunSource::Client, now))
            .await
            .unwrap();
        store
            .save_run(&run("run-admin", &victim, RunSource::Admin, now + 5))
            .await
            .unwrap();
        store
            .save_run(&run("run-other", &other, RunSource::Client, now))
            .await
            .unwrap();
        assert_eq!(
            store
                .runs_by_actor(&victim)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["run-admin", "run-own"],
            "a user's runs, newest first, nobody else's"
        );
        for (conn, user) in [("i/1", &victim), ("i/2", &other)] {
            store
                .device_connected(&Device {
                    conn_id: conn.into(),
                    instance_id: "i".into(),
                    user_id: user.clone(),
                    peer_id: "p".into(),
                    remote_addr: "127.0.0.1".into(),
                    user_agent: "test".into(),
                    connected_at: Timestamp(now),
                    last_sync_at: None,
                })
                .await
                .unwrap();
        }

        let counts = store
            .erase_user(&victim, "sha256:pseudonym", Some(&admin), now + 10)
            .await
            .unwrap()
            .expect("the user existed");
        assert_eq!(
            counts,
            ErasedCounts {
                documents: 2,
                document_changes: 3,
                enrollments: 1,
                preferences: 1,
                api_tokens: 1,
                sessions: 2,
                reports: 1,
                logs: 1,
                audit_entries_pseudonymised: 1,
                import_runs: 1,
                devices: 1,
            }
        );
        assert_eq!(
            store
                .erase_user(&victim, "sha256:pseudonym", Some(&admin), now)
                .await
                .unwrap(),
            None
        );

        // Nothing of the victim is left.
        assert_eq!(store.user(&victim).await.unwrap(), None);
        assert!(store.load_document("doc-v-prefs").await.unwrap().is_none());
        assert!(store.load_document("doc-v-c1").await.unwrap().is_none());
        assert!(store.user_documents(&victim).await.unwrap().is_empty());
        assert_eq!(store.preferences(&victim).await.unwrap(), None);
        assert!(store.enrollments(&victim).await.unwrap().is_empty());
        assert!(store.token_user("hash-t-v", now).await.unwrap().is_none());
        assert!(store.list_devices(Some(&victim)).await.unwrap().is_empty());
        assert!(store.runs_by_actor(&victim).await.unwrap().is_empty());
        assert_eq!(session_ids(&connected).await, ["s-other"]);
        let victims_logs = store
            .list_logs(&LogQuery {
                user_id: Some(victim.clone()),
                limit: 100,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert!(victims_logs.items.is_empty(), "{victims_logs:?}");
        let reports = store
            .list_reports(&ReportQuery {
                limit: 100,
                ..ReportQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(reports.items.len(), 1);
        assert_eq!(reports.items[0].id, "r-other");
        assert_eq!(
            reports.items[0].resolved_by, None,
            "the moderator is unlinked, the outcome kept"
        );
        assert_eq!(reports.items[0].status, ReportStatus::Resolved);
        assert_eq!(store.course("c1").await.unwrap().unwrap().author_id, None);
        assert_eq!(
            store.run("run-admin").await.unwrap().unwrap().actor_id,
            None
        );

        // The audit trail: the victim's own admin action under the pseudonym, and the erasure.
        let audit = store
            .list_logs(&LogQuery {
                source: Some("audit".into()),
                limit: 100,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(audit.items.len(), 2, "{audit:?}");
        let erased = &audit.items[0];
        assert_eq!(erased.message, "user erased");
        assert_eq!(erased.user_id.as_deref(), Some(admin.as_str()));
        let context = erased.context.clone().unwrap();
        assert_eq!(context["subject"], "sha256:pseudonym");
        assert_eq!(context["erased"]["documents"], 2);
        assert!(!serde_json::to_string(erased).unwrap().contains(&victim));
        assert_eq!(audit.items[1].user_id.as_deref(), Some("sha256:pseudonym"));

        // The other user is untouched.
        assert_eq!(store.user_documents(&other).await.unwrap().len(), 2);
        assert_eq!(
            store
                .load_document("doc-o-prefs")
                .await
                .unwrap()
                .unwrap()
                .sync_states
                .len(),
            1
        );
        assert_eq!(
            store
                .preferences(&other)
                .await
                .unwrap()
                .unwrap()
                .theme
                .as_deref(),
            Some("dark")
        );
        assert_eq!(store.enrollments(&other).await.unwrap().len(), 1);
        assert!(store.token_user("hash-t-o", now).await.unwrap().is_some());
        assert_eq!(store.list_devices(Some(&other)).await.unwrap().len(), 1);
        assert_eq!(store.runs_by_actor(&other).await.unwrap().len(), 1);
        let others_logs = store
            .list_logs(&LogQuery {
                user_id: Some(other.clone()),
                limit: 100,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(others_logs.items.len(), 1);
    }
);

both_backends!(
    a_load_racing_compaction_sees_every_stored_change,
    |backend| async move {
        use automerge::{AutoCommit, ReadDoc};
        use std::sync::atomic::{AtomicUsize, Ordering};

        // A change is stored, then the document is compacted (snapshot rewritten, change rows
        // deleted) while loads run beside both. A load that read the old snapshot and then the
        // change rows after they were folded away would miss changes the hub already
        // acknowledged: every load must hold at least every change stored before it began.
        let (_db, store) = open(backend).await;
        let owner = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        const CHANGES: usize = 150;
        let stored = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (store, stored, owner) = (store.clone(), stored.clone(), owner.clone());
            tokio::spawn(async move {
                let mut list = ListWriter::new(store.clone(), owner, "doc-race");
                for i in 0..CHANGES {
                    list.append(i as i64).await;
                    stored.store(i + 1, Ordering::SeqCst);
                    if i % 3 == 2 {
                        store.compact_document("doc-race").await.unwrap();
                    }
                }
            })
        };
        let mut loads = 0;
        while !writer.is_finished() {
            let at_least = stored.load(Ordering::SeqCst);
            let Some(found) = store.load_document("doc-race").await.unwrap() else {
                assert_eq!(at_least, 0, "the document vanished");
                continue;
            };
            let mut doc = AutoCommit::new();
            for chunk in &found.chunks {
                doc.load_incremental(chunk).unwrap();
            }
            let held = match doc.get(automerge::ROOT, "n").unwrap() {
                Some((_, list)) => doc.length(&list),
                None => 0,
            };
            assert!(
                held >= at_least,
                "load {loads} held {held} changes, {at_least} were stored before it began"
            );
            loads += 1;
        }
        writer.await.unwrap();
        assert!(loads > 10, "only {loads} loads overlapped the writes");
    }
);

/// A write of `changes` to `doc` of kind "other", with no projection.
fn plain_write(owner: &str, doc: &str, changes: Vec<u8>) -> learnsync::store::DocWrite {
    learnsync::store::DocWrite {
        doc_id: doc.into(),
        owner_id: owner.into(),
        kind: "other".into(),
        course_id: None,
        changes,
        projection: None,
        likely_new: false,
    }
}

/// The writes of a mixed group commit: a document of the writer's, someone else's, a new one
/// two users race for, one of an owner who is gone, several writes to one document and to one
/// projection row.
fn mixed_batch(a: &str, b: &str) -> Vec<learnsync::store::DocWrite> {
    use learnsync::store::DocWrite;
    use sync_core::docs::learning::Status;
    use sync_core::docs::projection::{
        CourseProgressRow, EnrollmentStatusRow, PreferencesRow, Projection,
    };
    let write =
        |owner: &str, doc: &str, kind: &str, course: Option<&str>, p: Option<Projection>| {
            DocWrite {
                doc_id: doc.into(),
                owner_id: owner.into(),
                kind: kind.into(),
                course_id: course.map(str::to_string),
                changes: Vec::new(),
                projection: p,
                likely_new: false,
            }
        };
    let prefs = |theme: &str| {
        Some(Projection::Preferences(PreferencesRow {
            theme: Some(theme.into()),
            language: Some("en".into()),
            settings: [("theme".to_string(), json!(theme))].into(),
        }))
    };
    let progress = |course: &str, progress: f64, lessons: &[&str]| {
        Some(Projection::Course(CourseProgressRow {
            course_id: course.into(),
            attempt: 1,
            progress,
            completed_lessons: lessons.iter().map(|l| l.to_string()).collect(),
            time_spent_secs: (progress * 10.0) as i64,
            last_activity: Some(1_700_000_000_500),
        }))
    };
    let status = |course: &str, status: Status| EnrollmentStatusRow {
        course_id: course.into(),
        status,
        enrolled_at: Some(1_700_000_000_100),
    };
    let mut writes = vec![
        write(a, "a-prefs", "preferences", None, prefs("dark")),
        write(b, "a-prefs", "preferences", None, prefs("light")),
        write(
            a,
            "a-c1",
            "course",
            Some("c1"),
            progress("c1", 40.0, &["l1"]),
        ),
        write(
            b,
            "a-c1",
            "course",
            Some("c1"),
            progress("c1", 90.0, &["l1"]),
        ),
        write("gone", "gone-prefs", "preferences", None, prefs("dark")),
        write(a, "a-prefs", "preferences", None, prefs("light")),
        write(
            a,
            "a-learn",
            "learning",
            None,
            Some(Projection::Learning(vec![
                status("c1", Status::Active),
                status("c2", Status::Unenrolled),
            ])),
        ),
        write(
            a,
            "a-c1",
            "course",
            Some("c1"),
            progress("c1", 100.0, &["l1", "l2"]),
        ),
        write(
            a,
            "a-c2",
            "course",
            Some("c2"),
            progress("c2", 100.0, &["l1"]),
        ),
        write(b, "b-prefs", "preferences", None, prefs("dark")),
        write(a, "a-free", "other", None, None),
        write(
            a,
            "a-learn",
            "learning",
            None,
            Some(Projection::Learning(vec![status("c1", Status::Unenrolled)])),
        ),
    ];
    for (i, w) in writes.iter_mut().enumerate() {
        w.changes = format!("write {i} to {}", w.doc_id).into_bytes();
    }
    writes
}

/// What a store holds after the mixed batch, to compare one store with another.
async fn written_state(store: &Arc<dyn Store>, a: &str, b: &str) -> Vec<String> {
    let mut state = Vec::new();
    for doc in [
        "a-prefs",
        "a-c1",
        "a-c2",
        "a-learn",
        "a-free",
        "b-prefs",
        "gone-prefs",
    ] {
        let found = store.load_document(doc).await.unwrap().map(|d| {
            (
                d.owner_id == a,
                d.kind,
                d.course_id,
                d.chunks
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>(),
            )
        });
        state.push(format!("{doc}: {found:?}"));
    }
    for user in [a, b] {
        let mut docs = store.user_documents(user).await.unwrap();
        docs.sort_by(|x, y| x.id.cmp(&y.id));
        let docs: Vec<_> = docs
            .iter()
            .map(|d| (&d.id, &d.kind, d.course_id.clone()))
            .collect();
        state.push(format!("documents of {}: {docs:?}", user == a));
        state.push(format!(
            "preferences of {}: {:?}",
            user == a,
            store.preferences(user).await.unwrap()
        ));
        let mut enrollments = store.enrollments(user).await.unwrap();
        enrollments.sort_by(|x, y| x.course_id.cmp(&y.course_id));
        state.push(format!("enrollments of {}: {enrollments:?}", user == a));
    }
    state
}

both_backends!(
    a_group_commit_stores_what_its_writes_store_one_by_one,
    |backend| async move {
        use learnsync::store::WriteOutcome;

        // The writer commits many writes in one transaction with a fixed number of
        // statements; the outcome, rows and projection must be those of the same writes
        // committed one at a time, in order. The `likely_new` hint only changes the order of
        // the statements: a batch that claims every document is new (wrong for three of them)
        // and one that claims none is (wrong for the others) store the same.
        let now = 1_700_000_001_000;
        let mut states = Vec::new();
        let mut outcomes_seen = Vec::new();
        for (batched, likely_new) in [(false, false), (true, false), (true, true), (false, true)] {
            let (_db, store) = open(backend).await;
            let a = store
                .create_user(&new_user(1, Role::Learner))
                .await
                .unwrap()
                .user
                .id;
            let b = store
                .create_user(&new_user(2, Role::Learner))
                .await
                .unwrap()
                .user
                .id;
            // Documents that exist before the batch: one of each user.
            let before = mixed_batch(&a, &b);
            for w in [&before[0], &before[9]] {
                let mut w = w.clone();
                w.changes = b"before".to_vec();
                w.projection = None;
                store.store_writes(&[w], now).await.unwrap();
            }
            let mut writes = mixed_batch(&a, &b);
            for w in &mut writes {
                w.likely_new = likely_new;
            }
            let outcomes = if batched {
                store.store_writes(&writes, now).await.unwrap()
            } else {
                let mut all = Vec::new();
                for w in &writes {
                    all.extend(
                        store
                            .store_writes(std::slice::from_ref(w), now)
                            .await
                            .unwrap(),
                    );
                }
                all
            };
            assert_eq!(outcomes.len(), writes.len());
            // Sequence numbers rise with the order of the writes.
            let seqs: Vec<i64> = outcomes
                .iter()
                .filter_map(|o| match o {
                    WriteOutcome::Stored { seq, .. } => Some(*seq),
                    WriteOutcome::Rejected(_) => None,
                })
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{outcomes:?}");
            // The last write of a document reports every change row it has.
            let WriteOutcome::Stored {
                pending_changes, ..
            } = &outcomes[7]
            else {
                panic!("{outcomes:?}");
            };
            assert_eq!(*pending_changes, 2, "a-c1 holds two change rows");
            let WriteOutcome::Stored {
                pending_changes, ..
            } = &outcomes[5]
            else {
                panic!("{outcomes:?}");
            };
            assert_eq!(*pending_changes, 3, "a-prefs holds three change rows");
            outcomes_seen.push(
                outcomes
                    .iter()
                    .map(|o| match o {
                        WriteOutcome::Stored { .. } => "stored".to_string(),
                        WriteOutcome::Rejected(why) => why.clone(),
                    })
                    .collect::<Vec<_>>(),
            );
            states.push(written_state(&store, &a, &b).await);
        }
        assert_eq!(
            outcomes_seen[0],
            [
                "stored",
                "document belongs to another user",
                "stored",
                "document belongs to another user",
                "the owner no longer exists",
                "stored",
                "stored",
                "stored",
                "stored",
                "stored",
                "stored",
                "stored",
            ]
        );
        for (i, (outcomes, state)) in outcomes_seen.iter().zip(&states).enumerate().skip(1) {
            assert_eq!(outcomes, &outcomes_seen[0], "variant {i}");
            assert_eq!(state, &states[0], "variant {i}");
        }
        // What the projection says, spelled out once.
        let state = &states[0];
        assert!(
            state
                .iter()
                .any(|s| s.starts_with("preferences of true: Some") && s.contains("light")),
            "{state:#?}"
        );
        let enrollments = state
            .iter()
            .find(|s| s.starts_with("enrollments of true"))
            .unwrap();
        assert!(
            enrollments.contains("Unenrolled") || enrollments.contains("unenrolled"),
            "{enrollments}"
        );
    }
);

both_backends!(
    a_group_commit_keeps_the_document_limit,
    |backend| async move {
        use learnsync::store::{DocWrite, WriteOutcome};

        // A user one document under the limit: of two new documents in one batch the first is
        // created, the second refused; writes to existing documents still go through.
        let (_db, store) = open(backend).await;
        let a = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let doc = |n: usize| plain_write(&a, &format!("doc-{n}"), vec![n as u8]);
        const LIMIT: usize = 5_000;
        let first: Vec<DocWrite> = (0..LIMIT - 1).map(doc).collect();
        let outcomes = store.store_writes(&first, 1).await.unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, WriteOutcome::Stored { .. }))
        );
        let outcomes = store
            .store_writes(&[doc(LIMIT - 1), doc(LIMIT), doc(0)], 2)
            .await
            .unwrap();
        assert!(
            matches!(outcomes[0], WriteOutcome::Stored { .. }),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[1],
            WriteOutcome::Rejected(format!("a user may own at most {LIMIT} documents"))
        );
        assert!(
            matches!(
                outcomes[2],
                WriteOutcome::Stored {
                    pending_changes: 2,
                    ..
                }
            ),
            "{outcomes:?}"
        );
        assert_eq!(store.user_documents(&a).await.unwrap().len(), LIMIT);
    }
);

/// PostgreSQL only: SQLite has one writer, so no other commit lands inside a group commit.
///
/// Two instances create the same new document for the same user (both of the user's devices
/// opened it from its genesis). The other instance's insert commits after this group commit's
/// first statement read the documents, and before its owner look-up: the document is the
/// writer's own and must be counted, not refused as someone else's (a refusal makes the hub
/// answer the device `doc-unavailable`, and the device never gets in sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_counts_a_new_document_its_owner_created_elsewhere_meanwhile() {
    use learnsync::store::WriteOutcome;
    use sqlx::Connection;

    let (db, store) = open(Backend::Postgres).await;
    let owner = store
        .create_user(&new_user(1, Role::Learner))
        .await
        .unwrap()
        .user
        .id;
    let write = |doc: &str| plain_write(&owner, doc, vec![1, 2, 3]);
    let first = store.store_writes(&[write("doc-held")], 1).await.unwrap();
    assert!(matches!(first[0], WriteOutcome::Stored { .. }), "{first:?}");

    // The other instance: holds the existing document's row (so the group commit's first
    // statement waits with its snapshot already taken) and creates the new one.
    let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT id FROM documents WHERE id = 'doc-held' FOR UPDATE")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO documents (id, owner_id, kind, course_id, change_count, byte_size, created_at, updated_at) \
         VALUES ('doc-new', $1, 'other', NULL, 1, 3, 2, 2)",
    )
    .bind(&owner)
    .execute(&mut other)
    .await
    .unwrap();
    let commit = {
        let store = store.clone();
        let writes = vec![write("doc-held"), write("doc-new")];
        tokio::spawn(async move { store.store_writes(&writes, 3).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut other)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group commit never waited for the held row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let outcomes = commit.await.unwrap().unwrap();
    assert!(
        matches!(
            outcomes[0],
            WriteOutcome::Stored {
                pending_changes: 2,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            outcomes[1],
            WriteOutcome::Stored {
                pending_changes: 2,
                ..
            }
        ),
        "the owner's own document, created elsewhere meanwhile: {outcomes:?}"
    );
    let held = store
        .load_document("doc-new")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(held.owner_id, owner);
}

both_backends!(
    compaction_skips_documents_it_would_not_make_smaller,
    |backend| async move {
        use automerge::transaction::Transactable;
        use automerge::{AutoCommit, ROOT};

        // A bulk import leaves tens of thousands of documents stored as one small change row;
        // compacting them would cost a write each and save nothing.
        let (_db, store) = open(backend).await;
        let owner = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let write = |doc: &str, changes: Vec<u8>| plain_write(&owner, doc, changes);
        // Written once, two changes: as small as its snapshot would be.
        let mut once = AutoCommit::new();
        once.put(ROOT, "title", "once").unwrap();
        once.commit();
        once.put(ROOT, "n", 1).unwrap();
        let once_bytes = once.save_incremental();
        // One row carrying a long history: its snapshot is far smaller.
        let mut history = AutoCommit::new();
        for i in 0..300 {
            history.put(ROOT, "n", i).unwrap();
            history.commit();
        }
        let history_bytes = history.save_incremental();
        // Two rows.
        let mut twice = AutoCommit::new();
        twice.put(ROOT, "n", 1).unwrap();
        let first = twice.save_incremental();
        twice.put(ROOT, "n", 2).unwrap();
        let second = twice.save_incremental();
        store
            .store_writes(
                &[
                    write("doc-once", once_bytes.clone()),
                    write("doc-history", history_bytes),
                    write("doc-twice", first),
                    write("doc-twice", second),
                ],
                1,
            )
            .await
            .unwrap();
        let ids: Vec<String> = ["doc-once", "doc-history", "doc-twice", "doc-absent"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut worth = store.documents_worth_compacting(&ids).await.unwrap();
        worth.sort();
        assert_eq!(worth, ["doc-history", "doc-twice"]);
        // Once compacted, nothing is left to fold until the next write.
        for id in &worth {
            store.compact_document(id).await.unwrap();
        }
        assert!(
            store
                .documents_worth_compacting(&ids)
                .await
                .unwrap()
                .is_empty()
        );
        let kept = store.load_document("doc-once").await.unwrap().unwrap();
        assert_eq!(kept.chunks, [once_bytes]);
    }
);

both_backends!(
    compaction_keeps_every_row_when_one_chunk_is_unreadable,
    |backend| async move {
        use automerge::transaction::Transactable;
        use automerge::{AutoCommit, ROOT};

        // Stored bytes automerge cannot read (a bug, a disk error) must never be folded away
        // as if they were read: one `load_incremental` per row once skipped such a chunk,
        // reported success, and the compaction deleted its row.
        let (_db, store) = open(backend).await;
        let owner = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let write = |changes: Vec<u8>| plain_write(&owner, "doc-bad", changes);
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "n", 1).unwrap();
        let first = doc.save_incremental();
        doc.put(ROOT, "n", 2).unwrap();
        let second = doc.save_incremental();
        let garbage = b"not an automerge chunk".to_vec();
        store
            .store_writes(
                &[
                    write(first.clone()),
                    write(garbage.clone()),
                    write(second.clone()),
                ],
                1,
            )
            .await
            .unwrap();
        store.compact_document("doc-bad").await.unwrap();
        let stored = store.load_document("doc-bad").await.unwrap().unwrap();
        assert_eq!(
            stored.chunks,
            [first, garbage, second],
            "every row kept as it was"
        );
    }
);

both_backends!(
    compactions_racing_writes_and_each_other_lose_nothing,
    |backend| async move {
        use automerge::{AutoCommit, ReadDoc};

        // A compaction rebuilds the document before it locks the row, so writes (on another
        // connection) commit while it works, and two instances may compact the same document at
        // once. Every stored change must survive, and the document's counters must match the
        // rows left: `change_count` drives compaction, `byte_size` the storage figures.
        let (db, store) = open(backend).await;
        let owner = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        const CHANGES: usize = 120;
        let writer = {
            let (store, owner) = (store.clone(), owner.clone());
            tokio::spawn(async move {
                let mut list = ListWriter::new(store, owner, "doc-compacted");
                for i in 0..CHANGES {
                    list.append(i as i64).await;
                }
            })
        };
        // Each compactor checks the counters against the rows after every run, while the
        // writes go on: a write updates both in one transaction and the check reads both in one
        // statement, so they agree at every moment unless a compaction miscounted.
        let compactors: Vec<_> = (0..2)
            .map(|_| {
                let (store, url) = (store.clone(), db.url().to_string());
                tokio::spawn(async move {
                    for run in 0..300 {
                        store.compact_document("doc-compacted").await.unwrap();
                        let Some([counted, rows_left, size, bytes]) = counters(backend, &url).await
                        else {
                            continue;
                        };
                        assert_eq!(
                            counted, rows_left,
                            "change_count against the rows left, run {run}"
                        );
                        assert_eq!(size, bytes, "byte_size against the bytes stored, run {run}");
                    }
                })
            })
            .collect();
        writer.await.unwrap();
        for c in compactors {
            c.await.unwrap();
        }
        let found = store.load_document("doc-compacted").await.unwrap().unwrap();
        let mut doc = AutoCommit::new();
        for chunk in &found.chunks {
            doc.load_incremental(chunk).unwrap();
        }
        let (_, list) = doc.get(automerge::ROOT, "n").unwrap().unwrap();
        assert_eq!(doc.length(&list), CHANGES, "changes lost to a compaction");
        for i in 0..CHANGES {
            let (value, _) = doc.get(&list, i).unwrap().unwrap();
            assert_eq!(value.as_i64(), Some(i as i64));
        }
        // Once more, with no write beside it, folds everything.
        store.compact_document("doc-compacted").await.unwrap();
        let after = store.load_document("doc-compacted").await.unwrap().unwrap();
        assert_eq!(
            after.chunks.len(),
            1,
            "a last compaction leaves one snapshot"
        );
        let [counted, rows_left, size, bytes] = counters(backend, db.url()).await.unwrap();
        assert_eq!([counted, rows_left], [0, 0]);
        assert_eq!(size, bytes);
    }
);

/// Appends numbers to a list `n` in one document, storing each append as its own write: the
/// writer side of the compaction races.
struct ListWriter {
    store: Arc<dyn Store>,
    owner: String,
    doc_id: &'static str,
    doc: automerge::AutoCommit,
    list: automerge::ObjId,
    before: Vec<automerge::ChangeHash>,
}

impl ListWriter {
    fn new(store: Arc<dyn Store>, owner: String, doc_id: &'static str) -> Self {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let list = doc
            .put_object(automerge::ROOT, "n", automerge::ObjType::List)
            .unwrap();
        Self {
            store,
            owner,
            doc_id,
            doc,
            list,
            before: Vec::new(),
        }
    }

    /// Appends `value` and stores the change; panics unless it was stored.
    async fn append(&mut self, value: i64) {
        use automerge::ReadDoc;
        use automerge::transaction::Transactable;
        use learnsync::store::{DocWrite, WriteOutcome};
        let at = self.doc.length(&self.list);
        self.doc.insert(&self.list, at, value).unwrap();
        let outcome = self
            .store
            .store_writes(
                &[DocWrite {
                    doc_id: self.doc_id.into(),
                    owner_id: self.owner.clone(),
                    kind: "other".into(),
                    course_id: None,
                    changes: self.doc.save_after(&self.before),
                    projection: None,
                    likely_new: self.before.is_empty(),
                }],
                1_700_000_000_000,
            )
            .await
            .unwrap();
        self.before = self.doc.get_heads();
        assert!(matches!(outcome[0], WriteOutcome::Stored { .. }));
    }
}

/// `doc-compacted`'s `change_count`, its change rows, its `byte_size` and the bytes of its
/// snapshot and rows, in one statement (so of one moment), straight from the database; `None`
/// before its first write.
async fn counters(backend: Backend, url: &str) -> Option<[i64; 4]> {
    use sqlx::{Connection, Row};
    const COUNTERS: &str = "SELECT d.change_count AS counted, d.byte_size AS size, \
         (SELECT count(*) FROM document_changes c WHERE c.doc_id = d.id) AS rows_left, \
         COALESCE(length(d.snapshot), 0) + COALESCE((SELECT sum(length(c.data)) FROM document_changes c WHERE c.doc_id = d.id), 0) AS bytes \
         FROM documents d WHERE d.id = 'doc-compacted'";
    fn read<R: Row>(r: &R) -> [i64; 4]
    where
        for<'c> &'c str: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        ["counted", "rows_left", "size", "bytes"].map(|c| r.try_get::<i64, _>(c).unwrap())
    }
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let row = sqlx::query(COUNTERS)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
            row.as_ref().map(read)
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            let row = sqlx::query(COUNTERS)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
            row.as_ref().map(read)
        }
    }
}

both_backends!(
    loading_documents_together_equals_loading_each,
    |backend| async move {
        use learnsync::store::SyncStateRow;

        // A shard loads a pass's documents in one statement: each must come back as its own
        // load would return it (snapshot and change rows in order, sync states, absent ones
        // absent), in the order asked, whatever else is in the batch.
        let (_db, store) = open(backend).await;
        let a = store
            .create_user(&new_user(1, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let b = store
            .create_user(&new_user(2, Role::Learner))
            .await
            .unwrap()
            .user
            .id;
        let write = |owner: &str, doc: &str, n: u8| plain_write(owner, doc, vec![n; 3]);
        store
            .store_writes(
                &[
                    write(&a, "d1", 1),
                    write(&b, "d2", 2),
                    write(&a, "d1", 3),
                    write(&a, "d3", 4),
                ],
                1,
            )
            .await
            .unwrap();
        store.store_writes(&[write(&a, "d3", 5)], 2).await.unwrap();
        store
            .save_sync_states(
                &[
                    SyncStateRow {
                        doc_id: "d1".into(),
                        storage_id: "p1".into(),
                        state: vec![7],
                    },
                    SyncStateRow {
                        doc_id: "d1".into(),
                        storage_id: "p2".into(),
                        state: vec![8],
                    },
                    SyncStateRow {
                        doc_id: "d2".into(),
                        storage_id: "p1".into(),
                        state: vec![9],
                    },
                ],
                3,
            )
            .await
            .unwrap();
        let ids: Vec<String> = ["d3", "missing", "d1", "d2", "d1"]
            .map(String::from)
            .to_vec();
        let together = store.load_documents(&ids).await.unwrap();
        assert_eq!(together.len(), ids.len());
        let describe = |d: &Option<learnsync::store::StoredDocument>| {
            d.as_ref().map(|d| {
                let mut states = d.sync_states.clone();
                states.sort();
                (d.owner_id == a, d.kind.clone(), d.chunks.clone(), states)
            })
        };
        for (id, got) in ids.iter().zip(&together) {
            let alone = store.load_document(id).await.unwrap();
            assert_eq!(describe(got), describe(&alone), "{id}");
        }
        assert!(together[1].is_none());
        assert_eq!(
            together[0].as_ref().unwrap().chunks,
            vec![vec![4; 3], vec![5; 3]]
        );
        assert_eq!(
            together[2].as_ref().unwrap().chunks,
            vec![vec![1; 3], vec![3; 3]]
        );
        assert_eq!(together[2].as_ref().unwrap().sync_states.len(), 2);
        assert!(store.load_documents(&[]).await.unwrap().is_empty());
    }
);
