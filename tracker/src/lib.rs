//! # swarmcast-tracker
//!
//! The brain of a live event. Peers join a swarm (one per stream) over a
//! WebSocket speaking [`swarmcast_proto::tracker`]; the tracker keeps the
//! segment index (who holds what of the live window), introduces
//! neighbours, relays WebRTC signalling within a swarm, and for every
//! segment the origin publishes picks the few peers that fetch it over HTTP
//! first while telling everyone else it exists, with the origin's hash.
//!
//! Layout: [`swarm`] is the sans-IO core (no clock, no I/O, seeded
//! randomness: the same code runs in the event simulator); [`cells`] splits
//! a large stream's audience over several such cores; [`server`] is the
//! tokio shell (axum routes, one task per session, one task per swarm);
//! [`client`] is the client library edge peers use; [`stats`] is the JSON
//! served on `/v1/streams/{stream}/stats`.
//!
//! Entry points: [`run`] (what `swarmcast-tracker` calls) and [`start`].
//!
//! **Invariant:** every hash the tracker sends comes from a publisher
//! session (the origin), never from a viewer.

pub mod bitset;
pub mod cells;
pub mod client;
pub mod config;
pub mod error;
pub mod server;
pub mod stats;
pub mod swarm;
pub mod webtorrent;
pub mod webtorrent_server;

use std::net::SocketAddr;
use std::time::Duration;

use swarmcast_proto::TokenKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::Config;
pub use error::TrackerError;

/// A started tracker.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Resolves when the tracker has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Runs the tracker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), TrackerError> {
    let running = start(config, shutdown).await?;
    let _ = running.done.await;
    Ok(())
}

/// Starts the tracker and returns once it listens.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, TrackerError> {
    config.validate()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(swarmcast_svc::load_tls(c, k)?),
        _ => None,
    };
    let tasks = TaskTracker::new();
    let tracker = server::Tracker::new(
        TokenKey::new(config.token_secret.as_bytes()),
        config.swarm(),
        server::SessionLimits {
            msgs_per_sec: config.msgs_per_sec,
            msg_burst: config.msg_burst,
            ping_interval: Duration::from_millis(u64::from(config.ping_interval_ms)),
            idle_timeout: Duration::from_millis(u64::from(config.idle_timeout_ms)),
        },
        server::StreamLimits {
            max_swarms: config.max_swarms,
            cell_viewers: config.cell_viewers,
            tier_url: config.tier_url.clone(),
        },
        shutdown.clone(),
        tasks.clone(),
        webtorrent_server::WtHub::new(config.wt_swarm(), config.wt_limits()?),
    );
    let listener = swarmcast_svc::bind(config.listen, tls.is_some()).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| TrackerError::Config(e.to_string()))?;
    let grace = Duration::from_secs(config.grace_seconds);
    let wt_done = match config.wt_listen {
        Some(a) => {
            let l = swarmcast_svc::bind(a, tls.is_some()).await?;
            let (router, tls, stop) = (
                server::wt_router(tracker.clone()),
                tls.clone(),
                shutdown.clone(),
            );
            Some(tokio::spawn(async move {
                swarmcast_svc::serve(l, tls, router, true, stop, grace).await;
            }))
        }
        None => None,
    };
    let router = server::router(tracker);
    let done = tokio::spawn(async move {
        swarmcast_svc::serve(listener, tls, router, true, shutdown.clone(), grace).await;
        shutdown.cancel();
        if let Some(w) = wt_done {
            let _ = w.await;
        }
        shutdown.cancel();
        tasks.close();
        let _ = tokio::time::timeout(grace, tasks.wait()).await;
        info!("tracker stopped");
    });
    Ok(Running { addr, done })
}
