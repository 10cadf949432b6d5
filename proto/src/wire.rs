//! The peer wire protocol: binary frames on one reliable, ordered
//! RTCDataChannel, pre-negotiated by both ends (`negotiated: true`, id 0,
//! label `swarmcast`, protocol `swarmcast/1`).
//!
//! Every frame is one data-channel message of at most [`MAX_FRAME`] bytes.
//! Integers are big-endian. Layout: a type byte, then a segment reference
//! (`rendition_len: u8`, `rendition: [u8]`, `seq: u64`), then the type's
//! fields:
//!
//! | type | name | fields after the segment reference |
//! |------|------|------------------------------------|
//! | 0x01 | have-map | `bitmap_len: u16`, `bitmap` (bit `i`, MSB first, = holds `seq + i`) |
//! | 0x02 | have | — |
//! | 0x03 | request | `offset: u32`, `length: u32` (0 = to the end) |
//! | 0x04 | chunk | `offset: u32`, `total: u32`, data (the rest of the frame) |
//! | 0x05 | cancel | — |
//! | 0x06 | reject | `reason: u8` ([`RejectReason`]) |
//!
//! Decoding takes a [`Bytes`] and slices it: a chunk's data is never copied.
//! Decoding never panics; every length is checked against what is present.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::ids::{RenditionId, Seq};

/// Largest frame, in bytes (what every browser's data channel accepts).
pub const MAX_FRAME: usize = 16 * 1024;
/// Largest segment a chunk may describe (`total`), in bytes.
pub const MAX_SEGMENT_SIZE: u32 = 64 * 1024 * 1024;
/// Largest have-map bitmap, in bytes (8192 segments).
pub const MAX_BITMAP: usize = 1024;
/// Longest header of a chunk frame (a 16-byte rendition id).
pub const MAX_CHUNK_HEADER: usize = 1 + 1 + RenditionId::MAX_LEN + 8 + 4 + 4;
/// Most data bytes one chunk frame carries, whatever the rendition id.
pub const MAX_CHUNK_DATA: usize = MAX_FRAME - MAX_CHUNK_HEADER;

const T_HAVE_MAP: u8 = 0x01;
const T_HAVE: u8 = 0x02;
const T_REQUEST: u8 = 0x03;
const T_CHUNK: u8 = 0x04;
const T_CANCEL: u8 = 0x05;
const T_REJECT: u8 = 0x06;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No free upload slot; ask someone else.
    Busy = 1,
    /// The peer does not hold that segment (any more).
    NotFound = 2,
    /// The request was malformed (range outside the segment...).
    BadRequest = 3,
}

impl RejectReason {
    fn from_u8(b: u8) -> Result<Self, FrameError> {
        match b {
            1 => Ok(Self::Busy),
            2 => Ok(Self::NotFound),
            3 => Ok(Self::BadRequest),
            other => Err(FrameError::UnknownReason(other)),
        }
    }

    /// Name used in logs and golden vectors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
        }
    }
}

/// One peer wire frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// What the sender holds of one rendition, from `base_seq`.
    HaveMap {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number of bit 0.
        base_seq: Seq,
        /// Bitmap, MSB first.
        bitmap: Bytes,
    },
    /// The sender now holds this segment.
    Have {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
    },
    /// Send me this segment (or the byte range `offset..offset+length`).
    Request {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
        /// First byte wanted.
        offset: u32,
        /// Bytes wanted; 0 means to the end.
        length: u32,
    },
    /// A slice of a segment.
    Chunk {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
        /// Where `data` starts in the segment.
        offset: u32,
        /// The whole segment's size.
        total: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Stop sending this segment.
    Cancel {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
    },
    /// A request was refused.
    Reject {
        /// Rendition.
        rendition: RenditionId,
        /// Sequence number.
        seq: Seq,
        /// Why.
        reason: RejectReason,
    },
}

struct Reader {
    buf: Bytes,
    /// Length of the frame being read, for error reports.
    len: usize,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.buf.remaining() < n {
            return Err(FrameError::Truncated {
                needed: self.len - self.buf.remaining() + n,
                have: self.len,
            });
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn segment(&mut self) -> Result<(RenditionId, Seq), FrameError> {
        let n = self.u8()? as usize;
        self.need(n)?;
        let r = RenditionId::from_bytes(&self.buf[..n]).map_err(FrameError::BadRendition)?;
        self.buf.advance(n);
        Ok((r, self.u64()?))
    }
    fn end(self) -> Result<(), FrameError> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

impl Frame {
    /// Decodes one frame. Never panics; chunk data and bitmaps share `buf`.
    pub fn decode(buf: Bytes) -> Result<Frame, FrameError> {
        let len = buf.len();
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let mut r = Reader { buf, len };
        let ty = r.u8()?;
        if !(T_HAVE_MAP..=T_REJECT).contains(&ty) {
            return Err(FrameError::UnknownType(ty));
        }
        let (rendition, seq) = r.segment()?;
        let frame = match ty {
            T_HAVE_MAP => {
                let n = r.u16()? as usize;
                if n > MAX_BITMAP {
                    return Err(FrameError::BitmapTooLarge(n));
                }
                let bitmap = r.take(n)?;
                Frame::HaveMap {
                    rendition,
                    base_seq: seq,
                    bitmap,
                }
            }
            T_HAVE => Frame::Have { rendition, seq },
            T_REQUEST => Frame::Request {
                rendition,
                seq,
                offset: r.u32()?,
                length: r.u32()?,
            },
            T_CHUNK => {
                let offset = r.u32()?;
                let total = r.u32()?;
                if total > MAX_SEGMENT_SIZE {
                    return Err(FrameError::SegmentTooLarge(total as u64));
                }
                let data = r.take(r.buf.remaining())?;
                if offset as u64 + data.len() as u64 > total as u64 {
                    return Err(FrameError::ChunkOverrun {
                        offset,
                        len: data.len(),
                        total,
                    });
                }
                Frame::Chunk {
                    rendition,
                    seq,
                    offset,
                    total,
                    data,
                }
            }
            T_CANCEL => Frame::Cancel { rendition, seq },
            T_REJECT => Frame::Reject {
                rendition,
                seq,
                reason: RejectReason::from_u8(r.u8()?)?,
            },
            _ => unreachable!("type byte checked above"),
        };
        r.end()?;
        Ok(frame)
    }

    /// Size of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        let seg = |r: &RenditionId| 1 + 1 + r.as_bytes().len() + 8;
        match self {
            Frame::HaveMap {
                rendition, bitmap, ..
            } => seg(rendition) + 2 + bitmap.len(),
            Frame::Have { rendition, .. } | Frame::Cancel { rendition, .. } => seg(rendition),
            Frame::Request { rendition, .. } => seg(rendition) + 8,
            Frame::Chunk {
                rendition, data, ..
            } => seg(rendition) + 8 + data.len(),
            Frame::Reject { rendition, .. } => seg(rendition) + 1,
        }
    }

    /// Appends the encoded frame to `out`. Refuses frames the decoder would
    /// refuse (over 16 KiB, overrunning chunks, oversized bitmaps).
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let len = self.encoded_len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        out.reserve(len);
        let seg = |out: &mut BytesMut, ty: u8, r: &RenditionId, seq: Seq| {
            out.put_u8(ty);
            out.put_u8(r.as_bytes().len() as u8);
            out.put_slice(r.as_bytes());
            out.put_u64(seq);
        };
        match self {
            Frame::HaveMap {
                rendition,
                base_seq,
                bitmap,
            } => {
                if bitmap.len() > MAX_BITMAP {
                    return Err(FrameError::BitmapTooLarge(bitmap.len()));
                }
                seg(out, T_HAVE_MAP, rendition, *base_seq);
                out.put_u16(bitmap.len() as u16);
                out.put_slice(bitmap);
            }
            Frame::Have { rendition, seq } => seg(out, T_HAVE, rendition, *seq),
            Frame::Request {
                rendition,
                seq,
                offset,
                length,
            } => {
                seg(out, T_REQUEST, rendition, *seq);
                out.put_u32(*offset);
                out.put_u32(*length);
            }
            Frame::Chunk {
                rendition,
                seq,
                offset,
                total,
                data,
            } => {
                if *total > MAX_SEGMENT_SIZE {
                    return Err(FrameError::SegmentTooLarge(*total as u64));
                }
                if *offset as u64 + data.len() as u64 > *total as u64 {
                    return Err(FrameError::ChunkOverrun {
                        offset: *offset,
                        len: data.len(),
                        total: *total,
                    });
                }
                seg(out, T_CHUNK, rendition, *seq);
                out.put_u32(*offset);
                out.put_u32(*total);
                out.put_slice(data);
            }
            Frame::Cancel { rendition, seq } => seg(out, T_CANCEL, rendition, *seq),
            Frame::Reject {
                rendition,
                seq,
                reason,
            } => {
                seg(out, T_REJECT, rendition, *seq);
                out.put_u8(*reason as u8);
            }
        }
        Ok(())
    }

    /// Encodes into a new buffer.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out.freeze())
    }

    /// Splits `segment[from..]` into chunk frames of at most
    /// [`MAX_CHUNK_DATA`] bytes each, slicing `segment` without copying.
    /// Returns an error if the segment is over [`MAX_SEGMENT_SIZE`].
    pub fn chunks(
        rendition: RenditionId,
        seq: Seq,
        segment: &Bytes,
        from: usize,
    ) -> Result<impl Iterator<Item = Frame> + '_, FrameError> {
        let total = u32::try_from(segment.len())
            .ok()
            .filter(|t| *t <= MAX_SEGMENT_SIZE)
            .ok_or(FrameError::SegmentTooLarge(segment.len() as u64))?;
        let from = from.min(segment.len());
        Ok((from..segment.len())
            .step_by(MAX_CHUNK_DATA)
            .map(move |off| Frame::Chunk {
                rendition,
                seq,
                offset: off as u32,
                total,
                data: segment.slice(off..(off + MAX_CHUNK_DATA).min(segment.len())),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> RenditionId {
        RenditionId::new("360p").unwrap()
    }

    #[test]
    fn chunk_data_is_not_copied() {
        let frame = Frame::Chunk {
            rendition: r(),
            seq: 9,
            offset: 0,
            total: 100,
            data: Bytes::from_static(&[7u8; 100]),
        };
        let wire = frame.encode().unwrap();
        let Frame::Chunk { data, .. } = Frame::decode(wire.clone()).unwrap() else {
            panic!("decoded a chunk");
        };
        // The payload points into the received buffer.
        let base = wire.as_ptr() as usize;
        let p = data.as_ptr() as usize;
        assert!(p >= base && p + data.len() <= base + wire.len());
    }

    #[test]
    fn chunks_cover_the_segment_within_the_frame_limit() {
        let seg = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let long = RenditionId::new("x".repeat(16)).unwrap();
        let mut rebuilt = Vec::new();
        for f in Frame::chunks(long, 1, &seg, 0).unwrap() {
            let wire = f.encode().unwrap();
            assert!(wire.len() <= MAX_FRAME);
            let Frame::Chunk {
                offset,
                data,
                total,
                ..
            } = Frame::decode(wire).unwrap()
            else {
                panic!("decoded a chunk");
            };
            assert_eq!(offset as usize, rebuilt.len());
            assert_eq!(total as usize, seg.len());
            rebuilt.extend_from_slice(&data);
        }
        assert_eq!(rebuilt, seg);
        // Resuming from an offset.
        let first = Frame::chunks(r(), 1, &seg, 50_000).unwrap().next().unwrap();
        assert!(matches!(first, Frame::Chunk { offset: 50_000, .. }));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would() {
        let big = Frame::Chunk {
            rendition: r(),
            seq: 0,
            offset: 0,
            total: MAX_FRAME as u32 * 2,
            data: Bytes::from(vec![0u8; MAX_FRAME]),
        };
        assert!(matches!(big.encode(), Err(FrameError::TooLarge(_))));
        let overrun = Frame::Chunk {
            rendition: r(),
            seq: 0,
            offset: 10,
            total: 12,
            data: Bytes::from_static(b"abc"),
        };
        assert!(matches!(
            overrun.encode(),
            Err(FrameError::ChunkOverrun { .. })
        ));
    }
}
