//! The legacy report and log rows of the dumps in flight, written together.
//!
//! Each dump has a few of them. Written dump by dump, every dump paid a transaction of its own
//! (on SQLite, whose commits are `synchronous=FULL`, an fsync each: the larger part of a bulk
//! import's time there). Here a dump hands its rows to one writer task and waits for the answer;
//! the writer stores everything waiting when its previous transaction finishes, in one
//! transaction: the group commit the document writers already do, for these rows.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{NewLog, NewReport, Store, StoreError};

/// Rows per transaction at most: one transaction stays short even when many dumps wait.
const MAX_ROWS: usize = 4096;

/// Whether each row was inserted, in the order given: reports, then log entries.
pub(super) type Inserted = (Vec<bool>, Vec<bool>);

struct Request {
    reports: Vec<NewReport>,
    logs: Vec<NewLog>,
    reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// The handle the dumps of one run share. The writer task ends when the last handle is gone.
pub(super) struct LegacyRowWriter {
    tx: mpsc::UnboundedSender<Request>,
}

impl LegacyRowWriter {
    /// Starts the writer task (on the current tokio runtime).
    pub(super) fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, rx));
        Self { tx }
    }

    /// Stores a dump's rows (with those of the other dumps waiting) and says which were new.
    pub(super) async fn write(
        &self,
        reports: Vec<NewReport>,
        logs: Vec<NewLog>,
    ) -> Result<Inserted, StoreError> {
        if reports.is_empty() && logs.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                reports,
                logs,
                reply,
            })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut rows = batch[0].reports.len() + batch[0].logs.len();
        while rows < MAX_ROWS {
            match rx.try_recv() {
                Ok(next) => {
                    rows += next.reports.len() + next.logs.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<(usize, usize)> = batch
            .iter()
            .map(|r| (r.reports.len(), r.logs.len()))
            .collect();
        let reports: Vec<NewReport> = batch
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.reports))
            .collect();
        let logs: Vec<NewLog> = batch
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.logs))
            .collect();
        match store.insert_legacy_rows(&reports, &logs).await {
            Ok((reports_new, logs_new)) => {
                // Each dump gets its own part, in the order the rows were queued.
                let (mut reports_new, mut logs_new) =
                    (reports_new.into_iter(), logs_new.into_iter());
                for (request, (n_reports, n_logs)) in batch.into_iter().zip(sizes) {
                    let r = reports_new.by_ref().take(n_reports).collect();
                    let l = logs_new.by_ref().take(n_logs).collect();
                    let _ = request.reply.send(Ok((r, l)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, dumps = batch.len(), "legacy reports and logs not stored");
                for request in batch {
                    let _ = request.reply.send(Err(shared_failure(&e)));
                }
            }
        }
    }
}

/// The failure of a transaction, for each dump that had rows in it. A database failure stays
/// one (the dump reports "storage failed; run the import again"), with the message of the
/// original, which is logged once above.
fn shared_failure(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        StoreError::Database(_) | StoreError::Migrate(_) => {
            StoreError::Database(sqlx::Error::Io(std::io::Error::other(e.to_string())))
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(
        "the legacy row writer stopped",
    )))
}
