//! The tokio driver of the swarm core: it feeds the core the tracker's
//! messages, HTTP progress and the player's requests, and carries out the
//! core's actions. One task owns the core.
//!
//! Peer connections (WebRTC data channels) are not wired in yet: the core
//! sees no neighbour, so every segment comes over HTTP at the last safe
//! moment or at once when the tracker makes this peer a first fetcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmcast_proto::tracker::{ClientMsg, SegmentRef, ServerMsg, StatsReport};
use swarmcast_swarm_core::{Action, Core};
use swarmcast_tracker::client::{ClientHandle, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fetch::{Fetcher, HttpEvent};
use crate::local::{Cache, PlayerEvent};

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
        let mut report = tokio::time::interval(Duration::from_secs(2));
        let mut stats = StatsReport::default();
        let started = Instant::now();
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
                    Some(Event::Connected(_)) => info!("joined the tracker"),
                    Some(Event::Disconnected { reason, fatal }) => {
                        warn!(%reason, fatal, "tracker connection lost; HTTP keeps playback going");
                        if fatal {
                            break;
                        }
                    }
                    Some(Event::Message(ServerMsg::Segment { meta })) => self.core.handle_published(now_ms(), meta, false),
                    Some(Event::Message(ServerMsg::Fetch { meta })) => self.core.handle_published(now_ms(), meta, true),
                    Some(Event::Message(other)) => debug!(?other, "tracker message not handled yet"),
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
                _ = report.tick() => {
                    let s = self.core.stats();
                    stats.http_bytes = s.http_bytes;
                    stats.p2p_bytes = s.p2p_bytes;
                    stats.uploaded_bytes = s.uploaded_bytes;
                    stats.stalls = s.late;
                    if stats.startup_ms.is_none() && s.segments > 0 {
                        stats.startup_ms = Some(started.elapsed().as_millis() as u64);
                    }
                    let _ = self.tracker.send(ClientMsg::Stats(stats.clone())).await;
                }
            }
            while let Some(action) = self.core.poll_action() {
                match action {
                    Action::HttpGet { req, meta, from } => {
                        let cancel = CancellationToken::new();
                        http_jobs.insert(req, cancel.clone());
                        tokio::spawn(self.fetcher.clone().fetch(
                            req,
                            meta,
                            from,
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
                    Action::DropPeer { peer, .. } => {
                        metrics::counter!("swarmcast_edge_peers_dropped_total").increment(1);
                        let _ = self
                            .tracker
                            .send(ClientMsg::PeerClosed { peer_id: peer })
                            .await;
                    }
                    Action::Send { .. } | Action::Serve { .. } | Action::StopServing { .. } => {}
                }
            }
        }
        for c in http_jobs.into_values() {
            c.cancel();
        }
    }
}
