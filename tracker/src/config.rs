//! The tracker's configuration: flags, `SWARMCAST_*` environment variables,
//! or a TOML file (`--config FILE`, keys are the long flag names).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use swarmcast_proto::tracker::IceServer;

use crate::error::TrackerError;
use crate::swarm::SwarmConfig;

/// `swarmcast-tracker`: the brain of a live event. Peers join swarms over a
/// WebSocket (`/v1/ws`); the tracker keeps the segment index, introduces
/// neighbours, relays WebRTC signalling, and plans who fetches each new
/// segment first.
#[derive(Debug, Clone, Parser)]
#[command(name = "swarmcast-tracker", version, args_override_self = true)]
pub struct Config {
    /// TOML file with defaults for any flag below (flags given here win).
    #[arg(long, env = "SWARMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on (port 0 picks one; printed as `listening on ...`).
    #[arg(long, env = "SWARMCAST_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(long, env = "SWARMCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWARMCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Secret that signs stream tokens (shared with the origin).
    #[arg(long, env = "SWARMCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,

    /// Most swarms (streams) at once.
    #[arg(long, env = "SWARMCAST_MAX_SWARMS", default_value_t = 1024)]
    pub max_swarms: usize,

    /// Most sessions in one swarm.
    #[arg(long, env = "SWARMCAST_MAX_PEERS_PER_SWARM", default_value_t = 20_000)]
    pub max_peers_per_swarm: usize,

    /// Neighbours each peer is given (K).
    #[arg(long, env = "SWARMCAST_NEIGHBOURS", default_value_t = 8)]
    pub neighbours: u16,

    /// Segments per rendition kept in the index.
    #[arg(long, env = "SWARMCAST_WINDOW_SEGMENTS", default_value_t = 30)]
    pub window_segments: u32,

    /// Viewers per first fetcher within one mesh (a mesh of N viewers
    /// starts each segment with about N / this many first fetchers; the
    /// coverage feedback then adjusts). Formerly `--cell-size`.
    #[arg(
        long = "viewers-per-fetcher",
        alias = "cell-size",
        env = "SWARMCAST_VIEWERS_PER_FETCHER",
        default_value_t = 300
    )]
    pub cell_size: u32,

    /// Most viewers and relays in one cell of a stream (0: no split). A
    /// stream whose audience passes it is split into cells, each a mesh of
    /// its own with its own first fetchers seeded over HTTP: the origin
    /// then sends about one copy of each segment per cell (or each
    /// stripe's roots per cell), and a publish's planning work is bounded
    /// by the cell's size. Peers meet only peers of their own cell.
    #[arg(long, env = "SWARMCAST_CELL_VIEWERS", default_value_t = 0)]
    pub cell_viewers: usize,

    /// The tracker tier's WebSocket URL (`ws://balancer/v1/ws`), to spread
    /// a stream's cells over tracker nodes: the stream's home keeps its
    /// first cell and redirects later joiners to cell K, which the balancer
    /// routes by `stream` and `cell`; the node that gets cell K's sessions
    /// connects back through this URL to the stream's home for its records.
    /// Without it a stream's cells all live in its home's task.
    #[arg(long, env = "SWARMCAST_TIER_URL")]
    pub tier_url: Option<String>,

    /// Fewest first fetchers per segment (each costs the origin one copy;
    /// one that misses its deadline is replaced, and every viewer falls
    /// back to HTTP before its own playback deadline).
    #[arg(long, env = "SWARMCAST_MIN_FIRST_FETCHERS", default_value_t = 1)]
    pub min_first_fetchers: u32,

    /// Most first fetchers per segment (the coverage feedback finds the
    /// count; the default is the most sessions a swarm takes).
    #[arg(long, env = "SWARMCAST_MAX_FIRST_FETCHERS", default_value_t = 20_000)]
    pub max_first_fetchers: u32,

    /// Publish → the moment most viewers should hold a segment, ms: when
    /// recent segments reached fewer than `--coverage-target` of the
    /// viewers by then, later ones get more first fetchers (viewers fall
    /// back to HTTP shortly after; a player three 2-s segments behind live
    /// needs a segment about 4 s after its publish).
    #[arg(long, env = "SWARMCAST_SPREAD_BUDGET_MS", default_value_t = 3000)]
    pub spread_budget_ms: u64,

    /// Share of viewers (0–1] the plan wants holding each segment within
    /// the spread budget; the others fetch what they lack over HTTP before
    /// their deadline. Higher costs more first fetchers (origin copies).
    #[arg(long, env = "SWARMCAST_COVERAGE_TARGET", default_value_t = 0.8)]
    pub coverage_target: f64,

    /// Stripes per segment in the dissemination plan (0: none; at most
    /// 16). With stripes, native peers and relays get one tree per stripe
    /// over their links and ask their source for each stripe as soon as a
    /// segment is announced; `--min/max-first-fetchers` and the coverage
    /// feedback then count the roots of each stripe (each fetches its
    /// stripe over HTTP). 8 by default: with 16 KiB blocks and uplinks 1.5×
    /// the bitrate the simulator measured 99.1 % offload at 1,000 viewers
    /// against 69.5 % without stripes, and a shaped live event of 12 edge
    /// peers 86.4 % against 78.9 % (docs/benchmarks/simulator.md,
    /// docs/benchmarks/live-event.md).
    #[arg(long, env = "SWARMCAST_STRIPES", default_value_t = 8)]
    pub stripes: u8,

    /// Uplink headroom of the stripe plan: a peer uploading `U` feeds at
    /// most `U / (headroom × bitrate / stripes)` stripe children. 1.5: on
    /// shaped links with most uplinks under the bitrate, 1.25 filled them
    /// and HTTP fallbacks queued behind the uploads (6–8 stalls in 60 s at
    /// 12 viewers; 1–2 with 1.5; docs/benchmarks/live-event.md).
    #[arg(long, env = "SWARMCAST_STRIPE_HEADROOM", default_value_t = 1.5)]
    pub stripe_headroom: f64,

    /// A first fetcher that has not announced `have` within this many ms is
    /// replaced.
    #[arg(
        long,
        env = "SWARMCAST_FIRST_FETCH_DEADLINE_MS",
        default_value_t = 1500
    )]
    pub first_fetch_deadline_ms: u64,

    /// Messages per second a session may send (sustained).
    #[arg(long, env = "SWARMCAST_MSGS_PER_SEC", default_value_t = 100)]
    pub msgs_per_sec: u32,

    /// Messages a session may send in a burst.
    #[arg(long, env = "SWARMCAST_MSG_BURST", default_value_t = 400)]
    pub msg_burst: u32,

    /// Signals per second a peer may relay (sustained).
    #[arg(long, env = "SWARMCAST_SIGNALS_PER_SEC", default_value_t = 50)]
    pub signals_per_sec: u32,

    /// Interval of the tracker's WebSocket pings, ms.
    #[arg(long, env = "SWARMCAST_PING_INTERVAL_MS", default_value_t = 5_000)]
    pub ping_interval_ms: u32,

    /// A session silent this long (ms) is closed and forgotten.
    #[arg(long, env = "SWARMCAST_IDLE_TIMEOUT_MS", default_value_t = 15_000)]
    pub idle_timeout_ms: u32,

    /// STUN/TURN URLs handed to peers (repeat or comma-separate).
    #[arg(long, env = "SWARMCAST_ICE_SERVERS", value_delimiter = ',')]
    pub ice_server: Vec<String>,

    /// Also serve the WebTorrent endpoint alone on this address, on every
    /// path (it is always at `/announce`, and at `/` for WebSocket
    /// upgrades, on `--listen`). Same TLS as `--listen`.
    #[arg(long, env = "SWARMCAST_WT_LISTEN")]
    pub wt_listen: Option<SocketAddr>,

    /// WebTorrent: most offers relayed per announce (browsers send 5–10).
    #[arg(long, env = "SWARMCAST_WT_MAX_OFFERS", default_value_t = 10)]
    pub wt_max_offers: usize,

    /// WebTorrent: how long a relayed offer may be answered, ms.
    #[arg(long, env = "SWARMCAST_WT_OFFER_TTL_MS", default_value_t = 120_000)]
    pub wt_offer_ttl_ms: u64,

    /// WebTorrent: `interval` of announce replies, s.
    #[arg(long, env = "SWARMCAST_WT_INTERVAL_S", default_value_t = 120)]
    pub wt_interval_s: u32,

    /// WebTorrent: largest message, bytes (five offers with 4 KiB SDPs are
    /// about 21 KiB).
    #[arg(long, env = "SWARMCAST_WT_MAX_MESSAGE", default_value_t = 65_536)]
    pub wt_max_message: usize,

    /// WebTorrent: swarms (info hashes) one connection may be in at once.
    #[arg(long, env = "SWARMCAST_WT_MAX_SWARMS_PER_CONN", default_value_t = 32)]
    pub wt_max_swarms_per_conn: usize,

    /// WebTorrent: swarms (info hashes) in all; an announce that would open
    /// one more is refused (an empty swarm is removed at once; one with
    /// peers takes a few hundred bytes).
    #[arg(long, env = "SWARMCAST_WT_MAX_SWARMS", default_value_t = 1_000_000)]
    pub wt_max_swarms: usize,

    /// WebTorrent: info hashes answered per scrape (a scrape without any is
    /// refused).
    #[arg(long, env = "SWARMCAST_WT_MAX_SCRAPE", default_value_t = 64)]
    pub wt_max_scrape: usize,

    /// WebTorrent: connections need `?token=T`, T a viewer token for stream
    /// `webtorrent` signed with --token-secret.
    #[arg(long, env = "SWARMCAST_WT_REQUIRE_TOKEN")]
    pub wt_require_token: bool,

    /// WebTorrent: serve only the info hashes in this file (40 hex digits
    /// per line; `#` starts a comment).
    #[arg(long, env = "SWARMCAST_WT_ALLOW_LIST", value_name = "FILE")]
    pub wt_allow_list: Option<PathBuf>,

    /// Seconds open sessions get to close at shutdown.
    #[arg(long, env = "SWARMCAST_GRACE_SECONDS", default_value_t = 2)]
    pub grace_seconds: u64,
}

impl Config {
    /// Checks across fields, with a clear message.
    pub fn validate(&self) -> Result<(), TrackerError> {
        let err = |m: &str| Err(TrackerError::Config(m.into()));
        if self.token_secret.len() < 16 {
            return err("--token-secret must be at least 16 bytes");
        }
        if self.neighbours == 0 || self.neighbours > 64 {
            return err("--neighbours must be between 1 and 64");
        }
        if self.window_segments < 3 || self.window_segments > 8192 {
            return err("--window-segments must be between 3 and 8192");
        }
        if self.min_first_fetchers == 0 || self.min_first_fetchers > self.max_first_fetchers {
            return err("--min-first-fetchers must be at least 1 and at most --max-first-fetchers");
        }
        if self.cell_size == 0 {
            return err("--viewers-per-fetcher must be at least 1");
        }
        if !(self.coverage_target > 0.0 && self.coverage_target <= 1.0) {
            return err("--coverage-target must be above 0 and at most 1");
        }
        if usize::from(self.stripes) > swarmcast_proto::tracker::MAX_STRIPES
            || !(self.stripe_headroom >= 0.1 && self.stripe_headroom <= 100.0)
        {
            return err("--stripes must be at most 16 and --stripe-headroom within 0.1..=100");
        }
        if self.msgs_per_sec == 0 || self.msg_burst < self.msgs_per_sec {
            return err("--msg-burst must be at least --msgs-per-sec, which must be at least 1");
        }
        if self.wt_max_offers == 0 || self.wt_max_offers > 100 {
            return err("--wt-max-offers must be between 1 and 100");
        }
        if self.wt_max_message < 1024 || self.wt_max_message > 1 << 20 {
            return err("--wt-max-message must be between 1024 and 1048576");
        }
        if self.wt_max_swarms_per_conn == 0 || self.wt_max_scrape == 0 || self.wt_max_swarms == 0 {
            return err(
                "--wt-max-swarms, --wt-max-swarms-per-conn and --wt-max-scrape must be at least 1",
            );
        }
        if let Some(u) = &self.tier_url {
            if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                return err("--tier-url must be a ws:// or wss:// URL");
            }
        }
        if self.idle_timeout_ms <= self.ping_interval_ms {
            return err("--idle-timeout-ms must be longer than --ping-interval-ms");
        }
        for u in &self.ice_server {
            if !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:")) {
                return Err(TrackerError::Config(format!(
                    "--ice-server {u:?} is not a stun:/turn: URL"
                )));
            }
        }
        Ok(())
    }

    /// The WebTorrent swarms' settings.
    pub fn wt_swarm(&self) -> crate::webtorrent::WtConfig {
        crate::webtorrent::WtConfig {
            max_offers: self.wt_max_offers,
            offer_ttl_ms: self.wt_offer_ttl_ms,
            max_pending_offers: 10 * self.wt_max_offers.max(1),
            interval_s: self.wt_interval_s,
            max_peers: self.max_peers_per_swarm,
        }
    }

    /// The WebTorrent endpoint's limits; reads the allow-list file.
    pub fn wt_limits(&self) -> Result<crate::webtorrent_server::WtLimits, TrackerError> {
        let allow = match &self.wt_allow_list {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    TrackerError::Config(format!("--wt-allow-list {}: {e}", path.display()))
                })?;
                let mut set = std::collections::HashSet::new();
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let id = swarmcast_proto::webtorrent::BinId::from_hex(line).map_err(|_| {
                        TrackerError::Config(format!(
                            "--wt-allow-list {} line {}: not 40 hex digits",
                            path.display(),
                            n + 1
                        ))
                    })?;
                    set.insert(id);
                }
                Some(set)
            }
        };
        Ok(crate::webtorrent_server::WtLimits {
            max_message: self.wt_max_message,
            max_swarms_per_conn: self.wt_max_swarms_per_conn,
            max_swarms: self.wt_max_swarms,
            max_scrape: self.wt_max_scrape,
            require_token: self.wt_require_token,
            allow,
        })
    }

    /// The per-swarm settings.
    pub fn swarm(&self) -> SwarmConfig {
        SwarmConfig {
            max_peers: self.max_peers_per_swarm,
            neighbours: self.neighbours,
            window_segments: self.window_segments,
            cell_size: self.cell_size,
            min_first_fetchers: self.min_first_fetchers,
            max_first_fetchers: self.max_first_fetchers,
            first_fetch_deadline_ms: self.first_fetch_deadline_ms,
            spread_budget_ms: self.spread_budget_ms,
            coverage_target: self.coverage_target,
            stripes: self.stripes,
            stripe_headroom: self.stripe_headroom,
            size_scale: 1,
            signals_per_sec: self.signals_per_sec,
            signal_burst: self.signals_per_sec * 4,
            ping_interval_ms: self.ping_interval_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            ice_servers: if self.ice_server.is_empty() {
                Vec::new()
            } else {
                vec![IceServer {
                    urls: self.ice_server.clone(),
                    username: None,
                    credential: None,
                }]
            },
            ..SwarmConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<(), String> {
        let mut args = vec![
            "swarmcast-tracker",
            "--token-secret",
            "0123456789abcdef0123",
        ];
        args.extend_from_slice(extra);
        let c = Config::try_parse_from(args).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn bad_plan_settings_are_refused_with_the_flag_named() {
        assert_eq!(parse(&[]), Ok(()));
        assert_eq!(parse(&["--coverage-target", "0.97"]), Ok(()));
        for (bad, says) in [
            (&["--coverage-target", "0"][..], "--coverage-target"),
            (&["--coverage-target", "1.5"], "--coverage-target"),
            (&["--coverage-target", "NaN"], "--coverage-target"),
            (
                &["--min-first-fetchers", "5", "--max-first-fetchers", "2"],
                "--min-first-fetchers",
            ),
            (&["--cell-size", "0"], "--viewers-per-fetcher"),
            (&["--tier-url", "http://t/v1/ws"], "--tier-url"),
        ] {
            let e = parse(bad).expect_err("refused");
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
