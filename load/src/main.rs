//! `swarmcast-load`: load-testing a live event.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
            if limit > 0 && (limit as usize) < cfg.peers + 64 {
                eprintln!(
                    "swarmcast-load: open-file limit {limit} is below --peers {}",
                    cfg.peers
                );
                return ExitCode::FAILURE;
            }
            let json = cfg.json.clone();
            match rt.block_on(swarmcast_load::tracker::run(cfg)) {
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
    }
}
