//! The origin's configuration: flags, `SWARMCAST_*` environment variables,
//! or a TOML file (`--config FILE`, keys are the long flag names).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::error::OriginError;

/// `swarmcast-origin`: the live HLS origin. Takes live ingest over HTTP PUT
/// (ffmpeg's HLS muxer), serves playlists, segments and their SHA-256, and
/// publishes each new segment to the tracker.
#[derive(Debug, Clone, Parser)]
#[command(name = "swarmcast-origin", version, args_override_self = true)]
pub struct Config {
    /// TOML file with defaults for any flag below (flags given here win).
    #[arg(long, env = "SWARMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on (port 0 picks one; the bound address is printed
    /// as `listening on http://ADDR`).
    #[arg(long, env = "SWARMCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, env = "SWARMCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWARMCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Secret that signs stream tokens (shared with the tracker). Without it
    /// a random one is made at start, and only the built-in test source can
    /// ingest.
    #[arg(long, env = "SWARMCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Start the built-in live test source (ffmpeg: test pattern, clock,
    /// tone) pushing into this origin.
    #[arg(long, env = "SWARMCAST_TEST_SOURCE")]
    pub test_source: bool,

    /// Stream id of the test source.
    #[arg(long, env = "SWARMCAST_TEST_SOURCE_STREAM", default_value = "test")]
    pub test_source_stream: String,

    /// Renditions of the test source, best first (from 1080p, 720p, 480p,
    /// 360p, 240p, 144p).
    #[arg(
        long,
        env = "SWARMCAST_TEST_SOURCE_RENDITIONS",
        default_value = "360p,240p,144p",
        value_delimiter = ','
    )]
    pub test_source_renditions: Vec<String>,

    /// Segment duration of the test source, seconds.
    #[arg(long, env = "SWARMCAST_SEGMENT_SECONDS", default_value_t = 2)]
    pub segment_seconds: u32,

    /// The ffmpeg program (Debian package `ffmpeg`).
    #[arg(long, env = "SWARMCAST_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,

    /// Segments kept per rendition (the live window peers can fetch).
    #[arg(long, env = "SWARMCAST_WINDOW_SEGMENTS", default_value_t = 30)]
    pub window_segments: usize,

    /// Segments listed in each media playlist.
    #[arg(long, env = "SWARMCAST_PLAYLIST_SEGMENTS", default_value_t = 6)]
    pub playlist_segments: usize,

    /// Largest segment accepted from ingest, bytes.
    #[arg(long, env = "SWARMCAST_MAX_SEGMENT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_segment_bytes: usize,

    /// Most streams held at once.
    #[arg(long, env = "SWARMCAST_MAX_STREAMS", default_value_t = 64)]
    pub max_streams: usize,

    /// Most renditions per stream.
    #[arg(long, env = "SWARMCAST_MAX_RENDITIONS", default_value_t = 8)]
    pub max_renditions: usize,

    /// Directory served under `/player/` (the web player's demo page:
    /// `player-demo/dist/demo` after `npm run build`).
    #[arg(long, env = "SWARMCAST_WEB_ROOT")]
    pub web_root: Option<PathBuf>,

    /// Directory that keeps the live window on disk, so a restarted origin
    /// keeps serving what it had.
    #[arg(long, env = "SWARMCAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Tracker WebSocket URL to publish new segments to
    /// (e.g. ws://127.0.0.1:7000/v1/ws).
    #[arg(long, env = "SWARMCAST_TRACKER")]
    pub tracker: Option<String>,

    /// Seconds open requests get to finish at shutdown.
    #[arg(long, env = "SWARMCAST_GRACE_SECONDS", default_value_t = 5)]
    pub grace_seconds: u64,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a stream token signed with --token-secret, and exit.
    Token {
        /// The stream.
        #[arg(long)]
        stream: String,
        /// viewer, ingest or relay.
        #[arg(long, default_value = "ingest")]
        role: String,
        /// Validity, seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
}

impl Config {
    /// Checks across fields, with a clear message.
    pub fn validate(&self) -> Result<(), OriginError> {
        let err = |m: &str| Err(OriginError::Config(m.into()));
        if self.window_segments < 3 {
            return err("--window-segments must be at least 3");
        }
        if self.playlist_segments == 0 || self.playlist_segments > self.window_segments {
            return err("--playlist-segments must be between 1 and --window-segments");
        }
        if !(1..=10).contains(&self.segment_seconds) {
            return err("--segment-seconds must be between 1 and 10");
        }
        if self.max_segment_bytes < 1024
            || self.max_segment_bytes > swarmcast_proto::wire::MAX_SEGMENT_SIZE as usize
        {
            return err("--max-segment-bytes must be between 1 KiB and 64 MiB (the peer wire cap)");
        }
        if self.test_source {
            swarmcast_proto::StreamId::new(self.test_source_stream.as_str())
                .map_err(|e| OriginError::Config(format!("--test-source-stream: {e}")))?;
            if self.test_source_renditions.is_empty() {
                return err("--test-source-renditions is empty");
            }
            for r in &self.test_source_renditions {
                if crate::testsource::rung(r).is_none() {
                    return Err(OriginError::Config(format!(
                        "--test-source-renditions: unknown rendition {r:?}"
                    )));
                }
            }
        }
        if let Some(t) = &self.tracker {
            if !(t.starts_with("ws://") || t.starts_with("wss://")) {
                return err("--tracker must be a ws:// or wss:// URL");
            }
        }
        Ok(())
    }
}
