//! The HTTP surface: live ingest under `/ingest/...`, playlists, segments and
//! indexes under `/live/...`, `/healthz`, `/metrics`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use swarmcast_proto::{RenditionId, Role, StreamId, TokenKey};
use tracing::{Instrument as _, debug_span, field, info};

use crate::disk::Disk;
use crate::error::OriginError;
use crate::hls;
use crate::publish::Publisher;
use crate::store::{Rendered, Segment, SegmentKind, Store};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    /// The live windows.
    pub store: Store,
    /// Checks ingest tokens.
    pub key: TokenKey,
    /// Largest segment accepted.
    pub max_segment_bytes: usize,
    /// The disk directory, if any.
    pub disk: Option<Disk>,
    /// The tracker publisher, if any.
    pub publisher: Option<Publisher>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Static files served under `/player/` (the web player's demo page).
    pub web_root: Option<std::path::PathBuf>,
}

const CACHE_PLAYLIST: HeaderValue = HeaderValue::from_static("public, max-age=1");
const CACHE_SEGMENT: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const CT_M3U8: HeaderValue = HeaderValue::from_static("application/vnd.apple.mpegurl");
const CT_JSON: HeaderValue = HeaderValue::from_static("application/json");
const ACCEPT_RANGES: HeaderValue = HeaderValue::from_static("bytes");
const ANY: HeaderValue = HeaderValue::from_static("*");
const EXPOSE: HeaderValue =
    HeaderValue::from_static("Repr-Digest, ETag, Content-Length, Content-Range, Accept-Ranges");
const REPR_DIGEST: header::HeaderName = header::HeaderName::from_static("repr-digest");

/// The router, with tracing, metrics and CORS on every route.
pub fn router(app: Arc<App>) -> Router {
    let r = Router::new()
        .route("/live/{stream}/master.m3u8", get(master))
        .route("/live/{stream}/{rendition}/{file}", get(media))
        .route(
            "/ingest/{stream}/{file}",
            axum::routing::put(ingest_master)
                .post(ingest_master)
                .delete(ingest_delete_master),
        )
        .route(
            "/ingest/{stream}/{rendition}/{file}",
            axum::routing::put(ingest)
                .post(ingest)
                .delete(ingest_delete),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_page));
    // The web player: static files (no directory listing, no paths outside
    // the directory: tower-http's ServeDir refuses `..`).
    let r = match &app.web_root {
        Some(dir) => r.nest_service("/player", tower_http::services::ServeDir::new(dir)),
        None => r,
    };
    r.route_layer(middleware::from_fn(observe))
        .fallback(not_found)
        .with_state(app)
}

fn route_label(p: Option<&MatchedPath>) -> &'static str {
    match p.map(MatchedPath::as_str) {
        Some("/live/{stream}/master.m3u8") => "master",
        Some("/live/{stream}/{rendition}/{file}") => "media",
        Some("/ingest/{stream}/{file}") => "ingest_master",
        Some("/ingest/{stream}/{rendition}/{file}") => "ingest",
        Some("/healthz") => "healthz",
        Some("/metrics") => "metrics",
        _ => "other",
    }
}

fn status_label(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        416 => "416",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Span, request counter and CORS headers for every routed request.
async fn observe(req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = req.method().clone();
    let mut resp = if method == Method::OPTIONS {
        preflight()
    } else {
        let span = debug_span!("http", %method, route, status = field::Empty);
        let resp = next.run(req).instrument(span.clone()).await;
        span.record("status", resp.status().as_u16());
        resp
    };
    metrics::counter!("swarmcast_origin_requests_total", "route" => route, "status" => status_label(resp.status()))
        .increment(1);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE);
    resp
}

fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range, If-None-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

async fn not_found() -> Response {
    metrics::counter!("swarmcast_origin_requests_total", "route" => "unknown", "status" => "404")
        .increment(1);
    metrics::counter!("swarmcast_origin_rejected_total", "reason" => "unknown_path").increment(1);
    (StatusCode::NOT_FOUND, "no such path\n").into_response()
}

async fn metrics_page(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

fn stream_id(s: &str) -> Result<StreamId, OriginError> {
    StreamId::new(s).map_err(|e| OriginError::BadPath(e.to_string()))
}

fn rendition_id(s: &str) -> Result<RenditionId, OriginError> {
    RenditionId::new(s).map_err(|e| OriginError::BadPath(e.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn egress(kind: &'static str, bytes: usize) {
    const KINDS: [&str; 4] = ["segment", "playlist", "index", "master"];
    static COUNTERS: [std::sync::OnceLock<metrics::Counter>; 4] =
        [const { std::sync::OnceLock::new() }; 4];
    match KINDS.iter().position(|k| *k == kind) {
        Some(i) => COUNTERS[i]
            .get_or_init(
                || metrics::counter!("swarmcast_origin_egress_bytes_total", "kind" => KINDS[i]),
            )
            .increment(bytes as u64),
        None => metrics::counter!("swarmcast_origin_egress_bytes_total", "kind" => kind)
            .increment(bytes as u64),
    }
}

fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim() == "*"
                || v.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == etag)
        })
}

fn document(
    kind: &'static str,
    doc: &Rendered,
    ct: HeaderValue,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    if not_modified(headers, &doc.etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, doc.etag.clone());
        r.headers_mut()
            .insert(header::CACHE_CONTROL, CACHE_PLAYLIST);
        return r;
    }
    if !head {
        egress(kind, doc.body.len());
    }
    let mut r = Response::new(Body::from(doc.body.clone()));
    // Room for every header this response and the CORS layer add.
    *r.headers_mut() = HeaderMap::with_capacity(8);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CACHE_CONTROL, CACHE_PLAYLIST);
    h.insert(header::ETAG, doc.etag.clone());
    r
}

async fn master(
    State(app): State<Arc<App>>,
    Path(stream): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    let s = app
        .store
        .stream(&stream_id(&stream)?)
        .ok_or(OriginError::UnknownStream)?;
    let text = s.master_playlist().ok_or(OriginError::UnknownStream)?;
    let doc = Rendered::from_text(text);
    Ok(document(
        "master",
        &doc,
        CT_M3U8,
        &headers,
        method == Method::HEAD,
    ))
}

async fn media(
    State(app): State<Arc<App>>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, OriginError> {
    media_inner(
        &app,
        &stream,
        &rendition,
        &file,
        &headers,
        method == Method::HEAD,
    )
}

/// `/live/{stream}/{rendition}/{file}`: the media playlist, the JSON index
/// or a segment.
fn media_inner(
    app: &App,
    stream: &str,
    rendition: &str,
    file: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, OriginError> {
    let s = app
        .store
        .stream_by_str(stream)
        .map_err(|e| OriginError::BadPath(e.to_string()))?
        .ok_or(OriginError::UnknownStream)?;
    let r = s
        .rendition(&rendition_id(rendition)?)
        .ok_or(OriginError::UnknownRendition)?;
    match file {
        "index.m3u8" => {
            let doc = r.playlist().ok_or(OriginError::UnknownRendition)?;
            Ok(document("playlist", &doc, CT_M3U8, headers, head))
        }
        "index.json" => {
            let doc = r.index().ok_or(OriginError::UnknownRendition)?;
            Ok(document("index", &doc, CT_JSON, headers, head))
        }
        _ => {
            let (seq, ext) = file
                .split_once('.')
                .ok_or_else(|| OriginError::BadPath("not a segment name".into()))?;
            if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(OriginError::BadPath(
                    "segment name is not <seq>.<ext>".into(),
                ));
            }
            let seq: u64 = seq
                .parse()
                .map_err(|_| OriginError::BadPath("sequence number out of range".into()))?;
            let seg = r.segment(seq).ok_or(OriginError::SegmentNotFound)?;
            if seg.kind.ext() != ext {
                return Err(OriginError::SegmentNotFound);
            }
            segment_response(&seg, headers, head)
        }
    }
}

/// The origin's service: the hot route (`GET`/`HEAD
/// /live/{stream}/{rendition}/{file}` with a plain path) is answered
/// directly, without the router's boxing, path-parameter decoding and
/// middleware (`docs/benchmarks/origin.md` measured them at most of the
/// per-request cost); everything else goes through the [`router`].
#[derive(Clone, Debug)]
pub struct OriginService {
    app: Arc<App>,
    router: Router,
}

impl OriginService {
    /// The service for `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self {
            router: router(app.clone()),
            app,
        }
    }
}

impl tower::Service<Request> for OriginService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        tower::util::Oneshot<Router, Request>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use tower::ServiceExt as _;
        match fast_path(&self.app, &req) {
            Some(resp) => futures_util::future::Either::Left(std::future::ready(Ok(resp))),
            None => futures_util::future::Either::Right(self.router.clone().oneshot(req)),
        }
    }
}

/// Answers a plain media GET/HEAD, or returns `None` for the router
/// (percent-encoded paths included: the router decodes them).
fn fast_path(app: &App, req: &Request) -> Option<Response> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return None,
    };
    let rest = req.uri().path().strip_prefix("/live/")?;
    if rest.contains('%') {
        return None;
    }
    let mut parts = rest.split('/');
    let (Some(stream), Some(rendition), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let span = tracing::debug_span!("http", method = %req.method(), route = "media", status = field::Empty);
    let _guard = span.enter();
    let mut resp = match media_inner(app, stream, rendition, file, req.headers(), head) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    span.record("status", resp.status().as_u16());
    media_counter(resp.status()).increment(1);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE);
    Some(resp)
}

/// The request counter of the media route for `status`, registered on
/// first use (so `/metrics` lists only statuses that happened).
fn media_counter(status: StatusCode) -> &'static metrics::Counter {
    const STATUSES: [&str; 15] = [
        "200", "201", "204", "206", "304", "400", "401", "403", "404", "405", "413", "416", "500",
        "503", "other",
    ];
    static COUNTERS: [std::sync::OnceLock<metrics::Counter>; 15] =
        [const { std::sync::OnceLock::new() }; 15];
    let label = status_label(status);
    let i = STATUSES
        .iter()
        .position(|s| *s == label)
        .unwrap_or(STATUSES.len() - 1);
    COUNTERS[i].get_or_init(|| {
        metrics::counter!("swarmcast_origin_requests_total", "route" => "media", "status" => STATUSES[i])
    })
}

/// What a `Range` header asks of a resource of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole resource.
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A range that lies outside the resource.
    Unsatisfiable,
}

/// Parses a single-range `Range` header (RFC 9110 §14.2). Anything that is
/// not one well-formed byte range (several ranges, other units, garbage) is
/// ignored, as the RFC allows, and the whole resource is served.
pub fn parse_range(value: Option<&HeaderValue>, len: u64) -> RangeAsk {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())?
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(n) if len > 0 => RangeAsk::Part(len.saturating_sub(n), len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Full,
        },
        (start, end) => {
            let Some(start) = num(start) else {
                return RangeAsk::Full;
            };
            let end = if end.is_empty() {
                len.saturating_sub(1)
            } else {
                match num(end) {
                    Some(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeAsk::Full,
                }
            };
            if start >= len {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(start, end)
            }
        }
    }
}

fn segment_response(
    seg: &Segment,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, OriginError> {
    let len = seg.data.len() as u64;
    if not_modified(headers, &seg.etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, seg.etag.clone());
        r.headers_mut().insert(header::CACHE_CONTROL, CACHE_SEGMENT);
        return Ok(r);
    }
    // If-Range with another validator: serve the whole segment.
    let range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v == seg.etag);
    let ask = if range_ok {
        parse_range(headers.get(header::RANGE), len)
    } else {
        RangeAsk::Full
    };
    let (status, body) = match ask {
        RangeAsk::Full => (StatusCode::OK, seg.data.clone()),
        RangeAsk::Part(a, b) => (
            StatusCode::PARTIAL_CONTENT,
            seg.data.slice(a as usize..=b as usize),
        ),
        RangeAsk::Unsatisfiable => return Err(OriginError::RangeNotSatisfiable { size: len }),
    };
    if !head {
        egress("segment", body.len());
    }
    let mut r = Response::new(Body::from(body));
    *r.headers_mut() = HeaderMap::with_capacity(12);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(seg.kind.content_type()),
    );
    h.insert(header::CACHE_CONTROL, CACHE_SEGMENT);
    h.insert(header::ETAG, seg.etag.clone());
    h.insert(REPR_DIGEST, seg.repr_digest.clone());
    h.insert(header::ACCEPT_RANGES, ACCEPT_RANGES);
    if let RangeAsk::Part(a, b) = ask {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn authorize(
    app: &App,
    stream: &StreamId,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<(), OriginError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim);
    let token = bearer
        .or(query.token.as_deref())
        .ok_or(OriginError::MissingToken)?;
    let now = now_ms() / 1000;
    app.key.verify(token, stream, Role::Ingest, now)?;
    Ok(())
}

/// Reads a request body of at most `limit` bytes. A larger one is refused,
/// but read on (and dropped) up to [`DRAIN_MAX`] more bytes first: a server
/// that answers while the client is still sending, then closes, resets the
/// connection, and the client sees the reset instead of the 413.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, OriginError> {
    let mut buf = bytes::BytesMut::new();
    let mut over = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OriginError::Body(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if over == 0 && buf.len() + data.len() <= limit {
            buf.extend_from_slice(&data);
            continue;
        }
        over += data.len();
        if over > DRAIN_MAX {
            break;
        }
    }
    if over > 0 {
        return Err(OriginError::TooLarge { limit });
    }
    Ok(buf.freeze())
}

/// Bytes of a refused body read and dropped before the answer.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

/// `name.ext` with a plain name; returns the extension.
fn file_ext(file: &str) -> Result<&str, OriginError> {
    let (name, ext) = file
        .rsplit_once('.')
        .ok_or_else(|| OriginError::BadPath("file name without extension".into()))?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if file.len() > 128 || !plain(name) || !plain(ext) {
        return Err(OriginError::BadPath(
            "file name must be [A-Za-z0-9_-]+.ext".into(),
        ));
    }
    Ok(ext)
}

async fn ingest(
    State(app): State<Arc<App>>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, OriginError> {
    let sid = stream_id(&stream)?;
    authorize(&app, &sid, &headers, &query)?;
    let rid = rendition_id(&rendition)?;
    let ext = file_ext(&file)?;
    if ext == "m3u8" {
        let body = read_body(body, hls::MAX_PLAYLIST).await?;
        let text =
            std::str::from_utf8(&body).map_err(|_| OriginError::BadPlaylist("not UTF-8".into()))?;
        let pushed = hls::parse_media(text)?;
        let s = app.store.stream_or_create(&sid)?;
        let r = s.rendition_or_create(&rid, app.store.config().max_renditions)?;
        let published = r.apply_playlist(&sid, &pushed, app.store.config(), now_ms());
        for seg in &published.added {
            info!(segment = %seg.meta.id, size = seg.meta.size, duration_ms = seg.meta.duration_ms, "published");
            metrics::counter!("swarmcast_origin_segments_published_total").increment(1);
            if let Some(disk) = &app.disk {
                if let Err(e) = disk.save(seg.clone()).await {
                    tracing::error!(error = %e, "cannot write a segment to the data directory");
                    metrics::counter!("swarmcast_origin_disk_errors_total").increment(1);
                }
            }
            if let Some(p) = &app.publisher {
                p.publish(seg.meta.clone());
            }
        }
        if let Some(disk) = &app.disk {
            for seg in published.evicted {
                disk.remove(seg).await;
            }
        }
        return Ok(StatusCode::CREATED);
    }
    let kind = SegmentKind::from_ext(ext)
        .ok_or_else(|| OriginError::BadPath(format!("unsupported segment type .{ext}")))?;
    let body = read_body(body, app.max_segment_bytes).await?;
    metrics::counter!("swarmcast_origin_ingest_bytes_total").increment(body.len() as u64);
    let s = app.store.stream_or_create(&sid)?;
    let r = s.rendition_or_create(&rid, app.store.config().max_renditions)?;
    r.put_pending(file, body, kind);
    Ok(StatusCode::CREATED)
}

async fn ingest_master(
    State(app): State<Arc<App>>,
    Path((stream, file)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, OriginError> {
    let sid = stream_id(&stream)?;
    authorize(&app, &sid, &headers, &query)?;
    if file_ext(&file)? != "m3u8" {
        return Err(OriginError::BadPath(
            "only a master playlist (.m3u8) goes at the stream level".into(),
        ));
    }
    let body = read_body(body, hls::MAX_PLAYLIST).await?;
    let text =
        std::str::from_utf8(&body).map_err(|_| OriginError::BadPlaylist("not UTF-8".into()))?;
    let variants = hls::parse_master(text)?;
    for v in &variants {
        rendition_id(&v.rendition).map_err(|_| {
            OriginError::BadPlaylist(format!("variant {:?} is not a rendition id", v.rendition))
        })?;
    }
    let s = app.store.stream_or_create(&sid)?;
    if let Some(disk) = &app.disk {
        disk.save_master(&sid, &variants).await?;
    }
    s.set_master(variants);
    Ok(StatusCode::CREATED)
}

/// ffmpeg deletes segments that left its own list; the origin keeps its own
/// window, so a delete is accepted (after the same checks) and changes nothing.
async fn ingest_delete(
    State(app): State<Arc<App>>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, OriginError> {
    let sid = stream_id(&stream)?;
    authorize(&app, &sid, &headers, &query)?;
    rendition_id(&rendition)?;
    file_ext(&file)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ingest_delete_master(
    State(app): State<Arc<App>>,
    Path((stream, file)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, OriginError> {
    let sid = stream_id(&stream)?;
    authorize(&app, &sid, &headers, &query)?;
    file_ext(&file)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        let check = |v: Option<&str>, len, want: RangeAsk| {
            assert_eq!(parse_range(v.map(h).as_ref(), len), want, "{v:?} of {len}");
        };
        check(None, 10, RangeAsk::Full);
        check(Some("bytes=0-3"), 10, RangeAsk::Part(0, 3));
        check(Some("bytes=5-"), 10, RangeAsk::Part(5, 9));
        check(Some("bytes=5-100"), 10, RangeAsk::Part(5, 9));
        check(Some("bytes=-4"), 10, RangeAsk::Part(6, 9));
        check(Some("bytes=-40"), 10, RangeAsk::Part(0, 9));
        check(Some("bytes=10-"), 10, RangeAsk::Unsatisfiable);
        check(Some("bytes=-0"), 10, RangeAsk::Unsatisfiable);
        check(Some("bytes=0-"), 0, RangeAsk::Unsatisfiable);
        // Ignored: garbage, inverted, several ranges, other units, overflow.
        for g in [
            "bytes=a-b",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=99999999999999999999-",
        ] {
            check(Some(g), 10, RangeAsk::Full);
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_ext("seg_00001.ts").unwrap(), "ts");
        for bad in [
            "..", ".ts", "a..ts", "a/b.ts", "seg", "a.b.ts", "x.", "é.ts",
        ] {
            assert!(file_ext(bad).is_err(), "{bad}");
        }
    }
}
