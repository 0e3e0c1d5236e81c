//! The `hub_sync` fuzz harness on stable Rust, in the test suite: arbitrary bytes as automerge
//! sync messages from a connected peer (see `fuzz/harness/hub_sync.rs` for what must hold).
//!
//! Runs the committed seeds (`fuzz/seeds/hub_sync/`), whatever a cargo-fuzz campaign left in
//! `fuzz/corpus/hub_sync/`, valid sync messages carrying changes, and random inputs: pure noise
//! and valid messages with bytes flipped, cut or spliced. `PROPTEST_CASES=100000` runs more.
//! `HUB_SYNC_WRITE_SEEDS=1` rewrites the seed files from [`valid_messages`].

use std::path::Path;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use proptest::prelude::*;
use sync_core::docs::{self, DocSpec};

#[path = "../fuzz/harness/hub_sync.rs"]
mod harness;

/// Frames one message for the harness: `[selector, len_hi, len_lo, bytes…]`.
fn frame(selector: u8, data: &[u8]) -> Vec<u8> {
    let len = data.len().min(0xffff);
    let mut out = vec![selector, (len >> 8) as u8, len as u8];
    out.extend_from_slice(&data[..len]);
    out
}

/// Valid automerge sync messages a peer could send: an empty hello, one with a change on a
/// fresh document, one with a change on top of the preferences genesis (what a device sends),
/// and one with many changes.
fn valid_messages() -> Vec<Vec<u8>> {
    let message = |doc: &mut AutoCommit| {
        let mut state = automerge::sync::State::new();
        doc.sync()
            .generate_sync_message(&mut state)
            .map(|m| m.encode())
            .unwrap_or_default()
    };
    let mut out = vec![message(&mut AutoCommit::new())];
    let mut fresh = AutoCommit::new();
    fresh.put(ROOT, "evil", "x").unwrap();
    out.push(message(&mut fresh));
    let mut prefs =
        docs::genesis(&DocSpec::Preferences).with_actor(automerge::ActorId::from([5u8; 16]));
    sync_core::docs::preferences::set(&mut prefs, "theme", &serde_json::json!("dark"), 1).unwrap();
    prefs.commit();
    out.push(message(&mut prefs));
    for i in 0..20 {
        sync_core::docs::preferences::set(&mut prefs, &format!("k{i}"), &serde_json::json!(i), 2)
            .unwrap();
        prefs.commit();
    }
    out.push(message(&mut prefs));
    out
}

/// Seed inputs: each valid message to Mallory's own document, to Anna's, as a request and as a
/// sync, and all of them in a row.
fn seeds() -> Vec<Vec<u8>> {
    let messages = valid_messages();
    let mut seeds = Vec::new();
    for m in &messages {
        for selector in [0u8, 1, 2, 0x80, 0x81, 0x40] {
            seeds.push(frame(selector, m));
        }
    }
    seeds.push(messages.iter().flat_map(|m| frame(0, m)).collect());
    seeds
}

fn dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(name)
        .join("hub_sync")
}

#[test]
fn seeds_and_corpus() {
    let seed_dir = dir("seeds");
    if std::env::var_os("HUB_SYNC_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&seed_dir).unwrap();
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(seed_dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
    for s in seeds() {
        harness::run(&s);
    }
    let mut files = 0;
    for d in [seed_dir, dir("corpus"), dir("artifacts")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            harness::run(&bytes);
            files += 1;
        }
    }
    assert!(files > 0, "no seed files in fuzz/seeds/hub_sync");
}

#[test]
fn regressions() {
    // Inputs the campaigns found worth keeping (none crashed so far): empty and truncated frames.
    for input in [
        &b""[..],
        &[0],
        &[0, 0xff, 0xff],
        &[1, 0, 1, 0x42],
        &[0x80, 0, 0],
    ] {
        harness::run(input);
    }
}

proptest! {
    #[test]
    fn random_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        harness::run(&input);
    }

    #[test]
    fn mutated_valid_messages(
        which in 0usize..4,
        selector in any::<u8>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        splice in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut m = valid_messages()[which].clone();
        for (at, byte) in flips {
            if !m.is_empty() {
                let i = at % m.len();
                m[i] ^= byte;
            }
        }
        if !m.is_empty() {
            let at = cut % (m.len() + 1);
            m.truncate(at.max(m.len() / 2));
            m.splice(at.min(m.len())..at.min(m.len()), splice);
        }
        harness::run(&frame(selector, &m));
    }
}
