//! `kill -9` of real server processes (GOALS.md R2, R4; issue 4's crash test).
//!
//! - **Crash loop**: devices stream changes into a `learnsync serve` process with compaction
//!   after every few changes; the process is killed with SIGKILL at a random moment, its
//!   storage is loaded document by document (each must load, every change a device saw
//!   acknowledged must be there), it restarts on the same database, the devices reconnect and
//!   resend what was not acknowledged, and everyone converges. `FAULT_ROUNDS` rounds (3 by
//!   default, 20 in the full run: `FAULT_ROUNDS=20 cargo nextest run -p e2e --test faults_crash`).
//! - **Instance loss**: three processes on one PostgreSQL database, each user's devices on
//!   different instances; one instance is killed mid-stream; its devices fail over to the
//!   others; all converge, nothing acknowledged is lost.

use std::time::Duration;

use e2e::db::{Backend, TestDb};
use e2e::device::Acknowledged;
use e2e::faults::{Writer, check_storage, rounds, wait_converged};
use e2e::process::{Account, ServerProcess};
use rand::Rng;

const WAIT: Duration = Duration::from_secs(60);

/// Compaction after 3 change rows, idle documents evicted after a second: kills land during
/// compactions and reloads too.
const STRESS_ENV: &[(&str, &str)] = &[
    ("LEARNSYNC_COMPACT_AFTER", "3"),
    ("LEARNSYNC_IDLE_EVICT_SECS", "1"),
    ("LEARNSYNC_MESSAGES_PER_SEC", "100000"),
];

/// Streams `steps` edits from every writer, yielding a random short while between them, so the
/// writes are in flight (received, being stored, being acknowledged) when the caller kills.
async fn stream(writers: &mut [Writer], steps: usize, rng: &mut impl Rng) {
    for _ in 0..steps {
        for w in writers.iter_mut() {
            w.step();
        }
        let pause = rng.random_range(0..4u64);
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Opens the database directly and checks every document of `users`.
async fn check_database(
    url: &str,
    users: &[&str],
    acknowledged: &[Acknowledged],
) -> (usize, usize) {
    let connected = learnsync::store::connect(url, 2, "faults-check")
        .await
        .expect("open the database the server used");
    let store = connected.store();
    check_storage(&*store, users, acknowledged).await
}

fn groups(writers: &[Writer]) -> Vec<Vec<&Writer>> {
    // Writers 2k and 2k+1 belong to user k.
    writers.chunks(2).map(|c| c.iter().collect()).collect()
}

async fn crash_loop(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut server = ServerProcess::start(db.url(), STRESS_ENV).await;
    let mut accounts = Vec::new();
    for i in 0..2 {
        accounts.push(Account::register(&server.base, &format!("crash{i}@example.test")).await);
    }
    let mut writers = Vec::new();
    for (n, account) in accounts.iter().flat_map(|a| [a, a]).enumerate() {
        let mut device = account.device(&server.base);
        device.connect().await;
        device.synced().await;
        writers.push(Writer::new(device, n));
    }
    let users: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let mut rng = rand::rng();
    let rounds = rounds(3);
    for round in 0..rounds {
        // A random moment: after a random number of edits, sometimes at once (the last ones
        // are in flight), sometimes a little later (being stored, compacted, acknowledged).
        let steps = rng.random_range(1..30);
        stream(&mut writers, steps, &mut rng).await;
        if round == 0 {
            // The first kill comes after some acknowledgement, so that the check below has
            // something to check. Killed at once after one edit, the server may not have
            // stored anything yet, and the round would pass without checking anything.
            writers[0].device.wait_acknowledged(WAIT).await;
        }
        let delay = rng.random_range(0..20u64);
        if delay > 10 {
            tokio::time::sleep(Duration::from_millis(delay - 10)).await;
        }
        server.kill9().await;
        for w in &writers {
            w.wait_offline(WAIT).await;
        }
        let acknowledged: Vec<Acknowledged> = writers.iter().map(Writer::acknowledged).collect();
        // Devices keep working offline.
        for w in writers.iter_mut() {
            w.step();
        }
        check_database(db.url(), &users, &acknowledged).await;

        server.restart().await;
        for w in writers.iter_mut() {
            w.device.move_to(&server.base);
            w.device.connect().await;
        }
        let started = std::time::Instant::now();
        wait_converged(&groups(&writers), WAIT).await;
        eprintln!(
            "{backend:?} round {}/{rounds}: killed after {steps} edits per device; converged {:?} after restart",
            round + 1,
            started.elapsed()
        );
    }
    // Everything every device wrote is stored now, not only what was acknowledged before a kill.
    let acknowledged: Vec<Acknowledged> = writers.iter().map(Writer::acknowledged).collect();
    server.kill9().await;
    let (docs, chunks) = check_database(db.url(), &users, &acknowledged).await;
    let changes: u64 = writers.iter().map(|w| w.count).sum();
    assert!(
        docs >= 4,
        "preferences and learning documents of two users: {docs}"
    );
    assert!(
        (chunks as u64) < changes,
        "compaction ran: {chunks} stored chunks for {changes} changes"
    );
    for w in &writers {
        assert_eq!(
            e2e::faults::values(w).get(&w.key),
            Some(&serde_json::json!(w.count)),
            "{} kept every edit",
            w.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_and_compaction_loses_nothing_acknowledged_sqlite() {
    crash_loop(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_and_compaction_loses_nothing_acknowledged_postgres() {
    crash_loop(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_instances_loses_nothing_and_its_devices_fail_over() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut servers = Vec::new();
    for i in 0..3 {
        let id = format!("instance-{i}");
        let mut env = STRESS_ENV.to_vec();
        env.push(("LEARNSYNC_INSTANCE_ID", &id));
        servers.push(ServerProcess::start(db.url(), &env).await);
    }
    // Three users, each with one device on instance k and one on instance k+1: the killed
    // instance (1) carries a device of users 0 and 1, and the other half of each pair lives on.
    let mut accounts = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        accounts.push(Account::register(&server.base, &format!("lost{i}@example.test")).await);
    }
    let mut writers = Vec::new();
    let mut home = Vec::new();
    for (k, account) in accounts.iter().enumerate() {
        for j in 0..2 {
            let instance = (k + j) % 3;
            let mut device = account.device(&servers[instance].base);
            device.connect().await;
            device.synced().await;
            writers.push(Writer::new(device, writers.len()));
            home.push(instance);
        }
    }
    // Changes cross instances (LISTEN/NOTIFY) before anything is killed.
    let mut rng = rand::rng();
    stream(&mut writers, 5, &mut rng).await;
    wait_converged(&groups(&writers), WAIT).await;

    stream(&mut writers, rng.random_range(5..30), &mut rng).await;
    servers[1].kill9().await;
    for (w, &h) in writers.iter().zip(&home) {
        if h == 1 {
            w.wait_offline(WAIT).await;
        }
    }
    let acknowledged: Vec<Acknowledged> = writers.iter().map(Writer::acknowledged).collect();
    // The devices of the dead instance keep editing offline, then fail over.
    stream(&mut writers, 3, &mut rng).await;
    for (i, (w, h)) in writers.iter_mut().zip(home.iter_mut()).enumerate() {
        if *h == 1 {
            *h = if i % 2 == 0 { 0 } else { 2 };
            w.device.move_to(&servers[*h].base);
            w.device.connect().await;
        }
    }
    stream(&mut writers, 3, &mut rng).await;
    wait_converged(&groups(&writers), WAIT).await;
    assert!(servers[0].is_running() && servers[2].is_running());

    let users: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    check_database(db.url(), &users, &acknowledged).await;
    let all: Vec<Acknowledged> = writers.iter().map(Writer::acknowledged).collect();
    check_database(db.url(), &users, &all).await;
    for w in &writers {
        assert_eq!(
            e2e::faults::values(w).get(&w.key),
            Some(&serde_json::json!(w.count)),
            "{} kept every edit",
            w.key
        );
    }
}
