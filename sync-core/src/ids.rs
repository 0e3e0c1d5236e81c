//! Document ids in automerge-repo's form, derived deterministically per user, kind and course.
//!
//! Every replica (server, each device) must agree on a document's id without asking anyone, or
//! two offline devices would create two different documents for the same course. So ids are
//! never allocated: they are hashes of a per-user secret namespace and the document's role.
//! Because the namespace is secret, nobody can guess another user's ids, which lets the server
//! give an unknown id to whoever writes it first (see ARCHITECTURE.md, "Access").

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a document id's payload: automerge-repo uses a 16-byte UUID.
pub const DOCUMENT_ID_LEN: usize = 16;

/// An automerge-repo document id: 16 bytes, written as bs58check text on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; DOCUMENT_ID_LEN]);

/// Why a string is not a document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not base58, or the 4-byte checksum does not match.
    #[error("not a bs58check string")]
    NotBs58Check,
    /// Valid bs58check, but the payload is not 16 bytes.
    #[error("document id payload must be {DOCUMENT_ID_LEN} bytes, got {0}")]
    WrongLength(usize),
    /// A user namespace must be 16 bytes.
    #[error("user namespace must be {DOCUMENT_ID_LEN} bytes, got {0}")]
    NamespaceLength(usize),
}

impl DocumentId {
    /// Wraps raw id bytes.
    pub const fn from_bytes(bytes: [u8; DOCUMENT_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; DOCUMENT_ID_LEN] {
        &self.0
    }

    /// Parses the bs58check text form. Rejects payloads that are not 16 bytes, which the
    /// JavaScript implementation never produces.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        // A 16-byte payload plus 4 checksum bytes is at most 28 base58 characters; refuse long
        // input before decoding so hostile ids cost nothing.
        if text.is_empty() || text.len() > 40 {
            return Err(IdError::NotBs58Check);
        }
        let payload = bs58::decode(text)
            .with_check(None)
            .into_vec()
            .map_err(|_| IdError::NotBs58Check)?;
        let bytes: [u8; DOCUMENT_ID_LEN] = payload
            .as_slice()
            .try_into()
            .map_err(|_| IdError::WrongLength(payload.len()))?;
        Ok(Self(bytes))
    }

    /// The automerge URL (`automerge:<id>`) that JavaScript clients pass to `repo.find()`.
    pub fn to_url(&self) -> String {
        format!("automerge:{self}")
    }

    /// The id of a user's preferences document.
    pub fn preferences(namespace: &UserNamespace) -> Self {
        derive(&[b"learnsync/doc/v1/preferences", &namespace.0])
    }

    /// The id of a user's learning index document.
    pub fn learning(namespace: &UserNamespace) -> Self {
        derive(&[b"learnsync/doc/v1/learning", &namespace.0])
    }

    /// The id of a user's progress document for one course, derived from the user's learning
    /// index id so that a device that knows its learning id can derive it offline.
    pub fn course(learning: &DocumentId, course_id: &str) -> Self {
        derive(&[
            b"learnsync/doc/v1/course",
            &learning.0,
            course_id.as_bytes(),
        ])
    }
}

fn derive(parts: &[&[u8]]) -> DocumentId {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix every part so that ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; DOCUMENT_ID_LEN];
    bytes.copy_from_slice(&digest[..DOCUMENT_ID_LEN]);
    DocumentId(bytes)
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A user's secret 16-byte namespace (`users.doc_seed`), from which the ids of the user's
/// preferences and learning documents are derived. Only the server knows it; devices learn the
/// resulting ids from `GET /api/sync/documents`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserNamespace([u8; DOCUMENT_ID_LEN]);

impl UserNamespace {
    /// Wraps 16 random bytes (the caller supplies the randomness).
    pub const fn from_bytes(bytes: [u8; DOCUMENT_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a namespace stored as a byte column.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        let bytes: [u8; DOCUMENT_ID_LEN] = bytes
            .try_into()
            .map_err(|_| IdError::NamespaceLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// The raw bytes, for storage.
    pub const fn as_bytes(&self) -> &[u8; DOCUMENT_ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for UserNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secret: never print it.
        f.write_str("UserNamespace(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_test_vectors() {
        let bytes: [u8; 16] = hex::decode("00112233445566778899aabbccddeeff")
            .unwrap()
            .try_into()
            .unwrap();
        let id = DocumentId::from_bytes(bytes);
        assert_eq!(id.to_string(), "148vjpuxYXixb8DcbaWyeGv2q3u");
        assert_eq!(id.to_url(), "automerge:148vjpuxYXixb8DcbaWyeGv2q3u");
        assert_eq!(
            DocumentId::parse("148vjpuxYXixb8DcbaWyeGv2q3u").unwrap(),
            id
        );

        let other = DocumentId::parse("2mtAaaMKcNDRCpUHKJUBiwqqoHF4").unwrap();
        assert_eq!(
            hex::encode(other.as_bytes()),
            "7f52d0a8b8b04343bb17b1549fea8ced"
        );
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(DocumentId::parse(""), Err(IdError::NotBs58Check));
        // One character changed: checksum fails.
        assert_eq!(
            DocumentId::parse("148vjpuxYXixb8DcbaWyeGv2q3v"),
            Err(IdError::NotBs58Check)
        );
        assert_eq!(DocumentId::parse("0OIl"), Err(IdError::NotBs58Check));
        let short = bs58::encode([1u8, 2, 3]).with_check().into_string();
        assert_eq!(DocumentId::parse(&short), Err(IdError::WrongLength(3)));
        assert_eq!(
            DocumentId::parse(&"1".repeat(100)),
            Err(IdError::NotBs58Check)
        );
    }

    #[test]
    fn derivation_is_deterministic_and_distinct() {
        let ns = UserNamespace::from_bytes([7; 16]);
        let other = UserNamespace::from_bytes([8; 16]);
        let learning = DocumentId::learning(&ns);
        assert_eq!(learning, DocumentId::learning(&ns));
        assert_ne!(learning, DocumentId::preferences(&ns));
        assert_ne!(learning, DocumentId::learning(&other));
        let c1 = DocumentId::course(&learning, "1");
        assert_eq!(c1, DocumentId::course(&learning, "1"));
        assert_ne!(c1, DocumentId::course(&learning, "2"));
        assert_ne!(c1, DocumentId::course(&DocumentId::learning(&other), "1"));
        // Round trip through text.
        assert_eq!(DocumentId::parse(&c1.to_string()).unwrap(), c1);
    }
}
