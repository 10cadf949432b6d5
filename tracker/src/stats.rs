//! The stream statistics served as JSON on `/v1/streams/{stream}/stats`
//! and drawn by the dashboard.

use serde::{Deserialize, Serialize};

/// Sessions by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Native edge peers.
    pub native: u32,
    /// Browsers.
    pub browser: u32,
    /// Relay nodes.
    pub relay: u32,
    /// Publishers (the origin).
    pub publisher: u32,
}

/// One segment of the live window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStats {
    /// `stream/rendition/seq`.
    pub id: String,
    /// Size, once the origin has published it.
    pub size: Option<u64>,
    /// Sessions that announced holding it.
    pub holders: u32,
    /// Viewers expected to want it, counted at publish.
    pub population: u32,
    /// Sessions asked to fetch it first over HTTP.
    pub first_fetchers: u32,
    /// Publish to 50% of the population, ms.
    pub spread_50_ms: Option<u64>,
    /// Publish to 95% of the population, ms.
    pub spread_95_ms: Option<u64>,
    /// Publish to the whole population, ms.
    #[serde(default)]
    pub spread_100_ms: Option<u64>,
}

/// A stream's aggregate picture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// The stream.
    pub stream: String,
    /// The cell this swarm is (0: the stream's home; `k`: cell `k` of a
    /// stream spread over tracker nodes).
    #[serde(default)]
    pub cell: u32,
    /// Viewers (native + browser).
    pub viewers: u32,
    /// Sessions by kind.
    pub peers: KindCounts,
    /// Media bytes viewers fetched over HTTP (origin or CDN egress).
    pub http_bytes: u64,
    /// Media bytes viewers got from peers.
    pub p2p_bytes: u64,
    /// Media bytes viewers sent to peers.
    pub uploaded_bytes: u64,
    /// p2p / (p2p + http).
    pub offload: f64,
    /// Playback stalls.
    pub stalls: u64,
    /// Time stalled, ms.
    pub stall_ms: u64,
    /// Median startup time reported, ms.
    pub startup_ms_p50: Option<u64>,
    /// Median over the window of publish → 50% of viewers, ms.
    pub spread_50_ms_median: Option<u64>,
    /// Median over the window of publish → 95% of viewers, ms.
    pub spread_95_ms_median: Option<u64>,
    /// Segments published.
    pub published: u64,
    /// First-fetch assignments.
    pub first_fetch_assigned: u64,
    /// First fetchers replaced after their deadline.
    pub first_fetch_replaced: u64,
    /// Viewers and relays in each cell (one entry when the stream is not
    /// split; see `--cell-viewers`).
    #[serde(default)]
    pub cells: Vec<u32>,
    /// The live window.
    pub segments: Vec<SegmentStats>,
}

impl StreamStats {
    /// Adds the viewers, relays, bytes and stalls of another swarm of the
    /// same stream (a cell) to these, the offload recomputed.
    pub fn add_audience(&mut self, o: &StreamStats) {
        self.viewers += o.viewers;
        self.peers.native += o.peers.native;
        self.peers.browser += o.peers.browser;
        self.peers.relay += o.peers.relay;
        self.http_bytes += o.http_bytes;
        self.p2p_bytes += o.p2p_bytes;
        self.uploaded_bytes += o.uploaded_bytes;
        self.stalls += o.stalls;
        self.stall_ms += o.stall_ms;
        let media = self.http_bytes + self.p2p_bytes;
        self.offload = if media == 0 {
            0.0
        } else {
            self.p2p_bytes as f64 / media as f64
        };
    }
}
