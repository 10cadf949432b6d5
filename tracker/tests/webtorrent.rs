//! The WebTorrent endpoint of a real tracker process on 127.0.0.1, driven by
//! real WebSocket clients speaking the protocol as the reference client
//! (bittorrent-tracker) does: ids as 20-character binary strings.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use swarmcast_proto::{Claims, Role, StreamId, TokenKey};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{SECRET, Tracker};

impl Tracker {
    async fn stats(&self) -> Value {
        let body = self.get("/v1/webtorrent/stats").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    async fn connect(&self, path: &str) -> Peer {
        assert!(!self.tls);
        try_connect(&self.addr, path).await.unwrap()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Peer {
    ws: Box<WebSocketStream<Box<dyn Io>>>,
}

/// A binary string, as JSON: each byte one character U+0000..=U+00FF.
fn bin(b: u8) -> Value {
    Value::from(std::iter::repeat_n(char::from(b), 20).collect::<String>())
}

fn ih(b: u8) -> Value {
    bin(b)
}

fn byte_of(v: &Value) -> u8 {
    let s = v.as_str().unwrap();
    assert_eq!(s.chars().count(), 20, "{s:?}");
    s.chars().next().unwrap() as u8
}

fn offers(n: u8, first_id: u8) -> Value {
    Value::from(
        (0..n)
            .map(|k| {
                json!({"offer": {"type": "offer", "sdp": format!("v=0 offer {k}")}, "offer_id": bin(first_id + k)})
            })
            .collect::<Vec<_>>(),
    )
}

impl Peer {
    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t.to_string())).await.unwrap();
    }

    /// The next JSON message (pings skipped), within 5 s.
    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a message within 5 s")
                .expect("socket open")
                .unwrap();
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next message that is not a relayed offer or answer.
    async fn reply(&mut self) -> Value {
        loop {
            let m = self.recv().await;
            if m.get("offer").is_none() && m.get("answer").is_none() {
                return m;
            }
        }
    }

    /// Nothing but pings arrives for `ms`.
    async fn quiet(&mut self, ms: u64) {
        let end = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected nothing, got {other:?}"),
            }
        }
    }

    /// Announces `started` in swarm `h` as peer `id`; returns the reply.
    async fn join(&mut self, h: u8, id: u8) -> Value {
        self.send(json!({"action": "announce", "info_hash": ih(h), "peer_id": bin(id), "event": "started", "left": 100, "numwant": 0, "uploaded": 0, "downloaded": 0}))
            .await;
        let r = self.recv().await;
        assert_eq!(r["action"], "announce", "{r}");
        assert_eq!(byte_of(&r["info_hash"]), h);
        assert!(r.get("failure reason").is_none(), "{r}");
        r
    }

    /// The connection is closed by the tracker within 5 s.
    async fn closed(&mut self) {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => panic!("not closed in 5 s"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

async fn try_connect(addr: &str, path: &str) -> Result<Peer, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io: Box<dyn Io> = Box::new(tcp);
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), io)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Peer { ws: Box::new(ws) })
}

#[tokio::test]
async fn offers_reach_distinct_peers_and_only_a_matching_answer_returns() {
    let t = Tracker::start(&[]);
    // `/` (how public trackers are announced) and `/announce` are one endpoint.
    let mut a = t.connect("/").await;
    a.join(1, 1).await;
    let mut others = Vec::new();
    for id in 2..=7 {
        let mut p = t.connect("/announce").await;
        let r = p.join(1, id).await;
        assert_eq!(r["interval"], 120);
        others.push((id, p));
    }
    a.send(json!({"action": "announce", "info_hash": ih(1), "peer_id": bin(1), "numwant": 4, "offers": offers(4, 50)}))
        .await;
    let r = a.recv().await;
    assert_eq!(
        (r["incomplete"].as_u64(), r["complete"].as_u64()),
        (Some(7), Some(0))
    );
    // Exactly four of the six get one offer each, from peer 1.
    let mut got = Vec::new();
    let mut idle = Vec::new();
    for (id, p) in &mut others {
        let m = tokio::time::timeout(Duration::from_millis(700), p.recv()).await;
        match m {
            Ok(m) => {
                assert_eq!(byte_of(&m["peer_id"]), 1, "{m}");
                assert_eq!(byte_of(&m["info_hash"]), 1);
                assert_eq!(m["offer"]["type"], "offer");
                got.push((*id, byte_of(&m["offer_id"])));
            }
            Err(_) => idle.push(*id),
        }
    }
    assert_eq!(got.len(), 4, "{got:?}");
    let mut ids: Vec<u8> = got.iter().map(|g| g.1).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![50, 51, 52, 53], "each offer once");
    // A peer that was not offered `offer_id` cannot answer it.
    let (answerer, offer_id) = got[0];
    let stranger = idle[0];
    let answer = |from: u8, oid: u8| json!({"action": "announce", "info_hash": ih(1), "peer_id": bin(from), "to_peer_id": bin(1), "offer_id": bin(oid), "answer": {"type": "answer", "sdp": format!("v=0 answer from {from}")}});
    let p = &mut others.iter_mut().find(|(i, _)| *i == stranger).unwrap().1;
    p.send(answer(stranger, offer_id)).await;
    let r = p.recv().await;
    assert!(
        r["warning message"]
            .as_str()
            .unwrap()
            .contains("no matching offer"),
        "{r}"
    );
    // The one it was offered to can, once.
    let p = &mut others.iter_mut().find(|(i, _)| *i == answerer).unwrap().1;
    p.send(answer(answerer, offer_id)).await;
    assert!(p.recv().await.get("warning message").is_none());
    let m = a.recv().await;
    assert_eq!(byte_of(&m["peer_id"]), answerer);
    assert_eq!(byte_of(&m["offer_id"]), offer_id);
    assert_eq!(m["answer"]["sdp"], format!("v=0 answer from {answerer}"));
    p.send(answer(answerer, offer_id)).await;
    p.recv().await;
    a.quiet(300).await;
    let s = t.stats().await;
    assert_eq!(s["offers_relayed"], 4);
    assert_eq!(s["answers_relayed"], 1);
    assert_eq!(s["answers_no_offer"], 2);
    assert_eq!(s["peers"], 7);
    assert_eq!(
        t.metric("swarmcast_tracker_wt_answers_dropped_total{reason=\"no_offer\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_expired_offer_cannot_be_answered() {
    let t = Tracker::start(&["--wt-offer-ttl-ms", "300"]);
    let mut a = t.connect("/announce").await;
    let mut b = t.connect("/announce").await;
    a.join(2, 1).await;
    b.join(2, 2).await;
    a.send(json!({"action": "announce", "info_hash": ih(2), "peer_id": bin(1), "offers": offers(1, 9)}))
        .await;
    a.recv().await;
    let o = b.recv().await;
    assert_eq!(byte_of(&o["offer_id"]), 9);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.send(json!({"action": "announce", "info_hash": ih(2), "peer_id": bin(2), "to_peer_id": bin(1), "offer_id": bin(9), "answer": {"type": "answer", "sdp": "late"}}))
        .await;
    assert!(b.recv().await["warning message"].is_string());
    a.quiet(300).await;
    assert_eq!(t.stats().await["answers_no_offer"], 1);
}

#[tokio::test]
async fn scrape_stopped_and_socket_close_keep_counts_true() {
    let t = Tracker::start(&[]);
    let mut a = t.connect("/announce").await;
    a.join(3, 1).await;
    a.join(4, 1).await;
    let mut b = t.connect("/announce").await;
    b.send(json!({"action": "announce", "info_hash": ih(3), "peer_id": bin(2), "event": "completed", "left": 0}))
        .await;
    let r = b.recv().await;
    assert_eq!(
        (r["complete"].as_u64(), r["incomplete"].as_u64()),
        (Some(1), Some(1))
    );
    let scrape = |hashes: Vec<Value>| json!({"action": "scrape", "info_hash": hashes});
    b.send(scrape(vec![ih(3), ih(4), ih(5)])).await;
    let r = b.recv().await;
    assert_eq!(r["action"], "scrape");
    let files = r["files"].as_object().unwrap();
    let f = |h: u8| files[&std::iter::repeat_n(char::from(h), 20).collect::<String>()].clone();
    assert_eq!(
        f(3),
        json!({"complete": 1, "incomplete": 1, "downloaded": 1})
    );
    assert_eq!(
        f(4),
        json!({"complete": 0, "incomplete": 1, "downloaded": 0})
    );
    assert_eq!(
        f(5),
        json!({"complete": 0, "incomplete": 0, "downloaded": 0})
    );
    // A single info hash as a string works too; a full scrape does not.
    b.send(json!({"action": "scrape", "info_hash": ih(4)}))
        .await;
    assert_eq!(b.recv().await["files"].as_object().unwrap().len(), 1);
    b.send(json!({"action": "scrape"})).await;
    let r = b.recv().await;
    assert_eq!(r["action"], "scrape");
    assert!(r["failure reason"].is_string());
    // `stopped` leaves one swarm.
    b.send(
        json!({"action": "announce", "info_hash": ih(3), "peer_id": bin(2), "event": "stopped"}),
    )
    .await;
    assert_eq!(b.recv().await["complete"], 0);
    // Closing the socket leaves every swarm it joined.
    drop(a);
    let mut gone = false;
    for _ in 0..50 {
        b.send(scrape(vec![ih(3), ih(4)])).await;
        let r = b.recv().await;
        if r["files"]
            .as_object()
            .unwrap()
            .values()
            .all(|f| f["incomplete"] == 0)
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the closed socket's peers left both swarms");
    // A `stopped` for a swarm nobody is in leaves no swarm behind.
    b.send(
        json!({"action": "announce", "info_hash": ih(99), "peer_id": bin(2), "event": "stopped"}),
    )
    .await;
    assert_eq!(b.recv().await["incomplete"], 0);
    let s = t.stats().await;
    assert_eq!(
        (s["peers"].as_u64(), s["swarms"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn caps_on_offers_swarms_message_size_and_peer_ids() {
    let t = Tracker::start(&[
        "--wt-max-offers",
        "2",
        "--wt-max-swarms-per-conn",
        "2",
        "--wt-max-message",
        "2048",
        "--wt-max-swarms",
        "2",
    ]);
    let mut a = t.connect("/announce").await;
    a.join(6, 1).await;
    let mut rest = Vec::new();
    for id in 2..=5 {
        let mut p = t.connect("/announce").await;
        p.join(6, id).await;
        rest.push(p);
    }
    a.send(json!({"action": "announce", "info_hash": ih(6), "peer_id": bin(1), "offers": offers(5, 20)}))
        .await;
    let r = a.recv().await;
    assert!(
        r["warning message"].as_str().unwrap().contains("only 2"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = t.stats().await;
    assert_eq!(
        (s["offers_relayed"].as_u64(), s["offers_unrelayed"].as_u64()),
        (Some(2), Some(3))
    );
    // Two swarms per connection.
    a.join(7, 1).await;
    a.send(json!({"action": "announce", "info_hash": ih(8), "peer_id": bin(1)}))
        .await;
    let r = a.recv().await;
    assert_eq!(byte_of(&r["info_hash"]), 8);
    assert!(
        r["failure reason"]
            .as_str()
            .unwrap()
            .contains("too many swarms")
    );
    // One peer id per swarm per connection, and nobody else's.
    a.send(json!({"action": "announce", "info_hash": ih(6), "peer_id": bin(9)}))
        .await;
    assert!(
        a.recv().await["failure reason"]
            .as_str()
            .unwrap()
            .contains("one peer_id")
    );
    let mut thief = t.connect("/announce").await;
    thief
        .send(json!({"action": "announce", "info_hash": ih(6), "peer_id": bin(1)}))
        .await;
    let r = thief.reply().await;
    assert!(
        r["failure reason"]
            .as_str()
            .unwrap()
            .contains("another connection"),
        "{r}"
    );
    // Too large: refused up to twice the limit, the connection closed beyond.
    let big = json!({"action": "announce", "info_hash": ih(6), "peer_id": bin(1), "offers": [{"offer": {"type": "offer", "sdp": "x".repeat(3000)}, "offer_id": bin(1)}]});
    a.send(big).await;
    let r = a.recv().await;
    assert_eq!(r["failure reason"], "message too large");
    assert_eq!(byte_of(&r["info_hash"]), 6);
    a.send_text(&"x".repeat(5000)).await;
    a.closed().await;
    // Everyone else goes on.
    rest[1]
        .send(json!({"action": "announce", "info_hash": ih(6), "peer_id": bin(3)}))
        .await;
    assert!(rest[1].reply().await.get("failure reason").is_none());
    // Two swarms on the tracker (a's 7 went with it): a third is refused,
    // however few this connection is in.
    let mut b = t.connect("/announce").await;
    b.join(9, 30).await;
    b.send(json!({"action": "announce", "info_hash": ih(10), "peer_id": bin(30)}))
        .await;
    let r = b.recv().await;
    assert_eq!(byte_of(&r["info_hash"]), 10);
    assert!(
        r["failure reason"]
            .as_str()
            .unwrap()
            .contains("too many swarms on this tracker"),
        "{r}"
    );
    // A known swarm still takes newcomers.
    let mut c = t.connect("/announce").await;
    c.join(9, 31).await;
    for reason in [
        "too_large",
        "too_many_swarms",
        "tracker_full",
        "peer_id_taken",
    ] {
        let name = format!("swarmcast_tracker_wt_refused_total{{reason=\"{reason}\"}}");
        assert!(t.metric(&name).await >= 1.0, "{reason}");
    }
}

#[tokio::test]
async fn malformed_binary_strings_and_json_get_a_failure_reason_and_a_count() {
    let t = Tracker::start(&[]);
    let mut good = t.connect("/announce").await;
    good.join(9, 1).await;
    let mut bad = t.connect("/announce").await;
    let long = Value::from("a".repeat(21));
    let wide = Value::from("€".repeat(20));
    let cases = [
        ("{not json".to_string(), "malformed"),
        (json!({"info_hash": ih(9)}).to_string(), "no_action"),
        (json!({"action": "connect"}).to_string(), "unknown_action"),
        (json!({"action": "announce", "info_hash": ih(9)}).to_string(), "missing_field"),
        (json!({"action": "announce", "info_hash": "short", "peer_id": bin(2)}).to_string(), "bad_id"),
        (json!({"action": "announce", "info_hash": long, "peer_id": bin(2)}).to_string(), "bad_id"),
        (json!({"action": "announce", "info_hash": wide, "peer_id": bin(2)}).to_string(), "bad_id"),
        (json!({"action": "announce", "info_hash": ih(9), "peer_id": bin(2), "offers": [{"offer": "sdp", "offer_id": bin(1)}]}).to_string(), "malformed"),
        (json!({"action": "announce", "info_hash": ih(9), "peer_id": bin(2), "event": "paused"}).to_string(), "bad_event"),
    ];
    for (text, _) in &cases {
        bad.send_text(text).await;
        let r = bad.recv().await;
        assert!(r["failure reason"].is_string(), "{text}: {r}");
    }
    // A binary frame that is not UTF-8.
    bad.ws
        .send(Message::binary(vec![0xff, 0xfe]))
        .await
        .unwrap();
    assert!(bad.recv().await["failure reason"].is_string());
    let s = t.stats().await;
    for (_, reason) in &cases {
        assert!(s["refused"][reason].as_u64().unwrap() >= 1, "{reason}: {s}");
    }
    assert_eq!(s["refused"]["not_text"], 1);
    // The same connection still works, and so does everyone else.
    bad.join(9, 2).await;
    good.join(9, 1).await;
    assert_eq!(t.stats().await["peers"], 2);
}

#[tokio::test]
async fn a_reader_that_falls_behind_loses_offers_not_the_tracker() {
    let t = Tracker::start(&["--msgs-per-sec", "10000", "--msg-burst", "10000"]);
    let mut a = t.connect("/announce").await;
    let mut sleepy = t.connect("/announce").await;
    a.join(10, 1).await;
    sleepy.join(10, 2).await;
    // 600 offers of 16 KiB: more than the socket buffers and the queue hold.
    let sdp = "x".repeat(16 * 1024);
    for k in 0..600u32 {
        a.send(json!({"action": "announce", "info_hash": ih(10), "peer_id": bin(1), "offers": [{"offer": {"type": "offer", "sdp": sdp}, "offer_id": bin((k % 200) as u8)}]}))
            .await;
        a.recv().await;
    }
    let s = t.stats().await;
    let (queued, dropped) = (
        s["offers_relayed"].as_u64().unwrap(),
        s["queue_full"].as_u64().unwrap(),
    );
    assert!(dropped >= 1, "{s}");
    assert_eq!(queued + dropped, 600, "{s}");
    // The sleepy peer still gets its queue, then current messages.
    let first = sleepy.recv().await;
    assert_eq!(byte_of(&first["offer_id"]), 0);
}

#[tokio::test]
async fn rate_limit_then_flood_closes_only_that_connection() {
    let t = Tracker::start(&["--msgs-per-sec", "5", "--msg-burst", "5"]);
    let mut good = t.connect("/announce").await;
    good.join(11, 1).await;
    let mut noisy = t.connect("/announce").await;
    let ann = json!({"action": "announce", "info_hash": ih(11), "peer_id": bin(2)});
    let mut limited = 0;
    for _ in 0..10 {
        noisy.send(ann.clone()).await;
        let r = noisy.recv().await;
        if r["failure reason"] == "too many messages" {
            assert_eq!(r["action"], "announce");
            limited += 1;
        }
    }
    assert!(limited >= 4, "{limited}");
    for _ in 0..80 {
        if noisy.ws.send(Message::text(ann.to_string())).await.is_err() {
            break;
        }
    }
    noisy.closed().await;
    good.join(11, 1).await;
    let s = t.stats().await;
    assert_eq!(s["refused"]["flood"], 1);
}

fn token(stream: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TokenKey::new(SECRET.as_bytes()).sign(&Claims {
        stream: StreamId::new(stream).unwrap(),
        role,
        expires_at: now + 600,
    })
}

#[tokio::test]
async fn token_and_allow_list() {
    let dir = std::env::temp_dir().join(format!("swarmcast-wt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let allow = dir.join("allow.txt");
    std::fs::write(&allow, format!("# served\n{}\n", "0c".repeat(20))).unwrap();
    let t = Tracker::start(&[
        "--wt-require-token",
        "--wt-allow-list",
        allow.to_str().unwrap(),
    ]);
    let refused = try_connect(&t.addr, "/announce").await.err().unwrap();
    assert!(refused.contains("401"), "no token: {refused}");
    let wrong = token("other-stream", Role::Viewer);
    assert!(
        try_connect(&t.addr, &format!("/announce?token={wrong}"))
            .await
            .is_err()
    );
    let ok = token("webtorrent", Role::Viewer);
    let mut p = try_connect(&t.addr, &format!("/announce?token={ok}"))
        .await
        .unwrap();
    p.join(12, 1).await;
    p.send(json!({"action": "announce", "info_hash": ih(13), "peer_id": bin(1)}))
        .await;
    let r = p.recv().await;
    assert!(
        r["failure reason"].as_str().unwrap().contains("not served"),
        "{r}"
    );
    let s = t.stats().await;
    assert_eq!(s["refused"]["unauthorized"], 2);
    assert_eq!(s["refused"]["not_allowed"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn serves_wss_with_rustls_on_its_own_port() {
    let (cert, dir) = common::self_signed("swarmcast-wt-tls");
    let wt_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let wt_addr = format!("127.0.0.1:{wt_port}");
    let t = Tracker::start_listening(
        &[
            "--tls-cert",
            dir.join("c.pem").to_str().unwrap(),
            "--tls-key",
            dir.join("k.pem").to_str().unwrap(),
            "--wt-listen",
            &wt_addr,
        ],
        2,
    );
    assert!(t.tls);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut peers = Vec::new();
    for (id, path) in [(1u8, "/"), (2, "/any/path")] {
        let tcp = TcpStream::connect(&wt_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls: Box<dyn Io> = Box::new(connector.connect(name, tcp).await.unwrap());
        let (ws, _) = tokio_tungstenite::client_async(format!("wss://{wt_addr}{path}"), tls)
            .await
            .unwrap();
        let mut p = Peer { ws: Box::new(ws) };
        p.join(14, id).await;
        peers.push(p);
    }
    peers[0]
        .send(json!({"action": "announce", "info_hash": ih(14), "peer_id": bin(1), "offers": offers(1, 3)}))
        .await;
    peers[0].recv().await;
    assert_eq!(byte_of(&peers[1].recv().await["peer_id"]), 1);
    drop(t);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_dashboard_shows_the_endpoint_and_sigterm_closes_with_1001() {
    let t = Tracker::start(&[]);
    let page = t.get("/").await;
    assert!(page.contains("WebTorrent endpoint"));
    assert!(page.contains("/v1/webtorrent/stats"));
    let mut a = t.connect("/").await;
    a.join(15, 1).await;
    let pid = t.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    let code = loop {
        match tokio::time::timeout_at(end, a.ws.next()).await {
            Err(_) => panic!("no close frame in 5 s"),
            Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1001);
}
