//! `cargo run -p bench --release -- <scenario>`: see bench/README.md.

use anyhow::Result;
use bench::report::{Report, machine};
use bench::scenarios::{self, Options};
use bench::target::{Database, Kind};
use clap::{Parser, ValueEnum};

/// The load generator shares the machine's two cores with the server it measures, so its own
/// CPU is taken from the server's: with glibc's allocator, 14% of its samples in P1 were
/// `malloc` and `free` (Automerge allocates per operation). mimalloc, which the server uses
/// too, costs less; the same generator drives every target, so the comparison stays fair.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// P1: propagation latency under background load.
    Propagation,
    /// P2: sustained throughput.
    Throughput,
    /// P2's ceiling: Automerge's apply cost per change, one and ten per call.
    Apply,
    /// P3: connections and memory per device.
    Connections,
    /// P4: first sync of a heavy user.
    FirstSync,
    /// P5: legacy import throughput (CLI, PostgreSQL and SQLite).
    Import,
    /// P6: REST search and cached catalog pages.
    Rest,
    /// P7: storage per document after compaction.
    Storage,
    /// P8: browser bundle size.
    Wasm,
    /// Everything above.
    All,
}

/// LearnSync benchmark harness.
#[derive(Debug, Parser)]
struct Args {
    /// Which scenario.
    scenario: Scenario,
    /// Seconds-long sizes (what the test suite runs) instead of GOALS.md's.
    #[arg(long)]
    smoke: bool,
    /// LearnSync's database.
    #[arg(long, value_enum, default_value = "postgres")]
    database: Database,
    /// Servers to measure (default: both).
    #[arg(long, value_enum)]
    target: Vec<Kind>,
    /// P1 device counts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Background changes per second (above 0, at most 1,000,000).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Seconds of measurement per step.
    #[arg(long)]
    seconds: Option<u64>,
    /// P3 devices.
    #[arg(long)]
    connections: Option<usize>,
    /// P6 courses.
    #[arg(long)]
    courses: Option<usize>,
    /// P5 dumps.
    #[arg(long)]
    dumps: Option<usize>,
    /// P5: write the dumps into this folder and keep them there (to run `learnsync import`
    /// on them by hand, under a profiler).
    #[arg(long)]
    keep_dumps: Option<std::path::PathBuf>,
    /// Where to write results.
    #[arg(long, default_value = "bench/results")]
    out: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Thousands of sockets: raise the descriptor limit (the servers inherit it). 20,000 devices
    // need 20,000 descriptors on each side of loopback, and some machines' hard limit is just
    // that: a process allowed to (root) raises the hard limit too.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get()
        && hard < 200_000
    {
        let _ = rlimit::Resource::NOFILE.set(200_000, 200_000);
    }
    let _ = rlimit::increase_nofile_limit(200_000);
    let mut opts = if args.smoke {
        Options::smoke(args.database)
    } else {
        Options::full(args.database)
    };
    if !args.target.is_empty() {
        opts.targets = args.target.clone();
    }
    if !args.devices.is_empty() {
        opts.devices = args.devices.clone();
    }
    if let Some(r) = args.rate {
        opts.rate = r;
    }
    if let Some(s) = args.seconds {
        opts.seconds = s;
    }
    if let Some(c) = args.connections {
        opts.connections = c;
    }
    if let Some(c) = args.courses {
        opts.courses = c;
    }
    if let Some(d) = args.dumps {
        opts.dumps = d;
    }
    opts.keep_dumps = args.keep_dumps.clone();
    let mut report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Report::default()
    };
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Propagation {
        let result = scenarios::propagation(&opts, &mut report).await;
        record_failure(&mut report, "propagation", result);
    }
    if all || args.scenario == Scenario::Throughput {
        let result = scenarios::throughput(&opts, &mut report).await;
        record_failure(&mut report, "throughput", result);
    }
    if all || args.scenario == Scenario::Apply {
        let result = scenarios::apply(&opts, &mut report).await;
        record_failure(&mut report, "apply", result);
    }
    if all || args.scenario == Scenario::Connections {
        let result = scenarios::connections(&opts, &mut report).await;
        record_failure(&mut report, "connections", result);
    }
    if all || args.scenario == Scenario::FirstSync {
        let result = scenarios::first_sync(&opts, &mut report).await;
        record_failure(&mut report, "first_sync", result);
    }
    if all || args.scenario == Scenario::Import {
        let result = scenarios::import(&opts, &mut report).await;
        record_failure(&mut report, "import", result);
    }
    if all || args.scenario == Scenario::Rest {
        let result = scenarios::rest(&opts, &mut report).await;
        record_failure(&mut report, "rest", result);
    }
    if all || args.scenario == Scenario::Storage {
        let result = scenarios::storage(&opts, &mut report).await;
        record_failure(&mut report, "storage", result);
    }
    if all || args.scenario == Scenario::Wasm {
        let result = scenarios::wasm(&mut report).await;
        record_failure(&mut report, "wasm", result);
    }
    let name = format!(
        "{:?}-{}",
        args.scenario,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    )
    .to_lowercase();
    report.write(&args.out, &name)?;
    println!("\n{}", report.markdown());
    Ok(())
}

/// `--rate`: a finite rate the harness can schedule (its arrivals are drawn in advance).
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 {
        Ok(rate)
    } else {
        Err(format!(
            "{s} is not a rate above 0 and at most 1,000,000 per second"
        ))
    }
}

/// A scenario that could not finish becomes a FAILED row, so the others still run and the
/// table says what broke.
fn record_failure(report: &mut Report, scenario: &str, result: Result<()>) {
    if let Err(e) = result {
        eprintln!("{scenario}: {e:#}");
        report.push(bench::report::Row {
            scenario: scenario.into(),
            metric: "—".into(),
            learnsync: None,
            reference: None,
            lower_is_better: true,
            note: format!("FAILED: {e:#}"),
        });
    }
}
