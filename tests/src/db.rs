//! A fresh database per test, on either backend, dropped afterwards.
//!
//! PostgreSQL: a new database named `ls_test_<uuid>` on the server at `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). If that server cannot be reached the
//! test fails with instructions: tests never skip silently. SQLite: a new file in the system
//! temp directory. Either way the database is removed when the [`TestDb`] is dropped.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::Connection;

/// The default PostgreSQL server for tests (the local Debian cluster).
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL at `TEST_DATABASE_URL`.
    Postgres,
    /// A SQLite file in the temp directory.
    Sqlite,
}

impl Backend {
    /// Both backends, for tests that loop over them.
    pub const ALL: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];
}

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDb {
    backend: Backend,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { path: PathBuf },
}

/// The admin URL of the PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

impl TestDb {
    /// Creates an empty database (no migrations: the server or the store applies them).
    ///
    /// # Panics
    /// When PostgreSQL is unreachable, with a message saying how to start it.
    pub async fn new(backend: Backend) -> TestDb {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut conn = match tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect(&admin_url),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => panic!("{}", unreachable_message(&admin_url, &e.to_string())),
                    Err(_) => panic!("{}", unreachable_message(&admin_url, "timed out")),
                };
                let name = format!("ls_test_{id}");
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot create a test database on {admin_url}: {e} (the user needs CREATEDB)")
                    });
                let _ = conn.close().await;
                TestDb {
                    backend,
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("learnsync-test-{id}.db"));
                TestDb {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    cleanup: Cleanup::Sqlite { path },
                }
            }
        }
    }

    /// The URL to give the server as `DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

fn unreachable_message(url: &str, error: &str) -> String {
    format!(
        "PostgreSQL is not reachable at {url} ({error}).\n\
         The tests need a real PostgreSQL where the user may create databases. Start the local one\n\
         with `scripts/ensure-postgres.sh` (Debian: `pg_ctlcluster --skip-systemctl-redirect 15 main start`)\n\
         or set TEST_DATABASE_URL to another server."
    )
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                // Drop runs inside the test's runtime, which cannot be blocked on: do it on a
                // thread with a runtime of its own. FORCE ends connections a pool still holds.
                let admin_url = admin_url.clone();
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let dropper = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                            let _ = sqlx::query(&sql).execute(&mut conn).await;
                            let _ = conn.close().await;
                        }
                    });
                });
                let _ = dropper.join();
            }
        }
    }
}

/// Defines one test per backend from one async body taking a [`Backend`]:
///
/// ```ignore
/// e2e::both_backends!(creates_a_course, |backend| async move { … });
/// ```
/// expands to a module `creates_a_course` with tests `postgres` and `sqlite`, so nextest runs
/// (and reports) each backend on its own.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let f = $body;
                f($crate::db::Backend::Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let f = $body;
                f($crate::db::Backend::Sqlite).await;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "z"),
            "postgres://h:5432/z"
        );
    }
}
