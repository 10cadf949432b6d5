//! `swarmcast`: the project's front door. `swarmcast demo` runs a whole live
//! event on this machine: the origin with its ffmpeg test source, the
//! tracker, and N edge peers, all on loopback, with a status line every few
//! seconds; Ctrl-C stops everything.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use swarmcast_proto::{Claims, Role, StreamId, TokenKey};
use tokio_util::sync::CancellationToken;

/// Swarmcast: a hybrid tracker + swarm CDN for live video.
#[derive(Debug, Parser)]
#[command(name = "swarmcast", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a whole live event on this machine (origin + test source,
    /// tracker, edge peers) and print where to watch it.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Edge peers (viewers) to start.
    #[arg(long, default_value_t = 6)]
    peers: usize,
    /// The origin's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    origin_listen: SocketAddr,
    /// The tracker's address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    tracker_listen: SocketAddr,
    /// Renditions of the test source, best first.
    #[arg(long, default_value = "360p,240p,144p", value_delimiter = ',')]
    renditions: Vec<String>,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5)]
    status_every: u64,
    /// Stop after this many seconds (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo(args) => {
            swarmcast_svc::run_service("swarmcast demo", |shutdown| demo(args, shutdown))
        }
    }
}

fn parse<C: Parser>(args: &[String]) -> anyhow::Result<C> {
    Ok(C::try_parse_from(args)?)
}

async fn demo(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    let tracker_cfg: swarmcast_tracker::Config = parse(&[
        "swarmcast-tracker".into(),
        "--listen".into(),
        args.tracker_listen.to_string(),
        "--token-secret".into(),
        secret.clone(),
    ])?;
    let tracker = swarmcast_tracker::start(tracker_cfg, shutdown.clone()).await?;
    let ws = format!("ws://{}/v1/ws", tracker.addr);
    let origin_cfg: swarmcast_origin::Config = parse(&[
        "swarmcast-origin".into(),
        "--listen".into(),
        args.origin_listen.to_string(),
        "--token-secret".into(),
        secret.clone(),
        "--test-source".into(),
        "--test-source-renditions".into(),
        args.renditions.join(","),
        "--tracker".into(),
        ws.clone(),
    ])?;
    let origin = swarmcast_origin::start(origin_cfg, shutdown.clone()).await?;
    let origin_url = format!("http://{}", origin.addr);
    let rendition = args
        .renditions
        .first()
        .cloned()
        .unwrap_or_else(|| "360p".into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = TokenKey::new(secret.as_bytes()).sign(&Claims {
        stream: StreamId::new("test")?,
        role: Role::Viewer,
        expires_at: now + 7 * 86_400,
    });
    let mut edges = Vec::new();
    for _ in 0..args.peers {
        let cfg: swarmcast_edge::Config = parse(&[
            "swarmcast-edge".into(),
            "--tracker".into(),
            ws.clone(),
            "--origin".into(),
            origin_url.clone(),
            "--stream".into(),
            "test".into(),
            "--rendition".into(),
            rendition.clone(),
            "--token".into(),
            token.clone(),
        ])?;
        edges.push(swarmcast_edge::start(cfg, shutdown.clone()).await?);
    }
    println!();
    println!("Swarmcast demo: a live event on this machine");
    println!("  origin (HTTP only):  {origin_url}/live/test/master.m3u8");
    if let Some(e) = edges.first() {
        println!(
            "  through an edge peer: ffplay http://{}/live/test/{rendition}/index.m3u8",
            e.addr
        );
    }
    println!("  tracker dashboard:   http://{}/", tracker.addr);
    println!("  Ctrl-C stops everything.");
    println!();
    let stats_url = format!("http://{}/v1/streams/test/stats", tracker.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if args.duration > 0 && started.elapsed() >= Duration::from_secs(args.duration) {
                    shutdown.cancel();
                    break;
                }
                match status(&client, &stats_url).await {
                    Some(line) => println!("{line}"),
                    None => println!("waiting for the first segments..."),
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for e in edges {
            let _ = e.done.await;
        }
        let _ = origin.done.await;
        let _ = tracker.done.await;
    })
    .await;
    println!("stopped");
    Ok(())
}

async fn status(client: &reqwest::Client, url: &str) -> Option<String> {
    let body = client.get(url).send().await.ok()?.text().await.ok()?;
    let s: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(format!(
        "viewers {}  offload {:.1}%  origin egress {:.1} MB  from peers {:.1} MB  stalls {}  segments published {}",
        s["viewers"],
        s["offload"].as_f64().unwrap_or(0.0) * 100.0,
        s["http_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        s["p2p_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        s["stalls"],
        s["published"],
    ))
}
