//! The real `learnsync` binary as a child process, for tests that must kill it (`kill -9`),
//! run several instances, or outlive its database: crash, instance loss, database outage.
//!
//! ```ignore
//! let db = TestDb::new(Backend::Sqlite).await;
//! let mut server = ServerProcess::start(db.url(), &[("LEARNSYNC_COMPACT_AFTER", "4")]).await;
//! let anna = Account::register(&server.base, "anna@example.test").await;
//! server.kill9().await;
//! server.restart().await; // same database, same port
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sync_core::DocumentId;
use tokio::process::{Child, Command};

use crate::app::PASSWORD;
use crate::device::{Credentials, Device, DocIds};

/// How long a server gets to answer `/healthz` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server binary: `LEARNSYNC_BIN`, else `target/debug/learnsync` (built by
/// `cargo build -p learnsync`, which `scripts/test.sh` runs before the tests).
pub fn learnsync_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LEARNSYNC_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/learnsync");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p learnsync` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `learnsync serve` process.
pub struct ServerProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port (kept across restarts, so devices reconnect to the same address).
    pub port: u16,
    database_url: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts the server on `database_url` (a free port), with extra environment variables,
    /// and waits until it answers `/healthz`.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let mut server = ServerProcess {
            base: format!("http://127.0.0.1:{port}"),
            port,
            database_url: database_url.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut cmd = Command::new(learnsync_bin());
        cmd.arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .env("LEARNSYNC_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("LEARNSYNC_LOG", "warn")
            .env("LEARNSYNC_REGISTRATIONS_PER_MINUTE", "100000")
            .env("LEARNSYNC_SYNC_SHARDS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("learnsync starts"));
        if let Err(status) = self.wait_healthy().await {
            panic!(
                "learnsync exited while starting on port {}: {status}",
                self.port
            );
        }
    }

    /// Polls `/healthz` until it answers 200 (the server is up; the database may be down).
    /// `Err` when the process exited instead.
    async fn wait_healthy(&mut self) -> Result<(), std::process::ExitStatus> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(status);
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "learnsync did not answer /healthz on {} in time",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: the process ends at once, with no chance to flush or close anything.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // tokio's `start_kill` is SIGKILL on Unix.
            child.start_kill().expect("SIGKILL");
            let status = child.wait().await.expect("wait for the killed server");
            assert!(!status.success(), "the server was killed: {status}");
        }
    }

    /// Starts the server again on the same database, on the same port when it is still free
    /// (after a `kill -9` another process may have taken it: then on a new one, and
    /// [`ServerProcess::base`] says where — move devices there before reconnecting).
    pub async fn restart(&mut self) {
        let same_port_free = std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok();
        if !same_port_free {
            self.port = free_port();
            self.base = format!("http://127.0.0.1:{}", self.port);
        }
        self.spawn().await;
    }

    /// Whether the process is still running (it has not exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while it runs (to read its memory and open files from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The database URL it runs on.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A registered user with a bearer token, made through the REST API of any server.
#[derive(Debug, Clone)]
pub struct Account {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// A bearer token.
    pub token: String,
    /// The user's document ids.
    pub docs: DocIds,
}

impl Account {
    /// Registers `email` (password [`PASSWORD`]) and creates a token.
    pub async fn register(base: &str, email: &str) -> Account {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/auth/register"))
            .json(&json!({ "email": email, "password": PASSWORD, "display_name": email }))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 201, "register {email}");
        let user: Value = r.json().await.expect("user json");
        let token = Self::token(base, email).await;
        let docs: Value = http
            .get(format!("{base}/api/sync/documents"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("documents")
            .json()
            .await
            .expect("documents json");
        let id = |k: &str| {
            DocumentId::parse(docs[k].as_str().expect("document id")).expect("valid document id")
        };
        Account {
            id: user["id"].as_str().expect("user id").to_string(),
            email: email.to_string(),
            token,
            docs: DocIds {
                preferences: id("preferences"),
                learning: id("learning"),
            },
        }
    }

    /// A fresh bearer token for `email` (password [`PASSWORD`]).
    pub async fn token(base: &str, email: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/auth/tokens"))
            .json(&json!({ "name": "test", "email": email, "password": PASSWORD }))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status().as_u16(), 201, "token for {email}");
        let body: Value = r.json().await.expect("token json");
        body["token"].as_str().expect("token").to_string()
    }

    /// A device of this user (not connected yet) for the server at `base`.
    pub fn device(&self, base: &str) -> Device {
        Device::new(base, Credentials::Bearer(self.token.clone()), self.docs)
    }
}
