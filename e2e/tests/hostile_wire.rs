//! Hostile peer wire input over a real data channel: a peer joins the
//! swarm, gets introduced to an edge peer, and sends it oversized,
//! truncated and unknown frames, a request outside the window, then a
//! flood of requests. The edge peer rejects and counts each, drops and
//! reports the flooder, and keeps serving its other neighbour.
#![allow(clippy::unwrap_used)]

use swarmcast_e2e::*;

use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmcast_edge::link::{self, BigBufRuntime, LinkCmd, LinkConfig, LinkEvent};
use swarmcast_proto::tracker::{ClientKind, ClientMsg, Hello, ServerMsg};
use swarmcast_proto::wire::{Frame, RejectReason};
use swarmcast_proto::{PeerId, RenditionId, StreamId};
use swarmcast_tracker::client::{self as tclient, ClientConfig, Event};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_rejected_counted_and_the_flooder_dropped() {
    let event = LiveEvent::start("360p");
    let (tracker, ws, origin_url) = (&event.tracker, &event.ws, &event.origin_url);
    let token = viewer_token();
    let target = edge(ws, origin_url, &token, &[]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest(&c, &target.1).await.is_none() {
        assert!(Instant::now() < deadline, "the edge peer never played");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The hostile peer: a real tracker session and real WebRTC links, but
    // it writes whatever bytes it likes.
    let stop = CancellationToken::new();
    let hello = Hello {
        token: token.clone(),
        stream: StreamId::new("test").unwrap(),
        peer_id: PeerId::new("hostile").unwrap(),
        kind: ClientKind::Native,
        upload_kbps: 1,
        region: None,
        cell: None,
    };
    let (tracker_tx, mut tracker_rx) =
        tclient::start(ClientConfig::new(ws.clone(), hello), stop.clone());
    let cfg = LinkConfig {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        udp_buffer: 4 << 20,
        ice_interval: Duration::from_millis(20),
        ice_servers: vec![],
        corrupt_uploads: false,
        high_water: link::HIGH_WATER,
        uploading: Default::default(),
    };
    let runtime = std::sync::Arc::new(BigBufRuntime::new(4 << 20));
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(1024);
    let mut links: std::collections::HashMap<PeerId, link::LinkHandle> = Default::default();
    let r = RenditionId::new("360p").unwrap();
    let mut attacked = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("the hostile peer never got a channel open"),
            ev = tracker_rx.recv() => match ev {
                Some(Event::Message(ServerMsg::Peers { peers })) => {
                    for p in peers {
                        let h = link::spawn(cfg.clone(), runtime.clone(), p.peer_id.clone(), p.initiator, ev_tx.clone(), &stop);
                        links.insert(p.peer_id, h);
                    }
                }
                Some(Event::Message(ServerMsg::Signal { from, signal })) => {
                    if !links.contains_key(&from) {
                        let h = link::spawn(cfg.clone(), runtime.clone(), from.clone(), false, ev_tx.clone(), &stop);
                        links.insert(from.clone(), h);
                    }
                    let _ = links[&from].tx.send(LinkCmd::Remote(signal)).await;
                }
                Some(_) => {}
                None => panic!("tracker client stopped"),
            },
            ev = ev_rx.recv() => match ev.unwrap() {
                LinkEvent::Signal(to, signal) => tracker_tx.send(ClientMsg::Signal { to, signal }).await.unwrap(),
                LinkEvent::Open(peer, _) => {
                    let tx = links[&peer].tx.clone();
                    // Oversized, truncated, unknown type, lying length.
                    for raw in [vec![0x04; 20_000], vec![0x03, 4, b'3'], vec![0x7f, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 1], vec![0x01, 200, 1, 2, 3]] {
                        tx.send(LinkCmd::SendRaw(Bytes::from(raw))).await.unwrap();
                    }
                    // A valid request for a segment outside the window.
                    tx.send(LinkCmd::Send(Frame::Request { rendition: r, seq: 999_999, offset: 0, length: 0 })).await.unwrap();
                    attacked = Some(peer);
                }
                LinkEvent::Frame(_, Frame::Reject { seq: 999_999, reason: RejectReason::NotFound, .. }) => {
                    // The out-of-window request got its clear `not_found`.
                    break;
                }
                _ => {}
            },
        }
    }
    assert!(attacked.is_some());
    // Each bad frame was counted by the edge peer, which kept the link open.
    assert!(metric(&c, &target.1, "swarmcast_edge_bad_frames_total").await >= 4.0);
    // Now a flood of requests: the edge peer drops the flooder and reports it.
    let peer = attacked.unwrap();
    let tx = links[&peer].tx.clone();
    for _ in 0..300 {
        if tx
            .send(LinkCmd::Send(Frame::Request {
                rendition: r,
                seq: 999_999,
                offset: 0,
                length: 0,
            }))
            .await
            .is_err()
        {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &c,
        &tracker.1,
        "swarmcast_tracker_peer_reports_total{reason=\"flood\"}",
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the flooder was not reported");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(metric(&c, &target.1, "swarmcast_edge_peers_dropped_total").await >= 1.0);
    // The edge peer keeps playing and serving.
    let before = newest(&c, &target.1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while newest(&c, &target.1).await.is_none_or(|s| s < before + 2) {
        assert!(Instant::now() < deadline, "the edge peer stopped advancing");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.cancel();
}
