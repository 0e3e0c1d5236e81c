//! Configuration of `learnsync serve`: every option is a flag and an environment variable, with
//! a default that works on one box with no setup (`docs/deploy.md` lists them from `--help`).

use std::net::SocketAddr;

/// Options of the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database: `sqlite://<file>?mode=rwc` (one instance, the default) or
    /// `postgres://user@host/db` (one or many instances).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://learnsync.db?mode=rwc"
    )]
    pub database_url: String,

    /// Address and port to listen on.
    #[arg(long, env = "LEARNSYNC_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Mark cookies `Secure` (set when the server is reached over HTTPS, e.g. behind a TLS proxy).
    #[arg(long, env = "LEARNSYNC_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// Origins allowed to open the sync WebSocket (comma-separated, e.g.
    /// `https://learn.example.org`). Same-origin pages and clients that send no Origin (mobile
    /// apps) are always allowed.
    #[arg(long, env = "LEARNSYNC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Trust `X-Forwarded-For` for the client address (only behind your own reverse proxy).
    #[arg(long, env = "LEARNSYNC_TRUST_PROXY", default_value_t = false)]
    pub trust_proxy: bool,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "LEARNSYNC_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Largest legacy dump upload (all files of one request), in bytes.
    #[arg(long, env = "LEARNSYNC_MAX_UPLOAD_BYTES", default_value_t = 64 << 20)]
    pub max_upload_bytes: usize,

    /// Database connections per instance (PostgreSQL).
    #[arg(long, env = "LEARNSYNC_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Largest sync message a device may send, in bytes.
    #[arg(long, env = "LEARNSYNC_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,

    /// Sustained sync messages per second one connection may send (bursts up to 5 s worth).
    #[arg(long, env = "LEARNSYNC_MESSAGES_PER_SEC", default_value_t = 500)]
    pub messages_per_sec: u32,

    /// Most documents one connection may sync.
    #[arg(
        long,
        env = "LEARNSYNC_MAX_DOCS_PER_CONNECTION",
        default_value_t = 2_000
    )]
    pub max_docs_per_connection: usize,

    /// Sync worker shards (0: one per CPU).
    #[arg(long, env = "LEARNSYNC_SYNC_SHARDS", default_value_t = 0)]
    pub sync_shards: usize,

    /// Seconds a document may stay idle in memory before it is evicted.
    #[arg(long, env = "LEARNSYNC_IDLE_EVICT_SECS", default_value_t = 30)]
    pub idle_evict_secs: u64,

    /// Change rows after which a document is compacted into one snapshot (written documents
    /// are also compacted when they go idle).
    #[arg(long, env = "LEARNSYNC_COMPACT_AFTER", default_value_t = 64)]
    pub compact_after: i64,

    /// Seconds a connection may stay silent (no byte either way) before it is closed: drops
    /// half-open and never-finished connections. At least two sync ping intervals (21 s).
    #[arg(long, env = "LEARNSYNC_IDLE_CONNECTION_SECS", default_value_t = 60)]
    pub idle_connection_secs: u64,

    /// Failed logins allowed per minute, per client address and per email.
    #[arg(
        long,
        env = "LEARNSYNC_LOGIN_ATTEMPTS_PER_MINUTE",
        default_value_t = 10
    )]
    pub login_attempts_per_minute: u32,

    /// Client error reports accepted per user per minute.
    #[arg(long, env = "LEARNSYNC_CLIENT_LOGS_PER_MINUTE", default_value_t = 60)]
    pub client_logs_per_minute: u32,

    /// Accounts that may be registered per minute from one client address.
    #[arg(long, env = "LEARNSYNC_REGISTRATIONS_PER_MINUTE", default_value_t = 20)]
    pub registrations_per_minute: u32,

    /// This instance's id in the devices list (default: a random id per start).
    #[arg(long, env = "LEARNSYNC_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Directory of the web UI (`/admin`, `/app`); default: the one built into the binary.
    #[arg(long, env = "LEARNSYNC_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    /// Scheduler slice asked for on the server's runtime threads, in microseconds: 100 to
    /// 100,000, the range Linux (6.12 and later) accepts, or 0 for the kernel's default. Short
    /// slices let a woken thread preempt a database or other process sharing its cores,
    /// without taking more CPU
    #[arg(long, env = "LEARNSYNC_SCHED_SLICE_US", default_value_t = 100, value_parser = parse_sched_slice_us)]
    pub sched_slice_us: u64,

    /// Microseconds a busy group-commit writer lets a small batch (under 16 writes) wait for
    /// more before it commits, 0 to 100,000 (0: commit at once). Fewer, larger commits cost
    /// the database less per change; other devices get a change before its commit, so only
    /// its author's acknowledgement waits. Only writes queued while the previous commit ran
    /// (or within this delay of its end) wait; a lone write is committed at once
    #[arg(long, env = "LEARNSYNC_COMMIT_GATHER_US", default_value_t = 1_000, value_parser = parse_commit_gather_us)]
    pub commit_gather_us: u64,
}

/// `--commit-gather-us`: above 100 ms a busy server would hold every author's acknowledgement
/// that long, which no load repays; refused where the operator sees it.
fn parse_commit_gather_us(s: &str) -> Result<u64, String> {
    let us: u64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if us <= 100_000 {
        Ok(us)
    } else {
        Err(format!(
            "{us} µs is too long: use 0 to 100,000 (0 commits at once)"
        ))
    }
}

/// `--sched-slice-us`: the kernel would silently clamp a value outside 100–100,000 µs, so such
/// a value is refused where the operator sees it.
fn parse_sched_slice_us(s: &str) -> Result<u64, String> {
    let us: u64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if us == 0 || (100..=100_000).contains(&us) {
        Ok(us)
    } else {
        Err(format!(
            "{us} µs is outside the range Linux accepts: use 100 to 100,000, or 0 for the kernel's default"
        ))
    }
}

impl Config {
    /// The defaults (with `LEARNSYNC_*` environment variables applied), for commands other than
    /// `serve` that run parts of the server, such as `import`. An invalid variable is an error
    /// naming it, as it is for `serve`, rather than a silent fall-back to other settings.
    pub fn defaults() -> Result<Self, String> {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        <Defaults as clap::Parser>::try_parse_from(["learnsync"])
            .map(|d| d.config)
            .map_err(|e| {
                format!(
                    "a LEARNSYNC_* setting in the environment is invalid: {}",
                    // clap's first line; its hint about `--help` is for flags, not variables.
                    e.to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                )
            })
    }

    /// The defaults, pointing at `database_url` and listening on a random local port (tests).
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secure_cookies: false,
            allowed_origins: Vec::new(),
            trust_proxy: false,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 64 << 20,
            db_max_connections: 8,
            max_message_bytes: 16 << 20,
            messages_per_sec: 500,
            max_docs_per_connection: 2_000,
            sync_shards: 2,
            idle_evict_secs: 30,
            compact_after: 64,
            idle_connection_secs: 60,
            login_attempts_per_minute: 10,
            client_logs_per_minute: 60,
            // Tests register many users from 127.0.0.1.
            registrations_per_minute: 10_000,
            instance_id: None,
            web_dir: None,
            sched_slice_us: 0,
            commit_gather_us: 1_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: Config,
    }

    /// The server's options with one flag set, as clap parses them for `serve`.
    fn with_flag(flag: &str, value: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(["learnsync".to_string(), format!("--{flag}={value}")])
    }

    #[test]
    fn a_scheduler_slice_outside_the_kernels_range_is_refused() {
        let parse = |v: &str| with_flag("sched-slice-us", v);
        for ok in ["0", "100", "2000", "100000"] {
            let args = parse(ok).unwrap_or_else(|e| panic!("{ok} refused: {e}"));
            assert_eq!(args.config.sched_slice_us.to_string(), ok);
        }
        for bad in ["50", "100001", "-1", "fast"] {
            let Err(e) = parse(bad) else {
                panic!("{bad} accepted")
            };
            assert!(e.to_string().contains("--sched-slice-us"), "{e}");
        }
        let e = parse("50").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("100 to 100,000"), "{e}");
    }

    #[test]
    fn a_commit_gather_delay_past_100_ms_is_refused() {
        let parse = |v: &str| with_flag("commit-gather-us", v);
        for ok in ["0", "1000", "100000"] {
            let args = parse(ok).unwrap_or_else(|e| panic!("{ok} refused: {e}"));
            assert_eq!(args.config.commit_gather_us.to_string(), ok);
        }
        for bad in ["100001", "-1", "soon"] {
            let Err(e) = parse(bad) else {
                panic!("{bad} accepted")
            };
            assert!(e.to_string().contains("--commit-gather-us"), "{e}");
        }
    }
}
