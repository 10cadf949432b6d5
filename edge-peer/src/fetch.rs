//! HTTP fallback: GET a segment from the origin (or a cache in front of it)
//! with connection reuse, resuming with `Range` where a transfer stopped,
//! streaming the body to the driver as it arrives.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use swarmcast_proto::SegmentMeta;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a fetch reports.
#[derive(Debug)]
pub enum HttpEvent {
    /// Bytes, in order.
    Data(u64, Bytes),
    /// The body ended.
    Done(u64),
    /// The fetch failed (status, connection, short body).
    Failed(u64, String),
}

/// A pooled HTTP/1.1 client for one origin.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Fetcher {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The URL of a segment (the origin names segments `{seq}.ts`).
    pub fn url(&self, meta: &SegmentMeta) -> String {
        format!(
            "{}/live/{}/{}/{}.ts",
            self.base, meta.id.stream, meta.id.rendition, meta.id.seq
        )
    }

    /// The origin's JSON index of a rendition (hashes from the origin
    /// itself): what keeps playback going while the tracker is away.
    pub async fn index(
        &self,
        stream: &swarmcast_proto::StreamId,
        rendition: &swarmcast_proto::RenditionId,
    ) -> Result<swarmcast_proto::RenditionIndex, String> {
        let url = format!("{}/live/{stream}/{rendition}/index.json", self.base);
        let request = hyper::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let index: swarmcast_proto::RenditionIndex =
            serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if index.stream != *stream || index.rendition != *rendition {
            return Err(format!("{url} describes another rendition"));
        }
        Ok(index)
    }

    /// Fetches bytes `[from, to)` of `meta`, reporting to `events` as
    /// request `req`, until done, failed or `cancel`.
    pub async fn fetch(
        self,
        req: u64,
        meta: std::sync::Arc<SegmentMeta>,
        from: u64,
        to: u64,
        events: mpsc::Sender<HttpEvent>,
        cancel: CancellationToken,
    ) {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = self.run(req, &meta, from, to, &events) => r,
        };
        let ev = match r {
            Ok(()) => HttpEvent::Done(req),
            Err(e) => HttpEvent::Failed(req, e),
        };
        let _ = events.send(ev).await;
    }

    async fn run(
        &self,
        req: u64,
        meta: &SegmentMeta,
        from: u64,
        to: u64,
        events: &mpsc::Sender<HttpEvent>,
    ) -> Result<(), String> {
        let to = to.min(meta.size);
        if from >= to {
            return Err(format!("empty range {from}..{to}"));
        }
        let mut request = hyper::Request::get(self.url(meta));
        let ranged = from > 0 || to < meta.size;
        if ranged {
            request = request.header(hyper::header::RANGE, format!("bytes={from}-{}", to - 1));
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let want = if ranged {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if resp.status() != want {
            return Err(format!("{} answered {}", self.url(meta), resp.status()));
        }
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                metrics::counter!("swarmcast_edge_bytes_total", "source" => "http")
                    .increment(data.len() as u64);
                if events.send(HttpEvent::Data(req, data)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if from + got != to {
            return Err(format!("short body: {} of {} bytes", got, to - from));
        }
        Ok(())
    }
}
