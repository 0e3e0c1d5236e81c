//! The codec against bytes the JavaScript implementation wrote: the frames captured from
//! automerge-repo 2.5.6 and cbor-x 1.6.9 in `tests/golden/messages.json` (regenerate with
//! `tests/golden/generate.mjs`; these tests need no node), and the example frames of the
//! protocol notes (`shared/protocol/automerge-repo.md`).

use serde_json::Value;
use sync_core::DocumentId;
use sync_core::wire::{
    self, DocMessage, DocUnavailable, Ephemeral, ErrorMessage, Join, Leave, Message, Peer,
    PeerMetadata, RemoteHeads, RemoteHeadsChanged, RemoteSubscriptionChange, Resync, ServerStatus,
    Unknown,
};

const FIXTURES: &str = include_str!("golden/messages.json");

struct Golden {
    name: String,
    exact: bool,
    bytes: Vec<u8>,
    decoded: Value,
}

fn goldens() -> Vec<Golden> {
    let file: Value = serde_json::from_str(FIXTURES).unwrap();
    file["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Golden {
            name: f["name"].as_str().unwrap().to_owned(),
            exact: f["exact"].as_bool().unwrap(),
            bytes: hex::decode(f["hex"].as_str().unwrap()).unwrap(),
            decoded: f["decoded"].clone(),
        })
        .collect()
}

fn golden(name: &str) -> Golden {
    goldens()
        .into_iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no golden frame {name}"))
}

/// The message cbor-x's own decoding of a frame describes (the `decoded` JSON of the
/// fixture: byte strings as `{"$bytes": hex}`, `undefined` as null).
fn expected(v: &Value) -> Message {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let required = |k: &str| text(k).unwrap_or_else(|| panic!("fixture without {k}"));
    let bytes = |k: &str| hex::decode(v[k]["$bytes"].as_str().unwrap()).unwrap();
    let number = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{v} is not a u64"));
    let doc = || DocumentId::parse(v["documentId"].as_str().unwrap()).unwrap();
    let list = |v: &Value| {
        v.as_array().map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
    };
    let metadata = || {
        v.get("peerMetadata")
            .filter(|m| !m.is_null())
            .map(|m| PeerMetadata {
                storage_id: m["storageId"].as_str().map(str::to_owned),
                is_ephemeral: m["isEphemeral"].as_bool(),
            })
    };
    let doc_message = || DocMessage {
        sender_id: required("senderId"),
        target_id: required("targetId"),
        document_id: doc(),
        data: bytes("data"),
    };
    match v["type"].as_str().unwrap() {
        "join" => Message::Join(Join {
            sender_id: required("senderId"),
            peer_metadata: metadata(),
            supported_protocol_versions: list(&v["supportedProtocolVersions"]),
        }),
        "peer" => Message::Peer(Peer {
            sender_id: required("senderId"),
            peer_metadata: metadata(),
            selected_protocol_version: required("selectedProtocolVersion"),
            target_id: required("targetId"),
        }),
        "error" => Message::Error(ErrorMessage {
            sender_id: text("senderId"),
            target_id: text("targetId"),
            message: required("message"),
        }),
        "leave" => Message::Leave(Leave {
            sender_id: required("senderId"),
        }),
        "sync" => Message::Sync(doc_message()),
        "request" => Message::Request(doc_message()),
        "doc-unavailable" => Message::DocUnavailable(DocUnavailable {
            sender_id: required("senderId"),
            target_id: required("targetId"),
            document_id: doc(),
        }),
        "ephemeral" => Message::Ephemeral(Ephemeral {
            sender_id: required("senderId"),
            target_id: required("targetId"),
            count: number(&v["count"]),
            session_id: required("sessionId"),
            document_id: doc(),
            data: bytes("data"),
        }),
        "remote-subscription-change" => {
            Message::RemoteSubscriptionChange(RemoteSubscriptionChange {
                sender_id: required("senderId"),
                target_id: required("targetId"),
                add: list(&v["add"]),
                remove: list(&v["remove"]),
            })
        }
        "remote-heads-changed" => Message::RemoteHeadsChanged(RemoteHeadsChanged {
            sender_id: required("senderId"),
            target_id: required("targetId"),
            document_id: doc(),
            new_heads: v["newHeads"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(storage_id, h)| {
                    (
                        storage_id.clone(),
                        RemoteHeads {
                            heads: list(&h["heads"]).unwrap(),
                            timestamp: number(&h["timestamp"]),
                        },
                    )
                })
                .collect(),
        }),
        "learnsync-resync" => Message::Resync(Resync {
            sender_id: required("senderId"),
            target_id: required("targetId"),
            epoch: number(&v["epoch"]),
            reason: text("reason"),
        }),
        "learnsync-status" => Message::Status(ServerStatus {
            sender_id: required("senderId"),
            target_id: required("targetId"),
            state: required("state"),
            message: text("message"),
        }),
        other => Message::Unknown(Unknown {
            type_name: other.to_owned(),
            sender_id: text("senderId"),
        }),
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

#[test]
fn the_fixture_file_covers_every_case_the_codec_must_match() {
    let names: Vec<String> = goldens().into_iter().map(|g| g.name).collect();
    for required in [
        "join-storage-less-client",
        "join-with-storage-id",
        "peer-from-server-with-storage",
        "error-unsupported-protocol-version",
        "sync-from-client",
        "sync-from-server",
        "sync-from-server-with-changes",
        "request-from-client",
        "doc-unavailable-from-server",
        "ephemeral-from-client",
        "ephemeral-relayed-by-server",
        "ephemeral-count-above-2-32",
        "remote-subscription-change-add-undefined",
        "remote-subscription-change-remove-undefined",
        "remote-heads-changed",
        "leave-legacy",
        "unknown-type",
        "learnsync-resync",
        "learnsync-status-degraded",
    ] {
        assert!(names.iter().any(|n| n == required), "missing {required}");
    }
}

/// decode(golden) is what cbor-x itself decodes from the same bytes.
#[test]
fn every_golden_frame_decodes_as_javascript_reads_it() {
    for g in goldens() {
        let decoded = wire::decode(&g.bytes).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_eq!(decoded, expected(&g.decoded), "{}", g.name);
    }
}

/// encode(message) is byte for byte what the JavaScript implementation sent.
#[test]
fn every_exact_golden_frame_is_reencoded_byte_for_byte() {
    let mut buf = Vec::new();
    for g in goldens().into_iter().filter(|g| g.exact) {
        let message = expected(&g.decoded);
        assert_eq!(
            hex::encode(wire::encode(&message)),
            hex::encode(&g.bytes),
            "{}",
            g.name
        );
        // The hot-path variant appends the same bytes to a reused buffer.
        buf.clear();
        buf.extend_from_slice(b"prefix");
        wire::encode_into(&message, &mut buf);
        assert_eq!(&buf[6..], g.bytes.as_slice(), "{}", g.name);
    }
}

/// Frames the encoder does not reproduce still survive a round trip through it.
#[test]
fn inexact_golden_frames_round_trip_as_messages() {
    let inexact: Vec<Golden> = goldens().into_iter().filter(|g| !g.exact).collect();
    assert!(!inexact.is_empty());
    for g in inexact {
        let message = wire::decode(&g.bytes).unwrap();
        assert_eq!(wire::decode(&wire::encode(&message)).unwrap(), message);
    }
}

#[test]
fn storage_less_join_carries_undefined_storage_id() {
    let g = golden("join-storage-less-client");
    // storageId: undefined is on the wire as f7.
    assert!(hex::encode(&g.bytes).contains("6973746f726167654964f7"));
    assert_eq!(
        wire::decode(&g.bytes).unwrap(),
        Message::Join(Join {
            sender_id: "client-a".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: Some(true),
            }),
            supported_protocol_versions: Some(vec!["1".into()]),
        })
    );
}

#[test]
fn sync_and_request_have_the_javascript_key_orders() {
    for (name, keys) in [
        (
            "sync-from-client",
            ["type", "targetId", "data", "documentId", "senderId"],
        ),
        (
            "sync-from-server",
            ["type", "targetId", "data", "documentId", "senderId"],
        ),
        (
            "request-from-client",
            ["type", "targetId", "documentId", "data", "senderId"],
        ),
    ] {
        let bytes = golden(name).bytes;
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| {
                let needle = [&[0x60 + k.len() as u8][..], k.as_bytes()].concat();
                bytes
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .unwrap()
            })
            .collect();
        assert!(positions.is_sorted(), "{name}: {positions:?}");
        assert_eq!(
            wire::encode(&wire::decode(&bytes).unwrap()),
            bytes,
            "{name}"
        );
    }
}

#[test]
fn javascript_numbers_above_2_32_are_float64() {
    let g = golden("ephemeral-count-above-2-32");
    assert!(hex::encode(&g.bytes).contains("65636f756e74fb41f0000000500000"));
    let Message::Ephemeral(e) = wire::decode(&g.bytes).unwrap() else {
        panic!("not ephemeral");
    };
    assert_eq!(e.count, (1 << 32) + 5);

    let g = golden("remote-heads-changed");
    let Message::RemoteHeadsChanged(m) = wire::decode(&g.bytes).unwrap() else {
        panic!("not remote-heads-changed");
    };
    let timestamp = m.new_heads[0].1.timestamp;
    assert!(timestamp > 1 << 32, "a Date.now() value");
    let float = [&[0xfb][..], &(timestamp as f64).to_bits().to_be_bytes()].concat();
    assert!(g.bytes.windows(9).any(|w| w == float.as_slice()));
}

#[test]
fn unknown_types_keep_type_and_sender() {
    assert_eq!(
        wire::decode(&golden("unknown-type").bytes).unwrap(),
        Message::Unknown(Unknown {
            type_name: "presence-update".into(),
            sender_id: Some("client-z".into()),
        })
    );
}

// ---------------------------------------------------------------------------------------------
// The protocol notes' example frames.

const DOC_27: &str = "148vjpuxYXixb8DcbaWyeGv2q3u";

/// §4.1: the 100-byte `join` a storage-less client sent, verified on the wire.
#[test]
fn notes_4_1_join_of_a_storage_less_client() {
    let frame = h("b90004 6474797065 646a6f696e
        6873656e6465724964 6770726f62652d31
        6c706565724d65746164617461 b90002 6973746f726167654964 f7 6b6973457068656d6572616c f5
        7819737570706f7274656450726f746f636f6c56657273696f6e73 816131");
    assert_eq!(frame.len(), 100);
    let message = Message::Join(Join {
        sender_id: "probe-1".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: Some(true),
        }),
        supported_protocol_versions: Some(vec!["1".into()]),
    });
    assert_eq!(wire::decode(&frame).unwrap(), message);
    assert_eq!(wire::encode(&message), frame);
}

/// §4.2: the JavaScript server's 160-byte `peer` (a 36-character storage UUID).
#[test]
fn notes_4_2_peer_of_a_server_with_storage() {
    let message = Message::Peer(Peer {
        sender_id: "storage-server-vm".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some("df17ebe3-0000-4000-8000-000000000000".into()),
            is_ephemeral: Some(false),
        }),
        selected_protocol_version: "1".into(),
        target_id: "probe-1".into(),
    });
    let frame = wire::encode(&message);
    assert_eq!(frame.len(), 160);
    assert_eq!(wire::decode(&frame).unwrap(), message);
}

/// §4.4: the JavaScript server's 96-byte `error`, keys type, senderId, message, targetId.
#[test]
fn notes_4_4_error() {
    let frame = [
        h("b90004 6474797065 656572726f72 6873656e6465724964 71"),
        b"storage-server-vm".to_vec(),
        h("676d657373616765 781c"),
        b"unsupported protocol version".to_vec(),
        h("687461726765744964 67"),
        b"probe-3".to_vec(),
    ]
    .concat();
    assert_eq!(frame.len(), 96);
    let message = Message::Error(ErrorMessage {
        sender_id: Some("storage-server-vm".into()),
        target_id: Some("probe-3".into()),
        message: "unsupported protocol version".into(),
    });
    assert_eq!(wire::decode(&frame).unwrap(), message);
    assert_eq!(wire::encode(&message), frame);
}

/// §10: the JavaScript server's 108-byte `doc-unavailable` (the id elided in the notes is
/// 27 characters long, which the length pins down).
#[test]
fn notes_10_doc_unavailable() {
    let frame = [
        h("b9000464747970656f646f632d756e617661696c61626c656a646f63756d656e744964781b"),
        DOC_27.as_bytes().to_vec(),
        h("6874617267657449646770726f62652d316873656e64657249647173746f726167652d7365727665722d766d"),
    ]
    .concat();
    assert_eq!(frame.len(), 108);
    let message = Message::DocUnavailable(DocUnavailable {
        sender_id: "storage-server-vm".into(),
        target_id: "probe-1".into(),
        document_id: DocumentId::parse(DOC_27).unwrap(),
    });
    assert_eq!(wire::decode(&frame).unwrap(), message);
    assert_eq!(wire::encode(&message), frame);
}

/// §10: the 117-byte `request` of the notes' raw-protocol probe (28-character id, the one of
/// the traced document). The probe wrote its own key order, not the JavaScript client's, so
/// this frame is only decoded; re-encoded it has the same size in the client's order.
#[test]
fn notes_10_request_from_the_probe() {
    let id = "2mtAaaMKcNDRCpUHKJUBiwqqoHF4";
    let frame = [
        h("b90005 6474797065 6772657175657374 6873656e6465724964 6770726f62652d31 68746172676574496471"),
        b"storage-server-vm".to_vec(),
        h("6a646f63756d656e744964781c"),
        id.as_bytes().to_vec(),
        h("6464617461 4a 42000001000000020284"),
    ]
    .concat();
    assert_eq!(frame.len(), 117);
    let message = wire::decode(&frame).unwrap();
    assert_eq!(
        message,
        Message::Request(DocMessage {
            sender_id: "probe-1".into(),
            target_id: "storage-server-vm".into(),
            document_id: DocumentId::parse(id).unwrap(),
            data: h("42000001000000020284"),
        })
    );
    let reencoded = wire::encode(&message);
    assert_eq!(reencoded.len(), 117);
    assert_ne!(reencoded, frame);
}

/// §3: the document id test vectors.
#[test]
fn notes_3_document_ids() {
    let id = DocumentId::parse(DOC_27).unwrap();
    assert_eq!(
        hex::encode(id.as_bytes()),
        "00112233445566778899aabbccddeeff"
    );
    let id = DocumentId::parse("2mtAaaMKcNDRCpUHKJUBiwqqoHF4").unwrap();
    assert_eq!(
        hex::encode(id.as_bytes()),
        "7f52d0a8b8b04343bb17b1549fea8ced"
    );
    // Encoded in a frame as the same text.
    let frame = wire::encode(&Message::DocUnavailable(DocUnavailable {
        sender_id: "s".into(),
        target_id: "t".into(),
        document_id: id,
    }));
    assert!(
        frame
            .windows(28)
            .any(|w| w == b"2mtAaaMKcNDRCpUHKJUBiwqqoHF4")
    );
}
