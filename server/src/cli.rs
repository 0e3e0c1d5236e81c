//! The `learnsync` command line: `serve`, `migrate`, `import`, `backup`, `restore`, `admin …`.

use clap::{Parser, Subcommand};

use crate::config::Config;

/// LearnSync: an offline-first sync server for the learnMode platform.
#[derive(Debug, Parser)]
#[command(name = "learnsync", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (e.g. `info`, `learnsync=debug`).
    #[arg(long, env = "LEARNSYNC_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log as JSON lines.
    #[arg(
        long,
        env = "LEARNSYNC_LOG_JSON",
        default_value_t = false,
        global = true
    )]
    pub log_json: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies migrations first).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Administration tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Import legacy `localStorage` dumps (the old learnMode app's data).
    Import(crate::imports::cli::ImportArgs),
    /// Write a consistent backup of the database while the server runs.
    Backup(crate::backup::BackupArgs),
    /// Restore a backup into an EMPTY database.
    Restore(crate::backup::RestoreArgs),
}

/// Just the database.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Database URL (see `serve --help`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://learnsync.db?mode=rwc"
    )]
    pub database_url: String,
}

/// `learnsync admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user (the first admin is created this way).
    CreateUser {
        /// Database.
        #[command(flatten)]
        db: DbArgs,
        /// Login email.
        #[arg(long)]
        email: String,
        /// Password (at least 8 characters); read from LEARNSYNC_PASSWORD if not given.
        #[arg(long, env = "LEARNSYNC_PASSWORD", hide_env_values = true)]
        password: String,
        /// Display name.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
        /// learner, teacher or admin.
        #[arg(long, default_value = "learner")]
        role: String,
    },
    /// Print everything held about one user as JSON (the same document as `GET /api/me/export`).
    ExportUser {
        /// Database.
        #[command(flatten)]
        db: DbArgs,
        /// The user's id.
        id: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Starting the server failed.
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Bad input.
    #[error("{0}")]
    Input(String),
    /// An import finished, but not everything could be imported (the run record has details).
    #[error("{0}")]
    ImportFailed(String),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A backup or restore failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
}

/// Sets up logging: human-readable, or JSON lines for log collectors.
pub fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(log_filter(filter))
        .unwrap_or_else(|_| EnvFilter::new(log_filter("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Every connected device holds a socket, and the usual soft limit of 1,024 open files would
/// refuse devices long before memory runs out (GOALS.md P3 is 20,000 devices per instance).
/// The soft limit goes up to the hard limit, which only the system may raise.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Runs a command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(config) => {
            raise_open_file_limit();
            let app = crate::app::Application::build(*config).await?;
            tracing::info!(address = %app.local_addr(), "LearnSync listening");
            let token = app.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: closing sockets, finishing writes");
                token.cancel();
            });
            app.run_until_stopped().await?;
            Ok(())
        }
        Command::Import(args) => crate::imports::cli::run(args).await,
        Command::Backup(args) => crate::backup::run_backup(args).await,
        Command::Restore(args) => crate::backup::run_restore(args).await,
        Command::Admin(AdminCommand::ExportUser { db, id, output }) => {
            crate::export::run_cli(&db.database_url, &id, output.as_deref()).await
        }
        Command::Migrate(db) => {
            let connected = crate::store::connect(&db.database_url, 2, "cli").await?;
            connected.store().migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin(AdminCommand::CreateUser {
            db,
            email,
            password,
            display_name,
            role,
        }) => {
            let role = crate::model::Role::parse(&role)
                .ok_or_else(|| CliError::Input("role must be learner, teacher or admin".into()))?;
            let email = crate::auth::routes::normalize_email(&email)
                .map_err(|e| CliError::Input(e.to_string()))?;
            crate::auth::password::validate(&password)
                .map_err(|e| CliError::Input(e.to_string()))?;
            let display_name = crate::auth::routes::validate_display_name(&display_name)
                .map_err(|e| CliError::Input(e.to_string()))?;
            let connected = crate::store::connect(&db.database_url, 2, "cli").await?;
            let store = connected.store();
            store.migrate().await?;
            let hash = crate::auth::password::hash_blocking(&password)
                .map_err(|e| CliError::Input(e.to_string()))?;
            let user = store
                .create_user(&crate::store::NewUser {
                    id: crate::auth::routes::new_id(),
                    email: Some(email),
                    display_name,
                    password_hash: Some(hash),
                    role,
                    legacy_id: None,
                    doc_seed: crate::auth::routes::new_doc_seed(),
                    now: crate::model::now_ms(),
                })
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Conflict(_) => {
                        CliError::Input("a user with this email exists".into())
                    }
                    other => other.into(),
                })?;
            println!(
                "created {} {} ({})",
                user.user.role,
                user.user.email.unwrap_or_default(),
                user.user.id
            );
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The filter actually installed: automerge's own spans are held to `warn` unless the filter
/// names automerge. Automerge opens an `info` span for every column it parses, so at the
/// default level each document load built and formatted dozens of spans nobody reads (5% of
/// a bulk import's CPU, BENCHMARKS.md P5).
fn log_filter(filter: &str) -> String {
    if filter.contains("automerge") {
        filter.to_string()
    } else {
        format!("{filter},automerge=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn automerge_spans_stay_quiet_unless_asked_for() {
        assert_eq!(log_filter("info"), "info,automerge=warn");
        assert_eq!(
            log_filter("learnsync=debug"),
            "learnsync=debug,automerge=warn"
        );
        assert_eq!(log_filter("info,automerge=trace"), "info,automerge=trace");
        for filter in ["info", "debug", "warn,learnsync=trace"] {
            assert!(tracing_subscriber::EnvFilter::try_new(log_filter(filter)).is_ok());
        }
    }
}
