//! The LearnSync benchmark harness: a load generator that speaks the automerge-repo protocol
//! over real WebSockets (each device runs `sync_core::client`), the servers under test as
//! separate processes (LearnSync and the official JavaScript sync server), and the scenarios
//! of GOALS.md (P1–P8) with correctness checks. See `bench/README.md`.

pub mod fleet;
pub mod report;
pub mod scenarios;
pub mod target;
