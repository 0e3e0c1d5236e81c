//! LearnSync's sans-IO heart, shared by the server and the browser client.
//!
//! Everything that decides something lives here; the callers only move bytes:
//! - [`ids`]: document ids, derived per user, kind and course so replicas agree offline.
//! - [`docs`]: the documents, their deterministic genesis, merge rules and projection to rows.
//! - [`wire`]: the automerge-repo CBOR codec, byte-compatible with the JavaScript implementation.
//! - [`hub`]: the server side of sync as a state machine: inputs in, outputs (frames, loads,
//!   stores) out.
//! - [`session`]: one server connection: handshake, sender checks, rate limits.
//! - [`sync_receive`]: receiving an automerge sync message without walking the whole history.
//! - [`client`]: the device side: documents, sync with the server, events for the app.
//! - [`import`]: the old app's `localStorage` dumps: parsed, then applied to a user's documents.
//!
//! Nothing in this crate reads the clock, draws randomness, opens a socket or touches a
//! database: time and random bytes are parameters, I/O is described by returned values.
#![warn(missing_docs)]

pub mod client;
pub mod docs;
pub mod hub;
pub mod ids;
pub mod import;
pub mod session;
pub mod sync_receive;
pub mod wire;

pub use ids::{DocumentId, IdError, UserNamespace};
