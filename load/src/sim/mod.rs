//! `swarmcast-load sim`: a live event in virtual time. Every viewer runs
//! the real swarm core (`swarmcast-swarm-core`, the code of the edge peer)
//! and the tracker is the real sans-IO swarm (`swarmcast_tracker::swarm`:
//! neighbour selection, the dissemination plan, the index); only the
//! network is a model (see ARCHITECTURE.md, "The event simulator"):
//!
//! - each viewer has an upload and a download capacity and a one-way
//!   latency drawn from the scenario; a link between two viewers costs the
//!   sum of their latencies; a share of pairs cannot connect (NAT);
//! - peer transfers share capacity: each gets the sender's upload divided
//!   among its active uploads or the receiver's download divided among its
//!   active downloads, whichever is less, recomputed whenever a transfer of
//!   either starts or ends (so no uplink ever sends more than its
//!   capacity); its bytes arrive in pieces, one link latency after they
//!   leave;
//! - HTTP comes from a CDN with its own time to first byte, at the
//!   viewer's download rate (or its share of an office WAN link);
//! - segment bytes are scaled down (1 simulated byte = `SCALE` real
//!   bytes) so that 100,000 cores fit in memory; times use the real sizes.
//!
//! Deterministic: one seed gives one report.

mod calendar;
pub mod html;
pub mod scenario;
mod stripe;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use swarmcast_proto::tracker::{ClientKind, ClientMsg, SegmentRef, ServerMsg};
use swarmcast_proto::wire::Frame;
use swarmcast_proto::{
    BlockHashes, PeerId, RenditionId, SegmentId, SegmentMeta, Sha256Digest, StreamId,
};
use swarmcast_swarm_core::{Action, Core, CoreConfig};
use swarmcast_tracker::cells::Cells;
use swarmcast_tracker::swarm::{JoinRequest, Recipients, Slot, SwarmConfig};

pub use scenario::{Policy, Scenario};

/// Real bytes per simulated byte.
pub const SCALE: u64 = 4096;
/// A transfer arrives in evenly spaced pieces, one per this many ms (the
/// core judges a transfer's rate as bytes arrive; real chunks arrive continuously),
/// at least 2 and at most `MAX_PIECES`.
const PIECE_MS: u64 = 80;
const MAX_PIECES: u64 = 16;

fn pieces(dur: Ms) -> u64 {
    dur.div_ceil(PIECE_MS).clamp(2, MAX_PIECES)
}
/// Segments each simulated core keeps (enough for the deadlines in play).
const CORE_WINDOW: usize = 8;

type Ms = u64;

/// What the simulator reports (the `--json` file).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The model that ran.
    pub model: Model,
    /// Policy simulated.
    pub policy: Policy,
    /// Seed.
    pub seed: u64,
    /// Peak viewers.
    pub viewers: usize,
    /// Viewers that took part (joins, including churn replacements).
    pub sessions: usize,
    /// Simulated seconds.
    pub duration_s: u64,
    /// Segments published.
    pub segments: u64,
    /// P2P share of media bytes received.
    pub offload: f64,
    /// Origin/CDN egress, bytes.
    pub origin_egress_bytes: u64,
    /// Origin/CDN egress per published segment, in copies.
    pub origin_copies_per_segment: f64,
    /// Viewers that fetched a segment first, per segment: told by the
    /// tracker (plan), or deciding alone (random mesh); the rest of the
    /// origin's copies are fallbacks before a deadline.
    pub first_fetchers_per_segment: f64,
    /// Time stalled / time watched.
    pub rebuffering_ratio: f64,
    /// Stalls, all viewers.
    pub stalls: u64,
    /// Join → first segment, ms: p50, p95.
    pub startup_time_ms: Quantiles,
    /// Publish → 50 %, 95 %, 100 % of the viewers present, ms (p50 over segments).
    pub spread_time_ms: Spread,
    /// Mean open links per viewer at the end.
    pub peers_per_viewer: f64,
    /// Tracker messages (both ways) bytes per delivered media byte.
    pub signalling_overhead: f64,
    /// Hash failures.
    pub hash_failures: u64,
    /// Peer transfers given up as too slow (the cores' own count).
    pub slow_transfers: u64,
    /// Requests refused (busy, not found), all cores.
    pub rejected_requests: u64,
    /// Offload over time: (second, offload in that 10 s window).
    pub offload_over_time: Vec<(u64, f64)>,
    /// Origin egress over time: (second, copies per segment in that window).
    pub egress_over_time: Vec<(u64, f64)>,
    /// Spread to 95 % per segment, ms.
    pub spread_95_per_segment: Vec<u64>,
    /// Stall time per viewer (ms), sorted.
    pub stall_ms_per_viewer: Vec<u64>,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Peak resident memory, bytes (Linux).
    pub peak_rss_bytes: u64,
}

/// How finely the event is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Every viewer runs the edge peer's swarm core; transfers move in
    /// pieces over a shared-capacity network model.
    #[default]
    Core,
    /// Each segment's stripes timed in closed form over the tracker's plan
    /// (no swarm core): for audiences of 100,000 (`stripe.rs`).
    Stripe,
}

/// p50 and p95.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// Spread times (p50 over segments of each).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Publish → 50 % of viewers.
    pub p50_of_50: f64,
    /// Publish → 95 % of viewers.
    pub p50_of_95: f64,
    /// Publish → 95 % of viewers, 95th percentile over segments.
    pub p95_of_95: f64,
    /// Publish → every viewer.
    pub p50_of_100: f64,
}

enum Ev {
    Publish(u64),
    Join(usize),
    Leave(usize),
    /// A tracker message reaches a viewer.
    FromTracker(usize, Rc<ServerMsg>),
    /// A viewer's message reaches the tracker.
    ToTracker(usize, ClientMsg),
    LinkUp(usize, usize),
    LinkFail(usize, usize),
    Frame {
        to: usize,
        from: usize,
        frame: Frame,
    },
    /// A peer transfer reaches its next piece boundary (stale unless
    /// `gen` is the flow's current one).
    FlowTick(u64, u32),
    /// A piece of a peer transfer reaches its receiver.
    Piece {
        flow: u64,
        to: usize,
        from: usize,
        seq: u64,
        frame: Frame,
        last: bool,
    },
    Http {
        v: usize,
        req: u64,
        data: Bytes,
        last: bool,
    },
    Timeout(usize, Ms),
    TrackerTimeout(Ms),
    Sample,
}

struct Viewer {
    id: PeerId,
    core: Core,
    /// Real bytes per ms.
    up: f64,
    down: f64,
    latency: Ms,
    slot: Option<Slot>,
    present: bool,
    play: Playback,
    links: Vec<usize>,
    /// Peer transfers this viewer sends / receives (flow ids).
    up_flows: Vec<u64>,
    down_flows: Vec<u64>,
    timer: Option<Ms>,
    http_reqs: BTreeMap<u64, u64>,
}

/// A viewer's network and lifetime, drawn from the scenario (both models
/// draw in this order, so a seed gives both the same audience).
struct Drawn {
    /// Real bytes per ms.
    up: f64,
    down: f64,
    /// One way to the core of the network.
    latency: Ms,
    /// Seed of its swarm core.
    seed: u64,
    /// When it leaves (`Ms::MAX`: it stays).
    leave_at: Ms,
}

impl Drawn {
    fn new(sc: &Scenario, rng: &mut SmallRng, joined_at: Ms) -> Self {
        let kbps = |d: &scenario::Dist, rng: &mut SmallRng| {
            // kbit/s → bytes per ms.
            d.draw(rng).max(1.0) * 1000.0 / 8.0 / 1000.0
        };
        let up = kbps(&sc.network.upload_kbps, rng);
        let down = kbps(&sc.network.download_kbps, rng);
        let latency = sc.network.latency_ms.draw(rng).round() as Ms;
        let seed = rng.random();
        // Lifetime: exponential with the scenario's leave rate.
        let per_min = sc.churn.leave_per_min;
        let mut leave_at = Ms::MAX;
        if per_min > 0.0 {
            let lambda = -(1.0 - per_min).ln() / 60_000.0;
            let u: f64 = rng.random::<f64>().max(1e-12);
            let life = (-u.ln() / lambda) as Ms;
            leave_at = joined_at.saturating_add(life);
        }
        Self {
            up,
            down,
            latency,
            seed,
            leave_at,
        }
    }
}

/// Media bytes of the current 10-s window, and the figures of the
/// windows closed.
#[derive(Default)]
struct Windows {
    http: u64,
    p2p: u64,
    /// Segments published in the window.
    segs: u64,
    /// (second, offload in the window).
    offload: Vec<(u64, f64)>,
    /// (second, origin copies per segment in the window).
    egress: Vec<(u64, f64)>,
}

impl Windows {
    fn close(&mut self, now: Ms, seg_real: u64) {
        let sec = now / 1000;
        let media = self.http + self.p2p;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.offload
            .push((sec, ratio(self.p2p as f64, media as f64)));
        self.egress.push((
            sec,
            ratio(self.http as f64, self.segs as f64 * seg_real as f64),
        ));
        self.http = 0;
        self.p2p = 0;
        self.segs = 0;
    }
}

/// One viewer's player: when it joined, started and stalled (both models).
#[derive(Debug, Clone, Default)]
struct Playback {
    joined_at: Ms,
    first_segment: Option<Ms>,
    first_played: Option<u64>,
    play_start: Ms,
    stall_offset: Ms,
    stall_ms: Ms,
    stalls: u64,
    left_at: Option<Ms>,
}

impl Playback {
    /// Segment `seq`, published at `published`, is whole at `now`. The
    /// player starts with the first segment it gets, `delay` after its
    /// publication (or when it came, if later), then needs one segment per
    /// segment duration; a late one stalls it and shifts every later due
    /// time.
    fn complete(&mut self, now: Ms, seq: u64, published: Ms, delay: Ms, seg_ms: Ms) {
        self.first_segment.get_or_insert(now);
        if self.first_played.is_none() {
            self.first_played = Some(seq);
            self.play_start = now.max(published + delay);
        }
        let first = self.first_played.unwrap_or(seq);
        if seq > first {
            let due = self.play_start + (seq - first) * seg_ms + self.stall_offset;
            if now > due {
                self.stall_ms += now - due;
                self.stall_offset += now - due;
                self.stalls += 1;
            }
        }
    }
}

/// A peer transfer under way (sizes in simulated bytes, rates in real
/// bytes per ms).
struct Flow {
    from: usize,
    to: usize,
    seq: u64,
    rendition: RenditionId,
    data: Bytes,
    /// Bytes before this offset have left the sender as pieces.
    sent: u32,
    end: u32,
    piece: u32,
    /// Offset reached at `at` (fractional).
    progress: f64,
    rate: f64,
    at: Ms,
    generation: u32,
}

impl Flow {
    /// Counts the bytes sent at the current rate up to `now`.
    fn settle(&mut self, now: Ms) {
        self.progress += self.rate * now.saturating_sub(self.at) as f64 / SCALE as f64;
        self.at = now;
    }

    /// When the next piece boundary is reached at the current rate.
    fn next_boundary_at(&self, now: Ms) -> Ms {
        let boundary = (self.sent + self.piece).min(self.end);
        let left = (f64::from(boundary) - self.progress).max(0.0) * SCALE as f64;
        now + (left / self.rate).ceil().max(1.0) as Ms
    }
}

struct SegInfo {
    published: Ms,
    population: u32,
    got: u32,
    t50: Option<Ms>,
    t95: Option<Ms>,
    t100: Option<Ms>,
}

impl SegInfo {
    fn new(published: Ms, population: u32) -> Self {
        Self {
            published,
            population,
            got: 0,
            t50: None,
            t95: None,
            t100: None,
        }
    }

    /// One more viewer holds the segment, at `now` (completions come in
    /// time order).
    fn count(&mut self, now: Ms) {
        self.got += 1;
        let pop = self.population.max(1);
        let dt = now.saturating_sub(self.published);
        if self.t50.is_none() && self.got * 2 >= pop {
            self.t50 = Some(dt);
        }
        if self.t95.is_none() && self.got * 100 >= pop * 95 {
            self.t95 = Some(dt);
        }
        if self.t100.is_none() && self.got >= pop {
            self.t100 = Some(dt);
        }
    }
}

struct Sim {
    sc: Scenario,
    policy: Policy,
    now: Ms,
    order: u64,
    /// The events to come, by time then insertion.
    queue: calendar::Queue<Ev>,
    rng: SmallRng,
    viewers: Vec<Viewer>,
    by_id: BTreeMap<PeerId, usize>,
    by_slot: BTreeMap<Slot, usize>,
    tracker: Cells,
    publisher: Slot,
    rendition: RenditionId,
    stream: StreamId,
    seg_real: u64,
    segs: BTreeMap<u64, SegInfo>,
    content: BTreeMap<u64, (SegmentMeta, Bytes)>,
    /// Peer transfers under way, by id.
    flows: std::collections::HashMap<u64, Flow>,
    next_flow: u64,
    /// Flows stopped midway → until when their pieces may still arrive.
    stopped_flows: std::collections::HashMap<u64, Ms>,
    /// Links being set up (lower index first).
    pending: BTreeSet<(usize, usize)>,
    http_cancelled: BTreeSet<(usize, u64)>,
    http_active_wan: u32,
    published: u64,
    first_fetches: u64,
    http_bytes: u64,
    p2p_bytes: u64,
    tracker_bytes: u64,
    hash_failures: u64,
    window: Windows,
    end: Ms,
    trace: Option<usize>,
    trace_seq: Option<u64>,
}

/// Whether viewers `a` and `b` cannot connect (NAT): a hash of the pair
/// against the scenario's share, the same in both models.
fn unreachable(sc: &Scenario, a: usize, b: usize) -> bool {
    let (x, y) = (a.min(b) as u64, a.max(b) as u64);
    let h = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_mul(0x1656_67B1_9E37_79F9);
    (h >> 11) as f64 / (1u64 << 53) as f64 <= sc.network.unreachable_pairs
}

/// How long a link between viewers `a` and `b` (one-way latencies) takes
/// to open: offer/answer through the tracker, ICE, DTLS, SCTP. A link that
/// cannot open fails `LINK_FAIL_MS` later.
fn link_setup(a: Ms, b: Ms) -> Ms {
    let rtt = 2 * (a + b);
    2 * (a + b) + 3 * rtt + 20
}
/// See [`link_setup`].
const LINK_FAIL_MS: Ms = 5_000;

/// Real bytes of one segment.
fn segment_bytes(sc: &Scenario) -> u64 {
    u64::from(sc.stream.bitrate_kbps) * sc.stream.segment_ms / 8
}

/// Segment `seq` as the origin publishes it at `now`: its record and its
/// bytes, scaled down (`SCALE`).
fn segment(
    sc: &Scenario,
    stream: &StreamId,
    rendition: RenditionId,
    seq: u64,
    now: Ms,
) -> (SegmentMeta, Bytes) {
    let mut data = vec![0u8; (segment_bytes(sc) / SCALE).max(64) as usize];
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let meta = SegmentMeta {
        id: SegmentId::new(stream.clone(), rendition, seq),
        size: data.len() as u64,
        sha256: Sha256Digest::of(&data),
        duration_ms: sc.stream.segment_ms as u32,
        published_at_ms: now,
        // The origin's blocks, in simulated bytes.
        blocks: BlockHashes::of(
            &data,
            (u64::from(sc.stream.block_kib) * 1024 / SCALE).max(1) as u32,
        ),
    };
    (meta, Bytes::from(data))
}

fn core_config(sc: &Scenario, r: RenditionId) -> CoreConfig {
    let mut c = CoreConfig::viewer(r);
    c.window_segments = CORE_WINDOW;
    c.playback_delay_ms = sc.player.playback_delay_ms;
    if let Some(n) = sc.player.upload_slots {
        c.upload_slots = n;
    }
    if let Some(n) = sc.player.piece_blocks {
        c.piece_blocks = n;
    }
    if let Some(n) = sc.player.sources_per_segment {
        c.sources_per_segment = n;
    }
    c.http_rate /= SCALE as f64;
    c.peer_rate /= SCALE as f64;
    c
}

impl Sim {
    fn at(&mut self, at: Ms, ev: Ev) {
        self.order += 1;
        self.queue.push(at, ev);
    }

    fn new_viewer(&mut self, joined_at: Ms) -> usize {
        let i = self.viewers.len();
        let Drawn {
            up,
            down,
            latency,
            seed,
            leave_at,
        } = Drawn::new(&self.sc, &mut self.rng, joined_at);
        let id = PeerId::new(format!("v{i}")).expect("a valid id");
        let mut cfg = core_config(&self.sc, self.rendition);
        // The viewer knows its uplink (as an edge peer knows --upload-kbps).
        cfg.upload_rate = up / SCALE as f64;
        self.viewers.push(Viewer {
            id: id.clone(),
            core: Core::new(cfg, seed),
            up,
            down,
            latency,
            slot: None,
            present: false,
            play: Playback {
                joined_at,
                ..Playback::default()
            },
            links: Vec::new(),
            up_flows: Vec::new(),
            down_flows: Vec::new(),
            timer: None,
            http_reqs: BTreeMap::new(),
        });
        self.by_id.insert(id, i);
        if leave_at < self.end {
            self.at(leave_at, Ev::Leave(i));
        }
        self.at(joined_at, Ev::Join(i));
        i
    }

    fn unreachable(&self, a: usize, b: usize) -> bool {
        unreachable(&self.sc, a, b)
    }

    fn send_tracker(&mut self, v: usize, msg: ClientMsg) {
        let lat = self.viewers[v].latency;
        self.at(self.now + lat, Ev::ToTracker(v, msg));
    }

    fn drain_tracker(&mut self) {
        while let Some(out) = self.tracker.poll_output() {
            let Ok(text) = std::str::from_utf8(&out.text) else {
                continue;
            };
            let Ok(msg) = ServerMsg::decode(text) else {
                continue;
            };
            let msg = Rc::new(msg);
            let slots = match out.to {
                Recipients::One(s) => vec![s],
                Recipients::Many(v) => v,
            };
            self.tracker_bytes += out.text.len() as u64 * slots.len() as u64;
            for s in slots {
                if let Some(&v) = self.by_slot.get(&s) {
                    let lat = self.viewers[v].latency;
                    self.at(self.now + lat, Ev::FromTracker(v, msg.clone()));
                }
            }
        }
        if let Some(t) = self.tracker.poll_timeout() {
            self.at(t.max(self.now), Ev::TrackerTimeout(t));
        }
    }

    fn publish(&mut self, seq: u64) {
        let (meta, data) = segment(&self.sc, &self.stream, self.rendition, seq, self.now);
        let population = self.viewers.iter().filter(|v| v.present).count() as u32;
        self.segs.insert(seq, SegInfo::new(self.now, population));
        self.content.insert(seq, (meta.clone(), data));
        if seq >= 40 {
            self.content.remove(&(seq - 40));
        }
        self.published += 1;
        match self.policy {
            Policy::Plan => {
                self.tracker
                    .handle(self.now, self.publisher, ClientMsg::Publish { meta });
                self.drain_tracker();
            }
            // No plan: every viewer hears of the segment from the tracker
            // (the same latency) and decides alone.
            Policy::RandomMesh | Policy::HttpOnly => {
                self.tracker
                    .handle(self.now, self.publisher, ClientMsg::Publish { meta });
                self.drain_tracker();
            }
        }
    }

    /// The rate a transfer from `from` to `to` gets with `extra` more
    /// transfers at each end than they have now: the sender's uplink or the
    /// receiver's downlink, each divided among its transfers, whichever is
    /// less (real bytes per ms).
    fn share(&self, from: usize, to: usize, extra: usize) -> f64 {
        let (a, b) = (&self.viewers[from], &self.viewers[to]);
        (a.up / (a.up_flows.len() + extra).max(1) as f64)
            .min(b.down / (b.down_flows.len() + extra).max(1) as f64)
            .max(1e-3)
    }

    /// Recomputes the rate of every transfer that `sender` sends or
    /// `receiver` receives (a transfer of theirs started or ended).
    fn reshare(&mut self, sender: usize, receiver: usize) {
        let mut ids = self.viewers[sender].up_flows.clone();
        ids.extend(self.viewers[receiver].down_flows.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let now = self.now;
        for id in ids {
            let Some(f) = self.flows.get(&id) else {
                continue;
            };
            let rate = self.share(f.from, f.to, 0);
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            f.settle(now);
            if f.rate == rate {
                continue; // its next tick stands (a new flow has rate 0)
            }
            f.rate = rate;
            f.generation += 1;
            let ev = Ev::FlowTick(id, f.generation);
            let at = f.next_boundary_at(now);
            self.at(at, ev);
        }
    }

    /// A transfer reached a piece boundary: the piece leaves (it arrives
    /// one link latency later); the last one ends the transfer.
    fn flow_tick(&mut self, id: u64, generation: u32) {
        let now = self.now;
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if f.generation != generation {
            return;
        }
        f.settle(now);
        let boundary = (f.sent + f.piece).min(f.end);
        // Rounding: the tick was set for the boundary.
        f.progress = f.progress.max(f64::from(boundary));
        let frame = Frame::Chunk {
            rendition: f.rendition,
            seq: f.seq,
            offset: f.sent,
            total: f.data.len() as u32,
            data: f.data.slice(f.sent as usize..boundary as usize),
        };
        f.sent = boundary;
        let last = boundary >= f.end;
        let (from, to, seq) = (f.from, f.to, f.seq);
        let lat = self.viewers[from].latency + self.viewers[to].latency;
        self.at(
            now + lat,
            Ev::Piece {
                flow: id,
                to,
                from,
                seq,
                frame,
                last,
            },
        );
        if last {
            self.flows.remove(&id);
            self.viewers[from].up_flows.retain(|&x| x != id);
            self.viewers[to].down_flows.retain(|&x| x != id);
            self.reshare(from, to);
        } else if let Some(at) = self.flows.get(&id).map(|f| f.next_boundary_at(now)) {
            self.at(at, Ev::FlowTick(id, generation));
        }
    }

    /// Stops a transfer midway: its capacity is free at once and its pieces
    /// still on the wire are dropped.
    fn end_flow(&mut self, id: u64) {
        let Some(f) = self.flows.remove(&id) else {
            return;
        };
        let lat = self.viewers[f.from].latency + self.viewers[f.to].latency;
        self.stopped_flows.insert(id, self.now + lat + 1);
        self.viewers[f.from].up_flows.retain(|&x| x != id);
        self.viewers[f.to].down_flows.retain(|&x| x != id);
        self.reshare(f.from, f.to);
    }

    fn pump(&mut self, v: usize) {
        loop {
            let Some(a) = self.viewers[v].core.poll_action() else {
                break;
            };
            self.act(v, a);
        }
        let t = self.viewers[v].core.poll_timeout();
        if t.is_some() && t != self.viewers[v].timer {
            self.viewers[v].timer = t;
            if let Some(t) = t {
                self.at(t.max(self.now), Ev::Timeout(v, t));
            }
        }
    }

    /// Prints an action about the segment of `SWARMCAST_SIM_TRACE_SEQ`,
    /// with the time since its publication.
    fn trace_segment(&self, v: usize, a: &Action) {
        let seq = match a {
            Action::Serve { seq, .. } | Action::StopServing { seq, .. } => Some(*seq),
            Action::Complete { meta, .. } | Action::HttpGet { meta, .. } => Some(meta.id.seq),
            Action::Send {
                frame:
                    Frame::Request { seq, .. }
                    | Frame::Reject { seq, .. }
                    | Frame::Cancel { seq, .. }
                    | Frame::Have { seq, .. },
                ..
            } => Some(*seq),
            _ => None,
        };
        let Some(seq) = seq.filter(|s| Some(*s) == self.trace_seq) else {
            return;
        };
        let t = self
            .now
            .saturating_sub(self.segs.get(&seq).map_or(self.now, |i| i.published));
        let who = |p: &PeerId| self.by_id.get(p).map_or(-1, |&x| x as i64);
        match a {
            Action::Serve { peer, from, to, .. } => {
                eprintln!("+{t} v{v} serve v{} {from}..{to}", who(peer))
            }
            Action::Send { peer, frame } => eprintln!("+{t} v{v} -> v{} {frame:?}", who(peer)),
            Action::Complete { source, .. } => eprintln!("+{t} v{v} complete {source:?}"),
            Action::HttpGet { from, .. } => eprintln!("+{t} v{v} http from {from}"),
            other => eprintln!("+{t} v{v} {other:?}"),
        }
    }

    fn act(&mut self, v: usize, a: Action) {
        let now = self.now;
        if self.trace_seq.is_some() {
            self.trace_segment(v, &a);
        }
        if self.trace == Some(v) {
            match &a {
                Action::Serve {
                    peer,
                    seq,
                    from,
                    to,
                    ..
                } => eprintln!("{now} v{v} serve {peer} {seq} {from}..{to}"),
                Action::Complete { meta, source, .. } => {
                    eprintln!("{now} v{v} complete {} {source:?}", meta.id)
                }
                Action::Send { peer, frame } => eprintln!("{now} v{v} send {peer} {frame:?}"),
                other => eprintln!("{now} v{v} {other:?}"),
            }
        }
        match a {
            Action::Send { peer, frame } => {
                if let Some(&to) = self.by_id.get(&peer) {
                    if self.viewers[v].links.contains(&to) {
                        let lat = self.viewers[v].latency + self.viewers[to].latency;
                        self.at(now + lat, Ev::Frame { to, from: v, frame });
                    }
                }
            }
            Action::Serve {
                peer,
                seq,
                data,
                from,
                to: end,
                rendition,
            } => {
                let Some(&to) = self.by_id.get(&peer) else {
                    self.viewers[v]
                        .core
                        .handle_upload_done(now, &peer, rendition, seq);
                    return;
                };
                // More of a segment streamed as it arrives (cut-through):
                // the transfer under way goes on with the new bytes.
                let running = self.viewers[v].up_flows.iter().copied().find(|id| {
                    self.flows
                        .get(id)
                        .is_some_and(|f| f.to == to && f.seq == seq && f.end == from)
                });
                if let Some(f) = running.and_then(|id| self.flows.get_mut(&id)) {
                    f.end = end;
                    f.data = data;
                    return;
                }
                let span = end - from;
                // Pieces of about PIECE_MS at the rate the transfer would
                // get now (the rate changes as others start and end).
                let now_rate = self.share(v, to, 1);
                let dur = (f64::from(span) * SCALE as f64 / now_rate).ceil() as Ms;
                let piece = span.div_ceil(pieces(dur) as u32).max(1);
                let id = self.next_flow;
                self.next_flow += 1;
                self.flows.insert(
                    id,
                    Flow {
                        from: v,
                        to,
                        seq,
                        rendition,
                        data,
                        sent: from,
                        end,
                        piece,
                        progress: f64::from(from),
                        rate: 0.0,
                        at: now,
                        generation: 0,
                    },
                );
                self.viewers[v].up_flows.push(id);
                self.viewers[to].down_flows.push(id);
                self.reshare(v, to);
            }
            Action::StopServing { peer, seq, .. } => {
                // The sender stops: its uplink (and the receiver's downlink)
                // is free at once; the pieces still on the wire are dropped.
                if let Some(&to) = self.by_id.get(&peer) {
                    let id = self.viewers[v].up_flows.iter().copied().find(|f| {
                        self.flows
                            .get(f)
                            .is_some_and(|f| f.to == to && f.seq == seq)
                    });
                    if let Some(id) = id {
                        self.end_flow(id);
                    }
                }
            }
            Action::HttpGet {
                req,
                meta,
                from,
                to,
            } => {
                let seq = meta.id.seq;
                self.viewers[v].http_reqs.insert(req, seq);
                let Some((_, data)) = self.content.get(&seq).cloned() else {
                    self.viewers[v].core.handle_http_failed(now, req);
                    return;
                };
                let from = from as usize;
                let to = (to as usize).clamp(from, data.len());
                let real = (to - from) as u64 * SCALE;
                let mut rate = self.viewers[v].down;
                if self.sc.network.shared_wan_kbps > 0 {
                    self.http_active_wan += 1;
                    let wan = f64::from(self.sc.network.shared_wan_kbps) / 8.0;
                    rate = rate.min(wan / f64::from(self.http_active_wan));
                }
                let dur = (real as f64 / rate.max(1e-3)).ceil() as Ms;
                let ttfb = self.sc.cdn.latency_ms as Ms + self.viewers[v].latency;
                let span = (to - from) as u64;
                let mut a0 = from;
                let n = pieces(dur);
                for e in 1..=n {
                    let a1 = from + (span * e / n) as usize;
                    let last = e == n;
                    if a1 <= a0 && !last {
                        continue;
                    }
                    let t = now + ttfb + dur * e / n;
                    self.at(
                        t,
                        Ev::Http {
                            v,
                            req,
                            data: data.slice(a0..a1.max(a0)),
                            last,
                        },
                    );
                    a0 = a1.max(a0);
                }
            }
            Action::HttpCancel { req } => {
                self.http_cancelled.insert((v, req));
            }
            Action::Complete { meta, source, .. } => {
                let _ = source;
                let seq = meta.id.seq;
                let delay = self.sc.player.playback_delay_ms;
                let seg_ms = self.sc.stream.segment_ms;
                let published = self.segs.get(&seq).map_or(now, |i| i.published);
                self.viewers[v]
                    .play
                    .complete(now, seq, published, delay, seg_ms);
                if let Some(info) = self.segs.get_mut(&seq) {
                    info.count(now);
                }
                let r = self.rendition;
                self.send_tracker(
                    v,
                    ClientMsg::Have {
                        segments: vec![SegmentRef { rendition: r, seq }],
                    },
                );
            }
            Action::Evicted { rendition, seq } => self.send_tracker(
                v,
                ClientMsg::Lost {
                    segments: vec![SegmentRef { rendition, seq }],
                },
            ),
            Action::DropPeer { peer, reason } => {
                let _ = reason;
                if let Some(&o) = self.by_id.get(&peer) {
                    self.unlink(v, o);
                }
            }
        }
    }

    fn unlink(&mut self, a: usize, b: usize) {
        let had = self.viewers[a].links.contains(&b);
        self.viewers[a].links.retain(|&x| x != b);
        self.viewers[b].links.retain(|&x| x != a);
        if !had {
            return;
        }
        // Transfers over the link end with it.
        let ids: Vec<u64> = self.viewers[a]
            .up_flows
            .iter()
            .chain(self.viewers[a].down_flows.iter())
            .copied()
            .filter(|id| self.flows.get(id).is_some_and(|f| f.from == b || f.to == b))
            .collect();
        for id in ids {
            self.end_flow(id);
        }
        let (ia, ib) = (self.viewers[a].id.clone(), self.viewers[b].id.clone());
        let now = self.now;
        self.viewers[a].core.handle_peer_down(now, &ib);
        self.viewers[b].core.handle_peer_down(now, &ia);
        self.pump(a);
        self.pump(b);
        for (x, other) in [(a, ib), (b, ia)] {
            if self.viewers[x].present {
                self.send_tracker(x, ClientMsg::PeerClosed { peer_id: other });
                self.send_tracker(x, ClientMsg::WantPeers { count: 1 });
            }
        }
    }

    fn on_tracker(&mut self, v: usize, msg: &ServerMsg) {
        if !self.viewers[v].present {
            return;
        }
        let now = self.now;
        match msg {
            ServerMsg::Segment { meta } | ServerMsg::Fetch { meta } => {
                let first = match self.policy {
                    Policy::Plan => matches!(msg, ServerMsg::Fetch { .. }),
                    Policy::HttpOnly => true,
                    // Alone: about one viewer per neighbourhood fetches at once.
                    Policy::RandomMesh => {
                        self.rng.random::<f64>()
                            < 1.0 / (f64::from(self.sc.tracker.neighbours) + 1.0)
                    }
                };
                if first {
                    self.first_fetches += 1;
                }
                self.viewers[v]
                    .core
                    .handle_published(now, meta.clone(), first);
                self.pump(v);
            }
            ServerMsg::Peers { peers } => {
                if self.policy == Policy::HttpOnly {
                    return;
                }
                for p in peers.iter().filter(|p| p.initiator) {
                    let Some(&o) = self.by_id.get(&p.peer_id) else {
                        continue;
                    };
                    let setup = link_setup(self.viewers[v].latency, self.viewers[o].latency);
                    self.pending.insert((v.min(o), v.max(o)));
                    if self.unreachable(v, o) {
                        self.at(now + setup + LINK_FAIL_MS, Ev::LinkFail(v, o));
                    } else {
                        self.at(now + setup, Ev::LinkUp(v, o));
                    }
                }
            }
            ServerMsg::Stripes {
                rendition,
                sources,
                children,
            } => {
                self.viewers[v].core.handle_stripes(
                    now,
                    *rendition,
                    sources.clone(),
                    children.clone(),
                );
            }
            ServerMsg::PeerLeft { peer_id } => {
                if let Some(&o) = self.by_id.get(peer_id) {
                    // A link still being set up is abandoned too.
                    self.pending.remove(&(v.min(o), v.max(o)));
                    self.unlink(v, o);
                }
            }
            _ => {}
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Publish(seq) => {
                self.publish(seq);
                let next = now + self.sc.stream.segment_ms;
                if next < self.end {
                    self.at(next, Ev::Publish(seq + 1));
                }
            }
            Ev::Join(v) => {
                let req = JoinRequest {
                    peer_id: self.viewers[v].id.clone(),
                    kind: ClientKind::Native,
                    region: None,
                    upload_kbps: (self.viewers[v].up * 8.0) as u32,
                };
                if let Ok(slot) = self.tracker.join(now, req) {
                    self.viewers[v].slot = Some(slot);
                    self.viewers[v].present = true;
                    self.viewers[v].play.joined_at = now;
                    self.by_slot.insert(slot, v);
                    self.drain_tracker();
                }
            }
            Ev::Leave(v) => {
                if !self.viewers[v].present {
                    return;
                }
                self.viewers[v].present = false;
                self.viewers[v].play.left_at = Some(now);
                let mut ids = self.viewers[v].up_flows.clone();
                ids.extend(self.viewers[v].down_flows.iter().copied());
                for id in ids {
                    self.end_flow(id);
                }
                if let Some(slot) = self.viewers[v].slot.take() {
                    self.by_slot.remove(&slot);
                    self.tracker.leave(now, slot);
                }
                for o in self.viewers[v].links.clone() {
                    let id = self.viewers[v].id.clone();
                    self.viewers[o].links.retain(|&x| x != v);
                    self.viewers[o].core.handle_peer_down(now, &id);
                    self.pump(o);
                }
                self.viewers[v].links.clear();
                self.drain_tracker();
                // A replacement joins.
                self.new_viewer(now);
            }
            Ev::FromTracker(v, msg) => self.on_tracker(v, &msg),
            Ev::ToTracker(v, msg) => {
                if let Some(slot) = self.viewers[v].slot {
                    self.tracker_bytes += msg.encode().len() as u64;
                    self.tracker.handle(now, slot, msg);
                    self.drain_tracker();
                }
            }
            Ev::LinkUp(a, b) => {
                let was_pending = self.pending.remove(&(a.min(b), a.max(b)));
                let both = self.viewers[a].present && self.viewers[b].present;
                if !(was_pending && both) || self.viewers[a].links.contains(&b) {
                    return;
                }
                self.viewers[a].links.push(b);
                self.viewers[b].links.push(a);
                let (ia, ib) = (self.viewers[a].id.clone(), self.viewers[b].id.clone());
                self.viewers[a].core.handle_peer_up(now, ib);
                self.viewers[b].core.handle_peer_up(now, ia);
                self.pump(a);
                self.pump(b);
            }
            Ev::LinkFail(a, b) => {
                if !self.pending.remove(&(a.min(b), a.max(b))) {
                    return;
                }
                for (x, y) in [(a, b), (b, a)] {
                    if self.viewers[x].present {
                        let id = self.viewers[y].id.clone();
                        self.send_tracker(x, ClientMsg::PeerClosed { peer_id: id });
                    }
                }
                if self.viewers[a].present {
                    self.send_tracker(a, ClientMsg::WantPeers { count: 1 });
                }
            }
            Ev::Frame { to, from, frame } => {
                if !self.viewers[to].links.contains(&from) {
                    return;
                }
                let id = self.viewers[from].id.clone();
                self.viewers[to].core.handle_frame(now, &id, frame);
                self.pump(to);
            }
            Ev::FlowTick(id, generation) => self.flow_tick(id, generation),
            Ev::Piece {
                flow,
                to,
                from,
                seq,
                frame,
                last,
            } => {
                let stopped = self.stopped_flows.contains_key(&flow);
                let linked = self.viewers[to].links.contains(&from);
                if linked && !stopped {
                    if let Frame::Chunk { data, .. } = &frame {
                        self.p2p_bytes += data.len() as u64 * SCALE;
                        self.window.p2p += data.len() as u64 * SCALE;
                    }
                    let id = self.viewers[from].id.clone();
                    self.viewers[to].core.handle_frame(now, &id, frame);
                    self.pump(to);
                }
                if last && !stopped {
                    let id = self.viewers[to].id.clone();
                    let r = self.rendition;
                    self.viewers[from].core.handle_upload_done(now, &id, r, seq);
                    self.pump(from);
                }
            }
            Ev::Http { v, req, data, last } => {
                if last && self.sc.network.shared_wan_kbps > 0 {
                    self.http_active_wan = self.http_active_wan.saturating_sub(1);
                }
                if self.http_cancelled.contains(&(v, req)) || !self.viewers[v].present {
                    if last {
                        self.http_cancelled.remove(&(v, req));
                    }
                    return;
                }
                self.http_bytes += data.len() as u64 * SCALE;
                self.window.http += data.len() as u64 * SCALE;
                self.viewers[v].core.handle_http_data(now, req, &data);
                if last {
                    self.viewers[v].core.handle_http_done(now, req);
                }
                self.pump(v);
            }
            Ev::Timeout(v, t) => {
                if self.viewers[v].timer == Some(t) {
                    self.viewers[v].timer = None;
                    if self.viewers[v].present {
                        self.viewers[v].core.handle_timeout(now);
                        let before = self.viewers[v].core.stats().hash_failures;
                        self.pump(v);
                        let _ = before;
                    }
                }
            }
            Ev::TrackerTimeout(t) => {
                if self.tracker.poll_timeout() == Some(t) {
                    self.tracker.handle_timeout(now);
                    self.drain_tracker();
                }
            }
            Ev::Sample => {
                self.stopped_flows.retain(|_, until| *until >= now);
                self.window.close(now, self.seg_real);
                if now + 10_000 < self.end {
                    self.at(now + 10_000, Ev::Sample);
                }
            }
        }
    }
}

fn quantile(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[(((v.len() - 1) as f64) * q).round() as usize] as f64
}

/// Calls `join` with each viewer's join time: the scenario's initial share
/// at 0, the rest spread evenly over its ramp.
fn schedule_audience(sc: &Scenario, mut join: impl FnMut(Ms)) {
    let initial = (sc.viewers as f64 * sc.churn.initial_share).round() as usize;
    for i in 0..sc.viewers {
        let t = if i < initial {
            0
        } else {
            (sc.churn.ramp_s * 1000.0 * (i - initial) as f64 / (sc.viewers - initial).max(1) as f64)
                as Ms
        };
        join(t);
    }
}

/// The real tracker swarm of a run (its cells, with the scenario's
/// `cell_viewers`), with the origin joined as publisher (the simulator's
/// clock stands in for its timers: no pings, no idle timeout, no signal
/// limits). Slots here are the cells' seats.
fn tracker(sc: &Scenario, policy: Policy, seed: u64) -> (Cells, Slot) {
    let cfg = SwarmConfig {
        max_peers: sc.viewers * 2 + 16,
        neighbours: sc.tracker.neighbours,
        cell_size: sc.tracker.cell_size,
        min_first_fetchers: if policy == Policy::Plan {
            sc.tracker.min_first_fetchers
        } else {
            0
        },
        max_first_fetchers: if policy == Policy::Plan {
            sc.tracker.max_first_fetchers
        } else {
            0
        },
        spread_budget_ms: sc.tracker.spread_budget_ms,
        coverage_target: sc.tracker.coverage_target,
        stripes: if policy == Policy::Plan {
            sc.tracker.stripes
        } else {
            0
        },
        stripe_headroom: sc.tracker.stripe_headroom,
        size_scale: SCALE,
        ping_interval_ms: u32::MAX,
        idle_timeout_ms: u32::MAX,
        signals_per_sec: u32::MAX,
        signal_burst: u32::MAX,
        ..SwarmConfig::default()
    };
    let stream = StreamId::new("sim").expect("a valid id");
    let mut tracker = Cells::new(stream, cfg, sc.tracker.cell_viewers, seed);
    let publisher = tracker
        .join(
            0,
            JoinRequest {
                peer_id: PeerId::new("origin").expect("a valid id"),
                kind: ClientKind::Publisher,
                region: None,
                upload_kbps: 0,
            },
        )
        .expect("the publisher joins an empty swarm");
    (tracker, publisher)
}

/// Runs a scenario under `policy` with the block-grain model (every
/// viewer's swarm core).
pub fn run(sc: &Scenario, policy: Policy, seed: u64, mut progress: impl FnMut(f64)) -> Report {
    let started = std::time::Instant::now();
    let stream = StreamId::new("sim").expect("a valid id");
    let rendition = RenditionId::new("main").expect("a valid id");
    let seg_real = segment_bytes(sc);
    let (tracker, publisher) = tracker(sc, policy, seed);
    let end = sc.duration_s * 1000;
    let mut sim = Sim {
        sc: sc.clone(),
        policy,
        now: 0,
        order: 0,
        queue: calendar::Queue::default(),
        rng: SmallRng::seed_from_u64(seed),
        viewers: Vec::with_capacity(sc.viewers),
        by_id: BTreeMap::new(),
        by_slot: BTreeMap::new(),
        tracker,
        publisher,
        rendition,
        stream,
        seg_real,
        segs: BTreeMap::new(),
        content: BTreeMap::new(),
        flows: std::collections::HashMap::new(),
        next_flow: 0,
        stopped_flows: std::collections::HashMap::new(),
        pending: BTreeSet::new(),
        http_cancelled: BTreeSet::new(),
        http_active_wan: 0,
        published: 0,
        first_fetches: 0,
        http_bytes: 0,
        p2p_bytes: 0,
        tracker_bytes: 0,
        hash_failures: 0,
        window: Windows::default(),
        end,
        // Debug aid: every action of one viewer on stderr.
        trace: std::env::var("SWARMCAST_SIM_TRACE")
            .ok()
            .and_then(|v| v.parse().ok()),
        // Debug aid: every action of every viewer about one segment.
        trace_seq: std::env::var("SWARMCAST_SIM_TRACE_SEQ")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    while sim.tracker.poll_output().is_some() {}
    schedule_audience(sc, |t| {
        sim.new_viewer(t);
    });
    sim.at(1000, Ev::Publish(0));
    sim.at(10_000, Ev::Sample);
    let mut last_progress = 0;
    while let Some((at, ev)) = sim.queue.pop() {
        if at >= end + sc.player.playback_delay_ms + 2000 {
            break;
        }
        sim.now = at;
        if let Ev::Publish(_) = ev {
            sim.window.segs += 1;
            if std::env::var_os("SWARMCAST_SIM_DIGEST").is_some() {
                eprintln!(
                    "digest t={} order={} http={} p2p={} tracker={}",
                    sim.now, sim.order, sim.http_bytes, sim.p2p_bytes, sim.tracker_bytes
                );
            }
        }
        sim.handle(ev);
        if sim.now / 5000 != last_progress {
            last_progress = sim.now / 5000;
            progress(sim.now as f64 / end as f64);
        }
    }
    progress(1.0);
    let present: Vec<&Viewer> = sim.viewers.iter().filter(|v| v.present).collect();
    let core = |f: fn(&swarmcast_swarm_core::Stats) -> u64| {
        sim.viewers.iter().map(|v| f(v.core.stats())).sum::<u64>()
    };
    let first_fetchers = sim.first_fetches + sim.tracker.counters().stripe_roots;
    Outcome {
        sc,
        model: Model::Core,
        policy,
        seed,
        started,
        plays: sim.viewers.iter().map(|v| &v.play).collect(),
        segs: &sim.segs,
        published: sim.published,
        seg_real,
        first_fetchers,
        http_bytes: sim.http_bytes,
        p2p_bytes: sim.p2p_bytes,
        tracker_bytes: sim.tracker_bytes,
        hash_failures: core(|s| s.hash_failures) + sim.hash_failures,
        slow_transfers: core(|s| s.slow_transfers),
        rejected_requests: core(|s| s.rejected_requests),
        links: (present.iter().map(|v| v.links.len()).sum(), present.len()),
        window: sim.window,
    }
    .report()
}

/// What a model's run adds up to, for [`Outcome::report`].
struct Outcome<'a> {
    sc: &'a Scenario,
    model: Model,
    policy: Policy,
    seed: u64,
    started: std::time::Instant,
    /// Every session's player.
    plays: Vec<&'a Playback>,
    segs: &'a BTreeMap<u64, SegInfo>,
    published: u64,
    /// Real bytes per segment.
    seg_real: u64,
    /// Whole-segment first fetchers and stripe roots, all segments.
    first_fetchers: u64,
    http_bytes: u64,
    p2p_bytes: u64,
    tracker_bytes: u64,
    hash_failures: u64,
    slow_transfers: u64,
    rejected_requests: u64,
    /// Open links of the viewers present at the end, and those viewers.
    links: (usize, usize),
    window: Windows,
}

impl Outcome<'_> {
    fn report(self) -> Report {
        let end = self.sc.duration_s * 1000;
        let mut startup: Vec<u64> = self
            .plays
            .iter()
            .filter_map(|p| p.first_segment.map(|f| f.saturating_sub(p.joined_at)))
            .collect();
        let watched: u64 = self
            .plays
            .iter()
            .filter_map(|p| {
                p.first_played
                    .map(|_| p.left_at.unwrap_or(end).saturating_sub(p.play_start))
            })
            .sum();
        let stall_total: u64 = self.plays.iter().map(|p| p.stall_ms).sum();
        let mut s50: Vec<u64> = self.segs.values().filter_map(|s| s.t50).collect();
        let mut s95: Vec<u64> = self.segs.values().filter_map(|s| s.t95).collect();
        let mut s100: Vec<u64> = self.segs.values().filter_map(|s| s.t100).collect();
        let spread_95_per_segment: Vec<u64> =
            self.segs.values().map(|s| s.t95.unwrap_or(0)).collect();
        let media = self.http_bytes + self.p2p_bytes;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut stall_ms_per_viewer: Vec<u64> = self.plays.iter().map(|p| p.stall_ms).collect();
        stall_ms_per_viewer.sort_unstable();
        Report {
            scenario: self.sc.name.clone(),
            model: self.model,
            policy: self.policy,
            seed: self.seed,
            viewers: self.sc.viewers,
            sessions: self.plays.len(),
            duration_s: self.sc.duration_s,
            segments: self.published,
            offload: ratio(self.p2p_bytes as f64, media as f64),
            origin_egress_bytes: self.http_bytes,
            origin_copies_per_segment: ratio(
                self.http_bytes as f64,
                self.published as f64 * self.seg_real as f64,
            ),
            first_fetchers_per_segment: ratio(self.first_fetchers as f64, self.published as f64),
            rebuffering_ratio: ratio(stall_total as f64, watched as f64),
            stalls: self.plays.iter().map(|p| p.stalls).sum(),
            startup_time_ms: Quantiles {
                p50: quantile(&mut startup, 0.5),
                p95: quantile(&mut startup, 0.95),
            },
            spread_time_ms: Spread {
                p50_of_50: quantile(&mut s50, 0.5),
                p50_of_95: quantile(&mut s95, 0.5),
                p95_of_95: quantile(&mut s95, 0.95),
                p50_of_100: quantile(&mut s100, 0.5),
            },
            peers_per_viewer: ratio(self.links.0 as f64, self.links.1 as f64),
            signalling_overhead: ratio(self.tracker_bytes as f64, media as f64),
            hash_failures: self.hash_failures,
            slow_transfers: self.slow_transfers,
            rejected_requests: self.rejected_requests,
            offload_over_time: self.window.offload,
            egress_over_time: self.window.egress,
            spread_95_per_segment,
            stall_ms_per_viewer,
            wall_s: self.started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss(),
        }
    }
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Flags of `swarmcast-load sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// The scenario file (`scenarios/*.toml`).
    #[arg(long)]
    pub scenario: std::path::PathBuf,
    /// Overrides the scenario's audience size.
    #[arg(long)]
    pub viewers: Option<usize>,
    /// Overrides the scenario's length, seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Overrides the scenario's `tracker.cell_viewers` (most viewers per
    /// cell; 0: one mesh).
    #[arg(long)]
    pub cell_viewers: Option<usize>,
    /// Policies to simulate: the plan, then its baselines (random mesh,
    /// HTTP only) unless one is named.
    #[arg(long, value_enum)]
    pub policy: Option<Policy>,
    /// Seed (same seed, same report).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `core`: every viewer runs the swarm core (block grain; up to about
    /// 10,000 viewers in minutes); `stripe`: stripes timed in closed form
    /// over the tracker's real plan (100,000 viewers in minutes).
    #[arg(long, value_enum, default_value_t = Model::Core)]
    pub model: Model,
    /// Write the report here as JSON too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write an HTML report with plots here (open it in a browser).
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
}

/// The `sim` report: the plan's figures at the top level, the baselines beside.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The main run (the first policy simulated).
    #[serde(flatten)]
    pub main: Report,
    /// The same scenario under the other policies.
    pub baselines: Vec<Report>,
}

/// Runs `swarmcast-load sim`.
pub fn run_cli(args: &SimArgs) -> Result<SimReport, crate::LoadError> {
    let mut sc = Scenario::load(&args.scenario)?;
    if let Some(n) = args.viewers {
        if n == 0 {
            return Err(crate::LoadError::Config(
                "--viewers must be at least 1".into(),
            ));
        }
        sc.viewers = n;
    }
    if let Some(d) = args.duration {
        sc.duration_s = d.max(1);
    }
    if let Some(c) = args.cell_viewers {
        sc.tracker.cell_viewers = c;
    }
    if args.model == Model::Stripe {
        // Each leave brings a new session; twice that for the draw's spread.
        let leaves = sc.viewers as f64 * sc.churn.leave_per_min * sc.duration_s as f64 / 60.0;
        if sc.viewers as f64 + 2.0 * leaves >= stripe::MAX_SESSIONS as f64
            || sc.duration_s > stripe::MAX_DURATION_S
        {
            return Err(crate::LoadError::Config(format!(
                "the stripe model tells at most {} sessions apart and runs at most {} s: fewer viewers, less churn or a shorter run",
                stripe::MAX_SESSIONS,
                stripe::MAX_DURATION_S
            )));
        }
    }
    let policies = match args.policy {
        Some(p) => vec![p],
        None => vec![Policy::Plan, Policy::RandomMesh, Policy::HttpOnly],
    };
    let mut runs = Vec::new();
    for p in policies {
        let label = format!("{p:?}");
        let bar = |f: f64| {
            let w = 40;
            let done = ((f.clamp(0.0, 1.0)) * w as f64) as usize;
            eprint!(
                "\r{label:>10} [{}{}] {:>3.0}%",
                "#".repeat(done),
                " ".repeat(w - done),
                f * 100.0
            );
        };
        let r = match args.model {
            Model::Core => run(&sc, p, args.seed, bar),
            Model::Stripe => stripe::run(&sc, p, args.seed, bar),
        };
        eprintln!(
            "\r{label:>10}: offload {:.2}%  origin {:.2} copies/segment  rebuffering {:.4}%  startup p50 {:.0} ms  spread 95% p50 {:.0} ms  ({:.1} s, {:.0} MiB)",
            r.offload * 100.0,
            r.origin_copies_per_segment,
            r.rebuffering_ratio * 100.0,
            r.startup_time_ms.p50,
            r.spread_time_ms.p50_of_95,
            r.wall_s,
            r.peak_rss_bytes as f64 / 1048576.0
        );
        runs.push(r);
    }
    let main = runs.remove(0);
    let report = SimReport {
        main,
        baselines: runs,
    };
    if let Some(p) = &args.html {
        std::fs::write(p, html::render(&report))
            .map_err(|e| crate::LoadError::Run(format!("{}: {e}", p.display())))?;
        eprintln!("HTML report: {}", p.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "name = \"small\"\nviewers = 20\nduration_s = 40\n[churn]\ninitial_share = 0.5\nramp_s = 10\nleave_per_min = 0.5\n";

    fn json(r: &Report) -> String {
        let mut r = r.clone();
        r.wall_s = 0.0;
        r.peak_rss_bytes = 0;
        serde_json::to_string(&r).unwrap()
    }

    #[test]
    fn the_stripe_model_refuses_runs_it_cannot_tell_apart() {
        let args = |viewers, duration| SimArgs {
            scenario: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scenarios/upload-1.5x.toml"),
            viewers: Some(viewers),
            duration: Some(duration),
            cell_viewers: None,
            policy: Some(Policy::Plan),
            seed: 1,
            model: Model::Stripe,
            json: None,
            html: None,
        };
        for (viewers, duration) in [(20_000_000, 10), (10, 1_000_000)] {
            let e = run_cli(&args(viewers, duration))
                .expect_err("a run too large for the stripe model is refused");
            assert!(e.to_string().contains("sessions apart"), "{e}");
        }
    }

    #[test]
    fn a_seed_gives_one_report_without_churn() {
        let text = SMALL.replace("leave_per_min = 0.5", "leave_per_min = 0.0");
        let sc = Scenario::parse(&text, "small").unwrap();
        let a = run(&sc, Policy::Plan, 7, |_| {});
        let b = run(&sc, Policy::Plan, 7, |_| {});
        assert_eq!(json(&a), json(&b));
    }

    #[test]
    fn a_seed_gives_one_report() {
        let sc = Scenario::parse(SMALL, "small").unwrap();
        let a = run(&sc, Policy::Plan, 7, |_| {});
        let b = run(&sc, Policy::Plan, 7, |_| {});
        assert_eq!(json(&a), json(&b));
        assert!(a.segments >= 19, "{} segments", a.segments);
        assert!(a.sessions > 20, "churn replaced viewers: {}", a.sessions);
        let c = run(&sc, Policy::Plan, 8, |_| {});
        assert_ne!(json(&a), json(&c), "another seed, another event");
    }

    #[test]
    fn http_only_costs_one_copy_per_viewer_and_the_plan_less() {
        let text = "name = \"n12\"\nviewers = 12\nduration_s = 60\n[network]\nupload_kbps = { dist = \"fixed\", value = 1000000 }\ndownload_kbps = { dist = \"fixed\", value = 1000000 }\nlatency_ms = { dist = \"fixed\", value = 1 }\nunreachable_pairs = 0.0\n[churn]\ninitial_share = 1.0\nramp_s = 0\nleave_per_min = 0.0\n";
        let sc = Scenario::parse(text, "n12").unwrap();
        let http = run(&sc, Policy::HttpOnly, 1, |_| {});
        assert_eq!(http.offload, 0.0);
        assert!(
            (http.origin_copies_per_segment - 12.0).abs() < 0.5,
            "{}",
            http.origin_copies_per_segment
        );
        let plan = run(&sc, Policy::Plan, 1, |_| {});
        // One first fetcher among 12: 11/12 of the bytes from peers.
        assert!(plan.offload > 0.9, "offload {}", plan.offload);
        assert!(
            plan.origin_copies_per_segment < 1.1,
            "{}",
            plan.origin_copies_per_segment
        );
        assert_eq!(plan.stalls, 0);
        assert_eq!(plan.hash_failures, 0);
        // The same audience in cells of 4 (whole segments, no stripes):
        // three meshes, each seeded once.
        let cells = Scenario::parse(
            &format!("{text}[tracker]\ncell_viewers = 4\nstripes = 0\n"),
            "n12-cells",
        )
        .unwrap();
        let split = run(&cells, Policy::Plan, 1, |_| {});
        assert!(
            (split.origin_copies_per_segment - 3.0).abs() < 0.3,
            "{}",
            split.origin_copies_per_segment
        );
        assert_eq!(split.stalls, 0);
    }
}
