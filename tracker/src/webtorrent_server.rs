//! The tokio shell of the WebTorrent tracker endpoint (`/announce`, and `/`
//! when the request is a WebSocket upgrade; any path on `--wt-listen`).
//!
//! Ownership: the swarms are a `DashMap` from info hash to
//! [`WtSwarm`], sharded so that announces to different info hashes on
//! different threads rarely meet on one lock; a session holds a shard's lock
//! only while the core handles one announce (no `.await`, no I/O). One task
//! per WebSocket: it decodes, applies the session limits (the same token
//! bucket as the native protocol), and writes its own replies straight to
//! its socket; what other sessions relay to it (offers, answers) arrives
//! through a bounded queue of [`WT_QUEUE`] messages. A full queue drops the
//! relayed message (counted, never encoded) instead of the session: an
//! offer is worth nothing late, and the client announces again.
//!
//! Counts live in atomics (the stats JSON and `/metrics` both read them),
//! so the per-message path takes no metrics-registry lookup.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use dashmap::DashMap;
use futures_util::SinkExt as _;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use serde::Serialize;
use swarmcast_proto::webtorrent::{self as wt, BinId, Request};
use swarmcast_proto::{Role, StreamId, TokenKey};
use tokio::sync::mpsc;
use tracing::{Instrument as _, debug, info_span};

use crate::server::{Admit, RateLimit, SessionLimits, Tracker};
use crate::webtorrent::{Outcome, Relay, WtConfig, WtSwarm};

/// Relayed messages queued to one session; more are dropped.
pub const WT_QUEUE: usize = 64;

/// The stream id a WebTorrent token is signed for (`--wt-require-token`).
pub const WT_TOKEN_STREAM: &str = "webtorrent";

type Link = mpsc::Sender<Utf8Bytes>;

/// Limits of the WebTorrent endpoint beyond the swarm rules.
#[derive(Debug, Clone)]
pub struct WtLimits {
    /// Largest message, bytes; larger ones get a `failure reason` (up to
    /// twice this; beyond, the connection is closed).
    pub max_message: usize,
    /// Swarms one connection may be in at once.
    pub max_swarms_per_conn: usize,
    /// Swarms in all (an announce that would open one more is refused).
    pub max_swarms: usize,
    /// Info hashes answered per scrape.
    pub max_scrape: usize,
    /// Connections must carry `?token=` signed for stream `webtorrent`, role
    /// viewer.
    pub require_token: bool,
    /// Only these info hashes are served (`None`: all).
    pub allow: Option<HashSet<BinId>>,
}

/// Refusal labels, the index of each counter in [`WtHub::refused`].
const REASONS: [&str; 18] = [
    "malformed",
    "no_action",
    "unknown_action",
    "missing_field",
    "bad_id",
    "bad_event",
    "too_large",
    "not_text",
    "rate_limited",
    "flood",
    "not_allowed",
    "too_many_swarms",
    "tracker_full",
    "peer_id_changed",
    "peer_id_taken",
    "swarm_full",
    "full_scrape",
    "unauthorized",
];

fn reason_index(r: &str) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// The endpoint's shared state: swarms and counts.
#[derive(Debug)]
pub struct WtHub {
    cfg: WtConfig,
    limits: WtLimits,
    swarms: DashMap<BinId, WtSwarm<Link>>,
    epoch: Instant,
    connections: AtomicU64,
    peers: AtomicU64,
    announces: AtomicU64,
    scrapes: AtomicU64,
    offers_relayed: AtomicU64,
    offers_unrelayed: AtomicU64,
    answers_relayed: AtomicU64,
    answers_unknown_peer: AtomicU64,
    answers_no_offer: AtomicU64,
    queue_full: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
}

/// `/v1/webtorrent/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WtStats {
    /// Open WebTorrent connections.
    pub connections: u64,
    /// Swarms (info hashes) with at least one peer.
    pub swarms: u64,
    /// Peers in all swarms.
    pub peers: u64,
    /// Announces handled.
    pub announces: u64,
    /// Scrapes handled.
    pub scrapes: u64,
    /// Offers queued to their recipient.
    pub offers_relayed: u64,
    /// Offers not relayed (beyond the caps or `numwant`, or no other peer).
    pub offers_unrelayed: u64,
    /// Answers queued to the offering peer.
    pub answers_relayed: u64,
    /// Answers dropped: the peer they name is not in the swarm.
    pub answers_unknown_peer: u64,
    /// Answers dropped: no matching unexpired offer.
    pub answers_no_offer: u64,
    /// Relayed messages dropped because the recipient's queue was full.
    pub queue_full: u64,
    /// Refused requests by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
}

impl WtHub {
    /// An empty hub.
    pub fn new(cfg: WtConfig, limits: WtLimits) -> Self {
        Self {
            cfg,
            limits,
            swarms: DashMap::new(),
            epoch: Instant::now(),
            connections: AtomicU64::new(0),
            peers: AtomicU64::new(0),
            announces: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
            offers_relayed: AtomicU64::new(0),
            offers_unrelayed: AtomicU64::new(0),
            answers_relayed: AtomicU64::new(0),
            answers_unknown_peer: AtomicU64::new(0),
            answers_no_offer: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Whether a connection may open, given its URL's query string.
    pub fn admits(&self, key: &TokenKey, query: Option<&str>, now_s: u64) -> bool {
        if !self.limits.require_token {
            return true;
        }
        let token = crate::server::query_param(query, "token");
        let ok = match (token, StreamId::new(WT_TOKEN_STREAM.to_string())) {
            (Some(t), Ok(stream)) => key.verify(t, &stream, Role::Viewer, now_s).is_ok(),
            _ => false,
        };
        if !ok {
            self.refuse("unauthorized");
        }
        ok
    }

    fn refuse(&self, reason: &str) {
        self.refused[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn stats(&self) -> WtStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WtStats {
            connections: l(&self.connections),
            swarms: self.swarms.len() as u64,
            peers: l(&self.peers),
            announces: l(&self.announces),
            scrapes: l(&self.scrapes),
            offers_relayed: l(&self.offers_relayed),
            offers_unrelayed: l(&self.offers_unrelayed),
            answers_relayed: l(&self.answers_relayed),
            answers_unknown_peer: l(&self.answers_unknown_peer),
            answers_no_offer: l(&self.answers_no_offer),
            queue_full: l(&self.queue_full),
            refused: REASONS
                .iter()
                .zip(&self.refused)
                .filter(|(_, n)| l(n) > 0)
                .map(|(r, n)| ((*r).to_string(), l(n)))
                .collect(),
        }
    }

    /// Copies the counts into the Prometheus recorder (at each scrape of
    /// `/metrics`).
    pub fn export_metrics(&self) {
        let s = self.stats();
        metrics::gauge!("swarmcast_tracker_wt_connections").set(s.connections as f64);
        metrics::gauge!("swarmcast_tracker_wt_swarms").set(s.swarms as f64);
        metrics::gauge!("swarmcast_tracker_wt_peers").set(s.peers as f64);
        let c = |name: &'static str, v: u64| metrics::counter!(name).absolute(v);
        c("swarmcast_tracker_wt_announces_total", s.announces);
        c("swarmcast_tracker_wt_scrapes_total", s.scrapes);
        c(
            "swarmcast_tracker_wt_offers_relayed_total",
            s.offers_relayed,
        );
        c(
            "swarmcast_tracker_wt_offers_unrelayed_total",
            s.offers_unrelayed,
        );
        c(
            "swarmcast_tracker_wt_answers_relayed_total",
            s.answers_relayed,
        );
        metrics::counter!("swarmcast_tracker_wt_answers_dropped_total", "reason" => "unknown_peer")
            .absolute(s.answers_unknown_peer);
        metrics::counter!("swarmcast_tracker_wt_answers_dropped_total", "reason" => "no_offer")
            .absolute(s.answers_no_offer);
        c("swarmcast_tracker_wt_queue_full_total", s.queue_full);
        for (r, n) in REASONS.iter().zip(&self.refused) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                metrics::counter!("swarmcast_tracker_wt_refused_total", "reason" => *r).absolute(n);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn leave(&self, info_hash: &BinId, peer_id: &BinId, conn: u64) {
        let removed = match self.swarms.get_mut(info_hash) {
            Some(mut s) => s.remove(peer_id, conn),
            None => false,
        };
        if removed {
            self.peers.fetch_sub(1, Ordering::Relaxed);
            self.swarms.remove_if(info_hash, |_, s| s.is_empty());
        }
    }
}

/// Upgrades to a WebTorrent session (the caller checked the token).
pub fn upgrade(
    t: Arc<Tracker>,
    ws: WebSocketUpgrade,
    remote: SocketAddr,
) -> axum::response::Response {
    let max = t.wt.limits.max_message;
    ws.max_message_size(2 * max)
        .max_frame_size(2 * max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let conn = t.next_conn();
            let span = info_span!("wt_session", conn, %remote);
            let tasks = t.tasks().clone();
            tasks.track_future(session(t, socket, conn).instrument(span))
        })
}

/// One session's state.
struct Session {
    t: Arc<Tracker>,
    conn: u64,
    link: Link,
    joined: Vec<(BinId, BinId)>,
    rng: SmallRng,
    relays: Vec<(Link, Relay)>,
}

impl Session {
    fn hub(&self) -> &WtHub {
        &self.t.wt
    }

    /// Handles one text message; returns the reply to write.
    fn handle(&mut self, text: &str) -> String {
        let hub = &self.t.wt;
        if text.len() > hub.limits.max_message {
            hub.refuse("too_large");
            let (action, ih) = wt::salvage(text);
            return wt::failure(action, ih.as_ref(), "message too large");
        }
        let req = match wt::decode(text) {
            Ok(r) => r,
            Err(e) => {
                hub.refuse(e.reason());
                let (action, ih) = wt::salvage(text);
                return wt::failure(action, ih.as_ref(), &e.to_string());
            }
        };
        match req {
            Request::Scrape(None) => {
                hub.refuse("full_scrape");
                wt::failure(Some("scrape"), None, "a scrape must list its info hashes")
            }
            Request::Scrape(Some(list)) => {
                hub.scrapes.fetch_add(1, Ordering::Relaxed);
                let files: Vec<(BinId, wt::ScrapeFile)> = list
                    .into_iter()
                    .filter(|h| hub.limits.allow.as_ref().is_none_or(|a| a.contains(h)))
                    .take(hub.limits.max_scrape)
                    .map(|h| {
                        let f = hub.swarms.get(&h).map(|s| s.scrape()).unwrap_or_default();
                        (h, f)
                    })
                    .collect();
                wt::scrape_reply(&files)
            }
            Request::Announce(a) => self.announce(&a),
        }
    }

    fn announce(&mut self, a: &wt::Announce<'_>) -> String {
        let refuse = |hub: &WtHub, reason: &str, msg: &str| {
            hub.refuse(reason);
            wt::failure(Some("announce"), Some(&a.info_hash), msg)
        };
        let hub = &self.t.wt;
        if hub
            .limits
            .allow
            .as_ref()
            .is_some_and(|l| !l.contains(&a.info_hash))
        {
            return refuse(
                hub,
                "not_allowed",
                "info_hash is not served by this tracker",
            );
        }
        let mine = self.joined.iter().position(|(h, _)| *h == a.info_hash);
        match mine {
            Some(i) if self.joined[i].1 != a.peer_id => {
                return refuse(
                    hub,
                    "peer_id_changed",
                    "one peer_id per swarm per connection",
                );
            }
            None if self.joined.len() >= hub.limits.max_swarms_per_conn
                && a.event != wt::Event::Stopped =>
            {
                return refuse(hub, "too_many_swarms", "too many swarms on one connection");
            }
            // Checked before the entry is taken (the count may pass the cap
            // by the announces racing on other threads, no more).
            None if a.event != wt::Event::Stopped
                && hub.swarms.len() >= hub.limits.max_swarms
                && !hub.swarms.contains_key(&a.info_hash) =>
            {
                return refuse(hub, "tracker_full", "too many swarms on this tracker");
            }
            _ => {}
        }
        hub.announces.fetch_add(1, Ordering::Relaxed);
        let now = hub.now_ms();
        let result = {
            let mut swarm = hub.swarms.entry(a.info_hash).or_default();
            swarm.announce(
                &hub.cfg,
                now,
                (self.conn, &self.link),
                a,
                &mut self.rng,
                &mut self.relays,
            )
        };
        let o: Outcome = match result {
            Ok(o) => o,
            Err(r) => {
                hub.swarms.remove_if(&a.info_hash, |_, s| s.is_empty());
                return refuse(hub, r.reason(), r.message());
            }
        };
        if o.joined {
            hub.peers.fetch_add(1, Ordering::Relaxed);
            self.joined.push((a.info_hash, a.peer_id));
        }
        if o.left {
            hub.peers.fetch_sub(1, Ordering::Relaxed);
            self.joined.retain(|(h, _)| *h != a.info_hash);
        }
        if a.event == wt::Event::Stopped {
            // Also a `stopped` for a swarm nobody is in: nothing stays.
            hub.swarms.remove_if(&a.info_hash, |_, s| s.is_empty());
        }
        // Counted as relayed once queued to the recipient.
        let (mut offers, mut answers, mut full) = (0, 0, 0);
        for (to, relay) in self.relays.drain(..) {
            match to.try_reserve() {
                Ok(permit) => {
                    permit.send(Utf8Bytes::from(relay.encode(a)));
                    match relay {
                        Relay::Offer(_) => offers += 1,
                        Relay::Answer => answers += 1,
                    }
                }
                Err(_) => full += 1,
            }
        }
        let add = |c: &AtomicU64, n: u32| {
            if n > 0 {
                c.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        };
        add(&hub.offers_relayed, offers);
        add(&hub.answers_relayed, answers);
        add(&hub.queue_full, full);
        add(&hub.offers_unrelayed, o.offers_unrelayed);
        match o.answer_dropped {
            Some("unknown_peer") => add(&hub.answers_unknown_peer, 1),
            Some(_) => add(&hub.answers_no_offer, 1),
            None => {}
        }
        o.reply
    }
}

async fn session(t: Arc<Tracker>, mut ws: WebSocket, conn: u64) {
    let (link, mut rx) = mpsc::channel::<Utf8Bytes>(WT_QUEUE);
    let limits: SessionLimits = t.limits();
    let mut s = Session {
        t,
        conn,
        link,
        joined: Vec::new(),
        rng: SmallRng::seed_from_u64(rand::random()),
        relays: Vec::new(),
    };
    s.hub().connections.fetch_add(1, Ordering::Relaxed);
    let mut bucket = RateLimit::new(&limits);
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let shutdown = s.t.shutdown_token().cancelled_owned();
    tokio::pin!(shutdown);
    let reason: &'static str = loop {
        let reply = tokio::select! {
            _ = &mut shutdown => {
                let _ = ws.send(Message::Close(Some(CloseFrame { code: 1001, reason: "tracker shutting down".into() }))).await;
                break "shutdown";
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > limits.idle_timeout {
                    break "idle";
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break "closed";
                }
                continue;
            }
            Some(text) = rx.recv() => Some(text),
            frame = ws.recv() => {
                let Some(Ok(frame)) = frame else { break "closed" };
                last_seen = Instant::now();
                let text = match frame {
                    Message::Text(t) => t,
                    // aquatic's clients may send JSON in binary frames.
                    Message::Binary(b) => match Utf8Bytes::try_from(b) {
                        Ok(t) => t,
                        Err(_) => {
                            s.hub().refuse("not_text");
                            Utf8Bytes::from(wt::failure(None, None, "frames must be UTF-8 JSON"))
                        }
                    },
                    Message::Close(_) => {
                        // The reply tungstenite queued on reading it: the
                        // client sees the closing handshake, not a reset.
                        let _ = ws.flush().await;
                        break "closed";
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                match bucket.admit() {
                    Admit::Yes => Some(Utf8Bytes::from(s.handle(text.as_str()))),
                    Admit::No => {
                        s.hub().refuse("rate_limited");
                        let (action, ih) = wt::salvage(text.as_str());
                        Some(Utf8Bytes::from(wt::failure(action, ih.as_ref(), "too many messages")))
                    }
                    Admit::Flood => {
                        s.hub().refuse("flood");
                        let _ = ws.send(Message::text(wt::failure(None, None, "message flood: closing"))).await;
                        break "flood";
                    }
                }
            }
        };
        // The reply (or a relayed message), then whatever else is queued,
        // in one write.
        let mut failed = false;
        if let Some(text) = reply {
            failed = ws.feed(Message::Text(text)).await.is_err();
        }
        let mut batch = 0;
        while !failed && batch < 64 {
            let Ok(more) = rx.try_recv() else { break };
            failed = ws.feed(Message::Text(more)).await.is_err();
            batch += 1;
        }
        if failed || ws.flush().await.is_err() {
            break "closed";
        }
    };
    let hub = &s.t.wt;
    for (h, p) in s.joined.drain(..) {
        hub.leave(&h, &p, conn);
    }
    hub.connections.fetch_sub(1, Ordering::Relaxed);
    debug!(reason, "webtorrent session ended");
    metrics::counter!("swarmcast_tracker_wt_disconnects_total", "reason" => reason).increment(1);
}
