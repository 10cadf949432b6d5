//! `swarmcast-origin`: parses config, starts tracing and metrics, runs the
//! origin library.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use swarmcast_origin::config::{Command, Config};
use swarmcast_proto::{Claims, Role, StreamId, TokenKey};

/// mimalloc: the origin's per-request allocations (request and response
/// bodies, header maps) cost less with it (docs/benchmarks/origin.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config: Config = swarmcast_svc::parse_config("swarmcast-origin");
    if let Some(Command::Token { stream, role, ttl }) = &config.command {
        return print_token(&config, stream, role, *ttl);
    }
    swarmcast_svc::run_service("swarmcast-origin", |shutdown| {
        swarmcast_origin::run(config, shutdown)
    })
}

fn print_token(config: &Config, stream: &str, role: &str, ttl: u64) -> ExitCode {
    let Some(secret) = &config.token_secret else {
        eprintln!("swarmcast-origin token: needs --token-secret (or SWARMCAST_TOKEN_SECRET)");
        return ExitCode::from(2);
    };
    let (stream, role) = match (StreamId::new(stream), role.parse::<Role>()) {
        (Ok(s), Ok(r)) => (s, r),
        _ => {
            eprintln!("swarmcast-origin token: bad --stream or --role (viewer, ingest, relay)");
            return ExitCode::from(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{}",
        TokenKey::new(secret.as_bytes()).sign(&Claims {
            stream,
            role,
            expires_at: now + ttl
        })
    );
    ExitCode::SUCCESS
}
