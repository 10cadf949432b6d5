//! The tracker's error type.

/// What can go wrong starting or running the tracker.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// Service plumbing (bind, TLS).
    #[error(transparent)]
    Svc(#[from] swarmcast_svc::SvcError),
    /// A client could not reach or join the tracker.
    #[error("tracker client: {0}")]
    Client(String),
}
