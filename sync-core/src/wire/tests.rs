use proptest::prelude::*;

use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

const DOC: &str = "148vjpuxYXixb8DcbaWyeGv2q3u";

fn doc() -> DocumentId {
    DocumentId::parse(DOC).unwrap()
}

/// The 100-byte `join` a storage-less JavaScript client sent (protocol notes §4.1).
#[test]
fn decodes_the_javascript_join_with_undefined_storage_id() {
    let frame = h("b90004 6474797065 646a6f696e
        6873656e6465724964 6770726f62652d31
        6c706565724d65746164617461 b90002 6973746f726167654964 f7 6b6973457068656d6572616c f5
        7819737570706f7274656450726f746f636f6c56657273696f6e73 816131");
    assert_eq!(frame.len(), 100);
    assert_eq!(
        decode(&frame).unwrap(),
        Message::Join(Join {
            sender_id: "probe-1".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: Some(true),
            }),
            supported_protocol_versions: Some(vec!["1".into()]),
        })
    );
}

/// A `join` with a storage id encodes exactly like cbor-x (2-byte map headers everywhere).
#[test]
fn encodes_join_like_javascript() {
    let msg = Message::Join(Join {
        sender_id: "probe-1".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some("s".into()),
            is_ephemeral: Some(false),
        }),
        supported_protocol_versions: Some(vec!["1".into()]),
    });
    let expected = h("b90004 6474797065 646a6f696e
        6873656e6465724964 6770726f62652d31
        6c706565724d65746164617461 b90002 6973746f726167654964 6173 6b6973457068656d6572616c f4
        7819737570706f7274656450726f746f636f6c56657273696f6e73 816131");
    assert_eq!(encode(&msg), expected);
    assert_eq!(decode(&expected).unwrap(), msg);
}

/// The JavaScript server's `doc-unavailable` (§10): keys type, documentId, targetId, senderId.
#[test]
fn doc_unavailable_matches_the_javascript_server() {
    let msg = Message::DocUnavailable(DocUnavailable {
        sender_id: "storage-server-vm".into(),
        target_id: "probe-1".into(),
        document_id: doc(),
    });
    let expected = [
        h("b90004 6474797065 6f646f632d756e617661696c61626c65 6a646f63756d656e744964 781b"),
        DOC.as_bytes().to_vec(),
        h("6874617267657449646770726f62652d316873656e64657249647173746f726167652d7365727665722d766d"),
    ]
    .concat();
    assert_eq!(encode(&msg), expected);
    assert_eq!(expected.len(), 108);
    assert_eq!(decode(&expected).unwrap(), msg);
}

/// The JavaScript server's `peer` reply (§4.2).
#[test]
fn peer_reply_matches_the_javascript_server() {
    let msg = Message::Peer(Peer {
        sender_id: "storage-server-vm".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some("df17ebe3".into()),
            is_ephemeral: Some(false),
        }),
        selected_protocol_version: "1".into(),
        target_id: "probe-1".into(),
    });
    let bytes = encode(&msg);
    assert_eq!(&bytes[..3], &[0xb9, 0x00, 0x05]);
    // Key order: type, senderId, peerMetadata, selectedProtocolVersion, targetId.
    let text = String::from_utf8_lossy(&bytes);
    let order: Vec<usize> = [
        "type",
        "senderId",
        "peerMetadata",
        "selectedProtocolVersion",
        "targetId",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(decode(&bytes).unwrap(), msg);
}

/// The JavaScript server's `error` (§4.4, 96 bytes).
#[test]
fn error_matches_the_javascript_server() {
    let msg = Message::Error(ErrorMessage {
        sender_id: Some("storage-server-vm".into()),
        target_id: Some("probe-3".into()),
        message: "unsupported protocol version".into(),
    });
    let bytes = encode(&msg);
    assert_eq!(bytes.len(), 96);
    assert_eq!(decode(&bytes).unwrap(), msg);
    // samod sends only {type, message}: accepted.
    let short = h("b90002 6474797065 656572726f72 676d657373616765 626f6b");
    assert_eq!(
        decode(&short).unwrap(),
        Message::Error(ErrorMessage {
            sender_id: None,
            target_id: None,
            message: "ok".into()
        })
    );
}

/// A `request` as the protocol notes captured it (§10): 117 bytes with a 28-character id.
#[test]
fn request_round_trips_with_the_captured_shape() {
    let id = DocumentId::parse("2mtAaaMKcNDRCpUHKJUBiwqqoHF4").unwrap();
    let frame = [
        h("b90005 6474797065 6772657175657374 6873656e6465724964 6770726f62652d31 68746172676574496471"),
        b"storage-server-vm".to_vec(),
        h("6a646f63756d656e744964781c"),
        b"2mtAaaMKcNDRCpUHKJUBiwqqoHF4".to_vec(),
        h("6464617461 4a 42000001000000020284"),
    ]
    .concat();
    assert_eq!(frame.len(), 117);
    let msg = decode(&frame).unwrap();
    assert_eq!(
        msg,
        Message::Request(DocMessage {
            sender_id: "probe-1".into(),
            target_id: "storage-server-vm".into(),
            document_id: id,
            data: h("42000001000000020284"),
        })
    );
}

#[test]
fn large_integers_travel_as_float64() {
    let msg = Message::Ephemeral(Ephemeral {
        sender_id: "a".into(),
        target_id: "b".into(),
        count: (1 << 32) + 1,
        session_id: "s".into(),
        document_id: doc(),
        data: vec![1, 2, 3],
    });
    let bytes = encode(&msg);
    assert!(
        bytes
            .windows(9)
            .any(|w| w == h("fb41f0000000100000").as_slice())
    );
    assert_eq!(decode(&bytes).unwrap(), msg);

    let heads = Message::RemoteHeadsChanged(RemoteHeadsChanged {
        sender_id: "a".into(),
        target_id: "b".into(),
        document_id: doc(),
        new_heads: vec![(
            "storage".into(),
            RemoteHeads {
                heads: vec!["abc".into()],
                timestamp: 1_767_225_600_123,
            },
        )],
    });
    let bytes = encode(&heads);
    assert!(
        bytes
            .windows(9)
            .any(|w| w == h("fb4279b76daa87b000").as_slice())
    );
    assert_eq!(decode(&bytes).unwrap(), heads);
}

#[test]
fn remote_subscription_change_with_undefined_add() {
    // {type, senderId, targetId, add: undefined, remove: ["x"]}
    let frame = [
        h("b90005 6474797065 781a"),
        b"remote-subscription-change".to_vec(),
        h("6873656e6465724964 6161 687461726765744964 6162 63616464 f7 6672656d6f7665 816178"),
    ]
    .concat();
    assert_eq!(
        decode(&frame).unwrap(),
        Message::RemoteSubscriptionChange(RemoteSubscriptionChange {
            sender_id: "a".into(),
            target_id: "b".into(),
            add: None,
            remove: Some(vec!["x".into()]),
        })
    );
}

#[test]
fn unknown_types_and_learnsync_types() {
    let unknown = h("b90002 6474797065 6466756e6e 6873656e6465724964 6161");
    assert_eq!(
        decode(&unknown).unwrap(),
        Message::Unknown(Unknown {
            type_name: "funn".into(),
            sender_id: Some("a".into())
        })
    );
    for msg in [
        Message::Resync(Resync {
            sender_id: "server".into(),
            target_id: "dev".into(),
            epoch: 3,
            reason: Some("admin".into()),
        }),
        Message::Status(ServerStatus {
            sender_id: "server".into(),
            target_id: "dev".into(),
            state: "degraded".into(),
            message: None,
        }),
        Message::Leave(Leave {
            sender_id: "x".into(),
        }),
    ] {
        assert_eq!(decode(&encode(&msg)).unwrap(), msg);
    }
}

#[test]
fn canonical_headers_are_accepted_too() {
    // {type: "leave", senderId: "x"} with a 1-byte map header.
    let frame = h("a2 6474797065 656c65617665 6873656e6465724964 6178");
    assert_eq!(
        decode(&frame).unwrap(),
        Message::Leave(Leave {
            sender_id: "x".into()
        })
    );
}

#[test]
fn bad_frames_give_typed_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&h("83010203")), Err(DecodeError::NotAMap));
    assert_eq!(decode(&h("a0")), Err(DecodeError::MissingField("type")));
    assert_eq!(
        decode(&h("a1 6474797065 01")),
        Err(DecodeError::WrongType {
            field: "type",
            expected: "text"
        })
    );
    // sync without documentId
    let frame = h("a3 6474797065 6473796e63 6873656e6465724964 6161 6464617461 40");
    assert_eq!(decode(&frame), Err(DecodeError::MissingField("documentId")));
    // sync with a bad documentId
    let frame = h(
        "a4 6474797065 6473796e63 6873656e6465724964 6161 6464617461 40 6a646f63756d656e744964 6378797a",
    );
    assert!(matches!(
        decode(&frame),
        Err(DecodeError::InvalidDocumentId(_))
    ));
    // a negative count
    let frame = [
        h("a6 6474797065 69657068656d6572616c 6873656e6465724964 6161 65636f756e74 20 6973657373696f6e4964 6173 6a646f63756d656e744964 781b"),
        DOC.as_bytes().to_vec(),
        h("6464617461 40"),
    ]
    .concat();
    assert!(matches!(
        decode(&frame),
        Err(DecodeError::WrongType { field: "count", .. })
    ));
    // trailing garbage
    let mut frame = encode(&Message::Leave(Leave {
        sender_id: "x".into(),
    }));
    frame.push(0);
    assert_eq!(decode(&frame), Err(DecodeError::TrailingBytes(1)));
    // invalid UTF-8 in a text value
    assert_eq!(
        decode(&h("a1 6474797065 62ffff")),
        Err(DecodeError::InvalidUtf8)
    );
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _-]{0,20}"
}

fn doc_id() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}

fn metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    proptest::option::of(
        (
            proptest::option::of(text()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(storage_id, is_ephemeral)| PeerMetadata {
                storage_id,
                is_ephemeral,
            }),
    )
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, 0u64..(1 << 53)]
}

fn message() -> impl Strategy<Value = Message> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (
            text(),
            metadata(),
            proptest::option::of(proptest::collection::vec(text(), 0..3))
        )
            .prop_map(|(s, m, v)| {
                Message::Join(Join {
                    sender_id: s,
                    peer_metadata: m,
                    supported_protocol_versions: v,
                })
            }),
        (text(), metadata(), text(), text()).prop_map(|(s, m, v, t)| Message::Peer(Peer {
            sender_id: s,
            peer_metadata: m,
            selected_protocol_version: v,
            target_id: t
        })),
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            text()
        )
            .prop_map(|(s, t, m)| {
                Message::Error(ErrorMessage {
                    sender_id: s,
                    target_id: t,
                    message: m,
                })
            }),
        (text(), text(), doc_id(), bytes.clone(), any::<bool>()).prop_map(
            |(s, t, d, data, req)| {
                let m = DocMessage {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    data,
                };
                if req {
                    Message::Request(m)
                } else {
                    Message::Sync(m)
                }
            }
        ),
        (text(), text(), doc_id()).prop_map(|(s, t, d)| Message::DocUnavailable(DocUnavailable {
            sender_id: s,
            target_id: t,
            document_id: d
        })),
        (text(), text(), count(), text(), doc_id(), bytes).prop_map(|(s, t, c, sid, d, data)| {
            Message::Ephemeral(Ephemeral {
                sender_id: s,
                target_id: t,
                count: c,
                session_id: sid,
                document_id: d,
                data,
            })
        }),
        (text(), text(), count(), proptest::option::of(text())).prop_map(|(s, t, e, r)| {
            Message::Resync(Resync {
                sender_id: s,
                target_id: t,
                epoch: e,
                reason: r,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(msg in message()) {
        prop_assert_eq!(decode(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(msg in message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = encode(&msg);
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        let _ = decode(&bytes);
        // Truncations too.
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
    }
}
