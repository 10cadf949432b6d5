//! The WebTorrent tracker protocol: JSON text frames over a WebSocket, as the
//! reference client (`bittorrent-tracker`, used by WebTorrent and
//! p2p-media-loader) speaks it. The whole protocol, message by message, is in
//! `docs/webtorrent-protocol.md`.
//!
//! Identifiers (`info_hash`, `peer_id`, `to_peer_id`, `offer_id`) are 20
//! bytes sent as a "binary string": 20 characters, each U+0000..=U+00FF
//! standing for one byte (JavaScript's `Buffer.toString('binary')`). They are
//! not UTF-8 text: byte 0xE9 is the character `é`, two bytes of UTF-8 in the
//! JSON text. [`BinId`] decodes and encodes exactly that, and refuses a
//! string of any other length or with a character above U+00FF.
//!
//! SDP offers and answers are relayed as the client sent them: the decoder
//! keeps them as raw JSON (checked to be objects) and the encoders paste them
//! into the relayed message unchanged, so the tracker never re-encodes an
//! SDP.
//!
//! **Invariant:** decoding never panics on any input, and every encoder
//! produces JSON that [`serde_json`] parses back to the same values (tested
//! below for every byte value of every identifier).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::error::WtError;

/// A 20-byte identifier of the protocol: an info hash, a peer id or an
/// offer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BinId(pub [u8; 20]);

impl BinId {
    /// Decodes a binary string: exactly 20 characters, each at most U+00FF.
    pub fn from_binary_str(s: &str) -> Result<BinId, WtError> {
        let mut out = [0u8; 20];
        let mut n = 0;
        for c in s.chars() {
            let v = u32::from(c);
            if v > 0xff {
                return Err(WtError::BadId("a character above U+00FF"));
            }
            if n == 20 {
                return Err(WtError::BadId("more than 20 characters"));
            }
            out[n] = v as u8;
            n += 1;
        }
        if n < 20 {
            return Err(WtError::BadId("fewer than 20 characters"));
        }
        Ok(BinId(out))
    }

    /// Parses 40 hex digits (how operators write info hashes).
    pub fn from_hex(s: &str) -> Result<BinId, WtError> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| WtError::BadId("not 40 hex digits"))?;
        Ok(BinId(out))
    }

    /// The 40 hex digits of this id.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for BinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BinId({})", self.to_hex())
    }
}

impl fmt::Display for BinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BinId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BinId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a binary string of 20 characters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BinId, E> {
                BinId::from_binary_str(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// What an announce says of the peer (`event`; absent means `update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first announce of a peer in a swarm.
    Started,
    /// The peer leaves the swarm.
    Stopped,
    /// The peer now holds the whole torrent (a seeder).
    Completed,
    /// A periodic or offer-carrying announce.
    Update,
}

/// One offer of an announce, to be relayed to one other peer.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// Chosen by the offering peer; echoed with the answer.
    pub offer_id: BinId,
    /// The SDP offer object, raw JSON as received.
    pub offer: &'a RawValue,
}

/// An answer to an offer this peer received, to be relayed to the offerer.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The peer that made the offer.
    pub to_peer_id: BinId,
    /// The offer's id.
    pub offer_id: BinId,
    /// The SDP answer object, raw JSON as received.
    pub answer: &'a RawValue,
}

/// An `announce` request.
#[derive(Debug, Clone)]
pub struct Announce<'a> {
    /// The swarm.
    pub info_hash: BinId,
    /// The announcing peer's id in that swarm.
    pub peer_id: BinId,
    /// `event`.
    pub event: Event,
    /// Bytes the peer still lacks (`left`); 0 makes it a seeder.
    pub left: Option<f64>,
    /// Peers wanted (`numwant`): at most this many offers are relayed.
    pub numwant: Option<f64>,
    /// Offers to relay, one to each of distinct other peers.
    pub offers: Vec<Offer<'a>>,
    /// An answer to relay.
    pub answer: Option<Answer<'a>>,
}

/// A decoded request.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    /// `announce`.
    Announce(Announce<'a>),
    /// `scrape` of the listed info hashes (`None`: no `info_hash` given, a
    /// full scrape, which this tracker refuses).
    Scrape(Option<Vec<BinId>>),
}

impl Request<'_> {
    /// `"announce"` or `"scrape"`: the request's action, for replies and
    /// counters.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Announce(_) => "announce",
            Request::Scrape(_) => "scrape",
        }
    }
}

#[derive(Deserialize)]
struct RawOffer<'a> {
    #[serde(borrow)]
    offer: &'a RawValue,
    #[serde(borrow)]
    offer_id: &'a RawValue,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow)]
    info_hash: Option<&'a RawValue>,
    #[serde(borrow)]
    peer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    left: Option<f64>,
    numwant: Option<f64>,
    #[serde(borrow)]
    offers: Option<Vec<RawOffer<'a>>>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    #[serde(borrow)]
    to_peer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    offer_id: Option<&'a RawValue>,
}

fn is_object(v: &RawValue) -> bool {
    v.get().starts_with('{')
}

/// Decodes one text frame. Fields the protocol has but this tracker does
/// not use (`uploaded`, `downloaded`, `trackerid`...) are ignored; a field it
/// uses with the wrong type is an error.
pub fn decode(text: &str) -> Result<Request<'_>, WtError> {
    let raw: RawRequest<'_> =
        serde_json::from_str(text).map_err(|e| WtError::Malformed(e.to_string()))?;
    let action = raw.action.ok_or(WtError::NoAction)?;
    match &*action {
        "announce" => {
            let info_hash = match raw.info_hash {
                Some(v) => one_id(v)?,
                None => return Err(WtError::Missing("info_hash")),
            };
            let peer_id = one_id(raw.peer_id.ok_or(WtError::Missing("peer_id"))?)?;
            let event = match raw.event.as_deref() {
                None | Some("update") | Some("") => Event::Update,
                Some("started") => Event::Started,
                Some("stopped") => Event::Stopped,
                Some("completed") => Event::Completed,
                Some(_) => return Err(WtError::BadEvent),
            };
            let mut offers = Vec::new();
            for o in raw.offers.unwrap_or_default() {
                if !is_object(o.offer) {
                    return Err(WtError::Malformed("an offer is not an object".into()));
                }
                offers.push(Offer {
                    offer_id: one_id(o.offer_id)?,
                    offer: o.offer,
                });
            }
            let answer = match (raw.answer, raw.to_peer_id, raw.offer_id) {
                (None, _, _) => None,
                (Some(a), Some(to), Some(id)) if is_object(a) => Some(Answer {
                    to_peer_id: one_id(to)?,
                    offer_id: one_id(id)?,
                    answer: a,
                }),
                (Some(a), _, _) if !is_object(a) => {
                    return Err(WtError::Malformed("the answer is not an object".into()));
                }
                (Some(_), None, _) => return Err(WtError::Missing("to_peer_id")),
                (Some(_), _, _) => return Err(WtError::Missing("offer_id")),
            };
            Ok(Request::Announce(Announce {
                info_hash,
                peer_id,
                event,
                left: raw.left,
                numwant: raw.numwant,
                offers,
                answer,
            }))
        }
        "scrape" => {
            let hashes = match raw.info_hash {
                None => None,
                Some(v) if v.get().starts_with('[') => {
                    let list: Vec<BinId> = serde_json::from_str(v.get())
                        .map_err(|e| WtError::Malformed(e.to_string()))?;
                    Some(list)
                }
                Some(v) => Some(vec![one_id(v)?]),
            };
            Ok(Request::Scrape(hashes))
        }
        _ => Err(WtError::UnknownAction),
    }
}

fn one_id(v: &RawValue) -> Result<BinId, WtError> {
    serde_json::from_str(v.get()).map_err(|e| {
        if v.get().starts_with('"') {
            WtError::BadId("not a binary string of 20 characters")
        } else {
            WtError::Malformed(e.to_string())
        }
    })
}

// ---- encoders: each writes one JSON object; ids as binary strings ---------

/// Appends `id` as a JSON string of 20 characters U+0000..=U+00FF.
pub fn push_bin(out: &mut String, id: &BinId) {
    out.push('"');
    for &b in &id.0 {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            _ => out.push(char::from(b)),
        }
    }
    out.push('"');
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json cannot fail on a string.
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// The reply to every announce: `{"action":"announce","interval":..,
/// "info_hash":..,"complete":..,"incomplete":..}`, with `warning message`
/// when given.
pub fn announce_reply(
    info_hash: &BinId,
    complete: usize,
    incomplete: usize,
    interval_s: u32,
    warning: Option<&str>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(128);
    out.push_str("{\"action\":\"announce\",\"interval\":");
    let _ = write!(out, "{interval_s}");
    out.push_str(",\"info_hash\":");
    push_bin(&mut out, info_hash);
    let _ = write!(out, ",\"complete\":{complete},\"incomplete\":{incomplete}");
    if let Some(w) = warning {
        out.push_str(",\"warning message\":");
        push_json_str(&mut out, w);
    }
    out.push('}');
    out
}

fn relayed(
    info_hash: &BinId,
    from: &BinId,
    offer_id: &BinId,
    field: &str,
    sdp: &RawValue,
) -> String {
    let mut out = String::with_capacity(sdp.get().len() + 160);
    out.push_str("{\"action\":\"announce\",\"info_hash\":");
    push_bin(&mut out, info_hash);
    out.push_str(",\"peer_id\":");
    push_bin(&mut out, from);
    out.push_str(",\"offer_id\":");
    push_bin(&mut out, offer_id);
    out.push_str(",\"");
    out.push_str(field);
    out.push_str("\":");
    out.push_str(sdp.get());
    out.push('}');
    out
}

/// An offer relayed to one peer: `peer_id` is the offering peer.
pub fn relayed_offer(info_hash: &BinId, from: &BinId, offer: &Offer<'_>) -> String {
    relayed(info_hash, from, &offer.offer_id, "offer", offer.offer)
}

/// An answer relayed to the peer that made the offer: `peer_id` is the
/// answering peer.
pub fn relayed_answer(info_hash: &BinId, from: &BinId, answer: &Answer<'_>) -> String {
    relayed(info_hash, from, &answer.offer_id, "answer", answer.answer)
}

/// Counts of one swarm in a scrape reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeFile {
    /// Seeders.
    pub complete: usize,
    /// Leechers.
    pub incomplete: usize,
    /// `completed` events seen.
    pub downloaded: u64,
}

/// `{"action":"scrape","files":{<info_hash>:{"complete":..,"incomplete":..,
/// "downloaded":..},..}}`; unknown swarms are listed with zeros.
pub fn scrape_reply(files: &[(BinId, ScrapeFile)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(32 + files.len() * 96);
    out.push_str("{\"action\":\"scrape\",\"files\":{");
    for (i, (h, f)) in files.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_bin(&mut out, h);
        let _ = write!(
            out,
            ":{{\"complete\":{},\"incomplete\":{},\"downloaded\":{}}}",
            f.complete, f.incomplete, f.downloaded
        );
    }
    out.push_str("}}");
    out
}

/// A refusal: `{"failure reason":..}` with the request's `action` and
/// `info_hash` when known (the reference client drops a reply without
/// `action`, and routes an announce reply by its `info_hash`).
pub fn failure(action: Option<&str>, info_hash: Option<&BinId>, reason: &str) -> String {
    let mut out = String::with_capacity(96 + reason.len());
    out.push_str("{\"failure reason\":");
    push_json_str(&mut out, reason);
    if let Some(a) = action {
        out.push_str(",\"action\":");
        push_json_str(&mut out, a);
    }
    if let Some(h) = info_hash {
        out.push_str(",\"info_hash\":");
        push_bin(&mut out, h);
    }
    out.push('}');
    out
}

/// Best effort for a refusal of a request that did not decode: its `action`
/// and `info_hash` if they can be read, so the client can route the reply.
pub fn salvage(text: &str) -> (Option<&'static str>, Option<BinId>) {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        action: Option<Cow<'a, str>>,
        #[serde(borrow)]
        info_hash: Option<&'a RawValue>,
    }
    let Ok(h) = serde_json::from_str::<Head<'_>>(text) else {
        return (None, None);
    };
    let action = match h.action.as_deref() {
        Some("announce") => Some("announce"),
        Some("scrape") => Some("scrape"),
        _ => None,
    };
    (action, h.info_hash.and_then(|v| one_id(v).ok()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// What the reference client sends: ids as `Buffer.toString('binary')`
    /// (JSON.stringify escapes controls, keeps U+0080..U+00FF as is).
    fn js_binary(bytes: &[u8; 20]) -> String {
        let s: String = bytes.iter().map(|&b| char::from(b)).collect();
        serde_json::Value::from(s).to_string()
    }

    #[test]
    fn decodes_an_announce_with_offers_as_the_reference_client_sends_it() {
        let ih = [0xe9u8; 20];
        let mut pid = *b"-WW0208-abcdefghijkl";
        pid[19] = 0;
        let text = format!(
            r#"{{"action":"announce","info_hash":{},"peer_id":{},"numwant":5,"uploaded":0,"downloaded":0,"left":null,"event":"started","offers":[{{"offer":{{"type":"offer","sdp":"v=0\r\n"}},"offer_id":{}}}]}}"#,
            js_binary(&ih),
            js_binary(&pid),
            js_binary(&[7; 20])
        );
        let Request::Announce(a) = decode(&text).unwrap() else {
            panic!("not an announce")
        };
        assert_eq!(a.info_hash, BinId(ih));
        assert_eq!(a.peer_id, BinId(pid));
        assert_eq!(a.event, Event::Started);
        assert_eq!(a.numwant, Some(5.0));
        assert_eq!(a.left, None);
        assert_eq!(a.offers.len(), 1);
        assert_eq!(
            a.offers[0].offer.get(),
            r#"{"type":"offer","sdp":"v=0\r\n"}"#
        );
        let relayed = relayed_offer(&a.info_hash, &a.peer_id, &a.offers[0]);
        let v: serde_json::Value = serde_json::from_str(&relayed).unwrap();
        assert_eq!(v["action"], "announce");
        assert_eq!(v["offer"]["sdp"], "v=0\r\n");
        let back: String = v["peer_id"].as_str().unwrap().to_string();
        assert_eq!(BinId::from_binary_str(&back).unwrap(), BinId(pid));
    }

    #[test]
    fn decodes_an_answer_and_a_scrape_of_one_or_many() {
        let text = format!(
            r#"{{"action":"announce","info_hash":{h},"peer_id":{p},"to_peer_id":{q},"offer_id":{o},"answer":{{"type":"answer","sdp":"x"}}}}"#,
            h = js_binary(&[1; 20]),
            p = js_binary(&[2; 20]),
            q = js_binary(&[3; 20]),
            o = js_binary(&[4; 20]),
        );
        let Request::Announce(a) = decode(&text).unwrap() else {
            panic!()
        };
        let ans = a.answer.unwrap();
        assert_eq!(
            (ans.to_peer_id, ans.offer_id),
            (BinId([3; 20]), BinId([4; 20]))
        );
        assert_eq!(a.event, Event::Update);
        let one = format!(
            r#"{{"action":"scrape","info_hash":{}}}"#,
            js_binary(&[1; 20])
        );
        assert!(matches!(decode(&one).unwrap(), Request::Scrape(Some(v)) if v == [BinId([1; 20])]));
        let many = format!(
            r#"{{"action":"scrape","info_hash":[{},{}]}}"#,
            js_binary(&[1; 20]),
            js_binary(&[0; 20])
        );
        assert!(matches!(decode(&many).unwrap(), Request::Scrape(Some(v)) if v.len() == 2));
        assert!(matches!(
            decode(r#"{"action":"scrape"}"#).unwrap(),
            Request::Scrape(None)
        ));
    }

    #[test]
    fn hostile_input_is_refused_with_a_reason() {
        let h = js_binary(&[1; 20]);
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "malformed"),
            ("{".into(), "malformed"),
            ("[]".into(), "malformed"),
            ("null".into(), "malformed"),
            (r#"{"info_hash":"x"}"#.into(), "no_action"),
            (r#"{"action":"get_peers"}"#.into(), "unknown_action"),
            (r#"{"action":7}"#.into(), "malformed"),
            (r#"{"action":"announce"}"#.into(), "missing_field"),
            (
                format!(r#"{{"action":"announce","info_hash":{h}}}"#),
                "missing_field",
            ),
            (
                r#"{"action":"announce","info_hash":"short","peer_id":"x"}"#.into(),
                "bad_id",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":{h}}}"#,
                    "a".repeat(21)
                ),
                "bad_id",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":{h}}}"#,
                    "€".repeat(20)
                ),
                "bad_id",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"event":"paused"}}"#
                ),
                "bad_event",
            ),
            (
                format!(r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"offers":{{}}}}"#),
                "malformed",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"offers":[{{"offer":"sdp","offer_id":{h}}}]}}"#
                ),
                "malformed",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"offers":[{{"offer":{{}}}}]}}"#
                ),
                "malformed",
            ),
            (
                format!(r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"answer":{{}}}}"#),
                "missing_field",
            ),
            (
                format!(
                    r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"answer":[],"to_peer_id":{h},"offer_id":{h}}}"#
                ),
                "malformed",
            ),
            (
                format!(r#"{{"action":"announce","info_hash":{h},"peer_id":{h},"left":"lots"}}"#),
                "malformed",
            ),
            (
                r#"{"action":"scrape","info_hash":[1,2]}"#.into(),
                "malformed",
            ),
            (
                r#"{"action":"scrape","info_hash":["\ud800"]}"#.into(),
                "malformed",
            ),
            ("[".repeat(10_000), "malformed"),
        ];
        for (text, reason) in cases {
            let e = decode(&text).expect_err(&text);
            assert_eq!(e.reason(), reason, "{text}: {e}");
        }
    }

    #[test]
    fn a_refusal_names_the_action_and_the_info_hash_when_they_can_be_read() {
        let h = js_binary(&[9; 20]);
        let text = format!(r#"{{"action":"announce","info_hash":{h},"peer_id":"bad"}}"#);
        assert_eq!(salvage(&text), (Some("announce"), Some(BinId([9; 20]))));
        assert_eq!(salvage("garbage"), (None, None));
        let f = failure(Some("announce"), Some(&BinId([9; 20])), "bad \"peer_id\"");
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["failure reason"], "bad \"peer_id\"");
        assert_eq!(v["action"], "announce");
    }

    proptest! {
        #[test]
        fn every_id_survives_encoding_and_decoding(bytes in any::<[u8; 20]>(), c in 0usize..1000, i in 0usize..1000) {
            let id = BinId(bytes);
            let reply = announce_reply(&id, c, i, 120, Some("w\u{1}"));
            let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
            prop_assert_eq!(BinId::from_binary_str(v["info_hash"].as_str().unwrap()).unwrap(), id);
            prop_assert_eq!(v["complete"].as_u64().unwrap(), c as u64);
            let scrape = scrape_reply(&[(id, ScrapeFile { complete: c, incomplete: i, downloaded: 3 })]);
            let v: serde_json::Value = serde_json::from_str(&scrape).unwrap();
            let files = v["files"].as_object().unwrap();
            let (k, f) = files.iter().next().unwrap();
            prop_assert_eq!(BinId::from_binary_str(k).unwrap(), id);
            prop_assert_eq!(f["incomplete"].as_u64().unwrap(), i as u64);
            // What we send decodes as what the reference client sent.
            let mut ann = String::from(r#"{"action":"announce","info_hash":"#);
            push_bin(&mut ann, &id);
            ann.push_str(r#","peer_id":"#);
            push_bin(&mut ann, &id);
            ann.push('}');
            prop_assert!(matches!(decode(&ann).unwrap(), Request::Announce(a) if a.info_hash == id));
        }

        #[test]
        fn decoding_never_panics(s in ".{0,300}") {
            let _ = decode(&s);
            let _ = salvage(&s);
        }
    }
}
