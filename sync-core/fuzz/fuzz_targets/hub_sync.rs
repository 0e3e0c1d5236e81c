//! Arbitrary bytes as automerge sync messages from a connected peer, fed to the server's hub:
//! no panic, nothing stored or revealed for another user's document, nothing corrupt stored,
//! the honest peer unaffected. The checks live in `harness/hub_sync.rs`, shared with the stable
//! test `sync-core/tests/hub_fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/hub_sync.rs"]
mod harness;

fuzz_target!(|input: &[u8]| {
    harness::run(input);
});
