//! # swarmcast-origin
//!
//! The live HLS origin. It takes live ingest over HTTP PUT/POST the way
//! ffmpeg's HLS muxer pushes it (guarded by an ingest token), keeps the live
//! window of every rendition in memory as `Bytes` (and optionally on disk),
//! computes each segment's SHA-256 once, and serves master and media
//! playlists, segments (with `Repr-Digest`, `ETag`, `Range`, CORS) and a JSON
//! index per rendition. Each new segment's [`swarmcast_proto::SegmentMeta`]
//! is published to the tracker.
//!
//! Entry point: [`run`] (what `swarmcast-origin` calls) or [`start`] (returns
//! the bound address, for embedding).
//!
//! Modules: [`config`] (flags), [`hls`] (playlist parsing and rendering),
//! [`store`] (the live windows), [`disk`] (the optional data directory),
//! [`http`] (routes), [`publish`] (tracker client), [`testsource`]
//! (ffmpeg).
//!
//! **Invariant:** the origin never learns a hash from anyone but itself, and
//! nothing a client sends can alter a segment already published.

pub mod config;
pub mod disk;
pub mod error;
pub mod hls;
pub mod http;
pub mod publish;
pub mod store;
pub mod testsource;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarmcast_proto::{Claims, Role, StreamId, TokenKey};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
pub use error::OriginError;

/// A started origin.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Resolves when the origin has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Runs the origin until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), OriginError> {
    let running = start(config, shutdown).await?;
    let _ = running.done.await;
    Ok(())
}

/// Starts the origin and returns once it listens.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, OriginError> {
    config.validate()?;
    let secret = match &config.token_secret {
        Some(s) if s.len() >= 16 => s.clone().into_bytes(),
        Some(_) => {
            return Err(OriginError::Config(
                "--token-secret must be at least 16 bytes".into(),
            ));
        }
        None => {
            if !config.test_source {
                warn!(
                    "no --token-secret: a random one was made, so only the built-in test source can ingest"
                );
            }
            (0..4)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect::<String>()
                .into_bytes()
        }
    };
    let key = TokenKey::new(&secret);
    if config.test_source {
        testsource::check_ffmpeg(&config.ffmpeg).await?;
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(swarmcast_svc::load_tls(c, k)?),
        _ => None,
    };
    let store = store::Store::new(store::StoreConfig {
        window_segments: config.window_segments,
        playlist_segments: config.playlist_segments,
        max_streams: config.max_streams,
        max_renditions: config.max_renditions,
    });
    let disk = match &config.data_dir {
        Some(dir) => {
            let d = disk::Disk::open(dir)?;
            let n = d.load(&store)?;
            info!(segments = n, dir = %dir.display(), "restored the live window from disk");
            Some(d)
        }
        None => None,
    };
    let tasks = TaskTracker::new();
    let publisher = config
        .tracker
        .clone()
        .map(|url| publish::Publisher::new(url, key.clone(), shutdown.clone(), tasks.clone()));
    let app = Arc::new(http::App {
        store,
        key: key.clone(),
        max_segment_bytes: config.max_segment_bytes,
        disk,
        publisher,
        metrics: swarmcast_svc::metrics_handle(),
        web_root: config.web_root.clone(),
    });
    let listener = swarmcast_svc::bind(config.listen, tls.is_some()).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| OriginError::Io(e.to_string()))?;
    if config.test_source {
        let mut push_to = addr;
        if push_to.ip().is_unspecified() {
            push_to.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let stream = StreamId::new(config.test_source_stream.as_str())
            .map_err(|e| OriginError::Config(e.to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = key.sign(&Claims {
            stream: stream.clone(),
            role: Role::Ingest,
            expires_at: now + 10 * 365 * 86_400,
        });
        if tls.is_some() {
            warn!(
                "the test source pushes over plain HTTP; with TLS on, run an external encoder instead"
            );
        } else {
            let src = testsource::TestSource {
                ffmpeg: config.ffmpeg.clone(),
                origin: push_to,
                stream: stream.to_string(),
                renditions: config.test_source_renditions.clone(),
                segment_seconds: config.segment_seconds,
                token,
            };
            tasks.spawn(src.run(shutdown.clone()));
            println!(
                "test source: http://{push_to}/live/{stream}/master.m3u8 (live in a few seconds; try: ffplay http://{push_to}/live/{stream}/master.m3u8)"
            );
        }
    }
    let service = http::OriginService::new(app);
    let grace = Duration::from_secs(config.grace_seconds);
    let done = tokio::spawn(async move {
        swarmcast_svc::serve(listener, tls, service, false, shutdown.clone(), grace).await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        info!("origin stopped");
    });
    Ok(Running { addr, done })
}
