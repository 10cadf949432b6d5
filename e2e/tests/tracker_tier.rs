//! The event of docker-compose.yml, natively: no Docker engine runs here,
//! so these tests start the compose file's services as local processes on
//! loopback — the same binaries, commands and environment (read from
//! docker-compose.yml), the same `deploy/nginx.conf` — with compose host
//! names replaced by loopback addresses. nginx routes `/v1/ws?stream=ID`
//! to a tracker node by consistent hashing of the stream id and caches the
//! origin: streams spread over both nodes, every viewer of one stream lands
//! on the same node, the cache turns 20 requests for a segment into one
//! origin copy, and when the node owning a stream dies its viewers, relays
//! and publisher reconnect to the next node while playback goes on with no
//! late segment.
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

/// A tracker node's `/v1/streams` (nothing when it does not answer).
async fn listed(c: &reqwest::Client, node: &str) -> Vec<serde_json::Value> {
    let Ok(r) = c.get(format!("http://{node}/v1/streams")).send().await else {
        return Vec::new();
    };
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// The streams a tracker node holds sessions of.
async fn streams_on(c: &reqwest::Client, node: &str) -> Vec<(String, u64)> {
    listed(c, node)
        .await
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
        cell: None,
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

/// Whether a tracker client hears of segment `seq` (as a first fetcher or
/// not) within `within`.
async fn heard(v: &mut Viewer, seq: u64, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Some(e) = v.events.recv().await {
            if let Event::Message(
                swarmcast_proto::tracker::ServerMsg::Fetch { meta }
                | swarmcast_proto::tracker::ServerMsg::Segment { meta },
            ) = e
                && meta.id.seq == seq
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Which cells of `stream` a node hosts.
async fn cells_on(c: &reqwest::Client, node: &str, stream: &str) -> Vec<u64> {
    listed(c, node)
        .await
        .iter()
        .filter(|s| s["stream"] == stream)
        .map(|s| s["cell"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_spread_over_tracker_nodes_through_the_balancer_and_survive_losing_the_home() {
    // Cells of one viewer, 16 viewers: 16 cells, each its own key on
    // nginx's hash ring (the chance that all land on one of two nodes is
    // about 2^-15). The nodes reach a stream's home through nginx too.
    let port = free_port();
    let tier = format!("--tier-url=ws://127.0.0.1:{port}/v1/ws");
    let args = ["--cell-viewers", "1", "--stripes", "0", &tier];
    let mut a = Proc::start("swarmcast-tracker", &args, true);
    let mut b = Proc::start("swarmcast-tracker", &args, true);
    let lb = Nginx::start_on(
        port,
        &[
            ("tracker-a:7000", &a.1),
            ("tracker-b:7000", &b.1),
            ("origin:8080", "127.0.0.1:9"),
        ],
    );
    let c = reqwest::Client::new();
    let stop = CancellationToken::new();
    let hello = Hello {
        token: token("big", Role::Ingest),
        stream: StreamId::new("big").unwrap(),
        peer_id: PeerId::new("origin").unwrap(),
        kind: ClientKind::Publisher,
        upload_kbps: 0,
        region: None,
        cell: None,
    };
    let (publisher, mut pub_events) = client::start(
        ClientConfig::new(format!("ws://{}/v1/ws", lb.addr), hello),
        stop.clone(),
    );
    assert!(matches!(pub_events.recv().await, Some(Event::Connected(_))));
    let mut viewers = Vec::new();
    for k in 0..16 {
        viewers.push(viewer(&lb.addr, "big", &format!("v{k}"), &stop).await);
    }
    let publish = |seq: u64| swarmcast_proto::tracker::ClientMsg::Publish {
        meta: swarmcast_proto::SegmentMeta {
            id: swarmcast_proto::SegmentId::new(
                StreamId::new("big").unwrap(),
                swarmcast_proto::RenditionId::new("360p").unwrap(),
                seq,
            ),
            size: 1000,
            sha256: swarmcast_proto::Sha256Digest::of(&seq.to_le_bytes()),
            duration_ms: 2000,
            published_at_ms: 1,
            blocks: None,
        },
    };
    publisher.send(publish(0)).await.unwrap();
    // Every cell, wherever nginx put it, is fed the home's record.
    for (k, v) in viewers.iter_mut().enumerate() {
        assert!(
            heard(v, 0, Duration::from_secs(15)).await,
            "v{k} never heard of segment 0"
        );
    }
    let (on_a, on_b) = (
        cells_on(&c, &a.1, "big").await,
        cells_on(&c, &b.1, "big").await,
    );
    eprintln!("cells on a: {on_a:?}, on b: {on_b:?}");
    let mut all: Vec<u64> = on_a.iter().chain(&on_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..16).collect::<Vec<_>>());
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "all cells on one node"
    );
    // The home dies: the publisher and the feeders of the other node's
    // cells reconnect through nginx to the surviving node, which becomes
    // the home; the cells of the dead node move there with their viewers.
    let (home, other) = if on_a.contains(&0) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    home.0.kill().unwrap();
    home.0.wait().unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(15), pub_events.recv()).await {
            Ok(Some(Event::Connected(_))) => break,
            Ok(Some(_)) => continue,
            other => panic!("the publisher did not come back: {other:?}"),
        }
    }
    publisher.send(publish(1)).await.unwrap();
    for (k, v) in viewers.iter_mut().enumerate() {
        assert!(
            heard(v, 1, Duration::from_secs(20)).await,
            "v{k} never heard of segment 1"
        );
    }
    let mut moved = cells_on(&c, &other.1, "big").await;
    moved.sort_unstable();
    assert_eq!(moved, (0..16).collect::<Vec<_>>());
    stop.cancel();
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

/// docker-compose.yml as JSON (through python3-yaml, which the test
/// command installs).
fn compose() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
            path,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "docker-compose.yml does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Compose services as native processes: the image's binary (or its shell
/// entrypoint) with the service's command and environment, compose host
/// names replaced by loopback addresses, container paths by a temporary
/// directory.
struct Native {
    /// (compose `host:port`, loopback `host:port`).
    hosts: Vec<(String, String)>,
    tokens: std::path::PathBuf,
}

impl Native {
    fn subst(&self, s: &str) -> String {
        let mut s = s.replace("$$", "$");
        for (from, to) in &self.hosts {
            s = s.replace(from.as_str(), to);
        }
        s.replace("/run/tokens", self.tokens.to_str().unwrap())
            .replace("$(hostname -i | cut -d' ' -f1)", "127.0.0.1")
    }

    fn command(&self, compose: &serde_json::Value, name: &str) -> Command {
        let svc = &compose["services"][name];
        let binary = match svc["build"]["dockerfile"].as_str() {
            Some("deploy/origin.Dockerfile") => "swarmcast-origin",
            Some("deploy/tracker.Dockerfile") => "swarmcast-tracker",
            Some("deploy/edge.Dockerfile") => "swarmcast-edge",
            other => panic!("service {name}: no native stand-in for {other:?}"),
        };
        let args: Vec<String> = svc["command"]
            .as_array()
            .map(|a| a.iter().map(|v| self.subst(v.as_str().unwrap())).collect())
            .unwrap_or_default();
        let mut cmd = if svc["entrypoint"] == serde_json::json!(["sh", "-c"]) {
            let mut c = Command::new("sh");
            c.arg("-c").arg(args.join("\n"));
            c
        } else {
            let mut c = Command::new(swarmcast_e2e::bin(binary));
            c.args(args);
            c
        };
        let bin_dir = swarmcast_e2e::bin(binary).parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("SWARMCAST_LISTEN", "127.0.0.1:0")
            .env("SWARMCAST_LOG", "warn");
        if binary == "swarmcast-origin" {
            // The origin image serves the web player's page from its
            // SWARMCAST_WEB_ROOT: here a page of the test's own.
            let root = self.tokens.join("player");
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(
                root.join("index.html"),
                "<!doctype html><title>player</title>",
            )
            .unwrap();
            cmd.env("SWARMCAST_WEB_ROOT", root);
        }
        if let Some(env) = svc["environment"].as_object() {
            for (k, v) in env {
                let v = v.as_str().unwrap();
                let v = match k.as_str() {
                    "SWARMCAST_TOKEN_SECRET" => swarmcast_e2e::SECRET.to_string(),
                    "SWARMCAST_LOG" => "warn".to_string(),
                    _ => self.subst(v),
                };
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Starts a service and waits for its `listening on` line.
    fn start(&self, compose: &serde_json::Value, name: &str) -> Proc {
        let mut child = self
            .command(compose, name)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{name} ended before listening"))
                .unwrap();
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Proc(child, addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_event_runs_natively_and_survives_losing_a_tracker_node() {
    let c = compose();
    let tokens = std::env::temp_dir().join(format!("swarmcast-compose-{}", std::process::id()));
    std::fs::create_dir_all(&tokens).unwrap();
    let mut n = Native {
        hosts: Vec::new(),
        tokens: tokens.clone(),
    };
    let mut nodes_p = [n.start(&c, "tracker-a"), n.start(&c, "tracker-b")];
    let nodes: [String; 2] = [nodes_p[0].1.clone(), nodes_p[1].1.clone()];
    n.hosts.push(("tracker-a:7000".into(), nodes[0].clone()));
    n.hosts.push(("tracker-b:7000".into(), nodes[1].clone()));
    // The origin publishes to the tier through the balancer, whose port it
    // must know before the balancer starts.
    let port = free_port();
    let lb = format!("127.0.0.1:{port}");
    n.hosts.push(("edge-cache:8000".into(), lb.clone()));
    let origin = n.start(&c, "origin");
    n.hosts.push(("origin:8080".into(), origin.1.clone()));
    let hosts: Vec<(&str, &str)> = n
        .hosts
        .iter()
        .filter(|(h, _)| h != "edge-cache:8000")
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let _nginx = Nginx::start_on(port, &hosts);
    // The tokens service signs the relays' token and prints the player URL.
    let out = n.command(&c, "tokens").output().unwrap();
    assert!(
        out.status.success(),
        "tokens: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let player = printed
        .lines()
        .find_map(|l| l.strip_prefix("player: "))
        .expect("the tokens service prints the player URL");
    assert!(player.contains("&token="), "{player}");
    assert!(std::fs::metadata(tokens.join("relay")).unwrap().len() > 0);
    let relays = [n.start(&c, "relay-1"), n.start(&c, "relay-2")];
    // Two viewers through the balancer only.
    let lb_ws = format!("ws://{lb}/v1/ws");
    let token = swarmcast_e2e::viewer_token();
    let edges = [
        swarmcast_e2e::edge(&lb_ws, &format!("http://{lb}"), &token, &[]),
        swarmcast_e2e::edge(&lb_ws, &format!("http://{lb}"), &token, &[]),
    ];
    let http = reqwest::Client::new();
    // The player page the printed URL names, through the cache.
    let page = player.replace("localhost:8000", &lb);
    assert!(http.get(&page).send().await.unwrap().status().is_success());
    let until = Instant::now() + Duration::from_secs(40);
    for e in edges.iter().chain(&relays) {
        while swarmcast_e2e::playlist_seqs(&http, &e.1).await.len() < 3 {
            assert!(Instant::now() < until, "{} did not start playing", e.1);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let refs = [nodes[0].as_str(), nodes[1].as_str()];
    let owner = node_of(&http, &refs, "test", 2).await;
    let relays_on = |node: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{node}/v1/streams/test/stats"))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            (
                v["peers"]["relay"].as_u64().unwrap_or(0),
                v["published"].as_u64().unwrap_or(0),
            )
        }
    };
    assert_eq!(
        relays_on(nodes[owner].clone()).await.0,
        2,
        "both relays on the owner"
    );
    let late = "swarmcast_edge_late_segments_total";
    let mut newest = Vec::new();
    for e in &edges {
        assert_eq!(swarmcast_e2e::metric(&http, &e.1, late).await, 0.0);
        newest.push(swarmcast_e2e::newest(&http, &e.1).await.unwrap());
    }
    // The owner dies: viewers, relays and the publisher reconnect through
    // nginx to the other node.
    nodes_p[owner].0.kill().unwrap();
    nodes_p[owner].0.wait().unwrap();
    let other = 1 - owner;
    assert_eq!(node_of(&http, &refs, "test", 2).await, other);
    let until = Instant::now() + Duration::from_secs(15);
    let replayed = loop {
        let (r, p) = relays_on(nodes[other].clone()).await;
        if p > 0 && r == 2 {
            break p;
        }
        assert!(
            Instant::now() < until,
            "publisher and relays did not reach the new node ({r} relays, {p} published)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Playback goes on: in 8 s (4 segments of 2 s) the new node hears of
    // new segments, each edge's playlist moves on, and no segment is late.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let p = relays_on(nodes[other].clone()).await.1;
    assert!(
        p >= replayed + 3,
        "published on the new node: {replayed} -> {p}"
    );
    for (e, before) in edges.iter().zip(&newest) {
        let now = swarmcast_e2e::newest(&http, &e.1).await.unwrap();
        assert!(now >= before + 3, "edge {}: newest {before} -> {now}", e.1);
        assert_eq!(
            swarmcast_e2e::metric(&http, &e.1, late).await,
            0.0,
            "edge {}",
            e.1
        );
    }
    drop(relays);
    let _ = std::fs::remove_dir_all(&tokens);
}
