//! # swarmcast-load
//!
//! Load-testing a live event. For now: [`tracker`], a load generator that
//! opens many WebSocket peers against a real tracker and drives a live
//! event (joins, a published segment every interval, `have`s, signalling
//! between neighbours, then a saturation phase), and reports what the
//! tracker handled: messages per second, publish-to-peer latency, its CPU
//! and its resident memory per peer.

pub mod link;
pub mod live;
pub mod netns;
pub mod sim;
pub mod stat;
pub mod tracker;
pub mod webtorrent;

/// Errors of a load run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad arguments.
    #[error("config: {0}")]
    Config(String),
    /// The run could not complete.
    #[error("{0}")]
    Run(String),
}
