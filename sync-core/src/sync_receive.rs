//! Receiving an automerge sync message at a cost that does not grow with the document's history.
//!
//! automerge 0.12's `SyncDoc::receive_sync_message` trims the peer's `sent_hashes` (what we sent
//! and they have not acknowledged) by walking *every* ancestor of the heads the peer announced,
//! with a B-tree insert per change, even when there is nothing to trim. On the server that walk
//! was 58% of the CPU of a P2 run at 10,000 changes/s (documents of a few thousand changes;
//! `BENCHMARKS.md`), and it grows with every change a document ever had. [`receive_sync_message`]
//! has the same effect on the document and on the sync state, but answers "is this change an
//! ancestor of their heads" with automerge's cached vector clocks (`get_changes_meta`), which
//! cost in proportion to what the peer has not seen, and skips the question entirely when
//! nothing is waiting for an acknowledgement.
//!
//! It follows automerge 0.12.0's `receive_sync_message_inner` step by step; the property test
//! below drives both over random histories and compares documents and states, so an automerge
//! upgrade that changes the upstream steps fails there first.

use std::collections::{BTreeSet, HashSet};

use automerge::sync::{self, Capability, MessageFlags};
use automerge::{AutoCommit, AutomergeError, ChangeHash};

/// Applies `message` from a peer to `doc` and updates that peer's sync `state`: what
/// `doc.sync().receive_sync_message(state, message)` does, without its walk over the whole
/// history.
pub fn receive_sync_message(
    doc: &mut AutoCommit,
    state: &mut sync::State,
    message: sync::Message,
) -> Result<(), AutomergeError> {
    state.in_flight = false;
    let before = doc.get_heads();
    let sync::Message {
        heads,
        changes,
        need,
        have,
        flags,
        ..
    } = message;

    if let Some(flags) = flags {
        // A peer that sends flags speaks the V2 format (they came with it).
        let mut capabilities = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }

    let no_changes = changes.is_empty();
    if !no_changes && !state.read_only {
        let bytes: Vec<u8> = changes.iter().flatten().copied().collect();
        doc.load_incremental(&bytes)?;
        state.shared_heads = advance_heads(&before, &doc.get_heads(), &state.shared_heads);
    }

    let known: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| has_change(doc, h))
        .copied()
        .collect();
    forget_acknowledged(doc, &known, &mut state.sent_hashes);

    if no_changes && heads == before {
        state.last_sent_heads.clone_from(&heads);
    }

    if known.len() == heads.len() {
        state.shared_heads.clone_from(&heads);
        // A peer that announces no heads has lost everything: sync from scratch.
        if heads.is_empty() {
            state.last_sent_heads = Vec::new();
            state.sent_hashes = BTreeSet::new();
        }
    } else {
        let mut shared: Vec<ChangeHash> =
            state.shared_heads.iter().chain(&known).copied().collect();
        shared.sort();
        shared.dedup();
        state.shared_heads = shared;
    }

    state.their_have = Some(have);
    state.their_heads = Some(heads);
    state.their_need = Some(need);
    Ok(())
}

/// Whether `doc` holds the change `hash` (applied, not waiting for its dependencies).
fn has_change(doc: &mut AutoCommit, hash: &ChangeHash) -> bool {
    doc.get_change_meta_by_hash(hash).is_some()
}

/// Removes from `sent` every change that `heads` (all known to `doc`) include: the peer has it.
fn forget_acknowledged(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    sent: &mut BTreeSet<ChangeHash>,
) {
    if sent.is_empty() || heads.is_empty() {
        return;
    }
    // The changes *not* included by `heads`: found through automerge's vector clocks, so the
    // cost follows what the peer lacks, not the length of the history.
    let unseen: HashSet<ChangeHash> = doc
        .get_changes_meta(heads)
        .into_iter()
        .map(|meta| meta.hash)
        .collect();
    sent.retain(|hash| unseen.contains(hash));
}

/// The heads both sides now share after applying the peer's changes: our new heads that the
/// changes created, plus the shared heads that are still heads.
fn advance_heads(
    old_heads: &[ChangeHash],
    new_heads: &[ChangeHash],
    old_shared: &[ChangeHash],
) -> Vec<ChangeHash> {
    let old: HashSet<&ChangeHash> = old_heads.iter().collect();
    let new: HashSet<&ChangeHash> = new_heads.iter().collect();
    let mut advanced: Vec<ChangeHash> = new_heads
        .iter()
        .filter(|h| !old.contains(h))
        .chain(old_shared.iter().filter(|h| new.contains(h)))
        .copied()
        .collect();
    advanced.sort();
    advanced.dedup();
    advanced
}

#[cfg(test)]
mod tests {
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};
    use proptest::prelude::*;

    use super::*;

    /// One step of a random exchange between a server replica and two devices.
    #[derive(Debug, Clone)]
    enum Step {
        /// Device `d` writes `n` changes to key `k`.
        Edit { d: usize, k: u8, n: u8 },
        /// Device `d` and the server exchange one message each way (if any is due).
        Exchange { d: usize, drop_reply: bool },
        /// Device `d` loses its sync state (a reconnect).
        Reset { d: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2usize, 0..4u8, 1..4u8).prop_map(|(d, k, n)| Step::Edit { d, k, n }),
            (0..2usize, any::<bool>()).prop_map(|(d, drop_reply)| Step::Exchange { d, drop_reply }),
            (0..2usize).prop_map(|d| Step::Reset { d }),
        ]
    }

    /// A server replica whose receive is either ours or automerge's, with its two peers'
    /// states.
    struct Replica {
        doc: AutoCommit,
        states: [sync::State; 2],
    }

    /// The server's heads, every message it sent, and its peers' states after `steps`.
    fn run(steps: &[Step], ours: bool) -> (Vec<ChangeHash>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut server = Replica {
            doc: AutoCommit::new().with_actor(ActorId::from([9u8; 16])),
            states: [sync::State::new(), sync::State::new()],
        };
        let mut devices: Vec<(AutoCommit, sync::State)> = (0..2u8)
            .map(|i| {
                (
                    AutoCommit::new().with_actor(ActorId::from([i + 1; 16])),
                    sync::State::new(),
                )
            })
            .collect();
        let mut seen = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Edit { d, k, n } => {
                    for j in 0..*n {
                        let doc = &mut devices[*d].0;
                        doc.put(ROOT, format!("k{k}"), (i * 10 + j as usize) as i64)
                            .unwrap();
                        doc.commit();
                    }
                }
                Step::Exchange { d, drop_reply } => {
                    let (doc, state) = &mut devices[*d];
                    if let Some(m) = doc.sync().generate_sync_message(state) {
                        // Through the wire format, as the server receives it.
                        let m = sync::Message::decode(&m.encode()).unwrap();
                        let st = &mut server.states[*d];
                        if ours {
                            receive_sync_message(&mut server.doc, st, m).unwrap();
                        } else {
                            server.doc.sync().receive_sync_message(st, m).unwrap();
                        }
                    }
                    if let Some(m) = server
                        .doc
                        .sync()
                        .generate_sync_message(&mut server.states[*d])
                    {
                        let bytes = m.encode();
                        seen.push(bytes.clone());
                        if !drop_reply {
                            let m = sync::Message::decode(&bytes).unwrap();
                            doc.sync().receive_sync_message(state, m).unwrap();
                        }
                    }
                }
                Step::Reset { d } => {
                    devices[*d].1 = sync::State::new();
                    server.states[*d] = sync::State::new();
                }
            }
        }
        let states = server.states.iter().map(state_fields).collect();
        (server.doc.get_heads(), seen, states)
    }

    /// Every field of a sync state that receiving touches, as bytes to compare.
    fn state_fields(s: &sync::State) -> Vec<u8> {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}",
            s.shared_heads,
            s.last_sent_heads,
            s.their_heads,
            s.their_need,
            s.their_have.as_ref().map(|h| h.len()),
            s.sent_hashes,
            s.in_flight,
            s.their_capabilities,
            s.peer_read_only,
        )
        .into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Ours and automerge's receive leave the same document, the same sync states and send
        /// the same messages, whatever the exchange (lost replies, reconnects, concurrent edits).
        #[test]
        fn same_effect_as_automerge(steps in proptest::collection::vec(step(), 1..60)) {
            prop_assert_eq!(run(&steps, true), run(&steps, false));
        }
    }

    /// The point of it: a long history no longer makes each receive slower. Not a timing test:
    /// it checks that acknowledged changes are trimmed on a history of thousands of changes.
    #[test]
    fn acknowledged_changes_are_forgotten_on_a_long_history() {
        let mut server = AutoCommit::new().with_actor(ActorId::from([9u8; 16]));
        for i in 0..3_000i64 {
            server.put(ROOT, "k", i).unwrap();
            server.commit();
        }
        let mut device = AutoCommit::new().with_actor(ActorId::from([1u8; 16]));
        let (mut ss, mut ds) = (sync::State::new(), sync::State::new());
        for _ in 0..10 {
            if let Some(m) = server.sync().generate_sync_message(&mut ss) {
                device.sync().receive_sync_message(&mut ds, m).unwrap();
            }
            if let Some(m) = device.sync().generate_sync_message(&mut ds) {
                receive_sync_message(&mut server, &mut ss, m).unwrap();
            }
        }
        assert_eq!(device.get_heads(), server.get_heads());
        assert!(
            ss.sent_hashes.is_empty(),
            "the device acknowledged everything"
        );
        assert_eq!(ss.shared_heads, server.get_heads());
    }
}
