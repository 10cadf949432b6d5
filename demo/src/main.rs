//! `swarmcast`: the project's front door. `swarmcast demo` runs a whole live
//! event on this machine: the origin with its ffmpeg test source, the
//! tracker, and N edge peers, all on loopback, with a status line every few
//! seconds; Ctrl-C stops everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use swarmcast_load::live::{Event, EventSpec, STREAM};
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
    /// The web player's built page (default: `player-demo/dist/demo` of
    /// this checkout, built with npm on first use when npm is installed).
    #[arg(long)]
    web_root: Option<PathBuf>,
    /// Do not serve or build the web player.
    #[arg(long)]
    no_web: bool,
}

/// The built demo page, building it with npm when it is missing.
fn web_root(args: &DemoArgs) -> Option<PathBuf> {
    if args.no_web {
        return None;
    }
    if let Some(dir) = &args.web_root {
        return Some(dir.clone());
    }
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../player-demo");
    let dist = pkg.join("dist/demo");
    if dist.join("index.html").exists() {
        return Some(dist);
    }
    if !pkg.join("package.json").exists() {
        return None;
    }
    println!(
        "building the web player (npm ci && npm run build in {})...",
        pkg.display()
    );
    let npm = |args: &[&str]| {
        std::process::Command::new("npm")
            .args(args)
            .current_dir(&pkg)
            .status()
            .is_ok_and(|s| s.success())
    };
    if npm(&["ci", "--no-audit", "--no-fund"]) && npm(&["run", "build"]) {
        Some(dist)
    } else {
        println!("  could not build it (is npm installed?); the demo runs without the web page");
        None
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo(args) => {
            swarmcast_svc::run_service("swarmcast demo", |shutdown| demo(args, shutdown))
        }
    }
}

async fn demo(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let web = web_root(&args);
    let spec = EventSpec {
        viewers: args.peers,
        renditions: args.renditions.clone(),
        tracker_listen: args.tracker_listen,
        origin_listen: args.origin_listen,
        tracker_args: Vec::new(),
        origin_args: web
            .iter()
            .flat_map(|d| ["--web-root".to_string(), d.display().to_string()])
            .collect(),
        edge_args: Vec::new(),
        netns_uplinks_kbps: None,
    };
    let event = Event::start(&spec, &shutdown).await?;
    let origin_url = format!("http://{}", event.origin);
    let rendition = event.rendition.clone();
    println!();
    println!("Swarmcast demo: a live event on this machine");
    println!("  origin (HTTP only):  {origin_url}/live/{STREAM}/master.m3u8");
    if let Some(e) = event.edges.first() {
        println!("  through an edge peer: ffplay http://{e}/live/{STREAM}/{rendition}/index.m3u8");
    }
    if web.is_some() {
        println!(
            "  in a browser:         {origin_url}/player/index.html?tracker=ws://{}/v1/ws&stream={STREAM}&token={}",
            event.tracker, event.token
        );
    }
    println!("  tracker dashboard:   http://{}/", event.tracker);
    println!("  Ctrl-C stops everything.");
    println!();
    let stats_url = event.stats_url();
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
    event.stop().await;
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
