//! Every benchmark scenario at a tiny size, so the harness never rots. No timing assertions:
//! these check that each scenario runs end to end against both servers and that the devices
//! converged (a failed convergence is an error row).

use bench::report::Report;
use bench::scenarios::{self, Options};
use bench::target::Database;

fn opts() -> Options {
    Options::smoke(Database::Postgres)
}

fn assert_no_failure(report: &Report) {
    assert!(!report.rows.is_empty(), "the scenario reported nothing");
    for row in &report.rows {
        assert!(
            !row.note.contains("FAILED"),
            "{}: {}",
            row.scenario,
            row.note
        );
        assert!(
            row.learnsync.is_some_and(|v| v.is_finite()),
            "{} has no LearnSync figure",
            row.metric
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation() {
    let mut report = Report::default();
    scenarios::propagation(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
    assert!(
        report.rows.iter().all(|r| r.reference.is_some()),
        "the reference peer was measured too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let mut report = Report::default();
    scenarios::throughput(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections() {
    let mut report = Report::default();
    scenarios::connections(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync() {
    let mut report = Report::default();
    scenarios::first_sync(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_on_sqlite() {
    let mut report = Report::default();
    scenarios::rest(&Options::smoke(Database::Sqlite), &mut report)
        .await
        .unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_cost() {
    let mut report = Report::default();
    scenarios::apply(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
    assert_eq!(
        report.rows.len(),
        4,
        "an apply-cost and a receive-cost row per history size"
    );
    assert!(report.rows.iter().all(|r| r.learnsync.is_some()));
    assert!(
        report.rows.iter().any(|r| r.scenario.contains("receive")),
        "the receive cost is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage() {
    let mut report = Report::default();
    scenarios::storage(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_bundle() {
    let mut report = Report::default();
    scenarios::wasm(&mut report).await.unwrap();
    assert_no_failure(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import() {
    let mut report = Report::default();
    scenarios::import(&opts(), &mut report).await.unwrap();
    assert_no_failure(&report);
    assert_eq!(report.rows.len(), 2, "PostgreSQL and SQLite");
}
