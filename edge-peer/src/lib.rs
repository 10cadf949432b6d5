//! # swarmcast-edge
//!
//! The native edge peer: a viewer with a local HLS endpoint that any native
//! player plays, or (`--relay`) a relay node. A tokio [`driver`] runs the
//! sans-IO swarm core (`swarmcast-swarm-core`), talks to the tracker
//! (`swarmcast_tracker::client`), fetches over HTTP as the safety net
//! ([`fetch`]) and serves verified segments locally ([`local`]).
//!
//! **Invariant:** the local endpoint serves only segments whose SHA-256
//! matched the origin's record.

pub mod config;
pub mod driver;
pub mod error;
pub mod fetch;
pub mod link;
pub mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarmcast_proto::tracker::{ClientKind, Hello};

/// Links before the tracker's welcome says how many (and with `--no-swarm`
/// unset and no `--max-peers`).
const DEFAULT_MAX_LINKS: usize = 8;
use swarmcast_proto::{PeerId, RenditionId, StreamId};
use swarmcast_swarm_core::{Core, CoreConfig};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::EdgeError;

/// A started edge peer.
#[derive(Debug)]
pub struct Running {
    /// The local endpoint's address.
    pub addr: SocketAddr,
    /// Resolves when the peer has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Runs the edge peer until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), EdgeError> {
    let running = start(config, shutdown).await?;
    let _ = running.done.await;
    Ok(())
}

/// Starts the edge peer and returns once its local endpoint listens.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, EdgeError> {
    config.validate()?;
    let stream =
        StreamId::new(config.stream.as_str()).map_err(|e| EdgeError::Config(e.to_string()))?;
    let rendition = RenditionId::new(config.rendition.as_str())
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let peer_id = PeerId::new(format!("edge-{:016x}", rand::random::<u64>()))
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let mut core_cfg = if config.relay {
        CoreConfig::relay()
    } else {
        CoreConfig::viewer(rendition)
    };
    core_cfg.playback_delay_ms = config.playback_delay_ms;
    core_cfg.cut_through = !config.no_cut_through;
    // kbit/s → bytes per ms.
    core_cfg.upload_rate = f64::from(config.upload_kbps) / 8.0;
    let core = Core::new(core_cfg, rand::random());
    let hello_stream = stream.clone();
    let own_id = peer_id.clone();
    let hello = Hello {
        token: config.token.clone(),
        stream,
        peer_id,
        kind: if config.relay {
            ClientKind::Relay
        } else {
            ClientKind::Native
        },
        upload_kbps: if config.no_swarm {
            0
        } else {
            config.upload_kbps
        },
        region: config.region.clone(),
        cell: None,
    };
    // The tracker client stops after the driver (its last stats report
    // reaches the tracker before the session closes).
    let client_stop = CancellationToken::new();
    let (tracker, tracker_events) = swarmcast_tracker::client::start(
        swarmcast_tracker::client::ClientConfig::new(config.tracker.clone(), hello),
        client_stop.clone(),
    );
    let cache = Arc::new(local::Cache::default());
    let (player_tx, player_rx) = tokio::sync::mpsc::channel(64);
    let local = Arc::new(local::Local {
        cache: cache.clone(),
        playlist_segments: config.playlist_segments,
        events: player_tx,
        metrics: swarmcast_svc::metrics_handle(),
    });
    let listener = swarmcast_svc::bind(config.listen, false).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    if !config.relay {
        println!(
            "play: http://{addr}/live/{}/{}/index.m3u8",
            config.stream, config.rendition
        );
    }
    let driver = driver::Driver {
        core,
        fetcher: fetch::Fetcher::new(&config.origin),
        cache,
        tracker,
        link_cfg: link::LinkConfig {
            udp_bind: config.udp_bind,
            udp_buffer: config.udp_buffer,
            ice_interval: Duration::from_millis(config.ice_interval_ms),
            ice_servers: Vec::new(),
            corrupt_uploads: config.corrupt_uploads,
            high_water: link::high_water_for(config.upload_kbps),
            uploading: Arc::default(),
        },
        runtime: Arc::new(link::BigBufRuntime::new(config.udp_buffer)),
        max_links: if config.no_swarm {
            0
        } else {
            config.max_peers.unwrap_or(DEFAULT_MAX_LINKS)
        },
        links_from_tracker: !config.no_swarm && config.max_peers.is_none(),
        http_only: config.no_swarm,
        stream: hello_stream,
        renditions: if config.relay {
            Default::default()
        } else {
            [rendition].into_iter().collect()
        },
    };
    let span = tracing::info_span!("edge", id = %own_id);
    let drive = tokio::spawn(tracing::Instrument::instrument(
        driver.run(tracker_events, player_rx, shutdown.clone()),
        span,
    ));
    let router = local::router(local);
    let final_metrics = config.final_metrics.clone();
    let metrics = swarmcast_svc::metrics_handle();
    let done = tokio::spawn(async move {
        swarmcast_svc::serve(
            listener,
            None,
            router,
            false,
            shutdown.clone(),
            Duration::from_secs(2),
        )
        .await;
        shutdown.cancel();
        let _ = drive.await;
        client_stop.cancel();
        if let Some(path) = final_metrics {
            if let Err(e) = std::fs::write(&path, metrics.render()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the final metrics");
            }
        }
    });
    Ok(Running { addr, done })
}
