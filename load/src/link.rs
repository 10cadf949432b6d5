//! `swarmcast-load link`: the data-channel benchmark. Two edge links on
//! loopback move 1 MiB segments as chunk frames (≤ 16 KiB, our peer wire
//! protocol, our pacing and task structure); in the same run, as the
//! reference, two bare `webrtc` peer connections with the same settings
//! send the same bytes as 16 KiB messages with the crate's own send limit.
//! Rounds alternate (ours, bare, ours, bare...) so that both see the same
//! machine. Also measures connection setup (both links started → channel
//! open at both ends, signals passed in-process) for both.
//!
//! CPU is the whole process's utime + stime over each transfer (both ends
//! of the link live in this process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use swarmcast_edge::link::{self, BigBufRuntime, LinkCmd, LinkConfig, LinkEvent, LinkHandle};
use swarmcast_proto::wire::Frame;
use swarmcast_proto::{PeerId, RenditionId, Seq};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCSessionDescription,
};

use crate::LoadError;
use crate::stat::{cpu_secs, percentile};

/// Flags of `swarmcast-load link`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkBench {
    /// Segments per round and side.
    #[arg(long, default_value_t = 64)]
    pub segments: usize,
    /// Segment size, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub segment_bytes: usize,
    /// Rounds (each: one transfer through our links, one through the bare
    /// crate).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Sequential connection setups measured per side.
    #[arg(long, default_value_t = 20)]
    pub setups: usize,
    /// ICE connectivity-check interval, ms (the edge peer's default).
    #[arg(long, default_value_t = 20)]
    pub ice_interval_ms: u64,
    /// UDP socket buffers, bytes (the edge peer's default).
    #[arg(long, default_value_t = 4 << 20)]
    pub udp_buffer: usize,
    /// Write the report here as JSON too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    /// "ours" or "bare".
    pub side: &'static str,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Seconds from the first send to the last byte received.
    pub secs: f64,
    /// Payload MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Payload Mb/s.
    pub mbit_per_sec: f64,
    /// Process CPU (both ends) per MiB, ms.
    pub cpu_ms_per_mib_both_ends: f64,
}

/// Setup times of one side, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// "ours" or "bare".
    pub side: &'static str,
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// What `swarmcast-load link` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every transfer, in the order run.
    pub transfers: Vec<Transfer>,
    /// Median MB/s through our links.
    pub ours_mb_per_sec: f64,
    /// Median MB/s through the bare crate.
    pub bare_mb_per_sec: f64,
    /// ours / bare (medians).
    pub ratio: f64,
    /// Median CPU per MiB through our links, both ends, ms.
    pub ours_cpu_ms_per_mib_both_ends: f64,
    /// Median CPU per MiB through the bare crate, both ends, ms.
    pub bare_cpu_ms_per_mib_both_ends: f64,
    /// Connection setup, ours then bare.
    pub setup: Vec<Setup>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn link_config(cfg: &LinkBench) -> LinkConfig {
    LinkConfig {
        udp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        udp_buffer: cfg.udp_buffer,
        ice_interval: Duration::from_millis(cfg.ice_interval_ms),
        ice_servers: Vec::new(),
        corrupt_uploads: false,
        // The bench measures the link itself: the most in flight.
        high_water: swarmcast_edge::link::HIGH_WATER,
        uploading: Default::default(),
    }
}

fn run_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Run(e.to_string())
}

/// Two of our links joined by in-process signalling, both open.
struct OursPair {
    a: LinkHandle,
    b: LinkHandle,
    a_events: mpsc::Receiver<LinkEvent>,
    b_events: mpsc::Receiver<LinkEvent>,
}

fn peer(name: &str) -> Result<PeerId, LoadError> {
    PeerId::new(name).map_err(run_err)
}

async fn ours_connect(
    cfg: &LinkConfig,
    rt: &Arc<BigBufRuntime>,
    stop: &CancellationToken,
) -> Result<OursPair, LoadError> {
    let (pa, pb) = (peer("bench-a")?, peer("bench-b")?);
    let (ta, mut a_events) = mpsc::channel(4096);
    let (tb, mut b_events) = mpsc::channel(4096);
    let a = link::spawn(cfg.clone(), rt.clone(), pb, true, ta, stop);
    let b = link::spawn(cfg.clone(), rt.clone(), pa, false, tb, stop);
    let (mut a_open, mut b_open) = (false, false);
    let deadline = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(deadline);
    while !(a_open && b_open) {
        tokio::select! {
            _ = &mut deadline => return Err(LoadError::Run("link setup timed out".into())),
            ev = a_events.recv() => match ev {
                Some(LinkEvent::Signal(_, s)) => { let _ = b.tx.send(LinkCmd::Remote(s)).await; }
                Some(LinkEvent::Open(..)) => a_open = true,
                Some(LinkEvent::Closed(_, why)) => return Err(LoadError::Run(format!("link a: {why}"))),
                _ => {}
            },
            ev = b_events.recv() => match ev {
                Some(LinkEvent::Signal(_, s)) => { let _ = a.tx.send(LinkCmd::Remote(s)).await; }
                Some(LinkEvent::Open(..)) => b_open = true,
                Some(LinkEvent::Closed(_, why)) => return Err(LoadError::Run(format!("link b: {why}"))),
                _ => {}
            },
        }
    }
    Ok(OursPair {
        a,
        b,
        a_events,
        b_events,
    })
}

async fn ours_close(mut p: OursPair) {
    p.a.stop.cancel();
    p.b.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let (mut a_done, mut b_done) = (false, false);
        while !(a_done && b_done) {
            tokio::select! {
                ev = p.a_events.recv() => if matches!(ev, None | Some(LinkEvent::Closed(..))) { a_done = true },
                ev = p.b_events.recv() => if matches!(ev, None | Some(LinkEvent::Closed(..))) { b_done = true },
            }
        }
    })
    .await;
}

async fn ours_transfer(
    cfg: &LinkBench,
    p: &mut OursPair,
    segment: &Bytes,
) -> Result<Transfer, LoadError> {
    let rendition = RenditionId::new("bench").map_err(run_err)?;
    let total = (cfg.segments * segment.len()) as u64;
    let cpu0 = cpu_secs(std::process::id()).unwrap_or(0.0);
    let t0 = Instant::now();
    for i in 0..cfg.segments {
        p.a.tx
            .send(LinkCmd::Serve {
                rendition,
                seq: i as Seq,
                data: segment.clone(),
                from: 0,
                to: segment.len() as u32,
            })
            .await
            .map_err(|_| LoadError::Run("link a is gone".into()))?;
    }
    let mut got = 0u64;
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    while got < total {
        tokio::select! {
            _ = &mut deadline => return Err(LoadError::Run(format!("ours: {got} of {total} bytes in 120 s"))),
            ev = p.b_events.recv() => match ev {
                Some(LinkEvent::Frame(_, Frame::Chunk { seq, offset, data, .. })) => {
                    // Every byte is checked: in order, intact.
                    let at = offset as usize;
                    if segment.get(at..at + data.len()) != Some(&data[..]) || seq * segment.len() as u64 + u64::from(offset) != got {
                        return Err(LoadError::Run(format!("ours: chunk {seq}@{offset} out of order or corrupt")));
                    }
                    got += data.len() as u64;
                }
                Some(LinkEvent::BadFrame(_, why)) => return Err(LoadError::Run(format!("ours: bad frame: {why}"))),
                Some(LinkEvent::Closed(_, why)) => return Err(LoadError::Run(format!("ours: link b closed: {why}"))),
                None => return Err(LoadError::Run("ours: link b is gone".into())),
                _ => {}
            },
            // The sender's events (UploadDone) are drained so that it never waits.
            ev = p.a_events.recv() => if let Some(LinkEvent::Closed(_, why)) = ev {
                return Err(LoadError::Run(format!("ours: link a closed: {why}")));
            },
        }
    }
    Ok(transfer("ours", total, t0.elapsed(), cpu0))
}

fn transfer(side: &'static str, bytes: u64, took: Duration, cpu0: f64) -> Transfer {
    let cpu = cpu_secs(std::process::id()).unwrap_or(0.0) - cpu0;
    let secs = took.as_secs_f64().max(1e-9);
    let mib = bytes as f64 / (1u64 << 20) as f64;
    Transfer {
        side,
        bytes,
        secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        mbit_per_sec: bytes as f64 * 8.0 / secs / 1e6,
        cpu_ms_per_mib_both_ends: cpu * 1000.0 / mib,
    }
}

enum BareEvent {
    Candidate(RTCIceCandidateInit),
    Channel(Arc<dyn DataChannel>),
}

struct BareHandler(mpsc::UnboundedSender<BareEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for BareHandler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.0.send(BareEvent::Candidate(init));
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.0.send(BareEvent::Channel(dc));
    }
}

/// Two bare peer connections and their open channel.
struct BarePair {
    a: Arc<dyn PeerConnection>,
    b: Arc<dyn PeerConnection>,
    da: Arc<dyn DataChannel>,
    db: Arc<dyn DataChannel>,
}

async fn bare_connect(cfg: &LinkConfig, rt: &Arc<BigBufRuntime>) -> Result<BarePair, LoadError> {
    let (ta, mut ea) = mpsc::unbounded_channel();
    let (tb, mut eb) = mpsc::unbounded_channel();
    let limit = Some(link::HIGH_WATER);
    let a = link::peer_connection(cfg, rt.clone(), Arc::new(BareHandler(ta)), limit)
        .await
        .map_err(run_err)?;
    let b = link::peer_connection(cfg, rt.clone(), Arc::new(BareHandler(tb)), limit)
        .await
        .map_err(run_err)?;
    let da = a
        .create_data_channel("bench", Some(RTCDataChannelInit::default()))
        .await
        .map_err(run_err)?;
    let offer = a.create_offer(None).await.map_err(run_err)?;
    a.set_local_description(offer).await.map_err(run_err)?;
    let sdp = a
        .local_description()
        .await
        .ok_or("no offer")
        .map_err(run_err)?;
    b.set_remote_description(RTCSessionDescription::offer(sdp.sdp).map_err(run_err)?)
        .await
        .map_err(run_err)?;
    let answer = b.create_answer(None).await.map_err(run_err)?;
    b.set_local_description(answer).await.map_err(run_err)?;
    let sdp = b
        .local_description()
        .await
        .ok_or("no answer")
        .map_err(run_err)?;
    a.set_remote_description(RTCSessionDescription::answer(sdp.sdp).map_err(run_err)?)
        .await
        .map_err(run_err)?;
    let (mut a_open, mut db, mut b_open) = (false, None::<Arc<dyn DataChannel>>, false);
    let deadline = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(deadline);
    while !(a_open && b_open) {
        tokio::select! {
            _ = &mut deadline => return Err(LoadError::Run("bare setup timed out".into())),
            ev = ea.recv() => if let Some(BareEvent::Candidate(c)) = ev {
                b.add_ice_candidate(c).await.map_err(run_err)?;
            },
            ev = eb.recv() => match ev {
                Some(BareEvent::Candidate(c)) => a.add_ice_candidate(c).await.map_err(run_err)?,
                Some(BareEvent::Channel(ch)) => db = Some(ch),
                None => {}
            },
            ev = da.poll(), if !a_open => match ev {
                Some(DataChannelEvent::OnOpen) => a_open = true,
                None => return Err(LoadError::Run("bare channel a closed".into())),
                _ => {}
            },
            ev = async { match &db { Some(ch) => ch.poll().await, None => std::future::pending().await } }, if !b_open => match ev {
                Some(DataChannelEvent::OnOpen) => b_open = true,
                None => return Err(LoadError::Run("bare channel b closed".into())),
                _ => {}
            },
        }
    }
    let db = db.ok_or("no channel").map_err(run_err)?;
    Ok(BarePair { a, b, da, db })
}

async fn bare_close(p: BarePair) {
    let _ = p.da.close().await;
    let _ = p.a.close().await;
    let _ = p.b.close().await;
}

async fn bare_transfer(
    cfg: &LinkBench,
    p: &BarePair,
    segment: &Bytes,
) -> Result<Transfer, LoadError> {
    const MSG: usize = 16 * 1024;
    let total = (cfg.segments * segment.len()) as u64;
    let cpu0 = cpu_secs(std::process::id()).unwrap_or(0.0);
    let t0 = Instant::now();
    let (da, segs, seg) = (p.da.clone(), cfg.segments, segment.clone());
    // The sender's own events must be polled, or its connection stalls.
    let sender = tokio::spawn(async move {
        let drain = da.clone();
        let drainer = tokio::spawn(async move { while drain.poll().await.is_some() {} });
        let mut r = Ok(());
        'all: for _ in 0..segs {
            for c in seg.chunks(MSG) {
                if let Err(e) = da.send(BytesMut::from(c)).await {
                    r = Err(e.to_string());
                    break 'all;
                }
            }
        }
        drainer.abort();
        r
    });
    let mut got = 0u64;
    let received = tokio::time::timeout(Duration::from_secs(120), async {
        while got < total {
            match p.db.poll().await {
                Some(DataChannelEvent::OnMessage(m)) => got += m.data.len() as u64,
                Some(DataChannelEvent::OnClose) | None => break,
                _ => {}
            }
        }
    })
    .await;
    let took = t0.elapsed();
    match sender.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(LoadError::Run(format!("bare send: {e}"))),
        Err(e) => return Err(run_err(e)),
    }
    if received.is_err() || got < total {
        return Err(LoadError::Run(format!("bare: {got} of {total} bytes")));
    }
    Ok(transfer("bare", total, took, cpu0))
}

fn setup_figures(side: &'static str, mut ms: Vec<u64>) -> Setup {
    ms.sort_unstable();
    Setup {
        side,
        n: ms.len(),
        p50_ms: percentile(&ms, 0.5),
        p90_ms: percentile(&ms, 0.9),
        min_ms: ms.first().copied().unwrap_or(0) as f64,
        max_ms: ms.last().copied().unwrap_or(0) as f64,
    }
}

/// Runs the benchmark.
pub async fn run(cfg: LinkBench) -> Result<Report, LoadError> {
    if cfg.segments == 0 || cfg.segment_bytes == 0 || cfg.rounds == 0 {
        return Err(LoadError::Config(
            "--segments, --segment-bytes and --rounds must be positive".into(),
        ));
    }
    let lc = link_config(&cfg);
    let rt = Arc::new(BigBufRuntime::new(cfg.udp_buffer));
    let stop = CancellationToken::new();
    let segment: Bytes = (0..cfg.segment_bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut transfers = Vec::new();
    for round in 0..cfg.rounds {
        let mut pair = ours_connect(&lc, &rt, &stop).await?;
        let t = ours_transfer(&cfg, &mut pair, &segment).await;
        ours_close(pair).await;
        let t = t?;
        eprintln!(
            "round {round} ours: {:.1} MB/s, {:.1} ms CPU/MiB (both ends)",
            t.mb_per_sec, t.cpu_ms_per_mib_both_ends
        );
        transfers.push(t);
        let pair = bare_connect(&lc, &rt).await?;
        let t = bare_transfer(&cfg, &pair, &segment).await;
        bare_close(pair).await;
        let t = t?;
        eprintln!(
            "round {round} bare: {:.1} MB/s, {:.1} ms CPU/MiB (both ends)",
            t.mb_per_sec, t.cpu_ms_per_mib_both_ends
        );
        transfers.push(t);
    }
    let (mut ours_ms, mut bare_ms) = (Vec::new(), Vec::new());
    for _ in 0..cfg.setups {
        let t = Instant::now();
        let pair = ours_connect(&lc, &rt, &stop).await?;
        ours_ms.push(t.elapsed().as_millis() as u64);
        ours_close(pair).await;
        let t = Instant::now();
        let pair = bare_connect(&lc, &rt).await?;
        bare_ms.push(t.elapsed().as_millis() as u64);
        bare_close(pair).await;
    }
    stop.cancel();
    let pick = |side: &str, f: fn(&Transfer) -> f64| -> f64 {
        median(transfers.iter().filter(|t| t.side == side).map(f).collect())
    };
    let ours = pick("ours", |t| t.mb_per_sec);
    let bare = pick("bare", |t| t.mb_per_sec);
    Ok(Report {
        ours_mb_per_sec: ours,
        bare_mb_per_sec: bare,
        ratio: if bare > 0.0 { ours / bare } else { 0.0 },
        ours_cpu_ms_per_mib_both_ends: pick("ours", |t| t.cpu_ms_per_mib_both_ends),
        bare_cpu_ms_per_mib_both_ends: pick("bare", |t| t.cpu_ms_per_mib_both_ends),
        transfers,
        setup: vec![
            setup_figures("ours", ours_ms),
            setup_figures("bare", bare_ms),
        ],
    })
}
