//! The crate's errors. [`Error`] wraps the per-area enums so callers that do
//! not care which codec failed can use one type.

use thiserror::Error;

/// A malformed identifier.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which id.
        kind: &'static str,
    },
    /// The id is longer than allowed.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The id holds a byte outside `[A-Za-z0-9_-]`.
    #[error("{kind} has a character outside [A-Za-z0-9_-] at byte {pos}")]
    BadChar {
        /// Which id.
        kind: &'static str,
        /// Offset of the first bad byte.
        pos: usize,
    },
    /// A segment id is not `stream/rendition/seq`.
    #[error("segment id is not stream/rendition/seq")]
    BadSegment,
    /// A SHA-256 digest is not 64 hex digits.
    #[error("sha256 is not 64 hex digits")]
    BadDigest,
}

/// A peer wire frame that could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than [`crate::wire::MAX_FRAME`].
    #[error("frame of {0} bytes is over the 16384-byte limit")]
    TooLarge(usize),
    /// The frame ends before its fields do.
    #[error("frame truncated: needed {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the fields need.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// Bytes follow the last field.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    /// Unknown frame type byte.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// Unknown reject reason byte.
    #[error("unknown reject reason 0x{0:02x}")]
    UnknownReason(u8),
    /// A rendition id on the wire is invalid.
    #[error("bad rendition id: {0}")]
    BadRendition(IdError),
    /// A chunk's declared total is over [`crate::wire::MAX_SEGMENT_SIZE`].
    #[error("segment total {0} is over the per-segment cap")]
    SegmentTooLarge(u64),
    /// A chunk does not fit inside its declared total (`offset + len > total`).
    #[error("chunk at offset {offset} with {len} bytes overruns total {total}")]
    ChunkOverrun {
        /// Chunk offset.
        offset: u32,
        /// Chunk payload length.
        len: usize,
        /// Declared total.
        total: u32,
    },
    /// A have-map bitmap is longer than allowed.
    #[error("have-map bitmap of {0} bytes is over the limit")]
    BitmapTooLarge(usize),
}

/// A tracker message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// The text is larger than [`crate::tracker::MAX_MESSAGE`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The `v` field names a version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
}

impl MessageError {
    /// The error code sent back to the peer for this error.
    pub fn code(&self) -> crate::tracker::ErrorCode {
        use crate::tracker::ErrorCode;
        match self {
            MessageError::TooLarge(_) => ErrorCode::TooLarge,
            MessageError::Malformed(_) => ErrorCode::Malformed,
            MessageError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        }
    }
}

/// A WebTorrent tracker request that could not be decoded
/// ([`crate::webtorrent`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WtError {
    /// Not JSON, or a field of the wrong type.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No `action` field.
    #[error("no action")]
    NoAction,
    /// An `action` other than `announce` or `scrape`.
    #[error("unknown action")]
    UnknownAction,
    /// A field the action needs is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An id that is not a binary string of 20 characters U+0000..=U+00FF.
    #[error("bad id: {0}")]
    BadId(&'static str),
    /// An `event` other than started, stopped, completed, update.
    #[error("unknown event")]
    BadEvent,
}

impl WtError {
    /// A short label for counters (`reason` of the refusal metric).
    pub fn reason(&self) -> &'static str {
        match self {
            WtError::Malformed(_) => "malformed",
            WtError::NoAction => "no_action",
            WtError::UnknownAction => "unknown_action",
            WtError::Missing(_) => "missing_field",
            WtError::BadId(_) => "bad_id",
            WtError::BadEvent => "bad_event",
        }
    }
}

/// A stream token that does not grant what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Not `payload.mac` in base64url, or a payload that does not parse.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match: forged, altered, or signed with another secret.
    #[error("bad token signature")]
    BadSignature,
    /// The token's expiry has passed.
    #[error("token expired")]
    Expired,
    /// The token is for another stream.
    #[error("token is for another stream")]
    WrongStream,
    /// The token grants another role.
    #[error("token is for another role")]
    WrongRole,
}

impl TokenError {
    /// The error code sent back to the peer for this error.
    pub fn code(&self) -> crate::tracker::ErrorCode {
        use crate::tracker::ErrorCode;
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// See [`IdError`].
    #[error(transparent)]
    Id(#[from] IdError),
    /// See [`FrameError`].
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// See [`MessageError`].
    #[error(transparent)]
    Message(#[from] MessageError),
    /// See [`TokenError`].
    #[error(transparent)]
    Token(#[from] TokenError),
    /// See [`WtError`].
    #[error(transparent)]
    WebTorrent(#[from] WtError),
}
