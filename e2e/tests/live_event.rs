//! A live event on loopback: origin (ffmpeg test source) → tracker → three
//! edge peers joined by real WebRTC data channels. The tracker makes one
//! first fetcher per segment; the others get it from the swarm (or over
//! HTTP at the last safe moment). Every peer checks every segment against
//! the origin's hash and serves it on its local HLS endpoint, which a real
//! HLS client plays.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::*;

use std::process::Command;
use std::time::{Duration, Instant};

use swarmcast_proto::RenditionIndex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_peers_serve_verified_live_segments_to_a_local_player() {
    let event = LiveEvent::start("360p,144p");
    let (tracker, ws, origin_url) = (&event.tracker, &event.ws, &event.origin_url);
    let token = viewer_token();
    let edges: Vec<Proc> = (0..3).map(|_| edge(ws, origin_url, &token, &[])).collect();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Each edge peer's local playlist fills with held segments.
    let deadline = Instant::now() + Duration::from_secs(60);
    for e in &edges {
        loop {
            assert!(
                Instant::now() < deadline,
                "edge peer {} never listed 3 segments",
                e.1
            );
            let r = c
                .get(format!("http://{}/live/test/360p/index.m3u8", e.1))
                .send()
                .await
                .unwrap();
            if r.status().is_success() && r.text().await.unwrap().matches(".ts").count() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Every segment an edge peer serves is byte-identical to the origin's.
    let index: RenditionIndex = serde_json::from_str(
        &c.get(format!("{origin_url}/live/test/360p/index.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    for e in &edges {
        let pl = c
            .get(format!("http://{}/live/test/360p/index.m3u8", e.1))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in pl.lines().filter(|l| l.ends_with(".ts")) {
            let seq: u64 = line.trim_end_matches(".ts").parse().unwrap();
            let Some(meta) = index.segments.iter().find(|m| m.id.seq == seq) else {
                continue;
            };
            let bytes = c
                .get(format!("http://{}/live/test/360p/{line}", e.1))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(
                meta.matches(&bytes),
                "edge {} served segment {seq} that differs from the origin's",
                e.1
            );
            compared += 1;
        }
    }
    assert!(compared >= 4, "compared only {compared} segments");
    // A real HLS client plays three seconds through an edge peer.
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &format!("http://{}/live/test/360p/index.m3u8", edges[0].1),
            "-t",
            "3",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not play through the edge peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tracker knows the three viewers and what they hold; one first
    // fetcher per segment was assigned, and most media bytes came from
    // peers (reported by the peers every 2 s).
    let stats_url = format!("http://{}/v1/streams/test/stats", tracker.1);
    let mut stats = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        stats = serde_json::from_str(
            &c.get(&stats_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        if stats["offload"].as_f64().unwrap_or(0.0) > 0.5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(stats["viewers"], 3, "{stats}");
    assert!(
        stats["first_fetch_assigned"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert!(
        stats["p2p_bytes"].as_u64().unwrap() > 0,
        "no byte came from a peer: {stats}"
    );
    assert!(
        stats["offload"].as_f64().unwrap() > 0.5,
        "offload not above 50 %: {stats}"
    );
    assert_eq!(stats["stalls"], 0, "{stats}");
    let held = stats["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().unwrap().contains("/360p/") && s["holders"] == 3)
        .count();
    assert!(held >= 3, "{stats}");
}
