//! A WebTorrent tracker load generator: what aquatic_ws_load_test does not
//! measure. It speaks only the protocol, so it runs against our tracker and
//! against aquatic_ws alike, in the same run.
//!
//! Phases, bounded in count and time:
//! 1. **connect**: `connections` WebSockets (TLS with any certificate, as
//!    aquatic's tester does, when the URL is `wss://`), at most
//!    `connect_rate` per second; each announces `started` in one of
//!    `info_hashes` swarms (uniform) with no offers.
//! 2. **idle**: the tracker's resident memory is read (with `--tracker-pid`)
//!    and divided by the connections.
//! 3. **run** for `duration` seconds: announces with `offers` offers each
//!    (SDPs of `sdp_min..=sdp_max` bytes, as browsers send 2–4 KiB), spread
//!    evenly over the connections at `rate` announces per second in all
//!    (an open loop: the latency is that of a given load, not of a
//!    saturated queue). A peer that receives an offer answers it at once,
//!    as a browser does. The offer id carries the send time, so the
//!    receiving connection measures **offer relay latency** (announce sent
//!    → offer received) and the offering one the **answer round trip**
//!    (announce sent → answer received: two relays and the answerer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use swarmcast_proto::webtorrent::{BinId, push_bin};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::LoadError;
use crate::stat::{cpu_secs, percentile, rss};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct WtBench {
    /// Tracker URL: `ws://` or `wss://` (any certificate is accepted), on
    /// loopback.
    #[arg(long, default_value = "ws://127.0.0.1:7000/announce")]
    pub tracker: String,
    /// PID of the tracker, to read its CPU time and resident memory.
    #[arg(long)]
    pub tracker_pid: Option<u32>,
    /// Connections (one peer in one swarm each).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections opened per second.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    /// Swarms (info hashes) the connections spread over.
    #[arg(long, default_value_t = 10_000)]
    pub info_hashes: u32,
    /// Offers per announce (browsers send 5).
    #[arg(long, default_value_t = 5)]
    pub offers: usize,
    /// Smallest SDP, bytes.
    #[arg(long, default_value_t = 2048)]
    pub sdp_min: usize,
    /// Largest SDP, bytes.
    #[arg(long, default_value_t = 4096)]
    pub sdp_max: usize,
    /// Announces per second over all connections in the run phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Length of the run phase, seconds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct WtReport {
    /// The tracker URL.
    pub tracker: String,
    /// Connections that joined their swarm.
    pub connections: usize,
    /// Seconds the connects and joins took.
    pub connect_secs: f64,
    /// Tracker resident memory before the connections, bytes.
    pub rss_before: Option<u64>,
    /// With every connection open and joined, bytes.
    pub rss_idle: Option<u64>,
    /// (rss_idle − rss_before) / connections, bytes.
    pub rss_per_connection: Option<f64>,
    /// Announces with offers sent in the run phase.
    pub announces: u64,
    /// Announce replies received.
    pub replies: u64,
    /// Replies with a `failure reason`.
    pub failures: u64,
    /// Connections that ended (closed by the tracker, or an error) before
    /// the run phase did.
    pub connections_lost: u64,
    /// Offers received (each answered).
    pub offers_received: u64,
    /// Answers received.
    pub answers_received: u64,
    /// Messages received per second in the run phase (all kinds).
    pub received_per_sec: f64,
    /// Announce sent → offer received, ms.
    pub offer_p50_ms: f64,
    /// 99th percentile, ms.
    pub offer_p99_ms: f64,
    /// Worst, ms.
    pub offer_max_ms: f64,
    /// Announce sent → answer received (two relays), ms.
    pub answer_rtt_p50_ms: f64,
    /// 99th percentile, ms.
    pub answer_rtt_p99_ms: f64,
    /// Tracker CPU in the run phase, cores.
    pub run_cpu_cores: Option<f64>,
    /// This process's CPU in the run phase, cores (a saturated generator
    /// makes the latencies its own).
    pub generator_cpu_cores: Option<f64>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Accepts any server certificate: the load tester measures trackers on
/// loopback with self-signed certificates, as aquatic's does.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Target {
    addr: String,
    host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    url: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, LoadError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(LoadError::Config(format!(
                "--tracker {url:?} is not ws:// or wss://"
            )));
        };
        let addr = rest.split('/').next().unwrap_or(rest).to_string();
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let tls = tls.then(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                        .with_no_client_auth()
                });
            config.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
        });
        let tls = match tls {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Err(LoadError::Config(format!("TLS: {e}"))),
            None => None,
        };
        Ok(Target {
            addr,
            host,
            tls,
            url: url.to_string(),
        })
    }

    async fn connect(&self) -> Result<Ws, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| e.to_string())?;
                Box::new(c.connect(name, tcp).await.map_err(|e| e.to_string())?)
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20));
        let (ws, _) = tokio_tungstenite::client_async_with_config(&self.url, io, Some(config))
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }
}

/// An id whose first 8 bytes are `tag` and next 8 `t_us`; the rest random.
fn stamped(tag: u64, t_us: u64, rng: &mut impl rand::Rng) -> BinId {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&t_us.to_le_bytes());
    rng.fill(&mut b[16..]);
    BinId(b)
}

fn stamp_of(id: &BinId) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&id.0[8..16]);
    u64::from_le_bytes(t)
}

fn sdp(len: usize, kind: &str, rng: &mut impl rand::Rng) -> String {
    // Printable text of the length a browser's SDP has.
    let body: String = (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("{{\"type\":\"{kind}\",\"sdp\":\"v=0\\r\\n{body}\"}}")
}

#[derive(Default)]
struct Tally {
    announces: u64,
    replies: u64,
    failures: u64,
    offers: u64,
    answers: u64,
    received: u64,
    lost: u64,
    offer_us: Vec<u32>,
    answer_us: Vec<u32>,
}

struct Conn {
    ws: Ws,
    info_hash: BinId,
    peer_id: BinId,
}

async fn join(target: &Target, info_hash: BinId, peer_id: BinId) -> Result<Conn, String> {
    let mut ws = target.connect().await?;
    let mut msg = String::from(
        "{\"action\":\"announce\",\"event\":\"started\",\"left\":1,\"numwant\":0,\"info_hash\":",
    );
    push_bin(&mut msg, &info_hash);
    msg.push_str(",\"peer_id\":");
    push_bin(&mut msg, &peer_id);
    msg.push('}');
    ws.send(Message::text(msg))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            if let Message::Text(t) = m.map_err(|e| e.to_string())? {
                return Ok::<String, String>(t.as_str().to_string());
            }
        }
        Err("closed before the reply".into())
    })
    .await
    .map_err(|_| "no reply in 10 s".to_string())??;
    if reply.contains("failure reason") {
        return Err(format!("refused: {reply}"));
    }
    Ok(Conn {
        ws,
        info_hash,
        peer_id,
    })
}

/// One connection's run phase.
async fn run_conn(
    mut c: Conn,
    idx: usize,
    cfg: Arc<WtBench>,
    epoch: Instant,
    start: tokio::time::Instant,
    stop: CancellationToken,
) -> Tally {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(idx as u64);
    let mut t = Tally::default();
    let period = Duration::from_secs_f64(cfg.connections as f64 / f64::from(cfg.rate.max(1)));
    let offset = period.mul_f64(rng.random::<f64>());
    let mut tick = tokio::time::interval_at(start + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let now_us = || epoch.elapsed().as_micros() as u64;
    // Every `break` but the stop's is a lost connection.
    t.lost = 1;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                t.lost = 0;
                break;
            }
            _ = tick.tick() => {
                let t_us = now_us();
                let mut msg = String::with_capacity(cfg.offers * (cfg.sdp_max + 120) + 200);
                msg.push_str("{\"action\":\"announce\",\"left\":1,\"numwant\":");
                msg.push_str(&cfg.offers.to_string());
                msg.push_str(",\"info_hash\":");
                push_bin(&mut msg, &c.info_hash);
                msg.push_str(",\"peer_id\":");
                push_bin(&mut msg, &c.peer_id);
                msg.push_str(",\"offers\":[");
                for k in 0..cfg.offers {
                    if k > 0 {
                        msg.push(',');
                    }
                    let len = rng.random_range(cfg.sdp_min..=cfg.sdp_max);
                    msg.push_str("{\"offer\":");
                    msg.push_str(&sdp(len, "offer", &mut rng));
                    msg.push_str(",\"offer_id\":");
                    push_bin(&mut msg, &stamped(idx as u64, t_us, &mut rng));
                    msg.push('}');
                }
                msg.push_str("]}");
                if c.ws.send(Message::text(msg)).await.is_err() {
                    break;
                }
                t.announces += 1;
            }
            m = c.ws.next() => {
                let Some(Ok(m)) = m else { break };
                let Message::Text(text) = m else { continue };
                t.received += 1;
                let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
                let id = |k: &str| v.get(k).and_then(|s| s.as_str()).and_then(|s| BinId::from_binary_str(s).ok());
                if v.get("offer").is_some() {
                    let (Some(from), Some(oid)) = (id("peer_id"), id("offer_id")) else { continue };
                    t.offers += 1;
                    let dt = now_us().saturating_sub(stamp_of(&oid));
                    t.offer_us.push(dt.min(u64::from(u32::MAX)) as u32);
                    let len = rng.random_range(cfg.sdp_min..=cfg.sdp_max);
                    let mut msg = String::with_capacity(len + 300);
                    msg.push_str("{\"action\":\"announce\",\"left\":1,\"info_hash\":");
                    push_bin(&mut msg, &c.info_hash);
                    msg.push_str(",\"peer_id\":");
                    push_bin(&mut msg, &c.peer_id);
                    msg.push_str(",\"to_peer_id\":");
                    push_bin(&mut msg, &from);
                    msg.push_str(",\"offer_id\":");
                    push_bin(&mut msg, &oid);
                    msg.push_str(",\"answer\":");
                    msg.push_str(&sdp(len, "answer", &mut rng));
                    msg.push('}');
                    if c.ws.send(Message::text(msg)).await.is_err() {
                        break;
                    }
                } else if v.get("answer").is_some() {
                    let Some(oid) = id("offer_id") else { continue };
                    t.answers += 1;
                    let dt = now_us().saturating_sub(stamp_of(&oid));
                    t.answer_us.push(dt.min(u64::from(u32::MAX)) as u32);
                } else {
                    t.replies += 1;
                    if v.get("failure reason").is_some() {
                        t.failures += 1;
                    }
                }
            }
        }
    }
    let _ = c.ws.close(None).await;
    t
}

/// Runs the phases and reports.
pub async fn run(cfg: WtBench) -> Result<WtReport, LoadError> {
    if cfg.sdp_min > cfg.sdp_max || cfg.connections == 0 || cfg.info_hashes == 0 {
        return Err(LoadError::Config(
            "--sdp-min must be at most --sdp-max; --connections and --info-hashes at least 1"
                .into(),
        ));
    }
    let target = Arc::new(Target::parse(&cfg.tracker)?);
    let cfg = Arc::new(cfg);
    let pid = cfg.tracker_pid;
    let rss_before = pid.and_then(rss);
    // 1. connect and join, bounded by connect_rate.
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(cfg.connect_rate.max(1)));
    let mut joins = Vec::with_capacity(cfg.connections);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let hashes: Vec<BinId> = (0..cfg.info_hashes)
        .map(|i| stamped(u64::from(i), 0xfeed, &mut rng))
        .collect();
    for i in 0..cfg.connections {
        let ih = hashes[rng.random_range(0..hashes.len())];
        let pid_i = stamped(i as u64, 0xbeef, &mut rng);
        let target = target.clone();
        joins.push(tokio::spawn(async move { join(&target, ih, pid_i).await }));
        if i % 64 == 63 {
            tokio::time::sleep(gap * 64).await;
        }
    }
    let mut conns = Vec::with_capacity(cfg.connections);
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for j in joins {
        match j.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => *errors.entry(e.chars().take(80).collect()).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    if !errors.is_empty() {
        eprintln!(
            "webtorrent: {} connections failed: {errors:?}",
            errors.values().sum::<usize>()
        );
    }
    if conns.is_empty() {
        return Err(LoadError::Run("no connection joined".into()));
    }
    let connected = conns.len();
    let connect_secs = started.elapsed().as_secs_f64();
    // 2. idle memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = pid.and_then(rss);
    // 3. run.
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let cpu0 = (pid.and_then(cpu_secs), cpu_secs(std::process::id()));
    let run_started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(run_conn(c, i, cfg.clone(), epoch, start, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(cfg.duration) + Duration::from_millis(200)).await;
    let run_secs = run_started.elapsed().as_secs_f64();
    let cpu1 = (pid.and_then(cpu_secs), cpu_secs(std::process::id()));
    stop.cancel();
    let mut all = Tally::default();
    for t in tasks {
        let Ok(t) = tokio::time::timeout(Duration::from_secs(10), t).await else {
            continue;
        };
        let Ok(t) = t else { continue };
        all.announces += t.announces;
        all.replies += t.replies;
        all.failures += t.failures;
        all.offers += t.offers;
        all.answers += t.answers;
        all.received += t.received;
        all.lost += t.lost;
        all.offer_us.extend(t.offer_us);
        all.answer_us.extend(t.answer_us);
    }
    let ms = |v: &mut Vec<u32>, p: f64| {
        let s: Vec<u64> = {
            v.sort_unstable();
            v.iter().map(|&x| u64::from(x)).collect()
        };
        percentile(&s, p) / 1000.0
    };
    let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / run_secs);
    Ok(WtReport {
        tracker: cfg.tracker.clone(),
        connections: connected,
        connect_secs,
        rss_before,
        rss_idle,
        rss_per_connection: match (rss_before, rss_idle) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / connected as f64),
            _ => None,
        },
        announces: all.announces,
        replies: all.replies,
        failures: all.failures,
        connections_lost: all.lost,
        offers_received: all.offers,
        answers_received: all.answers,
        received_per_sec: all.received as f64 / run_secs,
        offer_p50_ms: ms(&mut all.offer_us, 0.5),
        offer_p99_ms: ms(&mut all.offer_us, 0.99),
        offer_max_ms: ms(&mut all.offer_us, 1.0),
        answer_rtt_p50_ms: ms(&mut all.answer_us, 0.5),
        answer_rtt_p99_ms: ms(&mut all.answer_us, 0.99),
        run_cpu_cores: cores(cpu0.0, cpu1.0),
        generator_cpu_cores: cores(cpu0.1, cpu1.1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_binary_string_round_trip() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let id = stamped(7, 123_456_789, &mut rng);
        let mut s = String::new();
        push_bin(&mut s, &id);
        let v: String = serde_json::from_str(&s).expect("json");
        let back = BinId::from_binary_str(&v).expect("20 chars");
        assert_eq!(stamp_of(&back), 123_456_789);
        let o = sdp(3000, "offer", &mut rng);
        let v: serde_json::Value = serde_json::from_str(&o).expect("json");
        assert_eq!(v["type"], "offer");
        assert!(Target::parse("http://x").is_err());
        assert!(Target::parse("wss://127.0.0.1:9/").is_ok_and(|t| t.tls.is_some()));
    }
}
