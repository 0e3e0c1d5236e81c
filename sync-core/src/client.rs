//! The device side of sync as a sans-IO state machine: a user's documents, their sync with the
//! server, and the events an app shows.
//!
//! A [`Client`] owns the device's copies of the user's documents and speaks the automerge-repo
//! protocol to the server. The embedding shell (`client-wasm` in a browser, the benchmark's load
//! generator, tests) moves frames between a WebSocket and [`Client::handle_frame`], persists
//! what [`ClientOutput::Persist`] asks, and shows [`ClientEvent`]s. Time and randomness come in
//! as arguments.
//!
//! Typical shell loop:
//! 1. at start, [`Client::restore`] every document saved locally (works offline);
//! 2. edit through the typed methods ([`Client::enroll`], [`Client::set_preference`], …) —
//!    each edit is one Automerge change, persisted and, when connected, sent at once;
//! 3. when a socket opens call [`Client::handle_connected`]; feed every binary frame to
//!    [`Client::handle_frame`]; when it closes call [`Client::handle_disconnected`] and
//!    reconnect after [`reconnect_delay`];
//! 4. after every call, drain [`Client::poll_output`] in order.

use std::collections::{BTreeMap, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use serde_json::Value as Json;

use crate::docs::{self, DocError, DocKind, DocSpec, course, learning, preferences, projection};
use crate::ids::DocumentId;
use crate::wire::{self, DocMessage, Join, Message, PeerMetadata};

/// The protocol version LearnSync speaks (automerge-repo's "1").
pub const PROTOCOL_VERSION: &str = "1";

/// Where the device stands with the server, as an app shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// No connection; edits are kept locally.
    Offline,
    /// A socket is opening or the handshake is running.
    Connecting,
    /// Connected; some document still differs from the server's copy.
    Syncing,
    /// Connected, and the server holds every document as this device does: everything this
    /// device wrote is stored there (a change from another device may still be in its
    /// author's write: the server forwards changes before their commit).
    Synced,
}

impl SyncStatus {
    /// Lowercase name for JavaScript.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Offline => "offline",
            SyncStatus::Connecting => "connecting",
            SyncStatus::Syncing => "syncing",
            SyncStatus::Synced => "synced",
        }
    }
}

/// Something the app may want to show.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The sync status changed.
    Status(SyncStatus),
    /// A document changed, locally (`local: true`) or from the server.
    Changed {
        /// The document.
        doc: DocumentId,
        /// Its kind, if it is a LearnSync document.
        kind: Option<DocKind>,
        /// Whether this device made the change.
        local: bool,
    },
    /// The server forced a full resync (an admin asked for it); local changes are kept.
    Resynced {
        /// The new sync epoch, to persist.
        epoch: u64,
    },
    /// The server refused a document (it does not exist there, or this user may not see it).
    Unavailable {
        /// The document.
        doc: DocumentId,
    },
    /// The server reported an error and will close the connection.
    ServerError {
        /// The server's message.
        message: String,
    },
    /// The server says it is degraded (e.g. its database is down): changes stay local until it
    /// recovers.
    ServerStatus {
        /// `true` when the server is fully working.
        ok: bool,
        /// A message for people.
        message: Option<String>,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOutput {
    /// Send one binary WebSocket frame.
    Send(Vec<u8>),
    /// This document changed: save [`Client::save`]'s bytes locally, replacing the previous
    /// copy. Saving costs a full serialisation, so shells may coalesce several of these.
    Persist(DocumentId),
    /// Show or forward an event.
    Event(ClientEvent),
}

/// Why a client operation failed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The document layer refused the edit.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// Saved bytes could not be loaded (corrupt local storage).
    #[error("stored document {doc} is corrupt: {reason}")]
    Corrupt {
        /// The document.
        doc: DocumentId,
        /// Automerge's reason.
        reason: String,
    },
    /// The learning and preferences document ids are not known yet (never logged in).
    #[error("document ids unknown: log in once while online")]
    NoDocuments,
    /// Progress can only be recorded for a course the learning index mentions (enrolled, or
    /// unenrolled with its progress kept); every device finds course documents through it.
    #[error("not enrolled in course {0}")]
    NotEnrolled(String),
}

/// One course as the app shows it: the learning index's status plus the course document.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentView {
    /// Course id.
    pub course_id: String,
    /// Enrolled or unenrolled.
    pub status: learning::Status,
    /// First enrollment (epoch ms).
    pub enrolled_at: Option<i64>,
    /// Current attempt's progress, if the course document is known.
    pub progress: Option<course::CourseProgress>,
}

/// Static facts about this device.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The automerge-repo peer id (stable per device, e.g. `ls-<random>`).
    pub peer_id: String,
    /// The device's storage id (stable per device): the server persists its sync state under it.
    pub storage_id: Option<String>,
    /// The device's automerge actor: 16 random bytes drawn once and kept.
    pub actor: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Conn {
    Offline,
    Connecting,
    Joined { server_peer_id: String },
}

struct ClientDoc {
    doc: AutoCommit,
    state: sync::State,
    kind: Option<DocKind>,
}

/// The device-side session. See the module documentation.
pub struct Client {
    config: ClientConfig,
    conn: Conn,
    preferences: Option<DocumentId>,
    learning: Option<DocumentId>,
    docs: BTreeMap<DocumentId, ClientDoc>,
    epoch: u64,
    status: SyncStatus,
    outputs: VecDeque<ClientOutput>,
}

impl Client {
    /// A client for one device, offline, with no documents yet.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            conn: Conn::Offline,
            preferences: None,
            learning: None,
            docs: BTreeMap::new(),
            epoch: 0,
            status: SyncStatus::Offline,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to do. Call until `None` after every other call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// The current sync status.
    pub fn status(&self) -> SyncStatus {
        self.status
    }

    /// The forced-sync epoch this device has caught up with (persist it with the documents).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Restores the epoch saved locally.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Tells the client the user's document ids (from `GET /api/sync/documents`, or saved
    /// locally). Creates the documents from their genesis if this device has none yet, and
    /// opens the course documents of every course in the learning index.
    pub fn set_documents(&mut self, preferences: DocumentId, learning: DocumentId) {
        self.preferences = Some(preferences);
        self.learning = Some(learning);
        self.open(preferences, DocSpec::Preferences);
        self.open(learning, DocSpec::Learning);
        self.open_enrolled_courses();
    }

    /// Loads a document saved locally. Unknown ids are accepted (a course document, for
    /// instance); corrupt bytes are an error and change nothing — the shell should drop them
    /// and let the server send the document again.
    pub fn restore(&mut self, doc: DocumentId, bytes: &[u8]) -> Result<(), ClientError> {
        let mut loaded = AutoCommit::load(bytes).map_err(|e| ClientError::Corrupt {
            doc,
            reason: e.to_string(),
        })?;
        loaded.set_actor(automerge::ActorId::from(self.config.actor));
        let kind = docs::identify(&loaded).map(|s| s.kind());
        match self.docs.get_mut(&doc) {
            Some(existing) => {
                existing
                    .doc
                    .merge(&mut loaded)
                    .map_err(|e| ClientError::Corrupt {
                        doc,
                        reason: e.to_string(),
                    })?;
                existing.kind = existing.kind.or(kind);
            }
            None => {
                self.docs.insert(
                    doc,
                    ClientDoc {
                        doc: loaded,
                        state: sync::State::new(),
                        kind,
                    },
                );
            }
        }
        self.open_enrolled_courses();
        Ok(())
    }

    /// The ids of every document this device holds.
    pub fn documents(&self) -> Vec<DocumentId> {
        self.docs.keys().copied().collect()
    }

    /// Read access to a document (for shells that want raw reads).
    pub fn document(&self, doc: &DocumentId) -> Option<&AutoCommit> {
        self.docs.get(doc).map(|d| &d.doc)
    }

    /// The heads the server last reported for `doc`. The server reports a device's own changes
    /// only once they are stored, but forwards other devices' changes as soon as it has them,
    /// so these heads may cover changes not stored yet: what the server has acknowledged to
    /// this device is [`Client::acknowledged`]. Empty when not known.
    pub fn server_heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.docs
            .get(doc)
            .and_then(|d| d.state.their_heads.clone())
            .unwrap_or_default()
    }

    /// The changes this device wrote (its actor's) to `doc` that the server has acknowledged:
    /// those the server's last reported heads cover. The server reports them only after it
    /// stored them, so each is durable there; another device's changes the heads cover may
    /// not be (the server forwards them before its write commits, and their author keeps
    /// them until it is told they are stored).
    pub fn acknowledged(&mut self, doc: &DocumentId) -> Vec<ChangeHash> {
        let actor = automerge::ActorId::from(self.config.actor);
        let Some(d) = self.docs.get_mut(doc) else {
            return Vec::new();
        };
        let Some(server) = d.state.their_heads.clone() else {
            return Vec::new();
        };
        let doc = d.doc.document();
        // Heads this copy does not hold yet cover nothing it could have written. (Metadata
        // only: building whole changes would walk their operations.)
        let known: Vec<ChangeHash> = server
            .into_iter()
            .filter(|h| doc.get_change_meta_by_hash(h).is_some())
            .collect();
        if known.is_empty() {
            return Vec::new();
        }
        let after: std::collections::HashSet<ChangeHash> = doc
            .get_changes_meta(&known)
            .iter()
            .map(|c| c.hash)
            .collect();
        doc.get_changes_meta(&[])
            .iter()
            .filter(|c| *c.actor == actor && !after.contains(&c.hash))
            .map(|c| c.hash)
            .collect()
    }

    /// The heads of a document as this device has it.
    pub fn heads(&mut self, doc: &DocumentId) -> Option<Vec<ChangeHash>> {
        self.docs.get_mut(doc).map(|d| d.doc.get_heads())
    }

    /// Saved bytes of a document.
    pub fn save(&mut self, doc: &DocumentId) -> Option<Vec<u8>> {
        self.docs.get_mut(doc).map(|d| d.doc.save())
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// All preferences.
    pub fn preferences(&self) -> Result<BTreeMap<String, Json>, ClientError> {
        let doc = self.doc_of(self.preferences)?;
        Ok(preferences::all(doc)?)
    }

    /// Every course of the learning index with its progress.
    pub fn enrollments(&self) -> Result<Vec<EnrollmentView>, ClientError> {
        let learning_id = self.learning.ok_or(ClientError::NoDocuments)?;
        let index = self.doc_of(Some(learning_id))?;
        let mut out = Vec::new();
        for e in learning::enrollments(index)? {
            let course_doc = DocumentId::course(&learning_id, &e.course_id);
            let progress = self
                .docs
                .get(&course_doc)
                .and_then(|d| course::read(&d.doc).ok());
            out.push(EnrollmentView {
                course_id: e.course_id,
                status: e.status,
                enrolled_at: e.enrolled_at,
                progress,
            });
        }
        Ok(out)
    }

    /// The projection rows of the preferences document (what the server stores).
    pub fn preferences_row(&self) -> Result<projection::PreferencesRow, ClientError> {
        Ok(projection::preferences_row(self.doc_of(self.preferences)?)?)
    }

    // -----------------------------------------------------------------------------------------
    // Edits: each is one change, persisted and sent.

    /// Sets one preference (last writer wins).
    pub fn set_preference(
        &mut self,
        key: &str,
        value: &Json,
        now: i64,
    ) -> Result<bool, ClientError> {
        let id = self.preferences.ok_or(ClientError::NoDocuments)?;
        self.edit(id, now, |doc| preferences::set(doc, key, value, now))
    }

    /// Enrolls in a course (add wins) and opens its progress document.
    pub fn enroll(&mut self, course_id: &str, now: i64) -> Result<bool, ClientError> {
        let id = self.learning.ok_or(ClientError::NoDocuments)?;
        let changed = self.edit(id, now, |doc| learning::enroll(doc, course_id, now))?;
        self.open_course(course_id)?;
        Ok(changed)
    }

    /// Unenrolls (kept as a status; progress survives).
    pub fn unenroll(&mut self, course_id: &str, now: i64) -> Result<bool, ClientError> {
        let id = self.learning.ok_or(ClientError::NoDocuments)?;
        self.edit(id, now, |doc| learning::unenroll(doc, course_id))
    }

    /// Marks a lesson completed.
    pub fn complete_lesson(
        &mut self,
        course_id: &str,
        lesson_id: &str,
        now: i64,
    ) -> Result<bool, ClientError> {
        let id = self.enrolled_course(course_id)?;
        self.edit(id, now, |doc| course::complete_lesson(doc, lesson_id, now))
    }

    /// Raises progress (never lowers it).
    pub fn set_progress(
        &mut self,
        course_id: &str,
        percent: f64,
        now: i64,
    ) -> Result<course::ProgressOutcome, ClientError> {
        let id = self.enrolled_course(course_id)?;
        self.edit(id, now, |doc| course::set_progress(doc, percent, now))
    }

    /// Adds learning time.
    pub fn add_time(&mut self, course_id: &str, seconds: i64, now: i64) -> Result<(), ClientError> {
        let id = self.enrolled_course(course_id)?;
        self.edit(id, now, |doc| course::add_time(doc, seconds, now))
    }

    /// Restarts a course (a new attempt).
    pub fn restart(&mut self, course_id: &str, now: i64) -> Result<u32, ClientError> {
        let id = self.enrolled_course(course_id)?;
        self.edit(id, now, |doc| course::restart(doc, now))
    }

    /// Runs a typed edit on one of the user's documents (used by the legacy import, which
    /// writes several keys in one change).
    pub fn edit<T>(
        &mut self,
        doc: DocumentId,
        now: i64,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, DocError>,
    ) -> Result<T, ClientError> {
        let Some(entry) = self.docs.get_mut(&doc) else {
            return Err(ClientError::NoDocuments);
        };
        let value = match f(&mut entry.doc) {
            Ok(v) => v,
            Err(e) => {
                entry.doc.rollback();
                return Err(e.into());
            }
        };
        if docs::commit(&mut entry.doc, now).is_some() {
            let kind = entry.kind;
            self.persist(doc);
            self.event(ClientEvent::Changed {
                doc,
                kind,
                local: true,
            });
            self.send_sync(doc);
            self.update_status();
        }
        Ok(value)
    }

    // -----------------------------------------------------------------------------------------
    // Connection

    /// A socket is being opened.
    pub fn handle_connecting(&mut self) {
        self.conn = Conn::Connecting;
        self.update_status();
    }

    /// The socket is open: sends `join`.
    pub fn handle_connected(&mut self) {
        self.conn = Conn::Connecting;
        let join = Message::Join(Join {
            sender_id: self.config.peer_id.clone(),
            peer_metadata: Some(PeerMetadata {
                storage_id: self.config.storage_id.clone(),
                is_ephemeral: Some(self.config.storage_id.is_none()),
            }),
            supported_protocol_versions: Some(vec![PROTOCOL_VERSION.to_string()]),
        });
        self.outputs
            .push_back(ClientOutput::Send(wire::encode(&join)));
        self.update_status();
    }

    /// The socket closed. Only the shared heads of each sync state survive, as the protocol
    /// expects for a new connection.
    pub fn handle_disconnected(&mut self) {
        self.conn = Conn::Offline;
        for d in self.docs.values_mut() {
            d.state = sync::State::decode(&d.state.encode()).unwrap_or_default();
        }
        self.update_status();
    }

    /// A binary frame arrived. Undecodable frames and unknown message types are ignored (as
    /// the JavaScript client does); the returned error says why, for logging.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<(), wire::DecodeError> {
        let message = wire::decode(frame)?;
        match message {
            Message::Peer(peer) => {
                self.conn = Conn::Joined {
                    server_peer_id: peer.sender_id,
                };
                let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
                for id in ids {
                    self.send_sync(id);
                }
            }
            Message::Sync(m) | Message::Request(m) => self.receive_sync(m),
            Message::DocUnavailable(m) => {
                self.event(ClientEvent::Unavailable { doc: m.document_id });
            }
            // A forced resync (an admin asked for it while we were connected) always resets;
            // the epoch the server announces at every handshake resets only when it is newer
            // than the one this device caught up with (it was forced while we were offline).
            Message::Resync(r)
                if r.reason.as_deref() == Some(wire::RESYNC_FORCED) || r.epoch > self.epoch =>
            {
                self.epoch = self.epoch.max(r.epoch);
                for d in self.docs.values_mut() {
                    d.state = sync::State::new();
                }
                self.event(ClientEvent::Resynced { epoch: self.epoch });
                let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
                for id in ids {
                    self.send_sync(id);
                }
            }
            Message::Status(s) => {
                self.event(ClientEvent::ServerStatus {
                    ok: s.state == "ok",
                    message: s.message,
                });
            }
            Message::Error(e) => self.event(ClientEvent::ServerError { message: e.message }),
            _ => {}
        }
        self.update_status();
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn doc_of(&self, id: Option<DocumentId>) -> Result<&AutoCommit, ClientError> {
        id.and_then(|id| self.docs.get(&id))
            .map(|d| &d.doc)
            .ok_or(ClientError::NoDocuments)
    }

    fn open(&mut self, id: DocumentId, spec: DocSpec) {
        if self.docs.contains_key(&id) {
            return;
        }
        // Every replica starts from the same genesis, so creating it here is the same as
        // receiving it from the server.
        let Ok(doc) = docs::create(&spec, self.config.actor) else {
            return;
        };
        self.docs.insert(
            id,
            ClientDoc {
                doc,
                state: sync::State::new(),
                kind: Some(spec.kind()),
            },
        );
        self.persist(id);
        self.send_sync(id);
    }

    /// The course document of a course the learning index mentions.
    fn enrolled_course(&mut self, course_id: &str) -> Result<DocumentId, ClientError> {
        let learning_id = self.learning.ok_or(ClientError::NoDocuments)?;
        let index = self.doc_of(Some(learning_id))?;
        if learning::enrollment(index, course_id)?.is_none() {
            return Err(ClientError::NotEnrolled(course_id.to_string()));
        }
        self.open_course(course_id)
    }

    fn open_course(&mut self, course_id: &str) -> Result<DocumentId, ClientError> {
        docs::validate_key("course id", course_id)?;
        let learning_id = self.learning.ok_or(ClientError::NoDocuments)?;
        let id = DocumentId::course(&learning_id, course_id);
        self.open(
            id,
            DocSpec::Course {
                course_id: course_id.to_string(),
            },
        );
        Ok(id)
    }

    /// Opens the progress document of every course the learning index mentions, so that a
    /// course enrolled on another device starts syncing here too.
    fn open_enrolled_courses(&mut self) {
        let Some(learning_id) = self.learning else {
            return;
        };
        let Some(index) = self.docs.get(&learning_id) else {
            return;
        };
        let courses: Vec<String> = learning::enrollments(&index.doc)
            .map(|v| v.into_iter().map(|e| e.course_id).collect())
            .unwrap_or_default();
        for c in courses {
            let _ = self.open_course(&c);
        }
    }

    fn receive_sync(&mut self, m: DocMessage) {
        let id = m.document_id;
        let Ok(message) = sync::Message::decode(&m.data) else {
            return;
        };
        let Some(entry) = self.docs.get_mut(&id) else {
            // Not a document this device asked for: ignore, as automerge-repo does.
            return;
        };
        let before = entry.doc.get_heads();
        if crate::sync_receive::receive_sync_message(&mut entry.doc, &mut entry.state, message)
            .is_err()
        {
            return;
        }
        let changed = entry.doc.get_heads() != before;
        if entry.kind.is_none() {
            entry.kind = docs::identify(&entry.doc).map(|s| s.kind());
        }
        let kind = entry.kind;
        if changed {
            self.persist(id);
            self.event(ClientEvent::Changed {
                doc: id,
                kind,
                local: false,
            });
            if Some(id) == self.learning {
                self.open_enrolled_courses();
            }
        }
        self.send_sync(id);
    }

    fn send_sync(&mut self, id: DocumentId) {
        let Conn::Joined { server_peer_id } = &self.conn else {
            return;
        };
        let target = server_peer_id.clone();
        let Some(entry) = self.docs.get_mut(&id) else {
            return;
        };
        if let Some(message) = entry.doc.sync().generate_sync_message(&mut entry.state) {
            let frame = Message::Sync(DocMessage {
                sender_id: self.config.peer_id.clone(),
                target_id: target,
                document_id: id,
                data: message.encode(),
            });
            self.outputs
                .push_back(ClientOutput::Send(wire::encode(&frame)));
        }
    }

    fn persist(&mut self, id: DocumentId) {
        self.outputs.push_back(ClientOutput::Persist(id));
    }

    fn event(&mut self, event: ClientEvent) {
        self.outputs.push_back(ClientOutput::Event(event));
    }

    fn update_status(&mut self) {
        let status = match self.conn {
            Conn::Offline => SyncStatus::Offline,
            Conn::Connecting => SyncStatus::Connecting,
            Conn::Joined { .. } => {
                if self.docs.values_mut().all(in_sync) {
                    SyncStatus::Synced
                } else {
                    SyncStatus::Syncing
                }
            }
        };
        if status != self.status {
            self.status = status;
            self.event(ClientEvent::Status(status));
        }
    }
}

/// The server is known to have exactly what this device has. (`in_flight` is no signal: the
/// last message of an exchange is never answered.)
fn in_sync(d: &mut ClientDoc) -> bool {
    let heads: Vec<ChangeHash> = d.doc.get_heads();
    d.state.their_heads.as_ref() == Some(&heads)
}

/// How long to wait before reconnect attempt `attempt` (0-based): exponential from 500 ms up to
/// 30 s, with full jitter drawn from `random` (any u32 the shell draws), so that thousands of
/// devices coming back after a server restart do not reconnect in lockstep.
pub fn reconnect_delay(attempt: u32, random: u32) -> u64 {
    let cap: u64 = 500u64.saturating_mul(1u64 << attempt.min(6)).min(30_000);
    // Between half the cap and the full cap.
    cap / 2 + (u64::from(random) % (cap / 2 + 1))
}
