//! Group commit: writes from all shards are batched into one transaction, so that the database
//! cost of a commit is shared by every change that waited for it; compaction runs beside it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::hub::StorageFailure;
use tokio::sync::mpsc;

use super::ShardInput;
use crate::model::now_ms;
use crate::store::{Backend, DocWrite, Store, WriteOutcome};

/// Most writes in one transaction, per backend. PostgreSQL has cheap commits: shorter
/// transactions keep a change's wait short. SQLite has one writer, every commit is an fsync,
/// and a commit's cost is mostly the index pages it dirties (document ids are random), which a
/// larger batch shares among more writes: at 256 the legacy import (which keeps the writer
/// always busy) committed full batches back to back.
fn max_batch(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 256,
        Backend::Sqlite => 1024,
    }
}

/// A write waiting for the next commit.
pub(crate) struct WriteRequest {
    pub(crate) task: sync_core::hub::TaskId,
    pub(crate) reply: mpsc::UnboundedSender<ShardInput>,
    pub(crate) write: DocWrite,
}

/// The writers, each with its own queue (one on SQLite and for a server on PostgreSQL, three
/// for the import CLI: [`super::SyncConfig::postgres_writers`]). All writes of one user go to
/// the same writer, so within one process two concurrent transactions never touch the same
/// user's rows (documents, `enrollments`, `user_preferences`): group commits cannot deadlock
/// on each other, and one user's writes are stored in the order the hub issued them.
///
/// Beside them, the compactor's queue: documents worth folding into a snapshot.
#[derive(Clone)]
pub(crate) struct Writers {
    queues: Arc<[mpsc::UnboundedSender<WriteRequest>]>,
    compact: mpsc::UnboundedSender<String>,
    /// Whether documents that go idle are checked for compaction ([`super::SyncConfig`]).
    compact_idle: bool,
}

impl Writers {
    /// `count` writers' queues and their receiving ends (one per writer task).
    pub(crate) fn new(
        count: usize,
        compact: mpsc::UnboundedSender<String>,
        compact_idle: bool,
    ) -> (Self, Vec<mpsc::UnboundedReceiver<WriteRequest>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        (
            Self {
                queues: senders.into(),
                compact,
                compact_idle,
            },
            receivers,
        )
    }

    /// Asks the compactor to fold a document's change rows (a no-op if it has none).
    /// A document went idle after a write.
    pub(crate) fn compact_idle(&self, doc_id: String) {
        if self.compact_idle {
            let _ = self.compact.send(doc_id);
        }
    }

    /// Queues a write on its owner's writer; gives it back if the writers have stopped.
    #[allow(clippy::result_large_err)] // handed straight back to the caller, never propagated
    pub(crate) fn send(
        &self,
        request: WriteRequest,
    ) -> Result<(), mpsc::error::SendError<WriteRequest>> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&request.write.owner_id, &mut hasher);
        let index = (std::hash::Hasher::finish(&hasher) % self.queues.len() as u64) as usize;
        self.queues[index].send(request)
    }
}

/// A batch smaller than this, taken while the writer is busy, waits for the gather delay.
/// Larger batches already share their commit widely (P2's load fills them without waiting).
const GATHER_BELOW: usize = 16;

/// Whether a writer that took `batch` writes, `since_commit` after its last commit ended,
/// waits `gather` for more before committing. It waits only when the batch is small and was
/// queued while the previous commit ran (or within `gather` of its end): a lone write, to a
/// writer that had nothing to do, is committed at once, since waiting would not bring company.
///
/// Under a steady trickle (10,000 devices sending 2,000 changes/s) the writer committed as
/// soon as anything was queued: 4 changes per commit, and PostgreSQL's cost per commit
/// (round trips, planning, the WAL flush) made it 37–41% of a core. The changes reach the
/// other devices before their commit, so waiting delays only their authors'
/// acknowledgements, by about the delay; with 1 ms, PostgreSQL took 27–32% of a core and the
/// machine was 10 points less busy (BENCHMARKS.md, "commits gathered").
fn should_gather(batch: usize, since_commit: Duration, gather: Duration) -> bool {
    !gather.is_zero() && batch < GATHER_BELOW && since_commit < gather
}

/// Moves whatever is queued into `batch`, up to `max`.
fn take_queued(
    rx: &mut mpsc::UnboundedReceiver<WriteRequest>,
    batch: &mut Vec<WriteRequest>,
    max: usize,
) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
}

/// One writer: takes every waiting write, commits them together, reports each result. While
/// it is busy, a small batch first waits `gather` for company ([`should_gather`]).
pub(crate) async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
    compact: mpsc::UnboundedSender<String>,
    compact_after: i64,
    gather: Duration,
) {
    let max_batch = max_batch(store.backend());
    let mut last_commit: Option<Instant> = None;
    loop {
        let batch = {
            let Some(first) = rx.recv().await else {
                break;
            };
            let since_commit = last_commit.map_or(Duration::MAX, |at| at.elapsed());
            let mut batch = vec![first];
            take_queued(&mut rx, &mut batch, max_batch);
            if should_gather(batch.len(), since_commit, gather) {
                tokio::time::sleep(gather).await;
                take_queued(&mut rx, &mut batch, max_batch);
            }
            batch
        };
        commit(&store, batch, &compact, compact_after).await;
        last_commit = Some(Instant::now());
    }
}

async fn commit(
    store: &Arc<dyn Store>,
    batch: Vec<WriteRequest>,
    compact: &mpsc::UnboundedSender<String>,
    compact_after: i64,
) {
    let started = Instant::now();
    let writes: Vec<DocWrite> = batch.iter().map(|r| r.write.clone()).collect();
    match store.store_writes(&writes, now_ms()).await {
        Ok(outcomes) => {
            metrics::histogram!("learnsync_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("learnsync_store_batch_size").record(batch.len() as f64);
            metrics::counter!("learnsync_changes_stored_total").increment(batch.len() as u64);
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                let result = match outcome {
                    WriteOutcome::Stored {
                        pending_changes, ..
                    } => {
                        if pending_changes >= compact_after {
                            let _ = compact.send(request.write.doc_id.clone());
                        }
                        Ok(())
                    }
                    WriteOutcome::Rejected(why) => Err(StorageFailure::Rejected(why)),
                };
                let _ = request.reply.send(ShardInput::Stored {
                    task: request.task,
                    result,
                });
            }
        }
        Err(e) if e.is_unavailable() || batch.len() == 1 => {
            if !e.is_unavailable() {
                tracing::error!(error = %e, doc = %batch[0].write.doc_id, "document write failed");
            }
            metrics::counter!("learnsync_store_failures_total").increment(1);
            for request in batch {
                let _ = request.reply.send(ShardInput::Stored {
                    task: request.task,
                    result: Err(StorageFailure::Unavailable(e.to_string())),
                });
            }
        }
        Err(e) => {
            // Not an outage: one write of the batch is bad. Retry each on its own so the others
            // are not held hostage.
            tracing::warn!(error = %e, "batch failed; retrying writes one by one");
            for request in batch {
                Box::pin(commit(store, vec![request], compact, compact_after)).await;
            }
        }
    }
}

/// Folds change rows into snapshots, one document at a time, off the hot path.
pub(crate) async fn compactor(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut waiting: HashSet<String> = HashSet::new();
    loop {
        let Some(doc) = rx.recv().await else {
            break;
        };
        waiting.insert(doc);
        while let Ok(more) = rx.try_recv() {
            waiting.insert(more);
        }
        let batch: Vec<String> = std::mem::take(&mut waiting).into_iter().collect();
        let worth = match store.documents_worth_compacting(&batch).await {
            Ok(worth) => worth,
            Err(e) => {
                tracing::debug!(error = %e, "compaction candidates not checked; compacting all");
                batch
            }
        };
        for doc in worth {
            if let Err(e) = store.compact_document(&doc).await {
                tracing::warn!(error = %e, doc, "compaction failed (retried on a later write)");
            } else {
                metrics::counter!("learnsync_compactions_total").increment(1);
            }
            // Leave room for the writers.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{GATHER_BELOW, should_gather};

    #[test]
    fn only_a_small_batch_taken_by_a_busy_writer_waits_for_company() {
        let gather = Duration::from_millis(1);
        let busy = Duration::from_micros(300);
        assert!(should_gather(1, busy, gather));
        assert!(should_gather(GATHER_BELOW - 1, busy, gather));
        // Already large: it shares its commit without waiting.
        assert!(!should_gather(GATHER_BELOW, busy, gather));
        // A write that finds the writer idle (or its first write ever) commits at once.
        assert!(!should_gather(1, gather, gather));
        assert!(!should_gather(1, Duration::from_millis(3), gather));
        assert!(!should_gather(1, Duration::MAX, gather));
        // Turned off.
        assert!(!should_gather(1, busy, Duration::ZERO));
    }
}
