#![allow(clippy::unwrap_used)]
//! Checks the golden vectors in `proto/vectors/` (see its README.md) against
//! this crate. The TypeScript SDK checks the same files; nothing here
//! regenerates them.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use swarmcast_proto::tracker::{ClientMsg, ErrorCode, ServerMsg};
use swarmcast_proto::wire::{Frame, RejectReason};
use swarmcast_proto::{
    FrameError, MessageError, RenditionId, Role, StreamId, TokenError, TokenKey,
};

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, key: &str, name: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: `{key}` is not a string"))
}

fn u64_of(v: &Value, key: &str, name: &str) -> u64 {
    let n = v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: `{key}` is not a u64"));
    assert!(n < 1 << 53, "{name}: `{key}` is not exact in a JS number");
    n
}

fn u32_of(v: &Value, key: &str, name: &str) -> u32 {
    u32::try_from(u64_of(v, key, name)).unwrap_or_else(|_| panic!("{name}: `{key}` is over u32"))
}

/// A byte string: a hex string, or `{"prefix_hex", "fill_byte", "len"}`
/// (the prefix, then `fill_byte` repeated up to `len` bytes in all).
fn bytes_of(v: &Value, name: &str) -> Vec<u8> {
    if let Some(s) = v.as_str() {
        return hex::decode(s).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"));
    }
    let mut out = hex::decode(str_of(v, "prefix_hex", name)).unwrap();
    let fill = u8::try_from(u64_of(v, "fill_byte", name)).unwrap();
    let len = u64_of(v, "len", name) as usize;
    assert!(out.len() <= len, "{name}: prefix longer than len");
    out.resize(len, fill);
    out
}

/// A text: a string, or `{"prefix", "repeat", "count", "suffix"}`.
fn text_of(v: &Value, name: &str) -> String {
    if let Some(s) = v.as_str() {
        return s.to_owned();
    }
    let count = u64_of(v, "count", name) as usize;
    [
        str_of(v, "prefix", name).to_owned(),
        str_of(v, "repeat", name).repeat(count),
        str_of(v, "suffix", name).to_owned(),
    ]
    .concat()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

// ---- frames.json ----------------------------------------------------------

const REASONS: [RejectReason; 3] = [
    RejectReason::Busy,
    RejectReason::NotFound,
    RejectReason::BadRequest,
];

fn frame_error_kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::Empty => "empty",
        FrameError::TooLarge(_) => "too_large",
        FrameError::Truncated { .. } => "truncated",
        FrameError::Trailing(_) => "trailing",
        FrameError::UnknownType(_) => "unknown_type",
        FrameError::UnknownReason(_) => "unknown_reason",
        FrameError::BadRendition(_) => "bad_rendition",
        FrameError::SegmentTooLarge(_) => "segment_too_large",
        FrameError::ChunkOverrun { .. } => "chunk_overrun",
        FrameError::BitmapTooLarge(_) => "bitmap_too_large",
    }
}

/// The frame a vector's `frame` object describes; its fields must be exactly
/// those of its type.
fn frame_of(f: &Value, name: &str) -> Frame {
    let ty = str_of(f, "type", name);
    let fields: &[&str] = match ty {
        "have_map" => &["type", "rendition", "base_seq", "bitmap"],
        "have" | "cancel" => &["type", "rendition", "seq"],
        "request" => &["type", "rendition", "seq", "offset", "length"],
        "chunk" => &["type", "rendition", "seq", "offset", "total", "data"],
        "reject" => &["type", "rendition", "seq", "reason"],
        other => panic!("{name}: unknown frame type {other:?}"),
    };
    assert_eq!(
        keys(f),
        fields.iter().copied().collect(),
        "{name}: frame fields"
    );
    let rendition = RenditionId::new(str_of(f, "rendition", name)).unwrap();
    let seq = || u64_of(f, "seq", name);
    match ty {
        "have_map" => Frame::HaveMap {
            rendition,
            base_seq: u64_of(f, "base_seq", name),
            bitmap: Bytes::from(bytes_of(&f["bitmap"], name)),
        },
        "have" => Frame::Have {
            rendition,
            seq: seq(),
        },
        "cancel" => Frame::Cancel {
            rendition,
            seq: seq(),
        },
        "request" => Frame::Request {
            rendition,
            seq: seq(),
            offset: u32_of(f, "offset", name),
            length: u32_of(f, "length", name),
        },
        "chunk" => Frame::Chunk {
            rendition,
            seq: seq(),
            offset: u32_of(f, "offset", name),
            total: u32_of(f, "total", name),
            data: Bytes::from(bytes_of(&f["data"], name)),
        },
        "reject" => {
            let reason = str_of(f, "reason", name);
            Frame::Reject {
                rendition,
                seq: seq(),
                reason: REASONS
                    .into_iter()
                    .find(|r| r.as_str() == reason)
                    .unwrap_or_else(|| panic!("{name}: unknown reason {reason:?}")),
            }
        }
        _ => unreachable!(),
    }
}

/// Checks one frame case; returns what it covered (`type` or `reason` or error kind).
fn check_frame(case: &Value) -> String {
    let name = str_of(case, "name", "frame case");
    let wire = Bytes::from(bytes_of(&case["hex"], name));
    match (case.get("frame"), case.get("error")) {
        (Some(f), None) => {
            let want = frame_of(f, name);
            let got = Frame::decode(wire.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "{name}: decoded frame");
            assert_eq!(got.encoded_len(), wire.len(), "{name}: encoded_len");
            let again = want
                .encode()
                .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
            assert!(again == wire, "{name}: re-encoding differs");
            match &want {
                Frame::Reject { reason, .. } => format!("reject {}", reason.as_str()),
                _ => str_of(f, "type", name).to_owned(),
            }
        }
        (None, Some(kind)) => {
            let kind = kind.as_str().unwrap();
            match Frame::decode(wire) {
                Ok(f) => panic!("{name}: decoded {f:?}, expected {kind}"),
                Err(e) => assert_eq!(frame_error_kind(&e), kind, "{name}: {e}"),
            }
            format!("error {kind}")
        }
        _ => panic!("{name}: a case has exactly one of `frame` and `error`"),
    }
}

#[test]
fn frames() {
    let cases = load("frames.json");
    let covered: BTreeSet<String> = cases.as_array().unwrap().iter().map(check_frame).collect();
    let mut want: BTreeSet<String> = ["have_map", "have", "request", "chunk", "cancel"]
        .map(String::from)
        .into();
    want.extend(REASONS.map(|r| format!("reject {}", r.as_str())));
    for e in [
        FrameError::Empty,
        FrameError::TooLarge(0),
        FrameError::Truncated { needed: 0, have: 0 },
        FrameError::Trailing(0),
        FrameError::UnknownType(0),
        FrameError::UnknownReason(0),
        FrameError::BadRendition(swarmcast_proto::IdError::BadDigest),
        FrameError::SegmentTooLarge(0),
        FrameError::ChunkOverrun {
            offset: 0,
            len: 0,
            total: 0,
        },
        FrameError::BitmapTooLarge(0),
    ] {
        want.insert(format!("error {}", frame_error_kind(&e)));
    }
    assert_eq!(
        covered, want,
        "frames.json covers every frame type, reason and error"
    );
}

// ---- tracker.json ---------------------------------------------------------

fn error_code(name: &str) -> ErrorCode {
    serde_json::from_value(Value::String(name.to_owned()))
        .unwrap_or_else(|e| panic!("unknown error code {name:?}: {e}"))
}

/// Checks one tracker case with the decoder and encoder of its direction;
/// returns what it covered.
fn check_message<T>(
    case: &Value,
    decode: fn(&str) -> Result<T, MessageError>,
    encode: fn(&T) -> String,
) -> String
where
    T: Serialize + PartialEq + std::fmt::Debug,
{
    let name = str_of(case, "name", "tracker case");
    let text = text_of(&case["json"], name);
    match (case.get("message"), case.get("error")) {
        (Some(want), None) => {
            let msg = decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                &serde_json::to_value(&msg).unwrap(),
                want,
                "{name}: decoded message"
            );
            let encoded = encode(&msg);
            if case["canonical"].as_bool().unwrap_or(false) {
                assert_eq!(encoded, text, "{name}: encode is not byte-identical");
            }
            assert_eq!(
                decode(&encoded).unwrap(),
                msg,
                "{name}: encode/decode round trip"
            );
            let ty = str_of(want, "type", name);
            match want.get("signal").or(want.get("code")) {
                Some(Value::Object(s)) => format!("{ty} {}", s["kind"].as_str().unwrap()),
                Some(Value::String(code)) => format!("{ty} {code}"),
                _ => ty.to_owned(),
            }
        }
        (None, Some(code)) => {
            let code = code.as_str().unwrap();
            match decode(&text) {
                Ok(m) => panic!("{name}: decoded {m:?}, expected {code}"),
                Err(e) => assert_eq!(e.code(), error_code(code), "{name}: {e}"),
            }
            format!("invalid {code}")
        }
        _ => panic!("{name}: a case has exactly one of `message` and `error`"),
    }
}

fn check_tracker(case: &Value) -> String {
    let dir = str_of(case, "direction", "tracker case");
    let covered = match dir {
        "client" => check_message(case, ClientMsg::decode, ClientMsg::encode),
        "server" => check_message(case, ServerMsg::decode, ServerMsg::encode),
        other => panic!("unknown direction {other:?}"),
    };
    format!("{dir} {covered}")
}

#[test]
fn tracker() {
    let cases = load("tracker.json");
    let covered: BTreeSet<String> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(check_tracker)
        .collect();
    let signals = ["offer", "answer", "candidate", "end_of_candidates"];
    let mut want = BTreeSet::new();
    for ty in [
        "hello",
        "have",
        "lost",
        "have_map",
        "want_peers",
        "peer_closed",
        "report_peer",
        "publish",
        "stats",
        "cell_report",
        "ping",
        "pong",
    ] {
        want.insert(format!("client {ty}"));
    }
    for ty in [
        "welcome",
        "peers",
        "peer_left",
        "segment",
        "fetch",
        "stripes",
        "ping",
        "pong",
        "redirect",
    ] {
        want.insert(format!("server {ty}"));
    }
    for s in signals {
        want.insert(format!("client signal {s}"));
        want.insert(format!("server signal {s}"));
    }
    for code in [
        "unsupported_version",
        "malformed",
        "too_large",
        "unauthorized",
        "token_expired",
        "not_joined",
        "unknown_peer",
        "peer_id_taken",
        "rate_limited",
        "forbidden",
        "overloaded",
        "internal",
    ] {
        error_code(code);
        want.insert(format!("server error {code}"));
    }
    for dir in ["client", "server"] {
        for code in ["unsupported_version", "malformed", "too_large"] {
            want.insert(format!("{dir} invalid {code}"));
        }
    }
    assert_eq!(
        covered, want,
        "tracker.json covers every message, signal and error code"
    );
}

// ---- tokens.json ----------------------------------------------------------

fn token_error_kind(e: TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed",
        TokenError::BadSignature => "bad_signature",
        TokenError::Expired => "expired",
        TokenError::WrongStream => "wrong_stream",
        TokenError::WrongRole => "wrong_role",
    }
}

fn role_of(v: &Value, name: &str) -> Role {
    str_of(v, "role", name)
        .parse()
        .unwrap_or_else(|_| panic!("{name}: bad role"))
}

fn check_token(key: &TokenKey, case: &Value) -> &'static str {
    let name = str_of(case, "name", "token case");
    let token = str_of(case, "token", name);
    let stream = StreamId::new(str_of(case, "stream", name)).unwrap();
    let role = role_of(case, name);
    let got = key.verify(token, &stream, role, u64_of(case, "now", name));
    match (case.get("claims"), case.get("error")) {
        (Some(c), None) => {
            let claims = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(claims.stream.as_str(), str_of(c, "stream", name), "{name}");
            assert_eq!(claims.role, role_of(c, name), "{name}");
            assert_eq!(claims.expires_at, u64_of(c, "expires_at", name), "{name}");
            assert_eq!(key.sign(&claims), token, "{name}: signing is deterministic");
            "ok"
        }
        (None, Some(kind)) => {
            let kind = kind.as_str().unwrap();
            match got {
                Ok(c) => panic!("{name}: verified {c:?}, expected {kind}"),
                Err(e) => assert_eq!(token_error_kind(e), kind, "{name}: {e}"),
            }
            token_error_kind(got.unwrap_err())
        }
        _ => panic!("{name}: a case has exactly one of `claims` and `error`"),
    }
}

#[test]
fn tokens() {
    let file = load("tokens.json");
    let key = TokenKey::new(&hex::decode(str_of(&file, "secret_hex", "tokens.json")).unwrap());
    let covered: BTreeSet<&str> = file["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| check_token(&key, c))
        .collect();
    let want = [
        "ok",
        "expired",
        "wrong_stream",
        "wrong_role",
        "bad_signature",
        "malformed",
    ];
    assert_eq!(covered, want.into(), "tokens.json covers every outcome");
}
