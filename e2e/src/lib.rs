//! End-to-end tests live in `tests/`: they start the workspace's real
//! binaries (the README's test command builds them all first) and drive
//! them over loopback. This library holds what they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use swarmcast_proto::{Claims, Role, StreamId, TokenKey};

/// The token secret every test service shares.
pub const SECRET: &str = "e2e-edge-secret-0123456789abcdef";

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the README's test command (scripts/test.sh builds every binary)",
        path.display()
    );
    path
}

/// A running service, killed when dropped: `.1` is its `host:port`.
#[derive(Debug)]
pub struct Proc(pub Child, pub String);

impl Proc {
    /// Starts `name` on `127.0.0.1:0` (with [`SECRET`] when `secret`) and
    /// waits for its `listening on` line.
    pub fn start(name: &str, args: &[&str], secret: bool) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.args(["--listen", "127.0.0.1:0"]);
        if secret {
            cmd.args(["--token-secret", SECRET]);
        }
        let mut child = cmd
            .args(args)
            .env("SWARMCAST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the service printed its address")
                .unwrap();
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc(child, addr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The services of a live event: a tracker making one first fetcher per
/// segment, and the origin's ffmpeg test source publishing to it.
#[derive(Debug)]
pub struct LiveEvent {
    /// The tracker.
    pub tracker: Proc,
    /// The origin.
    pub origin: Proc,
    /// The tracker's WebSocket URL.
    pub ws: String,
    /// The origin's base URL.
    pub origin_url: String,
}

impl LiveEvent {
    /// Starts the tracker, then the origin with `renditions` (e.g. `360p`).
    pub fn start(renditions: &str) -> LiveEvent {
        let tracker = Proc::start(
            "swarmcast-tracker",
            &["--min-first-fetchers", "1", "--max-first-fetchers", "1"],
            true,
        );
        let ws = format!("ws://{}/v1/ws", tracker.1);
        let origin = Proc::start(
            "swarmcast-origin",
            &[
                "--test-source",
                "--test-source-renditions",
                renditions,
                "--tracker",
                &ws,
            ],
            true,
        );
        let origin_url = format!("http://{}", origin.1);
        LiveEvent {
            tracker,
            origin,
            ws,
            origin_url,
        }
    }
}

/// A token for `stream` and `role`, valid 10 minutes.
pub fn token(stream: &str, role: Role) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    TokenKey::new(SECRET.as_bytes()).sign(&Claims {
        stream: StreamId::new(stream).unwrap(),
        role,
        expires_at: exp,
    })
}

/// A viewer token for the stream `test`.
pub fn viewer_token() -> String {
    token("test", Role::Viewer)
}

/// An edge peer watching `test/360p`, 3 s behind publication.
pub fn edge(ws: &str, origin: &str, token: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--tracker",
        ws,
        "--origin",
        origin,
        "--stream",
        "test",
        "--rendition",
        "360p",
        "--token",
        token,
        "--playback-delay-ms",
        "3000",
    ];
    args.extend_from_slice(extra);
    Proc::start("swarmcast-edge", &args, false)
}

/// The sum of the Prometheus samples of `addr` whose line starts with `name`.
pub async fn metric(c: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let text = c
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sequence numbers an edge peer's local `test/360p` playlist lists.
pub async fn playlist_seqs(c: &reqwest::Client, edge: &str) -> Vec<u64> {
    let Ok(r) = c
        .get(format!("http://{edge}/live/test/360p/index.m3u8"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_suffix(".ts")?.parse().ok())
        .collect()
}

/// The newest segment an edge peer's local playlist lists.
pub async fn newest(c: &reqwest::Client, edge: &str) -> Option<u64> {
    playlist_seqs(c, edge).await.last().copied()
}
