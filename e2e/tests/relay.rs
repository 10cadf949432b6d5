//! A relay node (`swarmcast-edge --relay`): it plays nothing, fetches every
//! rendition of the stream, and serves its neighbours.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use swarmcast_e2e::*;
use swarmcast_proto::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_holds_every_rendition_and_serves_viewers() {
    let event = LiveEvent::start("360p,144p");
    let relay_token = token("test", Role::Relay);
    // The relay offers the most capacity: the tracker makes it the first
    // fetcher of every segment of every rendition.
    let _relay = Proc::start(
        "swarmcast-edge",
        &[
            "--relay",
            "--tracker",
            &event.ws,
            "--origin",
            &event.origin_url,
            "--stream",
            "test",
            "--token",
            &relay_token,
            "--upload-kbps",
            "1000000",
        ],
        false,
    );
    let viewer = edge(
        &event.ws,
        &event.origin_url,
        &viewer_token(),
        &["--upload-kbps", "1000"],
    );
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let stats_url = format!("http://{}/v1/streams/test/stats", event.tracker.1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the relay never held both renditions"
        );
        let stats: serde_json::Value = serde_json::from_str(
            &c.get(&stats_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let held = |r: &str| {
            stats["segments"].as_array().map_or(0, |a| {
                a.iter()
                    .filter(|s| {
                        s["id"].as_str().unwrap_or("").contains(r)
                            && s["holders"].as_u64().unwrap_or(0) >= 1
                    })
                    .count()
            })
        };
        // 144p is held only by the relay (the viewer plays 360p).
        if stats["peers"]["relay"] == 1
            && held("/144p/") >= 3
            && held("/360p/") >= 3
            && stats["p2p_bytes"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The viewer plays verified segments, some of them from the relay.
    assert!(metric(&c, &viewer.1, "swarmcast_edge_bytes_total{source=\"p2p\"}").await > 0.0);
    assert!(newest(&c, &viewer.1).await.is_some());
}
