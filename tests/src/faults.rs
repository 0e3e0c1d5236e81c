//! Bookkeeping for fault tests (crash, instance loss, database outage): what each device wrote,
//! what the server acknowledged, what storage holds, and whether everyone converged.
//!
//! A change counts as **acknowledged** when the heads the server reported to the device that
//! wrote it cover it (the server shows a device its own changes only after it stored them;
//! other devices may get them earlier). So after a fault, every change a device saw
//! acknowledged must be in storage.

use std::collections::BTreeMap;
use std::time::Duration;

use automerge::{AutoCommit, ChangeHash};
use learnsync::store::Store;
use serde_json::json;
use sync_core::DocumentId;
use sync_core::client::SyncStatus;

use crate::device::{Acknowledged, Device};

/// A device with a name and a counter of the edits it made.
pub struct Writer {
    /// The device.
    pub device: Device,
    /// Its own preference key (`w<n>`); each edit sets it to the next count.
    pub key: String,
    /// Edits made so far (the value of its key after the last one).
    pub count: u64,
    /// Courses it enrolled in so far.
    pub courses: Vec<String>,
}

impl Writer {
    /// A writer with key `w<n>`.
    pub fn new(device: Device, n: usize) -> Writer {
        Writer {
            device,
            key: format!("w{n}"),
            count: 0,
            courses: Vec::new(),
        }
    }

    /// One edit: the next count in its key; every 8th edit also enrolls in a new course (the
    /// learning index and a new course document).
    pub fn step(&mut self) {
        self.count += 1;
        let count = self.count;
        let now = learnsync::model::now_ms();
        let course = (count % 8 == 1).then(|| format!("{}-c{count}", self.key));
        let key = self.key.clone();
        self.device.edit(|c| {
            c.set_preference(&key, &json!(count), now)
                .expect("set preference");
            if let Some(course) = &course {
                c.enroll(course, now).expect("enroll");
            }
        });
        if let Some(course) = course {
            self.courses.push(course);
        }
    }

    /// Every change of its own the server ever acknowledged to this device.
    pub fn acknowledged(&self) -> Acknowledged {
        self.device.acknowledged()
    }

    /// Whether this device is offline (its socket ended).
    pub fn is_offline(&self) -> bool {
        self.device.client.lock().unwrap().status() == SyncStatus::Offline
    }

    /// Waits until the device noticed its socket is gone.
    pub async fn wait_offline(&self, within: Duration) {
        self.device
            .wait_for("the device notices the server is gone", within, |c| {
                c.status() == SyncStatus::Offline
            })
            .await;
    }

    /// Whether the device holds everything it wrote, and the server acknowledged all of it:
    /// for every document, the server's heads are the device's heads, and its key reads its
    /// last count.
    pub fn fully_acknowledged(&self) -> bool {
        let c = self.device.client.lock().unwrap();
        if c.status() != SyncStatus::Synced {
            return false;
        }
        if c.preferences().ok().and_then(|p| p.get(&self.key).cloned()) != Some(json!(self.count)) {
            return false;
        }
        c.documents().iter().all(|d| {
            let mut local = c.document(d).map(heads).unwrap_or_default();
            let mut server = c.server_heads(d);
            local.sort();
            server.sort();
            local == server
        })
    }

    /// Sorted heads of a document on this device.
    pub fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        let c = self.device.client.lock().unwrap();
        c.document(doc).map(heads).unwrap_or_default()
    }
}

/// Sorted heads of a document.
pub fn heads(doc: &AutoCommit) -> Vec<ChangeHash> {
    let mut h = doc.clone().get_heads();
    h.sort();
    h
}

/// Loads a stored document as the server would: the snapshot and every chunk, each with
/// `load_incremental`. Panics when a chunk does not load or a dependency is missing (a corrupt
/// or incomplete document); `None` when it is not stored.
pub async fn load_stored(store: &dyn Store, doc: &DocumentId) -> Option<AutoCommit> {
    let stored = store
        .load_document(&doc.to_string())
        .await
        .expect("load a document from storage")?;
    let mut loaded = AutoCommit::new();
    for (i, chunk) in stored.chunks.iter().enumerate() {
        loaded
            .load_incremental(chunk)
            .unwrap_or_else(|e| panic!("document {doc}: chunk {i} is corrupt: {e}"));
    }
    let missing = loaded.get_missing_deps(&[]);
    assert!(
        missing.is_empty(),
        "document {doc}: stored changes depend on changes that are not stored: {missing:?}"
    );
    Some(loaded)
}

/// Loads every document of `users` from storage (each must load cleanly) and checks that every
/// acknowledged change is stored. Returns how many documents were loaded and how many stored
/// chunks they had in total (fewer chunks than changes shows compaction ran).
pub async fn check_storage(
    store: &dyn Store,
    users: &[&str],
    acknowledged: &[Acknowledged],
) -> (usize, usize) {
    let mut docs = BTreeMap::new();
    let mut chunks = 0;
    for user in users {
        for info in store.user_documents(user).await.expect("user documents") {
            let id = DocumentId::parse(&info.id).expect("stored document id");
            chunks += store
                .load_document(&info.id)
                .await
                .expect("load")
                .map(|d| d.chunks.len())
                .unwrap_or(0);
            let doc = load_stored(store, &id).await.expect("listed, so stored");
            docs.insert(id, doc);
        }
    }
    for acks in acknowledged {
        for (doc, hs) in acks {
            let stored = docs
                .get_mut(doc)
                .unwrap_or_else(|| panic!("document {doc} was acknowledged but is not stored"));
            for h in hs {
                assert!(
                    stored.get_change_by_hash(h).is_some(),
                    "acknowledged change {h} of document {doc} is not stored"
                );
            }
        }
    }
    (docs.len(), chunks)
}

/// Whether every writer has everything it wrote acknowledged and the writers of each user
/// (given as groups) hold identical documents.
pub fn converged(groups: &[Vec<&Writer>]) -> bool {
    let all_acked = groups.iter().flatten().all(|w| w.fully_acknowledged());
    all_acked
        && groups.iter().all(|g| {
            let first = &g[0];
            let docs = first.device.client.lock().unwrap().documents();
            g.iter()
                .all(|w| docs.iter().all(|d| w.heads(d) == first.heads(d)))
        })
}

/// Waits until [`converged`], or panics with every writer's state after `within`.
pub async fn wait_converged(groups: &[Vec<&Writer>], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if converged(groups) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let state: Vec<String> = groups
                .iter()
                .flatten()
                .map(|w| {
                    let c = w.device.client.lock().unwrap();
                    format!(
                        "{}: {:?}, count {}, prefs {:?}",
                        w.key,
                        c.status(),
                        w.count,
                        c.preferences().ok().and_then(|p| p.get(&w.key).cloned())
                    )
                })
                .collect();
            panic!("devices did not converge: {state:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every writer's last value of every writer's key, as seen by `w` (to compare across users'
/// devices: each user's devices must read every key of that user's writers).
pub fn values(w: &Writer) -> BTreeMap<String, serde_json::Value> {
    w.device
        .client
        .lock()
        .unwrap()
        .preferences()
        .unwrap_or_default()
}

/// How many rounds a fault test runs: `FAULT_ROUNDS` or `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
