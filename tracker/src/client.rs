//! A tracker client for edge peers, the origin and the load generator:
//! connect, hello, reconnect with jittered exponential backoff, typed
//! messages both ways.
//!
//! The client remembers what its owner announced (`have` / `lost` /
//! `have_map`, within the live window) and announces it again as have-maps
//! after every reconnect, so a restarted tracker rebuilds its index without
//! the owner doing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use swarmcast_proto::tracker::{ClientKind, ClientMsg, Hello, PeerConfig, ServerMsg, url_for};
use swarmcast_proto::{RenditionId, Seq};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a closing client waits for the tracker's close. Long: a
/// client that gives up and closes its socket while the tracker still
/// sends to it answers with a reset, and the tracker's kernel then drops
/// what the tracker had not read yet (the last stats report: seen with 2 s
/// on a loaded machine). `close(within)` bounds what the caller waits.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How to reach the tracker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/v1/ws` or `wss://...`.
    pub url: String,
    /// The hello to send on every connection.
    pub hello: Hello,
    /// First reconnect delay (doubles up to `backoff_max`, with full jitter).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl ClientConfig {
    /// Defaults: backoff from 250 ms to 10 s.
    pub fn new(url: impl Into<String>, hello: Hello) -> Self {
        Self {
            url: url.into(),
            hello,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// What the client tells its owner.
#[derive(Debug, Clone)]
pub enum Event {
    /// Joined (again): the tracker's welcome settings.
    Connected(PeerConfig),
    /// A message from the tracker.
    Message(ServerMsg),
    /// The connection ended; the client reconnects by itself unless the
    /// tracker refused the hello (then `fatal` is set and it stops).
    Disconnected {
        /// Why.
        reason: String,
        /// The client has stopped.
        fatal: bool,
    },
}

/// Sends messages to the tracker.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    tx: mpsc::Sender<ClientMsg>,
    /// Turns true when the client task has ended.
    ended: watch::Receiver<bool>,
}

impl ClientHandle {
    /// Queues a message (waits while the queue is full).
    pub async fn send(&self, msg: ClientMsg) -> Result<(), crate::TrackerError> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| crate::TrackerError::Client("client stopped".into()))
    }

    /// Queues a message unless the queue is full (then it is dropped:
    /// for periodic reports, where the next one says the same).
    pub fn try_send(&self, msg: ClientMsg) -> bool {
        self.tx.try_send(msg).is_ok()
    }

    /// Lets go of this handle and, once no other handle is left, waits (at
    /// most `within`) for the client to deliver what is queued and close
    /// the session: the tracker has then read every message sent before,
    /// an owner's last stats report among them.
    pub async fn close(self, within: Duration) {
        let ClientHandle { tx, mut ended } = self;
        drop(tx);
        let _ = tokio::time::timeout(within, ended.wait_for(|e| *e)).await;
    }
}

/// Starts the client task. It runs until `shutdown` or until every handle
/// is dropped.
pub fn start(
    cfg: ClientConfig,
    shutdown: CancellationToken,
) -> (ClientHandle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let (ended_tx, ended) = watch::channel(false);
    tokio::spawn(async move {
        run(cfg, rx, ev_tx, shutdown).await;
        let _ = ended_tx.send(true);
    });
    (ClientHandle { tx, ended }, ev_rx)
}

#[derive(Default)]
struct Held {
    window: usize,
    by_rendition: BTreeMap<RenditionId, BTreeSet<Seq>>,
}

impl Held {
    fn note(&mut self, msg: &ClientMsg) {
        let window = self.window.max(1);
        match msg {
            ClientMsg::Have { segments } => {
                for s in segments {
                    let set = self.by_rendition.entry(s.rendition).or_default();
                    set.insert(s.seq);
                    while set.len() > window {
                        set.pop_first();
                    }
                }
            }
            ClientMsg::Lost { segments } => {
                for s in segments {
                    if let Some(set) = self.by_rendition.get_mut(&s.rendition) {
                        set.remove(&s.seq);
                    }
                }
            }
            ClientMsg::HaveMap {
                rendition,
                base_seq,
                bitmap,
            } => {
                let Ok(bits) = hex::decode(bitmap) else {
                    return;
                };
                let set = self.by_rendition.entry(*rendition).or_default();
                let end = base_seq.saturating_add(bits.len() as u64 * 8);
                set.retain(|s| *s < *base_seq || *s >= end);
                for (i, b) in bits.iter().enumerate() {
                    for j in 0..8 {
                        if b & (0x80 >> j) != 0 {
                            set.insert(base_seq + (i * 8 + j) as u64);
                        }
                    }
                }
                while set.len() > window {
                    set.pop_first();
                }
            }
            _ => {}
        }
    }

    /// Have-maps describing everything held.
    fn maps(&self) -> Vec<ClientMsg> {
        self.by_rendition
            .iter()
            .filter_map(|(r, set)| {
                let base = *set.first()?;
                let last = *set.last()?;
                let n = ((last - base) / 8 + 1) as usize;
                if n > swarmcast_proto::tracker::MAX_BITMAP {
                    return None;
                }
                let mut bits = vec![0u8; n];
                for s in set {
                    let i = (s - base) as usize;
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                Some(ClientMsg::HaveMap {
                    rendition: *r,
                    base_seq: base,
                    bitmap: hex::encode(bits),
                })
            })
            .collect()
    }
}

async fn run(
    mut cfg: ClientConfig,
    mut rx: mpsc::Receiver<ClientMsg>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut held = Held {
        window: 30,
        ..Held::default()
    };
    let mut backoff = cfg.backoff_min;
    let mut redirects = 0;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connection(&cfg, &mut rx, &events, &mut held, &shutdown) => r,
        };
        match outcome {
            Outcome::Stop => return,
            // The stream is split into cells over tracker nodes: join the
            // one named, at once (a redirect loop is cut after a few).
            Outcome::Redirect(cell) if redirects < MAX_REDIRECTS => {
                debug!(cell, "redirected to a cell");
                cfg.hello.cell = Some(cell);
                redirects += 1;
                continue;
            }
            Outcome::Redirect(cell) => {
                let _ = events
                    .send(Event::Disconnected {
                        reason: format!("redirected again (cell {cell})"),
                        fatal: false,
                    })
                    .await;
            }
            Outcome::Fatal(reason) => {
                let _ = events
                    .send(Event::Disconnected {
                        reason,
                        fatal: true,
                    })
                    .await;
                return;
            }
            Outcome::Retry {
                reason,
                joined,
                home,
            } => {
                if joined {
                    backoff = cfg.backoff_min;
                    redirects = 0;
                }
                if home {
                    // The cell refused or let go of this session: ask the
                    // stream's home again (it names a cell that works).
                    debug!(reason, "leaving the cell for the stream's home");
                    cfg.hello.cell = None;
                }
                let _ = events
                    .send(Event::Disconnected {
                        reason,
                        fatal: false,
                    })
                    .await;
            }
        }
        if rx.is_closed() && rx.is_empty() {
            // Every handle is gone and nothing is left to deliver.
            return;
        }
        // Full jitter: a restarted tracker is not hit by every peer at once.
        let wait = Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
        debug!(wait_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// The cell a session names in its URL: a viewer's or relay's (after a
/// redirect); never a publisher's, whose `cell` says which cell it feeds
/// and which connects to the stream's home.
fn url_cell(hello: &Hello) -> Option<u32> {
    (hello.kind != ClientKind::Publisher)
        .then_some(hello.cell)
        .flatten()
}

/// Redirects followed in a row before the client backs off.
const MAX_REDIRECTS: u32 = 4;

enum Outcome {
    Stop,
    Fatal(String),
    Redirect(u32),
    Retry {
        reason: String,
        joined: bool,
        /// Back to the stream's home (leave the cell).
        home: bool,
    },
}

async fn connection(
    cfg: &ClientConfig,
    rx: &mut mpsc::Receiver<ClientMsg>,
    events: &mpsc::Sender<Event>,
    held: &mut Held,
    shutdown: &CancellationToken,
) -> Outcome {
    let retry = |reason: String, joined: bool| Outcome::Retry {
        reason,
        joined,
        home: false,
    };
    let in_cell = url_cell(&cfg.hello).is_some();
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url_for(
            &cfg.url,
            &cfg.hello.stream,
            url_cell(&cfg.hello),
        )),
    )
    .await;
    let mut ws = match ws {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return retry(e.to_string(), false),
        Err(_) => return retry("connect timed out".into(), false),
    };
    if let Err(e) = ws
        .send(Message::text(ClientMsg::Hello(cfg.hello.clone()).encode()))
        .await
    {
        return retry(e.to_string(), false);
    }
    // Wait for the welcome (answering nothing else until then).
    let welcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Text(t)) => return Some(ServerMsg::decode(t.as_str())),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    })
    .await;
    let config = match welcome {
        Ok(Some(Ok(ServerMsg::Welcome { config, .. }))) => config,
        Ok(Some(Ok(ServerMsg::Error { code, message }))) => {
            use swarmcast_proto::tracker::ErrorCode::*;
            let reason = format!("{code:?}: {message}");
            return match code {
                Unauthorized | TokenExpired | UnsupportedVersion => Outcome::Fatal(reason),
                // A cell that will not take us: back to the home.
                _ if in_cell => Outcome::Retry {
                    reason,
                    joined: false,
                    home: true,
                },
                Forbidden => Outcome::Fatal(reason),
                _ => retry(reason, false),
            };
        }
        Ok(Some(Ok(ServerMsg::Redirect { cell }))) => {
            let _ = ws.close(None).await;
            return Outcome::Redirect(cell);
        }
        Ok(Some(other)) => return retry(format!("expected a welcome, got {other:?}"), false),
        Ok(None) => return retry("closed before the welcome".into(), false),
        Err(_) => return retry("no welcome in time".into(), false),
    };
    held.window = config.window_segments as usize;
    if events.send(Event::Connected(config)).await.is_err() {
        return Outcome::Stop;
    }
    for m in held.maps() {
        if let Err(e) = ws.send(Message::text(m.encode())).await {
            return retry(e.to_string(), true);
        }
    }
    loop {
        tokio::select! {
            // Queued messages go out before a shutdown closes the session
            // (an owner's last stats report).
            biased;
            out = rx.recv() => {
                let Some(msg) = out else {
                    // Every handle is gone and the queue is drained: close
                    // and wait for the tracker's close, which it sends
                    // after reading every message before ours.
                    if ws.close(None).await.is_ok() {
                        let _ = tokio::time::timeout(CLOSE_WAIT, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                    }
                    return Outcome::Stop;
                };
                held.note(&msg);
                if let Err(e) = ws.send(Message::text(msg.encode())).await {
                    return retry(e.to_string(), true);
                }
            }
            _ = shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return Outcome::Stop;
            }
            incoming = ws.next() => match incoming {
                None => return retry("tracker closed the connection".into(), true),
                Some(Err(e)) => return retry(e.to_string(), true),
                Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                    // The cell lost the stream's home and lets us go.
                    Ok(ServerMsg::Error { code: swarmcast_proto::tracker::ErrorCode::Internal, message }) if in_cell => {
                        return Outcome::Retry { reason: message, joined: true, home: true };
                    }
                    Ok(m) => {
                        if events.send(Event::Message(m)).await.is_err() {
                            return Outcome::Stop;
                        }
                    }
                    Err(e) => warn!(error = %e, "undecodable tracker message"),
                },
                Some(Ok(Message::Close(_))) => return retry("tracker closed the connection".into(), true),
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmcast_proto::tracker::SegmentRef;

    #[test]
    fn held_segments_become_have_maps() {
        let r = RenditionId::new("360p").unwrap();
        let mut h = Held {
            window: 4,
            ..Held::default()
        };
        let have = |seqs: &[u64]| ClientMsg::Have {
            segments: seqs
                .iter()
                .map(|&seq| SegmentRef { rendition: r, seq })
                .collect(),
        };
        h.note(&have(&[10, 11, 12, 13, 14]));
        h.note(&ClientMsg::Lost {
            segments: vec![SegmentRef {
                rendition: r,
                seq: 12,
            }],
        });
        let maps = h.maps();
        assert_eq!(maps.len(), 1);
        let ClientMsg::HaveMap {
            base_seq, bitmap, ..
        } = &maps[0]
        else {
            panic!("a have-map")
        };
        // 10 fell out of the window of 4 and 12 was lost: 11, 13, 14 remain.
        assert_eq!(*base_seq, 11);
        assert_eq!(bitmap, "b0");
    }
}
