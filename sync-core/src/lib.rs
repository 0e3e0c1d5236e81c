//! LearnSync's sans-IO heart, shared by the server and the browser client.
//!
//! Everything that decides something lives here; the callers only move bytes:
//! - [`ids`]: document ids, derived per user, kind and course so replicas agree offline.
//! - [`docs`]: the documents, their deterministic genesis, merge rules and projection to rows.
//! - [`hub`]: the server side of sync as a state machine: inputs in, outputs (frames, loads,
//!   stores) out.
//!
//! Nothing in this crate reads the clock, draws randomness, opens a socket or touches a
//! database: time and random bytes are parameters, I/O is described by returned values.
#![warn(missing_docs)]

pub mod docs;
pub mod hub;
pub mod ids;

pub use ids::{DocumentId, IdError, UserNamespace};
