//! Validated identifiers.
//!
//! Every id that reaches a path, a log line or a map key is built through a
//! constructor that checks its length and charset, so a hostile id (`..`,
//! `%2f`, control characters, megabytes of text) is refused at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IdError;

/// Bytes allowed in every id: ASCII letters, digits, `-` and `_`.
/// `.` is excluded on purpose, so no id can be `..` or carry an extension.
fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn check(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if let Some(pos) = s.bytes().position(|b| !is_id_byte(b)) {
        return Err(IdError::BadChar { kind, pos });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s` (1..=MAX_LEN bytes of `[A-Za-z0-9_-]`).
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($kind, &s, Self::MAX_LEN)?;
                Ok(Self(s))
            }

            /// Checks `s` without allocating (what [`Self::new`] accepts).
            pub fn validate(s: &str) -> Result<(), IdError> {
                check($kind, s, Self::MAX_LEN)
            }

            /// The id as a string slice (always safe in a path segment or a log).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Maps keyed by the id can be searched with a `&str` (no allocation);
        /// hashing and equality are those of the string.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(s.into_owned()).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A live stream (one swarm). Example: `test`, `keynote-2026`.
    StreamId,
    "stream id",
    64
);
string_id!(
    /// A peer, chosen by the peer (random) and checked unique by the tracker.
    PeerId,
    "peer id",
    64
);

/// One rendition of a stream (a rung of the ABR ladder). Example: `360p`.
///
/// Kept short and inline (no allocation) because it appears in every peer
/// frame.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RenditionId {
    len: u8,
    buf: [u8; RenditionId::MAX_LEN],
}

impl RenditionId {
    /// Longest accepted rendition id, in bytes.
    pub const MAX_LEN: usize = 16;

    /// Validates `s` (1..=16 bytes of `[A-Za-z0-9_-]`).
    pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
        Self::from_bytes(s.as_ref().as_bytes())
    }

    /// Validates raw bytes from the wire.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
        if b.is_empty() {
            return Err(IdError::Empty {
                kind: "rendition id",
            });
        }
        if b.len() > Self::MAX_LEN {
            return Err(IdError::TooLong {
                kind: "rendition id",
                max: Self::MAX_LEN,
            });
        }
        if let Some(pos) = b.iter().position(|&c| !is_id_byte(c)) {
            return Err(IdError::BadChar {
                kind: "rendition id",
                pos,
            });
        }
        let mut buf = [0u8; Self::MAX_LEN];
        buf[..b.len()].copy_from_slice(b);
        Ok(Self {
            len: b.len() as u8,
            buf,
        })
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes pass `from_bytes`.
        std::str::from_utf8(self.as_bytes()).expect("rendition ids are validated ASCII")
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl fmt::Display for RenditionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RenditionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RenditionId({:?})", self.as_str())
    }
}

impl FromStr for RenditionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for RenditionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RenditionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// Media sequence number of a segment within its rendition.
pub type Seq = u64;

/// A segment: `stream/rendition/seq`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    /// The stream (swarm).
    pub stream: StreamId,
    /// The rendition within the stream.
    pub rendition: RenditionId,
    /// The media sequence number.
    pub seq: Seq,
}

impl SegmentId {
    /// Builds a segment id from its parts.
    pub fn new(stream: StreamId, rendition: RenditionId, seq: Seq) -> Self {
        Self {
            stream,
            rendition,
            seq,
        }
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.stream, self.rendition, self.seq)
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({self})")
    }
}

impl FromStr for SegmentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut parts = s.splitn(3, '/');
        let (Some(stream), Some(rendition), Some(seq)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(IdError::BadSegment);
        };
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.len() > 20 {
            return Err(IdError::BadSegment);
        }
        let seq = seq.parse().map_err(|_| IdError::BadSegment)?;
        Ok(Self::new(
            StreamId::new(stream)?,
            RenditionId::new(rendition)?,
            seq,
        ))
    }
}

impl Serialize for SegmentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SegmentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(
            StreamId::new("keynote-2026_a").unwrap().as_str(),
            "keynote-2026_a"
        );
        assert_eq!(RenditionId::new("360p").unwrap().as_str(), "360p");
        assert_eq!(PeerId::new("AbC123").unwrap().to_string(), "AbC123");
    }

    #[test]
    fn refuses_hostile_ids() {
        for bad in ["", "..", "a/b", "a b", "a.b", "%2e%2e", "é", "a\nb", "a\0"] {
            assert!(StreamId::new(bad).is_err(), "{bad:?}");
            assert!(RenditionId::new(bad).is_err(), "{bad:?}");
        }
        assert!(StreamId::new("x".repeat(65)).is_err());
        assert!(StreamId::new("x".repeat(64)).is_ok());
        assert!(RenditionId::new("x".repeat(17)).is_err());
        assert!(RenditionId::from_bytes(&[0xff]).is_err());
    }

    #[test]
    fn segment_id_round_trips() {
        let id: SegmentId = "test/360p/42".parse().unwrap();
        assert_eq!(id.seq, 42);
        assert_eq!(id.to_string(), "test/360p/42");
        for bad in [
            "test/360p",
            "test/360p/",
            "test/360p/-1",
            "test/360p/1/2",
            "../x/1",
            "t/r/99999999999999999999999",
        ] {
            assert!(bad.parse::<SegmentId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_refuses_bad_ids() {
        assert!(serde_json::from_str::<StreamId>("\"../etc\"").is_err());
        assert_eq!(
            serde_json::from_str::<StreamId>("\"ok\"").unwrap().as_str(),
            "ok"
        );
    }
}
