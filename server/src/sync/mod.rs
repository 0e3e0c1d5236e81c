//! The runtime around `sync_core::hub`: it carries out what the hubs decide.
//!
//! ```text
//!  socket tasks ──frames──► shard tasks (one Hub each, documents hashed to shards)
//!       ▲                        │ Store / Load / Send outputs
//!       └──── Outbound ◄─────────┤
//!                                ├──► writer tasks: group commit (store_writes), then Stored back
//!                                ├──► loader tasks: load_document, then Loaded back
//!  PostgreSQL NOTIFY ──► fanout ─┘    (changes stored by other instances)
//! ```
//!
//! **Invariant:** a shard sends nothing revealing a change before the writer reports it stored
//! (the hub enforces it; this runtime only reports `Stored` after the transaction committed).

mod fanout;
pub mod routes;
mod shard;
pub mod socket;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::AutoCommit;
use sync_core::docs::{DocError, DocSpec};
use sync_core::hub::{
    ConnId, DocMeta, EditError, EditValue, HubConfig, HubMessage, HubStats, PeerInfo, ResyncScope,
};
use sync_core::session::SessionLimits;
use sync_core::{DocumentId, UserNamespace};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::model::now_ms;
use crate::store::{Backend, Store, UserRecord};

/// What a shard sends a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A hub message to encode and send. Boxed so that a queued message is two words: the
    /// largest hub message (ephemeral) is 96 bytes, and a queue keeps the room of its longest
    /// burst (BENCHMARKS.md, P3).
    Message(Box<HubMessage>),
    /// Send an `error` with this text and close. Boxed, like the status, so that every
    /// variant is one pointer. A `Box<String>` because `Box<str>` is two words and would make
    /// every slot 24 bytes.
    Close(Box<String>),
    /// Tell the device the server's health.
    Status(Box<Health>),
}

/// The server's health as a device is told it.
#[derive(Debug, Clone)]
pub struct Health {
    /// Can changes be stored right now?
    pub ok: bool,
    /// For people.
    pub message: Option<String>,
}

/// A live connection, as shards and the engine reach it: its outbound queue, the token that
/// closes it, its user. One pointer to clone, because every shard and the engine keep a copy.
///
/// The queue is a `VecDeque` behind a mutex, not a tokio `mpsc` channel: a channel costs a
/// connection about 1 KiB before anything is queued (its cache-padded state, 512 bytes, and a
/// first block of 32 slots), and at P3's size that is memory held for every idle device
/// (BENCHMARKS.md, P3). The queue is almost always empty: the socket task empties it as soon
/// as a shard fills it.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<ConnShared>);

#[derive(Debug)]
struct ConnShared {
    outbox: Mutex<Outbox>,
    /// Woken on every push; the one reader (the socket task) checks the queue before waiting,
    /// and `notify_one` keeps a permit when nobody waits, so no push is missed.
    ready: Notify,
    kill: CancellationToken,
    user_id: String,
}

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outbound>,
    /// The socket task has ended: nobody will read what is queued.
    closed: bool,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// [`OUTBOUND_CAPACITY`] messages wait already: the device does not read fast enough.
    Full,
    /// The connection has ended (its shards have not heard of it yet).
    Closed,
}

/// Outbound messages a connection may have queued before it counts as too slow.
pub const OUTBOUND_CAPACITY: usize = 4096;

impl ConnHandle {
    /// A connection of `user_id` with nothing queued.
    pub fn new(user_id: String) -> Self {
        Self(Arc::new(ConnShared {
            outbox: Mutex::new(Outbox::default()),
            ready: Notify::new(),
            kill: CancellationToken::new(),
            user_id,
        }))
    }

    /// Queues `out` for the socket task, unless [`OUTBOUND_CAPACITY`] messages wait already
    /// or the connection has ended.
    pub fn send(&self, out: Outbound) -> Result<(), SendError> {
        {
            let mut o = self.0.outbox.lock().unwrap_or_else(|e| e.into_inner());
            if o.closed {
                return Err(SendError::Closed);
            }
            if o.queue.len() >= OUTBOUND_CAPACITY {
                return Err(SendError::Full);
            }
            o.queue.push_back(out);
        }
        self.0.ready.notify_one();
        Ok(())
    }

    /// The next queued message, waiting for one. Cancel-safe: a message leaves the queue only
    /// in the poll that returns it.
    pub async fn recv(&self) -> Outbound {
        loop {
            if let Some(out) = self.try_recv() {
                return out;
            }
            self.0.ready.notified().await;
        }
    }

    /// The next queued message, if one waits. Gives the queue's memory back once it is empty
    /// after a burst, so that a device that once fell behind does not keep the room it needed.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut o = self.0.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let out = o.queue.pop_front();
        if o.queue.is_empty() && o.queue.capacity() > 64 {
            o.queue = VecDeque::new();
        }
        out
    }

    /// Marks the connection ended, for the socket task as it stops: what is queued is dropped,
    /// and sends are refused from now on instead of piling up until every shard has handled
    /// the disconnect.
    pub fn close(&self) {
        let mut o = self.0.outbox.lock().unwrap_or_else(|e| e.into_inner());
        o.closed = true;
        o.queue = VecDeque::new();
    }

    /// Closes the connection (replaced, too slow, erased user).
    pub fn kill(&self) {
        self.0.kill.cancel();
    }

    /// Resolves once [`Self::kill`] was called.
    pub fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.kill.cancelled()
    }

    /// The connection's user.
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }
}

/// Inputs of a shard task.
pub(crate) enum ShardInput {
    Connect {
        conn: ConnId,
        peer: PeerInfo,
        handle: ConnHandle,
    },
    Disconnect {
        conn: ConnId,
    },
    Sync {
        conn: ConnId,
        doc: DocumentId,
        request: bool,
        data: Vec<u8>,
    },
    Ephemeral {
        conn: ConnId,
        doc: DocumentId,
        sender_id: String,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
    Loaded {
        task: sync_core::hub::TaskId,
        result: Result<Option<sync_core::hub::StoredDoc>, sync_core::hub::StorageFailure>,
    },
    Stored {
        task: sync_core::hub::TaskId,
        result: Result<(), sync_core::hub::StorageFailure>,
    },
    Remote {
        doc: DocumentId,
        changes: Vec<u8>,
    },
    Edit {
        doc: DocumentId,
        meta: DocMeta,
        create: Option<DocSpec>,
        edit: sync_core::hub::EditFn,
        /// The caller knows the document is not stored: no load (see
        /// [`SyncEngine::edit_known_absent`]).
        absent: bool,
        reply: oneshot::Sender<Result<EditValue, EditError>>,
    },
    Resync {
        scope: ResyncScope,
        epoch: u64,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
}

/// Sync configuration derived from the server's.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Shards (hub instances).
    pub shards: usize,
    /// Per-connection limits.
    pub session: SessionLimits,
    /// Largest frame.
    pub max_message_bytes: usize,
    /// Documents per connection.
    pub max_docs_per_connection: usize,
    /// Idle eviction (ms).
    pub idle_evict_ms: i64,
    /// Compact after this many change rows.
    pub compact_after: i64,
    /// Whether a document that goes idle after a write is checked for compaction. The import
    /// CLI turns it off: it evicts every document a second after its only write, and checking
    /// each one (reading its change back, loading and saving it) cost 12% of the import's CPU
    /// to learn that a one-write document is not worth compacting. A document that reaches
    /// `compact_after` rows is compacted either way.
    pub compact_idle: bool,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Group-commit writers on PostgreSQL (SQLite always has one). A server's devices send
    /// small changes that reach the other devices before their commit, so the commit is off
    /// the path P1 measures but its CPU cost is not: one writer gathers what arrives during a
    /// commit into the next one, and PostgreSQL's work (and the round trips) per change fall.
    /// The price: a slow commit delays every user's writes, not a share of them (compaction
    /// rebuilds a document before it takes the document's row, so it does not hold them up).
    /// At 10,000 devices and 2,000 changes/s, p50 1.07–1.24 ms against 1.27–1.56 with three
    /// over six pairs, with the same P2 ceiling (BENCHMARKS.md). The import CLI asks for
    /// three: its commits are large, and overlapping them with its own CPU work was 7% and
    /// 24% faster in two pairs (BENCHMARKS.md, P5). Each writer holds a connection while it
    /// commits, so the count stays well below the pool's size (at most 16 are started).
    pub postgres_writers: usize,
    /// How long a busy writer lets a small batch wait for more writes before it commits
    /// (`--commit-gather-us`; zero commits at once). See `writer::should_gather`.
    pub commit_gather: Duration,
}

impl SyncConfig {
    /// From the server configuration.
    pub fn from_config(config: &Config) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            shards: if config.sync_shards == 0 {
                cpus
            } else {
                config.sync_shards
            }
            .clamp(1, 64),
            session: SessionLimits {
                messages_per_sec: config.messages_per_sec.max(1),
                burst: config.messages_per_sec.max(1).saturating_mul(5),
            },
            max_message_bytes: config.max_message_bytes,
            max_docs_per_connection: config.max_docs_per_connection,
            idle_evict_ms: i64::try_from(config.idle_evict_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            compact_after: config.compact_after.max(2),
            compact_idle: true,
            ping_interval: Duration::from_secs(10),
            postgres_writers: 1,
            commit_gather: Duration::from_micros(config.commit_gather_us),
        }
    }
}

/// The sync engine of one server instance.
pub struct SyncEngine {
    shards: Vec<mpsc::UnboundedSender<ShardInput>>,
    store: Arc<dyn Store>,
    config: SyncConfig,
    server_peer_id: String,
    storage_id: String,
    instance_id: String,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<ConnId, ConnHandle>>,
    peers: Mutex<HashMap<(String, String), ConnId>>,
    /// Last sync activity per connection, flushed to the devices table periodically.
    activity: Mutex<HashMap<ConnId, i64>>,
    /// Handlers of instance-wide events the engine does not handle itself (`catalog`).
    hooks: Mutex<Vec<EventHook>>,
    cancel: CancellationToken,
}

/// A handler of instance-wide events from other instances.
pub type EventHook = Arc<dyn Fn(&str) + Send + Sync>;

impl SyncEngine {
    /// Starts shards, writers, the compactor, the fan-out listener (PostgreSQL) and the
    /// housekeeping tasks; all stop when `cancel` fires (after finishing writes in flight).
    pub async fn start(
        store: Arc<dyn Store>,
        feed: Option<crate::store::postgres::ChangeFeed>,
        config: SyncConfig,
        instance_id: String,
        address: String,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        // A stable storage id: automerge-repo clients key the sync state they keep for us by it.
        let storage_id = store
            .meta_get_or_insert("storage_id", &uuid::Uuid::new_v4().to_string())
            .await?;
        let server_peer_id = format!("learnsync-{storage_id}");
        let (compact_tx, compact_rx) = mpsc::unbounded_channel();
        let writers = match store.backend() {
            Backend::Postgres => config.postgres_writers.clamp(1, 16),
            Backend::Sqlite => 1,
        };
        let (write_tx, write_queues) =
            writer::Writers::new(writers, compact_tx.clone(), config.compact_idle);
        for queue in write_queues {
            tracker.spawn(writer::run(
                store.clone(),
                queue,
                compact_tx.clone(),
                config.compact_after,
                config.commit_gather,
            ));
        }
        tracker.spawn(writer::compactor(store.clone(), compact_rx));

        let mut shards = Vec::with_capacity(config.shards);
        let mut receivers = Vec::with_capacity(config.shards);
        for _ in 0..config.shards {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(tx);
            receivers.push(rx);
        }
        let engine = Arc::new(Self {
            shards,
            store: store.clone(),
            config: config.clone(),
            server_peer_id,
            storage_id,
            instance_id: instance_id.clone(),
            next_conn: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            activity: Mutex::new(HashMap::new()),
            hooks: Mutex::new(Vec::new()),
            cancel: cancel.clone(),
        });
        for (i, rx) in receivers.into_iter().enumerate() {
            let mut actor = [0u8; 16];
            rand::fill(&mut actor);
            let mut hub_config = HubConfig::new(actor);
            hub_config.idle_evict_ms = config.idle_evict_ms;
            hub_config.max_docs_per_conn = config.max_docs_per_connection;
            let shard = shard::Shard::new(
                i,
                hub_config,
                store.clone(),
                engine.shards[i].clone(),
                write_tx.clone(),
                rx,
                cancel.clone(),
            );
            tracker.spawn(shard.run());
        }
        drop(write_tx);
        drop(compact_tx);
        if let Some(feed) = feed {
            tracker.spawn(fanout::listen(engine.clone(), feed, cancel.clone()));
        }
        tracker.spawn(housekeeping(engine.clone(), address, cancel));
        Ok(engine)
    }

    /// Registers a handler for events broadcast by other instances.
    pub fn add_event_hook(&self, hook: EventHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    pub(crate) fn run_hooks(&self, event: &str) {
        let hooks: Vec<EventHook> = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for hook in hooks {
            hook(event);
        }
    }

    /// The server's automerge-repo peer id.
    pub fn server_peer_id(&self) -> &str {
        &self.server_peer_id
    }

    /// The server's stable storage id.
    pub fn storage_id(&self) -> &str {
        &self.storage_id
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn shard_index(&self, doc: &DocumentId) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    pub(crate) fn to_shard(&self, doc: &DocumentId, input: ShardInput) {
        let _ = self.shards[self.shard_index(doc)].send(input);
    }

    pub(crate) fn to_all_shards(&self, mut make: impl FnMut() -> ShardInput) {
        for s in &self.shards {
            let _ = s.send(make());
        }
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a joined connection; a previous connection of the same user with the same
    /// peer id is closed (a reconnecting device reuses its peer id).
    pub(crate) fn register(&self, conn: ConnId, peer_id: &str, peer: PeerInfo, handle: ConnHandle) {
        let previous = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((peer.user_id.clone(), peer_id.to_string()), conn);
        if let Some(old) = previous
            && old != conn
            && let Some(h) = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&old)
        {
            h.kill();
        }
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn, handle.clone());
        self.to_all_shards(|| ShardInput::Connect {
            conn,
            peer: peer.clone(),
            handle: handle.clone(),
        });
    }

    /// Forgets a connection everywhere.
    pub(crate) fn unregister(&self, conn: ConnId, user_id: &str, peer_id: Option<&str>) {
        self.to_all_shards(|| ShardInput::Disconnect { conn });
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
        if let Some(peer_id) = peer_id {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let key = (user_id.to_string(), peer_id.to_string());
            if peers.get(&key) == Some(&conn) {
                peers.remove(&key);
            }
        }
    }

    pub(crate) fn touch(&self, conn: ConnId) {
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn, now_ms());
    }

    /// Connections of a user on this instance (or all).
    pub fn connection_count(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Closes every connection of a user on this instance (erasure, disabling).
    pub fn disconnect_user(&self, user_id: &str, reason: &str) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if h.user_id() == user_id {
                let _ = h.send(Outbound::Close(Box::new(reason.to_string())));
                h.kill();
            }
        }
    }

    /// Tells every device whether the server can store changes right now.
    pub fn broadcast_status(&self, ok: bool, message: Option<String>) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let _ = h.send(Outbound::Status(Box::new(Health {
                ok,
                message: message.clone(),
            })));
        }
    }

    /// Forced sync on this instance: every matching connection resets its sync states.
    pub fn resync_local(&self, scope: ResyncScope, epoch: u64) {
        self.to_all_shards(|| ShardInput::Resync {
            scope: scope.clone(),
            epoch,
        });
    }

    /// Runs a server-side edit (a REST write) on one of `user`'s documents: stored, projected,
    /// and fanned out to the user's devices before this returns.
    pub async fn edit<T: Send + 'static>(
        &self,
        user: &UserRecord,
        spec: DocSpec,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, DocError> + Send + 'static,
    ) -> Result<T, EditError> {
        self.edit_with(user, spec, false, f).await
    }

    /// [`Self::edit`] of a document the caller knows was never stored, so the hub starts it
    /// from nothing instead of asking the database first: the importer's first edit of each
    /// document of an account it created in the same run (a round trip and a statement per
    /// document saved). A stored document edited this way would be missing its stored changes
    /// in memory until evicted.
    pub async fn edit_known_absent<T: Send + 'static>(
        &self,
        user: &UserRecord,
        spec: DocSpec,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, DocError> + Send + 'static,
    ) -> Result<T, EditError> {
        self.edit_with(user, spec, true, f).await
    }

    async fn edit_with<T: Send + 'static>(
        &self,
        user: &UserRecord,
        spec: DocSpec,
        absent: bool,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, DocError> + Send + 'static,
    ) -> Result<T, EditError> {
        let ns = UserNamespace::from_bytes(user.doc_seed);
        let doc = spec.document_id(&ns);
        let meta = DocMeta {
            owner: Some(user.user.id.clone()),
            kind: Some(spec.kind()),
            course_id: match &spec {
                DocSpec::Course { course_id } => Some(course_id.clone()),
                _ => None,
            },
        };
        let (reply, rx) = oneshot::channel();
        self.to_shard(
            &doc,
            ShardInput::Edit {
                doc,
                meta,
                create: Some(spec),
                edit: Box::new(move |d| f(d).map(|v| Box::new(v) as EditValue)),
                absent,
                reply,
            },
        );
        let value = rx.await.map_err(|_| {
            EditError::Storage(sync_core::hub::StorageFailure::Unavailable(
                "server shutting down".into(),
            ))
        })??;
        value.downcast::<T>().map(|b| *b).map_err(|_| {
            EditError::Doc(DocError::Automerge(
                "edit returned an unexpected type".into(),
            ))
        })
    }

    /// Counters of all shards.
    pub async fn stats(&self) -> HubStats {
        let mut total = HubStats::default();
        for s in &self.shards {
            let (reply, rx) = oneshot::channel();
            if s.send(ShardInput::Stats { reply }).is_ok()
                && let Ok(st) = rx.await
            {
                total.hot_docs += st.hot_docs;
                total.known_docs += st.known_docs;
                total.connections = total.connections.max(st.connections);
                total.stores_in_flight += st.stores_in_flight;
            }
        }
        total
    }

    /// Whether the engine is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Instance heartbeat, reaping of dead instances' devices, device activity flushes.
async fn housekeeping(engine: Arc<SyncEngine>, address: String, cancel: CancellationToken) {
    let started = now_ms();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let now = now_ms();
        if let Err(e) = engine
            .store
            .heartbeat_instance(&engine.instance_id, &address, started, now)
            .await
        {
            tracing::debug!(error = %e, "instance heartbeat failed");
            continue;
        }
        let _ = engine.store.reap_instances(now - 30_000).await;
        let seen: Vec<(String, i64)> = engine
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(c, t)| (socket::conn_key(&engine.instance_id, c), t))
            .collect();
        if let Err(e) = engine.store.touch_devices(&seen).await {
            tracing::debug!(error = %e, "device activity not recorded");
        }
        metrics::gauge!("learnsync_sync_connections").set(engine.connection_count() as f64);
    }
    if let Err(e) = engine.store.remove_instance(&engine.instance_id).await {
        tracing::debug!(error = %e, "instance not removed at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use super::{ConnHandle, OUTBOUND_CAPACITY, Outbound, SendError};

    fn close(reason: &str) -> Outbound {
        Outbound::Close(Box::new(reason.to_string()))
    }

    fn reason(out: Outbound) -> String {
        match out {
            Outbound::Close(r) => *r,
            other => panic!("expected a close, got {other:?}"),
        }
    }

    /// A queued message is two words, whatever its variant.
    #[test]
    fn an_outbound_slot_is_two_words() {
        assert_eq!(std::mem::size_of::<Outbound>(), 16);
    }

    /// Every shard and the engine hold a copy of each connection's handle.
    #[test]
    fn a_connection_handle_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<ConnHandle>(),
            std::mem::size_of::<usize>()
        );
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_full_queue_refuses_more() {
        let h = ConnHandle::new("u1".into());
        for i in 0..OUTBOUND_CAPACITY {
            h.send(close(&i.to_string())).unwrap();
        }
        assert_eq!(h.send(close("one too many")), Err(SendError::Full));
        for i in 0..OUTBOUND_CAPACITY {
            let got = tokio::time::timeout(Duration::from_secs(5), h.recv()).await;
            assert_eq!(reason(got.expect("a queued message")), i.to_string());
        }
        assert!(h.try_recv().is_none());
        // Emptied, the queue takes messages again.
        h.send(close("again")).unwrap();
        assert_eq!(reason(h.try_recv().unwrap()), "again");
        assert_eq!(h.user_id(), "u1");
    }

    #[tokio::test]
    async fn recv_waits_for_a_message_sent_from_another_task() {
        let h = ConnHandle::new("u1".into());
        let sender = h.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.send(close("late")).unwrap();
        });
        let got = tokio::time::timeout(Duration::from_secs(5), h.recv()).await;
        assert_eq!(reason(got.expect("recv woke up")), "late");
        task.await.unwrap();
    }

    /// The socket task polls `recv` inside `select!`, which drops the `recv` of every round
    /// that another branch wins, sometimes after a send already woke it: neither that message
    /// nor the wake-up of the next one may be lost.
    #[tokio::test]
    async fn a_woken_recv_dropped_by_select_loses_nothing() {
        let h = ConnHandle::new("u1".into());
        let mut cx = Context::from_waker(Waker::noop());
        for round in 0..100 {
            {
                // Waiting (registered with the `Notify`), then woken by a send, then dropped
                // without being polled again, as when another branch of `select!` wins.
                let mut first = pin!(h.recv());
                assert!(
                    first.as_mut().poll(&mut cx).is_pending(),
                    "round {round}: nothing queued yet"
                );
                h.send(close(&format!("{round}a"))).unwrap();
            }
            let got = tokio::time::timeout(Duration::from_secs(5), h.recv()).await;
            assert_eq!(
                reason(got.expect("the message is still queued")),
                format!("{round}a")
            );
            // The next message, sent while a fresh `recv` waits, wakes it.
            let sender = h.clone();
            let send = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                sender.send(close(&format!("{round}b"))).unwrap();
            });
            let got = tokio::time::timeout(Duration::from_secs(5), h.recv()).await;
            assert_eq!(reason(got.expect("recv woke up")), format!("{round}b"));
            send.await.unwrap();
        }
    }

    /// Once the socket task has stopped, shards' sends are refused and nothing piles up.
    #[test]
    fn a_closed_connection_refuses_and_drops_messages() {
        let h = ConnHandle::new("u1".into());
        h.send(close("queued before the end")).unwrap();
        h.close();
        assert!(h.try_recv().is_none());
        assert_eq!(h.send(close("too late")), Err(SendError::Closed));
        assert!(h.try_recv().is_none());
    }

    #[tokio::test]
    async fn kill_wakes_every_copy() {
        let h = ConnHandle::new("u1".into());
        let other = h.clone();
        other.kill();
        tokio::time::timeout(Duration::from_secs(5), h.killed())
            .await
            .expect("killed resolves");
    }

    /// A burst that filled the queue does not keep its room once it has been sent.
    #[test]
    fn an_emptied_queue_gives_its_room_back() {
        let h = ConnHandle::new("u1".into());
        for _ in 0..1000 {
            h.send(close("x")).unwrap();
        }
        while h.try_recv().is_some() {}
        let room = h.0.outbox.lock().unwrap().queue.capacity();
        assert!(room <= 64, "room kept: {room}");
    }
}
