//! `swarmcast-load live`: a small live event (tracker + origin with its
//! test source + 6 edge peers, 60 s, real WebRTC on loopback) whose report
//! must agree with what each part counted itself: the origin's egress
//! counter, the edge peers' byte counters, and the viewers' reports as the
//! tracker sums them; and the same with each edge peer a process in a
//! network namespace of its own behind a `tc`-shaped link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use serde_json::Value;
use swarmcast_e2e::bin;

fn field(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("report lacks {k}: {v}"))
}

/// `a` within `tol` (a share of the larger) of `b`.
fn close(a: u64, b: u64, tol: f64) -> bool {
    let (a, b) = (a as f64, b as f64);
    (a - b).abs() <= tol * a.max(b)
}

/// The two events of this file take the machine's two cores each: one at
/// a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `cmd` (a `swarmcast-load` run told to write its JSON to `json`)
/// and returns its report.
fn run_load(mut cmd: Command, json: &std::path::Path) -> Value {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("swarmcast-load runs");
    assert!(
        out.status.success(),
        "swarmcast-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Runs `cmd` (a `swarmcast-load live` run told to write its JSON to
/// `json`) and returns the report's one event.
fn run_live(cmd: Command, json: &std::path::Path) -> Value {
    let ev = run_load(cmd, json)["events"][0].take();
    eprintln!("{}", serde_json::to_string_pretty(&ev).unwrap());
    ev
}

/// A `swarmcast-load live` event of 6 edge peers watching 360p with the
/// swarm, `secs` measured after 10 s of warm-up, the tracker given
/// `tracker_args`: its report's one event (the report written under a
/// temporary directory named after `name`, removed after).
fn six_viewers(name: &str, secs: &str, tracker_args: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!("swarmcast-load-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let mut cmd = Command::new(bin("swarmcast-load"));
    cmd.args([
        "live",
        "--viewers",
        "6",
        "--duration",
        secs,
        "--warmup",
        "10",
    ])
    .args(["--renditions", "360p", "--mode", "swarm"])
    .args(tracker_args.iter().map(|a| format!("--tracker-arg={a}")))
    .arg("--json")
    .arg(&json);
    let ev = run_live(cmd, &json);
    let _ = std::fs::remove_dir_all(&dir);
    ev
}

#[test]
fn the_live_report_matches_the_counters_of_origin_edges_and_tracker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ev = &six_viewers("live", "60", &["--min-first-fetchers=1"]);
    let t = &ev["totals"];
    let origin = field(t, "origin_segment_egress_bytes");
    let edges_http = field(t, "edges_http_bytes");
    let edges_p2p = field(t, "edges_p2p_bytes");
    let uploaded = field(t, "edges_uploaded_bytes");
    let tr_http = field(t, "tracker_http_bytes");
    let tr_p2p = field(t, "tracker_p2p_bytes");
    let tr_up = field(t, "tracker_uploaded_bytes");
    // A real event happened: bytes came over HTTP and from peers.
    assert!(edges_http > 1_000_000 && edges_p2p > 1_000_000, "{t}");
    // What the origin sent is what the edge peers received over HTTP (a
    // fetch cancelled at shutdown may leave a few bytes in flight).
    assert!(
        close(origin, edges_http, 0.02),
        "origin {origin} vs edges {edges_http}"
    );
    // The viewers' last reports reach the tracker before they leave: its
    // sums match the edge peers' own counters. Bytes of transfers a viewer
    // cancelled (a slow peer, a superseded HTTP fetch) are received but not
    // counted as media: a few percent at most.
    assert!(
        tr_http <= edges_http && close(tr_http, edges_http, 0.05),
        "tracker http {tr_http} vs edges {edges_http}"
    );
    assert!(
        tr_p2p <= edges_p2p && close(tr_p2p, edges_p2p, 0.05),
        "tracker p2p {tr_p2p} vs edges {edges_p2p}"
    );
    // On a loaded machine one viewer's last report is sometimes missing
    // from the tracker's sums (0.2-0.8 % short: one report interval of one
    // viewer, in 3 of 18 runs with both cores busy; the tracker's session
    // ends without it although the client sent it; not explained).
    assert!(
        tr_up <= uploaded && close(tr_up, uploaded, 0.02),
        "uploads as reported {tr_up} vs counted {uploaded}"
    );
    // Every chunk received was sent by a peer of the event, and what the
    // links wrote is what they were given, less transfers stopped midway.
    let sent = field(t, "edges_sent_bytes");
    assert!(
        edges_p2p <= sent && sent <= uploaded && close(edges_p2p, uploaded, 0.05),
        "received {edges_p2p}, sent {sent}, given to links {uploaded}"
    );
    // The figures of the measured span come from the same counters.
    let offload = ev["offload"].as_f64().unwrap();
    assert!(offload > 0.5, "offload {offload}");
    assert_eq!(field(ev, "hash_failures"), 0);
}

#[test]
fn edge_peers_in_namespaces_of_their_own_relay_over_shaped_links() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("swarmcast-load-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    // The run makes interfaces and routes: in a namespace of its own.
    let script = format!(
        "ip link set lo up && exec {} live --netns --viewers 5 --uplink-kbps 3000,3000,3000,3000,300 \
         --duration 40 --warmup 10 --renditions 360p --mode swarm \
         --tracker-arg=--min-first-fetchers=1 --json {}",
        bin("swarmcast-load").display(),
        json.display()
    );
    // Namespaces and qdiscs need root.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = Command::new(if root { "unshare" } else { "sudo" });
    if !root {
        cmd.arg("unshare");
    }
    cmd.args(["-n", "--", "sh", "-c", &script]);
    let ev = &run_live(cmd, &json);
    let t = &ev["totals"];
    // Segments crossed the links between the namespaces, peer to peer.
    let offload = ev["offload"].as_f64().unwrap();
    assert!(offload > 0.3, "offload {offload}");
    assert!(field(t, "edges_p2p_bytes") > 1_000_000, "{t}");
    // Every viewer opened data channels (each end counts one).
    assert!(field(ev, "links_opened") >= 5, "{ev}");
    // The tracker planned stripes (its default) for the native edges.
    assert!(field(t, "tracker_stripe_plans") >= 5, "{t}");
    // The origin's counter, the edge processes' own (written as each
    // exits) and their reports to the tracker agree.
    let (origin, http) = (
        field(t, "origin_segment_egress_bytes"),
        field(t, "edges_http_bytes"),
    );
    assert!(close(origin, http, 0.02), "origin {origin} vs edges {http}");
    // Across processes one viewer's last report is sometimes not in the
    // tracker's totals (one in two runs here, about two segments of one
    // viewer; on loopback they agree to the byte): within 5 %.
    let (tr_up, up) = (
        field(t, "tracker_uploaded_bytes"),
        field(t, "edges_uploaded_bytes"),
    );
    assert!(
        tr_up <= up && close(tr_up, up, 0.05),
        "uploads as reported {tr_up} vs counted {up}"
    );
    let (tr_http, tr_p2p) = (
        field(t, "tracker_http_bytes"),
        field(t, "tracker_p2p_bytes"),
    );
    assert!(tr_http <= http && close(tr_http, http, 0.05), "{t}");
    let p2p = field(t, "edges_p2p_bytes");
    assert!(tr_p2p <= p2p && p2p <= field(t, "edges_sent_bytes"), "{t}");
    // What each uplink wrote stayed under its cap; the 300 kb/s one is the
    // tc shaper's doing.
    let ups = ev["uplinks"].as_array().unwrap();
    assert_eq!(ups.len(), 5);
    for u in ups {
        let cap = u["uplink_kbps"].as_f64().unwrap();
        let got = u["upload_kbps"].as_f64().unwrap();
        assert!(
            got <= cap * 1.1,
            "uploaded {got} kb/s over a {cap} kb/s cap"
        );
    }
    assert_eq!(field(ev, "hash_failures"), 0);
    // Nothing left behind: the namespaces went with the run.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with("sc") && l.contains('-')),
        "namespaces left: {list}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cells: six edge peers with the tracker's `--cell-viewers 2` make three
/// meshes, each seeded over HTTP by its own first fetcher: the origin sends
/// about one copy of each segment per cell (not one per viewer, not one in
/// all), and each viewer that is not its cell's first fetcher gets its
/// bytes from the one that is.
#[test]
fn a_stream_split_into_cells_costs_the_origin_about_one_copy_per_cell() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ev = &six_viewers(
        "cells",
        "40",
        &["--cell-viewers=2", "--stripes=0", "--min-first-fetchers=1"],
    );
    let cells: Vec<u64> = ev["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(cells, vec![2, 2, 2]);
    let copies = ev["origin_copies_per_segment"].as_f64().unwrap();
    assert!(
        (2.4..=4.5).contains(&copies),
        "{copies} origin copies per segment for 3 cells of 2 viewers"
    );
    let offload = ev["offload"].as_f64().unwrap();
    assert!(offload > 0.25, "offload {offload}");
    assert_eq!(field(ev, "hash_failures"), 0);
}

/// `swarmcast-load webtorrent` against a real tracker's WebTorrent
/// endpoint: every offer it sends is relayed, answered and matched, and the
/// tracker's own counters agree with the generator's.
#[test]
fn the_webtorrent_load_generator_agrees_with_the_tracker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tracker = swarmcast_e2e::Proc::start("swarmcast-tracker", &[], true);
    let dir = std::env::temp_dir().join(format!("swarmcast-e2e-wt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("wt.json");
    let pid = tracker.0.id().to_string();
    let url = format!("ws://{}/announce", tracker.1);
    let mut cmd = Command::new(bin("swarmcast-load"));
    cmd.args(["webtorrent", "--tracker", &url, "--tracker-pid", &pid])
        .args(["--connections", "60", "--info-hashes", "6", "--offers", "5"])
        .args(["--rate", "60", "--duration", "3", "--json"])
        .arg(&json);
    let r = run_load(cmd, &json);
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(field(&r, "connections"), 60);
    assert_eq!(field(&r, "failures"), 0);
    let announces = field(&r, "announces");
    let offers = field(&r, "offers_received");
    assert!(announces >= 100, "{announces} announces in 3 s at 60/s");
    // Ten peers per swarm: every announce's five offers find five others.
    assert!(
        offers >= 5 * announces * 9 / 10,
        "{offers} offers for {announces} announces"
    );
    // Every answer matched (but those in flight as the run stopped).
    let answers = field(&r, "answers_received");
    assert!(
        answers <= offers && close(answers, offers, 0.05),
        "{answers} answers"
    );
    assert!(r["offer_p99_ms"].as_f64().unwrap() > 0.0);
    assert!(r["rss_per_connection"].as_f64().unwrap() > 0.0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stats: Value = rt.block_on(async {
        let url = format!("http://{}/v1/webtorrent/stats", tracker.1);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap()
    });
    // The tracker relayed what the generator received, and at most the
    // last moment's in-flight messages more (sent as the generator stopped).
    let relayed = field(&stats, "offers_relayed");
    assert!(relayed >= offers && close(relayed, offers, 0.05), "{stats}");
    let answered = field(&stats, "answers_relayed");
    assert!(
        answered >= offers && close(answered, offers, 0.05),
        "{stats}"
    );
    assert_eq!(field(&stats, "answers_no_offer"), 0);
    assert_eq!(field(&stats, "queue_full"), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
