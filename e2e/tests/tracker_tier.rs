//! The tracker tier behind a standard load balancer, natively: two tracker
//! nodes behind nginx running `deploy/nginx.conf` (the file the compose
//! deployment uses; service names replaced by loopback ports). Clients
//! connect through nginx only; nginx routes `/v1/ws?stream=ID` by
//! consistent hashing of the stream id. Streams spread over both nodes,
//! every viewer of one stream lands on the same node, and when a node dies
//! its viewers reconnect through nginx to the node that owns the stream
//! next, while the other node's viewers never notice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarmcast_e2e::{Proc, token};
use swarmcast_proto::tracker::{ClientKind, Hello};
use swarmcast_proto::{PeerId, Role, StreamId};
use swarmcast_tracker::client::{self, ClientConfig, ClientHandle, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// nginx running `deploy/nginx.conf`, stopped when dropped.
struct Nginx {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// `upstreams`: (compose host:port, loopback host:port) replacements.
    fn start(upstreams: &[(&str, &str)]) -> Nginx {
        Self::start_on(free_port(), upstreams)
    }

    /// The same on a chosen port (for services that must know it first).
    fn start_on(port: u16, upstreams: &[(&str, &str)]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is installed (scripts/test.sh installs nginx-light)");
        let dir =
            std::env::temp_dir().join(format!("swarmcast-tier-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf");
        let mut conf = std::fs::read_to_string(root).unwrap();
        for (from, to) in upstreams {
            assert!(conf.contains(from), "deploy/nginx.conf names {from}");
            conf = conf.replace(from, to);
        }
        conf = conf
            .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"))
            .replace("/var/cache/nginx", dir.to_str().unwrap())
            .replace("worker_processes auto;", "worker_processes 1;");
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {0}/nginx.pid; error_log {0}/error.log warn;",
                dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < until, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, addr, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The streams a tracker node holds sessions of.
async fn streams_on(c: &reqwest::Client, node: &str) -> Vec<(String, u64)> {
    let Ok(r) = c.get(format!("http://{node}/v1/streams")).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["viewers"].as_u64().unwrap(),
            )
        })
        .collect()
}

struct Viewer {
    _handle: ClientHandle,
    events: mpsc::Receiver<Event>,
}

/// A viewer of `stream` that reaches the tracker tier through nginx only.
async fn viewer(lb: &str, stream: &str, id: &str, stop: &CancellationToken) -> Viewer {
    let hello = Hello {
        token: token(stream, Role::Viewer),
        stream: StreamId::new(stream).unwrap(),
        peer_id: PeerId::new(id).unwrap(),
        kind: ClientKind::Native,
        upload_kbps: 4000,
        region: None,
    };
    let (handle, mut events) = client::start(
        ClientConfig::new(format!("ws://{lb}/v1/ws"), hello),
        stop.clone(),
    );
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(Event::Connected(_))) => {}
        other => panic!("{id} did not join through nginx: {other:?}"),
    }
    Viewer {
        _handle: handle,
        events,
    }
}

/// Which node (0 or 1) lists `stream` with at least `viewers` viewers.
async fn node_of(c: &reqwest::Client, nodes: &[&str; 2], stream: &str, viewers: u64) -> usize {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if streams_on(c, n)
                .await
                .iter()
                .any(|(s, v)| s == stream && *v >= viewers)
            {
                return i;
            }
        }
        assert!(
            Instant::now() < until,
            "no node lists {stream} with {viewers} viewers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streams_spread_over_tracker_nodes_and_move_when_one_dies() {
    let mut a = Proc::start("swarmcast-tracker", &[], true);
    let b = Proc::start("swarmcast-tracker", &[], true);
    // No origin in this test: its upstream points at a closed port.
    let lb = Nginx::start(&[
        ("tracker-a:7000", &a.1),
        ("tracker-b:7000", &b.1),
        ("origin:8080", "127.0.0.1:9"),
    ]);
    let nodes = [a.1.as_str(), b.1.as_str()];
    let c = reqwest::Client::new();
    let stop = CancellationToken::new();

    // Viewers of streams s0, s1, ... until both nodes hold one.
    let mut placed: Vec<(String, usize, Viewer)> = Vec::new();
    for k in 0..24 {
        let stream = format!("s{k}");
        let v = viewer(&lb.addr, &stream, &format!("v{k}"), &stop).await;
        let node = node_of(&c, &nodes, &stream, 1).await;
        placed.push((stream, node, v));
        if placed.iter().any(|p| p.1 == 0) && placed.iter().any(|p| p.1 == 1) {
            break;
        }
    }
    let on_a = placed
        .iter()
        .position(|p| p.1 == 0)
        .expect("a stream on node a");
    let on_b = placed
        .iter()
        .position(|p| p.1 == 1)
        .expect("a stream on node b");
    let (sa, sb) = (placed[on_a].0.clone(), placed[on_b].0.clone());
    eprintln!(
        "placed: {:?}",
        placed.iter().map(|p| (&p.0, p.1)).collect::<Vec<_>>()
    );

    // Every viewer of one stream lands on the same node.
    let mut more = Vec::new();
    for (stream, node) in [(&sa, 0), (&sb, 1)] {
        for j in 0..3 {
            more.push(viewer(&lb.addr, stream, &format!("{stream}-x{j}"), &stop).await);
        }
        assert_eq!(node_of(&c, &nodes, stream, 4).await, node);
    }

    // Node a dies: its viewers reconnect through nginx and land on b.
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    assert_eq!(node_of(&c, &nodes, &sa, 4).await, 1, "{sa} moved to node b");
    // Node b's own viewers were never disconnected.
    let b_viewer = &mut placed[on_b].2;
    while let Ok(e) = b_viewer.events.try_recv() {
        assert!(
            !matches!(e, Event::Disconnected { .. }),
            "a viewer of {sb} on the surviving node was disconnected"
        );
    }
    assert_eq!(node_of(&c, &nodes, &sb, 4).await, 1);
    stop.cancel();
    drop(more);
}

#[tokio::test]
async fn the_cache_serves_repeated_and_concurrent_segment_requests_once_from_the_origin() {
    let origin = Proc::start(
        "swarmcast-origin",
        &["--test-source", "--test-source-renditions", "360p"],
        true,
    );
    let lb = Nginx::start(&[
        ("tracker-a:7000", "127.0.0.1:9"),
        ("tracker-b:7000", "127.0.0.1:9"),
        ("origin:8080", &origin.1),
    ]);
    let c = reqwest::Client::new();
    // Wait for two segments through the cache (the playlist lives 1 s in it).
    let until = Instant::now() + Duration::from_secs(30);
    let seqs = loop {
        let r = c
            .get(format!("http://{}/live/test/360p/index.m3u8", lb.addr))
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap_or_default();
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_suffix(".ts")?.parse().ok())
            .collect();
        if seqs.len() >= 2 {
            break seqs;
        }
        assert!(Instant::now() < until, "no segments through the cache");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let egress = || {
        swarmcast_e2e::metric(
            &c,
            &origin.1,
            "swarmcast_origin_egress_bytes_total{kind=\"segment\"}",
        )
    };
    let before = egress().await;
    // Ten viewers ask for the same segment at once, then again.
    let url = format!(
        "http://{}/live/test/360p/{}.ts",
        lb.addr,
        seqs[seqs.len() - 1]
    );
    let get = || async {
        let r = c.get(&url).send().await.unwrap();
        assert!(r.status().is_success());
        let status = r
            .headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.bytes().await.unwrap().len(), status)
    };
    let first = futures_util::future::join_all((0..10).map(|_| get())).await;
    let size = first[0].0;
    assert!(size > 0 && first.iter().all(|f| f.0 == size));
    let again = futures_util::future::join_all((0..10).map(|_| get())).await;
    assert!(again.iter().all(|f| f.1 == "HIT"), "{again:?}");
    let served = egress().await - before;
    assert_eq!(
        served, size as f64,
        "the origin served the segment once for 20 requests ({first:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_and_the_edges_follow_their_stream_to_the_next_node_without_a_stall() {
    let mut nodes_p = [
        Proc::start("swarmcast-tracker", &[], true),
        Proc::start("swarmcast-tracker", &[], true),
    ];
    let nodes: [String; 2] = [nodes_p[0].1.clone(), nodes_p[1].1.clone()];
    // Everything goes through nginx: the origin publishes to the tier and
    // the edge peers reach both the tier and the origin (cached) there.
    let port = free_port();
    let lb_ws = format!("ws://127.0.0.1:{port}/v1/ws");
    let origin = Proc::start(
        "swarmcast-origin",
        &[
            "--test-source",
            "--test-source-renditions",
            "360p",
            "--tracker",
            &lb_ws,
        ],
        true,
    );
    let _lb = Nginx::start_on(
        port,
        &[
            ("tracker-a:7000", &nodes[0]),
            ("tracker-b:7000", &nodes[1]),
            ("origin:8080", &origin.1),
        ],
    );
    let lb_http = format!("http://127.0.0.1:{port}");
    let token = swarmcast_e2e::viewer_token();
    let edges = [
        swarmcast_e2e::edge(&lb_ws, &lb_http, &token, &[]),
        swarmcast_e2e::edge(&lb_ws, &lb_http, &token, &[]),
    ];
    let c = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(40);
    for e in &edges {
        while swarmcast_e2e::playlist_seqs(&c, &e.1).await.len() < 3 {
            assert!(Instant::now() < until, "edge {} did not start playing", e.1);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let refs = [nodes[0].as_str(), nodes[1].as_str()];
    let owner = node_of(&c, &refs, "test", 2).await;
    let late = "swarmcast_edge_late_segments_total";
    let mut newest = Vec::new();
    for e in &edges {
        assert_eq!(swarmcast_e2e::metric(&c, &e.1, late).await, 0.0);
        newest.push(swarmcast_e2e::newest(&c, &e.1).await.unwrap());
    }
    // The owner dies: viewers and publisher reconnect through nginx to the
    // other node.
    nodes_p[owner].0.kill().unwrap();
    nodes_p[owner].0.wait().unwrap();
    let other = 1 - owner;
    assert_eq!(node_of(&c, &refs, "test", 2).await, other);
    // The publisher found it too: the new node hears of new segments.
    let published = |c: reqwest::Client, n: String| async move {
        let r = c
            .get(format!("http://{n}/v1/streams/test/stats"))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["published"].as_u64().unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(15);
    let replayed = loop {
        let p = published(c.clone(), nodes[other].clone()).await;
        if p > 0 {
            break p;
        }
        assert!(
            Instant::now() < until,
            "the origin did not publish to the new node"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Playback goes on: in 8 s (4 segments of 2 s) the new node hears of
    // new segments, each edge's playlist moves on, and no segment is late.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let p = published(c.clone(), nodes[other].clone()).await;
    assert!(
        p >= replayed + 3,
        "published on the new node: {replayed} -> {p}"
    );
    for (e, before) in edges.iter().zip(&newest) {
        let now = swarmcast_e2e::newest(&c, &e.1).await.unwrap();
        assert!(now >= before + 3, "edge {}: newest {before} -> {now}", e.1);
        assert_eq!(
            swarmcast_e2e::metric(&c, &e.1, late).await,
            0.0,
            "edge {}",
            e.1
        );
    }
}
