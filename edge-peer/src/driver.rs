//! The tokio driver of the swarm core: it feeds the core the tracker's
//! messages, HTTP progress and the player's requests, and carries out the
//! core's actions. One task owns the core.
//!
//! Neighbours are [`link`](crate::link) tasks (one WebRTC data channel
//! each): the tracker introduces them (`peers`), their signalling goes
//! through the tracker, their frames go to the core, and the core's sends
//! and uploads go to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmcast_proto::tracker::{ClientMsg, SegmentRef, ServerMsg, StatsReport};
use swarmcast_swarm_core::{Action, Core};
use swarmcast_tracker::client::{ClientHandle, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use swarmcast_proto::PeerId;
use swarmcast_proto::tracker::Signal;

use crate::fetch::{Fetcher, HttpEvent};
use crate::link::{self, BigBufRuntime, LinkCmd, LinkConfig, LinkEvent, LinkHandle};
use crate::local::{Cache, PlayerEvent};

/// Links an edge takes on the tracker's word at most (the tracker's own
/// ceiling is 4 × its K of 8).
pub const MAX_LINKS: usize = 32;

/// The core's counters exported as Prometheus counters, in the order of
/// the driver's report.
const CORE_COUNTERS: [&str; 5] = [
    "swarmcast_edge_late_segments_total",
    "swarmcast_edge_hash_failures_total",
    "swarmcast_edge_slow_transfers_total",
    "swarmcast_edge_rejected_requests_total",
    "swarmcast_edge_protocol_errors_total",
];

/// Everything the driver owns.
#[derive(Debug)]
pub struct Driver {
    /// The swarm core.
    pub core: Core,
    /// The HTTP fallback.
    pub fetcher: Fetcher,
    /// Verified segments for the local endpoint.
    pub cache: Arc<Cache>,
    /// The tracker.
    pub tracker: ClientHandle,
    /// Settings of new links.
    pub link_cfg: LinkConfig,
    /// The webrtc runtime (big UDP buffers).
    pub runtime: Arc<BigBufRuntime>,
    /// Most neighbours at once.
    pub max_links: usize,
    /// `max_links` follows the tracker's welcome (no `--max-peers`).
    pub links_from_tracker: bool,
    /// The swarm switched off: fetch every segment over HTTP on publish.
    pub http_only: bool,
    /// The stream.
    pub stream: swarmcast_proto::StreamId,
    /// Renditions whose origin index is polled while the tracker is away
    /// (a relay adds every rendition it hears of).
    pub renditions: std::collections::BTreeSet<swarmcast_proto::RenditionId>,
}

impl Driver {
    /// Runs until `shutdown`.
    pub async fn run(
        mut self,
        mut tracker_events: mpsc::Receiver<Event>,
        mut player: mpsc::Receiver<PlayerEvent>,
        shutdown: CancellationToken,
    ) {
        let epoch = Instant::now();
        let now_ms = || epoch.elapsed().as_millis() as u64;
        let (http_tx, mut http_rx) = mpsc::channel::<HttpEvent>(256);
        let mut http_jobs: HashMap<u64, CancellationToken> = HashMap::new();
        let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(4096);
        let mut links: HashMap<PeerId, LinkHandle> = HashMap::new();
        let mut report = tokio::time::interval(Duration::from_secs(2));
        // While the tracker is away, the origin's index tells what exists.
        let mut index_poll = tokio::time::interval(Duration::from_secs(2));
        index_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (index_tx, mut index_rx) = mpsc::channel::<swarmcast_proto::RenditionIndex>(16);
        let mut tracker_up = false;
        let mut stats = StatsReport::default();
        let started = Instant::now();
        let mut exported = [0u64; CORE_COUNTERS.len()];
        let mut first_segment_ms: Option<u64> = None;
        loop {
            let wake = self.core.poll_timeout();
            let sleep = async {
                match wake {
                    Some(t) => {
                        tokio::time::sleep_until((epoch + Duration::from_millis(t)).into()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = tracker_events.recv() => match ev {
                    None => break,
                    Some(Event::Connected(cfg)) => {
                        info!("joined the tracker");
                        tracker_up = true;
                        if self.links_from_tracker {
                            self.max_links = usize::from(cfg.max_peers).clamp(1, MAX_LINKS);
                        }
                        self.link_cfg.ice_servers = cfg.ice_servers;
                    }
                    Some(Event::Disconnected { reason, fatal }) => {
                        warn!(%reason, fatal, "tracker connection lost; the origin's index and HTTP keep playback going");
                        tracker_up = false;
                        if fatal {
                            break;
                        }
                    }
                    Some(Event::Message(ServerMsg::Segment { meta })) => {
                        self.renditions.insert(meta.id.rendition);
                        self.core.handle_published(now_ms(), meta, self.http_only);
                    }
                    Some(Event::Message(ServerMsg::Fetch { meta })) => {
                        self.renditions.insert(meta.id.rendition);
                        self.core.handle_published(now_ms(), meta, true);
                    }
                    Some(Event::Message(ServerMsg::Peers { peers })) => {
                        for p in peers {
                            if !links.contains_key(&p.peer_id) && links.len() < self.max_links {
                                let h = link::spawn(self.link_cfg.clone(), self.runtime.clone(), p.peer_id.clone(), p.initiator, link_tx.clone(), &shutdown);
                                links.insert(p.peer_id, h);
                            }
                        }
                    }
                    Some(Event::Message(ServerMsg::Signal { from, signal })) => {
                        if !links.contains_key(&from) && matches!(signal, Signal::Offer { .. }) && links.len() < self.max_links {
                            let h = link::spawn(self.link_cfg.clone(), self.runtime.clone(), from.clone(), false, link_tx.clone(), &shutdown);
                            links.insert(from.clone(), h);
                        }
                        if let Some(h) = links.get(&from) {
                            let _ = h.tx.try_send(LinkCmd::Remote(signal));
                        }
                    }
                    Some(Event::Message(ServerMsg::Stripes { rendition, sources, children })) => {
                        if !self.http_only {
                            self.core.handle_stripes(now_ms(), rendition, sources, children);
                        }
                    }
                    Some(Event::Message(ServerMsg::PeerLeft { peer_id })) => {
                        if let Some(h) = links.get(&peer_id) {
                            h.stop.cancel();
                        }
                    }
                    Some(Event::Message(other)) => debug!(?other, "tracker message"),
                },
                ev = link_rx.recv() => match ev {
                    None => break,
                    Some(LinkEvent::Signal(to, signal)) => {
                        let _ = self.tracker.send(ClientMsg::Signal { to, signal }).await;
                    }
                    Some(LinkEvent::Open(peer, took)) => {
                        metrics::counter!("swarmcast_edge_links_opened_total").increment(1);
                        metrics::counter!("swarmcast_edge_link_setup_ms_total").increment(took.as_millis() as u64);
                        metrics::histogram!("swarmcast_edge_link_setup_seconds").record(took.as_secs_f64());
                        debug!(%peer, setup_ms = took.as_millis() as u64, "data channel open");
                        self.core.handle_peer_up(now_ms(), peer);
                    }
                    Some(LinkEvent::Frame(peer, frame)) => {
                        if let swarmcast_proto::wire::Frame::Chunk { seq, offset, total, data, .. } = &frame {
                            metrics::counter!("swarmcast_edge_bytes_total", "source" => "p2p").increment(data.len() as u64);
                            if *offset == 0 || *offset as usize + data.len() >= *total as usize {
                                trace!(%peer, seq, offset, total, "chunk in");
                            }
                        } else {
                            trace!(%peer, ?frame, "frame in");
                        }
                        self.core.handle_frame(now_ms(), &peer, frame);
                    }
                    Some(LinkEvent::BadFrame(peer, why)) => {
                        debug!(%peer, %why, "bad frame");
                    }
                    Some(LinkEvent::UploadDone(peer, r, seq)) => {
                        trace!(%peer, seq, "upload done");
                        self.core.handle_upload_done(now_ms(), &peer, r, seq);
                    }
                    Some(LinkEvent::Closed(peer, why)) => {
                        debug!(%peer, why, "link closed");
                        links.remove(&peer);
                        self.core.handle_peer_down(now_ms(), &peer);
                        let _ = self.tracker.send(ClientMsg::PeerClosed { peer_id: peer }).await;
                        if links.len() < self.max_links {
                            let _ = self.tracker.send(ClientMsg::WantPeers { count: 1 }).await;
                        }
                    }
                },
                ev = http_rx.recv() => match ev {
                    Some(HttpEvent::Data(req, data)) => self.core.handle_http_data(now_ms(), req, &data),
                    Some(HttpEvent::Done(req)) => {
                        http_jobs.remove(&req);
                        self.core.handle_http_done(now_ms(), req);
                    }
                    Some(HttpEvent::Failed(req, e)) => {
                        warn!(req, error = %e, "HTTP fetch failed");
                        metrics::counter!("swarmcast_edge_http_failures_total").increment(1);
                        http_jobs.remove(&req);
                        self.core.handle_http_failed(now_ms(), req);
                    }
                    None => break,
                },
                ev = player.recv() => if let Some(PlayerEvent::Wants(_, seq)) = ev {
                    let now = now_ms();
                    self.core.handle_playhead(now, seq, now);
                },
                _ = sleep => self.core.handle_timeout(now_ms()),
                _ = index_poll.tick(), if !tracker_up => {
                    for r in &self.renditions {
                        let (fetcher, stream, r, tx) = (self.fetcher.clone(), self.stream.clone(), *r, index_tx.clone());
                        tokio::spawn(async move {
                            match fetcher.index(&stream, &r).await {
                                Ok(index) => {
                                    let _ = tx.send(index).await;
                                }
                                Err(e) => debug!(error = %e, "origin index unavailable"),
                            }
                        });
                    }
                }
                index = index_rx.recv() => if let Some(index) = index {
                    // Only the newest few: older ones are past their use.
                    let now = now_ms();
                    let n = index.segments.len();
                    for meta in index.segments.into_iter().skip(n.saturating_sub(3)) {
                        self.core.handle_published(now, meta, self.http_only);
                    }
                },
                _ = report.tick() => {
                    self.report(&mut stats, first_segment_ms).await;
                    let s = self.core.stats();
                    // Increments, not absolute values: several edge peers in one
                    // process (the demo, the live benchmark) share one registry.
                    let now_counts = [s.late, s.hash_failures, s.slow_transfers, s.rejected_requests, s.protocol_errors];
                    for (i, name) in CORE_COUNTERS.iter().enumerate() {
                        metrics::counter!(*name).increment(now_counts[i].saturating_sub(exported[i]));
                    }
                    exported = now_counts;
                    metrics::gauge!("swarmcast_edge_neighbours").set(links.len() as f64);
                }
            }
            while let Some(action) = self.core.poll_action() {
                match action {
                    Action::HttpGet {
                        req,
                        meta,
                        from,
                        to,
                    } => {
                        let cancel = CancellationToken::new();
                        http_jobs.insert(req, cancel.clone());
                        tokio::spawn(self.fetcher.clone().fetch(
                            req,
                            meta,
                            from,
                            to,
                            http_tx.clone(),
                            cancel,
                        ));
                    }
                    Action::HttpCancel { req } => {
                        if let Some(c) = http_jobs.remove(&req) {
                            c.cancel();
                        }
                    }
                    Action::Complete { meta, data, source } => {
                        // Startup: joined → the first verified segment.
                        first_segment_ms
                            .get_or_insert_with(|| started.elapsed().as_millis() as u64);
                        debug!(segment = %meta.id, ?source, "segment complete");
                        metrics::counter!("swarmcast_edge_segments_total").increment(1);
                        let have = ClientMsg::Have {
                            segments: vec![SegmentRef {
                                rendition: meta.id.rendition,
                                seq: meta.id.seq,
                            }],
                        };
                        self.cache.insert(meta, data);
                        let _ = self.tracker.send(have).await;
                    }
                    Action::Evicted { rendition, seq } => {
                        self.cache.remove(rendition, seq);
                        let _ = self
                            .tracker
                            .send(ClientMsg::Lost {
                                segments: vec![SegmentRef { rendition, seq }],
                            })
                            .await;
                    }
                    Action::DropPeer { peer, reason } => {
                        warn!(%peer, ?reason, "dropping a neighbour");
                        metrics::counter!("swarmcast_edge_peers_dropped_total").increment(1);
                        let why = match reason {
                            swarmcast_swarm_core::DropReason::HashMismatch => {
                                swarmcast_proto::tracker::ReportReason::HashMismatch
                            }
                            swarmcast_swarm_core::DropReason::Protocol => {
                                swarmcast_proto::tracker::ReportReason::Protocol
                            }
                            swarmcast_swarm_core::DropReason::RequestFlood => {
                                swarmcast_proto::tracker::ReportReason::Flood
                            }
                        };
                        let _ = self
                            .tracker
                            .send(ClientMsg::ReportPeer {
                                peer_id: peer.clone(),
                                reason: why,
                            })
                            .await;
                        if let Some(h) = links.get(&peer) {
                            h.stop.cancel();
                        }
                    }
                    Action::Send { peer, frame } => {
                        trace!(%peer, ?frame, "frame out");
                        if let Some(h) = links.get(&peer) {
                            let _ = h.tx.try_send(LinkCmd::Send(frame));
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
                        trace!(%peer, seq, from, to, "serve");
                        metrics::counter!("swarmcast_edge_uploaded_bytes_total")
                            .increment(u64::from(to - from));
                        match links.get(&peer) {
                            Some(h)
                                if h.tx
                                    .try_send(LinkCmd::Serve {
                                        rendition,
                                        seq,
                                        data,
                                        from,
                                        to,
                                    })
                                    .is_ok() => {}
                            _ => self
                                .core
                                .handle_upload_done(now_ms(), &peer, rendition, seq),
                        }
                    }
                    Action::StopServing {
                        peer,
                        rendition,
                        seq,
                    } => {
                        if let Some(h) = links.get(&peer) {
                            let _ = h.tx.try_send(LinkCmd::Stop { rendition, seq });
                        }
                    }
                }
            }
        }
        for c in http_jobs.into_values() {
            c.cancel();
        }
        for h in links.into_values() {
            h.stop.cancel();
        }
        // The last report: the tracker's totals then match this peer's own
        // once the session has closed after it.
        self.report(&mut stats, first_segment_ms).await;
        self.tracker.close(Duration::from_secs(8)).await;
    }

    /// Sends the core's counts to the tracker.
    async fn report(&self, stats: &mut StatsReport, first_segment_ms: Option<u64>) {
        let s = self.core.stats();
        stats.http_bytes = s.http_bytes;
        stats.p2p_bytes = s.p2p_bytes;
        stats.uploaded_bytes = s.uploaded_bytes;
        stats.stalls = s.late;
        stats.startup_ms = first_segment_ms;
        let _ = self.tracker.send(ClientMsg::Stats(stats.clone())).await;
    }
}
