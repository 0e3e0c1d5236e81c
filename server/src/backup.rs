//! `learnsync backup <file>` and `learnsync restore <file>`: a consistent copy of the database
//! taken while the server runs, and bringing it back into an empty database.
//!
//! - SQLite: `VACUUM INTO` — one read transaction, so the copy is one consistent state even
//!   while the server writes (WAL readers do not block the writer), compacted, and a plain
//!   SQLite file. Restore checks it (`PRAGMA integrity_check`) and copies it the same way.
//! - PostgreSQL: `pg_dump --format=custom` (one repeatable-read snapshot of the whole database,
//!   taken without blocking the server) and `pg_restore --single-transaction` (all or nothing).
//!   The tools come from `--pg-bin-dir`, else `PATH`, else the newest
//!   `/usr/lib/postgresql/<version>/bin` (Debian installs them there).
//!
//! A backup is written under a temporary name and renamed when complete, so a file with the
//! requested name is always a whole backup. Restore refuses a database that has any table:
//! mixing a backup into live data would be neither the backup nor the live data.
//!
//! After a restore the server's storage id is new and its per-device sync states are gone:
//! devices then sync from scratch, and those that hold changes newer than the backup send
//! them back (Automerge's sync protocol finds what the restored server lacks). Rows that are
//! not documents (accounts, catalog, reports, logs written after the backup) come back only
//! as they were at backup time. `docs/deploy.md` has the procedure.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use crate::cli::{CliError, DbArgs};
use crate::store::StoreError;

/// `learnsync backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The backup file to write. It must not exist (a backup never overwrites anything).
    pub file: PathBuf,
    /// The database to back up.
    #[command(flatten)]
    pub db: DbArgs,
    /// Directory holding `pg_dump`/`pg_restore` (PostgreSQL only; default: `PATH`, then the
    /// newest `/usr/lib/postgresql/<version>/bin`).
    #[arg(long, env = "LEARNSYNC_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

/// `learnsync restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (written by `learnsync backup`).
    pub file: PathBuf,
    /// The database to restore into; it must be empty (a new SQLite file, or a database just
    /// made with `createdb`).
    #[command(flatten)]
    pub db: DbArgs,
    /// Directory holding `pg_dump`/`pg_restore` (see `backup --help`).
    #[arg(long, env = "LEARNSYNC_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

/// Why a backup or a restore failed. Messages are for the operator at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Nothing to back up there.
    #[error("no database at {0}")]
    SourceMissing(PathBuf),
    /// The backup file exists.
    #[error("{0} exists; a backup never overwrites a file, choose a new name")]
    TargetExists(PathBuf),
    /// Restore into a database that holds tables.
    #[error(
        "the target database is not empty ({0} tables); restore only into a new, empty database (a new SQLite file, or `createdb` on PostgreSQL)"
    )]
    NotEmpty(i64),
    /// The file is not a backup this database can take.
    #[error("{0}")]
    WrongFile(String),
    /// A PostgreSQL client tool is missing.
    #[error(
        "{0} not found: install the PostgreSQL client (Debian: postgresql-client) or pass --pg-bin-dir"
    )]
    ToolMissing(&'static str),
    /// A PostgreSQL client tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// Which tool.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The database URL cannot be used.
    #[error("DATABASE_URL: {0}")]
    BadUrl(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The store failed (migrations after a restore).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// File system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The file.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const PG_CUSTOM_MAGIC: &[u8] = b"PGDMP";

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Runs `learnsync backup`.
pub async fn run_backup(args: BackupArgs) -> Result<(), CliError> {
    let summary = backup(
        &args.db.database_url,
        &args.file,
        args.pg_bin_dir.as_deref(),
    )
    .await?;
    println!(
        "backup written: {} ({} bytes)",
        summary.file.display(),
        summary.bytes
    );
    Ok(())
}

/// Runs `learnsync restore`.
pub async fn run_restore(args: RestoreArgs) -> Result<(), CliError> {
    restore(
        &args.db.database_url,
        &args.file,
        args.pg_bin_dir.as_deref(),
    )
    .await?;
    println!(
        "restored {}; start the server on it (devices send back what is newer than the backup)",
        args.file.display()
    );
    Ok(())
}

/// Writes a consistent backup of the database at `url` to `file` (which must not exist).
pub async fn backup(
    url: &str,
    file: &Path,
    pg_bin_dir: Option<&Path>,
) -> Result<BackupSummary, BackupError> {
    if file.exists() {
        return Err(BackupError::TargetExists(file.to_path_buf()));
    }
    let partial = partial_name(file);
    let _ = std::fs::remove_file(&partial);
    let written = if is_postgres(url) {
        pg_backup(url, &partial, pg_bin_dir).await
    } else if url.starts_with("sqlite:") {
        sqlite_backup(url, &partial).await
    } else {
        Err(BackupError::BadUrl(
            "must start with postgres:// or sqlite:".into(),
        ))
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // No-clobber rename: a file that appeared meanwhile is not replaced.
    if file.exists() {
        let _ = std::fs::remove_file(&partial);
        return Err(BackupError::TargetExists(file.to_path_buf()));
    }
    std::fs::rename(&partial, file)?;
    let bytes = std::fs::metadata(file)?.len();
    Ok(BackupSummary {
        file: file.to_path_buf(),
        bytes,
    })
}

/// Restores the backup `file` into the EMPTY database at `url`, then applies newer migrations
/// and gives the server a new storage id (see the module docs).
pub async fn restore(url: &str, file: &Path, pg_bin_dir: Option<&Path>) -> Result<(), BackupError> {
    let head = read_head(file)?;
    if is_postgres(url) {
        if !head.starts_with(PG_CUSTOM_MAGIC) {
            return Err(BackupError::WrongFile(format!(
                "{} is not a PostgreSQL backup (pg_dump custom format){}",
                file.display(),
                if head.starts_with(SQLITE_MAGIC) {
                    "; it is a SQLite backup: restore it into a sqlite:// database"
                } else {
                    ""
                }
            )));
        }
        pg_restore(url, file, pg_bin_dir).await?;
    } else if url.starts_with("sqlite:") {
        if !head.starts_with(SQLITE_MAGIC) {
            return Err(BackupError::WrongFile(format!(
                "{} is not a SQLite backup{}",
                file.display(),
                if head.starts_with(PG_CUSTOM_MAGIC) {
                    "; it is a PostgreSQL backup: restore it into a postgres:// database"
                } else {
                    ""
                }
            )));
        }
        sqlite_restore(url, file).await?;
    } else {
        return Err(BackupError::BadUrl(
            "must start with postgres:// or sqlite:".into(),
        ));
    }
    after_restore(url).await
}

fn read_head(file: &Path) -> Result<Vec<u8>, BackupError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                BackupError::WrongFile(format!("{} does not exist", file.display()))
            }
            _ => BackupError::Io(e),
        })?
        .take(16)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// `<file>.partial`, next to the file (same file system, so the final rename is atomic).
fn partial_name(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Migrations newer than the backup, a new storage id and no per-device sync states: devices
/// must not trust what they remember having sent to the server before the restore.
async fn after_restore(url: &str) -> Result<(), BackupError> {
    let connected = crate::store::connect(url, 2, "restore").await?;
    let store = connected.store();
    store.migrate().await?;
    store
        .meta_set("storage_id", &uuid::Uuid::new_v4().to_string())
        .await?;
    store.delete_sync_states(None).await?;
    Ok(())
}

// ---- SQLite ---------------------------------------------------------------------------------

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, BackupError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| BackupError::BadUrl(e.to_string()))?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(30))
        .disable_statement_logging())
}

fn utf8_path(path: &Path) -> Result<&str, BackupError> {
    path.to_str().ok_or_else(|| {
        BackupError::WrongFile(format!(
            "{} is not a UTF-8 path, which SQLite needs",
            path.display()
        ))
    })
}

async fn sqlite_backup(url: &str, partial: &Path) -> Result<(), BackupError> {
    let options = sqlite_options(url)?;
    let source = options.get_filename().to_path_buf();
    if !source.exists() {
        return Err(BackupError::SourceMissing(source));
    }
    let mut conn = options.connect().await?;
    sqlx::query("VACUUM INTO $1")
        .bind(utf8_path(partial)?)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    // Read it back: a backup that does not open is no backup.
    check_sqlite_backup(partial).await
}

async fn check_sqlite_backup(file: &Path) -> Result<(), BackupError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await?;
    let check: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    let migrated = sqlx::query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut conn)
    .await?
    .is_some();
    conn.close().await?;
    if check != "ok" {
        return Err(BackupError::WrongFile(format!(
            "{} fails SQLite's integrity check: {check}",
            file.display()
        )));
    }
    if !migrated {
        return Err(BackupError::WrongFile(format!(
            "{} is a SQLite database but not a LearnSync one",
            file.display()
        )));
    }
    Ok(())
}

async fn sqlite_restore(url: &str, file: &Path) -> Result<(), BackupError> {
    let target = sqlite_options(url)?.get_filename().to_path_buf();
    if target.exists() {
        let mut conn = sqlite_options(url)?.connect().await?;
        let tables: i64 = sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        conn.close().await?;
        if tables > 0 {
            return Err(BackupError::NotEmpty(tables));
        }
        // An empty file (no tables): VACUUM INTO wants to create it.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = target.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
    check_sqlite_backup(file).await?;
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .disable_statement_logging()
        .connect()
        .await?;
    sqlx::query("VACUUM INTO $1")
        .bind(utf8_path(&target)?)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

// ---- PostgreSQL -----------------------------------------------------------------------------

/// Finds a PostgreSQL client tool (see the module docs for where it looks).
pub fn pg_tool(name: &'static str, bin_dir: Option<&Path>) -> Result<PathBuf, BackupError> {
    if let Some(dir) = bin_dir {
        let p = dir.join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BackupError::ToolMissing(name))
        };
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    // Debian keeps every installed version side by side; the newest dumps every older server.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or(BackupError::ToolMissing(name))
}

/// The URL without its password, and the password: the tools get the password through
/// `PGPASSWORD`, so it does not show in the process list.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let Some(colon) = rest[..at].find(':') else {
        return (url.to_string(), None);
    };
    let password = percent_decode(&rest[colon + 1..at]);
    (
        format!("{}{}{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        Some(password),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn run_tool(
    tool: &'static str,
    bin_dir: Option<&Path>,
    url: &str,
    args: &[&std::ffi::OsStr],
) -> Result<(), BackupError> {
    let program = pg_tool(tool, bin_dir)?;
    let (url, password) = split_password(url);
    let mut command = tokio::process::Command::new(program);
    command.args(args).arg("--dbname").arg(url);
    if let Some(p) = password {
        command.env("PGPASSWORD", p);
    }
    let out = command.output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BackupError::ToolFailed {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

async fn pg_backup(url: &str, partial: &Path, bin_dir: Option<&Path>) -> Result<(), BackupError> {
    run_tool(
        "pg_dump",
        bin_dir,
        url,
        &[
            "--format=custom".as_ref(),
            "--no-owner".as_ref(),
            "--no-privileges".as_ref(),
            "--file".as_ref(),
            partial.as_os_str(),
        ],
    )
    .await
}

async fn pg_restore(url: &str, file: &Path, bin_dir: Option<&Path>) -> Result<(), BackupError> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let tables: i64 = sqlx::query(
        "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await?
    .try_get(0)?;
    conn.close().await?;
    if tables > 0 {
        return Err(BackupError::NotEmpty(tables));
    }
    run_tool(
        "pg_restore",
        bin_dir,
        url,
        &[
            "--no-owner".as_ref(),
            "--no-privileges".as_ref(),
            "--exit-on-error".as_ref(),
            "--single-transaction".as_ref(),
            file.as_os_str(),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, split_password};

    #[test]
    fn password_moves_out_of_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/db?sslmode=disable"),
            (
                "postgres://u@h:5432/db?sslmode=disable".to_string(),
                Some("p@ss".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://postgres@127.0.0.1/x"),
            ("postgres://postgres@127.0.0.1/x".to_string(), None)
        );
        assert_eq!(
            split_password("postgres://h/db"),
            ("postgres://h/db".to_string(), None)
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
