//! Hostile peers on the raw WebSocket (GOALS.md R5, R6), next to a user whose two devices keep
//! syncing through all of it. `sync.rs` already covers garbage bytes, text frames, an unknown
//! protocol version, a frame over the size limit and a flood after the handshake; this file
//! covers the rest:
//!
//! - automerge bytes that are not a sync message, inside a well-formed `sync` → `error` + close;
//! - oversized frames and garbage *before* the handshake → `error` + close;
//! - messages before `join` and messages with another peer's `senderId` → dropped, nothing
//!   stored, the connection is not trusted with them;
//! - `request`s and `sync`s with changes for another user's documents → `doc-unavailable`
//!   (exactly what a document that does not exist gets, so ids cannot be probed), nothing stored;
//! - half-open connections: TCP connections that never send a byte, an HTTP upgrade that never
//!   finishes, a WebSocket that joins and then stops reading → the server drops them and the
//!   other devices do not notice.

use std::time::Duration;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use e2e::app::TestApp;
use e2e::both_backends;
use e2e::db::Backend;
use e2e::device::{Credentials, Device, DocIds};
use futures_util::{SinkExt, StreamExt};
use learnsync::model::Role;
use serde_json::json;
use sync_core::DocumentId;
use sync_core::wire::{self, DocMessage, Join, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn now() -> i64 {
    learnsync::model::now_ms()
}

async fn doc_ids(user: &e2e::app::Client) -> DocIds {
    let body = user.get("/api/sync/documents").await.ok(200).clone();
    DocIds {
        preferences: DocumentId::parse(body["preferences"].as_str().unwrap()).unwrap(),
        learning: DocumentId::parse(body["learning"].as_str().unwrap()).unwrap(),
    }
}

/// Two devices of one user that must keep syncing whatever the others do.
struct Bystanders {
    a: Device,
    b: Device,
    n: u64,
}

impl Bystanders {
    async fn new(app: &TestApp) -> Bystanders {
        let user = app.user(Role::Learner).await;
        let ids = doc_ids(&user).await;
        let mut a = Device::new(
            &app.base,
            Credentials::Bearer(user.create_token("a").await),
            ids,
        );
        let mut b = Device::new(
            &app.base,
            Credentials::Bearer(user.create_token("b").await),
            ids,
        );
        a.connect().await;
        b.connect().await;
        a.synced().await;
        b.synced().await;
        Bystanders { a, b, n: 0 }
    }

    /// A change on one device reaches the other, through the server, after `what`.
    async fn still_sync(&mut self, what: &str) {
        self.n += 1;
        let n = self.n;
        let (from, to) = if n.is_multiple_of(2) {
            (&self.a, &self.b)
        } else {
            (&self.b, &self.a)
        };
        from.edit(|c| c.set_preference("abuse", &json!(n), now()).unwrap());
        to.wait_for(
            &format!("a change from the other device after {what}"),
            WAIT,
            |c| c.preferences().unwrap().get("abuse") == Some(&json!(n)),
        )
        .await;
        from.synced().await;
    }
}

async fn raw_socket(app: &TestApp, token: &str) -> Ws {
    let url = format!(
        "{}/sync?token={token}",
        app.base.replacen("http://", "ws://", 1)
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

fn join(peer: &str) -> Vec<u8> {
    wire::encode(&Message::Join(Join {
        sender_id: peer.into(),
        peer_metadata: None,
        supported_protocol_versions: Some(vec!["1".into()]),
    }))
}

fn sync_frame(sender: &str, doc: DocumentId, data: Vec<u8>, request: bool) -> Vec<u8> {
    let m = DocMessage {
        sender_id: sender.into(),
        target_id: "server".into(),
        document_id: doc,
        data,
    };
    wire::encode(&if request {
        Message::Request(m)
    } else {
        Message::Sync(m)
    })
}

/// A valid automerge sync message carrying one change that writes `key`.
fn change_message(key: &str) -> Vec<u8> {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, key, "written by someone else").unwrap();
    let mut state = automerge::sync::State::new();
    doc.sync()
        .generate_sync_message(&mut state)
        .expect("a sync message")
        .encode()
}

/// Joins and waits for the server's `peer` answer.
async fn joined(app: &TestApp, token: &str, peer: &str) -> Ws {
    let mut ws = raw_socket(app, token).await;
    ws.send(WsMessage::Binary(join(peer).into())).await.unwrap();
    loop {
        match next_message(&mut ws).await {
            Some(Message::Peer(_)) => return ws,
            Some(_) => {}
            None => panic!("closed before the handshake finished"),
        }
    }
}

/// The next protocol message, or `None` once the connection is closed.
async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server answers in time")
        {
            Some(Ok(WsMessage::Binary(b))) => {
                return Some(wire::decode(&b).expect("the server sends valid frames"));
            }
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the server closes; returns the `error` message it sent first.
async fn error_then_close(ws: &mut Ws) -> String {
    let mut error = None;
    while let Some(m) = next_message(ws).await {
        if let Message::Error(e) = m {
            error = Some(e.message);
        }
    }
    error.expect("an error message before the close")
}

/// Reads what the server says about `doc` until it says `doc-unavailable` (or panics).
async fn unavailable(ws: &mut Ws, doc: DocumentId) {
    loop {
        match next_message(ws).await {
            Some(Message::DocUnavailable(u)) if u.document_id == doc => return,
            Some(Message::Sync(m)) if m.document_id == doc => {
                panic!("the server sent another user's document")
            }
            Some(Message::Error(e)) => panic!("unexpected error: {}", e.message),
            Some(_) => {}
            None => panic!("closed instead of doc-unavailable"),
        }
    }
}

/// The number of sync connections `/readyz` reports.
async fn connections(app: &TestApp) -> u64 {
    let r = app.anonymous().get("/readyz").await;
    r.ok(200)["connections"].as_u64().expect("connections")
}

both_backends!(
    automerge_garbage_and_other_users_documents,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.max_message_bytes = 64 * 1024).await;
        let mut good = Bystanders::new(&app).await;
        let victim = app.user(Role::Learner).await;
        let victim_ids = doc_ids(&victim).await;
        let v = Device::new(
            &app.base,
            Credentials::Bearer(victim.create_token("v").await),
            victim_ids,
        );
        let mut v = v;
        v.connect().await;
        v.edit(|c| c.enroll("private", now()).unwrap());
        v.synced().await;
        v.disconnect().await;
        let stored_before = app
            .state
            .store
            .load_document(&victim_ids.learning.to_string())
            .await
            .unwrap()
            .expect("the victim's index is stored")
            .chunks;

        let course_before = app
            .state
            .store
            .load_document(&DocumentId::course(&victim_ids.learning, "private").to_string())
            .await
            .unwrap()
            .map(|d| d.chunks);
        let mallory = app.user(Role::Learner).await;
        let mallory_ids = doc_ids(&mallory).await;
        let token = mallory.create_token("raw").await;

        // Not an automerge sync message, inside a well-formed `sync` for its own document.
        let mut ws = joined(&app, &token, "m1").await;
        // A sync message whose bloom filter claims an entry but has no bits: automerge 0.12
        // divides by zero on it when it answers (found by the hub_sync fuzz target).
        let poisoned_bloom = vec![0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];
        for (i, data) in [
            vec![0x42, 0xff, 0xff, 0xff],
            vec![],
            b"hello".to_vec(),
            poisoned_bloom,
        ]
        .into_iter()
        .enumerate()
        {
            let peer = format!("m1-{i}");
            let mut ws2 = joined(&app, &token, &peer).await;
            ws2.send(WsMessage::Binary(
                sync_frame(&peer, mallory_ids.learning, data, false).into(),
            ))
            .await
            .unwrap();
            let e = error_then_close(&mut ws2).await;
            assert!(e.contains("invalid sync message"), "{e}");
            if i == 3 {
                assert!(e.contains("bloom filter"), "{e}");
            }
        }
        good.still_sync("automerge garbage").await;

        // Every kind of another user's document (preferences, learning index, a course), asked
        // for and written to, by a learner and by a teacher: doc-unavailable every time.
        let victim_course = DocumentId::course(&victim_ids.learning, "private");
        let teacher = app.user(Role::Teacher).await;
        let mut teacher_ws = joined(&app, &teacher.create_token("raw").await, "t1").await;
        for (ws, peer) in [(&mut ws, "m1"), (&mut teacher_ws, "t1")] {
            for doc in [victim_ids.preferences, victim_ids.learning, victim_course] {
                ws.send(WsMessage::Binary(
                    sync_frame(peer, doc, empty_sync(), true).into(),
                ))
                .await
                .unwrap();
                unavailable(ws, doc).await;
                ws.send(WsMessage::Binary(
                    sync_frame(peer, doc, change_message("evil"), false).into(),
                ))
                .await
                .unwrap();
                unavailable(ws, doc).await;
            }
        }
        // A message claiming to come from another peer is dropped; one before `join` too.
        ws.send(WsMessage::Binary(
            sync_frame(
                "someone-else",
                mallory_ids.preferences,
                change_message("spoofed"),
                false,
            )
            .into(),
        ))
        .await
        .unwrap();
        let mut early = raw_socket(&app, &token).await;
        early
            .send(WsMessage::Binary(
                sync_frame(
                    "m2",
                    mallory_ids.preferences,
                    change_message("early"),
                    false,
                )
                .into(),
            ))
            .await
            .unwrap();
        // The connection stays usable: its own document still syncs.
        ws.send(WsMessage::Binary(
            sync_frame("m1", mallory_ids.preferences, empty_sync(), true).into(),
        ))
        .await
        .unwrap();
        loop {
            match next_message(&mut ws).await {
                Some(Message::Sync(m)) if m.document_id == mallory_ids.preferences => break,
                Some(Message::DocUnavailable(m)) if m.document_id == mallory_ids.preferences => {
                    break;
                }
                Some(Message::Error(e)) => panic!("unexpected error: {}", e.message),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        good.still_sync("requests for another user's documents")
            .await;

        // Nothing of it was stored: the victim's documents are byte for byte what they were,
        // Mallory's preferences hold neither the spoofed nor the early write.
        let stored_after = app
            .state
            .store
            .load_document(&victim_ids.learning.to_string())
            .await
            .unwrap()
            .unwrap()
            .chunks;
        assert_eq!(stored_before, stored_after);
        assert_eq!(
            course_before,
            app.state
                .store
                .load_document(&victim_course.to_string())
                .await
                .unwrap()
                .map(|d| d.chunks)
        );
        let prefs = app
            .state
            .store
            .load_document(&victim_ids.preferences.to_string())
            .await
            .unwrap();
        if let Some(p) = prefs {
            let mut doc = AutoCommit::new();
            for chunk in &p.chunks {
                doc.load_incremental(chunk).unwrap();
            }
            assert!(
                automerge::ReadDoc::get(&doc, ROOT, "evil")
                    .unwrap()
                    .is_none()
            );
        }
        if let Some(p) = app
            .state
            .store
            .load_document(&mallory_ids.preferences.to_string())
            .await
            .unwrap()
        {
            let mut doc = AutoCommit::new();
            for chunk in &p.chunks {
                doc.load_incremental(chunk).unwrap();
            }
            for key in ["spoofed", "early"] {
                assert!(automerge::ReadDoc::get(&doc, ROOT, key).unwrap().is_none());
            }
        }
        assert_eq!(
            victim.get("/api/enrollments").await.ok(200)["items"][0]["course_id"],
            "private"
        );
        drop(early);

        // Oversized and garbage frames before the handshake.
        let mut ws = raw_socket(&app, &token).await;
        let _ = ws
            .send(WsMessage::Binary(vec![7u8; 100 * 1024].into()))
            .await;
        let mut closed = false;
        while let Ok(Some(m)) = tokio::time::timeout(WAIT, ws.next()).await {
            if matches!(m, Ok(WsMessage::Close(_)) | Err(_)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "an oversized frame closes the connection");
        let mut ws = raw_socket(&app, &token).await;
        ws.send(WsMessage::Binary(vec![0xa1, 0x00].into()))
            .await
            .unwrap();
        assert!(error_then_close(&mut ws).await.contains("malformed"));
        good.still_sync("frames before the handshake").await;
    }
);

/// An empty automerge sync message (heads and wants only), as a peer sends to ask.
fn empty_sync() -> Vec<u8> {
    let mut doc = AutoCommit::new();
    let mut state = automerge::sync::State::new();
    doc.sync()
        .generate_sync_message(&mut state)
        .expect("a sync message")
        .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_dropped_and_others_unaffected() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.idle_connection_secs = 3).await;
    let mut good = Bystanders::new(&app).await;
    let baseline = connections(&app).await;
    assert_eq!(baseline, 2);
    let user = app.user(Role::Learner).await;
    let token = user.create_token("half-open").await;

    // TCP connections that never send a byte, and one that stops in the middle of the upgrade.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(("127.0.0.1", app.port)).await.unwrap());
    }
    let mut partial = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    partial
        .write_all(b"GET /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    silent.push(partial);
    // A WebSocket that joins and then never reads again (so it answers no ping).
    let deaf = joined(&app, &token, "deaf").await;
    // Registered just after the `peer` answer went out.
    let deadline = tokio::time::Instant::now() + WAIT;
    while connections(&app).await != baseline + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the joined socket is never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    good.still_sync("half-open connections").await;

    // The deaf socket is dropped by the keepalive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while connections(&app).await > baseline {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a peer that answers no ping is never dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(deaf);
    // The silent TCP connections are closed by the server (read returns end of file or an
    // error), not kept forever.
    for (i, mut s) in silent.into_iter().enumerate() {
        let mut buf = [0u8; 1024];
        let r = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "half-open connection {i} was never closed");
    }
    good.still_sync("the half-open connections were dropped")
        .await;
}
