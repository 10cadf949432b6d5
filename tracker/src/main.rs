//! `swarmcast-tracker`: parses config, starts tracing and metrics, runs the
//! tracker library.

use std::process::ExitCode;

use swarmcast_tracker::Config;

fn main() -> ExitCode {
    let config: Config = swarmcast_svc::parse_config("swarmcast-tracker");
    let _ = swarmcast_svc::raise_fd_limit();
    swarmcast_svc::run_service("swarmcast-tracker", |shutdown| {
        swarmcast_tracker::run(config, shutdown)
    })
}
