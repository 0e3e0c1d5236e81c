//! What the decoder accepts beyond the JavaScript implementation's own bytes (other header
//! widths, other key orders, `null`, floats, tags, extra fields, samod's frames), what it
//! refuses and how it says so, and the encoder's choices where JavaScript leaves one open.

use sync_core::DocumentId;
use sync_core::IdError;
use sync_core::wire::{
    self, DecodeError, DocMessage, DocUnavailable, Ephemeral, ErrorMessage, Join, Leave,
    MAX_LIST_LEN, Message, Peer, PeerMetadata, RemoteHeads, RemoteHeadsChanged,
    RemoteSubscriptionChange, Resync, STATUS_DEGRADED, ServerStatus, Unknown,
};

const DOC: &str = "148vjpuxYXixb8DcbaWyeGv2q3u";

fn doc() -> DocumentId {
    DocumentId::parse(DOC).unwrap()
}

/// Builds CBOR by hand, with a chosen argument width: 0 = shortest, else 1, 2, 4 or 8 bytes.
#[derive(Default)]
struct Cbor(Vec<u8>);

impl Cbor {
    fn head(mut self, major: u8, n: u64, width: u8) -> Self {
        let m = major << 5;
        match width {
            0 if n < 24 => self.0.push(m | n as u8),
            0 | 1 if n <= 0xff => self.0.extend([m | 24, n as u8]),
            0 | 2 if n <= 0xffff => {
                self.0.push(m | 25);
                self.0.extend((n as u16).to_be_bytes());
            }
            0 | 4 if n <= 0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend((n as u32).to_be_bytes());
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend(n.to_be_bytes());
            }
        }
        self
    }
    fn map(self, n: u64, width: u8) -> Self {
        self.head(5, n, width)
    }
    fn array(self, n: u64, width: u8) -> Self {
        self.head(4, n, width)
    }
    fn text_w(self, s: &str, width: u8) -> Self {
        let mut c = self.head(3, s.len() as u64, width);
        c.0.extend(s.as_bytes());
        c
    }
    fn text(self, s: &str) -> Self {
        self.text_w(s, 0)
    }
    fn bytes_w(self, b: &[u8], width: u8) -> Self {
        let mut c = self.head(2, b.len() as u64, width);
        c.0.extend(b);
        c
    }
    fn bytes(self, b: &[u8]) -> Self {
        self.bytes_w(b, 0)
    }
    fn uint(self, n: u64, width: u8) -> Self {
        self.head(0, n, width)
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn kv(self, k: &str, v: &str) -> Self {
        self.text(k).text(v)
    }
    fn f64(self, f: f64) -> Self {
        self.raw(&[0xfb]).raw(&f.to_bits().to_be_bytes())
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn sync_message() -> Message {
    Message::Sync(DocMessage {
        sender_id: "a".into(),
        target_id: "b".into(),
        document_id: doc(),
        data: vec![0x42, 1, 2],
    })
}

/// `{type: sync, senderId: a, targetId: b, documentId, data}` with every header at `width`.
fn sync_frame(width: u8) -> Vec<u8> {
    Cbor::default()
        .map(5, width)
        .text_w("type", width)
        .text_w("sync", width)
        .text_w("senderId", width)
        .text_w("a", width)
        .text_w("targetId", width)
        .text_w("b", width)
        .text_w("documentId", width)
        .text_w(DOC, width)
        .text_w("data", width)
        .bytes_w(&[0x42, 1, 2], width)
        .done()
}

#[test]
fn every_header_width_decodes() {
    for width in [0, 1, 2, 4, 8] {
        assert_eq!(
            wire::decode(&sync_frame(width)),
            Ok(sync_message()),
            "{width}"
        );
    }
}

#[test]
fn key_order_does_not_matter() {
    // samod's order for sync: type, documentId, senderId, targetId, data; minimal headers.
    let frame = Cbor::default()
        .map(5, 0)
        .kv("type", "sync")
        .kv("documentId", DOC)
        .kv("senderId", "a")
        .kv("targetId", "b")
        .text("data")
        .bytes(&[0x42, 1, 2])
        .done();
    assert_eq!(wire::decode(&frame), Ok(sync_message()));
    // type last.
    let frame = Cbor::default()
        .map(5, 2)
        .text("data")
        .bytes(&[0x42, 1, 2])
        .kv("senderId", "a")
        .kv("targetId", "b")
        .kv("documentId", DOC)
        .kv("type", "sync")
        .done();
    assert_eq!(wire::decode(&frame), Ok(sync_message()));
}

/// samod 0.16 writes `join` with minimal headers, versions before metadata, and its
/// metadata without `storageId` when it has none.
#[test]
fn samod_join_decodes() {
    let frame = Cbor::default()
        .map(4, 0)
        .kv("type", "join")
        .kv("senderId", "samod-peer")
        .text("supportedProtocolVersions")
        .array(1, 0)
        .text("1")
        .text("peerMetadata")
        .map(1, 0)
        .text("isEphemeral")
        .raw(&[0xf5])
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::Join(Join {
            sender_id: "samod-peer".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: Some(true),
            }),
            supported_protocol_versions: Some(vec!["1".into()]),
        }))
    );
    // samod's error is just {type, message}.
    let frame = Cbor::default()
        .map(2, 0)
        .kv("type", "error")
        .kv("message", "nope")
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::Error(ErrorMessage {
            sender_id: None,
            target_id: None,
            message: "nope".into(),
        }))
    );
}

#[test]
fn null_and_undefined_mean_absent() {
    for absent in [0xf6, 0xf7] {
        let frame = Cbor::default()
            .map(4, 2)
            .kv("type", "join")
            .kv("senderId", "c")
            .text("peerMetadata")
            .map(2, 2)
            .text("storageId")
            .raw(&[absent])
            .text("isEphemeral")
            .raw(&[absent])
            .text("supportedProtocolVersions")
            .raw(&[absent])
            .done();
        assert_eq!(
            wire::decode(&frame),
            Ok(Message::Join(Join {
                sender_id: "c".into(),
                peer_metadata: Some(PeerMetadata::default()),
                supported_protocol_versions: None,
            }))
        );
        // A required field that is undefined is missing.
        let frame = Cbor::default()
            .map(2, 2)
            .kv("type", "leave")
            .text("senderId")
            .raw(&[absent])
            .done();
        assert_eq!(
            wire::decode(&frame),
            Err(DecodeError::MissingField("senderId"))
        );
    }
}

#[test]
fn the_last_of_duplicate_keys_wins() {
    let frame = Cbor::default()
        .map(3, 2)
        .kv("type", "leave")
        .kv("senderId", "first")
        .kv("senderId", "second")
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::Leave(Leave {
            sender_id: "second".into()
        }))
    );
    // As in JavaScript, a later undefined erases an earlier value.
    let frame = Cbor::default()
        .map(3, 2)
        .kv("type", "leave")
        .kv("senderId", "first")
        .text("senderId")
        .raw(&[0xf7])
        .done();
    assert_eq!(
        wire::decode(&frame),
        Err(DecodeError::MissingField("senderId"))
    );
}

fn ephemeral_with_count(count: impl FnOnce(Cbor) -> Cbor) -> Vec<u8> {
    let c = Cbor::default()
        .map(7, 2)
        .kv("type", "ephemeral")
        .kv("targetId", "t")
        .kv("documentId", DOC)
        .text("data")
        .bytes(&[1])
        .text("count");
    count(c).kv("sessionId", "s").kv("senderId", "a").done()
}

fn count_of(frame: &[u8]) -> Result<u64, DecodeError> {
    match wire::decode(frame)? {
        Message::Ephemeral(e) => Ok(e.count),
        other => panic!("{other:?}"),
    }
}

#[test]
fn numbers_as_any_uint_or_integral_float() {
    for width in [0, 1, 2, 4, 8] {
        assert_eq!(count_of(&ephemeral_with_count(|c| c.uint(7, width))), Ok(7));
    }
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.f64(4_294_967_301.0))),
        Ok(4_294_967_301)
    );
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.f64(9_007_199_254_740_992.0))),
        Ok(1 << 53)
    );
    // Half and single precision.
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.raw(&[0xf9, 0x3c, 0x00]))),
        Ok(1)
    );
    assert_eq!(
        count_of(&ephemeral_with_count(
            |c| c.raw(&[0xfa, 0x47, 0xc3, 0x50, 0x00])
        )),
        Ok(100_000)
    );
    // A uint64 beyond 2^53 (a BigInt in JavaScript) is exact.
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.uint(u64::MAX, 8))),
        Ok(u64::MAX)
    );
    let not_a_count = DecodeError::WrongType {
        field: "count",
        expected: "a non-negative integer",
    };
    for bad in [1.5, -1.0, f64::NAN, f64::INFINITY, 2f64.powi(60)] {
        assert_eq!(
            count_of(&ephemeral_with_count(|c| c.f64(bad))),
            Err(not_a_count.clone()),
            "{bad}"
        );
    }
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.raw(&[0x20]))),
        Err(not_a_count.clone())
    );
    assert_eq!(
        count_of(&ephemeral_with_count(|c| c.text("1"))),
        Err(not_a_count)
    );
}

#[test]
fn numbers_are_written_as_javascript_numbers() {
    let resync = |epoch| {
        wire::encode(&Message::Resync(Resync {
            sender_id: "s".into(),
            target_id: "t".into(),
            epoch,
            reason: None,
        }))
    };
    // The frame ends with the key "epoch" and its value.
    let ends = |epoch, value: &str| {
        let frame = hex::encode(resync(epoch));
        assert!(frame.ends_with(&format!("6565706f6368{value}")), "{frame}");
    };
    ends(23, "17");
    ends(70_000, "1a00011170");
    ends((1 << 32) + 1, "fb41f0000000100000");
    ends(1_767_225_600_123, "fb4279b76daa87b000");
    // Beyond 2^53 a float64 would lose the value; a uint64 keeps it.
    ends((1 << 53) + 1, "1b0020000000000001");
    for epoch in [
        0,
        23,
        24,
        u32::MAX.into(),
        1 << 32,
        1 << 53,
        (1 << 53) + 1,
        u64::MAX,
    ] {
        let Ok(Message::Resync(r)) = wire::decode(&resync(epoch)) else {
            panic!("{epoch}");
        };
        assert_eq!(r.epoch, epoch);
    }
}

#[test]
fn extra_fields_are_ignored_whatever_they_hold() {
    let frame = Cbor::default()
        .map(8, 2)
        .kv("type", "doc-unavailable")
        .kv("documentId", DOC)
        .text("extra")
        .map(2, 0)
        .text("nested")
        .array(3, 0)
        .raw(&[0x01, 0xf6, 0xfb])
        .raw(&1.5f64.to_bits().to_be_bytes())
        .uint(1, 0)
        .bytes(&[0; 40])
        .kv("targetId", "t")
        // A non-text key, a tag, a negative number, a simple value.
        .uint(42, 0)
        .raw(&[0xc1, 0x1a, 0, 0, 0, 1])
        .text("neg")
        .raw(&[0x38, 0xff])
        .text("simple")
        .raw(&[0xf8, 0xff])
        .kv("senderId", "s")
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::DocUnavailable(DocUnavailable {
            sender_id: "s".into(),
            target_id: "t".into(),
            document_id: doc(),
        }))
    );
}

#[test]
fn tagged_byte_strings_of_older_clients_decode() {
    // automerge-repo before August 2023 wrote Uint8Array data with tag 64.
    let frame = Cbor::default()
        .map(5, 2)
        .kv("type", "sync")
        .kv("senderId", "a")
        .kv("targetId", "b")
        .kv("documentId", DOC)
        .text("data")
        .raw(&[0xd8, 0x40])
        .bytes(&[0x42, 1, 2])
        .done();
    assert_eq!(wire::decode(&frame), Ok(sync_message()));
}

#[test]
fn document_id_as_raw_bytes_decodes() {
    let frame = Cbor::default()
        .map(4, 2)
        .kv("type", "doc-unavailable")
        .text("documentId")
        .bytes(doc().as_bytes())
        .kv("targetId", "t")
        .kv("senderId", "s")
        .done();
    let Ok(Message::DocUnavailable(m)) = wire::decode(&frame) else {
        panic!();
    };
    assert_eq!(m.document_id, doc());
    // Encoded back as text, as JavaScript expects.
    assert!(
        wire::encode(&Message::DocUnavailable(m))
            .windows(DOC.len())
            .any(|w| w == DOC.as_bytes())
    );
}

fn doc_unavailable_with_id(id: impl FnOnce(Cbor) -> Cbor) -> Vec<u8> {
    id(Cbor::default()
        .map(4, 2)
        .kv("type", "doc-unavailable")
        .kv("senderId", "s")
        .kv("targetId", "t")
        .text("documentId"))
    .done()
}

#[test]
fn invalid_document_ids_have_their_own_error() {
    for (frame, error) in [
        // Not base58 at all.
        (
            doc_unavailable_with_id(|c| c.text("not-an-id!")),
            IdError::NotBs58Check,
        ),
        // A checksum off by one character.
        (
            doc_unavailable_with_id(|c| c.text("148vjpuxYXixb8DcbaWyeGv2q3v")),
            IdError::NotBs58Check,
        ),
        // Valid bs58check, but not 16 bytes.
        (
            doc_unavailable_with_id(|c| c.text(&bs58::encode([1u8; 8]).with_check().into_string())),
            IdError::WrongLength(8),
        ),
        (
            doc_unavailable_with_id(|c| c.bytes(&[1; 15])),
            IdError::WrongLength(15),
        ),
    ] {
        assert_eq!(
            wire::decode(&frame),
            Err(DecodeError::InvalidDocumentId(error))
        );
    }
    assert_eq!(
        wire::decode(&doc_unavailable_with_id(|c| c.uint(5, 0))),
        Err(DecodeError::WrongType {
            field: "documentId",
            expected: "text"
        })
    );
}

#[test]
fn missing_required_fields_are_named() {
    // (type, the fields given, the field reported missing)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: [Case; 9] = [
        ("join", &[], "senderId"),
        ("peer", &[("targetId", "t")], "senderId"),
        ("error", &[("senderId", "s")], "message"),
        ("sync", &[("senderId", "s"), ("documentId", DOC)], "data"),
        ("request", &[("senderId", "s")], "documentId"),
        ("doc-unavailable", &[("documentId", DOC)], "senderId"),
        ("learnsync-resync", &[("senderId", "s")], "epoch"),
        ("learnsync-status", &[("senderId", "s")], "state"),
        (
            "remote-heads-changed",
            &[("senderId", "s"), ("documentId", DOC)],
            "newHeads",
        ),
    ];
    for (type_name, fields, missing) in cases {
        let mut c = Cbor::default()
            .map(1 + fields.len() as u64, 2)
            .kv("type", type_name);
        for (k, v) in fields {
            c = c.kv(k, v);
        }
        assert_eq!(
            wire::decode(&c.done()),
            Err(DecodeError::MissingField(missing)),
            "{type_name}"
        );
    }
    // ephemeral needs count and sessionId too.
    let frame = Cbor::default()
        .map(5, 2)
        .kv("type", "ephemeral")
        .kv("senderId", "s")
        .kv("documentId", DOC)
        .text("data")
        .bytes(&[])
        .kv("sessionId", "x")
        .done();
    assert_eq!(
        wire::decode(&frame),
        Err(DecodeError::MissingField("count"))
    );
    // remote heads need heads and a timestamp per storage id.
    let frame = Cbor::default()
        .map(4, 2)
        .kv("type", "remote-heads-changed")
        .kv("senderId", "s")
        .kv("documentId", DOC)
        .text("newHeads")
        .map(1, 2)
        .text("storage")
        .map(1, 2)
        .text("heads")
        .array(0, 0)
        .done();
    assert_eq!(
        wire::decode(&frame),
        Err(DecodeError::MissingField("timestamp"))
    );
}

#[test]
fn lenient_where_javascript_never_looks() {
    // targetId is never checked on receipt; a peer's selectedProtocolVersion is never read.
    let frame = Cbor::default()
        .map(2, 2)
        .kv("type", "peer")
        .kv("senderId", "server")
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::Peer(Peer {
            sender_id: "server".into(),
            peer_metadata: None,
            selected_protocol_version: "1".into(),
            target_id: String::new(),
        }))
    );
    // An unknown type is kept whatever its sender field holds.
    let frame = Cbor::default()
        .map(2, 2)
        .kv("type", "from-the-future")
        .text("senderId")
        .uint(3, 0)
        .done();
    assert_eq!(
        wire::decode(&frame),
        Ok(Message::Unknown(Unknown {
            type_name: "from-the-future".into(),
            sender_id: None,
        }))
    );
}

#[test]
fn wrong_types_are_named() {
    for (frame, field, expected) in [
        (
            Cbor::default().map(1, 2).text("type").uint(1, 0).done(),
            "type",
            "text",
        ),
        (
            Cbor::default()
                .map(5, 2)
                .kv("type", "sync")
                .kv("senderId", "a")
                .kv("targetId", "b")
                .kv("documentId", DOC)
                .kv("data", "text, not bytes")
                .done(),
            "data",
            "a byte string",
        ),
        (
            Cbor::default()
                .map(3, 2)
                .kv("type", "join")
                .kv("senderId", "a")
                .kv("peerMetadata", "x")
                .done(),
            "peerMetadata",
            "a map",
        ),
        (
            Cbor::default()
                .map(3, 2)
                .kv("type", "join")
                .kv("senderId", "a")
                .text("peerMetadata")
                .map(1, 2)
                .kv("isEphemeral", "yes")
                .done(),
            "isEphemeral",
            "a boolean",
        ),
        (
            Cbor::default()
                .map(3, 2)
                .kv("type", "join")
                .kv("senderId", "a")
                .text("supportedProtocolVersions")
                .array(1, 0)
                .uint(1, 0)
                .done(),
            "supportedProtocolVersions",
            "an array of text",
        ),
        (
            Cbor::default()
                .map(3, 2)
                .kv("type", "remote-subscription-change")
                .kv("senderId", "a")
                .kv("add", "x")
                .done(),
            "add",
            "an array of text",
        ),
    ] {
        assert_eq!(
            wire::decode(&frame),
            Err(DecodeError::WrongType { field, expected }),
            "{field}"
        );
    }
}

#[test]
fn malformed_frames_give_typed_errors() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![], DecodeError::Truncated),
        (vec![0xb9, 0x00], DecodeError::Truncated),
        (vec![0x83, 1, 2, 3], DecodeError::NotAMap),
        (vec![0x64, b't', b'y', b'p', b'e'], DecodeError::NotAMap),
        (vec![0xa0], DecodeError::MissingField("type")),
        (vec![0xb9, 0x00, 0x00], DecodeError::MissingField("type")),
        // An indefinite-length map (cbor-x never writes one).
        (
            vec![0xbf, 0xff],
            DecodeError::Unsupported("indefinite-length item"),
        ),
        // A map claiming 2^32 entries in a 9-byte frame: refused before any allocation.
        (
            vec![0xba, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            DecodeError::Truncated,
        ),
        // A byte string claiming 2^64 - 1 bytes.
        (
            Cbor::default()
                .map(1, 2)
                .text("x")
                .raw(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .done(),
            DecodeError::Truncated,
        ),
        // Invalid UTF-8 in a text field.
        (
            Cbor::default()
                .map(1, 2)
                .text("type")
                .raw(&[0x62, 0xff, 0xfe])
                .done(),
            DecodeError::InvalidUtf8("type"),
        ),
        // Reserved additional information.
        (
            Cbor::default().map(1, 2).text("x").raw(&[0x1c]).done(),
            DecodeError::Unsupported("reserved additional information"),
        ),
    ];
    for (frame, error) in cases {
        assert_eq!(wire::decode(&frame), Err(error), "{}", hex::encode(&frame));
    }
    let mut frame = wire::encode(&sync_message());
    frame.extend([0, 0]);
    assert_eq!(wire::decode(&frame), Err(DecodeError::TrailingBytes(2)));
}

#[test]
fn nesting_is_bounded() {
    let deep = |levels: usize| {
        Cbor::default()
            .map(3, 2)
            .kv("type", "leave")
            .kv("senderId", "s")
            .text("extra")
            .raw(&vec![0x81; levels])
            .uint(0, 0)
            .done()
    };
    assert!(wire::decode(&deep(30)).is_ok());
    assert_eq!(wire::decode(&deep(40)), Err(DecodeError::TooDeep));
    assert_eq!(wire::decode(&deep(100_000)), Err(DecodeError::TooDeep));
}

#[test]
fn lists_are_bounded() {
    let versions = |n: usize| {
        let mut c = Cbor::default()
            .map(3, 2)
            .kv("type", "join")
            .kv("senderId", "s")
            .text("supportedProtocolVersions")
            .array(n as u64, 0);
        for _ in 0..n {
            c = c.text("");
        }
        c.done()
    };
    let Ok(Message::Join(j)) = wire::decode(&versions(MAX_LIST_LEN)) else {
        panic!();
    };
    assert_eq!(j.supported_protocol_versions.unwrap().len(), MAX_LIST_LEN);
    assert_eq!(
        wire::decode(&versions(MAX_LIST_LEN + 1)),
        Err(DecodeError::TooManyItems {
            field: "supportedProtocolVersions",
            limit: MAX_LIST_LEN
        })
    );
    // Unknown fields are only skipped, so they may be as long as the frame.
    let mut c = Cbor::default()
        .map(3, 2)
        .kv("type", "leave")
        .kv("senderId", "s")
        .text("extra")
        .array(100_000, 0);
    for _ in 0..100_000 {
        c = c.uint(0, 0);
    }
    assert!(wire::decode(&c.done()).is_ok());
}

#[test]
fn absent_optional_fields_are_omitted() {
    let frame = wire::encode(&Message::Join(Join {
        sender_id: "c".into(),
        peer_metadata: None,
        supported_protocol_versions: None,
    }));
    assert_eq!(
        frame,
        Cbor::default()
            .map(2, 2)
            .kv("type", "join")
            .kv("senderId", "c")
            .done()
    );
    let frame = wire::encode(&Message::Error(ErrorMessage {
        sender_id: None,
        target_id: None,
        message: "m".into(),
    }));
    assert_eq!(
        frame,
        Cbor::default()
            .map(2, 2)
            .kv("type", "error")
            .kv("message", "m")
            .done()
    );
    let frame = wire::encode(&Message::Status(ServerStatus {
        sender_id: "s".into(),
        target_id: "t".into(),
        state: STATUS_DEGRADED.into(),
        message: None,
    }));
    assert_eq!(
        frame,
        Cbor::default()
            .map(4, 2)
            .kv("type", "learnsync-status")
            .kv("senderId", "s")
            .kv("targetId", "t")
            .kv("state", "degraded")
            .done()
    );
}

/// Where the JavaScript literal always has the key, the encoder writes `undefined` (f7), as
/// the golden frames show: a storage-less peer's `storageId`, a subscription's `add`/`remove`.
#[test]
fn undefined_where_javascript_writes_it() {
    let frame = wire::encode(&Message::Join(Join {
        sender_id: "c".into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: None,
        }),
        supported_protocol_versions: None,
    }));
    assert_eq!(
        frame,
        Cbor::default()
            .map(3, 2)
            .kv("type", "join")
            .kv("senderId", "c")
            .text("peerMetadata")
            .map(1, 2)
            .text("storageId")
            .raw(&[0xf7])
            .done()
    );
    let frame = wire::encode(&Message::RemoteSubscriptionChange(
        RemoteSubscriptionChange {
            sender_id: "s".into(),
            target_id: "t".into(),
            add: None,
            remove: None,
        },
    ));
    assert_eq!(
        frame,
        Cbor::default()
            .map(5, 2)
            .kv("type", "remote-subscription-change")
            .kv("targetId", "t")
            .text("add")
            .raw(&[0xf7])
            .text("remove")
            .raw(&[0xf7])
            .kv("senderId", "s")
            .done()
    );
}

#[test]
fn long_and_non_ascii_values_use_wider_headers() {
    let message = Message::Ephemeral(Ephemeral {
        sender_id: "é".repeat(200),
        target_id: "ü".repeat(20_000),
        count: 1,
        session_id: String::new(),
        document_id: doc(),
        data: vec![7; 70_000],
    });
    let frame = wire::encode(&message);
    let has = |needle: &[u8]| frame.windows(needle.len()).any(|w| w == needle);
    assert!(has(&[0x79, 0x01, 0x90, 0xc3, 0xa9])); // 400 bytes of "é"
    assert!(has(&[0x79, 0x9c, 0x40, 0xc3, 0xbc])); // 40,000 bytes of "ü"
    assert!(has(&[0x5a, 0x00, 0x01, 0x11, 0x70, 7])); // 70,000 bytes of data
    assert_eq!(wire::decode(&frame), Ok(message));
}

#[test]
fn many_storage_ids_use_a_four_byte_map_header() {
    let message = Message::RemoteHeadsChanged(RemoteHeadsChanged {
        sender_id: "s".into(),
        target_id: "t".into(),
        document_id: doc(),
        new_heads: (0..70_000)
            .map(|i| {
                (
                    format!("{i}"),
                    RemoteHeads {
                        heads: vec![],
                        timestamp: i,
                    },
                )
            })
            .collect(),
    });
    let frame = wire::encode(&message);
    let at = frame.windows(8).position(|w| w == b"newHeads").unwrap() + 8;
    assert_eq!(&frame[at..at + 5], &[0xba, 0x00, 0x01, 0x11, 0x70]);
    // More storage ids than a message may carry: a typed error, not a giant allocation.
    assert_eq!(
        wire::decode(&frame),
        Err(DecodeError::TooManyItems {
            field: "newHeads",
            limit: MAX_LIST_LEN
        })
    );
}

#[test]
fn encode_into_appends() {
    let mut buf = b"keep".to_vec();
    wire::encode_into(&sync_message(), &mut buf);
    assert_eq!(&buf[..4], b"keep");
    assert_eq!(wire::decode(&buf[4..]), Ok(sync_message()));
}

#[test]
fn type_name_and_sender_id() {
    let m = sync_message();
    assert_eq!(m.type_name(), "sync");
    assert_eq!(m.sender_id(), Some("a"));
    let u = Message::Unknown(Unknown {
        type_name: "x-y".into(),
        sender_id: None,
    });
    assert_eq!(u.type_name(), "x-y");
    assert_eq!(u.sender_id(), None);
    assert_eq!(wire::decode(&wire::encode(&u)), Ok(u));
}
