//! `swarmcast-load`: load-testing a live event.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use swarmcast_load::LoadError;

/// Load-testing a Swarmcast live event.
#[derive(Debug, Parser)]
#[command(name = "swarmcast-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive many WebSocket peers against a real tracker and report what it
    /// handled (messages/s, publish latency, CPU, memory per peer).
    Tracker(swarmcast_load::tracker::TrackerBench),
    /// Move segments between two edge links through our peer wire protocol
    /// and, as the reference in the same run, through the bare webrtc crate;
    /// report MB/s, CPU per MiB and connection setup time for both.
    Link(swarmcast_load::link::LinkBench),
    /// Run a real live event on this machine (tracker, origin with its test
    /// source, N edge peers) with the swarm and with HTTP only, and report
    /// origin egress, offload, stalls and spread time side by side.
    Live(swarmcast_load::live::LiveBench),
    /// Simulate a live event in virtual time: the real swarm core for every
    /// viewer and the real tracker logic over a network model, with the
    /// tracker's plan and its baselines (random mesh, HTTP only).
    Sim(swarmcast_load::sim::SimArgs),
    /// Drive a WebTorrent tracker (ours, or aquatic_ws as the reference)
    /// with many connections announcing offers with browser-sized SDPs, and
    /// report offer relay latency, answer round trips, and the tracker's
    /// memory per connection and CPU.
    Webtorrent(swarmcast_load::webtorrent::WtBench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    swarmcast_svc::init_tracing();
    let limit = swarmcast_svc::raise_fd_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmcast-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Tracker(cfg) => {
            if !enough_files(limit, cfg.peers, "--peers") {
                return ExitCode::FAILURE;
            }
            let json = cfg.json.clone();
            report(rt.block_on(swarmcast_load::tracker::run(cfg)), json)
        }
        Cmd::Link(cfg) => {
            let json = cfg.json.clone();
            report(rt.block_on(swarmcast_load::link::run(cfg)), json)
        }
        Cmd::Webtorrent(cfg) => {
            if !enough_files(limit, cfg.connections, "--connections") {
                return ExitCode::FAILURE;
            }
            let json = cfg.json.clone();
            report(rt.block_on(swarmcast_load::webtorrent::run(cfg)), json)
        }
        Cmd::Sim(args) => report(swarmcast_load::sim::run_cli(&args), args.json.clone()),
        Cmd::Live(cfg) => {
            let json = cfg.json.clone();
            report(rt.block_on(swarmcast_load::live::run(cfg)), json)
        }
    }
}

/// Whether the open-file limit (0: unknown) leaves room for `n` sockets;
/// says which flag is too large when not.
fn enough_files(limit: u64, n: usize, flag: &str) -> bool {
    if limit > 0 && (limit as usize) < n + 64 {
        eprintln!("swarmcast-load: open-file limit {limit} is below {flag} {n}");
        return false;
    }
    true
}

/// Prints the report as JSON (and writes it to `json`), or the error.
fn report<R: Serialize>(r: Result<R, LoadError>, json: Option<PathBuf>) -> ExitCode {
    match r {
        Ok(report) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("{text}");
            if let Some(p) = json {
                if let Err(e) = std::fs::write(&p, &text) {
                    eprintln!("swarmcast-load: cannot write {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swarmcast-load: {e}");
            ExitCode::FAILURE
        }
    }
}
