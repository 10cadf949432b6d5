//! The edge peer's configuration: flags, `SWARMCAST_*` environment
//! variables, or a TOML file (`--config FILE`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::error::EdgeError;

/// `swarmcast-edge`: a viewer whose local HLS endpoint any native player
/// (ffplay, mpv, VLC) plays, fed by the swarm with HTTP as the safety net;
/// or, with `--relay`, a relay node that fetches and serves every rendition.
#[derive(Debug, Clone, Parser)]
#[command(name = "swarmcast-edge", version, args_override_self = true)]
pub struct Config {
    /// TOML file with defaults for any flag below (flags given here win).
    #[arg(long, env = "SWARMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the local HLS endpoint, `/metrics` and `/healthz` (port 0
    /// picks one; printed as `listening on http://ADDR`).
    #[arg(long, env = "SWARMCAST_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Tracker WebSocket URL.
    #[arg(
        long,
        env = "SWARMCAST_TRACKER",
        default_value = "ws://127.0.0.1:7000/v1/ws"
    )]
    pub tracker: String,

    /// Origin (or HTTP cache in front of it) base URL.
    #[arg(
        long,
        env = "SWARMCAST_ORIGIN",
        default_value = "http://127.0.0.1:8080"
    )]
    pub origin: String,

    /// The stream to watch or relay.
    #[arg(long, env = "SWARMCAST_STREAM", default_value = "test")]
    pub stream: String,

    /// The rendition to watch (viewer mode).
    #[arg(long, env = "SWARMCAST_RENDITION", default_value = "360p")]
    pub rendition: String,

    /// Run as a relay: no playback, every rendition, a larger upload budget.
    #[arg(long, env = "SWARMCAST_RELAY")]
    pub relay: bool,

    /// A stream token (role viewer, or relay with --relay).
    #[arg(long, env = "SWARMCAST_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Region label told to the tracker (an ASN, a site name...).
    #[arg(long, env = "SWARMCAST_REGION")]
    pub region: Option<String>,

    /// Upload capacity offered to the swarm, kbit/s.
    #[arg(long, env = "SWARMCAST_UPLOAD_KBPS", default_value_t = 10_000)]
    pub upload_kbps: u32,

    /// Address the WebRTC UDP sockets bind; its IP is the host candidate
    /// (127.0.0.1 keeps the swarm on this machine; use the host's address
    /// or 0.0.0.0 in a real network).
    #[arg(long, env = "SWARMCAST_UDP_BIND", default_value = "127.0.0.1:0")]
    pub udp_bind: SocketAddr,

    /// SO_RCVBUF/SO_SNDBUF of the WebRTC UDP sockets, bytes.
    #[arg(long, env = "SWARMCAST_UDP_BUFFER", default_value_t = 4 * 1024 * 1024)]
    pub udp_buffer: usize,

    /// ICE connectivity-check interval, ms.
    #[arg(long, env = "SWARMCAST_ICE_INTERVAL_MS", default_value_t = 20)]
    pub ice_interval_ms: u64,

    /// Most neighbours (data channels) at once; without it, as many as the
    /// tracker's welcome says (8 by default; more for an uplink above the
    /// swarm's mean, which can feed more stripe children).
    #[arg(long, env = "SWARMCAST_MAX_PEERS")]
    pub max_peers: Option<usize>,

    /// The swarm switched off: every segment over HTTP as soon as it is
    /// published, no neighbours (the reference a benchmark compares with).
    #[arg(long, env = "SWARMCAST_NO_SWARM")]
    pub no_swarm: bool,

    /// Test aid, never for production: corrupt every chunk this peer uploads
    /// (its neighbours must detect it by hash, drop it and report it).
    #[arg(long, env = "SWARMCAST_CORRUPT_UPLOADS")]
    pub corrupt_uploads: bool,

    /// Segments the local playlist lists.
    #[arg(long, env = "SWARMCAST_PLAYLIST_SEGMENTS", default_value_t = 6)]
    pub playlist_segments: usize,

    /// Time from a segment's publication to when the local player needs it,
    /// ms (a player three target durations behind live: about two segment
    /// durations).
    #[arg(long, env = "SWARMCAST_PLAYBACK_DELAY_MS", default_value_t = 4000)]
    pub playback_delay_ms: u64,

    /// Relay a segment only once all of it is in and its whole hash
    /// matched (store-and-forward), not block by block as its blocks
    /// arrive and match the origin's block hashes (cut-through, the
    /// default).
    #[arg(long, env = "SWARMCAST_NO_CUT_THROUGH")]
    pub no_cut_through: bool,

    /// On exit, after the last report to the tracker, write this process's
    /// Prometheus metrics here (what a load test reads once the peer is
    /// gone).
    #[arg(long, env = "SWARMCAST_FINAL_METRICS", value_name = "FILE")]
    pub final_metrics: Option<PathBuf>,
}

impl Config {
    /// Checks across fields.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let err = |m: String| Err(EdgeError::Config(m));
        if !(self.tracker.starts_with("ws://") || self.tracker.starts_with("wss://")) {
            return err("--tracker must be a ws:// or wss:// URL".into());
        }
        if !self.origin.starts_with("http://") {
            return err("--origin must be an http:// URL".into());
        }
        swarmcast_proto::StreamId::new(self.stream.as_str())
            .map_err(|e| EdgeError::Config(format!("--stream: {e}")))?;
        swarmcast_proto::RenditionId::new(self.rendition.as_str())
            .map_err(|e| EdgeError::Config(format!("--rendition: {e}")))?;
        if self.playlist_segments < 3 {
            return err("--playlist-segments must be at least 3".into());
        }
        Ok(())
    }
}
