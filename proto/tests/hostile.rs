#![allow(clippy::unwrap_used)]
//! Hostile input: property tests that no decoder panics and every codec
//! round-trips, plus explicit tests of the classic lies (truncation, oversize,
//! lying lengths, overrunning chunks).

use bytes::Bytes;
use proptest::prelude::*;
use swarmcast_proto::tracker::{
    ClientKind, ClientMsg, ErrorCode, Hello, IceServer, MAX_LIST, MAX_MESSAGE, MAX_SDP,
    MAX_STRIPES, PeerConfig, PeerInfo, SegmentRef, ServerMsg, Signal, StatsReport, StripeSource,
};
use swarmcast_proto::wire::{
    Frame, MAX_BITMAP, MAX_CHUNK_DATA, MAX_FRAME, MAX_SEGMENT_SIZE, RejectReason,
};
use swarmcast_proto::{
    Claims, FrameError, PeerId, RenditionId, Role, SegmentId, SegmentMeta, Sha256Digest, StreamId,
    TokenError, TokenKey,
};

// ---- strategies -------------------------------------------------------------

fn rendition() -> impl Strategy<Value = RenditionId> {
    "[A-Za-z0-9_-]{1,16}".prop_map(|s| RenditionId::new(s).unwrap())
}

fn stream() -> impl Strategy<Value = StreamId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| StreamId::new(s).unwrap())
}

fn peer() -> impl Strategy<Value = PeerId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| PeerId::new(s).unwrap())
}

/// `len` bytes derived from `seed`: cheap to generate even at 16 KiB.
fn filled(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        Just(RejectReason::Busy),
        Just(RejectReason::NotFound),
        Just(RejectReason::BadRequest)
    ]
}

fn chunk() -> impl Strategy<Value = Frame> {
    (rendition(), any::<u64>(), 0..=MAX_CHUNK_DATA, any::<u8>()).prop_flat_map(
        |(rendition, seq, len, seed)| {
            let len32 = len as u32;
            (len32..=MAX_SEGMENT_SIZE).prop_flat_map(move |total| {
                (0..=total - len32).prop_map(move |offset| Frame::Chunk {
                    rendition,
                    seq,
                    offset,
                    total,
                    data: filled(len, seed),
                })
            })
        },
    )
}

/// Every variant, with valid renditions and sizes.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (rendition(), any::<u64>(), 0..=MAX_BITMAP, any::<u8>()).prop_map(
            |(rendition, base_seq, n, seed)| {
                Frame::HaveMap {
                    rendition,
                    base_seq,
                    bitmap: filled(n, seed),
                }
            }
        ),
        (rendition(), any::<u64>()).prop_map(|(rendition, seq)| Frame::Have { rendition, seq }),
        (rendition(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
            |(rendition, seq, offset, length)| {
                Frame::Request {
                    rendition,
                    seq,
                    offset,
                    length,
                }
            }
        ),
        chunk(),
        (rendition(), any::<u64>()).prop_map(|(rendition, seq)| Frame::Cancel { rendition, seq }),
        (rendition(), any::<u64>(), reason()).prop_map(|(rendition, seq, reason)| Frame::Reject {
            rendition,
            seq,
            reason
        }),
    ]
}

fn segment_ref() -> impl Strategy<Value = SegmentRef> {
    (rendition(), any::<u64>()).prop_map(|(rendition, seq)| SegmentRef { rendition, seq })
}

fn kind() -> impl Strategy<Value = ClientKind> {
    prop_oneof![
        Just(ClientKind::Native),
        Just(ClientKind::Browser),
        Just(ClientKind::Relay),
        Just(ClientKind::Publisher)
    ]
}

/// Free text within MAX_TEXT and without control characters.
fn text() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{0,64}"
}

fn signal() -> impl Strategy<Value = Signal> {
    prop_oneof![
        "[ -~\r\n]{0,2000}".prop_map(|sdp| Signal::Offer { sdp }),
        "[ -~\r\n]{0,2000}".prop_map(|sdp| Signal::Answer { sdp }),
        (
            "[ -~]{0,300}",
            proptest::option::of("[A-Za-z0-9]{0,8}"),
            any::<Option<u16>>()
        )
            .prop_map(|(candidate, sdp_mid, sdp_mline_index)| Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index
            }),
        Just(Signal::EndOfCandidates),
    ]
}

fn meta() -> impl Strategy<Value = SegmentMeta> {
    (
        stream(),
        rendition(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(s, r, seq, size, digest, duration_ms, published_at_ms)| SegmentMeta {
                id: SegmentId::new(s, r, seq),
                size,
                sha256: Sha256Digest(digest),
                duration_ms,
                published_at_ms,
                blocks: None,
            },
        )
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (
            "[A-Za-z0-9_.-]{0,512}",
            stream(),
            peer(),
            kind(),
            any::<u32>(),
            proptest::option::of(text())
        )
            .prop_map(|(token, stream, peer_id, kind, upload_kbps, region)| {
                ClientMsg::Hello(Hello {
                    token,
                    stream,
                    peer_id,
                    kind,
                    upload_kbps,
                    region,
                    cell: None,
                })
            }),
        proptest::collection::vec(segment_ref(), 0..32)
            .prop_map(|segments| ClientMsg::Have { segments }),
        proptest::collection::vec(segment_ref(), 0..32)
            .prop_map(|segments| ClientMsg::Lost { segments }),
        (
            rendition(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(rendition, base_seq, bits)| ClientMsg::HaveMap {
                rendition,
                base_seq,
                bitmap: hex::encode(bits),
            }),
        any::<u16>().prop_map(|count| ClientMsg::WantPeers { count }),
        (peer(), signal()).prop_map(|(to, signal)| ClientMsg::Signal { to, signal }),
        peer().prop_map(|peer_id| ClientMsg::PeerClosed { peer_id }),
        peer().prop_map(|peer_id| ClientMsg::ReportPeer {
            peer_id,
            reason: swarmcast_proto::tracker::ReportReason::HashMismatch
        }),
        meta().prop_map(|meta| ClientMsg::Publish { meta }),
        (
            any::<[u64; 5]>(),
            any::<Option<u64>>(),
            any::<u32>(),
            any::<Option<u64>>()
        )
            .prop_map(|(c, latency_ms, peers, startup_ms)| {
                ClientMsg::Stats(StatsReport {
                    http_bytes: c[0],
                    p2p_bytes: c[1],
                    uploaded_bytes: c[2],
                    stalls: c[3],
                    stall_ms: c[4],
                    latency_ms,
                    peers,
                    startup_ms,
                })
            }),
        any::<u64>().prop_map(|nonce| ClientMsg::Ping { nonce }),
        any::<u64>().prop_map(|nonce| ClientMsg::Pong { nonce }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(vec![
        ErrorCode::UnsupportedVersion,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::NotJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::PeerIdTaken,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
    ])
}

fn stripe_source() -> impl Strategy<Value = StripeSource> {
    prop_oneof![
        Just(StripeSource::Origin),
        Just(StripeSource::Swarm),
        peer().prop_map(|peer_id| StripeSource::Peer { peer_id }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let ice = (
        proptest::collection::vec("[ -~]{0,64}", 0..4),
        proptest::option::of("[ -~]{0,32}"),
        proptest::option::of("[ -~]{0,32}"),
    )
        .prop_map(|(urls, username, credential)| IceServer {
            urls,
            username,
            credential,
        });
    let config = (
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(ice, 0..4),
    )
        .prop_map(
            |(max_peers, window_segments, ping_interval_ms, idle_timeout_ms, ice_servers)| {
                PeerConfig {
                    max_peers,
                    window_segments,
                    ping_interval_ms,
                    idle_timeout_ms,
                    ice_servers,
                }
            },
        );
    let info = (peer(), kind(), proptest::option::of(text()), any::<bool>()).prop_map(
        |(peer_id, kind, region, initiator)| PeerInfo {
            peer_id,
            kind,
            region,
            initiator,
        },
    );
    prop_oneof![
        (peer(), config).prop_map(|(peer_id, config)| ServerMsg::Welcome { peer_id, config }),
        proptest::collection::vec(info, 0..16).prop_map(|peers| ServerMsg::Peers { peers }),
        peer().prop_map(|peer_id| ServerMsg::PeerLeft { peer_id }),
        (peer(), signal()).prop_map(|(from, signal)| ServerMsg::Signal { from, signal }),
        meta().prop_map(|meta| ServerMsg::Segment { meta }),
        meta().prop_map(|meta| ServerMsg::Fetch { meta }),
        (
            rendition(),
            proptest::collection::vec(stripe_source(), 1..=MAX_STRIPES),
            proptest::collection::vec(peer(), 0..8),
        )
            .prop_map(|(rendition, sources, children)| ServerMsg::Stripes {
                rendition,
                sources,
                children,
            }),
        (error_code(), ".{0,300}").prop_map(|(code, message)| ServerMsg::error(code, message)),
        any::<u64>().prop_map(|nonce| ServerMsg::Ping { nonce }),
        any::<u64>().prop_map(|nonce| ServerMsg::Pong { nonce }),
    ]
}

/// One edit of a text: delete a range, insert a string, or replace a char.
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 0..16usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (
            any::<usize>(),
            prop_oneof![r#"[{}\[\]",:0-9a-z\\ -]{1,8}"#, ".{1,4}"]
        )
            .prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Replace(at, c)),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize, extra: usize| i % (chars.len() + extra);
        match e {
            Edit::Delete(i, n) if !chars.is_empty() => {
                let from = at(*i, 0);
                let to = (from + n).min(chars.len());
                chars.drain(from..to);
            }
            Edit::Insert(i, s) => {
                let pos = at(*i, 1);
                chars.splice(pos..pos, s.chars());
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let pos = at(*i, 0);
                chars[pos] = *c;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn claims() -> impl Strategy<Value = Claims> {
    let role = prop_oneof![Just(Role::Viewer), Just(Role::Ingest), Just(Role::Relay)];
    (stream(), role, any::<u64>()).prop_map(|(stream, role, expires_at)| Claims {
        stream,
        role,
        expires_at,
    })
}

/// Bytes: mostly short, sometimes up to 20000 (over the frame limit).
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 0..20_000),
    ]
}

/// Decoding never panics, and whatever decodes re-encodes to the same bytes
/// (the format has exactly one encoding per frame).
fn decode_is_total(wire: Vec<u8>) -> Result<(), TestCaseError> {
    let wire = Bytes::from(wire);
    if let Ok(f) = Frame::decode(wire.clone()) {
        prop_assert_eq!(f.encode().unwrap(), wire);
    }
    Ok(())
}

// ---- properties ---------------------------------------------------------------

proptest! {
    #[test]
    fn frame_decode_of_any_bytes_never_panics(wire in junk()) {
        decode_is_total(wire)?;
    }

    /// Arbitrary bytes rarely get past the type byte; a valid frame with a
    /// few bytes changed, cut or added reaches every field check.
    #[test]
    fn frame_decode_of_mutated_frames_never_panics(
        f in frame(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut wire = f.encode().unwrap().to_vec();
        for (at, b) in flips {
            let i = at % wire.len();
            wire[i] = b;
        }
        wire.truncate(cut % (wire.len() + 1));
        wire.extend_from_slice(&extra);
        decode_is_total(wire)?;
    }

    #[test]
    fn frames_round_trip(f in frame()) {
        let wire = f.encode().unwrap();
        prop_assert!(wire.len() <= MAX_FRAME);
        prop_assert_eq!(wire.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(wire).unwrap(), f);
    }

    #[test]
    fn message_decode_of_any_text_never_panics(text in prop_oneof![".{0,256}", "[{}\\[\\]\":,0-9a-z_ ]{0,256}"]) {
        let _ = ClientMsg::decode(&text);
        let _ = ServerMsg::decode(&text);
    }

    #[test]
    fn client_decode_of_mutated_messages_never_panics(m in client_msg(), e in edits()) {
        let text = mutate(&m.encode(), &e);
        if let Ok(m) = ClientMsg::decode(&text) {
            prop_assert_eq!(ClientMsg::decode(&m.encode()).unwrap(), m);
        }
        let _ = ServerMsg::decode(&text);
    }

    #[test]
    fn server_decode_of_mutated_messages_never_panics(m in server_msg(), e in edits()) {
        let text = mutate(&m.encode(), &e);
        if let Ok(m) = ServerMsg::decode(&text) {
            prop_assert_eq!(ServerMsg::decode(&m.encode()).unwrap(), m);
        }
        let _ = ClientMsg::decode(&text);
    }

    #[test]
    fn client_messages_round_trip(m in client_msg()) {
        let text = m.encode();
        prop_assert!(text.len() <= MAX_MESSAGE);
        prop_assert_eq!(ClientMsg::decode(&text).unwrap(), m);
    }

    #[test]
    fn server_messages_round_trip(m in server_msg()) {
        let text = m.encode();
        prop_assert!(text.len() <= MAX_MESSAGE);
        prop_assert_eq!(ServerMsg::decode(&text).unwrap(), m);
    }

    #[test]
    fn token_decode_of_any_text_never_panics(t in prop_oneof![".{0,600}", "[A-Za-z0-9_=+/.-]{0,600}"]) {
        let key = TokenKey::new(b"secret");
        let _ = key.decode(&t);
    }

    #[test]
    fn signed_tokens_verify_to_their_claims(c in claims(), secret in proptest::collection::vec(any::<u8>(), 0..80)) {
        let key = TokenKey::new(&secret);
        let token = key.sign(&c);
        prop_assert_eq!(key.decode(&token).unwrap(), c.clone());
        if c.expires_at > 0 {
            prop_assert_eq!(key.verify(&token, &c.stream, c.role, c.expires_at - 1).unwrap(), c.clone());
        }
        prop_assert_eq!(key.verify(&token, &c.stream, c.role, c.expires_at), Err(TokenError::Expired));
    }

    #[test]
    fn any_single_byte_change_breaks_a_token(c in claims(), at in any::<usize>(), b in 0u8..128) {
        let key = TokenKey::new(b"secret");
        let mut token = key.sign(&c).into_bytes();
        let i = at % token.len();
        prop_assume!(token[i] != b);
        token[i] = b;
        let token = String::from_utf8(token).unwrap();
        prop_assert!(key.decode(&token).is_err(), "{token:?} still decodes");
    }
}

// ---- explicit hostile frames ------------------------------------------------

fn r360() -> RenditionId {
    RenditionId::new("360p").unwrap()
}

fn decode(wire: &[u8]) -> Result<Frame, FrameError> {
    Frame::decode(Bytes::copy_from_slice(wire))
}

/// `type, rendition_len, "360p", seq` for a frame of type `ty`.
fn head(ty: u8) -> Vec<u8> {
    let mut v = vec![ty, 4];
    v.extend_from_slice(b"360p");
    v.extend_from_slice(&42u64.to_be_bytes());
    v
}

fn assert_truncated(wire: &[u8], what: &str) {
    for n in 0..wire.len() {
        match decode(&wire[..n]) {
            Err(FrameError::Empty) if n == 0 => {}
            Err(FrameError::Truncated { needed, have }) => {
                assert_eq!(have, n, "{what}[..{n}]");
                assert!(
                    needed > n && needed <= wire.len(),
                    "{what}[..{n}] needed {needed}"
                );
            }
            other => panic!("{what}[..{n}]: {other:?}"),
        }
    }
    assert!(decode(wire).is_ok(), "{what} whole");
}

#[test]
fn every_prefix_of_a_frame_is_truncated() {
    let request = Frame::Request {
        rendition: r360(),
        seq: 42,
        offset: 1,
        length: 2,
    };
    assert_truncated(&request.encode().unwrap(), "request");
    let have_map = Frame::HaveMap {
        rendition: r360(),
        base_seq: 42,
        bitmap: Bytes::from_static(&[0xff, 0x80, 0x01]),
    };
    assert_truncated(&have_map.encode().unwrap(), "have_map");
    for f in [
        Frame::Have {
            rendition: r360(),
            seq: 42,
        },
        Frame::Cancel {
            rendition: r360(),
            seq: 42,
        },
        Frame::Reject {
            rendition: r360(),
            seq: 42,
            reason: RejectReason::Busy,
        },
    ] {
        assert_truncated(&f.encode().unwrap(), &format!("{f:?}"));
    }
}

/// A chunk's data is the rest of the frame (the data channel delimits
/// frames), so only a cut inside the header is truncation; a cut inside the
/// data is a shorter, valid chunk.
#[test]
fn chunk_prefixes() {
    let chunk = Frame::Chunk {
        rendition: r360(),
        seq: 42,
        offset: 100,
        total: 200,
        data: filled(50, 1),
    };
    let wire = chunk.encode().unwrap();
    let header = wire.len() - 50;
    assert_truncated(&wire[..header], "chunk header");
    for n in header..=wire.len() {
        let Frame::Chunk { data, offset, .. } = decode(&wire[..n]).unwrap() else {
            panic!("a chunk prefix decodes to a chunk");
        };
        assert_eq!((offset, &data[..]), (100, &wire[header..n]));
    }
}

#[test]
fn oversized_frames() {
    let mut wire = head(0x04);
    wire.extend_from_slice(&0u32.to_be_bytes());
    wire.extend_from_slice(&1_000_000u32.to_be_bytes());
    wire.resize(MAX_FRAME + 1, 0x5a);
    assert_eq!(decode(&wire), Err(FrameError::TooLarge(MAX_FRAME + 1)));
    wire.truncate(MAX_FRAME);
    assert!(matches!(decode(&wire), Ok(Frame::Chunk { .. })));
    assert_eq!(
        decode(&vec![0xff; 20_000]),
        Err(FrameError::TooLarge(20_000))
    );
    // The largest chunk the longest rendition allows is exactly MAX_FRAME.
    let max = Frame::Chunk {
        rendition: RenditionId::new("r".repeat(RenditionId::MAX_LEN)).unwrap(),
        seq: u64::MAX,
        offset: 0,
        total: MAX_SEGMENT_SIZE,
        data: filled(MAX_CHUNK_DATA, 0),
    };
    assert_eq!(max.encode().unwrap().len(), MAX_FRAME);
}

#[test]
fn lying_lengths() {
    // Rendition length 200 with 4 bytes behind it, then with 200 bytes of id.
    let mut wire = vec![0x02, 200];
    wire.extend_from_slice(b"360p");
    assert!(matches!(
        decode(&wire),
        Err(FrameError::Truncated {
            needed: 202,
            have: 6
        })
    ));
    let mut wire = vec![0x02, 200];
    wire.extend_from_slice(&[b'r'; 200]);
    wire.extend_from_slice(&42u64.to_be_bytes());
    assert!(matches!(decode(&wire), Err(FrameError::BadRendition(_))));
    // A rendition length of 0.
    let mut wire = vec![0x02, 0];
    wire.extend_from_slice(&42u64.to_be_bytes());
    assert!(matches!(decode(&wire), Err(FrameError::BadRendition(_))));

    // bitmap_len 1025 is refused before the bitmap is looked for.
    let mut wire = head(0x01);
    wire.extend_from_slice(&1025u16.to_be_bytes());
    assert_eq!(decode(&wire), Err(FrameError::BitmapTooLarge(1025)));
    wire.resize(wire.len() + 1025, 0xff);
    assert_eq!(decode(&wire), Err(FrameError::BitmapTooLarge(1025)));

    // bitmap_len pointing past the end.
    let mut wire = head(0x01);
    wire.extend_from_slice(&8u16.to_be_bytes());
    wire.extend_from_slice(&[0xff; 7]);
    assert!(matches!(decode(&wire), Err(FrameError::Truncated { .. })));
    wire.push(0xff);
    assert!(decode(&wire).is_ok());
    wire.push(0xff);
    assert_eq!(decode(&wire), Err(FrameError::Trailing(1)));
}

fn chunk_wire(offset: u32, total: u32, data: &[u8]) -> Vec<u8> {
    let mut wire = head(0x04);
    wire.extend_from_slice(&offset.to_be_bytes());
    wire.extend_from_slice(&total.to_be_bytes());
    wire.extend_from_slice(data);
    wire
}

#[test]
fn chunk_totals_and_overruns() {
    assert!(decode(&chunk_wire(0, MAX_SEGMENT_SIZE, b"x")).is_ok());
    assert_eq!(
        decode(&chunk_wire(0, MAX_SEGMENT_SIZE + 1, b"x")),
        Err(FrameError::SegmentTooLarge(u64::from(MAX_SEGMENT_SIZE) + 1))
    );
    assert_eq!(
        decode(&chunk_wire(0, u32::MAX, b"")),
        Err(FrameError::SegmentTooLarge(u64::from(u32::MAX)))
    );
    assert!(decode(&chunk_wire(10, 13, b"abc")).is_ok());
    for (offset, total, data) in [
        (10, 12, &b"abc"[..]),
        (0, 2, b"abc"),
        (8, 5, b""),
        (u32::MAX, MAX_SEGMENT_SIZE, b"x"),
    ] {
        assert!(
            matches!(
                decode(&chunk_wire(offset, total, data)),
                Err(FrameError::ChunkOverrun { .. })
            ),
            "{offset} {total} {data:?}"
        );
    }
}

#[test]
fn encoder_refuses_what_the_decoder_refuses() {
    let bitmap = Frame::HaveMap {
        rendition: r360(),
        base_seq: 0,
        bitmap: filled(MAX_BITMAP + 1, 0),
    };
    assert_eq!(
        bitmap.encode(),
        Err(FrameError::BitmapTooLarge(MAX_BITMAP + 1))
    );
    let total = Frame::Chunk {
        rendition: r360(),
        seq: 0,
        offset: 0,
        total: MAX_SEGMENT_SIZE + 1,
        data: Bytes::new(),
    };
    assert!(matches!(
        total.encode(),
        Err(FrameError::SegmentTooLarge(_))
    ));
}

// ---- explicit hostile messages ------------------------------------------------

#[test]
fn message_limits_are_exact() {
    let offer = |n: usize| ClientMsg::Signal {
        to: PeerId::new("b").unwrap(),
        signal: Signal::Offer { sdp: "x".repeat(n) },
    };
    assert!(ClientMsg::decode(&offer(MAX_SDP).encode()).is_ok());
    assert!(ClientMsg::decode(&offer(MAX_SDP + 1).encode()).is_err());

    let have = |n: usize| ClientMsg::Have {
        segments: vec![
            SegmentRef {
                rendition: r360(),
                seq: 1
            };
            n
        ],
    };
    assert!(ClientMsg::decode(&have(MAX_LIST).encode()).is_ok());
    assert_eq!(
        ClientMsg::decode(&have(MAX_LIST + 1).encode())
            .unwrap_err()
            .code(),
        ErrorCode::Malformed
    );

    let padded = |n: usize| {
        let head = r#"{"v":1,"type":"ping","nonce":1,"pad":""#;
        format!("{head}{}\"}}", "x".repeat(n - head.len() - 2))
    };
    assert_eq!(padded(MAX_MESSAGE).len(), MAX_MESSAGE);
    assert!(ClientMsg::decode(&padded(MAX_MESSAGE)).is_ok());
    assert_eq!(
        ClientMsg::decode(&padded(MAX_MESSAGE + 1))
            .unwrap_err()
            .code(),
        ErrorCode::TooLarge
    );
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    for open in ["[", "{\"v\":"] {
        let text = format!(
            "{{\"v\":1,\"type\":\"ping\",\"nonce\":1,\"x\":{}}}",
            open.repeat(5000)
        );
        assert_eq!(
            ClientMsg::decode(&text).unwrap_err().code(),
            ErrorCode::Malformed
        );
        assert_eq!(
            ServerMsg::decode(&text).unwrap_err().code(),
            ErrorCode::Malformed
        );
    }
}

#[test]
fn block_hash_lists_that_do_not_fit_their_segment_are_ignored() {
    let data = vec![7u8; 200_000];
    let good = swarmcast_proto::BlockHashes::for_segment(&data).unwrap();
    assert_eq!(good.sha256.len(), 200_000usize.div_ceil(16 * 1024));
    let meta = |blocks: Option<swarmcast_proto::BlockHashes>| SegmentMeta {
        id: SegmentId::new(
            StreamId::new("s").unwrap(),
            RenditionId::new("r").unwrap(),
            1,
        ),
        size: data.len() as u64,
        sha256: Sha256Digest::of(&data),
        duration_ms: 2000,
        published_at_ms: 0,
        blocks,
    };
    assert!(meta(Some(good.clone())).block_hashes().is_some());
    // Too few, too many, a zero block size, a size that implies more blocks.
    let mut short = good.clone();
    short.sha256.pop();
    let mut long = good.clone();
    long.sha256.push(Sha256Digest::of(b"x"));
    let zero = swarmcast_proto::BlockHashes {
        size: 0,
        ..good.clone()
    };
    let tiny = swarmcast_proto::BlockHashes {
        size: 1,
        ..good.clone()
    };
    for bad in [short, long, zero, tiny] {
        assert!(meta(Some(bad)).block_hashes().is_none());
    }
    // More than MAX_BLOCKS: none at that size; the origin takes larger
    // blocks for large segments.
    assert!(swarmcast_proto::BlockHashes::of(&data, 16).is_none());
    let big = vec![1u8; 9 * 1024 * 1024];
    let b = swarmcast_proto::BlockHashes::for_segment(&big).unwrap();
    assert_eq!((b.size, b.sha256.len()), (64 * 1024, 144));
    assert!(swarmcast_proto::BlockHashes::of(&data, 0).is_none());
    // Over the wire: a lying list decodes (no panic) and is ignored; a
    // malformed one is an error, not a crash.
    let mut v = serde_json::to_value(meta(None)).unwrap();
    v["blocks"] = serde_json::json!({"size": 65536, "sha256": ["00"]});
    assert!(serde_json::from_value::<SegmentMeta>(v.clone()).is_err());
    v["blocks"] = serde_json::json!({"size": 65536, "sha256": [Sha256Digest::of(b"a")]});
    let m: SegmentMeta = serde_json::from_value(v.clone()).unwrap();
    assert!(m.block_hashes().is_none());
    v["blocks"] = serde_json::json!({"size": -1, "sha256": []});
    assert!(serde_json::from_value::<SegmentMeta>(v).is_err());
}
