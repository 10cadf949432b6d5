//! The live window of every stream, in memory.
//!
//! Ownership: the [`Store`] owns every stream; a stream owns its renditions;
//! each rendition's state sits behind one `RwLock` that is held only for
//! in-memory work (never across an `.await`, never during disk I/O). Readers
//! clone `Arc`s and `Bytes` out and drop the lock at once.
//!
//! Ingest protocol (what ffmpeg's HLS muxer does): each segment is PUT as a
//! file, then the media playlist that lists it. A PUT segment waits in
//! `pending` until a playlist names it; then it gets the next sequence number
//! of its rendition and is published. Sequence numbers are the origin's own
//! and only grow, so an encoder restart (its numbers start again) becomes a
//! discontinuity, never a collision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::http::HeaderValue;
use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::RwLock;
use swarmcast_proto::{
    BlockHashes, RenditionId, RenditionIndex, SegmentId, SegmentMeta, Sha256Digest, StreamId,
};

use crate::error::OriginError;
use crate::hls::{self, PushedMedia, RenderEntry, Variant};

/// Most segments that may wait for a playlist, per rendition.
const MAX_PENDING: usize = 16;

/// Limits of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Segments kept per rendition.
    pub window_segments: usize,
    /// Segments listed in a media playlist.
    pub playlist_segments: usize,
    /// Most streams.
    pub max_streams: usize,
    /// Most renditions per stream.
    pub max_renditions: usize,
}

/// File type of a segment, from its ingest file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// MPEG-TS.
    Ts,
    /// Fragmented MP4 media segment.
    M4s,
    /// Raw AAC (audio-only renditions).
    Aac,
}

impl SegmentKind {
    /// From a file extension.
    pub fn from_ext(ext: &str) -> Option<Self> {
        match ext {
            "ts" => Some(Self::Ts),
            "m4s" => Some(Self::M4s),
            "aac" => Some(Self::Aac),
            _ => None,
        }
    }
    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Self::Ts => "ts",
            Self::M4s => "m4s",
            Self::Aac => "aac",
        }
    }
    /// The `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ts => "video/mp2t",
            Self::M4s => "video/iso.segment",
            Self::Aac => "audio/aac",
        }
    }
}

/// One stored segment. Everything a response needs is computed once here.
#[derive(Debug)]
pub struct Segment {
    /// The integrity record published for it.
    pub meta: SegmentMeta,
    /// The bytes (shared, never copied).
    pub data: Bytes,
    /// File type.
    pub kind: SegmentKind,
    /// A discontinuity comes before it.
    pub discontinuity: bool,
    /// Its discontinuity sequence number.
    pub disc_seq: u64,
    /// Program date-time of its first frame, Unix ms.
    pub pdt_ms: u64,
    /// `ETag` header value.
    pub etag: HeaderValue,
    /// `Repr-Digest` header value.
    pub repr_digest: HeaderValue,
}

impl Segment {
    /// Builds a segment and its header values.
    pub fn new(
        meta: SegmentMeta,
        data: Bytes,
        kind: SegmentKind,
        discontinuity: bool,
        disc_seq: u64,
        pdt_ms: u64,
    ) -> Self {
        let etag = HeaderValue::from_str(&format!("\"{}\"", &meta.sha256.to_hex()[..32]))
            .expect("hex is a valid header value");
        let repr_digest = HeaderValue::from_str(&meta.sha256.repr_digest_header())
            .expect("base64 is a valid header value");
        Self {
            meta,
            data,
            kind,
            discontinuity,
            disc_seq,
            pdt_ms,
            etag,
            repr_digest,
        }
    }
}

/// A rendered document (playlist or index) with its `ETag`.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// Strong `ETag` over the body.
    pub etag: HeaderValue,
}

impl Rendered {
    /// Renders `body` and its ETag.
    pub fn from_text(body: String) -> Self {
        let digest = Sha256Digest::of(body.as_bytes());
        let etag = HeaderValue::from_str(&format!("\"{}\"", &digest.to_hex()[..32]))
            .expect("hex is a valid header value");
        Self {
            body: Bytes::from(body),
            etag,
        }
    }
}

#[derive(Debug)]
struct Pending {
    name: String,
    data: Bytes,
    sha256: Sha256Digest,
    kind: SegmentKind,
}

#[derive(Debug, Default)]
struct RenditionState {
    segments: VecDeque<Arc<Segment>>,
    pending: VecDeque<Pending>,
    next_seq: u64,
    target_duration_s: u32,
    /// The next published segment starts a discontinuity.
    next_discontinuity: bool,
    /// Set after the encoder sent `#EXT-X-ENDLIST`.
    ended: bool,
    playlist: Option<Rendered>,
    index: Option<Rendered>,
}

/// One rendition of a stream.
#[derive(Debug)]
pub struct Rendition {
    /// Its id.
    pub id: RenditionId,
    state: RwLock<RenditionState>,
}

/// One live stream.
#[derive(Debug)]
pub struct Stream {
    /// Its id.
    pub id: StreamId,
    renditions: RwLock<BTreeMap<RenditionId, Arc<Rendition>>>,
    /// The variants of the master playlist the encoder pushed, if any.
    master: RwLock<Vec<Variant>>,
}

/// What a playlist push changed.
#[derive(Debug, Default)]
pub struct Published {
    /// Segments that entered the live window.
    pub added: Vec<Arc<Segment>>,
    /// Segments that left it.
    pub evicted: Vec<Arc<Segment>>,
}

/// All streams.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    streams: DashMap<StreamId, Arc<Stream>>,
}

impl Store {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            streams: DashMap::new(),
        }
    }

    /// The store's limits.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// A stream, if it exists.
    pub fn stream(&self, id: &StreamId) -> Option<Arc<Stream>> {
        self.streams.get(id).map(|s| s.clone())
    }

    /// A stream by its id as text (checked, not allocated: the hot path).
    pub fn stream_by_str(&self, id: &str) -> Result<Option<Arc<Stream>>, swarmcast_proto::IdError> {
        StreamId::validate(id)?;
        Ok(self.streams.get(id).map(|s| s.clone()))
    }

    /// Every stream.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams.iter().map(|s| s.clone()).collect()
    }

    /// A stream, created if the store has room.
    pub fn stream_or_create(&self, id: &StreamId) -> Result<Arc<Stream>, OriginError> {
        if let Some(s) = self.stream(id) {
            return Ok(s);
        }
        if self.streams.len() >= self.cfg.max_streams {
            return Err(OriginError::Capacity("too many streams"));
        }
        let s = self
            .streams
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Stream {
                    id: id.clone(),
                    renditions: RwLock::new(BTreeMap::new()),
                    master: RwLock::new(Vec::new()),
                })
            })
            .clone();
        metrics::gauge!("swarmcast_origin_streams").set(self.streams.len() as f64);
        Ok(s)
    }
}

impl Stream {
    /// A rendition, if it exists.
    pub fn rendition(&self, id: &RenditionId) -> Option<Arc<Rendition>> {
        self.renditions.read().get(id).cloned()
    }

    /// Every rendition.
    pub fn renditions(&self) -> Vec<Arc<Rendition>> {
        self.renditions.read().values().cloned().collect()
    }

    /// A rendition, created if the stream has room.
    pub fn rendition_or_create(
        &self,
        id: &RenditionId,
        max: usize,
    ) -> Result<Arc<Rendition>, OriginError> {
        if let Some(r) = self.rendition(id) {
            return Ok(r);
        }
        let mut map = self.renditions.write();
        if !map.contains_key(id) && map.len() >= max {
            return Err(OriginError::Capacity("too many renditions in this stream"));
        }
        Ok(map
            .entry(*id)
            .or_insert_with(|| {
                Arc::new(Rendition {
                    id: *id,
                    state: RwLock::new(RenditionState::default()),
                })
            })
            .clone())
    }

    /// Keeps the encoder's master playlist variants.
    pub fn set_master(&self, variants: Vec<Variant>) {
        *self.master.write() = variants;
    }

    /// The pushed master variants.
    pub fn master_variants(&self) -> Vec<Variant> {
        self.master.read().clone()
    }

    /// The master playlist: the encoder's variants that have segments, or,
    /// with no pushed master, every rendition with a bandwidth measured from
    /// its segments. `None` while no rendition has a segment.
    pub fn master_playlist(&self) -> Option<String> {
        let live: Vec<(String, u64)> = self
            .renditions
            .read()
            .values()
            .filter_map(|r| r.measured_bandwidth().map(|b| (r.id.to_string(), b)))
            .collect();
        if live.is_empty() {
            return None;
        }
        let pushed: Vec<(String, String)> = self
            .master
            .read()
            .iter()
            .filter(|v| live.iter().any(|(r, _)| *r == v.rendition))
            .map(|v| (v.rendition.clone(), v.attributes.clone()))
            .collect();
        let variants = if pushed.is_empty() {
            let mut live = live;
            live.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
            live.into_iter()
                .map(|(r, b)| (r, format!("BANDWIDTH={b}")))
                .collect()
        } else {
            pushed
        };
        Some(hls::render_master(
            variants.iter().map(|(r, a)| (r.as_str(), a.as_str())),
        ))
    }
}

impl Rendition {
    /// The media playlist, if the rendition has segments.
    pub fn playlist(&self) -> Option<Rendered> {
        self.state.read().playlist.clone()
    }

    /// The JSON index, if the rendition has segments.
    pub fn index(&self) -> Option<Rendered> {
        self.state.read().index.clone()
    }

    /// A segment of the live window.
    pub fn segment(&self, seq: u64) -> Option<Arc<Segment>> {
        let st = self.state.read();
        let first = st.segments.front()?.meta.id.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        st.segments.get(i).cloned()
    }

    /// Segments in the live window.
    pub fn window_len(&self) -> usize {
        self.state.read().segments.len()
    }

    /// Peak bits per second over the window (for a generated master).
    fn measured_bandwidth(&self) -> Option<u64> {
        let st = self.state.read();
        st.segments
            .iter()
            .map(|s| s.meta.size * 8 * 1000 / u64::from(s.meta.duration_ms.max(1)))
            .max()
    }

    /// Holds a pushed segment until a playlist names it. The oldest waiting
    /// segment is dropped when too many wait.
    pub fn put_pending(&self, name: String, data: Bytes, kind: SegmentKind) {
        let sha256 = Sha256Digest::of(&data);
        let mut st = self.state.write();
        st.pending.retain(|p| p.name != name);
        if st.pending.len() >= MAX_PENDING {
            st.pending.pop_front();
            metrics::counter!("swarmcast_origin_pending_dropped_total").increment(1);
        }
        st.pending.push_back(Pending {
            name,
            data,
            sha256,
            kind,
        });
    }

    /// Applies a pushed media playlist: every listed segment that was PUT
    /// since it was last seen enters the window with the next sequence
    /// number. Returns what entered and what left.
    pub fn apply_playlist(
        &self,
        stream: &StreamId,
        pushed: &PushedMedia,
        cfg: &StoreConfig,
        now_ms: u64,
    ) -> Published {
        let mut out = Published::default();
        let mut st = self.state.write();
        for entry in &pushed.entries {
            let Some(pos) = st.pending.iter().position(|p| p.name == entry.uri) else {
                continue;
            };
            let p = st
                .pending
                .remove(pos)
                .expect("position came from this deque");
            let seq = st.next_seq;
            st.next_seq += 1;
            let last = st.segments.back().cloned();
            let discontinuity = entry.discontinuity || st.next_discontinuity || st.ended;
            st.next_discontinuity = false;
            st.ended = false;
            let disc_seq = last
                .as_ref()
                .map_or(0, |l| l.disc_seq + u64::from(discontinuity));
            // Program date-time: the encoder's if it sent one, else continuous
            // from the previous segment, else "now minus this duration".
            let pdt_ms = entry.program_date_time_ms.unwrap_or_else(|| match &last {
                Some(l) if !discontinuity => l.pdt_ms + u64::from(l.meta.duration_ms),
                _ => now_ms.saturating_sub(u64::from(entry.duration_ms)),
            });
            let meta = SegmentMeta {
                id: SegmentId::new(stream.clone(), self.id, seq),
                size: p.data.len() as u64,
                sha256: p.sha256,
                duration_ms: entry.duration_ms,
                published_at_ms: now_ms,
                blocks: BlockHashes::for_segment(&p.data),
            };
            let seg = Arc::new(Segment::new(
                meta,
                p.data,
                p.kind,
                discontinuity,
                disc_seq,
                pdt_ms,
            ));
            st.target_duration_s = st
                .target_duration_s
                .max(entry.duration_ms.div_ceil(1000).max(1));
            st.segments.push_back(seg.clone());
            out.added.push(seg);
        }
        if pushed.ended {
            st.ended = true;
        }
        while st.segments.len() > cfg.window_segments {
            if let Some(old) = st.segments.pop_front() {
                out.evicted.push(old);
            }
        }
        if !out.added.is_empty() || pushed.ended {
            render(&mut st, stream, &self.id, cfg);
        }
        out
    }

    /// Restores segments read back from disk (oldest first, contiguous).
    /// The next ingested segment starts a discontinuity.
    pub fn restore(&self, stream: &StreamId, segments: Vec<Arc<Segment>>, cfg: &StoreConfig) {
        let mut st = self.state.write();
        for s in segments {
            st.next_seq = s.meta.id.seq + 1;
            st.target_duration_s = st
                .target_duration_s
                .max(s.meta.duration_ms.div_ceil(1000).max(1));
            st.segments.push_back(s);
        }
        while st.segments.len() > cfg.window_segments {
            st.segments.pop_front();
        }
        st.next_discontinuity = true;
        render(&mut st, stream, &self.id, cfg);
    }
}

fn render(st: &mut RenditionState, stream: &StreamId, rendition: &RenditionId, cfg: &StoreConfig) {
    let skip = st.segments.len().saturating_sub(cfg.playlist_segments);
    let shown: Vec<RenderEntry<'_>> = st
        .segments
        .iter()
        .skip(skip)
        .map(|s| RenderEntry {
            seq: s.meta.id.seq,
            ext: s.kind.ext(),
            duration_ms: s.meta.duration_ms,
            discontinuity: s.discontinuity,
            program_date_time_ms: s.pdt_ms,
        })
        .collect();
    let disc_seq = st.segments.get(skip).map_or(0, |s| s.disc_seq);
    st.playlist = Some(Rendered::from_text(hls::render_media(
        st.target_duration_s,
        disc_seq,
        &shown,
        st.ended,
    )));
    let index = RenditionIndex {
        stream: stream.clone(),
        rendition: *rendition,
        segments: st.segments.iter().map(|s| s.meta.clone()).collect(),
    };
    let json = serde_json::to_string(&index).expect("the index serializes to JSON");
    st.index = Some(Rendered::from_text(json));
    metrics::gauge!("swarmcast_origin_live_window_segments", "stream" => stream.to_string(), "rendition" => rendition.to_string())
        .set(st.segments.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::parse_media;

    fn cfg() -> StoreConfig {
        StoreConfig {
            window_segments: 4,
            playlist_segments: 3,
            max_streams: 2,
            max_renditions: 2,
        }
    }

    fn playlist(first: u64, names: &[&str]) -> PushedMedia {
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for n in names {
            s.push_str(&format!("#EXTINF:2.0,\n{n}\n"));
        }
        parse_media(&s).unwrap()
    }

    #[test]
    fn segments_enter_when_a_playlist_names_them() {
        let store = Store::new(cfg());
        let sid = StreamId::new("s").unwrap();
        let stream = store.stream_or_create(&sid).unwrap();
        let r = stream
            .rendition_or_create(&RenditionId::new("r").unwrap(), 2)
            .unwrap();
        r.put_pending("a.ts".into(), Bytes::from_static(b"aaa"), SegmentKind::Ts);
        assert!(r.playlist().is_none());
        let p = r.apply_playlist(&sid, &playlist(0, &["a.ts"]), store.config(), 10_000);
        assert_eq!(p.added.len(), 1);
        assert_eq!(p.added[0].meta.sha256, Sha256Digest::of(b"aaa"));
        // The same playlist again adds nothing.
        assert!(
            r.apply_playlist(&sid, &playlist(0, &["a.ts"]), store.config(), 10_001)
                .added
                .is_empty()
        );
        for (i, n) in ["b.ts", "c.ts", "d.ts", "e.ts"].iter().enumerate() {
            r.put_pending(n.to_string(), Bytes::from(n.to_string()), SegmentKind::Ts);
            let p = r.apply_playlist(
                &sid,
                &playlist(i as u64, &["a.ts", n]),
                store.config(),
                12_000,
            );
            assert_eq!(p.added[0].meta.id.seq, i as u64 + 1);
        }
        assert_eq!(r.window_len(), 4);
        assert!(r.segment(0).is_none());
        assert_eq!(&r.segment(4).unwrap().data[..], b"e.ts");
        let text = String::from_utf8(r.playlist().unwrap().body.to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{text}");
        assert!(text.contains("4.ts"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn encoder_restart_is_a_discontinuity() {
        let store = Store::new(cfg());
        let sid = StreamId::new("s").unwrap();
        let stream = store.stream_or_create(&sid).unwrap();
        let r = stream
            .rendition_or_create(&RenditionId::new("r").unwrap(), 2)
            .unwrap();
        r.put_pending("seg_0.ts".into(), Bytes::from_static(b"1"), SegmentKind::Ts);
        r.apply_playlist(&sid, &playlist(0, &["seg_0.ts"]), store.config(), 0);
        let mut ended = playlist(0, &["seg_0.ts"]);
        ended.ended = true;
        r.apply_playlist(&sid, &ended, store.config(), 0);
        assert!(String::from_utf8_lossy(&r.playlist().unwrap().body).contains("#EXT-X-ENDLIST"));
        // The encoder restarts and reuses its names.
        r.put_pending("seg_0.ts".into(), Bytes::from_static(b"2"), SegmentKind::Ts);
        let p = r.apply_playlist(&sid, &playlist(0, &["seg_0.ts"]), store.config(), 0);
        assert_eq!(p.added[0].meta.id.seq, 1);
        assert!(p.added[0].discontinuity);
        let text = String::from_utf8(r.playlist().unwrap().body.to_vec()).unwrap();
        let disc = text
            .find("#EXT-X-DISCONTINUITY\n")
            .expect("a discontinuity tag");
        assert!(
            text.find("0.ts").unwrap() < disc && disc < text.find("1.ts").unwrap(),
            "{text}"
        );
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn limits_hold() {
        let store = Store::new(cfg());
        for s in ["a", "b"] {
            store.stream_or_create(&StreamId::new(s).unwrap()).unwrap();
        }
        assert!(
            store
                .stream_or_create(&StreamId::new("c").unwrap())
                .is_err()
        );
        let s = store.stream(&StreamId::new("a").unwrap()).unwrap();
        for r in ["1", "2"] {
            s.rendition_or_create(&RenditionId::new(r).unwrap(), 2)
                .unwrap();
        }
        assert!(
            s.rendition_or_create(&RenditionId::new("3").unwrap(), 2)
                .is_err()
        );
        let r = s.rendition(&RenditionId::new("1").unwrap()).unwrap();
        for i in 0..40 {
            r.put_pending(format!("{i}.ts"), Bytes::new(), SegmentKind::Ts);
        }
        assert_eq!(r.state.read().pending.len(), MAX_PENDING);
    }
}
