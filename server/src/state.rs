//! The one state every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::rate_limit::RateLimiter;
use crate::config::Config;
use crate::courses::CatalogCache;
use crate::imports::ImportJobs;
use crate::store::Store;
use crate::sync::SyncEngine;

/// Rate limiters of the REST API.
#[derive(Debug)]
pub struct Limits {
    /// Failed logins per client address and per email.
    pub login: RateLimiter,
    /// Registrations per client address.
    pub register: RateLimiter,
    /// Client error reports per user.
    pub client_logs: RateLimiter,
    /// Course reports per user.
    pub reports: RateLimiter,
    /// Browser first-run legacy imports per user.
    pub imports: RateLimiter,
}

impl Limits {
    /// Limits from the configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            login: RateLimiter::new(config.login_attempts_per_minute.max(1), 60_000),
            register: RateLimiter::new(config.registrations_per_minute, 60_000),
            client_logs: RateLimiter::new(config.client_logs_per_minute.max(1), 60_000),
            reports: RateLimiter::new(20, 60_000),
            imports: RateLimiter::new(10, 60_000),
        }
    }
}

/// Shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Configuration.
    pub config: Arc<Config>,
    /// The sync engine (hub shards, storage writer, fan-out).
    pub sync: Arc<SyncEngine>,
    /// Rate limiters.
    pub limits: Arc<Limits>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// Cached public catalog pages.
    pub catalog: Arc<CatalogCache>,
    /// Legacy import jobs started from the admin page.
    pub imports: Arc<ImportJobs>,
    /// This instance's id (devices list, logs).
    pub instance_id: Arc<str>,
    /// Whether the database answered the last health probe.
    pub db_healthy: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the server can currently store anything.
    pub fn is_degraded(&self) -> bool {
        !self.db_healthy.load(Ordering::Relaxed)
    }
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}
