//! Support for LearnSync's end-to-end tests: real servers on random ports, fresh databases per
//! test, WebSocket and browser drivers. The tests themselves live in `tests/tests/`.

pub mod app;
pub mod browser;
pub mod db;
pub mod device;
pub mod faults;
pub mod js;
pub mod pg_cluster;
pub mod process;
pub mod wasm_pkg;
