//! The origin's error type and its mapping to HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use swarmcast_proto::TokenError;

/// Everything that can go wrong in the origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No token with an ingest request.
    #[error("missing ingest token (Authorization: Bearer <token> or ?token=)")]
    MissingToken,
    /// The token does not grant ingest on this stream.
    #[error("ingest token refused: {0}")]
    Token(#[from] TokenError),
    /// A path part is not a valid id or file name.
    #[error("bad path: {0}")]
    BadPath(String),
    /// A pushed playlist does not parse.
    #[error("playlist refused: {0}")]
    BadPlaylist(String),
    /// A body over its size cap.
    #[error("body over the {limit}-byte limit")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The request body could not be read.
    #[error("reading the body failed: {0}")]
    Body(String),
    /// No such stream.
    #[error("unknown stream")]
    UnknownStream,
    /// No such rendition in the stream.
    #[error("unknown rendition")]
    UnknownRendition,
    /// The segment is not (or no longer) in the live window.
    #[error("segment not in the live window")]
    SegmentNotFound,
    /// The origin holds as many streams (or renditions) as it may.
    #[error("capacity reached: {0}")]
    Capacity(&'static str),
    /// A `Range` outside the resource.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The resource's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The disk directory failed.
    #[error("storage: {0}")]
    Io(String),
    /// ffmpeg is missing or failed to start.
    #[error("{0}")]
    Ffmpeg(String),
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// A startup failure of the service plumbing.
    #[error(transparent)]
    Svc(#[from] swarmcast_svc::SvcError),
}

impl OriginError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        use OriginError::*;
        match self {
            MissingToken => StatusCode::UNAUTHORIZED,
            Token(TokenError::WrongStream | TokenError::WrongRole) => StatusCode::FORBIDDEN,
            Token(_) => StatusCode::UNAUTHORIZED,
            BadPath(_) | BadPlaylist(_) | Body(_) => StatusCode::BAD_REQUEST,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnknownStream | UnknownRendition | SegmentNotFound => StatusCode::NOT_FOUND,
            Capacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Io(_) | Ffmpeg(_) | Config(_) | Svc(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for the `reason` of the rejection counter.
    pub fn reason(&self) -> &'static str {
        use OriginError::*;
        match self {
            MissingToken => "missing_token",
            Token(TokenError::Expired) => "token_expired",
            Token(TokenError::WrongStream | TokenError::WrongRole) => "token_forbidden",
            Token(_) => "token_invalid",
            BadPath(_) => "bad_path",
            BadPlaylist(_) => "bad_playlist",
            TooLarge { .. } => "too_large",
            Body(_) => "bad_body",
            UnknownStream => "unknown_stream",
            UnknownRendition => "unknown_rendition",
            SegmentNotFound => "segment_not_found",
            Capacity(_) => "capacity",
            RangeNotSatisfiable { .. } => "bad_range",
            Io(_) => "io",
            Ffmpeg(_) | Config(_) | Svc(_) => "internal",
        }
    }
}

impl IntoResponse for OriginError {
    fn into_response(self) -> Response {
        let status = self.status();
        metrics::counter!("swarmcast_origin_rejected_total", "reason" => self.reason())
            .increment(1);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut resp = (status, format!("{self}\n")).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let OriginError::RangeNotSatisfiable { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
