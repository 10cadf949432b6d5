//! The origin publishes to a real tracker: a viewer joined to the swarm
//! hears of every new segment with the hash the origin computed, and the
//! bytes the origin serves match it.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::{Proc, token};

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use swarmcast_proto::tracker::{ClientKind, ClientMsg, Hello, ServerMsg};
use swarmcast_proto::{PeerId, RenditionIndex, Role, SegmentMeta, StreamId};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_origin_publishes_every_segment_to_the_tracker_with_its_hash() {
    let tracker = Proc::start("swarmcast-tracker", &[], true);
    let ws_url = format!("ws://{}/v1/ws", tracker.1);
    let origin = Proc::start("swarmcast-origin", &["--tracker", &ws_url], true);

    // A viewer joins the swarm first.
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let hello = Hello {
        token: token("e2e", Role::Viewer),
        stream: StreamId::new("e2e").unwrap(),
        peer_id: PeerId::new("viewer-1").unwrap(),
        kind: ClientKind::Native,
        upload_kbps: 1000,
        region: None,
        cell: None,
    };
    ws.send(Message::text(ClientMsg::Hello(hello).encode()))
        .await
        .unwrap();

    // An encoder pushes three segments into the origin, ffmpeg-style.
    let c = reqwest::Client::new();
    let ingest = token("e2e", Role::Ingest);
    let mut names = Vec::new();
    for i in 0..3u8 {
        let name = format!("seg_{i}.ts");
        let body = vec![i; 10_000 + usize::from(i)];
        let url = format!("http://{}/ingest/e2e/360p/{name}", origin.1);
        assert!(
            c.put(url)
                .bearer_auth(&ingest)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
        names.push(name);
        let mut pl = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n");
        for n in &names {
            pl.push_str(&format!("#EXTINF:2.0,\n{n}\n"));
        }
        let url = format!("http://{}/ingest/e2e/360p/index.m3u8", origin.1);
        assert!(
            c.put(url)
                .bearer_auth(&ingest)
                .body(pl)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }

    // The viewer hears of each, with the origin's record.
    let mut heard: Vec<SegmentMeta> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while heard.len() < 3 {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("records within 20 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m
            && let Ok(ServerMsg::Segment { meta } | ServerMsg::Fetch { meta }) =
                ServerMsg::decode(t.as_str())
            && !heard.contains(&meta)
        {
            heard.push(meta);
        }
    }
    heard.sort_by_key(|m| m.id.seq);
    let index: RenditionIndex = serde_json::from_str(
        &c.get(format!("http://{}/live/e2e/360p/index.json", origin.1))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(heard, index.segments);
    for meta in &heard {
        let url = format!("http://{}/live/e2e/360p/{}.ts", origin.1, meta.id.seq);
        let bytes = c.get(url).send().await.unwrap().bytes().await.unwrap();
        assert!(meta.matches(&bytes));
    }
    // The tracker counts them.
    let stats: serde_json::Value = serde_json::from_str(
        &c.get(format!("http://{}/v1/streams/e2e/stats", tracker.1))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["published"], 3);
    assert_eq!(stats["peers"]["publisher"], 1);
}
