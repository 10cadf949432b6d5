//! `swarmcast-edge`: parses config, starts tracing and metrics, runs the
//! edge-peer library.

use std::process::ExitCode;

use swarmcast_edge::Config;

fn main() -> ExitCode {
    let config: Config = swarmcast_svc::parse_config("swarmcast-edge");
    swarmcast_svc::run_service("swarmcast-edge", |shutdown| {
        swarmcast_edge::run(config, shutdown)
    })
}
