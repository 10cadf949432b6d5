//! The tokio shell around the sans-IO [`Swarm`] core.
//!
//! Ownership: one task owns each swarm (its [`Cells`]: one [`Swarm`] core
//! per cell, and the senders to its sessions) and is fed through a bounded
//! channel; one task owns each
//! WebSocket session. The registry of swarms is a `DashMap` from stream id
//! to that channel, touched only when a session joins. Sessions decode JSON,
//! check tokens and apply per-session rate limits in parallel; the swarm
//! task does only index and selection work, and encodes each outgoing
//! message once for all its recipients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use dashmap::DashMap;
use futures_util::SinkExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use swarmcast_proto::tracker::{ClientKind, ClientMsg, ErrorCode, MAX_MESSAGE, ServerMsg};
use swarmcast_proto::{Role, StreamId, TokenKey};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, field, info, info_span, warn};

use crate::cells::{Admitted, Cells, Seat};
use crate::stats::StreamStats;
#[cfg(doc)]
use crate::swarm::Swarm;
use crate::swarm::{JoinRequest, Recipients, SwarmConfig};
use crate::webtorrent_server::{self, WtHub};

/// Messages queued to one session before it counts as too slow and is
/// dropped.
const SESSION_QUEUE: usize = 1024;
/// Commands queued to one swarm task.
const SWARM_QUEUE: usize = 8192;
/// A session must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive rate-limit violations after which a session is closed.
const MAX_VIOLATIONS: u32 = 50;

type ConnId = u64;

/// A swarm's key: the stream, and its cell (0: the stream's home; `k`: a
/// cell this node hosts for a stream spread over nodes).
type SwarmKey = (StreamId, u32);

enum Cmd {
    Join {
        req: JoinRequest,
        /// A tracker node feeding this cell of the stream (home only).
        feeder: Option<u32>,
        conn: ConnId,
        out: mpsc::Sender<Utf8Bytes>,
        reply: oneshot::Sender<Result<Admitted, ErrorCode>>,
    },
    Msg {
        seat: Seat,
        conn: ConnId,
        msg: ClientMsg,
    },
    Leave {
        seat: Seat,
        conn: ConnId,
    },
    Stats {
        reply: oneshot::Sender<StreamStats>,
    },
}

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sustained messages per second.
    pub msgs_per_sec: u32,
    /// Burst.
    pub msg_burst: u32,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Silence after which a session is closed.
    pub idle_timeout: Duration,
}

/// A session's token bucket: `msgs_per_sec` sustained, `msg_burst` at once;
/// more than [`MAX_VIOLATIONS`] refused messages in a row is a flood.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    refill_at: Instant,
    violations: u32,
}

/// What the bucket says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Handle it.
    Yes,
    /// Refuse it (too many messages).
    No,
    /// Refuse it and close the session (a flood).
    Flood,
}

impl RateLimit {
    pub(crate) fn new(limits: &SessionLimits) -> Self {
        Self {
            rate: f64::from(limits.msgs_per_sec),
            burst: f64::from(limits.msg_burst),
            tokens: f64::from(limits.msg_burst),
            refill_at: Instant::now(),
            violations: 0,
        }
    }

    /// Takes a token for one message, before any parsing.
    pub(crate) fn admit(&mut self) -> Admit {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refill_at).as_secs_f64() * self.rate)
            .min(self.burst);
        self.refill_at = now;
        if self.tokens < 1.0 {
            self.violations += 1;
            return if self.violations > MAX_VIOLATIONS {
                Admit::Flood
            } else {
                Admit::No
            };
        }
        self.tokens -= 1.0;
        self.violations = 0;
        Admit::Yes
    }
}

/// How many streams, and how one stream's audience is split.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Most swarms (streams and cells) at once.
    pub max_swarms: usize,
    /// Most viewers and relays per cell (0: one cell per stream).
    pub cell_viewers: usize,
    /// The tracker tier's URL (the balancer's `/v1/ws`): cells are then
    /// spread over nodes. A stream's home redirects joiners beyond its
    /// first cell to cell `k`; the node that gets cell `k`'s sessions
    /// connects back through this URL to the home for the stream's records.
    pub tier_url: Option<String>,
}

/// The tracker's shared state.
#[derive(Debug)]
pub struct Tracker {
    key: TokenKey,
    swarm_cfg: SwarmConfig,
    limits: SessionLimits,
    streams: StreamLimits,
    swarms: DashMap<SwarmKey, mpsc::Sender<Cmd>>,
    next_conn: AtomicU64,
    sessions: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    metrics: PrometheusHandle,
    /// The WebTorrent endpoint's swarms and counts.
    pub(crate) wt: WtHub,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl Tracker {
    /// Shared state for the routes.
    pub fn new(
        key: TokenKey,
        swarm_cfg: SwarmConfig,
        limits: SessionLimits,
        streams: StreamLimits,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        wt: WtHub,
    ) -> Arc<Self> {
        Arc::new(Self {
            key,
            swarm_cfg,
            limits,
            streams,
            swarms: DashMap::new(),
            next_conn: AtomicU64::new(1),
            sessions: AtomicU64::new(0),
            shutdown,
            tasks,
            metrics: swarmcast_svc::metrics_handle(),
            wt,
        })
    }

    pub(crate) fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Sessions are tracked so that shutdown waits (up to the grace period)
    /// for each to send its close frame.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn swarm(self: &Arc<Self>, key: &SwarmKey) -> Result<mpsc::Sender<Cmd>, ErrorCode> {
        if let Some(tx) = self.swarms.get(key) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        if self.swarms.len() >= self.streams.max_swarms {
            return Err(ErrorCode::Overloaded);
        }
        let tx = self
            .swarms
            .entry(key.clone())
            .and_modify(|tx| {
                if tx.is_closed() {
                    *tx = self.spawn_swarm(key.clone());
                }
            })
            .or_insert_with(|| self.spawn_swarm(key.clone()))
            .clone();
        metrics::gauge!("swarmcast_tracker_swarms").set(self.swarms.len() as f64);
        Ok(tx)
    }

    fn spawn_swarm(self: &Arc<Self>, key: SwarmKey) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(SWARM_QUEUE);
        let span = info_span!("swarm", stream = %key.0, cell = key.1);
        let this = self.clone();
        self.tasks.spawn(swarm_task(this, key, rx).instrument(span));
        tx
    }

    async fn stats(&self, key: &SwarmKey) -> Option<StreamStats> {
        let tx = self.swarms.get(key)?.clone();
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Stats { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// The routes: `/v1/ws`, `/v1/streams`, `/v1/streams/{stream}/stats`, the
/// WebTorrent endpoint at `/announce` (and at `/` for a WebSocket upgrade),
/// `/v1/webtorrent/stats`, the dashboard at `/`, `/metrics`, `/healthz`.
pub fn router(tracker: Arc<Tracker>) -> Router {
    Router::new()
        .route("/v1/ws", get(ws_upgrade))
        .route("/v1/streams", get(list_streams))
        .route("/v1/streams/{stream}/stats", get(stream_stats))
        .route("/announce", get(wt_upgrade))
        .route(
            "/v1/webtorrent/stats",
            get(|State(t): State<Arc<Tracker>>| async move { axum::Json(t.wt.stats()) }),
        )
        .route("/", get(root))
        .route(
            "/dashboard",
            get(|| async { Html(include_str!("dashboard.html")) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_page))
        .with_state(tracker)
}

/// The routes of `--wt-listen`: the WebTorrent endpoint on every path.
pub fn wt_router(tracker: Arc<Tracker>) -> Router {
    Router::new().fallback(get(wt_upgrade)).with_state(tracker)
}

async fn wt_upgrade(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    if !t.wt.admits(&t.key, uri.query(), now_s()) {
        return (StatusCode::UNAUTHORIZED, "a valid ?token= is required\n").into_response();
    }
    webtorrent_server::upgrade(t, ws, remote)
}

/// `/`: the dashboard, or the WebTorrent endpoint for a WebSocket upgrade
/// (public WebTorrent trackers are announced as `wss://host`).
async fn root(
    State(t): State<Arc<Tracker>>,
    connect: ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequestParts as _;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade {
        return Html(include_str!("dashboard.html")).into_response();
    }
    let uri = req.uri().clone();
    let (mut parts, _) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &t).await {
        Ok(ws) => wt_upgrade(State(t), connect, uri, ws).await,
        Err(rejection) => rejection.into_response(),
    }
}

async fn metrics_page(State(t): State<Arc<Tracker>>) -> Response {
    t.wt.export_metrics();
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("swarmcast_tracker_resident_bytes").set(rss as f64);
        let n = t.sessions.load(Ordering::Relaxed);
        if n > 0 {
            metrics::gauge!("swarmcast_tracker_resident_bytes_per_session")
                .set(rss as f64 / n as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        t.metrics.render(),
    )
        .into_response()
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn list_streams(State(t): State<Arc<Tracker>>) -> Response {
    let ids: Vec<SwarmKey> = t.swarms.iter().map(|e| e.key().clone()).collect();
    let mut out = Vec::new();
    for id in ids {
        if let Some(mut s) = t.stats(&id).await {
            s.segments.clear();
            out.push(s);
        }
    }
    axum::Json(out).into_response()
}

/// `/v1/streams/{stream}/stats`: the stream's home on this node, or with
/// `?cell=K` the cell `K` this node hosts.
async fn stream_stats(
    State(t): State<Arc<Tracker>>,
    Path(stream): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    let Ok(id) = StreamId::new(stream) else {
        return (StatusCode::BAD_REQUEST, "bad stream id\n").into_response();
    };
    let Ok(cell) = query_param(uri.query(), "cell").map_or(Ok(0), str::parse::<u32>) else {
        return (StatusCode::BAD_REQUEST, "bad cell\n").into_response();
    };
    match t.stats(&(id, cell)).await {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown stream\n").into_response(),
    }
}

async fn ws_upgrade(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    // `?stream=ID` (clients add it for load balancers that route by
    // stream): the hello must then name the same stream.
    let url_stream = query_param(uri.query(), "stream").map(str::to_string);
    // `?cell=K`: a session of cell K of a stream spread over nodes.
    let url_cell = match query_param(uri.query(), "cell").map(str::parse::<u32>) {
        None => None,
        Some(Ok(c)) if (1..=swarmcast_proto::tracker::MAX_CELLS).contains(&c) => Some(c),
        Some(_) => {
            metrics::counter!("swarmcast_tracker_refused_total", "code" => "malformed")
                .increment(1);
            return (StatusCode::BAD_REQUEST, "cell= must be within 1..=65535\n").into_response();
        }
    };
    // Messages up to twice the protocol limit reach the session, which
    // answers `too_large`; larger ones end the connection.
    ws.max_message_size(2 * MAX_MESSAGE)
        .max_frame_size(2 * MAX_MESSAGE)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let conn = t.next_conn();
            let span =
                info_span!("session", conn, %remote, stream = field::Empty, peer = field::Empty);
            let tasks = t.tasks.clone();
            tasks.track_future(session(t, socket, conn, url_stream, url_cell).instrument(span))
        })
}

/// The value of `key` in a URL's query string (values here are tokens and
/// ids, which need no unescaping).
pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn send_error(ws: &mut WebSocket, code: ErrorCode, message: &str) -> bool {
    metrics::counter!("swarmcast_tracker_refused_total", "code" => code.as_str()).increment(1);
    debug!(code = code.as_str(), message, "refused");
    ws.send(Message::text(ServerMsg::error(code, message).encode()))
        .await
        .is_ok()
}

struct Joined {
    swarm: mpsc::Sender<Cmd>,
    seat: Seat,
}

async fn session(
    t: Arc<Tracker>,
    mut ws: WebSocket,
    conn: ConnId,
    url_stream: Option<String>,
    url_cell: Option<u32>,
) {
    metrics::gauge!("swarmcast_tracker_sessions").increment(1.0);
    t.sessions.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel::<Utf8Bytes>(SESSION_QUEUE);
    let mut out_tx = Some(out_tx);
    let mut joined: Option<Joined> = None;
    let limits = t.limits;
    let mut bucket = RateLimit::new(&limits);
    let mut last_seen = Instant::now();
    let started = Instant::now();
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // Created once: re-creating it every turn would take the shared token's
    // lock for every message of every session.
    let shutdown = t.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    let reason: &'static str = loop {
        tokio::select! {
            _ = &mut shutdown => {
                let _ = ws.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1001, reason: "tracker shutting down".into() }))).await;
                break "shutdown";
            }
            _ = ping.tick() => {
                if joined.is_none() && started.elapsed() > HELLO_TIMEOUT {
                    let _ = send_error(&mut ws, ErrorCode::NotJoined, "no hello in time").await;
                    break "hello_timeout";
                }
                if last_seen.elapsed() > limits.idle_timeout {
                    break "idle";
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break "closed";
                }
            }
            out = out_rx.recv(), if joined.is_some() => match out {
                Some(text) => {
                    // Whatever else is queued goes out in the same write.
                    let mut batch = 0;
                    let mut failed = ws.feed(Message::Text(text)).await.is_err();
                    while !failed && batch < 64 {
                        let Ok(more) = out_rx.try_recv() else { break };
                        failed = ws.feed(Message::Text(more)).await.is_err();
                        batch += 1;
                    }
                    if failed || ws.flush().await.is_err() {
                        break "closed";
                    }
                }
                // The swarm dropped this session (too slow to read).
                // The swarm dropped this session (too slow to read, or its
                // cell lost the stream's home).
                None => break "dropped",
            },
            frame = ws.recv() => {
                let Some(Ok(frame)) = frame else { break "closed" };
                last_seen = Instant::now();
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        if !send_error(&mut ws, ErrorCode::Malformed, "binary frames are not part of the protocol").await {
                            break "closed";
                        }
                        continue;
                    }
                    Message::Close(_) => {
                        // The reply tungstenite queued on reading it: the
                        // client sees the closing handshake, not a reset.
                        let _ = ws.flush().await;
                        break "closed";
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                match bucket.admit() {
                    Admit::Yes => {}
                    Admit::No => {
                        if !send_error(&mut ws, ErrorCode::RateLimited, "too many messages").await {
                            break "closed";
                        }
                        continue;
                    }
                    Admit::Flood => {
                        let _ = send_error(&mut ws, ErrorCode::RateLimited, "message flood: closing").await;
                        break "flood";
                    }
                }
                let msg = match ClientMsg::decode(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        if !send_error(&mut ws, e.code(), &e.to_string()).await {
                            break "closed";
                        }
                        continue;
                    }
                };
                metrics::counter!("swarmcast_tracker_messages_total", "type" => msg.kind()).increment(1);
                match (&joined, msg) {
                    (None, ClientMsg::Hello(hello)) => {
                        let role = match hello.kind {
                            ClientKind::Native | ClientKind::Browser => Role::Viewer,
                            ClientKind::Relay => Role::Relay,
                            ClientKind::Publisher => Role::Ingest,
                        };
                        if url_stream.as_deref().is_some_and(|s| s != hello.stream.as_str()) {
                            let _ = send_error(&mut ws, ErrorCode::Forbidden, "the hello names another stream than the URL's ?stream=").await;
                            break "wrong_stream";
                        }
                        if let Err(e) = t.key.verify(&hello.token, &hello.stream, role, now_s()) {
                            let _ = send_error(&mut ws, e.code(), &e.to_string()).await;
                            break "unauthorized";
                        }
                        // A publisher naming a cell on the home URL is a
                        // node feeding that cell; anyone else's hello names
                        // the URL's cell.
                        let feeder = (hello.kind == ClientKind::Publisher && url_cell.is_none()).then_some(hello.cell).flatten();
                        if feeder.is_none() && hello.cell != url_cell {
                            let _ = send_error(&mut ws, ErrorCode::Forbidden, "the hello names another cell than the URL's ?cell=").await;
                            break "wrong_cell";
                        }
                        if url_cell.is_some() && (t.streams.tier_url.is_none() || hello.kind == ClientKind::Publisher) {
                            let _ = send_error(&mut ws, ErrorCode::Forbidden, match hello.kind {
                                ClientKind::Publisher => "publish to the stream's home (no ?cell=)",
                                _ => "this tracker does not host cells (no --tier-url)",
                            }).await;
                            break "wrong_cell";
                        }
                        let span = tracing::Span::current();
                        span.record("stream", field::display(&hello.stream));
                        span.record("peer", field::display(&hello.peer_id));
                        let swarm = match t.swarm(&(hello.stream.clone(), url_cell.unwrap_or(0))) {
                            Ok(s) => s,
                            Err(code) => {
                                let _ = send_error(&mut ws, code, "too many streams").await;
                                break "overloaded";
                            }
                        };
                        let (reply, rx) = oneshot::channel();
                        let req = JoinRequest { peer_id: hello.peer_id, kind: hello.kind, region: hello.region, upload_kbps: hello.upload_kbps };
                        let Some(out) = out_tx.take() else { break "closed" };
                        if swarm.send(Cmd::Join { req, feeder, conn, out, reply }).await.is_err() {
                            let _ = send_error(&mut ws, ErrorCode::Internal, "swarm unavailable, retry").await;
                            break "internal";
                        }
                        match rx.await {
                            Ok(Ok(Admitted::Seat(seat))) => {
                                info!("joined");
                                joined = Some(Joined { swarm, seat });
                            }
                            Ok(Ok(Admitted::Redirect(cell))) => {
                                debug!(cell, "redirected");
                                metrics::counter!("swarmcast_tracker_redirects_total").increment(1);
                                let _ = ws.send(Message::text(ServerMsg::Redirect { cell }.encode())).await;
                                let _ = ws.send(Message::Close(None)).await;
                                break "redirected";
                            }
                            Ok(Err(code)) => {
                                let _ = send_error(&mut ws, code, match code {
                                    ErrorCode::PeerIdTaken => "peer id already in this swarm",
                                    ErrorCode::Internal if url_cell.is_some() => "this cell cannot reach the stream's home; retry",
                                    ErrorCode::Internal => "swarm unavailable, retry",
                                    ErrorCode::Forbidden => "this home never opened that cell",
                                    ErrorCode::Malformed => "no such cell",
                                    _ => "swarm is full",
                                }).await;
                                break "refused";
                            }
                            Err(_) => break "internal",
                        }
                    }
                    (None, _) => {
                        if !send_error(&mut ws, ErrorCode::NotJoined, "say hello first").await {
                            break "closed";
                        }
                    }
                    (Some(_), ClientMsg::Ping { nonce }) => {
                        if ws.send(Message::text(ServerMsg::Pong { nonce }.encode())).await.is_err() {
                            break "closed";
                        }
                    }
                    (Some(_), ClientMsg::Pong { .. }) => {}
                    (Some(j), msg) => {
                        if j.swarm.send(Cmd::Msg { seat: j.seat, conn, msg }).await.is_err() {
                            break "internal";
                        }
                    }
                }
            }
        }
    };
    if let Some(j) = joined {
        let _ = j.swarm.send(Cmd::Leave { seat: j.seat, conn }).await;
    }
    debug!(reason, "session ended");
    metrics::counter!("swarmcast_tracker_disconnects_total", "reason" => reason).increment(1);
    metrics::gauge!("swarmcast_tracker_sessions").decrement(1.0);
    t.sessions.fetch_sub(1, Ordering::Relaxed);
}

/// A cell hosted here for a stream whose home is elsewhere (or in another
/// task of this node): a tracker client to the home through the tier URL,
/// whose records this cell publishes, and the local seat they come from.
struct Feed {
    client: crate::client::ClientHandle,
    events: mpsc::Receiver<crate::client::Event>,
    stop: CancellationToken,
    seat: Seat,
    /// Connected to the home now.
    up: bool,
    /// Since when it is not (the start, or the last disconnect).
    down_since: Instant,
    /// The client stopped for good (the home refused the feeder).
    ended: bool,
}

/// A hosted cell whose feed from the stream's home has been down this long
/// refuses joins and lets its viewers go (with an error), so that their
/// players fall back to HTTP with the origin's own records instead of
/// waiting on a cell that hears of no segment.
const FEED_GRACE: Duration = Duration::from_secs(5);

impl Feed {
    fn lost(feed: Option<&Feed>) -> bool {
        feed.is_none_or(|f| f.ended || (!f.up && f.down_since.elapsed() > FEED_GRACE))
    }

    /// Joins the stand-in publisher and starts the client (`None` when the
    /// core refuses the stand-in, which an empty swarm never does).
    fn start(t: &Tracker, key: &SwarmKey, tier_url: &str, core: &mut Cells) -> Option<Feed> {
        let (stream, cell) = key;
        let req = JoinRequest {
            peer_id: swarmcast_proto::PeerId::new("cell-feed").ok()?,
            kind: ClientKind::Publisher,
            region: None,
            upload_kbps: 0,
        };
        let seat = core.join(0, req).ok()?;
        while core.poll_output().is_some() {}
        let token = t.key.sign(&swarmcast_proto::Claims {
            stream: stream.clone(),
            role: Role::Ingest,
            expires_at: now_s() + 10 * 365 * 86_400,
        });
        let hello = swarmcast_proto::tracker::Hello {
            token,
            stream: stream.clone(),
            peer_id: swarmcast_proto::PeerId::new(format!(
                "cell-{cell}-{:016x}",
                rand::random::<u64>()
            ))
            .ok()?,
            kind: ClientKind::Publisher,
            upload_kbps: 0,
            region: None,
            cell: Some(*cell),
        };
        let stop = t.shutdown.child_token();
        let (client, events) = crate::client::start(
            crate::client::ClientConfig::new(tier_url.to_string(), hello),
            stop.clone(),
        );
        Some(Feed {
            client,
            events,
            stop,
            seat,
            up: false,
            down_since: Instant::now(),
            ended: false,
        })
    }
}

async fn swarm_task(t: Arc<Tracker>, key: SwarmKey, mut rx: mpsc::Receiver<Cmd>) {
    let seed = rand::random::<u64>();
    let (stream, cell) = key.clone();
    let mut core = if cell == 0 {
        let c = Cells::new(
            stream.clone(),
            t.swarm_cfg.clone(),
            t.streams.cell_viewers,
            seed,
        );
        if t.streams.tier_url.is_some() {
            c.spread()
        } else {
            c
        }
    } else {
        Cells::new(stream.clone(), t.swarm_cfg.clone(), 0, seed)
    };
    let mut feed = match (&t.streams.tier_url, cell) {
        (Some(url), 1..) => Feed::start(&t, &key, url, &mut core),
        _ => None,
    };
    let mut conns: Vec<Option<(ConnId, mpsc::Sender<Utf8Bytes>)>> = Vec::new();
    let epoch = Instant::now();
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut empty_since: Option<Instant> = None;
    let mut no_publisher_since: Option<Instant> = None;
    let mut refused_seen = std::collections::BTreeMap::new();
    let mut exported = crate::swarm::Counters::default();
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => {
                    tokio::time::sleep_until((epoch + Duration::from_millis(d)).into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let now = now_ms();
                match cmd {
                    Cmd::Join { req, feeder, conn, out, reply } => {
                        let r = match feeder {
                            Some(k) => core.join_feeder(req.peer_id, k).map(Admitted::Seat),
                            None if cell > 0 && Feed::lost(feed.as_ref()) => Err(ErrorCode::Internal),
                            None => core.admit(now, req),
                        };
                        if let Ok(Admitted::Seat(seat)) = r {
                            let i = seat as usize;
                            if conns.len() <= i {
                                conns.resize_with(i + 1, || None);
                            }
                            conns[i] = Some((conn, out));
                        }
                        let _ = reply.send(r);
                    }
                    Cmd::Msg { seat, conn, msg } => {
                        if conns.get(seat as usize).and_then(Option::as_ref).is_some_and(|(c, _)| *c == conn) {
                            core.handle(now, seat, msg);
                        }
                    }
                    Cmd::Leave { seat, conn } => {
                        let owned = conns.get(seat as usize).and_then(Option::as_ref).is_some_and(|(c, _)| *c == conn);
                        if owned {
                            conns[seat as usize] = None;
                            core.leave(now, seat);
                        }
                    }
                    Cmd::Stats { reply } => {
                        let mut s = core.stats();
                        s.cell = cell;
                        let _ = reply.send(s);
                    }
                }
            }
            _ = sleep => core.handle_timeout(now_ms()),
            // The home's records, published into this cell.
            ev = async { match feed.as_mut() { Some(f) => f.events.recv().await, None => std::future::pending().await } } => {
                match (ev, feed.as_mut()) {
                    (Some(crate::client::Event::Message(ServerMsg::Segment { meta })), Some(f)) => {
                        core.handle(now_ms(), f.seat, ClientMsg::Publish { meta });
                    }
                    (Some(crate::client::Event::Connected(_)), Some(f)) => {
                        f.up = true;
                        info!("cell fed from the stream's home");
                    }
                    (Some(crate::client::Event::Disconnected { reason, fatal }), Some(f)) => {
                        if f.up || fatal {
                            warn!(reason, fatal, "cell feed from the stream's home interrupted");
                            f.down_since = Instant::now();
                        }
                        f.up = false;
                        f.ended |= fatal;
                    }
                    (None, Some(f)) => f.ended = true,
                    _ => {}
                }
            }
            _ = tick.tick() => {
                export_gauges(&stream, cell, &core);
                // A hosted cell counts its members to the home; its
                // stand-in publisher is not one.
                let stand_in = usize::from(feed.is_some());
                if let Some(f) = &feed {
                    let members = core.len().saturating_sub(stand_in) as u32;
                    f.client.try_send(ClientMsg::CellReport { members });
                }
                if cell > 0 && Feed::lost(feed.as_ref()) && core.len() > stand_in {
                    let text = "this cell lost the stream's home; retry";
                    let n = let_go(&mut core, &mut conns, text, now_ms());
                    warn!(sessions = n, "cell without its feed from the stream's home: sessions let go");
                    metrics::counter!("swarmcast_tracker_cell_feed_lost_total").increment(1);
                }
                // A home that has had no publisher for a while lets its
                // feeders go: they reconnect through the balancer to the
                // node that is the stream's home now (after a failover
                // flap, the publisher may be there).
                if cell == 0 && core.feeder_count() > 0 && core.publisher_count() == 0 {
                    let since = *no_publisher_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > STALE_HOME {
                        let feeders = core.feeder_seats();
                        let text = "this node no longer has the stream's publisher; reconnect";
                        let_go_seats(&mut core, &mut conns, &feeders, text, now_ms());
                        metrics::counter!("swarmcast_tracker_stale_home_feeders_released_total")
                            .increment(feeders.len() as u64);
                        info!(feeders = feeders.len(), "no publisher for {STALE_HOME:?}: feeders let go");
                        no_publisher_since = None;
                    }
                } else {
                    no_publisher_since = None;
                }
                let ended = feed.as_ref().is_some_and(|f| f.ended);
                if core.len() <= stand_in {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    // A cell whose feed ended goes at once: joins there are
                    // refused anyway.
                    let linger = if ended { Duration::ZERO } else { Duration::from_secs(60) };
                    if since.elapsed() >= linger && rx.is_empty() {
                        // Unregister, then drain what raced in before stopping.
                        rx.close();
                        t.swarms.remove_if(&key, |_, tx| tx.is_closed());
                        if let Some(f) = feed.take() {
                            f.stop.cancel();
                        }
                        while let Ok(cmd) = rx.try_recv() {
                            if let Cmd::Join { reply, .. } = cmd {
                                let _ = reply.send(Err(ErrorCode::Internal));
                            }
                        }
                        metrics::gauge!("swarmcast_tracker_swarms").set(t.swarms.len() as f64);
                        info!("swarm empty for 60 s: removed");
                        return;
                    }
                } else {
                    empty_since = None;
                }
            }
        }
        deliver(&mut core, &mut conns, now_ms());
        export_counters(&core, &mut exported, &mut refused_seen);
    }
}

/// A home with feeders and no publisher for this long lets the feeders go.
const STALE_HOME: Duration = Duration::from_secs(10);

/// Lets every connected session go (not the stand-in publisher, which has
/// no connection), each told why first; returns how many went.
fn let_go(
    core: &mut Cells,
    conns: &mut [Option<(ConnId, mpsc::Sender<Utf8Bytes>)>],
    why: &str,
    now: u64,
) -> usize {
    let seats: Vec<Seat> = (0..conns.len() as Seat)
        .filter(|&s| conns[s as usize].is_some())
        .collect();
    let_go_seats(core, conns, &seats, why, now);
    seats.len()
}

/// Lets these sessions go, each told why first with an `internal` error
/// (its connection closes once the message is written; clients retry).
fn let_go_seats(
    core: &mut Cells,
    conns: &mut [Option<(ConnId, mpsc::Sender<Utf8Bytes>)>],
    seats: &[Seat],
    why: &str,
    now: u64,
) {
    let text = Utf8Bytes::from(ServerMsg::error(ErrorCode::Internal, why).encode());
    for &seat in seats {
        if let Some((_, tx)) = conns.get_mut(seat as usize).and_then(Option::take) {
            let _ = tx.try_send(text.clone());
        }
        core.leave(now, seat);
    }
    // What the cores said of them goes to sessions that stay.
    deliver(core, conns, now);
}

/// Sends every queued output; a session whose queue is full is dropped
/// (the core forgets it at once; its connection closes when it sees its
/// queue closed).
fn deliver(core: &mut Cells, conns: &mut [Option<(ConnId, mpsc::Sender<Utf8Bytes>)>], now: u64) {
    while let Some(o) = core.poll_output() {
        let Ok(text) = Utf8Bytes::try_from(o.text) else {
            warn!("core produced non-UTF-8 text");
            continue;
        };
        let seats: &[Seat] = match &o.to {
            Recipients::One(s) => std::slice::from_ref(s),
            Recipients::Many(v) => v,
        };
        let mut dropped = Vec::new();
        for &s in seats {
            if let Some(Some((_, tx))) = conns.get(s as usize) {
                if tx.try_send(text.clone()).is_err() {
                    dropped.push(s);
                }
            }
        }
        metrics::counter!("swarmcast_tracker_messages_sent_total")
            .increment((seats.len() - dropped.len()) as u64);
        for s in dropped {
            conns[s as usize] = None;
            core.leave(now, s);
            metrics::counter!("swarmcast_tracker_slow_sessions_dropped_total").increment(1);
        }
    }
}

/// Adds what the core counted since the last call to the Prometheus
/// counters (cheap: a few integer compares).
fn export_counters(
    core: &Cells,
    last: &mut crate::swarm::Counters,
    refused_seen: &mut std::collections::BTreeMap<&'static str, u64>,
) {
    let c = core.counters();
    let c = c.as_ref();
    if c == last {
        return;
    }
    let inc = |name: &'static str, now: u64, before: u64| {
        if now > before {
            metrics::counter!(name).increment(now - before);
        }
    };
    inc(
        "swarmcast_tracker_segments_published_total",
        c.published,
        last.published,
    );
    inc(
        "swarmcast_tracker_first_fetch_assigned_total",
        c.first_fetch_assigned,
        last.first_fetch_assigned,
    );
    inc(
        "swarmcast_tracker_first_fetch_replaced_total",
        c.first_fetch_replaced,
        last.first_fetch_replaced,
    );
    inc(
        "swarmcast_tracker_stripe_plans_sent_total",
        c.stripe_plans_sent,
        last.stripe_plans_sent,
    );
    inc(
        "swarmcast_tracker_links_split_total",
        c.links_split,
        last.links_split,
    );
    inc(
        "swarmcast_tracker_signals_relayed_total",
        c.signals_relayed,
        last.signals_relayed,
    );
    for (code, &n) in &c.refused {
        let before = refused_seen.get(code).copied().unwrap_or(0);
        if n > before {
            metrics::counter!("swarmcast_tracker_refused_total", "code" => *code)
                .increment(n - before);
        }
        refused_seen.insert(code, n);
    }
    for (reason, &n) in &c.reports {
        let before = last.reports.get(reason).copied().unwrap_or(0);
        if n > before {
            metrics::counter!("swarmcast_tracker_peer_reports_total", "reason" => *reason)
                .increment(n - before);
            tracing::warn!(reason, "a peer was reported for misbehaving");
        }
    }
    *last = c.clone();
}

/// Per-stream gauges (once a second: computing them walks the swarm).
fn export_gauges(stream: &StreamId, cell: u32, core: &Cells) {
    let s = core.stats();
    let id = stream.to_string();
    let c = cell.to_string();
    let labels = [("stream", id), ("cell", c)];
    if cell == 0 {
        metrics::gauge!("swarmcast_tracker_cells", &labels).set(s.cells.len() as f64);
    }
    metrics::gauge!("swarmcast_tracker_viewers", &labels).set(f64::from(s.viewers));
    metrics::gauge!("swarmcast_tracker_offload_ratio", &labels).set(s.offload);
    metrics::gauge!("swarmcast_tracker_http_bytes", &labels).set(s.http_bytes as f64);
    metrics::gauge!("swarmcast_tracker_p2p_bytes", &labels).set(s.p2p_bytes as f64);
    metrics::gauge!("swarmcast_tracker_stalls", &labels).set(s.stalls as f64);
    for (share, v) in [
        ("0.5", s.spread_50_ms_median),
        ("0.95", s.spread_95_ms_median),
    ] {
        if let Some(v) = v {
            let [a, b] = labels.clone();
            metrics::gauge!(
                "swarmcast_tracker_spread_ms",
                &[a, b, ("share", share.to_string())]
            )
            .set(v as f64);
        }
    }
}
