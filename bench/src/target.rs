//! The servers under test: LearnSync (the release binary, on a fresh PostgreSQL database or
//! SQLite file) and the reference peer (the official JavaScript sync server), each started as
//! its own process on 127.0.0.1 and stopped at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// LearnSync.
    Learnsync,
    /// The official automerge-repo sync server (Node).
    Reference,
}

impl Kind {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Learnsync => "learnsync",
            Kind::Reference => "reference",
        }
    }
}

/// LearnSync's database for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Database {
    /// A fresh database on the PostgreSQL at `BENCH_DATABASE_URL` / `TEST_DATABASE_URL`.
    Postgres,
    /// A fresh SQLite file.
    Sqlite,
}

/// A running server.
pub struct Server {
    /// Which one.
    pub kind: Kind,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `ws://127.0.0.1:<port>/sync` (LearnSync) or `ws://127.0.0.1:<port>` (reference).
    pub ws_url: String,
    child: Child,
    cleanup: Option<Cleanup>,
    database_url: Option<String>,
}

enum Cleanup {
    Postgres { admin: String, name: String },
    Dir(PathBuf),
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The PostgreSQL server the benchmark may create databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The learnsync binary: `BENCH_LEARNSYNC_BIN`, else target/release/learnsync (built by
/// `cargo run -p bench --release`'s caller), else target/debug/learnsync.
pub fn learnsync_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("BENCH_LEARNSYNC_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("learnsync");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "learnsync binary not found: run `cargo build --release -p learnsync` first (or set BENCH_LEARNSYNC_BIN)"
    )
}

/// Installs the reference server's pinned npm packages if needed, through
/// `scripts/setup-js.sh`, which takes a lock: the smoke tests run as parallel processes and
/// `npm ci` deletes `node_modules` before it installs.
pub fn ensure_reference_installed() -> Result<PathBuf> {
    let root = workspace_root();
    let status = std::process::Command::new(root.join("scripts/setup-js.sh"))
        .arg("bench/reference")
        .status()
        .context("running scripts/setup-js.sh for the reference server (is Node.js installed?)")?;
    if !status.success() {
        bail!("installing the reference server's npm packages in bench/reference failed");
    }
    Ok(root.join("bench/reference"))
}

impl Server {
    /// Starts LearnSync on a fresh database.
    pub async fn learnsync(db: Database, extra_env: &[(&str, String)]) -> Result<Self> {
        let port = free_port()?;
        let (url, cleanup) = ScratchDb::create(db).await?.into_parts();
        let mut cmd = Command::new(learnsync_binary()?);
        cmd.arg("serve")
            .env("DATABASE_URL", &url)
            .env("LEARNSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEARNSYNC_LOG", "warn")
            .env("LEARNSYNC_MESSAGES_PER_SEC", "100000")
            .env("LEARNSYNC_DB_MAX_CONNECTIONS", "24")
            // The fleet registers thousands of accounts from 127.0.0.1.
            .env("LEARNSYNC_REGISTRATIONS_PER_MINUTE", "10000000")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting learnsync")?;
        let server = Server {
            kind: Kind::Learnsync,
            base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/sync"),
            child,
            cleanup: Some(cleanup),
            database_url: Some(url),
        };
        server.wait_ready("/readyz").await?;
        Ok(server)
    }

    /// Starts the reference server with filesystem storage in a fresh directory.
    pub async fn reference() -> Result<Self> {
        let dir = ensure_reference_installed()?;
        let port = free_port()?;
        let data =
            std::env::temp_dir().join(format!("ls-bench-ref-{}", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new("node")
            .arg("--max-old-space-size=8192")
            .arg(dir.join("server.mjs"))
            .arg(port.to_string())
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdout = child.stdout.take().context("reference stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("listening") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !ready {
            bail!("the reference server did not start");
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            kind: Kind::Reference,
            base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}"),
            child,
            cleanup: Some(Cleanup::Dir(data)),
            database_url: None,
        })
    }

    async fn wait_ready(&self, path: &str) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not become ready", self.kind.name());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// LearnSync's database URL.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The server process id (for RSS and CPU readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server and removes its data.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run().await;
        }
        Ok(())
    }
}

/// A fresh database (PostgreSQL database or SQLite file) for one measurement, removed by
/// [`ScratchDb::drop_now`].
pub struct ScratchDb {
    url: String,
    cleanup: Cleanup,
}

impl ScratchDb {
    /// Creates an empty database of kind `db`.
    pub async fn create(db: Database) -> Result<Self> {
        let (url, cleanup) = match db {
            Database::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("ls_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .context("PostgreSQL unreachable: start it or set BENCH_DATABASE_URL")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await?;
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .unwrap_or(admin.clone());
                (format!("{base}/{name}"), Cleanup::Postgres { admin, name })
            }
            Database::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("ls-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                (
                    format!("sqlite://{}/bench.db?mode=rwc", dir.display()),
                    Cleanup::Dir(dir),
                )
            }
        };
        Ok(Self { url, cleanup })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn into_parts(self) -> (String, Cleanup) {
        (self.url, self.cleanup)
    }

    /// Removes the database.
    pub async fn drop_now(self) {
        self.cleanup.run().await;
    }
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::Postgres { admin, name } => {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            }
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Resident memory of a process, in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) a process has used, in seconds (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
