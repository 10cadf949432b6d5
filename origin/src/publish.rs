//! Publishing new segments to the tracker.
//!
//! One WebSocket per stream (a hello joins one swarm), opened on the first
//! segment of that stream, authenticated with an ingest-role token the
//! origin signs itself. Each connection is owned by one task fed by a bounded
//! queue: when the tracker is slow or away, the oldest records are dropped
//! (and counted) rather than memory growing. After a reconnect the last few
//! records are sent again, so a restarted tracker learns the live edge at
//! once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use futures_util::{SinkExt as _, StreamExt as _};
use swarmcast_proto::tracker::{ClientKind, ClientMsg, Hello, ServerMsg};
use swarmcast_proto::{Claims, PeerId, Role, SegmentMeta, StreamId, TokenKey};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};

/// Records queued per stream before the oldest are dropped.
const QUEUE: usize = 256;
/// Records sent again after a reconnect.
const REPLAY: usize = 8;

/// Sends `SegmentMeta`s to the tracker.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    key: TokenKey,
    streams: DashMap<StreamId, mpsc::Sender<SegmentMeta>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Publisher {
    /// A publisher to the tracker at `url` (`ws://.../v1/ws`).
    pub fn new(
        url: String,
        key: TokenKey,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                url,
                key,
                streams: DashMap::new(),
                shutdown,
                tasks,
            }),
        }
    }

    /// Queues a record; never blocks.
    pub fn publish(&self, meta: SegmentMeta) {
        let stream = meta.id.stream.clone();
        let tx = self
            .inner
            .streams
            .entry(stream.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let inner = self.inner.clone();
                let span = info_span!("publisher", stream = %stream);
                self.inner
                    .tasks
                    .spawn(run(inner, stream, rx).instrument(span));
                tx
            })
            .clone();
        if tx.try_send(meta).is_err() {
            metrics::counter!("swarmcast_origin_publish_dropped_total").increment(1);
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn run(inner: Arc<Inner>, stream: StreamId, mut rx: mpsc::Receiver<SegmentMeta>) {
    let mut recent: VecDeque<SegmentMeta> = VecDeque::new();
    let mut backoff = Duration::from_millis(250);
    let peer_id =
        PeerId::new(format!("origin-{:08x}", rand::random::<u32>())).expect("a valid peer id");
    loop {
        match session(&inner, &stream, &peer_id, &mut rx, &mut recent).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "tracker connection lost");
                metrics::counter!("swarmcast_origin_publish_reconnects_total").increment(1);
            }
        }
        // Keep draining while away so the queue holds the newest records.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = &mut sleep => break,
                m = rx.recv() => match m {
                    Some(m) => remember(&mut recent, m),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn remember(recent: &mut VecDeque<SegmentMeta>, m: SegmentMeta) {
    if recent.len() == REPLAY {
        recent.pop_front();
    }
    recent.push_back(m);
}

/// One connection. `Ok` means shut down; `Err` means reconnect.
async fn session(
    inner: &Inner,
    stream: &StreamId,
    peer_id: &PeerId,
    rx: &mut mpsc::Receiver<SegmentMeta>,
    recent: &mut VecDeque<SegmentMeta>,
) -> Result<(), String> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(swarmcast_proto::tracker::url_with_stream(
            &inner.url, stream,
        )),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let token = inner.key.sign(&Claims {
        stream: stream.clone(),
        role: Role::Ingest,
        expires_at: now_s() + 86_400,
    });
    let hello = ClientMsg::Hello(Hello {
        token,
        stream: stream.clone(),
        peer_id: peer_id.clone(),
        kind: ClientKind::Publisher,
        upload_kbps: 0,
        region: None,
        cell: None,
    });
    ws.send(Message::text(hello.encode()))
        .await
        .map_err(|e| e.to_string())?;
    let mut joined = false;
    for m in recent.iter() {
        ws.send(Message::text(
            ClientMsg::Publish { meta: m.clone() }.encode(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            m = rx.recv() => {
                let Some(meta) = m else { return Ok(()) };
                ws.send(Message::text(ClientMsg::Publish { meta: meta.clone() }.encode()))
                    .await
                    .map_err(|e| e.to_string())?;
                metrics::counter!("swarmcast_origin_published_to_tracker_total").increment(1);
                remember(recent, meta);
            }
            incoming = ws.next() => match incoming {
                None => return Err("tracker closed the connection".into()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                    Ok(ServerMsg::Welcome { .. }) if !joined => {
                        joined = true;
                        info!("joined the tracker as publisher");
                    }
                    Ok(ServerMsg::Ping { nonce }) => {
                        ws.send(Message::text(ClientMsg::Pong { nonce }.encode())).await.map_err(|e| e.to_string())?;
                    }
                    Ok(ServerMsg::Error { code, message }) => {
                        return Err(format!("tracker refused: {code:?}: {message}"));
                    }
                    Ok(other) => debug!(?other, "ignored tracker message"),
                    Err(e) => warn!(error = %e, "undecodable tracker message"),
                },
                Some(Ok(Message::Close(_))) => return Err("tracker closed the connection".into()),
                Some(Ok(_)) => {}
            },
        }
    }
}
