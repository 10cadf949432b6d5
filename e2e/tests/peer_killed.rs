//! An edge peer killed in the middle of a live event: its neighbours lose
//! the transfers it was serving and finish them from someone else or over
//! HTTP before their deadlines; nobody stalls.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::*;

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_costs_its_neighbours_no_stall() {
    let event = LiveEvent::start("360p");
    let (ws, origin_url) = (&event.ws, &event.origin_url);
    let token = viewer_token();
    // The victim has the most capacity: it is the swarm's usual first
    // fetcher and source.
    let victim = edge(ws, origin_url, &token, &["--upload-kbps", "1000000"]);
    let others = [
        edge(ws, origin_url, &token, &["--upload-kbps", "1000"]),
        edge(ws, origin_url, &token, &["--upload-kbps", "1000"]),
    ];
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for o in &others {
        while newest(&c, &o.1).await.is_none_or(|s| s < 2) {
            assert!(Instant::now() < deadline, "edge {} never played", o.1);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Kill it (SIGKILL: no goodbye) right after a publish, mid-transfer.
    drop(victim);
    let mut last = Vec::new();
    for o in &others {
        last.push(newest(&c, &o.1).await.unwrap_or(0));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (o, l) in others.iter().zip(last) {
        while newest(&c, &o.1).await.is_none_or(|s| s < l + 3) {
            assert!(
                Instant::now() < deadline,
                "edge {} stopped advancing after its neighbour died",
                o.1
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            metric(&c, &o.1, "swarmcast_edge_late_segments_total").await,
            0.0,
            "edge {} missed a deadline",
            o.1
        );
    }
}
