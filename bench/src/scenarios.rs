//! The scenarios of GOALS.md. Each one measures LearnSync and, where the comparison means
//! something, the reference peer in the same run, and checks correctness while it measures: a
//! run where devices do not converge or changes go missing is reported as failed, however fast.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::fleet::{Fleet, identities};
use crate::report::{Report, Row};
use crate::target::{Database, Kind, ScratchDb, Server, cpu_seconds, learnsync_binary, rss_bytes};

/// How big to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// LearnSync's database.
    pub db: Database,
    /// Servers to measure.
    pub targets: Vec<Kind>,
    /// Device counts for P1 (pairs are half of it).
    pub devices: Vec<usize>,
    /// Background changes per second for P1.
    pub rate: f64,
    /// Seconds of measurement per step.
    pub seconds: u64,
    /// Devices for P3.
    pub connections: usize,
    /// Courses for P6.
    pub courses: usize,
    /// Enrollments and changes for P4.
    pub heavy_enrollments: usize,
    /// Historical changes for P4.
    pub heavy_changes: usize,
    /// Trials for P4.
    pub trials: usize,
    /// Legacy dumps for P5.
    pub dumps: usize,
    /// Where P5 writes its dumps and leaves them (to profile the CLI on them by hand);
    /// `None`: a temporary folder, removed after the run.
    pub keep_dumps: Option<std::path::PathBuf>,
}

impl Options {
    /// Seconds-long sizes for the test suite's smoke run.
    pub fn smoke(db: Database) -> Self {
        Self {
            db,
            targets: vec![Kind::Learnsync, Kind::Reference],
            devices: vec![4],
            rate: 20.0,
            seconds: 2,
            connections: 10,
            courses: 300,
            heavy_enrollments: 5,
            heavy_changes: 30,
            trials: 2,
            dumps: 40,
            keep_dumps: None,
        }
    }

    /// The sizes GOALS.md names.
    pub fn full(db: Database) -> Self {
        Self {
            db,
            targets: vec![Kind::Learnsync, Kind::Reference],
            devices: vec![100, 1_000, 4_000, 10_000],
            rate: 2_000.0,
            seconds: 30,
            connections: 20_000,
            courses: 100_000,
            heavy_enrollments: 200,
            heavy_changes: 5_000,
            trials: 20,
            dumps: 10_000,
            keep_dumps: None,
        }
    }
}

async fn start(kind: Kind, db: Database) -> Result<Server> {
    match kind {
        Kind::Learnsync => Server::learnsync(db, &[]).await,
        Kind::Reference => Server::reference().await,
    }
}

/// Sends `rate` probe changes per second on average (the count is Poisson-distributed),
/// spread over the fleet's users, for `seconds`.
///
/// Arrivals are a Poisson process, as the changes of thousands of independent devices are:
/// exponential gaps drawn in advance and released on a 1-ms tick (the timer's resolution).
/// Releasing the changes in fixed bursts (10 every 5 ms at 2,000/s, as before 2026-12-05)
/// made each burst queue behind itself, a load the harness made and no fleet of devices does.
async fn drive(fleet: &Fleet, rate: f64, seconds: u64) {
    let users = fleet.users();
    if users == 0 || !(rate.is_finite() && rate > 0.0) {
        return;
    }
    let total = Duration::from_secs(seconds);
    let arrivals = poisson_arrivals(rate, total, rand::random::<u64>());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    let mut next_user = 0usize;
    while next < arrivals.len() {
        tick.tick().await;
        // What is due by now, from the clock rather than from a count of ticks: a tick that
        // comes late (the load generator shares the cores with the server) must not lower the
        // offered rate, or a loaded run would measure a lighter load than it claims.
        let elapsed = started.elapsed();
        while next < arrivals.len() && arrivals[next] <= elapsed {
            fleet.probe(next_user);
            next_user = (next_user + 1) % users;
            next += 1;
        }
    }
    tokio::time::sleep_until((started + total).into()).await;
}

/// The arrival times of a Poisson process of `rate` per second over `total`, from `seed`
/// (a small xorshift generator: the harness needs spread, not cryptographic quality).
fn poisson_arrivals(rate: f64, total: Duration, seed: u64) -> Vec<Duration> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // 53 random bits in (0, 1]: never 0, so the logarithm below is finite.
        ((state >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    let mut at = 0.0f64;
    let mut out = Vec::with_capacity((rate * total.as_secs_f64() * 1.1) as usize);
    loop {
        at += -uniform().ln() / rate;
        if at >= total.as_secs_f64() {
            return out;
        }
        out.push(Duration::from_secs_f64(at));
    }
}

struct Measured {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    written: u64,
    seen: u64,
    unsettled: usize,
    pairs: usize,
    failures: usize,
    rate: f64,
}

impl Measured {
    fn ok(&self) -> bool {
        self.unsettled == 0 && self.failures == 0
    }

    fn note(&self) -> String {
        if self.ok() {
            format!("{} changes, all converged", self.written)
        } else {
            format!(
                "FAILED: {} of {} pairs did not converge ({} changes written), {} device failures",
                self.unsettled, self.pairs, self.written, self.failures
            )
        }
    }
}

async fn propagation_run(
    kind: Kind,
    db: Database,
    devices: usize,
    rate: f64,
    seconds: u64,
) -> Result<Measured> {
    let server = start(kind, db).await?;
    let ids = identities(&server, devices / 2, 8).await?;
    let fleet = Fleet::connect(&server, &ids, 256).await?;
    // Warm-up: every document loaded, caches hot.
    drive(&fleet, rate.min(500.0), 1).await;
    fleet.settle(Duration::from_secs(30)).await;
    fleet.probes.reset();
    let t0 = Instant::now();
    drive(&fleet, rate, seconds).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let unsettled = fleet.settle(Duration::from_secs(60)).await;
    let hist = fleet
        .probes
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let m = Measured {
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
        written: fleet.probes.written.load(Ordering::Relaxed),
        seen: fleet.probes.seen.load(Ordering::Relaxed),
        unsettled,
        pairs: fleet.users(),
        failures: fleet.probes.failures.load(Ordering::Relaxed),
        rate: fleet.probes.written.load(Ordering::Relaxed) as f64 / elapsed,
    };
    fleet.stop();
    server.stop().await?;
    Ok(m)
}

/// P1: a change on device A is visible on device B of the same user, under background load.
pub async fn propagation(opts: &Options, report: &mut Report) -> Result<()> {
    for &devices in &opts.devices {
        let mut results = Vec::new();
        for &kind in &opts.targets {
            results.push((
                kind,
                propagation_run(kind, opts.db, devices, opts.rate, opts.seconds).await?,
            ));
        }
        let get = |k: Kind| results.iter().find(|(kind, _)| *kind == k).map(|(_, m)| m);
        let (ls, rf) = (get(Kind::Learnsync), get(Kind::Reference));
        let note = format!(
            "{devices} devices, {:.0} changes/s; learnsync: {}; reference: {}",
            opts.rate,
            ls.map(Measured::note).unwrap_or_default(),
            rf.map(Measured::note).unwrap_or_default()
        );
        for (metric, f) in [
            ("p50 ms", (|m: &Measured| m.p50_ms) as fn(&Measured) -> f64),
            ("p99 ms", |m: &Measured| m.p99_ms),
            ("max ms", |m: &Measured| m.max_ms),
        ] {
            report.push(Row {
                scenario: "P1 propagation".into(),
                metric: format!("{metric} @ {devices} devices"),
                learnsync: ls.map(f),
                reference: rf.map(f),
                lower_is_better: true,
                note: note.clone(),
            });
        }
        let _ = results.iter().map(|(_, m)| m.seen).sum::<u64>();
    }
    Ok(())
}

/// P2: the highest rate at which changes are accepted, stored and fanned out with p99 ≤ 1 s
/// and every pair converging.
pub async fn throughput(opts: &Options, report: &mut Report) -> Result<()> {
    let devices = opts.devices.first().copied().unwrap_or(100).max(4);
    let steps: Vec<f64> = if opts.seconds <= 3 {
        vec![opts.rate]
    } else {
        // Steps fine enough that the figure is not an artefact of the next step being 2.5x.
        vec![
            250.0, 500.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 7_500.0, 10_000.0, 15_000.0,
            20_000.0, 25_000.0, 30_000.0, 40_000.0,
        ]
    };
    let mut best = Vec::new();
    for &kind in &opts.targets {
        let mut sustained: Option<f64> = None;
        let mut notes = Vec::new();
        for &rate in &steps {
            let m = propagation_run(kind, opts.db, devices, rate, opts.seconds).await?;
            notes.push(format!(
                "{rate:.0}/s: p99 {:.0} ms{}",
                m.p99_ms,
                if m.ok() { "" } else { " FAILED" }
            ));
            if m.ok() && m.p99_ms <= 1_000.0 {
                sustained = Some(m.rate);
            } else {
                break;
            }
        }
        best.push((kind, sustained, notes.join("; ")));
    }
    let get = |k: Kind| best.iter().find(|(kind, _, _)| *kind == k);
    report.push(Row {
        scenario: "P2 throughput".into(),
        metric: format!("changes/s sustained (p99 ≤ 1 s), {devices} devices"),
        learnsync: get(Kind::Learnsync).and_then(|b| b.1),
        reference: get(Kind::Reference).and_then(|b| b.1),
        lower_is_better: false,
        note: best
            .iter()
            .map(|(k, _, n)| format!("{}: {n}", k.name()))
            .collect::<Vec<_>>()
            .join(" | "),
    });
    Ok(())
}

/// P3: concurrent devices on one instance, each with its documents synced; memory per device.
pub async fn connections(opts: &Options, report: &mut Report) -> Result<()> {
    let connections = fit_open_files(opts.connections);
    let mut per_device = Vec::new();
    for &kind in &opts.targets {
        let server = start(kind, opts.db).await?;
        let pid = server.pid().context("server pid")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = rss_bytes(pid).unwrap_or(0);
        let ids = identities(&server, connections / 2, 8).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Half the devices first, then the other half: the second half's growth is the cost of
        // a device once the allocator's free memory left over from setup (account creation
        // hashes passwords with megabytes each) is used up, which a delta from `before` hides
        // or inflates depending on where that memory sits.
        let (first, second) = ids.split_at(ids.len() / 2);
        let fleet = Fleet::connect(&server, first, 512).await?;
        let mut unsettled = fleet.settle(Duration::from_secs(120)).await;
        let half = rss_bytes(pid).unwrap_or(0);
        let fleet2 = Fleet::connect(&server, second, 512).await?;
        unsettled += fleet2.settle(Duration::from_secs(120)).await;
        let failures = fleet.probes.failures.load(Ordering::Relaxed)
            + fleet2.probes.failures.load(Ordering::Relaxed);
        let connected = rss_bytes(pid).unwrap_or(0);
        // Idle documents are evicted after 30 s by default: measure again once idle, against
        // the server as it started (before any account existed).
        let idle_wait = if connections <= 100 { 2 } else { 40 };
        tokio::time::sleep(Duration::from_secs(idle_wait)).await;
        let idle = rss_bytes(pid).unwrap_or(0);
        let n = (ids.len() * 2).max(1) as f64;
        let n_second = (second.len() * 2).max(1) as f64;
        per_device.push((
            kind,
            connected.saturating_sub(half) as f64 / n_second / 1024.0,
            idle.saturating_sub(started) as f64 / n / 1024.0,
            format!(
                "{}: {} devices, {} unsettled, {} failures",
                kind.name(),
                ids.len() * 2,
                unsettled,
                failures
            ),
        ));
        fleet.stop();
        fleet2.stop();
        server.stop().await?;
    }
    let get = |k: Kind| per_device.iter().find(|(kind, ..)| *kind == k);
    let note = per_device
        .iter()
        .map(|p| p.3.clone())
        .collect::<Vec<_>>()
        .join("; ");
    report.push(Row {
        scenario: "P3 connections".into(),
        metric: format!(
            "KiB per synced device (the second {} of {} devices)",
            connections / 2,
            connections
        ),
        learnsync: get(Kind::Learnsync).map(|p| p.1),
        reference: get(Kind::Reference).map(|p| p.1),
        lower_is_better: true,
        note: note.clone(),
    });
    report.push(Row {
        scenario: "P3 connections".into(),
        metric: "KiB per device once idle (all devices, from the server's start)".into(),
        learnsync: get(Kind::Learnsync).map(|p| p.2),
        reference: get(Kind::Reference).map(|p| p.2),
        lower_is_better: true,
        note,
    });
    Ok(())
}

/// Each device is one socket here and one in the server, and the server inherits this
/// process's open-file limit: past it the server refuses connections, and the run would measure
/// refusals, not memory. So a size the limit cannot hold (with room for the database
/// connections and files of either side) runs at the largest thousand that fits, and says so.
fn fit_open_files(wanted: usize) -> usize {
    let Ok((soft, _)) = rlimit::Resource::NOFILE.get() else {
        return wanted;
    };
    let room = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(1_000)
        / 1_000
        * 1_000;
    if wanted <= room {
        return wanted;
    }
    let fitted = room.max(2);
    eprintln!(
        "P3: {wanted} devices need {wanted} open files in the harness and as many in the server, \
         and the limit is {soft} per process: running {fitted} devices (raise the hard limit, \
         `ulimit -Hn`, for more)"
    );
    fitted
}

/// P4: the first sync of a new device of a heavy user (all its documents): server CPU.
pub async fn first_sync(opts: &Options, report: &mut Report) -> Result<()> {
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for &kind in &opts.targets {
        match first_sync_of(kind, opts).await {
            Ok((cpu, wall)) => results.push((kind, cpu, wall)),
            // The reference peer failing at this load is a finding, not a harness error.
            Err(e) => failures.push(format!("FAILED {}: {e:#}", kind.name())),
        }
    }
    let get = |k: Kind| results.iter().find(|r| r.0 == k);
    let mut note = format!(
        "{} enrollments, {} changes, {} trials (two devices per trial: CPU covers both)",
        opts.heavy_enrollments, opts.heavy_changes, opts.trials
    );
    for failure in failures {
        note.push_str("; ");
        note.push_str(&failure);
    }
    report.push(Row {
        scenario: "P4 first sync".into(),
        metric: "server CPU ms, p99".into(),
        learnsync: get(Kind::Learnsync).map(|r| r.1),
        reference: get(Kind::Reference).map(|r| r.1),
        lower_is_better: true,
        note: note.clone(),
    });
    report.push(Row {
        scenario: "P4 first sync".into(),
        metric: "wall ms until synced, p99".into(),
        learnsync: get(Kind::Learnsync).map(|r| r.2),
        reference: get(Kind::Reference).map(|r| r.2),
        lower_is_better: true,
        note,
    });
    Ok(())
}

/// One server's P4: (CPU ms p99, wall ms p99).
async fn first_sync_of(kind: Kind, opts: &Options) -> Result<(f64, f64)> {
    let server = start(kind, opts.db).await?;
    let pid = server.pid().context("server pid")?;
    let ids = identities(&server, 1, 1).await?;
    let fleet = Fleet::connect(&server, &ids, 2).await?;
    for i in 0..opts.heavy_enrollments {
        fleet.enroll(0, &format!("course-{i}"));
    }
    let probes = opts
        .heavy_changes
        .saturating_sub(opts.heavy_enrollments * 2);
    for _ in 0..probes {
        fleet.probe(0);
    }
    let unsettled = fleet.settle(Duration::from_secs(300)).await;
    fleet.stop();
    if unsettled > 0 {
        let _ = server.stop().await;
        anyhow::bail!("the heavy user's history did not settle ({unsettled} pairs)");
    }
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..opts.trials {
        let before = cpu_seconds(pid).unwrap_or(0.0);
        let t0 = Instant::now();
        let fresh = Fleet::connect(&server, &ids, 2).await?;
        let left = fresh.settle(Duration::from_secs(120)).await;
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        cpu.push((cpu_seconds(pid).unwrap_or(0.0) - before) * 1000.0);
        fresh.stop();
        if left > 0 {
            let _ = server.stop().await;
            anyhow::bail!("a fresh device did not finish its first sync");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    let p99 = |v: &Vec<f64>| {
        v[((v.len() as f64 * 0.99).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    let result = (p99(&cpu), p99(&wall));
    server.stop().await?;
    Ok(result)
}

/// P6: catalog search over many courses, and cached catalog pages (ETag).
pub async fn rest(opts: &Options, report: &mut Report) -> Result<()> {
    let server = Server::learnsync(opts.db, &[]).await?;
    seed_courses(&server, opts.courses).await?;
    // The catalog as it is at rest, not in the seconds after 100,000 inserts, when
    // autovacuum's pass over the new rows and indexes shares the two cores with the queries
    // (it raised the p99 from 8 to 15 ms on 2026-12-02).
    settle_catalog(&server).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    // Search latency: sequential queries over words that exist.
    let words = [
        "algebra", "geometry", "physics", "history", "biology", "chem", "lit", "music",
    ];
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let queries = if opts.courses < 1000 { 50 } else { 2_000 };
    for i in 0..queries {
        let q = words[i % words.len()];
        let t0 = Instant::now();
        let r = http
            .get(format!(
                "{}/api/courses?q={q}%20{}&limit=20",
                server.base,
                i % 50
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "search failed: {}", r.status());
        let _ = r.bytes().await?;
        hist.record(t0.elapsed().as_micros() as u64)?;
    }
    // Cached pages: many clients revalidating the first catalog page.
    let first = http
        .get(format!("{}/api/courses?limit=20", server.base))
        .send()
        .await?;
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let seconds = opts.seconds.max(2);
    let clients = 64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let url = format!("{}/api/courses?limit=20", server.base);
        let etag = etag.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut bad = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                match http.get(&url).header("if-none-match", &etag).send().await {
                    Ok(r) if r.status().as_u16() == 304 => n += 1,
                    _ => bad += 1,
                }
            }
            (n, bad)
        }));
    }
    let mut total = 0;
    let mut bad = 0;
    for t in tasks {
        let (n, b) = t.await?;
        total += n;
        bad += b;
    }
    let rps = total as f64 / started.elapsed().as_secs_f64();
    report.push(Row {
        scenario: "P6 REST".into(),
        metric: format!("course search p99 ms over {} courses", opts.courses),
        learnsync: Some(hist.value_at_quantile(0.99) as f64 / 1000.0),
        reference: None,
        lower_is_better: true,
        note: format!(
            "{queries} queries, p50 {:.2} ms",
            hist.value_at_quantile(0.5) as f64 / 1000.0
        ),
    });
    report.push(Row {
        scenario: "P6 REST".into(),
        metric: "cached catalog page req/s (If-None-Match → 304)".into(),
        learnsync: Some(rps),
        reference: None,
        lower_is_better: false,
        note: format!(
            "{clients} clients, {bad} non-304 answers (load generator on the same 2 cores)"
        ),
    });
    server.stop().await
}

/// Seeds `n` published courses through the REST API (as an admin would), in parallel.
async fn seed_courses(server: &Server, n: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let words = [
        "Algebra",
        "Geometry",
        "Physics",
        "History",
        "Biology",
        "Chemistry",
        "Literature",
        "Music",
    ];
    // The seeding account is made an admin directly in the benchmark's own database.
    let email = format!("seed-{}@bench.test", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{}/api/auth/register", server.base))
        .json(&json!({"email": email, "password": "bench-password-123", "display_name": "seed"}))
        .send()
        .await?;
    let user: serde_json::Value = r.json().await?;
    let user_id = user["id"].as_str().context("user id")?.to_string();
    promote(server, &user_id).await?;
    let token: serde_json::Value = http
        .post(format!("{}/api/auth/tokens", server.base))
        .json(&json!({"email": email, "password": "bench-password-123", "name": "seed"}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["token"].as_str().context("token")?.to_string();
    let mut tasks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(16).max(1)) {
        let http = http.clone();
        let base = server.base.clone();
        let token = token.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                let w = words[i % words.len()];
                let r = http
                    .post(format!("{base}/api/courses"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "title": format!("{w} {} part {}", i % 97, i),
                        "description": format!("A course about {} number {i}", w.to_lowercase()),
                        "category": w.to_lowercase(), "level": "beginner", "status": "published"
                    }))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().as_u16() == 201, "seeding failed: {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Vacuums and analyzes the catalog in the benchmark's own database, as an operator does after
/// a bulk load: the work autovacuum would otherwise do during the measurement.
async fn settle_catalog(server: &Server) -> Result<()> {
    let url = server.database_url().context("database url")?;
    if url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query("VACUUM ANALYZE courses")
            .execute(&mut c)
            .await?;
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query("ANALYZE").execute(&mut c).await?;
    }
    Ok(())
}

/// Makes a user an admin directly in the benchmark's own database.
async fn promote(server: &Server, user_id: &str) -> Result<()> {
    let url = server.database_url().context("database url")?;
    if url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
            .bind(user_id)
            .execute(&mut c)
            .await?;
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
            .bind(user_id)
            .execute(&mut c)
            .await?;
    }
    Ok(())
}

/// P5: `learnsync import` of generated legacy dumps (one user each, the mess of
/// `fixtures/localstorage/`), on PostgreSQL and on SQLite. Correctness: the run succeeds, every
/// dump's user got their data, and importing the same dumps again changes nothing. The
/// reference peer has no import; the row has no ratio.
pub async fn import(opts: &Options, report: &mut Report) -> Result<()> {
    let dir = match &opts.keep_dumps {
        Some(dir) => {
            // The import reads every dump in the folder: leftovers would change what is measured.
            if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
                anyhow::bail!(
                    "--keep-dumps {}: the folder is not empty; give a new or empty one",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => {
            std::env::temp_dir().join(format!("ls-bench-dumps-{}", uuid::Uuid::new_v4().simple()))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let options = sync_core::import::generate::Options::default();
    let mut bytes = 0usize;
    for seed in 0..opts.dumps as u64 {
        let text = sync_core::import::generate::dump(seed, &options);
        bytes += text.len();
        std::fs::write(dir.join(format!("dump-{seed:06}.json")), text)?;
    }
    let result = import_each_backend(opts, &dir, bytes, report).await;
    if opts.keep_dumps.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn import_each_backend(
    opts: &Options,
    dir: &std::path::Path,
    bytes: usize,
    report: &mut Report,
) -> Result<()> {
    for db in [Database::Postgres, Database::Sqlite] {
        let scratch = ScratchDb::create(db).await?;
        let run = |url: String| async move {
            let started = Instant::now();
            let out = tokio::process::Command::new(learnsync_binary()?)
                .arg("import")
                .arg(dir)
                .args(["--json", "--database-url", &url])
                .env("LEARNSYNC_LOG", "warn")
                .output()
                .await?;
            let secs = started.elapsed().as_secs_f64();
            let run: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!(
                        "learnsync import printed no run: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            anyhow::Ok((out.status.success(), secs, run))
        };
        let (ok, secs, first) = run(scratch.url().to_string()).await?;
        let (ok_again, _, again) = run(scratch.url().to_string()).await?;
        scratch.drop_now().await;
        let n = opts.dumps;
        let users = first["counts"]["users"].as_array().map_or(0, Vec::len);
        let changed_again = again["counts"]["imported"].as_u64().unwrap_or(u64::MAX)
            + again["counts"]["merged"].as_u64().unwrap_or(u64::MAX);
        let note = if !ok || !ok_again {
            format!("FAILED: status {} / {}", first["status"], again["status"])
        } else if users != n {
            format!("FAILED: {users} of {n} users got their data")
        } else if changed_again != 0 {
            format!("FAILED: the re-import changed {changed_again} values")
        } else {
            format!(
                "{n} dumps ({:.1} MB), {} values imported, {users} users; the re-import changed nothing",
                bytes as f64 / 1e6,
                first["counts"]["imported"]
            )
        };
        report.push(Row {
            scenario: "P5 import".into(),
            metric: format!(
                "dumps/s, CLI, {}",
                match db {
                    Database::Postgres => "PostgreSQL",
                    Database::Sqlite => "SQLite",
                }
            ),
            learnsync: Some(n as f64 / secs.max(1e-9)),
            reference: None,
            lower_is_better: false,
            note,
        });
    }
    Ok(())
}

/// P7: bytes stored per document after compaction, against the size of its `save()`. The
/// devices write, leave, and their documents go idle (evicted after 1 s here instead of 30 s),
/// which is when the server compacts them.
pub async fn storage(opts: &Options, report: &mut Report) -> Result<()> {
    let server = Server::learnsync(
        opts.db,
        &[
            ("LEARNSYNC_COMPACT_AFTER", "16".into()),
            ("LEARNSYNC_IDLE_EVICT_SECS", "1".into()),
        ],
    )
    .await?;
    let users = opts.devices.first().copied().unwrap_or(4).clamp(2, 200) / 2;
    let ids = identities(&server, users, 8).await?;
    let fleet = Fleet::connect(&server, &ids, 64).await?;
    for round in 0..40 {
        for u in 0..fleet.users() {
            fleet.probe(u);
            if round % 10 == 0 {
                fleet.enroll(u, &format!("c{round}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unsettled = fleet.settle(Duration::from_secs(60)).await;
    fleet.stop();
    let url = server.database_url().context("database url")?.to_string();
    wait_for_idle_compaction(&url).await?;
    type Docs = Vec<(String, Option<Vec<u8>>)>;
    type Changes = Vec<(String, Vec<u8>)>;
    let (docs, changes): (Docs, Changes) = if url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        (
            sqlx::query_as("SELECT id, snapshot FROM documents")
                .fetch_all(&mut c)
                .await?,
            sqlx::query_as("SELECT doc_id, data FROM document_changes ORDER BY seq")
                .fetch_all(&mut c)
                .await?,
        )
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await?;
        (
            sqlx::query_as("SELECT id, snapshot FROM documents")
                .fetch_all(&mut c)
                .await?,
            sqlx::query_as("SELECT doc_id, data FROM document_changes ORDER BY seq")
                .fetch_all(&mut c)
                .await?,
        )
    };
    let mut worst: f64 = 0.0;
    let mut total_stored = 0u64;
    let mut total_saved = 0u64;
    let mut compacted = 0;
    let (mut compacted_stored, mut compacted_saved, mut compacted_worst) = (0u64, 0u64, 0f64);
    for (id, snapshot) in &docs {
        // Rebuild each document from exactly what is stored and compare with its own save().
        let mut doc = automerge::AutoCommit::new();
        let mut stored = 0u64;
        if let Some(s) = snapshot {
            doc.load_incremental(s)?;
            stored += s.len() as u64;
            compacted += 1;
        }
        for (_, data) in changes.iter().filter(|(d, _)| d == id) {
            doc.load_incremental(data)?;
            stored += data.len() as u64;
        }
        let saved = doc.save().len() as u64;
        if saved > 0 {
            worst = worst.max(stored as f64 / saved as f64);
            total_stored += stored;
            total_saved += saved;
            if snapshot.is_some() {
                compacted_stored += stored;
                compacted_saved += saved;
                compacted_worst = compacted_worst.max(stored as f64 / saved as f64);
            }
        }
    }
    report.push(Row {
        scenario: "P7 storage".into(),
        metric: "stored bytes ÷ save() bytes, compacted documents".into(),
        learnsync: (compacted_saved > 0).then(|| compacted_stored as f64 / compacted_saved as f64),
        reference: None,
        lower_is_better: true,
        note: format!(
            "{compacted} documents compacted at least once (snapshot plus the change rows since), worst {compacted_worst:.2}"
        ),
    });
    report.push(Row {
        scenario: "P7 storage".into(),
        metric: "stored bytes ÷ save() bytes, all documents".into(),
        learnsync: Some(if total_saved > 0 {
            total_stored as f64 / total_saved as f64
        } else {
            0.0
        }),
        reference: None,
        lower_is_better: true,
        note: format!(
            "{} documents ({compacted} compacted at least once, the rest still change rows), worst {worst:.2}, {unsettled} unsettled pairs",
            docs.len()
        ),
    });
    server.stop().await
}

/// Waits until the change rows stop shrinking (the idle documents are compacted), at most 30 s.
async fn wait_for_idle_compaction(url: &str) -> Result<()> {
    let count = || async {
        let n: (i64,) = if url.starts_with("postgres") {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::query_as("SELECT COUNT(*) FROM document_changes")
                .fetch_one(&mut c)
                .await?
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await?;
            sqlx::query_as("SELECT COUNT(*) FROM document_changes")
                .fetch_one(&mut c)
                .await?
        };
        anyhow::Ok(n.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut stable_since) = (count().await?, Instant::now());
    while last > 0 && Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = count().await?;
        if n != last {
            (last, stable_since) = (n, Instant::now());
        }
    }
    Ok(())
}

/// P8: the browser client's bundle size.
pub async fn wasm(report: &mut Report) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-wasm/pkg");
    let wasm = std::fs::read_dir(&root)
        .with_context(|| format!("{} not built: run scripts/build-wasm.sh", root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .context("no .wasm in client-wasm/pkg")?;
    let raw = std::fs::metadata(&wasm)?.len();
    let gz = std::process::Command::new("gzip")
        .arg("-9c")
        .arg(&wasm)
        .output()?;
    report.push(Row {
        scenario: "P8 browser client".into(),
        metric: "wasm bundle KiB gzipped".into(),
        learnsync: Some(gz.stdout.len() as f64 / 1024.0),
        reference: None,
        lower_is_better: true,
        note: format!(
            "raw {:.0} KiB; target ≤ 1024 KiB gzipped",
            raw as f64 / 1024.0
        ),
    });
    Ok(())
}

/// Where P2's time goes: Automerge's cost of applying a change to the preferences document the
/// devices write, after a history of `n` changes, one change per call (a sync message each) and
/// ten per call (what the hub does with messages that arrive together). No server, no reference
/// peer: a CPU figure that says how far a server applying changes one by one can go, and pins
/// the automerge version (`perf/automerge-costs.md`). Then, per history, what receiving a sync
/// message costs once its change is applied: `sync_core::sync_receive` against automerge's own
/// `receive_sync_message`, which walks the whole history.
pub async fn apply(opts: &Options, report: &mut Report) -> Result<()> {
    let (histories, samples): (&[usize], usize) = if opts.seconds <= 3 {
        (&[10, 50], 20)
    } else {
        (&[100, 400, 1_600, 6_400], 200)
    };
    for &history in histories {
        let (single, batched) =
            tokio::task::spawn_blocking(move || apply_costs(history, samples)).await??;
        let (upstream, ours) = tokio::task::spawn_blocking(move || {
            Ok::<_, anyhow::Error>((
                receive_cost(history, samples, false)?,
                receive_cost(history, samples, true)?,
            ))
        })
        .await??;
        report.push(Row {
            scenario: "P2 apply cost".into(),
            metric: format!("µs per change applied, one per call, after {history} changes"),
            learnsync: Some(single),
            reference: None,
            lower_is_better: true,
            note: format!(
                "ten per call: {batched:.1} µs per change ({:.1}x cheaper); automerge 0.12, preferences document, one key overwritten",
                single / batched.max(f64::MIN_POSITIVE)
            ),
        });
        report.push(Row {
            scenario: "P2 receive cost".into(),
            metric: format!(
                "µs per sync message received, its change already applied (the hub's batches), after {history} changes"
            ),
            learnsync: Some(ours.with_change),
            reference: None,
            lower_is_better: true,
            note: format!(
                "automerge 0.12's own receive_sync_message: {:.1} µs ({:.1}x), its walk over the whole history; acknowledgements: {:.1} µs, automerge's {:.1} µs",
                upstream.with_change,
                upstream.with_change / ours.with_change.max(f64::MIN_POSITIVE),
                ours.acknowledgement,
                upstream.acknowledgement,
            ),
        });
    }
    Ok(())
}

/// What receiving one sync message costs a replica, in microseconds.
struct ReceiveCost {
    /// A message that carries one new change, already applied by a batch.
    with_change: f64,
    /// A message that carries none (the device acknowledging the server's answer).
    acknowledgement: f64,
}

/// Receive costs on a replica with `history` changes (a device writes, the server receives
/// and answers, the device acknowledges), with automerge's `receive_sync_message` or with
/// `sync_core::sync_receive`'s.
fn receive_cost(history: usize, samples: usize, ours: bool) -> Result<ReceiveCost> {
    use automerge::sync::{self, SyncDoc};
    let (mut device, mut server) = writer_and_reader(history)?;
    let (mut ds, mut ss) = (sync::State::new(), sync::State::new());
    let (mut with_change, mut acks) = ((Duration::ZERO, 0u32), (Duration::ZERO, 0u32));
    for n in 0..samples as i64 {
        write_probe(&mut device, history as i64 + 1 + n)?;
        // Until both sides are quiet.
        for _ in 0..6 {
            let mut quiet = true;
            if let Some(m) = device.sync().generate_sync_message(&mut ds) {
                quiet = false;
                let slot = if m.changes.is_empty() {
                    &mut acks
                } else {
                    // As the hub does with messages that arrive together: their changes are
                    // applied in one call first, then each message goes through its sync state.
                    let bytes: Vec<u8> = m.changes.iter().flatten().copied().collect();
                    server.load_incremental(&bytes)?;
                    &mut with_change
                };
                let t = Instant::now();
                if ours {
                    sync_core::sync_receive::receive_sync_message(&mut server, &mut ss, m)?;
                } else {
                    server.sync().receive_sync_message(&mut ss, m)?;
                }
                slot.0 += t.elapsed();
                slot.1 += 1;
            }
            if let Some(m) = server.sync().generate_sync_message(&mut ss) {
                quiet = false;
                device.sync().receive_sync_message(&mut ds, m)?;
            }
            if quiet {
                break;
            }
        }
    }
    anyhow::ensure!(
        server.get_heads() == device.get_heads(),
        "the server did not end with every change"
    );
    let micros =
        |(spent, count): (Duration, u32)| spent.as_secs_f64() * 1e6 / f64::from(count.max(1));
    Ok(ReceiveCost {
        with_change: micros(with_change),
        acknowledgement: micros(acks),
    })
}

/// The preferences document the devices write, with `history` changes, and a replica of it
/// under another actor (the server's side).
fn writer_and_reader(history: usize) -> Result<(automerge::AutoCommit, automerge::AutoCommit)> {
    use sync_core::docs::{self, DocSpec};
    let mut writer = docs::create(&DocSpec::Preferences, [1; 16])?;
    for n in 1..=history as i64 {
        write_probe(&mut writer, n)?;
    }
    let mut reader = writer.fork();
    reader.set_actor(automerge::ActorId::from([2u8; 16]));
    Ok((writer, reader))
}

/// One change as a device makes it: the same key overwritten, committed at time `n`.
fn write_probe(doc: &mut automerge::AutoCommit, n: i64) -> Result<()> {
    sync_core::docs::preferences::set(doc, "probe", &json!(n), n)?;
    sync_core::docs::commit(doc, n);
    Ok(())
}

/// Microseconds per change: one per `load_incremental` call, then ten per call. The reader
/// must end with the writer's heads (nothing was dropped).
fn apply_costs(history: usize, samples: usize) -> Result<(f64, f64)> {
    let (mut writer, mut reader) = writer_and_reader(history)?;
    let mut n = history as i64;
    let mut write = |doc: &mut automerge::AutoCommit| -> Result<()> {
        n += 1;
        write_probe(doc, n)
    };
    let mut single = Duration::ZERO;
    for _ in 0..samples {
        let heads = writer.get_heads();
        write(&mut writer)?;
        let bytes = writer.save_after(&heads);
        let t = Instant::now();
        reader.load_incremental(&bytes)?;
        single += t.elapsed();
    }
    let mut batched = Duration::ZERO;
    let rounds = (samples / 10).max(1);
    for _ in 0..rounds {
        let heads = writer.get_heads();
        for _ in 0..10 {
            write(&mut writer)?;
        }
        let bytes = writer.save_after(&heads);
        let t = Instant::now();
        reader.load_incremental(&bytes)?;
        batched += t.elapsed();
    }
    anyhow::ensure!(
        reader.get_heads() == writer.get_heads(),
        "the reader did not end with every change"
    );
    Ok((
        single.as_secs_f64() * 1e6 / samples as f64,
        batched.as_secs_f64() * 1e6 / (rounds * 10) as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::{fit_open_files, poisson_arrivals};
    use std::time::Duration;

    #[test]
    fn arrivals_come_at_the_rate_asked_with_poisson_gaps() {
        let total = Duration::from_secs(10);
        let arrivals = poisson_arrivals(2_000.0, total, 42);
        // 20,000 expected; a Poisson count's standard deviation is its root (141).
        assert!(
            (19_400..=20_600).contains(&arrivals.len()),
            "{} arrivals",
            arrivals.len()
        );
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "in order");
        assert!(arrivals.iter().all(|a| *a < total), "within the run");
        // Exponential gaps: their standard deviation equals their mean (fixed bursts would
        // give gaps of 0 and 5 ms, a coefficient of variation of 3).
        let gaps: Vec<f64> = arrivals
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((0.95..1.05).contains(&cv), "coefficient of variation {cv}");
        assert_ne!(
            poisson_arrivals(2_000.0, total, 7),
            arrivals,
            "the seed matters"
        );
    }

    #[test]
    fn a_p3_size_past_the_open_file_limit_is_lowered_to_fit_it() {
        let soft = rlimit::Resource::NOFILE.get().expect("read the limit").0;
        assert_eq!(fit_open_files(10), 10, "a small size runs as asked");
        let fitted = fit_open_files(usize::MAX);
        assert!(
            (fitted as u64) < soft,
            "{fitted} devices do not fit a limit of {soft}"
        );
        assert!(fitted == 2 || fitted.is_multiple_of(1_000), "{fitted}");
    }
}
