//! The browser client under Node (`client-wasm/pkg-node` + `client-wasm/js/learnsync.js`)
//! against the real server: two clients of one user converge, and what they converged on is what
//! the server's REST API reports. The same run checks the offline-first paths that need no
//! browser: a restart with the server unreachable shows the stored state, an edit made then
//! reaches the other client later, corrupt stored bytes are reported and fetched again, and a
//! full storage is reported while sync goes on, and a forced sync keeps an offline device's
//! change (`tests/js/client_converge.mjs`).

use std::time::Duration;

use e2e::app::TestApp;
use e2e::db::Backend;
use e2e::js::{NodeCommand, workspace_root};
use e2e::wasm_pkg::package;
use learnsync::model::Role;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_clients_of_one_user_converge_through_the_server() {
    let root = workspace_root();
    let pkg = package("pkg-node");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let anna = app.user(Role::Learner).await;
    let token = anna.create_token("node client").await;
    // A port nothing listens on: the "server down" of the offline restart.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let mut node = NodeCommand::new("client_converge.mjs")
        .arg(&pkg)
        .arg(root.join("client-wasm/js/learnsync.js"))
        .arg(&app.base)
        .arg(&token)
        .arg(&dead)
        .spawn()
        .unwrap();

    let converged = node.recv_type("converged", WAIT).await.unwrap();
    for side in ["a", "b"] {
        let prefs = &converged[side]["preferences"];
        assert_eq!(prefs["theme"], json!("dark"), "{converged}");
        assert_eq!(prefs["language"], json!("de"), "{converged}");
        assert_eq!(prefs["fontSize"], json!(18), "{converged}");
        let courses: Vec<&str> = converged[side]["enrollments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["courseId"].as_str().unwrap())
            .collect();
        assert_eq!(courses, ["c1", "c2"], "{converged}");
    }
    assert_eq!(converged["a"], converged["b"], "the two clients differ");
    assert_eq!(converged["remoteChangeSeen"], json!(true), "{converged}");
    assert_eq!(converged["flushed"], json!([true, true]), "{converged}");
    let statuses = converged["statuses"].as_array().unwrap();
    assert!(
        statuses.contains(&json!("connecting")) && statuses.contains(&json!("synced")),
        "{converged}"
    );

    // The server has what the clients converged on.
    let prefs = anna.get("/api/preferences").await;
    let prefs = prefs.ok(200);
    assert_eq!(prefs["theme"], "dark", "{prefs}");
    assert_eq!(prefs["language"], "de", "{prefs}");
    let enrollments = anna.get("/api/enrollments").await;
    let items = enrollments.ok(200)["items"].as_array().unwrap().clone();
    let c1 = items.iter().find(|e| e["course_id"] == "c1").unwrap();
    let c2 = items.iter().find(|e| e["course_id"] == "c2").unwrap();
    assert_eq!(c1["completed_lessons"], json!(["l1"]));
    assert_eq!(c1["progress"], 50.0);
    assert_eq!(c2["time_spent_secs"], 30);

    // Restarted with the server unreachable: the stored state.
    let offline = node.recv_type("offline", WAIT).await.unwrap();
    assert_ne!(offline["status"], json!("synced"), "{offline}");
    assert_eq!(offline["preferences"], converged["a"]["preferences"]);
    assert_eq!(offline["enrollments"], converged["a"]["enrollments"]);

    let corrupt = node.recv_type("corrupt", WAIT).await.unwrap();
    let errors = corrupt["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e == "corrupt"),
        "{corrupt}"
    );
    assert_eq!(corrupt["preferences"]["theme"], json!("dark"), "{corrupt}");
    assert_eq!(corrupt["courses"], json!(["c1", "c2"]), "{corrupt}");

    let quota = node.recv_type("quota", WAIT).await.unwrap();
    assert!(
        quota["errors"]
            .as_array()
            .unwrap()
            .contains(&json!("quota")),
        "{quota}"
    );

    // A forced sync of the user (an admin asks).
    node.recv_type("await-force", WAIT).await.unwrap();
    let admin = app.user(Role::Admin).await;
    let forced = admin
        .post("/api/admin/sync", &json!({ "user": anna.id() }))
        .await;
    let forced = forced.ok(200);
    assert_eq!(forced["epoch"], 1, "{forced}");
    node.send(&json!({ "type": "forced" })).await.unwrap();
    let resynced = node.recv_type("resynced", WAIT).await.unwrap();
    assert_eq!(resynced["epochs"], json!(["1", "1"]), "{resynced}");
    assert_eq!(
        resynced["courses"],
        json!(["c1", "c2", "kept-offline"]),
        "{resynced}"
    );
    node.finish(WAIT).await.unwrap();

    // The offline edit (lesson l2) and the full-storage device's theme reached the server.
    let enrollments = anna.get("/api/enrollments").await;
    let items = enrollments.ok(200)["items"].as_array().unwrap().clone();
    let c1 = items.iter().find(|e| e["course_id"] == "c1").unwrap();
    assert_eq!(c1["completed_lessons"], json!(["l1", "l2"]), "{c1}");
    let prefs = anna.get("/api/preferences").await;
    assert_eq!(prefs.ok(200)["theme"], "light");
}
