//! Sliding-window limits that protect login, registration, reports and client log ingest. In
//! memory, per instance: behind a load balancer each instance limits on its own, which still
//! bounds an attacker.
//!
//! A sliding window (the times of the last `limit` events per key) rather than fixed windows:
//! a fixed window lets twice the limit through around a boundary, and forgets a burst the
//! moment the next window starts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Keys tracked before forgotten ones are swept out (bounds memory under a flood of keys).
const SWEEP_ABOVE: usize = 100_000;

/// Allows at most `limit` events per key in any `window_ms`.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window_ms: i64,
    events: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl RateLimiter {
    /// At most `limit` events per key in any `window_ms` (a `limit` of 0 counts as 1).
    pub fn new(limit: u32, window_ms: i64) -> Self {
        Self {
            limit: limit.max(1),
            window_ms,
            events: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until the oldest remembered event of `times` leaves the window, when the key
    /// is at its limit.
    fn blocked_for(&self, times: &VecDeque<i64>, now: i64) -> Option<u64> {
        if times.len() < self.limit as usize {
            return None;
        }
        let oldest = times.front().copied().unwrap_or(now);
        let retry_ms = (oldest + self.window_ms - now).max(1);
        Some(u64::try_from((retry_ms + 999) / 1000).unwrap_or(1).max(1))
    }

    /// Drops events that have left the window.
    fn expire(&self, times: &mut VecDeque<i64>, now: i64) {
        while times.front().is_some_and(|&t| t <= now - self.window_ms) {
            times.pop_front();
        }
    }

    /// Whether another event for `key` is allowed now; counts it if so. `Err(secs)` says when
    /// to retry.
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        let mut map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_ABOVE {
            let horizon = now - self.window_ms;
            map.retain(|_, times| times.back().is_some_and(|&t| t > horizon));
        }
        let times = map.entry(key.to_string()).or_default();
        self.expire(times, now);
        if let Some(secs) = self.blocked_for(times, now) {
            return Err(secs);
        }
        times.push_back(now);
        Ok(())
    }

    /// Whether `key` is currently at its limit (without counting): `Some(secs)` to wait.
    pub fn exceeded(&self, key: &str, now: i64) -> Option<u64> {
        let mut map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let times = map.get_mut(key)?;
        self.expire(times, now);
        self.blocked_for(times, now)
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn reset(&self, key: &str) {
        self.events
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

    #[test]
    fn the_window_slides() {
        let l = RateLimiter::new(3, 60_000);
        // Three events late in one minute...
        for t in [59_000, 59_500, 59_900] {
            assert!(l.check("k", t).is_ok());
        }
        // ...still count early in the next one: no double burst around a boundary.
        assert_eq!(l.check("k", 60_100), Err(59));
        assert_eq!(l.exceeded("k", 60_100), Some(59));
        // The oldest leaves the window a minute after it happened.
        assert!(l.check("k", 119_000).is_ok());
        assert_eq!(l.check("k", 119_001), Err(1));
        assert!(l.exceeded("other", 0).is_none());
    }
}
