//! Interop: the official JavaScript clients (`@automerge/automerge-repo` and
//! `@automerge/automerge-repo-network-websocket` 2.5.6 from npm, on Node) sync through the real
//! server, including a document created on one client and found at once on another; and
//! another user's client cannot read it.

use std::time::Duration;

use e2e::app::TestApp;
use e2e::both_backends;
use e2e::js::NodeCommand;
use learnsync::model::Role;

const WAIT: Duration = Duration::from_secs(60);

both_backends!(
    official_js_clients_sync_through_the_server,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let anna = app.user(Role::Learner).await;
        let ws = app.base.replacen("http://", "ws://", 1);
        let a = format!("{ws}/sync?token={}", anna.create_token("js-a").await);
        let b = format!("{ws}/sync?token={}", anna.create_token("js-b").await);
        let mut node = NodeCommand::new("interop.mjs")
            .arg(&a)
            .arg(&b)
            .spawn()
            .expect("node starts");
        let found = node
            .recv_type("found", WAIT)
            .await
            .expect("B finds A's new document at once");
        assert_eq!(found["title"], "shared");
        let converged = node
            .recv_type("converged", WAIT)
            .await
            .expect("both edits arrive");
        assert_eq!(converged["a"], converged["b"]);
        assert_eq!(converged["a"]["title"], "edited by B");
        assert_eq!(
            converged["a"]["items"],
            serde_json::json!(["from A", "from B"])
        );
        let unavailable = node
            .recv_type("unavailable", WAIT)
            .await
            .expect("unknown document");
        assert_eq!(unavailable["unavailable"], true);
        node.finish(WAIT).await.expect("script exits cleanly");

        // The document Anna's clients created belongs to her: another user's official client is
        // told it is unavailable.
        let url = found["url"].as_str().unwrap().to_string();
        let boris = app.user(Role::Learner).await;
        let b2 = format!("{ws}/sync?token={}", boris.create_token("js").await);
        let mut node = NodeCommand::new("interop_find.mjs")
            .arg(&b2)
            .arg(&url)
            .spawn()
            .expect("node starts");
        let r = node.recv_type("result", WAIT).await.expect("result");
        assert_eq!(r["found"], false, "{r}");
        assert_eq!(r["unavailable"], true, "{r}");
        node.finish(WAIT).await.expect("script exits cleanly");
    }
);
