//! Frame → [`Message`].
//!
//! Two passes over the frame, neither of which builds a generic CBOR tree. The first walks the
//! top-level map once, checks that every value is well-formed and nested no deeper than
//! [`MAX_DEPTH`], and remembers the encoded bytes of the keys the protocol knows (the last
//! occurrence wins, as in a JavaScript object); values of other keys are skipped without being
//! read into memory. The second reads, by the message's `type`, just the fields that type has.
//! So whatever a peer puts in a frame, the memory it makes us use is what we keep, and the
//! order of the keys does not matter (cbor-x writes them in insertion order, samod in its own).

use super::DecodeError;
use super::cbor::{Head, MAX_SAFE_FLOAT_INTEGER, Reader};
use super::message::*;
use crate::ids::{DOCUMENT_ID_LEN, DocumentId, IdError};

/// The most entries a list or map inside a message may have (`supportedProtocolVersions`,
/// `add`, `remove`, `heads`, `newHeads`). Real ones have a handful; the bound keeps a small
/// frame from turning into many small allocations.
pub const MAX_LIST_LEN: usize = 1024;

/// The keys the protocol knows. Their position is their index in [`Fields`].
const KEYS: [&str; 19] = [
    "type",
    "senderId",
    "targetId",
    "documentId",
    "data",
    "peerMetadata",
    "supportedProtocolVersions",
    "selectedProtocolVersion",
    "message",
    "count",
    "sessionId",
    "add",
    "remove",
    "newHeads",
    "epoch",
    "reason",
    "state",
    // Inside `newHeads`.
    "heads",
    "timestamp",
];

fn key_index(key: &[u8]) -> Option<usize> {
    KEYS.iter().position(|k| k.as_bytes() == key)
}

/// The encoded value of each known key of one map, if present.
struct Fields<'a>([Option<&'a [u8]>; KEYS.len()]);

impl<'a> Fields<'a> {
    /// Walks a map whose head has been read, keeping the values of known keys. `depth` is the
    /// depth of the map's keys and values.
    fn collect(r: &mut Reader<'a>, entries: u64, depth: usize) -> Result<Self, DecodeError> {
        let mut fields = Fields([None; KEYS.len()]);
        for _ in 0..r.count(entries, 2)? {
            let key = r.item(depth)?;
            let value = r.item(depth)?;
            if let Some(i) = text_item(key).and_then(key_index) {
                fields.0[i] = Some(value);
            }
        }
        Ok(fields)
    }

    fn raw(&self, key: &'static str) -> Option<&'a [u8]> {
        key_index(key.as_bytes()).and_then(|i| self.0[i])
    }

    /// The value of `key` with tags looked through, or `None` when the key is missing or
    /// `undefined`/`null` (automerge-repo means "absent" by both).
    fn value(&self, key: &'static str) -> Result<Option<(Head, Reader<'a>)>, DecodeError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let mut r = Reader::new(raw);
        match r.untagged_head()? {
            Head::Absent => Ok(None),
            head => Ok(Some((head, r))),
        }
    }

    fn opt_text(&self, key: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.value(key)? {
            None => Ok(None),
            Some((Head::Text(len), mut r)) => r.text(len, key).map(Some),
            Some(_) => Err(wrong(key, "text")),
        }
    }

    fn text(&self, key: &'static str) -> Result<String, DecodeError> {
        self.opt_text(key)?
            .map(str::to_owned)
            .ok_or(DecodeError::MissingField(key))
    }

    fn opt_string(&self, key: &'static str) -> Result<Option<String>, DecodeError> {
        Ok(self.opt_text(key)?.map(str::to_owned))
    }

    /// A peer id the receiver never checks (`targetId`): empty when absent.
    fn lenient_text(&self, key: &'static str) -> Result<String, DecodeError> {
        Ok(self.opt_text(key)?.unwrap_or_default().to_owned())
    }

    fn bytes(&self, key: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.value(key)? {
            None => Err(DecodeError::MissingField(key)),
            Some((Head::Bytes(len), mut r)) => Ok(r.take(len)?.to_vec()),
            Some(_) => Err(wrong(key, "a byte string")),
        }
    }

    fn number(&self, key: &'static str) -> Result<u64, DecodeError> {
        match self.value(key)? {
            None => Err(DecodeError::MissingField(key)),
            Some((head, _)) => number(head).ok_or(wrong(key, "a non-negative integer")),
        }
    }

    fn text_list(&self, key: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
        match self.value(key)? {
            None => Ok(None),
            Some((Head::Array(n), mut r)) => {
                let n = list_len(&r, n, 1, key)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    match r.untagged_head()? {
                        Head::Text(len) => items.push(r.text(len, key)?.to_owned()),
                        _ => return Err(wrong(key, "an array of text")),
                    }
                }
                Ok(Some(items))
            }
            Some(_) => Err(wrong(key, "an array of text")),
        }
    }

    fn document_id(&self) -> Result<DocumentId, DecodeError> {
        const KEY: &str = "documentId";
        match self.value(KEY)? {
            None => Err(DecodeError::MissingField(KEY)),
            Some((Head::Text(len), mut r)) => {
                DocumentId::parse(r.text(len, KEY)?).map_err(DecodeError::InvalidDocumentId)
            }
            // samod accepts the raw 16 bytes too; JavaScript always sends text.
            Some((Head::Bytes(len), mut r)) => {
                let raw = r.take(len)?;
                let bytes: [u8; DOCUMENT_ID_LEN] = raw
                    .try_into()
                    .map_err(|_| DecodeError::InvalidDocumentId(IdError::WrongLength(raw.len())))?;
                Ok(DocumentId::from_bytes(bytes))
            }
            Some(_) => Err(wrong(KEY, "text")),
        }
    }

    fn peer_metadata(&self) -> Result<Option<PeerMetadata>, DecodeError> {
        const KEY: &str = "peerMetadata";
        match self.value(KEY)? {
            None => Ok(None),
            Some((Head::Map(n), mut r)) => {
                let mut metadata = PeerMetadata::default();
                for _ in 0..r.count(n, 2)? {
                    let key = r.item(2)?;
                    let value = r.item(2)?;
                    let mut v = Reader::new(value);
                    match text_item(key) {
                        Some(b"storageId") => {
                            metadata.storage_id = match v.untagged_head()? {
                                Head::Absent => None,
                                Head::Text(len) => Some(v.text(len, "storageId")?.to_owned()),
                                _ => return Err(wrong("storageId", "text")),
                            }
                        }
                        Some(b"isEphemeral") => {
                            metadata.is_ephemeral = match v.untagged_head()? {
                                Head::Absent => None,
                                Head::Bool(b) => Some(b),
                                _ => return Err(wrong("isEphemeral", "a boolean")),
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Some(metadata))
            }
            Some(_) => Err(wrong(KEY, "a map")),
        }
    }

    fn new_heads(&self) -> Result<Vec<(String, RemoteHeads)>, DecodeError> {
        const KEY: &str = "newHeads";
        let (n, mut r) = match self.value(KEY)? {
            None => return Err(DecodeError::MissingField(KEY)),
            Some((Head::Map(n), r)) => (n, r),
            Some(_) => return Err(wrong(KEY, "a map")),
        };
        let n = list_len(&r, n, 2, KEY)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let storage_id = match r.untagged_head()? {
                Head::Text(len) => r.text(len, KEY)?.to_owned(),
                _ => return Err(wrong(KEY, "a map keyed by storage id")),
            };
            let entries = match r.untagged_head()? {
                Head::Map(entries) => entries,
                _ => return Err(wrong(KEY, "a map of {heads, timestamp}")),
            };
            let inner = Fields::collect(&mut r, entries, 3)?;
            out.push((
                storage_id,
                RemoteHeads {
                    heads: inner
                        .text_list("heads")?
                        .ok_or(DecodeError::MissingField("heads"))?,
                    timestamp: inner.number("timestamp")?,
                },
            ));
        }
        Ok(out)
    }

    fn doc_message(&self) -> Result<DocMessage, DecodeError> {
        Ok(DocMessage {
            sender_id: self.text("senderId")?,
            target_id: self.lenient_text("targetId")?,
            document_id: self.document_id()?,
            data: self.bytes("data")?,
        })
    }
}

/// The payload of an encoded item if it is text (tags looked through).
fn text_item(item: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(item);
    match r.untagged_head().ok()? {
        Head::Text(len) => r.take(len).ok(),
        _ => None,
    }
}

/// A JavaScript number that must be a non-negative safe integer: an unsigned integer of any
/// width, or a float (cbor-x writes integers from 2^32 on as float64) that is integral and
/// within 2^53.
fn number(head: Head) -> Option<u64> {
    match head {
        Head::Uint(n) => Some(n),
        Head::Float(f)
            if f.is_finite()
                && f >= 0.0
                && f.fract() == 0.0
                && f <= MAX_SAFE_FLOAT_INTEGER as f64 =>
        {
            Some(f as u64)
        }
        _ => None,
    }
}

fn list_len(
    r: &Reader<'_>,
    n: u64,
    bytes_per_item: u64,
    key: &'static str,
) -> Result<usize, DecodeError> {
    let n = r.count(n, bytes_per_item)?;
    if n > MAX_LIST_LEN {
        return Err(DecodeError::TooManyItems {
            field: key,
            limit: MAX_LIST_LEN,
        });
    }
    Ok(n)
}

fn wrong(field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::WrongType { field, expected }
}

pub(super) fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(frame);
    let entries = match r.untagged_head()? {
        Head::Map(n) => n,
        _ => return Err(DecodeError::NotAMap),
    };
    let f = Fields::collect(&mut r, entries, 1)?;
    if r.remaining() > 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    let type_name = f
        .opt_text("type")?
        .ok_or(DecodeError::MissingField("type"))?;
    Ok(match type_name {
        "join" => Message::Join(Join {
            sender_id: f.text("senderId")?,
            peer_metadata: f.peer_metadata()?,
            supported_protocol_versions: f.text_list("supportedProtocolVersions")?,
        }),
        "peer" => Message::Peer(Peer {
            sender_id: f.text("senderId")?,
            peer_metadata: f.peer_metadata()?,
            selected_protocol_version: f
                .opt_text("selectedProtocolVersion")?
                .unwrap_or("1")
                .to_owned(),
            target_id: f.lenient_text("targetId")?,
        }),
        "error" => Message::Error(ErrorMessage {
            sender_id: f.opt_string("senderId")?,
            target_id: f.opt_string("targetId")?,
            message: f.text("message")?,
        }),
        "leave" => Message::Leave(Leave {
            sender_id: f.text("senderId")?,
        }),
        "sync" => Message::Sync(f.doc_message()?),
        "request" => Message::Request(f.doc_message()?),
        "doc-unavailable" => Message::DocUnavailable(DocUnavailable {
            sender_id: f.text("senderId")?,
            target_id: f.lenient_text("targetId")?,
            document_id: f.document_id()?,
        }),
        "ephemeral" => Message::Ephemeral(Ephemeral {
            sender_id: f.text("senderId")?,
            target_id: f.lenient_text("targetId")?,
            count: f.number("count")?,
            session_id: f.text("sessionId")?,
            document_id: f.document_id()?,
            data: f.bytes("data")?,
        }),
        "remote-subscription-change" => {
            Message::RemoteSubscriptionChange(RemoteSubscriptionChange {
                sender_id: f.text("senderId")?,
                target_id: f.lenient_text("targetId")?,
                add: f.text_list("add")?,
                remove: f.text_list("remove")?,
            })
        }
        "remote-heads-changed" => Message::RemoteHeadsChanged(RemoteHeadsChanged {
            sender_id: f.text("senderId")?,
            target_id: f.lenient_text("targetId")?,
            document_id: f.document_id()?,
            new_heads: f.new_heads()?,
        }),
        RESYNC_TYPE => Message::Resync(Resync {
            sender_id: f.text("senderId")?,
            target_id: f.lenient_text("targetId")?,
            epoch: f.number("epoch")?,
            reason: f.opt_string("reason")?,
        }),
        STATUS_TYPE => Message::Status(ServerStatus {
            sender_id: f.text("senderId")?,
            target_id: f.lenient_text("targetId")?,
            state: f.text("state")?,
            message: f.opt_string("message")?,
        }),
        other => Message::Unknown(Unknown {
            type_name: other.to_owned(),
            // Whatever else an unknown message holds is its own business.
            sender_id: f.opt_string("senderId").ok().flatten(),
        }),
    })
}
