//! LearnSync's browser client: the part of the client that runs as WebAssembly in the page.
//!
//! Everything that decides anything — document ids, merge rules, the sync session — lives in
//! `sync-core`; this crate only exposes it to JavaScript through `wasm-bindgen` and, later,
//! carries out the session's outputs (WebSocket frames, `localStorage` writes).
//!
//! The crate is split so that its logic stays testable natively:
//! - [`ids`] — plain Rust over `sync_core::ids`, returning [`ClientError`]; unit-tested with
//!   `cargo nextest run -p client-wasm`.
//! - [`bindings`] — the `wasm-bindgen` exports, one thin wrapper per function, turning a
//!   [`ClientError`] into a thrown JavaScript `Error`. Nothing here may panic: with
//!   `panic = "abort"` a panic would kill the whole module, not just the call.
//!
//! Build the JavaScript packages with `scripts/build-wasm.sh` (see `client-wasm/README.md`):
//!
//! ```js
//! import init, { courseDocumentId, isValidDocumentId } from "./pkg/client_wasm.js";
//! await init();
//! const courseDoc = courseDocumentId(learningDocumentId, "rust-101");
//! ```
#![warn(missing_docs)]

pub mod bindings;
pub mod ids;
pub mod session;

pub use sync_core::ids::IdError;

/// Why a call from JavaScript was refused. Thrown to JavaScript as an `Error` whose message is
/// this type's `Display` text, so the texts name the JavaScript parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A parameter that must be an automerge-repo document id is not one.
    #[error("{param} is not a document id: {source}")]
    InvalidDocumentId {
        /// The JavaScript parameter name (`learningDocumentId`, …).
        param: &'static str,
        /// What is wrong with it.
        source: IdError,
    },
    /// A course id was empty: no course has one, so the caller has a bug.
    #[error("courseId must not be empty")]
    EmptyCourseId,
    /// A parameter is malformed (the text says which and how).
    #[error("{0}")]
    Invalid(String),
    /// The session refused an operation (not enrolled, document ids unknown, corrupt bytes…).
    #[error("{0}")]
    Session(String),
    /// The legacy dump could not be read.
    #[error("legacy import: {0}")]
    Import(String),
}
