//! One connection on the server, before and around the hub: the automerge-repo handshake,
//! sender checks, rate limiting, and turning frames into hub inputs and hub messages into
//! frames.
//!
//! The server authenticates the connection first (cookie or token) and then runs a
//! [`PeerSession`] per socket: every binary frame goes to [`PeerSession::handle_frame`], whose
//! [`SessionAction`]s say what to send, what to give the [`crate::hub::Hub`], and when to close.

use crate::hub::HubMessage;
use crate::ids::DocumentId;
use crate::wire::{
    self, DocMessage, DocUnavailable, Ephemeral, ErrorMessage, Message, Peer, PeerMetadata, Resync,
};

/// Limits that protect the server from one connection.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Sustained messages per second.
    pub messages_per_sec: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            messages_per_sec: 200,
            burst: 1_000,
        }
    }
}

/// What the server must do after a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionAction {
    /// Send this frame to the peer.
    Send(Vec<u8>),
    /// The handshake finished: register the peer with the hub.
    Joined {
        /// The peer's self-chosen id.
        peer_id: String,
        /// Its storage id when it is not ephemeral (sync state is persisted under it).
        storage_id: Option<String>,
    },
    /// A `sync` or `request` for the hub.
    Sync {
        /// The document.
        doc: DocumentId,
        /// `true` for `request`.
        request: bool,
        /// The automerge sync message.
        data: Vec<u8>,
    },
    /// An `ephemeral` message for the hub to relay.
    Ephemeral {
        /// The document.
        doc: DocumentId,
        /// Original author.
        sender_id: String,
        /// Author's session.
        session_id: String,
        /// Author's sequence number.
        count: u64,
        /// Payload.
        data: Vec<u8>,
    },
    /// Send this `error` frame, then close the connection.
    Close {
        /// The encoded `error` message.
        frame: Vec<u8>,
        /// Why, for logs.
        reason: String,
    },
    /// The frame was dropped (pre-join, spoofed sender, unknown type); for logs only.
    Ignored(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitingJoin,
    Joined { peer_id: String },
}

/// The per-connection protocol state. See the module documentation.
#[derive(Debug, Clone)]
pub struct PeerSession {
    server_peer_id: String,
    server_storage_id: String,
    limits: SessionLimits,
    phase: Phase,
    tokens: f64,
    last_refill: i64,
}

impl PeerSession {
    /// A session for a new, authenticated connection. `now` is epoch ms.
    pub fn new(
        server_peer_id: String,
        server_storage_id: String,
        limits: SessionLimits,
        now: i64,
    ) -> Self {
        let tokens = f64::from(limits.burst);
        Self {
            server_peer_id,
            server_storage_id,
            limits,
            phase: Phase::AwaitingJoin,
            tokens,
            last_refill: now,
        }
    }

    /// The peer id, once joined.
    pub fn peer_id(&self) -> Option<&str> {
        match &self.phase {
            Phase::Joined { peer_id } => Some(peer_id),
            Phase::AwaitingJoin => None,
        }
    }

    /// Handles one binary frame.
    pub fn handle_frame(&mut self, frame: &[u8], now: i64) -> Vec<SessionAction> {
        if !self.take_token(now) {
            return vec![self.close("rate limit exceeded: too many messages")];
        }
        let message = match wire::decode(frame) {
            Ok(m) => m,
            Err(e) => return vec![self.close(&format!("malformed message: {e}"))],
        };
        match (&self.phase, message) {
            (_, Message::Join(join)) => {
                if let Some(versions) = &join.supported_protocol_versions
                    && !versions
                        .iter()
                        .any(|v| v == crate::client::PROTOCOL_VERSION)
                {
                    return vec![self.close("unsupported protocol version")];
                }
                if join.sender_id.is_empty() || join.sender_id.len() > 256 {
                    return vec![self.close("invalid senderId")];
                }
                let storage_id = join.peer_metadata.as_ref().and_then(|m| {
                    let ephemeral = m.is_ephemeral.unwrap_or(false);
                    m.storage_id
                        .clone()
                        .filter(|s| !ephemeral && !s.is_empty() && s.len() <= 128)
                });
                let reply = Message::Peer(Peer {
                    sender_id: self.server_peer_id.clone(),
                    peer_metadata: Some(PeerMetadata {
                        storage_id: Some(self.server_storage_id.clone()),
                        is_ephemeral: Some(false),
                    }),
                    selected_protocol_version: crate::client::PROTOCOL_VERSION.to_string(),
                    target_id: join.sender_id.clone(),
                });
                self.phase = Phase::Joined {
                    peer_id: join.sender_id.clone(),
                };
                vec![
                    SessionAction::Send(wire::encode(&reply)),
                    SessionAction::Joined {
                        peer_id: join.sender_id,
                        storage_id,
                    },
                ]
            }
            (Phase::AwaitingJoin, _) => vec![SessionAction::Ignored("message before join")],
            (Phase::Joined { peer_id }, message) => {
                let peer_id = peer_id.clone();
                self.joined_message(&peer_id, message)
            }
        }
    }

    fn joined_message(&mut self, peer_id: &str, message: Message) -> Vec<SessionAction> {
        match message {
            Message::Sync(m) | Message::Request(m) if m.sender_id != peer_id => {
                let _ = m;
                vec![SessionAction::Ignored(
                    "senderId does not match the connection",
                )]
            }
            Message::Sync(m) => vec![SessionAction::Sync {
                doc: m.document_id,
                request: false,
                data: m.data,
            }],
            Message::Request(m) => vec![SessionAction::Sync {
                doc: m.document_id,
                request: true,
                data: m.data,
            }],
            Message::Ephemeral(e) => vec![SessionAction::Ephemeral {
                doc: e.document_id,
                sender_id: e.sender_id,
                session_id: e.session_id,
                count: e.count,
                data: e.data,
            }],
            _ => vec![SessionAction::Ignored(
                "message type not handled by the server",
            )],
        }
    }

    /// Encodes a hub message for this peer.
    pub fn encode(&self, message: &HubMessage) -> Vec<u8> {
        let target_id = self.peer_id().unwrap_or_default().to_string();
        let sender_id = self.server_peer_id.clone();
        let msg = match message {
            HubMessage::Sync { doc, data } => Message::Sync(DocMessage {
                sender_id,
                target_id,
                document_id: *doc,
                data: data.clone(),
            }),
            HubMessage::DocUnavailable { doc } => Message::DocUnavailable(DocUnavailable {
                sender_id,
                target_id,
                document_id: *doc,
            }),
            HubMessage::Ephemeral {
                doc,
                sender_id: author,
                session_id,
                count,
                data,
            } => Message::Ephemeral(Ephemeral {
                sender_id: author.clone(),
                target_id,
                count: *count,
                session_id: session_id.clone(),
                document_id: *doc,
                data: data.clone(),
            }),
            HubMessage::Resync { epoch } => Message::Resync(Resync {
                sender_id,
                target_id,
                epoch: *epoch,
                reason: Some(wire::RESYNC_FORCED.to_string()),
            }),
        };
        wire::encode(&msg)
    }

    /// The epoch announcement sent right after the handshake: a device that missed a forced
    /// resync while offline resyncs when it sees a newer epoch.
    pub fn epoch_frame(&self, epoch: u64) -> Vec<u8> {
        wire::encode(&Message::Resync(Resync {
            sender_id: self.server_peer_id.clone(),
            target_id: self.peer_id().unwrap_or_default().to_string(),
            epoch,
            reason: Some(wire::RESYNC_EPOCH.to_string()),
        }))
    }

    /// A status frame: `ok` or `degraded` with a message for people.
    pub fn status_frame(&self, ok: bool, message: Option<&str>) -> Vec<u8> {
        wire::encode(&Message::Status(wire::ServerStatus {
            sender_id: self.server_peer_id.clone(),
            target_id: self.peer_id().unwrap_or_default().to_string(),
            state: if ok { "ok" } else { "degraded" }.to_string(),
            message: message.map(str::to_string),
        }))
    }

    /// An `error` frame for this peer (the server closes the socket after sending it).
    pub fn error_frame(&self, message: &str) -> Vec<u8> {
        wire::encode(&Message::Error(ErrorMessage {
            sender_id: Some(self.server_peer_id.clone()),
            target_id: self.peer_id().map(str::to_string),
            message: message.to_string(),
        }))
    }

    fn close(&self, reason: &str) -> SessionAction {
        SessionAction::Close {
            frame: self.error_frame(reason),
            reason: reason.to_string(),
        }
    }

    fn take_token(&mut self, now: i64) -> bool {
        let elapsed = (now - self.last_refill).max(0) as f64 / 1000.0;
        self.last_refill = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.limits.messages_per_sec))
            .min(f64::from(self.limits.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
