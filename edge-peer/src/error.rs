//! The edge peer's error type.

/// What can go wrong in the edge peer.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// Service plumbing (bind).
    #[error(transparent)]
    Svc(#[from] swarmcast_svc::SvcError),
    /// An HTTP fetch failed.
    #[error("http: {0}")]
    Http(String),
}
