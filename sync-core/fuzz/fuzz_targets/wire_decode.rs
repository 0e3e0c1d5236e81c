//! Any bytes a peer can send as a frame: decoding never panics, and whatever decodes survives
//! an encode/decode round trip unchanged (and encodes to the same bytes again).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::wire;

fuzz_target!(|frame: &[u8]| {
    let Ok(message) = wire::decode(frame) else {
        return;
    };
    let encoded = wire::encode(&message);
    let again = wire::decode(&encoded)
        .unwrap_or_else(|e| panic!("{message:?} encodes to a frame that does not decode: {e}"));
    assert_eq!(again, message);
    assert_eq!(wire::encode(&again), encoded);
});
