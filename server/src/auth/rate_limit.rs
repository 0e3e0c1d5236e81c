//! Fixed-window counters that protect login and client log ingest. In memory, per instance:
//! behind a load balancer each instance limits on its own, which still bounds an attacker.

use std::collections::HashMap;
use std::sync::Mutex;

/// Counts events per key in fixed windows.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window_ms: i64,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    /// At most `limit` events per key per `window_ms`.
    pub fn new(limit: u32, window_ms: i64) -> Self {
        Self {
            limit,
            window_ms,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether another event for `key` is allowed now; counts it if so. `Err(secs)` says when
    /// to retry.
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        let window = now.div_euclid(self.window_ms);
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (w, _)| *w == window);
        }
        let entry = map.entry(key.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit {
            let retry_ms = (window + 1) * self.window_ms - now;
            return Err(((retry_ms + 999) / 1000).max(1) as u64);
        }
        entry.1 += 1;
        Ok(())
    }

    /// Whether `key` is currently over its limit (without counting).
    pub fn exceeded(&self, key: &str, now: i64) -> Option<u64> {
        let window = now.div_euclid(self.window_ms);
        let map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((w, n)) if *w == window && *n >= self.limit => {
                let retry_ms = (window + 1) * self.window_ms - now;
                Some(((retry_ms + 999) / 1000).max(1) as u64)
            }
            _ => None,
        }
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn reset(&self, key: &str) {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window() {
        let l = RateLimiter::new(2, 60_000);
        assert!(l.check("a", 0).is_ok());
        assert!(l.check("a", 1).is_ok());
        assert_eq!(l.check("a", 2), Err(60));
        assert!(l.check("b", 2).is_ok());
        assert!(l.check("a", 60_000).is_ok());
        l.reset("a");
        assert!(l.exceeded("a", 60_001).is_none());
    }
}
