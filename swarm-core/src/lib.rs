//! # swarmcast-swarm-core
//!
//! The state machine of one viewer (or relay) of a Swarmcast swarm, with no
//! I/O: no tokio, no clock, no sockets. The edge peer drives it with tokio,
//! the tests drive it with virtual time, and the event simulator drives
//! thousands of them.
//!
//! ## Driver contract
//! 1. Every call takes `now`: milliseconds on a monotonic clock the driver
//!    owns. Randomness comes from the seed given to [`Core::new`].
//! 2. Feed every event through a `handle_*` method: a segment announced by
//!    the tracker ([`Core::handle_published`]), a neighbour's data channel
//!    opening or closing, a decoded peer frame, HTTP data / completion /
//!    failure, the player's position, an upload finishing.
//! 3. After each call, drain [`Core::poll_action`] and carry out every
//!    [`Action`] in order: send a frame, stream a segment slice to a peer
//!    (the driver paces the chunks on the channel's buffered amount and
//!    calls [`Core::handle_upload_done`]), start or cancel an HTTP GET,
//!    hand a verified segment to the player/cache, drop a bad peer.
//! 4. Call [`Core::handle_timeout`] when the time from
//!    [`Core::poll_timeout`] comes.
//!
//! ## The decisions it owns
//! - **What to fetch next**: segments of the wanted renditions ordered by
//!   playback deadline (`published + playback_delay`, or what the player's
//!   position says, whichever is sooner).
//! - **From whom**: a neighbour that announced it, with a free download
//!   slot, fastest first (an EWMA of each neighbour's delivery rate).
//! - **When a peer is too slow**: when its observed rate cannot finish the
//!   segment before `deadline − margin`, the transfer is cancelled and the
//!   rest is fetched with an HTTP `Range` (or from a faster neighbour).
//! - **When to use HTTP**: at once when the tracker made this viewer a first
//!   fetcher; otherwise at the last moment at which HTTP still meets the
//!   deadline (`deadline − margin − size / http_rate`), so the swarm gets
//!   every chance first but playback never waits for it.
//! - **Resuming**: a partial segment keeps its bytes; the next source
//!   (another peer or HTTP `Range`) starts at the first missing byte.
//! - **The tracker's stripe plan** ([`Core::handle_stripes`]): a segment
//!   announced after a plan arrived has each stripe (a run of whole
//!   blocks) fetched over HTTP at once, asked of the planned neighbour at
//!   once, or left to the rules above. A planned child's request is served
//!   as the bytes arrive, outside the upload slots, and bytes a child waits
//!   for that nothing brings are fetched over HTTP at once.
//! - **What to serve**: requests for held segments, within `upload_slots`
//!   concurrent uploads and an upload budget (bytes per second); others get
//!   `busy` or `not_found`.
//! - **What to keep**: the newest `window_segments` of each rendition.
//! - **Bad neighbours**: bytes whose SHA-256 differs from the origin's hash
//!   are never delivered; the neighbours that sent them are dropped and
//!   reported. Protocol violations (chunks nobody asked for, lying totals,
//!   request floods) also drop the neighbour.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom as _;
use swarmcast_proto::tracker::StripeSource;
use swarmcast_proto::wire::{Frame, RejectReason};
use swarmcast_proto::{PeerId, RenditionId, SegmentMeta, Seq, Sha256Digest};

/// Milliseconds on the driver's monotonic clock.
pub type Millis = u64;

/// What this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A viewer playing one rendition.
    Viewer {
        /// The rendition it plays.
        rendition: RenditionId,
    },
    /// A relay: plays nothing, fetches every rendition to serve it.
    Relay,
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Viewer or relay.
    pub mode: Mode,
    /// Segments kept per rendition.
    pub window_segments: usize,
    /// Time from a segment's publication to the moment the player needs it
    /// (a player three target durations behind live needs a new segment
    /// about two durations after it is published).
    pub playback_delay_ms: Millis,
    /// Safety margin before a deadline.
    pub margin_ms: Millis,
    /// HTTP throughput assumed until one is measured, bytes per ms.
    pub http_rate: f64,
    /// Peer throughput assumed until one is measured, bytes per ms.
    pub peer_rate: f64,
    /// Concurrent downloads from one neighbour.
    pub downloads_per_peer: usize,
    /// Concurrent downloads in all.
    pub max_downloads: usize,
    /// Concurrent uploads in all (at most).
    pub upload_slots: usize,
    /// This node's uplink, bytes per ms (0 = unknown). When known, fewer
    /// uploads run at once, each at twice the media rate at least: a
    /// receiver gets the whole segment sooner and becomes a source sooner
    /// (store-and-forward relaying doubles the holders per transfer time
    /// with one upload at a time; six uploads splitting a thin uplink make
    /// every transfer slow).
    pub upload_rate: f64,
    /// Upload budget, bytes per second (0 = unlimited).
    pub upload_budget: u64,
    /// Relay a segment block by block before holding all of it, when the
    /// origin's record has block hashes: each block is checked against its
    /// hash, then streamed to the neighbours that asked (cut-through).
    pub cut_through: bool,
    /// Requests a neighbour may send per second before it is dropped.
    pub max_requests_per_sec: u32,
    /// With the origin's block hashes and `cut_through`, a segment is asked
    /// of neighbours in pieces of this many blocks, from up to
    /// `sources_per_segment` holders at once, the next piece queued behind
    /// the one in flight (0: the whole missing range from one holder, the
    /// default). A holder's upload then lasts a piece, not a segment, and a
    /// viewer's download is spread over several uplinks; in the simulator
    /// (docs/benchmarks/simulator.md) pieces of 2 blocks from 4 holders
    /// lowered offload at N = 100, so they are off until the requests and
    /// busy answers they multiply are tamed.
    pub piece_blocks: u32,
    /// Holders one segment is fetched from at once (pieces).
    pub sources_per_segment: usize,
}

impl CoreConfig {
    /// Defaults for a viewer of `rendition` with 2-second segments.
    pub fn viewer(rendition: RenditionId) -> Self {
        Self {
            mode: Mode::Viewer { rendition },
            window_segments: 30,
            playback_delay_ms: 4000,
            margin_ms: 500,
            http_rate: 500.0,
            peer_rate: 2000.0,
            downloads_per_peer: 3,
            max_downloads: 6,
            upload_slots: 6,
            upload_rate: 0.0,
            upload_budget: 0,
            cut_through: true,
            max_requests_per_sec: 100,
            piece_blocks: 0,
            sources_per_segment: 1,
        }
    }

    /// Defaults for a relay: every rendition, more upload.
    pub fn relay() -> Self {
        Self {
            mode: Mode::Relay,
            upload_slots: 32,
            max_downloads: 12,
            ..Self::viewer(RenditionId::new("relay").expect("a valid id"))
        }
    }
}

/// Where a segment's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// HTTP only.
    Http,
    /// Peers only.
    Peers,
    /// Both (a transfer resumed from one to the other).
    Mixed,
}

/// Why a neighbour is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It sent bytes that do not match the origin's hash.
    HashMismatch,
    /// It broke the wire protocol (unrequested chunks, lying totals...).
    Protocol,
    /// It sent more requests than allowed.
    RequestFlood,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a frame to a neighbour.
    Send {
        /// Recipient.
        peer: PeerId,
        /// The frame.
        frame: Frame,
    },
    /// Stream `data[from..to]` of a held segment to a neighbour as chunk
    /// frames, paced on the channel; then call `handle_upload_done`.
    Serve {
        /// Recipient.
        peer: PeerId,
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
        /// The whole segment.
        data: Bytes,
        /// First byte to send.
        from: u32,
        /// One past the last byte to send.
        to: u32,
    },
    /// Stop a `Serve` (the neighbour cancelled).
    StopServing {
        /// Recipient.
        peer: PeerId,
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
    },
    /// Start an HTTP GET of bytes `[from, to)` of a segment (with
    /// `Range: bytes=from-(to-1)` unless that is the whole segment); report
    /// with `handle_http_*` and this `req`.
    HttpGet {
        /// Request id.
        req: u64,
        /// The segment's record (its id gives the URL).
        meta: Arc<SegmentMeta>,
        /// First byte wanted.
        from: u64,
        /// One past the last byte wanted.
        to: u64,
    },
    /// Abort an HTTP GET.
    HttpCancel {
        /// Request id.
        req: u64,
    },
    /// A segment is complete and matches the origin's hash.
    Complete {
        /// Its record.
        meta: Arc<SegmentMeta>,
        /// The bytes.
        data: Bytes,
        /// Where they came from.
        source: Source,
    },
    /// A segment left the window (tell the tracker `lost`).
    Evicted {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
    },
    /// Close the data channel to this neighbour and report it.
    DropPeer {
        /// The neighbour.
        peer: PeerId,
        /// Why.
        reason: DropReason,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Media bytes received over HTTP.
    pub http_bytes: u64,
    /// Media bytes received from peers (before verification).
    pub p2p_bytes: u64,
    /// Media bytes handed to peers for upload.
    pub uploaded_bytes: u64,
    /// Segments completed and verified.
    pub segments: u64,
    /// Segments not complete at their deadline.
    pub late: u64,
    /// Assemblies whose hash did not match.
    pub hash_failures: u64,
    /// Neighbours dropped.
    pub peers_dropped: u64,
    /// Peer transfers given up for being too slow.
    pub slow_transfers: u64,
    /// Requests refused (busy, not found, bad range).
    pub rejected_requests: u64,
    /// Frames that broke the protocol.
    pub protocol_errors: u64,
}

/// A peer download in progress.
#[derive(Debug, Clone)]
struct PeerJob {
    peer: PeerId,
    from: u64,
    next: u64,
    end: u64,
    started: Millis,
    first_byte: Option<Millis>,
    /// A stripe asked of the neighbour the tracker's plan names, at once:
    /// its bytes come as the neighbour's own copy arrives, so there is no
    /// first-byte timer; it is given up when HTTP must take over.
    planned: bool,
}

#[derive(Debug, Clone)]
struct HttpJob {
    req: u64,
    from: u64,
    next: u64,
    end: u64,
    started: Millis,
}

/// Sorted, disjoint, non-touching byte ranges `[a, b)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn insert(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (mut a, mut b) = (a, b);
        // Merge every range that overlaps or touches [a, b).
        self.0.retain(|&(x, y)| {
            if y < a || x > b {
                true
            } else {
                a = a.min(x);
                b = b.max(y);
                false
            }
        });
        let i = self.0.partition_point(|&(x, _)| x < a);
        self.0.insert(i, (a, b));
    }

    fn remove(&mut self, a: u64, b: u64) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(x, y) in &self.0 {
            if y <= a || x >= b {
                out.push((x, y));
                continue;
            }
            if x < a {
                out.push((x, a));
            }
            if y > b {
                out.push((b, y));
            }
        }
        self.0 = out;
    }

    /// Every byte of `[a, b)` is in.
    fn covers(&self, a: u64, b: u64) -> bool {
        a >= b || self.0.iter().any(|&(x, y)| x <= a && b <= y)
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|&(x, y)| y - x).sum()
    }

    /// Bytes in, within `[a, b)`.
    fn total_within(&self, a: u64, b: u64) -> u64 {
        self.0
            .iter()
            .map(|&(x, y)| y.min(b).saturating_sub(x.max(a)))
            .sum()
    }

    /// The end of the run that starts at `a` (`a` when `a` is not in).
    fn run_end(&self, a: u64) -> u64 {
        self.0
            .iter()
            .find(|&&(x, y)| x <= a && a < y)
            .map_or(a, |&(_, y)| y)
    }
}

#[derive(Debug)]
struct Assembly {
    buf: BytesMut,
    /// Bytes present.
    got: Ranges,
    /// Peer downloads under way, each of its own range.
    jobs: Vec<PeerJob>,
    http: Option<HttpJob>,
    from_http: bool,
    from_peers: Vec<PeerId>,
    /// Neighbours that refused or failed this segment.
    tried: BTreeSet<PeerId>,
    /// Bytes whose blocks matched their hashes.
    verified: Ranges,
    /// Per block, the neighbours whose bytes are in it (to blame the right
    /// ones for a block that does not match).
    block_peers: Vec<Vec<PeerId>>,
    /// Neighbours served as blocks are verified (cut-through).
    streams: Vec<Stream>,
}

/// The assembly of segment `seq` of `r`, while it is still arriving.
fn missing(
    segs: &mut BTreeMap<RenditionId, BTreeMap<Seq, Seg>>,
    r: RenditionId,
    seq: Seq,
) -> Option<&mut Assembly> {
    match &mut segs.get_mut(&r)?.get_mut(&seq)?.status {
        Status::Missing(a) => Some(a),
        Status::Held(_) => None,
    }
}

impl Assembly {
    fn new(size: u64) -> Self {
        Self {
            buf: BytesMut::zeroed(size as usize),
            got: Ranges::default(),
            jobs: Vec::new(),
            http: None,
            from_http: false,
            from_peers: Vec::new(),
            tried: BTreeSet::new(),
            verified: Ranges::default(),
            block_peers: Vec::new(),
            streams: Vec::new(),
        }
    }

    /// Bytes in or being fetched (by a neighbour or HTTP).
    fn taken(&self) -> Ranges {
        let mut taken = self.got.clone();
        for j in &self.jobs {
            taken.insert(j.next, j.end);
        }
        if let Some(h) = &self.http {
            taken.insert(h.next, h.end);
        }
        taken
    }

    /// The first range of `[0, size)` that is neither in nor being fetched.
    fn first_gap(&self, size: u64) -> Option<(u64, u64)> {
        let taken = self.taken();
        let mut at = 0;
        for &(x, y) in &taken.0 {
            if at < x {
                return Some((at, x.min(size)));
            }
            at = at.max(y);
        }
        (at < size).then_some((at, size))
    }

    /// The ranges of `[0, size)` neither in nor being fetched, in order.
    fn gaps(&self, size: u64) -> Vec<(u64, u64)> {
        let taken = self.taken();
        let mut out = Vec::new();
        let mut at = 0;
        for &(x, y) in &taken.0 {
            if at < x.min(size) {
                out.push((at, x.min(size)));
            }
            at = at.max(y);
        }
        if at < size {
            out.push((at, size));
        }
        out
    }

    /// Bytes still missing.
    fn missing_bytes(&self, size: u64) -> u64 {
        size.saturating_sub(self.got.total())
    }

    /// Writes `data` at `offset` (sent by `peer`, or HTTP when `None`).
    fn write(&mut self, offset: u64, data: &[u8], peer: Option<&PeerId>, block: u64) {
        let start = offset as usize;
        self.buf[start..start + data.len()].copy_from_slice(data);
        let end = offset + data.len() as u64;
        self.got.insert(offset, end);
        let Some(peer) = peer else {
            return;
        };
        if !self.from_peers.contains(peer) {
            self.from_peers.push(peer.clone());
        }
        if block == 0 || end == offset {
            return;
        }
        let last = ((end - 1) / block) as usize;
        if self.block_peers.len() <= last {
            self.block_peers.resize(last + 1, Vec::new());
        }
        for b in &mut self.block_peers[(offset / block) as usize..=last] {
            if !b.contains(peer) {
                b.push(peer.clone());
            }
        }
    }

    /// Stops this segment's HTTP fetch and peer downloads, if any; the
    /// peers are told to stop sending.
    fn stop_sources(
        &mut self,
        r: RenditionId,
        seq: Seq,
        http_reqs: &mut HashMap<u64, (RenditionId, Seq)>,
        peers: &mut BTreeMap<PeerId, Neighbour>,
        actions: &mut VecDeque<Action>,
    ) {
        if let Some(h) = self.http.take() {
            http_reqs.remove(&h.req);
            actions.push_back(Action::HttpCancel { req: h.req });
        }
        for j in self.jobs.drain(..) {
            if let Some(n) = peers.get_mut(&j.peer) {
                n.downloads = n.downloads.saturating_sub(1);
            }
            actions.push_back(Action::Send {
                peer: j.peer,
                frame: Frame::Cancel { rendition: r, seq },
            });
        }
    }
}

/// A neighbour served from a segment still arriving: bytes `[next, end)`
/// are still to be handed to its link.
#[derive(Debug)]
struct Stream {
    peer: PeerId,
    next: u64,
    end: u64,
    /// Asked for before any of its bytes were here (a plan's stripe).
    early: bool,
}

#[derive(Debug)]
// A segment is Missing while it arrives and Held for the rest of its time
// in the window; boxing the assembly would add an allocation per segment.
#[allow(clippy::large_enum_variant)]
enum Status {
    Missing(Assembly),
    Held(Bytes),
}

#[derive(Debug)]
struct Seg {
    meta: Arc<SegmentMeta>,
    deadline: Millis,
    first_fetch: bool,
    late_counted: bool,
    /// Neighbours were told we have it (early, with cut-through).
    announced: bool,
    status: Status,
}

#[derive(Debug)]
struct Neighbour {
    has: BTreeMap<RenditionId, BTreeSet<Seq>>,
    /// Delivery rate, bytes per ms (EWMA), once measured.
    rate: Option<f64>,
    downloads: usize,
    uploads: BTreeSet<(RenditionId, Seq)>,
    requests: VecDeque<Millis>,
    busy_until: Millis,
    /// A request for a segment this neighbour is still being served (the
    /// next piece): it is served when that upload ends.
    queued: Option<(RenditionId, Seq, u32, u32)>,
}

/// The state machine of one viewer or relay.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    rng: SmallRng,
    segs: BTreeMap<RenditionId, BTreeMap<Seq, Seg>>,
    peers: BTreeMap<PeerId, Neighbour>,
    http_reqs: HashMap<u64, (RenditionId, Seq)>,
    next_req: u64,
    http_rate: f64,
    /// HTTP request → first byte, ms (EWMA of what was measured; 0 until
    /// then). A fallback starts this much earlier: on an uplink busy with
    /// uploads the request and its acknowledgements queue behind them.
    http_latency: f64,
    uploads: usize,
    budget_tokens: f64,
    budget_at: Millis,
    actions: VecDeque<Action>,
    stats: Stats,
    /// The latest `now` seen.
    now: Millis,
    /// The tracker's stripe plan per rendition.
    stripes: BTreeMap<RenditionId, Vec<StripeSource>>,
    /// Neighbours the plan gives this node's stripes to, per rendition.
    children: BTreeMap<RenditionId, BTreeSet<PeerId>>,
    /// Requests for segments not yet announced to us by the tracker (a
    /// neighbour's plan can reach it first): served once announced.
    held: VecDeque<HeldRequest>,
}

/// A request for a segment this node does not know yet.
#[derive(Debug, Clone)]
struct HeldRequest {
    peer: PeerId,
    rendition: RenditionId,
    seq: Seq,
    offset: u32,
    length: u32,
    at: Millis,
}

/// How long a request for a segment not yet known is held.
const HOLD_MS: Millis = 2000;
/// Requests held at once.
const MAX_HELD: usize = 64;
/// Streams of bytes still on their way at once (beyond the upload slots:
/// the plan's stripes; the tracker plans them within the uplink, up to 4
/// children per stripe, and two or three segments overlap). 16 refused a
/// broadband peer's children past the 16th: the mobile scenario (1,000,
/// 120 s) went from 78.1 % to 88.5 % offload with 128.
const MAX_EARLY_STREAMS: usize = 128;

/// How long a neighbour that answered `busy` is not asked again.
const BUSY_BACKOFF_MS: Millis = 500;
/// A peer that has sent no byte this long after a request is too slow.
const FIRST_BYTE_MS: Millis = 400;
/// A transfer's rate is judged over at least this long after its first
/// byte (a rate taken over the request's round trip and the first chunk
/// alone undershoots, and cancels transfers that would finish in time).
const MEASURE_MS: Millis = 300;

impl Core {
    /// A core with no segment and no neighbour.
    pub fn new(cfg: CoreConfig, seed: u64) -> Self {
        let http_rate = cfg.http_rate;
        Self {
            rng: SmallRng::seed_from_u64(seed),
            segs: BTreeMap::new(),
            peers: BTreeMap::new(),
            http_reqs: HashMap::new(),
            next_req: 1,
            http_rate,
            http_latency: 0.0,
            uploads: 0,
            budget_tokens: cfg.upload_budget as f64,
            budget_at: 0,
            actions: VecDeque::new(),
            stats: Stats::default(),
            now: 0,
            stripes: BTreeMap::new(),
            children: BTreeMap::new(),
            held: VecDeque::new(),
            cfg,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A held segment (for the local HLS endpoint or a cache).
    pub fn segment(&self, rendition: &RenditionId, seq: Seq) -> Option<(Arc<SegmentMeta>, Bytes)> {
        let s = self.segs.get(rendition)?.get(&seq)?;
        match &s.status {
            Status::Held(b) => Some((s.meta.clone(), b.clone())),
            Status::Missing(_) => None,
        }
    }

    /// Records of the live window of a rendition, oldest first.
    pub fn window(&self, rendition: &RenditionId) -> Vec<Arc<SegmentMeta>> {
        self.segs
            .get(rendition)
            .map(|m| m.values().map(|s| s.meta.clone()).collect())
            .unwrap_or_default()
    }

    fn wants(&self, r: &RenditionId) -> bool {
        match &self.cfg.mode {
            Mode::Viewer { rendition } => rendition == r,
            Mode::Relay => true,
        }
    }

    /// The tracker announced a segment (`first_fetch`: this node is one of
    /// its first fetchers). The hash in `meta` comes from the origin.
    pub fn handle_published(&mut self, now: Millis, meta: SegmentMeta, first_fetch: bool) {
        let r = meta.id.rendition;
        let seq = meta.id.seq;
        if meta.size == 0 || meta.size > u64::from(swarmcast_proto::wire::MAX_SEGMENT_SIZE) {
            return;
        }
        // A viewer keeps only its own rendition: it can neither play nor
        // serve the others.
        if !self.wants(&r) {
            return;
        }
        let window = self.cfg.window_segments;
        let deadline = now + self.cfg.playback_delay_ms;
        let by_seq = self.segs.entry(r).or_default();
        if let Some(existing) = by_seq.get_mut(&seq) {
            if existing.meta.sha256 == meta.sha256 {
                existing.first_fetch |= first_fetch;
                self.schedule(now);
                return;
            }
            // The origin re-published this id with other bytes: its record wins.
            by_seq.remove(&seq);
        }
        if by_seq.len() >= window && by_seq.first_key_value().is_some_and(|(&o, _)| seq < o) {
            return; // older than everything kept
        }
        let size = meta.size;
        by_seq.insert(
            seq,
            Seg {
                meta: Arc::new(meta),
                deadline,
                first_fetch,
                late_counted: false,
                announced: false,
                status: Status::Missing(Assembly::new(size)),
            },
        );
        self.evict(r);
        self.start_stripes(now, r, seq);
        self.serve_held(now, r, seq);
        self.schedule(now);
    }

    /// The tracker's stripe plan for rendition `r` (see
    /// [`swarmcast_proto::tracker::ServerMsg::Stripes`]); it applies to
    /// segments announced from now on.
    pub fn handle_stripes(
        &mut self,
        now: Millis,
        r: RenditionId,
        sources: Vec<StripeSource>,
        children: Vec<PeerId>,
    ) {
        self.now = self.now.max(now);
        if sources.is_empty() || sources.len() > swarmcast_proto::tracker::MAX_STRIPES {
            self.stripes.remove(&r);
            self.children.remove(&r);
        } else {
            self.stripes.insert(r, sources);
            self.children.insert(r, children.into_iter().collect());
        }
    }

    /// Starts the planned sources of a segment just announced: HTTP for the
    /// stripes the plan gives the origin, a request to the named neighbour
    /// for the others (it streams the stripe as its own copy arrives).
    fn start_stripes(&mut self, now: Millis, r: RenditionId, seq: Seq) {
        let Some(sources) = self.stripes.get(&r).cloned() else {
            return;
        };
        let Some(seg) = self.segs.get(&r).and_then(|m| m.get(&seq)) else {
            return;
        };
        let meta = seg.meta.clone();
        let Some(blocks) = meta.block_hashes().filter(|_| self.cfg.cut_through) else {
            return;
        };
        let n = sources.len() as u64;
        let bs = u64::from(blocks.size);
        let count = meta.size.div_ceil(bs);
        let range = |k: u64| {
            let (a, b) = (k * count / n, (k + 1) * count / n);
            (a * bs, (b * bs).min(meta.size))
        };
        // One HTTP fetch per segment: the first run of origin stripes.
        let mut http: Option<(u64, u64)> = None;
        for (k, src) in sources.iter().enumerate() {
            let (a, b) = range(k as u64);
            if a >= b {
                continue;
            }
            match src {
                StripeSource::Origin => match &mut http {
                    None => http = Some((a, b)),
                    Some((_, e)) if *e == a => *e = b,
                    Some(_) => {}
                },
                StripeSource::Peer { peer_id } => {
                    if self.peers.contains_key(peer_id) {
                        self.start_peer(now, r, seq, peer_id.clone(), a, b, true);
                    }
                }
                StripeSource::Swarm => {}
            }
        }
        if let Some((a, b)) = http {
            self.start_http(now, r, seq, a, b);
        }
    }

    /// Serves the held requests for a segment just announced.
    fn serve_held(&mut self, now: Millis, r: RenditionId, seq: Seq) {
        if !self.held.iter().any(|h| h.rendition == r && h.seq == seq) {
            return;
        }
        let (ready, rest): (VecDeque<HeldRequest>, VecDeque<HeldRequest>) =
            std::mem::take(&mut self.held)
                .into_iter()
                .partition(|h| h.rendition == r && h.seq == seq);
        self.held = rest;
        for h in ready {
            if self.peers.contains_key(&h.peer) {
                self.serve_request(now, &h.peer, h.rendition, h.seq, h.offset, h.length);
            }
        }
    }

    fn evict(&mut self, r: RenditionId) {
        let window = self.cfg.window_segments;
        let Some(by_seq) = self.segs.get_mut(&r) else {
            return;
        };
        while by_seq.len() > window {
            let Some((seq, seg)) = by_seq.pop_first() else {
                break;
            };
            match seg.status {
                Status::Held(_) => self
                    .actions
                    .push_back(Action::Evicted { rendition: r, seq }),
                Status::Missing(mut a) => {
                    a.stop_sources(
                        r,
                        seq,
                        &mut self.http_reqs,
                        &mut self.peers,
                        &mut self.actions,
                    );
                    for st in a.streams {
                        if let Some(n) = self.peers.get_mut(&st.peer) {
                            if n.uploads.remove(&(r, seq)) {
                                self.uploads = self.uploads.saturating_sub(1);
                            }
                        }
                        self.actions.push_back(Action::StopServing {
                            peer: st.peer,
                            rendition: r,
                            seq,
                        });
                    }
                }
            }
        }
    }

    /// The player will need `seq` of its rendition at `needed_at` (and the
    /// following segments one duration apart). A request from a local
    /// player for a segment not yet held passes `needed_at = now`.
    pub fn handle_playhead(&mut self, now: Millis, seq: Seq, needed_at: Millis) {
        let Mode::Viewer { rendition } = self.cfg.mode else {
            return;
        };
        if let Some(by_seq) = self.segs.get_mut(&rendition) {
            for (&s, seg) in by_seq.range_mut(seq..) {
                let d = needed_at + (s - seq) * u64::from(seg.meta.duration_ms);
                seg.deadline = seg.deadline.min(d);
            }
        }
        self.schedule(now);
    }

    /// A neighbour's data channel opened: it gets our have-maps.
    pub fn handle_peer_up(&mut self, now: Millis, peer: PeerId) {
        self.peers.entry(peer.clone()).or_insert_with(|| Neighbour {
            has: BTreeMap::new(),
            rate: None,
            downloads: 0,
            uploads: BTreeSet::new(),
            requests: VecDeque::new(),
            busy_until: 0,
            queued: None,
        });
        for (r, by_seq) in &self.segs {
            let held: Vec<Seq> = by_seq
                .iter()
                .filter(|(_, s)| matches!(s.status, Status::Held(_)))
                .map(|(&q, _)| q)
                .collect();
            if let (Some(&base), Some(&last)) = (held.first(), held.last()) {
                let n = ((last - base) / 8 + 1) as usize;
                if n > swarmcast_proto::wire::MAX_BITMAP {
                    continue;
                }
                let mut bits = vec![0u8; n];
                for q in held {
                    let i = (q - base) as usize;
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                self.actions.push_back(Action::Send {
                    peer: peer.clone(),
                    frame: Frame::HaveMap {
                        rendition: *r,
                        base_seq: base,
                        bitmap: Bytes::from(bits),
                    },
                });
            }
        }
        self.schedule(now);
    }

    /// A neighbour's data channel closed (or the neighbour was dropped):
    /// its transfers resume elsewhere.
    pub fn handle_peer_down(&mut self, now: Millis, peer: &PeerId) {
        let Some(n) = self.peers.remove(peer) else {
            return;
        };
        self.uploads = self.uploads.saturating_sub(n.uploads.len());
        for by_seq in self.segs.values_mut() {
            for seg in by_seq.values_mut() {
                if let Status::Missing(a) = &mut seg.status {
                    a.jobs.retain(|j| &j.peer != peer);
                    a.streams.retain(|st| &st.peer != peer);
                }
            }
        }
        self.schedule(now);
    }

    fn drop_peer(&mut self, now: Millis, peer: &PeerId, reason: DropReason) {
        if self.peers.contains_key(peer) {
            self.stats.peers_dropped += 1;
            self.actions.push_back(Action::DropPeer {
                peer: peer.clone(),
                reason,
            });
            self.handle_peer_down(now, peer);
        }
    }

    /// A decoded frame from a neighbour.
    pub fn handle_frame(&mut self, now: Millis, peer: &PeerId, frame: Frame) {
        if !self.peers.contains_key(peer) {
            return;
        }
        match frame {
            Frame::HaveMap {
                rendition,
                base_seq,
                bitmap,
            } => {
                let window = self.cfg.window_segments;
                if let Some(n) = self.peers.get_mut(peer) {
                    let set = n.has.entry(rendition).or_default();
                    set.clear();
                    for (i, b) in bitmap.iter().enumerate() {
                        for j in 0..8u64 {
                            if b & (0x80 >> j) != 0 {
                                if let Some(q) = base_seq.checked_add(i as u64 * 8 + j) {
                                    set.insert(q);
                                }
                            }
                        }
                    }
                    while set.len() > window {
                        set.pop_first();
                    }
                }
                self.schedule(now);
            }
            Frame::Have { rendition, seq } => {
                let window = self.cfg.window_segments;
                if let Some(n) = self.peers.get_mut(peer) {
                    let set = n.has.entry(rendition).or_default();
                    set.insert(seq);
                    while set.len() > window {
                        set.pop_first();
                    }
                }
                self.schedule(now);
            }
            Frame::Request {
                rendition,
                seq,
                offset,
                length,
            } => self.on_request(now, peer, rendition, seq, offset, length),
            Frame::Cancel { rendition, seq } => {
                if let Some(a) = missing(&mut self.segs, rendition, seq) {
                    a.streams.retain(|st| &st.peer != peer);
                }
                if let Some(n) = self.peers.get_mut(peer) {
                    if n.queued
                        .is_some_and(|(r, q, _, _)| r == rendition && q == seq)
                    {
                        n.queued = None;
                    }
                    if n.uploads.remove(&(rendition, seq)) {
                        self.uploads = self.uploads.saturating_sub(1);
                        self.actions.push_back(Action::StopServing {
                            peer: peer.clone(),
                            rendition,
                            seq,
                        });
                    }
                }
                // It may be a source for us again.
                self.schedule(now);
            }
            Frame::Reject {
                rendition,
                seq,
                reason,
            } => {
                let mut had_job = false;
                if let Some(a) = missing(&mut self.segs, rendition, seq) {
                    let before = a.jobs.len();
                    a.jobs.retain(|j| &j.peer != peer);
                    if a.jobs.len() < before {
                        // A busy neighbour may be asked again after its
                        // back-off; one that lacks it or refuses, not.
                        if reason != RejectReason::Busy {
                            a.tried.insert(peer.clone());
                        }
                        had_job = true;
                    }
                }
                if let Some(n) = self.peers.get_mut(peer) {
                    if had_job {
                        n.downloads = n.downloads.saturating_sub(1);
                    }
                    match reason {
                        RejectReason::NotFound => {
                            if let Some(set) = n.has.get_mut(&rendition) {
                                set.remove(&seq);
                            }
                        }
                        RejectReason::Busy => n.busy_until = now + BUSY_BACKOFF_MS,
                        RejectReason::BadRequest => {}
                    }
                }
                self.schedule(now);
            }
            Frame::Chunk {
                rendition,
                seq,
                offset,
                total,
                data,
            } => self.on_chunk(now, peer, rendition, seq, offset, total, data),
        }
    }

    fn reject(&mut self, peer: &PeerId, rendition: RenditionId, seq: Seq, reason: RejectReason) {
        self.stats.rejected_requests += 1;
        self.actions.push_back(Action::Send {
            peer: peer.clone(),
            frame: Frame::Reject {
                rendition,
                seq,
                reason,
            },
        });
    }

    fn on_request(
        &mut self,
        now: Millis,
        peer: &PeerId,
        rendition: RenditionId,
        seq: Seq,
        offset: u32,
        length: u32,
    ) {
        let limit = self.cfg.max_requests_per_sec as usize;
        let flooding = match self.peers.get_mut(peer) {
            Some(n) => {
                n.requests.push_back(now);
                while n.requests.front().is_some_and(|&t| t + 1000 <= now) {
                    n.requests.pop_front();
                }
                n.requests.len() > limit
            }
            None => return,
        };
        if flooding {
            self.drop_peer(now, peer, DropReason::RequestFlood);
            return;
        }
        self.serve_request(now, peer, rendition, seq, offset, length);
    }

    /// Serves a request (or refuses it) once it passed the flood check.
    fn serve_request(
        &mut self,
        now: Millis,
        peer: &PeerId,
        rendition: RenditionId,
        seq: Seq,
        offset: u32,
        length: u32,
    ) {
        let Some(s) = self.segs.get(&rendition).and_then(|m| m.get(&seq)) else {
            // Not announced to us yet: a neighbour's plan may have reached
            // it first. A request just ahead of the newest segment waits.
            let newest = self
                .segs
                .get(&rendition)
                .and_then(|m| m.last_key_value())
                .map(|(&q, _)| q);
            let ahead = self.wants(&rendition)
                && newest.is_none_or(|n| seq > n && seq <= n.saturating_add(2));
            let dup = self
                .held
                .iter()
                .any(|h| &h.peer == peer && h.rendition == rendition && h.seq == seq);
            if ahead && !dup && self.held.len() < MAX_HELD {
                self.held.push_back(HeldRequest {
                    peer: peer.clone(),
                    rendition,
                    seq,
                    offset,
                    length,
                    at: now,
                });
            } else {
                self.reject(peer, rendition, seq, RejectReason::NotFound);
            }
            return;
        };
        let (len, duration_ms) = (s.meta.size, s.meta.duration_ms);
        let from = u64::from(offset);
        let to = if length == 0 {
            len
        } else {
            from.saturating_add(u64::from(length))
        };
        // A held segment, or (cut-through) one we announced while it
        // arrives; for a child of the plan, any of it (served as the bytes
        // arrive, outside the upload slots; bytes nothing brings yet are
        // fetched over HTTP at once, see `start`).
        let child = self
            .children
            .get(&rendition)
            .is_some_and(|c| c.contains(peer));
        let (data, early) = match &s.status {
            Status::Held(b) => (Some(b.clone()), child),
            Status::Missing(_) if child => (None, true),
            Status::Missing(_) if s.announced => (None, false),
            Status::Missing(_) => {
                self.reject(peer, rendition, seq, RejectReason::NotFound);
                return;
            }
        };
        // Bytes we are fetching from the asker itself: it lacks them too (a
        // cycle of neighbours waiting on each other); it may ask later.
        let from_asker = missing(&mut self.segs, rendition, seq).is_some_and(|a| {
            a.jobs.iter().any(|j| {
                &j.peer == peer
                    && u64::from(offset) < j.end
                    && (length == 0 || j.next < u64::from(offset) + u64::from(length))
            })
        });
        if from_asker {
            self.reject(peer, rendition, seq, RejectReason::Busy);
            return;
        }
        if from >= len || to > len {
            self.reject(peer, rendition, seq, RejectReason::BadRequest);
            return;
        }
        let slots = upload_slots(&self.cfg, len, duration_ms);
        if let Some(n) = self.peers.get_mut(peer) {
            if n.uploads.contains(&(rendition, seq)) {
                // The next piece while the last one is still going out: it
                // follows on the same channel.
                if n.queued.is_none() {
                    n.queued = Some((rendition, seq, offset, length));
                } else {
                    self.reject(peer, rendition, seq, RejectReason::Busy);
                }
                return;
            }
        }
        // Early streams are the plan's: outside the upload slots, bounded.
        let full = if early {
            self.early_streams() >= MAX_EARLY_STREAMS
        } else {
            self.uploads >= slots
        };
        if full || !self.take_budget(now, to - from) {
            self.reject(peer, rendition, seq, RejectReason::Busy);
            return;
        }
        if let Some(n) = self.peers.get_mut(peer) {
            n.uploads.insert((rendition, seq));
        }
        self.uploads += 1;
        let Some(data) = data else {
            // Still arriving: its link gets each verified block in turn.
            if let Some(a) = missing(&mut self.segs, rendition, seq) {
                a.streams.push(Stream {
                    peer: peer.clone(),
                    next: from,
                    end: to,
                    early,
                });
            }
            self.feed_streams(rendition, seq);
            if early {
                self.schedule(now);
            }
            return;
        };
        self.stats.uploaded_bytes += to - from;
        self.actions.push_back(Action::Serve {
            peer: peer.clone(),
            rendition,
            seq,
            data,
            from: from as u32,
            to: to as u32,
        });
    }

    fn early_streams(&self) -> usize {
        self.segs
            .values()
            .flat_map(|m| m.values())
            .filter_map(|s| match &s.status {
                Status::Missing(a) => Some(a.streams.iter().filter(|st| st.early).count()),
                Status::Held(_) => None,
            })
            .sum()
    }

    /// Hands the verified bytes of a segment still arriving to the links of
    /// the neighbours streaming it.
    fn feed_streams(&mut self, r: RenditionId, seq: Seq) {
        let Some(Assembly {
            buf,
            verified,
            streams,
            ..
        }) = missing(&mut self.segs, r, seq)
        else {
            return;
        };
        let ready = |st: &Stream| st.end.min(verified.run_end(st.next));
        if !streams.iter().any(|st| st.next < ready(st)) {
            return;
        }
        // The link slices `data[from..to]`; bytes not verified are never sent.
        let data = Bytes::copy_from_slice(buf);
        for st in streams.iter_mut() {
            let to = ready(st);
            if st.next < to {
                self.stats.uploaded_bytes += to - st.next;
                self.actions.push_back(Action::Serve {
                    peer: st.peer.clone(),
                    rendition: r,
                    seq,
                    data: data.clone(),
                    from: st.next as u32,
                    to: to as u32,
                });
                st.next = to;
            }
        }
    }

    /// Checks the whole blocks in `[from, to)` that are now in against the
    /// origin's block hashes; the first verified block makes the segment
    /// announced to neighbours (cut-through), and verified bytes go to the
    /// neighbours streaming it. A block that does not match: its senders
    /// are dropped (see `bad_block`).
    fn verify_blocks(&mut self, now: Millis, r: RenditionId, seq: Seq, from: u64, to: u64) {
        if !self.cfg.cut_through || from >= to {
            return;
        }
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let meta = seg.meta.clone();
        let Some(blocks) = meta.block_hashes() else {
            return;
        };
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        let size = u64::from(blocks.size);
        let mut any = false;
        for i in from / size..=(to - 1) / size {
            let (x, y) = (i * size, ((i + 1) * size).min(meta.size));
            if a.verified.covers(x, y) || !a.got.covers(x, y) {
                continue;
            }
            let ok = blocks
                .sha256
                .get(i as usize)
                .is_some_and(|h| Sha256Digest::of(&a.buf[x as usize..y as usize]) == *h);
            if !ok {
                self.bad_block(now, r, seq, i, x, y);
                return;
            }
            a.verified.insert(x, y);
            any = true;
        }
        if !any {
            return;
        }
        if !std::mem::replace(&mut seg.announced, true) {
            self.send_have(r, seq);
        }
        self.feed_streams(r, seq);
    }

    fn take_budget(&mut self, now: Millis, bytes: u64) -> bool {
        let budget = self.cfg.upload_budget;
        if budget == 0 {
            return true;
        }
        let dt = now.saturating_sub(self.budget_at) as f64 / 1000.0;
        self.budget_at = now;
        // One second of budget may accumulate.
        self.budget_tokens = (self.budget_tokens + dt * budget as f64).min(budget as f64);
        if self.budget_tokens <= 0.0 {
            return false;
        }
        // A segment may overdraw: the debt is paid before the next one.
        self.budget_tokens -= bytes as f64;
        true
    }

    /// An upload (a `Serve`) ended, sent or not.
    pub fn handle_upload_done(
        &mut self,
        now: Millis,
        peer: &PeerId,
        rendition: RenditionId,
        seq: Seq,
    ) {
        self.now = self.now.max(now);
        // A stream of a segment still arriving goes on until all of its
        // range has been handed over.
        if let Some(a) = missing(&mut self.segs, rendition, seq) {
            if a.streams
                .iter()
                .any(|st| &st.peer == peer && st.next < st.end)
            {
                return;
            }
            a.streams.retain(|st| &st.peer != peer);
        }
        let mut next = None;
        if let Some(n) = self.peers.get_mut(peer) {
            if n.uploads.remove(&(rendition, seq)) {
                self.uploads = self.uploads.saturating_sub(1);
            }
            next = n.queued.take();
        }
        if let Some((r, q, offset, length)) = next {
            self.serve_request(now, peer, r, q, offset, length);
        }
        self.schedule(now);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_chunk(
        &mut self,
        now: Millis,
        peer: &PeerId,
        rendition: RenditionId,
        seq: Seq,
        offset: u32,
        total: u32,
        data: Bytes,
    ) {
        let Some(seg) = self.segs.get_mut(&rendition).and_then(|m| m.get_mut(&seq)) else {
            // A segment that left the window while in flight: harmless.
            return;
        };
        let block = seg.meta.block_hashes().map_or(0, |b| u64::from(b.size));
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        let offset = u64::from(offset);
        // Pieces from one neighbour come in the order they were asked for.
        let Some(i) = a.jobs.iter().position(|j| &j.peer == peer) else {
            // Chunks nobody asked for (or after a cancel) are dropped; a
            // cancelled transfer may still have frames in flight.
            return;
        };
        let job = &a.jobs[i];
        if u64::from(total) != seg.meta.size
            || offset != job.next
            || offset + data.len() as u64 > job.end
        {
            self.stats.protocol_errors += 1;
            self.drop_peer(now, peer, DropReason::Protocol);
            return;
        }
        a.write(offset, &data, Some(peer), block);
        let job = &mut a.jobs[i];
        job.next += data.len() as u64;
        job.first_byte.get_or_insert(now);
        self.stats.p2p_bytes += data.len() as u64;
        if job.next >= job.end {
            let job = a.jobs.remove(i);
            // The piece queued behind it starts now.
            if let Some(next) = a.jobs.iter_mut().find(|j| &j.peer == peer) {
                next.started = now;
            }
            let elapsed = now.saturating_sub(job.started).max(1) as f64;
            let bytes = (job.end - job.from) as f64;
            if let Some(n) = self.peers.get_mut(peer) {
                n.downloads = n.downloads.saturating_sub(1);
                let r = bytes / elapsed;
                n.rate = Some(n.rate.map_or(r, |old| 0.7 * old + 0.3 * r));
            }
        }
        self.verify_blocks(now, rendition, seq, offset, offset + data.len() as u64);
        self.finish_if_complete(now, rendition, seq);
        self.schedule(now);
    }

    /// HTTP bytes of request `req`, in order from where it started.
    pub fn handle_http_data(&mut self, now: Millis, req: u64, data: &[u8]) {
        self.now = self.now.max(now);
        let Some(&(r, seq)) = self.http_reqs.get(&req) else {
            return;
        };
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        let Some(job) = a.http.as_mut().filter(|h| h.req == req) else {
            return;
        };
        let at = job.next;
        if at == job.from && !data.is_empty() {
            let sample = now.saturating_sub(job.started) as f64;
            self.http_latency = 0.7 * self.http_latency + 0.3 * sample;
        }
        let n = data.len().min(job.end.saturating_sub(at) as usize);
        job.next += n as u64;
        a.write(at, &data[..n], None, 0);
        a.from_http = true;
        self.stats.http_bytes += n as u64;
        self.verify_blocks(now, r, seq, at, at + n as u64);
    }

    /// HTTP request `req` finished.
    pub fn handle_http_done(&mut self, now: Millis, req: u64) {
        let Some((r, seq)) = self.http_reqs.remove(&req) else {
            return;
        };
        if let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) {
            if let Status::Missing(a) = &mut seg.status {
                if let Some(h) = a.http.take() {
                    let elapsed = now.saturating_sub(h.started).max(1) as f64;
                    let rate = (h.next - h.from) as f64 / elapsed;
                    if rate > 0.0 {
                        self.http_rate = 0.7 * self.http_rate + 0.3 * rate;
                    }
                }
            }
        }
        self.finish_if_complete(now, r, seq);
        self.schedule(now);
    }

    /// HTTP request `req` failed; it is retried while the deadline allows.
    pub fn handle_http_failed(&mut self, now: Millis, req: u64) {
        let Some((r, seq)) = self.http_reqs.remove(&req) else {
            return;
        };
        if let Some(a) = missing(&mut self.segs, r, seq) {
            a.http = None;
        }
        self.schedule(now);
    }

    fn finish_if_complete(&mut self, now: Millis, r: RenditionId, seq: Seq) {
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        if !a.got.covers(0, seg.meta.size) {
            return;
        }
        if Sha256Digest::of(&a.buf) != seg.meta.sha256 {
            self.bad_bytes(now, r, seq);
            return;
        }
        let data = std::mem::take(&mut a.buf).freeze();
        // Neighbours streaming it get the rest at once.
        for st in std::mem::take(&mut a.streams) {
            if st.next < st.end {
                self.stats.uploaded_bytes += st.end - st.next;
                self.actions.push_back(Action::Serve {
                    peer: st.peer,
                    rendition: r,
                    seq,
                    data: data.clone(),
                    from: st.next as u32,
                    to: st.end as u32,
                });
            }
        }
        let source = match (a.from_http, a.from_peers.is_empty()) {
            (true, true) => Source::Http,
            (false, _) => Source::Peers,
            (true, false) => Source::Mixed,
        };
        a.stop_sources(
            r,
            seq,
            &mut self.http_reqs,
            &mut self.peers,
            &mut self.actions,
        );
        seg.status = Status::Held(data.clone());
        self.stats.segments += 1;
        if now > seg.deadline && !seg.late_counted {
            self.stats.late += 1;
        }
        let meta = seg.meta.clone();
        self.actions
            .push_back(Action::Complete { meta, data, source });
        if !std::mem::replace(&mut seg.announced, true) {
            self.send_have(r, seq);
        }
    }

    /// Tells every neighbour we have `seq` (or, with cut-through, that its
    /// verified blocks can be streamed).
    fn send_have(&mut self, r: RenditionId, seq: Seq) {
        let mut peers: Vec<PeerId> = self.peers.keys().cloned().collect();
        peers.sort();
        for p in peers {
            self.actions.push_back(Action::Send {
                peer: p,
                frame: Frame::Have { rendition: r, seq },
            });
        }
    }

    /// The whole segment did not match the origin's hash (a record without
    /// block hashes): every peer that sent bytes of it is dropped and
    /// reported, and the segment starts over from the origin. Neighbours
    /// streaming it keep their place and get the bytes once verified again.
    fn bad_bytes(&mut self, now: Millis, r: RenditionId, seq: Seq) {
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        self.stats.hash_failures += 1;
        let guilty = std::mem::take(&mut a.from_peers);
        a.stop_sources(
            r,
            seq,
            &mut self.http_reqs,
            &mut self.peers,
            &mut self.actions,
        );
        a.buf = BytesMut::zeroed(seg.meta.size as usize);
        a.got = Ranges::default();
        a.verified = Ranges::default();
        a.block_peers.clear();
        a.from_http = false;
        // Start over from the origin, which is never wrong about itself.
        seg.first_fetch = true;
        for p in &guilty {
            a.tried.insert(p.clone());
        }
        for p in guilty {
            self.drop_peer(now, &p, DropReason::HashMismatch);
        }
    }

    /// Block `i` (bytes `[x, y)`) did not match its hash: the neighbours
    /// whose bytes are in it are dropped and reported, its bytes are
    /// fetched again, and the rest of the segment comes from the origin
    /// (which is never wrong about itself); verified blocks are kept.
    fn bad_block(&mut self, now: Millis, r: RenditionId, seq: Seq, i: u64, x: u64, y: u64) {
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        self.stats.hash_failures += 1;
        let guilty = a
            .block_peers
            .get_mut(i as usize)
            .map(std::mem::take)
            .unwrap_or_default();
        a.got.remove(x, y);
        // Their bytes in blocks not yet verified go too.
        let block = seg.meta.block_hashes().map_or(1, |b| u64::from(b.size));
        for (j, senders) in a.block_peers.iter_mut().enumerate() {
            let (bx, by) = (
                j as u64 * block,
                ((j as u64 + 1) * block).min(seg.meta.size),
            );
            if senders.iter().any(|p| guilty.contains(p)) && !a.verified.covers(bx, by) {
                a.got.remove(bx, by);
                senders.clear();
            }
        }
        if guilty.is_empty() {
            // Only HTTP bytes in it: fetch it again.
            if let Some(h) = a.http.take() {
                self.http_reqs.remove(&h.req);
                self.actions.push_back(Action::HttpCancel { req: h.req });
            }
        }
        seg.first_fetch = true;
        for p in &guilty {
            a.tried.insert(p.clone());
            a.from_peers.retain(|q| q != p);
        }
        for p in guilty {
            self.drop_peer(now, &p, DropReason::HashMismatch);
        }
        self.schedule(now);
    }

    /// Time of the next check, if any is due.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let now = self.now;
        // Only future times: what is already due was handled by the last
        // call, or waits for an event (a free download slot).
        let mut note = |t: Millis| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for (r, by_seq) in &self.segs {
            if !self.wants(r) {
                continue;
            }
            for seg in by_seq.values() {
                let Status::Missing(a) = &seg.status else {
                    continue;
                };
                // When each transfer would turn too slow if no more bytes
                // came (a byte that comes is an input, and checks again).
                let give_up = seg.deadline.saturating_sub(self.cfg.margin_ms);
                if !a.jobs.is_empty() {
                    note(give_up);
                }
                for j in &a.jobs {
                    match j.first_byte {
                        None if j.planned => {
                            note(self.http_takes_over(seg.deadline, j.end - j.next))
                        }
                        None => note(j.started + FIRST_BYTE_MS),
                        Some(first) if now.saturating_sub(first) < MEASURE_MS => {
                            note(first + MEASURE_MS)
                        }
                        Some(first) => {
                            // t + left·(t − first)/got + margin > deadline
                            let got = (j.next - j.from).max(1) as f64;
                            let left = (j.end - j.next) as f64;
                            let t =
                                (give_up as f64 + left * first as f64 / got) / (1.0 + left / got);
                            note((t.floor() as Millis + 1).max(now + 1));
                        }
                    }
                }
                if a.http.is_none() {
                    note(self.http_start(seg, a));
                }
                // A holder asked again after its busy back-off.
                if a.jobs.iter().filter(|j| !j.planned).count()
                    < self.cfg.sources_per_segment.max(1)
                {
                    for n in self.peers.values() {
                        if n.busy_until > now
                            && n.has.get(r).is_some_and(|h| h.contains(&seg.meta.id.seq))
                        {
                            note(n.busy_until);
                        }
                    }
                }
                if !seg.late_counted {
                    note(seg.deadline);
                }
            }
        }
        if let Some(h) = self.held.front() {
            note(h.at + HOLD_MS);
        }
        next
    }

    /// When HTTP must take over `bytes` still to come from a planned
    /// neighbour to meet `deadline`.
    fn http_takes_over(&self, deadline: Millis, bytes: u64) -> Millis {
        http_takes_over(
            deadline,
            self.cfg.margin_ms,
            bytes,
            self.http_rate,
            self.http_latency,
        )
    }

    /// Checks progress and deadlines.
    pub fn handle_timeout(&mut self, now: Millis) {
        while self.held.front().is_some_and(|h| h.at + HOLD_MS <= now) {
            if let Some(h) = self.held.pop_front() {
                if self.peers.contains_key(&h.peer) {
                    self.reject(&h.peer, h.rendition, h.seq, RejectReason::NotFound);
                }
            }
        }
        for by_seq in self.segs.values_mut() {
            for seg in by_seq.values_mut() {
                if matches!(seg.status, Status::Missing(_))
                    && now >= seg.deadline
                    && !seg.late_counted
                {
                    seg.late_counted = true;
                    self.stats.late += 1;
                }
            }
        }
        self.schedule(now);
    }

    /// When HTTP must start to meet the deadline for the missing bytes.
    fn http_start(&self, seg: &Seg, a: &Assembly) -> Millis {
        if seg.first_fetch {
            return 0;
        }
        self.http_takes_over(seg.deadline, a.missing_bytes(seg.meta.size))
    }

    /// The scheduler: runs after every input.
    fn schedule(&mut self, now: Millis) {
        self.now = self.now.max(now);
        // Missing segments of wanted renditions, earliest deadline first.
        let mut todo: Vec<(Millis, RenditionId, Seq)> = Vec::new();
        let mut active = 0;
        for (r, by_seq) in &self.segs {
            if !self.wants(r) {
                continue;
            }
            for (&seq, seg) in by_seq {
                if let Status::Missing(a) = &seg.status {
                    // The plan's stripes take no download slot.
                    active += a.jobs.iter().filter(|j| !j.planned).count()
                        + usize::from(a.http.is_some());
                    todo.push((seg.deadline, *r, seq));
                }
            }
        }
        todo.sort();
        for (_, r, seq) in todo {
            self.check_progress(now, r, seq);
            // Sources for what is neither in nor being fetched, while there
            // are free download slots (a first fetch always starts).
            while (active < self.cfg.max_downloads || self.is_first_fetch(r, seq))
                && self.start(now, r, seq)
            {
                active += 1;
            }
        }
    }

    fn is_first_fetch(&self, r: RenditionId, seq: Seq) -> bool {
        self.segs
            .get(&r)
            .and_then(|m| m.get(&seq))
            .is_some_and(|s| s.first_fetch)
    }

    /// Gives up the peer transfers of a segment that cannot meet the
    /// deadline.
    fn check_progress(&mut self, now: Millis, r: RenditionId, seq: Seq) {
        let margin = self.cfg.margin_ms;
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return;
        };
        let deadline = seg.deadline;
        let Status::Missing(a) = &mut seg.status else {
            return;
        };
        let (http_rate, http_latency) = (self.http_rate, self.http_latency);
        let too_slow = |job: &PeerJob| {
            let remaining = (job.end - job.next) as f64;
            match job.first_byte {
                // A planned stripe waits for its source's own copy, until
                // HTTP must take over.
                None if job.planned => {
                    let bytes = job.end - job.next;
                    now >= http_takes_over(deadline, margin, bytes, http_rate, http_latency)
                }
                None => {
                    now.saturating_sub(job.started) >= FIRST_BYTE_MS || now + margin >= deadline
                }
                Some(first) if now.saturating_sub(first) < MEASURE_MS => now + margin >= deadline,
                Some(first) => {
                    let got = (job.next - job.from) as f64;
                    let rate = got / now.saturating_sub(first).max(1) as f64;
                    rate <= 0.0 || now + (remaining / rate) as Millis + margin > deadline
                }
            }
        };
        let (slow, keep): (Vec<PeerJob>, Vec<PeerJob>) = a.jobs.drain(..).partition(too_slow);
        a.jobs = keep;
        for job in slow {
            let peer = job.peer;
            a.tried.insert(peer.clone());
            self.stats.slow_transfers += 1;
            if let Some(n) = self.peers.get_mut(&peer) {
                n.downloads = n.downloads.saturating_sub(1);
                // Remember it as slow for the next choice.
                n.rate = Some(n.rate.map_or(0.0, |x| x * 0.5));
            }
            self.actions.push_back(Action::Send {
                peer,
                frame: Frame::Cancel { rendition: r, seq },
            });
        }
    }

    /// Starts one more source for the first range of a missing segment that
    /// is neither in nor being fetched; true if one started.
    fn start(&mut self, now: Millis, r: RenditionId, seq: Seq) -> bool {
        let Some(seg) = self.segs.get(&r).and_then(|m| m.get(&seq)) else {
            return false;
        };
        let Status::Missing(a) = &seg.status else {
            return false;
        };
        // Bytes the plan's children wait for that nothing brings any more
        // (their source failed): HTTP at once, or the whole subtree waits.
        let waiting = |st: &&Stream| st.early && st.next < st.end;
        let orphaned = a.streams.iter().any(|st| waiting(&st)) && {
            let taken = a.taken();
            a.streams
                .iter()
                .filter(waiting)
                .any(|st| !taken.covers(st.next, st.end))
        };
        let http_at = if orphaned {
            now
        } else {
            self.http_start(seg, a)
        };
        // Neither a neighbour (first fetch, or sources enough) nor HTTP (under
        // way, or not yet time) can start: done before looking for a gap.
        let pulls = a.jobs.iter().filter(|j| !j.planned).count();
        let peer_may = !seg.first_fetch && pulls < self.cfg.sources_per_segment.max(1);
        let http_may = a.http.is_none() && now >= http_at;
        if !(peer_may || http_may) {
            return false;
        }
        let size = seg.meta.size;
        let Some((from, gap_end)) = a.first_gap(size) else {
            return false;
        };
        let deadline = seg.deadline;
        // Pieces need the block hashes and cut-through (each piece checked
        // as it lands).
        let block = match seg.meta.block_hashes() {
            Some(b) if self.cfg.cut_through => u64::from(b.size),
            _ => 0,
        };
        if peer_may {
            // The fastest neighbour that has it, has a free slot, is not
            // already a source of it and has not failed it (cheapest
            // checks first).
            let mut holders: Vec<(&PeerId, f64)> = self
                .peers
                .iter()
                .filter(|(id, n)| {
                    n.downloads < self.cfg.downloads_per_peer
                        && n.busy_until <= now
                        && n.has.get(&r).is_some_and(|s| s.contains(&seq))
                        && !a.tried.contains(*id)
                        // One piece in flight and the next queued behind it;
                        // none beside a planned stripe (a cancel stops
                        // every transfer of the segment on that link).
                        && a.jobs.iter().filter(|j| &j.peer == *id).count() < 2
                        && !a.jobs.iter().any(|j| &j.peer == *id && j.planned)
                        // A neighbour fetching it from us is behind us.
                        && !a.streams.iter().any(|st| &st.peer == *id)
                        && !n.queued.is_some_and(|(qr, q, _, _)| qr == r && q == seq)
                })
                .map(|(id, n)| (id, n.rate.unwrap_or(self.cfg.peer_rate)))
                .collect();
            // A fixed order before the seeded shuffle: the map's own order
            // is not (same seed, same decisions).
            holders.sort_by(|x, y| x.0.cmp(y.0));
            holders.shuffle(&mut self.rng);
            holders.sort_by(|x, y| y.1.total_cmp(&x.1));
            if let Some((peer, rate)) = holders.first().map(|(p, r)| ((*p).clone(), *r)) {
                // A piece: whole blocks up to `piece_blocks` of them.
                let piece = u64::from(self.cfg.piece_blocks) * block;
                let to = if piece == 0 {
                    gap_end
                } else {
                    ((from / block) * block + piece).min(gap_end)
                };
                let eta =
                    now + ((to - from) as f64 / rate.max(1e-3)) as Millis + self.cfg.margin_ms;
                if eta <= deadline || now < http_at {
                    return self.start_peer(now, r, seq, peer, from, to, false);
                }
            }
        }
        let http_idle = a.http.is_none();
        if now >= http_at && http_idle {
            // One request for the gaps left (a plan's stripes given up
            // together would otherwise go one request after another, one
            // round trip each, at the deadline), unless the bytes already
            // in between outweigh the gaps.
            let mut to = gap_end;
            for (x, y) in a.gaps(size).into_iter().skip(1) {
                let job_between = a.jobs.iter().any(|j| j.next < x && j.end > to);
                if job_between || a.got.total_within(from, y) * 2 > y - from {
                    break;
                }
                to = y;
            }
            return self.start_http(now, r, seq, from, to);
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn start_peer(
        &mut self,
        now: Millis,
        r: RenditionId,
        seq: Seq,
        peer: PeerId,
        from: u64,
        to: u64,
        planned: bool,
    ) -> bool {
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return false;
        };
        let size = seg.meta.size;
        let Status::Missing(a) = &mut seg.status else {
            return false;
        };
        a.jobs.push(PeerJob {
            peer: peer.clone(),
            from,
            next: from,
            end: to,
            started: now,
            first_byte: None,
            planned,
        });
        if let Some(n) = self.peers.get_mut(&peer) {
            n.downloads += 1;
        }
        self.actions.push_back(Action::Send {
            peer,
            frame: Frame::Request {
                rendition: r,
                seq,
                offset: from as u32,
                // 0: to the end.
                length: if to >= size { 0 } else { (to - from) as u32 },
            },
        });
        true
    }

    fn start_http(&mut self, now: Millis, r: RenditionId, seq: Seq, from: u64, to: u64) -> bool {
        let req = self.next_req;
        let Some(seg) = self.segs.get_mut(&r).and_then(|m| m.get_mut(&seq)) else {
            return false;
        };
        let Status::Missing(a) = &mut seg.status else {
            return false;
        };
        self.next_req += 1;
        a.http = Some(HttpJob {
            req,
            from,
            next: from,
            end: to,
            started: now,
        });
        self.http_reqs.insert(req, (r, seq));
        self.actions.push_back(Action::HttpGet {
            req,
            meta: seg.meta.clone(),
            from,
            to,
        });
        true
    }
}

/// When HTTP must start to bring `bytes` by `deadline − margin`, at `rate`
/// bytes per ms after a first byte `latency` ms after the request.
fn http_takes_over(
    deadline: Millis,
    margin: Millis,
    bytes: u64,
    rate: f64,
    latency: f64,
) -> Millis {
    let need = (bytes as f64 / rate.max(1e-3) + latency).ceil() as Millis;
    deadline.saturating_sub(margin + need)
}

/// Uploads allowed at once for a segment of `size` bytes lasting
/// `duration_ms`: with a known uplink, as many as keep each one at twice the
/// media rate or more (at least one, at most `upload_slots`).
fn upload_slots(cfg: &CoreConfig, size: u64, duration_ms: u32) -> usize {
    if cfg.upload_rate <= 0.0 || size == 0 || duration_ms == 0 {
        return cfg.upload_slots;
    }
    let media_rate = size as f64 / f64::from(duration_ms);
    let fit = (cfg.upload_rate / (2.0 * media_rate)).floor() as usize;
    fit.clamp(1, cfg.upload_slots.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_split_and_cover() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30); // touches both: one range
        assert_eq!(r.0, vec![(10, 40)]);
        r.insert(5, 5); // empty: nothing
        r.insert(0, 3);
        assert_eq!(r.0, vec![(0, 3), (10, 40)]);
        assert!(r.covers(12, 40) && !r.covers(2, 11) && r.covers(7, 7));
        assert_eq!((r.run_end(0), r.run_end(3), r.run_end(15)), (3, 3, 40));
        r.remove(15, 25);
        assert_eq!(r.0, vec![(0, 3), (10, 15), (25, 40)]);
        r.remove(0, 100);
        assert_eq!((r.0.len(), r.total()), (0, 0));
    }

    #[test]
    fn the_first_gap_skips_what_is_in_or_being_fetched() {
        let mut a = Assembly::new(100);
        assert_eq!(a.first_gap(100), Some((0, 100)));
        a.got.insert(0, 10);
        a.http = Some(HttpJob {
            req: 1,
            from: 10,
            next: 15,
            end: 30,
            started: 0,
        });
        a.got.insert(10, 15);
        a.got.insert(50, 60);
        assert_eq!(a.first_gap(100), Some((30, 50)));
        a.got.insert(30, 50);
        assert_eq!(a.first_gap(100), Some((60, 100)));
        a.got.insert(60, 100);
        assert_eq!(a.first_gap(100), None);
        assert_eq!(a.missing_bytes(100), 15);
    }

    #[test]
    fn upload_slots_follow_the_uplink() {
        let mut cfg = CoreConfig::viewer(RenditionId::new("720p").expect("a valid id"));
        // A 2-s segment of 625,000 bytes: 312.5 bytes per ms of media.
        let (size, dur) = (625_000, 2000);
        // Unknown uplink: the configured slots.
        assert_eq!(upload_slots(&cfg, size, dur), 6);
        // 8 Mb/s = 1000 B/ms: one upload at 3.2× the media rate.
        cfg.upload_rate = 1000.0;
        assert_eq!(upload_slots(&cfg, size, dur), 1);
        // A thinner uplink still serves one at a time.
        cfg.upload_rate = 100.0;
        assert_eq!(upload_slots(&cfg, size, dur), 1);
        // 20 Mb/s = 2500 B/ms: four at 2× or more.
        cfg.upload_rate = 2500.0;
        assert_eq!(upload_slots(&cfg, size, dur), 4);
        // Loopback: capped by the configured slots.
        cfg.upload_rate = 125_000.0;
        assert_eq!(upload_slots(&cfg, size, dur), 6);
    }
}
