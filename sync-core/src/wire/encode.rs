//! [`Message`] → frame, byte for byte as the JavaScript implementation writes it.
//!
//! cbor-x writes an object's keys in insertion order, so each message's key order is the
//! order of the object literal (and spreads) that builds it in automerge-repo 2.5.6; the
//! comments name the place. `senderId` comes last in every message a `Repo` sends because
//! `NetworkSubsystem.prepareMessage` spreads it in after the synchronizer built the rest; the
//! WebSocket adapters build `join`, `peer` and `error` themselves. `tests/golden/messages.json`
//! holds frames captured from the real implementation, and the tests compare against them.

use super::cbor::Writer;
use super::message::*;
use crate::ids::DocumentId;

/// Upper bound of a message's size without its data, so that one allocation usually suffices.
const HEADER_ESTIMATE: usize = 192;

pub(super) fn encode_into(message: &Message, out: &mut Vec<u8>) {
    let data_len = match message {
        Message::Sync(m) | Message::Request(m) => m.data.len(),
        Message::Ephemeral(m) => m.data.len(),
        _ => 0,
    };
    out.reserve(HEADER_ESTIMATE + data_len);
    let mut w = Writer::new(out);
    match message {
        // WebSocketClientAdapter `joinMessage()`.
        Message::Join(m) => {
            w.map(2 + count(&m.peer_metadata) + count(&m.supported_protocol_versions));
            text(&mut w, "type", "join");
            text(&mut w, "senderId", &m.sender_id);
            if let Some(meta) = &m.peer_metadata {
                metadata(&mut w, meta);
            }
            if let Some(versions) = &m.supported_protocol_versions {
                list(&mut w, "supportedProtocolVersions", versions);
            }
        }
        // WebSocketServerAdapter `receiveMessage()`, answering a join.
        Message::Peer(m) => {
            w.map(4 + count(&m.peer_metadata));
            text(&mut w, "type", "peer");
            text(&mut w, "senderId", &m.sender_id);
            if let Some(meta) = &m.peer_metadata {
                metadata(&mut w, meta);
            }
            text(
                &mut w,
                "selectedProtocolVersion",
                &m.selected_protocol_version,
            );
            text(&mut w, "targetId", &m.target_id);
        }
        // WebSocketServerAdapter `receiveMessage()`, refusing a join.
        Message::Error(m) => {
            w.map(2 + count(&m.sender_id) + count(&m.target_id));
            text(&mut w, "type", "error");
            if let Some(s) = &m.sender_id {
                text(&mut w, "senderId", s);
            }
            text(&mut w, "message", &m.message);
            if let Some(t) = &m.target_id {
                text(&mut w, "targetId", t);
            }
        }
        // The legacy client adapter's `{type: "leave", senderId}`.
        Message::Leave(m) => {
            w.map(2);
            text(&mut w, "type", "leave");
            text(&mut w, "senderId", &m.sender_id);
        }
        // DocSynchronizer `#sendSyncMessage()`: {type, targetId, data, documentId}.
        Message::Sync(m) => {
            w.map(5);
            text(&mut w, "type", "sync");
            text(&mut w, "targetId", &m.target_id);
            bytes(&mut w, "data", &m.data);
            document_id(&mut w, &m.document_id);
            text(&mut w, "senderId", &m.sender_id);
        }
        // DocSynchronizer `#sendSyncMessage()`: {type, targetId, documentId, data}.
        Message::Request(m) => {
            w.map(5);
            text(&mut w, "type", "request");
            text(&mut w, "targetId", &m.target_id);
            document_id(&mut w, &m.document_id);
            bytes(&mut w, "data", &m.data);
            text(&mut w, "senderId", &m.sender_id);
        }
        // DocSynchronizer `#checkDocUnavailable()`: {type, documentId, targetId}.
        Message::DocUnavailable(m) => {
            w.map(4);
            text(&mut w, "type", "doc-unavailable");
            document_id(&mut w, &m.document_id);
            text(&mut w, "targetId", &m.target_id);
            text(&mut w, "senderId", &m.sender_id);
        }
        // DocSynchronizer `#sendEphemeralMessage()` {type, targetId, documentId, data}, then
        // prepareMessage's count, sessionId, senderId. A relaying JavaScript server spreads the
        // received message and overwrites targetId in place, so relayed frames keep this order.
        Message::Ephemeral(m) => {
            w.map(7);
            text(&mut w, "type", "ephemeral");
            text(&mut w, "targetId", &m.target_id);
            document_id(&mut w, &m.document_id);
            bytes(&mut w, "data", &m.data);
            w.text("count");
            w.number(m.count);
            text(&mut w, "sessionId", &m.session_id);
            text(&mut w, "senderId", &m.sender_id);
        }
        // Repo's `change-remote-subs` handler: {type, targetId, add, remove}. Both lists are
        // always keys of the literal, `undefined` when the subscription change has none.
        Message::RemoteSubscriptionChange(m) => {
            w.map(5);
            text(&mut w, "type", "remote-subscription-change");
            text(&mut w, "targetId", &m.target_id);
            for (key, value) in [("add", &m.add), ("remove", &m.remove)] {
                match value {
                    Some(items) => list(&mut w, key, items),
                    None => {
                        w.text(key);
                        w.undefined();
                    }
                }
            }
            text(&mut w, "senderId", &m.sender_id);
        }
        // Repo's `notify-remote-heads` handler: {type, targetId, documentId, newHeads}.
        Message::RemoteHeadsChanged(m) => {
            w.map(5);
            text(&mut w, "type", "remote-heads-changed");
            text(&mut w, "targetId", &m.target_id);
            document_id(&mut w, &m.document_id);
            w.text("newHeads");
            w.map(m.new_heads.len());
            for (storage_id, heads) in &m.new_heads {
                w.text(storage_id);
                w.map(2);
                list(&mut w, "heads", &heads.heads);
                w.text("timestamp");
                w.number(heads.timestamp);
            }
            text(&mut w, "senderId", &m.sender_id);
        }
        // LearnSync's own: laid out like the handshake messages, ids first.
        Message::Resync(m) => {
            w.map(4 + count(&m.reason));
            text(&mut w, "type", RESYNC_TYPE);
            text(&mut w, "senderId", &m.sender_id);
            text(&mut w, "targetId", &m.target_id);
            w.text("epoch");
            w.number(m.epoch);
            if let Some(reason) = &m.reason {
                text(&mut w, "reason", reason);
            }
        }
        Message::Status(m) => {
            w.map(4 + count(&m.message));
            text(&mut w, "type", STATUS_TYPE);
            text(&mut w, "senderId", &m.sender_id);
            text(&mut w, "targetId", &m.target_id);
            text(&mut w, "state", &m.state);
            if let Some(message) = &m.message {
                text(&mut w, "message", message);
            }
        }
        Message::Unknown(m) => {
            w.map(1 + count(&m.sender_id));
            text(&mut w, "type", &m.type_name);
            if let Some(s) = &m.sender_id {
                text(&mut w, "senderId", s);
            }
        }
    }
}

fn count<T>(value: &Option<T>) -> usize {
    usize::from(value.is_some())
}

fn text(w: &mut Writer<'_>, key: &str, value: &str) {
    w.text(key);
    w.text(value);
}

fn bytes(w: &mut Writer<'_>, key: &str, value: &[u8]) {
    w.text(key);
    w.bytes(value);
}

fn list(w: &mut Writer<'_>, key: &str, items: &[String]) {
    w.text(key);
    w.array(items.len());
    for item in items {
        w.text(item);
    }
}

/// A Repo's own metadata literal, `{storageId, isEphemeral}`: `storageId` is always a key,
/// `undefined` without storage (f7 on the wire; verified against a storage-less client).
fn metadata(w: &mut Writer<'_>, meta: &PeerMetadata) {
    w.text("peerMetadata");
    w.map(1 + count(&meta.is_ephemeral));
    w.text("storageId");
    match &meta.storage_id {
        Some(id) => w.text(id),
        None => w.undefined(),
    }
    if let Some(e) = meta.is_ephemeral {
        w.text("isEphemeral");
        w.bool(e);
    }
}

/// The bs58check text of a document id, written without an intermediate `String`.
fn document_id(w: &mut Writer<'_>, id: &DocumentId) {
    w.text("documentId");
    // 16 bytes + 4 checksum bytes are at most 28 base58 digits.
    let mut buf = [0u8; 32];
    if let Ok(len) = bs58::encode(id.as_bytes()).with_check().onto(&mut buf[..])
        && let Ok(text) = std::str::from_utf8(&buf[..len])
    {
        w.text(text);
    } else {
        w.text(&id.to_string());
    }
}
