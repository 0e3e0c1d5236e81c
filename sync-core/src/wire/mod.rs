//! The automerge-repo network protocol codec: every message is one CBOR map in one binary
//! WebSocket frame (`protocol/automerge-repo.md` §1–5).
//!
//! ```
//! use sync_core::wire::{self, DocUnavailable, Message};
//! use sync_core::DocumentId;
//!
//! let frame = wire::encode(&Message::DocUnavailable(DocUnavailable {
//!     sender_id: "learnsync-server".into(),
//!     target_id: "client-a".into(),
//!     document_id: DocumentId::parse("148vjpuxYXixb8DcbaWyeGv2q3u").unwrap(),
//! }));
//! assert_eq!(&frame[..3], &[0xb9, 0x00, 0x04]); // cbor-x's 2-byte map header
//! assert!(matches!(wire::decode(&frame), Ok(Message::DocUnavailable(_))));
//! ```
//!
//! **Decoding** ([`decode`]) accepts everything the JavaScript implementation (cbor-x) emits and
//! what other implementations (samod) write: any header width, keys in any order, `undefined`
//! and `null` for absent fields, integers as unsigned integers or integral floats, fields it
//! does not know, `documentId` as text or as its raw 16 bytes, and message types it does not
//! know ([`Message::Unknown`]). Everything else is a typed [`DecodeError`]. It never panics, it
//! copies out only the fields the message type has, it checks every length against the bytes
//! actually left before using it, and it bounds nesting depth and list lengths.
//!
//! **Encoding** ([`encode`], [`encode_into`]) writes each message byte for byte as
//! automerge-repo 2.5.6 does: cbor-x with `tagUint8Array: false, useRecords: false`, so maps
//! with the 2-byte header `b9 00 NN`, text keys in the order the JavaScript object literal has
//! them, `data` as a byte string, numbers from 2^32 on as float64, and absent optional fields
//! omitted, except where the JavaScript literal always has the key and writes `undefined`
//! (`storageId` of a storage-less peer, `add`/`remove` of a subscription change). The golden
//! frames in `sync-core/tests/golden/messages.json`, captured from the real implementation,
//! pin this down.
//!
//! **LearnSync's own types**, `learnsync-resync` ([`Resync`]) and `learnsync-status`
//! ([`ServerStatus`]), are safe to send to official JavaScript clients: the
//! `WebSocketClientAdapter` hands every frame that is not `peer` or `error` to the
//! `NetworkSubsystem`, whose `isRepoMessage` check logs anything but the six repo types as an
//! "invalid message" and drops it without closing the socket (automerge-repo 2.5.6
//! `network/NetworkSubsystem.ts`; the golden generator checks this against a real client).

mod cbor;
mod decode;
mod encode;
mod message;

pub use decode::MAX_LIST_LEN;
pub use message::*;

use crate::ids::IdError;

/// Why a frame is not a protocol message. Every variant but
/// [`DecodeError::InvalidDocumentId`] means the peer sent bytes no automerge-repo
/// implementation writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends in the middle of an item, or a length claims more bytes than are left.
    #[error("truncated CBOR")]
    Truncated,
    /// More bytes follow the message.
    #[error("{0} bytes after the message")]
    TrailingBytes(usize),
    /// A text field is not UTF-8.
    #[error("field `{0}` is not UTF-8")]
    InvalidUtf8(&'static str),
    /// CBOR that automerge-repo never writes (indefinite lengths, reserved values).
    #[error("unsupported CBOR: {0}")]
    Unsupported(&'static str),
    /// Nested deeper than any message does.
    #[error("CBOR nested too deeply")]
    TooDeep,
    /// The frame is not a CBOR map.
    #[error("message is not a map")]
    NotAMap,
    /// A field the message type requires is missing (or `undefined`/`null`).
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
    /// A list or map in a message has more entries than any real one does.
    #[error("field `{field}` has more than {limit} entries")]
    TooManyItems {
        /// The field.
        field: &'static str,
        /// [`MAX_LIST_LEN`].
        limit: usize,
    },
    /// The frame is a well-formed message, but its `documentId` is not a valid document id
    /// (bs58check of 16 bytes). Its own variant so that a server can ignore the message, or
    /// answer it, instead of treating the peer as broken.
    #[error("invalid documentId: {0}")]
    InvalidDocumentId(IdError),
}

/// Decodes one frame (one binary WebSocket message).
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    decode::decode(frame)
}

/// Encodes a message as one frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(message, &mut out);
    out
}

/// Encodes a message, appending to `out`: on hot paths, reuse one buffer for many frames.
pub fn encode_into(message: &Message, out: &mut Vec<u8>) {
    encode::encode_into(message, out);
}
