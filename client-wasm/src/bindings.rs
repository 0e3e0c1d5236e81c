//! The functions JavaScript calls, under their JavaScript names.
//!
//! Each export is a thin wrapper over a native function of this crate: arguments arrive as JS
//! strings, a [`ClientError`](crate::ClientError) leaves as a thrown `Error` (through
//! [`JsError`]), and nothing panics. Keep logic out of here so that it stays testable natively;
//! these wrappers are exercised from Node and Chromium by `tests/tests/wasm_smoke.rs`.

use wasm_bindgen::prelude::*;

use crate::ids;

/// `courseDocumentId(learningDocumentId, courseId)`: the id of the user's progress document for
/// a course, derived offline from the learning index id. Throws an `Error` when
/// `learningDocumentId` is not a document id or `courseId` is empty.
#[wasm_bindgen(js_name = courseDocumentId)]
pub fn course_document_id(learning_document_id: &str, course_id: &str) -> Result<String, JsError> {
    Ok(ids::course_document_id(learning_document_id, course_id)?)
}

/// `isValidDocumentId(text)`: whether `text` is bs58check of exactly 16 bytes. Never throws.
#[wasm_bindgen(js_name = isValidDocumentId)]
pub fn is_valid_document_id(text: &str) -> bool {
    ids::is_valid_document_id(text)
}
