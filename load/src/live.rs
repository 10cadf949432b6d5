//! `swarmcast-load live`: a real live event on this machine, measured. The
//! tracker, the origin with its ffmpeg test source and N edge peers run in
//! this process on loopback and speak the real protocols (WebSocket to the
//! tracker, WebRTC data channels between peers, HTTP to the origin). The
//! same event runs twice: with the swarm, then with the swarm switched off
//! (every edge `--no-swarm`: each segment over HTTP as soon as it is
//! published), and the report puts the two side by side.
//!
//! [`Event`] is also what `swarmcast demo` starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use swarmcast_proto::{Claims, Role, StreamId, TokenKey};
use tokio_util::sync::CancellationToken;

use crate::LoadError;
use crate::stat::{cpu_secs, percentile};

/// What to start.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// Edge peers (viewers).
    pub viewers: usize,
    /// The test source's renditions, best first; viewers watch the first.
    pub renditions: Vec<String>,
    /// The tracker's address (port 0 picks one).
    pub tracker_listen: SocketAddr,
    /// The origin's address (port 0 picks one).
    pub origin_listen: SocketAddr,
    /// Extra tracker flags.
    pub tracker_args: Vec<String>,
    /// Extra origin flags (`--web-root` for the web player).
    pub origin_args: Vec<String>,
    /// Extra flags of every edge peer (`--no-swarm` for the reference).
    pub edge_args: Vec<String>,
    /// Edge peers as processes in network namespaces of their own, with
    /// these uplinks (kb/s, cycled over the viewers; 0 = not shaped); in
    /// this process on loopback when `None`.
    pub netns_uplinks_kbps: Option<Vec<u32>>,
}

/// A running event.
#[derive(Debug)]
pub struct Event {
    /// The tracker's address.
    pub tracker: SocketAddr,
    /// The origin's address.
    pub origin: SocketAddr,
    /// Each edge peer's local endpoint.
    pub edges: Vec<SocketAddr>,
    /// The rendition viewers watch.
    pub rendition: String,
    /// A viewer token for the stream (for web players).
    pub token: String,
    shutdown: CancellationToken,
    done: Vec<tokio::task::JoinHandle<()>>,
    viewers_stop: CancellationToken,
    viewers_done: Vec<tokio::task::JoinHandle<()>>,
    /// The edge peers' namespaces and processes (`--netns`).
    netns: Option<crate::netns::Netns>,
}

/// The stream every event publishes.
pub const STREAM: &str = "test";

fn parse<C: clap::Parser>(args: Vec<String>) -> Result<C, LoadError> {
    C::try_parse_from(args).map_err(|e| LoadError::Config(e.to_string()))
}

/// The uplink in-process edge peers tell the tracker and pace on, kb/s.
pub const LOOPBACK_UPLINK_KBPS: u32 = 200_000;

/// The flags that join an edge peer to the event's stream.
fn edge_flags(tracker_ws: &str, origin: &str, rendition: &str, token: &str) -> Vec<String> {
    [
        "--tracker",
        tracker_ws,
        "--origin",
        origin,
        "--stream",
        STREAM,
        "--rendition",
        rendition,
        "--token",
        token,
    ]
    .map(String::from)
    .to_vec()
}

impl Event {
    /// Starts the tracker, the origin with its test source, then the edge
    /// peers; returns once every part listens.
    pub async fn start(spec: &EventSpec, parent: &CancellationToken) -> Result<Self, LoadError> {
        let shutdown = parent.child_token();
        let secret: String = (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        let mut args = vec![
            "swarmcast-tracker".into(),
            "--listen".into(),
            spec.tracker_listen.to_string(),
            "--token-secret".into(),
            secret.clone(),
        ];
        args.extend(spec.tracker_args.iter().cloned());
        let tracker = swarmcast_tracker::start(parse(args)?, shutdown.clone())
            .await
            .map_err(|e| LoadError::Run(format!("tracker: {e}")))?;
        let ws = format!("ws://{}/v1/ws", tracker.addr);
        let origin = swarmcast_origin::start(
            parse(
                vec![
                    "swarmcast-origin".into(),
                    "--listen".into(),
                    spec.origin_listen.to_string(),
                    "--token-secret".into(),
                    secret.clone(),
                    "--test-source".into(),
                    "--test-source-stream".into(),
                    STREAM.into(),
                    "--test-source-renditions".into(),
                    spec.renditions.join(","),
                    "--tracker".into(),
                    ws.clone(),
                ]
                .into_iter()
                .chain(spec.origin_args.iter().cloned())
                .collect(),
            )?,
            shutdown.clone(),
        )
        .await
        .map_err(|e| LoadError::Run(format!("origin: {e}")))?;
        let rendition = spec
            .renditions
            .first()
            .cloned()
            .ok_or_else(|| LoadError::Config("no rendition".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = TokenKey::new(secret.as_bytes()).sign(&Claims {
            stream: StreamId::new(STREAM).map_err(|e| LoadError::Run(e.to_string()))?,
            role: Role::Viewer,
            expires_at: now + 7 * 86_400,
        });
        let mut event = Event {
            tracker: tracker.addr,
            origin: origin.addr,
            edges: Vec::new(),
            rendition: rendition.clone(),
            token: token.clone(),
            shutdown: shutdown.clone(),
            done: vec![tracker.done, origin.done],
            viewers_stop: shutdown.child_token(),
            viewers_done: Vec::new(),
            netns: None,
        };
        if let Some(uplinks) = &spec.netns_uplinks_kbps {
            let (tp, op) = (tracker.addr.port(), origin.addr.port());
            let edge_bin = std::env::current_exe()
                .ok()
                .and_then(|p| Some(p.parent()?.join("swarmcast-edge")))
                .filter(|p| p.exists())
                .ok_or_else(|| {
                    LoadError::Config(
                        "--netns runs swarmcast-edge from beside this binary: build it".into(),
                    )
                })?;
            let args = |hub: std::net::Ipv4Addr, kbps: u32| {
                let mut v = edge_flags(
                    &format!("ws://{hub}:{tp}/v1/ws"),
                    &format!("http://{hub}:{op}"),
                    &rendition,
                    &token,
                );
                // The tracker plans with each viewer's uplink.
                if kbps > 0 {
                    v.push(format!("--upload-kbps={kbps}"));
                }
                v.extend(spec.edge_args.iter().cloned());
                v
            };
            let ns = crate::netns::Netns::start(spec.viewers, uplinks, &edge_bin, args)?;
            event.edges = ns.edges.clone();
            event.netns = Some(ns);
            return Ok(event);
        }
        for _ in 0..spec.viewers {
            let mut args = vec!["swarmcast-edge".to_string()];
            args.extend(edge_flags(
                &ws,
                &format!("http://{}", origin.addr),
                &rendition,
                &token,
            ));
            // On loopback the uplink is not the limit (docs/benchmarks/link.md:
            // 1.4 Gb/s a link): said so, uploads are not paced on the
            // edge's default 10 Mb/s guess (one upload at a time).
            if !spec
                .edge_args
                .iter()
                .any(|a| a.starts_with("--upload-kbps"))
            {
                args.push(format!("--upload-kbps={LOOPBACK_UPLINK_KBPS}"));
            }
            args.extend(spec.edge_args.iter().cloned());
            let edge = swarmcast_edge::start(parse(args)?, event.viewers_stop.clone())
                .await
                .map_err(|e| LoadError::Run(format!("edge peer: {e}")))?;
            event.edges.push(edge.addr);
            event.viewers_done.push(edge.done);
        }
        Ok(event)
    }

    /// The edge peers' `/metrics` when they are processes of their own
    /// (empty when they run in this process: this process's registry has
    /// them).
    pub async fn edge_metrics(&self, client: &reqwest::Client) -> String {
        match &self.netns {
            Some(ns) => ns.metrics(client).await,
            None => String::new(),
        }
    }

    /// CPU seconds of this process and of the edge-peer processes.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(std::process::id()).unwrap_or(0.0)
            + self.netns.as_ref().map_or(0.0, |n| n.cpu_secs())
    }

    /// With `--netns`: each viewer's uplink cap (kb/s) and the chunk bytes
    /// it has written to its data channels so far
    /// (`swarmcast_edge_sent_bytes_total`).
    pub async fn uploads(&self, client: &reqwest::Client) -> Vec<(u32, f64)> {
        let Some(ns) = &self.netns else {
            return Vec::new();
        };
        let each = ns.metrics_each(client).await;
        ns.uplinks()
            .iter()
            .zip(each.iter())
            .map(|(&k, text)| (k, metric_sum(text, "swarmcast_edge_sent_bytes_total", &[])))
            .collect()
    }

    /// The tracker's JSON stats of the stream.
    pub fn stats_url(&self) -> String {
        format!("http://{}/v1/streams/{STREAM}/stats", self.tracker)
    }

    /// Stops the edge peers (each sends the tracker its last report and
    /// leaves) and waits (at most 10 s) for them; tracker and origin go on.
    pub async fn stop_viewers(&mut self) {
        if let Some(ns) = &mut self.netns {
            // Their last counters are read before they stop: take the time.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            ns.stop_edges(&client, Duration::from_secs(10)).await;
        }
        self.viewers_stop.cancel();
        let done = std::mem::take(&mut self.viewers_done);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            for d in done {
                let _ = d.await;
            }
        })
        .await;
    }

    /// Stops every part and waits (at most 10 s) for them.
    pub async fn stop(mut self) {
        self.stop_viewers().await;
        if let Some(mut ns) = self.netns.take() {
            ns.stop();
        }
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            for d in self.done {
                let _ = d.await;
            }
        })
        .await;
    }
}

/// Flags of `swarmcast-load live`.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveBench {
    /// Edge peers (viewers).
    #[arg(long, default_value_t = 12)]
    pub viewers: usize,
    /// Seconds each event runs.
    #[arg(long, default_value_t = 180)]
    pub duration: u64,
    /// Seconds at the start left out of the figures (viewers joining).
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// The test source's renditions, best first (720p ≈ 2.6 Mb/s with audio).
    #[arg(long, default_value = "720p", value_delimiter = ',')]
    pub renditions: Vec<String>,
    /// Which events: the swarm, the HTTP-only reference, or both in a row.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Extra tracker flags (repeat; e.g. `--tracker-arg=--min-first-fetchers=2`).
    #[arg(long = "tracker-arg", allow_hyphen_values = true)]
    pub tracker_args: Vec<String>,
    /// Extra edge-peer flags (repeat).
    #[arg(long = "edge-arg", allow_hyphen_values = true)]
    pub edge_args: Vec<String>,
    /// Run each edge peer as a process in a network namespace of its own,
    /// linked to this one by a veth pair shaped with `tc tbf` (needs root,
    /// `ip` and `tc`, and a namespace of its own for this process:
    /// `unshare -n`).
    #[arg(long)]
    pub netns: bool,
    /// With `--netns`: each viewer's uplink, kb/s, cycled over the viewers
    /// (0 = not shaped); also the uplink each tells the tracker.
    #[arg(long, value_delimiter = ',', default_value = "4000")]
    pub uplink_kbps: Vec<u32>,
    /// Write the report here as JSON too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Which events to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The swarm.
    Swarm,
    /// Every viewer on HTTP only.
    Http,
    /// Both, the swarm first.
    Both,
}

/// Figures of one event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventReport {
    /// "swarm" or "http".
    pub mode: String,
    /// Viewers.
    pub viewers: usize,
    /// Seconds measured (after the warm-up).
    pub measured_secs: f64,
    /// Segments published in the measured span (of the watched rendition).
    pub segments: usize,
    /// Their bytes.
    pub published_bytes: u64,
    /// Media bitrate of the watched rendition, Mb/s.
    pub bitrate_mbit: f64,
    /// Segment bytes the origin served in the measured span.
    pub origin_egress_bytes: u64,
    /// Origin egress per published segment, in copies.
    pub origin_copies_per_segment: f64,
    /// Viewers and relays in each of the stream's cells at the end (the
    /// tracker's `--cell-viewers`; one entry when the stream is not split).
    pub cells: Vec<u32>,
    /// P2P share of the bytes viewers received (viewers' own reports).
    pub offload: f64,
    /// Bytes viewers received over HTTP and from peers.
    pub http_bytes: u64,
    /// Bytes from peers.
    pub p2p_bytes: u64,
    /// Segments not complete at a viewer's playback deadline, all viewers.
    pub stalls: u64,
    /// Segments that reached every viewer.
    pub spread_complete: usize,
    /// Publish → every viewer, ms.
    pub spread_100_ms_p50: f64,
    /// Publish → every viewer, 95th percentile over segments, ms.
    pub spread_100_ms_p95: f64,
    /// Publish → every viewer, worst segment, ms.
    pub spread_100_ms_max: f64,
    /// Median viewer startup (joined → first segment), ms.
    pub startup_ms_p50: Option<u64>,
    /// Data channels opened.
    pub links_opened: u64,
    /// Tracker introduced → channel open, p50 (from the histogram), ms.
    pub link_setup_ms_p50: Option<f64>,
    /// Same, p90, ms.
    pub link_setup_ms_p90: Option<f64>,
    /// Hash mismatches seen by viewers.
    pub hash_failures: u64,
    /// CPU of every part (this process, and the edge-peer processes with
    /// `--netns`), cores.
    pub cpu_cores: f64,
    /// With `--netns`: each viewer's uplink cap and what it uploaded on
    /// average over the measured span.
    pub uplinks: Vec<ViewerUplink>,
    /// Byte totals of the whole event (warm-up included), each from its
    /// own source, read once every viewer has stopped.
    pub totals: Totals,
}

/// One viewer's uplink (`--netns`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewerUplink {
    /// Its cap (`tc tbf` rate), kb/s; 0 = not shaped.
    pub uplink_kbps: u32,
    /// Chunk bytes it wrote to its data channels, kb/s on average over the
    /// measured span (bytes given to it and cancelled before they went
    /// out are not in it).
    pub upload_kbps: f64,
}

/// The whole event's bytes as each part counts them: the origin's and the
/// edge peers' Prometheus counters (scraped from the origin's `/metrics`)
/// and the viewers' reports as the tracker sums them (its stats API).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Segment bytes the origin sent (`swarmcast_origin_egress_bytes_total{kind="segment"}`).
    pub origin_segment_egress_bytes: u64,
    /// Bytes the edge peers received over HTTP (`swarmcast_edge_bytes_total{source="http"}`).
    pub edges_http_bytes: u64,
    /// Chunk bytes the edge peers received from peers (`swarmcast_edge_bytes_total{source="p2p"}`).
    pub edges_p2p_bytes: u64,
    /// Bytes the edge peers gave their links to send (`swarmcast_edge_uploaded_bytes_total`;
    /// a link stopped midway sends less).
    pub edges_uploaded_bytes: u64,
    /// Chunk bytes the edge peers' links wrote to their data channels
    /// (`swarmcast_edge_sent_bytes_total`).
    pub edges_sent_bytes: u64,
    /// Segment bytes viewers got over HTTP, by their reports (tracker).
    pub tracker_http_bytes: u64,
    /// Segment bytes viewers got from peers, by their reports (tracker).
    pub tracker_p2p_bytes: u64,
    /// Bytes viewers served, by their reports (tracker).
    pub tracker_uploaded_bytes: u64,
    /// Stripe plans the tracker sent (`swarmcast_tracker_stripe_plans_sent_total`).
    pub tracker_stripe_plans: u64,
}

/// What `swarmcast-load live` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Each event run.
    pub events: Vec<EventReport>,
    /// swarm origin copies / HTTP-only origin copies, when both ran.
    pub egress_ratio: Option<f64>,
}

/// Sums the samples of `name` (exact metric name) whose labels contain
/// every `labels` pair, in Prometheus text.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative bucket counts of histogram `name`: (upper bound, count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Several processes' texts one after the other: their buckets add up.
    out.dedup_by(|b, a| {
        let same = a.0 == b.0;
        if same {
            a.1 += b.1;
        }
        same
    });
    out
}

/// The `q` quantile of the difference of two bucket snapshots, linear
/// within a bucket (as Prometheus's `histogram_quantile`).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - old)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = n - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    None
}

#[derive(Debug, Default, Clone)]
struct SegSeen {
    size: u64,
    spread_100: Option<u64>,
    first_seen: f64,
}

/// The stream's stats from the tracker (`url`: its
/// `/v1/streams/{stream}/stats`); when its cells are spread over nodes
/// (`--tier-url`, here all on this one tracker), the audience of every
/// other cell of the stream the tracker lists added to the home's.
async fn stats(
    client: &reqwest::Client,
    url: &str,
) -> Option<swarmcast_tracker::stats::StreamStats> {
    use swarmcast_tracker::stats::StreamStats;
    async fn get<T: serde::de::DeserializeOwned>(c: &reqwest::Client, u: &str) -> Option<T> {
        let body = c.get(u).send().await.ok()?.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }
    let mut home: StreamStats = get(client, url).await?;
    if home.cells.len() > 1 {
        let list = url.rsplitn(3, '/').nth(2).unwrap_or(url);
        let all: Vec<StreamStats> = get(client, list).await.unwrap_or_default();
        let stream = home.stream.clone();
        for c in all.iter().filter(|c| c.stream == stream && c.cell > 0) {
            home.add_audience(c);
        }
    }
    Some(home)
}

/// Runs one event and measures it.
pub async fn run_event(
    cfg: &LiveBench,
    no_swarm: bool,
    shutdown: &CancellationToken,
) -> Result<EventReport, LoadError> {
    let metrics = swarmcast_svc::metrics_handle();
    let mut edge_args = cfg.edge_args.clone();
    if no_swarm {
        edge_args.push("--no-swarm".into());
    }
    // With namespaces, the edge peers reach tracker and origin over their
    // links (this namespace has only those and loopback).
    let host = if cfg.netns {
        [0, 0, 0, 0]
    } else {
        [127, 0, 0, 1]
    };
    let spec = EventSpec {
        viewers: cfg.viewers,
        renditions: cfg.renditions.clone(),
        tracker_listen: SocketAddr::from((host, 0)),
        origin_listen: SocketAddr::from((host, 0)),
        tracker_args: cfg.tracker_args.clone(),
        origin_args: Vec::new(),
        edge_args,
        netns_uplinks_kbps: cfg.netns.then(|| cfg.uplink_kbps.clone()),
    };
    let mode = if no_swarm { "http" } else { "swarm" };
    let m_start = metrics.render();
    let mut event = Event::start(&spec, shutdown).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| LoadError::Run(e.to_string()))?;
    let url = event.stats_url();
    let started = Instant::now();
    let total = Duration::from_secs(cfg.duration);
    let warmup = Duration::from_secs(cfg.warmup.min(cfg.duration));
    let mut seen: BTreeMap<String, SegSeen> = BTreeMap::new();
    let prefix = format!("{STREAM}/{}/", event.rendition);
    let mut before = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last = None;
    let mut cut_off = f64::MAX;
    while started.elapsed() < total + Duration::from_secs(6) {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = started.elapsed();
        if before.is_none() && t >= warmup {
            before = Some((
                metrics.render() + &event.edge_metrics(&client).await,
                event.cpu_secs(),
                Instant::now(),
                event.uploads(&client).await,
            ));
        }
        if t >= total && cut_off == f64::MAX {
            // Segments published from now on are not counted; the last
            // polls let the ones in flight finish spreading.
            cut_off = t.as_secs_f64();
            last = Some((
                metrics.render() + &event.edge_metrics(&client).await,
                event.cpu_secs(),
                Instant::now(),
                stats(&client, &url).await,
                event.uploads(&client).await,
            ));
        }
        if let Some(s) = stats(&client, &url).await {
            for seg in s.segments.iter().filter(|s| s.id.starts_with(&prefix)) {
                let e = seen.entry(seg.id.clone()).or_insert_with(|| SegSeen {
                    first_seen: t.as_secs_f64(),
                    ..SegSeen::default()
                });
                e.size = seg.size.unwrap_or(e.size);
                e.spread_100 = seg.spread_100_ms.or(e.spread_100);
            }
            eprint!(
                "\r{mode}: {:>4}/{} s  viewers {:>3}  offload {:>5.1}%  stalls {}   ",
                t.as_secs(),
                cfg.duration,
                s.viewers,
                s.offload * 100.0,
                s.stalls
            );
        }
    }
    eprintln!();
    event.stop_viewers().await;
    let totals = totals(&client, &event, &m_start).await;
    event.stop().await;
    let (Some((m0, cpu0, t0, up0)), Some((m1, cpu1, t1, final_stats, up1))) = (before, last) else {
        return Err(LoadError::Run(
            "stopped before the measurement ended".into(),
        ));
    };
    let warm = warmup.as_secs_f64();
    // Segments first seen (published) inside the measured span.
    let counted: Vec<&SegSeen> = seen
        .values()
        .filter(|s| s.first_seen > warm + 2.0 && s.first_seen <= cut_off)
        .collect();
    let published_bytes: u64 = counted.iter().map(|s| s.size).sum();
    let mut spread: Vec<u64> = counted.iter().filter_map(|s| s.spread_100).collect();
    spread.sort_unstable();
    let egress = metric_sum(
        &m1,
        "swarmcast_origin_egress_bytes_total",
        &[("kind", "segment")],
    ) - metric_sum(
        &m0,
        "swarmcast_origin_egress_bytes_total",
        &[("kind", "segment")],
    );
    let secs = t1.duration_since(t0).as_secs_f64().max(1e-3);
    // Links open mostly in the warm-up: setup counts the whole event.
    let setup0 = buckets(&m_start, "swarmcast_edge_link_setup_seconds");
    let setup1 = buckets(&m1, "swarmcast_edge_link_setup_seconds");
    let fs = final_stats.unwrap_or_default();
    let uplinks = up0
        .iter()
        .zip(up1.iter())
        .map(|(&(cap, b0), &(_, b1))| ViewerUplink {
            uplink_kbps: cap,
            upload_kbps: (b1 - b0).max(0.0) * 8.0 / 1000.0 / secs,
        })
        .collect();
    let seg_secs = counted.len() as f64 * 2.0;
    Ok(EventReport {
        mode: mode.into(),
        viewers: cfg.viewers,
        measured_secs: secs,
        segments: counted.len(),
        published_bytes,
        bitrate_mbit: if seg_secs > 0.0 {
            published_bytes as f64 * 8.0 / seg_secs / 1e6
        } else {
            0.0
        },
        origin_egress_bytes: egress as u64,
        origin_copies_per_segment: if published_bytes > 0 {
            egress / published_bytes as f64
        } else {
            0.0
        },
        cells: fs.cells.clone(),
        offload: fs.offload,
        http_bytes: fs.http_bytes,
        p2p_bytes: fs.p2p_bytes,
        stalls: fs.stalls,
        spread_complete: spread.len(),
        spread_100_ms_p50: percentile(&spread, 0.5),
        spread_100_ms_p95: percentile(&spread, 0.95),
        spread_100_ms_max: spread.last().copied().unwrap_or(0) as f64,
        startup_ms_p50: fs.startup_ms_p50,
        links_opened: (count(&setup1) - count(&setup0)) as u64,
        link_setup_ms_p50: quantile(&setup0, &setup1, 0.5).map(|s| s * 1000.0),
        link_setup_ms_p90: quantile(&setup0, &setup1, 0.9).map(|s| s * 1000.0),
        hash_failures: (metric_sum(&m1, "swarmcast_edge_hash_failures_total", &[])
            - metric_sum(&m_start, "swarmcast_edge_hash_failures_total", &[]))
            as u64,
        cpu_cores: (cpu1 - cpu0) / secs,
        uplinks,
        totals,
    })
}

/// The event's byte totals from the origin's `/metrics` and the tracker's
/// stats, counted from the `before` snapshot of the metrics (one process
/// may run several events).
async fn totals(client: &reqwest::Client, event: &Event, before: &str) -> Totals {
    let text = scrape(client, event.origin, "origin").await + &event.edge_metrics(client).await;
    let diff = |name: &str, labels: &[(&str, &str)]| {
        (metric_sum(&text, name, labels) - metric_sum(before, name, labels)).max(0.0) as u64
    };
    // The viewers have stopped; once the tracker has ended every session it
    // has read every last report (a busy tracker may lag behind a close).
    let until = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = stats(client, &event.stats_url()).await.unwrap_or_default();
        if s.viewers == 0 || Instant::now() > until {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The event's own tracker: its counters start at zero.
    let tracker_text = scrape(client, event.tracker, "tracker").await;
    Totals {
        tracker_stripe_plans: metric_sum(
            &tracker_text,
            "swarmcast_tracker_stripe_plans_sent_total",
            &[],
        ) as u64,
        origin_segment_egress_bytes: diff(
            "swarmcast_origin_egress_bytes_total",
            &[("kind", "segment")],
        ),
        edges_http_bytes: diff("swarmcast_edge_bytes_total", &[("source", "http")]),
        edges_p2p_bytes: diff("swarmcast_edge_bytes_total", &[("source", "p2p")]),
        edges_uploaded_bytes: diff("swarmcast_edge_uploaded_bytes_total", &[]),
        edges_sent_bytes: diff("swarmcast_edge_sent_bytes_total", &[]),
        tracker_http_bytes: s.http_bytes,
        tracker_p2p_bytes: s.p2p_bytes,
        tracker_uploaded_bytes: s.uploaded_bytes,
    }
}

/// A service's `/metrics` text (empty, and a warning, when unreachable).
async fn scrape(client: &reqwest::Client, addr: SocketAddr, what: &str) -> String {
    match client.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "{what} metrics unavailable");
            String::new()
        }
    }
}

fn count(b: &[(f64, f64)]) -> f64 {
    b.last().map_or(0.0, |b| b.1)
}

/// Runs the events `cfg.mode` asks for.
pub async fn run(cfg: LiveBench) -> Result<Report, LoadError> {
    if cfg.viewers == 0 || cfg.duration <= cfg.warmup + 4 {
        return Err(LoadError::Config(
            "--viewers must be positive and --duration longer than --warmup + 4 s".into(),
        ));
    }
    if cfg.netns {
        if cfg.viewers > 1000 {
            return Err(LoadError::Config(
                "--netns takes at most 1000 viewers".into(),
            ));
        }
        crate::netns::Netns::check_isolated()?;
    }
    // SIGINT/SIGTERM end the event the normal way: edge peers (processes
    // in their namespaces, with `--netns`) stopped, namespaces removed.
    let shutdown = CancellationToken::new();
    swarmcast_svc::cancel_on_signals(shutdown.clone());
    let mut events = Vec::new();
    if cfg.mode != Mode::Http {
        events.push(run_event(&cfg, false, &shutdown).await?);
    }
    if cfg.mode != Mode::Swarm {
        events.push(run_event(&cfg, true, &shutdown).await?);
    }
    let copies = |m: &str| {
        events
            .iter()
            .find(|e| e.mode == m)
            .map(|e| e.origin_copies_per_segment)
    };
    let egress_ratio = match (copies("swarm"), copies("http")) {
        (Some(s), Some(h)) if h > 0.0 => Some(s / h),
        _ => None,
    };
    Ok(Report {
        events,
        egress_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x histogram\n\
        x_bucket{le=\"0.1\"} 1\nx_bucket{le=\"0.2\"} 3\nx_bucket{le=\"0.5\"} 4\nx_bucket{le=\"+Inf\"} 4\n\
        x_sum 0.9\nx_count 4\n\
        y_total{kind=\"segment\"} 10\ny_total{kind=\"playlist\"} 5\ny_total_other 7\n";

    #[test]
    fn metric_sum_matches_the_exact_name_and_labels() {
        assert_eq!(metric_sum(TEXT, "y_total", &[]), 15.0);
        assert_eq!(metric_sum(TEXT, "y_total", &[("kind", "segment")]), 10.0);
        assert_eq!(metric_sum(TEXT, "nope", &[]), 0.0);
    }

    #[test]
    fn quantile_interpolates_within_a_bucket() {
        let b = buckets(TEXT, "x");
        assert_eq!(b.len(), 4);
        // rank 2 of 4 falls halfway into (0.1, 0.2].
        let q = quantile(&[], &b, 0.5).unwrap();
        assert!((q - 0.15).abs() < 1e-9, "{q}");
        assert_eq!(quantile(&b, &b, 0.5), None);
    }

    #[test]
    fn buckets_of_several_processes_add_up() {
        let two = format!("{TEXT}\n{TEXT}");
        let b = buckets(&two, "x");
        assert_eq!(
            b,
            vec![(0.1, 2.0), (0.2, 6.0), (0.5, 8.0), (f64::INFINITY, 8.0)]
        );
        assert_eq!(metric_sum(&two, "y_total", &[("kind", "segment")]), 20.0);
    }
}
