//! `swarmcast-tracker`: parses config, starts tracing and metrics, runs the
//! tracker library.

use std::process::ExitCode;

use swarmcast_tracker::Config;

/// mimalloc: every WebSocket message is a few short-lived allocations
/// (frame, decoded request, encoded replies); glibc's malloc took 18 % of
/// the tracker's CPU under aquatic_ws_load_test (docs/benchmarks/webtorrent.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config: Config = swarmcast_svc::parse_config("swarmcast-tracker");
    let _ = swarmcast_svc::raise_fd_limit();
    swarmcast_svc::run_service("swarmcast-tracker", |shutdown| {
        swarmcast_tracker::run(config, shutdown)
    })
}
