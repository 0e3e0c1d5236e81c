//! Properties of the codec over arbitrary messages and arbitrary bytes.

use proptest::prelude::*;
use sync_core::DocumentId;
use sync_core::wire::{
    self, DecodeError, DocMessage, DocUnavailable, Ephemeral, ErrorMessage, Join, Leave, Message,
    Peer, PeerMetadata, RemoteHeads, RemoteHeadsChanged, RemoteSubscriptionChange, Resync,
    ServerStatus, Unknown,
};

const KNOWN_TYPES: [&str; 12] = [
    "join",
    "peer",
    "error",
    "leave",
    "sync",
    "request",
    "doc-unavailable",
    "ephemeral",
    "remote-subscription-change",
    "remote-heads-changed",
    "learnsync-resync",
    "learnsync-status",
];

/// Any text, with lengths around the 1- and 2-byte header boundaries (23/24, 255/256).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-]{0,30}",
        any::<String>(),
        "[a-z]{250,260}",
        "é{10,14}",
    ]
}

fn opt<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn list() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..30)
}

fn doc_id() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 250..300),
    ]
}

/// Numbers across every encoding: small, 32-bit, float64 range, beyond 2^53.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..30,
        any::<u32>().prop_map(u64::from),
        (1u64 << 32)..=(1 << 53),
        any::<u64>(),
    ]
}

fn metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    opt(
        (opt(text()), opt(any::<bool>())).prop_map(|(storage_id, is_ephemeral)| PeerMetadata {
            storage_id,
            is_ephemeral,
        }),
    )
}

fn doc_message() -> impl Strategy<Value = DocMessage> {
    (text(), text(), doc_id(), data()).prop_map(|(sender_id, target_id, document_id, data)| {
        DocMessage {
            sender_id,
            target_id,
            document_id,
            data,
        }
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (text(), metadata(), opt(list())).prop_map(|(s, m, v)| Message::Join(Join {
            sender_id: s,
            peer_metadata: m,
            supported_protocol_versions: v,
        })),
        (text(), metadata(), text(), text()).prop_map(|(s, m, v, t)| Message::Peer(Peer {
            sender_id: s,
            peer_metadata: m,
            selected_protocol_version: v,
            target_id: t,
        })),
        (opt(text()), opt(text()), text()).prop_map(|(s, t, m)| Message::Error(ErrorMessage {
            sender_id: s,
            target_id: t,
            message: m,
        })),
        text().prop_map(|s| Message::Leave(Leave { sender_id: s })),
        doc_message().prop_map(Message::Sync),
        doc_message().prop_map(Message::Request),
        (text(), text(), doc_id()).prop_map(|(s, t, d)| {
            Message::DocUnavailable(DocUnavailable {
                sender_id: s,
                target_id: t,
                document_id: d,
            })
        }),
        (text(), text(), number(), text(), doc_id(), data()).prop_map(|(s, t, c, sid, d, data)| {
            Message::Ephemeral(Ephemeral {
                sender_id: s,
                target_id: t,
                count: c,
                session_id: sid,
                document_id: d,
                data,
            })
        }),
        (text(), text(), opt(list()), opt(list())).prop_map(|(s, t, add, remove)| {
            Message::RemoteSubscriptionChange(RemoteSubscriptionChange {
                sender_id: s,
                target_id: t,
                add,
                remove,
            })
        }),
        (
            text(),
            text(),
            doc_id(),
            proptest::collection::vec((text(), list(), number()), 0..5)
        )
            .prop_map(|(s, t, d, heads)| {
                Message::RemoteHeadsChanged(RemoteHeadsChanged {
                    sender_id: s,
                    target_id: t,
                    document_id: d,
                    new_heads: heads
                        .into_iter()
                        .map(|(id, heads, timestamp)| (id, RemoteHeads { heads, timestamp }))
                        .collect(),
                })
            }),
        (text(), text(), number(), opt(text())).prop_map(|(s, t, e, r)| {
            Message::Resync(Resync {
                sender_id: s,
                target_id: t,
                epoch: e,
                reason: r,
            })
        }),
        (text(), text(), text(), opt(text())).prop_map(|(s, t, state, m)| {
            Message::Status(ServerStatus {
                sender_id: s,
                target_id: t,
                state,
                message: m,
            })
        }),
        (
            text().prop_filter("an unknown type", |t| !KNOWN_TYPES.contains(&t.as_str())),
            opt(text())
        )
            .prop_map(|(type_name, sender_id)| Message::Unknown(Unknown {
                type_name,
                sender_id
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let frame = wire::encode(&msg);
        prop_assert_eq!(wire::decode(&frame), Ok(msg.clone()));
        // Decoding then encoding is a fixpoint.
        prop_assert_eq!(wire::encode(&wire::decode(&frame).unwrap()), frame.clone());
        // Every map is written as cbor-x writes objects.
        prop_assert_eq!(frame[0], 0xb9);
    }

    #[test]
    fn encode_into_reuses_a_buffer(msgs in proptest::collection::vec(message(), 1..5)) {
        let mut buf = Vec::new();
        for msg in &msgs {
            buf.clear();
            wire::encode_into(msg, &mut buf);
            prop_assert_eq!(&buf, &wire::encode(msg));
        }
    }

}

proptest! {
    // Each case decodes every prefix of a frame: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_truncated_frame_is_an_error(msg in message()) {
        let frame = wire::encode(&msg);
        for cut in 0..frame.len() {
            prop_assert!(wire::decode(&frame[..cut]).is_err(), "decoded a {cut}-byte prefix");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn corrupted_frames_never_panic(
        msg in message(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut frame = wire::encode(&msg);
        for (i, b) in flips {
            let n = frame.len();
            frame[i % n] = b;
        }
        // Whatever comes out must itself survive a round trip.
        if let Ok(decoded) = wire::decode(&frame) {
            prop_assert_eq!(wire::decode(&wire::encode(&decoded)), Ok(decoded));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(decoded) = wire::decode(&bytes) {
            prop_assert_eq!(wire::decode(&wire::encode(&decoded)), Ok(decoded));
        }
    }

    /// Garbage that starts like a message (a map with a known type) reaches the field checks.
    #[test]
    fn map_shaped_garbage_gives_typed_errors(
        type_index in 0..KNOWN_TYPES.len(),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        entries in 1u16..8,
    ) {
        let type_name = KNOWN_TYPES[type_index];
        let mut frame = vec![0xb9];
        frame.extend(entries.to_be_bytes());
        frame.extend([0x64, b't', b'y', b'p', b'e', 0x78, type_name.len() as u8]);
        frame.extend(type_name.as_bytes());
        frame.extend(tail);
        match wire::decode(&frame) {
            Ok(decoded) => prop_assert_eq!(decoded.type_name(), type_name),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn truncation_reports_truncated() {
    let frame = wire::encode(&Message::Leave(Leave {
        sender_id: "peer".into(),
    }));
    for cut in 0..frame.len() {
        assert_eq!(
            wire::decode(&frame[..cut]),
            Err(DecodeError::Truncated),
            "{cut}"
        );
    }
}
