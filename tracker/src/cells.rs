//! Cells: one stream's audience split into sub-swarms.
//!
//! A stream whose audience passes `cell_viewers` sessions is split into
//! cells, each a whole [`Swarm`] core of its own: its own mesh (neighbours
//! are only ever introduced within a cell), its own dissemination plan and
//! first fetchers, its own coverage feedback. The origin's cost then grows
//! with the number of cells (each cell is seeded over HTTP by its own first
//! fetchers: about one copy per cell per segment with plain first fetchers,
//! a stripe's roots per cell with stripes), not with viewers; and the work
//! of one publish (selection, plans) is bounded by the cell's size.
//!
//! Rules:
//! - A joining viewer or relay takes the least-populated cell that has
//!   room; when every cell has `cell_viewers` members, a new cell opens.
//!   `cell_viewers = 0` keeps one cell (no split).
//! - A publisher is a member of every cell: a publish that cell 0 takes
//!   goes to each other cell (one cell 0 refuses is answered and counted
//!   once), and a cell opened later is joined by it at once and given its
//!   last [`REPLAY`] publishes per rendition in the order they came, so the
//!   newcomer gets the live edge as in any swarm. What the cores send to a
//!   publisher is delivered from cell 0 only (one welcome, one answer per
//!   message); its other messages go to cell 0 alone.
//! - Peer ids are unique across the stream; the session cap
//!   (`max_peers`) counts every cell.
//! - Cells are never merged: after an audience shrinks, joiners refill the
//!   emptiest cells first, but members stay where they are (moving them
//!   would mean new WebRTC links).
//!
//! Sans-IO like [`Swarm`]: the driver feeds [`Cells::join`],
//! [`Cells::handle`], [`Cells::leave`] and [`Cells::handle_timeout`] and
//! drains [`Cells::poll_output`], whose recipients are seats (the stream's
//! session numbers), not the cores' slots.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use swarmcast_proto::tracker::{
    ClientKind, ClientMsg, ErrorCode, MAX_CELLS, PeerConfig, ServerMsg,
};
use swarmcast_proto::{PeerId, RenditionId, SegmentMeta, StreamId};

use crate::stats::{SegmentStats, StreamStats};
use crate::swarm::{Counters, JoinRequest, Output, Recipients, Slot, Swarm, SwarmConfig};

/// A session's number in the stream (reused after it leaves).
pub type Seat = u32;

/// Publishes kept per rendition for a cell that opens later.
pub const REPLAY: usize = 8;

const NO_SEAT: Seat = Seat::MAX;

#[derive(Debug)]
struct Cell {
    core: Swarm,
    /// Viewers and relays (publishers are in every cell).
    members: usize,
    /// The seat of each of the core's slots.
    seat_of: Vec<Seat>,
}

#[derive(Debug)]
enum Member {
    /// A viewer or relay: one slot in one cell.
    One { cell: usize, slot: Slot },
    /// A publisher: a slot in every cell (by cell index; `None` where the
    /// cell refused it).
    Publisher {
        req: JoinRequest,
        slots: Vec<Option<Slot>>,
    },
    /// A tracker node feeding remote cell `cell` (1-based) with the
    /// stream's records; it reports the cell's members.
    Feeder { cell: u32 },
}

/// A redirected joiner counts toward its cell until a report of the cell
/// made this long (ms) after the redirect, which includes it if it came (a
/// redirected client reconnects at once)...
const ARRIVE_MS: u64 = 2_000;
/// ...or, when no report comes (a cell whose node never took it), this
/// long.
const PENDING_MS: u64 = 10_000;

/// A home takes feeders for cells up to this many beyond the highest it
/// knows: a home that restarted learns its cells from their feeders, and a
/// viewer naming a made-up cell number far away gets no cell fed.
pub const CELL_SLACK: u32 = 64;

/// A cell on another tracker node (or another task of this one), as its
/// feeders report it.
#[derive(Debug, Default)]
struct Remote {
    /// Each feeder session's last report (more than one while a cell moves
    /// between nodes; 0 until its first).
    reports: Vec<(Seat, u32)>,
    /// When each joiner sent there lately was redirected.
    pending: VecDeque<u64>,
}

impl Remote {
    fn members(&self) -> u32 {
        self.reports
            .iter()
            .fold(self.pending.len() as u32, |n, &(_, r)| n.saturating_add(r))
    }

    /// Forgets joiners redirected `age` ms or more before `now`.
    fn prune(&mut self, now: u64, age: u64) {
        while self
            .pending
            .front()
            .is_some_and(|&t| t.saturating_add(age) <= now)
        {
            self.pending.pop_front();
        }
    }
}

/// What a join comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Joined here, in this seat.
    Seat(Seat),
    /// Sent to a cell on another node (its number, 1-based).
    Redirect(u32),
}

/// One stream's cells.
#[derive(Debug)]
pub struct Cells {
    stream: StreamId,
    cfg: SwarmConfig,
    cell_viewers: usize,
    seed: u64,
    cells: Vec<Cell>,
    seats: Vec<Option<Member>>,
    free: Vec<Seat>,
    /// Viewers and relays in all cells.
    members: usize,
    publishers: usize,
    /// The last [`REPLAY`] publishes of each rendition that cell 0 took,
    /// in the order they came.
    recent: VecDeque<SegmentMeta>,
    out: VecDeque<Output>,
    /// Joins refused before reaching a cell, by error code.
    refused: BTreeMap<&'static str, u64>,
    /// Cells beyond cell 0 live elsewhere (`--tier-url`): `Some`, by cell
    /// number (only cells with a feeder or a recent joiner).
    remote: Option<BTreeMap<u32, Remote>>,
}

impl Cells {
    /// A stream with no session yet. `cell_viewers`: most viewers and
    /// relays per cell (0: one cell, however large).
    pub fn new(stream: StreamId, cfg: SwarmConfig, cell_viewers: usize, seed: u64) -> Self {
        Self {
            stream,
            cfg,
            cell_viewers,
            seed,
            cells: Vec::new(),
            seats: Vec::new(),
            free: Vec::new(),
            members: 0,
            publishers: 0,
            recent: VecDeque::new(),
            out: VecDeque::new(),
            refused: BTreeMap::new(),
            remote: None,
        }
    }

    /// The stream's home when its cells are spread over tracker nodes:
    /// cell 0 is here, and a joiner who finds it full is redirected to cell
    /// `k` (1-based), which the balancer places by `stream` and `cell`; the
    /// node that takes it connects back here as a feeder
    /// ([`Cells::join_feeder`]).
    pub fn spread(mut self) -> Self {
        self.remote = Some(BTreeMap::new());
        self
    }

    /// Admits a session: joined here, or (spread cells, cell 0 full)
    /// redirected to the least-populated remote cell with room, or to a new
    /// one.
    pub fn admit(&mut self, now: u64, req: JoinRequest) -> Result<Admitted, ErrorCode> {
        let full = |c: &Cell| self.cell_viewers > 0 && c.members >= self.cell_viewers;
        let redirect = req.kind != ClientKind::Publisher
            && self.remote.is_some()
            && self.cells.first().is_some_and(full);
        if !redirect {
            return self.join(now, req).map(Admitted::Seat);
        }
        self.check_id(&req.peer_id)?;
        let cap = u32::try_from(self.cell_viewers).unwrap_or(u32::MAX);
        let Some(remote) = self.remote.as_mut() else {
            return Err(ErrorCode::Internal);
        };
        for r in remote.values_mut() {
            r.prune(now, PENDING_MS);
        }
        remote.retain(|_, r| !(r.reports.is_empty() && r.pending.is_empty()));
        let best = remote
            .iter()
            .filter(|(_, r)| r.members() < cap)
            .min_by_key(|(k, r)| (r.members(), **k))
            .map(|(k, _)| *k);
        let k = match best {
            Some(k) => k,
            // A new cell: the lowest number not in use.
            None => {
                let mut k = 1;
                for &used in remote.keys() {
                    if used != k {
                        break;
                    }
                    k += 1;
                }
                if k > MAX_CELLS {
                    return Err(self.refuse(ErrorCode::Overloaded));
                }
                k
            }
        };
        remote.entry(k).or_default().pending.push_back(now);
        Ok(Admitted::Redirect(k))
    }

    /// Admits a tracker node that feeds remote cell `cell`: it is welcomed,
    /// given the recent records, then every record cell 0 takes.
    pub fn join_feeder(&mut self, peer_id: PeerId, cell: u32) -> Result<Seat, ErrorCode> {
        let Some(remote) = self.remote.as_ref() else {
            return Err(self.refuse(ErrorCode::Forbidden));
        };
        if cell == 0 || cell > MAX_CELLS {
            return Err(self.refuse(ErrorCode::Malformed));
        }
        let highest = remote.keys().next_back().copied().unwrap_or(0);
        if cell > highest.saturating_add(CELL_SLACK) {
            return Err(self.refuse(ErrorCode::Forbidden));
        }
        let seat = self.alloc_seat();
        if let Some(remote) = self.remote.as_mut() {
            remote.entry(cell).or_default().reports.push((seat, 0));
        }
        self.seats[seat as usize] = Some(Member::Feeder { cell });
        let welcome = ServerMsg::Welcome {
            peer_id,
            config: PeerConfig {
                max_peers: 0,
                window_segments: self.cfg.window_segments,
                ping_interval_ms: self.cfg.ping_interval_ms,
                idle_timeout_ms: self.cfg.idle_timeout_ms,
                ice_servers: Vec::new(),
            },
        };
        let mut msgs = vec![welcome];
        msgs.extend(
            self.recent
                .iter()
                .map(|m| ServerMsg::Segment { meta: m.clone() }),
        );
        for m in msgs {
            self.out.push_back(Output {
                to: Recipients::One(seat),
                text: Bytes::from(m.encode()),
            });
        }
        Ok(seat)
    }

    /// Feeders of remote cells connected (each one's seat is in its
    /// cell's reports).
    pub fn feeder_count(&self) -> usize {
        self.remote
            .iter()
            .flat_map(BTreeMap::values)
            .map(|r| r.reports.len())
            .sum()
    }

    /// Publishers connected.
    pub fn publisher_count(&self) -> usize {
        self.publishers
    }

    /// The seats of the feeders of remote cells.
    pub fn feeder_seats(&self) -> Vec<Seat> {
        self.remote
            .iter()
            .flat_map(BTreeMap::values)
            .flat_map(|r| r.reports.iter().map(|&(s, _)| s))
            .collect()
    }

    /// Sessions in the stream (a publisher counts once).
    pub fn len(&self) -> usize {
        self.members + self.publishers + self.feeder_count()
    }

    /// No session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cells open.
    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// The next output to deliver, addressed to seats.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Ids are unique in the stream (checked before a cell is chosen: a
    /// full cell sends the joiner to a new one, which has not seen it).
    fn check_id(&mut self, id: &PeerId) -> Result<(), ErrorCode> {
        if self.cells.iter().any(|c| c.core.slot_of(id).is_some()) {
            return Err(self.refuse(ErrorCode::PeerIdTaken));
        }
        Ok(())
    }

    /// A free seat (its entry still `None`).
    fn alloc_seat(&mut self) -> Seat {
        self.free.pop().unwrap_or_else(|| {
            self.seats.push(None);
            (self.seats.len() - 1) as Seat
        })
    }

    fn refuse(&mut self, code: ErrorCode) -> ErrorCode {
        *self.refused.entry(code.as_str()).or_default() += 1;
        code
    }

    /// Admits an authenticated session into a cell (every cell, for a
    /// publisher).
    pub fn join(&mut self, now: u64, req: JoinRequest) -> Result<Seat, ErrorCode> {
        self.check_id(&req.peer_id)?;
        let publisher = req.kind == ClientKind::Publisher;
        if !publisher && self.members >= self.cfg.max_peers {
            return Err(self.refuse(ErrorCode::Overloaded));
        }
        let seat = self.alloc_seat();
        let member = if publisher {
            if self.cells.is_empty() {
                self.open_cell(now);
            }
            let mut slots = Vec::with_capacity(self.cells.len());
            for c in 0..self.cells.len() {
                match self.cells[c].core.join(now, req.clone()) {
                    Ok(slot) => {
                        self.bind(c, slot, seat);
                        slots.push(Some(slot));
                    }
                    Err(e) => {
                        for (c, slot) in slots.iter().enumerate() {
                            if let Some(slot) = *slot {
                                self.unbind_leave(now, c, slot);
                            }
                        }
                        self.free.push(seat);
                        return Err(e);
                    }
                }
            }
            Member::Publisher { req, slots }
        } else {
            let c = self.cell_for_joiner(now);
            match self.cells[c].core.join(now, req) {
                Ok(slot) => {
                    self.bind(c, slot, seat);
                    self.cells[c].members += 1;
                    self.members += 1;
                    Member::One { cell: c, slot }
                }
                Err(e) => {
                    self.pump(c);
                    self.free.push(seat);
                    return Err(e);
                }
            }
        };
        if publisher {
            self.publishers += 1;
        }
        self.seats[seat as usize] = Some(member);
        for c in 0..self.cells.len() {
            self.pump(c);
        }
        Ok(seat)
    }

    /// The cell a viewer or relay joins: the least-populated one with
    /// room, or a new one.
    fn cell_for_joiner(&mut self, now: u64) -> usize {
        let cap = if self.cell_viewers == 0 {
            usize::MAX
        } else {
            self.cell_viewers
        };
        let best = self
            .cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.members < cap)
            .min_by_key(|(i, c)| (c.members, *i))
            .map(|(i, _)| i);
        match best {
            Some(c) => c,
            None => self.open_cell(now),
        }
    }

    /// Opens a cell: every publisher joins it and replays its recent
    /// publishes (no viewer is there yet, so nobody is asked to fetch).
    fn open_cell(&mut self, now: u64) -> usize {
        let c = self.cells.len();
        let seed = self.seed.wrapping_add(c as u64);
        self.cells.push(Cell {
            core: Swarm::new(self.stream.clone(), self.cfg.clone(), seed),
            members: 0,
            seat_of: Vec::new(),
        });
        let publishers: Vec<(Seat, JoinRequest)> = self
            .seats
            .iter()
            .enumerate()
            .filter_map(|(s, m)| match m {
                Some(Member::Publisher { req, .. }) => Some((s as Seat, req.clone())),
                _ => None,
            })
            .collect();
        let mut first = None;
        for (seat, req) in publishers {
            let slot = self.cells[c].core.join(now, req).ok();
            if let Some(slot) = slot {
                self.bind(c, slot, seat);
                first.get_or_insert(slot);
            }
            if let Some(Some(Member::Publisher { slots, .. })) = self.seats.get_mut(seat as usize) {
                slots.push(slot);
            }
        }
        if let Some(slot) = first {
            let replay: Vec<SegmentMeta> = self.recent.iter().cloned().collect();
            for meta in replay {
                self.cells[c]
                    .core
                    .handle(now, slot, ClientMsg::Publish { meta });
            }
        }
        self.pump(c);
        c
    }

    fn bind(&mut self, c: usize, slot: Slot, seat: Seat) {
        let map = &mut self.cells[c].seat_of;
        let i = slot as usize;
        if map.len() <= i {
            map.resize(i + 1, NO_SEAT);
        }
        map[i] = seat;
    }

    /// Takes a slot out of its cell: unmapped first, so that nothing the
    /// core still had queued for it reaches the seat's next session.
    fn unbind_leave(&mut self, now: u64, c: usize, slot: Slot) {
        if let Some(s) = self.cells[c].seat_of.get_mut(slot as usize) {
            *s = NO_SEAT;
        }
        self.cells[c].core.leave(now, slot);
        self.pump(c);
    }

    /// Moves a cell's outputs to the stream's queue, addressed to seats.
    /// A publisher hears only from the first cell (cell 0, which it joins
    /// first).
    fn pump(&mut self, c: usize) {
        let Self {
            cells, seats, out, ..
        } = self;
        let cell = &mut cells[c];
        while let Some(mut o) = cell.core.poll_output() {
            // The slot's seat, or NO_SEAT when it is not to hear this.
            let seat = |slot: Slot| -> Seat {
                let seat = cell.seat_of.get(slot as usize).copied().unwrap_or(NO_SEAT);
                let publisher = matches!(
                    seats.get(seat as usize),
                    Some(Some(Member::Publisher { .. }))
                );
                if c == 0 || !publisher { seat } else { NO_SEAT }
            };
            match &mut o.to {
                Recipients::One(s) => {
                    *s = seat(*s);
                    if *s == NO_SEAT {
                        continue;
                    }
                }
                // Rewritten in place: a publish's `segment` goes to every
                // member of the cell.
                Recipients::Many(v) => {
                    for s in v.iter_mut() {
                        *s = seat(*s);
                    }
                    v.retain(|&s| s != NO_SEAT);
                    if v.is_empty() {
                        continue;
                    }
                }
            }
            out.push_back(o);
        }
    }

    /// Handles one message of a joined session.
    pub fn handle(&mut self, now: u64, seat: Seat, msg: ClientMsg) {
        match self.seats.get(seat as usize) {
            Some(Some(Member::One { cell, slot, .. })) => {
                let (c, slot) = (*cell, *slot);
                self.cells[c].core.handle(now, slot, msg);
                self.pump(c);
            }
            Some(Some(Member::Publisher { slots, .. })) => {
                let slots = slots.clone();
                let Some(Some(first)) = slots.first().copied() else {
                    return;
                };
                let ClientMsg::Publish { meta } = msg else {
                    self.cells[0].core.handle(now, first, msg);
                    self.pump(0);
                    return;
                };
                // Cell 0 judges a publish; only one it took goes to the
                // other cells and into the replay list (a refusal is
                // answered and counted once).
                let before = self.cells[0].core.counters().published;
                let publish = ClientMsg::Publish { meta: meta.clone() };
                self.cells[0].core.handle(now, first, publish);
                self.pump(0);
                if self.cells[0].core.counters().published == before {
                    return;
                }
                for (c, slot) in slots.iter().enumerate().skip(1) {
                    if let Some(slot) = *slot {
                        let publish = ClientMsg::Publish { meta: meta.clone() };
                        self.cells[c].core.handle(now, slot, publish);
                        self.pump(c);
                    }
                }
                let feeders = self.feeder_seats();
                if !feeders.is_empty() {
                    let text = Bytes::from(ServerMsg::Segment { meta: meta.clone() }.encode());
                    self.out.push_back(Output {
                        to: Recipients::Many(feeders),
                        text,
                    });
                }
                let r = meta.id.rendition;
                if self.recent.iter().filter(|m| m.id.rendition == r).count() == REPLAY {
                    if let Some(i) = self.recent.iter().position(|m| m.id.rendition == r) {
                        self.recent.remove(i);
                    }
                }
                self.recent.push_back(meta);
            }
            Some(Some(Member::Feeder { cell })) => {
                let cell = *cell;
                // No cell holds more than the stream's session cap.
                let most = u32::try_from(self.cfg.max_peers).unwrap_or(u32::MAX);
                match msg {
                    ClientMsg::CellReport { members } => {
                        if let Some(r) = self.remote.as_mut().and_then(|r| r.get_mut(&cell)) {
                            r.prune(now, ARRIVE_MS);
                            match r.reports.iter_mut().find(|(s, _)| *s == seat) {
                                Some(x) => x.1 = members.min(most),
                                None => r.reports.push((seat, members.min(most))),
                            }
                        }
                    }
                    // Pings are answered by the session; nothing else is
                    // a feeder's to say.
                    _ => {
                        let e = self.refuse(ErrorCode::Forbidden);
                        self.out.push_back(Output {
                            to: Recipients::One(seat),
                            text: Bytes::from(
                                ServerMsg::error(e, "a cell's feeder only reports").encode(),
                            ),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Ends a session.
    pub fn leave(&mut self, now: u64, seat: Seat) {
        let Some(member) = self.seats.get_mut(seat as usize).and_then(Option::take) else {
            return;
        };
        match member {
            Member::One { cell, slot } => {
                self.cells[cell].members -= 1;
                self.members -= 1;
                self.unbind_leave(now, cell, slot);
            }
            Member::Publisher { slots, .. } => {
                self.publishers -= 1;
                for (c, slot) in slots.into_iter().enumerate() {
                    if let Some(slot) = slot {
                        self.unbind_leave(now, c, slot);
                    }
                }
            }
            Member::Feeder { cell } => {
                if let Some(remote) = self.remote.as_mut() {
                    if let Some(r) = remote.get_mut(&cell) {
                        r.reports.retain(|&(s, _)| s != seat);
                        if r.reports.is_empty() && r.pending.is_empty() {
                            remote.remove(&cell);
                        }
                    }
                }
            }
        }
        self.free.push(seat);
    }

    /// The earliest deadline of any cell.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.cells
            .iter()
            .filter_map(|c| c.core.poll_timeout())
            .min()
    }

    /// Lets every cell whose deadline has come act on it.
    pub fn handle_timeout(&mut self, now: u64) {
        for c in 0..self.cells.len() {
            if self.cells[c].core.poll_timeout().is_some_and(|d| d <= now) {
                self.cells[c].core.handle_timeout(now);
                self.pump(c);
            }
        }
    }

    /// What the cells counted, added up (a publish counts once, however
    /// many cells it went to).
    pub fn counters(&self) -> Cow<'_, Counters> {
        if self.cells.len() == 1 && self.refused.is_empty() {
            return Cow::Borrowed(self.cells[0].core.counters());
        }
        let mut sum = Counters::default();
        for cell in &self.cells {
            let c = cell.core.counters();
            sum.joins += c.joins;
            sum.leaves += c.leaves;
            sum.published = sum.published.max(c.published);
            sum.first_fetch_assigned += c.first_fetch_assigned;
            sum.first_fetch_replaced += c.first_fetch_replaced;
            sum.signals_relayed += c.signals_relayed;
            sum.links_split += c.links_split;
            sum.stripe_plans_sent += c.stripe_plans_sent;
            sum.stripe_roots += c.stripe_roots;
            for (k, n) in &c.reports {
                *sum.reports.entry(k).or_default() += n;
            }
            for (k, n) in &c.refused {
                *sum.refused.entry(k).or_default() += n;
            }
        }
        for (k, n) in &self.refused {
            *sum.refused.entry(k).or_default() += n;
        }
        Cow::Owned(sum)
    }

    /// The stream's picture, over all cells: counts and bytes added up,
    /// each segment's holders and first fetchers added up and its spread
    /// the slowest cell's, the startup median the median of the cells'.
    pub fn stats(&self) -> StreamStats {
        let per_cell: Vec<StreamStats> = self.cells.iter().map(|c| c.core.stats()).collect();
        let cells = per_cell.iter().map(|s| s.viewers + s.peers.relay).collect();
        let mut all = if per_cell.len() > 1 {
            merge(&per_cell)
        } else {
            per_cell.into_iter().next().unwrap_or_else(|| StreamStats {
                stream: self.stream.to_string(),
                ..StreamStats::default()
            })
        };
        all.cells = cells;
        // Remote cells by number, as their feeders last reported them
        // (with the joiners sent there lately).
        for r in self.remote.iter().flat_map(BTreeMap::values) {
            all.cells.push(r.members());
        }
        all
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// The worst of the cells' spreads of one segment: `None` while a cell
/// with viewers for it has not reached the share yet.
fn slowest(a: Option<Option<u64>>, pop: u32, b: Option<u64>) -> Option<Option<u64>> {
    if pop == 0 {
        return a;
    }
    Some(match (a, b) {
        (None, b) => b,
        (Some(Some(x)), Some(y)) => Some(x.max(y)),
        _ => None,
    })
}

fn merge(cells: &[StreamStats]) -> StreamStats {
    let mut m = StreamStats {
        stream: cells[0].stream.clone(),
        ..StreamStats::default()
    };
    // Per segment (in the cells' order): the sums, and each share's spread
    // (the slowest so far).
    type Spreads = [Option<Option<u64>>; 3];
    let mut segs: Vec<(SegmentStats, Spreads)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for s in cells {
        m.add_audience(s);
        m.peers.publisher = m.peers.publisher.max(s.peers.publisher);
        m.published = m.published.max(s.published);
        m.first_fetch_assigned += s.first_fetch_assigned;
        m.first_fetch_replaced += s.first_fetch_replaced;
        for seg in &s.segments {
            let i = *index.entry(seg.id.clone()).or_insert_with(|| {
                segs.push((
                    SegmentStats {
                        id: seg.id.clone(),
                        size: seg.size,
                        holders: 0,
                        population: 0,
                        first_fetchers: 0,
                        spread_50_ms: None,
                        spread_95_ms: None,
                        spread_100_ms: None,
                    },
                    [None; 3],
                ));
                segs.len() - 1
            });
            let (sum, spreads) = &mut segs[i];
            sum.size = sum.size.or(seg.size);
            sum.holders += seg.holders;
            sum.population += seg.population;
            sum.first_fetchers += seg.first_fetchers;
            let p = seg.population;
            spreads[0] = slowest(spreads[0], p, seg.spread_50_ms);
            spreads[1] = slowest(spreads[1], p, seg.spread_95_ms);
            spreads[2] = slowest(spreads[2], p, seg.spread_100_ms);
        }
    }
    // In the cores' order: by rendition, then sequence number.
    segs.sort_by_cached_key(|(s, _)| {
        let mut parts = s.id.rsplitn(3, '/');
        let seq = parts.next().and_then(|x| x.parse::<u64>().ok());
        let rendition = parts.next().and_then(|r| RenditionId::new(r).ok());
        (rendition, seq)
    });
    m.segments = segs
        .into_iter()
        .map(|(mut s, [a, b, c])| {
            s.spread_50_ms = a.flatten();
            s.spread_95_ms = b.flatten();
            s.spread_100_ms = c.flatten();
            s
        })
        .collect();
    m.startup_ms_p50 = median(cells.iter().filter_map(|s| s.startup_ms_p50).collect());
    m.spread_50_ms_median = median(m.segments.iter().filter_map(|s| s.spread_50_ms).collect());
    m.spread_95_ms_median = median(m.segments.iter().filter_map(|s| s.spread_95_ms).collect());
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use swarmcast_proto::tracker::Signal;
    use swarmcast_proto::{SegmentId, Sha256Digest};

    fn sid() -> StreamId {
        StreamId::new("s").unwrap()
    }

    fn meta(seq: u64) -> SegmentMeta {
        SegmentMeta {
            id: SegmentId::new(sid(), RenditionId::new("360p").unwrap(), seq),
            size: 1000,
            sha256: Sha256Digest::of(&seq.to_be_bytes()),
            duration_ms: 2000,
            published_at_ms: 0,
            blocks: None,
        }
    }

    fn req(id: &str, kind: ClientKind) -> JoinRequest {
        JoinRequest {
            peer_id: PeerId::new(id).unwrap(),
            kind,
            region: None,
            upload_kbps: 5000,
        }
    }

    /// Whole-segment first fetchers (no stripes), one per mesh.
    fn cells(cell_viewers: usize) -> Cells {
        let cfg = SwarmConfig {
            stripes: 0,
            min_first_fetchers: 1,
            ..SwarmConfig::default()
        };
        Cells::new(sid(), cfg, cell_viewers, 7)
    }

    fn drain(c: &mut Cells) -> Vec<(Seat, ServerMsg)> {
        let mut v = Vec::new();
        while let Some(o) = c.poll_output() {
            let m = ServerMsg::decode(std::str::from_utf8(&o.text).unwrap()).unwrap();
            match o.to {
                Recipients::One(s) => v.push((s, m)),
                Recipients::Many(ss) => v.extend(ss.into_iter().map(|s| (s, m.clone()))),
            }
        }
        v
    }

    fn fetchers(out: &[(Seat, ServerMsg)]) -> Vec<Seat> {
        out.iter()
            .filter(|(_, m)| matches!(m, ServerMsg::Fetch { .. }))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Ids of the peers introduced to each seat.
    fn introduced(out: &[(Seat, ServerMsg)]) -> HashMap<Seat, Vec<String>> {
        let mut m: HashMap<Seat, Vec<String>> = HashMap::new();
        for (s, msg) in out {
            if let ServerMsg::Peers { peers } = msg {
                m.entry(*s)
                    .or_default()
                    .extend(peers.iter().map(|p| p.peer_id.to_string()));
            }
        }
        m
    }

    #[test]
    fn a_large_audience_is_split_and_each_cell_seeded_on_its_own() {
        let mut c = cells(3);
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        let mut cell_of = HashMap::new();
        let mut seats = Vec::new();
        for i in 0..7 {
            let s = c
                .join(1, req(&format!("v{i}"), ClientKind::Native))
                .unwrap();
            // Least-populated with room: 3, 3, then the seventh alone.
            cell_of.insert(format!("v{i}"), i / 3);
            seats.push(s);
        }
        let out = drain(&mut c);
        assert_eq!(c.cell_count(), 3);
        let welcomes = out
            .iter()
            .filter(|(s, m)| *s == origin && matches!(m, ServerMsg::Welcome { .. }))
            .count();
        assert_eq!(welcomes, 1, "the publisher hears from one cell");
        // Peers meet only peers of their own cell.
        let intro = introduced(&out);
        for (i, &s) in seats.iter().enumerate() {
            for id in intro.get(&s).into_iter().flatten() {
                assert_eq!(cell_of[id], i / 3, "v{i} was introduced to {id}");
            }
        }
        assert_eq!(intro[&seats[0]].len(), 2, "{intro:?}");
        // One publish: one first fetcher per cell, the others told.
        c.handle(2, origin, ClientMsg::Publish { meta: meta(0) });
        let out = drain(&mut c);
        let f = fetchers(&out);
        let mut f_cells: Vec<usize> = f
            .iter()
            .map(|s| seats.iter().position(|x| x == s).unwrap() / 3)
            .collect();
        f_cells.sort_unstable();
        assert_eq!(f_cells, vec![0, 1, 2], "{f:?}");
        for &s in &seats {
            assert!(out.iter().any(|(to, m)| *to == s
                && matches!(m, ServerMsg::Fetch { meta: x } | ServerMsg::Segment { meta: x } if *x == meta(0))));
        }
        let st = c.stats();
        assert_eq!((st.viewers, st.peers.publisher), (7, 1));
        assert_eq!(st.cells, vec![3, 3, 1]);
        assert_eq!(st.published, 1);
        assert_eq!(st.first_fetch_assigned, 3);
        assert_eq!(st.segments.len(), 1);
        assert_eq!(st.segments[0].population, 7);
        assert_eq!(st.segments[0].first_fetchers, 3);
        assert_eq!(c.counters().published, 1);
        // A signal to a peer of another cell does not get there.
        c.handle(
            3,
            seats[0],
            ClientMsg::Signal {
                to: PeerId::new("v3").unwrap(),
                signal: Signal::Offer { sdp: "x".into() },
            },
        );
        let out = drain(&mut c);
        assert!(
            matches!(&out[..], [(s, ServerMsg::Error { code: ErrorCode::UnknownPeer, .. })] if *s == seats[0]),
            "{out:?}"
        );
        // Within a cell it does.
        c.handle(
            3,
            seats[0],
            ClientMsg::Signal {
                to: PeerId::new("v1").unwrap(),
                signal: Signal::Offer { sdp: "x".into() },
            },
        );
        let out = drain(&mut c);
        assert!(matches!(&out[..], [(s, ServerMsg::Signal { .. })] if *s == seats[1]));
    }

    #[test]
    fn a_cell_opened_later_gets_the_live_edge_and_its_own_first_fetcher() {
        let mut c = cells(2);
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        let a = c.join(0, req("a", ClientKind::Native)).unwrap();
        c.join(0, req("b", ClientKind::Native)).unwrap();
        for seq in 0..12 {
            c.handle(seq, origin, ClientMsg::Publish { meta: meta(seq) });
        }
        drain(&mut c);
        let late = c.join(20, req("late", ClientKind::Browser)).unwrap();
        assert_eq!(c.cell_count(), 2);
        let out = drain(&mut c);
        // The newest records, as in any swarm, from the replayed publishes
        // (only the last REPLAY were kept).
        let edge: Vec<u64> = out
            .iter()
            .filter_map(|(s, m)| match m {
                ServerMsg::Segment { meta } if *s == late => Some(meta.id.seq),
                _ => None,
            })
            .collect();
        assert_eq!(edge, vec![11, 10, 9], "{out:?}");
        // Nobody is asked to fetch a replayed segment, and the publisher
        // hears nothing of the new cell.
        assert!(fetchers(&out).is_empty(), "{out:?}");
        assert!(out.iter().all(|(s, _)| *s != origin), "{out:?}");
        // The next publish seeds both cells.
        c.handle(21, origin, ClientMsg::Publish { meta: meta(12) });
        let f = fetchers(&drain(&mut c));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.contains(&late), "{f:?}");
        assert!(f.iter().any(|&s| s != late && s <= a + 1));
        // A republish of the same record changes nothing.
        c.handle(22, origin, ClientMsg::Publish { meta: meta(12) });
        assert!(fetchers(&drain(&mut c)).is_empty());
        assert_eq!(c.stats().published, 13);
    }

    #[test]
    fn joiners_refill_the_emptiest_cell_ids_are_unique_and_the_cap_counts_every_cell() {
        let mut c = Cells::new(
            sid(),
            SwarmConfig {
                max_peers: 5,
                ..SwarmConfig::default()
            },
            2,
            1,
        );
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        let a = c.join(0, req("a", ClientKind::Native)).unwrap();
        let _b = c.join(0, req("b", ClientKind::Native)).unwrap();
        let _x = c.join(0, req("x", ClientKind::Relay)).unwrap();
        let _d = c.join(0, req("d", ClientKind::Native)).unwrap();
        assert_eq!(c.stats().cells, vec![2, 2]);
        // "x" lives in cell 1: cell 0 cannot take another "x".
        c.leave(1, a);
        assert_eq!(c.stats().cells, vec![1, 2]);
        assert_eq!(
            c.join(1, req("x", ClientKind::Native)),
            Err(ErrorCode::PeerIdTaken)
        );
        let e = c.join(1, req("e", ClientKind::Native)).unwrap();
        assert_eq!(c.stats().cells, vec![2, 2], "e refills cell 0");
        let f = c.join(1, req("f", ClientKind::Native)).unwrap();
        assert_eq!(c.stats().cells, vec![2, 2, 1]);
        // Five viewers and relays: the stream is full, whatever the cells.
        assert_eq!(
            c.join(1, req("g", ClientKind::Native)),
            Err(ErrorCode::Overloaded)
        );
        let refused = c.counters().refused.clone();
        assert_eq!(refused.get("peer_id_taken"), Some(&1), "{refused:?}");
        assert_eq!(refused.get("overloaded"), Some(&1), "{refused:?}");
        // The publisher leaves every cell; seats are reused.
        drain(&mut c);
        c.leave(2, origin);
        assert_eq!(c.stats().peers.publisher, 0);
        assert_eq!(c.len(), 5);
        c.leave(2, e);
        c.leave(2, f);
        let again = c.join(3, req("origin2", ClientKind::Publisher)).unwrap();
        assert!([origin, e, f].contains(&again));
        assert_eq!(c.stats().peers.publisher, 1);
        c.handle(4, again, ClientMsg::Publish { meta: meta(0) });
        let f = fetchers(&drain(&mut c));
        // Cells 0 and 1 have viewers (cell 2 lost its only one).
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn a_taken_id_is_refused_even_when_its_cell_is_full() {
        let mut c = cells(2);
        c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        c.join(0, req("a", ClientKind::Native)).unwrap();
        c.join(0, req("b", ClientKind::Native)).unwrap();
        for id in ["a", "origin"] {
            assert_eq!(
                c.join(0, req(id, ClientKind::Native)),
                Err(ErrorCode::PeerIdTaken)
            );
        }
        // Refused before a cell was chosen: none opened for them.
        assert_eq!(c.cell_count(), 1);
        assert_eq!(c.counters().refused.get("peer_id_taken"), Some(&2));
    }

    #[test]
    fn only_publishes_cell_0_took_reach_other_cells_in_the_order_they_came() {
        let mut c = Cells::new(
            sid(),
            SwarmConfig {
                max_renditions: 2,
                stripes: 0,
                ..SwarmConfig::default()
            },
            1,
            3,
        );
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        c.join(0, req("a", ClientKind::Native)).unwrap();
        let of = |r: &str, seq| {
            let mut m = meta(seq);
            m.id = SegmentId::new(sid(), RenditionId::new(r).unwrap(), seq);
            ClientMsg::Publish { meta: m }
        };
        c.join(0, req("b", ClientKind::Native)).unwrap();
        for (r, seq) in [("1080p", 1), ("360p", 1), ("720p", 1), ("1080p", 2)] {
            c.handle(1, origin, of(r, seq));
        }
        let out = drain(&mut c);
        // 720p is a third rendition: refused once, by cell 0, to the
        // publisher once, though two cells are open.
        let refusals = out
            .iter()
            .filter(|(s, m)| {
                *s == origin
                    && matches!(
                        m,
                        ServerMsg::Error {
                            code: ErrorCode::Overloaded,
                            ..
                        }
                    )
            })
            .count();
        assert_eq!(refusals, 1, "{out:?}");
        assert_eq!(c.counters().refused.get("overloaded"), Some(&1));
        // A cell opened now gets what cell 0 took, newest first as a
        // joiner's live edge, and never 720p.
        let late = c.join(2, req("late", ClientKind::Native)).unwrap();
        assert_eq!(c.cell_count(), 3);
        let mut edge: Vec<String> = drain(&mut c)
            .into_iter()
            .filter_map(|(s, m)| match m {
                ServerMsg::Segment { meta } if s == late => Some(meta.id.to_string()),
                _ => None,
            })
            .collect();
        edge.sort();
        assert_eq!(edge, vec!["s/1080p/1", "s/1080p/2", "s/360p/1"]);
        // The merged window keeps the cores' order.
        let one = c.cells[0].core.stats();
        let ids = |s: &StreamStats| s.segments.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.stats()), ids(&one));
    }

    #[test]
    fn a_spread_home_redirects_beyond_its_cell_and_feeds_the_remote_cells() {
        let mut c = cells(2).spread();
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        let admit = |c: &mut Cells, id: &str| c.admit(0, req(id, ClientKind::Native)).unwrap();
        assert!(matches!(admit(&mut c, "a"), Admitted::Seat(_)));
        assert!(matches!(admit(&mut c, "b"), Admitted::Seat(_)));
        c.handle(1, origin, ClientMsg::Publish { meta: meta(0) });
        // Cell 0 is full: joiners go to cell 1 until it has two (as far
        // as the home knows), then to cell 2.
        assert_eq!(admit(&mut c, "c"), Admitted::Redirect(1));
        assert_eq!(admit(&mut c, "d"), Admitted::Redirect(1));
        assert_eq!(admit(&mut c, "e"), Admitted::Redirect(2));
        assert_eq!(
            c.admit(0, req("a", ClientKind::Native)),
            Err(ErrorCode::PeerIdTaken)
        );
        // Three sent: two to cell 1 and one to cell 2, counted as pending.
        assert_eq!(c.stats().cells, vec![2, 2, 1]);
        drain(&mut c);
        // The node that took cell 1 feeds it from here: a welcome, the
        // recent records, then each new one.
        let feeder = c.join_feeder(PeerId::new("cell-1").unwrap(), 1).unwrap();
        let out = drain(&mut c);
        assert!(matches!(&out[0], (s, ServerMsg::Welcome { .. }) if *s == feeder));
        assert!(
            matches!(&out[1], (s, ServerMsg::Segment { meta: m }) if *s == feeder && *m == meta(0))
        );
        c.handle(2, origin, ClientMsg::Publish { meta: meta(1) });
        let out = drain(&mut c);
        assert!(
            out.iter().any(|(s, m)| *s == feeder
                && matches!(m, ServerMsg::Segment { meta: x } if *x == meta(1)))
        );
        assert!(
            !out.iter()
                .any(|(s, m)| *s == feeder && matches!(m, ServerMsg::Fetch { .. }))
        );
        // It reports one member; the two sent there count until they have
        // had time to arrive (10 s), then only the report does.
        c.handle(3, feeder, ClientMsg::CellReport { members: 1 });
        assert_eq!(c.stats().cells, vec![2, 3, 1]);
        let later = |c: &mut Cells, id: &str| c.admit(20_000, req(id, ClientKind::Native)).unwrap();
        assert_eq!(later(&mut c, "f"), Admitted::Redirect(1));
        assert_eq!(c.stats().cells, vec![2, 2], "cell 2 never came: forgotten");
        // A report is clamped to the stream's cap.
        c.handle(3, feeder, ClientMsg::CellReport { members: u32::MAX });
        assert_eq!(c.stats().cells, vec![2, 20_001]);
        c.handle(3, feeder, ClientMsg::CellReport { members: 1 });
        // A feeder says nothing else.
        c.handle(3, feeder, ClientMsg::WantPeers { count: 3 });
        assert!(
            matches!(&drain(&mut c)[..], [(s, ServerMsg::Error { code: ErrorCode::Forbidden, .. })] if *s == feeder)
        );
        // Feeders only for cells near those the home knows: a made-up far
        // one is refused, and allocates nothing.
        let far = crate::cells::CELL_SLACK + 2;
        assert_eq!(
            c.join_feeder(PeerId::new("far").unwrap(), far),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            c.join_feeder(PeerId::new("zero").unwrap(), 0),
            Err(ErrorCode::Malformed)
        );
        let near = c.join_feeder(PeerId::new("near").unwrap(), 3).unwrap();
        assert_eq!(c.stats().cells, vec![2, 2, 0]);
        // Gone, its report goes with it, and an empty cell number is
        // reused: the next new cell is 2, the lowest free one.
        c.leave(4, near);
        c.leave(4, feeder);
        assert_eq!(c.stats().cells, vec![2, 1]);
        assert_eq!(c.len(), 3);
        assert_eq!(later(&mut c, "g"), Admitted::Redirect(1));
        assert_eq!(later(&mut c, "h"), Admitted::Redirect(2));
        // Without spread cells, nobody is redirected and no feeder joins.
        let mut local = cells(2);
        assert_eq!(
            local.join_feeder(PeerId::new("cell-1").unwrap(), 1),
            Err(ErrorCode::Forbidden)
        );
        for id in ["a", "b", "c"] {
            assert!(matches!(
                local.admit(0, req(id, ClientKind::Native)),
                Ok(Admitted::Seat(_))
            ));
        }
        assert_eq!(local.cell_count(), 2);
    }

    #[test]
    fn without_cell_viewers_one_cell_takes_everyone() {
        let mut c = cells(0);
        let origin = c.join(0, req("origin", ClientKind::Publisher)).unwrap();
        for i in 0..40 {
            c.join(0, req(&format!("v{i}"), ClientKind::Native))
                .unwrap();
        }
        assert_eq!(c.cell_count(), 1);
        assert!(matches!(c.counters(), Cow::Borrowed(_)));
        drain(&mut c);
        c.handle(1, origin, ClientMsg::Publish { meta: meta(0) });
        assert_eq!(fetchers(&drain(&mut c)).len(), 1);
        assert_eq!(c.stats().cells, vec![40]);
    }

    #[test]
    fn merged_spreads_are_the_slowest_cells() {
        assert_eq!(slowest(None, 3, Some(5)), Some(Some(5)));
        assert_eq!(slowest(Some(Some(5)), 3, Some(9)), Some(Some(9)));
        assert_eq!(slowest(Some(Some(5)), 3, None), Some(None));
        assert_eq!(slowest(Some(None), 3, Some(1)), Some(None));
        // A cell without viewers for the segment has no say.
        assert_eq!(slowest(Some(Some(5)), 0, None), Some(Some(5)));
    }
}
