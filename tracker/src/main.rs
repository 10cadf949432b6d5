//! `swarmcast-tracker`: parses config, starts tracing and metrics, runs the
//! tracker library.

use std::process::ExitCode;

use clap::Parser as _;
use swarmcast_tracker::Config;

fn main() -> ExitCode {
    let args = match swarmcast_svc::args_with_config_file(false) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarmcast-tracker: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config::parse_from(args);
    swarmcast_svc::init_tracing();
    let _ = swarmcast_svc::raise_fd_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmcast-tracker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        swarmcast_svc::cancel_on_signals(shutdown.clone());
        match swarmcast_tracker::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("swarmcast-tracker: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
