//! The tracker as a real process on 127.0.0.1 with real WebSocket clients.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use swarmcast_proto::tracker::{
    ClientKind, ClientMsg, ErrorCode, Hello, SegmentRef, ServerMsg, Signal,
};
use swarmcast_proto::{
    Claims, PeerId, RenditionId, Role, SegmentId, SegmentMeta, Sha256Digest, StreamId, TokenKey,
};
use swarmcast_tracker::client::{self, ClientConfig, Event};
use swarmcast_tracker::stats::StreamStats;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::{SECRET, Tracker};

impl Tracker {
    fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    async fn stats(&self, stream: &str) -> StreamStats {
        let body = self.get(&format!("/v1/streams/{stream}/stats")).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(stream: &str, role: Role) -> String {
    TokenKey::new(SECRET.as_bytes()).sign(&Claims {
        stream: StreamId::new(stream).unwrap(),
        role,
        expires_at: now_s() + 3600,
    })
}

fn hello(stream: &str, id: &str, kind: ClientKind, region: Option<&str>) -> Hello {
    let role = match kind {
        ClientKind::Publisher => Role::Ingest,
        ClientKind::Relay => Role::Relay,
        _ => Role::Viewer,
    };
    Hello {
        token: token(stream, role),
        stream: StreamId::new(stream).unwrap(),
        peer_id: PeerId::new(id).unwrap(),
        kind,
        upload_kbps: 5000,
        region: region.map(String::from),
        cell: None,
    }
}

/// A raw WebSocket client: sends what the test says, byte for byte.
struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    async fn connect(t: &Tracker) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(t.ws()).await.unwrap();
        Ws { ws }
    }

    /// Connects and joins; returns after the welcome.
    async fn join(
        t: &Tracker,
        stream: &str,
        id: &str,
        kind: ClientKind,
        region: Option<&str>,
    ) -> Ws {
        let mut ws = Ws::connect(t).await;
        ws.send(&ClientMsg::Hello(hello(stream, id, kind, region)))
            .await;
        ws.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
        ws
    }

    async fn send(&mut self, m: &ClientMsg) {
        self.ws.send(Message::text(m.encode())).await.unwrap();
    }

    async fn send_raw(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next tracker message within 5 s (None when closed).
    async fn recv(&mut self) -> Option<ServerMsg> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no message within 5 s"),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(ServerMsg::decode(t.as_str()).unwrap());
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Skips messages until one matches.
    async fn expect(&mut self, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.recv().await.expect("connection open");
            if f(&m) {
                return m;
            }
        }
    }

    async fn expect_error(&mut self, code: ErrorCode) {
        self.expect(|m| matches!(m, ServerMsg::Error { code: c, .. } if *c == code))
            .await;
    }

    /// True if no signal arrives for `ms`.
    async fn no_signal_for(&mut self, ms: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) | Ok(None) => return true,
                Ok(Some(Ok(Message::Text(t)))) => {
                    if matches!(ServerMsg::decode(t.as_str()), Ok(ServerMsg::Signal { .. })) {
                        return false;
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// True if no message at all arrives for `ms`.
    async fn silent_for(&mut self, ms: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) | Ok(None) => return true,
                Ok(Some(Ok(Message::Text(_)))) => return false,
                Ok(_) => {}
            }
        }
    }

    /// A round trip through the tracker: the session still works.
    async fn alive(&mut self) {
        self.send(&ClientMsg::Ping { nonce: 42 }).await;
        self.expect(|m| matches!(m, ServerMsg::Pong { nonce: 42 }))
            .await;
    }

    /// Waits for the connection to close.
    async fn closed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await {
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
                _ => continue,
            }
        }
        panic!("connection still open");
    }
}

fn r() -> RenditionId {
    RenditionId::new("360p").unwrap()
}

fn meta(stream: &str, seq: u64) -> SegmentMeta {
    SegmentMeta {
        id: SegmentId::new(StreamId::new(stream).unwrap(), r(), seq),
        size: 1234,
        sha256: Sha256Digest::of(&seq.to_le_bytes()),
        duration_ms: 2000,
        published_at_ms: 1,
        blocks: None,
    }
}

fn have(seq: u64) -> ClientMsg {
    ClientMsg::Have {
        segments: vec![SegmentRef {
            rendition: r(),
            seq,
        }],
    }
}

fn holders(s: &StreamStats, seq: u64) -> Option<u32> {
    s.segments
        .iter()
        .find(|x| x.id.ends_with(&format!("/360p/{seq}")))
        .map(|x| x.holders)
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn join_publish_index_and_leave() {
    let t = Tracker::start(&["--idle-timeout-ms", "3000", "--ping-interval-ms", "500"]);
    let mut origin = Ws::join(&t, "ev", "origin", ClientKind::Publisher, None).await;
    let mut a = Ws::join(&t, "ev", "a", ClientKind::Native, Some("eu")).await;
    let mut b = Ws::join(&t, "ev", "b", ClientKind::Browser, Some("eu")).await;
    origin
        .send(&ClientMsg::Publish {
            meta: meta("ev", 0),
        })
        .await;
    // Both viewers hear of the segment with the origin's record (one of
    // them as a first fetcher: a swarm this small gets min 2 fetchers).
    for v in [&mut a, &mut b] {
        let m = v
            .expect(|m| matches!(m, ServerMsg::Fetch { .. } | ServerMsg::Segment { .. }))
            .await;
        let (ServerMsg::Fetch { meta: m } | ServerMsg::Segment { meta: m }) = m else {
            unreachable!()
        };
        assert_eq!(m, meta("ev", 0));
    }
    a.send(&have(0)).await;
    b.send(&have(0)).await;
    wait_until("two holders", || async {
        holders(&t.stats("ev").await, 0) == Some(2)
    })
    .await;
    let s = t.stats("ev").await;
    assert_eq!((s.viewers, s.peers.publisher), (2, 1));
    // b vanishes without a word (its socket stays open but silent: the
    // idle timeout forgets it); a is told it left.
    let silent = b;
    a.expect(|m| matches!(m, ServerMsg::PeerLeft { .. })).await;
    wait_until("b's holding to drop", || async {
        holders(&t.stats("ev").await, 0) == Some(1)
    })
    .await;
    drop(silent);
    assert!(
        t.metric("swarmcast_tracker_disconnects_total{reason=\"idle\"}")
            .await
            >= 1.0
    );
    assert!(
        t.metric("swarmcast_tracker_resident_bytes_per_session")
            .await
            > 0.0
    );
    // A clean close is noticed at once.
    drop(a);
    wait_until("a's holding to drop", || async {
        holders(&t.stats("ev").await, 0) == Some(0)
    })
    .await;
    // The dashboard and the stream list serve.
    let page = t.get("/").await;
    assert!(page.contains("Swarmcast tracker"));
    let list = t.get("/v1/streams").await;
    assert!(list.contains("\"stream\":\"ev\""));
}

#[tokio::test]
async fn selection_prefers_the_region_and_never_offers_self() {
    // K = 3: x, y and z know each other and keep one free slot each.
    let t = Tracker::start(&["--neighbours", "3"]);
    let _x = Ws::join(&t, "sel", "x-us", ClientKind::Native, Some("us")).await;
    let _y = Ws::join(&t, "sel", "y-eu", ClientKind::Native, Some("eu")).await;
    let _z = Ws::join(&t, "sel", "z-us", ClientKind::Native, Some("us")).await;
    let mut me = Ws::connect(&t).await;
    me.send(&ClientMsg::Hello(hello(
        "sel",
        "me",
        ClientKind::Native,
        Some("eu"),
    )))
    .await;
    me.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    let ServerMsg::Peers { peers } = me.expect(|m| matches!(m, ServerMsg::Peers { .. })).await
    else {
        unreachable!()
    };
    let ids: Vec<&str> = peers.iter().map(|p| p.peer_id.as_str()).collect();
    assert!(!ids.contains(&"me"), "{ids:?}");
    assert_eq!(ids.first(), Some(&"y-eu"), "same region first: {ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(peers.iter().all(|p| p.initiator));
    // Asking for more never repeats a neighbour or offers itself.
    me.send(&ClientMsg::WantPeers { count: 5 }).await;
    let ServerMsg::Peers { peers: more } =
        me.expect(|m| matches!(m, ServerMsg::Peers { .. })).await
    else {
        unreachable!()
    };
    for p in &more {
        assert!(
            p.peer_id.as_str() != "me" && !ids.contains(&p.peer_id.as_str()),
            "{more:?}"
        );
    }
}

#[tokio::test]
async fn signals_reach_only_the_right_peer() {
    let t = Tracker::start(&[]);
    let mut a = Ws::join(&t, "sig", "a", ClientKind::Native, None).await;
    let mut b = Ws::join(&t, "sig", "b", ClientKind::Browser, None).await;
    let mut c = Ws::join(&t, "sig", "c", ClientKind::Native, None).await;
    let mut other = Ws::join(&t, "elsewhere", "d", ClientKind::Native, None).await;
    a.send(&ClientMsg::Signal {
        to: PeerId::new("b").unwrap(),
        signal: Signal::Offer {
            sdp: "v=0 offer".into(),
        },
    })
    .await;
    let m = b.expect(|m| matches!(m, ServerMsg::Signal { .. })).await;
    assert!(
        matches!(m, ServerMsg::Signal { from, signal: Signal::Offer { sdp } } if from.as_str() == "a" && sdp == "v=0 offer")
    );
    b.send(&ClientMsg::Signal {
        to: PeerId::new("a").unwrap(),
        signal: Signal::Candidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
    })
    .await;
    a.expect(|m| {
        matches!(
            m,
            ServerMsg::Signal {
                signal: Signal::Candidate { .. },
                ..
            }
        )
    })
    .await;
    // A peer of another swarm cannot be reached.
    a.send(&ClientMsg::Signal {
        to: PeerId::new("d").unwrap(),
        signal: Signal::Offer { sdp: "x".into() },
    })
    .await;
    a.expect_error(ErrorCode::UnknownPeer).await;
    assert!(c.no_signal_for(500).await);
    assert!(other.no_signal_for(300).await);
    assert!(
        t.metric("swarmcast_tracker_refused_total{code=\"unknown_peer\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_silent_first_fetcher_is_replaced() {
    let t = Tracker::start(&[
        "--first-fetch-deadline-ms",
        "400",
        "--min-first-fetchers",
        "1",
        "--max-first-fetchers",
        "1",
    ]);
    let mut origin = Ws::join(&t, "ff", "origin", ClientKind::Publisher, None).await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        viewers.push(Ws::join(&t, "ff", &format!("v{i}"), ClientKind::Native, None).await);
    }
    origin
        .send(&ClientMsg::Publish {
            meta: meta("ff", 7),
        })
        .await;
    let mut fetchers = Vec::new();
    for (i, v) in viewers.iter_mut().enumerate() {
        if matches!(
            v.expect(|m| matches!(m, ServerMsg::Fetch { .. } | ServerMsg::Segment { .. }))
                .await,
            ServerMsg::Fetch { .. }
        ) {
            fetchers.push(i);
        }
    }
    assert_eq!(fetchers.len(), 1);
    // The first fetcher stays silent; after 400 ms someone else is asked.
    let mut replaced = None;
    for (i, v) in viewers.iter_mut().enumerate() {
        if i == fetchers[0] {
            continue;
        }
        if let Ok(m) = tokio::time::timeout(
            Duration::from_secs(3),
            v.expect(|m| matches!(m, ServerMsg::Fetch { .. })),
        )
        .await
        {
            assert!(matches!(m, ServerMsg::Fetch { meta: m } if m == meta("ff", 7)));
            replaced = Some(i);
            break;
        }
    }
    assert!(replaced.is_some(), "no replacement first fetcher");
    wait_until("the replacement counted", || async {
        t.stats("ff").await.first_fetch_replaced >= 1
    })
    .await;
}

#[tokio::test]
async fn a_large_audience_is_split_into_cells_each_seeded_over_http() {
    // Cells of 3: six viewers make two meshes, each with its own first
    // fetcher; peers only ever meet peers of their cell.
    let t = Tracker::start(&[
        "--cell-viewers",
        "3",
        "--stripes",
        "0",
        "--min-first-fetchers",
        "1",
    ]);
    let mut origin = Ws::join(&t, "big", "origin", ClientKind::Publisher, None).await;
    let mut viewers = Vec::new();
    for i in 0..6 {
        viewers.push(Ws::join(&t, "big", &format!("v{i}"), ClientKind::Native, None).await);
    }
    let s = t.stats("big").await;
    assert_eq!((s.viewers, s.peers.publisher), (6, 1));
    assert_eq!(s.cells, vec![3, 3]);
    wait_until("the cells gauge", || async {
        t.metric("swarmcast_tracker_cells{").await == 2.0
    })
    .await;
    origin
        .send(&ClientMsg::Publish {
            meta: meta("big", 0),
        })
        .await;
    let mut fetch_cells = Vec::new();
    for (i, v) in viewers.iter_mut().enumerate() {
        let mut met = Vec::new();
        let m = loop {
            match v.recv().await.expect("open") {
                ServerMsg::Peers { peers } => {
                    met.extend(peers.into_iter().map(|p| p.peer_id.to_string()));
                }
                m @ (ServerMsg::Fetch { .. } | ServerMsg::Segment { .. }) => break m,
                _ => {}
            }
        };
        for id in &met {
            let j: usize = id[1..].parse().unwrap();
            assert_eq!(j / 3, i / 3, "v{i} met {id}");
        }
        assert!(!met.is_empty() || i % 3 == 0, "v{i} met nobody");
        if matches!(m, ServerMsg::Fetch { .. }) {
            fetch_cells.push(i / 3);
        }
    }
    assert_eq!(fetch_cells, vec![0, 1], "one first fetcher per cell");
    // The publisher hears from one cell only: nothing came after its
    // welcome, and a ping is answered once.
    assert!(origin.silent_for(300).await);
    origin.alive().await;
    assert!(origin.silent_for(300).await);
    // A signal cannot cross cells.
    viewers[0]
        .send(&ClientMsg::Signal {
            to: PeerId::new("v4").unwrap(),
            signal: Signal::Offer { sdp: "x".into() },
        })
        .await;
    viewers[0].expect_error(ErrorCode::UnknownPeer).await;
    assert!(viewers[4].no_signal_for(300).await);
    // A viewer that leaves frees room in its cell: the next joiner takes
    // it, and hears of the live segment.
    drop(viewers.remove(1));
    wait_until("v1 gone", || async {
        t.stats("big").await.cells == vec![2, 3]
    })
    .await;
    let mut late = Ws::join(&t, "big", "v9", ClientKind::Native, None).await;
    late.expect(|m| matches!(m, ServerMsg::Segment { meta: m } if *m == meta("big", 0)))
        .await;
    assert_eq!(t.stats("big").await.cells, vec![3, 3]);
    // A cell opened after the publish has it too.
    let mut third = Ws::join(&t, "big", "v10", ClientKind::Native, None).await;
    third
        .expect(|m| matches!(m, ServerMsg::Segment { meta: m } if *m == meta("big", 0)))
        .await;
    assert_eq!(t.stats("big").await.cells, vec![3, 3, 1]);
    assert!(origin.silent_for(200).await);
    let s = t.stats("big").await;
    assert_eq!(s.first_fetch_assigned, 2);
    assert_eq!(s.published, 1);
}

impl Ws {
    /// Connects to `url` (a node's `/v1/ws` with its query).
    async fn connect_url(url: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Ws { ws }
    }
}

#[tokio::test]
async fn cells_spread_over_nodes_are_fed_by_the_streams_home() {
    // Node A is the stream's home; node B hosts cell 1 (as a balancer
    // routing by stream and cell would place it) and feeds it from A.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home_url = format!("ws://127.0.0.1:{port}/v1/ws");
    let listen = format!("127.0.0.1:{port}");
    let common = [
        "--cell-viewers",
        "2",
        "--stripes",
        "0",
        "--min-first-fetchers",
        "1",
    ];
    let a =
        Tracker::start(&[&common[..], &["--listen", &listen, "--tier-url", &home_url]].concat());
    let b = Tracker::start(&[&common[..], &["--tier-url", &home_url]].concat());
    let mut origin = Ws::join(&a, "spread", "origin", ClientKind::Publisher, None).await;
    origin
        .send(&ClientMsg::Publish {
            meta: meta("spread", 0),
        })
        .await;
    let _v0 = Ws::join(&a, "spread", "v0", ClientKind::Native, None).await;
    let _v1 = Ws::join(&a, "spread", "v1", ClientKind::Native, None).await;
    // The home's cell is full: the next joiner is sent to cell 1.
    let mut v2 = Ws::connect(&a).await;
    v2.send(&ClientMsg::Hello(hello(
        "spread",
        "v2",
        ClientKind::Native,
        None,
    )))
    .await;
    assert_eq!(v2.recv().await, Some(ServerMsg::Redirect { cell: 1 }));
    v2.closed().await;
    let cell_url = |t: &Tracker, cell: u32| {
        swarmcast_proto::tracker::url_for(&t.ws(), &StreamId::new("spread").unwrap(), Some(cell))
    };
    let mut v2 = Ws::connect_url(&cell_url(&b, 1)).await;
    let mut h = hello("spread", "v2", ClientKind::Native, None);
    h.cell = Some(1);
    v2.send(&ClientMsg::Hello(h.clone())).await;
    v2.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    // B's cell gets the home's records: the one published before, then
    // each new one, which its only viewer fetches first.
    v2.expect(|m| matches!(m, ServerMsg::Fetch { meta: x } | ServerMsg::Segment { meta: x } if *x == meta("spread", 0)))
        .await;
    origin
        .send(&ClientMsg::Publish {
            meta: meta("spread", 1),
        })
        .await;
    v2.expect(|m| matches!(m, ServerMsg::Fetch { meta: x } if *x == meta("spread", 1)))
        .await;
    let s = b.get("/v1/streams/spread/stats?cell=1").await;
    let s: StreamStats = serde_json::from_str(&s).unwrap();
    assert_eq!((s.cell, s.viewers, s.peers.publisher), (1, 1, 1));
    // B reports its cell's members to the home: v2 (once the report is
    // 2 s younger than v2's redirect, only the report counts it), then
    // none once v2 leaves.
    wait_until("the home to hear of v2 in cell 1", || async {
        a.stats("spread").await.cells == vec![2, 1]
    })
    .await;
    drop(v2);
    wait_until("the home to hear cell 1 is empty", || async {
        a.stats("spread").await.cells == vec![2, 0]
    })
    .await;
    // Cell 1 has room for two; then cell 2 opens.
    for (id, cell) in [("v3", 1), ("v4", 1), ("v5", 2)] {
        let mut v = Ws::connect(&a).await;
        v.send(&ClientMsg::Hello(hello(
            "spread",
            id,
            ClientKind::Native,
            None,
        )))
        .await;
        assert_eq!(v.recv().await, Some(ServerMsg::Redirect { cell }));
    }
    // Cells only where the URL says, and never a publisher's.
    let mut bad = Ws::connect(&b).await;
    bad.send(&ClientMsg::Hello(h.clone())).await;
    bad.expect_error(ErrorCode::Forbidden).await;
    let mut bad = Ws::connect_url(&cell_url(&b, 1)).await;
    bad.send(&ClientMsg::Hello(hello(
        "spread",
        "p",
        ClientKind::Publisher,
        None,
    )))
    .await;
    bad.expect_error(ErrorCode::Forbidden).await;
    assert!(
        tokio_tungstenite::connect_async(format!("{}?stream=spread&cell=0", b.ws()))
            .await
            .is_err()
    );
    // The tracker client follows a redirect by itself; here the home also
    // hosts the cell it names (its --tier-url is itself).
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_h, mut ev) = client::start(
        ClientConfig::new(a.ws(), hello("spread", "v6", ClientKind::Native, None)),
        shutdown.clone(),
    );
    assert!(matches!(ev.recv().await, Some(Event::Connected(_))));
    origin
        .send(&ClientMsg::Publish {
            meta: meta("spread", 2),
        })
        .await;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = ev.recv().await {
            if let Event::Message(ServerMsg::Fetch { meta: m } | ServerMsg::Segment { meta: m }) = e
            {
                if m == meta("spread", 2) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true));
    let list = a.get("/v1/streams").await;
    assert!(list.contains("\"cell\":2"), "{list}");
    assert_eq!(a.metric("swarmcast_tracker_redirects_total").await, 5.0);
    // A home without its publisher for 10 s lets its feeders go (they
    // reconnect through the tier URL to wherever the home is now).
    drop(origin);
    wait_until("the stale home to let its feeders go", || async {
        a.metric("swarmcast_tracker_stale_home_feeders_released_total")
            .await
            >= 1.0
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_cell_that_cannot_reach_the_streams_home_lets_its_viewers_go() {
    // The tier URL names a closed port: cell 1 here never hears of a
    // segment, so after its grace it refuses joins and tells its viewers,
    // whose players then fall back to HTTP.
    let t = Tracker::start(&["--tier-url", "ws://127.0.0.1:9/v1/ws"]);
    let url = swarmcast_proto::tracker::url_for(&t.ws(), &StreamId::new("lost").unwrap(), Some(1));
    let mut h = hello("lost", "v", ClientKind::Native, None);
    h.cell = Some(1);
    let mut v = Ws::connect_url(&url).await;
    v.send(&ClientMsg::Hello(h.clone())).await;
    v.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
    let deadline = Instant::now() + Duration::from_secs(12);
    let told = loop {
        assert!(Instant::now() < deadline, "the viewer was never let go");
        match tokio::time::timeout(Duration::from_secs(1), v.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMsg::Error { code, .. }) = ServerMsg::decode(t.as_str()) {
                    break code;
                }
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(_) => panic!("closed without a word"),
        }
    };
    assert_eq!(told, ErrorCode::Internal);
    v.closed().await;
    h.peer_id = PeerId::new("w").unwrap();
    let mut w = Ws::connect_url(&url).await;
    w.send(&ClientMsg::Hello(h)).await;
    w.expect_error(ErrorCode::Internal).await;
    assert!(t.metric("swarmcast_tracker_cell_feed_lost_total").await >= 1.0);
}

#[tokio::test]
async fn a_made_up_cell_is_refused_by_the_home_and_its_viewer_goes_home() {
    // One node that is the home and hosts cells (its --tier-url is itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let tier = format!("ws://{listen}/v1/ws");
    let t = Tracker::start(&[
        "--listen",
        &listen,
        "--tier-url",
        &tier,
        "--cell-viewers",
        "2",
    ]);
    let _origin = Ws::join(&t, "made", "origin", ClientKind::Publisher, None).await;
    // A viewer names cell 1000, which the home never opened: the home
    // refuses the cell's feeder, and the cell lets its viewer go at once
    // and is removed.
    let url =
        swarmcast_proto::tracker::url_for(&t.ws(), &StreamId::new("made").unwrap(), Some(1000));
    let mut h = hello("made", "v", ClientKind::Native, None);
    h.cell = Some(1000);
    let mut v = Ws::connect_url(&url).await;
    v.send(&ClientMsg::Hello(h.clone())).await;
    v.expect_error(ErrorCode::Internal).await;
    v.closed().await;
    wait_until("the made-up cell to go", || async {
        !t.get("/v1/streams").await.contains("\"cell\":1000")
    })
    .await;
    assert!(
        t.metric("swarmcast_tracker_refused_total{code=\"forbidden\"}")
            .await
            >= 1.0
    );
    // The tracker client in such a cell goes back to the home, which
    // seats it in its own cell.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_c, mut ev) = client::start(ClientConfig::new(t.ws(), h), shutdown.clone());
    let joined = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ev.recv().await {
                Some(Event::Connected(_)) if t.stats("made").await.viewers == 1 => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(joined, Ok(true));
    assert_eq!(t.stats("made").await.cells, vec![1]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_restarted_tracker_rebuilds_its_index_from_reconnecting_clients() {
    let t = Tracker::start(&[]);
    let addr = t.addr.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut cfg = ClientConfig::new(
            t.ws(),
            hello("rs", &format!("p{i}"), ClientKind::Native, None),
        );
        cfg.backoff_min = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(500);
        let (h, mut ev) = client::start(cfg, shutdown.clone());
        assert!(matches!(ev.recv().await, Some(Event::Connected(_))));
        h.send(have(10)).await.unwrap();
        h.send(have(11)).await.unwrap();
        clients.push((h, ev));
    }
    wait_until("holders before the restart", || async {
        holders(&t.stats("rs").await, 11) == Some(3)
    })
    .await;
    drop(t);
    let t = Tracker::start(&["--listen", &addr]);
    assert_eq!(t.addr, addr);
    for (_, ev) in clients.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "client did not reconnect");
            if let Ok(Some(Event::Connected(_))) =
                tokio::time::timeout(Duration::from_secs(10), ev.recv()).await
            {
                break;
            }
        }
    }
    wait_until("the index rebuilt", || async {
        let s = t.stats("rs").await;
        holders(&s, 10) == Some(3) && holders(&s, 11) == Some(3)
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_closing_client_delivers_its_last_report_first() {
    // The edge peer's last stats report goes out as it leaves; the
    // tracker's totals must hold it once `close` returns, for every one
    // of several clients leaving at once.
    let t = Tracker::start(&[]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..8 {
        let cfg = ClientConfig::new(
            t.ws(),
            hello("bye", &format!("p{i}"), ClientKind::Native, None),
        );
        let (h, mut ev) = client::start(cfg, shutdown.clone());
        assert!(matches!(ev.recv().await, Some(Event::Connected(_))));
        handles.push((h, ev));
    }
    let leaving = handles.into_iter().map(|(h, ev)| async move {
        let _ = ev;
        h.send(ClientMsg::Stats(swarmcast_proto::tracker::StatsReport {
            uploaded_bytes: 1_000,
            p2p_bytes: 10,
            ..Default::default()
        }))
        .await
        .unwrap();
        h.close(Duration::from_secs(10)).await;
    });
    futures_util::future::join_all(leaving).await;
    let s = t.stats("bye").await;
    assert_eq!((s.uploaded_bytes, s.p2p_bytes, s.viewers), (8_000, 80, 0));
    shutdown.cancel();
    // A client's close frame is answered with one (the closing handshake,
    // not a reset), after everything sent before it was read.
    let mut raw = Ws::join(&t, "bye", "raw", ClientKind::Native, None).await;
    raw.send(&ClientMsg::Stats(swarmcast_proto::tracker::StatsReport {
        p2p_bytes: 5,
        ..Default::default()
    }))
    .await;
    raw.ws.close(None).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), raw.ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no closing handshake: {other:?}"),
        }
    }
    wait_until("the raw client's report", || async {
        t.stats("bye").await.p2p_bytes == 85
    })
    .await;
}

#[tokio::test]
async fn serves_https_with_rustls() {
    let (cert, dir) = common::self_signed("swarmcast-tracker-tls");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcast-tracker"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token-secret",
            SECRET,
            "--tls-cert",
        ])
        .env("SWARMCAST_LOG", "warn")
        .arg(dir.join("c.pem"))
        .arg("--tls-key")
        .arg(dir.join("k.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert!(base.starts_with("https://"));
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- bad input: each gets its error code, a count, and leaves a
// well-behaved peer of the same swarm untouched ---------------------------

/// Starts a tracker with `args`, a publisher and a well-behaved viewer in
/// swarm "bad"; runs `attack`; then checks the counter and that the viewer
/// still receives a published segment and answers a ping.
async fn bad_input<F, Fut>(args: &[&str], counter: &str, attack: F)
where
    F: FnOnce(Tracker) -> Fut,
    Fut: std::future::Future<Output = Tracker>,
{
    let t = Tracker::start(args);
    let mut origin = Ws::join(&t, "bad", "origin", ClientKind::Publisher, None).await;
    let mut good = Ws::join(&t, "bad", "good", ClientKind::Native, None).await;
    let t = attack(t).await;
    let n = t.metric(counter).await;
    assert!(n >= 1.0, "{counter} was not counted");
    origin
        .send(&ClientMsg::Publish {
            meta: meta("bad", 99),
        })
        .await;
    good.expect(|m| matches!(m, ServerMsg::Fetch { meta } | ServerMsg::Segment { meta } if meta.id.seq == 99)).await;
    good.alive().await;
}

#[tokio::test]
async fn bad_input_oversized_message() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"too_large\"}",
        |t| async move {
            let mut ws = Ws::join(&t, "bad", "big", ClientKind::Native, None).await;
            ws.send_raw(format!(
                r#"{{"v":1,"type":"ping","nonce":1,"pad":"{}"}}"#,
                "x".repeat(40_000)
            ))
            .await;
            ws.expect_error(ErrorCode::TooLarge).await;
            ws.alive().await;
            // Far over the limit: the connection is closed.
            ws.send_raw("x".repeat(200_000)).await;
            ws.closed().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_swarm_full() {
    bad_input(
        &["--max-peers-per-swarm", "2"],
        "swarmcast_tracker_refused_total{code=\"overloaded\"}",
        |t| async move {
            let mut ws = Ws::connect(&t).await;
            ws.send(&ClientMsg::Hello(hello(
                "bad",
                "third",
                ClientKind::Native,
                None,
            )))
            .await;
            ws.expect_error(ErrorCode::Overloaded).await;
            ws.closed().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_message_flood_is_disconnected() {
    bad_input(
        &["--msgs-per-sec", "10", "--msg-burst", "20"],
        "swarmcast_tracker_disconnects_total{reason=\"flood\"}",
        |t| async move {
            let mut ws = Ws::join(&t, "bad", "flood", ClientKind::Native, None).await;
            for i in 0..200 {
                if ws
                    .ws
                    .send(Message::text(ClientMsg::Ping { nonce: i }.encode()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // The session is closed; the `rate_limited` errors sent before
            // may be lost to the reset (the tracker closes with our flood
            // still unread), so the counters are what the test checks.
            ws.closed().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_have_flood_is_disconnected() {
    bad_input(
        &["--msgs-per-sec", "10", "--msg-burst", "20"],
        "swarmcast_tracker_refused_total{code=\"rate_limited\"}",
        |t| async move {
            let mut ws = Ws::join(&t, "bad", "flood", ClientKind::Native, None).await;
            for i in 0..200 {
                let m = if i % 2 == 0 {
                    have(i)
                } else {
                    ClientMsg::Lost {
                        segments: vec![SegmentRef {
                            rendition: r(),
                            seq: i - 1,
                        }],
                    }
                };
                if ws.ws.send(Message::text(m.encode())).await.is_err() {
                    break;
                }
            }
            // The session is closed; the `rate_limited` errors sent before
            // may be lost to the reset (the tracker closes with our flood
            // still unread), so the counters are what the test checks.
            ws.closed().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_malformed_json() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"malformed\"}",
        |t| async move {
            let mut ws = Ws::join(&t, "bad", "m", ClientKind::Native, None).await;
            for text in [
                "{",
                "[]",
                "null",
                "{\"v\":1,\"type\":\"have\",\"segments\":\"x\"}",
                "\u{0}",
            ] {
                ws.send_raw(text.into()).await;
                ws.expect_error(ErrorCode::Malformed).await;
            }
            ws.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
            ws.expect_error(ErrorCode::Malformed).await;
            ws.alive().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_unknown_message_type() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"malformed\"}",
        |t| async move {
            let mut ws = Ws::join(&t, "bad", "u", ClientKind::Native, None).await;
            ws.send_raw(r#"{"v":1,"type":"take_over","everything":true}"#.into())
                .await;
            ws.expect_error(ErrorCode::Malformed).await;
            ws.alive().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_wrong_protocol_version() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"unsupported_version\"}",
        |t| async move {
            let mut ws = Ws::connect(&t).await;
            let text = ClientMsg::Hello(hello("bad", "v2", ClientKind::Native, None))
                .encode()
                .replacen("\"v\":1", "\"v\":2", 1);
            ws.send_raw(text).await;
            ws.expect_error(ErrorCode::UnsupportedVersion).await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_signal_to_another_swarm() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"unknown_peer\"}",
        |t| async move {
            let _far = Ws::join(&t, "other", "far", ClientKind::Native, None).await;
            let mut ws = Ws::join(&t, "bad", "s", ClientKind::Native, None).await;
            ws.send(&ClientMsg::Signal {
                to: PeerId::new("far").unwrap(),
                signal: Signal::Offer { sdp: "v=0".into() },
            })
            .await;
            ws.expect_error(ErrorCode::UnknownPeer).await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_peer_id_taken() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"peer_id_taken\"}",
        |t| async move {
            let mut ws = Ws::connect(&t).await;
            ws.send(&ClientMsg::Hello(hello(
                "bad",
                "good",
                ClientKind::Native,
                None,
            )))
            .await;
            ws.expect_error(ErrorCode::PeerIdTaken).await;
            ws.closed().await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_bad_token() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"unauthorized\"}",
        |t| async move {
            // A viewer token for another stream, a forged token, and a viewer
            // token used to join as publisher.
            for h in [
                Hello {
                    token: token("other", Role::Viewer),
                    ..hello("bad", "x1", ClientKind::Native, None)
                },
                Hello {
                    token: "djE6YmFkOnZpZXdlcjo5OTk5OTk5OTk5.AAAA".into(),
                    ..hello("bad", "x2", ClientKind::Native, None)
                },
                Hello {
                    token: token("bad", Role::Viewer),
                    ..hello("bad", "x3", ClientKind::Publisher, None)
                },
            ] {
                let mut ws = Ws::connect(&t).await;
                ws.send(&ClientMsg::Hello(h)).await;
                ws.expect_error(ErrorCode::Unauthorized).await;
                ws.closed().await;
            }
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_message_before_hello_and_viewer_publishing() {
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"forbidden\"}",
        |t| async move {
            let mut ws = Ws::connect(&t).await;
            ws.send(&have(1)).await;
            ws.expect_error(ErrorCode::NotJoined).await;
            ws.send(&ClientMsg::Hello(hello(
                "bad",
                "pretender",
                ClientKind::Native,
                None,
            )))
            .await;
            ws.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
            // A viewer may not publish (no hash ever comes from a peer).
            ws.send(&ClientMsg::Publish {
                meta: meta("bad", 5),
            })
            .await;
            ws.expect_error(ErrorCode::Forbidden).await;
            t
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_hello_for_another_stream_than_the_url() {
    // A load balancer routes `/v1/ws?stream=ID` by ID: a hello for another
    // stream on that URL would land on a node that does not own it.
    bad_input(
        &[],
        "swarmcast_tracker_refused_total{code=\"forbidden\"}",
        |t| async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("{}?stream=elsewhere", t.ws()))
                .await
                .unwrap();
            let mut ws = Ws { ws };
            ws.send(&ClientMsg::Hello(hello(
                "bad",
                "x1",
                ClientKind::Native,
                None,
            )))
            .await;
            ws.expect_error(ErrorCode::Forbidden).await;
            ws.closed().await;
            // The same URL with the stream it names joins.
            let (ws, _) = tokio_tungstenite::connect_async(format!("{}?stream=bad", t.ws()))
                .await
                .unwrap();
            let mut ws = Ws { ws };
            ws.send(&ClientMsg::Hello(hello(
                "bad",
                "x2",
                ClientKind::Native,
                None,
            )))
            .await;
            ws.expect(|m| matches!(m, ServerMsg::Welcome { .. })).await;
            t
        },
    )
    .await;
}
