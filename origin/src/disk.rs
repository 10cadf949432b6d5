//! The optional disk directory: the live window of every rendition, so a
//! restarted origin keeps serving what it had.
//!
//! Layout: `<dir>/<stream>/<rendition>/<seq>.<ext>` (the segment bytes) and
//! `<seq>.json` (its record), `<dir>/<stream>/master.json` (the encoder's
//! variants). Files are written to a temporary name and renamed, so a crash
//! never leaves a half-written segment under its real name. At start every
//! segment is hashed again and a file that does not match its record is
//! skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use swarmcast_proto::{RenditionId, SegmentMeta, StreamId};
use tracing::warn;

use crate::error::OriginError;
use crate::hls::Variant;
use crate::store::{Segment, SegmentKind, Store};

#[derive(Serialize, Deserialize)]
struct Record {
    meta: SegmentMeta,
    ext: String,
    discontinuity: bool,
    disc_seq: u64,
    pdt_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct MasterRecord {
    rendition: String,
    attributes: String,
}

/// The disk directory.
#[derive(Debug, Clone)]
pub struct Disk {
    root: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> OriginError {
    OriginError::Io(format!("{}: {e}", path.display()))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), OriginError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

impl Disk {
    /// Opens (creating) the directory.
    pub fn open(root: &Path) -> Result<Self, OriginError> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn dir(&self, stream: &StreamId, rendition: &RenditionId) -> PathBuf {
        self.root.join(stream.as_str()).join(rendition.as_str())
    }

    /// Writes a segment and its record.
    pub async fn save(&self, seg: Arc<Segment>) -> Result<(), OriginError> {
        let dir = self.dir(&seg.meta.id.stream, &seg.meta.id.rendition);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let seq = seg.meta.id.seq;
            write_atomic(&dir.join(format!("{seq}.{}", seg.kind.ext())), &seg.data)?;
            let rec = Record {
                meta: seg.meta.clone(),
                ext: seg.kind.ext().into(),
                discontinuity: seg.discontinuity,
                disc_seq: seg.disc_seq,
                pdt_ms: seg.pdt_ms,
            };
            let json = serde_json::to_vec(&rec).expect("records serialize");
            write_atomic(&dir.join(format!("{seq}.json")), &json)
        })
        .await
        .map_err(|e| OriginError::Io(e.to_string()))?
    }

    /// Removes a segment that left the window.
    pub async fn remove(&self, seg: Arc<Segment>) {
        let dir = self.dir(&seg.meta.id.stream, &seg.meta.id.rendition);
        let _ = tokio::task::spawn_blocking(move || {
            let seq = seg.meta.id.seq;
            for p in [
                dir.join(format!("{seq}.json")),
                dir.join(format!("{seq}.{}", seg.kind.ext())),
            ] {
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        warn!(path = %p.display(), error = %e, "cannot remove an old segment");
                    }
                }
            }
        })
        .await;
    }

    /// Writes a stream's master variants.
    pub async fn save_master(
        &self,
        stream: &StreamId,
        variants: &[Variant],
    ) -> Result<(), OriginError> {
        let path = self.root.join(stream.as_str()).join("master.json");
        let recs: Vec<MasterRecord> = variants
            .iter()
            .map(|v| MasterRecord {
                rendition: v.rendition.clone(),
                attributes: v.attributes.clone(),
            })
            .collect();
        let json = serde_json::to_vec(&recs).expect("records serialize");
        tokio::task::spawn_blocking(move || {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
            }
            write_atomic(&path, &json)
        })
        .await
        .map_err(|e| OriginError::Io(e.to_string()))?
    }

    /// Loads everything into `store` (at start, before serving). Returns the
    /// number of segments restored.
    pub fn load(&self, store: &Store) -> Result<usize, OriginError> {
        let mut restored = 0;
        for entry in std::fs::read_dir(&self.root)
            .map_err(|e| io(&self.root, e))?
            .flatten()
        {
            let Some(stream_id) = entry
                .file_name()
                .to_str()
                .and_then(|n| StreamId::new(n).ok())
            else {
                continue;
            };
            let stream_dir = entry.path();
            let mut renditions = Vec::new();
            for r in std::fs::read_dir(&stream_dir)
                .map_err(|e| io(&stream_dir, e))?
                .flatten()
            {
                if let Some(rid) = r
                    .file_name()
                    .to_str()
                    .and_then(|n| RenditionId::new(n).ok())
                {
                    if r.path().is_dir() {
                        renditions.push(rid);
                    }
                }
            }
            if renditions.is_empty() {
                continue;
            }
            let stream = store.stream_or_create(&stream_id)?;
            if let Ok(text) = std::fs::read(stream_dir.join("master.json")) {
                if let Ok(recs) = serde_json::from_slice::<Vec<MasterRecord>>(&text) {
                    stream.set_master(
                        recs.into_iter()
                            .map(|r| Variant {
                                rendition: r.rendition,
                                attributes: r.attributes,
                            })
                            .collect(),
                    );
                }
            }
            for rid in renditions {
                let segs = self.load_rendition(&stream_id, &rid, store.config().window_segments);
                if segs.is_empty() {
                    continue;
                }
                restored += segs.len();
                let r = stream.rendition_or_create(&rid, store.config().max_renditions)?;
                r.restore(&stream_id, segs, store.config());
            }
        }
        Ok(restored)
    }

    fn load_rendition(
        &self,
        stream: &StreamId,
        rid: &RenditionId,
        window: usize,
    ) -> Vec<Arc<Segment>> {
        let dir = self.dir(stream, rid);
        let mut recs: Vec<Record> = Vec::new();
        for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = f.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if stem.parse::<u64>().is_err() {
                continue;
            }
            match std::fs::read(f.path()).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(rec)) if rec.meta.id.stream == *stream && rec.meta.id.rendition == *rid => {
                    recs.push(rec)
                }
                _ => warn!(path = %f.path().display(), "skipping an unreadable segment record"),
            }
        }
        recs.sort_by_key(|r| r.meta.id.seq);
        // Keep the newest contiguous run, at most `window` long.
        let mut start = recs.len();
        while start > 0
            && recs.len() - start < window
            && (start == recs.len() || recs[start - 1].meta.id.seq + 1 == recs[start].meta.id.seq)
        {
            start -= 1;
        }
        let mut out = Vec::new();
        for rec in recs.drain(start..) {
            let Some(kind) = SegmentKind::from_ext(&rec.ext) else {
                continue;
            };
            let path = dir.join(format!("{}.{}", rec.meta.id.seq, kind.ext()));
            match std::fs::read(&path) {
                Ok(data) if rec.meta.matches(&data) => out.push(Arc::new(Segment::new(
                    rec.meta,
                    Bytes::from(data),
                    kind,
                    rec.discontinuity,
                    rec.disc_seq,
                    rec.pdt_ms,
                ))),
                _ => {
                    warn!(path = %path.display(), "segment missing or not matching its hash; skipping it and older ones");
                    out.clear();
                }
            }
        }
        out
    }
}
