//! The messages, as Rust values. Field names follow the wire names (`senderId` →
//! `sender_id`); the doc comment of each type says who sends it and what the receiver does.

use crate::ids::DocumentId;

/// Type name of LearnSync's forced-sync notice.
pub const RESYNC_TYPE: &str = "learnsync-resync";
/// `reason` of a resync an admin forced while the device was connected: always resync.
pub const RESYNC_FORCED: &str = "forced";
/// `reason` of the epoch announcement sent after every handshake: resync if it is newer than
/// the epoch the device has caught up with.
pub const RESYNC_EPOCH: &str = "epoch";
/// Type name of LearnSync's server-status notice.
pub const STATUS_TYPE: &str = "learnsync-status";
/// [`ServerStatus::state`] when the server stores changes normally.
pub const STATUS_OK: &str = "ok";
/// [`ServerStatus::state`] when the server cannot store changes for now (its database is
/// unreachable): devices keep working offline and resend later.
pub const STATUS_DEGRADED: &str = "degraded";

/// A peer's metadata from `join`/`peer`: what the other side needs to decide whether sync
/// state with this peer is worth persisting across connections.
///
/// A JavaScript `Repo` always writes both keys, `storageId` as `undefined` when it has no
/// storage; the encoder does the same (see [`crate::wire::encode`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's stable storage id (a UUID persisted with its data), if it has storage. Sync
    /// state is kept per storage id, so it survives reconnects and new peer ids.
    pub storage_id: Option<String>,
    /// Whether the peer keeps nothing between sessions (then its sync state is not persisted).
    pub is_ephemeral: Option<bool>,
}

/// `join`: the first message of every connection, client to server. There is no `targetId`:
/// the client does not know the server's peer id yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The client's peer id (self-chosen; reconnects reuse it).
    pub sender_id: String,
    /// The client's metadata.
    pub peer_metadata: Option<PeerMetadata>,
    /// Protocol versions the client speaks. Absent means "1" (the JavaScript server selects
    /// "1" then); present without "1" is answered with `error` and a close.
    pub supported_protocol_versions: Option<Vec<String>>,
}

/// `peer`: the server's answer to `join`, which ends the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The server's peer id.
    pub sender_id: String,
    /// The server's metadata (a stable `storageId` lets clients persist their sync state).
    pub peer_metadata: Option<PeerMetadata>,
    /// The chosen protocol version, "1". A `peer` without it decodes as "1": the JavaScript
    /// client never reads it and "1" is the only version there is.
    pub selected_protocol_version: String,
    /// The client's peer id, from its `join`.
    pub target_id: String,
}

/// `error`: the sender closes the connection after it; the receiver only logs it. samod sends
/// just `{type, message}`, hence the optional ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// Sender, when given.
    pub sender_id: Option<String>,
    /// Target, when given.
    pub target_id: Option<String>,
    /// For people; never internal error text.
    pub message: String,
}

/// `leave`: the goodbye of automerge-repo clients before July 2024. Nothing to do on receipt;
/// decoded so that old clients are not mistaken for broken ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The leaving peer.
    pub sender_id: String,
}

/// `sync` and `request`: one automerge sync message for one document. `request` is the first
/// message of a peer that does not have the document; the server treats both alike, but
/// remembers that a requester wants the document (it may answer `doc-unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMessage {
    /// Sender.
    pub sender_id: String,
    /// Target. Receivers do not check it (the JavaScript implementation does not either);
    /// a frame without one decodes with an empty target.
    pub target_id: String,
    /// The document.
    pub document_id: DocumentId,
    /// An encoded `automerge::sync::Message`.
    pub data: Vec<u8>,
}

/// `doc-unavailable`: the sender does not have the document and none of its other peers do.
/// A JavaScript client's `find()` rejects on it; a later `sync` with data still delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocUnavailable {
    /// Sender.
    pub sender_id: String,
    /// Target (not checked on receipt).
    pub target_id: String,
    /// The document.
    pub document_id: DocumentId,
}

/// `ephemeral`: an application payload (presence, cursors) relayed to the document's other
/// peers, never stored. Receivers drop repeats by `(sender_id, session_id)` and `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    /// The original author, kept unchanged when relayed.
    pub sender_id: String,
    /// Rewritten per hop.
    pub target_id: String,
    /// The author's sequence number in its session.
    pub count: u64,
    /// The author's session (one per Repo instance).
    pub session_id: String,
    /// The document.
    pub document_id: DocumentId,
    /// The payload (itself CBOR written by the application's `broadcast`).
    pub data: Vec<u8>,
}

/// `remote-subscription-change`: remote-heads gossip, which the official sync server leaves
/// off and LearnSync ignores. Decoded so it is not mistaken for garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSubscriptionChange {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// Storage ids to subscribe to (JavaScript writes `undefined` when there are none).
    pub add: Option<Vec<String>>,
    /// Storage ids to unsubscribe from (likewise).
    pub remove: Option<Vec<String>>,
}

/// The heads of a document at one storage id, as remote-heads gossip reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// bs58check change hashes (not hex).
    pub heads: Vec<String>,
    /// When the reporting peer saw them, epoch ms (a float64 on the wire).
    pub timestamp: u64,
}

/// `remote-heads-changed`: remote-heads gossip (ignored by LearnSync).
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

/// `learnsync-resync` (LearnSync's own): drop all sync state and resync every document, because
/// an admin forced it. Official JavaScript clients drop it unread and stay connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// The sync epoch; a device resyncs when it is newer than the one it has seen.
    pub epoch: u64,
    /// [`RESYNC_FORCED`] or [`RESYNC_EPOCH`].
    pub reason: Option<String>,
}

/// `learnsync-status` (LearnSync's own): the server's health as devices should show it.
/// Official JavaScript clients drop it unread and stay connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// Sender.
    pub sender_id: String,
    /// Target.
    pub target_id: String,
    /// [`STATUS_OK`] or [`STATUS_DEGRADED`]; kept as text so that a newer server's states
    /// reach an older device as what they are.
    pub state: String,
    /// For people.
    pub message: Option<String>,
}

/// A message type this implementation does not know. Kept (not an error) because the
/// JavaScript implementation drops unknown types and keeps the connection, so peers may send
/// types from newer versions; the caller logs and ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The `type` field.
    pub type_name: String,
    /// The sender, when given as text.
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
    /// `leave` (legacy).
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
    /// Any other type.
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

    /// The `senderId`, when the message has one.
    pub fn sender_id(&self) -> Option<&str> {
        match self {
            Message::Join(m) => Some(&m.sender_id),
            Message::Peer(m) => Some(&m.sender_id),
            Message::Error(m) => m.sender_id.as_deref(),
            Message::Leave(m) => Some(&m.sender_id),
            Message::Sync(m) | Message::Request(m) => Some(&m.sender_id),
            Message::DocUnavailable(m) => Some(&m.sender_id),
            Message::Ephemeral(m) => Some(&m.sender_id),
            Message::RemoteSubscriptionChange(m) => Some(&m.sender_id),
            Message::RemoteHeadsChanged(m) => Some(&m.sender_id),
            Message::Resync(m) => Some(&m.sender_id),
            Message::Status(m) => Some(&m.sender_id),
            Message::Unknown(m) => m.sender_id.as_deref(),
        }
    }
}
