//! Real-time sync against the real server (both backends): devices are `sync_core` clients over
//! real WebSockets.

use std::time::Duration;

use e2e::app::{Client as Http, TestApp};
use e2e::both_backends;
use e2e::db::Backend;
use e2e::device::{Credentials, Device, DocIds};
use futures_util::{SinkExt, StreamExt};
use learnsync::model::Role;
use serde_json::json;
use sync_core::DocumentId;
use sync_core::client::ClientEvent;
use sync_core::docs::{course, learning};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

fn now() -> i64 {
    learnsync::model::now_ms()
}

async fn doc_ids(user: &Http) -> DocIds {
    let r = user.get("/api/sync/documents").await;
    let body = r.ok(200);
    DocIds {
        preferences: DocumentId::parse(body["preferences"].as_str().unwrap()).unwrap(),
        learning: DocumentId::parse(body["learning"].as_str().unwrap()).unwrap(),
    }
}

async fn device(app: &TestApp, user: &Http) -> Device {
    let token = user.create_token("device").await;
    let mut d = Device::new(&app.base, Credentials::Bearer(token), doc_ids(user).await);
    d.connect().await;
    d.synced().await;
    d
}

fn enrolled(c: &sync_core::client::Client, course_id: &str) -> bool {
    c.enrollments()
        .unwrap()
        .iter()
        .any(|e| e.course_id == course_id && e.status == learning::Status::Active)
}

fn progress(c: &sync_core::client::Client, course_id: &str) -> Option<course::CourseProgress> {
    c.enrollments()
        .unwrap()
        .into_iter()
        .find(|e| e.course_id == course_id)
        .and_then(|e| e.progress)
}

both_backends!(
    two_devices_of_one_user_converge_in_real_time,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let anna = app.user(Role::Learner).await;
        let a = device(&app, &anna).await;
        let b = device(&app, &anna).await;

        a.edit(|c| {
            c.enroll("c1", now()).unwrap();
            c.set_preference("theme", &json!("dark"), now()).unwrap();
        });
        b.wait_for("enrollment and theme from device A", WAIT, |c| {
            enrolled(c, "c1") && c.preferences().unwrap().get("theme") == Some(&json!("dark"))
        })
        .await;
        b.edit(|c| {
            c.complete_lesson("c1", "l1", now()).unwrap();
            c.set_progress("c1", 40.0, now()).unwrap();
        });
        a.wait_for("progress from device B", WAIT, |c| {
            progress(c, "c1").is_some_and(|p| p.progress == 40.0)
        })
        .await;
        a.synced().await;
        b.synced().await;

        // The projection rows followed, in the same transactions.
        let enrollments = anna.get("/api/enrollments").await;
        let items = enrollments.ok(200)["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["course_id"], "c1");
        assert_eq!(items[0]["progress"], 40.0);
        assert_eq!(items[0]["completed_lessons"], json!(["l1"]));
        let prefs = anna.get("/api/preferences").await;
        assert_eq!(prefs.ok(200)["theme"], "dark");
    }
);

both_backends!(
    offline_edits_on_both_devices_merge_with_nothing_lost,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let anna = app.user(Role::Learner).await;
        let a = device(&app, &anna).await;
        let mut b = device(&app, &anna).await;
        a.edit(|c| c.enroll("c1", now()).unwrap());
        b.wait_for("enrollment", WAIT, |c| enrolled(c, "c1")).await;
        b.synced().await;

        b.disconnect().await;
        // Both edit while B is offline.
        a.edit(|c| {
            c.complete_lesson("c1", "l1", now()).unwrap();
            c.set_progress("c1", 40.0, now()).unwrap();
            c.add_time("c1", 100, now()).unwrap();
            c.set_preference("language", &json!("ru"), now()).unwrap();
        });
        b.edit(|c| {
            c.complete_lesson("c1", "l2", now()).unwrap();
            c.set_progress("c1", 70.0, now()).unwrap();
            c.add_time("c1", 50, now()).unwrap();
            c.enroll("c2", now()).unwrap();
        });
        a.synced().await;
        b.connect().await;
        for d in [&a, &b] {
            d.wait_for("merged state", WAIT, |c| {
                let p = progress(c, "c1");
                p.is_some_and(|p| {
                    p.progress == 70.0 && p.completed.len() == 2 && p.time_spent_secs == 150
                }) && enrolled(c, "c2")
                    && c.preferences().unwrap().get("language") == Some(&json!("ru"))
            })
            .await;
            d.synced().await;
        }
        let items = anna.get("/api/enrollments").await.ok(200)["items"].clone();
        let c1 = items
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["course_id"] == "c1")
            .unwrap()
            .clone();
        assert_eq!(c1["progress"], 70.0);
        assert_eq!(c1["time_spent_secs"], 150);
        assert_eq!(c1["completed_lessons"], json!(["l1", "l2"]));
    }
);

both_backends!(
    a_rest_write_reaches_connected_devices,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let teacher = app.user(Role::Teacher).await;
        teacher
        .post("/api/courses", &json!({"id": "algebra", "title": "Algebra", "status": "published", "lessons": [{"id": "l1", "title": "One"}]}))
        .await
        .ok(201);
        let anna = app.user(Role::Learner).await;
        let a = device(&app, &anna).await;

        let r = anna
            .patch(
                "/api/preferences",
                &json!({"theme": "dark", "settings": {"volume": 3}}),
            )
            .await;
        assert_eq!(r.ok(200)["theme"], "dark");
        a.wait_for("theme written through REST", WAIT, |c| {
            c.preferences().unwrap().get("theme") == Some(&json!("dark"))
        })
        .await;

        anna.post("/api/enrollments", &json!({"course_id": "algebra"}))
            .await
            .ok(201);
        a.wait_for("enrollment written through REST", WAIT, |c| {
            enrolled(c, "algebra")
        })
        .await;
        let r = anna
            .patch(
                "/api/enrollments/algebra",
                &json!({"progress": 50, "completed_lessons": ["l1"], "add_time_secs": 30}),
            )
            .await;
        assert_eq!(r.ok(200)["progress"], 50.0);
        a.wait_for("progress written through REST", WAIT, |c| {
            progress(c, "algebra").is_some_and(|p| p.progress == 50.0)
        })
        .await;
        // Progress never goes backwards, through REST either.
        anna.patch("/api/enrollments/algebra", &json!({"progress": 10}))
            .await
            .assert_error(409);
        // A device's change shows through REST.
        a.edit(|c| c.set_progress("algebra", 80.0, now()).unwrap());
        a.synced().await;
        assert_eq!(
            anna.get("/api/enrollments/algebra").await.ok(200)["progress"],
            80.0
        );
        // Unenroll keeps progress.
        anna.delete("/api/enrollments/algebra").await.ok(204);
        let e = anna.get("/api/enrollments/algebra").await;
        assert_eq!(e.ok(200)["status"], "unenrolled");
        assert_eq!(e.ok(200)["progress"], 80.0);
    }
);

both_backends!(
    users_cannot_reach_each_others_documents,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let anna = app.user(Role::Learner).await;
        let boris = app.user(Role::Learner).await;
        let a = device(&app, &anna).await;
        a.edit(|c| c.enroll("secret", now()).unwrap());
        a.synced().await;
        let anna_ids = doc_ids(&anna).await;

        // Boris's device asks for Anna's learning index by id: unavailable, nothing leaks.
        let token = boris.create_token("b").await;
        let mut b = Device::new(&app.base, Credentials::Bearer(token), anna_ids);
        b.connect().await;
        b.wait_for("doc-unavailable for Anna's documents", WAIT, |_| true)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = b.events();
        assert!(
            events.iter().any(
                |e| matches!(e, ClientEvent::Unavailable { doc } if *doc == anna_ids.learning)
            ),
            "{events:?}"
        );
        assert!(!enrolled(&b.client.lock().unwrap(), "secret"));
        // It writes into Anna's index; her stored documents and rows do not change.
        b.edit(|c| c.enroll("evil", now()).unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let items = anna.get("/api/enrollments").await.ok(200)["items"].clone();
        assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
        assert_eq!(items[0]["course_id"], "secret");
        a.synced().await;
        assert!(!enrolled(&a.client.lock().unwrap(), "evil"));
        b.disconnect().await;
    }
);

both_backends!(
    forced_sync_reaches_online_and_offline_devices,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let admin = app.user(Role::Admin).await;
        let anna = app.user(Role::Learner).await;
        let online = device(&app, &anna).await;
        let mut offline = device(&app, &anna).await;
        offline.disconnect().await;
        // Offline changes must survive the forced resync.
        offline.edit(|c| c.enroll("kept", now()).unwrap());

        let r = admin
            .post("/api/admin/sync", &json!({"user": anna.id()}))
            .await;
        assert_eq!(r.ok(200)["epoch"], 1);
        let deadline = tokio::time::Instant::now() + WAIT;
        while !online
            .events()
            .iter()
            .any(|e| matches!(e, ClientEvent::Resynced { .. }))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "online device never resynced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        offline.connect().await;
        offline
            .wait_for("resync on reconnect", WAIT, |c| c.epoch() == 1)
            .await;
        offline.synced().await;
        online
            .wait_for("offline change arrives", WAIT, |c| enrolled(c, "kept"))
            .await;
        // Audited.
        let logs = admin.get("/api/admin/logs?source=audit").await;
        assert!(
            logs.ok(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["message"] == "forced sync")
        );
        // A forced sync for everyone works too, and needs an admin.
        anna.post("/api/admin/sync", &json!({"user": "all"}))
            .await
            .assert_error(403);
        admin
            .post("/api/admin/sync", &json!({"user": "all"}))
            .await
            .ok(200);
        admin
            .post("/api/admin/sync", &json!({"user": "no-such-user"}))
            .await
            .assert_error(404);
        let devices = admin.get("/api/admin/devices").await;
        assert!(
            devices
                .ok(200)
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["user_id"] == anna.id())
        );
    }
);

/// Raw WebSocket helpers for abuse tests.
async fn raw_socket(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "{}/sync?token={token}",
        app.base.replacen("http://", "ws://", 1)
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn expect_error_and_close(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    let mut error = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("server answers in time");
        match next {
            Some(Ok(Message::Binary(b))) => {
                if let Ok(sync_core::wire::Message::Error(e)) = sync_core::wire::decode(&b) {
                    error = Some(e.message);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    error.expect("an error message before the close")
}

fn join_frame(peer: &str) -> Vec<u8> {
    sync_core::wire::encode(&sync_core::wire::Message::Join(sync_core::wire::Join {
        sender_id: peer.into(),
        peer_metadata: None,
        supported_protocol_versions: Some(vec!["1".into()]),
    }))
}

both_backends!(
    bad_peers_get_an_error_and_a_close_and_others_keep_syncing,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.max_message_bytes = 64 * 1024;
            c.messages_per_sec = 20;
        })
        .await;
        let anna = app.user(Role::Learner).await;
        let good = device(&app, &anna).await;
        let token = anna.create_token("raw").await;

        // Garbage bytes.
        let mut ws = raw_socket(&app, &token).await;
        ws.send(Message::Binary(vec![0xff, 0x00, 0x13].into()))
            .await
            .unwrap();
        assert!(expect_error_and_close(&mut ws).await.contains("malformed"));
        // A text frame.
        let mut ws = raw_socket(&app, &token).await;
        ws.send(Message::Text("hello".into())).await.unwrap();
        assert!(expect_error_and_close(&mut ws).await.contains("text"));
        // An unsupported protocol version.
        let mut ws = raw_socket(&app, &token).await;
        let join =
            sync_core::wire::encode(&sync_core::wire::Message::Join(sync_core::wire::Join {
                sender_id: "p".into(),
                peer_metadata: None,
                supported_protocol_versions: Some(vec!["99".into()]),
            }));
        ws.send(Message::Binary(join.into())).await.unwrap();
        assert!(
            expect_error_and_close(&mut ws)
                .await
                .contains("protocol version")
        );
        // A huge frame.
        let mut ws = raw_socket(&app, &token).await;
        ws.send(Message::Binary(join_frame("big").into()))
            .await
            .unwrap();
        let _ = ws.send(Message::Binary(vec![0u8; 200 * 1024].into())).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
        // A flood.
        let mut ws = raw_socket(&app, &token).await;
        ws.send(Message::Binary(join_frame("flood").into()))
            .await
            .unwrap();
        for _ in 0..500 {
            if ws
                .send(Message::Binary(join_frame("flood").into()))
                .await
                .is_err()
            {
                break;
            }
        }
        assert!(expect_error_and_close(&mut ws).await.contains("rate limit"));
        // No credentials at all: refused before the upgrade.
        let url = format!("{}/sync", app.base.replacen("http://", "ws://", 1));
        assert!(tokio_tungstenite::connect_async(url).await.is_err());

        // The well-behaved device was never disturbed.
        good.edit(|c| c.enroll("still-works", now()).unwrap());
        good.synced().await;
        let items = anna.get("/api/enrollments").await.ok(200)["items"].clone();
        assert_eq!(items[0]["course_id"], "still-works");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_fan_out_in_real_time() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let mut config = learnsync::Config::for_tests(first.database_url());
    config.instance_id = Some("second".into());
    let second = learnsync::Application::build(config)
        .await
        .expect("second instance starts");
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let stop_second = second.shutdown_token();
    let server = tokio::spawn(second.run_until_stopped());

    let anna = first.user(Role::Learner).await;
    let ids = doc_ids(&anna).await;
    let token = anna.create_token("one").await;
    let mut on_first = Device::new(&first.base, Credentials::Bearer(token.clone()), ids);
    on_first.connect().await;
    let mut on_second = Device::new(&second_base, Credentials::Bearer(token), ids);
    on_second.connect().await;
    on_first.synced().await;
    on_second.synced().await;

    on_first.edit(|c| c.enroll("c1", now()).unwrap());
    on_second
        .wait_for("change from the other instance", WAIT, |c| {
            enrolled(c, "c1")
        })
        .await;
    on_second.edit(|c| c.set_preference("theme", &json!("light"), now()).unwrap());
    on_first
        .wait_for("change back", WAIT, |c| {
            c.preferences().unwrap().get("theme") == Some(&json!("light"))
        })
        .await;
    // A burst, which group commits gather into notifications of several changes each, and a
    // change too large to ride in a notification (the other instance reads it back by number).
    for n in 0..30 {
        on_first.edit(|c| c.set_preference("n", &json!(n), now()).unwrap());
    }
    // Four values of 4,000 characters that do not compress (automerge deflates large changes):
    // one change of over 10 KB, past what a notification carries.
    let mut seed = 0x2545_f491_u64;
    let big: Vec<String> = (0..4)
        .map(|_| {
            (0..4_000)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    char::from_digit(((seed >> 33) % 36) as u32, 36).unwrap()
                })
                .collect()
        })
        .collect();
    on_first.edit(|c| {
        for (i, value) in big.iter().enumerate() {
            c.set_preference(&format!("big{i}"), &json!(value), now())
                .unwrap();
        }
    });
    on_second
        .wait_for(
            "a burst and a large change from the other instance",
            WAIT,
            |c| {
                let prefs = c.preferences().unwrap();
                prefs.get("n") == Some(&json!(29))
                    && (0..4).all(|i| prefs.get(&format!("big{i}")) == Some(&json!(big[i])))
            },
        )
        .await;
    stop_second.cancel();
    let _ = server.await;
}
