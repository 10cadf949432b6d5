//! The local HLS endpoint a native player plays: a media playlist of the
//! segments this peer holds (verified against the origin's hash), the
//! segments themselves, `/metrics` and `/healthz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::RwLock;
use swarmcast_proto::{RenditionId, SegmentMeta, Seq};
use tokio::sync::mpsc;

/// A verified segment: its record and bytes.
type Held = (Arc<SegmentMeta>, Bytes);

/// Verified segments, shared by the driver (writer) and the endpoint.
#[derive(Debug, Default)]
pub struct Cache {
    segs: RwLock<BTreeMap<(RenditionId, Seq), Held>>,
}

impl Cache {
    /// Adds a verified segment.
    pub fn insert(&self, meta: Arc<SegmentMeta>, data: Bytes) {
        self.segs
            .write()
            .insert((meta.id.rendition, meta.id.seq), (meta, data));
    }

    /// Removes a segment that left the window.
    pub fn remove(&self, r: RenditionId, seq: Seq) {
        self.segs.write().remove(&(r, seq));
    }

    fn get(&self, r: RenditionId, seq: Seq) -> Option<Held> {
        self.segs.read().get(&(r, seq)).cloned()
    }

    /// The newest contiguous run of held segments of `r`, at most `n`.
    fn playlist_run(&self, r: RenditionId, n: usize) -> Vec<Arc<SegmentMeta>> {
        let segs = self.segs.read();
        let mut run: Vec<Arc<SegmentMeta>> = Vec::new();
        for ((_, seq), (meta, _)) in segs.range((r, 0)..=(r, u64::MAX)).rev() {
            if let Some(last) = run.last() {
                if last.id.seq != seq + 1 {
                    break;
                }
            }
            run.push(meta.clone());
            if run.len() == n {
                break;
            }
        }
        run.reverse();
        run
    }
}

/// What the endpoint tells the driver.
#[derive(Debug)]
pub enum PlayerEvent {
    /// The player asked for a segment: it is needed now.
    Wants(RenditionId, Seq),
}

/// State of the endpoint.
#[derive(Debug)]
pub struct Local {
    /// Verified segments.
    pub cache: Arc<Cache>,
    /// Segments listed per playlist.
    pub playlist_segments: usize,
    /// To the driver.
    pub events: mpsc::Sender<PlayerEvent>,
    /// `/metrics`.
    pub metrics: PrometheusHandle,
}

/// `/live/{stream}/{rendition}/index.m3u8`, `/live/{stream}/{rendition}/{seq}.ts`,
/// `/metrics`, `/healthz`.
pub fn router(local: Arc<Local>) -> Router {
    Router::new()
        .route("/live/{stream}/{rendition}/{file}", get(media))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(l): State<Arc<Local>>| async move { l.metrics.render() }),
        )
        .with_state(local)
}

async fn media(
    State(l): State<Arc<Local>>,
    Path((_stream, rendition, file)): Path<(String, String, String)>,
) -> Response {
    let Ok(r) = RenditionId::new(rendition) else {
        return (StatusCode::BAD_REQUEST, "bad rendition\n").into_response();
    };
    if file == "index.m3u8" {
        let run = l.cache.playlist_run(r, l.playlist_segments);
        let Some(first) = run.first() else {
            return (StatusCode::NOT_FOUND, "nothing held yet\n").into_response();
        };
        let target = run
            .iter()
            .map(|m| m.duration_ms.div_ceil(1000))
            .max()
            .unwrap_or(2)
            .max(1);
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            first.id.seq
        );
        for m in &run {
            let _ = write!(
                text,
                "#EXTINF:{}.{:03},\n{}.ts\n",
                m.duration_ms / 1000,
                m.duration_ms % 1000,
                m.id.seq
            );
        }
        return (
            [
                (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response();
    }
    let Some(seq) = file.strip_suffix(".ts").and_then(|s| s.parse::<Seq>().ok()) else {
        return (StatusCode::BAD_REQUEST, "not a segment name\n").into_response();
    };
    let _ = l.events.try_send(PlayerEvent::Wants(r, seq));
    match l.cache.get(r, seq) {
        Some((_, data)) => {
            metrics::counter!("swarmcast_edge_played_bytes_total").increment(data.len() as u64);
            ([(header::CONTENT_TYPE, "video/mp2t")], data).into_response()
        }
        None => (StatusCode::NOT_FOUND, "segment not held\n").into_response(),
    }
}
