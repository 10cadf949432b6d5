//! A malicious edge peer that corrupts every chunk it uploads: its
//! neighbours detect it by hash, drop it and report it to the tracker;
//! nobody plays or relays its bytes, and playback goes on.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::*;

use std::time::{Duration, Instant};

use swarmcast_proto::RenditionIndex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunks_are_caught_dropped_and_reported() {
    let event = LiveEvent::start("360p");
    let (tracker, ws, origin_url) = (&event.tracker, &event.ws, &event.origin_url);
    let token = viewer_token();
    // The evil peer offers the most upload capacity, so the tracker makes it
    // a first fetcher often and the others fetch from it.
    let evil = edge(
        ws,
        origin_url,
        &token,
        &["--corrupt-uploads", "--upload-kbps", "1000000"],
    );
    let honest = [
        edge(ws, origin_url, &token, &["--upload-kbps", "1000"]),
        edge(ws, origin_url, &token, &["--upload-kbps", "1000"]),
    ];
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Wait until an honest peer has caught a corrupted segment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no hash failure was detected");
        let mut failures = 0.0;
        for h in &honest {
            failures += metric(&c, &h.1, "swarmcast_edge_hash_failures_total").await;
        }
        if failures >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut dropped = 0.0;
    for h in &honest {
        dropped += metric(&c, &h.1, "swarmcast_edge_peers_dropped_total").await;
    }
    assert!(dropped >= 1.0, "the corrupting neighbour was not dropped");
    // The tracker got the report.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &c,
        &tracker.1,
        "swarmcast_tracker_peer_reports_total{reason=\"hash_mismatch\"}",
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "no report reached the tracker");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every segment the honest peers serve is the origin's, and they keep
    // advancing.
    for h in &honest {
        let url = format!("http://{}/live/test/360p/index.m3u8", h.1);
        let deadline = Instant::now() + Duration::from_secs(30);
        let seqs: Vec<u64> = loop {
            let pl = c.get(&url).send().await.unwrap().text().await.unwrap();
            let seqs: Vec<u64> = pl
                .lines()
                .filter_map(|l| l.strip_suffix(".ts")?.parse().ok())
                .collect();
            if seqs.len() >= 3 {
                break seqs;
            }
            assert!(
                Instant::now() < deadline,
                "honest peer {} stopped advancing: {pl}",
                h.1
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
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
        for seq in seqs {
            let Some(meta) = index.segments.iter().find(|m| m.id.seq == seq) else {
                continue;
            };
            let bytes = c
                .get(format!("http://{}/live/test/360p/{seq}.ts", h.1))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(
                meta.matches(&bytes),
                "honest peer {} serves corrupted segment {seq}",
                h.1
            );
        }
    }
    drop(evil);
}
