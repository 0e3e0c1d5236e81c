//! The functions JavaScript calls, under their JavaScript names.
//!
//! Each export is a thin wrapper over a native function of this crate: arguments arrive as JS
//! strings, a [`ClientError`](crate::ClientError) leaves as a thrown `Error` (through
//! [`JsError`]), and nothing panics. Keep logic out of here so that it stays testable natively;
//! these wrappers are exercised from Node and Chromium by `tests/tests/wasm_smoke.rs`.

use wasm_bindgen::prelude::*;

use crate::ids;
use crate::session::{Output, Session};

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

/// `reconnectDelay(attempt, random)`: milliseconds to wait before reconnect attempt `attempt`
/// (0-based), exponential up to 30 s with full jitter from `random` (any u32 the page draws).
/// In Rust so that every shell backs off the same way.
#[wasm_bindgen(js_name = reconnectDelay)]
pub fn reconnect_delay(attempt: u32, random: u32) -> f64 {
    crate::session::reconnect_delay(attempt, random) as f64
}

/// `new WasmClient(peerId, storageId, actorHex)`: the device session. The JavaScript glue
/// (`client-wasm/js/learnsync.js`) owns the socket, timers and storage; this object owns the
/// documents and the protocol. Reads return JSON text (`JSON.parse` it); time comes in as epoch
/// milliseconds because the wasm side has no clock (`sync-core` is sans-IO).
#[wasm_bindgen]
pub struct WasmClient {
    inner: Session,
}

fn js_err(e: crate::ClientError) -> JsError {
    JsError::new(&e.to_string())
}

fn now_ms(now: f64) -> i64 {
    if now.is_finite() { now as i64 } else { 0 }
}

fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

#[wasm_bindgen]
impl WasmClient {
    /// Throws when `actorHex` is not 32 hex digits or `peerId` is empty.
    #[wasm_bindgen(constructor)]
    pub fn new(
        peer_id: &str,
        storage_id: Option<String>,
        actor_hex: &str,
    ) -> Result<WasmClient, JsError> {
        Ok(Self {
            inner: Session::new(peer_id, storage_id, actor_hex).map_err(js_err)?,
        })
    }

    /// `setDocuments(preferencesId, learningId)`.
    #[wasm_bindgen(js_name = setDocuments)]
    pub fn set_documents(&mut self, preferences: &str, learning: &str) -> Result<(), JsError> {
        self.inner
            .set_documents(preferences, learning)
            .map_err(js_err)
    }

    /// `restore(docId, bytes)`: throws on corrupt bytes (nothing changed).
    pub fn restore(&mut self, doc: &str, bytes: &[u8]) -> Result<(), JsError> {
        self.inner.restore(doc, bytes).map_err(js_err)
    }

    /// `save(docId)`: the bytes to store, or `undefined`.
    pub fn save(&mut self, doc: &str) -> Result<Option<Vec<u8>>, JsError> {
        self.inner.save(doc).map_err(js_err)
    }

    /// `documents()`: every document id held.
    pub fn documents(&self) -> Vec<String> {
        self.inner.documents()
    }

    /// `pollOutput()`: `{ type: "send", bytes }`, `{ type: "persist", doc }`,
    /// `{ type: "event", event }` or `undefined` when there is nothing left.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> JsValue {
        let Some(out) = self.inner.poll_output() else {
            return JsValue::UNDEFINED;
        };
        let obj = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = js_sys::Reflect::set(&obj, &JsValue::from_str(k), v);
        };
        match out {
            Output::Send(bytes) => {
                set("type", &JsValue::from_str("send"));
                set("bytes", &js_sys::Uint8Array::from(bytes.as_slice()).into());
            }
            Output::Persist(doc) => {
                set("type", &JsValue::from_str("persist"));
                set("doc", &JsValue::from_str(&doc));
            }
            Output::Event(event) => {
                set("type", &JsValue::from_str("event"));
                set("event", &JsValue::from_str(&json_text(&event)));
            }
        }
        obj.into()
    }

    /// `status()`: `"offline" | "connecting" | "syncing" | "synced"`.
    pub fn status(&self) -> String {
        self.inner.status().to_string()
    }

    /// `epoch()`: the forced-sync epoch caught up with.
    pub fn epoch(&self) -> f64 {
        self.inner.epoch() as f64
    }

    /// `setEpoch(epoch)`.
    #[wasm_bindgen(js_name = setEpoch)]
    pub fn set_epoch(&mut self, epoch: f64) {
        if epoch.is_finite() && epoch >= 0.0 {
            self.inner.set_epoch(epoch as u64);
        }
    }

    /// `unsynced()`: JSON text of `[{ doc, heads, serverHeads }]`, the documents the server is
    /// not known to hold entirely yet.
    pub fn unsynced(&mut self) -> String {
        json_text(&self.inner.unsynced())
    }

    /// `preferences()`: JSON text of every preference.
    pub fn preferences(&self) -> Result<String, JsError> {
        self.inner
            .preferences()
            .map(|v| json_text(&v))
            .map_err(js_err)
    }

    /// `enrollments()`: JSON text of `[{ courseId, status, enrolledAt, progress }]`.
    pub fn enrollments(&self) -> Result<String, JsError> {
        self.inner
            .enrollments()
            .map(|v| json_text(&v))
            .map_err(js_err)
    }

    /// `setPreference(key, valueJson, now)`: `valueJson` is JSON text; `true` if it changed.
    #[wasm_bindgen(js_name = setPreference)]
    pub fn set_preference(
        &mut self,
        key: &str,
        value_json: &str,
        now: f64,
    ) -> Result<bool, JsError> {
        let value: serde_json::Value = serde_json::from_str(value_json)
            .map_err(|e| JsError::new(&format!("value is not JSON: {e}")))?;
        self.inner
            .set_preference(key, &value, now_ms(now))
            .map_err(js_err)
    }

    /// `enroll(courseId, now)`.
    pub fn enroll(&mut self, course_id: &str, now: f64) -> Result<bool, JsError> {
        self.inner.enroll(course_id, now_ms(now)).map_err(js_err)
    }

    /// `unenroll(courseId, now)`.
    pub fn unenroll(&mut self, course_id: &str, now: f64) -> Result<bool, JsError> {
        self.inner.unenroll(course_id, now_ms(now)).map_err(js_err)
    }

    /// `completeLesson(courseId, lessonId, now)`.
    #[wasm_bindgen(js_name = completeLesson)]
    pub fn complete_lesson(
        &mut self,
        course_id: &str,
        lesson_id: &str,
        now: f64,
    ) -> Result<bool, JsError> {
        self.inner
            .complete_lesson(course_id, lesson_id, now_ms(now))
            .map_err(js_err)
    }

    /// `setProgress(courseId, percent, now)`: the progress the course has afterwards.
    #[wasm_bindgen(js_name = setProgress)]
    pub fn set_progress(
        &mut self,
        course_id: &str,
        percent: f64,
        now: f64,
    ) -> Result<f64, JsError> {
        if !percent.is_finite() {
            return Err(JsError::new("percent must be a finite number"));
        }
        self.inner
            .set_progress(course_id, percent, now_ms(now))
            .map_err(js_err)
    }

    /// `addTime(courseId, seconds, now)`.
    #[wasm_bindgen(js_name = addTime)]
    pub fn add_time(&mut self, course_id: &str, seconds: f64, now: f64) -> Result<(), JsError> {
        if !seconds.is_finite() {
            return Err(JsError::new("seconds must be a finite number"));
        }
        self.inner
            .add_time(course_id, seconds as i64, now_ms(now))
            .map_err(js_err)
    }

    /// `restart(courseId, now)`: the new attempt's number.
    pub fn restart(&mut self, course_id: &str, now: f64) -> Result<u32, JsError> {
        self.inner.restart(course_id, now_ms(now)).map_err(js_err)
    }

    /// `importLegacy(dumpJson, now)`: JSON text of the per-key report rows. Idempotent.
    #[wasm_bindgen(js_name = importLegacy)]
    pub fn import_legacy(&mut self, dump: &str, now: f64) -> Result<String, JsError> {
        self.inner
            .import_legacy(dump, now_ms(now))
            .map(|v| json_text(&v))
            .map_err(js_err)
    }

    /// `handleConnecting()`.
    #[wasm_bindgen(js_name = handleConnecting)]
    pub fn handle_connecting(&mut self) {
        self.inner.handle_connecting();
    }

    /// `handleConnected()`: the socket opened (queues `join`).
    #[wasm_bindgen(js_name = handleConnected)]
    pub fn handle_connected(&mut self) {
        self.inner.handle_connected();
    }

    /// `handleDisconnected()`.
    #[wasm_bindgen(js_name = handleDisconnected)]
    pub fn handle_disconnected(&mut self) {
        self.inner.handle_disconnected();
    }

    /// `handleFrame(bytes)`: throws (harmlessly) on an undecodable frame, which is ignored.
    #[wasm_bindgen(js_name = handleFrame)]
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<(), JsError> {
        self.inner.handle_frame(frame).map_err(js_err)
    }
}
