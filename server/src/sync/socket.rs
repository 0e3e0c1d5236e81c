//! One sync connection: frames in, hub inputs out; hub messages in, frames out.
//!
//! Generic over any `Stream` + `Sink` of [`Frame`]s, so the same code runs on axum's
//! WebSocket and on in-memory channels in tests. The connection is authenticated before this
//! runs; the automerge-repo handshake and per-message checks are `sync_core::session`'s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sync_core::UserNamespace;
use sync_core::hub::{ConnId, PeerInfo};
use sync_core::session::{PeerSession, SessionAction};

use super::{ConnHandle, Outbound, ShardInput, SyncEngine};
use crate::model::{Device, Timestamp, now_ms};

/// A WebSocket frame, independent of the WebSocket library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Binary data: one protocol message.
    Binary(Vec<u8>),
    /// Text: not part of the protocol.
    Text(String),
    /// Ping.
    Ping(Vec<u8>),
    /// Pong.
    Pong(Vec<u8>),
    /// Close with a code and reason.
    Close(u16, String),
}

/// Who is connecting, as authentication established it: only what the connection uses, since
/// it keeps this for its whole life (the account's email, name and password hash stay out of
/// every idle device's memory).
#[derive(Debug, Clone)]
pub struct PeerAuth {
    /// The user's id.
    pub user_id: String,
    /// Whether the user is an admin (admins may open any document).
    pub is_admin: bool,
    /// The user's secret document namespace.
    pub doc_seed: [u8; 16],
    /// Client address.
    pub remote_addr: String,
    /// User agent.
    pub user_agent: String,
    /// The user's effective forced-sync epoch (global + user).
    pub epoch: u64,
    /// Whether the server is degraded right now (told to the device after the handshake).
    pub degraded: bool,
}

/// The key of a connection in the devices table.
pub fn conn_key(instance: &str, conn: ConnId) -> String {
    format!("{instance}:{}", conn.0)
}

/// Runs one connection to the end.
///
/// `auth` comes boxed: the future of a connection lives as long as the connection, and every
/// layer between the upgrade and here keeps its own copy of what it moves inward.
pub async fn serve<Si, St, E>(
    engine: Arc<SyncEngine>,
    mut sink: Si,
    mut stream: St,
    auth: Box<PeerAuth>,
) where
    Si: Sink<Frame> + Unpin,
    St: Stream<Item = Result<Frame, E>> + Unpin,
    E: std::fmt::Display,
{
    let conn = engine.next_conn_id();
    let handle = ConnHandle::new(auth.user_id.clone());
    let mut session = PeerSession::new(
        engine.server_peer_id().to_string(),
        engine.storage_id().to_string(),
        engine.config().session.clone(),
        now_ms(),
    );
    let max_bytes = engine.config().max_message_bytes;
    let mut ping = tokio::time::interval(engine.config().ping_interval);
    ping.tick().await;
    let mut alive = true;
    let mut joined: Option<String> = None;
    let shutdown = engine.cancel.clone();
    metrics::counter!("learnsync_sync_connections_total").increment(1);

    let close_reason: Option<String> = loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => {
                        tracing::debug!(conn = conn.0, error = %e, "socket error");
                        break None;
                    }
                    None => break None,
                };
                alive = true;
                match frame {
                    Frame::Binary(bytes) => {
                        if bytes.len() > max_bytes {
                            let frame = session.error_frame(&format!("message larger than {max_bytes} bytes"));
                            let _ = sink.send(Frame::Binary(frame)).await;
                            break Some("message too large".into());
                        }
                        let mut stop = None;
                        for action in session.handle_frame(&bytes, now_ms()) {
                            match action {
                                SessionAction::Send(out) => {
                                    if sink.send(Frame::Binary(out)).await.is_err() {
                                        stop = Some(None);
                                        break;
                                    }
                                }
                                SessionAction::Joined { peer_id, storage_id } => {
                                    if joined.is_some() {
                                        continue;
                                    }
                                    let peer = PeerInfo {
                                        user_id: auth.user_id.clone(),
                                        is_admin: auth.is_admin,
                                        namespace: Some(UserNamespace::from_bytes(auth.doc_seed)),
                                        storage_id,
                                    };
                                    engine.register(conn, &peer_id, peer, handle.clone());
                                    record_device(&engine, conn, &auth, &peer_id);
                                    joined = Some(peer_id);
                                    let _ = sink.send(Frame::Binary(session.epoch_frame(auth.epoch))).await;
                                    if auth.degraded {
                                        let msg = session.status_frame(false, Some("the server cannot store changes right now; they stay on this device"));
                                        let _ = sink.send(Frame::Binary(msg)).await;
                                    }
                                }
                                SessionAction::Sync { doc, request, data } => {
                                    engine.touch(conn);
                                    engine.to_shard(&doc, ShardInput::Sync { conn, doc, request, data });
                                }
                                SessionAction::Ephemeral { doc, sender_id, session_id, count, data } => {
                                    engine.to_shard(&doc, ShardInput::Ephemeral { conn, doc, sender_id, session_id, count, data });
                                }
                                SessionAction::Close { frame, reason } => {
                                    let _ = sink.send(Frame::Binary(frame)).await;
                                    stop = Some(Some(reason));
                                    break;
                                }
                                SessionAction::Ignored(why) => {
                                    tracing::trace!(conn = conn.0, why, "frame ignored");
                                }
                            }
                        }
                        if let Some(reason) = stop {
                            break reason;
                        }
                    }
                    Frame::Text(_) => {
                        let frame = session.error_frame("text frames are not part of the protocol; send binary CBOR");
                        let _ = sink.send(Frame::Binary(frame)).await;
                        break Some("text frame".into());
                    }
                    Frame::Ping(data) => {
                        let _ = sink.send(Frame::Pong(data)).await;
                    }
                    Frame::Pong(_) => {}
                    Frame::Close(..) => break None,
                }
            }
            out = handle.recv() => {
                let frame = match out {
                    Outbound::Message(m) => session.encode(&m),
                    Outbound::Close(reason) => {
                        let _ = sink.send(Frame::Binary(session.error_frame(&reason))).await;
                        break Some(*reason);
                    }
                    Outbound::Status(health) => session.status_frame(health.ok, health.message.as_deref()),
                };
                if sink.send(Frame::Binary(frame)).await.is_err() {
                    break None;
                }
            }
            _ = ping.tick() => {
                if !alive {
                    break Some("keepalive timeout".into());
                }
                alive = false;
                if sink.send(Frame::Ping(Vec::new())).await.is_err() {
                    break None;
                }
            }
            _ = handle.killed() => {
                // A close with a reason (invalid sync message, too many documents…) is queued
                // just before the kill: tell the peer that reason, not a generic one.
                let mut reason = None;
                while let Some(out) = handle.try_recv() {
                    if let Outbound::Close(r) = out {
                        reason = Some(*r);
                        break;
                    }
                }
                let reason = reason.unwrap_or_else(|| "connection closed by the server (replaced by a newer connection of this device, or too slow)".into());
                let _ = sink.send(Frame::Binary(session.error_frame(&reason))).await;
                break Some(reason);
            }
            _ = shutdown.cancelled() => {
                let _ = sink.send(Frame::Close(1001, "server shutting down".into())).await;
                break None;
            }
        }
    };
    // Nothing reads the queue from here on.
    handle.close();
    if let Some(reason) = &close_reason {
        tracing::debug!(conn = conn.0, reason, "closing sync connection");
        let _ = sink.send(Frame::Close(1008, truncate(reason, 120))).await;
        // Finish the closing handshake: keep reading (and discarding) until the peer answers
        // the close, so that dropping the TCP connection does not reset it before the peer has
        // read the `error` message explaining why.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Frame::Close(..)) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = sink.close().await;
    engine.unregister(conn, &auth.user_id, joined.as_deref());
    if joined.is_some() {
        let store = engine.store().clone();
        let key = conn_key(engine.instance_id(), conn);
        tokio::spawn(async move {
            let _ = store.device_disconnected(&key).await;
        });
    }
}

fn record_device(engine: &Arc<SyncEngine>, conn: ConnId, auth: &PeerAuth, peer_id: &str) {
    let store = engine.store().clone();
    let device = Device {
        conn_id: conn_key(engine.instance_id(), conn),
        instance_id: engine.instance_id().to_string(),
        user_id: auth.user_id.clone(),
        peer_id: truncate(peer_id, 256),
        remote_addr: truncate(&auth.remote_addr, 64),
        user_agent: truncate(&auth.user_agent, 256),
        connected_at: Timestamp(now_ms()),
        last_sync_at: None,
    };
    tokio::spawn(async move {
        if let Err(e) = store.device_connected(&device).await {
            tracing::debug!(error = %e, "device not recorded");
        }
    });
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
