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
        write_batch(store.as_ref(), batch).await;
    }
}

/// Writes a batch in one transaction and answers each dump. If that fails and the batch holds
/// several dumps, each is tried again alone: a row the database refuses (its reporter deleted
/// meanwhile, say) fails its own dump, not the others.
async fn write_batch(store: &dyn Store, mut batch: Vec<Request>) {
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
            let (mut reports_new, mut logs_new) = (reports_new.into_iter(), logs_new.into_iter());
            for (request, (n_reports, n_logs)) in batch.into_iter().zip(sizes) {
                let r = reports_new.by_ref().take(n_reports).collect();
                let l = logs_new.by_ref().take(n_logs).collect();
                let _ = request.reply.send(Ok((r, l)));
            }
        }
        Err(e) if batch.len() == 1 => {
            tracing::warn!(error = %e, "legacy reports and logs of a dump not stored");
            if let Some(request) = batch.pop() {
                let _ = request.reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, dumps = batch.len(), "legacy reports and logs not stored together; trying each dump alone");
            let (mut at_report, mut at_log) = (0, 0);
            for (request, (n_reports, n_logs)) in batch.into_iter().zip(sizes) {
                let mine = (
                    &reports[at_report..at_report + n_reports],
                    &logs[at_log..at_log + n_logs],
                );
                at_report += n_reports;
                at_log += n_logs;
                let result = store.insert_legacy_rows(mine.0, mine.1).await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "legacy reports and logs of a dump not stored");
                }
                let _ = request.reply.send(result);
            }
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(
        "the legacy row writer stopped",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogLevel, ReportStatus};

    fn report(id: &str, legacy: &str, reporter: Option<&str>) -> NewReport {
        NewReport {
            id: id.into(),
            course_id: "c1".into(),
            reporter_id: reporter.map(str::to_string),
            reason: "spam".into(),
            details: None,
            status: ReportStatus::Pending,
            note: None,
            resolved_by: None,
            resolved_at: None,
            legacy_id: Some(legacy.into()),
            extra: serde_json::json!({}),
            created_at: 1,
        }
    }

    fn log(key: &str) -> NewLog {
        NewLog {
            level: LogLevel::Error,
            source: "legacy-import".into(),
            message: key.into(),
            context: None,
            user_id: None,
            request_id: None,
            legacy_key: Some(key.into()),
            created_at: 1,
        }
    }

    /// Dumps waiting together share a transaction; a row the database refuses fails only its
    /// own dump, whose other rows are not stored either.
    #[tokio::test]
    async fn a_refused_row_fails_only_its_own_dump() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("rows.db").display());
        let store = crate::store::connect(&url, 2, "test")
            .await
            .unwrap()
            .store();
        store.migrate().await.unwrap();
        let writer = LegacyRowWriter::start(store.clone());
        // On this single-threaded runtime the writer task runs only once both requests are
        // queued, so they land in one batch.
        let (good, bad, again) = tokio::join!(
            writer.write(vec![report("a", "mq-1", None)], vec![log("k1")]),
            writer.write(vec![report("b", "mq-2", Some("nobody"))], vec![log("k2")]),
            writer.write(vec![report("c", "mq-1", None)], vec![log("k1"), log("k3")]),
        );
        assert_eq!(good.unwrap(), (vec![true], vec![true]));
        assert!(bad.is_err(), "its reporter does not exist");
        assert_eq!(again.unwrap(), (vec![false], vec![false, true]));
        let (reports, logs) = store
            .legacy_rows_present(
                &["mq-1".into(), "mq-2".into()],
                &["k1".into(), "k2".into(), "k3".into()],
            )
            .await
            .unwrap();
        assert_eq!(reports, ["mq-1"]);
        let mut logs = logs;
        logs.sort();
        assert_eq!(
            logs,
            ["k1", "k3"],
            "the refused dump's log entry is not stored"
        );
    }
}
