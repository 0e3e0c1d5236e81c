//! PostgreSQL goes away under a running server (GOALS.md R3).
//!
//! The test runs its own PostgreSQL cluster (`e2e::pg_cluster`) so it may stop it: the server
//! stays up, `/readyz` says `degraded`, devices are told (a `learnsync-status` frame) and keep
//! editing offline-style, nothing written during the outage is acknowledged, and once
//! PostgreSQL is back everything converges and is stored.
//!
//! The outage lasts `FAULT_OUTAGE_SECS` (3 s by default; the full run is 30 s:
//! `FAULT_OUTAGE_SECS=30 cargo nextest run -p e2e --test faults_outage`).

use std::collections::BTreeSet;
use std::time::Duration;

use automerge::ChangeHash;
use e2e::device::Acknowledged;
use e2e::faults::{Writer, check_storage, wait_converged};
use e2e::pg_cluster::PgCluster;
use e2e::process::{Account, ServerProcess};
use serde_json::Value;
use sync_core::client::ClientEvent;

const WAIT: Duration = Duration::from_secs(60);

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    )
}

async fn readyz(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("the server answers /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_readyz(base: &str, want: u16, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = readyz(base).await;
        if code == want && body["status"] == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said {want} {status}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_events(w: &Writer) -> Vec<bool> {
    w.device
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ServerStatus { ok, .. } => Some(ok),
            _ => None,
        })
        .collect()
}

async fn wait_status(w: &Writer, ok: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while status_events(w).last() != Some(&ok) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was never told the server is {}: {:?}",
            w.key,
            if ok { "ok" } else { "degraded" },
            w.device.events()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every head of every document on a device: after an edit, the new ones are that edit.
fn all_heads(w: &Writer) -> BTreeSet<ChangeHash> {
    let c = w.device.client.lock().unwrap();
    c.documents()
        .iter()
        .filter_map(|d| c.document(d))
        .flat_map(|d| d.clone().get_heads())
        .collect()
}

fn acked_hashes(acks: &Acknowledged) -> BTreeSet<ChangeHash> {
    acks.values().flatten().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_degrades_acknowledges_nothing_and_loses_nothing() {
    let pg = PgCluster::start();
    let mut server = ServerProcess::start(&pg.url(), &[("LEARNSYNC_COMPACT_AFTER", "4")]).await;
    let anna = Account::register(&server.base, "anna@example.test").await;
    let mut writers = Vec::new();
    for n in 0..2 {
        let mut device = anna.device(&server.base);
        device.connect().await;
        device.synced().await;
        writers.push(Writer::new(device, n));
    }
    for _ in 0..5 {
        for w in writers.iter_mut() {
            w.step();
        }
    }
    wait_converged(&[writers.iter().collect()], WAIT).await;
    wait_readyz(&server.base, 200, "ok").await;

    pg.stop();
    let body = wait_readyz(&server.base, 503, "degraded").await;
    assert_eq!(body["database"], "unreachable");
    for w in &writers {
        wait_status(w, false).await;
    }
    // Edits during the outage: each one's hash is remembered; none may be acknowledged.
    let mut unstored = BTreeSet::new();
    let until = tokio::time::Instant::now() + outage();
    let mut edits = 0;
    while tokio::time::Instant::now() < until {
        for w in writers.iter_mut() {
            let before = all_heads(w);
            w.step();
            unstored.extend(all_heads(w).difference(&before).copied());
        }
        edits += 1;
        // The server stays up and answers; REST writes are refused, not half-done.
        let http = reqwest::Client::new();
        let r = http
            .patch(format!("{}/api/preferences", server.base))
            .bearer_auth(&anna.token)
            .json(&serde_json::json!({ "theme": "dark" }))
            .send()
            .await
            .expect("the server answers during the outage");
        assert_eq!(
            r.status().as_u16(),
            503,
            "a write that cannot be stored: {}",
            r.text().await.unwrap_or_default()
        );
        assert!(server.is_running(), "the server died during the outage");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in &writers {
        let acked = acked_hashes(&w.acknowledged());
        let wrongly: Vec<_> = acked.intersection(&unstored).collect();
        assert!(
            wrongly.is_empty(),
            "{}: changes acknowledged while the database was down: {wrongly:?}",
            w.key
        );
    }
    // The other device may hold them already (the server forwards a change before its write
    // commits, and a copy on another device only adds to its durability); what it must not get
    // is an acknowledgement of its own changes, checked above for every writer.
    assert!(edits > 0);

    pg.resume();
    wait_readyz(&server.base, 200, "ok").await;
    for w in &writers {
        wait_status(w, true).await;
    }
    wait_converged(&[writers.iter().collect()], WAIT).await;
    let acknowledged: Vec<Acknowledged> = writers.iter().map(Writer::acknowledged).collect();
    for w in &writers {
        assert!(
            unstored
                .iter()
                .any(|h| acked_hashes(&w.acknowledged()).contains(h)),
            "{}: the outage edits are acknowledged once stored",
            w.key
        );
    }
    server.kill9().await;
    let connected = learnsync::store::connect(&pg.url(), 2, "outage-check")
        .await
        .unwrap();
    check_storage(&*connected.store(), &[&anna.id], &acknowledged).await;
    // And the projection followed: the REST view has every device's last count.
    server.restart().await;
    let prefs: Value = reqwest::Client::new()
        .get(format!("{}/api/preferences", server.base))
        .bearer_auth(&anna.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for w in &writers {
        assert_eq!(
            prefs["settings"][&w.key],
            serde_json::json!(w.count),
            "{prefs}"
        );
    }
}
