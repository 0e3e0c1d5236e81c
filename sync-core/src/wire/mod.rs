//! The automerge-repo network protocol: every message is one CBOR map in one binary WebSocket
//! frame (`protocol/automerge-repo.md`).
//!
//! [`decode`] accepts everything the JavaScript implementation (cbor-x) emits — 2-byte map
//! headers, `undefined` for absent fields, integers ≥ 2^32 as float64, extra fields — and
//! returns a typed [`DecodeError`] for anything else; it never panics and never allocates more
//! than the input can justify. [`encode`] writes messages byte for byte as the JavaScript
//! implementation does (same key order, same headers), so golden frames compare equal.
//!
//! LearnSync adds two message types, `learnsync-resync` and `learnsync-status`. The official
//! JavaScript client hands unknown types to its `NetworkSubsystem`, whose `isRepoMessage` check
//! drops them with a log line and keeps the socket open, so they are safe to send to any peer.

mod cbor;

use cbor::{Value, Writer};

use crate::ids::{DocumentId, IdError};

/// Type name of LearnSync's forced-sync notice.
pub const RESYNC_TYPE: &str = "learnsync-resync";
/// `reason` of a resync an admin forced while the device was connected: always resync.
pub const RESYNC_FORCED: &str = "forced";
/// `reason` of the epoch announcement sent after every handshake: resync if it is newer than
/// the epoch the device has caught up with.
pub const RESYNC_EPOCH: &str = "epoch";
/// Type name of LearnSync's server-status notice.
pub const STATUS_TYPE: &str = "learnsync-status";

/// Why a frame is not a protocol message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends in the middle of an item.
    #[error("truncated CBOR")]
    Truncated,
    /// More bytes follow the message.
    #[error("{0} bytes after the message")]
    TrailingBytes(usize),
    /// A text string is not UTF-8.
    #[error("text is not UTF-8")]
    InvalidUtf8,
    /// CBOR the protocol never uses.
    #[error("unsupported CBOR: {0}")]
    Unsupported(&'static str),
    /// Nested too deeply.
    #[error("CBOR nested too deeply")]
    TooDeep,
    /// The frame is not a CBOR map.
    #[error("message is not a map")]
    NotAMap,
    /// A required field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong CBOR type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `documentId` is not a valid automerge-repo document id.
    #[error("invalid documentId: {0}")]
    InvalidDocumentId(IdError),
}

/// A peer's metadata from `join`/`peer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's stable storage id, if it has storage.
    pub storage_id: Option<String>,
    /// Whether the peer keeps no storage (its sync state is not worth persisting).
    pub is_ephemeral: Option<bool>,
}

/// `join`: the first message of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The client's peer id.
    pub sender_id: String,
    /// The client's metadata.
    pub peer_metadata: Option<PeerMetadata>,
    /// Protocol versions the client speaks; absent means "1".
    pub supported_protocol_versions: Option<Vec<String>>,
}

/// `peer`: the server's answer to `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The server's peer id.
    pub sender_id: String,
    /// The server's metadata.
    pub peer_metadata: Option<PeerMetadata>,
    /// The chosen protocol version.
    pub selected_protocol_version: String,
    /// The client's peer id.
    pub target_id: String,
}

/// `error`: the sender closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// Sender, when given.
    pub sender_id: Option<String>,
    /// Target, when given.
    pub target_id: Option<String>,
    /// For people.
    pub message: String,
}

/// `leave` (legacy; ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The leaving peer.
    pub sender_id: String,
}

/// `sync` and `request`: one automerge sync message for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMessage {
    /// Sender.
    pub sender_id: String,
    /// Target (not checked on receipt, as in JavaScript).
    pub target_id: String,
    /// The document.
    pub document_id: DocumentId,
    /// Encoded `automerge::sync::Message`.
    pub data: Vec<u8>,
}

/// `doc-unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocUnavailable {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// The document.
    pub document_id: DocumentId,
}

/// `ephemeral`: an application payload relayed to the document's other peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    /// The original author (kept when relayed).
    pub sender_id: String,
    /// Rewritten per hop.
    pub target_id: String,
    /// Author's sequence number.
    pub count: u64,
    /// Author's session.
    pub session_id: String,
    /// The document.
    pub document_id: DocumentId,
    /// Payload.
    pub data: Vec<u8>,
}

/// `remote-subscription-change` (remote-heads gossip; ignored by LearnSync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSubscriptionChange {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// Storage ids to subscribe to.
    pub add: Option<Vec<String>>,
    /// Storage ids to unsubscribe from.
    pub remove: Option<Vec<String>>,
}

/// Heads of a document at one storage id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// bs58check change hashes.
    pub heads: Vec<String>,
    /// Epoch ms.
    pub timestamp: u64,
}

/// `remote-heads-changed` (remote-heads gossip; ignored by LearnSync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeadsChanged {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// The document.
    pub document_id: DocumentId,
    /// Heads per storage id, in the sender's order.
    pub new_heads: Vec<(String, RemoteHeads)>,
}

/// `learnsync-resync`: drop all sync state and resync every document (an admin forced it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// The sync epoch; a device resyncs when it is newer than the one it has seen.
    pub epoch: u64,
    /// Why, for people.
    pub reason: Option<String>,
}

/// `learnsync-status`: the server's health as devices should show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// `ok` or `degraded`.
    pub state: String,
    /// For people.
    pub message: Option<String>,
}

/// A message type this implementation does not handle; kept so the caller can log and drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The `type` field.
    pub type_name: String,
    /// The sender, when given.
    pub sender_id: Option<String>,
}

/// Every automerge-repo message, plus LearnSync's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `join`.
    Join(Join),
    /// `peer`.
    Peer(Peer),
    /// `error`.
    Error(ErrorMessage),
    /// `leave`.
    Leave(Leave),
    /// `sync`.
    Sync(DocMessage),
    /// `request`.
    Request(DocMessage),
    /// `doc-unavailable`.
    DocUnavailable(DocUnavailable),
    /// `ephemeral`.
    Ephemeral(Ephemeral),
    /// `remote-subscription-change`.
    RemoteSubscriptionChange(RemoteSubscriptionChange),
    /// `remote-heads-changed`.
    RemoteHeadsChanged(RemoteHeadsChanged),
    /// `learnsync-resync`.
    Resync(Resync),
    /// `learnsync-status`.
    Status(ServerStatus),
    /// Anything else.
    Unknown(Unknown),
}

impl Message {
    /// The `type` field of this message.
    pub fn type_name(&self) -> &str {
        match self {
            Message::Join(_) => "join",
            Message::Peer(_) => "peer",
            Message::Error(_) => "error",
            Message::Leave(_) => "leave",
            Message::Sync(_) => "sync",
            Message::Request(_) => "request",
            Message::DocUnavailable(_) => "doc-unavailable",
            Message::Ephemeral(_) => "ephemeral",
            Message::RemoteSubscriptionChange(_) => "remote-subscription-change",
            Message::RemoteHeadsChanged(_) => "remote-heads-changed",
            Message::Resync(_) => RESYNC_TYPE,
            Message::Status(_) => STATUS_TYPE,
            Message::Unknown(u) => &u.type_name,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes one frame.
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    let Value::Map(entries) = cbor::decode(frame)? else {
        return Err(DecodeError::NotAMap);
    };
    let fields = Fields(entries);
    let type_name = fields.text("type")?;
    Ok(match type_name {
        "join" => Message::Join(Join {
            sender_id: fields.text("senderId")?.to_string(),
            peer_metadata: fields.metadata("peerMetadata")?,
            supported_protocol_versions: fields.text_array("supportedProtocolVersions")?,
        }),
        "peer" => Message::Peer(Peer {
            sender_id: fields.text("senderId")?.to_string(),
            peer_metadata: fields.metadata("peerMetadata")?,
            selected_protocol_version: fields
                .opt_text("selectedProtocolVersion")?
                .unwrap_or("1")
                .to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
        }),
        "error" => Message::Error(ErrorMessage {
            sender_id: fields.opt_text("senderId")?.map(str::to_string),
            target_id: fields.opt_text("targetId")?.map(str::to_string),
            message: fields.opt_text("message")?.unwrap_or_default().to_string(),
        }),
        "leave" => Message::Leave(Leave {
            sender_id: fields.text("senderId")?.to_string(),
        }),
        "sync" => Message::Sync(fields.doc_message()?),
        "request" => Message::Request(fields.doc_message()?),
        "doc-unavailable" => Message::DocUnavailable(DocUnavailable {
            sender_id: fields.text("senderId")?.to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
            document_id: fields.document_id()?,
        }),
        "ephemeral" => Message::Ephemeral(Ephemeral {
            sender_id: fields.text("senderId")?.to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
            count: fields.number("count")?,
            session_id: fields.text("sessionId")?.to_string(),
            document_id: fields.document_id()?,
            data: fields.bytes("data")?.to_vec(),
        }),
        "remote-subscription-change" => {
            Message::RemoteSubscriptionChange(RemoteSubscriptionChange {
                sender_id: fields.text("senderId")?.to_string(),
                target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
                add: fields.text_array("add")?,
                remove: fields.text_array("remove")?,
            })
        }
        "remote-heads-changed" => Message::RemoteHeadsChanged(RemoteHeadsChanged {
            sender_id: fields.text("senderId")?.to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
            document_id: fields.document_id()?,
            new_heads: fields.new_heads()?,
        }),
        RESYNC_TYPE => Message::Resync(Resync {
            sender_id: fields.opt_text("senderId")?.unwrap_or_default().to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
            epoch: fields.number("epoch")?,
            reason: fields.opt_text("reason")?.map(str::to_string),
        }),
        STATUS_TYPE => Message::Status(ServerStatus {
            sender_id: fields.opt_text("senderId")?.unwrap_or_default().to_string(),
            target_id: fields.opt_text("targetId")?.unwrap_or_default().to_string(),
            state: fields.text("state")?.to_string(),
            message: fields.opt_text("message")?.map(str::to_string),
        }),
        other => Message::Unknown(Unknown {
            type_name: other.to_string(),
            sender_id: fields.opt_text("senderId")?.map(str::to_string),
        }),
    })
}

struct Fields<'a>(Vec<(Value<'a>, Value<'a>)>);

impl<'a> Fields<'a> {
    /// The value of a text key; `undefined`/`null` count as absent. The last occurrence wins,
    /// as in JavaScript objects.
    fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Text(t) if *t == key))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::Absent))
    }

    fn text(&self, key: &'static str) -> Result<&'a str, DecodeError> {
        self.opt_text(key)?.ok_or(DecodeError::MissingField(key))
    }

    fn opt_text(&self, key: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "text",
            }),
        }
    }

    fn bytes(&self, key: &'static str) -> Result<&'a [u8], DecodeError> {
        match self.get(key) {
            None => Err(DecodeError::MissingField(key)),
            Some(Value::Bytes(b)) => Ok(b),
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "a byte string",
            }),
        }
    }

    fn number(&self, key: &'static str) -> Result<u64, DecodeError> {
        match self.get(key) {
            None => Err(DecodeError::MissingField(key)),
            Some(v) => as_u64(v).ok_or(DecodeError::WrongType {
                field: key,
                expected: "a non-negative integer",
            }),
        }
    }

    fn text_array(&self, key: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
        let wrong = DecodeError::WrongType {
            field: key,
            expected: "an array of text",
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Text(t) => Ok(t.to_string()),
                    _ => Err(wrong.clone()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong),
        }
    }

    fn metadata(&self, key: &'static str) -> Result<Option<PeerMetadata>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Map(entries)) => {
                let inner = Fields(entries.clone());
                Ok(Some(PeerMetadata {
                    storage_id: inner.opt_text("storageId")?.map(str::to_string),
                    is_ephemeral: match inner.get("isEphemeral") {
                        None => None,
                        Some(Value::Bool(b)) => Some(*b),
                        Some(_) => {
                            return Err(DecodeError::WrongType {
                                field: "isEphemeral",
                                expected: "a boolean",
                            });
                        }
                    },
                }))
            }
            Some(_) => Err(DecodeError::WrongType {
                field: key,
                expected: "a map",
            }),
        }
    }

    fn document_id(&self) -> Result<DocumentId, DecodeError> {
        match self.get("documentId") {
            None => Err(DecodeError::MissingField("documentId")),
            Some(Value::Text(t)) => DocumentId::parse(t).map_err(DecodeError::InvalidDocumentId),
            Some(Value::Bytes(b)) => {
                let bytes: [u8; 16] = (*b)
                    .try_into()
                    .map_err(|_| DecodeError::InvalidDocumentId(IdError::WrongLength(b.len())))?;
                Ok(DocumentId::from_bytes(bytes))
            }
            Some(_) => Err(DecodeError::WrongType {
                field: "documentId",
                expected: "text",
            }),
        }
    }

    fn doc_message(&self) -> Result<DocMessage, DecodeError> {
        Ok(DocMessage {
            sender_id: self.text("senderId")?.to_string(),
            target_id: self.opt_text("targetId")?.unwrap_or_default().to_string(),
            document_id: self.document_id()?,
            data: self.bytes("data")?.to_vec(),
        })
    }

    fn new_heads(&self) -> Result<Vec<(String, RemoteHeads)>, DecodeError> {
        let wrong = |expected| DecodeError::WrongType {
            field: "newHeads",
            expected,
        };
        let Some(Value::Map(entries)) = self.get("newHeads") else {
            return match self.get("newHeads") {
                None => Ok(Vec::new()),
                Some(_) => Err(wrong("a map")),
            };
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let (Value::Text(storage_id), Value::Map(inner)) = (k, v) else {
                return Err(wrong("a map of storage id to heads"));
            };
            let inner = Fields(inner.clone());
            out.push((
                storage_id.to_string(),
                RemoteHeads {
                    heads: inner.text_array("heads")?.unwrap_or_default(),
                    timestamp: match inner.get("timestamp") {
                        None => 0,
                        Some(v) => as_u64(v).ok_or(wrong("timestamps as numbers"))?,
                    },
                },
            ));
        }
        Ok(out)
    }
}

/// A JavaScript number that must be a non-negative safe integer: uint, or an integral float64.
fn as_u64(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Uint(n) => Some(*n),
        Value::Float(f)
            if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f <= 9_007_199_254_740_992.0 =>
        {
            Some(*f as u64)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes a message as one frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(message, &mut out);
    out
}

/// Encodes a message, appending to `out` (reuse the buffer on hot paths).
pub fn encode_into(message: &Message, out: &mut Vec<u8>) {
    let mut w = Writer::new(out);
    // Key orders follow what the JavaScript implementation writes for each message.
    match message {
        Message::Join(m) => {
            let n = 2
                + usize::from(m.peer_metadata.is_some())
                + usize::from(m.supported_protocol_versions.is_some());
            w.map(n);
            kv_text(&mut w, "type", "join");
            kv_text(&mut w, "senderId", &m.sender_id);
            if let Some(meta) = &m.peer_metadata {
                w.text("peerMetadata");
                metadata(&mut w, meta);
            }
            if let Some(versions) = &m.supported_protocol_versions {
                w.text("supportedProtocolVersions");
                w.array(versions.len());
                for v in versions {
                    w.text(v);
                }
            }
        }
        Message::Peer(m) => {
            w.map(4 + usize::from(m.peer_metadata.is_some()));
            kv_text(&mut w, "type", "peer");
            kv_text(&mut w, "senderId", &m.sender_id);
            if let Some(meta) = &m.peer_metadata {
                w.text("peerMetadata");
                metadata(&mut w, meta);
            }
            kv_text(
                &mut w,
                "selectedProtocolVersion",
                &m.selected_protocol_version,
            );
            kv_text(&mut w, "targetId", &m.target_id);
        }
        Message::Error(m) => {
            w.map(2 + usize::from(m.sender_id.is_some()) + usize::from(m.target_id.is_some()));
            kv_text(&mut w, "type", "error");
            if let Some(s) = &m.sender_id {
                kv_text(&mut w, "senderId", s);
            }
            kv_text(&mut w, "message", &m.message);
            if let Some(t) = &m.target_id {
                kv_text(&mut w, "targetId", t);
            }
        }
        Message::Leave(m) => {
            w.map(2);
            kv_text(&mut w, "type", "leave");
            kv_text(&mut w, "senderId", &m.sender_id);
        }
        Message::Sync(m) => doc_message(&mut w, "sync", m),
        Message::Request(m) => doc_message(&mut w, "request", m),
        Message::DocUnavailable(m) => {
            w.map(4);
            kv_text(&mut w, "type", "doc-unavailable");
            kv_text(&mut w, "documentId", &m.document_id.to_string());
            kv_text(&mut w, "targetId", &m.target_id);
            kv_text(&mut w, "senderId", &m.sender_id);
        }
        Message::Ephemeral(m) => {
            w.map(7);
            kv_text(&mut w, "type", "ephemeral");
            kv_text(&mut w, "senderId", &m.sender_id);
            kv_text(&mut w, "targetId", &m.target_id);
            kv_text(&mut w, "documentId", &m.document_id.to_string());
            kv_text(&mut w, "sessionId", &m.session_id);
            w.text("count");
            w.number(m.count);
            w.text("data");
            w.bytes(&m.data);
        }
        Message::RemoteSubscriptionChange(m) => {
            w.map(3 + usize::from(m.add.is_some()) + usize::from(m.remove.is_some()));
            kv_text(&mut w, "type", "remote-subscription-change");
            kv_text(&mut w, "senderId", &m.sender_id);
            kv_text(&mut w, "targetId", &m.target_id);
            for (key, list) in [("add", &m.add), ("remove", &m.remove)] {
                if let Some(list) = list {
                    w.text(key);
                    w.array(list.len());
                    for s in list {
                        w.text(s);
                    }
                }
            }
        }
        Message::RemoteHeadsChanged(m) => {
            w.map(5);
            kv_text(&mut w, "type", "remote-heads-changed");
            kv_text(&mut w, "senderId", &m.sender_id);
            kv_text(&mut w, "targetId", &m.target_id);
            kv_text(&mut w, "documentId", &m.document_id.to_string());
            w.text("newHeads");
            w.map(m.new_heads.len());
            for (storage_id, heads) in &m.new_heads {
                w.text(storage_id);
                w.map(2);
                w.text("heads");
                w.array(heads.heads.len());
                for h in &heads.heads {
                    w.text(h);
                }
                w.text("timestamp");
                w.number(heads.timestamp);
            }
        }
        Message::Resync(m) => {
            w.map(4 + usize::from(m.reason.is_some()));
            kv_text(&mut w, "type", RESYNC_TYPE);
            kv_text(&mut w, "senderId", &m.sender_id);
            kv_text(&mut w, "targetId", &m.target_id);
            w.text("epoch");
            w.number(m.epoch);
            if let Some(r) = &m.reason {
                kv_text(&mut w, "reason", r);
            }
        }
        Message::Status(m) => {
            w.map(4 + usize::from(m.message.is_some()));
            kv_text(&mut w, "type", STATUS_TYPE);
            kv_text(&mut w, "senderId", &m.sender_id);
            kv_text(&mut w, "targetId", &m.target_id);
            kv_text(&mut w, "state", &m.state);
            if let Some(msg) = &m.message {
                kv_text(&mut w, "message", msg);
            }
        }
        Message::Unknown(m) => {
            w.map(1 + usize::from(m.sender_id.is_some()));
            kv_text(&mut w, "type", &m.type_name);
            if let Some(s) = &m.sender_id {
                kv_text(&mut w, "senderId", s);
            }
        }
    }
}

fn kv_text(w: &mut Writer<'_>, key: &str, value: &str) {
    w.text(key);
    w.text(value);
}

fn metadata(w: &mut Writer<'_>, meta: &PeerMetadata) {
    w.map(usize::from(meta.storage_id.is_some()) + usize::from(meta.is_ephemeral.is_some()));
    if let Some(s) = &meta.storage_id {
        kv_text(w, "storageId", s);
    }
    if let Some(e) = meta.is_ephemeral {
        w.text("isEphemeral");
        w.bool(e);
    }
}

fn doc_message(w: &mut Writer<'_>, type_name: &str, m: &DocMessage) {
    w.map(5);
    kv_text(w, "type", type_name);
    kv_text(w, "senderId", &m.sender_id);
    kv_text(w, "targetId", &m.target_id);
    kv_text(w, "documentId", &m.document_id.to_string());
    w.text("data");
    w.bytes(&m.data);
}

#[cfg(test)]
mod tests;
