//! Changes and events from other instances, over PostgreSQL `LISTEN`.
//!
//! A change stored by another instance arrives as an entry `doc\tseq\tbase64` of a notification
//! that carries its group commit's changes (`change_payloads`): the chunk itself, or empty when
//! it was too large for a notification (then it is read by sequence number). It goes to the
//! shard of its document, which applies it and syncs local peers. If the listening connection
//! drops, notifications may have been missed: devices still converge (they resync on
//! every message exchange), and live fan-out resumes when the listener reconnects.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sqlx::postgres::PgListener;
use sync_core::DocumentId;
use sync_core::hub::ResyncScope;
use tokio_util::sync::CancellationToken;

use super::{ShardInput, SyncEngine};
use crate::store::postgres::{CHANGES_CHANNEL, ChangeFeed, EVENTS_CHANNEL, change_entries};

pub(crate) async fn listen(engine: Arc<SyncEngine>, feed: ChangeFeed, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !cancel.is_cancelled() {
        match run(&engine, &feed, &cancel).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn run(
    engine: &Arc<SyncEngine>,
    feed: &ChangeFeed,
    cancel: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(&feed.pool).await?;
    listener
        .listen_all([CHANGES_CHANNEL, EVENTS_CHANNEL])
        .await?;
    tracing::info!("listening for changes from other instances");
    loop {
        let notification = tokio::select! {
            n = listener.recv() => n?,
            _ = cancel.cancelled() => return Ok(()),
        };
        let payload = notification.payload();
        let Some((origin, rest)) = payload.split_once('\t') else {
            continue;
        };
        if origin == feed.origin {
            continue;
        }
        if notification.channel() == CHANGES_CHANNEL {
            for (doc, seq, data) in change_entries(rest) {
                handle_change(engine, doc, seq, data).await;
            }
        } else {
            handle_event(engine, rest);
        }
    }
}

async fn handle_change(engine: &Arc<SyncEngine>, doc: &str, seq: &str, data: &str) {
    let Ok(doc_id) = DocumentId::parse(doc) else {
        return;
    };
    let changes = if data.is_empty() {
        let Ok(seq) = seq.parse::<i64>() else {
            return;
        };
        match engine.store().document_change(seq).await {
            Ok(Some((_, bytes))) => bytes,
            // Compacted already: the next sync with this document's peers loads it fresh.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a change announced by another instance");
                return;
            }
        }
    } else {
        match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    };
    metrics::counter!("learnsync_remote_changes_total").increment(1);
    engine.to_shard(
        &doc_id,
        ShardInput::Remote {
            doc: doc_id,
            changes,
        },
    );
}

/// Events: `resync\tall\t<epoch>`, `resync\tuser\t<id>\t<epoch>`, `disconnect\t<user>`.
fn handle_event(engine: &Arc<SyncEngine>, rest: &str) {
    let parts: Vec<&str> = rest.split('\t').collect();
    match parts.as_slice() {
        ["resync", "all", epoch] => {
            engine.resync_local(ResyncScope::All, epoch.parse().unwrap_or(0))
        }
        ["resync", "user", user, epoch] => engine.resync_local(
            ResyncScope::User((*user).to_string()),
            epoch.parse().unwrap_or(0),
        ),
        ["disconnect", user] => engine.disconnect_user(user, "account removed"),
        _ => engine.run_hooks(rest),
    }
}
