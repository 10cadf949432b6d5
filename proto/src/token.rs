//! Stream tokens: HMAC-SHA256 over stream id, role and expiry.
//!
//! Format: `base64url(payload) "." base64url(mac)` (no padding), where
//! `payload = "v1:" stream ":" role ":" expiry_unix_seconds` and
//! `mac = HMAC-SHA256(secret, "swarmcast-token\0" || payload)`.
//! Stream ids cannot hold `:`, so the payload splits unambiguously.
//! The MAC is checked (in constant time) before the payload is parsed, so a
//! forged token learns nothing from the parser.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::TokenError;
use crate::ids::StreamId;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes; anything longer is malformed.
pub const MAX_TOKEN_LEN: usize = 512;

const DOMAIN: &[u8] = b"swarmcast-token\0";

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watch the stream (join its swarm).
    Viewer,
    /// Push the stream into the origin, and publish its segments to the tracker.
    Ingest,
    /// Run a relay edge peer for the stream.
    Relay,
}

impl Role {
    /// The role's name in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
            Role::Relay => "relay",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "ingest" => Some(Role::Ingest),
            "relay" => Some(Role::Relay),
            _ => None,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        Role::parse(s).ok_or(TokenError::Malformed)
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The stream it is for.
    pub stream: StreamId,
    /// The role it grants.
    pub role: Role,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a secret (any length; 32 random bytes or more recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// Mints a token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = format!(
            "v1:{}:{}:{}",
            claims.stream,
            claims.role.as_str(),
            claims.expires_at
        );
        let tag = self.tag(payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks the signature and returns the claims, whatever they are.
    pub fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload_b64, tag_b64) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| TokenError::Malformed)?;
        if tag.len() != 32 {
            return Err(TokenError::Malformed);
        }
        self.tag(&payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = std::str::from_utf8(&payload).map_err(|_| TokenError::Malformed)?;
        let mut parts = payload.split(':');
        let (Some("v1"), Some(stream), Some(role), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        Ok(Claims {
            stream: StreamId::new(stream).map_err(|_| TokenError::Malformed)?,
            role: Role::parse(role).ok_or(TokenError::Malformed)?,
            expires_at: exp.parse().map_err(|_| TokenError::Malformed)?,
        })
    }

    /// Checks that `token` grants `role` on `stream` at `now_unix` (seconds).
    pub fn verify(
        &self,
        token: &str,
        stream: &StreamId,
        role: Role,
        now_unix: u64,
    ) -> Result<Claims, TokenError> {
        let claims = self.decode(token)?;
        if &claims.stream != stream {
            return Err(TokenError::WrongStream);
        }
        if claims.role != role {
            return Err(TokenError::WrongRole);
        }
        if now_unix >= claims.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(stream: &str, role: Role, exp: u64) -> Claims {
        Claims {
            stream: StreamId::new(stream).unwrap(),
            role,
            expires_at: exp,
        }
    }

    #[test]
    fn sign_then_verify() {
        let key = TokenKey::new(b"secret");
        let t = key.sign(&claims("test", Role::Ingest, 1000));
        let s = StreamId::new("test").unwrap();
        assert_eq!(
            key.verify(&t, &s, Role::Ingest, 999).unwrap().expires_at,
            1000
        );
        assert_eq!(
            key.verify(&t, &s, Role::Ingest, 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            key.verify(&t, &s, Role::Viewer, 1),
            Err(TokenError::WrongRole)
        );
        let other = StreamId::new("other").unwrap();
        assert_eq!(
            key.verify(&t, &other, Role::Ingest, 1),
            Err(TokenError::WrongStream)
        );
        let wrong_key = TokenKey::new(b"other secret");
        assert_eq!(
            wrong_key.verify(&t, &s, Role::Ingest, 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let key = TokenKey::new(b"secret");
        let t = key.sign(&claims("test", Role::Viewer, 1000));
        let (_, tag) = t.split_once('.').unwrap();
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("v1:test:viewer:99999999"),
            tag
        );
        assert_eq!(key.decode(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        let key = TokenKey::new(b"secret");
        let long = "a".repeat(600);
        for bad in ["", ".", "abc", "a.b.c", "!!!.???", long.as_str()] {
            assert_eq!(key.decode(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        // A correctly signed payload that does not parse is malformed, not forged.
        for payload in [
            "v2:test:viewer:1",
            "v1:test:admin:1",
            "v1:te/st:viewer:1",
            "v1:test:viewer:x",
            "v1:test:viewer:1:2",
        ] {
            let tag = key.tag(payload.as_bytes()).finalize().into_bytes();
            let t = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag)
            );
            assert_eq!(key.decode(&t), Err(TokenError::Malformed), "{payload}");
        }
    }
}
