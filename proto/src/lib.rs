//! # swarmcast-proto
//!
//! Everything that crosses a process boundary in Swarmcast, as pure data and
//! codecs: validated ids ([`ids`]), the segment integrity record
//! ([`segment::SegmentMeta`]), the tracker protocol ([`tracker`], JSON over
//! WebSocket), the peer wire protocol ([`wire`], binary frames on a data
//! channel), stream tokens ([`token`], HMAC-SHA256) and the WebTorrent
//! tracker protocol ([`webtorrent`]) that browser P2P players already speak.
//!
//! **Invariant:** this crate does no I/O, reads no clock (callers pass `now`)
//! and spawns nothing. Decoders never panic on any input; every wire type has
//! golden vectors in `proto/vectors/` (also checked by the TypeScript SDK) and
//! round-trip property tests.

pub mod error;
pub mod ids;
pub mod segment;
pub mod token;
pub mod tracker;
pub mod webtorrent;
pub mod wire;

pub use error::{Error, FrameError, IdError, MessageError, TokenError, WtError};
pub use ids::{PeerId, RenditionId, SegmentId, Seq, StreamId};
pub use segment::{
    BLOCK_SIZE, BlockHashes, MAX_BLOCK_SIZE, MAX_BLOCKS, RenditionIndex, SegmentMeta, Sha256Digest,
};
pub use token::{Claims, Role, TokenKey};
