//! Segment integrity records.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::IdError;
use crate::ids::SegmentId;

/// A SHA-256 digest. Serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::BadDigest)?;
        Ok(Self(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Standard base64 with padding, as RFC 9530 `Repr-Digest` carries it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The value of an RFC 9530 `Repr-Digest` header: `sha-256=:<base64>:`.
    pub fn repr_digest_header(&self) -> String {
        format!("sha-256=:{}:", self.to_base64())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// What the origin publishes about each segment: the integrity record a peer
/// checks bytes against. It comes from the origin (over HTTP or relayed by
/// the tracker), never from another peer.
///
/// `blocks` (optional) holds a hash per fixed-size block, so that a peer can
/// check and relay a segment block by block before it has all of it
/// (cut-through relaying); decoders that do not know the field ignore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// `stream/rendition/seq`.
    pub id: SegmentId,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole segment.
    pub sha256: Sha256Digest,
    /// Media duration in milliseconds.
    pub duration_ms: u32,
    /// When the origin published it, Unix time in milliseconds.
    pub published_at_ms: u64,
    /// SHA-256 of each block, when the origin computed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockHashes>,
}

/// The hash of each `size`-byte block of a segment (the last may be shorter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHashes {
    /// Block size in bytes.
    pub size: u32,
    /// One per block, in order.
    pub sha256: Vec<Sha256Digest>,
}

/// The block size the origin starts from: 16 KiB (a 2-s segment at 2.5 Mb/s
/// has 39). A block is what a peer checks before relaying it, so it sets the
/// time each hop adds: in the simulator 16 KiB blocks took the stripe plan
/// from 91 % to 99 % offload at 1,000 viewers with 1.5× uplinks
/// (docs/benchmarks/simulator.md).
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Most blocks a record may list: 256 hashes keep a tracker message under
/// its 32 KiB cap. Larger segments get larger blocks
/// ([`BlockHashes::for_segment`]).
pub const MAX_BLOCKS: usize = 256;
/// The largest block the origin uses (segments above 256 of them, 1 GiB,
/// are published without block hashes).
pub const MAX_BLOCK_SIZE: u32 = 4 * 1024 * 1024;

impl BlockHashes {
    /// The block hashes of `data` in blocks of `size` bytes; `None` when
    /// `size` is 0 or the segment would need more than [`MAX_BLOCKS`].
    pub fn of(data: &[u8], size: u32) -> Option<Self> {
        if size == 0 || data.len().div_ceil(size as usize) > MAX_BLOCKS {
            return None;
        }
        Some(Self {
            size,
            sha256: data.chunks(size as usize).map(Sha256Digest::of).collect(),
        })
    }

    /// The origin's block hashes of a segment: blocks of [`BLOCK_SIZE`], or
    /// the smallest power-of-two multiple of it that keeps the list within
    /// [`MAX_BLOCKS`].
    pub fn for_segment(data: &[u8]) -> Option<Self> {
        let mut size = BLOCK_SIZE;
        while data.len().div_ceil(size as usize) > MAX_BLOCKS && size < MAX_BLOCK_SIZE {
            size *= 2;
        }
        Self::of(data, size)
    }

    /// True when the list fits a segment of `len` bytes: a non-zero block
    /// size, one hash per block, at most [`MAX_BLOCKS`].
    pub fn fits(&self, len: u64) -> bool {
        self.size > 0
            && self.sha256.len() <= MAX_BLOCKS
            && self.sha256.len() as u64 == len.div_ceil(u64::from(self.size))
    }
}

impl SegmentMeta {
    /// True when `data` is exactly the segment this record describes.
    pub fn matches(&self, data: &[u8]) -> bool {
        data.len() as u64 == self.size && Sha256Digest::of(data) == self.sha256
    }

    /// Block hashes that fit this segment (a record whose list does not is
    /// treated as having none).
    pub fn block_hashes(&self) -> Option<&BlockHashes> {
        self.blocks.as_ref().filter(|b| b.fits(self.size))
    }
}

/// The origin's JSON index of one rendition's live window
/// (`/live/{stream}/{rendition}/index.json`): where a peer gets hashes from
/// the origin itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionIndex {
    /// The stream.
    pub stream: crate::ids::StreamId,
    /// The rendition.
    pub rendition: crate::ids::RenditionId,
    /// The segments of the live window, oldest first.
    pub segments: Vec<SegmentMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_encodings() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.repr_digest_header(),
            "sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(Sha256Digest::from_hex("zz").is_err());
        assert!(Sha256Digest::from_hex(&"0".repeat(63)).is_err());
    }

    #[test]
    fn meta_matches_only_its_bytes() {
        let meta = SegmentMeta {
            id: "s/r/1".parse().unwrap(),
            size: 3,
            sha256: Sha256Digest::of(b"abc"),
            duration_ms: 2000,
            published_at_ms: 1,
            blocks: None,
        };
        assert!(meta.matches(b"abc"));
        assert!(!meta.matches(b"abd"));
        assert!(!meta.matches(b"abcd"));
    }
}
