//! Document ids as the browser sees them: text in, text out.
//!
//! A device learns its learning index id from the server once (`GET /api/sync/documents`) and
//! derives every course document id from it offline, so that two offline devices enrolling in
//! the same course open the same document (see `docs/documents.md`). The derivation itself is
//! `sync_core::ids::DocumentId::course`; this module only parses and formats.

use sync_core::ids::DocumentId;

use crate::ClientError;

/// The id of the progress document for `course_id`, derived from the user's learning index id
/// (bs58check text, as the server hands it out).
pub fn course_document_id(
    learning_document_id: &str,
    course_id: &str,
) -> Result<String, ClientError> {
    let learning = DocumentId::parse(learning_document_id).map_err(|source| {
        ClientError::InvalidDocumentId {
            param: "learningDocumentId",
            source,
        }
    })?;
    if course_id.is_empty() {
        return Err(ClientError::EmptyCourseId);
    }
    Ok(DocumentId::course(&learning, course_id).to_string())
}

/// Whether `text` is a document id LearnSync accepts: bs58check of exactly 16 bytes. Stricter
/// than automerge-repo's own `isValidDocumentId`, which does not check the length.
pub fn is_valid_document_id(text: &str) -> bool {
    DocumentId::parse(text).is_ok()
}

#[cfg(test)]
mod tests {
    use sync_core::ids::{IdError, UserNamespace};

    use super::*;

    fn learning() -> DocumentId {
        DocumentId::learning(&UserNamespace::from_bytes([7; 16]))
    }

    #[test]
    fn course_id_matches_sync_core_derivation() {
        let learning = learning();
        for course in ["rust-101", "c1", "café ☕ β"] {
            let derived = course_document_id(&learning.to_string(), course).unwrap();
            assert_eq!(derived, DocumentId::course(&learning, course).to_string());
            assert!(is_valid_document_id(&derived));
        }
        let a = course_document_id(&learning.to_string(), "a").unwrap();
        let b = course_document_id(&learning.to_string(), "b").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn known_id_from_documents_md() {
        let id = DocumentId::from_bytes(
            *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff",
        );
        assert_eq!(id.to_string(), "148vjpuxYXixb8DcbaWyeGv2q3u");
        assert!(is_valid_document_id("148vjpuxYXixb8DcbaWyeGv2q3u"));
    }

    #[test]
    fn refuses_what_is_not_a_document_id() {
        let valid = learning().to_string();
        // Same text with one character changed: the checksum no longer matches.
        let mut corrupted = valid.clone().into_bytes();
        corrupted[3] = if corrupted[3] == b'A' { b'B' } else { b'A' };
        let corrupted = String::from_utf8(corrupted).unwrap();
        // Valid bs58check, but of 3 bytes.
        let short = bs58_check(&[1, 2, 3]);

        for (text, why) in [
            ("", IdError::NotBs58Check),
            ("not base58 0OIl", IdError::NotBs58Check),
            (corrupted.as_str(), IdError::NotBs58Check),
            (short.as_str(), IdError::WrongLength(3)),
        ] {
            assert!(!is_valid_document_id(text), "{text:?} accepted");
            assert_eq!(
                course_document_id(text, "rust-101"),
                Err(ClientError::InvalidDocumentId {
                    param: "learningDocumentId",
                    source: why,
                }),
                "{text:?}"
            );
        }
        let err = course_document_id(&corrupted, "c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "learningDocumentId is not a document id: not a bs58check string"
        );
    }

    #[test]
    fn refuses_an_empty_course_id() {
        let err = course_document_id(&learning().to_string(), "").unwrap_err();
        assert_eq!(err, ClientError::EmptyCourseId);
        assert_eq!(err.to_string(), "courseId must not be empty");
    }

    fn bs58_check(payload: &[u8]) -> String {
        bs58::encode(payload).with_check().into_string()
    }
}
