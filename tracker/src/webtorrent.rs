//! The sans-IO core of the WebTorrent tracker endpoint: one [`WtSwarm`] per
//! info hash, holding its peers, the offers relayed to them that still wait
//! for an answer, and its counts. The tokio shell is
//! [`crate::webtorrent_server`]; the protocol's messages are
//! [`swarmcast_proto::webtorrent`].
//!
//! Rules (written out in `docs/webtorrent-protocol.md`):
//! - A peer is an `(info_hash, peer_id)` bound to one connection; another
//!   connection announcing the same pair is refused (`peer_id_taken`), so a
//!   peer cannot be hijacked by someone who saw its id in a relayed offer.
//! - Each offer of an announce goes to a distinct other peer, chosen at
//!   random; at most `min(offers, numwant, max_offers)` are relayed.
//! - An answer is relayed only if it matches an offer this tracker relayed
//!   from the peer it names to the answering peer, with that `offer_id`,
//!   within `offer_ttl_ms`; each offer is answered at most once. Anything
//!   else is dropped and counted, and the answering peer is warned.
//! - `stopped` removes the peer; so does the end of its connection (the
//!   reference client never sends `stopped` when a page closes).
//!
//! **Invariant:** reads no clock (callers pass `now_ms`) and does no I/O; its
//! randomness is the caller's generator.

use rand::Rng;
use std::collections::{HashMap, VecDeque};
use swarmcast_proto::webtorrent::{self as wt, Announce, BinId, Event, ScrapeFile};

/// Settings of the WebTorrent endpoint's swarms.
#[derive(Debug, Clone)]
pub struct WtConfig {
    /// Most offers relayed per announce (more are ignored, with a warning).
    pub max_offers: usize,
    /// How long a relayed offer waits for its answer, ms.
    pub offer_ttl_ms: u64,
    /// Offers per peer waiting for an answer; the oldest goes first.
    pub max_pending_offers: usize,
    /// `interval` in announce replies, s.
    pub interval_s: u32,
    /// Most peers in one swarm.
    pub max_peers: usize,
}

impl Default for WtConfig {
    fn default() -> Self {
        Self {
            max_offers: 10,
            offer_ttl_ms: 120_000,
            max_pending_offers: 100,
            interval_s: 120,
            max_peers: 20_000,
        }
    }
}

/// A message the announce sends to another peer; the shell encodes it
/// ([`Relay::encode`]) only if the recipient's queue has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// The announce's offer at this index.
    Offer(usize),
    /// The announce's answer.
    Answer,
}

impl Relay {
    /// The relayed message's text.
    pub fn encode(self, a: &Announce<'_>) -> String {
        match (self, &a.answer) {
            (Relay::Offer(k), _) => wt::relayed_offer(&a.info_hash, &a.peer_id, &a.offers[k]),
            (Relay::Answer, Some(ans)) => wt::relayed_answer(&a.info_hash, &a.peer_id, ans),
            (Relay::Answer, None) => String::new(),
        }
    }
}

/// Why an announce was refused (the `failure reason` sent, and a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `peer_id` belongs to another connection in this swarm.
    PeerIdTaken,
    /// The swarm has `max_peers` peers.
    SwarmFull,
}

impl Refusal {
    /// Label for counters.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::PeerIdTaken => "peer_id_taken",
            Refusal::SwarmFull => "swarm_full",
        }
    }

    /// The `failure reason` text.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::PeerIdTaken => "peer_id is used by another connection in this swarm",
            Refusal::SwarmFull => "swarm is full",
        }
    }
}

/// What an announce changed and what it sends back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The announce reply for the announcing connection.
    pub reply: String,
    /// The peer is new in this swarm.
    pub joined: bool,
    /// The peer left this swarm (`stopped`).
    pub left: bool,
    /// Offers not relayed: beyond the cap or `numwant`, or no other peer.
    pub offers_unrelayed: u32,
    /// An answer was dropped: why (`unknown_peer`, `no_offer`).
    pub answer_dropped: Option<&'static str>,
}

#[derive(Debug)]
struct Pending {
    answerer: BinId,
    offer_id: BinId,
    expires_ms: u64,
}

#[derive(Debug)]
struct Peer<L> {
    id: BinId,
    conn: u64,
    link: L,
    seeder: bool,
    /// Offers relayed from this peer, oldest first.
    pending: VecDeque<Pending>,
}

/// One swarm (info hash). `L` is the shell's handle to a connection (its
/// outgoing queue); the core only clones it into outputs.
#[derive(Debug)]
pub struct WtSwarm<L> {
    peers: Vec<Peer<L>>,
    index: HashMap<BinId, u32>,
    seeders: usize,
    downloaded: u64,
}

impl<L> Default for WtSwarm<L> {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            index: HashMap::new(),
            seeders: 0,
            downloaded: 0,
        }
    }
}

impl<L: Clone> WtSwarm<L> {
    /// Peers in the swarm.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Seeders and leechers (`complete`, `incomplete`).
    pub fn counts(&self) -> (usize, usize) {
        (self.seeders, self.peers.len() - self.seeders)
    }

    /// The scrape entry of this swarm.
    pub fn scrape(&self) -> ScrapeFile {
        ScrapeFile {
            complete: self.seeders,
            incomplete: self.peers.len() - self.seeders,
            downloaded: self.downloaded,
        }
    }

    /// Handles one announce from connection `conn.0` (reachable at `conn.1`).
    /// Relayed offers and answers are pushed to `out` as (recipient, what).
    pub fn announce(
        &mut self,
        cfg: &WtConfig,
        now_ms: u64,
        (conn, link): (u64, &L),
        a: &Announce<'_>,
        rng: &mut impl Rng,
        out: &mut Vec<(L, Relay)>,
    ) -> Result<Outcome, Refusal> {
        let mut o = Outcome::default();
        let known = self.index.get(&a.peer_id).copied();
        if let Some(i) = known {
            if self.peers[i as usize].conn != conn {
                return Err(Refusal::PeerIdTaken);
            }
        }
        let mut warning: Option<String> = None;
        if a.event == Event::Stopped {
            if let Some(i) = known {
                self.remove_at(i as usize);
                o.left = true;
            }
            o.offers_unrelayed = a.offers.len() as u32;
        } else {
            let me = match known {
                Some(i) => i as usize,
                None => {
                    if self.peers.len() >= cfg.max_peers {
                        return Err(Refusal::SwarmFull);
                    }
                    self.index.insert(a.peer_id, self.peers.len() as u32);
                    self.peers.push(Peer {
                        id: a.peer_id,
                        conn,
                        link: link.clone(),
                        seeder: false,
                        pending: VecDeque::new(),
                    });
                    o.joined = true;
                    self.peers.len() - 1
                }
            };
            let seeder = a.event == Event::Completed || a.left == Some(0.0);
            if a.event == Event::Completed {
                self.downloaded += 1;
            }
            let p = &mut self.peers[me];
            if seeder != p.seeder {
                p.seeder = seeder;
                if seeder {
                    self.seeders += 1;
                } else {
                    self.seeders -= 1;
                }
            }
            if !a.offers.is_empty() {
                let wanted = a
                    .numwant
                    .map_or(usize::MAX, |n| if n > 0.0 { n as usize } else { 0 });
                let cap = a.offers.len().min(cfg.max_offers).min(wanted);
                if a.offers.len() > cfg.max_offers {
                    warning = Some(format!(
                        "only {} offers per announce are relayed",
                        cfg.max_offers
                    ));
                }
                let picked = self.pick_others(me, cap, rng);
                for (k, (offer, &to)) in a.offers.iter().zip(&picked).enumerate() {
                    let to = to as usize;
                    let answerer = self.peers[to].id;
                    out.push((self.peers[to].link.clone(), Relay::Offer(k)));
                    let pending = &mut self.peers[me].pending;
                    if pending.len() >= cfg.max_pending_offers {
                        // Full: the expired go first, else the oldest.
                        pending.retain(|p| p.expires_ms > now_ms);
                        if pending.len() >= cfg.max_pending_offers {
                            pending.pop_front();
                        }
                    }
                    pending.push_back(Pending {
                        answerer,
                        offer_id: offer.offer_id,
                        expires_ms: now_ms + cfg.offer_ttl_ms,
                    });
                }
                o.offers_unrelayed = (a.offers.len() - picked.len()) as u32;
            }
            if let Some(ans) = &a.answer {
                match self.index.get(&ans.to_peer_id).copied() {
                    None => o.answer_dropped = Some("unknown_peer"),
                    Some(j) => {
                        let offerer = &mut self.peers[j as usize];
                        let found = offerer.pending.iter().position(|p| {
                            p.answerer == a.peer_id
                                && p.offer_id == ans.offer_id
                                && p.expires_ms > now_ms
                        });
                        match found {
                            Some(k) => {
                                offerer.pending.remove(k);
                                out.push((offerer.link.clone(), Relay::Answer));
                            }
                            None => o.answer_dropped = Some("no_offer"),
                        }
                    }
                }
                if o.answer_dropped.is_some() {
                    warning = Some(
                        "answer dropped: no matching offer (expired, already answered, or never sent)"
                            .into(),
                    );
                }
            }
        }
        let (complete, incomplete) = self.counts();
        o.reply = wt::announce_reply(
            &a.info_hash,
            complete,
            incomplete,
            cfg.interval_s,
            warning.as_deref(),
        );
        Ok(o)
    }

    /// Removes `peer_id` if connection `conn` owns it (its socket closed).
    /// Returns whether it was there.
    pub fn remove(&mut self, peer_id: &BinId, conn: u64) -> bool {
        match self.index.get(peer_id).copied() {
            Some(i) if self.peers[i as usize].conn == conn => {
                self.remove_at(i as usize);
                true
            }
            _ => false,
        }
    }

    fn remove_at(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.index.remove(&p.id);
        if p.seeder {
            self.seeders -= 1;
        }
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.id, i as u32);
        }
    }

    /// Up to `k` distinct peers other than `me`, at random.
    fn pick_others(&self, me: usize, k: usize, rng: &mut impl Rng) -> Vec<u32> {
        let n = self.peers.len();
        let others = n - 1;
        if k == 0 || others == 0 {
            return Vec::new();
        }
        if others <= 2 * k {
            let mut all: Vec<u32> = (0..n as u32).filter(|&i| i as usize != me).collect();
            for i in 0..k.min(all.len()) {
                let j = rng.random_range(i..all.len());
                all.swap(i, j);
            }
            all.truncate(k);
            return all;
        }
        // Rejection sampling: more than 2k others, so each draw is new with
        // probability above one half.
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let i = rng.random_range(0..n) as u32;
            if i as usize != me && !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;
    use serde_json::value::RawValue;
    use swarmcast_proto::webtorrent::{Answer, Offer};

    fn id(b: u8) -> BinId {
        BinId([b; 20])
    }

    fn sdp() -> Box<RawValue> {
        RawValue::from_string(r#"{"type":"offer","sdp":"v=0"}"#.into()).unwrap()
    }

    fn announce<'a>(peer: u8, offers: &'a [Offer<'a>], answer: Option<Answer<'a>>) -> Announce<'a> {
        Announce {
            info_hash: id(0xaa),
            peer_id: id(peer),
            event: Event::Started,
            left: Some(100.0),
            numwant: None,
            offers: offers.to_vec(),
            answer,
        }
    }

    struct World {
        s: WtSwarm<u8>,
        cfg: WtConfig,
        rng: SmallRng,
        out: Vec<(u8, Relay)>,
    }

    impl World {
        fn new() -> Self {
            Self {
                s: WtSwarm::default(),
                cfg: WtConfig::default(),
                rng: SmallRng::seed_from_u64(1),
                out: Vec::new(),
            }
        }
        /// Peer `p` on connection `p` announces; `out` then holds what
        /// this announce relayed.
        fn ann(&mut self, now: u64, a: &Announce<'_>) -> Result<Outcome, Refusal> {
            self.out.clear();
            let p = a.peer_id.0[0];
            self.s.announce(
                &self.cfg,
                now,
                (u64::from(p), &p),
                a,
                &mut self.rng,
                &mut self.out,
            )
        }
    }

    /// Offers and answers the last announce relayed.
    fn relayed(w: &World) -> (usize, usize) {
        let offers = w
            .out
            .iter()
            .filter(|(_, r)| matches!(r, Relay::Offer(_)))
            .count();
        (offers, w.out.len() - offers)
    }

    #[test]
    fn offers_go_to_distinct_others_and_only_matching_answers_come_back() {
        let mut w = World::new();
        for p in 1..=6 {
            assert!(w.ann(0, &announce(p, &[], None)).unwrap().joined);
        }
        let raw = sdp();
        let offers: Vec<Offer<'_>> = (0..4)
            .map(|k| Offer {
                offer_id: id(100 + k),
                offer: &raw,
            })
            .collect();
        let o = w.ann(10, &announce(1, &offers, None)).unwrap();
        assert_eq!((relayed(&w).0, o.offers_unrelayed), (4, 0));
        let mut to: Vec<u8> = w.out.iter().map(|(l, _)| *l).collect();
        to.sort_unstable();
        to.dedup();
        assert_eq!(to.len(), 4, "distinct recipients");
        assert!(!to.contains(&1), "never the offering peer");
        let (answerer, Relay::Offer(k)) = w.out[0] else {
            panic!("not an offer")
        };
        let a = announce(1, &offers, None);
        let v: serde_json::Value = serde_json::from_str(&w.out[0].1.encode(&a)).unwrap();
        let offer_id = offers[k].offer_id;
        assert_eq!(
            BinId::from_binary_str(v["offer_id"].as_str().unwrap()).unwrap(),
            offer_id
        );
        assert_eq!(
            BinId::from_binary_str(v["peer_id"].as_str().unwrap()).unwrap(),
            id(1),
            "the offer names the offering peer"
        );
        let ans_raw = RawValue::from_string(r#"{"type":"answer","sdp":"a"}"#.into()).unwrap();
        let answer = |to: u8, oid: BinId| Answer {
            to_peer_id: id(to),
            offer_id: oid,
            answer: &ans_raw,
        };
        // A peer that did not get this offer cannot answer it.
        let other = (2..=6).find(|p| !to.contains(p)).unwrap();
        let o = w
            .ann(20, &announce(other, &[], Some(answer(1, offer_id))))
            .unwrap();
        assert_eq!(o.answer_dropped, Some("no_offer"));
        assert!(o.reply.contains("warning message"));
        // The right one can, once.
        let o = w
            .ann(20, &announce(answerer, &[], Some(answer(1, offer_id))))
            .unwrap();
        assert_eq!(o.answer_dropped, None);
        assert_eq!(relayed(&w), (0, 1));
        assert_eq!(w.out.len(), 1);
        assert_eq!(w.out[0].0, 1);
        let o = w
            .ann(21, &announce(answerer, &[], Some(answer(1, offer_id))))
            .unwrap();
        assert_eq!(o.answer_dropped, Some("no_offer"), "answered twice");
        // To a peer that is not there.
        let o = w
            .ann(22, &announce(answerer, &[], Some(answer(77, offer_id))))
            .unwrap();
        assert_eq!(o.answer_dropped, Some("unknown_peer"));
    }

    #[test]
    fn an_expired_offer_cannot_be_answered() {
        let mut w = World::new();
        w.ann(0, &announce(1, &[], None)).unwrap();
        w.ann(0, &announce(2, &[], None)).unwrap();
        let raw = sdp();
        let offers = [Offer {
            offer_id: id(9),
            offer: &raw,
        }];
        w.ann(0, &announce(1, &offers, None)).unwrap();
        assert_eq!(w.out[0].0, 2);
        let ans = Answer {
            to_peer_id: id(1),
            offer_id: id(9),
            answer: &raw,
        };
        let late = w.cfg.offer_ttl_ms + 1;
        let o = w.ann(late, &announce(2, &[], Some(ans))).unwrap();
        assert_eq!(o.answer_dropped, Some("no_offer"));
    }

    #[test]
    fn caps_numwant_stopped_and_ownership() {
        let mut w = World::new();
        w.cfg.max_offers = 3;
        w.cfg.max_peers = 8;
        for p in 1..=8 {
            w.ann(0, &announce(p, &[], None)).unwrap();
        }
        assert_eq!(w.ann(0, &announce(9, &[], None)), Err(Refusal::SwarmFull));
        let raw = sdp();
        let offers: Vec<Offer<'_>> = (0..5)
            .map(|k| Offer {
                offer_id: id(100 + k),
                offer: &raw,
            })
            .collect();
        let o = w.ann(0, &announce(1, &offers, None)).unwrap();
        assert_eq!((relayed(&w).0, o.offers_unrelayed), (3, 2));
        assert!(o.reply.contains("only 3 offers"));
        let mut a = announce(1, &offers, None);
        a.numwant = Some(1.0);
        w.ann(0, &a).unwrap();
        assert_eq!(relayed(&w).0, 1);
        // Another connection cannot use peer 1's id.
        let hijack = w.s.announce(
            &w.cfg,
            0,
            (99, &99),
            &announce(1, &[], None),
            &mut w.rng,
            &mut w.out,
        );
        assert_eq!(hijack, Err(Refusal::PeerIdTaken));
        assert!(!w.s.remove(&id(1), 99), "nor remove it");
        // Seeders and leechers; stopped; connection close.
        let mut c = announce(2, &[], None);
        c.event = Event::Completed;
        w.ann(0, &c).unwrap();
        assert_eq!(w.s.counts(), (1, 7));
        assert_eq!(w.s.scrape().downloaded, 1);
        let mut s = announce(2, &[], None);
        s.event = Event::Stopped;
        let o = w.ann(0, &s).unwrap();
        assert!(o.left);
        assert_eq!(w.s.counts(), (0, 7));
        assert!(w.s.remove(&id(3), 3));
        assert_eq!(w.s.len(), 6);
        // Every index entry still points at its peer after the swaps.
        for p in [1u8, 4, 5, 6, 7, 8] {
            let i = w.s.index[&id(p)] as usize;
            assert_eq!(w.s.peers[i].id, id(p));
        }
    }

    #[test]
    fn a_lone_peer_relays_nothing_and_two_peers_always_find_each_other() {
        let mut w = World::new();
        let raw = sdp();
        let offers = [Offer {
            offer_id: id(5),
            offer: &raw,
        }; 5];
        let o = w.ann(0, &announce(1, &offers, None)).unwrap();
        assert_eq!((relayed(&w).0, o.offers_unrelayed), (0, 5));
        w.ann(0, &announce(2, &[], None)).unwrap();
        let o = w.ann(0, &announce(1, &offers, None)).unwrap();
        assert_eq!((relayed(&w).0, o.offers_unrelayed), (1, 4));
        assert_eq!(w.out.last().unwrap().0, 2);
    }
}
