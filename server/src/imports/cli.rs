//! `learnsync import <file|dir>… [--user …] [--dry-run]`: the import pipeline from the command
//! line, with a progress bar, a summary table and a non-zero exit when anything failed.
//!
//! It runs the same pipeline as the admin page against the same database, with its own sync
//! engine: document changes are stored (and, on PostgreSQL, announced to running server
//! instances, which pass them on to connected devices).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DumpInput, ImportOptions, Importer, MAX_DUMPS, read_dumps};
use crate::cli::CliError;
use crate::config::Config;
use crate::model::{MigrationRun, RunSource, RunStatus};
use crate::sync::{SyncConfig, SyncEngine};

/// Arguments of `learnsync import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Dumps: `.json` files (`JSON.stringify(localStorage)`), `.zip` archives of them, or
    /// directories holding either (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The user every dump belongs to (account id, email or legacy id). By default each
    /// dump's own legacy user id decides, creating placeholder accounts for ids never seen.
    #[arg(long)]
    pub user: Option<String>,
    /// Show what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the finished run as JSON instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Database URL (see `serve --help`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://learnsync.db?mode=rwc"
    )]
    pub database_url: String,
}

/// Runs `learnsync import`.
pub async fn run(args: ImportArgs) -> Result<(), CliError> {
    let dumps = collect(&args.paths)?;
    if dumps.is_empty() {
        return Err(CliError::Input(
            "no .json or .zip dumps found in the given paths".into(),
        ));
    }
    if dumps.len() > MAX_DUMPS {
        return Err(CliError::Input(format!(
            "{} dumps found; at most {MAX_DUMPS} per run (split the directory)",
            dumps.len()
        )));
    }
    let mut config = Config::defaults().map_err(CliError::Input)?;
    config.database_url = args.database_url.clone();
    // No device is connected to this process: a document is done with once its import edit is
    // stored. Evicted a second later instead of 30 s, a 10,000-dump run peaks at 396 MB
    // resident instead of 795 MB (BENCHMARKS.md, P5).
    config.idle_evict_secs = 1;
    // A dump holds a connection only for the length of a statement and spends most of its time
    // waiting for its documents' group commit, so the dumps in flight share 32 PostgreSQL
    // connections (32 served 64 dumps faster than 72 did: fewer backends contending for the
    // cores). SQLite's store sizes its own pools and ignores this.
    let pool = if args.database_url.starts_with("sqlite:") {
        config.db_max_connections
    } else {
        config.db_max_connections.max(32)
    };
    // One name for this process, in its notifications and in its instance record.
    let instance_id = format!("cli-import-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    let connected = crate::store::connect(&args.database_url, pool, &instance_id).await?;
    let store = connected.store();
    store.migrate().await?;
    let user = match &args.user {
        None => None,
        Some(who) => Some(find_user(&store, who).await?),
    };

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut sync_config = SyncConfig::from_config(&config);
    sync_config.compact_idle = false;
    // Commits of up to 256 documents: three writers overlap them with the import's own work
    // (10,000 dumps: 1,287 and 1,469/s against 1,199 and 1,182 with one; BENCHMARKS.md, P5).
    sync_config.postgres_writers = 3;
    // No gathering: the import keeps its writers full, and no other device waits on the
    // other side of its commits; P5 was measured without it.
    sync_config.commit_gather = std::time::Duration::ZERO;
    let sync = SyncEngine::start(
        store.clone(),
        connected.change_feed(),
        sync_config,
        instance_id,
        "cli".into(),
        cancel.clone(),
        &tracker,
    )
    .await?;
    let importer = Importer::new(store.clone(), sync).with_concurrency(super::CLI_CONCURRENCY);
    let label = args
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let options = ImportOptions {
        source: RunSource::Cli,
        actor_id: None,
        user,
        dry_run: args.dry_run,
        label,
    };
    let total = dumps.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {pos}/{len} dumps {per_sec} ETA {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let run = importer.begin(total, &options).await?;
    let progress = bar.clone();
    let result = importer
        .run(run, dumps, &options, move |p| {
            progress.set_position(p.done as u64);
            progress.set_message(p.current.clone());
        })
        .await;
    bar.finish_and_clear();
    // Let the writers finish and the fan-out notices go out before the process ends.
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let run = result?;
    let elapsed = started.elapsed();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run).unwrap_or_else(|_| "{}".into())
        );
    } else {
        print_summary(&run, elapsed);
    }
    match run.status {
        RunStatus::Succeeded => Ok(()),
        other => Err(CliError::ImportFailed(format!(
            "import {}: {} of {total} dumps could not be imported, {} values failed (run {})",
            other.as_str(),
            run.counts["dumps_failed"],
            run.counts["failed"],
            run.id
        ))),
    }
}

/// Every dump under `paths`, in a stable order.
fn collect(paths: &[PathBuf]) -> Result<Vec<DumpInput>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut dumps = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match std::fs::read(&file) {
            Ok(bytes) => dumps.extend(read_dumps(&name, bytes)),
            Err(e) => dumps.push(DumpInput {
                name,
                text: Err(format!("cannot read: {e}")),
            }),
        }
        if dumps.len() > MAX_DUMPS {
            break;
        }
    }
    Ok(dumps)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("zip"))
        {
            out.push(path);
        }
    }
    Ok(())
}

async fn find_user(
    store: &Arc<dyn crate::store::Store>,
    who: &str,
) -> Result<crate::store::UserRecord, CliError> {
    if let Some(u) = store.user(who).await? {
        return Ok(u);
    }
    if who.contains('@')
        && let Some(u) = store.user_by_email(&who.to_lowercase()).await?
    {
        return Ok(u);
    }
    if let Some(u) = store.user_by_legacy_id(who).await? {
        return Ok(u);
    }
    Err(CliError::Input(format!(
        "no user with id, email or legacy id {who:?}"
    )))
}

/// The per-key totals over all dumps, then the failed dumps.
fn print_summary(run: &MigrationRun, elapsed: std::time::Duration) {
    const OUTCOMES: [&str; 5] = ["imported", "merged", "unchanged", "skipped", "failed"];
    let mut table: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    let mut failed_dumps = Vec::new();
    for dump in run.report.as_array().into_iter().flatten() {
        if let Some(error) = dump["error"].as_str() {
            failed_dumps.push(format!(
                "  {}: {error}",
                dump["dump"].as_str().unwrap_or("?")
            ));
        }
        for row in dump["keys"].as_array().into_iter().flatten() {
            let key = row["key"].as_str().unwrap_or("?").to_string();
            let outcome = row["outcome"].as_str().unwrap_or("");
            if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
                table.entry(key).or_default()[i] += row["count"].as_u64().unwrap_or(0);
            }
        }
    }
    let width = table.keys().map(String::len).max().unwrap_or(3).max(3);
    println!(
        "{:width$}  {:>9} {:>9} {:>9} {:>9} {:>9}",
        "key", OUTCOMES[0], OUTCOMES[1], OUTCOMES[2], OUTCOMES[3], OUTCOMES[4]
    );
    for (key, c) in &table {
        println!(
            "{key:width$}  {:>9} {:>9} {:>9} {:>9} {:>9}",
            c[0], c[1], c[2], c[3], c[4]
        );
    }
    if !failed_dumps.is_empty() {
        println!("\ndumps that could not be imported:");
        for line in &failed_dumps {
            println!("{line}");
        }
    }
    let users = run.counts["users"].as_array().map_or(0, Vec::len);
    let secs = elapsed.as_secs_f64().max(0.001);
    println!(
        "\nrun {} {}: {} dumps in {:.1}s ({:.0} dumps/s), {} users changed, {} placeholder accounts created{}",
        run.id,
        run.status.as_str(),
        run.dumps_done,
        secs,
        run.dumps_done as f64 / secs,
        users,
        run.counts["placeholders"].as_u64().unwrap_or(0),
        if run.dry_run {
            " — dry run: nothing was changed"
        } else {
            ""
        }
    );
}
