//! One neighbour: a WebRTC peer connection with one data channel
//! (`swarmcast`, protocol `swarmcast/1`, ordered and reliable) carrying the
//! peer wire frames of `swarmcast_proto::wire`.
//!
//! Each link is one task. It owns its peer connection and channel, speaks
//! to the driver through two bounded queues ([`LinkCmd`] in, [`LinkEvent`]
//! out), trickles ICE through the tracker, and paces uploads on the
//! channel's outstanding bytes (at most [`HIGH_WATER`] in flight) so that
//! memory does not grow with queued segments (the crate's send queue is
//! unbounded by default).
//!
//! Facts this module relies on (docs/notes/webrtc-0.21.md): every UDP socket
//! gets 4 MiB kernel buffers through [`BigBufRuntime`] (with the default
//! ~208 KiB, loopback drops packets and each drop costs a ≥ 1 s SCTP
//! retransmit); mDNS is off; host candidates come from the configured UDP
//! bind address only.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use swarmcast_proto::tracker::{IceServer, Signal};
use swarmcast_proto::wire::Frame;
use swarmcast_proto::{PeerId, RenditionId, Seq};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// The one data channel of a link: pre-negotiated (both ends create it
/// with this id; a browser passes `{negotiated: true, id: 0}`), ordered and
/// reliable.
pub const CHANNEL_ID: u16 = 0;
/// Its label.
pub const CHANNEL_LABEL: &str = "swarmcast";
/// Its sub-protocol.
pub const CHANNEL_PROTOCOL: &str = "swarmcast/1";

/// Bytes in flight on a channel before uploads wait, at most.
pub const HIGH_WATER: usize = 2 * 1024 * 1024;

/// Bytes in flight on a peer's channels together for an uplink of
/// `upload_kbps`: about 125 ms of it (64 KiB to [`HIGH_WATER`]), shared by
/// the links uploading at the moment. An upload counts as done when
/// its last chunk enters the channel; with seconds of the uplink queued
/// behind it, the next upload starts long before this one arrives, every
/// transfer of a thin uplink turns slow, and bytes queued for a receiver
/// that cancelled still go out (docs/benchmarks/live-event.md, shaped
/// links).
pub fn high_water_for(upload_kbps: u32) -> usize {
    (upload_kbps as usize * 1000 / 8 / 8).clamp(64 * 1024, HIGH_WATER)
}
/// A link that has not opened its channel by then is given up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings shared by every link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Address the UDP sockets bind (its IP is the host candidate).
    pub udp_bind: SocketAddr,
    /// SO_RCVBUF / SO_SNDBUF for those sockets.
    pub udp_buffer: usize,
    /// ICE connectivity-check interval.
    pub ice_interval: Duration,
    /// STUN/TURN servers (from the tracker's welcome).
    pub ice_servers: Vec<IceServer>,
    /// Test aid: flip the first byte of every chunk uploaded.
    pub corrupt_uploads: bool,
    /// Bytes in flight on the peer's channels before uploads wait (see
    /// [`high_water_for`]), shared by the links uploading at the moment.
    pub high_water: usize,
    /// How many of the peer's links have uploads queued: each keeps
    /// `high_water` / that many bytes in flight (at least one chunk), so
    /// the uplink's queue stays about `high_water` however many children
    /// it feeds.
    pub uploading: Arc<AtomicUsize>,
}

/// Counts a link among the uploading ones while it has uploads queued.
struct UploadingMark<'a> {
    count: &'a AtomicUsize,
    on: bool,
}

impl UploadingMark<'_> {
    fn set(&mut self, on: bool) {
        if on != self.on {
            if on {
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            self.on = on;
        }
    }

    /// This link's share of the peer's bytes in flight.
    fn window(&self, high_water: usize) -> usize {
        let n = self.count.load(Ordering::Relaxed).max(1);
        (high_water / n).max(swarmcast_proto::wire::MAX_FRAME)
    }
}

impl Drop for UploadingMark<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Driver → link.
#[derive(Debug)]
pub enum LinkCmd {
    /// A signal from the neighbour, relayed by the tracker.
    Remote(Signal),
    /// Send one frame.
    Send(Frame),
    /// Stream `data[from..to]` as chunk frames, then report `UploadDone`.
    Serve {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
        /// The whole segment.
        data: Bytes,
        /// First byte.
        from: u32,
        /// One past the last byte.
        to: u32,
    },
    /// Send bytes as they are, frame or not (a test aid for hostile input).
    SendRaw(Bytes),
    /// Stop streaming a segment.
    Stop {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
    },
}

/// Link → driver.
#[derive(Debug)]
pub enum LinkEvent {
    /// A signal to relay to the neighbour through the tracker.
    Signal(PeerId, Signal),
    /// The data channel opened (setup took this long).
    Open(PeerId, Duration),
    /// A frame arrived.
    Frame(PeerId, Frame),
    /// Bytes arrived that are not a valid frame.
    BadFrame(PeerId, String),
    /// A `Serve` finished.
    UploadDone(PeerId, RenditionId, Seq),
    /// The link is gone (closed, failed, or never opened).
    Closed(PeerId, &'static str),
}

/// The driver's end of a link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// Commands to the link task.
    pub tx: mpsc::Sender<LinkCmd>,
    /// Stops the link task.
    pub stop: CancellationToken,
}

/// tokio's runtime for the webrtc crate, except that every UDP socket gets
/// bigger kernel buffers before tokio takes it over.
#[derive(Debug)]
pub struct BigBufRuntime {
    inner: TokioRuntime,
    bytes: usize,
}

impl BigBufRuntime {
    /// Buffers of `bytes` (capped by `net.core.{r,w}mem_max`).
    pub fn new(bytes: usize) -> Self {
        Self {
            inner: TokioRuntime,
            bytes,
        }
    }
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Runtime for BigBufRuntime {
    fn spawn(&self, f: BoxFut) -> Box<dyn JoinHandle> {
        self.inner.spawn(f)
    }
    fn spawn_reactor(&self, pool: usize, f: BoxFut) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(pool, f)
    }
    fn wrap_udp_socket(&self, sock: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let r = socket2::SockRef::from(&sock);
        r.set_recv_buffer_size(self.bytes)?;
        r.set_send_buffer_size(self.bytes)?;
        self.inner.wrap_udp_socket(sock)
    }
    fn wrap_tcp_listener(&self, l: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(l)
    }
    fn connect_tcp<'a>(
        &'a self,
        a: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(a)
    }
    fn resolve_host<'a>(
        &'a self,
        h: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(h)
    }
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(d)
    }
    fn interval(&self, p: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(p)
    }
    fn block_on(&self, f: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(f)
    }
    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }
    fn name(&self) -> &'static str {
        "tokio+bigbuf"
    }
}

enum PcEvent {
    Candidate(Signal),
    GatheringComplete,
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
}

/// Forwards the connection's callbacks to the link task; never blocks.
struct Handler(mpsc::UnboundedSender<PcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.0.send(PcEvent::Candidate(Signal::Candidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            }));
        }
    }
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.0.send(PcEvent::GatheringComplete);
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.0.send(PcEvent::State(s));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.0.send(PcEvent::Channel(dc));
    }
}

struct Upload {
    rendition: RenditionId,
    seq: Seq,
    data: Bytes,
    next: usize,
    to: usize,
}

/// Starts a link to `peer`. The initiator creates the channel and sends the
/// offer; the other side waits for it.
pub fn spawn(
    cfg: LinkConfig,
    runtime: Arc<BigBufRuntime>,
    peer: PeerId,
    initiator: bool,
    events: mpsc::Sender<LinkEvent>,
    shutdown: &CancellationToken,
) -> LinkHandle {
    let (tx, rx) = mpsc::channel(256);
    let stop = shutdown.child_token();
    let handle = LinkHandle {
        tx,
        stop: stop.clone(),
    };
    let span = tracing::info_span!("link", peer = %peer, initiator);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let reason = match run(cfg, runtime, peer.clone(), initiator, rx, &events, stop).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "link failed");
                    "failed"
                }
            };
            let _ = events.send(LinkEvent::Closed(peer, reason)).await;
        },
        span,
    ));
    handle
}

/// Errors of the webrtc crate and of our channels, boxed.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A data-channel-only peer connection with the link settings (mDNS off,
/// UDP4 host candidates from `cfg.udp_bind`, `cfg.ice_interval` checks, the
/// big-buffer runtime) and the crate's own send limit per channel
/// (`send_limit`, `None` = unbounded). Links use it; so does the link
/// benchmark's bare-crate reference.
pub async fn peer_connection(
    cfg: &LinkConfig,
    runtime: Arc<BigBufRuntime>,
    handler: Arc<dyn PeerConnectionEventHandler>,
    send_limit: Option<usize>,
) -> Res<Arc<dyn PeerConnection>> {
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4])
        .with_ice_connection_attempts(Some(cfg.ice_interval), None)
        // Nominate a peer-reflexive pair at once (the default waits 1 s
        // when the other side's check arrives before its candidate).
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO));
    let servers: Vec<RTCIceServer> = cfg
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let mut builder = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(servers)
                .build(),
        )
        .with_setting_engine(se.build())
        .with_runtime(runtime)
        .with_handler(handler)
        .with_udp_addrs(vec![cfg.udp_bind.to_string()]);
    if let Some(limit) = send_limit {
        builder = builder.with_data_channel_send_buffer_limit(limit);
    }
    Ok(Arc::new(builder.build().await?))
}

async fn build(
    cfg: &LinkConfig,
    runtime: Arc<BigBufRuntime>,
) -> Res<(Arc<dyn PeerConnection>, mpsc::UnboundedReceiver<PcEvent>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let pc = peer_connection(cfg, runtime, Arc::new(Handler(tx)), None).await?;
    Ok((pc, rx))
}

async fn add_candidate(pc: &Arc<dyn PeerConnection>, s: Signal) -> Res<()> {
    let init = match s {
        Signal::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => RTCIceCandidateInit {
            candidate,
            sdp_mid,
            sdp_mline_index,
            ..Default::default()
        },
        _ => RTCIceCandidateInit::default(),
    };
    pc.add_ice_candidate(init).await?;
    Ok(())
}

#[allow(clippy::too_many_lines)]
async fn run(
    cfg: LinkConfig,
    runtime: Arc<BigBufRuntime>,
    peer: PeerId,
    initiator: bool,
    mut cmds: mpsc::Receiver<LinkCmd>,
    events: &mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
) -> Res<&'static str> {
    let started = Instant::now();
    let (pc, mut pc_events) = build(&cfg, runtime).await?;
    // Both ends create the pre-negotiated channel before signalling: no
    // in-band open handshake (DCEP) to wait for.
    let mut dc: Option<Arc<dyn DataChannel>> = Some(
        pc.create_data_channel(
            CHANNEL_LABEL,
            Some(RTCDataChannelInit {
                protocol: CHANNEL_PROTOCOL.into(),
                negotiated: Some(CHANNEL_ID),
                ..Default::default()
            }),
        )
        .await?,
    );
    let mut remote_set = false;
    let mut early: Vec<Signal> = Vec::new();
    if initiator {
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = pc.local_description().await.ok_or("no local offer")?.sdp;
        events
            .send(LinkEvent::Signal(peer.clone(), Signal::Offer { sdp }))
            .await?;
    }
    let mut open = false;
    let mut uploads: VecDeque<Upload> = VecDeque::new();
    let setup = tokio::time::sleep(SETUP_TIMEOUT);
    tokio::pin!(setup);
    let mut mark = UploadingMark {
        count: &cfg.uploading,
        on: false,
    };
    let result: &'static str = loop {
        // Upload pacing: keep at most this link's share of `high_water`
        // bytes in flight.
        let busy = open && !uploads.is_empty();
        mark.set(busy);
        if busy {
            if let Some(ch) = &dc {
                let mut out = ch.outstanding_bytes().await?;
                let window = mark.window(cfg.high_water);
                while out < window {
                    let Some(u) = uploads.front_mut() else { break };
                    let end = (u.next + swarmcast_proto::wire::MAX_CHUNK_DATA).min(u.to);
                    let mut data = u.data.slice(u.next..end);
                    if cfg.corrupt_uploads {
                        let mut bad = data.to_vec();
                        bad[0] ^= 0xff;
                        data = Bytes::from(bad);
                    }
                    let frame = Frame::Chunk {
                        rendition: u.rendition,
                        seq: u.seq,
                        offset: u.next as u32,
                        total: u.data.len() as u32,
                        data,
                    };
                    let mut buf = BytesMut::with_capacity(frame.encoded_len());
                    frame.encode_into(&mut buf)?;
                    out += buf.len();
                    ch.send(buf).await?;
                    // What left for the wire (a `Serve` cancelled midway
                    // sends less than it was given).
                    metrics::counter!("swarmcast_edge_sent_bytes_total")
                        .increment((end - u.next) as u64);
                    u.next = end;
                    if u.next >= u.to {
                        if let Some(done) = uploads.pop_front() {
                            events
                                .send(LinkEvent::UploadDone(
                                    peer.clone(),
                                    done.rendition,
                                    done.seq,
                                ))
                                .await?;
                        }
                    }
                }
            }
        }
        let waiting = open && !uploads.is_empty();
        // An idle link leaves the share at once, not at its next event.
        mark.set(waiting);
        tokio::select! {
            _ = stop.cancelled() => break "closed by us",
            _ = &mut setup, if !open => break "setup timed out",
            _ = tokio::time::sleep(Duration::from_millis(10)), if waiting => {}
            ev = pc_events.recv() => match ev {
                None => break "connection gone",
                Some(PcEvent::Candidate(c)) => events.send(LinkEvent::Signal(peer.clone(), c)).await?,
                Some(PcEvent::GatheringComplete) => events.send(LinkEvent::Signal(peer.clone(), Signal::EndOfCandidates)).await?,
                Some(PcEvent::State(s)) => match s {
                    // The crate leaves writes queued while it handles the
                    // DTLS-done event (the SCTP INIT) until its next timer,
                    // 200 ms later; a call that wakes its writer sends them
                    // now (docs/notes/webrtc-0.21.md, "Setup time").
                    RTCPeerConnectionState::Connected => {
                        if let Some(ch) = &dc {
                            ch.set_buffered_amount_low_threshold((cfg.high_water / 2) as u32).await?;
                        }
                    }
                    RTCPeerConnectionState::Failed => break "connection failed",
                    RTCPeerConnectionState::Closed => break "connection closed",
                    _ => {}
                },
                Some(PcEvent::Channel(ch)) => {
                    if dc.is_none() {
                        dc = Some(ch);
                    }
                }
            },
            ev = async { match &dc { Some(ch) => ch.poll().await, None => std::future::pending().await } } => match ev {
                None => break "channel closed",
                Some(DataChannelEvent::OnOpen) => {
                    open = true;
                    if let Some(ch) = &dc {
                        ch.set_buffered_amount_low_threshold((cfg.high_water / 2) as u32).await?;
                    }
                    events.send(LinkEvent::Open(peer.clone(), started.elapsed())).await?;
                }
                Some(DataChannelEvent::OnMessage(m)) => {
                    let data = Bytes::from(m.data);
                    let len = data.len();
                    match Frame::decode(data) {
                        Ok(f) => events.send(LinkEvent::Frame(peer.clone(), f)).await?,
                        Err(e) => {
                            metrics::counter!("swarmcast_edge_bad_frames_total").increment(1);
                            events.send(LinkEvent::BadFrame(peer.clone(), format!("{e} ({len} bytes)"))).await?;
                        }
                    }
                }
                Some(DataChannelEvent::OnClose) => break "channel closed",
                Some(_) => {}
            },
            cmd = cmds.recv() => match cmd {
                None => break "driver gone",
                Some(LinkCmd::Remote(Signal::Offer { sdp })) if !initiator && !remote_set => {
                    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                    remote_set = true;
                    let answer = pc.create_answer(None).await?;
                    pc.set_local_description(answer).await?;
                    let sdp = pc.local_description().await.ok_or("no local answer")?.sdp;
                    events.send(LinkEvent::Signal(peer.clone(), Signal::Answer { sdp })).await?;
                    for c in early.drain(..) {
                        add_candidate(&pc, c).await?;
                    }
                }
                Some(LinkCmd::Remote(Signal::Answer { sdp })) if initiator && !remote_set => {
                    pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                    remote_set = true;
                    for c in early.drain(..) {
                        add_candidate(&pc, c).await?;
                    }
                }
                Some(LinkCmd::Remote(c @ (Signal::Candidate { .. } | Signal::EndOfCandidates))) => {
                    if remote_set {
                        if let Err(e) = add_candidate(&pc, c).await {
                            debug!(error = %e, "remote candidate refused");
                        }
                    } else if early.len() < 64 {
                        early.push(c);
                    }
                }
                Some(LinkCmd::Remote(other)) => warn!(?other, "unexpected signal"),
                Some(LinkCmd::Send(frame)) => {
                    if let (true, Some(ch)) = (open, &dc) {
                        let mut buf = BytesMut::with_capacity(frame.encoded_len());
                        frame.encode_into(&mut buf)?;
                        ch.send(buf).await?;
                    }
                }
                Some(LinkCmd::SendRaw(bytes)) => {
                    if let (true, Some(ch)) = (open, &dc) {
                        ch.send(BytesMut::from(&bytes[..])).await?;
                    }
                }
                Some(LinkCmd::Serve { rendition, seq, data, from, to }) => {
                    let (from, to) = (from as usize, (to as usize).min(data.len()));
                    if from < to {
                        uploads.push_back(Upload { rendition, seq, data, next: from, to });
                    } else {
                        events.send(LinkEvent::UploadDone(peer.clone(), rendition, seq)).await?;
                    }
                }
                Some(LinkCmd::Stop { rendition, seq }) => uploads.retain(|u| !(u.rendition == rendition && u.seq == seq)),
            },
        }
    };
    let _ = pc.close().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploading_links_share_the_window_and_leave_it_when_dropped() {
        let count = AtomicUsize::new(0);
        let hw = 256 * 1024;
        let mut a = UploadingMark {
            count: &count,
            on: false,
        };
        // Alone (or idle) a link has the whole window.
        assert_eq!(a.window(hw), hw);
        a.set(true);
        a.set(true);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(a.window(hw), hw);
        {
            let mut b = UploadingMark {
                count: &count,
                on: false,
            };
            b.set(true);
            assert_eq!(a.window(hw), hw / 2);
            assert_eq!(b.window(hw), hw / 2);
            // A link that stops with uploads queued (an error, the
            // neighbour gone) gives its share back.
        }
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(a.window(hw), hw);
        // Never under one chunk, however many links upload.
        count.store(1000, Ordering::Relaxed);
        assert_eq!(a.window(hw), swarmcast_proto::wire::MAX_FRAME);
        count.store(1, Ordering::Relaxed);
        a.set(false);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
