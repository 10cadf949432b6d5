//! The tracker killed and restarted during a live event: the edge peers
//! keep playing from the origin (its index gives the hashes, HTTP the
//! bytes), and the swarm re-forms on the restarted tracker.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::*;

use std::time::{Duration, Instant};

use swarmcast_proto::RenditionIndex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_goes_on_without_the_tracker_and_the_swarm_reforms() {
    let tracker = Proc::start(
        "swarmcast-tracker",
        &["--min-first-fetchers", "1", "--max-first-fetchers", "1"],
        true,
    );
    let tracker_addr = tracker.1.clone();
    let ws = format!("ws://{tracker_addr}/v1/ws");
    let origin = Proc::start(
        "swarmcast-origin",
        &[
            "--test-source",
            "--test-source-renditions",
            "360p",
            "--tracker",
            &ws,
        ],
        true,
    );
    let origin_url = format!("http://{}", origin.1);
    let token = viewer_token();
    let edges: Vec<Proc> = (0..2)
        .map(|_| edge(&ws, &origin_url, &token, &[]))
        .collect();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for e in &edges {
        while playlist_seqs(&c, &e.1).await.len() < 2 {
            assert!(Instant::now() < deadline, "edge {} never played", e.1);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // The tracker dies.
    drop(tracker);
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for e in &edges {
            v.push(*playlist_seqs(&c, &e.1).await.last().unwrap());
        }
        v
    };
    // Three segments later every edge peer still plays the live edge, with
    // verified bytes.
    let index_url = format!("{origin_url}/live/test/360p/index.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    for (e, last) in edges.iter().zip(before) {
        loop {
            assert!(
                Instant::now() < deadline,
                "edge {} stopped advancing without the tracker",
                e.1
            );
            let seqs = playlist_seqs(&c, &e.1).await;
            if seqs.last().is_some_and(|s| *s >= last + 3) {
                let index: RenditionIndex = serde_json::from_str(
                    &c.get(&index_url)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap(),
                )
                .unwrap();
                let newest = *seqs.last().unwrap();
                let meta = index.segments.iter().find(|m| m.id.seq == newest).unwrap();
                let bytes = c
                    .get(format!("http://{}/live/test/360p/{newest}.ts", e.1))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert!(meta.matches(&bytes));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // The tracker comes back on the same address: the edge peers rejoin and
    // announce what they hold, and the origin publishes to it again.
    let tracker = Proc::start(
        "swarmcast-tracker",
        &[
            "--listen",
            &tracker_addr,
            "--min-first-fetchers",
            "1",
            "--max-first-fetchers",
            "1",
        ],
        true,
    );
    assert_eq!(tracker.1, tracker_addr);
    let stats_url = format!("http://{tracker_addr}/v1/streams/test/stats");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "the swarm did not re-form on the restarted tracker"
        );
        if let Ok(r) = c.get(&stats_url).send().await
            && let Ok(stats) =
                serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap_or_default())
        {
            let both = stats["segments"].as_array().map_or(0, |a| {
                a.iter()
                    .filter(|s| s["holders"] == 2 && !s["size"].is_null())
                    .count()
            });
            if stats["viewers"] == 2 && stats["peers"]["publisher"] == 1 && both >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
