//! The server side of sync as a sans-IO state machine: documents, their peers, durability.
//!
//! A [`Hub`] holds the server's copy of each document in use and one automerge sync state per
//! (document, connection). The server feeds it what happened — a connection joined or left, a
//! `sync`/`request` arrived, a load or a store finished, another instance stored a change, the
//! clock moved — through the `handle_*` methods, and carries out what it asks through
//! [`Hub::poll_output`]: frames to send, documents to load, writes to store, connections to close.
//!
//! # Order of effects (what callers must respect)
//! Outputs come out in the order they must happen. In particular a [`Output::Store`] is always
//! emitted before any [`Output::Send`] that reveals the stored changes. A peer that uploaded
//! changes hears nothing more of that document until a write covering them is reported stored
//! by [`Hub::handle_stored`]: that is how **a change is acknowledged only after it is stored**.
//! The document's other peers get the change at once, while its write is in flight (fan-out
//! does not wait for the commit; a device holding another's change can only add to its
//! durability, and its author keeps it until acknowledged). The caller may run loads and
//! stores concurrently and report them in any order.
//!
//! # Rules it implements (see `protocol/automerge-repo.md` §6)
//! - `request` and `sync` are handled alike; a `request` marks the peer as *wanting* the
//!   document, a message with heads marks it as *having* it.
//! - `doc-unavailable` is answered only when the server has no copy (not in storage, no heads)
//!   **and** no peer of the document has it; the requester stays subscribed and gets the
//!   document as soon as someone uploads it.
//! - Access is decided by an [`AccessPolicy`]; a peer that may not see a document gets
//!   `doc-unavailable`, exactly as for a document that does not exist.
//! - An unknown document is owned by the first peer that writes to it (document ids of
//!   LearnSync documents are derived from a per-user secret, so nobody can claim another user's).
//! - Edits made by the server itself (REST writes, imports) are applied to a fork, stored, and
//!   only then merged into the live document; a failed store discards them, so a REST client
//!   that was told "not stored" is never contradicted later.

mod doc;

use std::collections::{HashMap, VecDeque};

use automerge::{AutoCommit, ChangeHash};

use crate::docs::{DocError, DocKind, projection::Projection};
use crate::ids::{DocumentId, UserNamespace};

pub use doc::EditValue;

/// A connection, as numbered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A load or store the hub asked for, to be reported back with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// A server-side edit waiting to be stored, numbered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EditToken(pub u64);

/// Who is at the other end of a connection, as authentication established it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The authenticated user.
    pub user_id: String,
    /// Whether the user is an admin (admins may sync every document).
    pub is_admin: bool,
    /// The user's document namespace, used to recognise the user's own LearnSync documents
    /// when they are first uploaded.
    pub namespace: Option<UserNamespace>,
    /// The peer's `storageId`, when it has one and is not ephemeral: the key under which its
    /// sync state is persisted.
    pub storage_id: Option<String>,
}

/// One `sync` or `request` message of a connection, for [`Hub::handle_sync_batch`].
#[derive(Debug, Clone)]
pub struct SyncInput {
    /// The connection it came from.
    pub conn: ConnId,
    /// The document it is about.
    pub doc: DocumentId,
    /// Whether it was a `request` (the peer wants the document) rather than a `sync`.
    pub request: bool,
    /// The automerge sync message.
    pub data: Vec<u8>,
}

/// What the hub knows about a document's owner and role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocMeta {
    /// The owning user; `None` while nobody has written the document.
    pub owner: Option<String>,
    /// The LearnSync kind, if the document is one of the user's LearnSync documents.
    pub kind: Option<DocKind>,
    /// For course documents, the course id.
    pub course_id: Option<String>,
}

/// Decides who may sync which document. The server supplies it; sync-core does not know roles.
pub trait AccessPolicy {
    /// Whether `peer` may read and write a document owned by `owner`.
    fn allows(&self, peer: &PeerInfo, owner: &str) -> bool;
}

/// The policy DESIGN.md asks for: a user's own documents; admins every document.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerOrAdmin;

impl AccessPolicy for OwnerOrAdmin {
    fn allows(&self, peer: &PeerInfo, owner: &str) -> bool {
        peer.is_admin || peer.user_id == owner
    }
}

/// A document as storage returns it.
#[derive(Debug, Clone, Default)]
pub struct StoredDoc {
    /// Owner, kind, course.
    pub meta: DocMeta,
    /// The snapshot (if compacted) followed by the incremental change chunks, each loadable
    /// with `load_incremental`.
    pub chunks: Vec<Vec<u8>>,
    /// Persisted sync states of this document, by peer storage id.
    pub sync_states: Vec<(String, Vec<u8>)>,
}

/// Why a load or a store did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageFailure {
    /// The database cannot be reached now; the hub keeps the data and retries.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Storage refused the write for good (e.g. another user owns this id, or a quota); the
    /// hub drops its copy and answers the peers `doc-unavailable`.
    #[error("storage refused: {0}")]
    Rejected(String),
}

/// A write the caller must make durable, in one transaction, before reporting it stored.
#[derive(Debug, Clone)]
pub struct StoreWrite {
    /// The document.
    pub doc: DocumentId,
    /// Owner, kind and course, for the `documents` row (inserted if absent).
    pub meta: DocMeta,
    /// Change chunks to append (each loadable with `load_incremental`).
    pub changes: Vec<u8>,
    /// Heads of the document once these changes are applied.
    pub heads: Vec<ChangeHash>,
    /// Projection rows that changed, to write in the same transaction.
    pub projection: Option<Projection>,
    /// The hub holds no stored copy of the document (a load found none, or the caller said
    /// it was new): the store may try to create its row before looking for it. A hint only:
    /// another writer may have created it meanwhile, and the store must handle either case.
    pub likely_new: bool,
}

/// A message for one peer; the caller's session adds sender and target ids and encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// An automerge sync message.
    Sync {
        /// The document.
        doc: DocumentId,
        /// Encoded `automerge::sync::Message`.
        data: Vec<u8>,
    },
    /// Nobody has this document (or the peer may not see it).
    DocUnavailable {
        /// The document.
        doc: DocumentId,
    },
    /// An ephemeral message relayed from another peer, with its original author.
    Ephemeral {
        /// The document.
        doc: DocumentId,
        /// The original author's peer id.
        sender_id: String,
        /// The author's session id.
        session_id: String,
        /// The author's sequence number.
        count: u64,
        /// Opaque payload.
        data: Vec<u8>,
    },
    /// Drop all sync state and resync every document from scratch (forced sync).
    Resync {
        /// The sync epoch that caused it.
        epoch: u64,
    },
}

/// Why the hub wants a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent bytes that are not an automerge sync message, or changes automerge refused.
    InvalidSyncMessage(String),
    /// The peer touched more documents than one connection may.
    TooManyDocuments(usize),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::InvalidSyncMessage(why) => write!(f, "invalid sync message: {why}"),
            CloseReason::TooManyDocuments(max) => {
                write!(f, "too many documents on one connection (at most {max})")
            }
        }
    }
}

/// Something the caller must do.
#[derive(Debug)]
pub enum Output {
    /// Send a message to a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// What to send.
        message: HubMessage,
    },
    /// Send an `error` and close the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Load a document (snapshot, changes, sync states) and report with [`Hub::handle_loaded`].
    Load {
        /// Report with this id.
        task: TaskId,
        /// The document.
        doc: DocumentId,
    },
    /// Store a write and report with [`Hub::handle_stored`].
    Store {
        /// Report with this id.
        task: TaskId,
        /// What to store, in one transaction.
        write: StoreWrite,
    },
    /// Persist these peers' sync states (throttled; losing them only costs a longer sync).
    SaveSyncStates(Vec<SyncStateRecord>),
    /// Forget these peers' persisted sync states (forced sync).
    DeleteSyncStates {
        /// Peer storage ids whose states must go, across all documents; `None` means everyone.
        storage_ids: Option<Vec<String>>,
    },
    /// A server-side edit is finished: stored (Ok) or refused (Err).
    EditDone {
        /// The caller's token.
        token: EditToken,
        /// The edit's value, or why it was not stored.
        result: Result<EditValue, EditError>,
    },
    /// A document written since it was loaded went idle and left memory: fold its change rows
    /// into one snapshot now, while nobody is writing it (storage then holds about its
    /// `save()` size, and the next load reads one chunk instead of many).
    Compact {
        /// The document.
        doc: DocumentId,
    },
    /// A peer was refused a document (for the access log).
    Denied {
        /// The connection.
        conn: ConnId,
        /// The document it asked for.
        doc: DocumentId,
    },
}

/// One persisted sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStateRecord {
    /// The document.
    pub doc: DocumentId,
    /// The peer's storage id.
    pub storage_id: String,
    /// `automerge::sync::State::encode()`.
    pub state: Vec<u8>,
}

/// Why a server-side edit was not stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    /// The edit itself refused (invalid value, wrong document kind).
    #[error(transparent)]
    Doc(#[from] DocError),
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// A server-side edit: runs against the document (a fork of the live copy) and returns a value
/// for the caller. It must only use the typed API of [`crate::docs`].
pub type EditFn = Box<dyn FnOnce(&mut AutoCommit) -> Result<EditValue, DocError> + Send>;

/// Which devices a forced sync reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncScope {
    /// Every connection of one user.
    User(String),
    /// Every connection.
    All,
}

/// Tunables. The defaults suit a server; tests shrink them.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The actor for the server's own edits: 16 random bytes, fresh per process, so two server
    /// processes never write with the same actor and sequence number.
    pub actor: [u8; 16],
    /// A document nobody has touched for this long is dropped from memory (ms).
    pub idle_evict_ms: i64,
    /// Most documents one connection may sync.
    pub max_docs_per_conn: usize,
    /// First retry delay after a failed store (ms); doubles up to `max_retry_ms`.
    pub min_retry_ms: i64,
    /// Longest delay between store retries (ms).
    pub max_retry_ms: i64,
    /// How long `doc-unavailable` waits for an upload from another device of the requester's
    /// user (ms; 0 answers at once). See `DocEntry::check_unavailable`.
    pub unavailable_grace_ms: i64,
}

impl HubConfig {
    /// Defaults with the given server actor.
    pub fn new(actor: [u8; 16]) -> Self {
        Self {
            actor,
            idle_evict_ms: 30_000,
            max_docs_per_conn: 1_000,
            min_retry_ms: 250,
            max_retry_ms: 5_000,
            unavailable_grace_ms: 250,
        }
    }
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Documents with a live copy in memory.
    pub hot_docs: usize,
    /// Documents known (live, loading or evicted with peers still attached).
    pub known_docs: usize,
    /// Connected peers.
    pub connections: usize,
    /// Writes in flight.
    pub stores_in_flight: usize,
}

/// The sans-IO sync hub. See the module documentation.
pub struct Hub {
    config: HubConfig,
    policy: Box<dyn AccessPolicy + Send + Sync>,
    conns: HashMap<ConnId, ConnEntry>,
    /// Boxed: an entry is several hundred bytes and the table keeps room for more entries than
    /// it holds (and `with_doc` moves the entry out and back on every input).
    docs: HashMap<DocumentId, Box<doc::DocEntry>>,
    tasks: HashMap<TaskId, DocumentId>,
    outputs: VecDeque<Output>,
    next_task: u64,
}

struct ConnEntry {
    peer: PeerInfo,
    docs: usize,
}

impl Hub {
    /// A hub with the given configuration and access policy.
    pub fn new(config: HubConfig, policy: impl AccessPolicy + Send + Sync + 'static) -> Self {
        Self {
            config,
            policy: Box::new(policy),
            conns: HashMap::new(),
            docs: HashMap::new(),
            tasks: HashMap::new(),
            outputs: VecDeque::new(),
            next_task: 1,
        }
    }

    /// The next thing to do, in order. Call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> HubStats {
        HubStats {
            hot_docs: self.docs.values().filter(|d| d.is_hot()).count(),
            known_docs: self.docs.len(),
            connections: self.conns.len(),
            stores_in_flight: self.docs.values().filter(|d| d.store_in_flight()).count(),
        }
    }

    /// A connection finished the handshake.
    pub fn handle_connect(&mut self, conn: ConnId, peer: PeerInfo) {
        self.conns.insert(conn, ConnEntry { peer, docs: 0 });
    }

    /// A connection closed. Its sync states are persisted (for peers with a storage id) and
    /// dropped from memory.
    ///
    /// Not while the document holds changes that are not stored yet: the state's shared heads
    /// may include them (the peer uploaded them, or received them before their write
    /// committed), and a server that restarted without them would trust that state and never
    /// ask the peer for them again. The state saved before stays; a stale one only costs a
    /// longer sync.
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        let mut saved = Vec::new();
        for (id, d) in self.docs.iter_mut() {
            if let Some(state) = d.detach(conn)
                && d.is_durable()
                && let Some(storage_id) = &entry.peer.storage_id
            {
                let encoded = state.encode();
                d.remember_state(storage_id, encoded.clone());
                saved.push(SyncStateRecord {
                    doc: *id,
                    storage_id: storage_id.clone(),
                    state: encoded,
                });
            }
        }
        if !saved.is_empty() {
            self.outputs.push_back(Output::SaveSyncStates(saved));
        }
        // The entries only this connection kept (evicted while it was attached) go with it,
        // as `with_doc` drops an entry any other input leaves disposable.
        self.docs.retain(|_, d| !d.is_disposable());
    }

    /// A `sync` (`request == false`) or `request` message arrived from a connected peer.
    pub fn handle_sync(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        request: bool,
        data: Vec<u8>,
        now: i64,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.with_doc(doc, now, |hub, d| {
            d.enqueue_sync(hub, conn, request, data, now)
        });
    }

    /// Several `sync`/`request` messages that arrived together (say, everything waiting in the
    /// server's inbox), with the effects of [`Hub::handle_sync`] for each in order. Messages
    /// for the same document are applied to it in one Automerge call: the cost of an apply
    /// grows with the document, per call, so batching is what lets a server under load catch
    /// up. Messages of different documents are independent and may be handled in any order.
    pub fn handle_sync_batch(&mut self, inputs: Vec<SyncInput>, now: i64) {
        let mut order: Vec<DocumentId> = Vec::new();
        let mut groups: HashMap<DocumentId, Vec<(ConnId, bool, Vec<u8>)>> = HashMap::new();
        for input in inputs {
            if !self.conns.contains_key(&input.conn) {
                continue;
            }
            let group = groups.entry(input.doc).or_insert_with(|| {
                order.push(input.doc);
                Vec::new()
            });
            group.push((input.conn, input.request, input.data));
        }
        for doc in order {
            let Some(messages) = groups.remove(&doc) else {
                continue;
            };
            self.with_doc(doc, now, |hub, d| d.enqueue_sync_batch(hub, messages, now));
        }
    }

    /// An `ephemeral` message arrived from a connected peer: relayed to the document's other
    /// peers that may see it, once per (sender, session, count).
    pub fn handle_ephemeral(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        sender_id: String,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) {
        let Some(d) = self.docs.get_mut(&doc) else {
            return;
        };
        let mut ctx = Ctx::new(
            &self.config,
            &*self.policy,
            &mut self.conns,
            &mut self.outputs,
            &mut self.tasks,
            &mut self.next_task,
        );
        d.relay_ephemeral(&mut ctx, conn, sender_id, session_id, count, data);
    }

    /// A load finished. `Ok(None)`: the document is not in storage.
    pub fn handle_loaded(
        &mut self,
        task: TaskId,
        result: Result<Option<StoredDoc>, StorageFailure>,
        now: i64,
    ) {
        let Some(doc) = self.tasks.remove(&task) else {
            return;
        };
        self.with_doc(doc, now, |hub, d| d.loaded(hub, task, result, now));
    }

    /// A store finished.
    pub fn handle_stored(&mut self, task: TaskId, result: Result<(), StorageFailure>, now: i64) {
        let Some(doc) = self.tasks.remove(&task) else {
            return;
        };
        self.with_doc(doc, now, |hub, d| d.stored(hub, task, result, now));
    }

    /// Another server instance stored changes to `doc` (PostgreSQL NOTIFY). They are already
    /// durable, so they are applied and fanned out at once; if the document is not in memory
    /// but has peers here, it is loaded first.
    pub fn handle_remote_changes(&mut self, doc: DocumentId, changes: Vec<u8>, now: i64) {
        if !self.docs.contains_key(&doc) {
            return;
        }
        self.with_doc(doc, now, |hub, d| d.remote_changes(hub, changes, now));
    }

    /// Runs a server-side edit on `doc` for its owner. `create` is the document to start from
    /// if it exists nowhere yet (the genesis of a LearnSync document). The result arrives as
    /// [`Output::EditDone`] once stored.
    pub fn handle_edit(
        &mut self,
        doc: DocumentId,
        meta: DocMeta,
        create: Option<crate::docs::DocSpec>,
        edit: EditFn,
        token: EditToken,
        now: i64,
    ) {
        self.with_doc(doc, now, |hub, d| {
            d.enqueue_edit(hub, meta, create, edit, token, now)
        });
    }

    /// [`Self::handle_edit`] for a document the caller knows is not in storage (see
    /// [`doc::DocEntry::assume_absent`]): the edit starts from an empty document at once
    /// instead of waiting for a load that would find nothing. Wrong use is not harmless: a
    /// stored document edited this way is missing its stored changes in memory until it is
    /// evicted, so callers pass it only for documents they know were never written.
    pub fn handle_edit_of_absent(
        &mut self,
        doc: DocumentId,
        meta: DocMeta,
        create: Option<crate::docs::DocSpec>,
        edit: EditFn,
        token: EditToken,
        now: i64,
    ) {
        self.with_doc(doc, now, |hub, d| {
            d.assume_absent(hub, now);
            d.enqueue_edit(hub, meta, create, edit, token, now)
        });
    }

    /// Forced sync: every matching connection drops its sync states, is told to resync, and
    /// its persisted states are forgotten.
    pub fn handle_resync(&mut self, scope: ResyncScope, epoch: u64) {
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| match &scope {
                ResyncScope::All => true,
                ResyncScope::User(user) => &c.peer.user_id == user,
            })
            .map(|(id, _)| *id)
            .collect();
        for d in self.docs.values_mut() {
            d.forget_states(&scope, &self.conns, &targets);
        }
        let storage_ids = match &scope {
            ResyncScope::All => None,
            ResyncScope::User(_) => Some(
                targets
                    .iter()
                    .filter_map(|c| self.conns.get(c)?.peer.storage_id.clone())
                    .collect(),
            ),
        };
        self.outputs
            .push_back(Output::DeleteSyncStates { storage_ids });
        for conn in targets {
            self.outputs.push_back(Output::Send {
                conn,
                message: HubMessage::Resync { epoch },
            });
        }
    }

    /// Time passed: retries failed stores that are due, evicts idle documents.
    pub fn handle_tick(&mut self, now: i64) {
        // Only the documents with something due: taking every entry out of the map and back
        // in, ten times a second, cost a visit per loaded document (tens of thousands in a
        // bulk import) even when none had anything to do.
        let ids: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, d)| d.tick_due(&self.config, now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.with_doc(id, now, |hub, d| d.tick(hub, now));
        }
    }

    /// Runs `f` on the entry of `doc` (created if missing), then removes the entry if it has
    /// become empty.
    fn with_doc(
        &mut self,
        doc: DocumentId,
        _now: i64,
        f: impl FnOnce(&mut Ctx<'_>, &mut doc::DocEntry),
    ) {
        let mut entry = self
            .docs
            .remove(&doc)
            .unwrap_or_else(|| Box::new(doc::DocEntry::new(doc)));
        {
            let mut ctx = Ctx::new(
                &self.config,
                &*self.policy,
                &mut self.conns,
                &mut self.outputs,
                &mut self.tasks,
                &mut self.next_task,
            );
            f(&mut ctx, &mut entry);
        }
        if !entry.is_disposable() {
            self.docs.insert(doc, entry);
        }
    }
}

/// What a document entry may touch outside itself.
pub(crate) struct Ctx<'a> {
    config: &'a HubConfig,
    policy: &'a (dyn AccessPolicy + Send + Sync),
    conns: &'a mut HashMap<ConnId, ConnEntry>,
    outputs: &'a mut VecDeque<Output>,
    tasks: &'a mut HashMap<TaskId, DocumentId>,
    next_task: &'a mut u64,
}

impl<'a> Ctx<'a> {
    fn new(
        config: &'a HubConfig,
        policy: &'a (dyn AccessPolicy + Send + Sync),
        conns: &'a mut HashMap<ConnId, ConnEntry>,
        outputs: &'a mut VecDeque<Output>,
        tasks: &'a mut HashMap<TaskId, DocumentId>,
        next_task: &'a mut u64,
    ) -> Self {
        Self {
            config,
            policy,
            conns,
            outputs,
            tasks,
            next_task,
        }
    }

    fn task(&mut self, doc: DocumentId) -> TaskId {
        let id = TaskId(*self.next_task);
        *self.next_task += 1;
        self.tasks.insert(id, doc);
        id
    }

    fn send(&mut self, conn: ConnId, message: HubMessage) {
        self.outputs.push_back(Output::Send { conn, message });
    }

    /// Whether another connection of `conn`'s user is connected (to this hub).
    fn has_other_device(&self, conn: ConnId) -> bool {
        let Some(user) = self.peer(conn).map(|p| &p.user_id) else {
            return false;
        };
        self.conns
            .iter()
            .any(|(c, e)| *c != conn && e.peer.user_id == *user)
    }

    fn peer(&self, conn: ConnId) -> Option<&PeerInfo> {
        self.conns.get(&conn).map(|c| &c.peer)
    }
}

#[cfg(test)]
mod tests;
