// The `hub_sync` fuzz harness, shared by the cargo-fuzz target
// (`fuzz_targets/hub_sync.rs`) and the stable test over seeds and random inputs
// (`sync-core/tests/hub_fuzz.rs`), so both check exactly the same thing.
//
// What it drives: a `Hub` as the server runs it, with an in-memory storage that keeps chunks the
// way the database does. Two users: Mallory (whose connection sends the fuzzed bytes) and Anna
// (whose connection is honest). The input is a sequence of `sync`/`request` messages from
// Mallory, each with arbitrary bytes as the automerge sync message, for Mallory's preferences
// document, Anna's preferences document, or an unknown id.
//
// What must hold, whatever the bytes:
// - the hub never panics;
// - nothing is ever stored for Anna's document, and nothing is sent to Mallory about it except
//   `doc-unavailable`;
// - every write the hub asks to store loads (`load_incremental`) on top of what is stored, with
//   no missing dependency: storage never holds a corrupt document;
// - a connection the hub closes is closed (disconnected), and the honest connection keeps
//   working: a request from Anna for her own document is answered afterwards.

use std::collections::HashMap;

use automerge::AutoCommit;
use automerge::sync::SyncDoc;
use sync_core::DocumentId;
use sync_core::UserNamespace;
use sync_core::docs::{self, DocKind, DocSpec};
use sync_core::hub::{
    ConnId, DocMeta, Hub, HubConfig, HubMessage, Output, OwnerOrAdmin, PeerInfo, StoredDoc,
};

const MALLORY: ConnId = ConnId(1);
const ANNA: ConnId = ConnId(2);

struct Storage {
    docs: HashMap<DocumentId, (DocMeta, Vec<Vec<u8>>)>,
}

impl Storage {
    fn loaded(&self, doc: &DocumentId) -> Option<StoredDoc> {
        self.docs.get(doc).map(|(meta, chunks)| StoredDoc {
            meta: meta.clone(),
            chunks: chunks.clone(),
            sync_states: Vec::new(),
        })
    }
}

fn peer(user: &str, ns: UserNamespace) -> PeerInfo {
    PeerInfo {
        user_id: user.into(),
        is_admin: false,
        namespace: Some(ns),
        storage_id: Some(format!("storage-{user}")),
    }
}

fn stored_preferences(owner: &str) -> (DocMeta, Vec<Vec<u8>>) {
    let meta = DocMeta {
        owner: Some(owner.into()),
        kind: Some(DocKind::Preferences),
        course_id: None,
    };
    (meta, vec![docs::genesis(&DocSpec::Preferences).save()])
}

/// Runs the hub until it has nothing more to do, carrying out loads and stores against
/// `storage`; returns what it sent to whom.
fn drive(
    hub: &mut Hub,
    storage: &mut Storage,
    protected: DocumentId,
    closed: &mut Vec<ConnId>,
    now: i64,
) -> Vec<(ConnId, HubMessage)> {
    let mut sent = Vec::new();
    while let Some(output) = hub.poll_output() {
        match output {
            Output::Send { conn, message } => sent.push((conn, message)),
            Output::Close { conn, .. } => {
                if !closed.contains(&conn) {
                    closed.push(conn);
                    hub.handle_disconnect(conn);
                }
            }
            Output::Load { task, doc } => {
                let result = storage.loaded(&doc);
                hub.handle_loaded(task, Ok(result), now);
            }
            Output::Store { task, write } => {
                assert_ne!(
                    write.doc, protected,
                    "the hub stored a write to another user's document"
                );
                let entry = storage
                    .docs
                    .entry(write.doc)
                    .or_insert_with(|| (write.meta.clone(), Vec::new()));
                let mut check = AutoCommit::new();
                for chunk in entry.1.iter().chain(std::iter::once(&write.changes)) {
                    check
                        .load_incremental(chunk)
                        .expect("a stored chunk does not load");
                }
                assert!(
                    check.get_missing_deps(&[]).is_empty(),
                    "the hub stored changes whose dependencies are not stored"
                );
                entry.1.push(write.changes);
                hub.handle_stored(task, Ok(()), now);
            }
            Output::SaveSyncStates(_)
            | Output::DeleteSyncStates { .. }
            | Output::EditDone { .. }
            | Output::Compact { .. }
            | Output::Denied { .. } => {}
        }
    }
    sent
}

/// One fuzz case. Input: repeated `[selector, len_hi, len_lo, bytes…]`.
pub fn run(input: &[u8]) {
    let mallory_ns = UserNamespace::from_bytes([1; 16]);
    let anna_ns = UserNamespace::from_bytes([2; 16]);
    let mallory_doc = DocumentId::preferences(&mallory_ns);
    let anna_doc = DocumentId::preferences(&anna_ns);
    let unknown = DocumentId::from_bytes([9; 16]);
    let mut storage = Storage {
        docs: HashMap::from([
            (mallory_doc, stored_preferences("mallory")),
            (anna_doc, stored_preferences("anna")),
        ]),
    };
    let anna_stored_before = storage.docs[&anna_doc].1.clone();
    let mut hub = Hub::new(HubConfig::new([7; 16]), OwnerOrAdmin);
    hub.handle_connect(MALLORY, peer("mallory", mallory_ns));
    hub.handle_connect(ANNA, peer("anna", anna_ns));
    let mut closed = Vec::new();
    let mut now = 1_000;
    let mut rest = input;
    while rest.len() >= 3 && !closed.contains(&MALLORY) {
        let selector = rest[0];
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let data = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        let doc = match selector % 3 {
            0 => mallory_doc,
            1 => anna_doc,
            _ => unknown,
        };
        let request = selector & 0x80 != 0;
        now += 10;
        hub.handle_sync(MALLORY, doc, request, data, now);
        if selector & 0x40 != 0 {
            hub.handle_tick(now);
        }
        for (conn, message) in drive(&mut hub, &mut storage, anna_doc, &mut closed, now) {
            if conn == MALLORY {
                match message {
                    HubMessage::Sync { doc, .. } => {
                        assert_ne!(doc, anna_doc, "another user's document was sent")
                    }
                    HubMessage::Ephemeral { doc, .. } => {
                        assert_ne!(doc, anna_doc, "another user's document was relayed")
                    }
                    HubMessage::DocUnavailable { .. } | HubMessage::Resync { .. } => {}
                }
            }
        }
    }
    assert_eq!(
        storage.docs[&anna_doc].1, anna_stored_before,
        "another user's stored document changed"
    );
    // The honest peer still gets her document.
    let mut anna_copy = AutoCommit::new();
    let mut state = automerge::sync::State::new();
    let hello = anna_copy
        .sync()
        .generate_sync_message(&mut state)
        .map(|m| m.encode())
        .unwrap_or_default();
    now += 10;
    hub.handle_sync(ANNA, anna_doc, true, hello, now);
    let sent = drive(&mut hub, &mut storage, anna_doc, &mut closed, now);
    assert!(
        sent.iter()
            .any(|(c, m)| *c == ANNA
                && matches!(m, HubMessage::Sync { doc, .. } if *doc == anna_doc)),
        "the honest peer was not answered after the fuzzed messages: {sent:?}"
    );
    assert!(!closed.contains(&ANNA), "the honest peer was closed");
}
