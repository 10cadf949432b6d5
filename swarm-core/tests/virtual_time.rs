//! The swarm core driven in virtual time: a few cores joined by simulated
//! data channels (latency + rate), an HTTP origin (latency + rate), and a
//! clock that jumps from event to event. No sockets, no sleeps.
#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use swarmcast_proto::wire::{Frame, MAX_CHUNK_DATA, RejectReason};
use swarmcast_proto::{
    BLOCK_SIZE, BlockHashes, PeerId, RenditionId, SegmentId, SegmentMeta, Seq, Sha256Digest,
    StreamId,
};
use swarmcast_swarm_core::{Action, Core, CoreConfig, DropReason, Millis, Source};

fn r() -> RenditionId {
    RenditionId::new("360p").unwrap()
}

fn pid(s: &str) -> PeerId {
    PeerId::new(s).unwrap()
}

/// A segment whose record carries 64 KiB block hashes (cut-through).
fn segment_with_blocks(seq: Seq, size: usize) -> (SegmentMeta, Bytes) {
    let (mut meta, data) = segment(seq, size);
    meta.blocks = BlockHashes::of(&data, BLOCK_SIZE);
    (meta, data)
}

fn segment(seq: Seq, size: usize) -> (SegmentMeta, Bytes) {
    let data: Vec<u8> = (0..size).map(|i| (i as u64 * 7 + seq * 13) as u8).collect();
    let meta = SegmentMeta {
        id: SegmentId::new(StreamId::new("s").unwrap(), r(), seq),
        size: size as u64,
        sha256: Sha256Digest::of(&data),
        duration_ms: 2000,
        published_at_ms: 0,
        blocks: None,
    };
    (meta, Bytes::from(data))
}

#[derive(Debug)]
enum Ev {
    Frame {
        to: PeerId,
        from: PeerId,
        frame: Frame,
    },
    Http {
        node: PeerId,
        req: u64,
        data: Bytes,
        last: bool,
    },
    Published {
        node: PeerId,
        meta: SegmentMeta,
        first: bool,
    },
}

/// How a node behaves when it serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Flips a byte of every chunk it sends.
    Corrupt,
    /// Sends chunks this many times slower than the link allows.
    Slow(u64),
}

struct Node {
    core: Core,
    behaviour: Behaviour,
    completed: Vec<(Arc<SegmentMeta>, Bytes, Source, Millis)>,
    dropped: Vec<(PeerId, DropReason)>,
    http_gets: Vec<(Millis, u64, u64)>,
    evicted: Vec<Seq>,
    sent: Vec<(PeerId, Frame)>,
}

struct Sim {
    now: Millis,
    nodes: BTreeMap<PeerId, Node>,
    links: HashSet<(PeerId, PeerId)>,
    origin: HashMap<Seq, Bytes>,
    queue: BinaryHeap<Reverse<(Millis, u64, usize)>>,
    events: HashMap<usize, Ev>,
    next_id: usize,
    order: u64,
    /// Serves in progress: (server, client, seq) -> cancelled?
    serving: HashMap<(PeerId, PeerId, Seq), bool>,
    /// When each link's (server → client) last queued chunk leaves: serves
    /// on one link go out in order, as on a data channel.
    link_free: HashMap<(PeerId, PeerId), Millis>,
    http_cancelled: HashSet<(PeerId, u64)>,
    link_ms: Millis,
    /// Peer link rate, bytes per ms.
    link_rate: u64,
    http_ms: Millis,
    /// HTTP rate, bytes per ms.
    http_rate: u64,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            now: 0,
            nodes: BTreeMap::new(),
            links: HashSet::new(),
            origin: HashMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_id: 0,
            order: 0,
            serving: HashMap::new(),
            link_free: HashMap::new(),
            http_cancelled: HashSet::new(),
            link_ms: 5,
            link_rate: 5_000,
            http_ms: 20,
            http_rate: 1_000,
        }
    }

    fn add(&mut self, id: &str, cfg: CoreConfig, behaviour: Behaviour) {
        let seed = self.nodes.len() as u64 + 1;
        self.nodes.insert(
            pid(id),
            Node {
                core: Core::new(cfg, seed),
                behaviour,
                completed: Vec::new(),
                dropped: Vec::new(),
                http_gets: Vec::new(),
                evicted: Vec::new(),
                sent: Vec::new(),
            },
        );
    }

    fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.get_mut(&pid(id)).unwrap()
    }

    fn connect(&mut self, a: &str, b: &str) {
        self.links.insert((pid(a), pid(b)));
        self.links.insert((pid(b), pid(a)));
        let now = self.now;
        self.node(a).core.handle_peer_up(now, pid(b));
        self.node(b).core.handle_peer_up(now, pid(a));
        self.pump(&pid(a));
        self.pump(&pid(b));
    }

    fn disconnect(&mut self, a: &str, b: &str) {
        self.links.remove(&(pid(a), pid(b)));
        self.links.remove(&(pid(b), pid(a)));
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&pid(a)) {
            n.core.handle_peer_down(now, &pid(b));
        }
        if let Some(n) = self.nodes.get_mut(&pid(b)) {
            n.core.handle_peer_down(now, &pid(a));
        }
        self.pump(&pid(a));
        self.pump(&pid(b));
    }

    fn at(&mut self, t: Millis, ev: Ev) {
        let id = self.next_id;
        self.next_id += 1;
        self.order += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((t, self.order, id)));
    }

    /// The origin publishes `seq` now; the tracker tells every node (the
    /// `first` ones as first fetchers).
    fn publish(&mut self, seq: Seq, size: usize, first: &[&str]) -> SegmentMeta {
        self.publish_record(segment(seq, size), first)
    }

    fn publish_record(
        &mut self,
        (meta, data): (SegmentMeta, Bytes),
        first: &[&str],
    ) -> SegmentMeta {
        let seq = meta.id.seq;
        self.origin.insert(seq, data);
        let ids: Vec<PeerId> = self.nodes.keys().cloned().collect();
        for id in ids {
            let f = first.contains(&id.as_str());
            self.at(
                self.now + 10,
                Ev::Published {
                    node: id,
                    meta: meta.clone(),
                    first: f,
                },
            );
        }
        meta
    }

    /// Carries out a node's actions.
    fn pump(&mut self, id: &PeerId) {
        loop {
            let now = self.now;
            let Some(node) = self.nodes.get_mut(id) else {
                return;
            };
            let Some(action) = node.core.poll_action() else {
                return;
            };
            match action {
                Action::Send { peer, frame } => {
                    node.sent.push((peer.clone(), frame.clone()));
                    if self.links.contains(&(id.clone(), peer.clone())) {
                        self.at(
                            now + self.link_ms,
                            Ev::Frame {
                                to: peer,
                                from: id.clone(),
                                frame,
                            },
                        );
                    }
                }
                Action::Serve {
                    peer,
                    rendition,
                    seq,
                    data,
                    from,
                    to,
                } => {
                    let behaviour = node.behaviour;
                    self.serving.insert((id.clone(), peer.clone(), seq), false);
                    let slow = match behaviour {
                        Behaviour::Slow(k) => k,
                        _ => 1,
                    };
                    let key = (id.clone(), peer.clone());
                    let mut t = self
                        .link_free
                        .get(&key)
                        .copied()
                        .unwrap_or(0)
                        .max(now + self.link_ms);
                    for f in Frame::chunks(rendition, seq, &data, from as usize).unwrap() {
                        let Frame::Chunk {
                            rendition,
                            seq,
                            offset,
                            total,
                            data,
                        } = f
                        else {
                            unreachable!()
                        };
                        if offset >= to {
                            break;
                        }
                        // A serve ends at `to` (the rest of the buffer may not be verified).
                        let mut data = data.slice(..(to - offset).min(data.len() as u32) as usize);
                        if behaviour == Behaviour::Corrupt {
                            let mut v = data.to_vec();
                            v[0] ^= 0xff;
                            data = Bytes::from(v);
                        }
                        t += (data.len() as u64 * slow).div_ceil(self.link_rate);
                        self.at(
                            t,
                            Ev::Frame {
                                to: peer.clone(),
                                from: id.clone(),
                                frame: Frame::Chunk {
                                    rendition,
                                    seq,
                                    offset,
                                    total,
                                    data,
                                },
                            },
                        );
                    }
                    self.link_free.insert(key, t);
                    // The upload ends when its last chunk has left.
                    let done_at = t;
                    self.at(
                        done_at,
                        Ev::Frame {
                            to: id.clone(),
                            from: peer.clone(),
                            frame: Frame::Have {
                                rendition,
                                seq: u64::MAX,
                            },
                        },
                    );
                }
                Action::StopServing { peer, seq, .. } => {
                    self.serving.insert((id.clone(), peer, seq), true);
                }
                Action::HttpGet {
                    req,
                    meta,
                    from,
                    to,
                } => {
                    node.http_gets.push((now, meta.id.seq, from));
                    let data = self.origin[&meta.id.seq].slice(from as usize..to as usize);
                    let mut t = now + self.http_ms;
                    let pieces: Vec<Bytes> = (0..data.len())
                        .step_by(64 * 1024)
                        .map(|o| data.slice(o..(o + 64 * 1024).min(data.len())))
                        .collect();
                    let n = pieces.len();
                    for (i, p) in pieces.into_iter().enumerate() {
                        t += (p.len() as u64).div_ceil(self.http_rate);
                        self.at(
                            t,
                            Ev::Http {
                                node: id.clone(),
                                req,
                                data: p,
                                last: i + 1 == n,
                            },
                        );
                    }
                }
                Action::HttpCancel { req } => {
                    self.http_cancelled.insert((id.clone(), req));
                }
                Action::Complete { meta, data, source } => {
                    node.completed.push((meta, data, source, now));
                }
                Action::Evicted { seq, .. } => node.evicted.push(seq),
                Action::DropPeer { peer, reason } => {
                    node.dropped.push((peer.clone(), reason));
                    let a = id.to_string();
                    self.disconnect(&a, peer.as_str());
                }
            }
        }
    }

    /// Runs until `until`, delivering events and timeouts in time order.
    fn run(&mut self, until: Millis) {
        let mut steps = 0u32;
        loop {
            steps += 1;
            assert!(
                steps < 1_000_000,
                "the simulation does not advance (at {} ms)",
                self.now
            );
            let next_timeout = self
                .nodes
                .iter()
                .filter_map(|(id, n)| n.core.poll_timeout().map(|t| (t.max(self.now), id.clone())))
                .min();
            let next_event = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let t = match (next_event, &next_timeout) {
                (Some(e), Some((to, _))) => e.min(*to),
                (Some(e), None) => e,
                (None, Some((to, _))) => *to,
                (None, None) => break,
            };
            if t > until {
                break;
            }
            self.now = t;
            if next_event == Some(t) {
                let Reverse((_, _, id)) = self.queue.pop().unwrap();
                let ev = self.events.remove(&id).unwrap();
                self.deliver(ev);
            } else if let Some((_, id)) = next_timeout {
                let now = self.now;
                self.nodes.get_mut(&id).unwrap().core.handle_timeout(now);
                self.pump(&id);
            }
        }
        self.now = until;
    }

    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Published { node, meta, first } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.core.handle_published(now, meta, first);
                }
                self.pump(&node);
            }
            Ev::Frame { to, from, frame } => {
                if !self.links.contains(&(from.clone(), to.clone())) {
                    return;
                }
                // The end marker of a Serve (see pump): the upload is done.
                if let Frame::Have {
                    rendition,
                    seq: u64::MAX,
                } = frame
                {
                    let _ = rendition;
                    let keys: Vec<_> = self
                        .serving
                        .keys()
                        .filter(|(s, c, _)| *s == to && *c == from)
                        .cloned()
                        .collect();
                    for k in keys {
                        self.serving.remove(&k);
                        self.nodes.get_mut(&to).unwrap().core.handle_upload_done(
                            now,
                            &from,
                            r(),
                            k.2,
                        );
                    }
                    self.pump(&to);
                    return;
                }
                if let Frame::Chunk { seq, .. } = &frame {
                    if self.serving.get(&(from.clone(), to.clone(), *seq)) == Some(&true) {
                        return; // cancelled: stop sending
                    }
                }
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.core.handle_frame(now, &from, frame);
                }
                self.pump(&to);
            }
            Ev::Http {
                node,
                req,
                data,
                last,
            } => {
                if self.http_cancelled.contains(&(node.clone(), req)) {
                    return;
                }
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.core.handle_http_data(now, req, &data);
                    if last {
                        n.core.handle_http_done(now, req);
                    }
                }
                self.pump(&node);
            }
        }
    }
}

fn viewer() -> CoreConfig {
    CoreConfig::viewer(r())
}

#[test]
fn a_first_fetcher_fetches_over_http_at_once_and_the_swarm_shares_it() {
    let mut sim = Sim::new();
    for id in ["a", "b", "c"] {
        sim.add(id, viewer(), Behaviour::Honest);
    }
    sim.connect("a", "b");
    sim.connect("b", "c");
    let meta = sim.publish(0, 300_000, &["a"]);
    sim.run(10_000);
    // a asked the origin as soon as it heard of the segment.
    assert_eq!(sim.node("a").http_gets, vec![(10, 0, 0)]);
    for id in ["a", "b", "c"] {
        let n = sim.node(id);
        assert_eq!(n.completed.len(), 1, "{id}");
        let (m, data, _, at) = &n.completed[0];
        assert_eq!(**m, meta);
        assert!(m.matches(data));
        // Well before the deadline (publish + 4 s).
        assert!(*at < 4_000, "{id} completed at {at}");
    }
    // b and c never touched HTTP: b got it from a, c from b.
    assert!(sim.node("b").http_gets.is_empty());
    assert!(sim.node("c").http_gets.is_empty());
    assert_eq!(sim.node("b").completed[0].2, Source::Peers);
    assert_eq!(sim.node("c").core.stats().p2p_bytes, 300_000);
    assert_eq!(sim.node("b").core.stats().uploaded_bytes, 300_000);
}

#[test]
fn with_no_holder_http_starts_at_the_last_safe_moment() {
    let mut sim = Sim::new();
    sim.add("alone", viewer(), Behaviour::Honest);
    sim.publish(0, 200_000, &[]);
    sim.run(10_000);
    let n = sim.node("alone");
    // Deadline 10 + 4000; margin 500; 200 KB at the assumed 500 B/ms = 400 ms.
    assert_eq!(n.http_gets, vec![(10 + 4000 - 500 - 400, 0, 0)]);
    let (_, _, source, at) = &n.completed[0];
    assert_eq!(*source, Source::Http);
    assert!(*at <= 4010, "completed at {at}, after the deadline");
    assert_eq!(n.core.stats().late, 0);
}

#[test]
fn a_slow_peer_is_abandoned_and_the_rest_comes_by_http_range() {
    let mut sim = Sim::new();
    sim.add("seed", viewer(), Behaviour::Slow(50));
    sim.add("v", viewer(), Behaviour::Honest);
    sim.connect("seed", "v");
    sim.publish(0, 400_000, &["seed"]);
    sim.run(20_000);
    let v = sim.node("v");
    let (meta, data, source, at) = v.completed[0].clone();
    assert!(meta.matches(&data));
    assert_eq!(
        source,
        Source::Mixed,
        "part from the peer, the rest over HTTP"
    );
    assert!(at <= 4010, "completed at {at}, after the deadline");
    assert_eq!(v.core.stats().slow_transfers, 1);
    // HTTP resumed where the peer stopped.
    let (_, _, from) = v.http_gets[0];
    assert!(from > 0 && from < 400_000, "resumed from byte {from}");
    assert_eq!(v.core.stats().late, 0);
}

#[test]
fn corrupted_bytes_are_never_delivered_and_their_sender_is_dropped() {
    let mut sim = Sim::new();
    sim.add("evil", viewer(), Behaviour::Corrupt);
    sim.add("v", viewer(), Behaviour::Honest);
    sim.add("w", viewer(), Behaviour::Honest);
    sim.connect("evil", "v");
    sim.connect("v", "w");
    // evil really holds the segment (it fetched it over HTTP first).
    sim.publish(0, 100_000, &["evil"]);
    sim.run(10_000);
    let v = sim.node("v");
    assert_eq!(v.dropped, vec![(pid("evil"), DropReason::HashMismatch)]);
    assert_eq!(v.core.stats().hash_failures, 1);
    // v completed only with the origin's bytes, and so did w (through v).
    assert_eq!(v.completed.len(), 1);
    for id in ["v", "w"] {
        let n = sim.node(id);
        let (meta, data, _, at) = &n.completed[0];
        assert!(meta.matches(data), "{id} delivered bytes that do not match");
        assert!(*at <= 4010, "{id} completed at {at}");
    }
}

#[test]
fn a_neighbour_lost_mid_transfer_is_replaced_before_the_deadline() {
    let mut sim = Sim::new();
    sim.link_rate = 200; // 1 MB takes 5 s over this link
    sim.add("a", viewer(), Behaviour::Honest);
    sim.add("b", viewer(), Behaviour::Honest);
    sim.add("v", viewer(), Behaviour::Honest);
    sim.connect("a", "v");
    sim.connect("b", "v");
    sim.publish(0, 100_000, &["a", "b"]);
    // Let a and b get it from the origin and v start from one of them.
    sim.run(300);
    sim.link_rate = 200;
    sim.run(350);
    let serving: Vec<String> = sim.serving.keys().map(|(s, _, _)| s.to_string()).collect();
    let victim = serving.first().cloned().unwrap_or_else(|| "a".into());
    sim.disconnect(&victim, "v");
    sim.nodes.remove(&pid(&victim));
    sim.run(10_000);
    let v = sim.node("v");
    let (meta, data, _, at) = &v.completed[0];
    assert!(meta.matches(data));
    assert!(*at <= 4010, "completed at {at}");
    assert_eq!(v.core.stats().late, 0);
}

#[test]
fn requests_are_served_within_slots_and_hostile_ones_refused() {
    let mut cfg = viewer();
    cfg.upload_slots = 1;
    cfg.max_requests_per_sec = 20;
    let mut core = Core::new(cfg, 1);
    let (meta, data) = segment(5, 50_000);
    core.handle_published(0, meta.clone(), true);
    let Some(Action::HttpGet { req, .. }) = core.poll_action() else {
        panic!("a first fetch")
    };
    core.handle_http_data(100, req, &data);
    core.handle_http_done(100, req);
    while core.poll_action().is_some() {}
    for p in ["p1", "p2", "p3"] {
        core.handle_peer_up(100, pid(p));
    }
    while core.poll_action().is_some() {}
    let req = |seq, offset, length| Frame::Request {
        rendition: r(),
        seq,
        offset,
        length,
    };
    core.handle_frame(200, &pid("p1"), req(5, 0, 0));
    assert!(matches!(
        core.poll_action(),
        Some(Action::Serve {
            from: 0,
            to: 50_000,
            ..
        })
    ));
    // The only slot is taken: busy.
    core.handle_frame(200, &pid("p2"), req(5, 0, 0));
    assert!(matches!(
        core.poll_action(),
        Some(Action::Send {
            frame: Frame::Reject {
                reason: RejectReason::Busy,
                ..
            },
            ..
        })
    ));
    core.handle_upload_done(300, &pid("p1"), r(), 5);
    // A range, then one outside the segment, then a segment outside the window.
    core.handle_frame(300, &pid("p2"), req(5, 40_000, 100));
    assert!(matches!(
        core.poll_action(),
        Some(Action::Serve {
            from: 40_000,
            to: 40_100,
            ..
        })
    ));
    core.handle_frame(300, &pid("p3"), req(5, 60_000, 0));
    assert!(matches!(
        core.poll_action(),
        Some(Action::Send {
            frame: Frame::Reject {
                reason: RejectReason::BadRequest,
                ..
            },
            ..
        })
    ));
    core.handle_frame(300, &pid("p3"), req(999, 0, 0));
    assert!(matches!(
        core.poll_action(),
        Some(Action::Send {
            frame: Frame::Reject {
                reason: RejectReason::NotFound,
                ..
            },
            ..
        })
    ));
    assert_eq!(core.stats().rejected_requests, 3);
    // A flood of requests gets the neighbour dropped.
    for _ in 0..30 {
        core.handle_frame(400, &pid("p3"), req(999, 0, 0));
    }
    let mut dropped = false;
    while let Some(a) = core.poll_action() {
        dropped |= matches!(a, Action::DropPeer { ref peer, reason: DropReason::RequestFlood } if peer.as_str() == "p3");
    }
    assert!(dropped);
    // Chunks nobody asked for are ignored; a lying total drops the sender.
    core.handle_frame(
        500,
        &pid("p2"),
        Frame::Chunk {
            rendition: r(),
            seq: 5,
            offset: 0,
            total: 10,
            data: Bytes::from_static(b"x"),
        },
    );
    assert!(core.poll_action().is_none());
}

#[test]
fn the_window_keeps_the_newest_segments() {
    let mut cfg = viewer();
    cfg.window_segments = 3;
    let mut sim = Sim::new();
    sim.add("v", cfg, Behaviour::Honest);
    for seq in 0..6 {
        sim.publish(seq, 10_000, &["v"]);
        sim.run(sim.now + 2000);
    }
    let v = sim.node("v");
    assert_eq!(v.completed.len(), 6);
    assert_eq!(v.evicted, vec![0, 1, 2]);
    assert_eq!(
        v.core
            .window(&r())
            .iter()
            .map(|m| m.id.seq)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(v.core.segment(&r(), 2).is_none());
    assert!(v.core.segment(&r(), 5).is_some());
}

#[test]
fn a_viewer_ignores_renditions_it_does_not_play() {
    let mut core = Core::new(viewer(), 1);
    let (mut meta, _) = segment(0, 1000);
    meta.id.rendition = RenditionId::new("720p").unwrap();
    core.handle_published(0, meta, true);
    assert!(core.poll_action().is_none());
    core.handle_timeout(10_000);
    assert_eq!(core.stats().late, 0);
    assert!(core.window(&RenditionId::new("720p").unwrap()).is_empty());
}

#[test]
fn the_player_position_pulls_deadlines_in() {
    let mut sim = Sim::new();
    sim.add("v", viewer(), Behaviour::Honest);
    sim.publish(0, 100_000, &[]);
    sim.run(20);
    // The local player asks for it now: HTTP starts at once, not at 3.4 s.
    let now = sim.now;
    sim.node("v").core.handle_playhead(now, 0, now);
    sim.pump(&pid("v"));
    sim.run(5_000);
    assert_eq!(sim.node("v").http_gets[0].0, 20);
}

/// a → b → c in a chain, a fetching from a slow origin: with block hashes,
/// b relays each verified block at once and c each block of b's, so c
/// completes a few ms after a; without (or with cut-through off) each hop
/// waits for the whole segment.
#[test]
fn with_block_hashes_a_relay_streams_blocks_before_it_holds_the_segment() {
    let finish = |cut_through: bool, blocks: bool| {
        let mut sim = Sim::new();
        for id in ["a", "b", "c"] {
            let mut cfg = viewer();
            cfg.cut_through = cut_through;
            sim.add(id, cfg, Behaviour::Honest);
        }
        sim.connect("a", "b");
        sim.connect("b", "c");
        let rec = if blocks {
            segment_with_blocks(0, 300_000)
        } else {
            segment(0, 300_000)
        };
        let meta = sim.publish_record(rec, &["a"]);
        sim.run(10_000);
        let mut at = Vec::new();
        for id in ["a", "b", "c"] {
            let n = sim.node(id);
            assert_eq!(n.completed.len(), 1, "{id}");
            let (m, data, _, t) = &n.completed[0];
            assert_eq!(**m, meta);
            assert!(m.matches(data), "{id}");
            at.push(*t);
        }
        let gets = (
            sim.node("b").http_gets.clone(),
            sim.node("c").http_gets.clone(),
        );
        assert!(
            gets.0.is_empty() && gets.1.is_empty(),
            "cut {cut_through} blocks {blocks}: {gets:?} at {at:?}"
        );
        assert_eq!(sim.node("c").core.stats().p2p_bytes, 300_000);
        assert_eq!(sim.node("b").core.stats().uploaded_bytes, 300_000);
        at
    };
    // HTTP 1000 B/ms: a has the segment about 330 ms after its publish;
    // a hop of the whole segment costs 60 ms at 5000 B/ms plus 5 ms.
    let streamed = finish(true, true);
    let stored = finish(false, true);
    let unhashed = finish(true, false);
    assert!(streamed[2] < streamed[0] + 40, "cut-through: {streamed:?}");
    assert!(
        stored[2] >= stored[0] + 2 * 60,
        "store-and-forward: {stored:?}"
    );
    assert_eq!(stored, unhashed, "no block hashes: store-and-forward");
}

/// A relay streaming blocks to a neighbour gets a corrupted block from its
/// own source: it checks the block before relaying, drops the source, and
/// the neighbour still gets only the origin's bytes.
#[test]
fn a_corrupted_block_is_caught_before_it_is_relayed() {
    let mut sim = Sim::new();
    sim.add("evil", viewer(), Behaviour::Corrupt);
    sim.add("v", viewer(), Behaviour::Honest);
    sim.add("w", viewer(), Behaviour::Honest);
    sim.connect("evil", "v");
    sim.connect("v", "w");
    sim.publish_record(segment_with_blocks(0, 300_000), &["evil"]);
    sim.run(10_000);
    let v = sim.node("v");
    assert_eq!(v.dropped, vec![(pid("evil"), DropReason::HashMismatch)]);
    // Caught at the first block: v never took a full segment's bytes from evil.
    // (plus the rest of the chunk that completed the block)
    let p2p = v.core.stats().p2p_bytes;
    assert!(
        p2p <= u64::from(BLOCK_SIZE) + MAX_CHUNK_DATA as u64,
        "{p2p}"
    );
    for id in ["v", "w"] {
        let n = sim.node(id);
        let (meta, data, _, at) = &n.completed[0];
        assert!(meta.matches(data), "{id} delivered bytes that do not match");
        assert!(*at <= 4010, "{id} completed at {at}");
        assert!(
            n.dropped.iter().all(|(p, _)| p.as_str() == "evil"),
            "{id} dropped an honest peer"
        );
    }
}

/// Pieces (`piece_blocks`): a viewer with two holders gets different
/// pieces of one segment from each at once, every byte checked, none over
/// HTTP; a viewer with one holder gets every piece from it back to back
/// (the next piece queued behind the one in flight).
#[test]
fn pieces_come_from_several_holders_at_once() {
    let mut sim = Sim::new();
    let pieces = || {
        let mut cfg = viewer();
        cfg.piece_blocks = 1;
        cfg.sources_per_segment = 4;
        cfg
    };
    sim.add("h1", viewer(), Behaviour::Honest);
    sim.add("h2", viewer(), Behaviour::Honest);
    sim.add("v", pieces(), Behaviour::Honest);
    sim.add("w", pieces(), Behaviour::Honest);
    sim.connect("h1", "v");
    sim.connect("h2", "v");
    sim.connect("h1", "w");
    // Both holders fetch it first; v and w hear of it once they hold it.
    let meta = sim.publish_record(segment_with_blocks(0, 600_000), &["h1", "h2"]);
    sim.run(10_000);
    for id in ["v", "w"] {
        let n = sim.node(id);
        assert_eq!(n.completed.len(), 1, "{id}");
        assert!(meta.matches(&n.completed[0].1), "{id}");
        assert!(n.http_gets.is_empty(), "{id}: {:?}", n.http_gets);
        assert_eq!(n.core.stats().p2p_bytes, 600_000, "{id}");
    }
    let asked = |sim: &mut Sim, from: &str, to: &str| -> Vec<(u32, u32)> {
        sim.node(from)
            .sent
            .iter()
            .filter_map(|(p, f)| match f {
                Frame::Request { offset, length, .. } if p.as_str() == to => {
                    Some((*offset, *length))
                }
                _ => None,
            })
            .collect()
    };
    let (v1, v2) = (asked(&mut sim, "v", "h1"), asked(&mut sim, "v", "h2"));
    assert!(
        !v1.is_empty() && !v2.is_empty(),
        "v asked both: {v1:?} {v2:?}"
    );
    // Pieces of one block each; the last one "to the end".
    let block = BLOCK_SIZE;
    for &(o, l) in v1.iter().chain(&v2) {
        assert_eq!(o % block, 0);
        assert!(l == block || (l == 0 && o + block >= 600_000), "{o} {l}");
    }
    let up = |sim: &mut Sim, id: &str| sim.node(id).core.stats().uploaded_bytes;
    assert!(up(&mut sim, "h1") > 600_000 && up(&mut sim, "h2") > 0);
    // w: one holder, every piece from it, none refused.
    let w = asked(&mut sim, "w", "h1");
    assert_eq!(w.len(), 600_000usize.div_ceil(block as usize), "{w:?}");
    assert_eq!(sim.node("h1").core.stats().rejected_requests, 0);
}

/// The tracker's stripe plan (`ServerMsg::Stripes`) given to one node.
fn plan(sim: &mut Sim, id: &str, sources: &[Option<&str>], children: &[&str]) {
    use swarmcast_proto::tracker::StripeSource;
    let sources = sources
        .iter()
        .map(|s| match s {
            None => StripeSource::Origin,
            Some(p) => StripeSource::Peer { peer_id: pid(p) },
        })
        .collect();
    let children = children.iter().map(|c| pid(c)).collect();
    sim.node(id).core.handle_stripes(0, r(), sources, children);
}

/// Two stripes of 5 blocks each: `a` and `b` are the roots (each fetches
/// its stripe over HTTP, then the other's from the other), `c` gets one
/// stripe from each, `d` one from `c` and one from `b`. `d` and `c` learn of
/// the segment before `a` and `b` do: their requests wait for it. The
/// origin sends one copy in all, every node completes before its deadline,
/// and nobody else touches HTTP.
#[test]
fn a_stripe_plan_brings_each_stripe_from_its_source_and_one_copy_from_the_origin() {
    let mut sim = Sim::new();
    for id in ["a", "b", "c", "d"] {
        sim.add(id, viewer(), Behaviour::Honest);
    }
    for (x, y) in [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("b", "d")] {
        sim.connect(x, y);
    }
    plan(&mut sim, "a", &[None, Some("b")], &["b", "c"]);
    plan(&mut sim, "b", &[Some("a"), None], &["a", "c", "d"]);
    plan(&mut sim, "c", &[Some("a"), Some("b")], &["d"]);
    plan(&mut sim, "d", &[Some("c"), Some("b")], &[]);
    let size = 10 * BLOCK_SIZE as usize;
    let half = 5 * u64::from(BLOCK_SIZE);
    let (meta, data) = segment_with_blocks(0, size);
    sim.origin.insert(0, data);
    for (id, at) in [("d", 5), ("c", 5), ("a", 40), ("b", 40)] {
        sim.at(
            at,
            Ev::Published {
                node: pid(id),
                meta: meta.clone(),
                first: false,
            },
        );
    }
    sim.run(10_000);
    for id in ["a", "b", "c", "d"] {
        let n = sim.node(id);
        assert_eq!(n.completed.len(), 1, "{id} completed");
        let (m, data, _, t) = &n.completed[0];
        assert!(m.matches(data), "{id}");
        assert!(*t < 4000, "{id} completed at {t} ms, after its deadline");
    }
    assert_eq!(sim.node("a").http_gets, vec![(40, 0, 0)]);
    assert_eq!(sim.node("b").http_gets, vec![(40, 0, half)]);
    let http: u64 = ["a", "b", "c", "d"]
        .iter()
        .map(|id| sim.node(id).core.stats().http_bytes)
        .sum();
    assert_eq!(http, size as u64, "one copy from the origin");
    for id in ["c", "d"] {
        assert!(sim.node(id).http_gets.is_empty(), "{id} used HTTP");
        assert_eq!(sim.node(id).core.stats().p2p_bytes, size as u64, "{id}");
    }
    // Each planned source sent its stripe, once.
    assert_eq!(sim.node("a").core.stats().uploaded_bytes, 2 * half);
    assert_eq!(sim.node("c").core.stats().uploaded_bytes, half);
    // Nobody was refused.
    for id in ["a", "b", "c", "d"] {
        assert_eq!(sim.node(id).core.stats().rejected_requests, 0, "{id}");
    }
}

/// `c` relays stripe 0 to `d`, but its own source for it (`a`) is gone:
/// `c` fetches that stripe over HTTP at once instead of at the last safe
/// moment, so `d`'s stripe keeps coming from `c`.
#[test]
fn a_relay_whose_planned_source_is_gone_fetches_the_stripe_at_once() {
    let mut sim = Sim::new();
    for id in ["b", "c", "d"] {
        sim.add(id, viewer(), Behaviour::Honest);
    }
    for (x, y) in [("b", "c"), ("c", "d"), ("b", "d")] {
        sim.connect(x, y);
    }
    // `a` is in c's plan but not linked to it.
    plan(&mut sim, "b", &[Some("a"), None], &["c", "d"]);
    plan(&mut sim, "c", &[Some("a"), Some("b")], &["d"]);
    plan(&mut sim, "d", &[Some("c"), Some("b")], &[]);
    let size = 10 * BLOCK_SIZE as usize;
    let half = 5 * u64::from(BLOCK_SIZE);
    let meta = sim.publish_record(segment_with_blocks(0, size), &[]);
    sim.run(10_000);
    let c_gets = sim.node("c").http_gets.clone();
    assert_eq!(c_gets.len(), 1, "{c_gets:?}");
    let (at, _, from) = c_gets[0];
    assert_eq!(from, 0);
    assert!(at < 500, "c fetched its orphaned stripe at {at} ms");
    let n = sim.node("d");
    assert_eq!(n.completed.len(), 1);
    assert!(n.completed[0].0.id == meta.id && n.completed[0].3 < 4000);
    assert!(n.http_gets.is_empty(), "d used HTTP: {:?}", n.http_gets);
    assert_eq!(n.core.stats().p2p_bytes, size as u64);
    // b (whose source for stripe 0 is gone too, with no child waiting)
    // takes it from a holder: no second copy from the origin.
    let http: u64 = ["b", "c", "d"]
        .iter()
        .map(|id| sim.node(id).core.stats().http_bytes)
        .sum();
    assert_eq!(http, 2 * half);
}

/// Both planned sources of `v` are too slow for the deadline: `v` gives
/// both stripes up and fetches what is left of them in one HTTP request
/// (one round trip at the deadline, not one per stripe), in time.
#[test]
fn stripes_given_up_together_come_back_in_one_http_request() {
    let mut sim = Sim::new();
    sim.add("p", viewer(), Behaviour::Slow(100));
    sim.add("q", viewer(), Behaviour::Slow(100));
    sim.add("v", viewer(), Behaviour::Honest);
    sim.connect("p", "v");
    sim.connect("q", "v");
    plan(&mut sim, "p", &[None, None], &["v"]);
    plan(&mut sim, "q", &[None, None], &["v"]);
    plan(&mut sim, "v", &[Some("p"), Some("q")], &[]);
    let size = 40 * BLOCK_SIZE as usize;
    let meta = sim.publish_record(segment_with_blocks(0, size), &[]);
    sim.run(10_000);
    let n = sim.node("v");
    assert_eq!(n.completed.len(), 1);
    let (m, data, source, t) = &n.completed[0];
    assert!(m.id == meta.id && m.matches(data));
    assert_eq!(*source, Source::Mixed);
    assert!(*t < 4000, "completed at {t} ms");
    assert!(n.core.stats().p2p_bytes > 0);
    assert_eq!(n.http_gets.len(), 1, "{:?}", n.http_gets);
}
