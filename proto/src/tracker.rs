//! The tracker protocol: JSON text messages over one WebSocket per peer.
//!
//! Every message is a JSON object with a version field `v` (currently
//! [`PROTOCOL_VERSION`]) and a `type` naming the message; the other fields
//! are the message's. A message with another `v` is refused with
//! [`ErrorCode::UnsupportedVersion`]. Unknown fields are ignored, so new
//! optional fields do not break old peers. Limits: [`MAX_MESSAGE`] bytes per
//! message, [`MAX_LIST`] entries per list, [`MAX_SDP`] bytes per SDP.
//!
//! Client → tracker: [`ClientMsg`]; tracker → client: [`ServerMsg`].

use serde::{Deserialize, Serialize};

use crate::error::MessageError;
use crate::ids::{PeerId, RenditionId, Seq, StreamId};
use crate::segment::SegmentMeta;

/// The version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest message accepted, in bytes of JSON text.
pub const MAX_MESSAGE: usize = 32 * 1024;
/// Most entries in any list of a message.
pub const MAX_LIST: usize = 512;
/// Largest SDP accepted in a signal.
pub const MAX_SDP: usize = 16 * 1024;
/// Largest ICE candidate line accepted in a signal.
pub const MAX_CANDIDATE: usize = 1024;
/// Largest free-text field (error message, region label, ICE server URL...).
pub const MAX_TEXT: usize = 256;
/// Largest have-map bitmap, in bytes (hex-encoded on the wire).
pub const MAX_BITMAP: usize = 1024;

/// What kind of client a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A native edge peer watching the stream.
    Native,
    /// A browser running the web player.
    Browser,
    /// A relay edge peer (watches nothing, serves its neighbours).
    Relay,
    /// The origin, publishing new segments.
    Publisher,
}

/// A segment within the session's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Rendition.
    pub rendition: RenditionId,
    /// Media sequence number.
    pub seq: Seq,
}

/// First message of every session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// A stream token ([`crate::token`]) granting the role that `kind` needs.
    pub token: String,
    /// The stream (swarm) to join.
    pub stream: StreamId,
    /// The peer's own random id.
    pub peer_id: PeerId,
    /// What the client is.
    pub kind: ClientKind,
    /// Upload capacity the peer offers, kilobits per second (0 = unknown).
    #[serde(default)]
    pub upload_kbps: u32,
    /// A coarse network region (an ASN or a label given to the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The cell of the stream this session joins, as a [`ServerMsg::Redirect`]
    /// named it (and the URL's `cell=` says). From a publisher session on the
    /// stream's home URL (no `cell=`): a tracker node feeding cell `n` with the
    /// stream's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
}

/// Most cells one stream is split into.
pub const MAX_CELLS: u32 = 65_535;

/// A WebRTC signalling payload relayed between two peers of one swarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// SDP offer.
    Offer {
        /// Session description.
        sdp: String,
    },
    /// SDP answer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The `candidate:` line.
        candidate: String,
        /// Media stream id the candidate belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// Media line index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// No more candidates will follow.
    EndOfCandidates,
}

/// Why a peer reports a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    /// It sent bytes whose SHA-256 differs from the origin's.
    HashMismatch,
    /// It broke the peer wire protocol.
    Protocol,
    /// It flooded the reporter with requests.
    Flood,
}

impl ReportReason {
    /// The reason's wire name (also a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ReportReason::HashMismatch => "hash_mismatch",
            ReportReason::Protocol => "protocol",
            ReportReason::Flood => "flood",
        }
    }
}

/// Counters a viewer reports; totals since the session started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Bytes of media fetched over HTTP.
    #[serde(default)]
    pub http_bytes: u64,
    /// Bytes of media received from peers.
    #[serde(default)]
    pub p2p_bytes: u64,
    /// Bytes of media sent to peers.
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// Playback stalls.
    #[serde(default)]
    pub stalls: u64,
    /// Time spent stalled, milliseconds.
    #[serde(default)]
    pub stall_ms: u64,
    /// Distance behind the live edge, milliseconds, when playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Neighbours connected now.
    #[serde(default)]
    pub peers: u32,
    /// Time from start to the first frame played, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u64>,
}

/// Client → tracker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Join a swarm (must come first).
    Hello(Hello),
    /// The peer now holds these segments.
    Have {
        /// Segments.
        segments: Vec<SegmentRef>,
    },
    /// The peer no longer holds these segments.
    Lost {
        /// Segments.
        segments: Vec<SegmentRef>,
    },
    /// Everything the peer holds of one rendition: bit `i` (MSB first) of
    /// `bitmap` (hex) set means it holds `base_seq + i`.
    HaveMap {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number of bit 0.
        base_seq: Seq,
        /// Hex bitmap, at most [`MAX_BITMAP`] bytes.
        bitmap: String,
    },
    /// Ask for up to `count` more neighbours.
    WantPeers {
        /// How many.
        count: u16,
    },
    /// The data channel to this neighbour closed (or never opened): the
    /// tracker frees the slot on both sides.
    PeerClosed {
        /// The neighbour.
        peer_id: PeerId,
    },
    /// A neighbour misbehaved; the reporter has dropped it.
    ReportPeer {
        /// The neighbour.
        peer_id: PeerId,
        /// What it did.
        reason: ReportReason,
    },
    /// Relay a signal to another peer of the same swarm.
    Signal {
        /// Recipient.
        to: PeerId,
        /// Payload.
        signal: Signal,
    },
    /// (Publisher only) a new segment exists, with its integrity record.
    Publish {
        /// The segment record, computed by the origin.
        meta: SegmentMeta,
    },
    /// Counters for metrics and the dashboard.
    Stats(StatsReport),
    /// (A tracker node feeding a cell, to the stream's home) the viewers and
    /// relays in its cell now.
    CellReport {
        /// Members of the cell.
        members: u32,
    },
    /// Keep-alive probe.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Session settings the tracker hands a peer in its welcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Most neighbours to keep.
    pub max_peers: u16,
    /// Segments per rendition in the live window.
    pub window_segments: u32,
    /// Interval of the tracker's pings, milliseconds.
    pub ping_interval_ms: u32,
    /// Silence after which the tracker forgets the peer, milliseconds.
    pub idle_timeout_ms: u32,
    /// STUN/TURN servers for WebRTC.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
}

/// A STUN or TURN server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A neighbour the tracker introduces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its id (address signals to it).
    pub peer_id: PeerId,
    /// What it is.
    pub kind: ClientKind,
    /// Its region label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// True when the receiver should send the offer (the other side waits).
    pub initiator: bool,
}

/// Error codes, stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `v` names a version the tracker does not speak.
    UnsupportedVersion,
    /// Not JSON or not a known message.
    Malformed,
    /// Over a size limit.
    TooLarge,
    /// No valid token for this stream and role.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// A message that needs a hello came before it (or a second hello).
    NotJoined,
    /// The recipient of a signal is not in the swarm.
    UnknownPeer,
    /// The peer id is taken in this swarm.
    PeerIdTaken,
    /// Too many messages; slow down.
    RateLimited,
    /// A message the session's role may not send.
    Forbidden,
    /// The tracker is at capacity.
    Overloaded,
    /// The tracker failed; retry later.
    Internal,
}

impl ErrorCode {
    /// The code's wire name (also used as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::PeerIdTaken => "peer_id_taken",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Tracker → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The hello was accepted.
    Welcome {
        /// The peer's id, as registered.
        peer_id: PeerId,
        /// Session settings.
        config: PeerConfig,
    },
    /// Neighbours to connect to.
    Peers {
        /// The peers.
        peers: Vec<PeerInfo>,
    },
    /// Drop the link to this peer: it left the swarm, or the tracker gave
    /// the link to a joiner (the mesh rewiring of ARCHITECTURE.md, "Peer
    /// selection").
    PeerLeft {
        /// Who.
        peer_id: PeerId,
    },
    /// A signal from another peer of the swarm.
    Signal {
        /// Sender.
        from: PeerId,
        /// Payload.
        signal: Signal,
    },
    /// A new segment exists; its record comes from the origin.
    Segment {
        /// The record.
        meta: SegmentMeta,
    },
    /// Dissemination plan: fetch this segment over HTTP now, then share it.
    Fetch {
        /// The record.
        meta: SegmentMeta,
    },
    /// Dissemination plan by stripes: from the next segment of `rendition`
    /// on, each segment is cut into `sources.len()` stripes of whole blocks
    /// (stripe `k` is blocks `k·B/S .. (k+1)·B/S` of a segment of `B`
    /// blocks) and stripe `k` comes from `sources[k]`: fetched over HTTP at
    /// once, asked of one neighbour as soon as the segment is announced (it
    /// streams the stripe as its own copy arrives), or left to the swarm.
    /// Stands until the next `stripes` message.
    Stripes {
        /// Rendition.
        rendition: RenditionId,
        /// Where each stripe comes from.
        sources: Vec<StripeSource>,
        /// The neighbours whose plan names this peer as a source: their
        /// requests are served as the bytes arrive, outside the upload
        /// slots that other requests share.
        #[serde(default)]
        children: Vec<PeerId>,
    },
    /// Something went wrong; `code` is for programs, `message` for people.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Keep-alive probe.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// (Instead of a welcome) the stream is split into cells spread over
    /// tracker nodes: connect again with `cell` in the URL (`cell=N`, see
    /// [`url_for`]) and in the hello.
    Redirect {
        /// The cell, 1..=[`MAX_CELLS`].
        cell: u32,
    },
}

/// Where one stripe of each new segment comes from (see
/// [`ServerMsg::Stripes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum StripeSource {
    /// Fetch it over HTTP as soon as the segment is announced.
    Origin,
    /// Ask this neighbour for it as soon as the segment is announced.
    Peer {
        /// The neighbour.
        peer_id: PeerId,
    },
    /// No plan: fetch it as any segment (from holders, HTTP at the last moment).
    Swarm,
}

/// Most stripes in a plan.
pub const MAX_STRIPES: usize = 16;

/// The tracker URL a client of `stream` connects to: `url` with
/// `stream=ID` in its query (added unless `url` already has a `stream`
/// parameter). The hello names the stream too; the URL lets a load
/// balancer in front of several tracker nodes route by stream without
/// reading the WebSocket (nginx `hash $arg_stream consistent`). Stream ids
/// are `[A-Za-z0-9_-]`, so the value needs no escaping.
pub fn url_with_stream(url: &str, stream: &crate::StreamId) -> String {
    url_for(url, stream, None)
}

/// [`url_with_stream`], and `cell=N` for a session of cell `N` (after a
/// [`ServerMsg::Redirect`]): a balancer routing by stream and cell
/// (`hash "$arg_stream/$arg_cell" consistent`) spreads a stream's cells
/// over its nodes. A `cell` parameter already in `url` is replaced.
pub fn url_for(url: &str, stream: &crate::StreamId, cell: Option<u32>) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let is =
        |kv: &str, key: &str| kv == key || kv.strip_prefix(key).is_some_and(|r| r.starts_with('='));
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !is(kv, "cell"))
        .map(str::to_string)
        .collect();
    if !params.iter().any(|kv| is(kv, "stream")) {
        params.push(format!("stream={}", stream.as_str()));
    }
    if let Some(c) = cell {
        params.push(format!("cell={c}"));
    }
    let mut out = path.to_string();
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u64,
    #[serde(flatten)]
    msg: &'a T,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

fn encode<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(&Envelope {
        v: PROTOCOL_VERSION,
        msg,
    })
    .expect("tracker messages serialize to JSON")
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, MessageError> {
    if text.len() > MAX_MESSAGE {
        return Err(MessageError::TooLarge(text.len()));
    }
    let probe: VersionProbe =
        serde_json::from_str(text).map_err(|e| MessageError::Malformed(e.to_string()))?;
    match probe.v {
        None => return Err(MessageError::Malformed("missing field `v`".into())),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(MessageError::UnsupportedVersion(n.as_u64().unwrap_or(0)));
        }
        Some(_) => return Err(MessageError::Malformed("field `v` is not a number".into())),
    }
    serde_json::from_str(text).map_err(|e| MessageError::Malformed(e.to_string()))
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), MessageError> {
    if len > max {
        return Err(MessageError::Malformed(format!(
            "{what} has {len} entries or bytes, over the limit of {max}"
        )));
    }
    Ok(())
}

fn check_text(what: &str, s: &str) -> Result<(), MessageError> {
    check_len(what, s.len(), MAX_TEXT)?;
    if s.chars().any(char::is_control) {
        return Err(MessageError::Malformed(format!(
            "{what} holds a control character"
        )));
    }
    Ok(())
}

fn check_signal(s: &Signal) -> Result<(), MessageError> {
    match s {
        Signal::Offer { sdp } | Signal::Answer { sdp } => check_len("sdp", sdp.len(), MAX_SDP),
        Signal::Candidate {
            candidate, sdp_mid, ..
        } => {
            check_len("candidate", candidate.len(), MAX_CANDIDATE)?;
            if let Some(mid) = sdp_mid {
                check_text("sdp_mid", mid)?;
            }
            Ok(())
        }
        Signal::EndOfCandidates => Ok(()),
    }
}

impl ClientMsg {
    /// Encodes to JSON text with the version field.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes and checks limits. Never panics on any input.
    pub fn decode(text: &str) -> Result<Self, MessageError> {
        let msg: Self = decode(text)?;
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            ClientMsg::Hello(h) => {
                check_len("token", h.token.len(), crate::token::MAX_TOKEN_LEN)?;
                if let Some(r) = &h.region {
                    check_text("region", r)?;
                }
                h.cell.map_or(Ok(()), check_cell)
            }
            ClientMsg::Have { segments } | ClientMsg::Lost { segments } => {
                check_len("segments", segments.len(), MAX_LIST)
            }
            ClientMsg::HaveMap { bitmap, .. } => {
                check_len("bitmap", bitmap.len(), 2 * MAX_BITMAP)?;
                hex::decode(bitmap)
                    .map(|_| ())
                    .map_err(|_| MessageError::Malformed("bitmap is not hex".into()))
            }
            ClientMsg::Signal { signal, .. } => check_signal(signal),
            ClientMsg::WantPeers { .. }
            | ClientMsg::PeerClosed { .. }
            | ClientMsg::ReportPeer { .. }
            | ClientMsg::Publish { .. }
            | ClientMsg::Stats(_)
            | ClientMsg::CellReport { .. }
            | ClientMsg::Ping { .. }
            | ClientMsg::Pong { .. } => Ok(()),
        }
    }

    /// The message's `type` name, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello(_) => "hello",
            ClientMsg::Have { .. } => "have",
            ClientMsg::Lost { .. } => "lost",
            ClientMsg::HaveMap { .. } => "have_map",
            ClientMsg::WantPeers { .. } => "want_peers",
            ClientMsg::PeerClosed { .. } => "peer_closed",
            ClientMsg::ReportPeer { .. } => "report_peer",
            ClientMsg::Signal { .. } => "signal",
            ClientMsg::Publish { .. } => "publish",
            ClientMsg::Stats(_) => "stats",
            ClientMsg::CellReport { .. } => "cell_report",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Pong { .. } => "pong",
        }
    }
}

fn check_cell(cell: u32) -> Result<(), MessageError> {
    if cell == 0 || cell > MAX_CELLS {
        return Err(MessageError::Malformed(format!(
            "cell {cell} is not within 1..={MAX_CELLS}"
        )));
    }
    Ok(())
}

impl ServerMsg {
    /// Encodes to JSON text with the version field.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes and checks limits. Never panics on any input.
    pub fn decode(text: &str) -> Result<Self, MessageError> {
        let msg: Self = decode(text)?;
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            ServerMsg::Peers { peers } => {
                check_len("peers", peers.len(), MAX_LIST)?;
                for p in peers {
                    if let Some(r) = &p.region {
                        check_text("region", r)?;
                    }
                }
                Ok(())
            }
            ServerMsg::Signal { signal, .. } => check_signal(signal),
            ServerMsg::Error { message, .. } => check_len("message", message.len(), MAX_TEXT),
            ServerMsg::Welcome { config, .. } => {
                check_len("ice_servers", config.ice_servers.len(), 16)?;
                for s in &config.ice_servers {
                    check_len("urls", s.urls.len(), 16)?;
                    for u in &s.urls {
                        check_text("ice server url", u)?;
                    }
                }
                Ok(())
            }
            ServerMsg::Stripes {
                sources, children, ..
            } => {
                if sources.is_empty() {
                    return Err(MessageError::Malformed("stripes has no source".into()));
                }
                check_len("stripes", sources.len(), MAX_STRIPES)?;
                check_len("children", children.len(), MAX_LIST)
            }
            ServerMsg::PeerLeft { .. }
            | ServerMsg::Segment { .. }
            | ServerMsg::Fetch { .. }
            | ServerMsg::Ping { .. }
            | ServerMsg::Pong { .. } => Ok(()),
            ServerMsg::Redirect { cell } => check_cell(*cell),
        }
    }

    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ServerMsg::Error { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_checked_first() {
        let e = ClientMsg::decode(r#"{"v":2,"type":"ping","nonce":1}"#).unwrap_err();
        assert_eq!(e, MessageError::UnsupportedVersion(2));
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        let e = ClientMsg::decode(r#"{"type":"ping","nonce":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        let e = ClientMsg::decode(r#"{"v":"1","type":"ping","nonce":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        assert_eq!(
            ClientMsg::decode(r#"{"v":1,"type":"ping","nonce":7,"extra":true}"#).unwrap(),
            ClientMsg::Ping { nonce: 7 }
        );
    }

    #[test]
    fn limits_are_enforced() {
        let big = format!(
            r#"{{"v":1,"type":"ping","nonce":1,"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        assert_eq!(
            ClientMsg::decode(&big).unwrap_err().code(),
            ErrorCode::TooLarge
        );
        let sdp = "x".repeat(MAX_SDP + 1);
        let msg = ClientMsg::Signal {
            to: PeerId::new("b").unwrap(),
            signal: Signal::Offer { sdp },
        };
        assert!(ClientMsg::decode(&msg.encode()).is_err());
        let e = ClientMsg::decode(
            r#"{"v":1,"type":"have_map","rendition":"r","base_seq":0,"bitmap":"zz"}"#,
        );
        assert!(e.is_err());
        let e = ClientMsg::decode(
            r#"{"v":1,"type":"hello","token":"t","stream":"../x","peer_id":"p","kind":"native"}"#,
        );
        assert_eq!(e.unwrap_err().code(), ErrorCode::Malformed);
    }

    #[test]
    fn error_code_names_are_the_wire_names() {
        for code in [
            ErrorCode::UnsupportedVersion,
            ErrorCode::PeerIdTaken,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn error_messages_are_cut_to_the_limit() {
        let ServerMsg::Error { message, .. } =
            ServerMsg::error(ErrorCode::Internal, "é".repeat(300))
        else {
            panic!("error() builds an error");
        };
        assert!(message.len() <= MAX_TEXT);
    }

    #[test]
    fn the_url_names_the_stream_once() {
        let s = crate::StreamId::new("ev-1").unwrap();
        assert_eq!(
            url_with_stream("ws://t:7000/v1/ws", &s),
            "ws://t:7000/v1/ws?stream=ev-1"
        );
        assert_eq!(
            url_with_stream("wss://t/v1/ws?token=x", &s),
            "wss://t/v1/ws?token=x&stream=ev-1"
        );
        assert_eq!(
            url_with_stream("ws://t/v1/ws?stream=other", &s),
            "ws://t/v1/ws?stream=other"
        );
        assert_eq!(
            url_with_stream("ws://t/v1/ws?streams=1#f", &s),
            "ws://t/v1/ws?streams=1&stream=ev-1#f"
        );
    }

    #[test]
    fn a_cell_goes_in_the_url_once_and_a_redirect_names_a_real_cell() {
        let s = crate::StreamId::new("ev").unwrap();
        assert_eq!(
            url_for("ws://t/v1/ws?token=x", &s, Some(3)),
            "ws://t/v1/ws?token=x&stream=ev&cell=3"
        );
        // A cell already there is replaced, not repeated.
        assert_eq!(
            url_for("ws://t/v1/ws?cell=1&stream=ev#f", &s, Some(2)),
            "ws://t/v1/ws?stream=ev&cell=2#f"
        );
        assert_eq!(
            url_for("ws://t/v1/ws?cells=1", &s, None),
            "ws://t/v1/ws?cells=1&stream=ev"
        );
        let r = ServerMsg::Redirect { cell: 7 };
        assert_eq!(ServerMsg::decode(&r.encode()).unwrap(), r);
        for bad in [
            r#"{"v":1,"type":"redirect","cell":0}"#,
            r#"{"v":1,"type":"redirect","cell":65536}"#,
            r#"{"v":1,"type":"redirect","cell":-1}"#,
            r#"{"v":1,"type":"redirect"}"#,
        ] {
            assert!(ServerMsg::decode(bad).is_err(), "{bad}");
        }
        let report = ClientMsg::CellReport { members: 12 };
        assert_eq!(ClientMsg::decode(&report.encode()).unwrap(), report);
        assert!(ClientMsg::decode(r#"{"v":1,"type":"cell_report","members":-3}"#).is_err());
        let hello = r#"{"v":1,"type":"hello","token":"t","stream":"ev","peer_id":"p","kind":"native","cell":0}"#;
        assert!(ClientMsg::decode(hello).is_err());
        let hello = hello.replace("\"cell\":0", "\"cell\":4");
        assert!(matches!(ClientMsg::decode(&hello), Ok(ClientMsg::Hello(h)) if h.cell == Some(4)));
    }
}
