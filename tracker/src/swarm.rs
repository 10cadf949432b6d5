//! The sans-IO core of one swarm (one stream): membership, the segment
//! index, peer selection, signalling relay and the dissemination plan.
//!
//! Driver contract (the tokio shell in `server.rs`, the tests, and the event
//! simulator all follow it):
//! 1. Every call takes `now`, milliseconds on a monotonic clock the driver
//!    owns; the core reads no clock and does no I/O. Randomness comes from the
//!    seed given to [`Swarm::new`].
//! 2. Feed inputs: [`Swarm::join`] when a session's hello was authenticated,
//!    [`Swarm::handle`] for each later message of that session,
//!    [`Swarm::leave`] when the session ends.
//! 3. After each input, drain [`Swarm::poll_output`] and deliver every
//!    [`Output`] to its recipients, in order.
//! 4. Call [`Swarm::handle_timeout`] when the time given by
//!    [`Swarm::poll_timeout`] has come (first-fetch deadlines).
//!
//! The core never panics on what peers send: every message is checked, and a
//! bad one earns its sender an error message and a count in [`Counters`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng as _, SeedableRng as _};
use swarmcast_proto::tracker::{
    ClientKind, ClientMsg, ErrorCode, IceServer, PeerConfig, PeerInfo, SegmentRef, ServerMsg,
    StatsReport, StripeSource,
};
use swarmcast_proto::{PeerId, RenditionId, SegmentMeta, Seq, StreamId};

use crate::bitset::BitSet;
use crate::stats::{KindCounts, SegmentStats, StreamStats};

/// A session's index in the swarm (reused after it leaves).
pub type Slot = u32;

/// Settings of every swarm.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Most sessions in one swarm.
    pub max_peers: usize,
    /// Neighbours each peer is given (K).
    pub neighbours: u16,
    /// Segments per rendition kept in the index.
    pub window_segments: u32,
    /// Most renditions per swarm.
    pub max_renditions: usize,
    /// Viewers per first fetcher: a swarm of N viewers gets about
    /// `N / cell_size` first fetchers per segment (within the bounds below).
    pub cell_size: u32,
    /// Fewest first fetchers per segment (when the swarm has that many).
    pub min_first_fetchers: u32,
    /// Most first fetchers per segment. The coverage feedback finds the
    /// count; a cap of 1,000 held 10,000 viewers with 1.5× uplinks at
    /// 53 % offload where the feedback wanted 2,280 and reached 68 %
    /// (docs/benchmarks/simulator.md), so the default only bounds a
    /// runaway: the swarm's own size.
    pub max_first_fetchers: u32,
    /// A first fetcher that has not announced `have` by then is replaced.
    pub first_fetch_deadline_ms: u64,
    /// Publish → the moment the plan wants `coverage_target` of the viewers
    /// to hold a segment, before viewers start falling back to HTTP. The
    /// number of first fetchers follows what the mesh actually reached by
    /// then (see [`Swarm`]'s plan): more when segments reach too few
    /// viewers in time, slowly fewer when they reach the target.
    pub spread_budget_ms: u64,
    /// The share of viewers the plan wants holding a segment within the
    /// spread budget (the rest fetch what they lack over HTTP before their
    /// deadline). 0.8: in the simulator 0.97 asked for half again as many
    /// first fetchers and lowered offload by 7–9 points with 1.5× uplinks
    /// (docs/benchmarks/simulator.md).
    pub coverage_target: f64,
    /// Candidates scored per selection (a random sample when the swarm is
    /// larger).
    pub selection_sample: usize,
    /// Signals a peer may relay per second (sustained).
    pub signals_per_sec: u32,
    /// Signals a peer may relay in a burst.
    pub signal_burst: u32,
    /// Told to peers in their welcome.
    pub ping_interval_ms: u32,
    /// Told to peers in their welcome.
    pub idle_timeout_ms: u32,
    /// STUN/TURN servers told to peers.
    pub ice_servers: Vec<IceServer>,
    /// Stripes per segment in the dissemination plan (0: no stripes, the
    /// first fetchers fetch whole segments). With stripes, native peers and
    /// relays get a tree per stripe over their links: the first fetchers'
    /// count of roots fetch their stripe over HTTP, every other peer asks
    /// one neighbour for it as soon as the segment is announced.
    pub stripes: u8,
    /// Uplink a peer keeps free of its planned stripes: a peer with uplink
    /// `U` feeds at most `U / (headroom × bitrate / stripes)` children.
    pub stripe_headroom: f64,
    /// Real bytes per byte of a record's `size` (1; the event simulator
    /// scales segments down and says by how much).
    pub size_scale: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            max_peers: 20_000,
            neighbours: 8,
            window_segments: 30,
            max_renditions: 8,
            cell_size: 300,
            min_first_fetchers: 1,
            max_first_fetchers: 20_000,
            first_fetch_deadline_ms: 1500,
            spread_budget_ms: 3000,
            coverage_target: 0.8,
            selection_sample: 256,
            signals_per_sec: 50,
            signal_burst: 200,
            ping_interval_ms: 10_000,
            idle_timeout_ms: 30_000,
            ice_servers: Vec::new(),
            stripes: 8,
            stripe_headroom: 1.5,
            size_scale: 1,
        }
    }
}

/// Who gets an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One session.
    One(Slot),
    /// Several sessions (the same text to each).
    Many(Vec<Slot>),
}

/// A message to deliver: encoded once, shared by every recipient.
#[derive(Debug, Clone)]
pub struct Output {
    /// Recipients.
    pub to: Recipients,
    /// JSON text of a [`ServerMsg`].
    pub text: Bytes,
}

/// What the swarm has counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions joined.
    pub joins: u64,
    /// Sessions left.
    pub leaves: u64,
    /// Segments published by the origin.
    pub published: u64,
    /// First-fetch assignments sent.
    pub first_fetch_assigned: u64,
    /// First fetchers replaced after their deadline.
    pub first_fetch_replaced: u64,
    /// Signals relayed.
    pub signals_relayed: u64,
    /// Links given up so that a joiner could take their place.
    pub links_split: u64,
    /// Stripe plans sent (`stripes` messages: new or changed plans).
    pub stripe_plans_sent: u64,
    /// Stripe roots assigned (also in `first_fetch_assigned`).
    pub stripe_roots: u64,
    /// Misbehaving peers reported, by reason.
    pub reports: BTreeMap<&'static str, u64>,
    /// Messages refused, by error code.
    pub refused: BTreeMap<&'static str, u64>,
}

/// What a session says in its hello (already authenticated).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The peer's id.
    pub peer_id: PeerId,
    /// What it is.
    pub kind: ClientKind,
    /// Region label.
    pub region: Option<String>,
    /// Upload capacity offered, kbit/s.
    pub upload_kbps: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: u64,
}

impl Bucket {
    fn take(&mut self, now: u64, per_sec: u32, burst: u32) -> bool {
        let dt = now.saturating_sub(self.at) as f64 / 1000.0;
        self.at = now;
        self.tokens = (self.tokens + dt * f64::from(per_sec)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Peer {
    id: PeerId,
    kind: ClientKind,
    region: Option<Arc<str>>,
    upload_kbps: u32,
    neighbours: Vec<Slot>,
    /// The rendition this peer last announced (what it watches).
    interest: Option<RenditionId>,
    signals: Bucket,
    stats: StatsReport,
    /// When it was last made a first fetcher.
    last_assigned: Option<u64>,
    /// Most neighbours it keeps: K, more for uplinks above the swarm's mean
    /// when stripes are planned (it can feed more children than K links
    /// carry).
    max_links: u16,
    /// The stripe plan it was last sent, per rendition (a relay is in the
    /// plan of each), as a plan key (see `KEY_SWARM`).
    stripes_sent: Vec<(RenditionId, Vec<u64>)>,
    /// This session's number in the swarm (a slot is reused by later
    /// sessions; a serial is not).
    serial: u64,
}

impl Peer {
    fn is_viewer(&self) -> bool {
        matches!(self.kind, ClientKind::Native | ClientKind::Browser)
    }
    fn shares(&self) -> bool {
        self.kind != ClientKind::Publisher
    }
}

#[derive(Debug)]
struct Fetcher {
    slot: Slot,
    deadline: u64,
}

#[derive(Debug, Default)]
struct Entry {
    meta: Option<Arc<SegmentMeta>>,
    holders: BitSet,
    published_at: Option<u64>,
    /// Viewers expected to want it, counted at publish.
    population: u32,
    /// First fetchers still within their deadline.
    fetchers: Vec<Fetcher>,
    /// Every slot ever asked to fetch it (never asked twice).
    asked: Vec<Slot>,
    planned: u32,
    /// Holders within `spread_budget_ms` of the publish.
    in_budget: u32,
    /// Its coverage has fed the plan.
    judged: bool,
    t50: Option<u64>,
    t95: Option<u64>,
    t100: Option<u64>,
}

#[derive(Debug, Default)]
struct RenditionIdx {
    newest_published: Option<Seq>,
    /// First fetchers the coverage of recent segments asks for (0 = none
    /// judged yet).
    fetchers_wanted: f64,
    /// The last segment judged: (first fetchers planned, viewers the
    /// relaying reached within the budget).
    last_judged: Option<(f64, f64)>,
    /// Roots of each stripe's tree (kept from segment to segment).
    roots: Vec<Vec<Slot>>,
    segs: BTreeMap<Seq, Entry>,
}

/// One swarm.
#[derive(Debug)]
pub struct Swarm {
    stream: StreamId,
    cfg: SwarmConfig,
    rng: SmallRng,
    peers: Vec<Option<Peer>>,
    free: Vec<Slot>,
    by_id: HashMap<PeerId, Slot>,
    live: usize,
    /// Sum of the sharing peers' uplinks, kbit/s, and their count (for the
    /// mean that sizes each peer's links).
    up_sum: u64,
    up_count: u64,
    renditions: BTreeMap<RenditionId, RenditionIdx>,
    out: VecDeque<Output>,
    counters: Counters,
    /// Stats of sessions that left, added up.
    departed: StatsReport,
    startup_samples: VecDeque<u64>,
    /// Sessions admitted so far (each one's `serial`).
    sessions: u64,
}

/// A stripe plan's key: each stripe's source (`KEY_SWARM`, `KEY_ORIGIN` or
/// the parent's session serial), then the children's serials, sorted. Two
/// plans with one key are the same message, so a publish compares keys and
/// builds (peer-id strings and all) only the plans that changed.
const KEY_SWARM: u64 = u64::MAX;
const KEY_ORIGIN: u64 = u64::MAX - 1;

fn encode(msg: &ServerMsg) -> Bytes {
    Bytes::from(msg.encode())
}

impl Swarm {
    /// An empty swarm.
    pub fn new(stream: StreamId, cfg: SwarmConfig, seed: u64) -> Self {
        Self {
            stream,
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            peers: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            live: 0,
            up_sum: 0,
            up_count: 0,
            renditions: BTreeMap::new(),
            out: VecDeque::new(),
            counters: Counters::default(),
            departed: StatsReport::default(),
            startup_samples: VecDeque::new(),
            sessions: 0,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// Sessions in the swarm.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No session.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The next output to deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn send(&mut self, slot: Slot, msg: &ServerMsg) {
        self.out.push_back(Output {
            to: Recipients::One(slot),
            text: encode(msg),
        });
    }

    fn refuse(&mut self, slot: Slot, code: ErrorCode, message: &str) {
        let name = code.as_str();
        *self.counters.refused.entry(name).or_default() += 1;
        self.send(slot, &ServerMsg::error(code, message));
    }

    fn peer(&self, slot: Slot) -> Option<&Peer> {
        self.peers.get(slot as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, slot: Slot) -> Option<&mut Peer> {
        self.peers.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn info(&self, slot: Slot, initiator: bool) -> Option<PeerInfo> {
        self.peer(slot).map(|p| PeerInfo {
            peer_id: p.id.clone(),
            kind: p.kind,
            region: p.region.as_deref().map(str::to_owned),
            initiator,
        })
    }

    /// Admits an authenticated session. On success the welcome, its first
    /// neighbours and the live edge are queued for it.
    pub fn join(&mut self, now: u64, req: JoinRequest) -> Result<Slot, ErrorCode> {
        if self.by_id.contains_key(&req.peer_id) {
            *self.counters.refused.entry("peer_id_taken").or_default() += 1;
            return Err(ErrorCode::PeerIdTaken);
        }
        if self.live >= self.cfg.max_peers {
            *self.counters.refused.entry("overloaded").or_default() += 1;
            return Err(ErrorCode::Overloaded);
        }
        let max_links = self.max_links_for(req.kind, req.upload_kbps);
        if req.kind != ClientKind::Publisher {
            self.up_sum += u64::from(req.upload_kbps);
            self.up_count += 1;
        }
        let peer = Peer {
            max_links,
            id: req.peer_id.clone(),
            kind: req.kind,
            region: req.region.map(Arc::from),
            upload_kbps: req.upload_kbps,
            neighbours: Vec::new(),
            interest: None,
            signals: Bucket {
                tokens: f64::from(self.cfg.signal_burst),
                at: now,
            },
            stats: StatsReport::default(),
            last_assigned: None,
            stripes_sent: Vec::new(),
            serial: self.sessions,
        };
        self.sessions += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.peers[s as usize] = Some(peer);
                s
            }
            None => {
                self.peers.push(Some(peer));
                (self.peers.len() - 1) as Slot
            }
        };
        self.by_id.insert(req.peer_id.clone(), slot);
        self.live += 1;
        self.counters.joins += 1;
        let welcome = ServerMsg::Welcome {
            peer_id: req.peer_id,
            config: PeerConfig {
                max_peers: max_links,
                window_segments: self.cfg.window_segments,
                ping_interval_ms: self.cfg.ping_interval_ms,
                idle_timeout_ms: self.cfg.idle_timeout_ms,
                ice_servers: self.cfg.ice_servers.clone(),
            },
        };
        self.send(slot, &welcome);
        if req.kind != ClientKind::Publisher {
            // The live edge: the newest records of every rendition, so the
            // newcomer has hashes before the next publish.
            let edge: Vec<Arc<SegmentMeta>> = self
                .renditions
                .values()
                .flat_map(|r| r.segs.values().rev().filter_map(|e| e.meta.clone()).take(3))
                .collect();
            for meta in edge {
                self.send(
                    slot,
                    &ServerMsg::Segment {
                        meta: (*meta).clone(),
                    },
                );
            }
            self.introduce(slot, usize::from(self.cfg.neighbours));
        }
        Ok(slot)
    }

    /// Ends a session: its neighbours are told, its holdings leave the index.
    pub fn leave(&mut self, _now: u64, slot: Slot) {
        let Some(peer) = self.peers.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&peer.id);
        self.live -= 1;
        if peer.kind != ClientKind::Publisher {
            self.up_sum = self.up_sum.saturating_sub(u64::from(peer.upload_kbps));
            self.up_count = self.up_count.saturating_sub(1);
        }
        self.free.push(slot);
        self.counters.leaves += 1;
        add_stats(&mut self.departed, &peer.stats);
        let left = encode(&ServerMsg::PeerLeft {
            peer_id: peer.id.clone(),
        });
        for &n in &peer.neighbours {
            if let Some(np) = self.peer_mut(n) {
                np.neighbours.retain(|&x| x != slot);
            }
        }
        if !peer.neighbours.is_empty() {
            self.out.push_back(Output {
                to: Recipients::Many(peer.neighbours.clone()),
                text: left,
            });
        }
        for r in self.renditions.values_mut() {
            for e in r.segs.values_mut() {
                e.holders.remove(slot);
                e.fetchers.retain(|f| f.slot != slot);
                e.asked.retain(|&s| s != slot);
            }
        }
    }

    /// Handles one message of a joined session.
    pub fn handle(&mut self, now: u64, slot: Slot, msg: ClientMsg) {
        if self.peer(slot).is_none() {
            return;
        }
        match msg {
            ClientMsg::Hello(_) => self.refuse(slot, ErrorCode::NotJoined, "already joined"),
            ClientMsg::Have { segments } => {
                for s in segments {
                    self.set_held(now, slot, s, true);
                }
            }
            ClientMsg::Lost { segments } => {
                for s in segments {
                    self.set_held(now, slot, s, false);
                }
            }
            ClientMsg::HaveMap {
                rendition,
                base_seq,
                bitmap,
            } => match hex::decode(&bitmap) {
                Ok(bits) => self.have_map(now, slot, rendition, base_seq, &bits),
                Err(_) => self.refuse(slot, ErrorCode::Malformed, "bitmap is not hex"),
            },
            ClientMsg::WantPeers { count } => {
                let room = self.peer(slot).map_or(0, |p| {
                    usize::from(p.max_links).saturating_sub(p.neighbours.len())
                });
                let n = usize::from(count).min(room);
                let got = self.introduce(slot, n);
                if got == 0 {
                    self.send(slot, &ServerMsg::Peers { peers: Vec::new() });
                }
            }
            ClientMsg::PeerClosed { peer_id } => {
                if let Some(&other) = self.by_id.get(&peer_id) {
                    if let Some(p) = self.peer_mut(slot) {
                        p.neighbours.retain(|&x| x != other);
                    }
                    if let Some(p) = self.peer_mut(other) {
                        p.neighbours.retain(|&x| x != slot);
                    }
                }
            }
            ClientMsg::ReportPeer { peer_id, reason } => {
                // Counted (and logged by the shell); the reporter has dropped
                // the peer already, and the neighbour relation goes with it.
                *self.counters.reports.entry(reason.as_str()).or_default() += 1;
                if let Some(&other) = self.by_id.get(&peer_id) {
                    if let Some(p) = self.peer_mut(slot) {
                        p.neighbours.retain(|&x| x != other);
                    }
                    if let Some(p) = self.peer_mut(other) {
                        p.neighbours.retain(|&x| x != slot);
                    }
                }
            }
            ClientMsg::Signal { to, signal } => self.signal(now, slot, to, signal),
            ClientMsg::Publish { meta } => self.publish(now, slot, meta),
            ClientMsg::Stats(report) => {
                if let Some(ms) = report.startup_ms {
                    let had = self.peer(slot).and_then(|p| p.stats.startup_ms);
                    if had.is_none() {
                        if self.startup_samples.len() == 1024 {
                            self.startup_samples.pop_front();
                        }
                        self.startup_samples.push_back(ms);
                    }
                }
                if let Some(p) = self.peer_mut(slot) {
                    p.stats = report;
                }
            }
            ClientMsg::CellReport { .. } => self.refuse(
                slot,
                ErrorCode::Forbidden,
                "only a tracker node feeding a cell reports one",
            ),
            ClientMsg::Ping { nonce } => self.send(slot, &ServerMsg::Pong { nonce }),
            ClientMsg::Pong { .. } => {}
        }
    }

    fn signal(
        &mut self,
        now: u64,
        from: Slot,
        to: PeerId,
        signal: swarmcast_proto::tracker::Signal,
    ) {
        let (per_sec, burst) = (self.cfg.signals_per_sec, self.cfg.signal_burst);
        let Some(p) = self.peer_mut(from) else { return };
        if !p.signals.take(now, per_sec, burst) {
            self.refuse(from, ErrorCode::RateLimited, "too many signals");
            return;
        }
        let from_id = p.id.clone();
        match self.by_id.get(&to).copied() {
            Some(dst) if dst != from => {
                self.counters.signals_relayed += 1;
                self.send(
                    dst,
                    &ServerMsg::Signal {
                        from: from_id,
                        signal,
                    },
                );
            }
            _ => self.refuse(from, ErrorCode::UnknownPeer, "no such peer in this swarm"),
        }
    }

    /// Whether `seq` of `r` may enter the index: within the window behind
    /// the newest published segment, and at most 2 ahead of it.
    fn seq_allowed(&self, r: &RenditionId, seq: Seq) -> bool {
        match self.renditions.get(r).and_then(|x| x.newest_published) {
            Some(n) => {
                seq.saturating_add(u64::from(self.cfg.window_segments)) > n
                    && seq <= n.saturating_add(2)
            }
            None => true,
        }
    }

    fn entry_mut(&mut self, r: RenditionId, seq: Seq) -> Option<&mut Entry> {
        if !self.renditions.contains_key(&r) && self.renditions.len() >= self.cfg.max_renditions {
            return None;
        }
        if !self.seq_allowed(&r, seq) {
            return None;
        }
        let window = self.cfg.window_segments as usize;
        let idx = self.renditions.entry(r).or_default();
        if !idx.segs.contains_key(&seq) {
            if idx.segs.len() >= window {
                // Full: a newcomer older than everything kept does not enter.
                if idx
                    .segs
                    .first_key_value()
                    .is_some_and(|(&oldest, _)| seq < oldest)
                {
                    return None;
                }
                idx.segs.pop_first();
            }
            idx.segs.insert(seq, Entry::default());
        }
        idx.segs.get_mut(&seq)
    }

    fn set_held(&mut self, now: u64, slot: Slot, s: SegmentRef, held: bool) {
        if held {
            if let Some(p) = self.peer_mut(slot) {
                p.interest = Some(s.rendition);
            }
            if self.entry_mut(s.rendition, s.seq).is_none() {
                *self.counters.refused.entry("out_of_window").or_default() += 1;
                return;
            }
        }
        let Some(e) = self
            .renditions
            .get_mut(&s.rendition)
            .and_then(|r| r.segs.get_mut(&s.seq))
        else {
            return;
        };
        if held {
            if e.holders.insert(slot) {
                if let Some(at) = e.published_at {
                    let n = e.holders.len();
                    if now.saturating_sub(at) <= self.cfg.spread_budget_ms {
                        e.in_budget = n;
                    }
                    let pop = e.population.max(1);
                    if e.t50.is_none() && n * 2 >= pop {
                        e.t50 = Some(now.saturating_sub(at));
                    }
                    if e.t95.is_none() && n * 100 >= pop * 95 {
                        e.t95 = Some(now.saturating_sub(at));
                    }
                    if e.t100.is_none() && n >= pop {
                        e.t100 = Some(now.saturating_sub(at));
                    }
                }
            }
            e.fetchers.retain(|f| f.slot != slot);
        } else {
            e.holders.remove(slot);
        }
    }

    fn have_map(&mut self, now: u64, slot: Slot, r: RenditionId, base: Seq, bits: &[u8]) {
        let span = bits.len() as u64 * 8;
        for i in 0..span {
            if bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0 {
                let Some(seq) = base.checked_add(i) else {
                    break;
                };
                self.set_held(now, slot, SegmentRef { rendition: r, seq }, true);
            }
        }
        // Everything of the rendition inside the map's span that it does not
        // set is no longer held.
        let end = base.saturating_add(span);
        let clear: Vec<Seq> = self
            .renditions
            .get(&r)
            .map(|x| {
                x.segs
                    .range(base..end)
                    .filter(|(seq, e)| {
                        let i = **seq - base;
                        e.holders.contains(slot) && bits[(i / 8) as usize] & (0x80 >> (i % 8)) == 0
                    })
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default();
        for seq in clear {
            self.set_held(now, slot, SegmentRef { rendition: r, seq }, false);
        }
    }

    /// Gives `slot` up to `n` new neighbours; returns how many.
    fn introduce(&mut self, slot: Slot, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut chosen = self.select_neighbours(slot, n);
        if n - chosen.len() >= 2 {
            let split = self.split_links(slot, (n - chosen.len()) / 2, &chosen);
            chosen.extend(split);
        }
        if chosen.is_empty() {
            return 0;
        }
        let infos: Vec<PeerInfo> = chosen.iter().filter_map(|&c| self.info(c, true)).collect();
        for &c in &chosen {
            if let Some(p) = self.peer_mut(c) {
                p.neighbours.push(slot);
            }
            if let Some(me) = self.info(slot, false) {
                self.send(c, &ServerMsg::Peers { peers: vec![me] });
            }
        }
        if let Some(p) = self.peer_mut(slot) {
            p.neighbours.extend(&chosen);
        }
        self.send(slot, &ServerMsg::Peers { peers: infos });
        chosen.len()
    }

    /// When too few peers have a free slot, the asker takes the place of
    /// up to `pairs` existing links: for a link a–b (neither end a
    /// neighbour of the asker), a and b are told to drop each other
    /// (`peer_left`) and are introduced to the asker instead. Their degree
    /// stays the same, the asker gains two neighbours, and the mesh stays
    /// connected (a and b now reach each other through the asker). Without
    /// it the first k+1 viewers form a complete graph of full peers and
    /// later joiners form islands that no first fetcher may reach.
    fn split_links(&mut self, slot: Slot, pairs: usize, taken: &[Slot]) -> Vec<Slot> {
        let Some(me) = self.peer(slot) else {
            return Vec::new();
        };
        let mut avoid: Vec<Slot> = me.neighbours.clone();
        avoid.extend_from_slice(taken);
        avoid.push(slot);
        let linked = |p: &Peer| p.shares() && !p.neighbours.is_empty();
        let sample = self.cfg.selection_sample;
        let full: Vec<Slot> = if self.live <= sample + 1 {
            let mut all: Vec<Slot> = self
                .peers
                .iter()
                .enumerate()
                .filter_map(|(s, p)| p.as_ref().filter(|p| linked(p)).map(|_| s as Slot))
                .filter(|s| !avoid.contains(s))
                .collect();
            all.shuffle(&mut self.rng);
            all.truncate(sample);
            all
        } else {
            // A scan of the whole swarm for every joiner would cost O(N)
            // each, O(N²) for a crowd joining.
            self.draw_sample(|s, p| linked(p) && !avoid.contains(&s))
        };
        let mut out = Vec::new();
        for a in full {
            if out.len() >= pairs * 2 {
                break;
            }
            if avoid.contains(&a) {
                continue;
            }
            let Some(b) = self.peer(a).and_then(|p| {
                p.neighbours
                    .iter()
                    .copied()
                    .find(|b| !avoid.contains(b) && self.peer(*b).is_some_and(|q| q.shares()))
            }) else {
                continue;
            };
            if let Some(p) = self.peer_mut(a) {
                p.neighbours.retain(|&x| x != b);
            }
            if let Some(p) = self.peer_mut(b) {
                p.neighbours.retain(|&x| x != a);
            }
            for (x, y) in [(a, b), (b, a)] {
                if let Some(id) = self.peer(y).map(|p| p.id.clone()) {
                    self.send(x, &ServerMsg::PeerLeft { peer_id: id });
                }
            }
            self.counters.links_split += 1;
            avoid.extend([a, b]);
            out.extend([a, b]);
        }
        out
    }

    /// Up to `selection_sample` distinct peers drawn at random among those
    /// `ok` accepts, in at most four times that many draws: the candidates
    /// of a swarm larger than the sample, without scanning it.
    fn draw_sample(&mut self, ok: impl Fn(Slot, &Peer) -> bool) -> Vec<Slot> {
        let sample = self.cfg.selection_sample;
        let mut out = Vec::with_capacity(sample);
        let mut tries = 0;
        while out.len() < sample && tries < sample * 4 {
            tries += 1;
            let s = self.rng.random_range(0..self.peers.len()) as Slot;
            if self.peer(s).is_some_and(|p| ok(s, p)) && !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The selection policy (ARCHITECTURE.md, "Peer selection"): among a
    /// sample of the swarm, drop the asker, its neighbours, publishers and
    /// peers with no free slot; score the rest by same region, free slots,
    /// spare upload capacity and how many recent segments they hold that the
    /// asker lacks; take the best `n`.
    fn select_neighbours(&mut self, slot: Slot, n: usize) -> Vec<Slot> {
        let Some(me) = self.peer(slot) else {
            return Vec::new();
        };
        let my_region = me.region.clone();
        let mine: Vec<Slot> = me.neighbours.clone();
        let ok = |s: Slot, p: &Peer| {
            s != slot
                && p.shares()
                && p.neighbours.len() < usize::from(p.max_links)
                && !mine.contains(&s)
        };
        let mut candidates: Vec<Slot> = if self.live <= self.cfg.selection_sample + 1 {
            self.peers
                .iter()
                .enumerate()
                .filter_map(|(s, p)| p.as_ref().filter(|p| ok(s as Slot, p)).map(|_| s as Slot))
                .collect()
        } else {
            self.draw_sample(ok)
        };
        candidates.shuffle(&mut self.rng);
        // Recent segments (newest 3 of each rendition) for the "holds what
        // the asker lacks" term.
        let recent: Vec<&Entry> = self
            .renditions
            .values()
            .flat_map(|r| r.segs.values().rev().take(3))
            .collect();
        let max_up = candidates
            .iter()
            .filter_map(|&c| self.peer(c))
            .map(|p| p.upload_kbps)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut scored: Vec<(f64, Slot)> = candidates
            .iter()
            .filter_map(|&c| {
                let p = self.peer(c)?;
                let mut score = 0.0;
                if my_region.is_some() && p.region == my_region {
                    score += 4.0;
                }
                score += 2.0 * (1.0 - p.neighbours.len() as f64 / f64::from(p.max_links.max(1)));
                score += 2.0 * f64::from(p.upload_kbps) / f64::from(max_up);
                if !recent.is_empty() {
                    let lacks = recent
                        .iter()
                        .filter(|e| e.holders.contains(c) && !e.holders.contains(slot))
                        .count();
                    score += 2.0 * lacks as f64 / recent.len() as f64;
                }
                if p.kind == ClientKind::Relay {
                    score += 1.0;
                }
                Some((score, c))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(n).map(|(_, s)| s).collect()
    }

    fn publish(&mut self, now: u64, slot: Slot, meta: SegmentMeta) {
        if self.peer(slot).map(|p| p.kind) != Some(ClientKind::Publisher) {
            self.refuse(slot, ErrorCode::Forbidden, "only the publisher may publish");
            return;
        }
        if meta.id.stream != self.stream {
            self.refuse(slot, ErrorCode::Forbidden, "segment of another stream");
            return;
        }
        let r = meta.id.rendition;
        let seq = meta.id.seq;
        if let Some(e) = self.renditions.get(&r).and_then(|x| x.segs.get(&seq)) {
            if e.meta.as_ref().is_some_and(|m| **m == meta) {
                return; // a replay after a reconnect
            }
        }
        if !self.renditions.contains_key(&r) && self.renditions.len() >= self.cfg.max_renditions {
            self.refuse(slot, ErrorCode::Overloaded, "too many renditions");
            return;
        }
        // The origin is the authority: its newest seq moves the window, and
        // entries that peers announced ahead of it are dropped.
        let window = u64::from(self.cfg.window_segments);
        {
            let idx = self.renditions.entry(r).or_default();
            let newest = idx.newest_published.map_or(seq, |n| n.max(seq));
            idx.newest_published = Some(newest);
            idx.segs
                .retain(|&s, _| s.saturating_add(window) > newest && s <= newest.saturating_add(2));
        }
        let Some(e) = self.entry_mut(r, seq) else {
            return; // older than the window
        };
        let hash_changed = e.meta.as_ref().is_some_and(|m| m.sha256 != meta.sha256);
        if hash_changed {
            // Peers announced bytes of another segment under this id: the
            // origin's record wins and those announcements are void.
            *e = Entry::default();
        }
        let meta = Arc::new(meta);
        e.meta = Some(meta.clone());
        e.published_at = Some(now);
        self.counters.published += 1;

        // Interested viewers: those whose last announcement was this
        // rendition, and relays; everyone who shares, while nobody has said.
        let interested: Vec<Slot> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(s, p)| {
                let p = p.as_ref()?;
                (p.kind == ClientKind::Relay || (p.is_viewer() && p.interest == Some(r)))
                    .then_some(s as Slot)
            })
            .collect();
        let sharing: Vec<Slot> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(s, p)| p.as_ref().filter(|p| p.shares()).map(|_| s as Slot))
            .collect();
        let pool = if interested.is_empty() {
            &sharing
        } else {
            &interested
        };
        let population = pool.len() as u32;
        self.judge_coverage(now, r);
        let wanted = self.renditions.get(&r).map_or(0.0, |x| x.fetchers_wanted);
        let planned = self.first_fetcher_count(population, wanted);
        // Stripes go to peers that speak them (native peers and relays);
        // browsers fetch as before, from them or HTTP.
        let mut striped: Vec<Slot> = if self.cfg.stripes > 0 && meta.block_hashes().is_some() {
            pool.iter()
                .copied()
                .filter(|&s| {
                    self.peer(s)
                        .is_some_and(|p| matches!(p.kind, ClientKind::Native | ClientKind::Relay))
                })
                .collect()
        } else {
            Vec::new()
        };
        // Browsers take no part in the trees: where they are the majority,
        // whole-segment first fetchers among everyone serve them better
        // (each stays a source for the others), and plans already sent are
        // withdrawn.
        if striped.len() * 2 < pool.len() {
            striped.clear();
            self.withdraw_stripes(r, pool);
        }
        // Whole-segment first fetchers, or the roots of the stripes (each
        // fetches its stripe, told in its plan: no `fetch`).
        let (chosen, roots) = if striped.is_empty() {
            (
                self.choose_fetchers(pool, planned as usize, &[]),
                Vec::new(),
            )
        } else {
            (
                Vec::new(),
                self.plan_stripes(r, &meta, &striped, planned as usize),
            )
        };
        let deadline = now + self.cfg.first_fetch_deadline_ms;
        if let Some(e) = self
            .renditions
            .get_mut(&r)
            .and_then(|x| x.segs.get_mut(&seq))
        {
            e.population = population;
            e.planned = planned;
            e.fetchers = chosen
                .iter()
                .map(|&slot| Fetcher { slot, deadline })
                .collect();
            // Stripe roots count as first fetchers in the stats; the
            // deadline replacement is for whole segments (a root's children
            // fetch a stripe it fails to bring over HTTP themselves).
            e.asked = if roots.is_empty() {
                chosen.clone()
            } else {
                roots.clone()
            };
        }
        for &c in chosen.iter().chain(&roots) {
            if let Some(p) = self.peer_mut(c) {
                p.last_assigned = Some(now);
            }
        }
        self.counters.first_fetch_assigned += (chosen.len() + roots.len()) as u64;
        self.counters.stripe_roots += roots.len() as u64;
        if !chosen.is_empty() {
            self.out.push_back(Output {
                to: Recipients::Many(chosen.clone()),
                text: encode(&ServerMsg::Fetch {
                    meta: (*meta).clone(),
                }),
            });
        }
        let rest: Vec<Slot> = sharing
            .into_iter()
            .filter(|s| !chosen.contains(s))
            .collect();
        if !rest.is_empty() {
            self.out.push_back(Output {
                to: Recipients::Many(rest),
                text: encode(&ServerMsg::Segment {
                    meta: (*meta).clone(),
                }),
            });
        }
    }

    /// Tells the peers of `pool` that still have a stripe plan for `r` that
    /// it no longer stands (every stripe `swarm`, no children).
    fn withdraw_stripes(&mut self, r: RenditionId, pool: &[Slot]) {
        let n = usize::from(self.cfg.stripes.max(1));
        for &v in pool {
            let had = self
                .peer(v)
                .is_some_and(|p| p.stripes_sent.iter().any(|(x, _)| *x == r));
            if had {
                self.send_plan(v, r, &vec![KEY_SWARM; n], |_| {
                    (vec![StripeSource::Swarm; n], Vec::new())
                });
            }
        }
    }

    /// K links, or with stripes planned and an uplink above the swarm's
    /// mean, K × uplink / mean (at most 4K): in a swarm of mostly thin
    /// uplinks the few broadband peers can feed dozens of stripe children,
    /// and a stripe travels only over a link.
    fn max_links_for(&self, kind: ClientKind, upload_kbps: u32) -> u16 {
        let k = self.cfg.neighbours.max(1);
        if self.cfg.stripes == 0 || kind == ClientKind::Publisher || self.up_count == 0 {
            return k;
        }
        let mean = (self.up_sum / self.up_count).max(1) as f64;
        let scaled = (f64::from(k) * f64::from(upload_kbps) / mean).round();
        (scaled as u16).clamp(k, k.saturating_mul(4))
    }

    /// Plans the stripes of rendition `r` over `pool` with `roots` roots per
    /// stripe and sends each peer whose plan changed its new one. Roots are
    /// kept from segment to segment (spread over peers, best uplinks
    /// first); each stripe's tree grows breadth first over the links the
    /// tracker made, one level of every stripe in turn, each peer taking
    /// children while its uplink allows (`stripe_headroom`). A peer no
    /// tree reaches gets `swarm` for that stripe.
    /// Returns the roots (the first fetchers of a stripe each).
    fn plan_stripes(
        &mut self,
        r: RenditionId,
        meta: &SegmentMeta,
        pool: &[Slot],
        roots: usize,
    ) -> Vec<Slot> {
        const NONE: u32 = u32::MAX;
        const ORIGIN: u32 = u32::MAX - 1;
        // A peer outside the pool: never planned.
        const OUT: u32 = u32::MAX - 2;
        let n = usize::from(self.cfg.stripes);
        let slots = self.peers.len();
        let bitrate_kbps = (meta
            .size
            .saturating_mul(self.cfg.size_scale.max(1))
            .saturating_mul(8)) as f64
            / f64::from(meta.duration_ms.max(1));
        let per_child = (self.cfg.stripe_headroom.max(0.1) * bitrate_kbps / n as f64).max(1.0);
        let mut in_pool = vec![false; slots];
        for &s in pool {
            in_pool[s as usize] = true;
        }
        let mut cap: Vec<u32> = (0..slots)
            .map(|s| {
                self.peers[s].as_ref().map_or(0, |p| {
                    ((f64::from(p.upload_kbps) / per_child).floor() as u32).min(4 * n as u32)
                })
            })
            .collect();
        // Roots: the last ones still here, topped up with the best uplinks
        // not yet a root.
        let mut kept = self
            .renditions
            .get_mut(&r)
            .map(|x| std::mem::take(&mut x.roots))
            .unwrap_or_default();
        kept.resize(n, Vec::new());
        let mut is_root = vec![false; slots];
        for stripe in kept.iter_mut() {
            stripe.retain(|&s| {
                in_pool[s as usize] && !std::mem::replace(&mut is_root[s as usize], true)
            });
            stripe.truncate(roots);
        }
        let mut shuffled: Vec<Slot> = pool.to_vec();
        shuffled.shuffle(&mut self.rng);
        // Best uplinks first, in shuffled order among equals: a stable
        // counting sort (a capacity is at most 4 × stripes).
        let top = 4 * n + 1;
        let mut at = vec![0usize; top + 1];
        for &s in &shuffled {
            at[top - cap[s as usize].min(top as u32 - 1) as usize] += 1;
        }
        for i in 0..top {
            at[i + 1] += at[i];
        }
        let mut candidates: Vec<Slot> = vec![0; shuffled.len()];
        for &s in &shuffled {
            let b = top - 1 - cap[s as usize].min(top as u32 - 1) as usize;
            candidates[at[b]] = s;
            at[b] += 1;
        }
        let mut next_candidate = candidates.into_iter();
        let per_stripe = roots.min(pool.len() / n.max(1)).max(1);
        for stripe in kept.iter_mut() {
            while stripe.len() < per_stripe {
                let Some(s) = next_candidate.by_ref().find(|&s| !is_root[s as usize]) else {
                    break;
                };
                is_root[s as usize] = true;
                stripe.push(s);
            }
        }
        // Fewer peers than stripes: the last root takes the stripes after
        // its own too (a run of stripes is one HTTP range).
        for k in 1..n {
            if kept[k].is_empty() {
                if let Some(&s) = kept[k - 1].first() {
                    kept[k].push(s);
                }
            }
        }
        // And the stripes before the first root (its roots left): the
        // root of the next stripe takes them.
        for k in (0..n.saturating_sub(1)).rev() {
            if kept[k].is_empty() {
                if let Some(&s) = kept[k + 1].first() {
                    kept[k].push(s);
                }
            }
        }
        // The tree growth's test reads one array: `NONE` is a pool member
        // with no source yet (a cache miss per neighbour visited).
        let mut src = vec![OUT; slots * n];
        for &s in pool {
            src[s as usize * n..s as usize * n + n].fill(NONE);
        }
        let mut frontier: Vec<Vec<Slot>> = kept.clone();
        for (k, stripe) in kept.iter().enumerate() {
            for &s in stripe {
                src[s as usize * n + k] = ORIGIN;
            }
        }
        // Every peer's neighbours in one array, read in slot order: the
        // growth below visits each peer once per stripe.
        let mut nb_at = vec![0u32; slots + 1];
        let mut nb: Vec<Slot> = Vec::new();
        for (s, p) in self.peers.iter().enumerate() {
            if let Some(p) = p {
                nb.extend_from_slice(&p.neighbours);
            }
            nb_at[s + 1] = nb.len() as u32;
        }
        loop {
            let mut grew = false;
            for (k, front) in frontier.iter_mut().enumerate() {
                let mut next = Vec::new();
                for &u in front.iter() {
                    let ui = u as usize;
                    for &v in &nb[nb_at[ui] as usize..nb_at[ui + 1] as usize] {
                        if cap[u as usize] == 0 {
                            break;
                        }
                        let i = v as usize * n + k;
                        // One stripe per link: a second would wait behind
                        // the first on the same channel.
                        if (v as usize) < slots
                            && src[i] == NONE
                            && !src[v as usize * n..v as usize * n + n].contains(&u)
                        {
                            src[i] = u;
                            cap[u as usize] -= 1;
                            next.push(v);
                        }
                    }
                }
                grew |= !next.is_empty();
                *front = next;
            }
            if !grew {
                break;
            }
        }
        let mut all_roots: Vec<Slot> = kept.iter().flatten().copied().collect();
        all_roots.sort_unstable();
        all_roots.dedup();
        if let Some(x) = self.renditions.get_mut(&r) {
            x.roots = kept;
        }
        // Each parent's children, in pool order (one flat array, `start`
        // indexing it by slot).
        let parent = |x: u32| (x < OUT).then_some(x as usize);
        let mut start = vec![0u32; slots + 1];
        for &v in pool {
            for k in 0..n {
                if let Some(u) = parent(src[v as usize * n + k]) {
                    start[u + 1] += 1;
                }
            }
        }
        for i in 0..slots {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut kids: Vec<Slot> = vec![0; start[slots] as usize];
        for &v in pool {
            for k in 0..n {
                if let Some(u) = parent(src[v as usize * n + k]) {
                    kids[fill[u] as usize] = v;
                    fill[u] += 1;
                }
            }
        }
        // Read once, in slot order: looked up for every stripe and child.
        let serials: Vec<u64> = self
            .peers
            .iter()
            .map(|p| p.as_ref().map_or(KEY_SWARM, |p| p.serial))
            .collect();
        let serial = |s: u32| serials.get(s as usize).copied().unwrap_or(KEY_SWARM);
        let mut key: Vec<u64> = Vec::with_capacity(4 * n);
        let mut kid_keys: Vec<u64> = Vec::new();
        for &v in pool {
            let vi = v as usize;
            let own = &src[vi * n..vi * n + n];
            let children = &kids[start[vi] as usize..start[vi + 1] as usize];
            key.clear();
            key.extend(own.iter().map(|&u| match u {
                NONE => KEY_SWARM,
                ORIGIN => KEY_ORIGIN,
                u => serial(u),
            }));
            kid_keys.clear();
            kid_keys.extend(children.iter().map(|&c| serial(c)));
            kid_keys.sort_unstable();
            kid_keys.dedup();
            key.extend_from_slice(&kid_keys);
            self.send_plan(v, r, &key, |sw| {
                let sources = own
                    .iter()
                    .map(|&u| match u {
                        NONE => StripeSource::Swarm,
                        ORIGIN => StripeSource::Origin,
                        u => sw
                            .peer(u)
                            .map_or(StripeSource::Swarm, |p| StripeSource::Peer {
                                peer_id: p.id.clone(),
                            }),
                    })
                    .collect();
                let mut ids: Vec<PeerId> = children
                    .iter()
                    .filter_map(|&c| sw.peer(c).map(|p| p.id.clone()))
                    .collect();
                ids.sort();
                ids.dedup();
                (sources, ids)
            });
        }
        all_roots
    }

    /// Sends peer `v` its stripe plan for `r` (`plan` builds it), unless
    /// the plan it was last sent has the same `key`.
    fn send_plan(
        &mut self,
        v: Slot,
        r: RenditionId,
        key: &[u64],
        plan: impl FnOnce(&Self) -> (Vec<StripeSource>, Vec<PeerId>),
    ) {
        let Some(p) = self.peer_mut(v) else { return };
        // Compared before anything is built: most publishes change no plan.
        match p.stripes_sent.iter_mut().find(|(x, _)| *x == r) {
            Some((_, old)) if old.as_slice() == key => return,
            Some((_, old)) => {
                old.clear();
                old.extend_from_slice(key);
            }
            None => p.stripes_sent.push((r, key.to_vec())),
        }
        let (sources, children) = plan(self);
        self.counters.stripe_plans_sent += 1;
        self.send(
            v,
            &ServerMsg::Stripes {
                rendition: r,
                sources,
                children,
            },
        );
    }

    /// About one first fetcher per cell of `cell_size` viewers, or more
    /// when recent segments reached too few viewers within the spread
    /// budget (`wanted`), within the configured bounds, never more than
    /// there are viewers.
    fn first_fetcher_count(&self, population: u32, wanted: f64) -> u32 {
        population
            .div_ceil(self.cfg.cell_size.max(1))
            .max(wanted.ceil() as u32)
            .clamp(
                self.cfg.min_first_fetchers,
                self.cfg.max_first_fetchers.max(self.cfg.min_first_fetchers),
            )
            .min(population)
    }

    /// Feeds the coverage of segments whose spread budget has passed into
    /// the plan of rendition `r`. The origin sends a segment to the first
    /// fetchers and to every viewer the relaying did not reach in time, so
    /// what the plan maximises is the relaying's reach: viewers holding it
    /// within the budget, less the first fetchers. A segment that reached
    /// the target share lets the plan shrink by a tenth. One that did not
    /// asks for `planned × target / c` for a coverage `c` (as if each first
    /// fetcher's reach were constant: true where time limits the relaying).
    /// Where relaying reached fewer viewers than there were first fetchers,
    /// the uplinks are the limit and the count climbs the reach instead: a
    /// raise that brought more reach is followed by another (a quarter at
    /// most), one that did not is undone; a cut that lost no reach is
    /// followed by another, one that lost reach is undone. Coverage alone
    /// ran the count to the ceiling there, each new first fetcher replacing
    /// a relayed copy with an origin copy (docs/benchmarks/simulator.md).
    fn judge_coverage(&mut self, now: u64, r: RenditionId) {
        let target = self.cfg.coverage_target.clamp(0.01, 1.0);
        let budget = self.cfg.spread_budget_ms;
        let max = f64::from(self.cfg.max_first_fetchers);
        let Some(idx) = self.renditions.get_mut(&r) else {
            return;
        };
        let mut wanted = idx.fetchers_wanted;
        let mut last = idx.last_judged;
        for e in idx.segs.values_mut() {
            let Some(at) = e.published_at else { continue };
            if e.judged || at.saturating_add(budget) > now || e.population == 0 || e.planned == 0 {
                continue;
            }
            e.judged = true;
            let planned = f64::from(e.planned);
            let coverage = f64::from(e.in_budget) / f64::from(e.population);
            let reach = (f64::from(e.in_budget) - planned).max(0.0);
            let scaled = planned * target / coverage.max(0.01);
            // Fewer viewers reached by relaying than first fetchers: the
            // uplinks, not the time, limit the reach.
            let scarce = reach < planned;
            wanted = match last {
                _ if coverage >= target => wanted * 0.9,
                // Uplinks short after a raise: go on only while the reach
                // grows.
                Some((f, r)) if scarce && planned > f => {
                    if reach > r * 1.02 {
                        scaled.min(planned * 1.25)
                    } else {
                        planned * 0.8
                    }
                }
                // After a cut (or none): go on while the reach holds, else
                // undo it. The count is rounded up, so a cut is one at least.
                Some((f, r)) if scarce => {
                    if reach >= r {
                        (planned * 0.9).min(planned - 1.0)
                    } else {
                        f.max(planned + 1.0)
                    }
                }
                _ => scaled.max(wanted),
            }
            .min(max);
            // A population counted before the viewers announced is no
            // sample to compare with.
            if coverage > 1.0 {
                continue;
            }
            last = Some((planned, reach));
        }
        idx.fetchers_wanted = wanted;
        idx.last_judged = last;
    }

    /// First fetchers: by upload capacity (those not assigned lately
    /// first), spread round-robin over regions, and avoiding neighbours of
    /// fetchers already chosen while others remain.
    fn choose_fetchers(&mut self, pool: &[Slot], n: usize, exclude: &[Slot]) -> Vec<Slot> {
        if n == 0 {
            return Vec::new();
        }
        // (capacity, recency, slot) per region.
        type Ranked = Vec<(u32, u64, Slot)>;
        let mut by_region: BTreeMap<Option<Arc<str>>, Ranked> = BTreeMap::new();
        for &s in pool {
            if exclude.contains(&s) {
                continue;
            }
            if let Some(p) = self.peer(s) {
                // Sort key: recently assigned last, then capacity; shuffled
                // first so that equal keys come out in random order.
                let recency = p.last_assigned.map_or(0, |t| t + 1);
                by_region
                    .entry(p.region.clone())
                    .or_default()
                    .push((p.upload_kbps, recency, s));
            }
        }
        for v in by_region.values_mut() {
            v.shuffle(&mut self.rng);
            v.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
            v.reverse(); // pop() takes the best
        }
        // Regions with more candidates go first in each round.
        let mut regions: Vec<Ranked> = by_region.into_values().collect();
        regions.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut chosen: Vec<Slot> = Vec::with_capacity(n);
        let mut skipped: Vec<Slot> = Vec::new();
        'outer: while chosen.len() < n {
            let mut any = false;
            for v in regions.iter_mut() {
                while let Some((_, _, s)) = v.pop() {
                    any = true;
                    let adjacent = chosen
                        .iter()
                        .any(|&c| self.peer(c).is_some_and(|p| p.neighbours.contains(&s)));
                    if adjacent {
                        skipped.push(s);
                        continue;
                    }
                    chosen.push(s);
                    break;
                }
                if chosen.len() == n {
                    break 'outer;
                }
            }
            if !any {
                break;
            }
        }
        // Not enough peers apart from each other: take adjacent ones.
        for s in skipped {
            if chosen.len() == n {
                break;
            }
            chosen.push(s);
        }
        chosen
    }

    /// The earliest first-fetch deadline, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.renditions
            .values()
            .flat_map(|r| r.segs.values())
            .flat_map(|e| e.fetchers.iter().map(|f| f.deadline))
            .min()
    }

    /// Replaces first fetchers whose deadline has passed without a `have`,
    /// while the segment has fewer holders than planned.
    pub fn handle_timeout(&mut self, now: u64) {
        let mut late: Vec<(RenditionId, Seq, usize)> = Vec::new();
        for (r, idx) in &mut self.renditions {
            for (&seq, e) in &mut idx.segs {
                let before = e.fetchers.len();
                e.fetchers.retain(|f| f.deadline > now);
                let expired = before - e.fetchers.len();
                let missing = (e.planned as usize)
                    .saturating_sub(e.holders.len() as usize + e.fetchers.len());
                let n = expired.min(missing);
                if n > 0 && e.meta.is_some() {
                    late.push((*r, seq, n));
                }
            }
        }
        for (r, seq, n) in late {
            let Some((meta, asked)) = self
                .renditions
                .get(&r)
                .and_then(|x| x.segs.get(&seq))
                .and_then(|e| Some((e.meta.clone()?, e.asked.clone())))
            else {
                continue;
            };
            let pool: Vec<Slot> = self
                .peers
                .iter()
                .enumerate()
                .filter_map(|(s, p)| {
                    let p = p.as_ref()?;
                    (p.shares()
                        && (p.kind == ClientKind::Relay
                            || p.interest.is_none()
                            || p.interest == Some(r)))
                    .then_some(s as Slot)
                })
                .filter(|s| {
                    !self
                        .renditions
                        .get(&r)
                        .and_then(|x| x.segs.get(&seq))
                        .is_some_and(|e| e.holders.contains(*s))
                })
                .collect();
            let chosen = self.choose_fetchers(&pool, n, &asked);
            if chosen.is_empty() {
                continue;
            }
            let deadline = now + self.cfg.first_fetch_deadline_ms;
            if let Some(e) = self
                .renditions
                .get_mut(&r)
                .and_then(|x| x.segs.get_mut(&seq))
            {
                e.fetchers
                    .extend(chosen.iter().map(|&slot| Fetcher { slot, deadline }));
                e.asked.extend(&chosen);
            }
            for &c in &chosen {
                if let Some(p) = self.peer_mut(c) {
                    p.last_assigned = Some(now);
                }
            }
            self.counters.first_fetch_replaced += chosen.len() as u64;
            self.counters.first_fetch_assigned += chosen.len() as u64;
            self.out.push_back(Output {
                to: Recipients::Many(chosen),
                text: encode(&ServerMsg::Fetch {
                    meta: (*meta).clone(),
                }),
            });
        }
    }

    /// A random live slot (for tests and the load generator's sampling).
    pub fn any_slot(&mut self) -> Option<Slot> {
        let live: Vec<Slot> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(s, p)| p.as_ref().map(|_| s as Slot))
            .collect();
        live.choose(&mut self.rng).copied()
    }

    /// The slot of a peer id.
    pub fn slot_of(&self, id: &PeerId) -> Option<Slot> {
        self.by_id.get(id).copied()
    }

    /// The aggregate picture of the stream.
    pub fn stats(&self) -> StreamStats {
        let mut kinds = KindCounts::default();
        let mut totals = self.departed.clone();
        for p in self.peers.iter().flatten() {
            match p.kind {
                ClientKind::Native => kinds.native += 1,
                ClientKind::Browser => kinds.browser += 1,
                ClientKind::Relay => kinds.relay += 1,
                ClientKind::Publisher => kinds.publisher += 1,
            }
            add_stats(&mut totals, &p.stats);
        }
        let mut segments: Vec<SegmentStats> = Vec::new();
        for (r, idx) in &self.renditions {
            for (&seq, e) in &idx.segs {
                segments.push(SegmentStats {
                    id: format!("{}/{r}/{seq}", self.stream),
                    size: e.meta.as_ref().map(|m| m.size),
                    holders: e.holders.len(),
                    population: e.population,
                    first_fetchers: e.asked.len() as u32,
                    spread_50_ms: e.t50,
                    spread_95_ms: e.t95,
                    spread_100_ms: e.t100,
                });
            }
        }
        let median = |mut v: Vec<u64>| -> Option<u64> {
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            Some(v[v.len() / 2])
        };
        let t50 = median(segments.iter().filter_map(|s| s.spread_50_ms).collect());
        let t95 = median(segments.iter().filter_map(|s| s.spread_95_ms).collect());
        let media = totals.http_bytes + totals.p2p_bytes;
        StreamStats {
            stream: self.stream.to_string(),
            viewers: kinds.native + kinds.browser,
            peers: kinds,
            http_bytes: totals.http_bytes,
            p2p_bytes: totals.p2p_bytes,
            uploaded_bytes: totals.uploaded_bytes,
            offload: if media == 0 {
                0.0
            } else {
                totals.p2p_bytes as f64 / media as f64
            },
            stalls: totals.stalls,
            stall_ms: totals.stall_ms,
            startup_ms_p50: median(self.startup_samples.iter().copied().collect()),
            spread_50_ms_median: t50,
            spread_95_ms_median: t95,
            published: self.counters.published,
            first_fetch_assigned: self.counters.first_fetch_assigned,
            first_fetch_replaced: self.counters.first_fetch_replaced,
            cells: Vec::new(),
            cell: 0,
            segments,
        }
    }
}

fn add_stats(total: &mut StatsReport, s: &StatsReport) {
    total.http_bytes = total.http_bytes.saturating_add(s.http_bytes);
    total.p2p_bytes = total.p2p_bytes.saturating_add(s.p2p_bytes);
    total.uploaded_bytes = total.uploaded_bytes.saturating_add(s.uploaded_bytes);
    total.stalls = total.stalls.saturating_add(s.stalls);
    total.stall_ms = total.stall_ms.saturating_add(s.stall_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmcast_proto::Sha256Digest;
    use swarmcast_proto::tracker::Signal;

    fn sid() -> StreamId {
        StreamId::new("s").unwrap()
    }

    fn r() -> RenditionId {
        RenditionId::new("360p").unwrap()
    }

    pub(super) fn join(
        sw: &mut Swarm,
        id: &str,
        kind: ClientKind,
        region: Option<&str>,
        up: u32,
    ) -> Slot {
        sw.join(
            0,
            JoinRequest {
                peer_id: PeerId::new(id).unwrap(),
                kind,
                region: region.map(String::from),
                upload_kbps: up,
            },
        )
        .unwrap()
    }

    /// Every output as (recipient, message), one row per recipient.
    pub(super) fn drain(sw: &mut Swarm) -> Vec<(Slot, ServerMsg)> {
        let mut v = Vec::new();
        while let Some(o) = sw.poll_output() {
            let msg = ServerMsg::decode(std::str::from_utf8(&o.text).unwrap()).unwrap();
            match o.to {
                Recipients::One(s) => v.push((s, msg)),
                Recipients::Many(ss) => v.extend(ss.into_iter().map(|s| (s, msg.clone()))),
            }
        }
        v
    }

    fn meta(seq: u64) -> SegmentMeta {
        SegmentMeta {
            id: SegmentId::new(sid(), r(), seq),
            size: 1000,
            sha256: Sha256Digest::of(&seq.to_be_bytes()),
            duration_ms: 2000,
            published_at_ms: 0,
            blocks: None,
        }
    }

    use swarmcast_proto::SegmentId;

    fn have(seq: u64) -> ClientMsg {
        ClientMsg::Have {
            segments: vec![SegmentRef {
                rendition: r(),
                seq,
            }],
        }
    }

    #[test]
    fn join_gets_a_welcome_and_neighbours_from_its_region_never_itself() {
        // K = 3: a, b and c know each other and each keeps one free slot.
        let cfg = SwarmConfig {
            neighbours: 3,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, 1);
        let a = join(&mut sw, "a", ClientKind::Native, Some("eu"), 1000);
        join(&mut sw, "b", ClientKind::Native, Some("us"), 1000);
        let c = join(&mut sw, "c", ClientKind::Native, Some("eu"), 1000);
        let _pubr = join(&mut sw, "origin", ClientKind::Publisher, None, 0);
        drain(&mut sw);
        let d = join(&mut sw, "d", ClientKind::Browser, Some("eu"), 1000);
        let out = drain(&mut sw);
        assert!(matches!(out[0], (s, ServerMsg::Welcome { .. }) if s == d));
        let peers: Vec<PeerInfo> = out
            .iter()
            .filter(|(s, _)| *s == d)
            .filter_map(|(_, m)| match m {
                ServerMsg::Peers { peers } => Some(peers.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let ids: Vec<&str> = peers.iter().map(|p| p.peer_id.as_str()).collect();
        // a and c share d's region and come first; b fills the last slot;
        // the publisher and d itself are never offered.
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(ids[2], "b", "{ids:?}");
        assert!(peers.iter().all(|p| p.initiator));
        // The other side is told too, as the answering side.
        for s in [a, c] {
            assert!(out.iter().any(|(to, m)| *to == s
                && matches!(m, ServerMsg::Peers { peers } if peers[0].peer_id.as_str() == "d" && !peers[0].initiator)));
        }
        // Asking again offers nobody already known, and never itself.
        sw.handle(1, d, ClientMsg::WantPeers { count: 8 });
        let out = drain(&mut sw);
        assert!(
            out.iter()
                .all(|(to, m)| *to != d
                    || matches!(m, ServerMsg::Peers { peers } if peers.is_empty()))
        );
    }

    #[test]
    fn peer_ids_are_unique_and_swarms_bounded() {
        let cfg = SwarmConfig {
            max_peers: 2,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, 1);
        join(&mut sw, "a", ClientKind::Native, None, 0);
        let req = |id: &str| JoinRequest {
            peer_id: PeerId::new(id).unwrap(),
            kind: ClientKind::Native,
            region: None,
            upload_kbps: 0,
        };
        assert_eq!(sw.join(0, req("a")), Err(ErrorCode::PeerIdTaken));
        sw.join(0, req("b")).unwrap();
        assert_eq!(sw.join(0, req("c")), Err(ErrorCode::Overloaded));
    }

    /// Publishes `seq` at `at`; returns its first fetchers.
    fn publish_at(sw: &mut Swarm, origin: Slot, at: u64, seq: u64) -> Vec<Slot> {
        sw.handle(at, origin, ClientMsg::Publish { meta: meta(seq) });
        drain(sw)
            .into_iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
            .map(|(s, _)| s)
            .collect()
    }

    /// A swarm of a publisher and 100 viewers playing the rendition, with
    /// first fetchers between 1 and 100 and a 2-s spread budget.
    fn hundred_viewers(coverage_target: f64, seed: u64) -> (Swarm, Slot, Vec<Slot>) {
        let cfg = SwarmConfig {
            cell_size: 300,
            min_first_fetchers: 1,
            max_first_fetchers: 100,
            spread_budget_ms: 2000,
            coverage_target,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, seed);
        let origin = join(&mut sw, "origin", ClientKind::Publisher, None, 0);
        let viewers: Vec<Slot> = (0..100)
            .map(|i| join(&mut sw, &format!("v{i}"), ClientKind::Native, None, 1000))
            .collect();
        for &v in &viewers {
            sw.handle(0, v, have(0)); // every viewer plays the rendition
        }
        drain(&mut sw);
        (sw, origin, viewers)
    }

    #[test]
    fn first_fetchers_follow_the_coverage_within_the_spread_budget() {
        let (mut sw, origin, viewers) = hundred_viewers(0.97, 3);
        // Segment 1: one first fetcher (100 viewers, cells of 300); the
        // mesh brings it to 20 viewers within the budget, the rest later.
        assert_eq!(publish_at(&mut sw, origin, 10_000, 1).len(), 1);
        for &v in &viewers[..20] {
            sw.handle(11_000, v, have(1));
        }
        for &v in &viewers[20..] {
            sw.handle(13_500, v, have(1));
        }
        // Segment 2: 20 % coverage asks for 1 × 0.97 / 0.2 → 5 first fetchers.
        let f = publish_at(&mut sw, origin, 12_000, 2);
        assert_eq!(f.len(), 5, "{f:?}");
        for &v in &viewers {
            sw.handle(13_000, v, have(2));
        }
        // Segment 2 reached everyone in time: the plan shrinks by a tenth
        // per segment (4.85 → 4.37 → 3.93 …), never below the cell floor of one.
        let mut counts = Vec::new();
        for seq in 3..40u64 {
            let at = 12_000 + (seq - 2) * 2000;
            counts.push(publish_at(&mut sw, origin, at, seq).len());
            for &v in &viewers {
                sw.handle(at + 100, v, have(seq));
            }
        }
        assert!(counts.windows(2).all(|w| w[1] <= w[0]), "{counts:?}");
        assert_eq!(*counts.last().unwrap(), 1, "{counts:?}");
    }

    #[test]
    fn first_fetchers_come_down_where_uplinks_limit_the_reach() {
        let (mut sw, origin, viewers) = hundred_viewers(0.8, 5);
        // Whatever the first fetchers, relaying brings the segment to five
        // more viewers in time (four from a single one): the uplinks are
        // the limit. Coverage stays far below the target, and raising the
        // count only swaps relayed copies for origin copies.
        let mut counts = Vec::new();
        for seq in 1..40u64 {
            let at = 10_000 + seq * 2000;
            let fetchers = publish_at(&mut sw, origin, at, seq);
            counts.push(fetchers.len());
            let reach = if fetchers.len() == 1 { 4 } else { 5 };
            let mut relayed = viewers.iter().filter(|v| !fetchers.contains(v)).take(reach);
            for &v in fetchers.iter().chain(&mut relayed) {
                sw.handle(at + 500, v, have(seq));
            }
        }
        // Coverage alone (first fetchers × 0.8 / coverage, coverage =
        // (first fetchers + 5) / 100) would climb to about 75 within three
        // segments and stay there.
        let top = counts.iter().copied().max().unwrap_or(0);
        assert!(top < 60, "the count ran towards the ceiling: {counts:?}");
        let last: usize = counts[counts.len() - 20..].iter().sum();
        assert!(last < 20 * 30, "the count did not come down: {counts:?}");
    }

    #[test]
    fn publish_assigns_first_fetchers_and_announces_to_the_rest() {
        let cfg = SwarmConfig {
            cell_size: 4,
            min_first_fetchers: 1,
            max_first_fetchers: 8,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, 7);
        let origin = join(&mut sw, "origin", ClientKind::Publisher, None, 0);
        let viewers: Vec<Slot> = (0..10)
            .map(|i| {
                join(
                    &mut sw,
                    &format!("v{i}"),
                    ClientKind::Native,
                    Some(if i % 2 == 0 { "eu" } else { "us" }),
                    1000 + i * 100,
                )
            })
            .collect();
        drain(&mut sw);
        // A viewer may not publish.
        sw.handle(0, viewers[0], ClientMsg::Publish { meta: meta(0) });
        assert!(matches!(
            &drain(&mut sw)[..],
            [(
                _,
                ServerMsg::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            )]
        ));
        sw.handle(10, origin, ClientMsg::Publish { meta: meta(0) });
        let out = drain(&mut sw);
        let fetchers: Vec<Slot> = out
            .iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
            .map(|(s, _)| *s)
            .collect();
        let told: Vec<Slot> = out
            .iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Segment { .. }))
            .map(|(s, _)| *s)
            .collect();
        // 10 viewers, cells of 4: 3 first fetchers, from both regions.
        assert_eq!(fetchers.len(), 3, "{fetchers:?}");
        let regions: std::collections::BTreeSet<_> = fetchers
            .iter()
            .map(|&s| sw.peer(s).unwrap().region.clone())
            .collect();
        assert_eq!(regions.len(), 2);
        // Everyone else hears of it, with the origin's hash; the publisher does not.
        assert_eq!(fetchers.len() + told.len(), 10);
        assert!(!told.contains(&origin) && !fetchers.contains(&origin));
        for (_, m) in &out {
            if let ServerMsg::Segment { meta: m } | ServerMsg::Fetch { meta: m } = m {
                assert_eq!(*m, meta(0));
            }
        }
        // A replay of the same record changes nothing.
        sw.handle(11, origin, ClientMsg::Publish { meta: meta(0) });
        assert!(drain(&mut sw).is_empty());
    }

    #[test]
    fn late_joiners_split_links_instead_of_forming_islands() {
        let mut sw = Swarm::new(sid(), SwarmConfig::default(), 5);
        let k = usize::from(SwarmConfig::default().neighbours);
        let slots: Vec<Slot> = (0..40)
            .map(|i| join(&mut sw, &format!("p{i}"), ClientKind::Native, None, 1000))
            .collect();
        let out = drain(&mut sw);
        // Every split tells both ends to drop each other.
        let dropped = out
            .iter()
            .filter(|(_, m)| matches!(m, ServerMsg::PeerLeft { .. }))
            .count();
        assert!(sw.counters().links_split > 0);
        assert_eq!(dropped as u64, 2 * sw.counters().links_split);
        let nb = |s: Slot| sw.peer(s).unwrap().neighbours.clone();
        for &s in &slots {
            let mine = nb(s);
            assert!(mine.len() <= k, "degree {} > {k}", mine.len());
            assert!(mine.len() >= 2, "peer {s} has {} neighbours", mine.len());
            for n in mine {
                assert!(nb(n).contains(&s), "links are symmetric");
            }
        }
        // One connected mesh.
        let mut seen = vec![slots[0]];
        let mut i = 0;
        while i < seen.len() {
            for n in nb(seen[i]) {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), slots.len());
    }

    #[test]
    fn a_silent_first_fetcher_is_replaced_after_its_deadline() {
        let cfg = SwarmConfig {
            cell_size: 100,
            min_first_fetchers: 2,
            first_fetch_deadline_ms: 1000,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, 3);
        let origin = join(&mut sw, "origin", ClientKind::Publisher, None, 0);
        for i in 0..6 {
            join(&mut sw, &format!("v{i}"), ClientKind::Native, None, 1000);
        }
        drain(&mut sw);
        sw.handle(0, origin, ClientMsg::Publish { meta: meta(5) });
        let first: Vec<Slot> = drain(&mut sw)
            .into_iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
            .map(|(s, _)| s)
            .collect();
        assert_eq!(first.len(), 2);
        assert_eq!(sw.poll_timeout(), Some(1000));
        // One fetcher delivers in time, the other stays silent.
        sw.handle(400, first[0], have(5));
        sw.handle_timeout(999);
        assert!(drain(&mut sw).is_empty());
        sw.handle_timeout(1000);
        let out = drain(&mut sw);
        let replaced: Vec<Slot> = out
            .iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(replaced.len(), 1);
        assert!(!first.contains(&replaced[0]));
        assert_eq!(sw.counters().first_fetch_replaced, 1);
        // The replacement has its own deadline.
        assert_eq!(sw.poll_timeout(), Some(2000));
    }

    #[test]
    fn the_index_follows_have_lost_have_map_and_leave() {
        let mut sw = Swarm::new(
            sid(),
            SwarmConfig {
                window_segments: 4,
                ..SwarmConfig::default()
            },
            1,
        );
        let origin = join(&mut sw, "origin", ClientKind::Publisher, None, 0);
        let a = join(&mut sw, "a", ClientKind::Native, None, 0);
        let b = join(&mut sw, "b", ClientKind::Native, None, 0);
        for seq in 0..4 {
            sw.handle(seq * 2000, origin, ClientMsg::Publish { meta: meta(seq) });
        }
        drain(&mut sw);
        let holders = |sw: &Swarm, seq: u64| {
            sw.stats()
                .segments
                .iter()
                .find(|s| s.id == format!("s/360p/{seq}"))
                .map(|s| s.holders)
        };
        sw.handle(6100, a, have(3));
        sw.handle(6200, b, have(3));
        assert_eq!(holders(&sw, 3), Some(2));
        sw.handle(
            6300,
            a,
            ClientMsg::Lost {
                segments: vec![SegmentRef {
                    rendition: r(),
                    seq: 3,
                }],
            },
        );
        assert_eq!(holders(&sw, 3), Some(1));
        // A have-map sets what it lists and clears what it does not.
        sw.handle(
            6400,
            b,
            ClientMsg::HaveMap {
                rendition: r(),
                base_seq: 1,
                bitmap: "c0".into(),
            },
        );
        assert_eq!(
            (holders(&sw, 1), holders(&sw, 2), holders(&sw, 3)),
            (Some(1), Some(1), Some(0))
        );
        // Spread: b got seq 3 at 6200 ms, published at 6000, population 2 (both
        // interested after their first have): 50% reached at +200 ms.
        let s3 = sw
            .stats()
            .segments
            .into_iter()
            .find(|s| s.id == "s/360p/3")
            .unwrap();
        assert_eq!(s3.spread_50_ms, Some(100));
        assert_eq!(s3.spread_100_ms, Some(200));
        // Out-of-window announcements are refused.
        sw.handle(6500, a, have(100));
        sw.handle(6500, a, have(u64::MAX));
        assert_eq!(holders(&sw, 100), None);
        assert!(sw.counters().refused["out_of_window"] >= 2);
        // A new publish moves the window; a leaving peer's holdings go.
        sw.handle(8000, origin, ClientMsg::Publish { meta: meta(4) });
        assert_eq!(holders(&sw, 0), None);
        sw.leave(8100, b);
        assert_eq!(holders(&sw, 1), Some(0));
        assert_eq!(holders(&sw, 2), Some(0));
    }

    #[test]
    fn signals_reach_only_their_recipient_and_are_rate_limited() {
        let cfg = SwarmConfig {
            signals_per_sec: 1,
            signal_burst: 3,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(sid(), cfg, 1);
        let a = join(&mut sw, "a", ClientKind::Native, None, 0);
        let b = join(&mut sw, "b", ClientKind::Browser, None, 0);
        let c = join(&mut sw, "c", ClientKind::Native, None, 0);
        drain(&mut sw);
        let offer = |to: &str| ClientMsg::Signal {
            to: PeerId::new(to).unwrap(),
            signal: Signal::Offer { sdp: "v=0".into() },
        };
        sw.handle(0, a, offer("b"));
        let out = drain(&mut sw);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, b);
        assert!(matches!(&out[0].1, ServerMsg::Signal { from, .. } if from.as_str() == "a"));
        let _ = c;
        // Unknown recipient (another swarm's peer is unknown here too), and
        // a signal to oneself.
        sw.handle(0, a, offer("zz"));
        sw.handle(0, a, offer("a"));
        let out = drain(&mut sw);
        assert!(out.iter().all(|(s, m)| *s == a
            && matches!(
                m,
                ServerMsg::Error {
                    code: ErrorCode::UnknownPeer,
                    ..
                }
            )));
        // The burst of 3 is spent: rate limited until a second passes.
        sw.handle(0, a, offer("b"));
        assert!(
            matches!(&drain(&mut sw)[..], [(s, ServerMsg::Error { code: ErrorCode::RateLimited, .. })] if *s == a)
        );
        sw.handle(1500, a, offer("b"));
        assert!(matches!(&drain(&mut sw)[..], [(s, ServerMsg::Signal { .. })] if *s == b));
    }

    #[test]
    fn stats_aggregate_reports_including_departed_peers() {
        let mut sw = Swarm::new(sid(), SwarmConfig::default(), 1);
        let a = join(&mut sw, "a", ClientKind::Native, None, 0);
        let b = join(&mut sw, "b", ClientKind::Browser, None, 0);
        let rep = |http, p2p, startup| {
            ClientMsg::Stats(StatsReport {
                http_bytes: http,
                p2p_bytes: p2p,
                startup_ms: Some(startup),
                ..StatsReport::default()
            })
        };
        sw.handle(0, a, rep(100, 300, 900));
        sw.handle(0, b, rep(0, 600, 1100));
        sw.leave(1, a);
        let s = sw.stats();
        assert_eq!((s.http_bytes, s.p2p_bytes, s.viewers), (100, 900, 1));
        assert!((s.offload - 0.9).abs() < 1e-9);
        assert_eq!(s.startup_ms_p50, Some(1100));
    }
}

#[cfg(test)]
mod stripe_tests {
    use super::*;
    use swarmcast_proto::{BlockHashes, SegmentId, Sha256Digest};

    fn r() -> RenditionId {
        RenditionId::new("360p").unwrap()
    }

    fn striped_meta(seq: u64) -> SegmentMeta {
        // 2.5 Mb/s: 625,000 bytes per 2-s segment.
        let data = vec![seq as u8; 625_000];
        SegmentMeta {
            id: SegmentId::new(StreamId::new("s").unwrap(), r(), seq),
            size: data.len() as u64,
            sha256: Sha256Digest::of(&data),
            duration_ms: 2000,
            published_at_ms: 0,
            blocks: BlockHashes::of(&data, swarmcast_proto::BLOCK_SIZE),
        }
    }

    use super::tests::{drain, join};

    fn join_as(sw: &mut Swarm, id: &str, kind: ClientKind, upload_kbps: u32) -> Slot {
        join(sw, id, kind, None, upload_kbps)
    }

    /// The publisher publishes segment `seq` at `at`; every message queued.
    fn publish(sw: &mut Swarm, origin: Slot, at: u64, seq: u64) -> Vec<(Slot, ServerMsg)> {
        let meta = striped_meta(seq);
        sw.handle(at, origin, ClientMsg::Publish { meta });
        drain(sw)
    }

    /// With stripes, a peer whose uplink is above the swarm's mean keeps
    /// more links (K × uplink / mean, at most 4K): a broadband peer among
    /// thin uplinks is told so in its welcome and ends up with more than K
    /// neighbours; thin ones keep K.
    #[test]
    fn broadband_peers_keep_more_links_when_stripes_are_planned() {
        let mut sw = Swarm::new(StreamId::new("s").unwrap(), SwarmConfig::default(), 5);
        for i in 0..20 {
            join_as(&mut sw, &format!("thin{i}"), ClientKind::Native, 2000);
        }
        let wide = join_as(&mut sw, "wide", ClientKind::Native, 10_000);
        let welcome = drain(&mut sw).into_iter().find_map(|(s, m)| match m {
            ServerMsg::Welcome { config, .. } if s == wide => Some(config.max_peers),
            _ => None,
        });
        assert_eq!(welcome, Some(32), "8 × 10,000 / 2,000, at most 4 × 8");
        for i in 20..200 {
            join_as(&mut sw, &format!("thin{i}"), ClientKind::Native, 2000);
        }
        let links = |id: &str| {
            let s = sw.slot_of(&PeerId::new(id).unwrap()).unwrap();
            sw.peer(s).unwrap().neighbours.len()
        };
        assert!(links("wide") > 8, "wide has {} links", links("wide"));
        assert!((0..200).all(|i| links(&format!("thin{i}")) <= 8));
        // Without stripes every peer keeps K.
        let cfg = SwarmConfig {
            stripes: 0,
            ..SwarmConfig::default()
        };
        let mut plain = Swarm::new(StreamId::new("s").unwrap(), cfg, 5);
        join_as(&mut plain, "thin", ClientKind::Native, 2000);
        let w = join_as(&mut plain, "wide", ClientKind::Native, 10_000);
        let k = drain(&mut plain).into_iter().find_map(|(s, m)| match m {
            ServerMsg::Welcome { config, .. } if s == w => Some(config.max_peers),
            _ => None,
        });
        assert_eq!(k, Some(8));
    }

    /// Four native viewers get plans; once browsers are the majority the
    /// plans are withdrawn (every stripe `swarm`) and whole-segment first
    /// fetchers come back.
    #[test]
    fn plans_give_way_to_first_fetchers_where_browsers_are_the_majority() {
        let mut sw = Swarm::new(StreamId::new("s").unwrap(), SwarmConfig::default(), 9);
        let origin = join_as(&mut sw, "origin", ClientKind::Publisher, 0);
        for i in 0..4 {
            join_as(&mut sw, &format!("n{i}"), ClientKind::Native, 10_000);
        }
        drain(&mut sw);
        let out = publish(&mut sw, origin, 10, 1);
        let plans = |out: &[(Slot, ServerMsg)]| -> Vec<Vec<StripeSource>> {
            out.iter()
                .filter_map(|(_, m)| match m {
                    ServerMsg::Stripes { sources, .. } => Some(sources.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(plans(&out).len(), 4);
        assert!(
            !out.iter()
                .any(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
        );
        for i in 0..5 {
            join_as(&mut sw, &format!("b{i}"), ClientKind::Browser, 10_000);
        }
        drain(&mut sw);
        let out = publish(&mut sw, origin, 2010, 2);
        let withdrawn = plans(&out);
        assert_eq!(withdrawn.len(), 4);
        assert!(
            withdrawn
                .iter()
                .flatten()
                .all(|s| *s == StripeSource::Swarm)
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
        );
        // Withdrawn once, not again.
        let out = publish(&mut sw, origin, 4010, 3);
        assert!(plans(&out).is_empty());
    }

    /// Three viewers, eight stripes: every stripe still has a root, and the
    /// stripes a root fetches form one run (one HTTP range).
    #[test]
    fn a_swarm_smaller_than_its_stripes_still_roots_every_stripe() {
        let cfg = SwarmConfig {
            stripes: 8,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(StreamId::new("s").unwrap(), cfg, 3);
        let origin = join_as(&mut sw, "origin", ClientKind::Publisher, 0);
        for i in 0..3 {
            join_as(&mut sw, &format!("v{i}"), ClientKind::Native, 10_000);
        }
        drain(&mut sw);
        let mut origin_of = [0u32; 8];
        for (_, m) in publish(&mut sw, origin, 10, 1) {
            if let ServerMsg::Stripes { sources, .. } = m {
                let own: Vec<usize> = (0..8)
                    .filter(|&k| sources[k] == StripeSource::Origin)
                    .collect();
                if let (Some(a), Some(b)) = (own.first(), own.last()) {
                    assert_eq!(b - a + 1, own.len(), "not one run: {own:?}");
                }
                for k in own {
                    origin_of[k] += 1;
                }
            }
        }
        assert_eq!(origin_of, [1; 8]);
        assert_eq!(sw.counters().stripe_roots, 3);
    }

    /// 60 native viewers with 3.75 Mb/s uplinks (1.5× a 2.5 Mb/s stream),
    /// one browser, 4 stripes, 3 roots per stripe: every native viewer gets a
    /// plan in which each stripe comes from the origin (the roots) or from
    /// one of its neighbours, following sources from any viewer ends at a
    /// root (a tree, no cycle), no link carries two stripes, no source feeds
    /// more children than its uplink allows (`3750 / (1.5 × 625)` = 4), and
    /// each source is told exactly the children that name it. The browser
    /// gets no plan. Publishing again with the same members sends no plan.
    #[test]
    fn stripes_form_trees_over_the_links_within_each_uplink() {
        let cfg = SwarmConfig {
            stripes: 4,
            min_first_fetchers: 3,
            max_first_fetchers: 3,
            ..SwarmConfig::default()
        };
        let mut sw = Swarm::new(StreamId::new("s").unwrap(), cfg, 7);
        let origin = join_as(&mut sw, "origin", ClientKind::Publisher, 0);
        let viewers: Vec<Slot> = (0..61)
            .map(|i| {
                let kind = if i == 60 {
                    ClientKind::Browser
                } else {
                    ClientKind::Native
                };
                join_as(&mut sw, &format!("v{i}"), kind, 3750)
            })
            .collect();
        for &v in &viewers {
            let have = ClientMsg::Have {
                segments: vec![SegmentRef {
                    rendition: r(),
                    seq: 0,
                }],
            };
            sw.handle(0, v, have);
        }
        drain(&mut sw);
        let out = publish(&mut sw, origin, 10, 1);
        let mut plans: HashMap<Slot, (Vec<StripeSource>, Vec<PeerId>)> = HashMap::new();
        for (s, m) in &out {
            if let ServerMsg::Stripes {
                rendition,
                sources,
                children,
            } = m
            {
                assert_eq!(*rendition, r());
                assert!(
                    plans
                        .insert(*s, (sources.clone(), children.clone()))
                        .is_none()
                );
            }
        }
        // Every native viewer has a plan, the browser none; nobody is a
        // first fetcher of the whole segment.
        assert_eq!(plans.len(), 60);
        assert!(!plans.contains_key(&viewers[60]));
        assert!(
            !out.iter()
                .any(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
        );
        let id = |s: Slot| sw.peer(s).unwrap().id.clone();
        let slot_of = |p: &PeerId| sw.slot_of(p).unwrap();
        let mut kids: HashMap<PeerId, Vec<PeerId>> = HashMap::new();
        for k in 0..4 {
            let mut roots = 0;
            for (&v, (sources, _)) in &plans {
                match &sources[k] {
                    StripeSource::Origin => roots += 1,
                    StripeSource::Peer { peer_id } => {
                        let u = slot_of(peer_id);
                        assert!(sw.peer(v).unwrap().neighbours.contains(&u), "not a link");
                        kids.entry(peer_id.clone()).or_default().push(id(v));
                        // Up the tree to a root, never round in a circle.
                        let mut at = u;
                        for hop in 0.. {
                            assert!(hop < 60, "stripe {k}: a cycle above {v}");
                            match &plans[&at].0[k] {
                                StripeSource::Origin => break,
                                StripeSource::Peer { peer_id } => at = slot_of(peer_id),
                                StripeSource::Swarm => panic!("stripe {k}: a source with none"),
                            }
                        }
                    }
                    StripeSource::Swarm => {}
                }
            }
            assert_eq!(roots, 3, "stripe {k}");
        }
        for (v, (sources, children)) in &plans {
            let named: Vec<&PeerId> = sources
                .iter()
                .filter_map(|s| match s {
                    StripeSource::Peer { peer_id } => Some(peer_id),
                    _ => None,
                })
                .collect();
            let mut uniq = named.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), named.len(), "two stripes on one link");
            let mut expected = kids.get(&id(*v)).cloned().unwrap_or_default();
            expected.sort();
            assert_eq!(*children, expected, "children of {v}");
            assert!(children.len() <= 4, "{v} feeds {} children", children.len());
        }
        // Most stripes are planned (the rest fetch as before).
        let planned = plans
            .values()
            .flat_map(|(s, _)| s)
            .filter(|s| !matches!(s, StripeSource::Swarm))
            .count();
        assert!(planned >= 200, "{planned} of 240 stripes planned");
        // Same members, next segment: the plans stand, none is sent again.
        let again = publish(&mut sw, origin, 2010, 2);
        assert!(
            !again
                .iter()
                .any(|(_, m)| matches!(m, ServerMsg::Stripes { .. }))
        );
        assert_eq!(
            again
                .iter()
                .filter(|(_, m)| matches!(m, ServerMsg::Segment { .. }))
                .count(),
            61
        );
    }

    /// A relay is in the plan of each rendition: the plan sent for one
    /// must not make the other's look new, or every publish re-sends both.
    #[test]
    fn plans_of_two_renditions_are_sent_once_each() {
        let mut sw = Swarm::new(StreamId::new("s").unwrap(), SwarmConfig::default(), 5);
        let origin = join_as(&mut sw, "origin", ClientKind::Publisher, 0);
        let relay = join_as(&mut sw, "relay", ClientKind::Relay, 20_000);
        for i in 0..12 {
            join_as(&mut sw, &format!("n{i}"), ClientKind::Native, 5000);
        }
        drain(&mut sw);
        let other = RenditionId::new("720p").unwrap();
        let round = |sw: &mut Swarm, seq: u64| {
            let mut out = publish(sw, origin, 2000 * seq, seq);
            let mut meta = striped_meta(seq);
            meta.id = SegmentId::new(StreamId::new("s").unwrap(), other, seq);
            sw.handle(2000 * seq + 1, origin, ClientMsg::Publish { meta });
            out.extend(drain(sw));
            out.into_iter()
                .filter_map(|(to, m)| match m {
                    ServerMsg::Stripes { rendition, .. } => Some((to, rendition)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let first = round(&mut sw, 0);
        assert!(first.contains(&(relay, r())) && first.contains(&(relay, other)));
        let again = round(&mut sw, 1);
        assert!(again.is_empty(), "re-sent: {again:?}");
    }
}
