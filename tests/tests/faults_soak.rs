//! Soak: mixed load on a real server process (sync with connection churn, REST reads and
//! writes, legacy imports through the admin upload) for `SOAK_SECS` seconds, sampling the
//! server's resident memory, open file descriptors and sync connections.
//!
//! In the suite it runs 15 s and checks what can be checked on contents: no 5xx, every device
//! converges with nothing lost, the connection count is exactly the connected devices, and it
//! returns to zero (and the descriptors to their baseline) once they leave. The documented
//! 10-minute run (figures in BENCHMARKS.md) also checks that memory stays flat:
//! `SOAK_SECS=600 cargo nextest run -p e2e --test faults_soak --no-capture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::db::{Backend, TestDb};
use e2e::faults::{Writer, converged, wait_converged};
use e2e::process::{Account, ServerProcess};
use learnsync::model::Role;
use learnsync::store::UserPatch;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const USERS: usize = 10;

fn soak_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_secs: f64,
    rss_kib: u64,
    fds: usize,
    connections: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn connections(base: &str) -> u64 {
    let body: Value = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    body["connections"].as_u64().expect("connections")
}

async fn sample(base: &str, pid: u32, started: Instant) -> Sample {
    Sample {
        at_secs: started.elapsed().as_secs_f64(),
        rss_kib: rss_kib(pid),
        fds: fds(pid),
        connections: connections(base).await,
    }
}

async fn wait_connections(base: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = connections(base).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} sync connections, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reconnects devices the server closed (as too slow, under load) until every user's devices
/// have converged with everything acknowledged; a final check panics with their state.
async fn settle(writers: &mut [Writer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for w in writers.iter_mut().filter(|w| w.is_offline()) {
            w.device.connect().await;
        }
        let groups: Vec<Vec<&Writer>> = writers.chunks(2).map(|c| c.iter().collect()).collect();
        if converged(&groups) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let groups: Vec<Vec<&Writer>> = writers.chunks(2).map(|c| c.iter().collect()).collect();
    wait_converged(&groups, Duration::from_secs(1)).await;
}

/// `USERS` new learners with two connected, synced devices each.
async fn cohort(base: &str, generation: usize) -> (Vec<Account>, Vec<Writer>) {
    let mut accounts = Vec::new();
    let mut writers = Vec::new();
    for u in 0..USERS {
        let a = Account::register(base, &format!("soak{generation}-{u}@example.test")).await;
        for _ in 0..2 {
            let mut d = a.device(base);
            d.connect().await;
            d.synced().await;
            writers.push(Writer::new(d, writers.len()));
        }
        accounts.push(a);
    }
    (accounts, writers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_keeps_memory_and_connections_flat() {
    let secs = soak_secs();
    let db = TestDb::new(Backend::Postgres).await;
    let server = ServerProcess::start(
        db.url(),
        &[
            ("LEARNSYNC_MESSAGES_PER_SEC", "100000"),
            ("LEARNSYNC_IDLE_EVICT_SECS", "5"),
        ],
    )
    .await;
    let pid = server.pid().expect("running");
    let base = server.base.clone();

    // An admin (imports, courses) and USERS learners with two devices each.
    let admin = Account::register(&base, "soak-admin@example.test").await;
    {
        let connected = learnsync::store::connect(db.url(), 1, "soak")
            .await
            .unwrap();
        connected
            .store()
            .update_user(
                &admin.id,
                &UserPatch {
                    role: Some(Role::Admin),
                    ..UserPatch::default()
                },
                learnsync::model::now_ms(),
            )
            .await
            .unwrap();
    }
    let admin_token = Account::token(&base, &admin.email).await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let r = http
            .post(format!("{base}/api/courses"))
            .bearer_auth(&admin_token)
            .json(
                &json!({"id": format!("course-{i}"), "title": format!("Algebra {i}"),
                          "status": "published", "lessons": [{"id": "l1", "title": "One"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
    let (accounts, writers) = cohort(&base, 0).await;
    wait_connections(&base, (USERS * 2) as u64).await;
    let baseline_fds = fds(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let server_errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));

    // Sync: every device edits; now and then one drops its connection and comes back. Every
    // tenth of the run the active users leave (converged first: nothing may be lost) and new
    // ones arrive, so documents go idle and are evicted as in real use, and a steady state
    // exists for memory to be flat in.
    let rotate = Duration::from_secs((secs / 10).max(5));
    let sync_base = base.clone();
    let sync_task = tokio::spawn(async move {
        let base = sync_base;
        let mut writers = writers;
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let mut rounds = 0u64;
        let mut reconnects = 0u64;
        let mut retired = 0u64;
        let mut generation = 0;
        let mut next_rotation = Instant::now() + rotate;
        while Instant::now() < until {
            if Instant::now() >= next_rotation && Instant::now() + rotate / 2 < until {
                settle(&mut writers).await;
                retired += writers.iter().map(|w| w.count).sum::<u64>();
                for w in writers.iter_mut() {
                    w.device.disconnect().await;
                }
                generation += 1;
                writers = cohort(&base, generation).await.1;
                next_rotation = Instant::now() + rotate;
            }
            for w in writers.iter_mut() {
                // A device the server closed (e.g. as too slow) reconnects, as a real one does.
                if w.is_offline() {
                    w.device.connect().await;
                    reconnects += 1;
                }
                w.step();
            }
            if rng.random_range(0..10) == 0 {
                let i = rng.random_range(0..writers.len());
                writers[i].device.disconnect().await;
                writers[i].step();
                writers[i].device.connect().await;
                reconnects += 1;
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (writers, rounds, reconnects, retired, generation)
    });
    // REST: catalog search, the learner's views, preference writes.
    let rest_task = {
        let (base, errors, requests) = (base.clone(), server_errors.clone(), requests.clone());
        let tokens: Vec<String> = accounts.iter().map(|a| a.token.clone()).collect();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0usize;
            while Instant::now() < until {
                let token = &tokens[i % tokens.len()];
                let responses = [
                    http.get(format!("{base}/api/courses?q=algebra&limit=10"))
                        .send()
                        .await,
                    http.get(format!("{base}/api/enrollments"))
                        .bearer_auth(token)
                        .send()
                        .await,
                    http.patch(format!("{base}/api/preferences"))
                        .bearer_auth(token)
                        .json(&json!({"language": if i.is_multiple_of(2) { "en" } else { "ru" }}))
                        .send()
                        .await,
                ];
                for r in responses {
                    requests.fetch_add(1, Ordering::Relaxed);
                    if r.map(|r| r.status().is_server_error()).unwrap_or(true) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Imports: the admin uploads a legacy dump every second (dry runs and real ones).
    let import_task = {
        let (base, errors) = (base.clone(), server_errors.clone());
        let dump = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../sync-core/tests/fixtures/localstorage/learner-basic.json"),
        )
        .expect("fixture dump");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < until {
                let form = reqwest::multipart::Form::new()
                    .part(
                        "files",
                        reqwest::multipart::Part::text(dump.clone()).file_name("dump.json"),
                    )
                    .text(
                        "dry_run",
                        if n.is_multiple_of(2) { "true" } else { "false" },
                    );
                let r = http
                    .post(format!("{base}/api/admin/migrations"))
                    .bearer_auth(&admin_token)
                    .multipart(form)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => n += 1,
                    Ok(r) if r.status().is_server_error() => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("import refused: {} {}", r.status(), r.text().await.unwrap()),
                    Err(e) => panic!("import request failed: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            n
        })
    };
    let mut samples = Vec::new();
    let step = Duration::from_secs_f64((secs as f64 / 10.0).max(1.0));
    while Instant::now() < until {
        samples.push(sample(&base, pid, started).await);
        tokio::time::sleep(step).await;
    }
    let (mut writers, rounds, reconnects, retired, generations) = sync_task.await.unwrap();
    rest_task.await.unwrap();
    let imports = import_task.await.unwrap();
    settle(&mut writers).await;
    wait_connections(&base, (USERS * 2) as u64).await;
    samples.push(sample(&base, pid, started).await);
    for w in writers.iter_mut() {
        w.device.disconnect().await;
    }
    wait_connections(&base, 0).await;
    let end = sample(&base, pid, started).await;
    samples.push(end);

    let changes: u64 = writers.iter().map(|w| w.count).sum::<u64>() + retired;
    eprintln!(
        "soak {secs} s: {changes} changes from {} devices at a time, {} users in all \
         ({rounds} rounds, {reconnects} reconnects), {} REST requests, {imports} imports",
        writers.len(),
        USERS * (generations + 1),
        requests.load(Ordering::Relaxed)
    );
    eprintln!("| t (s) | RSS (MiB) | open fds | sync connections |");
    eprintln!("|---|---|---|---|");
    for s in &samples {
        eprintln!(
            "| {:.0} | {:.1} | {} | {} |",
            s.at_secs,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.connections
        );
    }
    assert_eq!(server_errors.load(Ordering::Relaxed), 0, "5xx answers");
    assert!(imports > 0 && changes > 0);
    // Every socket of the devices is gone again: no leaked connection or descriptor (the pool's
    // database connections may differ by a few).
    assert!(
        end.fds <= baseline_fds.saturating_sub(USERS * 2) + 16,
        "open descriptors: {} at the end, {baseline_fds} with {} devices connected",
        end.fds,
        USERS * 2
    );
    if secs >= 120 {
        // Flat memory: memory rises while a cohort's documents are hot and falls when they are
        // evicted, so compare like with like: the highest sample of the second half of the run
        // against the highest of the first half (after the first minute of warm-up), and the
        // same for the lowest. Both within 1.25× + 16 MiB.
        let under_load = &samples[1..samples.len() - 2];
        let (first, second) = under_load.split_at(under_load.len() / 2);
        let max = |s: &[Sample]| s.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let min = |s: &[Sample]| s.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        for (what, early, late) in [
            ("peak", max(first), max(second)),
            ("trough", min(first), min(second)),
        ] {
            assert!(
                late <= early * 5 / 4 + 16 * 1024,
                "memory grew under steady load ({what}): {early} KiB → {late} KiB"
            );
        }
    }
}
