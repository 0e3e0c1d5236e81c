//! One shard: a task owning a `sync_core::hub::Hub` for the documents that hash to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sync_core::DocumentId;
use sync_core::docs::DocKind;
use sync_core::hub::{
    ConnId, DocMeta, EditError, EditToken, EditValue, Hub, HubConfig, Output, OwnerOrAdmin,
    StorageFailure, StoredDoc, SyncInput,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::writer::{WriteRequest, Writers};
use super::{ConnHandle, Outbound, SendError, ShardInput};
use crate::model::now_ms;
use crate::store::{DocWrite, Store, StoredDocument};

/// Loads allowed at once per shard (a reconnect storm must not exhaust the pool).
const MAX_CONCURRENT_LOADS: usize = 16;

/// Most documents loaded by one statement: a pass's loads go together (one round trip
/// instead of one per document), in batches small enough that one slow document does not
/// hold many others back.
const LOAD_BATCH: usize = 64;

/// Most inputs taken from the inbox before the outputs they caused are carried out.
const MAX_INPUTS_PER_PASS: usize = 1024;

pub(crate) struct Shard {
    index: usize,
    hub: Hub,
    store: Arc<dyn Store>,
    inbox_tx: mpsc::UnboundedSender<ShardInput>,
    inbox: mpsc::UnboundedReceiver<ShardInput>,
    writer: Writers,
    conns: HashMap<ConnId, ConnHandle>,
    edits: HashMap<EditToken, oneshot::Sender<Result<EditValue, EditError>>>,
    next_edit: u64,
    loads: Arc<Semaphore>,
    denials: HashMap<ConnId, u32>,
    cancel: CancellationToken,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        config: HubConfig,
        store: Arc<dyn Store>,
        inbox_tx: mpsc::UnboundedSender<ShardInput>,
        writer: Writers,
        inbox: mpsc::UnboundedReceiver<ShardInput>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            index,
            hub: Hub::new(config, OwnerOrAdmin),
            store,
            inbox_tx,
            inbox,
            writer,
            conns: HashMap::new(),
            edits: HashMap::new(),
            next_edit: 1,
            loads: Arc::new(Semaphore::new(MAX_CONCURRENT_LOADS)),
            denials: HashMap::new(),
            cancel,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                input = self.inbox.recv() => {
                    let Some(input) = input else { break };
                    // Take what else is waiting before acting on outputs: one pass of I/O
                    // serves many inputs under load, and the sync messages among them reach
                    // the hub together (their changes are applied per document in one call).
                    let mut syncs = Vec::new();
                    self.take(input, &mut syncs);
                    for _ in 0..MAX_INPUTS_PER_PASS {
                        match self.inbox.try_recv() {
                            Ok(more) => self.take(more, &mut syncs),
                            Err(_) => break,
                        }
                    }
                    self.handle_syncs(&mut syncs);
                }
                _ = tick.tick() => {
                    self.hub.handle_tick(now_ms());
                    if self.cancel.is_cancelled() {
                        let since = *stopping_since.get_or_insert_with(tokio::time::Instant::now);
                        // Shut down once every write in flight is stored (or after 10 s).
                        if self.hub.stats().stores_in_flight == 0 || since.elapsed() > Duration::from_secs(10) {
                            break;
                        }
                    }
                }
            }
            self.drain();
        }
        tracing::debug!(shard = self.index, "shard stopped");
    }

    /// Collects a sync message into the pass's batch; anything else is handled at once, after
    /// the messages before it (the order of a connection's inputs is kept).
    fn take(&mut self, input: ShardInput, syncs: &mut Vec<SyncInput>) {
        match input {
            ShardInput::Sync {
                conn,
                doc,
                request,
                data,
            } => {
                metrics::counter!("learnsync_sync_messages_received_total").increment(1);
                syncs.push(SyncInput {
                    conn,
                    doc,
                    request,
                    data,
                });
            }
            other => {
                self.handle_syncs(syncs);
                self.handle(other);
            }
        }
    }

    fn handle_syncs(&mut self, syncs: &mut Vec<SyncInput>) {
        if !syncs.is_empty() {
            self.hub.handle_sync_batch(std::mem::take(syncs), now_ms());
        }
    }

    fn handle(&mut self, input: ShardInput) {
        let now = now_ms();
        match input {
            ShardInput::Connect { conn, peer, handle } => {
                self.conns.insert(conn, handle);
                self.hub.handle_connect(conn, peer);
            }
            ShardInput::Disconnect { conn } => {
                self.conns.remove(&conn);
                self.denials.remove(&conn);
                self.hub.handle_disconnect(conn);
            }
            ShardInput::Sync {
                conn,
                doc,
                request,
                data,
            } => {
                metrics::counter!("learnsync_sync_messages_received_total").increment(1);
                self.hub.handle_sync(conn, doc, request, data, now);
            }
            ShardInput::Ephemeral {
                conn,
                doc,
                sender_id,
                session_id,
                count,
                data,
            } => {
                self.hub
                    .handle_ephemeral(conn, doc, sender_id, session_id, count, data);
            }
            ShardInput::Loaded { task, result } => self.hub.handle_loaded(task, result, now),
            ShardInput::Stored { task, result } => self.hub.handle_stored(task, result, now),
            ShardInput::Remote { doc, changes } => {
                self.hub.handle_remote_changes(doc, changes, now)
            }
            ShardInput::Edit {
                doc,
                meta,
                create,
                edit,
                absent,
                reply,
            } => {
                let token = EditToken(self.next_edit);
                self.next_edit += 1;
                self.edits.insert(token, reply);
                if absent {
                    self.hub
                        .handle_edit_of_absent(doc, meta, create, edit, token, now);
                } else {
                    self.hub.handle_edit(doc, meta, create, edit, token, now);
                }
            }
            ShardInput::Resync { scope, epoch } => self.hub.handle_resync(scope, epoch),
            ShardInput::Stats { reply } => {
                let _ = reply.send(self.hub.stats());
            }
        }
    }

    fn drain(&mut self) {
        let mut loads: Vec<(sync_core::hub::TaskId, DocumentId)> = Vec::new();
        self.drain_into(&mut loads);
        self.load(loads);
    }

    fn drain_into(&mut self, loads: &mut Vec<(sync_core::hub::TaskId, DocumentId)>) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Send { conn, message } => {
                    if let Some(h) = self.conns.get(&conn) {
                        metrics::counter!("learnsync_sync_messages_sent_total").increment(1);
                        if h.send(Outbound::Message(Box::new(message))) == Err(SendError::Full) {
                            // The device does not read fast enough: close it rather
                            // than buffer without bound or drop a message of an ordered protocol.
                            tracing::warn!(conn = conn.0, "connection too slow, closing");
                            h.kill();
                        }
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(h) = self.conns.get(&conn) {
                        let _ = h.send(Outbound::Close(Box::new(reason.to_string())));
                        h.kill();
                    }
                }
                Output::Load { task, doc } => loads.push((task, doc)),
                Output::Store { task, write } => {
                    let Some(owner) = write.meta.owner.clone() else {
                        let _ = self.inbox_tx.send(ShardInput::Stored {
                            task,
                            result: Err(StorageFailure::Rejected("no owner".into())),
                        });
                        continue;
                    };
                    let request = WriteRequest {
                        task,
                        reply: self.inbox_tx.clone(),
                        write: DocWrite {
                            doc_id: write.doc.to_string(),
                            owner_id: owner,
                            kind: write
                                .meta
                                .kind
                                .map(DocKind::as_str)
                                .unwrap_or("other")
                                .to_string(),
                            course_id: write.meta.course_id.clone(),
                            changes: write.changes,
                            projection: write.projection,
                            likely_new: write.likely_new,
                        },
                    };
                    if let Err(mpsc::error::SendError(request)) = self.writer.send(request) {
                        let _ = self.inbox_tx.send(ShardInput::Stored {
                            task: request.task,
                            result: Err(StorageFailure::Unavailable("server shutting down".into())),
                        });
                    }
                }
                Output::SaveSyncStates(states) => {
                    let store = self.store.clone();
                    let rows: Vec<_> = states
                        .into_iter()
                        .map(|s| crate::store::SyncStateRow {
                            doc_id: s.doc.to_string(),
                            storage_id: s.storage_id,
                            state: s.state,
                        })
                        .collect();
                    tokio::spawn(async move {
                        if let Err(e) = store.save_sync_states(&rows, now_ms()).await {
                            tracing::debug!(error = %e, "sync states not saved (only costs a longer sync)");
                        }
                    });
                }
                Output::DeleteSyncStates { storage_ids } => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.delete_sync_states(storage_ids.as_deref()).await {
                            tracing::warn!(error = %e, "sync states not deleted after forced sync");
                        }
                    });
                }
                Output::Compact { doc } => self.writer.compact_idle(doc.to_string()),
                Output::EditDone { token, result } => {
                    if let Some(reply) = self.edits.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::Denied { conn, doc } => {
                    metrics::counter!("learnsync_sync_access_denied_total").increment(1);
                    let n = self.denials.entry(conn).or_insert(0);
                    *n += 1;
                    if *n <= 5 {
                        let user = self.conns.get(&conn).map(|h| h.user_id().to_string());
                        tracing::warn!(conn = conn.0, doc = %doc, user = ?user, "document access denied");
                        let store = self.store.clone();
                        tokio::spawn(async move {
                            let _ = store
                                .insert_logs(&[crate::store::NewLog {
                                    level: crate::model::LogLevel::Warn,
                                    source: "sync".into(),
                                    message: "document access denied".into(),
                                    context: Some(
                                        serde_json::json!({ "document_id": doc.to_string() }),
                                    ),
                                    user_id: user,
                                    request_id: None,
                                    legacy_key: None,
                                    created_at: now_ms(),
                                }])
                                .await;
                        });
                    }
                }
            }
        }
    }

    /// Loads the documents a pass asked for, [`LOAD_BATCH`] per statement.
    fn load(&self, loads: Vec<(sync_core::hub::TaskId, DocumentId)>) {
        for batch in loads.chunks(LOAD_BATCH) {
            let batch = batch.to_vec();
            let store = self.store.clone();
            let reply = self.inbox_tx.clone();
            let permits = self.loads.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let ids: Vec<String> = batch.iter().map(|(_, doc)| doc.to_string()).collect();
                match store.load_documents(&ids).await {
                    Ok(found) => {
                        for ((task, _), found) in batch.into_iter().zip(found) {
                            let result = Ok(found.map(to_stored_doc));
                            let _ = reply.send(ShardInput::Loaded { task, result });
                        }
                    }
                    Err(e) => {
                        if !e.is_unavailable() {
                            tracing::error!(error = %e, docs = ids.len(), first = %ids[0], "document load failed");
                        }
                        for (task, _) in batch {
                            let result = Err(StorageFailure::Unavailable(e.to_string()));
                            let _ = reply.send(ShardInput::Loaded { task, result });
                        }
                    }
                }
            });
        }
    }
}

fn to_stored_doc(d: StoredDocument) -> StoredDoc {
    StoredDoc {
        meta: DocMeta {
            owner: Some(d.owner_id),
            kind: DocKind::parse(&d.kind),
            course_id: d.course_id,
        },
        chunks: d.chunks,
        sync_states: d.sync_states,
    }
}
