//! The device session as JavaScript drives it: [`sync_core::client::Client`] with text ids, JSON
//! views and the legacy import, in plain Rust so that it is unit-tested natively.
//!
//! The JavaScript glue (`client-wasm/js/learnsync.js`) owns everything with a side effect — the
//! WebSocket, timers, `localStorage`, the clock and randomness — and hands time in as epoch
//! milliseconds. This module only translates: ids are bs58check text, reads are JSON values the
//! page can render without knowing Automerge, and every error is a [`ClientError`] whose text is
//! fit to show.

use serde_json::{Value as Json, json};
use sync_core::client::{self, Client, ClientConfig, ClientEvent, ClientOutput, EnrollmentView};
use sync_core::docs::course::ProgressOutcome;
use sync_core::ids::DocumentId;
use sync_core::import;

use crate::ClientError;

/// One thing the shell must do, with ids as text (see [`ClientOutput`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this binary frame on the socket.
    Send(Vec<u8>),
    /// Save this document's bytes ([`Session::save`]) to local storage.
    Persist(String),
    /// Tell the page: a JSON object with a `type` field.
    Event(Json),
}

/// The device session. See the module documentation.
pub struct Session {
    client: Client,
}

impl Session {
    /// A session for one device. `actor_hex` is the device's automerge actor (32 hex digits,
    /// drawn once by the shell and kept with the documents so that every change this device
    /// ever makes carries the same actor).
    pub fn new(
        peer_id: &str,
        storage_id: Option<String>,
        actor_hex: &str,
    ) -> Result<Self, ClientError> {
        let actor = parse_actor(actor_hex)?;
        if peer_id.is_empty() {
            return Err(ClientError::Invalid("peerId must not be empty".into()));
        }
        Ok(Self {
            client: Client::new(ClientConfig {
                peer_id: peer_id.to_string(),
                storage_id,
                actor,
            }),
        })
    }

    /// Tells the session the user's two root documents (from `GET /api/sync/documents` or from
    /// local storage); creates them from their genesis when this device has no copy yet.
    pub fn set_documents(&mut self, preferences: &str, learning: &str) -> Result<(), ClientError> {
        let p = doc_id("preferences", preferences)?;
        let l = doc_id("learning", learning)?;
        self.client.set_documents(p, l);
        Ok(())
    }

    /// Loads saved bytes. Corrupt bytes change nothing and are an error: the shell drops them
    /// and the server sends the document again.
    pub fn restore(&mut self, doc: &str, bytes: &[u8]) -> Result<(), ClientError> {
        let id = doc_id("docId", doc)?;
        self.client
            .restore(id, bytes)
            .map_err(|e| ClientError::Session(e.to_string()))
    }

    /// The bytes to store for a document (`None` if this device does not hold it).
    pub fn save(&mut self, doc: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let id = doc_id("docId", doc)?;
        Ok(self.client.save(&id))
    }

    /// Every document id this device holds.
    pub fn documents(&self) -> Vec<String> {
        self.client
            .documents()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The next output; call until `None` after every other call.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.client.poll_output()?;
        Some(match out {
            ClientOutput::Send(bytes) => Output::Send(bytes),
            ClientOutput::Persist(id) => Output::Persist(id.to_string()),
            ClientOutput::Event(e) => Output::Event(event_json(&e)),
        })
    }

    /// `offline`, `connecting`, `syncing` or `synced`.
    pub fn status(&self) -> &'static str {
        self.client.status().as_str()
    }

    /// The forced-sync epoch caught up with (persisted by the shell).
    pub fn epoch(&self) -> u64 {
        self.client.epoch()
    }

    /// Restores the persisted epoch.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.client.set_epoch(epoch);
    }

    /// Every preference, as a JSON object.
    pub fn preferences(&self) -> Result<Json, ClientError> {
        let all = self.client.preferences().map_err(session)?;
        Ok(Json::Object(all.into_iter().collect()))
    }

    /// Every course of the learning index with its progress, as a JSON array.
    pub fn enrollments(&self) -> Result<Json, ClientError> {
        let list = self.client.enrollments().map_err(session)?;
        Ok(Json::Array(list.iter().map(enrollment_json).collect()))
    }

    /// Sets one preference to a JSON value; `true` if anything changed.
    pub fn set_preference(
        &mut self,
        key: &str,
        value: &Json,
        now: i64,
    ) -> Result<bool, ClientError> {
        self.client.set_preference(key, value, now).map_err(session)
    }

    /// Enrolls in a course (and opens its progress document).
    pub fn enroll(&mut self, course_id: &str, now: i64) -> Result<bool, ClientError> {
        self.client.enroll(course_id, now).map_err(session)
    }

    /// Unenrolls; progress is kept.
    pub fn unenroll(&mut self, course_id: &str, now: i64) -> Result<bool, ClientError> {
        self.client.unenroll(course_id, now).map_err(session)
    }

    /// Marks a lesson done.
    pub fn complete_lesson(
        &mut self,
        course_id: &str,
        lesson_id: &str,
        now: i64,
    ) -> Result<bool, ClientError> {
        self.client
            .complete_lesson(course_id, lesson_id, now)
            .map_err(session)
    }

    /// Raises progress; returns the progress the course now has (progress never goes down).
    pub fn set_progress(
        &mut self,
        course_id: &str,
        percent: f64,
        now: i64,
    ) -> Result<f64, ClientError> {
        match self
            .client
            .set_progress(course_id, percent, now)
            .map_err(session)?
        {
            ProgressOutcome::Raised => Ok(percent),
            ProgressOutcome::Kept { current } => Ok(current),
        }
    }

    /// Adds learning time in seconds.
    pub fn add_time(&mut self, course_id: &str, seconds: i64, now: i64) -> Result<(), ClientError> {
        self.client
            .add_time(course_id, seconds, now)
            .map_err(session)
    }

    /// Starts a new attempt; returns its number.
    pub fn restart(&mut self, course_id: &str, now: i64) -> Result<u32, ClientError> {
        self.client.restart(course_id, now).map_err(session)
    }

    /// The documents the server is not known to hold entirely yet, with this device's heads and
    /// the server's last reported heads: what "syncing" is waiting for, for an app to show
    /// ("3 changes not on the server yet") and for debugging a sync that does not settle.
    pub fn unsynced(&mut self) -> Json {
        let mut out = Vec::new();
        for id in self.client.documents() {
            let theirs = self.client.server_heads(&id);
            // A no-op edit: the one way to reach the document mutably (reading heads closes
            // Automerge's open transaction); it commits nothing.
            let Ok(ours) = self.client.edit(id, 0, |doc| Ok(doc.get_heads())) else {
                continue;
            };
            if ours != theirs {
                out.push(json!({
                    "doc": id.to_string(),
                    "heads": ours.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "serverHeads": theirs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }));
            }
        }
        Json::Array(out)
    }

    /// Whether the server holds every document as this device does (everything this device
    /// wrote is stored there).
    pub fn synced(&self) -> bool {
        self.client.status() == client::SyncStatus::Synced
    }

    /// The legacy first-run import: `dump` is `JSON.stringify` of the legacy `localStorage`
    /// keys. Applies settings, enrollments and progress to this device's documents as the
    /// server's own import of the same dump does (`for_user(None)`: the dump belongs to the
    /// signed-in user), so the two meet as no-ops. Idempotent. Returns the per-key report rows.
    pub fn import_legacy(&mut self, dump: &str, now: i64) -> Result<Json, ClientError> {
        let parsed = import::parse(dump).map_err(|e| ClientError::Import(e.to_string()))?;
        let user = parsed.for_user(None);
        let (preferences, learning) = self.roots()?;
        let mut rows = Vec::new();
        rows.extend(
            self.client
                .edit(preferences, now, |doc| user.apply_preferences(doc, now))
                .map_err(session)?,
        );
        rows.extend(
            self.client
                .edit(learning, now, |doc| user.apply_learning(doc, now))
                .map_err(session)?,
        );
        // Opens the progress documents of the courses the index now names.
        self.client.set_documents(preferences, learning);
        for course_id in user.course_ids() {
            let id = DocumentId::course(&learning, &course_id);
            rows.extend(
                self.client
                    .edit(id, now, |doc| user.apply_course(&course_id, doc, now))
                    .map_err(session)?,
            );
        }
        serde_json::to_value(rows).map_err(|e| ClientError::Import(e.to_string()))
    }

    /// A socket is opening.
    pub fn handle_connecting(&mut self) {
        self.client.handle_connecting();
    }

    /// The socket opened.
    pub fn handle_connected(&mut self) {
        self.client.handle_connected();
    }

    /// The socket closed.
    pub fn handle_disconnected(&mut self) {
        self.client.handle_disconnected();
    }

    /// A binary frame arrived; undecodable frames are ignored and reported as an error text.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        self.client
            .handle_frame(frame)
            .map_err(|e| ClientError::Session(e.to_string()))
    }

    fn roots(&self) -> Result<(DocumentId, DocumentId), ClientError> {
        // The root ids are not exposed by `Client`; find them among the documents by kind is not
        // possible before they exist, so the shell must have called `set_documents`.
        let docs = self.client.documents();
        let mut preferences = None;
        let mut learning = None;
        for id in docs {
            let kind = self
                .client
                .document(&id)
                .and_then(sync_core::docs::identify)
                .map(|s| s.kind());
            match kind {
                Some(sync_core::docs::DocKind::Preferences) => preferences = Some(id),
                Some(sync_core::docs::DocKind::Learning) => learning = Some(id),
                _ => {}
            }
        }
        match (preferences, learning) {
            (Some(p), Some(l)) => Ok((p, l)),
            _ => Err(ClientError::Session(
                client::ClientError::NoDocuments.to_string(),
            )),
        }
    }
}

/// `reconnectDelay(attempt, random)`: see [`client::reconnect_delay`].
pub fn reconnect_delay(attempt: u32, random: u32) -> u64 {
    client::reconnect_delay(attempt, random)
}

fn session(e: client::ClientError) -> ClientError {
    ClientError::Session(e.to_string())
}

fn doc_id(param: &'static str, text: &str) -> Result<DocumentId, ClientError> {
    DocumentId::parse(text).map_err(|source| ClientError::InvalidDocumentId { param, source })
}

fn parse_actor(hex: &str) -> Result<[u8; 16], ClientError> {
    let bad = || ClientError::Invalid("actor must be 32 hex digits".into());
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn enrollment_json(e: &EnrollmentView) -> Json {
    let progress = e.progress.as_ref().map(|p| {
        json!({
            "attempt": p.attempt,
            "completed": p.completed,
            "progress": p.progress,
            "timeSpentSecs": p.time_spent_secs,
            "lastActivity": p.last_activity,
        })
    });
    json!({
        "courseId": e.course_id,
        "status": e.status.as_str(),
        "enrolledAt": e.enrolled_at,
        "progress": progress,
    })
}

fn event_json(e: &ClientEvent) -> Json {
    match e {
        ClientEvent::Status(s) => json!({ "type": "status", "status": s.as_str() }),
        ClientEvent::Changed { doc, kind, local } => json!({
            "type": "change",
            "doc": doc.to_string(),
            "kind": kind.map(|k| k.as_str()),
            "local": local,
        }),
        ClientEvent::Resynced { epoch } => json!({ "type": "resynced", "epoch": epoch }),
        ClientEvent::Unavailable { doc } => {
            json!({ "type": "unavailable", "doc": doc.to_string() })
        }
        ClientEvent::ServerError { message } => {
            json!({ "type": "serverError", "message": message })
        }
        ClientEvent::ServerStatus { ok, message } => {
            json!({ "type": "serverStatus", "ok": ok, "message": message })
        }
    }
}

#[cfg(test)]
mod tests {
    use sync_core::ids::UserNamespace;

    use super::*;

    const ACTOR: &str = "00112233445566778899aabbccddeeff";

    fn ids() -> (String, String) {
        let ns = UserNamespace::from_bytes([3; 16]);
        (
            DocumentId::preferences(&ns).to_string(),
            DocumentId::learning(&ns).to_string(),
        )
    }

    fn session() -> Session {
        let mut s = Session::new("peer-a", Some("store-a".into()), ACTOR).unwrap();
        let (p, l) = ids();
        s.set_documents(&p, &l).unwrap();
        s
    }

    #[test]
    fn edits_read_back_and_survive_save_and_restore() {
        let mut s = session();
        s.set_preference("theme", &json!("dark"), 1_000).unwrap();
        assert!(s.enroll("rust-101", 1_000).unwrap());
        s.complete_lesson("rust-101", "l1", 2_000).unwrap();
        assert_eq!(s.set_progress("rust-101", 40.0, 2_000).unwrap(), 40.0);
        assert_eq!(s.set_progress("rust-101", 10.0, 2_000).unwrap(), 40.0);
        s.add_time("rust-101", 30, 2_000).unwrap();

        let mut outputs = Vec::new();
        while let Some(o) = s.poll_output() {
            outputs.push(o);
        }
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Output::Event(e) if e["type"] == "change"))
        );

        // Never connected: the server holds none of it.
        assert_eq!(s.unsynced().as_array().unwrap().len(), s.documents().len());

        let mut other = Session::new("peer-b", None, ACTOR).unwrap();
        for doc in s.documents() {
            let bytes = s.save(&doc).unwrap().unwrap();
            other.restore(&doc, &bytes).unwrap();
        }
        let (p, l) = ids();
        other.set_documents(&p, &l).unwrap();
        assert_eq!(other.preferences().unwrap()["theme"], json!("dark"));
        let e = other.enrollments().unwrap();
        assert_eq!(e[0]["courseId"], json!("rust-101"));
        assert_eq!(e[0]["status"], json!("active"));
        assert_eq!(e[0]["progress"]["progress"], json!(40.0));
        assert_eq!(e[0]["progress"]["timeSpentSecs"], json!(30));
        assert_eq!(e[0]["progress"]["completed"]["l1"], json!(2_000));
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        assert!(Session::new("p", None, "xyz").is_err());
        assert!(Session::new("p", None, "zz112233445566778899aabbccddeeff").is_err());
        assert!(Session::new("", None, ACTOR).is_err());
        let mut s = session();
        let doc = s.documents()[0].clone();
        let err = s.restore(&doc, b"not automerge").unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(s.complete_lesson("never-enrolled", "l1", 1).is_err());
        assert!(s.import_legacy("[1, 2]", 1).is_err());
        assert!(s.handle_frame(&[0xff, 0x00]).is_err());
        let mut fresh = Session::new("p", None, ACTOR).unwrap();
        assert!(fresh.enroll("c", 1).is_err());
        assert!(fresh.import_legacy("{}", 1).is_err());
    }

    #[test]
    fn legacy_import_fills_the_documents_and_is_idempotent() {
        let mut s = session();
        let dump = json!({
            "theme": "dark",
            "language": "de",
            "userEnrollments": r#"{"u-anna": [{"courseId": "c1", "progress": 50, "completedLessons": ["l1"]}]}"#,
        })
        .to_string();
        let rows = s.import_legacy(&dump, 5_000).unwrap();
        assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{rows}");
        assert_eq!(s.preferences().unwrap()["theme"], json!("dark"));
        assert_eq!(s.preferences().unwrap()["language"], json!("de"));
        let e = s.enrollments().unwrap();
        assert_eq!(e[0]["courseId"], json!("c1"), "{e}");
        assert!(e[0]["progress"]["completed"]["l1"].is_number(), "{e}");
        let again = s.import_legacy(&dump, 6_000).unwrap();
        for row in again.as_array().unwrap() {
            assert_ne!(row["outcome"], json!("imported"), "{again}");
            assert_ne!(row["outcome"], json!("merged"), "{again}");
        }
    }
}
