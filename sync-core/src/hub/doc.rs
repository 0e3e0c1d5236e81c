//! One document inside the hub: its live copy, its peers, and its path to durability.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};

use super::{
    CloseReason, ConnEntry, ConnId, Ctx, DocMeta, EditError, EditFn, EditToken, HubConfig,
    HubMessage, Output, PeerInfo, ResyncScope, StorageFailure, StoreWrite, StoredDoc, TaskId,
};
use crate::docs::{self, DocSpec, projection::Projection};
use crate::ids::DocumentId;

/// The value a server-side edit returns to its caller (downcast by the caller, who wrote the
/// edit and knows its type).
pub type EditValue = Box<dyn Any + Send>;

/// Most inputs kept for a document while it loads; past this the sender is disconnected
/// rather than letting a slow database grow memory without bound.
const MAX_QUEUED: usize = 1024;

pub(crate) struct DocEntry {
    id: DocumentId,
    meta: DocMeta,
    life: Life,
    peers: PeerMap,
    /// Persisted sync states by peer storage id (from storage, or kept at disconnect).
    saved_states: HashMap<String, Vec<u8>>,
    in_storage: bool,
    /// Heads known to be durable.
    stored_heads: Vec<ChangeHash>,
    /// The write in flight, if any (one at a time per document).
    store: Option<InFlight>,
    /// The live copy has changes that no write covers yet.
    dirty: bool,
    /// Generations of peers' changes: `applied` counts the times new changes from peers
    /// landed in the live copy, `durable` is the last of those a stored write covered. A peer
    /// that uploaded changes is answered only once `durable` reaches the generation it
    /// uploaded at; every other peer gets the live copy at once (see [`Self::flush`]).
    applied: u64,
    durable: u64,
    /// Devices (storage ids) that uploaded changes of a generation not stored yet, with that
    /// generation: all their connections wait, so that another tab of the same device, or the
    /// device back on a new connection, is not told either. Usually empty.
    authors: Vec<(String, u64)>,
    /// A write was stored since the document was loaded (it is worth compacting once idle).
    written: bool,
    /// When to retry a failed write, and the delay used last (doubles per failure).
    retry_at: Option<i64>,
    backoff: i64,
    edits: VecDeque<PendingEdit>,
    /// The projection as of `stored_heads`, to send only what changed.
    projected: Option<Projection>,
    last_active: i64,
    ephemeral_seen: HashMap<(String, String), u64>,
    queue: Vec<Queued>,
    /// When the `doc-unavailable` held back for a grace period is due (see
    /// [`Self::check_unavailable`]).
    unavailable_due: Option<i64>,
}

enum Life {
    /// Never loaded (or dropped after a refused write).
    New,
    Loading(TaskId),
    /// A load failed; retried at the given time.
    LoadFailed(i64),
    Hot(Box<AutoCommit>),
    /// Evicted from memory; peers and their sync states remain.
    Cold,
}

struct PeerDoc {
    state: sync::State,
    status: PeerStatus,
    /// A sync message is owed to this peer, sent as soon as it may go (see
    /// [`DocEntry::flush`]).
    owed: bool,
    /// The generation of peers' changes that must be stored before this peer hears from us:
    /// the live copy's when the peer last uploaded changes (new or not: a change it sent again
    /// may be one still in flight).
    uploaded: u64,
    /// The heads we last actually sent this peer. Automerge assumes a peer whose heads equal
    /// ours already knows ours and skips the reply; with replies held back until a change is
    /// stored, that assumption is wrong (the peer never learns its change was stored), so the
    /// truth is restored before every message is generated.
    told: Vec<ChangeHash>,
}

/// The peers of one document, in connection order. Almost every document has one to three
/// peers, and a `BTreeMap` spends a whole node (about 2.5 KiB with the sync states inline) on
/// them, for every document, evicted or not: a vector sized to its peers is a tenth of that
/// (`bench connections`, BENCHMARKS.md P3). Kept sorted so that iteration is in the same order
/// as the map's was, which the deterministic simulation relies on.
#[derive(Default)]
struct PeerMap(Vec<(ConnId, PeerDoc)>);

impl PeerMap {
    fn position(&self, conn: &ConnId) -> Result<usize, usize> {
        self.0.binary_search_by_key(conn, |(c, _)| *c)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains_key(&self, conn: &ConnId) -> bool {
        self.position(conn).is_ok()
    }

    fn get(&self, conn: &ConnId) -> Option<&PeerDoc> {
        let i = self.position(conn).ok()?;
        Some(&self.0[i].1)
    }

    fn get_mut(&mut self, conn: &ConnId) -> Option<&mut PeerDoc> {
        let i = self.position(conn).ok()?;
        Some(&mut self.0[i].1)
    }

    fn insert(&mut self, conn: ConnId, peer: PeerDoc) {
        match self.position(&conn) {
            Ok(i) => self.0[i].1 = peer,
            Err(i) => {
                // Grow one at a time: the usual document has two peers, and doubling would
                // reserve room for four.
                self.0.reserve_exact(1);
                self.0.insert(i, (conn, peer));
            }
        }
    }

    fn remove(&mut self, conn: &ConnId) -> Option<PeerDoc> {
        let i = self.position(conn).ok()?;
        let (_, peer) = self.0.remove(i);
        if self.0.len() * 2 < self.0.capacity() {
            self.0.shrink_to_fit();
        }
        Some(peer)
    }

    fn keys(&self) -> impl Iterator<Item = &ConnId> {
        self.0.iter().map(|(c, _)| c)
    }

    fn values(&self) -> impl Iterator<Item = &PeerDoc> {
        self.0.iter().map(|(_, p)| p)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut PeerDoc> {
        self.0.iter_mut().map(|(_, p)| p)
    }

    fn iter(&self) -> impl Iterator<Item = (&ConnId, &PeerDoc)> {
        self.0.iter().map(|(c, p)| (c, p))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&ConnId, &mut PeerDoc)> {
        self.0.iter_mut().map(|(c, p)| (&*c, p))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerStatus {
    Unknown,
    Wants,
    Has,
    Unavailable,
}

struct InFlight {
    task: TaskId,
    heads: Vec<ChangeHash>,
    /// Owner and kind as this write records them (an edit may create the document).
    meta: DocMeta,
    /// Whether the write carries changes from peers (kept and retried if it fails).
    peer_changes: bool,
    /// The generation of peers' changes the write covers (see [`DocEntry::applied`]).
    covers: u64,
    /// The edit whose change rides on this write: joins the live copy only when stored.
    edit: Option<Ride>,
    projection: Option<Projection>,
}

/// An edit riding on a write: its change, its result, and the fork it ran on with the live
/// copy's heads the fork started from. If the live copy is unchanged once the write is stored,
/// the fork *is* the live copy plus the change and replaces it; applying the change again cost
/// as much as the edit itself (for a new document, the whole document: 11% of an import's CPU).
struct Ride {
    token: EditToken,
    change: Vec<u8>,
    value: EditValue,
    /// Boxed: an `AutoCommit` is 4 KiB by value, and an inline one made every document entry
    /// 5,000 bytes, hot or cold, writing or not (BENCHMARKS.md, P3).
    fork: Box<AutoCommit>,
    base: Vec<ChangeHash>,
}

struct PendingEdit {
    meta: DocMeta,
    create: Option<DocSpec>,
    edit: EditFn,
    token: EditToken,
}

enum Queued {
    Sync {
        conn: ConnId,
        request: bool,
        data: Vec<u8>,
    },
    Remote(Vec<u8>),
}

impl DocEntry {
    pub(crate) fn new(id: DocumentId) -> Self {
        Self {
            id,
            meta: DocMeta::default(),
            life: Life::New,
            peers: PeerMap::default(),
            saved_states: HashMap::new(),
            in_storage: false,
            stored_heads: Vec::new(),
            store: None,
            dirty: false,
            applied: 0,
            durable: 0,
            authors: Vec::new(),
            written: false,
            retry_at: None,
            backoff: 0,
            edits: VecDeque::new(),
            projected: None,
            last_active: 0,
            ephemeral_seen: HashMap::new(),
            queue: Vec::new(),
            unavailable_due: None,
        }
    }

    pub(crate) fn is_hot(&self) -> bool {
        matches!(self.life, Life::Hot(_))
    }

    pub(crate) fn store_in_flight(&self) -> bool {
        self.store.is_some()
    }

    /// Nothing left worth keeping in memory.
    pub(crate) fn is_disposable(&self) -> bool {
        matches!(self.life, Life::New | Life::Cold)
            && self.peers.is_empty()
            && self.queue.is_empty()
            && self.edits.is_empty()
            && self.store.is_none()
    }

    // -----------------------------------------------------------------------------------------
    // Inputs

    pub(crate) fn enqueue_sync(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        request: bool,
        data: Vec<u8>,
        now: i64,
    ) {
        self.last_active = now;
        if self.is_hot() {
            self.process_sync(ctx, conn, request, data, now);
            return;
        }
        if self.queue.len() >= MAX_QUEUED {
            ctx.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::InvalidSyncMessage("server busy loading this document".into()),
            });
            return;
        }
        self.queue.push(Queued::Sync {
            conn,
            request,
            data,
        });
        self.ensure_loading(ctx, now);
    }

    /// Several messages for this document that arrived together, in their order.
    pub(crate) fn enqueue_sync_batch(
        &mut self,
        ctx: &mut Ctx<'_>,
        messages: Vec<(ConnId, bool, Vec<u8>)>,
        now: i64,
    ) {
        if messages.len() > 1 && self.is_hot() && self.meta.owner.is_some() {
            self.last_active = now;
            self.process_sync_batch(ctx, messages, now);
            return;
        }
        for (conn, request, data) in messages {
            self.enqueue_sync(ctx, conn, request, data, now);
        }
    }

    pub(crate) fn enqueue_edit(
        &mut self,
        ctx: &mut Ctx<'_>,
        meta: DocMeta,
        create: Option<DocSpec>,
        edit: EditFn,
        token: EditToken,
        now: i64,
    ) {
        self.last_active = now;
        self.edits.push_back(PendingEdit {
            meta,
            create,
            edit,
            token,
        });
        if self.is_hot() {
            self.maybe_store(ctx, now);
        } else {
            self.ensure_loading(ctx, now);
        }
    }

    pub(crate) fn remote_changes(&mut self, ctx: &mut Ctx<'_>, changes: Vec<u8>, now: i64) {
        match &mut self.life {
            Life::Hot(doc) => {
                if self.meta.owner.is_none() {
                    // Someone else claimed it elsewhere: reload to learn the owner.
                    self.drop_live_copy();
                    if !self.peers.is_empty() {
                        self.ensure_loading(ctx, now);
                    }
                    return;
                }
                let before = doc.get_heads();
                // Corrupt bytes from our own database are not the peers' fault: skip them.
                let _ = doc.load_incremental(&changes);
                let after = doc.get_heads();
                if after == before {
                    return;
                }
                self.in_storage = true;
                if !self.dirty && self.store.is_none() {
                    self.stored_heads = after;
                }
                // Another instance projected these changes; ours would be stale.
                self.projected = None;
                self.last_active = now;
                for p in self.peers.values_mut() {
                    p.owed = true;
                }
                self.flush(ctx);
            }
            Life::Loading(_) => self.queue.push(Queued::Remote(changes)),
            Life::New | Life::Cold | Life::LoadFailed(_) => {
                if !self.peers.is_empty() {
                    self.ensure_loading(ctx, now);
                }
            }
        }
    }

    pub(crate) fn loaded(
        &mut self,
        ctx: &mut Ctx<'_>,
        task: TaskId,
        result: Result<Option<StoredDoc>, StorageFailure>,
        now: i64,
    ) {
        if !matches!(self.life, Life::Loading(t) if t == task) {
            return;
        }
        self.take_loaded(ctx, result, now);
    }

    /// Starts the live copy of a document the caller knows is not stored, without asking
    /// storage: the documents of an account created moments ago by the same import, whose
    /// ids come from the account's fresh seed. Only an entry that never started loading takes
    /// the shortcut; one loading or loaded already goes on as it was.
    pub(crate) fn assume_absent(&mut self, ctx: &mut Ctx<'_>, now: i64) {
        if matches!(self.life, Life::New) {
            self.take_loaded(ctx, Ok(None), now);
        }
    }

    fn take_loaded(
        &mut self,
        ctx: &mut Ctx<'_>,
        result: Result<Option<StoredDoc>, StorageFailure>,
        now: i64,
    ) {
        let mut doc = AutoCommit::new().with_actor(ActorId::from(ctx.config.actor));
        match result {
            Ok(Some(stored)) => {
                for chunk in &stored.chunks {
                    // A corrupt chunk must not hide the others.
                    let _ = doc.load_incremental(chunk);
                }
                if self.meta.owner.is_none() {
                    self.meta = stored.meta;
                }
                for (storage_id, state) in stored.sync_states {
                    self.saved_states.entry(storage_id).or_insert(state);
                }
                self.in_storage = true;
                self.stored_heads = doc.get_heads();
            }
            Ok(None) => {
                self.in_storage = false;
                self.stored_heads = Vec::new();
            }
            Err(StorageFailure::Unavailable(_)) => {
                self.life = Life::LoadFailed(now + ctx.config.min_retry_ms);
                return;
            }
            Err(StorageFailure::Rejected(_)) => {
                self.life = Life::New;
                self.refuse_everyone(ctx);
                return;
            }
        }
        self.life = Life::Hot(Box::new(doc));
        // A copy fresh from storage holds nothing unstored: changes uploaded to an earlier
        // copy are either in it (stored) or gone with that copy (never revealed again).
        self.durable = self.applied;
        // What waited for the load, in order; runs of sync messages are applied together.
        let mut syncs = Vec::new();
        for input in std::mem::take(&mut self.queue) {
            match input {
                Queued::Sync {
                    conn,
                    request,
                    data,
                } => syncs.push((conn, request, data)),
                Queued::Remote(changes) => {
                    self.enqueue_sync_batch(ctx, std::mem::take(&mut syncs), now);
                    self.remote_changes(ctx, changes, now);
                }
            }
        }
        self.enqueue_sync_batch(ctx, syncs, now);
        // Peers attached before an eviction may be owed messages: they go once nothing is left
        // to write.
        self.maybe_store(ctx, now);
    }

    pub(crate) fn stored(
        &mut self,
        ctx: &mut Ctx<'_>,
        task: TaskId,
        result: Result<(), StorageFailure>,
        now: i64,
    ) {
        let Some(inflight) = self.store.take_if(|s| s.task == task) else {
            return;
        };
        match result {
            Ok(()) => {
                self.in_storage = true;
                self.written = true;
                self.backoff = 0;
                self.stored_heads = inflight.heads;
                self.meta = inflight.meta;
                if inflight.peer_changes {
                    self.durable = self.durable.max(inflight.covers);
                }
                if inflight.projection.is_some() {
                    self.projected = inflight.projection;
                }
                if let Some(ride) = inflight.edit {
                    if let Life::Hot(doc) = &mut self.life {
                        // The fork's change is durable now: it joins the live copy. Equal
                        // heads are not enough: changes waiting in the live copy for their
                        // dependencies do not show in its heads, and the fork does not have
                        // those that arrived after it was made.
                        if doc.get_heads() == ride.base && doc.get_missing_deps(&[]).is_empty() {
                            *doc = ride.fork;
                        } else {
                            let _ = doc.load_incremental(&ride.change);
                        }
                        for p in self.peers.values_mut() {
                            p.owed = true;
                        }
                    }
                    ctx.outputs.push_back(Output::EditDone {
                        token: ride.token,
                        result: Ok(ride.value),
                    });
                }
                // The next write, or (nothing left to write) the messages owed meanwhile.
                self.maybe_store(ctx, now);
                self.check_unavailable(ctx, now);
            }
            Err(StorageFailure::Unavailable(why)) => {
                if let Some(ride) = inflight.edit {
                    ctx.outputs.push_back(Output::EditDone {
                        token: ride.token,
                        result: Err(EditError::Storage(StorageFailure::Unavailable(why))),
                    });
                }
                // The peers' changes are still only in memory: keep them and retry.
                self.dirty |= inflight.peer_changes;
                self.backoff = if self.backoff == 0 {
                    ctx.config.min_retry_ms
                } else {
                    (self.backoff * 2).min(ctx.config.max_retry_ms)
                };
                self.retry_at = Some(now + self.backoff);
            }
            Err(StorageFailure::Rejected(why)) => {
                if let Some(ride) = inflight.edit {
                    ctx.outputs.push_back(Output::EditDone {
                        token: ride.token,
                        result: Err(EditError::Storage(StorageFailure::Rejected(why))),
                    });
                }
                // Storage will never take this document from these writers: forget what we
                // hold (it was never acknowledged) and answer as if it did not exist.
                self.dirty = false;
                self.refuse_everyone(ctx);
                self.life = if self.in_storage {
                    Life::Cold
                } else {
                    Life::New
                };
                if !self.in_storage {
                    self.meta = DocMeta::default();
                }
            }
        }
    }

    /// Whether [`Self::tick`] has anything to do at `now`: a cheap look at the deadlines it
    /// checks, so that the hub visits only those entries.
    pub(crate) fn tick_due(&self, config: &HubConfig, now: i64) -> bool {
        self.unavailable_due.is_some_and(|due| now >= due)
            || matches!(self.life, Life::LoadFailed(at) if now >= at)
            || self.retry_at.is_some_and(|at| now >= at)
            || (now - self.last_active >= config.idle_evict_ms && self.is_hot())
    }

    pub(crate) fn tick(&mut self, ctx: &mut Ctx<'_>, now: i64) {
        if self.unavailable_due.is_some_and(|due| now >= due) {
            self.check_unavailable(ctx, now);
        }
        if let Life::LoadFailed(at) = self.life
            && now >= at
        {
            self.life = Life::New;
            self.ensure_loading(ctx, now);
            return;
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            self.maybe_store(ctx, now);
        }
        let idle = now - self.last_active >= ctx.config.idle_evict_ms;
        if idle
            && self.is_hot()
            && self.store.is_none()
            && !self.dirty
            && self.edits.is_empty()
            && self.queue.is_empty()
        {
            if self.waiting_for_dependencies() && !self.peers.is_empty() {
                // Evicting would lose the changes waiting on their dependencies (see
                // `drop_live_copy`); ask the peers to resend what is missing instead.
                self.ask_peers_to_reset();
                self.last_active = now;
                self.flush(ctx);
                return;
            }
            self.drop_live_copy();
            if std::mem::take(&mut self.written) {
                ctx.outputs.push_back(Output::Compact { doc: self.id });
            }
        }
    }

    pub(crate) fn relay_ephemeral(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        sender_id: String,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) {
        if !self.peers.contains_key(&conn) {
            return;
        }
        let key = (sender_id.clone(), session_id.clone());
        if self
            .ephemeral_seen
            .get(&key)
            .is_some_and(|last| *last >= count)
        {
            return;
        }
        self.ephemeral_seen.insert(key, count);
        let targets: Vec<ConnId> = self.peers.keys().copied().filter(|c| *c != conn).collect();
        for target in targets {
            if self.may_see(ctx, target) {
                ctx.send(
                    target,
                    HubMessage::Ephemeral {
                        doc: self.id,
                        sender_id: sender_id.clone(),
                        session_id: session_id.clone(),
                        count,
                        data: data.clone(),
                    },
                );
            }
        }
    }

    pub(crate) fn detach(&mut self, conn: ConnId) -> Option<sync::State> {
        self.peers.remove(&conn).map(|p| p.state)
    }

    pub(crate) fn remember_state(&mut self, storage_id: &str, state: Vec<u8>) {
        self.saved_states.insert(storage_id.to_string(), state);
    }

    pub(crate) fn forget_states(
        &mut self,
        scope: &ResyncScope,
        conns: &HashMap<ConnId, ConnEntry>,
        targets: &[ConnId],
    ) {
        match scope {
            ResyncScope::All => self.saved_states.clear(),
            ResyncScope::User(_) => {
                for conn in targets {
                    if let Some(sid) = conns.get(conn).and_then(|c| c.peer.storage_id.as_ref()) {
                        self.saved_states.remove(sid);
                    }
                }
            }
        }
        for conn in targets {
            if let Some(p) = self.peers.get_mut(conn) {
                p.state = sync::State::new();
                p.owed = false;
                p.told = Vec::new();
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    /// Leaves only what storage holds. Changes a peer sent whose dependencies never arrived
    /// wait inside the live copy, unstored; they go with it, but the peer recorded them as sent
    /// and would never send them again (the server asking for them in `need` does not help:
    /// automerge filters what it sends by what it already sent). Such peers are asked to reset,
    /// so that they resend whatever the reloaded copy lacks.
    fn drop_live_copy(&mut self) {
        if self.waiting_for_dependencies() {
            self.ask_peers_to_reset();
        }
        self.life = Life::Cold;
    }

    /// The live copy holds changes it cannot apply yet (their dependencies never arrived).
    fn waiting_for_dependencies(&mut self) -> bool {
        match &mut self.life {
            Life::Hot(doc) => !doc.get_missing_deps(&[]).is_empty(),
            _ => false,
        }
    }

    /// The next message to each peer carries automerge's sync reset: the peer forgets what it
    /// believes it sent and sends again whatever we lack.
    fn ask_peers_to_reset(&mut self) {
        for p in self.peers.values_mut() {
            p.state.needs_reset = true;
            p.owed = true;
        }
    }

    fn ensure_loading(&mut self, ctx: &mut Ctx<'_>, _now: i64) {
        if matches!(self.life, Life::New | Life::Cold) {
            let task = ctx.task(self.id);
            self.life = Life::Loading(task);
            ctx.outputs.push_back(Output::Load { task, doc: self.id });
        }
    }

    fn process_sync(
        &mut self,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        request: bool,
        data: Vec<u8>,
        now: i64,
    ) {
        let Some(message) = self.admit(ctx, conn, &data) else {
            return;
        };
        let Life::Hot(doc) = &mut self.life else {
            return;
        };
        let before = doc.get_heads();
        let uploaders = if message.changes.is_empty() {
            Vec::new()
        } else {
            vec![conn]
        };
        self.receive(ctx, conn, request, message);
        self.after_receive(ctx, &before, Some(conn), &uploaders, now);
        self.flush(ctx);
        self.check_unavailable(ctx, now);
    }

    /// Messages of several peers (or several of one peer) that arrived together, for a document
    /// that is hot and owned. The same effects as [`Self::process_sync`] for each in order,
    /// except that all their changes are applied to the live copy in one Automerge call first:
    /// an apply costs in proportion to the document's size per call, not per change
    /// (`perf/automerge-costs.md`), so a server that falls behind catches up instead of falling
    /// further behind. The owner is known, so every message was admitted by the same access
    /// decision it would have had alone (a claim by the first writer cannot change it).
    fn process_sync_batch(
        &mut self,
        ctx: &mut Ctx<'_>,
        messages: Vec<(ConnId, bool, Vec<u8>)>,
        now: i64,
    ) {
        let mut admitted = Vec::with_capacity(messages.len());
        for (conn, request, data) in messages {
            if let Some(message) = self.admit(ctx, conn, &data) {
                admitted.push((conn, request, message));
            }
        }
        let Life::Hot(doc) = &mut self.life else {
            return;
        };
        let before = doc.get_heads();
        if admitted
            .iter()
            .filter(|(_, _, m)| !m.changes.is_empty())
            .count()
            > 1
        {
            let combined: Vec<u8> = admitted
                .iter()
                .flat_map(|(_, _, m)| m.changes.iter())
                .flatten()
                .copied()
                .collect();
            // On failure nothing is lost: each message below applies its own changes again
            // (duplicates are skipped), and the one at fault is answered as it would be alone.
            let _ = doc.load_incremental(&combined);
        }
        let mut writer: Option<ConnId> = None;
        let mut uploaders = Vec::new();
        for (conn, request, message) in admitted {
            if !message.changes.is_empty() {
                writer.get_or_insert(conn);
                uploaders.push(conn);
            }
            self.receive(ctx, conn, request, message);
        }
        self.after_receive(ctx, &before, writer, &uploaders, now);
        self.flush(ctx);
        self.check_unavailable(ctx, now);
    }

    /// Decides whether `conn` may sync this document (attaching it as a peer on its first
    /// message) and decodes its message. `None` when the peer was refused or closed.
    fn admit(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> Option<sync::Message> {
        let peer = ctx.peer(conn).cloned()?;
        if !self.may_see_peer(ctx, &peer) {
            self.deny(ctx, conn);
            return None;
        }
        if !self.peers.contains_key(&conn) {
            let entry = ctx.conns.get_mut(&conn)?;
            if entry.docs >= ctx.config.max_docs_per_conn {
                ctx.outputs.push_back(Output::Close {
                    conn,
                    reason: CloseReason::TooManyDocuments(ctx.config.max_docs_per_conn),
                });
                return None;
            }
            entry.docs += 1;
            let state = peer
                .storage_id
                .as_ref()
                .and_then(|sid| self.saved_states.get(sid))
                .and_then(|bytes| sync::State::decode(bytes).ok())
                .unwrap_or_default();
            self.peers.insert(
                conn,
                PeerDoc {
                    state,
                    status: PeerStatus::Unknown,
                    owed: false,
                    uploaded: 0,
                    told: Vec::new(),
                },
            );
        }
        match sync::Message::decode(data)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                check_bloom_filters(&m)?;
                Ok(m)
            }) {
            Ok(m) => Some(m),
            Err(e) => {
                ctx.outputs.push_back(Output::Close {
                    conn,
                    reason: CloseReason::InvalidSyncMessage(e.to_string()),
                });
                None
            }
        }
    }

    /// Hands an admitted message to the peer's automerge sync state (applying its changes to
    /// the live copy) and marks a reply owed.
    fn receive(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, request: bool, message: sync::Message) {
        let Life::Hot(doc) = &mut self.life else {
            return;
        };
        let Some(p) = self.peers.get_mut(&conn) else {
            return;
        };
        if request {
            p.status = PeerStatus::Wants;
        }
        if !message.heads.is_empty() {
            p.status = PeerStatus::Has;
        }
        let result = crate::sync_receive::receive_sync_message(doc, &mut p.state, message);
        p.owed = true;
        if let Err(e) = result {
            ctx.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::InvalidSyncMessage(e.to_string()),
            });
        }
    }

    /// What receiving messages leaves to do, before anything is sent (`on_new_changes`
    /// flushes): a new generation if the live copy changed (`before` is its heads before the
    /// messages), the peers that sent changes held back until it is stored, and the changes
    /// claimed for `writer` and stored.
    fn after_receive(
        &mut self,
        ctx: &mut Ctx<'_>,
        before: &[ChangeHash],
        writer: Option<ConnId>,
        uploaders: &[ConnId],
        now: i64,
    ) {
        let changed = match &mut self.life {
            Life::Hot(doc) => doc.get_heads() != before,
            _ => false,
        };
        if changed {
            self.applied += 1;
        }
        for &conn in uploaders {
            self.mark_uploaded(ctx, conn);
        }
        if changed && let Some(peer) = writer.and_then(|c| ctx.peer(c).cloned()) {
            self.on_new_changes(ctx, &peer, now);
        }
    }

    /// A peer sent changes: it, and every connection of the same device (storage id), hear
    /// from us again only once everything now in the live copy is stored, so that no reply
    /// tells a device a change of its own is held before it is.
    fn mark_uploaded(&mut self, ctx: &Ctx<'_>, conn: ConnId) {
        let applied = self.applied;
        if let Some(p) = self.peers.get_mut(&conn) {
            p.uploaded = applied;
        }
        if applied > self.durable
            && let Some(sid) = ctx.peer(conn).and_then(|info| info.storage_id.as_deref())
        {
            match self.authors.iter_mut().find(|(a, _)| a == sid) {
                Some(entry) => entry.1 = applied,
                None => self.authors.push((sid.to_string(), applied)),
            }
        }
    }

    /// Whether everything in the live copy is stored: nothing a peer uploaded waits for a
    /// write.
    pub(crate) fn is_durable(&self) -> bool {
        !self.dirty && self.durable == self.applied
    }

    /// New changes from a peer landed in the live copy: claim the document if it had no owner,
    /// and get them stored.
    fn on_new_changes(&mut self, ctx: &mut Ctx<'_>, writer: &PeerInfo, now: i64) {
        if self.meta.owner.is_none() {
            self.meta.owner = Some(writer.user_id.clone());
            self.classify(writer);
        }
        self.dirty = true;
        for p in self.peers.values_mut() {
            p.owed = true;
        }
        self.maybe_store(ctx, now);
    }

    /// Recognises a user's own LearnSync document by its genesis and its id.
    fn classify(&mut self, writer: &PeerInfo) {
        let Life::Hot(doc) = &self.life else {
            return;
        };
        let (Some(spec), Some(ns)) = (docs::identify(doc.as_ref()), writer.namespace.as_ref())
        else {
            return;
        };
        if docs::belongs_to(&self.id, &spec, ns) {
            self.meta.kind = Some(spec.kind());
            if let DocSpec::Course { course_id } = spec {
                self.meta.course_id = Some(course_id);
            }
        }
    }

    /// Starts the next write if there is anything to write; otherwise everything in the live
    /// copy is durable and the messages owed to peers go now. (Without that flush, a peer's
    /// upload that an edit's write already covered was never answered: the peer stayed
    /// "syncing" until its next change.)
    fn maybe_store(&mut self, ctx: &mut Ctx<'_>, now: i64) {
        self.start_store(ctx, now);
        self.flush(ctx);
    }

    fn start_store(&mut self, ctx: &mut Ctx<'_>, now: i64) {
        if self.store.is_some() || self.retry_at.is_some() {
            // One write at a time; after a failure, `tick` retries when it is due.
            return;
        }
        let Life::Hot(doc) = &mut self.life else {
            return;
        };
        // Run the next edit on a fork of the live copy; edits that change nothing or fail
        // finish at once.
        let mut ride: Option<Ride> = None;
        let mut write_meta = self.meta.clone();
        while ride.is_none() {
            let Some(pending) = self.edits.pop_front() else {
                break;
            };
            if let (Some(owner), Some(wanted)) = (&self.meta.owner, &pending.meta.owner)
                && owner != wanted
            {
                ctx.outputs.push_back(Output::EditDone {
                    token: pending.token,
                    result: Err(EditError::Storage(StorageFailure::Rejected(
                        "document belongs to another user".into(),
                    ))),
                });
                continue;
            }
            let mut fork = doc.fork();
            if fork.get_heads().is_empty()
                && let Some(spec) = &pending.create
            {
                // An empty document plus its genesis is the genesis: start from it instead of
                // merging it in (the merge cost as much as building it).
                fork = docs::genesis(spec);
            }
            fork.set_actor(ActorId::from(ctx.config.actor));
            let base = doc.get_heads();
            match (pending.edit)(&mut fork) {
                Err(e) => {
                    ctx.outputs.push_back(Output::EditDone {
                        token: pending.token,
                        result: Err(EditError::Doc(e)),
                    });
                }
                Ok(value) => {
                    docs::commit(&mut fork, now);
                    if fork.get_heads() == base {
                        // Nothing changed: nothing to store for this edit.
                        ctx.outputs.push_back(Output::EditDone {
                            token: pending.token,
                            result: Ok(value),
                        });
                        continue;
                    }
                    if self.meta.owner.is_none() {
                        write_meta = pending.meta.clone();
                    }
                    let change = fork.save_after(&base);
                    ride = Some(Ride {
                        token: pending.token,
                        change,
                        value,
                        fork: Box::new(fork),
                        base,
                    });
                }
            }
        }
        if !self.dirty && ride.is_none() {
            return;
        }
        if write_meta.owner.is_none() {
            // Nobody owns it, so nobody wrote it: nothing to store.
            self.dirty = false;
            return;
        }
        let peer_changes = self.dirty;
        let mut changes = if self.dirty {
            doc.save_after(&self.stored_heads)
        } else {
            Vec::new()
        };
        if changes.is_empty() && ride.is_none() {
            self.dirty = false;
            return;
        }
        let (heads, projection) = match &mut ride {
            Some(ride) => {
                changes.extend_from_slice(&ride.change);
                (ride.fork.get_heads(), project(&ride.fork))
            }
            None => (doc.get_heads(), project(doc.as_ref())),
        };
        let delta = projection
            .as_ref()
            .and_then(|p| delta(self.projected.as_ref(), p));
        let task = ctx.task(self.id);
        ctx.outputs.push_back(Output::Store {
            task,
            write: StoreWrite {
                doc: self.id,
                meta: write_meta.clone(),
                changes,
                heads: heads.clone(),
                projection: delta,
                likely_new: !self.in_storage,
            },
        });
        self.dirty = false;
        self.store = Some(InFlight {
            task,
            heads,
            meta: write_meta,
            peer_changes,
            covers: self.applied,
            edit: ride,
            projection,
        });
    }

    /// Sends every owed sync message that may go now. A peer whose own uploaded changes are
    /// all stored gets the live copy at once, including other peers' changes still being
    /// written: that is how a change reaches a user's other devices without waiting for its
    /// commit (GOALS.md P1), and a device holding another's change can only add to its
    /// durability. A peer with changes of its own in the live copy that no stored write covers
    /// waits: any message would show it heads that include them, and that is how a change is
    /// acknowledged — only once it is stored.
    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        let durable = self.durable;
        self.authors.retain(|(_, generation)| *generation > durable);
        let authors = &self.authors;
        let mut conns: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(c, p)| {
                p.owed
                    && p.uploaded <= durable
                    && !ctx
                        .peer(**c)
                        .and_then(|info| info.storage_id.as_deref())
                        .is_some_and(|sid| authors.iter().any(|(a, _)| a == sid))
            })
            .map(|(c, _)| *c)
            .collect();
        // While anything is unstored, a peer whose announced heads may cover it waits too: it
        // may be the author on a new connection (a change it sent before reconnecting, or one
        // another device sends back after the server lost it in a crash).
        if !conns.is_empty()
            && !self.is_durable()
            && let Life::Hot(doc) = &mut self.life
        {
            let doc = doc.document();
            // Metadata only: building whole changes would walk their operations.
            let pending: HashSet<ChangeHash> = doc
                .get_changes_meta(&self.stored_heads)
                .iter()
                .map(|c| c.hash)
                .collect();
            let peers = &self.peers;
            conns.retain(|c| {
                peers
                    .get(c)
                    .is_some_and(|p| !may_cover(doc, &p.state, &pending))
            });
        }
        for conn in conns {
            if !self.may_see(ctx, conn) {
                self.deny(ctx, conn);
                continue;
            }
            let Life::Hot(doc) = &mut self.life else {
                return;
            };
            let Some(p) = self.peers.get_mut(&conn) else {
                continue;
            };
            p.owed = false;
            p.state.last_sent_heads.clone_from(&p.told);
            if let Some(message) = doc.sync().generate_sync_message(&mut p.state) {
                p.told.clone_from(&message.heads);
                ctx.send(
                    conn,
                    HubMessage::Sync {
                        doc: self.id,
                        data: message.encode(),
                    },
                );
            }
        }
    }

    /// The JavaScript server's rule: `doc-unavailable` only when we have nothing and no peer is
    /// uploading the document.
    ///
    /// The JavaScript server also waits until its other peers have answered whether they have
    /// the document. We do not ask other users' devices, but a device of the same user may be
    /// uploading it right now: one device creates a document and another finds it at once, and
    /// the creator's first message can reach the hub just after the finder's request (they
    /// come over different sockets). So while another device of a requester's user is
    /// connected, the answer waits `unavailable_grace_ms` for that upload before it goes.
    fn check_unavailable(&mut self, ctx: &mut Ctx<'_>, now: i64) {
        let Life::Hot(doc) = &mut self.life else {
            return;
        };
        if self.in_storage
            || self.dirty
            || self.store.is_some()
            || !doc.get_heads().is_empty()
            || self.peers.values().any(|p| p.status == PeerStatus::Has)
        {
            self.unavailable_due = None;
            return;
        }
        let wanting: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.status == PeerStatus::Wants)
            .map(|(c, _)| *c)
            .collect();
        let due = match self.unavailable_due.take() {
            Some(due) => due,
            None if wanting.iter().any(|c| ctx.has_other_device(*c)) => {
                now + ctx.config.unavailable_grace_ms
            }
            None => now,
        };
        if !wanting.is_empty() && now < due {
            self.unavailable_due = Some(due);
            return;
        }
        for (conn, p) in self.peers.iter_mut() {
            if p.status == PeerStatus::Wants {
                p.status = PeerStatus::Unavailable;
                ctx.send(*conn, HubMessage::DocUnavailable { doc: self.id });
            }
        }
    }

    fn may_see(&self, ctx: &Ctx<'_>, conn: ConnId) -> bool {
        ctx.peer(conn)
            .is_some_and(|peer| self.may_see_peer(ctx, peer))
    }

    fn may_see_peer(&self, ctx: &Ctx<'_>, peer: &PeerInfo) -> bool {
        match &self.meta.owner {
            Some(owner) => ctx.policy.allows(peer, owner),
            None => true,
        }
    }

    /// Answers as if the document did not exist, and stops syncing it with this peer.
    fn deny(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        if self.peers.remove(&conn).is_some()
            && let Some(entry) = ctx.conns.get_mut(&conn)
        {
            entry.docs = entry.docs.saturating_sub(1);
        }
        ctx.send(conn, HubMessage::DocUnavailable { doc: self.id });
        ctx.outputs.push_back(Output::Denied { conn, doc: self.id });
    }

    fn refuse_everyone(&mut self, ctx: &mut Ctx<'_>) {
        let mut conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for q in self.queue.drain(..) {
            if let Queued::Sync { conn, .. } = q
                && !conns.contains(&conn)
            {
                conns.push(conn);
            }
        }
        for conn in conns {
            self.deny(ctx, conn);
        }
        for pending in self.edits.drain(..) {
            ctx.outputs.push_back(Output::EditDone {
                token: pending.token,
                result: Err(EditError::Storage(StorageFailure::Rejected(
                    "storage refused this document".into(),
                ))),
            });
        }
    }
}

/// Refuses the bloom filters automerge 0.12 would trust to its own harm: one that claims
/// entries but carries no bits makes `generate_sync_message` divide by zero (a panic in the
/// server's shard), and a huge probe count makes it allocate gigabytes. Automerge itself writes
/// 7 probes and 10 bits per entry. Found by the `hub_sync` fuzz target.
fn check_bloom_filters(message: &sync::Message) -> Result<(), String> {
    fn leb128(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        let mut rest = bytes.as_slice();
        if rest.is_empty() {
            continue;
        }
        let (Some(entries), Some(_bits_per_entry), Some(probes)) =
            (leb128(&mut rest), leb128(&mut rest), leb128(&mut rest))
        else {
            return Err("malformed bloom filter".into());
        };
        if entries > 0 && rest.is_empty() {
            return Err("bloom filter with entries but no bits".into());
        }
        if probes == 0 || probes > 64 {
            return Err(format!("bloom filter with {probes} probes"));
        }
    }
    Ok(())
}

/// Whether the heads a peer announced may cover a change in `pending` (not stored yet): a head
/// that is one, a head the live copy does not know (a change of the peer's that may build on
/// one), or no heads known at all (a forced resync forgot them).
fn may_cover(
    doc: &automerge::Automerge,
    state: &sync::State,
    pending: &HashSet<ChangeHash>,
) -> bool {
    if pending.is_empty() {
        return false;
    }
    match &state.their_heads {
        None => true,
        Some(heads) => heads
            .iter()
            .any(|h| pending.contains(h) || doc.get_change_meta_by_hash(h).is_none()),
    }
}

fn project(doc: &AutoCommit) -> Option<Projection> {
    docs::projection::project(doc).ok().flatten()
}

/// What changed between the last stored projection and the new one.
fn delta(old: Option<&Projection>, new: &Projection) -> Option<Projection> {
    match (old, new) {
        (Some(Projection::Learning(old)), Projection::Learning(new)) => {
            let changed: Vec<_> = new
                .iter()
                .filter(|row| !old.contains(row))
                .cloned()
                .collect();
            (!changed.is_empty()).then_some(Projection::Learning(changed))
        }
        (Some(old), new) if old == new => None,
        (_, new) => Some(new.clone()),
    }
}
