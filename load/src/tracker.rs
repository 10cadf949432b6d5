//! The tracker load generator.
//!
//! Phases, all bounded in count and time:
//! 1. **join**: `peers` sessions join one swarm, at most `connect_rate` per
//!    second; each answers the tracker's introductions with an SDP offer to
//!    up to `signal_neighbours` of its neighbours (who answer), like a
//!    WebRTC mesh forming.
//! 2. **idle**: the tracker's resident memory is read and divided by the
//!    number of sessions.
//! 3. **live**: a publisher publishes `segments` records, one every
//!    `interval_ms`; each peer timestamps the record's arrival (same process,
//!    same clock) and announces `have` after a random fetch time.
//! 4. **saturation**: every peer sends `have`/`stats` messages as fast as
//!    the tracker takes them, for `saturation_secs`.
//!
//! Messages handled per second come from the tracker's own counters
//! (`/metrics`): messages received plus messages sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use serde::Serialize;
use swarmcast_proto::tracker::{
    ClientKind, ClientMsg, Hello, SegmentRef, ServerMsg, Signal, StatsReport,
};
use swarmcast_proto::{
    Claims, PeerId, RenditionId, Role, SegmentId, SegmentMeta, Sha256Digest, StreamId, TokenKey,
};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::LoadError;
use crate::stat::{cpu_secs, now_ms, percentile, rss};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct TrackerBench {
    /// Tracker address (host:port) — plain WebSocket on loopback.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub tracker: String,
    /// The tracker's token secret.
    #[arg(long, env = "SWARMCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
    /// PID of the tracker, to read its CPU time and resident memory.
    #[arg(long)]
    pub tracker_pid: Option<u32>,
    /// Sessions to open.
    #[arg(long, default_value_t = 1000)]
    pub peers: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    /// Neighbours each peer sends an offer to.
    #[arg(long, default_value_t = 2)]
    pub signal_neighbours: usize,
    /// Records to publish in the live phase.
    #[arg(long, default_value_t = 10)]
    pub segments: u64,
    /// Interval between publishes, ms.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Longest simulated fetch before a peer announces `have`, ms.
    #[arg(long, default_value_t = 500)]
    pub fetch_ms: u64,
    /// Length of the saturation phase, seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub saturation_secs: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Sessions that joined.
    pub peers_joined: usize,
    /// Seconds the joins took.
    pub join_secs: f64,
    /// Tracker resident memory before the peers joined, bytes.
    pub rss_before: Option<u64>,
    /// Tracker resident memory with every peer joined and idle, bytes.
    pub rss_idle: Option<u64>,
    /// (rss_idle - rss_before) / peers, bytes.
    pub rss_per_idle_peer: Option<f64>,
    /// Records published.
    pub segments: u64,
    /// Deliveries of published records (one per peer per record).
    pub deliveries: usize,
    /// Expected deliveries (peers × records).
    pub deliveries_expected: usize,
    /// Publish → delivery latency over every delivery, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Worst, ms.
    pub latency_max_ms: f64,
    /// Publish → last peer, per record: the median over records, ms.
    pub reach_all_median_ms: f64,
    /// Publish → last peer, the worst record, ms.
    pub reach_all_max_ms: f64,
    /// Tracker messages (in + out) per second during the live phase.
    pub live_msgs_per_sec: f64,
    /// Tracker CPU during the live phase, cores.
    pub live_cpu_cores: Option<f64>,
    /// Tracker messages (in + out) per second during saturation.
    pub saturation_msgs_per_sec: f64,
    /// Tracker CPU during saturation, cores.
    pub saturation_cpu_cores: Option<f64>,
    /// Signals relayed by the tracker over the run.
    pub signals_relayed: f64,
}

async fn tracker_counter(addr: &str, names: &[&str]) -> f64 {
    let Ok(resp) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| names.iter().any(|n| l.starts_with(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const HANDLED: [&str; 2] = [
    "swarmcast_tracker_messages_total",
    "swarmcast_tracker_messages_sent_total",
];

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn join(url: &str, hello: Hello) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(ClientMsg::Hello(hello).encode()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m.map_err(|e| e.to_string())? {
            match ServerMsg::decode(t.as_str()) {
                Ok(ServerMsg::Welcome { .. }) => return Ok(ws),
                Ok(ServerMsg::Error { code, message }) => {
                    return Err(format!("{code:?}: {message}"));
                }
                _ => {}
            }
        }
    }
    Err("closed before the welcome".into())
}

/// Shared between the peer tasks and the driver.
struct Shared {
    /// Publish time (ms) by seq; 0 until published.
    published: Vec<AtomicU64>,
    saturating: AtomicU64,
    done: tokio_util::sync::CancellationToken,
}

/// One simulated viewer; returns its (seq, latency ms) deliveries.
async fn peer(
    mut ws: Ws,
    shared: Arc<Shared>,
    neighbours: usize,
    fetch_ms: u64,
) -> Vec<(u64, u64)> {
    let rendition = RenditionId::new("360p").expect("valid rendition");
    let mut deliveries = Vec::new();
    // Saturation traffic, encoded once: a have (swarm work) and a stats
    // report (session work), alternating, in batches.
    let sat: [Message; 2] = [
        Message::text(
            ClientMsg::Have {
                segments: vec![SegmentRef { rendition, seq: 3 }],
            }
            .encode(),
        ),
        Message::text(
            ClientMsg::Stats(StatsReport {
                http_bytes: 1,
                p2p_bytes: 3,
                ..StatsReport::default()
            })
            .encode(),
        ),
    ];
    let mut offered = 0usize;
    let mut pending_have: Vec<(tokio::time::Instant, u64)> = Vec::new();
    let done = shared.done.clone().cancelled_owned();
    tokio::pin!(done);
    loop {
        let saturating = shared.saturating.load(Ordering::Relaxed) == 1;
        let next_due = pending_have.iter().map(|(t, _)| *t).min();
        tokio::select! {
            _ = &mut done => {
                let _ = ws.close(None).await;
                return deliveries;
            }
            m = ws.next() => {
                let t = now_ms();
                let Some(Ok(m)) = m else { return deliveries };
                let Message::Text(text) = m else { continue };
                let Ok(msg) = ServerMsg::decode(text.as_str()) else { continue };
                match msg {
                    ServerMsg::Peers { peers } => {
                        for p in peers.into_iter().filter(|p| p.initiator) {
                            if offered < neighbours {
                                offered += 1;
                                let sdp = format!("v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n", rand::random::<u32>());
                                let offer = ClientMsg::Signal { to: p.peer_id, signal: Signal::Offer { sdp } };
                                                if ws.send(Message::text(offer.encode())).await.is_err() { return deliveries; }
                            }
                        }
                    }
                    ServerMsg::Signal { from, signal: Signal::Offer { sdp } } => {
                        let answer = ClientMsg::Signal { to: from.clone(), signal: Signal::Answer { sdp } };
                        let cand = ClientMsg::Signal { to: from, signal: Signal::Candidate { candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into(), sdp_mid: Some("0".into()), sdp_mline_index: Some(0) } };
                        if ws.send(Message::text(answer.encode())).await.is_err() { return deliveries; }
                        if ws.send(Message::text(cand.encode())).await.is_err() { return deliveries; }
                    }
                    ServerMsg::Segment { meta } | ServerMsg::Fetch { meta } => {
                        let seq = meta.id.seq;
                        if let Some(at) = shared.published.get(seq as usize).map(|a| a.load(Ordering::Relaxed)).filter(|a| *a > 0) {
                            deliveries.push((seq, t.saturating_sub(at)));
                        }
                        let delay = rand::rng().random_range(0..=fetch_ms);
                        pending_have.push((tokio::time::Instant::now() + Duration::from_millis(delay), seq));
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                let now = tokio::time::Instant::now();
                let due: Vec<u64> = pending_have.iter().filter(|(t, _)| *t <= now).map(|(_, s)| *s).collect();
                pending_have.retain(|(t, _)| *t > now);
                if !due.is_empty() {
                    let m = ClientMsg::Have { segments: due.into_iter().map(|seq| SegmentRef { rendition, seq }).collect() };
                    if ws.send(Message::text(m.encode())).await.is_err() { return deliveries; }
                }
            }
            _ = async {}, if saturating => {
                for i in 0..16 {
                    if ws.feed(sat[i % 2].clone()).await.is_err() { return deliveries; }
                }
                if ws.flush().await.is_err() { return deliveries; }
            }
        }
    }
}

/// Runs the benchmark.
pub async fn run(cfg: TrackerBench) -> Result<Report, LoadError> {
    if cfg.peers == 0 || cfg.connect_rate == 0 {
        return Err(LoadError::Config(
            "--peers and --connect-rate must be at least 1".into(),
        ));
    }
    let url = format!("ws://{}/v1/ws", cfg.tracker);
    let key = TokenKey::new(cfg.token_secret.as_bytes());
    let stream = StreamId::new("bench").map_err(|e| LoadError::Config(e.to_string()))?;
    let exp = now_ms() / 1000 + 3600;
    let viewer_token = key.sign(&Claims {
        stream: stream.clone(),
        role: Role::Viewer,
        expires_at: exp,
    });
    let ingest_token = key.sign(&Claims {
        stream: stream.clone(),
        role: Role::Ingest,
        expires_at: exp,
    });
    let shared = Arc::new(Shared {
        published: (0..cfg.segments).map(|_| AtomicU64::new(0)).collect(),
        saturating: AtomicU64::new(0),
        done: tokio_util::sync::CancellationToken::new(),
    });
    let rss_before = cfg.tracker_pid.and_then(rss);

    // 1. join
    eprintln!("joining {} peers at {}/s", cfg.peers, cfg.connect_rate);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut joins = tokio::task::JoinSet::new();
    let regions = ["eu", "us", "asia", "sa"];
    for i in 0..cfg.peers {
        let due = started + Duration::from_secs_f64(i as f64 / f64::from(cfg.connect_rate));
        tokio::time::sleep_until(due.into()).await;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Run(e.to_string()))?;
        let id = PeerId::new(format!("p{i}")).map_err(|e| LoadError::Run(e.to_string()))?;
        let hello = Hello {
            token: viewer_token.clone(),
            stream: stream.clone(),
            peer_id: id.clone(),
            kind: if i % 3 == 0 {
                ClientKind::Browser
            } else {
                ClientKind::Native
            },
            upload_kbps: 1000 + (i as u32 % 10) * 1000,
            region: Some(regions[i % regions.len()].into()),
            cell: None,
        };
        let url = url.clone();
        joins.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(30), join(&url, hello)).await;
            drop(permit);
            match r {
                Ok(Ok(ws)) => Ok(ws),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("join timed out".into()),
            }
        });
    }
    let mut sessions = tokio::task::JoinSet::new();
    let mut joined = 0;
    let mut errors = 0;
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(ws)) => {
                joined += 1;
                sessions.spawn(peer(
                    ws,
                    shared.clone(),
                    cfg.signal_neighbours,
                    cfg.fetch_ms,
                ));
            }
            Ok(Err(e)) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("join failed: {e}");
                }
            }
            Err(e) => return Err(LoadError::Run(e.to_string())),
        }
    }
    let join_secs = started.elapsed().as_secs_f64();
    eprintln!("{joined} joined ({errors} failed) in {join_secs:.1} s");
    if joined == 0 {
        return Err(LoadError::Run("no peer could join".into()));
    }

    // 2. idle: let introductions and signalling settle, then read memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = cfg.tracker_pid.and_then(rss);
    let rss_per_idle_peer = match (rss_before, rss_idle) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / joined as f64),
        _ => None,
    };

    // 3. live
    let mut publisher = join(
        &url,
        Hello {
            token: ingest_token,
            stream: stream.clone(),
            peer_id: PeerId::new("origin").map_err(|e| LoadError::Run(e.to_string()))?,
            kind: ClientKind::Publisher,
            upload_kbps: 0,
            region: None,
            cell: None,
        },
    )
    .await
    .map_err(LoadError::Run)?;
    let handled0 = tracker_counter(&cfg.tracker, &HANDLED).await;
    let cpu0 = cfg.tracker_pid.and_then(cpu_secs);
    let live_start = Instant::now();
    let rendition = RenditionId::new("360p").map_err(|e| LoadError::Run(e.to_string()))?;
    for seq in 0..cfg.segments {
        let meta = SegmentMeta {
            id: SegmentId::new(stream.clone(), rendition, seq),
            size: 500_000,
            sha256: Sha256Digest::of(&seq.to_be_bytes()),
            duration_ms: cfg.interval_ms as u32,
            published_at_ms: now_ms(),
            blocks: None,
        };
        shared.published[seq as usize].store(now_ms(), Ordering::Relaxed);
        publisher
            .send(Message::text(ClientMsg::Publish { meta }.encode()))
            .await
            .map_err(|e| LoadError::Run(e.to_string()))?;
        let next = live_start + Duration::from_millis((seq + 1) * cfg.interval_ms);
        // Keep the publisher's socket read while waiting.
        while Instant::now() < next {
            let _ = tokio::time::timeout_at(next.into(), publisher.next()).await;
        }
    }
    let live_secs = live_start.elapsed().as_secs_f64();
    let handled1 = tracker_counter(&cfg.tracker, &HANDLED).await;
    let cpu1 = cfg.tracker_pid.and_then(cpu_secs);

    // 4. saturation
    let (mut sat_rate, mut sat_cpu) = (0.0, None);
    if cfg.saturation_secs > 0 {
        shared.saturating.store(1, Ordering::Relaxed);
        let h0 = tracker_counter(&cfg.tracker, &HANDLED).await;
        let c0 = cfg.tracker_pid.and_then(cpu_secs);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(cfg.saturation_secs)).await;
        let h1 = tracker_counter(&cfg.tracker, &HANDLED).await;
        let c1 = cfg.tracker_pid.and_then(cpu_secs);
        let secs = t0.elapsed().as_secs_f64();
        shared.saturating.store(0, Ordering::Relaxed);
        sat_rate = (h1 - h0) / secs;
        sat_cpu = c0.zip(c1).map(|(a, b)| (b - a) / secs);
    }
    let signals_relayed =
        tracker_counter(&cfg.tracker, &["swarmcast_tracker_signals_relayed_total"]).await;
    shared.done.cancel();
    let _ = publisher.close(None).await;
    // Peers close on their next wake-up; bounded wait.
    let mut deliveries: Vec<(u64, u64)> = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(r) = sessions.join_next().await {
            if let Ok(d) = r {
                deliveries.extend(d);
            }
        }
    })
    .await;
    sessions.abort_all();

    let mut lat: Vec<u64> = deliveries.iter().map(|(_, l)| *l).collect();
    lat.sort_unstable();
    let mut reach: Vec<u64> = (0..cfg.segments)
        .map(|s| {
            deliveries
                .iter()
                .filter(|(q, _)| *q == s)
                .map(|(_, l)| *l)
                .max()
                .unwrap_or(0)
        })
        .collect();
    reach.sort_unstable();
    Ok(Report {
        peers_joined: joined,
        join_secs,
        rss_before,
        rss_idle,
        rss_per_idle_peer,
        segments: cfg.segments,
        deliveries: deliveries.len(),
        deliveries_expected: joined * cfg.segments as usize,
        latency_p50_ms: percentile(&lat, 0.50),
        latency_p99_ms: percentile(&lat, 0.99),
        latency_max_ms: lat.last().copied().unwrap_or(0) as f64,
        reach_all_median_ms: percentile(&reach, 0.5),
        reach_all_max_ms: reach.last().copied().unwrap_or(0) as f64,
        live_msgs_per_sec: (handled1 - handled0) / live_secs,
        live_cpu_cores: cpu0.zip(cpu1).map(|(a, b)| (b - a) / live_secs),
        saturation_msgs_per_sec: sat_rate,
        saturation_cpu_cores: sat_cpu,
        signals_relayed,
    })
}
