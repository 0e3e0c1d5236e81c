//! Legacy `localStorage` imports started from the admin page, tracked while they run.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

/// Running import jobs: progress events for the admin page's live view.
#[derive(Debug, Default)]
pub struct ImportJobs {
    running: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl ImportJobs {
    /// Subscribes to a running job's progress events (JSON text), if it is running here.
    pub fn subscribe(&self, run_id: &str) -> Option<broadcast::Receiver<String>> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .map(broadcast::Sender::subscribe)
    }

    /// Registers a job; events sent on the returned sender reach subscribers.
    pub fn start(&self, run_id: &str) -> broadcast::Sender<String> {
        let (tx, _) = broadcast::channel(256);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.to_string(), tx.clone());
        tx
    }

    /// Forgets a finished job.
    pub fn finish(&self, run_id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }
}
